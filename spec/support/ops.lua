--- support/ops.lua: the registry of backend ops for spec/backend_ops_spec.lua,
-- after ggml's test-backend-ops. Every op function of core/include/facet.h is
-- named once, in the `covers` of one entry, or in the short exclusion list
-- (O.excluded: runtime queries, handles, file and image IO); the spec checks
-- both against the header, and that running an entry calls what it covers.
--
-- An entry:
--   name     the op (one line of the spec's output)
--   covers   the C functions it stands for
--   cases    configurations; each builds its inputs from a seed of its own
--   run(case, ctx) -> { output = tensor | number, ... }: forward and backward
--            through the public Lua API (facet tensors, facet.nn, facet.heads,
--            facet.optim, facet.data; facet.core.C where Lua has no wrapper)
--            on ctx.device; ctx.alt asks for the second CPU path
--   alt      what that second CPU path does differently besides running on
--            one thread (nil: only that)
--   tol      { rtol, atol, mtol }: |got - want| <= atol + rtol |want| +
--            mtol max|want| (see docs/backend-ops.md); tols[output] and
--            case.tol / case.tols refine it; integer outputs match exactly
--   strided  false where the op needs contiguous operands (ctx:input then
--            leaves them alone)
--   devices  { "cpu" } for a host-only function (no device variant)
--   case.skip  a reason: the case is reported as pending, not run
local B = require "support.backend"
local D = require "support.device"
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"

local facet = B.facet
local C, check = B.C, core.check
local E = facet.expr
local nn = facet.nn

local O = { backend = B, entries = {}, by_name = {} }

-- float16/bfloat16 outputs are compared as their (exact) float32 values
local HALF = { float16 = true, bfloat16 = true }
local function widen_outputs(r)
  if type(r) ~= "table" then return r end
  for k, v in pairs(r) do
    if facet.is_tensor(v) and not v:is_freed() and HALF[v:dtype()] then r[k] = v:float() end
  end
  return r
end

local function reg(entry)
  assert(not O.by_name[entry.name], "duplicate entry " .. entry.name)
  local run = entry.run
  entry.run = function(c, ctx) return widen_outputs(run(c, ctx)) end
  O.entries[#O.entries + 1] = entry
  O.by_name[entry.name] = entry
end

-- ---- helpers ------------------------------------------------------------------------

local prod = D.numel

local function copy_table(t)
  local r = {}
  for k, v in pairs(t or {}) do r[k] = v end
  return r
end

-- values of a dtype in [lo, hi) (floats) or [lo, hi] (integers), on the device
local function values(ctx, shape, dtype, lo, hi)
  if dtype == nil or dtype == "float32" then return ctx:rand(shape, lo, hi) end
  if HALF[dtype] then return ctx:rand(shape, lo, hi):to(dtype) end
  return ctx:ints(prod(shape), lo, hi, dtype):reshape(shape)
end

local out_p = ffi.new("facet_tensor *[1]")

-- a strided view with dims permuted (perm 1-based): facet_tensor_permute_view
local function permute_view(t, perm)
  local p = ffi.new("int[8]")
  for i, d in ipairs(perm) do p[i - 1] = d - 1 end
  check(C.facet_tensor_permute_view(out_p, t.h, p))
  return tensor.wrap(out_p[0])
end

local function share(t)
  check(C.facet_tensor_share(out_p, t.h))
  return tensor.wrap(out_p[0])
end

local host_values = D.values   -- Lua values of a tensor (any device)

local function h_of(t) return t and t.h or nil end

-- ---- data movement ----------------------------------------------------------------------

reg {
  name = "copy",
  covers = { "facet_tensor_copy" },
  alt = "strided source and destination views",
  cases = {
    { from = "float32", to = "float32", shape = { 129, 300 } },
    { from = "float32", to = "int32", shape = { 7, 9, 5 }, lo = -300, hi = 300 },
    { from = "float32", to = "uint8", shape = { 1000 }, lo = 0, hi = 255 },
    { from = "int64", to = "float32", shape = { 40, 3 }, lo = -100000, hi = 100000 },
    { from = "uint8", to = "int64", shape = { 5, 11 }, lo = 0, hi = 255 },
    { from = "int32", to = "int32", shape = { 6, 7 }, lo = -5, hi = 5, dst_strided = true },
    { from = "float32", to = "float32", shape = { 9, 8 }, dst_strided = true },
    { from = "float32", to = "float32", shape = { 13, 6 }, host_source = true, label = "host -> device -> host" },
    { from = "float32", to = "float16", shape = { 129, 300 }, lo = -70000, hi = 70000 },
    { from = "float32", to = "bfloat16", shape = { 7, 9, 5 }, lo = -1e-3, hi = 1e-3 },
    { from = "float16", to = "bfloat16", shape = { 40, 3 }, lo = -100, hi = 100 },
    { from = "bfloat16", to = "float16", shape = { 40, 3 }, lo = -1e5, hi = 1e5 },
    { from = "float16", to = "int32", shape = { 5, 11 }, lo = -300, hi = 300 },
    { from = "int64", to = "bfloat16", shape = { 5, 11 }, lo = -100000, hi = 100000 },
    { from = "float16", to = "float16", shape = { 9, 8 }, dst_strided = true },
  },
  run = function(c, ctx)
    local src = values(ctx, c.shape, c.from, c.lo or -2, c.hi or 2)
    if c.host_source then src = src:to("cpu") end
    src = ctx:input(src)
    local dst = facet.empty(c.shape, { dtype = c.to, device = ctx.device })
    if c.dst_strided then dst = B.strided(dst) end
    dst:copy(src)
    local r = { out = dst }
    if c.host_source then
      local back = ctx:input(facet.empty(c.shape, { dtype = c.to }))
      back:copy(dst)
      r.back = back
    end
    return r
  end,
}

reg {
  name = "copy_list",
  covers = { "facet_tensor_copy_list" },
  strided = false,
  alt = "one facet_tensor_copy per pair",
  cases = {
    { label = "60 pairs, assorted dtypes and shapes", n = 60 },
    { label = "3 pairs at an odd offset", n = 3, offset = 1 },
  },
  run = function(c, ctx)
    local dtypes = { "float32", "float16", "int64", "uint8", "bfloat16", "int32" }
    local shapes = { { 37, 16 }, { 300 }, { 5, 7, 3 }, { 1 }, { 129, 300 }, { 13 }, { 0 } }
    local ds, ss, r = ffi.new("facet_tensor *[?]", c.n), ffi.new("facet_tensor *[?]", c.n), {}
    for i = 1, c.n do
      local dt, sh = dtypes[(i - 1) % #dtypes + 1], shapes[(i - 1) % #shapes + 1]
      local src = values(ctx, sh, dt, 0, 200)
      local n = src:numel()
      local dst = facet.zeros({ n + (c.offset or 0) }, { dtype = dt, device = ctx.device })
      dst = dst:narrow(1, 1 + (c.offset or 0), n):reshape(sh)
      if ctx.alt then dst:copy(src) end
      ds[i - 1], ss[i - 1], r["out" .. i] = dst.h, src.h, dst
    end
    if not ctx.alt then check(C.facet_tensor_copy_list(ds, ss, c.n)) end
    return r
  end,
}

reg {
  name = "views",
  covers = { "facet_tensor_narrow", "facet_tensor_select", "facet_tensor_reshape", "facet_tensor_permute_view",
    "facet_tensor_share" },
  alt = "views of a strided tensor",
  cases = { { shape = { 4, 6, 5 } }, { shape = { 3, 8, 2 } } },
  run = function(c, ctx)
    local x = ctx:input(ctx:randn(c.shape))
    local r = {}
    r.narrow = x:narrow(2, 2, 3):clone()
    r.select = x:select(3, 2):clone()
    r.reshape = x:reshape { c.shape[1] * c.shape[2], -1 }:clone()
    local pv = permute_view(x, { 3, 1, 2 })
    r.permute_view = pv:clone()
    r.view_of_view = pv:narrow(3, 2, 3):select(1, 2):clone()
    r.share = share(x):clone()
    -- writes through views land in the storage
    x:narrow(2, 1, 1):fill_(7)
    share(x):select(1, 1):mul_(2)
    pv:select(1, 1):add_(1)
    r.after_writes = x:clone()
    return r
  end,
}

reg {
  name = "fill",
  covers = { "facet_tensor_fill", "facet_tensor_arange" },
  alt = "fill through a strided view; arange in two pieces (the second from start + k step)",
  cases = {
    { dtype = "float32", shape = { 129, 300 }, value = -1.25, start = -3, step = 0.125, n = 40000 },
    { dtype = "int32", shape = { 5, 7 }, value = -7, start = 5, step = -3, n = 100 },
    { dtype = "int64", shape = { 17 }, value = 2 ^ 40 + 3, start = -2 ^ 35, step = 7, n = 50 },
    { dtype = "uint8", shape = { 3, 4, 5 }, value = 200, start = 0, step = 1, n = 200 },
    { dtype = "float16", shape = { 129, 30 }, value = 1 + 2 ^ -11 + 2 ^ -40, start = -3, step = 0.125, n = 400 },
    { dtype = "bfloat16", shape = { 17 }, value = -3.3e38, start = 1000, step = -0.375, n = 5000 },
  },
  run = function(c, ctx)
    local t = ctx:input(facet.empty(c.shape, { dtype = c.dtype, device = ctx.device }))
    t:fill_(c.value)
    local a
    if ctx.alt then
      a = facet.empty({ c.n }, { dtype = c.dtype, device = ctx.device })
      local k = math.floor(c.n / 3)
      check(C.facet_tensor_arange(a:narrow(1, 1, k).h, c.start, c.step))
      check(C.facet_tensor_arange(a:narrow(1, k + 1, c.n - k).h, c.start + k * c.step, c.step))
    else
      a = facet.arange(c.start, c.start + c.n * c.step, c.step, { dtype = c.dtype, device = ctx.device })
      assert(a:numel() == c.n, "arange: wrong count")
    end
    return { fill = t, arange = a }
  end,
}

reg {
  name = "read_write",
  covers = { "facet_tensor_write", "facet_tensor_read", "facet_tensor_get", "facet_tensor_set" },
  strided = false,
  cases = {
    { dtype = "float32", shape = { 7, 9 } },
    { dtype = "int64", shape = { 3, 4, 5 } },
    { dtype = "uint8", shape = { 50 } },
  },
  run = function(c, ctx)
    local n, ct = prod(c.shape), core.CTYPES[c.dtype]
    local size = ffi.sizeof(ct)
    local buf = ffi.new(ct .. "[?]", n)
    for i = 0, n - 1 do
      local v = (i * 37) % 101
      if c.dtype == "float32" then v = (v - 50) * 0.25 elseif c.dtype ~= "uint8" then v = v - 50 end
      buf[i] = v
    end
    local t = facet.empty(c.shape, { dtype = c.dtype, device = ctx.device })
    check(C.facet_tensor_write(t.h, buf, n * size))
    local idx, first = {}, {}
    for d, s in ipairs(c.shape) do idx[d], first[d] = math.max(1, s - 1), 1 end
    local before = t:get(unpack(idx))
    t:set(42, unpack(idx))
    local back = ffi.new(ct .. "[?]", n)
    check(C.facet_tensor_read(t.h, back, n * size))
    local host = facet.empty(c.shape, { dtype = c.dtype })
    ffi.copy(host:data_ptr(), back, n * size)
    return { read = host, get_before_set = before, get_after_set = t:get(unpack(idx)), get_first = t:get(unpack(first)) }
  end,
}

reg {
  name = "rand",
  covers = { "facet_tensor_rand_uniform", "facet_tensor_rand_normal" },
  strided = false,
  alt = "the same draws in two pieces, the second from offset + k",
  tol = { rtol = 1e-6, atol = 1e-6 },
  cases = {
    { dist = "uniform", shape = { 1000 }, offset = 0, low = 0, high = 1 },
    { dist = "uniform", shape = { 129, 300 }, offset = 123456, low = -2, high = 3 },
    -- Box-Muller through log, cos and sin: the device's libm may differ by an ulp or two
    { dist = "normal", shape = { 1001 }, offset = 0, mean = 0, std = 1, tol = { rtol = 1e-5, atol = 1e-5 } },
    { dist = "normal", shape = { 7, 9, 11 }, offset = 2 ^ 33 + 5, mean = 1.5, std = 0.25, tol = { rtol = 1e-5, atol = 1e-5 } },
  },
  run = function(c, ctx)
    local n, seed = prod(c.shape), ctx:next_seed()
    local function draw(count, offset)
      local o = { seed = seed, offset = offset, device = ctx.device, low = c.low, high = c.high, mean = c.mean, std = c.std }
      if c.dist == "uniform" then return facet.rand({ count }, o) end
      return facet.randn({ count }, o)
    end
    local out
    if ctx.alt then
      local k = math.floor(n / 3) + 1
      out = facet.empty({ n }, { device = ctx.device })
      out:narrow(1, 1, k):copy(draw(k, c.offset))
      out:narrow(1, k + 1, n - k):copy(draw(n - k, c.offset + k))
    else
      out = draw(n, c.offset)
    end
    return { out = out:reshape(c.shape) }
  end,
}

-- ---- elementwise --------------------------------------------------------------------------

-- every facet_unary op, reached through the Lua API; lo/hi: the input's domain
local UNARY = {
  { op = "neg" }, { op = "exp", lo = -3, hi = 3 }, { op = "log", lo = 0.01, hi = 5 }, { op = "sqrt", lo = 0, hi = 5 },
  { op = "abs" }, { op = "clamp" }, { op = "add" }, { op = "mul" }, { op = "rsub" }, { op = "rdiv", lo = 0.1, hi = 3 },
  { op = "pow", lo = 0.01, hi = 3 }, { op = "square" }, { op = "rsqrt", lo = 0.01, hi = 5 },
  { op = "sigmoid", lo = -8, hi = 8 }, { op = "tanh" }, { op = "relu" }, { op = "sign" }, { op = "cos", lo = -10, hi = 10 },
  { op = "sin", lo = -10, hi = 10 }, { op = "acos", lo = -1.2, hi = 1.2 }, { op = "floor", lo = -5, hi = 5 },
}

local function apply_unary(x, op, inplace)
  if op == "clamp" then return inplace and x:clamp_(-0.5, 0.7) or x:clamp(-0.5, 0.7) end
  if op == "add" then return inplace and x:add_(1.5) or x:add(1.5) end
  if op == "mul" then return inplace and x:mul_(-2.5) or x:mul(-2.5) end
  if op == "rsub" then return 3 - x end
  if op == "rdiv" then return 2 / x end
  if op == "pow" then return inplace and x:pow_(1.7) or x:pow(1.7) end
  return inplace and x[op .. "_"](x) or x[op](x)
end

local unary_cases = {}
for _, u in ipairs(UNARY) do
  unary_cases[#unary_cases + 1] = { op = u.op, lo = u.lo or -3, hi = u.hi or 3, shape = { 129, 300 } }
end
for _, extra in ipairs {
  { op = "exp", lo = -3, hi = 3, shape = { 7, 13 }, inplace = true },
  { op = "clamp", lo = -3, hi = 3, shape = { 129, 300 }, inplace = true },
  { op = "neg", lo = -50, hi = 50, shape = { 5, 9 }, dtype = "int32" },
  { op = "abs", lo = -50, hi = 50, shape = { 5, 9 }, dtype = "int64" },
  { op = "mul", lo = -50, hi = 50, shape = { 33 }, dtype = "int32", label = "op=mul (-2.5, truncated) dtype=int32" },
  { op = "add", lo = 0, hi = 200, shape = { 33 }, dtype = "uint8", label = "op=add (1.5, truncated) dtype=uint8" },
  -- 16-bit floats: computed in float32, rounded once; the device's expf/tanhf
  -- may move a result across a rounding boundary: one unit in the last place
  { op = "exp", lo = -3, hi = 3, shape = { 129, 300 }, dtype = "float16", tol = { rtol = 1e-3, atol = 1e-6 } },
  { op = "tanh", lo = -3, hi = 3, shape = { 33, 7 }, dtype = "bfloat16", tol = { rtol = 8e-3, atol = 1e-6 } },
  { op = "relu", lo = -3, hi = 3, shape = { 33, 7 }, dtype = "float16", inplace = true },
  { op = "mul", lo = -3, hi = 3, shape = { 129, 300 }, dtype = "bfloat16" },
} do unary_cases[#unary_cases + 1] = extra end

reg {
  name = "unary",
  covers = { "facet_tensor_unary" },
  alt = "strided input (in place: a strided tensor)",
  cases = unary_cases,
  run = function(c, ctx)
    local x = ctx:input(values(ctx, c.shape, c.dtype, c.lo, c.hi))
    return { out = apply_unary(x, c.op, c.inplace) }
  end,
}

local binary_cases = {}
local BROADCAST = {
  { a = { 129, 300 }, b = { 129, 300 } },
  { a = { 37, 1 }, b = { 1, 65 } },
  { a = { 3, 5, 7 }, b = { 7 } },
  { a = { 2, 1, 5 }, b = { 3, 1 } },
}
for _, op in ipairs { "add", "sub", "mul", "div", "maximum", "minimum", "pow", "eq", "lt", "gt" } do
  for _, s in ipairs(BROADCAST) do
    binary_cases[#binary_cases + 1] = { op = op, a = s.a, b = s.b }
  end
end
for _, extra in ipairs {
  { op = "add", a = { 37, 65 }, b = { 65 }, inplace = true },
  { op = "div", a = { 9, 11 }, b = { 9, 1 }, dtype = "int32" },
  { op = "mul", a = { 9, 11 }, b = { 11 }, dtype = "int64" },
  { op = "maximum", a = { 4, 6 }, b = { 4, 6 }, dtype = "uint8" },
  { op = "add", a = { 37, 1 }, b = { 1, 65 }, dtype = "float16" },
  { op = "div", a = { 9, 11 }, b = { 9, 1 }, dtype = "float16" },
  { op = "mul", a = { 3, 5, 7 }, b = { 7 }, dtype = "bfloat16" },
  { op = "sub", a = { 129, 300 }, b = { 129, 300 }, dtype = "bfloat16", inplace = true },
} do binary_cases[#binary_cases + 1] = extra end

reg {
  name = "binary",
  covers = { "facet_tensor_binary" },
  alt = "strided operands",
  cases = binary_cases,
  run = function(c, ctx)
    local x, y
    if c.dtype then
      x = values(ctx, c.a, c.dtype, c.dtype == "uint8" and 0 or -40, 40)
      y = values(ctx, c.b, c.dtype, 1, 9)                        -- no integer division by zero
    elseif c.op == "eq" or c.op == "lt" or c.op == "gt" then
      x = values(ctx, c.a, nil, -3, 3):floor_()                  -- small integers: many ties
      y = values(ctx, c.b, nil, -3, 3):floor_()
    elseif c.op == "pow" then
      x, y = values(ctx, c.a, nil, 0.05, 3), values(ctx, c.b, nil, -2, 2)
    elseif c.op == "div" then
      x, y = ctx:randn(c.a), values(ctx, c.b, nil, 0.2, 3)
    else
      x, y = ctx:randn(c.a), ctx:randn(c.b)
    end
    x, y = ctx:input(x), ctx:input(y)
    if c.inplace then return { out = x[c.op .. "_"](x, y) } end
    return { out = x[c.op](x, y) }
  end,
}

reg {
  name = "axpy",
  covers = { "facet_tensor_axpy" },
  strided = false,
  alt = "x + alpha * y through unary and binary ops",
  cases = { { shape = { 1000 }, alpha = 0.5 }, { shape = { 129, 300 }, alpha = -1.75 } },
  run = function(c, ctx)
    local x, y = ctx:randn(c.shape), ctx:randn(c.shape)
    if ctx.alt then return { out = x:add(y:mul(c.alpha)) } end
    return { out = x:axpy_(c.alpha, y) }
  end,
}

reg {
  name = "amp_unscale",
  covers = { "facet_amp_unscale" },
  strided = false,
  alt = "one tensor at a time, the flags combined",
  cases = {
    { dtypes = { "float32", "float16", "bfloat16" }, scale = 65536 },
    { dtypes = { "float32", "float32" }, scale = 1024, poison = { 2, 77, 1 / 0 } },
    { dtypes = { "float16", "bfloat16", "float16" }, scale = 2 ^ 20, poison = { 3, 1000, 0 / 0 } },
    { dtypes = { "bfloat16" }, scale = 0.5, poison = { 1, 5, -1 / 0 } },
  },
  run = function(c, ctx)
    local grads = {}
    for i, dt in ipairs(c.dtypes) do
      grads[i] = ctx:randn({ 129, 30 + 7 * i }, 0, c.scale):to(dt)
    end
    if c.poison then grads[c.poison[1]]:view(-1)[c.poison[2]] = c.poison[3] end
    local list = ffi.new("facet_tensor *[?]", #grads)
    local found = ffi.new("int[1]")
    local any = 0
    if ctx.alt then
      for _, g in ipairs(grads) do
        list[0] = g.h
        check(C.facet_amp_unscale(list, 1, 1 / c.scale, found))
        any = math.max(any, found[0])
      end
    else
      for i, g in ipairs(grads) do list[i - 1] = g.h end
      check(C.facet_amp_unscale(list, #grads, 1 / c.scale, found))
      any = found[0]
    end
    local r = { found = any }
    for i, g in ipairs(grads) do r["grad" .. i] = g end
    return r
  end,
}

-- ---- reductions --------------------------------------------------------------------------

local reduce_cases = {}
for _, op in ipairs { "sum", "mean", "sumsq", "max", "min", "argmax", "argmin" } do
  for _, s in ipairs {
    { shape = { 129, 300 } },                     -- everything
    { shape = { 129, 300 }, dim = 1 },            -- the column reduction (dim 1 of a 2-D tensor)
    { shape = { 129, 300 }, dim = 2 },
    { shape = { 2048, 16 }, dim = 1 },            -- a bias gradient's shape
    { shape = { 5, 7, 9 }, dim = 2, keepdim = true },
    { shape = { 40, 50 }, dim = 2, ties = true }, -- small integers: ties go to the first index
  } do
    local c = copy_table(s)
    c.op = op
    reduce_cases[#reduce_cases + 1] = c
  end
end
reduce_cases[#reduce_cases + 1] = { op = "sum", shape = { 4, 0 }, dim = 2, label = "op=sum over an empty dim" }
-- 16-bit inputs (widened, reduced in float32 or better); along a dim the result
-- is rounded to the input's dtype, where CPU and device may differ by one unit
for _, extra in ipairs {
  { op = "sum", shape = { 129, 300 }, dtype = "float16" },
  { op = "sum", shape = { 129, 300 }, dim = 1, dtype = "float16", tol = { rtol = 1e-3, atol = 1e-3 } },
  { op = "mean", shape = { 2048, 16 }, dim = 1, dtype = "bfloat16", tol = { rtol = 8e-3, atol = 1e-3 } },
  { op = "max", shape = { 40, 50 }, dim = 2, dtype = "bfloat16" },
  { op = "argmin", shape = { 129, 300 }, dim = 2, dtype = "float16" },
  { op = "sumsq", shape = { 5, 7, 9 }, dim = 2, keepdim = true, dtype = "float16", tol = { rtol = 1e-3, atol = 1e-3 } },
} do reduce_cases[#reduce_cases + 1] = extra end

reg {
  name = "reduce",
  covers = { "facet_tensor_reduce" },
  alt = "strided input",
  -- CPU sums in double, a device in float in another order
  tol = { rtol = 1e-4, atol = 1e-4 },
  cases = reduce_cases,
  run = function(c, ctx)
    local x = c.ties and ctx:randn(c.shape, 0, 2):floor_() or ctx:randn(c.shape)
    if c.dtype then x = x:to(c.dtype) end
    x = ctx:input(x)
    local op = c.op
    if c.dim == nil then
      return { out = x[op](x) }
    end
    if op == "max" or op == "min" then
      local v, i = x[op](x, c.dim, c.keepdim)
      return { values = v, indices = i }
    end
    return { out = x[op](x, c.dim, c.keepdim) }
  end,
}

-- the square sums of a list of gradients (an optimizer's norm), with a deferred per-row part
reg {
  name = "sumsq_list",
  covers = { "facet_tensor_sumsq_list" },
  strided = false,
  alt = "one tensor at a time",
  -- CPU sums in double in its order, a device in double in another
  tol = { rtol = 1e-6, atol = 1e-6 },
  cases = {
    { shapes = { { 129, 300 }, { 64 }, { 0 }, { 3, 5, 7 } }, label = "129x300, 64, 0, 3x5x7" },
    { shapes = { { 37, 16 }, { 300 }, { 1 } }, deferred = 1, label = "37x16 deferred, 300, 1" },
    { shapes = { { 100003 }, { 2, 9 } }, deferred = 2, count = 60, label = "60 tensors (two launches on a device), 100003 and 2x9 deferred" },
  },
  run = function(c, ctx)
    local shapes = {}
    for i = 1, c.count or #c.shapes do shapes[i] = c.shapes[(i - 1) % #c.shapes + 1] end
    local n = #shapes
    local xs, coefs, params = ffi.new("facet_tensor *[?]", n), ffi.new("facet_tensor *[?]", n),
      ffi.new("facet_tensor *[?]", n)
    local keep = {}
    for i, sh in ipairs(shapes) do
      local x = ctx:randn(sh)
      keep[#keep + 1], xs[i - 1] = x, x.h
      if c.deferred and (i - 1) % #c.shapes + 1 == c.deferred then
        local w, k = ctx:randn(sh), ctx:randn({ #sh == 2 and sh[1] or 1 })
        keep[#keep + 1], keep[#keep + 2] = w, k
        coefs[i - 1], params[i - 1] = k.h, w.h
      end
    end
    local out = tensor.zeros({ n }, { device = ctx.device })
    if not ctx.alt then
      check(C.facet_tensor_sumsq_list(out.h, xs, coefs, params, n))
      return { out = out }
    end
    for i = 0, n - 1 do
      check(C.facet_tensor_sumsq_list(out:narrow(1, i + 1, 1).h, xs + i, coefs + i, params + i, 1))
    end
    return { out = out }
  end,
}

-- ---- linear algebra --------------------------------------------------------------------------

local matmul_cases = {}
for _, t in ipairs { { false, false }, { true, false }, { false, true }, { true, true } } do
  matmul_cases[#matmul_cases + 1] = { m = 37, n = 29, k = 16, ta = t[1], tb = t[2] }
end
for _, t in ipairs { { false, false }, { true, false }, { false, true }, { true, true } } do
  -- an operand stored with an empty last dim (a M x 0, b N x 0 transposed) once left lda/ldb unset
  matmul_cases[#matmul_cases + 1] = { m = 5, n = 6, k = 0, ta = t[1], tb = t[2], beta = 0.5 }
end
for _, extra in ipairs {
  { m = 5, n = 6, k = 0, ta = true, beta = 0, label = "k=0 beta=0 over NaN" },
  { m = 17, n = 9, k = 23, alpha = 0.5, beta = 2 },
  { m = 300, n = 256, k = 64, tb = true },
  { batch = 3, m = 9, n = 7, k = 5, shared_b = true },
  { batch = 3, m = 9, n = 7, k = 5, tb = true },
  { batch = 4, m = 6, n = 8, k = 3, ta = true, shared_b = true, beta = 1 },
  -- 16-bit operands: float32 accumulation (CPU: widened SGEMM; CUDA: tensor
  -- cores); a 16-bit out is rounded once, so CPU and device may differ by a unit
  { m = 37, n = 29, k = 16, dtype = "float16", tol = { rtol = 1e-3, atol = 1e-3, mtol = 1e-3 } },
  { m = 300, n = 256, k = 64, tb = true, dtype = "bfloat16", tol = { rtol = 8e-3, atol = 8e-3, mtol = 8e-3 } },
  { m = 17, n = 9, k = 23, ta = true, alpha = 0.5, beta = 2, dtype = "float16", out_dtype = "float32" },
  { batch = 3, m = 9, n = 7, k = 5, shared_b = true, dtype = "bfloat16", out_dtype = "float32" },
  { m = 5, n = 6, k = 0, beta = 0.5, dtype = "float16", tol = { rtol = 1e-3, atol = 1e-3 } },
} do matmul_cases[#matmul_cases + 1] = extra end

reg {
  name = "matmul",
  covers = { "facet_tensor_matmul" },
  alt = "operands stored transposed (views BLAS reads without copying)",
  tol = { rtol = 1e-5, atol = 1e-5, mtol = 1e-5 },
  label = function(c)
    if c.label then return c.label end
    return ("%sm=%d n=%d k=%d%s%s%s%s%s%s"):format(c.batch and ("batch=" .. c.batch .. " ") or "", c.m, c.n, c.k,
      c.ta and " ta" or "", c.tb and " tb" or "", c.shared_b and " shared b" or "",
      c.alpha and (" alpha=" .. c.alpha) or "", c.beta and (" beta=" .. c.beta) or "",
      c.dtype and (" " .. c.dtype .. " -> " .. (c.out_dtype or c.dtype)) or "")
  end,
  cases = matmul_cases,
  run = function(c, ctx)
    local function shape(rows, cols, batched)
      if batched then return { c.batch, rows, cols } end
      return { rows, cols }
    end
    local a = ctx:randn(shape(c.ta and c.k or c.m, c.ta and c.m or c.k, c.batch))
    local b = ctx:randn(shape(c.tb and c.n or c.k, c.tb and c.k or c.n, c.batch and not c.shared_b))
    local out = c.label == "k=0 beta=0 over NaN" and facet.full(shape(c.m, c.n, c.batch), 0 / 0, { device = ctx.device })
      or ctx:randn(shape(c.m, c.n, c.batch))
    if c.dtype then
      a, b, out = a:to(c.dtype), b:to(c.dtype), out:to(c.out_dtype or c.dtype)
    end
    if ctx.alt then
      if c.k > 0 then a, b = B.transposed_view(a), B.transposed_view(b) end
    end
    a:matmul(b, { transpose_a = c.ta, transpose_b = c.tb, alpha = c.alpha or 1, beta = c.beta or 0, out = out })
    return { out = out }
  end,
}

reg {
  name = "l2_normalize",
  covers = { "facet_tensor_l2_normalize", "facet_tensor_row_norms", "facet_tensor_l2_normalize_backward" },
  alt = "strided x; row norms as sqrt(sum of squares) along dim 2",
  cases = {
    { rows = 37, cols = 16 },
    { rows = 2048, cols = 16 },
    { rows = 5, cols = 300, zero_row = 2 },
  },
  run = function(c, ctx)
    local x = ctx:randn({ c.rows, c.cols })
    if c.zero_row then x:select(1, c.zero_row):zero_() end
    local dy = ctx:randn({ c.rows, c.cols })
    local eps = 1e-12
    local y, norms = ctx:input(x):l2_normalize(eps)
    local rn
    if ctx.alt then rn = x:norm(2)
    else
      rn = facet.empty({ c.rows }, { device = ctx.device })
      check(C.facet_tensor_row_norms(rn.h, x.h))
    end
    local dx = facet.empty({ c.rows, c.cols }, { device = ctx.device })
    check(C.facet_tensor_l2_normalize_backward(dx.h, dy.h, y.h, norms.h, eps))
    return { y = y, norms = norms, row_norms = rn, dx = dx }
  end,
}

reg {
  name = "rows_axpy",
  covers = { "facet_tensor_rows_axpy" },
  strided = false,
  alt = "out + coef (as a column) * x through broadcasting binary ops",
  cases = { { rows = 37, cols = 16 }, { rows = 300, cols = 129 } },
  run = function(c, ctx)
    local out, coef, x = ctx:randn({ c.rows, c.cols }), ctx:randn({ c.rows }), ctx:randn({ c.rows, c.cols })
    if ctx.alt then return { out = out:add(coef:reshape { c.rows, 1 }:mul(x)) } end
    check(C.facet_tensor_rows_axpy(out.h, coef.h, x.h))
    return { out = out }
  end,
}

-- ---- indexing ----------------------------------------------------------------------------------

-- 1-based indices as a host table (the alt paths loop over them)
local function index_of(ctx, n, hi, dtype)
  local t = ctx:ints(n, 1, hi, dtype)
  return t, host_values(t)
end

reg {
  name = "index_select",
  covers = { "facet_tensor_index_select", "facet_tensor_index_add" },
  strided = false,
  alt = "row by row: select and copy, select and axpy",
  tol = { rtol = 1e-5, atol = 1e-5 },
  cases = {
    { rows = 50, cols = 16, n = 120, dtype = "int64", alpha = 1 },
    { rows = 50, cols = 16, n = 120, dtype = "int32", alpha = -0.5 },
    { rows = 1000, cols = 33, n = 2048, dtype = "int64", alpha = 2 },
  },
  run = function(c, ctx)
    local src = ctx:randn({ c.rows, c.cols })
    local idx, list = index_of(ctx, c.n, c.rows, c.dtype)
    local g = ctx:randn({ c.n, c.cols })
    local out, gsrc
    if ctx.alt then
      out = facet.empty({ c.n, c.cols }, { device = ctx.device })
      gsrc = facet.zeros({ c.rows, c.cols }, { device = ctx.device })
      for i, j in ipairs(list) do
        out:select(1, i):copy(src:select(1, j))
        gsrc:select(1, j):axpy_(c.alpha, g:select(1, i))
      end
    else
      out = src:index_select(idx)
      gsrc = facet.zeros({ c.rows, c.cols }, { device = ctx.device }):index_add_(idx, g, c.alpha)
    end
    return { out = out, grad_src = gsrc }
  end,
}

reg {
  name = "index_copy",
  covers = { "facet_tensor_index_copy" },
  strided = false,
  alt = "row by row: select and copy",
  cases = { { rows = 50, cols = 16, n = 31, dtype = "int64" }, { rows = 997, cols = 5, n = 600, dtype = "int32" } },
  run = function(c, ctx)
    local dst = ctx:randn({ c.rows, c.cols })
    local src = ctx:randn({ c.n, c.cols })
    local list = {}                                     -- distinct rows: (7 i + 3) mod rows
    for i = 0, c.n - 1 do list[i + 1] = (7 * i + 3) % c.rows + 1 end
    if ctx.alt then
      for i, j in ipairs(list) do dst:select(1, j):copy(src:select(1, i)) end
    else
      dst:index_copy_(facet.tensor(list, { dtype = c.dtype, device = ctx.device }), src)
    end
    return { out = dst }
  end,
}

reg {
  name = "gather_cols",
  covers = { "facet_tensor_gather_cols", "facet_tensor_scatter_cols" },
  strided = false,
  alt = "element by element: get and set",
  cases = { { rows = 37, cols = 16, dtype = "int64" }, { rows = 2048, cols = 7, dtype = "int32" } },
  run = function(c, ctx)
    local src = ctx:randn({ c.rows, c.cols })
    local idx, list = index_of(ctx, c.rows, c.cols, c.dtype)
    local g = ctx:randn({ c.rows })
    local out, gsrc
    if ctx.alt then
      out = facet.empty({ c.rows }, { device = ctx.device })
      gsrc = facet.zeros({ c.rows, c.cols }, { device = ctx.device })
      for i, j in ipairs(list) do
        out:set(src:get(i, j), i)
        gsrc:set(g:get(i), i, j)
      end
    else
      out = src:gather(idx)
      gsrc = facet.zeros({ c.rows, c.cols }, { device = ctx.device }):scatter_(idx, g)
    end
    return { out = out, grad_src = gsrc }
  end,
}

reg {
  name = "permute",
  covers = { "facet_tensor_permute" },
  alt = "strided input",
  cases = {
    { shape = { 37, 65 }, perm = { 2, 1 } },
    { shape = { 3, 4, 5 }, perm = { 3, 1, 2 } },
    { shape = { 2, 3, 4, 5 }, perm = { 4, 2, 3, 1 } },
    { shape = { 64, 32, 20 }, perm = { 2, 3, 1 } },
  },
  run = function(c, ctx)
    return { out = ctx:input(ctx:randn(c.shape)):permute(c.perm) }
  end,
}

-- ---- loss heads ------------------------------------------------------------------------------

local ROW = {
  MAX = tonumber(C.FACET_HEAD_ROW_MAX) + 1, SUMEXP = tonumber(C.FACET_HEAD_ROW_SUMEXP) + 1,
  LOSS = tonumber(C.FACET_HEAD_ROW_LOSS) + 1, COUNT = tonumber(C.FACET_HEAD_ROW_COUNT),
}

--- A head's forward and backward through the block API: classes in blocks
-- [bounds[b], bounds[b+1]), target for every block, then partial per block
-- with the row max and sum of exponentials merged in Lua, finish once and
-- backward per block (what a head sharded over devices does). Returns the
-- outputs Head:forward/backward give, and the rows.
local function head_blocked(head, x, y, bounds)
  local dev, h = head.device, head.handle
  local Bn, D, K = x:size(1), head.dim, head.classes
  local sc = head.subcenters or 1      -- sub-centres: k rows of W a class
  local rows = facet.zeros({ Bn, ROW.COUNT }, { device = dev })
  local input, xhat, xnorm = x, nil, nil
  if head.kind ~= "raw" then
    xhat, xnorm = x:l2_normalize(1e-12)
    input = xhat
    if head.kind == "l2" then input = xhat:mul(head.alpha:item()) end
  end
  if head.name == "a-softmax" and not head.lambda then       -- SphereFace's schedule, as Head:forward
    check(C.facet_head_set(h, C.FACET_HEAD_PARAM_LAMBDA, math.max(5, 1000 * (1 + 0.0001 * head.iter) ^ -2)))
    head.iter = head.iter + 1
  end
  local wnorm = head.kind == "cosine" and head.weight:norm(2):clamp_(1e-12, math.huge) or nil
  -- AdaFace's per-row margins, before the target calls (Head:forward does the same)
  if head.norm_h then
    check(C.facet_head_update_norms(h, rows.h, xnorm.h, head.batch_mean.h, head.batch_std.h, head.momentum, head.norm_h))
  end
  if head.l_a then check(C.facet_head_update_margins(h, rows.h, xnorm.h)) end     -- MagFace's per-row margins
  local blocks = {}
  for b = 1, #bounds - 1 do
    local off, kb = bounds[b], bounds[b + 1] - bounds[b]
    local blk = { off = off, kb = kb, w = head.weight:narrow(1, off * sc + 1, kb * sc) }
    blk.wn = wnorm and wnorm:narrow(1, off * sc + 1, kb * sc) or nil
    blk.bias = head.bias and head.bias:narrow(1, off + 1, kb) or nil
    blk.z = input:matmul(blk.w, { transpose_b = true })
    if sc > 1 then
      -- each class's best sub-centre; the row passes then take unit norms
      blk.sub, blk.wn_sub = blk.z, blk.wn
      blk.z = facet.empty({ Bn, kb }, { device = dev })
      blk.index = facet.empty({ Bn, kb }, { dtype = "uint8", device = dev })
      check(C.facet_head_subcenter_max(blk.z.h, blk.index.h, blk.sub.h, blk.wn_sub.h))
      blk.wn = facet.ones({ kb }, { device = dev })
    end
    check(C.facet_head_target(h, rows.h, blk.z.h, h_of(blk.wn), h_of(blk.bias), y.h, off, K))
    blocks[b] = blk
  end
  -- ElasticFace's margins for this step, once every row's c_y is in (Head:forward's own call)
  if head.elastic then head:_elastic({}, rows) end
  -- CurricularFace's t, once every row's c_y is in (Head:forward does the same)
  if head.h == "curricular" then check(C.facet_head_update_t(h, rows.h, head.t.h, head.momentum)) end
  local M, S
  for _, blk in ipairs(blocks) do
    check(C.facet_head_partial(h, rows.h, blk.z.h, h_of(blk.wn), h_of(blk.bias), y.h, blk.off))
    local m = rows:narrow(2, ROW.MAX, 1):clone():reshape { Bn }
    local s = rows:narrow(2, ROW.SUMEXP, 1):clone():reshape { Bn }
    if not M then M, S = m, s
    else
      local Mn = M:maximum(m)
      S = S:mul((M - Mn):exp()):add(s:mul((m - Mn):exp()))
      M = Mn
    end
  end
  rows:narrow(2, ROW.MAX, 1):copy(M:reshape { Bn, 1 })
  rows:narrow(2, ROW.SUMEXP, 1):copy(S:reshape { Bn, 1 })
  local loss = ffi.new("double[1]")
  check(C.facet_head_finish(h, rows.h, loss))
  local dinput = facet.zeros({ Bn, D }, { device = dev })
  local gw = facet.zeros({ K * sc, D }, { device = dev })
  local gb = head.bias and facet.zeros({ K }, { device = dev }) or nil
  for b, blk in ipairs(blocks) do
    local colsum = facet.empty({ blk.kb }, { device = dev })
    local colsum_cos = facet.empty({ blk.kb }, { device = dev })
    check(C.facet_head_backward(h, blk.z.h, rows.h, h_of(blk.wn), h_of(blk.bias), y.h, blk.off, colsum.h, colsum_cos.h))
    local g, wn = blk.z, blk.wn
    if sc > 1 then
      -- back to the sub-centre rows: the gradient of the GEMM output and the radial sums per row
      colsum_cos = facet.empty({ blk.kb * sc }, { device = dev })
      check(C.facet_head_subcenter_scatter(blk.sub.h, colsum_cos.h, blk.z.h, blk.index.h, blk.wn_sub.h))
      g, wn = blk.sub, blk.wn_sub
    end
    g:matmul(blk.w, { out = dinput, beta = b > 1 and 1 or 0 })
    local gwb = gw:narrow(1, blk.off * sc + 1, blk.kb * sc)
    g:matmul(input, { transpose_a = true, out = gwb })
    if wn then
      local coef = colsum_cos:div(wn):neg()          -- the radial part of the normalisation
      check(C.facet_tensor_rows_axpy(gwb.h, coef.h, blk.w.h))
    end
    if gb then gb:narrow(1, blk.off + 1, blk.kb):copy(colsum) end
  end
  local r = { loss = loss[0], grad_weight = gw, grad_bias = gb }
  if head.kind == "raw" then r.dx = dinput
  else
    if head.kind == "l2" then
      if head.learn_alpha then r.grad_alpha = facet.tensor({ dinput:mul(xhat):sum() }) end
      dinput = dinput:mul(head.alpha:item())
    end
    local dx = facet.empty({ Bn, D }, { device = dev })
    check(C.facet_tensor_l2_normalize_backward(dx.h, dinput.h, xhat.h, xnorm.h, 1e-12))
    if head.l_a then
      -- MagFace: the gradient through the norms
      local coef = facet.empty({ Bn }, { device = dev })
      check(C.facet_head_norm_grad(h, rows.h, xnorm.h, coef.h))
      check(C.facet_tensor_rows_axpy(dx.h, coef.h, xhat.h))
    end
    r.dx = dx
  end
  return r, rows
end
O.head_blocked = head_blocked

-- facet_head_bad_label after a good forward: row -1 (no label outside [0, classes))
local function head_bad_row(head)
  local v = ffi.new("int64_t[3]")
  check(C.facet_head_bad_label(head.handle, v, v + 1, v + 2))
  return tonumber(v[0])
end

local function head_opts(c)
  local o = type(c.opts) == "function" and c.opts() or copy_table(c.opts)
  o.classes, o.dim = c.K, c.D
  return o
end

--- Hard mining keeps the floor(keep B) highest losses: a keep whose cut falls
-- between two losses that differ by a wide margin (chosen from a CPU pass),
-- so rounding differences between backends cannot swap a row across it.
local function stable_keep(c, x, W, bias, y)
  local opts = head_opts(c)
  opts.keep = 1
  local head = facet.heads.new(c.head, opts)
  head.weight:copy(W)
  if head.bias then head.bias:copy(bias) end
  local _, rows = head_blocked(head, x:to("cpu"), y:to("cpu"), { 0, c.K })
  local losses = host_values(rows:narrow(2, ROW.LOSS, 1))
  table.sort(losses, function(a, b) return a > b end)
  local n, best, best_gap = #losses, nil, -1
  for j = math.max(1, math.ceil(n / 2)), n - 1 do
    local gap = losses[j] - losses[j + 1]
    if gap > best_gap then best, best_gap = j, gap end
  end
  best = best or n
  return math.min(1, (best + 0.5) / n)    -- one row: keep 1 (the row is kept whatever keep is)
end

local HEAD_VARIANTS = {
  { head = "mv-am", tag = "scripted h",
    opts = function() return { h = function(t, cos, I, s) return E.exp(s * t * (cos + 1) * I) end } end },
  { head = "arc", tag = "scripted margin",
    opts = function() return { margin = function(cos, m) return E.cos(E.acos(cos) + m) - 0.1 end } end },
  { head = "l2-softmax", tag = "learn_alpha", opts = { learn_alpha = true } },
  { head = "arc", tag = "easy_margin", opts = { easy_margin = true } },
  { head = "arc", tag = "3 sub-centres", opts = { subcenters = 3 } },
  { head = "elastic-cos", tag = "plus, 2 sub-centres", opts = { plus = true, std = 0.1, subcenters = 2 } },
}
-- K: small, >= 32, and past the 256-class chunk (not a multiple of it); the
-- batch up to 2048; class blocks [0,13), [13,270), [270,300): offsets > 0.
-- The GPU cuts rows into segments of 2048 classes, 4 rows a block: K = 4099
-- (two segments and 3 classes) with B = 5, and one row over blocks of 2049 and
-- 451 classes (a segment and one class, then a block under one segment)
local HEAD_SIZES = {
  { K = 7, B = 5, D = 16 },
  { K = 37, B = 2048, D = 16 },
  { K = 300, B = 64, D = 16, blocks = { 0, 13, 270, 300 } },
  { K = 4099, B = 5, D = 8 },
  { K = 2500, B = 1, D = 8, blocks = { 0, 2049, 2500 } },
}

local head_cases = {}
local function add_head_cases(name, tag, opts)
  for _, s in ipairs(HEAD_SIZES) do
    head_cases[#head_cases + 1] = { head = name, opts = opts or {}, K = s.K, B = s.B, D = s.D, blocks = s.blocks,
      label = ("%s%s K=%d B=%d%s"):format(name, tag and (" (" .. tag .. ")") or "", s.K, s.B,
        s.blocks and (" blocks {" .. table.concat(s.blocks, ",") .. "}") or "") }
  end
end
for _, name in ipairs(facet.heads.names()) do add_head_cases(name) end
for _, v in ipairs(HEAD_VARIANTS) do add_head_cases(v.head, v.tag, v.opts) end
O.HEAD_SIZES = HEAD_SIZES

reg {
  name = "head",
  covers = { "facet_head_init", "facet_head_free", "facet_head_set", "facet_head_set_program", "facet_head_target",
    "facet_head_partial", "facet_head_finish", "facet_head_backward", "facet_head_bad_label", "facet_head_update_t",
    "facet_head_update_norms", "facet_head_update_margins", "facet_head_norm_grad", "facet_head_elastic",
    "facet_head_subcenter_max", "facet_head_subcenter_scatter" },
  strided = false,
  alt = "the other of Head:forward/backward (one block) and the block API over class blocks with offsets > 0",
  -- the loss is a mean; gradients are compared relative to their largest element
  tol = { rtol = 1e-4, atol = 0, mtol = 1e-4 },
  cases = head_cases,
  run = function(c, ctx)
    local x = ctx:randn({ c.B, c.D })
    local W = ctx:randn({ c.K * (type(c.opts) == "table" and c.opts.subcenters or 1), c.D })   -- K k rows: sub-centres
    local bias = ctx:randn({ c.K }, 0, 0.3)
    local y = ctx:ints(c.B, 0, c.K - 1)
    local opts = head_opts(c)
    if c.head:match("^hm%-") then opts.keep = stable_keep(c, x, W, bias, y) end
    local head = facet.heads.new(c.head, opts):to(ctx.device)
    head.weight:copy(W)
    if head.bias then head.bias:copy(bias) end
    local blocked = c.blocks ~= nil
    if ctx.alt then blocked = not blocked end
    if blocked then
      local r = head_blocked(head, x, y, c.blocks or { 0, math.floor(c.K / 3), c.K })
      r.bad_row = head_bad_row(head)
      return r
    end
    local r = { loss = head:forward(x, y), bad_row = head_bad_row(head) }
    r.dx = head:backward()
    r.grad_weight = head.grad_weight
    r.grad_bias = head.grad_bias
    if head.learn_alpha then r.grad_alpha = head.grad_alpha end
    return r
  end,
}

reg {
  name = "head_program",
  covers = { "facet_head_eval_program" },
  devices = { "cpu" },
  strided = false,
  alt = "facet.expr.eval of the same expressions (Lua, double precision)",
  tol = { rtol = 1e-5, atol = 1e-5 },
  cases = { { slot = "MARGIN" }, { slot = "MARGIN_GRAD" }, { slot = "LOGH" }, { slot = "LOGH_GRAD" } },
  run = function(c, ctx)
    local head = facet.heads.new("mv-arc", { classes = 3, dim = 2,
      margin = function(cos, m) return E.cos(E.acos(cos) + m) - 0.1 end,
      h = function(t, cos, I, s) return 1 + I * s * t * (cos + 1) * (cos + 1) end })
    local node = ({ MARGIN = head.margin_expr, MARGIN_GRAD = E.diff(head.margin_expr), LOGH = head.logh_expr,
      LOGH_GRAD = E.diff(head.logh_expr) })[c.slot]
    local n = 397
    local cs, out = ffi.new("float[?]", n), facet.empty({ n })
    for i = 0, n - 1 do cs[i] = -0.99 + 1.98 * i / (n - 1) end
    local p = out:data_ptr()
    if ctx.alt then
      for i = 0, n - 1 do p[i] = E.eval(node, tonumber(cs[i])) end
    else
      check(C.facet_head_eval_program(head.handle, C["FACET_HEAD_PROGRAM_" .. c.slot], n, cs, p))
    end
    return { values = out }
  end,
}

-- ---- layers ----------------------------------------------------------------------------------------

local function pair(v) if type(v) == "table" then return v end return { v, v } end

local conv_cases = {
  { label = "1x1", N = 2, C = 8, H = 9, W = 9, O = 12, k = 1 },
  { label = "1x1 stride 2", N = 2, C = 8, H = 9, W = 9, O = 6, k = 1, stride = 2 },
  { label = "3x3 pad 1", N = 2, C = 4, H = 10, W = 10, O = 6, k = 3, pad = 1 },
  { label = "3x3 stride 2 pad 1 on 11x9", N = 3, C = 4, H = 11, W = 9, O = 5, k = 3, stride = 2, pad = 1 },
  { label = "3x1 pad {1,0}", N = 2, C = 3, H = 7, W = 6, O = 4, k = { 3, 1 }, pad = { 1, 0 } },
  { label = "3x3 dilation 2 pad 2", N = 2, C = 4, H = 12, W = 10, O = 4, k = 3, dilation = 2, pad = 2 },
  { label = "5x5 stride 2 dilation 2, no bias", N = 2, C = 3, H = 15, W = 13, O = 4, k = 5, stride = 2, dilation = 2,
    pad = 2, bias = false },
  { label = "grouped (4 groups)", N = 2, C = 8, H = 8, W = 8, O = 12, k = 3, pad = 1, groups = 4 },
  { label = "depthwise 3x3", N = 2, C = 6, H = 9, W = 9, O = 6, k = 3, pad = 1, groups = 6 },
  { label = "depthwise stride 2, multiplier 2", N = 2, C = 4, H = 10, W = 10, O = 8, k = 3, stride = 2, pad = 1, groups = 4 },
  { label = "workspace of 1 image: 3 chunks", N = 3, C = 3, H = 8, W = 8, O = 4, k = 3, pad = 1, ws = 1 },
  { label = "workspace of 2 images, 5 images: chunks 2, 2, 1", N = 5, C = 3, H = 8, W = 8, O = 4, k = 3, pad = 1, ws = 2 },
  { label = "grouped, workspace of 1 image", N = 3, C = 4, H = 7, W = 7, O = 6, k = 3, pad = 1, groups = 2, ws = 1 },
  { label = "large: 16->32, 3x3, 40x40, 8 images", N = 8, C = 16, H = 40, W = 40, O = 32, k = 3, pad = 1 },
  -- the recommended CUDA workspace (2^26 floats) holds all 29 images' columns
  -- and grad_out side by side: one chunk, one weight-gradient GEMM
  { label = "large: 32->4, 3x3, 64x64, 29 images", N = 29, C = 32, H = 64, W = 64, O = 4, k = 3, pad = 1 },
  -- CUDA's weight gradient takes the images whose columns and grad_out fit,
  -- [40 rows][images x 36, padded to 8]: 2 images of 72 in 3 images' columns
  -- (chunks 2, 2, 1; the forward's 3, 2)
  { label = "workspace of 3 images, 5 images: weight gradient in chunks 2, 2, 1", N = 5, C = 4, H = 6, W = 6, O = 4,
    k = 3, pad = 1, ws = 3 },
  -- pointwise: x's 8 planes and grad_out's 12, 2 images of 56 in 6 images' planes
  { label = "pointwise, workspace of 6 images: weight gradient in chunks 2, 2, 1", N = 5, C = 8, H = 5, W = 5, O = 12,
    k = 1, ws = 6 },
  -- Winograd F(4x4, 3x3) on both devices (conv_winograd.c, core/cuda/conv_winograd.cu):
  -- each within about 1e-5 of the largest value of the exact result, in its own order
  { label = "Winograd: 32->48, 3x3 on 13x11, 3 images", N = 3, C = 32, H = 13, W = 11, O = 48, k = 3, pad = 1,
    tol = { rtol = 1e-4, atol = 1e-5, mtol = 4e-5 } },
  -- the CPU's least workspace for this layer (shared filters and one slot); CUDA's
  -- transformed tiles take 36 x 64 x 72 floats for 2 images, so chunks of 2 and 1
  { label = "Winograd, workspace of 208,512 floats: CUDA's chunks of 2 and 1 images", N = 3, C = 32, H = 24, W = 24,
    O = 32, k = 3, pad = 1, ws_floats = 208512, tol = { rtol = 1e-4, atol = 1e-5, mtol = 4e-5 } },
}

-- 16-bit activations (float32 weights and accumulation): the CPU rounds its
-- float32 result once, CUDA's cublasGemmEx sums in another order, so results
-- may differ by a rounding of the 16-bit format (2^-11 float16, 2^-8 bfloat16)
local HALF_TOL = { float16 = { rtol = 2e-3, atol = 2e-3, mtol = 2e-3 }, bfloat16 = { rtol = 1e-2, atol = 1e-2, mtol = 1e-2 } }
local function half_case(c, dtype)
  c.dtype, c.tol = dtype, HALF_TOL[dtype]
  c.label = c.label and (dtype .. " " .. c.label) or nil
  return c
end
local function to_dtype(t, c) if c.dtype then return t:to(c.dtype) end return t end
for _, c in ipairs {
  half_case({ label = "3x3 stride 2 pad 1", N = 2, C = 3, H = 9, W = 7, O = 4, k = 3, stride = 2, pad = 1 }, "float16"),
  half_case({ label = "3x3 stride 2 pad 1", N = 2, C = 3, H = 9, W = 7, O = 4, k = 3, stride = 2, pad = 1 }, "bfloat16"),
  half_case({ label = "pointwise, no bias", N = 2, C = 8, H = 6, W = 6, O = 12, k = 1, bias = false }, "float16"),
  half_case({ label = "grouped, dilation 2", N = 2, C = 8, H = 10, W = 9, O = 6, k = 3, pad = 2, dilation = 2, groups = 2 },
    "bfloat16"),
  half_case({ label = "depthwise 3x3", N = 2, C = 6, H = 9, W = 9, O = 6, k = 3, pad = 1, groups = 6 }, "float16"),
  half_case({ label = "workspace of 1 image: 3 chunks", N = 3, C = 3, H = 8, W = 8, O = 4, k = 3, pad = 1, ws = 1 },
    "bfloat16"),
  -- 16-bit columns take half the bytes: 3 images of 112 in 2 images' float32 columns
  half_case({ label = "workspace of 2 images, 5 images: weight gradient in chunks 3, 2", N = 5, C = 4, H = 6, W = 6,
    O = 4, k = 3, pad = 1, ws = 2 }, "float16"),
} do conv_cases[#conv_cases + 1] = c end

reg {
  name = "conv2d",
  covers = { "facet_conv2d_workspace_size", "facet_conv2d_forward", "facet_conv2d_backward" },
  strided = false,
  alt = "images in turn on one workspace slot instead of side by side",
  tol = { rtol = 1e-4, atol = 1e-5, mtol = 1e-5 },
  cases = conv_cases,
  run = function(c, ctx)
    local m = nn.Conv2d(c.C, c.O, c.k, { stride = c.stride, padding = c.pad, dilation = c.dilation, groups = c.groups,
      bias = c.bias })
    m:to(ctx.device)
    m.weight:copy(ctx:randn(m.weight:shape(), 0, 0.3))
    if m.bias then m.bias:copy(ctx:randn(m.bias:shape(), 0, 0.3)) end
    local x = to_dtype(ctx:randn({ c.N, c.C, c.H, c.W }), c)
    local oshape = m:output_shape(x:shape())
    local gout = to_dtype(ctx:randn(oshape), c)
    m:zero_grad()
    local out, gx
    if c.ws or c.ws_floats then
      -- a workspace of c.ws images' columns, or of c.ws_floats floats
      -- (facet_conv2d_workspace_size would give more)
      local k = pair(c.k)
      local cin = ctx.device == "cuda" and c.C or c.C / (c.groups or 1)
      local ws = facet.empty({ c.ws_floats or c.ws * cin * k[1] * k[2] * oshape[3] * oshape[4] },
        { device = ctx.device })
      out = facet.empty(oshape, { dtype = c.dtype, device = ctx.device })
      check(C.facet_conv2d_forward(out.h, x.h, m.weight.h, h_of(m.bias), ws.h, m.settings))
      gx = facet.empty(x:shape(), { dtype = c.dtype, device = ctx.device })
      check(C.facet_conv2d_backward(gx.h, m.grad_weight.h, h_of(m.grad_bias), gout.h, x.h, m.weight.h, ws.h,
        m.settings))
    else
      out = m:forward(x)
      gx = m:backward(x, gout)
    end
    return { out = out, grad_x = gx, grad_weight = m.grad_weight, grad_bias = m.grad_bias }
  end,
}

reg {
  name = "batchnorm",
  covers = { "facet_batchnorm_forward", "facet_batchnorm_backward" },
  strided = false,
  tol = { rtol = 1e-4, atol = 1e-5, mtol = 1e-5 },
  cases = {
    { label = "2d train", dims = 4, N = 4, C = 5, H = 6, W = 7 },
    { label = "2d eval", dims = 4, N = 4, C = 5, H = 6, W = 7, eval = true },
    { label = "2d train, no affine", dims = 4, N = 3, C = 4, H = 5, W = 5, affine = false },
    { label = "2d train, large planes", dims = 4, N = 8, C = 3, H = 40, W = 40 },
    { label = "1d train", dims = 2, N = 64, C = 16 },
    { label = "1d eval", dims = 2, N = 64, C = 16, eval = true },
    { label = "1d train, batch 2048", dims = 2, N = 2048, C = 16 },
    half_case({ label = "2d train", dims = 4, N = 4, C = 5, H = 6, W = 7 }, "float16"),
    half_case({ label = "2d eval", dims = 4, N = 4, C = 5, H = 6, W = 7, eval = true }, "bfloat16"),
    half_case({ label = "1d train", dims = 2, N = 64, C = 16 }, "bfloat16"),
  },
  run = function(c, ctx)
    local m = (c.dims == 4 and nn.BatchNorm2d or nn.BatchNorm1d)(c.C, { affine = c.affine })
    m:to(ctx.device)
    if m.weight then
      m.weight:copy(ctx:randn({ c.C }, 1, 0.3))
      m.bias:copy(ctx:randn({ c.C }, 0, 0.3))
    end
    m.running_mean:copy(ctx:randn({ c.C }, 0, 0.5))
    m.running_var:copy(ctx:rand({ c.C }, 0.5, 2))
    if c.eval then m:evaluate() end
    local shape = c.dims == 4 and { c.N, c.C, c.H, c.W } or { c.N, c.C }
    local x, gout = to_dtype(ctx:randn(shape, 0.5, 2), c), to_dtype(ctx:randn(shape), c)
    m:zero_grad()
    local out = m:forward(x)
    local gx = m:backward(x, gout)
    return { out = out, grad_x = gx, grad_weight = m.grad_weight, grad_bias = m.grad_bias,
      running_mean = m.running_mean, running_var = m.running_var }
  end,
}

-- synchronised BatchNorm: two simulated ranks (support/local_group.lua) hold parts of
-- one batch; each rank's outputs, input gradient and local parameter gradients
reg {
  name = "batchnorm_sync",
  covers = { "facet_batchnorm_stats", "facet_batchnorm_backward_elemt" },
  strided = false,
  tol = { rtol = 1e-4, atol = 1e-5, mtol = 1e-5 },
  cases = {
    { label = "2d, parts of 3 and 4 images", dims = 4, N = 7, C = 5, H = 6, W = 7, split = 3 },
    { label = "1d, no affine, parts of 40 and 24", dims = 2, N = 64, C = 16, split = 40, affine = false },
    { label = "2d, large planes", dims = 4, N = 8, C = 3, H = 40, W = 40, split = 4 },
    { label = "2d, rank 1 holds no images", dims = 4, N = 3, C = 2, H = 5, W = 5, split = 3 },
    half_case({ label = "2d, parts of 3 and 4 images", dims = 4, N = 7, C = 5, H = 6, W = 7, split = 3 }, "float16"),
    half_case({ label = "1d, parts of 40 and 24", dims = 2, N = 64, C = 16, split = 40 }, "bfloat16"),
  },
  run = function(c, ctx)
    local shape = c.dims == 4 and { c.N, c.C, c.H, c.W } or { c.N, c.C }
    local x, gout = to_dtype(ctx:randn(shape, 0.5, 2), c), to_dtype(ctx:randn(shape), c)
    local w, b = ctx:randn({ c.C }, 1, 0.3), ctx:randn({ c.C }, 0, 0.3)
    local rm, rv = ctx:randn({ c.C }, 0, 0.5), ctx:rand({ c.C }, 0.5, 2)
    local ranks = require("support.local_group").run(2, function(g)
      local m = (c.dims == 4 and nn.BatchNorm2d or nn.BatchNorm1d)(c.C, { affine = c.affine })
      m:to(ctx.device)
      if m.weight then
        m.weight:copy(w)
        m.bias:copy(b)
      end
      m.running_mean:copy(rm)
      m.running_var:copy(rv)
      m.sync = g
      m:zero_grad()
      local first, rows = 1, c.split
      if g:rank() == 1 then first, rows = c.split + 1, c.N - c.split end
      local xr, gr = x:narrow(1, first, rows):contiguous(), gout:narrow(1, first, rows):contiguous()
      local out = m:forward(xr)
      return { out = out, grad_x = m:backward(xr, gr), grad_weight = m.grad_weight, grad_bias = m.grad_bias,
        running_mean = m.running_mean, running_var = m.running_var }
    end)
    local r = {}
    for i, o in ipairs(ranks) do
      for k, v in pairs(o) do r[k .. "_rank" .. (i - 1)] = v end
    end
    return r
  end,
}

reg {
  name = "pool2d",
  covers = { "facet_pool2d_forward", "facet_pool2d_backward" },
  strided = false,
  tol = { rtol = 1e-5, atol = 1e-6 },
  cases = {
    { kind = "max", k = 2, N = 2, C = 3, H = 8, W = 8 },
    { kind = "max", k = 3, stride = 2, pad = 1, N = 2, C = 3, H = 9, W = 7 },
    { kind = "max", k = 3, stride = 1, pad = 1, N = 2, C = 2, H = 6, W = 6, ties = true },
    { kind = "avg", k = 2, N = 2, C = 3, H = 8, W = 6 },
    { kind = "avg", k = 3, stride = 1, pad = 1, N = 2, C = 3, H = 7, W = 7 },
    { kind = "avg", k = 3, stride = 2, pad = 1, N = 2, C = 3, H = 9, W = 8, exclude_pad = true },
    { kind = "max", k = 2, N = 8, C = 16, H = 40, W = 40 },
    { kind = "global avg", N = 3, C = 5, H = 7, W = 6 },
    half_case({ kind = "max", k = 3, stride = 2, pad = 1, N = 2, C = 3, H = 9, W = 7 }, "float16"),
    half_case({ kind = "avg", k = 3, stride = 2, pad = 1, N = 2, C = 3, H = 9, W = 8, exclude_pad = true }, "bfloat16"),
    half_case({ kind = "global avg", N = 3, C = 5, H = 7, W = 6 }, "float16"),
  },
  run = function(c, ctx)
    local m
    if c.kind == "global avg" then m = nn.AdaptiveAvgPool2d(1)
    else
      local cls = c.kind == "max" and nn.MaxPool2d or nn.AvgPool2d
      m = cls(c.k, { stride = c.stride, padding = c.pad, count_include_pad = not c.exclude_pad })
    end
    m:to(ctx.device)
    local x = c.ties and ctx:randn({ c.N, c.C, c.H, c.W }, 0, 1.5):floor_() or ctx:randn({ c.N, c.C, c.H, c.W })
    x = to_dtype(x, c)
    local out = m:forward(x)
    local gx = m:backward(x, to_dtype(ctx:randn(out:shape()), c))
    return { out = out, grad_x = gx }
  end,
}

reg {
  name = "upsample2d",
  covers = { "facet_upsample2d_forward", "facet_upsample2d_backward" },
  strided = false,
  tol = { rtol = 1e-5, atol = 1e-5 },
  cases = {
    { mode = "nearest", scale = 2 },
    { mode = "nearest", size = { 7, 9 } },
    { mode = "bilinear", scale = 2 },
    { mode = "bilinear", scale = 2, align_corners = true },
    { mode = "bilinear", size = { 7, 9 } },
    { mode = "bilinear", size = { 7, 9 }, align_corners = true },
    { mode = "bilinear", size = { 3, 2 }, label = "mode=bilinear size={3,2} (down)" },
    half_case({ mode = "nearest", scale = 2, label = "nearest x2" }, "float16"),
    half_case({ mode = "bilinear", size = { 7, 9 }, label = "bilinear 7x9" }, "bfloat16"),
    half_case({ mode = "bilinear", size = { 7, 9 }, align_corners = true, label = "bilinear 7x9 align_corners" },
      "float16"),
  },
  run = function(c, ctx)
    local m = nn.Upsample { scale = c.scale, size = c.size, mode = c.mode, align_corners = c.align_corners }
    m:to(ctx.device)
    local x = to_dtype(ctx:randn({ 2, 3, 4, 5 }), c)
    local out = m:forward(x)
    local gx = m:backward(x, to_dtype(ctx:randn(out:shape()), c))
    return { out = out, grad_x = gx }
  end,
}

-- PReLU's slope gradient is a float sum over the channel's planes, added in
-- another order on a GPU (docs/gpu.md): atol and mtol 1e-5 cover the
-- cancellation of sums near 0 (a NumPy emulation of both orders on these
-- shapes stays under 0.15 of that bound).
local SLOPE_SUM_TOL = { rtol = 1e-5, atol = 1e-5, mtol = 1e-5 }

reg {
  name = "activation",
  covers = { "facet_activation_forward", "facet_activation_backward" },
  strided = false,
  tol = { rtol = 1e-5, atol = 1e-6, mtol = 1e-6 },
  tols = { grad_slope = SLOPE_SUM_TOL },
  cases = {
    { act = "ReLU", shape = { 4, 5, 6, 7 } },
    { act = "Sigmoid", shape = { 129, 300 } },
    { act = "Tanh", shape = { 37, 65 } },
    { act = "PReLU", channels = 5, shape = { 4, 5, 6, 7 }, label = "PReLU per channel, 4-D" },
    { act = "PReLU", channels = 16, shape = { 2048, 16 }, label = "PReLU per channel, 2-D" },
    { act = "PReLU", shape = { 3, 8, 5, 5 }, label = "PReLU one slope" },
    half_case({ act = "Sigmoid", shape = { 37, 65 }, label = "Sigmoid" }, "bfloat16"),
    half_case({ act = "Tanh", shape = { 37, 65 }, label = "Tanh" }, "float16"),
    half_case({ act = "PReLU", channels = 5, shape = { 4, 5, 6, 7 }, label = "PReLU per channel" }, "float16"),
    half_case({ act = "PReLU", shape = { 3, 8, 5, 5 }, label = "PReLU one slope" }, "bfloat16"),
    -- the CUDA kernels' launch shapes (core/cuda/activation.cu: threads along a
    -- plane = the power of two covering it, at most 256; planes split into
    -- chunks while the grid is small; partial channel groups and chunks)
    { act = "PReLU", channels = 5, shape = { 3, 5, 7, 7 }, label = "PReLU 7x7 planes: 64 x 4 threads, 3 of 8 rows idle" },
    { act = "PReLU", channels = 17, shape = { 2, 17, 13, 11 }, label = "PReLU 13x11 planes: a partial last warp" },
    { act = "PReLU", channels = 6, shape = { 2, 6, 9, 11 }, label = "PReLU 9x11 planes: 128 x 2 threads" },
    { act = "PReLU", channels = 3, shape = { 4, 3, 5, 3 }, label = "PReLU 5x3 planes: 16 threads a row" },
    { act = "PReLU", channels = 13, shape = { 37, 13 }, label = "PReLU after a Linear: planes of 1" },
    { act = "PReLU", channels = 13, shape = { 1, 13 }, label = "PReLU after a Linear, batch 1" },
    { act = "PReLU", channels = 3, shape = { 1, 3, 67, 61 }, label = "PReLU batch 1: 4 chunks a plane, the last partial" },
    { act = "PReLU", shape = { 2, 3, 50, 50 }, label = "PReLU one slope, 3 chunks a plane" },
    { act = "PReLU", channels = 4, shape = { 7, 4, 5 }, label = "PReLU 3-D input" },
    { act = "PReLU", channels = 1, shape = { 1, 1, 1, 1 }, label = "PReLU one element" },
    half_case({ act = "PReLU", channels = 5, shape = { 3, 5, 7, 7 }, label = "PReLU 7x7 planes" }, "bfloat16"),
    half_case({ act = "PReLU", channels = 3, shape = { 1, 3, 67, 61 }, label = "PReLU batch 1, 4 chunks" }, "float16"),
    -- more samples than a grid's z dimension (65535): the kernels loop over
    -- them; each slope gradient is a sum of 66,000 float terms in two orders
    { act = "PReLU", channels = 2, shape = { 66000, 2 }, label = "PReLU 66000 samples: more than one z grid",
      tols = { grad_slope = { rtol = 1e-4, atol = 5e-3, mtol = 1e-4 } } },
    -- more channels than a grid's y dimension (planes of 129: one channel a block row)
    { act = "PReLU", channels = 65600, shape = { 1, 65600, 129 }, label = "PReLU 65600 channels: more than one y grid" },
  },
  run = function(c, ctx)
    local m = nn[c.act](c.channels)
    m:to(ctx.device)
    if m.slope then m.slope:copy(ctx:rand(m.slope:shape(), 0.05, 0.5)) end
    local x = to_dtype(ctx:randn(c.shape), c)
    m:zero_grad()
    local out = m:forward(x)
    local gx = m:backward(x, to_dtype(ctx:randn(c.shape), c))
    return { out = out, grad_x = gx, grad_slope = m.grad_slope }
  end,
}

reg {
  name = "dropout",
  covers = { "facet_dropout_forward", "facet_dropout_backward" },
  strided = false,
  cases = {
    { p = 0.3, shape = { 1000 }, seed = 7, offset = 0 },
    { p = 0.5, shape = { 4, 5, 6, 7 }, seed = 0xd209, offset = 12345 },
    { p = 0.1, shape = { 129, 300 }, seed = 3, offset = 2 ^ 32 + 1 },
    half_case({ p = 0.3, shape = { 4, 5, 6, 7 }, seed = 11, offset = 99 }, "float16"),
    half_case({ p = 0.5, shape = { 129, 30 }, seed = 5, offset = 2 ^ 33 }, "bfloat16"),
  },
  run = function(c, ctx)
    local m = nn.Dropout(c.p)
    m.rng = { seed = c.seed, offset = c.offset }    -- one Philox stream on every backend
    m:to(ctx.device)
    local x = to_dtype(ctx:randn(c.shape), c)
    local out = m:forward(x)
    local gx = m:backward(x, to_dtype(ctx:randn(c.shape), c))
    return { out = out, grad_x = gx, mask = m.buffers.mask }
  end,
}

-- ---- transformer layers (the ViT backbones) ---------------------------------------------------

-- the launch shapes of core/cuda/layernorm.cu: rows of fewer than 32, of 32..256
-- and of more than 256 columns (a block loops); fewer and more rows than the 64
-- row chunks of the parameter gradients, and a last partial chunk
reg {
  name = "layernorm",
  covers = { "facet_layernorm_forward", "facet_layernorm_backward" },
  strided = false,
  tol = { rtol = 1e-4, atol = 1e-5, mtol = 1e-5 },
  cases = {
    { label = "ViT tokens", shape = { 2, 12, 64 } },
    { label = "rows of 5", shape = { 37, 5 } },
    { label = "rows of 300", shape = { 3, 300 } },
    { label = "1000 rows of 40: 64 chunks, the last partial", shape = { 1000, 40 } },
    { label = "no affine", shape = { 4, 9, 33 }, affine = false },
    { label = "one row", shape = { 1, 17 } },
    half_case({ label = "ViT tokens (widened)", shape = { 2, 12, 64 } }, "bfloat16"),
    half_case({ label = "rows of 40 (widened)", shape = { 50, 40 } }, "float16"),
  },
  run = function(c, ctx)
    local D = c.shape[#c.shape]
    local m = nn.LayerNorm(D, { affine = c.affine }):to(ctx.device)
    -- weight near 1, bias near 0
    for i, p in ipairs(m.weight and { m.weight, m.bias } or {}) do p:copy(ctx:randn({ D }, 2 - i, 0.3)) end
    m:zero_grad()
    local x = to_dtype(ctx:randn(c.shape, 0.5, 2), c)
    local r = { out = m:forward(x) }
    r.grad_x = m:backward(x, to_dtype(ctx:randn(c.shape), c))
    r.grad_weight, r.grad_bias = m.grad_weight, m.grad_bias
    return r
  end,
}

reg {
  name = "softmax",
  covers = { "facet_softmax_forward", "facet_softmax_backward" },
  strided = false,
  tol = { rtol = 1e-5, atol = 1e-6, mtol = 1e-6 },
  cases = {
    { label = "attention scores", shape = { 2, 4, 12, 12 } },
    { label = "rows of 3", shape = { 100, 3 } },
    { label = "rows of 700: a block loops", shape = { 3, 700 }, scale = 10 },
    half_case({ label = "attention scores (widened)", shape = { 2, 4, 12, 12 } }, "bfloat16"),
  },
  run = function(c, ctx)
    local m = nn.Softmax()
    m:to(ctx.device)
    local x = to_dtype(ctx:randn(c.shape, 0, c.scale or 3), c)
    local out = m:forward(x)
    local gx = m:backward(x, to_dtype(ctx:randn(c.shape), c))
    return { out = out, grad_x = gx }
  end,
}

-- ReLU6 is one more activation of facet_activation_forward/backward (covered
-- by "activation"); its cases, natively in 16 bits too
reg {
  name = "relu6",
  covers = {},
  strided = false,
  tol = { rtol = 1e-6, atol = 1e-7, mtol = 0 },
  cases = {
    { shape = { 4, 5, 6, 7 } },
    { shape = { 129, 300 } },
    half_case({ shape = { 37, 65 } }, "bfloat16"),
    half_case({ shape = { 4, 5, 6, 7 } }, "float16"),
  },
  run = function(c, ctx)
    local m = nn.ReLU6()
    m:to(ctx.device)
    local x = to_dtype(ctx:randn(c.shape, 2, 5), c)
    local out = m:forward(x)
    return { out = out, grad_x = m:backward(x, to_dtype(ctx:randn(c.shape), c)) }
  end,
}

-- the ViT's multi-head self-attention as one module: qkv GEMM, the head split
-- (facet_tensor_permute), batched GEMMs over B * heads, the softmax, the head
-- merge and the projection, forward and backward (its C functions are covered
-- by their own entries)
reg {
  name = "multihead_attention",
  covers = {},
  strided = false,
  tol = { rtol = 1e-4, atol = 1e-5, mtol = 1e-5 },
  cases = {
    { label = "B 2, N 9, dim 16, 4 heads", B = 2, N = 9, D = 16, heads = 4 },
    { label = "B 3, N 20, dim 24, 8 heads, qkv bias", B = 3, N = 20, D = 24, heads = 8, bias = true },
    half_case({ label = "B 2, N 9, dim 16, 2 heads (widened)", B = 2, N = 9, D = 16, heads = 2 }, "bfloat16"),
  },
  run = function(c, ctx)
    local m = nn.MultiheadAttention(c.D, c.heads, { qkv_bias = c.bias })
    m:to(ctx.device)
    local qkv, proj = m.modules[1], m.modules[2]
    qkv.weight:copy(ctx:randn({ 3 * c.D, c.D }, 0, 0.3))
    proj.weight:copy(ctx:randn({ c.D, c.D }, 0, 0.3))
    proj.bias:copy(ctx:randn({ c.D }, 0, 0.1))
    if qkv.bias then qkv.bias:copy(ctx:randn({ 3 * c.D }, 0, 0.1)) end
    local shape = { c.B, c.N, c.D }
    local x = to_dtype(ctx:randn(shape), c)
    m:zero_grad()
    local out = m:forward(x)
    local gx = m:backward(x, to_dtype(ctx:randn(shape), c))
    return { out = out, grad_x = gx, grad_qkv = qkv.grad_weight, grad_proj = proj.grad_weight,
      grad_proj_bias = proj.grad_bias }
  end,
}

-- ---- optimizer updates ------------------------------------------------------------------------------

-- a fused head's update: Head:sgd_step at this commit; facet.optim.sgd where
-- the fused update has moved there
local function fused_head_stepper(head, cfg)
  if head.sgd_step then return function() head:sgd_step(cfg) end end
  local opt = facet.optim.sgd(head, cfg)
  return function() opt:step(); opt:zero_grad() end
end

reg {
  name = "sgd",
  covers = { "facet_sgd_step" },
  strided = false,
  tol = { rtol = 1e-5, atol = 1e-6, mtol = 1e-6 },
  tols = { loss = { rtol = 1e-4 } },
  cases = {
    { label = "plain", lr = 0.1, shape = { 37, 16 } },
    { label = "momentum", lr = 0.1, momentum = 0.9, shape = { 300 } },
    { label = "nesterov", lr = 0.05, momentum = 0.9, nesterov = true, shape = { 37, 16 } },
    { label = "momentum, dampening, weight decay", lr = 0.1, momentum = 0.9, dampening = 0.1, weight_decay = 1e-2,
      shape = { 5, 7, 3 } },
    { label = "weight decay, large", lr = 0.1, weight_decay = 5e-4, shape = { 129, 300 } },
    { label = "fused head update (row_coef, row_norms, zero_grad)", fused = true, K = 37, D = 16, B = 64, lr = 0.1,
      momentum = 0.9, weight_decay = 5e-4 },
    { label = "fused head update, nesterov, K=300", fused = true, K = 300, D = 16, B = 32, lr = 0.05, momentum = 0.9,
      nesterov = true, weight_decay = 5e-4 },
  },
  run = function(c, ctx)
    local cfg = { lr = c.lr, momentum = c.momentum, dampening = c.dampening, nesterov = c.nesterov,
      weight_decay = c.weight_decay }
    if c.fused then
      local head = facet.heads.new("am", { classes = c.K, dim = c.D, fused = true }):to(ctx.device)
      head.weight:copy(ctx:randn({ c.K, c.D }))
      local step = fused_head_stepper(head, cfg)
      local r = {}
      for s = 1, 3 do
        local x, y = ctx:randn({ c.B, c.D }), ctx:ints(c.B, 0, c.K - 1)
        r["loss" .. s] = head:forward(x, y)
        head:backward()
        step()
      end
      r.weight, r.grad_weight, r.norms = head.weight, head.grad_weight, head.norms
      return r
    end
    local p, g = ctx:randn(c.shape), facet.zeros(c.shape, { device = ctx.device })
    local opt = facet.optim.sgd({ params = { p }, grads = { g } }, cfg)
    for _ = 1, 3 do
      g:copy(ctx:randn(c.shape))
      opt:step()
    end
    return { param = p, momentum_buffer = opt.list[1].momentum_buffer }
  end,
}

reg {
  name = "sgd_list",
  covers = { "facet_sgd_step_list" },
  strided = false,
  alt = "one facet_sgd_step per parameter",
  tol = { rtol = 1e-5, atol = 1e-6, mtol = 1e-6 },
  cases = {
    { label = "60 parameters, momentum, weight decay per parameter, zero_grad", lr = 0.1, momentum = 0.9, n = 60,
      weight_decay = 5e-4 },
    { label = "7 parameters, nesterov", lr = 0.05, momentum = 0.9, nesterov = true, n = 7 },
    { label = "3 parameters, plain", lr = 0.1, n = 3 },
  },
  run = function(c, ctx)
    local shapes = { { 37, 16 }, { 300 }, { 5, 7, 3 }, { 1 }, { 129, 300 } }
    local n, mom = c.n, (c.momentum or 0) ~= 0
    local keep, ps, gs, bs = {}, ffi.new("facet_tensor *[?]", n), ffi.new("facet_tensor *[?]", n),
      ffi.new("facet_tensor *[?]", n)
    local wd = ffi.new("double[?]", n)
    for i = 1, n do
      local sh = shapes[(i - 1) % #shapes + 1]
      local p, g = ctx:randn(sh), tensor.zeros(sh, { device = ctx.device })
      local b = mom and tensor.zeros(sh, { device = ctx.device }) or nil
      keep[i] = { p = p, g = g, b = b }
      ps[i - 1], gs[i - 1], bs[i - 1] = p.h, g.h, b and b.h or nil
      wd[i - 1] = i % 2 == 0 and (c.weight_decay or 0) or 0
    end
    for s = 1, 3 do
      for i = 1, n do keep[i].g:copy(ctx:randn(keep[i].p:shape())) end
      local flags = (c.nesterov and C.FACET_SGD_FLAG_NESTEROV or 0) + (s == 1 and C.FACET_SGD_FLAG_FIRST_STEP or 0) +
        C.FACET_SGD_FLAG_ZERO_GRAD
      if ctx.alt then
        for i = 1, n do
          check(C.facet_sgd_step(ps[i - 1], gs[i - 1], bs[i - 1], nil, nil, c.lr, c.momentum or 0, 0, wd[i - 1], flags))
        end
      else
        check(C.facet_sgd_step_list(ps, gs, bs, wd, n, c.lr, c.momentum or 0, 0, flags))
      end
    end
    local r = {}
    for _, i in ipairs { 1, 2, 3, n } do
      r["param" .. i], r["grad" .. i] = keep[i].p, keep[i].g
      if mom then r["buf" .. i] = keep[i].b end
    end
    return r
  end,
}

reg {
  name = "adam",
  covers = { "facet_adam_step_list" },   -- facet.optim.adam updates its parameters in one list call
  strided = false,
  tol = { rtol = 1e-5, atol = 1e-6, mtol = 1e-6 },
  cases = {
    { opt = "adam", lr = 1e-2, shape = { 37, 16 } },
    { opt = "adam", lr = 1e-2, weight_decay = 1e-2, shape = { 300 } },
    { opt = "adamw", lr = 1e-2, weight_decay = 1e-2, shape = { 37, 16 } },
    { opt = "adamw", lr = 1e-3, weight_decay = 5e-2, betas = { 0.8, 0.99 }, shape = { 129, 300 } },
  },
  run = function(c, ctx)
    local p, g = ctx:randn(c.shape), facet.zeros(c.shape, { device = ctx.device })
    local opt = facet.optim[c.opt]({ params = { p }, grads = { g } }, { lr = c.lr, weight_decay = c.weight_decay,
      betas = c.betas })
    for _ = 1, 3 do
      g:copy(ctx:randn(c.shape))
      opt:step()
    end
    return { param = p, exp_avg = opt.list[1].exp_avg, exp_avg_sq = opt.list[1].exp_avg_sq }
  end,
}

-- the per-parameter call (facet.optim.adam makes it only for a parameter off
-- the first one's device), against the list on the second CPU path
reg {
  name = "adam_step",
  covers = { "facet_adam_step" },
  strided = false,
  alt = "one facet_adam_step_list call for all parameters",
  tol = { rtol = 1e-5, atol = 1e-6, mtol = 1e-6 },
  cases = {
    { label = "60 parameters, L2 weight decay per parameter, zero_grad", lr = 1e-2, n = 60, weight_decay = 1e-2 },
    { label = "7 parameters, decoupled weight decay, from step 1000", lr = 1e-3, n = 7, weight_decay = 5e-2,
      decoupled = true, t0 = 999 },
    { label = "3 parameters, plain", lr = 1e-2, n = 3 },
  },
  run = function(c, ctx)
    local shapes = { { 37, 16 }, { 300 }, { 5, 7, 3 }, { 1 }, { 129, 300 } }
    local n = c.n
    local keep, arrays = {}, {}
    for _, k in ipairs { "p", "g", "m", "v" } do arrays[k] = ffi.new("facet_tensor *[?]", n) end
    local wd = ffi.new("double[?]", n)
    for i = 1, n do
      local sh = shapes[(i - 1) % #shapes + 1]
      keep[i] = { p = ctx:randn(sh) }
      for _, k in ipairs { "g", "m", "v" } do keep[i][k] = tensor.zeros(sh, { device = ctx.device }) end
      for _, k in ipairs { "p", "g", "m", "v" } do arrays[k][i - 1] = keep[i][k].h end
      wd[i - 1] = i % 2 == 0 and (c.weight_decay or 0) or 0
    end
    local flags = (c.decoupled and C.FACET_ADAM_FLAG_DECOUPLED or 0) + C.FACET_ADAM_FLAG_ZERO_GRAD
    for s = 1, 3 do
      for i = 1, n do keep[i].g:copy(ctx:randn(keep[i].p:shape())) end
      local step = (c.t0 or 0) + s
      if ctx.alt then
        check(C.facet_adam_step_list(arrays.p, arrays.g, arrays.m, arrays.v, wd, n, c.lr, 0.9, 0.999, 1e-8, step, flags))
      else
        for i = 1, n do
          check(C.facet_adam_step(arrays.p[i - 1], arrays.g[i - 1], arrays.m[i - 1], arrays.v[i - 1], c.lr, 0.9, 0.999,
            1e-8, wd[i - 1], step, flags))
        end
      end
    end
    local r = {}
    for _, i in ipairs { 1, 2, 3, n } do
      r["param" .. i], r["grad" .. i], r["exp_avg" .. i], r["exp_avg_sq" .. i] = keep[i].p, keep[i].g, keep[i].m,
        keep[i].v
    end
    return r
  end,
}

-- ---- data --------------------------------------------------------------------------------------------

local jpeg_fixture
local function images_in_memory(n, seed)
  if not jpeg_fixture then
    local f = assert(io.open("spec/fixtures/images/smooth_16x24.jpg", "rb"))
    jpeg_fixture = f:read("*a")
    f:close()
  end
  local imgs, labels = {}, {}
  for i = 1, n do
    if i % 4 == 0 then imgs[i] = jpeg_fixture
    else
      local h, w = 8 + i % 5, 10 + (i * 3) % 7
      local rgb = facet.rand({ h, w, 3 }, { seed = seed * 100 + i, low = 0, high = 256 }):floor_():to("uint8")
      imgs[i] = facet.data.encode_png(rgb)
    end
    labels[i] = i - 1
  end
  return { images = imgs, labels = labels }
end

reg {
  name = "loader",
  covers = { "facet_loader_init_memory", "facet_loader_batches", "facet_loader_start", "facet_loader_next",
    "facet_loader_stats", "facet_loader_free" },
  strided = false,
  alt = "one loader worker instead of two",
  tol = { rtol = 0, atol = 0 },
  cases = {
    { label = "PNG and JPEG, flip, crop, colour jitter, grayscale; device copy of each batch", n = 14, batch = 4,
      size = { 8, 10 } },
    { label = "no augmentation, short last batch kept", n = 7, batch = 3, size = { 6, 6 }, plain = true },
  },
  run = function(c, ctx)
    local src = images_in_memory(c.n, ctx:next_seed())
    local opts = { source = src, size = c.size, batch_size = c.batch, threads = ctx.alt and 1 or 2, queue = 2,
      seed = 11, shuffle = not c.plain, drop_last = not c.plain }
    if not c.plain then
      opts.flip, opts.crop_padding, opts.brightness, opts.contrast, opts.saturation, opts.grayscale = 0.5, 2, 0.3, 0.3,
        0.3, 0.3
    else
      opts.flip = 0
    end
    local L = facet.data.loader(opts)
    local r = { batches = L:num_batches() }
    for _, pos in ipairs { { 0, 1 }, { 0, 2 }, { 1, 1 }, { 0, L:num_batches() } } do
      local x, y = L:batch(pos[1], pos[2])
      local tag = ("e%d_b%d"):format(pos[1], pos[2])
      -- the batch copied to the device (and back by the harness)
      r["images_" .. tag] = ctx.device == "cpu" and x:clone() or x:to(ctx.device)
      r["labels_" .. tag] = ctx.device == "cpu" and y:clone() or y:to(ctx.device)
    end
    r.delivered = L:stats().delivered
    L:close()
    return r
  end,
}

-- ---- a short training run -------------------------------------------------------------------------------

reg {
  name = "train",
  covers = {},
  strided = false,
  -- ten SGD steps amplify rounding differences; see docs/backend-ops.md
  tol = { rtol = 2e-3, atol = 1e-4 },
  cases = { { label = "convnet + mv-am, 10 SGD steps (momentum, weight decay), batch 16", steps = 10, N = 64, batch = 16,
    classes = 10 } },
  run = function(c, ctx)
    local seed = ctx:next_seed()
    local protos = facet.randn({ c.classes, 144 }, { seed = seed })
    local labels = facet.rand({ c.N }, { seed = seed + 1 }):mul(c.classes):floor_():clamp_(0, c.classes - 1):to("int64")
    local x = protos:index_select(labels:add(1)):add(facet.randn({ c.N, 144 }, { seed = seed + 2, std = 0.7 }))
    x = x:reshape { c.N, 1, 12, 12 }:to(ctx.device)
    labels = labels:to(ctx.device)
    facet.manual_seed(seed)
    local model = facet.models.convnet { in_channels = 1, size = 12, emb = 16 }:to(ctx.device)
    local head = facet.heads.new("mv-am", { classes = c.classes, dim = 16, seed = seed }):to(ctx.device)
    local opt = facet.optim.sgd({ model, head }, { lr = 0.05, momentum = 0.9, weight_decay = 5e-4 })
    model:train()
    local losses = facet.empty({ c.steps })
    for s = 1, c.steps do
      local first = ((s - 1) % (c.N / c.batch)) * c.batch + 1
      local xb, yb = x:narrow(1, first, c.batch), labels:narrow(1, first, c.batch):contiguous()
      opt:zero_grad()
      local emb = model:forward(xb)
      losses[s] = head:forward(emb, yb)
      model:backward(xb, head:backward())
      opt:step()
    end
    return { losses = losses }
  end,
}

-- ---- what is not an op ------------------------------------------------------------------------------------

--- Exported functions that are not ops: runtime and error queries, tensor
-- handles and metadata, file formats and image codecs (IO). Everything else
-- in facet.h must be in one entry's covers.
O.excluded = {
  -- facet_eval_: CPU-only evaluation routines (core/src/eval.c, no CUDA path to compare), checked
  -- against NumPy in spec/eval_scale_spec.lua; facet_dist_: communication between processes,
  -- specified by spec/dist_spec.lua under mpirun; facet_pth_: reading PyTorch checkpoints (IO)
  prefixes = { "facet_recordio_", "facet_binfile_", "facet_image_", "facet_cuda_", "facet_eval_", "facet_dist_",
    "facet_pth_" },
  names = {
    "facet_version", "facet_last_error", "facet_threads_set", "facet_threads_get", "facet_blas_info",
    "facet_blas_library",
    "facet_tensor_init", "facet_tensor_free", "facet_tensor_ndim", "facet_tensor_dtype", "facet_tensor_device",
    "facet_tensor_shape", "facet_tensor_numel", "facet_tensor_is_contiguous", "facet_tensor_data", "facet_dtype_size",
    "facet_loader_init_recordio",
  },
}

function O.is_excluded(name)
  for _, p in ipairs(O.excluded.prefixes) do
    if name:sub(1, #p) == p then return true end
  end
  for _, n in ipairs(O.excluded.names) do
    if n == name then return true end
  end
  return false
end

--- The exported functions of core/include/facet.h, in order.
function O.header_functions(path)
  local f = assert(io.open(path or "core/include/facet.h", "rb"))
  local text = f:read("*a")
  f:close()
  local names = {}
  for line in text:gmatch("[^\n]+") do
    local name = line:match("^FACET_API%s[%w_%s%*]-(facet_[%w_]+)%s*%(")
    if name then names[#names + 1] = name end
  end
  return names
end

--- What is wrong with the registry against a header's function names: an
-- op no entry covers, a name covered twice or not in the header, an
-- exclusion that names nothing. Returns the list of problems and the number
-- of op functions.
function O.coverage_problems(header)
  local in_header, listed, problems, n_ops = {}, {}, {}, 0
  for _, name in ipairs(header) do in_header[name] = true end
  for _, entry in ipairs(O.entries) do
    for _, fn in ipairs(entry.covers) do
      if not in_header[fn] then problems[#problems + 1] = ("%s (entry %s) is not in facet.h"):format(fn, entry.name) end
      if listed[fn] then problems[#problems + 1] = ("%s is listed by %s and %s"):format(fn, listed[fn], entry.name) end
      if O.is_excluded(fn) then problems[#problems + 1] = ("%s is both excluded and covered by %s"):format(fn, entry.name) end
      listed[fn] = entry.name
    end
  end
  for _, name in ipairs(O.excluded.names) do
    if not in_header[name] then problems[#problems + 1] = "excluded " .. name .. " is not in facet.h" end
  end
  for _, p in ipairs(O.excluded.prefixes) do
    local any = false
    for _, name in ipairs(header) do if name:sub(1, #p) == p then any = true end end
    if not any then problems[#problems + 1] = "excluded prefix " .. p .. " matches nothing in facet.h" end
  end
  for _, name in ipairs(header) do
    if not O.is_excluded(name) then
      n_ops = n_ops + 1
      if not listed[name] then
        problems[#problems + 1] = name .. " is an op of facet.h that no entry of spec/support/ops.lua covers " ..
          "(register it, or add it to O.excluded if it is a query, a handle or IO)"
      end
    end
  end
  return problems, n_ops
end

--- Whether an entry runs on a device.
function O.runs_on(entry, device)
  if not entry.devices then return true end
  for _, d in ipairs(entry.devices) do if d == device then return true end end
  return false
end

return O
