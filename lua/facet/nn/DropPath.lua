--- facet.nn.DropPath(p): stochastic depth (timm's DropPath, as arcface_torch's
-- ViT blocks use it): in training each sample's whole input (dim 1 is the
-- sample) is zeroed with probability p and the kept samples scaled by
-- 1/(1-p); identity in evaluation or with p = 0. The per-sample keep mask is
-- a dropout mask (facet_dropout_forward on a vector of ones), drawn from the
-- model's random stream like nn.Dropout's (self.rng, model:random_stream()),
-- so a seed reproduces it on every device. The product runs in float32 (a
-- 16-bit input is widened and rounded once).
local Module = require "facet.nn.Module"
local Dropout = require "facet.nn.Dropout"
local tensor = require "facet.tensor"
local core = require "facet.core"
local valid = require "facet.check"

local C, check = core.C, core.check
local DropPath = Module:extend("DropPath")

function DropPath.new(p)
  p = valid.number("nn.DropPath", "p", p, { min = 0, lt = 1, default = 0 })
  local self = Module.init(DropPath)
  self.p = p
  self.rng = { seed = Dropout.SEED, offset = 0 }
  return self
end

function DropPath:describe() return ("DropPath(%g)"):format(self.p) end

-- the per-sample scale as N x 1 x ... x 1 (broadcast over x)
local function scale_shape(x)
  local s = x:shape()
  local r = { s[1] }
  for i = 2, #s do r[i] = 1 end
  return r
end

function DropPath:update_output(x)
  if not self.training or self.p == 0 then return x end
  if x:dim() < 1 then self:fail("want an input with a sample dim, got a scalar") end
  local shape = scale_shape(x)
  local ones = self:buffer("ones", shape)
  if not self._ones_ready or not rawequal(self._ones_ready, ones) then
    ones:fill_(1)
    self._ones_ready = ones
  end
  local scale, mask = self:buffer("scale", shape), self:buffer("mask", shape, "uint8")
  local rng = self.rng
  check(C.facet_dropout_forward(scale.h, mask.h, ones.h, self.p, rng.seed, rng.offset))
  rng.offset = rng.offset + ones:numel()
  local out = self:buffer("output", x:shape())
  check(C.facet_tensor_binary(out.h, x.h, scale.h, C.FACET_BINARY_MUL))
  return out
end

function DropPath:update_grad_input(x, grad_out)
  if not self.training or self.p == 0 then return grad_out end
  local scale = self.buffers.scale
  if not scale then self:fail("backward: no forward in training mode came before it") end
  local gi = self:buffer("grad_input", x:shape())
  check(C.facet_tensor_binary(gi.h, grad_out.h, scale.h, C.FACET_BINARY_MUL))
  return gi
end

return DropPath
