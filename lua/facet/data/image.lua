--- facet.data.image: decoding JPEG and PNG (facet_image_* in the C core).
--   facet.data.image_info(bytes) -> { format = "jpeg" | "png", width, height }
--   facet.data.decode_image(bytes [, { size = {h, w}, flip = false,
--       mean = 127.5, std = 128, raw = false }]) -> 3 x H x W float32
--     ((v - mean) / std, InsightFace's normalisation, by default), or with
--     raw = true the H x W x 3 uint8 RGB pixels.
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"

local C, check = core.C, core.check
local M = {}

local fmt, w, h = ffi.new("int[1]"), ffi.new("int[1]"), ffi.new("int[1]")
local NAMES = { [0] = "jpeg", [1] = "png" }

function M.image_info(bytes)
  if type(bytes) ~= "string" then error("image_info: want the encoded bytes as a string", 2) end
  check(C.facet_image_info(bytes, #bytes, fmt, w, h))
  return { format = NAMES[fmt[0]], width = w[0], height = h[0] }
end

local function triple(v, what)
  if type(v) == "number" then return ffi.new("float[3]", v, v, v) end
  if type(v) == "table" and #v == 3 then return ffi.new("float[3]", v) end
  error(("decode_image: %s must be a number or 3 numbers"):format(what), 3)
end

function M.decode_image(bytes, opts)
  opts = opts or {}
  if type(bytes) ~= "string" then error("decode_image: want the encoded bytes as a string", 2) end
  check(C.facet_image_info(bytes, #bytes, fmt, w, h))
  local rgb = tensor.empty({ h[0], w[0], 3 }, { dtype = "uint8" })
  check(C.facet_image_decode(rgb.h, bytes, #bytes))
  if opts.raw then return rgb end
  local size = opts.size or { h[0], w[0] }
  local out = tensor.empty({ 3, size[1], size[2] })
  check(C.facet_image_to_tensor(out.h, rgb.h, opts.flip and 1 or 0, triple(opts.mean or 127.5, "mean"),
    triple(opts.std or 128, "std")))
  return out
end

local sz = ffi.new("size_t[1]")

--- PNG bytes (a Lua string) of an H x W x 3 uint8 tensor.
function M.encode_png(rgb)
  if not tensor.is_tensor(rgb) then error("encode_png: want an H x W x 3 uint8 tensor", 2) end
  check(C.facet_image_encode_png(rgb.h, nil, 0, sz))
  local n = tonumber(sz[0])
  local buf = ffi.new("uint8_t[?]", n)
  check(C.facet_image_encode_png(rgb.h, buf, n, sz))
  return ffi.string(buf, tonumber(sz[0]))
end

return M
