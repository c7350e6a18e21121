--- Specs for bin/facet (facet.cli and facet.repl), run as a real subprocess:
-- input goes through a temp file redirected into stdin, so the REPL sees a pipe
-- (non-tty) exactly as in `echo '1+2' | facet`. Run from the checkout root:
--   busted --lua=luajit spec/cli_spec.lua

local F = require "support.files"

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

-- The checkout root, from this spec's own path (relative to the current directory).
local function checkout_root()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = dirname(dirname(src))
  if dir:sub(1, 1) ~= "/" then
    local p = io.popen("cd " .. shell_quote(dir) .. " && pwd")
    dir = p:read("*l")
    p:close()
  end
  return dir
end

local ROOT = checkout_root()
local BIN = ROOT .. "/bin/facet"
-- Commands run from a fresh temporary directory, so every test also checks that
-- bin/facet finds its checkout from elsewhere.
local tmp = F.scratch()

--- Runs `bin/facet <args>` with `input` on stdin. Returns stdout, stderr, exit status.
local function facet(args, input, bin)
  local inp, err = tmp("stdin"), tmp("stderr")
  F.write_file(inp, input or "")
  local cmd = ("cd %s && %s %s < %s 2> %s; echo \"rc=$?\""):format(
    shell_quote(tmp()), shell_quote(bin or BIN), args or "", shell_quote(inp), shell_quote(err))
  local p = io.popen(cmd, "r")
  local out = p:read("*a")
  p:close()
  local stderr = F.read_file(err)
  os.remove(inp)
  os.remove(err)
  local body, rc = out:match("^(.-)rc=(%d+)\n$")
  assert(body, "no exit status in output: " .. out)
  return body, stderr, tonumber(rc)
end

--- Writes a script to a temp file named *.lua; returns its path (caller removes it).
local scripts = 0
local function script(text)
  scripts = scripts + 1
  local path = tmp(("script%d.lua"):format(scripts))
  F.write_file(path, text)
  return path
end

describe("facet REPL on a pipe", function()
  it("prints the value of an expression", function()
    local out, err, rc = facet("", "1+2\n")
    assert.are.equal("3\n", out)
    assert.are.equal("", err)
    assert.are.equal(0, rc)
  end)

  it("keeps globals between lines and prints tensor results", function()
    local out, _, rc = facet("", "x = facet.tensor{{1,2},{3,4}}\nx:sum()\n")
    assert.are.equal("10\n", out) -- the assignment prints nothing
    assert.are.equal(0, rc)
  end)

  it("prints tensors through their __tostring", function()
    local out = facet("", "facet.tensor{{1,2},{3,4}}\n")
    assert.truthy(out:find("facet.Tensor", 1, true), out)
  end)

  it("reads a multi-line function definition, then calls it", function()
    local out, err = facet("", "function double(a)\n  local b = a * 2\n  return b\nend\ndouble(21)\n")
    assert.are.equal("42\n", out)
    assert.are.equal("", err)
  end)

  it("continues an incomplete expression on the next line", function()
    local out = facet("", "#{1,\n2, 3}\n")
    assert.are.equal("3\n", out)
  end)

  it("prints several values tab-separated, nil included", function()
    local out = facet("", "1, nil, 'a'\nnil\n")
    assert.are.equal("1\tnil\ta\nnil\n", out)
  end)

  it("reports an error and goes on with the next lines", function()
    local out, err, rc = facet("", "error('boom')\nnosuch.field\n40+2\n")
    assert.are.equal("42\n", out)
    assert.truthy(err:find("error: stdin:1: boom", 1, true), err)
    assert.truthy(err:find("error: stdin:1: attempt to index global 'nosuch'", 1, true), err)
    assert.are.equal(0, rc)
  end)

  it("reports a syntax error", function()
    local out, err = facet("", "x = = 1\n7\n")
    assert.are.equal("7\n", out)
    assert.truthy(err:find("^error: stdin:1:"), err)
  end)

  it("reports a chunk left incomplete at end of input", function()
    local out, err, rc = facet("", "function f()\n")
    assert.are.equal("", out)
    assert.truthy(err:find("error: ", 1, true) and err:find("<eof>", 1, true), err)
    assert.are.equal(0, rc)
  end)

  it("shows no prompt or banner when stdin is not a terminal", function()
    local out, err = facet("", "function f()\nreturn 5\nend\nf()\n")
    assert.are.equal("5\n", out)
    assert.are.equal("", err)
    assert.falsy(out:find("facet>", 1, true))
    assert.falsy(out:find(">>", 1, true))
  end)

  it("stops at os.exit()", function()
    local out, _, rc = facet("", "1\nos.exit(3)\n2\n")
    assert.are.equal("1\n", out)
    assert.are.equal(3, rc)
  end)
end)

describe("facet run", function()
  it("passes arguments, '-' ones included, and provides the global facet", function()
    local path = script([[
print(arg[1], arg[2], #arg, select("#", ...))
print(arg[-1], arg[0])
print(type(facet), facet == require("facet"), facet.version)
print(facet.tensor{1, 2, 3}:sum())
]])
    local out, err, rc = facet("run " .. shell_quote(path) .. " a -b")
    os.remove(path)
    assert.are.equal("", err)
    assert.are.equal(0, rc)
    local lines = {}
    for l in out:gmatch("[^\n]*") do if l ~= "" then lines[#lines + 1] = l end end
    assert.are.equal("a\t-b\t2\t2", lines[1])
    local minus1, zero = lines[2]:match("^(.-)\t(.*)$")
    assert.are.equal("run", minus1)
    assert.are.equal(path, zero:sub(-#path))
    assert.truthy(lines[3]:find("^table\ttrue\t"), lines[3])
    assert.are.equal("6", lines[4])
  end)

  it("exits 1 with the message and a traceback on stderr when the script fails", function()
    local path = script("print('before')\nlocal function inner() error('kaput') end\ninner()\n")
    local out, err, rc = facet("run " .. shell_quote(path))
    os.remove(path)
    assert.are.equal("before\n", out)
    assert.are.equal(1, rc)
    assert.truthy(err:find("kaput", 1, true), err)
    assert.truthy(err:find("stack traceback", 1, true), err)
    assert.truthy(err:find("in function 'inner'", 1, true), err)
  end)

  it("exits 1 with a clear message for a missing file", function()
    local out, err, rc = facet("run does-not-exist-facet.lua")
    assert.are.equal("", out)
    assert.are.equal(1, rc)
    assert.truthy(err:find("cannot open script 'does-not-exist-facet.lua'", 1, true), err)
  end)

  it("exits 1 on a syntax error in the script", function()
    local path = script("x = = 1\n")
    local _, err, rc = facet("run " .. shell_quote(path))
    os.remove(path)
    assert.are.equal(1, rc)
    assert.truthy(err:find(":1:", 1, true), err)
  end)

  it("works through a symlink to bin/facet", function()
    local link = tmp("facet-link")
    assert(os.execute("ln -s " .. shell_quote(BIN) .. " " .. shell_quote(link)) == 0)
    local out, err, rc = facet("", "facet.version\n", link)
    os.remove(link)
    assert.are.equal("", err)
    assert.are.equal(0, rc)
    assert.truthy(out:find("^%d+%.%d+"), out)
  end)
end)

describe("facet command line", function()
  it("--version prints the library's version", function()
    -- the same build bin/facet picks (FACET_BUILD, as .busted and the Makefile use it)
    local build = os.getenv("FACET_BUILD") or "build"
    if build:sub(1, 1) ~= "/" then build = ROOT .. "/" .. build end
    package.path = ("%s/lua/?.lua;%s/lua/?/init.lua;%s/lua/?.lua;"):format(ROOT, ROOT, build) .. package.path
    package.cpath = build .. "/?.so;" .. package.cpath
    local f = require("facet")
    local out, _, rc = facet("--version")
    assert.are.equal(0, rc)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("facet " .. f.version, lines[1])
    -- the checkout's commit, as git itself names it
    local p = io.popen("git -C '" .. ROOT .. "' rev-parse HEAD 2>/dev/null")
    local head = p:read("*l")
    p:close()
    if head then assert.truthy(out:find("\ncommit: " .. head .. "\n", 1, true), out) end
    assert.truthy(out:find("\nCUDA: " .. (f.cuda.built() and "built in" or "not built in"), 1, true), out)
    assert.truthy(out:find("\nBLAS: OpenBLAS, core " .. f.blas_core() .. "\n", 1, true), out)
    assert.truthy(out:find("\nthreads: " .. f.get_threads() .. "\n", 1, true), out)
    local model = F.read_file("/proc/cpuinfo"):match("model name%s*:%s*([^\n]+)")
    if model then assert.truthy(out:find("\ncpu: " .. model .. ", ", 1, true), out) end
  end)

  it("a script given without `run` gets a hint to use run", function()
    local _, err, rc = facet("myscript.lua a b")
    assert.are.equal(2, rc)
    assert.truthy(err:find("To run a script: facet run myscript.lua ...", 1, true), err)
    local _, err2 = facet("frobnicate")
    assert.falsy(err2:find("To run a script", 1, true), err2)
  end)

  it("--help and help list the commands", function()
    for _, args in ipairs { "--help", "help" } do
      local out, _, rc = facet(args)
      assert.are.equal(0, rc)
      assert.truthy(out:find("Usage: facet", 1, true), out)
      assert.truthy(out:find("\n%s+run%s"), out)
      assert.truthy(out:find("\n%s+repl%s"), out)
    end
  end)

  it("an unknown command exits 2 with usage on stderr", function()
    local out, err, rc = facet("frobnicate")
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.truthy(err:find("Usage: facet", 1, true), err)
    assert.truthy(err:find("frobnicate", 1, true), err)
  end)

  it("run without a script is a usage error", function()
    local _, err, rc = facet("run")
    assert.are.equal(2, rc)
    assert.truthy(err:find("script", 1, true), err)
  end)
end)
