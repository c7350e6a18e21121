--- facet.optim.sgd(sources, settings): SGD with PyTorch's semantics in one
-- fused pass per parameter (facet_sgd_step).
-- settings: lr (required), momentum (0), dampening (0), nesterov (false),
-- weight_decay (0), decay_bias_norm (true: set false to exempt biases and
-- BatchNorm/PReLU parameters from weight decay).
-- A parameter that defers part of its gradient (a head made with fused = true,
-- see facet.optim.optimizer) is updated in the same single pass: the pass adds
-- row_coef_r * param_r to the gradient, writes ||param_r|| of the result into
-- row_norms (the W norms the cosine head's next forward needs), and the
-- optimizer then zeroes row_coef and calls on_update(true).
local core = require "facet.core"
local tensor = require "facet.tensor"
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

-- one update of every parameter (zero: each gradient zeroed in the same pass)
local function update(self, method, zero)
  self:check_entries(method)
  if type(self.momentum) ~= "number" or self.momentum < 0 or type(self.dampening) ~= "number" then
    core.raise(("sgd:%s: momentum must be a number >= 0 and dampening a number"):format(method), 3)
  end
  local flags = (self.nesterov and C.FACET_SGD_FLAG_NESTEROV or 0) +
    (self.step_count == 0 and C.FACET_SGD_FLAG_FIRST_STEP or 0) + (zero and C.FACET_SGD_FLAG_ZERO_GRAD or 0)
  if self.momentum ~= 0 then self:ensure_state(SGD.state_keys) end
  for _, p in ipairs(self.list) do
    check(C.facet_sgd_step(p.param.h, p.grad.h, p.momentum_buffer and p.momentum_buffer.h or nil,
      p.row_coef and p.row_coef.h or nil, p.row_norms and p.row_norms.h or nil,
      self.lr, self.momentum, self.dampening, self:decay_of(p), flags))
    if p.row_coef then p.row_coef:zero_() end
    Optimizer.updated(p, p.row_norms ~= nil)
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
