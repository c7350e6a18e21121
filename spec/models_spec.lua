--- Backbones: parameter counts against the published architectures, output
-- shapes, gradients reaching every parameter, and an overfitting run.
local H = require "support.device"
local facet = H.facet

local on = H.module

describe("backbones", function()
  it("parameter counts match the published architectures", function()
    -- InsightFace's iresnet (arcface_torch) with a 512-d embedding
    assert.are.equal(24025600, facet.models.iresnet { depth = 18 }:count_parameters())
    assert.are.equal(34139328, facet.models.iresnet { depth = 34 }:count_parameters())
    assert.are.equal(43590848, facet.models.iresnet { depth = 50 }:count_parameters())
    assert.are.equal(65156160, facet.models.iresnet { depth = 100 }:count_parameters())
    -- IR-SE-50: two 1x1 convs of c * c/16 per unit on top
    local se = 0
    for _, b in ipairs { { 64, 3 }, { 128, 4 }, { 256, 14 }, { 512, 3 } } do se = se + b[2] * 2 * b[1] * (b[1] / 16) end
    assert.are.equal(43590848 + se, facet.models.iresnet { depth = 50, se = true }:count_parameters())
    -- MobileFaceNet (Chen et al. 2018: 0.99M with a 128-d embedding)
    assert.are.equal(1003136, facet.models.mobilefacenet { emb = 128 }:count_parameters())
    assert.are.equal(1200512, facet.models.mobilefacenet { emb = 512 }:count_parameters())
  end)

  it("the residual attention network: FaceX-Zoo's layout, Attention-56 and -92", function()
    -- counts cross-checked against an independent PyTorch construction of the same layout
    assert.are.equal(81135808, facet.models.attentionnet_irse { stages = { 1, 1, 1 }, se = false }:count_parameters())
    assert.are.equal(101791424, facet.models.attentionnet_irse { stages = { 1, 2, 3 }, se = false }:count_parameters())
    assert.are.equal(84060352, facet.models.attentionnet_irse { stages = { 1, 1, 1 } }:count_parameters())
  end)

  H.it("attentionnet_irse: output shape and gradients to every parameter", function()
    local m = on(facet.models.attentionnet_irse { size = 32, emb = 8, dropout = 0 })
    local x = H.on(facet.randn({ 2, 3, 32, 32 }, { seed = 9 }))
    local y = m:forward(x)
    assert.are.same({ 2, 8 }, y:shape())
    m:backward(x, H.on(facet.randn({ 2, 8 }, { seed = 10 })))
    for _, p in ipairs(m:named_parameters()) do assert.is_true(p.grad:norm() > 0, p.name .. " got no gradient") end
  end)

  H.it("output shapes: 112 x 112 (and 144 x 144) to the embedding", function()
    local x = H.on(facet.randn({ 2, 3, 112, 112 }, { seed = 1 }))
    local m = on(facet.models.mobilefacenet { emb = 128 })
    assert.are.same({ 2, 128 }, m:forward(x):shape())
    local r = on(facet.models.iresnet { depth = 18, emb = 64 })
    r:evaluate()
    assert.are.same({ 2, 64 }, r:forward(x):shape())
    local r144 = on(facet.models.iresnet { depth = 18, emb = 32, size = 144 })
    r144:evaluate()
    assert.are.same({ 1, 32 }, r144:forward(H.on(facet.randn({ 1, 3, 144, 144 }, { seed = 2 }))):shape())
    local c = on(facet.models.convnet {})
    assert.are.same({ 4, 128 }, c:forward(H.on(facet.randn({ 4, 1, 28, 28 }, { seed = 3 }))):shape())
  end)

  H.it("gradients reach every parameter of IR-SE-18", function()
    local m = on(facet.models.iresnet { depth = 18, se = true, emb = 16, size = 32 })
    local x = H.on(facet.randn({ 2, 3, 32, 32 }, { seed = 4 }))
    local y = m:forward(x)
    m:backward(x, H.on(facet.randn(y:shape(), { seed = 5 })))
    for _, p in ipairs(m:named_parameters()) do
      assert.is_true(p.grad:norm() > 0, p.name .. " got no gradient")
    end
  end)

  H.it("convnet + am head overfits 64 fixed samples", function()
    facet.manual_seed(7)
    local net = on(facet.models.convnet { emb = 32 })
    local head = facet.heads.new("am", { classes = 8, dim = 32, s = 16, seed = 1 }):to(H.device)
    local x = H.on(facet.randn({ 64, 1, 28, 28 }, { seed = 8 }))
    local labels = {}
    for i = 1, 64 do labels[i] = (i - 1) % 8 end
    local y = H.on(facet.tensor(labels, { dtype = "int32" }))
    local opt = facet.optim.sgd({ net, head }, { lr = 0.05, momentum = 0.9 })
    local first, last
    for _ = 1, 60 do
      opt:zero_grad()
      last = head:forward(net:forward(x), y)
      first = first or last
      net:backward(x, head:backward())
      opt:step()
    end
    assert.is_true(last < 0.05 * first, ("loss %g -> %g"):format(first, last))
  end)

  it("build makes a backbone by name and names the choices on a bad name or option", function()
    assert.are.same({ "attentionnet_irse", "convnet", "iresnet", "mobilefacenet", "vit" }, facet.models.names)
    local m = facet.models.build("convnet", { in_channels = 3, size = 16, emb = 8 })
    assert.are.equal(facet.models.convnet({ in_channels = 3, size = 16, emb = 8 }):count_parameters(), m:count_parameters())
    local r = facet.models.build("iresnet", { depth = 18, se = true, emb = 8, size = 16 })
    assert.are.equal(facet.models.iresnet({ depth = 18, se = true, emb = 8, size = 16 }):count_parameters(), r:count_parameters())
    assert.are.equal(facet.models.mobilefacenet({ emb = 128 }):count_parameters(),
      facet.models.build("mobilefacenet", { emb = 128 }):count_parameters())
    H.assert_error(function() facet.models.build("resnet", {}) end, "unknown backbone resnet",
      "attentionnet_irse, convnet, iresnet, mobilefacenet, vit")
    H.assert_error(function() facet.models.build("mobilefacenet", { depth = 50 }) end,
      "mobilefacenet takes no option depth (it takes arch, emb, size)")
    H.assert_error(function() facet.models.build("iresnet", { depth = 19 }) end, "depth must be 18, 34, 50 or 100")
  end)
end)
