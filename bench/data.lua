--- bench/data.lua: images/s through the whole pipeline (read .rec -> decode a
-- 112 x 112 JPEG -> flip -> normalise -> batch) with 1 and 2 loader threads,
-- next to decoding alone on one thread; then a short MobileFaceNet training
-- run fed by the loader, printing the share of time the loop waited for data.
-- The JPEGs are made once with PIL (smooth random images, quality 90; the
-- Python is FACET_PYTHON, else /usr/bin/python3, else python3 from the PATH);
-- without PIL, facet makes the same kind of images as PNGs and says so.
-- --device cuda: the loader's batches go on into device memory
-- (facet.data.to_device(loader, "cuda"), as facet.train does) with 1, 4 and
-- all the cores' loader threads (--threads a,b,c picks others), two epochs each,
-- the clock stopped after a facet.cuda.synchronize(); next to it the images/s of
-- a MobileFaceNet training step at batch 128 on the same card (data already
-- there; --warmup steps, then the mean of --steps between synchronize() calls),
-- the ratio loader / step (>= 1: the loader keeps up), and a facet.train run
-- at batch 128 fed by the fastest loader, with the share of time it waited.
-- Lines starting with "summary:" are the key figures (tools/gpu_check.sh copies them).
-- Usage: bin/facet run bench/data.lua [--images 2048] [--device cpu|cuda] [--threads 1,4,16]
--          [--steps N (CPU: 12 training steps; CUDA: 10 timed steps)] [--warmup 3]  (--help: the options)
local ffi = require "ffi"
local facet = require "facet"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"
io.stdout:setvbuf("line")   -- a bench stopped by a timeout keeps the lines it printed

local NAME = "bench/data.lua"
local parser = common.parser(NAME, "images/s through the data pipeline (.rec -> decode a 112x112 JPEG -> flip -> " ..
  "normalise -> batch) by loader threads, and the share of a training run spent waiting for data.")
common.integer(parser, "--images", "images to make and read, two batches of 128 at least (default: 2048; " ..
  "4096 with --device cuda)", nil, 256)
common.device(parser)
common.integers(parser, "--threads", "loader threads to time, comma-separated (default: 1,2; with " ..
  "--device cuda 1, 4 and the cores)", nil, 1)
common.integer(parser, "--steps", "training steps (default: CPU 12 steps of facet.train; CUDA 10 timed " ..
  "steps)", nil, 1)
common.integer(parser, "--warmup", "CUDA: untimed training steps first", 3, 0)
local o = parser:parse(arg)
local gpu = common.check_device(NAME, o.device)
local n = o.images or (gpu and 4096 or 2048)
local cores = facet.get_threads()
local thread_counts = o.threads
if not thread_counts then
  thread_counts = {}
  if gpu then
    for _, t in ipairs { 1, 4, cores } do
      if t <= cores and t ~= thread_counts[#thread_counts] then thread_counts[#thread_counts + 1] = t end
    end
  else
    thread_counts = { 1, 2 }
  end
end
local steps, warmup = o.steps or 10, o.warmup or 3
local clock = facet.clock
local sync = gpu and facet.cuda.synchronize or function() end

-- ---- the images ----------------------------------------------------------------------

local dir = io.popen("mktemp -d"):read("*l")
local py = [[
import sys, numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(int(sys.argv[2])):
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((112, 112), Image.BILINEAR)
    img.save(f"{sys.argv[1]}/{i}.jpg", quality=90)
]]
local f = assert(io.open(dir .. "/make.py", "w")); f:write(py); f:close()
local format = "JPEG"
local made = false
local pythons = { os.getenv("FACET_PYTHON"), "/usr/bin/python3", "python3" }
for k = 1, 3 do
  local python = pythons[k]
  if python and os.execute(("env -u LD_PRELOAD %s -c 'import numpy, PIL' >/dev/null 2>&1"):format(python)) == 0 then
    made = os.execute(("env -u LD_PRELOAD %s %s/make.py %s %d"):format(python, dir, dir, n)) == 0
    if made then break end
  end
end

-- without PIL: smooth random images of the same kind (8 x 8 random colours,
-- bilinear to 112 x 112), PNG-encoded by facet
local function png_images()
  local state = 12345
  local function rnd()                   -- a small LCG: the images only need to differ
    state = (state * 1103515245 + 12345) % 2147483648
    return math.floor(state / 65536) % 256
  end
  local out = {}
  local img = facet.empty({ 112, 112, 3 }, { dtype = "uint8" })
  local p = ffi.cast("uint8_t *", img:data_ptr())
  local base = {}
  for k = 1, n do
    for j = 0, 8 * 8 * 3 - 1 do base[j] = rnd() end
    for r = 0, 111 do
      local fy = math.min(math.max((r + 0.5) * 8 / 112 - 0.5, 0), 7)
      local y0 = math.min(math.floor(fy), 6)
      local wy = fy - y0
      for c = 0, 111 do
        local fx = math.min(math.max((c + 0.5) * 8 / 112 - 0.5, 0), 7)
        local x0 = math.min(math.floor(fx), 6)
        local wx = fx - x0
        for ch = 0, 2 do
          local a00, a01 = base[(y0 * 8 + x0) * 3 + ch], base[(y0 * 8 + x0 + 1) * 3 + ch]
          local a10, a11 = base[((y0 + 1) * 8 + x0) * 3 + ch], base[((y0 + 1) * 8 + x0 + 1) * 3 + ch]
          local v = (a00 * (1 - wx) + a01 * wx) * (1 - wy) + (a10 * (1 - wx) + a11 * wx) * wy
          p[(r * 112 + c) * 3 + ch] = math.floor(v + 0.5)
        end
      end
    end
    out[k] = facet.data.encode_png(img)
  end
  return out
end

local w = facet.data.recordio_writer(dir .. "/train")
local bytes = {}
if made then
  for k = 0, n - 1 do
    local fh = assert(io.open(("%s/%d.jpg"):format(dir, k), "rb"))
    bytes[k + 1] = fh:read("*a")
    fh:close()
  end
else
  format = "PNG"
  bytes = png_images()
end
for k = 0, n - 1 do w:write(k, k % 100, bytes[k + 1]) end
w:close()

local t0 = clock()
for k = 1, n do facet.data.decode_image(bytes[k], { flip = k % 2 == 0 }) end
local decode = n / (clock() - t0)
print(("%d %s images of 112x112 (%.1f KB average); %d cores"):format(n, format, #table.concat(bytes) / n / 1024, cores))
if not made then print("(no Python with PIL and NumPy found: facet made PNGs of the same kind instead of JPEGs)") end
print(("decode + normalise alone, 1 thread (from Lua): %8.0f images/s"):format(decode))
bytes = nil

-- ---- the loader ------------------------------------------------------------------------

local rec = facet.data.recordio(dir .. "/train")
local rates, best_threads, best_rate = {}, nil, 0
for _, threads in ipairs(thread_counts) do
  local L = facet.data.loader { source = rec, size = { 112, 112 }, batch_size = 128, threads = threads, seed = 1 }
  local nb = L:num_batches()
  local rate
  if gpu then
    local D = facet.data.to_device(L, "cuda")
    D:batch(0, 1)
    sync()
    local s = clock()
    for e = 0, 1 do
      for b = (e == 0 and 2 or 1), nb do D:batch(e, b) end
    end
    sync()
    rate = (2 * nb - 1) * 128 / (clock() - s)
    print(("loader, %2d thread%s (.rec -> decode -> flip -> normalise -> batch -> cuda): %8.0f images/s (%.0f per thread)")
      :format(threads, threads > 1 and "s" or " ", rate, rate / threads))
  else
    L:batch(0, 1)
    local s = clock()
    for b = 2, nb do L:batch(0, b) end
    rate = (nb - 1) * 128 / (clock() - s)
    print(("loader, %d thread%s (.rec -> decode -> flip -> normalise -> batch): %8.0f images/s (%.0f per thread)"):format(
      threads, threads > 1 and "s" or " ", rate, rate / threads))
  end
  rates[#rates + 1] = ("%d thread%s %.0f"):format(threads, threads > 1 and "s" or "", rate)
  if rate > best_rate then best_rate, best_threads = rate, threads end
  L:close()
end

-- ---- the training step and the training loop's wait for data ------------------------------

if not gpu then
  local L = facet.data.loader { source = rec, size = { 112, 112 }, batch_size = 32, threads = 1, seed = 2 }
  local net = facet.models.mobilefacenet { emb = 512 }
  local head = facet.heads.new("am", { classes = 100, dim = 512 })
  local opt = facet.optim.sgd({ net, head }, { lr = 0.01, momentum = 0.9 })
  local r = facet.train { model = net, head = head, data = L, optimizer = opt, epochs = 1, stop_after = o.steps or 12,
    quiet = true }
  print(("MobileFaceNet training (batch 32, 1 loader thread, %d steps): the loop waited for data %.2f%% of the time")
    :format(r.steps, 100 * r.data_wait))
  print(("summary: data cpu: loader images/s: %s"):format(table.concat(rates, ", ")))
else
  facet.manual_seed(1)
  local net = facet.models.mobilefacenet { emb = 512 }:to("cuda")
  local head = facet.heads.new("am", { classes = 100, dim = 512, seed = 1, device = "cuda" })
  local opt = facet.optim.sgd({ net, head }, { lr = 0.01, momentum = 0.9, weight_decay = 5e-4 })
  local x = facet.randn({ 128, 3, 112, 112 }, { seed = 3, device = "cuda" })
  local labels = {}
  for k = 1, 128 do labels[k] = (k - 1) % 100 end
  local y = facet.tensor(labels, { dtype = "int64", device = "cuda" })
  local step = common.train_step(net, head, opt, { x, y })
  for _ = 1, warmup do step() end
  sync()
  local s = clock()
  for _ = 1, math.max(1, steps) do step() end
  sync()
  local step_ips = 128 * math.max(1, steps) / (clock() - s)
  print(("MobileFaceNet training step (batch 128, data on the card): %8.0f images/s"):format(step_ips))
  print(("loader (%d threads) / training step: %.2f (%s)"):format(best_threads, best_rate / step_ips,
    best_rate >= step_ips and "the loader keeps up" or "the loader does NOT keep up"))

  -- facet.train fed by the fastest loader (it moves the batches to the card itself)
  local L = facet.data.loader { source = rec, size = { 112, 112 }, batch_size = 128, threads = best_threads, seed = 2 }
  local stop = math.min(L:num_batches(), warmup + math.max(1, steps) + 4)
  sync()
  s = clock()
  local r = facet.train { model = net, head = head, data = L, optimizer = opt, epochs = 1, stop_after = stop, quiet = true }
  sync()
  local train_ips = 128 * r.steps / (clock() - s)
  L:close()
  print(("facet.train, MobileFaceNet, batch 128, %d loader threads, %d steps: %.0f images/s, waited for data %.1f%% " ..
    "of the time"):format(best_threads, r.steps, train_ips, 100 * r.data_wait))
  print(("summary: data cuda: loader into device memory, images/s: %s"):format(table.concat(rates, ", ")))
  print(("summary: data cuda: MobileFaceNet step at batch 128: %.0f images/s; loader (%d threads) / step = %.2f (%s); " ..
    "facet.train with it: %.0f images/s, %.1f%% waiting for data"):format(step_ips, best_threads, best_rate / step_ips,
    best_rate >= step_ips and "keeps up" or "does NOT keep up", train_ips, 100 * r.data_wait))
end
rec = nil
collectgarbage()
os.execute("rm -rf '" .. dir .. "'")
