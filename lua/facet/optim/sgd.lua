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
local ffi = require "ffi"
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

-- the handle arrays of the list update, made once per optimizer
local function list_arrays(self)
  local a = self.list_arrays
  if not a then
    local n = #self.list
    a = { params = ffi.new("facet_tensor *[?]", n), grads = ffi.new("facet_tensor *[?]", n),
      bufs = ffi.new("facet_tensor *[?]", n), decays = ffi.new("double[?]", n), device = ffi.new("int[1]") }
    self.list_arrays = a
  end
  return a
end

-- one update of every parameter (zero: each gradient zeroed in the same pass):
-- the plain parameters on the first one's device in one facet_sgd_step_list
-- call (on CUDA one launch per 48), the others (a fused head's weight, with
-- its row parts) one facet_sgd_step each
local function update(self, method, zero)
  self:check_entries(method)
  if type(self.momentum) ~= "number" or self.momentum < 0 or type(self.dampening) ~= "number" then
    core.raise(("sgd:%s: momentum must be a number >= 0 and dampening a number"):format(method), 3)
  end
  local flags = (self.nesterov and C.FACET_SGD_FLAG_NESTEROV or 0) +
    (self.step_count == 0 and C.FACET_SGD_FLAG_FIRST_STEP or 0) + (zero and C.FACET_SGD_FLAG_ZERO_GRAD or 0)
  if self.momentum ~= 0 then self:ensure_state(SGD.state_keys) end
  local a, list, m = list_arrays(self), self.list, 0
  check(C.facet_tensor_device(list[1].param.h, a.device))
  local dev = a.device[0]
  for _, p in ipairs(list) do
    p.listed = not p.row_coef and not p.row_norms and C.facet_tensor_device(p.param.h, a.device) == 0 and
      a.device[0] == dev
    if p.listed then
      a.params[m], a.grads[m], a.decays[m] = p.param.h, p.grad.h, self:decay_of(p)
      a.bufs[m] = p.momentum_buffer and p.momentum_buffer.h or nil
      m = m + 1
    end
  end
  check(C.facet_sgd_step_list(a.params, a.grads, a.bufs, a.decays, m, self.lr, self.momentum, self.dampening, flags))
  for _, p in ipairs(list) do
    if not p.listed then
      check(C.facet_sgd_step(p.param.h, p.grad.h, p.momentum_buffer and p.momentum_buffer.h or nil,
        p.row_coef and p.row_coef.h or nil, p.row_norms and p.row_norms.h or nil,
        self.lr, self.momentum, self.dampening, self:decay_of(p), flags))
      if p.row_coef then p.row_coef:zero_() end
    end
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
