--- facet.eval.identify(probe, probe_labels, gallery, gallery_labels [, opts]):
-- identification by cosine similarity, in one pass of blocked GEMMs that keeps
-- each probe's top max_rank other-identity scores (core/src/eval.c,
-- facet_eval_topk): memory is the gallery, one probes x block buffer and
-- probes x max_rank scores, whatever the gallery's size.
-- A probe's rank is the number of gallery rows of other identities scoring
-- strictly above its best match (0 = first), exact below max_rank and
-- reported as max_rank beyond; cmc[k] is the fraction of probes (or trials)
-- of rank < k, k = 1 .. max_rank. Gallery rows labelled -1 are distractors.
-- opts:
--   max_rank (10; at most the larger of 10 and the gallery's size), block
--   (gallery rows per GEMM; default: a 64 Mi-float buffer, probes x block);
--   positives, positive_labels: MegaFace's protocol. The gallery is the shared
--   distractors (gallery_labels may be nil: all distractors); each pair of a
--   probe and a positive of its identity is a trial, ranked among the
--   distractors; a positive that is the probe itself is skipped when
--   positives is the probe tensor (opts.exclude_self, default then true,
--   compares row numbers);
--   open_set (false): probes whose identity is not in the gallery are
--   non-mated searches (else they are an error); the result adds
--   tpir_at_fpir[f] for f in opts.fpirs (1e-1, 1e-2, 1e-3): the fraction of
--   mated probes found at rank 1 scoring above the threshold that only a
--   fraction f of the non-mated probes' top scores pass (reported when there
--   are at least 1/f non-mated probes).
-- Returns { rank1, cmc, ranks, max_rank [, trials] [, tpir_at_fpir, mated, non_mated] }.
-- Embeddings are L2-normalised here (rows already of unit norm are used as
-- they are, without a copy). Every option is checked; unknown ones are errors.
local ffi = require "ffi"
local tensor = require "facet.tensor"
local check = require "facet.check"
local roc = require "facet.eval.roc"
local C = require("facet.core").C

local NAME = "facet.eval.identify"
local OPTIONS = { "max_rank", "block", "positives", "positive_labels", "exclude_self", "open_set", "fpirs" }
local BUFFER_FLOATS = 64 * 1024 * 1024

-- rows of unit norm as they are (contiguous float32 CPU), else a normalised copy;
-- the second result says whether it is a copy (to free)
local function unit(name, e)
  check.tensor(NAME, name, e, { dim = 2 })
  if e:device() == "cpu" and e:dtype() == "float32" and e:is_contiguous() and e:size(1) > 0 then
    local n = tensor.empty { e:size(1) }
    roc.ccheck(NAME, C.facet_tensor_row_norms(n.h, e.h))
    local p, ok = n:data_ptr(), true
    for i = 0, e:size(1) - 1 do
      if not (math.abs(p[i] - 1) <= 1e-5) then ok = false break end
    end
    n:free()
    if ok then return e, false end
  end
  return roc.unit_rows(NAME, name, e), true
end

local function cmc_of(ranks, n, max_rank)
  local hist = {}
  for k = 0, max_rank do hist[k] = 0 end
  for i = 1, n do hist[ranks[i]] = hist[ranks[i]] + 1 end
  local cmc, hits = {}, 0
  for k = 1, max_rank do
    hits = hits + hist[k - 1]
    cmc[k] = n > 0 and hits / n or 0
  end
  return cmc
end

-- the number of the k top scores (descending) strictly above v
local function rank_of(top, row, k, v)
  local r = 0
  while r < k and top[row + r] > v do r = r + 1 end
  return r
end

return function(probe, probe_labels, gallery, gallery_labels, opts)
  opts = check.options(NAME, opts, OPTIONS)
  check.tensor(NAME, "probe", probe, { dim = 2 })
  check.tensor(NAME, "gallery", gallery, { dim = 2 })
  if probe:size(2) ~= gallery:size(2) then
    check.fail(NAME, ("probe dim %d, gallery dim %d: the embeddings must have one size"):format(probe:size(2),
      gallery:size(2)))
  end
  local P, G = probe:size(1), gallery:size(1)
  if P == 0 or G == 0 then check.fail(NAME, ("want at least one probe and one gallery row, got %d and %d"):format(P, G)) end
  local max_rank = check.integer(NAME, "max_rank", opts.max_rank, { min = 1, max = math.max(10, G), default = 10 })
  local block = check.integer(NAME, "block", opts.block,
    { min = 1, default = math.max(1, math.floor(BUFFER_FLOATS / P)) })
  local open_set = check.boolean(NAME, "open_set", opts.open_set, false)
  local fpirs = check.list(NAME, "fpirs", opts.fpirs, { gt = 0, max = 1, min_len = 1, default = { 1e-1, 1e-2, 1e-3 } })
  local megaface = opts.positives ~= nil
  if not megaface and (opts.positive_labels ~= nil or opts.exclude_self ~= nil) then
    check.fail(NAME, "positive_labels and exclude_self need opts.positives")
  end
  if megaface and open_set then check.fail(NAME, "open_set does not apply with positives (MegaFace)") end

  -- labels: one code space for probes, gallery and positives
  local all, np_, ng = {}, P, (gallery_labels ~= nil or not megaface) and G or 0
  local function gather(l, n, what)
    if tensor.is_tensor(l) then l = l:to("cpu"):totable() end
    if type(l) ~= "table" then check.fail(NAME, ("%s must be a table or a tensor, got %s"):format(what, check.describe(l))) end
    if #l ~= n then
      check.fail(NAME, ("%d %s embeddings but %d labels in %s"):format(n, what:match("^(%a+)_"), #l, what))
    end
    for i = 1, n do
      local v = l[i]
      if (type(v) ~= "number" and type(v) ~= "string") or v ~= v then
        check.fail(NAME, ("%s[%d] must be a number or a string, got %s"):format(what, i, check.describe(v)))
      end
      all[#all + 1] = v
    end
    return l
  end
  local pl = gather(probe_labels, P, "probe_labels")
  if ng > 0 then gather(gallery_labels, G, "gallery_labels") end
  local pos, Q
  if megaface then
    check.tensor(NAME, "positives", opts.positives, { dim = 2 })
    pos, Q = opts.positives, opts.positives:size(1)
    if pos:size(2) ~= probe:size(2) then
      check.fail(NAME, ("positives dim %d, probe dim %d"):format(pos:size(2), probe:size(2)))
    end
    gather(opts.positive_labels == nil and rawequal(pos, probe) and pl or opts.positive_labels, Q, "positive_labels")
  end
  local codes = roc.labels(NAME, "labels", all, #all)
  local cp = codes:data_ptr()
  for i = 0, P - 1 do
    if cp[i] == -1 then check.fail(NAME, ("probe_labels[%d] is -1, the distractor label"):format(i + 1)) end
  end
  local plab = codes:narrow(1, 1, P):contiguous()
  local glab
  if ng > 0 then glab = codes:narrow(1, P + 1, G):contiguous() end

  local pu, pcopy = unit("probe", probe)
  local gu, gcopy = unit("gallery", gallery)
  local k = max_rank
  local top = tensor.empty { P, k }
  local genuine = (glab and not megaface) and tensor.empty { P } or nil
  if megaface then
    -- the distractors alone: every gallery row other-identity (labels only flag -1 rows as such)
    if glab then
      local gp = glab:data_ptr()
      for j = 0, G - 1 do
        if gp[j] ~= -1 then check.fail(NAME, ("with positives the gallery holds distractors only (label -1); gallery_labels[%d] is not -1"):format(j + 1)) end
      end
    end
    roc.ccheck(NAME, C.facet_eval_topk(top.h, nil, nil, pu.h, gu.h, nil, nil, block))
  else
    roc.ccheck(NAME, C.facet_eval_topk(top.h, nil, genuine.h, pu.h, gu.h, plab.h, glab.h, block))
  end
  if gcopy then gu:free() end
  local tp = top:data_ptr()
  local res = { max_rank = max_rank }

  if megaface then
    local qu, qcopy = unit("positives", pos)
    local exclude = check.boolean(NAME, "exclude_self", opts.exclude_self, rawequal(pos, probe))
    if exclude and Q ~= P then check.fail(NAME, ("exclude_self needs as many positives as probes (%d and %d)"):format(Q, P)) end
    local by = {}
    for j = 0, Q - 1 do
      local c = tonumber(cp[P + ng + j])
      if c ~= -1 then by[c] = by[c] or {}; local l = by[c]; l[#l + 1] = j + 1 end
    end
    local n = 0
    for i = 0, P - 1 do
      for _, j in ipairs(by[tonumber(cp[i])] or {}) do
        if not (exclude and j == i + 1) then n = n + 1 end
      end
    end
    if n == 0 then check.fail(NAME, "no trial: no positive shares a probe's identity") end
    local ii, jj = tensor.empty({ n }, { dtype = "int64" }), tensor.empty({ n }, { dtype = "int64" })
    local pi, pj, t = ii:data_ptr(), jj:data_ptr(), 0
    for i = 0, P - 1 do
      for _, j in ipairs(by[tonumber(cp[i])] or {}) do
        if not (exclude and j == i + 1) then pi[t], pj[t], t = i + 1, j, t + 1 end
      end
    end
    local s = tensor.empty { n }
    roc.ccheck(NAME, C.facet_eval_pair_scores(s.h, pu.h, qu.h, ii.h, jj.h, 1))
    local sp, ranks = s:data_ptr(), {}
    for x = 0, n - 1 do ranks[x + 1] = rank_of(tp, (pi[x] - 1) * k, k, sp[x]) end
    s:free(); ii:free(); jj:free()
    if qcopy then qu:free() end
    res.ranks, res.trials = ranks, n
    res.cmc = cmc_of(ranks, n, max_rank)
  else
    local gp = genuine:data_ptr()
    local ranks, mated, nm_scores = {}, {}, {}
    for i = 0, P - 1 do
      if gp[i] == -math.huge then
        if not open_set then
          check.fail(NAME, ("probe %d's identity %s is not in the gallery"):format(i + 1, tostring(pl[i + 1])))
        end
        nm_scores[#nm_scores + 1] = tp[i * k]
      else
        mated[#mated + 1] = i
        ranks[#mated] = rank_of(tp, i * k, k, gp[i])
      end
    end
    res.ranks = ranks
    res.cmc = cmc_of(ranks, #mated, max_rank)
    if open_set then
      -- the threshold passed by at most a fraction f of non-mated top scores
      table.sort(nm_scores, function(a, b) return a > b end)
      local Nn, tpir = #nm_scores, {}
      for _, f in ipairs(fpirs) do
        if Nn >= 1 / f then
          local m = math.floor(f * Nn)
          while m < Nn and (m + 1) / Nn <= f do m = m + 1 end
          while m > 0 and m / Nn > f do m = m - 1 end
          local tau = m < Nn and nm_scores[m + 1] or -math.huge
          local hits = 0
          for x, i in ipairs(mated) do
            if ranks[x] == 0 and gp[i] > tau then hits = hits + 1 end
          end
          tpir[f] = #mated > 0 and hits / #mated or 0
        end
      end
      res.tpir_at_fpir, res.mated, res.non_mated = tpir, #mated, Nn
    end
    genuine:free()
  end
  top:free()
  if pcopy then pu:free() end
  res.rank1 = res.cmc[1]
  return res
end
