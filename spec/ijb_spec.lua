--- IJB-B/C 1:1 verification (facet.eval.ijb) on synthetic templates written
-- in IJB's file layout, against values worked out by hand: flip halves
-- summed, detector scores, media means, template sums, L2 normalisation,
-- pair scores and TAR at FAR; then bad files and inputs.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

-- six images, d = 2, features [image | mirror] (N x 4), detector scores:
--   a, b: template 5, media 1: (2,0)*0.5 and (0,2)*0.5, mean (0.5, 0.5)
--   c:    template 5, media 2: (4,0)*1                  -> template 5 = (4.5, 0.5)
--   d:    template 7, media 3: (0,4)                    -> template 7 = (0, 1)
--   e:    template 9, media 4: (2,2)                    -> template 9 = (1, 1)/sqrt 2
--   f:    template 3, media 5: (1, 0.2)                 -> template 3 = (1, 0.2)/sqrt 1.04
local FEATS = {
  { 1, 0, 1, 0 }, { 0, 1, 0, 1 }, { 3, 0, 1, 0 }, { 0, 2, 0, 2 }, { 1, 1, 1, 1 }, { 0.5, 0.1, 0.5, 0.1 },
}
local FACES = "a.jpg 5 1\nb.jpg 5 1\nc.jpg 5 2\nd.jpg 7 3\ne.jpg 9 4\nf.jpg 3 5\n"
local SCORES = { 0.5, 0.5, 1, 1, 1, 1 }
local PAIRS = "5 9 1\n7 9 1\n5 7 1\n3 5 0\n3 7 0\n3 9 0\n"

local function five_points(names, scores)
  local lines = {}
  for i, n in ipairs(names) do lines[i] = ("%s 1 2 3 4 5 6 7 8 9 10 %g"):format(n, scores[i]) end
  return table.concat(lines, "\n") .. "\n"
end

local function write_set(dir, faces, pairs_, points, target)
  target = target or "ijbb"
  os.execute("mkdir -p '" .. dir .. "/meta'")
  F.write_file(("%s/meta/%s_face_tid_mid.txt"):format(dir, target), faces)
  F.write_file(("%s/meta/%s_template_pair_label.txt"):format(dir, target), pairs_)
  if points then F.write_file(("%s/meta/%s_name_5pts_score.txt"):format(dir, target), points) end
end

describe("facet.eval.ijb", function()
  local root
  setup(function() root = F.temp_dir() end)
  teardown(function() F.remove_dir(root) end)

  it("reads the meta files", function()
    local dir = root .. "/read"
    write_set(dir, FACES, PAIRS, five_points({ "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg" }, SCORES))
    local m = facet.eval.ijb.read(dir)
    assert.are.equal("ijbb", m.target)
    assert.are.equal(6, m.n)
    assert.are.equal(6, m.pairs)
    assert.are.same({ 5, 5, 5, 7, 9, 3 }, H.values(m.templates))
    assert.are.same({ 1, 1, 2, 3, 4, 5 }, H.values(m.medias))
    assert.are.same({ 5, 7, 5, 3, 3, 3 }, H.values(m.t1))
    assert.are.same({ 1, 1, 1, 0, 0, 0 }, H.values(m.label))
    assert.are.same(SCORES, H.values(m.scores))
  end)

  it("templates: flip, detector scores, media means, template sums, normalised (by hand)", function()
    local dir = root .. "/tmpl"
    write_set(dir, FACES, PAIRS, five_points({ "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg" }, SCORES))
    local m = facet.eval.ijb.read(dir)
    local tf, ids = facet.eval.ijb.templates(facet.tensor(FEATS), m.templates, m.medias, { scores = m.scores, flip = true })
    assert.are.same({ 3, 5, 7, 9 }, H.values(ids))            -- ascending, as np.unique
    local v = H.values(tf)
    local n5, n3 = math.sqrt(4.5 ^ 2 + 0.5 ^ 2), math.sqrt(1.04)
    local want = { 1 / n3, 0.2 / n3, 4.5 / n5, 0.5 / n5, 0, 1, 1 / math.sqrt(2), 1 / math.sqrt(2) }
    for k = 1, 8 do H.assert_close(v[k], want[k], 1e-6) end
    -- without detector scores media 1 is the mean of (2,0) and (0,2): template 5 = (5, 1)
    local t2 = facet.eval.ijb.templates(facet.tensor(FEATS), m.templates, m.medias, { flip = true })
    H.assert_close(H.values(t2)[3], 5 / math.sqrt(26), 1e-6)
    -- images normalised first: media 1 = (0.25, 0.25) with the scores, media 2 = (1, 0)
    local t3 = facet.eval.ijb.templates(facet.tensor(FEATS), m.templates, m.medias,
      { flip = true, scores = m.scores, normalize_images = true })
    H.assert_close(H.values(t3)[3], 1.25 / math.sqrt(1.25 ^ 2 + 0.25 ^ 2), 1e-6)
    -- without flip the first half alone: c's (3, 0) instead of (4, 0)
    local t4 = facet.eval.ijb.templates(facet.tensor(FEATS):narrow(2, 1, 2):contiguous(), m.templates, m.medias,
      { scores = m.scores })
    H.assert_close(H.values(t4)[3], 3.25 / math.sqrt(3.25 ^ 2 + 0.25 ^ 2), 1e-6)
  end)

  it("evaluate: pair scores and TAR at FAR (by hand), from a tensor or a .npy", function()
    local dir = root .. "/eval"
    write_set(dir, FACES, PAIRS, five_points({ "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg" }, SCORES))
    local n5, n3 = math.sqrt(20.5), math.sqrt(1.04)
    -- genuine 5-9, 7-9, 5-7; impostor 3-5, 3-7, 3-9
    local want = { 5 / (n5 * math.sqrt(2)), 1 / math.sqrt(2), 0.5 / n5,
      (4.5 + 0.1) / (n5 * n3), 0.2 / n3, 1.2 / (n3 * math.sqrt(2)) }
    local r = facet.eval.ijb.evaluate(dir, facet.tensor(FEATS), { flip = true, fars = { 0.34, 0.67, 1 } })
    for k = 1, 6 do H.assert_close(H.values(r.scores)[k], want[k], 1e-6) end
    -- impostors 0.9962, 0.8321, 0.1961; genuine 0.7809, 0.7071, 0.1104
    assert.are.equal(0, r.tar_at_far[0.34])                  -- accept above the 2nd impostor (0.83): none
    H.assert_close(r.tar_at_far[0.67], 2 / 3, 1e-12)          -- above the 3rd (0.196): two of three
    assert.are.equal(1, r.tar_at_far[1])
    assert.are.same({ "ijbb", 4, 6, 6 }, { r.target, r.templates, r.pairs, r.images })
    assert.is_nil(r.tar_at_far[1e-6])                          -- 3 impostors measure no FAR below 1/3
    facet.save_npy(facet.tensor(FEATS), dir .. "/feats.npy")
    local again = facet.eval.ijb.evaluate(dir, dir .. "/feats.npy", { flip = true, fars = { 0.67 } })
    assert.are.equal(r.tar_at_far[0.67], again.tar_at_far[0.67])
    -- IJB-C's names, the default FAR list (1e-6 ... 1e-1: none measurable here) and the ROC for the report
    local c = root .. "/ijbc"
    write_set(c, FACES, PAIRS, nil, "ijbc")
    local rc = facet.eval.ijb.evaluate(c, facet.tensor(FEATS), { flip = true })
    assert.are.equal("ijbc", rc.target)
    assert.are.same({}, rc.tar_at_far)
    assert.are.equal(0, rc.roc.fpr[1])
    for _, f in ipairs(rc.roc.fpr) do assert.is_true(f <= 0.1) end   -- the ROC stops at the largest FAR asked
    assert.are.equal(1, r.roc.fpr[#r.roc.fpr])                          -- (1 above: every point)
  end)

  it("identify: 1:N over the two galleries and the mixed probes (by hand)", function()
    local dir = root .. "/onen"
    write_set(dir, FACES, PAIRS, five_points({ "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg" }, SCORES))
    local head = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
    F.write_file(dir .. "/meta/ijbb_1N_gallery_S1.csv", head .. "5,100,a.jpg\n5,100,b.jpg\n5,100,c.jpg\n")
    F.write_file(dir .. "/meta/ijbb_1N_gallery_S2.csv", head .. "7,200,d.jpg\n")
    F.write_file(dir .. "/meta/ijbb_1N_probe_mixed.csv", head .. "9,200,e.jpg\n3,100,f.jpg\n")
    -- probes in template order: 3 (subject 100) scores 0.996 against 5 (100) and 0.196 against 7: rank 0;
    -- 9 (subject 200) scores 0.781 against 5 and 0.707 against its own 7: rank 1
    local r = facet.eval.ijb.identify(dir, facet.tensor(FEATS), { flip = true, fpirs = { 1 } })
    assert.are.same({ 0, 1 }, r.closed.ranks)
    assert.are.equal(0.5, r.closed.rank1)
    assert.are.equal(1, r.closed.cmc[2])
    assert.are.same({ 2, { 1, 1 } }, { r.probes, r.gallery })
    -- each gallery alone: one mated probe found at rank 1, one non-mated; FPIR 1 lets every score pass
    for k = 1, 2 do
      assert.are.same({ 1, 1, 1 }, { r.open[k].mated, r.open[k].non_mated, r.open[k].tpir_at_fpir[1] })
    end
    F.write_file(dir .. "/meta/ijbb_1N_probe_mixed.csv", head .. "9,200,e.jpg\n9,300,e.jpg\n")
    H.assert_error(function() facet.eval.ijb.identify(dir, facet.tensor(FEATS), { flip = true }) end,
      "template 9 has subjects 200 and 300")
    F.write_file(dir .. "/meta/ijbb_1N_probe_mixed.csv", head .. "11,200,x.jpg\n")
    H.assert_error(function() facet.eval.ijb.identify(dir, facet.tensor(FEATS), { flip = true }) end,
      "names template 11, which has no image")
    F.write_file(dir .. "/meta/ijbb_1N_probe_mixed.csv", head .. "x,200\n")
    H.assert_error(function() facet.eval.ijb.identify(dir, facet.tensor(FEATS), { flip = true }) end,
      "line 2: want integer TEMPLATE_ID,SUBJECT_ID")
  end)

  it("bin/facet eval --ijb DIR --features FILE.npy prints TAR at FAR", function()
    local dir = root .. "/cli"
    write_set(dir, FACES, PAIRS, five_points({ "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg" }, SCORES))
    facet.save_npy(facet.tensor(FEATS), dir .. "/feats.npy")
    local out = F.sh(("luajit bin/facet eval --ijb %s --features %s/feats.npy"):format(dir, dir))
    assert.truthy(out:find("ijbb: 6 images, 4 templates, 6 pairs (3 genuine)", 1, true), out)
    assert.truthy(out:find("1e-06    -", 1, true), out)         -- 3 impostors measure no FAR of 1e-6
    assert.falsy(out:find("1:N", 1, true), out)                  -- no gallery lists: 1:1 only
    local head = "TEMPLATE_ID,SUBJECT_ID\n"
    F.write_file(dir .. "/meta/ijbb_1N_gallery_S1.csv", head .. "5,100\n")
    F.write_file(dir .. "/meta/ijbb_1N_gallery_S2.csv", head .. "7,200\n")
    F.write_file(dir .. "/meta/ijbb_1N_probe_mixed.csv", head .. "9,200\n3,100\n")
    out = F.sh(("luajit bin/facet eval --ijb %s --features %s/feats.npy"):format(dir, dir))
    assert.truthy(out:find("1:N, 2 probes, galleries of 1 and 1: rank-1 0.5000", 1, true), out)
    local rc
    out, rc = F.sh(("luajit bin/facet eval --ijb %s --features %s/nothing.npy"):format(dir, dir))
    assert.truthy(out:find("nothing.npy", 1, true) and rc == 1, out)
    out = F.sh(("luajit bin/facet eval --ijb %s"):format(dir))
    assert.truthy(out:find("give a checkpoint", 1, true), out)
  end)

  it("features: the model on each image file plus its mirror, not normalised", function()
    local dir = root .. "/img"
    os.execute("mkdir -p '" .. dir .. "'")
    local paths, rgbs = {}, {}
    local g = H.lcg(11)
    for i = 1, 3 do
      local v = {}
      for r = 1, 4 do v[r] = {} for c = 1, 5 do v[r][c] = { math.floor(128 + 120 * g()), 7 * r, 9 * c } end end
      rgbs[i] = facet.tensor(v, { dtype = "uint8" })
      paths[i] = ("%s/%d.png"):format(dir, i)
      F.write_file(paths[i], facet.data.encode_png(rgbs[i]))
    end
    facet.manual_seed(4)
    local model = facet.nn.Sequential(facet.nn.Flatten(), facet.nn.Linear(60, 3))
    local f = facet.eval.features(model, paths, { size = { 4, 5 }, batch_size = 2 })
    for i = 1, 3 do
      local bytes = F.read_file(paths[i])
      local x = facet.data.decode_image(bytes):reshape { 1, 3, 4, 5 }
      local xf = facet.data.decode_image(bytes, { flip = true }):reshape { 1, 3, 4, 5 }
      local want = H.values(model:forward(x):clone():add_(model:forward(xf)))
      local got = H.values(f:narrow(1, i, 1))
      for k = 1, 3 do H.assert_close(got[k], want[k], 1e-5) end
    end
    H.assert_error(function() facet.eval.features(model, { dir .. "/none.png" }) end, "none.png")
    H.assert_error(function() facet.eval.features(model, {}) end, "no image")
    H.assert_error(function() facet.eval.features(model, paths, { batch_size = 0 }) end, "batch_size must be an integer >= 1")
    H.assert_error(function() facet.eval.features(model, paths, { size = { 4 } }) end, "size")
  end)

  it("bad files and inputs fail clearly", function()
    local function set(name, faces, pairs_, points)
      local dir = root .. "/" .. name
      write_set(dir, faces, pairs_, points)
      return dir
    end
    local names = { "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg" }
    H.assert_error(function() facet.eval.ijb.read(root .. "/nothing") end, "holds neither")
    H.assert_error(function() facet.eval.ijb.read(set("short", "a.jpg 5\n", PAIRS)) end, "line 1: want 'image_name template_id media_id'")
    H.assert_error(function() facet.eval.ijb.read(set("notint", "a.jpg x 1\n", PAIRS)) end, "template_id \"x\" is not an integer")
    H.assert_error(function() facet.eval.ijb.read(set("label", FACES, "5 9 2\n")) end, "label must be 0 or 1")
    H.assert_error(function() facet.eval.ijb.read(set("nopairs", FACES, "\n")) end, "lists no pair")
    local swapped = { "b.jpg", "a.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg" }
    H.assert_error(function() facet.eval.ijb.read(set("names", FACES, PAIRS, five_points(swapped, SCORES))) end,
      "line 1 names b.jpg where the face list's image 1 is a.jpg")
    H.assert_error(function() facet.eval.ijb.read(set("fewer", FACES, PAIRS, five_points({ "a.jpg" }, { 1 }))) end,
      "lists 1 images, the face list 6")
    local ghost = set("ghost", FACES, "5 9 1\n5 11 0\n", five_points(names, SCORES))
    H.assert_error(function() facet.eval.ijb.evaluate(ghost, facet.tensor(FEATS), { flip = true }) end,
      "t2[2] = 11 is a template with no image")
    local ok = set("ok", FACES, PAIRS, five_points(names, SCORES))
    H.assert_error(function() facet.eval.ijb.evaluate(ok, facet.ones { 5, 4 }) end, "features has 5 rows")
    H.assert_error(function() facet.eval.ijb.evaluate(ok, facet.ones { 6, 3 }, { flip = true }) end, "flip needs N x 2d")
    H.assert_error(function() facet.eval.ijb.evaluate(ok, facet.tensor(FEATS), { bogus = 1 }) end, "bogus")
    local nopts = set("nopts", FACES, PAIRS)
    H.assert_error(function() facet.eval.ijb.evaluate(nopts, facet.tensor(FEATS), { detector_score = true }) end,
      "detector_score needs")
    H.assert_error(function() facet.eval.ijb.evaluate(ok, root .. "/missing.npy") end, "missing.npy")
  end)
end)
