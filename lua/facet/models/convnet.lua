--- facet.models.convnet{ in_channels = 1, size = 28, emb = 128 }: a small CNN
-- for 28 x 28 images (Fashion-MNIST demos and tests): two conv-BN-ReLU-pool
-- stages (32 and 64 channels), a linear embedding and BatchNorm1d.
local nn = require "facet.nn"

return function(opts)
  opts = opts or {}
  local c, size, emb = opts.in_channels or 1, opts.size or 28, opts.emb or 128
  if size % 4 ~= 0 then error("convnet: size must be a multiple of 4", 2) end
  local s = size / 4
  return nn.Sequential(
    nn.Conv2d(c, 32, 3, { padding = 1, bias = false }), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, { padding = 1, bias = false }), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * s * s, emb), nn.BatchNorm1d(emb))
end
