--- spec/support/dist_worker.lua: what each rank runs for spec/dist_spec.lua
-- (started by spec/support/mpi.lua, or alone as the 1-process reference).
--   bin/facet run spec/support/dist_worker.lua MODE OUT [key=value ...]
-- MODE collectives: every collective on values each rank can compute, into OUT/rank-R.json.
-- MODE half: the 16-bit collectives of the cases in OUT/cases.json ({ name, dtype,
--   op, bits = { rank 0's, rank 1's } } as raw 16-bit patterns) into
--   OUT/half-R.json (the result's bit patterns, by name), and data_parallel with
--   dtype fp16 / bf16 on a Linear(2, 1) whose gradients the spec names (values
--   as "%.17g" strings, so that inf survives JSON).
-- MODE syncbn: the synchronised BatchNorm cases of spec/support/sync_bn_case.lua,
--   forward and backward over this rank's rows in float32, float16 and bfloat16
--   (and, for 16 bits, the float32 path on the widened rows, its output and
--   input gradient rounded once), on FACET_DEVICE, into OUT/syncbn-R.json
--   (16-bit tensors as bit patterns, float32 ones as "%.17g" strings).
-- MODE train: a small convnet with BatchNorm and an am-softmax head, trained
--   for steps=N steps at a global batch=B with dist = true (sync_bn=1 for
--   synchronised BN); rank 0 writes OUT/result.json (losses) and OUT/weights.safetensors.
--   ckpt=DIR checkpoint_every=K stop=S resume=1 pass on to facet.train; shard=1
--   makes the head class-sharded over the ranks (facet.heads.sharded).
--   allreduce_dtype=fp16|bf16 and precision=bf16|fp16 pass on to facet.train; lr=X
--   sets SGD's learning rate (default 0.05).
--   At step S on rank 1: die=S exits at once (_exit: no MPI_Finalize, as a crash does);
--   leave=S exits through Lua (os.exit closing the state: the communicator's
--   finalizer calls MPI_Finalize, which waits for the peers); hang=S sleeps 600 s.
local facet = require "facet"
local json = require "facet.json"

local mode, out = arg[1], arg[2]
local kv = {}
for i = 3, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  kv[k] = v
end
local function num(k, d) return kv[k] and tonumber(kv[k]) or d end

facet.set_threads(1)
local dist = facet.dist.init()
local g = dist.world()
local r, W = g:rank(), g:size()

-- the device of this run's tensors (collectives, half, train; written as res.device)
package.path = "./spec/?.lua;" .. package.path
local dev = require "support.rank_device"(g)
local function T(v, opts) return facet.tensor(v, opts):to(dev) end

local function write(path, v)
  local f = assert(io.open(path, "wb"))
  f:write(json.encode(v))
  f:close()
end

if mode == "collectives" then
  local res = { rank = r, size = W, local_rank = dist.local_rank(), device = dev }
  -- rank r holds { r + 1, 10 (r + 1), -(r + 1) }
  local function mine() return T({ r + 1, 10 * (r + 1), -(r + 1) }) end
  for _, op in ipairs { "sum", "avg", "max", "min" } do res[op] = g:allreduce(mine(), op):totable() end
  res.int_sum = g:allreduce(T({ r + 1, 2 ^ 40 }, { dtype = "int64" }), "sum"):totable()
  res.gather = g:allgather(T({ { r, r + 0.5 } })):totable()
  -- uneven: rank r sends r + 1 rows of value r
  local uneven = facet.full({ r + 1, 2 }, r):to(dev)
  local counts = {}
  for i = 1, W do counts[i] = i end
  res.gather_uneven = g:allgather(uneven, counts):totable()
  -- rank r holds rows k = 1..2W with value 100 r + k
  local rows = {}
  for k = 1, 2 * W do rows[k] = { 100 * r + k } end
  res.reduce_scatter = g:reduce_scatter(T(rows), "sum"):totable()
  res.reduce_scatter_avg = g:reduce_scatter(T(rows), "avg"):totable()
  res.broadcast = g:broadcast(T({ r + 7, r * 3 }), W - 1):totable()
  res.module_allreduce = facet.dist.allreduce(T({ 1 }), "sum"):totable()
  -- data_parallel: gradients summed or averaged, parameters from rank 0
  local lin = facet.nn.Linear(2, 1):to(dev)
  for _, op in ipairs { "sum", "avg" } do
    local dp = facet.dist.data_parallel({ lin }, { op = op })
    lin.grad_weight:fill_(r + 1)
    lin.grad_bias:fill_(10 * (r + 1))
    dp:begin()
    dp:finish()
    res["dp_" .. op] = { lin.grad_weight:totable(), lin.grad_bias:totable() }
  end
  lin.weight:fill_(r + 5)
  facet.dist.data_parallel({ lin }):broadcast(0)
  res.dp_broadcast = lin.weight:totable()
  g:barrier()
  -- hostile arguments on a live communicator: clear errors, the communicator still works after them
  local errs = {}
  local function try(name, f) local ok, e = pcall(f); errs[name] = ok and "no error" or tostring(e) end
  try("op", function() g:allreduce(T({ 1 }), "prod") end)
  try("avg_int", function() g:allreduce(T({ 1 }, { dtype = "int32" }), "avg") end)
  try("not_tensor", function() g:allreduce({ 1, 2 }, "sum") end)
  try("noncontiguous", function() g:allreduce(facet.zeros({ 3, 2 }):to(dev):narrow(2, 1, 1), "sum") end)
  try("root", function() g:broadcast(T({ 1 }), W) end)
  try("counts", function() g:allgather(T({ { 1 } }), { 1 }) end)
  try("counts_mine", function() local c = {}; for i = 1, W do c[i] = 5 end; g:allgather(T({ { 1 } }), c) end)
  try("rs_rows", function() g:reduce_scatter(facet.zeros({ 2 * W + 1 }):to(dev), "sum") end)
  try("freed", function() local t = T({ 1 }); t:free(); g:allreduce(t, "sum") end)
  res.errors = errs
  res.after = g:allreduce(T({ 2 }), "sum"):totable()
  write(("%s/rank-%d.json"):format(out, r), res)
  return
end

if mode == "half" then
  local cases = json.decode(assert(io.open(out .. "/cases.json", "rb")):read("*a"))
  package.path = "./spec/?.lua;" .. package.path
  local half_bits = require "support.half_bits"
  local from_bits = half_bits.tensor
  local function bits_of(t) return half_bits.of(t:to("cpu")) end
  local res = { rank = r, device = dev }
  for _, c in ipairs(cases) do
    local t = from_bits(c.dtype, c.bits[r + 1]):to(dev)
    if c.kind == "reduce_scatter" then res[c.name] = bits_of(g:reduce_scatter(t, c.op))
    elseif c.kind == "allgather" then res[c.name] = bits_of(g:allgather(t))
    elseif c.kind == "broadcast" then res[c.name] = bits_of(g:broadcast(t, 1))
    else res[c.name] = bits_of(g:allreduce(t, c.op)) end
  end
  -- data_parallel in 16 bits: weight rank 0 {1, 1 + 2^-12}, rank 1 {3 2^-11, 0}; bias 131008 on both
  local lin = facet.nn.Linear(2, 1):to(dev)
  for _, dt in ipairs { "fp16", "bf16" } do
    local dp = facet.dist.data_parallel({ lin }, { dtype = dt })
    for step = 1, 2 do      -- twice: the buffers are reused
      lin.grad_weight:copy(T({ { r == 0 and 1 or 3 * 2 ^ -11, r == 0 and 1 + 2 ^ -12 or 0 } }))
      lin.grad_bias:fill_(131008)
      dp:begin()
      dp:finish()
      local v = {}
      local w, b = lin.grad_weight:totable(), lin.grad_bias:totable()
      for _, x in ipairs { w[1][1], w[1][2], b[1] } do
        v[#v + 1] = ("%.17g"):format(x)
      end
      res[("dp_%s_%d"):format(dt, step)] = v
    end
  end
  write(("%s/half-%d.json"):format(out, r), res)
  return
end

if mode == "syncbn" then
  package.path = "./spec/?.lua;" .. package.path
  local S = require "support.sync_bn_case"
  local bits_of = require("support.half_bits").of
  local dev = os.getenv("FACET_DEVICE") == "cuda" and facet.cuda.available() and "cuda" or "cpu"
  local function strings(t)
    local c, o = t:to("cpu"):contiguous(), {}
    local p = c:data_ptr()
    for i = 0, c:numel() - 1 do o[i + 1] = ("%.17g"):format(p[i]) end
    return o
  end
  local function dump(t)
    if t:dtype() == "float32" then return strings(t) end
    return bits_of(t:to("cpu"):contiguous())
  end
  local function run(c, x, gy)
    local m = S.module(c, dev)
    m.sync = g
    local y = m:forward(x)
    local gi = m:backward(x, gy)
    local o = { out = dump(y), grad_input = dump(gi), running_mean = strings(m.running_mean),
      running_var = strings(m.running_var), save_mean = strings(m.buffers.save_mean),
      save_invstd = strings(m.buffers.save_invstd) }
    if m.weight then o.grad_weight, o.grad_bias = strings(m.grad_weight), strings(m.grad_bias) end
    return o, y, gi
  end
  local res = { rank = r, device = dev }
  for _, c in ipairs(S.CASES) do
    local first, rows = S.rows(c, r)
    for _, dtype in ipairs(S.DTYPES) do
      local xa, ga = S.batch(c, dtype)
      local x, gy = xa:narrow(1, first, rows):contiguous():to(dev), ga:narrow(1, first, rows):contiguous():to(dev)
      local o = run(c, x, gy)
      if dtype ~= "float32" then
        local w, y32, gi32 = run(c, x:float(), gy:float())
        w.out, w.grad_input = bits_of(y32:to("cpu"):to(dtype)), bits_of(gi32:to("cpu"):to(dtype))
        o.wide = w
      end
      res[c.name .. "/" .. dtype] = o
    end
  end
  write(("%s/syncbn-%d.json"):format(out, r), res)
  return
end

-- ---- training ---------------------------------------------------------------------------
local nn = facet.nn
local B, steps = num("batch", 8), num("steps", 20)
facet.manual_seed(3)
local n = B * steps
local x = facet.randn({ n, 1, 8, 8 }, { seed = 11 })
local yl = {}
for i = 1, n do yl[i] = (i * 7) % 5 end
local y = facet.tensor(yl, { dtype = "int64" })
local net = nn.Sequential(nn.Conv2d(1, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(),
  nn.Conv2d(4, 4, 3, { stride = 2, padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8),
  nn.BatchNorm1d(8)):to(dev)
local head = facet.heads.new("am", { classes = 5, dim = 8, seed = 5, shard = kv.shard == "1" or nil, device = dev })
local opt = facet.optim.sgd({ net, head }, { lr = num("lr", 0.05), momentum = 0.9, weight_decay = 5e-4 })
local data = facet.data.tensors { x = x, y = y, batch_size = B, seed = 2 }
if kv.die or kv.hang or kv.leave then
  local at, inner = tonumber(kv.die or kv.hang or kv.leave), data
  data = { num_batches = function() return inner:num_batches() end,
    shard = function(self, rk, w)
      local s = inner:shard(rk, w)
      return { num_batches = function() return s:num_batches() end,
        batch = function(_, e, i)
          if rk == 1 and i == at then
            io.stderr:write("worker: rank 1 leaves now\n")
            io.stderr:flush()
            local ffi = require "ffi"
            if kv.die then pcall(ffi.cdef, "void _exit(int);"); ffi.C._exit(3) end
            if kv.leave then os.exit(3, true) end
            local ffi = require "ffi"; pcall(ffi.cdef, "unsigned int sleep(unsigned int);"); ffi.C.sleep(600)
          end
          return s:batch(e, i)
        end }
    end }
end
local res = facet.train {
  model = net, head = head, data = data, optimizer = opt, epochs = 1, quiet = true, dist = true,
  sync_bn = kv.sync_bn == "1", checkpoint = kv.ckpt, checkpoint_every = num("checkpoint_every"),
  resume = kv.resume == "1" and kv.ckpt or nil, stop_after = num("stop"), bucket_mb = num("bucket_mb"),
  allreduce_dtype = kv.allreduce_dtype, precision = kv.precision,
}
-- a sharded head's full weight is gathered on every rank
local head_weight = head.state_dict and head:state_dict().weight or head.weight
if r == 0 then
  local w = net:state_dict()
  w["head.weight"] = head_weight
  facet.save_safetensors(w, out .. "/weights.safetensors")
  write(out .. "/result.json", { losses = res.losses, steps = res.steps, size = W, device = dev,
    overflow_skipped = res.overflow_skipped })
end
