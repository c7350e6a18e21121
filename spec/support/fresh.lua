--- support/fresh.lua: runs Lua code in a fresh `luajit -e` process against this
-- checkout's build ($FACET_BUILD), so a case that could crash (SIGSEGV, an
-- abort, a sanitizer report, an endless loop) takes down only its own process.
-- The code runs after a prelude (below) that loads facet. Under `make sanitize` the child inherits
-- LD_PRELOAD and the sanitizer options, so it runs instrumented too.
local Fresh = {}

local build = os.getenv("FACET_BUILD") or "build"
Fresh.timeout = 120     -- seconds: an endless loop fails the case, not the run

-- what every case's code can use: facet, ffi, the C library and its error
-- check, wrap (a C handle into a tensor), DEV (FACET_DEVICE or "cpu"), an
-- out-pointer for C views, and show(t), which prints "VALUES v1 v2 ..."
local PRELUDE = table.concat({
  'local facet = require "facet"; local ffi = require "ffi"; local core = require "facet.core";',
  'local C, check, wrap = core.C, core.check, require("facet.tensor").wrap;',
  'local DEV = os.getenv("FACET_DEVICE") or "cpu"; local outp = ffi.new("facet_tensor *[1]");',
  'local function show(t) local c = t:to("cpu"):contiguous(); local p, r = c:data_ptr(), {};',
  'for i = 0, c:numel() - 1 do r[#r + 1] = tostring(tonumber(p[i])) end;',
  'io.write("VALUES ", table.concat(r, " "), "\\n") end; ',
}, " ")

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Output (stdout and stderr) and exit status of `code` in a fresh process.
-- env: extra "NAME=value" words for the command line.
function Fresh.run(code, env)
  local cmd = ("%s LUA_PATH='./lua/?.lua;./lua/?/init.lua;./%s/lua/?.lua;./spec/?.lua;;' LUA_CPATH='./%s/?.so;;' " ..
    "timeout %d luajit -e %s 2>&1; echo \"rc=$?\""):format(env or "", build, build, Fresh.timeout,
    shell_quote(PRELUDE .. code))
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return (out:gsub("rc=%d+%s*$", "")), rc
end

-- what a process that did not end with a clean Lua error leaves behind
local CRASH = { "AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation fault", "Aborted", "core dumped",
  "stack overflow", "PANIC" }

local function no_crash(out, rc, code)
  for _, s in ipairs(CRASH) do
    if out:find(s, 1, true) then error(("%q crashed (%s):\n%s"):format(code, s, out), 3) end
  end
  if rc == 124 then error(("%q did not finish in %d s:\n%s"):format(code, Fresh.timeout, out), 3) end
end

--- `code` ends with a clean Lua error (luajit's "luajit: ..." report and exit
-- status 1) whose message holds every string given; returns the output.
function Fresh.assert_error(code, ...)
  local out, rc = Fresh.run(code)
  no_crash(out, rc, code)
  if rc ~= 1 or not out:find("luajit: ", 1, true) then
    error(("%q: expected a Lua error and exit status 1, got status %s:\n%s"):format(code, tostring(rc), out), 2)
  end
  local first = out:match("luajit: ([^\n]*)") or out
  for _, s in ipairs { ... } do
    if not first:find(s, 1, true) then error(("%q: the error %q lacks %q"):format(code, first, s), 2) end
  end
  return first
end

--- `code` runs to the end with exit status 0; returns its output.
function Fresh.assert_ok(code, env)
  local out, rc = Fresh.run(code, env)
  no_crash(out, rc, code)
  if rc ~= 0 then error(("%q: expected exit status 0, got %s:\n%s"):format(code, tostring(rc), out), 2) end
  return out
end

--- The values `code` printed with show(t), one array of numbers per call.
function Fresh.values(code, env)
  local out = Fresh.assert_ok(code, env)
  local all = {}
  for line in out:gmatch("VALUES ([^\n]*)") do
    local r = {}
    for w in line:gmatch("%S+") do r[#r + 1] = tonumber(w) end
    all[#all + 1] = r
  end
  if #all == 0 then error(("%q printed no values:\n%s"):format(code, out), 2) end
  return all
end

return Fresh
