--- facet.optim.adam / adamw(sources, settings): Adam (L2 weight decay added to
-- the gradient) and AdamW (decoupled decay), PyTorch's semantics, one fused
-- pass per parameter, the parameters of a model all in one call
-- (facet_adam_step_list: on CUDA one launch per 48 parameters).
-- settings: lr (1e-3), betas ({0.9, 0.999}), eps (1e-8), weight_decay (0;
-- AdamW 1e-2), decay_bias_norm (true).
-- A parameter that defers part of its gradient (a fused head) gets it applied
-- first: Adam's update is not linear in the gradient, so the pass needs the
-- complete one; the head then measures W again in its next forward.
local core = require "facet.core"
local Optimizer = require "facet.optim.optimizer"
local valid = require "facet.check"

local C, check = core.C, core.check
local M = {}

-- every entry goes in the list call (a deferred gradient is completed first)
local function listable() return true end

local function class(name, decoupled, wd)
  local cls = setmetatable({ name = name }, { __index = Optimizer })
  cls.__index = cls
  cls.defaults = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = wd, decay_bias_norm = true }
  cls.state_keys = { "exp_avg", "exp_avg_sq" }
  -- one update of every parameter (zero: each gradient zeroed in the same pass)
  local function update(self, method, zero)
    local b = self.betas
    if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" or not (b[1] >= 0 and b[1] < 1) or
      not (b[2] >= 0 and b[2] < 1) then
      core.raise(("%s:%s: betas must be two numbers in [0, 1)"):format(name, method), 3)
    end
    if type(self.eps) ~= "number" or not (self.eps > 0) then
      core.raise(("%s:%s: eps must be a number > 0"):format(name, method), 3)
    end
    -- the handle arrays and the checks of the tensors: the optimizer's plan, kept between steps
    local plan = self:plan(method, true, listable)
    local step = self.step_count + 1
    local flags = (decoupled and C.FACET_ADAM_FLAG_DECOUPLED or 0) + (zero and C.FACET_ADAM_FLAG_ZERO_GRAD or 0)
    -- every gradient completed first; then the parameters on the first one's
    -- device in one facet_adam_step_list call, any others one call each
    Optimizer.complete_plan(plan)
    check(C.facet_adam_step_list(plan.params, plan.grads, plan.state[1], plan.state[2], plan.decays, plan.m, self.lr,
      b[1], b[2], self.eps, step, flags))
    local after = plan.after
    for k = 1, plan.n_after do
      local a = after[k]
      if a.single then
        local h = a.h
        check(C.facet_adam_step(h.param, h.grad, h.exp_avg, h.exp_avg_sq, self.lr, b[1], b[2], self.eps, a.decay,
          step, flags))
      end
      Optimizer.updated(a.p, false)
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
