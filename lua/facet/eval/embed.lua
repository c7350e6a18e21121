--- facet.eval.embed(model, images [, { batch_size = 256, flip = false, norms = false }]):
-- embeddings of N x C x H x W images, in evaluation mode and in batches; with
-- flip = true each embedding is the sum of the image's and its horizontal
-- mirror's (InsightFace's flip test), L2-normalised either way.
-- norms = true also returns the N norms of the model's embedding of each
-- image before any of that (the image itself, not its mirror): the quality
-- score of MagFace- and AdaFace-trained models.
-- batch_size is an integer >= 1; an unknown option is an error.
local tensor = require "facet.tensor"
local check = require "facet.check"

local NAME = "facet.eval.embed"

-- horizontal mirror: reverse the last dim
local function flip(x, rev)
  local s = x:shape()
  local rows = x:numel() / s[#s]
  local t = x:reshape { rows, s[#s] }:t()           -- W x rows
  return t:index_select(rev):t():reshape(s)
end

--- The options embed takes (verify_set passes them on).
local OPTIONS = { "batch_size", "flip", "norms" }

return function(model, images, opts)
  opts = check.options(NAME, opts, OPTIONS)
  check.module(NAME, "model", model)
  check.tensor(NAME, "images", images)
  if images:dim() ~= 4 then
    check.fail(NAME, ("images must be N x C x H x W, got shape %s"):format(table.concat(images:shape(), "x")))
  end
  local bs = check.integer(NAME, "batch_size", opts.batch_size, { min = 1, default = 256 })
  local do_flip = check.boolean(NAME, "flip", opts.flip, false)
  local want_norms = check.boolean(NAME, "norms", opts.norms, false)
  local n = images:size(1)
  if n == 0 then check.fail(NAME, "images holds no image (N = 0)") end
  local was = model.training
  local function mode(on)                               -- a bare table with forward has no train/evaluate
    if type(model.train) == "function" then model:train(on) end
  end
  mode(false)
  local rev
  if do_flip then
    local w = images:size(4)
    local r = {}
    for i = 1, w do r[i] = w - i + 1 end
    rev = tensor.tensor(r, { dtype = "int32", device = images:device() })
  end
  -- the model's own mode comes back even when its forward fails
  local ok, out, norms = pcall(function()
    local out, norms
    for first = 1, n, bs do
      local b = math.min(bs, n - first + 1)
      local x = images:narrow(1, first, b):contiguous()
      local e = model:forward(x)
      if not tensor.is_tensor(e) or e:dim() ~= 2 or e:size(1) ~= b then
        check.fail(NAME, ("the model must map a batch of %d images to %d x dim embeddings, got %s"):format(b, b,
          tensor.is_tensor(e) and ("shape " .. table.concat(e:shape(), "x")) or check.describe(e)))
      end
      e = e:clone()
      if want_norms then
        norms = norms or tensor.empty({ n }, { device = e:device() })
        norms:narrow(1, first, b):copy(e:float():norm(2))
      end
      if rev then e:add_(model:forward(flip(x, rev))) end
      if not out then out = tensor.empty({ n, e:size(2) }, { device = e:device() }) end
      out:narrow(1, first, b):copy(e)
    end
    return out, norms
  end)
  mode(was ~= false)
  if not ok then error(out, 0) end
  if want_norms then return (out:l2_normalize()), norms end
  return (out:l2_normalize())
end
