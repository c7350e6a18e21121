--- facet.nn.Softmax(): softmax over the last dim of its input (any number of
-- leading dims), with facet_softmax_forward/backward (float32 kernels; a
-- 16-bit input is widened and the output rounded once, as PyTorch's autocast
-- runs softmax in float32).
local Module = require "facet.nn.Module"
local core = require "facet.core"

local C, check = core.C, core.check
local Softmax = Module:extend("Softmax")

function Softmax.new() return Module.init(Softmax) end

function Softmax:update_output(x)
  if x:dim() < 1 then self:fail("want an input with at least one dim, got a scalar") end
  local out = self:buffer("output", x:shape())
  check(C.facet_softmax_forward(out.h, x.h))
  return out
end

function Softmax:update_grad_input(x, grad_out)
  local gi = self:buffer("grad_input", x:shape())
  check(C.facet_softmax_backward(gi.h, grad_out.h, self.output.h))
  return gi
end

return Softmax
