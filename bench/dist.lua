--- bench/dist.lua: data-parallel step time and images/s of the small convnet
-- (facet.models.convnet, emb 128, mv-am head over 7 classes, 28 x 28 inputs,
-- SGD) at a global batch split among the ranks, with gradient buckets and
-- optionally synchronised BN. Run it once per rank count:
--   bin/facet run bench/dist.lua [--batch 128] [--steps 30] [--sync-bn]
--   mpirun --allow-run-as-root --oversubscribe -np 2 bin/facet run bench/dist.lua
--   ... bench/dist.lua --allreduce-dtype fp16     (facet.train's allreduce_dtype: fp32, fp16, bf16)
-- Rank 0 prints the median step time and the images/s of all ranks together,
-- then the median time of the allreduces alone of the model's and head's
-- gradients, cut into buckets of --bucket-mb, in float32 and in the 16-bit
-- dtype (--allreduce-dtype, fp16 when it is fp32), with the bytes on the wire.
-- Figures only: on a 2-core machine two ranks share the cores the one rank
-- had, so the 2-rank figure measures the overhead, not a speed-up.
local facet = require "facet"
local argparse = require "argparse"
local recipe = require "facet.recipe"

local p = argparse("bench/dist", "data-parallel step time")
p:option("--batch", "global batch", "128"):convert(recipe.integer("--batch", 2, 65536))
p:option("--steps", "timed steps (after 3 warm-up steps)", "30"):convert(recipe.integer("--steps", 1, 100000))
p:option("--bucket-mb", "gradient bucket size", "1"):convert(recipe.number("--bucket-mb", { gt = 0 }))
p:flag("--sync-bn", "synchronised BatchNorm")
p:option("--allreduce-dtype", "dtype of the gradient buckets on the wire: fp32, fp16, bf16", "fp32")
  :choices(facet.dist.ALLREDUCE_DTYPES)
p:option("--allreduce-reps", "timed repetitions of the allreduce-only figure", "30")
  :convert(recipe.integer("--allreduce-reps", 1, 100000))
local a = p:parse(arg)

local dist = facet.dist.init()
local W, r = dist.size(), dist.rank()
local n = a.batch * (a.steps + 3)
local x = facet.randn({ n, 1, 28, 28 }, { seed = 1 })
local labels = {}
for i = 1, n do labels[i] = i % 7 end
local data = facet.data.tensors { x = x, y = facet.tensor(labels, { dtype = "int64" }), batch_size = a.batch, seed = 1 }
local net = facet.models.convnet { emb = 128 }
local head = facet.heads.new("mv-am", { classes = 7, dim = 128, seed = 1 })
local opt = facet.optim.sgd({ net, head }, { lr = 0.05, momentum = 0.9 })

-- step times from the training loop's own clock: a wrapper source stamps each batch request
local stamps, clock = {}, facet.clock
local wrapped = {
  num_batches = function() return data:num_batches() end,
  shard = function(_, rank, world)
    local s = data:shard(rank, world)
    return { num_batches = function() return s:num_batches() end,
      batch = function(_, e, i) stamps[#stamps + 1] = clock(); return s:batch(e, i) end }
  end,
  batch = function(_, e, i) stamps[#stamps + 1] = clock(); return data:batch(e, i) end,
}
facet.train { model = net, head = head, data = wrapped, optimizer = opt, epochs = 1, quiet = true, dist = true,
  sync_bn = a.sync_bn and W > 1 or false, bucket_mb = a.bucket_mb, allreduce_dtype = a.allreduce_dtype }
stamps[#stamps + 1] = clock()
local steps = {}
for i = 5, #stamps do steps[#steps + 1] = stamps[i] - stamps[i - 1] end
table.sort(steps)
local med = steps[math.floor((#steps + 1) / 2)]
if r == 0 then
  print(("ranks %d  global batch %d (%d per rank)  threads/rank %d  sync_bn %s  bucket %.2g MB  allreduce %s"):format(W,
    a.batch, a.batch / W, facet.get_threads(), a.sync_bn and "on" or "off", a.bucket_mb, a.allreduce_dtype))
  print(("median step %.1f ms   %.0f images/s   (min %.1f ms, max %.1f ms over %d steps)"):format(med * 1e3,
    a.batch / med, steps[1] * 1e3, steps[#steps] * 1e3, #steps))
end

-- the allreduces alone: the gradients' element count in buckets of bucket_mb (float32 elements, as
-- facet.dist.data_parallel cuts them), one buffer per bucket made before the timing
local numel = 0
for _, src in ipairs { net, head } do
  for _, e in ipairs(src:named_parameters()) do numel = numel + e.grad:numel() + (e.row_coef and e.row_coef:numel() or 0) end
end
local cap = math.floor(a.bucket_mb * 2 ^ 20 / 4)
local low = a.allreduce_dtype == "fp32" and "fp16" or a.allreduce_dtype
local g = dist.world()
local function median_ms(dtype)
  local bufs, left = {}, numel
  while left > 0 do
    local n = math.min(cap, left)
    bufs[#bufs + 1] = facet.zeros({ n }, { dtype = dtype })
    left = left - n
  end
  local times = {}
  for rep = 1, a.allreduce_reps + 2 do
    g:barrier()
    local t0 = clock()
    for _, b in ipairs(bufs) do g:allreduce_start(b, "sum") end
    g:wait_all()
    if rep > 2 then times[#times + 1] = clock() - t0 end
  end
  table.sort(times)
  return times[math.floor((#times + 1) / 2)] * 1e3, #bufs
end
local f32, nb = median_ms("float32")
local f16 = median_ms(low == "bf16" and "bfloat16" or "float16")
if r == 0 then
  print(("allreduce alone, %d gradient values in %d buckets, median of %d: float32 %.3f ms (%.2f MB), %s %.3f ms "
    .. "(%.2f MB): %.2fx"):format(numel, nb, a.allreduce_reps, f32, numel * 4 / 1e6, low, f16, numel * 2 / 1e6,
    f32 / math.max(f16, 1e-9)))
end
