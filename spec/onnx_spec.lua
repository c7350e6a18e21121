--- facet.export_onnx: the exported graph runs in onnxruntime (installed by
-- tools/onnxruntime.sh into build/onnxruntime) and gives the model's own
-- outputs on random inputs; Debian's onnx checker accepts every file; the
-- protobuf writer's bytes against hand-computed encodings; errors. The ViT
-- layers too, and `facet export` on a saved ViT.
local ffi = require "ffi"
local F = require "support.files"
local facet = require "facet"
local proto = require "facet.onnx.proto"
local nn = facet.nn

local PY = F.PY
local RUN = "luajit bin/facet "

-- random BN statistics and affine parameters, PReLU slopes, LayerNorm weights and
-- biases and Linear biases, so that folding and every per-channel constant are
-- exercised (found by module type)
local function randomize(m)
  if m.running_mean then
    m.running_mean:copy(facet.randn(m.running_mean:shape(), { std = 0.1 }))
    m.running_var:copy(facet.rand(m.running_var:shape(), { low = 0.5, high = 1.5 }))
    if m.affine then
      m.weight:copy(facet.rand(m.weight:shape(), { low = 0.5, high = 1.5 }))
      m.bias:copy(facet.randn(m.bias:shape(), { std = 0.1 }))
    end
  end
  if m.slope then m.slope:copy(facet.rand(m.slope:shape(), { low = 0, high = 0.5 })) end
  if m.__name == "LayerNorm" and m.affine then
    m.weight:copy(facet.rand(m.weight:shape(), { low = 0.5, high = 1.5 }))
    m.bias:copy(facet.randn(m.bias:shape(), { std = 0.1 }))
  end
  if m.__name == "Linear" and m.bias then m.bias:copy(facet.randn(m.bias:shape(), { std = 0.1 })) end
  for _, c in ipairs(m:children()) do randomize(c) end
end

local function floats(s)
  local n = #s / 4
  local p = ffi.cast("const float *", s)
  local t = {}
  for i = 0, n - 1 do t[i + 1] = p[i] end
  return t
end

describe("facet.export_onnx", function()
  local path = F.scratch()
  local ort                                           -- the node_modules onnxruntime-node lies in
  local why                                           -- why there is none (a host without npm)
  local count = 0

  setup(function()
    if select(2, F.sh("command -v node")) ~= 0 then
      why = "no node: onnxruntime-node runs under Node.js (tools/deps.sh installs it)"
      return
    end
    local out, rc = F.sh("env -u LD_PRELOAD sh tools/onnxruntime.sh")
    if rc ~= 0 and select(2, F.sh("command -v npm")) ~= 0 then
      -- the GPU host of tools/gpu_check.sh has no npm: the runtime cases pend there, and fail
      -- wherever npm is installed but the install fails
      why = "no npm and no onnxruntime-node in build/onnxruntime (tools/onnxruntime.sh)"
      return
    end
    assert(rc == 0, "tools/onnxruntime.sh failed (it installs onnxruntime-node from the npm registry):\n" .. out)
    ort = out:match("([^\n]+)\n*$") .. "/node_modules"
  end)

  -- exports model (with export(model, file) when given, facet.export_onnx by
  -- default), checks the file with onnx.checker, runs it on a random batch of 2
  -- in onnxruntime; returns the largest difference from facet's forward (in
  -- evaluation mode) relative to facet's largest output, and the export's summary
  local function roundtrip(model, opts, shape, export)
    randomize(model)
    model:evaluate()
    local x = facet.randn(shape)
    local ref = model:forward(x):contiguous():totable()
    count = count + 1
    local file = path(("m%d.onnx"):format(count))
    local info = (export or facet.export_onnx)(model, file, opts)
    local out, rc = F.sh(("%s -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' %s")
      :format(PY, file))
    assert.are.equal(0, rc, out)
    F.write_file(path("x.f32"), ffi.string(x:data_ptr(), x:numel() * 4))
    out, rc = F.sh(("env -u LD_PRELOAD NODE_PATH=%s node spec/support/onnxruntime.js %s %s %d %d %d %d %s"):format(ort, file,
      path("x.f32"), shape[1], shape[2], shape[3], shape[4], path("y.f32")))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("data -> embedding " .. #ref .. "x" .. #ref[1], 1, true), out)
    local y = floats(F.read_file(path("y.f32")))
    local diff, big = 0, 0
    for i = 1, #ref do
      for j = 1, #ref[1] do
        diff = math.max(diff, math.abs(ref[i][j] - y[(i - 1) * #ref[1] + j]))
        big = math.max(big, math.abs(ref[i][j]))
      end
    end
    os.remove(file)
    assert.is_true(big > 0)
    if os.getenv("FACET_ONNX_VERBOSE") then print(("max |diff| %.3g, max |out| %.3g"):format(diff, big)) end
    return diff / big, info
  end

  -- roundtrip, whose relative difference must be under 1e-4; returns the summary
  local function matches(model, opts, shape, export)
    local err, info = roundtrip(model, opts, shape, export)
    assert.is_true(err < 1e-4, ("relative difference %g"):format(err))
    return info
  end

  it("iresnet18: onnxruntime gives facet's embeddings, BN folded into the convolutions", function()
    if not ort then return pending(why) end
    facet.manual_seed(1)
    local info = matches(facet.models.iresnet { depth = 18 }, nil, { 2, 3, 112, 112 })
    -- the stem conv, 2 convs a unit (8 units), 4 shortcut convs (every stage starts with stride 2), and the FC
    assert.are.equal(1 + 16 + 4 + 1, info.folded)
    assert.are.same({ "N", 3, 112, 112 }, info.input)
    assert.are.same({ "N", 512 }, info.output)
  end)

  it("mobilefacenet: onnxruntime gives facet's embeddings", function()
    if not ort then return pending(why) end
    facet.manual_seed(2)
    local info = matches(facet.models.mobilefacenet {}, nil, { 2, 3, 112, 112 })
    assert.are.same({ "N", 512 }, info.output)
  end)

  it("convnet: onnxruntime gives facet's embeddings (1 channel, 28 x 28)", function()
    if not ort then return pending(why) end
    facet.manual_seed(3)
    local info = matches(facet.models.convnet {}, { size = 28 }, { 2, 1, 28, 28 })
    assert.are.same({ "N", 1, 28, 28 }, info.input)
  end)

  it("attentionnet_irse (attention, SE, bilinear upsampling): onnxruntime gives facet's outputs", function()
    if not ort then return pending(why) end
    facet.manual_seed(4)
    local model = facet.models.attentionnet_irse { size = 32, emb = 64 }
    matches(model, { size = 32 }, { 2, 3, 32, 32 })
  end)

  it("the other layers: pools, nearest upsampling, Concat, Mul, Tanh, BN kept, Linear without bias", function()
    if not ort then return pending(why) end
    facet.manual_seed(5)
    local model = nn.Sequential(
      nn.Conv2d(3, 8, 3, { padding = 1, groups = 1 }), nn.Tanh(),
      nn.BatchNorm2d(8, { affine = false }),                 -- after Tanh: kept as a node
      nn.AvgPool2d(3, { stride = 2, padding = 1, count_include_pad = false }),
      nn.Concat(2, nn.Identity(), nn.Sequential(nn.Conv2d(8, 4, 1, { bias = false }), nn.BatchNorm2d(4), nn.Sigmoid())),
      nn.Mul(nn.Identity(), nn.Sequential(nn.Upsample { scale = 2 }, nn.MaxPool2d(2))),
      nn.SE(12, 4),
      nn.Add(nn.Identity(), nn.Upsample { size = { 8, 8 }, mode = "bilinear" }),
      nn.PReLU(12), nn.Dropout(0.3), nn.Flatten(), nn.Linear(12 * 64, 10, false), nn.PReLU(10), nn.BatchNorm1d(10))
    local info = matches(model, { size = 16 }, { 2, 3, 16, 16 })
    assert.are.same({ "N", 10 }, info.output)
    assert.are.equal(1, info.folded)                          -- only the 1x1 conv's BN follows a layer it folds into
  end)

  it("vit t (depth 2, dim 32): onnxruntime gives facet's embeddings, the feature BNs folded", function()
    if not ort then return pending(why) end
    facet.manual_seed(6)
    local model = facet.models.vit { variant = "t", depth = 2, dim = 32, emb = 24 }
    local info = matches(model, nil, { 2, 3, 112, 112 })
    assert.are.same({ "N", 3, 112, 112 }, info.input)
    assert.are.same({ "N", 24 }, info.output)
    assert.are.equal(2, info.folded)                          -- feature.1 into feature.0, feature.3 into feature.2
    assert.are.equal(model:count_parameters() - 32 - 2 * (32 + 24), info.parameters)   -- less mask_token and the BNs
  end)

  it("vit with vit_s's dims (512, 8 heads; depth 2, 27 x 27): onnxruntime gives facet's embeddings", function()
    if not ort then return pending(why) end
    facet.manual_seed(7)
    local model = facet.models.vit { variant = "s", depth = 2, size = 27, emb = 64 }
    local info = matches(model, { size = 27 }, { 2, 3, 27, 27 })
    assert.are.same({ "N", 64 }, info.output)
    -- an inference graph whatever the mode: TokenMask and DropPath leave no trace in training mode either
    local a, b = path("eval.onnx"), path("train.onnx")
    facet.export_onnx(model:evaluate(), a, { size = 27 })
    facet.export_onnx(model:train(), b, { size = 27 })
    assert.is_true(F.read_file(a) == F.read_file(b))
  end)

  it("the ViT layers alone: Tokens, LayerNorm (affine or not), Rows, ReLU6, Softmax, attention with qkv bias",
    function()
    if not ort then return pending(why) end
    facet.manual_seed(8)
    local conv = nn.Conv2d(3, 8, 3, { stride = 2 })
    conv.weight:copy(conv.weight * 20)                       -- outputs past 6 and below 0: ReLU6 clips both ends
    local pos = nn.PosEmbed(16, 8)
    pos.pos_embed:copy(facet.randn({ 1, 16, 8 }))
    local model = nn.Sequential(conv, nn.ReLU6(), nn.Tokens(), nn.LayerNorm(8, { affine = false }),
      nn.Rows(nn.Sequential(nn.Linear(8, 16), nn.ReLU6(), nn.Linear(16, 8))), nn.Softmax(),
      nn.MultiheadAttention(8, 2, { qkv_bias = true, scale = 0.7 }), nn.LayerNorm(8, { eps = 1e-3 }),
      pos, nn.DropPath(0.5), nn.Flatten(), nn.Linear(16 * 8, 6))
    local pre = conv:forward(facet.randn({ 2, 3, 9, 9 })):totable()      -- on inputs drawn as roundtrip's
    local lo, hi = 0, 0
    for _, a in ipairs(pre) do for _, b in ipairs(a) do for _, c in ipairs(b) do for _, v in ipairs(c) do
      lo, hi = math.min(lo, v), math.max(hi, v)
    end end end end
    assert.is_true(lo < 0 and hi > 6, ("conv outputs in [%g, %g]"):format(lo, hi))
    local info = matches(model, { size = 9 }, { 2, 3, 9, 9 })
    assert.are.same({ "N", 6 }, info.output)
  end)

  it("facet export writes a saved ViT (the build from its metadata, or --model vit --variant t)", function()
    if not ort then return pending(why) end
    facet.manual_seed(9)
    local model = facet.models.vit { variant = "t", depth = 2, dim = 16, emb = 8, size = 36 }
    for _, flags in ipairs { "", " --model vit --variant t" } do
      matches(model, nil, { 2, 3, 36, 36 }, function(m, file)
        facet.save(m, path("vit.safetensors"))
        local out, rc = F.sh(RUN .. ("export %s%s -o %s"):format(path("vit.safetensors"), flags, file))
        assert.are.equal(0, rc, out)
        assert.truthy(out:find("model: vit{ depth = 2, dim = 16, emb = 8, size = 36, variant = t }", 1, true), out)
        assert.truthy(out:find("input data Nx3x36x36, output embedding Nx8, 2 BN folded", 1, true), out)
      end)
    end
  end)

  it("names a module without an export, and where it sits; nothing is written", function()
    local Odd = nn.Module:extend("Odd")
    function Odd.new() return nn.Module.init(Odd) end
    function Odd:update_output(x) return x end
    local model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), Odd.new()))
    local ok, err = pcall(facet.export_onnx, model, path("odd.onnx"))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("facet.export_onnx: Odd (module model.2.2) has no ONNX export", 1, true), err)
    assert.is_false(F.exists(path("odd.onnx")))
  end)

  it("rejects bad arguments and an input size the model does not fit", function()
    local model = facet.models.convnet {}
    local ok, err = pcall(facet.export_onnx, model, path("a.onnx"), { sise = 28 })
    assert.truthy(tostring(err):find("unknown option 'sise' (did you mean 'size'?)", 1, true), err)
    ok, err = pcall(facet.export_onnx, model, path("a.onnx"))       -- 112 x 112 by default: the FC does not fit
    assert.is_false(ok)
    assert.truthy(tostring(err):find("wants 3136 features, the graph gives Nx50176", 1, true), err)
    ok, err = pcall(facet.export_onnx, model, path("a.onnx"), { size = 28, channels = 3 })
    assert.truthy(tostring(err):find("wants 1 channels, the graph gives Nx3x28x28", 1, true), err)
    -- a ViT's position embedding fixes its token count: 27 x 27 gives 9 tokens, not 144
    ok, err = pcall(facet.export_onnx, facet.models.vit { depth = 1, dim = 16 }, path("a.onnx"), { size = 27 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("PosEmbed(144 x 16) (module model.2) wants 144 tokens, the graph gives Nx9x16", 1,
      true), err)
    ok, err = pcall(facet.export_onnx, model, 7)
    assert.truthy(tostring(err):find("facet.export_onnx: path must be a string, got 7", 1, true), err)
    ok, err = pcall(facet.export_onnx, {}, path("a.onnx"))
    assert.truthy(tostring(err):find("model must be a facet.nn module", 1, true), err)
    ok, err = pcall(facet.export_onnx, model, path("a.onnx"), { size = 28, input = "x", output = "x" })
    assert.truthy(tostring(err):find("input and output different", 1, true), err)
    ok, err = pcall(facet.export_onnx, model, path("no/such/dir/a.onnx"), { size = 28 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("facet.export_onnx: cannot write " .. path("no/such/dir/a.onnx.tmp"), 1, true), err)
    assert.is_false(F.exists(path("a.onnx")))
  end)
end)

describe("facet.onnx.proto", function()
  it("encodes varints as the wire format wants", function()
    assert.are.equal("\0", proto.varint(0))
    assert.are.equal("\1", proto.varint(1))
    assert.are.equal("\127", proto.varint(127))
    assert.are.equal("\172\2", proto.varint(300))
    assert.are.equal("\128\128\128\128\16", proto.varint(2 ^ 32))
    assert.are.equal(("\255"):rep(9) .. "\1", proto.varint(-1))           -- int64 -1: ten bytes
    assert.are.equal("\254" .. ("\255"):rep(8) .. "\1", proto.varint(-2))
  end)

  it("encodes fields, nested messages and attributes byte for byte", function()
    -- field 1 varint 150: 08 96 01 (the protobuf documentation's example)
    assert.are.equal("\8\150\1", proto.encode(proto.message():int(1, 150)))
    -- field 2 string "testing": 12 07 74 65 73 74 69 6e 67
    assert.are.equal("\18\7testing", proto.encode(proto.message():bytes(2, "testing")))
    -- field 3 holding the first message: 1a 03 08 96 01
    assert.are.equal("\26\3\8\150\1", proto.encode(proto.message():message(3, proto.message():int(1, 150))))
    -- AttributeProto{ name = "axis", i = 1, type = INT(2) }: 0a 04 "axis" 18 01 a0 01 02
    assert.are.equal("\10\4axis\24\1\160\1\2", proto.encode(proto.attribute("axis", 1)))
    -- a float attribute: field 2, fixed32 little-endian 1.0f = 00 00 80 3f, type FLOAT(1)
    assert.are.equal("\10\1f\21\0\0\128\63\160\1\1", proto.encode(proto.attribute("f", { kind = "float", value = 1 })))
    local m = proto.message():int(1, 5):bytes(2, "ab")
    assert.are.equal(#proto.encode(m), m.size)
  end)
end)
