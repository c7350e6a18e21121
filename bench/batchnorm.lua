--- bench/batchnorm.lua: time and memory throughput of BatchNorm's training
-- forward and backward (nn.BatchNorm2d / BatchNorm1d: facet_batchnorm_forward,
-- facet_batchnorm_backward) on IResNet-50's layers at 112 x 112 input, in
-- float32, float16 and bfloat16. GB/s counts the tensor passes the kernels
-- make: forward reads x for the statistics, then reads x and writes out (3
-- passes); backward reads grad_out and x for the sums, then reads them again
-- and writes grad_x (5 passes); per-channel vectors are not counted.
-- --sync 1 times synchronised BatchNorm instead (facet_batchnorm_stats, the
-- evaluation forward, the local sums, facet_batchnorm_backward_elemt: the
-- same passes) with a simulated group of two ranks holding the same batch
-- (its allreduce doubles the host buffer in place: no communication timed).
-- Lines starting with "summary:" are the key figures (tools/gpu_check.sh copies them).
-- Usage: bin/facet run bench/batchnorm.lua [--batch 32] [--reps 5] [--device cpu|cuda] [--dtypes fp32,fp16,bf16]
--        [--sync 0|1]
-- (--help: the options)
local facet = require "facet"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"

local parser = common.parser("bench/batchnorm.lua", "Time and GB/s of BatchNorm's training forward and " ..
  "backward on IResNet-50's layers (112 x 112 input).")
common.integer(parser, "--batch", "batch size", 32, 1)
common.integer(parser, "--reps", "timed runs per layer (the best counts)", 5, 1)
common.device(parser)
common.names(parser, "--dtypes", "activation dtypes", "fp32,fp16,bf16", common.PRECISIONS)
common.switch(parser, "--sync", "synchronised BatchNorm over a simulated group of two ranks", 0)
local opts = parser:parse(arg)
common.check_device("bench/batchnorm.lua", opts.device)
local dev = opts.device
local sync = dev == "cuda" and facet.cuda.synchronize or function() end
local DTYPE = { fp32 = "float32", fp16 = "float16", bf16 = "bfloat16" }
local SIZE = { fp32 = 4, fp16 = 2, bf16 = 2 }
local twin = { size = function() return 2 end, allreduce = function(_, t) return t:mul_(2) end }
local kind = opts.sync == 1 and "synchronised batchnorm" or "batchnorm"

-- name, channels, plane side (0: BatchNorm1d)
local layers = {
  { "stem 64 @112", 64, 112 },
  { "stage 1 64 @56", 64, 56 },
  { "stage 2 128 @28", 128, 28 },
  { "stage 3 256 @14", 256, 14 },
  { "stage 4 512 @7", 512, 7 },
  { "features BatchNorm1d 512", 512, 0 },
}

local function best(f)
  f(); sync()
  local b = math.huge
  for _ = 1, opts.reps do
    local t0 = facet.clock()
    f(); sync()
    b = math.min(b, facet.clock() - t0)
  end
  return b
end

print(("%s, device %s, batch %d, best of %d"):format(kind, dev, opts.batch, opts.reps))
print(("%-26s %5s %10s %8s %10s %8s"):format("layer", "dtype", "fwd ms", "GB/s", "bwd ms", "GB/s"))
local summary = {}
for _, p in ipairs(opts.dtypes) do
  for _, l in ipairs(layers) do
    local name, c, side = l[1], l[2], l[3]
    local shape = side > 0 and { opts.batch, c, side, side } or { opts.batch, c }
    local m = (side > 0 and facet.nn.BatchNorm2d or facet.nn.BatchNorm1d)(c):to(dev)
    if opts.sync == 1 then m.sync = twin end
    local x = facet.randn(shape, { seed = 1, mean = 0.5, std = 2 }):to(DTYPE[p]):to(dev)
    local g = facet.randn(shape, { seed = 2 }):to(DTYPE[p]):to(dev)
    local bytes = x:numel() * SIZE[p]
    local fwd = best(function() m:forward(x) end)
    local bwd = best(function() m:backward(x, g) end)
    print(("%-26s %5s %10.3f %8.1f %10.3f %8.1f"):format(name, p, fwd * 1e3, 3 * bytes / fwd / 1e9, bwd * 1e3,
      5 * bytes / bwd / 1e9))
    if l == layers[1] then
      summary[#summary + 1] = ("summary: %s %s %s %s (batch %d): fwd %.3f ms %.0f GB/s, bwd %.3f ms %.0f GB/s")
        :format(kind, dev, p, name, opts.batch, fwd * 1e3, 3 * bytes / fwd / 1e9, bwd * 1e3, 5 * bytes / bwd / 1e9)
    end
    m, x, g = nil, nil, nil
    collectgarbage()
  end
end
for _, s in ipairs(summary) do print(s) end
