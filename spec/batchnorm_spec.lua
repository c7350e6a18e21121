--- Batch normalisation through the C API: hand-computed values (training and
-- evaluation, running statistics with the unbiased variance), affine on and
-- off, 2-D / 3-D / 4-D inputs against a Lua reference, backward against
-- central finite differences, accumulation into grad_weight / grad_bias, and
-- the argument checks.
local H = require "support.device"
local facet = H.facet
local core = require "facet.core"
local C, check = core.C, core.check

-- a tensor on the device under test from a flat Lua array and a shape
local function T(flat, shape) return H.on(facet.tensor(flat):reshape(shape)) end
local function zeros(shape) return facet.zeros(shape, { device = H.device }) end
local function full(shape, v) return facet.full(shape, v, { device = H.device }) end
local function h(t) return t and t.h or nil end

-- flat LCG values in [-scale, scale) plus an offset
local function rand(n, seed, scale, offset)
  local g, r = H.lcg(seed), {}
  for i = 1, n do r[i] = g() * (scale or 1) + (offset or 0) end
  return r
end

local numel = H.numel

-- layout [n, c, hw] of a shape
local function layout(shape)
  local hw = 1
  for d = 3, #shape do hw = hw * shape[d] end
  return shape[1], shape[2], hw
end

-- Lua reference (double): out, batch mean, biased var, unbiased var
local function ref_forward(x, shape, w, b, eps, stats)
  local n, c, hw = layout(shape)
  local out, mean, var, unb = {}, {}, {}, {}
  for ch = 1, c do
    local m, v
    if stats then
      m, v = stats.mean[ch], stats.var[ch]
    else
      local s, cnt = 0, n * hw
      for i = 0, n - 1 do for k = 1, hw do s = s + x[(i * c + ch - 1) * hw + k] end end
      m = s / cnt
      local ss = 0
      for i = 0, n - 1 do for k = 1, hw do ss = ss + (x[(i * c + ch - 1) * hw + k] - m) ^ 2 end end
      v = ss / cnt
      unb[ch] = ss / (cnt - 1)
    end
    mean[ch], var[ch] = m, v
    local is = 1 / math.sqrt(v + eps)
    for i = 0, n - 1 do
      for k = 1, hw do
        local j = (i * c + ch - 1) * hw + k
        out[j] = (x[j] - m) * is * (w and w[ch] or 1) + (b and b[ch] or 0)
      end
    end
  end
  return out, mean, var, unb
end

local function forward(a)
  check(C.facet_batchnorm_forward(h(a.out), h(a.save_mean), h(a.save_invstd), h(a.running_mean), h(a.running_var),
    h(a.x), h(a.weight), h(a.bias), a.training and 1 or 0, a.momentum or 0.1, a.eps or 1e-5), 2)
end

local function backward(a)
  check(C.facet_batchnorm_backward(h(a.grad_x), h(a.grad_weight), h(a.grad_bias), h(a.grad_out), h(a.x),
    h(a.weight), h(a.save_mean), h(a.save_invstd), a.training and 1 or 0), 2)
end

-- sum(out * R) of the C forward with the given flat inputs
local function loss(xv, shape, wv, bv, R, training, stats)
  local c = shape[2]
  local out = zeros(shape)
  local rm, rv
  if stats then rm, rv = T(stats.mean, { c }), T(stats.var, { c }) end
  forward { out = out, x = T(xv, shape), weight = wv and T(wv, { c }), bias = bv and T(bv, { c }),
            running_mean = rm, running_var = rv, training = training, eps = 1e-3 }
  local o, s = H.values(out), 0
  for i = 1, #o do s = s + o[i] * R[i] end
  return s
end

-- central differences of loss with respect to every entry of one input
local function numeric_grad(which, xv, shape, wv, bv, R, training, stats)
  local step = 1e-2
  local target = ({ x = xv, w = wv, b = bv })[which]
  local g = {}
  for i = 1, #target do
    local keep = target[i]
    target[i] = keep + step
    local lp = loss(xv, shape, wv, bv, R, training, stats)
    target[i] = keep - step
    local lm = loss(xv, shape, wv, bv, R, training, stats)
    target[i] = keep
    g[i] = (lp - lm) / (2 * step)
  end
  return g
end

-- analytic gradients from the C backward (after a forward that saves the statistics)
local function analytic(xv, shape, wv, bv, R, training, stats)
  local c = shape[2]
  local x, w = T(xv, shape), wv and T(wv, { c })
  local sm, si = zeros({ c }), zeros({ c })
  local rm, rv
  if stats then rm, rv = T(stats.mean, { c }), T(stats.var, { c }) end
  forward { out = zeros(shape), save_mean = sm, save_invstd = si, x = x, weight = w, bias = bv and T(bv, { c }),
            running_mean = rm, running_var = rv, training = training, eps = 1e-3 }
  local gx, gw, gb = full(shape, 7), zeros({ c }), zeros({ c })
  backward { grad_x = gx, grad_weight = gw, grad_bias = gb, grad_out = T(R, shape), x = x, weight = w,
             save_mean = sm, save_invstd = si, training = training }
  return H.values(gx), H.values(gw), H.values(gb)
end

describe("facet_batchnorm_forward", function()
  -- x is 4 x 2: channel 1 = {1, 2, 3, 4} (mean 2.5, var 1.25, unbiased 5/3),
  -- channel 2 = {2, 2, 2, 6} (mean 3, var 3, unbiased 4)
  local xv = { 1, 2, 2, 2, 3, 2, 4, 6 }
  local eps = 1e-5

  H.it("training by hand: output, saved statistics, running statistics with the unbiased variance", function()
    local out, sm, si = zeros({ 4, 2 }), zeros({ 2 }), zeros({ 2 })
    local rm, rv = T({ 0, 1 }, { 2 }), T({ 1, 2 }, { 2 })
    forward { out = out, save_mean = sm, save_invstd = si, running_mean = rm, running_var = rv,
              x = T(xv, { 4, 2 }), weight = T({ 2, -1 }, { 2 }), bias = T({ 0.5, 1 }, { 2 }),
              training = true, momentum = 0.1, eps = eps }
    local is1, is2 = 1 / math.sqrt(1.25 + eps), 1 / math.sqrt(3 + eps)
    local expect = {}
    for i = 0, 3 do
      expect[2 * i + 1] = (xv[2 * i + 1] - 2.5) * is1 * 2 + 0.5
      expect[2 * i + 2] = (xv[2 * i + 2] - 3) * is2 * -1 + 1
    end
    H.assert_close(H.values(out), expect, 1e-5, 1e-6)
    H.assert_close(H.values(sm), { 2.5, 3 }, 1e-6)
    H.assert_close(H.values(si), { is1, is2 }, 1e-6)
    H.assert_close(H.values(rm), { 0.9 * 0 + 0.1 * 2.5, 0.9 * 1 + 0.1 * 3 }, 1e-6)
    H.assert_close(H.values(rv), { 0.9 * 1 + 0.1 * 5 / 3, 0.9 * 2 + 0.1 * 4 }, 1e-6)
  end)

  H.it("evaluation by hand: running statistics normalise and are left alone", function()
    local out, sm, si = full({ 4, 2 }, 9), zeros({ 2 }), zeros({ 2 })
    local rm, rv = T({ 1, -2 }, { 2 }), T({ 4, 0.25 }, { 2 })
    forward { out = out, save_mean = sm, save_invstd = si, running_mean = rm, running_var = rv,
              x = T(xv, { 4, 2 }), weight = T({ 2, -1 }, { 2 }), bias = T({ 0.5, 1 }, { 2 }),
              training = false, momentum = 0.1, eps = eps }
    local is1, is2 = 1 / math.sqrt(4 + eps), 1 / math.sqrt(0.25 + eps)
    local expect = {}
    for i = 0, 3 do
      expect[2 * i + 1] = (xv[2 * i + 1] - 1) * is1 * 2 + 0.5
      expect[2 * i + 2] = (xv[2 * i + 2] + 2) * is2 * -1 + 1
    end
    H.assert_close(H.values(out), expect, 1e-5, 1e-6)
    -- eval saves what backward needs: the running mean and 1/sqrt(running_var + eps)
    H.assert_close(H.values(sm), { 1, -2 }, 1e-7)
    H.assert_close(H.values(si), { is1, is2 }, 1e-6)
    assert.are.same({ 1, -2 }, H.values(rm))
    assert.are.same({ 4, 0.25 }, H.values(rv))
  end)

  H.it("evaluation of one sample by hand, and of an empty batch that changes nothing", function()
    local rm, rv = T({ 1, -2 }, { 2 }), T({ 4, 0.25 }, { 2 })
    local w, b = T({ 2, -1 }, { 2 }), T({ 0.5, 1 }, { 2 })
    local is1, is2 = 1 / math.sqrt(4 + eps), 1 / math.sqrt(0.25 + eps)
    local out1 = full({ 1, 2 }, 9)
    forward { out = out1, running_mean = rm, running_var = rv, x = T({ 3, 0 }, { 1, 2 }), weight = w, bias = b,
              training = false, eps = eps }
    H.assert_close(H.values(out1), { (3 - 1) * is1 * 2 + 0.5, (0 + 2) * is2 * -1 + 1 }, 1e-5, 1e-6)
    for _, shape in ipairs { { 0, 2 }, { 0, 2, 3, 3 } } do
      local one = { 1, 2, shape[3], shape[4] }                  -- one sample's shape
      -- out and grad_x: empty views at the start of storage filled with 7, which must stay 7
      local out, out_untouched = H.empty_batch(one)
      local gx, gx_untouched = H.empty_batch(one)
      local x, go = zeros(shape), zeros(shape)
      local sm, si = full({ 2 }, 9), full({ 2 }, 9)
      forward { out = out, save_mean = sm, save_invstd = si, running_mean = rm, running_var = rv, x = x, weight = w,
                bias = b, training = false, momentum = 0.1, eps = eps }
      assert.are.same(shape, out:shape())
      out_untouched()
      assert.are.same({ 1, -2 }, H.values(rm))
      assert.are.same({ 4, 0.25 }, H.values(rv))
      -- saved as in any evaluation: the running mean and 1/sqrt(running_var + eps)
      H.assert_close(H.values(sm), { 1, -2 }, 1e-7)
      H.assert_close(H.values(si), { is1, is2 }, 1e-6)
      -- backward adds nothing to grad_weight and grad_bias (pre-filled) and writes no grad_x
      local gw, gb = T({ 0.25, -3 }, { 2 }), T({ 5, 6 }, { 2 })
      backward { grad_x = gx, grad_weight = gw, grad_bias = gb, grad_out = go, x = x, weight = w, save_mean = sm,
                 save_invstd = si, training = false }
      assert.are.same(shape, gx:shape())
      gx_untouched()
      assert.are.same({ 0.25, -3 }, H.values(gw))
      assert.are.same({ 5, 6 }, H.values(gb))
      -- training cannot take an empty batch, and refusing it leaves the running statistics alone
      H.assert_error(function()
        forward { out = out, running_mean = rm, running_var = rv, x = x, training = true, momentum = 0.5, eps = eps }
      end, "more than one value per channel")
      assert.are.same({ 1, -2 }, H.values(rm))
      assert.are.same({ 4, 0.25 }, H.values(rv))
    end
    -- through nn.BatchNorm2d in evaluation
    local bn = facet.nn.BatchNorm2d(2)
    bn.running_mean:copy(facet.tensor { 1, -2 })
    bn.running_var:copy(facet.tensor { 4, 0.25 })
    if H.device == "cuda" then bn = bn:cuda() end
    bn:evaluate()
    bn.grad_weight:copy(facet.tensor { 0.25, -3 })
    bn.grad_bias:copy(facet.tensor { 5, 6 })
    local x = zeros({ 0, 2, 4, 3 })
    assert.are.same({ 0, 2, 4, 3 }, bn:forward(x):shape())
    assert.are.same({ 0, 2, 4, 3 }, bn:backward(x, zeros({ 0, 2, 4, 3 })):shape())
    assert.are.same({ 1, -2 }, H.values(bn.running_mean))
    assert.are.same({ 4, 0.25 }, H.values(bn.running_var))
    assert.are.same({ 0.25, -3 }, H.values(bn.grad_weight))
    assert.are.same({ 5, 6 }, H.values(bn.grad_bias))
  end)

  H.it("affine off: each channel of the output has mean 0 and biased variance 1", function()
    local shape = { 3, 4, 2, 5 }
    local xv4 = rand(numel(shape), 5, 3, 10)
    local out = zeros(shape)
    forward { out = out, x = T(xv4, shape), training = true, eps = 1e-8 }
    local o = H.values(out)
    local n, c, hw = layout(shape)
    for ch = 1, c do
      local s, ss = 0, 0
      for i = 0, n - 1 do for k = 1, hw do s = s + o[(i * c + ch - 1) * hw + k] end end
      for i = 0, n - 1 do for k = 1, hw do ss = ss + o[(i * c + ch - 1) * hw + k] ^ 2 end end
      assert.is_true(math.abs(s / (n * hw)) < 1e-5)
      assert.is_true(math.abs(ss / (n * hw) - 1) < 1e-4)
    end
  end)

  for _, case in ipairs {
    { shape = { 6, 5 }, name = "2-D" },
    { shape = { 200, 37 }, name = "2-D with a channel count that is no multiple of the block" },
    { shape = { 4, 3, 7 }, name = "3-D" },
    { shape = { 3, 4, 2, 5 }, name = "4-D" },
    { shape = { 1024, 40 }, name = "2-D large enough for threads" },
    { shape = { 8, 16, 16, 16 }, name = "4-D large enough for threads" },
    -- 15,360 and 12,288 values a channel: a GPU splits each channel over 3 blocks
    { shape = { 16, 3, 24, 40 }, name = "4-D with channels split over blocks" },
    { shape = { 12288, 3 }, name = "2-D with channels split over blocks" },
  } do
    H.it("matches the reference, " .. case.name .. " " .. table.concat(case.shape, "x"), function()
      local shape = case.shape
      local c = shape[2]
      -- a large mean tests the shifted accumulation
      local xv4 = rand(numel(shape), 11, 2, 100)
      local wv, bv = rand(c, 12, 1, 1), rand(c, 13)
      local rm0, rv0 = rand(c, 14), rand(c, 15, 0.5, 1)
      for _, affine in ipairs { true, false } do
        local w, b = affine and wv or nil, affine and bv or nil
        -- training
        local out, sm, si = zeros(shape), zeros({ c }), zeros({ c })
        local rm, rv = T(rm0, { c }), T(rv0, { c })
        forward { out = out, save_mean = sm, save_invstd = si, running_mean = rm, running_var = rv,
                  x = T(xv4, shape), weight = w and T(w, { c }), bias = b and T(b, { c }),
                  training = true, momentum = 0.25, eps = 1e-3 }
        local ref, mean, var, unb = ref_forward(xv4, shape, w, b, 1e-3)
        H.assert_close(H.values(out), ref, 1e-4, 1e-4)
        H.assert_close(H.values(sm), mean, 1e-6)
        local is, erm, erv = {}, {}, {}
        for ch = 1, c do
          is[ch] = 1 / math.sqrt(var[ch] + 1e-3)
          erm[ch] = 0.75 * rm0[ch] + 0.25 * mean[ch]
          erv[ch] = 0.75 * rv0[ch] + 0.25 * unb[ch]
        end
        H.assert_close(H.values(si), is, 1e-5)
        H.assert_close(H.values(rm), erm, 1e-6)
        H.assert_close(H.values(rv), erv, 1e-5)
        -- evaluation with the updated running statistics
        local stats = { mean = H.values(rm), var = H.values(rv) }
        forward { out = out, running_mean = rm, running_var = rv, x = T(xv4, shape), weight = w and T(w, { c }),
                  bias = b and T(b, { c }), training = false, eps = 1e-3 }
        H.assert_close(H.values(out), (ref_forward(xv4, shape, w, b, 1e-3, stats)), 1e-5, 1e-4)
      end
    end)
  end

  H.it("training without running statistics and without saved ones", function()
    local shape = { 5, 3, 2, 2 }
    local xv4 = rand(numel(shape), 21)
    local out = zeros(shape)
    forward { out = out, x = T(xv4, shape), training = true, eps = 1e-3 }
    H.assert_close(H.values(out), (ref_forward(xv4, shape, nil, nil, 1e-3)), 1e-4, 1e-5)
  end)

  H.it("momentum 0 keeps and momentum 1 replaces the running statistics", function()
    local rm, rv = T({ 3, 4 }, { 2 }), T({ 5, 6 }, { 2 })
    forward { out = zeros({ 4, 2 }), running_mean = rm, running_var = rv, x = T(xv, { 4, 2 }), training = true,
              momentum = 0 }
    assert.are.same({ 3, 4 }, H.values(rm))
    assert.are.same({ 5, 6 }, H.values(rv))
    forward { out = zeros({ 4, 2 }), running_mean = rm, running_var = rv, x = T(xv, { 4, 2 }), training = true,
              momentum = 1 }
    H.assert_close(H.values(rm), { 2.5, 3 }, 1e-7)
    H.assert_close(H.values(rv), { 5 / 3, 4 }, 1e-6)
  end)
end)

describe("facet_batchnorm_backward", function()
  for _, case in ipairs {
    { shape = { 3, 2, 2, 2 }, training = true },
    { shape = { 5, 3 }, training = true },
    { shape = { 3, 2, 2, 2 }, training = false },
    { shape = { 4, 3 }, training = false },
  } do
    local mode = case.training and "training" or "evaluation"
    H.it(("matches central differences of sum(out * R), %s, %s"):format(mode, table.concat(case.shape, "x")),
      function()
        local shape = case.shape
        local c = shape[2]
        local xv = rand(numel(shape), 31, 1.5, 0.5)
        local wv, bv = rand(c, 32, 1, 0.5), rand(c, 33)
        local R = rand(numel(shape), 34)
        local stats = not case.training and { mean = rand(c, 35, 0.5), var = rand(c, 36, 0.5, 1.2) } or nil
        local gx, gw, gb = analytic(xv, shape, wv, bv, R, case.training, stats)
        H.assert_close(gx, numeric_grad("x", xv, shape, wv, bv, R, case.training, stats), 3e-4, 3e-4)
        H.assert_close(gw, numeric_grad("w", xv, shape, wv, bv, R, case.training, stats), 3e-4, 3e-4)
        H.assert_close(gb, numeric_grad("b", xv, shape, wv, bv, R, case.training, stats), 3e-4, 3e-4)
        -- affine off: grad_x is the same with weight 1
        local ones = {}
        for i = 1, c do ones[i] = 1 end
        local gx1 = analytic(xv, shape, nil, nil, R, case.training, stats)
        H.assert_close(gx1, (analytic(xv, shape, ones, nil, R, case.training, stats)), 1e-5, 1e-6)
        H.assert_close(gx1, numeric_grad("x", xv, shape, nil, nil, R, case.training, stats), 3e-4, 3e-4)
      end)
  end

  -- { 8, 16, 16, 16 }: threads; 18,612 and 9,000 values a channel: a GPU splits each
  -- channel over 4 and 2 blocks, whose runs start and end inside planes of 1551 values
  for _, shape in ipairs { { 8, 16, 16, 16 }, { 12, 2, 33, 47 }, { 9000, 2 } } do
    H.it("training gradients against the closed form on a larger case, " .. table.concat(shape, "x"), function()
      local n, c, hw = layout(shape)
      local xv, R, wv = rand(numel(shape), 41, 1, 3), rand(numel(shape), 42), rand(c, 43, 1, 0.2)
      local x, w, sm, si = T(xv, shape), T(wv, { c }), zeros({ c }), zeros({ c })
      forward { out = zeros(shape), save_mean = sm, save_invstd = si, x = x, weight = w, training = true, eps = 1e-5 }
      local gx, gw, gb = zeros(shape), zeros({ c }), zeros({ c })
      backward { grad_x = gx, grad_weight = gw, grad_bias = gb, grad_out = T(R, shape), x = x, weight = w,
                 save_mean = sm, save_invstd = si, training = true }
      local _, mean, var = ref_forward(xv, shape, nil, nil, 1e-5)
      local egx, egw, egb = {}, {}, {}
      for ch = 1, c do
        local is, M = 1 / math.sqrt(var[ch] + 1e-5), n * hw
        local sg, sgx = 0, 0
        for i = 0, n - 1 do
          for k = 1, hw do
            local j = (i * c + ch - 1) * hw + k
            sg = sg + R[j]
            sgx = sgx + R[j] * (xv[j] - mean[ch]) * is
          end
        end
        egw[ch], egb[ch] = sgx, sg
        for i = 0, n - 1 do
          for k = 1, hw do
            local j = (i * c + ch - 1) * hw + k
            local xhat = (xv[j] - mean[ch]) * is
            egx[j] = wv[ch] * is * (R[j] - sg / M - xhat * sgx / M)
          end
        end
      end
      H.assert_close(H.values(gx), egx, 1e-3, 1e-4)
      H.assert_close(H.values(gw), egw, 1e-4, 1e-3)
      H.assert_close(H.values(gb), egb, 1e-4, 1e-3)
    end)
  end

  H.it("accumulates into grad_weight and grad_bias, overwrites grad_x, skips NULL outputs", function()
    local shape = { 4, 3, 2, 2 }
    local c = shape[2]
    local xv, R, wv = rand(numel(shape), 51), rand(numel(shape), 52), rand(c, 53, 1, 1)
    local x, w, go, sm, si = T(xv, shape), T(wv, { c }), T(R, shape), zeros({ c }), zeros({ c })
    forward { out = zeros(shape), save_mean = sm, save_invstd = si, x = x, weight = w, training = true }
    local gx1, gw1, gb1 = zeros(shape), zeros({ c }), zeros({ c })
    backward { grad_x = gx1, grad_weight = gw1, grad_bias = gb1, grad_out = go, x = x, weight = w, save_mean = sm,
               save_invstd = si, training = true }
    local dw, db = H.values(gw1), H.values(gb1)
    local gx2, gw2, gb2 = full(shape, 123), T({ 1, 2, 3 }, { c }), T({ -1, 0, 5 }, { c })
    for _ = 1, 2 do
      backward { grad_x = gx2, grad_weight = gw2, grad_bias = gb2, grad_out = go, x = x, weight = w,
                 save_mean = sm, save_invstd = si, training = true }
    end
    assert.are.same(H.values(gx1), H.values(gx2))
    H.assert_close(H.values(gw2), { 1 + 2 * dw[1], 2 + 2 * dw[2], 3 + 2 * dw[3] }, 1e-6)
    H.assert_close(H.values(gb2), { -1 + 2 * db[1], 2 * db[2], 5 + 2 * db[3] }, 1e-6)
    -- one output at a time
    local gw3 = zeros({ c })
    backward { grad_weight = gw3, grad_out = go, x = x, weight = w, save_mean = sm, save_invstd = si,
               training = true }
    assert.are.same(dw, H.values(gw3))
    local gx4 = zeros(shape)
    backward { grad_x = gx4, grad_out = go, x = x, weight = w, save_mean = sm, save_invstd = si, training = true }
    assert.are.same(H.values(gx1), H.values(gx4))
    backward { grad_out = go, x = x, weight = w, save_mean = sm, save_invstd = si, training = true }
  end)
end)

describe("synchronised batch norm's entries", function()
  local function stats(mean, var, x) check(C.facet_batchnorm_stats(h(mean), h(var), h(x)), 2) end
  local function elemt(a)
    check(C.facet_batchnorm_backward_elemt(h(a.grad_x), h(a.grad_out), h(a.x), h(a.weight), h(a.save_mean),
      h(a.save_invstd), h(a.sum_dy), h(a.sum_dy_xhat), a.count), 2)
  end
  local function bits(t) return require("support.half_bits").of(t:to("cpu"):contiguous()) end

  H.it("facet_batchnorm_stats: the batch mean and biased variance, as the training forward computes them", function()
    for _, shape in ipairs { { 6, 5 }, { 200, 37 }, { 4, 3, 7 }, { 3, 4, 2, 5 }, { 8, 16, 16, 16 }, { 1, 3, 1, 1 } } do
      local c = shape[2]
      local xv = rand(numel(shape), 61, 2, 100)    -- a large mean: the shifted sums
      local x = T(xv, shape)
      local mean, var = full({ c }, 9), full({ c }, 9)
      stats(mean, var, x)
      local _, em, ev = ref_forward(xv, shape, nil, nil, 1e-5)
      H.assert_close(H.values(mean), em, 1e-6)
      H.assert_close(H.values(var), ev, 1e-5, 1e-6)
      -- the training forward's mean, bit for bit (the same sums; one value per channel: var 0)
      if numel(shape) > c then
        local sm = zeros({ c })
        forward { out = zeros(shape), save_mean = sm, x = x, training = true }
        assert.are.same(H.values(sm), H.values(mean))
      else
        assert.are.same({ 0, 0, 0 }, H.values(var))
      end
      -- 16 bits: the float32 call on the widened x, bit for bit
      for _, dtype in ipairs { "float16", "bfloat16" } do
        local x16 = x:to(dtype)
        local m16, v16, m32, v32 = zeros({ c }), zeros({ c }), zeros({ c }), zeros({ c })
        stats(m16, v16, x16)
        stats(m32, v32, x16:float())
        assert.are.same(H.values(m32), H.values(m16))
        assert.are.same(H.values(v32), H.values(v16))
      end
    end
  end)

  -- two "ranks" holding rows [1, k] and [k + 1, N] of one batch: each one's sums from
  -- facet_batchnorm_backward (evaluation, no grad_x) with the whole batch's statistics, added,
  -- then facet_batchnorm_backward_elemt on each part: the 1-process training grad_x, whose
  -- own spec is the finite differences above
  for _, case in ipairs {
    { shape = { 7, 3, 4, 5 }, k = 3 },
    { shape = { 9, 6 }, k = 4, affine = false },
    { shape = { 5, 2, 6 }, k = 5 },                      -- the second part is empty
    { shape = { 16, 4, 32, 33 }, k = 9 },                -- several blocks per channel on a GPU
  } do
    H.it("facet_batchnorm_backward_elemt over two parts gives the whole batch's training grad_x, "
        .. table.concat(case.shape, "x"), function()
      local shape, c, N = case.shape, case.shape[2], case.shape[1]
      local xv, R = rand(numel(shape), 71, 2, 3), rand(numel(shape), 72)
      local x, go = T(xv, shape), T(R, shape)
      local w = case.affine ~= false and T(rand(c, 73, 0.5, 1), { c }) or nil
      local sm, si = zeros({ c }), zeros({ c })
      forward { out = zeros(shape), save_mean = sm, save_invstd = si, x = x, weight = w, training = true }
      local gref = zeros(shape)
      backward { grad_x = gref, grad_out = go, x = x, weight = w, save_mean = sm, save_invstd = si, training = true }
      local _, n_, hw = layout(shape)
      local parts = { { 1, case.k }, { case.k + 1, N - case.k } }
      for _, dtype in ipairs { "float32", "float16", "bfloat16" } do
        local xd, gd = x:to(dtype), go:to(dtype)
        local sdy, sdx = zeros({ c }), zeros({ c })
        for _, p in ipairs(parts) do
          backward { grad_weight = sdx, grad_bias = sdy, grad_out = gd:narrow(1, p[1], p[2]),
                     x = xd:narrow(1, p[1], p[2]), weight = w, save_mean = sm, save_invstd = si, training = false }
        end
        local got, wide = {}, {}
        for _, p in ipairs(parts) do
          local xp, gp = xd:narrow(1, p[1], p[2]), gd:narrow(1, p[1], p[2])
          local gx = full(xp:shape(), 7):to(dtype)
          elemt { grad_x = gx, grad_out = gp, x = xp, weight = w, save_mean = sm, save_invstd = si, sum_dy = sdy,
                  sum_dy_xhat = sdx, count = N * hw }
          for _, v in ipairs(H.values(gx:float())) do got[#got + 1] = v end
          if dtype ~= "float32" then
            -- the float32 call on the widened operands, rounded once: bit for bit
            local g32 = zeros(xp:shape())
            elemt { grad_x = g32, grad_out = gp:float(), x = xp:float(), weight = w, save_mean = sm, save_invstd = si,
                    sum_dy = sdy, sum_dy_xhat = sdx, count = N * hw }
            assert.are.same(bits(g32:to(dtype)), bits(gx))
          end
        end
        if dtype == "float32" then
          -- sums rounded to float32 and kb written with sum(dy xhat): a few float32 roundings
          local ref, big = H.values(gref), 0
          for i = 1, #ref do big = math.max(big, math.abs(ref[i])) end
          H.assert_close(got, ref, 1e-5, 1e-6 * big)
        end
      end
    end)
  end

  it("refuse hostile arguments before writing anything, naming the function and the argument", function()
    local x = facet.randn({ 4, 3, 2 }, { seed = 3 })
    -- stats
    local mean, var = facet.full({ 3 }, 7), facet.full({ 3 }, 7)
    local function st(over)
      local a = { mean = mean, var = var, x = x }
      for k, v in pairs(over) do a[k] = v end
      if over.null then a[over.null] = nil end
      return function() stats(a.mean, a.var, a.x) end
    end
    H.assert_error(st { null = "x" }, "facet_batchnorm_stats", "x is NULL")
    H.assert_error(st { null = "mean" }, "facet_batchnorm_stats", "mean is NULL")
    H.assert_error(st { null = "var" }, "var is NULL")
    H.assert_error(st { x = facet.zeros({ 4, 3 }, { dtype = "int32" }) }, "x must be float32, float16 or bfloat16")
    H.assert_error(st { x = facet.zeros({ 12 }) }, "N x C", "[12 float32 cpu]")
    H.assert_error(st { var = facet.zeros({ 4 }) }, "var", "[4 float32 cpu]", "one value per channel (3)")
    H.assert_error(st { mean = facet.zeros({ 3 }, { dtype = "float16" }) }, "mean must be float32")
    H.assert_error(st { var = mean }, "mean [3 float32 cpu] overlaps var")
    H.assert_error(st { x = facet.zeros({ 0, 3 }) }, "at least one value per channel", "[0x3 float32 cpu]")
    H.assert_error(st { x = facet.zeros({ 2, 3, 0 }) }, "at least one value per channel")
    assert.are.same({ 7, 7, 7 }, H.values(mean))
    assert.are.same({ 7, 7, 7 }, H.values(var))
    -- backward_elemt
    local c = 3
    local gx = facet.full({ 4, 3, 2 }, 7)
    local ok_args = { grad_x = gx, grad_out = facet.ones({ 4, 3, 2 }), x = x, save_mean = facet.zeros({ c }),
                      save_invstd = facet.ones({ c }), sum_dy = facet.ones({ c }), sum_dy_xhat = facet.ones({ c }),
                      count = 8 }
    local function el(over)
      local a = {}
      for k, v in pairs(ok_args) do a[k] = v end
      for k, v in pairs(over) do a[k] = v end
      if over.null then a[over.null] = nil end
      return function() elemt(a) end
    end
    local fn = "facet_batchnorm_backward_elemt"
    for _, k in ipairs { "grad_x", "grad_out", "x", "save_mean", "save_invstd", "sum_dy", "sum_dy_xhat" } do
      H.assert_error(el { null = k }, fn, k .. " is NULL")
    end
    H.assert_error(el { grad_out = facet.ones({ 4, 3, 2 }, { dtype = "float16" }) }, fn,
      "grad_out must be float32 like x [4x3x2 float32 cpu], got [4x3x2 float16 cpu]")
    H.assert_error(el { x = x:to("bfloat16") }, "grad_out must be bfloat16 like x")
    H.assert_error(el { grad_x = facet.zeros({ 4, 3, 2 }, { dtype = "float16" }) }, "grad_x must be float32 like x")
    H.assert_error(el { grad_x = facet.zeros({ 4, 3, 3 }) }, "grad_x [4x3x3 float32 cpu] must be contiguous and shaped like x")
    H.assert_error(el { grad_out = facet.zeros({ 4, 6, 2 }):narrow(2, 1, 3) }, "grad_out", "contiguous")
    H.assert_error(el { weight = facet.ones({ 2 }) }, "weight [2 float32 cpu] must be 1-D with one value per channel (3)")
    H.assert_error(el { sum_dy = facet.ones({ 4 }) }, "sum_dy [4 float32 cpu]")
    H.assert_error(el { sum_dy_xhat = facet.ones({ c }, { dtype = "int32" }) }, "sum_dy_xhat must be float32")
    H.assert_error(el { save_invstd = facet.ones({ 1, c }) }, "save_invstd", "1-D")
    H.assert_error(el { count = 1 }, "count must be the values per channel over every process", "got 1")
    H.assert_error(el { count = 7 }, "at least the 8 of x [4x3x2 float32 cpu], got 7")
    H.assert_error(el { count = -5 }, "count must be", "got -5")
    -- grad_x partly over x: refused; the very same view: an in-place pass
    local base = facet.randn({ 5, 3, 2 }, { seed = 4 })
    H.assert_error(el { x = base:narrow(1, 1, 4), grad_x = base:narrow(1, 2, 4) },
      "grad_x [4x3x2 float32 cpu] overlaps x [4x3x2 float32 cpu] (only the very same view may be shared)")
    H.assert_error(el { grad_out = base:narrow(1, 2, 4), grad_x = base:narrow(1, 1, 4) }, "grad_x", "overlaps grad_out")
    for i, v in ipairs(H.values(gx)) do assert.are.equal(7, v, "grad_x[" .. i .. "] untouched") end
    local want = facet.zeros({ 4, 3, 2 })
    el { grad_x = want } ()
    local same = ok_args.grad_out:clone()
    el { grad_x = same, grad_out = same } ()
    assert.are.same(H.values(want), H.values(same))
  end)
end)

describe("batchnorm argument checks", function()
  local x = facet.randn({ 4, 3 }, { seed = 1 })
  local function fwd(over)
    local a = { out = facet.zeros({ 4, 3 }), x = x, training = true, momentum = 0.1, eps = 1e-5 }
    for k, v in pairs(over) do a[k] = v end
    if over.null then a[over.null] = nil end
    return function() forward(a) end
  end

  it("forward rejects bad tensors naming the function and the shapes", function()
    H.assert_error(fwd { x = facet.zeros({ 4, 3 }, { dtype = "int32" }) }, "facet_batchnorm_forward", "float32")
    H.assert_error(fwd { x = facet.zeros({ 12 }), out = facet.zeros({ 12 }) }, "facet_batchnorm_forward", "[12 float32 cpu]")
    H.assert_error(fwd { x = facet.zeros({ 2, 3, 1, 1, 2 }), out = facet.zeros({ 2, 3, 1, 1, 2 }) }, "N x C")
    H.assert_error(fwd { out = facet.zeros({ 4, 2 }) }, "out", "[4x2 float32 cpu]", "[4x3 float32 cpu]")
    H.assert_error(fwd { null = "out" }, "out is NULL")
    H.assert_error(fwd { null = "x" }, "x is NULL")
    H.assert_error(fwd { x = facet.zeros({ 4, 6 }):narrow(2, 1, 3) }, "contiguous")
    H.assert_error(fwd { weight = facet.ones({ 4 }) }, "weight", "[4 float32 cpu]", "3")
    H.assert_error(fwd { bias = facet.ones({ 1, 3 }) }, "bias", "1-D")
    H.assert_error(fwd { save_mean = facet.ones({ 2 }) }, "save_mean")
    H.assert_error(fwd { save_invstd = facet.ones({ 3 }, { dtype = "int64" }) }, "save_invstd", "float32")
    H.assert_error(fwd { running_mean = facet.zeros({ 3 }) }, "both or neither")
    H.assert_error(fwd { running_mean = facet.zeros({ 3 }), running_var = facet.zeros({ 5 }) }, "running_var")
    H.assert_error(fwd { training = false }, "evaluation needs running_mean")
  end)

  it("forward rejects bad settings and a single value per channel in training", function()
    H.assert_error(fwd { eps = 0 }, "eps")
    H.assert_error(fwd { eps = -1 }, "eps")
    H.assert_error(fwd { eps = 0 / 0 }, "eps")
    H.assert_error(fwd { momentum = -0.1 }, "momentum")
    H.assert_error(fwd { momentum = 1.5 }, "momentum")
    H.assert_error(fwd { x = facet.zeros({ 1, 3 }), out = facet.zeros({ 1, 3 }) }, "more than one value per channel",
      "[1x3 float32 cpu]")
    H.assert_error(fwd { x = facet.zeros({ 1, 3, 1, 1 }), out = facet.zeros({ 1, 3, 1, 1 }) }, "more than one value")
    H.assert_error(fwd { x = facet.zeros({ 0, 3 }), out = facet.zeros({ 0, 3 }) }, "more than one value")
    -- (evaluation of one sample or of an empty batch is fine: see facet_batchnorm_forward above)
  end)

  it("backward rejects bad tensors", function()
    local sm, si = facet.zeros({ 3 }), facet.ones({ 3 })
    local function bwd(over)
      local a = { grad_x = facet.zeros({ 4, 3 }), grad_out = facet.ones({ 4, 3 }), x = x, save_mean = sm,
                  save_invstd = si, training = true }
      for k, v in pairs(over) do a[k] = v end
      if over.null then a[over.null] = nil end
      return function() backward(a) end
    end
    bwd {} ()
    H.assert_error(bwd { null = "save_mean" }, "facet_batchnorm_backward", "save_mean is NULL")
    H.assert_error(bwd { null = "save_invstd" }, "save_invstd is NULL")
    H.assert_error(bwd { null = "grad_out" }, "grad_out is NULL")
    H.assert_error(bwd { grad_out = facet.ones({ 3, 4 }) }, "grad_out", "[3x4 float32 cpu]")
    H.assert_error(bwd { grad_x = facet.ones({ 4, 3, 1 }) }, "grad_x")
    H.assert_error(bwd { grad_weight = facet.zeros({ 2 }) }, "grad_weight", "[2 float32 cpu]")
    H.assert_error(bwd { grad_bias = facet.zeros({ 3 }, { dtype = "int32" }) }, "grad_bias", "float32")
    H.assert_error(bwd { weight = facet.zeros({ 4 }) }, "weight")
    H.assert_error(bwd { x = facet.zeros({ 1, 3 }), grad_out = facet.zeros({ 1, 3 }), grad_x = facet.zeros({ 1, 3 }) },
      "more than one value per channel")
  end)

  it("device mismatches are rejected", function()
    if not facet.cuda.available() then
      pending("needs a CUDA device")
      return
    end
    H.assert_error(fwd { out = facet.zeros({ 4, 3 }, { device = "cuda" }) }, "different devices")
    H.assert_error(fwd { weight = facet.ones({ 3 }, { device = "cuda" }) }, "different devices")
  end)
end)
