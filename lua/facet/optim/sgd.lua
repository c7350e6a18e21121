--- facet.optim.sgd(sources, settings): SGD with PyTorch's semantics in one
-- fused pass per parameter (facet_sgd_step), the parameters of a model all in
-- one call (facet_sgd_step_list: on CUDA one launch per 48 parameters).
-- settings: lr (required), momentum (0), dampening (0), nesterov (false),
-- weight_decay (0), decay_bias_norm (true: set false to exempt biases and
-- BatchNorm/PReLU parameters from weight decay).
-- A parameter that defers part of its gradient (a head made with fused = true,
-- see facet.optim.optimizer) is updated in the same single pass: the pass adds
-- row_coef_r * param_r to the gradient, writes ||param_r|| of the result into
-- row_norms (the W norms the cosine head's next forward needs), and the
-- optimizer then zeroes row_coef and calls on_update(true).
local core = require "facet.core"
local Optimizer = require "facet.optim.optimizer"
local valid = require "facet.check"

local C, check = core.C, core.check
local SGD = setmetatable({ name = "sgd" }, { __index = Optimizer })
SGD.__index = SGD
SGD.defaults = { lr = false, momentum = 0, dampening = 0, nesterov = false, weight_decay = 0, decay_bias_norm = true }
SGD.state_keys = { "momentum_buffer" }

local function new(sources, cfg)
  local self = Optimizer.new(SGD, sources, cfg, SGD.defaults)
  valid.number("facet.optim.sgd", "momentum", self.momentum, { min = 0 })
  valid.number("facet.optim.sgd", "dampening", self.dampening, { min = 0, max = 1 })
  valid.boolean("facet.optim.sgd", "nesterov", self.nesterov)
  if self.momentum < 0 or self.weight_decay < 0 or self.dampening < 0 or self.dampening > 1 then
    error("sgd: momentum and weight_decay must be >= 0, dampening in [0, 1]", 2)
  end
  if self.nesterov and (self.momentum <= 0 or self.dampening ~= 0) then
    error("sgd: Nesterov needs momentum > 0 and no dampening", 2)
  end
  return self
end

-- the entries the list call takes: a deferred gradient needs a call of its own
local function listable(p) return p.row_coef == nil and p.row_norms == nil end

-- one update of every parameter (zero: each gradient zeroed in the same pass):
-- the plain parameters on the first one's device in one facet_sgd_step_list
-- call (on CUDA one launch per 48), the others (a fused head's weight, with
-- its row parts) one facet_sgd_step each. The handle arrays and the checks of
-- the tensors come from the optimizer's plan, kept between steps: a step
-- allocates nothing (facet.optim.optimizer)
local function update(self, method, zero)
  if type(self.momentum) ~= "number" or self.momentum < 0 or type(self.dampening) ~= "number" then
    core.raise(("sgd:%s: momentum must be a number >= 0 and dampening a number"):format(method), 3)
  end
  local plan = self:plan(method, self.momentum ~= 0, listable)
  local flags = (self.nesterov and C.FACET_SGD_FLAG_NESTEROV or 0) +
    (self.step_count == 0 and C.FACET_SGD_FLAG_FIRST_STEP or 0) + (zero and C.FACET_SGD_FLAG_ZERO_GRAD or 0)
  check(C.facet_sgd_step_list(plan.params, plan.grads, plan.state[1], plan.decays, plan.m, self.lr, self.momentum,
    self.dampening, flags))
  local after = plan.after
  for k = 1, plan.n_after do
    local a = after[k]
    if a.single then
      local h = a.h
      check(C.facet_sgd_step(h.param, h.grad, h.momentum_buffer, h.row_coef, h.row_norms, self.lr, self.momentum,
        self.dampening, a.decay, flags))
      if h.row_coef then check(C.facet_tensor_fill(h.row_coef, 0)) end
    end
    Optimizer.updated(a.p, a.norms)
  end
  self.step_count = self.step_count + 1
end

--- One update of every parameter; checks them all first (see
-- facet.optim.optimizer), so a step that fails has changed nothing. The
-- gradients are left as they are.
function SGD:step() update(self, "step", false) end

--- step() and zero_grad() in one pass: each update zeroes its gradient
-- (FACET_SGD_FLAG_ZERO_GRAD), the deferred row_coef too; facet.train's step.
function SGD:step_zero_grad()
  -- a class derived from this one with a step of its own gets that step, then zero_grad
  if self.step ~= SGD.step then return Optimizer.step_zero_grad(self) end
  update(self, "step_zero_grad", true)
end

valid.methods(SGD, "sgd", "an optimizer")

return new
