--- facet.nn.Conv2d(in, out, kernel [, opts]): 2-D convolution of N x C x H x W.
-- opts: stride (1), padding (0), dilation (1), groups (1; groups = in = out is
-- depthwise), bias (true). kernel, stride, padding and dilation are a number or
-- {h, w}. Weights start as PyTorch's (uniform in +-1/sqrt(fan_in)). The im2col
-- scratch is shared by all convolutions on a device and grows as needed. The
-- input may be float32, float16 or bfloat16 (the kernels take it natively:
-- float32 weights, accumulation and weight gradients; out and grad_input in
-- the input's dtype).
local ffi = require "ffi"
local Module = require "facet.nn.Module"
local tensor = require "facet.tensor"
local core = require "facet.core"
local valid = require "facet.check"

local C, check = core.C, core.check
local Conv2d = Module:extend("Conv2d")
Conv2d.native_half = true

local scratch = {}                 -- device -> tensor
local ws_count = ffi.new("int64_t[1]")

function Conv2d.new(n_in, n_out, kernel, opts)
  if type(n_in) ~= "number" or type(n_out) ~= "number" or n_in < 1 or n_out < 1 then
    error("Conv2d(in, out, kernel): want positive channel counts", 2)
  end
  valid.integer("nn.Conv2d", "in", n_in, { min = 1, max = 2 ^ 31 - 1 })
  valid.integer("nn.Conv2d", "out", n_out, { min = 1, max = 2 ^ 31 - 1 })
  opts = valid.options("nn.Conv2d", opts, { "stride", "padding", "dilation", "groups", "bias" })
  valid.integer("nn.Conv2d", "groups", opts.groups, { min = 1, max = 2 ^ 31 - 1, optional = true })
  valid.boolean("nn.Conv2d", "bias", opts.bias, true)
  local self = Module.init(Conv2d)
  self.n_in, self.n_out = n_in, n_out
  self.kernel = valid.pair("nn.Conv2d", "kernel", kernel, 1)
  self.stride = valid.pair("nn.Conv2d", "stride", opts.stride or 1, 1)
  self.padding = valid.pair("nn.Conv2d", "padding", opts.padding or 0, 0)
  self.dilation = valid.pair("nn.Conv2d", "dilation", opts.dilation or 1, 1)
  self.groups = opts.groups or 1
  if n_in % self.groups ~= 0 or n_out % self.groups ~= 0 then
    error(("Conv2d: in (%d) and out (%d) must be divisible by groups (%d)"):format(n_in, n_out, self.groups), 2)
  end
  self.settings = ffi.new("facet_conv2d_params", { stride_h = self.stride[1], stride_w = self.stride[2],
    pad_h = self.padding[1], pad_w = self.padding[2], dilation_h = self.dilation[1], dilation_w = self.dilation[2],
    groups = self.groups })
  local fan_in = n_in / self.groups * self.kernel[1] * self.kernel[2]
  local bound = 1 / math.sqrt(fan_in)
  self:register("weight", tensor.rand({ n_out, n_in / self.groups, self.kernel[1], self.kernel[2] },
    { low = -bound, high = bound }), "weight")
  if opts.bias ~= false then self:register("bias", tensor.rand({ n_out }, { low = -bound, high = bound }), "bias") end
  return self
end

function Conv2d:describe()
  local k, s = self.kernel, self.stride
  local parts = { ("Conv2d(%d->%d, %dx%d"):format(self.n_in, self.n_out, k[1], k[2]) }
  if s[1] ~= 1 or s[2] ~= 1 then parts[#parts + 1] = s[1] == s[2] and ("s%d"):format(s[1]) or ("s%dx%d"):format(s[1], s[2]) end
  if self.padding[1] ~= 0 or self.padding[2] ~= 0 then parts[#parts + 1] = ("p%d"):format(self.padding[1]) end
  if self.dilation[1] ~= 1 then parts[#parts + 1] = ("d%d"):format(self.dilation[1]) end
  if self.groups ~= 1 then parts[#parts + 1] = self.groups == self.n_in and "depthwise" or ("g%d"):format(self.groups) end
  if not self.bias then parts[#parts + 1] = "no bias" end
  return table.concat(parts, ", ") .. ")"
end

--- Output shape for an input shape.
function Conv2d:output_shape(s)
  self:check_shape("output_shape", s, 4)
  local function dim(n, i)
    return math.floor((n + 2 * self.padding[i] - self.dilation[i] * (self.kernel[i] - 1) - 1) / self.stride[i]) + 1
  end
  return { s[1], self.n_out, dim(s[3], 1), dim(s[4], 2) }
end

local function workspace(self, x)
  check(C.facet_conv2d_workspace_size(ws_count, x.h, self.weight.h, self.settings), 3)
  local need = tonumber(ws_count[0])
  local ws = scratch[self.device]
  if not ws or ws:numel() < need then
    ws = tensor.empty({ math.max(need, 1) }, { device = self.device })
    scratch[self.device] = ws
  end
  if ws:numel() == need then return ws end
  return ws:narrow(1, 1, need)
end

function Conv2d:update_output(x)
  local s = x:shape()
  if #s ~= 4 or s[2] ~= self.n_in then
    self:fail(("want N x %d x H x W input, got %s"):format(self.n_in, table.concat(s, "x")))
  end
  local out = self:buffer("output", self:output_shape(s), x:dtype())
  local ws = workspace(self, x)
  check(C.facet_conv2d_forward(out.h, x.h, self.weight.h, self.bias and self.bias.h or nil, ws.h, self.settings))
  return out
end

-- grad_x and the parameter gradients come out of one call; a first layer
-- (no_input_grad = true, set by facet.train) skips grad_x
function Conv2d:backward(x, grad_out)
  x, grad_out = self:check_backward(x, grad_out)
  local gi = not self.no_input_grad and self:buffer("grad_input", x:shape(), x:dtype()) or nil
  local ws = workspace(self, x)
  check(C.facet_conv2d_backward(gi and gi.h or nil, self.grad_weight.h, self.bias and self.grad_bias.h or nil, grad_out.h, x.h,
    self.weight.h, ws.h, self.settings))
  self.grad_input = gi
  return gi
end

--- Multiply-adds of one forward for an input shape (for summaries).
function Conv2d:flops(s)
  local o = self:output_shape(s)
  return 2 * o[1] * o[2] * o[3] * o[4] * (self.n_in / self.groups) * self.kernel[1] * self.kernel[2]
end

return Conv2d
