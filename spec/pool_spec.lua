--- 2-D max and average pooling through the C API: a naive Lua pooling over
-- several kernel / stride / padding combinations (count_include_pad both
-- ways), argmax values, ties, padding that never wins, NaN, backward against
-- the naive scatter and against central differences, on CUDA the backward
-- bit for bit against the CPU's, and the argument checks.
local ffi = require "ffi"
local H = require "support.device"
local facet = H.facet
local core = require "facet.core"
local C, check = core.C, core.check

local MAX, AVG = C.FACET_POOL_KIND_MAX, C.FACET_POOL_KIND_AVG

local function T(flat, shape, dtype) return H.on(facet.tensor(flat, { dtype = dtype }):reshape(shape)) end
local function zeros(shape, dtype) return facet.zeros(shape, { device = H.device, dtype = dtype }) end
local function h(t) return t and t.h or nil end

local function settings(p)
  return ffi.new("facet_pool2d_params", { kernel_h = p.kh, kernel_w = p.kw, stride_h = p.sh, stride_w = p.sw,
    pad_h = p.ph, pad_w = p.pw, count_include_pad = p.count_pad or 0 })
end

-- LCG values rounded to float32, so the reference sees what the tensor holds
local function rand(n, seed)
  local g, r = H.lcg(seed), {}
  for i = 1, n do r[i] = tonumber(ffi.new("float", g())) end
  return r
end

local function out_size(p, hh, ww)
  return math.floor((hh + 2 * p.ph - p.kh) / p.sh) + 1, math.floor((ww + 2 * p.pw - p.kw) / p.sw) + 1
end

-- naive pooling of flat x (planes x hh x ww): out, 0-based argmax, divisors
local function ref_pool(x, planes, hh, ww, p, kind)
  local ho, wo = out_size(p, hh, ww)
  local out, am, div = {}, {}, {}
  for pl = 0, planes - 1 do
    for oh = 0, ho - 1 do
      for ow = 0, wo - 1 do
        local best, bi, sum, cnt = nil, nil, 0, 0
        for i = 0, p.kh - 1 do
          for j = 0, p.kw - 1 do
            local ih, iw = oh * p.sh - p.ph + i, ow * p.sw - p.pw + j
            if ih >= 0 and ih < hh and iw >= 0 and iw < ww then
              local v = x[pl * hh * ww + ih * ww + iw + 1]
              if best == nil or v > best then best, bi = v, ih * ww + iw end
              sum, cnt = sum + v, cnt + 1
            end
          end
        end
        local o = pl * ho * wo + oh * wo + ow + 1
        local d = (p.count_pad or 0) == 1 and p.kh * p.kw or cnt
        if kind == MAX then out[o], am[o] = best, bi else out[o] = sum / d end
        div[o] = d
      end
    end
  end
  return out, am, div, ho, wo
end

-- naive backward by scatter
local function ref_backward(g, am, planes, hh, ww, p, kind)
  local ho, wo = out_size(p, hh, ww)
  local _, _, div = ref_pool(rand(planes * hh * ww, 1), planes, hh, ww, p, AVG)
  local gx = {}
  for i = 1, planes * hh * ww do gx[i] = 0 end
  for pl = 0, planes - 1 do
    for oh = 0, ho - 1 do
      for ow = 0, wo - 1 do
        local o = pl * ho * wo + oh * wo + ow + 1
        if kind == MAX then
          local k = pl * hh * ww + am[o] + 1
          gx[k] = gx[k] + g[o]
        else
          for i = 0, p.kh - 1 do
            for j = 0, p.kw - 1 do
              local ih, iw = oh * p.sh - p.ph + i, ow * p.sw - p.pw + j
              if ih >= 0 and ih < hh and iw >= 0 and iw < ww then
                local k = pl * hh * ww + ih * ww + iw + 1
                gx[k] = gx[k] + g[o] / div[o]
              end
            end
          end
        end
      end
    end
  end
  return gx
end

local function forward(out, argmax, x, kind, p)
  check(C.facet_pool2d_forward(h(out), h(argmax), h(x), kind, p and settings(p) or nil), 2)
end

local function backward(gx, go, argmax, kind, p)
  check(C.facet_pool2d_backward(h(gx), h(go), h(argmax), kind, p and settings(p) or nil), 2)
end

local combos = {
  { kh = 2, kw = 2, sh = 2, sw = 2, ph = 0, pw = 0 },
  { kh = 3, kw = 3, sh = 2, sw = 2, ph = 1, pw = 1 },
  { kh = 3, kw = 3, sh = 1, sw = 1, ph = 1, pw = 1 },
  { kh = 3, kw = 2, sh = 1, sw = 2, ph = 1, pw = 0 },
  { kh = 5, kw = 4, sh = 3, sw = 2, ph = 2, pw = 2 },
  { kh = 1, kw = 1, sh = 2, sw = 3, ph = 0, pw = 0 },
  { kh = 7, kw = 9, sh = 1, sw = 1, ph = 0, pw = 0 },   -- one window covers the image
  { kh = 2, kw = 3, sh = 3, sw = 4, ph = 1, pw = 1 },   -- kernel < stride: pixels no window holds
  { kh = 7, kw = 5, sh = 3, sw = 2, ph = 3, pw = 2 },   -- k - 1 a multiple of the stride
}

local function name_of(p)
  return ("kernel %dx%d stride %dx%d pad %dx%d"):format(p.kh, p.kw, p.sh, p.sw, p.ph, p.pw)
end

describe("facet_pool2d_forward", function()
  for _, p in ipairs(combos) do
    H.it("max and average match the naive pooling, " .. name_of(p), function()
      local n, c, hh, ww = 2, 3, 7, 9
      local x = rand(n * c * hh * ww, 7)
      local ho, wo = out_size(p, hh, ww)
      local xt = T(x, { n, c, hh, ww })
      local out, am = zeros({ n, c, ho, wo }), zeros({ n, c, ho, wo }, "int32")
      forward(out, am, xt, MAX, p)
      local eo, eam = ref_pool(x, n * c, hh, ww, p, MAX)
      assert.are.same(eo, H.values(out))    -- max is exact
      assert.are.same(eam, H.values(am))
      for _, cp in ipairs { 0, 1 } do
        local q = { kh = p.kh, kw = p.kw, sh = p.sh, sw = p.sw, ph = p.ph, pw = p.pw, count_pad = cp }
        local avg = zeros({ n, c, ho, wo })
        forward(avg, nil, xt, AVG, q)
        H.assert_close(H.values(avg), (ref_pool(x, n * c, hh, ww, q, AVG)), 1e-5, 1e-6)
      end
    end)
  end

  H.it("a large case (threads) matches the naive pooling", function()
    local n, c, hh, ww = 4, 8, 32, 32
    local p = { kh = 3, kw = 3, sh = 2, sw = 2, ph = 1, pw = 1, count_pad = 0 }
    local x = rand(n * c * hh * ww, 9)
    local ho, wo = out_size(p, hh, ww)
    local xt = T(x, { n, c, hh, ww })
    local out, am, avg = zeros({ n, c, ho, wo }), zeros({ n, c, ho, wo }, "int32"), zeros({ n, c, ho, wo })
    forward(out, am, xt, MAX, p)
    forward(avg, nil, xt, AVG, p)
    local eo, eam = ref_pool(x, n * c, hh, ww, p, MAX)
    assert.are.same(eo, H.values(out))
    assert.are.same(eam, H.values(am))
    H.assert_close(H.values(avg), (ref_pool(x, n * c, hh, ww, p, AVG)), 1e-5, 1e-6)
  end)

  H.it("ties go to the first maximum in scan order; max backward routes by argmax", function()
    local x = T({ 1, 5, 5,
                  5, 2, 5,
                  0, 5, 1 }, { 1, 1, 3, 3 })
    local p = { kh = 2, kw = 2, sh = 1, sw = 1, ph = 0, pw = 0 }
    local out, am = zeros({ 1, 1, 2, 2 }), zeros({ 1, 1, 2, 2 }, "int32")
    forward(out, am, x, MAX, p)
    assert.are.same({ 5, 5, 5, 5 }, H.values(out))
    assert.are.same({ 1, 1, 3, 5 }, H.values(am))
    local gx = facet.full({ 1, 1, 3, 3 }, 9, { device = H.device })
    backward(gx, T({ 1, 2, 3, 4 }, { 1, 1, 2, 2 }), am, MAX, p)
    assert.are.same({ 0, 3, 0, 3, 0, 4, 0, 0, 0 }, H.values(gx))
    -- a constant image: every window's first in-image pixel
    local zeros_x = zeros({ 1, 1, 3, 3 })
    local q = { kh = 3, kw = 3, sh = 2, sw = 2, ph = 1, pw = 1 }
    forward(out, am, zeros_x, MAX, q)
    assert.are.same({ 0, 1, 3, 4 }, H.values(am))
  end)

  H.it("padding never wins, even over negative values", function()
    local x = T({ -1, -2, -3, -4 }, { 1, 1, 2, 2 })
    local p = { kh = 2, kw = 2, sh = 1, sw = 1, ph = 1, pw = 1 }
    local out, am = zeros({ 1, 1, 3, 3 }), zeros({ 1, 1, 3, 3 }, "int32")
    forward(out, am, x, MAX, p)
    assert.are.same({ -1, -1, -2, -1, -1, -2, -3, -3, -4 }, H.values(out))
    assert.are.same({ 0, 0, 1, 0, 0, 1, 2, 2, 3 }, H.values(am))
  end)

  H.it("count_include_pad by hand", function()
    local x = T({ 1, 2, 3, 4 }, { 1, 1, 2, 2 })
    local out = zeros({ 1, 1, 3, 3 })
    forward(out, nil, x, AVG, { kh = 2, kw = 2, sh = 1, sw = 1, ph = 1, pw = 1, count_pad = 1 })
    H.assert_close(H.values(out), { 1 / 4, 3 / 4, 2 / 4, 4 / 4, 10 / 4, 6 / 4, 3 / 4, 7 / 4, 4 / 4 }, 1e-7)
    forward(out, nil, x, AVG, { kh = 2, kw = 2, sh = 1, sw = 1, ph = 1, pw = 1, count_pad = 0 })
    H.assert_close(H.values(out), { 1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4 }, 1e-7)
  end)

  H.it("the first NaN of a window wins", function()
    local nan = 0 / 0
    local x = T({ 1, nan, 3, nan }, { 1, 1, 2, 2 })
    local out, am = zeros({ 1, 1, 1, 1 }), zeros({ 1, 1, 1, 1 }, "int32")
    forward(out, am, x, MAX, { kh = 2, kw = 2, sh = 2, sw = 2, ph = 0, pw = 0 })
    local o = H.values(out)
    assert.is_true(o[1] ~= o[1])
    assert.are.same({ 1 }, H.values(am))
  end)

  H.it("an empty batch writes nothing, and its outputs have the empty shapes", function()
    local p = { kh = 3, kw = 3, sh = 2, sw = 2, ph = 1, pw = 1 }    -- 5 x 6 -> 3 x 3
    local x = zeros({ 0, 2, 5, 6 })
    for _, kind in ipairs { MAX, AVG } do
      -- out, argmax and grad_x: empty views at the start of storage filled with 7, which must stay 7
      local out, out_untouched = H.empty_batch { 1, 2, 3, 3 }
      local am, am_untouched = H.empty_batch({ 1, 2, 3, 3 }, "int32")
      local gx, gx_untouched = H.empty_batch { 1, 2, 5, 6 }
      forward(out, am, x, kind, p)
      backward(gx, zeros({ 0, 2, 3, 3 }), am, kind, p)
      assert.are.same({ 0, 2, 3, 3 }, out:shape())
      assert.are.same({ 0, 2, 5, 6 }, gx:shape())
      out_untouched()
      am_untouched()
      gx_untouched()
      -- the shapes are still checked: an empty out or grad_out of another size is refused
      H.assert_error(function() forward(zeros({ 0, 2, 3, 4 }), am, x, kind, p) end, "facet_pool2d_forward",
        "out", "[0x2x3x4 float32")
      H.assert_error(function() backward(gx, zeros({ 0, 2, 2, 3 }), am, kind, p) end, "facet_pool2d_backward",
        "grad_out", "[0x2x2x3 float32")
    end
    -- through the modules, which size their outputs and grad_input themselves
    local on = H.module
    for _, case in ipairs {
      { facet.nn.MaxPool2d(3, { stride = 2, padding = 1 }), { 0, 2, 3, 3 } },
      { facet.nn.AvgPool2d(2), { 0, 2, 2, 3 } },
      { facet.nn.AdaptiveAvgPool2d(1), { 0, 2, 1, 1 } },
    } do
      local m = on(case[1])
      assert.are.same(case[2], m:forward(x):shape(), m:describe())
      assert.are.same({ 0, 2, 5, 6 }, m:backward(x, zeros(case[2])):shape(), m:describe())
    end
  end)
end)

describe("facet_pool2d_backward", function()
  for _, p in ipairs(combos) do
    H.it("matches the naive scatter and central differences, " .. name_of(p), function()
      local n, c, hh, ww = 2, 2, 7, 9
      local planes = n * c
      -- distinct values, so max pooling is differentiable at x
      local x = {}
      for i = 1, planes * hh * ww do x[i] = ((i * 37) % 101) / 8 end
      local ho, wo = out_size(p, hh, ww)
      local xt = T(x, { n, c, hh, ww })
      local g = rand(planes * ho * wo, 3)
      local gt = T(g, { n, c, ho, wo })
      for _, kind in ipairs { MAX, AVG } do
        for _, cp in ipairs(kind == MAX and { 0 } or { 0, 1 }) do
          local q = { kh = p.kh, kw = p.kw, sh = p.sh, sw = p.sw, ph = p.ph, pw = p.pw, count_pad = cp }
          local out, am = zeros({ n, c, ho, wo }), zeros({ n, c, ho, wo }, "int32")
          forward(out, am, xt, kind, q)
          local gx = facet.full({ n, c, hh, ww }, 5, { device = H.device })
          backward(gx, gt, am, kind, q)
          local got = H.values(gx)
          H.assert_close(got, ref_backward(g, H.values(am), planes, hh, ww, q, kind), 1e-5, 1e-6)
          -- central differences of sum(out * g) at a few pixels (the loss is piecewise linear)
          for _, i in ipairs { 1, 5, 17, 40, 63, 100, planes * hh * ww } do
            local function L(delta)
              local xv = { unpack(x) }
              xv[i] = xv[i] + delta
              local o = zeros({ n, c, ho, wo })
              forward(o, nil, T(xv, { n, c, hh, ww }), kind, q)
              local s, ov = 0, H.values(o)
              for k = 1, #ov do s = s + ov[k] * g[k] end
              return s
            end
            H.assert_close(got[i], (L(1e-2) - L(-1e-2)) / 2e-2, 1e-3, 1e-3)
          end
        end
      end
    end)
  end
end)

describe("facet_pool2d_backward on CUDA", function()
  -- the GPU gathers per pixel (outputs found by a division by the stride, 32
  -- or 64 bits: FACET_CUDA_INDEX64) what the CPU scatters, in the same order:
  -- the same bits, with gradients from 1e-3 to 1e3 so that any other order
  -- of the sums, or a missed or extra output, would show
  H.it("equals the CPU's backward bit for bit", function()
    if H.device ~= "cuda" then
      pending("compares FACET_DEVICE=cuda with the CPU")
      return
    end
    local n, c, hh, ww = 2, 3, 23, 19
    local planes = n * c
    local x = rand(planes * hh * ww, 11)
    local xt = T(x, { n, c, hh, ww })
    for _, p in ipairs(combos) do
      local ho, wo = out_size(p, hh, ww)
      local g, lcg = {}, H.lcg(5)
      for i = 1, planes * ho * wo do g[i] = tonumber(ffi.new("float", lcg() * 10 ^ (i % 7 - 3))) end
      for _, kind in ipairs { MAX, AVG } do
        for _, cp in ipairs(kind == MAX and { 0 } or { 0, 1 }) do
          local q = { kh = p.kh, kw = p.kw, sh = p.sh, sw = p.sw, ph = p.ph, pw = p.pw, count_pad = cp }
          local out, am = zeros({ n, c, ho, wo }), zeros({ n, c, ho, wo }, "int32")
          forward(out, am, xt, kind, q)
          local gx = zeros({ n, c, hh, ww })
          backward(gx, T(g, { n, c, ho, wo }), am, kind, q)
          local cgx = facet.full({ n, c, hh, ww }, 5)
          backward(cgx, facet.tensor(g):reshape { n, c, ho, wo }, am:to("cpu"), kind, q)
          local got, want = H.values(gx), H.values(cgx)
          for i = 1, #want do
            if got[i] ~= want[i] then
              error(("%s, kind %d, count_pad %d: element %d is %.9g on cuda, %.9g on the CPU"):format(name_of(p),
                kind, cp, i, got[i], want[i]))
            end
          end
        end
      end
    end
  end)
end)

describe("pooling argument checks", function()
  local x = facet.randn({ 2, 3, 6, 6 }, { seed = 2 })
  local p = { kh = 2, kw = 2, sh = 2, sw = 2, ph = 0, pw = 0 }
  local function with(over)
    local q = {}
    for k, v in pairs(p) do q[k] = v end
    for k, v in pairs(over) do q[k] = v end
    return q
  end

  it("rejects bad settings", function()
    local out = facet.zeros({ 2, 3, 3, 3 })
    local fn = function(q, kind) return function() forward(out, nil, x, kind or MAX, q) end end
    H.assert_error(function() check(C.facet_pool2d_forward(out.h, nil, x.h, MAX, nil)) end, "facet_pool2d_forward",
      "NULL")
    H.assert_error(fn(p, 7), "unknown pooling kind 7")
    H.assert_error(fn(with { kh = 0 }), "kernel and stride must be >= 1")
    H.assert_error(fn(with { sw = 0 }), "kernel and stride must be >= 1")
    H.assert_error(fn(with { ph = -1 }), "padding")
    H.assert_error(fn(with { ph = 2, kh = 3 }), "padding 2x0", "kernel 3x2")
    H.assert_error(fn(with { pw = 2 }), "kernel / 2")
    H.assert_error(fn(with { count_pad = 2 }, AVG), "count_include_pad")
    H.assert_error(fn(with { kh = 9 }), "does not fit", "[2x3x6x6 float32 cpu]")
  end)

  it("rejects bad tensors naming the shapes", function()
    local out, am = facet.zeros({ 2, 3, 3, 3 }), facet.zeros({ 2, 3, 3, 3 }, { dtype = "int32" })
    forward(out, am, x, MAX, p)
    H.assert_error(function() forward(facet.zeros({ 2, 3, 2, 3 }), am, x, MAX, p) end, "out", "[2x3x2x3 float32 cpu]",
      "2x3x3x3")
    H.assert_error(function() forward(out, facet.zeros({ 2, 3, 3, 3 }), x, MAX, p) end, "argmax", "int32")
    H.assert_error(function() forward(out, facet.zeros({ 2, 3, 3 }, { dtype = "int32" }), x, MAX, p) end, "argmax")
    H.assert_error(function() forward(out, am, facet.zeros({ 6, 6 }), MAX, p) end, "N x C x H x W", "[6x6 float32 cpu]")
    H.assert_error(function() forward(out, am, facet.zeros({ 2, 3, 6, 6 }, { dtype = "int32" }), MAX, p) end,
      "float32")
    H.assert_error(function() forward(out, am, facet.zeros({ 2, 3, 6, 12 }):narrow(4, 1, 6), MAX, p) end, "contiguous")
    H.assert_error(function() forward(facet.zeros({ 2, 3, 0, 3 }), am, facet.zeros({ 2, 3, 0, 6 }), MAX, p) end,
      "H, W >= 1")
    H.assert_error(function() forward(nil, am, x, MAX, p) end, "out is NULL")
    H.assert_error(function() forward(out, am, nil, MAX, p) end, "x is NULL")
    -- average pooling ignores argmax
    forward(out, facet.zeros({ 1 }), x, AVG, p)
  end)

  it("backward rejects bad tensors", function()
    local gx, go, am = facet.zeros({ 2, 3, 6, 6 }), facet.zeros({ 2, 3, 3, 3 }), facet.zeros({ 2, 3, 3, 3 }, { dtype = "int32" })
    backward(gx, go, am, MAX, p)
    backward(gx, go, nil, AVG, p)
    H.assert_error(function() backward(gx, go, nil, MAX, p) end, "facet_pool2d_backward", "needs the argmax")
    H.assert_error(function() backward(gx, facet.zeros({ 2, 3, 4, 3 }), am, MAX, p) end, "grad_out",
      "[2x3x4x3 float32 cpu]")
    H.assert_error(function() backward(gx, go, facet.zeros({ 2, 3, 3, 3 }, { dtype = "int64" }), MAX, p) end, "argmax",
      "int32")
    H.assert_error(function() backward(nil, go, am, MAX, p) end, "grad_x is NULL")
    H.assert_error(function() backward(gx, go, am, MAX, with { sh = 0 }) end, "stride")
  end)

  it("backward ignores argmax entries outside the plane", function()
    local gx, go = facet.zeros({ 1, 1, 2, 2 }), facet.ones({ 1, 1, 1, 2 })
    local am = facet.tensor({ 3, 99 }, { dtype = "int32" }):reshape { 1, 1, 1, 2 }
    backward(gx, go, am, MAX, { kh = 2, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0 })
    assert.are.same({ 0, 0, 0, 1 }, H.values(gx))
  end)

  it("device mismatches are rejected", function()
    if not facet.cuda.available() then
      pending("needs a CUDA device")
      return
    end
    local out = facet.zeros({ 2, 3, 3, 3 }, { device = "cuda" })
    H.assert_error(function() forward(out, nil, x, MAX, p) end, "different devices")
  end)
end)
