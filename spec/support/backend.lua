--- support/backend.lua: the harness of spec/backend_ops_spec.lua (after
-- ggml's test-backend-ops): a call tracer on the C core, the context an op of
-- the registry (support/ops.lua) builds its inputs with, running an op's cases
-- on a backend, and the comparison of two results.
--
-- Require this (or support.ops) before anything else loads facet: the tracer
-- replaces facet.core.C by a proxy that records which C functions are looked
-- up, and the modules of facet capture core.C when they load. Specs run
-- insulated (.busted), so the proxy lives only as long as the spec file.
local ffi = require "ffi"
local core = require "facet.core"

local B = {}

-- ---- the call tracer -----------------------------------------------------------

B.traced = package.loaded["facet.tensor"] == nil
local real_C = core.C
local seen = nil
if B.traced then
  core.C = setmetatable({}, { __index = function(_, k)
    if seen then seen[k] = true end
    return real_C[k]
  end })
end

local facet = require "facet"
B.facet = facet
B.C = core.C

-- A tensor's methods come from its FFI metatype, which LuaJIT binds once per
-- process: when an earlier spec file loaded facet, they still call the C
-- namespace of that load, not the proxy. Probe it.
if B.traced then
  local probe, t = {}, facet.zeros({ 2 })
  seen = probe
  t:sum()                 -- a method, reached through the metatype
  seen = nil
  B.traced = probe.facet_tensor_reduce ~= nil
end

local function pack(...) return { n = select("#", ...), ... } end

--- Runs fn(...) recording the C functions called through facet.core.C into
-- the set `into`; returns fn's results.
function B.trace(into, fn, ...)
  local outer = seen
  seen = into
  local r = pack(pcall(fn, ...))
  seen = outer
  if outer then for k in pairs(into) do outer[k] = true end end
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

-- ---- the context an op builds its inputs with --------------------------------------
-- ctx.device: where the op runs ("cpu" or "cuda"); ctx.alt: the second CPU
-- path (one thread, strided inputs, the head's class blocks ...). Inputs are
-- drawn on the CPU from Philox under a seed of the case and moved to the
-- device, so every backend and path sees the same values.

local Ctx = {}
Ctx.__index = Ctx

function B.context(device, alt, seed, entry)
  return setmetatable({ device = device, alt = alt, seed = seed, n = 0, strided_ok = entry.strided ~= false }, Ctx)
end

function Ctx:next_seed()
  self.n = self.n + 1
  return self.seed * 1009 + self.n
end

--- N(mean, std) values of a shape, on the device.
function Ctx:randn(shape, mean, std)
  return facet.randn(shape, { seed = self:next_seed(), mean = mean or 0, std = std or 1 }):to(self.device)
end

--- Uniform [low, high) values of a shape, on the device.
function Ctx:rand(shape, low, high)
  return facet.rand(shape, { seed = self:next_seed(), low = low or 0, high = high or 1 }):to(self.device)
end

--- n integers in [lo, hi] (int64 unless dtype), on the device.
function Ctx:ints(n, lo, hi, dtype)
  local u = facet.rand({ n }, { seed = self:next_seed() })
  local v = u:mul(hi - lo + 1):floor_():add_(lo):clamp_(lo, hi)
  return v:to(dtype or "int64"):to(self.device)
end

function Ctx:on(t) return t:to(self.device) end

--- The input as the op should see it: on the alt path a non-contiguous view
-- holding the same values (unless the op needs contiguous operands).
function Ctx:input(t)
  if self.alt and self.strided_ok then return B.strided(t) end
  return t
end

--- A non-contiguous view with t's shape and values: every stride doubled,
-- the elements in between poisoned (NaN, or 77 for integers).
function B.strided(t)
  local s = t:shape()
  if #s == 0 or t:numel() == 0 then return t end
  local big_shape = {}
  for i = 1, #s do big_shape[i] = s[i] end
  big_shape[#s + 1] = 2
  local big = facet.full(big_shape, t:dtype() == "float32" and 0 / 0 or 77, { dtype = t:dtype(), device = t:device() })
  local v = big:select(#s + 1, 1)
  v:copy(t)
  return v
end

--- A view of a 2-D or 3-D tensor with its last two dims stored transposed
-- (what matmul reads without copying).
function B.transposed_view(t)
  local nd = t:dim()
  local stored = t:transpose(nd - 1, nd)           -- contiguous, last two dims swapped
  local perm = ffi.new("int[8]")
  for i = 0, nd - 1 do perm[i] = i end
  perm[nd - 2], perm[nd - 1] = nd - 1, nd - 2
  local p = ffi.new("facet_tensor *[1]")
  core.check(B.C.facet_tensor_permute_view(p, stored.h, perm))
  return require("facet.tensor").wrap(p[0])
end

-- ---- running an op ---------------------------------------------------------------------

local function hash(s)
  local h = 7
  for i = 1, #s do h = (h * 31 + s:byte(i)) % 1000003 end
  return h
end

--- The seed of case i of an entry (stable when entries are added or reordered).
function B.case_seed(entry, i) return hash(entry.name) * 100 + i end

--- A readable label of a case.
function B.case_label(entry, case)
  if entry.label then return entry.label(case) end
  if case.label then return case.label end
  local keys = {}
  for k in pairs(case) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = case[k]
    if type(v) == "table" then v = "{" .. table.concat(v, ",") .. "}" end
    if type(v) ~= "function" then parts[#parts + 1] = k .. "=" .. tostring(v) end
  end
  return table.concat(parts, " ")
end

-- results as CPU tensors of their own (buffers of modules are reused)
local function to_host(out)
  local r = {}
  for k, v in pairs(out) do
    if facet.is_tensor(v) then r[k] = v:to("cpu"):contiguous():clone()
    elseif type(v) == "number" then r[k] = v
    else error(("output %s is a %s, want a tensor or a number"):format(k, type(v)), 0) end
  end
  return r
end

--- Outputs of case i of entry on a device (alt: the second CPU path), as CPU
-- tensors and numbers, keyed by name.
function B.run_case(entry, i, device, alt)
  local case = entry.cases[i]
  local ctx = B.context(device, alt, B.case_seed(entry, i), entry)
  return to_host(entry.run(case, ctx))
end

--- Tolerance for an output: entry.tol, with entry.tols[key] and case.tol on top.
function B.tolerance(entry, case, key)
  local t = { rtol = 1e-5, atol = 1e-6, mtol = 0 }
  for _, src in ipairs { entry.tol or {}, (entry.tols or {})[key] or {}, case.tol or {}, (case.tols or {})[key] or {} } do
    for k, v in pairs(src) do t[k] = v end
  end
  return t
end

-- ---- comparison ----------------------------------------------------------------------------

local function allowed(tol, want, max_abs)
  return tol.atol + tol.rtol * math.abs(want) + tol.mtol * max_abs
end

local function same_value(g, w, bound)
  if w ~= w then return g ~= g end
  if w == math.huge or w == -math.huge then return g == w end
  if g ~= g then return false end
  return math.abs(g - w) <= bound
end

--- nil when `got` matches `want` (a CPU tensor or a number) within tol
-- ({ rtol, atol, mtol }: |g - w| <= atol + rtol |w| + mtol max|want|; NaN
-- matches NaN, infinities themselves; integer dtypes exactly); else a message.
function B.compare_value(got, want, tol)
  if type(want) == "number" then
    if type(got) ~= "number" then return "want a number, got a " .. type(got) end
    if same_value(got, want, allowed(tol, want, math.abs(want))) then return nil end
    return ("got %.9g, want %.9g (diff %.3g)"):format(got, want, math.abs(got - want))
  end
  if not facet.is_tensor(got) then return "want a tensor, got a " .. type(got) end
  local gs, ws = table.concat(got:shape(), "x"), table.concat(want:shape(), "x")
  if gs ~= ws then return ("shape %s, want %s"):format(gs, ws) end
  if got:dtype() ~= want:dtype() then return ("dtype %s, want %s"):format(got:dtype(), want:dtype()) end
  local n = want:numel()
  if n == 0 then return nil end
  local gp, wp = got:data_ptr(), want:data_ptr()
  local exact = want:dtype() ~= "float32"
  local max_abs = 0
  if not exact then
    for i = 0, n - 1 do
      local a = math.abs(wp[i])
      if a > max_abs and a < math.huge then max_abs = a end
    end
  end
  local bad, first, worst, worst_i = 0, nil, 0, nil
  for i = 0, n - 1 do
    local g, w = tonumber(gp[i]), tonumber(wp[i])
    local ok
    if exact then ok = g == w else ok = same_value(g, w, allowed(tol, w, max_abs)) end
    if not ok then
      bad = bad + 1
      first = first or i
      local d = math.abs(g - w)
      if d ~= d or d > worst then worst, worst_i = d, i end
    end
  end
  if bad == 0 then return nil end
  worst_i = worst_i or first
  return ("%d of %d elements differ; first at %d: got %.9g, want %.9g; largest diff %.3g at %d (got %.9g, want %.9g); "
    .. "tol rtol=%g atol=%g mtol=%g (max |want| %.3g)"):format(bad, n, first + 1, tonumber(gp[first]),
    tonumber(wp[first]), worst, worst_i + 1, tonumber(gp[worst_i]), tonumber(wp[worst_i]), tol.rtol, tol.atol,
    tol.mtol, max_abs)
end

--- nil when every output of `got` matches `want` (same names); else a message
-- naming each output that differs.
function B.compare(got, want, tol_of)
  local msgs, keys = {}, {}
  for k in pairs(want) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if got[k] == nil then msgs[#msgs + 1] = k .. ": missing"
    else
      local m = B.compare_value(got[k], want[k], tol_of(k))
      if m then msgs[#msgs + 1] = k .. ": " .. m end
    end
  end
  for k in pairs(got) do
    if want[k] == nil then msgs[#msgs + 1] = k .. ": not expected" end
  end
  if #msgs == 0 then return nil end
  return table.concat(msgs, "; ")
end

--- Compares the outputs of one case; nil or a message.
function B.compare_case(entry, i, got, want)
  local case = entry.cases[i]
  return B.compare(got, want, function(k) return B.tolerance(entry, case, k) end)
end

return B
