--- facet.models: face-recognition backbones built from facet.nn.
--   facet.models.iresnet{ depth = 50 (18|34|50|100|200), se = false, emb = 512, size = 112, dropout = 0 }
--   facet.models.mobilefacenet{ arch = "2018"|"mbf", emb = 512, size = 112 }
--   facet.models.convnet{ in_channels = 1, size = 28, emb = 128 }
--   facet.models.attentionnet_irse{ stages = { 1, 1, 1 }, se = true, emb = 512, size = 112, dropout = 0.4 }
--   facet.models.vit{ variant = "t"|"s"|"b"|"l" (or arcface_torch's vit_* names), emb = 512, size = 112,
--                     drop_path, mask_ratio, dropout = 0, dim, depth, heads }
--   facet.models.build(name, opts): one of them by name (the command line's and
--   the recipes' --model); an unknown name or option is an error that lists the choices.
-- Each backbone checks its own options too (names and values: facet.check),
-- and records them in model.spec = { name =, opts = } (checkpoints keep it).
-- Parameter counts are checked in spec/models_spec.lua and listed in docs/models.md.
local check = require "facet.check"

local M = {}

-- Every backbone records how it was built: model.spec = { name =, opts = }
-- (plain values only), which checkpoints store so that evaluation, export,
-- embedding and resume need only the file (facet.backbone).
local function plain(v, depth)
  if type(v) == "table" then
    if depth > 4 then return nil end
    local out = {}
    for k, x in pairs(v) do
      if type(k) == "string" or type(k) == "number" then out[k] = plain(x, depth + 1) end
    end
    return out
  end
  if type(v) == "number" or type(v) == "string" or type(v) == "boolean" then return v end
  return nil
end
M.plain = function(v) return plain(v, 0) end

local function described(name, build)
  return function(opts)
    local model = build(opts)
    model.spec = { name = name, opts = plain(opts or {}, 0) or {} }
    return model
  end
end

M.iresnet = described("iresnet", require "facet.models.iresnet")
M.mobilefacenet = described("mobilefacenet", require "facet.models.mobilefacenet")
M.convnet = described("convnet", require "facet.models.convnet")
M.attentionnet_irse = described("attentionnet_irse", require "facet.models.attentionnet")
M.vit = described("vit", require "facet.models.vit")

-- the options each backbone takes
local OPTIONS = {
  iresnet = { "depth", "se", "emb", "size", "dropout" },
  mobilefacenet = { "arch", "emb", "size" },
  convnet = { "in_channels", "size", "emb" },
  attentionnet_irse = { "stages", "se", "emb", "size", "dropout" },
  vit = { "variant", "emb", "size", "drop_path", "mask_ratio", "dropout", "dim", "depth", "heads" },
}

--- The names build knows, sorted.
M.names = {}
for name in pairs(OPTIONS) do M.names[#M.names + 1] = name end
table.sort(M.names)

--- The backbone called name, built with opts (nil options take the backbone's defaults).
function M.build(name, opts)
  local takes = OPTIONS[name]
  if not takes then
    check.fail("facet.models.build", ("unknown backbone %s (known: %s)"):format((check.describe(name):gsub('"', "")),
      table.concat(M.names, ", ")))
  end
  if opts ~= nil and type(opts) ~= "table" then
    check.fail("facet.models.build", ("opts must be a table, got %s"):format(check.describe(opts)))
  end
  opts = opts or {}
  local known = {}
  for _, k in ipairs(takes) do known[k] = true end
  for k in pairs(opts) do
    if not known[k] then
      check.fail("facet.models.build", ("%s takes no option %s (it takes %s)"):format(name, (check.describe(k):gsub('"', "")),
        table.concat(takes, ", ")))
    end
  end
  return M[name](opts)
end

return M
