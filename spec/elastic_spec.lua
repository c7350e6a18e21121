--- ElasticFace (elastic-arc, elastic-cos; plus): the margins a forward draws
-- (their mean and spread over a large batch, a new draw each step, the same
-- draws for the same seed and on every device), ElasticFace+'s order (the
-- smallest margin to the largest c_y, computed here from x and W), std = 0
-- as arc and am exactly, the authors' formulation in PyTorch with the
-- margins facet drew (spec/support/elastic_torch.py), the options, and
-- facet_head_elastic's argument checks. The loss and gradients against the
-- double-precision reference with central differences are in spec/heads_spec.lua.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local core = require "facet.core"
local C = core.C

local HAVE_TORCH = select(2, F.sh(F.PY .. " -c 'import torch'")) == 0

local function labels(B, K) local y = {} for i = 1, B do y[i] = (i * 7) % K end return y end

describe("ElasticFace", function()
  H.it("draws each row's margin from N(m, std): mean and spread over 4096 rows, a new draw each step", function()
    local B, K = 4096, 11
    local head = facet.heads.new("elastic-arc", { classes = K, dim = 4, seed = 3 }):to(H.device)
    local x = H.on(facet.randn({ B, 4 }, { seed = 1 }))
    head:forward(x, H.on(facet.tensor(labels(B, K), { dtype = "int64" })))
    local m = head:margins():to("cpu"):totable()
    local mean, sq = 0, 0
    for _, v in ipairs(m) do mean = mean + v end
    mean = mean / B
    for _, v in ipairs(m) do sq = sq + (v - mean) ^ 2 end
    local sd = math.sqrt(sq / (B - 1))
    -- 5 standard errors: 5 * 0.05 / 64 for the mean, about 5 * 0.05 / sqrt(2 B) for the spread
    assert.is_true(math.abs(mean - 0.5) < 0.004, "mean " .. mean)
    assert.is_true(math.abs(sd - 0.05) < 0.003, "std " .. sd)
    head:forward(x, H.on(facet.tensor(labels(B, K), { dtype = "int64" })))
    local m2 = head:margins():to("cpu"):totable()
    local same = 0
    for i = 1, B do if m2[i] == m[i] then same = same + 1 end end
    assert.is_true(same < 10, "the second step draws anew")
  end)

  H.it("draws the same margins for the same seed and step, on the CPU and the device alike", function()
    local function margins(device, seed)
      local head = facet.heads.new("elastic-cos", { classes = 5, dim = 3, seed = seed }):to(device)
      head:forward(facet.randn({ 9, 3 }, { seed = 2 }):to(device), facet.tensor(labels(9, 5)):long():to(device))
      return head:margins():to("cpu"):totable()
    end
    assert.are.same(margins("cpu", 4), margins(H.device, 4))
    assert.are_not.same(margins("cpu", 4), margins("cpu", 5))
  end)

  H.it("plus: the margins are the plain draws, sorted, the smallest to the largest c_y", function()
    local B, K, D = 40, 6, 5
    local W = facet.randn({ K, D }, { seed = 7 })
    local x = facet.randn({ B, D }, { seed = 8 })
    local y = labels(B, K)
    local function run(plus)
      local head = facet.heads.new("elastic-arc", { classes = K, dim = D, std = 0.1, plus = plus })
      head.weight:copy(W)
      head = head:to(H.device)
      head:forward(H.on(x), H.on(facet.tensor(y, { dtype = "int64" })))
      return head:margins():to("cpu"):totable()
    end
    local plain, plus = run(false), run(true)
    -- c_y of each row, from x and W in double precision
    local X, Wt, cy = x:totable(), W:totable(), {}
    for i = 1, B do
      local a, b, c = 0, 0, 0
      for j = 1, D do
        a = a + X[i][j] * Wt[y[i] + 1][j]; b = b + X[i][j] ^ 2; c = c + Wt[y[i] + 1][j] ^ 2
      end
      cy[i] = a / math.sqrt(b * c)
    end
    local order = {}
    for i = 1, B do order[i] = i end
    table.sort(order, function(a, b) return cy[a] > cy[b] end)
    local sorted = {}
    for i = 1, B do sorted[i] = plain[i] end
    table.sort(sorted)
    for r, i in ipairs(order) do assert.are.equal(sorted[r], plus[i], "rank " .. r) end
  end)

  H.it("with std = 0 is arc and am exactly (loss, dL/dx, dL/dW)", function()
    for _, pair in ipairs { { "elastic-arc", "arc", 0.5 }, { "elastic-cos", "am", 0.35 } } do
      local function run(name, extra)
        local o = { classes = 9, dim = 6, s = 16, m = pair[3], seed = 4 }
        for k, v in pairs(extra) do o[k] = v end
        local head = facet.heads.new(name, o):to(H.device)
        local loss = head:forward(H.on(facet.randn({ 7, 6 }, { seed = 5 })), H.on(facet.tensor(labels(7, 9)):long()))
        return loss, head:backward():to("cpu"), head.grad_weight:to("cpu")
      end
      local l1, dx1, dw1 = run(pair[1], { std = 0 })
      local l2, dx2, dw2 = run(pair[2], {})
      H.assert_close(l1, l2, 1e-6)
      H.assert_close(H.values(dx1), H.values(dx2), 1e-5, 1e-7)
      H.assert_close(H.values(dw1), H.values(dw2), 1e-5, 1e-7)
    end
  end)

  H.it("matches the authors' formulation in PyTorch with the margins it drew (spec/support/elastic_torch.py)", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local K, D, B, steps = 13, 8, 10, 3
    local W = facet.randn({ K, D }, { seed = 31 })
    local cases = { { "elastic-arc", "arc", {} }, { "elastic-cos", "cos", {} },
      { "elastic-arc", "arc", { plus = true } }, { "elastic-cos", "cos", { plus = true, std = 0.1 } } }
    -- every case's steps first, then one Python process for all of them (torch imported once)
    local jobs = {}
    for _, case in ipairs(cases) do
      local o = { classes = K, dim = D, s = 16 }
      for k, v in pairs(case[3]) do o[k] = v end
      local head = facet.heads.new(case[1], o)
      head.weight:copy(W)
      head = head:to(H.device)
      case.dir = H.temp_dir()
      facet.save_npy(W, case.dir .. "/w.npy")
      case.got = {}
      for step = 1, steps do
        -- rows near their class centre: theta_y + m stays below pi (the authors' code has no fallback)
        local y = facet.tensor(labels(B, K), { dtype = "int64" })
        local x = facet.randn({ B, D }, { seed = 50 + step }):mul(0.3):add(W:index_select(y + 1))
        head:zero_grad()
        local loss = head:forward(H.on(x), H.on(y))
        -- copies: the head reuses its buffers, and on the CPU to("cpu") is the tensor itself
        local dx = head:backward():to("cpu"):clone()
        case.got[step] = { loss = loss, dx = dx, dw = head.grad_weight:to("cpu"):clone() }
        facet.save_npy(x, ("%s/x%d.npy"):format(case.dir, step))
        facet.save_npy(y, ("%s/y%d.npy"):format(case.dir, step))
        facet.save_npy(head:margins():to("cpu"), ("%s/mg%d.npy"):format(case.dir, step))
      end
      jobs[#jobs + 1] = case.dir .. ":" .. case[2]
    end
    local out, rc = F.sh(("%s spec/support/elastic_torch.py %d 16 %s"):format(F.PY, steps, table.concat(jobs, " ")))
    assert.are.equal(0, rc, out)
    local function rel(a, b) return (a - b):abs():max() / b:abs():max() end
    for _, case in ipairs(cases) do
      for step = 1, steps do
        local got = case.got[step]
        local ref = facet.load_npy(("%s/out%d.npy"):format(case.dir, step)):totable()
        H.assert_close(got.loss, ref[1], 1e-5)
        local rdx = facet.load_npy(("%s/dx%d.npy"):format(case.dir, step))
        local rdw = facet.load_npy(("%s/dw%d.npy"):format(case.dir, step))
        assert.is_true(rel(got.dx, rdx) < 1e-4, case[1] .. " dL/dx off by " .. rel(got.dx, rdx))
        assert.is_true(rel(got.dw, rdw) < 1e-4, case[1] .. " dL/dW off by " .. rel(got.dw, rdw))
      end
      H.remove_dir(case.dir)
    end
  end)

  it("checks its options: m >= 0, std in [0, 10], plus a boolean, no scripted margin; defaults by variant", function()
    local small = { classes = 3, dim = 2 }
    local function with(t) local r = {} for k, v in pairs(small) do r[k] = v end for k, v in pairs(t) do r[k] = v end return r end
    H.assert_error(function() facet.heads.new("elastic-arc", with { std = -1 }) end, "std")
    H.assert_error(function() facet.heads.new("elastic-arc", with { std = 0 / 0 }) end, "std")
    H.assert_error(function() facet.heads.new("elastic-cos", with { m = -0.1 }) end, "option m")
    H.assert_error(function() facet.heads.new("elastic-cos", with { plus = 1 }) end, "plus")
    H.assert_error(function() facet.heads.new("elastic-cos", with { easy_margin = true }) end,
      "unknown option 'easy_margin'")
    H.assert_error(function() facet.heads.new("elastic-arc", with { margin = function(c) return c end }) end,
      "unknown option 'margin'")
    H.assert_error(function() facet.heads.new("arc", with { std = 0.1 }) end, "unknown option 'std'")
    -- the authors' settings: std 0.05; with plus 0.0175 (arc) and 0.02 (cos)
    assert.are.same({ 0.5, 0.05 }, { facet.heads.new("elastic-arc", with {}).m, facet.heads.new("elastic-arc", with {}).std })
    assert.are.equal(0.0175, facet.heads.new("elastic-arc", with { plus = true }).std)
    assert.are.equal(0.02, facet.heads.new("elastic-cos", with { plus = true }).std)
    assert.are.equal(0.35, facet.heads.new("elastic-cos", with {}).m)
    assert.are.equal("elastic-arc", facet.heads.new("elasticface-arc", with {}).name)
    assert.matches("std=0.0175, plus", tostring(facet.heads.new("elastic-arc", with { plus = true })))
    assert.is_nil(facet.heads.new("arc", with {}):margins())
  end)

  it("facet_head_elastic refuses what it cannot use, naming it", function()
    local head = facet.heads.new("elastic-arc", { classes = 3, dim = 2 })
    local rows = facet.zeros({ 4, tonumber(C.FACET_HEAD_ROW_COUNT) })
    local function fails(pattern, ...)
      local rc = C.facet_head_elastic(...)
      assert.are_not.equal(0, rc)
      assert.truthy(core.last_error():find(pattern, 1, true), core.last_error())
    end
    fails("draws must be 4 contiguous values", head.handle, rows.h, facet.zeros({ 3 }).h)
    fails("draws", head.handle, rows.h, facet.zeros({ 4 }, { dtype = "int32" }).h)
    fails("draws", head.handle, rows.h, nil)
    fails("rows", head.handle, nil, facet.zeros({ 4 }).h)
    fails("rows must be contiguous", head.handle, facet.zeros({ 4, 3 }).h, facet.zeros({ 4 }).h)
    fails("head is NULL", nil, rows.h, facet.zeros({ 4 }).h)
    local arc = facet.heads.new("arc", { classes = 3, dim = 2 })
    fails("not ElasticFace's", arc.handle, rows.h, facet.zeros({ 4 }).h)
    -- and a good call writes the margins: m + std * draw
    assert.are.equal(0, C.facet_head_elastic(head.handle, rows.h, facet.tensor({ 1, -1, 0, 2 }).h))
    local r = rows:totable()
    for i, d in ipairs { 1, -1, 0, 2 } do
      H.assert_close(r[i][tonumber(C.FACET_HEAD_ROW_NORM) + 1], 0.5 + 0.05 * d, 1e-7)
    end
  end)
end)
