--- Specs for the REPL's own parts (facet.repl, facet.help, facet.lineedit):
-- pretty-printing, tab completion, help texts, the input compiler's fixes, and
-- a real session in a pseudo-terminal (spec/support/pty_session.py) for line
-- editing, history across sessions and completion. spec/cli_spec.lua covers
-- the REPL on a pipe.
local F = require "support.files"
local facet = require "facet"
local repl = require "facet.repl"
local help = require "facet.help"

local function sorted_has(list, want)
  for _, v in ipairs(list) do if v == want then return true end end
  return false
end

describe("facet.repl pretty-printing", function()
  it("prints an array as {a, b} and a shape as {3, 4}", function()
    assert.are.equal("{3, 4}", repl.pretty({ 3, 4 }))
    assert.are.equal("{3, 4}", repl.pretty(facet.zeros({ 3, 4 }):shape()))
    assert.are.equal("{}", repl.pretty({}))
  end)

  it("prints keys sorted, identifiers bare and others bracketed, strings quoted inside", function()
    assert.are.equal('{1, "two", [5] = true, a = 0.5, ["b c"] = "x\\ny"}',
      repl.pretty({ 1, "two", a = 0.5, ["b c"] = "x\ny", [5] = true }))
  end)

  it("prints strings raw at the top level and nested tables to a bounded depth", function()
    assert.are.equal("plain text", repl.pretty("plain text"))
    assert.are.equal("{1, {2, {3, {...}}}}", repl.pretty({ 1, { 2, { 3, { 4 } } } }))
  end)

  it("marks cycles and shortens long tables", function()
    local t = { name = "t" }
    t.self = t
    assert.are.equal('{name = "t", self = <cycle>}', repl.pretty(t))
    local long = {}
    for i = 1, 100 do long[i] = i end
    local s = repl.pretty(long)
    assert.truthy(s:find("^{1, 2, 3, "), s)
    assert.truthy(s:find(", 40, %.%.%. %(60 more%)}$"), s)
  end)

  it("uses __tostring where a table has one, and a tensor's own printing", function()
    local obj = setmetatable({}, { __tostring = function() return "<obj>" end })
    assert.are.equal("<obj>", repl.pretty(obj))
    local x = facet.tensor({ 1, 2 })
    assert.are.equal(tostring(x), repl.pretty(x))
    assert.are.equal(tostring(x), repl.format(1, x))
    assert.are.equal("{2}\t7\tnil", repl.format(3, { 2 }, 7, nil))
  end)
end)

describe("facet.repl tab completion", function()
  local env = { alpha = 1, alps = 2, beta = { gamma = 1, gone = 2, _hidden = 3 } }
  env.obj = setmetatable({ field = 1 }, { __index = { method = function() end, value = 3 } })

  it("completes globals and keywords", function()
    assert.are.same({ "alpha", "alps" }, repl.complete("al", env))
    assert.are.same({ "function" }, repl.complete("func", env))
  end)

  it("completes fields of a table, through dotted paths", function()
    assert.are.same({ "beta.gamma", "beta.gone" }, repl.complete("beta.g", env))
    assert.are.same({}, repl.complete("beta.zz", env))
    assert.are.same({}, repl.complete("nothere.x", env))
  end)

  it("completes methods after ':' from the object's class, fields after '.'", function()
    assert.are.same({ "obj:method" }, repl.complete("obj:", env))
    assert.are.same({ "obj.field", "obj.method", "obj.value" }, repl.complete("obj.", env))
  end)

  it("completes a tensor's methods and facet's modules", function()
    local g = setmetatable({ x = facet.zeros({ 2 }), facet = facet }, { __index = _G })
    local m = repl.complete("x:sh", g)
    assert.truthy(sorted_has(m, "x:shape"), table.concat(m, " "))
    assert.truthy(sorted_has(repl.complete("facet.ten", g), "facet.tensor"))
    assert.truthy(sorted_has(repl.complete("facet.nn.Lin", g), "facet.nn.Linear"))
  end)

  it("evaluates nothing: calls and operators give no candidates", function()
    local called = false
    local e = { f = function() called = true; return { a = 1 } end }
    assert.are.same({}, repl.complete("f().a", e))
    assert.are.same({}, repl.complete("a+b.c", e))
    assert.is_false(called)
  end)
end)

describe("facet.help", function()
  it("shows the comment block above a function, its definition line first", function()
    local t = help.text(repl.compile)
    assert.truthy(t:find("^function M%.compile%(src%)\n"), t)
    assert.truthy(t:find("Compiles one input", 1, true), t)
  end)

  it("shows a module's opening docstring and its functions", function()
    local t = help.text(facet.nn.Linear)
    assert.truthy(t:find("facet.nn.Linear(in, out", 1, true), t)
    assert.truthy(t:find("functions: [^\n]*update_output"), t)
  end)

  it("documents a tensor through the tensor module's methods", function()
    local t = help.text(facet.zeros({ 1 }))
    assert.truthy(t:find("functions: [^\n]*shape"), t)
  end)

  it("falls back to the file's docstring for an undocumented main function", function()
    local t = help.text(facet.train)
    assert.truthy(t:find("facet.train{ ... }: the training loop", 1, true), t)
  end)

  it("resolves dotted names and says when a name does not exist", function()
    rawset(_G, "facet", facet)
    assert.are.equal(help.text(facet.nn.Linear), help.text("facet.nn.Linear"))
    assert.are.equal("help: no global named 'facet.nope'", help.text("facet.nope"))
    assert.are.equal("a built-in function (no facet documentation)", help.text(print))
    assert.are.equal("a number value: 3", help.text(3))
  end)
end)

describe("facet.repl input", function()
  it("lets the user have a global named keep", function()
    rawset(_G, "keep", 41)
    local fn = assert(repl.compile("keep + 1"))
    local ok, n, line = repl.run_chunk(fn)
    rawset(_G, "keep", nil)
    assert.is_true(ok)
    assert.are.equal(1, n)
    assert.are.equal("42", line)
  end)

  it("refuses terminal escape codes instead of loading them as bytecode", function()
    local fn, err = repl.compile("\27[A")
    assert.is_nil(fn)
    assert.truthy(err:find("terminal escape codes", 1, true), err)
    assert.is_nil((repl.compile("\27LJ\2")))
  end)
end)

describe("facet REPL on a terminal", function()
  local tmp = F.scratch()
  local python = F.PYTHON
  local driver = "spec/support/pty_session.py"

  -- A launcher that runs bin/facet with this build and a private history.
  local function launcher()
    local root = io.popen("pwd"):read("*l")
    local path = tmp("facet.sh")
    -- under `make sanitize` the sanitizer runtimes are preloaded for luajit: the
    -- launcher puts them back for bin/facet, while Python runs without them
    local preload = os.getenv("LD_PRELOAD")
    F.write_file(path, ("#!/bin/sh\nexport FACET_BUILD='%s' FACET_HISTORY='%s'\n%sexec '%s/bin/facet'\n")
      :format(os.getenv("FACET_BUILD") or "build", tmp("history"),
        preload and ("export LD_PRELOAD='%s'\n"):format(preload) or "", root))
    os.execute("chmod +x '" .. path .. "'")
    return path
  end

  local function session(...)
    local args = {}
    for i, k in ipairs { ... } do args[i] = "'" .. k:gsub("'", [['\'']]) .. "'" end
    local out, rc = F.sh(("env -u LD_PRELOAD %s %s '%s' 'facet> ' %s"):format(python, driver, launcher(),
      table.concat(args, " ")))
    assert.are.equal(0, rc, out)
    return out
  end

  local function usable()
    if select(2, F.sh("command -v " .. python)) ~= 0 then return false, python .. " is missing" end
    local ok, why = pcall(require("ffi").load, "libedit.so.2")
    if not ok then return false, "libedit2 is missing: " .. tostring(why) end
    return true
  end

  it("recalls the history with the up arrow, completes with Tab, and keeps the history for the next session", function()
    local ok, why = usable()
    if not ok then return pending(why) end
    local out = session("y = 1\r", "y = y + 1\r", "\27[A\r", '"y=" .. y\r', "facet.versi\t\r",
      "print('last' .. 'line')\r")
    assert.truthy(out:find("y=3", 1, true), out)                      -- the arrow re-ran y = y + 1
    assert.truthy(out:find("\n" .. facet.version:gsub("%.", "%%.") .. "\r?\n"), out) -- Tab completed facet.version
    assert.falsy(out:find("bytecode", 1, true), out)
    local hist = F.read_file(tmp("history"))
    assert.truthy(hist:find("print('last'", 1, true), hist)
    local again = session("\27[A\r")                                  -- a new process, the same history
    assert.truthy(again:find("lastline", 1, true), again)
  end)
end)
