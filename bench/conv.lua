--- bench/conv.lua: GFLOP/s of facet_conv2d_forward and facet_conv2d_backward
-- (grad_x + grad_weight + grad_bias) for IResNet- and MobileFaceNet-like
-- layers at batch 32, next to the machine's GEMM rate (a 2048^3 matmul timed
-- in the same run). FLOPs are the convolution's multiply-adds x 2 (x 2 again
-- for backward), whatever path computes them. Layers that run as Winograd
-- (3x3, stride 1, >= 16 channels, F(4x4, 3x3) by default, on the CPU and on
-- CUDA) are timed again with FACET_CONV_WINOGRAD=0 (im2col) and =2
-- (F(2x2, 3x3)) in the same run: the "x im2col" and "x F2x2" columns (>1:
-- the default is faster).
-- Lines starting with "summary:" are the key figures (tools/gpu_check.sh copies them):
-- each layer's times, GEMM share and, for Winograd layers, the ratios.
-- Usage: bin/facet run bench/conv.lua [--batch 32] [--reps 3] [--threads N] [--device cpu|cuda]
--        [--slots N]   (CPU: force a workspace of N column slots instead of the recommended size;
--                       im2col layers only)
-- (--help: the options)
local ffi = require "ffi"
local facet = require "facet"
local core = require "facet.core"
local C = core.C
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"

local parser = common.parser("bench/conv.lua", "GFLOP/s of facet's conv2d forward and backward for IResNet- and " ..
  "MobileFaceNet-like layers, next to the GEMM rate (2048^3) of the same run.")
common.integer(parser, "--batch", "batch size", 32, 1)
common.integer(parser, "--reps", "timed runs per layer (the best counts)", 3, 1)
common.integer(parser, "--threads", "CPU threads (default: facet's, FACET_THREADS or the cores)", nil, 1)
common.device(parser)
common.integer(parser, "--slots", "CPU: a workspace of this many column slots instead of the recommended " ..
  "size (im2col layers)", nil, 1)
local opts = parser:parse(arg)
common.check_device("bench/conv.lua", opts.device)
if opts.threads then facet.set_threads(opts.threads) end
local dev = opts.device
local sync = dev == "cuda" and facet.cuda.synchronize or function() end
pcall(ffi.cdef, "int unsetenv(const char *name);")
local user_winograd = os.getenv("FACET_CONV_WINOGRAD")

-- name, C, H(=W), O, k, stride, pad, groups
local layers = {
  { "IResNet 64->64 3x3 @112", 64, 112, 64, 3, 1, 1, 1 },    -- stage 1's first unit, at the input's size
  { "IResNet 64->64 3x3 s2 @112", 64, 112, 64, 3, 2, 1, 1 },
  { "IResNet 64->64 3x3 @56", 64, 56, 64, 3, 1, 1, 1 },
  { "IResNet 128->128 3x3 @28", 128, 28, 128, 3, 1, 1, 1 },
  { "IResNet 256->256 3x3 @14", 256, 14, 256, 3, 1, 1, 1 },
  { "IResNet 512->512 3x3 @7", 512, 7, 512, 3, 1, 1, 1 },
  { "IResNet 64->128 3x3 s2 @56", 64, 56, 128, 3, 2, 1, 1 },
  { "pointwise 64->128 1x1 @56", 64, 56, 128, 1, 1, 0, 1 },
  { "pointwise 128->256 1x1 @28", 128, 28, 256, 1, 1, 0, 1 },
  { "stem 3->64 3x3 @112", 3, 112, 64, 3, 1, 1, 1 },
  { "depthwise 128 3x3 @56", 128, 56, 128, 3, 1, 1, 128 },
  { "depthwise 128 3x3 s2 @56", 128, 56, 128, 3, 2, 1, 128 },
  { "depthwise 512 7x7 @7 (GDC)", 512, 7, 512, 7, 1, 0, 512 },
}

local function best(f, reps)
  f(); sync()
  local b = math.huge
  for _ = 1, reps do
    local t0 = facet.clock()
    f(); sync()
    b = math.min(b, facet.clock() - t0)
  end
  return b
end

-- the GEMM rate of this machine, same threads, same run
local n = 2048
local a = facet.randn({ n, n }, { seed = 1 }):to(dev)
local b = facet.randn({ n, n }, { seed = 2 }):to(dev)
local c = facet.empty({ n, n }, { device = dev })
local gemm = 2 * n * n * n / best(function() a:matmul(b, { out = c }) end, math.max(opts.reps, 5)) / 1e9
a, b, c = nil, nil, nil
collectgarbage()

print(("device %s, threads %d, BLAS %s, batch %d"):format(dev, facet.get_threads(),
  dev == "cpu" and facet.blas_core() or "cuBLAS", opts.batch))
print(("GEMM 2048^3 (a:matmul(b)): %.1f GFLOP/s"):format(gemm))
if dev == "cpu" and common.blas_note() then print(common.blas_note()) end
print(("%-28s %10s %9s %6s %10s %9s %6s %9s %s"):format("layer", "fwd ms", "GFLOP/s", "%GEMM", "bwd ms", "GFLOP/s",
  "%GEMM", "ws MB", "  x im2col fwd  bwd    x F2x2 fwd  bwd"))

-- sets FACET_CONV_WINOGRAD (conv_winograd.c reads it at each call); nil restores the user's
local function winograd(v)
  v = v or user_winograd
  if v then ffi.C.setenv("FACET_CONV_WINOGRAD", v, 1) else ffi.C.unsetenv("FACET_CONV_WINOGRAD") end
end
local summary = {}
for _, l in ipairs(layers) do
  local name, ch, hw, o, k, s, p, g = unpack(l)
  local N = opts.batch
  local ho = math.floor((hw + 2 * p - k) / s) + 1
  local set = ffi.new("facet_conv2d_params", { stride_h = s, stride_w = s, pad_h = p, pad_w = p,
    dilation_h = 1, dilation_w = 1, groups = g })
  local x = facet.randn({ N, ch, hw, hw }, { seed = 3 }):to(dev)
  local w = facet.randn({ o, ch / g, k, k }, { seed = 4, std = 0.05 }):to(dev)
  local bias = facet.randn({ o }, { seed = 5 }):to(dev)
  local out = facet.empty({ N, o, ho, ho }, { device = dev })
  local gout = facet.randn({ N, o, ho, ho }, { seed = 6 }):to(dev)
  local gx = facet.empty({ N, ch, hw, hw }, { device = dev })
  local gw = facet.zeros({ o, ch / g, k, k }, { device = dev })
  local gb = facet.zeros({ o }, { device = dev })
  local function ws_size()
    local e = ffi.new("int64_t[1]")
    core.check(C.facet_conv2d_workspace_size(e, x.h, w.h, set))
    return tonumber(e[0])
  end
  local elems = ws_size()
  -- a CPU layer on the Winograd path asks for another workspace than with it off;
  -- CUDA's takes conv_winograd.c's rule (facet_conv_winograd_fits) in the same workspace
  winograd("0")
  local cols = ws_size()
  winograd()
  local wino = dev == "cpu" and cols ~= elems or
    dev == "cuda" and k == 3 and s == 1 and g == 1 and ch >= 16 and o >= 16 and ho >= 4 and user_winograd ~= "0"
  if opts.slots and dev == "cpu" and elems > 0 and not wino then
    local slot = (ch / g) * k * k * ho * ho
    elems = slot * opts.slots
  end
  local function time(n)
    local ws = n > 0 and facet.empty({ n }, { device = dev }) or nil
    local wsh = ws and ws.h or nil
    return best(function() core.check(C.facet_conv2d_forward(out.h, x.h, w.h, bias.h, wsh, set)) end, opts.reps),
      best(function() core.check(C.facet_conv2d_backward(gx.h, gw.h, gb.h, gout.h, x.h, w.h, wsh, set)) end, opts.reps)
  end
  local t_f, t_b = time(elems)
  local vs = ""
  if wino then
    winograd("0")
    local c_f, c_b = time(cols)
    winograd("2")
    local w_f, w_b = time(ws_size())
    winograd()
    vs = ("  %12.2f %4.2f  %12.2f %4.2f"):format(c_f / t_f, c_b / t_b, w_f / t_f, w_b / t_b)
  end
  local flops = 2 * N * o * ho * ho * (ch / g) * k * k
  local gf, gb_ = flops / t_f / 1e9, 2 * flops / t_b / 1e9
  print(("%-28s %10.2f %9.1f %5.0f%% %10.2f %9.1f %5.0f%% %9.1f%s"):format(name, t_f * 1e3, gf, 100 * gf / gemm,
    t_b * 1e3, gb_, 100 * gb_ / gemm, elems * 4 / 2 ^ 20, vs))
  summary[#summary + 1] = ("summary: conv %s %s (batch %d): fwd %.3f ms %.0f%% of GEMM, bwd %.3f ms %.0f%%%s"):format(dev,
    name, N, t_f * 1e3, 100 * gf / gemm, t_b * 1e3, 100 * gb_ / gemm,
    wino and (", Winograd x im2col fwd %s bwd %s, x F2x2 fwd %s bwd %s"):format(vs:match(
      "^%s*(%S+)%s+(%S+)%s+(%S+)%s+(%S+)")) or "")
  x, w, bias, out, gout, gx, gw, gb = nil, nil, nil, nil, nil, nil, nil, nil
  collectgarbage()
end
for _, line in ipairs(summary) do print(line) end
