--- facet.nn.LayerNorm(dim [, opts]): normalises the last dim of its input
-- (any number of leading dims; PyTorch's nn.LayerNorm(dim)): per row
-- y = (x - mean) / sqrt(var + eps) * weight + bias with the biased variance.
-- opts: eps (1e-5), affine (true: weight starts at 1, bias at 0). float32
-- kernels (facet_layernorm_forward/backward); a float16/bfloat16 input is
-- widened and the output rounded once (Module's widening path), as
-- PyTorch's autocast runs layer_norm in float32.
local Module = require "facet.nn.Module"
local tensor = require "facet.tensor"
local core = require "facet.core"
local valid = require "facet.check"

local C, check = core.C, core.check
local LayerNorm = Module:extend("LayerNorm")

function LayerNorm.new(dim, opts)
  local fn = "nn.LayerNorm"
  valid.integer(fn, "dim", dim, { min = 1, max = 2 ^ 31 - 1 })
  opts = valid.options(fn, opts, { "eps", "affine" })
  local self = Module.init(LayerNorm)
  self.dim = dim
  self.eps = valid.number(fn, "eps", opts.eps, { min = 0, max = 1, default = 1e-5 })
  self.affine = valid.boolean(fn, "affine", opts.affine, true)
  if self.affine then
    self:register("weight", tensor.ones({ dim }), "norm")
    self:register("bias", tensor.zeros({ dim }), "norm")
  end
  return self
end

function LayerNorm:describe()
  return ("LayerNorm(%d%s)"):format(self.dim, self.affine and "" or ", no affine")
end

-- the number of rows of x (its elements over the last dim), after checking it
local function rows_of(self, x)
  local s = x:shape()
  if #s < 1 or s[#s] ~= self.dim then
    self:fail(("want ... x %d input, got %s"):format(self.dim, #s > 0 and table.concat(s, "x") or "a scalar"))
  end
  return x:numel() / self.dim
end

function LayerNorm:update_output(x)
  local rows = rows_of(self, x)
  local out = self:buffer("output", x:shape())
  local mean, invstd = self:buffer("save_mean", { rows }), self:buffer("save_invstd", { rows })
  check(C.facet_layernorm_forward(out.h, mean.h, invstd.h, x.h, self.affine and self.weight.h or nil,
    self.affine and self.bias.h or nil, self.eps))
  return out
end

-- both gradients from one call (grad_out and x are read once)
function LayerNorm:update_grad_input(x, grad_out)
  rows_of(self, x)
  local mean, invstd = self.buffers.save_mean, self.buffers.save_invstd
  if not mean then self:fail("backward: no forward came before it") end
  local gi = self:buffer("grad_input", x:shape())
  check(C.facet_layernorm_backward(gi.h, self.affine and self.grad_weight.h or nil,
    self.affine and self.grad_bias.h or nil, grad_out.h, x.h, mean.h, invstd.h, self.affine and self.weight.h or nil))
  return gi
end

return LayerNorm
