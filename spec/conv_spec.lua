--- 2-D convolution through the C API (facet_conv2d_*): forward and backward
-- against a naive double-precision loop over many layer shapes (1x1 to 7x7
-- kernels, strides, padding, dilation, groups, depthwise, bias on/off, odd
-- sizes, batches 1 and 3), central finite differences of sum(out * R), the
-- accumulate/overwrite contract of backward, NULL gradients, workspace
-- sizes and thread counts, and the argument errors.
local ffi = require "ffi"
local H = require "support.device"
local facet = H.facet
local core = require "facet.core"
local C = core.C

-- ---- layer settings ----------------------------------------------------------------

local function layer(t)
  local L = {
    n = t.n or 1, c = t.c, h = t.h, w = t.w or t.h, o = t.o, kh = t.k or t.kh, kw = t.k or t.kw,
    sh = t.s or t.sh or 1, sw = t.s or t.sw or 1, ph = t.p or t.ph or 0, pw = t.p or t.pw or 0,
    dh = t.d or t.dh or 1, dw = t.d or t.dw or 1, groups = t.g or 1, bias = t.bias ~= false,
  }
  L.ho = math.floor((L.h + 2 * L.ph - L.dh * (L.kh - 1) - 1) / L.sh) + 1
  L.wo = math.floor((L.w + 2 * L.pw - L.dw * (L.kw - 1) - 1) / L.sw) + 1
  L.cg, L.og = L.c / L.groups, L.o / L.groups
  return L
end

local function describe_layer(L)
  return ("%dx%dx%dx%d -> %d, k%dx%d s%dx%d p%dx%d d%dx%d g%d%s"):format(L.n, L.c, L.h, L.w, L.o, L.kh, L.kw,
    L.sh, L.sw, L.ph, L.pw, L.dh, L.dw, L.groups, L.bias and " +bias" or "")
end

local function settings(L)
  return ffi.new("facet_conv2d_params", { stride_h = L.sh, stride_w = L.sw, pad_h = L.ph, pad_w = L.pw,
    dilation_h = L.dh, dilation_w = L.dw, groups = L.groups })
end

-- ---- the reference -------------------------------------------------------------------

--- Forward (and, given R = dL/dout, backward) of a layer in double precision
-- over flat 1-based arrays in NCHW order.
local function naive(L, X, Wt, B, R)
  local out, gx, gw, gb = {}, {}, {}, {}
  for i = 1, L.n * L.c * L.h * L.w do gx[i] = 0 end
  for i = 1, L.o * L.cg * L.kh * L.kw do gw[i] = 0 end
  for i = 1, L.o do gb[i] = 0 end
  for n = 0, L.n - 1 do
    for o = 0, L.o - 1 do
      local grp = math.floor(o / L.og)
      for ho = 0, L.ho - 1 do
        for wo = 0, L.wo - 1 do
          local oi = ((n * L.o + o) * L.ho + ho) * L.wo + wo + 1
          local r = R and R[oi] or 0
          local s = B and B[o + 1] or 0
          for ci = 0, L.cg - 1 do
            local c = grp * L.cg + ci
            for i = 0, L.kh - 1 do
              local h = ho * L.sh - L.ph + i * L.dh
              if h >= 0 and h < L.h then
                for j = 0, L.kw - 1 do
                  local w = wo * L.sw - L.pw + j * L.dw
                  if w >= 0 and w < L.w then
                    local xi = ((n * L.c + c) * L.h + h) * L.w + w + 1
                    local wi = ((o * L.cg + ci) * L.kh + i) * L.kw + j + 1
                    s = s + Wt[wi] * X[xi]
                    gx[xi] = gx[xi] + r * Wt[wi]
                    gw[wi] = gw[wi] + r * X[xi]
                  end
                end
              end
            end
          end
          out[oi] = s
          gb[o + 1] = gb[o + 1] + r
        end
      end
    end
  end
  return out, gx, gw, gb
end

-- ---- calling the C API -----------------------------------------------------------------

local function ptr(t) return t and t.h or nil end

--- Workspace of the size facet_conv2d_workspace_size asks for (nil for 0), or of `elems` floats.
local function workspace(x, wt, s, elems)
  if not elems then
    local e = ffi.new("int64_t[1]")
    core.check(C.facet_conv2d_workspace_size(e, x.h, wt.h, s))
    elems = tonumber(e[0])
  end
  if elems == 0 then return nil, 0 end
  return facet.empty({ elems }, { device = H.device }), elems
end

--- A device tensor holding the flat values v.
local function from_flat(shape, v)
  local t = facet.empty(shape)
  local p = t:data_ptr()
  for i = 1, #v do p[i - 1] = v[i] end
  return H.on(t)
end

local function nn_on(m) if H.device == "cuda" then return m:cuda() end return m end

local function randn(shape, seed, device)
  return facet.randn(shape, { seed = seed }):to(device or H.device)
end

--- Inputs of a layer: tensors on the device under test (or `device`) and their flat values.
local function inputs(L, seed, device)
  local d = { L = L, s = settings(L) }
  d.x = randn({ L.n, L.c, L.h, L.w }, seed, device)
  d.w = randn({ L.o, L.cg, L.kh, L.kw }, seed + 1, device)
  d.b = L.bias and randn({ L.o }, seed + 2, device) or nil
  d.r = randn({ L.n, L.o, L.ho, L.wo }, seed + 3, device)
  d.X, d.W, d.B, d.R = H.values(d.x), H.values(d.w), d.b and H.values(d.b), H.values(d.r)
  return d
end

local function forward(d, ws, device)
  local L = d.L
  local out = facet.empty({ L.n, L.o, L.ho, L.wo }, { device = device or H.device })
  if ws == nil then ws = workspace(d.x, d.w, d.s) end
  core.check(C.facet_conv2d_forward(out.h, d.x.h, d.w.h, ptr(d.b), ptr(ws or nil), d.s))
  return out
end

local function backward(d, gx, gw, gb, ws)
  if ws == nil then ws = workspace(d.x, d.w, d.s) end
  core.check(C.facet_conv2d_backward(ptr(gx), ptr(gw), ptr(gb), d.r.h, d.x.h, d.w.h, ptr(ws or nil), d.s))
end

local function grads(d)
  local L = d.L
  return facet.zeros({ L.n, L.c, L.h, L.w }, { device = H.device }),
         facet.zeros({ L.o, L.cg, L.kh, L.kw }, { device = H.device }),
         facet.zeros({ L.o }, { device = H.device })
end

-- F(4x4, 3x3), the CPU's default Winograd, rounds its transforms' products with
-- coefficients up to 8 and 1/24: errors of about 1e-5 of a tensor's largest value
-- (measured up to 1.1e-5 on 256 channels; F(2x2, 3x3) and im2col 3e-7 to 7e-7),
-- checked within 4e-5 of it
local function close_scaled(got, want)
  local big = 0
  for k = 1, #want do big = math.max(big, math.abs(want[k])) end
  H.assert_close(got, want, 0, 4e-5 * big)
end

local function check_layer(L, seed)
  local d = inputs(L, seed)
  local out = forward(d)
  local ref_out, ref_gx, ref_gw, ref_gb = naive(L, d.X, d.W, d.B, d.R)
  H.assert_close(H.values(out), ref_out, 1e-4, 1e-4)
  local gx, gw, gb = grads(d)
  backward(d, gx, gw, L.bias and gb or nil)
  H.assert_close(H.values(gx), ref_gx, 1e-4, 1e-4)
  H.assert_close(H.values(gw), ref_gw, 1e-4, 1e-3)
  if L.bias then H.assert_close(H.values(gb), ref_gb, 1e-4, 1e-3) end
end

-- ---- the layers ------------------------------------------------------------------------

local layers = {
  -- pointwise (no im2col) and 1x1 layers that still need it
  layer { n = 3, c = 5, h = 7, w = 6, o = 4, k = 1 },
  layer { n = 1, c = 6, h = 5, o = 4, k = 1, g = 2, bias = false },
  layer { n = 3, c = 4, h = 9, w = 8, o = 6, k = 1, s = 2 },
  layer { n = 1, c = 3, h = 5, o = 2, k = 1, p = 1 },
  -- 3x3 and 5x5: stride, padding, dilation, odd sizes
  layer { n = 1, c = 3, h = 8, o = 4, k = 3, p = 1 },
  layer { n = 3, c = 4, h = 9, w = 7, o = 5, k = 3, p = 1, bias = false },
  layer { n = 3, c = 3, h = 9, w = 10, o = 4, k = 3, s = 2, p = 1 },
  layer { n = 1, c = 2, h = 7, o = 3, k = 3 },
  layer { n = 3, c = 3, h = 11, w = 9, o = 4, k = 3, d = 2, p = 2 },
  layer { n = 1, c = 3, h = 10, w = 9, o = 2, k = 3, s = 2, d = 2 },
  layer { n = 1, c = 3, h = 9, o = 4, k = 5, p = 2 },
  layer { n = 3, c = 2, h = 11, w = 8, o = 3, k = 5, s = 2, p = 2, bias = false },
  layer { n = 1, c = 2, h = 8, o = 3, k = 5, s = 3, p = 1, d = 1 },
  -- rectangular kernels and settings that differ per axis
  layer { n = 3, c = 3, h = 9, w = 7, o = 4, kh = 3, kw = 1, sh = 2, sw = 1, ph = 1, pw = 0 },
  layer { n = 1, c = 2, h = 6, w = 11, o = 3, kh = 1, kw = 5, sh = 1, sw = 3, ph = 2, pw = 2, dh = 1, dw = 2 },
  layer { n = 1, c = 2, h = 4, w = 4, o = 2, k = 3, p = 2 },    -- padding wider than half the kernel
  -- groups
  layer { n = 3, c = 4, h = 7, o = 6, k = 3, p = 1, g = 2 },
  layer { n = 1, c = 6, h = 8, w = 9, o = 3, k = 3, s = 2, p = 1, g = 3, bias = false },
  -- depthwise (direct kernels), with a channel multiplier, and one input channel
  layer { n = 3, c = 5, h = 9, w = 8, o = 5, k = 3, p = 1, g = 5 },
  layer { n = 3, c = 4, h = 9, w = 11, o = 4, k = 3, s = 2, p = 1, g = 4 },
  layer { n = 1, c = 3, h = 10, o = 3, k = 5, p = 2, g = 3, bias = false },
  layer { n = 1, c = 3, h = 11, w = 10, o = 3, k = 3, s = 3, p = 2, d = 2, g = 3 },
  layer { n = 3, c = 4, h = 7, o = 4, k = 7, g = 4 },          -- MobileFaceNet's GDC: 7x7 on 7x7 -> 1x1
  layer { n = 2, c = 2, h = 5, w = 4, o = 4, kh = 5, kw = 4, s = 2, g = 2 },
  layer { n = 1, c = 3, h = 6, w = 7, o = 6, k = 3, p = 1, g = 3 },
  layer { n = 3, c = 1, h = 8, o = 4, k = 3, s = 2, p = 1 },
  layer { n = 2, c = 3, h = 10, w = 9, o = 3, k = 5, g = 3 },             -- no padding: grad_x by scatter
  layer { n = 1, c = 2, h = 5, o = 2, k = 3, p = 3, g = 2 },              -- padding beyond the kernel's reach
  layer { n = 1, c = 2, h = 131, w = 127, o = 2, k = 3, p = 1, g = 2 },   -- planes too big for the stack buffer
  layer { n = 2, c = 2, h = 12, o = 2, k = 9, p = 4, g = 2 },             -- more taps than the fast kernels take
  -- enough work for threaded loops and OpenBLAS's threaded GEMMs
  layer { n = 3, c = 16, h = 20, w = 19, o = 24, k = 3, p = 1 },
  layer { n = 3, c = 24, h = 28, o = 24, k = 3, p = 1, g = 24 },
}

describe("conv2d", function()
  for i, L in ipairs(layers) do
    H.it("forward and backward match the naive loop: " .. describe_layer(L), function()
      check_layer(L, 100 * i)
    end)
  end

  H.it("backward matches central finite differences of sum(out * R)", function()
    for i, L in ipairs {
      layer { n = 2, c = 4, h = 6, w = 5, o = 4, k = 3, s = 2, p = 1, g = 2 },
      layer { n = 2, c = 3, h = 5, o = 2, k = 1 },
      layer { n = 2, c = 3, h = 7, o = 3, k = 3, p = 1, d = 2, g = 3 },
    } do
      local d = inputs(L, 7000 + 10 * i)
      local gx, gw, gb = grads(d)
      backward(d, gx, gw, gb)
      local loss = function(x, w, b)
        local e = { L = L, s = d.s, x = x, w = w, b = b }
        local out, s = H.values(forward(e)), 0
        for k = 1, #out do s = s + out[k] * d.R[k] end
        return s
      end
      local eps = 1e-2
      local function probe(vals, shape, grad, which, picks)
        for _, k in ipairs(picks) do
          local up, down = { unpack(vals) }, { unpack(vals) }
          up[k], down[k] = vals[k] + eps, vals[k] - eps
          local args_up, args_down = { d.x, d.w, d.b }, { d.x, d.w, d.b }
          args_up[which], args_down[which] = from_flat(shape, up), from_flat(shape, down)
          local fd = (loss(unpack(args_up)) - loss(unpack(args_down))) / (2 * eps)
          H.assert_close(grad[k], fd, 1e-2, 1e-2)
        end
      end
      local nx, nw = #d.X, #d.W
      probe(d.X, { L.n, L.c, L.h, L.w }, H.values(gx), 1, { 1, 2, math.floor(nx / 3), math.floor(nx / 2) + 1, nx })
      probe(d.W, { L.o, L.cg, L.kh, L.kw }, H.values(gw), 2, { 1, math.floor(nw / 2) + 1, nw })
      probe(d.B, { L.o }, H.values(gb), 3, { 1, L.o })
    end
  end)

  H.it("backward overwrites grad_x and accumulates grad_weight and grad_bias", function()
    for i, L in ipairs {
      layer { n = 3, c = 4, h = 7, o = 6, k = 3, p = 1, g = 2 },
      layer { n = 3, c = 4, h = 6, o = 3, k = 1 },
      layer { n = 3, c = 4, h = 7, o = 4, k = 3, s = 2, p = 1, g = 4 },
    } do
      local d = inputs(L, 8000 + 10 * i)
      local _, ref_gx, ref_gw, ref_gb = naive(L, d.X, d.W, d.B, d.R)
      local gx = facet.full({ L.n, L.c, L.h, L.w }, 0 / 0, { device = H.device })   -- NaN: must be overwritten
      local gw0, gb0 = randn({ L.o, L.cg, L.kh, L.kw }, 1), randn({ L.o }, 2)
      local gw, gb = gw0:clone(), gb0:clone()
      backward(d, gx, gw, gb)
      backward(d, gx, gw, gb)
      H.assert_close(H.values(gx), ref_gx, 1e-4, 1e-4)
      local expect_w, expect_b, w0, b0 = {}, {}, H.values(gw0), H.values(gb0)
      for k = 1, #ref_gw do expect_w[k] = w0[k] + 2 * ref_gw[k] end
      for k = 1, #ref_gb do expect_b[k] = b0[k] + 2 * ref_gb[k] end
      H.assert_close(H.values(gw), expect_w, 1e-4, 1e-3)
      H.assert_close(H.values(gb), expect_b, 1e-4, 1e-3)
    end
  end)

  H.it("any gradient may be NULL", function()
    for i, L in ipairs {
      layer { n = 3, c = 4, h = 7, o = 6, k = 3, p = 1, g = 2 },
      layer { n = 2, c = 4, h = 5, o = 3, k = 1 },
      layer { n = 2, c = 3, h = 6, o = 3, k = 3, p = 1, g = 3 },
    } do
      local d = inputs(L, 9000 + 10 * i)
      local _, ref_gx, ref_gw, ref_gb = naive(L, d.X, d.W, d.B, d.R)
      local gx, gw, gb = grads(d)
      backward(d, gx, nil, nil)
      H.assert_close(H.values(gx), ref_gx, 1e-4, 1e-4)
      backward(d, nil, gw, nil)
      H.assert_close(H.values(gw), ref_gw, 1e-4, 1e-3)
      backward(d, nil, nil, gb, false)   -- bias alone needs no workspace
      H.assert_close(H.values(gb), ref_gb, 1e-4, 1e-3)
      backward(d, nil, nil, nil)
    end
  end)

  H.it("an empty batch writes nothing and leaves grad_weight and grad_bias as they were", function()
    for i, L in ipairs {
      layer { n = 0, c = 4, h = 6, o = 2, k = 3, p = 1 },                 -- im2col and GEMM
      layer { n = 0, c = 4, h = 5, o = 3, k = 1 },                        -- pointwise
      layer { n = 0, c = 4, h = 7, o = 4, k = 3, s = 2, p = 1, g = 4 },   -- depthwise
    } do
      local d = inputs(L, 9500 + 10 * i)                                  -- x and grad_out hold no values
      local ws = workspace(d.x, d.w, d.s)
      -- out and grad_x: empty views at the start of storage filled with 7, which must stay 7
      local out, out_untouched = H.empty_batch { 1, L.o, L.ho, L.wo }
      local gx, gx_untouched = H.empty_batch { 1, L.c, L.h, L.w }
      core.check(C.facet_conv2d_forward(out.h, d.x.h, d.w.h, ptr(d.b), ptr(ws), d.s))
      assert.are.same({ 0, L.o, L.ho, L.wo }, out:shape())
      out_untouched()
      -- the shapes are still checked: an empty out of another size is refused
      H.assert_error(function()
        core.check(C.facet_conv2d_forward(facet.empty({ 0, L.o, L.ho + 1, L.wo }, { device = H.device }).h, d.x.h,
          d.w.h, ptr(d.b), ptr(ws), d.s))
      end, "facet_conv2d_forward", "out [0x" .. L.o .. "x" .. (L.ho + 1))
      -- backward accumulates nothing into the gradients, pre-filled with known values
      local gw0, gb0 = randn({ L.o, L.cg, L.kh, L.kw }, 9600 + i), randn({ L.o }, 9700 + i)
      local gw, gb = gw0:clone(), gb0:clone()
      core.check(C.facet_conv2d_backward(gx.h, gw.h, gb.h, d.r.h, d.x.h, d.w.h, ptr(ws), d.s))
      assert.are.same({ 0, L.c, L.h, L.w }, gx:shape())
      gx_untouched()
      assert.are.same(H.values(gw0), H.values(gw))
      assert.are.same(H.values(gb0), H.values(gb))
      H.assert_error(function()
        core.check(C.facet_conv2d_backward(facet.empty({ 0, L.c + 1, L.h, L.w }, { device = H.device }).h, gw.h, gb.h,
          d.r.h, d.x.h, d.w.h, ptr(ws), d.s))
      end, "facet_conv2d_backward", "grad_x [0x" .. (L.c + 1))
    end
    -- through nn.Conv2d, which sizes its output and grad_input itself
    local m = nn_on(facet.nn.Conv2d(4, 6, 3, { stride = 2, padding = 1, groups = 2 }))
    local x = H.on(facet.zeros({ 0, 4, 7, 5 }))
    local y = m:forward(x)
    assert.are.same({ 0, 6, 4, 3 }, y:shape())
    m.grad_weight:copy(facet.full({ 6, 2, 3, 3 }, 0.5))
    m.grad_bias:copy(facet.tensor { 1, 2, 3, 4, 5, 6 })
    assert.are.same({ 0, 4, 7, 5 }, m:backward(x, H.on(facet.zeros({ 0, 6, 4, 3 }))):shape())
    assert.are.same(H.constant(6 * 2 * 3 * 3, 0.5), H.values(m.grad_weight))
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, H.values(m.grad_bias))
  end)

  H.it("the workspace size covers the layer; depthwise layers need none, pointwise ones none on the CPU", function()
    local function size(L)
      local d = inputs(L, 1)
      local e = ffi.new("int64_t[1]", -1)
      core.check(C.facet_conv2d_workspace_size(e, d.x.h, d.w.h, d.s))
      return tonumber(e[0])
    end
    local L = layer { n = 3, c = 4, h = 9, o = 6, k = 3, p = 1, g = 2 }
    local cuda = H.device == "cuda"
    if cuda then
      -- every image's columns (4 x 3 x 3 rows) and grad_out (6 rows) side by side,
      -- each row of 3 x 81 values padded to 248: the batched weight gradient
      assert.are.equal((36 + 6) * 248, size(L))
    else
      assert.is_true(size(L) >= L.cg * L.kh * L.kw * L.ho * L.wo)
    end
    -- pointwise: x's 4 planes and grad_out's 6 on CUDA, nothing on the CPU
    assert.are.equal(cuda and (4 + 6) * 248 or 0, size(layer { n = 3, c = 4, h = 9, o = 6, k = 1 }))
    assert.are.equal(0, size(layer { n = 1, c = 4, h = 9, o = 6, k = 1 }))
    assert.are.equal(0, size(layer { n = 3, c = 4, h = 9, o = 4, k = 3, p = 1, g = 4 }))
  end)

  -- runs fn, then restores facet's thread count (fn sets its own)
  local function keeping_threads(fn)
    local threads = facet.get_threads()
    local ok, err = pcall(fn)
    facet.set_threads(threads)
    if not ok then error(err, 0) end
  end

  -- a CPU layer's forward and backward on workspace ws (nil: none) against ref = { naive(...) };
  -- grad_x starts as NaN (overwritten), grad_weight and grad_bias at 1 (accumulated)
  -- scaled: F(4x4, 3x3)'s tolerance (close_scaled) instead of the elementwise one
  local function check_cpu(d, ws, ref, scaled)
    local L = d.L
    local function close(got, want, tol, atol)
      if scaled then close_scaled(got, want) else H.assert_close(got, want, tol, atol) end
    end
    local out = facet.empty({ L.n, L.o, L.ho, L.wo })
    core.check(C.facet_conv2d_forward(out.h, d.x.h, d.w.h, d.b.h, ptr(ws), d.s))
    close(H.values(out), ref[1], 1e-4, 1e-4)
    local gx = facet.full({ L.n, L.c, L.h, L.w }, 0 / 0)
    local gw, gb = facet.ones({ L.o, L.cg, L.kh, L.kw }), facet.ones({ L.o })
    core.check(C.facet_conv2d_backward(gx.h, gw.h, gb.h, d.r.h, d.x.h, d.w.h, ptr(ws), d.s))
    close(H.values(gx), ref[2], 1e-4, 1e-4)
    for k, t in ipairs { gw, gb } do
      local want = {}
      for j, v in ipairs(ref[k + 2]) do want[j] = v + 1 end
      close(H.values(t), want, 1e-4, 1e-3)
    end
  end

  it("CPU: any workspace of at least one slot and any thread count give the same result", function()
    keeping_threads(function()
      for i, L in ipairs {
        layer { n = 3, c = 4, h = 9, w = 8, o = 6, k = 3, s = 2, p = 1, g = 2 },
        layer { n = 5, c = 6, h = 8, o = 4, k = 1 },
        layer { n = 5, c = 4, h = 9, o = 4, k = 3, p = 1, g = 4 },
        layer { n = 4, c = 8, h = 16, o = 8, k = 3, p = 1 },
        layer { n = 3, c = 1, h = 9, o = 3, k = 3, p = 1 },
        layer { n = 3, c = 3, h = 9, o = 6, k = 3, s = 2, p = 1, g = 3 },
      } do
        local d = inputs(L, 500 + i, "cpu")
        local ref = { naive(L, d.X, d.W, d.B, d.R) }
        local slot = (L.cg == 1 or (L.kh == 1 and L.sh == 1 and L.ph == 0)) and 0 or L.cg * L.kh * L.kw * L.ho * L.wo
        for _, t in ipairs { 1, 2, 3, 4 } do
          facet.set_threads(t)
          for _, slots in ipairs { 1, 2, 3, 7 } do
            check_cpu(d, slot > 0 and facet.empty({ slot * slots }) or nil, ref)
          end
        end
      end
    end)
  end)

  it("CPU: an image with more columns than a band (1 MB) makes and uses them a band of output rows at a time", function()
    -- conv.c: over 2^20 floats of columns an image, bands of floor(2^18 / (K Wo)) output rows, the
    -- last one shorter; the workspace then holds one band a slot, and the results are the layer's
    keeping_threads(function()
      for i, L in ipairs {
        layer { n = 2, c = 16, h = 96, o = 4, k = 3, p = 1 },                          -- 18-row bands, then 6
        layer { n = 2, c = 40, h = 130, w = 190, o = 4, k = 3, s = 2, p = 2, d = 2, g = 2 },  -- strided, dilated
      } do
        local d = inputs(L, 700 + i, "cpu")
        local K = L.cg * L.kh * L.kw
        assert.is_true(K * L.ho * L.wo > 2 ^ 20, describe_layer(L))
        local band = K * math.floor(2 ^ 18 / (K * L.wo)) * L.wo
        local ref = { naive(L, d.X, d.W, d.B, d.R) }
        for _, t in ipairs { 1, 2 } do
          facet.set_threads(t)
          local e = ffi.new("int64_t[1]")
          core.check(C.facet_conv2d_workspace_size(e, d.x.h, d.w.h, d.s))
          assert.are.equal(band * t, tonumber(e[0]), describe_layer(L))
          for _, slots in ipairs { 1, t } do
            check_cpu(d, facet.empty({ band * slots }), ref)
          end
          H.assert_error(function()
            core.check(C.facet_conv2d_forward(facet.empty({ L.n, L.o, L.ho, L.wo }).h, d.x.h, d.w.h, d.b.h,
              facet.empty({ band - 1 }).h, d.s))
          end, "needs at least " .. band)
        end
      end
    end)
  end)

  -- sets FACET_CONV_WINOGRAD (nil: unset) around fn
  pcall(ffi.cdef, "int unsetenv(const char *name);")
  local function winograd_env(v, fn)
    local old = os.getenv("FACET_CONV_WINOGRAD")
    local function set(x)
      if x then ffi.C.setenv("FACET_CONV_WINOGRAD", x, 1) else ffi.C.unsetenv("FACET_CONV_WINOGRAD") end
    end
    set(v)
    local ok, err = pcall(fn)
    set(old)
    if not ok then error(err, 0) end
  end

  -- conv_winograd.c and core/cuda/conv_winograd.cu: 3x3, stride 1, one group, >= 16
  -- channels in and out, outputs of at least 4 x 4 run as Winograd F(4x4, 3x3), or
  -- F(2x2, 3x3) with FACET_CONV_WINOGRAD=2; outputs that are not a multiple of the tile
  -- leave part-empty tiles
  local function check_winograd(L, seed)
    local d = inputs(L, seed)
    local ref_out, ref_gx, ref_gw, ref_gb = naive(L, d.X, d.W, d.B, d.R)
    close_scaled(H.values(forward(d)), ref_out)
    local gx, gw, gb = grads(d)
    backward(d, gx, gw, L.bias and gb or nil)
    close_scaled(H.values(gx), ref_gx)
    close_scaled(H.values(gw), ref_gw)
    if L.bias then H.assert_close(H.values(gb), ref_gb, 1e-4, 1e-3) end
    winograd_env("2", function() check_layer(L, seed) end)   -- with the direct sum's accuracy
  end
  local winograd_layers = {
    layer { n = 2, c = 64, h = 9, w = 11, o = 64, k = 3, p = 1 },
    layer { n = 1, c = 64, h = 10, w = 13, o = 72, k = 3, bias = false },
    layer { n = 2, c = 65, h = 7, w = 8, o = 64, k = 3, p = 2 },
    layer { n = 1, c = 64, h = 8, w = 10, o = 66, k = 3, ph = 1, pw = 0 },
    layer { n = 1, c = 64, h = 6, w = 7, o = 64, k = 3, p = 3 },   -- padding beyond the kernel's reach
    layer { n = 2, c = 64, h = 2, o = 64, k = 3, p = 4 },          -- whole tiles in the padding
    -- rows of 19 tiles (three vectors of 8, the last partial) that runs of 64 tiles cut
    layer { n = 2, c = 64, h = 9, w = 37, o = 64, k = 3, p = 1 },
    -- rows of 16 tiles: whole vectors, 32 output columns
    layer { n = 1, c = 64, h = 8, w = 34, o = 64, k = 3, ph = 1, pw = 0 },
    -- the smallest: 16 channels each way, 4 x 5 outputs (rows of 3 tiles, the last half)
    layer { n = 3, c = 16, h = 4, w = 5, o = 16, k = 3, p = 1 },
    layer { n = 1, c = 17, h = 9, w = 4, o = 24, k = 3, p = 1 },
    -- F(4x4, 3x3): rows of 18 tiles (three vectors of 8), 2 rows an image, runs across images
    layer { n = 2, c = 32, h = 6, w = 70, o = 32, k = 3, p = 1 },
  }
  for i, L in ipairs(winograd_layers) do
    H.it("3x3 stride-1 layers (Winograd) match the naive loop: " .. describe_layer(L), function()
      check_winograd(L, 900 + 10 * i)
    end)
  end

  it("CPU: Winograd's workspace, its results beside im2col's, and FACET_CONV_WINOGRAD=0", function()
    keeping_threads(function()
      -- conv_winograd.c: P planes (36 or 16 transform elements) of O C transformed filters
      -- and 32 floats, then per thread P planes of V (C rows) and P of M (O rows) of 64 tiles
      -- and 8 spare columns, each plane 32 floats more, and 24 (or 16) row buffers of
      -- m ceil(Wo / m) + 2 floats rounded up to 32, and 64 more
      local cases = {
        -- F(4x4, 3x3): 2 x 4 x 9 tiles, runs of 64 tiles span the images and end inside a row
        { env = nil, L = layer { n = 2, c = 64, h = 13, w = 34, o = 72, k = 3, p = 1 },
          shared = 36 * (72 * 64 + 32), slot = 36 * ((64 * 72 + 32) + (72 * 72 + 32)) + 24 * 128 },
        -- F(2x2, 3x3): 2 x 7 x 9 tiles, the same
        { env = "2", L = layer { n = 2, c = 64, h = 13, w = 18, o = 72, k = 3, p = 1 },
          shared = 16 * (72 * 64 + 32), slot = 16 * ((64 * 72 + 32) + (72 * 72 + 32)) + 16 * 96 },
      }
      local L, d, ref, shared, slot
      for _, case in ipairs(cases) do
        L, shared, slot = case.L, case.shared, case.slot
        d = inputs(L, 950, "cpu")
        ref = { naive(L, d.X, d.W, d.B, d.R) }
        winograd_env(case.env, function()
          for _, t in ipairs { 1, 2, 3 } do
            facet.set_threads(t)
            local e = ffi.new("int64_t[1]")
            core.check(C.facet_conv2d_workspace_size(e, d.x.h, d.w.h, d.s))
            assert.are.equal(shared + math.min(t, L.n) * slot, tonumber(e[0]))   -- a slot an image at most
            for _, slots in ipairs { 1, t, 5 } do check_cpu(d, facet.empty({ shared + slots * slot }), ref, not case.env) end
            H.assert_error(function()
              core.check(C.facet_conv2d_forward(facet.empty({ L.n, L.o, L.ho, L.wo }).h, d.x.h, d.w.h, d.b.h,
                facet.empty({ shared + slot - 1 }).h, d.s))
            end, "needs at least " .. (shared + slot))
          end
        end)
      end
      -- the same layer through im2col: its workspace is the columns, and the results agree
      local wino
      winograd_env("2", function() wino = H.values(forward(d, facet.empty({ shared + slot }), "cpu")) end)
      winograd_env("0", function()
        facet.set_threads(1)
        local e = ffi.new("int64_t[1]")
        core.check(C.facet_conv2d_workspace_size(e, d.x.h, d.w.h, d.s))
        assert.are.equal(64 * 9 * L.ho * L.wo, tonumber(e[0]))
        local cols = H.values(forward(d, facet.empty({ tonumber(e[0]) }), "cpu"))
        H.assert_close(wino, cols, 1e-4, 1e-4)
        check_cpu(d, facet.empty({ tonumber(e[0]) }), ref)
      end)
      -- thin layers and small outputs stay on im2col: 15 input or output channels, 3 output
      -- rows or columns
      facet.set_threads(1)
      for _, T in ipairs { layer { n = 1, c = 15, h = 8, o = 16, k = 3, p = 1 },
                           layer { n = 1, c = 16, h = 8, o = 15, k = 3, p = 1 },
                           layer { n = 1, c = 16, h = 3, w = 9, o = 16, k = 3, p = 1 },
                           layer { n = 1, c = 16, h = 9, w = 3, o = 16, k = 3, p = 1 } } do
        local dt = inputs(T, 960, "cpu")
        local e = ffi.new("int64_t[1]")
        core.check(C.facet_conv2d_workspace_size(e, dt.x.h, dt.w.h, dt.s))
        assert.are.equal(T.c * 9 * T.ho * T.wo, tonumber(e[0]), describe_layer(T))
      end
    end)
  end)

  it("CPU: Winograd F(4x4, 3x3) up to 32 MiB of transformed filters, F(2x2, 3x3) beyond", function()
    keeping_threads(function()
      facet.set_threads(1)
      local function ws_of(L)
        local d = inputs(L, 980, "cpu")
        local e = ffi.new("int64_t[1]")
        core.check(C.facet_conv2d_workspace_size(e, d.x.h, d.w.h, d.s))
        return tonumber(e[0])
      end
      -- 256 -> 512: 36 x 131,072 floats (18 MiB); 4 x 6 outputs, 2 tiles of 4 x 4, ld 2 + 8,
      -- row buffers of 4 x 2 + 2 floats
      local shared4 = 36 * (512 * 256 + 32)
      assert.are.equal(shared4 + 36 * ((256 * 10 + 32) + (512 * 10 + 32)) + 24 * 96,
        ws_of(layer { n = 1, c = 256, h = 4, w = 6, o = 512, k = 3, p = 1 }))
      -- 512 -> 512 would be 36 x 262,144 floats (36 MiB): 16 planes, 2 x 3 tiles of 2 x 2
      local shared2 = 16 * (512 * 512 + 32)
      assert.are.equal(shared2 + 16 * ((512 * 14 + 32) + (512 * 14 + 32)) + 16 * 96,
        ws_of(layer { n = 1, c = 512, h = 4, w = 6, o = 512, k = 3, p = 1 }))
    end)
  end)

  H.gpu_it("CUDA: Winograd F(4x4, 3x3) by default, F(2x2, 3x3) with FACET_CONV_WINOGRAD=2 or TF32, " ..
    "im2col with =0 or a workspace without room for one image's tiles", function()
    -- core/cuda/conv_winograd.cu: chunks of the images whose P (C + O) x tiles (a row of
    -- tiles rounded up to 8 where that fits) fit in the workspace; the paths' results
    -- differ in their rounding, which tells them apart
    local function run(L, d, elems, env)
      local ws = facet.empty({ elems }, { device = "cuda" })
      local out, gx, gw, gb
      winograd_env(env, function()
        out = H.values(forward(d, ws, "cuda"))
        gx, gw, gb = facet.zeros({ L.n, L.c, L.h, L.w }, { device = "cuda" }),
          facet.zeros({ L.o, L.c, 3, 3 }, { device = "cuda" }), facet.zeros({ L.o }, { device = "cuda" })
        backward(d, gx, gw, gb, ws)
      end)
      return { out, H.values(gx), H.values(gw) }
    end
    local function check(got, ref)
      for k = 1, 3 do close_scaled(got[k], ref[k]) end
    end
    local function same(a, b)
      for k = 1, 3 do
        for i = 1, #a[k] do if a[k][i] ~= b[k][i] then return false end end
      end
      return true
    end
    -- 3 images of 3 x 3 tiles of 4 x 4 (rows of 16 floats): 36 x 72 x 16 floats an image
    local L = layer { n = 3, c = 32, h = 9, w = 10, o = 40, k = 3, p = 1 }
    local d = inputs(L, 990, "cuda")
    local ref = { naive(L, d.X, d.W, d.B, d.R) }
    ref[4] = nil
    local _, big = workspace(d.x, d.w, d.s)
    local f4, f4_chunked = run(L, d, big), run(L, d, 36 * 72 * 16)
    local f2, cols = run(L, d, big, "2"), run(L, d, big, "0")
    for _, r in ipairs { f4, f4_chunked, f2, cols } do check(r, ref) end
    assert.is_false(same(f4, cols))
    assert.is_false(same(f2, cols))
    assert.is_false(same(f4, f2))
    -- im2col's minimum workspace (32 x 9 x 90 floats) holds one image's 9 tiles, not 16:
    -- Winograd with rows of 9
    local tight = run(L, d, 32 * 9 * 90)
    check(tight, ref)
    assert.is_false(same(tight, run(L, d, 32 * 9 * 90, "0")))
    -- TF32 takes F(2x2, 3x3)
    facet.cuda.set_tf32(true)
    local ok, err = pcall(function()
      local t_default, t_f2 = run(L, d, big), run(L, d, big, "2")
      assert.is_true(same(t_default, t_f2))
      assert.is_false(same(t_default, run(L, d, big, "0")))
    end)
    facet.cuda.set_tf32(false)
    if not ok then error(err, 0) end
    -- 16 -> 128 channels on 8 x 8: im2col's minimum workspace (16 x 9 x 64 floats) holds
    -- no image of Winograd's tiles (36 x 144 x 4): im2col, and right
    local T = layer { n = 2, c = 16, h = 8, o = 128, k = 3, p = 1 }
    local dt = inputs(T, 995, "cuda")
    local tref = { naive(T, dt.X, dt.W, dt.B, dt.R) }
    tref[4] = nil
    local small = run(T, dt, 16 * 9 * 64)
    check(small, tref)
    assert.is_true(same(small, run(T, dt, 16 * 9 * 64, "0")))
    -- and with room for one image's 4 tiles, Winograd (rows of 4: not rounded up to 8)
    local wt = run(T, dt, 36 * 144 * 4)
    check(wt, tref)
    assert.is_false(same(wt, run(T, dt, 36 * 144 * 4, "0")))
  end)

  it("CPU: a Winograd layer's large values keep the direct sum's relative accuracy", function()
    -- inputs of magnitude 1e3, filter taps of magnitudes 1 and 1e-3 side by side: F(2x2, 3x3)'s
    -- transforms only add and halve, F(4x4, 3x3)'s scale by at most 8 and 1/24, so the error
    -- stays within the rounding of a 64-channel sum of the largest terms (64 x 2e-6 of the
    -- largest output), as the direct sum's
    local L = layer { n = 2, c = 64, h = 10, o = 64, k = 3, p = 1 }
    local d = inputs(L, 970, "cpu")
    d.x = d.x * 1000
    local wv = H.values(d.w)
    for k = 1, #wv, 2 do wv[k] = wv[k] * 1e-3 end
    d.w = from_flat({ L.o, L.cg, L.kh, L.kw }, wv):to("cpu")
    d.X, d.W = H.values(d.x), H.values(d.w)
    local ref = { naive(L, d.X, d.W, d.B, d.R) }
    local big = 0
    for k = 1, #ref[1] do big = math.max(big, math.abs(ref[1][k])) end
    for _, env in ipairs { false, "2" } do
      winograd_env(env or nil, function()
        local e = ffi.new("int64_t[1]")
        core.check(C.facet_conv2d_workspace_size(e, d.x.h, d.w.h, d.s))
        local out = H.values(forward(d, facet.empty({ tonumber(e[0]) }), "cpu"))
        for k = 1, #ref[1] do assert.is_true(math.abs(out[k] - ref[1][k]) <= 2e-6 * big * 64, tostring(k)) end
      end)
    end
  end)

  H.it("errors name the function and the shapes", function()
    local L = layer { n = 2, c = 4, h = 6, o = 6, k = 3, p = 1, g = 2 }
    local d = inputs(L, 42)
    local ws = workspace(d.x, d.w, d.s)
    local out = facet.empty({ 2, 6, 6, 6 }, { device = H.device })
    local fwd = "facet_conv2d_forward"
    local function f(o, x, w, b, wsp, s)
      return function() core.check(C.facet_conv2d_forward(ptr(o), ptr(x), ptr(w), ptr(b), ptr(wsp), s)) end
    end
    local function with(t)
      local s = ffi.new("facet_conv2d_params")
      ffi.copy(s, d.s, ffi.sizeof(s))
      for k, v in pairs(t) do s[k] = v end
      return s
    end
    -- the good call first, so the failures below are the argument's fault
    f(out, d.x, d.w, d.b, ws, d.s)()
    -- wrong input channels for weight (C/groups = 2)
    H.assert_error(f(out, d.x, randn({ 6, 4, 3, 3 }, 1), d.b, ws, d.s), fwd, "C/groups = 2",
      "[6x4x3x3 float32 " .. H.device .. "]", "[2x4x6x6 float32 " .. H.device .. "]")
    -- groups that do not divide C or O, and groups 0
    H.assert_error(f(out, d.x, d.w, d.b, ws, with { groups = 3 }), fwd, "groups 3 must divide")
    H.assert_error(f(out, d.x, randn({ 5, 2, 3, 3 }, 1), nil, ws, d.s), fwd, "groups 2 must divide")
    H.assert_error(f(out, d.x, d.w, d.b, ws, with { groups = 0 }), fwd, "groups >= 1", "groups 0")
    -- strides, pads, dilations
    H.assert_error(f(out, d.x, d.w, d.b, ws, with { stride_h = 0 }), fwd, "stride 0x1")
    H.assert_error(f(out, d.x, d.w, d.b, ws, with { pad_w = -1 }), fwd, "pad 1x-1")
    H.assert_error(f(out, d.x, d.w, d.b, ws, with { dilation_w = 0 }), fwd, "dilation 1x0")
    H.assert_error(f(out, d.x, d.w, d.b, ws, nil), fwd, "params (facet_conv2d_params) is NULL")
    -- kernel larger than the padded input
    H.assert_error(f(out, d.x, d.w, d.b, ws, with { pad_h = 0, dilation_h = 4 }), fwd, "larger than the padded input")
    -- out shape from the formula
    H.assert_error(f(facet.empty({ 2, 6, 5, 6 }, { device = H.device }), d.x, d.w, d.b, ws, d.s), fwd,
      "out [2x6x5x6", "2x6x6x6")
    H.assert_error(f(out, d.x, d.w, d.b, ws, with { stride_h = 2 }), fwd, "out", "2x6x3x6", "stride 2x1")
    -- bias
    H.assert_error(f(out, d.x, d.w, randn({ 5 }, 1), ws, d.s), fwd, "bias [5 float32", "vector of 6")
    -- workspace too small, or missing where needed
    H.assert_error(f(out, d.x, d.w, d.b, facet.empty({ 10 }, { device = H.device }), d.s), fwd,
      "workspace [10 float32", "needs at least")
    H.assert_error(f(out, d.x, d.w, d.b, nil, d.s), fwd, "workspace is NULL")
    -- dtypes, ranks, NULLs, aliasing
    H.assert_error(f(out, d.x:int(), d.w, d.b, ws, d.s), fwd, "x must be float32", "int32")
    H.assert_error(f(out, d.x, d.w:int(), d.b, ws, d.s), fwd, "weight must be float32")
    H.assert_error(f(out, d.x:reshape(2, 4, 36), d.w, d.b, ws, d.s), fwd, "4-D", "[2x4x36 float32")
    H.assert_error(f(nil, d.x, d.w, d.b, ws, d.s), fwd, "out is NULL")
    H.assert_error(f(out, nil, d.w, d.b, ws, d.s), fwd, "x is NULL")
    local sq = layer { n = 2, c = 4, h = 6, o = 4, k = 3, p = 1 }
    local e = inputs(sq, 3)
    H.assert_error(f(e.x, e.x, e.w, e.b, workspace(e.x, e.w, e.s), e.s), fwd, "overlaps")
    H.assert_error(function()
      core.check(C.facet_conv2d_workspace_size(nil, d.x.h, d.w.h, d.s))
    end, "facet_conv2d_workspace_size", "elements is NULL")
    H.assert_error(function()
      core.check(C.facet_conv2d_workspace_size(ffi.new("int64_t[1]"), d.x.h, d.w.h, with { groups = 3 }))
    end, "facet_conv2d_workspace_size", "groups 3")

    -- backward
    local bwd = "facet_conv2d_backward"
    local gx, gw, gb = grads(d)
    local function b(gxp, gwp, gbp, go, wsp)
      return function()
        core.check(C.facet_conv2d_backward(ptr(gxp), ptr(gwp), ptr(gbp), ptr(go), d.x.h, d.w.h, ptr(wsp), d.s))
      end
    end
    b(gx, gw, gb, d.r, ws)()
    H.assert_error(b(gx, gw, gb, facet.empty({ 2, 6, 6, 5 }, { device = H.device }), ws), bwd, "grad_out [2x6x6x5")
    H.assert_error(b(gx, gw, gb, nil, ws), bwd, "grad_out is NULL")
    H.assert_error(b(facet.empty({ 2, 4, 6, 5 }, { device = H.device }), gw, gb, d.r, ws), bwd, "grad_x [2x4x6x5")
    H.assert_error(b(gx, facet.empty({ 6, 4, 3, 3 }, { device = H.device }), gb, d.r, ws), bwd, "grad_weight [6x4x3x3")
    H.assert_error(b(gx, gw, facet.empty({ 4 }, { device = H.device }), d.r, ws), bwd, "grad_bias [4 float32")
    H.assert_error(b(gx, gw, gb, d.r, facet.empty({ 3 }, { device = H.device })), bwd, "workspace [3 float32")
    H.assert_error(b(gx, gw, gb, d.r, nil), bwd, "workspace is NULL")
    H.assert_error(b(gx, gw, gb, d.r:int(), ws), bwd, "grad_out must be float32")
    local sgx = facet.empty({ 2, 4, 6, 6 }, { device = H.device })
    H.assert_error(function()
      core.check(C.facet_conv2d_backward(sgx.h, nil, nil, sgx.h, e.x.h, e.w.h, ptr(workspace(e.x, e.w, e.s)), e.s))
    end, bwd, "grad_x [2x4x6x6", "overlaps grad_out")
  end)
end)
