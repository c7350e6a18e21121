--- Sub-center ArcFace's cleaning step: facet.heads.subcenter (each sample's
-- cosines to its own class's sub-centres, against a plain double-precision
-- loop; the dominant sub-centre a class, the angles and the threshold by
-- hand; collapse; the argument checks) and `facet clean` end to end on a
-- small InsightFace .rec, against the same steps computed here from the
-- backbone's own embeddings: the kept images (bytes, labels, identity
-- ranges, an emptied class), the dominant sub-centres' weight, the dropped
-- list (with an undecodable image), the counts; --embeddings from
-- `facet embed`; and the errors.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local S = facet.heads.subcenter

local function dot(a, b)
  local s = 0
  for i = 1, #a do s = s + a[i] * b[i] end
  return s
end
local function unit(a)
  local n = math.sqrt(dot(a, a))
  local r = {}
  for i = 1, #a do r[i] = a[i] / n end
  return r
end

describe("facet.heads.subcenter", function()
  H.it("cosines: each sample against its own class's k sub-centres, in chunks, as a plain loop", function()
    local K, k, D, N = 7, 3, 5, 50
    local W = facet.randn({ K * k, D }, { seed = 3 })
    local E = facet.randn({ N, D }, { seed = 4 })
    local y = {}
    for i = 1, N do y[i] = (i * 5) % K end
    local got = S.cosines(H.on(W), k, E, y, { batch = 7 }):totable()
    local Wt, Et = W:totable(), E:totable()
    for i = 1, N do
      for j = 1, k do
        local want = dot(unit(Et[i]), unit(Wt[y[i] * k + j]))
        H.assert_close(got[i][j], want, 1e-5, 1e-6)
      end
    end
  end)

  H.it("clean by hand: nearest sub-centres, the dominant one a class (ties to the lower), angles, threshold", function()
    -- class 0: sub-centres (1, 0) and (0, 1); class 1: (-1, 0) and (0, -1); class 2: (1, 1) and (-1, 1), no sample
    local W = H.tensor { { 1, 0 }, { 0, 1 }, { -1, 0 }, { 0, -1 }, { 1, 1 }, { -1, 1 } }
    local s3 = math.sqrt(3)
    local E = facet.tensor {
      { s3, 1 },    -- class 0: 30 degrees from (1, 0), 60 from (0, 1): nearest 0
      { 1, s3 },    -- class 0: nearest 1
      { 0, -2 },    -- class 1: on (0, -1)
      { -1, -1 },   -- class 1: 45 degrees from both: the first, (-1, 0)
    }
    local r = S.clean(W, 2, E, { 0, 0, 1, 1 }, { threshold = 40 })
    assert.are.same({ 0, 1, 1, 0 }, r.nearest:totable())
    -- class 0: one each (tie: sub-centre 0); class 1: one each (tie: 0); class 2: none (0)
    assert.are.same({ 0, 0, 0 }, r.dominant:totable())
    assert.are.same({ { 1, 1 }, { 1, 1 }, { 0, 0 } }, r.counts:totable())
    H.assert_close(r.angle:totable(), { 30, 60, 90, 45 }, 1e-4, 1e-4)
    H.assert_close(r.cos:totable(), { s3 / 2, s3 / 2, 1, math.sqrt(0.5) }, 1e-6, 1e-6)
    assert.are.same({ 1, 0, 0, 0 }, r.keep:totable())
    assert.are.equal(1, r.kept)
    assert.are.equal(3, r.dropped)
    -- 75 degrees (the default, the paper's) keeps rows 1, 2 and 4
    local d = S.clean(W, 2, E, { 0, 0, 1, 1 })
    assert.are.same({ 1, 1, 0, 1 }, d.keep:totable())
    assert.are.equal(75, d.threshold)
    -- a third sample of class 1 near (0, -1) makes that one dominant: angles to it
    local E2 = facet.tensor { { s3, 1 }, { 1, s3 }, { 0, -2 }, { -1, -1 }, { 0.1, -1 } }
    local r2 = S.clean(W, 2, E2, { 0, 0, 1, 1, 1 }, { threshold = 50 })
    assert.are.same({ 0, 1, 0 }, r2.dominant:totable())
    H.assert_close(r2.angle:totable()[4], 45, 1e-4, 1e-4)
    assert.are.same({ 1, 0, 1, 1, 1 }, r2.keep:totable())
  end)

  H.it("a NaN embedding is dropped, and counted, and votes for no sub-centre (also in compiled loops)", function()
    local W = H.tensor { { 1, 0 }, { 0, 1 } }
    local r = S.clean(W, 2, facet.tensor { { 1, 0.1 }, { 0 / 0, 1 } }, { 0, 0 })
    assert.are.same({ 1, 0 }, r.keep:totable())
    assert.are.equal(1, r.dropped)
    assert.are.same({ { 1, 0 } }, r.counts:totable())
    -- thousands of rows, so LuaJIT compiles the loops: every fifth row NaN, the others near sub-centre 1
    local N, rows, y = 3000, {}, {}
    for i = 1, N do rows[i], y[i] = i % 5 == 0 and { 0 / 0, 0 / 0 } or { 0.2, 1 }, 0 end
    local big = S.clean(W, 2, facet.tensor(rows), y)
    assert.are.equal(N / 5, big.dropped)
    assert.are.same({ { 0, N - N / 5 } }, big.counts:totable())
    local keep = big.keep:totable()
    for i = 1, N do assert.are.equal(i % 5 == 0 and 0 or 1, keep[i], "row " .. i) end
  end)

  H.it("collapse keeps each class's dominant row", function()
    local W = H.on(facet.randn({ 8, 3 }, { seed = 9 }))
    local c = S.collapse(W, 2, { 1, 0, 0, 1 })
    assert.are.equal(H.device, c:device())
    local Wt = W:to("cpu"):totable()
    assert.are.same({ Wt[2], Wt[3], Wt[5], Wt[8] }, c:to("cpu"):totable())
  end)

  it("checks its arguments", function()
    local W = facet.randn({ 6, 2 }, { seed = 1 })
    local E = facet.randn({ 2, 2 }, { seed = 2 })
    H.assert_error(function() S.clean(W, 4, E, { 0, 0 }) end, "not a positive multiple of k = 4")
    H.assert_error(function() S.clean(W, 0, E, { 0, 0 }) end, "k")
    H.assert_error(function() S.clean(W, 2, E, { 0, 3 }) end, "label 3 of sample 2 outside [0, 3)")
    H.assert_error(function() S.clean(W, 2, E, { 0 }) end, "want 2 labels")
    H.assert_error(function() S.clean(W, 2, facet.randn({ 2, 3 }), { 0, 0 }) end, "N x 2")
    H.assert_error(function() S.clean(W, 2, E, { 0, 0 }, { threshold = 200 }) end, "threshold")
    H.assert_error(function() S.clean(W, 2, E, { 0, 0 }, { treshold = 20 }) end, "treshold")
    H.assert_error(function() S.collapse(W, 2, { 0, 2, 0 }) end, "dominant index 2 of class 1 outside [0, 2)")
    H.assert_error(function() S.collapse(W, 2, { 0, 1 }) end, "want 3 dominant indices")
  end)
end)

-- ---- facet clean -------------------------------------------------------------------------

local RUN = "luajit bin/facet "
local SIZE, EMB = 16, 8

describe("facet clean", function()
  local path = F.scratch()
  local model, images, labels, W, emb
  local K, k = 3, 2

  -- the images of the set, in record order: class 0 three faces, class 1
  -- three faces and an undecodable record, class 2 one face
  setup(function()
    facet.manual_seed(5)
    model = facet.models.convnet { in_channels = 3, size = SIZE, emb = EMB }
    model:evaluate()
    images, labels = {}, {}
    for id = 0, 2 do
      for j = 1, (id == 2 and 1 or 3) do
        images[#images + 1] = facet.data.encode_png(facet.data.render_synthetic(7, id + 1, j, 24, 0))
        labels[#labels + 1] = id
      end
      if id == 1 then images[#images + 1], labels[#labels + 1] = "not an image", 1 end
    end
    local w = facet.data.recordio_writer(path("train"))
    local n = #images
    w:write(0, { n + 1, n + 1 + K }, "")
    for i = 1, n do w:write(i, labels[i], images[i]) end
    w:write(n + 1, { 1, 4 }, "")
    w:write(n + 2, { 4, 8 }, "")
    w:write(n + 3, { 8, 9 }, "")
    w:close()
    -- the backbone's own embeddings of the decodable images (no flip)
    emb = {}
    for i = 1, n do
      if images[i] ~= "not an image" then
        local x = facet.data.decode_image(images[i], { size = { SIZE, SIZE } }):reshape(1, 3, SIZE, SIZE)
        emb[i] = facet.eval.embed(model, x, { flip = false }):totable()[1]
      end
    end
    -- sub-centres: class 0 (e1 + e2, e3), class 1 (e4, e5 + e6), class 2 pointing away from its face
    local e = emb
    local function add(a, b) local r = {} for i = 1, EMB do r[i] = a[i] + b[i] end return r end
    local function neg(a) local r = {} for i = 1, EMB do r[i] = -a[i] end return r end
    local rows = { add(e[1], e[2]), e[3], e[4], add(e[5], e[6]), neg(e[8]), neg(add(e[8], e[1])) }
    W = facet.tensor(rows)
    local t = model:state_dict()
    t["head.weight"] = W
    facet.save_safetensors(t, path("ckpt.safetensors"))
  end)

  -- what facet clean should keep at threshold th, from emb and W in plain Lua
  local function expected(th)
    local Wt = W:totable()
    local near, counts = {}, {}
    for c = 0, K - 1 do counts[c] = { 0, 0 } end
    for i, ei in pairs(emb) do
      local y = labels[i]
      local c1, c2 = dot(unit(ei), unit(Wt[y * k + 1])), dot(unit(ei), unit(Wt[y * k + 2]))
      near[i] = c2 > c1 and 2 or 1
      counts[y][near[i]] = counts[y][near[i]] + 1
    end
    local dom, keep, angle = {}, {}, {}
    for c = 0, K - 1 do dom[c] = counts[c][2] > counts[c][1] and 2 or 1 end
    for i, ei in pairs(emb) do
      local y = labels[i]
      angle[i] = math.deg(math.acos(math.max(-1, math.min(1, dot(unit(ei), unit(Wt[y * k + dom[y]]))))))
      keep[i] = angle[i] <= th
    end
    return keep, dom, angle
  end

  local function clean(extra)
    return F.sh(RUN .. ("clean %s --model convnet --emb %d --size %d %s -o %s --subcenters 2 --batch-size 3 %s")
      :format(path("ckpt.safetensors"), EMB, SIZE, path("train.rec"), path("out/clean"), extra or ""))
  end

  -- the threshold in the middle of the widest gap between the angles below
  -- 170 degrees (far from every angle, so rounding cannot move an image across)
  local function threshold()
    local _, _, angle = expected(180)
    local a = {}
    for _, v in pairs(angle) do if v < 170 then a[#a + 1] = v end end
    table.sort(a)
    assert.is_true(#a >= 2, "the fixture needs two angles to split")
    local best, th = 0, nil
    for i = 1, #a - 1 do
      if a[i + 1] - a[i] > best then best, th = a[i + 1] - a[i], (a[i] + a[i + 1]) / 2 end
    end
    assert.is_true(best > 1, "the angles are too close to split")
    return th
  end

  local function check_outputs(th, out, missing)
    local keep, dom = expected(th)
    local rec = facet.data.recordio(path("out/clean"))
    assert.are.equal("insightface", rec:layout())
    assert.are.equal(K, rec:num_identities())
    local want = {}
    for i = 1, #images do if keep[i] then want[#want + 1] = i end end
    assert.is_true(#want > 0 and #want < 7, "the threshold keeps some faces and drops others")
    assert.are.equal(#want, rec:num_images())
    for pos, i in ipairs(want) do
      assert.are.equal(images[i], rec:image_bytes(pos))
      assert.are.equal(labels[i], rec:label(pos))
    end
    -- identity ranges: each class's kept images; class 2 (its face 180 degrees away) emptied
    local at = 1
    for c = 0, K - 1 do
      local n = 0
      for _, i in ipairs(want) do if labels[i] == c then n = n + 1 end end
      local first, last = rec:identity(c + 1)
      assert.are.same({ at, at + n - 1 }, { first, last }, "identity " .. c)
      at = at + n
    end
    rec:close()
    local init = facet.load_safetensors(path("out/clean_init.safetensors"))
    local hw = init["head.weight"]
    -- the backbone's tensors as the checkpoint holds them
    for name, t in pairs(model:state_dict()) do assert.are.same(t:totable(), init[name]:totable(), name) end
    local Wt, rows = W:totable(), {}
    for c = 0, K - 1 do rows[c + 1] = Wt[c * k + dom[c]] end
    assert.are.same(rows, hw:totable())
    local dropped = {}
    for line in F.read_file(path("out/clean_dropped.txt")):gmatch("[^\n]+") do dropped[#dropped + 1] = line end
    assert.are.equal(#images - #want, #dropped)
    -- the record that does not decode: facet clean's embedding skips it, facet embed's left it out
    assert.truthy(F.read_file(path("out/clean_dropped.txt")):find("7\t1\t" .. (missing or "undecodable"), 1, true))
    local summary = require("facet.json").decode(F.read_file(path("out/clean_clean.json")))
    assert.are.equal(#images, summary.images)
    assert.are.equal(#want, summary.kept)
    assert.are.equal(1, summary.undecodable)
    local left = {}
    for _, i in ipairs(want) do left[labels[i]] = true end
    assert.is_nil(left[2], "class 2's face is 180 degrees from its sub-centres")
    assert.are.equal(K - (left[0] and 1 or 0) - (left[1] and 1 or 0), summary.emptied_classes)
    assert.are.equal(#images - #want - 1, summary.dropped)
    assert.truthy(out:find(("kept %d of %d images"):format(#want, #images), 1, true), out)
  end

  it("keeps the images near their class's dominant sub-centre and writes the set, the head and the report", function()
    local th = threshold()
    local out, rc = clean(("--threshold %.6f"):format(th))
    assert.are.equal(0, rc, out)
    check_outputs(th, out)
  end)

  it("takes the embeddings facet embed wrote (--embeddings), with the same result", function()
    local th = threshold()
    local out, rc = F.sh(RUN .. ("embed %s --model convnet --emb %d --size %d %s -o %s --no-flip"):format(
      path("ckpt.safetensors"), EMB, SIZE, path("train.rec"), path("e.npy")))
    assert.are.equal(0, rc, out)
    out, rc = clean(("--threshold %.6f --embeddings %s"):format(th, path("e.npy")))
    assert.are.equal(0, rc, out)
    check_outputs(th, out, "not embedded")
  end)

  it("refuses what it cannot clean, naming the reason", function()
    -- no sub-centre count: a .safetensors has no trainer.json
    local out, rc = F.sh(RUN .. ("clean %s --model convnet --emb %d --size %d %s -o %s"):format(
      path("ckpt.safetensors"), EMB, SIZE, path("train.rec"), path("out/x")))
    assert.are_not.equal(0, rc)
    assert.truthy(out:find("give --subcenters", 1, true), out)
    -- 3 sub-centres a class: 6 rows are 2 classes, the set has 3 identities
    out, rc = F.sh(RUN .. ("clean %s --model convnet --emb %d --size %d %s -o %s --subcenters 3"):format(
      path("ckpt.safetensors"), EMB, SIZE, path("train.rec"), path("out/x")))
    assert.are_not.equal(0, rc)
    assert.truthy(out:find("3 identities but the head 2 classes", 1, true), out)
    -- a plain RecordIO file has no identities
    local w = facet.data.recordio_writer(path("plain"))
    w:write(0, 0, images[1])
    w:close()
    out, rc = F.sh(RUN .. ("clean %s --model convnet --emb %d --size %d %s -o %s --subcenters 2"):format(
      path("ckpt.safetensors"), EMB, SIZE, path("plain.rec"), path("out/x")))
    assert.are_not.equal(0, rc)
    assert.truthy(out:find("no identity records", 1, true), out)
    assert.is_false(F.exists(path("out/x.rec")))
    -- the cleaned set may not replace the training set
    out, rc = F.sh(RUN .. ("clean %s --model convnet --emb %d --size %d %s -o %s --subcenters 2"):format(
      path("ckpt.safetensors"), EMB, SIZE, path("train.rec"), path("train")))
    assert.are_not.equal(0, rc)
    assert.truthy(out:find("would overwrite the training set", 1, true), out)
  end)
end)
