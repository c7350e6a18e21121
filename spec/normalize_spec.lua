--- Row L2 normalisation (facet_tensor_l2_normalize through Tensor:l2_normalize),
-- the row norms (facet_tensor_row_norms) and the backward of y = x / ||x||
-- (facet_tensor_l2_normalize_backward): values by hand, against Lua's double
-- arithmetic, and the backward against central finite differences of the
-- forward.
local H = require "support.device"
local facet = H.facet
local core = require "facet.core"
local C = core.C

local function row_norms(x)
  local out = facet.empty({ x:shape()[1] }, { device = H.device })
  core.check(C.facet_tensor_row_norms(out.h, x.h))
  return out
end

local function backward(dy, y, norms, eps)
  local dx = facet.empty(dy:shape(), { device = H.device })
  core.check(C.facet_tensor_l2_normalize_backward(dx.h, dy.h, y.h, norms.h, eps or 1e-12))
  return dx
end

-- a rows x cols matrix of LCG values, row r scaled by scales[r], as a flat list and a device tensor
local function matrix(rows, cols, seed, scales)
  local m = H.random_matrix(rows, cols, seed)
  for r = 1, rows do
    for c = 1, cols do m[r][c] = m[r][c] * (scales and scales[r] or 1) end
  end
  local t = H.tensor(m)
  return H.values(t), t      -- the values as float32 holds them
end

describe("l2_normalize", function()
  H.it("scales rows to unit norm and returns the norms", function()
    local x = H.tensor { { 3, 4 }, { 0, 0 }, { -1, 0 } }
    local y, norms = x:l2_normalize()
    H.assert_close(H.values(y), { 0.6, 0.8, 0, 0, -1, 0 }, 1e-6)
    H.assert_close(H.values(norms), { 5, 0, 1 }, 1e-6)
  end)

  H.it("random rows come out with norm 1", function()
    local x = facet.randn({ 64, 512 }, { seed = 9 }):to(H.device)
    local y = x:l2_normalize()
    H.assert_close(H.values(y:sumsq(2)), H.values(facet.ones({ 64 })), 1e-5)
  end)

  it("needs a 2-D float32 tensor", function()
    H.assert_error(function() facet.ones({ 4 }):l2_normalize() end, "2-D")
  end)
end)

describe("row_norms", function()
  H.it("by hand, and against Lua's double arithmetic on rows of very different scales", function()
    H.assert_close(H.values(row_norms(H.tensor { { 3, 4 }, { 0, 0 }, { -1, 0 }, { 1, 2 } })), { 5, 0, 1, math.sqrt(5) },
      1e-6)
    local rows, cols = 6, 37
    local v, x = matrix(rows, cols, 31, { 1, 1e-3, 1e3, 0.5, 20, 1 })
    local expect = {}
    for r = 1, rows do
      local ss = 0
      for c = 1, cols do ss = ss + v[(r - 1) * cols + c] ^ 2 end
      expect[r] = math.sqrt(ss)
    end
    H.assert_close(H.values(row_norms(x)), expect, 1e-5, 0)
    -- the norms l2_normalize returns are the same
    local _, norms = x:l2_normalize()
    H.assert_close(H.values(norms), expect, 1e-5, 0)
  end)

  it("needs a 2-D x and one output per row", function()
    H.assert_error(function() core.check(C.facet_tensor_row_norms(facet.empty({ 3 }).h, facet.ones({ 3 }).h)) end,
      "facet_tensor_row_norms")
    H.assert_error(function() core.check(C.facet_tensor_row_norms(facet.empty({ 2 }).h, facet.ones({ 3, 4 }).h)) end,
      "facet_tensor_row_norms", "out must be contiguous with 3 values")
  end)
end)

describe("l2_normalize_backward", function()
  H.it("by hand: dx = (dy - (dy . y) y) / ||x||, and dy / eps for a zero row", function()
    local x = H.tensor { { 3, 4 }, { 0, 0 } }
    local y, norms = x:l2_normalize()
    local dx = backward(H.tensor { { 1, 0 }, { 1, -2 } }, y, norms, 0.5)
    -- row 1: y = (0.6, 0.8), dy . y = 0.6, (1 - 0.36, -0.48) / 5; row 2: y = 0, (1, -2) / 0.5
    H.assert_close(H.values(dx), { 0.64 / 5, -0.48 / 5, 2, -4 }, 1e-6)
  end)

  H.it("matches central differences of sum(l2_normalize(x) * R)", function()
    local rows, cols = 4, 6
    local scales = { 1, 0.1, 10, 3 }
    local xv, x = matrix(rows, cols, 41, scales)
    local Rv, R = matrix(rows, cols, 43)
    local y, norms = x:l2_normalize()
    local dx = H.values(backward(R, y, norms))
    local function loss(v)
      local out = H.values(H.tensor(v):reshape { rows, cols }:l2_normalize())
      local s = 0
      for i = 1, #out do s = s + out[i] * Rv[i] end
      return s
    end
    local fd = {}
    for i = 1, rows * cols do
      local h = 1e-3 * scales[math.floor((i - 1) / cols) + 1]
      local up, down = { unpack(xv) }, { unpack(xv) }
      up[i], down[i] = xv[i] + h, xv[i] - h
      fd[i] = (loss(up) - loss(down)) / (2 * h)
    end
    -- gradients scale like 1 / ||x_r||: compare row by row, relative to the row's largest
    for r = 1, rows do
      local a, f, big = {}, {}, 0
      for c = 1, cols do
        a[c], f[c] = dx[(r - 1) * cols + c], fd[(r - 1) * cols + c]
        big = math.max(big, math.abs(f[c]))
      end
      H.assert_close(a, f, 1e-3, 2e-3 * big)
    end
  end)

  it("checks its tensors", function()
    local y, norms = facet.ones({ 3, 4 }):l2_normalize()
    local fn = "facet_tensor_l2_normalize_backward"
    local function call(dx, dy, yy, n)
      return function() core.check(C.facet_tensor_l2_normalize_backward(dx.h, dy.h, yy.h, n.h, 1e-12)) end
    end
    call(facet.empty({ 3, 4 }), facet.ones({ 3, 4 }), y, norms)()
    H.assert_error(call(facet.empty({ 3, 4 }), facet.ones({ 3, 5 }), y, norms), fn, "shapes differ")
    H.assert_error(call(facet.empty({ 3, 4 }), facet.ones({ 3, 4 }), y, facet.ones({ 2 })), fn, "norms",
      "3 values")
  end)
end)
