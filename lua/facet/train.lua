--- facet.train{ ... }: the training loop.
--   facet.train{ model = net, head = head, data = source, optimizer = opt,
--                schedule = sched, epochs = 12, checkpoint = "run/ckpt", log = "run",
--                resume = "run/ckpt", nan = "stop" | "skip", clip = max_norm,
--                eval = function(state) return { lfw = 0.99 } end, eval_every = steps,
--                print_every = steps, checkpoint_every = steps, quiet = false }
-- Batches go to the device of the model's parameters (facet.data.to_device).
-- One step: zero_grad, head:forward(model:forward(x), y), backward through both,
-- the guard on the loss and the gradient norm, optional clipping, optimizer
-- step; the learning rate follows schedule(progress in epochs). The step
-- zeroes the gradients inside its update (optimizer:step_zero_grad(): SGD
-- and Adam do it in the same pass), so the next step's zero_grad has nothing
-- left to do and is skipped.
-- Host round trips per step (each a blocking device-to-host read on CUDA;
-- docs/gpu.md): the gradient norm of the guard is one read for all the
-- parameters (facet_tensor_sumsq_list), none with check_grads = false; the
-- loss is the head's (its forward reads it back); fp16 adds the overflow
-- flag of the unscale. dist averages the loss in a host tensor (an MPI
-- collective between the ranks, no read from the device).
-- A step the guard rejects (a non-finite loss or gradient norm) leaves the
-- model as it was before the step: no weight moves, and the model's state
-- tensors (BatchNorm running statistics, which the forward already updated)
-- are put back from a copy taken before the forward (buffers made once per
-- run, one copy per state tensor per step, nothing allocated per step).
-- Progress: one line updated in place on a terminal (step, epoch, loss, lr,
-- images/s, ETA), plain lines otherwise. Logs: log/train.jsonl, one JSON object
-- per line (step, epoch, loss, lr, images_per_s, time, and eval metrics), its
-- numbers written so that they read back exactly (facet.json).
-- Checkpoints (facet.checkpoint): checkpoint/step-NNNNNNNN/ every
-- checkpoint_every steps and at each epoch's end, checkpoint/latest naming the
-- newest; the two newest are kept.
-- resume = dir continues from dir/latest; on the CPU with the same seed and
-- thread count the losses are those of the uninterrupted run, bit for bit
-- (weights, optimizer buffers, the generator's and the model's dropout stream
-- positions and the place in the epoch are restored).
-- Data parallel (docs/distributed.md): dist = true joins facet.dist (init()
-- when not done yet); with more than one rank, each rank trains on
-- data:shard(rank, world) (its part of every global batch, so the batch the
-- source was made with is the global one), the parameters and BatchNorm
-- statistics start as rank 0's, the gradients are averaged by bucketed
-- allreduces started during backward (facet.dist.data_parallel; bucket_mb,
-- default 1), the loss is averaged so every rank logs and guards the same
-- value, and only rank 0 writes logs, progress, and checkpoints. sync_bn = true
-- makes every BatchNorm use the statistics of the global batch. A rank that
-- fails alone ends the job (facet.dist.abort) instead of leaving its peers
-- waiting. At world size 1 dist changes nothing. A class-sharded head
-- (facet.heads.new(..., { shard = true })) keeps its own parameters (not
-- broadcast, not averaged), computes the global batch's loss on every rank and
-- returns, for the rank's samples, the exact dx of that loss; the model's
-- gradients are then summed over the ranks instead of averaged.
-- allreduce_dtype = "fp16" | "bf16" (default "fp32"; needs dist = true) sends
-- the gradient buckets in 16 bits, as arcface_torch's fp16_compress_hook:
-- each bucket is divided by the world size in float32, cast into a 16-bit
-- buffer made once, summed over the ranks and cast back into the float32
-- gradients (half the bytes on the wire; rounding: docs/distributed.md).
-- Any precision: with fp16 the loss-scaled gradients travel, and a 16-bit
-- overflow reads as an fp16 overflow (the step skipped, the scale halved).
-- Mixed precision (docs/mixed-precision.md): precision = "bf16" or "fp16"
-- keeps the parameters float32 (master weights, updated by the optimizer in
-- float32), casts each batch to bfloat16/float16 before the model, whose
-- layers marked fp32 (the embedding's last FC and BatchNorm1d in facet's
-- models, as arcface_torch) run in float32; the embedding, float32 then, goes
-- to the head (the head and the loss stay float32) and its gradient back to
-- the model in the embedding's dtype. fp16 scales that gradient with a facet.amp scaler
-- (options: loss_scale = { init_scale =, growth_interval =, ... }), unscales
-- the model's gradients before clipping and the guard, and skips a step whose
-- gradients overflowed (the expected fp16 overflow: logged with reason
-- "fp16 overflow", counted in result.overflow_skipped, the scale halved); an
-- overflow at the scaler's min_scale is a real divergence and goes to the
-- NaN guard (nan = "stop" | "skip"). The scale and the overflow count are
-- logged with every step and kept in the checkpoints.
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"
local device_data = require("facet.data.device").to_device
local checkpoint = require "facet.checkpoint"
local json = require "facet.json"
local sys = require "facet.sys"
local valid = require "facet.check"
local dist = require "facet.dist"
local amp = require "facet.amp"
local Module = require "facet.nn.Module"

local M = {}

-- every option facet.train takes; any other name is an error
local TRAIN_OPTIONS = { "model", "head", "data", "optimizer", "schedule", "epochs", "checkpoint", "log", "resume",
  "nan", "clip", "check_grads", "eval", "eval_every", "print_every", "checkpoint_every", "quiet", "stop_after",
  "dist", "sync_bn", "bucket_mb", "allreduce_dtype", "precision", "loss_scale" }

-- precision = ... -> the dtype the model runs in (nil: float32 throughout)
local LOW = { fp32 = false, bf16 = "bfloat16", fp16 = "float16" }

local clock = sys.clock

-- off a terminal, a progress line at least this often (seconds)
local PRINT_SECONDS = 30

local function is_finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

-- the model's state tensors (BatchNorm running statistics) and the head's
-- (CurricularFace's t, AdaFace's statistics), each with a copy made once per run: saved before each
-- forward, put back when the guard rejects the step. The contiguous ones of a device go in one
-- facet_tensor_copy_list call (on CUDA one launch per 48 tensors, not one
-- each); any other tensor is copied alone.
local function state_guard(model, head)
  local d, names = model:state_tensors(), {}
  if head and head.state_tensors then
    for k, v in pairs(head:state_tensors()) do d["head." .. k] = v end
  end
  for name in pairs(d) do names[#names + 1] = name end
  table.sort(names)
  local lists, by_device, single = {}, {}, {}
  for _, name in ipairs(names) do
    local t = d[name]
    local pair = { t = t, copy = t:clone() }
    if t:is_contiguous() then
      local dev = t:device()
      local l = by_device[dev]
      if not l then
        l = { pairs = {} }
        by_device[dev] = l
        lists[#lists + 1] = l
      end
      l.pairs[#l.pairs + 1] = pair
    else
      single[#single + 1] = pair
    end
  end
  for _, l in ipairs(lists) do
    local n = #l.pairs
    l.n, l.t, l.copy = n, ffi.new("facet_tensor *[?]", n), ffi.new("facet_tensor *[?]", n)
    for i, pair in ipairs(l.pairs) do l.t[i - 1], l.copy[i - 1] = pair.t.h, pair.copy.h end
  end
  return { lists = lists, single = single }
end

local function save_state(g)
  for _, l in ipairs(g.lists) do core.check(core.C.facet_tensor_copy_list(l.copy, l.t, l.n)) end
  for _, pair in ipairs(g.single) do pair.copy:copy(pair.t) end
end
local function restore_state(g)
  for _, l in ipairs(g.lists) do core.check(core.C.facet_tensor_copy_list(l.t, l.copy, l.n)) end
  for _, pair in ipairs(g.single) do pair.t:copy(pair.copy) end
end

-- the run's state from cfg (errors blame the caller of facet.train)
local function setup(cfg)
  if type(cfg) ~= "table" then error("facet.train{ model =, head =, data =, optimizer =, epochs = }", 3) end
  for _, k in ipairs { "model", "head", "data", "optimizer" } do
    if cfg[k] == nil then error(("facet.train: %s is required"):format(k), 3) end
  end
  valid.options("facet.train", cfg, TRAIN_OPTIONS)
  valid.integer("facet.train", "epochs", cfg.epochs, { min = 1, default = 1 })
  for _, k in ipairs { "print_every", "checkpoint_every", "eval_every" } do
    valid.integer("facet.train", k, cfg[k], { min = 1, optional = true })
  end
  valid.number("facet.train", "clip", cfg.clip, { gt = 0, optional = true })
  valid.enum("facet.train", "nan", cfg.nan, { "stop", "skip" }, "stop")
  valid.boolean("facet.train", "dist", cfg.dist, false)
  valid.boolean("facet.train", "sync_bn", cfg.sync_bn, false)
  valid.number("facet.train", "bucket_mb", cfg.bucket_mb, { gt = 0, optional = true })
  if cfg.sync_bn and not cfg.dist then error("facet.train: sync_bn = true needs dist = true", 3) end
  local wire = valid.enum("facet.train", "allreduce_dtype", cfg.allreduce_dtype, dist.ALLREDUCE_DTYPES, "fp32")
  if wire ~= "fp32" and not cfg.dist then
    error(("facet.train: allreduce_dtype = %q needs dist = true"):format(wire), 3)
  end
  local precision = valid.enum("facet.train", "precision", cfg.precision, { "fp32", "bf16", "fp16" }, "fp32")
  if cfg.loss_scale ~= nil and precision ~= "fp16" then
    error(("facet.train: loss_scale applies to precision = \"fp16\" only, not %q"):format(precision), 3)
  end
  local scaler
  if precision == "fp16" then
    if cfg.loss_scale ~= nil and type(cfg.loss_scale) ~= "table" then
      error("facet.train: loss_scale must be a table of facet.amp.scaler options, got " .. valid.describe(cfg.loss_scale), 3)
    end
    local sopts = {}
    for k, v in pairs(cfg.loss_scale or {}) do sopts[k] = v end
    if sopts.enabled ~= nil then error("facet.train: loss_scale.enabled is not an option of facet.train", 3) end
    local ok, s = pcall(amp.scaler, sopts)
    if not ok then error("facet.train: loss_scale: " .. tostring(s):gsub("^[^\n]-%.lua:%d+: ", ""), 3) end
    scaler = s
  end
  local rank, world = 0, 1
  if cfg.dist then
    if not dist.initialized() then dist.init() end
    rank, world = dist.rank(), dist.size()
  end
  local source = cfg.data
  if world > 1 then
    if type(source) ~= "table" or type(source.shard) ~= "function" then
      error("facet.train: dist = true on several ranks needs a data source with :shard(rank, world) "
        .. "(facet.data.tensors and facet.data.loader have it)", 3)
    end
    source = source:shard(rank, world)
  end
  local nb = source:num_batches()
  if nb < 1 then error("facet.train: the data source has no batches", 3) end
  local model = cfg.model
  -- batches go to the model's device, into reused buffers (asynchronously from pinned memory)
  local first = model:parameters()[1]
  local data = device_data(source, first and first:device() or "cpu")
  local st = {
    cfg = cfg, model = model, head = cfg.head, data = data, optimizer = cfg.optimizer,
    epochs = cfg.epochs or 1, nb = nb, print_every = cfg.print_every or 50,
    rng = model:random_stream(),          -- the Dropouts' stream, saved with each checkpoint
    step = 0, epoch = 0, batch = 0, skipped = 0, losses = {},
    data_wait = 0,                        -- seconds spent waiting for batches
    tty = sys.isatty(1) and not cfg.quiet and rank == 0,
    quiet = cfg.quiet or rank ~= 0,
    rank = rank, world = world, root = rank == 0, writer = rank == 0,
    precision = precision, low = LOW[precision] or nil, scaler = scaler,
    -- the casts' buffers (reused while the shapes stay), kept as a module's
    casts = { buffers = {}, device = first and first:device() or "cpu" },
  }
  if scaler then
    -- the model's gradients carry the scale (the head's do not)
    local _, grads = model:parameters()
    st.scaled_grads = grads
  end
  if world > 1 then
    -- a class-sharded head's loss is the global batch's: the ranks' gradients add up
    st.reducer = dist.data_parallel({ model, cfg.head }, { bucket_mb = cfg.bucket_mb,
      op = dist.is_sharded(cfg.head) and "sum" or "avg", dtype = wire })
    st.loss_buf = tensor.zeros({ 1 })
    if cfg.sync_bn then
      local BN = require "facet.nn.BatchNorm"
      local function walk(m)
        local cls = getmetatable(m)
        if cls == BN.BatchNorm1d or cls == BN.BatchNorm2d then m.sync = dist.world() end
        for _, c in ipairs(m:children()) do walk(c) end
      end
      walk(model)
    end
  end
  st.total_steps = st.epochs * nb
  st.state_guard = state_guard(model, st.head)
  -- the input is data: its gradient is never used
  model:first_leaf().no_input_grad = true
  return st
end

-- continues from the checkpoint dir/latest names: weights, optimizer,
-- generator and dropout positions, the place in the epoch
local function resume(st, dir)
  local info = checkpoint.load(dir, st.model, st.head, st.optimizer)
  st.step, st.epoch, st.batch, st.skipped = info.step, info.epoch, info.batch, info.skipped or 0
  if st.scaler and type(info.amp) == "table" then st.scaler:load_state(info.amp) end
  tensor.generator_state { seed = info.rng_seed, offset = info.rng_offset }
  if st.rng and info.dropout_offset then st.rng.seed, st.rng.offset = info.dropout_seed or st.rng.seed, info.dropout_offset end
end

local function open_log(st, dir)
  if not st.root then return end
  local ok, err = sys.mkdir_p(dir)
  if not ok then error("facet.train: " .. err, 3) end
  st.logf = assert(io.open(dir .. "/train.jsonl", st.cfg.resume and "ab" or "wb"))
end

local function log(st, entry)
  if st.logf then
    st.logf:write(json.encode(entry), "\n")
    st.logf:flush()
  end
end

local function close_log(st)
  if st.logf then st.logf:close() end
  st.logf = nil
end

-- every rank calls it (a class-sharded head gathers its blocks); rank 0 writes
local function save(st)
  checkpoint.save(st.cfg.checkpoint, st)
  st.saved_step = st.step
end

-- the metrics of cfg.eval, computed in evaluation mode
local function evaluate(st)
  st.model:evaluate()
  local metrics = st.cfg.eval(st)
  st.model:train()
  return metrics
end

-- Module:buffer on the run's own table of buffers (st.casts), past the self check
local buffer_of = valid.unwrap(Module.buffer)

-- t copied into the run's buffer `key` of the given dtype
local function cast(st, key, t, dtype)
  local b = buffer_of(st.casts, key, t:shape(), dtype)
  b:copy(t)
  return b
end

-- the embedding's gradient g (float32, from the head) for the model's
-- backward: times the loss scale (fp16, in place: g is the head's), in the
-- model's dtype
local function low_grad(st, g)
  if not st.low then return g end
  if st.scaler then st.scaler:scale_grad(g) end
  -- a model whose last layers run in float32 (Module:set_fp32) wants it as it is
  if st.emb_dtype == "float32" then return g end
  return cast(st, "grad", g, st.emb_dtype)
end

-- forward, backward and the guards of one batch; returns the loss, the gradient
-- norm (when computed), what went wrong (nil when nothing did) and, for fp16,
-- true when the gradients overflowed (the step is to be skipped)
local function forward_backward(st, x, y)
  local cfg, model, head = st.cfg, st.model, st.head
  -- the last step's update zeroed the gradients already (step_zero_grad)
  if not st.grads_zero then st.optimizer:zero_grad() end
  st.grads_zero = false
  save_state(st.state_guard)
  local low = st.low
  if low then x = cast(st, "x", x, low) end
  local emb = model:forward(x)
  if low then
    st.emb_dtype = emb:dtype()
    if st.emb_dtype ~= "float32" then emb = cast(st, "emb", emb, "float32") end
  end
  local loss = head:forward(emb, y)
  local r = st.reducer
  if r then
    -- every rank guards and logs the loss of the global batch
    st.loss_buf:fill_(loss)
    dist.allreduce(st.loss_buf, "avg")
    loss = st.loss_buf:item()
  end
  if not is_finite(loss) then return loss, nil, "loss is " .. tostring(loss) end
  if r then
    r:begin()
    local g = head:backward()
    r:ready(head)
    model:backward(x, low_grad(st, g))
    r:finish()
  else
    model:backward(x, low_grad(st, head:backward()))
  end
  if st.scaler then
    -- fp16: back to true gradients before clipping and the guard
    local finite = st.scaler:unscale(st.scaled_grads)
    local what = st.scaler:update()
    if what == "skipped" then return loss, nil, nil, true end
    if what == "diverged" then
      return loss, nil, ("gradients are not finite at the smallest loss scale (%g)"):format(st.scaler.scale)
    end
    assert(finite)
  end
  local gnorm
  if cfg.clip then gnorm = st.optimizer:clip_grad_norm(cfg.clip)
  elseif cfg.check_grads ~= false then gnorm = st.optimizer:grad_norm() end
  if gnorm and not is_finite(gnorm) then return loss, gnorm, "gradient norm is " .. tostring(gnorm) end
  return loss, gnorm
end

local function eta_text(eta)
  return eta >= 60 and ("%dm%02ds"):format(math.floor(eta / 60), math.floor(eta % 60)) or ("%.0fs"):format(eta)
end

-- the log entry of a good step, evaluation included, and the progress line
local function report(st, loss, gnorm, progress, batch_size)
  local cfg, opt, now = st.cfg, st.optimizer, clock()
  st.imgs_since = st.imgs_since + batch_size * st.world
  local ips = st.imgs_since / math.max(now - st.t_last, 1e-9)
  local entry = { step = st.step, epoch = progress + 1 / st.nb, loss = loss, lr = opt.lr, images_per_s = ips,
    time = now - st.t_start, data_wait = st.data_wait / math.max(now - st.t_start, 1e-9) }
  if gnorm then entry.grad_norm = gnorm end
  if st.scaler then entry.loss_scale, entry.overflow_skipped = st.scaler.scale, st.scaler.skipped end
  if cfg.eval and cfg.eval_every and st.step % cfg.eval_every == 0 then
    entry.eval = evaluate(st)
    st.grads_zero = false   -- the user's evaluation may have run a backward
    -- printed as well as logged: "eval step 2000: agedb_30 0.9512  lfw 0.9950"
    if not st.quiet and type(entry.eval) == "table" then
      local names, parts = {}, {}
      for k, v in pairs(entry.eval) do if type(v) == "number" then names[#names + 1] = tostring(k) end end
      table.sort(names)
      for _, k in ipairs(names) do parts[#parts + 1] = ("%s %.4f"):format(k, entry.eval[k]) end
      if #parts > 0 then
        if st.tty then io.write("\n") end
        print(("eval step %d: %s"):format(st.step, table.concat(parts, "  ")))
      end
    end
  end
  log(st, entry)
  local eta = (now - st.t_start) / math.max(st.step - st.start_step, 1) * (st.total_steps - st.step)
  local line = ("step %d  epoch %d/%d  loss %.4f  lr %.4g  %.1f img/s  ETA %s"):format(st.step, st.epoch + 1,
    st.epochs, loss, opt.lr, ips, eta_text(eta))
  if st.tty then
    io.write("\r", line, "   ")
    io.flush()
  elseif not st.quiet and (st.step % st.print_every == 0 or st.step >= st.total_steps or
      st.step == st.start_step + 1 or st.step == cfg.stop_after or now - st.t_print >= PRINT_SECONDS) then
    -- off a terminal: the first step, every print_every, the last, and at least every PRINT_SECONDS
    print(line)
    st.t_print = now
  end
  if st.step % st.print_every == 0 then st.t_last, st.imgs_since = now, 0 end
end

-- batch i of the current epoch; returns an error message when training must stop
local function train_step(st, i)
  local cfg, opt = st.cfg, st.optimizer
  local t_data = clock()
  local x, y = st.data:batch(st.epoch, i)
  st.data_wait = st.data_wait + (clock() - t_data)
  local progress = st.epoch + (i - 1) / st.nb
  if cfg.schedule then opt.lr = cfg.schedule(progress) end
  local ok, loss, gnorm, bad, overflow = pcall(forward_backward, st, x, y)
  if not ok then
    -- an error inside the model or the head: the state goes back, the error on
    restore_state(st.state_guard)
    error(loss, 0)
  end
  st.step, st.batch = st.step + 1, i
  if bad or overflow then restore_state(st.state_guard) end
  if overflow then
    -- the expected fp16 overflow: the scaler halved the scale; nothing moves
    opt:zero_grad()
    st.grads_zero = true
    log(st, { step = st.step, epoch = progress, skipped = true, reason = "fp16 overflow",
      loss_scale = st.scaler.scale, overflow_skipped = st.scaler.skipped })
  elseif not bad then
    -- nothing reads the gradients after the update: it zeroes them in the same pass
    if opt.step_zero_grad then
      opt:step_zero_grad()
      st.grads_zero = true
    else
      opt:step()
    end
    st.losses[#st.losses + 1] = loss
    report(st, loss, gnorm, progress, x:size(1))
  elseif cfg.nan == "skip" then
    st.skipped = st.skipped + 1
    opt:zero_grad()
    st.grads_zero = true
    log(st, { step = st.step, epoch = progress, skipped = true, reason = bad })
    if not st.quiet then io.stderr:write(("facet.train: step %d skipped: %s\n"):format(st.step, bad)) end
  else
    return ("facet.train: step %d (epoch %d, batch %d): %s; stopped before updating the weights " ..
      "(nan = \"skip\" skips such steps)"):format(st.step, st.epoch + 1, i, bad)
  end
end

local function result(st, stopped)
  close_log(st)
  local secs = math.max(clock() - st.t_start, 1e-9)
  return { steps = st.step, steps_run = st.step - st.start_step, seconds = secs, losses = st.losses,
    skipped = st.skipped, stopped = stopped or nil, data_wait = st.data_wait / secs,
    loss_scale = st.scaler and st.scaler.scale or nil, overflow_skipped = st.scaler and st.scaler.skipped or nil }
end

-- the loop of M.train; returns result(st), or nil and why training stopped
local function run(st)
  local cfg = st.cfg
  st.model:train()
  while st.epoch < st.epochs do
    for i = st.batch + 1, st.nb do
      local err = train_step(st, i)
      if err then
        close_log(st)
        return nil, err
      end
      if cfg.checkpoint and cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 then save(st) end
      if cfg.stop_after and st.step >= cfg.stop_after then
        -- a run stopped early still leaves its last step behind
        if cfg.checkpoint and st.saved_step ~= st.step then save(st) end
        return result(st, true)
      end
    end
    st.epoch, st.batch = st.epoch + 1, 0
    if st.tty then io.write("\n") end
    if cfg.checkpoint then save(st) end
  end
  return result(st)
end

function M.train(cfg)
  local st = setup(cfg)
  if cfg.resume then
    resume(st, cfg.resume)
    st.saved_step = st.step
    if not st.quiet then
      print(("facet.train: resumed from step %d (epoch %d, batch %d of %d) of %s"):format(st.step, st.epoch + 1,
        st.batch, st.nb, cfg.resume))
    end
  end
  if cfg.log then open_log(st, cfg.log) end
  if cfg.checkpoint and st.root then
    local ok, err = sys.mkdir_p(cfg.checkpoint)
    if not ok then error("facet.train: " .. err, 2) end
  end
  if st.reducer then
    -- every rank starts from rank 0's weights, then averages its gradients
    st.reducer:broadcast(0)
    st.reducer:hook()
  end
  st.start_step = st.step
  st.t_start = clock()
  st.t_last, st.imgs_since, st.t_print = st.t_start, 0, st.t_start
  if st.reducer then
    local ok, res, stop = pcall(run, st)
    st.reducer:unhook()
    if not ok then
      close_log(st)
      -- a failure of one rank alone would leave the others in their next collective
      dist.abort(res)
    end
    -- a stop on the averaged loss or gradient norm happens on every rank alike
    if stop then error(stop, 2) end
    return res
  end
  local res, stop = run(st)
  if stop then error(stop, 2) end
  return res
end

--- Loads the checkpoint dir/latest into model, head and optimizer; returns trainer.json's table.
M.load_checkpoint = checkpoint.load

return M
