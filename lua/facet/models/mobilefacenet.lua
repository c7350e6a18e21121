--- facet.models.mobilefacenet{ emb = 512, size = 112 }: MobileFaceNet (Chen et
-- al., 2018): a 3x3 stride-2 conv, a depthwise conv, inverted-residual
-- bottlenecks (expansion t, channels c, repeats n, stride s) = (2,64,5,2),
-- (4,128,1,2), (2,128,6,1), (4,128,1,2), (2,128,2,1), a 1x1 conv to 512, the
-- global depthwise conv (7x7 for 112 x 112 input) and a linear 1x1 conv to the
-- embedding, each followed by BN (PReLU after all but the linear ones).
local nn = require "facet.nn"
local check = require "facet.check"

local NAME = "facet.models.mobilefacenet"
local OPTIONS = { "emb", "size" }

local function conv_bn(cin, cout, k, stride, pad, groups, act)
  local s = nn.Sequential(nn.Conv2d(cin, cout, k, { stride = stride, padding = pad, groups = groups, bias = false }),
    nn.BatchNorm2d(cout))
  if act then s:add(nn.PReLU(cout)) end
  return s
end

local function bottleneck(cin, cout, t, stride)
  local mid = cin * t
  local body = nn.Sequential(conv_bn(cin, mid, 1, 1, 0, 1, true), conv_bn(mid, mid, 3, stride, 1, mid, true),
    conv_bn(mid, cout, 1, 1, 0, 1, false))
  if stride == 1 and cin == cout then return nn.Residual(body) end
  return body
end

return function(opts)
  opts = check.options(NAME, opts, OPTIONS)
  local emb = check.integer(NAME, "emb", opts.emb, { min = 1, max = 2 ^ 31 - 1, default = 512 })
  local size = check.integer(NAME, "size", opts.size, { min = 16, max = 4096, default = 112 })
  if size % 16 ~= 0 then check.fail(NAME, ("size must be a multiple of 16, got %d"):format(size)) end
  local net = nn.Sequential(conv_bn(3, 64, 3, 2, 1, 1, true), conv_bn(64, 64, 3, 1, 1, 64, true))
  local cin = 64
  for _, b in ipairs { { 2, 64, 5, 2 }, { 4, 128, 1, 2 }, { 2, 128, 6, 1 }, { 4, 128, 1, 2 }, { 2, 128, 2, 1 } } do
    local t, c, n, s = b[1], b[2], b[3], b[4]
    for i = 1, n do
      net:add(bottleneck(cin, c, t, i == 1 and s or 1))
      cin = c
    end
  end
  local g = size / 16
  net:add(conv_bn(128, 512, 1, 1, 0, 1, true))
  net:add(conv_bn(512, 512, g, 1, 0, 512, false))       -- global depthwise conv
  net:add(conv_bn(512, emb, 1, 1, 0, 1, false))         -- linear embedding
  net:add(nn.Flatten())
  return net
end
