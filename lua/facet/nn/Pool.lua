--- facet.nn.MaxPool2d(kernel [, opts]), AvgPool2d(kernel [, opts]) (opts:
-- stride (= kernel), padding (0), count_include_pad (true)), and
-- AdaptiveAvgPool2d(1) (the global average, N x C x 1 x 1). All take a
-- float32, float16 or bfloat16 input natively (float32 sums, results rounded
-- once; the global average through facet_tensor_reduce / unary / binary).
local ffi = require "ffi"
local Module = require "facet.nn.Module"
local core = require "facet.core"
local valid = require "facet.check"

local C, check = core.C, core.check
local M = {}

local function make(name, kind)
  local cls = Module:extend(name)
  cls.native_half = true
  function cls.new(kernel, opts)
    local fn = "nn." .. name
    opts = valid.options(fn, opts, { "stride", "padding", "count_include_pad" })
    local k = valid.pair(fn, "kernel", kernel, 1)
    local s = valid.pair(fn, "stride", opts.stride or kernel, 1)
    local p = valid.pair(fn, "padding", opts.padding or 0, 0)
    valid.boolean(fn, "count_include_pad", opts.count_include_pad, true)
    local self = Module.init(cls)
    self.k, self.s, self.p = k, s, p
    self.settings = ffi.new("facet_pool2d_params", { kernel_h = k[1], kernel_w = k[2], stride_h = s[1],
      stride_w = s[2], pad_h = p[1], pad_w = p[2], count_include_pad = opts.count_include_pad == false and 0 or 1 })
    return self
  end
  function cls:describe()
    return ("%s(%dx%d, s%d%s)"):format(name, self.k[1], self.k[2], self.s[1], self.p[1] > 0 and (", p" .. self.p[1]) or "")
  end
  function cls:output_shape(s)
    self:check_shape("output_shape", s, 4)
    local function d(n, i) return math.floor((n + 2 * self.p[i] - self.k[i]) / self.s[i]) + 1 end
    return { s[1], s[2], d(s[3], 1), d(s[4], 2) }
  end
  function cls:update_output(x)
    local s = x:shape()
    if #s ~= 4 then self:fail(("want N x C x H x W input, got %s"):format(table.concat(s, "x"))) end
    local shape = self:output_shape(s)
    local out = self:buffer("output", shape, x:dtype())
    local arg = kind == C.FACET_POOL_KIND_MAX and self:buffer("argmax", shape, "int32") or nil
    check(C.facet_pool2d_forward(out.h, arg and arg.h or nil, x.h, kind, self.settings))
    return out
  end
  function cls:update_grad_input(x, grad_out)
    local gi = self:buffer("grad_input", x:shape(), x:dtype())
    local arg = self.buffers.argmax
    check(C.facet_pool2d_backward(gi.h, grad_out.h, arg and arg.h or nil, kind, self.settings))
    return gi
  end
  M[name] = cls
end

make("MaxPool2d", C.FACET_POOL_KIND_MAX)
make("AvgPool2d", C.FACET_POOL_KIND_AVG)

-- the global average: a mean over each plane, and its gradient spread evenly
M.AdaptiveAvgPool2d = Module:extend("AdaptiveAvgPool2d")
M.AdaptiveAvgPool2d.native_half = true
function M.AdaptiveAvgPool2d.new(size)
  if size ~= nil and size ~= 1 then error("AdaptiveAvgPool2d: only output size 1 (global average) is supported", 2) end
  return Module.init(M.AdaptiveAvgPool2d)
end
function M.AdaptiveAvgPool2d:describe() return "AdaptiveAvgPool2d(1)" end
function M.AdaptiveAvgPool2d:update_output(x)
  local s = x:shape()
  if #s ~= 4 then self:fail(("want N x C x H x W input, got %s"):format(table.concat(s, "x"))) end
  local out = self:buffer("output", { s[1], s[2], 1, 1 }, x:dtype())
  local planes = self:_view("planes", x, { s[1] * s[2], s[3] * s[4] })
  check(C.facet_tensor_reduce(out.h, planes.h, C.FACET_REDUCE_MEAN, 1, 0))
  return out
end
function M.AdaptiveAvgPool2d:update_grad_input(x, grad_out)
  local s = x:shape()
  local gi = self:buffer("grad_input", s, x:dtype())
  local g = self:buffer("scaled", { s[1], s[2], 1, 1 }, x:dtype())
  check(C.facet_tensor_unary(g.h, grad_out.h, C.FACET_UNARY_MUL, 1 / (s[3] * s[4]), 0))
  check(C.facet_tensor_fill(gi.h, 0))
  check(C.facet_tensor_binary(gi.h, gi.h, g.h, C.FACET_BINARY_ADD))
  return gi
end

return M
