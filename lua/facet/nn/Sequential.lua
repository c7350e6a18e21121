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

function Sequential:update_output(x)
  for i, m in ipairs(self.modules) do x = Module.in_child(self, i, m, m.forward, m, x) end
  return x
end

function Sequential:backward(x, grad_out)
  local n = #self.modules
  for i = n, 1, -1 do
    local m = self.modules[i]
    local input = i > 1 and self.modules[i - 1].output or x
    grad_out = Module.in_child(self, i, m, m.backward, m, input, grad_out)
  end
  self.grad_input = grad_out
  return grad_out
end

function Sequential:describe() return "Sequential" end

return Sequential
