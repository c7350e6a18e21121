--- The training loop: logs, the NaN/Inf guard, checkpoints that survive a
-- crash mid-save, and resume reproducing the uninterrupted run exactly.
local H = require "support.device"
local facet = H.facet
local cjson = require "cjson"

local tmpdir
setup(function() tmpdir = H.temp_dir() end)
teardown(function() H.remove_dir(tmpdir) end)

-- a fresh, identically seeded setup (every run builds its own objects)
local function setup_run(opts)
  opts = opts or {}
  facet.manual_seed(11)
  local nn = facet.nn
  local net = nn.Sequential(facet.models.convnet { emb = 16, size = 12 }, nn.Dropout(0.2))
  local head = facet.heads.new(opts.head or "mv-arc", { classes = 6, dim = 16, seed = 3 })
  local X = facet.randn({ 48, 1, 12, 12 }, { seed = 4 })
  if opts.poison then X:narrow(1, 1, 48):select(2, 1):fill_(0 / 0) end
  local labels = {}
  for i = 1, 48 do labels[i] = (i * 5) % 6 end
  local data = facet.data.tensors { x = X, y = facet.tensor(labels, { dtype = "int64" }), batch_size = 8, seed = 9 }
  if opts.device and opts.device ~= "cpu" then net, head = net:to(opts.device), head:to(opts.device) end
  local opt = facet.optim.sgd({ net, head }, { lr = 0.05, momentum = 0.9, weight_decay = 5e-4 })
  return { model = net, head = head, data = data, optimizer = opt, epochs = 2, quiet = true,
    schedule = facet.optim.schedule.multistep { lr = 0.05, milestones = { 1 } } }
end

local function with(cfg, extra)
  for k, v in pairs(extra) do cfg[k] = v end
  return cfg
end

describe("facet.train", function()
  it("writes JSON-lines logs with step, epoch, loss, lr, images/s and time", function()
    local r = facet.train(with(setup_run(), { log = tmpdir .. "/log1" }))
    assert.are.equal(12, r.steps)
    local f = assert(io.open(tmpdir .. "/log1/train.jsonl"))
    local n = 0
    for line in f:lines() do
      local e = cjson.decode(line)
      n = n + 1
      assert.are.equal(n, e.step)
      assert.is_number(e.loss); assert.is_number(e.lr); assert.is_number(e.images_per_s); assert.is_number(e.time)
      H.assert_close(e.lr, n <= 6 and 0.05 or 0.005, 1e-12)
      assert.are.equal(r.losses[n], e.loss)
    end
    f:close()
    assert.are.equal(12, n)
  end)

  it("is deterministic: the same seed and threads give the same losses", function()
    local a = facet.train(setup_run())
    local b = facet.train(setup_run())
    assert.are.same(a.losses, b.losses)
    assert.is_true(a.losses[#a.losses] < a.losses[1])
  end)

  it("resume reproduces the uninterrupted run's losses exactly", function()
    local full = facet.train(setup_run())
    local dir = tmpdir .. "/ck"
    -- interrupted after step 8 (mid-epoch 2): checkpoints at 3 and 6, and step 8, where it stopped
    facet.train(with(setup_run(), { checkpoint = dir, checkpoint_every = 3, stop_after = 8 }))
    local latest = io.open(dir .. "/latest"):read("*l")
    assert.are.equal("step-00000008", latest)
    assert.truthy(io.open(dir .. "/step-00000006/trainer.json"), "step 6 kept")
    local resumed = facet.train(with(setup_run(), { resume = dir }))
    assert.are.equal(12, resumed.steps)
    assert.are.equal(4, resumed.steps_run)
    assert.are.equal(4, #resumed.losses)
    for i = 1, 4 do assert.are.equal(full.losses[8 + i], resumed.losses[i]) end
    -- from an older checkpoint too: step 6
    local f = assert(io.open(dir .. "/latest", "w")); f:write("step-00000006\n"); f:close()
    local from6 = facet.train(with(setup_run(), { resume = dir }))
    assert.are.equal(6, #from6.losses)
    for i = 1, 6 do assert.are.equal(full.losses[6 + i], from6.losses[i]) end
  end)

  it("dropout draws from the model's own stream, saved with each checkpoint", function()
    local nn = facet.nn
    local function net() return nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 8), nn.Dropout(0.3)) end
    local x = facet.randn({ 4, 8 }, { seed = 1 })
    local a = net()
    local first = H.values(a.modules[1]:forward(x))
    a.modules[1]:forward(x)                          -- a moves on ...
    local b = net()                                  -- ... which a new model does not see
    assert.are.same(first, H.values(b.modules[1]:forward(x)))
    local s = b:random_stream()
    assert.are.equal(s, b.modules[1].rng)
    assert.are.equal(s, b.modules[3].rng)          -- one stream for the model's Dropouts
    assert.are.equal(32, s.offset)                   -- the first Dropout's position goes on
    assert.is_nil(nn.Sequential(nn.Linear(2, 2)):random_stream())
    local dir = tmpdir .. "/drop"
    local cfg = with(setup_run(), { checkpoint = dir, checkpoint_every = 3, stop_after = 3 })
    facet.train(cfg)
    local info = cjson.decode(H.read_file(dir .. "/step-00000003/trainer.json"))
    assert.are.equal(3 * 8 * 16, info.dropout_offset)   -- three batches of 8 x 16 embeddings
    assert.are.equal(cfg.model:random_stream().offset, info.dropout_offset)
  end)

  it("a crash during a checkpoint save leaves the previous checkpoint loadable", function()
    local dir = tmpdir .. "/crash"
    facet.train(with(setup_run(), { checkpoint = dir, checkpoint_every = 4, stop_after = 4 }))
    -- a save killed half way: a partial temporary directory and a truncated latest.tmp
    os.execute(("mkdir -p '%s/.step-00000008.tmp' && printf 'garbage' > '%s/.step-00000008.tmp/model.safetensors'"):format(dir, dir))
    local f = io.open(dir .. "/latest.tmp", "wb"); f:write("step-000"); f:close()
    local cfg = setup_run()
    local info = facet.load_checkpoint(dir, cfg.model, cfg.head, cfg.optimizer)
    assert.are.equal(4, info.step)
    local r = facet.train(with(setup_run(), { resume = dir, checkpoint = dir, checkpoint_every = 4 }))
    assert.are.equal(12, r.steps)
    assert.are.equal("step-00000012", io.open(dir .. "/latest"):read("*l"))
  end)

  it("a non-finite loss stops training naming the step, before the weights change", function()
    local cfg = setup_run { poison = true }
    local before = H.values(cfg.head.weight)
    local err = H.assert_error(function() facet.train(cfg) end, "facet.train: step", "loss is", "stopped before updating")
    assert.truthy(err:find("epoch 1", 1, true))
    assert.are.same(before, H.values(cfg.head.weight))
  end)

  it("nan = 'skip' skips bad steps, counts them and leaves the weights alone", function()
    local cfg = with(setup_run { poison = true }, { nan = "skip", epochs = 1, log = tmpdir .. "/skip" })
    local before = H.values(cfg.head.weight)
    local r = facet.train(cfg)
    assert.are.equal(6, r.skipped)           -- every batch holds poisoned samples
    assert.are.same(before, H.values(cfg.head.weight))
    local line = io.open(tmpdir .. "/skip/train.jsonl"):read("*l")
    assert.is_true(cjson.decode(line).skipped)
  end)

  it("nan = 'skip' puts back every state tensor, a non-contiguous one too", function()
    -- a module whose training forward writes its state: one contiguous
    -- tensor (saved in the guard's list copy) and a column block of a matrix (saved alone)
    local nn = facet.nn
    local Marks = nn.Module:extend("Marks")
    function Marks.new()
      local m = nn.Module.init(Marks)
      m.flat, m.cols, m._state = facet.zeros({ 5 }), facet.zeros({ 3, 6 }):narrow(2, 2, 4), { "flat", "cols" }
      return m
    end
    function Marks:update_output(x)
      if self.training then self.flat:fill_(7); self.cols:fill_(8) end
      return x
    end
    local cfg = with(setup_run { poison = true }, { nan = "skip", epochs = 1 })
    local marks = Marks.new()
    cfg.model:add(marks)
    local before = {}
    for name, t in pairs(cfg.model:state_tensors()) do before[name] = H.values(t) end
    assert.is_false(marks.cols:is_contiguous())
    local r = facet.train(cfg)
    assert.are.equal(6, r.skipped)
    for name, t in pairs(cfg.model:state_tensors()) do assert.are.same(before[name], H.values(t), name) end
    assert.are.same(H.values(facet.zeros({ 3, 4 })), H.values(marks.cols))
    assert.are.same(H.values(facet.zeros({ 5 })), H.values(marks.flat))
  end)

  for _, name in ipairs { "curricular", "adaface" } do
    it(name .. ": resume continues the head's state exactly; a skipped step puts it back", function()
      local function run(o) o = o or {}; o.head = name; return setup_run(o) end
      local function state(head)
        local r = {}
        for k, v in pairs(head:state_tensors()) do r[k] = v:item() end
        return r
      end
      local a = run()
      local start = state(a.head)
      local full = facet.train(a)
      local dir = tmpdir .. "/ck_" .. name
      local b = with(run(), { checkpoint = dir, checkpoint_every = 5, stop_after = 5 })
      facet.train(b)
      assert.are_not.same(start, state(b.head))
      local c = with(run(), { resume = dir })
      local resumed = facet.train(c)
      assert.are.equal(7, #resumed.losses)
      for i = 1, 7 do assert.are.equal(full.losses[5 + i], resumed.losses[i]) end
      assert.are.same(state(a.head), state(c.head))
      -- every batch holds a NaN sample: each forward spoils the state, each skip must undo it
      local cfg = with(run { poison = true }, { nan = "skip", epochs = 1 })
      local r = facet.train(cfg)
      assert.are.equal(6, r.skipped)
      assert.are.same(start, state(cfg.head))
    end)
  end

  it("prints plain progress lines when not on a terminal", function()
    local out = {}
    local old = _G.print
    _G.print = function(s) out[#out + 1] = s end
    local ok, err = pcall(facet.train, with(setup_run(), { quiet = false, print_every = 6 }))
    _G.print = old
    assert.is_true(ok, tostring(err))
    -- the first step, every 6th, and the last (12)
    assert.are.equal(3, #out)
    assert.truthy(out[1]:find("^step 1  epoch 1/2  loss [%d%.]+  lr 0.05  [%d%.]+ img/s  ETA"), out[1])
    assert.truthy(out[2]:find("^step 6  epoch 1/2  loss [%d%.]+  lr 0.05  [%d%.]+ img/s  ETA"), out[2])
    assert.truthy(out[3]:find("^step 12  epoch 2/2"), out[3])
  end)

  it("evaluates every N steps, in evaluation mode, and logs the metrics", function()
    local calls, modes = 0, {}
    local cfg = with(setup_run(), { log = tmpdir .. "/evallog", eval_every = 4, eval = function(state)
      calls = calls + 1
      modes[#modes + 1] = state.model.training
      return { acc = state.step / 100 }
    end })
    facet.train(cfg)
    assert.are.equal(3, calls)                 -- steps 4, 8, 12
    assert.are.same({ false, false, false }, modes)
    local found = {}
    for line in io.lines(tmpdir .. "/evallog/train.jsonl") do
      local e = cjson.decode(line)
      if e.eval then found[#found + 1] = e.step .. ":" .. e.eval.acc end
    end
    assert.are.same({ "4:0.04", "8:0.08", "12:0.12" }, found)
    -- and printed, not only logged, when not quiet
    local out = {}
    local old = _G.print
    _G.print = function(s) out[#out + 1] = s end
    local ok, err = pcall(facet.train, with(setup_run(), { quiet = false, print_every = 100, eval_every = 6,
      eval = function(state) return { acc = state.step / 100, lfw = 0.5 } end }))
    _G.print = old
    assert.is_true(ok, tostring(err))
    local evals = {}
    for _, l in ipairs(out) do if l:find("^eval ") then evals[#evals + 1] = l end end
    assert.are.same({ "eval step 6: acc 0.0600  lfw 0.5000", "eval step 12: acc 0.1200  lfw 0.5000" }, evals)
  end)

  -- counts, over a run of `steps` steps, what reads device values back to the
  -- host from Lua (item, get, copies and :to() onto the CPU from another
  -- device), the fills (zero_), and zero_grad calls
  -- The method table tensors dispatch to. Under busted's per-file insulation
  -- a later file's require("facet.tensor") is a new module table, while the
  -- tensor ctype keeps the first load's methods; the table is found as the
  -- `Tensor` upvalue of a method a tensor dispatches to.
  local function method_table()
    local probe = facet.empty({ 1 })
    for _, name in ipairs({ "to", "copy", "item", "dim" }) do
      local f = probe[name]
      for i = 1, 200 do
        local up, v = debug.getupvalue(f, i)
        if not up then break end
        if up == "Tensor" and type(v) == "table" and v[name] == f then return v end
      end
    end
    error("the tensor method table was not found")
  end

  local function count_run(steps)
    local Tensor = method_table()
    local n = { reads = 0, to_host = 0, fills = 0, zero_grad = 0 }
    local saved = {}
    local function wrap(name, count)
      local f = Tensor[name]
      saved[name] = f
      Tensor[name] = function(t, ...)
        count(t, ...)
        return f(t, ...)
      end
    end
    local function read() n.reads = n.reads + 1 end
    local function copied(t, src)
      if t:device() == "cpu" and facet.is_tensor(src) and src:device() ~= "cpu" then n.to_host = n.to_host + 1 end
    end
    wrap("item", read)
    wrap("get", read)
    wrap("copy", copied)
    wrap("copy_", copied)
    wrap("to", function(t, a, b)
      if (a == "cpu" or b == "cpu") and t:device() ~= "cpu" then n.to_host = n.to_host + 1 end
    end)
    wrap("fill_", function() n.fills = n.fills + 1 end)
    local ok, err = pcall(function()
      local cfg = setup_run { device = H.device }
      local zero_grad = cfg.optimizer.zero_grad
      cfg.optimizer.zero_grad = function(self)
        n.zero_grad = n.zero_grad + 1
        return zero_grad(self)
      end
      for k in pairs(n) do n[k] = 0 end
      facet.train(with(cfg, { stop_after = steps }))
    end)
    for k, f in pairs(saved) do Tensor[k] = f end
    assert(ok, err)
    return n
  end

  H.it("a step reads the device once (the gradient norm) and zeroes the gradients inside its update", function()
    local a, b = count_run(2), count_run(6)
    local per_step = {}
    for k in pairs(a) do per_step[k] = (b[k] - a[k]) / 4 end
    -- no :item() per parameter: the norm comes back in one copy (none on the CPU, where it is read in place)
    assert.are.same({ reads = 0, to_host = H.device == "cpu" and 0 or 1, fills = 0, zero_grad = 0 }, per_step)
    -- the first step zeroes what was there before, once
    assert.are.equal(1, a.zero_grad)
  end)

  it("gradients a user's eval callback leaves behind are zeroed before the next step", function()
    local clean = facet.train(with(setup_run(), { eval_every = 4, eval = function() return {} end }))
    local dirty = facet.train(with(setup_run(), { eval_every = 4, eval = function(state)
      for _, p in ipairs(state.optimizer.list) do p.grad:fill_(1000) end
      return {}
    end }))
    assert.are.same(clean.losses, dirty.losses)
  end)

  it("checks its arguments", function()
    H.assert_error(function() facet.train { model = 1 } end, "head is required")
    H.assert_error(function() facet.train(with(setup_run(), { resume = tmpdir .. "/none" })) end, "no checkpoint")
  end)
end)
