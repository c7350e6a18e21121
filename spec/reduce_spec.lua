--- Reductions over everything or one dim, against sums computed in Lua; the
-- square sums of a list of tensors (facet_tensor_sumsq_list, an optimizer's
-- gradient norm) against Lua double sums and facet_tensor_reduce's bits.
local H = require "support.device"
local facet = H.facet
local ffi = require "ffi"
local core = require "facet.core"
local C = core.C

-- reference reduction of a 3-D nested table along dim d (1-based)
local function ref_reduce(m, shape, d, f, init)
  local out = {}
  local I, J, K = shape[1], shape[2], shape[3]
  local function at(i, j, k) return m[i][j][k] end
  if d == 1 then
    for j = 1, J do for k = 1, K do
      local acc = init
      for i = 1, I do acc = f(acc, at(i, j, k), i) end
      out[#out + 1] = acc
    end end
  elseif d == 2 then
    for i = 1, I do for k = 1, K do
      local acc = init
      for j = 1, J do acc = f(acc, at(i, j, k), j) end
      out[#out + 1] = acc
    end end
  else
    for i = 1, I do for j = 1, J do
      local acc = init
      for k = 1, K do acc = f(acc, at(i, j, k), k) end
      out[#out + 1] = acc
    end end
  end
  return out
end

local function data3(I, J, K, seed)
  local g, m = H.lcg(seed), {}
  for i = 1, I do
    m[i] = {}
    for j = 1, J do
      m[i][j] = {}
      for k = 1, K do m[i][j][k] = math.floor(g() * 1000) / 64 end   -- exact in float32
    end
  end
  return m
end

describe("reductions", function()
  H.it("sum, mean, max, min of everything", function()
    local a = H.tensor { { 1, -2, 3 }, { 4, 5, -6 } }
    assert.are.equal(5, a:sum())
    H.assert_close(a:mean(), 5 / 6, 1e-7)
    assert.are.equal(5, a:max())
    assert.are.equal(-6, a:min())
    assert.are.equal(5, a:argmax())      -- flattened, 1-based
    assert.are.equal(6, a:argmin())
    assert.are.equal(1 + 4 + 9 + 16 + 25 + 36, a:sumsq())
    H.assert_close(a:norm(), math.sqrt(91), 1e-6)
  end)

  H.it("along every dim of a 3-D tensor, with keepdim", function()
    local shape = { 4, 5, 7 }
    local m = data3(4, 5, 7, 11)
    local x = H.tensor(m)
    for d = 1, 3 do
      local s = x:sum(d)
      local expect_shape = {}
      for i = 1, 3 do if i ~= d then expect_shape[#expect_shape + 1] = shape[i] end end
      assert.are.same(expect_shape, s:shape())
      H.assert_close(H.values(s), ref_reduce(m, shape, d, function(a, v) return a + v end, 0), 1e-6)
      H.assert_close(H.values(x:mean(d)),
        ref_reduce(m, shape, d, function(a, v) return a + v / shape[d] end, 0), 1e-5)
      local vals, idx = x:max(d)
      H.assert_close(H.values(vals), ref_reduce(m, shape, d, function(a, v) return math.max(a, v) end, -math.huge), 0)
      assert.are.equal("int64", idx:dtype())
      local best = ref_reduce(m, shape, d, function(a, v, i)
        if type(a) ~= "table" then a = { -math.huge, 0 } end
        if v > a[1] then return { v, i } end
        return a
      end, nil)
      local bi = {}
      for i, b in ipairs(best) do bi[i] = b[2] end
      assert.are.same(bi, H.values(idx))
      local mins = x:min(d)
      H.assert_close(H.values(mins), ref_reduce(m, shape, d, function(a, v) return math.min(a, v) end, math.huge), 0)
      local k = x:sum(d, true)
      local ks = { 4, 5, 7 }
      ks[d] = 1
      assert.are.same(ks, k:shape())
    end
  end)

  H.it("ties go to the first index and NaN wins max", function()
    local a = H.tensor { { 3, 1, 3 }, { 0 / 0, 2, 5 } }
    local v, i = a:max(2)
    assert.are.same({ 1, 1 }, H.values(i))
    local vs = H.values(v)
    assert.are.equal(3, vs[1])
    assert.is_true(vs[2] ~= vs[2])
    assert.are.same({ 2, 2 }, H.values(H.tensor({ { 3, 1, 3 }, { 7, 2, 5 } }):argmin(2)))
  end)

  H.it("long rows split over threads keep double accuracy", function()
    local n = 1000001
    local x = facet.full({ n }, 0.1, { device = H.device })
    -- float32(0.1) * n in double
    H.assert_close(x:sum(), 0.100000001490116 * n, 1e-7)
    local r = facet.arange(n, { device = H.device })
    assert.are.equal(n, r:argmax())
    assert.are.equal(1, r:argmin())
    assert.are.equal(n - 1, r:max())
  end)

  H.it("on non-contiguous views", function()
    local a = facet.arange(12):reshape { 3, 4 }:to(H.device)
    local v = a:narrow(2, 2, 2)          -- {1,2},{5,6},{9,10}
    assert.are.equal(33, v:sum())
    assert.are.same({ 3, 11, 19 }, H.values(v:sum(2)))
    assert.are.same({ 15, 18 }, H.values(v:sum(1)))
  end)

  it("errors: bad dim, empty max, wrong dtype", function()
    local a = facet.ones({ 2, 3 })
    H.assert_error(function() a:sum(3) end, "dim 3 out of range")
    H.assert_error(function() facet.zeros({ 0 }):max() end, "empty")
    H.assert_error(function() facet.ones({ 2 }, { dtype = "int32" }):sum() end, "float32")
    assert.are.equal(0, facet.zeros({ 0 }):sum())
  end)
end)

describe("facet_tensor_sumsq_list", function()
  -- the handles of a list of tensors (nil entries stay NULL)
  local function handles(list, n)
    local a = ffi.new("facet_tensor *[?]", n)
    for i = 1, n do a[i - 1] = list[i] and list[i].h or nil end
    return a
  end
  local function sumsq_list(out, xs, coefs, params)
    local n = xs.n or #xs
    return C.facet_tensor_sumsq_list(out.h, handles(xs, n), coefs and handles(coefs, n) or nil,
      params and handles(params, n) or nil, n)
  end
  local function lua_sumsq(t)
    local s = 0
    for _, v in ipairs(H.values(t)) do s = s + v * v end
    return s
  end

  H.it("one square sum per tensor, each as facet_tensor_reduce gives it; a deferred per-row part", function()
    -- 129 x 300 passes FACET_PARALLEL_GRAIN (split over threads); 2 tensors without elements
    local shapes = { { 129, 300 }, { 64 }, { 0 }, { 37, 16 }, { 3, 5, 7 }, { 1 }, { 2, 0 }, { 100003 } }
    local xs = {}
    for i, sh in ipairs(shapes) do xs[i] = facet.randn(sh, { seed = 40 + i }):to(H.device) end
    local out = facet.full({ #xs }, -1, { device = H.device })
    core.check(sumsq_list(out, xs))
    local got = H.values(out)
    for i, x in ipairs(xs) do
      H.assert_close({ got[i] }, { lua_sumsq(x) }, 1e-6)
      -- the CPU adds in facet_tensor_reduce's order: the same bits
      if H.device == "cpu" then assert.are.equal(x:sumsq(), got[i]) end
    end
    assert.are.same({ 0, 0 }, { got[3], got[7] })
    -- entry 4 with a deferred part: the complete rows x_r + c_r w_r, written nowhere
    local w = facet.randn({ 37, 16 }, { seed = 9 }):to(H.device)
    local c = facet.randn({ 37 }, { seed = 10 }):to(H.device)
    local coefs, params = {}, {}
    coefs[4], params[4] = c, w
    local before = H.values(xs[4])
    core.check(sumsq_list(out, xs, coefs, params))
    local xv, wv, cv, want = H.values(xs[4]), H.values(w), H.values(c), 0
    for r = 1, 37 do
      for k = 1, 16 do
        local e = (r - 1) * 16 + k
        want = want + (xv[e] + cv[r] * wv[e]) ^ 2
      end
    end
    local again = H.values(out)
    H.assert_close({ again[4] }, { want }, 1e-6)
    for i = 1, #xs do if i ~= 4 then assert.are.equal(got[i], again[i]) end end
    assert.are.same(before, H.values(xs[4]))
    -- a 1-D param with a deferred part is one row
    local v, cw, one = facet.tensor { 1, 2 }:to(H.device), facet.tensor { 3, 4 }:to(H.device), H.tensor { 0.5 }
    local o1 = facet.zeros({ 1 }, { device = H.device })
    core.check(sumsq_list(o1, { v }, { one }, { cw }))
    H.assert_close(H.values(o1), { 2.5 ^ 2 + 4 ^ 2 }, 1e-7)
  end)

  it("refuses bad lists before writing anything", function()
    local a, b = facet.ones({ 2, 3 }), facet.ones({ 4 })
    local out = facet.full({ 2 }, -1)
    local function refused(msg, o, xs, coefs, params)
      H.assert_error(function() core.check(sumsq_list(o, xs, coefs, params)) end, "facet_tensor_sumsq_list", msg)
      assert.are.same({ -1, -1 }, H.values(out))
    end
    refused("n = 2 elements", facet.zeros({ 3 }), { a, b })
    refused("xs[1]", out, { a, facet.ones({ 4 }, { dtype = "float16" }) })
    refused("xs[1]", out, { a, facet.ones({ 4, 2 }):narrow(2, 1, 1) })
    refused("xs[1]", out, { a, nil, n = 2 })
    refused("row_coefs[0]", out, { a, b }, { facet.ones({ 3 }) }, { facet.ones({ 2, 3 }) })
    refused("params[0]", out, { a, b }, { facet.ones({ 2 }) }, { facet.ones({ 3, 2 }) })
    refused("shares memory with xs[1]", out, { a, out })
    H.assert_error(function() core.check(C.facet_tensor_sumsq_list(out.h, nil, nil, nil, 2)) end, "xs is NULL")
    H.assert_error(function() core.check(C.facet_tensor_sumsq_list(out.h, handles({ a, b }, 2), handles({}, 2), nil, 2)) end,
      "row_coefs without params")
    assert.are.equal(0, C.facet_tensor_sumsq_list(facet.zeros({ 0 }).h, nil, nil, nil, 0))
  end)
end)
