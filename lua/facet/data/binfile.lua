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
--   local f = binfile.open("lfw.bin")      -- or read pair by pair, then f:close()
local ffi = require "ffi"
local core = require "facet.core"

local C, check = core.C, core.check

local M = {}

-- ---- the open file ------------------------------------------------------------------
-- binfile.open(path) -> file: f:pairs(), f:issame(p), f:image_size(i),
-- f:image_bytes(i) (p = 1..P, i = 1..2P), f:close() (or the GC). A closed file
-- refuses every method but close with "binfile:<method>: the file is closed".

local File = {}
File.__index = File

local n64 = ffi.new("int64_t[1]")
local same1 = ffi.new("int[1]")

local function handle(self, name)
  if getmetatable(self) ~= File then error("binfile:" .. name .. ": call it with ':' on a file", 3) end
  if self.h == nil then error("binfile:" .. name .. ": the file is closed", 3) end
  return self.h
end

local function index_in(self, i, n, what, name)
  if type(i) ~= "number" or i ~= math.floor(i) or i < 1 or i > n then
    error(("binfile:%s: %s %s outside 1..%d"):format(name, what, tostring(i), n), 3)
  end
  return i - 1
end

--- open(path) -> file (the pickle is parsed and checked here, once).
function M.open(path)
  if type(path) ~= "string" then error("binfile.open: path must be a string, got " .. type(path), 2) end
  local pp = ffi.new("facet_binfile *[1]")
  check(C.facet_binfile_init(pp, path), 2)
  local self = setmetatable({ h = ffi.gc(pp[0], C.facet_binfile_free), path = path, cap = 0 }, File)
  check(C.facet_binfile_pairs(self.h, n64), 2)
  self.n = tonumber(n64[0])
  return self
end

function File:pairs() handle(self, "pairs"); return self.n end

--- true when pair p shows one person.
function File:issame(p)
  local h = handle(self, "issame")
  check(C.facet_binfile_issame(h, index_in(self, p, self.n, "pair", "issame"), same1), 2)
  return same1[0] ~= 0
end

--- Size in bytes of image i's encoded bytes.
function File:image_size(i)
  local h = handle(self, "image_size")
  check(C.facet_binfile_image_size(h, index_in(self, i, 2 * self.n, "image", "image_size"), n64), 2)
  return tonumber(n64[0])
end

--- The encoded bytes of image i, as a Lua string.
function File:image_bytes(i)
  local h = handle(self, "image_bytes")
  local k = index_in(self, i, 2 * self.n, "image", "image_bytes")
  check(C.facet_binfile_image_size(h, k, n64), 2)
  local size = tonumber(n64[0])
  if size > self.cap then
    self.cap = math.max(size, 2 * self.cap, 4096)
    self.buf = ffi.new("uint8_t[?]", self.cap)
  end
  check(C.facet_binfile_read_image(h, k, self.buf, self.cap, n64), 2)
  return ffi.string(self.buf, tonumber(n64[0]))
end

--- Closes the file now (the GC would otherwise). Closing twice is harmless.
function File:close()
  if getmetatable(self) ~= File then error("binfile:close: call it with ':' on a file", 2) end
  if self.h == nil then return end
  local h = self.h
  self.h, self.buf, self.cap = nil, nil, 0
  ffi.gc(h, nil)
  C.facet_binfile_free(h)
end

-- ---- load ---------------------------------------------------------------------------

--- load(path [, { decode = true, size = {h, w} }]) -> { pairs = P, issame = {...}, images = tensor or {bytes...} }
function M.load(path, opts)
  if type(path) ~= "string" then error("load_bin: path must be a string, got " .. type(path), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("load_bin: options must be a table", 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "decode" and k ~= "size" then error(("load_bin: unknown option '%s' (decode, size)"):format(tostring(k)), 2) end
  end

  local ok, f = pcall(M.open, path)
  if not ok then error(f, 2) end
  local out = { pairs = f.n, issame = {}, images = {} }
  local read_ok, err = pcall(function()
    for p = 1, f.n do out.issame[p] = f:issame(p) end
    for i = 1, 2 * f.n do out.images[i] = f:image_bytes(i) end
  end)
  f:close()                        -- at once, also when reading failed
  if not read_ok then error((tostring(err):gsub("^[^\n]-%.lua:%d+: ", "")), 2) end
  if opts.decode ~= false then
    local image = require "facet.data.image"
    local size = opts.size
    if size ~= nil then
      require("facet.check").list("load_bin", "size", size, { len = 2, integer = true, min = 1, max = 65536 })
    end
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

require("facet.check").methods(File, "binfile", "a .bin file")

return M
