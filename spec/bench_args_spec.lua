--- The benchmarks' command lines (bench/*.lua through bench/lib/common.lua):
-- `--help` prints the usage with every option and exits 0 before the bench
-- runs; a bad value or an unknown option is a usage error naming the option
-- (exit status 1, no traceback). And the training step the benches time
-- (bench/lib/common.lua's train_step) is facet.train's, in fp32, fp16 and
-- bf16: the same weights after the same batches. Nothing here times anything.
local F = require "support.files"

local RUN = "luajit bin/facet run bench/"

-- per bench: its options as --help lists them, the line it prints first when
-- it runs (so absent from the help), and bad arguments with the error they give
local BENCHES = {
  batchnorm = {
    options = { "--batch", "--reps", "--device", "--dtypes", "--sync" },
    defaults = { "(default: 32)", "(default: 5)", "(default: cpu)", "(default: fp32,fp16,bf16)", "(default: 0)" },
    runs = "best of",
    bad = { { "--dtypes fp32,fp8", "--dtypes: unknown 'fp8' (known: fp32, fp16, bf16)" },
            { "--batch 0", "--batch must be an integer >= 1, got '0'" },
            { "--sync 2", "--sync must be an integer in [0, 1], got '2'" } },
  },
  gemm = {
    options = { "--sizes", "--reps" },
    defaults = { "(default: 1024,4096)", "(default: 3)" },
    runs = "BLAS library:",
    bad = { { "--reps 0", "--reps must be an integer >= 1, got '0'" },
            { "--sizes 256,x", "--sizes must be a comma-separated list of integers >= 1, got '256,x'" } },
  },
  conv = {
    options = { "--batch", "--reps", "--threads", "--device", "--slots" },
    defaults = { "(default: 32)", "(default: 3)", "(default: cpu)" },
    runs = "GEMM 2048^3",
    bad = { { "--batch x", "--batch must be an integer >= 1, got 'x'" },
            { "--device gpu", "argument for option '--device' must be one of 'cpu', 'cuda'" } },
  },
  data = {
    options = { "--images", "--device", "--threads", "--steps", "--warmup" },
    defaults = { "(default: 3)", "(default: cpu)" },
    runs = "images of 112x112",
    bad = { { "--images 64", "--images must be an integer >= 256, got '64'" },
            { "--threads 1,0", "--threads must be a comma-separated list of integers >= 1, got '1,0'" } },
  },
  heads = {
    options = { "--B", "--dim", "--K", "--reps", "--heads", "--device", "--train", "--torch" },
    defaults = { "(default: 128)", "(default: 512)", "(default: 72690)", "(default: 5)" },
    runs = "OpenBLAS core",
    bad = { { "--heads am,nope", "--heads: unknown 'nope' (known: " },
            { "--torch 2", "--torch must be an integer in [0, 1], got '2'" } },
  },
  train_step = {
    options = { "--device", "--models", "--precision", "--batch", "--size", "--steps", "--warmup", "--profile",
      "--torch" },
    defaults = { "(default: 0)", "(default: 1)", "(default: fp32)" },
    runs = "GEMM 2048^3",
    bad = { { "--models convnet,resnet", "--models: unknown 'resnet' (known: mobilefacenet, iresnet18, iresnet50, " ..
      "convnet, vit_t)" },
            { "--precision fp32,fp8", "--precision: unknown 'fp8' (known: fp32, fp16, bf16)" },
            { "--precision ,", "--precision must name at least one of fp32, fp16, bf16" },
            { "--steps 0", "--steps must be an integer >= 1, got '0'" } },
  },
  convert = {
    options = { "--n", "--reps", "--threads" },
    defaults = { "(default: 16777216)", "(default: 5)", "(default: 1)" },
    runs = "float32 -> float32 copy",
    bad = { { "--n 4", "--n must be an integer >= 16, got '4'" },
            { "--threads 0", "--threads must be an integer >= 1, got '0'" } },
  },
  contention = {
    options = { "--reps", "--seconds", "--busy", "--threads", "--torch", "--before", "--facet", "--worker",
      "--batch" },
    defaults = { "(default: 5)", "(default: 2)", "(default: 0,1,2)", "(default: 128)" },
    runs = "facet contention bench",
    bad = { { "--seconds 0", "--seconds must be a number > 0, got '0'" },
            { "--facet 'x=1=2 y'", "--facet: want VAR=VALUE, got 'y'" },
            { "--worker pool", "argument for option '--worker' must be one of 'facet', 'grain'" } },
  },
}

local NAMES = {}
for name in pairs(BENCHES) do NAMES[#NAMES + 1] = name end
table.sort(NAMES)

describe("bench command lines", function()
  for _, name in ipairs(NAMES) do
    local b = BENCHES[name]
    describe("bench/" .. name .. ".lua", function()
      it("--help lists every option with its defaults and runs nothing", function()
        local out, rc = F.sh(RUN .. name .. ".lua --help")
        assert.are.equal(0, rc, out)
        assert.are.equal(1, out:find(("Usage: bin/facet run bench/%s.lua [-h]"):format(name), 1, true), out)
        for _, opt in ipairs(b.options) do
          assert.truthy(out:find("\n   " .. opt .. " ", 1, true), opt .. " missing from:\n" .. out)
        end
        for _, d in ipairs(b.defaults) do assert.truthy(out:find(d, 1, true), d .. " missing from:\n" .. out) end
        assert.falsy(out:find(b.runs, 1, true), out)
        assert.falsy(out:find("Error", 1, true), out)
      end)

      it("takes -h too", function()
        local out, rc = F.sh(RUN .. name .. ".lua -h")
        assert.are.equal(0, rc, out)
        assert.truthy(out:find("Options:", 1, true), out)
        assert.falsy(out:find(b.runs, 1, true), out)
      end)

      it("answers a bad value or an unknown option with a usage error", function()
        local cases = { { "--bogus 1", "unknown option '--bogus'" } }
        for _, c in ipairs(b.bad) do cases[#cases + 1] = c end
        for _, c in ipairs(cases) do
          local out, rc = F.sh(RUN .. name .. ".lua " .. c[1])
          assert.are.equal(1, rc, c[1] .. ":\n" .. out)
          assert.truthy(out:find("Usage: bin/facet run bench/" .. name .. ".lua", 1, true), out)
          assert.truthy(out:find("Error: " .. c[2], 1, true), c[1] .. ":\n" .. out)
          assert.falsy(out:find("traceback", 1, true), out)
          assert.falsy(out:find(b.runs, 1, true), out)
        end
      end)
    end)
  end

  it("gemm.lua keeps --child (its own rerun) out of the help", function()
    local out = F.sh(RUN .. "gemm.lua --help")
    assert.falsy(out:find("--child", 1, true), out)
  end)
end)

describe("bench/lib/common.lua train_step", function()
  local facet = require "facet"
  local saved = package.path
  package.path = "bench/lib/?.lua;" .. package.path
  local common = require "common"
  package.path = saved

  -- a fresh, identically seeded model, head, optimizer and data source
  local function setup()
    facet.manual_seed(11)
    local net = facet.models.convnet { emb = 16, size = 12 }
    local head = facet.heads.new("am", { classes = 6, dim = 16, seed = 3 })
    local labels = {}
    for i = 1, 48 do labels[i] = (i * 5) % 6 end
    local data = facet.data.tensors { x = facet.randn({ 48, 1, 12, 12 }, { seed = 4 }),
      y = facet.tensor(labels, { dtype = "int64" }), batch_size = 8, seed = 9 }
    return net, head, facet.optim.sgd({ net, head }, { lr = 0.05, momentum = 0.9, weight_decay = 5e-4 }), data
  end

  local function weights(net, head)
    local out = {}
    for _, p in ipairs(net:named_parameters()) do out[p.name] = p.param:totable() end
    out.head = head:parameters()[1]:totable()
    return out
  end

  it("gives facet.train's weights bit for bit in fp32, fp16 and bf16", function()
    local got = {}
    for _, prec in ipairs(common.PRECISIONS) do
      local net, head, opt, data = setup()
      local r = facet.train { model = net, head = head, data = data, optimizer = opt, epochs = 1, quiet = true,
        precision = prec }
      local want = weights(net, head)
      net, head, opt, data = setup()
      local i = 0
      local step, scaler = common.train_step(net, head, opt, function()
        i = i + 1
        return data:batch(0, i)
      end, { precision = prec })
      for _ = 1, data:num_batches() do step() end
      assert.are.equal(6, i)
      assert.are.same(want, weights(net, head), prec)
      -- fp16 at the default initial scale (2^16) overflows on some of these batches
      assert.are.equal(r.overflow_skipped, scaler and scaler.skipped, prec)
      assert.are.equal(r.loss_scale, scaler and scaler.scale, prec)
      got[prec] = want
    end
    assert.is_true(got.fp16.head ~= nil)
    assert.are_not.same(got.fp32, got.fp16)
    assert.are_not.same(got.fp32, got.bf16)
    assert.are_not.same(got.fp16, got.bf16)
  end)

  it("refuses an unknown precision before the first step", function()
    local net, head, opt = setup()
    local ok, err = pcall(common.train_step, net, head, opt, {}, { precision = "fp8" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("train_step: precision must be fp32, fp16 or bf16, got fp8", 1, true), err)
  end)
end)
