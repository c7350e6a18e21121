--- bench/data.lua: images/s through the whole pipeline (read .rec -> decode a
-- 112 x 112 JPEG -> flip -> normalise -> batch) with 1 and 2 loader threads,
-- next to decoding alone on one thread; then a short MobileFaceNet training
-- run fed by the loader, printing the share of time the loop waited for data.
-- The JPEGs are made once with Debian's python3-pil (smooth random images,
-- quality 90). Usage: bin/facet run bench/data.lua [--images 2048]
local facet = require "facet"

local n = 2048
if arg and arg[1] == "--images" then n = tonumber(arg[2]) end
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
assert(os.execute(("env -u LD_PRELOAD /usr/bin/python3 %s/make.py %s %d"):format(dir, dir, n)) == 0,
  "needs /usr/bin/python3 with PIL (python3-pil)")
local w = facet.data.recordio_writer(dir .. "/train")
local bytes = {}
for i = 0, n - 1 do
  local fh = assert(io.open(("%s/%d.jpg"):format(dir, i), "rb"))
  bytes[i + 1] = fh:read("*a")
  fh:close()
  w:write(i, i % 100, bytes[i + 1])
end
w:close()

local t0 = facet.clock()
for i = 1, n do facet.data.decode_image(bytes[i], { flip = i % 2 == 0 }) end
local decode = n / (facet.clock() - t0)
print(("%d JPEGs of 112x112 (%.1f KB average); %d cores"):format(n, #table.concat(bytes) / n / 1024, facet.get_threads()))
print(("decode + normalise alone, 1 thread (from Lua): %8.0f images/s"):format(decode))

local rec = facet.data.recordio(dir .. "/train")
for _, threads in ipairs { 1, 2 } do
  local L = facet.data.loader { source = rec, size = { 112, 112 }, batch_size = 128, threads = threads, seed = 1 }
  L:batch(0, 1)
  local s = facet.clock()
  for i = 2, L:num_batches() do L:batch(0, i) end
  local rate = (L:num_batches() - 1) * 128 / (facet.clock() - s)
  print(("loader, %d thread%s (.rec -> decode -> flip -> normalise -> batch): %8.0f images/s (%.0f per thread)"):format(
    threads, threads > 1 and "s" or " ", rate, rate / threads))
  L:close()
end

-- the training loop's wait for data
local L = facet.data.loader { source = rec, size = { 112, 112 }, batch_size = 32, threads = 1, seed = 2 }
local net = facet.models.mobilefacenet { emb = 512 }
local head = facet.heads.new("am", { classes = 100, dim = 512 })
local opt = facet.optim.sgd({ net, head }, { lr = 0.01, momentum = 0.9 })
local r = facet.train { model = net, head = head, data = L, optimizer = opt, epochs = 1, stop_after = 12, quiet = true }
print(("MobileFaceNet training (batch 32, 1 loader thread): the loop waited for data %.2f%% of the time"):format(
  100 * r.data_wait))
os.execute("rm -rf '" .. dir .. "'")
