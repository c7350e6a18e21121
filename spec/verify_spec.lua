--- Verification protocols: a hand-worked case for each, perfect separation,
-- an independent sort-based recomputation of InsightFace's 10-fold protocol,
-- the ROC, TAR at FAR (never extrapolated) and the error paths.
local H = require "support.device"
local facet = H.facet

-- pairs with given cosines: e1 = (1, 0), e2 = (c, sqrt(1 - c^2))
local function pairs_of(cosines)
  local a, b = {}, {}
  for i, c in ipairs(cosines) do
    a[i] = { 1, 0 }
    b[i] = { c, math.sqrt(1 - c * c) }
  end
  return facet.tensor(a), facet.tensor(b)
end

describe("facet.eval.verify", function()
  it("marks the metrics undefined, with a warning, when a set has no different (or no same) pairs", function()
    local a, b = pairs_of({ 0.9, 0.8, 0.7, 0.95 })
    local r = facet.eval.verify(a, b, { true, true, true, true }, { folds = 2 })
    assert.are.same({ roc = true, tar_at_far = true, accuracy = true }, r.undefined)
    assert.are.equal(1, #r.warnings)
    assert.truthy(r.warnings[1]:find("no different-identity pairs among the 4", 1, true), r.warnings[1])
    local d = facet.eval.verify(a, b, { false, false, false, false }, { folds = 2 })
    assert.truthy(d.warnings[1]:find("no same-identity pairs among the 4", 1, true), d.warnings[1])
    local ok = facet.eval.verify(a, b, { true, false, true, false }, { folds = 2 })
    assert.is_nil(ok.undefined)
    assert.is_nil(ok.warnings)
  end)

  -- squared distances 0.205 (same), 1.755 (diff), 0.405 (same), 0.605 (diff): off the 0.01 grid
  local cos = { 1 - 0.205 / 2, 1 - 1.755 / 2, 1 - 0.405 / 2, 1 - 0.605 / 2 }
  local same = { true, false, true, false }

  it("InsightFace's protocol by hand (2 folds of 2 pairs)", function()
    local a, b = pairs_of(cos)
    local r = facet.eval.verify(a, b, same, { folds = 2 })
    -- fold 1 trains on 0.405 (same) / 0.605 (diff): smallest separating threshold 0.41, fold right
    -- fold 2 trains on 0.205 / 1.755: threshold 0.21, so 0.405 (same) is called different
    H.assert_close(r.thresholds[1], 0.41, 1e-9)
    H.assert_close(r.thresholds[2], 0.21, 1e-9)
    assert.are.same({ 1, 0.5 }, r.fold_accuracy)
    H.assert_close(r.accuracy, 0.75, 1e-12)
    H.assert_close(r.std, 0.25, 1e-12)            -- population std
  end)

  it("FaceX-Zoo's protocol by hand", function()
    local a, b = pairs_of(cos)
    local r = facet.eval.verify(a, b, same, { folds = 2, protocol = "facexzoo" })
    -- fold 1: scores 0.7975 / 0.6975, first of the 1000 steps above the minimum separates
    H.assert_close(r.thresholds[1], cos[4] + (cos[3] - cos[4]) / 1000, 1e-6)
    H.assert_close(r.thresholds[2], cos[2] + (cos[1] - cos[2]) / 1000, 1e-6)
    assert.are.same({ 1, 0.5 }, r.fold_accuracy)
    H.assert_close(r.accuracy, 0.75, 1e-12)
    H.assert_close(r.std, math.sqrt(0.125) / math.sqrt(2), 1e-9)   -- ddof 1, over sqrt(folds)
  end)

  it("perfectly separated pairs score 1", function()
    local c, s = {}, {}
    for i = 1, 40 do
      s[i] = i % 2 == 0
      c[i] = s[i] and 0.9 - i * 0.001 or 0.1 + i * 0.001
    end
    local a, b = pairs_of(c)
    local r = facet.eval.verify(a, b, s)
    assert.are.equal(1, r.accuracy)
    assert.are.equal(0, r.std)
    -- where the protocols differ: FaceX-Zoo takes the smallest threshold with the
    -- best TPR - FPR on the training folds, just above their highest impostor,
    -- so a test fold's higher impostors cross it
    local fx = facet.eval.verify(a, b, s, { protocol = "facexzoo" })
    assert.is_true(fx.accuracy < 1, "facexzoo " .. fx.accuracy)
    -- with two score levels no test impostor can lie above the training ones
    for i = 1, 40 do c[i] = s[i] and 0.9 or 0.1 end
    a, b = pairs_of(c)
    r = facet.eval.verify(a, b, s, { protocol = "facexzoo" })
    assert.are.equal(1, r.accuracy)
    assert.are.equal(0, r.std)
  end)

  it("agrees with an independent sort-based recomputation on random pairs (uneven folds)", function()
    local g = H.lcg(3)
    local c, s = {}, {}
    for i = 1, 203 do
      s[i] = g() > 0
      c[i] = math.max(-1, math.min(1, (s[i] and 0.35 or 0.0) + 0.3 * g()))
    end
    local a, b = pairs_of(c)
    local r = facet.eval.verify(a, b, s)
    -- the reference: distances from the float32 embeddings' cosines, folds of 21,21,21,20...
    local d = {}
    local cs = H.values(((a:l2_normalize()) * (b:l2_normalize())):sum(2))
    for i = 1, #cs do d[i] = math.max(0, 2 - 2 * cs[i]) end
    local start, accs = 1, {}
    for f = 1, 10 do
      local n = 20 + (f <= 3 and 1 or 0)
      local lo, hi = start, start + n - 1
      start = hi + 1
      -- training accuracy of every grid threshold from sorted training distances
      local train = {}
      for i = 1, #d do if i < lo or i > hi then train[#train + 1] = { d[i], s[i] } end end
      table.sort(train, function(x, y) return x[1] < y[1] end)
      local total_diff = 0
      for _, t in ipairs(train) do if not t[2] then total_diff = total_diff + 1 end end
      local best, best_t, k, same_below, diff_below = -1, nil, 1, 0, 0
      for step = 0, 399 do
        local t = step * 0.01
        while k <= #train and train[k][1] < t do
          if train[k][2] then same_below = same_below + 1 else diff_below = diff_below + 1 end
          k = k + 1
        end
        local acc = (same_below + (total_diff - diff_below)) / #train
        if acc > best then best, best_t = acc, t end
      end
      local right = 0
      for i = lo, hi do if (d[i] < best_t) == s[i] then right = right + 1 end end
      accs[f] = right / n
      H.assert_close(r.thresholds[f], best_t, 1e-12)
    end
    assert.are.same(accs, r.fold_accuracy)
  end)

  it("ROC and TAR at FAR, reported only where the pairs allow", function()
    local c, s = {}, {}
    for i = 1, 300 do
      s[i] = i <= 150
      c[i] = s[i] and 0.5 + i / 1000 or (i - 150) / 1000
    end
    local a, b = pairs_of(c)
    local r = facet.eval.verify(a, b, s)
    assert.are.equal(1, r.tar_at_far[1e-1])      -- 150 impostors: FAR 0.1 and 0.01 are measurable
    assert.are.equal(1, r.tar_at_far[1e-2])
    assert.is_nil(r.tar_at_far[1e-3])
    assert.are.equal(0, r.roc.fpr[1])
    assert.are.equal(1, r.roc.tpr[#r.roc.tpr])
    assert.are.equal(1, r.roc.fpr[#r.roc.fpr])
  end)

  it("checks its arguments", function()
    local a, b = pairs_of { 0.5, 0.2 }
    H.assert_error(function() facet.eval.verify(a, facet.ones({ 3, 2 }), { true, false }) end, "one shape")
    H.assert_error(function() facet.eval.verify(a, b, { true }) end, "2 booleans")
    H.assert_error(function() facet.eval.verify(a, b, { true, 1 }) end, "not a boolean")
    H.assert_error(function() facet.eval.verify(a, b, { true, false }, { protocol = "lfw" }) end, "protocol")
    H.assert_error(function() facet.eval.verify(a, b, { true, false }, { folds = 10 }) end, "folds")
    a[1][1] = 0 / 0
    H.assert_error(function() facet.eval.verify(a, b, { true, false }, { folds = 2 }) end, "NaN")
  end)
end)

describe("verify_set", function()
  -- 12 pairs of 1 x 2 x 3 images through Flatten + Linear; the result must equal
  -- embedding by hand (image plus mirror) and running verify on rows 2p-1, 2p
  local nn = facet.nn
  local function fixture()
    facet.manual_seed(3)
    local model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4))
    local P, imgs, issame = 12, {}, {}
    local rnd = H.lcg(7)
    for i = 1, 2 * P do
      imgs[i] = { { { rnd(), rnd(), rnd() }, { rnd(), rnd(), rnd() } } }
    end
    for p = 1, P do issame[p] = p % 3 ~= 0 end
    return model, { pairs = P, issame = issame, images = facet.tensor(imgs) }
  end

  it("equals embed with the flip test and verify on the interleaved pairs", function()
    local model, set = fixture()
    local r = facet.eval.verify_set(model, set)
    local x = set.images
    local function mirror(t) -- reverse the last dim through plain Lua values
      local v = H.values(t)
      local n, W = #v, 3
      local out = {}
      for i = 1, n, W do for j = 0, W - 1 do out[i + j] = v[i + W - 1 - j] end end
      return facet.tensor(out):reshape(t:shape())
    end
    local e = model:forward(x):clone():add_(model:forward(mirror(x))):l2_normalize()
    local odd, even = {}, {}
    for p = 1, set.pairs do odd[p], even[p] = 2 * p - 1, 2 * p end
    local want = facet.eval.verify(e:index_select(facet.tensor(odd, { dtype = "int32" })),
      e:index_select(facet.tensor(even, { dtype = "int32" })), set.issame, { folds = 10 })
    assert.are.equal(want.accuracy, r.accuracy)
    assert.are.equal(want.std, r.std)
    local noflip = facet.eval.verify_set(model, set, { flip = false, protocol = "facexzoo" })
    assert.are.equal("facexzoo", noflip.protocol)
  end)

  it("rejects what is not a decoded set", function()
    local model, set = fixture()
    H.assert_error(function() facet.eval.verify_set(model, { pairs = 1 }) end, "load_bin")
    set.pairs = 5
    H.assert_error(function() facet.eval.verify_set(model, set) end, "24 images for 5 pairs")
  end)
end)
