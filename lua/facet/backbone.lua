--- facet.backbone: the backbone a saved file describes, with its weights, for
-- the commands that need only a file (`facet eval`, `export`, `embed`,
-- recipes/megaface.lua). A facet checkpoint (a run's checkpoint directory, or
-- one step-NNNNNNNN directory of it) records how its model was built
-- (trainer.json's model = { name, opts }, from model.spec), and so does a
-- .safetensors written by facet.save (metadata "facet.model"); a PyTorch
-- .pth does not. Flags override what the file says; without either the
-- backbone is iresnet-50, 512-d, 112 x 112.
--   local backbone = require "facet.backbone"
--   backbone.options(cmd)                      -- --model --depth --se --emb --size --in-channels --arch
--   local model, spec, from = backbone.load(facet, parsed)   -- parsed.checkpoint and the flags
local check = require "facet.check"
local json = require "facet.json"
local sys = require "facet.sys"

local M = {}

-- the flags and the build option each sets
local FLAGS = { { "depth", "depth" }, { "se", "se" }, { "emb", "emb" }, { "size", "size" },
  { "in_channels", "in_channels" }, { "arch", "arch" }, { "variant", "variant" } }

--- Declares the checkpoint argument and the backbone options on an argparse
-- command (no defaults: what is not given comes from the file); optional:
-- the checkpoint argument may be left out (eval --features).
function M.options(cmd, optional)
  local arg = cmd:argument("checkpoint", "A facet checkpoint (a run's checkpoint directory or one step-NNNNNNNN " ..
    "directory), a .safetensors or a PyTorch .pth of the backbone.")
  if optional then arg:args("?") end
  cmd:option("--model", "Backbone: iresnet, mobilefacenet, convnet, attentionnet_irse or vit (default: the " ..
    "checkpoint's, else iresnet).")
  cmd:option("--depth", "IResNet depth (default: the checkpoint's, else 50)."):convert(check.flag("--depth",
    { integer = true, min = 1 }))
  cmd:option("--se", "IR-SE units."):args(0)
  cmd:option("--emb", "Embedding size (default: the checkpoint's, else 512)."):convert(check.flag("--emb",
    { integer = true, min = 1 }))
  cmd:option("--size", "Input size, square (default: the checkpoint's, else 112)."):convert(check.flag("--size",
    { integer = true, min = 1 }))
  cmd:option("--in-channels", "Input channels of convnet (default: the checkpoint's, else 3)."):convert(
    check.flag("--in-channels", { integer = true, min = 1 }))
  cmd:option("--arch", "mobilefacenet's design: 2018 or mbf (arcface_torch's)."):choices { "2018", "mbf" }
  cmd:option("--variant", "vit's variant: t, s, b, l or arcface_torch's name (default: the checkpoint's, else t).")
end

--- How the file at path says its backbone was built ({ name, opts }), and
-- where that came from; nil when it does not say.
function M.described(path)
  if sys.is_dir(path) then
    local info = require("facet.checkpoint").info(path)
    if info and type(info.model) == "table" and type(info.model.name) == "string" then
      return info.model, "the checkpoint " .. info.path
    end
    return nil
  end
  if path:match("%.safetensors$") then
    local ok, _, meta = pcall(require("facet.safetensors").load, path)
    if ok and type(meta) == "table" and type(meta["facet.model"]) == "string" then
      local good, spec = pcall(json.decode, meta["facet.model"])
      if good and type(spec) == "table" and type(spec.name) == "string" then return spec, path .. "'s metadata" end
    end
  end
  return nil
end

--- The backbone of o.checkpoint, built as the file says with o's flags over
-- it, its weights loaded and in evaluation mode. Returns the model, the
-- build options ({ name, opts }) and where they came from.
function M.load(facet, o)
  local path = o.checkpoint
  if type(path) ~= "string" or path == "" then error("give a checkpoint (a directory, .safetensors or .pth)", 0) end
  if not sys.exists(path) then error(("%s does not exist"):format(path), 0) end
  local spec, from = M.described(path)
  local name = o.model or (spec and spec.name) or "iresnet"
  local opts = {}
  if spec and spec.name == name then
    for k, v in pairs(spec.opts or {}) do opts[k] = v end
  else
    from = nil
    opts = { emb = 512, size = 112 }
    if name == "iresnet" then opts.depth = 50 end
    if name == "convnet" then opts.in_channels = 3 end    -- face sets hold colour images
  end
  for _, f in ipairs(FLAGS) do
    local v = o[f[1]]
    if v ~= nil then opts[f[2]] = f[1] == "se" and true or tonumber(v) or v end
  end
  if name ~= "iresnet" and name ~= "vit" then opts.depth = nil end     -- a ViT's depth: its blocks
  if name ~= "vit" then opts.variant = nil end
  if name ~= "convnet" then opts.in_channels = nil end
  if name ~= "mobilefacenet" then opts.arch = nil end
  if name ~= "iresnet" and name ~= "attentionnet_irse" then opts.se = nil end
  local model = facet.models.build(name, opts)
  opts.size = opts.size or (name == "convnet" and 28 or 112)   -- the builders' defaults
  if name == "convnet" then opts.in_channels = opts.in_channels or 1 end
  local w = facet.load(path)
  for k in pairs(w) do if k:sub(1, 5) == "head." then w[k] = nil end end
  model:load_state(w)
  return model:evaluate(), { name = name, opts = opts }, from
end

--- "mobilefacenet{ emb = 128, size = 112 }" for messages.
function M.describe(spec)
  local keys, parts = {}, {}
  for k in pairs(spec.opts or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = spec.opts[k]
    parts[#parts + 1] = ("%s = %s"):format(k, type(v) == "table" and json.encode(v) or tostring(v))
  end
  return ("%s{ %s }"):format(spec.name, table.concat(parts, ", "))
end

return M
