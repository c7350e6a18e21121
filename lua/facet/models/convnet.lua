--- facet.models.convnet{ in_channels = 1, size = 28, emb = 128 }: a small CNN
-- for 28 x 28 images (Fashion-MNIST demos and tests): two conv-BN-ReLU-pool
-- stages (32 and 64 channels), a linear embedding and BatchNorm1d.
local nn = require "facet.nn"
local check = require "facet.check"

local NAME = "facet.models.convnet"
local OPTIONS = { "in_channels", "size", "emb" }

return function(opts)
  opts = check.options(NAME, opts, OPTIONS)
  local c = check.integer(NAME, "in_channels", opts.in_channels, { min = 1, max = 4096, default = 1 })
  local size = check.integer(NAME, "size", opts.size, { min = 4, max = 4096, default = 28 })
  local emb = check.integer(NAME, "emb", opts.emb, { min = 1, max = 2 ^ 31 - 1, default = 128 })
  if size % 4 ~= 0 then check.fail(NAME, ("size must be a multiple of 4, got %d"):format(size)) end
  local s = size / 4
  return nn.Sequential(
    nn.Conv2d(c, 32, 3, { padding = 1, bias = false }), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, { padding = 1, bias = false }), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * s * s, emb):set_fp32(), nn.BatchNorm1d(emb):set_fp32())
end
