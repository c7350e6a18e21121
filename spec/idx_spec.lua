--- IDX files: hand-built files of every element type, raw and gzip-compressed,
-- the bad cases, and Debian's Fashion-MNIST when it is installed.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local ffi = require "ffi"

ffi.cdef [[
  int gzwrite(gzFile file, const void *buf, unsigned int len);
]]

local tmp = F.scratch()

local function be32(v) return string.char(math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256, math.floor(v / 256) % 256, v % 256) end

local function write(name, bytes, gz)
  local path = tmp(name)
  if gz then
    local z = ffi.load("z")
    local f = z.gzopen(path, "wb")
    z.gzwrite(f, bytes, #bytes)
    z.gzclose(f)
  else
    F.write_file(path, bytes)
  end
  return path
end

describe("load_idx", function()
  it("uint8 3-d, raw and gzip-compressed", function()
    local bytes = "\0\0\8\3" .. be32(2) .. be32(2) .. be32(3) .. string.char(0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255)
    for _, gz in ipairs { false, true } do
      local t = facet.data.load_idx(write(gz and "u8.gz" or "u8", bytes, gz))
      assert.are.equal("uint8", t:dtype())
      assert.are.same({ 2, 2, 3 }, t:shape())
      assert.are.same({ 0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255 }, H.values(t))
    end
  end)

  it("int8, int16, int32, float32 and float64 elements (big-endian)", function()
    local t = facet.data.load_idx(write("i8", "\0\0\9\1" .. be32(3) .. string.char(0x80, 0xff, 0x7f)))
    assert.are.same({ -128, -1, 127 }, H.values(t))
    t = facet.data.load_idx(write("i16", "\0\0\11\1" .. be32(2) .. string.char(0x80, 0x00, 0x01, 0x02)))
    assert.are.same({ -32768, 258 }, H.values(t))
    t = facet.data.load_idx(write("i32", "\0\0\12\1" .. be32(2) .. string.char(0xff, 0xff, 0xff, 0xfe, 0, 1, 0, 0)))
    assert.are.equal("int32", t:dtype())
    assert.are.same({ -2, 65536 }, H.values(t))
    -- 1.5 = 0x3fc00000, -2 = 0xc0000000
    t = facet.data.load_idx(write("f32", "\0\0\13\1" .. be32(2) .. string.char(0x3f, 0xc0, 0, 0, 0xc0, 0, 0, 0)))
    assert.are.same({ 1.5, -2 }, H.values(t))
    -- 0.25 as a double = 0x3fd0000000000000
    t = facet.data.load_idx(write("f64", "\0\0\14\1" .. be32(1) .. string.char(0x3f, 0xd0, 0, 0, 0, 0, 0, 0)))
    assert.are.equal("float32", t:dtype())
    assert.are.same({ 0.25 }, H.values(t))
  end)

  it("bad files are errors naming the file and the problem", function()
    local cases = {
      { "short", "\0\0", "too short" },
      { "magic", "\1\0\8\1" .. be32(1) .. "x", "bad magic" },
      { "type", "\0\0\7\1" .. be32(1) .. "x", "unknown IDX element type 0x07" },
      { "dims", "\0\0\8\0", "0 dims" },
      { "header", "\0\0\8\2" .. be32(1), "truncated header" },
      { "data", "\0\0\8\1" .. be32(4) .. "ab", "shape 4 makes 12 bytes, but the file has 10" },
      { "trail", "\0\0\8\1" .. be32(1) .. "ab", "shape 1 makes 9 bytes, but the file has 10" },
      { "huge", "\0\0\8\3" .. be32(65536) .. be32(65536) .. be32(65536), "too large" },
    }
    for _, c in ipairs(cases) do
      local path = write(c[1], c[2])
      H.assert_error(function() facet.data.load_idx(path) end, path, c[3])
    end
    H.assert_error(function() facet.data.load_idx(tmp("none")) end, "cannot open")
  end)

  it("gzip files: a header claiming more data than the trailer is refused before any allocation", function()
    local function gz(name, bytes)
      local path = write(name, bytes)
      assert.is_true(os.execute(("gzip -n -f '%s'"):format(path)) == 0)
      return path .. ".gz"
    end
    -- 2^30 bytes claimed by 9 bytes of data: refused from the trailer, not after a 1 GiB allocation
    local big = gz("big", "\0\0\8\1" .. be32(2 ^ 30) .. "x")
    H.assert_error(function() facet.data.load_idx(big) end, big, "makes 1073741832 bytes, but its gzip trailer says 9")
    -- a trailer that agrees loads
    local ok = gz("ok", "\0\0\8\1" .. be32(3) .. "abc")
    assert.are.same({ 97, 98, 99 }, { facet.data.load_idx(ok):data_ptr()[0], facet.data.load_idx(ok):data_ptr()[1],
      facet.data.load_idx(ok):data_ptr()[2] })
  end)

  it("Fashion-MNIST from Debian's dataset-fashion-mnist", function()
    local f = io.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    if not f then pending("dataset-fashion-mnist is not installed") return end
    f:close()
    local x, y = facet.data.fashion_mnist { split = "test" }
    assert.are.same({ 10000, 1, 28, 28 }, x:shape())
    local counts = {}
    for _, v in ipairs(H.values(y)) do counts[v] = (counts[v] or 0) + 1 end
    for c = 0, 9 do assert.are.equal(1000, counts[c]) end   -- the test split is balanced
    assert.is_true(x:min() >= -127.5 / 128 and x:max() <= 127.5 / 128)
    local x2, y2 = facet.data.fashion_mnist { split = "test", classes = { 7, 8, 9 } }
    assert.are.equal(3000, x2:size(1))
    assert.are.equal(7, y2:float():min())
  end)
end)
