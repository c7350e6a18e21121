--- Row indexing (index_select / index_add_ / index_copy_), per-row gather and
-- scatter. (Row L2 normalisation is in normalize_spec.lua.)
local H = require "support.device"
local facet = H.facet

describe("row indexing", function()
  H.it("index_select picks rows (1-based, int32 and int64 indices)", function()
    local src = facet.arange(12):reshape { 4, 3 }:to(H.device)
    for _, dt in ipairs { "int32", "int64" } do
      local idx = H.tensor({ 4, 1, 4 }, { dtype = dt })
      local out = src:index_select(idx)
      assert.are.same({ 3, 3 }, out:shape())
      assert.are.same({ 9, 10, 11, 0, 1, 2, 9, 10, 11 }, H.values(out))
    end
  end)

  H.it("index_add_ accumulates duplicates; index_copy_ writes rows", function()
    local dst = facet.zeros({ 3, 2 }, { device = H.device })
    local src = H.tensor { { 1, 2 }, { 10, 20 }, { 100, 200 } }
    dst:index_add_(H.tensor({ 2, 2, 3 }, { dtype = "int64" }), src, 0.5)
    assert.are.same({ 0, 0, 5.5, 11, 50, 100 }, H.values(dst))
    dst:index_copy_(H.tensor({ 1 }, { dtype = "int32" }), H.tensor { { 7, 8 } })
    assert.are.same({ 7, 8, 5.5, 11, 50, 100 }, H.values(dst))
  end)

  H.it("index_add_ applies duplicates in source order, bit for bit a serial loop; index_copy_ keeps the last", function()
    -- in float, 1e8 + 1 = 1e8: only the source order gives 1e8 + 1 - 1e8 + 1 = 1
    local dst = facet.zeros({ 2, 1 }, { device = H.device })
    dst:index_add_(H.tensor({ 1, 1, 2, 1, 1 }, { dtype = "int64" }), H.tensor { { 1e8 }, { 1 }, { 5 }, { -1e8 }, { 1 } })
    assert.are.same({ 1, 5 }, H.values(dst))
    -- big enough for the parallel path: one call equals n calls of one row each
    local n, cols, rows = 300, 128, 7
    local idx, one = {}, {}
    for i = 1, n do idx[i] = (i * 5) % rows + 1 end
    local src = H.on(facet.randn({ n, cols }, { seed = 3, std = 1e3 }))
    local a = H.on(facet.randn({ rows, cols }, { seed = 4 }))
    local b = a:clone()
    a:index_add_(H.tensor(idx, { dtype = "int32" }), src, 0.3)
    for i = 1, n do
      one[1] = idx[i]
      b:index_add_(H.tensor(one, { dtype = "int32" }), src:narrow(1, i, 1):contiguous(), 0.3)
    end
    assert.are.same(H.values(b), H.values(a))
    local c = facet.zeros({ 3, 2 }, { device = H.device })
    c:index_copy_(H.tensor({ 2, 3, 2 }, { dtype = "int64" }), H.tensor { { 1, 1 }, { 2, 2 }, { 3, 3 } })
    assert.are.same({ 0, 0, 3, 3, 2, 2 }, H.values(c))
  end)

  H.it("gather and scatter_ one column per row", function()
    local m = H.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
    local idx = H.tensor({ 3, 1 }, { dtype = "int32" })
    assert.are.same({ 3, 4 }, H.values(m:gather(idx)))
    m:scatter_(idx, H.tensor { -1, -2 })
    assert.are.same({ 1, 2, -1, -2, 5, 6 }, H.values(m))
  end)

  it("out-of-range and malformed indices are errors that touch nothing", function()
    local src = facet.ones({ 4, 3 })
    H.assert_error(function() src:index_select(facet.tensor({ 5 }, { dtype = "int32" })) end,
      "facet_tensor_index_select", "= 5 outside [1, 4]")
    H.assert_error(function() src:index_select(facet.tensor({ 0 }, { dtype = "int64" })) end, "outside [1, 4]")
    H.assert_error(function() src:index_select(facet.tensor({ 1 })) end, "int32 or int64")
    local dst = facet.zeros({ 2, 3 })
    H.assert_error(function() dst:index_add_(facet.tensor({ 1, 3 }, { dtype = "int32" }), facet.ones({ 2, 3 })) end,
      "outside")
    assert.are.equal(0, dst:sum())
    H.assert_error(function() src:gather(facet.tensor({ 1, 2 }, { dtype = "int32" })) end, "one index")
    H.assert_error(function() src:gather(facet.tensor({ 1, 2, 4, 1 }, { dtype = "int32" })) end, "outside [1, 3]")
  end)
end)
