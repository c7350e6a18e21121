--- bench/sharded_head.lua: what a class-sharded head costs one rank.
-- 1. Per-rank head memory (W's block, its gradient, SGD's momentum, the
--    logits buffer, and the rest of the head's buffers) for K = 72,690,
--    1,000,000 and 10,000,000 classes over 1, 2 and 4 ranks, at dim 512 and
--    B = 128 rows per rank (the global batch, gathered on every rank, is
--    128 W), with sample = 1 and sample = 0.1. Where a rank's block fits in
--    --budget_gb, the figures are the bytes of the tensors actually allocated
--    by one training step (forward, backward, SGD step) of rank 0's block
--    (the other ranks are stood in for by a one-process group that hands back
--    rank 0's tensors, so the block's compute and buffers are real); where it
--    does not, they are computed from the same sizes and marked "(computed)".
-- 2. The head's time per step at K = 1,000,000, sample = 0.1 against
--    sample = 1, in one process (the whole head, W = 1: one rank's block of a
--    K-class head on one device): forward + backward, and the SGD update
--    (which touches every row in both cases: docs/heads.md); unfused, and
--    fused (the SGD pass writes the W norms the next forward needs).
-- Figures only, no pass/fail. CPU figures are of this machine (threads:
-- facet.get_threads()).
-- Usage: bin/facet run bench/sharded_head.lua [--dim 512] [--B 128] [--budget_gb 7]
--          [--timeK 1000000] [--reps 2] [--time 0|1] [--memory 0|1]
local facet = require "facet"
local sharded = require "facet.heads.sharded"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"
io.stdout:setvbuf("line")

local NAME = "bench/sharded_head.lua"
local o = { dim = 512, B = 128, budget_gb = 7, timeK = 1000000, reps = 2, time = 1, memory = 1 }
local i = 1
while arg and arg[i] do
  local k = arg[i]:match("^%-%-(.+)$")
  if k and o[k] ~= nil and tonumber(arg[i + 1]) then o[k] = tonumber(arg[i + 1])
  else common.bad_argument(NAME, arg[i], arg[i + 1]) end
  i = i + 2
end

-- rank 0 of a W-rank group whose other ranks hold the same tensors as rank 0
local function stand_in(W)
  local g = {}
  function g.rank() return 0 end
  function g.size() return W end
  function g.barrier() end
  function g.allreduce(_, t) return t end
  function g.broadcast(_, t) return t end
  function g.allgather(_, t)
    local shape = t:shape()
    local n = shape[1]
    shape[1] = n * W
    local out = facet.empty(shape, { dtype = t:dtype() })
    for r = 0, W - 1 do out:narrow(1, r * n + 1, n):copy(t) end
    return out
  end
  function g.reduce_scatter(_, t) return t:narrow(1, 1, t:size(1) / W):clone() end
  return g
end

local MB = 1024 * 1024
local function mb(bytes) return bytes / MB end
local function bytes_of(t) return t and t:numel() * 4 or 0 end

local function make(K, W, sample, fused)
  return facet.heads.new("am", { classes = K, dim = o.dim, shard = true, group = stand_in(W), sample = sample,
    fused = fused or false })
end

-- one step of rank 0's block; returns the head and the optimizer
local function step(head, opt, K, W)
  local x = facet.randn({ o.B, o.dim }, { seed = 1 })
  local ys = {}
  for j = 1, o.B do ys[j] = (j * 7919) % head.block_rows end    -- labels in rank 0's block
  local y = facet.tensor(ys, { dtype = "int64" })
  opt:zero_grad()
  head:forward(x, y)
  head:backward()
  opt:step()
end

-- the per-rank figures of the block of rank 0: measured when it fits
local function memory_row(K, W, sample)
  local _, rows = sharded.block(K, W, 0)
  local D, Bg = o.dim, o.B * W
  local n = sample < 1 and sharded.sample_size(sample, rows) or rows
  local f = { W = rows * D * 4, grad = rows * D * 4, mom = rows * D * 4, logits = Bg * n * 4 }
  -- the rest: gathered x, dL/dx of the global batch, norms, sampled copies of W rows and their gradient
  f.other = Bg * D * 4 * 2 + rows * 4 + (sample < 1 and 2 * n * D * 4 or 0)
  local need = f.W + f.grad + f.mom + f.logits + f.other
  if need > o.budget_gb * 1024 * MB then return f, false end
  local head = make(K, W, sample)
  local opt = facet.optim.sgd(head, { lr = 0.1, momentum = 0.9, weight_decay = 5e-4 })
  step(head, opt, K, W)
  local b = head.buf
  local m = { W = bytes_of(head.weight), grad = bytes_of(head.grad_weight), mom = bytes_of(opt.list[1].momentum_buffer),
    logits = bytes_of(b.z) }
  m.other = bytes_of(b.dinput_g) + bytes_of(head.fw.xg) + bytes_of(b.wnorm) + bytes_of(b.ws) + bytes_of(b.gs)
  head:free()
  head.weight:free(); head.grad_weight:free(); opt.list[1].momentum_buffer:free()
  collectgarbage(); collectgarbage()
  return m, true
end

if o.memory == 1 then
  print(("per-rank head memory, MiB (am head, dim %d, B = %d per rank, SGD with momentum)"):format(o.dim, o.B))
  print(("%10s %2s %6s %10s %10s %10s %10s %10s %10s %10s  %s"):format("K", "W", "sample", "rows", "W", "grad",
    "momentum", "logits", "other", "total", "how"))
  for _, K in ipairs { 72690, 1000000, 10000000 } do
    for _, W in ipairs { 1, 2, 4 } do
      for _, sample in ipairs { 1, 0.1 } do
        local m, measured = memory_row(K, W, sample)
        local _, rows = sharded.block(K, W, 0)
        local total = m.W + m.grad + m.mom + m.logits + m.other
        print(("%10d %2d %6g %10d %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f  %s"):format(K, W, sample, rows, mb(m.W),
          mb(m.grad), mb(m.mom), mb(m.logits), mb(m.other), mb(total), measured and "allocated" or "(computed)"))
      end
    end
  end
end

if o.time == 1 then
  local K = o.timeK
  print(("\ntime per step at K = %d, dim %d, B = %d, one process, the whole head (W = 1), %d threads, best of %d")
    :format(K, o.dim, o.B, facet.get_threads(), o.reps))
  print(("%6s %6s %10s %14s %12s %12s"):format("sample", "fused", "classes", "fwd+bwd ms", "sgd ms", "step ms"))
  local results = {}
  for _, case in ipairs { { 1, false }, { 0.1, false }, { 1, true }, { 0.1, true } } do
    local sample, fused = case[1], case[2]
    local head = make(K, 1, sample, fused)
    local opt = facet.optim.sgd(head, { lr = 0.1, momentum = 0.9, weight_decay = 5e-4 })
    local x = facet.randn({ o.B, o.dim }, { seed = 1 })
    local ys = {}
    for j = 1, o.B do ys[j] = (j * 7919) % K end
    local y = facet.tensor(ys, { dtype = "int64" })
    local best_fb, best_opt = math.huge, math.huge
    for rep = 0, o.reps do
      opt:zero_grad()
      local c0 = facet.clock()
      head:forward(x, y)
      head:backward()
      local c1 = facet.clock()
      opt:step()
      local c2 = facet.clock()
      if rep > 0 then   -- the first step allocates the buffers and the momentum
        best_fb, best_opt = math.min(best_fb, c1 - c0), math.min(best_opt, c2 - c1)
      end
    end
    local used = sample < 1 and head.sampled or K
    print(("%6g %6s %10d %14.1f %12.1f %12.1f"):format(sample, tostring(fused), used, best_fb * 1e3, best_opt * 1e3,
      (best_fb + best_opt) * 1e3))
    results[sample .. tostring(fused)] = best_fb + best_opt
    head:free()
    collectgarbage(); collectgarbage()
  end
  print(("summary: K = %d: step sample 1 / sample 0.1 = %.2fx (unfused), %.2fx (fused)"):format(K,
    results["1false"] / results["0.1false"], results["1true"] / results["0.1true"]))
end
