--- facet.report.write(run_dirs, out_dir): a self-contained HTML report (and
-- SVG files) of one or more training runs, overlaid to compare heads:
-- training loss and learning rate against step (from RUN/train.jsonl),
-- ROC curves on log-scale FAR and the verification metrics (from
-- RUN/verify.json when the run wrote one), CMC curves and rank-1 (from
-- RUN/identify.json), and a table of the numbers.
-- `bin/facet report RUN_DIR [RUN_DIR ...] [--out DIR]` calls it.
local cjson = require "cjson"
local svg = require "facet.report.svg"
local sys = require "facet.sys"

local M = {}

local function read_log(dir)
  local f = io.open(dir .. "/train.jsonl")
  if not f then error(("report: %s has no train.jsonl"):format(dir), 3) end
  local steps, loss, lr, last = {}, {}, {}, nil
  for line in f:lines() do
    local ok, e = pcall(cjson.decode, line)
    if ok and type(e) == "table" and type(e.loss) == "number" then
      steps[#steps + 1], loss[#loss + 1], lr[#lr + 1] = e.step, e.loss, e.lr
      last = e
    end
  end
  f:close()
  return { steps = steps, loss = loss, lr = lr, last = last }
end

local function read_verify(dir)
  local f = io.open(dir .. "/verify.json")
  if not f then return nil end
  local ok, v = pcall(cjson.decode, f:read("*a"))
  f:close()
  return ok and v or nil
end

local function read_json(path)
  local f = io.open(path)
  if not f then return nil end
  local ok, v = pcall(cjson.decode, f:read("*a"))
  f:close()
  return ok and v or nil
end

local function esc(s) return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end

function M.write(dirs, out)
  if type(dirs) == "string" then dirs = { dirs } end
  out = out or dirs[1]
  local runs = {}
  for i, d in ipairs(dirs) do
    runs[i] = { dir = d, name = d:match("([^/]+)/*$") or d, log = read_log(d), verify = read_verify(d),
      identify = read_json(d .. "/identify.json") }
  end
  local ok, err = sys.mkdir_p(out)                        -- only once every run has been read
  if not ok then error("report: " .. err, 2) end
  local plots = {}
  local function series(field)
    local s = {}
    for _, r in ipairs(runs) do s[#s + 1] = { name = r.name, x = r.log.steps, y = r.log[field] } end
    return s
  end
  plots.loss = svg.plot { title = "training loss", xlabel = "step", ylabel = "loss", series = series("loss") }
  plots.lr = svg.plot { title = "learning rate", xlabel = "step", ylabel = "lr", series = series("lr") }
  local roc = {}
  for _, r in ipairs(runs) do
    for _, v in ipairs(r.verify or {}) do
      if v.roc then roc[#roc + 1] = { name = r.name .. " " .. (v.name or ""), x = v.roc.fpr, y = v.roc.tpr } end
    end
  end
  if #roc > 0 then
    plots.roc = svg.plot { title = "ROC", xlabel = "false accept rate", ylabel = "true accept rate", series = roc,
      logx = true, ylim = { 0, 1 }, xlim = { 1e-4, 1 } }
  end
  local cmc = {}
  for _, r in ipairs(runs) do
    for _, v in ipairs(r.identify or {}) do
      local ranks = {}
      for k = 1, #v.cmc do ranks[k] = k end
      cmc[#cmc + 1] = { name = r.name .. " " .. (v.name or ""), x = ranks, y = v.cmc }
    end
  end
  if #cmc > 0 then
    plots.cmc = svg.plot { title = "CMC", xlabel = "rank", ylabel = "identification rate", series = cmc, ylim = { 0, 1 } }
  end
  local files = {}
  for name, text in pairs(plots) do
    local f = assert(io.open(("%s/%s.svg"):format(out, name), "w"))
    f:write(text)
    f:close()
    files[#files + 1] = name .. ".svg"
  end
  table.sort(files)
  -- the HTML carries the SVGs inline, so it is one self-contained file
  local h = { "<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>facet report</title>",
    "<style>body{font-family:sans-serif;margin:24px} table{border-collapse:collapse} td,th{border:1px solid #999;padding:4px 8px;text-align:right}</style>",
    "</head><body>", "<h1>facet report</h1>" }
  h[#h + 1] = "<h2>Runs</h2><table><tr><th>run</th><th>steps</th><th>final loss</th><th>final lr</th><th>images/s</th><th>set</th><th>accuracy</th><th>std</th><th>TAR@FAR=1e-3</th></tr>"
  for _, r in ipairs(runs) do
    local last = r.log.last or {}
    local sets = r.verify or { {} }
    for k, v in ipairs(sets) do
      local tar = v.tar_at_far and v.tar_at_far["0.001"]
      h[#h + 1] = ("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"):format(
        esc(k == 1 and r.name or ""), k == 1 and tostring(last.step or "") or "",
        k == 1 and last.loss and ("%.4f"):format(last.loss) or "", k == 1 and last.lr and ("%.4g"):format(last.lr) or "",
        k == 1 and last.images_per_s and ("%.0f"):format(last.images_per_s) or "", esc(v.name or "-"),
        v.accuracy and ("%.4f"):format(v.accuracy) or "-", v.std and ("%.4f"):format(v.std) or "-",
        tar and ("%.4f"):format(tar) or "-")
    end
  end
  h[#h + 1] = "</table>"
  local idrows = {}
  for _, r in ipairs(runs) do
    for _, v in ipairs(r.identify or {}) do
      idrows[#idrows + 1] = ("<tr><td>%s</td><td>%s</td><td>%.4f</td></tr>"):format(esc(r.name), esc(v.name or "-"), v.rank1)
    end
  end
  if #idrows > 0 then
    h[#h + 1] = "<h2>Identification</h2><table><tr><th>run</th><th>set</th><th>rank-1</th></tr>"
    for _, row in ipairs(idrows) do h[#h + 1] = row end
    h[#h + 1] = "</table>"
  end
  for _, name in ipairs { "loss", "lr", "roc", "cmc" } do
    if plots[name] then h[#h + 1] = ("<h2>%s</h2>\n<div>%s</div>"):format(name, plots[name]) end
  end
  h[#h + 1] = ("<p>SVG files: %s</p></body></html>"):format(table.concat(files, ", "))
  local f = assert(io.open(out .. "/report.html", "w"))
  f:write(table.concat(h, "\n"))
  f:close()
  return out .. "/report.html", files
end

--- Writes RUN/identify.json from named identify() results (rank-1 and CMC).
function M.save_identify(dir, results)
  local list = {}
  for _, r in ipairs(results) do
    list[#list + 1] = { name = r.name, rank1 = r.result.rank1, cmc = setmetatable(r.result.cmc, cjson.array_mt) }
  end
  local f = assert(io.open(dir .. "/identify.json", "w"))
  f:write(cjson.encode(list))
  f:close()
end

--- Writes RUN/verify.json from named verify() results (what the report reads).
function M.save_verify(dir, results)
  local list = {}
  for _, r in ipairs(results) do
    local tar = {}
    for far, v in pairs(r.result.tar_at_far or {}) do tar[("%g"):format(far)] = v end
    -- thin the ROC to at most 400 points for the plot
    local fpr, tpr, n = {}, {}, #r.result.roc.fpr
    local step = math.max(1, math.floor(n / 400))
    for i = 1, n, step do fpr[#fpr + 1], tpr[#tpr + 1] = r.result.roc.fpr[i], r.result.roc.tpr[i] end
    list[#list + 1] = { name = r.name, accuracy = r.result.accuracy, std = r.result.std, tar_at_far = tar,
      roc = { fpr = fpr, tpr = tpr } }
  end
  local f = assert(io.open(dir .. "/verify.json", "w"))
  f:write(cjson.encode(list))
  f:close()
end

return M
