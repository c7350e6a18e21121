--- bench/train_step.lua: images/s of a whole training step (forward, backward
-- and SGD with momentum, an am head over 1000 classes) for MobileFaceNet and
-- IResNet-18 at 112 x 112, batch 32, and the small convnet at 28 x 28, batch
-- 128; the achieved GFLOP/s of the step's convolutions and linear layers
-- (3x the forward FLOPs: forward, grad input, grad weight) next to the
-- machine's GEMM rate measured in the same run; and, with Debian's
-- python3-torch, the same models in PyTorch (bench/torch_compare.py) and the ratio.
-- Usage: bin/facet run bench/train_step.lua [--steps 5] [--models mobilefacenet,iresnet18,convnet] [--torch 1]
local facet = require "facet"

local o = { steps = 5, models = "mobilefacenet,iresnet18,convnet", torch = 1 }
local i = 1
while arg and arg[i] do
  local k = arg[i]:match("^%-%-(.+)$")
  if k == "models" then o.models = arg[i + 1]
  elseif k and o[k] ~= nil then o[k] = tonumber(arg[i + 1])
  else error("unknown argument " .. tostring(arg[i])) end
  i = i + 2
end

-- the machine's GEMM rate
local a, b = facet.randn({ 2048, 2048 }, { seed = 1 }), facet.randn({ 2048, 2048 }, { seed = 2 })
local c = facet.empty({ 2048, 2048 })
a:matmul(b, { out = c })
local t0, reps = facet.clock(), 5
for _ = 1, reps do a:matmul(b, { out = c }) end
local gemm = 2 * 2048 ^ 3 * reps / (facet.clock() - t0) / 1e9
a, b, c = nil, nil, nil

local MODELS = {
  mobilefacenet = { build = function() return facet.models.mobilefacenet { emb = 512 } end, batch = 32, size = 112, ch = 3 },
  iresnet18 = { build = function() return facet.models.iresnet { depth = 18, emb = 512 } end, batch = 32, size = 112, ch = 3 },
  convnet = { build = function() return facet.models.convnet { emb = 128 } end, batch = 128, size = 28, ch = 1 },
}

print(("%d threads, OpenBLAS %s; GEMM 2048^3: %.1f GFLOP/s"):format(facet.get_threads(), facet.blas_core(), gemm))
print(("%-14s %6s %10s %12s %12s %10s"):format("model", "batch", "img/s", "step GFLOP", "GFLOP/s", "of GEMM"))
local results = {}
for name in o.models:gmatch("[^,]+") do
  local spec = MODELS[name]
  if not spec then error("unknown model " .. name) end
  facet.manual_seed(1)
  local net = spec.build()
  local emb = name == "convnet" and 128 or 512
  local head = facet.heads.new("am", { classes = 1000, dim = emb, seed = 1 })
  local opt = facet.optim.sgd({ net, head }, { lr = 0.01, momentum = 0.9, weight_decay = 5e-4 })
  local x = facet.randn({ spec.batch, spec.ch, spec.size, spec.size }, { seed = 3 })
  local y = facet.arange(spec.batch, { dtype = "int64" })
  local fwd = facet.nn.summary(net, { spec.batch, spec.ch, spec.size, spec.size }, { print = false }).flops
  net:first_leaf().no_input_grad = true     -- as facet.train does: the input is data
  local function step()
    opt:zero_grad()
    head:forward(net:forward(x), y)
    net:backward(x, head:backward())
    opt:step()
  end
  step()
  local best = math.huge
  for _ = 1, o.steps do
    local s = facet.clock()
    step()
    best = math.min(best, facet.clock() - s)
  end
  local ips = spec.batch / best
  local rate = 3 * fwd / best / 1e9
  results[name] = ips
  print(("%-14s %6d %10.1f %12.2f %12.1f %9.0f%%"):format(name, spec.batch, ips, 3 * fwd / 1e9, rate, 100 * rate / gemm))
end

if o.torch ~= 0 then
  local p = io.popen(("env -u LD_PRELOAD /usr/bin/python3 bench/torch_compare.py --threads %d --steps %d --models %s 2>&1")
    :format(facet.get_threads(), o.steps, o.models))
  local out = p:read("*a")
  p:close()
  print("\nPyTorch (bench/torch_compare.py), same models, batch and threads:")
  local any = false
  for name, ips in out:gmatch("(%w+) ([%d%.]+)") do
    if results[name] then
      any = true
      print(("%-14s %10.1f img/s   facet / PyTorch = %.2f"):format(name, tonumber(ips), results[name] / tonumber(ips)))
    end
  end
  if not any then print("(no PyTorch figures: " .. out:gsub("\n", " "):sub(1, 300) .. ")") end
end
