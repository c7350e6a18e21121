--- facet.repl: interactive LuaJIT prompt with `facet` loaded as a global.
-- Each input is first compiled as `return <input>` so expressions print their
-- values, else as a statement; an incomplete chunk (its error ends in '<eof>')
-- keeps reading continuation lines. Results print tab-separated: tables
-- pretty-printed (`{3, 4}`, `{lr = 0.1}`), anything with a __tostring (tensors)
-- through it. Errors print "error: <message>" and the loop goes on.
--
-- On a terminal: line editing, history across sessions (~/.facet_history, or
-- $FACET_HISTORY; FACET_HISTORY= turns it off) and tab completion of globals,
-- fields and methods, through libedit (facet.lineedit); help(obj) or ?obj
-- prints the documentation of a function or module (facet.help). On a pipe:
-- no prompt or banner, results printed either way. Ends on EOF or os.exit().
--
-- Every input is its own chunk, so `local x = 1` is gone by the next line
-- (standard Lua REPL behaviour): use globals (`x = 1`) at the prompt.
local sys = require "facet.sys"
local help = require "facet.help"

local M = {}

--- True when file descriptor fd (default 0, stdin) is a terminal.
M.isatty = sys.isatty

-- A load error that ends in '<eof>' means the chunk stopped early: read more.
local function incomplete(err)
  return err ~= nil and err:sub(-7) == "'<eof>'"
end

-- Passes results through; called as a non-tail call (see compile).
local function keep(...) return ... end

--- Compiles one input. Returns fn, or nil and "incomplete" and the error, or nil and the error.
function M.compile(src)
  -- Lua 5.1's lua.c convention: "=expr" means "return expr".
  if src:sub(1, 1) == "=" then src = "return " .. src:sub(2) end
  -- ESC starts both LuaJIT bytecode and a terminal's arrow keys (typed where
  -- there is no line editing): text only, with a word on what happened.
  if src:find("\27", 1, true) then
    return nil, "the input holds terminal escape codes (an arrow key without line editing?); " ..
      "nothing was run"
  end
  local fn, rerr = loadstring("return " .. src, "=stdin")
  if fn then
    -- `return f(x)` is a tail call, and LuaJIT tail-calls C functions too, so
    -- error("boom") would lose its "stdin:1:" position. Calling through `keep`
    -- (passed in as the chunk's `...`, so no name of the user's is shadowed)
    -- keeps the chunk's frame alive. Nothing is added before the input, so
    -- line numbers hold; the "\n)" form (after a trailing comment) is only a
    -- fallback because LuaJIT then blames the closing line for errors in the
    -- arguments.
    local wrapped = loadstring("return (...)(" .. src .. ")", "=stdin")
      or loadstring("return (...)(" .. src .. "\n)", "=stdin")
    if wrapped then return function() return wrapped(keep) end end
    return fn
  end
  -- A leading '#' would be skipped as a shebang line by loadstring: a space keeps it code.
  local sfn, serr = loadstring((src:sub(1, 1) == "#" and " " or "") .. src, "=stdin")
  if sfn then return sfn end
  -- "{1," is only incomplete as an expression, "for i=1,2 do" only as a statement.
  if incomplete(serr) or incomplete(rerr) then return nil, "incomplete", serr end
  return nil, serr
end

local function message(err)
  if type(err) == "string" or type(err) == "number" then return tostring(err) end
  local ok, s = pcall(tostring, err)
  return ok and s or ("(error object is a %s value)"):format(type(err))
end

-- Pretty-printing limits: nesting depth and entries per table.
M.PRETTY_DEPTH, M.PRETTY_ITEMS = 3, 40

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local pretty

-- A table: the array part as `{1, 2}`, other keys as `name = v` / `[k] = v`.
local function pretty_table(t, depth, seen, quote)
  if seen[t] then return "<cycle>" end
  if depth >= M.PRETTY_DEPTH then return "{...}" end
  seen[t] = true
  local parts, n = {}, #t
  local function add(s)
    if #parts < M.PRETTY_ITEMS then parts[#parts + 1] = s; return true end
    return false
  end
  local total = 0
  for i = 1, n do
    total = total + 1
    add(pretty(t[i], depth + 1, seen, true))
  end
  local keys = {}
  for k in pairs(t) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    total = total + 1
    local name = is_identifier(k) and k or "[" .. pretty(k, depth + 1, seen, true) .. "]"
    add(name .. " = " .. pretty(t[k], depth + 1, seen, true))
  end
  seen[t] = nil
  if total > #parts then parts[#parts + 1] = ("... (%d more)"):format(total - #parts) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

--- v as the REPL shows it: anything with a __tostring through it, tables
-- pretty-printed (nested to PRETTY_DEPTH, PRETTY_ITEMS entries each, cycles
-- marked), strings raw at the top level and quoted inside tables.
function pretty(v, depth, seen, quote)
  depth, seen = depth or 0, seen or {}
  local tv = type(v)
  if tv == "string" then return quote and ("%q"):format(v):gsub("\\\n", "\\n") or v end
  if tv == "table" then
    local mt = getmetatable(v)
    if not (type(mt) == "table" and mt.__tostring) then return pretty_table(v, depth, seen) end
  end
  return tostring(v)
end
M.pretty = function(v) return pretty(v) end

--- The line printed for a call's results: each pretty-printed, tab-separated.
function M.format(n, ...)
  local parts = {}
  for i = 1, n do
    local v = select(i, ...)
    local ok, s = pcall(pretty, v)
    if not ok then error(s, 0) end
    parts[i] = s
  end
  return table.concat(parts, "\t")
end

-- The keys that complete after "." or ":" on v: its own (tables) and its
-- classes' (__index tables, followed up the chain).
local function keys_of(v, methods_only)
  local out, seen = {}, {}
  local function take(t)
    for k, x in pairs(t) do
      if is_identifier(k) and not seen[k] and (not methods_only or type(x) == "function") then
        seen[k] = true
        out[#out + 1] = k
      end
    end
  end
  local t, hops = v, 0
  while t ~= nil and hops < 16 do
    if type(t) == "table" then take(t) end
    t = help.class_of(t)
    hops = hops + 1
  end
  return out
end

--- Tab completion: the candidates that replace `word`, a name or a dotted /
-- colon path of names ("facet.ten", "x:sh"). Only names are looked up:
-- nothing is called or evaluated. env defaults to the globals.
function M.complete(word, env)
  env = env or _G
  local head, sep, part = word:match("^(.*)([.:])([%w_]*)$")
  local base, keys
  if not head then
    if not word:match("^[%a_]?[%w_]*$") then return {} end
    part, base, keys = word, "", keys_of(env)
    for _, kw in ipairs { "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if",
                          "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until",
                          "while" } do keys[#keys + 1] = kw end
  else
    if not head:match("^[%a_][%w_]*$") and not head:match("^[%a_][%w_.]*[%w_]$") then return {} end
    local v = env
    for name in head:gmatch("[^.]+") do
      local ok, r = pcall(function() return v[name] end)
      if not ok or r == nil then return {} end
      v = r
    end
    base, keys = head .. sep, keys_of(v, sep == ":")
  end
  local out, dup = {}, {}
  for _, k in ipairs(keys) do
    if k:sub(1, #part) == part and not dup[k] then
      dup[k] = true
      out[#out + 1] = base .. k
    end
  end
  table.sort(out)
  return out
end

-- Where the history lives: $FACET_HISTORY (empty: none), else ~/.facet_history.
local function history_path()
  local p = os.getenv("FACET_HISTORY")
  if p then return p ~= "" and p or nil end
  local home = os.getenv("HOME")
  return home and home ~= "" and home .. "/.facet_history" or nil
end

M.USAGE = [[
facet REPL: type Lua; expressions print their value. Globals persist between lines
(`x = 1`), locals do not. help(obj) or ?obj shows the documentation of a function or
module (?facet.nn.Linear, ?facet.train); Tab completes names, fields and methods;
arrows recall the history; Ctrl-D quits.]]

--- Runs the loop until EOF. opts: input, output, errors (files; default stdin,
-- stdout, stderr), interactive (default: stdin is a terminal), lineedit
-- (default: on when interactive and input is stdin; false reads plain lines)
-- and history (the history file; default as history_path above).
function M.run(opts)
  opts = opts or {}
  local input, output, errors = opts.input or io.stdin, opts.output or io.stdout, opts.errors or io.stderr
  local interactive = opts.interactive
  if interactive == nil then interactive = M.isatty(0) end

  local facet = rawget(_G, "facet") or require "facet"
  rawset(_G, "facet", facet)
  -- help is the REPL's; a user's own global of that name wins
  if rawget(_G, "help") == nil then
    rawset(_G, "help", function(...)
      local text = select("#", ...) == 0 and M.USAGE or help.text((...))
      output:write(text, "\n")
    end)
  end

  local editor, why
  if interactive and opts.lineedit ~= false and input == io.stdin then
    local history = opts.history
    if history == nil then history = history_path() end
    editor, why = require("facet.lineedit").open { history = history or nil, complete = M.complete }
  end

  if interactive then
    -- blas_core loads OpenBLAS; a missing OpenBLAS should not stop the prompt.
    local ok, blas = pcall(facet.blas_core)
    output:write(("facet %s (%s, BLAS core %s); help() for help, Ctrl-D to quit\n")
      :format(facet.version, jit and jit.version or _VERSION, ok and blas or "unavailable"))
    if why then output:write("(no line editing: ", why, ")\n") end
  end

  local function read(p)
    if editor then
      output:flush()
      return editor:read(p)
    end
    if interactive then output:write(p); output:flush() end
    return input:read("*l")
  end
  local function report(err)
    output:flush() -- keep order when stdout and stderr share a pipe
    errors:write("error: ", message(err), "\n")
    errors:flush()
  end

  while true do
    local src = read("facet> ")
    if not src then break end
    -- ?expr is help(expr)
    local topic = src:match("^%s*%?(.*)$")
    if topic then src = topic:find("%S") and "help(" .. topic .. ")" or "help()" end
    local fn, why2, detail = M.compile(src)
    while why2 == "incomplete" do
      local more = read(">> ")
      if not more then -- EOF inside a chunk: report what it lacked, then stop
        report(detail)
        if interactive then output:write("\n") end
        if editor then editor:close() end
        return 0
      end
      src = src .. "\n" .. more
      fn, why2, detail = M.compile(src)
    end
    if not fn then
      report(why2)
    else
      local ok, n, line = M.run_chunk(fn)
      if not ok then
        report(n)
      elseif n > 0 then
        output:write(line, "\n")
      end
    end
    output:flush()
  end
  if interactive then output:write("\n") end
  if editor then editor:close() end
  return 0
end

-- Like 5.2's table.pack: keeps the count even when results end in nil.
local function pack(...) return { n = select("#", ...), ... } end

--- Calls fn; returns true, the number of results and their formatted line, or false and the error.
function M.run_chunk(fn)
  local r = pack(xpcall(fn, function(err) return err end))
  if not r[1] then return false, r[2] end
  local n = r.n - 1
  local ok, line = pcall(M.format, n, unpack(r, 2, r.n))
  if not ok then return false, line end
  return true, n, line
end

return M
