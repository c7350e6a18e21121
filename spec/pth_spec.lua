--- PyTorch checkpoints in and out (facet.pth, core/src/pth.c): .pth files
-- written by PyTorch (tools/make_pth_fixtures.py, run here with Debian's torch
-- into a temporary directory) load into facet's iresnet18,
-- mobilefacenet{arch = "mbf"} and a small vit and give PyTorch's embeddings; facet's .pth and
-- safetensors load strictly into the PyTorch modules and give facet's; the
-- storage types, strides and offsets read right; hostile files are errors,
-- never crashes (each in a child process); facet.load / facet.save and
-- `bin/facet convert` go between the formats.
local H = require "support.device"
local F = require "support.files"
local Fresh = require "support.fresh"
local facet = H.facet

-- Python runs uninstrumented under `make sanitize` (no sanitizer runtimes preloaded)
local PY = F.PY
local HAVE_TORCH = select(2, F.sh(PY .. " -c 'import torch'")) == 0
local ROOT = "."

-- max |a - b| / max |b|
local function rel_diff(a, b)
  return (a - b):abs():max() / b:abs():max()
end

local function flat(t)
  local c, r = t:contiguous(), {}
  for i = 0, c:numel() - 1 do r[#r + 1] = tonumber(c:data_ptr()[i]) end
  return r
end

describe("PyTorch .pth", function()
  local tmp = F.scratch()
  local made = false
  -- the PyTorch fixtures, made once; false (with the reason printed) without torch
  local function fixtures()
    if not HAVE_TORCH then
      print("pth_spec: /usr/bin/python3 has no torch; the PyTorch fixtures are not made, their cases are skipped")
      return false
    end
    if not made then
      local out, rc = F.sh(("%s %s/tools/make_pth_fixtures.py make %s"):format(PY, ROOT, tmp("fx")))
      assert.are.equal(0, rc, out)
      made = true
    end
    return true
  end
  local function fx(name) return tmp("fx/" .. name) end

  -- PyTorch's embeddings of input.npy by model `name` with the weights in `path`
  local function torch_embed(name, path)
    local out = tmp(name .. "_torch_out.npy")
    local msg, rc = F.sh(("%s %s/tools/make_pth_fixtures.py run %s %s %s %s"):format(PY, ROOT, name, path,
      fx("input.npy"), out))
    assert.are.equal(0, rc, msg)
    return facet.load_npy(out)
  end

  local BUILD = { iresnet18 = function() return facet.models.iresnet { depth = 18 } end,
    mbf = function() return facet.models.mobilefacenet { arch = "mbf" } end,
    vit = function() return facet.models.vit { dim = 64, depth = 2 } end }

  for _, name in ipairs { "mbf", "iresnet18" } do
    it(name .. ": PyTorch's .pth loads and gives its embeddings; facet's .pth and safetensors go back", function()
      if not fixtures() then return pending("needs torch") end
      local m = BUILD[name]()
      m:load_state(fx(name .. ".pth"))
      m:evaluate()
      local x = facet.load_npy(fx("input.npy"))
      local y = m:forward(x)
      local ref = facet.load_npy(fx(name .. "_out.npy"))
      assert.are.same({ 2, 512 }, y:shape())
      assert.is_true(rel_diff(y, ref) < 1e-4, ("%s: relative difference %g"):format(name, rel_diff(y, ref)))
      -- the counters came in too (the fixtures set 7)
      assert.are.equal(7, tonumber(m:state_dict()["features" .. (name == "mbf" and ".layers.3" or "") ..
        ".num_batches_tracked"]:data_ptr()[0]))
      for _, ext in ipairs { "pth", "safetensors" } do
        local path = tmp(name .. "_facet." .. ext)
        facet.save(m, path)
        local back = torch_embed(name, path)
        assert.is_true(rel_diff(back, y) < 1e-4, ("%s %s: relative difference %g"):format(name, ext, rel_diff(back, y)))
      end
    end)
  end

  -- arcface_torch's VisionTransformer (the fixture's port: dim 64, depth 2, 8 heads, 144 tokens)
  it("vit: PyTorch's .pth loads by arcface_torch's names and gives its embeddings; facet's .pth goes back", function()
    if not fixtures() then return pending("needs torch") end
    local m = BUILD.vit()
    m:load_state(fx("vit.pth"))
    m:evaluate()
    local x = facet.load_npy(fx("input.npy"))
    local y = m:forward(x)
    local ref = facet.load_npy(fx("vit_out.npy"))
    assert.are.same({ 2, 512 }, y:shape())
    assert.is_true(rel_diff(y, ref) < 1e-4, ("vit: relative difference %g"):format(rel_diff(y, ref)))
    assert.are.equal(7, tonumber(m:state_dict()["feature.3.num_batches_tracked"]:data_ptr()[0]))
    local path = tmp("vit_facet.pth")
    facet.save(m, path)
    local back = torch_embed("vit", path)
    assert.is_true(rel_diff(back, y) < 1e-4, ("vit pth: relative difference %g"):format(rel_diff(back, y)))
  end)

  it("a wrapped state dict ({state_dict = ...} with DDP's module. prefix) loads", function()
    if not fixtures() then return pending("needs torch") end
    local a, b = BUILD.mbf(), BUILD.mbf()
    a:load_state(fx("mbf.pth"))
    b:load_state(fx("wrapped.pth"))
    local da, db = a:state_dict(), b:state_dict()
    for k, t in pairs(da) do assert.are.same(flat(t), flat(db[k]), k) end
  end)

  for _, file in ipairs { "dtypes.pth", "legacy.pth" } do
    it(("storage types, strides, offsets and shared storages read right (%s)"):format(file), function()
      if not fixtures() then return pending("needs torch") end
      local w = facet.load(fx(file))
      local function is(name, dtype, shape, values)
        assert.are.equal(dtype, w[name]:dtype(), name)
        assert.are.same(shape, w[name]:shape(), name)
        assert.are.same(values, flat(w[name]), name)
      end
      is("d64", "float32", { 2, 3 }, { 0, 0.5, 1, 1.5, 2, 2.5 })
      is("h16", "float32", { 4 }, { 1, -2.5, 65504, 2 ^ -24 })      -- 2^-24: the smallest subnormal half
      is("bf16", "float32", { 3 }, { 1, -3, 0.15625 })
      is("i32", "int32", { 3 }, { 1, -2, 3 })
      is("flags", "uint8", { 3 }, { 1, 0, 1 })
      is("count", "int64", {}, { 7 })
      is("t", "float32", { 3, 2 }, { 0, 3, 1, 4, 2, 5 })          -- a transposed view
      is("slice", "float32", { 3 }, { 4, 5, 6 })                   -- storage offset 4
      is("a", "float32", { 4 }, { 0, 1, 2, 3 })
      is("a2", "float32", { 2, 2 }, { 0, 1, 2, 3 })                -- the same storage
    end)
  end

  it("hostile files are errors naming what is wrong, never crashes", function()
    if not fixtures() then return pending("needs torch") end
    local cases = {
      { "hostile_system.pth", "pickle global 'posix.system' is not allowed", "never runs code" },
      { "hostile_short.pth", "storage 0: 6 elements of FloatStorage", "do not fit its 8 bytes" },
      { "hostile_huge.pth", "(1099511627776, 1099511627776)", "reaches past its storage of 6 elements" },
      { "hostile_truncated.pth", "not a PyTorch .pth zip", "truncated" },
    }
    for _, c in ipairs(cases) do
      Fresh.assert_error(("facet.load(%q)"):format(fx(c[1])), "facet.load_pth", c[2], c[3])
    end
  end)

  it("facet's .pth: a valid zip (CRCs checked by Python's zipfile) whose state dict reads back exactly", function()
    facet.manual_seed(11)
    local m = facet.nn.Sequential():add(facet.nn.Linear(3, 4), "fc"):add(facet.nn.BatchNorm1d(4), "bn")
    m:forward(facet.randn({ 5, 3 }, { seed = 4 }))
    local path = tmp("small_facet.pth")
    facet.save(m, path)
    local out, rc = F.sh(("env -u LD_PRELOAD python3 -m zipfile -t %s"):format(path))
    assert.are.equal(0, rc, out)
    local listing = F.sh(("env -u LD_PRELOAD python3 -m zipfile -l %s"):format(path))
    assert.truthy(listing:find("small_facet/data.pkl", 1, true), listing)
    local back = facet.load(path)
    local d = m:state_dict()
    for k, t in pairs(d) do assert.are.same(flat(t), flat(back[k]), k) end
    for k in pairs(back) do assert.is_not_nil(d[k], k) end
    assert.are.equal(1, flat(back["bn.num_batches_tracked"])[1])
    assert.are.equal("int64", back["bn.num_batches_tracked"]:dtype())
  end)

  it("mutated .pth files load or give an error, never a crash", function()
    local seed = tmp("seed.pth")
    facet.save({ w = facet.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }), n = facet.tensor({ 3 }, { dtype = "int64" }) }, seed)
    local out = Fresh.assert_ok(([[
      local f = assert(io.open(%q, "rb")); local s = f:read("*a"); f:close()
      local g, ok_n, bad_n = 12345, 0, 0
      local function rnd(k) g = (g * 1103515245 + 12345) %% 2147483648; return g %% k end
      for i = 1, 300 do
        local m = s
        for _ = 1, 1 + rnd(3) do
          local at, kind = 1 + rnd(#m), rnd(3)
          if kind == 0 then m = m:sub(1, at - 1) .. string.char(rnd(256)) .. m:sub(at + 1)
          elseif kind == 1 then m = m:sub(1, at - 1) .. string.char(255, 255, 255, 127) .. m:sub(at + 4)
          else m = m:sub(1, at) end
        end
        local p = %q
        local w = assert(io.open(p, "wb")); w:write(m); w:close()
        local ok, v = pcall(facet.load_pth, p)
        if ok then
          for _, t in pairs(v) do assert(t:numel() >= 0) end
          ok_n = ok_n + 1
        else
          assert(type(v) == "string" and v:find("facet.load_pth", 1, true), tostring(v))
          bad_n = bad_n + 1
        end
      end
      io.write("COUNTS ", ok_n, " ", bad_n, "\n")]]):format(seed, tmp("mutant.pth")))
    local ok_n, bad_n = out:match("COUNTS (%d+) (%d+)")
    assert.is_true(tonumber(ok_n) > 0 and tonumber(bad_n) > 0, out)
  end)

  it("facet.load and facet.save by format; bin/facet convert between them", function()
    local m = facet.nn.Sequential():add(facet.nn.Linear(2, 3), "fc")
    local a = tmp("m.safetensors")
    facet.save(m, a)
    local out, rc = F.sh(("FACET_BUILD=%s %s/bin/facet convert %s %s"):format(os.getenv("FACET_BUILD") or "build",
      ROOT, a, tmp("m.pth")))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("(safetensors) -> " .. tmp("m.pth") .. " (pth): 2 tensors", 1, true), out)
    out, rc = F.sh(("FACET_BUILD=%s %s/bin/facet convert %s %s/"):format(os.getenv("FACET_BUILD") or "build", ROOT,
      tmp("m.pth"), tmp("ck")))
    assert.are.equal(0, rc, out)
    local n = facet.nn.Sequential():add(facet.nn.Linear(2, 3), "fc")
    n:load_state(tmp("ck"))                                  -- a checkpoint directory
    assert.are.same(flat(m.modules[1].weight), flat(n.modules[1].weight))
    assert.are.same(flat(m.modules[1].bias), flat(facet.load(tmp("m.pth"))["fc.bias"]))
    H.assert_error(function() facet.save(m, tmp("m.onnx")) end, "facet.save", "the extension names no format")
    H.assert_error(function() facet.save(m, tmp("ck")) end, "already holds a checkpoint")
    H.assert_error(function() facet.load(tmp("nothing.pth")) end, "facet.load", "cannot open")
    H.assert_error(function() facet.load(a .. "x") end, "cannot open")
    out, rc = F.sh(("FACET_BUILD=%s %s/bin/facet convert %s %s"):format(os.getenv("FACET_BUILD") or "build", ROOT, a,
      tmp("m.txt")))
    assert.are.equal(1, rc, out)
    assert.truthy(out:find("the extension names no format", 1, true), out)
    -- the command's name once, not "facet convert: convert: ..."
    out, rc = F.sh(("FACET_BUILD=%s %s/bin/facet convert %s %s"):format(os.getenv("FACET_BUILD") or "build", ROOT,
      tmp("nothing.pth"), tmp("m2.safetensors")))
    assert.are.equal(1, rc, out)
    assert.truthy(out:find("facet convert: cannot open " .. tmp("nothing.pth"), 1, true), out)
  end)
end)
