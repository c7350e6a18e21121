--- Class-sharded heads: every head of the catalogue (and scripted h and
-- margins, fused updates, a learned alpha), split over 2 and 3 simulated
-- ranks (spec/support/local_group.lua), gives the loss, dL/dx, and the
-- gradients of W (the concatenated blocks), of the bias and of alpha of the
-- unsharded head with the same weights, to 1e-5 relative; including K not
-- divisible by W, a block that holds no label of the batch, and ranks with
-- different batch sizes. Also the block layout, the head's state gathered and
-- sliced, and the error paths.
-- The per-rank bodies (M.check_rank, M.resume_body) are plain functions of a
-- group, so the same checks run under mpirun with facet.dist's world group:
-- loaded outside busted (dofile), this file returns them without running.
local LG = require "support.local_group"
local F = require "support.files"
local H = require "support.device"
local facet = require "facet"
local safetensors = require "facet.safetensors"

local M = {}
-- M.device: where rank_body puts its head and batch (support/sharded_worker.lua sets it; default cpu)

local D = 6

-- the head's state tensors (CurricularFace's t, AdaFace's statistics) as numbers by name
local function state_values(head)
  local r = {}
  for k, v in pairs(head:state_tensors()) do r[k] = v:item() end
  return r
end

-- the batch of the whole world: x (Bg x D), labels (Lua list), as facet tensors
local function batch(Bg, K, seed, label_of)
  local ys = {}
  for i = 1, Bg do ys[i] = label_of and label_of(i) or (i * 7 + seed) % K end
  return facet.randn({ Bg, D }, { seed = seed + 2 }), facet.tensor(ys, { dtype = "int64" })
end

local function make_opts(opts, K, seed)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.classes, o.dim, o.seed = K, D, seed
  return o
end

-- the unsharded head's loss and gradients on the whole batch
local function reference(name, opts, K, seed, x, y)
  local head = facet.heads.new(name, make_opts(opts, K, seed))
  if head.bias then head.bias:copy(facet.randn({ K }, { seed = seed + 7, std = 0.3 })) end
  local loss = head:forward(x, y)
  local dx = head:backward():clone()
  return { loss = loss, dx = dx, dW = head:finish_grad():clone(), db = head.grad_bias and head.grad_bias:clone(),
    dalpha = head.grad_alpha and head.grad_alpha:item(), weight = head.weight:clone(), state = state_values(head) }
end

--- The per-rank body: a sharded head on group g, this rank's rows of (x, y)
-- (counts: each rank's number of rows), one forward and backward; returns
-- what the rank computed.
function M.rank_body(g, name, opts, K, seed, x, y, counts)
  local o, dev = make_opts(opts, K, seed), M.device or "cpu"
  o.shard, o.group, o.device = true, g, dev
  local head = facet.heads.new(name, o)
  if head.bias then
    -- the same bias as the reference's, sliced
    head.bias:copy(facet.randn({ K }, { seed = seed + 7, std = 0.3 }):narrow(1, head.class_offset + 1, head.block_rows))
  end
  local start = 1
  for q = 1, g:rank() do start = start + counts[q] end
  local n = counts[g:rank() + 1]
  local loss = head:forward(x:narrow(1, start, n):contiguous():to(dev), y:narrow(1, start, n):contiguous():to(dev))
  local function host(t) return t and t:to("cpu"):clone() end
  return { loss = loss, dx = host(head:backward()), dW = host(head:finish_grad()), db = host(head.grad_bias),
    dalpha = head.grad_alpha and head.grad_alpha:item(), offset = head.class_offset, rows = head.block_rows,
    weight = host(head.weight), start = start, n = n, state = state_values(head) }
end

-- step s's global batch of 6 rows
local function step_batch(s, K)
  local ys = {}
  for i = 1, 6 do ys[i] = (i * 5 + s * 3) % K end
  return facet.randn({ 6, D }, { seed = 100 + s }), facet.tensor(ys, { dtype = "int64" })
end

--- The per-rank body of the resume check: a head (sharded over g, or the
-- unsharded head when g is nil) and SGD with momentum; loads the checkpoint
-- in dir first when `from` is given (opts.adam: Adam instead of SGD), runs steps from..to and saves after step
-- `save` (rank 0 writes the files the way facet.checkpoint names them);
-- returns the losses by step.
function M.resume_body(g, name, opts, K, dir, from, to, save)
  local o = make_opts(opts, K, 6)
  local adam = o.adam
  o.adam = nil
  if g then o.shard, o.group = true, g end
  local head = facet.heads.new(name, o)
  local opt = adam and facet.optim.adam(head, { lr = 0.01, weight_decay = 0.01 }) or
    facet.optim.sgd(head, { lr = 0.2, momentum = 0.9, weight_decay = 0.01 })
  local W, r = g and g:size() or 1, g and g:rank() or 0
  if from > 1 then
    local t = safetensors.load(dir .. "/model.safetensors")
    local mine = {}
    for k, v in pairs(t) do mine[k:gsub("^head%.", "")] = v end
    if g then head:load_state_dict(mine) else for k, v in pairs(mine) do head[k]:copy(v) end end
    local tensors, meta = safetensors.load(dir .. "/optim.safetensors")
    opt:load_state({ name = opt.name, step_count = tonumber(meta.step_count), tensors = tensors })
    head.iter = tonumber(meta.head_iter)
  end
  local losses, n = {}, 6 / W
  for s = from, to do
    local x, y = step_batch(s, K)
    opt:zero_grad()
    losses[s] = head:forward(x:narrow(1, r * n + 1, n):contiguous(), y:narrow(1, r * n + 1, n):contiguous())
    head:backward()
    opt:step()
    if s == save then
      local st = g and head:state_dict() or { weight = head.weight, bias = head.bias }
      if not g then for k, v in pairs(head:state_tensors()) do st[k] = v end end
      local ostate = opt:state()
      if r == 0 then
        local named = {}
        for k, v in pairs(st) do named["head." .. k] = v end
        safetensors.save(named, dir .. "/model.safetensors")
        safetensors.save(ostate.tensors, dir .. "/optim.safetensors",
          { step_count = ostate.step_count, head_iter = head.iter })
      end
    end
  end
  return losses
end

-- max |a - b| <= tol * max |b| (+ a floor for all-zero references)
local function close(what, a, b, tol)
  local err = (a - b):abs():max()
  local scale = b:abs():max()
  if err > tol * scale + 1e-7 then
    error(("%s: max error %.3g against a scale of %.3g"):format(what, err, scale), 2)
  end
end

--- On rank g:rank() of g: the sharded head's loss and gradients against the
-- unsharded head's on the whole batch (computed on this rank); errors name the
-- head, W, K and the rank. Returns what the rank computed.
function M.check_rank(g, name, opts, K, counts, label_of)
  local seed, Bg = 3, 0
  for _, c in ipairs(counts) do Bg = Bg + c end
  local x, y = batch(Bg, K, seed, label_of)
  local ref = reference(name, opts, K, seed, x, y)
  local o = M.rank_body(g, name, opts, K, seed, x, y, counts)
  local tag = ("%s W=%d K=%d rank %d"):format(name, g:size(), K, g:rank())
  assert(math.abs(o.loss - ref.loss) <= 1e-5 * math.abs(ref.loss) + 1e-7,
    ("%s: loss %.9g, unsharded %.9g"):format(tag, o.loss, ref.loss))
  local k = opts.subcenters or 1     -- W rows a class
  close(tag .. " weight block", o.weight, ref.weight:narrow(1, o.offset * k + 1, o.rows * k), 0)
  close(tag .. " dx", o.dx, ref.dx:narrow(1, o.start, o.n), 1e-5)
  close(tag .. " dW", o.dW, ref.dW:narrow(1, o.offset * k + 1, o.rows * k), 1e-5)
  if ref.db then close(tag .. " db", o.db, ref.db:narrow(1, o.offset + 1, o.rows), 1e-5) end
  -- CurricularFace's t, AdaFace's statistics: every rank moves them by the global batch, as the unsharded head
  for k, v in pairs(ref.state) do
    assert(o.state[k] == v, ("%s: %s %.9g, unsharded %.9g"):format(tag, k, o.state[k], v))
  end
  if opts.learn_alpha then
    assert(math.abs(o.dalpha - ref.dalpha) <= 1e-5 * math.abs(ref.dalpha) + 1e-7,
      ("%s: dalpha %.9g, unsharded %.9g"):format(tag, o.dalpha, ref.dalpha))
  end
  return o
end

-- check_rank on W simulated ranks, and the blocks contiguous and covering K
local function compare(name, opts, K, W, counts, label_of)
  local res = LG.run(W, function(g) return M.check_rank(g, name, opts, K, counts, label_of) end)
  local at = 0
  for r = 1, W do
    assert(res[r].offset == at, name .. ": blocks must be contiguous")
    at = at + res[r].rows
  end
  assert(at == K, name .. ": the blocks must cover the classes")
  return res
end

-- loaded outside busted (e.g. by an mpirun script): the per-rank bodies only
if type(describe) ~= "function" then return M end

describe("sharded heads", function()
  it("split K into contiguous blocks, the first K mod W one class larger", function()
    local want = { { 0, 4 }, { 4, 4 }, { 8, 3 } }
    for r = 0, 2 do
      local off, rows = facet.heads.block(11, 3, r)
      assert.same(want[r + 1], { off, rows })
    end
    local off, rows = facet.heads.block(10, 4, 3)
    assert.same({ 8, 2 }, { off, rows })
  end)

  it("give the unsharded loss and gradients for every head of the catalogue over 2 ranks", function()
    for _, name in ipairs(facet.heads.names()) do compare(name, {}, 11, 2, { 3, 3 }) end
  end)

  it("do so over 3 ranks with K mod W ~= 0 and a block that holds no label of the batch", function()
    -- blocks [0,4) [4,8) [8,11): every label below 8, so rank 2 owns none
    for _, name in ipairs(facet.heads.names()) do
      local res = compare(name, {}, 11, 3, { 2, 2, 2 }, function(i) return (i * 3) % 8 end)
      assert.equal(8, res[3].offset)
    end
  end)

  it("do so with scripted h and scripted margins, fused updates and a learned alpha", function()
    local E = facet.expr
    compare("mv-am", { h = function(t, c, I) return E.exp(t * (c + 1) * I * 2) end }, 11, 3, { 2, 2, 2 })
    compare("mv-arc", { h = "fixed", t = 0.3 }, 10, 3, { 2, 2, 2 })
    compare("am", { margin = function(c, m) return c - m * 0.5 end }, 11, 2, { 3, 3 })
    compare("arc", { fused = true }, 11, 3, { 2, 2, 2 })
    compare("l2-softmax", { learn_alpha = true }, 11, 2, { 3, 3 })
    compare("a-softmax", { lambda = 2 }, 9, 2, { 3, 3 })
  end)

  it("do so for MagFace with its norms inside [l_a, u_a]: the gradient through each rank's rows' norms", function()
    -- the rows' norms (about 1 to 4) inside the range, so every part of dL/d||x|| is live
    compare("magface", { l_a = 1, u_a = 4 }, 11, 2, { 3, 3 })
    compare("magface", { l_a = 1, u_a = 4, easy_margin = false }, 11, 3, { 3, 1, 2 })
    compare("magface", { l_a = 1, u_a = 4, l_m = 0.1, u_m = 1.2, lambda_g = 5 }, 11, 3, { 2, 2, 2 },
      function(i) return (i * 3) % 8 end)
    compare("magface", { l_a = 1, u_a = 4, fused = true }, 11, 3, { 1, 4, 2 })
  end)

  it("do so with sub-centres: each rank's block holds its classes' k rows", function()
    compare("arc", { subcenters = 3 }, 11, 2, { 3, 3 })
    compare("mv-arc", { subcenters = 2, fused = true }, 11, 3, { 2, 2, 2 }, function(i) return (i * 3) % 8 end)
    compare("curricular", { subcenters = 3 }, 10, 3, { 3, 1, 2 })
    compare("adaface", { subcenters = 2, momentum = 1 }, 11, 2, { 3, 3 })
    compare("magface", { subcenters = 3, l_a = 1, u_a = 4 }, 11, 3, { 2, 2, 2 })
  end)

  it("do so for ElasticFace: every rank draws the global batch's margins (plus: sorted against the global c_y)", function()
    compare("elastic-arc", { plus = true, std = 0.2 }, 11, 3, { 3, 1, 2 })
    compare("elastic-cos", { plus = true, std = 0.1, subcenters = 2 }, 11, 2, { 3, 3 })
  end)

  it("take ranks with different batch sizes (dL/dx goes back by allreduce)", function()
    compare("hm-am", { keep = 0.5 }, 11, 3, { 3, 1, 2 })
    compare("mv-am", {}, 11, 2, { 1, 4 })
  end)

  it("gather the full head for saving and take their rows back on load", function()
    local K = 11
    local full = facet.heads.new("softmax", { classes = K, dim = D, seed = 4 })
    local res = LG.run(3, function(g)
      local h = facet.heads.new("softmax", { classes = K, dim = D, seed = 4, shard = true, group = g })
      local st = h:state_dict()
      h.weight:zero_()
      h.bias:fill_(g:rank() + 1)
      h:load_state_dict({ weight = st.weight, bias = facet.arange(0, K):float() })
      return { st = st, w = h.weight:clone(), b = h.bias:clone(), off = h.class_offset, rows = h.block_rows }
    end)
    for r = 1, 3 do
      close("gathered weight", res[r].st.weight, full.weight, 0)
      close("sliced weight", res[r].w, full.weight:narrow(1, res[r].off + 1, res[r].rows), 0)
      assert.same(facet.arange(res[r].off, res[r].off + res[r].rows):float():totable(), res[r].b:totable())
    end
  end)

  it("save a checkpoint on 2 ranks that resumes on 1 (unsharded) and 3 ranks with the uninterrupted losses", function()
    for _, case in ipairs { { "mv-am", { fused = true } }, { "softmax", {} }, { "a-softmax", {} },
      { "arc", { adam = true } }, { "curricular", { momentum = 0.3 } }, { "adaface", { momentum = 0.5 } },
      { "arc", { subcenters = 3, fused = true } }, { "elastic-arc", { plus = true } } } do
      local name, opts, K = case[1], case[2], 11
      local dir = F.temp_dir()
      local base = LG.run(2, function(g) return M.resume_body(g, name, opts, K, dir, 1, 4, 2) end)
      local one = M.resume_body(nil, name, opts, K, dir, 3, 4)
      local three = LG.run(3, function(g) return M.resume_body(g, name, opts, K, dir, 3, 4) end)
      F.remove_dir(dir)
      assert.is_true(base[1][4] ~= base[1][3])
      for s = 3, 4 do
        local want = base[1][s]
        assert.equal(want, base[2][s])
        for _, got in ipairs { one[s], three[1][s], three[3][s] } do
          assert.is_true(math.abs(got - want) <= 1e-5 * math.abs(want),
            ("%s step %d: resumed loss %.9g, uninterrupted %.9g"):format(name, s, got, want))
        end
      end
    end
  end)

  it("give the optimizer the unsharded gradient norm, so clipping is the same on every rank", function()
    for _, case in ipairs { { "mv-arc", { fused = true } }, { "softmax", {} } } do
      local name, opts, K = case[1], case[2], 11
      local x, y = step_batch(1, K)
      local function run(head, xs, ys)
        local opt = facet.optim.sgd(head, { lr = 0.5, momentum = 0.9 })
        head:forward(xs, ys)
        head:backward()
        local norm = opt:grad_norm()
        opt:clip_grad_norm(norm / 4)
        opt:step()
        return norm, head.weight:clone()
      end
      local full = facet.heads.new(name, make_opts(opts, K, 6))
      local norm, w = run(full, x, y)
      local res = LG.run(3, function(g)
        local o = make_opts(opts, K, 6)
        o.shard, o.group = true, g
        local head = facet.heads.new(name, o)
        local r = g:rank()
        local n, wb = run(head, x:narrow(1, 2 * r + 1, 2):contiguous(), y:narrow(1, 2 * r + 1, 2):contiguous())
        return { n, wb, head.class_offset, head.block_rows }
      end)
      for r = 1, 3 do
        assert.is_true(math.abs(res[r][1] - norm) <= 1e-5 * norm,
          ("%s: norm %.9g, unsharded %.9g"):format(name, res[r][1], norm))
        close(name .. " clipped step", res[r][2], w:narrow(1, res[r][3] + 1, res[r][4]), 1e-5)
      end
    end
  end)

  it("refuse what they cannot run, naming the option", function()
    local ok, err = pcall(facet.heads.new, "am", { classes = 11, dim = D, group = require("facet.heads.sharded").solo })
    assert.is_false(ok)
    assert.matches("group is only used with shard = true", err, 1, true)
    ok, err = pcall(facet.heads.new, "am", { classes = 11, dim = D, sample = 0 })
    assert.is_false(ok)
    assert.matches("sample must be a number in %(0, 1%]", err)
    ok, err = pcall(facet.heads.new, "am", { classes = 11, dim = D, shard = true, group = {} })
    assert.is_false(ok)
    assert.matches("group must have the methods", err, 1, true)
    local res = LG.run(2, function(g)
      local okk, e = pcall(facet.heads.new, "am", { classes = 1, dim = D, shard = true, group = g })
      local h = facet.heads.new("am", { classes = 4, dim = D, shard = true, group = g })
      local ok2, e2 = pcall(h.forward, h, facet.randn({ 2, D }), { 0, 4 })
      local ok3, e3 = pcall(h.backward, h)
      return { okk, e, ok2, e2, ok3, e3 }
    end)
    for r = 1, 2 do
      assert.is_false(res[r][1])
      assert.matches("classes must be an integer in %[2", res[r][2])
      assert.is_false(res[r][3])
      assert.matches("label 4 of row 2 outside %[0, 4%)", res[r][4])
      assert.is_false(res[r][5])
      assert.matches("no forward", res[r][6], 1, true)
    end
  end)

  -- the same bad labels on both ranks, as tensors on the device under test: on
  -- the CPU each rank refuses its own before any collective; on the GPU every
  -- rank refuses the gathered labels once the loss is read (naming the rank),
  -- so no rank is left waiting in a collective; then a good batch runs as the
  -- unsharded head
  H.it("refuse labels outside [0, classes) on every rank, then run the next batch as the unsharded head", function()
    local K, name = 5, "mv-arc"
    local x, y = batch(4, K, 9)
    local ref = reference(name, {}, K, 9, x, y)
    local res = LG.run(2, function(g)
      local h = facet.heads.new(name, { classes = K, dim = D, seed = 9, shard = true, group = g, device = H.device })
      local r = g:rank()
      local xl = H.on(x:narrow(1, 2 * r + 1, 2):contiguous())
      local ok, e = pcall(h.forward, h, xl, H.tensor({ 1, 7 }, { dtype = "int64" }))
      local ok2, e2 = pcall(h.backward, h)
      local loss = h:forward(xl, H.on(y:narrow(1, 2 * r + 1, 2):contiguous()))
      return { ok, e, ok2, e2, loss, h.iter }
    end)
    for r = 1, 2 do
      assert.is_false(res[r][1])
      local want = name .. ":forward: label 7 of row 2 " .. (H.device == "cpu" and "" or "of rank 0 ") .. "outside [0, 5)"
      assert.truthy(tostring(res[r][2]):find(want, 1, true), tostring(res[r][2]))
      assert.is_false(res[r][3])
      assert.matches("no forward", res[r][4], 1, true)
      H.assert_close(res[r][5], ref.loss, 1e-5)
      assert.are.equal(1, res[r][6])
    end
  end)
end)

return M
