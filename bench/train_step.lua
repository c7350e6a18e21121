--- bench/train_step.lua: images/s of a whole training step (forward, backward
-- and SGD with momentum, an am head over 1000 classes); the achieved GFLOP/s
-- of the step's convolutions and linear layers (3x the forward FLOPs: forward,
-- grad input, grad weight) next to the device's GEMM rate measured in the same
-- run; and the same models in PyTorch (bench/torch_compare.py) with the ratio
-- facet / PyTorch.
--   CPU (default): MobileFaceNet and IResNet-18 at 112 x 112, batch 32, the
--   small convnet at 28 x 28, batch 128 (vit_t, arcface_torch's ViT-T: batch
--   8 on the CPU, with its token masking and drop path; its step GFLOP count
--   the convolution and linear layers, not the attention's batched GEMMs); best of --steps after one warm-up
--   step; OpenBLAS GEMM (2048^3); Debian's python3-torch.
--   --device cuda: IResNet-50 and MobileFaceNet at 112 x 112, batch 128;
--   each step starts by copying the batch from host memory into device buffers
--   (facet.data.to_device, as facet.train does); --warmup steps, then --steps
--   steps timed as one region between facet.cuda.synchronize() calls (mean
--   time per step); cuBLAS GEMM rate (4096^3) of each precision; PyTorch with CUDA on the same
--   card (cudnn.benchmark = True, TF32 off, the same copy per step).
--   --tf32 1: facet.cuda.set_tf32(true) for facet's float32 GEMMs and
--   allow_tf32 for PyTorch's matmuls and cuDNN (PyTorch's own default for
--   cuDNN convolutions), the GEMM rate included.
-- --profile 1 then runs --steps more steps with every layer's forward and
-- backward timed (on the GPU by CUDA event marks around each call, read after
-- the step, with no synchronisation per call: facet.cuda.mark; on the CPU by
-- the clock), and prints where a step's time goes
-- by layer type (convolutions, depthwise convolutions, BN, activations/PReLU,
-- pools, linear/FC, other layers), the head's forward and backward, the
-- optimizer (step_zero_grad: the update, zeroing each gradient in the same
-- pass), the data copy, and the rest (residual adds, containers, Lua) as shares of the profiled step, which is slower than the
-- plain one (one synchronisation per layer call).
-- --precision fp32|fp16|bf16 (a comma list runs each in turn): the step as
-- facet.train{ precision = } runs it (bench/lib/common.lua's train_step:
-- float32 master weights, the model's activations in float16 / bfloat16, the
-- head in float32, a dynamic loss scaler for fp16); PyTorch's figure is then
-- PyTorch AMP with the same model, batch and head (torch.autocast around the
-- model, the head's loss in float32 outside it, a GradScaler for fp16, none
-- for bf16). Printed: each precision's facet / PyTorch ratio and, with fp32
-- in the list, each 16-bit precision's img/s over facet's own fp32 in the run.
-- A model and precision that fails prints why and the bench goes on with the
-- others (PyTorch included), then exits with status 1.
-- Lines starting with "summary:" are the key figures (tools/gpu_check.sh copies them).
-- Usage: bin/facet run bench/train_step.lua [--device cpu|cuda] [--models mobilefacenet,iresnet18,iresnet50,convnet,vit_t]
--          [--precision fp32,fp16,bf16] [--batch N] [--size N] [--steps N] [--warmup N] [--profile 0|1]
--          [--torch 0|1] [--tf32 0|1]  (--help: the options)
-- FACET_TORCH_PYTHON names the Python with PyTorch (default: /usr/bin/python3 on
-- the CPU, python3 from the PATH with --device cuda).
local facet = require "facet"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"
io.stdout:setvbuf("line")   -- a bench stopped by a timeout keeps the lines it printed

local NAME = "bench/train_step.lua"
local MODEL_NAMES = { "mobilefacenet", "iresnet18", "iresnet50", "convnet", "vit_t" }
local parser = common.parser(NAME, "images/s and GFLOP/s of a whole training step (forward, backward, SGD; an am " ..
  "head over 1000 classes) next to the GEMM rate, and the same models in PyTorch.")
common.device(parser)
common.names(parser, "--models", "models, comma-separated (default: mobilefacenet,iresnet18,convnet; " ..
  "with --device cuda iresnet50,mobilefacenet)", nil, MODEL_NAMES)
common.names(parser, "--precision", "fp32, fp16 or bf16 as facet.train{ precision = } runs them, " ..
  "comma-separated (default: fp32)", nil, common.PRECISIONS)
common.integer(parser, "--batch", "batch size (default: 32, convnet 128; 128 with --device cuda)", nil, 1)
common.integer(parser, "--size", "image size (default: 112; the convnet's is always 28)", nil, 1)
common.integer(parser, "--steps", "timed steps (default: 5; 10 with --device cuda)", nil, 1)
common.integer(parser, "--warmup", "untimed steps first (default: 1; 3 with --device cuda)", nil, 0)
common.switch(parser, "--profile", "then where a step's time goes, by layer type", 0)
common.switch(parser, "--torch", "the same models in PyTorch (bench/torch_compare.py)", 1)
common.switch(parser, "--tf32", "TF32 tensor cores for float32 GEMMs, facet's and PyTorch's (CUDA)", 0)
local o = parser:parse(arg)
facet.cuda.set_tf32(o.tf32 ~= 0)
-- a precision as printed: fp32 with TF32 on is "fp32-tf32"
local function label(prec) return prec == "fp32" and o.tf32 ~= 0 and "fp32-tf32" or prec end

local dev = o.device
local gpu = common.check_device(NAME, dev)
o.steps = o.steps or (gpu and 10 or 5)
o.warmup = o.warmup or (gpu and 3 or 1)
o.models = o.models or (gpu and { "iresnet50", "mobilefacenet" } or { "mobilefacenet", "iresnet18", "convnet" })
o.precision = o.precision or { "fp32" }
do   -- each precision once, in the order given
  local seen, list = {}, {}
  for _, p in ipairs(o.precision) do
    if not seen[p] then seen[p], list[#list + 1] = true, p end
  end
  o.precision = list
end
local DTYPE = { fp32 = "float32", fp16 = "float16", bf16 = "bfloat16" }

local clock = facet.clock
local sync = gpu and facet.cuda.synchronize or function() end

-- the device's GEMM rate, per precision (the 16-bit ones on the GPU only: the
-- CPU widens them to float32, docs/mixed-precision.md)
local n = gpu and 4096 or 2048
local gemm = {}
local function gemm_rate(prec)
  local opts = { device = dev, dtype = DTYPE[prec] }
  local a = facet.randn({ n, n }, { seed = 1, device = dev, dtype = opts.dtype })
  local b = facet.randn({ n, n }, { seed = 2, device = dev, dtype = opts.dtype })
  local c = facet.empty({ n, n }, opts)
  a:matmul(b, { out = c })
  sync()
  local reps = gpu and 10 or 5
  local t0 = clock()
  for _ = 1, reps do a:matmul(b, { out = c }) end
  sync()
  return 2 * n ^ 3 * reps / (clock() - t0) / 1e9
end
local failures = {}
for _, prec in ipairs { "fp32", unpack(o.precision) } do
  if not gemm[prec] and (prec == "fp32" or gpu) then
    local ok, rate = pcall(gemm_rate, prec)
    if ok then gemm[prec] = rate
    else
      print(("summary: GEMM %s %d^3 on %s: FAILED: %s"):format(prec, n, dev, tostring(rate)))
      failures[#failures + 1] = "GEMM " .. prec
    end
  end
end
collectgarbage()

local MODELS = {
  mobilefacenet = { build = function(s) return facet.models.mobilefacenet { emb = 512, size = s } end, batch = 32,
    size = 112, ch = 3, emb = 512 },
  iresnet18 = { build = function(s) return facet.models.iresnet { depth = 18, emb = 512, size = s } end, batch = 32,
    size = 112, ch = 3, emb = 512 },
  iresnet50 = { build = function(s) return facet.models.iresnet { depth = 50, emb = 512, size = s } end, batch = 32,
    size = 112, ch = 3, emb = 512 },
  convnet = { build = function() return facet.models.convnet { emb = 128 } end, batch = 128, size = 28, ch = 1,
    emb = 128, fixed_size = true },
  vit_t = { build = function(s) return facet.models.vit { variant = "t", emb = 512, size = s } end, batch = 8,
    size = 112, ch = 3, emb = 512 },
}

local rates = {}
for _, prec in ipairs { "fp32", unpack(o.precision) } do
  if gemm[prec] and not rates[prec] then
    rates[prec] = true
    rates[#rates + 1] = ("%s %.1f GFLOP/s"):format(label(prec), gemm[prec])
  end
end
if gpu then
  print(("CUDA device (1 of %d), %s; cuBLAS GEMM %d^3: %s; %d warm-up steps, then the mean of %d " ..
    "steps timed between synchronize() calls"):format(facet.cuda.device_count(), table.concat(o.precision, ", "), n,
    table.concat(rates, ", "), o.warmup, o.steps))
else
  print(("%d threads, OpenBLAS %s; GEMM %d^3: %.1f GFLOP/s; %s"):format(facet.get_threads(), facet.blas_core(), n,
    gemm.fp32 or 0, table.concat(o.precision, ", ")))
  if common.blas_note() then print(common.blas_note()) end
end

-- ---- the profile: layer types ------------------------------------------------------

local CATS = { "data copy", "casts", "conv", "conv depthwise", "BN", "act/PReLU", "pool", "linear/FC",
  "other layers", "head forward", "head backward", "loss scaler", "optimizer", "residual adds/containers/Lua" }

local function category(m)
  local name = m.__name or "?"
  if name == "Conv2d" then return (m.groups or 1) > 1 and "conv depthwise" or "conv" end
  if name:match("^BatchNorm") then return "BN" end
  if name == "PReLU" or name == "ReLU" or name == "Sigmoid" or name == "Tanh" then return "act/PReLU" end
  if name:match("Pool") then return "pool" end
  if name == "Linear" then return "linear/FC" end
  return "other layers"
end

-- P.time(cat, fn, ...) runs fn(...) and adds its time to acc[cat]; P.flush()
-- after each step. On the GPU the time is the GPU's, between two timing marks
-- recorded around the call (no synchronisation per call: the marks are read
-- after the step, from a pool reused every step); on the CPU, the clock.
local function profiler(acc)
  local P = {}
  if not gpu then
    function P.time(cat, fn, ...)
      local t = clock()
      local r1, r2 = fn(...)
      acc[cat] = acc[cat] + (clock() - t)
      return r1, r2
    end
    function P.flush() end
    return P
  end
  local pool, used, cats = {}, 0, {}
  local function mark()
    used = used + 1
    local m = pool[used]
    if not m then
      m = facet.cuda.mark()
      pool[used] = m
    end
    return m:record()
  end
  function P.time(cat, fn, ...)
    mark()
    local r1, r2 = fn(...)
    mark()
    cats[used / 2] = cat
    return r1, r2
  end
  function P.flush()
    for i = 1, used / 2 do
      acc[cats[i]] = acc[cats[i]] + facet.cuda.elapsed(pool[2 * i - 1], pool[2 * i]) / 1e3
    end
    used = 0
  end
  return P
end

-- times the forward and backward of every leaf module of net through P,
-- adding to their category; returns the function that undoes it
local function instrument(net, P)
  local undo = {}
  local function visit(m)
    local kids = m:children()
    if #kids > 0 then
      for _, k in ipairs(kids) do visit(k) end
      return
    end
    local cat = category(m)
    local own_f, own_b = rawget(m, "forward"), rawget(m, "backward")
    local f, bw = m.forward, m.backward
    m.forward = function(self, ...) return P.time(cat, f, self, ...) end
    m.backward = function(self, ...) return P.time(cat, bw, self, ...) end
    undo[#undo + 1] = function() m.forward, m.backward = own_f, own_b end
  end
  visit(net)
  return function() for _, u in ipairs(undo) do u() end end
end

-- ---- the models ------------------------------------------------------------------------

local function key(name, prec) return name .. " " .. prec end

print(("%-14s %5s %6s %5s %10s %9s %12s %12s %8s"):format("model", "prec", "batch", "size", "img/s", "ms/step",
  "step GFLOP", "GFLOP/s", "of GEMM"))
local results, profiles, order, names = {}, {}, {}, {}

-- one model in one precision: the timed steps, then (--profile 1) the profiled ones
local function run(name, spec, batch, size, prec)
  facet.manual_seed(1)
  local net = spec.build(size)
  -- FLOPs are linear in the batch: count them on one image, on the CPU
  local fwd = facet.nn.summary(net, { 1, spec.ch, size, size }, { print = false }).flops * batch
  if gpu then net:to(dev) end
  local head = facet.heads.new("am", { classes = 1000, dim = spec.emb, seed = 1, device = dev })
  local opt = facet.optim.sgd({ net, head }, { lr = 0.01, momentum = 0.9, weight_decay = 5e-4 })
  local x_host = facet.randn({ batch, spec.ch, size, size }, { seed = 3 })
  local labels = {}
  for k = 1, batch do labels[k] = (k - 1) % 1000 end
  local y_host = facet.tensor(labels, { dtype = "int64" })
  -- on the GPU each step copies the batch in, as facet.train does (facet.data.to_device)
  local fetch
  if gpu then
    local data = facet.data.to_device({ num_batches = function() return 1 end,
      batch = function() return x_host, y_host end }, dev)
    fetch = function() return data:batch(0, 1) end
  else
    fetch = function() return x_host, y_host end
  end
  local step, scaler = common.train_step(net, head, opt, fetch, { precision = prec })
  for _ = 1, o.warmup do step() end
  local per_step
  if gpu then
    sync()
    local s = clock()
    for _ = 1, o.steps do step() end
    sync()
    per_step = (clock() - s) / o.steps
  else
    per_step = math.huge
    for _ = 1, o.steps do
      local s = clock()
      step()
      per_step = math.min(per_step, clock() - s)
    end
  end
  local ips = batch / per_step
  local rate = 3 * fwd / per_step / 1e9
  local k = key(name, prec)
  results[k] = { ips = ips, ms = per_step * 1e3, batch = batch, size = size, name = name, prec = prec,
    skipped = scaler and scaler.skipped, scale = scaler and scaler.scale }
  order[#order + 1] = k
  print(("%-14s %5s %6d %5d %10.1f %9.2f %12.2f %12.1f %8s"):format(name, prec, batch, size, ips, per_step * 1e3,
    3 * fwd / 1e9, rate, gemm[prec] and ("%.0f%%"):format(100 * rate / gemm[prec]) or "-"))
  if scaler then
    print(("%-14s %5s loss scale %g after %d steps, %d skipped for an fp16 overflow"):format("", prec, scaler.scale,
      scaler.steps, scaler.skipped))
  end

  if o.profile ~= 0 then
    local acc = {}
    for _, c in ipairs(CATS) do acc[c] = 0 end
    local P = profiler(acc)
    local undo = instrument(net, P)
    local profiled_step = common.train_step(net, head, opt, fetch, { precision = prec, timed = P.time })
    local ok, err = pcall(function()
      profiled_step()                         -- one warm-up step through the wrappers
      P.flush()
      for _, c in ipairs(CATS) do acc[c] = 0 end
      sync()
      local s = clock()
      for _ = 1, o.steps do
        profiled_step()
        P.flush()
      end
      sync()
      return clock() - s
    end)
    undo()
    if not ok then error(err, 0) end
    local total = err
    local known = 0
    for _, c in ipairs(CATS) do known = known + acc[c] end
    acc[CATS[#CATS]] = math.max(0, total - known)
    profiles[k] = { acc = acc, total = total / o.steps }
  end
end

for _, name in ipairs(o.models) do
  names[#names + 1] = name
  local spec = MODELS[name]
  local batch = o.batch or (gpu and 128 or spec.batch)
  local size = spec.fixed_size and spec.size or (o.size or spec.size)
  for _, prec in ipairs(o.precision) do
    local ok, err = pcall(run, name, spec, batch, size, prec)
    if not ok then
      -- the other models and precisions (and PyTorch) still run; the exit status says it
      print(("summary: %s %s %s: FAILED: %s"):format(name, dev, label(prec), tostring(err)))
      failures[#failures + 1] = name .. " " .. prec
    end
    collectgarbage()
    collectgarbage()
    if gpu then facet.cuda.empty_cache() end
  end
end

for _, k in ipairs(order) do
  local p, r = profiles[k], results[k]
  if p then
    print(("\n%s %s, profiled (%s): %.2f ms/step with %s (plain: %.2f ms/step)")
      :format(r.name, r.prec, gpu and "cuda" or "cpu", p.total * 1e3,
        gpu and "GPU timing marks around every layer call" or "the clock around every layer call", r.ms))
    print(("%-32s %10s %7s"):format("where the time goes", "ms/step", "share"))
    local parts = {}
    for _, c in ipairs(CATS) do
      local ms = p.acc[c] / o.steps * 1e3
      if ms > 0 then
        local share = 100 * p.acc[c] / o.steps / p.total
        print(("%-32s %10.2f %6.1f%%"):format(c, ms, share))
        if share >= 0.5 then parts[#parts + 1] = ("%s %.0f%%"):format(c, share) end
      end
    end
    print(("summary: %s %s %s profile (shares of a %.1f ms profiled step): %s"):format(r.name, dev, label(r.prec),
      p.total * 1e3, table.concat(parts, ", ")))
  end
end

-- ---- PyTorch ---------------------------------------------------------------------------

-- what PyTorch's figure of a precision is
local TORCH_KIND = { fp32 = label("fp32"), fp16 = "AMP fp16", bf16 = "AMP bf16" }
local torch_ips = {}
if o.torch ~= 0 then
  if gpu then facet.cuda.empty_cache() end      -- the card's memory to the PyTorch process
  local python = os.getenv("FACET_TORCH_PYTHON") or (gpu and "python3" or "/usr/bin/python3")
  local extra = ""
  if o.batch then extra = extra .. " --batch " .. o.batch end
  if o.size then extra = extra .. " --size " .. o.size end
  local cmd = (common.TORCH_ENV .. " %s bench/torch_compare.py --device %s --threads %d --steps %d --warmup %d " ..
    "--models %s --precision %s --tf32 %d%s"):format(python, dev, facet.get_threads(), o.steps, o.warmup,
    table.concat(names, ","), table.concat(o.precision, ","), o.tf32, extra)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  print(("\nPyTorch (bench/torch_compare.py), same models, batch, head, %s:"):format(gpu and "card" or "threads"))
  local other = {}
  for line in out:gmatch("[^\n]+") do
    local m, prec, ips = line:match("^([%w_]+) (%w+) ([%d%.]+)$")
    if line:match("^#") then print(line)
    elseif m and results[key(m, prec)] then torch_ips[key(m, prec)] = tonumber(ips)
    else other[#other + 1] = line end
  end
  -- an error of the Python side (its last lines)
  for i = math.max(1, #other - 2), #other do print("  " .. other[i]) end
  local any = false
  for _, k in ipairs(order) do
    local t, r = torch_ips[k], results[k]
    if t then
      any = true
      print(("%-14s %-8s %10.1f img/s   facet / PyTorch = %.2f"):format(r.name, TORCH_KIND[r.prec], t, r.ips / t))
    end
  end
  if not any then print("(no PyTorch figures: " .. out:gsub("\n", " "):sub(1, 300) .. ")") end
end

-- each 16-bit precision against facet's own fp32 of the same model in this run
local function over_fp32(r)
  local base = r.prec ~= "fp32" and results[key(r.name, "fp32")]
  return base and r.ips / base.ips
end
local header = false
for _, k in ipairs(order) do
  local r = results[k]
  local x = over_fp32(r)
  if x then
    if not header then
      print("\nfacet's 16-bit steps against its own fp32 (img/s over fp32 img/s, this run):")
      header = true
    end
    local t, t32 = torch_ips[k], torch_ips[key(r.name, "fp32")]
    print(("%-14s %5s %6.2fx%s"):format(r.name, r.prec, x,
      (t and t32) and ("   (PyTorch %s over fp32: %.2fx)"):format(TORCH_KIND[r.prec], t / t32) or ""))
  end
end

for _, k in ipairs(order) do
  local r, t = results[k], torch_ips[k]
  local x = over_fp32(r)
  print(("summary: %s %s %s batch %d %dx%d: facet %.1f img/s (%.2f ms/step)%s%s%s"):format(r.name, dev, label(r.prec),
    r.batch, r.size, r.size, r.ips, r.ms, x and (", %.2fx facet fp32"):format(x) or "",
    r.skipped and (", %d fp16 overflow steps skipped"):format(r.skipped) or "",
    t and (", PyTorch %s %.1f img/s, facet/PyTorch = %.2f"):format(TORCH_KIND[r.prec], t, r.ips / t) or
    (o.torch ~= 0 and ", no PyTorch figure" or "")))
end

if #failures > 0 then
  io.stderr:write(("%s: failed: %s\n"):format(NAME, table.concat(failures, ", ")))
  os.exit(1)
end
