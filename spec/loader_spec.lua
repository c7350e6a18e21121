--- The threaded loader: decoded, flipped and normalised batches; the same
-- batches for any thread count and after a restart mid-epoch; undecodable
-- images counted and replaced deterministically; RecordIO as a source; errors.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

local function read(name) return F.read_file("spec/fixtures/images/" .. name) end

local png, jpg = read("rgb_3x4.png"), read("smooth_16x24.jpg")

local function source(n, bad)
  local imgs, labels = {}, {}
  for i = 1, n do
    imgs[i] = i % 3 == 0 and jpg or png
    labels[i] = i - 1
  end
  for _, b in ipairs(bad or {}) do imgs[b] = "not an image" end
  return { images = imgs, labels = labels }
end

local function epoch_values(loader, epoch)
  local xs, ys = {}, {}
  for i = 1, loader:num_batches() do
    local x, y = loader:batch(epoch, i)
    xs[i], ys[i] = H.values(x), H.values(y)
  end
  return xs, ys
end

describe("facet.data.loader", function()
  it("prepares images like decode_image and keeps every label once an epoch", function()
    local L = facet.data.loader { source = source(20), size = { 3, 4 }, batch_size = 5, flip = 0, shuffle = false, threads = 2 }
    assert.are.equal(4, L:num_batches())
    local x, y = L:batch(0, 1)
    assert.are.same({ 5, 3, 3, 4 }, x:shape())
    assert.are.same({ 0, 1, 2, 3, 4 }, H.values(y))
    local ref = facet.data.decode_image(png, { size = { 3, 4 } })
    assert.are.same(H.values(ref), H.values(x:select(1, 1)))
    local seen = {}
    local L2 = facet.data.loader { source = source(20), size = { 4, 4 }, batch_size = 5, seed = 4 }
    for i = 1, 4 do
      local _, yy = L2:batch(0, i)
      for _, v in ipairs(H.values(yy)) do seen[v] = (seen[v] or 0) + 1 end
    end
    for v = 0, 19 do assert.are.equal(1, seen[v]) end
  end)

  it("the same batches with 1, 2 or 3 threads, and after a restart mid-epoch", function()
    local runs = {}
    for t = 1, 3 do
      local L = facet.data.loader { source = source(37, { 5 }), size = { 6, 6 }, batch_size = 4, threads = t, queue = 2, seed = 9 }
      runs[t] = { epoch_values(L, 0) }
      runs[t][3] = { epoch_values(L, 1) }
    end
    assert.are.same(runs[1][1], runs[2][1]); assert.are.same(runs[1][1], runs[3][1])
    assert.are.same(runs[1][2], runs[3][2])
    assert.are.same(runs[1][3], runs[2][3])
    assert.are_not.same(runs[1][1], runs[1][3][1])     -- epochs differ
    local L = facet.data.loader { source = source(37, { 5 }), size = { 6, 6 }, batch_size = 4, threads = 2, seed = 9 }
    local x, y = L:batch(0, 6)                           -- jump in: a resumed run
    assert.are.same(runs[1][1][6], H.values(x))
    assert.are.same(runs[1][2][6], H.values(y))
  end)

  it("flips about half the images, deterministically", function()
    local imgs, labels = {}, {}
    for i = 1, 400 do imgs[i], labels[i] = png, i end
    local L = facet.data.loader { source = { images = imgs, labels = labels }, size = { 3, 4 }, batch_size = 400,
      shuffle = false, drop_last = false, mean = 0, std = 1 }
    local x = L:batch(0, 1)
    local flipped = 0
    for i = 1, 400 do
      if x:get(i, 1, 1, 1) == 3 then flipped = flipped + 1 else assert.are.equal(0, x:get(i, 1, 1, 1)) end
    end
    H.assert_close(flipped / 400, 0.5, 0, 0.1)
  end)

  it("counts undecodable images and replaces them with the next in order", function()
    local L = facet.data.loader { source = source(12, { 2, 3 }), size = { 3, 4 }, batch_size = 12, shuffle = false, flip = 0 }
    local _, y = L:batch(0, 1)
    -- positions 2 and 3 fall back to the next decodable image, 4
    assert.are.same({ 0, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11 }, H.values(y))
    local s = L:stats()
    assert.are.equal(3, s.skipped)                       -- 2 -> 3 (bad) -> 4, and 3 -> 4
    assert.are.equal(12, s.delivered)
    assert.is_true(s.wait_seconds >= 0)
  end)

  it("reads a RecordIO file", function()
    local dir = F.temp_dir()
    local w = facet.data.recordio_writer(dir .. "/train")
    for i = 1, 10 do w:write(i - 1, i % 4, i % 2 == 0 and jpg or png) end
    w:close()
    local rec = facet.data.recordio(dir .. "/train")
    local L = facet.data.loader { source = rec, size = { 8, 8 }, batch_size = 5, shuffle = false, flip = 0 }
    local x, y = L:batch(0, 2)
    assert.are.same({ 5, 3, 8, 8 }, x:shape())
    assert.are.same({ 2, 3, 0, 1, 2 }, H.values(y))
    H.assert_close(H.values(x:select(1, 2)), H.values(facet.data.decode_image(png, { size = { 8, 8 } })), 1e-6)   -- image 7
    H.assert_close(H.values(x:select(1, 3)), H.values(facet.data.decode_image(jpg, { size = { 8, 8 } })), 1e-6)   -- image 8
    L:close()
    F.remove_dir(dir)
  end)

  it("augments: grayscale, brightness, padded random crop; deterministic for any thread count", function()
    local base = { source = source(24), size = { 3, 4 }, batch_size = 24, shuffle = false, flip = 0, mean = 0, std = 1,
      drop_last = false }
    local plain = H.values(facet.data.loader(base):batch(0, 1))
    local function with(extra)
      local o = {}
      for k, v in pairs(base) do o[k] = v end
      for k, v in pairs(extra) do o[k] = v end
      return facet.data.loader(o)
    end
    -- grayscale: the three channels equal, 0.299 R + 0.587 G + 0.114 B
    local g = with { grayscale = 1 }:batch(0, 1)
    for i = 1, 24 do
      for _, yx in ipairs { { 1, 1 }, { 2, 3 } } do
        local r, gg, b = g:get(i, 1, yx[1], yx[2]), g:get(i, 2, yx[1], yx[2]), g:get(i, 3, yx[1], yx[2])
        assert.are.equal(r, gg); assert.are.equal(r, b)
      end
    end
    local r0, g0, b0 = plain[1], plain[13], plain[25]         -- image 1, pixel (1, 1)
    H.assert_close(g:get(1, 1, 1, 1), 0.299 * r0 + 0.587 * g0 + 0.114 * b0, 1e-4)
    -- brightness: one factor in [0.5, 1.5] per image
    local bx = H.values(with { brightness = 0.5 }:batch(0, 1))
    local f = bx[12 * 3 + 2] / plain[12 * 3 + 2]             -- a pixel of image 2 well inside (0, 255)
    assert.is_true(f >= 0.5 and f <= 1.5)
    -- crop with padding 1: each image is the plain one shifted by dy, dx in [-1, 1], black outside
    local cx = with { crop_padding = 1 }:batch(0, 1)
    local shifted = 0
    for i = 1, 24 do
      local found = false
      for dy = -1, 1 do for dx = -1, 1 do
        local ok = true
        for c = 1, 3 do for y = 1, 3 do for x = 1, 4 do
          local sy, sx = y + dy, x + dx
          local want = (sy < 1 or sy > 3 or sx < 1 or sx > 4) and 0 or plain[(i - 1) * 36 + (c - 1) * 12 + (sy - 1) * 4 + sx]
          if math.abs(cx:get(i, c, y, x) - want) > 1e-4 then ok = false end
        end end end
        if ok then found = true; if dy ~= 0 or dx ~= 0 then shifted = shifted + 1 end end
      end end
      assert.is_true(found, "image " .. i)
    end
    assert.is_true(shifted > 12)                              -- 8 of 9 offsets move the image
    -- every augmentation on: the same batches with 1 and 2 threads
    local all = { grayscale = 0.3, brightness = 0.4, contrast = 0.4, saturation = 0.4, crop_padding = 1, flip = 0.5,
      shuffle = true, batch_size = 5, drop_last = true }
    all.threads = 1
    local one = with(all)
    all.threads = 2
    local two = with(all)
    for i = 1, one:num_batches() do assert.are.same(H.values(one:batch(1, i)), H.values(two:batch(1, i))) end
  end)

  it("takes a uint64 seed whole: 2^53 and 2^53 + 1 give different shuffles and augmentations", function()
    local ffi = require "ffi"
    local big = ffi.new("uint64_t", 2 ^ 53)
    assert.are.equal(2 ^ 53, 2 ^ 53 + 1)                   -- as Lua numbers (doubles) the two are one seed
    local function run(seed, extra)
      local o = { source = source(48), size = { 3, 4 }, batch_size = 48, threads = 2, mean = 0, std = 1, seed = seed }
      for k, v in pairs(extra) do o[k] = v end
      local L = facet.data.loader(o)
      local x, y = L:batch(0, 1)
      x, y = H.values(x), H.values(y)
      L:close()
      return x, y
    end
    local function sorted(t)
      local c = { unpack(t) }
      table.sort(c)
      return c
    end
    local all = {}
    for i = 1, 48 do all[i] = i - 1 end
    -- the shuffle
    local order = { flip = 0 }
    local _, y_num = run(2 ^ 53, order)
    local _, y_a = run(big, order)
    local _, y_b = run(big + 1, order)
    local _, y_lit = run(9007199254740993ULL, order)
    assert.are.same(y_num, y_a)                             -- the number 2^53 and the uint64 2^53 are the same seed
    assert.are.same(y_b, y_lit)
    assert.are_not.same(y_a, y_b)
    assert.are.same(all, sorted(y_a))
    assert.are.same(all, sorted(y_b))
    -- the augmentations (flip, brightness) of the images in their stored order
    local aug = { shuffle = false, flip = 0.5, brightness = 0.5 }
    local x_a, ya = run(big, aug)
    local x_b, yb = run(big + 1, aug)
    assert.are.same(all, ya)
    assert.are.same(all, yb)
    assert.are_not.same(x_a, x_b)
    assert.are.same(x_b, (run(big + 1, aug)))               -- and each seed is reproducible
    -- the high word counts too: 1 and 2^32 + 1 are different seeds
    local _, y_1 = run(1, order)
    local _, y_hi = run(ffi.new("uint64_t", 2 ^ 32) + 1, order)
    assert.are_not.same(y_1, y_hi)
  end)

  it("checks its settings", function()
    H.assert_error(function() facet.data.loader { source = source(4), batch_size = 0 } end, "batch_size must be an integer", "got 0")
    H.assert_error(function() facet.data.loader { source = source(4), threads = 0 } end, "threads must be an integer", "got 0")
    H.assert_error(function() facet.data.loader { source = source(4), flip = 2 } end, "flip must be a number in [0, 1]", "got 2")
    H.assert_error(function() facet.data.loader { source = source(4), batch_size = 8 } end, "make no batch")
    H.assert_error(function() facet.data.loader { source = { images = {}, labels = {} } } end, "lists of one length")
    H.assert_error(function() facet.data.loader { source = source(4), std = 0 } end, "std must be a number > 0")
    H.assert_error(function() facet.data.loader { source = source(4), grayscale = 2 } end, "grayscale must be a number in [0, 1]")
    H.assert_error(function() facet.data.loader { source = source(4), contrast = 3 } end, "in [0, 1]")
    H.assert_error(function() facet.data.loader { source = source(4), crop_padding = -1 } end, "crop_padding must be an integer")
    local L = facet.data.loader { source = source(4), batch_size = 2, size = { 2, 2 } }
    H.assert_error(function() L:batch(0, 3) end, "batch 3 outside 1..2")
  end)
end)
