--- bench/dist.lua: data-parallel step time and images/s of the small convnet
-- (facet.models.convnet, emb 128, mv-am head over 7 classes, 28 x 28 inputs,
-- SGD) at a global batch split among the ranks, with gradient buckets and
-- optionally synchronised BN. Run it once per rank count:
--   bin/facet run bench/dist.lua [--batch 128] [--steps 30] [--sync-bn]
--   mpirun --allow-run-as-root --oversubscribe -np 2 bin/facet run bench/dist.lua
-- Rank 0 prints the median step time and the images/s of all ranks together.
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
  sync_bn = a.sync_bn and W > 1 or false, bucket_mb = a.bucket_mb }
stamps[#stamps + 1] = clock()
local steps = {}
for i = 5, #stamps do steps[#steps + 1] = stamps[i] - stamps[i - 1] end
table.sort(steps)
local med = steps[math.floor((#steps + 1) / 2)]
if r == 0 then
  print(("ranks %d  global batch %d (%d per rank)  threads/rank %d  sync_bn %s  bucket %.2g MB"):format(W, a.batch,
    a.batch / W, facet.get_threads(), a.sync_bn and "on" or "off", a.bucket_mb))
  print(("median step %.1f ms   %.0f images/s   (min %.1f ms, max %.1f ms over %d steps)"):format(med * 1e3,
    a.batch / med, steps[1] * 1e3, steps[#steps] * 1e3, #steps))
end
