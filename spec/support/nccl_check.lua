--- spec/support/nccl_check.lua: facet.dist's collectives on one device's
-- tensors, checked against values each rank computes by hand, for the GPU
-- check's NCCL step (tools/gpu_check.sh runs it as
--   mpirun -np 1 luajit bin/facet run spec/support/nccl_check.lua cuda
-- since NCCL refuses two ranks on one GPU, and the GPU host has one).
--   bin/facet run spec/support/nccl_check.lua [cuda|cpu]   (under mpirun -np N)
-- cuda (default): the tensors are on the GPU, so every collective goes
-- through NCCL (its communicator made from rank 0's id, sent over MPI); cpu:
-- the same checks through MPI (spec/gpu_check_spec.lua runs them, on 1 and 2
-- ranks). The checks: allreduce (sum, avg, max, min; float32, float16,
-- bfloat16, int32, int64, uint8), allreduce_start + wait_all, allgather (equal and uneven row
-- counts), reduce_scatter, broadcast, and, on one rank, facet.train with
-- dist = true (float32 and float16 gradient buckets) and with dist = true,
-- sync_bn = true against the same run
-- without dist (the same losses bit for bit: at world size 1 an average over
-- one rank is exact and BatchNorm keeps its local statistics).
-- Prints "ok NAME" or "FAIL NAME: why" per check, then "N passed, M failed";
-- exit status 0 when all passed, 1 when one failed, 2 when it cannot run
-- here (no launcher, no MPI or NCCL in the build, no CUDA device), 3 on a
-- usage error.
local facet = require "facet"

local device = arg[1] or "cuda"
if device ~= "cuda" and device ~= "cpu" then
  io.stderr:write(("nccl_check: the device must be cuda or cpu, got %s\n"):format(device))
  os.exit(3)
end

local function cannot(why)
  print("cannot run: " .. why)
  os.exit(2)
end

local built = facet.dist.built()
if not facet.dist.launcher() then cannot("not started by a launcher (mpirun -np N ... nccl_check.lua)") end
if not built.mpi then cannot("facet was built without MPI (no mpicc at build time)") end
if device == "cuda" and not built.nccl then
  cannot("facet was built without NCCL (no nccl.h under NCCL_HOME or CUDA_HOME)")
end

facet.set_threads(1)
-- before any CUDA query: init gives each rank of a node its GPU (CUDA_VISIBLE_DEVICES)
local dist = facet.dist.init()
if device == "cuda" and not facet.cuda.available() then cannot("no CUDA device") end
local g = dist.world()
local r, W = g:rank(), g:size()
print(("nccl_check: rank %d of %d, %s tensors (%s)"):format(r, W, device,
  device == "cuda" and "NCCL" or "MPI"))

local passed, failed = 0, 0
local function check(name, fn)
  local ok, err = pcall(fn)
  if ok then
    passed = passed + 1
    print("ok " .. name)
  else
    failed = failed + 1
    print(("FAIL %s: %s"):format(name, tostring(err)))
  end
end

local function on(values, dtype)
  return facet.tensor(values, { dtype = dtype or "float32" }):to(device)
end

-- t (any device and dtype) holds exactly the numbers of want
local function same(what, t, want)
  local got = t:to("cpu"):reshape({ t:numel() }):totable()
  assert(#got == #want, ("%s: %d values, want %d"):format(what, #got, #want))
  for i = 1, #want do
    assert(got[i] == want[i], ("%s: value %d is %s, want %s"):format(what, i, tostring(got[i]), tostring(want[i])))
  end
end

-- rank q's values: { q + 1, 10 (q + 1), -(q + 1), 0.5 (q + 1) }
local function mine(q) return { q + 1, 10 * (q + 1), -(q + 1), 0.5 * (q + 1) } end
local S = W * (W + 1) / 2                     -- the sum of q + 1 over the ranks

check("allreduce sum, avg, max, min (float32)", function()
  local m = mine(r)
  same("sum", g:allreduce(on(m), "sum"), { S, 10 * S, -S, 0.5 * S })
  same("avg", g:allreduce(on(m), "avg"), { S / W, 10 * S / W, -S / W, 0.5 * S / W })
  same("max", g:allreduce(on(m), "max"), { W, 10 * W, -1, 0.5 * W })
  same("min", g:allreduce(on(m), "min"), { 1, 10, -W, 0.5 })
end)

check("allreduce of int32, int64 and uint8", function()
  same("int32 sum", g:allreduce(on({ r + 1, -7 * (r + 1), 2 ^ 20 }, "int32"), "sum"), { S, -7 * S, W * 2 ^ 20 })
  same("int64 sum", g:allreduce(on({ r + 1, 2 ^ 40 }, "int64"), "sum"), { S, W * 2 ^ 40 })
  same("int64 max", g:allreduce(on({ r, -r }, "int64"), "max"), { W - 1, 0 })
  same("uint8 max", g:allreduce(on({ r + 3, 200 }, "uint8"), "max"), { W + 2, 200 })
  same("uint8 min", g:allreduce(on({ r + 3, 200 }, "uint8"), "min"), { 3, 200 })
end)

check("allreduce of float16 and bfloat16 (sum, avg, max, min; exact for these values)", function()
  for _, dt in ipairs { "float16", "bfloat16" } do
    local m = mine(r)
    same(dt .. " sum", g:allreduce(on(m, dt), "sum"), { S, 10 * S, -S, 0.5 * S })
    same(dt .. " avg", g:allreduce(on(m, dt), "avg"), { S / W, 10 * S / W, -S / W, 0.5 * S / W })
    same(dt .. " max", g:allreduce(on(m, dt), "max"), { W, 10 * W, -1, 0.5 * W })
    same(dt .. " min", g:allreduce(on(m, dt), "min"), { 1, 10, -W, 0.5 })
  end
end)

check("a 7 x 14287 tensor (100,009 values: not a multiple of any block size)", function()
  local n = 7 * 14287
  local t = facet.arange(n, { dtype = "float32" }):reshape({ 7, 14287 }):to(device)
  t:mul_(r + 1)
  g:allreduce(t, "sum")
  local back = t:to("cpu"):reshape({ n }):totable()
  -- k (q + 1) summed over the ranks: k S, exact in float32 for these k
  for _, k in ipairs { 0, 1, 4095, 50000, n - 1 } do
    local v = back[k + 1]
    assert(v == k * S, ("value %d is %s, want %s"):format(k, tostring(v), tostring(k * S)))
  end
end)

check("allreduce_start on three tensors, then wait_all", function()
  local a, b, c = on(mine(r)), on({ r, r }, "int64"), on({ 2 * (r + 1) })
  g:allreduce_start(a, "sum")
  g:allreduce_start(b, "max")
  g:allreduce_start(c, "avg")
  g:progress()
  g:wait_all()
  same("sum", a, { S, 10 * S, -S, 0.5 * S })
  same("max", b, { W - 1, W - 1 })
  same("avg", c, { 2 * S / W })
end)

check("allgather, equal and uneven row counts", function()
  -- rank q holds 2 rows { 10 q + 1, 10 q + 2 } / { 10 q + 3, 10 q + 4 }
  local t = on({ 10 * r + 1, 10 * r + 2, 10 * r + 3, 10 * r + 4 }):reshape({ 2, 2 })
  local out = g:allgather(t)
  local want = {}
  for q = 0, W - 1 do for k = 1, 4 do want[#want + 1] = 10 * q + k end end
  assert(out:size(1) == 2 * W and out:size(2) == 2, "allgather: shape " .. table.concat(out:shape(), "x"))
  same("equal", out, want)
  -- rank q holds q + 1 rows of the value q
  local rows, counts = {}, {}
  for q = 0, W - 1 do counts[q + 1] = q + 1 end
  for k = 1, r + 1 do rows[k] = r end
  local u = g:allgather(on(rows), counts)
  want = {}
  for q = 0, W - 1 do for _ = 1, q + 1 do want[#want + 1] = q end end
  same("uneven", u, want)
end)

check("reduce_scatter sum and avg", function()
  -- W * 2 rows; rank q's row i (0-based) is (q + 1) (i + 1)
  local rows = {}
  for i = 0, 2 * W - 1 do rows[#rows + 1] = (r + 1) * (i + 1) end
  local s = g:reduce_scatter(on(rows), "sum")
  same("sum", s, { S * (2 * r + 1), S * (2 * r + 2) })
  local a = g:reduce_scatter(on(rows), "avg")
  same("avg", a, { S * (2 * r + 1) / W, S * (2 * r + 2) / W })
end)

check("broadcast from the last rank and from rank 0", function()
  local root = W - 1
  same("float32", g:broadcast(on(mine(r)), root), mine(root))
  same("int64", g:broadcast(on({ r, 2 ^ 33 + r }, "int64"), 0), { 0, 2 ^ 33 })
end)

-- facet.train with dist = true (and sync_bn) against the same run without:
-- at world size 1 the bucketed gradient average is over one rank, exact
if W == 1 then
  local function run(extra)
    facet.manual_seed(5)
    local net = facet.models.convnet { emb = 16, size = 12 }
    local head = facet.heads.new("am", { classes = 6, dim = 16, seed = 3, device = device })
    net:to(device)
    local labels = {}
    for i = 1, 32 do labels[i] = (i * 5) % 6 end
    local data = facet.data.tensors { x = facet.randn({ 32, 1, 12, 12 }, { seed = 4 }),
      y = facet.tensor(labels, { dtype = "int64" }), batch_size = 8, seed = 9 }
    local opt = facet.optim.sgd({ net, head }, { lr = 0.05, momentum = 0.9, weight_decay = 5e-4 })
    local cfg = { model = net, head = head, data = data, optimizer = opt, epochs = 1, quiet = true, bucket_mb = 0.001 }
    for k, v in pairs(extra) do cfg[k] = v end
    return facet.train(cfg).losses
  end
  local ref
  check("facet.train on one device without dist (the reference)", function()
    ref = run({})
    assert(#ref == 4, "steps: " .. #ref)
    for i, l in ipairs(ref) do assert(l == l and l > 0, ("loss %d is %s"):format(i, tostring(l))) end
  end)
  check("facet.train dist = true, allreduce_dtype = fp16: the first loss bit for bit, then close", function()
    assert(ref, "no reference run")
    local got = run({ dist = true, allreduce_dtype = "fp16" })
    assert(#got == #ref, ("%d steps, want %d"):format(#got, #ref))
    assert(got[1] == ref[1], ("loss 1 is %.17g, the reference's %.17g"):format(got[1], ref[1]))
    -- the gradients rounded to float16 once a step: a relative 2^-11 per step
    for i = 2, #ref do
      assert(math.abs(got[i] - ref[i]) <= 0.01 * math.abs(ref[i]),
        ("loss %d is %.17g, the reference's %.17g"):format(i, got[i], ref[i]))
    end
  end)
  for _, extra in ipairs { { dist = true }, { dist = true, sync_bn = true } } do
    local name = extra.sync_bn and "dist = true, sync_bn = true" or "dist = true"
    check(("facet.train %s: the reference's losses bit for bit"):format(name), function()
      assert(ref, "no reference run")
      local got = run(extra)
      assert(#got == #ref, ("%d steps, want %d"):format(#got, #ref))
      for i = 1, #ref do
        assert(got[i] == ref[i], ("loss %d is %.17g, the reference's %.17g"):format(i, got[i], ref[i]))
      end
    end)
  end
end

print(("%d passed, %d failed"):format(passed, failed))
io.stdout:flush()
dist.finalize()
os.exit(failed == 0 and 0 or 1)
