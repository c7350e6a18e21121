--- Mutation fuzzing of the parsers written in Lua (.npy, IDX, safetensors) and
-- a second pass over the C ones through the binding (RecordIO index, .bin,
-- images): valid files with bytes flipped, cut or inserted must give a value
-- or a Lua error, never a crash or a hang. `make fuzz` covers the C parsers
-- with libFuzzer; this keeps the Lua ones honest in every `make test`.
--
-- So that a parser which rejects everything cannot pass, every unmutated seed
-- must load with its known contents (the fixture formulas, written out again),
-- and each parser must both accept and reject some of its mutants: the counts
-- are asserted, and named in the message when they are not as expected
-- (FACET_FUZZ_COUNTS=1 prints them). An accepted mutant must come back as a
-- well-formed value.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

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

-- a loaded tensor is well formed: its element count is the product of its shape
local function assert_tensor(t, what)
  assert.is_true(facet.is_tensor(t), what .. ": not a tensor")
  local n = 1
  for _, d in ipairs(t:shape()) do
    assert.is_true(d >= 0, what .. ": negative size")
    n = n * d
  end
  assert.are.equal(n, t:numel(), what .. ": numel is not the product of the shape")
end

local range = H.range

describe("parsers under mutated input", function()
  local tmp = F.scratch()

  --- Loads every seed unmutated through `load` and hands the result to
  -- check_seed(i, value); then n mutants of each, which must load (and pass
  -- well_formed) or raise a message. Both outcomes must occur; returns the
  -- counts of accepted and rejected mutants.
  local function run(name, seeds, load, n, check_seed, well_formed)
    for si, seed in ipairs(seeds) do
      local path = tmp(("seed%d"):format(si))
      F.write_file(path, seed)
      local ok, v = pcall(load, path, seed)
      assert.is_true(ok, ("%s: unmutated seed %d does not load: %s"):format(name, si, tostring(v)))
      check_seed(si, v)
    end
    local accepted, rejected = 0, 0
    for si, seed in ipairs(seeds) do
      for i, m in ipairs(mutants(seed, n, 97 * si)) do
        local path = tmp(("m%d_%d"):format(si, i))
        F.write_file(path, m)
        local ok, v = pcall(load, path, m)
        if ok then
          accepted = accepted + 1
          well_formed(v, ("%s mutant %d of seed %d"):format(name, i, si))
        else
          rejected = rejected + 1
          assert.is_string(v, "errors are messages")
        end
        os.remove(path)
      end
    end
    local counts = ("%s: %d of %d mutants accepted, %d rejected"):format(name, accepted, accepted + rejected, rejected)
    assert.are.equal(n * #seeds, accepted + rejected)
    assert.is_true(rejected > 0, counts .. " (a parser that accepts everything)")
    assert.is_true(accepted > 0, counts .. " (a parser that rejects everything)")
    if os.getenv("FACET_FUZZ_COUNTS") then io.stderr:write(counts, "\n") end
    return accepted, rejected
  end

  it(".npy files", function()
    local files = { "f32_2x3.npy", "i64_3d.npy", "u8_4x5.npy", "v2_f32.npy", "scalar_f32.npy" }
    local seeds = {}
    for i, f in ipairs(files) do seeds[i] = F.read_file("spec/fixtures/" .. f) end
    -- tools/make_npy_fixtures.py's formulas
    local expect = {
      { "float32", { 2, 3 }, { -0.5, -0.25, 0, 0.25, 0.5, 0.75 } },
      { "int64", { 2, 3, 4 }, range(24, function(i) return i * 1000003 - 7 end) },
      { "uint8", { 4, 5 }, range(20, function(i) return (i * 13) % 256 end) },
      { "float32", { 5 }, { 0, 1.5, 3, 4.5, 6 } },
      { "float32", {}, { 3.25 } },
    }
    run(".npy", seeds, function(p) return facet.load_npy(p) end, 120,
      function(i, t)
        assert.are.equal(expect[i][1], t:dtype(), files[i])
        assert.are.same(expect[i][2], t:shape(), files[i])
        assert.are.same(expect[i][3], H.values(t), files[i])
      end,
      assert_tensor)
  end)

  it("IDX files", function()
    local be = function(v) return string.char(0, 0, math.floor(v / 256), v % 256) end
    local seeds = { "\0\0\8\2" .. be(3) .. be(4) .. ("\1"):rep(12), "\0\0\13\1" .. be(2) .. "\63\192\0\0\192\0\0\0" }
    run("IDX", seeds, function(p) return facet.data.load_idx(p) end, 200,
      function(i, t)
        if i == 1 then              -- uint8, 3 x 4 ones
          assert.are.equal("uint8", t:dtype())
          assert.are.same({ 3, 4 }, t:shape())
          assert.are.same(range(12, function() return 1 end), H.values(t))
        else                        -- big-endian float32 0x3FC00000, 0xC0000000
          assert.are.equal("float32", t:dtype())
          assert.are.same({ 2 }, t:shape())
          assert.are.same({ 1.5, -2 }, H.values(t))
        end
      end,
      assert_tensor)
  end)

  it("safetensors files", function()
    local p = tmp("seed.safetensors")
    facet.save_safetensors({ a = facet.ones({ 2, 3 }), b = facet.tensor({ 1, 2 }, { dtype = "int64" }) }, p)
    run("safetensors", { F.read_file(p) }, function(path) return facet.load_safetensors(path) end, 300,
      function(_, t)
        local names = {}
        for k in pairs(t) do names[#names + 1] = k end
        table.sort(names)
        assert.are.same({ "a", "b" }, names)
        assert.are.equal("float32", t.a:dtype())
        assert.are.same({ 2, 3 }, t.a:shape())
        assert.are.same({ 1, 1, 1, 1, 1, 1 }, H.values(t.a))
        assert.are.equal("int64", t.b:dtype())
        assert.are.same({ 1, 2 }, H.values(t.b))
      end,
      function(t, what)
        assert.are.equal("table", type(t), what)
        for k, v in pairs(t) do
          assert.are.equal("string", type(k), what)
          assert_tensor(v, what .. " tensor " .. k)
        end
      end)
  end)

  it(".bin pickles through the binding", function()
    -- tools/make_bin_fixtures.py's fake images: FF D8, k, 37 k (mod 256)
    local function img(k) return string.char(0xFF, 0xD8, k % 256, (k * 37) % 256) end
    run(".bin", { F.read_file("spec/fixtures/bin/p3_bytes.bin"), F.read_file("spec/fixtures/bin/numpy_p4.bin") },
      function(p) return facet.data.load_bin(p, { decode = false }) end, 150,
      function(i, v)
        if i == 1 then
          assert.are.equal(3, v.pairs)
          assert.are.same({ false, true, false }, v.issame)
          assert.are.equal(6, #v.images)
          assert.are.equal(img(10), v.images[1])
          assert.are.equal(img(15), v.images[6])
        else
          assert.are.equal(3, v.pairs)
          assert.are.same({ true, true, false }, v.issame)
          assert.are.same({ img(40), img(41), img(42), img(43), img(44), img(45) }, v.images)
        end
      end,
      function(v, what)
        assert.is_true(v.pairs >= 0, what)
        assert.are.equal(v.pairs, #v.issame, what)
        assert.are.equal(2 * v.pairs, #v.images, what)
        for _, b in ipairs(v.images) do assert.are.equal("string", type(b), what) end
      end)
  end)

  it("images through the binding", function()
    run("image", { F.read_file("spec/fixtures/images/rgb_3x4.png"), F.read_file("spec/fixtures/images/smooth_16x24.jpg") },
      function(_, bytes) return facet.data.decode_image(bytes) end, 150,
      function(i, t)
        if i == 1 then
          assert.are.same({ 3, 3, 4 }, t:shape())
          H.assert_close(t:get(1, 2, 3), (12 - 127.5) / 128, 1e-6)    -- channel R, row 2, column 3
          H.assert_close(t:get(2, 3, 1), (120 - 127.5) / 128, 1e-6)
        else
          assert.are.same({ 3, 16, 24 }, t:shape())
        end
      end,
      function(t, what)
        assert_tensor(t, what)
        local s = t:shape()
        assert.are.equal(3, #s, what)
        assert.are.equal(3, s[1], what)
      end)
  end)
end)
