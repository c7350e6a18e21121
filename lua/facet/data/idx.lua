--- facet.data.load_idx(path): IDX files (MNIST, Fashion-MNIST), raw or
-- gzip-compressed (zlib reads both). Big-endian header: two zero bytes, a
-- type byte, the number of dims, then uint32 sizes; big-endian data.
-- uint8 stays uint8, int32 and float32 keep their type; int8 and int16 become
-- int32, float64 becomes float32. Bad magic, unknown types, truncated data,
-- trailing bytes and absurd sizes are errors naming the file.
--
-- facet.data.fashion_mnist{ split = "train" | "test", dir, classes, normalize }:
-- Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) as
-- x (N x 1 x 28 x 28 float32, (v - 127.5) / 128 unless normalize = false) and
-- y (N int64 labels); `classes` keeps only the listed labels.
local ffi = require "ffi"
local tensor = require "facet.tensor"
local sys = require "facet.sys"

local M = {}

local function z()
  local lib, err = sys.zlib()
  if not lib then error("load_idx: " .. err, 3) end
  return lib
end

-- type byte -> element bytes, reader dtype
local TYPES = {
  [0x08] = { size = 1, ctype = "uint8_t", dtype = "uint8" },
  [0x09] = { size = 1, ctype = "int8_t", dtype = "int32" },
  [0x0B] = { size = 2, ctype = "int16_t", dtype = "int32" },
  [0x0C] = { size = 4, ctype = "int32_t", dtype = "int32" },
  [0x0D] = { size = 4, ctype = "float", dtype = "float32" },
  [0x0E] = { size = 8, ctype = "double", dtype = "float32" },
}

local function bswap_into(dst, src, n, size, ctype)
  -- big-endian elements of `size` bytes from src into dst as host values
  local tmp = ffi.new("uint8_t[8]")
  local typed = ffi.cast(ctype .. " *", tmp)
  for i = 0, n - 1 do
    for b = 0, size - 1 do tmp[b] = src[i * size + size - 1 - b] end
    dst[i] = typed[0]
  end
end

-- nil when `total` decompressed bytes agree with what is on disk; else the size
-- found and what it is (raw: the file's size; gzip: the ISIZE trailer of a
-- single-member file, the size mod 2^32)
local function expected_size(path, total)
  local f = sys.open_read(path)
  if not f then return nil end
  local magic = f:read(2)
  local size = f:seek("end")
  local found, what
  if magic == "\31\139" then
    if size >= 18 then
      f:seek("set", size - 4)
      local b = f:read(4)
      local isize = b:byte(1) + b:byte(2) * 256 + b:byte(3) * 65536 + b:byte(4) * 16777216
      if isize ~= total % 2 ^ 32 then found, what = isize, "its gzip trailer says" end
    end
  elseif size ~= total then
    found, what = size, "the file has"
  end
  f:close()
  return found, what
end

function M.load_idx(path)
  if type(path) ~= "string" then error("load_idx: path must be a string", 2) end
  if sys.is_dir(path) then error(("load_idx: %s is a directory, not an IDX file"):format(path), 2) end
  local lib = z()
  local f = lib.gzopen(path, "rb")
  if f == nil then error(("load_idx: cannot open %s"):format(path), 2) end
  -- every path, errors included, closes the gzFile once
  local function fail(msg) error(("load_idx: %s: %s"):format(path, msg), 0) end
  local ok, out, raw, count, t = pcall(function()
    local head = ffi.new("uint8_t[4]")
    if lib.gzread(f, head, 4) ~= 4 then fail("file too short for an IDX header") end
    if head[0] ~= 0 or head[1] ~= 0 then fail("bad magic (want two zero bytes, a type byte and a dim count)") end
    local t = TYPES[head[2]]
    if not t then fail(("unknown IDX element type 0x%02x"):format(head[2])) end
    local nd = head[3]
    if nd < 1 or nd > 8 then fail(("%d dims (facet supports 1 to 8)"):format(nd)) end
    local dims = ffi.new("uint8_t[32]")
    if lib.gzread(f, dims, 4 * nd) ~= 4 * nd then fail("truncated header") end
    local shape, count = {}, 1
    for d = 0, nd - 1 do
      local v = dims[4 * d] * 16777216 + dims[4 * d + 1] * 65536 + dims[4 * d + 2] * 256 + dims[4 * d + 3]
      shape[d + 1] = v
      count = count * v
    end
    if count * t.size > 2 ^ 34 then fail(("shape %s is too large"):format(table.concat(shape, "x"))) end
    local nbytes = count * t.size
    -- nothing is allocated for data the file cannot hold: a raw file's size, or
    -- a gzip member's ISIZE trailer (the data's size mod 2^32), must agree
    local found, what = expected_size(path, 4 + 4 * nd + nbytes)
    if found then fail(("the header's shape %s makes %.0f bytes, but %s %.0f"):format(
      table.concat(shape, "x"), 4 + 4 * nd + nbytes, what, found)) end
    local out = tensor.empty(shape, { dtype = t.dtype })
    -- read in pieces (gzread takes an unsigned int length)
    local raw = t.size == 1 and t.ctype == "uint8_t" and ffi.cast("uint8_t *", out:data_ptr()) or
      ffi.new("uint8_t[?]", math.max(nbytes, 1))
    local done = 0
    while done < nbytes do
      local want = math.min(nbytes - done, 2 ^ 30)
      local got = lib.gzread(f, raw + done, want)
      if got <= 0 then fail(("truncated data: %d of %d bytes"):format(done, nbytes)) end
      done = done + got
    end
    local extra = ffi.new("uint8_t[1]")
    if lib.gzread(f, extra, 1) ~= 0 then fail("trailing bytes after the data the shape describes") end
    return out, raw, count, t
  end)
  lib.gzclose(f)
  if not ok then error(out, 2) end
  if t.ctype ~= "uint8_t" then bswap_into(out:data_ptr(), raw, count, t.size, t.ctype) end
  return out
end

M.FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

function M.fashion_mnist(opts)
  opts = require("facet.check").options("facet.data.fashion_mnist", opts, { "split", "dir", "classes", "normalize" })
  local split = opts.split or "train"
  if split ~= "train" and split ~= "test" then error("fashion_mnist: split is train or test", 2) end
  local dir = opts.dir or M.FASHION_MNIST_DIR
  local prefix = split == "train" and "train" or "t10k"
  local images = M.load_idx(("%s/%s-images-idx3-ubyte.gz"):format(dir, prefix))
  local labels = M.load_idx(("%s/%s-labels-idx1-ubyte.gz"):format(dir, prefix))
  local n = images:size(1)
  if labels:numel() ~= n then error(("fashion_mnist: %d images but %d labels"):format(n, labels:numel()), 2) end
  local keep
  if opts.classes then
    local want = {}
    for _, c in ipairs(opts.classes) do want[c] = true end
    local lp = labels:data_ptr()
    keep = {}
    for i = 0, n - 1 do if want[lp[i]] then keep[#keep + 1] = i + 1 end end
  end
  local x = images:float()
  if opts.normalize ~= false then x:add_(-127.5):mul_(1 / 128) end
  x = x:reshape { n, 1, 28, 28 }
  local y = labels:long()
  if keep then
    local idx = tensor.tensor(keep, { dtype = "int32" })
    x = x:reshape { n, 784 }:index_select(idx):reshape { #keep, 1, 28, 28 }
    local yp, src = tensor.empty({ #keep }, { dtype = "int64" }), y:data_ptr()
    local d = yp:data_ptr()
    for i, k in ipairs(keep) do d[i - 1] = src[k - 1] end
    y = yp
  end
  return x, y
end

return M
