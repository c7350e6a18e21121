--- NumPy .npy files: facet.load_npy / facet.save_npy.
-- The fixtures in spec/fixtures/ come from tools/make_npy_fixtures.py (NumPy);
-- the expected values below are written out from the formulas in that script,
-- never read back through our own reader. Files the spec writes go to a fresh
-- temporary directory that is removed at the end.

local ffi = require "ffi"
local facet = require "facet"
local H = require "support.device"
local F = require "support.files"

local FIX = "spec/fixtures/"
-- without the sanitizer runtimes `make sanitize` preloads into everything it starts
local PY = F.PY

local function fixture(name) return FIX .. name end

local read_bytes, write_bytes, exists = F.read_file, F.write_file, F.exists

local values, range = H.values, H.range   -- flat Lua list of the values (CPU copy, C order); { f(0), ... }

-- a tensor of the given dtype and shape holding f(0), f(1), ... in C order
local function filled(shape, dtype, f)
  local t = facet.empty(shape, { dtype = dtype })
  local p = t:data_ptr()
  for i = 0, t:numel() - 1 do p[i] = f(i) end
  return t
end

-- the error message of fn(), which must fail
local function error_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- asserts that loading path fails with a message naming the file and every pattern
local function assert_load_error(path, ...)
  assert.has_error(function() facet.load_npy(path) end)
  local msg = error_of(function() facet.load_npy(path) end)
  assert.is_truthy(msg:find(path, 1, true), "message does not name the file: " .. msg)
  for _, pat in ipairs { ... } do
    assert.is_truthy(msg:find(pat), ("message lacks %q: %s"):format(pat, msg))
  end
  return msg
end

-- a .npy file from a raw header string (padded like NumPy's) and raw data
local function npy_bytes(header, data, major, minor)
  major, minor = major or 1, minor or 0
  local nlen = major == 1 and 2 or 4
  local hlen = #header + 1
  local pad = (64 - (6 + 2 + nlen + hlen) % 64) % 64
  local total, len = hlen + pad, {}
  for k = 1, nlen do len[k] = string.char(total % 256); total = math.floor(total / 256) end
  return "\147NUMPY" .. string.char(major, minor) .. table.concat(len) .. header .. (" "):rep(pad) .. "\n"
    .. (data or "")
end

local function f32_bytes(list)
  local buf = ffi.new("float[?]", #list)
  for i = 1, #list do buf[i - 1] = list[i] end
  return ffi.string(buf, 4 * #list)
end

local function numpy_available()
  local ok = os.execute(PY .. ' -c "import numpy" >/dev/null 2>&1')
  return ok == 0 or ok == true
end

local tmp = F.scratch()

describe("load_npy on NumPy's files", function()
  it("f32_2x3: arange(6) / 4 - 0.5", function()
    local t = facet.load_npy(fixture("f32_2x3.npy"))
    assert.are.equal("float32", t:dtype())
    assert.are.equal("cpu", t:device())
    assert.are.same({ 2, 3 }, t:shape())
    assert.are.same({ -0.5, -0.25, 0, 0.25, 0.5, 0.75 }, values(t))
    assert.are.equal(0.75, t:get(2, 3))
  end)

  it("i32_vec: negatives and the int32 limits", function()
    local t = facet.load_npy(fixture("i32_vec.npy"))
    assert.are.equal("int32", t:dtype())
    assert.are.same({ 7 }, t:shape())
    assert.are.same({ 0, 1, -1, 7, -123456, 2147483647, -2147483648 }, values(t))
  end)

  it("i64_3d: 2x3x4 of i * 1000003 - 7 in C order", function()
    local t = facet.load_npy(fixture("i64_3d.npy"))
    assert.are.equal("int64", t:dtype())
    assert.are.same({ 2, 3, 4 }, t:shape())
    assert.are.same(range(24, function(i) return i * 1000003 - 7 end), values(t))
    -- [2][3][1] is flat index 1*12 + 2*4 + 0 = 20
    assert.are.equal(20 * 1000003 - 7, t:get(2, 3, 1))
  end)

  it("u8_4x5: (i * 13) % 256", function()
    local t = facet.load_npy(fixture("u8_4x5.npy"))
    assert.are.equal("uint8", t:dtype())
    assert.are.same({ 4, 5 }, t:shape())
    assert.are.same(range(20, function(i) return (i * 13) % 256 end), values(t))
  end)

  it("scalar_f32: a 0-d array gives a 0-dim tensor", function()
    local t = facet.load_npy(fixture("scalar_f32.npy"))
    assert.are.equal("float32", t:dtype())
    assert.are.equal(0, t:dim())
    assert.are.same({}, t:shape())
    assert.are.equal(1, t:numel())
    assert.are.equal(3.25, t:item())
  end)

  it("empty_f32: shape (0, 3)", function()
    local t = facet.load_npy(fixture("empty_f32.npy"))
    assert.are.equal("float32", t:dtype())
    assert.are.same({ 0, 3 }, t:shape())
    assert.are.equal(0, t:numel())
  end)

  it("v2_f32: a version 2.0 file", function()
    assert.are.equal("\2\0", read_bytes(fixture("v2_f32.npy")):sub(7, 8))
    local t = facet.load_npy(fixture("v2_f32.npy"))
    assert.are.equal("float32", t:dtype())
    assert.are.same({ 5 }, t:shape())
    assert.are.same({ 0, 1.5, 3, 4.5, 6 }, values(t))
  end)

  it("reads a version 3.0 header (2.0 with a utf8 header)", function()
    local p = tmp("v3.npy")
    write_bytes(p, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
      f32_bytes { 1.5, -2 }, 3, 0))
    local t = facet.load_npy(p)
    assert.are.same({ 2 }, t:shape())
    assert.are.same({ 1.5, -2 }, values(t))
  end)

  it("accepts '<u1', double quotes, Python 2 longs and no trailing comma", function()
    local p = tmp("variants.npy")
    write_bytes(p, npy_bytes('{"descr": "<u1", "shape": (2L, 1), "fortran_order": False}', "\7\250"))
    local t = facet.load_npy(p)
    assert.are.equal("uint8", t:dtype())
    assert.are.same({ 2, 1 }, t:shape())
    assert.are.same({ 7, 250 }, values(t))
  end)

  it("loads onto the GPU with opts.device = 'cuda'", function()
    if not facet.cuda.available() then
      pending("no CUDA device")
      return
    end
    local t = facet.load_npy(fixture("f32_2x3.npy"), { device = "cuda" })
    assert.are.equal("cuda", t:device())
    assert.are.same({ -0.5, -0.25, 0, 0.25, 0.5, 0.75 }, values(t))
  end)

  it("refuses an unknown device before reading", function()
    local msg = error_of(function() facet.load_npy(fixture("f32_2x3.npy"), { device = "tpu" }) end)
    assert.is_truthy(msg:find("unknown device 'tpu'", 1, true), msg)
  end)
end)

describe("save_npy", function()
  it("writes the same bytes as np.save", function()
    -- the fixtures came from np.save (NumPy >= 1.23 pads the header the same way)
    for _, name in ipairs { "f32_2x3.npy", "i32_vec.npy", "i64_3d.npy", "u8_4x5.npy",
                            "scalar_f32.npy", "empty_f32.npy" } do
      local p = tmp("same_" .. name)
      facet.save_npy(facet.load_npy(fixture(name)), p)
      assert.are.equal(read_bytes(fixture(name)), read_bytes(p), name)
    end
  end)

  it("pads the header to a multiple of 64 bytes and ends it with a newline", function()
    for _, shape in ipairs { {}, { 3 }, { 2, 3 }, { 1, 2, 3, 4, 5, 6, 7, 8 }, { 123456789, 0 } } do
      local p = tmp("pad.npy")
      facet.save_npy(facet.empty(shape), p)
      local s = read_bytes(p)
      assert.are.equal("\147NUMPY\1\0", s:sub(1, 8))
      local hlen = s:byte(9) + 256 * s:byte(10)
      assert.are.equal(0, (10 + hlen) % 64)
      assert.are.equal("\n", s:sub(10 + hlen, 10 + hlen))
    end
  end)

  it("round-trips every dtype", function()
    local cases = {
      float32 = function(i) return (i - 5) * 0.375 end,
      int32 = function(i) return (i - 6) * 123457 end,
      int64 = function(i) return (i - 6) * 1234567891 end, -- beyond 32 bits
      uint8 = function(i) return (i * 37) % 256 end,
    }
    for dtype, f in pairs(cases) do
      local p = tmp("rt_" .. dtype .. ".npy")
      facet.save_npy(filled({ 3, 4 }, dtype, f), p)
      local back = facet.load_npy(p)
      assert.are.equal(dtype, back:dtype())
      assert.are.same({ 3, 4 }, back:shape())
      assert.are.same(range(12, f), values(back))
    end
  end)

  it("keeps int64 values exactly, beyond 2^53", function()
    local t = facet.empty({ 3 }, { dtype = "int64" })
    local p = t:data_ptr()
    p[0], p[1], p[2] = 9223372036854775807LL, -9223372036854775807LL - 1, 9007199254740993LL
    facet.save_npy(t, tmp("i64max.npy"))
    local q = facet.load_npy(tmp("i64max.npy")):data_ptr()
    assert.is_true(q[0] == 9223372036854775807LL)
    assert.is_true(q[1] == -9223372036854775807LL - 1)
    assert.is_true(q[2] == 9007199254740993LL)
  end)

  it("round-trips 0-d, empty, 3-d and 8-d tensors", function()
    local cases = {
      { {}, function() return -7.5 end },
      { { 0, 3 } }, { { 3, 0, 2 } }, { { 0 } },
      { { 2, 3, 4 }, function(i) return i / 8 end },
      { { 1, 2, 1, 2, 1, 2, 1, 2 }, function(i) return i - 8 end },
    }
    for k, c in ipairs(cases) do
      local shape, f = c[1], c[2] or function() return 0 end
      local p = tmp("rt_shape" .. k .. ".npy")
      local t = filled(shape, "float32", f)
      facet.save_npy(t, p)
      local back = facet.load_npy(p)
      assert.are.same(shape, back:shape())
      assert.are.equal(t:numel(), back:numel())
      assert.are.same(range(t:numel(), f), values(back))
    end
  end)

  it("saves a non-contiguous view as its values in C order", function()
    local v = facet.arange(12):reshape { 3, 4 }:narrow(2, 2, 2)
    assert.is_false(v:is_contiguous())
    local p = tmp("view.npy")
    facet.save_npy(v, p)
    local back = facet.load_npy(p)
    assert.are.same({ 3, 2 }, back:shape())
    assert.are.same({ 1, 2, 5, 6, 9, 10 }, values(back))
  end)

  it("saves a CUDA tensor", function()
    if not facet.cuda.available() then
      pending("no CUDA device")
      return
    end
    local t = facet.arange(12, { device = "cuda" }):reshape { 3, 4 }:narrow(2, 2, 2)
    facet.save_npy(t, tmp("cuda.npy"))
    local back = facet.load_npy(tmp("cuda.npy"))
    assert.are.same({ 3, 2 }, back:shape())
    assert.are.same({ 1, 2, 5, 6, 9, 10 }, values(back))
  end)

  it("writes files NumPy reads", function()
    if not numpy_available() then
      pending(PY .. " with numpy is not available")
      return
    end
    local a, b, c = tmp("np_a.npy"), tmp("np_b.npy"), tmp("np_c.npy")
    facet.save_npy(filled({ 2, 3 }, "float32", function(i) return i * 0.5 - 1 end), a)
    facet.save_npy(filled({ 4 }, "int64", function(i) return (i - 2) * 3000000000 end), b)
    facet.save_npy(filled({}, "uint8", function() return 200 end), c)
    local script = ("import numpy as np\nfor p in (%q, %q, %q):\n"
      .. "    x = np.load(p)\n    print(x.dtype.str, x.shape, x.tolist())\n"):format(a, b, c)
    local f = io.popen(PY .. " -c '" .. script .. "' 2>&1")
    local out = f:read("*a")
    f:close()
    assert.are.equal("<f4 (2, 3) [[-1.0, -0.5, 0.0], [0.5, 1.0, 1.5]]\n"
      .. "<i8 (4,) [-6000000000, -3000000000, 0, 3000000000]\n"
      .. "|u1 () 200\n", out)
  end)

  it("replaces an existing file and leaves no temporary file", function()
    local p = tmp("replace.npy")
    write_bytes(p, "old contents")
    facet.save_npy(facet.full({ 2 }, 4), p)
    assert.are.same({ 4, 4 }, values(facet.load_npy(p)))
    assert.is_false(exists(p .. ".tmp"))
  end)

  it("fails clearly on a path it cannot write", function()
    local p = tmp("no_such_dir/x.npy")
    local msg = error_of(function() facet.save_npy(facet.zeros { 2 }, p) end)
    assert.is_truthy(msg:find(p, 1, true), msg)
    assert.is_truthy(msg:find("cannot open for writing", 1, true), msg)
  end)

  it("fails clearly when the target is a directory, without leaving a temporary file", function()
    local d = tmp("a_dir")
    os.execute("mkdir '" .. d .. "'")
    local msg = error_of(function() facet.save_npy(facet.zeros { 2 }, d) end)
    assert.is_truthy(msg:find(d, 1, true), msg)
    assert.is_truthy(msg:find("rename"), msg)
    assert.is_false(exists(d .. ".tmp"))
  end)

  it("wants a tensor and a path", function()
    assert.is_truthy(error_of(function() facet.save_npy({ 1, 2 }, tmp("x.npy")) end):find("expected a facet tensor"))
    assert.is_truthy(error_of(function() facet.save_npy(facet.zeros { 2 }) end):find("path must be a string"))
  end)
end)

describe("load_npy refuses", function()
  it("fortran_order True", function()
    assert_load_error(fixture("fortran_f32.npy"), "fortran_order", "ascontiguousarray")
  end)

  it("big-endian data", function()
    assert_load_error(fixture("bigendian_f4.npy"), "big%-endian", "'>f4'", "astype")
  end)

  it("float64, naming the dtype and suggesting a conversion", function()
    assert_load_error(fixture("f64.npy"), "'<f8'", "float64", "astype%(np.float32%)")
  end)

  it("object arrays, without unpickling anything", function()
    assert_load_error(fixture("object.npy"), "'|O'", "object")
  end)

  it("a truncated file", function()
    assert_load_error(fixture("truncated.npy"), "truncated", "58")
  end)

  it("a missing file", function()
    assert_load_error(tmp("does_not_exist.npy"), "cannot open", "No such file")
  end)

  it("a garbage file", function()
    local p = tmp("garbage.npy")
    write_bytes(p, ("this is not a numpy file at all\n"):rep(4))
    assert_load_error(p, "not a .npy file", "bad magic")
  end)

  it("an empty file and a cut-off prefix", function()
    local p = tmp("empty.npy")
    write_bytes(p, "")
    assert_load_error(p, "too short")
    write_bytes(p, "\147NUMPY\1\0\118")
    assert_load_error(p, "too short")
  end)

  it("a directory", function()
    local d = tmp("dir.npy")
    os.execute("mkdir '" .. d .. "'")
    assert_load_error(d, "cannot")
  end)

  it("unsupported format versions", function()
    local h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }"
    local p = tmp("version.npy")
    write_bytes(p, npy_bytes(h, f32_bytes { 1 }, 4, 0))
    assert_load_error(p, "unsupported .npy format version 4.0")
    write_bytes(p, npy_bytes(h, f32_bytes { 1 }, 1, 1))
    assert_load_error(p, "version 1.1")
  end)

  it("extra bytes after the data", function()
    local p = tmp("extra.npy")
    write_bytes(p, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f32_bytes { 1, 2, 3 }))
    assert_load_error(p, "file has 4 bytes more than the shape")
  end)

  it("data too short for the shape", function()
    local p = tmp("short.npy")
    write_bytes(p, npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", ("\0"):rep(16)))
    assert_load_error(p, "truncated", "needs 24 bytes")
    -- a huge shape is refused before any allocation
    write_bytes(p, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000000000), }", ""))
    assert_load_error(p, "truncated")
  end)

  it("a header length beyond the file", function()
    local p = tmp("hlen.npy")
    write_bytes(p, "\147NUMPY\1\0\255\1{'descr': '<f4'}")
    assert_load_error(p, "header length 511 goes past the end of the file")
    write_bytes(p, "\147NUMPY\2\0\255\255\255\127{}")
    assert_load_error(p, "goes past the end of the file")
  end)

  local malformed = {
    { "missing shape", "{'descr': '<f4', 'fortran_order': False, }", "'shape' is missing" },
    { "an unknown key", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", "unexpected key 'x'" },
    { "a repeated key", "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "appears twice" },
    { "a missing comma", "{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "expected ',' or '}'" },
    { "not a dict", "[1, 2, 3]", "expected '{'" },
    { "an unquoted key", "{descr: '<f4', 'fortran_order': False, 'shape': (1,)}", "quoted key" },
    { "an unterminated string", "{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}", "malformed header" },
    { "an unclosed dict", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "expected ',' or '}'" },
    { "text after the dict", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "after the dict" },
    { "a function call", "{'descr': __import__('os').system('false'), 'fortran_order': False, 'shape': (1,)}",
      "unexpected '__import__" },
    { "a non-bool fortran_order", "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "'fortran_order' is 0" },
    { "a non-string descr", "{'descr': 4, 'fortran_order': False, 'shape': (1,)}", "'descr' is 4" },
    { "a list shape", "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", "want a tuple" },
    { "a parenthesised int shape", "{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", "want a tuple" },
    { "a float shape entry", "{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,)}", "non%-integer entry 2.5" },
    { "a None shape entry", "{'descr': '<f4', 'fortran_order': False, 'shape': (None,)}", "non%-integer entry None" },
    { "a negative shape entry", "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2)}", "negative entry %-1" },
    { "nine dims", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1)}",
      "9 dims, at most 8" },
    { "a unicode string dtype", "{'descr': '<U5', 'fortran_order': False, 'shape': (1,)}", "'<U5'" },
    { "a big-endian float16", "{'descr': '>f2', 'fortran_order': False, 'shape': (1,)}", "big%-endian dtype '>f2'" },
    { "a bool dtype", "{'descr': '|b1', 'fortran_order': False, 'shape': (1,)}", "bool" },
    { "a big-endian int64", "{'descr': '>i8', 'fortran_order': False, 'shape': (1,)}", "big%-endian dtype '>i8'" },
    { "a structured dtype", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", "structured" },
    { "an unknown dtype", "{'descr': 'float', 'fortran_order': False, 'shape': (1,)}", "unsupported dtype 'float'" },
  }
  for _, case in ipairs(malformed) do
    it("a header with " .. case[1], function()
      local p = tmp("malformed.npy")
      write_bytes(p, npy_bytes(case[2], f32_bytes { 1 }))
      assert_load_error(p, case[3])
    end)
  end

  it("a non-string path or bad options", function()
    assert.is_truthy(error_of(function() facet.load_npy(42) end):find("path must be a string"))
    assert.is_truthy(error_of(function() facet.load_npy(fixture("f32_2x3.npy"), "cpu") end):find("options must be a table"))
  end)
end)
