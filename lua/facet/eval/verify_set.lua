--- facet.eval.verify_set(model, set [, opts]) -> facet.eval.verify's result
-- Verifies a model on a set from facet.data.load_bin (images 2P x C x H x W,
-- pair p = images 2p-1 and 2p): embeds the images, then runs the protocol.
-- opts: flip (true), batch_size, device ("cpu"), and verify's protocol / folds
-- (folds default to min(10, P)). The set's images and pair indices are moved
-- to the device once per set and device, so evaluating every N steps copies nothing.
local tensor = require "facet.tensor"
local check = require "facet.check"
local embed = require "facet.eval.embed"
local verify = require "facet.eval.verify"

local cache = setmetatable({}, { __mode = "k" }) -- set -> device -> { images, i1, i2 }

local function on_device(set, device)
  local per = cache[set] or {}
  cache[set] = per
  if not per[device] then
    local i1, i2 = {}, {}
    for p = 1, set.pairs do i1[p], i2[p] = 2 * p - 1, 2 * p end
    per[device] = {
      images = set.images:to(device),
      i1 = tensor.tensor(i1, { dtype = "int32", device = device }),
      i2 = tensor.tensor(i2, { dtype = "int32", device = device }),
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
  return verify(e:index_select(d.i1), e:index_select(d.i2), set.issame,
    { protocol = opts.protocol, folds = opts.folds or math.min(10, set.pairs), fars = opts.fars })
end
