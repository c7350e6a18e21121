--- facet.cuda: the CUDA runtime from Lua: devices, synchronisation and the
-- caching allocator behind CUDA tensors (docs/gpu-memory.md).
--   facet.cuda.available(), device_count(), built(), synchronize()
--   facet.cuda.started(): whether this process has seen a GPU yet (then
--     CUDA_VISIBLE_DEVICES no longer applies; facet.dist.init checks it)
--   facet.cuda.memory_stats() -> { allocated_bytes, reserved_bytes, ... }
--   facet.cuda.empty_cache()
--   facet.cuda.set_tf32(on), facet.cuda.tf32(): TF32 tensor cores for float32
--     GEMMs (PyTorch's allow_tf32; off by default)
--   facet.cuda.mark(), m:record(), facet.cuda.elapsed(a, b): GPU time between
--     two points of the stream, without synchronising at each
-- Without CUDA (or without a GPU) the statistics are zeros and empty_cache
-- does nothing.
local ffi = require "ffi"
local core = require "facet.core"

local C, check = core.C, core.check
local M = {}

function M.device_count()
  local n = ffi.new("int[1]")
  check(C.facet_cuda_device_count(n))
  return n[0]
end

--- True once this process has seen a GPU through facet (a device count
-- above 0, a CUDA tensor): CUDA_VISIBLE_DEVICES no longer picks the GPU then.
function M.started()
  local v = ffi.new("int[1]")
  check(C.facet_cuda_started(v))
  return v[0] == 1
end

--- True when facet was built with CUDA and a GPU is present.
function M.available()
  return M.device_count() > 0
end

--- True when the CUDA backend was compiled in (nvcc was found at build time).
--- The name of CUDA device i (0-based) and its memory in bytes.
function M.device_name(i)
  if type(i) ~= "number" or i ~= math.floor(i) or i < 0 or i > 2 ^ 31 - 1 then
    core.raise(("facet.cuda.device_name: i must be an integer >= 0 (a device index), got %s"):format(
      type(i) == "number" and tostring(i) or "a " .. type(i)), 2)
  end
  local buf, mem = ffi.new("char[256]"), ffi.new("int64_t[1]")
  check(C.facet_cuda_device_name(i, buf, 256, mem))
  return ffi.string(buf), tonumber(mem[0])
end

function M.built()
  local b = ffi.new("int[1]")
  check(C.facet_cuda_built(b))
  return b[0] ~= 0
end

function M.synchronize() check(C.facet_cuda_synchronize()) end

--- Lets CUDA's float32 GEMMs (matmul, heads, convolutions) round their inputs
-- to TF32 on the tensor cores, summing in float32, as PyTorch's
-- torch.backends.cuda.matmul.allow_tf32 / cudnn.allow_tf32; false (the
-- default) keeps exact float32 products. Process-wide; the CPU ignores it.
function M.set_tf32(on)
  if type(on) ~= "boolean" then
    core.raise(("facet.cuda.set_tf32: on must be true or false, got %s"):format(
      type(on) == "nil" and "nothing" or "a " .. type(on)), 2)
  end
  check(C.facet_cuda_tf32_set(on and 1 or 0))
end

-- ---- timing marks ----------------------------------------------------------
local Mark = { __name = "facet.cuda.Mark" }
Mark.__index = Mark

--- A timing mark on the GPU (a CUDA event that keeps time): m:record() notes
-- the point the default stream has reached without waiting, and
-- facet.cuda.elapsed(a, b) gives the milliseconds of GPU time between two
-- recorded marks (waiting for b only), so layers can be timed without a
-- synchronisation each. Errors without CUDA or a GPU.
function M.mark()
  local p = ffi.new("facet_cuda_mark*[1]")
  check(C.facet_cuda_mark_init(p), 2)
  return setmetatable({ h = ffi.gc(p[0], C.facet_cuda_mark_free) }, Mark)
end

--- Records the mark on the default stream (again, if it was before); returns it.
function Mark:record()
  -- (facet.check.methods would make facet.tensor -> facet.cuda -> facet.check -> facet.tensor a cycle)
  if getmetatable(self) ~= Mark then
    core.raise(("facet.cuda.Mark:record: call it with ':' on a mark; self is %s"):format(
      type(self) == "nil" and "nothing" or "a " .. type(self)), 2)
  end
  check(C.facet_cuda_mark_record(self.h), 2)
  return self
end

local ms_buf = ffi.new("double[1]")

--- Milliseconds of GPU time from mark a to mark b (both recorded).
function M.elapsed(a, b)
  for i = 1, 2 do
    local m = i == 1 and a or b
    if getmetatable(m) ~= Mark then
      core.raise(("facet.cuda.elapsed: %s must be a facet.cuda.mark(), got %s"):format(i == 1 and "a" or "b",
        type(m) == "nil" and "nothing" or "a " .. type(m)), 2)
    end
  end
  check(C.facet_cuda_mark_elapsed(a.h, b.h, ms_buf), 2)
  return ms_buf[0]
end

--- Whether TF32 is on (facet.cuda.set_tf32).
function M.tf32()
  local b = ffi.new("int[1]")
  check(C.facet_cuda_tf32_get(b))
  return b[0] ~= 0
end

-- the fields of struct facet_cuda_memory_stats (facet.h), in its order
M.STATS = { "allocated_bytes", "requested_bytes", "reserved_bytes", "peak_allocated_bytes", "peak_reserved_bytes",
  "segments", "blocks", "allocs", "cache_hits", "driver_allocs", "driver_frees", "oom_retries", "ooms" }

local stats_buf = ffi.new("struct facet_cuda_memory_stats")

--- The caching allocator's counters as a table of numbers (the fields of
-- struct facet_cuda_memory_stats: bytes held by tensors, reserved from the
-- driver, peaks, driver calls, cache hits, out-of-memory retries).
function M.memory_stats()
  check(C.facet_cuda_memory_stats(stats_buf))
  local t = {}
  for _, k in ipairs(M.STATS) do t[k] = tonumber(stats_buf[k]) end
  return t
end

--- Returns the device memory cached for reuse, and used by no tensor, to the driver.
function M.empty_cache() check(C.facet_cuda_empty_cache()) end

local OOM = tonumber(C.FACET_STATUS_ERR_MEMORY)

local function mib(n) return ("%.1f MiB"):format(n / 1048576) end

-- what out_of_memory does between the two tries; a spec passes fakes
M.oom_hooks = {
  -- twice: the first pass runs the finalizers (they free tensors), the
  -- second frees what those finalizers let go of
  collect = function() collectgarbage("collect"); collectgarbage("collect") end,
  empty_cache = function() C.facet_cuda_empty_cache() end,
  memory_stats = function() return M.memory_stats() end,
  last_error = core.last_error,
}

--- The out-of-memory path of device allocations. rc is the status of a first
-- try; when it is FACET_STATUS_ERR_MEMORY (the C side has already emptied its
-- cache and retried), runs a full Lua GC so that unreachable tensors give their
-- memory back, empties the cache, and calls retry() (which returns a status)
-- once. Returns the final status when it is not out of memory (0, or another
-- error for core.check); raises an error naming the bytes asked for and the
-- bytes held when it still is. `what` names the allocation ("a [64x512] float32
-- tensor"); level is error()'s, as seen from the caller.
function M.out_of_memory(rc, retry, nbytes, what, level, hooks)
  if rc ~= OOM then return rc end
  local h = hooks or M.oom_hooks
  h.collect()
  h.empty_cache()
  rc = retry()
  if rc ~= OOM then return rc end
  local s = h.memory_stats()
  error(("out of GPU memory: %s needs %s (%d bytes); facet holds %s (%d bytes) in tensors and %s (%d bytes) " ..
    "reserved from the driver (peak %s in tensors), after a full Lua GC and emptying the cache. Free tensors " ..
    "you no longer need (t:free()) or use smaller batches. (%s)"):format(what or "the allocation", mib(nbytes),
    nbytes, mib(s.allocated_bytes), s.allocated_bytes, mib(s.reserved_bytes), s.reserved_bytes,
    mib(s.peak_allocated_bytes), h.last_error()), (level or 1) + 1)
end

return M
