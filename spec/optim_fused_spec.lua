--- Fused cosine heads (fused = true) through the one optimizer path: the
-- deferred radial correction and the W norms taken by facet.optim.sgd's single
-- pass give the parameters of the unfused head with plain SGD (momentum,
-- weight decay, Nesterov, dampening, gradient accumulation); Adam/AdamW
-- complete the gradient first; gradient norm and clipping see the complete
-- gradient; facet.train with a fused head follows the unfused run, and its
-- checkpoints save and restore the fused head's optimizer state.
local H = require "support.device"
local facet = H.facet

local tmpdir
setup(function() tmpdir = H.temp_dir() end)
teardown(function() H.remove_dir(tmpdir) end)

local K, D = 13, 8
local LABELS = { 0, 3, 5, 7, 11, 12 }

-- an unfused and a fused head alike; hopts: more options of both (sub-centres)
local function pair(name, opts, hopts)
  local function new(fused)
    local o = { classes = K, dim = D, seed = 3, fused = fused }
    for k, v in pairs(hopts or {}) do o[k] = v end
    return facet.heads.new(name, o):to(H.device)
  end
  local a, b = new(false), new(true)
  for k, v in pairs(opts or {}) do a[k], b[k] = v, v end
  return a, b
end

local function batch(it)
  return H.on(facet.randn({ #LABELS, D }, { seed = 100 + it })), H.on(facet.tensor(LABELS, { dtype = "int32" }))
end

local function row_norms(t)
  local v, r = H.values(t), {}
  local cols = t:size(2)
  for k = 1, t:size(1) do
    local s = 0
    for j = 1, cols do s = s + v[(k - 1) * cols + j] ^ 2 end
    r[k] = math.sqrt(s)
  end
  return r
end

describe("a fused head through facet.optim", function()
  for _, case in ipairs {
    { "mv-arc", { lr = 0.5, momentum = 0.9, weight_decay = 5e-4 } },
    { "am", { lr = 0.3, momentum = 0.9, nesterov = true, weight_decay = 1e-3 } },
    { "a-softmax", { lr = 0.2, momentum = 0.8, dampening = 0.5, weight_decay = 5e-4 } },
    { "norm-softmax", { lr = 0.5 } },
    -- sub-centres: the radial part and the norms of every sub-centre row
    { "arc", { lr = 0.5, momentum = 0.9, weight_decay = 5e-4 }, { subcenters = 3 } },
  } do
    local name, cfg = case[1], case[2]
    local what = case[3] and name .. " with 3 sub-centres" or name
    H.it(("%s: sgd gives the unfused head's losses, weights and momentum over 5 steps"):format(what), function()
      local a, b = pair(name, nil, case[3])
      local oa, ob = facet.optim.sgd(a, cfg), facet.optim.sgd(b, cfg)
      for it = 1, 5 do
        oa:zero_grad(); ob:zero_grad()
        local x, y = batch(it)
        H.assert_close(b:forward(x, y), a:forward(x, y), 1e-5)
        a:backward(); b:backward()
        if it == 3 then
          -- two batches in one step: the deferred coefficients add up
          local x2 = batch(50 + it)
          H.assert_close(b:forward(x2, y), a:forward(x2, y), 1e-5)
          a:backward(); b:backward()
        end
        assert.is_true(b.pending:norm() > 0, "the radial part is deferred")
        oa:step(); ob:step()
        H.assert_close(H.values(b.weight), H.values(a.weight), 1e-4, 1e-6)
        if cfg.momentum then
          H.assert_close(H.values(ob.list[1].momentum_buffer), H.values(oa.list[1].momentum_buffer), 1e-4, 1e-6)
        end
        -- the update's pass measured W for the next forward
        assert.are.equal(0, b.pending:norm())
        assert.is_true(b.norms_valid)
        H.assert_close(H.values(b.norms), row_norms(b.weight), 1e-5)
      end
    end)
  end

  for _, which in ipairs { "adam", "adamw" } do
    H.it(which .. ": the gradient is completed before the step; the next forward measures W", function()
      local a, b = pair("mv-am")
      local oa, ob = facet.optim[which](a, { lr = 0.01 }), facet.optim[which](b, { lr = 0.01 })
      for it = 1, 4 do
        oa:zero_grad(); ob:zero_grad()
        local x, y = batch(it)
        H.assert_close(b:forward(x, y), a:forward(x, y), 1e-5)
        a:backward(); b:backward()
        oa:step(); ob:step()
        assert.is_false(b.norms_valid)
        H.assert_close(H.values(b.weight), H.values(a.weight), 1e-4, 1e-6)
        H.assert_close(H.values(ob.list[1].exp_avg_sq), H.values(oa.list[1].exp_avg_sq), 1e-3, 1e-9)
      end
    end)
  end

  H.it("grad_norm is the complete gradient's without completing it; clipping matches", function()
    local a, b = pair("arc")
    local oa, ob = facet.optim.sgd(a, { lr = 0.5, momentum = 0.9 }), facet.optim.sgd(b, { lr = 0.5, momentum = 0.9 })
    for it = 1, 3 do
      oa:zero_grad(); ob:zero_grad()
      local x, y = batch(it)
      a:forward(x, y); b:forward(x, y)
      a:backward(); b:backward()
      H.assert_close(ob:grad_norm(), oa:grad_norm(), 1e-4)
      assert.is_true(b.pending:norm() > 0, "grad_norm left the radial part deferred")
      local na = oa:clip_grad_norm(0.05)
      local nb = ob:clip_grad_norm(0.05)
      H.assert_close(nb, na, 1e-4)
      H.assert_close(ob:grad_norm(), 0.05, 1e-3)
      oa:step(); ob:step()
      H.assert_close(H.values(b.weight), H.values(a.weight), 1e-4, 1e-6)
    end
  end)

  H.it("finish_grad gives the exact gradient; weight_changed after writing W", function()
    local a, b = pair("mv-arc")
    local x, y = batch(1)
    a:forward(x, y); b:forward(x, y)
    a:backward(); b:backward()
    H.assert_close(H.values(b:finish_grad()), H.values(a.grad_weight), 1e-4, 1e-6)
    -- W written outside the optimizer: the head is told, and measures W again
    local w = facet.randn({ K, D }, { seed = 9 })
    a.weight:copy(w); b.weight:copy(w)
    b:weight_changed()
    H.assert_close(b:forward(x, y), a:forward(x, y), 1e-5)
    -- loading optimizer state tells the head too (checkpoints load W with it)
    local ob = facet.optim.sgd(b, { lr = 0.1, momentum = 0.9 })
    ob:zero_grad(); b:forward(x, y); b:backward(); ob:step()
    assert.is_true(b.norms_valid)
    ob:load_state(ob:state())
    assert.is_false(b.norms_valid)
  end)

  it("only cosine heads fuse; their weight entry carries the deferred fields", function()
    local raw = facet.heads.new("softmax", { classes = 3, dim = 2, fused = true })
    assert.is_false(raw.fused)
    assert.is_nil(raw:named_parameters()[1].row_coef)
    local h = facet.heads.new("am", { classes = 3, dim = 2, fused = true })
    local e = h:named_parameters()[1]
    assert.are.equal(h.pending, e.row_coef)
    assert.are.equal(h.norms, e.row_norms)
    assert.is_function(e.on_update)
    assert.is_function(e.grad_sumsq)
    assert.is_nil(facet.heads.Head.sgd_step)
  end)
end)

-- a fresh, identically seeded training setup (as in spec/train_spec.lua)
local function setup_run(fused, extra)
  facet.manual_seed(11)
  require("facet.nn.Dropout").offset = 0
  local net = facet.models.convnet { emb = 16, size = 12 }
  local head = facet.heads.new("mv-arc", { classes = 6, dim = 16, seed = 3, fused = fused })
  local X = facet.randn({ 48, 1, 12, 12 }, { seed = 4 })
  local labels = {}
  for i = 1, 48 do labels[i] = (i * 5) % 6 end
  local data = facet.data.tensors { x = X, y = facet.tensor(labels, { dtype = "int64" }), batch_size = 8, seed = 9 }
  local opt = facet.optim.sgd({ net, head }, { lr = 0.05, momentum = 0.9, weight_decay = 5e-4, nesterov = true })
  local cfg = { model = net, head = head, data = data, optimizer = opt, epochs = 2, quiet = true,
    schedule = facet.optim.schedule.multistep { lr = 0.05, milestones = { 1 } } }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return cfg
end

-- cfg continuing from the checkpoint in dir, without saving or stopping
local function with_resume(cfg, dir)
  local c = {}
  for k, v in pairs(cfg) do c[k] = v end
  c.resume, c.checkpoint, c.checkpoint_every, c.stop_after = dir, nil, nil, nil
  return c
end

describe("facet.train with a fused head", function()
  it("follows the unfused run (with the gradient check, with clipping, without either) and logs the same grad norm", function()
    for i, extra in ipairs { {}, { clip = 0.5 }, { check_grads = false } } do
      local a, b = setup_run(false, extra), setup_run(true, extra)
      if i == 1 then a.log, b.log = tmpdir .. "/unfused", tmpdir .. "/fused" end
      local ra, rb = facet.train(a), facet.train(b)
      assert.are.equal(12, rb.steps)
      H.assert_close(rb.losses, ra.losses, 1e-4)
      H.assert_close(H.values(b.head.weight), H.values(a.head.weight), 1e-3, 1e-5)
      assert.is_true(rb.losses[#rb.losses] < rb.losses[1])
    end
    -- the logged norm is the complete gradient's (the radial part stays deferred)
    local cjson = require "cjson"
    local la, lb = io.lines(tmpdir .. "/unfused/train.jsonl"), io.lines(tmpdir .. "/fused/train.jsonl")
    for _ = 1, 12 do
      H.assert_close(cjson.decode(lb()).grad_norm, cjson.decode(la()).grad_norm, 1e-4)
    end
  end)

  it("checkpoints save and restore the fused head's optimizer state; resume follows the full run", function()
    local full = facet.train(setup_run(true))
    local dir = tmpdir .. "/ck"
    local first = setup_run(true, { checkpoint = dir, checkpoint_every = 3, stop_after = 8 })
    facet.train(first)
    -- the stopped run's own step is the newest; resume from the step-6 checkpoint, as an interrupted run would
    assert.are.equal("step-00000008", io.open(dir .. "/latest"):read("*l"))
    local f = assert(io.open(dir .. "/latest", "w"))
    f:write("step-00000006\n")
    f:close()
    -- the head's momentum buffer (the last parameter entry: the model's come first) is in the checkpoint
    local fresh = setup_run(true)
    local n = #fresh.optimizer.list
    local saved = facet.load_safetensors(dir .. "/step-00000006/optim.safetensors")
    assert.is_truthy(saved[n .. ".momentum_buffer"])
    facet.load_checkpoint(dir, fresh.model, fresh.head, fresh.optimizer)
    assert.are.same(H.values(saved[n .. ".momentum_buffer"]), H.values(fresh.optimizer.list[n].momentum_buffer))
    assert.are.equal(fresh.head.pending, fresh.optimizer.list[n].row_coef)

    local resumed = facet.train(setup_run(true, { resume = dir }))
    assert.are.equal(6, #resumed.losses)
    H.assert_close(resumed.losses, { unpack(full.losses, 7, 12) }, 1e-5)

    -- resuming into the objects that trained on past the checkpoint (their W
    -- norms are stale): the optimizer's load_state makes the head measure W again
    local again = facet.train(with_resume(first, dir))
    H.assert_close(again.losses, { unpack(full.losses, 7, 12) }, 1e-5)
  end)
end)
