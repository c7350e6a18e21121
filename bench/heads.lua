--- bench/heads.lua: forward+backward of every head at the paper's scale
-- (B = 128, dim = 512, K = 72,690 classes) against the head's three GEMMs
-- (logits, dL/dx, dL/dW) timed alone in the same run on the same buffers.
-- Each cosine head is timed twice: unfused (each forward measures the norms
-- of W's rows and each backward takes the radial part out of dL/dW: two
-- passes over W) and fused (fused = true: those passes belong to the
-- optimizer's update, so forward+backward is the GEMMs and the head's row
-- passes). Prints ms per step both ways, the head's own time (the fused step,
-- or the unfused one for heads without fusion, minus the three GEMMs: norms of
-- x, the row passes, finish, the small vectors), and for that same step
-- GFLOP/s (the GEMMs' flops over the step time), the ratio step / GEMMs, the head's memory (parameters,
-- gradients and buffers) and the process's peak RSS. Then a whole training step of each cosine
-- head through facet.optim.sgd, as facet.train runs it (zero_grad, forward,
-- backward, step), unfused and fused (fused = true: the radial correction and
-- the W norms in the optimizer's single pass over W), against the GEMMs plus
-- one plain SGD pass and one zeroing of dL/dW. A scripted copy of the adaptive
-- h is timed against the built-in one.
-- With --torch 1 it also runs bench/heads_torch.py (a straightforward PyTorch
-- version of the heads: normalise W, matmul, margin by scatter, cross-entropy,
-- autograd) and prints facet's speed-up.
-- --device cuda: everything on the GPU (the GEMMs are cuBLAS SGEMMs), each
-- time the best of --reps runs between facet.cuda.synchronize() calls; the
-- head's device memory is the caching allocator's bytes held during its
-- forward+backward (facet.cuda.memory_stats(): the most allocated_bytes seen
-- after the forward and after the backward, or peak_allocated_bytes when the
-- head raised the process's peak, less what was held before the head was
-- made; the cache is emptied between heads), next to W + dL/dW + one B x K
-- buffer; PyTorch runs on the same card (FACET_TORCH_PYTHON names a Python
-- with CUDA PyTorch; default python3 from the PATH, /usr/bin/python3 on the
-- CPU). Targets on the GPU: step <= 1.3x the GEMMs (fused), >= 3x PyTorch's speed.
-- The heads' weights are drawn on the device there (their values do not
-- matter here; a million-class W drawn on the CPU takes seconds).
-- --subcenters k (k > 1): every cosine head with k sub-centres a class
-- (Sub-center ArcFace: a (K k) x dim weight, each class's cosine the best of
-- its k); the raw heads (softmax, l2-softmax) take none and are left out with
-- a note. The GEMMs, the SGD pass, the zeroing and W + dL/dW + the buffer it
-- is compared with are then those of the K k rows (the real work), PyTorch
-- runs its sub-centre heads (max over each class's k cosines, as InsightFace),
-- and the heads are shown as NAME/kK (e.g. arc/k3), in the summary lines too.
-- --train 0 leaves out the training-step table. Lines starting with
-- "summary:" are the key figures (tools/gpu_check.sh copies them).
-- Usage: bin/facet run bench/heads.lua [--B 128] [--dim 512] [--K 72690] [--reps 5] [--heads am,mv-am]
--          [--device cpu|cuda] [--train 0|1] [--torch 0|1] [--subcenters 1]  (--help: the options)
local facet = require "facet"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"
io.stdout:setvbuf("line")   -- a bench stopped by a timeout keeps the lines it printed

local NAME = "bench/heads.lua"
local parser = common.parser(NAME, "forward+backward of every head against its three GEMMs alone, a training step " ..
  "of each cosine head (unfused and fused), and optionally PyTorch's heads.")
common.integer(parser, "--B", "batch size", 128, 1)
common.integer(parser, "--dim", "embedding size", 512, 1)
common.integer(parser, "--K", "classes", 72690, 1)
common.integer(parser, "--reps", "timed runs (the best counts)", 5, 1)
common.names(parser, "--heads", "heads to time, comma-separated (default: all)", nil, facet.heads.names())
common.device(parser)
common.switch(parser, "--train", "the training-step table", 1)
common.switch(parser, "--torch", "PyTorch's heads too (bench/heads_torch.py)", 0)
common.integer(parser, "--subcenters", "sub-centres a class of the cosine heads (Sub-center ArcFace; 1: none)", 1, 1,
  255)
local o = parser:parse(arg)
local gpu = common.check_device(NAME, o.device)

local function peak_rss_mb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  return (tonumber(s:match("VmHWM:%s*(%d+)")) or 0) / 1024
end

local function sync() if gpu then facet.cuda.synchronize() end end

local function best(fn, reps)
  fn()
  sync()
  local b = math.huge
  for _ = 1, reps do
    local t0 = facet.clock()
    fn()
    sync()
    b = math.min(b, facet.clock() - t0)
  end
  return b
end

local function collect()
  collectgarbage()
  collectgarbage()
  if gpu then facet.cuda.empty_cache() end
end

-- a head; on the GPU its weights are drawn (and its zeros made) on the device
-- rather than on the CPU and copied (facet.heads makes them with facet.tensor's
-- randn / rand / zeros, then moves them)
local T = require "facet.tensor"
local function new_head(name, opts)
  if not gpu then return facet.heads.new(name, opts) end
  local saved = { randn = T.randn, rand = T.rand, zeros = T.zeros }
  for k, f in pairs(saved) do
    T[k] = function(sizes, topts)
      local c = {}
      for kk, v in pairs(topts or {}) do c[kk] = v end
      c.device = c.device or o.device
      return f(sizes, c)
    end
  end
  local ok, h = pcall(facet.heads.new, name, opts)
  for k, f in pairs(saved) do T[k] = f end
  if not ok then error(h, 0) end
  return h
end

local B, D, K = o.B, o.dim, o.K
-- sub-centres: the cosine heads' weight has K k rows, and so do the GEMMs it is compared with
local SC = o.subcenters
local KR = K * SC
local dev = { device = o.device }
local x = facet.randn({ B, D }, { seed = 1, device = o.device })
local y = facet.arange(B, { dtype = "int64" }):mul_(K / B):floor_():to(o.device)

-- the three GEMMs of a head step, alone
local W = facet.randn({ KR, D }, { seed = 2, device = o.device })
local gW = facet.zeros({ KR, D }, dev)
local Z = facet.empty({ B, KR }, dev)
local dX = facet.empty({ B, D }, dev)
local t_gemm = best(function()
  x:matmul(W, { transpose_b = true, out = Z })
  Z:matmul(W, { out = dX })
  Z:matmul(x, { transpose_a = true, out = gW, beta = 1 })
end, o.reps)
local gflop = 3 * 2 * B * D * KR / 1e9
-- one plain SGD pass with momentum over W (what any optimizer step costs)
local C = require("facet.core").C
local mom = facet.zeros({ KR, D }, dev)
local first = C.FACET_SGD_FLAG_FIRST_STEP
local t_sgd = best(function()
  require("facet.core").check(C.facet_sgd_step(W.h, gW.h, mom.h, nil, nil, 1e-9, 0.9, 0, 5e-4, first))
  first = 0
end, o.reps)
local t_zero = best(function() gW:zero_() end, o.reps)
W, gW, Z, dX, mom = nil, nil, nil, nil, nil
collect()

-- W + dL/dW + one B x K buffer: the least a head step can hold (K k rows with sub-centres)
local ref_mb = (2 * KR * D + B * KR) * 4 / 2 ^ 20
-- a head as the tables show it: NAME/kK with sub-centres
local function label_of(name) return SC > 1 and ("%s/k%d"):format(name, SC) or name end
local rows_text = SC > 1 and (" x %d sub-centres (%d rows)"):format(SC, KR) or ""
if gpu then
  print(("B = %d, dim = %d, K = %d%s on cuda (device 1 of %d), fp32; best of %d runs between synchronize() calls")
    :format(B, D, K, rows_text, facet.cuda.device_count(), o.reps))
  print(("three cuBLAS GEMMs alone: %.2f ms (%.1f GFLOP/s); one plain SGD pass (momentum) over W: %.2f ms; " ..
    "zeroing dL/dW: %.2f ms; W + dL/dW + one BxK buffer: %.0f MB"):format(t_gemm * 1e3, gflop / t_gemm,
    t_sgd * 1e3, t_zero * 1e3, ref_mb))
else
  print(("B = %d, dim = %d, K = %d%s on %s, %d threads, OpenBLAS core %s"):format(B, D, K, rows_text, o.device,
    facet.get_threads(), facet.blas_core()))
  if common.blas_note() then print(common.blas_note()) end
  print(("three GEMMs alone: %.1f ms (%.1f GFLOP/s); one plain SGD pass (momentum) over W: %.1f ms; zeroing dL/dW: %.1f ms"):format(
    t_gemm * 1e3, gflop / t_gemm, t_sgd * 1e3, t_zero * 1e3))
end
print(("forward + backward, ms: unfused, fused (cosine heads); own = the fused step (unfused without fusion) " ..
  "minus the GEMMs (%.2f ms): the head's own passes; x GEMM and GFLOP/s for that step"):format(t_gemm * 1e3))
if gpu then
  print(("%-24s %9s %9s %8s %8s %9s %10s %12s"):format("head", "unfused", "fused", "own", "x GEMM", "GFLOP/s",
    "device MB", "x (W+dW+BxK)"))
else
  print(("%-24s %9s %9s %8s %8s %9s %10s %10s"):format("head", "unfused", "fused", "own", "x GEMM", "GFLOP/s",
    "head MB", "peak RSS MB"))
end

local function head_mb(h)
  local total = 0
  local function add(t) if t then total = total + t:numel() * 4 end end
  add(h.weight); add(h.grad_weight); add(h.bias); add(h.grad_bias)
  for _, t in pairs(h.buf or {}) do if facet.is_tensor(t) then add(t) end end
  return total / 2 ^ 20
end

local stats = facet.cuda.memory_stats
local mems = {}

-- the best forward+backward of a head; on the GPU also the device bytes it holds
local function time_head(name, opts)
  opts.classes, opts.dim, opts.seed, opts.device = K, D, 3, o.device
  if SC > 1 then opts.subcenters = SC end
  local base, peak0 = 0, 0
  if gpu then
    local s = stats()
    base, peak0 = s.allocated_bytes, s.peak_allocated_bytes
  end
  local h = new_head(name, opts)
  local held = 0
  if gpu then
    -- one untimed step for the memory: the bytes held after forward and after backward
    h:forward(x, y)
    held = stats().allocated_bytes
    h:backward()
    held = math.max(held, stats().allocated_bytes)
  end
  local t = best(function()
    h:forward(x, y)
    h:backward()
  end, o.reps)
  local mb = head_mb(h)
  if gpu then
    local peak = stats().peak_allocated_bytes
    if peak > peak0 then held = math.max(held, peak) end
    mb = (held - base) / 2 ^ 20
  end
  local fusable = h.kind == "cosine"
  h = nil
  collect()
  return t, mb, fusable
end

-- one line of the table: unfused, and fused where the head has it; returns
-- the unfused time and the fused one (nil without fusion)
local function run(name, opts, label)
  label = label or label_of(name)
  local t, mb, fusable = time_head(name, opts)
  local tf
  if fusable then
    local fo = { fused = true }
    for k, v in pairs(opts) do fo[k] = v end
    tf = time_head(name, fo)
  end
  local tb = tf or t
  mems[label] = mb
  local head = ("%-24s %9.2f %9s %8.2f %8.2f %9.1f"):format(label, t * 1e3, tf and ("%.2f"):format(tf * 1e3) or "-",
    (tb - t_gemm) * 1e3, tb / t_gemm, gflop / tb)
  if gpu then print(("%s %10.0f %12.2f"):format(head, mb, mb / ref_mb))
  else print(("%s %10.0f %10.0f"):format(head, mb, peak_rss_mb())) end
  return t, tf
end

-- a head's kind, from a small one
local function kind_of(name) return facet.heads.new(name, { classes = 2, dim = 2 }).kind end

local names = o.heads or facet.heads.names()
local times, fused_times = {}, {}
if SC > 1 then
  -- sub-centres are for the cosine heads only
  local kept = {}
  for _, name in ipairs(names) do
    if kind_of(name) == "cosine" then kept[#kept + 1] = name
    else print(("%-24s skipped: not a cosine head (%s), no sub-centres"):format(name, kind_of(name))) end
  end
  names = kept
end
for _, name in ipairs(names) do times[name], fused_times[name] = run(name, {}) end

-- a training step through facet.optim.sgd; fused: the W norms and the radial
-- correction in the optimizer's single pass over W
if o.train ~= 0 then
  local t_base = t_gemm + t_sgd + t_zero
  print(("\nzero_grad + forward + backward + facet.optim.sgd step (momentum 0.9), against GEMMs + one SGD pass " ..
    "+ zeroing (%.1f ms)"):format(t_base * 1e3))
  print(("%-24s %12s %12s %8s"):format("head", "unfused ms", "fused ms", "x (GEMM+SGD+zero)"))
  for _, name in ipairs(names) do
    if kind_of(name) == "cosine" then
      local res = {}
      for _, fused in ipairs { false, true } do
        local h = new_head(name, { classes = K, dim = D, seed = 3, device = o.device, fused = fused,
          subcenters = SC > 1 and SC or nil })
        local opt = facet.optim.sgd(h, { lr = 1e-9, momentum = 0.9, weight_decay = 5e-4 })
        res[#res + 1] = best(function()
          opt:zero_grad()
          h:forward(x, y)
          h:backward()
          opt:step()
        end, o.reps)
        h, opt = nil, nil
        collect()
      end
      print(("%-24s %12.1f %12.1f %8.2f"):format(label_of(name), res[1] * 1e3, res[2] * 1e3, res[2] / t_base))
    end
  end
end
print()

if not o.heads or times["mv-am"] then
  local E = facet.expr
  local t_script = run("mv-am", { h = function(t, cos, I, s) return E.exp(s * t * (cos + 1) * I) end },
    label_of("mv-am") .. " (scripted h)")
  local t_built = times["mv-am"] or run("mv-am", {})
  print(("scripted h / built-in h: %.3f"):format(t_script / t_built))
end

local torch_ms, torch_mb = {}, {}
if o.torch ~= 0 then
  local python = os.getenv("FACET_TORCH_PYTHON") or (gpu and "python3" or "/usr/bin/python3")
  -- the heads of this run (bench/heads_torch.py leaves out those it does not have)
  local cmd = (common.TORCH_ENV .. " %s bench/heads_torch.py --device %s --B %d --dim %d --K %d --reps %d --threads %d " ..
    "--subcenters %d --heads %s"):format(python, o.device, B, D, K, math.max(2, o.reps - 2), facet.get_threads(), SC,
    table.concat(names, ","))
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  print(("\nPyTorch %s, same %s, forward+backward:"):format("(bench/heads_torch.py)", gpu and "card" or
    "machine and threads"))
  for line in out:gmatch("[^\n]+") do
    if line:match("^#") then print(line) end
    local name, ms, mb = line:match("^([%w%-]+) ([%d%.]+) ?([%d%.]*)$")
    if name then torch_ms[name], torch_mb[name] = tonumber(ms), tonumber(mb) end
  end
  print(("%-24s %12s %12s %10s%s"):format("head", "PyTorch ms", "facet ms", "speed-up", gpu and "   PyTorch MB" or ""))
  local any = false
  for _, name in ipairs(names) do
    local ms = torch_ms[name]
    if ms and times[name] then
      any = true
      print(("%-24s %12.2f %12.2f %9.1fx%s"):format(label_of(name), ms, times[name] * 1e3, ms / (times[name] * 1e3),
        torch_mb[name] and ("   %10.0f"):format(torch_mb[name]) or ""))
    end
  end
  if not any then print("(no PyTorch figures: " .. out:gsub("\n", " "):sub(1, 300) .. ")") end
end

-- the key figures, one line per head
for _, name in ipairs(names) do
  local t, tf = times[name], fused_times[name]
  local parts = { ("summary: heads %s K=%d %s: %.2f ms fwd+bwd = %.2fx the GEMMs (%.2f ms)"):format(o.device, K,
    label_of(name), t * 1e3, t / t_gemm, t_gemm * 1e3) }
  if tf then
    parts[#parts + 1] = ("fused %.2f ms = %.2fx, the head's own %.2f ms"):format(tf * 1e3, tf / t_gemm,
      (tf - t_gemm) * 1e3)
  else
    parts[#parts + 1] = ("the head's own %.2f ms"):format((t - t_gemm) * 1e3)
  end
  if gpu then
    local mb = mems[label_of(name)]
    parts[#parts + 1] = ("device %.0f MB = %.2fx W+dW+BxK"):format(mb, mb / ref_mb)
  end
  if torch_ms[name] then
    parts[#parts + 1] = ("PyTorch %.2f ms = %.1fx faster"):format(torch_ms[name], torch_ms[name] / (t * 1e3))
  end
  print(table.concat(parts, "; "))
end
if gpu then print("summary: heads targets on the GPU: fwd+bwd <= 1.3x the GEMMs (fused), >= 3x faster than PyTorch") end
