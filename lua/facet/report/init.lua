--- facet.report.write(run_dirs, out_dir): a self-contained HTML report (and
-- SVG files) of one or more training runs, overlaid to compare heads:
-- training loss (raw, faint, and smoothed) and learning rate against step,
-- and every evaluation logged during training against step (from
-- RUN/train.jsonl), ROC curves on log-scale FAR and the verification
-- metrics (from RUN/verify.json when the run wrote one; sets or protocols
-- with the same ROC are drawn once, under all their names), CMC curves and
-- rank-1 (from RUN/identify.json), and a table of the numbers. It records
-- where it was made (facet's version and commit, the CPU, GPUs, threads, the
-- date: facet.about), each run's wall time, and its settings when the run
-- left them (RUN/config.lua, as recipes/train.lua writes). Runs whose
-- directories share a name are told apart by their parent directories.
-- `bin/facet report RUN_DIR [RUN_DIR ...] [--out DIR]` calls it.
-- What the files hold is checked: a train.jsonl line that is not a JSON
-- object with numbers step and loss is skipped (a killed run leaves half a
-- line), while a verify.json or identify.json that is not what save_verify /
-- save_identify write is an error naming the file.
local cjson = require "cjson"
local svg = require "facet.report.svg"
local sys = require "facet.sys"
local check = require "facet.check"

local M = {}
local WRITE = "facet.report.write"
local NAN = 0 / 0

local function num(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge and v or nil end

local function read_log(dir)
  local f = sys.open_read(dir .. "/train.jsonl")
  if not f then check.fail(WRITE, ("%s has no train.jsonl (not a run directory)"):format(dir)) end
  local steps, loss, lr, last, evals, names = {}, {}, {}, nil, {}, {}
  for line in f:lines() do
    local ok, e = pcall(cjson.decode, line)
    if ok and type(e) == "table" and type(e.loss) == "number" and type(e.step) == "number" then
      -- NaN marks a missing lr: the plot leaves the point out
      steps[#steps + 1], loss[#loss + 1], lr[#lr + 1] = e.step, e.loss, type(e.lr) == "number" and e.lr or NAN
      last = e
      -- the evaluations of that step: { name = number } (others are left out)
      if type(e.eval) == "table" then
        for k, v in pairs(e.eval) do
          if type(v) == "number" and (type(k) == "string" or type(k) == "number") then
            k = tostring(k)
            if not evals[k] then evals[k] = { x = {}, y = {} }; names[#names + 1] = k end
            local t = evals[k]
            t.x[#t.x + 1], t.y[#t.y + 1] = e.step, v
          end
        end
      end
    end
  end
  f:close()
  table.sort(names)
  return { steps = steps, loss = loss, lr = lr, last = last, evals = evals, eval_names = names }
end

-- An exponential moving average of y with the span of about a twentieth of
-- the points (nil when there are too few points to smooth); NaN points are
-- carried over without entering the average.
local function smoothed(y)
  if #y < 20 then return nil end
  local a, out, m = 2 / (#y / 20 + 1), {}, nil
  for i, v in ipairs(y) do
    if num(v) then m = m and m + a * (v - m) or v end
    out[i] = m or NAN
  end
  return out
end
M.smoothed = smoothed

-- Display names: the directory's last part, with as many parent parts as
-- it takes to tell runs of one name apart ("a/run", "b/run").
local function run_names(dirs)
  local parts = {}
  for i, d in ipairs(dirs) do
    parts[i] = {}
    for p in d:gmatch("[^/]+") do table.insert(parts[i], 1, p) end
    if #parts[i] == 0 then parts[i] = { d } end
  end
  local names, depth = {}, 1
  while true do
    local seen, clash = {}, false
    for i = 1, #dirs do
      local n = math.min(depth, #parts[i])
      local segs = {}
      for k = n, 1, -1 do segs[#segs + 1] = parts[i][k] end
      names[i] = table.concat(segs, "/")
      if seen[names[i]] then clash = true end
      seen[names[i]] = true
    end
    local deeper = false
    for i = 1, #dirs do if #parts[i] > depth then deeper = true end end
    if not clash or not deeper then break end
    depth = depth + 1
  end
  return names
end
M.run_names = run_names

-- the decoded JSON of path, nil when there is no such file
local function read_json(path)
  local f = sys.open_read(path)
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local ok, v = pcall(cjson.decode, text)
  if not ok then check.fail(WRITE, ("%s is not valid JSON (%s)"):format(path, tostring(v):gsub("^.-: ", ""))) end
  return v
end

local function list_of_numbers(v)
  if type(v) ~= "table" then return false end
  for i = 1, #v do if type(v[i]) ~= "number" then return false end end
  return true
end

-- dir/NAME.json (nil when there is none): a list of results, each passed to
-- check_entry(i, r, bad); bad(what) is the error naming the file and
-- facet.report.save_NAME, which writes it
local function read_results(dir, name, check_entry)
  local path = dir .. "/" .. name .. ".json"
  local v = read_json(path)
  if v == nil then return nil end
  local function bad(what) check.fail(WRITE, ("%s: %s (write it with facet.report.save_%s)"):format(path, what, name)) end
  if type(v) ~= "table" then bad("want a list of results") end
  for i, r in ipairs(v) do check_entry(i, r, bad) end
  return v
end

-- verify.json: a list of { name, accuracy, std, tar_at_far = { ["0.001"] = ... }, roc = { fpr, tpr } }
local function read_verify(dir)
  return read_results(dir, "verify", function(i, r, bad)
    if type(r) ~= "table" then bad(("entry %d is not an object"):format(i)) end
    if r.roc ~= nil and (type(r.roc) ~= "table" or not list_of_numbers(r.roc.fpr) or not list_of_numbers(r.roc.tpr)
        or #r.roc.fpr ~= #r.roc.tpr) then
      bad(("entry %d's roc must hold two lists of numbers of one length, fpr and tpr"):format(i))
    end
    if r.tar_at_far ~= nil and type(r.tar_at_far) ~= "table" then bad(("entry %d's tar_at_far is not an object"):format(i)) end
  end)
end

-- identify.json: a list of { name, rank1, cmc = { ... } }
local function read_identify(dir)
  return read_results(dir, "identify", function(i, r, bad)
    if type(r) ~= "table" or not list_of_numbers(r.cmc) then bad(("entry %d must hold a list of numbers cmc"):format(i)) end
  end)
end

local function esc(s) return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end

-- "%.4f" of a finite number, else the fallback
local function f4(v, fallback, pattern)
  v = num(v)
  return v and (pattern or "%.4f"):format(v) or fallback
end

-- "1 h 02 min", "3 min 05 s", "12.3 s" of seconds ("" when not a number)
local function duration(t)
  t = num(t)
  if not t then return "" end
  if t >= 3600 then return ("%d h %02d min"):format(math.floor(t / 3600), math.floor(t % 3600 / 60)) end
  if t >= 60 then return ("%d min %02d s"):format(math.floor(t / 60), math.floor(t % 60)) end
  return ("%.1f s"):format(t)
end

-- whether a verify.json entry marks metric undefined (no impostor or genuine pairs)
local function undefined(v, metric) return type(v.undefined) == "table" and v.undefined[metric] == true end

local function name_of(v) return (type(v) == "string" or type(v) == "number") and tostring(v) or nil end

function M.write(dirs, out)
  if type(dirs) == "string" then dirs = { dirs } end
  if type(dirs) ~= "table" or #dirs == 0 then
    check.fail(WRITE, ("dirs must be a run directory or a non-empty list of them, got %s"):format(
      type(dirs) == "table" and "an empty list" or check.describe(dirs)))
  end
  for i, d in ipairs(dirs) do
    if type(d) ~= "string" or d == "" then
      check.fail(WRITE, ("dirs[%d] must be a directory name, got %s"):format(i, check.describe(d)))
    end
  end
  if out ~= nil and (type(out) ~= "string" or out == "") then
    check.fail(WRITE, ("out must be a directory name, got %s"):format(check.describe(out)))
  end
  out = out or dirs[1]
  local runs, names = {}, run_names(dirs)
  for i, d in ipairs(dirs) do
    runs[i] = { dir = d, name = names[i], log = read_log(d), verify = read_verify(d),
      identify = read_identify(d), config = sys.read_file(d .. "/config.lua") }
  end
  local ok, err = sys.mkdir_p(out)                        -- only once every run has been read
  if not ok then check.fail(WRITE, ("cannot make the output directory %s: %s"):format(out, tostring(err))) end
  local plots = {}
  local function series(field)
    local s = {}
    for _, r in ipairs(runs) do s[#s + 1] = { name = r.name, x = r.log.steps, y = r.log[field] } end
    return s
  end
  -- the raw loss faint, its smoothed curve over it in the same colour
  local losses = {}
  for k, r in ipairs(runs) do
    local sm = smoothed(r.log.loss)
    losses[#losses + 1] = { name = r.name .. (sm and " (raw)" or ""), x = r.log.steps, y = r.log.loss, color = k,
      faint = sm ~= nil }
    if sm then losses[#losses + 1] = { name = r.name .. " (smoothed)", x = r.log.steps, y = sm, color = k } end
  end
  plots.loss = svg.plot { title = "training loss", xlabel = "step", ylabel = "loss", series = losses }
  plots.lr = svg.plot { title = "learning rate", xlabel = "step", ylabel = "lr", series = series("lr") }
  local evals = {}
  for _, r in ipairs(runs) do
    for _, name in ipairs(r.log.eval_names) do
      local e = r.log.evals[name]
      evals[#evals + 1] = { name = r.name .. " " .. name, x = e.x, y = e.y }
    end
  end
  if #evals > 0 then
    plots.eval = svg.plot { title = "evaluations during training", xlabel = "step", ylabel = "metric", series = evals }
  end
  -- one curve per distinct ROC of a run: its sets or protocols that give the same one share it
  local roc = {}
  for _, r in ipairs(runs) do
    local by_curve = {}
    for _, v in ipairs(r.verify or {}) do
      if v.roc and not undefined(v, "roc") then
        local key = table.concat(v.roc.fpr, ",") .. ";" .. table.concat(v.roc.tpr, ",")
        local label = r.name .. " " .. (name_of(v.name) or "")
        if by_curve[key] then
          by_curve[key].name = by_curve[key].name .. ", " .. (name_of(v.name) or "")
        else
          by_curve[key] = { name = label, x = v.roc.fpr, y = v.roc.tpr }
          roc[#roc + 1] = by_curve[key]
        end
      end
    end
  end
  if #roc > 0 then
    -- the FAR axis reaches down to the lowest decade a curve has a point in (IJB, MegaFace: 1e-6), 1e-9 at most
    local low = 1e-4
    for _, sr in ipairs(roc) do
      for _, f in ipairs(sr.x) do
        if type(f) == "number" and f > 0 and f < low then low = f end
      end
    end
    low = math.max(1e-9, 10 ^ math.floor(math.log10(low) + 1e-9))
    plots.roc = svg.plot { title = "ROC", xlabel = "false accept rate", ylabel = "true accept rate", series = roc,
      logx = true, ylim = { 0, 1 }, xlim = { low, 1 } }
  end
  local cmc = {}
  for _, r in ipairs(runs) do
    for _, v in ipairs(r.identify or {}) do
      local ranks = {}
      for k = 1, #v.cmc do ranks[k] = k end
      cmc[#cmc + 1] = { name = r.name .. " " .. (name_of(v.name) or ""), x = ranks, y = v.cmc }
    end
  end
  if #cmc > 0 then
    plots.cmc = svg.plot { title = "CMC", xlabel = "rank", ylabel = "identification rate", series = cmc, ylim = { 0, 1 } }
  end
  local files = {}
  for name, text in pairs(plots) do
    local path = ("%s/%s.svg"):format(out, name)
    local f, ferr = io.open(path, "w")
    if not f then check.fail(WRITE, ("cannot write %s: %s"):format(path, tostring(ferr))) end
    f:write(text)
    f:close()
    files[#files + 1] = name .. ".svg"
  end
  table.sort(files)
  -- the HTML carries the SVGs inline, so it is one self-contained file
  local h = { "<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>facet report</title>",
    "<style>body{font-family:sans-serif;margin:24px} table{border-collapse:collapse} td,th{border:1px solid #999;padding:4px 8px;text-align:right} pre{background:#f4f4f4;padding:8px}</style>",
    "</head><body>", "<h1>facet report</h1>" }
  -- where and with what it was made
  local okabout, about = pcall(function() return require("facet.about").lines() end)
  if okabout then h[#h + 1] = ('<p class="about">%s</p>'):format(esc(table.concat(about, "; "))) end
  h[#h + 1] = "<h2>Runs</h2><table><tr><th>run</th><th>steps</th><th>final loss</th><th>final lr</th><th>images/s</th><th>wall time</th><th>set</th><th>accuracy</th><th>std</th><th>TAR@FAR=1e-3</th></tr>"
  for _, r in ipairs(runs) do
    local last = r.log.last or {}
    local sets = r.verify or { {} }
    if #sets == 0 then sets = { {} } end
    for k, v in ipairs(sets) do
      local tar = v.tar_at_far and v.tar_at_far["0.001"]
      h[#h + 1] = ("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"):format(
        esc(k == 1 and r.name or ""), k == 1 and f4(last.step, "", "%.0f") or "",
        k == 1 and f4(last.loss, "") or "", k == 1 and f4(last.lr, "", "%.4g") or "",
        k == 1 and f4(last.images_per_s, "", "%.0f") or "", k == 1 and duration(last.time) or "",
        esc(name_of(v.name) or "-"), undefined(v, "accuracy") and "undefined" or f4(v.accuracy, "-"),
        undefined(v, "accuracy") and "-" or f4(v.std, "-"), f4(tar, "-"))
    end
  end
  h[#h + 1] = "</table>"
  for _, r in ipairs(runs) do
    for _, v in ipairs(r.verify or {}) do
      if type(v.warnings) == "table" then
        for _, w in ipairs(v.warnings) do
          h[#h + 1] = ('<p class="warning">warning: %s %s: %s</p>'):format(esc(r.name), esc(name_of(v.name) or ""),
            esc(tostring(w)))
        end
      end
    end
  end
  local idrows = {}
  for _, r in ipairs(runs) do
    for _, v in ipairs(r.identify or {}) do
      idrows[#idrows + 1] = ("<tr><td>%s</td><td>%s</td><td>%s</td></tr>"):format(esc(r.name), esc(name_of(v.name) or "-"),
        f4(v.rank1, "-"))
    end
  end
  if #idrows > 0 then
    h[#h + 1] = "<h2>Identification</h2><table><tr><th>run</th><th>set</th><th>rank-1</th></tr>"
    for _, row in ipairs(idrows) do h[#h + 1] = row end
    h[#h + 1] = "</table>"
  end
  for _, name in ipairs { "loss", "lr", "eval", "roc", "cmc" } do
    if plots[name] then h[#h + 1] = ("<h2>%s</h2>\n<div>%s</div>"):format(name, plots[name]) end
  end
  for _, r in ipairs(runs) do
    if r.config then h[#h + 1] = ("<h2>settings of %s</h2>\n<pre>%s</pre>"):format(esc(r.name), esc(r.config)) end
  end
  h[#h + 1] = ("<p>SVG files: %s</p></body></html>"):format(table.concat(files, ", "))
  local f, ferr = io.open(out .. "/report.html", "w")
  if not f then check.fail(WRITE, ("cannot write %s/report.html: %s"):format(out, tostring(ferr))) end
  f:write(table.concat(h, "\n"))
  f:close()
  return out .. "/report.html", files
end

-- dir and a list of { name = string, result = table } for save_verify / save_identify
local function check_results(fn, dir, results, needs)
  if type(dir) ~= "string" or dir == "" then
    check.fail(fn, ("dir must be a run directory, got %s"):format(check.describe(dir)))
  end
  if type(results) ~= "table" then
    check.fail(fn, ("results must be a list of { name =, result = }, got %s"):format(check.describe(results)))
  end
  for i, r in ipairs(results) do
    if type(r) ~= "table" or type(r.result) ~= "table" then
      check.fail(fn, ("results[%d] must be { name = string, result = table }, got %s"):format(i,
        type(r) == "table" and "a table without result" or check.describe(r)))
    end
    if r.name ~= nil and type(r.name) ~= "string" then
      check.fail(fn, ("results[%d].name must be a string, got %s"):format(i, check.describe(r.name)))
    end
    needs(r.result, ("results[%d].result"):format(i))
  end
end

local function write_json(fn, path, value)
  local f, err = io.open(path, "w")
  if not f then check.fail(fn, ("cannot write %s: %s"):format(path, tostring(err))) end
  local ok, text = pcall(cjson.encode, value)
  if not ok then
    f:close()
    check.fail(fn, ("cannot encode the results as JSON (%s)"):format(tostring(text)))
  end
  f:write(text)
  f:close()
end

--- Writes RUN/identify.json from named identify() results (rank-1 and CMC).
function M.save_identify(dir, results)
  local fn = "facet.report.save_identify"
  check_results(fn, dir, results, function(res, what)
    if type(res.cmc) ~= "table" or type(res.rank1) ~= "number" then
      check.fail(fn, ("%s must be a result of facet.eval.identify (rank1, cmc)"):format(what))
    end
  end)
  local list = {}
  for _, r in ipairs(results) do
    local cmc = {}
    for k, v in ipairs(r.result.cmc) do cmc[k] = v end
    list[#list + 1] = { name = r.name, rank1 = r.result.rank1, cmc = setmetatable(cmc, cjson.array_mt) }
  end
  write_json(fn, dir .. "/identify.json", setmetatable(list, cjson.array_mt))
end

--- Writes RUN/verify.json from named verify() results (what the report reads).
function M.save_verify(dir, results)
  local fn = "facet.report.save_verify"
  check_results(fn, dir, results, function(res, what)
    if type(res.roc) ~= "table" or type(res.roc.fpr) ~= "table" or type(res.roc.tpr) ~= "table" then
      check.fail(fn, ("%s must be a result of facet.eval.verify (accuracy, std, roc, tar_at_far)"):format(what))
    end
  end)
  local list = {}
  for _, r in ipairs(results) do
    local tar = {}
    for far, v in pairs(r.result.tar_at_far or {}) do tar[("%g"):format(far)] = v end
    -- thin the ROC to at most 400 points for the plot
    local fpr, tpr, n = {}, {}, #r.result.roc.fpr
    local step = math.max(1, math.floor(n / 400))
    for i = 1, n, step do fpr[#fpr + 1], tpr[#tpr + 1] = r.result.roc.fpr[i], r.result.roc.tpr[i] end
    local warnings = r.result.warnings and setmetatable({ unpack(r.result.warnings) }, cjson.array_mt) or nil
    list[#list + 1] = { name = r.name, accuracy = r.result.accuracy, std = r.result.std, tar_at_far = tar,
      roc = { fpr = fpr, tpr = tpr }, undefined = r.result.undefined, warnings = warnings }
  end
  write_json(fn, dir .. "/verify.json", setmetatable(list, cjson.array_mt))
end

return M
