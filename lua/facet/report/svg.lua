--- facet.report.svg: line plots as standalone SVG text (no plotting
-- dependency): axes with ticks, several named series, optional log-scale x.
local M = {}

local COLORS = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf" }

local function esc(s) return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end

local function nice_ticks(lo, hi, n)
  if hi <= lo then hi = lo + 1 end
  local step = 10 ^ math.floor(math.log10((hi - lo) / n))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if (hi - lo) / (step * m) <= n then step = step * m; break end
  end
  local t, v = {}, math.ceil(lo / step) * step
  while v <= hi + 1e-12 do t[#t + 1] = v; v = v + step end
  return t
end

local function fmt(v)
  if v ~= 0 and (math.abs(v) >= 1e4 or math.abs(v) < 1e-3) then return ("%.0e"):format(v) end
  return (("%.4g"):format(v))
end

--- plot{ title, xlabel, ylabel, series = { { name, x = {...}, y = {...} } }, logx = false,
--        ylim = {lo, hi}, width = 640, height = 400 } -> SVG text
function M.plot(o)
  local W, Hh = o.width or 640, o.height or 400
  local L, R, T, B = 70, 20, 36, 50
  local function tx(v) return o.logx and math.log10(math.max(v, 1e-12)) or v end
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(o.series) do
    for i = 1, #s.x do
      local x, y = tx(s.x[i]), s.y[i]
      if x == x and y == y and x > -math.huge and x < math.huge and y > -math.huge and y < math.huge then
        xmin, xmax = math.min(xmin, x), math.max(xmax, x)
        ymin, ymax = math.min(ymin, y), math.max(ymax, y)
      end
    end
  end
  if xmin == math.huge then xmin, xmax, ymin, ymax = 0, 1, 0, 1 end
  if o.ylim then ymin, ymax = o.ylim[1], o.ylim[2] end
  if o.xlim then xmin, xmax = tx(o.xlim[1]), tx(o.xlim[2]) end
  if xmax <= xmin then xmax = xmin + 1 end
  if ymax <= ymin then ymax = ymin + 1 end
  local function px(x) return L + (tx(x) - xmin) / (xmax - xmin) * (W - L - R) end
  local function py(y) return Hh - B - (y - ymin) / (ymax - ymin) * (Hh - T - B) end
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
  if o.logx then for e = math.ceil(xmin), math.floor(xmax) do xt[#xt + 1] = e end end
  for _, v in ipairs(xt) do
    local x = L + (v - xmin) / (xmax - xmin) * (W - L - R)
    add(('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/>'):format(x, T, x, Hh - B))
    add(('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'):format(x, Hh - B + 16, o.logx and ("1e" .. v) or fmt(v)))
  end
  for _, v in ipairs(nice_ticks(ymin, ymax, 6)) do
    local y = py(v)
    add(('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ccc"/>'):format(L, y, W - R, y))
    add(('<text x="%d" y="%.1f" text-anchor="end">%s</text>'):format(L - 6, y + 4, fmt(v)))
  end
  add(('<text x="%d" y="%d" text-anchor="middle">%s</text>'):format((L + W - R) / 2, Hh - 12, esc(o.xlabel or "")))
  add(('<text x="16" y="%d" text-anchor="middle" transform="rotate(-90 16 %d)">%s</text>'):format((T + Hh - B) / 2,
    (T + Hh - B) / 2, esc(o.ylabel or "")))
  for k, s in ipairs(o.series) do
    local pts = {}
    for i = 1, #s.x do
      local x, y = s.x[i], s.y[i]
      if (not o.logx or x > 0) and y == y then pts[#pts + 1] = ("%.1f,%.1f"):format(px(x), py(y)) end
    end
    local color = COLORS[(k - 1) % #COLORS + 1]
    add(('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>'):format(color, table.concat(pts, " ")))
    add(('<text x="%d" y="%d" fill="%s" text-anchor="end">%s</text>'):format(W - R - 6, T + 14 * k, color,
      esc(s.name or ("series " .. k))))
  end
  add("</svg>")
  return table.concat(out, "\n")
end

return M
