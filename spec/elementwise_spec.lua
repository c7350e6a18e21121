--- Elementwise ops: unary math, scalar and tensor arithmetic, broadcasting, views.
local H = require "support.device"
local facet = H.facet

local function map(t, f)
  local r = {}
  for i, v in ipairs(t) do r[i] = f(v) end
  return r
end

describe("unary ops", function()
  local xs = { 0.25, 0.5, 1, 2, 3.5, 7 }

  H.it("match Lua's math library", function()
    local x = H.tensor(xs)
    H.assert_close(H.values(x:exp()), map(xs, math.exp), 1e-6)
    H.assert_close(H.values(x:log()), map(xs, math.log), 1e-6)
    H.assert_close(H.values(x:sqrt()), map(xs, math.sqrt), 1e-6)
    H.assert_close(H.values(x:rsqrt()), map(xs, function(v) return 1 / math.sqrt(v) end), 1e-6)
    H.assert_close(H.values(x:tanh()), map(xs, function(v) return math.tanh(v) end), 1e-6)
    H.assert_close(H.values(x:sigmoid()), map(xs, function(v) return 1 / (1 + math.exp(-v)) end), 1e-6)
    H.assert_close(H.values(x:cos()), map(xs, math.cos), 1e-6)
    H.assert_close(H.values(x:sin()), map(xs, math.sin), 1e-6)
    H.assert_close(H.values(x:square()), map(xs, function(v) return v * v end), 1e-6)
  end)

  H.it("abs, neg, sign, relu, floor, acos (clamped), clamp", function()
    local ys = { -2.5, -1, -0.25, 0, 0.75, 3 }
    local y = H.tensor(ys)
    assert.are.same({ 2.5, 1, 0.25, 0, 0.75, 3 }, H.values(y:abs()))
    assert.are.same({ 2.5, 1, 0.25, 0, -0.75, -3 }, H.values(-y))
    assert.are.same({ -1, -1, -1, 0, 1, 1 }, H.values(y:sign()))
    assert.are.same({ 0, 0, 0, 0, 0.75, 3 }, H.values(y:relu()))
    assert.are.same({ -3, -1, -1, 0, 0, 3 }, H.values(y:floor()))
    assert.are.same({ -1, -1, -0.25, 0, 0.5, 0.5 }, H.values(y:clamp(-1, 0.5)))
    H.assert_close(H.values(y:acos()), { math.pi, math.pi, math.acos(-0.25), math.pi / 2, math.acos(0.75), 0 }, 1e-6)
  end)

  H.it("in-place variants write into the tensor", function()
    local x = H.tensor { 1, 4, 9 }
    local r = x:sqrt_()
    assert.are.equal(x, r)
    assert.are.same({ 1, 2, 3 }, H.values(x))
    x:clamp_(1.5)
    assert.are.same({ 1.5, 2, 3 }, H.values(x))
  end)

  H.it("work on integer dtypes through double, truncating", function()
    local i = H.tensor({ -7, 3, 10 }, { dtype = "int32" })
    assert.are.same({ 7, 3, 10 }, H.values(i:abs()))
    assert.are.same({ -14, 6, 20 }, H.values(i * 2))
    assert.are.same({ -3, 1, 5 }, H.values(i / 2))       -- -3.5 -> -3
    assert.are.equal("int32", (i + 1):dtype())
  end)

  H.it("NaN and infinity flow through", function()
    local x = H.tensor { -1, 0, 1 }
    local l = H.values(x:log())
    assert.is_true(l[1] ~= l[1])
    assert.are.equal(-math.huge, l[2])
    assert.are.equal(0, l[3])
  end)
end)

describe("binary ops", function()
  H.it("scalar arithmetic on both sides", function()
    local a = H.tensor { { 1, 2 }, { 3, 4 } }
    assert.are.same({ 2, 3, 4, 5 }, H.values(a + 1))
    assert.are.same({ 2, 3, 4, 5 }, H.values(1 + a))
    assert.are.same({ 0, -1, -2, -3 }, H.values(1 - a))
    assert.are.same({ 0, 1, 2, 3 }, H.values(a - 1))
    assert.are.same({ 3, 6, 9, 12 }, H.values(3 * a))
    assert.are.same({ 0.5, 1, 1.5, 2 }, H.values(a / 2))
    assert.are.same({ 12, 6, 4, 3 }, H.values(12 / a))
    assert.are.same({ 1, 4, 9, 16 }, H.values(a ^ 2))
    assert.are.same({ 2, 2, 3, 4 }, H.values(a:maximum(2)))
    assert.are.same({ 1, 2, 2, 2 }, H.values(a:minimum(2)))
  end)

  H.it("same-shape tensors", function()
    local a = H.tensor { { 1, 2 }, { 3, 4 } }
    local b = H.tensor { { 5, -6 }, { 0.5, 2 } }
    assert.are.same({ 6, -4, 3.5, 6 }, H.values(a + b))
    assert.are.same({ -4, 8, 2.5, 2 }, H.values(a - b))
    assert.are.same({ 5, -12, 1.5, 8 }, H.values(a * b))
    H.assert_close(H.values(a / b), { 0.2, -1 / 3, 6, 2 }, 1e-6)
    assert.are.same({ 5, 2, 3, 4 }, H.values(a:maximum(b)))
    assert.are.same({ 1, -6, 0.5, 2 }, H.values(a:minimum(b)))
    assert.are.same({ 0, 0, 0, 1 }, H.values(a:eq(H.tensor { { 0, 0, }, { 0, 4 } })))
    assert.are.same({ 1, 0, 0, 0 }, H.values(a:lt(b)))
    assert.are.same({ 0, 1, 1, 1 }, H.values(a:gt(b)))
  end)

  H.it("broadcast rows, columns and leading dims like NumPy", function()
    local a = H.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
    local row = H.tensor { 10, 20, 30 }
    local col = H.tensor { { 100 }, { 200 } }
    assert.are.same({ 11, 22, 33, 14, 25, 36 }, H.values(a + row))
    assert.are.same({ 101, 102, 103, 204, 205, 206 }, H.values(a + col))
    assert.are.same({ 110, 120, 130, 210, 220, 230 }, H.values(row + col))   -- 2x3 from 3 and 2x1
    assert.are.same({ 2, 3 }, (row + col):shape())
    local x = facet.arange(24):reshape { 2, 3, 4 }:to(H.device)
    local y = facet.arange(4):to(H.device)
    local z = x * y
    for i = 1, 2 do for j = 1, 3 do for k = 1, 4 do
      assert.are.equal(x:get(i, j, k) * (k - 1), z:get(i, j, k))
    end end end
    H.assert_error(function() return a + H.tensor { 1, 2 } end, "do not broadcast")
  end)

  H.it("in-place on a strided view touches only the view", function()
    local a = facet.zeros({ 3, 4 }, { device = H.device })
    local v = a:narrow(2, 2, 2)
    v:add_(H.tensor { 1, 2 })
    assert.are.same({ 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0 }, H.values(a))
    v:mul_(10)
    assert.are.same({ 0, 10, 20, 0, 0, 10, 20, 0, 0, 10, 20, 0 }, H.values(a))
  end)

  H.it("large tensors (threaded path) agree with a Lua loop", function()
    local n = 100003
    local x = facet.rand({ n }, { seed = 5 }):to(H.device)
    local y = facet.rand({ n }, { seed = 6 }):to(H.device)
    local xs, ys, zs = H.values(x), H.values(y), H.values(x * y + x)
    for i = 1, n, 997 do
      H.assert_close(zs[i], xs[i] * ys[i] + xs[i], 1e-6)
    end
    local ax = x:clone():axpy_(-2, y)
    local as = H.values(ax)
    for i = 1, n, 991 do H.assert_close(as[i], xs[i] - 2 * ys[i], 1e-6) end
  end)

  it("rejects mixed dtypes and devices with messages naming both", function()
    local a = facet.ones({ 2 })
    local b = facet.ones({ 2 }, { dtype = "int32" })
    H.assert_error(function() return a + b end, "facet_tensor_binary", "dtypes differ", "int32")
    H.assert_error(function() return a + "x" end, "expected a facet tensor")
  end)
end)
