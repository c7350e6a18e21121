--- Printing: aligned columns, integer and float formats, truncation of large
-- tensors with "...", and the dtype/device/shape footer.
local H = require "support.device"
local facet = H.facet

describe("printing", function()
  it("a small integer-valued matrix", function()
    local s = tostring(facet.tensor { { 1, 2 }, { 3, 40 } })
    assert.are.equal("   1   2\n   3  40\n[facet.Tensor float32 cpu 2x2]", s)
  end)

  it("floats share one fixed-point format with aligned columns", function()
    local s = tostring(facet.tensor { { 0.5, -1.25 }, { 10, 3 } })
    assert.are.equal("  0.5000 -1.2500\n 10.0000  3.0000\n[facet.Tensor float32 cpu 2x2]", s)
  end)

  it("wide ranges switch to scientific notation", function()
    local s = tostring(facet.tensor { 1e-6, 123456 })
    assert.truthy(s:find("1.0000e-06", 1, true))
    assert.truthy(s:find("1.2346e+05", 1, true))
  end)

  it("vectors print as a column; int dtypes as integers", function()
    assert.are.equal("   3\n   1\n   4\n[facet.Tensor int32 cpu 3]",
      tostring(facet.tensor({ 3, 1, 4 }, { dtype = "int32" })))
  end)

  it("large tensors are cut with ... and keep their footer", function()
    local s = tostring(facet.arange(10000):reshape { 100, 100 })
    local lines = {}
    for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(8, #lines)                       -- 3 rows, ..., 3 rows, footer
    assert.truthy(lines[1]:find("0 +1 +2 +%.%.%. +97 +98 +99$"))
    assert.truthy(lines[4]:find("^ +%.%.%."))
    assert.truthy(lines[7]:find("9900 +9901 +9902 +%.%.%. +9997 +9998 +9999$"))
    assert.are.equal("[facet.Tensor float32 cpu 100x100]", lines[8])
  end)

  it("3-D tensors print slice by slice", function()
    local s = tostring(facet.arange(8):reshape { 2, 2, 2 })
    assert.are.equal("(1,.,.) = \n   0   1\n   2   3\n\n(2,.,.) = \n   4   5\n   6   7\n" ..
      "[facet.Tensor float32 cpu 2x2x2]", s)
  end)

  it("special values, scalars, empty and freed tensors", function()
    local s = tostring(facet.tensor { 1, 0 / 0, math.huge })
    assert.truthy(s:find("nan", 1, true) or s:find("-nan", 1, true))
    assert.truthy(s:find("inf", 1, true))
    assert.are.equal("2.5000\n[facet.Tensor float32 cpu scalar]", tostring(facet.tensor(2.5)))
    assert.are.equal("[facet.Tensor float32 cpu 0x3]", tostring(facet.zeros({ 0, 3 })))
    local t = facet.ones({ 2 })
    t:free()
    assert.are.equal("[facet.Tensor (freed)]", tostring(t))
  end)

  H.it("device tensors print their device", function()
    local s = tostring(H.tensor { 1, 2 })
    assert.truthy(s:find("[facet.Tensor float32 " .. H.device .. " 2]", 1, true))
  end)
end)
