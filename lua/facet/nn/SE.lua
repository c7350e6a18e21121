--- facet.nn.SE(channels [, reduction = 16]): squeeze-excitation (Hu et al.):
-- x * sigmoid(conv1x1(relu(conv1x1(avgpool(x))))), the gate of IR-SE units.
-- The gate is N x C x 1 x 1 and broadcast over the plane.
local Module = require "facet.nn.Module"
local Sequential = require "facet.nn.Sequential"
local Conv2d = require "facet.nn.Conv2d"
local Activation = require "facet.nn.Activation"
local Pool = require "facet.nn.Pool"
local core = require "facet.core"
local valid = require "facet.check"

local C, check = core.C, core.check
local SE = Module:extend("SE")
SE.any_dtype = true      -- its products and sum take 16-bit tensors; the layers inside cast

function SE.new(channels, reduction)
  valid.integer("nn.SE", "channels", channels, { min = 1, max = 2 ^ 31 - 1 })
  reduction = valid.integer("nn.SE", "reduction", reduction, { min = 1, max = 2 ^ 31 - 1, default = 16 })
  local self = Module.init(SE)
  self.channels, self.reduction = channels, reduction
  local mid = math.max(1, math.floor(channels / reduction))
  self.modules = { Sequential(Pool.AdaptiveAvgPool2d(1), Conv2d(channels, mid, 1, { bias = false }), Activation.ReLU(),
    Conv2d(mid, channels, 1, { bias = false }), Activation.Sigmoid()) }
  return self
end

function SE:describe() return ("SE(%d, /%d)"):format(self.channels, self.reduction) end

function SE:update_output(x)
  local gate = Module.in_child(self, 1, self.modules[1], self.modules[1].forward, self.modules[1], x)
  local out = self:buffer("output", x:shape(), x:dtype())
  check(C.facet_tensor_binary(out.h, x.h, gate.h, C.FACET_BINARY_MUL))
  return out
end

function SE:backward(x, grad_out)
  self:check_backward(x, grad_out)
  local s = x:shape()
  local branch = self.modules[1]
  -- through the gate: sum over the plane of grad_out * x
  local prod = self:buffer("prod", s, x:dtype())
  check(C.facet_tensor_binary(prod.h, grad_out.h, x.h, C.FACET_BINARY_MUL))
  local gg = self:buffer("grad_gate", { s[1], s[2], 1, 1 }, x:dtype())
  check(C.facet_tensor_reduce(gg.h, self:_view("prod", prod, { s[1] * s[2], s[3] * s[4] }).h, C.FACET_REDUCE_SUM, 1, 0))
  local gx_branch = Module.in_child(self, 1, branch, branch.backward, branch, x, gg)
  -- direct path: grad_out * gate, plus the branch's input gradient
  local gi = self:buffer("grad_input", s, x:dtype())
  check(C.facet_tensor_binary(gi.h, grad_out.h, branch.output.h, C.FACET_BINARY_MUL))
  check(C.facet_tensor_binary(gi.h, gi.h, gx_branch.h, C.FACET_BINARY_ADD))
  self.grad_input = gi
  return gi
end

return SE
