--- bench/heads.lua: forward+backward of every head at the paper's scale
-- (B = 128, dim = 512, K = 72,690 classes) against the head's three GEMMs
-- (logits, dL/dx, dL/dW) timed alone in the same run on the same buffers.
-- Prints ms per step, GFLOP/s (the GEMMs' flops over the step time), the
-- head's memory (parameters, gradients and buffers) and the process's peak
-- RSS, and the ratio step / GEMMs. Then a whole training step of each cosine
-- head through facet.optim.sgd, as facet.train runs it (zero_grad, forward,
-- backward, step), unfused and fused (fused = true: the radial correction and
-- the W norms in the optimizer's single pass over W), against the GEMMs plus
-- one plain SGD pass and one zeroing of dL/dW. A scripted copy of the adaptive
-- h is timed against the built-in one.
-- With --torch 1 it also runs bench/heads_torch.py (Debian's python3-torch: a
-- straightforward PyTorch version of the heads) and prints facet's speed-up.
-- Usage: bin/facet run bench/heads.lua [--B 128] [--dim 512] [--K 72690] [--reps 5] [--heads am,mv-am] [--torch 1]
local facet = require "facet"

local o = { B = 128, dim = 512, K = 72690, reps = 5, heads = nil, device = "cpu", torch = 0 }
local i = 1
while arg and arg[i] do
  local k = arg[i]:match("^%-%-(.+)$")
  if k == "heads" then
    o.heads = {}
    for h in arg[i + 1]:gmatch("[^,]+") do o.heads[#o.heads + 1] = h end
  elseif k == "device" then o.device = arg[i + 1]
  elseif k and o[k] ~= nil then o[k] = tonumber(arg[i + 1])
  else error("unknown argument " .. tostring(arg[i])) end
  i = i + 2
end

local function peak_rss_mb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  return (tonumber(s:match("VmHWM:%s*(%d+)")) or 0) / 1024
end

local function sync() if o.device == "cuda" then facet.cuda.synchronize() end end

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

local B, D, K = o.B, o.dim, o.K
local dev = { device = o.device }
local x = facet.randn({ B, D }, { seed = 1 }):to(o.device)
local y = facet.arange(B, { dtype = "int64" }):mul_(K / B):floor_():to(o.device)

-- the three GEMMs of a head step, alone
local W = facet.randn({ K, D }, { seed = 2 }):to(o.device)
local gW = facet.zeros({ K, D }, dev)
local Z = facet.empty({ B, K }, dev)
local dX = facet.empty({ B, D }, dev)
local t_gemm = best(function()
  x:matmul(W, { transpose_b = true, out = Z })
  Z:matmul(W, { out = dX })
  Z:matmul(x, { transpose_a = true, out = gW, beta = 1 })
end, o.reps)
local gflop = 3 * 2 * B * D * K / 1e9
-- one plain SGD pass with momentum over W (what any optimizer step costs)
local C = require("facet.core").C
local mom = facet.zeros({ K, D }, dev)
local first = C.FACET_SGD_FLAG_FIRST_STEP
local t_sgd = best(function()
  require("facet.core").check(C.facet_sgd_step(W.h, gW.h, mom.h, nil, nil, 1e-9, 0.9, 0, 5e-4, first))
  first = 0
end, o.reps)
local t_zero = best(function() gW:zero_() end, o.reps)
W, gW, Z, dX, mom = nil, nil, nil, nil, nil
collectgarbage()

print(("B = %d, dim = %d, K = %d on %s, %d threads, OpenBLAS core %s"):format(B, D, K, o.device,
  facet.get_threads(), facet.blas_core()))
print(("three GEMMs alone: %.1f ms (%.1f GFLOP/s); one plain SGD pass (momentum) over W: %.1f ms; zeroing dL/dW: %.1f ms"):format(
  t_gemm * 1e3, gflop / t_gemm, t_sgd * 1e3, t_zero * 1e3))
print(("%-24s %9s %9s %8s %10s %10s"):format("head", "ms/step", "GFLOP/s", "x GEMM", "head MB", "peak RSS MB"))

local function head_mb(h)
  local total = 0
  local function add(t) if t then total = total + t:numel() * 4 end end
  add(h.weight); add(h.grad_weight); add(h.bias); add(h.grad_bias)
  for _, t in pairs(h.buf or {}) do if facet.is_tensor(t) then add(t) end end
  return total / 2 ^ 20
end

local function run(name, opts, label)
  opts.classes, opts.dim, opts.seed, opts.device = K, D, 3, o.device
  local h = facet.heads.new(name, opts)
  local t = best(function()
    h:forward(x, y)
    h:backward()
  end, o.reps)
  print(("%-24s %9.1f %9.1f %8.2f %10.0f %10.0f"):format(label or name, t * 1e3, gflop / t, t / t_gemm,
    head_mb(h), peak_rss_mb()))
  local mb = head_mb(h)
  h = nil
  collectgarbage()
  return t, mb
end

local names = o.heads or facet.heads.names()
local times = {}
for _, name in ipairs(names) do times[name] = run(name, {}) end

-- a training step through facet.optim.sgd; fused: the W norms and the radial
-- correction in the optimizer's single pass over W
local t_base = t_gemm + t_sgd + t_zero
print(("\nzero_grad + forward + backward + facet.optim.sgd step (momentum 0.9), against GEMMs + one SGD pass " ..
  "+ zeroing (%.1f ms)"):format(t_base * 1e3))
print(("%-24s %12s %12s %8s"):format("head", "unfused ms", "fused ms", "x (GEMM+SGD+zero)"))
for _, name in ipairs(names) do
  local probe = facet.heads.new(name, { classes = 2, dim = 2 })
  if probe.kind == "cosine" then
    local res = {}
    for _, fused in ipairs { false, true } do
      local h = facet.heads.new(name, { classes = K, dim = D, seed = 3, device = o.device, fused = fused })
      local opt = facet.optim.sgd(h, { lr = 1e-9, momentum = 0.9, weight_decay = 5e-4 })
      res[#res + 1] = best(function()
        opt:zero_grad()
        h:forward(x, y)
        h:backward()
        opt:step()
      end, o.reps)
      h, opt = nil, nil
      collectgarbage()
    end
    print(("%-24s %12.1f %12.1f %8.2f"):format(name, res[1] * 1e3, res[2] * 1e3, res[2] / t_base))
  end
end
print()

if not o.heads or times["mv-am"] then
  local E = facet.expr
  local t_script = run("mv-am", { h = function(t, cos, I, s) return E.exp(s * t * (cos + 1) * I) end },
    "mv-am (scripted h)")
  local t_built = times["mv-am"] or run("mv-am", {})
  print(("scripted h / built-in h: %.3f"):format(t_script / t_built))
end

if o.torch ~= 0 then
  local cmd = ("env -u LD_PRELOAD /usr/bin/python3 bench/heads_torch.py --B %d --dim %d --K %d --reps %d --threads %d"):format(
    B, D, K, math.max(2, o.reps - 2), facet.get_threads())
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  print(("\nPyTorch %s, same machine and threads, forward+backward:"):format("(bench/heads_torch.py)"))
  print(("%-24s %12s %12s %10s"):format("head", "PyTorch ms", "facet ms", "speed-up"))
  local any = false
  for name, ms in out:gmatch("([%w%-]+) ([%d%.]+)") do
    if times[name] then
      any = true
      print(("%-24s %12.1f %12.1f %9.1fx"):format(name, tonumber(ms), times[name] * 1e3, tonumber(ms) / (times[name] * 1e3)))
    end
  end
  if not any then print("(no PyTorch figures: " .. out:gsub("\n", " "):sub(1, 200) .. ")") end
end
