--- Image decoding: PNG pixels exactly, JPEG against PIL's decoding of the same
-- file (fixtures from tools/make_image_fixtures.py), grayscale and alpha,
-- the conversion to normalised 3 x H x W (identity, flip, resize), and errors.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

local DIR = "spec/fixtures/images/"
local function read(name) return F.read_file(DIR .. name) end

describe("image decoding", function()
  it("PNG: every pixel", function()
    local bytes = read("rgb_3x4.png")
    assert.are.same({ format = "png", width = 4, height = 3 }, facet.data.image_info(bytes))
    local rgb = facet.data.decode_image(bytes, { raw = true })
    assert.are.same({ 3, 4, 3 }, rgb:shape())
    for r = 0, 2 do for c = 0, 3 do
      assert.are.same({ 10 * r + c, 100 + 10 * r + c, 200 + r + c },
        { rgb:get(r + 1, c + 1, 1), rgb:get(r + 1, c + 1, 2), rgb:get(r + 1, c + 1, 3) })
    end end
    -- gray + alpha comes out as gray in three channels
    local g = facet.data.decode_image(read("gray_alpha_2x2.png"), { raw = true })
    assert.are.same({ 0, 0, 0, 64, 64, 64, 128, 128, 128, 255, 255, 255 }, H.values(g))
  end)

  it("JPEG: within 1 of PIL's decoding of the same file; grayscale to RGB", function()
    local bytes = read("smooth_16x24.jpg")
    assert.are.same({ format = "jpeg", width = 24, height = 16 }, facet.data.image_info(bytes))
    local rgb = H.values(facet.data.decode_image(bytes, { raw = true }))
    local ref = H.values(facet.load_npy(DIR .. "smooth_16x24_pil.npy"))
    assert.are.equal(#ref, #rgb)
    for i = 1, #ref do assert.is_true(math.abs(rgb[i] - ref[i]) <= 1, "pixel value " .. i) end
    local g = facet.data.decode_image(read("gray_16x24.jpg"), { raw = true })
    for _, i in ipairs { 1, 77, 200 } do
      assert.are.equal(g:get(1, i % 24 + 1, 1), g:get(1, i % 24 + 1, 2))
      assert.are.equal(g:get(1, i % 24 + 1, 1), g:get(1, i % 24 + 1, 3))
    end
  end)

  it("to a normalised 3 x H x W tensor: identity, flip and resize", function()
    local bytes = read("rgb_3x4.png")
    local t = facet.data.decode_image(bytes)
    assert.are.same({ 3, 3, 4 }, t:shape())
    H.assert_close(t:get(1, 2, 3), (12 - 127.5) / 128, 1e-6)      -- channel R, row 2, column 3
    H.assert_close(t:get(2, 3, 1), (120 - 127.5) / 128, 1e-6)
    local f = facet.data.decode_image(bytes, { flip = true, mean = 0, std = 1 })
    assert.are.equal(3, f:get(1, 1, 1))                            -- column 4 first
    assert.are.equal(0, f:get(1, 1, 4))
    local z = facet.data.decode_image(bytes, { mean = { 0, 100, 200 }, std = { 1, 2, 4 } })
    H.assert_close(z:get(3, 3, 4), (200 + 2 + 3 - 200) / 4, 1e-6)
    -- 2x upscaling of row 1 (R = 0, 1, 2, 3) with half-pixel centres
    local u = facet.data.decode_image(bytes, { size = { 6, 8 }, mean = 0, std = 1 })
    H.assert_close(H.values(u:select(1, 1):select(1, 1)), { 0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3 }, 1e-6)
  end)

  it("corrupt and foreign data are clear errors", function()
    H.assert_error(function() facet.data.decode_image(read("truncated.jpg")) end, "corrupt JPEG")
    H.assert_error(function() facet.data.decode_image(read("bad_crc.png")) end, "corrupt PNG")
    H.assert_error(function() facet.data.decode_image("GIF89a....") end, "neither JPEG nor PNG")
    H.assert_error(function() facet.data.decode_image(42) end, "encoded bytes")
    H.assert_error(function() facet.data.decode_image(read("rgb_3x4.png"), { std = 0 }) end, "std[0] must be > 0")
  end)
end)
