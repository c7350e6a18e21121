--- Backend ops (after ggml's test-backend-ops): every op of the registry
-- (spec/support/ops.lua), forward and backward, on every available backend
-- against the CPU's result from the same random inputs. The CPU is also
-- checked against a second CPU evaluation along another path (one thread
-- instead of two, plus strided inputs, class blocks, loops ...), so the
-- comparison runs, and can fail, without a GPU. The registry is checked
-- against core/include/facet.h: a new op function cannot go unregistered.
-- See docs/backend-ops.md.
local Bk = require "support.backend"      -- first: its call tracer must see facet load
local O = require "support.ops"
local H = require "support.device"
local facet = Bk.facet

local default_threads = facet.get_threads()
local primary_threads = math.max(2, default_threads)

local function cases_of(entry)
  local n = 0
  for _, c in ipairs(entry.cases) do if not c.skip then n = n + 1 end end
  return n
end

-- runs fn with facet's threads set to n, restoring them after
local function with_threads(n, fn, ...)
  facet.set_threads(n)
  local ok, a = pcall(fn, ...)
  facet.set_threads(default_threads)
  if not ok then error(a, 0) end
  return a
end

-- the CPU's outputs of every case (threads = primary_threads), and the C
-- functions each entry called on the CPU (both paths)
local reference, called = {}, {}

local function note_calls(entry, fn)
  called[entry.name] = called[entry.name] or {}
  return Bk.trace(called[entry.name], fn)
end

local function cpu_reference(entry)
  if reference[entry.name] then return reference[entry.name] end
  local r = {}
  note_calls(entry, function()
    with_threads(primary_threads, function()
      for i, c in ipairs(entry.cases) do
        if not c.skip then
          local ok, out = pcall(Bk.run_case, entry, i, "cpu", false)
          r[i] = ok and out or { error = out }
        end
      end
    end)
  end)
  reference[entry.name] = r
  return r
end

-- runs every case of entry on `device` (alt: the second CPU path) and
-- compares with the CPU reference; raises one error listing every failure
local function check_entry(entry, device, alt)
  local ref = cpu_reference(entry)
  local failures = {}
  local function run_all()
    for i, c in ipairs(entry.cases) do
      if not c.skip then
        local label = Bk.case_label(entry, c)
        if ref[i].error then
          failures[#failures + 1] = ("%s: the CPU run failed: %s"):format(label, tostring(ref[i].error))
        else
          local ok, got = pcall(Bk.run_case, entry, i, device, alt)
          local msg
          if ok then msg = Bk.compare_case(entry, i, got, ref[i]) else msg = "error: " .. tostring(got) end
          if msg then failures[#failures + 1] = label .. ": " .. msg end
        end
      end
    end
  end
  if alt then note_calls(entry, function() with_threads(1, run_all) end)
  else with_threads(primary_threads, run_all) end
  if #failures > 0 then
    local n = #failures
    if n > 10 then
      for i = 11, n do failures[i] = nil end
      failures[11] = ("... and %d more"):format(n - 10)
    end
    error(("%s: %d of %d cases differ on %s:\n  %s"):format(entry.name, n, cases_of(entry),
      alt and "the second CPU path" or device, table.concat(failures, "\n  ")), 0)
  end
end

local function plural(n, what) return ("%d %s%s"):format(n, what, n == 1 and "" or "s") end

local function pending_skips(pending)
  for _, entry in ipairs(O.entries) do
    for _, c in ipairs(entry.cases) do
      if c.skip then pending(("%s %s, not run: %s"):format(entry.name, Bk.case_label(entry, c), c.skip)) end
    end
  end
end

describe("backend ops registry", function()
  it("names every op function of facet.h exactly once, apart from a short exclusion list (the count check)", function()
    local header = O.header_functions()
    assert.is_true(#header >= 90, "found only " .. #header .. " functions in core/include/facet.h")
    assert.is_true(#O.excluded.names + #O.excluded.prefixes <= 24, "the exclusion list should stay short")
    local problems, n_ops = O.coverage_problems(header)
    if #problems > 0 then error(table.concat(problems, "\n"), 0) end
    assert.is_true(n_ops >= 50, n_ops .. " op functions")
    -- and it fails for an op that is added without being registered
    local more = { "facet_tensor_erf" }
    for _, name in ipairs(header) do more[#more + 1] = name end
    problems = O.coverage_problems(more)
    assert.are.equal(1, #problems)
    assert.truthy(problems[1]:find("facet_tensor_erf is an op of facet.h that no entry", 1, true))
  end)

  it("has cases for every head of facet.heads.names() at K = 7, 37 and 300, batches up to 2048, class offsets > 0", function()
    local seen = {}
    for _, c in ipairs(O.by_name.head.cases) do
      seen[c.head] = seen[c.head] or {}
      seen[c.head][c.K] = true
      if c.blocks then seen[c.head].offsets = true end
      seen[c.head].maxB = math.max(seen[c.head].maxB or 0, c.B)
    end
    for _, name in ipairs(facet.heads.names()) do
      local s = seen[name]
      assert.truthy(s, name .. " has no case")
      assert.is_true(s[7] and s[37] and s[300] and s.offsets and s.maxB == 2048, name)
    end
  end)

  it("builds the same inputs from a case's seed every time", function()
    local entry = O.by_name.conv2d
    local a, b = Bk.run_case(entry, 3, "cpu", false), Bk.run_case(entry, 3, "cpu", false)
    assert.is_nil(Bk.compare_case(entry, 3, a, b))
    local c = Bk.run_case(O.by_name.unary, 1, "cpu", false)
    local x = facet.rand({ 129, 300 }, { seed = Bk.case_seed(O.by_name.unary, 1) * 1009 + 1, low = -3, high = 3 })
    assert.are.equal(x:neg():sum(), c.out:sum())
  end)
end)

describe("backend ops: cpu vs a second cpu path:", function()
  for _, entry in ipairs(O.entries) do
    it(("%s (%s): one thread%s vs %d threads"):format(entry.name, plural(cases_of(entry), "case"),
      entry.alt and (", " .. entry.alt) or "", primary_threads), function()
      check_entry(entry, "cpu", true)
    end)
  end
  pending_skips(pending)
end)

describe("backend ops: the comparison", function()
  -- an output perturbed beyond its tolerance, in its largest element
  local function perturbed(v, tol)
    if type(v) == "number" then
      return v + 4 * (tol.atol + tol.rtol * math.abs(v) + tol.mtol * math.abs(v)) + 1e-3 * math.max(1, math.abs(v))
    end
    local t = v:clone()
    local n = t:numel()
    if n == 0 then return nil end
    local p = t:data_ptr()
    local at, max_abs = 0, 0
    for i = 0, n - 1 do
      local a = math.abs(tonumber(p[i]))
      if a == a and a < math.huge and a > max_abs then at, max_abs = i, a end
    end
    if t:dtype() == "float32" then
      local w = tonumber(p[at])
      p[at] = w + 4 * (tol.atol + tol.rtol * math.abs(w) + tol.mtol * max_abs) + 1e-6 * math.max(1, max_abs)
    else
      p[at] = p[at] == 0 and 1 or p[at] - 1
    end
    return t
  end

  it("detects a result perturbed beyond its tolerance, in every output of every op", function()
    local missed, checked = {}, 0
    for _, entry in ipairs(O.entries) do
      local ref = cpu_reference(entry)
      for i, c in ipairs(entry.cases) do
        if ref[i] and not ref[i].error then
          assert.is_nil(Bk.compare_case(entry, i, ref[i], ref[i]))
          for k, v in pairs(ref[i]) do
            local bad = perturbed(v, Bk.tolerance(entry, c, k))
            if bad ~= nil then
              local got = {}
              for k2, v2 in pairs(ref[i]) do got[k2] = v2 end
              got[k] = bad
              local msg = Bk.compare_case(entry, i, got, ref[i])
              checked = checked + 1
              if not msg or not msg:find(k, 1, true) then
                missed[#missed + 1] = ("%s %s: %s"):format(entry.name, Bk.case_label(entry, c), k)
              end
            end
          end
          break                                       -- the first runnable case of each op
        end
      end
    end
    assert.is_true(checked >= #O.entries, "perturbed " .. checked .. " outputs")
    if #missed > 0 then error("perturbations not detected: " .. table.concat(missed, ", "), 0) end
  end)

  it("detects a wrong element deep inside, a NaN, a missing or extra output, a shape or dtype change", function()
    local tol = function() return { rtol = 1e-5, atol = 1e-6, mtol = 0 } end
    local want = { out = facet.randn({ 129, 300 }, { seed = 5 }), loss = 2.5 }
    assert.is_nil(Bk.compare({ out = want.out:clone(), loss = 2.5 }, want, tol))
    local g = want.out:clone()
    g:set(g:get(77, 201) + 1e-3, 77, 201)
    assert.truthy(Bk.compare({ out = g, loss = 2.5 }, want, tol):find("1 of 38700 elements differ; first at 23001", 1, true))
    g = want.out:clone()
    g:set(0 / 0, 129, 300)
    assert.truthy(Bk.compare({ out = g, loss = 2.5 }, want, tol))
    assert.truthy(Bk.compare({ out = want.out, loss = 2.5 + 1e-4 }, want, tol):find("loss", 1, true))
    assert.truthy(Bk.compare({ out = want.out }, want, tol):find("loss: missing", 1, true))
    assert.truthy(Bk.compare({ out = want.out, loss = 2.5, extra = 1 }, want, tol):find("extra: not expected", 1, true))
    assert.truthy(Bk.compare({ out = want.out:reshape { 300, 129 }, loss = 2.5 }, want, tol):find("shape", 1, true))
    assert.truthy(Bk.compare({ out = want.out:to("int32"), loss = 2.5 }, { out = want.out:to("int64"), loss = 2.5 }, tol)
      :find("dtype", 1, true))
    -- integers match exactly; NaN matches NaN
    assert.truthy(Bk.compare({ i = facet.tensor({ 1, 2, 4 }, { dtype = "int64" }) },
      { i = facet.tensor({ 1, 2, 3 }, { dtype = "int64" }) }, tol))
    assert.is_nil(Bk.compare({ x = facet.tensor({ 0 / 0, 1 }) }, { x = facet.tensor({ 0 / 0, 1 }) }, tol))
  end)

  it("fails a case whose second CPU path really differs (a deliberately broken op)", function()
    local entry = { name = "broken", covers = {}, cases = { { n = 1000 } },
      run = function(c, ctx)
        local x = ctx:randn({ c.n })
        if ctx.alt then x:set(x:get(500) + 1e-3, 500) end    -- one wrong element on the second path
        return { out = x:exp() }
      end }
    local ok, err = pcall(check_entry, entry, "cpu", true)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("1 of 1 cases differ", 1, true), tostring(err))
    assert.truthy(tostring(err):find("first at 500", 1, true), tostring(err))
  end)
end)

describe("backend ops registry", function()
  it("each entry's runs call every C function it covers", function()
    if not Bk.traced then
      -- an earlier spec file bound the tensor metatype: check in a fresh process
      local build = os.getenv("FACET_BUILD") or "build"
      local p = assert(io.popen(("FACET_BUILD=%s busted --filter=each.entry spec/backend_ops_spec.lua 2>&1"):format(build)))
      local out = p:read("*a")
      p:close()
      assert.truthy(out:match("1 success / 0 failures / 0 errors"), "the call check in a fresh process:\n" .. out)
      return
    end
    local missing = {}
    for _, entry in ipairs(O.entries) do
      cpu_reference(entry)
      local seen = called[entry.name] or {}
      for _, fn in ipairs(entry.covers) do
        if not seen[fn] then missing[#missing + 1] = ("%s does not call %s"):format(entry.name, fn) end
      end
    end
    if #missing > 0 then error(table.concat(missing, "\n"), 0) end
  end)
end)

describe("backend ops: cuda vs cpu:", function()
  local entries, total = {}, 0
  for _, entry in ipairs(O.entries) do
    if O.runs_on(entry, "cuda") then
      entries[#entries + 1] = entry
      total = total + cases_of(entry)
    end
  end
  if facet.cuda.available() then
    for _, entry in ipairs(entries) do
      it(("%s (%s) on cuda vs cpu"):format(entry.name, plural(cases_of(entry), "case")), function()
        check_entry(entry, "cuda", false)
      end)
    end
    pending_skips(pending)
  else
    local why = "no CUDA device is available" .. (facet.cuda.built() and "" or " (facet was built without CUDA)")
    if H.device == "cuda" then
      for _, entry in ipairs(entries) do
        pending(("[cuda] %s: %s (forward and backward) would run; %s"):format(entry.name,
          plural(cases_of(entry), "case"), why))
      end
    else
      pending(("[cuda] %d ops, %d cases (forward and backward) would run against the CPU; %s"):format(#entries, total,
        why))
    end
  end
end)
