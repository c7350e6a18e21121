--- nn modules: finite-difference Jacobians, values, containers, error naming,
-- printing and the module API. (Activations and Dropout are in
-- activation_spec.lua.)
local H = require "support.device"
local J = require "support.jacobian"
local facet = H.facet
local nn = facet.nn

local on = H.module

describe("Linear", function()
  H.it("computes x W^T + b and has exact gradients", function()
    local m = on(nn.Linear(3, 2))
    m.weight:copy(facet.tensor { { 1, 2, 3 }, { -1, 0, 0.5 } })
    m.bias:copy(facet.tensor { 0.5, -1 })
    local y = m:forward(H.tensor { { 1, 1, 1 }, { 2, 0, -2 } })
    assert.are.same({ 6.5, -1.5, -3.5, -4 }, H.values(y))
    J.check(on(nn.Linear(5, 4)), H.on(facet.randn({ 3, 5 }, { seed = 1 })))
    J.check(on(nn.Linear(5, 4, false)), H.on(facet.randn({ 3, 5 }, { seed = 2 })))
  end)
  H.it("accumulates gradients and zero_grad clears them", function()
    local m = on(nn.Linear(2, 2))
    local x = H.on(facet.randn({ 4, 2 }, { seed = 3 }))
    local g = H.on(facet.ones({ 4, 2 }))
    m:forward(x); m:backward(x, g)
    local once = H.values(m.grad_weight)
    m:forward(x); m:backward(x, g)
    local twice = H.values(m.grad_weight)
    for i = 1, #once do H.assert_close(twice[i], 2 * once[i], 1e-6) end
    m:zero_grad()
    assert.are.equal(0, m.grad_weight:norm() + m.grad_bias:norm())
  end)
  it("names itself in shape errors", function()
    H.assert_error(function() nn.Linear(3, 2):forward(facet.ones({ 2, 4 })) end, "Linear(3->2)", "B x 3")
  end)
end)

describe("containers", function()
  H.it("Sequential, Residual, Add, Mul and Concat have exact Jacobians", function()
    local x = H.on(facet.randn({ 3, 4 }, { seed = 7 }))
    J.check(on(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))), x)
    J.check(on(nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()))), x)
    J.check(on(nn.Residual(nn.Linear(4, 3), nn.Linear(4, 3))), x)
    J.check(on(nn.Add(nn.Linear(4, 2), nn.Linear(4, 2), nn.Sequential(nn.Linear(4, 2), nn.Tanh()))), x)
    J.check(on(nn.Mul(nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()))), x)
    J.check(on(nn.Concat(2, nn.Linear(4, 2), nn.Sequential(nn.Linear(4, 3), nn.Tanh()))), x)
  end)

  H.it("Flatten and Identity", function()
    local x = H.on(facet.randn({ 2, 3, 4 }, { seed = 8 }))
    local f = on(nn.Flatten())
    assert.are.same({ 2, 12 }, f:forward(x):shape())
    assert.are.same({ 2, 3, 4 }, f:backward(x, H.on(facet.ones({ 2, 12 }))):shape())
    assert.are.equal(x, on(nn.Identity()):forward(x))
  end)

  it("errors name the failing module, through nested containers", function()
    local net = nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.ReLU(), nn.Linear(5, 2)))
    H.assert_error(function() net:forward(facet.ones({ 2, 4 })) end,
      "In Sequential (2) Sequential: In Sequential (2) Linear(5->2): Linear(5->2): want B x 5 input")
    H.assert_error(function() nn.Sequential(1) end, "not a module")
    H.assert_error(function() nn.Linear(0, 3) end, "positive sizes")
  end)

  it("prints the tree with parameter counts; train/evaluate reach every child", function()
    local net = nn.Sequential(nn.Linear(4, 3), nn.Residual(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.1))))
    local s = tostring(net)
    assert.truthy(s:find("(1) Linear(4->3)  [15 params]", 1, true), s)
    assert.truthy(s:find("(2) Residual", 1, true), s)
    assert.truthy(s:find("(1) Linear(3->3)  [12 params]", 1, true), s)
    assert.truthy(s:find("total: 27 parameters", 1, true), s)
    net:evaluate()
    assert.is_false(net.modules[2].modules[1].modules[2].training)
    net:train()
    assert.is_true(net.modules[2].modules[1].modules[2].training)
    local params, grads = net:parameters()
    assert.are.equal(4, #params)
    assert.are.equal(#params, #grads)
    net:forward(facet.ones({ 2, 4 }))
    net:clear_state()
    assert.is_nil(net.modules[1].buffers.output)
  end)
end)

describe("convolution, normalisation and pooling modules", function()
  H.it("Conv2d (plain, strided, grouped, depthwise, dilated) Jacobians", function()
    local x = H.on(facet.randn({ 2, 4, 7, 6 }, { seed = 20 }))
    J.check(on(nn.Conv2d(4, 3, 3, { padding = 1 })), x)
    J.check(on(nn.Conv2d(4, 6, 3, { stride = 2, groups = 2, bias = false })), x)
    J.check(on(nn.Conv2d(4, 4, 3, { groups = 4, padding = 1 })), x)
    J.check(on(nn.Conv2d(4, 2, { 3, 1 }, { dilation = 2, padding = { 2, 0 } })), x)
    J.check(on(nn.Conv2d(4, 5, 1)), x)
  end)

  H.it("BatchNorm2d / 1d in training and evaluation", function()
    local x = H.on(facet.randn({ 3, 4, 5, 5 }, { seed = 21 }))
    local bn = on(nn.BatchNorm2d(4))
    bn.weight:copy(facet.tensor { 1, 2, 0.5, -1 }); bn.bias:copy(facet.tensor { 0, 1, -1, 0.5 })
    J.check(bn, x, { h = 1e-2, tol = 1e-2 })
    local y = bn:forward(x)
    -- per channel, the output is weight * standardised input + bias
    local ch = H.values(y:permute(2, 1, 3, 4):reshape { 4, 75 }:mean(2))
    H.assert_close(ch, { 0, 1, -1, 0.5 }, 0, 1e-5)
    bn:evaluate()
    J.check(bn, x)
    J.check(on(nn.BatchNorm1d(5, { affine = false })), H.on(facet.randn({ 6, 5 }, { seed = 22 })), { tol = 1e-2 })
  end)

  H.it("MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Upsample, SE", function()
    local x = H.on(facet.randn({ 2, 3, 6, 6 }, { seed = 23 }))
    J.check(on(nn.MaxPool2d(2)), x)
    J.check(on(nn.AvgPool2d(3, { stride = 2, padding = 1, count_include_pad = false })), x)
    local g = on(nn.AdaptiveAvgPool2d(1))
    assert.are.same({ 2, 3, 1, 1 }, g:forward(x):shape())
    local plane, m = H.values(x:narrow(1, 1, 1):narrow(2, 1, 1)), 0
    for _, v in ipairs(plane) do m = m + v / #plane end
    H.assert_close(H.values(g.output)[1], m, 1e-5)
    J.check(g, x)
    J.check(on(nn.Upsample { scale = 2, mode = "bilinear" }), x)
    J.check(on(nn.Upsample { size = { 9, 7 } }), x)
    J.check(on(nn.SE(3, 1)), x, { tol = 1e-2 })
  end)

  H.it("Attention: (1 + mask) * trunk with the trunk feeding the mask's top", function()
    local x = H.on(facet.randn({ 2, 3, 6, 6 }, { seed = 24 }))
    local att = on(nn.Attention {
      first = nn.Conv2d(3, 4, 3, { padding = 1 }),
      trunk = nn.Sequential(nn.Conv2d(4, 4, 3, { padding = 1 }), nn.Tanh()),
      mask = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(4, 4, 1)),   -- smooth, for finite differences
      up = nn.Upsample { size = { 6, 6 }, mode = "bilinear", align_corners = true },
      head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sigmoid()),
      last = nn.Conv2d(4, 2, 1),
    })
    J.check(att, x, { tol = 1e-2 })
  end)

  it("describe shapes and errors", function()
    assert.are.equal("Conv2d(64->128, 3x3, s2, p1, no bias)", nn.Conv2d(64, 128, 3, { stride = 2, padding = 1, bias = false }):describe())
    assert.are.equal("Conv2d(64->64, 3x3, p1, depthwise)", nn.Conv2d(64, 64, 3, { padding = 1, groups = 64 }):describe())
    H.assert_error(function() nn.Conv2d(3, 4, 3):forward(facet.ones({ 1, 2, 5, 5 })) end, "want N x 3 x H x W")
    H.assert_error(function() nn.Conv2d(3, 4, 3, { groups = 2 }) end, "divisible by groups")
    local net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(4, 8, 3))
    H.assert_error(function() net:forward(facet.ones({ 1, 3, 9, 9 })) end, "In Sequential (3) Conv2d(4->8, 3x3)")
  end)
end)

describe("views that are not contiguous", function()
  local nn = facet.nn
  -- every element of t, through float32
  local function values(t) return t:to("cpu"):float():contiguous():reshape({ t:numel() }):totable() end
  H.it("reach a layer's kernels as a contiguous copy: the same forward and backward as a contiguous input", function()
    local makers = {
      function() return nn.Conv2d(3, 4, 3, { padding = 1 }) end,
      function() return nn.BatchNorm2d(3) end,
      function() return nn.PReLU(3) end,
      function() return nn.MaxPool2d(2) end,
      function() return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(2)) end,
    }
    for _, dt in ipairs { "float32", "bfloat16" } do
      for i, make in ipairs(makers) do
        local wide = H.on(facet.randn({ 2, 3, 8, 16 }, { seed = i })):to(dt)
        local view = wide:narrow(4, 3, 8)                   -- 2 x 3 x 8 x 8, not contiguous
        assert.is_false(view:is_contiguous())
        local dense = view:contiguous()
        facet.manual_seed(1)
        local a = make():to(H.device)
        facet.manual_seed(1)
        local b = make():to(H.device)
        local ya, yb = a:forward(view), b:forward(dense)
        assert.are.same(values(yb), values(ya), ("%s %d forward"):format(dt, i))
        local g = H.on(facet.randn(ya:shape(), { seed = 9 })):to(ya:dtype())
        local gview = H.on(facet.randn({ ya:size(1), ya:size(2), ya:size(3), 2 * ya:size(4) }, { seed = 9 }))
          :to(ya:dtype()):narrow(4, 1, ya:size(4))          -- a grad_out that is a view too
        g:copy(gview)
        local ga, gb = a:backward(view, gview), b:backward(dense, g)
        assert.are.same(values(gb), values(ga), ("%s %d backward"):format(dt, i))
        local _, pa = a:parameters()
        local _, pb = b:parameters()
        for k = 1, #pa do assert.are.same(values(pb[k]), values(pa[k]), ("%s %d grad %d"):format(dt, i, k)) end
      end
    end
  end)
end)
