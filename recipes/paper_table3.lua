--- recipes/paper_table3.lua: every head of the MV-Softmax paper's Table 3
-- (Softmax, F-, HM-, A-, Arc-, AM-, F-Arc, F-AM, HM-Arc, HM-AM, MV-Arc-f,
-- MV-Arc-a, MV-AM-f, MV-AM-a) trained with the paper's head hyper-parameters
-- (s = 32, m and t as in the paper, focal gamma 2, hard-mining keep 0.9) on
-- one dataset with several seeds; prints a table in the paper's layout
-- (verification accuracy and TAR at FAR 1e-3 / 1e-4 / 1e-5 where the pairs
-- allow, mean ± spread over seeds) and writes a report with overlaid ROC curves.
-- The default dataset is facet's synthetic identities (docs/data.md), made
-- once into --data; `--rec PREFIX --bin FILE` uses real InsightFace data.
-- Usage: bin/facet run recipes/paper_table3.lua [--identities 300] [--images 8] [--size 32]
--          [--epochs 3] [--seeds 2] [--heads am,mv-am-a] [--model convnet|mobilefacenet|iresnet18] [--out run/table3]
local facet = require "facet"
local recipe = require "facet.recipe"

local p = recipe.parser("paper_table3", "Table 3 of the MV-Softmax paper on one dataset",
  { out = "run/table3", seeds = "seeds per head" })
p:option("--heads", "comma-separated subset of the table's rows (default: all)")
p:option("--model", "backbone: convnet, mobilefacenet or iresnet18", "convnet")
  :choices { "convnet", "mobilefacenet", "iresnet18" }
p:option("--rec", "train on this InsightFace .rec prefix instead")
p:option("--bin", "verify on this .bin instead")
local a = p:parse(arg)

-- the table's rows: name in the paper, facet head, options (the paper's values)
local ROWS = {
  { "Softmax", "norm-softmax", {} },
  { "F-Softmax", "f-softmax", {} },
  { "HM-Softmax", "hm-softmax", {} },
  { "A-Softmax", "a-softmax", {} },
  { "Arc-Softmax", "arc", {} },
  { "AM-Softmax", "am", {} },
  { "F-Arc-Softmax", "f-arc", {} },
  { "F-AM-Softmax", "f-am", {} },
  { "HM-Arc-Softmax", "hm-arc", {} },
  { "HM-AM-Softmax", "hm-am", {} },
  { "MV-Arc-Softmax-f", "mv-arc", { h = "fixed" } },
  { "MV-Arc-Softmax-a", "mv-arc", { h = "adaptive" } },
  { "MV-AM-Softmax-f", "mv-am", { h = "fixed" } },
  { "MV-AM-Softmax-a", "mv-am", { h = "adaptive" } },
}
local wanted
if a.heads then
  -- each entry names a row: its facet head (am) or head with h (mv-am-f, mv-am-a)
  local known, names = {}, {}
  for _, row in ipairs(ROWS) do
    for _, k in ipairs { row[2], row[2] .. (row[3].h and ("-" .. row[3].h:sub(1, 1)) or "") } do
      if not known[k] then known[k] = true; names[#names + 1] = k end
    end
  end
  wanted = {}
  for h in a.heads:gmatch("[^,]+") do
    if not known[h] then p:error(("--heads: unknown row '%s' (rows: %s)"):format(h, table.concat(names, ", "))) end
    wanted[h] = true
  end
  if not next(wanted) then p:error("--heads: name at least one row") end
end

assert(facet.sys.mkdir_p(a.out))
local rec_prefix, bin_path = a.rec, a.bin
if not rec_prefix then rec_prefix, bin_path = recipe.synthetic(a) end
local rec = facet.data.recordio(rec_prefix)
local classes = rec:num_identities() > 0 and rec:num_identities() or (function()
  local m = 0
  for i = 1, rec:num_images() do m = math.max(m, rec:label(i)) end
  return m + 1
end)()
local set = facet.data.load_bin(bin_path, { size = { a.size, a.size } })

local function backbone()
  if a.model == "iresnet18" then return facet.models.build("iresnet", { depth = 18, emb = 128, size = a.size }) end
  return facet.models.build(a.model, { emb = 128, size = a.size, in_channels = a.model == "convnet" and 3 or nil })
end
backbone()                                      -- a bad --model fails here, before any training

local results, dirs = {}, {}
for _, row in ipairs(ROWS) do
  local key = row[2] .. (row[3].h and ("-" .. row[3].h:sub(1, 1)) or "")
  if not wanted or wanted[key] or wanted[row[2]] then
    local accs, tars = {}, { [1e-3] = {}, [1e-4] = {}, [1e-5] = {} }
    for seed = 1, a.seeds do
      facet.manual_seed(seed)
      local net = backbone()
      local opts = { classes = classes, dim = 128, seed = seed }
      for k, v in pairs(row[3]) do opts[k] = v end
      local head = facet.heads.new(row[2], opts)
      local data = facet.data.loader { source = rec, size = { a.size, a.size }, batch_size = a.batch, seed = seed }
      -- the paper's optimizer and schedule (0.1, /10 at 4, 8, 10 of 12 epochs) scaled to --epochs
      local opt, schedule = recipe.sgd({ net, head }, a.epochs)
      local dir = ("%s/%s-seed%d"):format(a.out, key, seed)
      facet.train { model = net, head = head, data = data, optimizer = opt, epochs = a.epochs, quiet = true, log = dir,
        schedule = schedule }
      local r = facet.eval.verify_set(net, set)
      facet.report.save_verify(dir, { { name = row[1], result = r } })
      dirs[#dirs + 1] = dir
      accs[#accs + 1] = r.accuracy
      for far, list in pairs(tars) do if r.tar_at_far[far] then list[#list + 1] = r.tar_at_far[far] end end
      data:close()
    end
    results[#results + 1] = { name = row[1], accs = accs, tars = tars }
    io.stderr:write(("%s done\n"):format(row[1]))
  end
end

local function stat(list)
  local m, spread = recipe.mean_spread(list)
  return m and ("%.2f ±%.2f"):format(100 * m, 100 * spread) or "-"
end

print(("\n%s: %d identities, %d images, %d verification pairs; %s backbone, %d epochs, %d seeds (mean ± half range, %%)")
  :format(a.rec and rec_prefix or "synthetic identities", classes, rec:num_images(), set.pairs, a.model, a.epochs, a.seeds))
print(("%-18s %14s %14s %14s %14s"):format("method", "accuracy", "TAR@FAR=1e-3", "TAR@FAR=1e-4", "TAR@FAR=1e-5"))
for _, r in ipairs(results) do
  print(("%-18s %14s %14s %14s %14s"):format(r.name, stat(r.accs), stat(r.tars[1e-3]), stat(r.tars[1e-4]), stat(r.tars[1e-5])))
end
local report = facet.report.write(dirs, a.out)
print("\nreport with overlaid ROC curves: " .. report)
