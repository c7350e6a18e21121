--- facet.recipe: what the study recipes (recipes/paper_table3.lua,
-- recipes/l2softmax_alpha.lua) share: the same data and training options, the
-- synthetic data made once, the paper's optimizer and schedule, and the
-- mean ± half range over seeds.
--   local recipe = require "facet.recipe"
--   local p = recipe.parser("name", "description", { out = "run/x", seeds = "seeds per head" })
--   p:option(...)                     -- the recipe's own options
--   local a = p:parse(arg)
--   local prefix, bin = recipe.synthetic(a)
--   local opt, schedule = recipe.sgd({ net, head }, a.epochs)
local argparse = require "argparse"
local check = require "facet.check"
local data = require "facet.data"
local optim = require "facet.optim"
local sys = require "facet.sys"

local M = {}

--- An argparse converter for an integer option of at least min (and at most
-- max): "--epochs must be an integer >= 1, got '0'" is the parser's error.
function M.integer(name, min, max) return check.flag(name, { integer = true, min = min, max = max }) end

--- An argparse converter for a finite number option (spec: check.number's min, max, gt, lt).
function M.number(name, spec) return check.flag(name, spec) end

--- An argparse parser with the options the studies share: --identities,
-- --images, --size, --pairs (the synthetic data), --epochs, --batch, --seeds,
-- --data (where the synthetic data is made) and --out. defaults: out (the
-- output directory) and seeds (the --seeds help text). Numeric options are
-- checked (integers in range: 0, -1, 1.5, nan or inf is the parser's error).
function M.parser(name, description, defaults)
  defaults = defaults or {}
  local p = argparse(name, description)
  p:option("--identities", "synthetic identities", "300"):convert(M.integer("--identities", 2, 1000000))
  p:option("--images", "images per identity", "8"):convert(M.integer("--images", 2, 100000))
  p:option("--size", "image size", "32"):convert(M.integer("--size", 8, 4096))
  p:option("--pairs", "verification pairs", "2000"):convert(M.integer("--pairs", 2, 100000000))
  p:option("--epochs", "epochs", "3"):convert(M.integer("--epochs", 1, 100000))
  p:option("--batch", "batch size", "64"):convert(M.integer("--batch", 1, 1000000))
  p:option("--seeds", defaults.seeds or "seeds per setting", "2"):convert(M.integer("--seeds", 1, 10000))
  p:option("--data", "where the synthetic data is made (reused when present)", "run/synthetic")
  p:option("--out", "output directory", defaults.out or "run/out")
  return p
end

--- The synthetic identities of the parsed options a, made into a.data once
-- (facet.data.synthetic, seed 1) and reused when present; returns the
-- RecordIO prefix and the verification .bin's path.
function M.synthetic(a)
  local prefix, bin = a.data .. "/train", a.data .. "/train_verify.bin"
  if not (sys.exists(prefix .. ".rec") and sys.exists(bin)) then
    assert(sys.mkdir_p(a.data))
    local t0 = sys.clock()
    local r = data.synthetic { out = prefix, identities = a.identities, images = a.images, size = a.size,
      pairs = a.pairs, seed = 1 }
    print(("made %d synthetic images of %d identities (%d hard) and %d pairs in %.0f s"):format(r.images,
      r.identities, r.hard, r.pairs, sys.clock() - t0))
  end
  return prefix, bin
end

--- The paper's optimizer for sources ({ net, head }): SGD, lr 0.1, momentum
-- 0.9, weight decay 5e-4 (not on biases and norms), and its schedule (/10 at
-- epochs 4, 8 and 10 of 12) scaled to epochs.
function M.sgd(sources, epochs)
  local opt = optim.sgd(sources, { lr = 0.1, momentum = 0.9, weight_decay = 5e-4, decay_bias_norm = false })
  local e = epochs
  return opt, optim.schedule.multistep { lr = 0.1, milestones = { e * 4 / 12, e * 8 / 12, e * 10 / 12 } }
end

--- The names --head takes: the catalogue's and their aliases (arcface, cosface ...).
function M.head_names()
  local heads = require "facet.heads"
  local t = heads.names()
  for k in pairs(heads.ALIASES) do t[#t + 1] = k end
  table.sort(t)
  return t
end

--- argparse converter of --precision (facet.train's precision: the backbone's
-- activations in fp32, bf16 or fp16; docs/mixed-precision.md).
function M.precision(v)
  if v == "fp32" or v == "bf16" or v == "fp16" then return v end
  return nil, ("--precision must be fp32, bf16 or fp16, got '%s'"):format(v)
end

--- Adds --dist, --sync-bn and --allreduce-dtype to an argparse parser p
-- (docs/distributed.md).
function M.dist_options(p)
  p:flag("--dist", "data parallel over the ranks mpirun/srun started: --batch is the global batch, split among them")
  p:flag("--sync-bn", "synchronise BatchNorm statistics across the ranks (with --dist)")
  p:option("--allreduce-dtype", "fp32, fp16 or bf16: the dtype the gradient buckets travel in (with --dist)", "fp32")
    :choices { "fp32", "fp16", "bf16" }
  return p
end

--- facet.train's dist options for the parsed arguments a: joins facet.dist
-- when --dist is given (world size 1 without a launcher) and returns
-- { dist =, sync_bn =, allreduce_dtype = } to merge into facet.train's table.
function M.dist(a)
  if a.sync_bn and not a.dist then error("--sync-bn needs --dist", 0) end
  local wire = a.allreduce_dtype or "fp32"
  if wire ~= "fp32" and not a.dist then error("--allreduce-dtype " .. wire .. " needs --dist", 0) end
  if not a.dist then return { dist = false, sync_bn = false } end
  require("facet.dist").init()
  return { dist = true, sync_bn = a.sync_bn or false, allreduce_dtype = wire }
end

--- The mean and half the range of a list of numbers (nil for an empty list).
function M.mean_spread(list)
  if #list == 0 then return nil end
  local m, lo, hi = 0, math.huge, -math.huge
  for _, v in ipairs(list) do m, lo, hi = m + v / #list, math.min(lo, v), math.max(hi, v) end
  return m, (hi - lo) / 2
end

return M
