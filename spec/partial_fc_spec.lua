--- Partial FC (negative-class sampling, facet.heads.new(..., { sample = r })):
-- every positive class of the global batch is kept; the sampled share of each
-- shard is round(r * rows) (the positives when they are more); the negatives
-- are drawn uniformly; the sampled head's loss and gradients are those of an
-- unsharded head over the sampled classes alone; unsampled rows get a zero
-- gradient; and SGD with momentum keeps moving them by momentum and weight
-- decay, checked against values computed by hand from the tensors.
local LG = require "support.local_group"
local facet = require "facet"
local sharded = require "facet.heads.sharded"

local D = 5

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- one sampled step on W ranks (Bl rows each): per rank the sampled classes,
-- the loss, dx and the block's gradient
local function sampled_step(name, K, W, Bl, sample, ys, x, steps, subcenters)
  return LG.run(W, function(g)
    local h = facet.heads.new(name, { classes = K, dim = D, seed = 2, shard = true, group = g, sample = sample,
      subcenters = subcenters })
    local r = g:rank()
    local xl = x:narrow(1, r * Bl + 1, Bl):contiguous()
    local yl = ys:narrow(1, r * Bl + 1, Bl):contiguous()
    local out = {}
    for s = 1, steps or 1 do
      h:zero_grad()
      local loss = h:forward(xl, yl)
      local dx = h:backward():clone()
      out[s] = { loss = loss, dx = dx, dW = h.grad_weight:clone(), cls = h:sampled_classes(),
        off = h.class_offset, rows = h.block_rows, weight = h.weight:clone() }
    end
    return out
  end)
end

describe("Partial FC", function()
  it("keeps every positive and round(sample * rows) classes per shard, in order, without repeats", function()
    local K, W, Bl = 200, 2, 4
    local ylist = { 3, 3, 150, 7, 99, 100, 101, 199 }
    local ys = facet.tensor(ylist, { dtype = "int64" })
    local x = facet.randn({ W * Bl, D }, { seed = 1 })
    local res = sampled_step("am", K, W, Bl, 0.1, ys, x, 3)
    for r = 1, W do
      for s = 1, 3 do
        local o = res[r][s]
        assert.equal(10, #o.cls)                -- round(0.1 * 100)
        local seen = set_of(o.cls)
        for _, y in ipairs(ylist) do
          if y >= o.off and y < o.off + o.rows then assert.is_true(seen[y], "positive " .. y .. " kept") end
        end
        for j = 2, #o.cls do assert.is_true(o.cls[j] > o.cls[j - 1]) end
        assert.is_true(o.cls[1] >= o.off and o.cls[#o.cls] < o.off + o.rows)
      end
      -- the negatives change from step to step
      assert.are_not.same(res[r][1].cls, res[r][2].cls)
    end
  end)

  it("keeps only the positives when they exceed the share", function()
    local K, Bl = 40, 6
    local ylist = { 0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 26 }
    local res = sampled_step("arc", K, 2, Bl, 0.1, facet.tensor(ylist, { dtype = "int64" }),
      facet.randn({ 12, D }, { seed = 2 }))
    assert.same({ 0, 1, 2, 3, 4, 5 }, res[1][1].cls)
    assert.same({ 21, 22, 23, 24, 25, 26 }, res[2][1].cls)
    assert.equal(1, sharded.sample_size(0.01, 20))
    assert.equal(20, sharded.sample_size(1, 20))
  end)

  it("draws the negatives uniformly", function()
    -- one shard of 50 classes, positive 0, 9 negatives per step from 49:
    -- over 400 steps each negative is drawn 400 * 9 / 49 = 73.5 times on
    -- average (sd 7.8); every count within 6 sd, and the total exact
    local K, steps = 50, 400
    local h = facet.heads.new("softmax", { classes = K, dim = D, sample = 0.2 })
    local x, y = facet.randn({ 1, D }, { seed = 3 }), facet.tensor({ 0 }, { dtype = "int64" })
    local counts = {}
    for k = 1, K - 1 do counts[k] = 0 end
    for _ = 1, steps do
      h:forward(x, y)
      h:backward()
      local cls = h:sampled_classes()
      assert.equal(10, #cls)
      assert.equal(0, cls[1])
      for j = 2, #cls do counts[cls[j]] = counts[cls[j]] + 1 end
    end
    local total = 0
    for k = 1, K - 1 do
      total = total + counts[k]
      assert.is_true(math.abs(counts[k] - 73.5) < 47, ("class %d drawn %d times"):format(k, counts[k]))
    end
    assert.equal(steps * 9, total)
  end)

  it("gives the loss and gradients of the unsharded head over the sampled classes, and zero elsewhere", function()
    for _, name in ipairs { "mv-am", "hm-arc", "l2-softmax", "combined" } do
      local K, W, Bl = 30, 2, 3
      local ylist = { 1, 17, 29, 4, 4, 12 }
      local ys = facet.tensor(ylist, { dtype = "int64" })
      local x = facet.randn({ W * Bl, D }, { seed = 5 })
      local res = sampled_step(name, K, W, Bl, 0.3, ys, x)
      -- the reference: a head over the union of the sampled classes, in order
      local union, at = {}, {}
      for r = 1, W do for _, c in ipairs(res[r][1].cls) do union[#union + 1] = c; at[c] = #union end end
      local full = facet.heads.new(name, { classes = K, dim = D, seed = 2 })
      local ref = facet.heads.new(name, { classes = #union, dim = D, seed = 2 })
      local idx = facet.tensor(union, { dtype = "int64" }) + 1
      ref.weight:copy(full.weight:index_select(idx))
      local mapped = {}
      for i, y in ipairs(ylist) do mapped[i] = at[y] - 1 end
      local loss = ref:forward(x, facet.tensor(mapped, { dtype = "int64" }))
      local dx = ref:backward()
      for r = 1, W do
        local o = res[r][1]
        assert.is_true(math.abs(o.loss - loss) <= 1e-5 * math.abs(loss), name .. ": loss")
        local err = (o.dx - dx:narrow(1, (r - 1) * Bl + 1, Bl)):abs():max()
        assert.is_true(err <= 1e-5 * dx:abs():max() + 1e-7, name .. ": dx")
        local kept = set_of(o.cls)
        for k = 0, o.rows - 1 do
          local c = o.off + k
          local row = o.dW:select(1, k + 1)
          if kept[c] then
            local want = ref.grad_weight:select(1, at[c])
            assert.is_true((row - want):abs():max() <= 1e-5 * ref.grad_weight:abs():max() + 1e-7,
              name .. ": dW of sampled class " .. c)
          else
            assert.equal(0, row:abs():max(), name .. ": dW of unsampled class " .. c)
          end
        end
      end
    end
  end)

  it("with sub-centres keeps the sampled classes' k rows: the unsharded head over them, zero elsewhere", function()
    local K, W, Bl, k = 30, 2, 3, 3
    local ylist = { 1, 17, 29, 4, 4, 12 }
    local ys = facet.tensor(ylist, { dtype = "int64" })
    local x = facet.randn({ W * Bl, D }, { seed = 6 })
    local res = sampled_step("arc", K, W, Bl, 0.3, ys, x, 1, k)
    local union, at, rows = {}, {}, {}
    for r = 1, W do
      for _, c in ipairs(res[r][1].cls) do
        union[#union + 1] = c
        at[c] = #union
        for j = 1, k do rows[#rows + 1] = c * k + j end   -- 1-based rows of the full weight
      end
    end
    local full = facet.heads.new("arc", { classes = K, dim = D, seed = 2, subcenters = k })
    local ref = facet.heads.new("arc", { classes = #union, dim = D, subcenters = k })
    ref.weight:copy(full.weight:index_select(facet.tensor(rows, { dtype = "int64" })))
    local mapped = {}
    for i, y in ipairs(ylist) do mapped[i] = at[y] - 1 end
    local loss = ref:forward(x, facet.tensor(mapped, { dtype = "int64" }))
    local dx = ref:backward()
    local scale = ref.grad_weight:abs():max()
    for r = 1, W do
      local o = res[r][1]
      assert.is_true(math.abs(o.loss - loss) <= 1e-5 * math.abs(loss), "loss")
      assert.is_true((o.dx - dx:narrow(1, (r - 1) * Bl + 1, Bl)):abs():max() <= 1e-5 * dx:abs():max(), "dx")
      assert.equal(o.rows * k, o.dW:size(1))
      local kept = set_of(o.cls)
      for c = o.off, o.off + o.rows - 1 do
        for j = 1, k do
          local row = o.dW:select(1, (c - o.off) * k + j)
          if kept[c] then
            local want = ref.grad_weight:select(1, (at[c] - 1) * k + j)
            assert.is_true((row - want):abs():max() <= 1e-5 * scale + 1e-7, "dW of class " .. c .. " sub-centre " .. j)
          else
            assert.equal(0, row:abs():max(), "dW of unsampled class " .. c)
          end
        end
      end
    end
  end)

  it("trains a fused head (radial part and W norms in the SGD pass) as the unfused one", function()
    local function run(fused)
      local h = facet.heads.new("mv-arc", { classes = 40, dim = D, seed = 4, sample = 0.2, fused = fused })
      local opt = facet.optim.sgd(h, { lr = 0.1, momentum = 0.9, weight_decay = 0.01 })
      local losses = {}
      for s = 1, 4 do
        opt:zero_grad()
        local y = facet.tensor({ s, 2 * s, 3 * s, 39 }, { dtype = "int64" })
        losses[s] = h:forward(facet.randn({ 4, D }, { seed = s }), y)
        h:backward()
        opt:step()
      end
      return losses, h.weight:clone()
    end
    local l0, w0 = run(false)
    local l1, w1 = run(true)
    for s = 1, 4 do assert.is_true(math.abs(l0[s] - l1[s]) <= 1e-5 * math.abs(l0[s]), "loss of step " .. s) end
    assert.is_true((w0 - w1):abs():max() <= 1e-5 * w0:abs():max())
  end)

  it("lets SGD's momentum and weight decay keep acting on unsampled rows (hand-computed)", function()
    local K, lr, mu, wd = 20, 0.1, 0.9, 0.01
    local h = facet.heads.new("am", { classes = K, dim = D, seed = 8, sample = 0.25 })
    local opt = facet.optim.sgd(h, { lr = lr, momentum = mu, weight_decay = wd })
    local w0 = h.weight:clone():totable()
    -- one step on a batch; returns the sampled classes, the gradient and the weight after the update
    local function step(seed, labels)
      h:zero_grad()
      h:forward(facet.randn({ 3, D }, { seed = seed }), facet.tensor(labels, { dtype = "int64" }))
      h:backward()
      local sampled, g = set_of(h:sampled_classes()), h.grad_weight:clone():totable()
      opt:step()
      return sampled, g, h.weight:clone():totable()
    end
    local s1, g1, w1 = step(1, { 2, 9, 15 })
    local s2, g2, w2 = step(2, { 4, 11, 18 })
    local moved_by_momentum = 0
    for k = 1, K do
      for j = 1, D do
        -- step 1 (buf = g): buf1 = g1 + wd w0, w1 = w0 - lr buf1
        local buf1 = g1[k][j] + wd * w0[k][j]
        local want1 = w0[k][j] - lr * buf1
        assert.is_true(math.abs(w1[k][j] - want1) <= 1e-6 * (1 + math.abs(lr * buf1)),
          ("w1[%d][%d] = %.9g, want %.9g"):format(k, j, w1[k][j], want1))
        -- step 2: buf2 = mu buf1 + g2 + wd w1, w2 = w1 - lr buf2
        local buf2 = mu * buf1 + g2[k][j] + wd * w1[k][j]
        local want2 = w1[k][j] - lr * buf2
        assert.is_true(math.abs(w2[k][j] - want2) <= 1e-6 * (1 + math.abs(lr * buf2)),
          ("w2[%d][%d] = %.9g, want %.9g"):format(k, j, w2[k][j], want2))
        if not s1[k - 1] then assert.equal(0, g1[k][j]) end
        if not s2[k - 1] then assert.equal(0, g2[k][j]) end
      end
      if s1[k - 1] and not s2[k - 1] then
        -- sampled, then not: it still moves by lr (mu buf1 + wd w1), not 0
        moved_by_momentum = moved_by_momentum + 1
        assert.is_true(math.abs(w2[k][1] - w1[k][1]) > 1e-4)
      end
    end
    assert.is_true(moved_by_momentum > 0, "a row sampled in step 1 and not in step 2")
  end)
end)
