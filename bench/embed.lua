--- bench/embed.lua: images/s of `facet embed` (facet.embed.run: read the
-- files, decode and resize in the loader's threads, forward in batches, flip
-- test) on this CPU for IResNet-50 and MobileFaceNet at 112 x 112, with the
-- flip test (the default, two forwards an image) and without; next to it the
-- model's forward alone on one batch of the same size, and the time a gallery
-- of 100k images would take at the measured rate.
-- The gallery is --images synthetic faces (facet.data.render_synthetic, PNG)
-- written to a temporary folder and removed at the end. Weights are random:
-- the cost does not depend on them.
-- Usage: bin/facet run bench/embed.lua [--images 64] [--batch 32] [--models iresnet50,mobilefacenet]
local facet = require "facet"
local embed = require "facet.embed"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"
io.stdout:setvbuf("line")

local NAME = "bench/embed.lua"
local o = { images = 64, batch = 32, models = "iresnet50,mobilefacenet" }
local i = 1
while arg and arg[i] do
  local k, v = arg[i]:match("^%-%-(.+)$"), arg[i + 1]
  if (k == "images" or k == "batch") and tonumber(v) and tonumber(v) >= 1 then o[k] = tonumber(v)
  elseif k == "models" and v then o.models = v
  else common.bad_argument(NAME, arg[i], v) end
  i = i + 2
end

local BUILD = {
  iresnet50 = function() return facet.models.iresnet { depth = 50 } end,
  iresnet18 = function() return facet.models.iresnet { depth = 18 } end,
  mobilefacenet = function() return facet.models.mobilefacenet {} end,
}

local dir = os.tmpname()
os.remove(dir)
assert(facet.sys.mkdir_p(dir .. "/g/0"))
for k = 1, o.images do
  local f = assert(io.open(("%s/g/0/%05d.png"):format(dir, k), "wb"))
  f:write(facet.data.encode_png(facet.data.render_synthetic(1, k % 50, k, 112, 0)))
  f:close()
end

print(("# %d images 112 x 112 (PNG), batch %d, %d threads, %s"):format(o.images, o.batch, facet.get_threads(),
  facet.blas_core()))
print(("%-14s %-8s %10s %12s %14s"):format("model", "flip", "images/s", "forward/s", "100k images"))
local function hours(s) return ("%.1f h"):format(s / 3600) end
for name in o.models:gmatch("[^,]+") do
  local build = BUILD[name]
  if not build then common.bad_argument(NAME, "--models", name) end
  facet.manual_seed(1)
  local model = build():evaluate()
  -- the forward alone, one batch (after one warm-up batch)
  local x = facet.randn { o.batch, 3, 112, 112 }
  model:forward(x)
  local t0 = facet.clock()
  model:forward(x)
  local fwd = o.batch / (facet.clock() - t0)
  for _, flip in ipairs { true, false } do
    local t = facet.clock()
    local r = embed.run(model, dir .. "/g", { batch_size = o.batch, flip = flip })
    local rate = r.embeddings:size(1) / (facet.clock() - t)
    print(("%-14s %-8s %10.1f %12.1f %14s"):format(name, flip and "on" or "off", rate, fwd, hours(1e5 / rate)))
  end
end
facet.sys.rm_rf(dir)
