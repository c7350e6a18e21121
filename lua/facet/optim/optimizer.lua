--- facet.optim.optimizer: what every optimizer shares: collecting parameter
-- entries from modules, heads and plain lists; zero_grad; completing deferred
-- gradients; the global gradient norm and clipping; the state saved in
-- checkpoints.
--
-- Modules (facet.nn) and heads (facet.heads) present one interface,
-- named_parameters(), a list of entries
--   { name, param, grad, kind = "weight" | "bias" | "norm", module }
-- and an entry may defer part of its gradient (a fused cosine head's weight):
--   row_coef     the complete gradient is grad + row_coef_r * param_r (row r of
--                param); whoever applies the correction zeroes row_coef
--   row_norms    an update may write ||param_r|| of the updated param here
--   on_update(norms_written)  called after every update of param, with true
--                when row_norms holds the new norms
--   grad_sumsq() (optional) ||complete gradient||^2 without completing it;
--                grad_norm() no longer calls it: it sums the squares of
--                grad + row_coef_r * param_r on the device, with every other
--                entry's, in one pass and one read to the host
-- and a class-sharded head's block (facet.heads.sharded) carries
--   shard        { shape, gather(t), slice(full), sum(x) }: param holds rows
--                of a larger tensor of that shape; state() gathers each state
--                buffer to the full shape (a collective: call it on every
--                rank) and load_state() takes this rank's rows of it, so a
--                state saved on W ranks loads on any other number; grad_norm()
--                (and clipping) sums the entry's square sums over the ranks
--   reduced      the gradient is already summed over ranks (a data-parallel
--                trainer must not average it again)
-- The optimizer reads nothing else of its sources. Rows a sampled head
-- (Partial FC) left out have a zero gradient and are updated like the others:
-- momentum and weight decay keep acting on them (docs/heads.md).
--
-- All or nothing: step() checks every parameter (tensors alive, float32,
-- contiguous, one device, the gradient and the state buffers shaped like the
-- parameter, the deferred-gradient vectors one value per row) and the
-- settings before it updates any, so a step that fails changes no parameter,
-- buffer or step count. load_state() checks the whole state (name, step
-- count, settings, every tensor's name, dtype and shape) before it copies
-- anything, so a state it refuses leaves the optimizer exactly as it was.
-- A step allocates nothing: the checks and the handle arrays are made once
-- into a plan kept between steps, made again when the entries change (see
-- "the update plan" below; docs/nn.md).
local ffi = require "ffi"
local core = require "facet.core"
local valid = require "facet.check"
local tensor = require "facet.tensor"

local C, check = core.C, core.check
local Optimizer = {}
Optimizer.__index = Optimizer

-- the parameters of sources; fn names the optimizer in a message
local function collect(sources, fn)
  local function bad(msg) core.raise(fn .. ": " .. msg, 2) end
  if type(sources) ~= "table" then bad("want a module, a head, or a list of them, got " .. valid.describe(sources)) end
  if sources.named_parameters or sources.params then sources = { sources } end
  local list = {}
  for _, src in ipairs(sources) do
    if type(src) == "table" and src.named_parameters then
      for _, e in ipairs(src:named_parameters()) do
        list[#list + 1] = { name = e.name, param = e.param, grad = e.grad, kind = e.kind or "weight",
          row_coef = e.row_coef, row_norms = e.row_norms, on_update = e.on_update, grad_sumsq = e.grad_sumsq,
          shard = e.shard, reduced = e.reduced }
      end
    elseif type(src) == "table" and src.params and src.grads then
      for i, p in ipairs(src.params) do list[#list + 1] = { param = p, grad = src.grads[i], kind = src.kind or "weight" } end
    else
      bad("a source is neither a module, a head nor { params, grads }")
    end
  end
  if #list == 0 then bad("no parameters") end
  for i, p in ipairs(list) do
    if not tensor.is_tensor(p.param) or not tensor.is_tensor(p.grad) then bad(("parameter %d is not a tensor"):format(i)) end
    if p.row_coef ~= nil and not tensor.is_tensor(p.row_coef) then bad(("row_coef of parameter %d is not a tensor"):format(i)) end
    if p.row_norms ~= nil and not tensor.is_tensor(p.row_norms) then bad(("row_norms of parameter %d is not a tensor"):format(i)) end
  end
  return list
end

function Optimizer.new(cls, sources, cfg, defaults)
  cfg = cfg or {}
  if type(cfg) ~= "table" then
    core.raise(("facet.optim.%s: the settings must be a table, got %s"):format(cls.name, valid.describe(cfg)), 2)
  end
  local self = setmetatable({}, cls)
  for k, v in pairs(defaults) do self[k] = v end
  for k, v in pairs(cfg) do
    if defaults[k] == nil then
      local names = {}
      for d in pairs(defaults) do names[#names + 1] = d end
      table.sort(names)
      core.raise(("facet.optim.%s: unknown setting '%s' (%s)"):format(cls.name, tostring(k), table.concat(names, ", ")),
        2)
    end
    self[k] = v
  end
  valid.number("facet.optim." .. cls.name, "lr", self.lr, { min = 0 })
  valid.number("facet.optim." .. cls.name, "weight_decay", self.weight_decay, { min = 0, optional = true })
  valid.boolean("facet.optim." .. cls.name, "decay_bias_norm", self.decay_bias_norm, true)
  self.list = collect(sources, "facet.optim." .. cls.name)
  self.step_count = 0
  return self
end

-- ---- checks before any write --------------------------------------------------------

local nd_a, nd_b, int1 = ffi.new("int[1]"), ffi.new("int[1]"), ffi.new("int[1]")
local shape_a, shape_b = ffi.new("int64_t[8]"), ffi.new("int64_t[8]")

local function shape_text(t) return table.concat(t:shape(), "x") end

-- whether live tensors a and b have one shape (no Lua tables: step() runs this every step)
local function same_shape(a, b)
  C.facet_tensor_ndim(a.h, nd_a)
  C.facet_tensor_ndim(b.h, nd_b)
  if nd_a[0] ~= nd_b[0] then return false end
  C.facet_tensor_shape(a.h, shape_a, nil)
  C.facet_tensor_shape(b.h, shape_b, nil)
  for d = 0, nd_a[0] - 1 do
    if shape_a[d] ~= shape_b[d] then return false end
  end
  return true
end

local function code_of(fn, t)
  fn(t.h, int1)
  return int1[0]
end

local F32 = core.DTYPES.float32

-- the name of entry i in messages: "parameter 3 (1.weight)"
local function label(p, i)
  return p.name and ("parameter %d (%s)"):format(i, p.name) or ("parameter %d"):format(i)
end

-- an error (naming the optimizer, the method and the parameter) unless
-- entry p's tensor t of role `what` is alive, float32, contiguous, on the
-- param's device, and shaped like the param (rows: one value per row of it)
-- raises "<optimizer>:<method>: parameter i (name): <text>"; the message is
-- only built on failure, so a step that passes its checks formats nothing
local function bad(self, method, p, i, text)
  core.raise(("%s:%s: %s: %s"):format(self.name, method, label(p, i), text), 5)
end

local function check_tensor(self, method, p, i, what, t, rows)
  if not tensor.is_tensor(t) then bad(self, method, p, i, what .. " is not a tensor") end
  if t:is_freed() then bad(self, method, p, i, ("its %s was freed"):format(what)) end
  if code_of(C.facet_tensor_dtype, t) ~= F32 then
    bad(self, method, p, i, ("%s is %s, want float32"):format(what, t:dtype()))
  end
  if code_of(C.facet_tensor_is_contiguous, t) == 0 then bad(self, method, p, i, what .. " is not contiguous") end
  if what ~= "param" then
    if code_of(C.facet_tensor_device, t) ~= code_of(C.facet_tensor_device, p.param) then
      bad(self, method, p, i, ("%s on %s, param on %s"):format(what, t:device(), p.param:device()))
    end
    if rows then
      local n = p.param:dim() == 2 and p.param:size(1) or 1
      if t:numel() ~= n then bad(self, method, p, i, ("%s has %d values, want %d (one per row)"):format(what, t:numel(), n)) end
    elseif not same_shape(t, p.param) then
      bad(self, method, p, i, ("%s has shape %s, param %s"):format(what, shape_text(t), shape_text(p.param)))
    end
  end
end

local function check_number(self, method, key, lo, hi)
  local v = self[key]
  if type(v) ~= "number" or v ~= v or v < lo or (hi and v > hi) or v == math.huge then
    core.raise(("%s:%s: %s must be a finite number in [%g, %s], got %s"):format(self.name, method, key, lo,
      hi and ("%g"):format(hi) or "inf", tostring(v)), 3)
  end
end

-- lr and weight_decay: finite numbers >= 0 (every step: they may change between steps)
local function check_settings(self, method)
  check_number(self, method, "lr", 0)
  check_number(self, method, "weight_decay", 0)
end

--- Checks every parameter entry and the settings before step() writes
-- anything (errors name the optimizer, the method and the parameter).
function Optimizer:check_entries(method)
  method = method or "step"
  check_settings(self, method)
  for i, p in ipairs(self.list) do
    check_tensor(self, method, p, i, "param", p.param)
    check_tensor(self, method, p, i, "grad", p.grad)
    if p.row_coef ~= nil then check_tensor(self, method, p, i, "row_coef", p.row_coef, true) end
    if p.row_norms ~= nil then check_tensor(self, method, p, i, "row_norms", p.row_norms, true) end
    for _, key in ipairs(self.state_keys) do
      if p[key] ~= nil then check_tensor(self, method, p, i, key, p[key]) end
    end
  end
end

--- Allocates the state buffers named in keys that an entry lacks (zeros
-- like its param), for every entry before any update.
function Optimizer:ensure_state(keys)
  for _, p in ipairs(self.list) do
    for _, key in ipairs(keys) do
      if not p[key] then p[key] = tensor.zeros(p.param:shape(), { device = p.param:device() }) end
    end
  end
end

--- Weight decay of a parameter: none for biases and norm parameters when decay_bias_norm is false.
function Optimizer:decay_of(p)
  if p.kind ~= "weight" and not self.decay_bias_norm then return 0 end
  return self.weight_decay
end

--- step(), then zero_grad(): what facet.train does after a good step. SGD
-- and Adam zero each gradient inside its update pass (no launch of its own
-- per parameter); this fallback, for optimizers built on this class without
-- that, runs the two. step() alone never touches the gradients (Torch7's
-- updateParameters, PyTorch's step): code that reads them after the update,
-- or accumulates over several backwards, calls step() and zero_grad() itself.
function Optimizer:step_zero_grad()
  self:step()
  self:zero_grad()
end

-- the deferred part of a gradient applied (grad_r += row_coef_r * param_r),
-- then row_coef zeroed; the arguments are handles
local function complete_handles(grad, row_coef, param)
  check(C.facet_tensor_rows_axpy(grad, row_coef, param))
  check(C.facet_tensor_fill(row_coef, 0))
end

--- Applies the deferred part of an entry's gradient (grad_r += row_coef_r * param_r).
function Optimizer.complete(p)
  if p.row_coef then complete_handles(p.grad.h, p.row_coef.h, p.param.h) end
end

--- Makes every gradient complete (what an update that cannot take the
-- deferred part in its own pass, such as Adam's, does first; call it before
-- reading the gradients yourself).
function Optimizer:finish_grad()
  for _, p in ipairs(self.list) do Optimizer.complete(p) end
end

--- After the update of an entry's param: tells its owner (norms_written: row_norms holds the new norms).
function Optimizer.updated(p, norms_written)
  if p.on_update then p.on_update(norms_written and true or false) end
end

-- ---- the update plan, kept between steps ----------------------------------------------
-- A step hands the parameters to one facet_*_step_list call through C arrays
-- of handles. Filling those arrays reads every handle into Lua, and LuaJIT's
-- interpreter boxes each pointer it reads (24 bytes); the full checks above
-- call C a few times per tensor. So both happen once, when a plan is built:
-- the arrays, the handles of the entries that take calls of their own (kept
-- boxed, so passing them allocates nothing), and a snapshot of what the plan
-- was made from. A tensor's handle, shape, dtype, device and contiguity never
-- change (only t:free() clears the handle), so a plan holds while the list,
-- its entries, their tensors (the same objects, compared by identity, still
-- alive), their kinds and on_update functions, and the settings the decays
-- come from are what they were. A step then checks its numeric settings,
-- compares the snapshot and runs, allocating nothing, compiled or not. Any
-- change (a tensor replaced or freed, an entry added or replaced, state
-- buffers made by load_state, weight_decay or decay_bias_norm set) makes that
-- step check every entry again and build a new plan first.

local handle_words, freed_words = tensor.handle_words, tensor.freed_words

-- the tensor fields of an entry a plan depends on, besides the state keys
local TENSOR_FIELDS = { "param", "grad", "row_coef", "row_norms" }

-- list as a plan sees it (k1, k2: state keys or nil): per entry { p, param,
-- grad, row_coef, row_norms, kind, on_update, p[k1], p[k2] } (holding them
-- alive); words: the handle words (facet.tensor.handle_words) of its tensors
local function snapshot(list, k1, k2)
  local s = { list = list, n = #list, words = {} }
  for i = 1, s.n do
    local p = list[i]
    s[i] = { p, p.param, p.grad, p.row_coef, p.row_norms, p.kind, p.on_update, k1 and p[k1], k2 and p[k2] }
    for j = 2, 9 do
      local t = s[i][j]
      if tensor.is_tensor(t) then s.words[#s.words + 1] = handle_words(t) end
    end
  end
  s.n_words = #s.words
  return s
end

-- whether snapshot s still describes list: table reads and compares, no C
-- call, no boxed pointer (nothing allocated, in the interpreter too)
local function unchanged(s, list, k1, k2)
  local n = s.n
  if not rawequal(list, s.list) or #list ~= n then return false end
  for i = 1, n do
    local p, r = list[i], s[i]
    if not rawequal(p, r[1]) then return false end
    if not (rawequal(p.param, r[2]) and rawequal(p.grad, r[3]) and rawequal(p.row_coef, r[4]) and
        rawequal(p.row_norms, r[5]) and rawequal(p.kind, r[6]) and rawequal(p.on_update, r[7]) and
        rawequal(k1 and p[k1], r[8]) and rawequal(k2 and p[k2], r[9])) then
      return false
    end
  end
  local words = s.words
  for k = 1, s.n_words do
    if freed_words(words[k]) then return false end
  end
  return true
end

-- the handles of entry p's tensors (TENSOR_FIELDS and keys), boxed once
local function boxed_handles(p, keys)
  local h = {}
  for _, f in ipairs(TENSOR_FIELDS) do h[f] = p[f] and p[f].h end
  for _, f in ipairs(keys) do h[f] = p[f] and p[f].h end
  return h
end

-- a new plan for the entries (checked by check_entries, state made): the
-- entries on the first parameter's device that listable(p) accepts go in the arrays
local function build_plan(self, with_state, listable)
  local list, keys = self.list, self.state_keys
  local n = #list
  local plan = { with_state = with_state, weight_decay = self.weight_decay, decay_bias_norm = self.decay_bias_norm,
    snap = snapshot(list, keys[1], keys[2]), params = ffi.new("facet_tensor *[?]", n),
    grads = ffi.new("facet_tensor *[?]", n), decays = ffi.new("double[?]", n), state = {}, coefs = {}, after = {} }
  for j = 1, #keys do plan.state[j] = ffi.new("facet_tensor *[?]", n) end
  check(C.facet_tensor_device(list[1].param.h, int1))
  local dev, m = int1[0], 0
  for _, p in ipairs(list) do
    check(C.facet_tensor_device(p.param.h, int1))
    local listed = listable(p) and int1[0] == dev
    if listed then
      plan.params[m], plan.grads[m], plan.decays[m] = p.param.h, p.grad.h, self:decay_of(p)
      for j, key in ipairs(keys) do plan.state[j][m] = p[key] and p[key].h or nil end
      m = m + 1
    end
    if p.row_coef then plan.coefs[#plan.coefs + 1] = boxed_handles(p, keys) end
    if not listed or p.on_update then
      local k = #plan.after + 1
      plan.after[k] = { p = p, single = not listed, h = boxed_handles(p, keys),
        decay = self:decay_of(p), norms = p.row_norms ~= nil }
    end
  end
  plan.m, plan.n_coefs, plan.n_after = m, #plan.coefs, #plan.after
  return plan
end

--- The update plan of a step (see above), built again only when what it was
-- made from changed: checks the settings lr and weight_decay, and on a
-- rebuild every entry (check_entries) and makes the state buffers an entry
-- lacks when with_state. Fields:
--   m, params, grads, decays, state[j]   the handle arrays of the m listed
--       entries (listable(p) true, on the first parameter's device); state[j]
--       holds state key j's tensors (NULL where an entry has none)
--   coefs[1..n_coefs]    the boxed handles ({ param, grad, row_coef, <state
--       key> = ... }) of the entries with a deferred gradient (row_coef)
--   after[1..n_after]    in list order, { p, h (its boxed handles), single
--       (true: updated by a call of its own), decay, norms (it has row_norms) }
--       for the entries updated alone or told of the update (on_update)
-- An optimizer uses at most two state keys here (SGD one, Adam two).
function Optimizer:plan(method, with_state, listable)
  check_settings(self, method)
  local keys, plan, list = self.state_keys, self._plan, self.list
  if plan and plan.with_state == with_state and plan.weight_decay == self.weight_decay and
      plan.decay_bias_norm == self.decay_bias_norm and unchanged(plan.snap, list, keys[1], keys[2]) then
    return plan
  end
  if type(list) ~= "table" or #list == 0 then core.raise(("%s:%s: no parameters"):format(self.name, method), 2) end
  if #keys > 2 then core.raise(("%s:%s: an update plan takes at most two state keys"):format(self.name, method), 2) end
  self:check_entries(method)
  if with_state then self:ensure_state(keys) end
  plan = build_plan(self, with_state, listable)
  self._plan = plan
  return plan
end

--- complete() of every entry in a plan with a deferred gradient, from its boxed handles.
function Optimizer.complete_plan(plan)
  local coefs = plan.coefs
  for k = 1, plan.n_coefs do
    local h = coefs[k]
    complete_handles(h.grad, h.row_coef, h.param)
  end
end

-- The gradients' plan, for zero_grad, grad_norm and clip_grad_norm: a
-- snapshot as above (no state keys); parts, the boxed handles of every grad
-- and row_coef, once a zero_grad or a clipping went through; sumsq, the
-- square sums' arrays, once a grad_norm did.
local function grads_plan(self)
  local c = self._grads
  if c and unchanged(c.snap, self.list) then return c end
  c = { snap = snapshot(self.list) }
  self._grads = c
  return c
end

-- the boxed handles of every gradient part of plan c (the tensors alive: checked by the caller)
local function grad_parts(c, list)
  local h = c.parts
  if not h then
    h = {}
    for _, p in ipairs(list) do
      h[#h + 1] = p.grad.h
      if p.row_coef then h[#h + 1] = p.row_coef.h end
    end
    h.n = #h
    c.parts = h
  end
  return h
end

--- Zeroes the gradients, deferred parts included (from the gradients' plan:
-- nothing allocated while the entries stay as they were).
function Optimizer:zero_grad()
  local c = grads_plan(self)
  local h = c.parts
  if h then
    for k = 1, h.n do check(C.facet_tensor_fill(h[k], 0)) end
    return
  end
  for _, p in ipairs(self.list) do
    p.grad:zero_()
    if p.row_coef then p.row_coef:zero_() end
  end
  grad_parts(c, self.list)
end

-- ---- square sums of gradient lists ----------------------------------------------------
-- facet_tensor_sumsq_list writes every gradient's square sum into one device
-- vector (on CUDA: two launches per 48 tensors); the vector comes back to the
-- host in one copy and is added up here in double, in parameter order, so
-- the norm costs one blocking read per call, not one per parameter. The
-- pointer arrays, the vector and its host copy are made once (per
-- optimizer, or per device and length for lists), so a step allocates nothing.

-- buffers for n square sums on device dev: { n, xs, coefs, params, slots, copied, host, ptr, slots_h }
local function sumsq_buffers(n, dev)
  local b = { n = n, device = dev, xs = ffi.new("facet_tensor *[?]", math.max(n, 1)),
    coefs = ffi.new("facet_tensor *[?]", math.max(n, 1)), params = ffi.new("facet_tensor *[?]", math.max(n, 1)),
    slots = tensor.empty({ n }, { device = dev }) }
  -- the host copy the slots are read from (the slots themselves on the CPU)
  b.copied = dev ~= "cpu"
  b.host = b.copied and tensor.empty({ n }) or b.slots
  b.ptr = b.host:data_ptr()
  b.slots_h = b.slots.h   -- the handle the list call takes, boxed once
  return b
end

-- the square sums of b.xs[0..n) (b.coefs / b.params set when with_coef) into
-- b.ptr[0..n): one call, one copy to the host; returns the status
local function run_sumsq(b, with_coef)
  local rc = C.facet_tensor_sumsq_list(b.slots_h, b.xs, with_coef and b.coefs or nil, with_coef and b.params or nil,
    b.n)
  -- the one read back goes through tensor:copy, where a count of the host reads sees it
  -- (interpreted, it boxes the two handles: 48 bytes; compiled, nothing)
  if rc == 0 and b.copied then b.host:copy(b.slots) end
  return rc
end

local list_buffers = {}   -- device -> n -> buffers, for grad_norm_of

-- a square sum through facet_tensor_reduce, for what the list cannot take
-- (16-bit, strided, or spread over devices): one read per tensor
local one = {}
local function reduce_sumsq(t)
  local dev = t:device()
  one[dev] = one[dev] or tensor.empty({ 1 }, { device = dev })
  check(C.facet_tensor_reduce(one[dev].h, t.h, C.FACET_REDUCE_SUMSQ, -1, 0), 3)
  return one[dev]:item()
end

--- The global L2 norm of a list of gradient tensors (float32 contiguous
-- tensors on one device in one pass and one read; others one at a time).
function Optimizer.grad_norm_of(grads)
  if type(grads) ~= "table" then valid.fail("facet.optim.grad_norm", "grads must be a list of tensors, got " ..
    valid.describe(grads)) end
  local n = #grads
  for i = 1, n do
    local g = grads[i]
    if not tensor.is_tensor(g) or g:is_freed() then valid.tensor("facet.optim.grad_norm", ("grads[%d]"):format(i), g) end
  end
  if n == 0 then return 0 end
  local dev, listed = grads[1]:device(), true
  for i = 1, n do
    local g = grads[i]
    if g:dtype() ~= "float32" or not g:is_contiguous() or g:device() ~= dev then listed = false end
  end
  local total = 0
  if not listed then
    for i = 1, n do total = total + reduce_sumsq(grads[i]) end
    return math.sqrt(total)
  end
  local by_n = list_buffers[dev] or {}
  list_buffers[dev] = by_n
  local b = by_n[n] or sumsq_buffers(n, dev)
  by_n[n] = b
  for i = 1, n do b.xs[i - 1] = grads[i].h end
  check(run_sumsq(b, false), 2)
  for i = 0, n - 1 do total = total + b.ptr[i] end
  return math.sqrt(total)
end

--- Scales a list of gradient tensors so their global norm is at most
-- max_norm; returns the norm before (NaN or inf when a gradient has one).
function Optimizer.clip_grad_norm_of(grads, max_norm)
  valid.number("clip_grad_norm", "max_norm", max_norm, { gt = 0 })
  local n = Optimizer.grad_norm_of(grads)
  if n > max_norm then
    local scale = max_norm / (n + 1e-6)
    for _, g in ipairs(grads) do g:mul_(scale) end
  end
  return n
end

-- the error naming the entry whose tensors facet_tensor_sumsq_list refused
-- (one call level, as check_entries, so messages blame the caller)
local function check_norm_entries(self, method)
  for i, p in ipairs(self.list) do
    check_tensor(self, method, p, i, "param", p.param)
    check_tensor(self, method, p, i, "grad", p.grad)
    if p.row_coef ~= nil then check_tensor(self, method, p, i, "row_coef", p.row_coef, true) end
  end
end

--- The global L2 norm of the complete gradients of the optimizer's parameters,
-- deferred parts included (grad + row_coef_r * param_r, summed on the device
-- without completing the gradient), in one pass and one read to the host. A
-- sharded entry's square sum is summed over the ranks (shard.sum).
function Optimizer:grad_norm()
  local list, n = self.list, #self.list
  -- the arrays of the list call: made once per gradients' plan
  local c = grads_plan(self)
  local b = c.sumsq
  if not b then
    if list[1].param:is_freed() then check_norm_entries(self, "grad_norm") end
    local dev = list[1].param:device()
    b = self._sumsq
    if not b or b.n ~= n or b.device ~= dev then
      b = sumsq_buffers(n, dev)
      self._sumsq = b
    end
    local xs, coefs, params, with_coef = b.xs, b.coefs, b.params, false
    for i = 1, n do
      local p = list[i]
      xs[i - 1] = p.grad.h
      if p.row_coef then
        coefs[i - 1], params[i - 1], with_coef = p.row_coef.h, p.param.h, true
      else
        coefs[i - 1], params[i - 1] = nil, nil
      end
    end
    b.with_coef = with_coef
    c.sumsq = b
  end
  local rc = run_sumsq(b, b.with_coef)
  if rc ~= 0 then
    check_norm_entries(self, "grad_norm")
    check(rc, 2)
  end
  local total, ptr = 0, b.ptr
  for i = 1, n do
    local p, sq = list[i], ptr[i - 1]
    -- a sharded entry's rows are spread over the ranks: its square sum is theirs summed
    if p.shard and p.shard.sum then sq = p.shard.sum(sq) end
    total = total + sq
  end
  return math.sqrt(total)
end

local POSITIVE = { gt = 0 }   -- the check of max_norm (made once: a step allocates nothing)

--- clip_grad_norm over the optimizer's parameters: the complete gradient is
-- linear in (grad, row_coef), so both are scaled and nothing is completed.
function Optimizer:clip_grad_norm(max_norm)
  valid.number("clip_grad_norm", "max_norm", max_norm, POSITIVE)
  local n = self:grad_norm()
  if n > max_norm then
    local scale = max_norm / (n + 1e-6)
    -- grad_norm checked every part: scale them through the handles of the gradients' plan
    local h = grad_parts(grads_plan(self), self.list)
    for k = 1, h.n do check(C.facet_tensor_unary(h[k], h[k], C.FACET_UNARY_MUL, scale, 0)) end
  end
  return n
end

--- The gradient tensors, in parameter order (call finish_grad() first to read
-- them complete; grad_norm() and clip_grad_norm() need not).
function Optimizer:gradients()
  local g = {}
  for i, p in ipairs(self.list) do g[i] = p.grad end
  return g
end

--- Settings and per-parameter state, for checkpoints: tensors are named
-- "<index>.<key>" (index in parameter order, as the sources list them). The
-- state of a sharded entry is gathered to its full shape (every rank calls it).
function Optimizer:state()
  local s = { name = self.name, step_count = self.step_count, settings = {}, tensors = {} }
  for k in pairs(self.defaults) do s.settings[k] = self[k] end
  for i, p in ipairs(self.list) do
    for _, key in ipairs(self.state_keys) do
      if p[key] then s.tensors[i .. "." .. key] = p.shard and p.shard.gather(p[key]) or p[key] end
    end
  end
  return s
end

-- the shape a state tensor of entry p has in a saved state: the full shape of a sharded entry
local function saved_shape(p)
  return p.shard and table.concat(p.shard.shape, "x") or shape_text(p.param)
end

-- the settings of a state, checked against the optimizer's: known names, values of the same kind
local function settings_problem(self, settings)
  if settings == nil then return end
  if type(settings) ~= "table" then return "load_state: settings must be a table" end
  for k, v in pairs(settings) do
    if type(k) ~= "string" or self.defaults[k] == nil then
      return ("load_state: unknown %s setting '%s'"):format(self.name, tostring(k))
    end
    local want = self[k]
    if type(v) ~= type(want) then
      return ("load_state: setting %s is a %s, want a %s"):format(k, type(v), type(want))
    end
    if type(v) == "number" and (v ~= v or v < 0 or v == math.huge) then
      return ("load_state: setting %s must be a finite number >= 0, got %s"):format(k, tostring(v))
    end
    if type(v) == "table" then
      if #v ~= #want then return ("load_state: setting %s has %d values, want %d"):format(k, #v, #want) end
      for j = 1, #v do
        if type(v[j]) ~= "number" or v[j] ~= v[j] or v[j] < 0 or v[j] >= 1 then
          return ("load_state: setting %s[%d] must be a number in [0, 1), got %s"):format(k, j, tostring(v[j]))
        end
      end
    end
  end
end

-- nil, or what is wrong with state s for this optimizer (see check_state)
local function state_problem(self, s)
  if type(s) ~= "table" then return "load_state: want a table (what state() returns)" end
  if s.name ~= self.name then return ("load_state: a %s state into a %s optimizer"):format(tostring(s.name), self.name) end
  local n = s.step_count
  if type(n) ~= "number" or n < 0 or n ~= math.floor(n) or n == math.huge then
    return ("load_state: step_count must be an integer >= 0, got %s"):format(tostring(n))
  end
  local bad = settings_problem(self, s.settings)
  if bad then return bad end
  local tensors = s.tensors or {}
  if type(tensors) ~= "table" then return "load_state: tensors must be a table" end
  local keys = {}
  for _, k in ipairs(self.state_keys) do keys[k] = true end
  for name, t in pairs(tensors) do
    local i, key = tostring(name):match("^(%d+)%.(.+)$")
    i = tonumber(i)
    if not i or not keys[key] then
      return ("load_state: tensor '%s' is not <index>.<%s>"):format(tostring(name), table.concat(self.state_keys, "|"))
    end
    local p = self.list[i]
    if not p then return ("load_state: tensor %s: the optimizer has %d parameters"):format(name, #self.list) end
    if not tensor.is_tensor(t) then return ("load_state: %s is not a tensor"):format(name) end
    if t:is_freed() then return ("load_state: %s was freed"):format(name) end
    if t:dtype() ~= "float32" then return ("load_state: %s is %s, want float32"):format(name, t:dtype()) end
    if p.param:is_freed() then return ("load_state: %s was freed"):format(label(p, i)) end
    if shape_text(t) ~= saved_shape(p) then
      return ("load_state: %s has shape %s, %s has %s"):format(name, shape_text(t), label(p, i), saved_shape(p))
    end
    if p[key] ~= nil and (not tensor.is_tensor(p[key]) or p[key]:is_freed()) then
      return ("load_state: the %s of %s was freed"):format(key, label(p, i))
    end
  end
end

--- Checks a state (what state() returns, or the same read back from a
-- checkpoint) against this optimizer without changing anything: the name,
-- the step count, the settings, and every tensor (its name "<index>.<key>"
-- with a parameter index and a state key of this optimizer, float32, alive,
-- shaped like its parameter). Errors say what does not fit.
function Optimizer:check_state(s)
  local bad = state_problem(self, s)
  if bad then error(bad, 2) end
end

--- Restores state(): all or nothing (check_state first, then the buffers a
-- parameter lacks are made, then everything is copied). The parameters may
-- have been loaded with it, so owners of deferred entries are told their
-- param changed (a fused head measures W again).
function Optimizer:load_state(s)
  local bad = state_problem(self, s)
  if bad then error(bad, 2) end
  local tensors = s.tensors or {}
  -- every allocation before the first copy
  for i, p in ipairs(self.list) do
    for _, key in ipairs(self.state_keys) do
      if tensors[i .. "." .. key] and not p[key] then
        p[key] = tensor.zeros(p.param:shape(), { device = p.param:device() })
      end
    end
  end
  for i, p in ipairs(self.list) do
    for _, key in ipairs(self.state_keys) do
      local t = tensors[i .. "." .. key]
      if t then p[key]:copy(p.shard and p.shard.slice(t) or t) end
    end
  end
  self.step_count = s.step_count
  for k, v in pairs(s.settings or {}) do
    if type(v) == "table" then
      local c = {}
      for j = 1, #v do c[j] = v[j] end
      v = c
    end
    self[k] = v
  end
  for _, p in ipairs(self.list) do Optimizer.updated(p, false) end
end

valid.methods(Optimizer, "optimizer", "an optimizer")

return Optimizer
