--- Optimizers against hand-computed updates, weight-decay exemptions, state
-- round trips, schedules at their boundaries and gradient clipping.
local H = require "support.device"
local facet = H.facet
local optim = facet.optim

local function param(values, grads)
  return { params = { H.tensor(values) }, grads = { H.tensor(grads) } }
end

describe("sgd", function()
  H.it("plain, momentum and weight decay steps by hand", function()
    local src = param({ 1, -2 }, { 0.5, 0.25 })
    local opt = optim.sgd(src, { lr = 0.1, momentum = 0.9, weight_decay = 0.1 })
    opt:step()
    -- g = (0.5 + 0.1, 0.25 - 0.2) = (0.6, 0.05); buf = g; w = (1 - 0.06, -2 - 0.005)
    H.assert_close(H.values(src.params[1]), { 0.94, -2.005 }, 1e-6)
    opt:step()
    -- g = (0.5 + 0.094, 0.25 - 0.2005) = (0.594, 0.0495); buf = 0.9 * buf + g
    local b1, b2 = 0.9 * 0.6 + 0.594, 0.9 * 0.05 + 0.0495
    H.assert_close(H.values(src.params[1]), { 0.94 - 0.1 * b1, -2.005 - 0.1 * b2 }, 1e-6)
  end)

  H.it("biases and norm parameters skip weight decay when asked", function()
    local m = facet.nn.Linear(2, 1)
    if H.device == "cuda" then m:cuda() end
    m.weight:copy(facet.tensor { { 1, 1 } }); m.bias:copy(facet.tensor { 1 })
    local opt = optim.sgd(m, { lr = 1, weight_decay = 0.5, decay_bias_norm = false })
    opt:step()                        -- gradients are zero: only decay moves weights
    assert.are.same({ 0.5, 0.5 }, H.values(m.weight))
    assert.are.same({ 1 }, H.values(m.bias))
  end)

  it("settings are checked", function()
    H.assert_error(function() optim.sgd(param({ 1 }, { 1 }), { lr = 0.1, momentun = 0.9 }) end, "unknown setting 'momentun'")
    H.assert_error(function() optim.sgd(param({ 1 }, { 1 }), {}) end, "lr must be")
    H.assert_error(function() optim.sgd(param({ 1 }, { 1 }), { lr = 0.1, nesterov = true }) end, "Nesterov")
    H.assert_error(function() optim.sgd(42, { lr = 1 }) end, "want a module")
  end)

  it("trains a head and a module together; state survives a round trip", function()
    local net = facet.nn.Linear(4, 3)
    local head = facet.heads.new("am", { classes = 5, dim = 3, s = 8 })
    local opt = optim.sgd({ net, head }, { lr = 0.5, momentum = 0.9 })
    local x, y = facet.randn({ 8, 4 }, { seed = 1 }), facet.tensor({ 0, 1, 2, 3, 4, 0, 1, 2 }, { dtype = "int32" })
    local first
    for i = 1, 30 do
      opt:zero_grad()
      local loss = head:forward(net:forward(x), y)
      first = first or loss
      net:backward(x, head:backward())
      opt:step()
    end
    assert.is_true(head:forward(net:forward(x), y) < 0.5 * first)
    local s = opt:state()
    local opt2 = optim.sgd({ net, head }, { lr = 0.5, momentum = 0.9 })
    opt2:load_state(s)
    assert.are.equal(30, opt2.step_count)
    assert.are.same(H.values(s.tensors["1.momentum_buffer"]), H.values(opt2.list[1].momentum_buffer))
  end)
end)

describe("adam and adamw", function()
  -- torch.optim.Adam written out for one parameter
  local function ref(w, grads, lr, b1, b2, eps, wd, decoupled)
    local m, v = {}, {}
    for i = 1, #w do m[i], v[i] = 0, 0 end
    for t, g in ipairs(grads) do
      for i = 1, #w do
        local gi = g[i]
        if decoupled then w[i] = w[i] * (1 - lr * wd) else gi = gi + wd * w[i] end
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * gi * gi
        local mh, vh = m[i] / (1 - b1 ^ t), v[i] / (1 - b2 ^ t)
        w[i] = w[i] - lr * mh / (math.sqrt(vh) + eps)
      end
    end
    return w
  end
  for _, case in ipairs { { "adam", false, 0 }, { "adam", false, 0.1 }, { "adamw", true, 0.05 } } do
    H.it(("%s, weight decay %g, over 3 steps"):format(case[1], case[3]), function()
      local src = param({ 0.5, -1, 2 }, { 0, 0, 0 })
      local opt = optim[case[1]](src, { lr = 0.01, weight_decay = case[3] })
      local gs = { { 0.1, -0.2, 0.3 }, { 0.05, 0.4, -0.1 }, { -0.3, 0.1, 0.2 } }
      for _, g in ipairs(gs) do
        src.grads[1]:copy(facet.tensor(g))
        opt:step()
      end
      H.assert_close(H.values(src.params[1]), ref({ 0.5, -1, 2 }, gs, 0.01, 0.9, 0.999, 1e-8, case[3], case[2]), 1e-5, 1e-7)
    end)
  end
end)

describe("schedules", function()
  it("multistep: the paper's 0.1 divided by 10 at epochs 4, 8, 10", function()
    local s = optim.schedule.multistep { lr = 0.1, milestones = { 4, 8, 10 } }
    H.assert_close(s(0), 0.1, 1e-12)
    H.assert_close(s(3.999), 0.1, 1e-12)
    H.assert_close(s(4), 0.01, 1e-12)
    H.assert_close(s(7.5), 0.01, 1e-12)
    H.assert_close(s(8), 0.001, 1e-12)
    H.assert_close(s(10), 0.0001, 1e-12)
    H.assert_close(s(11.9), 0.0001, 1e-12)
  end)
  it("cosine, poly and warm-up", function()
    local c = optim.schedule.cosine { lr = 1, epochs = 10, min_lr = 0.1 }
    H.assert_close(c(0), 1, 1e-12)
    H.assert_close(c(5), 0.55, 1e-12)
    H.assert_close(c(10), 0.1, 1e-12)
    H.assert_close(c(20), 0.1, 1e-12)
    local p = optim.schedule.poly { lr = 1, epochs = 4, power = 2 }
    H.assert_close(p(2), 0.25, 1e-12)
    H.assert_close(p(4), 0, 1e-12)
    local w = optim.schedule.warmup(optim.schedule.multistep { lr = 0.1, milestones = { 4 } }, { epochs = 1 })
    H.assert_close(w(0), 0, 1e-12)
    H.assert_close(w(0.5), 0.05, 1e-12)
    H.assert_close(w(1), 0.1, 1e-12)
    H.assert_close(w(4), 0.01, 1e-12)
    H.assert_error(function() c(-1) end, "progress")
    H.assert_error(function() optim.schedule.multistep { lr = 1, milestones = { 4, 2 } } end, "increase")
  end)
end)

describe("gradient clipping", function()
  H.it("scales the global norm down to max_norm and reports the norm before", function()
    local a, b = H.tensor { 3, 0 }, H.tensor { { 0, 4 } }
    local n = optim.clip_grad_norm({ a, b }, 1)
    H.assert_close(n, 5, 1e-6)
    H.assert_close(H.values(a), { 0.6, 0 }, 1e-5)
    H.assert_close(H.values(b), { 0, 0.8 }, 1e-5)
    H.assert_close(optim.clip_grad_norm({ a, b }, 10), 1, 1e-5)
    H.assert_close(H.values(a), { 0.6, 0 }, 1e-5)
  end)
end)
