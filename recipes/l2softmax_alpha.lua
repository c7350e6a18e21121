--- recipes/l2softmax_alpha.lua: the L2-softmax α study (Ranjan et al. 2017):
-- l2-softmax with α ∈ {1, 4, 8, 16, 32} and a learned α (starting at 16),
-- against plain softmax, on one dataset (synthetic identities by default),
-- several seeds; prints accuracy and TAR@FAR and, for the learned run, the
-- final α. Usage: bin/facet run recipes/l2softmax_alpha.lua [--epochs 3] [--seeds 2] [--size 32]
--                  [--identities 300] [--images 8] [--data run/synthetic] [--out run/alpha]
local facet = require "facet"
local recipe = require "facet.recipe"

local p = recipe.parser("l2softmax_alpha", "L2-softmax's alpha study", { out = "run/alpha" })
p:option("--alphas", "comma-separated alphas; 'learned' for a trained one", "1,4,8,16,32,learned")
local a = p:parse(arg)

local prefix, bin = recipe.synthetic(a)
local rec = facet.data.recordio(prefix)
local set = facet.data.load_bin(bin, { size = { a.size, a.size } })

local settings = { { "softmax", "softmax", {} } }
local alpha_ok = recipe.number("--alphas", { gt = 0 })
for v in a.alphas:gmatch("[^,]+") do
  if v == "learned" then settings[#settings + 1] = { "learned α (from 16)", "l2-softmax", { alpha = 16, learn_alpha = true } }
  else
    local alpha, err = alpha_ok(v)
    if not alpha then p:error(err .. " (each entry a number > 0 or 'learned')") end
    settings[#settings + 1] = { "α = " .. v, "l2-softmax", { alpha = alpha } }
  end
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
    local opt, schedule = recipe.sgd({ net, head }, a.epochs)
    facet.train { model = net, head = head, data = data, optimizer = opt, epochs = a.epochs, quiet = true,
      log = ("%s/%s-%d"):format(a.out, s[2] .. (o.alpha or ""), seed), schedule = schedule }
    local r = facet.eval.verify_set(net, set)
    accs[#accs + 1], tars[#tars + 1] = r.accuracy, r.tar_at_far[1e-3]
    if head.alpha then alphas[#alphas + 1] = head.alpha:item() end
    data:close()
  end
  local acc, acc_spread = recipe.mean_spread(accs)
  local tar, tar_spread = recipe.mean_spread(tars)
  print(("%-22s %8.2f ±%4.2f %8.2f ±%4.2f %12s"):format(s[1], 100 * acc, 100 * acc_spread, 100 * (tar or 0),
    100 * (tar_spread or 0), s[3].learn_alpha and ("%.2f"):format((recipe.mean_spread(alphas))) or "-"))
end
