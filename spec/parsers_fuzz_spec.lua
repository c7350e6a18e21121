--- Mutation fuzzing of the parsers written in Lua (.npy, IDX, safetensors) and
-- a second pass over the C ones through the binding (RecordIO index, .bin,
-- images): valid files with bytes flipped, cut or inserted must give a value
-- or a Lua error, never a crash or a hang. `make fuzz` covers the C parsers
-- with libFuzzer; this keeps the Lua ones honest in every `make test`.
local H = require "support.device"
local facet = H.facet

local function read(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function mutants(seed_bytes, n, seed)
  local g, out = H.lcg(seed), {}
  local function rnd(k) return math.floor((g() + 1) / 2 * k) end
  for i = 1, n do
    local s = seed_bytes
    for _ = 1, 1 + rnd(4) do
      local kind, at = rnd(4), 1 + rnd(#s)
      if kind == 0 then      -- flip a byte
        s = s:sub(1, at - 1) .. string.char(rnd(256)) .. s:sub(at + 1)
      elseif kind == 1 then  -- cut the tail
        s = s:sub(1, at)
      elseif kind == 2 then  -- insert bytes
        s = s:sub(1, at) .. string.char(rnd(256), rnd(256)) .. s:sub(at + 1)
      else                   -- a boundary value in a length field
        s = s:sub(1, at - 1) .. string.char(255, 255, 255, 127) .. s:sub(at + 4)
      end
    end
    out[i] = s
  end
  return out
end

describe("parsers under mutated input", function()
  local dir
  setup(function() dir = H.temp_dir() end)
  teardown(function() H.remove_dir(dir) end)

  local function run(seeds, load, n)
    local ok_count, err_count = 0, 0
    for si, seed in ipairs(seeds) do
      for i, m in ipairs(mutants(seed, n, 97 * si)) do
        local path = ("%s/m%d_%d"):format(dir, si, i)
        local f = assert(io.open(path, "wb")); f:write(m); f:close()
        local ok, err = pcall(load, path, m)
        if ok then ok_count = ok_count + 1
        else
          err_count = err_count + 1
          assert.is_string(err, "errors are messages")
        end
        os.remove(path)
      end
    end
    assert.is_true(err_count > 0, "the mutants should mostly be rejected")
    return ok_count, err_count
  end

  it(".npy files", function()
    local seeds = {}
    for _, f in ipairs { "f32_2x3.npy", "i64_3d.npy", "u8_4x5.npy", "v2_f32.npy", "scalar_f32.npy" } do
      seeds[#seeds + 1] = read("spec/fixtures/" .. f)
    end
    run(seeds, function(p) return facet.load_npy(p) end, 120)
  end)

  it("IDX files", function()
    local be = function(v) return string.char(0, 0, math.floor(v / 256), v % 256) end
    local seeds = { "\0\0\8\2" .. be(3) .. be(4) .. ("\1"):rep(12), "\0\0\13\1" .. be(2) .. "\63\192\0\0\192\0\0\0" }
    run(seeds, function(p) return facet.data.load_idx(p) end, 200)
  end)

  it("safetensors files", function()
    local p = dir .. "/seed.safetensors"
    facet.save_safetensors({ a = facet.ones({ 2, 3 }), b = facet.tensor({ 1, 2 }, { dtype = "int64" }) }, p)
    run({ read(p) }, function(path) return facet.load_safetensors(path) end, 300)
  end)

  it(".bin pickles and images through the binding", function()
    run({ read("spec/fixtures/bin/p3_bytes.bin"), read("spec/fixtures/bin/numpy_p4.bin") },
      function(p) return facet.data.load_bin(p, { decode = false }) end, 150)
    run({ read("spec/fixtures/images/rgb_3x4.png"), read("spec/fixtures/images/smooth_16x24.jpg") },
      function(_, bytes) return facet.data.decode_image(bytes) end, 150)
  end)
end)
