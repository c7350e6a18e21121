--- The caching device allocator seen from Lua: facet.cuda.memory_stats and
-- empty_cache (zeros and a no-op without a GPU), and the out-of-memory path of
-- tensor creation (facet.cuda.out_of_memory: a full GC, an emptied cache, one
-- retry, then an error with the bytes asked for and held), tested with a fake
-- allocator. The allocator's bookkeeping itself is tested in C on the CPU
-- (core/tests/test_cache_alloc.c); the cases marked [gpu] need a CUDA device.
local ffi = require "ffi"
local facet = require "facet"
local core = require "facet.core"
local cuda = require "facet.cuda"

local OOM = tonumber(core.C.FACET_STATUS_ERR_MEMORY)
local ARG = tonumber(core.C.FACET_STATUS_ERR_ARG)
local MiB = 1048576

local gpu_it = require("support.device").gpu_it   -- a case that needs a GPU: skipped, with the reason, where there is none

-- fake hooks that log what the out-of-memory path does
local function fake_hooks(stats)
  local log = {}
  local hooks = {
    collect = function() log[#log + 1] = "collect" end,
    empty_cache = function() log[#log + 1] = "empty_cache" end,
    memory_stats = function()
      log[#log + 1] = "memory_stats"
      return stats or { allocated_bytes = 3 * MiB, reserved_bytes = 5 * MiB, peak_allocated_bytes = 4 * MiB }
    end,
    last_error = function() return "facet_cuda_malloc: out of GPU memory allocating 1073741824 bytes" end,
  }
  return log, hooks
end

-- a retry function that answers the statuses given, one a call
local function answers(...)
  local list, calls = { ... }, 0
  return function()
    calls = calls + 1
    return list[calls]
  end, function() return calls end
end

describe("facet.cuda memory statistics", function()
  it("memory_stats gives every counter of struct facet_cuda_memory_stats as a number", function()
    local s = facet.cuda.memory_stats()
    assert.are.equal(13, #cuda.STATS)
    for _, k in ipairs(cuda.STATS) do
      assert.are.equal("number", type(s[k]), k)
      assert.is_true(s[k] >= 0, k)
    end
    assert.is_true(s.reserved_bytes >= s.allocated_bytes)
    assert.is_true(s.peak_allocated_bytes >= s.allocated_bytes)
    assert.are.equal(s.allocs, s.cache_hits + s.driver_allocs)
  end)

  it("without a GPU every counter is 0 and empty_cache does nothing", function()
    if facet.cuda.available() then return end
    facet.cuda.empty_cache()
    for _, k in ipairs(cuda.STATS) do assert.are.equal(0, facet.cuda.memory_stats()[k], k) end
  end)

  it("the C API checks its pointer", function()
    assert.are.equal(ARG, tonumber(core.C.facet_cuda_memory_stats(nil)))
    assert.matches("facet_cuda_memory_stats: stats is NULL", core.last_error())
  end)

  gpu_it("a freed tensor's memory goes to the next tensor, without the driver", function()
    local a = facet.empty({ 256, 1024 }, { device = "cuda" })     -- 1 MiB
    a:free()
    local s0 = facet.cuda.memory_stats()
    local b = facet.empty({ 1024, 256 }, { device = "cuda" })
    local s1 = facet.cuda.memory_stats()
    assert.are.equal(s0.driver_allocs, s1.driver_allocs)
    assert.are.equal(s0.cache_hits + 1, s1.cache_hits)
    assert.are.equal(s0.allocated_bytes + MiB, s1.allocated_bytes)
    assert.is_true(s1.peak_allocated_bytes >= s1.allocated_bytes)
    b:free()
    facet.cuda.empty_cache()
    local s2 = facet.cuda.memory_stats()
    assert.is_true(s2.reserved_bytes <= s1.reserved_bytes)
    assert.is_true(s2.reserved_bytes >= s2.allocated_bytes)
    assert.is_true(s2.driver_frees >= 1)
  end)

  gpu_it("values survive reuse: a recycled block holds what was written to it", function()
    for i = 1, 20 do
      local t = facet.full({ 1000 + i }, i, { device = "cuda" })
      local back = t:to("cpu"):data_ptr()
      assert.are.equal(i, back[0])
      assert.are.equal(i, back[999 + i])
      t:free()
    end
  end)
end)

describe("facet.cuda.out_of_memory", function()
  it("passes success and other errors through, without collecting", function()
    local log, hooks = fake_hooks()
    local retry, calls = answers()
    assert.are.equal(0, cuda.out_of_memory(0, retry, 100, "x", 1, hooks))
    assert.are.equal(ARG, cuda.out_of_memory(ARG, retry, 100, "x", 1, hooks))
    assert.are.same({}, log)
    assert.are.equal(0, calls())
  end)

  it("collects, empties the cache and tries once more", function()
    local log, hooks = fake_hooks()
    local retry, calls = answers(0)
    assert.are.equal(0, cuda.out_of_memory(OOM, retry, 100, "x", 1, hooks))
    assert.are.same({ "collect", "empty_cache" }, log)
    assert.are.equal(1, calls())
  end)

  it("another error on the retry comes back as a status", function()
    local _, hooks = fake_hooks()
    local retry = answers(ARG)
    assert.are.equal(ARG, cuda.out_of_memory(OOM, retry, 100, "x", 1, hooks))
  end)

  it("still out of memory: an error with the bytes asked for and held, at the caller", function()
    local log, hooks = fake_hooks()
    local retry, calls = answers(OOM, OOM)
    local line
    local ok, err = pcall(function()
      line = debug.getinfo(1, "l").currentline + 1
      cuda.out_of_memory(OOM, retry, 1024 * MiB, "a [256x1048576] float32 tensor", 1, hooks)
    end)
    assert.is_false(ok)
    assert.are.equal(1, calls())
    assert.are.same({ "collect", "empty_cache", "memory_stats" }, log)
    assert.matches("alloc_spec.lua:" .. line .. ":", err, 1, true)
    assert.matches("out of GPU memory: a [256x1048576] float32 tensor needs 1024.0 MiB (1073741824 bytes)", err, 1, true)
    assert.matches("holds 3.0 MiB (3145728 bytes) in tensors and 5.0 MiB (5242880 bytes) reserved", err, 1, true)
    assert.matches("after a full Lua GC and emptying the cache", err, 1, true)
    assert.matches("(facet_cuda_malloc: out of GPU memory allocating 1073741824 bytes)", err, 1, true)
  end)

  it("the default collect runs finalizers, and what they release is freed too", function()
    local freed = {}
    do
      -- the outer finalizer holds the inner object: it can only go in a later cycle
      local inner = ffi.gc(ffi.new("int[1]"), function() freed[#freed + 1] = "inner" end)
      local _ = ffi.gc(ffi.new("int[1]"), function() freed[#freed + 1] = "outer"; local _ = inner end)
    end
    cuda.oom_hooks.collect()
    table.sort(freed)
    assert.are.same({ "inner", "outer" }, freed)
  end)

  it("tensors on the CPU that do not fit fail at once, without the GPU path", function()
    local collected = false
    local saved = cuda.oom_hooks.collect
    cuda.oom_hooks.collect = function() collected = true end
    local ok, err = pcall(facet.empty, { 2 ^ 30, 2 ^ 30 })
    cuda.oom_hooks.collect = saved
    assert.is_false(ok)
    assert.matches("too large", err)
    assert.is_false(collected)
  end)

  gpu_it("a tensor bigger than the GPU: a clear error, and the allocator still works", function()
    local before = facet.cuda.memory_stats()
    -- called from a Lua function: the message names that line (a pcall made
    -- directly on facet.empty has no Lua caller to name)
    local ok, err = pcall(function()
      local t = facet.empty({ 2 ^ 37 }, { device = "cuda" })    -- 512 GiB
      return t
    end)
    assert.is_false(ok)
    assert.matches("out of GPU memory: a [137438953472] float32 tensor needs 524288.0 MiB", err, 1, true)
    assert.matches("alloc_spec.lua", err, 1, true)
    local after = facet.cuda.memory_stats()
    assert.are.equal(before.ooms + 2, after.ooms)           -- the C retry, then the Lua retry
    assert.is_true(after.oom_retries >= before.oom_retries + 2)
    local t = facet.full({ 10 }, 7, { device = "cuda" })
    assert.are.equal(7, t:to("cpu"):data_ptr()[9])
  end)
end)
