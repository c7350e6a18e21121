--- spec/support/sharded_worker.lua: every head of the catalogue, sharded over
-- the real ranks of mpirun (facet.dist's world group), checked on each rank
-- against the unsharded head on the whole batch by the per-rank body of
-- spec/sharded_head_spec.lua (M.check_rank: loss, dx, dW, db to 1e-5).
-- Started by spec/dist_spec.lua: bin/facet run spec/support/sharded_worker.lua
-- The heads and batches live on support/rank_device.lua's device (the
-- unsharded reference on the CPU).
-- Prints "rank R: N heads match on DEVICE" on success; an assertion names head, W, K and rank.
package.path = "./spec/?.lua;" .. package.path
local facet = require "facet"
facet.set_threads(1)
-- before anything asks for CUDA: init gives each rank of a node its GPU
local g = facet.dist.init().world()
local M = dofile("spec/sharded_head_spec.lua")

local W, n = g:size(), 0
M.device = require "support.rank_device"(g)
for _, name in ipairs(facet.heads.names()) do
  -- K = 11 not divisible by W; every label in the first block, so the others hold none
  M.check_rank(g, name, {}, 11, (function() local c = {} for r = 1, W do c[r] = 3 end return c end)(),
    function(i) return (i * 5) % 5 end)
  M.check_rank(g, name, {}, 11, (function() local c = {} for r = 1, W do c[r] = 2 + r end return c end)())
  n = n + 1
end
local E = facet.expr
M.check_rank(g, "mv-am", { h = function(t, c, I) return E.exp(t * (c + 1) * I * 2) end }, 11, { 2, 2 })
M.check_rank(g, "l2-softmax", { learn_alpha = true }, 11, { 3, 3 })
print(("rank %d: %d heads match on %s"):format(g:rank(), n, M.device))
