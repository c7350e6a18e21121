--- spec/support/half_bits.lua: float16/bfloat16 tensors as raw bit patterns, for
-- specs that state 16-bit results exactly (spec/dist_spec.lua and its worker).
--   half_bits.tensor(dtype, { 0x3C00, ... }) -> a CPU tensor holding those bits
--   half_bits.of(t) -> { bits... } of a CPU float16/bfloat16 tensor
local tensor = require "facet.tensor"

local M = {}

function M.tensor(dtype, bits)
  local t = tensor.empty({ #bits }, { dtype = dtype })
  local p = t:bits_ptr()
  for i, b in ipairs(bits) do p[i - 1] = b end
  return t
end

function M.of(t)
  local p, o = t:bits_ptr(), {}
  for i = 1, t:numel() do o[i] = p[i - 1] end
  return o
end

return M
