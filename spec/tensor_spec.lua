--- Tensors: construction, metadata, views, elements, copies, conversion, freeing.
local H = require "support.device"
local facet = H.facet

describe("tensor construction", function()
  H.it("builds float32 from nested tables", function()
    local a = H.tensor { { 1, 2 }, { 3, 4 } }
    assert.are.same({ 2, 2 }, a:shape())
    assert.are.equal("float32", a:dtype())
    assert.are.equal(H.device, a:device())
    assert.are.same({ 1, 2, 3, 4 }, H.values(a))
    assert.are.equal(2, a:size(2))
    assert.are.equal(3, a[2][1])
  end)

  H.it("honours dtype options", function()
    for _, dt in ipairs { "int32", "int64", "uint8" } do
      local y = H.tensor({ 3, 1, 4 }, { dtype = dt })
      assert.are.equal(dt, y:dtype())
      assert.are.same({ 3, 1, 4 }, H.values(y))
    end
  end)

  H.it("zeros, ones, full, empty", function()
    local z = facet.zeros({ 3, 4 }, { device = H.device })
    assert.are.same({ 3, 4 }, z:shape())
    assert.are.equal(0, z:sum())
    assert.are.equal(12, facet.ones({ 3, 4 }, { device = H.device }):sum())
    local f = facet.full({ 2, 2 }, 7, { dtype = "int32", device = H.device })
    assert.are.same({ 7, 7, 7, 7 }, H.values(f))
    local e = facet.empty({ 0, 5 }, { device = H.device })
    assert.are.equal(0, e:numel())
    assert.are.same({ 8 }, facet.zeros(8):shape())
  end)

  H.it("arange like NumPy", function()
    assert.are.same({ 0, 1, 2, 3, 4 }, H.values(facet.arange(5, { device = H.device })))
    assert.are.same({ 2, 4, 6 }, H.values(facet.arange(2, 8, 2, { device = H.device })))
    assert.are.same({ 1, 0.5, 0, -0.5 }, H.values(facet.arange(1, -1, -0.5, { device = H.device })))
    assert.are.same({ 0, 1, 2 }, H.values(facet.arange(3, { dtype = "int64", device = H.device })))
  end)

  H.it("scalars (0-dim)", function()
    local s = facet.tensor(2.5):to(H.device)
    assert.are.equal(0, s:dim())
    assert.are.equal(1, s:numel())
    assert.are.equal(2.5, s:item())
  end)

  it("rejects bad input with clear errors", function()
    H.assert_error(function() facet.tensor { { 1, 2 }, { 3 } } end, "ragged")
    H.assert_error(function() facet.tensor { "a" } end, "numbers")
    H.assert_error(function() facet.zeros({ 2, -1 }) end, "non-negative")
    H.assert_error(function() facet.zeros({ 1, 1, 1, 1, 1, 1, 1, 1, 1 }) end, "at most 8")
    H.assert_error(function() facet.zeros({ 2 }, { dtype = "float64" }) end, "unknown dtype", "float64")
    H.assert_error(function() facet.zeros({ 2 }, { device = "tpu" }) end, "unknown device")
    H.assert_error(function() facet.tensor({ 1.5 }, { dtype = "int32" }) end, "not an integer")
    if not facet.cuda.available() then
      H.assert_error(function() facet.zeros({ 2 }, { device = "cuda" }) end, "no CUDA device")
      H.assert_error(function() facet.ones({ 2 }):cuda() end, "no CUDA device")
    end
  end)
end)

describe("tensor views", function()
  H.it("narrow and select share storage", function()
    local a = facet.arange(12):reshape { 3, 4 }:to(H.device)
    local n = a:narrow(2, 2, 2)
    assert.are.same({ 3, 2 }, n:shape())
    assert.is_false(n:is_contiguous())
    assert.are.same({ 1, 2, 5, 6, 9, 10 }, H.values(n))
    n:fill_(-1)
    assert.are.same({ 0, -1, -1, 3, 4, -1, -1, 7, 8, -1, -1, 11 }, H.values(a))
    local r = a:select(1, 3)
    assert.are.same({ 8, -1, -1, 11 }, H.values(r))
    local c = a:select(2, 4)
    assert.are.same({ 3, 7, 11 }, H.values(c))
    assert.are.same({ 4, 1 }, a:stride())
  end)

  H.it("reshape with an inferred size, and of a non-contiguous view (copies)", function()
    local a = facet.arange(24):to(H.device)
    local b = a:reshape { 2, -1, 4 }
    assert.are.same({ 2, 3, 4 }, b:shape())
    assert.are.equal(13, b:get(2, 1, 2))
    b:set(100, 1, 1, 1)
    assert.are.equal(100, a[1])   -- a view
    local v = b:narrow(3, 1, 2):reshape(12)
    assert.are.same({ 100, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21 }, H.values(v))
    H.assert_error(function() a:reshape { 5, -1 } end, "cannot infer")
    H.assert_error(function() a:reshape { 5, 5 } end, "24 elements")
  end)

  H.it("element reads and writes with t[i][j]", function()
    local a = H.tensor { { 1, 2 }, { 3, 4 } }
    a[1][2] = 5
    assert.are.same({ 1, 5, 3, 4 }, H.values(a))
    a[2] = 9               -- a row filled
    assert.are.same({ 1, 5, 9, 9 }, H.values(a))
    assert.are.equal(9, a:get(-1, -1))
    H.assert_error(function() return a[3] end, "out of range")
    H.assert_error(function() return a[1][0] end, "out of range")
    H.assert_error(function() return a:get(1) end, "1 indices", "2-dim")
    H.assert_error(function() return a.nosuch end, "no method or field", "nosuch")
  end)

  H.it("transpose, permute and t() make contiguous copies", function()
    local a = facet.arange(6):reshape { 2, 3 }:to(H.device)
    local t = a:t()
    assert.are.same({ 3, 2 }, t:shape())
    assert.is_true(t:is_contiguous())
    assert.are.same({ 0, 3, 1, 4, 2, 5 }, H.values(t))
    local x = facet.arange(24):reshape { 2, 3, 4 }:to(H.device)
    local p = x:permute(3, 1, 2)
    assert.are.same({ 4, 2, 3 }, p:shape())
    -- p[k][i][j] == x[i][j][k]
    for i = 1, 2 do for j = 1, 3 do for k = 1, 4 do
      assert.are.equal(x:get(i, j, k), p:get(k, i, j))
    end end end
    H.assert_error(function() x:permute(1, 1, 2) end, "permutation")
    H.assert_error(function() x:permute(1, 2) end, "2 dims given")
  end)
end)

describe("copies and conversion", function()
  H.it("copy into an existing tensor and clone", function()
    local w = facet.zeros({ 10, 4 }, { device = H.device })
    w:copy(facet.ones({ 10, 4 }))
    assert.are.equal(40, w:sum())
    local c = w:clone()
    c:fill_(2)
    assert.are.equal(40, w:sum())
    H.assert_error(function() w:copy(facet.ones({ 3, 4 })) end, "sizes differ")
  end)

  H.it("converts dtypes (truncating toward zero; a value out of range is an error)", function()
    local f = H.tensor { -2.7, -0.5, 0.5, 2.7, 300, -300 }
    assert.are.same({ -2, 0, 0, 2, 300, -300 }, H.values(f:int()))
    assert.are.same({ 0, 0, 2, 255 }, H.values(H.tensor({ -0.9, 0.5, 2.7, 255.9 }):byte()))
    H.assert_error(function() f:byte() end, "value -2.7 (element 1 of src [6 float32", "out of range for uint8")
    assert.are.same({ -2, 0, 0, 2, 300, -300 }, H.values(f:long()))
    local back = f:long():float()
    assert.are.equal("float32", back:dtype())
    assert.are.same({ -2, 0, 0, 2, 300, -300 }, H.values(back))
  end)

  H.it("to() returns self when nothing changes", function()
    local a = H.tensor { 1, 2 }
    assert.are.equal(a, a:to(H.device))
    assert.are.equal(a, a:to("float32"))
  end)

  H.it("moves between devices with the same values", function()
    local a = facet.randn({ 33, 17 }, { seed = 3 })
    local d = a:to(H.device)
    local back = d:to("cpu")
    H.assert_close(H.values(back), H.values(a), 0)
    local strided = d:narrow(2, 3, 5):to("cpu")
    H.assert_close(H.values(strided), H.values(a:narrow(2, 3, 5)), 0)
  end)

  H.it("totable gives nested tables", function()
    assert.are.same({ { 1, 2 }, { 3, 4 } }, H.tensor({ { 1, 2 }, { 3, 4 } }):totable())
    assert.are.same({ { 0, 1 }, { 2, 3 }, { 4, 5 } }, facet.arange(6, { device = H.device }):reshape { 3, 2 }:totable())
  end)
end)

describe("facet_tensor_copy_list", function()
  local ffi = require "ffi"
  local core = require "facet.core"
  local C, check = core.C, core.check
  local function handles(list, n)
    local a = ffi.new("facet_tensor *[?]", n)
    for i = 1, n do a[i - 1] = list[i] and list[i].h or nil end
    return a
  end
  -- the values of t, or the 16-bit patterns of a half tensor
  local function bits(t)
    if t:dtype() ~= "float16" and t:dtype() ~= "bfloat16" then return H.values(t) end
    local c = t:to("cpu"):contiguous()
    local p, r = c:bits_ptr(), {}
    for i = 1, c:numel() do r[i] = p[i - 1] end
    return r
  end
  -- dtypes and shapes whose byte counts take every word size on a GPU (16, 4, 1)
  local DTYPES = { "float32", "float16", "int64", "uint8", "bfloat16", "int32" }
  local SHAPES = { { 3, 4 }, { 7 }, { 2, 3, 5 }, { 1 }, { 0 }, { 129, 300 }, { 13 } }
  local function source(i)
    local dt, sh = DTYPES[(i - 1) % #DTYPES + 1], SHAPES[(i - 1) % #SHAPES + 1]
    local x = facet.randn(sh, { seed = i })
    if dt == "uint8" then x = (x * 50):abs():to(dt)
    elseif dt:find "int" then x = (x * 50):to(dt) else x = x:to(dt) end
    return x:to(H.device)
  end

  H.it("copies 60 pairs of assorted dtypes and shapes as facet_tensor_copy does", function()
    local n = 60
    local src, dst, ref = {}, {}, {}
    for i = 1, n do
      src[i] = source(i)
      local like = { dtype = src[i]:dtype(), device = H.device }
      ref[i] = facet.zeros(src[i]:shape(), like)
      check(C.facet_tensor_copy(ref[i].h, src[i].h))
      if i % 5 == 0 then
        -- a contiguous view at an odd offset: its address fits no wide word
        local flat = facet.zeros({ src[i]:numel() + 3 }, like)
        dst[i] = flat:narrow(1, 2, src[i]:numel()):reshape(src[i]:shape())
      else
        dst[i] = facet.zeros(src[i]:shape(), like)
      end
    end
    check(C.facet_tensor_copy_list(handles(dst, n), handles(src, n), n))
    for i = 1, n do
      assert.are.equal(src[i]:dtype(), dst[i]:dtype())
      assert.are.same(bits(ref[i]), bits(dst[i]))
      assert.are.same(bits(src[i]), bits(dst[i]))
    end
    assert.are.equal(0, C.facet_tensor_copy_list(nil, nil, 0))
  end)

  H.it("checks every pair before it writes any", function()
    local src = { source(1), source(2), source(3) }
    local function fresh()
      local d = {}
      for i = 1, 3 do d[i] = facet.full(src[i]:shape(), 9, { dtype = src[i]:dtype(), device = H.device }) end
      return d
    end
    local function refused(msg, dst, from)
      H.assert_error(function() check(C.facet_tensor_copy_list(handles(dst, 3), handles(from or src, 3), 3)) end,
        "facet_tensor_copy_list", msg)
      for i = 1, 3 do
        if dst[i] then
          for _, v in ipairs(H.values(dst[i]:to("float32"))) do assert.are.equal(9, v) end
        end
      end
    end
    local d = fresh()
    refused("(pair 2)", { d[1], d[2], facet.full({ 5 }, 9, { device = H.device }) })   -- shape
    d = fresh()
    refused("one shape and dtype (pair 1)", { d[1], d[2]:to("float32"), d[3] })   -- dtype
    local wide = facet.full({ 3, 6 }, 9, { device = H.device })
    d = fresh()
    refused("contiguous", { wide:narrow(2, 1, 4), d[2], d[3] })   -- rows 6 apart
    d = fresh()
    -- a dst that another pair reads
    refused("overlaps src[1]", { d[1], d[2], d[3] }, { src[1], d[1]:reshape({ 12 }):narrow(1, 1, 7), src[3] })
    d = fresh()
    local twin = d[2]:reshape { 7 }
    refused("overlaps dst[1]", { d[1], d[2], twin }, { src[1], src[2], src[2]:reshape { 7 } })
    d = fresh()
    refused("dst[0] is NULL", { nil, d[2], d[3], n = 3 })
    H.assert_error(function() check(C.facet_tensor_copy_list(nil, nil, 1)) end, "must not be NULL")
  end)
end)

describe("freeing", function()
  it("free() releases at once and later use is an error", function()
    local a = facet.ones({ 4, 4 })
    local v = a:narrow(1, 1, 2)
    a:free()
    assert.is_true(a:is_freed())
    H.assert_error(function() a:sum() end, "freed")
    -- the view keeps the storage alive
    assert.are.equal(8, v:sum())
    a:free()   -- twice is harmless
  end)

  it("the GC frees tensors (no growth over many allocations)", function()
    collectgarbage()
    for _ = 1, 2000 do local _ = facet.zeros({ 256, 256 }) end   -- 500 MB if nothing were freed
    collectgarbage()
    assert.is_true(collectgarbage("count") < 1e5)
  end)
end)
