--- facet.nn.BatchNorm1d(features [, opts]) and BatchNorm2d(channels [, opts]):
-- batch statistics in training (running statistics updated with momentum, the
-- unbiased variance), running statistics in evaluation. opts: eps (1e-5),
-- momentum (0.1), affine (true). Weight and bias are "norm" parameters.
-- The running statistics are the module's state (state_tensors, saved with
-- the weights); a training forward updates them, and facet.train puts them
-- back when its guard rejects the step (nan = "skip" or "stop").
local Module = require "facet.nn.Module"
local tensor = require "facet.tensor"
local core = require "facet.core"

local C, check = core.C, core.check
local M = {}

local function make(name, dims)
  local cls = Module:extend(name)
  function cls.new(n, opts)
    opts = opts or {}
    if type(n) ~= "number" or n < 1 then error(name .. "(features): want a positive count", 2) end
    local self = Module.init(cls)
    self.n, self.eps, self.momentum = n, opts.eps or 1e-5, opts.momentum or 0.1
    self.affine = opts.affine ~= false
    if self.affine then
      self:register("weight", tensor.ones({ n }), "norm")
      self:register("bias", tensor.zeros({ n }), "norm")
    end
    self.running_mean, self.running_var = tensor.zeros({ n }), tensor.ones({ n })
    self._state = { "running_mean", "running_var" }
    self.num_batches_tracked, self._counters = tensor.zeros({}, { dtype = "int64" }), { "num_batches_tracked" }
    return self
  end
  function cls:describe()
    return ("%s(%d%s)"):format(name, self.n, self.affine and "" or ", no affine")
  end
  function cls:update_output(x)
    local s = x:shape()
    if (#s ~= dims[1] and #s ~= dims[2]) or s[2] ~= self.n then
      self:fail(("want N x %d%s input, got %s"):format(self.n, dims[1] == 4 and " x H x W" or "", table.concat(s, "x")))
    end
    local out = self:buffer("output", s)
    local mean = self:buffer("save_mean", { self.n })
    local invstd = self:buffer("save_invstd", { self.n })
    check(C.facet_batchnorm_forward(out.h, mean.h, invstd.h, self.running_mean.h, self.running_var.h, x.h,
      self.affine and self.weight.h or nil, self.affine and self.bias.h or nil, self.training and 1 or 0,
      self.momentum, self.eps))
    return out
  end
  function cls:backward(x, grad_out)
    self:check_alive("backward")
    if not self.buffers.save_mean then core.raise(name .. ":backward: no forward to go back through", 2) end
    local gi = self:buffer("grad_input", x:shape())
    check(C.facet_batchnorm_backward(gi.h, self.affine and self.grad_weight.h or nil,
      self.affine and self.grad_bias.h or nil, grad_out.h, x.h, self.affine and self.weight.h or nil,
      self.buffers.save_mean.h, self.buffers.save_invstd.h, self.training and 1 or 0))
    self.grad_input = gi
    return gi
  end
  M[name] = cls
end

make("BatchNorm1d", { 2, 2 })
make("BatchNorm2d", { 4, 4 })

return M
