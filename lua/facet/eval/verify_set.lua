--- facet.eval.verify_set(model, set [, opts]) -> facet.eval.verify's result
-- Verifies a model on a set from facet.data.load_bin (images 2P x C x H x W,
-- pair p = images 2p-1 and 2p): embeds the images, then runs the protocol.
-- opts: flip (true), batch_size, device ("cpu"), and verify's protocol / folds
-- (folds default to min(10, P)). The set's images are moved to the device
-- once per set and device, so evaluating every N steps copies nothing; the
-- pair cosines come from the embeddings and index lists in C (no per-pair
-- embedding tensors), then facet.eval.verify's protocol runs on them.
local tensor = require "facet.tensor"
local check = require "facet.check"
local embed = require "facet.eval.embed"
local roc = require "facet.eval.roc"
local C = require("facet.core").C

local DEFAULT_FARS = { 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6 }

local cache = setmetatable({}, { __mode = "k" }) -- set -> device -> { images, i1, i2 }

local function on_device(set, device)
  local per = cache[set] or {}
  cache[set] = per
  if not per[device] then
    local i1, i2 = {}, {}
    for p = 1, set.pairs do i1[p], i2[p] = 2 * p - 1, 2 * p end
    per[device] = {
      images = set.images:to(device),
      i1 = tensor.tensor(i1, { dtype = "int32" }),      -- on the CPU: the pair scores are computed there
      i2 = tensor.tensor(i2, { dtype = "int32" }),
    }
  end
  return per[device]
end

local NAME = "facet.eval.verify_set"
local OPTIONS = { "flip", "batch_size", "device", "protocol", "folds", "fars" }

return function(model, set, opts)
  opts = check.options(NAME, opts, OPTIONS)
  check.module(NAME, "model", model)
  if type(set) ~= "table" or not tensor.is_tensor(set.images) or type(set.issame) ~= "table" then
    check.fail(NAME, ("set must be a decoded set from facet.data.load_bin ({ images, issame, pairs }), got %s")
      :format(type(set) == "table" and "a table without them" or check.describe(set)))
  end
  check.integer(NAME, "set.pairs", set.pairs, { min = 1 })
  if set.images:dim() ~= 4 or set.images:size(1) ~= 2 * set.pairs then
    check.fail(NAME, ("set.images holds %d images for %d pairs (want 2 per pair, N x C x H x W; shape %s)"):format(
      set.images:dim() > 0 and set.images:size(1) or 0, set.pairs, table.concat(set.images:shape(), "x")))
  end
  local device = check.enum(NAME, "device", opts.device, { "cpu", "cuda" }, "cpu")
  local flip = check.boolean(NAME, "flip", opts.flip, true)
  check.integer(NAME, "batch_size", opts.batch_size, { min = 1, optional = true })
  check.enum(NAME, "protocol", opts.protocol, { "insightface", "facexzoo" }, "insightface")
  check.integer(NAME, "folds", opts.folds, { min = 2, max = math.max(2, set.pairs), optional = true })
  check.list(NAME, "fars", opts.fars, { gt = 0, max = 1, min_len = 1, optional = true })
  local d = on_device(set, device)
  local e = embed(model, d.images, { flip = flip, batch_size = opts.batch_size })
  -- pair cosines from the index lists (no per-pair embedding tensors)
  local u = e:to("cpu"):contiguous()
  local cos = tensor.empty { set.pairs }
  roc.ccheck(NAME, C.facet_eval_pair_scores(cos.h, u.h, u.h, d.i1.h, d.i2.h, 1))
  local same, n_same = roc.flags(NAME, "set.issame", set.issame, set.pairs)
  local folds = check.integer(NAME, "folds", opts.folds or math.min(10, set.pairs), { min = 2, max = set.pairs })
  local res = roc.verify_cosines(NAME, cos, same, n_same, opts.protocol or "insightface", folds,
    opts.fars or DEFAULT_FARS, 20001)
  cos:free()
  same:free()
  return res
end
