--- facet.nn.Upsample{ scale = 2 | size = {h, w}, mode = "nearest" | "bilinear",
-- align_corners = false }: PyTorch's F.interpolate for N x C x H x W (the
-- residual attention network's soft masks). float16 and bfloat16 inputs go
-- straight to the kernels (float32 blends and sums, rounded once).
local Module = require "facet.nn.Module"
local core = require "facet.core"
local valid = require "facet.check"

local C, check = core.C, core.check
local Upsample = Module:extend("Upsample")
Upsample.native_half = true

function Upsample.new(opts)
  local fn = "nn.Upsample"
  opts = valid.options(fn, opts, { "scale", "size", "mode", "align_corners" })
  if opts.scale ~= nil and opts.size ~= nil then valid.fail(fn, "give scale or size, not both") end
  local scale = valid.number(fn, "scale", opts.scale, { gt = 0, max = 4096, optional = true })
  local size = opts.size ~= nil and valid.list(fn, "size", opts.size, { len = 2, integer = true, min = 1, max = 2 ^ 31 - 1 })
    or nil
  local mode = valid.enum(fn, "mode", opts.mode, { "nearest", "bilinear" }, "nearest")
  valid.boolean(fn, "align_corners", opts.align_corners, false)
  local self = Module.init(Upsample)
  self.scale, self.size = scale, size
  if not self.scale and not self.size then self.scale = 2 end
  self.mode = mode
  self.code = self.mode == "nearest" and C.FACET_UPSAMPLE_MODE_NEAREST or C.FACET_UPSAMPLE_MODE_BILINEAR
  self.align = opts.align_corners and 1 or 0
  return self
end

function Upsample:describe()
  return ("Upsample(%s, %s)"):format(self.size and table.concat(self.size, "x") or ("x" .. self.scale), self.mode)
end

function Upsample:update_output(x)
  local s = x:shape()
  if #s ~= 4 then self:fail(("want N x C x H x W input, got %s"):format(table.concat(s, "x"))) end
  local h = self.size and self.size[1] or math.floor(s[3] * self.scale)
  local w = self.size and self.size[2] or math.floor(s[4] * self.scale)
  local out = self:buffer("output", { s[1], s[2], h, w }, x:dtype())
  check(C.facet_upsample2d_forward(out.h, x.h, self.code, self.align))
  return out
end

function Upsample:update_grad_input(x, grad_out)
  local gi = self:buffer("grad_input", x:shape(), x:dtype())
  check(C.facet_upsample2d_backward(gi.h, grad_out.h, self.code, self.align))
  return gi
end

return Upsample
