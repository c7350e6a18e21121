--- support/files.lua: the file helpers every spec shares (one copy, not one
-- per spec): whole-file binary reads and writes, an existence test, fresh
-- temporary directories, and a shell command's output and exit status. It
-- needs nothing from facet, so the specs of the command line use it too.
local F = {}

--- The Python the reference scripts run under: $FACET_PYTHON, else Debian's
-- /usr/bin/python3 (torch, NumPy, onnx); F.PY runs it without the sanitizer
-- runtimes that `make sanitize` preloads for luajit.
F.PYTHON = os.getenv("FACET_PYTHON") or "/usr/bin/python3"
F.PY = "env -u LD_PRELOAD " .. F.PYTHON

--- The whole file, as bytes (an error when it cannot be opened).
function F.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

--- Writes s to path, replacing what was there.
function F.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

--- Whether path can be opened for reading (a file or a directory).
function F.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- A fresh temporary directory under /tmp.
function F.temp_dir()
  local p = io.popen("mktemp -d /tmp/facet-spec.XXXXXXXX")
  local d = p:read("*l")
  p:close()
  assert(d and d:match("^/tmp/"), "mktemp -d failed")
  return d
end

--- Removes a directory made by temp_dir, with everything in it (only ever under /tmp).
function F.remove_dir(d)
  if d and d:match("^/tmp/") then os.execute("rm -rf '" .. d .. "'") end
end

--- Runs a shell command; returns its output (stdout and stderr together) and
-- its exit status.
function F.sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return (out:gsub("rc=%d+%s*$", "")), rc
end

--- A temporary directory for the enclosing describe block (or the whole spec
-- file, at its top level): made in setup, removed in teardown. Returns
-- path(name) -> dir/name; path() is the directory itself.
function F.scratch()
  -- busted's setup/teardown live in the spec file's environment, not in _G
  local env = getfenv(2)
  local dir
  env.setup(function() dir = F.temp_dir() end)
  env.teardown(function() F.remove_dir(dir) end)
  return function(name)
    if name == nil then return dir end
    return dir .. "/" .. name
  end
end

return F
