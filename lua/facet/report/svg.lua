--- facet.report.svg: line plots as standalone SVG text (no plotting
-- dependency): axes with ticks, several named series, optional log-scale x,
-- and the legend below the plot area (in a <g class="legend">), so it never
-- covers a curve. A series may be dashed (dash = true), faint (faint = true:
-- the raw curve under its smoothed one) and take another series' colour
-- (color = k, the k-th colour of the palette).
-- Any data plots: NaN and infinite points (and x <= 0 on a log axis) are left
-- out, a constant series gets a range around its value, and the tick loop is
-- bounded (an axis whose step vanishes next to its values, such as
-- [1e17, 1e17 + 16], still gets its ticks and ends). The options are checked.
local check = require "facet.check"

local M = {}
local NAME = "facet.report.svg.plot"
local OPTIONS = { "title", "xlabel", "ylabel", "series", "logx", "xlim", "ylim", "width", "height" }
local huge = math.huge

local function finite(v) return type(v) == "number" and v == v and v > -huge and v < huge end

local COLORS = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf" }

local function esc(s) return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end

-- a range [lo, hi] with hi > lo around a constant value: half its magnitude
-- either side (a constant learning rate of 0.1 gets 0.05 - 0.15), else lo + 1
-- where that is a different number, else a step its magnitude can hold
local function widen(lo, hi)
  if hi > lo then return lo, hi end
  if lo ~= 0 then
    local h = math.abs(lo) * 0.5
    if finite(lo - h) and finite(lo + h) and lo - h < lo and lo + h > lo then return lo - h, lo + h end
  end
  local d = math.max(1, math.abs(lo) * 2 ^ -40)
  if finite(lo + d) and lo + d > lo then return lo, lo + d end
  return lo - d, lo                                      -- lo + d overflowed: near the largest double
end
M.widen = widen

--- At most about n + 1 round ticks in [lo, hi]: the loop stops after a bounded
-- count, and when v + step == v (a step below the values' precision).
local function nice_ticks(lo, hi, n)
  if not (finite(lo) and finite(hi)) then return {} end
  lo, hi = widen(lo, hi)
  local span = hi - lo
  if not finite(span) then span = huge end
  local step = 10 ^ math.floor(math.log10(span / n))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if span / (step * m) <= n then step = step * m; break end
  end
  if not finite(step) or step <= 0 then return { lo, hi } end
  local t, v = {}, math.ceil(lo / step) * step
  for _ = 1, 4 * n + 4 do
    if not (v <= hi + step * 1e-9) then break end
    t[#t + 1] = v
    local nxt = v + step
    if nxt <= v then break end                         -- the step vanishes next to v
    v = nxt
  end
  return t
end
M.nice_ticks = nice_ticks

local function fmt(v)
  if v ~= 0 and (math.abs(v) >= 1e4 or math.abs(v) < 1e-3) then return ("%.0e"):format(v) end
  return (("%.4g"):format(v))
end

--- plot{ title, xlabel, ylabel, series = { { name, x = {...}, y = {...}, dash, faint, color } },
--        logx = false, xlim = {lo, hi}, ylim = {lo, hi}, width = 640, height = 400 } -> SVG text
-- (height is the plot's; the legend's rows are added below it)
local function check_options(o)
  check.table(NAME, "the options", o)
  check.options(NAME, o, OPTIONS)
  for _, k in ipairs { "title", "xlabel", "ylabel" } do
    if o[k] ~= nil and type(o[k]) ~= "string" and type(o[k]) ~= "number" then
      check.fail(NAME, ("%s must be a string, got %s"):format(k, check.describe(o[k])))
    end
  end
  check.boolean(NAME, "logx", o.logx, false)
  check.integer(NAME, "width", o.width, { min = 100, max = 100000, optional = true })
  check.integer(NAME, "height", o.height, { min = 100, max = 100000, optional = true })
  check.list(NAME, "ylim", o.ylim, { len = 2, increasing = true, optional = true })
  check.list(NAME, "xlim", o.xlim, { len = 2, increasing = true, optional = true, gt = o.logx and 0 or nil })
  check.table(NAME, "series", o.series)
  for k, s in ipairs(o.series) do
    local what = ("series[%d]"):format(k)
    if type(s) ~= "table" or type(s.x) ~= "table" or type(s.y) ~= "table" then
      check.fail(NAME, ("%s must be a table { name =, x = { numbers }, y = { numbers } }, got %s"):format(what,
        type(s) == "table" and "a table without the lists x and y" or check.describe(s)))
    end
    if #s.x ~= #s.y then
      check.fail(NAME, ("%s.x and %s.y must have one length, got %d and %d"):format(what, what, #s.x, #s.y))
    end
    for i = 1, #s.x do
      if type(s.x[i]) ~= "number" or type(s.y[i]) ~= "number" then
        check.fail(NAME, ("%s: point %d must be two numbers, got %s and %s"):format(what, i, check.describe(s.x[i]),
          check.describe(s.y[i])))
      end
    end
  end
end

-- legend entries per row and rows below the plot
local LEGEND_ENTRY, LEGEND_ROW = 200, 16

function M.plot(o)
  check_options(o)
  local W = o.width or 640
  local per_row = math.max(1, math.floor((W - 40) / LEGEND_ENTRY))
  local rows = math.ceil(#o.series / per_row)
  local legend_h = rows > 0 and rows * LEGEND_ROW + 8 or 0
  local Hh = (o.height or 400) + legend_h
  local L, R, T, B = 70, 20, 36, 50 + legend_h
  local function tx(v) return o.logx and math.log10(math.max(v, 1e-300)) or v end
  -- a point is drawn when both coordinates are finite (and x > 0 on a log axis)
  local function drawn(x, y) return finite(x) and finite(y) and (not o.logx or x > 0) end
  local xmin, xmax, ymin, ymax = huge, -huge, huge, -huge
  for _, s in ipairs(o.series) do
    for i = 1, #s.x do
      local x, y = s.x[i], s.y[i]
      if drawn(x, y) then
        x = tx(x)
        xmin, xmax = math.min(xmin, x), math.max(xmax, x)
        ymin, ymax = math.min(ymin, y), math.max(ymax, y)
      end
    end
  end
  if xmin == huge then xmin, xmax, ymin, ymax = 0, 1, 0, 1 end
  if o.ylim then ymin, ymax = o.ylim[1], o.ylim[2] end
  if o.xlim then xmin, xmax = tx(o.xlim[1]), tx(o.xlim[2]) end
  xmin, xmax = widen(xmin, xmax)
  ymin, ymax = widen(ymin, ymax)
  -- fractions of the axes, halved first so that no difference overflows
  local function fx(v) return (v * 0.5 - xmin * 0.5) / (xmax * 0.5 - xmin * 0.5) end
  local function fy(v) return (v * 0.5 - ymin * 0.5) / (ymax * 0.5 - ymin * 0.5) end
  local function px(x) return L + fx(tx(x)) * (W - L - R) end
  local function py(y) return Hh - B - fy(y) * (Hh - T - B) end
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">')
    :format(W, Hh, W, Hh))
  add(('<rect width="%d" height="%d" fill="white"/>'):format(W, Hh))
  add(('<text x="%d" y="20" text-anchor="middle" font-size="14">%s</text>'):format(W / 2, esc(o.title or "")))
  -- axes and ticks
  add(('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'):format(L, Hh - B, W - R, Hh - B))
  add(('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'):format(L, T, L, Hh - B))
  local xt = o.logx and {} or nice_ticks(xmin, xmax, 6)
  if o.logx then                                         -- decades, thinned to at most 12 labels
    local first, last = math.ceil(xmin), math.floor(xmax)
    local every = math.max(1, math.ceil((last - first + 1) / 12))
    for e = first, last, every do xt[#xt + 1] = e end
  end
  for _, v in ipairs(xt) do
    local x = L + fx(v) * (W - L - R)
    add(('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/>'):format(x, T, x, Hh - B))
    add(('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'):format(x, Hh - B + 16, o.logx and ("1e" .. v) or fmt(v)))
  end
  for _, v in ipairs(nice_ticks(ymin, ymax, 6)) do
    local y = py(v)
    add(('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ccc"/>'):format(L, y, W - R, y))
    add(('<text x="%d" y="%.1f" text-anchor="end">%s</text>'):format(L - 6, y + 4, fmt(v)))
  end
  add(('<rect class="plotarea" x="%d" y="%d" width="%d" height="%d" fill="none"/>'):format(L, T, W - L - R, Hh - T - B))
  add(('<text x="%d" y="%d" text-anchor="middle">%s</text>'):format((L + W - R) / 2, Hh - B + 38, esc(o.xlabel or "")))
  add(('<text x="16" y="%d" text-anchor="middle" transform="rotate(-90 16 %d)">%s</text>'):format((T + Hh - B) / 2,
    (T + Hh - B) / 2, esc(o.ylabel or "")))
  for k, s in ipairs(o.series) do
    local pts = {}
    for i = 1, #s.x do
      local x, y = s.x[i], s.y[i]
      if drawn(x, y) then
        local a, b = px(x), py(y)
        if finite(a) and finite(b) then pts[#pts + 1] = ("%.1f,%.1f"):format(a, b) end
      end
    end
    local color = COLORS[((tonumber(s.color) or k) - 1) % #COLORS + 1]
    local style = (s.dash and ' stroke-dasharray="6,3"' or "") .. (s.faint and ' stroke-opacity="0.35"' or "")
    add(('<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>'):format(color, style,
      table.concat(pts, " ")))
  end
  -- the legend, below the axis label: a line sample and the name per entry
  add('<g class="legend">')
  for k, s in ipairs(o.series) do
    local color = COLORS[((tonumber(s.color) or k) - 1) % #COLORS + 1]
    local col, row = (k - 1) % per_row, math.floor((k - 1) / per_row)
    local x, y = 20 + col * LEGEND_ENTRY, Hh - legend_h + row * LEGEND_ROW + 12
    local style = (s.dash and ' stroke-dasharray="6,3"' or "") .. (s.faint and ' stroke-opacity="0.35"' or "")
    add(('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>'):format(x, y - 4, x + 18, y - 4,
      color, style))
    add(('<text x="%d" y="%d" fill="%s">%s</text>'):format(x + 24, y, color, esc(s.name or ("series " .. k))))
  end
  add("</g>")
  add("</svg>")
  return table.concat(out, "\n")
end

return M
