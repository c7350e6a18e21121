--- facet.check: validation of arguments and options, with one form of message:
--   "<function>: <argument> must be <what is expected>, got <what was given>"
-- e.g. "facet.eval.embed: batch_size must be an integer >= 1, got 0". Errors
-- are raised at the user's line (facet.core.raise), never inside facet.
--   check.number(fn, name, v, { min =, max =, gt =, lt =, integer = true, finite = true,
--                               optional = true, default = })        -> v (or the default)
--   check.integer(fn, name, v, spec)                                 -> number with integer = true
--   check.enum(fn, name, v, { "a", "b" } [, default])                -> v
--   check.boolean / string / table / func(fn, name, v [, default])   -> v
--   check.list(fn, name, v, spec)       a list of numbers (spec: number's, plus len, min_len,
--                                       max_len, increasing, optional, default)
--   check.tensor(fn, name, v [, { dim =, dtype = }])                 -> v
--   check.pair(fn, name, v, min)        an integer or {h, w} of integers >= min -> { h, w }
--   check.module(fn, name, v)           a facet.nn module (anything with :forward)
--   check.options(fn, opts, allowed)    opts (nil: {}) has only allowed names -> opts
--   check.loader_options(opts)          every option of facet.data.loader (see there)
--   check.flag(name, spec)              an argparse converter for a numeric command-line option
--   check.methods(cls, prefix, noun)    every method of a class checks its self (obj.m() for obj:m())
-- Finite is the default: NaN is never a valid number, and an infinity only
-- with finite = false. This module loads the C core only to raise an error,
-- so the command line's parser can use check.flag before facet loads.
local M = {}

local core_raise
local function raise(msg)
  core_raise = core_raise or require("facet.core").raise
  core_raise(msg, 2)                                    -- moves on to the first caller outside facet
end

local huge = math.huge

--- A short description of a value for a message: numbers as Lua prints them
-- (nan, inf), strings quoted and cut at 40 characters, other values by type.
function M.describe(v)
  local t = type(v)
  if t == "number" then
    if v ~= v then return "nan" end
    if v == huge then return "inf" end
    if v == -huge then return "-inf" end
    return tostring(v)
  elseif t == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return (("%q"):format(v):gsub("\\\n", "\\n"))
  elseif t == "nil" or t == "boolean" then
    return tostring(v)
  elseif t == "cdata" then
    local ok, tensor = pcall(require, "facet.tensor")
    if ok and tensor.is_tensor(v) then return "a tensor" end
    return "a cdata value"
  end
  return "a " .. t
end

local describe = M.describe

--- Raises "fn: text" at the user's line.
function M.fail(fn, text)
  raise(("%s: %s"):format(fn, text))
end

local function wrong(fn, name, expected, v)
  raise(("%s: %s must be %s, got %s"):format(fn, name, expected, describe(v)))
end

-- the range part of a number's spec: "in [0, 1)", ">= 1", "" ...
local function range_text(spec)
  local lo, lo_open = spec.min, false
  if spec.gt ~= nil then lo, lo_open = spec.gt, true end
  local hi, hi_open = spec.max, false
  if spec.lt ~= nil then hi, hi_open = spec.lt, true end
  if lo ~= nil and hi ~= nil then
    return (" in %s%s, %s%s"):format(lo_open and "(" or "[", describe(lo), describe(hi), hi_open and ")" or "]")
  elseif lo ~= nil then
    return (" %s %s"):format(lo_open and ">" or ">=", describe(lo))
  elseif hi ~= nil then
    return (" %s %s"):format(hi_open and "<" or "<=", describe(hi))
  end
  return ""
end

-- "an integer >= 1", "a number in [0, 1)", "a finite number" ... (plural: "integers >= 1")
local function expected_number(spec, plural)
  local range = range_text(spec)
  local kind = spec.integer and "integer" or "number"
  if range == "" and not spec.integer and spec.finite ~= false then kind = "finite number" end
  if plural then return kind .. "s" .. range end
  return (kind:match("^[aeiou]") and "an " or "a ") .. kind .. range
end
M.expected_number = expected_number

-- whether v is a number that spec accepts
local function number_ok(v, spec)
  if type(v) ~= "number" or v ~= v then return false end
  if spec.finite ~= false and (v == huge or v == -huge) then return false end
  if spec.integer and v ~= math.floor(v) then return false end
  return not ((spec.min ~= nil and v < spec.min) or (spec.max ~= nil and v > spec.max) or
    (spec.gt ~= nil and v <= spec.gt) or (spec.lt ~= nil and v >= spec.lt))
end

--- v checked against spec (see the module's header); returns v, or spec.default
-- when v is nil and spec has a default or is optional.
function M.number(fn, name, v, spec)
  spec = spec or {}
  if v == nil and (spec.optional or spec.default ~= nil) then return spec.default end
  if not number_ok(v, spec) then wrong(fn, name, expected_number(spec), v) end
  return v
end

function M.integer(fn, name, v, spec)
  local s = { integer = true }
  for k, x in pairs(spec or {}) do s[k] = x end
  return M.number(fn, name, v, s)
end

--- v must be one of choices (a list); nil gives default when one is given.
function M.enum(fn, name, v, choices, default)
  if v == nil and default ~= nil then return default end
  for _, c in ipairs(choices) do if v == c then return v end end
  local list = {}
  for i, c in ipairs(choices) do list[i] = type(c) == "string" and ('"' .. c .. '"') or tostring(c) end
  wrong(fn, name, "one of " .. table.concat(list, ", "), v)
end

local function typed(kind, article)
  return function(fn, name, v, default)
    if v == nil and default ~= nil then return default end
    if type(v) ~= kind then wrong(fn, name, article, v) end
    return v
  end
end
M.boolean = typed("boolean", "true or false")
M.string = typed("string", "a string")
M.table = typed("table", "a table")
M.func = typed("function", "a function")

--- A list of numbers: each element checked with spec's number rules; spec.len,
-- min_len, max_len bound its length; spec.increasing asks for strictly increasing values.
function M.list(fn, name, v, spec)
  spec = spec or {}
  if v == nil and (spec.optional or spec.default ~= nil) then return spec.default end
  local what = ("a list of %s%s"):format(spec.len and (spec.len .. " ") or "", expected_number(spec, true))
  if type(v) ~= "table" then wrong(fn, name, what, v) end
  local n = #v
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then
      M.fail(fn, ("%s must be %s, got a table with the key %s"):format(name, what, describe(k)))
    end
  end
  if (spec.len and n ~= spec.len) or (spec.min_len and n < spec.min_len) or (spec.max_len and n > spec.max_len) then
    M.fail(fn, ("%s must be %s, got %d element%s"):format(name, what, n, n == 1 and "" or "s"))
  end
  for i = 1, n do
    M.number(fn, ("%s[%d]"):format(name, i), v[i], spec)
    if spec.increasing and i > 1 and v[i] <= v[i - 1] then
      M.fail(fn, ("%s must increase, got %s after %s"):format(name, describe(v[i]), describe(v[i - 1])))
    end
  end
  return v
end

--- A facet tensor (optionally of spec.dim dims and spec.dtype); spec.optional allows nil.
--- A kernel, stride, padding ... : an integer or a pair {h, w} of integers
-- >= min (and < 2^31) -> a new { h, w }.
function M.pair(fn, name, v, min)
  if type(v) == "number" then v = { v, v } end
  if type(v) ~= "table" or #v ~= 2 then
    M.fail(fn, ("%s must be an integer or a pair of integers, got %s"):format(name, describe(v)))
  end
  for i = 1, 2 do M.integer(fn, ("%s[%d]"):format(name, i), v[i], { min = min, max = 2 ^ 31 - 1 }) end
  return { v[1], v[2] }
end

function M.tensor(fn, name, v, spec)
  spec = spec or {}
  if v == nil and spec.optional then return nil end
  local tensor = require "facet.tensor"
  local what = spec.dim and ("a %d-D tensor"):format(spec.dim) or "a tensor"
  if spec.dtype then what = what .. " of " .. spec.dtype end
  if not tensor.is_tensor(v) then wrong(fn, name, what, v) end
  if v:is_freed() then M.fail(fn, name .. " is a freed tensor") end
  if spec.dim and v:dim() ~= spec.dim then
    M.fail(fn, ("%s must be %s, got shape %s"):format(name, what, table.concat(v:shape(), "x")))
  end
  if spec.dtype and v:dtype() ~= spec.dtype then
    M.fail(fn, ("%s must be %s, got %s"):format(name, what, v:dtype()))
  end
  return v
end

--- A module: a table (or object) with a forward method.
function M.module(fn, name, v)
  local ok, f = pcall(function() return v.forward end)
  if type(v) ~= "table" or not ok or type(f) ~= "function" then
    wrong(fn, name, "a facet.nn module (a table with forward)", v)
  end
  return v
end

-- edit distance, for "did you mean" (short names only)
local function distance(a, b)
  if #a > 40 or #b > 40 then return huge end
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

--- opts (nil gives {}) must be a table whose keys are all in allowed (a list
-- or a set); an unknown name is an error listing the accepted ones. Returns opts.
function M.options(fn, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then wrong(fn, "the options", "a table", opts) end
  local set, list = {}, {}
  if allowed[1] ~= nil then
    for _, k in ipairs(allowed) do set[k] = true end
  else
    for k in pairs(allowed) do set[k] = true end
  end
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  for k in pairs(opts) do
    if not set[k] then
      local hint = ""
      if type(k) == "string" then
        local best, bd = nil, 3
        for _, a in ipairs(list) do
          local d = distance(k, a)
          if d < bd then best, bd = a, d end
        end
        if best then hint = (" (did you mean '%s'?)"):format(best) end
      end
      M.fail(fn, ("unknown option %s%s; it takes %s"):format(type(k) == "string" and ("'" .. k .. "'") or describe(k),
        hint, #list > 0 and table.concat(list, ", ") or "no options"))
    end
  end
  return opts
end

--- An argparse converter (option:convert(check.flag("--epochs", { integer = true, min = 1 })))
-- that reads a number and checks it with number's spec; a bad value is the
-- parser's error "--epochs must be an integer >= 1, got '0'".
function M.flag(name, spec)
  spec = spec or {}
  return function(text)
    local v = tonumber(text)
    if not number_ok(v, spec) then
      return nil, ("%s must be %s, got '%s'"):format(name, expected_number(spec), tostring(text))
    end
    return v
  end
end

-- ---- the loader's options ------------------------------------------------------
-- facet.data.loader's settings, checked before they reach the C core (which
-- would truncate a fraction or a NaN into its integer fields). The loader
-- calls check.loader_options(opts) first.

local LOADER = { "source", "size", "batch_size", "threads", "queue", "flip", "seed", "shuffle", "drop_last", "mean",
  "std", "crop_padding", "brightness", "contrast", "saturation", "grayscale" }

--- Checks facet.data.loader's options (names and values); returns opts.
function M.loader_options(opts)
  local fn = "facet.data.loader"
  if type(opts) ~= "table" then wrong(fn, "the options", "a table { source = ..., ... }", opts) end
  M.options(fn, opts, LOADER)
  M.table(fn, "source", opts.source)
  if opts.size ~= nil then M.list(fn, "size", opts.size, { len = 2, integer = true, min = 1, max = 4096 }) end
  M.integer(fn, "batch_size", opts.batch_size, { min = 1, max = 2 ^ 31 - 1, optional = true })
  M.integer(fn, "threads", opts.threads, { min = 1, max = 4096, optional = true })
  M.integer(fn, "queue", opts.queue, { min = 1, max = 4096, optional = true })
  for _, k in ipairs { "flip", "grayscale" } do
    M.number(fn, k, opts[k], { min = 0, max = 1, optional = true })
  end
  for _, k in ipairs { "brightness", "contrast", "saturation" } do
    M.number(fn, k, opts[k], { min = 0, max = 1, optional = true })
  end
  M.integer(fn, "crop_padding", opts.crop_padding, { min = 0, max = 4096, optional = true })
  if type(opts.seed) ~= "cdata" then
    M.integer(fn, "seed", opts.seed, { min = 0, max = 2 ^ 53, optional = true })
  end
  M.boolean(fn, "shuffle", opts.shuffle, true)
  M.boolean(fn, "drop_last", opts.drop_last, true)
  for _, k in ipairs { "mean", "std" } do
    local v = opts[k]
    local spec = k == "std" and { gt = 0 } or {}
    if type(v) == "table" then
      spec.len = 3
      M.list(fn, k, v, spec)
    elseif v ~= nil then
      if type(v) ~= "number" then wrong(fn, k, "a number or a list of 3 numbers", v) end
      M.number(fn, k, v, spec)
    end
  end
  return opts
end

-- whether v is cls, an instance of it or of a subclass: the chain of
-- metatables' __index tables, as the classes of facet build it
local function is_a(v, cls)
  local c = v
  for _ = 1, 32 do
    if c == cls then return true end
    if type(c) ~= "table" then return false end
    local mt = getmetatable(c)
    local up = mt and rawget(mt, "__index")
    if type(up) ~= "table" or up == c then
      -- an instance's metatable is its class (class.__index = class)
      if mt == cls then return true end
      if type(mt) ~= "table" or mt == c then return false end
      c = mt
    else
      c = up
    end
  end
  return false
end

local wrapped = setmetatable({}, { __mode = "k" })   -- the wrapper -> the method it wraps

--- The method a wrapper of check.methods calls (f itself when it is none),
-- for code that reads a function's source (facet.help).
function M.unwrap(f)
  return wrapped[f] or f
end

--- Makes every method of the class table cls (each function field whose
-- first parameter is named self, metamethods aside) check that it was called
-- on an instance: `obj.method(x)` for `obj:method(x)`, or a method called with
-- another object, raises "<prefix>:method: call it with ':' on <noun>; self
-- is <what it was>" (check.methods(Loader, "loader", "a loader")) at the
-- user's line, instead of a bare "attempt to index" inside facet. Fields
-- added to cls later are not wrapped; instances are tables whose metatable
-- chain (class.__index = class, subclasses' metatables' __index = parent)
-- reaches cls.
function M.methods(cls, prefix, noun)
  for k, f in pairs(cls) do
    if type(k) == "string" and k:sub(1, 2) ~= "__" and type(f) == "function" and not wrapped[f]
        and debug.getlocal(f, 1) == "self" then
      local function method(self, ...)
        if not is_a(self, cls) then
          local got = type(self) == "table" and rawget(getmetatable(self) or {}, "__name")
          raise(("%s:%s: call it with ':' on %s; self is %s"):format(prefix, k, noun,
            got and ("a " .. got) or describe(self)))
        end
        return f(self, ...)
      end
      wrapped[method] = f
      cls[k] = method
    end
  end
  return cls
end

return M
