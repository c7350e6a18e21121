--- Hostile settings: loops that must end (a step of 0, a tick step that
-- vanishes next to its values), numbers that are NaN, infinite, negative or
-- fractional where they must not be, unknown option names and enum values,
-- scripted programs with non-finite derivatives, and the recipes' numeric
-- flags. Every rejection is a Lua error naming the function and the option.
-- Cases that would hang (or crash) the process if they regressed run in a
-- subprocess under `timeout`.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local check = require "facet.check"
local E = facet.expr

local tmp = F.scratch()

local function shell_quote(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

--- Runs a Lua snippet through `bin/facet run` (the same build: FACET_BUILD)
-- under a time limit; returns its stdout + stderr and exit status (124: timed out).
local snippets = 0
local function subprocess(code, seconds, args)
  snippets = snippets + 1
  local path = tmp(("snippet%d.lua"):format(snippets))
  F.write_file(path, code)
  local p = io.popen(("timeout %d luajit bin/facet run %s %s 2>&1; echo \"rc=$?\""):format(seconds or 60,
    shell_quote(path), args or ""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)rc=(%d+)\n$")
  return body, tonumber(rc)
end

--- Runs a recipe (or any bin/facet command line); returns output and status.
local function command(args, seconds)
  local p = io.popen(("timeout %d luajit bin/facet %s 2>&1; echo \"rc=$?\""):format(seconds or 60, args))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)rc=(%d+)\n$")
  return body, tonumber(rc)
end

-- the error fn raised, checked to be a clean message holding every given string
local function rejects(fn, ...)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  assert.is_string(err)
  for _, bad in ipairs { "attempt to", "stack overflow", "lua/facet/", "stack traceback" } do
    assert.is_nil(err:find(bad, 1, true), ("message %q holds %q"):format(err, bad))
  end
  for _, s in ipairs { ... } do
    if not err:find(s, 1, true) then error(("error message %q lacks %q"):format(err, s), 2) end
  end
  return err
end

local nan, inf = 0 / 0, math.huge

-- a model for the eval functions: flattens 1 x 2 x 2 images into 4-d embeddings
local function flat() return facet.nn.Flatten() end
local function images(n) return facet.randn({ n, 1, 2, 2 }, { seed = 1 }) end

-- code (which sets ok, err from a pcall) run in a subprocess with a 60 s limit
-- must end, its pcall failed with message
local function ends_with_error(code, message)
  local out, rc = subprocess(code .. "\nprint(ok, err)", 60)
  assert.are.equal(0, rc, out)
  assert.truthy(out:find("false\t" .. message, 1, true), out)
end

describe("loops that must end", function()
  it("embed with batch_size = 0 is an error, not an endless loop (subprocess)", function()
    ends_with_error([[
      local ok, err = pcall(facet.eval.embed, facet.nn.Flatten(), facet.randn({ 3, 1, 2, 2 }), { batch_size = 0 })]],
      "facet.eval.embed: batch_size must be an integer >= 1, got 0")
  end)

  it("identify with block = 0 is an error, not an endless loop (subprocess)", function()
    ends_with_error([[
      local g = facet.randn({ 4, 3 }, { seed = 1 })
      local ok, err = pcall(facet.eval.identify, g, { 1, 2, 3, 4 }, g, { 1, 2, 3, 4 }, { block = 0 })]],
      "facet.eval.identify: block must be an integer >= 1, got 0")
  end)

  it("a plot whose tick step vanishes next to its values ends (subprocess)", function()
    local out, rc = subprocess([[
      local svg = require "facet.report.svg"
      local text = svg.plot { series = { { name = "far", x = { 1, 2, 3 }, y = { 1e17, 1e17 + 16, 1e17 + 32 } } } }
      local big = svg.plot { series = { { x = { 1e17, 1e17 + 16 }, y = { 0, 1 } } } }
      print("ok", #text > 0 and #big > 0, select(2, text:gsub("<line", "")) < 40)]], 60)
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("ok\ttrue\ttrue", 1, true), out)
  end)

  it("a constant series, at any magnitude, gets an axis and ends (subprocess)", function()
    local out, rc = subprocess([[
      local svg = require "facet.report.svg"
      for _, c in ipairs { 0, 5, -3, 1e17, -1e300, 1.7e308, 1e-300 } do
        local text = svg.plot { series = { { x = { 1, 2, 3 }, y = { c, c, c } } } }
        assert(not text:find("nan") and not text:find("inf"), tostring(c))
      end
      print("ok")]], 60)
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("^ok\n"), out)
  end)

  it("nice ticks are few and finite for any range", function()
    local svg = require "facet.report.svg"
    for _, r in ipairs { { 0, 1 }, { 1e17, 1e17 + 16 }, { -1e308, 1e308 }, { 5, 5 }, { 1e-300, 2e-300 },
      { -inf, 1 }, { nan, 1 }, { 0, 1e-320 } } do
      local t = svg.nice_ticks(r[1], r[2], 6)
      assert.is_true(#t <= 30, ("%d ticks for [%s, %s]"):format(#t, tostring(r[1]), tostring(r[2])))
      for _, v in ipairs(t) do assert.is_true(v == v and v > -inf and v < inf) end
    end
  end)

  it("NaN and infinite points are left out of a plot, its axes stay finite", function()
    local svg = require "facet.report.svg"
    local text = svg.plot { series = { { name = "loss", x = { 1, 2, 3, 4, 5 }, y = { 1, nan, inf, -inf, 2 } },
      { name = "x", x = { nan, inf, 3 }, y = { 1, 1, 1 } } } }
    assert.is_nil(text:find("nan"), text)
    assert.is_nil(text:find("inf"), text)
    local pts = text:match('points="([^"]*)"')
    local n = select(2, pts:gsub(",", ""))
    assert.are.equal(2, n)                                 -- (1, 1) and (5, 2)
    local log = svg.plot { logx = true, series = { { x = { -1, 0, 1e-3, 1 }, y = { 0.1, 0.2, 0.3, 0.4 } } } }
    assert.is_nil(log:find("nan"), log)
  end)

  it("a report of a run whose log holds NaN, huge and constant values is written", function()
    local dir = tmp("odd-run")
    os.execute("mkdir -p " .. shell_quote(dir))
    local lines = {}
    for i = 1, 5 do
      lines[i] = ('{"step": %d, "loss": %s, "lr": 0.1}'):format(i, i == 3 and "NaN" or "1e17")
    end
    lines[6] = '{"step": 6, "loss": 1e17'                 -- a killed run's half line
    lines[7] = '{"step": "x", "loss": 1}'
    F.write_file(dir .. "/train.jsonl", table.concat(lines, "\n") .. "\n")
    local out, rc = subprocess(("print(facet.report.write({ %q }))"):format(dir), 60)
    assert.are.equal(0, rc, out)
    assert.truthy(F.exists(dir .. "/report.html"), out)
  end)
end)

describe("eval options", function()
  local x = images(4)
  local bad_batch = { 0, -1, 1.5, nan, inf, "8", true }
  for _, v in ipairs(bad_batch) do
    it(("embed rejects batch_size = %s"):format(check.describe(v)), function()
      rejects(function() facet.eval.embed(flat(), x, { batch_size = v }) end, "facet.eval.embed", "batch_size")
    end)
  end

  it("embed rejects flip that is not a boolean, unknown options, a model without forward", function()
    rejects(function() facet.eval.embed(flat(), x, { flip = "yes" }) end, "facet.eval.embed", "flip", "true or false")
    rejects(function() facet.eval.embed(flat(), x, { batchsize = 2 }) end, "facet.eval.embed",
      "unknown option 'batchsize'", "did you mean 'batch_size'")
    rejects(function() facet.eval.embed({}, x) end, "facet.eval.embed", "model")
    rejects(function() facet.eval.embed(flat(), facet.zeros({ 0, 1, 2, 2 })) end, "facet.eval.embed", "N = 0")
    -- a model that fails keeps its training mode
    local m = facet.nn.Linear(3, 2)
    assert.is_true(m.training)
    assert.has_error(function() facet.eval.embed(m, x) end)
    assert.is_true(m.training)
  end)

  it("embed still works with good options", function()
    local e = facet.eval.embed(flat(), x, { batch_size = 3, flip = true })
    assert.are.same({ 4, 4 }, e:shape())
  end)

  local a, b = facet.randn({ 6, 3 }, { seed = 2 }), facet.randn({ 6, 3 }, { seed = 3 })
  local same = { true, false, true, false, true, false }
  for _, v in ipairs { 1, 2.5, nan, inf, 7, "3" } do
    it(("verify rejects folds = %s"):format(check.describe(v)), function()
      rejects(function() facet.eval.verify(a, b, same, { folds = v }) end, "facet.eval.verify", "folds")
    end)
  end

  it("verify rejects unknown protocols, FAR values and option names", function()
    rejects(function() facet.eval.verify(a, b, same, { protocol = "skp" }) end, "facet.eval.verify",
      'protocol must be one of "insightface", "facexzoo", got "skp"')
    for _, fars in ipairs { { 0 }, { 2 }, { nan }, {}, "1e-3" } do
      rejects(function() facet.eval.verify(a, b, same, { fars = fars }) end, "facet.eval.verify", "fars")
    end
    rejects(function() facet.eval.verify(a, b, same, { fold = 3 }) end, "unknown option 'fold'")
    local r = facet.eval.verify(a, b, same, { folds = 3, fars = { 0.5 } })
    assert.are.equal(3, r.folds)
    assert.is_number(r.tar_at_far[0.5])
  end)

  it("verify rejects NaN and infinite embeddings", function()
    local c = a:clone()
    c:set(inf, 2, 1)
    rejects(function() facet.eval.verify(c, b, same) end, "facet.eval.verify", "pair 2")
  end)

  local g = facet.randn({ 5, 3 }, { seed = 4 })
  local gl = { 1, 2, 3, 4, 5 }
  for _, case in ipairs { { "max_rank", 0 }, { "max_rank", 1.5 }, { "max_rank", 1e12 }, { "max_rank", nan },
    { "block", -1 }, { "block", nan }, { "block", inf }, { "block", 0.5 } } do
    it(("identify rejects %s = %s"):format(case[1], check.describe(case[2])), function()
      rejects(function() facet.eval.identify(g, gl, g, gl, { [case[1]] = case[2] }) end, "facet.eval.identify", case[1])
    end)
  end

  it("identify rejects unknown options and NaN labels", function()
    rejects(function() facet.eval.identify(g, gl, g, gl, { maxrank = 3 }) end, "unknown option 'maxrank'")
    rejects(function() facet.eval.identify(g, { 1, 2, nan, 4, 5 }, g, gl) end, "probe_labels[3]")
  end)

  it("verify_set rejects a bad device, flip, batch size and unknown options", function()
    local set = { images = facet.randn({ 4, 1, 2, 2 }), issame = { true, false }, pairs = 2 }
    rejects(function() facet.eval.verify_set(flat(), set, { device = "gpu" }) end, "facet.eval.verify_set", "device")
    rejects(function() facet.eval.verify_set(flat(), set, { flip = 1 }) end, "facet.eval.verify_set", "flip")
    rejects(function() facet.eval.verify_set(flat(), set, { batch_size = 0 }) end, "facet.eval.verify_set", "batch_size")
    rejects(function() facet.eval.verify_set(flat(), set, { folds = 3 }) end, "facet.eval.verify_set", "folds")
    rejects(function() facet.eval.verify_set(flat(), set, { protocl = "facexzoo" }) end, "unknown option 'protocl'")
    assert.is_number(facet.eval.verify_set(flat(), set, { folds = 2 }).accuracy)
  end)
end)

describe("schedule settings", function()
  local S = facet.optim.schedule
  local cases = {
    { "multistep", function() return S.multistep { lr = nan } end, "lr" },
    { "multistep", function() return S.multistep { lr = 0.1, gamma = inf } end, "gamma" },
    { "multistep", function() return S.multistep { lr = 0.1, gamma = -0.1 } end, "gamma" },
    { "multistep", function() return S.multistep { lr = 0.1, milestones = { nan } } end, "milestones[1]" },
    { "multistep", function() return S.multistep { lr = 0.1, milestones = { 1, -2 } } end, "milestones" },
    { "multistep", function() return S.multistep { lr = 0.1, milestones = { 4, "8" } } end, "milestones[2]" },
    { "multistep", function() return S.multistep { lr = 0.1, milestones = 4 } end, "milestones" },
    { "multistep", function() return S.multistep { lr = 0.1, gama = 0.5 } end, "unknown option 'gama'" },
    { "multistep", function() return S.multistep() end, "settings must be a table" },
    { "cosine", function() return S.cosine { lr = 0.1, epochs = 0 } end, "epochs" },
    { "cosine", function() return S.cosine { lr = 0.1, epochs = inf } end, "epochs" },
    { "cosine", function() return S.cosine { lr = -1, epochs = 2 } end, "lr" },
    { "cosine", function() return S.cosine { lr = 0.1, epochs = 2, min_lr = nan } end, "min_lr" },
    { "poly", function() return S.poly { lr = 0.1, epochs = 2, power = nan } end, "power" },
    { "poly", function() return S.poly { lr = 0.1, epochs = 2, power = -1 } end, "power" },
    { "poly", function() return S.poly { lr = 0.1, epochs = -2 } end, "epochs" },
    { "warmup", function() return S.warmup(S.cosine { lr = 1, epochs = 2 }, { epochs = 0 }) end, "epochs" },
    { "warmup", function() return S.warmup(S.cosine { lr = 1, epochs = 2 }, { epochs = 1, start = 2 }) end, "start" },
    { "warmup", function() return S.warmup(S.cosine { lr = 1, epochs = 2 }) end, "settings must be a table" },
    { "warmup", function() return S.warmup(nil, { epochs = 1 }) end, "schedule" },
    { "warmup", function() return S.warmup(S.cosine { lr = 1, epochs = 2 }, { epochs = 1, warm = 1 }) end,
      "unknown option 'warm'" },
  }
  for i, c in ipairs(cases) do
    it(("%s rejects bad settings (%d)"):format(c[1], i), function()
      rejects(c[2], "facet.optim.schedule." .. c[1], c[3])
    end)
  end

  it("progress must be a finite number >= 0", function()
    local c = S.cosine { lr = 1, epochs = 2 }
    for _, e in ipairs { nan, inf, -1, "1" } do rejects(function() c(e) end, "progress") end
    H.assert_close(c(1), 0.5, 1e-12)
    local w = S.warmup(function() return 0 / 0 end, { epochs = 1 })
    rejects(function() w(0.5) end, "facet.optim.schedule.warmup", "must return a number")
  end)
end)

describe("model options", function()
  local M = facet.models
  local cases = {
    { "mobilefacenet", function() return M.mobilefacenet { embedding = 128 } end, "unknown option 'embedding'" },
    { "iresnet", function() return M.iresnet { dept = 18 } end, "unknown option 'dept'", "did you mean 'depth'" },
    { "convnet", function() return M.convnet { channels = 3 } end, "unknown option 'channels'" },
    { "attentionnet_irse", function() return M.attentionnet_irse { stage = { 1, 1, 1 } } end, "unknown option 'stage'" },
    { "convnet", function() return M.convnet { emb = 0 } end, "emb must be an integer" },
    { "convnet", function() return M.convnet { emb = 1.5 } end, "emb" },
    { "convnet", function() return M.convnet { emb = nan } end, "emb" },
    { "convnet", function() return M.convnet { size = "28" } end, "size" },
    { "convnet", function() return M.convnet { size = 30 } end, "multiple of 4" },
    { "convnet", function() return M.convnet { in_channels = 0 } end, "in_channels" },
    { "iresnet", function() return M.iresnet { depth = 19 } end, "depth must be 18, 34, 50 or 100, got 19" },
    { "iresnet", function() return M.iresnet { depth = "50" } end, "depth" },
    { "iresnet", function() return M.iresnet { depth = 18, size = 0 } end, "size" },
    { "iresnet", function() return M.iresnet { depth = 18, se = "yes" } end, "se must be true or false" },
    { "iresnet", function() return M.iresnet { depth = 18, dropout = 1 } end, "dropout" },
    { "iresnet", function() return M.iresnet { depth = 18, emb = inf } end, "emb" },
    { "mobilefacenet", function() return M.mobilefacenet { size = 100 } end, "multiple of 16" },
    { "mobilefacenet", function() return M.mobilefacenet "x" end, "the options must be a table" },
    { "attentionnet_irse", function() return M.attentionnet_irse { stages = { 1, 1 } } end, "stages" },
    { "attentionnet_irse", function() return M.attentionnet_irse { stages = { 1e9, 1, 1 } } end, "stages[1]" },
    { "attentionnet_irse", function() return M.attentionnet_irse { stages = { 1, 0.5, 1 } } end, "stages[2]" },
    { "attentionnet_irse", function() return M.attentionnet_irse { dropout = -0.1 } end, "dropout" },
  }
  for i, c in ipairs(cases) do
    it(("%s rejects bad options (%d)"):format(c[1], i), function()
      rejects(c[2], "facet.models." .. c[1], c[3], c[4])
    end)
  end

  it("models.build names the backbone and the option", function()
    rejects(function() M.build("resnet") end, "facet.models.build", "unknown backbone resnet")
    rejects(function() M.build(nil) end, "facet.models.build", "unknown backbone nil")
    rejects(function() M.build("convnet", 5) end, "facet.models.build", "opts must be a table")
    rejects(function() M.build("convnet", { emb = -1 }) end, "facet.models.convnet", "emb")
  end)
end)

describe("loader options (facet.check.loader_options)", function()
  local src = { images = { "x" }, labels = { 1 } }
  local function o(extra)
    local t = { source = src }
    for k, v in pairs(extra) do t[k] = v end
    return t
  end
  local cases = {
    { { batch_size = 0 }, "batch_size" }, { { batch_size = 1.5 }, "batch_size" }, { { batch_size = nan }, "batch_size" },
    { { batch_size = "a" }, "batch_size" }, { { threads = 0 }, "threads" }, { { seed = -1 }, "seed" },
    { { seed = 1.5 }, "seed" }, { { size = { 0, 112 } }, "size[1]" }, { { size = { 112 } }, "size" },
    { { size = { nan, 112 } }, "size[1]" }, { { mean = { 1, 2 } }, "mean" }, { { std = 0 }, "std" },
    { { std = { 1, 1, nan } }, "std[3]" }, { { flip = 2 }, "flip" }, { { grayscale = -0.5 }, "grayscale" },
    { { crop_padding = -1 }, "crop_padding" }, { { brightness = nan }, "brightness" },
    { { shufle = true }, "unknown option 'shufle'" }, { { shuffle = "no" }, "shuffle" }, { { queue = inf }, "queue" },
  }
  it("rejects each bad value with the option's name", function()
    for _, c in ipairs(cases) do rejects(function() check.loader_options(o(c[1])) end, "facet.data.loader", c[2]) end
    rejects(function() check.loader_options(nil) end, "facet.data.loader", "the options")
    rejects(function() check.loader_options({}) end, "facet.data.loader", "source")
    assert.are.equal("table", type(check.loader_options(o { size = { 16, 16 }, batch_size = 1, mean = { 1, 2, 3 },
      seed = 7, flip = 0, shuffle = false })))
  end)

  -- facet.data.loader calls loader_options once its owner adds the call (see the report)
  local ok, err = pcall(facet.data.loader, o { shufle = true })
  if not ok and tostring(err):find("unknown option 'shufle'", 1, true) then
    it("facet.data.loader rejects an unknown option name", function()
      rejects(function() facet.data.loader(o { shufle = true }) end, "facet.data.loader", "shufle")
    end)
  else
    pending("facet.data.loader does not call facet.check.loader_options yet (data/loader.lua is another " ..
      "engineer's file): " .. tostring(err))
  end
end)

describe("scripted programs", function()
  it("validate rejects a function whose derivative is not finite (sqrt(c + 1) at c = -1)", function()
    rejects(function() E.validate(function(c) return E.sqrt(c + 1) end, { derivative = true }) end,
      "facet.expr.validate", "derivative is not finite at cos = -1")
    local f, d = E.validate(function(c) return E.sqrt(E.max(c + 1, 1e-6)) end, { derivative = true })
    assert.is_true(E.is_node(f) and E.is_node(d))
  end)

  it("validate checks values over the range, in float32", function()
    rejects(function() E.validate(function(c) return E.log(c) end) end, "not finite at cos = -1")
    rejects(function() E.validate(function(c) return E.exp(100 * c) end) end, "beyond float32's range")
    rejects(function() E.validate(function(c) return 1 / c end) end, "not finite at cos = 0")
    assert.is_true(E.is_node(E.validate(function(c) return E.log(c) end, { range = { 0.5, 1 } })))
    rejects(function() E.validate(E.var(), { range = { 1, -1 } }) end, "range")
    rejects(function() E.validate(E.var(), { points = 1 }) end, "points")
    rejects(function() E.validate(E.var(), { derivatives = true }) end, "unknown option 'derivatives'")
    rejects(function() E.validate(function() return "x" end) end, "want a number or an expression")
    rejects(function() E.validate(function(c) if c < 0 then return 1 end return 0 end) end, "facet.expr.lt")
  end)

  it("a head with a margin of non-finite derivative is rejected at construction", function()
    rejects(function()
      facet.heads.new("am", { classes = 3, dim = 2, margin = function(c) return E.sqrt(c + 1) end })
    end, "margin derivative", "not finite at cos = -1")
    rejects(function()
      facet.heads.new("arc", { classes = 3, dim = 2, margin = function(c) return E.cos(E.acos(c) + 0.5) * E.sqrt(1 - c * c) end })
    end, "margin derivative", "not finite")
  end)

  it("compile checks the program over [-1, 1] unless told not to", function()
    rejects(function() E.compile(1 / (E.var() - 0.5), "prog") end, "prog: not finite at cos = 0.5")
    assert.is_table(E.compile(1 / (E.var() - 0.5), "prog", { range = false }))
  end)

  it("a deep expression is a clear error, not a stack overflow", function()
    rejects(function()
      local x = E.var()
      for i = 1, 100000 do x = x + i end
      return x
    end, "facet.expr", "nests more than 256")
    rejects(function()
      local x = E.var()
      for _ = 1, 100000 do x = E.sin(x) end
      return x
    end, "nests more than 256")
    local x = E.var()
    for i = 1, 100 do x = x * 0.5 + i end       -- 200 deep, within the limit: evaluated and printed
    assert.is_number(E.eval(x, 0.5))
    assert.is_string(E.tostring(x))
  end)
end)

describe("numbers of the command line and the recipes", function()
  it("facet.set_threads rejects NaN, 0 and fractions", function()
    for _, v in ipairs { nan, 1.5, inf, "2", 2 ^ 32 + 1 } do
      rejects(function() facet.set_threads(v) end, "facet.set_threads", "n must")
    end
    rejects(function() facet.set_threads(0) end, "facet_threads_set", "want 1..4096")
  end)

  it("check.flag reads and checks a numeric option", function()
    local f = check.flag("--epochs", { integer = true, min = 1 })
    assert.are.equal(3, f("3"))
    for _, s in ipairs { "0", "-1", "1.5", "nan", "inf", "abc", "" } do
      local v, err = f(s)
      assert.is_nil(v)
      assert.are.equal(("--epochs must be an integer >= 1, got '%s'"):format(s), err)
    end
  end)

  local recipe_cases = {
    { "run recipes/paper_table3.lua --epochs 0", "--epochs must be an integer in [1, 100000], got '0'" },
    { "run recipes/paper_table3.lua --batch nan", "--batch must be an integer" },
    { "run recipes/paper_table3.lua --size 1.5", "--size must be an integer" },
    { "run recipes/paper_table3.lua --seeds=-1", "--seeds must be an integer" },
    { "run recipes/paper_table3.lua --heads am,cosface", "--heads: unknown row 'cosface'" },
    { "run recipes/paper_table3.lua --model resnet", "--model" },
    { "run recipes/l2softmax_alpha.lua --alphas 1,abc", "--alphas must be a number > 0, got 'abc'" },
    { "run recipes/l2softmax_alpha.lua --identities inf", "--identities must be an integer" },
    { "run recipes/quickstart.lua --epochs=-1", "--epochs must be an integer" },
    { "run recipes/quickstart.lua --head cosfce", "--head" },
    { "run recipes/ms1m.lua --data x --lr inf", "--lr must be a number > 0, got 'inf'" },
    { "run recipes/ms1m.lua --data x --steps 0", "--steps must be an integer >= 1" },
    { "run recipes/ms1m.lua --data x --precision fp8", "--precision must be fp32, bf16 or fp16, got 'fp8'" },
    { "run recipes/demo.lua abc", "identities must be an integer in [1, 1000000], got 'abc'" },
    { "run recipes/demo.lua 10 2 8 9", "too many arguments" },
    { "eval x --bin y --emb abc", "--emb must be an integer >= 1, got 'abc'" },
    { "eval x --bin y --protocol skp", "--protocol" },
  }
  for _, c in ipairs(recipe_cases) do
    it(("`facet %s` is a usage error"):format(c[1]), function()
      local out, rc = command(c[1], 60)
      assert.is_true(rc == 1 or rc == 2, ("exit %s\n%s"):format(tostring(rc), out))
      assert.truthy(out:find(c[2], 1, true), out)
      assert.is_nil(out:find("stack traceback", 1, true), out)
      assert.is_nil(out:find("attempt to", 1, true), out)
    end)
  end
end)
