--- The layers whose kernels take float16 / bfloat16 natively (Conv2d,
-- BatchNorm1d/2d, ReLU, Sigmoid, Tanh, PReLU, MaxPool2d, AvgPool2d,
-- AdaptiveAvgPool2d, Upsample, Dropout, Linear; docs/mixed-precision.md), and
-- the heads with a 16-bit embedding. The spec of a native 16-bit layer: its output and input gradient
-- are "widen the 16-bit input (exactly) to float32, run the float32 layer,
-- round once" (backward: grad_out, x and the 16-bit output widened), and
-- its parameter gradients and BatchNorm's statistics are the
-- float32 layer's, bit for bit where the float32 operations are the same
-- (every layer on the CPU, and every CUDA kernel but the convolutions' GEMMs),
-- else (CUDA convolutions: cublasGemmEx sums in another order than SGEMM)
-- within a relative norm error of a few roundings. The cases run on
-- FACET_DEVICE (cpu, or cuda on a GPU host).
local ffi = require "ffi"
local H = require "support.device"
local facet = H.facet
local core = require "facet.core"
local C = core.C

local DTYPES = { "float16", "bfloat16" }
-- relative rounding of one result: 2^-11 (float16), 2^-8 (bfloat16)
local EPS = { float16 = 2 ^ -11, bfloat16 = 2 ^ -8 }

local function norm(t) return math.sqrt((t * t):sum()) end

-- the 16-bit patterns of a tensor, as a Lua list
local function bits(t)
  local c = t:to("cpu"):contiguous()
  local p, r = c:bits_ptr(), {}
  for i = 0, c:numel() - 1 do r[i + 1] = p[i] end
  return r
end

-- a 16-bit result against a float32 reference rounded once: the same bits,
-- or (exact = false) a relative norm error below `ulps` roundings
local function same16(got, ref32, what, exact, ulps)
  local dtype = got:dtype()
  assert.are.same(ref32:shape(), got:shape(), what)
  local ref = ref32:to(dtype)
  if exact then
    local a, b = bits(got), bits(ref)
    for i = 1, #b do
      if a[i] ~= b[i] then
        error(("%s %s element %d: bits 0x%04x, the rounded float32 result is 0x%04x (%g vs %g)"):format(what, dtype,
          i, a[i], b[i], got:to("cpu"):float():contiguous():data_ptr()[i - 1], ref32:to("cpu"):contiguous():data_ptr()[i - 1]), 2)
      end
    end
  else
    local d = got:float():to("cpu") - ref32:to("cpu")
    local e = norm(d) / math.max(norm(ref32:to("cpu")), 1e-30)
    assert.is_true(e <= (ulps or 4) * EPS[dtype], ("%s %s: relative error %g"):format(what, dtype, e))
  end
end

-- float32 tensors: the same values bit for bit, or within relative norm tol
local function same32(got, ref, what, exact, tol)
  assert.are.equal("float32", got:dtype(), what)
  local a, b = H.values(got), H.values(ref)
  assert.are.equal(#b, #a, what)
  if exact then
    for i = 1, #b do
      if a[i] ~= b[i] then error(("%s element %d: %.9g, float32 path %.9g"):format(what, i, a[i], b[i]), 2) end
    end
  else
    local e = norm(got:to("cpu") - ref:to("cpu")) / math.max(norm(ref:to("cpu")), 1e-30)
    assert.is_true(e <= tol, ("%s: relative error %g, tolerance %g"):format(what, e, tol))
  end
end

-- One layer, forward and backward, 16-bit against widen -> float32 -> round.
-- o: exact (default true), ulps (for exact = false), train (default true),
-- grad_tol (parameter gradients when not exact), round_weight (the float32
-- reference gets the weight rounded to 16 bits: a 16-bit GEMM's operand)
local function check_layer(build, shape, dtype, o)
  o = o or {}
  local exact = o.exact ~= false
  facet.manual_seed(3)
  local m16 = H.module(build())
  facet.manual_seed(3)
  local m32 = H.module(build())
  if o.round_weight then m32.weight:copy(m32.weight:to(dtype)) end
  if o.train == false then
    m16:evaluate()
    m32:evaluate()
  end
  local x = facet.randn(shape, { seed = 11 }):to(dtype):to(H.device)
  local x32 = x:float()
  local y = m16:forward(x)
  local y32 = m32:forward(x32)
  assert.are.equal(dtype, y:dtype())
  same16(y, y32, m16:describe() .. " output", exact, o.ulps)
  local g = facet.randn(y:shape(), { seed = 12 }):to(dtype):to(H.device)
  m16:zero_grad()
  m32:zero_grad()
  -- backward's inputs widened too: Sigmoid and Tanh differentiate through
  -- their (16-bit) output
  m32.output = y:float()
  local gi = m16:backward(x, g)
  local gi32 = m32:backward(x32, g:float())
  assert.are.equal(dtype, gi:dtype())
  same16(gi, gi32, m16:describe() .. " grad_input", exact, o.ulps)
  local p16, p32 = m16:named_parameters(), m32:named_parameters()
  assert.are.equal(#p32, #p16)
  for i, p in ipairs(p16) do
    assert.are.equal("float32", p.param:dtype(), p.name)
    same32(p.grad, p32[i].grad, m16:describe() .. " grad " .. p.name, exact, o.grad_tol or 1e-2)
  end
  for _, k in ipairs { "running_mean", "running_var" } do
    if m16[k] then same32(m16[k], m32[k], m16:describe() .. " " .. k, exact, 1e-3) end
  end
  if o.widened then assert.is_truthy(m16.buffers.amp_x, "the widening path")
  else
    for name in pairs(m16.buffers) do assert.is_nil(name:match("^amp_"), "no widening buffer: " .. name) end
  end
end

-- a process group of two ranks holding the same batch: allreduce doubles
local twin = { size = function() return 2 end, allreduce = function(_, t) t:mul_(2) return t end }

describe("native 16-bit layers: widen -> float32 -> round once", function()
  local nn = facet.nn
  for _, dtype in ipairs(DTYPES) do
    H.it(dtype .. " activations: ReLU, Sigmoid, Tanh, PReLU (per channel, shared, 2-D)", function()
      check_layer(function() return nn.ReLU() end, { 2, 3, 5, 7 }, dtype)
      check_layer(function() return nn.Sigmoid() end, { 2, 3, 5, 7 }, dtype)
      check_layer(function() return nn.Tanh() end, { 3, 5, 3 }, dtype)
      check_layer(function() return nn.PReLU(3, 0.2) end, { 2, 3, 5, 7 }, dtype)
      check_layer(function() return nn.PReLU(1, 0.3) end, { 2, 3, 4, 3 }, dtype)
      check_layer(function() return nn.PReLU(5) end, { 7, 5 }, dtype)
    end)

    H.it(dtype .. " pools: max and average with strides, padding, odd shapes; the global average", function()
      check_layer(function() return nn.MaxPool2d(3, { stride = 2, padding = 1 }) end, { 2, 3, 9, 7 }, dtype)
      check_layer(function() return nn.MaxPool2d(2) end, { 2, 3, 6, 8 }, dtype)
      check_layer(function() return nn.AvgPool2d(2) end, { 2, 3, 7, 5 }, dtype)
      check_layer(function() return nn.AvgPool2d(3, { stride = 2, padding = 1, count_include_pad = false }) end,
        { 1, 4, 9, 6 }, dtype)
      -- the global average reduces in double and rounds once to 16 bits, where
      -- the float32 path rounds to float32 first: at most one rounding apart
      check_layer(function() return nn.AdaptiveAvgPool2d(1) end, { 3, 4, 5, 3 }, dtype, { exact = false, ulps = 1 })
    end)

    H.it(dtype .. " BatchNorm2d / BatchNorm1d: training and evaluation, float32 statistics", function()
      check_layer(function() return nn.BatchNorm2d(3) end, { 4, 3, 5, 3 }, dtype)
      check_layer(function() return nn.BatchNorm2d(3) end, { 2, 3, 4, 5 }, dtype, { train = false })
      check_layer(function() return nn.BatchNorm1d(5) end, { 6, 5 }, dtype)
      check_layer(function() return nn.BatchNorm1d(20, { affine = false }) end, { 3, 20 }, dtype)
      check_layer(function() return nn.BatchNorm1d(5) end, { 6, 5 }, dtype, { train = false })
    end)

    -- synchronised BN's kernels (facet_batchnorm_stats, the evaluation forward with the
    -- global statistics, the local sums, facet_batchnorm_backward_elemt) take 16 bits too
    H.it(dtype .. " synchronised BatchNorm2d / BatchNorm1d natively (two ranks with the same batch)", function()
      local function build(cls, n, opts)
        return function()
          local m = cls(n, opts)
          m.sync = twin
          return m
        end
      end
      check_layer(build(nn.BatchNorm2d, 3), { 4, 3, 5, 3 }, dtype)
      check_layer(build(nn.BatchNorm1d, 5, { affine = false }), { 6, 5 }, dtype)
    end)

    H.it(dtype .. " Conv2d: im2col with stride and padding, pointwise, depthwise, grouped and dilated", function()
      -- CUDA's 16-bit GEMMs (tensor cores) sum in another order than SGEMM
      local o = { exact = H.device == "cpu", ulps = 6, grad_tol = 16 * EPS[dtype] }
      check_layer(function() return nn.Conv2d(3, 4, 3, { stride = 2, padding = 1 }) end, { 3, 3, 9, 7 }, dtype, o)
      check_layer(function() return nn.Conv2d(4, 6, 1, { bias = false }) end, { 2, 4, 5, 5 }, dtype, o)
      check_layer(function() return nn.Conv2d(4, 4, 3, { groups = 4, padding = 1 }) end, { 2, 4, 6, 5 }, dtype, o)
      check_layer(function() return nn.Conv2d(4, 6, { 3, 2 }, { groups = 2, dilation = 2, stride = { 1, 2 } }) end,
        { 2, 4, 8, 9 }, dtype, o)
    end)

    H.it(dtype .. " Upsample (nearest, bilinear, align_corners, shrinking) and Dropout", function()
      check_layer(function() return nn.Upsample { scale = 2 } end, { 2, 3, 4, 5 }, dtype)
      check_layer(function() return nn.Upsample { size = { 7, 9 }, mode = "bilinear" } end, { 2, 3, 4, 5 }, dtype)
      check_layer(function() return nn.Upsample { size = { 6, 3 }, mode = "bilinear", align_corners = true } end,
        { 1, 2, 4, 5 }, dtype)
      check_layer(function() return nn.Upsample { size = { 3, 2 } } end, { 2, 2, 7, 5 }, dtype)
      -- the two modules draw the same mask (one seed, one offset)
      check_layer(function() return nn.Dropout(0.3) end, { 4, 3, 5, 5 }, dtype)
      check_layer(function() return nn.Dropout(0.5) end, { 6, 7 }, dtype)
    end)

    H.it(dtype .. " Linear: 16-bit GEMMs with the weight rounded to 16 bits, float32 sums, bias and gradients", function()
      -- CUDA's 16-bit GEMMs (tensor cores) sum in another order than SGEMM
      local o = { exact = H.device == "cpu", ulps = 6, grad_tol = 16 * EPS[dtype], round_weight = true }
      check_layer(function() return nn.Linear(12, 7) end, { 5, 12 }, dtype, o)
      check_layer(function() return nn.Linear(9, 4, false) end, { 3, 9 }, dtype, o)
      -- the 16-bit weight follows the float32 master weight from call to call
      local m = H.module(nn.Linear(6, 3))
      local x = facet.randn({ 2, 6 }, { seed = 9 }):to(dtype):to(H.device)
      m:forward(x)
      m.weight:mul_(-2)
      local y, y32 = m:forward(x), x:float():matmul(m.weight:to(dtype):float(), { transpose_b = true }) + m.bias
      same16(y, y32, "Linear after a weight update", H.device == "cpu", 6)
    end)

    H.it(dtype .. " a stack of native layers keeps the dtype end to end and allocates its buffers once", function()
      local m = H.module(nn.Sequential(nn.Conv2d(3, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.PReLU(4),
        nn.MaxPool2d(2), nn.AvgPool2d(2)))
      local x = facet.randn({ 2, 3, 8, 8 }, { seed = 5 }):to(dtype):to(H.device)
      local function step()
        local y = m:forward(x)
        local gi = m:backward(x, y)
        assert.are.equal(dtype, gi:dtype())
        local list = {}
        for _, c in ipairs(m.modules) do list[#list + 1] = c.buffers.output; list[#list + 1] = c.buffers.grad_input end
        return list, y
      end
      local a, y = step()
      assert.are.equal(dtype, y:dtype())
      local b = step()
      for i = 1, #a do assert.is_true(rawequal(a[i], b[i]), "buffer " .. i) end
    end)
  end
end)

describe("heads with a 16-bit embedding", function()
  -- the head widens x (exactly), runs in float32 and rounds dL/dx once: the
  -- loss and the parameter gradients are those of x:float(), bit for bit
  for _, name in ipairs { "softmax", "arc", "mv-arc", "l2-softmax" } do
    for _, dtype in ipairs(DTYPES) do
      H.it(("%s with a %s embedding: the float32 head's loss and gradients, dL/dx rounded once"):format(name, dtype),
        function()
          local function make()
            facet.manual_seed(9)
            return facet.heads.new(name, { classes = 10, dim = 8 }):to(H.device)
          end
          local h16, h32 = make(), make()
          local y = facet.tensor({ 0, 3, 9, 3, 5, 1, 7 }, { dtype = "int64" }):to(H.device)
          local x = facet.randn({ 7, 8 }, { seed = 4 }):to(dtype):to(H.device)
          for step = 1, 2 do      -- the second step reuses the buffers
            local l16, l32 = h16:forward(x, y), h32:forward(x:float(), y)
            assert.are.equal(l32, l16)
            local d16, d32 = h16:backward(), h32:backward()
            assert.are.equal(dtype, d16:dtype())
            same16(d16, d32, name .. " dL/dx step " .. step, true)
          end
          h16:finish_grad()
          h32:finish_grad()
          same32(h16.grad_weight, h32.grad_weight, name .. " grad_weight", true)
        end)
    end
  end

  it("a class-sharded head (2 simulated ranks) with a bfloat16 embedding: the float32 run's loss, dL/dx rounded once",
    function()
      local LG = require "support.local_group"
      local x = facet.randn({ 6, 8 }, { seed = 21 }):bfloat16()
      local y = facet.tensor({ 0, 4, 9, 2, 2, 7 }, { dtype = "int64" })
      local results = LG.run(2, function(g)
        local rows = { x:narrow(1, 1 + 3 * g:rank(), 3):contiguous(), y:narrow(1, 1 + 3 * g:rank(), 3):contiguous() }
        local function run(xr)
          local head = facet.heads.new("mv-arc", { classes = 10, dim = 8, seed = 5, shard = true, group = g })
          local loss = head:forward(xr, rows[2])
          return loss, head:backward():clone()
        end
        local l16, d16 = run(rows[1])
        local l32, d32 = run(rows[1]:float())
        return { l16 = l16, l32 = l32, d16 = d16, d32 = d32 }
      end)
      for r, res in ipairs(results) do
        assert.are.equal(res.l32, res.l16, "rank " .. r)
        assert.are.equal("bfloat16", res.d16:dtype())
        same16(res.d16, res.d32, "sharded dL/dx rank " .. r, true)
      end
    end)

  H.it("an integer embedding is refused naming the dtypes the head takes", function()
    local h = facet.heads.new("arc", { classes = 4, dim = 3 }):to(H.device)
    local y = facet.tensor({ 0, 1 }, { dtype = "int64" }):to(H.device)
    H.assert_error(function() h:forward(facet.zeros({ 2, 3 }, { dtype = "int32" }):to(H.device), y) end,
      "arc:forward", "x must be B x 3 float32, float16 or bfloat16", "int32")
  end)
end)

describe("native 16-bit layers: bad dtype mixes are clear errors", function()
  local function t(shape, dtype) return facet.zeros(shape, { dtype = dtype }):to(H.device) end
  local function h(x) return x and x.h or nil end

  H.it("conv2d: out / grad of another dtype than x, 16-bit weight, bias or grad_weight", function()
    local s = ffi.new("facet_conv2d_params", { 1, 1, 0, 0, 1, 1, 1 })
    local x, w = t({ 1, 2, 4, 4 }, "float16"), t({ 3, 2, 3, 3 })
    local ws = t({ 2 * 9 * 4 })
    H.assert_error(function() core.check(C.facet_conv2d_forward(t({ 1, 3, 2, 2 }, "bfloat16").h, x.h, w.h, nil, ws.h, s)) end,
      "facet_conv2d_forward", "out must be float16", "[1x3x2x2 bfloat16")
    H.assert_error(function() core.check(C.facet_conv2d_forward(t({ 1, 3, 2, 2 }).h, x.h, w.h, nil, ws.h, s)) end,
      "facet_conv2d_forward", "out must be float16")
    H.assert_error(function()
      core.check(C.facet_conv2d_forward(t({ 1, 3, 2, 2 }, "float16").h, x.h, t({ 3, 2, 3, 3 }, "float16").h, nil, ws.h, s))
    end, "facet_conv2d_forward", "weight must be float32")
    H.assert_error(function()
      core.check(C.facet_conv2d_forward(t({ 1, 3, 2, 2 }, "float16").h, x.h, w.h, t({ 3 }, "float16").h, ws.h, s))
    end, "facet_conv2d_forward", "bias", "float32")
    H.assert_error(function()
      core.check(C.facet_conv2d_backward(nil, t({ 3, 2, 3, 3 }, "float16").h, nil, t({ 1, 3, 2, 2 }, "float16").h, x.h,
        w.h, ws.h, s))
    end, "facet_conv2d_backward", "grad_weight must be float32")
    H.assert_error(function()
      core.check(C.facet_conv2d_forward(t({ 1, 3, 2, 2 }).h, t({ 1, 2, 4, 4 }, "int32").h, w.h, nil, ws.h, s))
    end, "facet_conv2d_forward", "x must be float32, float16 or bfloat16")
  end)

  H.it("batchnorm: out of another dtype, 16-bit weight or running statistics", function()
    local x = t({ 4, 3 }, "bfloat16")
    local v = function(dtype) return t({ 3 }, dtype) end
    H.assert_error(function()
      core.check(C.facet_batchnorm_forward(t({ 4, 3 }, "float16").h, v().h, v().h, nil, nil, x.h, nil, nil, 1, 0.1, 1e-5))
    end, "facet_batchnorm_forward", "out must be bfloat16")
    H.assert_error(function()
      core.check(C.facet_batchnorm_forward(t({ 4, 3 }, "bfloat16").h, v().h, v().h, nil, nil, x.h, v("bfloat16").h, nil,
        1, 0.1, 1e-5))
    end, "facet_batchnorm_forward", "weight must be float32")
    H.assert_error(function()
      core.check(C.facet_batchnorm_forward(t({ 4, 3 }, "bfloat16").h, v().h, v().h, v("bfloat16").h, v().h, x.h, nil,
        nil, 1, 0.1, 1e-5))
    end, "facet_batchnorm_forward", "running_mean must be float32")
    H.assert_error(function()
      core.check(C.facet_batchnorm_backward(t({ 4, 3 }).h, nil, nil, t({ 4, 3 }, "bfloat16").h, x.h, nil, v().h, v().h, 1))
    end, "facet_batchnorm_backward", "grad_x must be bfloat16")
  end)

  H.it("activation and pool: mixed dtypes, a 16-bit slope, an integer input", function()
    local x = t({ 2, 3, 4, 4 }, "float16")
    H.assert_error(function() core.check(C.facet_activation_forward(t({ 2, 3, 4, 4 }, "bfloat16").h, x.h, C.FACET_ACTIVATION_RELU, nil)) end,
      "facet_activation_forward", "out must be float16")
    H.assert_error(function()
      core.check(C.facet_activation_forward(t({ 2, 3, 4, 4 }, "float16").h, x.h, C.FACET_ACTIVATION_PRELU, t({ 3 }, "float16").h))
    end, "facet_activation_forward", "slope must be float32")
    H.assert_error(function()
      core.check(C.facet_activation_backward(t({ 2, 3, 4, 4 }, "float16").h, nil, t({ 2, 3, 4, 4 }).h, x.h, nil,
        C.FACET_ACTIVATION_RELU, nil))
    end, "facet_activation_backward", "grad_out must be float16")
    local p = ffi.new("facet_pool2d_params", { 2, 2, 2, 2, 0, 0, 1 })
    H.assert_error(function() core.check(C.facet_pool2d_forward(t({ 2, 3, 2, 2 }).h, nil, x.h, C.FACET_POOL_KIND_AVG, p)) end,
      "facet_pool2d_forward", "out must be float16")
    H.assert_error(function()
      core.check(C.facet_pool2d_forward(t({ 2, 3, 2, 2 }).h, nil, t({ 2, 3, 4, 4 }, "int32").h, C.FACET_POOL_KIND_AVG, p))
    end, "facet_pool2d_forward", "x must be float32, float16 or bfloat16")
    H.assert_error(function()
      core.check(C.facet_pool2d_backward(x.h, t({ 2, 3, 2, 2 }, "bfloat16").h, nil, C.FACET_POOL_KIND_AVG, p))
    end, "facet_pool2d_backward", "grad_out must be float16")
  end)

  H.it("upsample and dropout: mixed dtypes, an integer input", function()
    local x = t({ 2, 3, 4, 4 }, "bfloat16")
    H.assert_error(function()
      core.check(C.facet_upsample2d_forward(t({ 2, 3, 8, 8 }, "float16").h, x.h, C.FACET_UPSAMPLE_MODE_NEAREST, 0))
    end, "facet_upsample2d_forward", "out must be bfloat16")
    H.assert_error(function()
      core.check(C.facet_upsample2d_backward(x.h, t({ 2, 3, 8, 8 }).h, C.FACET_UPSAMPLE_MODE_BILINEAR, 0))
    end, "facet_upsample2d_backward", "grad_out must be bfloat16")
    H.assert_error(function()
      core.check(C.facet_upsample2d_forward(t({ 2, 3, 8, 8 }, "int32").h, t({ 2, 3, 4, 4 }, "int32").h,
        C.FACET_UPSAMPLE_MODE_NEAREST, 0))
    end, "facet_upsample2d_forward", "x must be float32, float16 or bfloat16")
    local mask = t({ 2, 3, 4, 4 }, "uint8")
    H.assert_error(function() core.check(C.facet_dropout_forward(t({ 2, 3, 4, 4 }).h, mask.h, x.h, 0.5, 1, 0)) end,
      "facet_dropout_forward", "out must be bfloat16")
    H.assert_error(function()
      core.check(C.facet_dropout_backward(t({ 2, 3, 4, 4 }, "float16").h, x.h, mask.h, 0.5))
    end, "facet_dropout_backward", "grad_x must be bfloat16")
    H.assert_error(function()
      core.check(C.facet_dropout_forward(t({ 2, 3, 4, 4 }, "bfloat16").h, t({ 2, 3, 4, 4 }, "float16").h, x.h, 0.5, 1, 0))
    end, "facet_dropout_forward", "mask must be uint8")
  end)
end)
