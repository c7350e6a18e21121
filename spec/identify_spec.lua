--- Identification: rank-1 and CMC on a crafted gallery with distractors,
-- blocked GEMMs giving the same ranks as one block, and errors.
local H = require "support.device"
local facet = H.facet

local function unit(deg)
  local r = math.rad(deg)
  return { math.cos(r), math.sin(r) }
end

describe("facet.eval.identify", function()
  -- gallery: identities 1, 2, 3 at 0, 90, 180 degrees; a distractor at 40 degrees
  local gallery = facet.tensor { unit(0), unit(90), unit(180), unit(40) }
  local glabels = { 1, 2, 3, -1 }

  it("rank-1 and CMC by hand", function()
    -- probe A (id 1) at 10 degrees: its match is nearest. Probe B (id 2) at 30
    -- degrees: identity 1 and the distractor outrank identity 2 (rank 3).
    -- Probe C (id 3) at 170 degrees: nearest.
    local probe = facet.tensor { unit(10), unit(30), unit(170) }
    local r = facet.eval.identify(probe, { 1, 2, 3 }, gallery, glabels, { max_rank = 4 })
    assert.are.same({ 0, 2, 0 }, r.ranks)
    H.assert_close(r.rank1, 2 / 3, 1e-12)
    H.assert_close(r.cmc[2], 2 / 3, 1e-12)
    assert.are.equal(1, r.cmc[3])
    assert.are.equal(1, r.cmc[4])
  end)

  it("blocks of the gallery give the ranks of one block", function()
    local g = facet.randn({ 500, 16 }, { seed = 1 })
    local gl = {}
    for i = 1, 500 do gl[i] = i % 50 end
    local p = g:narrow(1, 1, 40):clone():add_(facet.randn({ 40, 16 }, { seed = 2 }):mul_(0.8))
    local pl = {}
    for i = 1, 40 do pl[i] = gl[i] end
    local whole = facet.eval.identify(p, pl, g, gl)
    local blocked = facet.eval.identify(p, pl, g, gl, { block = 37 })
    assert.are.same(whole.ranks, blocked.ranks)
    assert.are.same(whole.cmc, blocked.cmc)
    assert.is_true(whole.rank1 > 0.5)
  end)

  it("checks its arguments", function()
    local probe = facet.tensor { unit(10) }
    H.assert_error(function() facet.eval.identify(probe, { 7 }, gallery, glabels) end, "identity 7 is not in the gallery")
    H.assert_error(function() facet.eval.identify(probe, { 1, 2 }, gallery, glabels) end, "1 probe embeddings but 2 labels")
    H.assert_error(function() facet.eval.identify(facet.ones({ 1, 3 }), { 1 }, gallery, glabels) end, "probe dim 3")
  end)
end)
