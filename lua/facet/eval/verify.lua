--- facet.eval.verify(emb1, emb2, issame, opts): face verification on P pairs
-- (emb1, emb2: P x dim tensors; issame: a Lua list of P booleans).
-- Returns { accuracy, std, thresholds (one per fold), roc = { fpr = {}, tpr = {} },
-- tar_at_far = { [1e-1] = ..., ... }, protocol, folds }.
--
-- opts.protocol = "insightface" (default): squared L2 distance of the
-- L2-normalised embeddings; thresholds 0, 0.01, ..., 3.99; contiguous folds
-- (the first P mod folds are one pair larger, as sklearn's KFold); in each fold
-- the threshold with the best accuracy on the other folds (ties to the
-- smallest) is applied to the fold, a pair being "same" when distance <
-- threshold; accuracy = mean over folds, std = population std.
-- opts.protocol = "facexzoo": cosine score; per fold, the 1000 thresholds
-- min + (max - min) i / 1000 (i = 1..1000) over the other folds' scores, the
-- one maximising TPR - FPR there (ties to the smallest); "same" when score >
-- threshold; std = sample std (ddof 1) / sqrt(folds).
-- roc: the exact ROC over all pairs (every distinct score a threshold).
-- tar_at_far: TAR at FAR 1e-1 ... 1e-6 over all pairs (opts.fars: other FAR
-- values, each in (0, 1]), each reported only when there are at least 1/FAR
-- different pairs (never extrapolated).
-- Options are checked: folds an integer in [2, P], protocol one of the two
-- names; an unknown option is an error.
local tensor = require "facet.tensor"
local check = require "facet.check"

local OPTIONS = { "protocol", "folds", "fars" }
local DEFAULT_FARS = { 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6 }

local function cosines(a, b, name)
  check.tensor(name, "emb1", a)
  check.tensor(name, "emb2", b)
  local sa, sb = a:shape(), b:shape()
  if #sa ~= 2 or #sb ~= 2 or sa[1] ~= sb[1] or sa[2] ~= sb[2] then
    check.fail(name, ("emb1 and emb2 must be two P x dim tensors of one shape, got %s and %s"):format(
      table.concat(sa, "x"), table.concat(sb, "x")))
  end
  if sa[1] < 2 then check.fail(name, ("verification needs at least 2 pairs, got %d"):format(sa[1])) end
  local na = a:to("cpu"):float():l2_normalize()
  local nb = b:to("cpu"):float():l2_normalize()
  local c = (na * nb):sum(2)
  local p, out = c:data_ptr(), {}
  for i = 0, sa[1] - 1 do
    local v = tonumber(p[i])
    if v ~= v then check.fail(name, ("pair %d has a NaN or infinite embedding"):format(i + 1)) end
    out[i + 1] = v
  end
  return out
end

-- fold of each pair: contiguous, the first P % k folds one larger
local function fold_ranges(P, k)
  local ranges, start = {}, 1
  local base, extra = math.floor(P / k), P % k
  for f = 1, k do
    local n = base + (f <= extra and 1 or 0)
    ranges[f] = { start, start + n - 1 }
    start = start + n
  end
  return ranges
end

local function counts(scores, same, from, to, skip_from, skip_to, threshold, below)
  local tp, fp, tn, fn = 0, 0, 0, 0
  for i = from, to do
    if i < skip_from or i > skip_to then
      local pred
      if below then pred = scores[i] < threshold else pred = scores[i] > threshold end
      if same[i] then
        if pred then tp = tp + 1 else fn = fn + 1 end
      else
        if pred then fp = fp + 1 else tn = tn + 1 end
      end
    end
  end
  return tp, fp, tn, fn
end

local function mean(t)
  local s = 0
  for _, v in ipairs(t) do s = s + v end
  return s / #t
end

local function roc_of(scores, same, higher_is_same)
  local order = {}
  for i = 1, #scores do order[i] = i end
  table.sort(order, function(x, y)
    if higher_is_same then return scores[x] > scores[y] end
    return scores[x] < scores[y]
  end)
  local P, N = 0, 0
  for i = 1, #same do if same[i] then P = P + 1 else N = N + 1 end end
  local fpr, tpr, thr = { 0 }, { 0 }, { higher_is_same and math.huge or -math.huge }
  local tp, fp, i = 0, 0, 1
  while i <= #order do
    local s = scores[order[i]]
    while i <= #order and scores[order[i]] == s do
      if same[order[i]] then tp = tp + 1 else fp = fp + 1 end
      i = i + 1
    end
    fpr[#fpr + 1] = N > 0 and fp / N or 0
    tpr[#tpr + 1] = P > 0 and tp / P or 0
    thr[#thr + 1] = s
  end
  return { fpr = fpr, tpr = tpr, thresholds = thr }, P, N
end

local function tar_at_far(roc, n_neg, fars)
  local out = {}
  for _, far in ipairs(fars) do
    if n_neg >= 1 / far then
      local best = 0
      for k = 1, #roc.fpr do if roc.fpr[k] <= far and roc.tpr[k] > best then best = roc.tpr[k] end end
      out[far] = best
    end
  end
  return out
end

return function(emb1, emb2, issame, opts)
  local name = "facet.eval.verify"
  opts = check.options(name, opts, OPTIONS)
  local protocol = check.enum(name, "protocol", opts.protocol, { "insightface", "facexzoo" }, "insightface")
  local fars = check.list(name, "fars", opts.fars, { gt = 0, max = 1, min_len = 1, default = DEFAULT_FARS })
  local cos = cosines(emb1, emb2, name)
  local P = #cos
  if type(issame) ~= "table" or #issame ~= P then
    check.fail(name, ("issame must be a list of %d booleans (one per pair), got %s"):format(P,
      type(issame) == "table" and (#issame .. " elements") or check.describe(issame)))
  end
  for i = 1, P do
    if type(issame[i]) ~= "boolean" then
      check.fail(name, ("issame[%d] is not a boolean (got %s)"):format(i, check.describe(issame[i])))
    end
  end
  local k = check.integer(name, "folds", opts.folds, { min = 2, max = P, default = math.min(10, P) })
  local ranges = fold_ranges(P, k)
  local accs, thresholds = {}, {}
  local scores, below
  if protocol == "insightface" then
    scores = {}
    for i = 1, P do scores[i] = math.max(0, 2 - 2 * cos[i]) end      -- squared distance of unit vectors
    below = true
  else
    scores, below = cos, false
  end
  for f = 1, k do
    local lo, hi = ranges[f][1], ranges[f][2]
    local cands = {}
    if protocol == "insightface" then
      for t = 0, 399 do cands[#cands + 1] = t * 0.01 end
    else
      local mn, mx = math.huge, -math.huge
      for i = 1, P do
        if i < lo or i > hi then mn, mx = math.min(mn, scores[i]), math.max(mx, scores[i]) end
      end
      for t = 1, 1000 do cands[#cands + 1] = mn + (mx - mn) * t / 1000 end
    end
    local best, best_t = -math.huge, nil
    for _, t in ipairs(cands) do
      local tp, fp, tn, fn = counts(scores, issame, 1, P, lo, hi, t, below)
      local value
      if protocol == "insightface" then
        value = (tp + tn) / (tp + fp + tn + fn)
      else
        value = (tp + fn > 0 and tp / (tp + fn) or 0) - (fp + tn > 0 and fp / (fp + tn) or 0)
      end
      if value > best then best, best_t = value, t end           -- strict: ties keep the smallest threshold
    end
    local tp, fp, tn, fn = counts(scores, issame, lo, hi, 0, -1, best_t, below)
    accs[f] = (tp + tn) / (tp + fp + tn + fn)
    thresholds[f] = best_t
  end
  local m = mean(accs)
  local var = 0
  for _, a in ipairs(accs) do var = var + (a - m) ^ 2 end
  local std
  if protocol == "insightface" then std = math.sqrt(var / k)
  else std = math.sqrt(var / (k - 1)) / math.sqrt(k) end
  local roc, _, n_neg = roc_of(cos, issame, true)
  return { accuracy = m, std = std, thresholds = thresholds, fold_accuracy = accs, roc = roc,
    tar_at_far = tar_at_far(roc, n_neg, fars), protocol = protocol, folds = k }
end
