--- float16 and bfloat16 tensors: conversions bit for bit against NumPy (and a
-- bfloat16 reference computed in float64, cross-checked with PyTorch, see
-- tools/make_half_fixtures.py), elementwise ops, reductions and GEMM against
-- NumPy within stated tolerances, npy files, printing, and clear errors from
-- the ops that take float32 only. The references are written at spec time into
-- a temporary directory by /usr/bin/python3 with NumPy.

local ffi = require "ffi"
local facet = require "facet"
local H = require "support.device"
local F = require "support.files"

local PY = F.PY
local ref = F.scratch()
local made

-- runs the reference script once
local function fixtures()
  if not made then
    local out, rc = F.sh(PY .. " tools/make_half_fixtures.py '" .. ref() .. "'")
    assert(rc == 0, "tools/make_half_fixtures.py failed: " .. out)
    made = true
  end
end

-- raw file -> (string kept alive, typed pointer, element count)
local function raw(name, ctype)
  fixtures()
  local s = F.read_file(ref(name))
  return s, ffi.cast("const " .. ctype .. " *", s), #s / ffi.sizeof(ctype)
end

-- a tensor of dtype holding the 16-bit patterns of file `name`, on the device under test
local function from_bits(name, dtype, shape)
  local s, _, n = raw(name, "uint16_t")
  local t = facet.empty(shape or { n }, { dtype = dtype })
  ffi.copy(t:bits_ptr(), s, #s)
  return H.on(t)
end

-- the bits of a 16-bit tensor (any device) as a CPU pointer; keep the returned tensor alive
local function bits_of(t)
  local c = t:cpu():contiguous()
  return c:bits_ptr(), c
end

local function hex(v, w) return ("0x%0" .. (w or 4) .. "x"):format(tonumber(v)) end

-- asserts n 16-bit patterns equal, naming the first difference and its input
local function assert_bits(got, want, n, input, what)
  for i = 0, n - 1 do
    if got[i] ~= want[i] then
      error(("%s: element %d (input %s): got %s, want %s"):format(what, i + 1,
        input and hex(input[i], 8) or "?", hex(got[i]), hex(want[i])), 2)
    end
  end
end

-- as float value lists
local function values(t)
  local c = t:cpu():contiguous():float()
  local p, r = c:data_ptr(), {}
  for i = 0, c:numel() - 1 do r[i + 1] = tonumber(p[i]) end
  return r
end

local function f64_list(name)
  local _, p, n = raw(name, "double")
  local r = {}
  for i = 0, n - 1 do r[i + 1] = tonumber(p[i]) end
  return r
end

-- 16-bit patterns as ordered integers: neighbouring values differ by 1
local function ordered(b)
  b = tonumber(b)
  if b >= 0x8000 then return -(b - 0x8000) end
  return b
end

-- float32 x rounded to dtype through a strided view (every other element,
-- starting at element `first`: the CPU's scalar path, where a contiguous copy
-- may take F16C or AVX-512 BF16) matches the reference bits want
local function strided_matches(x, dtype, inp, want, n, first)
  local half_n = math.floor(n / 2)
  local src = H.on(x):narrow(1, 1, 2 * half_n):view(half_n, 2):select(2, first)
  assert.is_false(src:is_contiguous())
  local dst = H.on(facet.empty({ half_n, 2 }, { dtype = dtype })):select(2, 1)
  dst:copy(src)
  local got = bits_of(dst)
  for i = 0, half_n - 1 do
    local k = 2 * i + first - 1
    if got[i] ~= want[k] then
      error(("strided float32 -> %s: input %s gave %s, want %s"):format(dtype, hex(inp[k], 8), hex(got[i]),
        hex(want[k])))
    end
  end
end

describe("float16 and bfloat16 conversions", function()
  H.it("float32 -> float16 equals NumPy's astype(float16) for every pattern class (2.36M patterns)", function()
    local s, inp, n = raw("f32_in.u32", "uint32_t")
    local _, want = raw("f16_ref.u16", "uint16_t")
    local x = facet.empty({ n })
    ffi.copy(x:data_ptr(), s, #s)
    local got, keep = bits_of(H.on(x):half())
    assert.are.equal("float16", keep:dtype())
    assert_bits(got, want, n, inp, "float32 -> float16")
    strided_matches(x, "float16", inp, want, n, 1)
  end)

  H.it("float32 -> bfloat16 equals the round-to-nearest-even reference (2.36M patterns)", function()
    local s, inp, n = raw("f32_in.u32", "uint32_t")
    local _, want = raw("bf16_ref.u16", "uint16_t")
    local x = facet.empty({ n })
    ffi.copy(x:data_ptr(), s, #s)
    local got = bits_of(H.on(x):bfloat16())
    assert_bits(got, want, n, inp, "float32 -> bfloat16")
    strided_matches(x, "bfloat16", inp, want, n, 2)
  end)

  -- every pattern of dtype widened (checked by widened_ok(bits, float32 bits))
  -- and rounded back to itself
  local function every_pattern(dtype, widened_ok)
    local t = facet.empty({ 65536 }, { dtype = dtype })
    local p = t:bits_ptr()
    for i = 0, 65535 do p[i] = i end
    local f = H.on(t):float():cpu()
    local fp = ffi.cast("const uint32_t *", f:data_ptr())
    -- and into a strided float32 view (the CPU's scalar path; the contiguous one may use F16C)
    local strided = H.on(facet.empty({ 65536, 2 })):select(2, 2)
    strided:copy(H.on(t))
    local sc = strided:cpu():contiguous()
    local sp = ffi.cast("const uint32_t *", sc:data_ptr())
    for i = 0, 65535 do
      local ok, want = widened_ok(i, fp[i])
      if not ok then error(("%s %s: widened to %s, want %s"):format(dtype, hex(i), hex(fp[i], 8), hex(want, 8))) end
      assert(sp[i] == fp[i], ("%s %s: strided widening gave %s"):format(dtype, hex(i), hex(sp[i], 8)))
    end
    local back = bits_of(H.on(f):to(dtype))
    for i = 0, 65535 do
      if back[i] ~= i then error(("round trip of %s %s gave %s"):format(dtype, hex(i), hex(back[i]))) end
    end
  end

  H.it("every float16 widens to NumPy's float32 and rounds back to its own bits (NaN payloads included)", function()
    local _, want = raw("f16_all_f32.u32", "uint32_t")
    every_pattern("float16", function(i, got) return got == want[i], want[i] end)
  end)

  H.it("every bfloat16 widens exactly (its bits shifted up 16) and rounds back to itself", function()
    every_pattern("bfloat16", function(i, got) return got == i * 65536, i * 65536 end)
  end)

  H.it("a double is rounded once, not through float32 (fill, facet.tensor, set)", function()
    -- 1 + 2^-11 + 2^-40 lies just above the float16 tie between 1 and 1 + 2^-10;
    -- through float32 it would become the tie itself and round to 1
    local f16 = H.on(facet.full({ 1 }, 1 + 2 ^ -11 + 2 ^ -40, { dtype = "float16" }))
    assert.are.equal(0x3c01, tonumber((bits_of(f16))[0]))
    local bf = facet.tensor({ 1 + 2 ^ -8 + 2 ^ -40, -(1 + 2 ^ -8 + 2 ^ -40), 1 + 2 ^ -8 }, { dtype = "bfloat16" })
    local p = bits_of(bf)
    assert.are.same({ 0x3f81, 0xbf81, 0x3f80 }, { tonumber(p[0]), tonumber(p[1]), tonumber(p[2]) })
    local t = H.on(facet.zeros({ 3 }, { dtype = "float16" }))
    t[1] = 65520                -- the first value that rounds to inf
    t[2] = -1e-8                -- below half the smallest subnormal: -0
    t[3] = 2 ^ -24 * 1.5        -- the tie between the two smallest subnormals: even (2)
    p = bits_of(t)
    assert.are.same({ 0x7c00, 0x8000, 0x0002 }, { tonumber(p[0]), tonumber(p[1]), tonumber(p[2]) })
    assert.are.equal(65504, facet.full({ 1 }, 65519.99, { dtype = "half" }):item())
  end)

  H.it("converts to and from every dtype", function()
    local h = H.tensor({ 1.5, -2.75, 300, 0 }, { dtype = "float16" })
    assert.are.same({ 1, -2, 300, 0 }, H.values(h:to("int32")))
    assert.are.same({ 1, -2, 300, 0 }, H.values(h:to("int64")))
    assert.are.same({ 1.5, -2.75, 300, 0 }, values(h:bfloat16()))
    assert.are.same({ 1.5, -2.75, 300, 0 }, values(h:to("bfloat16"):half()))
    assert.are.same({ 7, 255, 0 }, values(H.tensor({ 7, 255, 0 }, { dtype = "uint8" }):half()))
    assert.are.same({ 16777216 }, values(H.tensor({ 16777217 }, { dtype = "int32" }):to("bfloat16")))
    assert.are.same({ 2049 - 1 }, values(H.tensor({ 2049 }, { dtype = "int64" }):half()))   -- tie to even
    H.assert_error(function() h:to("uint8") end, "-2.75", "uint8")
    assert.are.equal(h, h:to("half"))
    assert.are.equal("bfloat16", h:to("bf16"):dtype())
    H.assert_error(function() h:to("float8") end, "unknown device or dtype 'float8'", "float16 (half)")
  end)
end)

describe("float16 and bfloat16 creation", function()
  H.it("rand and randn draw in float32 and round once; other dtypes are refused", function()
    for _, dt in ipairs { "float16", "bfloat16" } do
      local a = facet.randn({ 300 }, { seed = 5, dtype = dt, device = H.device })
      local b = facet.randn({ 300 }, { seed = 5, device = H.device }):to(dt)
      assert.are.equal(dt, a:dtype())
      assert.are.same(values(b), values(a))
      local u = facet.rand({ 50 }, { seed = 9, dtype = dt, low = -2, high = 2, device = H.device })
      assert.are.same(values(facet.rand({ 50 }, { seed = 9, low = -2, high = 2, device = H.device }):to(dt)), values(u))
    end
    H.assert_error(function() facet.rand({ 2 }, { dtype = "int32" }) end, "rand", "float32, float16 or bfloat16")
  end)

  H.it("zeros, ones, full, arange, empty_like in 16-bit dtypes", function()
    assert.are.same({ 0, 0 }, values(facet.zeros({ 2 }, { dtype = "half", device = H.device })))
    assert.are.same({ 1, 1 }, values(facet.ones({ 2 }, { dtype = "bf16", device = H.device })))
    assert.are.same({ 0, 0.5, 1, 1.5 }, values(facet.arange(0, 2, 0.5, { dtype = "float16", device = H.device })))
    -- 257 is not a bfloat16 (8 significant bits): the tie rounds to even, 256
    assert.are.same({ 256, 258 }, values(facet.arange(257, 259, 1, { dtype = "bfloat16", device = H.device })))
    local e = facet.empty_like(facet.zeros({ 3 }, { dtype = "float16" }))
    assert.are.equal("float16", e:dtype())
  end)
end)

describe("float16 and bfloat16 compute", function()
  local exact = { "add", "sub", "mul", "div", "max", "min", "neg", "abs", "relu", "scale" }
  local near = { "exp", "sqrt", "tanh", "sigmoid" }
  local shape = { 64, 96 }

  local function run(op, x, y)
    if op == "add" then return x + y elseif op == "sub" then return x - y elseif op == "mul" then return x * y
    elseif op == "div" then return x / y elseif op == "max" then return x:maximum(y)
    elseif op == "min" then return x:minimum(y) elseif op == "scale" then return x * 0.3
    elseif op == "sqrt" then return x:abs():sqrt() end
    return x[op](x)
  end

  for _, dt in ipairs { "float16", "bfloat16" } do
    H.it(dt .. " elementwise ops equal NumPy's float32 result rounded once, bit for bit", function()
      local x, y = from_bits("ops_" .. dt .. "_x.u16", dt, shape), from_bits("ops_" .. dt .. "_y.u16", dt, shape)
      for _, op in ipairs(exact) do
        local got, keep = bits_of(run(op, x, y))
        assert.are.equal(dt, keep:dtype())
        local _, want, n = raw(("ops_%s_%s.u16"):format(dt, op), "uint16_t")
        assert_bits(got, want, n, nil, dt .. " " .. op)
      end
    end)

    H.it(dt .. " exp, sqrt, tanh, sigmoid are within 1 unit in the last place of NumPy's", function()
      local x = from_bits("ops_" .. dt .. "_x.u16", dt, shape)
      for _, op in ipairs(near) do
        local got = bits_of(run(op, x))
        local _, want, n = raw(("ops_%s_%s.u16"):format(dt, op), "uint16_t")
        for i = 0, n - 1 do
          if math.abs(ordered(got[i]) - ordered(want[i])) > 1 then
            error(("%s %s element %d: got %s, want %s"):format(dt, op, i + 1, hex(got[i]), hex(want[i])))
          end
        end
      end
    end)

    H.it(dt .. " broadcasting and strided views follow the float32 rules", function()
      local x = from_bits("ops_" .. dt .. "_x.u16", dt, shape)
      local row = x:narrow(1, 1, 1)                      -- 1 x 96, broadcast over the rows
      local xs = x:narrow(2, 3, 50)                      -- 64 x 50 strided view
      assert.is_false(xs:is_contiguous())
      assert.are.same(values(xs:contiguous() * 2), values(xs + xs))
      assert.are.same(values(xs:contiguous():abs()), values(xs:abs()))
      local b = values(x - row)
      local xv, rv = values(x), values(row)
      for i = 1, #xv do
        local e = xv[i] - rv[(i - 1) % 96 + 1]
        local back = values(H.tensor({ e }):to(dt))[1]
        assert(b[i] == back, ("element %d: %s vs %s"):format(i, b[i], back))
      end
    end)

    H.it(dt .. " reductions accumulate in float32 or better (NumPy float64 reference)", function()
      local x = from_bits("ops_" .. dt .. "_x.u16", dt, shape)
      -- along a dim: the result in x's dtype, i.e. the exact sum rounded once (half an ulp, plus the sum's own error)
      local rel = dt == "float16" and 2 ^ -10 or 2 ^ -7
      local s1 = x:sum(2)
      assert.are.equal(dt, s1:dtype())
      H.assert_close(values(s1), f64_list("ops_" .. dt .. "_sum1.f64"), rel, 1e-3)
      H.assert_close(values(x:mean(1)), f64_list("ops_" .. dt .. "_mean0.f64"), rel, 1e-4)
      assert.are.same(f64_list("ops_" .. dt .. "_max1.f64"), values(x:max(2)))
      -- to one number: float32 precision
      local total = 0
      for _, v in ipairs(f64_list("ops_" .. dt .. "_sum1.f64")) do total = total + v end
      H.assert_close(x:sum(), total, 1e-6, 1e-4)
      local _, idx = x:max(2)
      assert.are.equal("int64", idx:dtype())
    end)

    H.it(dt .. " GEMM accumulates in float32 (float64 product of the same values)", function()
      local a, b = from_bits("mm_" .. dt .. "_a.u16", dt, { 48, 40 }), from_bits("mm_" .. dt .. "_b.u16", dt, { 40, 24 })
      local want = f64_list("mm_" .. dt .. "_c.f64")
      -- out in x's dtype: the float32 result rounded once; entries are O(6), so
      -- half an ulp of the format plus float32 accumulation
      local c = a:matmul(b)
      assert.are.equal(dt, c:dtype())
      H.assert_close(values(c), want, dt == "float16" and 2 ^ -10 or 2 ^ -7, 1e-2)
      -- float32 out: no final rounding to 16 bits
      local c32 = H.on(facet.zeros({ 48, 24 }))
      a:matmul(b, { out = c32 })
      H.assert_close(values(c32), want, 1e-5, 1e-4)
      -- transposed operands, beta accumulation
      local bt = b:t():contiguous():t()              -- same values, stored transposed
      local c2 = H.on(facet.ones({ 48, 24 }))
      a:matmul(bt, { out = c2, beta = 2 })
      local w2 = {}
      for i, v in ipairs(want) do w2[i] = v + 2 end
      H.assert_close(values(c2), w2, 1e-5, 1e-4)
      local at = a:t():contiguous()
      H.assert_close(values(at:matmul(b, { transpose_a = true })), want, dt == "float16" and 2 ^ -10 or 2 ^ -7, 1e-2)
    end)
  end

  H.it("ops without a 16-bit path say which op and which dtype", function()
    local h = H.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "float16" })
    local f = H.tensor({ { 1, 2 }, { 3, 4 } })
    H.assert_error(function() h:axpy_(1, h) end, "facet_tensor_axpy", "float32", "float16")
    H.assert_error(function() return h + f end, "facet_tensor_binary", "dtypes differ", "float16", "float32")
    H.assert_error(function() h:matmul(f) end, "facet_tensor_matmul", "float16")
    H.assert_error(function() h:data_ptr() end, "data_ptr", "float16", "t:float()")
    H.assert_error(function() h:l2_normalize() end, "facet_tensor_l2_normalize", "float32", "float16")
    -- the row norms (the heads' float32 path) refuse 16-bit tensors (the layers
    -- with native 16-bit kernels: spec/half_layers_spec.lua)
    local core = require "facet.core"
    local x = H.tensor({ { 1, 2 }, { 3, 4 } }):bfloat16()
    local out = H.on(facet.empty({ 2 }, { dtype = "bfloat16" }))
    H.assert_error(function() core.check(core.C.facet_tensor_row_norms(out.h, x.h)) end,
      "facet_tensor_row_norms", "bfloat16")
  end)
end)

describe("float16 and bfloat16 files and printing", function()
  local tmp = F.scratch()

  it("save_npy writes '<f2' that NumPy reads, and load_npy reads NumPy's float16", function()
    local h = facet.tensor({ { 1.5, -0.0001 }, { 65504, -2 } }, { dtype = "half" })
    local p = tmp("h.npy")
    facet.save_npy(h, p)
    local out, rc = F.sh(PY .. " -c \"import numpy as np; np.seterr(all='ignore'); a = np.load('" .. p .. "'); print(a.dtype, a.shape, "
      .. "[hex(v) for v in a.view(np.uint16).ravel()]); np.save('" .. tmp("n.npy") .. "', "
      .. "np.array([[0.1, 1e-7], [7e4, -3]], dtype=np.float16))\"")
    assert.are.equal(0, rc, out)
    local hp = bits_of(h)
    local want = ("float16 (2, 2) ['%s', '%s', '%s', '%s']"):format(hex(hp[0]):gsub("0x0*", "0x"),
      hex(hp[1]):gsub("0x0*", "0x"), hex(hp[2]):gsub("0x0*", "0x"), hex(hp[3]):gsub("0x0*", "0x"))
    assert.are.equal(want, out:gsub("%s+$", ""))
    local n = facet.load_npy(tmp("n.npy"))
    assert.are.equal("float16", n:dtype())
    local np_ = bits_of(n)
    -- NumPy's float16 bits of 0.1, 1e-7 (subnormal), 7e4 (inf), -3
    assert.are.same({ 0x2e66, 0x0002, 0x7c00, 0xc200 },
      { tonumber(np_[0]), tonumber(np_[1]), tonumber(np_[2]), tonumber(np_[3]) })
  end)

  it("save_npy refuses bfloat16 with advice (NumPy has no such dtype)", function()
    local b = facet.tensor({ 1 }, { dtype = "bfloat16" })
    H.assert_error(function() facet.save_npy(b, tmp("b.npy")) end, "bfloat16", "t:float()")
  end)

  it("prints the values and the dtype", function()
    local s = tostring(facet.tensor({ 1.5, 65519, 0.1 }, { dtype = "float16" }))    -- 65519 -> 65504
    assert.is_truthy(s:find("65504", 1, true), s)
    assert.is_truthy(s:find("[facet.Tensor float16 cpu 3]", 1, true), s)
    local b = tostring(facet.tensor({ 3.14159 }, { dtype = "bfloat16" }))
    assert.is_truthy(b:find("3.1406", 1, true), b)      -- 3.140625
    assert.is_truthy(b:find("bfloat16", 1, true), b)
  end)
end)
