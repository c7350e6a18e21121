--- facet.optim.adam / adamw(sources, settings): Adam (L2 weight decay added to
-- the gradient) and AdamW (decoupled decay), PyTorch's semantics, one fused
-- pass per parameter, the parameters of a model all in one call
-- (facet_adam_step_list: on CUDA one launch per 48 parameters).
-- settings: lr (1e-3), betas ({0.9, 0.999}), eps (1e-8), weight_decay (0;
-- AdamW 1e-2), decay_bias_norm (true).
-- A parameter that defers part of its gradient (a fused head) gets it applied
-- first: Adam's update is not linear in the gradient, so the pass needs the
-- complete one; the head then measures W again in its next forward.
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"
local Optimizer = require "facet.optim.optimizer"
local valid = require "facet.check"

local C, check = core.C, core.check
local M = {}

-- the handle arrays of the list update, made once per optimizer
local function list_arrays(self)
  local a = self.list_arrays
  if not a then
    local n = #self.list
    a = { params = ffi.new("facet_tensor *[?]", n), grads = ffi.new("facet_tensor *[?]", n),
      exp_avgs = ffi.new("facet_tensor *[?]", n), exp_avg_sqs = ffi.new("facet_tensor *[?]", n),
      decays = ffi.new("double[?]", n), device = ffi.new("int[1]") }
    self.list_arrays = a
  end
  return a
end

local function class(name, decoupled, wd)
  local cls = setmetatable({ name = name }, { __index = Optimizer })
  cls.__index = cls
  cls.defaults = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = wd, decay_bias_norm = true }
  cls.state_keys = { "exp_avg", "exp_avg_sq" }
  -- one update of every parameter (zero: each gradient zeroed in the same pass)
  local function update(self, method, zero)
    self:check_entries(method)
    local b = self.betas
    if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" or not (b[1] >= 0 and b[1] < 1) or
      not (b[2] >= 0 and b[2] < 1) then
      core.raise(("%s:%s: betas must be two numbers in [0, 1)"):format(name, method), 3)
    end
    if type(self.eps) ~= "number" or not (self.eps > 0) then
      core.raise(("%s:%s: eps must be a number > 0"):format(name, method), 3)
    end
    self:ensure_state(cls.state_keys)
    local step = self.step_count + 1
    local flags = (decoupled and C.FACET_ADAM_FLAG_DECOUPLED or 0) + (zero and C.FACET_ADAM_FLAG_ZERO_GRAD or 0)
    -- every gradient completed first; then the parameters on the first one's
    -- device in one facet_adam_step_list call, any others one call each
    local a, list, m = list_arrays(self), self.list, 0
    check(C.facet_tensor_device(list[1].param.h, a.device))
    local dev = a.device[0]
    for _, p in ipairs(list) do
      Optimizer.complete(p)
      p.listed = C.facet_tensor_device(p.param.h, a.device) == 0 and a.device[0] == dev
      if p.listed then
        a.params[m], a.grads[m], a.decays[m] = p.param.h, p.grad.h, self:decay_of(p)
        a.exp_avgs[m], a.exp_avg_sqs[m] = p.exp_avg.h, p.exp_avg_sq.h
        m = m + 1
      end
    end
    check(C.facet_adam_step_list(a.params, a.grads, a.exp_avgs, a.exp_avg_sqs, a.decays, m, self.lr, b[1], b[2],
      self.eps, step, flags))
    for _, p in ipairs(list) do
      if not p.listed then
        check(C.facet_adam_step(p.param.h, p.grad.h, p.exp_avg.h, p.exp_avg_sq.h, self.lr, b[1], b[2],
          self.eps, self:decay_of(p), step, flags))
      end
      Optimizer.updated(p, false)
    end
    self.step_count = step
  end
  --- One update of every parameter; checks them all first (see
  -- facet.optim.optimizer): a step that fails changes no parameter, moment
  -- or step count. The gradients are left complete.
  function cls:step() update(self, "step", false) end
  --- step() and zero_grad() in one pass (FACET_ADAM_FLAG_ZERO_GRAD); facet.train's step.
  function cls:step_zero_grad()
    -- a class derived from this one with a step of its own gets that step, then zero_grad
    if self.step ~= cls.step then return Optimizer.step_zero_grad(self) end
    update(self, "step_zero_grad", true)
  end
  valid.methods(cls, name, "an optimizer")
  return function(sources, cfg)
    local self = Optimizer.new(cls, sources, cfg, cls.defaults)
    local fn = "facet.optim." .. name
    valid.list(fn, "betas", self.betas, { len = 2, min = 0, lt = 1 })
    valid.number(fn, "eps", self.eps, { gt = 0 })
    return self
  end
end

M.adam = class("adam", false, 0)
M.adamw = class("adamw", true, 1e-2)

return M
