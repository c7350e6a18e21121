--- Installation: the rock builds and installs offline into a fresh tree, and
-- `require "facet"` then works from any directory; the runtime finds OpenBLAS
-- with the core chosen from cpuid unless the user set OPENBLAS_CORETYPE; a
-- missing core library is an error that lists the paths tried.
local H = require "support.device"
local F = require "support.files"
local sh = F.sh

local build = os.getenv("FACET_BUILD") or "build"
local cwd = os.getenv("PWD")

describe("luarocks install", function()
  local tree
  setup(function()
    tree = F.temp_dir()
  end)
  teardown(function()
    F.remove_dir(tree)
  end)

  it("installs offline and loads from another directory", function()
    if build ~= "build" then
      pending("runs against the default build only (FACET_BUILD=" .. build .. ")")
      return
    end
    local out, rc = sh(("env -u LD_PRELOAD luarocks --lua-version=5.1 --tree=%q make --deps-mode=none rockspec/facet-scm-1.rockspec"):format(tree))
    assert.are.equal(0, rc, out)
    local check = ("cd / && eval \"$(luarocks --lua-version=5.1 --tree=%q path)\" && " ..
      "luajit -e 'local f = require \"facet\"; print(f.library_path); print(f.tensor{{1,2},{3,4}}:matmul(f.ones({2,1})):sum())'"):format(tree)
    out, rc = sh(check)
    assert.are.equal(0, rc, out)
    assert.truthy(out:find(tree .. "/lib/lua/5.1/facet_core.so", 1, true), out)
    assert.truthy(out:find("\n10\n", 1, true), out)
    -- the installed command runs without `luarocks path`
    out, rc = sh(("cd / && echo 'facet.ones({3}):sum()' | %q/bin/facet"):format(tree))
    assert.are.equal(0, rc, out)
    assert.are.equal("3\n", out)
  end)
end)

describe("runtime discovery", function()
  it("a missing core library names the paths tried", function()
    local out, rc = sh(("cd / && LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;%s/%s/lua/?.lua' LUA_CPATH='/nonexistent/?.so' " ..
      "luajit -e 'require \"facet\"'"):format(cwd, cwd, cwd, build))
    assert.are_not.equal(0, rc)
    assert.truthy(out:find("cannot find the C core facet_core.so", 1, true), out)
    assert.truthy(out:find("/nonexistent/facet_core.so", 1, true), out)
  end)

  -- the output of a fresh luajit running code against this checkout's build
  local function fresh(env, code)
    local out = sh(("%s LUA_PATH='./lua/?.lua;./lua/?/init.lua;./%s/lua/?.lua;;' LUA_CPATH='./%s/?.so;;' luajit -e %q")
      :format(env, build, build, code))
    return (out:gsub("%s+$", ""))
  end
  local function core_with(env) return fresh(env, "print(require('facet').blas_core())") end

  it("OpenBLAS gets the core that matches the CPU unless the user chose one", function()
    local f = io.open("/proc/cpuinfo")
    local info = f and f:read("*a") or ""
    if f then f:close() end
    local flags = info:match("\nflags%s*:%s*([^\n]*)") or ""
    local function has(x) return (" " .. flags .. " "):find(" " .. x .. " ", 1, true) ~= nil end
    local expect
    if has("avx512f") and has("avx512dq") and has("avx512bw") and has("avx512vl") then expect = "SkylakeX"
    elseif has("avx2") and has("fma") then expect = "Haswell" end
    if expect then assert.are.equal(expect, core_with("env -u OPENBLAS_CORETYPE")) end
    assert.are.equal("Haswell", core_with("OPENBLAS_CORETYPE=Haswell"))
    assert.are.equal("Prescott", core_with("OPENBLAS_CORETYPE=Prescott"))
  end)

  it("set_threads validates and FACET_THREADS sets the default", function()
    assert.are.equal("3", fresh("FACET_THREADS=3", "print(require('facet').get_threads())"))
    assert.are.equal("4", fresh("FACET_THREADS=1", "local f = require('facet'); f.set_threads(4); print(f.get_threads())"))
    H.assert_error(function() H.facet.set_threads(0) end, "facet_threads_set")
  end)
end)

describe("the rockspec", function()
  it("declares a dependency for every Lua module facet requires from outside itself", function()
    local env = {}
    local chunk = assert(loadfile("rockspec/facet-scm-1.rockspec"))
    setfenv(chunk, env)()
    local declared = {}
    for _, d in ipairs(env.dependencies) do declared[d:match("^[%w_%-]+")] = true end
    -- the rock that provides each module name, and what LuaJIT has built in
    local rock = { argparse = "argparse", cjson = "lua-cjson", lfs = "luafilesystem" }
    local builtin = { ffi = true, jit = true, bit = true, string = true, table = true, math = true, io = true,
                      os = true, debug = true, coroutine = true, package = true }
    local missing = {}
    local p = io.popen("find lua/facet -name '*.lua'")
    for path in p:lines() do
      local src = assert(io.open(path)):read("*a"):gsub("%-%-[^\n]*", "")
      for m in src:gmatch("require%s*%(?%s*[\"']([%w_%.]+)[\"']") do
        local top = m:match("^[^.]+")
        if top ~= "facet" and top ~= "support" and not builtin[top] then
          local r = rock[top]
          if not r or not declared[r] then missing[#missing + 1] = path .. ": " .. m end
        end
      end
    end
    p:close()
    assert.are.same({}, missing)
    assert.truthy(declared.lua)
  end)
end)
