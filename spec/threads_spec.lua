-- The OpenMP wait policy facet.core sets before it loads the core
-- (docs/threads.md): GOMP_SPINCOUNT = facet.core.SPINCOUNT unless the user set
-- OMP_WAIT_POLICY or GOMP_SPINCOUNT. Each case is a fresh `luajit bin/facet run`
-- (libgomp reads its environment once per process), started with the variables
-- given here and nothing inherited from this process, where facet has set them
-- already. OMP_DISPLAY_ENV=verbose makes libgomp print, as it initialises, the
-- values it took, so the spec sees what libgomp uses and not only the
-- environment. No timing.
local build = os.getenv("FACET_BUILD") or "build"

local SCRIPT = [[
local core = require "facet.core"
local set = {}
for k, v in pairs(core.omp_env_set) do set[#set + 1] = k .. "=" .. v end
print("getenv GOMP_SPINCOUNT=" .. tostring(os.getenv("GOMP_SPINCOUNT")))
print("getenv OMP_WAIT_POLICY=" .. tostring(os.getenv("OMP_WAIT_POLICY")))
print("policy=" .. core.wait_policy)
print("set=" .. table.concat(set, ","))
print("spincount=" .. core.SPINCOUNT)
]]

-- runs SCRIPT in a new process with `env` arguments envargs; returns a table of
-- what it printed and what libgomp displayed
local function probe(envargs)
  local cmd = ("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=verbose FACET_BUILD=%s %s "
    .. "luajit bin/facet run /dev/stdin 2>&1 <<'EOF'\n%sEOF\n"):format(build, envargs or "", SCRIPT)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local r = { out = out }
  r.getenv_spin = out:match("getenv GOMP_SPINCOUNT=([^\n]*)")
  r.getenv_policy = out:match("getenv OMP_WAIT_POLICY=([^\n]*)")
  r.policy = out:match("policy=([^\n]*)")
  r.set = out:match("\nset=([^\n]*)")
  r.spincount = out:match("spincount=([^\n]*)")
  r.gomp_spin = out:match("GOMP_SPINCOUNT = '([^']*)'")
  r.gomp_policy = out:match("OMP_WAIT_POLICY = '([^']*)'")
  assert(r.policy and r.gomp_spin, "the probe printed nothing useful:\n" .. out)
  return r
end

describe("the OpenMP wait policy", function()
  it("sets a bounded spin when neither variable is set, before libgomp reads it", function()
    local r = probe("")
    assert.equals("facet", r.policy)
    assert.is_truthy(tonumber(r.spincount))
    assert.equals(r.spincount, r.getenv_spin)
    assert.equals(r.spincount, r.gomp_spin)          -- what libgomp took
    assert.is_true(tonumber(r.gomp_spin) < 300000)   -- below libgomp's own default
    assert.equals("GOMP_SPINCOUNT=" .. r.spincount, r.set)
    assert.equals("nil", r.getenv_policy)
  end)

  it("treats an empty GOMP_SPINCOUNT as unset", function()
    local r = probe("GOMP_SPINCOUNT=")
    assert.equals("facet", r.policy)
    assert.equals(r.spincount, r.gomp_spin)
  end)

  it("leaves the user's GOMP_SPINCOUNT alone", function()
    local r = probe("GOMP_SPINCOUNT=777")
    assert.equals("user", r.policy)
    assert.equals("777", r.getenv_spin)
    assert.equals("777", r.gomp_spin)
    assert.equals("", r.set)
  end)

  it("leaves the spin to libgomp when the user set OMP_WAIT_POLICY=passive", function()
    local r = probe("OMP_WAIT_POLICY=passive")
    assert.equals("user", r.policy)
    assert.equals("nil", r.getenv_spin)
    assert.equals("passive", r.getenv_policy)
    assert.equals("0", r.gomp_spin)
    assert.equals("PASSIVE", r.gomp_policy)
    assert.equals("", r.set)
  end)

  it("leaves the spin to libgomp when the user set OMP_WAIT_POLICY=active", function()
    local r = probe("OMP_WAIT_POLICY=active")
    assert.equals("user", r.policy)
    assert.equals("nil", r.getenv_spin)
    assert.equals("ACTIVE", r.gomp_policy)
    assert.is_true(tonumber(r.gomp_spin) > 300000)
  end)

  it("changes nothing when libgomp was loaded before facet", function()
    -- a preloaded libgomp has read its environment before facet runs; under
    -- the sanitizer build LD_PRELOAD already names its runtimes, which stay first
    local pre = os.getenv("LD_PRELOAD")
    local r = probe(("LD_PRELOAD='%slibgomp.so.1'"):format(pre and pre ~= "" and pre .. " " or ""))
    assert.equals("libgomp loaded before facet", r.policy)
    assert.equals("nil", r.getenv_spin)
    assert.equals("", r.set)
    assert.equals("300000", r.gomp_spin)              -- libgomp's default, untouched
  end)
end)
