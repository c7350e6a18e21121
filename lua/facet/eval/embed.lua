--- facet.eval.embed(model, images [, { batch_size = 256, flip = false }]):
-- embeddings of N x C x H x W images, in evaluation mode and in batches; with
-- flip = true each embedding is the sum of the image's and its horizontal
-- mirror's (InsightFace's flip test), L2-normalised either way.
local tensor = require "facet.tensor"

-- horizontal mirror: reverse the last dim
local function flip(x, rev)
  local s = x:shape()
  local rows = x:numel() / s[#s]
  local t = x:reshape { rows, s[#s] }:t()           -- W x rows
  return t:index_select(rev):t():reshape(s)
end

return function(model, images, opts)
  opts = opts or {}
  if not tensor.is_tensor(images) or images:dim() ~= 4 then error("facet.eval.embed: want N x C x H x W images", 2) end
  local n, bs = images:size(1), opts.batch_size or 256
  local was = model.training
  model:evaluate()
  local out
  local rev
  if opts.flip then
    local w = images:size(4)
    local r = {}
    for i = 1, w do r[i] = w - i + 1 end
    rev = tensor.tensor(r, { dtype = "int32", device = images:device() })
  end
  for first = 1, n, bs do
    local b = math.min(bs, n - first + 1)
    local x = images:narrow(1, first, b):contiguous()
    local e = model:forward(x):clone()
    if rev then e:add_(model:forward(flip(x, rev))) end
    if not out then out = tensor.empty({ n, e:size(2) }, { device = e:device() }) end
    out:narrow(1, first, b):copy(e)
  end
  model:train(was)
  return (out:l2_normalize())
end
