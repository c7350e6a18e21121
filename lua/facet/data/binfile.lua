--- facet.data.binfile: verification pairs in InsightFace's .bin files
-- (lfw.bin, cfp_fp.bin, agedb_30.bin ...).
--   local v = binfile.load("lfw.bin", { decode = false })
--   v.pairs       P
--   v.issame      { true, false, ... }     P booleans: pair p shows one person
--   v.images      { bytes, bytes, ... }    2P encoded images (Lua strings);
--                                          pair p is images 2p - 1 and 2p
-- The file is a Python pickle; the C core reads only the structure these
-- files have (several pickle dialects, see facet.h, "data formats") and never
-- executes anything from it. decode = true (the default) gives the images as
-- one 2P x 3 x H x W float32 tensor ((v - 127.5) / 128; opts.size = {h, w}
-- resizes, default the first image's size); decode = false the encoded bytes.
local ffi = require "ffi"
local core = require "facet.core"

local C, check = core.C, core.check

local M = {}

--- load(path [, { decode = true, size = {h, w} }]) -> { pairs = P, issame = {...}, images = tensor or {bytes...} }
function M.load(path, opts)
  if type(path) ~= "string" then error("load_bin: path must be a string, got " .. type(path), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("load_bin: options must be a table", 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "decode" and k ~= "size" then error(("load_bin: unknown option '%s' (decode, size)"):format(tostring(k)), 2) end
  end

  local pp = ffi.new("facet_binfile *[1]")
  check(C.facet_binfile_init(pp, path), 2)
  local h = ffi.gc(pp[0], C.facet_binfile_free)
  local n = ffi.new("int64_t[1]")
  local same = ffi.new("int[1]")
  check(C.facet_binfile_pairs(h, n), 2)
  local pairs_count = tonumber(n[0])
  local out = { pairs = pairs_count, issame = {}, images = {} }
  for p = 1, pairs_count do
    check(C.facet_binfile_issame(h, p - 1, same), 2)
    out.issame[p] = same[0] ~= 0
  end
  local buf, cap = nil, 0
  for i = 1, 2 * pairs_count do
    check(C.facet_binfile_image_size(h, i - 1, n), 2)
    local size = tonumber(n[0])
    if size > cap then
      cap = math.max(size, 2 * cap, 4096)
      buf = ffi.new("uint8_t[?]", cap)
    end
    check(C.facet_binfile_read_image(h, i - 1, buf, cap, n), 2)
    out.images[i] = ffi.string(buf, tonumber(n[0]))
  end
  ffi.gc(h, nil)
  C.facet_binfile_free(h)
  if opts.decode ~= false then
    local image = require "facet.data.image"
    local size = opts.size
    if not size and #out.images > 0 then
      local ok, info = pcall(image.image_info, out.images[1])
      if not ok then error(("load_bin: %s: image 1: %s"):format(path, tostring(info)), 2) end
      size = { info.height, info.width }
    end
    local bytes = out.images
    local t = require("facet.tensor").empty({ #bytes, 3, size and size[1] or 0, size and size[2] or 0 })
    for i, b in ipairs(bytes) do
      local ok, img = pcall(image.decode_image, b, { size = size })
      if not ok then error(("load_bin: %s: image %d: %s"):format(path, i, tostring(img)), 2) end
      t:select(1, i):copy(img)
    end
    out.images = t
  end
  return out
end

return M
