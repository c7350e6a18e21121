--- The fused SGD update: PyTorch's semantics (momentum, dampening, Nesterov,
-- weight decay) against a Lua reference over several steps, the per-row
-- correction and norms, and a fused cosine head that matches the unfused one.
local H = require "support.device"
local facet = H.facet
local C = require("facet.core").C

-- torch.optim.SGD, written out
local function ref_sgd(w, grads, cfg)
  local buf
  for step, g in ipairs(grads) do
    local d = {}
    for i = 1, #w do d[i] = g[i] + (cfg.weight_decay or 0) * w[i] end
    if (cfg.momentum or 0) ~= 0 then
      if step == 1 then buf = { unpack(d) }
      else for i = 1, #w do buf[i] = cfg.momentum * buf[i] + (1 - (cfg.dampening or 0)) * d[i] end end
      for i = 1, #w do d[i] = cfg.nesterov and d[i] + cfg.momentum * buf[i] or buf[i] end
    end
    for i = 1, #w do w[i] = w[i] - cfg.lr * d[i] end
  end
  return w
end

local function step(p, g, buf, cfg, first, coef, norms)
  local flags = (cfg.nesterov and C.FACET_SGD_FLAG_NESTEROV or 0) + (first and C.FACET_SGD_FLAG_FIRST_STEP or 0)
  local rc = C.facet_sgd_step(p.h, g.h, buf and buf.h or nil, coef and coef.h or nil, norms and norms.h or nil,
    cfg.lr, cfg.momentum or 0, cfg.dampening or 0, cfg.weight_decay or 0, flags)
  require("facet.core").check(rc)
end

describe("facet_sgd_step", function()
  for _, cfg in ipairs {
    { lr = 0.1 },
    { lr = 0.05, weight_decay = 0.01 },
    { lr = 0.1, momentum = 0.9 },
    { lr = 0.1, momentum = 0.9, dampening = 0.5, weight_decay = 5e-4 },
    { lr = 0.02, momentum = 0.8, nesterov = true, weight_decay = 1e-3 },
  } do
    local name = {}
    for k, v in pairs(cfg) do name[#name + 1] = k .. "=" .. tostring(v) end
    table.sort(name)
    H.it("matches torch.optim.SGD over 3 steps {" .. table.concat(name, ", ") .. "}", function()
      local w0 = H.values(facet.randn({ 3, 4 }, { seed = 1 }))
      local grads = {}
      for s = 1, 3 do grads[s] = H.values(facet.randn({ 3, 4 }, { seed = 10 + s })) end
      local p = H.on(facet.tensor(w0):reshape { 3, 4 })
      local buf = (cfg.momentum or 0) ~= 0 and facet.zeros({ 3, 4 }, { device = H.device }) or nil
      for s = 1, 3 do
        local g = H.on(facet.tensor(grads[s]):reshape { 3, 4 })
        step(p, g, buf, cfg, s == 1)
      end
      H.assert_close(H.values(p), ref_sgd({ unpack(w0) }, grads, cfg), 1e-5, 1e-6)
    end)
  end

  H.it("per-row correction, zeroed gradient and norms of the result", function()
    local p = H.tensor { { 3, 4 }, { 1, 0 } }
    local g = H.tensor { { 1, 1 }, { 2, 2 } }
    local coef = H.tensor { 0.5, -1 }
    local norms = facet.empty({ 2 }, { device = H.device })
    require("facet.core").check(C.facet_sgd_step(p.h, g.h, nil, coef.h, norms.h, 0.1, 0, 0, 0,
      C.FACET_SGD_FLAG_ZERO_GRAD))
    -- row 1: g = (1, 1) + 0.5 * (3, 4) = (2.5, 3); row 2: g = (2, 2) - (1, 0) = (1, 2)
    H.assert_close(H.values(p), { 3 - 0.25, 4 - 0.3, 1 - 0.1, -0.2 }, 1e-6)
    assert.are.same({ 0, 0, 0, 0 }, H.values(g))
    H.assert_close(H.values(norms), { math.sqrt(2.75 ^ 2 + 3.7 ^ 2), math.sqrt(0.81 + 0.04) }, 1e-6)
  end)

  it("rejects bad settings", function()
    local p, g = facet.ones({ 2 }), facet.ones({ 2 })
    H.assert_error(function() step(p, g, nil, { lr = 0.1, momentum = 0.9 }, true) end, "needs a buffer")
    H.assert_error(function() step(p, g, nil, { lr = -1 }, true) end, "lr")
    H.assert_error(function() step(p, g, facet.ones({ 2 }), { lr = 0.1, momentum = 0.9, nesterov = true, dampening = 0.1 }, true) end,
      "Nesterov")
    H.assert_error(function() step(p, facet.ones({ 3 }), nil, { lr = 0.1 }, true) end, "one shape")
  end)
end)

describe("head sgd_step", function()
  H.it("a fused cosine head trains exactly like the unfused one", function()
    local K, D = 13, 8
    local a = facet.heads.new("mv-arc", { classes = K, dim = D, seed = 3 }):to(H.device)
    local b = facet.heads.new("mv-arc", { classes = K, dim = D, seed = 3, fused = true }):to(H.device)
    for it = 1, 4 do
      local x = H.on(facet.randn({ 6, D }, { seed = 100 + it }))
      local y = H.on(facet.tensor({ 0, 3, 5, 7, 11, 12 }, { dtype = "int32" }))
      local la, lb = a:forward(x, y), b:forward(x, y)
      H.assert_close(lb, la, 1e-5)
      a:backward(); b:backward()
      if it == 2 then
        -- finish_grad makes the fused gradient the exact one
        H.assert_close(H.values(b:finish_grad()), H.values(a.grad_weight), 1e-4, 1e-6)
      end
      local cfg = { lr = 0.5, momentum = 0.9, weight_decay = 5e-4 }
      a:sgd_step(cfg); b:sgd_step(cfg)
      H.assert_close(H.values(b.weight), H.values(a.weight), 1e-4, 1e-6)
      assert.are.equal(0, a.grad_weight:norm())
    end
  end)

  H.it("softmax head: weight and bias follow plain SGD", function()
    local head = facet.heads.new("softmax", { classes = 3, dim = 2, seed = 1 }):to(H.device)
    local w0, b0 = H.values(head.weight), H.values(head.bias)
    head:forward(H.tensor { { 1, 2 } }, H.tensor({ 1 }, { dtype = "int32" }))
    head:backward()
    local gw, gb = H.values(head.grad_weight), H.values(head.grad_bias)
    head:sgd_step { lr = 0.1 }
    for i = 1, #w0 do w0[i] = w0[i] - 0.1 * gw[i] end
    for i = 1, #b0 do b0[i] = b0[i] - 0.1 * gb[i] end
    H.assert_close(H.values(head.weight), w0, 1e-6)
    H.assert_close(H.values(head.bias), b0, 1e-6)
  end)
end)
