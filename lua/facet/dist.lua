--- facet.dist: the processes of a distributed run and their collectives.
--   facet.dist.init([opts])     reads the launcher's environment (mpirun, srun); without
--                               one: world size 1, no MPI (recipes need no change)
--   facet.dist.rank(), size(), local_rank(), local_size(), initialized(), barrier(), finalize()
--   facet.dist.world() -> g     the group of every rank:
--     g:rank(), g:size(), g:barrier()
--     g:allreduce(t, op)        in place, op "sum" | "avg" | "max" | "min"; returns t
--                               (float16/bfloat16: reduced in float32, rounded once per combine)
--     g:allgather(t [, counts]) a NEW tensor: the ranks' t concatenated along dim 1;
--                               counts: each rank's t:size(1) (default: all equal)
--     g:reduce_scatter(t, op)   a NEW tensor of t:size(1) / W rows: rank r gets rows
--                               [r n, (r + 1) n) of op over the ranks' t
--     g:broadcast(t, root)      in place: t becomes rank root's (0-based) t; returns t
--     g:allreduce_start(t, op), g:progress(), g:wait_all()   a started allreduce, a poke that
--                               lets MPI move it on, its completion (facet.train's buckets)
--   facet.dist.allreduce / allgather / reduce_scatter / broadcast: world()'s.
--   facet.dist.data_parallel(sources [, { bucket_mb = 1, op = "avg", dtype = "fp32" }]) -> r
--                               gradient averaging for facet.train{ dist = true } (see there);
--                               dtype "fp16" | "bf16": the buckets travel in 16 bits
-- CPU tensors go through MPI, CUDA tensors through NCCL (facet_dist_* in facet.h).
-- At world size 1 without MPI the collectives are identities (a copy where a
-- new tensor is promised). A collective that does not complete within the
-- timeout (opts.timeout, else FACET_DIST_TIMEOUT, else 300 s) fails naming
-- the collective and the ranks that did not answer, never hangs.
-- init options: timeout (seconds), threads (facet threads per rank; default:
-- the cores divided among the ranks of the node unless FACET_THREADS or
-- OMP_NUM_THREADS is set), gpu (true: each rank of a node sees the GPU of its
-- local rank through CUDA_VISIBLE_DEVICES: the local rank when unset, the
-- local rank's entry when it lists a GPU per local rank or more; default true;
-- call init before the first CUDA tensor). docs/distributed.md.
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"
local valid = require "facet.check"

local C = core.C
local M = {}

local OPS = { sum = C.FACET_DIST_OP_SUM, avg = C.FACET_DIST_OP_AVG, max = C.FACET_DIST_OP_MAX, min = C.FACET_DIST_OP_MIN }
local OP_NAMES = { "sum", "avg", "max", "min" }
-- the dtypes collectives take; avg takes the float ones
local FLOATS = { float32 = true, float16 = true, bfloat16 = true }
local DTYPES = { float32 = true, float16 = true, bfloat16 = true, int32 = true, int64 = true, uint8 = true }
-- data_parallel's dtype = ... -> the buckets' wire dtype (false: the gradients' float32)
local WIRE = { fp32 = false, fp16 = "float16", bf16 = "bfloat16" }
M.ALLREDUCE_DTYPES = { "fp32", "fp16", "bf16" }
M.DEFAULT_TIMEOUT = 300

-- the process's one communicator (nil: world size 1 without MPI)
local st = { initialized = false, rank = 0, size = 1, local_rank = 0, local_size = 1 }

pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")

--- The launcher that started this process ("Open MPI", "PMI", "PMIx",
-- "Slurm") and the world size it names, or nil when none did.
function M.launcher()
  local function num(var) return tonumber(os.getenv(var) or "") end
  if num("OMPI_COMM_WORLD_SIZE") then return "Open MPI", num("OMPI_COMM_WORLD_SIZE") end
  if num("PMI_SIZE") then return "PMI", num("PMI_SIZE") end
  if os.getenv("PMIX_RANK") then return "PMIx", num("PMIX_SIZE") end
  if (num("SLURM_NTASKS") or 1) > 1 then return "Slurm", num("SLURM_NTASKS") end
  return nil
end

local function mpi_built()
  local a, b = ffi.new("int[1]"), ffi.new("int[1]")
  core.check(C.facet_dist_is_built(a, b))
  return a[0] == 1, b[0] == 1
end

--- { mpi = bool, nccl = bool }: what this build of the core can use.
function M.built()
  local mpi, nccl = mpi_built()
  return { mpi = mpi, nccl = nccl }
end

local function set_threads(opts)
  if opts.threads then core.set_threads(opts.threads); return end
  if st.local_size <= 1 then return end
  local function given(v) local s = os.getenv(v); return s and s ~= "" end
  if given("FACET_THREADS") or given("OMP_NUM_THREADS") then return end
  core.set_threads(math.max(1, math.floor(core.get_threads() / st.local_size)))
end

--- Joins the run: MPI when a launcher started this process, world size 1
-- otherwise. Calling it again returns at once.
-- What CUDA_VISIBLE_DEVICES a local rank should see, or nil to leave it: its
-- local rank when unset; its entry when the list holds a GPU per local rank
-- or more (a launcher that shows every rank all the node's GPUs, as srun
-- --gpus-per-node does); else the launcher already chose.
local function gpu_of_rank(visible, local_rank, local_size)
  if visible == nil or visible == "" then return tostring(local_rank) end
  local list = {}
  for e in visible:gmatch("[^,]+") do list[#list + 1] = e end
  if #list > 1 and #list >= local_size then return list[local_rank + 1] end
  return nil
end

function M.init(opts)
  opts = valid.options("facet.dist.init", opts, { "timeout", "threads", "gpu" })
  local timeout = opts.timeout
  if timeout == nil and os.getenv("FACET_DIST_TIMEOUT") then
    timeout = tonumber(os.getenv("FACET_DIST_TIMEOUT"))
    if not timeout or timeout <= 0 or timeout ~= timeout or timeout == math.huge then
      valid.fail("facet.dist.init", ("FACET_DIST_TIMEOUT must be seconds > 0, got %q"):format(os.getenv("FACET_DIST_TIMEOUT")))
    end
  end
  valid.number("facet.dist.init", "timeout", timeout, { gt = 0, max = 1e7, optional = true })
  valid.integer("facet.dist.init", "threads", opts.threads, { min = 1, max = 4096, optional = true })
  valid.boolean("facet.dist.init", "gpu", opts.gpu, true)
  if st.initialized then return M end
  local launcher, n = M.launcher()
  if launcher then
    if not mpi_built() then
      if (n or 2) > 1 then
        valid.fail("facet.dist.init", ("started by %s with %s processes, but facet was built without MPI "
          .. "(install libopenmpi-dev and rebuild, or run one process)"):format(launcher, tostring(n or "several")))
      end
    else
      local pp = ffi.new("facet_dist *[1]")
      core.check(C.facet_dist_init(pp, ffi.new("facet_dist_params", { timeout = timeout or M.DEFAULT_TIMEOUT })), 2)
      st.comm = ffi.gc(pp[0], C.facet_dist_free)
      local r, s, lr, ls = ffi.new("int[1]"), ffi.new("int[1]"), ffi.new("int[1]"), ffi.new("int[1]")
      core.check(C.facet_dist_query(st.comm, r, s, lr, ls))
      st.rank, st.size, st.local_rank, st.local_size = r[0], s[0], lr[0], ls[0]
    end
  end
  st.timeout = timeout or M.DEFAULT_TIMEOUT
  st.initialized = true
  local pick = gpu_of_rank(os.getenv("CUDA_VISIBLE_DEVICES"), st.local_rank, st.local_size)
  if opts.gpu ~= false and st.local_size > 1 and pick then
    -- the driver reads the variable once, at its first use: too late, every
    -- local rank would take GPU 0 (and NCCL refuse the duplicates)
    if require("facet.cuda").started() then
      valid.fail("facet.dist.init", ("%d ranks share this node, but this process used CUDA before "
        .. "facet.dist.init, so its GPU can no longer be picked by CUDA_VISIBLE_DEVICES; call facet.dist.init() "
        .. "(or facet.train{ dist = true }) before any CUDA tensor or facet.cuda query, set CUDA_VISIBLE_DEVICES "
        .. "per rank in the launcher, or pass gpu = false"):format(st.local_size))
    end
    C.setenv("CUDA_VISIBLE_DEVICES", pick, 1)
  end
  set_threads(opts)
  return M
end

function M.initialized() return st.initialized end
function M.rank() return st.rank end
function M.size() return st.size end
function M.local_rank() return st.local_rank end
function M.local_size() return st.local_size end

--- Leaves the run: MPI is finalised (when init started it). The process
-- cannot join again. Without MPI only the state goes back to world size 1.
function M.finalize()
  if st.comm then
    local c = st.comm
    st.comm = nil
    ffi.gc(c, nil)
    core.check(C.facet_dist_free(c), 2)
  end
  st.initialized, st.rank, st.size, st.local_rank, st.local_size = false, 0, 1, 0, 1
end

--- Ends every rank now with msg on stderr (a rank that failed alone: its
-- peers would otherwise wait in their next collective until the timeout).
-- Without a communicator it raises msg instead.
function M.abort(msg, code)
  if not st.comm or st.size <= 1 then error(msg, 0) end
  io.stderr:write(("facet.dist: rank %d of %d failed: %s\n"):format(st.rank, st.size, tostring(msg)))
  io.stderr:flush()
  C.facet_dist_abort(st.comm, code or 1)
  error(msg, 0)
end

-- ---- the group of every rank ----------------------------------------------------------

local Group = {}
Group.__index = Group
local world = setmetatable({}, Group)

--- The group of every rank.
function M.world() return world end

local function live(g, method)
  if getmetatable(g) ~= Group then core.raise(("facet.dist: call %s with ':' on a group"):format(method), 3) end
end

local function tensor_arg(method, t, name)
  name = name or "t"
  if not tensor.is_tensor(t) then
    core.raise(("facet.dist.%s: %s must be a tensor, got %s"):format(method, name, valid.describe(t)), 3)
  end
  if t:is_freed() then core.raise(("facet.dist.%s: %s was freed"):format(method, name), 3) end
  if not t:is_contiguous() then
    core.raise(("facet.dist.%s: %s must be contiguous (call :contiguous() first)"):format(method, name), 3)
  end
  if not DTYPES[t:dtype()] then
    core.raise(("facet.dist.%s: %s must be float32, float16, bfloat16, int32, int64 or uint8, got %s"):format(method,
      name, t:dtype()), 3)
  end
end

local function op_arg(method, op, t)
  local code = type(op) == "string" and OPS[op] or nil
  if code == nil then
    core.raise(("facet.dist.%s: op must be one of %s, got %s"):format(method, table.concat(OP_NAMES, ", "),
      valid.describe(op)), 3)
  end
  if op == "avg" and not FLOATS[t:dtype()] then
    core.raise(("facet.dist.%s: op \"avg\" needs a float32, float16 or bfloat16 tensor, got %s"):format(method,
      t:dtype()), 3)
  end
  return code
end

local function rows_of(method, t)
  if t:dim() < 1 then core.raise(("facet.dist.%s: t must have a first dim, got a scalar"):format(method), 3) end
  return t:size(1)
end

function Group:rank() live(self, "rank"); return st.rank end
function Group:size() live(self, "size"); return st.size end

function Group:barrier()
  live(self, "barrier")
  if st.comm then core.check(C.facet_dist_barrier(st.comm), 2) end
end

-- allreduce and allreduce_start: the checks, then fn (the C call) when there is a communicator
local function reduce_in_place(self, name, fn, t, op)
  live(self, name)
  tensor_arg(name, t)
  local code = op_arg(name, op, t)
  if st.comm then core.check(fn(st.comm, t.h, code), 3) end
  return t
end

function Group:allreduce(t, op) return (reduce_in_place(self, "allreduce", C.facet_dist_allreduce, t, op)) end
function Group:allreduce_start(t, op)
  return (reduce_in_place(self, "allreduce_start", C.facet_dist_allreduce_start, t, op))
end

function Group:progress()
  live(self, "progress")
  if st.comm then core.check(C.facet_dist_progress(st.comm), 2) end
end

function Group:wait_all()
  live(self, "wait_all")
  if st.comm then core.check(C.facet_dist_wait_all(st.comm), 2) end
end

-- a new tensor of rows rows shaped like t's rows, filled by fill(out) on a
-- communicator or with a copy of t at world size 1
local function new_rows(t, rows, fill)
  local s = t:shape()
  s[1] = rows
  local out = tensor.empty(s, { dtype = t:dtype(), device = t:device() })
  if st.comm then core.check(fill(out), 4) else out:copy(t) end
  return out
end

function Group:allgather(t, counts)
  live(self, "allgather")
  tensor_arg("allgather", t)
  local n = rows_of("allgather", t)
  local total, carr = n * st.size, nil
  if counts ~= nil then
    if type(counts) ~= "table" or #counts ~= st.size then
      core.raise(("facet.dist.allgather: counts must be a list of %d row counts (one per rank), got %s"):format(st.size,
        type(counts) == "table" and ("a list of " .. #counts) or valid.describe(counts)), 2)
    end
    carr, total = ffi.new("int64_t[?]", st.size), 0
    for i = 1, st.size do
      local c = counts[i]
      if type(c) ~= "number" or c ~= math.floor(c) or c < 0 or c > 2 ^ 53 then
        core.raise(("facet.dist.allgather: counts[%d] must be an integer >= 0, got %s"):format(i, valid.describe(c)), 2)
      end
      carr[i - 1], total = c, total + c
    end
    if counts[st.rank + 1] ~= n then
      core.raise(("facet.dist.allgather: counts[%d] (this rank, %d) is %d but t has %d rows"):format(st.rank + 1,
        st.rank, counts[st.rank + 1], n), 2)
    end
  end
  return (new_rows(t, total, function(out)
    return C.facet_dist_allgather(st.comm, out.h, t.h, carr, carr and st.size or 0)
  end))
end

function Group:reduce_scatter(t, op)
  live(self, "reduce_scatter")
  tensor_arg("reduce_scatter", t)
  local code = op_arg("reduce_scatter", op, t)
  local n = rows_of("reduce_scatter", t)
  if n % st.size ~= 0 then
    core.raise(("facet.dist.reduce_scatter: t has %d rows, not a multiple of the world size %d"):format(n, st.size), 2)
  end
  return (new_rows(t, n / st.size, function(out) return C.facet_dist_reduce_scatter(st.comm, out.h, t.h, code) end))
end

function Group:broadcast(t, root)
  live(self, "broadcast")
  tensor_arg("broadcast", t)
  if type(root) ~= "number" or root ~= math.floor(root) or root < 0 or root >= st.size then
    core.raise(("facet.dist.broadcast: root must be a rank, an integer in 0..%d, got %s"):format(st.size - 1,
      valid.describe(root)), 2)
  end
  if st.comm then core.check(C.facet_dist_broadcast(st.comm, t.h, root), 2) end
  return t
end

for _, name in ipairs { "barrier", "allreduce", "allgather", "reduce_scatter", "broadcast", "allreduce_start", "progress",
  "wait_all" } do
  M[name] = function(...) return world[name](world, ...) end
end

-- ---- data parallel: bucketed gradient averaging, overlapped with backward ------------
-- The gradients of sources (modules and heads; a class-sharded head's own
-- parameters are left alone) are packed into buckets of about bucket_mb, in
-- the order backward produces them (the head's first, then the model's
-- modules last to first). Each module with parameters gets a hook on its
-- backward: when it returns, its gradients are final, and every bucket whose
-- gradients are all final, in bucket order (one order on every rank), is
-- packed and its allreduce (avg) started, while backward goes on through the
-- earlier layers. finish() starts what is left, waits for everything and
-- unpacks the averages into the gradients, before the optimizer reads them.
-- A fused head's deferred gradient (row_coef) is linear in the batch, so it
-- is averaged with the rest. op "sum" instead of "avg" is for a class-sharded
-- head, whose loss is the global batch's on every rank, so that each rank's
-- gradients are its samples' part of the global gradient.
-- dtype "fp16" | "bf16" (arcface_torch's fp16_compress_hook): each bucket,
-- packed in float32, is divided by the world size there (avg), cast into a
-- 16-bit buffer made once with the bucket, all-reduced (sum) in 16 bits and
-- cast back into the float32 gradients. The buckets keep the float32 element
-- counts of bucket_mb, so their boundaries are those of the float32 run.
local Reducer = {}
Reducer.__index = Reducer

-- the entries a trainer averages: a class-sharded head's rows (entries with
-- shard) and its alpha (reduced: already summed over the ranks) are its own
local function entries_of(src)
  local out = {}
  for _, e in ipairs(src:named_parameters()) do
    if not e.shard and not e.reduced then out[#out + 1] = e end
  end
  return out
end

--- Whether src (a module or head) holds a class-sharded block (facet.heads.sharded).
function M.is_sharded(src)
  for _, e in ipairs(src:named_parameters()) do
    if e.shard then return true end
  end
  return false
end

function M.data_parallel(sources, opts)
  opts = valid.options("facet.dist.data_parallel", opts, { "bucket_mb", "op", "dtype" })
  valid.number("facet.dist.data_parallel", "bucket_mb", opts.bucket_mb, { gt = 0, optional = true })
  valid.enum("facet.dist.data_parallel", "op", opts.op, { "avg", "sum" }, "avg")
  local dtype = valid.enum("facet.dist.data_parallel", "dtype", opts.dtype, M.ALLREDUCE_DTYPES, "fp32")
  local cap = math.floor((opts.bucket_mb or 1) * 2 ^ 20 / 4)
  local r = setmetatable({ buckets = {}, slots = {}, hooked = {}, params = {}, state = {}, sources = sources,
    op = opts.op or "avg", wire = WIRE[dtype] or nil, dtype = dtype }, Reducer)
  -- backward's order: the sources from last to first (the head runs backward
  -- first), each one's parameters from last to first
  local order = {}
  for si = #sources, 1, -1 do
    local list = entries_of(sources[si])
    for i = #list, 1, -1 do order[#order + 1] = list[i] end
  end
  for si = 1, #sources do
    for _, e in ipairs(entries_of(sources[si])) do r.params[#r.params + 1] = e.param end
    if sources[si].state_tensors then
      local d = sources[si]:state_tensors()
      local names = {}
      for name in pairs(d) do names[#names + 1] = name end
      table.sort(names)
      for _, name in ipairs(names) do r.state[#r.state + 1] = d[name] end
    end
  end
  local b
  for _, e in ipairs(order) do
    for _, t in ipairs { e.grad, e.row_coef } do
      local n = t:numel()
      if not b or (b.numel > 0 and b.numel + n > cap) then
        b = { numel = 0, tensors = {}, count = 0, device = t:device() }
        r.buckets[#r.buckets + 1] = b
      end
      b.tensors[#b.tensors + 1] = { t = t, at = b.numel }
      b.numel, b.count = b.numel + n, b.count + 1
      local m = e.module
      r.slots[m] = r.slots[m] or {}
      table.insert(r.slots[m], #r.buckets)
    end
  end
  for _, bk in ipairs(r.buckets) do
    bk.flat = tensor.empty({ math.max(bk.numel, 1) }, { device = bk.device })
    -- the 16-bit copy that travels: made here, reused every step
    if r.wire then bk.wire = tensor.empty({ math.max(bk.numel, 1) }, { dtype = r.wire, device = bk.device }) end
    for _, x in ipairs(bk.tensors) do x.view = bk.flat:narrow(1, x.at + 1, x.t:numel()):reshape(x.t:shape()) end
  end
  r:begin()
  return r
end

--- Installs the backward hooks on the modules of the sources (not on heads:
-- facet.train calls r:ready(head) after head:backward).
function Reducer:hook()
  for m in pairs(self.slots) do
    if m.update_output and rawget(m, "backward") == nil then
      local orig = m.backward
      m.backward = function(mod, ...)
        local g = orig(mod, ...)
        self:ready(mod)
        return g
      end
      self.hooked[#self.hooked + 1] = m
    end
  end
end

--- Removes the hooks.
function Reducer:unhook()
  for _, m in ipairs(self.hooked) do m.backward = nil end
  self.hooked = {}
end

--- A new step: no gradient final yet.
function Reducer:begin()
  for _, bk in ipairs(self.buckets) do bk.pending, bk.started = bk.count, false end
  self.next, self.done = 1, {}
end

local function start(bk, op)
  for _, x in ipairs(bk.tensors) do x.view:copy(x.t) end
  if bk.wire then
    -- divided in float32 before the cast (as fp16_compress_hook): the 16-bit sum is then the average
    if op == "avg" and st.size > 1 then bk.flat:mul_(1 / st.size) end
    bk.wire:copy(bk.flat)
    world:allreduce_start(bk.wire, "sum")
  else
    world:allreduce_start(bk.flat, op)
  end
  bk.started = true
end

--- The gradients of module m are final: starts every bucket now complete, in order.
function Reducer:ready(m)
  local slots = self.slots[m]
  if self.next > 1 then world:progress() end     -- MPI moves started buckets on only inside its calls
  if not slots then return end
  if self.done[m] then
    core.raise(("facet.dist.data_parallel: %s ran backward twice in one step (a module used twice cannot be "
      .. "averaged bucket by bucket)"):format(m.describe and m:describe() or tostring(m)), 2)
  end
  self.done[m] = true
  for _, bi in ipairs(slots) do
    local bk = self.buckets[bi]
    bk.pending = bk.pending - 1
  end
  while self.next <= #self.buckets and self.buckets[self.next].pending == 0 do
    start(self.buckets[self.next], self.op)
    self.next = self.next + 1
  end
end

--- Starts the buckets left (parameters no backward reached), waits for all
-- and writes the averages back into the gradients.
function Reducer:finish()
  for i = self.next, #self.buckets do start(self.buckets[i], self.op) end
  self.next = #self.buckets + 1
  world:wait_all()
  for _, bk in ipairs(self.buckets) do
    if bk.wire then bk.flat:copy(bk.wire) end
    for _, x in ipairs(bk.tensors) do x.t:copy(x.view) end
  end
end

--- Rank root's parameters and state tensors (BatchNorm statistics) on every rank.
function Reducer:broadcast(root)
  for _, t in ipairs(self.params) do world:broadcast(t, root or 0) end
  for _, t in ipairs(self.state) do world:broadcast(t, root or 0) end
  for _, src in ipairs(self.sources) do
    if src.weight_changed and not M.is_sharded(src) then src:weight_changed(false) end
  end
end

-- g.allreduce(t) for g:allreduce(t) is a clear error (facet.check.methods)
valid.methods(Group, "group", "a facet.dist group")
valid.methods(Reducer, "reducer", "a facet.dist.data_parallel reducer")

return M
