--- recipes/megaface.lua: MegaFace Challenge 1 as the MV-Softmax paper reports
-- it. Identification: every FaceScrub probe is searched among the
-- distractors plus one positive of its identity at a time (the probe itself
-- excluded); rank-1 and the CMC to --max-rank. Verification: TAR at FAR 1e-6
-- over the probes' same-identity pairs against every probe x distractor pair
-- (3.5e9 at a million distractors), streamed with a running top-k.
-- Inputs, one of:
--   --probes P.npy --labels L.npy --distractors D.npy   embedding files (float32 N x d, integer
--                                                       N, float32 M x d), e.g. from any model
--   --checkpoint CKPT --probe-dir ROOT --distractor-dir ROOT   image sets (ROOT/<identity>/<image>,
--                                                       aligned crops) embedded with the checkpoint
--                                                       (--model, --depth, --emb, --size; flip test)
--   --synthetic M                                       random unit embeddings with planted positives:
--                                                       3,530 probes of 80 identities, M distractors
-- --max-rank 10, --verify 0 skips the verification, --out DIR writes
-- identify.json and verify.json (in a run directory, `bin/facet report RUN` plots them).
-- Usage: bin/facet run recipes/megaface.lua --probes P.npy --labels L.npy --distractors D.npy [--out run/megaface]
local facet = require "facet"
local argparse = require "argparse"
local check = require "facet.check"

local p = argparse("megaface", "MegaFace Challenge 1: identification with a million distractors, and TAR at FAR 1e-6")
p:option("--probes", "probe embeddings (.npy, float32 N x d)")
p:option("--labels", "probe identities (.npy, integer N)")
p:option("--distractors", "distractor embeddings (.npy, float32 M x d)")
p:option("--checkpoint", "checkpoint directory or model .safetensors (with --probe-dir and --distractor-dir)")
p:option("--probe-dir", "probe images: ROOT/<identity>/<image>")
p:option("--distractor-dir", "distractor images: ROOT/<folder>/<image>")
p:option("--model", "backbone for --checkpoint", "iresnet")
p:option("--depth", "IResNet depth (default 50)"):convert(check.flag("--depth", { integer = true, min = 1 }))
p:option("--emb", "embedding size", "512"):convert(check.flag("--emb", { integer = true, min = 1 }))
p:option("--size", "input size (square)", "112"):convert(check.flag("--size", { integer = true, min = 1 }))
p:option("--synthetic", "random embeddings with this many distractors"):convert(check.flag("--synthetic", { integer = true, min = 1 }))
p:option("--max-rank", "CMC up to this rank", "10"):convert(check.flag("--max-rank", { integer = true, min = 1 }))
p:option("--verify", "1: also TAR at FAR 1e-6 (a second pass over the distractors)", "1"):choices { "0", "1" }
p:option("--out", "write identify.json and verify.json here")
local a = p:parse(arg)

local probes, labels, distractors
if a.synthetic then
  local P, IDS, D = 3530, 80, 512
  local centres = facet.randn({ IDS, D }, { seed = 1 }):l2_normalize()
  labels = {}
  for i = 1, P do labels[i] = (i - 1) % IDS + 1 end
  probes = centres:index_select(facet.tensor(labels, { dtype = "int32" }))
  probes = probes:add_(facet.randn({ P, D }, { seed = 2 }):mul_(2 / math.sqrt(D))):l2_normalize()
  distractors = facet.randn({ a.synthetic, D }, { seed = 3 }):l2_normalize()
elseif a.probes then
  if not (a.labels and a.distractors) then p:error("--probes needs --labels and --distractors") end
  probes, labels, distractors = facet.load_npy(a.probes), facet.load_npy(a.labels), facet.load_npy(a.distractors)
elseif a.checkpoint then
  if not (a.probe_dir and a.distractor_dir) then p:error("--checkpoint needs --probe-dir and --distractor-dir") end
  local model = require("facet.cli").load_model(facet, a)       -- as `bin/facet eval` builds it
  local set = facet.data.scan_folder(a.probe_dir)
  local function embed(paths) return facet.eval.features(model, paths, { size = { a.size, a.size } }) end
  probes, labels = embed(set.paths), set.labels
  distractors = embed(facet.data.scan_folder(a.distractor_dir).paths)
else
  p:error("give --probes/--labels/--distractors, --checkpoint with image folders, or --synthetic M")
end

local t0 = facet.clock()
local id = facet.eval.identify(probes, labels, distractors, nil, { positives = probes, max_rank = a.max_rank })
io.stdout:write(("megaface identification: %d probes, %d distractors, %d trials, %.1f s\n"):format(probes:size(1),
  distractors:size(1), id.trials, facet.clock() - t0))
local cmc = {}
for k = 1, #id.cmc do cmc[#cmc + 1] = ("%d:%.4f"):format(k, id.cmc[k]) end
io.stdout:write(("rank-1 %.4f   CMC %s\n"):format(id.rank1, table.concat(cmc, " ")))
local v
if a.verify == "1" then
  t0 = facet.clock()
  v = facet.eval.verify_all(probes, labels, { distractors = distractors, fars = { 1e-6, 1e-5, 1e-4, 1e-3 } })
  local row = {}
  for _, f in ipairs { 1e-6, 1e-5, 1e-4, 1e-3 } do
    row[#row + 1] = ("TAR@FAR=%g %s"):format(f, v.tar_at_far[f] and ("%.4f"):format(v.tar_at_far[f]) or "-")
  end
  io.stdout:write(("megaface verification: %d genuine, %d impostor pairs, %.1f s\n%s\n"):format(v.genuine, v.impostors,
    facet.clock() - t0, table.concat(row, "   ")))
end
if a.out then
  assert(facet.sys.mkdir_p(a.out))
  facet.report.save_identify(a.out, { { name = "megaface", result = id } })
  if v then facet.report.save_verify(a.out, { { name = "megaface", result = v } }) end
  io.stdout:write("wrote ", a.out, "/identify.json", v and " and verify.json" or "", "\n")
end
