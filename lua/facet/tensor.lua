--- facet.tensor: the Tensor type and its constructors.
-- A tensor is a small FFI struct holding a C handle (`facet_tensor *`); the
-- handle is released by the GC (ffi.gc) or at once by `t:free()`. Indices and
-- dims are 1-based as in Torch7; methods return new tensors, and methods with a
-- trailing underscore (`add_`, `exp_`, `fill_` ...) work in place, as in PyTorch.
local ffi = require "ffi"
local core = require "facet.core"
local cuda = require "facet.cuda"

local C, check = core.C, core.check

-- A value as a message shows it: numbers as Lua prints them, strings quoted
-- (facet.check.describe's form; that module requires this one, so not from there).
local function describe(v)
  if type(v) == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return (("%q"):format(v):gsub("\\\n", "\\n"))
  elseif type(v) == "number" or type(v) == "nil" or type(v) == "boolean" then
    return tostring(v)
  end
  return "a " .. type(v)
end
local DTYPES, DEVICES = core.DTYPES, core.DEVICES
local DTYPE_NAMES, DEVICE_NAMES = core.DTYPE_NAMES, core.DEVICE_NAMES

-- Lua-side box around the handle, so t[i] can be an index (a raw pointer
-- to an incomplete struct cannot take numeric keys).
ffi.cdef [[ struct facet_lua_tensor { facet_tensor *h; }; ]]

local Tensor = {}          -- methods
local mt = {}              -- metatable of struct facet_lua_tensor
local T                    -- the ctype
local M = { Tensor = Tensor }

local out_p = ffi.new("facet_tensor *[1]")
local sizes_buf = ffi.new("int64_t[8]")
local sizes_buf2 = ffi.new("int64_t[8]")
local int_buf = ffi.new("int[8]")
local i64_1 = ffi.new("int64_t[1]")
local int_1 = ffi.new("int[1]")
local double_1 = ffi.new("double[1]")
local voidp_1 = ffi.new("void *[1]")

local function finalize(t)
  if t.h ~= nil then
    C.facet_tensor_free(t.h)
    t.h = nil
  end
end

local function wrap(h)
  local t = T(h)
  return ffi.gc(t, finalize)
end
M.wrap = wrap

local function is_tensor(x) return ffi.istype(T, x) end
M.is_tensor = is_tensor

-- other names of the same function: a message names the function by its own name
local ALIASES = { view = true, nElement = true, copy_ = true, fill = true, zero = true, mm = true, bmm = true,
  normalize = true }
-- the operators, as a message names them
local OPERATORS = { __add = "tensor +", __sub = "tensor -", __mul = "tensor *", __div = "tensor /",
  __pow = "tensor ^", __unm = "tensor unary -", __len = "#tensor", __index = "tensor indexing",
  __newindex = "tensor assignment", __tostring = "tostring(tensor)" }

-- The outermost Tensor method or constructor on the stack (what the user
-- called), for the messages; only ever run on an error path.
local function method_name()
  local names = {}
  for _, tbl in ipairs { Tensor, mt, M } do
    for k, f in pairs(tbl) do
      if type(f) == "function" then
        local old = names[f]
        if old == nil or (ALIASES[old] and not ALIASES[k]) or (ALIASES[old] == ALIASES[k] and #k < #old) then
          names[f] = k
        end
      end
    end
  end
  local here = debug.getinfo(1, "S").source
  local name
  for level = 2, 30 do
    local info = debug.getinfo(level, "Sf")
    if not info then break end
    if names[info.func] then name = names[info.func]
    elseif info.source ~= here then break end
  end
  return OPERATORS[name] or name or "tensor"
end

-- Raises "<method>: msg" at the user's line (the method: what the user called).
local function fail(msg)
  core.raise(("%s: %s"):format(method_name(), msg), 2)
end

local function handle(t, level, what)
  if not is_tensor(t) then
    if what then fail(("%s must be a tensor, got %s"):format(what, describe(t))) end
    fail("expected a facet tensor, got " .. type(t))
  end
  if t.h == nil then
    core.raise(("tensor:%s: the tensor was freed (t:free())"):format(method_name()), 2)
  end
  return t.h
end

-- t itself, after the same checks
local function valid(t, level)
  handle(t, (level or 2) + 1)
  return t
end

-- ---- options and shapes --------------------------------------------------------

-- other names a dtype may be given by
local DTYPE_ALIAS = { half = "float16", bf16 = "bfloat16" }
local DTYPE_LIST = "float32, float16 (half), bfloat16 (bf16), int32, int64, uint8"
-- the 16-bit floats: no Lua element type, read and written through float32
local HALF = { float16 = true, bfloat16 = true }

local function dtype_name(name)
  return DTYPE_ALIAS[name] or name
end

local function dtype_code(name, level)
  local v = DTYPES[dtype_name(name or "float32")]
  if not v then
    fail(("unknown dtype '%s' (%s)"):format(tostring(name), DTYPE_LIST))
  end
  return v
end

local function device_code(name, level)
  local v = DEVICES[name or "cpu"]
  if not v then fail(("unknown device '%s' (cpu, cuda)"):format(tostring(name))) end
  if name == "cuda" then
    local n = ffi.new("int[1]")
    check(C.facet_cuda_device_count(n), level)
    if n[0] == 0 then
      fail("device 'cuda' requested but no CUDA device is available (facet.cuda.available() is false)")
    end
  end
  return v
end

-- an integer argument that an int64_t holds exactly as given (a number past
-- 2^63, inf or NaN would not survive the FFI conversion), at least `min`
local TWO63 = 2 ^ 63
local function int_arg(what, v, min, level)
  if type(v) ~= "number" or v ~= math.floor(v) or v < min or v >= TWO63 then
    core.raise(("%s is %s, want an integer in [%d, 2^63)"):format(what, describe(v), min), 2)
  end
  return v
end

-- sizes from a table {2, 3} or from numbers 2, 3; returns ndim and fills buf
local function read_sizes(sizes, buf, level)
  if type(sizes) ~= "table" then fail("sizes must be a table of numbers, got " .. describe(sizes)) end
  local n = #sizes
  if n > 8 then fail(("%d dims given, at most 8 are supported"):format(n)) end
  for i = 1, n do
    local s = sizes[i]
    if type(s) ~= "number" or s < 0 or s ~= math.floor(s) or s >= TWO63 then
      fail(("size %d is %s, want a non-negative integer below 2^63"):format(i, describe(s)))
    end
    buf[i - 1] = s
  end
  return n
end

-- A CUDA tensor that did not fit: facet.cuda.out_of_memory collects garbage,
-- empties the cache and tries once more, or raises an error with the bytes
-- asked for and held. Other statuses come back for check().
local function device_oom(rc, dtype, device, nd, sizes, level)
  if rc ~= C.FACET_STATUS_ERR_MEMORY or device ~= DEVICES.cuda then return rc end
  local keep, dims, numel = ffi.new("int64_t[8]"), {}, 1
  for i = 0, nd - 1 do
    keep[i] = sizes[i]
    dims[i + 1] = tostring(tonumber(sizes[i]))
    numel = numel * tonumber(sizes[i])
  end
  local es = ffi.new("size_t[1]")
  C.facet_dtype_size(dtype, es)
  local what = ("a [%s] %s tensor"):format(table.concat(dims, "x"), DTYPE_NAMES[tonumber(dtype)])
  -- not a tail call: level + 1 counts this frame
  local status = cuda.out_of_memory(rc, function() return C.facet_tensor_init(out_p, dtype, device, nd, keep) end,
    numel * tonumber(es[0]), what, level + 1)
  return status
end

local function new_empty(sizes, dtype, device, level)
  level = (level or 2) + 1
  local n = read_sizes(sizes, sizes_buf, level)
  local dt, dev = dtype_code(dtype, level), device_code(device, level)
  local rc = C.facet_tensor_init(out_p, dt, dev, n, sizes_buf)
  if rc ~= 0 then rc = device_oom(rc, dt, dev, n, sizes_buf, level) end
  check(rc, level)
  return wrap(out_p[0])
end

-- a new tensor with t's shape (or `sizes`), dtype and device
local function empty_like(t, dtype, sizes)
  local h = handle(t, 3)
  C.facet_tensor_ndim(h, int_1)
  local nd = int_1[0]
  if sizes then
    nd = read_sizes(sizes, sizes_buf2, 3)
  else
    C.facet_tensor_shape(h, sizes_buf2, nil)
  end
  C.facet_tensor_device(h, int_1)
  local dev = int_1[0]
  if not dtype then C.facet_tensor_dtype(h, int_1); dtype = int_1[0] end
  local rc = C.facet_tensor_init(out_p, dtype, dev, nd, sizes_buf2)
  if rc ~= 0 then rc = device_oom(rc, dtype, dev, nd, sizes_buf2, 3) end
  check(rc, 3)
  return wrap(out_p[0])
end

-- ---- metadata --------------------------------------------------------------------

function Tensor.dim(t)
  check(C.facet_tensor_ndim(handle(t), int_1))
  return int_1[0]
end
Tensor.ndim = Tensor.dim

function Tensor.shape(t)
  local h = handle(t)
  C.facet_tensor_ndim(h, int_1)
  local nd = int_1[0]
  C.facet_tensor_shape(h, sizes_buf, nil)
  local s = {}
  for i = 1, nd do s[i] = tonumber(sizes_buf[i - 1]) end
  return s
end

function Tensor.stride(t)
  local h = handle(t)
  C.facet_tensor_ndim(h, int_1)
  local nd = int_1[0]
  C.facet_tensor_shape(h, nil, sizes_buf)
  local s = {}
  for i = 1, nd do s[i] = tonumber(sizes_buf[i - 1]) end
  return s
end

-- 1-based dim; negative counts from the end
local function norm_dim(t, d, level)
  local nd = Tensor.dim(t)
  if type(d) ~= "number" or d ~= math.floor(d) then
    fail(("dim must be an integer, got %s"):format(describe(d)))
  end
  if d < 0 then d = nd + 1 + d end
  if d < 1 or d > nd then
    fail(("dim %d out of range for a %d-dim tensor"):format(d, nd))
  end
  return d
end

function Tensor.size(t, d)
  if d == nil then return Tensor.shape(t) end
  d = norm_dim(t, d, 2)
  return Tensor.shape(t)[d]
end

function Tensor.numel(t)
  check(C.facet_tensor_numel(handle(t), i64_1))
  return tonumber(i64_1[0])
end
Tensor.nElement = Tensor.numel

function Tensor.dtype(t)
  check(C.facet_tensor_dtype(handle(t), int_1))
  return DTYPE_NAMES[int_1[0]]
end

function Tensor.device(t)
  check(C.facet_tensor_device(handle(t), int_1))
  return DEVICE_NAMES[int_1[0]]
end

function Tensor.is_contiguous(t)
  check(C.facet_tensor_is_contiguous(handle(t), int_1))
  return int_1[0] ~= 0
end

--- Typed pointer to element 1 (CPU tensors; for CUDA tensors a device pointer).
function Tensor.data_ptr(t)
  check(C.facet_tensor_data(handle(t), voidp_1))
  local ct = core.CTYPES[Tensor.dtype(t)]
  if not ct then
    core.raise(("data_ptr: dtype %s has no Lua element type (t:float() converts exactly; t:bits_ptr() gives the "
      .. "raw 16-bit patterns)"):format(Tensor.dtype(t)), 2)
  end
  return ffi.cast(ct .. " *", voidp_1[0])
end

--- For float16/bfloat16 tensors: a uint16_t pointer to the raw bit patterns
-- (Lua has no 16-bit float type; data_ptr refuses them so that no caller
-- writes numbers into bits by mistake). CPU tensors only.
function Tensor.bits_ptr(t)
  local dt = Tensor.dtype(t)
  if not HALF[dt] then core.raise(("bits_ptr: wants a float16 or bfloat16 tensor, got %s"):format(dt), 2) end
  if Tensor.device(t) ~= "cpu" then core.raise("bits_ptr: wants a CPU tensor (copy it with t:cpu())", 2) end
  check(C.facet_tensor_data(handle(t), voidp_1))
  return ffi.cast("uint16_t *", voidp_1[0])
end

function Tensor.free(t)
  if not is_tensor(t) then fail("expected a facet tensor, got " .. describe(t)) end
  if t.h ~= nil then
    ffi.gc(t, nil)
    C.facet_tensor_free(t.h)
    t.h = nil
  end
end

function Tensor.is_freed(t)
  if not is_tensor(t) then fail("expected a facet tensor, got " .. describe(t)) end
  return t.h == nil
end

-- For loops that must allocate nothing even where LuaJIT interprets them
-- (reading t.h there boxes the pointer: a new cdata each time):
-- M.handle_words(t) views t's handle field as 32-bit words, made once per
-- tensor; M.freed_words(w) reads them as numbers, true once t was freed. The
-- view does not keep t alive: hold t while it is used.
local HANDLE_OFFSET = ffi.offsetof("struct facet_lua_tensor", "h")
local HANDLE_LAST = ffi.sizeof("facet_tensor *") / 4 - 1
function M.handle_words(t)
  if not is_tensor(t) then fail("expected a facet tensor, got " .. describe(t)) end
  return ffi.cast("const uint32_t *", ffi.cast("const uint8_t *", t) + HANDLE_OFFSET)
end
function M.freed_words(w) return w[0] == 0 and w[HANDLE_LAST] == 0 end

-- ---- views -------------------------------------------------------------------------

function Tensor.narrow(t, dim, start, length)
  dim = norm_dim(t, dim, 2)
  int_arg("narrow: start", start, 1, 2)
  int_arg("narrow: length", length, 0, 2)
  local size = Tensor.shape(t)[dim]
  if start > size + 1 or length > size + 1 - start then
    core.raise(("narrow: start %d and length %d run past size %d of dim %d"):format(start, length, size, dim), 2)
  end
  check(C.facet_tensor_narrow(out_p, handle(t), dim - 1, start - 1, length))
  return wrap(out_p[0])
end

function Tensor.select(t, dim, index)
  dim = norm_dim(t, dim, 2)
  local size = Tensor.shape(t)[dim]
  if type(index) ~= "number" or index ~= math.floor(index) or index < 1 or index > size then
    core.raise(("select: index %s out of range for dim %d of size %d"):format(tostring(index), dim, size), 2)
  end
  check(C.facet_tensor_select(out_p, handle(t), dim - 1, index - 1))
  return wrap(out_p[0])
end

--- A new shape: a view of contiguous data (a non-contiguous tensor is copied
-- first); one size may be -1.
function Tensor.reshape(t, ...)
  local sizes = ...
  if type(sizes) ~= "table" then sizes = { ... } end
  local n = #sizes
  if n > 8 then core.raise(("reshape: %d dims given, at most 8 are supported"):format(n), 2) end
  for i = 1, n do sizes_buf[i - 1] = int_arg(("reshape: size %d"):format(i), sizes[i], -1, 2) end
  local h = handle(t)
  if not Tensor.is_contiguous(t) then
    local c = t:contiguous()
    check(C.facet_tensor_reshape(out_p, c.h, n, sizes_buf))
  else
    check(C.facet_tensor_reshape(out_p, h, n, sizes_buf))
  end
  return wrap(out_p[0])
end
Tensor.view = Tensor.reshape

function Tensor.flatten(t) return Tensor.reshape(t, { -1 }) end

-- ---- copies and conversion -----------------------------------------------------

--- Copies src into t (same number of elements; converts dtype and device).
function Tensor.copy(t, src)
  check(C.facet_tensor_copy(handle(t), handle(src)))
  return t
end
Tensor.copy_ = Tensor.copy

function Tensor.clone(t)
  local out = empty_like(t)
  check(C.facet_tensor_copy(out.h, t.h))
  return out
end

function Tensor.contiguous(t)
  if Tensor.is_contiguous(t) then return t end
  return Tensor.clone(t)
end

--- t:to("cuda"), t:to("int32"), t:to("cpu", "float32"): self when nothing changes.
function Tensor.to(t, a, b)
  handle(t)
  local device, dtype = Tensor.device(t), Tensor.dtype(t)
  for _, v in ipairs { a, b } do
    if DEVICES[v] then device = v
    elseif DTYPES[dtype_name(v)] then dtype = dtype_name(v)
    elseif v ~= nil then fail(("unknown device or dtype '%s' (cpu, cuda; %s)"):format(tostring(v), DTYPE_LIST)) end
  end
  if device == Tensor.device(t) and dtype == Tensor.dtype(t) then return t end
  local out = new_empty(Tensor.shape(t), dtype, device, 2)
  check(C.facet_tensor_copy(out.h, t.h))
  return out
end

function Tensor.cuda(t) return Tensor.to(t, "cuda") end
function Tensor.cpu(t) return Tensor.to(t, "cpu") end
function Tensor.float(t) return Tensor.to(t, "float32") end
function Tensor.half(t) return Tensor.to(t, "float16") end
function Tensor.bfloat16(t) return Tensor.to(t, "bfloat16") end
function Tensor.int(t) return Tensor.to(t, "int32") end
function Tensor.long(t) return Tensor.to(t, "int64") end
function Tensor.byte(t) return Tensor.to(t, "uint8") end
function Tensor.type(t, dtype) if dtype == nil then return Tensor.dtype(t) end return Tensor.to(t, dtype) end

function Tensor.fill_(t, v)
  if type(v) ~= "number" then fail("value must be a number, got " .. describe(v)) end
  check(C.facet_tensor_fill(handle(t), v))
  return t
end
Tensor.fill = Tensor.fill_
function Tensor.zero_(t) return Tensor.fill_(t, 0) end
Tensor.zero = Tensor.zero_

-- ---- elements --------------------------------------------------------------------

local function element_index(t, idx, level)
  local nd = Tensor.dim(t)
  if #idx ~= nd then fail(("%d indices given for a %d-dim tensor"):format(#idx, nd)) end
  local shape = Tensor.shape(t)
  for i = 1, nd do
    local v = idx[i]
    if type(v) ~= "number" or v ~= math.floor(v) then
      fail(("index %d is %s, want an integer"):format(i, describe(v)))
    end
    if v < 0 then v = shape[i] + 1 + v end
    if v < 1 or v > shape[i] then
      fail(("index %d out of range for dim %d of size %d"):format(idx[i], i, shape[i]))
    end
    sizes_buf[i - 1] = v - 1
  end
end

--- t:get(i, j, ...) reads one element (1-based).
function Tensor.get(t, ...)
  element_index(t, { ... }, 2)
  check(C.facet_tensor_get(t.h, sizes_buf, double_1))
  return double_1[0]
end

--- t:set(value, i, j, ...) writes one element.
function Tensor.set(t, value, ...)
  if type(value) ~= "number" then fail("value must be a number, got " .. describe(value)) end
  element_index(t, { ... }, 2)
  check(C.facet_tensor_set(t.h, sizes_buf, value))
  return t
end

--- The value of a one-element tensor.
function Tensor.item(t)
  if Tensor.numel(t) ~= 1 then fail(("needs one element, the tensor has %d"):format(Tensor.numel(t))) end
  local nd = Tensor.dim(t)
  for i = 0, nd - 1 do sizes_buf[i] = 0 end
  check(C.facet_tensor_get(t.h, sizes_buf, double_1))
  return double_1[0]
end

--- Nested Lua tables of the values.
function Tensor.totable(t)
  local c = Tensor.to(Tensor.contiguous(t), "cpu")
  if HALF[Tensor.dtype(c)] then c = Tensor.to(c, "float32") end     -- exact
  local shape, n = Tensor.shape(c), Tensor.numel(c)
  local p = Tensor.data_ptr(c)
  if #shape == 0 then return tonumber(p[0]) end
  local pos = 0
  local function build(d)
    local r = {}
    if d == #shape then
      for i = 1, shape[d] do r[i] = tonumber(p[pos]); pos = pos + 1 end
    else
      for i = 1, shape[d] do r[i] = build(d + 1) end
    end
    return r
  end
  local r = build(1)
  assert(pos == n)
  return r
end

-- ---- elementwise -----------------------------------------------------------------

local UNARY = {
  neg = C.FACET_UNARY_NEG, exp = C.FACET_UNARY_EXP, log = C.FACET_UNARY_LOG, sqrt = C.FACET_UNARY_SQRT,
  abs = C.FACET_UNARY_ABS, square = C.FACET_UNARY_SQUARE, rsqrt = C.FACET_UNARY_RSQRT,
  sigmoid = C.FACET_UNARY_SIGMOID, tanh = C.FACET_UNARY_TANH, relu = C.FACET_UNARY_RELU,
  sign = C.FACET_UNARY_SIGN, cos = C.FACET_UNARY_COS, sin = C.FACET_UNARY_SIN, acos = C.FACET_UNARY_ACOS,
  floor = C.FACET_UNARY_FLOOR,
}

local function unary(out, t, op, a, b)
  check(C.facet_tensor_unary(handle(out, 3), handle(t, 3), op, a or 0, b or 0), 3)
  return out
end

for name, op in pairs(UNARY) do
  Tensor[name] = function(t) return unary(empty_like(valid(t, 2)), t, op) end
  Tensor[name .. "_"] = function(t) return unary(t, t, op) end
end

local function clamp_bounds(lo, hi)
  if lo ~= nil and (type(lo) ~= "number" or lo ~= lo) then fail("min must be a number, got " .. describe(lo)) end
  if hi ~= nil and (type(hi) ~= "number" or hi ~= hi) then fail("max must be a number, got " .. describe(hi)) end
end

function Tensor.clamp(t, lo, hi)
  clamp_bounds(lo, hi)
  return unary(empty_like(valid(t, 2)), t, C.FACET_UNARY_CLAMP, lo or -math.huge, hi or math.huge)
end
function Tensor.clamp_(t, lo, hi)
  clamp_bounds(lo, hi)
  return unary(t, t, C.FACET_UNARY_CLAMP, lo or -math.huge, hi or math.huge)
end

local BINARY = {
  add = C.FACET_BINARY_ADD, sub = C.FACET_BINARY_SUB, mul = C.FACET_BINARY_MUL, div = C.FACET_BINARY_DIV,
  maximum = C.FACET_BINARY_MAX, minimum = C.FACET_BINARY_MIN, pow = C.FACET_BINARY_POW,
  eq = C.FACET_BINARY_EQ, lt = C.FACET_BINARY_LT, gt = C.FACET_BINARY_GT,
}

-- the ops with a number as second operand, as unary ops: x op s
local SCALAR = {
  add = function(s) return C.FACET_UNARY_ADD, s end,
  sub = function(s) return C.FACET_UNARY_ADD, -s end,
  mul = function(s) return C.FACET_UNARY_MUL, s end,
  div = function(s) return C.FACET_UNARY_MUL, 1 / s end,
  pow = function(s) return C.FACET_UNARY_POW, s end,
  maximum = function(s) return C.FACET_UNARY_CLAMP, s, math.huge end,
  minimum = function(s) return C.FACET_UNARY_CLAMP, -math.huge, s end,
}

local function broadcast_shape(a, b, level)
  local sa, sb = Tensor.shape(a), Tensor.shape(b)
  local n = math.max(#sa, #sb)
  local out = {}
  for i = 1, n do
    local x = sa[i - (n - #sa)] or 1
    local y = sb[i - (n - #sb)] or 1
    if x ~= y and x ~= 1 and y ~= 1 then
      fail(("shapes %s and %s do not broadcast"):format(table.concat(sa, "x"), table.concat(sb, "x")))
    end
    out[i] = x == 1 and y or x
  end
  return out
end

local function binary(name, op)
  local scalar = SCALAR[name]
  local function apply(out, t, o, level)
    if type(o) == "number" then
      if not scalar then error(name .. ": a number operand is not supported; use a tensor", level + 1) end
      local uop, a, b = scalar(o)
      out = out or empty_like(t)
      check(C.facet_tensor_unary(out.h, t.h, uop, a, b or 0), level + 1)
      return out
    end
    handle(o, level + 1)
    out = out or empty_like(t, nil, broadcast_shape(t, o, level + 1))
    check(C.facet_tensor_binary(out.h, t.h, o.h, op), level + 1)
    return out
  end
  -- (no tail calls: the method's frame stays on the stack for method_name)
  Tensor[name] = function(t, o) handle(t, 2); local r = apply(nil, t, o, 2); return r end
  Tensor[name .. "_"] = function(t, o) handle(t, 2); local r = apply(t, t, o, 2); return r end
end
for name, op in pairs(BINARY) do binary(name, op) end

--- t + alpha * other, in place (same shapes, float32, contiguous).
function Tensor.axpy_(t, alpha, other)
  check(C.facet_tensor_axpy(handle(t), t.h, alpha, handle(other)))
  return t
end

-- operators: numbers on either side
local function operand_order(a, b, level)
  if is_tensor(a) then return a, b, false end
  if is_tensor(b) then return b, a, true end
  fail("arithmetic on non-tensors")
end

mt.__add = function(a, b)
  local t, o = operand_order(a, b, 2)
  return Tensor.add(t, o)
end
mt.__mul = function(a, b)
  local t, o = operand_order(a, b, 2)
  return Tensor.mul(t, o)
end
mt.__sub = function(a, b)
  local t, o, swapped = operand_order(a, b, 2)
  if swapped then return unary(empty_like(t), t, C.FACET_UNARY_RSUB, o) end
  return Tensor.sub(t, o)
end
mt.__div = function(a, b)
  local t, o, swapped = operand_order(a, b, 2)
  if swapped then return unary(empty_like(t), t, C.FACET_UNARY_RDIV, o) end
  return Tensor.div(t, o)
end
mt.__pow = function(a, b)
  local t, o, swapped = operand_order(a, b, 2)
  if swapped then fail("number ^ tensor is not supported") end
  return Tensor.pow(t, o)
end
mt.__unm = function(a) return Tensor.neg(a) end
mt.__len = function(a) return Tensor.shape(a)[1] or 1 end

-- ---- reductions --------------------------------------------------------------------

local REDUCE = { sum = C.FACET_REDUCE_SUM, mean = C.FACET_REDUCE_MEAN, sumsq = C.FACET_REDUCE_SUMSQ }

local function reduce(t, op, dim, keepdim, dtype, level)
  level = level + 1
  local shape = Tensor.shape(valid(t, level))
  local out_shape, cdim = {}, -1
  if dim ~= nil then
    dim = norm_dim(t, dim, level)
    cdim = dim - 1
    for i = 1, #shape do
      if i ~= dim then out_shape[#out_shape + 1] = shape[i]
      elseif keepdim then out_shape[#out_shape + 1] = 1 end
    end
  end
  -- a reduction to one number keeps float32 precision (16-bit inputs
  -- included); along a dim the result has the input's dtype
  if dim == nil and dtype == nil then dtype = DTYPES.float32 end
  local out = empty_like(t, dtype, out_shape)
  check(C.facet_tensor_reduce(out.h, t.h, op, cdim, 1), level)
  return out
end

--- t:sum() -> number; t:sum(dim [, keepdim]) -> tensor. Same for mean, sumsq.
for name, op in pairs(REDUCE) do
  Tensor[name] = function(t, dim, keepdim)
    local r = reduce(t, op, dim, keepdim, nil, 2)
    if dim == nil then return r:item() end
    return r
  end
end

--- t:max() -> number; t:max(dim) -> values, indices (int64, 1-based), like Torch7.
local function extreme(vop, iop)
  return function(t, dim, keepdim)
    if dim == nil then return reduce(t, vop, nil, false, nil, 2):item() end
    return reduce(t, vop, dim, keepdim, nil, 2), reduce(t, iop, dim, keepdim, DTYPES.int64, 2)
  end
end
Tensor.max = extreme(C.FACET_REDUCE_MAX, C.FACET_REDUCE_ARGMAX)
Tensor.min = extreme(C.FACET_REDUCE_MIN, C.FACET_REDUCE_ARGMIN)

--- 1-based position of the largest element (over all: of the flattened tensor).
function Tensor.argmax(t, dim, keepdim)
  local r = reduce(t, C.FACET_REDUCE_ARGMAX, dim, keepdim, DTYPES.int64, 2)
  if dim == nil then return r:item() end
  return r
end
function Tensor.argmin(t, dim, keepdim)
  local r = reduce(t, C.FACET_REDUCE_ARGMIN, dim, keepdim, DTYPES.int64, 2)
  if dim == nil then return r:item() end
  return r
end

--- L2 norm of everything, or along dim.
function Tensor.norm(t, dim)
  if dim == nil then return math.sqrt(reduce(t, C.FACET_REDUCE_SUMSQ, nil, false, nil, 2):item()) end
  return reduce(t, C.FACET_REDUCE_SUMSQ, dim, false, nil, 2):sqrt_()
end

-- ---- linear algebra ----------------------------------------------------------------

--- a:matmul(b [, opts]): 2-D @ 2-D, or batched 3-D @ 3-D / 2-D.
-- opts: transpose_a, transpose_b, alpha (1), beta (0), out (written in place,
-- required when beta ~= 0).
function Tensor.matmul(a, b, opts)
  if opts ~= nil and type(opts) ~= "table" then fail("the options must be a table, got " .. describe(opts)) end
  opts = opts or {}
  handle(a, 2)
  handle(b, 2, "the second operand")
  local sa, sb = Tensor.shape(a), Tensor.shape(b)
  local out = opts.out
  if not out then
    if (#sa ~= 2 and #sa ~= 3) or (#sb ~= 2 and #sb ~= 3) then
      core.raise(("matmul: want 2-D or 3-D operands, got %s and %s"):format(table.concat(sa, "x"), table.concat(sb, "x")), 2)
    end
    local ra, rb = #sa - 1, #sb - 1
    local m = opts.transpose_a and sa[ra + 1] or sa[ra]
    local n = opts.transpose_b and sb[rb] or sb[rb + 1]
    out = empty_like(a, nil, #sa == 3 and { sa[1], m, n } or { m, n })
  end
  check(C.facet_tensor_matmul(handle(out), a.h, b.h, opts.transpose_a and 1 or 0, opts.transpose_b and 1 or 0,
    opts.alpha or 1, opts.beta or 0))
  return out
end
Tensor.mm = Tensor.matmul
Tensor.bmm = Tensor.matmul

--- Rows scaled to unit L2 norm; returns the normalised tensor and the row norms.
function Tensor.l2_normalize(t, eps)
  handle(t)
  local shape = Tensor.shape(t)
  local out = empty_like(t)
  local norms = empty_like(t, nil, { shape[1] or 0 })
  check(C.facet_tensor_l2_normalize(out.h, norms.h, t.h, eps or 1e-12))
  return out, norms
end
Tensor.normalize = Tensor.l2_normalize

--- Contiguous copy with dims permuted: t:permute(2, 1) or t:permute{2, 1}.
function Tensor.permute(t, ...)
  local perm = ...
  if type(perm) ~= "table" then perm = { ... } end
  local nd = Tensor.dim(valid(t))
  if #perm ~= nd then core.raise(("permute: %d dims given for a %d-dim tensor"):format(#perm, nd), 2) end
  local shape, out_shape = Tensor.shape(t), {}
  for i = 1, nd do
    local p = perm[i]
    if type(p) ~= "number" or not shape[p] then core.raise(("permute: bad dim %s"):format(tostring(p)), 2) end
    int_buf[i - 1] = p - 1
    out_shape[i] = shape[p]
  end
  local out = empty_like(t, nil, out_shape)
  check(C.facet_tensor_permute(out.h, t.h, int_buf))
  return out
end

--- Contiguous copy with two dims swapped (t:t() for a matrix).
function Tensor.transpose(t, d1, d2)
  local nd = Tensor.dim(valid(t))
  d1, d2 = norm_dim(t, d1 or 1, 2), norm_dim(t, d2 or 2, 2)
  local perm = {}
  for i = 1, nd do perm[i] = i end
  perm[d1], perm[d2] = d2, d1
  return Tensor.permute(t, perm)
end
function Tensor.t(t)
  if Tensor.dim(t) ~= 2 then fail("needs a 2-D tensor") end
  return Tensor.transpose(t, 1, 2)
end

-- ---- indexing (index tensors hold 1-based positions, as in Torch7) -----------

--- Rows of a 2-D tensor: out[i] = t[index[i]].
function Tensor.index_select(t, index)
  local shape = Tensor.shape(valid(t))
  handle(index, 2, "index")
  local out = empty_like(t, nil, { index:numel(), shape[2] or 0 })
  check(C.facet_tensor_index_select(out.h, t.h, index.h, 1))
  return out
end

--- t[index[i]] += alpha * src[i] (duplicate indices accumulate), in place.
function Tensor.index_add_(t, index, src, alpha)
  if alpha ~= nil and type(alpha) ~= "number" then fail("alpha must be a number, got " .. describe(alpha)) end
  check(C.facet_tensor_index_add(handle(t), handle(src, 2, "src"), handle(index, 2, "index"), alpha or 1, 1))
  return t
end

--- t[index[i]] = src[i], in place.
function Tensor.index_copy_(t, index, src)
  check(C.facet_tensor_index_copy(handle(t), handle(src, 2, "src"), handle(index, 2, "index"), 1))
  return t
end

--- One element per row of a 2-D tensor: out[i] = t[i][index[i]].
function Tensor.gather(t, index)
  local shape = Tensor.shape(valid(t))
  handle(index, 2, "index")
  local out = empty_like(t, nil, { shape[1] or 0 })
  check(C.facet_tensor_gather_cols(out.h, t.h, index.h, 1))
  return out
end

--- t[i][index[i]] = src[i], in place.
function Tensor.scatter_(t, index, src)
  check(C.facet_tensor_scatter_cols(handle(t), handle(src, 2, "src"), handle(index, 2, "index"), 1))
  return t
end

-- ---- indexing syntax and printing --------------------------------------------------

mt.__index = function(t, k)
  if type(k) == "number" then
    local nd = Tensor.dim(t)
    if nd == 1 then return Tensor.get(t, k) end
    if nd == 0 then core.raise("cannot index a 0-dim tensor; use :item()", 2) end
    local n = Tensor.shape(t)[1]
    if k ~= math.floor(k) or k < 1 or k > n then
      core.raise(("index %s out of range for dim 1 of size %d"):format(tostring(k), n), 2)
    end
    return Tensor.select(t, 1, k)
  end
  local m = Tensor[k]
  if m == nil and type(k) == "string" then core.raise(("tensor has no method or field '%s'"):format(k), 2) end
  return m
end

mt.__newindex = function(t, k, v)
  if type(k) ~= "number" then core.raise(("cannot set field '%s' of a tensor"):format(tostring(k)), 2) end
  local nd = Tensor.dim(t)
  if nd == 1 then
    if type(v) ~= "number" then core.raise("element value must be a number", 2) end
    Tensor.set(t, v, k)
    return
  end
  local row = t[k]
  if type(v) == "number" then Tensor.fill_(row, v) else Tensor.copy(row, v) end
end

mt.__tostring = function(t) return require("facet.print").format(t) end

T = ffi.metatype("struct facet_lua_tensor", mt)
M.ctype = T

-- ---- constructors ----------------------------------------------------------------

local function opts_of(o, level)
  if o ~= nil and type(o) ~= "table" then fail("options must be a table, got " .. describe(o)) end
  return o or {}
end

local function sizes_of(sizes, level)
  if type(sizes) == "number" then return { sizes } end
  if type(sizes) ~= "table" then fail("sizes must be a table such as {2, 3}, got " .. describe(sizes)) end
  return sizes
end

function M.empty(sizes, opts)
  opts = opts_of(opts, 2)
  sizes = sizes_of(sizes, 2)
  read_sizes(sizes, sizes_buf, 2)                       -- here, so that a message names empty
  -- not a tail call: new_empty's levels count this frame
  local t = new_empty(sizes, opts.dtype, opts.device, 2)
  return t
end

function M.full(sizes, value, opts)
  opts = opts_of(opts, 2)
  if type(value) ~= "number" then core.raise("full: value must be a number", 2) end
  local t = new_empty(sizes_of(sizes, 2), opts.dtype, opts.device, 2)
  check(C.facet_tensor_fill(t.h, value))
  return t
end

-- (not tail calls: a message names zeros or ones, see method_name)
function M.zeros(sizes, opts) local t = M.full(sizes, 0, opts); return t end
function M.ones(sizes, opts) local t = M.full(sizes, 1, opts); return t end

--- facet.arange(n) = 0 .. n-1; facet.arange(a, b [, step]) = a, a+step, ... < b.
function M.arange(a, b, step, opts)
  if type(b) == "table" then opts, b = b, nil end
  if type(step) == "table" then opts, step = step, nil end
  opts = opts_of(opts, 2)
  if b == nil then a, b = 0, a end
  step = step or 1
  if type(a) ~= "number" or type(b) ~= "number" or type(step) ~= "number" or step == 0 then
    core.raise("arange: want numbers start, stop and a non-zero step", 2)
  end
  for _, v in ipairs { a, b, step } do
    if v ~= v or v == math.huge or v == -math.huge then
      core.raise(("arange: start, stop and step must be finite, got %s"):format(tostring(v)), 2)
    end
  end
  local n = math.max(0, math.ceil((b - a) / step))
  local t = new_empty({ n }, opts.dtype, opts.device, 2)
  check(C.facet_tensor_arange(t.h, a, step))
  return t
end

-- nested Lua table -> shape and flat values. The shape comes from the first
-- entry at each depth, at most 8 deep (so a table that holds itself is an
-- error, not an endless loop); every other entry must match it.
local function flatten_table(data)
  local shape, flat = {}, {}
  local d = data
  while type(d) == "table" do
    if #shape == 8 then
      core.raise("facet.tensor: the table is nested more than 8 deep (at most 8 dims; does it contain itself?)")
    end
    shape[#shape + 1] = #d
    d = d[1]
  end
  local function walk(x, dim, where)
    if dim > #shape then
      if type(x) ~= "number" then
        core.raise(("facet.tensor: tensor data must be numbers, found %s at %s"):format(type(x), where))
      end
      flat[#flat + 1] = x
      return
    end
    if type(x) ~= "table" or #x ~= shape[dim] then
      core.raise(("facet.tensor: ragged table: %s should be a table of %d entries, found %s"):format(where, shape[dim],
        type(x) == "table" and (#x .. " entries") or type(x)))
    end
    for i = 1, #x do walk(x[i], dim + 1, where .. "[" .. i .. "]") end
  end
  walk(data, 1, "data")
  return shape, flat
end

-- the inclusive range of each integer dtype (what the C core checks, guard.c)
local INT_RANGE = {
  int32 = { -2 ^ 31, 2 ^ 31 - 1, "[-2147483648, 2147483647]" },
  int64 = { -2 ^ 63, 2 ^ 63 - 1024, "[-9223372036854775808, 9223372036854775807]" },
  uint8 = { 0, 255, "[0, 255]" },
}

--- facet.tensor{{1, 2}, {3, 4}} or facet.tensor(data, { dtype=, device= }).
function M.tensor(data, opts)
  opts = opts_of(opts, 2)
  if type(data) == "number" then
    local t = new_empty({}, opts.dtype, "cpu", 2)
    check(C.facet_tensor_fill(t.h, data))
    return Tensor.to(t, opts.device or "cpu")
  end
  if type(data) ~= "table" then core.raise("facet.tensor: want a (nested) table of numbers", 2) end
  local shape, flat = flatten_table(data)
  local dtype = dtype_name(opts.dtype or "float32")
  if HALF[dtype] then
    -- 16-bit floats: each Lua number (a double) rounded once by the core
    local t = new_empty({ #flat }, dtype, "cpu", 2)
    for i = 1, #flat do
      sizes_buf[0] = i - 1
      check(C.facet_tensor_set(t.h, sizes_buf, flat[i]), 2)
    end
    return Tensor.to(Tensor.reshape(t, shape), opts.device or "cpu")
  end
  local t = new_empty(shape, dtype, "cpu", 2)
  -- integer dtypes take integers, in range (the rule of the C conversions,
  -- stricter only in that a fraction is an error rather than truncated)
  local range = INT_RANGE[dtype]
  if range then
    for i = 1, #flat do
      local v = flat[i]
      if v ~= v or v == math.huge or v == -math.huge then
        error(("facet.tensor: value %s (element %d, counting from 1) cannot be stored in %s (not a finite number)")
          :format(tostring(v), i, dtype), 2)
      end
      if v ~= math.floor(v) then
        core.raise(("facet.tensor: %s value %s (element %d) is not an integer"):format(dtype, tostring(v), i), 2)
      end
      if v < range[1] or v > range[2] then
        error(("facet.tensor: value %s (element %d, counting from 1) is out of range for %s: it must lie in %s")
          :format(tostring(v), i, dtype, range[3]), 2)
      end
    end
  end
  local p = Tensor.data_ptr(t)
  for i = 1, #flat do p[i - 1] = flat[i] end
  return Tensor.to(t, opts.device or "cpu")
end

-- the global generator: a seed and a counter that advances with each draw
local gen = { seed = 0x5eed, offset = 0 }

--- The global generator's position: get it (no argument) or restore one
-- ({ seed =, offset = }, e.g. from a checkpoint).
function M.generator_state(state)
  if state == nil then return { seed = gen.seed, offset = gen.offset } end
  if type(state) ~= "table" or type(state.seed) ~= "number" or type(state.offset) ~= "number" then
    core.raise("generator_state: want { seed = n, offset = n }", 2)
  end
  gen.seed, gen.offset = state.seed, state.offset
end

function M.manual_seed(seed)
  if type(seed) ~= "number" or seed < 0 or seed ~= math.floor(seed) then
    core.raise("manual_seed: want a non-negative integer", 2)
  end
  gen.seed, gen.offset = seed, 0
end

local function draw(sizes, opts, normal)
  opts = opts_of(opts, 3)
  -- the seed and offset reach the C core as uint64_t: a cdata integer, or a number that one holds exactly
  for _, k in ipairs { "seed", "offset" } do
    local v = opts[k]
    if v ~= nil and type(v) ~= "cdata" and (type(v) ~= "number" or v ~= math.floor(v) or v < 0 or v > 2 ^ 53) then
      fail(("%s must be an integer in [0, 2^53], got %s"):format(k, describe(v)))
    end
  end
  -- (the C core checks the values: NaN, a negative std ...)
  for _, k in ipairs(normal and { "mean", "std" } or { "low", "high" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "number" then fail(("%s must be a number, got %s"):format(k, describe(opts[k]))) end
  end
  -- 16-bit floats: drawn in float32, then rounded once
  local dtype = dtype_name(opts.dtype or "float32")
  if dtype ~= "float32" and not HALF[dtype] then
    fail(("dtype must be float32, float16 or bfloat16, got %s"):format(describe(opts.dtype)))
  end
  local t = new_empty(sizes_of(sizes, 3), "float32", opts.device, 3)
  local seed, offset = opts.seed, opts.offset or 0
  if seed == nil then
    seed, offset = gen.seed, gen.offset
    gen.offset = gen.offset + Tensor.numel(t)
  end
  if normal then
    check(C.facet_tensor_rand_normal(t.h, seed, offset, opts.mean or 0, opts.std or 1), 3)
  else
    check(C.facet_tensor_rand_uniform(t.h, seed, offset, opts.low or 0, opts.high or 1), 3)
  end
  if HALF[dtype] then t = Tensor.to(t, dtype) end
  return t
end

--- Uniform [low, high) (default [0, 1)); opts.seed gives a reproducible stream.
function M.rand(sizes, opts) local t = draw(sizes, opts, false); return t end
--- Normal(mean, std) (default N(0, 1)); opts.seed as for rand.
function M.randn(sizes, opts) local t = draw(sizes, opts, true); return t end

M.empty_like = function(t, opts)
  opts = opts_of(opts, 2)
  local out = new_empty(Tensor.shape(valid(t)), opts.dtype or Tensor.dtype(t), opts.device or Tensor.device(t), 2)
  return out
end

return M
