--- Synthetic identities: deterministic, identities differ, the hard-sample
-- knob, and the written .rec/.bin read back through the real readers.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

describe("synthetic identities", function()
  it("renders deterministically; identities and samples differ", function()
    local a = H.values(facet.data.render_synthetic(5, 3, 1, 32, 0))
    assert.are.same(a, H.values(facet.data.render_synthetic(5, 3, 1, 32, 0)))
    assert.are_not.same(a, H.values(facet.data.render_synthetic(5, 3, 2, 32, 0)))    -- another pose
    assert.are_not.same(a, H.values(facet.data.render_synthetic(5, 4, 1, 32, 0)))    -- another identity
    assert.are_not.same(a, H.values(facet.data.render_synthetic(6, 3, 1, 32, 0)))    -- another seed
  end)

  it("the hard knob: none at 0, all at 1", function()
    for k = 1, 10 do
      local _, h0 = facet.data.render_synthetic(1, 1, k, 16, 0)
      local _, h1 = facet.data.render_synthetic(1, 1, k, 16, 1)
      assert.is_false(h0)
      assert.is_true(h1)
    end
  end)

  it("writes InsightFace training data and a disjoint verification .bin", function()
    local dir = F.temp_dir()
    local r = facet.data.synthetic { out = dir .. "/syn", identities = 6, images = 3, size = 24, pairs = 10, seed = 2,
      verify_identities = 4 }
    assert.are.equal(18, r.images)
    local rec = facet.data.recordio(dir .. "/syn")
    assert.are.equal("insightface", rec:layout())
    assert.are.equal(18, rec:num_images())
    assert.are.equal(6, rec:num_identities())
    assert.are.same({ 4, 6 }, { rec:identity(2) })
    assert.are.equal(5, rec:label(18))
    local train = {}
    for i = 1, 18 do train[rec:image_bytes(i)] = true end
    local v = facet.data.load_bin(r.verify, { decode = false })
    assert.are.equal(10, v.pairs)
    local same = 0
    for _, s in ipairs(v.issame) do if s then same = same + 1 end end
    assert.are.equal(5, same)
    for _, b in ipairs(v.images) do assert.is_nil(train[b], "a verification image is also a training image") end
    local d = facet.data.load_bin(r.verify)
    assert.are.same({ 20, 3, 24, 24 }, d.images:shape())
    F.remove_dir(dir)
  end)

  it("makes the output's directory when it is missing", function()
    local dir = F.temp_dir()
    local r = facet.data.synthetic { out = dir .. "/data/nested/syn", identities = 2, images = 2, size = 16,
      pairs = 4, seed = 1 }
    assert.are.equal(4, r.images)
    assert.are.equal(4, facet.data.recordio(dir .. "/data/nested/syn"):num_images())
    assert.is_true(F.exists(dir .. "/data/nested/syn_verify.bin"))
    F.remove_dir(dir)
  end)
end)
