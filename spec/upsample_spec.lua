--- 2-D upsampling through the C API: nearest and bilinear (align_corners 0
-- and 1) against naive Lua formulas that round like PyTorch's float code,
-- values PyTorch's F.interpolate gives for small cases, backward as the
-- adjoint of forward and by hand, and the argument checks.
local ffi = require "ffi"
local H = require "support.device"
local facet = H.facet
local core = require "facet.core"
local C, check = core.C, core.check

local NEAREST, BILINEAR = C.FACET_UPSAMPLE_MODE_NEAREST, C.FACET_UPSAMPLE_MODE_BILINEAR

local function T(flat, shape) return H.on(facet.tensor(flat):reshape(shape)) end
local function zeros(shape) return facet.zeros(shape, { device = H.device }) end
local function h(t) return t and t.h or nil end

-- float32 rounding: PyTorch computes the coordinates in float
local function f32(v) return tonumber(ffi.new("float", v)) end

local function rand(n, seed)
  local g, r = H.lcg(seed), {}
  for i = 1, n do r[i] = f32(g()) end
  return r
end

local function nearest_src(d, inn, out)
  if out == inn then return d end
  if out == 2 * inn then return math.floor(d / 2) end
  local s = math.floor(f32(d * f32(inn / out)))
  return math.min(s, inn - 1)
end

-- i0, i1 and the weight of i1 along one axis
local function linear_src(d, inn, out, align)
  if out == inn then return d, d, 0 end
  local src
  if align == 1 then
    local scale = out > 1 and f32((inn - 1) / (out - 1)) or 0
    src = f32(scale * d)
  else
    local scale = f32(inn / out)
    src = math.max(f32(f32(scale * (d + 0.5)) - 0.5), 0)
  end
  local i0 = math.min(math.floor(src), inn - 1)
  local l = math.min(math.max(src - i0, 0), 1)
  return i0, i0 < inn - 1 and i0 + 1 or i0, l
end

-- naive resampling of flat x (planes x hh x ww) to ho x wo
local function ref_up(x, planes, hh, ww, ho, wo, mode, align)
  local out = {}
  for p = 0, planes - 1 do
    local base = p * hh * ww
    local function at(i, j) return x[base + i * ww + j + 1] end
    for oh = 0, ho - 1 do
      for ow = 0, wo - 1 do
        local v
        if mode == NEAREST then
          v = at(nearest_src(oh, hh, ho), nearest_src(ow, ww, wo))
        else
          local h0, h1, lh = linear_src(oh, hh, ho, align)
          local w0, w1, lw = linear_src(ow, ww, wo, align)
          v = (1 - lh) * ((1 - lw) * at(h0, w0) + lw * at(h0, w1)) + lh * ((1 - lw) * at(h1, w0) + lw * at(h1, w1))
        end
        out[#out + 1] = v
      end
    end
  end
  return out
end

local function forward(out, x, mode, align)
  check(C.facet_upsample2d_forward(h(out), h(x), mode, align or 0), 2)
end

local function backward(gx, go, mode, align)
  check(C.facet_upsample2d_backward(h(gx), h(go), mode, align or 0), 2)
end

local modes = {
  { NEAREST, 0, "nearest" },
  { BILINEAR, 0, "bilinear" },
  { BILINEAR, 1, "bilinear align_corners" },
}

local sizes = {
  { 3, 4, 6, 8 },       -- doubling
  { 3, 4, 7, 9 },
  { 5, 7, 3, 4 },       -- shrinking
  { 4, 4, 4, 4 },       -- same size
  { 1, 5, 3, 1 },       -- one row in, one column out
  { 2, 3, 5, 13 },
  { 7, 3, 21, 3 },      -- tripling
}

describe("facet_upsample2d_forward", function()
  for _, m in ipairs(modes) do
    for _, s in ipairs(sizes) do
      local hh, ww, ho, wo = s[1], s[2], s[3], s[4]
      H.it(("%s %dx%d -> %dx%d matches the naive formula"):format(m[3], hh, ww, ho, wo), function()
        local n, c = 2, 3
        local x = rand(n * c * hh * ww, hh * 100 + ww)
        local out = zeros({ n, c, ho, wo })
        forward(out, T(x, { n, c, hh, ww }), m[1], m[2])
        local expect = ref_up(x, n * c, hh, ww, ho, wo, m[1], m[2])
        if m[1] == NEAREST then assert.are.same(expect, H.values(out))
        else H.assert_close(H.values(out), expect, 1e-5, 1e-6) end
      end)
    end
  end

  H.it("a large case (threads) matches the naive formula", function()
    local n, c, hh, ww, ho, wo = 4, 8, 16, 16, 37, 29
    local x = rand(n * c * hh * ww, 5)
    local xt = T(x, { n, c, hh, ww })
    for _, m in ipairs(modes) do
      local out = zeros({ n, c, ho, wo })
      forward(out, xt, m[1], m[2])
      H.assert_close(H.values(out), ref_up(x, n * c, hh, ww, ho, wo, m[1], m[2]), 1e-5, 1e-6)
    end
  end)

  H.it("PyTorch's values for a 2x2 image", function()
    local x = T({ 1, 2, 3, 4 }, { 1, 1, 2, 2 })
    local out = zeros({ 1, 1, 4, 4 })
    forward(out, x, NEAREST, 0)
    assert.are.same({ 1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4 }, H.values(out))
    forward(out, x, BILINEAR, 0)
    H.assert_close(H.values(out), { 1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4 },
      1e-6)
    forward(out, x, BILINEAR, 1)
    local t = 1 / 3
    H.assert_close(H.values(out), { 1, 1 + t, 1 + 2 * t, 2, 1 + 2 * t, 2, 2 + t, 2 + 2 * t,
                                    2 + t, 2 + 2 * t, 3, 3 + t, 3, 3 + t, 3 + 2 * t, 4 }, 1e-6)
    -- nearest 2 -> 3 takes pixels 0, 0, 1 (floor(d * 2/3))
    local row = zeros({ 1, 1, 1, 3 })
    forward(row, T({ 5, 7 }, { 1, 1, 1, 2 }), NEAREST, 0)
    assert.are.same({ 5, 5, 7 }, H.values(row))
  end)
end)

describe("facet_upsample2d_backward", function()
  for _, m in ipairs(modes) do
    for _, s in ipairs(sizes) do
      local hh, ww, ho, wo = s[1], s[2], s[3], s[4]
      H.it(("%s %dx%d -> %dx%d is the adjoint of forward"):format(m[3], hh, ww, ho, wo), function()
        local n, c = 2, 2
        local x, g = rand(n * c * hh * ww, 7), rand(n * c * ho * wo, 8)
        local out = zeros({ n, c, ho, wo })
        forward(out, T(x, { n, c, hh, ww }), m[1], m[2])
        local gx = facet.full({ n, c, hh, ww }, 3, { device = H.device })   -- overwritten
        backward(gx, T(g, { n, c, ho, wo }), m[1], m[2])
        local o, gv = H.values(out), H.values(gx)
        local lhs, rhs = 0, 0
        for i = 1, #o do lhs = lhs + o[i] * g[i] end
        for i = 1, #x do rhs = rhs + x[i] * gv[i] end
        H.assert_close(rhs, lhs, 1e-5, 1e-5)
        -- and every entry: grad_x[k] = sum(up(e_k) * g)
        for _, k in ipairs { 1, 2, #x } do
          local e = {}
          for i = 1, #x do e[i] = i == k and 1 or 0 end
          local up = ref_up(e, n * c, hh, ww, ho, wo, m[1], m[2])
          local s2 = 0
          for i = 1, #up do s2 = s2 + up[i] * g[i] end
          H.assert_close(gv[k], s2, 1e-5, 1e-6)
        end
      end)
    end
  end

  H.it("by hand: nearest doubling sums 2x2 blocks, bilinear splits between neighbours", function()
    local gx = zeros({ 1, 1, 2, 2 })
    backward(gx, T({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 }, { 1, 1, 4, 4 }), NEAREST, 0)
    assert.are.same({ 1 + 2 + 5 + 6, 3 + 4 + 7 + 8, 9 + 10 + 13 + 14, 11 + 12 + 15 + 16 }, H.values(gx))
    -- align_corners 1, 2 -> 3 along w: out = {a, (a + b) / 2, b}
    local g2 = zeros({ 1, 1, 1, 2 })
    backward(g2, T({ 1, 1, 1 }, { 1, 1, 1, 3 }), BILINEAR, 1)
    H.assert_close(H.values(g2), { 1.5, 1.5 }, 1e-7)
    -- align_corners 0, 2 -> 4 along w: weights (1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1)
    local g3 = zeros({ 1, 1, 1, 2 })
    backward(g3, T({ 1, 10, 100, 1000 }, { 1, 1, 1, 4 }), BILINEAR, 0)
    H.assert_close(H.values(g3), { 1 + 7.5 + 25, 2.5 + 75 + 1000 }, 1e-6)
  end)

  H.it("an empty batch writes nothing, and its outputs have the empty shapes", function()
    for _, mode in ipairs { { NEAREST, 0 }, { BILINEAR, 0 }, { BILINEAR, 1 } } do
      -- out and grad_x: empty views at the start of storage filled with 7, which must stay 7
      local out, out_untouched = H.empty_batch { 1, 3, 4, 5 }
      local gx, gx_untouched = H.empty_batch { 1, 3, 2, 2 }
      forward(out, zeros({ 0, 3, 2, 2 }), mode[1], mode[2])
      backward(gx, zeros({ 0, 3, 4, 5 }), mode[1], mode[2])
      assert.are.same({ 0, 3, 4, 5 }, out:shape())
      assert.are.same({ 0, 3, 2, 2 }, gx:shape())
      out_untouched()
      gx_untouched()
      -- the channels are still checked on empty tensors
      H.assert_error(function() forward(zeros({ 0, 4, 4, 5 }), zeros({ 0, 3, 2, 2 }), mode[1], mode[2]) end,
        "facet_upsample2d_forward", "same N and C")
      H.assert_error(function() backward(zeros({ 0, 2, 2, 2 }), zeros({ 0, 3, 4, 5 }), mode[1], mode[2]) end,
        "facet_upsample2d_backward", "same N and C")
    end
    -- through nn.Upsample, which sizes its output and grad_input itself
    local on = H.module
    local x = zeros({ 0, 3, 2, 2 })
    for _, case in ipairs {
      { facet.nn.Upsample { scale = 2, mode = "bilinear" }, { 0, 3, 4, 4 } },
      { facet.nn.Upsample { size = { 5, 3 } }, { 0, 3, 5, 3 } },
    } do
      local m = on(case[1])
      assert.are.same(case[2], m:forward(x):shape())
      assert.are.same({ 0, 3, 2, 2 }, m:backward(x, zeros(case[2])):shape())
    end
  end)
end)

describe("upsampling argument checks", function()
  local x, out = facet.zeros({ 2, 3, 4, 4 }), facet.zeros({ 2, 3, 8, 8 })

  it("forward rejects bad modes and tensors naming the shapes", function()
    H.assert_error(function() forward(out, x, 5, 0) end, "facet_upsample2d_forward", "unknown mode 5")
    H.assert_error(function() forward(out, x, BILINEAR, 2) end, "align_corners must be 0 or 1")
    H.assert_error(function() forward(out, x, NEAREST, 1) end, "bilinear only")
    H.assert_error(function() forward(facet.zeros({ 2, 4, 8, 8 }), x, NEAREST) end, "same N and C",
      "[2x3x4x4 float32 cpu]", "[2x4x8x8 float32 cpu]")
    H.assert_error(function() forward(facet.zeros({ 3, 3, 8, 8 }), x, NEAREST) end, "same N and C")
    H.assert_error(function() forward(out, facet.zeros({ 6, 4, 4 }), NEAREST) end, "N x C x H x W", "[6x4x4 float32 cpu]")
    H.assert_error(function() forward(out, facet.zeros({ 2, 3, 4, 4 }, { dtype = "int32" }), NEAREST) end, "float32")
    H.assert_error(function() forward(out, facet.zeros({ 2, 3, 0, 4 }), NEAREST) end, "H, W")
    H.assert_error(function() forward(facet.zeros({ 2, 3, 8, 0 }), x, NEAREST) end, "H, W")
    H.assert_error(function() forward(out, facet.zeros({ 2, 3, 4, 8 }):narrow(4, 1, 4), NEAREST) end, "contiguous")
    H.assert_error(function() forward(nil, x, NEAREST) end, "out is NULL")
    H.assert_error(function() forward(out, nil, NEAREST) end, "x is NULL")
  end)

  it("backward rejects bad tensors", function()
    backward(x, out, BILINEAR, 1)
    H.assert_error(function() backward(x, out, 9, 0) end, "facet_upsample2d_backward", "unknown mode")
    H.assert_error(function() backward(facet.zeros({ 2, 2, 4, 4 }), out, BILINEAR, 0) end, "grad_x", "grad_out",
      "same N and C")
    H.assert_error(function() backward(nil, out, BILINEAR, 0) end, "grad_x is NULL")
    H.assert_error(function() backward(x, facet.zeros({ 2, 3, 8 }), BILINEAR, 0) end, "grad_out")
  end)

  it("device mismatches are rejected", function()
    if not facet.cuda.available() then
      pending("needs a CUDA device")
      return
    end
    H.assert_error(function() forward(facet.zeros({ 2, 3, 8, 8 }, { device = "cuda" }), x, NEAREST) end,
      "different devices")
  end)
end)
