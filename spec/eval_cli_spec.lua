--- `facet eval`: a checkpoint on a .bin written by Python's pickle, one table row
-- per set, and its error paths.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo rc=$?")
  local out = p:read("*a")
  p:close()
  return out
end

describe("facet eval", function()
  local dir
  setup(function() dir = F.temp_dir() end)
  teardown(function() F.remove_dir(dir) end)

  it("prints accuracy for each .bin of a checkpoint", function()
    local ok = os.execute(F.PY .. " -c 'import pickle' >/dev/null 2>&1")
    if not (ok == 0 or ok == true) then pending("no /usr/bin/python3") return end
    local py = [[
import pickle, sys
png = open("spec/fixtures/images/rgb_3x4.png", "rb").read()
jpg = open("spec/fixtures/images/smooth_16x24.jpg", "rb").read()
bins = [png, png, png, jpg, jpg, jpg, jpg, png] * 3
issame = [True, False, True, False] * 3
pickle.dump((bins, issame), open(sys.argv[1], "wb"), protocol=3)
]]
    F.write_file(dir .. "/make.py", py)
    assert.truthy(sh(("%s %s/make.py %s/set.bin"):format(F.PY, dir, dir)):find("rc=0", 1, true))
    facet.manual_seed(3)
    facet.save_safetensors(facet.models.convnet { in_channels = 3, size = 16, emb = 8 }, dir .. "/m.safetensors")
    local out = sh(("luajit bin/facet eval %s/m.safetensors --model convnet --emb 8 --size 16 --bin %s/set.bin --bin %s/set.bin")
      :format(dir, dir, dir))
    assert.truthy(out:find("rc=0", 1, true), out)
    local n = 0
    for pairs_, acc in out:gmatch("set%.bin%s+(%d+)%s+([%d%.]+)") do
      n = n + 1
      assert.are.equal("12", pairs_)
      assert.is_true(tonumber(acc) >= 0 and tonumber(acc) <= 1)
    end
    assert.are.equal(2, n)
  end)

  it("says when a set's metrics are undefined (only same-identity pairs, as the shared small_lfw.bin)", function()
    local ok = os.execute(F.PY .. " -c 'import pickle' >/dev/null 2>&1")
    if not (ok == 0 or ok == true) then pending("no /usr/bin/python3") return end
    local py = [[
import pickle, sys
png = open("spec/fixtures/images/rgb_3x4.png", "rb").read()
jpg = open("spec/fixtures/images/smooth_16x24.jpg", "rb").read()
pickle.dump(([png, jpg] * 6, [True] * 6), open(sys.argv[1], "wb"), protocol=3)
]]
    F.write_file(dir .. "/same.py", py)
    assert.truthy(sh(("%s %s/same.py %s/same.bin"):format(F.PY, dir, dir)):find("rc=0", 1, true))
    facet.manual_seed(3)
    facet.save_safetensors(facet.models.convnet { in_channels = 3, size = 16, emb = 8 }, dir .. "/s.safetensors")
    local out = sh(("luajit bin/facet eval %s/s.safetensors --model convnet --emb 8 --size 16 --bin %s/same.bin")
      :format(dir, dir))
    assert.truthy(out:find("rc=0", 1, true), out)
    assert.truthy(out:find("same%.bin%s+6%s+undefined%s+%-%s+%-%s+%-"), out)
    assert.truthy(out:find("warning: " .. dir .. "/same.bin: no different-identity pairs among the 6", 1, true), out)
    assert.truthy(out:find("evaluating " .. dir .. "/same.bin: 6 pairs", 1, true), out)
  end)

  it("fails clearly", function()
    -- a 1-channel model (recipes/quickstart.lua's) on a face set: said before any table
    facet.save(facet.models.convnet { emb = 8 }, dir .. "/gray/")
    local gray = sh(("luajit bin/facet eval %s/gray --bin ../shared/data/small_lfw.bin"):format(dir))
    assert.truthy(gray:find("model: convnet{ emb = 8, in_channels = 1, size = 28 }", 1, true), gray)
    assert.truthy(gray:find("the model takes 1-channel images; verification .bin sets hold colour", 1, true), gray)
    assert.truthy(gray:find("rc=1", 1, true), gray)
    local out = sh("luajit bin/facet eval /nonexistent --bin x.bin")
    assert.truthy(out:find("facet eval:", 1, true) and out:find("rc=1", 1, true), out)
    out = sh("luajit bin/facet eval /nonexistent")
    assert.truthy(out:find("at least one --bin", 1, true), out)
  end)
end)
