--- State dict names: containers name their children as PyTorch modules do,
-- iresnet and mobilefacenet{arch = "mbf"} carry arcface_torch's names
-- (checked against PyTorch modules of that layout, tools/make_pth_fixtures.py,
-- when /usr/bin/python3 has torch), unnamed Sequentials keep positions, and
-- an older facet checkpoint with positional names is mapped on load.
local H = require "support.device"
local F = require "support.files"
local Fresh = require "support.fresh"
local facet = H.facet
local nn = facet.nn

-- Python runs uninstrumented under `make sanitize` (no sanitizer runtimes preloaded)
local PY = F.PY
local HAVE_TORCH = select(2, F.sh(PY .. " -c 'import torch'")) == 0

-- "name dtype shape" of every entry, sorted
local function listing(dict)
  local lines = {}
  for name, t in pairs(dict) do
    local s = table.concat(t:shape(), "x")
    lines[#lines + 1] = ("%s %s %s"):format(name, t:dtype(), s == "" and "scalar" or s)
  end
  table.sort(lines)
  return lines
end

describe("state_dict names", function()
  local tmp = F.scratch()

  it("iresnet18: arcface_torch's names, shapes and buffers", function()
    local d = facet.models.iresnet { depth = 18 }:state_dict()
    local want = {
      ["conv1.weight"] = "64x3x3x3", ["bn1.num_batches_tracked"] = "", ["prelu.weight"] = "64",
      ["layer1.0.bn1.running_mean"] = "64", ["layer1.0.conv1.weight"] = "64x64x3x3", ["layer1.0.prelu.weight"] = "64",
      ["layer1.0.bn3.running_var"] = "64", ["layer1.0.downsample.0.weight"] = "64x64x1x1",
      ["layer1.0.downsample.1.num_batches_tracked"] = "", ["layer2.1.conv2.weight"] = "128x128x3x3",
      ["layer4.1.bn3.bias"] = "512", ["bn2.weight"] = "512", ["fc.weight"] = "512x25088", ["fc.bias"] = "512",
      ["features.weight"] = "512", ["features.running_var"] = "512", ["features.num_batches_tracked"] = "",
    }
    for name, shape in pairs(want) do
      assert.is_not_nil(d[name], name)
      assert.are.equal(shape, table.concat(d[name]:shape(), "x"), name)
    end
    assert.are.equal("int64", d["features.num_batches_tracked"]:dtype())
    assert.is_nil(d["layer1.1.downsample.0.weight"])          -- identity shortcut: nothing saved
    local n = 0
    for _ in pairs(d) do n = n + 1 end
    -- 8 units of 3 BN (5 entries) + conv x2 + PReLU, 4 downsamples (conv + BN), stem, bn2, fc, features
    assert.are.equal(8 * (15 + 3) + 4 * 6 + 7 + 5 + 2 + 5, n)
  end)

  it("iresnet depths: the unit counts of arcface_torch (iresnet200 included)", function()
    for depth, units in pairs { [34] = { 3, 4, 6, 3 }, [200] = { 6, 26, 60, 6 } } do
      local m = facet.models.iresnet { depth = depth, emb = 8, size = 16 }
      local d = m:state_dict()
      for i, n in ipairs(units) do
        assert.is_not_nil(d[("layer%d.%d.bn3.weight"):format(i, n - 1)], depth .. " layer" .. i)
        assert.is_nil(d[("layer%d.%d.bn3.weight"):format(i, n)], depth .. " layer" .. i)
      end
    end
  end)

  it("mobilefacenet{arch = 'mbf'}: get_mbf's names and shapes", function()
    local m = facet.models.mobilefacenet { arch = "mbf" }
    assert.are.equal(2059520, m:count_parameters())             -- PyTorch's count of get_mbf(False, 512)
    local d = m:state_dict()
    local want = {
      ["layers.0.layers.0.weight"] = "128x3x3x3", ["layers.0.layers.2.weight"] = "128",
      ["layers.1.layers.0.weight"] = "128x2x3x3",                    -- 64 groups
      ["layers.2.layers.1.layers.0.weight"] = "128x1x3x3", ["layers.3.layers.3.layers.2.layers.1.running_mean"] = "128",
      ["layers.4.layers.0.layers.0.weight"] = "256x128x1x1", ["layers.6.layers.1.layers.0.weight"] = "512x1x3x3",
      ["layers.6.layers.2.layers.0.weight"] = "256x512x1x1", ["layers.7.layers.1.layers.2.layers.0.weight"] = "256x256x1x1", ["conv_sep.layers.0.weight"] = "512x256x1x1",
      ["features.layers.0.layers.0.weight"] = "512x1x7x7", ["features.layers.2.weight"] = "512x512",
      ["features.layers.3.num_batches_tracked"] = "",
    }
    for name, shape in pairs(want) do
      assert.is_not_nil(d[name], name)
      assert.are.equal(shape, table.concat(d[name]:shape(), "x"), name)
    end
    assert.is_nil(d["features.layers.2.bias"])
    assert.is_nil(d["layers.3.layers.4.layers.0.layers.0.weight"])  -- 4 residual units at 128
    assert.is_not_nil(d["layers.5.layers.5.layers.0.layers.0.weight"])  -- 6 at 256
  end)

  it("equal to PyTorch modules of arcface_torch's layout (keys, dtypes, shapes)", function()
    if not HAVE_TORCH then
      print("model_names_spec: /usr/bin/python3 has no torch; the comparison with PyTorch's modules is skipped")
      return pending("needs torch in /usr/bin/python3")
    end
    local out, rc = F.sh(("%s tools/make_pth_fixtures.py keys %s"):format(PY, tmp()))
    assert.are.equal(0, rc, out)
    for _, c in ipairs { { "iresnet18", facet.models.iresnet { depth = 18 } },
      { "mbf", facet.models.mobilefacenet { arch = "mbf" } } } do
      local theirs = {}
      for line in F.read_file(tmp(c[1] .. "_keys.txt")):gmatch("[^\n]+") do theirs[#theirs + 1] = line end
      table.sort(theirs)
      assert.are.same(theirs, listing(c[2]:state_dict()), c[1])
    end
  end)

  it("an unnamed Sequential keeps 1-based positions; named children, transparent ones", function()
    local m = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    assert.are.same({ "1.bias float32 3", "1.weight float32 3x2", "2.bias float32 3", "2.num_batches_tracked int64 scalar",
      "2.running_mean float32 3", "2.running_var float32 3", "2.weight float32 3" }, listing(m:state_dict()))
    local named = nn.Sequential():add(nn.Linear(2, 2), "fc"):add(nn.PReLU(2), "act")
    local r = nn.Residual(named):name_children { "" }
    assert.are.same({ "act.weight float32 2", "fc.bias float32 2", "fc.weight float32 2x2" }, listing(r:state_dict()))
    assert.are.equal("act", named:child_name(2))
    assert.are.equal("1", m:child_name(1))
  end)

  it("bad names are errors that name the call", function()
    H.assert_error(function() nn.Sequential():add(nn.ReLU(), "a.b") end, "Sequential:add", "without '.'")
    H.assert_error(function() nn.Sequential():add(nn.ReLU(), "a"):add(nn.ReLU(), "a") end, "already named \"a\"")
    H.assert_error(function() nn.Sequential():add(nn.ReLU(), 3) end, "Sequential:add", "name must be a string")
    H.assert_error(function() nn.Add(nn.ReLU(), nn.Tanh()):name_children { "x", "x" } end, "given twice")
    H.assert_error(function() nn.Add(nn.ReLU()):name_children { "x", "y" } end, "2 names for 1 children")
    H.assert_error(function() nn.Add(nn.ReLU()):name_children "x" end, "want a list of strings")
  end)

  it("num_batches_tracked counts training forwards, not evaluation ones; a checkpoint may lack it", function()
    local bn = nn.BatchNorm1d(3)
    local x = facet.randn({ 4, 3 }, { seed = 1 })
    bn:forward(x)
    bn:forward(x)
    bn:evaluate()
    bn:forward(x)
    local d = bn:state_dict()
    assert.are.equal(2, tonumber(d.num_batches_tracked:data_ptr()[0]))
    local other = nn.BatchNorm1d(3)
    local without = { weight = d.weight, bias = d.bias, running_mean = d.running_mean,
      running_var = facet.full({ 3 }, 2) }
    other:load_state(without)
    assert.are.same({ 2, 2, 2 }, H.values(other.running_var))
    assert.are.equal(0, tonumber(other:state_dict().num_batches_tracked:data_ptr()[0]))
    H.assert_error(function() other:load_state({ weight = d.weight, bias = d.bias, running_mean = d.running_mean }) end,
      "running_var is missing")
    -- past 2^32: the count is an int64
    bn:train()
    bn.num_batches_tracked:data_ptr()[0] = 4294967295LL
    bn:forward(x)
    assert.are.equal(4294967296, tonumber(bn.num_batches_tracked:data_ptr()[0]))
  end)

  -- the names an older facet gave iresnet{depth = 18}: one flat Sequential
  -- (conv, BN, PReLU, 8 units, BN, flatten, FC, BN1d), each unit a Residual
  -- of its body (BN, conv, BN, PReLU, conv, BN) and shortcut (conv, BN)
  local function positional_names(d)
    local old = {
      ["1.weight"] = "conv1.weight", ["3.slope"] = "prelu.weight", ["14.weight"] = "fc.weight",
      ["14.bias"] = "fc.bias",
    }
    local bn = { "weight", "bias", "running_mean", "running_var" }
    local function bn_of(from, to) for _, k in ipairs(bn) do old[from .. "." .. k] = to .. "." .. k end end
    bn_of("2", "bn1")
    bn_of("12", "bn2")
    bn_of("15", "features")
    for u = 0, 7 do
      local layer, i = math.floor(u / 2) + 1, u % 2
      local at, to = tostring(4 + u), ("layer%d.%d."):format(layer, i)
      bn_of(at .. ".1.1", to .. "bn1")
      old[at .. ".1.2.weight"] = to .. "conv1.weight"
      bn_of(at .. ".1.3", to .. "bn2")
      old[at .. ".1.4.slope"] = to .. "prelu.weight"
      old[at .. ".1.5.weight"] = to .. "conv2.weight"
      bn_of(at .. ".1.6", to .. "bn3")
      if i == 0 then
        old[at .. ".2.1.weight"] = to .. "downsample.0.weight"
        bn_of(at .. ".2.2", to .. "downsample.1")
      end
    end
    local out = {}
    for o, new in pairs(old) do
      assert.is_not_nil(d[new], new)
      out[o] = d[new]
    end
    return out
  end

  it("an older facet checkpoint with positional names loads, mapped, and says so", function()
    facet.manual_seed(3)
    local src = facet.models.iresnet { depth = 18, emb = 8, size = 16 }
    local x = facet.randn({ 2, 3, 16, 16 }, { seed = 2 })
    src:forward(x)                                 -- running statistics move off their start
    local d = src:state_dict()
    local path = tmp("old.safetensors")
    facet.save_safetensors(positional_names(d), path)
    local dst = facet.models.iresnet { depth = 18, emb = 8, size = 16 }
    dst:load_state(facet.load_safetensors(path))
    local after = dst:state_dict()
    for name, t in pairs(d) do
      if not name:match("num_batches_tracked$") then
        assert.are.same(H.values(t), H.values(after[name]), name)
      end
    end
    -- the note, on stderr (a child process, to see it)
    local out = Fresh.assert_ok(([[
      local m = facet.models.iresnet { depth = 18, emb = 8, size = 16 }
      m:load_state(facet.load_safetensors(%q))
      io.write("LOADED\n")]]):format(path))
    assert.truthy(out:find("names its tensors by position", 1, true), out)
    assert.truthy(out:find("LOADED", 1, true), out)
    -- a positional dict that does not fit is refused with the model's own names
    local bad = positional_names(d)
    bad["3.slope"] = nil
    H.assert_error(function() dst:load_state(bad) end, "load_state: ", "is missing from the checkpoint")
  end)
end)
