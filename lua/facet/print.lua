--- facet.print: Torch7/NumPy-style text for tensors: aligned columns, large
-- tensors cut with "...", and a footer with dtype, device and shape.
local M = {}

M.options = { threshold = 1000, edgeitems = 3, precision = 4 }

-- indices shown along a dim of size n
local function shown(n, cut)
  local e = M.options.edgeitems
  if not cut or n <= 2 * e then
    local r = {}
    for i = 1, n do r[#r + 1] = i end
    return r
  end
  local r = {}
  for i = 1, e do r[#r + 1] = i end
  r[#r + 1] = false                 -- the "..." marker
  for i = n - e + 1, n do r[#r + 1] = i end
  return r
end

-- one format for every shown value: integers print as integers, otherwise
-- fixed point, or scientific when the magnitudes span too much
local function chooser(values, integer_dtype)
  local all_int, maxabs, minabs = true, 0, math.huge
  for _, v in ipairs(values) do
    if v ~= v or v == math.huge or v == -math.huge then
      all_int = all_int and integer_dtype
    else
      if v ~= math.floor(v) then all_int = false end
      local a = math.abs(v)
      if a > maxabs then maxabs = a end
      if a > 0 and a < minabs then minabs = a end
    end
  end
  local p = M.options.precision
  local fmt
  if integer_dtype or (all_int and maxabs < 1e15) then
    fmt = function(v)
      if v ~= v then return "nan" elseif v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
      return ("%d"):format(v)
    end
  elseif maxabs >= 1e5 or (minabs < 1e-4 and minabs ~= math.huge) then
    fmt = function(v) return ("%." .. p .. "e"):format(v) end
  else
    fmt = function(v) return ("%." .. p .. "f"):format(v) end
  end
  return fmt
end

local function render_matrix(get, rows, cols, fmt, lines, width, indent)
  for _, i in ipairs(rows) do
    local parts = {}
    if i == false then
      for _, j in ipairs(cols) do parts[#parts + 1] = (" "):rep(width - 3) .. (j == false and "   " or "...") end
    else
      for _, j in ipairs(cols) do
        local s = j == false and "..." or fmt(get(i, j))
        parts[#parts + 1] = (" "):rep(width - #s) .. s
      end
    end
    lines[#lines + 1] = indent .. table.concat(parts, " ")
  end
end

function M.format(t)
  if t.h == nil then return "[facet.Tensor (freed)]" end
  local shape = t:shape()
  local dtype, device = t:dtype(), t:device()
  local footer = ("[facet.Tensor %s %s %s]"):format(dtype, device, #shape == 0 and "scalar" or table.concat(shape, "x"))
  local n = t:numel()
  if n == 0 then return footer end
  local c = t:to("cpu"):contiguous()
  local is_float = dtype == "float32" or dtype == "float16" or dtype == "bfloat16"
  if is_float and dtype ~= "float32" then c = c:float() end   -- exact: 16-bit floats print as their values
  local p = c:data_ptr()
  local strides = c:stride()
  local integer_dtype = not is_float
  if #shape == 0 then
    local v = tonumber(p[0])
    return chooser({ v }, integer_dtype)(v) .. "\n" .. footer
  end
  local cut = n > M.options.threshold
  -- view everything as [outer..., rows, cols]
  local nd = #shape
  local rows_n = nd >= 2 and shape[nd - 1] or 1
  local cols_n = shape[nd]
  local rows, cols = shown(rows_n, cut), shown(cols_n, cut)
  local outer = {}
  for d = 1, nd - 2 do outer[d] = shown(shape[d], cut) end
  -- the outer index tuples shown, in order
  local tuples = { {} }
  for d = 1, nd - 2 do
    local next_t = {}
    for _, tup in ipairs(tuples) do
      for _, i in ipairs(outer[d]) do
        local nt = { unpack(tup) }
        nt[#nt + 1] = i
        next_t[#next_t + 1] = nt
      end
    end
    tuples = next_t
  end
  local function base_of(tup)
    local off = 0
    for d, i in ipairs(tup) do
      if i == false then return nil end
      off = off + (i - 1) * strides[d]
    end
    return off
  end
  local rs, cs = nd >= 2 and strides[nd - 1] or 0, strides[nd]
  local values = {}
  for _, tup in ipairs(tuples) do
    local b = base_of(tup)
    if b then
      for _, i in ipairs(rows) do
        if i then
          for _, j in ipairs(cols) do if j then values[#values + 1] = tonumber(p[b + (i - 1) * rs + (j - 1) * cs]) end end
        end
      end
    end
  end
  local fmt = chooser(values, integer_dtype)
  local width = 3
  for _, v in ipairs(values) do width = math.max(width, #fmt(v)) end
  local lines = {}
  for k, tup in ipairs(tuples) do
    local b = base_of(tup)
    if nd > 2 then
      if k > 1 then lines[#lines + 1] = "" end
      local label = {}
      for d, i in ipairs(tup) do label[d] = i == false and "..." or tostring(i) end
      lines[#lines + 1] = ("(%s,.,.) = "):format(table.concat(label, ","))
    end
    if b then
      local get = function(i, j) return tonumber(p[b + (i - 1) * rs + (j - 1) * cs]) end
      if nd == 1 then
        -- a vector prints as one column, as in Torch7
        render_matrix(function(i) return tonumber(p[(i - 1) * cs]) end, cols, { 1 }, fmt, lines, width, " ")
      else
        render_matrix(get, rows, cols, fmt, lines, width, " ")
      end
    else
      lines[#lines + 1] = " ..."
    end
  end
  lines[#lines + 1] = footer
  return table.concat(lines, "\n")
end

return M
