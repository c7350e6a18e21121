--- facet.eval.verify_set(model, set [, opts]) -> facet.eval.verify's result
-- Verifies a model on a set from facet.data.load_bin (images 2P x C x H x W,
-- pair p = images 2p-1 and 2p): embeds the images, then runs the protocol.
-- opts: flip (true), batch_size, device ("cpu"), and verify's protocol / folds
-- (folds default to min(10, P)). The set's images and pair indices are moved
-- to the device once per set and device, so evaluating every N steps copies nothing.
local tensor = require "facet.tensor"
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

return function(model, set, opts)
  opts = opts or {}
  if type(set) ~= "table" or not tensor.is_tensor(set.images) or type(set.issame) ~= "table" then
    error("facet.eval.verify_set: want a set from facet.data.load_bin (decoded)", 2)
  end
  if set.images:size(1) ~= 2 * set.pairs then
    error(("facet.eval.verify_set: %d images for %d pairs"):format(set.images:size(1), set.pairs), 2)
  end
  local d = on_device(set, opts.device or "cpu")
  local e = embed(model, d.images, { flip = opts.flip ~= false, batch_size = opts.batch_size })
  return verify(e:index_select(d.i1), e:index_select(d.i2), set.issame,
    { protocol = opts.protocol, folds = opts.folds or math.min(10, set.pairs) })
end
