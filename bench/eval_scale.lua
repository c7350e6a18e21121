--- bench/eval_scale.lua: evaluation at the paper's scale, facet against
-- PyTorch (bench/eval_scale_torch.py, /usr/bin/python3, same thread count),
-- back to back, each case in a fresh process of its own so that its peak
-- memory (VmHWM from /proc/self/status) is its own:
--   identify N   MegaFace: 3,530 probes of 80 identities (d = 512, random
--                unit embeddings with planted positives: identity centre +
--                noise) against N random distractors, every (probe, other
--                image of its identity) pair a trial; rank-1 and CMC to 10
--   verify       10^6 genuine + 10^7 impostor scores (random normals):
--                TAR at FAR 1e-1 ... 1e-7 (facet.eval.verify_scores)
--   all N        all-vs-all over N images of N/10 identities (d = 512):
--                TAR at FAR 1e-1 ... 1e-8 (facet.eval.verify_all)
-- Time: the evaluation call alone (the data are drawn before, in place).
-- Memory: the process's peak RSS (VmHWM) and its RSS once the data were
-- drawn (VmRSS), so peak - data is what the evaluation added.
-- Usage: bin/facet run bench/eval_scale.lua [--cases identify:100000,identify:300000,identify:1000000,verify,all:20000]
--          [--threads 2] [--torch 1]
-- One case alone, in this process (what the driver runs): --case identify --n 100000
local facet = require "facet"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"
io.stdout:setvbuf("line")

local NAME = "bench/eval_scale.lua"
local o = { cases = "identify:100000,identify:300000,identify:1000000,verify,all:20000", threads = 2, torch = 1,
  case = nil, n = 0 }
local i = 1
while arg and arg[i] do
  local k = arg[i]:match("^%-%-(.+)$")
  local v = arg[i + 1]
  if not k or o[k] == nil and k ~= "case" or v == nil then common.bad_argument(NAME, arg[i], v) end
  o[k] = (k == "cases" or k == "case") and v or tonumber(v)
  if o[k] == nil then common.bad_argument(NAME, arg[i], v) end
  i = i + 2
end

local P, IDS, DIM = 3530, 80, 512

local function status(field)
  local f = io.open("/proc/self/status", "r")
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)")) / 1024          -- MB
end

-- rows of x scaled to unit norm in place
local core = require "facet.core"
local function normalize_(x)
  core.check(core.C.facet_tensor_l2_normalize(x.h, nil, x.h, 1e-12))
  return x
end

-- probes: identity centre + noise (cos to the centre about 0.6), unit rows
local function probes()
  local centres = normalize_(facet.randn({ IDS, DIM }, { seed = 1 }))
  local labels, idx = {}, {}
  for r = 1, P do labels[r] = (r - 1) % IDS + 1; idx[r] = labels[r] end
  local x = centres:index_select(facet.tensor(idx, { dtype = "int32" }))
  x:add_(facet.randn({ P, DIM }, { seed = 2 }):mul_(2.0 / math.sqrt(DIM)))
  return normalize_(x), labels
end

local function run_case(case, n)
  facet.set_threads(o.threads)
  local t, res, data_mb
  if case == "identify" then
    local p, labels = probes()
    local d = normalize_(facet.randn({ n, DIM }, { seed = 3 }))
    data_mb = status("VmRSS")
    local t0 = facet.clock()
    local r = facet.eval.identify(p, labels, d, nil, { positives = p })
    t = facet.clock() - t0
    res = ("rank1 %.4f rank10 %.4f trials %d"):format(r.rank1, r.cmc[10], r.trials)
  elseif case == "verify" then
    local ng, ni = 1000000, 10000000
    local s = facet.randn({ ng + ni }, { seed = 4 })
    s:narrow(1, 1, ng):add_(2.5)
    local same = facet.zeros({ ng + ni }, { dtype = "uint8" })
    same:narrow(1, 1, ng):fill_(1)
    data_mb = status("VmRSS")
    local t0 = facet.clock()
    local r = facet.eval.verify_scores(s, same, { fars = { 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7 } })
    t = facet.clock() - t0
    res = ("TAR@1e-3 %.6f TAR@1e-6 %.6f"):format(r.tar_at_far[1e-3], r.tar_at_far[1e-6])
  elseif case == "all" then
    local per = 10
    local c = normalize_(facet.randn({ n / per, DIM }, { seed = 5 }))
    local idx, labels = {}, {}
    for r = 1, n do idx[r] = (r - 1) % (n / per) + 1; labels[r] = idx[r] end
    local x = c:index_select(facet.tensor(idx, { dtype = "int32" }))
    x:add_(facet.randn({ n, DIM }, { seed = 6 }):mul_(2.0 / math.sqrt(DIM)))
    normalize_(x)
    collectgarbage()
    data_mb = status("VmRSS")
    local t0 = facet.clock()
    local r = facet.eval.verify_all(x, labels, { fars = { 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8 } })
    t = facet.clock() - t0
    res = ("TAR@1e-4 %s TAR@1e-8 %s pairs %d"):format(tostring(r.tar_at_far[1e-4]), tostring(r.tar_at_far[1e-8]),
      r.genuine + r.impostors)
  else
    common.bad_argument(NAME, "--case", case)
  end
  io.stdout:write(("result %s %d time_s %.3f peak_mb %.0f data_mb %.0f %s\n"):format(case, n, t, status("VmHWM"), data_mb, res))
end

if o.case then
  run_case(o.case, o.n)
  os.exit(0)
end

-- the driver: each case in a new process, facet then PyTorch
local function load()
  local p = io.popen("cat /proc/loadavg")
  local s = p:read("*l")
  p:close()
  return s:match("^(%S+ %S+ %S+)")
end

local function child(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  local line = out:match("(result [^\n]*)")
  if not line then io.stdout:write("# failed: ", cmd, "\n", out, "\n") end
  return line
end

local function field(line, name) return line and tonumber(line:match(name .. " (%S+)")) end

io.stdout:write(("# facet %s, %d threads (facet.set_threads; torch.set_num_threads), OpenBLAS %s; PyTorch: /usr/bin/python3\n")
  :format(facet.version, o.threads, facet.blas_core()))
io.stdout:write(("%-18s %9s %9s %8s %9s %9s %8s %9s %9s  %s\n"):format("case", "facet s", "torch s", "ratio",
  "facet MB", "torch MB", "ratio", "facet +MB", "torch +MB", "load (1/5/15 min) before"))
for spec in o.cases:gmatch("[^,]+") do
  local case, n = spec:match("^(%a+):?(%d*)$")
  if not case then common.bad_argument(NAME, "--cases", spec) end
  n = tonumber(n) or 0
  local before = load()
  local f = child(("luajit bin/facet run bench/eval_scale.lua --case %s --n %d --threads %d"):format(case, n, o.threads))
  local t = o.torch == 1 and child((common.TORCH_ENV .. " /usr/bin/python3 bench/eval_scale_torch.py --case %s --n %d --threads %d")
    :format(case, n, o.threads)) or nil
  local ft, tt = field(f, "time_s"), field(t, "time_s")
  local fm, tm = field(f, "peak_mb"), field(t, "peak_mb")
  local fd, td = field(f, "data_mb"), field(t, "data_mb")
  local function r(a, b) return (a and b) and ("%.2fx"):format(a / b) or "-" end
  local function v(x, fmt) return x and (fmt):format(x) or "-" end
  io.stdout:write(("%-18s %9s %9s %8s %9s %9s %8s %9s %9s  %s\n"):format(case .. (n > 0 and (" " .. n) or ""),
    v(ft, "%.2f"), v(tt, "%.2f"), r(ft, tt), v(fm, "%.0f"), v(tm, "%.0f"), r(fm, tm),
    v(fm and fd and fm - fd, "%.0f"), v(tm and td and tm - td, "%.0f"), before))
  if f then io.stdout:write("#   facet: ", f:match("data_mb %S+ (.*)$") or "", "\n") end
  if t then io.stdout:write("#   torch: ", t:match("data_mb %S+ (.*)$") or "", "\n") end
end
