--- support/jacobian.lua: finite-difference checks of a module's backward
-- (Torch7's nn.Jacobian, for facet): the loss sum(forward(x) * R) for a fixed
-- random R, its central differences with respect to the input and to every
-- parameter, against backward(x, R).
local facet = require "facet"
local J = {}

local function loss(m, x, R)
  local y = m:forward(x):to("cpu"):contiguous()
  local a, b = y:data_ptr(), R:data_ptr()
  local s = 0
  for i = 0, y:numel() - 1 do s = s + a[i] * b[i] end
  return s
end

-- central differences of loss with respect to the elements of t (on the host copy, written back)
local function numeric(m, x, R, t, h, picks)
  local host = t:to("cpu"):contiguous()
  local p = host:data_ptr()
  local out = {}
  for _, i in ipairs(picks) do
    local v = p[i]
    p[i] = v + h; t:copy(host)
    local lp = loss(m, x, R)
    p[i] = v - h; t:copy(host)
    local lm = loss(m, x, R)
    p[i] = v; t:copy(host)
    out[#out + 1] = (lp - lm) / (2 * h)
  end
  return out
end

local function picks_of(n, max)
  local r = {}
  if n <= max then for i = 0, n - 1 do r[#r + 1] = i end return r end
  local step = n / max
  for k = 0, max - 1 do r[#r + 1] = math.floor(k * step) end
  return r
end

--- Checks dL/dx and dL/dparams of module m at input x (on any device).
-- opts: h (1e-2), tol (relative, 5e-3), max (elements checked per tensor, 60)
function J.check(m, x, opts)
  opts = opts or {}
  local h, tol, max = opts.h or 1e-2, opts.tol or 5e-3, opts.max or 60
  local y = m:forward(x)
  local R = facet.randn(y:shape(), { seed = 99 })
  m:zero_grad()
  m:forward(x)
  local gx = m:backward(x, R:to(x:device())):to("cpu"):contiguous()
  local grads = {}
  local params, gs = m:parameters()
  for i, g in ipairs(gs) do grads[i] = g:to("cpu"):contiguous() end
  local function compare(analytic, t, what)
    local picks = picks_of(t:numel(), max)
    local fd = numeric(m, x, R, t, h, picks)
    local a = analytic:data_ptr()
    local scale = 1e-3
    for k = 1, #picks do scale = math.max(scale, math.abs(fd[k])) end
    for k, i in ipairs(picks) do
      if math.abs(a[i] - fd[k]) > tol * math.abs(fd[k]) + tol * 0.2 * scale then
        error(("%s: %s element %d: backward %.6g, finite differences %.6g"):format(m:describe(), what, i + 1,
          a[i], fd[k]), 3)
      end
    end
  end
  if not opts.skip_input then compare(gx, x, "dL/dx") end
  for i, p in ipairs(params) do compare(grads[i], p, "dL/dparam " .. i) end
end

return J
