--- facet.nn.Dropout(p = 0.5): zeroes elements with probability p in training
-- (survivors scaled by 1/(1-p)); identity in evaluation. Masks come from
-- facet's counter-based generator, so a seed reproduces them on any device.
-- Each Dropout draws from a random stream { seed, offset } (self.rng; seed
-- 0xd209, which facet.manual_seed does not touch); model:random_stream() makes
-- the Dropouts of one model share one stream and returns it, and the trainer
-- saves and restores its offset with each checkpoint. float16 and bfloat16
-- inputs go straight to the kernels (the product in float32, rounded once).
local Module = require "facet.nn.Module"
local core = require "facet.core"

local C, check = core.C, core.check
local Dropout = Module:extend("Dropout")

Dropout.SEED = 0xd209
Dropout.native_half = true

function Dropout.new(p)
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p >= 1 then error("Dropout(p): p must be in [0, 1)", 2) end
  local self = Module.init(Dropout)
  self.p = p
  self.rng = { seed = Dropout.SEED, offset = 0 }
  return self
end

function Dropout:describe() return ("Dropout(%g)"):format(self.p) end

function Dropout:update_output(x)
  if not self.training or self.p == 0 then return x end
  local out = self:buffer("output", x:shape(), x:dtype())
  local mask = self:buffer("mask", x:shape(), "uint8")
  local rng = self.rng
  check(C.facet_dropout_forward(out.h, mask.h, x.h, self.p, rng.seed, rng.offset))
  rng.offset = rng.offset + x:numel()
  return out
end

function Dropout:update_grad_input(x, grad_out)
  if not self.training or self.p == 0 then return grad_out end
  local mask = self.buffers.mask
  if not mask then self:fail("backward: no forward in training mode came before it (no dropout mask)") end
  local gi = self:buffer("grad_input", x:shape(), x:dtype())
  check(C.facet_dropout_backward(gi.h, grad_out.h, mask.h, self.p))
  return gi
end

return Dropout
