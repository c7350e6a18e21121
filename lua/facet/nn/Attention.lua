--- facet.nn.Attention{ first, trunk, mask, up, head, last }: a residual
-- attention module (Wang et al., 2017): y = last((1 + M) * T) with
-- T = trunk(first(x)) and M = head(up(mask(first(x))) + T). The trunk output
-- feeds both the product and the mask's top, so it is computed once and its
-- gradient gathers both paths.
local Module = require "facet.nn.Module"
local core = require "facet.core"

local C, check = core.C, core.check
local Attention = Module:extend("Attention")
Attention.any_dtype = true      -- its sums and products take 16-bit tensors; the layers inside cast

local PARTS = { "first", "trunk", "mask", "up", "head", "last" }

function Attention.new(parts)
  if type(parts) ~= "table" then
    error("Attention: parts must be a table of modules (first, trunk, mask, up, head, last), got a " .. type(parts), 2)
  end
  local self = Module.init(Attention)
  self.modules = {}
  for i, k in ipairs(PARTS) do
    if type(parts[k]) ~= "table" or not parts[k].forward then error("Attention: " .. k .. " must be a module", 2) end
    self.modules[i] = parts[k]
  end
  return self
end

function Attention:describe() return "Attention" end

local function run(self, i, fn, ...)
  local m = self.modules[i]
  return Module.in_child(self, i, m, m[fn], m, ...)
end

function Attention:update_output(x)
  local x1 = run(self, 1, "forward", x)
  local t = run(self, 2, "forward", x1)
  local mb = run(self, 3, "forward", x1)
  local u = run(self, 4, "forward", mb)
  local i1 = self:buffer("mask_in", t:shape(), t:dtype())
  check(C.facet_tensor_binary(i1.h, u.h, t.h, C.FACET_BINARY_ADD))
  local m = run(self, 5, "forward", i1)
  local pre = self:buffer("gated", t:shape(), t:dtype())
  check(C.facet_tensor_unary(pre.h, m.h, C.FACET_UNARY_ADD, 1, 0))
  check(C.facet_tensor_binary(pre.h, pre.h, t.h, C.FACET_BINARY_MUL))
  self.x1, self.t, self.mb, self.m = x1, t, mb, m
  return run(self, 6, "forward", pre)
end

function Attention:backward(x, g)
  self:check_backward(x, g)
  local b = self.buffers
  local g_pre = run(self, 6, "backward", b.gated, g)
  local g_t = self:buffer("grad_trunk", self.t:shape(), g:dtype())
  check(C.facet_tensor_unary(g_t.h, self.m.h, C.FACET_UNARY_ADD, 1, 0))
  check(C.facet_tensor_binary(g_t.h, g_t.h, g_pre.h, C.FACET_BINARY_MUL))          -- (1 + M) * g
  local g_m = self:buffer("grad_mask", self.t:shape(), g:dtype())
  check(C.facet_tensor_binary(g_m.h, g_pre.h, self.t.h, C.FACET_BINARY_MUL))       -- T * g
  local g_i1 = run(self, 5, "backward", b.mask_in, g_m)
  check(C.facet_tensor_binary(g_t.h, g_t.h, g_i1.h, C.FACET_BINARY_ADD))           -- T also feeds the mask's top
  local g_mb = run(self, 4, "backward", self.mb, g_i1)
  local g_x1m = run(self, 3, "backward", self.x1, g_mb)
  local g_x1 = self:buffer("grad_x1", self.x1:shape(), g:dtype())
  g_x1:copy(g_x1m)
  local g_x1t = run(self, 2, "backward", self.x1, g_t)
  check(C.facet_tensor_binary(g_x1.h, g_x1.h, g_x1t.h, C.FACET_BINARY_ADD))
  self.grad_input = run(self, 1, "backward", x, g_x1)
  return self.grad_input
end

return Attention
