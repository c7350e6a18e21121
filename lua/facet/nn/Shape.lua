--- facet.nn.Flatten (N x ... -> N x rest, a view) and facet.nn.Identity.
local Module = require "facet.nn.Module"

local M = {}

M.Flatten = Module:extend("Flatten")
M.Flatten.any_dtype = true      -- views: any dtype
function M.Flatten.new() return Module.init(M.Flatten) end
function M.Flatten:update_output(x)
  local s = x:shape()
  return self:_view("out", x, { s[1], -1 })
end
function M.Flatten:update_grad_input(x, grad_out) return self:_view("grad", grad_out, x:shape()) end

M.Identity = Module:extend("Identity")
M.Identity.any_dtype = true
function M.Identity.new() return Module.init(M.Identity) end
function M.Identity:update_output(x) return x end
function M.Identity:update_grad_input(x, grad_out) return grad_out end

return M
