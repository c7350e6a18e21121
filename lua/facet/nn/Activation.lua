--- facet.nn.ReLU, ReLU6, Sigmoid, Tanh and PReLU(channels [, init = 0.25]): the
-- activations of facet_activation_forward/backward (PReLU's slope is per
-- channel, dim 2 of the input, and is a parameter that optimizers may leave
-- out of weight decay). The input may be float32, float16 or bfloat16: the
-- kernels take it natively (float32 math, outputs rounded once; the slope and
-- its gradient stay float32). PReLU's backward takes both gradients from one
-- facet_activation_backward call.
local Module = require "facet.nn.Module"
local tensor = require "facet.tensor"
local core = require "facet.core"

local C, check = core.C, core.check
local M = {}

local function make(name, act)
  local cls = Module:extend(name)
  cls.native_half = true
  function cls.new(channels, init)
    local self = Module.init(cls)
    if act == C.FACET_ACTIVATION_PRELU then
      channels = channels or 1
      self.channels = channels
      self:register("slope", tensor.full({ channels }, init or 0.25), "norm")
      self._keys = { slope = "weight" }      -- PyTorch's name in state_dict
    end
    return self
  end
  function cls:describe()
    if self.channels then return ("%s(%d)"):format(name, self.channels) end
    return name
  end
  function cls:update_output(x)
    local out = self:buffer("output", x:shape(), x:dtype())
    check(C.facet_activation_forward(out.h, x.h, act, self.slope and self.slope.h or nil))
    return out
  end
  function cls:update_grad_input(x, grad_out)
    local gi = self:buffer("grad_input", x:shape(), x:dtype())
    check(C.facet_activation_backward(gi.h, nil, grad_out.h, x.h, self.output and self.output.h or nil, act,
      self.slope and self.slope.h or nil))
    return gi
  end
  function cls:acc_grad_parameters(x, grad_out)
    if self.slope then
      check(C.facet_activation_backward(nil, self.grad_slope.h, grad_out.h, x.h, nil, act, self.slope.h))
    end
  end
  if act == C.FACET_ACTIVATION_PRELU then
    -- update_grad_input and acc_grad_parameters in one call: grad_out and x
    -- are read once for both gradients
    function cls:backward(x, grad_out)
      x, grad_out = self:check_backward(x, grad_out)
      local gi = self:buffer("grad_input", x:shape(), x:dtype())
      check(C.facet_activation_backward(gi.h, self.grad_slope.h, grad_out.h, x.h, nil, act, self.slope.h))
      self.grad_input = gi
      return gi
    end
  end
  M[name] = cls
end

make("ReLU", C.FACET_ACTIVATION_RELU)
make("ReLU6", C.FACET_ACTIVATION_RELU6)
make("Sigmoid", C.FACET_ACTIVATION_SIGMOID)
make("Tanh", C.FACET_ACTIVATION_TANH)
make("PReLU", C.FACET_ACTIVATION_PRELU)

return M
