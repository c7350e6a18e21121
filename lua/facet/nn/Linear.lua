--- facet.nn.Linear(in, out [, bias = true]): y = x W^T + b for x of B x in.
-- Weights start as PyTorch's (uniform in +-1/sqrt(in)), from facet's generator.
-- A float16/bfloat16 x runs the 16-bit GEMMs (tensor cores on CUDA) with the
-- weight rounded to x's dtype, as PyTorch's autocast casts it; sums, the bias
-- and the parameter gradients stay float32, and each 16-bit result is
-- rounded once (docs/mixed-precision.md).
local Module = require "facet.nn.Module"
local tensor = require "facet.tensor"
local core = require "facet.core"

local C, check = core.C, core.check
local Linear = Module:extend("Linear")
Linear.native_half = true

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

-- The weight as a GEMM operand for activations of dtype: itself for
-- float32, else rounded into a kept buffer of that dtype, again at every
-- forward (the optimizer moves the float32 weight).
local function weight_for(self, dtype)
  if dtype == "float32" then return self.weight end
  local w = self:buffer("weight_16", { self.n_out, self.n_in }, dtype)
  w:copy(self.weight)
  return w
end

-- backward's operand: the rounded weight the forward used (the output's own
-- derivative; no second rounding per step), rounded here only without one
local function forward_weight(self, dtype)
  local w = self.buffers.weight_16
  if dtype == "float32" or not (w and w:dtype() == dtype and w:device() == self.device) then
    return weight_for(self, dtype)
  end
  return w
end

function Linear:update_output(x)
  local B, dtype = check_input(self, x), x:dtype()
  local w = weight_for(self, dtype)
  local out = self:buffer("output", { B, self.n_out }, dtype)
  -- a 16-bit output with a bias: float32 sums plus the bias, then one rounding
  local acc = (self.bias and dtype ~= "float32") and self:buffer("output_32", { B, self.n_out }) or out
  check(C.facet_tensor_matmul(acc.h, x.h, w.h, 0, 1, 1, 0))
  if self.bias then check(C.facet_tensor_binary(acc.h, acc.h, self.bias.h, C.FACET_BINARY_ADD)) end
  if acc ~= out then out:copy(acc) end
  return out
end

function Linear:update_grad_input(x, grad_out)
  local B, dtype = check_input(self, x), x:dtype()
  local gi = self:buffer("grad_input", { B, self.n_in }, dtype)
  check(C.facet_tensor_matmul(gi.h, grad_out.h, forward_weight(self, dtype).h, 0, 0, 1, 0))
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
