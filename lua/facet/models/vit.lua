--- facet.models.vit{ variant = "t", emb = 512, size = 112, drop_path, mask_ratio,
-- dropout = 0, dim, depth, heads }: arcface_torch's VisionTransformer
-- (backbones/vit.py) for face embeddings. A 9x9 stride-9 patch embedding
-- (Conv2d, 144 tokens from 112 x 112), a learned position embedding, random
-- token masking in training (mask_ratio), `depth` pre-norm blocks
--   x = x + DropPath(Attention(LayerNorm(x)))
--   x = x + DropPath(fc2(ReLU6(fc1(LayerNorm(x)))))       (MLP ratio 4)
-- with 8-head self-attention (qkv without bias), a final LayerNorm, and the
-- feature head Linear(tokens * dim -> dim, no bias), BatchNorm1d (eps 2e-5),
-- Linear(dim -> emb, no bias), BatchNorm1d (eps 2e-5).
-- Variants (arcface_torch's names; `variant` takes either):
--   t = vit_t                 dim 256, depth 12, drop_path 0.1, mask_ratio 0.1
--   vit_t_dp005_mask0         dim 256, depth 12, drop_path 0.05, mask_ratio 0
--   s = vit_s                 dim 512, depth 12, drop_path 0.1, mask_ratio 0.1
--   vit_s_dp005_mask_0        dim 512, depth 12, drop_path 0.05, mask_ratio 0
--   b = vit_b                 dim 512, depth 24, drop_path 0.1, mask_ratio 0.1
--   vit_b_dp005_mask_005      dim 512, depth 24, drop_path 0.05, mask_ratio 0.1 *
--   l = vit_l_dp005_mask_005  dim 768, depth 24, drop_path 0.05, mask_ratio 0.1 *
-- (* arcface_torch builds these with mask_ratio 0.05, but its forward only
-- tests that ratio for > 0 and masks at random_masking's default, 0.1: facet
-- masks what arcface_torch runs. An explicit mask_ratio is the ratio used.)
-- drop_path is the last block's rate (block i gets drop_path * i / (depth - 1),
-- as arcface_torch's linspace); dim, depth and heads override the variant's
-- (small models for tests). Children carry arcface_torch's state_dict names
-- (patch_embed.proj, pos_embed, mask_token, blocks.N.norm1/attn.qkv/attn.proj/
-- norm2/mlp.fc1/mlp.fc2, norm, feature.0-3), so its checkpoints load as they
-- are. Under mixed precision the final norm and the feature head run in
-- float32, as arcface_torch's forward_features (self.norm(x.float())).
-- Weights start as arcface_torch's: Linear weights, pos_embed and mask_token
-- normal with std 0.02 (its trunc_normal_ cuts at +-2 absolute, 100 std:
-- never), biases 0, LayerNorm 1 and 0. The model's random layers (every
-- DropPath and the token masking) share the model's random stream
-- (Module:random_stream), so each draws its own numbers.
local nn = require "facet.nn"
local tensor = require "facet.tensor"
local check = require "facet.check"

local NAME = "facet.models.vit"
local OPTIONS = { "variant", "emb", "size", "drop_path", "mask_ratio", "dropout", "dim", "depth", "heads" }
local PATCH, HEADS, MLP_RATIO = 9, 8, 4

local VARIANTS = {
  vit_t = { dim = 256, depth = 12, drop_path = 0.1, mask_ratio = 0.1 },
  vit_t_dp005_mask0 = { dim = 256, depth = 12, drop_path = 0.05, mask_ratio = 0 },
  vit_s = { dim = 512, depth = 12, drop_path = 0.1, mask_ratio = 0.1 },
  vit_s_dp005_mask_0 = { dim = 512, depth = 12, drop_path = 0.05, mask_ratio = 0 },
  vit_b = { dim = 512, depth = 24, drop_path = 0.1, mask_ratio = 0.1 },
  vit_b_dp005_mask_005 = { dim = 512, depth = 24, drop_path = 0.05, mask_ratio = 0.1 },    -- as run (above)
  vit_l_dp005_mask_005 = { dim = 768, depth = 24, drop_path = 0.05, mask_ratio = 0.1 },
}
local SHORT = { t = "vit_t", s = "vit_s", b = "vit_b", l = "vit_l_dp005_mask_005" }

-- weights drawn as arcface_torch's _init_weights: normal(0, std)
local function init_normal(t, std)
  t:copy(tensor.randn(t:shape()):mul(std))
end

local function linear(n_in, n_out, bias)
  local m = nn.Linear(n_in, n_out, bias)
  init_normal(m.weight, 0.02)
  if m.bias then m.bias:zero_() end
  return m
end

-- one pre-norm block; its two residual branches are transparent, so their
-- layers sit in the block's namespace (norm1, attn, norm2, mlp)
local function block(dim, heads, drop_path)
  local attn = nn.MultiheadAttention(dim, heads)
  init_normal(attn.modules[1].weight, 0.02)
  init_normal(attn.modules[2].weight, 0.02)
  attn.modules[2].bias:zero_()
  local first = nn.Sequential():add(nn.LayerNorm(dim), "norm1"):add(attn, "attn")
  local mlp = nn.Sequential():add(linear(dim, dim * MLP_RATIO), "fc1"):add(nn.ReLU6(), "act")
    :add(linear(dim * MLP_RATIO, dim), "fc2")
  local second = nn.Sequential():add(nn.LayerNorm(dim), "norm2"):add(nn.Rows(mlp), "mlp")
  if drop_path > 0 then
    first:add(nn.DropPath(drop_path), "drop_path")
    second:add(nn.DropPath(drop_path), "drop_path2")
  end
  return nn.Sequential()
    :add(nn.Residual(first):name_children { "", "identity" }, "")
    :add(nn.Residual(second):name_children { "", "identity2" }, "")
end

return function(opts)
  opts = check.options(NAME, opts, OPTIONS)
  local variant = opts.variant == nil and "vit_t" or opts.variant
  if type(variant) == "string" and SHORT[variant] then variant = SHORT[variant] end
  local base = VARIANTS[variant]
  if not base then
    local names = {}
    for k in pairs(VARIANTS) do names[#names + 1] = k end
    table.sort(names)
    check.fail(NAME, ("variant must be t, s, b, l or one of %s, got %s"):format(table.concat(names, ", "),
      check.describe(opts.variant)))
  end
  local emb = check.integer(NAME, "emb", opts.emb, { min = 1, max = 2 ^ 31 - 1, default = 512 })
  local size = check.integer(NAME, "size", opts.size, { min = PATCH, max = 4096, default = 112 })
  local dim = check.integer(NAME, "dim", opts.dim, { min = 1, max = 2 ^ 16, default = base.dim })
  local depth = check.integer(NAME, "depth", opts.depth, { min = 1, max = 1000, default = base.depth })
  local heads = check.integer(NAME, "heads", opts.heads, { min = 1, max = dim, default = math.min(HEADS, dim) })
  if dim % heads ~= 0 then check.fail(NAME, ("dim %d must be a multiple of heads %d"):format(dim, heads)) end
  local drop_path = check.number(NAME, "drop_path", opts.drop_path, { min = 0, lt = 1, default = base.drop_path })
  local mask_ratio = check.number(NAME, "mask_ratio", opts.mask_ratio, { min = 0, lt = 1, default = base.mask_ratio })
  local dropout = check.number(NAME, "dropout", opts.dropout, { min = 0, lt = 1, default = 0 })
  local side = math.floor(size / PATCH)
  local tokens = side * side
  if math.floor(tokens * (1 - mask_ratio)) < 1 then
    check.fail(NAME, ("mask_ratio %g keeps no token of the %d a %d x %d input makes"):format(mask_ratio, tokens,
      size, size))
  end

  local patch = nn.Sequential():add(nn.Conv2d(3, dim, PATCH, { stride = PATCH }), "proj"):add(nn.Tokens(), "tokens")
  local pos = nn.PosEmbed(tokens, dim)
  init_normal(pos.pos_embed, 0.02)
  local blocks = nn.Sequential()
  for i = 1, depth do
    blocks:add(block(dim, heads, depth > 1 and drop_path * (i - 1) / (depth - 1) or 0), tostring(i - 1))
  end
  -- the final norm and what follows run in float32 under mixed precision
  local trunk = nn.Sequential():add(blocks, "blocks"):add(nn.LayerNorm(dim):set_fp32(), "norm")
  local masked = nn.TokenMask(trunk, tokens, dim, mask_ratio)
  init_normal(masked.mask_token, 0.02)
  local feature = nn.Sequential()
    :add(linear(tokens * dim, dim, false), "0")
    :add(nn.BatchNorm1d(dim, { eps = 2e-5 }), "1")
    :add(linear(dim, emb, false), "2")
    :add(nn.BatchNorm1d(emb, { eps = 2e-5 }), "3")
  local net = nn.Sequential():add(patch, "patch_embed"):add(pos, "")
  if dropout > 0 then net:add(nn.Dropout(dropout), "pos_drop") end
  net:add(masked, ""):add(nn.Flatten(), "flatten"):add(feature:set_fp32(), "feature")
  net:random_stream()     -- the random layers draw from one stream, not each the same numbers
  return net
end
