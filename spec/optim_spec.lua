--- The optimizers: the fused C update facet_sgd_step against PyTorch's SGD
-- written out (momentum, dampening, Nesterov, weight decay, the per-row
-- correction and norms); facet.optim.sgd/adam/adamw against hand-computed
-- updates, weight-decay exemptions and state round trips; the parameter
-- interface (named_parameters entries, deferred gradients) on a source that is
-- not a head; schedules at their boundaries and gradient clipping. Fused heads
-- through the optimizer and facet.train: spec/optim_fused_spec.lua.
local H = require "support.device"
local facet = H.facet
local optim = facet.optim
local C = require("facet.core").C
local ffi = require "ffi"

-- a C array of the handles of list[1..n] (nil entries stay NULL)
local function handles(list, n)
  local a = ffi.new("facet_tensor *[?]", n)
  for i = 1, n do a[i - 1] = list[i] and list[i].h or nil end
  return a
end

local function param(values, grads)
  return { params = { H.tensor(values) }, grads = { H.tensor(grads) } }
end

-- torch.optim.SGD, written out; cfg.at[step] (optional) holds settings
-- changed before that step, kept from then on (the buffer starts as the
-- first gradient with momentum, as torch's momentum_buffer None does)
local function ref_sgd(w, grads, cfg)
  local buf
  local c = {}
  for k, v in pairs(cfg) do c[k] = v end
  for step, g in ipairs(grads) do
    for k, v in pairs(cfg.at and cfg.at[step] or {}) do c[k] = v end
    local d = {}
    for i = 1, #w do d[i] = g[i] + (c.weight_decay or 0) * w[i] end
    if (c.momentum or 0) ~= 0 then
      if not buf then buf = { unpack(d) }
      else for i = 1, #w do buf[i] = c.momentum * buf[i] + (1 - (c.dampening or 0)) * d[i] end end
      for i = 1, #w do d[i] = c.nesterov and d[i] + c.momentum * buf[i] or buf[i] end
    end
    for i = 1, #w do w[i] = w[i] - c.lr * d[i] end
  end
  return w
end

-- torch.optim.Adam / AdamW written out for one parameter (from step t0 + 1, zero moments)
local function ref_adam(w, grads, lr, b1, b2, eps, wd, decoupled, t0)
  local m, v = {}, {}
  for i = 1, #w do m[i], v[i] = 0, 0 end
  for s, g in ipairs(grads) do
    local t = (t0 or 0) + s
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

local function step(p, g, buf, cfg, first, coef, norms)
  local flags = (cfg.nesterov and C.FACET_SGD_FLAG_NESTEROV or 0) + (first and C.FACET_SGD_FLAG_FIRST_STEP or 0)
  local rc = C.facet_sgd_step(p.h, g.h, buf and buf.h or nil, coef and coef.h or nil, norms and norms.h or nil,
    cfg.lr, cfg.momentum or 0, cfg.dampening or 0, cfg.weight_decay or 0, flags)
  require("facet.core").check(rc)
end

local CONFIGS = {
  { lr = 0.1 },
  { lr = 0.05, weight_decay = 0.01 },
  { lr = 0.1, momentum = 0.9 },
  { lr = 0.1, momentum = 0.9, dampening = 0.5, weight_decay = 5e-4 },
  { lr = 0.02, momentum = 0.8, nesterov = true, weight_decay = 1e-3 },
}
local function config_name(cfg)
  local name = {}
  for k, v in pairs(cfg) do name[#name + 1] = k .. "=" .. tostring(v) end
  table.sort(name)
  return "{" .. table.concat(name, ", ") .. "}"
end

describe("facet_sgd_step", function()
  for _, cfg in ipairs(CONFIGS) do
    H.it("matches torch.optim.SGD over 3 steps " .. config_name(cfg), function()
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

-- 60 parameters of assorted shapes (two launches on a device), one large
local SHAPES = { { 3, 4 }, { 7 }, { 2, 3, 5 }, { 1 }, { 0 }, { 129, 300 } }

describe("facet_sgd_step_list", function()
  local check = require("facet.core").check
  for _, cfg in ipairs(CONFIGS) do
    H.it("the bits of facet_sgd_step per parameter, over 3 steps " .. config_name(cfg), function()
      local n, mom = 60, (cfg.momentum or 0) ~= 0
      local a, b, ga, gb, ba, bb, wd = {}, {}, {}, {}, {}, {}, ffi.new("double[?]", n)
      for i = 1, n do
        local sh = SHAPES[(i - 1) % #SHAPES + 1]
        a[i] = facet.randn(sh, { seed = i }):to(H.device)
        b[i] = a[i]:clone()
        ga[i], gb[i] = facet.zeros(sh, { device = H.device }), facet.zeros(sh, { device = H.device })
        if mom then ba[i], bb[i] = facet.zeros(sh, { device = H.device }), facet.zeros(sh, { device = H.device }) end
        wd[i - 1] = i % 3 == 0 and 0 or (cfg.weight_decay or 0) * i   -- per parameter, some exempt
      end
      for s = 1, 3 do
        local flags = (cfg.nesterov and C.FACET_SGD_FLAG_NESTEROV or 0) + (s == 1 and C.FACET_SGD_FLAG_FIRST_STEP or 0)
        -- the list zeroes its gradients in the pass on the last step
        if s == 3 then flags = flags + C.FACET_SGD_FLAG_ZERO_GRAD end
        for i = 1, n do
          local g = facet.randn(a[i]:shape(), { seed = 100 * s + i }):to(H.device)
          ga[i]:copy(g); gb[i]:copy(g)
          check(C.facet_sgd_step(b[i].h, gb[i].h, mom and bb[i].h or nil, nil, nil, cfg.lr, cfg.momentum or 0,
            cfg.dampening or 0, wd[i - 1], flags))
        end
        check(C.facet_sgd_step_list(handles(a, n), handles(ga, n), mom and handles(ba, n) or nil, wd, n, cfg.lr,
          cfg.momentum or 0, cfg.dampening or 0, flags))
      end
      for i = 1, n do
        assert.are.same(H.values(b[i]), H.values(a[i]))
        if mom then assert.are.same(H.values(bb[i]), H.values(ba[i])) end
        assert.are.same(H.values(facet.zeros(a[i]:shape())), H.values(ga[i]))
      end
      -- against torch.optim.SGD written out, for the first parameter
      local w0 = H.values(facet.randn({ 3, 4 }, { seed = 1 }))
      local grads = {}
      for s = 1, 3 do grads[s] = H.values(facet.randn({ 3, 4 }, { seed = 100 * s + 1 })) end
      H.assert_close(H.values(a[1]), ref_sgd(w0, grads, { lr = cfg.lr, momentum = cfg.momentum,
        dampening = cfg.dampening, nesterov = cfg.nesterov, weight_decay = wd[0] }), 1e-5, 1e-6)
    end)
  end

  it("checks every parameter before it writes any", function()
    local p = { facet.ones({ 2 }), facet.ones({ 3 }), facet.ones({ 4 }) }
    local g = { facet.ones({ 2 }), facet.ones({ 3 }), facet.ones({ 4 }) }
    local wd = ffi.new("double[3]")
    local function refused(msg, params, grads, bufs, momentum, decays)
      H.assert_error(function()
        check(C.facet_sgd_step_list(handles(params, 3), handles(grads, 3), bufs and handles(bufs, 3) or nil,
          decays or wd, 3, 0.1, momentum or 0, 0, 0))
      end, "facet_sgd_step_list", msg)
      for i = 1, 3 do assert.are.same(H.values(facet.ones({ i + 1 })), H.values(p[i])) end
    end
    refused("parameter 2", p, { g[1], g[2], facet.ones({ 5 }) })
    refused("parameter 1", p, { g[1], g[2]:to("float16"), g[3] })
    refused("parameter 2", p, g, { facet.zeros({ 2 }), facet.zeros({ 3 }), facet.zeros({ 3 }) }, 0.9)
    refused("momentum 0.9 needs bufs", p, g, nil, 0.9)
    local bad = ffi.new("double[3]", { 0, 0, -1 })
    refused("weight_decay", p, g, nil, 0, bad)
    refused("parameter 0", { nil, p[2], p[3], n = 3 }, g)
    H.assert_error(function() check(C.facet_sgd_step_list(nil, nil, nil, nil, 1, 0.1, 0, 0, 0)) end, "must not be NULL")
    assert.are.equal(0, C.facet_sgd_step_list(nil, nil, nil, nil, 0, 0.1, 0, 0, 0))
  end)
end)

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

  for _, cfg in ipairs(CONFIGS) do
    H.it("matches torch.optim.SGD over 3 steps " .. config_name(cfg), function()
      local w0 = H.values(facet.randn({ 3, 4 }, { seed = 1 }))
      local grads = {}
      for s = 1, 3 do grads[s] = H.values(facet.randn({ 3, 4 }, { seed = 10 + s })) end
      local src = { params = { H.on(facet.tensor(w0):reshape { 3, 4 }) }, grads = { facet.zeros({ 3, 4 }, { device = H.device }) } }
      local settings = {}
      for k, v in pairs(cfg) do settings[k] = v end
      local opt = optim.sgd(src, settings)
      for s = 1, 3 do
        src.grads[1]:copy(facet.tensor(grads[s]):reshape { 3, 4 })
        opt:step()
      end
      H.assert_close(H.values(src.params[1]), ref_sgd({ unpack(w0) }, grads, cfg), 1e-5, 1e-6)
    end)
  end

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
    -- CPU tensors: settings are checked before any device is touched
    local function p() return { params = { facet.tensor { 1 } }, grads = { facet.tensor { 1 } } } end
    H.assert_error(function() optim.sgd(p(), { lr = 0.1, momentun = 0.9 }) end, "unknown setting 'momentun'")
    H.assert_error(function() optim.sgd(p(), {}) end, "lr must be")
    H.assert_error(function() optim.sgd(p(), { lr = 0.1, nesterov = true }) end, "Nesterov")
    H.assert_error(function() optim.sgd(42, { lr = 1 }) end, "want a module")
  end)

  it("trains a head and a module together; state survives a round trip", function()
    facet.manual_seed(11)            -- the initial weights must not depend on the specs run before
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
  local ref = ref_adam
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

  local check = require("facet.core").check
  -- no amsgrad: facet's Adam has none
  local LIST_CONFIGS = {
    { lr = 1e-2 },
    { lr = 1e-2, weight_decay = 0.1, beta1 = 0.8, beta2 = 0.99 },
    { lr = 1e-3, weight_decay = 0.05, decoupled = true },
    { lr = 1e-2, weight_decay = 0.01, decoupled = true, eps = 1e-6, t0 = 999 },
  }
  for _, cfg in ipairs(LIST_CONFIGS) do
    H.it("facet_adam_step_list: the bits of facet_adam_step per parameter, over 3 steps " .. config_name(cfg), function()
      local n, b1, b2, eps = 60, cfg.beta1 or 0.9, cfg.beta2 or 0.999, cfg.eps or 1e-8
      local t = {}
      for _, k in ipairs { "a", "b", "ga", "gb", "ma", "mb", "va", "vb" } do t[k] = {} end
      local wd = ffi.new("double[?]", n)
      local function zeros(sh) return facet.zeros(sh, { device = H.device }) end
      for i = 1, n do
        local sh = SHAPES[(i - 1) % #SHAPES + 1]
        t.a[i] = facet.randn(sh, { seed = i }):to(H.device)
        t.b[i] = t.a[i]:clone()
        for _, k in ipairs { "ga", "gb", "ma", "mb", "va", "vb" } do t[k][i] = zeros(sh) end
        wd[i - 1] = i % 3 == 0 and 0 or (cfg.weight_decay or 0) * i   -- per parameter, some exempt
      end
      for s = 1, 3 do
        local flags = (cfg.decoupled and C.FACET_ADAM_FLAG_DECOUPLED or 0) +
          (s == 3 and C.FACET_ADAM_FLAG_ZERO_GRAD or 0)   -- the gradients zeroed in the pass on the last step
        local step = (cfg.t0 or 0) + s
        for i = 1, n do
          local g = facet.randn(t.a[i]:shape(), { seed = 100 * s + i }):to(H.device)
          t.ga[i]:copy(g); t.gb[i]:copy(g)
          check(C.facet_adam_step(t.b[i].h, t.gb[i].h, t.mb[i].h, t.vb[i].h, cfg.lr, b1, b2, eps, wd[i - 1], step,
            flags))
        end
        check(C.facet_adam_step_list(handles(t.a, n), handles(t.ga, n), handles(t.ma, n), handles(t.va, n), wd, n,
          cfg.lr, b1, b2, eps, step, flags))
      end
      for i = 1, n do
        assert.are.same(H.values(t.b[i]), H.values(t.a[i]))
        assert.are.same(H.values(t.mb[i]), H.values(t.ma[i]))
        assert.are.same(H.values(t.vb[i]), H.values(t.va[i]))
        assert.are.same(H.values(zeros(t.a[i]:shape())), H.values(t.ga[i]))
      end
      -- against torch.optim.Adam written out, for the first parameter
      local grads = {}
      for s = 1, 3 do grads[s] = H.values(facet.randn({ 3, 4 }, { seed = 100 * s + 1 })) end
      H.assert_close(H.values(t.a[1]), ref(H.values(facet.randn({ 3, 4 }, { seed = 1 })), grads, cfg.lr, b1, b2, eps,
        wd[0], cfg.decoupled, cfg.t0), 1e-5, 1e-7)
    end)
  end

  it("facet_adam_step_list checks every parameter before it writes any", function()
    local function ones(k) return facet.ones({ k + 1 }) end
    local function list(f) return { f(1), f(2), f(3) } end
    local p, g, m, v = list(ones), list(ones), list(ones), list(ones)
    local wd = ffi.new("double[3]")
    local function refused(msg, params, grads, ms, vs, decays, b1, step)
      H.assert_error(function()
        check(C.facet_adam_step_list(handles(params, 3), handles(grads, 3), handles(ms, 3), handles(vs, 3),
          decays or wd, 3, 0.1, b1 or 0.9, 0.999, 1e-8, step or 1, 0))
      end, "facet_adam_step_list", msg)
      for i = 1, 3 do
        for _, t in ipairs { p[i], g[i], m[i], v[i] } do assert.are.same(H.values(ones(i)), H.values(t)) end
      end
    end
    refused("parameter 2", p, { g[1], g[2], facet.ones({ 5 }) }, m, v)
    refused("parameter 1", p, { g[1], g[2]:to("float16"), g[3] }, m, v)
    refused("parameter 2", p, g, m, { v[1], v[2], facet.ones({ 3 }) })
    refused("parameter 0", p, g, { nil, m[2], m[3], n = 3 }, v)
    refused("parameter 1", p, g, m, { v[1], facet.ones({ 2, 1 }), v[3] })
    refused("weight_decay", p, g, m, v, ffi.new("double[3]", { 0, 0, -1 }))
    refused("betas", p, g, m, v, nil, 1)
    refused("step counts from 1", p, g, m, v, nil, nil, 0)
    H.assert_error(function() check(C.facet_adam_step_list(nil, nil, nil, nil, nil, 1, 0.1, 0.9, 0.999, 1e-8, 1, 0)) end,
      "must not be NULL")
    assert.are.equal(0, C.facet_adam_step_list(nil, nil, nil, nil, nil, 0, 0.1, 0.9, 0.999, 1e-8, 1, 0))
  end)
end)

describe("the parameter interface", function()
  -- a source that is not a head: one 2 x 2 parameter whose gradient defers a
  -- per-row part, with the hooks of facet.optim.optimizer's entries
  local function deferred_source()
    local src = { param = H.tensor { { 3, 4 }, { 1, 0 } }, grad = H.tensor { { 1, 1 }, { 2, 2 } },
      coef = H.tensor { 0.5, -1 }, norms = facet.zeros({ 2 }, { device = H.device }), calls = {} }
    function src:named_parameters()
      return { { name = "w", param = self.param, grad = self.grad, kind = "weight", row_coef = self.coef,
        row_norms = self.norms, on_update = function(written) self.calls[#self.calls + 1] = written end } }
    end
    return src
  end
  -- the complete gradient: row 1 (1, 1) + 0.5 (3, 4) = (2.5, 3); row 2 (2, 2) - (1, 0) = (1, 2)
  local complete = { 2.5, 3, 1, 2 }

  H.it("sgd takes the deferred part, writes the row norms and reports the update", function()
    local src = deferred_source()
    local opt = optim.sgd(src, { lr = 0.1, momentum = 0.9, weight_decay = 0.01 })
    local w = H.values(src.param)
    opt:step()
    local want = {}
    for i = 1, 4 do want[i] = w[i] - 0.1 * (complete[i] + 0.01 * w[i]) end
    H.assert_close(H.values(src.param), want, 1e-6)
    H.assert_close(H.values(src.norms), { math.sqrt(want[1] ^ 2 + want[2] ^ 2), math.sqrt(want[3] ^ 2 + want[4] ^ 2) }, 1e-6)
    assert.are.same({ 0, 0 }, H.values(src.coef))
    assert.are.same({ true }, src.calls)
    H.assert_close(H.values(opt.list[1].momentum_buffer), { complete[1] + 0.01 * w[1], complete[2] + 0.01 * w[2],
      complete[3] + 0.01 * w[3], complete[4] + 0.01 * w[4] }, 1e-6)
  end)

  H.it("adam completes the gradient first and reports the norms as stale", function()
    local src, plain = deferred_source(), param({ 3, 4, 1, 0 }, complete)
    local a, b = optim.adam(src, { lr = 0.01 }), optim.adam(plain, { lr = 0.01 })
    a:step(); b:step()
    H.assert_close(H.values(src.param), H.values(plain.params[1]), 1e-6)
    H.assert_close(H.values(src.grad), complete, 1e-6)
    assert.are.same({ 0, 0 }, H.values(src.coef))
    assert.are.same({ false }, src.calls)
  end)

  H.it("grad_norm and clip_grad_norm see the complete gradient; finish_grad and zero_grad", function()
    local src = deferred_source()
    local opt = optim.sgd(src, { lr = 1 })
    local n = 0
    for _, v in ipairs(complete) do n = n + v * v end
    n = math.sqrt(n)
    H.assert_close(opt:grad_norm(), n, 1e-6)
    -- the norm of grad + row_coef_r * param_r, summed on the device: nothing is completed or zeroed
    assert.are.same({ 1, 1, 2, 2 }, H.values(src.grad))
    assert.are.same({ 0.5, -1 }, H.values(src.coef))
    src = deferred_source()
    opt = optim.sgd(src, { lr = 1 })
    H.assert_close(opt:clip_grad_norm(1), n, 1e-6)
    H.assert_close(opt:grad_norm(), 1, 1e-5)
    opt = optim.sgd(deferred_source(), { lr = 1 })
    opt:finish_grad()
    H.assert_close(H.values(opt.list[1].grad), complete, 1e-6)
    opt.list[1].row_coef:fill_(1)
    opt:zero_grad()
    assert.are.same({ 0, 0, 0, 0 }, H.values(opt.list[1].grad))
    assert.are.same({ 0, 0 }, H.values(opt.list[1].row_coef))
  end)

  H.it("clip_grad_norm scales a deferred part without completing it", function()
    local src = deferred_source()
    local entry = src:named_parameters()[1]
    local n2 = 0
    for _, v in ipairs(complete) do n2 = n2 + v * v end
    entry.grad_sumsq = function() return n2 end          -- what a fused head provides
    src.named_parameters = function() return { entry } end
    local opt = optim.sgd(src, { lr = 1 })
    local n = opt:clip_grad_norm(1)
    H.assert_close(n, math.sqrt(n2), 1e-6)
    local s = 1 / (math.sqrt(n2) + 1e-6)
    H.assert_close(H.values(src.grad), { s, s, 2 * s, 2 * s }, 1e-6)
    H.assert_close(H.values(src.coef), { 0.5 * s, -s }, 1e-6)
  end)

  H.it("step_zero_grad is step() then zero_grad(), in one pass; step() leaves the gradients", function()
    local grads = { { 0.5, -1, 2, 0.25 }, { -0.75, 0.125, 1, -2 }, { 3, 1, -1, 0.5 } }
    local function run(make, zero_in_step)
      local src = deferred_source()
      local opt = make(src)
      for _, g in ipairs(grads) do
        src.grad:copy(H.tensor(g):reshape(2, 2))
        src.coef:copy(H.tensor { 0.5, -1 })
        if zero_in_step then
          opt:step_zero_grad()
        else
          opt:step()
          -- the update took the gradient and left it (deferred part applied) for the caller to read
          assert.are_not.same({ 0, 0, 0, 0 }, H.values(src.grad))
          opt:zero_grad()
        end
        assert.are.same({ 0, 0, 0, 0 }, H.values(src.grad))
        assert.are.same({ 0, 0 }, H.values(src.coef))
      end
      return src, opt
    end
    for _, make in ipairs {
      function(src) return optim.sgd(src, { lr = 0.1, momentum = 0.9, weight_decay = 0.01 }) end,
      function(src) return optim.sgd(src, { lr = 0.05, momentum = 0.9, nesterov = true }) end,
      function(src) return optim.adamw(src, { lr = 0.01 }) end,
    } do
      local a, oa = run(make, false)
      local b, ob = run(make, true)
      assert.are.same(H.values(a.param), H.values(b.param))       -- the same bits
      assert.are.same(H.values(a.norms), H.values(b.norms))
      assert.are.equal(oa.step_count, ob.step_count)
      local key = oa.state_keys[1]
      assert.are.same(H.values(oa.list[1][key]), H.values(ob.list[1][key]))
    end
    -- a derived class with a step of its own gets that step, then zero_grad
    local src = deferred_source()
    local opt = optim.sgd(src, { lr = 0.1 })
    local calls = 0
    opt.step = function(self) calls = calls + 1 end
    opt:step_zero_grad()
    assert.are.equal(1, calls)
    assert.are.same({ 0, 0, 0, 0 }, H.values(src.grad))
    assert.are.same({ 3, 4, 1, 0 }, H.values(src.param))
  end)

  it("modules and heads list { name, param, grad, kind } entries", function()
    local m = facet.nn.Sequential(facet.nn.Linear(2, 3), facet.nn.BatchNorm1d(3))
    local names = {}
    for _, e in ipairs(m:named_parameters()) do names[#names + 1] = e.name .. ":" .. e.kind end
    assert.are.same({ "1.weight:weight", "1.bias:bias", "2.weight:norm", "2.bias:norm" }, names)
    local h = facet.heads.new("l2-softmax", { classes = 4, dim = 2, learn_alpha = true })
    names = {}
    for _, e in ipairs(h:named_parameters("head.")) do names[#names + 1] = e.name .. ":" .. e.kind end
    assert.are.same({ "head.weight:weight", "head.bias:bias", "head.alpha:norm" }, names)
    H.assert_error(function() optim.sgd({ { named_parameters = function() return { { param = 1, grad = 2 } } end } },
      { lr = 1 }) end, "not a tensor")
  end)
end)

describe("the update plan kept between steps", function()
  -- the handle arrays and checks of a step are kept while the entries stay as
  -- they were (facet.optim.optimizer); every change below must reach the next step
  local function randn(shape, seed) return H.on(facet.randn(shape, { seed = seed })) end
  local function set(t, values) t:copy(H.tensor(values):reshape(t:shape())) end
  local function draws(shape, seed, n)
    local g = {}
    for s = 1, n do g[s] = H.values(facet.randn(shape, { seed = seed + s })) end
    return g
  end

  H.it("sgd: a parameter, gradient or buffer replaced between steps is the one the next step updates", function()
    local cfg = { lr = 0.1, momentum = 0.9, weight_decay = 0.01, nesterov = true }
    local a, b = randn({ 3, 4 }, 1), randn({ 5 }, 2)
    local a0, b0 = H.values(a), H.values(b)
    local src = { params = { a, b }, grads = { randn({ 3, 4 }, 3):zero_(), randn({ 5 }, 4):zero_() } }
    local settings = {}
    for k, v in pairs(cfg) do settings[k] = v end
    local opt = optim.sgd(src, settings)
    local ga, gb = draws({ 3, 4 }, 10, 6), draws({ 5 }, 20, 6)
    for s = 1, 2 do
      set(opt.list[1].grad, ga[s]); set(opt.list[2].grad, gb[s])
      opt:step()
    end
    local plan = opt._plan
    set(opt.list[1].grad, ga[3]); set(opt.list[2].grad, gb[3])
    opt:step_zero_grad()
    assert.are.equal(plan, opt._plan, "nothing changed: the plan is kept")
    assert.are.same({ 0, 0, 0, 0, 0 }, H.values(opt.list[2].grad))
    -- parameter 2 replaced, with a fresh gradient and no buffer: a new plan
    local b_new = randn({ 5 }, 5)
    local b_new0 = H.values(b_new)
    local b_then = H.values(b)
    opt.list[2].param, opt.list[2].grad, opt.list[2].momentum_buffer = b_new, randn({ 5 }, 6), nil
    for s = 4, 5 do
      set(opt.list[1].grad, ga[s]); set(opt.list[2].grad, gb[s])
      opt:step()
    end
    assert.are_not.equal(plan, opt._plan)
    assert.are.same(b_then, H.values(b), "the replaced tensor is left alone")
    H.assert_close(H.values(b_new), ref_sgd(b_new0, { gb[4], gb[5] }, cfg), 1e-5, 1e-6)
    -- parameter 1's gradient replaced (the old one holds other values), its
    -- buffer replaced by a copy and freed: the step reads the new ones
    local old_grad, old_buf = opt.list[1].grad, opt.list[1].momentum_buffer
    opt.list[1].grad = randn({ 3, 4 }, 7)
    set(opt.list[1].grad, ga[6])
    old_grad:fill_(100)
    opt.list[1].momentum_buffer = old_buf:clone()
    old_buf:free()
    opt:step()
    H.assert_close(H.values(a), ref_sgd(a0, ga, cfg), 1e-5, 1e-6)
    assert.is_false(opt.list[1].momentum_buffer:is_freed())
    -- b followed its own run since its replacement; the first b none after it
    H.assert_close(b_then, ref_sgd(b0, { gb[1], gb[2], gb[3] }, cfg), 1e-5, 1e-6)
  end)

  H.it("sgd: lr, weight decay and momentum changed, an entry added, decay_bias_norm set", function()
    local a, c = randn({ 2, 3 }, 1), randn({ 4 }, 2)
    local a0, c0 = H.values(a), H.values(c)
    local opt = optim.sgd({ params = { a }, grads = { randn({ 2, 3 }, 3) } }, { lr = 0.1 })
    local ga, gc = draws({ 2, 3 }, 10, 6), draws({ 4 }, 20, 6)
    local function step(s)
      set(opt.list[1].grad, ga[s])
      if opt.list[2] then set(opt.list[2].grad, gc[s]) end
      opt:step()
    end
    step(1); step(2)
    opt.lr, opt.weight_decay = 0.05, 0.01
    step(3)
    opt.momentum = 0.9                                    -- buffers made at this step
    step(4)
    assert.is_truthy(opt.list[1].momentum_buffer)
    -- a parameter group added (a bias), then exempted from decay
    opt.list[2] = { param = c, grad = randn({ 4 }, 4), kind = "bias" }
    step(5)
    opt.decay_bias_norm = false
    step(6)
    H.assert_close(H.values(a), ref_sgd(a0, ga, { lr = 0.1, at = { [3] = { lr = 0.05, weight_decay = 0.01 },
      [4] = { momentum = 0.9 } } }), 1e-5, 1e-6)
    H.assert_close(H.values(c), ref_sgd(c0, { gc[5], gc[6] }, { lr = 0.05, momentum = 0.9, weight_decay = 0.01,
      at = { [2] = { weight_decay = 0 } } }), 1e-5, 1e-6)
    -- decay_bias_norm back on: the bias decays at the next step
    local c6 = H.values(c)
    opt.decay_bias_norm, opt.momentum = true, 0
    opt.list[2].grad:zero_()
    step(6)
    local want = {}
    for i = 1, 4 do want[i] = c6[i] - 0.05 * (gc[6][i] + 0.01 * c6[i]) end
    H.assert_close(H.values(c), want, 1e-5, 1e-6)
  end)

  for _, case in ipairs { { "adam", false, 0.1 }, { "adamw", true, 0.05 } } do
    H.it(case[1] .. ": a parameter replaced and one added between steps", function()
      local name, decoupled, wd = case[1], case[2], case[3]
      local a, b, c = randn({ 3, 2 }, 1), randn({ 4 }, 2), randn({ 2, 2 }, 3)
      local a0, c0 = H.values(a), H.values(c)
      local opt = optim[name]({ params = { a, b }, grads = { randn({ 3, 2 }, 4), randn({ 4 }, 5) } },
        { lr = 0.01, weight_decay = wd })
      local ga, gb, gc = draws({ 3, 2 }, 10, 4), draws({ 4 }, 20, 4), draws({ 2, 2 }, 30, 4)
      for s = 1, 4 do
        if s == 3 then
          -- parameter 2 replaced by c (fresh moments, the step count goes on); a new entry b again
          local e = opt.list[2]
          e.param, e.grad, e.exp_avg, e.exp_avg_sq = c, randn({ 2, 2 }, 6), nil, nil
          opt.list[3] = { param = b, grad = randn({ 4 }, 7), kind = "weight" }
        end
        set(opt.list[1].grad, ga[s])
        set(opt.list[2].grad, s < 3 and gb[s] or gc[s])
        if opt.list[3] then set(opt.list[3].grad, gb[s]) end
        opt:step()
      end
      H.assert_close(H.values(a), ref_adam(a0, ga, 0.01, 0.9, 0.999, 1e-8, wd, decoupled), 1e-5, 1e-7)
      H.assert_close(H.values(c), ref_adam(c0, { gc[3], gc[4] }, 0.01, 0.9, 0.999, 1e-8, wd, decoupled, 2), 1e-5, 1e-7)
      -- b: two steps in its first entry (t = 1, 2), then fresh moments in the new one (t = 3, 4)
      local b_want = ref_adam(H.values(randn({ 4 }, 2)), { gb[1], gb[2] }, 0.01, 0.9, 0.999, 1e-8, wd, decoupled)
      H.assert_close(H.values(b), ref_adam(b_want, { gb[3], gb[4] }, 0.01, 0.9, 0.999, 1e-8, wd, decoupled, 2), 1e-5,
        1e-7)
    end)
  end

  H.it("a parameter made float16 is refused without a trace; its float32 replacement is updated", function()
    local a, b = randn({ 3 }, 1), randn({ 2, 2 }, 2)
    local a0, b0 = H.values(a), H.values(b)
    local opt = optim.sgd({ params = { a, b }, grads = { randn({ 3 }, 3), randn({ 2, 2 }, 4) } },
      { lr = 0.1, momentum = 0.9 })
    local ga, gb = draws({ 3 }, 10, 2), draws({ 2, 2 }, 20, 2)
    set(opt.list[1].grad, ga[1]); set(opt.list[2].grad, gb[1])
    opt:step()
    local a1, b1 = H.values(a), H.values(b)
    opt.list[2].param = b:to("float16")
    H.assert_error(function() opt:step() end, "sgd:step: parameter 2: param is float16, want float32")
    assert.are.same(a1, H.values(a))
    assert.are.equal(1, opt.step_count)
    local b32 = b:clone()
    opt.list[2].param = b32
    set(opt.list[1].grad, ga[2]); set(opt.list[2].grad, gb[2])
    opt:step()
    H.assert_close(H.values(a), ref_sgd(a0, ga, { lr = 0.1, momentum = 0.9 }), 1e-5, 1e-6)
    H.assert_close(H.values(b32), ref_sgd(b0, gb, { lr = 0.1, momentum = 0.9 }), 1e-5, 1e-6)
    assert.are.same(b1, H.values(b), "the tensor replaced is left alone")
  end)

  H.it("zero_grad, grad_norm and clipping follow a replaced gradient", function()
    local a = randn({ 2, 2 }, 1)
    local opt = optim.sgd({ params = { a }, grads = { H.tensor { { 3, 0 }, { 0, 4 } } } }, { lr = 1 })
    H.assert_close(opt:grad_norm(), 5, 1e-6)
    opt:zero_grad()
    assert.are.same({ 0, 0, 0, 0 }, H.values(opt.list[1].grad))
    local old = opt.list[1].grad
    opt.list[1].grad = H.tensor { { 6, 0 }, { 0, 8 } }
    old:fill_(1)
    H.assert_close(opt:grad_norm(), 10, 1e-6)
    H.assert_close(opt:clip_grad_norm(5), 10, 1e-6)
    H.assert_close(H.values(opt.list[1].grad), { 3, 0, 0, 4 }, 1e-5)
    opt:zero_grad()
    assert.are.same({ 0, 0, 0, 0 }, H.values(opt.list[1].grad))
    assert.are.same({ 1, 1, 1, 1 }, H.values(old), "the gradient replaced is left alone")
  end)

  H.gpu_it("a parameter on another device than the first goes to a call of its own", function()
    local a, b = facet.randn({ 3 }, { seed = 1 }), facet.randn({ 4 }, { seed = 2 }):cuda()
    local a0, b0 = H.values(a), H.values(b)
    local opt = optim.sgd({ params = { a, b }, grads = { facet.zeros({ 3 }), facet.zeros({ 4 }, { device = "cuda" }) } },
      { lr = 0.1, momentum = 0.9 })
    local ga, gb = draws({ 3 }, 10, 3), draws({ 4 }, 20, 3)
    for s = 1, 3 do
      opt.list[1].grad:copy(facet.tensor(ga[s])); opt.list[2].grad:copy(facet.tensor(gb[s]))
      opt:step()
    end
    H.assert_close(H.values(a), ref_sgd(a0, ga, { lr = 0.1, momentum = 0.9 }), 1e-5, 1e-6)
    H.assert_close(H.values(b), ref_sgd(b0, gb, { lr = 0.1, momentum = 0.9 }), 1e-5, 1e-6)
  end)
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

describe("the global gradient norm", function()
  -- an IResNet-18 and a fused cosine head after one backward: 60 entries, one deferred
  local function model_grads(device)
    facet.manual_seed(5)
    local net = facet.models.iresnet { depth = 18, emb = 32, size = 32 }
    local head = facet.heads.new("am", { classes = 10, dim = 32, fused = true, seed = 2 })
    if device == "cuda" then net, head = net:cuda(), head:cuda() end
    local x = facet.randn({ 4, 3, 32, 32 }, { seed = 3 }):to(device)
    local y = facet.tensor({ 1, 4, 7, 9 }, { dtype = "int64" }):to(device)
    net:train()
    local opt = optim.sgd({ net, head }, { lr = 0.1, momentum = 0.9 })
    opt:zero_grad()
    head:forward(net:forward(x), y)
    net:backward(x, head:backward())
    return opt, head
  end

  H.it("one pass over a real model's gradients: Lua's sum, and the old per-parameter sum", function()
    local opt, head = model_grads(H.device)
    assert.is_true(#opt.list > 50)
    -- the reference: every gradient's squares added in Lua (double), the deferred rows completed in Lua
    local want, old = 0, 0
    for _, p in ipairs(opt.list) do
      local g = H.values(p.grad)
      if p.row_coef then
        local w, c, cols = H.values(p.param), H.values(p.row_coef), p.param:size(2)
        for e = 1, #g do g[e] = g[e] + c[math.floor((e - 1) / cols) + 1] * w[e] end
        old = old + p.grad_sumsq()           -- what grad_norm called before: the head's own identity
      else
        old = old + p.grad:sumsq()           -- one reduction and one read per parameter
      end
      for _, v in ipairs(g) do want = want + v * v end
    end
    local pending = H.values(head.pending)
    local n = opt:grad_norm()
    H.assert_close(n, math.sqrt(want), 1e-6)
    H.assert_close(n, math.sqrt(old), 1e-6)
    assert.are.same(pending, H.values(head.pending))   -- the deferred part stays deferred
    -- without the deferred entry, the CPU's sum is the old per-parameter one, bit for bit
    local grads, sum = {}, 0
    for _, p in ipairs(opt.list) do
      if not p.row_coef then
        grads[#grads + 1] = p.grad
        sum = sum + p.grad:sumsq()
      end
    end
    if H.device == "cpu" then assert.are.equal(math.sqrt(sum), optim.grad_norm(grads)) end
    H.assert_close(optim.grad_norm(grads), math.sqrt(sum), 1e-6)
  end)

  H.it("grad_norm of a list takes 16-bit and strided tensors one at a time", function()
    local a = H.tensor({ 3, 0 }):to("float16")
    local b = H.tensor({ { 0, 4, 9 }, { 1, 1, 1 } }):narrow(2, 2, 1)   -- { 4, 1 }, strided
    H.assert_close(optim.grad_norm({ a, b }), math.sqrt(9 + 16 + 1), 1e-6)
    assert.are.equal(0, optim.grad_norm({}))
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
