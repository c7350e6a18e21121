--- facet.checkpoint: training checkpoints on disk (facet.train writes them).
--   checkpoint.save(dir, state) -> name        dir/step-NNNNNNNN/, then dir/latest names it
--   checkpoint.latest(dir) -> path | nil       the checkpoint dir/latest names
--   checkpoint.load(dir, model [, head [, optimizer]]) -> info   (trainer.json's table)
--   checkpoint.info(dir) -> info | nil, why   trainer.json alone (with model/head = { name, opts })
-- dir is a run's checkpoint directory (its 'latest' names the newest) or one
-- step-NNNNNNNN directory of it.
--   checkpoint.prune(dir [, keep = 2])         removes all but the keep newest
-- state: model, head, optimizer, rng (the model's random stream), step,
-- epoch, batch (the position in the epoch), skipped.
-- A checkpoint holds model.safetensors (model and head weights, BatchNorm
-- statistics: "head.weight" ... beside the model's names; the adaptive heads'
-- state: CurricularFace's "head.t", AdaFace's "head.batch_mean" and "head.batch_std"), optim.safetensors
-- (optimizer buffers) and trainer.json (step, epoch and batch position, the
-- generator and dropout positions, optimizer settings). It is written under a
-- temporary name (.step-NNNNNNNN.tmp), fsync'ed and renamed, then latest is
-- replaced the same way, so a crash mid-save leaves the previous one intact.
-- Paths go to the C library as they are: no shell ever sees them.
-- load is all or nothing: every file is read and everything checked (the
-- model's names, shapes and dtypes, the head's tensors, the optimizer's
-- state) before the first copy, so a checkpoint it refuses changes nothing.
local tensor = require "facet.tensor"
local safetensors = require "facet.safetensors"
local json = require "facet.json"
local sys = require "facet.sys"
local valid = require "facet.check"

local M = {}

local function must(ok, err)
  if not ok then error("facet.checkpoint: " .. tostring(err), 3) end
  return ok
end

local function read_file(path) return (sys.read_file(path)) end

-- the weights of model and head as one name -> tensor table; a class-sharded
-- head (facet.heads.sharded) gives its full tensors (gathered: a collective)
local function weights(model, head)
  local t = model:state_dict()
  if head then
    local h = head.state_dict and head:state_dict() or { weight = head.weight, bias = head.bias, alpha = head.alpha }
    -- and its state (CurricularFace's t, AdaFace's statistics) when it has any
    if not head.state_dict and head.state_tensors then
      for k, v in pairs(head:state_tensors()) do h[k] = v end
    end
    for k, v in pairs(h) do t["head." .. k] = v end
  end
  return t
end

-- "head.<name>" -> { shape text, dtype } of the head's tensors in a checkpoint
-- (a class-sharded head's full shapes, without gathering anything)
local function head_layout(head)
  local out, rows = {}, head.state_dict and head.classes or nil
  local function add(k, t, full)
    if not t then return end
    local s = t:shape()
    if full then s[1] = full end
    out["head." .. k] = { table.concat(s, "x"), t:dtype() }
  end
  add("weight", head.weight, rows and rows * (head.subcenters or 1))   -- K k rows with sub-centres
  add("bias", head.bias, rows)
  add("alpha", head.alpha)
  -- the adaptive heads' state (CurricularFace's t, AdaFace's norm statistics)
  if head.state_tensors then for k, v in pairs(head:state_tensors()) do add(k, v) end end
  return out
end

local function step_of(name) return tonumber(name:match("^step%-(%d+)$")) end

--- The name dir/latest holds (step-NNNNNNNN), or nil.
local function latest_name(dir)
  local text = read_file(dir .. "/latest")
  return text and text:gsub("%s+$", "") or nil
end

--- The directory of the checkpoint dir/latest names, or nil when there is none.
function M.latest(dir)
  valid.string("facet.checkpoint.latest", "dir", dir)
  local name = latest_name(dir)
  return name and (dir .. "/" .. name) or nil
end

-- The checkpoint a path names: dir/latest's, or dir itself when it is one
-- (a step-NNNNNNNN directory holding trainer.json).
local function resolve(dir)
  local path = M.latest(dir)
  if path then return path end
  if sys.exists(dir .. "/trainer.json") then return dir end
  return nil
end

--- trainer.json of the checkpoint dir names (dir with 'latest', or a
-- step-NNNNNNNN directory): step, epoch, model = { name, opts }, head = ...;
-- nil and why when there is none.
function M.info(dir)
  valid.string("facet.checkpoint.info", "dir", dir)
  local path = resolve(dir)
  if not path then return nil, ("no checkpoint in %s (no 'latest' file, no trainer.json)"):format(dir) end
  local text = read_file(path .. "/trainer.json")
  if not text then return nil, ("%s has no trainer.json"):format(path) end
  local ok, info = pcall(json.decode, text)
  if not ok or type(info) ~= "table" then return nil, ("%s/trainer.json does not parse"):format(path) end
  info.path = path
  return info
end

--- Removes the checkpoints of dir but the keep newest (the one latest names
-- always stays), and what a save cut short left behind (.step-*.tmp).
function M.prune(dir, keep)
  valid.string("facet.checkpoint.prune", "dir", dir)
  valid.number("facet.checkpoint.prune", "keep", keep, { min = 0, finite = false, optional = true })
  keep = keep or 2
  local names = must(sys.list_dir(dir))
  local latest, steps = latest_name(dir), {}
  for _, name in ipairs(names) do
    if step_of(name) then
      steps[#steps + 1] = name
    elseif name:match("^%.step%-%d+%.tmp$") then
      must(sys.rm_rf(dir .. "/" .. name))
    end
  end
  table.sort(steps, function(a, b) return step_of(a) < step_of(b) end)
  for i = 1, #steps - keep do
    if steps[i] ~= latest then must(sys.rm_rf(dir .. "/" .. steps[i])) end
  end
end

--- Writes state as dir/step-NNNNNNNN (made atomically), points dir/latest at
-- it and prunes to the two newest (state.keep to change that). Returns the name.
-- With a class-sharded head every rank calls it (the head and its optimizer
-- state are gathered first); state.writer = false gathers without writing
-- (facet.train's ranks but 0), and returns nil.
function M.save(dir, st)
  valid.string("facet.checkpoint.save", "dir", dir)
  valid.table("facet.checkpoint.save", "state", st)
  if type(st.model) ~= "table" or type(st.model.state_dict) ~= "function" then
    valid.fail("facet.checkpoint.save", "state.model must be a model (a table with state_dict()), got " ..
      valid.describe(st.model))
  end
  if type(st.step) ~= "number" then valid.integer("facet.checkpoint.save", "state.step", st.step, { min = 0 }) end
  local w = weights(st.model, st.head)
  local ostate = st.optimizer and st.optimizer:state() or {}
  if st.writer == false then return nil end
  must(sys.mkdir_p(dir))
  local name = ("step-%08d"):format(st.step)
  local tmpdir = dir .. "/." .. name .. ".tmp"
  must(sys.rm_rf(tmpdir))
  must(sys.mkdir_p(tmpdir))
  safetensors.save(w, tmpdir .. "/model.safetensors")
  if st.optimizer then safetensors.save(ostate.tensors, tmpdir .. "/optim.safetensors") end
  local gen = tensor.generator_state()
  local info = {
    step = st.step, epoch = st.epoch, batch = st.batch, optimizer = ostate.name, step_count = ostate.step_count,
    settings = ostate.settings, rng_offset = gen.offset, rng_seed = gen.seed,
    dropout_seed = st.rng and st.rng.seed, dropout_offset = st.rng and st.rng.offset, head_iter = st.head and st.head.iter or 0,
    skipped = st.skipped,
    amp = st.scaler and st.scaler:state_dict() or nil,   -- fp16 training's loss scaler (facet.train)
    -- how the model and head were built (facet.models / facet.heads record it), so that
    -- evaluation, export and embedding need only the checkpoint (facet.backbone)
    model = type(st.model) == "table" and st.model.spec or nil,
    head = type(st.head) == "table" and st.head.spec or nil,
  }
  must(sys.write_atomic(tmpdir .. "/trainer.json", json.encode(info)))
  must(sys.rm_rf(dir .. "/" .. name))
  must(sys.rename(tmpdir, dir .. "/" .. name))
  must(sys.write_atomic(dir .. "/latest", name .. "\n"))
  M.prune(dir, st.keep)
  return name
end

--- Loads the checkpoint dir/latest names into model, and head and optimizer
-- when given (evaluation loads the model alone); returns trainer.json's table.
function M.load(dir, model, head, optimizer)
  valid.string("facet.load_checkpoint", "dir", dir)
  valid.module("facet.load_checkpoint", "model", model)
  local path = resolve(dir)
  if not path then
    error(("facet.checkpoint: no checkpoint in %s (no 'latest' file, no trainer.json)"):format(dir), 2)
  end
  local info_text = read_file(path .. "/trainer.json")
  if not info_text then error(("facet.checkpoint: %s has no trainer.json"):format(path), 2) end
  local ok, info = pcall(json.decode, info_text)
  if not ok or type(info) ~= "table" then
    error(("facet.checkpoint: %s/trainer.json does not parse: %s"):format(path, tostring(info)), 2)
  end
  -- read and check everything first
  local w = safetensors.load(path .. "/model.safetensors")
  local mine, theirs = {}, {}
  for name, t in pairs(w) do
    if name:sub(1, 5) == "head." then theirs[name:sub(6)] = t else mine[name] = t end
  end
  local function refuse(msg) error("facet.checkpoint: " .. path .. ": " .. tostring(msg):gsub("^[^\n]-%.lua:%d+: ", ""), 3) end
  local good, err = pcall(model.check_state, model, mine)
  if not good then refuse(err) end
  if head then
    local want = head_layout(head)
    for name, t in pairs(want) do
      local src = theirs[name:sub(6)]
      if src == nil then refuse(name .. " is missing") end
      if table.concat(src:shape(), "x") ~= t[1] or src:dtype() ~= t[2] then
        refuse(("%s is %s %s in the checkpoint, %s %s in the head"):format(name, table.concat(src:shape(), "x"),
          src:dtype(), t[1], t[2]))
      end
    end
    for name in pairs(theirs) do
      if want["head." .. name] == nil then refuse("the checkpoint has head." .. name .. ", which the head does not") end
    end
  end
  local ostate
  if optimizer then
    ostate = { name = info.optimizer, step_count = info.step_count, settings = info.settings,
      tensors = safetensors.load(path .. "/optim.safetensors") }
    good, err = pcall(optimizer.check_state, optimizer, ostate)
    if not good then refuse(err) end
  end
  -- then copy
  model:load_state(mine)
  if head then
    -- a class-sharded head takes its rows of the full tensors
    if head.load_state_dict then head:load_state_dict(theirs)
    else for name, t in pairs(theirs) do head[name]:copy(t) end end
    if head.weight_changed then head:weight_changed(false) end
    head.iter = info.head_iter or head.iter
  end
  if optimizer then optimizer:load_state(ostate) end
  return info
end

return M
