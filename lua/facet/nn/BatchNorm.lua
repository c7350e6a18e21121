--- facet.nn.BatchNorm1d(features [, opts]) and BatchNorm2d(channels [, opts]):
-- batch statistics in training (running statistics updated with momentum, the
-- unbiased variance), running statistics in evaluation. opts: eps (1e-5),
-- momentum (0.1), affine (true). Weight and bias are "norm" parameters.
-- The running statistics are the module's state (state_tensors, saved with
-- the weights); a training forward updates them, and facet.train puts them
-- back when its guard rejects the step (nan = "skip" or "stop").
-- Synchronised BN: with m.sync set to a facet.dist group of more than one
-- rank (facet.train{ dist = true, sync_bn = true } sets it), training uses
-- the mean and variance of the batches of every rank (combined exactly from
-- each rank's count, mean and variance: two allreduces of C values), and
-- backward all-reduces sum(dy) and sum(dy xhat), so each rank's dx is the
-- 1-process dx of its samples (times the world size, which facet.train's
-- gradient average divides out). The weight and bias gradients stay local
-- sums, averaged with every other gradient. The kernels are PyTorch's
-- SyncBatchNorm split: facet_batchnorm_stats (this rank's statistics),
-- facet_batchnorm_forward in evaluation mode with the global ones,
-- facet_batchnorm_backward without grad_x (this rank's sums) and
-- facet_batchnorm_backward_elemt (dx from the global sums, one pass).
-- The input may be float32, float16 or bfloat16: the kernels take it
-- natively, synchronised or not (a 16-bit result is the float32 path's on
-- the widened input, rounded once); weight, bias, their gradients and the
-- running statistics stay float32.
local Module = require "facet.nn.Module"
local tensor = require "facet.tensor"
local core = require "facet.core"
local valid = require "facet.check"

local C, check = core.C, core.check
local M = {}

local function host_buffer(self, name, n)
  local b = self.sync_host and self.sync_host[name]
  if b and b:numel() == n then return b end
  self.sync_host = self.sync_host or {}
  b = tensor.empty({ n })
  self.sync_host[name] = b
  return b
end

-- host copies of C per-channel values (a CUDA tensor goes through a CPU buffer)
local function host(self, name, t)
  if t:device() == "cpu" then return t end
  local h = host_buffer(self, name, t:numel())
  h:copy(t)
  return h
end

-- training forward over every rank's batch: out, save_mean, save_invstd as
-- the 1-process forward of the concatenated batches would give them
local function sync_forward(self, x, out, mean, invstd)
  local n, g, s = self.n, self.sync, x:shape()
  local count = s[1]
  for d = 3, #s do count = count * s[d] end
  -- this rank's mean and biased variance (an empty batch adds nothing)
  local lm, lv = self:buffer("sync_local_mean", { n }), self:buffer("sync_local_var", { n })
  if count > 0 then
    check(C.facet_batchnorm_stats(lm.h, lv.h, x.h))
  else
    lm:zero_(); lv:zero_()
  end
  local hm, hv = host(self, "lm", lm), host(self, "lv", lv)
  local pm, pv = hm:data_ptr(), hv:data_ptr()
  -- round 1: the global count and mean
  local a = host_buffer(self, "a", n + 1)
  local pa = a:data_ptr()
  for c = 0, n - 1 do pa[c] = count * pm[c] end
  pa[n] = count
  g:allreduce(a, "sum")
  local total = pa[n]
  if total < 2 then self:fail(("synchronised batch norm needs at least two values per channel, got %d"):format(total)) end
  local gm = host_buffer(self, "gm", n)
  local pgm = gm:data_ptr()
  for c = 0, n - 1 do pgm[c] = pa[c] / total end
  -- round 2: the global variance (each rank's variance about its mean, plus its mean's offset)
  local b = host_buffer(self, "b", n)
  local pb = b:data_ptr()
  for c = 0, n - 1 do
    local dm = pm[c] - pgm[c]
    pb[c] = count * (pv[c] + dm * dm)
  end
  g:allreduce(b, "sum")
  local gv = host_buffer(self, "gv", n)
  local pgv = gv:data_ptr()
  for c = 0, n - 1 do pgv[c] = pb[c] / total end
  -- normalise with the global statistics (the evaluation formula)
  local dm, dv = gm, gv
  if x:device() ~= "cpu" then
    dm, dv = self:buffer("sync_mean", { n }), self:buffer("sync_var", { n })
    dm:copy(gm); dv:copy(gv)
  end
  check(C.facet_batchnorm_forward(out.h, mean.h, invstd.h, dm.h, dv.h, x.h, self.affine and self.weight.h or nil,
    self.affine and self.bias.h or nil, 0, self.momentum, self.eps))
  -- the running statistics take the global ones (unbiased variance)
  local mo = self.momentum
  local rm, rv = host(self, "rm", self.running_mean), host(self, "rv", self.running_var)
  local prm, prv = rm:data_ptr(), rv:data_ptr()
  for c = 0, n - 1 do
    prm[c] = (1 - mo) * prm[c] + mo * pgm[c]
    prv[c] = (1 - mo) * prv[c] + mo * pgv[c] * total / (total - 1)
  end
  if rm ~= self.running_mean then self.running_mean:copy(rm); self.running_var:copy(rv) end
  -- (a float32 sum: past 2^24 values a count may round, never below this rank's)
  self.sync_total = math.max(total, count)
end

-- training backward over every rank's batch (see sync_forward)
local function sync_backward(self, x, grad_out, gi)
  local n, g = self.n, self.sync
  local sdy, sdx = self:buffer("sync_sum_dy", { n }), self:buffer("sync_sum_dyx", { n })
  sdy:zero_()
  sdx:zero_()
  local w = self.affine and self.weight.h or nil
  local sm, si = self.buffers.save_mean, self.buffers.save_invstd
  -- sdx = sum(dy xhat), sdy = sum(dy) over this rank (no grad_x)
  check(C.facet_batchnorm_backward(nil, sdx.h, sdy.h, grad_out.h, x.h, w, sm.h, si.h, 0))
  if self.affine then
    self.grad_weight:add_(sdx)
    self.grad_bias:add_(sdy)
  end
  local hy, hx = host(self, "sdy", sdy), host(self, "sdx", sdx)
  local s = host_buffer(self, "s", 2 * n)
  local ps, py, px = s:data_ptr(), hy:data_ptr(), hx:data_ptr()
  for c = 0, n - 1 do ps[c], ps[n + c] = py[c], px[c] end
  g:allreduce(s, "sum")
  -- the global sums on x's device, then dx in one pass
  local h = self.sync_halves
  if not h or not rawequal(h.src, s) then
    h = { src = s, dy = s:narrow(1, 1, n), dyx = s:narrow(1, n + 1, n) }
    self.sync_halves = h
  end
  local gy, gx = h.dy, h.dyx
  if x:device() ~= "cpu" then
    gy, gx = self:buffer("sync_global_dy", { n }), self:buffer("sync_global_dyx", { n })
    gy:copy(h.dy); gx:copy(h.dyx)
  end
  check(C.facet_batchnorm_backward_elemt(gi.h, grad_out.h, x.h, w, sm.h, si.h, gy.h, gx.h, self.sync_total))
end

local function synced(self) return self.training and self.sync ~= nil and self.sync:size() > 1 end

local function make(name, dims)
  local cls = Module:extend(name)
  cls.native_half = true      -- 16-bit x natively (float32 statistics), synchronised or not
  function cls.new(n, opts)
    local fn = "nn." .. name
    if type(n) ~= "number" or n < 1 then error(name .. "(features): want a positive count", 2) end
    valid.integer(fn, "features", n, { min = 1, max = 2 ^ 31 - 1 })
    opts = valid.options(fn, opts, { "eps", "momentum", "affine" })
    local eps = valid.number(fn, "eps", opts.eps, { gt = 0, default = 1e-5 })
    local momentum = valid.number(fn, "momentum", opts.momentum, { min = 0, max = 1, default = 0.1 })
    local affine = valid.boolean(fn, "affine", opts.affine, true)
    local self = Module.init(cls)
    self.n, self.eps, self.momentum = n, eps, momentum
    self.affine = affine
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
    local out = self:buffer("output", s, x:dtype())
    local mean = self:buffer("save_mean", { self.n })
    local invstd = self:buffer("save_invstd", { self.n })
    if synced(self) then
      sync_forward(self, x, out, mean, invstd)
      return out
    end
    check(C.facet_batchnorm_forward(out.h, mean.h, invstd.h, self.running_mean.h, self.running_var.h, x.h,
      self.affine and self.weight.h or nil, self.affine and self.bias.h or nil, self.training and 1 or 0,
      self.momentum, self.eps))
    return out
  end
  function cls:backward(x, grad_out)
    x, grad_out = self:check_backward(x, grad_out)
    if not self.buffers.save_mean then core.raise(name .. ":backward: no forward to go back through", 2) end
    local gi = self:buffer("grad_input", x:shape(), x:dtype())
    if synced(self) then
      sync_backward(self, x, grad_out, gi)
      self.grad_input = gi
      return gi
    end
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
