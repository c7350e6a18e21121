--- facet.repl: interactive LuaJIT prompt with `facet` loaded as a global.
-- Each input is first compiled as `return <input>` so expressions print their
-- values, else as a statement; an incomplete chunk (its error ends in '<eof>')
-- keeps reading continuation lines. Results print with tostring (tensors via
-- their __tostring), tab-separated; errors print "error: <message>" and the
-- loop goes on. Works on a pipe too: prompts and the banner appear only when
-- stdin is a terminal, results are printed either way. Ends on EOF or os.exit().
--
-- Every input is its own chunk, so `local x = 1` is gone by the next line
-- (standard Lua REPL behaviour): use globals (`x = 1`) at the prompt.
local sys = require "facet.sys"

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
  local fn, rerr = loadstring("return " .. src, "=stdin")
  if fn then
    -- `return f(x)` is a tail call, and LuaJIT tail-calls C functions too, so
    -- error("boom") would lose its "stdin:1:" position. Calling through `keep`
    -- keeps the chunk's frame alive. Nothing is added before the input, so line
    -- numbers hold; the "\n)" form (after a trailing comment) is only a fallback
    -- because LuaJIT then blames the closing line for errors in the arguments.
    local wrapped = loadstring("local keep = ... return keep(" .. src .. ")", "=stdin")
      or loadstring("local keep = ... return keep(" .. src .. "\n)", "=stdin")
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

--- The line printed for a call's results: tostring of each, tab-separated.
function M.format(n, ...)
  local parts = {}
  for i = 1, n do
    local v = select(i, ...)
    local ok, s = pcall(tostring, v)
    if not ok then error(s, 0) end
    parts[i] = s
  end
  return table.concat(parts, "\t")
end

--- Runs the loop until EOF. opts: input, output, errors (files; default stdin,
-- stdout, stderr) and interactive (default: stdin is a terminal).
function M.run(opts)
  opts = opts or {}
  local input, output, errors = opts.input or io.stdin, opts.output or io.stdout, opts.errors or io.stderr
  local interactive = opts.interactive
  if interactive == nil then interactive = M.isatty(0) end

  local facet = rawget(_G, "facet") or require "facet"
  rawset(_G, "facet", facet)

  if interactive then
    -- blas_core loads OpenBLAS; a missing OpenBLAS should not stop the prompt.
    local ok, blas = pcall(facet.blas_core)
    output:write(("facet %s (%s, BLAS core %s); Ctrl-D to quit\n")
      :format(facet.version, jit and jit.version or _VERSION, ok and blas or "unavailable"))
  end

  local function prompt(p)
    if interactive then output:write(p); output:flush() end
  end
  local function report(err)
    output:flush() -- keep order when stdout and stderr share a pipe
    errors:write("error: ", message(err), "\n")
    errors:flush()
  end

  while true do
    prompt("facet> ")
    local src = input:read("*l")
    if not src then break end
    local fn, why, detail = M.compile(src)
    while why == "incomplete" do
      prompt(">> ")
      local more = input:read("*l")
      if not more then -- EOF inside a chunk: report what it lacked, then stop
        report(detail)
        if interactive then output:write("\n") end
        return 0
      end
      src = src .. "\n" .. more
      fn, why, detail = M.compile(src)
    end
    if not fn then
      report(why)
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
