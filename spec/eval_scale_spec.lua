--- Evaluation at scale (core/src/eval.c through facet.eval): verification
-- from scores, from index pairs and over every pair (with a running top-k of
-- impostors), identification by one-pass top-k (closed set, MegaFace's
-- per-probe positives, open set), each against an independent NumPy
-- reference computed in float64 from the definitions; then hostile inputs.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

local PY = F.PY
local REFERENCE = [==[
# Independent NumPy reference for spec/eval_scale_spec.lua: random unit
# embeddings (float32 .npy) and the expected results, computed in float64
# straight from the definitions (every distinct score a threshold, ranks by
# counting), written as a Lua table to expected.lua. Usage: ref.py DIR
import sys
import numpy as np

out = sys.argv[1]
rng = np.random.default_rng(7)
FARS = [1e-1, 1e-2, 1e-3, 1e-4]


def unit(n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)


def tar_at_far(gen, imp, fars):
    # largest TPR over ROC points (accept >= s, s every distinct score) with FP/N <= far
    gen, imp = np.sort(gen), np.sort(imp)
    thr = np.unique(np.concatenate([gen, imp]))
    fp = len(imp) - np.searchsorted(imp, thr, side="left")
    tp = len(gen) - np.searchsorted(gen, thr, side="left")
    res = {}
    for f in fars:
        if len(imp) < 1 / f:
            continue
        ok = fp / len(imp) <= f
        res[f] = float((tp[ok].max() if ok.any() else 0) / len(gen))
    return res


def lua(v):
    if isinstance(v, dict):
        return "{" + ", ".join("[%s] = %s" % (lua(k), lua(x)) for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "{" + ", ".join(lua(x) for x in v) + "}"
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return "%d" % v
    return repr(float(v))


exp = {}

# verify_scores: 3,000 genuine and 40,000 impostor float32 scores
g = (0.4 + 0.2 * rng.standard_normal(3000)).astype(np.float32)
m = (0.2 * rng.standard_normal(40000)).astype(np.float32)
perm = rng.permutation(43000)
scores = np.concatenate([g, m])[perm]
same = np.concatenate([np.ones(3000, np.uint8), np.zeros(40000, np.uint8)])[perm]
np.save(out + "/scores.npy", scores)
np.save(out + "/same.npy", same)
exp["scores"] = tar_at_far(g.astype(np.float64), m.astype(np.float64), FARS)

# verify_pairs: 400 unit rows, 5,000 index pairs
emb = unit(400, 24)
ids = rng.integers(0, 40, 400)
pi = rng.integers(0, 400, 5000)
pj = rng.integers(0, 400, 5000)
ps = (emb[pi].astype(np.float64) * emb[pj].astype(np.float64)).sum(1)
psame = ids[pi] == ids[pj]
np.save(out + "/emb.npy", emb)
np.save(out + "/ids.npy", ids.astype(np.int64))
np.save(out + "/pi.npy", (pi + 1).astype(np.int64))
np.save(out + "/pj.npy", (pj + 1).astype(np.int64))
np.save(out + "/psame.npy", psame.astype(np.uint8))
exp["pairs"] = tar_at_far(ps[psame], ps[~psame], FARS)

# verify_all: every pair i < j of the 400 rows; label -1 never genuine
ids_all = ids.copy()
ids_all[:25] = -1
np.save(out + "/ids_all.npy", ids_all.astype(np.int64))
s = emb.astype(np.float64) @ emb.astype(np.float64).T
iu = np.triu_indices(400, 1)
sv = s[iu]
sm = (ids_all[iu[0]] == ids_all[iu[1]]) & (ids_all[iu[0]] != -1)
exp["all"] = tar_at_far(sv[sm], sv[~sm], FARS)
exp["all_counts"] = [int(sm.sum()), int((~sm).sum())]

# verify_all with distractors: genuine pairs among emb, impostors emb x distractors
dis = unit(300, 24)
np.save(out + "/dis.npy", dis)
sd = (emb.astype(np.float64) @ dis.astype(np.float64).T).ravel()
gs = sv[(ids[iu[0]] == ids[iu[1]])]
exp["mega_verify"] = tar_at_far(gs, sd, FARS)
exp["mega_verify_counts"] = [int(len(gs)), int(len(sd))]

# identify, closed set: 120 probes against 900 gallery rows (30 ids, 300 distractors)
gal = unit(900, 24)
gl = rng.integers(0, 30, 900)
gl[600:] = -1
pl = rng.integers(0, 30, 120)
for c in range(30):
    if not (gl == c).any():
        gl[c] = c
prb = np.empty((120, 24), np.float32)
for i in range(120):
    base = gal[np.flatnonzero(gl == pl[i])[0]].astype(np.float64)
    v = base + 0.9 * rng.standard_normal(24) / np.sqrt(24)
    prb[i] = (v / np.linalg.norm(v)).astype(np.float32)
np.save(out + "/gal.npy", gal)
np.save(out + "/gl.npy", gl.astype(np.int64))
np.save(out + "/prb.npy", prb)
np.save(out + "/pl.npy", pl.astype(np.int64))
S = prb.astype(np.float64) @ gal.astype(np.float64).T
K = 20
ranks = []
for i in range(120):
    own = gl == pl[i]
    best = S[i, own].max()
    ranks.append(min(int((S[i, ~own] > best).sum()), K))
exp["ranks"] = ranks
exp["cmc"] = [float(np.mean(np.array(ranks) < k)) for k in range(1, K + 1)]

# open set: the gallery keeps ids 0..19, probes of ids 20..29 are non-mated
glo = gl.copy()
glo[(glo >= 20)] = -1
mated = pl < 20
tops, ok = [], []
for i in range(120):
    if mated[i]:
        own = glo == pl[i]
        best = S[i, own].max()
        ok.append((not (S[i, ~own] > best).any(), best))
    else:
        tops.append(S[i].max())
np.save(out + "/glo.npy", glo.astype(np.int64))
tops = np.sort(np.array(tops))[::-1]
tpir = {}
for f in [0.5, 0.1]:
    n = len(tops)
    if n < 1 / f:
        continue
    mm = int(np.floor(f * n))
    tau = tops[mm] if mm < n else -np.inf
    tpir[f] = float(sum(1 for hit, b in ok if hit and b > tau) / len(ok))
exp["tpir"] = tpir
exp["mated"] = int(mated.sum())

# MegaFace: positives = the probes themselves (self excluded), gallery = distractors only
D = prb.astype(np.float64) @ dis.astype(np.float64).T
PP = prb.astype(np.float64) @ prb.astype(np.float64).T
mr = []
for i in range(120):
    for j in range(120):
        if j != i and pl[j] == pl[i]:
            mr.append(min(int((D[i] > PP[i, j]).sum()), 10))
exp["mega_ranks"] = mr

with open(out + "/expected.lua", "w") as f:
    f.write("return " + lua(exp) + "\n")
]==]

local FARS = { 1e-1, 1e-2, 1e-3, 1e-4 }

local function same_tar(want, got, what)
  for far, v in pairs(want) do
    assert.are.equal(v, got[far], ("%s: TAR at FAR %g"):format(what, far))
  end
  for far in pairs(got) do assert.is_not_nil(want[far], ("%s: FAR %g reported without 1/far impostors"):format(what, far)) end
end

describe("evaluation at scale", function()
  local dir, E
  local function npy(name) return facet.load_npy(dir .. "/" .. name .. ".npy") end

  setup(function()
    dir = F.temp_dir()
    F.write_file(dir .. "/ref.py", REFERENCE)
    local ok = os.execute(("%s %s/ref.py %s"):format(PY, dir, dir))
    assert(ok == 0 or ok == true, "the NumPy reference failed")
    E = dofile(dir .. "/expected.lua")
  end)
  teardown(function() F.remove_dir(dir) end)

  it("verify_scores: TAR at FAR equals NumPy's ROC, and the ROC's points are exact", function()
    local r = facet.eval.verify_scores(npy("scores"), npy("same"), { fars = FARS })
    same_tar(E.scores, r.tar_at_far, "scores")
    assert.are.equal(3000, r.genuine)
    assert.are.equal(40000, r.impostors)
    -- the ROC: from (0, 0), FPR and TPR never falling, FPR up to 0.1 (the largest FAR asked)
    assert.are.equal(0, r.roc.fpr[1])
    for k = 2, #r.roc.fpr do
      assert.is_true(r.roc.fpr[k] >= r.roc.fpr[k - 1] and r.roc.tpr[k] >= r.roc.tpr[k - 1])
    end
    assert.is_true(r.roc.fpr[#r.roc.fpr] <= 0.1 and r.roc.fpr[#r.roc.fpr] > 0.099)
    assert.is_true(#r.roc.fpr <= 2000)
    -- no point at FPR <= far passes the TAR there; with room for every point, one reaches it
    local function best(roc, far)
      local b = 0
      for k = 1, #roc.fpr do if roc.fpr[k] <= far then b = math.max(b, roc.tpr[k]) end end
      return b
    end
    assert.is_true(best(r.roc, 1e-2) <= r.tar_at_far[1e-2])
    local full = facet.eval.verify_scores(npy("scores"), npy("same"), { fars = FARS, roc_points = 50000 })
    for _, far in ipairs(FARS) do assert.are.equal(full.tar_at_far[far], best(full.roc, far)) end
    assert.is_true(#full.roc.fpr > 2000)
  end)

  it("verify_scores with folds equals verify's 10-fold accuracy on the same cosines", function()
    local e1, e2, same = {}, {}, {}
    local g = H.lcg(5)
    for i = 1, 230 do
      same[i] = g() > 0
      local c = math.max(-1, math.min(1, (same[i] and 0.3 or 0) + 0.3 * g()))
      e1[i], e2[i] = { 1, 0 }, { c, math.sqrt(1 - c * c) }
    end
    local a, b = facet.tensor(e1), facet.tensor(e2)
    local cos = (a:l2_normalize() * b:l2_normalize()):sum(2)
    for _, protocol in ipairs { "insightface", "facexzoo" } do
      local w = facet.eval.verify(a, b, same, { protocol = protocol })
      local r = facet.eval.verify_scores(cos, same, { folds = 10, protocol = protocol })
      assert.are.same(w.fold_accuracy, r.fold_accuracy)
      assert.are.same(w.thresholds, r.thresholds)
      assert.are.equal(w.std, r.std)
      assert.is_true(w.accuracy > 0.6)
    end
    assert.is_nil(facet.eval.verify_scores(cos, same).accuracy)      -- folds cost nothing unless asked
  end)

  it("verify_pairs scores index pairs without forming them", function()
    local r = facet.eval.verify_pairs(npy("emb"), npy("pi"), npy("pj"), npy("psame"), { fars = FARS })
    same_tar(E.pairs, r.tar_at_far, "pairs")
  end)

  it("verify_all: every pair in tiles, a running top-k of impostors, exact", function()
    for _, block in ipairs { 97, 4096 } do
      local r = facet.eval.verify_all(npy("emb"), npy("ids_all"), { fars = FARS, block = block })
      same_tar(E.all, r.tar_at_far, "all, block " .. block)
      assert.are.same(E.all_counts, { r.genuine, r.impostors })
    end
    local m = facet.eval.verify_all(npy("emb"), npy("ids"), { fars = FARS, distractors = npy("dis"), block = 50 })
    same_tar(E.mega_verify, m.tar_at_far, "emb x distractors")
    assert.are.same(E.mega_verify_counts, { m.genuine, m.impostors })
  end)

  it("identify: one pass of blocked top-k gives NumPy's ranks and CMC", function()
    for _, block in ipairs { 37, 100000 } do
      local r = facet.eval.identify(npy("prb"), npy("pl"), npy("gal"), npy("gl"), { max_rank = 20, block = block })
      assert.are.same(E.ranks, r.ranks)
      for k = 1, 20 do H.assert_close(r.cmc[k], E.cmc[k], 1e-12) end
      assert.are.equal(r.cmc[1], r.rank1)
    end
  end)

  it("identify: open-set TPIR at FPIR", function()
    local r = facet.eval.identify(npy("prb"), npy("pl"), npy("gal"), npy("glo"),
      { open_set = true, fpirs = { 0.5, 0.1 }, block = 64 })
    assert.are.equal(E.mated, r.mated)
    assert.are.equal(120 - E.mated, r.non_mated)
    for f, v in pairs(E.tpir) do H.assert_close(r.tpir_at_fpir[f], v, 1e-12) end
  end)

  it("identify: MegaFace's per-probe positive among shared distractors, the probe itself excluded", function()
    local p = npy("prb")
    local r = facet.eval.identify(p, npy("pl"), npy("dis"), nil, { positives = p, block = 41 })
    assert.are.equal(#E.mega_ranks, r.trials)
    assert.are.same(E.mega_ranks, r.ranks)
  end)

  it("bin/facet eval --megaface DIR and recipes/megaface.lua (by hand)", function()
    -- probes: identity 1 at (1,0), (0.8,0.6); identity 2 at (0,1), (-0.6,0.8); every same-identity
    -- cosine 0.8. Distractor (0.96,0.28) outranks the positive for both probes of identity 1
    -- (0.96 and 0.936), none for identity 2: rank-1 2/4, rank-2 4/4
    local mf = dir .. "/mf"
    os.execute("mkdir -p '" .. mf .. "'")
    facet.save_npy(facet.tensor { { 1, 0 }, { 0.8, 0.6 }, { 0, 1 }, { -0.6, 0.8 } }, mf .. "/probes.npy")
    facet.save_npy(facet.tensor({ 1, 1, 2, 2 }, { dtype = "int64" }), mf .. "/probe_labels.npy")
    facet.save_npy(facet.tensor { { 0.96, 0.28 }, { -1, 0 } }, mf .. "/distractors.npy")
    local out, rc = F.sh(("luajit bin/facet eval --megaface %s"):format(mf))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("4 probes, 2 distractors, 4 trials", 1, true), out)
    assert.truthy(out:find("rank-1 0.5000  rank-10 1.0000  TAR@FAR=1e-6 - (fewer than 10^6 impostor pairs)", 1, true), out)
    out, rc = F.sh(("luajit bin/facet run recipes/megaface.lua --probes %s/probes.npy --labels %s/probe_labels.npy " ..
      "--distractors %s/distractors.npy --max-rank 2 --out %s/run"):format(mf, mf, mf, mf))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("rank-1 0.5000   CMC 1:0.5000 2:1.0000", 1, true), out)
    assert.truthy(F.exists(mf .. "/run/identify.json") and F.exists(mf .. "/run/verify.json"), out)
    out, rc = F.sh("luajit bin/facet run recipes/megaface.lua --synthetic 300 --verify 0")
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("3530 probes, 300 distractors, 152240 trials", 1, true), out)
    -- image sets through a checkpoint: the recipe's rank-1 is identify's on facet.eval.features
    local g = H.lcg(9)
    local function png(path)
      local v = {}
      for r = 1, 16 do v[r] = {} for c = 1, 16 do v[r][c] = { math.floor(128 + 127 * g()), 8 * r, 9 * c } end end
      F.write_file(path, facet.data.encode_png(facet.tensor(v, { dtype = "uint8" })))
    end
    os.execute(("mkdir -p '%s/p/a' '%s/p/b' '%s/d/x'"):format(mf, mf, mf))
    local probes_ = { mf .. "/p/a/1.png", mf .. "/p/a/2.png", mf .. "/p/b/1.png", mf .. "/p/b/2.png" }
    local dis_ = { mf .. "/d/x/1.png", mf .. "/d/x/2.png", mf .. "/d/x/3.png" }
    for _, f in ipairs(probes_) do png(f) end
    for _, f in ipairs(dis_) do png(f) end
    facet.manual_seed(3)
    local net = facet.models.convnet { in_channels = 3, size = 16, emb = 8 }
    facet.save_safetensors(net, mf .. "/m.safetensors")
    local pf = facet.eval.features(net, probes_, { size = { 16, 16 } })
    local want = facet.eval.identify(pf, { 1, 1, 2, 2 }, facet.eval.features(net, dis_, { size = { 16, 16 } }), nil,
      { positives = pf })
    out, rc = F.sh(("luajit bin/facet run recipes/megaface.lua --checkpoint %s/m.safetensors --model convnet --emb 8 " ..
      "--size 16 --probe-dir %s/p --distractor-dir %s/d --verify 0"):format(mf, mf, mf))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("4 probes, 3 distractors, 4 trials", 1, true), out)
    assert.truthy(out:find(("rank-1 %.4f"):format(want.rank1), 1, true), out)
    out, rc = F.sh("luajit bin/facet run recipes/megaface.lua --probes x.npy")
    assert.truthy(rc ~= 0 and out:find("--probes needs --labels and --distractors", 1, true), out)
  end)

  it("hostile inputs fail clearly", function()
    local e = npy("emb")
    local ids = npy("ids")
    H.assert_error(function() facet.eval.identify(e, ids, e, ids, { block = 0 }) end, "block must be an integer >= 1")
    H.assert_error(function() facet.eval.verify_all(e, ids, { block = 0 }) end, "block must be an integer >= 1")
    H.assert_error(function() facet.eval.verify_scores({ 0.1, 0 / 0, 0.3 }, { true, false, false }) end, "NaN")
    H.assert_error(function() facet.eval.verify_scores({ 0.1, 0.2, 0.3 }, { true, false }) end, "3 booleans")
    H.assert_error(function() facet.eval.verify_scores({ 0.1, 0.2 }, facet.tensor({ 1, 2 }, { dtype = "uint8" })) end,
      "must be 0 or 1")
    H.assert_error(function() facet.eval.verify_scores({ 0.1, 0.2 }, { true, false }, { fars = { 2 } }) end, "fars")
    H.assert_error(function() facet.eval.verify_scores({ 0.1, 0.2 }, { true, false }, { folds = 1 }) end, "folds")
    H.assert_error(function() facet.eval.verify_scores({ 0.1, 0.2 }, { true, false }, { roc_points = 1 }) end, "roc_points")
    H.assert_error(function() facet.eval.verify_scores({ 0.1 }, { true }) end, "at least 2 scores")
    H.assert_error(function() facet.eval.verify_pairs(e, { 1, 2 }, { 1 }, { true, false }) end, "one length")
    H.assert_error(function() facet.eval.verify_pairs(e, { 1, 401 }, { 1, 2 }, { true, false }) end, "outside [1, 400]")
    H.assert_error(function() facet.eval.verify_all(e, { 1, 2 }) end, "400 embeddings but 2 labels")
    local bad = e:clone()
    bad:set(0 / 0, 3, 2)
    H.assert_error(function() facet.eval.verify_all(bad, ids) end, "row 2 holds a NaN")
    H.assert_error(function() facet.eval.identify(bad, ids, e, ids) end, "NaN")
    H.assert_error(function() facet.eval.identify(e, ids, e, ids, { positive_labels = ids }) end, "need opts.positives")
    H.assert_error(function() facet.eval.identify(e, ids, e, ids, { max_rank = 0 }) end, "max_rank")
    H.assert_error(function() facet.eval.verify_scores({ 0.1, 0.2 }, { true, false }, { bogus = 1 }) end, "bogus")
  end)
end)
