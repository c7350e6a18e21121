--- Verification .bin files (a pickle of (bins, issame_list)): every dialect
-- the public files come in, from tools/make_bin_fixtures.py (the expected
-- images below are that script's formulas, written out again), the real
-- small_lfw.bin from ../shared/data when it is there, and hostile or broken
-- pickles refused without running anything, each with its message. Broken
-- pickles that are easier to write as bytes are built here.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local ffi = require "ffi"
local core = require "facet.core"
local binfile = require "facet.data.binfile"

local C = core.C
local FIX = "spec/fixtures/bin/"
local SMALL_LFW = "../shared/data/small_lfw.bin"
local PWNED = "/tmp/facet_binfile_pwned" -- what the hostile fixtures would create

local tmp = F.scratch()
local write_file, exists = F.write_file, F.exists

-- the fixture script's fake images
local function img(k) return string.char(0xFF, 0xD8, k % 256, (k * 37) % 256) end
local function long_img(k)
  local t = {}
  for j = 0, 299 do t[j + 1] = string.char((k + j) % 256) end
  return table.concat(t)
end

local function assert_bin(v, images, issame)
  assert.are.equal(#issame, v.pairs)
  assert.are.same(issame, v.issame)
  assert.are.equal(#images, #v.images)
  for i = 1, #images do assert.are.equal(images[i], v.images[i], "image " .. i) end
end

describe("load_bin reads the dialects", function()
  it("protocol 2 with Python 2 str (SHORT_BINSTRING, BINSTRING, BINGET, memo from 1)", function()
    local v = binfile.load(FIX .. "p2_str.bin", { decode = false })
    assert_bin(v, { img(0), img(1), long_img(2), img(3), img(0), img(5) }, { true, false, true })
  end)

  it("protocol 3 with bytes (SHORT_BINBYTES, BINBYTES)", function()
    assert_bin(binfile.load(FIX .. "p3_bytes.bin", { decode = false }),
      { img(10), long_img(11), img(12), img(13), img(14), img(15) }, { false, true, false })
  end)

  it("protocol 4 with bytes (FRAME, MEMOIZE)", function()
    assert_bin(binfile.load(FIX .. "p4_bytes.bin", { decode = false }), { img(20), img(21), img(22), img(23) }, { true, false })
  end)

  it("520 pairs: APPENDS batches of 1000, LONG_BINPUT and LONG_BINGET", function()
    local images, issame = {}, {}
    for k = 0, 1039 do
      local d = k % 300
      images[k + 1] = string.char(d % 256, math.floor(d / 256))
    end
    for k = 0, 519 do issame[k + 1] = k % 3 == 0 end
    assert_bin(binfile.load(FIX .. "p3_many.bin", { decode = false }), images, issame)
  end)

  it("NumPy arrays through _reconstruct (GLOBAL, REDUCE, BUILD), shapes (n,) and (n, 1)", function()
    assert_bin(binfile.load(FIX .. "numpy_p3.bin", { decode = false }), { img(30), img(31), img(32), img(33) }, { false, true })
  end)

  it("NumPy arrays at protocol 4 (STACK_GLOBAL) with issame as a bool array", function()
    assert_bin(binfile.load(FIX .. "numpy_p4.bin", { decode = false }),
      { img(40), img(41), img(42), img(43), img(44), img(45) }, { true, true, false })
  end)

  it("small_lfw.bin from ../shared/data: 10 pairs, all same, 20 JPEGs", function()
    if not exists(SMALL_LFW) then
      pending("../shared/data/small_lfw.bin is not there (CI has it beside the checkout)")
      return
    end
    local v = binfile.load(SMALL_LFW, { decode = false })
    assert.are.equal(10, v.pairs)
    for p = 1, 10 do assert.is_true(v.issame[p]) end
    -- sizes as Python's pickle.load gives them
    local sizes = { 4996, 5959, 5701, 5364, 5070, 5364, 5505, 6033, 4783, 5744,
                    4783, 5029, 5519, 5241, 4806, 5241, 5549, 5468, 6785, 4543 }
    assert.are.equal(20, #v.images)
    for i = 1, 20 do
      assert.are.equal(sizes[i], #v.images[i], "image " .. i)
      assert.are.equal("\255\216", v.images[i]:sub(1, 2), "image " .. i .. " starts with the JPEG SOI marker")
      assert.are.equal("\255\217", v.images[i]:sub(-2), "image " .. i .. " ends with the JPEG EOI marker")
    end
    -- decoded (the default): one 2P x 3 x H x W tensor, InsightFace's normalisation
    local d = binfile.load(SMALL_LFW)
    local info = facet.data.image_info(v.images[1])
    assert.are.same({ 20, 3, info.height, info.width }, d.images:shape())
    assert.is_true(d.images:min() >= -127.5 / 128 and d.images:max() <= 127.5 / 128)
    assert.is_true(d.images:sumsq() > 0)
    local small = binfile.load(SMALL_LFW, { size = { 56, 56 } })
    assert.are.same({ 20, 3, 56, 56 }, small.images:shape())
  end)
end)

describe("load_bin refuses", function()
  it("a pickle that calls os.system, without running it", function()
    os.remove(PWNED)
    H.assert_error(function() binfile.load(FIX .. "evil_os_system.bin") end, "facet_binfile_init",
      "evil_os_system.bin", "pickle global 'os.system' is not allowed", "never runs code", "opcode at byte 6")
    assert.is_false(exists(PWNED))
  end)

  it("a protocol 4 pickle that calls builtins.eval (STACK_GLOBAL)", function()
    os.remove(PWNED)
    H.assert_error(function() binfile.load(FIX .. "evil_eval_p4.bin") end, "pickle global 'builtins.eval'")
    assert.is_false(exists(PWNED))
  end)

  it("bytes pickled by Python 3 at protocol 2 (_codecs.encode), saying what to do", function()
    H.assert_error(function() binfile.load(FIX .. "codecs_p2.bin") end, "'_codecs.encode'",
      "save the file again with protocol 3 or higher")
  end)

  it("a truncated file", function()
    H.assert_error(function() binfile.load(FIX .. "truncated.bin") end, "truncated.bin",
      "the file is truncated: a string of 300 bytes at byte 19 runs past the end (119 bytes)")
  end)

  it("counts that do not match (2P images for P flags)", function()
    H.assert_error(function() binfile.load(FIX .. "bad_counts.bin") end,
      "wrong counts: 6 images for 2 issame flags (want 2 images per pair, 4)")
  end)

  it("decoded pixels instead of encoded images", function()
    H.assert_error(function() binfile.load(FIX .. "pixels.bin") end,
      "image 0 is a NumPy array of dtype 'u1' and shape (2, 2, 3)", "decoded pixels are not supported")
  end)

  -- pickles written as bytes: { name, bytes, expected message parts... }
  local U = function(s) return "U" .. string.char(#s) .. s end -- SHORT_BINSTRING
  local cases = {
    { "an empty file", "", "truncated", "before the pickle's STOP" },
    { "text, not a pickle", "hello world", "not a pickle of protocol 2 or higher", "0x68" },
    { "protocol 1 (no PROTO)", "]q\0.", "not a pickle of protocol 2 or higher" },
    { "an unknown protocol", "\128\6N.", "pickle protocol 6 is not supported" },
    { "no STOP", "\128\2N", "ends at byte 3 before the pickle's STOP" },
    { "a dict", "\128\2}.", "unsupported pickle opcode '}' (EMPTY_DICT)", "opcode at byte 2" },
    { "an INST opcode", "\128\2(ios\nsystem\n.", "unsupported pickle opcode 'i' (INST)" },
    { "a float", "\128\2G\0\0\0\0\0\0\0\0.", "'G' (BINFLOAT)" },
    { "a top-level list", "\128\2].", "the pickle holds a list, want the tuple (bins, issame_list)" },
    { "a tuple of 3", "\128\2(]]]t.", "a tuple of a length other than 2" },
    { "bins that is not a list", "\128\2N]\134.", "bins is None, want a list of images" },
    { "issame that is not a list", "\128\2]N\134.", "issame_list is None" },
    { "an int as an image", "\128\2](KKKKe]\136a\134.", "image 0 is an int, want bytes" },
    { "a str (text) as an image", "\128\2](X\1\0\0\0aX\1\0\0\0be]\136a\134.", "image 0 is a str (text)" },
    { "an int as a flag", "\128\2](" .. U "a" .. U "b" .. "e]K\1a\134.", "issame_list item 0 is an int, want a bool" },
    { "an unset memo index", "\128\2h\5.", "memo index 5 was never set" },
    { "a memo index out of sequence", "\128\2Nr\0\0\0\64.", "memo index 1073741824 is out of sequence" },
    { "an empty stack", "\128\2\134.", "TUPLE2 with 0 values on the stack" },
    { "APPENDS without a MARK", "\128\2]Ne.", "no MARK on the stack" },
    { "APPEND to a tuple", "\128\2)Na.", "APPEND to a tuple, not a list" },
    { "values left over", "\128\2NN.", "the pickle ends with 1 values left on the stack" },
    { "a MARK as a value", "\128\2(\133.", "a MARK inside TUPLE1" },
    { "a huge BINBYTES8", "\128\4\142\0\0\0\0\0\0\0\64.", "a string of 4611686018427387904 bytes",
      "runs past the end" },
    { "a huge FRAME", "\128\4\149\0\0\0\0\0\0\0\1N.", "a frame of", "runs past the end" },
    { "REDUCE on a non-global", "\128\2N)R.", "REDUCE calls None" },
    { "numpy.ndarray called directly", "\128\2cnumpy\nndarray\n)R.", "numpy.ndarray is called directly" },
    { "a float64 array", "\128\2cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\0\133" .. U "b"
      .. "\135R(K\1K\1\133cnumpy\ndtype\n" .. U "f8" .. "\133R\137" .. U "12345678" .. "tb.",
      "NumPy dtype 'f8' is not supported" },
    { "an array whose data does not fill its shape", "\128\2cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\0"
      .. "\133" .. U "b" .. "\135R(K\1K\5\133cnumpy\ndtype\n" .. U "u1" .. "\133R\137" .. U "abc" .. "tb.",
      "NumPy array shape does not match its 3 data bytes" },
    { "a long GLOBAL name", "\128\2c" .. ("x"):rep(200) .. "\ny\n.", "GLOBAL name longer than 128 bytes" },
  }
  for _, case in ipairs(cases) do
    it(case[1], function()
      local p = tmp("case.bin")
      write_file(p, case[2])
      local parts = { "facet_binfile_init", p }
      for k = 3, #case do parts[#parts + 1] = case[k] end
      H.assert_error(function() binfile.load(p) end, unpack(parts))
    end)
  end

  it("a missing file or a directory", function()
    H.assert_error(function() binfile.load(tmp("none.bin")) end, "none.bin", "cannot open")
    H.assert_error(function() binfile.load(tmp()) end, "not a regular file")
  end)

  it("decoding images that are not JPEG or PNG, bad options and paths", function()
    H.assert_error(function() binfile.load(FIX .. "p3_bytes.bin") end, "p3_bytes.bin: image 1", "neither JPEG nor PNG")
    H.assert_error(function() binfile.load(FIX .. "p3_bytes.bin", { decod = false }) end, "unknown option 'decod'")
    H.assert_error(function() binfile.load(FIX .. "p3_bytes.bin", "x") end, "options must be a table")
    H.assert_error(function() binfile.load(42) end, "path must be a string")
  end)

  it("bad arguments at the C boundary", function()
    local out = ffi.new("facet_binfile *[1]")
    local n, same = ffi.new("int64_t[1]"), ffi.new("int[1]")
    local function c_error(rc, ...)
      assert.are_not.equal(0, rc)
      local msg = core.last_error()
      for _, s in ipairs { ... } do assert.truthy(msg:find(s, 1, true), msg) end
    end
    c_error(C.facet_binfile_init(nil, "x"), "facet_binfile_init: out is NULL")
    c_error(C.facet_binfile_init(out, nil), "facet_binfile_init: path is NULL")
    assert.are.equal(0, C.facet_binfile_init(out, FIX .. "p4_bytes.bin"))
    local b = ffi.gc(out[0], C.facet_binfile_free)
    assert.are.equal(0, C.facet_binfile_pairs(b, n))
    assert.are.equal(2, tonumber(n[0]))
    c_error(C.facet_binfile_pairs(nil, n), "facet_binfile_pairs: b is NULL")
    c_error(C.facet_binfile_issame(b, 2, same), "facet_binfile_issame: pair 2 outside [0, 2)")
    c_error(C.facet_binfile_image_size(b, 4, n), "facet_binfile_image_size: image index 4 outside [0, 4)")
    c_error(C.facet_binfile_image_size(b, -1, n), "index -1")
    local small = ffi.new("uint8_t[2]")
    c_error(C.facet_binfile_read_image(b, 0, small, 2, n), "image 0 has 4 bytes, more than the capacity 2")
    c_error(C.facet_binfile_read_image(b, 0, nil, 4, n), "dst is NULL")
    local buf = ffi.new("uint8_t[4]")
    assert.are.equal(0, C.facet_binfile_read_image(b, 3, buf, 4, n))
    assert.are.equal(img(23), ffi.string(buf, 4))
    assert.are.equal(0, C.facet_binfile_free(nil))
  end)
end)
