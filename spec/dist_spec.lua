-- spec/dist_spec.lua: facet.dist and data-parallel training (docs/distributed.md).
-- World size 1 runs in this process; the rest runs spec/support/dist_worker.lua
-- on 2 ranks under mpirun (spec/support/mpi.lua, no shell), skipped with the
-- reason where mpirun is not installed.
local facet = require "facet"
local json = require "facet.json"
local safetensors = require "facet.safetensors"
local F = require "support.files"
local mpi = require "support.mpi"
local half_bits = require "support.half_bits"
local D = require "support.device"

local WORKER = "spec/support/dist_worker.lua"

local function read_json(path) return json.decode(F.read_file(path)) end

local function close(a, b, rel)
  return math.abs(a - b) <= rel * math.max(math.abs(a), math.abs(b), 1e-3)
end

local function losses_match(got, want, rel, from)
  from = from or 1
  assert.are.equal(#want - from + 1, #got)
  for i = 1, #got do
    assert(close(got[i], want[from + i - 1], rel), ("step %d: loss %.9g, want %.9g"):format(from + i - 1, got[i],
      want[from + i - 1]))
  end
end

-- 16-bit collectives over 2 ranks, as raw bit patterns (values in the comments).
-- want: the result's bits; NAN: any NaN. Hand-computed, and confirmed against
-- NumPy's float16 and PyTorch's bfloat16 additions, which also widen to
-- float32 and round once.
local NAN = -1
local HALF_CASES = {
  -- 1 + 2^-11 is a tie: to even, 1; 1 + 3 2^-11 a tie: to even, 1 + 2^-9; 65504 + 16 = 65520 rounds
  -- to inf; inf + 1 = inf; inf + -inf, NaN + 1 = NaN; -2 + 0.5 = -1.5; 2^-24 + 2^-24 = 2^-23 (subnormals)
  { name = "f16_sum", dtype = "float16", op = "sum",
    bits = { { 0x3C00, 0x3C00, 0x7BFF, 0x7C00, 0x7C00, 0x7E00, 0xC000, 0x0001 },
             { 0x1000, 0x1600, 0x4C00, 0x3C00, 0xFC00, 0x3C00, 0x3800, 0x0001 } },
    want = { 0x3C00, 0x3C02, 0x7C00, 0x7C00, NAN, NAN, 0xBE00, 0x0002 } },
  -- 27 values: the lanes the F16C path sums 8 at a time (x86), the 8 holding an inf that it leaves to
  -- the scalar path, and a tail of 3. Besides the ties above: 65504 + 16 -> inf from finite operands;
  -- 1 + -1 = +0; -0 + -0 = -0; 65504 + 1 -> 65504; largest subnormal + smallest -> smallest normal;
  -- -65504 - 16 -> -inf; 1 + 2^-12 -> 1 (under half an ulp)
  { name = "f16_sum_wide", dtype = "float16", op = "sum",
    bits = { { 0x3C00, 0x3C00, 0x7BFF, 0xC000, 0x0001, 0x3C00, 0x4000, 0x8000, 0x3C00, 0x7BFF, 0x03FF, 0xFBFF, 0x5640,
               0x3555, 0x2E66, 0x3C00, 0x7C00, 0x3C00, 0x3C00, 0x0001, 0xC000, 0x0001, 0x4000, 0x7BFF, 0x3C00, 0x0001,
               0x7BFF },
             { 0x1000, 0x1600, 0x4C00, 0x3800, 0x0001, 0xBC00, 0x4000, 0x8000, 0x1400, 0x3C00, 0x0001, 0xCC00, 0x5640,
               0x3555, 0x2E66, 0x0C00, 0x3C00, 0x1000, 0x1600, 0x8001, 0x3800, 0x0001, 0x4000, 0x4C00, 0x1600, 0x0001,
               0x4C00 } },
    want = { 0x3C00, 0x3C02, 0x7C00, 0xBE00, 0x0002, 0x0000, 0x4400, 0x8000, 0x3C01, 0x7BFF, 0x0400, 0xFC00, 0x5A40,
             0x3955, 0x3266, 0x3C00, 0x7C00, 0x3C00, 0x3C02, 0x0000, 0xBE00, 0x0002, 0x4400, 0x7C00, 0x3C02, 0x0002,
             0x7C00 } },
  -- the sum, then / 2: (2^-24 + 2^-24) / 2 = 2^-24 (halving first would give 0 + 0);
  -- (1 + 2) / 2 = 1.5; (1 + 3 2^-11 -> 1 + 2^-9) / 2 = 0.5 + 2^-10
  { name = "f16_avg", dtype = "float16", op = "avg",
    bits = { { 0x0001, 0x3C00, 0x3C00 }, { 0x0001, 0x4000, 0x1600 } }, want = { 0x0001, 0x3E00, 0x3802 } },
  -- max/min as facet's maximum_/minimum_ (fmaxf): a NaN loses to a number; max(-inf, 3) = 3
  { name = "f16_max", dtype = "float16", op = "max", bits = { { 0x3C00, 0xFC00 }, { 0x7E00, 0x4200 } },
    want = { 0x3C00, 0x4200 } },
  { name = "f16_min", dtype = "float16", op = "min", bits = { { 0x3C00, 0xFC00 }, { 0x7E00, 0x4200 } },
    want = { 0x3C00, 0xFC00 } },
  -- bfloat16: 1 + 2^-8 a tie: 1; 1 + 3 2^-8 a tie: 1 + 2^-6; 256 + 1 a tie: 256; 3.39e38 (largest
  -- finite) twice: inf; inf + -inf, NaN + 1: NaN
  { name = "bf16_sum", dtype = "bfloat16", op = "sum",
    bits = { { 0x3F80, 0x3F80, 0x4380, 0x7F7F, 0x7F80, 0x7FC0 }, { 0x3B80, 0x3C40, 0x3F80, 0x7F7F, 0xFF80, 0x3F80 } },
    want = { 0x3F80, 0x3F82, 0x4380, 0x7F80, NAN, NAN } },
  { name = "bf16_avg", dtype = "bfloat16", op = "avg", bits = { { 0x3F80 }, { 0x4000 } }, want = { 0x3FC0 } },  -- 1.5
  { name = "bf16_max", dtype = "bfloat16", op = "max", bits = { { 0x3F80, 0xFF80 }, { 0x7FC0, 0x4040 } },
    want = { 0x3F80, 0x4040 } },
  { name = "bf16_min", dtype = "bfloat16", op = "min", bits = { { 0x3F80, 0xFF80 }, { 0x7FC0, 0x4040 } },
    want = { 0x3F80, 0xFF80 } },
}

local function bits_match(got, want, what)
  assert.are.equal(#want, #got, what)
  for i, w in ipairs(want) do
    local g = got[i]
    if w == NAN then
      -- all-ones exponent and a non-zero fraction, in either format
      local nan16 = (g % 0x8000 > 0x7C00) and (g % 0x8000 >= 0x7F81 or g % 0x8000 < 0x7F80)
      assert(nan16, ("%s[%d]: 0x%04X is not a NaN"):format(what, i, g))
    else
      assert(g == w, ("%s[%d]: 0x%04X, want 0x%04X"):format(what, i, g, w))
    end
  end
end

local tensor_of_bits, bits_of = half_bits.tensor, half_bits.of

describe("facet.dist at world size 1 (no launcher)", function()
  it("is rank 0 of 1 without MPI; collectives are identities, new tensors where promised", function()
    local d = facet.dist.init()
    assert.is_true(d.initialized())
    assert.are.equal(0, d.rank()); assert.are.equal(1, d.size()); assert.are.equal(0, d.local_rank())
    local g = d.world()
    local t = facet.tensor({ 1, -2, 3 })
    assert.are.equal(t, g:allreduce(t, "avg"))
    assert.are.same({ 1, -2, 3 }, t:totable())
    local a = g:allgather(t)
    assert.are_not.equal(t, a)
    assert.are.same({ 1, -2, 3 }, a:totable())
    local rs = g:reduce_scatter(facet.tensor({ { 1 }, { 2 } }), "sum")
    assert.are.same({ { 1 }, { 2 } }, rs:totable())
    assert.are.same({ 1, -2, 3 }, facet.dist.broadcast(t, 0):totable())
    g:barrier()
  end)

  it("refuses hostile arguments with messages naming the function and argument", function()
    local g = facet.dist.world()
    local function fails(pat, f) local ok, e = pcall(f); assert.is_false(ok); assert.matches(pat, tostring(e)) end
    fails("allreduce: op must be one of sum, avg, max, min, got \"mean\"", function() g:allreduce(facet.tensor({ 1 }), "mean") end)
    fails("allreduce: op \"avg\" needs a float32, float16 or bfloat16 tensor, got int64", function()
      g:allreduce(facet.tensor({ 1 }, { dtype = "int64" }), "avg") end)
    fails("allreduce: t must be a tensor, got nil", function() g:allreduce(nil, "sum") end)
    fails("must be contiguous", function() g:allreduce(facet.zeros({ 3, 2 }):narrow(2, 1, 1), "sum") end)
    fails("broadcast: root must be a rank, an integer in 0..0, got 1", function() g:broadcast(facet.tensor({ 1 }), 1) end)
    fails("broadcast: root must be a rank, an integer in 0..0, got nan", function() g:broadcast(facet.tensor({ 1 }), 0 / 0) end)
    fails("allgather: counts must be a list of 1 row counts", function() g:allgather(facet.tensor({ 1 }), { 1, 1 }) end)
    fails("allgather: counts%[1%] must be an integer >= 0, got %-1", function() g:allgather(facet.tensor({ 1 }), { -1 }) end)
    fails("allgather: t must have a first dim", function() g:allgather(facet.tensor(3)) end)
    fails("group:allreduce: call it with ':' on a facet.dist group; self is a tensor",
      function() g.allreduce(facet.tensor({ 1 }), "sum") end)
    fails("facet.dist.init: unknown option", function() facet.dist.init { timout = 1 } end)
    fails("facet.dist.init: timeout must be", function() facet.dist.init { timeout = -1 } end)
    fails("sync_bn = true needs dist = true", function()
      facet.train { model = facet.nn.Sequential(facet.nn.Linear(2, 2)), head = facet.heads.new("softmax", { classes = 2, dim = 2 }),
        data = facet.data.tensors { x = facet.zeros({ 4, 2 }), y = facet.tensor({ 0, 1, 0, 1 }, { dtype = "int64" }), batch_size = 2 },
        optimizer = {}, sync_bn = true }
    end)
  end)

  it("the C API refuses NULL handles and bad settings before touching MPI", function()
    local ffi = require "ffi"
    local core = require "facet.core"
    local C = core.C
    local function fails(pat, rc)
      assert.are_not.equal(0, rc)
      assert.matches(pat, core.last_error())
    end
    local built = facet.dist.built()
    if not built.mpi then
      fails("built without MPI", C.facet_dist_init(ffi.new("facet_dist *[1]"), ffi.new("facet_dist_params", { timeout = 1 })))
      return
    end
    local pp = ffi.new("facet_dist *[1]")
    fails("facet_dist_init: out is NULL", C.facet_dist_init(nil, ffi.new("facet_dist_params", { timeout = 1 })))
    fails("facet_dist_init: params is NULL", C.facet_dist_init(pp, nil))
    for _, bad in ipairs { 0, -1, 0 / 0, 1 / 0, 1e8 } do
      fails("facet_dist_init: timeout must be seconds in %(0, 1e7%]", C.facet_dist_init(pp, ffi.new("facet_dist_params",
        { timeout = bad })))
    end
    local t = facet.tensor({ 1 })
    fails("facet_dist_allreduce: the communicator is NULL", C.facet_dist_allreduce(nil, t.h, C.FACET_DIST_OP_SUM))
    fails("facet_dist_allreduce_start: the communicator is NULL", C.facet_dist_allreduce_start(nil, t.h, 0))
    fails("facet_dist_broadcast: the communicator is NULL", C.facet_dist_broadcast(nil, t.h, 0))
    fails("facet_dist_allgather: the communicator is NULL", C.facet_dist_allgather(nil, t.h, t.h, nil, 0))
    fails("facet_dist_reduce_scatter: the communicator is NULL", C.facet_dist_reduce_scatter(nil, t.h, t.h, 0))
    fails("facet_dist_barrier: the communicator is NULL", C.facet_dist_barrier(nil))
    fails("facet_dist_wait_all: the communicator is NULL", C.facet_dist_wait_all(nil))
    fails("facet_dist_progress: the communicator is NULL", C.facet_dist_progress(nil))
    fails("facet_dist_query: the communicator is NULL", C.facet_dist_query(nil, nil, nil, nil, nil))
    fails("facet_dist_abort: the communicator is NULL", C.facet_dist_abort(nil, 1))
    fails("facet_dist_is_built: mpi and nccl must not be NULL", C.facet_dist_is_built(nil, nil))
    assert.are.equal(0, C.facet_dist_free(nil))
  end)

  it("tensors:shard splits every global batch into the ranks' parts", function()
    local x = facet.arange(0, 12):reshape { 12, 1 }
    local y = facet.arange(0, 12):long()
    local src = facet.data.tensors { x = x, y = y, batch_size = 4, seed = 3 }
    local whole = src:batch(1, 2):reshape { 4 }:totable()
    local a = src:shard(0, 2):batch(1, 2):reshape { 2 }:totable()
    local b = src:shard(1, 2):batch(1, 2):reshape { 2 }:totable()
    assert.are.same(whole, { a[1], a[2], b[1], b[2] })
    assert.are.equal(3, src:shard(1, 2):num_batches())
    assert.has_error(function() src:shard(0, 3) end, "facet.data.tensors:shard: the batch size 4 does not divide among 3 ranks")
    assert.has_error(function() src:shard(2, 2) end)
  end)

  it("loader:shard gives each rank a contiguous run of the epoch's batches of batch / world images", function()
    local imgs, labels = {}, {}
    for i = 1, 13 do
      imgs[i], labels[i] = facet.data.encode_png(facet.full({ 4, 4, 3 }, i * 10, { dtype = "uint8" })), i - 1
    end
    local function loader(bs)
      return facet.data.loader { source = { images = imgs, labels = labels }, size = { 4, 4 }, batch_size = bs,
        threads = 1, seed = 1, flip = 0 }
    end
    local L, small = loader(4), loader(2)      -- 13 images: 6 batches of 2, a run of 3 for each of 2 ranks
    local shards = { L:shard(0, 2), L:shard(1, 2) }
    for e = 0, 1 do
      local seen = {}
      for r = 0, 1 do
        assert.are.equal(3, shards[r + 1]:num_batches())
        for i = 1, 3 do
          local _, got = shards[r + 1]:batch(e, i)
          local _, want = small:batch(e, r * 3 + i)
          assert.are.same(want:totable(), got:totable())
          for _, v in ipairs(got:totable()) do
            assert.is_nil(seen[v], "image " .. v .. " twice in epoch " .. e)
            seen[v] = true
          end
        end
      end
    end
    assert.has_error(function() L:shard(0, 3) end, "loader:shard: the batch size 4 does not divide among 3 ranks")
    assert.has_error(function() L:shard(-1, 2) end)
    L:close(); small:close()
    for _, s in ipairs(shards) do s:close() end
  end)

  it("the simulated group (spec/support/local_group.lua) reduces 16-bit tensors as the MPI path does", function()
    local LG = require "support.local_group"
    local res = LG.run(2, function(g)
      local out = {}
      for _, c in ipairs(HALF_CASES) do out[c.name] = bits_of(g:allreduce(tensor_of_bits(c.dtype, c.bits[g:rank() + 1]), c.op)) end
      return out
    end)
    for r = 1, 2 do
      for _, c in ipairs(HALF_CASES) do bits_match(res[r][c.name], c.want, c.name .. " rank " .. (r - 1)) end
    end
    -- three ranks, summed in rank order with one rounding per combine: 1 + 2^-11 + 2^-11 is 1 when 1 comes
    -- first (each tie goes to even) and 1 + 2^-10 when the two 2^-11 meet first: why a 16-bit sum is not
    -- bit-stable across rank counts or reduction orders
    local function sum3(order)
      local got = LG.run(3, function(g)
        return bits_of(g:allreduce(tensor_of_bits("float16", { order[g:rank() + 1] }), "sum"))
      end)
      return got[1][1]
    end
    assert.are.equal(0x3C00, sum3 { 0x3C00, 0x1000, 0x1000 })
    assert.are.equal(0x3C01, sum3 { 0x1000, 0x1000, 0x3C00 })
  end)

  it("allreduce takes float16 and bfloat16 at world size 1; allreduce_dtype is validated", function()
    local g = facet.dist.world()
    for _, dt in ipairs { "float16", "bfloat16" } do
      local t = tensor_of_bits(dt, { 0x3C00, 0x0001 })
      assert.are.same({ 0x3C00, 0x0001 }, bits_of(g:allreduce(t, "avg")))
    end
    local function train(extra)
      local net, head = facet.nn.Sequential(facet.nn.Linear(2, 2)), facet.heads.new("softmax", { classes = 2, dim = 2 })
      local cfg = { model = net, head = head, optimizer = facet.optim.sgd({ net, head }, { lr = 0.1 }), quiet = true,
        data = facet.data.tensors { x = facet.zeros({ 4, 2 }), y = facet.tensor({ 0, 1, 0, 1 }, { dtype = "int64" }), batch_size = 2 } }
      for k, v in pairs(extra) do cfg[k] = v end
      return facet.train(cfg)
    end
    local function fails(pat, f) local ok, e = pcall(f); assert.is_false(ok); assert.matches(pat, tostring(e), 1, true) end
    fails('facet.train: allreduce_dtype must be one of "fp32", "fp16", "bf16", got "fp8"', function()
      train { dist = true, allreduce_dtype = "fp8" } end)
    fails('facet.train: allreduce_dtype must be one of "fp32", "fp16", "bf16", got 16', function()
      train { dist = true, allreduce_dtype = 16 } end)
    fails('facet.train: allreduce_dtype = "bf16" needs dist = true', function() train { allreduce_dtype = "bf16" } end)
    fails('facet.dist.data_parallel: dtype must be one of "fp32", "fp16", "bf16", got "float16"', function()
      facet.dist.data_parallel({ facet.nn.Linear(2, 1) }, { dtype = "float16" }) end)
    -- at world size 1 the 16-bit setting trains as fp32 (nothing to reduce)
    assert.are.equal(2, train({ dist = true, allreduce_dtype = "fp16" }).steps)
  end)
end)

local have, why = mpi.available()
if have and not facet.dist.built().mpi then have, why = false, "this build of facet has no MPI (FACET_MPI=0 or no mpicc)" end
describe("facet.dist on 2 ranks (mpirun)", function()
  if not have then
    it("is skipped: " .. why, function() print("dist_spec: 2-rank cases skipped: " .. why) end)
    return
  end
  local path = F.scratch()

  -- CUDA reads CUDA_VISIBLE_DEVICES once: a rank that used CUDA before init cannot be given its GPU
  it("a rank that used CUDA before facet.dist.init is told so where the ranks share a node with GPUs", function()
    for _, gpu in ipairs { "gpu=1", "gpu=0" } do
      local dir = path("cuda-first-" .. gpu)
      assert(F.sh("mkdir -p " .. dir))
      local out, rc = mpi.run(2, { "spec/support/cuda_first_worker.lua", dir, gpu })
      assert.are.equal(0, rc, out)
      for r = 0, 1 do
        local v = read_json(("%s/cuda-first-%d.json"):format(dir, r))
        assert.is_false(v.before)
        assert.are.equal(v.count > 0, v.after)
        if v.count > 0 and gpu == "gpu=1" and not v.visible then
          assert.is_false(v.ok)
          assert.matches("facet.dist.init: 2 ranks share this node, but this process used CUDA before facet.dist.init",
            v.err, 1, true)
        else
          assert.is_true(v.ok, v.err)
        end
      end
    end
  end)

  it("collectives give the hand-computed values, and hostile arguments leave the communicator working", function()
    local out, rc = mpi.run(2, { WORKER, "collectives", path() })
    assert.are.equal(0, rc, out)
    for r = 0, 1 do
      local v = read_json(("%s/rank-%d.json"):format(path(), r))
      assert.are.equal(r, v.rank); assert.are.equal(2, v.size)
      assert.are.equal(D.ranks_device(), v.device)
      -- rank 0 holds {1, 10, -1}, rank 1 {2, 20, -2}
      assert.are.same({ 3, 30, -3 }, v.sum)
      assert.are.same({ 1.5, 15, -1.5 }, v.avg)
      assert.are.same({ 2, 20, -1 }, v.max)
      assert.are.same({ 1, 10, -2 }, v.min)
      assert.are.same({ 3, 2 * 2 ^ 40 }, v.int_sum)
      assert.are.same({ { 0, 0.5 }, { 1, 1.5 } }, v.gather)
      assert.are.same({ { 0, 0 }, { 1, 1 }, { 1, 1 } }, v.gather_uneven)
      -- rows k = 1..4 hold 100 r + k: sums 100 + 2k; rank r gets rows 2r+1, 2r+2
      assert.are.same(r == 0 and { { 102 }, { 104 } } or { { 106 }, { 108 } }, v.reduce_scatter)
      assert.are.same(r == 0 and { { 51 }, { 52 } } or { { 53 }, { 54 } }, v.reduce_scatter_avg)
      assert.are.same({ 8, 3 }, v.broadcast)                 -- rank 1's {1 + 7, 1 * 3}
      assert.are.same({ 2 }, v.module_allreduce)
      assert.are.same({ 4 }, v.after)
      -- gradients 1, 2 (weight) and 10, 20 (bias) on ranks 0, 1
      assert.are.same({ { { 3, 3 } }, { 30 } }, v.dp_sum)
      assert.are.same({ { { 1.5, 1.5 } }, { 15 } }, v.dp_avg)
      assert.are.same({ { 5, 5 } }, v.dp_broadcast)
      for name, msg in pairs(v.errors) do assert.matches("facet%.dist%.", msg, 1, false, name .. ": " .. msg) end
      assert.matches("counts%[" .. (r + 1) .. "%] %(this rank, " .. r .. "%) is 5 but t has 1 rows", v.errors.counts_mine)
    end
  end)

  it("16-bit collectives round once per combine, as hand-computed; data_parallel in fp16 and bf16", function()
    local dir = path("half")
    assert(F.sh("mkdir -p " .. dir))
    local cases = {}
    for _, c in ipairs(HALF_CASES) do cases[#cases + 1] = c end
    -- rank 0 {1, 1}, rank 1 {2^-11, 3 2^-11}: rank 0 gets 1 (a tie to even), rank 1 1 + 2^-9
    cases[#cases + 1] = { name = "f16_reduce_scatter", kind = "reduce_scatter", dtype = "float16", op = "sum",
      bits = { { 0x3C00, 0x3C00 }, { 0x1000, 0x1600 } } }
    cases[#cases + 1] = { name = "bf16_allgather", kind = "allgather", dtype = "bfloat16",
      bits = { { 0x3F80 }, { 0x4000 } } }
    cases[#cases + 1] = { name = "f16_broadcast", kind = "broadcast", dtype = "float16", bits = { { 0x3C00 }, { 0x1600 } } }
    F.write_file(dir .. "/cases.json", json.encode(cases))
    local out, rc = mpi.run(2, { WORKER, "half", dir })
    assert.are.equal(0, rc, out)
    for r = 0, 1 do
      local v = read_json(("%s/half-%d.json"):format(dir, r))
      assert.are.equal(D.ranks_device(), v.device)
      for _, c in ipairs(HALF_CASES) do bits_match(v[c.name], c.want, c.name .. " rank " .. r) end
      bits_match(v.f16_reduce_scatter, { r == 0 and 0x3C00 or 0x3C02 }, "reduce_scatter rank " .. r)
      bits_match(v.bf16_allgather, { 0x3F80, 0x4000 }, "allgather rank " .. r)      -- 1, 2
      bits_match(v.f16_broadcast, { 0x1600 }, "broadcast rank " .. r)               -- rank 1's 3 2^-11
      -- gradients: weight rank 0 {1, 1 + 2^-12}, rank 1 {3 2^-11, 0}; bias 131008 on both. Halved in
      -- float32, cast, summed in 16 bits. fp16: 0.5 + 3 2^-12 is a tie -> 0.5 + 2^-10 (float32: 0.50073);
      -- 0.5 + 2^-13 casts to 0.5; 65504 + 65504 overflows to inf. bf16: 0.5 + 3 2^-12 -> 0.5 (ulp 2^-8);
      -- 65504 casts to 65536, twice 131072. The same on the second step: buffers reused.
      for step = 1, 2 do
        assert.are.same({ "0.5009765625", "0.5", "inf" }, v["dp_fp16_" .. step])
        assert.are.same({ "0.5", "0.5", "131072" }, v["dp_bf16_" .. step])
      end
    end
  end)

  -- the 1-process run's result.json and weights, as tables. Tolerance 1e-3 of each tensor's largest
  -- element: a synchronised step rounds its statistics and sums in float32 where the 1-process step keeps
  -- double (the weights differ by ~1e-6 after one step), and this model amplifies such a perturbation
  -- chaotically: on the CPU's rounding 6.8e-6 to 1.4e-5 at step 20; on the CUDA emulator, 1.2e-6 after 1
  -- step, 4e-6 after 3 and 1.1e-5 after 10 without contracted multiply-adds, and with them (as nvcc
  -- compiles, docs/gpu.md "Rounding") 1.1e-6, 4.5e-6, 1.9e-5 and then 1.8e-4 at step 20. A synchronised
  -- BatchNorm that gets a statistic wrong moves them far more (a global variance without the ranks' mean
  -- offsets: 0.55 after one step, and the losses by 0.28); the losses (within 1e-5, every step) are the
  -- finer check.
  local function compare_weights(dir_a, dir_b)
    local wa, wb = safetensors.load(dir_a .. "/weights.safetensors"), safetensors.load(dir_b .. "/weights.safetensors")
    local n = 0
    for name, t in pairs(wa) do
      local a, b = t:reshape { -1 }:totable(), wb[name]:reshape { -1 }:totable()
      local scale = 0
      for i = 1, #a do scale = math.max(scale, math.abs(a[i])) end
      for i = 1, #a do
        assert(math.abs(a[i] - b[i]) <= 1e-3 * scale, ("%s[%d]: %.9g vs %.9g"):format(name, i, a[i], b[i]))
      end
      n = n + 1
    end
    assert.is_true(n >= 10)
  end

  local full
  it("2 ranks with sync BN at batch B/2 each give the losses and weights of 1 process at batch B (20 steps)", function()
    local one, two = path("one"), path("two")
    assert(F.sh("mkdir -p " .. one .. " " .. two))
    local out, rc = mpi.run(0, { WORKER, "train", one, "sync_bn=1" })
    assert.are.equal(0, rc, out)
    out, rc = mpi.run(2, { WORKER, "train", two, "sync_bn=1", "bucket_mb=0.0005" })
    assert.are.equal(0, rc, out)
    local a, b = read_json(one .. "/result.json"), read_json(two .. "/result.json")
    assert.are.equal(1, a.size); assert.are.equal(2, b.size)
    assert.are.equal(D.ranks_device(), b.device)
    assert.are.equal(20, #a.losses)
    losses_match(b.losses, a.losses, 1e-5)
    compare_weights(one, two)
    full = a.losses
  end)

  -- allreduce_dtype: the 2-rank run of the previous case (sync BN, 20 steps) with its gradient buckets
  -- in 16 bits. Tolerance: the 2-rank float32 run differs from the 1-process run only by the order of
  -- float32 additions (relative rounding 2^-24 = 6e-8, some elements) and its losses differ by at most
  -- 1.4e-6: this small am-softmax model amplifies a relative gradient perturbation by A ~ 25 by step 20.
  -- A 16-bit bucket rounds every element twice (the cast, the sum) by up to u = 2^-11 (fp16) or 2^-8
  -- (bf16), so each loss must lie within 4 A u = 100 u of the float32 run's (fp16 0.049, bf16 0.39;
  -- measured: 0.016 and 0.13) and their mean within A u (fp16 0.012, bf16 0.098; measured 0.006, 0.04).
  -- The first loss (before any update) is the same, and later ones differ: the 16-bit path ran.
  it("allreduce_dtype fp16 and bf16 track the float32-allreduce run (tolerances in the comment above)", function()
    assert.is_not_nil(full, "needs the previous case")
    local want = read_json(path("two") .. "/result.json").losses      -- its 2-rank float32-allreduce run
    local dev = {}
    for _, c in ipairs { { "fp16", 2 ^ -11 }, { "bf16", 2 ^ -8 } } do
      local dir = path("wire-" .. c[1])
      assert(F.sh("mkdir -p " .. dir))
      local out, rc = mpi.run(2, { WORKER, "train", dir, "sync_bn=1", "bucket_mb=0.0005", "allreduce_dtype=" .. c[1] })
      assert.are.equal(0, rc, out)
      local got = read_json(dir .. "/result.json").losses
      assert.are.equal(#want, #got)
      assert.are.equal(want[1], got[1])
      local sum, differs = 0, false
      for i = 1, #want do
        local d = math.abs(got[i] - want[i]) / math.max(math.abs(got[i]), math.abs(want[i]))
        assert(d <= 100 * c[2], ("%s step %d: loss %.9g, float32 allreduce %.9g"):format(c[1], i, got[i], want[i]))
        sum, differs = sum + d, differs or d > 0
      end
      assert.is_true(differs, c[1] .. ": the losses are those of the float32 allreduce")
      dev[c[1]] = sum / #want
      assert(dev[c[1]] <= 25 * c[2], ("%s: mean relative deviation %.3g"):format(c[1], dev[c[1]]))
    end
    -- 8 times the rounding: bf16 strays further than fp16
    assert(dev.fp16 < dev.bf16, ("mean deviation fp16 %.3g, bf16 %.3g"):format(dev.fp16, dev.bf16))
  end)

  it("allreduce_dtype fp16 with precision fp16: the loss-scaled gradients travel; a 16-bit overflow skips the step", function()
    local res = {}
    for _, w in ipairs { "fp32", "fp16" } do
      local dir = path("amp-" .. w)
      assert(F.sh("mkdir -p " .. dir))
      local out, rc = mpi.run(2, { WORKER, "train", dir, "precision=fp16", "allreduce_dtype=" .. w })
      assert.are.equal(0, rc, out)
      res[w] = read_json(dir .. "/result.json")
      assert.are.equal(20, #res[w].losses + res[w].overflow_skipped)
      for _, l in ipairs(res[w].losses) do assert.is_true(l == l and l < 1e3) end
    end
    -- the same first step; the 16-bit sum of scaled gradients overflows at least as often as the float32 one
    assert.are.equal(res.fp32.losses[1], res.fp16.losses[1])
    assert.is_true(res.fp16.overflow_skipped >= res.fp32.overflow_skipped)
  end)

  it("with a class-sharded head (K = 5 over 2 ranks: blocks 3 and 2) as well; gradients summed, not averaged", function()
    assert.is_not_nil(full, "needs the previous case")
    local dir = path("sharded")
    assert(F.sh("mkdir -p " .. dir))
    local out, rc = mpi.run(2, { WORKER, "train", dir, "sync_bn=1", "shard=1" })
    assert.are.equal(0, rc, out)
    losses_match(read_json(dir .. "/result.json").losses, full, 1e-5)
    compare_weights(path("one"), dir)
  end)

  it("every head of the catalogue, class-sharded over the 2 real ranks, gives the unsharded loss, dx and dW", function()
    local out, rc = mpi.run(2, { "spec/support/sharded_worker.lua" })
    assert.are.equal(0, rc, out)
    local n = #facet.heads.names()
    for r = 0, 1 do
      assert.truthy(out:find(("rank %d: %d heads match on %s"):format(r, n, D.ranks_device()), 1, true), out)
    end
  end)

  it("a checkpoint saved by 2 ranks resumes on 1 and on 2 ranks with the uninterrupted losses", function()
    assert.is_not_nil(full, "needs the previous case")
    -- { ranks of the resumed run, head sharded when saved, head sharded when resumed }
    for _, c in ipairs { { 0, "0", "0" }, { 2, "0", "0" }, { 0, "1", "0" }, { 2, "1", "1" } } do
      local np, saved, resumed = c[1], c[2], c[3]
      local dir = path(("resume-%d-%s-%s"):format(np, saved, resumed))
      assert(F.sh("mkdir -p " .. dir))
      local out, rc = mpi.run(2, { WORKER, "train", dir, "sync_bn=1", "ckpt=" .. dir .. "/ckpt", "checkpoint_every=10",
        "stop=10", "shard=" .. saved })
      assert.are.equal(0, rc, out)
      assert.are.equal("step-00000010", (F.read_file(dir .. "/ckpt/latest"):gsub("%s+$", "")))
      out, rc = mpi.run(np, { WORKER, "train", dir, "sync_bn=1", "ckpt=" .. dir .. "/ckpt", "resume=1",
        "shard=" .. resumed })
      assert.are.equal(0, rc, out)
      local v = read_json(dir .. "/result.json")
      assert.are.equal(np == 0 and 1 or 2, v.size)
      losses_match(v.losses, full, 1e-5, 11)
    end
  end)

  it("recipes/ms1m.lua --dist --sample runs on 2 ranks: loader shards, a class-sharded head, rank 0 logs", function()
    local data, out_dir = path("syn"), path("ms1m")
    assert(F.sh("mkdir -p " .. data))
    facet.data.synthetic { out = data .. "/train", identities = 10, images = 4, size = 16, pairs = 20, seed = 1 }
    local out, rc = mpi.run(2, { "recipes/ms1m.lua", "--data", data, "--model", "mobilefacenet", "--size", "16", "--emb",
      "32", "--batch", "8", "--steps", "3", "--bins", "train_verify", "--out", out_dir, "--dist", "--sample", "0.5" })
    assert.are.equal(0, rc, out)
    local _, n = out:gsub("10 identities", "")
    assert.are.equal(1, n, out)                          -- rank 0 alone prints
    local lines = {}
    for line in F.read_file(out_dir .. "/train.jsonl"):gmatch("[^\n]+") do lines[#lines + 1] = json.decode(line) end
    assert.are.equal(3, #lines)
    for _, e in ipairs(lines) do assert.is_true(e.loss > 0 and e.loss < 1e3) end
    assert.is_true(F.exists(out_dir .. "/report.html"))
  end)

  -- rank 1 misbehaves at step 3 (mode die / leave / hang); the job's output, exit status and seconds
  local function misbehave(mode, timeout)
    local dir = path(mode)
    assert(F.sh("mkdir -p " .. dir))
    local out, rc, secs = mpi.run(2, { WORKER, "train", dir, mode .. "=3" }, { env = { FACET_DIST_TIMEOUT = timeout },
      limit = 90 })
    assert.are_not.equal(0, rc, out)
    return out, secs
  end
  local TIMED_OUT = "did not complete within 2 s on rank 0 of 2: no answer from rank(s) 1"

  it("a rank that dies mid-run (no MPI_Finalize) ends the job at once; the other says so, naming its collective", function()
    local out, secs = misbehave("die", "30")
    assert.matches("worker: rank 1 leaves now", out, 1, true)
    assert.matches("facet.dist: rank 0 of 2 was stopped by the launcher (SIGTERM; last collective: allreduce #", out, 1, true)
    assert.is_true(secs < 25, "took " .. secs .. " s")        -- the launcher's teardown, not the 30 s timeout
  end)

  it("a rank that exits through Lua mid-run makes the other fail at the timeout, naming the rank", function()
    local out, secs = misbehave("leave", "2")
    assert.matches("worker: rank 1 leaves now", out, 1, true)
    assert.matches("facet.dist: rank 0 of 2 failed: facet_dist_allreduce: allreduce (collective #", out, 1, true)
    assert.matches(TIMED_OUT, out, 1, true)
    assert.is_true(secs < 60, "took " .. secs .. " s")
  end)

  it("a rank that hangs makes the other fail within the timeout (FACET_DIST_TIMEOUT), naming it", function()
    local out, secs = misbehave("hang", "2")
    assert.matches(TIMED_OUT, out, 1, true)
    assert.is_true(secs < 60, "took " .. secs .. " s")
  end)
end)

-- Synchronised BatchNorm's kernels over 2 real ranks (spec/support/sync_bn_case.lua:
-- BatchNorm2d and BatchNorm1d without affine on uneven parts, and a rank with no rows),
-- on FACET_DEVICE, in float32, float16 and bfloat16.
describe("synchronised BatchNorm on 2 ranks (mpirun)", function()
  if not have then
    it("is skipped: " .. why, function() print("dist_spec: synchronised BatchNorm skipped: " .. why) end)
    return
  end
  local S = require "support.sync_bn_case"
  local path = F.scratch()
  local HALF_U = { float32 = 0, float16 = 2 ^ -11, bfloat16 = 2 ^ -8 }   -- unit roundoff of the output dtype

  local res
  local function results()
    if res then return res end
    local dir = path("syncbn")
    assert(F.sh("mkdir -p " .. dir))
    local out, rc = mpi.run(2, { WORKER, "syncbn", dir })
    assert.are.equal(0, rc, out)
    res = { read_json(dir .. "/syncbn-0.json"), read_json(dir .. "/syncbn-1.json") }
    local want = os.getenv("FACET_DEVICE") == "cuda" and facet.cuda.available() and "cuda" or "cpu"
    assert.are.equal(want, res[1].device)
    return res
  end

  it("16 bits: the float32 path on the widened input, output and grad_input rounded once, bit for bit", function()
    local r = results()
    for rank = 1, 2 do
      for _, c in ipairs(S.CASES) do
        for _, dtype in ipairs { "float16", "bfloat16" } do
          local what = ("rank %d %s %s"):format(rank - 1, c.name, dtype)
          local o = r[rank][c.name .. "/" .. dtype]
          for _, k in ipairs { "out", "grad_input", "running_mean", "running_var", "save_mean", "save_invstd",
            "grad_weight", "grad_bias" } do
            assert.are.same(o.wide[k], o[k], what .. " " .. k)
          end
        end
      end
    end
  end)

  -- Tolerance: the ranks combine float32 means and variances, and float32 sums, where the 1-process
  -- kernel keeps double: each output within 1e-5 of its largest element (measured in float32 on the
  -- CPU: under 1.2e-7), plus the one rounding of a 16-bit output (its unit roundoff times the value).
  it("each rank's rows of the 1-process BatchNorm of the whole (widened) batch", function()
    local r = results()
    local function num(list, dtype)
      if dtype == "float32" or type(list[1]) == "string" then
        local v = {}
        for i, s in ipairs(list) do v[i] = tonumber(s) end
        return v
      end
      if #list == 0 then return {} end
      local t = half_bits.tensor(dtype, list):float()
      local p, v = t:data_ptr(), {}
      for i = 1, #list do v[i] = p[i - 1] end
      return v
    end
    local function near(got, want, u, what)
      assert.are.equal(#want, #got, what)
      local big = 0
      for i = 1, #want do big = math.max(big, math.abs(want[i])) end
      for i = 1, #want do
        assert(math.abs(got[i] - want[i]) <= u * math.abs(want[i]) + 1e-5 * big,
          ("%s[%d]: %.9g, the 1-process value %.9g"):format(what, i, got[i], want[i]))
      end
    end
    local function values(t)
      local c, v = t:contiguous(), {}
      local p = c:data_ptr()
      for i = 1, c:numel() do v[i] = p[i - 1] end
      return v
    end
    for _, c in ipairs(S.CASES) do
      for _, dtype in ipairs(S.DTYPES) do
        local what = c.name .. " " .. dtype
        local xa, ga = S.batch(c, dtype)
        local m = S.module(c, "cpu")
        local x, g = xa:float(), ga:float()
        local ref = { out = values(m:forward(x)), grad_input = values(m:backward(x, g)) }
        local o0, o1 = r[1][c.name .. "/" .. dtype], r[2][c.name .. "/" .. dtype]
        for _, k in ipairs { "out", "grad_input" } do
          local got = num(o0[k], dtype)
          for _, v in ipairs(num(o1[k], dtype)) do got[#got + 1] = v end
          near(got, ref[k], HALF_U[dtype], what .. " " .. k)
        end
        for _, k in ipairs { "running_mean", "running_var" } do
          near(num(o0[k]), values(m[k]), 0, what .. " rank 0 " .. k)
          near(num(o1[k]), values(m[k]), 0, what .. " rank 1 " .. k)
        end
        near(num(o0.save_mean), values(m.buffers.save_mean), 0, what .. " save_mean")
        near(num(o0.save_invstd), values(m.buffers.save_invstd), 0, what .. " save_invstd")
        if m.weight then
          -- the ranks' local sums add up to the whole batch's
          for _, k in ipairs { "grad_weight", "grad_bias" } do
            local a, b, sum = num(o0[k]), num(o1[k]), {}
            for i = 1, #a do sum[i] = a[i] + b[i] end
            near(sum, values(m[k]), 0, what .. " " .. k)
          end
        end
      end
    end
  end)
end)
