--- Reports: a tiny run's report.html and SVGs exist, the HTML carries the
-- plots inline, and its numbers match the log; several runs overlay.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local cjson = require "cjson"

describe("facet report", function()
  local dir
  setup(function() dir = F.temp_dir() end)
  teardown(function() F.remove_dir(dir) end)

  local function run(name, head)
    facet.manual_seed(1)
    local X = facet.randn({ 32, 1, 8, 8 }, { seed = 2 })
    local labels = {}
    for i = 1, 32 do labels[i] = i % 4 end
    local net = facet.models.convnet { emb = 8, size = 8 }
    local h = facet.heads.new(head, { classes = 4, dim = 8 })
    facet.train { model = net, head = h, data = facet.data.tensors { x = X, y = facet.tensor(labels, { dtype = "int64" }),
      batch_size = 8 }, optimizer = facet.optim.sgd({ net, h }, { lr = 0.05 }), epochs = 2, log = dir .. "/" .. name,
      quiet = true }
    local e = facet.randn({ 20, 8 }, { seed = 3 })
    local same = {}
    for i = 1, 10 do same[i] = i % 2 == 0 end
    local r = facet.eval.verify(e:narrow(1, 1, 10), e:narrow(1, 11, 10), same, { folds = 5 })
    facet.report.save_verify(dir .. "/" .. name, { { name = "toy", result = r } })
    local g = facet.randn({ 12, 8 }, { seed = 4 })
    local gl = {}
    for i = 1, 12 do gl[i] = i % 4 end
    local id = facet.eval.identify(g:narrow(1, 1, 4):clone():add_(facet.randn({ 4, 8 }, { seed = 5 }):mul_(0.3)),
      { 1, 2, 3, 0 }, g, gl, { max_rank = 5 })
    facet.report.save_identify(dir .. "/" .. name, { { name = "gallery", result = id } })
    return r, id
  end

  it("writes report.html with inline plots and the log's numbers", function()
    local r, id = run("am-run", "am")
    local out = io.popen(("luajit bin/facet report %s/am-run 2>&1; echo rc=$?"):format(dir)):read("*a")
    assert.truthy(out:find("rc=0", 1, true), out)
    for _, f in ipairs { "report.html", "loss.svg", "lr.svg", "roc.svg", "cmc.svg" } do
      assert.is_true(F.exists(dir .. "/am-run/" .. f), f .. " missing")
    end
    local html = F.read_file(dir .. "/am-run/report.html")
    assert.truthy(html:find("<svg", 1, true) and html:find("training loss", 1, true) and html:find("ROC", 1, true))
    local last
    for line in io.lines(dir .. "/am-run/train.jsonl") do last = cjson.decode(line) end
    assert.truthy(html:find(("<td>%.4f</td>"):format(last.loss), 1, true), "final loss in the table")
    assert.truthy(html:find(("<td>%.4f</td>"):format(r.accuracy), 1, true), "accuracy in the table")
    assert.truthy(html:find(("<td>%.4f</td>"):format(id.rank1), 1, true), "rank-1 in the table")
    assert.truthy(html:find("CMC", 1, true))
    local svgtext = F.read_file(dir .. "/am-run/loss.svg")
    assert.truthy(svgtext:find("<polyline", 1, true))
  end)

  it("overlays several runs into one report", function()
    run("arc-run", "arc")
    local path = facet.report.write({ dir .. "/am-run", dir .. "/arc-run" }, dir .. "/both")
    local html = F.read_file(path)
    assert.truthy(html:find(">am-run<", 1, true) and html:find(">arc-run<", 1, true))
    H.assert_error(function() facet.report.write({ dir .. "/none" }) end, "no train.jsonl")
  end)

  it("reports a bad run directory as one clean line and exit status 1", function()
    local out = io.popen(("luajit bin/facet report %s/none 2>&1; echo rc=$?"):format(dir)):read("*a")
    assert.truthy(out:find("^facet report: facet%.report%.write: [^\n]*/none has no train%.jsonl[^\n]*\nrc=1"), out)
  end)
end)
