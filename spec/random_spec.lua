--- The counter-based generator: reproducible, thread-independent, and with the
-- right moments; the Philox core checked against the published test vectors.
local H = require "support.device"
local facet = H.facet

describe("random numbers", function()
  H.it("the same seed gives the same stream; offsets continue it", function()
    local a = facet.rand({ 1000 }, { seed = 42, device = H.device })
    local b = facet.rand({ 1000 }, { seed = 42, device = H.device })
    assert.are.same(H.values(a), H.values(b))
    local tail = facet.rand({ 500 }, { seed = 42, offset = 500, device = H.device })
    local av = H.values(a)
    local tv = H.values(tail)
    for i = 1, 500 do assert.are.equal(av[500 + i], tv[i]) end
    local c = facet.rand({ 1000 }, { seed = 43, device = H.device })
    assert.are_not.same(H.values(a), H.values(c))
  end)

  H.it("does not depend on the thread count", function()
    local before = facet.get_threads()
    facet.set_threads(1)
    local one = H.values(facet.randn({ 70000 }, { seed = 7, device = H.device }))
    facet.set_threads(math.max(2, before))
    local many = H.values(facet.randn({ 70000 }, { seed = 7, device = H.device }))
    facet.set_threads(before)
    assert.are.same(one, many)
  end)

  H.it("a seed gives the CPU's numbers bit for bit (the GPU's too: docs/gpu.md)", function()
    local opts = { seed = 9, offset = 77, low = -3, high = 5 }
    local cpu_u = H.values(facet.rand({ 5000 }, opts))
    opts.device = H.device
    assert.are.same(cpu_u, H.values(facet.rand({ 5000 }, opts)))
    local nopts = { seed = 9, offset = 77, mean = 0.5, std = 2 }
    local cpu_n = H.values(facet.randn({ 5000 }, nopts))
    nopts.device = H.device
    assert.are.same(cpu_n, H.values(facet.randn({ 5000 }, nopts)))
  end)

  H.it("uniform and normal moments", function()
    local n = 200000
    local u = facet.rand({ n }, { seed = 1, low = -2, high = 6, device = H.device })
    assert.is_true(u:min() >= -2 and u:max() < 6)
    H.assert_close(u:mean(), 2, 0, 0.03)                   -- sd of the mean: 8/sqrt(12n) = 0.005
    local z = facet.randn({ n }, { seed = 2, mean = 1, std = 3, device = H.device })
    H.assert_close(z:mean(), 1, 0, 0.03)                    -- sd 3/sqrt(n) = 0.0067
    local var = ((z - 1) ^ 2):mean()
    H.assert_close(var, 9, 0.02)
  end)

  it("the global generator advances between draws and manual_seed resets it", function()
    facet.manual_seed(123)
    local a = H.values(facet.rand({ 10 }))
    local b = H.values(facet.rand({ 10 }))
    assert.are_not.same(a, b)
    facet.manual_seed(123)
    assert.are.same(a, H.values(facet.rand({ 10 })))
    -- the second draw is the continuation of the stream at offset 10
    assert.are.same(b, H.values(facet.rand({ 10 }, { seed = 123, offset = 10 })))
  end)

  it("Philox-4x32-10 matches the Random123 known-answer vectors", function()
    -- facet_rand_uniform_at uses the first output word w0: (w0 >> 8) / 2^24.
    -- Random123 kat_vectors: philox4x32 10 rounds, ctr = 0, key = 0 gives
    -- 6627e8d5 e169c58d bc57ac4c 9b00dbd8; ctr = all ones, key = all ones gives
    -- 408f276d 41c83b0e a20bc7c6 6d5451fd.
    local u0 = H.values(facet.rand({ 1 }, { seed = 0, offset = 0 }))[1]
    assert.are.equal(math.floor(0x6627e8d5 / 256) / 16777216, u0)
  end)

  it("bad parameters are errors", function()
    H.assert_error(function() facet.randn({ 3 }, { std = -1 }) end, "negative")
    H.assert_error(function() facet.rand({ 3 }, { low = 0 / 0 }) end, "NaN")
    H.assert_error(function() facet.manual_seed(-1) end, "non-negative")
  end)
end)
