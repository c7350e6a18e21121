--- spec/support/sync_bn_case.lua: the synchronised BatchNorm cases of
-- spec/dist_spec.lua, built alike by the spec (the 1-process reference) and
-- by each rank of spec/support/dist_worker.lua (MODE syncbn).
--   M.CASES, M.DTYPES
--   M.batch(case, dtype) -> x, grad_out: the whole batch, CPU, in dtype
--   M.module(case, device) -> a fresh BatchNorm1d/2d with the case's weights
--     and running statistics
--   M.rows(case, rank) -> first row (1-based), row count of the rank's part
local facet = require "facet"

local M = {}

-- rank 0 holds rows 1..split, rank 1 the rest (uneven parts; "one rank": rank 1 holds none)
M.CASES = {
  { name = "2d", dims = 4, shape = { 7, 3, 5, 4 }, split = 3, seed = 31 },
  { name = "1d_no_affine", dims = 2, shape = { 9, 6 }, split = 4, seed = 41, affine = false },
  { name = "2d_one_rank", dims = 4, shape = { 5, 2, 3, 3 }, split = 5, seed = 51 },
}
M.DTYPES = { "float32", "float16", "bfloat16" }

-- x ~ N(3, 2): a mean well away from 0 exercises the shifted sums
function M.batch(c, dtype)
  local x = facet.randn(c.shape, { seed = c.seed, mean = 3, std = 2 }):to(dtype)
  local g = facet.randn(c.shape, { seed = c.seed + 1 }):to(dtype)
  return x, g
end

function M.module(c, device)
  local C = c.shape[2]
  local m = (c.dims == 4 and facet.nn.BatchNorm2d or facet.nn.BatchNorm1d)(C, { affine = c.affine })
  if m.weight then
    m.weight:copy(facet.randn({ C }, { seed = c.seed + 2, mean = 1, std = 0.3 }))
    m.bias:copy(facet.randn({ C }, { seed = c.seed + 3, std = 0.3 }))
  end
  m.running_mean:copy(facet.randn({ C }, { seed = c.seed + 4 }))
  m.running_var:copy(facet.rand({ C }, { seed = c.seed + 5, low = 0.5, high = 2 }))
  return m:to(device)
end

function M.rows(c, rank)
  if rank == 0 then return 1, c.split end
  return c.split + 1, c.shape[1] - c.split
end

return M
