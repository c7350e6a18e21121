--- facet.nn.Linear(in, out [, bias = true]): y = x W^T + b for x of B x in.
-- Weights start as PyTorch's (uniform in +-1/sqrt(in)), from facet's generator.
local Module = require "facet.nn.Module"
local tensor = require "facet.tensor"
local core = require "facet.core"

local C, check = core.C, core.check
local Linear = Module:extend("Linear")

function Linear.new(n_in, n_out, bias)
  if type(n_in) ~= "number" or type(n_out) ~= "number" or n_in < 1 or n_out < 1 then
    core.raise("Linear(in, out): want positive sizes", 2)
  end
  local self = Module.init(Linear)
  self.n_in, self.n_out = n_in, n_out
  local bound = 1 / math.sqrt(n_in)
  self:register("weight", tensor.rand({ n_out, n_in }, { low = -bound, high = bound }), "weight")
  if bias ~= false then self:register("bias", tensor.rand({ n_out }, { low = -bound, high = bound }), "bias") end
  return self
end

function Linear:describe()
  return ("Linear(%d->%d%s)"):format(self.n_in, self.n_out, self.bias and "" or ", no bias")
end

local function check_input(self, x)
  local s = x:shape()
  if #s ~= 2 or s[2] ~= self.n_in then
    self:fail(("want B x %d input, got %s"):format(self.n_in, table.concat(s, "x")))
  end
  return s[1]
end

function Linear:update_output(x)
  local B = check_input(self, x)
  local out = self:buffer("output", { B, self.n_out })
  check(C.facet_tensor_matmul(out.h, x.h, self.weight.h, 0, 1, 1, 0))
  if self.bias then check(C.facet_tensor_binary(out.h, out.h, self.bias.h, C.FACET_BINARY_ADD)) end
  return out
end

function Linear:update_grad_input(x, grad_out)
  local B = check_input(self, x)
  local gi = self:buffer("grad_input", { B, self.n_in })
  check(C.facet_tensor_matmul(gi.h, grad_out.h, self.weight.h, 0, 0, 1, 0))
  return gi
end

function Linear:acc_grad_parameters(x, grad_out)
  check(C.facet_tensor_matmul(self.grad_weight.h, grad_out.h, x.h, 1, 0, 1, 1))
  if self.bias then
    local colsum = self:buffer("colsum", { self.n_out })
    check(C.facet_tensor_reduce(colsum.h, grad_out.h, C.FACET_REDUCE_SUM, 0, 0))
    check(C.facet_tensor_axpy(self.grad_bias.h, self.grad_bias.h, 1, colsum.h))
  end
end

return Linear
