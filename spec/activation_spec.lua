--- Activations: the ReLU, Sigmoid, Tanh and PReLU modules
-- (facet_activation_forward/backward) by value and against finite-difference
-- Jacobians, PReLU's slope per channel on 2-D and 4-D inputs and shared (its
-- backward on odd plane sizes, planes of 1 and a batch of 1 against a
-- double-precision reference, and equal to its two Torch7 halves), and
-- Dropout's mask (facet_dropout_forward/backward): the fraction dropped, the
-- scaling of what is kept, gradients through the mask, reproducibility.
-- (The elementwise tensor ops x:relu(), x:sigmoid(), x:tanh() are in
-- elementwise_spec.lua.)
local H = require "support.device"
local J = require "support.jacobian"
local facet = H.facet
local nn = facet.nn

local on = H.module

describe("activations", function()
  H.it("ReLU, Sigmoid, Tanh values and Jacobians", function()
    local x = H.tensor { { -2, -0.5, 0.5, 3 } }
    assert.are.same({ 0, 0, 0.5, 3 }, H.values(on(nn.ReLU()):forward(x)))
    H.assert_close(H.values(on(nn.Sigmoid()):forward(x)), { 1 / (1 + math.exp(2)), 1 / (1 + math.exp(0.5)),
      1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(-3)) }, 1e-6)
    H.assert_close(H.values(on(nn.Tanh()):forward(x)), { math.tanh(-2), math.tanh(-0.5), math.tanh(0.5), math.tanh(3) }, 1e-6)
    -- inputs away from ReLU's kink
    local z = H.on(facet.randn({ 4, 6 }, { seed = 4 }))
    z:add_(z:sign():mul_(0.2))
    for _, m in ipairs { nn.ReLU(), nn.Sigmoid(), nn.Tanh() } do J.check(on(m), z) end
  end)

  H.it("PReLU per channel (2-D and 4-D) and shared, slope gradients included", function()
    local p = on(nn.PReLU(3))
    p.slope:copy(facet.tensor { 0.1, 0.2, 0.3 })
    H.assert_close(H.values(p:forward(H.tensor { { 1, -2, 3 }, { -10, 5, -4 } })), { 1, -0.4, 3, -1, 5, -1.2 }, 1e-6)
    -- 4-D: the channel is dim 2, so every pixel of channel c takes slope c
    local x4 = H.tensor { { { { -1, 2 } }, { { -1, -3 } }, { { 4, -10 } } } }     -- 1 x 3 x 1 x 2
    H.assert_close(H.values(p:forward(x4)), { -0.1, 2, -0.2, -0.6, 4, -3 }, 1e-6)
    -- shared: one slope for every element
    local s = on(nn.PReLU())
    s.slope:copy(facet.tensor { 0.5 })
    H.assert_close(H.values(s:forward(x4)), { -0.5, 2, -0.5, -1.5, 4, -5 }, 1e-6)
    -- the slope's gradient by hand: sum over the channel's negative inputs of x * grad_out
    p:zero_grad()
    p:forward(x4)
    p:backward(x4, H.tensor { { { { 1, 1 } }, { { 2, 3 } }, { { 5, 7 } } } })
    H.assert_close(H.values(p.grad_slope), { -1, -1 * 2 + -3 * 3, -10 * 7 }, 1e-6)
    local z = H.on(facet.randn({ 2, 3, 4, 5 }, { seed = 5 }))
    z:add_(z:sign():mul_(0.2))
    J.check(on(nn.PReLU(3)), z)
    J.check(on(nn.PReLU()), H.on(facet.randn({ 4, 3 }, { seed = 6 })):add_(0.05))
  end)

  -- odd plane sizes, planes of 1 (after a Linear), a batch of 1, a shared
  -- slope: the shapes that change the CUDA kernels' launch (activation.cu)
  H.it("PReLU's backward on odd shapes: both gradients from one call, the slope's added to what is there", function()
    local cases = {
      { shape = { 3, 5, 7, 7 }, channels = 5 },
      { shape = { 2, 17, 13, 11 }, channels = 17 },
      { shape = { 4, 3, 5, 3 }, channels = 3 },
      { shape = { 37, 13 }, channels = 13 },
      { shape = { 1, 13 }, channels = 13 },
      { shape = { 1, 3, 67, 61 }, channels = 3 },
      { shape = { 2, 3, 50, 50 } },
      { shape = { 7, 4, 5 }, channels = 4 },
    }
    for i, c in ipairs(cases) do
      local what = table.concat(c.shape, "x")
      local ns = c.channels or 1
      local slope = facet.rand({ ns }, { seed = 100 + i, low = 0.05, high = 0.5 })
      local init = facet.tensor(H.range(ns, function(k) return 0.5 + k end))
      local x = H.on(facet.randn(c.shape, { seed = 200 + i }))
      local g = H.on(facet.randn(c.shape, { seed = 300 + i }))
      local m = on(nn.PReLU(c.channels))
      m.slope:copy(slope)
      m.grad_slope:copy(init)
      local out = H.values(m:forward(x))
      local gx = H.values(m:backward(x, g))
      -- the reference in doubles: channel = dim 2, planes of `inner` elements
      local xs, gs, sv = H.values(x), H.values(g), H.values(slope)
      local inner = 1
      for d = 3, #c.shape do inner = inner * c.shape[d] end
      local channels = #c.shape >= 2 and c.shape[2] or 1
      local sum, mag = {}, {}
      for k = 1, ns do sum[k], mag[k] = 0.5 + (k - 1), 0.5 + (k - 1) end
      for j = 1, #xs do
        local ch = math.floor((j - 1) / inner) % channels + 1
        local s, xv, gv = sv[ns == 1 and 1 or ch], xs[j], gs[j]
        local k = ns == 1 and 1 or ch
        H.assert_close(out[j], xv > 0 and xv or s * xv, 1e-6, 1e-7)
        H.assert_close(gx[j], xv > 0 and gv or s * gv, 1e-6, 1e-7)
        if xv <= 0 then
          sum[k], mag[k] = sum[k] + gv * xv, mag[k] + math.abs(gv * xv)
        end
      end
      local got = H.values(m.grad_slope)
      assert.are.equal(ns, #got, what)
      for k = 1, ns do
        -- float sums: to a few roundings of the sum of the terms' magnitudes
        assert.is_true(math.abs(got[k] - sum[k]) <= 2e-5 * mag[k],
          ("%s slope %d: got %.9g, want %.9g"):format(what, k, got[k], sum[k]))
      end
      -- the Torch7 halves, update_grad_input then acc_grad_parameters, give the same bits
      local m2 = on(nn.PReLU(c.channels))
      m2.slope:copy(slope)
      m2.grad_slope:copy(init)
      m2:forward(x)
      assert.are.same(gx, H.values(m2:update_grad_input(x, g)), what)
      m2:acc_grad_parameters(x, g)
      assert.are.same(got, H.values(m2.grad_slope), what)
      -- a second backward adds again
      m:backward(x, g)
      local twice = H.values(m.grad_slope)
      for k = 1, ns do
        H.assert_close(twice[k], got[k] + (got[k] - (0.5 + (k - 1))), 1e-5, 1e-5 * mag[k])
      end
    end
  end)
end)

describe("Dropout", function()
  -- each Dropout draws from its own stream (d.rng): nothing global to restore

  H.it("drops about p, scales the rest, and routes gradients through the mask", function()
    local d = on(nn.Dropout(0.25))
    local x = H.on(facet.ones({ 100000 }))
    local y = H.values(d:forward(x))
    local zeros, ok = 0, true
    for _, v in ipairs(y) do
      if v == 0 then zeros = zeros + 1 elseif math.abs(v - 1 / 0.75) > 1e-6 then ok = false end
    end
    assert.is_true(ok)
    H.assert_close(zeros / #y, 0.25, 0, 0.01)
    local g = H.values(d:backward(x, H.on(facet.ones({ 100000 }))))
    for i = 1, #y, 997 do assert.are.equal(y[i], g[i]) end
    d:evaluate()
    assert.are.equal(x, d:forward(x))
  end)

  H.it("keeps the mean, takes grad_out * mask / (1 - p), and draws masks from (seed, offset)", function()
    local p, n = 0.5, 20000
    local d = on(nn.Dropout(p))
    local xv = {}
    for i = 1, n do xv[i] = 1 + (i % 7) end
    local x = H.tensor(xv)
    local start = d.rng.offset
    local y = H.values(d:forward(x))
    local kept, sum_x, sum_y = 0, 0, 0
    for i = 1, n do
      if y[i] ~= 0 then
        kept = kept + 1
        H.assert_close(y[i], xv[i] / (1 - p), 1e-6)
      end
      sum_x, sum_y = sum_x + xv[i], sum_y + y[i]
    end
    -- a binomial(20000, 0.5) count: 5 standard deviations are about 350
    assert.is_true(math.abs(kept - n * (1 - p)) < 350, "kept " .. kept)
    H.assert_close(sum_y / n, sum_x / n, 0.03)            -- E[y] = x
    -- backward scales the incoming gradient by the same mask
    local gv = {}
    for i = 1, n do gv[i] = (i % 5) - 2 end
    local gx = H.values(d:backward(x, H.tensor(gv)))
    for i = 1, n do
      local want = y[i] ~= 0 and gv[i] / (1 - p) or 0
      assert.are.equal(want, gx[i], "element " .. i)
    end
    -- the offset advances by the elements drawn: the next mask is another one; the same offset gives the same
    assert.are.equal(start + n, d.rng.offset)
    local y2 = H.values(d:forward(x))
    assert.are_not.same(y, y2)
    d.rng.offset = start
    assert.are.same(y, H.values(d:forward(x)))
  end)
end)
