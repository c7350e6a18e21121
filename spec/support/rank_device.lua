--- spec/support/rank_device.lua: the device a multi-rank worker puts its
-- tensors on (support/dist_worker.lua, support/sharded_worker.lua). CUDA when
-- FACET_DEVICE=cuda and every rank of group g has a CUDA device, so their
-- collectives go through NCCL: the emulator gives every process one of its
-- own; a host with one GPU gives it to rank 0 alone (facet.dist.init sets
-- CUDA_VISIBLE_DEVICES to the local rank), and the run stays on the CPU.
-- The ranks agree through a min-allreduce on the CPU. The spec side's
-- expectation is support/device.lua's ranks_device().
local facet = require "facet"

return function(g)
  if os.getenv("FACET_DEVICE") ~= "cuda" then return "cpu" end
  local here = facet.tensor({ facet.cuda.available() and 1 or 0 })
  g:allreduce(here, "min")
  return here:totable()[1] == 1 and "cuda" or "cpu"
end
