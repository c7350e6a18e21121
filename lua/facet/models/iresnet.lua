--- facet.models.iresnet{ depth = 18|34|50|100|200, se = false, emb = 512,
-- size = 112, dropout = 0 }: InsightFace's improved ResNet (Deng et al.,
-- ArcFace): a 3x3 conv-BN-PReLU stem; four stages of 64, 128, 256, 512
-- channels, each starting with stride 2, made of units
-- BN-conv3x3-BN-PReLU-conv3x3(stride)-BN (+ SE with se = true: IR-SE) with an
-- identity or conv1x1-BN shortcut; then BN-dropout-FC-BN (BatchNorm1d) to the
-- embedding. Children carry arcface_torch's names (conv1, bn1, prelu,
-- layer1.0.bn1 ... layer4, bn2, dropout, fc, features, a unit's downsample.0/1),
-- so its checkpoints load without renames. arcface_torch drops out after the
-- flatten, facet before it: the same elementwise mask either way.
local nn = require "facet.nn"
local check = require "facet.check"

local NAME = "facet.models.iresnet"
local OPTIONS = { "depth", "se", "emb", "size", "dropout" }

local LAYERS = { [18] = { 2, 2, 2, 2 }, [34] = { 3, 4, 6, 3 }, [50] = { 3, 4, 14, 3 }, [100] = { 3, 13, 30, 3 },
  [200] = { 6, 26, 60, 6 } }

-- arcface_torch's IBasicBlock; the body is transparent ("") so its layers
-- sit beside the shortcut (downsample)
local function unit(cin, cout, stride, se)
  local body = nn.Sequential()
    :add(nn.BatchNorm2d(cin), "bn1")
    :add(nn.Conv2d(cin, cout, 3, { padding = 1, bias = false }), "conv1")
    :add(nn.BatchNorm2d(cout), "bn2")
    :add(nn.PReLU(cout), "prelu")
    :add(nn.Conv2d(cout, cout, 3, { stride = stride, padding = 1, bias = false }), "conv2")
    :add(nn.BatchNorm2d(cout), "bn3")
  if se then body:add(nn.SE(cout, 16), "se") end
  if stride ~= 1 or cin ~= cout then
    local shortcut = nn.Sequential():add(nn.Conv2d(cin, cout, 1, { stride = stride, bias = false }), "0")
      :add(nn.BatchNorm2d(cout), "1")
    return nn.Residual(body, shortcut):name_children { "", "downsample" }
  end
  return nn.Residual(body):name_children { "", "identity" }
end

return function(opts)
  opts = check.options(NAME, opts, OPTIONS)
  local depth = opts.depth == nil and 50 or opts.depth
  if not LAYERS[depth] then
    check.fail(NAME, ("depth must be 18, 34, 50 or 100, got %s (or 200, arcface_torch's iresnet200)"):format(
      check.describe(depth)))
  end
  local emb = check.integer(NAME, "emb", opts.emb, { min = 1, max = 2 ^ 31 - 1, default = 512 })
  local size = check.integer(NAME, "size", opts.size, { min = 16, max = 4096, default = 112 })
  local se = check.boolean(NAME, "se", opts.se, false)
  local dropout = check.number(NAME, "dropout", opts.dropout, { min = 0, lt = 1, default = 0 })
  local layers = LAYERS[depth]
  if size % 16 ~= 0 then check.fail(NAME, ("size must be a multiple of 16, got %d"):format(size)) end
  local net = nn.Sequential():add(nn.Conv2d(3, 64, 3, { padding = 1, bias = false }), "conv1")
    :add(nn.BatchNorm2d(64), "bn1"):add(nn.PReLU(64), "prelu")
  local cin = 64
  for i, c in ipairs { 64, 128, 256, 512 } do
    local stage = nn.Sequential()
    for j = 1, layers[i] do
      stage:add(unit(cin, c, j == 1 and 2 or 1, se), tostring(j - 1))
      cin = c
    end
    net:add(stage, "layer" .. i)
  end
  local s = size / 16
  net:add(nn.BatchNorm2d(512), "bn2")
  if dropout > 0 then net:add(nn.Dropout(dropout), "dropout") end
  net:add(nn.Flatten(), "flatten")
  -- fc and features run in float32 under mixed precision, as arcface_torch's
  -- (x.float() after autocast; nn.Sequential, docs/mixed-precision.md)
  net:add(nn.Linear(512 * s * s, emb):set_fp32(), "fc")
  net:add(nn.BatchNorm1d(emb):set_fp32(), "features")
  return net
end
