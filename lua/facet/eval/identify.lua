--- facet.eval.identify(probe, probe_labels, gallery, gallery_labels [, opts]):
-- closed-set identification (MegaFace style): each probe is ranked against
-- the gallery by cosine similarity; the rank of its first correct match gives
-- rank-1 accuracy and the CMC curve (cmc[k]: fraction of probes whose match is
-- within the top k, k = 1 .. opts.max_rank (10)). Distractors are gallery rows
-- whose label is -1: they never match but can outrank the right identity.
-- Similarities come from GEMMs over blocks of opts.block gallery rows
-- (65536), so a million-image gallery needs only a probe x block matrix.
-- A probe whose identity is absent from the gallery is an error; so are a
-- block or max_rank that is not an integer >= 1 (max_rank at most the larger
-- of 10 and the gallery's size: ranks beyond the gallery are all hits), and an
-- unknown option.
local tensor = require "facet.tensor"
local check = require "facet.check"

local NAME = "facet.eval.identify"
local OPTIONS = { "max_rank", "block" }

local function labels_of(l, n, what)
  local t
  if type(l) == "table" then t = l
  elseif tensor.is_tensor(l) then t = l:to("cpu"):totable()
  else check.fail(NAME, ("%s_labels must be a table or a tensor, got %s"):format(what, check.describe(l))) end
  if #t ~= n then check.fail(NAME, ("%d %s embeddings but %d labels in %s_labels"):format(n, what, #t, what)) end
  for i = 1, n do
    local v = t[i]
    if (type(v) ~= "number" and type(v) ~= "string") or v ~= v then
      check.fail(NAME, ("%s_labels[%d] must be a number or a string, got %s"):format(what, i, check.describe(v)))
    end
  end
  return t
end

return function(probe, probe_labels, gallery, gallery_labels, opts)
  local name = NAME
  opts = check.options(name, opts, OPTIONS)
  check.tensor(name, "probe", probe, { dim = 2 })
  check.tensor(name, "gallery", gallery, { dim = 2 })
  if probe:size(2) ~= gallery:size(2) then
    check.fail(name, ("probe dim %d, gallery dim %d: the embeddings must have one size"):format(probe:size(2),
      gallery:size(2)))
  end
  local P, G = probe:size(1), gallery:size(1)
  if P == 0 or G == 0 then check.fail(name, ("want at least one probe and one gallery row, got %d and %d"):format(P, G)) end
  local pl = labels_of(probe_labels, P, "probe")
  local gl = labels_of(gallery_labels, G, "gallery")
  local max_rank = check.integer(name, "max_rank", opts.max_rank, { min = 1, max = math.max(10, G), default = 10 })
  local block = check.integer(name, "block", opts.block, { min = 1, default = 65536 })
  local present = {}
  for _, l in ipairs(gl) do if l ~= -1 then present[l] = true end end
  for i, l in ipairs(pl) do
    if not present[l] then check.fail(name, ("probe %d's identity %s is not in the gallery"):format(i, tostring(l))) end
  end
  local pn = probe:to("cpu"):float():l2_normalize()
  local gn = gallery:to("cpu"):float():l2_normalize()
  -- pass 1: each probe's best similarity to its own identity
  -- pass 2: how many gallery rows of other identities score strictly higher
  local best_true = {}
  for i = 1, P do best_true[i] = -math.huge end
  local outranked = {}
  for i = 1, P do outranked[i] = 0 end
  for pass = 1, 2 do
    for first = 1, G, block do
      local b = math.min(block, G - first + 1)
      local sims = pn:matmul(gn:narrow(1, first, b), { transpose_b = true })   -- P x b
      local sp = sims:data_ptr()
      for i = 1, P do
        local row, li = (i - 1) * b, pl[i]
        if pass == 1 then
          for j = 1, b do
            if gl[first + j - 1] == li and sp[row + j - 1] > best_true[i] then best_true[i] = sp[row + j - 1] end
          end
        else
          local bt, n = best_true[i], outranked[i]
          for j = 1, b do
            if gl[first + j - 1] ~= li and sp[row + j - 1] > bt then n = n + 1 end
          end
          outranked[i] = n
        end
      end
    end
  end
  local cmc = {}
  for k = 1, max_rank do
    local hits = 0
    for i = 1, P do if outranked[i] < k then hits = hits + 1 end end
    cmc[k] = hits / P
  end
  return { rank1 = cmc[1], cmc = cmc, ranks = outranked }
end
