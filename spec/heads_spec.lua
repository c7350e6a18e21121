--- Loss heads: every head of the catalogue against an independent double-precision
-- reference (spec/support/head_reference.lua) for the loss, and central
-- differences of that reference for dL/dx, dL/dW, dL/db and dL/dalpha; hand
-- values for small cases; the t = 0 and m = 0 identities; focal and hard
-- mining on crafted batches; adversarial inputs; scripted h and margins;
-- and the error paths.
local H = require "support.device"
local R = require "support.head_reference"
local facet = H.facet

local function margin_of(name)
  if name == "curricular" then return "arc" end
  if name == "adaface" or name == "magface" or name == "elastic-arc" or name == "elastic-cos" then return name end
  if name:find("am$") then return "am" end
  if name:find("arc$") then return "arc" end
  if name == "combined" or name == "a-softmax" then return name end
  return "none"
end

-- the reference configuration of a constructed head
local function ref_cfg(head)
  local name = head.name
  local cfg = { kind = head.kind, margin = margin_of(name), s = head.s, m = head.m, m1 = head.m1, m2 = head.m2,
    m3 = head.m3, t = facet.is_tensor(head.t) and head.t:item() or head.t, h = head.h, gamma = head.gamma, keep = head.keep, sample = head.sample,
    lambda = head.current_lambda or head.lambda, easy_margin = head.easy_margin, l_a = head.l_a, u_a = head.u_a,
    l_m = head.l_m, u_m = head.u_m, lambda_g = head.lambda_g, subcenters = head.subcenters,
    -- ElasticFace: the margins the forward drew (not differentiated)
    mi = head.margins and head:margins() and head:margins():to("cpu"):totable() }
  if head.kind == "raw" or head.kind == "l2" then cfg.margin = "none" end
  if head.alpha then cfg.alpha = head.alpha:item() end
  return cfg
end

local function tbl(t) return t:to("cpu"):totable() end

-- compares facet's loss and gradients with the reference's; more (optional):
-- labels (0-based, a Lua list of B), wrows (the rows of W whose gradient is
-- checked, 1-based: central differences of every row are slow at large K),
-- loss_only (no gradients: the reference is slow at large K)
local function check_head(name, opts, B, D, K, seed, tol, more)
  tol = tol or 2e-3
  more = more or {}
  opts.classes, opts.dim, opts.seed = K, D, seed
  local head = facet.heads.new(name, opts)
  if head.kind == "raw" or head.kind == "l2" then
    head.bias:copy(facet.randn({ K }, { seed = seed + 7, std = 0.3 }))
  end
  head.weight:copy(facet.randn(head.weight:shape(), { seed = seed + 1 }))   -- K k x D with sub-centres
  head = head:to(H.device)
  local x = facet.randn({ B, D }, { seed = seed + 2 })
  local ylist = more.labels or {}
  if not more.labels then for i = 1, B do ylist[i] = (i * 7 + seed) % K end end
  local y = facet.tensor(ylist, { dtype = "int64" })
  local loss = head:forward(H.on(x), H.on(y))
  local dx = head:backward()
  local cfg = ref_cfg(head)
  local X, W = tbl(x), tbl(head.weight)
  if head.norm_h then
    -- AdaFace: each row's z from the norms and the statistics of before the forward (not differentiated)
    local _, _, z = R.adaface_stats(20, 100, head.momentum, head.norm_h, X)
    cfg.z = z
  end
  local b = head.bias and tbl(head.bias) or nil
  local ref = R.loss(cfg, X, W, b, ylist)
  H.assert_close(loss, ref, tol, 1e-5)
  if more.loss_only then return head, loss end
  local f = function() return (R.loss(cfg, X, W, b, ylist)) end
  local function flat(t)
    local r = {}
    local function go(v) if type(v) == "table" then for _, e in ipairs(v) do go(e) end else r[#r + 1] = v end end
    go(t)
    return r
  end
  local function close_grad(actual, expected, what)
    local a, e = flat(actual), flat(expected)
    local scale = 0
    for i = 1, #e do scale = math.max(scale, math.abs(e[i])) end
    for i = 1, #e do
      if math.abs(a[i] - e[i]) > tol * math.abs(e[i]) + 1e-3 * scale + 1e-6 then
        error(("%s %s: element %d got %.7g, expected %.7g (scale %.3g)"):format(name, what, i, a[i], e[i], scale), 2)
      end
    end
  end
  close_grad(tbl(dx), R.numeric_grad(f, X), "dL/dx")
  if more.wrows then
    local gw = tbl(head.grad_weight)
    for _, k in ipairs(more.wrows) do close_grad(gw[k], R.numeric_grad(f, W[k]), "dL/dW row " .. k) end
  else
    close_grad(tbl(head.grad_weight), R.numeric_grad(f, W), "dL/dW")
  end
  if b then close_grad(tbl(head.grad_bias), R.numeric_grad(f, b), "dL/db") end
  if head.learn_alpha then
    local a = { cfg.alpha }
    local fa = function() cfg.alpha = a[1]; return (R.loss(cfg, X, W, b, ylist)) end
    local ga = R.numeric_grad(fa, a)
    cfg.alpha = a[1]
    close_grad({ head.grad_alpha:item() }, ga, "dL/dalpha")
  end
  return head, loss
end


describe("heads against the reference, with finite-difference gradients", function()
  local cases = {
    { "softmax", {} },
    { "norm-softmax", { s = 8 } },
    { "l2-softmax", { alpha = 4 } },
    { "l2-softmax", { alpha = 3, learn_alpha = true } },
    { "a-softmax", { s = 4, lambda = 2 } },
    { "am", { s = 8 } },
    { "arc", { s = 8 } },
    { "arc", { s = 8, easy_margin = true } },
    { "combined", { s = 8 } },
    { "combined", { s = 8, m1 = 2, m2 = 0.1, m3 = 0.2 } },
    { "f-softmax", { s = 4 } },
    { "f-am", { s = 4 } },
    { "f-arc", { s = 4, gamma = 1.5 } },
    { "hm-softmax", { s = 4 } },
    { "hm-am", { s = 4, keep = 0.5 } },
    { "hm-arc", { s = 4 } },
    { "mv-am", { s = 8 } },
    { "mv-am", { s = 8, h = "fixed" } },
    { "mv-arc", { s = 8 } },
    { "mv-arc", { s = 8, h = "fixed", t = 0.4 } },
    -- the reference reads the t the forward moved to (t is not differentiated)
    { "curricular", { s = 8 } },
    { "curricular", { s = 8, t = 0.6, momentum = 0.5 } },
    -- momentum 1: the batch's own statistics, so z spreads over [-1, 1] (h = 1 reaches the clamp)
    { "adaface", { s = 8 } },
    { "adaface", { s = 8, momentum = 1 } },
    { "adaface", { s = 8, momentum = 1, h = 1, m = 0.6 } },
    -- the norms of these rows (about 1.5 to 3.5) inside [l_a, u_a], then partly outside (no gradient there)
    { "magface", { s = 8, l_a = 1, u_a = 4 } },
    { "magface", { s = 8, l_a = 2, u_a = 3, l_m = 0.2, u_m = 0.9, lambda_g = 5, easy_margin = false } },
    -- sub-centres (Sub-center ArcFace, and the option on other cosine heads): a class's cosine is its
    -- best sub-centre's; the gradient reaches that one alone
    { "arc", { s = 8, subcenters = 3 } },
    { "am", { s = 8, subcenters = 2 } },
    { "mv-arc", { s = 8, subcenters = 3 } },
    { "hm-arc", { s = 4, subcenters = 2 } },
    { "curricular", { s = 8, subcenters = 3 } },
    { "adaface", { s = 8, momentum = 1, subcenters = 2 } },
    { "magface", { s = 8, l_a = 1, u_a = 4, subcenters = 3 } },
    -- ElasticFace: the margins drawn for the step, read back (head:margins()); plus sorts them against c_y
    { "elastic-arc", { s = 8 } },
    { "elastic-arc", { s = 8, plus = true, std = 0.2 } },
    { "elastic-arc", { s = 8, easy_margin = true, std = 0.3 } },
    { "elastic-cos", { s = 8 } },
    { "elastic-cos", { s = 8, plus = true, std = 0.1, subcenters = 2 } },
  }
  for n, case in ipairs(cases) do
    local desc = {}
    for k, v in pairs(case[2]) do desc[#desc + 1] = k .. "=" .. tostring(v) end
    table.sort(desc)
    H.it(("%s {%s}"):format(case[1], table.concat(desc, ", ")), function()
      check_head(case[1], case[2], 6, 5, 7, 10 + n)
    end)
  end

  H.it("the default s = 32 still matches (am, mv-arc)", function()
    check_head("am", {}, 5, 4, 6, 3, 5e-3)
    check_head("mv-arc", {}, 5, 4, 6, 4, 5e-3)
  end)

  -- the GPU cuts a row into segments of 2048 classes, 4 rows a block, and
  -- merges the segments' (max, sum) pairs: K = 4099 is two segments and 3
  -- classes (a multiple of nothing it uses), B = 5 leaves a block of one row,
  -- and the labels fall in every segment, the last class included
  H.it("rows over several GPU segments: K = 4099, B = 5 (mv-arc with gradients; hm-am, f-arc, softmax)", function()
    local labels = { 4098, 2047, 0, 2048, 3001 }
    check_head("mv-arc", { s = 8 }, 5, 4, 4099, 50, 2e-3, { labels = labels, wrows = { 2049, 4099 } })
    check_head("hm-am", { s = 8, keep = 0.6 }, 5, 4, 4099, 51, 2e-3, { labels = labels, loss_only = true })
    check_head("f-arc", { s = 8 }, 5, 4, 4099, 52, 2e-3, { labels = labels, loss_only = true })
    check_head("softmax", {}, 5, 4, 4099, 53, 2e-3, { labels = labels, loss_only = true })
  end)

  H.it("one row, a class count under one GPU segment and one past it (B = 1; K = 3, 2049)", function()
    check_head("mv-am", { s = 8 }, 1, 5, 3, 60)
    check_head("arc", { s = 8 }, 1, 5, 2049, 61, 2e-3, { labels = { 2048 }, wrows = { 1, 2048, 2049 } })
  end)
end)

describe("hand-computed cases", function()
  -- x = (0.6, 0.8), w_1 = (1, 0), w_2 = (0, 1): cos to class 0 is 0.6, to class 1 is 0.8
  local function two_class(name, opts)
    opts.classes, opts.dim = 2, 2
    local head = facet.heads.new(name, opts)
    head.weight:copy(facet.tensor { { 1, 0 }, { 0, 1 } })
    head = head:to(H.device)
    return head:forward(H.tensor { { 0.6, 0.8 } }, H.tensor({ 0 }, { dtype = "int32" }))
  end
  local function ce(zy, zk) return math.log(math.exp(zy) + math.exp(zk)) - zy end

  H.it("norm-softmax, am, arc, combined, a-softmax", function()
    H.assert_close(two_class("norm-softmax", { s = 2 }), ce(1.2, 1.6), 1e-5)
    H.assert_close(two_class("am", { s = 2, m = 0.35 }), ce(2 * 0.25, 1.6), 1e-5)
    local arc = math.cos(math.acos(0.6) + 0.5)
    H.assert_close(two_class("arc", { s = 2 }), ce(2 * arc, 1.6), 1e-5)
    local comb = math.cos(2 * math.acos(0.6) + 0.1) - 0.2
    H.assert_close(two_class("combined", { s = 2, m1 = 2, m2 = 0.2, m3 = 0.1 }), ce(2 * comb, 1.6), 1e-5)
    -- m1 = 3: theta = acos(0.6) = 0.927, 3 theta = 2.78 < pi so k = 0, psi = cos(3 theta) = 4c^3 - 3c
    local psi = 4 * 0.6 ^ 3 - 3 * 0.6
    H.assert_close(two_class("a-softmax", { s = 2, lambda = 1 }), ce(2 * (0.6 + psi) / 2, 1.6), 1e-5)
  end)

  H.it("MV: the mis-classified class gets log h added", function()
    -- am: f = 0.25 < 0.8, so I = 1 for class 1
    H.assert_close(two_class("mv-am", { s = 2, h = "fixed", t = 0.25 }), ce(0.5, 1.6 + 2 * 0.25), 1e-5)
    H.assert_close(two_class("mv-am", { s = 2, h = "adaptive", t = 0.2 }), ce(0.5, 1.6 + 2 * 0.2 * 1.8), 1e-5)
  end)

  H.it("focal weighting of the cross-entropy", function()
    local c = ce(1.2, 1.6)
    local p = math.exp(-c)
    H.assert_close(two_class("f-softmax", { s = 2 }), (1 - p) ^ 2 * c, 1e-5)
  end)

  H.it("plain softmax with bias", function()
    local head = facet.heads.new("softmax", { classes = 2, dim = 2 })
    head.weight:copy(facet.tensor { { 1, 2 }, { -1, 0.5 } })
    head.bias:copy(facet.tensor { 0.1, -0.2 })
    head = head:to(H.device)
    local l = head:forward(H.tensor { { 1, 1 } }, H.tensor({ 1 }, { dtype = "int64" }))
    H.assert_close(l, ce(-0.5 - 0.2, 3 + 0.1), 1e-5)
  end)

  H.it("a bias of -inf masks a whole block of classes (empty log-sum-exp partials merge to nothing)", function()
    -- W = 0, so the logits are the bias: classes 0..299 masked with -inf (more
    -- than one CPU chunk and every GPU thread's first columns), 300..309 live
    local K, live = 310, 300
    local head = facet.heads.new("softmax", { classes = K, dim = 2 })
    head.weight:fill_(0)
    local b = {}
    for k = 1, K do b[k] = k > live and 0.1 * (k - live) or -math.huge end
    head.bias:copy(facet.tensor(b))
    head = head:to(H.device)
    local y = { 303, 309 }
    local l = head:forward(H.tensor { { 1, 1 }, { 2, -1 } }, H.tensor(y, { dtype = "int64" }))
    local lse = 0
    for k = live + 1, K do lse = lse + math.exp(b[k]) end
    lse = math.log(lse)
    H.assert_close(l, ((lse - b[y[1] + 1]) + (lse - b[y[2] + 1])) / 2, 1e-5)
    for _, v in ipairs(H.values(head:backward())) do assert.is_true(v == v, "dL/dx is not NaN") end
  end)
end)

-- ---- the adaptive heads (CurricularFace, AdaFace) ----------------------------------------

local F = require "support.files"
local HAVE_TORCH = select(2, F.sh(F.PY .. " -c 'import torch'")) == 0

local function small(extra)
  local r = { classes = 3, dim = 2 }
  for k, v in pairs(extra) do r[k] = v end
  return r
end

-- B labels in [0, K) for step `step`, as an int64 tensor
local function labels_of(B, K, step)
  local yl = {}
  for i = 1, B do yl[i] = (i * 5 + step * 3) % K end
  return facet.tensor(yl, { dtype = "int64" })
end

-- The head (its weight set to W, on the device under test) against a PyTorch
-- script of spec/support over three steps: batch(step) gives x, y; `command`
-- is the script and its arguments after DIR STEPS; each step compares the
-- loss, dL/dx and dL/dW (W does not change) and calls check_state(out) with
-- the script's out<step>.npy (loss first, then its state).
local function against_torch(head, W, batch, command, check_state)
  local dir, steps = H.temp_dir(), 3
  facet.save_npy(W, dir .. "/w.npy")
  head.weight:copy(W)
  head = head:to(H.device)
  local xs, ys = {}, {}
  for step = 1, steps do
    xs[step], ys[step] = batch(step)
    facet.save_npy(xs[step], ("%s/x%d.npy"):format(dir, step))
    facet.save_npy(ys[step], ("%s/y%d.npy"):format(dir, step))
  end
  local script, args = command:match("^(%S+)%s+(.*)$")
  local out, rc = F.sh(("%s spec/support/%s %s %d %s"):format(F.PY, script, dir, steps, args))
  assert.are.equal(0, rc, out)
  local function rel(a, b) return (a:to("cpu") - b):abs():max() / b:abs():max() end
  for step = 1, steps do
    head:zero_grad()
    local loss = head:forward(H.on(xs[step]), H.on(ys[step]))
    local dx = head:backward()
    local ref = facet.load_npy(("%s/out%d.npy"):format(dir, step)):totable()
    H.assert_close(loss, ref[1], 1e-5)
    check_state(ref)
    local rdx = facet.load_npy(("%s/dx%d.npy"):format(dir, step))
    local rdw = facet.load_npy(("%s/dw%d.npy"):format(dir, step))
    assert.is_true(rel(dx, rdx) < 1e-4, "dL/dx off by " .. rel(dx, rdx))
    assert.is_true(rel(head.grad_weight, rdw) < 1e-4, "dL/dW off by " .. rel(head.grad_weight, rdw))
  end
  H.remove_dir(dir)
end

describe("CurricularFace", function()

  H.it("hand-computed: a hard class's logit is s c (t + c), with t moved first", function()
    -- x = (0.6, 0.8), w_1 = (1, 0), w_2 = (0, 1), label 0: c_y = 0.6, f = cos(acos 0.6 + 0.5) < 0.8, so
    -- class 1 is hard; t goes from 0 to 0.01 * 0.6 before the logits
    local head = facet.heads.new("curricular", { classes = 2, dim = 2, s = 2 })
    head.weight:copy(facet.tensor { { 1, 0 }, { 0, 1 } })
    head = head:to(H.device)
    local x, y = H.tensor { { 0.6, 0.8 } }, H.tensor({ 0 }, { dtype = "int32" })
    local f = math.cos(math.acos(0.6) + 0.5)
    local function ce(zy, zk) return math.log(math.exp(zy) + math.exp(zk)) - zy end
    H.assert_close(head:forward(x, y), ce(2 * f, 2 * 0.8 * (0.006 + 0.8)), 1e-5)
    H.assert_close(head.t:item(), 0.006, 1e-6)
    -- again: t = 0.99 * 0.006 + 0.01 * 0.6
    local t2 = 0.99 * 0.006 + 0.006
    H.assert_close(head:forward(x, y), ce(2 * f, 2 * 0.8 * (t2 + 0.8)), 1e-5)
    H.assert_close(head.t:item(), t2, 1e-6)
    -- a class below f(c_y) keeps s c: x = (0.8, 0.6) with w_2 = (-1, 0) gives c_y = 0.8 and
    -- c_1 = -0.8 < f(0.8) = cos(acos 0.8 + 0.5)
    local f2 = math.cos(math.acos(0.8) + 0.5)
    head.weight:copy(H.tensor { { 1, 0 }, { -1, 0 } })
    local t3 = 0.99 * t2 + 0.01 * 0.8
    H.assert_close(head:forward(H.tensor { { 0.8, 0.6 } }, y), ce(2 * f2, 2 * -0.8), 1e-5)
    H.assert_close(head.t:item(), t3, 1e-6)
  end)

  H.it("t follows the running mean of c_y over forwards; a failed forward leaves it as it was", function()
    local K, D, B = 11, 6, 9
    local head = facet.heads.new("curricular", { classes = K, dim = D, seed = 4, t = 0.1, momentum = 0.2 })
    head.weight:copy(facet.randn({ K, D }, { seed = 5 }))
    head = head:to(H.device)
    local W = head.weight:to("cpu"):totable()
    local t = 0.1
    for step = 1, 3 do
      local x = facet.randn({ B, D }, { seed = 20 + step })
      local y = {}
      for i = 1, B do y[i] = (i * 3 + step) % K end
      local loss = head:forward(H.on(x), H.on(facet.tensor(y, { dtype = "int64" })))
      head:backward()
      t = R.curricular_t(t, 0.2, x:totable(), W, y)
      H.assert_close(head.t:item(), t, 1e-6)
      local cfg = { kind = "cosine", margin = "arc", m = 0.5, s = head.s, h = "curricular", t = t, sample = "mean" }
      H.assert_close(loss, (R.loss(cfg, x:totable(), W, nil, y)), 2e-5)
    end
    -- a label outside [0, K): on the CPU refused before anything moves; on the GPU found by the
    -- target kernel, and t is put back
    local before = head.t:item()
    H.assert_error(function()
      head:forward(H.on(facet.randn({ 2, D })), H.on(facet.tensor({ 1, K }, { dtype = "int64" })))
    end, "label " .. K .. " of row 2 outside")
    assert.are.equal(before, head.t:item())
    assert.are.same({ "t" }, (function() local r = {} for k in pairs(head:state_tensors()) do r[#r + 1] = k end return r end)())
  end)

  H.it("matches the authors' formulation in PyTorch (spec/support/curricular_torch.py): loss, t, dL/dx, dL/dW", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local K, D, B = 13, 8, 10
    local W = facet.randn({ K, D }, { seed = 31 })
    local head = facet.heads.new("curricular", { classes = K, dim = D, s = 16, m = 0.4, momentum = 0.3, t = 0.2 })
    against_torch(head, W, function(step)
      -- rows close to their class centre, and some far: easy and hard classes both
      local y = labels_of(B, K, step)
      return facet.randn({ B, D }, { seed = 50 + step }):mul(0.8):add(W:index_select(y:add(1)):mul(step / 2)), y
    end, "curricular_torch.py 16 0.4 0.3 0.2", function(ref) H.assert_close(head.t:item(), ref[2], 1e-6) end)
  end)

  it("checks its options: t in [-1, 1], momentum in [0, 1], no h", function()
    H.assert_error(function() facet.heads.new("curricular", small { momentum = 1.5 }) end, "momentum")
    H.assert_error(function() facet.heads.new("curricular", small { momentum = 0 / 0 }) end, "momentum")
    H.assert_error(function() facet.heads.new("curricular", small { t = 2 }) end, "option t")
    H.assert_error(function() facet.heads.new("curricular", small { h = "fixed" }) end, "unknown option 'h'")
    -- the authors' head has neither
    H.assert_error(function() facet.heads.new("curricular", small { easy_margin = true }) end,
      "unknown option 'easy_margin'")
    H.assert_error(function() facet.heads.new("curricular", small { margin = function(c) return c end }) end,
      "unknown option 'margin'")
    assert.are.equal("curricular", facet.heads.new("curricularface", small {}).name)
    assert.matches("momentum=0.01", tostring(facet.heads.new("curricular", small {})))
  end)
end)

describe("AdaFace", function()

  H.it("statistics by hand: two rows of norms 3 and 1 at momentum 1; the margins follow", function()
    local head = facet.heads.new("adaface", { classes = 2, dim = 2, s = 2, momentum = 1, h = 1 })
    head.weight:copy(facet.tensor { { 1, 0 }, { 0, 1 } })
    head = head:to(H.device)
    local x = H.tensor { { 1.8, 2.4 }, { 0.8, 0.6 } }     -- norms 3 and 1, cosines to class 0: 0.6 and 0.8
    local loss = head:forward(x, H.tensor({ 0, 0 }, { dtype = "int64" }))
    -- mean 2, unbiased std sqrt(2): z = +-1 / (sqrt(2) + 1e-3)
    H.assert_close(head.batch_mean:item(), 2, 1e-6)
    H.assert_close(head.batch_std:item(), math.sqrt(2), 1e-6)
    local z = 1 / (math.sqrt(2) + 1e-3)
    local function f(c, zi) return math.cos(math.acos(c) - 0.4 * zi) - 0.4 * (1 + zi) end
    local function ce(zy, zk) return math.log(math.exp(zy) + math.exp(zk)) - zy end
    H.assert_close(loss, (ce(2 * f(0.6, z), 2 * 0.8) + ce(2 * f(0.8, -z), 2 * 0.6)) / 2, 1e-5)
  end)

  H.it("at the clamps (a cosine past 1 - 1e-3, an angle pushed below 1e-3) loss and dL/dx follow the reference", function()
    -- row 1: c_y = cos(0.02) > 1 - 1e-3 (the cosine is clamped); row 2: c_y = cos(0.1), z = 1 moves the
    -- angle to 0.1 - 0.4 < 1e-3 (the angle is clamped); row 3 is plain. Norms 9, 9, 1 at momentum 1, h = 5.
    local function at(a, n) return { n * math.cos(a), n * math.sin(a) } end
    local X = { at(0.02, 9), at(0.1, 9), at(1.2, 1) }
    local y = { 0, 0, 1 }
    local head = facet.heads.new("adaface", { classes = 2, dim = 2, s = 4, momentum = 1, h = 5 })
    head.weight:copy(facet.tensor { { 1, 0 }, { 0, 1 } })
    head = head:to(H.device)
    local loss = head:forward(H.tensor(X), H.tensor(y, { dtype = "int64" }))
    local dx = H.values(head:backward())
    local _, _, z = R.adaface_stats(20, 100, 1, 5, X)
    assert.are.same({ 1, 1, -1 }, z)
    local cfg = { kind = "cosine", margin = "adaface", m = 0.4, s = 4, sample = "mean", z = z }
    H.assert_close(loss, (R.loss(cfg, X, { { 1, 0 }, { 0, 1 } }, nil, y)), 1e-5)
    local g = R.numeric_grad(function() return (R.loss(cfg, X, { { 1, 0 }, { 0, 1 } }, nil, y)) end, X)
    H.assert_close(dx, { g[1][1], g[1][2], g[2][1], g[2][2], g[3][1], g[3][2] }, 1e-3, 1e-5)
  end)

  H.it("a batch of one row leaves the statistics (z from them); a failed forward leaves them as they were", function()
    local head = facet.heads.new("adaface", { classes = 5, dim = 3, s = 4, h = 1 })
    head.weight:copy(facet.randn({ 5, 3 }, { seed = 2 }))
    head = head:to(H.device)
    local W = head.weight:to("cpu"):totable()
    local x1 = facet.randn({ 1, 3 }, { seed = 3 }):mul(40)
    local loss = head:forward(H.on(x1), H.on(facet.tensor({ 1 }, { dtype = "int64" })))
    assert.are.same({ 20, 100 }, { head.batch_mean:item(), head.batch_std:item() })
    local X = x1:totable()
    local z = { math.max(-1, math.min(1, (math.sqrt(X[1][1] ^ 2 + X[1][2] ^ 2 + X[1][3] ^ 2) - 20) / (100 + 1e-3))) }
    local cfg = { kind = "cosine", margin = "adaface", m = 0.4, s = 4, sample = "mean", z = z }
    H.assert_close(loss, (R.loss(cfg, X, W, nil, { 1 })), 1e-5)
    head:forward(H.on(facet.randn({ 4, 3 }, { seed = 1 })), H.on(facet.tensor({ 0, 1, 2, 3 }, { dtype = "int64" })))
    local mean, std = head.batch_mean:item(), head.batch_std:item()
    assert.is_true(mean ~= 20 and std ~= 100)
    H.assert_error(function()
      head:forward(H.on(facet.randn({ 2, 3 })), H.on(facet.tensor({ 1, 5 }, { dtype = "int64" })))
    end, "label 5 of row 2 outside")
    assert.are.same({ mean, std }, { head.batch_mean:item(), head.batch_std:item() })
    local names = {}
    for k in pairs(head:state_tensors()) do names[#names + 1] = k end
    table.sort(names)
    assert.are.same({ "batch_mean", "batch_std" }, names)
  end)

  H.it("matches the authors' formulation in PyTorch (spec/support/adaface_torch.py): loss, statistics, dL/dx, dL/dW",
    function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local K, D, B = 13, 8, 10
    local W = facet.randn({ K, D }, { seed = 61 })
    local head = facet.heads.new("adaface", { classes = K, dim = D, s = 16, m = 0.4, h = 0.5, momentum = 0.6 })
    against_torch(head, W, function(step)
      -- norms from about 1 to 40 (z over its whole range), rows near their class centre or not
      local y, scale = labels_of(B, K, step), {}
      for i = 1, B do scale[i] = { 1 + 4 * ((i * 3 + step) % 10) } end
      local x = facet.randn({ B, D }, { seed = 70 + step }):mul(0.8):add(W:index_select(y:add(1)):mul(step / 2))
      x = x:l2_normalize(1e-12):mul(facet.tensor(scale))
      local c = x:l2_normalize(1e-12):matmul(W:l2_normalize(1e-12), { transpose_b = true })
      assert.is_true(c:abs():max() < 0.999, "the data keeps every cosine inside the authors' clamp")
      return x, y
    end, "adaface_torch.py 16 0.4 0.5 0.6", function(ref)
      H.assert_close(head.batch_mean:item(), ref[2], 1e-6)
      H.assert_close(head.batch_std:item(), ref[3], 1e-6)
    end)
  end)

  it("checks its options: h > 0, momentum in [0, 1], no scripted margin", function()
    H.assert_error(function() facet.heads.new("adaface", small { h = 0 }) end, "option h")
    H.assert_error(function() facet.heads.new("adaface", small { momentum = -0.1 }) end, "momentum")
    H.assert_error(function() facet.heads.new("adaface", small { margin = function(c) return c end }) end,
      "unknown option 'margin'")
    assert.matches("h=0.333, momentum=0.01", tostring(facet.heads.new("adaface", small {})))
  end)
end)

describe("MagFace", function()
  H.it("matches the authors' formulation in PyTorch (spec/support/magface_torch.py): loss, dL/dx, dL/dW, " ..
    "with easy_margin (the default, as they train) and without", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local K, D, B = 13, 8, 10
    local W = facet.randn({ K, D }, { seed = 81 })
    for _, easy in ipairs { true, false } do
      local head = facet.heads.new("magface", { classes = K, dim = D, s = 16, easy_margin = easy })
      against_torch(head, W, function(step)
        -- norms from 6 to 141: below l_a = 10, inside, and above u_a = 110 (none on a bound, where float32
        -- and float64 may fall on different sides of the clamp)
        local y, scale = labels_of(B, K, step), {}
        for i = 1, B do scale[i] = { 6 + 15 * ((i * 3 + step) % 10) } end
        local x = facet.randn({ B, D }, { seed = 90 + step }):mul(0.8):add(W:index_select(y:add(1)):mul(step / 2))
        return x:l2_normalize(1e-12):mul(facet.tensor(scale)), y
      end, "magface_torch.py 16 10 110 0.45 0.8 35 " .. (easy and 1 or 0), function() end)
    end
  end)

  it("checks its options: 0 < l_a < u_a, 0 <= l_m <= u_m, lambda_g >= 0, no scripted margin", function()
    H.assert_error(function() facet.heads.new("magface", small { l_a = 0 }) end, "option l_a")
    H.assert_error(function() facet.heads.new("magface", small { l_a = 5, u_a = 5 }) end, "option u_a")
    H.assert_error(function() facet.heads.new("magface", small { l_a = 200 }) end, "u_a (110) must be above l_a (200)")
    H.assert_error(function() facet.heads.new("magface", small { l_m = 0.9 }) end, "u_m (0.8) must be at least l_m")
    H.assert_error(function() facet.heads.new("magface", small { lambda_g = -1 }) end, "option lambda_g")
    H.assert_error(function() facet.heads.new("magface", small { m = 0.5 }) end, "unknown option 'm'")
    assert.matches("l_a=10, u_a=110, l_m=0.45, u_m=0.8, lambda_g=35", tostring(facet.heads.new("magface", small {})))
  end)
end)

describe("the adaptive heads' state", function()
  H.it("momentum = 0 keeps it exactly, even through a batch with a NaN row", function()
    for _, name in ipairs { "curricular", "adaface" } do
      local head = facet.heads.new(name, { classes = 5, dim = 3, momentum = 0, seed = 1 }):to(H.device)
      local before = {}
      for k, v in pairs(head:state_tensors()) do before[k] = v:item() end
      local x = facet.randn({ 3, 3 }, { seed = 4 })
      x:narrow(1, 2, 1):fill_(0 / 0)
      local y = H.on(facet.tensor({ 0, 1, 2 }, { dtype = "int64" }))
      local bad = head:forward(H.on(x), y)
      assert.is_true(bad ~= bad, name .. ": the NaN row makes the loss NaN")
      for k, v in pairs(head:state_tensors()) do assert.are.equal(before[k], v:item(), name .. " " .. k) end
      local good = head:forward(H.on(facet.randn({ 3, 3 }, { seed = 5 })), y)
      assert.is_true(good == good, name .. ": the next clean batch has a finite loss")
    end
  end)

  H.it("facet_head_update_t and facet_head_update_norms refuse bad arguments and write nothing", function()
    local C, ffi = require("facet.core").C, require("ffi")
    local head = facet.heads.new("adaface", { classes = 3, dim = 2 })
    local dev = { device = H.device }
    local NROW = tonumber(C.FACET_HEAD_ROW_COUNT)
    local rows = facet.full({ 4, NROW }, 7, dev)
    local t, mean, std = facet.full({ 1 }, 0.5, dev), facet.full({ 1 }, 20, dev), facet.full({ 1 }, 100, dev)
    local norms = facet.full({ 4 }, 3, dev)
    local function refused(rc, want)
      assert.are_not.equal(0, rc)
      local msg = ffi.string(C.facet_last_error())
      assert.truthy(msg:find(want, 1, true), msg)
    end
    local T = function(a, b, c) return C.facet_head_update_t(a, b, c, 0.5) end
    refused(T(nil, rows.h, t.h), "head is NULL")
    refused(T(head.handle, nil, t.h), "rows")
    refused(T(head.handle, rows.h, nil), "t")
    refused(T(head.handle, facet.full({ 4, NROW - 1 }, 7, dev).h, t.h), "rows must be contiguous")
    refused(T(head.handle, rows.h, facet.zeros({ 2 }, dev).h), "t must hold one value")
    refused(C.facet_head_update_t(head.handle, rows.h, t.h, 2), "momentum must be in [0, 1]")
    refused(C.facet_head_update_t(head.handle, rows.h, t.h, 0 / 0), "momentum must be in [0, 1]")
    local N = function(n, m, h) return C.facet_head_update_norms(head.handle, rows.h, n, mean.h, std.h, m, h) end
    refused(N(facet.full({ 3 }, 3, dev).h, 0.5, 1), "norms must be 4 contiguous values")
    refused(N(facet.zeros({ 4 }, { dtype = "int32", device = H.device }).h, 0.5, 1), "norms")
    refused(N(norms.h, 0.5, 0), "h must be > 0")
    refused(N(norms.h, -1, 1), "momentum must be in [0, 1]")
    refused(C.facet_head_update_norms(head.handle, rows.h, norms.h, nil, std.h, 0.5, 1), "mean")
    refused(C.facet_head_update_norms(head.handle, rows.h, norms.h, mean.h, facet.zeros({ 1, 2 }, dev).h, 0.5, 1),
      "std must hold one value")
    assert.are.same(H.values(facet.full({ 4, NROW }, 7)), H.values(rows))
    assert.are.same({ 0.5, 20, 100 }, { t:item(), mean:item(), std:item() })
  end)
end)

describe("identities", function()
  local function pair(a, oa, b, ob)
    local K, D = 9, 6
    oa.classes, oa.dim, oa.seed = K, D, 5
    ob.classes, ob.dim, ob.seed = K, D, 5
    local ha = facet.heads.new(a, oa):to(H.device)
    local hb = facet.heads.new(b, ob):to(H.device)
    local x = H.on(facet.randn({ 8, D }, { seed = 6 }))
    local y = H.on(facet.tensor({ 0, 1, 2, 3, 4, 5, 6, 7 }, { dtype = "int32" }))
    H.assert_close(ha:forward(x, y), hb:forward(x, y), 1e-6)
    H.assert_close(H.values(ha:backward()), H.values(hb:backward()), 1e-5, 1e-7)
    H.assert_close(H.values(ha.grad_weight), H.values(hb.grad_weight), 1e-5, 1e-7)
  end
  H.it("MV with t = 0 equals its margin head", function()
    pair("mv-am", { t = 0 }, "am", {})
    pair("mv-arc", { t = 0, h = "fixed" }, "arc", {})
  end)
  H.it("am with m = 0 equals norm-softmax", function()
    pair("am", { m = 0 }, "norm-softmax", {})
  end)
  H.it("focal with gamma = 0 and hard mining with keep = 1 equal the plain head", function()
    pair("f-am", { gamma = 0 }, "am", {})
    pair("hm-arc", { keep = 1 }, "arc", {})
  end)
end)

describe("mining on crafted batches", function()
  local I4 = { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } }
  local function rows_norms(t)
    local r = {}
    for i = 1, t:size(1) do r[i] = t:select(1, i):norm() end
    return r
  end

  H.it("hard mining: equal losses go to the lower row", function()
    local head = facet.heads.new("hm-softmax", { classes = 4, dim = 4, s = 4, keep = 0.25 })
    head.weight:copy(facet.tensor(I4))
    head = head:to(H.device)
    -- rows 1 and 2 are the same hard sample; rows 3 and 4 are easy
    local X = { { 0, 0, 1, 0 }, { 0, 0, 1, 0 }, { 0, 0, 1, 0.1 }, { 1, 0, 0, 0 } }
    local loss = head:forward(H.tensor(X), H.tensor({ 1, 1, 2, 0 }, { dtype = "int64" }))
    local _, ce = R.loss({ kind = "cosine", margin = "none", s = 4, sample = "mean" }, X, I4, nil, { 1, 1, 2, 0 })
    H.assert_close(loss, ce[1], 1e-5)
    local n = rows_norms(head:backward():to("cpu"))
    assert.is_true(n[1] > 0)
    assert.are.same({ 0, 0, 0 }, { n[2], n[3], n[4] })
  end)

  H.it("hard mining: a NaN loss counts as the largest (kept, so the loss is NaN)", function()
    local head = facet.heads.new("hm-softmax", { classes = 4, dim = 4, s = 4, keep = 0.5 })
    head.weight:copy(facet.tensor(I4))
    head = head:to(H.device)
    local X = { { 0, 0, 1, 0 }, { 0, 0, 1, 0.1 }, { 0 / 0, 0, 0, 0 }, { 1, 0, 0, 0 } }
    local loss = head:forward(H.tensor(X), H.tensor({ 1, 2, 3, 0 }, { dtype = "int32" }))
    assert.is_true(loss ~= loss, "loss " .. tostring(loss))
    local n = rows_norms(head:backward():to("cpu"))
    assert.is_true(n[1] > 0 and n[1] < math.huge, "the hardest real row is kept")
    assert.is_true(n[3] ~= n[3], "the NaN row is kept")
    assert.are.same({ 0, 0 }, { n[2], n[4] })
  end)

  H.it("hard mining keeps the floor(keep*B) highest losses, the rest get no gradient", function()
    local K, D = 4, 4
    local head = facet.heads.new("hm-softmax", { classes = K, dim = D, s = 4, keep = 0.5 })
    head.weight:copy(facet.tensor { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } })
    head = head:to(H.device)
    -- rows 1 and 3 are well classified, rows 2 and 4 badly
    local x = H.tensor { { 1, 0, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 1, 0.1 }, { 0.1, 0, 0, 1 } }
    local y = H.tensor({ 0, 1, 2, 0 }, { dtype = "int32" })
    local loss = head:forward(x, y)
    local cfg = { kind = "cosine", margin = "none", s = 4, sample = "mean" }
    local X = { { 1, 0, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 1, 0.1 }, { 0.1, 0, 0, 1 } }
    local W = { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } }
    local _, ce = R.loss(cfg, X, W, nil, { 0, 1, 2, 0 })
    H.assert_close(loss, (ce[2] + ce[4]) / 2, 1e-5)
    local dx = head:backward():to("cpu")
    assert.are.equal(0, dx:select(1, 1):norm())
    assert.are.equal(0, dx:select(1, 3):norm())
    assert.is_true(dx:select(1, 2):norm() > 0 and dx:select(1, 4):norm() > 0)
  end)

  H.it("focal down-weights the well-classified rows", function()
    local head = facet.heads.new("f-softmax", { classes = 2, dim = 2, s = 8 })
    head.weight:copy(facet.tensor { { 1, 0 }, { 0, 1 } })
    head = head:to(H.device)
    head:forward(H.tensor { { 1, 0.1 }, { 0.1, 1 } }, H.tensor({ 0, 0 }, { dtype = "int32" }))
    local dx = head:backward():to("cpu")
    -- row 1 is easy (p close to 1): its gradient is far smaller than the hard row's
    assert.is_true(dx:select(1, 1):norm() < 1e-3 * dx:select(1, 2):norm())
  end)
end)

describe("adversarial inputs stay finite", function()
  local function finite(t)
    for _, v in ipairs(H.values(t)) do if v ~= v or v == math.huge or v == -math.huge then return false end end
    return true
  end
  for _, name in ipairs { "norm-softmax", "am", "arc", "combined", "a-softmax", "mv-am", "mv-arc", "f-arc", "hm-am",
    "l2-softmax", "softmax" } do
    H.it(name .. ": cos = +-1, x equal to a weight row, zero vectors, huge s", function()
      local opts = { classes = 3, dim = 3 }
      if name ~= "softmax" and name ~= "l2-softmax" then opts.s = 1e4 end
      local head = facet.heads.new(name, opts)
      head.weight:copy(facet.tensor { { 1, 0, 0 }, { -1, 0, 0 }, { 0, 0, 0 } })
      head = head:to(H.device)
      local x = H.tensor { { 1, 0, 0 }, { -2, 0, 0 }, { 0, 0, 0 }, { 0, 1, 0 } }
      local y = H.tensor({ 0, 0, 2, 1 }, { dtype = "int64" })
      local loss = head:forward(x, y)
      assert.is_true(loss == loss and loss < math.huge, "loss " .. tostring(loss))
      assert.is_true(finite(head:backward()), "dx")
      assert.is_true(finite(head.grad_weight), "grad_weight")
    end)
  end
end)

describe("scripted h and margins", function()
  local E = facet.expr
  H.it("a scripted adaptive h equals the built-in one", function()
    local K, D = 11, 6
    local x = H.on(facet.randn({ 7, D }, { seed = 8 }))
    local y = H.on(facet.tensor({ 1, 3, 5, 7, 9, 10, 0 }, { dtype = "int32" }))
    local built = facet.heads.new("mv-am", { classes = K, dim = D, seed = 2, t = 0.2, s = 16 }):to(H.device)
    local scripted = facet.heads.new("mv-am", { classes = K, dim = D, seed = 2, t = 0.2, s = 16,
      h = function(t, cos, I, s) return E.exp(s * t * (cos + 1) * I) end }):to(H.device)
    H.assert_close(scripted:forward(x, y), built:forward(x, y), 1e-6)
    H.assert_close(H.values(scripted:backward()), H.values(built:backward()), 1e-6, 1e-9)
    H.assert_close(H.values(scripted.grad_weight), H.values(built.grad_weight), 1e-6, 1e-9)
    assert.are.equal("mul(3.2, add(cos, 1))", E.tostring(scripted.logh_expr))   -- log(exp(u)) simplified
  end)

  H.it("a scripted margin equals the built-in am; a new h gets exact gradients", function()
    local K, D = 5, 4
    local am = facet.heads.new("am", { classes = K, dim = D, seed = 1, s = 8 }):to(H.device)
    local sc = facet.heads.new("am", { classes = K, dim = D, seed = 1, s = 8,
      margin = function(cos, m) return cos - m end }):to(H.device)
    local x = H.on(facet.randn({ 4, D }, { seed = 3 }))
    local y = H.on(facet.tensor({ 0, 1, 2, 4 }, { dtype = "int32" }))
    H.assert_close(sc:forward(x, y), am:forward(x, y), 1e-6)
    H.assert_close(H.values(sc:backward()), H.values(am:backward()), 1e-5, 1e-8)
    -- a quadratic h, checked against finite differences of the loss itself
    local hq = facet.heads.new("mv-arc", { classes = K, dim = D, seed = 4, s = 8, t = 0.3,
      h = function(t, cos, I, s) return E.exp(s * t * (cos + 1) ^ 2 * I) end }):to(H.device)
    local w0 = hq.weight:to("cpu")
    local base = hq:forward(x, y)
    local g = H.values(hq:backward())
    local eps = 1e-3
    local xc = x:to("cpu")
    for _, idx in ipairs { { 1, 1 }, { 2, 3 }, { 4, 4 } } do
      local v = xc:get(idx[1], idx[2])
      xc:set(v + eps, idx[1], idx[2])
      local lp = hq:forward(H.on(xc), y)
      xc:set(v - eps, idx[1], idx[2])
      local lm = hq:forward(H.on(xc), y)
      xc:set(v, idx[1], idx[2])
      local fd = (lp - lm) / (2 * eps)
      H.assert_close(g[(idx[1] - 1) * D + idx[2]], fd, 2e-2, 2e-3)
    end
    assert.is_true(base > 0 and w0:numel() == K * D)
  end)

  it("bad scripts are rejected at construction with clear errors", function()
    local o = function(h) return { classes = 3, dim = 2, h = h } end
    H.assert_error(function() facet.heads.new("mv-am", o(function() return "x" end)) end, "number or an expression")
    H.assert_error(function() facet.heads.new("mv-am", o(function(t, c) return math.exp(c) end)) end,
      "failed on symbolic input")
    H.assert_error(function() facet.heads.new("mv-am", o(function(t, c, I, s) return E.exp(-s * t * I) end)) end,
      "h must be >= 1")
    H.assert_error(function() facet.heads.new("mv-am", o(function() return 2 end)) end, "must be 1")
    H.assert_error(function() facet.heads.new("mv-am", o(function(t, c, I) if c < 0 then return 1 end return 1 end)) end,
      "comparisons")
    H.assert_error(function() facet.heads.new("am", { classes = 3, dim = 2, margin = function(c) return E.log(c - 2) end }) end,
      "not finite")
  end)
end)

describe("labels outside [0, classes) as tensors on the device under test", function()
  H.it("are an error naming the first such row; nothing changes, and the next forward is clean", function()
    local x = H.on(facet.randn({ 3, 4 }, { seed = 1 }))
    local good = H.tensor({ 0, 4, 2 }, { dtype = "int64" })
    for _, name in ipairs { "mv-am", "hm-arc", "softmax", "l2-softmax", "a-softmax" } do
      -- b is a's twin that sees only the good batches
      local a = facet.heads.new(name, { classes = 5, dim = 4, seed = 3 }):to(H.device)
      local b = facet.heads.new(name, { classes = 5, dim = 4, seed = 3 }):to(H.device)
      local l1 = a:forward(x, good)
      assert.are.equal(l1, b:forward(x, good))
      local w0, g0, lambda = H.values(a.weight), H.values(a.grad_weight), a.current_lambda
      local cases = {
        { H.tensor({ 0, 5, 1 }, { dtype = "int64" }), "label 5 of row 2 outside [0, 5)" },
        { H.tensor({ 0, 1, -1 }, { dtype = "int32" }), "label -1 of row 3 outside [0, 5)" },
        { H.tensor({ 7, 0, -3 }, { dtype = "int32" }), "label 7 of row 1 outside [0, 5)" },
      }
      for _, c in ipairs(cases) do
        H.assert_error(function() a:forward(x, c[1]) end, name .. ":forward: " .. c[2])
        assert.are.equal(1, a.iter)
        assert.are.equal(l1, a.loss)
        assert.are.equal(lambda, a.current_lambda)
        assert.are.same(w0, H.values(a.weight))
        assert.are.same(g0, H.values(a.grad_weight))
      end
      local db = H.values(b:backward())
      if H.device == "cpu" then
        -- checked before anything runs: the pending forward is still there
        assert.are.same(db, H.values(a:backward()))
      else
        -- checked with the loss: the buffers were reused, no forward is left
        H.assert_error(function() a:backward() end, "no forward")
      end
      assert.are.equal(b:forward(x, good), a:forward(x, good))
      assert.are.same(H.values(b:backward()), H.values(a:backward()))
    end
  end)
end)

describe("a-softmax's lambda schedule", function()
  it("starts at 1000 and decays to 5 as forwards advance", function()
    local head = facet.heads.new("a-softmax", { classes = 3, dim = 2 })
    local x, y = facet.randn({ 2, 2 }, { seed = 1 }), facet.tensor({ 0, 1 }, { dtype = "int32" })
    head:forward(x, y)
    assert.are.equal(1000, head.current_lambda)
    head.iter = 10000
    head:forward(x, y)
    H.assert_close(head.current_lambda, 1000 / 4, 1e-12)
    head.iter = 1e6
    head:forward(x, y)
    assert.are.equal(5, head.current_lambda)
  end)
end)

describe("head errors", function()
  it("names, options, labels and shapes", function()
    H.assert_error(function() facet.heads.new("cosfce", { classes = 2, dim = 2 }) end, "unknown head 'cosfce'", "mv-am",
      "cosface = am")
    -- InsightFace's and the papers' names are the catalogue's heads, recorded by their catalogue name
    for alias, name in pairs { arcface = "arc", cosface = "am", sphereface = "a-softmax", ["am-softmax"] = "am" } do
      local a, b = facet.heads.new(alias, { classes = 3, dim = 4, seed = 1 }), facet.heads.new(name, { classes = 3, dim = 4, seed = 1 })
      assert.are.equal(name, a.name)
      local x, y = facet.randn({ 2, 4 }, { seed = 2 }), facet.tensor({ 0, 2 }, { dtype = "int64" })
      assert.are.equal(b:forward(x, y), a:forward(x, y))
    end
    -- the recipes' --head takes them too
    local names = require("facet.recipe").head_names()
    local set = {}
    for _, n in ipairs(names) do set[n] = true end
    for _, n in ipairs { "arcface", "cosface", "sphereface", "mv-am", "arc" } do assert.is_true(set[n], n) end
    H.assert_error(function() facet.heads.new("mv-am", { classes = 2, dim = 2, t = -0.1 }) end, "option t must be a number >= 0", "got -0.1")
    H.assert_error(function() facet.heads.new("f-am", { classes = 2, dim = 2, gama = 2 }) end, "unknown option 'gama'")
    H.assert_error(function() facet.heads.new("am", { classes = 0, dim = 2 }) end, "classes")
    H.assert_error(function() facet.heads.new("hm-am", { classes = 2, dim = 2, keep = 1.5 }) end, "keep")
    local head = facet.heads.new("am", { classes = 4, dim = 3 })
    local x = facet.randn({ 2, 3 }, { seed = 1 })
    H.assert_error(function() head:forward(x, facet.tensor({ 0, 4 }, { dtype = "int32" })) end, "label 4", "outside [0, 4)")
    H.assert_error(function() head:forward(x, facet.tensor({ -1, 0 }, { dtype = "int64" })) end, "label -1")
    H.assert_error(function() head:forward(x, facet.tensor({ 0 }, { dtype = "int32" })) end, "want 2 labels")
    H.assert_error(function() head:forward(x, facet.tensor({ 0, 1 })) end, "int32 or int64")
    H.assert_error(function() head:forward(facet.randn({ 2, 4 }), facet.tensor({ 0, 1 }, { dtype = "int32" })) end,
      "B x 3")
    H.assert_error(function() head:backward() end, "call forward first")
    assert.are.equal(2, head:forward(x, { 0, 1 }) > 0 and 2)   -- Lua tables of labels work too
  end)
end)
