--- recipes/quickstart.lua: the job `make run` starts. Trains the small convnet
-- with an mv-am head on Fashion-MNIST's classes 0-6 (Debian's
-- dataset-fashion-mnist), then verifies pairs drawn from the test images of
-- the three classes it never saw (7, 8, 9): an open-set check of the
-- embeddings, with both 10-fold protocols. About a minute on 2 cores.
-- Usage: bin/facet run recipes/quickstart.lua [--epochs 3] [--head mv-am] [--pairs 3000] [--out run/quickstart]
-- Data parallel: mpirun -np 2 bin/facet run recipes/quickstart.lua --dist [--sync-bn]
-- (--batch stays the global batch; rank 0 alone writes and evaluates).
local facet = require "facet"
local argparse = require "argparse"
local recipe = require "facet.recipe"

local parser = argparse("quickstart", "Fashion-MNIST open-set training and verification")
parser:option("--epochs", "training epochs", "3"):convert(recipe.integer("--epochs", 1, 100000))
parser:option("--head", "loss head (facet.heads.names() and its aliases)", "mv-am"):choices(recipe.head_names())
parser:option("--batch", "batch size", "128"):convert(recipe.integer("--batch", 1, 1000000))
parser:option("--pairs", "verification pairs (half same, half different)", "3000")
  :convert(recipe.integer("--pairs", 2, 100000000))
parser:option("--limit", "training images to use (0: all 42,000)", "0"):convert(recipe.integer("--limit", 0))
parser:option("--out", "log and checkpoint directory", "run/quickstart")
parser:option("--seed", "seed", "1"):convert(recipe.integer("--seed", 0, 2 ^ 53))
recipe.dist_options(parser)
local args = parser:parse(arg)
local dist = recipe.dist(args)
local root = facet.dist.rank() == 0

facet.manual_seed(args.seed)
local t0 = facet.clock()
local x, y = facet.data.fashion_mnist { split = "train", classes = { 0, 1, 2, 3, 4, 5, 6 } }
if args.limit > 0 and args.limit < x:size(1) then x, y = x:narrow(1, 1, args.limit):contiguous(), y:narrow(1, 1, args.limit):contiguous() end
local data = facet.data.tensors { x = x, y = y, batch_size = args.batch, seed = args.seed }
local net = facet.models.convnet { emb = 128 }
local head = facet.heads.new(args.head, { classes = 7, dim = 128, seed = args.seed })
local opt = facet.optim.sgd({ net, head }, { lr = 0.1, momentum = 0.9, weight_decay = 5e-4, decay_bias_norm = false })
if root then print(("training convnet + %s on %d images of classes 0-6, %d epochs"):format(args.head, x:size(1), args.epochs)) end
facet.train {
  model = net, head = head, data = data, optimizer = opt, epochs = args.epochs,
  schedule = facet.optim.schedule.cosine { lr = 0.1, epochs = args.epochs, min_lr = 0.001 },
  log = args.out, checkpoint = args.out .. "/ckpt", print_every = 100, dist = dist.dist, sync_bn = dist.sync_bn,
  allreduce_dtype = dist.allreduce_dtype,
}
if not root then return end

-- verification pairs from the held-out classes
local tx, ty = facet.data.fashion_mnist { split = "test", classes = { 7, 8, 9 } }
local emb = facet.eval.embed(net, tx, { flip = true })
local labels = ty:totable()
local by_class = {}
for i, c in ipairs(labels) do
  by_class[c] = by_class[c] or {}
  table.insert(by_class[c], i)
end
local u, k = facet.rand({ 4 * args.pairs }, { seed = args.seed + 7 }):totable(), 0
local function uniform() k = k + 1; return u[(k - 1) % #u + 1] end
local function pick(list) return list[math.floor(uniform() * #list) + 1] end
local classes = { 7, 8, 9 }
local ia, ib, same = {}, {}, {}
for p = 1, args.pairs do
  local is_same = p % 2 == 0
  local c1 = pick(classes)
  local c2 = c1
  while not is_same and c2 == c1 do c2 = pick(classes) end
  local a, b = pick(by_class[c1]), pick(by_class[c2])
  while b == a do b = pick(by_class[c2]) end
  ia[p], ib[p], same[p] = a, b, is_same
end
local e1 = emb:index_select(facet.tensor(ia, { dtype = "int32" }))
local e2 = emb:index_select(facet.tensor(ib, { dtype = "int32" }))

print(("\nopen-set verification: %d pairs of unseen classes (7 sandal, 8 bag, 9 ankle boot), flip test"):format(args.pairs))
print(("%-12s %10s %8s %12s %12s"):format("protocol", "accuracy", "std", "TAR@FAR=1e-2", "TAR@FAR=1e-3"))
local results = {}
for _, protocol in ipairs { "insightface", "facexzoo" } do
  local r = facet.eval.verify(e1, e2, same, { protocol = protocol })
  results[#results + 1] = { name = "fashion-open-set (" .. protocol .. ")", result = r }
  local function tar(f) return r.tar_at_far[f] and ("%.4f"):format(r.tar_at_far[f]) or "-" end
  print(("%-12s %10.4f %8.4f %12s %12s"):format(protocol, r.accuracy, r.std, tar(1e-2), tar(1e-3)))
end
facet.report.save_verify(args.out, results)
local report = facet.report.write({ args.out }, args.out)
print(("\nreport: %s   log: %s/train.jsonl   checkpoint: %s/ckpt   (%.0f s)"):format(report, args.out, args.out,
  facet.clock() - t0))
