--- facet.models.attentionnet_irse{ stages = {1, 1, 1}, emb = 512, size = 112,
-- se = true, dropout = 0.4 }: the residual attention network (Wang et al.,
-- 2017) as FaceX-Zoo trains it for faces (the MV-Softmax paper's backbone):
-- conv3x3(64)-BN-ReLU, max-pool, a residual block to 256 channels, then
-- stages of attention modules at 1/2, 1/4 and 1/8 of the input (stages[k]
-- modules each, with 3, 2 and 1 max-pool levels in the soft-mask branch),
-- residual blocks to 512, 1024 and 2048 channels between them, two more at
-- 2048, and BN-dropout-FC-BN to the embedding. Residual blocks are
-- pre-activation bottlenecks (BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1);
-- se = true adds a squeeze-excitation gate to each (IR-SE style).
-- stages = {1, 1, 1} is Attention-56, {1, 2, 3} Attention-92.
local nn = require "facet.nn"
local check = require "facet.check"

local NAME = "facet.models.attentionnet_irse"
local OPTIONS = { "stages", "se", "emb", "size", "dropout" }

local function block(cin, cout, stride, se)
  local mid = math.floor(cout / 4)
  local body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, mid, 1, { bias = false }),
    nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, mid, 3, { stride = stride, padding = 1, bias = false }),
    nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, cout, 1, { bias = false }))
  if se then body:add(nn.SE(cout, 16)) end
  local shortcut = nil
  if cin ~= cout or stride ~= 1 then shortcut = nn.Conv2d(cin, cout, 1, { stride = stride, bias = false }) end
  return nn.Residual(body, shortcut)
end

local function pool() return nn.MaxPool2d(3, { stride = 2, padding = 1 }) end

-- the soft-mask branch below a resolution: pool, a block, then (unless
-- innermost) the next level upsampled back plus a skip block, and a block
local function mask_level(c, size, levels, se)
  local inner_size = math.floor((size + 1) / 2)
  if levels == 1 then return nn.Sequential(pool(), block(c, c, 1, se), block(c, c, 1, se)) end
  return nn.Sequential(pool(), block(c, c, 1, se),
    nn.Add(nn.Sequential(mask_level(c, inner_size, levels - 1, se), nn.Upsample { size = { inner_size, inner_size },
      mode = "bilinear", align_corners = true }), nn.Identity(), block(c, c, 1, se)),
    block(c, c, 1, se))
end

local function attention(c, size, levels, se)
  return nn.Attention {
    first = block(c, c, 1, se),
    trunk = nn.Sequential(block(c, c, 1, se), block(c, c, 1, se)),
    mask = mask_level(c, size, levels, se),
    up = nn.Upsample { size = { size, size }, mode = "bilinear", align_corners = true },
    head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 1, { bias = false }), nn.BatchNorm2d(c),
      nn.ReLU(), nn.Conv2d(c, c, 1, { bias = false }), nn.Sigmoid()),
    last = block(c, c, 1, se),
  }
end

return function(opts)
  opts = check.options(NAME, opts, OPTIONS)
  -- at most 16 attention modules a stage (Attention-92 is {1, 2, 3})
  local stages = check.list(NAME, "stages", opts.stages, { len = 3, integer = true, min = 0, max = 16,
    default = { 1, 1, 1 } })
  local emb = check.integer(NAME, "emb", opts.emb, { min = 1, max = 2 ^ 31 - 1, default = 512 })
  local size = check.integer(NAME, "size", opts.size, { min = 16, max = 4096, default = 112 })
  local se = check.boolean(NAME, "se", opts.se, true)
  local dropout = check.number(NAME, "dropout", opts.dropout, { min = 0, lt = 1, default = 0.4 })
  if size % 16 ~= 0 then check.fail(NAME, ("size must be a multiple of 16, got %d"):format(size)) end
  local s1, s2, s3 = size / 2, size / 4, size / 8
  local net = nn.Sequential(nn.Conv2d(3, 64, 3, { padding = 1, bias = false }), nn.BatchNorm2d(64), nn.ReLU(), pool(),
    block(64, 256, 1, se))
  for _ = 1, stages[1] do net:add(attention(256, s1, 3, se)) end
  net:add(block(256, 512, 2, se))
  for _ = 1, stages[2] do net:add(attention(512, s2, 2, se)) end
  net:add(block(512, 1024, 2, se))
  for _ = 1, stages[3] do net:add(attention(1024, s3, 1, se)) end
  net:add(block(1024, 2048, 2, se))
  net:add(block(2048, 2048, 1, se))
  net:add(block(2048, 2048, 1, se))
  net:add(nn.BatchNorm2d(2048))
  if dropout > 0 then net:add(nn.Dropout(dropout)) end
  net:add(nn.Flatten())
  net:add(nn.Linear(2048 * (size / 16) ^ 2, emb):set_fp32())   -- float32 under mixed precision
  net:add(nn.BatchNorm1d(emb):set_fp32())
  return net
end
