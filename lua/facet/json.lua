--- facet.json: JSON through lua-cjson, with numbers that read back exactly.
--   json.encode(value) -> text     json.decode(text) -> value (cjson.decode)
-- cjson lays out the objects and arrays and escapes the strings. A double
-- needs 17 significant digits to round-trip, and lua-cjson's
-- encode_number_precision stops below that (14 in Debian's 2.1.0, 16 in later
-- releases), so a number that cjson's 14 digits would round goes in as a
-- placeholder and comes out written with %.17g; NaN and the infinities become
-- null. Training logs (train.jsonl) and trainer.json are written this way.
local cjson = require "cjson"

local M = { decode = cjson.decode, null = cjson.null }

local huge = math.huge
local MARK = "\1"                   -- cjson writes it as \u0001
local PLACEHOLDER = '"\\u0001(%d+)\\u0001"'

-- a copy of v in which what cjson cannot write exactly is a placeholder; raw[i] is its text
local function prepare(v, raw)
  local t = type(v)
  if t == "number" then
    if v ~= v or v == huge or v == -huge then return cjson.null end
    if tonumber(("%.14g"):format(v)) == v then return v end
    raw[#raw + 1] = ("%.17g"):format(v)
  elseif t == "string" then
    if not v:find(MARK, 1, true) then return v end
    raw[#raw + 1] = cjson.encode(v)  -- a string that could pass for a placeholder goes in as one
  elseif t == "table" then
    local out = {}
    for k, x in pairs(v) do out[type(k) == "string" and prepare(k, raw) or k] = prepare(x, raw) end
    return out
  else
    return v
  end
  return MARK .. #raw .. MARK
end

--- v (tables, strings, numbers, booleans, json.null) as JSON text on one line.
function M.encode(v)
  local raw = {}
  local text = cjson.encode(prepare(v, raw))
  if #raw == 0 then return text end
  return (text:gsub(PLACEHOLDER, function(i) return raw[tonumber(i)] end))
end

return M
