--- Recipes run end to end on a reduced budget.
local H = require "support.device"

describe("recipes", function()
  local dir
  setup(function() dir = H.temp_dir() end)
  teardown(function() H.remove_dir(dir) end)

  it("quickstart trains, verifies unseen classes and prints both protocols", function()
    local f = io.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    if not f then pending("dataset-fashion-mnist is not installed") return end
    f:close()
    local cmd = ("luajit bin/facet run recipes/quickstart.lua --epochs 1 --limit 1024 --pairs 400 --out %s/qs 2>&1; echo rc=$?")
      :format(dir)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("rc=0", 1, true), out)
    local acc = tonumber(out:match("insightface%s+([%d%.]+)"))
    assert.is_number(acc, out)
    assert.is_true(acc > 0.5 and acc <= 1, out)     -- better than chance after one short epoch
    assert.truthy(out:match("facexzoo%s+[%d%.]+"), out)
    local log = io.open(dir .. "/qs/train.jsonl")
    assert.truthy(log, "no log written")
    log:close()
  end)

  it("paper_table3 runs a reduced table on synthetic identities", function()
    local cmd = ("luajit bin/facet run recipes/paper_table3.lua --heads am,mv-am --seeds 1 --epochs 1 --identities 20 " ..
      "--images 4 --pairs 40 --size 16 --data %s/syn --out %s/t3 2>/dev/null; echo rc=$?"):format(dir, dir)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("rc=0", 1, true), out)
    for _, row in ipairs { "AM-Softmax", "MV-AM-Softmax-f", "MV-AM-Softmax-a" } do
      assert.truthy(out:find("\n" .. row:gsub("%-", "%%-") .. "%s+[%d%.]+ ±[%d%.]+"), row .. " missing:\n" .. out)
    end
    assert.truthy(io.open(dir .. "/t3/report.html"), "no report")
    local help = io.popen("luajit bin/facet run recipes/paper_table3.lua --help 2>&1"):read("*a")
    assert.truthy(help:find("--heads", 1, true), help)
  end)

  it("l2softmax_alpha runs a reduced study", function()
    local cmd = ("luajit bin/facet run recipes/l2softmax_alpha.lua --alphas 1,learned --seeds 1 --epochs 1 " ..
      "--identities 20 --images 4 --pairs 40 --size 16 --data %s/syn2 --out %s/alpha 2>&1; echo rc=$?"):format(dir, dir)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("rc=0", 1, true), out)
    assert.truthy(out:find("\nsoftmax%s+[%d%.]+ ±"), out)
    assert.truthy(out:find("learned α %(from 16%)%s+[%d%.]+ ±[%d%.]+%s+[%d%.]+ ±[%d%.]+%s+[%d%.]+"), out)
  end)

  it("ms1m runs a timing slice on InsightFace-format data and evaluates the .bin sets", function()
    -- Generate through `facet run` so the same build (FACET_BUILD) is used as the recipe's.
    os.execute("mkdir -p " .. dir .. "/ms")
    local gen = io.open(dir .. "/ms/gen.lua", "w")
    gen:write(("require('facet').data.synthetic{ out = %q, identities = 8, images = 4, size = 32, pairs = 20 }")
      :format(dir .. "/ms/train"))
    gen:close()
    assert.is_true(os.execute(("luajit bin/facet run %s/ms/gen.lua && mv %s/ms/train_verify.bin %s/ms/lfw.bin")
      :format(dir, dir, dir)) == 0, "synthetic data generation failed")
    -- in fp16: the run logs its loss scale (2^16 at the start, halved on an overflow)
    local p = io.popen(("luajit bin/facet run recipes/ms1m.lua --data %s/ms --depth 18 --size 32 --batch 8 --steps 2 " ..
      "--bins lfw --out %s/ms/run --precision fp16 2>&1; echo rc=$?"):format(dir, dir))
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("rc=0", 1, true), out)
    assert.truthy(out:find("2 steps of batch 8", 1, true), out)
    assert.truthy(out:find("batches an epoch; fp16\n", 1, true), out)
    assert.truthy(out:find("lfw%s+accuracy [%d%.]+"), out)
    local n = 0
    for line in io.lines(dir .. "/ms/run/train.jsonl") do
      local e = require("facet.json").decode(line)
      local sc = e.loss_scale
      assert.is_true(type(sc) == "number" and sc <= 65536 and sc >= 1024 and math.frexp(sc) == 0.5, line)
      assert.is_true(e.loss > 0 and e.loss < 1e3, line)
      n = n + 1
    end
    assert.are.equal(2, n)
  end)

  it("facet.recipe: the studies' shared options, optimizer and statistics", function()
    local recipe = require "facet.recipe"
    local p = recipe.parser("study", "a study", { out = "run/study" })
    p:option("--extra", "the study's own", "x")
    local a = p:parse { "--identities", "20", "--seeds", "3", "--data", dir .. "/syn 'q'" }
    assert.are.same({ 20, 8, 32, 2000, 3, 64, 3, dir .. "/syn 'q'", "run/study", "x" },
      { a.identities, a.images, a.size, a.pairs, a.epochs, a.batch, a.seeds, a.data, a.out, a.extra })
    local m, spread = recipe.mean_spread { 0.5, 0.7, 0.6 }
    assert.are.equal(0.6, tonumber(("%.12f"):format(m)))
    assert.are.equal(0.1, tonumber(("%.12f"):format(spread)))
    assert.is_nil(recipe.mean_spread {})
    local net = H.facet.nn.Linear(2, 2)
    local opt, schedule = recipe.sgd({ net }, 12)
    for e, lr in pairs { [0] = 0.1, [4] = 0.01, [8] = 0.001, [11] = 0.0001 } do H.assert_close(lr, schedule(e), 1e-15) end
    assert.is_table(opt)
  end)

  it("demo runs", function()
    local p = io.popen("luajit bin/facet run recipes/demo.lua 100 4 64 2>&1; echo rc=$?")
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("rc=0", 1, true), out)
    assert.truthy(out:find("nearest-centre rank-1 accuracy", 1, true), out)
  end)
end)
