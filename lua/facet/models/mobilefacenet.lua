--- facet.models.mobilefacenet{ arch = "2018"|"mbf", emb = 512, size = 112 }.
-- arch = "2018" (the default): MobileFaceNet (Chen et al., 2018): a 3x3
-- stride-2 conv, a depthwise conv, inverted-residual bottlenecks (expansion t,
-- channels c, repeats n, stride s) = (2,64,5,2), (4,128,1,2), (2,128,6,1),
-- (4,128,1,2), (2,128,2,1), a 1x1 conv to 512, the global depthwise conv (7x7
-- for 112 x 112 input) and a linear 1x1 conv to the embedding, each followed by
-- BN (PReLU after all but the linear ones).
-- arch = "mbf": arcface_torch's get_mbf (blocks (1, 4, 6, 2), scale 2): a
-- 3x3 s2 conv to 128, a grouped 3x3 conv (64 groups), then DepthWise units
-- (1x1 expand-BN-PReLU, depthwise 3x3-BN-PReLU, 1x1 linear-BN) at 128, 256
-- and 256 channels with residual stacks of 4, 6 and 2, conv_sep (1x1 to 512),
-- and the GDC head: depthwise 7x7-BN, flatten, a linear layer without bias and
-- BatchNorm1d. Its children carry arcface_torch's names
-- (layers.3.layers.0.layers.1.layers.0.weight, conv_sep.*, features.*).
local nn = require "facet.nn"
local check = require "facet.check"

local NAME = "facet.models.mobilefacenet"
local OPTIONS = { "arch", "emb", "size" }

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

local function mobilefacenet_2018(emb, size)
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
  -- the last three run in float32 under mixed precision, as arcface_torch's
  -- conv_sep and GDC (docs/mixed-precision.md)
  net:add(conv_bn(128, 512, 1, 1, 0, 1, true):set_fp32())
  net:add(conv_bn(512, 512, g, 1, 0, 512, false):set_fp32())       -- global depthwise conv
  net:add(conv_bn(512, emb, 1, 1, 0, 1, false):set_fp32())         -- linear embedding
  net:add(nn.Flatten())
  return net
end

-- ---- arcface_torch's layout: every block holds its layers as `layers` ----

-- a Sequential whose children are named 0, 1, 2 ... (PyTorch's positions)
local function seq0(list)
  local s = nn.Sequential()
  for i, m in ipairs(list) do s:add(m, tostring(i - 1)) end
  return s
end

local function holder(inner) return nn.Sequential():add(inner, "layers") end

-- ConvBlock (with PReLU) and LinearBlock (without)
local function block(cin, cout, k, stride, pad, groups, act)
  local list = { nn.Conv2d(cin, cout, k, { stride = stride, padding = pad, groups = groups, bias = false }),
    nn.BatchNorm2d(cout) }
  if act then list[3] = nn.PReLU(cout) end
  return holder(seq0(list))
end

-- DepthWise: expand to `groups` channels, depthwise conv, linear projection
local function depthwise(cin, cout, residual, stride, groups)
  local body = seq0 { block(cin, groups, 1, 1, 0, 1, true), block(groups, groups, 3, stride, 1, groups, true),
    block(groups, cout, 1, 1, 0, 1, false) }
  if residual then return nn.Residual(body):name_children { "layers", "identity" } end
  return holder(body)
end

local function residual_stack(c, n, groups)
  local list = {}
  for i = 1, n do list[i] = depthwise(c, c, true, 1, groups) end
  return holder(seq0(list))
end

local function mbf(emb, size, blocks, scale)
  local c1, c2 = 64 * scale, 128 * scale
  local layers = seq0 {
    block(3, c1, 3, 2, 1, 1, true),
    blocks[1] == 1 and block(c1, c1, 3, 1, 1, 64, true) or residual_stack(c1, blocks[1], 128),
    depthwise(c1, c1, false, 2, 128),
    residual_stack(c1, blocks[2], 128),
    depthwise(c1, c2, false, 2, 256),
    residual_stack(c2, blocks[3], 256),
    depthwise(c2, c2, false, 2, 512),
    residual_stack(c2, blocks[4], 256),
  }
  local g = size / 16
  local gdc = holder(seq0 { block(512, 512, g, 1, 0, 512, false), nn.Flatten(), nn.Linear(512, emb, false),
    nn.BatchNorm1d(emb) })
  -- conv_sep and features run in float32 under mixed precision, as arcface_torch's
  -- (x.float() after autocast; docs/mixed-precision.md)
  return nn.Sequential():add(layers, "layers"):add(block(c2, 512, 1, 1, 0, 1, true):set_fp32(), "conv_sep")
    :add(gdc:set_fp32(), "features")
end

return function(opts)
  opts = check.options(NAME, opts, OPTIONS)
  local arch = opts.arch == nil and "2018" or opts.arch
  if arch ~= "2018" and arch ~= "mbf" then
    check.fail(NAME, ("arch must be \"2018\" or \"mbf\", got %s"):format(check.describe(arch)))
  end
  local emb = check.integer(NAME, "emb", opts.emb, { min = 1, max = 2 ^ 31 - 1, default = 512 })
  local size = check.integer(NAME, "size", opts.size, { min = 16, max = 4096, default = 112 })
  if size % 16 ~= 0 then check.fail(NAME, ("size must be a multiple of 16, got %d"):format(size)) end
  if arch == "mbf" then return mbf(emb, size, { 1, 4, 6, 2 }, 2) end
  return mobilefacenet_2018(emb, size)
end
