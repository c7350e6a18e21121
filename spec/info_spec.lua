--- `facet info FILE`: what a data or weights file holds.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

local function info(path)
  local p = io.popen(("luajit bin/facet info %q 2>&1; echo rc=$?"):format(path))
  local out = p:read("*a")
  p:close()
  return out
end

describe("facet info", function()
  it("describes .bin, .npy, .safetensors, .rec and IDX files", function()
    assert.truthy(info("spec/fixtures/bin/p3_bytes.bin"):find("verification set, 3 pairs (1 same, 2 different), 6 images", 1, true))
    assert.truthy(info("spec/fixtures/f32_2x3.npy"):find("NumPy array, float32, shape 2x3", 1, true))
    local dir = F.temp_dir()
    facet.save_safetensors({ w = facet.ones({ 2, 3 }), b = facet.zeros({ 3 }, { dtype = "int64" }) }, dir .. "/m.safetensors")
    local s = info(dir .. "/m.safetensors")
    assert.truthy(s:find("safetensors, 2 tensors", 1, true), s)
    assert.truthy(s:find("total: 9 elements", 1, true), s)
    local png = F.read_file("spec/fixtures/images/rgb_3x4.png")
    local w = facet.data.recordio_writer(dir .. "/t")
    w:write(0, 7, png)
    w:write(1, 8, png)
    w:close()
    s = info(dir .. "/t.rec")
    assert.truthy(s:find("RecordIO, plain layout, 2 images, 0 identities; first labels 7 8", 1, true), s)
    assert.truthy(s:find("first image: png 4x3", 1, true), s)
    F.remove_dir(dir)
  end)

  it("fails clearly on unknown or broken files", function()
    local s = info("nope.xyz")
    assert.truthy(s:find("unknown kind of file", 1, true) and s:find("rc=1", 1, true), s)
    s = info("spec/fixtures/bin/truncated.bin")
    assert.truthy(s:find("facet info:", 1, true) and s:find("rc=1", 1, true), s)
  end)
end)
