--- facet.nn.Residual(block [, shortcut]) = block(x) + shortcut(x) (shortcut:
-- identity by default), facet.nn.Add(a, b, ...) = a(x) + b(x) + ...,
-- facet.nn.Mul(a, b) = a(x) * b(x) (attention masks), and
-- facet.nn.Concat(dim, a, b, ...) joining the branch outputs along dim
-- (1-based; 2 = channels). Errors name the failing branch.
local Module = require "facet.nn.Module"
local core = require "facet.core"

local C, check = core.C, core.check
local M = {}

local function branches(self, list)
  self.modules = {}
  for _, m in ipairs(list) do
    if type(m) ~= "table" or type(m.forward) ~= "function" then error(self.__name .. ": branches must be modules", 3) end
    self.modules[#self.modules + 1] = m
  end
end

local function sum_into(self, name, list)
  local out = self:buffer(name, list[1]:shape(), list[1]:dtype())
  out:copy(list[1])
  for i = 2, #list do check(C.facet_tensor_binary(out.h, out.h, list[i].h, C.FACET_BINARY_ADD)) end
  return out
end

-- Add and Residual: every branch sees x, outputs and input gradients add up
local function additive(name)
  local cls = Module:extend(name)
  cls.any_dtype = true
  function cls:update_output(x)
    local outs = {}
    for i, m in ipairs(self.modules) do outs[i] = Module.in_child(self, i, m, m.forward, m, x) end
    if #outs == 1 then return outs[1] end
    return sum_into(self, "output", outs)
  end
  function cls:backward(x, grad_out)
    self:check_backward(x, grad_out)
    local grads = {}
    for i, m in ipairs(self.modules) do grads[i] = Module.in_child(self, i, m, m.backward, m, x, grad_out) end
    self.grad_input = #grads == 1 and grads[1] or sum_into(self, "grad_input", grads)
    return self.grad_input
  end
  return cls
end

M.Add = additive("Add")
function M.Add.new(...)
  local self = Module.init(M.Add)
  branches(self, { ... })
  return self
end
function M.Add:describe() return ("Add(%d branches)"):format(#self.modules) end

M.Residual = additive("Residual")
function M.Residual.new(block, shortcut)
  local self = Module.init(M.Residual)
  branches(self, { block, shortcut or require("facet.nn.Shape").Identity.new() })
  return self
end
function M.Residual:describe() return "Residual" end

M.Mul = Module:extend("Mul")
M.Mul.any_dtype = true
function M.Mul.new(a, b)
  local self = Module.init(M.Mul)
  branches(self, { a, b })
  return self
end
function M.Mul:describe() return "Mul" end
function M.Mul:update_output(x)
  local a = Module.in_child(self, 1, self.modules[1], self.modules[1].forward, self.modules[1], x)
  local b = Module.in_child(self, 2, self.modules[2], self.modules[2].forward, self.modules[2], x)
  local out = self:buffer("output", a:shape(), a:dtype())
  check(C.facet_tensor_binary(out.h, a.h, b.h, C.FACET_BINARY_MUL))
  return out
end
function M.Mul:backward(x, grad_out)
  self:check_backward(x, grad_out)
  local ma, mb = self.modules[1], self.modules[2]
  local ga = self:buffer("grad_a", grad_out:shape(), grad_out:dtype())
  local gb = self:buffer("grad_b", grad_out:shape(), grad_out:dtype())
  check(C.facet_tensor_binary(ga.h, grad_out.h, mb.output.h, C.FACET_BINARY_MUL))
  check(C.facet_tensor_binary(gb.h, grad_out.h, ma.output.h, C.FACET_BINARY_MUL))
  local gxa = Module.in_child(self, 1, ma, ma.backward, ma, x, ga)
  local gxb = Module.in_child(self, 2, mb, mb.backward, mb, x, gb)
  self.grad_input = sum_into(self, "grad_input", { gxa, gxb })
  return self.grad_input
end

M.Concat = Module:extend("Concat")
M.Concat.any_dtype = true
function M.Concat.new(dim, ...)
  if type(dim) ~= "number" then error("Concat(dim, branches...): dim first", 2) end
  local self = Module.init(M.Concat)
  self.dim = dim
  branches(self, { ... })
  return self
end
function M.Concat:describe() return ("Concat(dim %d)"):format(self.dim) end
function M.Concat:update_output(x)
  local outs, total = {}, 0
  for i, m in ipairs(self.modules) do
    outs[i] = Module.in_child(self, i, m, m.forward, m, x)
    total = total + outs[i]:size(self.dim)
  end
  local shape = outs[1]:shape()
  shape[self.dim] = total
  local out = self:buffer("output", shape, outs[1]:dtype())
  local at = 1
  self.offsets = {}
  for i, o in ipairs(outs) do
    local n = o:size(self.dim)
    out:narrow(self.dim, at, n):copy(o)
    self.offsets[i] = at
    at = at + n
  end
  return out
end
function M.Concat:backward(x, grad_out)
  self:check_backward(x, grad_out)
  local grads = {}
  for i, m in ipairs(self.modules) do
    local n = m.output:size(self.dim)
    local g = self:buffer("grad_" .. i, m.output:shape(), grad_out:dtype())
    g:copy(grad_out:narrow(self.dim, self.offsets[i], n))
    grads[i] = Module.in_child(self, i, m, m.backward, m, x, g)
  end
  self.grad_input = #grads == 1 and grads[1] or sum_into(self, "grad_input", grads)
  return self.grad_input
end

return M
