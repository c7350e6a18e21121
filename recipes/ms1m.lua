--- recipes/ms1m.lua: the full-scale recipe for InsightFace-format data (MS1M,
-- Glint360k, CASIA-WebFace ... as train.rec/train.idx with the .bin
-- verification sets beside them): the MV-Softmax paper's settings (112 x 112,
-- flip, SGD momentum 0.9, weight decay 5e-4, lr 0.1 divided by 10 at epochs 4, 8
-- and 10, 12 epochs, s = 32), an iresnet or attentionnet_irse backbone and any
-- head; checkpoints every --checkpoint-every steps and at each epoch, resumes
-- with --resume, evaluates on the .bin sets every --eval-every steps and at the
-- end. --steps N stops after N steps and prints the measured time per step and
-- the projected time per epoch.
-- Data parallel: mpirun -np 4 bin/facet run recipes/ms1m.lua --data ... --cuda --dist [--sync-bn]
-- (--batch is the global batch; docs/distributed.md). On several ranks the
-- head is class-sharded over them (each holds K / ranks classes); --sample is
-- its Partial FC fraction (docs/heads.md).
-- Mixed precision as arcface_torch trains: --precision fp16 (or bf16); --tf32
-- lets float32 GEMMs use TF32 tensor cores.
-- Usage: bin/facet run recipes/ms1m.lua --data /data/ms1m-retinaface [--head mv-am] [--model iresnet --depth 100]
--          [--batch 128] [--loader-threads 2] [--bins lfw,cfp_fp,agedb_30] [--out run/ms1m] [--resume] [--steps N]
--          [--cuda] [--precision fp32|bf16|fp16] [--tf32]
local facet = require "facet"
local argparse = require "argparse"
local recipe = require "facet.recipe"

local int = recipe.integer
local p = argparse("ms1m", "full-scale training on InsightFace-format data")
p:option("--data", "directory with train.rec, train.idx and the .bin sets"):count(1)
p:option("--head", "loss head", "mv-am"):choices(recipe.head_names())
p:option("--model", "backbone: iresnet, attentionnet_irse or mobilefacenet", "iresnet")
  :choices { "iresnet", "attentionnet_irse", "mobilefacenet" }
p:option("--depth", "iresnet depth (default 100)"):convert(int("--depth", 18, 100))
p:option("--emb", "embedding size", "512"):convert(int("--emb", 1, 65536))
p:option("--size", "input size", "112"):convert(int("--size", 16, 4096))
p:option("--batch", "batch size", "128"):convert(int("--batch", 1, 1000000))
p:option("--epochs", "epochs", "12"):convert(int("--epochs", 1, 100000))
p:option("--lr", "base learning rate", "0.1"):convert(recipe.number("--lr", { gt = 0 }))
p:option("--loader-threads", "decoding threads", "2"):convert(int("--loader-threads", 1, 4096))
p:option("--bins", "verification sets in --data", "lfw,cfp_fp,agedb_30")
p:option("--eval-every", "steps between evaluations", "2000"):convert(int("--eval-every", 1))
p:option("--checkpoint-every", "steps between checkpoints", "2000"):convert(int("--checkpoint-every", 1))
p:option("--steps", "stop after this many steps (timing runs)"):convert(int("--steps", 1))
p:option("--out", "output directory", "run/ms1m")
p:flag("--resume", "continue from OUT/ckpt")
p:flag("--cuda", "train on the GPU")
p:option("--precision", "fp32, bf16 or fp16: the backbone's activations (fp16 with dynamic loss scaling; "
  .. "docs/mixed-precision.md)", "fp32"):convert(recipe.precision)
p:flag("--tf32", "TF32 tensor cores for float32 GEMMs on the GPU (docs/gpu.md)")
p:option("--sample", "Partial FC: the fraction of each class shard sampled a step (1: all)", "1")
  :convert(recipe.number("--sample", { gt = 0, max = 1 }))
recipe.dist_options(p)
local a = p:parse(arg)
local dist = recipe.dist(a)
local root = facet.dist.rank() == 0

local rec = facet.data.recordio(a.data .. "/train")
local classes = rec:num_identities()
if classes == 0 then error("ms1m: train.rec has no identity records (not the InsightFace layout)") end
local device = a.cuda and "cuda" or "cpu"
if a.tf32 then facet.cuda.set_tf32(true) end
local net = facet.models.build(a.model, { emb = a.emb, size = a.size,
  depth = a.depth or (a.model == "iresnet" and 100 or nil) })
local hopts = { classes = classes, dim = a.emb, device = device }
if facet.dist.size() > 1 then hopts.shard = true end   -- each rank holds its block of the classes
if a.sample < 1 then hopts.sample = a.sample end     -- Partial FC
local head = facet.heads.new(a.head, hopts)
if a.cuda then net:cuda() end
local data = facet.data.loader { source = rec, size = { a.size, a.size }, batch_size = a.batch, threads = a.loader_threads,
  flip = 0.5, seed = 1 }
local opt = facet.optim.sgd({ net, head }, { lr = a.lr, momentum = 0.9, weight_decay = 5e-4, decay_bias_norm = false })
if root then
  print(("%s: %d images, %d identities; %s (%d parameters) + %s over %d classes; %d batches an epoch; %s"):format(a.data,
    rec:num_images(), classes, a.model, net:count_parameters(), a.head, classes, data:num_batches(),
    a.precision .. (a.tf32 and " (TF32 GEMMs)" or "")))
end

-- the verification sets, decoded once
local sets = {}
for name in a.bins:gmatch("[^,]+") do
  local path = ("%s/%s.bin"):format(a.data, name)
  if io.open(path) then
    local s = facet.data.load_bin(path, { size = { a.size, a.size } })
    sets[#sets + 1] = { name = name, set = s }
  else
    if root then io.stderr:write(("ms1m: %s not found, skipped\n"):format(path)) end
  end
end
local function evaluate()
  local out, results = {}, {}
  for _, s in ipairs(sets) do
    local r = facet.eval.verify_set(net, s.set, { device = device })
    out[s.name] = r.accuracy
    results[#results + 1] = { name = s.name, result = r }
  end
  return out, results
end

local r = facet.train {
  model = net, head = head, data = data, optimizer = opt, epochs = a.epochs, log = a.out,
  checkpoint = a.out .. "/ckpt", checkpoint_every = a.checkpoint_every, resume = a.resume and (a.out .. "/ckpt") or nil,
  schedule = facet.optim.schedule.multistep { lr = a.lr, milestones = { 4, 8, 10 } },
  eval = #sets > 0 and function() return (evaluate()) end or nil, eval_every = a.eval_every,
  stop_after = a.steps, print_every = 10, dist = dist.dist, sync_bn = dist.sync_bn,
  allreduce_dtype = dist.allreduce_dtype, precision = a.precision,
}
if not root then return end

if a.steps then
  -- the steps of this process only: a resumed run's earlier steps took no time here
  local per = r.seconds / math.max(r.steps_run, 1)
  print(("%d steps of batch %d in %.1f s: %.2f s a step, %.1f images/s; one epoch (%d steps) projects to %.1f hours"):format(
    r.steps_run, a.batch, r.seconds, per, a.batch / per, data:num_batches(), per * data:num_batches() / 3600))
end
if #sets > 0 then
  local _, results = evaluate()
  facet.report.save_verify(a.out, results)
  for _, x in ipairs(results) do print(("%-12s accuracy %.4f ± %.4f"):format(x.name, x.result.accuracy, x.result.std)) end
end
print("report: " .. facet.report.write({ a.out }, a.out))
