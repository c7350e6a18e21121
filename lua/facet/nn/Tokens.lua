--- Token layouts of the Vision Transformer:
-- facet.nn.Tokens(): N x C x H x W feature maps -> N x (H W) x C tokens, token
--   h W + w (PyTorch's x.flatten(2).transpose(1, 2)); any dtype.
-- facet.nn.Rows(module): runs a module made for B x features matrices (Linear,
--   an MLP) on every token: x of ... x F is read as (prod ...) x F and the
--   output read back as ... x F'. Its child is transparent in the state
--   ("fc1.weight", not "1.fc1.weight").
local Module = require "facet.nn.Module"
local core = require "facet.core"
local ffi = require "ffi"

local C, check = core.C, core.check
local M = {}

local TO_TOKENS = ffi.new("int[3]", { 0, 2, 1 })    -- N,C,HW <-> N,HW,C

M.Tokens = Module:extend("Tokens")
M.Tokens.any_dtype = true
function M.Tokens.new() return Module.init(M.Tokens) end
function M.Tokens:update_output(x)
  local s = x:shape()
  if #s ~= 4 then self:fail(("want N x C x H x W input, got %s"):format(table.concat(s, "x"))) end
  local out = self:buffer("output", { s[1], s[3] * s[4], s[2] }, x:dtype())
  check(C.facet_tensor_permute(out.h, self:_view("x3", x, { s[1], s[2], s[3] * s[4] }).h, TO_TOKENS))
  return out
end
function M.Tokens:update_grad_input(x, grad_out)
  local s = x:shape()
  local gi = self:buffer("grad_input", s, grad_out:dtype())
  check(C.facet_tensor_permute(self:_view("gi3", gi, { s[1], s[2], s[3] * s[4] }).h, grad_out.h, TO_TOKENS))
  return gi
end

M.Rows = Module:extend("Rows")
M.Rows.any_dtype = true
function M.Rows.new(module)
  if type(module) ~= "table" or type(module.forward) ~= "function" then
    core.raise("nn.Rows(module): module must be a facet.nn module", 2)
  end
  local self = Module.init(M.Rows)
  self.modules, self.names = { module }, { "" }
  return self
end
function M.Rows:describe() return "Rows" end

-- x's shape with its last size replaced by n
local function with_last(s, n)
  local r = {}
  for i = 1, #s - 1 do r[i] = s[i] end
  r[#s] = n
  return r
end

function M.Rows:update_output(x)
  local s = x:shape()
  if #s < 2 then self:fail(("want an input of at least 2 dims, got %s"):format(table.concat(s, "x"))) end
  local m = self.modules[1]
  local y = Module.in_child(self, 1, m, m.forward, m, self:_view("x2", x, { x:numel() / s[#s], s[#s] }))
  local ys = y:shape()
  return self:_view("out", y, with_last(s, ys[#ys]))
end
function M.Rows:backward(x, grad_out)
  x, grad_out = self:check_backward(x, grad_out)
  local s, m = x:shape(), self.modules[1]
  local gs = grad_out:shape()
  local gi = Module.in_child(self, 1, m, m.backward, m, self:_view("x2", x, { x:numel() / s[#s], s[#s] }),
    self:_view("g2", grad_out, { grad_out:numel() / gs[#gs], gs[#gs] }))
  self.grad_input = self:_view("grad", gi, s)
  return self.grad_input
end

return M
