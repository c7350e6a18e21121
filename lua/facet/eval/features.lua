--- facet.eval.features(model, paths [, { size = { 112, 112 }, batch_size = 256, flip = true,
-- device = "cpu" }]): per-image features of image files (JPEG or PNG, already
-- aligned face crops), in evaluation mode and in batches: the model's output
-- for the image plus, with flip, for its mirror, NOT normalised (IJB's
-- protocol weighs each image by its feature's norm; facet.eval.embed gives
-- unit rows). Returns an N x dim float32 CPU tensor, row i for paths[i].
-- A file that cannot be read or decoded is an error naming it.
local tensor = require "facet.tensor"
local check = require "facet.check"
local sys = require "facet.sys"
local image = require "facet.data.image"

local NAME = "facet.eval.features"

local function read(path)
  local bytes, err = sys.read_file(path)
  if not bytes then check.fail(NAME, err) end
  return bytes
end

return function(model, paths, opts)
  opts = check.options(NAME, opts, { "size", "batch_size", "flip", "device" })
  check.module(NAME, "model", model)
  check.table(NAME, "paths", paths)
  local n = #paths
  if n == 0 then check.fail(NAME, "paths lists no image") end
  for i = 1, n do check.string(NAME, ("paths[%d]"):format(i), paths[i]) end
  local size = check.list(NAME, "size", opts.size, { integer = true, min = 1, len = 2, default = { 112, 112 } })
  local bs = check.integer(NAME, "batch_size", opts.batch_size, { min = 1, default = 256 })
  local flip = check.boolean(NAME, "flip", opts.flip, true)
  local device = check.enum(NAME, "device", opts.device, { "cpu", "cuda" }, "cpu")
  local was = model.training
  if type(model.train) == "function" then model:train(false) end
  local ok, out = pcall(function()
    local out
    local x = tensor.empty { math.min(bs, n), 3, size[1], size[2] }
    local xf = flip and tensor.empty { math.min(bs, n), 3, size[1], size[2] } or nil
    for first = 1, n, bs do
      local b = math.min(bs, n - first + 1)
      for k = 0, b - 1 do
        local bytes = read(paths[first + k])
        local okd, img = pcall(image.decode_image, bytes, { size = size })
        if not okd then check.fail(NAME, ("%s: %s"):format(paths[first + k], tostring(img))) end
        x:select(1, k + 1):copy(img)
        if xf then xf:select(1, k + 1):copy(image.decode_image(bytes, { size = size, flip = true })) end
      end
      local e = model:forward(x:narrow(1, 1, b):to(device)):to("cpu"):clone()
      if xf then e:add_(model:forward(xf:narrow(1, 1, b):to(device)):to("cpu")) end
      if not out then out = tensor.empty { n, e:size(2) } end
      out:narrow(1, first, b):copy(e)
    end
    return out
  end)
  if type(model.train) == "function" then model:train(was ~= false) end
  if not ok then error(out, 0) end
  return out
end
