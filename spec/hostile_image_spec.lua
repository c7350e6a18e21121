--- Hostile images: JPEGs and PNGs cut short or with damaged pixel data are
-- errors (libjpeg's "premature end" warnings no longer pass as grey pixels; a
-- PNG must be whole up to its IEND chunk), and the loader counts them as
-- skipped. Each case runs in its own fresh process (support/fresh.lua).
local Fresh = require "support.fresh"
local F = require "support.files"

local DIR = "spec/fixtures/images/"
local E = Fresh.assert_error

-- code that decodes a fixture after `edit` (Lua code turning the string `b`
-- into the bytes to decode)
local function decode(name, edit)
  return ("local b = require('support.files').read_file(%q); b = %s; facet.data.decode_image(b)"):format(DIR .. name, edit)
end

local function sos(name) return F.read_file(DIR .. name):find("\255\218", 1, true) end

describe("hostile JPEG", function()
  for _, name in ipairs { "smooth_16x24.jpg", "gray_16x24.jpg", "progressive_16x24.jpg" } do
    it(name .. " cut in the middle of its (first) scan", function()
      local at = sos(name) + 20
      E(decode(name, ("b:sub(1, %d)"):format(at)), "facet_image_decode: corrupt JPEG: Premature end of JPEG file")
    end)
    it(name .. " without its end-of-image marker", function()
      E(decode(name, "b:sub(1, #b - 2)"), "corrupt JPEG: Premature end of JPEG file")
    end)
  end

  it("a baseline JPEG cut halfway through its scan", function()
    E(decode("smooth_16x24.jpg", "b:sub(1, math.floor((b:find('\\255\\218', 1, true) + #b) / 2))"), "Premature end")
  end)
  it("a progressive JPEG cut after its first scans", function()
    -- the third scan header: the first two scans are whole
    E(decode("progressive_16x24.jpg", "b:sub(1, (select(2, b:find('\\255\\218.-\\255\\218.-\\255\\218'))))"),
      "Premature end of JPEG file")
  end)
  it("a JPEG with a marker in the middle of its scan", function()
    E(decode("smooth_16x24.jpg", "b:sub(1, 690) .. '\\255\\217' .. b:sub(691)"),
      "corrupt JPEG: Corrupt JPEG data: premature end of data segment")
  end)
  it("a JPEG with zeros over part of its scan", function()
    E(decode("progressive_16x24.jpg", "b:sub(1, 440) .. string.rep('\\0', 30) .. b:sub(471)"), "corrupt JPEG")
  end)
  it("a JPEG cut inside its header", function()
    E(decode("smooth_16x24.jpg", "b:sub(1, 100)"), "facet_image_info: corrupt JPEG")
  end)
  it("a JPEG cut inside its header: image_info", function()
    E(("facet.data.image_info(require('support.files').read_file(%q):sub(1, 30))"):format(DIR .. "smooth_16x24.jpg"),
      "facet_image_info: corrupt JPEG")
  end)
  it("harmless warnings stay harmless: bytes after the end, junk between markers", function()
    Fresh.assert_ok(decode("smooth_16x24.jpg", "b .. 'trailing bytes'"))
    -- "Corrupt JPEG data: 3 extraneous bytes before marker": every pixel still decodes
    Fresh.assert_ok(decode("smooth_16x24.jpg", "(function() local at = b:find('\\255\\196', 1, true); " ..
      "return b:sub(1, at - 1) .. 'abc' .. b:sub(at) end)()"))
  end)
  it("the fixtures themselves decode", function()
    for _, name in ipairs { "smooth_16x24.jpg", "gray_16x24.jpg", "progressive_16x24.jpg" } do
      Fresh.assert_ok(decode(name, "b"))
    end
  end)
end)

describe("hostile PNG", function()
  -- rgb_3x4.png: signature (8), IHDR chunk at 8 (25 bytes), IDAT at 33 (32), IEND at 65 (12): 77 bytes
  it("cut in the middle of IDAT", function()
    E(decode("rgb_3x4.png", "b:sub(1, 50)"), "truncated PNG: chunk 'IDAT' at byte 33 needs 32 bytes, 17 remain")
  end)
  it("cut after IDAT, before IEND (libpng alone would decode it)", function()
    E(decode("rgb_3x4.png", "b:sub(1, 65)"), "truncated PNG: no IEND chunk in its 65 bytes")
  end)
  it("cut inside the IEND chunk", function()
    E(decode("rgb_3x4.png", "b:sub(1, 76)"), "truncated PNG: chunk 'IEND' at byte 65 needs 12 bytes, 11 remain")
  end)
  it("cut inside a chunk header", function()
    E(decode("rgb_3x4.png", "b:sub(1, 70)"), "the file ends 5 bytes into a chunk header at byte 65")
  end)
  it("cut inside IHDR", function()
    E(decode("rgb_3x4.png", "b:sub(1, 20)"), "truncated PNG: chunk 'IHDR' at byte 8 needs 25 bytes")
  end)
  it("only the signature", function()
    E(decode("rgb_3x4.png", "b:sub(1, 8)"), "truncated PNG: no IEND chunk in its 8 bytes")
  end)
  it("a chunk length of 2^32 - 1", function()
    E(decode("rgb_3x4.png", "b:sub(1, 33) .. '\\255\\255\\255\\255' .. b:sub(38)"),
      "corrupt PNG: chunk at byte 33 has length 4294967295")
  end)
  it("a chunk longer than the file, with a type that is not letters", function()
    E(decode("rgb_3x4.png", "b:sub(1, 33) .. '\\0\\0\\1\\0\\1\\2\\3\\4' .. b:sub(42)"),
      "truncated PNG: chunk of type 0x01020304 at byte 33 needs 268 bytes")
  end)
  it("a damaged IDAT (bad CRC) is still corrupt; bytes after IEND are allowed", function()
    E(decode("bad_crc.png", "b"), "corrupt PNG")
    Fresh.assert_ok(decode("rgb_3x4.png", "b .. 'after the end'"))
  end)
end)

describe("hostile images in the loader", function()
  -- images 2 (a JPEG cut mid-scan) and 3 (a PNG without IEND) are undecodable:
  -- position 2 falls back to 3 (bad) then 4, position 3 to 4: three skips
  local SOURCE = [[
    local F = require "support.files"
    local jpg, png = F.read_file("spec/fixtures/images/smooth_16x24.jpg"), F.read_file("spec/fixtures/images/rgb_3x4.png")
    local imgs, labels = {}, {}
    for i = 1, 8 do imgs[i], labels[i] = i % 2 == 0 and jpg or png, i - 1 end
    imgs[2] = jpg:sub(1, jpg:find("\255\218", 1, true) + 40)
    imgs[3] = png:sub(1, 65)
  ]]

  it("a truncated JPEG and a truncated PNG are counted as skipped (memory source)", function()
    local got = Fresh.values(SOURCE .. [[
      local L = facet.data.loader { source = { images = imgs, labels = labels }, size = { 8, 8 }, batch_size = 8,
        shuffle = false, flip = 0, threads = 2 }
      local _, y = L:batch(0, 1)
      show(y)
      local s = L:stats()
      show(facet.tensor { s.skipped, s.delivered })
      L:close()
    ]])
    assert.are.same({ { 0, 3, 3, 3, 4, 5, 6, 7 }, { 3, 8 } }, got)
  end)

  it("the same from a RecordIO file", function()
    local got = Fresh.values(SOURCE .. [[
      local dir = F.temp_dir()
      local w = facet.data.recordio_writer(dir .. "/train")
      for i = 1, 8 do w:write(i - 1, labels[i], imgs[i]) end
      w:close()
      local L = facet.data.loader { source = facet.data.recordio(dir .. "/train"), size = { 8, 8 }, batch_size = 8,
        shuffle = false, flip = 0, threads = 3 }
      local _, y = L:batch(0, 1)
      show(y)
      show(facet.tensor { L:stats().skipped })
      L:close()
      F.remove_dir(dir)
    ]])
    assert.are.same({ { 0, 3, 3, 3, 4, 5, 6, 7 }, { 3 } }, got)
  end)
end)
