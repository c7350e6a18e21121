--- Sub-centres (Sub-center ArcFace, Deng et al., ECCV 2020) on the cosine heads:
-- hand-computed losses and gradients where the winning sub-centre of each
-- (row, class) is known (only it gets a gradient, with the uint8 index up to
-- 254); k identical copies equal the plain head, their gradient in the first
-- copy; InsightFace's formulation in PyTorch (spec/support/subcenter_torch.py)
-- for arc and am; NaN in a weight row or in x reaching the loss; the option's
-- checks; and facet_head_subcenter_max / _scatter called directly, their
-- values and their argument checks.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local ffi = require "ffi"
local core = require "facet.core"
local C = core.C

local HAVE_TORCH = select(2, F.sh(F.PY .. " -c 'import torch'")) == 0

local function arc(c, m) return math.cos(math.acos(c) + m) end

-- the cross-entropy of logits z (a Lua list) at 1-based y
local function ce(z, y)
  local mx = -math.huge
  for _, v in ipairs(z) do mx = math.max(mx, v) end
  local sum = 0
  for _, v in ipairs(z) do sum = sum + math.exp(v - mx) end
  return mx + math.log(sum) - z[y]
end

local function dot(a, b)
  local r = 0
  for i = 1, #a do r = r + a[i] * b[i] end
  return r
end

local function scaled(a, f)
  local r = {}
  for i = 1, #a do r[i] = a[i] * f end
  return r
end

-- ArcFace's mean loss, dL/dx and dL/dW in double when row i's class c takes
-- row win[i][c] of W (1-based; y 1-based too): the gradient of the cosine
-- (x^ - c w^) / ||w|| goes to that row alone
local function arc_by_hand(X, W, win, y, s, m)
  local B, D = #X, #X[1]
  local loss, dx, dW = 0, {}, {}
  for r = 1, #W do dW[r] = H.constant(D, 0) end
  for i = 1, B do
    local nx = math.sqrt(dot(X[i], X[i]))
    local xh = scaled(X[i], 1 / nx)
    local cos, wh, nw, z, dz = {}, {}, {}, {}, {}
    for c, r in ipairs(win[i]) do
      nw[c] = math.sqrt(dot(W[r], W[r]))
      wh[c] = scaled(W[r], 1 / nw[c])
      cos[c] = dot(xh, wh[c])
      if c == y[i] then
        local th = math.acos(cos[c])
        z[c], dz[c] = s * math.cos(th + m), s * math.sin(th + m) / math.sin(th)
      else
        z[c], dz[c] = s * cos[c], s
      end
    end
    local l = ce(z, y[i])
    loss = loss + l / B
    local lse = l + z[y[i]]
    dx[i] = H.constant(D, 0)
    for c, r in ipairs(win[i]) do
      local g = (math.exp(z[c] - lse) - (c == y[i] and 1 or 0)) * dz[c] / B
      for d = 1, D do
        dx[i][d] = dx[i][d] + g * (wh[c][d] - cos[c] * xh[d]) / nx
        dW[r][d] = dW[r][d] + g * (xh[d] - cos[c] * wh[c][d]) / nw[c]
      end
    end
  end
  return loss, dx, dW
end

local function flat(rows)
  local r = {}
  for _, row in ipairs(rows) do for _, v in ipairs(row) do r[#r + 1] = v end end
  return r
end

-- the rows of a 2-D tensor (any device) as Lua lists
local function rows_of(t) return t:to("cpu"):totable() end

describe("hand-computed sub-centres", function()
  -- dim 2, two classes of two sub-centres (rows 1, 2: class 0; rows 3, 4: class 1), non-unit norms:
  -- row a of x, (0.6, 0.8): cosines 0.6, -0.8 | -0.8, 0.8, so class 0 takes W row 1, class 1 row 4
  -- row b, (4, -3) = 5 (0.8, -0.6): cosines 0.8, 0.6 | 0.6, -0.6, so class 0 takes row 1, class 1 row 3
  -- W row 2 never wins
  local W = { { 1, 0 }, { 0, -3 }, { 0, -0.5 }, { 0, 4 } }
  local XA, XB = { 0.6, 0.8 }, { 4, -3 }
  local WIN = { a = { 1, 4 }, b = { 1, 3 } }
  local s, m = 4, 0.5

  local function head()
    local h = facet.heads.new("arc", { classes = 2, dim = 2, s = s, m = m, subcenters = 2 })
    h.weight:copy(facet.tensor(W))
    return h:to(H.device)
  end

  H.it("arc: the loss is ArcFace's on the best cosines; only the winning sub-centre gets a gradient", function()
    local h = head()
    local y = H.tensor({ 0 }, { dtype = "int64" })
    -- one row at a time: the winners of that row get a gradient, the other rows of W exactly none
    for _, case in ipairs { { XA, WIN.a, ce({ s * arc(0.6, m), s * 0.8 }, 1) },
      { XB, WIN.b, ce({ s * arc(0.8, m), s * 0.6 }, 1) } } do
      h:zero_grad()
      local loss = h:forward(H.tensor { case[1] }, y)
      H.assert_close(loss, case[3], 1e-5, 1e-7)
      local dx = h:backward()
      local _, hdx, hdW = arc_by_hand({ case[1] }, W, { case[2] }, { 1 }, s, m)
      H.assert_close(H.values(dx), flat(hdx), 1e-4, 1e-6)
      local gw = rows_of(h.grad_weight)
      for r = 1, 4 do
        local won = r == case[2][1] or r == case[2][2]
        for d = 1, 2 do
          if won then
            H.assert_close(gw[r][d], hdW[r][d], 1e-4, 1e-6)
          else
            assert.are.equal(0, gw[r][d], ("W row %d lost every class, yet has a gradient"):format(r))
          end
        end
        if won then assert.is_true(math.abs(gw[r][1]) + math.abs(gw[r][2]) > 1e-3, "winner row " .. r) end
      end
    end
    -- both rows in one batch (labels 0 and 1): the gradients add up, row 2 of W still has none
    h:zero_grad()
    local loss = h:forward(H.tensor { XA, XB }, H.tensor({ 0, 1 }, { dtype = "int32" }))
    local want = (ce({ s * arc(0.6, m), s * 0.8 }, 1) + ce({ s * 0.8, s * arc(0.6, m) }, 2)) / 2
    H.assert_close(loss, want, 1e-5, 1e-7)
    local hl, hdx, hdW = arc_by_hand({ XA, XB }, W, { WIN.a, WIN.b }, { 1, 2 }, s, m)
    H.assert_close(hl, want, 1e-12)
    H.assert_close(H.values(h:backward()), flat(hdx), 1e-4, 1e-6)
    H.assert_close(H.values(h.grad_weight), flat(hdW), 1e-4, 1e-6)
    assert.are.same({ 0, 0 }, rows_of(h.grad_weight)[2])
  end)

  H.it("am and norm-softmax take the same best cosines", function()
    local x, y = H.tensor { XA, XB }, H.tensor({ 1, 0 }, { dtype = "int64" })
    local am = facet.heads.new("am", { classes = 2, dim = 2, s = s, m = 0.35, subcenters = 2 })
    am.weight:copy(facet.tensor(W))
    am = am:to(H.device)
    H.assert_close(am:forward(x, y), (ce({ s * 0.6, s * (0.8 - 0.35) }, 2) + ce({ s * (0.8 - 0.35), s * 0.6 }, 1)) / 2,
      1e-5, 1e-7)
    local ns = facet.heads.new("norm-softmax", { classes = 2, dim = 2, s = s, subcenters = 2 })
    ns.weight:copy(facet.tensor(W))
    ns = ns:to(H.device)
    H.assert_close(ns:forward(x, y), (ce({ s * 0.6, s * 0.8 }, 2) + ce({ s * 0.8, s * 0.6 }, 1)) / 2, 1e-5, 1e-7)
  end)

  H.it("255 sub-centres: the winner can be the last (index 254), and only it moves", function()
    -- class 0's sub-centre j at angle (255 - j) / 100 rad: the last is nearest x = (1, 0);
    -- class 1's at 1 + j / 100 rad: its first is nearest
    local k = 255
    local rows = {}
    for j = 0, k - 1 do rows[j + 1] = { math.cos((k - j) / 100), math.sin((k - j) / 100) } end
    for j = 0, k - 1 do rows[k + j + 1] = { math.cos(1 + j / 100), math.sin(1 + j / 100) } end
    local h = facet.heads.new("arc", { classes = 2, dim = 2, s = s, m = m, subcenters = k })
    assert.are.same({ 2 * k, 2 }, h.weight:shape())
    h.weight:copy(facet.tensor(rows))
    h = h:to(H.device)
    local loss = h:forward(H.tensor { { 1, 0 } }, H.tensor({ 0 }, { dtype = "int32" }))
    -- the cosines are float32 of cos(0.01) and cos(1)
    H.assert_close(loss, ce({ s * arc(math.cos(0.01), m), s * math.cos(1) }, 1), 1e-4, 1e-6)
    h:backward()
    local gw = rows_of(h.grad_weight)
    for r = 1, 2 * k do
      local moved = gw[r][1] ~= 0 or gw[r][2] ~= 0
      assert.are.equal(r == k or r == k + 1, moved, "W row " .. r)
    end
  end)
end)

describe("identical sub-centres", function()
  -- k copies of each row of the plain head's W tie at every class; the first copy wins
  local function equivalent(name, opts, k)
    local K, D, B = 7, 5, 6
    local W = facet.randn({ K, D }, { seed = 21 })
    local idx = {}
    for c = 1, K do for j = 1, k do idx[#idx + 1] = c end end
    local copies = W:index_select(facet.tensor(idx, { dtype = "int64" }))
    local function make(sub, w)
      local o = { classes = K, dim = D, subcenters = sub }
      for key, v in pairs(opts) do o[key] = v end
      local h = facet.heads.new(name, o)
      h.weight:copy(w)
      return h:to(H.device)
    end
    local plain, many = make(1, W), make(k, copies)
    local x = H.on(facet.randn({ B, D }, { seed = 22 }))
    local y = H.tensor({ 0, 3, 6, 2, 2, 5 }, { dtype = "int64" })
    local lp, lm = plain:forward(x, y), many:forward(x, y)
    H.assert_close(lm, lp, 1e-6, 1e-7)
    -- dL/dx sums over K k rows here and K there: a GPU's GEMM picks its summation order by shape
    -- (FACET_EMU_GEMM=scramble), so they agree to the order bound, about k u sum|a b| (u = 2^-24)
    local gxm, gxp = H.values(many:backward()), H.values(plain:backward())
    local sx = 0
    for _, v in ipairs(gxp) do sx = math.max(sx, math.abs(v)) end
    H.assert_close(gxm, gxp, 0, 4 * K * k * 2 ^ -24 * sx)
    local gp, gm = rows_of(plain.grad_weight), rows_of(many.grad_weight)
    -- the target's one-hot term is divided by ||w|| before (plain) or after (sub-centres) it joins
    -- p_y's, a rounding apart; the radial part taken out of a row then cancels most of it, so the
    -- rows agree to 1e-6 of dL/dW's largest value, not of each element
    local scale = 0
    for _, v in ipairs(flat(gp)) do scale = math.max(scale, math.abs(v)) end
    for c = 1, K do
      H.assert_close(gm[(c - 1) * k + 1], gp[c], 0, 1e-6 * scale)
      assert.is_true(math.abs(gp[c][1]) > 0, name .. ": class " .. c .. " has a gradient")
      for j = 2, k do
        assert.are.same(H.constant(D, 0), gm[(c - 1) * k + j], ("%s: copy %d of class %d"):format(name, j, c - 1))
      end
    end
  end

  H.it("arc with 3 copies equals plain arc; dL/dW lands in the first copy", function()
    equivalent("arc", { s = 16 }, 3)
  end)
  H.it("am with 4 copies and mv-arc with 2 equal their plain heads", function()
    equivalent("am", { s = 16, m = 0.35 }, 4)
    equivalent("mv-arc", { s = 8 }, 2)
  end)
end)

describe("against InsightFace's formulation in PyTorch (spec/support/subcenter_torch.py)", function()
  -- W: K class centres, each copied k times with noise (so a class's sub-centres are near one another);
  -- step 1 puts rows near their class, step 2 anywhere, step 3 opposite their class (theta + m past pi
  -- for arc); three steps, each compared on its own (W does not change)
  local function against_torch(name, margin, m)
    local K, k, D, B, s, steps = 13, 3, 8, 10, 16, 3
    local centre = facet.randn({ K, D }, { seed = 71 })
    local idx = {}
    for c = 1, K do for _ = 1, k do idx[#idx + 1] = c end end
    local W = centre:index_select(facet.tensor(idx, { dtype = "int64" })):add(facet.randn({ K * k, D }, { seed = 72, std = 0.5 }))
    local dir = H.temp_dir()
    facet.save_npy(W, dir .. "/w.npy")
    local xs, ys = {}, {}
    for step = 1, steps do
      local yl = {}
      for i = 1, B do yl[i] = (i * 5 + step * 3) % K end
      ys[step] = facet.tensor(yl, { dtype = "int64" })
      local near = centre:index_select(ys[step]:add(1))
      local noise = facet.randn({ B, D }, { seed = 80 + step }):mul(0.6)
      xs[step] = step == 1 and noise:add(near) or step == 2 and noise:mul(2) or noise:mul(0.3):sub(near)
      facet.save_npy(xs[step], ("%s/x%d.npy"):format(dir, step))
      facet.save_npy(ys[step], ("%s/y%d.npy"):format(dir, step))
    end
    local out, rc = F.sh(("%s spec/support/subcenter_torch.py %s %d %d %d %g %g %s"):format(F.PY, dir, steps, K, k, s,
      m, margin))
    assert.are.equal(0, rc, out)
    local head = facet.heads.new(name, { classes = K, dim = D, s = s, m = m, subcenters = k })
    head.weight:copy(W)
    head = head:to(H.device)
    local function rel(a, b) return (a:to("cpu") - b):abs():max() / b:abs():max() end
    local fallbacks = 0
    for step = 1, steps do
      head:zero_grad()
      local loss = head:forward(H.on(xs[step]), H.on(ys[step]))
      local dx = head:backward()
      local ref = facet.load_npy(("%s/out%d.npy"):format(dir, step)):totable()
      -- a best and second-best sub-centre closer than float32 could tell apart would make the case moot
      assert.is_true(ref[3] > 1e-4, ("step %d: sub-centres %g apart"):format(step, ref[3]))
      fallbacks = fallbacks + ref[2]
      H.assert_close(loss, ref[1], 1e-5)
      local rdx = facet.load_npy(("%s/dx%d.npy"):format(dir, step))
      local rdw = facet.load_npy(("%s/dw%d.npy"):format(dir, step))
      assert.is_true(rel(dx, rdx) < 1e-4, ("step %d: dL/dx off by %g"):format(step, rel(dx, rdx)))
      assert.is_true(rel(head.grad_weight, rdw) < 1e-4,
        ("step %d: dL/dW off by %g"):format(step, rel(head.grad_weight, rdw)))
    end
    H.remove_dir(dir)
    return fallbacks
  end

  H.it("arc, k = 3: loss, dL/dx, dL/dW over three steps, arc's fallback past pi included", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    assert.is_true(against_torch("arc", "arc", 0.5) > 0, "no row took the fallback")
  end)

  H.it("am (CosFace), k = 3", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    against_torch("am", "am", 0.35)
  end)
end)

describe("NaN in a sub-centre", function()
  local K, D, k = 4, 3, 3
  local function setup()
    local h = facet.heads.new("arc", { classes = K, dim = D, s = 8, subcenters = k })
    h.weight:copy(facet.randn({ K * k, D }, { seed = 41 }))
    return h:to(H.device)
  end
  local x = facet.randn({ 5, D }, { seed = 42 })
  local y = H.tensor({ 0, 1, 0, 1, 0 }, { dtype = "int64" })   -- classes 2 and 3 are no row's label

  H.it("a NaN weight row of any sub-centre makes the loss NaN (the max does not hide it); backward runs", function()
    local clean = setup():forward(H.on(x), y)
    assert.is_true(clean == clean, "the clean loss is a number")
    -- the first, middle and last sub-centre of a non-label class; the last of a label's class
    for _, r in ipairs { 2 * k + 1, 2 * k + 2, 3 * k, k } do
      local h = setup()
      local w = h.weight:to("cpu")
      w:narrow(1, r, 1):fill_(0 / 0)
      h.weight:copy(w)
      local loss = h:forward(H.on(x), y)
      assert.is_true(loss ~= loss, "W row " .. r .. ": loss " .. tostring(loss))
      local dx = h:backward()
      assert.are.same({ 5, D }, dx:shape())
      -- the head still works once the row is a number again
      h.weight:copy(setup().weight)
      h:zero_grad()
      assert.are.equal(clean, h:forward(H.on(x), y))
    end
  end)

  H.it("a NaN row of x makes the loss NaN", function()
    local h = setup()
    local xn = x:clone()
    xn:narrow(1, 4, 1):fill_(0 / 0)
    local loss = h:forward(H.on(xn), y)
    assert.is_true(loss ~= loss, "loss " .. tostring(loss))
    local dx = h:backward()
    assert.are.same({ 5, D }, dx:shape())
  end)
end)

describe("the subcenters option", function()
  local function new(name, sub) return facet.heads.new(name, { classes = 3, dim = 2, subcenters = sub }) end

  it("is an integer in [1, 255]", function()
    for _, bad in ipairs { 0, 256, 1.5, -1, "3", 0 / 0, true } do
      H.assert_error(function() new("arc", bad) end, "subcenters")
    end
    assert.are.equal(255, new("arc", 255).subcenters)
  end)

  it("belongs to the cosine heads: softmax and l2-softmax refuse it", function()
    H.assert_error(function() new("softmax", 2) end, "unknown option 'subcenters'")
    H.assert_error(function() new("l2-softmax", 2) end, "unknown option 'subcenters'")
    for _, name in ipairs { "norm-softmax", "am", "arc", "combined", "a-softmax", "f-arc", "hm-am", "mv-arc",
      "curricular", "adaface", "magface" } do
      assert.are.equal(2, new(name, 2).subcenters, name)
    end
  end)

  it("shows in tostring; the weight has classes x subcenters rows", function()
    local h = facet.heads.new("arc", { classes = 5, dim = 4, subcenters = 3 })
    assert.truthy(tostring(h):find("subcenters=3", 1, true), tostring(h))
    assert.are.same({ 15, 4 }, h.weight:shape())
    assert.are.same({ 15, 4 }, h.grad_weight:shape())
    assert.falsy(tostring(new("arc", 1)):find("subcenters", 1, true))
    assert.are.same({ 3, 2 }, new("arc", 1).weight:shape())
  end)

  H.it("subcenters = 1 is the plain head, bit for bit", function()
    for _, name in ipairs { "arc", "am", "curricular" } do
      local a = facet.heads.new(name, { classes = 9, dim = 6, seed = 3 }):to(H.device)
      local b = facet.heads.new(name, { classes = 9, dim = 6, seed = 3, subcenters = 1 }):to(H.device)
      assert.are.same(H.values(a.weight), H.values(b.weight))
      local x = H.on(facet.randn({ 7, 6 }, { seed = 4 }))
      local y = H.tensor({ 0, 8, 1, 7, 2, 6, 3 }, { dtype = "int32" })
      assert.are.equal(a:forward(x, y), b:forward(x, y), name)
      assert.are.same(H.values(a:backward()), H.values(b:backward()), name)
      assert.are.same(H.values(a.grad_weight), H.values(b.grad_weight), name)
    end
  end)
end)

describe("facet_head_subcenter_max and facet_head_subcenter_scatter called directly", function()
  local dev = { device = H.device }
  local u8 = { device = H.device, dtype = "uint8" }

  -- one row, 2 classes of 3 sub-centres: class 0's cosines 0.25, 0.5, 1.5 -> 1 (clamped);
  -- class 1's 0.75, 0.75 (a tie: the first wins), 0.5
  local SUB, WNORM = { 0.25, 1, 0.75, 3, 3, 1 }, { 1, 2, 0.5, 4, 4, 2 }

  H.it("the best cosine (clamped; the first of equal ones) and its index; the gradient to that sub-centre", function()
    local sub, wnorm = H.tensor { SUB }, H.tensor(WNORM)
    local cos, index = facet.full({ 1, 2 }, 7, dev), facet.full({ 1, 2 }, 9, u8)
    assert.are.equal(0, C.facet_head_subcenter_max(cos.h, index.h, sub.h, wnorm.h), core.last_error())
    assert.are.same({ 1, 0.75 }, H.values(cos))
    assert.are.same({ 2, 0 }, H.values(index))
    assert.are.same(SUB, H.values(sub))   -- read, not changed
    -- dLoss/dcos 0.5 and -2: sub becomes 0.5 / 0.5 at class 0's third column and -2 / 4 at class
    -- 1's first, 0 elsewhere; colsum_cos those times their cosines (1 and 0.75)
    local grad, colsum = H.tensor { { 0.5, -2 } }, facet.full({ 6 }, 7, dev)
    assert.are.equal(0, C.facet_head_subcenter_scatter(sub.h, colsum.h, grad.h, index.h, wnorm.h), core.last_error())
    assert.are.same({ 0, 0, 1, -0.5, 0, 0 }, H.values(sub))
    assert.are.same({ 0, 0, 1, -0.375, 0, 0 }, H.values(colsum))
    -- colsum_cos may be NULL
    sub:copy(H.tensor { SUB })
    assert.are.equal(0, C.facet_head_subcenter_scatter(sub.h, nil, grad.h, index.h, wnorm.h), core.last_error())
    assert.are.same({ 0, 0, 1, -0.5, 0, 0 }, H.values(sub))
  end)

  H.it("a NaN cosine wins wherever it stands, so it reaches the loss", function()
    local nan = 0 / 0
    -- class 0: NaN first (nothing beats it); class 1: NaN last, after a finite best
    local sub = H.tensor { { nan, 0.5, 0.9, 0.9, 0.1, nan } }
    local wnorm = H.tensor { 1, 1, 1, 1, 1, 1 }
    local cos, index = facet.full({ 1, 2 }, 7, dev), facet.full({ 1, 2 }, 9, u8)
    assert.are.equal(0, C.facet_head_subcenter_max(cos.h, index.h, sub.h, wnorm.h), core.last_error())
    local c = H.values(cos)
    assert.is_true(c[1] ~= c[1] and c[2] ~= c[2], "cosines " .. tostring(c[1]) .. ", " .. tostring(c[2]))
    assert.are.same({ 0, 2 }, H.values(index))
  end)

  H.it("refuse bad arguments with a message naming the problem, writing nothing", function()
    local B, Kb, k = 2, 3, 2
    local cos, index = facet.full({ B, Kb }, 7, dev), facet.full({ B, Kb }, 9, u8)
    local grad = facet.full({ B, Kb }, 0.5, dev)
    local sub, wnorm = facet.full({ B, Kb * k }, 3, dev), facet.full({ Kb * k }, 2, dev)
    local colsum = facet.full({ Kb * k }, 7, dev)
    local function refused(rc, ...)
      assert.are_not.equal(0, rc)
      local msg = core.last_error()
      for _, want in ipairs { ... } do assert.truthy(msg:find(want, 1, true), ("%q lacks %q"):format(msg, want)) end
    end
    local function max(c, i, s, w) return C.facet_head_subcenter_max(c, i, s, w) end
    local function scatter(s, cc, g, i, w) return C.facet_head_subcenter_scatter(s, cc, g, i, w) end
    local MAX, SCATTER = "facet_head_subcenter_max: ", "facet_head_subcenter_scatter: "

    -- index of the wrong dtype
    local findex = facet.full({ B, Kb }, 0, dev)
    refused(max(cos.h, findex.h, sub.h, wnorm.h), MAX, "index must be uint8")
    refused(scatter(sub.h, colsum.h, grad.h, findex.h, wnorm.h), SCATTER, "index must be uint8")
    refused(max(facet.full({ B, Kb }, 0, { device = H.device, dtype = "int32" }).h, index.h, sub.h, wnorm.h), MAX,
      "cos must be float32")
    -- index of the wrong shape
    refused(max(cos.h, facet.full({ B, Kb + 1 }, 0, u8).h, sub.h, wnorm.h), MAX, "index must be contiguous 2x3")
    -- sub: columns not a multiple of Kb, k = 256, the wrong rows
    local odd = facet.full({ B, Kb * k + 1 }, 3, dev)
    refused(max(cos.h, index.h, odd.h, facet.full({ Kb * k + 1 }, 2, dev).h), MAX, "sub must be contiguous",
      "1 <= k <= 255")
    refused(max(cos.h, index.h, facet.full({ B, Kb * 256 }, 3, dev).h, facet.full({ Kb * 256 }, 2, dev).h), MAX,
      "1 <= k <= 255")
    refused(scatter(facet.full({ B, Kb * 256 }, 3, dev).h, nil, grad.h, index.h, facet.full({ Kb * 256 }, 2, dev).h),
      SCATTER, "1 <= k <= 255")
    refused(max(cos.h, index.h, facet.full({ B + 1, Kb * k }, 3, dev).h, wnorm.h), MAX, "sub must be contiguous 2 x (3 k)")
    -- wnorm of the wrong length
    refused(max(cos.h, index.h, sub.h, facet.full({ Kb * k - 1 }, 2, dev).h), MAX, "wnorm must be contiguous with 6 values")
    refused(scatter(sub.h, colsum.h, grad.h, index.h, facet.full({ Kb }, 2, dev).h), SCATTER,
      "wnorm must be contiguous with 6 values")
    -- NULL tensors
    refused(max(nil, index.h, sub.h, wnorm.h), MAX, "cos is NULL")
    refused(max(cos.h, nil, sub.h, wnorm.h), MAX, "index is NULL")
    refused(max(cos.h, index.h, nil, wnorm.h), MAX, "sub is NULL")
    refused(max(cos.h, index.h, sub.h, nil), MAX, "wnorm is NULL")
    refused(scatter(nil, colsum.h, grad.h, index.h, wnorm.h), SCATTER, "sub is NULL")
    refused(scatter(sub.h, colsum.h, nil, index.h, wnorm.h), SCATTER, "grad is NULL")
    refused(scatter(sub.h, colsum.h, grad.h, nil, wnorm.h), SCATTER, "index is NULL")
    -- colsum_cos of the wrong length or dtype
    refused(scatter(sub.h, facet.full({ Kb }, 7, dev).h, grad.h, index.h, wnorm.h), SCATTER,
      "colsum_cos must be contiguous with 6 values")
    refused(scatter(sub.h, facet.full({ Kb * k }, 7, { device = H.device, dtype = "int32" }).h, grad.h, index.h,
      wnorm.h), SCATTER, "colsum_cos must be float32")
    -- tensors on different devices
    if H.device == "cuda" then
      local cpu_index = facet.full({ B, Kb }, 9, { dtype = "uint8" })
      refused(max(cos.h, cpu_index.h, sub.h, wnorm.h), MAX, "tensors on different devices")
      refused(max(cos.h, index.h, sub.h, facet.full({ Kb * k }, 2).h), MAX, "tensors on different devices")
      refused(scatter(sub.h, facet.full({ Kb * k }, 7).h, grad.h, index.h, wnorm.h), SCATTER,
        "tensors on different devices")
      refused(scatter(facet.full({ B, Kb * k }, 3).h, colsum.h, grad.h, index.h, wnorm.h), SCATTER,
        "tensors on different devices")
    end
    -- nothing was written
    assert.are.same(H.constant(B * Kb, 7), H.values(cos))
    assert.are.same(H.constant(B * Kb, 9), H.values(index))
    assert.are.same(H.constant(B * Kb * k, 3), H.values(sub))
    assert.are.same(H.constant(Kb * k, 7), H.values(colsum))
    -- and the arguments that were refused work together
    assert.are.equal(0, max(cos.h, index.h, sub.h, wnorm.h), core.last_error())
    assert.are.same(H.constant(B * Kb, 1), H.values(cos))
  end)
end)
