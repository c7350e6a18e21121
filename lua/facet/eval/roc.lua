--- facet.eval.roc: verification at scale, over the C core's exact ROC
-- (core/src/eval.c), which keeps every genuine score and a running top-k of
-- impostor scores, never a matrix of pairs.
--   verify_scores(scores, same [, opts])          scores you computed
--   verify_pairs(emb, i, j, same [, opts])        pairs of rows i[p], j[p] of one embedding matrix
--   verify_all(emb, labels [, opts])              every pair of rows (i < j); same = equal labels;
--                                                 opts.distractors: impostors are emb x distractors
-- opts (all three): fars (1e-1 ... 1e-9: TAR at each, reported when there are
-- at least 1/far impostors), folds (nil: none; an integer >= 2 runs the k-fold
-- accuracy of opts.protocol on the cosines, verify_scores and verify_pairs
-- only), protocol ("insightface"), roc_points (2000: the most points of the
-- returned ROC, thinned on log FAR), block (verify_all: 4096 rows a tile).
-- Returns { tar_at_far = { [far] = tar }, threshold_at_far, roc = { fpr, tpr,
-- thresholds }, genuine, impostors, and with folds: accuracy, std,
-- fold_accuracy, thresholds, protocol, folds }.
-- Also the helpers other eval modules share: M.labels (codes of labels),
-- M.floats / M.flags (vectors from tables or tensors), M.accumulate, M.result.
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"
local check = require "facet.check"

local C = core.C
local M = {}

M.DEFAULT_FARS = { 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9 }
M.PROTOCOLS = { "insightface", "facexzoo" }

local function ccheck(fn, rc)
  if rc ~= 0 then check.fail(fn, core.last_error()) end
end
M.ccheck = ccheck

--- Labels (a table of numbers or strings, or a tensor) as an int64 CPU tensor
-- of codes: equal labels get equal codes, -1 (a distractor) stays -1.
function M.labels(fn, name, l, n)
  local t
  if tensor.is_tensor(l) then
    if l:dim() > 1 or l:numel() ~= n then
      check.fail(fn, ("%s must hold %d labels, got a tensor of shape %s"):format(name, n, table.concat(l:shape(), "x")))
    end
    if l:dtype() == "float32" then check.fail(fn, ("%s must be an integer tensor, got float32"):format(name)) end
    return l:to("cpu"):to("int64"):contiguous()
  elseif type(l) == "table" then t = l
  else check.fail(fn, ("%s must be a table or a tensor, got %s"):format(name, check.describe(l))) end
  if #t ~= n then check.fail(fn, ("%d embeddings but %d labels in %s"):format(n, #t, name)) end
  local out = tensor.empty({ n }, { dtype = "int64" })
  local p, codes, next_code = out:data_ptr(), {}, 0
  for i = 1, n do
    local v = t[i]
    if (type(v) ~= "number" and type(v) ~= "string") or v ~= v then
      check.fail(fn, ("%s[%d] must be a number or a string, got %s"):format(name, i, check.describe(v)))
    end
    if v == -1 then p[i - 1] = -1
    else
      local c = codes[v]
      if not c then c = next_code; codes[v] = c; next_code = next_code + 1 end
      p[i - 1] = c
    end
  end
  return out, codes
end

--- A float32 CPU vector of n values from a table or a tensor.
function M.floats(fn, name, v)
  if tensor.is_tensor(v) then
    if v:dim() > 1 and v:numel() ~= v:size(1) then
      check.fail(fn, ("%s must be a vector, got shape %s"):format(name, table.concat(v:shape(), "x")))
    end
    return v:to("cpu"):float():contiguous():reshape { v:numel() }
  elseif type(v) == "table" then
    local out = tensor.empty({ #v })
    local p = out:data_ptr()
    for i = 1, #v do
      if type(v[i]) ~= "number" then check.fail(fn, ("%s[%d] must be a number, got %s"):format(name, i, check.describe(v[i]))) end
      p[i - 1] = v[i]
    end
    return out
  end
  check.fail(fn, ("%s must be a table of numbers or a tensor, got %s"):format(name, check.describe(v)))
end

--- A uint8 CPU vector (1 = same) from a table of booleans or a tensor of 0/1;
-- returns it and the count of ones.
function M.flags(fn, name, v, n)
  local out
  if tensor.is_tensor(v) then
    if v:numel() ~= n then check.fail(fn, ("%s must hold %d values (one per score), got %d"):format(name, n, v:numel())) end
    out = v:to("cpu"):contiguous():reshape { n }
    if out:dtype() ~= "uint8" then out = out:to("uint8") end
  elseif type(v) == "table" then
    if #v ~= n then check.fail(fn, ("%s must be a list of %d booleans (one per score), got %d elements"):format(name, n, #v)) end
    out = tensor.empty({ n }, { dtype = "uint8" })
    local p = out:data_ptr()
    for i = 1, n do
      if type(v[i]) ~= "boolean" then
        check.fail(fn, ("%s[%d] is not a boolean (got %s)"):format(name, i, check.describe(v[i])))
      end
      p[i - 1] = v[i] and 1 or 0
    end
  else
    check.fail(fn, ("%s must be a list of booleans or a tensor, got %s"):format(name, check.describe(v)))
  end
  local p, ones = out:data_ptr(), 0
  for i = 0, n - 1 do
    if p[i] > 1 then check.fail(fn, ("%s[%d] must be 0 or 1, got %d"):format(name, i + 1, p[i])) end
    ones = ones + p[i]
  end
  return out, ones
end

local roc_p = ffi.new("facet_eval_roc *[1]")

--- A new C ROC for n_gen + n_imp scores (free it with M.free).
function M.accumulate(fn, n_gen, n_imp, max_far)
  ccheck(fn, C.facet_eval_roc_init(roc_p, n_gen, n_imp, max_far))
  return ffi.gc(roc_p[0], C.facet_eval_roc_free)
end

function M.free(roc)
  ffi.gc(roc, nil)
  C.facet_eval_roc_free(roc)
end

--- The options every verification takes, checked: fars, folds, protocol, roc_points.
function M.options(fn, opts, n_pairs)
  local fars = check.list(fn, "fars", opts.fars, { gt = 0, max = 1, min_len = 1, default = M.DEFAULT_FARS })
  local max_far = 0
  for _, f in ipairs(fars) do max_far = math.max(max_far, f) end
  local o = {
    fars = fars, max_far = max_far,
    protocol = check.enum(fn, "protocol", opts.protocol, M.PROTOCOLS, "insightface"),
    roc_points = check.integer(fn, "roc_points", opts.roc_points, { min = 2, default = 2000 }),
  }
  if n_pairs then
    o.folds = check.integer(fn, "folds", opts.folds, { min = 2, max = math.max(2, n_pairs), optional = true })
  end
  return o
end

--- TAR at the fars (those with at least 1/far impostors) and the ROC of a
-- filled accumulator, into res.
function M.result(fn, roc, o, res)
  local n_gen, n_imp = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
  ccheck(fn, C.facet_eval_roc_counts(roc, n_gen, n_imp))
  local N = tonumber(n_imp[0])
  local fars = {}
  for _, f in ipairs(o.fars) do if N >= 1 / f then fars[#fars + 1] = f end end
  local tar, thr = {}, {}
  if #fars > 0 then
    local fa, ta, th = ffi.new("double[?]", #fars), ffi.new("double[?]", #fars), ffi.new("double[?]", #fars)
    for i, f in ipairs(fars) do fa[i - 1] = f end
    ccheck(fn, C.facet_eval_roc_tar(roc, #fars, fa, ta, th))
    for i, f in ipairs(fars) do tar[f], thr[f] = ta[i - 1], th[i - 1] end
  end
  local cap = o.roc_points
  local fpr, tpr, th, n = ffi.new("double[?]", cap), ffi.new("double[?]", cap), ffi.new("double[?]", cap),
    ffi.new("int64_t[1]")
  ccheck(fn, C.facet_eval_roc_curve(roc, cap, fpr, tpr, th, n))
  local curve = { fpr = {}, tpr = {}, thresholds = {} }
  for i = 0, tonumber(n[0]) - 1 do
    curve.fpr[i + 1], curve.tpr[i + 1], curve.thresholds[i + 1] = fpr[i], tpr[i], th[i]
  end
  res = res or {}
  res.tar_at_far, res.threshold_at_far, res.roc = tar, thr, curve
  res.genuine, res.impostors = tonumber(n_gen[0]), N
  M.mark_undefined(res)
  return res
end

--- With no impostor (or no genuine) pair, the ROC, TAR@FAR and a threshold
-- chosen for accuracy mean nothing: res.undefined names them (undefined.roc,
-- .tar_at_far, .accuracy = true) and res.warnings says why, once per cause.
-- (lfw-like sets cut to their first pairs hold only same-identity pairs.)
function M.mark_undefined(res)
  local missing = res.impostors == 0 and "different-identity" or res.genuine == 0 and "same-identity" or nil
  if not missing then return res end
  res.undefined = { roc = true, tar_at_far = true, accuracy = true }
  res.warnings = { ("no %s pairs among the %d: the ROC, TAR@FAR and the accuracy's threshold are undefined " ..
    "(the accuracy only counts how many pairs fall on one side)"):format(missing, res.genuine + res.impostors) }
  return res
end

--- k-fold accuracy of the cosines (C), into res.
function M.kfold(fn, cos, same, folds, protocol, res)
  local acc, thr = ffi.new("double[?]", folds), ffi.new("double[?]", folds)
  local code = protocol == "insightface" and C.FACET_EVAL_PROTOCOL_INSIGHTFACE or C.FACET_EVAL_PROTOCOL_FACEXZOO
  ccheck(fn, C.facet_eval_kfold(acc, thr, cos.h, same.h, folds, code))
  local accs, thresholds, m = {}, {}, 0
  for f = 1, folds do accs[f], thresholds[f] = acc[f - 1], thr[f - 1]; m = m + accs[f] end
  m = m / folds
  local var = 0
  for _, a in ipairs(accs) do var = var + (a - m) ^ 2 end
  local std
  if protocol == "insightface" then std = math.sqrt(var / folds)                  -- np.std
  else std = math.sqrt(var / (folds - 1)) / math.sqrt(folds) end                  -- standard error
  res.accuracy, res.std, res.fold_accuracy, res.thresholds = m, std, accs, thresholds
  res.protocol, res.folds = protocol, folds
  return res
end

--- verify's result from P pair cosines (float32 vector) and flags: the
-- k-fold accuracy of the protocol, the whole ROC (max FAR 1) thinned to
-- points, TAR at fars. A NaN or infinite cosine is an error naming its pair.
function M.verify_cosines(fn, cos, same, n_same, protocol, folds, fars, points)
  local P, cp = cos:numel(), cos:data_ptr()
  for i = 0, P - 1 do
    local v = cp[i]
    if v ~= v or v == math.huge or v == -math.huge then
      check.fail(fn, ("pair %d has a NaN or infinite embedding"):format(i + 1))
    end
  end
  local acc = M.accumulate(fn, n_same, P - n_same, 1)
  ccheck(fn, C.facet_eval_roc_add(acc, cos.h, same.h))
  local res = M.result(fn, acc, { fars = fars, max_far = 1, roc_points = points })
  M.free(acc)
  M.kfold(fn, cos, same, folds, protocol, res)
  res.threshold_at_far, res.genuine, res.impostors = nil, nil, nil
  return res
end

-- the exact ROC of scores with flags, and the k-fold accuracy when asked
local function from_scores(fn, s, same, n_same, o)
  local n = s:numel()
  local roc = M.accumulate(fn, n_same, n - n_same, o.max_far)
  ccheck(fn, C.facet_eval_roc_add(roc, s.h, same.h))
  local res = M.result(fn, roc, o)
  M.free(roc)
  if o.folds then M.kfold(fn, s, same, o.folds, o.protocol, res) end
  return res
end

--- Unit rows of a 2-D tensor, as a contiguous float32 CPU matrix (a copy).
function M.unit_rows(fn, name, e)
  check.tensor(fn, name, e, { dim = 2 })
  return (e:to("cpu"):float():contiguous():l2_normalize())
end

local OPTS = { "fars", "folds", "protocol", "roc_points" }

function M.verify_scores(scores, same, opts)
  local fn = "facet.eval.verify_scores"
  opts = check.options(fn, opts, OPTS)
  local s = M.floats(fn, "scores", scores)
  local n = s:numel()
  if n < 2 then check.fail(fn, ("want at least 2 scores, got %d"):format(n)) end
  local o = M.options(fn, opts, n)
  local flags, n_same = M.flags(fn, "same", same, n)
  return from_scores(fn, s, flags, n_same, o)
end

-- an integer list (table or integer tensor) as a contiguous int32/int64 CPU
-- vector (the caller's own tensor when it already is one: never free it)
local function indices(fn, name, v)
  if tensor.is_tensor(v) then
    if v:dtype() ~= "int32" and v:dtype() ~= "int64" then
      check.fail(fn, ("%s must be an int32 or int64 tensor, got %s"):format(name, v:dtype()))
    end
    return v:to("cpu"):contiguous():reshape { v:numel() }
  elseif type(v) == "table" then
    local out = tensor.empty({ #v }, { dtype = "int64" })
    local p = out:data_ptr()
    for k = 1, #v do
      local x = v[k]
      if type(x) ~= "number" or x ~= math.floor(x) then
        check.fail(fn, ("%s[%d] must be an integer row index, got %s"):format(name, k, check.describe(x)))
      end
      p[k - 1] = x
    end
    return out
  end
  check.fail(fn, ("%s must be a list or tensor of row indices, got %s"):format(name, check.describe(v)))
end
M.indices = indices

--- Scores of pairs (rows i[p] and j[p], 1-based, of the unit rows u).
function M.pair_scores(fn, u, i, j)
  if i:numel() ~= j:numel() then
    check.fail(fn, ("i and j must have one length, got %d and %d"):format(i:numel(), j:numel()))
  end
  local s = tensor.empty { i:numel() }
  ccheck(fn, C.facet_eval_pair_scores(s.h, u.h, u.h, i.h, j.h, 1))
  return s
end

function M.verify_pairs(emb, i, j, same, opts)
  local fn = "facet.eval.verify_pairs"
  opts = check.options(fn, opts, OPTS)
  local u = M.unit_rows(fn, "emb", emb)
  local ii, jj = indices(fn, "i", i), indices(fn, "j", j)
  local n = ii:numel()
  if n < 2 then check.fail(fn, ("want at least 2 pairs, got %d"):format(n)) end
  local o = M.options(fn, opts, n)
  local flags, n_same = M.flags(fn, "same", same, n)
  local s = M.pair_scores(fn, u, ii, jj)
  u:free()
  local res = from_scores(fn, s, flags, n_same, o)
  s:free()
  return res
end

-- genuine pairs (i < j, equal labels other than -1) of a label code vector
local function genuine_pairs(codes)
  local n, p = codes:numel(), codes:data_ptr()
  local by = {}
  for r = 0, n - 1 do
    local c = tonumber(p[r])
    if c ~= -1 then
      local l = by[c]
      if not l then l = {}; by[c] = l end
      l[#l + 1] = r + 1
    end
  end
  local count = 0
  for _, l in pairs(by) do count = count + #l * (#l - 1) / 2 end
  return by, count
end

function M.verify_all(emb, labels, opts)
  local fn = "facet.eval.verify_all"
  opts = check.options(fn, opts, { "fars", "protocol", "roc_points", "block", "distractors" })
  local o = M.options(fn, opts)
  local block = check.integer(fn, "block", opts.block, { min = 1, default = 4096 })
  local u = M.unit_rows(fn, "emb", emb)
  local N = u:size(1)
  local codes = M.labels(fn, "labels", labels, N)
  local by, n_gen = genuine_pairs(codes)
  local roc
  if opts.distractors ~= nil then
    -- MegaFace: genuine pairs among emb, impostors emb x distractors
    local d = M.unit_rows(fn, "distractors", opts.distractors)
    if d:size(2) ~= u:size(2) then
      check.fail(fn, ("emb has %d columns, distractors %d"):format(u:size(2), d:size(2)))
    end
    local n_imp = N * d:size(1)
    if n_gen + n_imp < 2 then check.fail(fn, "want at least 2 pairs") end
    roc = M.accumulate(fn, n_gen, n_imp, o.max_far)
    if n_gen > 0 then
      local ii, jj = tensor.empty({ n_gen }, { dtype = "int64" }), tensor.empty({ n_gen }, { dtype = "int64" })
      local pi, pj, k = ii:data_ptr(), jj:data_ptr(), 0
      for _, l in pairs(by) do
        for a = 1, #l do for b = a + 1, #l do pi[k], pj[k], k = l[a], l[b], k + 1 end end
      end
      local s = M.pair_scores(fn, u, ii, jj)
      local ones = tensor.ones({ n_gen }, { dtype = "uint8" })
      ccheck(fn, C.facet_eval_roc_add(roc, s.h, ones.h))
      s:free(); ones:free(); ii:free(); jj:free()
    end
    ccheck(fn, C.facet_eval_roc_add_all(roc, u.h, nil, d.h, nil, block))
    d:free()
  else
    if N < 2 then check.fail(fn, ("want at least 2 embeddings, got %d"):format(N)) end
    roc = M.accumulate(fn, n_gen, N * (N - 1) / 2 - n_gen, o.max_far)
    ccheck(fn, C.facet_eval_roc_add_all(roc, u.h, codes.h, nil, nil, block))
  end
  u:free()
  local res = M.result(fn, roc, o)
  M.free(roc)
  return res
end

return M
