--- facet.nn.PosEmbed(tokens, dim): adds a learned position embedding to
-- B x tokens x dim tokens: y = x + pos_embed, with the parameter pos_embed of
-- 1 x tokens x dim (arcface_torch's ViT names it so; it starts at zeros,
-- models draw their own start). Its gradient accumulates the batch's sum
-- of grad_out. float32 (a 16-bit input is widened and rounded once).
local Module = require "facet.nn.Module"
local tensor = require "facet.tensor"
local core = require "facet.core"
local valid = require "facet.check"

local C, check = core.C, core.check
local PosEmbed = Module:extend("PosEmbed")

function PosEmbed.new(tokens, dim)
  local fn = "nn.PosEmbed"
  valid.integer(fn, "tokens", tokens, { min = 1, max = 2 ^ 31 - 1 })
  valid.integer(fn, "dim", dim, { min = 1, max = 2 ^ 31 - 1 })
  local self = Module.init(PosEmbed)
  self.tokens, self.dim = tokens, dim
  self:register("pos_embed", tensor.zeros({ 1, tokens, dim }), "norm")
  return self
end

function PosEmbed:describe() return ("PosEmbed(%d x %d)"):format(self.tokens, self.dim) end

local function check_input(self, x)
  local s = x:shape()
  if #s ~= 3 or s[2] ~= self.tokens or s[3] ~= self.dim then
    self:fail(("want B x %d x %d input, got %s"):format(self.tokens, self.dim, table.concat(s, "x")))
  end
  return s[1]
end

function PosEmbed:update_output(x)
  check_input(self, x)
  local out = self:buffer("output", x:shape())
  check(C.facet_tensor_binary(out.h, x.h, self.pos_embed.h, C.FACET_BINARY_ADD))
  return out
end

function PosEmbed:update_grad_input(x, grad_out) return grad_out end

function PosEmbed:acc_grad_parameters(x, grad_out)
  check_input(self, x)
  local sum = self:buffer("batch_sum", { self.tokens, self.dim })
  check(C.facet_tensor_reduce(sum.h, grad_out.h, C.FACET_REDUCE_SUM, 0, 0))
  local g = self:_view("grad", self.grad_pos_embed, { self.tokens, self.dim })
  check(C.facet_tensor_axpy(g.h, g.h, 1, sum.h))
end

return PosEmbed
