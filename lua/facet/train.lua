--- facet.train{ ... }: the training loop.
--   facet.train{ model = net, head = head, data = source, optimizer = opt,
--                schedule = sched, epochs = 12, checkpoint = "run/ckpt", log = "run",
--                resume = "run/ckpt", nan = "stop" | "skip", clip = max_norm,
--                eval = function(state) return { lfw = 0.99 } end, eval_every = steps,
--                print_every = steps, checkpoint_every = steps, quiet = false }
-- One step: zero_grad, head:forward(model:forward(x), y), backward through both,
-- the guard on the loss and the gradient norm, optional clipping, optimizer
-- step; the learning rate follows schedule(progress in epochs).
-- Progress: one line updated in place on a terminal (step, epoch, loss, lr,
-- images/s, ETA), plain lines otherwise. Logs: log/train.jsonl, one JSON object
-- per line (step, epoch, loss, lr, images_per_s, time, and eval metrics).
-- Checkpoints: checkpoint/step-NNNNNNNN/ holds model.safetensors (model and
-- head weights, BatchNorm statistics), optim.safetensors (optimizer buffers)
-- and trainer.json (step, epoch position, RNG positions, optimizer settings);
-- the directory is written under a temporary name, fsync'ed and renamed, then
-- checkpoint/latest names it, so a crash mid-save leaves the previous one intact.
-- resume = dir continues from dir/latest; on the CPU with the same seed and
-- thread count the losses are those of the uninterrupted run, bit for bit.
local cjson = require "cjson"
local tensor = require "facet.tensor"
local safetensors = require "facet.safetensors"
local sys = require "facet.sys"

local M = {}

local clock = sys.clock

local function mkdir(path)
  local ok, err = sys.mkdir_p(path)
  if not ok then error("facet.train: " .. err, 3) end
end

local function write_atomic(path, text)
  local ok, err = sys.write_atomic(path, text)
  if not ok then error("facet.train: " .. err, 3) end
end

local function rm_rf(path)
  local ok, err = sys.rm_rf(path)
  if not ok then error("facet.train: " .. err, 3) end
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- the weights of model and head as one name -> tensor table
local function weights(model, head)
  local t = model:state_dict()
  if head then
    t["head.weight"] = head.weight
    if head.bias then t["head.bias"] = head.bias end
    if head.alpha then t["head.alpha"] = head.alpha end
  end
  return t
end

local function save_checkpoint(dir, st)
  local name = ("step-%08d"):format(st.step)
  local tmpdir = dir .. "/." .. name .. ".tmp"
  rm_rf(tmpdir)
  mkdir(tmpdir)
  if st.head and st.head.fused then st.head:finish_grad() end
  safetensors.save(weights(st.model, st.head), tmpdir .. "/model.safetensors")
  local ostate = st.optimizer:state()
  safetensors.save(ostate.tensors, tmpdir .. "/optim.safetensors")
  local info = {
    step = st.step, epoch = st.epoch, batch = st.batch, optimizer = ostate.name, step_count = ostate.step_count,
    settings = ostate.settings, rng_offset = tensor.generator_state().offset, rng_seed = tensor.generator_state().seed,
    dropout_seed = st.rng and st.rng.seed, dropout_offset = st.rng and st.rng.offset, head_iter = st.head and st.head.iter or 0,
    skipped = st.skipped,
  }
  write_atomic(tmpdir .. "/trainer.json", cjson.encode(info))
  rm_rf(dir .. "/" .. name)
  local ok, err = os.rename(tmpdir, dir .. "/" .. name)
  if not ok then error(("facet.train: cannot rename %s: %s"):format(tmpdir, err), 2) end
  write_atomic(dir .. "/latest", name .. "\n")
  -- keep the two newest
  if st.previous and st.previous ~= name then
    if st.older then rm_rf(dir .. "/" .. st.older) end
    st.older = st.previous
  end
  st.previous = name
end

--- Loads the checkpoint dir/latest into model, head and optimizer; returns trainer.json's table.
function M.load_checkpoint(dir, model, head, optimizer)
  local latest = read_file(dir .. "/latest")
  if not latest then error(("facet.train: no checkpoint in %s (no 'latest' file)"):format(dir), 2) end
  local path = dir .. "/" .. latest:gsub("%s+$", "")
  local info_text = read_file(path .. "/trainer.json")
  if not info_text then error(("facet.train: %s has no trainer.json"):format(path), 2) end
  local info = cjson.decode(info_text)
  local w = safetensors.load(path .. "/model.safetensors")
  local mine = {}
  for name, t in pairs(w) do
    if name:sub(1, 5) == "head." then
      if head then head[name:sub(6)]:copy(t) end         -- evaluation loads the model alone
    else
      mine[name] = t
    end
  end
  model:load_state(mine)
  if optimizer then
    local tensors = safetensors.load(path .. "/optim.safetensors")
    optimizer:load_state { name = info.optimizer, step_count = info.step_count, settings = info.settings, tensors = tensors }
  end
  if head then head.iter = info.head_iter or head.iter end
  return info
end

local function is_finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

-- one JSON object per log line; numbers with 17 digits so doubles round-trip
-- (Debian's lua-cjson stops at 14), non-finite numbers as null
local function json(v)
  local t = type(v)
  if t == "number" then
    if not is_finite(v) then return "null" end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
    return ("%.17g"):format(v)
  elseif t == "string" then return cjson.encode(v)
  elseif t == "boolean" then return tostring(v)
  elseif t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = cjson.encode(k) .. ":" .. json(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end

function M.train(cfg)
  if type(cfg) ~= "table" then error("facet.train{ model =, head =, data =, optimizer =, epochs = }", 2) end
  for _, k in ipairs { "model", "head", "data", "optimizer" } do
    if cfg[k] == nil then error(("facet.train: %s is required"):format(k), 2) end
  end
  local model, head, data, opt = cfg.model, cfg.head, cfg.data, cfg.optimizer
  local epochs = cfg.epochs or 1
  local nb = data:num_batches()
  if nb < 1 then error("facet.train: the data source has no batches", 2) end
  local st = { model = model, head = head, optimizer = opt, step = 0, epoch = 0, batch = 0, skipped = 0,
    rng = model:random_stream() }
  if cfg.resume then
    local info = M.load_checkpoint(cfg.resume, model, head, opt)
    st.step, st.epoch, st.batch, st.skipped = info.step, info.epoch, info.batch, info.skipped or 0
    tensor.generator_state { seed = info.rng_seed, offset = info.rng_offset }
    if st.rng and info.dropout_offset then st.rng.seed, st.rng.offset = info.dropout_seed or st.rng.seed, info.dropout_offset end
  end
  local logf
  if cfg.log then
    mkdir(cfg.log)
    logf = assert(io.open(cfg.log .. "/train.jsonl", cfg.resume and "ab" or "wb"))
  end
  if cfg.checkpoint then mkdir(cfg.checkpoint) end
  local tty = sys.isatty(1) and not cfg.quiet
  local print_every = cfg.print_every or 50
  local grads = opt:gradients()
  local start_step = st.step
  -- the input is data: its gradient is never used
  model:first_leaf().no_input_grad = true
  local t_start, t_last, imgs_since = clock(), clock(), 0
  local data_wait = 0          -- seconds spent waiting for batches
  local total_steps = epochs * nb
  local losses = {}
  model:train()
  local function log(entry)
    if logf then
      logf:write(json(entry), "\n")
      logf:flush()
    end
  end
  while st.epoch < epochs do
    for i = st.batch + 1, nb do
      local t_data = clock()
      local x, y = data:batch(st.epoch, i)
      data_wait = data_wait + (clock() - t_data)
      local progress = st.epoch + (i - 1) / nb
      if cfg.schedule then opt.lr = cfg.schedule(progress) end
      opt:zero_grad()
      local emb = model:forward(x)
      local loss = head:forward(emb, y)
      local bad = not is_finite(loss) and ("loss is " .. tostring(loss)) or nil
      local gnorm
      if not bad then
        model:backward(x, head:backward())
        if head.fused then head:finish_grad() end
        if cfg.clip then gnorm = require("facet.optim").clip_grad_norm(grads, cfg.clip)
        elseif cfg.check_grads ~= false then gnorm = require("facet.optim").grad_norm(grads) end
        if gnorm and not is_finite(gnorm) then bad = "gradient norm is " .. tostring(gnorm) end
      end
      st.step, st.batch = st.step + 1, i
      if bad then
        if cfg.nan == "skip" then
          st.skipped = st.skipped + 1
          opt:zero_grad()
          log { step = st.step, epoch = progress, skipped = true, reason = bad }
          if not cfg.quiet then io.stderr:write(("facet.train: step %d skipped: %s\n"):format(st.step, bad)) end
        else
          if logf then logf:close() end
          error(("facet.train: step %d (epoch %d, batch %d): %s; stopped before updating the weights " ..
            "(nan = \"skip\" skips such steps)"):format(st.step, st.epoch + 1, i, bad), 2)
        end
      else
        opt:step()
        losses[#losses + 1] = loss
        imgs_since = imgs_since + x:size(1)
        local now = clock()
        local ips = imgs_since / math.max(now - t_last, 1e-9)
        local entry = { step = st.step, epoch = progress + 1 / nb, loss = loss, lr = opt.lr, images_per_s = ips,
          time = now - t_start, data_wait = data_wait / math.max(now - t_start, 1e-9) }
        if gnorm then entry.grad_norm = gnorm end
        if cfg.eval and cfg.eval_every and st.step % cfg.eval_every == 0 then
          model:evaluate()
          entry.eval = cfg.eval(st)
          model:train()
        end
        log(entry)
        local done = st.step / total_steps
        local eta = (now - t_start) / math.max(st.step - start_step, 1) * (total_steps - st.step)
        local line = ("step %d  epoch %d/%d  loss %.4f  lr %.4g  %.1f img/s  ETA %s"):format(st.step, st.epoch + 1,
          epochs, loss, opt.lr, ips, eta >= 60 and ("%dm%02ds"):format(math.floor(eta / 60), math.floor(eta % 60))
          or ("%.0fs"):format(eta))
        if tty then
          io.write("\r", line, "   ")
          io.flush()
        elseif not cfg.quiet and (st.step % print_every == 0 or done >= 1) then
          print(line)
        end
        if st.step % print_every == 0 then t_last, imgs_since = now, 0 end
      end
      if cfg.checkpoint and cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 then
        save_checkpoint(cfg.checkpoint, st)
      end
      if cfg.stop_after and st.step >= cfg.stop_after then
        if logf then logf:close() end
        return { steps = st.step, losses = losses, skipped = st.skipped, stopped = true,
          data_wait = data_wait / math.max(clock() - t_start, 1e-9) }
      end
    end
    st.epoch, st.batch = st.epoch + 1, 0
    if tty then io.write("\n") end
    if cfg.checkpoint then save_checkpoint(cfg.checkpoint, st) end
  end
  if logf then logf:close() end
  return { steps = st.step, losses = losses, skipped = st.skipped, data_wait = data_wait / math.max(clock() - t_start, 1e-9) }
end

return M
