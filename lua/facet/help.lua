--- facet.help: the documentation of a function, module or object, read from
-- facet's own sources: the `--` comment block right above a function's
-- definition, and the block that opens a module's file (every facet file
-- opens with one). The REPL's help(obj) and ?obj print it.
--   print(require("facet.help").text(facet.tensor))
local M = {}

local function read_lines(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local lines = {}
  for l in f:lines() do lines[#lines + 1] = l end
  f:close()
  return lines
end

-- "--- text" / "-- text" / "--" -> "text"; nil for a line that is no comment.
local function comment(line)
  local body = line:match("^%s*%-%-+%s?(.*)$")
  if body and line:match("^%s*%-%-%[") then return nil end   -- a block comment opener
  return body
end

local function source_of(fn)
  fn = require("facet.check").unwrap(fn)   -- a method behind its self check: its own source
  local info = debug.getinfo(fn, "S")
  if info.what ~= "Lua" or info.source:sub(1, 1) ~= "@" then return nil, info end
  return info.source:sub(2), info
end

--- The comment block above fn's definition, with the definition line first
-- (nil when fn is a built-in or has no comment).
function M.function_doc(fn)
  local path, info = source_of(fn)
  if not path then return nil end
  local lines = read_lines(path)
  if not lines or not lines[info.linedefined] then return nil end
  local block = {}
  for i = info.linedefined - 1, 1, -1 do
    local c = comment(lines[i])
    if not c then break end
    table.insert(block, 1, c)
  end
  local head = lines[info.linedefined]:match("^%s*(.-)%s*$")
  if #block > 0 then return head .. "\n" .. table.concat(block, "\n") end
  -- a module's main function (facet.train) is documented by the file's opening block
  local doc = M.file_doc(path)
  if doc then return head .. "\n(no comment above it; its file, " .. path:match("[^/]*$") .. ", opens with:)\n" .. doc end
  return head
end

--- The comment block that opens the file at path.
function M.file_doc(path)
  local lines = read_lines(path)
  if not lines then return nil end
  local block = {}
  for i = 1, #lines do
    local c = comment(lines[i])
    if not c then break end
    block[#block + 1] = c
  end
  return #block > 0 and table.concat(block, "\n") or nil
end

-- The file most of t's Lua functions come from: the module's own file.
local function home_of(t)
  local votes, best, most = {}, nil, 0
  for _, v in pairs(t) do
    if type(v) == "function" then
      local path = source_of(v)
      if path then
        votes[path] = (votes[path] or 0) + 1
        if votes[path] > most then best, most = path, votes[path] end
      end
    end
  end
  return best
end

local function field_list(t)
  local fns, others = {}, {}
  for k, v in pairs(t) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" then
      if type(v) == "function" then fns[#fns + 1] = k else others[#others + 1] = k end
    end
  end
  table.sort(fns)
  table.sort(others)
  local out = {}
  if #fns > 0 then out[#out + 1] = "functions: " .. table.concat(fns, ", ") end
  if #others > 0 then out[#out + 1] = "fields: " .. table.concat(others, ", ") end
  return table.concat(out, "\n")
end

-- A dotted name ("facet.nn.Linear") looked up from the globals.
local function resolve(name)
  local v = _G
  for part in name:gmatch("[^.:]+") do
    local ok, r = pcall(function() return v[part] end)
    if not ok or r == nil then return nil end
    v = r
  end
  return v
end

--- The table of methods behind v: its metatable's __index when that is a
-- table, facet.tensor's methods for a tensor (whose __index is a function), or nil.
function M.class_of(v)
  if type(v) == "cdata" then
    local ok, tensor = pcall(require, "facet.tensor")
    if ok and require("ffi").istype(tensor.ctype, v) then return tensor.Tensor end
    return nil
  end
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__index) == "table" then return mt.__index end
  return nil
end

--- The documentation of v as text: a function's comment block, a module's
-- file docstring and its functions, an object's class (its metatable's
-- __index), or a string naming one of those ("facet.train").
function M.text(v)
  if type(v) == "string" then
    local r = resolve(v)
    if r == nil then return ("help: no global named '%s'"):format(v) end
    v = r
  end
  if type(v) == "function" then
    local doc = M.function_doc(v)
    if doc then return doc end
    local path, info = source_of(v)
    if not path then return "a built-in function (no facet documentation)" end
    return ("no documentation above its definition (%s:%d)"):format(path, info.linedefined)
  end
  local t = v
  if type(v) ~= "table" then
    t = M.class_of(v)
    if not t then return ("a %s value: %s"):format(type(v), tostring(v)) end
  end
  local parts = {}
  local home = home_of(t)
  local doc = home and M.file_doc(home)
  if doc then parts[#parts + 1] = doc end
  local fields = field_list(t)
  if fields ~= "" then parts[#parts + 1] = fields end
  if #parts == 0 then return "a table with no documentation" end
  return table.concat(parts, "\n\n")
end

return M
