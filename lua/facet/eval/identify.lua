--- facet.eval.identify(probe, probe_labels, gallery, gallery_labels [, opts]):
-- closed-set identification (MegaFace style): each probe is ranked against
-- the gallery by cosine similarity; the rank of its first correct match gives
-- rank-1 accuracy and the CMC curve (cmc[k]: fraction of probes whose match is
-- within the top k, k = 1 .. opts.max_rank (10)). Distractors are gallery rows
-- whose label is -1: they never match but can outrank the right identity.
-- Similarities come from GEMMs over blocks of opts.block gallery rows
-- (65536), so a million-image gallery needs only a probe x block matrix.
-- A probe whose identity is absent from the gallery is an error.
local tensor = require "facet.tensor"

local function labels_of(l, n, what)
  local t
  if type(l) == "table" then t = l
  elseif tensor.is_tensor(l) then t = l:to("cpu"):totable()
  else error(("facet.eval.identify: %s labels must be a table or tensor"):format(what), 3) end
  if #t ~= n then error(("facet.eval.identify: %d %s embeddings but %d labels"):format(n, what, #t), 3) end
  return t
end

return function(probe, probe_labels, gallery, gallery_labels, opts)
  opts = opts or {}
  local name = "facet.eval.identify"
  for _, t in ipairs { probe, gallery } do
    if not tensor.is_tensor(t) or t:dim() ~= 2 then error(name .. ": embeddings must be 2-D tensors", 2) end
  end
  if probe:size(2) ~= gallery:size(2) then
    error(("%s: probe dim %d, gallery dim %d"):format(name, probe:size(2), gallery:size(2)), 2)
  end
  local P, G = probe:size(1), gallery:size(1)
  local pl = labels_of(probe_labels, P, "probe")
  local gl = labels_of(gallery_labels, G, "gallery")
  local max_rank = opts.max_rank or 10
  local block = opts.block or 65536
  local present = {}
  for _, l in ipairs(gl) do if l ~= -1 then present[l] = true end end
  for i, l in ipairs(pl) do
    if not present[l] then error(("%s: probe %d's identity %s is not in the gallery"):format(name, i, tostring(l)), 2) end
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
