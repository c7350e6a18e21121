--- facet.nn.Sequential: modules applied one after another. An error inside
-- names the failing child: "In Sequential (3) Conv2d(64->128, 3x3, s2): ...".
-- seq:add(m, name) names the child (its state_dict keys read "name.weight");
-- unnamed children are named by their 1-based position.
local Module = require "facet.nn.Module"
local core = require "facet.core"
local valid = require "facet.check"

local Sequential = Module:extend("Sequential")
Sequential.any_dtype = true

function Sequential.new(...)
  local self = Module.init(Sequential)
  self.modules = {}
  local list = ...
  local mods = (type(list) == "table" and getmetatable(list) == nil) and list or { ... }
  for i = 1, select("#", ...) == 1 and #mods or select("#", ...) do
    local m = mods[i]
    if type(m) ~= "table" or type(m.forward) ~= "function" then
      valid.fail("nn.Sequential", ("argument %d is not a module (a table with forward), got %s"):format(i,
        valid.describe(m)))
    end
    self:add(mods[i])
  end
  return self
end

function Sequential:add(m, name)
  if type(m) ~= "table" or type(m.forward) ~= "function" then
    core.raise("Sequential:add: not a module, got " .. valid.describe(m), 2)
  end
  if name ~= nil then
    if type(name) ~= "string" or name:find("%.") then
      core.raise("Sequential:add: name must be a string without '.', got " .. valid.describe(name), 2)
    end
    for i = 1, #self.modules do
      if name ~= "" and self:child_name(i) == name then
        core.raise(("Sequential:add: a child is already named %q"):format(name), 2)
      end
    end
    self.names = self.names or {}
    self.names[#self.modules + 1] = name
  end
  self.modules[#self.modules + 1] = m
  return self
end

-- Mixed precision (docs/mixed-precision.md): a child with fp32 = true (the
-- models set it on the embedding's last layers, which arcface_torch runs
-- outside autocast) that gets a float16/bfloat16 input is given a float32 copy
-- of it instead, so it and what follows run in float32; in backward its
-- float32 grad_input is rounded once back into the 16-bit dtype for the
-- children before it. The copies are buffers of this Sequential, named once.
local HALF = Module.HALF
local names = setmetatable({}, { __index = function(t, i)
  local v = { "fp32_input_" .. i, "fp32_grad_" .. i }
  rawset(t, i, v)
  return v
end })

function Sequential:update_output(x)
  local low = self._fp32_low                 -- child i -> the 16-bit dtype it was widened from
  for i, m in ipairs(self.modules) do
    if m.fp32 and HALF[x:dtype()] then
      local xf = self:buffer(names[i][1], x:shape())
      xf:copy(x)
      low = low or {}
      self._fp32_low = low
      low[i] = x:dtype()
      x = xf
    elseif low then
      low[i] = nil
    end
    x = Module.in_child(self, i, m, m.forward, m, x)
  end
  return x
end

function Sequential:backward(x, grad_out)
  self:check_backward(x, grad_out)
  local n, low = #self.modules, self._fp32_low
  for i = n, 1, -1 do
    local m = self.modules[i]
    local input = i > 1 and self.modules[i - 1].output or x
    local dt = low and low[i]
    if dt then input = self.buffers[names[i][1]] end   -- the float32 copy the child ran on
    grad_out = Module.in_child(self, i, m, m.backward, m, input, grad_out)
    if dt and grad_out then
      local g = self:buffer(names[i][2], grad_out:shape(), dt)
      g:copy(grad_out)
      grad_out = g
    end
  end
  self.grad_input = grad_out
  return grad_out
end

function Sequential:describe() return "Sequential" end

return Sequential
