--- recipes/train.lua: train a face-recognition model on your own data (the
-- guide is docs/train-your-own.md). The data is a folder of aligned face
-- crops, one subfolder per identity, a list file ("path label" lines, labels
-- from 0) or an InsightFace RecordIO (.rec, or its prefix); any backbone of
-- facet.models and any head of facet.heads with its options; any number of
-- verification sets (--eval lfw=path/lfw.bin, repeated). Settings come from
-- the defaults, then a config file (--config run.lua: a Lua file returning a
-- table keyed like the options, "weight_decay" or "weight-decay"), then the
-- command line; the settings it ran with are written to OUT/config.lua, which
-- --config reads back. Checkpoints go to OUT/ckpt, the log and the report to OUT.
-- Usage: bin/facet run recipes/train.lua --data faces/ [--model mobilefacenet] [--head mv-am]
--          [--head-opt m=0.35 ...] [--eval lfw=lfw.bin ...] [--epochs 12] [--batch 128] [--out run/train]
--          [--optimizer sgd|adamw] [--schedule multistep|poly|cosine] [--warmup EPOCHS] [--clip NORM]
--          [--init weights] (arcface_torch's ViT settings: --optimizer adamw --lr 1e-3 --weight-decay 0.1
--          --schedule poly --warmup 1 --clip 5)
-- Data parallel (docs/distributed.md): mpirun -np 4 bin/facet run recipes/train.lua --dist ...
--   [--sync-bn] [--allreduce-dtype fp16]; --batch is the global batch; on several ranks the head
--   is sharded by class (each rank holds its block), --sample 0.1 makes it Partial FC; rank 0
--   alone prints and writes.
local facet = require "facet"
local argparse = require "argparse"
local recipe = require "facet.recipe"
local sys = require "facet.sys"

local int, num = recipe.integer, recipe.number

-- an argparse converter for one of a list of words
local function choice(flag, words)
  return function(v)
    for _, w in ipairs(words) do if w == v then return v end end
    return nil, ("%s must be one of %s, got '%s'"):format(flag, table.concat(words, ", "), v)
  end
end

-- Every setting once: name, help, default (nil: none), converter of a text value.
local SETTINGS = {
  { "data", "a folder of identity subfolders, a list file, or a .rec (or its prefix)" },
  { "model", "backbone: " .. table.concat(facet.models.names, ", "), "mobilefacenet",
    function(v)
      for _, n in ipairs(facet.models.names) do if n == v then return v end end
      return nil, ("--model must be one of %s, got '%s'"):format(table.concat(facet.models.names, ", "), v)
    end },
  { "depth", "iresnet depth (18, 34, 50, 100)", nil, int("--depth", 18, 200) },
  { "variant", "vit variant: t, s, b, l or arcface_torch's name (vit_t, vit_b_dp005_mask_005 ...; default t)" },
  { "emb", "embedding size", "512", int("--emb", 1, 65536) },
  { "size", "input size (aligned crops are 112 x 112)", "112", int("--size", 16, 4096) },
  { "head", "loss head: " .. table.concat(facet.heads.names(), ", "), "mv-am",
    function(v)
      for _, n in ipairs(facet.heads.names()) do if n == v then return v end end
      if facet.heads.ALIASES[v] then return facet.heads.ALIASES[v] end   -- arcface, cosface ...
      return nil, ("--head must be one of %s, got '%s'"):format(table.concat(facet.heads.names(), ", "), v)
    end },
  { "epochs", "epochs", "12", int("--epochs", 1, 100000) },
  { "batch", "batch size", "128", int("--batch", 1, 1000000) },
  { "lr", "base learning rate", "0.1", num("--lr", { gt = 0 }) },
  { "optimizer", "sgd (with momentum: the paper's) or adamw (arcface_torch's for ViTs, with --lr 1e-3 " ..
    "--weight-decay 0.1)", "sgd", choice("--optimizer", { "sgd", "adamw" }) },
  { "schedule", "multistep (the rate divided by 10 at 4/12, 8/12 and 10/12 of the epochs), poly ((1 - " ..
    "progress)^2 down to 0: arcface_torch's) or cosine", "multistep",
    choice("--schedule", { "multistep", "poly", "cosine" }) },
  { "warmup", "epochs of linear warm-up from 0 before the schedule (arcface_torch: 0 to 2)", "0",
    num("--warmup", { min = 0 }) },
  { "clip", "clip the global gradient norm to this (0: no clipping; arcface_torch clips at 5)", "0",
    num("--clip", { min = 0 }) },
  { "momentum", "SGD momentum", "0.9", num("--momentum", { min = 0, lt = 1 }) },
  { "weight_decay", "weight decay (not on biases and norms)", "5e-4", num("--weight-decay", { min = 0 }) },
  { "flip", "probability of a horizontal flip", "0.5", num("--flip", { min = 0, max = 1 }) },
  { "loader_threads", "decoding threads", "2", int("--loader-threads", 1, 4096) },
  { "eval_every", "steps between evaluations (and at the end)", "2000", int("--eval-every", 1) },
  { "checkpoint_every", "steps between checkpoints (and at each epoch's end)", "2000", int("--checkpoint-every", 1) },
  { "print_every", "steps between progress lines", "50", int("--print-every", 1) },
  { "steps", "stop after this many steps", nil, int("--steps", 1) },
  { "seed", "seed of the weights and the data order", "1", int("--seed", 0, 2 ^ 53) },
  { "sample", "Partial FC: the fraction of each class shard's negatives sampled a step (1: all)", "1",
    num("--sample", { gt = 0, max = 1 }) },
  { "precision", "fp32, bf16 or fp16: the backbone's activations (docs/mixed-precision.md)", "fp32",
    recipe.precision },
  { "init", "start from these weights (a checkpoint directory, .safetensors or .pth): the backbone's, and the " ..
    "head's when they hold head.weight (facet clean's OUT_init.safetensors)" },
  { "out", "output directory", "run/train" },
}
local BY_NAME = {}
for _, s in ipairs(SETTINGS) do BY_NAME[s[1]] = s end

local p = argparse("train", "Train a face-recognition model on your own aligned face crops (docs/train-your-own.md).")
for _, s in ipairs(SETTINGS) do
  local o = p:option("--" .. s[1]:gsub("_", "-"), s[2] .. (s[3] and (" (default: " .. s[3] .. ")") or ""))
  if s[4] then o:convert(s[4]) end
end
p:option("--head-opt", "a head option NAME=VALUE (m=0.35, s=32, t=0.2, h=fixed ...); repeat for more")
  :count("*"):argname("<name=value>")
p:option("--eval", "a verification set NAME=PATH.bin; repeat for more"):count("*"):argname("<name=path>")
p:option("--config", "a Lua file returning a table of settings (the command line overrides it)")
p:flag("--resume", "continue from OUT/ckpt")
p:flag("--cuda", "train on the GPU")
recipe.dist_options(p)
local cli = p:parse(arg)

-- "0.35" -> 0.35, "true" -> true, anything else stays a string
local function value_of(text)
  if text == "true" then return true elseif text == "false" then return false end
  return tonumber(text) or text
end

local function pairs_of(list, what)
  local out = {}
  for _, item in ipairs(list or {}) do
    local k, v = tostring(item):match("^([%w_]+)=(.+)$")
    if not k then p:error(("%s wants NAME=VALUE, got '%s'"):format(what, tostring(item))) end
    out[#out + 1] = { k, v }
  end
  return out
end

-- the config file: data only (no globals, no io or os)
local config = {}
if cli.config then
  local chunk, err = loadfile(cli.config)
  if not chunk then p:error(("--config %s: %s"):format(cli.config, err)) end
  local ok, t = pcall(setfenv(chunk, {}))
  if not ok or type(t) ~= "table" then
    p:error(("--config %s must return a table of settings%s"):format(cli.config, ok and "" or (": " .. tostring(t))))
  end
  config = t
end

-- settings: defaults < config < command line; config values pass the same checks as flags
local a = {}
for _, s in ipairs(SETTINGS) do
  local name = s[1]
  local v = cli[name]
  if v == nil then
    v = config[name]
    if v == nil then v = config[name:gsub("_", "-")] end
    if v ~= nil and s[4] then
      local c, err = s[4](tostring(v))
      if c == nil then p:error(("--config %s: %s"):format(cli.config, err)) end
      v = c
    end
  end
  if v == nil and s[3] then v = s[4] and assert(s[4](s[3])) or s[3] end
  a[name] = v
end
local KNOWN = { head_opt = true, eval = true }
for k in pairs(config) do
  local key = tostring(k):gsub("-", "_")
  if not BY_NAME[key] and not KNOWN[key] then p:error(("--config %s: unknown setting '%s'"):format(cli.config, k)) end
end
a.head_opt = {}
for k, v in pairs(type(config.head_opt) == "table" and config.head_opt or {}) do a.head_opt[k] = v end
for _, kv in ipairs(pairs_of(cli.head_opt, "--head-opt")) do a.head_opt[kv[1]] = value_of(kv[2]) end
a.eval = {}
for k, v in pairs(type(config.eval) == "table" and config.eval or {}) do a.eval[k] = v end
for _, kv in ipairs(pairs_of(cli.eval, "--eval")) do a.eval[kv[1]] = kv[2] end
if not a.data then p:error("--data is required (on the command line or in --config)") end
if a.depth and a.model ~= "iresnet" then p:error("--depth is for --model iresnet") end
if a.variant and a.model ~= "vit" then p:error("--variant is for --model vit") end

local ok_dist, dist = pcall(recipe.dist, cli)
if not ok_dist then p:error(dist) end
local root = facet.dist.rank() == 0
-- progress and warnings from rank 0 only
local function say(...) if root then print(...) end end
local function warn(text) if root then io.stderr:write(text) end end

-- the data: a .rec, a folder or a list
local function open_data(path)
  local rec = path:gsub("%.rec$", ""):gsub("%.idx$", "")
  if sys.exists(rec .. ".rec") then
    local r = facet.data.recordio(rec)
    local classes = r:num_identities()
    if classes == 0 then
      p:error(("--data %s.rec has no identity records (pack it with `bin/facet pack` to get them)"):format(rec))
    end
    return r, classes, r:num_images(), rec .. ".rec"
  end
  local mode = sys.exists(path) and require("lfs").attributes(path, "mode")
  if mode == "directory" then
    local src = facet.data.scan_folder(path)
    return src, #src.identities, #src.paths, path .. "/ (" .. #src.identities .. " identity folders)"
  elseif mode == "file" then
    local src = facet.data.read_list(path)
    local lo, hi = math.huge, -1
    for _, l in ipairs(src.labels) do lo, hi = math.min(lo, l), math.max(hi, l) end
    if lo > 0 then
      warn(("train: the labels of %s start at %d, not 0: classes 0-%d get no images\n"):format(path, lo,
        lo - 1))
    end
    return src, hi + 1, #src.paths, path
  end
  p:error(("--data %s is neither a folder, a list file nor a .rec"):format(path))
end

local source, classes, images, what = open_data(a.data)
-- crops of another size are resized, but faces must be detected and aligned first
if source.paths then
  local f = assert(io.open(source.paths[1], "rb"))
  local info = facet.data.image_info(f:read("*a"))
  f:close()
  if info.width ~= a.size or info.height ~= a.size then
    warn(("train: %s is %dx%d, resized to %dx%d; faces must be detected and aligned first " ..
      "(InsightFace's five-point alignment, docs/train-your-own.md)\n"):format(source.paths[1], info.width,
      info.height, a.size, a.size))
  end
end

assert(sys.mkdir_p(a.out))
-- the settings this run used, in a form --config reads back
local function lua_value(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "table" then
    local keys, parts = {}, {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = ("[%q] = %s"):format(k, lua_value(v[k])) end
    return "{ " .. table.concat(parts, ", ") .. " }"
  end
  return tostring(v)
end
local lines = { ("-- recipes/train.lua settings, facet %s, %s"):format(facet.version, os.date("!%Y-%m-%d %H:%M UTC")),
  "return {" }
local names = {}
for k in pairs(a) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do lines[#lines + 1] = ("  %s = %s,"):format(k, lua_value(a[k])) end
lines[#lines + 1] = "}"
if root then assert(sys.write_atomic(a.out .. "/config.lua", table.concat(lines, "\n") .. "\n")) end

facet.manual_seed(a.seed)
local device = cli.cuda and "cuda" or "cpu"
local net = facet.models.build(a.model, { emb = a.emb, size = a.size, depth = a.depth, variant = a.variant,
  in_channels = a.model == "convnet" and 3 or nil })   -- the loader gives RGB
local head_opts = { classes = classes, dim = a.emb, device = device, seed = a.seed }
if facet.dist.size() > 1 then head_opts.shard = true end   -- each rank holds its block of the classes
if a.sample < 1 then head_opts.sample = a.sample end     -- Partial FC
for k, v in pairs(a.head_opt) do head_opts[k] = v end
local head = facet.heads.new(a.head, head_opts)
if cli.cuda then net:cuda() end
if a.init then
  -- the backbone's tensors, then the head's (head.*) when there are any
  local ok_w, w = pcall(require("facet.pth").load_any, a.init, "--init", true)     -- the head's tensors too
  if not ok_w then p:error(("--init %s: %s"):format(a.init, tostring(w))) end
  local mine, theirs = {}, {}
  for k, v in pairs(w) do
    local hk = k:match("^head%.(.+)$")
    if hk then theirs[hk] = v else mine[k] = v end
  end
  net:load_state(mine)
  if theirs.weight then
    -- the full head's shapes (a sharded head's too, without gathering it); the
    -- weight and bias must be there, a learned alpha and the adaptive heads'
    -- state (CurricularFace's t ...) are taken when they are
    local state = head:state_tensors()
    local want = { weight = { { head.classes * (head.subcenters or 1), head.dim }, true } }
    if head.bias then want.bias = { { head.classes }, true } end
    if head.alpha then want.alpha = { { 1 }, false, head.alpha } end
    for k, v in pairs(state) do want[k] = { v:shape(), false, v } end
    local pick, kept = {}, {}
    for k, e in pairs(want) do
      local t = theirs[k]
      if t == nil then
        if e[2] then p:error(("--init %s: no head.%s for the %s head"):format(a.init, k, a.head)) end
        pick[k] = e[3]               -- the head's own (a sharded head's load takes every entry)
        kept[#kept + 1] = k
      elseif table.concat(t:shape(), "x") ~= table.concat(e[1], "x") then
        p:error(("--init %s: head.%s is %s, the head's %s (classes, sub-centres and --emb must match)"):format(a.init,
          k, table.concat(t:shape(), "x"), table.concat(e[1], "x")))
      else
        pick[k] = t
      end
    end
    if head.load_state_dict then head:load_state_dict(pick)      -- a sharded head takes its rows
    else
      for k, t in pairs(pick) do
        local dst = k == "weight" and head.weight or k == "bias" and head.bias or k == "alpha" and head.alpha or state[k]
        if not rawequal(dst, t) then dst:copy(t) end
      end
    end
    if head.weight_changed then head:weight_changed(false) end
    table.sort(kept)
    if #kept > 0 then say(("--init: %s has no head.%s; the head keeps its own"):format(a.init, table.concat(kept, ", head."))) end
  end
  say(("initialised from %s (%s)"):format(a.init, theirs.weight and "backbone and head" or "backbone"))
end
local data = facet.data.loader { source = source, size = { a.size, a.size }, batch_size = a.batch,
  threads = a.loader_threads, flip = a.flip, seed = a.seed }
local opt
if a.optimizer == "adamw" then
  opt = facet.optim.adamw({ net, head }, { lr = a.lr, weight_decay = a.weight_decay, decay_bias_norm = false })
else
  opt = facet.optim.sgd({ net, head }, { lr = a.lr, momentum = a.momentum, weight_decay = a.weight_decay,
    decay_bias_norm = false })
end
local e = a.epochs
local S = facet.optim.schedule
local schedule
if a.schedule == "poly" then schedule = S.poly { lr = a.lr, epochs = e, power = 2 }
elseif a.schedule == "cosine" then schedule = S.cosine { lr = a.lr, epochs = e }
else schedule = S.multistep { lr = a.lr, milestones = { e * 4 / 12, e * 8 / 12, e * 10 / 12 } } end
if a.warmup > 0 then
  if a.warmup >= e then p:error(("--warmup %g must be shorter than --epochs %d"):format(a.warmup, e)) end
  schedule = S.warmup(schedule, { epochs = a.warmup })
end
say(("%s: %d images, %d identities; %s (%d parameters) + %s; %d batches of %d an epoch, %d epochs%s"):format(what,
  images, classes, a.model, net:count_parameters(), a.head, data:num_batches(), a.batch, a.epochs,
  dist.dist and (", %d ranks"):format(facet.dist.size()) or ""))

-- the verification sets, decoded once
local sets = {}
local set_names = {}
for name in pairs(a.eval) do set_names[#set_names + 1] = name end
table.sort(set_names)
for _, name in ipairs(set_names) do
  sets[#sets + 1] = { name = name, set = facet.data.load_bin(a.eval[name], { size = { a.size, a.size } }) }
end
local function evaluate(st)
  local out, results = {}, {}
  for _, s in ipairs(sets) do
    local r = facet.eval.verify_set(net, s.set, { device = device })
    out[s.name] = r.accuracy
    results[#results + 1] = { name = s.name, result = r }
    -- during training facet.train prints the accuracies; the final evaluation prints them with their std
    if not st then print(("  eval %-10s accuracy %.4f ± %.4f"):format(s.name, r.accuracy, r.std)) end
    for _, w in ipairs(r.warnings or {}) do io.stderr:write(("  warning: %s: %s\n"):format(s.name, w)) end
  end
  return out, results
end

local r = facet.train {
  model = net, head = head, data = data, optimizer = opt, schedule = schedule, epochs = a.epochs, log = a.out,
  checkpoint = a.out .. "/ckpt", checkpoint_every = a.checkpoint_every,
  resume = cli.resume and (a.out .. "/ckpt") or nil,
  eval = #sets > 0 and function(st) return (evaluate(st)) end or nil, eval_every = a.eval_every,
  stop_after = a.steps, print_every = a.print_every, precision = a.precision, clip = a.clip > 0 and a.clip or nil,
  dist = dist.dist, sync_bn = dist.sync_bn, allreduce_dtype = dist.allreduce_dtype,
}
if not root then return end
print(("trained to step %d (%d steps here, %.1f s, %.1f images/s)%s"):format(r.steps, r.steps_run, r.seconds,
  r.steps_run * a.batch / r.seconds, r.skipped and r.skipped > 0 and (", skipped " .. r.skipped) or ""))
if #sets > 0 then
  local _, results = evaluate()
  facet.report.save_verify(a.out, results)
end
print("settings: " .. a.out .. "/config.lua")
print("report: " .. facet.report.write({ a.out }, a.out))
