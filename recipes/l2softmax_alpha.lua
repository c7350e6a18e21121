--- recipes/l2softmax_alpha.lua: the L2-softmax α study (Ranjan et al. 2017):
-- l2-softmax with α ∈ {1, 4, 8, 16, 32} and a learned α (starting at 16),
-- against plain softmax, on one dataset (synthetic identities by default),
-- several seeds; prints accuracy and TAR@FAR and, for the learned run, the
-- final α. Usage: bin/facet run recipes/l2softmax_alpha.lua [--epochs 3] [--seeds 2] [--size 32]
--                  [--identities 300] [--images 8] [--data run/synthetic] [--out run/alpha]
local facet = require "facet"
local argparse = require "argparse"

local p = argparse("l2softmax_alpha", "L2-softmax's alpha study")
p:option("--identities", "synthetic identities", "300"):convert(tonumber)
p:option("--images", "images per identity", "8"):convert(tonumber)
p:option("--size", "image size", "32"):convert(tonumber)
p:option("--pairs", "verification pairs", "2000"):convert(tonumber)
p:option("--epochs", "epochs", "3"):convert(tonumber)
p:option("--batch", "batch size", "64"):convert(tonumber)
p:option("--seeds", "seeds per setting", "2"):convert(tonumber)
p:option("--alphas", "comma-separated alphas; 'learned' for a trained one", "1,4,8,16,32,learned")
p:option("--data", "where the synthetic data is made (reused when present)", "run/synthetic")
p:option("--out", "output directory", "run/alpha")
local a = p:parse(arg)

local prefix, bin = a.data .. "/train", a.data .. "/train_verify.bin"
if not io.open(prefix .. ".rec") then
  assert(facet.sys.mkdir_p(a.data))
  facet.data.synthetic { out = prefix, identities = a.identities, images = a.images, size = a.size, pairs = a.pairs, seed = 1 }
end
local rec = facet.data.recordio(prefix)
local set = facet.data.load_bin(bin, { size = { a.size, a.size } })

local settings = { { "softmax", "softmax", {} } }
for v in a.alphas:gmatch("[^,]+") do
  if v == "learned" then settings[#settings + 1] = { "learned α (from 16)", "l2-softmax", { alpha = 16, learn_alpha = true } }
  else settings[#settings + 1] = { "α = " .. v, "l2-softmax", { alpha = tonumber(v) } } end
end

print(("%-22s %14s %14s %12s"):format("setting", "accuracy %", "TAR@1e-3 %", "final α"))
for _, s in ipairs(settings) do
  local accs, tars, alphas = {}, {}, {}
  for seed = 1, a.seeds do
    facet.manual_seed(seed)
    local net = facet.models.convnet { in_channels = 3, size = a.size, emb = 128 }
    local o = { classes = rec:num_identities(), dim = 128, seed = seed }
    for k, v in pairs(s[3]) do o[k] = v end
    local head = facet.heads.new(s[2], o)
    local data = facet.data.loader { source = rec, size = { a.size, a.size }, batch_size = a.batch, seed = seed }
    local opt = facet.optim.sgd({ net, head }, { lr = 0.1, momentum = 0.9, weight_decay = 5e-4, decay_bias_norm = false })
    local e = a.epochs
    facet.train { model = net, head = head, data = data, optimizer = opt, epochs = e, quiet = true,
      log = ("%s/%s-%d"):format(a.out, s[2] .. (o.alpha or ""), seed),
      schedule = facet.optim.schedule.multistep { lr = 0.1, milestones = { e * 4 / 12, e * 8 / 12, e * 10 / 12 } } }
    local r = facet.eval.verify_set(net, set)
    accs[#accs + 1], tars[#tars + 1] = r.accuracy, r.tar_at_far[1e-3]
    if head.alpha then alphas[#alphas + 1] = head.alpha:item() end
    data:close()
  end
  local function mean(t) local m = 0; for _, v in ipairs(t) do m = m + v / #t end; return m end
  local function spread(t) local lo, hi = math.huge, -math.huge; for _, v in ipairs(t) do lo, hi = math.min(lo, v), math.max(hi, v) end; return (hi - lo) / 2 end
  print(("%-22s %8.2f ±%4.2f %8.2f ±%4.2f %12s"):format(s[1], 100 * mean(accs), 100 * spread(accs),
    #tars > 0 and 100 * mean(tars) or 0, #tars > 0 and 100 * spread(tars) or 0,
    s[3].learn_alpha and ("%.2f"):format(mean(alphas)) or "-"))
end
