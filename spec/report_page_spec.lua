--- The report as a reader sees it: runs written by hand (train.jsonl with
-- evaluations and a constant learning rate, verify.json with two sets of one
-- ROC), two runs of one directory name, the report written, then the page
-- rendered in headless Chromium: a screenshot is taken, and a script in the
-- page measures every plot: its curves are drawn, and its legend lies
-- outside the plot area. Also checks the smoothing and the run names alone.
local F = require "support.files"
local cjson = require "cjson"
local facet = require "facet"
local report = require "facet.report"

local tmp = F.scratch()

local CHROMIUM
for _, c in ipairs { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome" } do
  if F.exists(c) then CHROMIUM = c; break end
end

-- a run directory with a log of n steps: loss 5/step, constant lr, an evaluation every 10 steps
local function fake_run(dir, n, lr)
  os.execute("mkdir -p '" .. dir .. "'")
  local lines = {}
  for i = 1, n do
    local e = { step = i, loss = 5 / i + (i % 3) * 0.1, lr = lr, time = i * 2.5, images_per_s = 100 }
    if i % 10 == 0 then e.eval = { lfw = 0.5 + i / (4 * n), agedb = 0.4 + i / (5 * n) } end
    lines[i] = cjson.encode(e)
  end
  F.write_file(dir .. "/train.jsonl", table.concat(lines, "\n") .. "\n")
  local same = {}
  for i = 1, 20 do same[i] = i % 2 == 0 end
  local emb = facet.randn({ 40, 8 }, { seed = 7 })
  local r = facet.eval.verify(emb:narrow(1, 1, 20), emb:narrow(1, 21, 20), same, { folds = 2 })
  local r2 = facet.eval.verify(emb:narrow(1, 21, 20), emb:narrow(1, 1, 20):mul(-1), same, { folds = 2 })
  report.save_verify(dir, { { name = "lfw", result = r }, { name = "lfw-again", result = r },
    { name = "other", result = r2 } })
end

describe("the report page", function()
  local html_path
  setup(function()
    fake_run(tmp("a/run"), 60, 0.1)
    fake_run(tmp("b/run"), 40, 0.1)
    html_path = report.write({ tmp("a/run"), tmp("b/run") }, tmp("out"))
  end)

  it("tells runs of one directory name apart by their parents", function()
    assert.are.same({ "a/run", "b/run" }, report.run_names({ "/x/a/run", "/y/b/run" }))
    assert.are.same({ "run", "other" }, report.run_names({ "/x/a/run", "/x/a/other" }))
    assert.are.same({ "p/a/run", "q/a/run" }, report.run_names({ "p/a/run/", "q/a/run" }))
    local html = F.read_file(html_path)
    assert.truthy(html:find(">a/run<", 1, true) and html:find(">b/run<", 1, true), html)
  end)

  it("smooths the loss with an exponential average, and leaves short logs alone", function()
    assert.is_nil(report.smoothed({ 1, 2, 3 }))
    local y = {}
    for i = 1, 40 do y[i] = i % 2 end                    -- 1 0 1 0 ...
    local s = report.smoothed(y)
    local a = 2 / (40 / 20 + 1)
    local m = 1
    for i = 2, 40 do m = m + a * (y[i] - m) end
    assert.are.equal(1, s[1])
    assert.is_true(math.abs(s[40] - m) < 1e-12)
  end)

  it("draws each distinct ROC once, the evaluations against step, and a constant lr on a sensible axis", function()
    local roc = F.read_file(tmp("out/roc.svg"))
    assert.truthy(roc:find(">a/run lfw, lfw%-again<"), roc)
    assert.falsy(roc:find(">a/run lfw%-again<"), roc)
    assert.truthy(roc:find(">a/run other<"), roc)
    local ev = F.read_file(tmp("out/eval.svg"))
    for _, n in ipairs { "a/run lfw", "a/run agedb", "b/run lfw", "b/run agedb" } do
      assert.truthy(ev:find(">" .. n .. "<", 1, true), n)
    end
    local lr = F.read_file(tmp("out/lr.svg"))
    local ticks = {}
    for t in lr:gmatch('text%-anchor="end">([%d%.e%-]+)</text>') do ticks[#ticks + 1] = tonumber(t) end
    assert.is_true(#ticks >= 3, lr)
    for _, t in ipairs(ticks) do assert.is_true(t >= 0.05 - 1e-12 and t <= 0.15 + 1e-12, tostring(t)) end
    local loss = F.read_file(tmp("out/loss.svg"))
    assert.truthy(loss:find(">a/run %(smoothed%)<"), loss)
    assert.truthy(loss:find('stroke%-opacity="0.35"'), loss)
    local html = F.read_file(html_path)
    assert.truthy(html:find("facet " .. facet.version, 1, true), "the version is recorded")
    assert.truthy(html:find("<td>2 min 30 s</td>", 1, true), "a/run's wall time")
  end)

  it("renders in headless Chromium with every curve drawn and no legend over a plot", function()
    if not CHROMIUM then return pending("no chromium (tools/deps.sh installs Debian's chromium)") end
    -- the page plus a script that measures it and writes the result into the page
    local probe = [[
<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("svg").forEach(function (svg) {
    var area = svg.querySelector("rect.plotarea").getBBox();
    var legend = svg.querySelector("g.legend").getBBox();
    var lines = svg.querySelectorAll("polyline");
    var drawn = 0;
    lines.forEach(function (p) { if (p.getBBox().width > 0) drawn++; });
    var overlap = !(legend.y >= area.y + area.height || legend.y + legend.height <= area.y ||
                    legend.x >= area.x + area.width || legend.x + legend.width <= area.x);
    out.push({ lines: lines.length, drawn: drawn, overlap: overlap, legend_h: legend.height });
  });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>]]
    local page = tmp("out/probe.html")
    F.write_file(page, F.read_file(html_path):gsub("</body>", function() return probe .. "</body>" end))
    local flags = "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --virtual-time-budget=5000"
    -- never with the sanitizer runtimes that `make sanitize` preloads for luajit, and never for long
    local browser = "env -u LD_PRELOAD timeout -k 5 90 " .. CHROMIUM
    local dom, rc = F.sh(("%s %s --dump-dom 'file://%s' 2>/dev/null"):format(browser, flags, page))
    assert.are.equal(0, rc, dom)
    local json = dom:match('<pre id="probe">(.-)</pre>')
    assert.truthy(json, dom:sub(1, 2000))
    local plots = cjson.decode((json:gsub("&quot;", '"')))
    assert.are.equal(4, #plots)                            -- loss, lr, eval, roc
    for i, p in ipairs(plots) do
      assert.is_true(p.lines > 0 and p.drawn == p.lines, ("plot %d: %d of %d curves drawn"):format(i, p.drawn, p.lines))
      assert.is_false(p.overlap, ("plot %d: the legend overlaps the plot area"):format(i))
      assert.is_true(p.legend_h > 0)
    end
    local shot = tmp("out/report.png")
    local _, rc2 = F.sh(("%s %s --window-size=1000,3000 --screenshot='%s' 'file://%s'"):format(browser, flags, shot,
      html_path))
    assert.are.equal(0, rc2)
    local png = F.read_file(shot)
    assert.are.equal("\137PNG\r\n\26\n", png:sub(1, 8))
    assert.is_true(#png > 20000, ("a screenshot of %d bytes"):format(#png))
  end)
end)
