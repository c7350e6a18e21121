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
-- The cosines, the folds and the ROC are computed in C (core/src/eval.c,
-- through facet.eval.roc): no per-pair tensor, no Lua table of scores; the
-- ROC keeps at most opts.roc_points (20001) points, thinned on log FAR.
-- Options are checked: folds an integer in [2, P], protocol one of the two
-- names; an unknown option is an error.
local tensor = require "facet.tensor"
local C = require("facet.core").C
local check = require "facet.check"
local roc = require "facet.eval.roc"

local OPTIONS = { "protocol", "folds", "fars", "roc_points" }
local DEFAULT_FARS = { 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6 }

return function(emb1, emb2, issame, opts)
  local name = "facet.eval.verify"
  opts = check.options(name, opts, OPTIONS)
  local protocol = check.enum(name, "protocol", opts.protocol, roc.PROTOCOLS, "insightface")
  local fars = check.list(name, "fars", opts.fars, { gt = 0, max = 1, min_len = 1, default = DEFAULT_FARS })
  local points = check.integer(name, "roc_points", opts.roc_points, { min = 2, default = 20001 })
  check.tensor(name, "emb1", emb1)
  check.tensor(name, "emb2", emb2)
  local sa, sb = emb1:shape(), emb2:shape()
  if #sa ~= 2 or #sb ~= 2 or sa[1] ~= sb[1] or sa[2] ~= sb[2] then
    check.fail(name, ("emb1 and emb2 must be two P x dim tensors of one shape, got %s and %s"):format(
      table.concat(sa, "x"), table.concat(sb, "x")))
  end
  local P = sa[1]
  if P < 2 then check.fail(name, ("verification needs at least 2 pairs, got %d"):format(P)) end
  if type(issame) ~= "table" then
    check.fail(name, ("issame must be a list of %d booleans (one per pair), got %s"):format(P, check.describe(issame)))
  end
  local same, n_same = roc.flags(name, "issame", issame, P)
  local k = check.integer(name, "folds", opts.folds, { min = 2, max = P, default = math.min(10, P) })
  local na, nb = roc.unit_rows(name, "emb1", emb1), roc.unit_rows(name, "emb2", emb2)
  local cos = tensor.empty { P }
  roc.ccheck(name, C.facet_eval_pair_scores(cos.h, na.h, nb.h, nil, nil, 0))
  na:free()
  nb:free()
  local res = roc.verify_cosines(name, cos, same, n_same, protocol, k, fars, points)
  cos:free()
  same:free()
  return res
end
