--- The benchmarks' command lines (bench/*.lua through bench/lib/common.lua):
-- `--help` prints the usage with every option and exits 0 before the bench
-- runs; a bad value or an unknown option is a usage error naming the option
-- (exit status 1, no traceback). Nothing here times anything.
local F = require "support.files"

local RUN = "luajit bin/facet run bench/"

-- per bench: its options as --help lists them, the line it prints first when
-- it runs (so absent from the help), and bad arguments with the error they give
local BENCHES = {
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
    options = { "--device", "--models", "--batch", "--size", "--steps", "--warmup", "--profile", "--torch" },
    defaults = { "(default: 0)", "(default: 1)" },
    runs = "GEMM 2048^3",
    bad = { { "--models convnet,resnet", "--models: unknown 'resnet' (known: mobilefacenet, iresnet18, iresnet50, " ..
      "convnet)" },
            { "--steps 0", "--steps must be an integer >= 1, got '0'" } },
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
