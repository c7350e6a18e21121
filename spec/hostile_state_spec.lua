--- Failed calls leave no trace: a head's forward that rejects its labels, an
-- optimizer step or load_state that refuses one parameter, a model
-- load_state, a checkpoint load, a training step the NaN guard rejects
-- (BatchNorm running statistics included) and a pack that cannot read an
-- input all leave every value they could have touched as it was: each case
-- compares the state before the failed call with the state after it,
-- exactly (values, bytes, counters), and then checks that the next good call
-- gives what it would have given had the failed one never happened.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local ffi = require "ffi"
local core = require "facet.core"
local checkpoint = require "facet.checkpoint"

local C = core.C
local values = H.values
local scratch = F.scratch()

teardown(function() collectgarbage() end)

-- every tensor of a list (or name -> tensor table) as values, by key
local function snapshot(list)
  local r = {}
  for k, t in pairs(list) do r[k] = values(t) end
  return r
end

-- the error message of fn (must fail), without the file:line prefix
local function failure(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return (tostring(err):gsub("^[^\n]-:%d+: ", ""))
end

-- ---- heads ----------------------------------------------------------------------------

describe("a head's forward that fails", function()
  local function head(name, opts)
    opts = opts or {}
    opts.classes, opts.dim, opts.seed = opts.classes or 5, opts.dim or 4, opts.seed or 7
    return facet.heads.new(name or "mv-arc", opts)
  end
  local x1 = facet.randn({ 3, 4 }, { seed = 1 })
  local y1 = facet.tensor({ 0, 4, 2 }, { dtype = "int64" })
  local x2 = facet.randn({ 3, 4 }, { seed = 2 })

  -- everything a forward writes
  local function head_state(h)
    local s = { iter = h.iter, ready = h.ready, loss = h.loss, weight = values(h.weight), grad = values(h.grad_weight) }
    if h.buf then
      for k, t in pairs(h.buf) do if facet.is_tensor(t) then s["buf." .. k] = values(t) end end
    end
    return s
  end

  -- a rejected forward after a good one: nothing changes, and backward gives
  -- what it gives right after the good forward
  local function rejected_keeps_the_pending_forward(name, bad_x, bad_y, message)
    local a, b = head(name), head(name)
    local la = a:forward(x1, y1)
    assert.are.equal(la, b:forward(x1, y1))
    local before = head_state(a)
    assert.truthy(failure(a.forward, a, bad_x, bad_y):find(message, 1, true))
    assert.are.same(before, head_state(a))
    local da, db = a:backward(), b:backward()
    assert.are.same(values(db), values(da))
    assert.are.same(values(b.grad_weight), values(a.grad_weight))
  end

  it("a label = classes is refused before anything is written", function()
    rejected_keeps_the_pending_forward("mv-arc", x2, facet.tensor({ 0, 5, 1 }, { dtype = "int64" }),
      "mv-arc:forward: label 5 of row 2 outside [0, 5)")
  end)

  it("a negative int32 label is refused before anything is written", function()
    rejected_keeps_the_pending_forward("am", x2, facet.tensor({ 0, 1, -1 }, { dtype = "int32" }),
      "am:forward: label -1 of row 3 outside [0, 5)")
  end)

  it("an int64 label past 2^32 (its high word set) is refused", function()
    local y = facet.tensor({ 0, 1, 2 }, { dtype = "int64" })
    y:data_ptr()[1] = 4294967296LL + 1
    rejected_keeps_the_pending_forward("softmax", x2, y, "softmax:forward: label 4294967297 of row 2 outside [0, 5)")
  end)

  it("labels of the wrong dtype, shape or kind are refused", function()
    rejected_keeps_the_pending_forward("arc", x2, facet.tensor { 0, 1, 2 }, "labels must be int32 or int64, got float32")
    rejected_keeps_the_pending_forward("arc", x2, facet.tensor({ 0, 1 }, { dtype = "int64" }), "want 3 labels")
    rejected_keeps_the_pending_forward("arc", x2, { 0, 1.5, 2 }, "labels must be integers, label 2 is 1.5")
    rejected_keeps_the_pending_forward("arc", x2, { 0, 1, 9 }, "label 9 of row 3 outside [0, 5)")
    rejected_keeps_the_pending_forward("arc", x2, "labels", "y must be a tensor")
  end)

  it("an x of another batch size is refused without reallocating the buffers", function()
    local a = head("l2-softmax")
    a:forward(x1, y1)
    local buf, z = a.buf, a.buf.z
    local before = head_state(a)
    local x5 = facet.randn({ 5, 4 }, { seed = 3 })
    failure(a.forward, a, x5, facet.tensor({ 0, 1, 2, 3, 7 }, { dtype = "int64" }))
    assert.are.equal(buf, a.buf)
    assert.are.equal(z, a.buf.z)
    assert.are.same(before, head_state(a))
    failure(a.forward, a, facet.randn({ 3, 5 }, { seed = 3 }), y1)
    assert.are.same(before, head_state(a))
  end)

  it("a rejected first forward leaves no forward: backward says so", function()
    local a = head("arc")
    failure(a.forward, a, x1, facet.tensor({ 0, 9, 1 }, { dtype = "int64" }))
    assert.are.equal(0, a.iter)
    assert.truthy(failure(a.backward, a):find("arc:backward: no forward", 1, true))
  end)

  it("A-Softmax: a rejected forward does not advance the lambda schedule", function()
    local a, b = head("a-softmax"), head("a-softmax")
    for _ = 1, 3 do a:forward(x1, y1); a:backward(); b:forward(x1, y1); b:backward() end
    failure(a.forward, a, x1, facet.tensor({ 0, 7, 1 }, { dtype = "int64" }))
    assert.are.equal(3, a.iter)
    assert.are.equal(a:forward(x2, y1), b:forward(x2, y1))
    assert.are.equal(b.current_lambda, a.current_lambda)
  end)

  it("fused: a rejected forward leaves the deferred correction and the W norms alone", function()
    local a = head("am", { fused = true })
    local opt = facet.optim.sgd(a, { lr = 0.1 })
    a:forward(x1, y1); a:backward(); opt:step()
    a:forward(x2, y1); a:backward()
    local pending, norms, valid = values(a.pending), values(a.norms), a.norms_valid
    failure(a.forward, a, x1, facet.tensor({ 5, 0, 0 }, { dtype = "int64" }))
    assert.are.same(pending, values(a.pending))
    assert.are.same(norms, values(a.norms))
    assert.are.equal(valid, a.norms_valid)
  end)

  it("the last class is a label; one past it is not", function()
    local a = head("norm-softmax", { classes = 3 })
    assert.is_number(a:forward(x1, facet.tensor({ 2, 2, 0 }, { dtype = "int32" })))
    assert.truthy(failure(a.forward, a, x1, facet.tensor({ 2, 3, 0 }, { dtype = "int32" })):find("label 3 of row 2", 1, true))
  end)

  it("the C head checks what the whole forward needs before target writes a row", function()
    local pp = ffi.new("facet_head *[1]")
    assert.are.equal(0, C.facet_head_init(pp, C.FACET_HEAD_MARGIN_NONE, C.FACET_HEAD_REWEIGHT_PROGRAM, C.FACET_HEAD_SAMPLE_MEAN))
    local h = ffi.gc(pp[0], C.facet_head_free)
    local rows = facet.full({ 2, tonumber(C.FACET_HEAD_ROW_COUNT) }, 7)
    local logits, wnorm = facet.tensor { { 0.1, 0.2, 0.3 }, { 0.3, 0.2, 0.1 } }, facet.ones({ 3 })
    local labels = facet.tensor({ 0, 2 }, { dtype = "int64" })
    assert.are_not.equal(0, C.facet_head_target(h, rows.h, logits.h, wnorm.h, nil, labels.h, 0, 3))
    assert.truthy(ffi.string(C.facet_last_error()):find("scripted h without its programs", 1, true))
    assert.are.same(values(facet.full({ 2, tonumber(C.FACET_HEAD_ROW_COUNT) }, 7)), values(rows))
  end)
end)

-- ---- optimizers -------------------------------------------------------------------------

describe("an optimizer step that fails", function()
  local function params()
    return { facet.tensor { 1, 2, 3 }, facet.tensor { { 1, 2 }, { 3, 4 } }, facet.tensor { 5, 6 } },
      { facet.tensor { 0.1, 0.2, 0.3 }, facet.tensor { { 1, 1 }, { 1, 1 } }, facet.tensor { -1, 1 } }
  end
  local function state_of(opt)
    local s = { step_count = opt.step_count }
    for i, p in ipairs(opt.list) do
      s[i] = { param = values(p.param), grad = values(p.grad) }
      for _, k in ipairs(opt.state_keys) do if p[k] then s[i][k] = values(p[k]) end end
    end
    return s
  end

  it("sgd: a grad of the wrong shape in the middle updates no parameter", function()
    local p, g = params()
    local opt = facet.optim.sgd({ params = p, grads = g }, { lr = 0.1, momentum = 0.9 })
    opt:step()
    local before = state_of(opt)
    opt.list[2].grad = facet.tensor { 1, 1, 1, 1 }
    assert.are.equal("sgd:step: parameter 2: grad has shape 4, param 2x2", failure(opt.step, opt))
    before[2].grad = values(opt.list[2].grad)
    assert.are.same(before, state_of(opt))
  end)

  it("sgd: a grad of another dtype in the middle updates no parameter", function()
    local p, g = params()
    g[2] = facet.tensor({ { 1, 1 }, { 1, 1 } }, { dtype = "int32" })
    local opt = facet.optim.sgd({ params = p, grads = g }, { lr = 0.1, momentum = 0.9 })
    local before = state_of(opt)
    assert.are.equal("sgd:step: parameter 2: grad is int32, want float32", failure(opt.step, opt))
    assert.are.same(before, state_of(opt))
    assert.is_nil(opt.list[1].momentum_buffer)          -- not even the buffers were made
  end)

  it("sgd: a non-contiguous grad, a short row_coef or a bad lr change nothing", function()
    local p, g = params()
    local opt = facet.optim.sgd({ params = p, grads = g }, { lr = 0.1 })
    local before = state_of(opt)
    opt.list[2].grad = facet.ones({ 2, 4 }):narrow(2, 1, 2)
    assert.are.equal("sgd:step: parameter 2: grad is not contiguous", failure(opt.step, opt))
    opt.list[2].grad = g[2]
    opt.list[2].row_coef = facet.zeros({ 3 })
    assert.are.equal("sgd:step: parameter 2: row_coef has 3 values, want 2 (one per row)", failure(opt.step, opt))
    opt.list[2].row_coef = nil
    opt.lr = 0 / 0
    assert.truthy(failure(opt.step, opt):find("sgd:step: lr must be a finite number", 1, true))
    assert.are.same(before, state_of(opt))
    opt.lr = 0.1
    opt:step()
    H.assert_close(values(opt.list[1].param), { 0.99, 1.98, 2.97 }, 1e-6)
  end)

  it("sgd: a momentum buffer of the wrong shape refuses the step", function()
    local p, g = params()
    local opt = facet.optim.sgd({ params = p, grads = g }, { lr = 0.1, momentum = 0.5 })
    opt:step()
    opt.list[3].momentum_buffer = facet.zeros({ 3 })
    local before = state_of(opt)
    assert.are.equal("sgd:step: parameter 3: momentum_buffer has shape 3, param 2", failure(opt.step, opt))
    assert.are.same(before, state_of(opt))
  end)

  it("adam: a bad parameter in the middle neither updates nor advances the step count", function()
    local p, g = params()
    local q, h = params()
    local a = facet.optim.adam({ params = p, grads = g }, { lr = 0.01 })
    local b = facet.optim.adam({ params = q, grads = h }, { lr = 0.01 })
    a:step(); b:step()
    local before = state_of(a)
    local good = a.list[2].grad
    a.list[2].grad = facet.zeros({ 2, 3 })
    assert.are.equal("adam:step: parameter 2: grad has shape 2x3, param 2x2", failure(a.step, a))
    a.list[2].grad = good
    assert.are.same(before, state_of(a))
    assert.are.equal(1, a.step_count)
    -- the next step is the second of a run that never failed
    a:step(); b:step()
    assert.are.same(state_of(b), state_of(a))
  end)

  it("adamw: a wrong-device grad is refused before anything moves", function()
    if not facet.cuda.available() then
      local p, g = params()
      local opt = facet.optim.adamw({ params = p, grads = g }, {})
      local before = state_of(opt)
      opt.betas = { 0.9, 1.5 }
      assert.are.equal("adamw:step: betas must be two numbers in [0, 1)", failure(opt.step, opt))
      assert.are.same(before, state_of(opt))
      assert.is_nil(opt.list[1].exp_avg)
      return
    end
    local p, g = params()
    g[2] = g[2]:cuda()
    local opt = facet.optim.adamw({ params = p, grads = g }, {})
    local before = state_of(opt)
    assert.are.equal("adamw:step: parameter 2: grad on cuda, param on cpu", failure(opt.step, opt))
    assert.are.same(before, state_of(opt))
  end)

  it("adam over a fused head: a failed step keeps the deferred correction pending", function()
    local head = facet.heads.new("am", { classes = 4, dim = 3, seed = 2, fused = true })
    local lin = facet.nn.Linear(2, 3)
    local opt = facet.optim.adam({ head, lin }, { lr = 0.01 })
    local x = facet.randn({ 2, 2 }, { seed = 1 })
    head:forward(lin:forward(x), facet.tensor({ 1, 3 }, { dtype = "int64" }))
    lin:backward(x, head:backward())
    local pending, grad, w = values(head.pending), values(head.grad_weight), values(head.weight)
    lin.grad_bias:free()
    assert.truthy(failure(opt.step, opt):find("its grad was freed", 1, true))
    assert.are.same(pending, values(head.pending))
    assert.are.same(grad, values(head.grad_weight))
    assert.are.same(w, values(head.weight))
    assert.are.equal(0, opt.step_count)
  end)
end)

describe("an optimizer's load_state that fails", function()
  local function trained()
    local p = { facet.tensor { 1, 2, 3 }, facet.tensor { { 1, 2 }, { 3, 4 } } }
    local g = { facet.tensor { 0.5, 0.5, 0.5 }, facet.tensor { { 1, -1 }, { 2, -2 } } }
    local opt = facet.optim.sgd({ params = p, grads = g }, { lr = 0.1, momentum = 0.9 })
    opt:step(); opt:step()
    return opt
  end
  local function all(opt)
    local s = { step_count = opt.step_count, lr = opt.lr, momentum = opt.momentum, nesterov = opt.nesterov }
    for i, p in ipairs(opt.list) do s[i] = p.momentum_buffer and values(p.momentum_buffer) or "none" end
    return s
  end
  local function good_state()
    local src = trained()
    src:step()
    src.lr = 0.05
    return src:state()
  end

  local function refused(mutate, message)
    local opt = trained()
    local before = all(opt)
    local s = good_state()
    mutate(s)
    assert.truthy(failure(opt.load_state, opt, s):find(message, 1, true))
    assert.are.same(before, all(opt))
  end

  it("one tensor of the wrong shape among good ones: nothing is copied", function()
    refused(function(s) s.tensors["2.momentum_buffer"] = facet.zeros({ 4 }) end,
      "load_state: 2.momentum_buffer has shape 4, parameter 2 has 2x2")
  end)

  it("a tensor of another dtype, name or index: nothing is copied", function()
    refused(function(s) s.tensors["1.momentum_buffer"] = facet.zeros({ 3 }, { dtype = "int32" }) end, "is int32, want float32")
    refused(function(s) s.tensors["1.exp_avg"] = facet.zeros({ 3 }) end, "tensor '1.exp_avg' is not <index>.<momentum_buffer>")
    refused(function(s) s.tensors["9.momentum_buffer"] = facet.zeros({ 3 }) end, "the optimizer has 2 parameters")
    refused(function(s) s.tensors["2.momentum_buffer"] = "zeros" end, "2.momentum_buffer is not a tensor")
  end)

  it("a bad name, step count or setting: nothing changes", function()
    refused(function(s) s.name = "adam" end, "load_state: a adam state into a sgd optimizer")
    refused(function(s) s.step_count = -1 end, "step_count must be an integer >= 0, got -1")
    refused(function(s) s.step_count = 2.5 end, "step_count must be an integer >= 0, got 2.5")
    refused(function(s) s.settings.step = 1 end, "unknown sgd setting 'step'")
    refused(function(s) s.settings.lr = "fast" end, "setting lr is a string, want a number")
    refused(function(s) s.settings.momentum = 0 / 0 end, "setting momentum must be a finite number >= 0")
    refused(function(s) s.settings.nesterov = 1 end, "setting nesterov is a number, want a boolean")
  end)

  it("a good state is still loaded whole", function()
    local opt = trained()
    local s = good_state()
    opt:load_state(s)
    assert.are.equal(3, opt.step_count)
    assert.are.equal(0.05, opt.lr)
    assert.are.same(values(s.tensors["2.momentum_buffer"]), values(opt.list[2].momentum_buffer))
  end)

  it("adam: a wrong betas setting or a missing moment's shape leaves the moments alone", function()
    local p = { facet.tensor { 1, 2 } }
    local opt = facet.optim.adam({ params = p, grads = { facet.tensor { 1, 1 } } }, {})
    opt:step()
    local m, v = values(opt.list[1].exp_avg), values(opt.list[1].exp_avg_sq)
    local s = opt:state()
    s.settings.betas = { 0.9, 1 }
    assert.truthy(failure(opt.load_state, opt, s):find("setting betas[2] must be a number in [0, 1)", 1, true))
    s = opt:state()
    s.tensors["1.exp_avg_sq"] = facet.zeros({ 1, 2 })
    s.tensors["1.exp_avg"] = facet.zeros({ 2 })
    assert.truthy(failure(opt.load_state, opt, s):find("1.exp_avg_sq has shape 1x2", 1, true))
    assert.are.same(m, values(opt.list[1].exp_avg))
    assert.are.same(v, values(opt.list[1].exp_avg_sq))
    assert.are.equal(1, opt.step_count)
  end)
end)

-- ---- models and checkpoints ---------------------------------------------------------------

describe("a model's load_state that fails", function()
  local function net()
    facet.manual_seed(4)
    local nn = facet.nn
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
  end
  local function refused(mutate, message)
    local m = net()
    local before = snapshot(m:state_dict())
    local d = {}
    for k, t in pairs(m:state_dict()) do d[k] = t:clone():fill_(9) end
    mutate(d)
    assert.truthy(failure(m.load_state, m, d):find(message, 1, true))
    assert.are.same(before, snapshot(m:state_dict()))
  end

  it("one shape off: no tensor is copied", function()
    refused(function(d) d["3.weight"] = facet.zeros({ 4, 2 }) end, "3.weight has shape 2x4 in the model, 4x2 in the checkpoint")
  end)

  it("a name too many or too few: no tensor is copied", function()
    refused(function(d) d["4.weight"] = facet.zeros({ 1 }) end, "the checkpoint has 4.weight, which the model does not")
    refused(function(d) d["2.running_var"] = nil end, "2.running_var is missing from the checkpoint")
  end)

  it("another dtype, a non-tensor or a freed tensor: no tensor is copied", function()
    refused(function(d) d["1.bias"] = facet.zeros({ 4 }, { dtype = "int64" }) end, "1.bias is float32 in the model, int64 in the checkpoint")
    refused(function(d) d["1.bias"] = { 1, 2, 3, 4 } end, "1.bias is a table in the checkpoint, not a tensor")
    refused(function(d) d["2.running_mean"]:free() end, "2.running_mean of the checkpoint was freed")
  end)
end)

describe("checkpoint.load that fails", function()
  local function run()
    facet.manual_seed(3)
    local nn = facet.nn
    local model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    local head = facet.heads.new("am", { classes = 3, dim = 4 })
    local opt = facet.optim.sgd({ model, head }, { lr = 0.01, momentum = 0.9 })
    return { model = model, head = head, optimizer = opt, step = 5, epoch = 0, batch = 5, skipped = 0 }
  end
  local function all(st)
    local s = snapshot(st.model:state_dict())
    s.head = values(st.head.weight)
    s.step_count = st.optimizer.step_count
    for i, p in ipairs(st.optimizer.list) do s["m" .. i] = p.momentum_buffer and values(p.momentum_buffer) or "none" end
    return s
  end

  it("an optimizer state of another kind: model and head are not loaded either", function()
    local dir = scratch("ck1")
    local src = run()
    src.optimizer.list[1].grad:fill_(1)
    src.optimizer:step()
    src.model.modules[1].weight:fill_(0.5)
    checkpoint.save(dir, src)
    local st = run()
    st.optimizer = facet.optim.adam({ st.model, st.head }, {})
    local before = all(st)
    assert.truthy(failure(checkpoint.load, dir, st.model, st.head, st.optimizer):find("a sgd state into a adam optimizer", 1, true))
    assert.are.same(before, all(st))
  end)

  it("a model of another shape: head and optimizer are not loaded either", function()
    local dir = scratch("ck2")
    local src = run()
    src.head.weight:fill_(0.25)
    checkpoint.save(dir, src)
    local st = run()
    local nn = facet.nn
    st.model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
    st.optimizer = facet.optim.sgd({ st.model, st.head }, { lr = 0.01 })
    local before = all(st)
    local err = failure(checkpoint.load, dir, st.model, st.head, st.optimizer)
    assert.truthy(err:find("load_state: 3.bias is missing from the checkpoint", 1, true), err)
    assert.are.same(before, all(st))
  end)

  it("a head of another size: the model is not loaded", function()
    local dir = scratch("ck3")
    checkpoint.save(dir, run())
    local st = run()
    st.model.modules[1].weight:fill_(2)
    st.head = facet.heads.new("am", { classes = 5, dim = 4 })
    local before = all(st)
    assert.truthy(failure(checkpoint.load, dir, st.model, st.head):find("head.weight is 3x4 float32 in the checkpoint, 5x4", 1, true))
    assert.are.same(before, all(st))
  end)
end)

-- ---- the training loop's guard ----------------------------------------------------------------

describe("a training step the guard rejects", function()
  local B = 6
  local function batch(seed, poison)
    local x = facet.randn({ B, 4 }, { seed = seed })
    if poison then x:narrow(1, 2, 1):fill_(0 / 0) end
    local y = facet.tensor({ 0, 1, 2, 0, 1, 2 }, { dtype = "int64" })
    return { x, y }
  end
  local function source(list)
    return { num_batches = function() return #list end, batch = function(_, _, i) return list[i][1], list[i][2] end }
  end
  local function setup(list, extra)
    facet.manual_seed(8)
    local nn = facet.nn
    local model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.PReLU(5), nn.Linear(5, 3))
    local head = facet.heads.new("arc", { classes = 3, dim = 3, seed = 1 })
    local cfg = { model = model, head = head, data = source(list), quiet = true, epochs = 1,
      optimizer = facet.optim.sgd({ model, head }, { lr = 0.1, momentum = 0.9 }) }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return cfg
  end
  local function model_state(cfg)
    local s = snapshot(cfg.model:state_dict())
    s.head = values(cfg.head.weight)
    for i, p in ipairs(cfg.optimizer.list) do s["m" .. i] = p.momentum_buffer and values(p.momentum_buffer) or "none" end
    s.step_count = cfg.optimizer.step_count
    return s
  end
  local bn = function(cfg) return cfg.model.modules[2] end

  it("nan = 'skip' on every batch: the running statistics are those before training", function()
    local cfg = setup({ batch(1, true), batch(2, true) }, { nan = "skip" })
    local before = model_state(cfg)
    local r = facet.train(cfg)
    assert.are.equal(2, r.skipped)
    assert.are.same({ 0, 0, 0, 0, 0 }, values(bn(cfg).running_mean))
    assert.are.same({ 1, 1, 1, 1, 1 }, values(bn(cfg).running_var))
    assert.are.same(before, model_state(cfg))
  end)

  it("nan = 'skip' in the middle: the run equals one that never saw the bad batch, bit for bit", function()
    local b1, b3 = batch(1), batch(3)
    local a = setup({ b1, batch(2, true), b3 }, { nan = "skip" })
    local b = setup({ b1, b3 })
    local ra, rb = facet.train(a), facet.train(b)
    assert.are.equal(1, ra.skipped)
    assert.are.same(rb.losses, ra.losses)
    assert.are.same(model_state(b), model_state(a))
    for _, v in ipairs(values(bn(a).running_var)) do assert.is_true(v == v) end
  end)

  it("nan = 'stop': the error leaves the model as after the last good step", function()
    local a = setup({ batch(1), batch(2, true) })
    local b = setup({ batch(1) })
    assert.truthy(failure(facet.train, a):find("loss is nan", 1, true))
    facet.train(b)
    assert.are.same(model_state(b), model_state(a))
  end)

  it("an error inside the step (labels out of range) puts the running statistics back", function()
    local bad = batch(2)
    bad[2] = facet.tensor({ 0, 1, 2, 0, 1, 7 }, { dtype = "int64" })
    local a = setup({ batch(1), bad })
    local b = setup({ batch(1) })
    assert.truthy(failure(facet.train, a):find("label 7 of row 6 outside [0, 3)", 1, true))
    facet.train(b)
    assert.are.same(model_state(b), model_state(a))
  end)
end)

-- ---- pack ----------------------------------------------------------------------------------------

describe("facet.data.pack into an existing prefix", function()
  local png = F.read_file("spec/fixtures/images/rgb_3x4.png")
  local jpg = F.read_file("spec/fixtures/images/smooth_16x24.jpg")

  local function packed(name)
    local dir = scratch(name)
    os.execute("mkdir -p " .. dir .. "/root/alice " .. dir .. "/root/bob")
    F.write_file(dir .. "/root/alice/1.png", png)
    F.write_file(dir .. "/root/bob/1.jpg", jpg)
    F.write_file(dir .. "/root/bob/2.png", png)
    local r = facet.data.pack(dir .. "/root", dir .. "/train")
    assert.are.same({ images = 3, identities = 2, skipped = {} }, r)
    return dir, F.read_file(dir .. "/train.rec"), F.read_file(dir .. "/train.idx")
  end
  local function listing(dir)
    local p = io.popen("ls -a " .. dir)
    local s = p:read("*a")
    p:close()
    return s
  end

  it("a missing input leaves the old .rec and .idx byte for byte, and no .tmp", function()
    local dir, rec, idx = packed("p1")
    F.write_file(dir .. "/list.txt", "root/alice/1.png 0\nroot/bob/missing.jpg 1\nroot/bob/2.png 1\n")
    local err = failure(facet.data.pack, dir .. "/list.txt", dir .. "/train")
    assert.truthy(err:find("pack: cannot read " .. dir .. "/root/bob/missing.jpg", 1, true), err)
    assert.are.equal(rec, F.read_file(dir .. "/train.rec"))
    assert.are.equal(idx, F.read_file(dir .. "/train.idx"))
    assert.are.equal(".\n..\nlist.txt\nroot\ntrain.idx\ntrain.lst\ntrain.rec\n", listing(dir))
    local r = facet.data.recordio(dir .. "/train")
    assert.are.equal(3, r:num_images())
    assert.are.equal(jpg, r:image_bytes(2))
    r:close()
  end)

  it("labels with a gap leave the old files alone", function()
    local dir, rec, idx = packed("p2")
    F.write_file(dir .. "/gap.txt", "root/alice/1.png 0\nroot/bob/2.png 2\n")
    assert.truthy(failure(facet.data.pack, dir .. "/gap.txt", dir .. "/train"):find("without gaps", 1, true))
    assert.are.equal(rec, F.read_file(dir .. "/train.rec"))
    assert.are.equal(idx, F.read_file(dir .. "/train.idx"))
  end)

  it("a pack that succeeds replaces both files", function()
    local dir = packed("p3")
    F.write_file(dir .. "/one.txt", "root/bob/1.jpg 0\n")
    assert.are.same({ images = 1, identities = 1, skipped = {} }, facet.data.pack(dir .. "/one.txt", dir .. "/train"))
    local r = facet.data.recordio(dir .. "/train")
    assert.are.equal(1, r:num_images())
    assert.are.equal(jpg, r:image_bytes(1))
    r:close()
    assert.is_false(F.exists(dir .. "/train.rec.tmp"))
  end)
end)
