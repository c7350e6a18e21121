--- bench/contention.lua: how much a training step slows down when other
-- processes want the same cores, facet against PyTorch. The model is the
-- small convnet of bench/train_step.lua (facet.models.convnet, 28 x 28, one
-- channel, batch 128, an am head over 1000 classes, SGD with momentum; the
-- same layout in bench/contention_torch.py), on --threads threads, beside 0, 1
-- and 2 busy-loop processes. Every figure is the images/s of one run of its
-- own process (throughput over --seconds of steps after 2 warm-up steps); each
-- level of contention runs every variant --reps times, interleaved (the order
-- rotates per repetition) so that a change in the machine's background load
-- falls on all of them alike, and the median is printed with the slowdown
-- against the same variant beside nothing, and the cores the run kept busy
-- (its CPU time over its wall time: 2 threads get about 1 core beside one
-- busy process on 2 cores, see docs/threads.md "The ceiling"). Figures only:
-- never pass/fail.
--
-- Variants: "facet" is the library as it is, with the OpenMP wait policy that
-- facet.core sets (docs/threads.md); "gomp-default" the same with
-- GOMP_SPINCOUNT=300000, libgomp's own default and so facet before that
-- policy (--before 0 leaves it out); "pytorch" (--torch 0 leaves it out).
-- --facet adds more, each LABEL=ENV where ENV is a space-separated list of
-- VAR=VALUE given to that run (or nothing):
--   --facet "threads1=FACET_THREADS=1"          one thread
--   --facet "old=GOMP_SPINCOUNT=300000 FACET_CORE_LIB=/tmp/old/facet_core.so"
--                                              another build of the core
-- Several are separated by ';'. The variables facet.core set in this process
-- are removed from every child's environment first, so each child (and
-- PyTorch) starts from the environment this script was started with.
--
-- Usage: bin/facet run bench/contention.lua [--reps 5] [--seconds 2] [--busy 0,1,2]
--          [--threads 2] [--torch 1] [--before 1] [--facet "LABEL=VAR=V ...;..."]
--        bin/facet run bench/contention.lua --worker grain [--threads 2]
--          (the cost of a parallel region against FACET_PARALLEL_GRAIN, below)
--        bin/facet run bench/contention.lua --help   (the options and their defaults)
-- The busy processes are `sh` loops that also exit by themselves within a
-- fraction of a second once this script's process is gone, and are killed on
-- the way out, an error included.
local ffi = require "ffi"
local facet = require "facet"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"
local core = require "facet.core"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local parser = common.parser("bench/contention.lua", "How much a training step slows down beside busy processes, " ..
  "facet against PyTorch: images/s of the small convnet (batch 128) per variant, median of --reps runs.")
common.integer(parser, "--reps", "runs of every variant per level (the median counts)", 5, 1)
common.number(parser, "--seconds", "seconds of steps per run", 2, { gt = 0 })
common.integers(parser, "--busy", "levels: busy processes beside the runs", "0,1,2", 0)
common.integer(parser, "--threads", "threads of every run", 2, 1)
common.switch(parser, "--torch", "the pytorch variant (bench/contention_torch.py)", 1)
common.switch(parser, "--before", "the gomp-default variant (GOMP_SPINCOUNT=300000)", 1)
-- "LABEL=VAR=VALUE ...;..." -> { { label =, env = "'VAR=VALUE' ..." }, ... }
local variants_help = "more variants of facet, 'LABEL=VAR=VALUE VAR=VALUE;LABEL=...' (default: none)"
parser:option("--facet", variants_help):argname("<variants>"):convert(function(text)
  local list = {}
  for item in text:gmatch("[^;]+") do
    local label, env = item:match("^%s*([%w%-_%.]+)=(.*)$")
    if not label then return nil, "--facet: want LABEL=VAR=VALUE ..., got '" .. item .. "'" end
    local quoted = {}
    for a in env:gmatch("%S+") do
      if not a:match("^[%w_]+=") then return nil, "--facet: want VAR=VALUE, got '" .. a .. "'" end
      quoted[#quoted + 1] = sh_quote(a)
    end
    list[#list + 1] = { label = label, env = table.concat(quoted, " ") }
  end
  return list
end)
parser:option("--worker", "grain: time a parallel region against FACET_PARALLEL_GRAIN (see the file); facet: " ..
  "one run (the driver starts these)"):choices { "facet", "grain" }
common.integer(parser, "--batch", "batch size", 128, 1)
local o = parser:parse(arg)

-- ---- worker: one measurement in this process --------------------------------------
if o.worker == "facet" then
  -- the thread count comes from FACET_THREADS, which the driver sets (so a variant can change it)
  facet.manual_seed(1)
  local net = facet.models.convnet { emb = 128 }
  local head = facet.heads.new("am", { classes = 1000, dim = 128, seed = 1 })
  local opt = facet.optim.sgd({ net, head }, { lr = 0.01, momentum = 0.9, weight_decay = 5e-4 })
  local x = facet.randn({ o.batch, 1, 28, 28 }, { seed = 3 })
  local y = facet.arange(o.batch, { dtype = "int64" })
  local step = common.train_step(net, head, opt, { x, y })
  step()
  step()
  local sys = require "facet.sys"
  local t0, c0, n = facet.clock(), sys.cpu_time(), 0
  repeat
    step()
    n = n + 1
  until n >= 3 and facet.clock() - t0 >= o.seconds
  local wall = facet.clock() - t0
  print(("img/s %.2f threads %d policy %s cores %.2f"):format(o.batch * n / wall, facet.get_threads(),
    core.wait_policy or "?", (sys.cpu_time() - c0) / wall))
  return
end

-- ---- worker: the cost of a parallel region, against FACET_PARALLEL_GRAIN ---------------
-- Per-call time of three elementwise ops (add: two inputs, memory-bound;
-- relu; sigmoid: compute-bound) at sizes around the grain: on 1 thread, on
-- --threads threads back to back (the other threads still spinning: "warm"),
-- and on --threads threads each after 0.3 ms of serial work (longer than the
-- spin, so the other threads sleep and must be woken: "cold"); best of 7
-- batches of calls. Below the grain the core runs every op on one thread, so
-- the columns agree there. Build the core with
-- CFLAGS="-O3 -DFACET_PARALLEL_GRAIN=4096" to see the regions below it too.
if o.worker == "grain" then
  local C = core.C
  local ops = {
    { "add", function(out, a, b) return C.facet_tensor_binary(out.h, a.h, b.h, C.FACET_BINARY_ADD) end },
    { "relu", function(out, a) return C.facet_activation_forward(out.h, a.h, C.FACET_ACTIVATION_RELU, nil) end },
    { "sigmoid", function(out, a) return C.facet_activation_forward(out.h, a.h, C.FACET_ACTIVATION_SIGMOID, nil) end },
  }
  local clock = facet.clock
  local function time_op(f, out, a, b, n)
    local calls = math.max(20, math.floor(2e6 / n))
    local best = math.huge
    for _ = 1, 7 do
      local t0 = clock()
      for _ = 1, calls do core.check(f(out, a, b)) end
      best = math.min(best, (clock() - t0) / calls)
    end
    return best
  end
  local function time_cold(f, out, a, b)
    local best = math.huge
    for _ = 1, 7 do
      local sum = 0
      for _ = 1, 30 do
        local stop = clock() + 3e-4
        repeat until clock() >= stop
        local t0 = clock()
        core.check(f(out, a, b))
        sum = sum + clock() - t0
      end
      best = math.min(best, sum / 30)
    end
    return best
  end
  print(("GOMP_SPINCOUNT=%s, grain built in: see core/src/internal.h (or the CFLAGS of this build)")
    :format(os.getenv("GOMP_SPINCOUNT") or "(libgomp default)"))
  print(("%-8s %9s %10s %10s %10s %9s %9s"):format("op", "elements", "1 thr us", ("%d warm us"):format(o.threads),
    ("%d cold us"):format(o.threads), "warm x", "cold x"))
  for _, op in ipairs(ops) do
    local n = 4096
    while n <= 1048576 do
      local a, b, out = facet.randn({ n }, { seed = 1 }), facet.randn({ n }, { seed = 2 }), facet.empty({ n })
      facet.set_threads(1)
      local t1 = time_op(op[2], out, a, b, n)
      facet.set_threads(o.threads)
      local tw = time_op(op[2], out, a, b, n)
      local tc = time_cold(op[2], out, a, b)
      print(("%-8s %9d %10.1f %10.1f %10.1f %9.2f %9.2f"):format(op[1], n, t1 * 1e6, tw * 1e6, tc * 1e6, t1 / tw, t1 / tc))
      n = n * 2
    end
  end
  return
end

-- ---- driver ---------------------------------------------------------------------------
ffi.cdef [[ int getpid(void); ]]
local pid = ffi.C.getpid()

-- what facet.core put into this process's environment comes out of every child's
local unset = {}
for var in pairs(core.omp_env_set or {}) do unset[#unset + 1] = "-u " .. var end
table.sort(unset)
local env_unset = "env " .. table.concat(unset, " ") .. " "

local variants = { { label = "facet", env = "", kind = "facet" } }
if o.before ~= 0 then
  -- exactly what libgomp does when neither variable is set: facet before its wait policy
  variants[2] = { label = "gomp-default", env = sh_quote("GOMP_SPINCOUNT=300000"), kind = "facet" }
end
for _, v in ipairs(o.facet or {}) do
  variants[#variants + 1] = { label = v.label, env = v.env, kind = "facet" }
end
if o.torch ~= 0 then variants[#variants + 1] = { label = "pytorch", env = "", kind = "torch" } end

local script = arg and arg[0] or "bench/contention.lua"
local facet_bin = (os.getenv("FACET_BIN") or "bin/facet")

local function measure(v)
  local cmd
  if v.kind == "facet" then
    cmd = ("%sFACET_THREADS=%d %s luajit %s run %s --worker facet --threads %d --seconds %s --batch %d 2>&1")
      :format(env_unset, o.threads, v.env, sh_quote(facet_bin), sh_quote(script), o.threads, o.seconds, o.batch)
  else
    cmd = ("%s" .. common.TORCH_ENV:gsub("^env ", "") .. " /usr/bin/python3 bench/contention_torch.py --threads %d --seconds %s --batch %d 2>&1")
      :format(env_unset, o.threads, o.seconds, o.batch)
  end
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local ips = tonumber(out:match("img/s ([%d%.]+)"))
  if not ips then error(("%s: no figure from `%s`:\n%s"):format(v.label, cmd, out:sub(1, 600)), 0) end
  v.seen = v.seen or out:match("img/s [%d%.]+ (threads %d+ policy %S+)")
  return ips, tonumber(out:match("cores ([%d%.]+)"))
end

-- busy-loop processes: each checks every ~0.1 s that this process still lives
local busy = {}
local function start_busy()
  local loop = ("while kill -0 %d 2>/dev/null; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done"):format(pid)
  local p = assert(io.popen("sh -c " .. sh_quote(loop) .. " </dev/null >/dev/null 2>&1 & echo $!"))
  local child = tonumber(p:read("*l"))
  p:close()
  assert(child, "could not start a busy process")
  busy[#busy + 1] = child
end
local function stop_busy()
  for _, child in ipairs(busy) do os.execute(("kill %d 2>/dev/null"):format(child)) end
  busy = {}
end

local function loadavg()
  local f = io.open("/proc/loadavg")
  local s = f and f:read("*l") or "?"
  if f then f:close() end
  return s:match("^(%S+ %S+ %S+)") or s
end

local function median(t)
  local s = {}
  for k, v in ipairs(t) do s[k] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 / 0 end
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

local levels = o.busy

local function nproc()
  local p = io.popen("nproc 2>/dev/null")
  local n = p and tonumber(p:read("*l"))
  if p then p:close() end
  return n or 0
end

local function run()
  print(("facet contention bench: convnet 28x28x1, batch %d, am head 1000 classes, %d threads, %d cores; "
    .. "%d reps x %.1f s, median"):format(o.batch, o.threads, nproc(),
    o.reps, o.seconds))
  print("variants:")
  for _, v in ipairs(variants) do
    print(("  %-12s %s"):format(v.label, v.kind == "torch" and "bench/contention_torch.py" or
      (v.env == "" and "(facet's own policy)" or v.env)))
  end
  local res, cores = {}, {}
  for _, level in ipairs(levels) do
    for _ = 1, level do start_busy() end
    local la0 = loadavg()
    res[level], cores[level] = {}, {}
    for _, v in ipairs(variants) do res[level][v.label], cores[level][v.label] = {}, {} end
    for r = 1, o.reps do
      for k = 0, #variants - 1 do
        local v = variants[(r - 1 + k) % #variants + 1]
        local t, c = res[level][v.label], cores[level][v.label]
        local ips, used = measure(v)
        t[#t + 1] = ips
        if used then c[#c + 1] = used end
      end
    end
    stop_busy()
    local cells = {}
    for _, v in ipairs(variants) do
      cells[#cells + 1] = ("%s %s"):format(v.label, table.concat((function()
        local s = {}
        for _, x in ipairs(res[level][v.label]) do s[#s + 1] = ("%.0f"):format(x) end
        return s
      end)(), "/"))
    end
    print(("beside %d busy: loadavg %s -> %s; runs: %s"):format(level, la0, loadavg(), table.concat(cells, "; ")))
  end
  print()
  for _, v in ipairs(variants) do
    if v.seen then print(("%-12s ran with %s"):format(v.label, v.seen)) end
  end
  local hdr = ("%-22s"):format("beside")
  for _, v in ipairs(variants) do
    v.width = math.max(12, #v.label + 6)
    hdr = hdr .. (" %" .. v.width .. "s %7s %6s"):format(v.label .. " img/s", "slower", "cores")
  end
  print(hdr)
  local base = levels[1]
  for _, level in ipairs(levels) do
    local line = ("%-22s"):format(level == 0 and "nothing" or ("%d busy process%s"):format(level, level > 1 and "es" or ""))
    for _, v in ipairs(variants) do
      local m, b = median(res[level][v.label]), median(res[base][v.label])
      line = line .. (" %" .. v.width .. ".0f %6.2fx %6.2f"):format(m, b / m, median(cores[level][v.label]))
    end
    print(line)
  end
  if #variants > 1 then
    print()
    print("ratios against " .. variants[1].label .. " at the same contention (median img/s):")
    for _, level in ipairs(levels) do
      local line = ("%-22s"):format(level == 0 and "nothing" or ("%d busy"):format(level))
      local m1 = median(res[level][variants[1].label])
      for k = 2, #variants do
        line = line .. ("  %s/%s = %.2f"):format(variants[1].label, variants[k].label, m1 / median(res[level][variants[k].label]))
      end
      print(line)
    end
  end
end

local ok, err = xpcall(run, debug.traceback)
stop_busy()
if not ok then error(err, 0) end
