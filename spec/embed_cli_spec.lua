--- `facet embed`: a folder, a list file, a .rec and a .bin give the vectors of
-- facet.eval.embed on the same images decoded by facet.data.decode_image (flip
-- test on, or off with --no-flip), rows in the order of the keys file written
-- beside the .npy; an undecodable image is left out and named; `facet export`
-- writes an ONNX file of the checkpoint's backbone; errors.
local F = require "support.files"
local facet = require "facet"

local RUN = "luajit bin/facet "
local PY = F.PY
local SIZE, EMB = 16, 8

local function lines(path)
  local t = {}
  for l in F.read_file(path):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("facet embed", function()
  local path = F.scratch()
  local model

  setup(function()
    facet.manual_seed(11)
    model = facet.models.convnet { in_channels = 3, size = SIZE, emb = EMB }
    facet.save_safetensors(model, path("m.safetensors"))
    model:evaluate()
    -- a gallery of 2 identities x 3 synthetic faces (24 x 24 PNGs, resized to 16 x 16 by both paths)
    for id = 1, 2 do
      assert(facet.sys.mkdir_p(path(("g/id%d"):format(id))))
      for k = 1, 3 do
        local img = facet.data.render_synthetic(5, id, k, 24, 0)
        F.write_file(path(("g/id%d/%d.png"):format(id, k)), facet.data.encode_png(img))
      end
    end
  end)

  -- facet.eval.embed on the files (paths) decoded one by one
  local function reference(files, flip)
    local x = facet.empty { #files, 3, SIZE, SIZE }
    for i, f in ipairs(files) do
      x:select(1, i):copy(facet.data.decode_image(F.read_file(f), { size = { SIZE, SIZE } }))
    end
    return facet.eval.embed(model, x, { flip = flip }):totable()
  end

  local function embed(images, extra)
    local out, rc = F.sh(RUN .. ("embed %s --model convnet --emb %d --size %d %s -o %s --batch-size 4 %s"):format(
      path("m.safetensors"), EMB, SIZE, images, path("e.npy"), extra or ""))
    assert.are.equal(0, rc, out)
    return facet.load_npy(path("e.npy")):totable(), lines(path("e.txt")), out
  end

  local function assert_close(want, got)
    assert.are.equal(#want, #got)
    for i = 1, #want do
      for j = 1, EMB do
        assert.is_true(math.abs(want[i][j] - got[i][j]) < 1e-5, ("row %d col %d: %g vs %g"):format(i, j, want[i][j], got[i][j]))
      end
    end
  end

  local KEYS = { "id1/1.png", "id1/2.png", "id1/3.png", "id2/1.png", "id2/2.png", "id2/3.png" }
  local function files(keys)
    local t = {}
    for i, k in ipairs(keys) do t[i] = path("g/" .. k) end
    return t
  end

  it("a folder: facet.eval.embed's flip-test vectors, keys in order, a progress line", function()
    local e, keys, out = embed(path("g"))
    assert.are.same(KEYS, keys)
    assert_close(reference(files(KEYS), true), e)
    assert.truthy(out:find("embed: 6/6 images", 1, true), out)
    assert.truthy(out:find(("e.npy: 6 x %d embeddings; keys in "):format(EMB), 1, true), out)
  end)

  it("--no-flip: the plain embeddings, which differ from the flip test's", function()
    local e = embed(path("g"), "--no-flip")
    local plain = reference(files(KEYS), false)
    assert_close(plain, e)
    local flipped = reference(files(KEYS), true)
    assert.is_true(math.abs(flipped[1][1] - plain[1][1]) > 1e-4)
  end)

  it("a list file: its order, paths relative to the list, labels ignored", function()
    F.write_file(path("g/list.txt"), "id2/3.png 1\nid1/1.png\n\n" .. path("g/id1/2.png") .. " 0\n")
    local e, keys = embed(path("g/list.txt"))
    assert.are.same({ "id2/3.png", "id1/1.png", path("g/id1/2.png") }, keys)
    assert_close(reference({ path("g/id2/3.png"), path("g/id1/1.png"), path("g/id1/2.png") }, true), e)
    os.remove(path("g/list.txt"))
  end)

  it("a .rec: the packed images in .idx order, keyed by their .idx keys", function()
    facet.data.pack(path("g"), path("p"))
    local e, keys = embed(path("p.rec"))
    local rec = facet.data.recordio(path("p"))
    local want = {}
    for i = 1, rec:num_images() do want[i] = tostring(rec:key(i)) end
    rec:close()
    assert.are.same(want, keys)
    assert_close(reference(files(KEYS), true), e)           -- pack keeps the folder's order
  end)

  it("a .bin verification set: its images in order, keys 1..2 x pairs", function()
    local ok = os.execute(PY .. " -c 'import pickle' >/dev/null 2>&1")
    if not (ok == 0 or ok == true) then pending("no /usr/bin/python3") return end
    local py = "import pickle, sys\nfs = sys.argv[2:]\nbins = [open(f, 'rb').read() for f in fs]\n" ..
      "pickle.dump((bins, [True, False, True]), open(sys.argv[1], 'wb'), protocol=4)\n"
    F.write_file(path("make.py"), py)
    local order = { "id1/1.png", "id2/2.png", "id1/3.png", "id1/3.png", "id2/1.png", "id1/2.png" }
    local out, rc = F.sh(("%s %s %s %s"):format(PY, path("make.py"), path("set.bin"),
      table.concat(files(order), " ")))
    assert.are.equal(0, rc, out)
    local e, keys = embed(path("set.bin"))
    assert.are.same({ "1", "2", "3", "4", "5", "6" }, keys)
    assert_close(reference(files(order), true), e)
  end)

  it("--norms: each image's embedding norm before normalisation (the image's, not its mirror's), rows aligned", function()
    F.write_file(path("g/id1/2b.png"), "not a png at all")      -- left out, and its norm with it
    local _, keys, out = embed(path("g"), "--norms")
    os.remove(path("g/id1/2b.png"))
    assert.are.same(KEYS, keys)
    assert.truthy(out:find("norms in " .. path("e_norms.npy"), 1, true), out)
    local norms = facet.load_npy(path("e_norms.npy")):totable()
    assert.are.equal(#KEYS, #norms)
    for i, f in ipairs(files(KEYS)) do
      local x = facet.data.decode_image(F.read_file(f), { size = { SIZE, SIZE } }):reshape { 1, 3, SIZE, SIZE }
      local want = model:forward(x):norm()
      assert.is_true(math.abs(norms[i] - want) <= 1e-5 * want, ("row %d: %g vs %g"):format(i, norms[i], want))
    end
    -- facet.eval.embed gives the same, beside the normalised vectors
    local x = facet.empty { 1, 3, SIZE, SIZE }
    x:select(1, 1):copy(facet.data.decode_image(F.read_file(files(KEYS)[1]), { size = { SIZE, SIZE } }))
    local e, n = facet.eval.embed(model, x, { flip = true, norms = true })
    assert.is_true(math.abs(n:item() - norms[1]) <= 1e-6 * norms[1])
    assert.is_true(math.abs(e:norm() - 1) < 1e-5)
  end)

  it("leaves out an image that does not decode, names it, keeps the others aligned", function()
    F.write_file(path("g/id1/2b.png"), "not a png at all")
    local e, keys, out = embed(path("g"))
    os.remove(path("g/id1/2b.png"))
    assert.truthy(out:find("skipped id1/2b.png (does not decode)", 1, true), out)
    assert.are.same(KEYS, keys)
    assert_close(reference(files(KEYS), true), e)
  end)

  it("facet.embed.run checks its arguments before reading anything", function()
    local run = require("facet.embed").run
    local ok, err = pcall(run, model, path("g"), { batch = 4 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("facet.embed.run: unknown option 'batch'", 1, true), err)
    ok, err = pcall(run, model, path("g"), { progress = "yes" })
    assert.truthy(tostring(err):find('progress must be an open file (io.stderr) or false, got "yes"', 1, true), err)
    ok, err = pcall(run, model, path("g"), { size = { 16 } })
    assert.truthy(tostring(err):find("facet.embed.run: size", 1, true), err)
    ok, err = pcall(run, "model", path("g"))
    assert.truthy(tostring(err):find("facet.embed.run: model must be a facet.nn module", 1, true), err)
    F.write_file(path("empty.txt"), "\n\n")
    ok, err = pcall(run, model, path("empty.txt"))
    assert.truthy(tostring(err):find("empty.txt lists no image", 1, true), err)
  end)

  it("reports a missing IMAGES path, a wrong backbone and a missing -o", function()
    local out, rc = F.sh(RUN .. ("embed %s --model convnet --emb %d --size %d %s -o %s"):format(path("m.safetensors"),
      EMB, SIZE, path("nothing"), path("x.npy")))
    assert.are.equal(1, rc)
    assert.truthy(out:find("facet embed: facet.embed.run: " .. path("nothing") .. " does not exist", 1, true), out)
    out, rc = F.sh(RUN .. ("embed %s --model mobilefacenet %s -o %s"):format(path("m.safetensors"), path("g"),
      path("x.npy")))
    assert.are.equal(1, rc)
    assert.truthy(out:find("load_state:", 1, true), out)
    out, rc = F.sh(RUN .. ("embed %s --model convnet %s"):format(path("m.safetensors"), path("g")))
    assert.are.equal(2, rc)
    assert.truthy(out:find("missing option '-o'", 1, true), out)
    assert.is_false(F.exists(path("x.npy")))
  end)
end)

describe("facet export", function()
  local path = F.scratch()

  it("writes the checkpoint's backbone as ONNX that Debian's checker accepts", function()
    facet.manual_seed(12)
    facet.save_safetensors(facet.models.convnet { in_channels = 3, size = SIZE, emb = EMB }, path("m.safetensors"))
    local out, rc = F.sh(RUN .. ("export %s --model convnet --emb %d --size %d -o %s"):format(path("m.safetensors"), EMB,
      SIZE, path("m.onnx")))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find(("input data Nx3x%dx%d, output embedding Nx%d, 3 BN folded"):format(SIZE, SIZE, EMB), 1, true),
      out)
    out, rc = F.sh(("%s -c 'import onnx, sys; m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True);" ..
      " print(m.opset_import[0].version, [i.name for i in m.graph.input], m.graph.input[0].type.tensor_type.shape.dim[0].dim_param)' %s")
      :format(PY, path("m.onnx")))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("11 ['data'] N", 1, true), out)
  end)
end)
