--- support/head_reference.lua: the heads of the MV-Softmax and L2-softmax
-- papers written out again in plain Lua, in double precision, straight from
-- the papers' equations (independent of facet's C code). Used for loss values
-- and, through central differences, for gradients.
local R = {}

local function dot(a, b)
  local s = 0
  for i = 1, #a do s = s + a[i] * b[i] end
  return s
end

local function norm(a) return math.sqrt(dot(a, a)) end

local function clamp(c) return math.max(-1, math.min(1, c)) end

-- f(c_y) of the margin heads
function R.margin(cfg, c)
  local m = cfg.margin
  if m == "none" then return c end
  if m == "am" then return c - cfg.m end
  if m == "arc" then
    local th = math.acos(c)
    if cfg.easy_margin then
      if c > 0 then return math.cos(th + cfg.m) end
      return c
    end
    if th + cfg.m > math.pi then return c - cfg.m * math.sin(cfg.m) end
    return math.cos(th + cfg.m)
  end
  if m == "combined" then return math.cos(cfg.m1 * math.acos(c) + cfg.m3) - cfg.m2 end
  if m == "a-softmax" then
    local th = math.acos(c)
    local k = math.min(math.floor(cfg.m1 * th / math.pi), cfg.m1 - 1)
    local psi = (-1) ^ k * math.cos(cfg.m1 * th) - 2 * k
    return (cfg.lambda * c + psi) / (1 + cfg.lambda)
  end
  if m == "script" then return cfg.f(c) end
  error("unknown margin " .. tostring(m))
end

-- log h(t, c, I = 1)
local function logh(cfg, c)
  if cfg.h == "fixed" then return cfg.s * cfg.t end
  if cfg.h == "adaptive" then return cfg.s * cfg.t * (c + 1) end
  return 0
end

--- Per-row cross-entropies and the head's loss.
-- cfg: kind (raw | l2 | cosine), margin, m..., s, h, t, sample, gamma, keep, alpha
-- x: B x D table, W: K x D table, b: K table or nil, y: 0-based labels
function R.loss(cfg, x, W, b, y)
  -- sub-centres: W holds k rows a class (c k + 1 ... c k + k, 1-based)
  local sc = cfg.subcenters or 1
  local B, K = #x, #W / sc
  local ce = {}
  for i = 1, B do
    local xi = x[i]
    local z = {}
    local yi = y[i] + 1
    if cfg.kind == "raw" or cfg.kind == "l2" then
      local scale = 1
      if cfg.kind == "l2" then scale = cfg.alpha / math.max(norm(xi), 1e-12) end
      for k = 1, K do z[k] = scale * dot(xi, W[k]) + (b and b[k] or 0) end
    else
      local nx = math.max(norm(xi), 1e-12)
      local c = {}
      for k = 1, K do
        -- a class's cosine: the best of its sub-centres'
        c[k] = -math.huge
        for j = (k - 1) * sc + 1, k * sc do
          c[k] = math.max(c[k], clamp(dot(xi, W[j]) / (nx * math.max(norm(W[j]), 1e-12))))
        end
      end
      local f
      if cfg.margin == "adaface" then f = R.adaface_margin(cfg, c[yi], cfg.z[i])
      elseif cfg.margin == "magface" then f = R.magface_margin(cfg, c[yi], nx)
      elseif cfg.margin == "elastic-arc" or cfg.margin == "elastic-cos" then f = R.elastic_margin(cfg, c[yi], cfg.mi[i])
      else f = R.margin(cfg, c[yi]) end
      for k = 1, K do
        if k == yi then z[k] = cfg.s * f
        else
          z[k] = cfg.s * c[k]
          if cfg.h == "curricular" then
            -- CurricularFace: a hard class's logit is s c (t + c)
            if c[k] > f then z[k] = cfg.s * c[k] * (cfg.t + c[k]) end
          elseif cfg.h and c[k] > f then z[k] = z[k] + logh(cfg, c[k]) end
        end
      end
    end
    local mx = -math.huge
    for k = 1, K do mx = math.max(mx, z[k]) end
    local se = 0
    for k = 1, K do se = se + math.exp(z[k] - mx) end
    ce[i] = mx + math.log(se) - z[yi]
  end
  local total = 0
  if cfg.sample == "focal" then
    for i = 1, B do total = total + (1 - math.exp(-ce[i])) ^ cfg.gamma * ce[i] end
    total = total / B
  elseif cfg.sample == "hard" then
    local order = {}
    for i = 1, B do order[i] = i end
    table.sort(order, function(a, c) if ce[a] ~= ce[c] then return ce[a] > ce[c] end return a < c end)
    local keep = math.max(1, math.floor(cfg.keep * B))
    for j = 1, keep do total = total + ce[order[j]] end
    total = total / keep
  else
    for i = 1, B do total = total + ce[i] end
    total = total / B
  end
  if cfg.margin == "magface" then
    -- the norm regulariser lambda_g g(a), a mean beside the cross-entropy
    local g = 0
    for i = 1, B do
      local a = math.max(cfg.l_a, math.min(cfg.u_a, norm(x[i])))
      g = g + 1 / a + a / cfg.u_a ^ 2
    end
    total = total + cfg.lambda_g * g / B
  end
  return total, ce
end

--- AdaFace's target: the angle moves by -m z, kept inside (e, pi - e), and
-- the cosine drops by m (1 + z); cosines kept inside [-1 + e, 1 - e], e = 1e-3.
function R.adaface_margin(cfg, c, z)
  local e = 1e-3
  c = math.max(-1 + e, math.min(1 - e, c))
  local a = math.max(e, math.min(math.pi - e, math.acos(c) - cfg.m * z))
  return math.cos(a) - cfg.m * (1 + z)
end

--- MagFace's target: arc with the margin of the row's norm n clamped to
-- [l_a, u_a], mapped linearly onto [l_m, u_m]; with easy_margin none where
-- c <= 0, else past theta + m = pi the fallback c - m sin m of its authors' code.
function R.magface_margin(cfg, c, n)
  local a = math.max(cfg.l_a, math.min(cfg.u_a, n))
  local m = cfg.l_m + (cfg.u_m - cfg.l_m) * (a - cfg.l_a) / (cfg.u_a - cfg.l_a)
  if cfg.easy_margin and c <= 0 then return c end
  if c > math.cos(math.pi - m) then return math.cos(math.acos(c) + m) end
  return c - m * math.sin(m)
end

--- ElasticFace's target with the row's margin m: the arc margin as arc's and
-- MagFace's (easy_margin, the fallback past pi), or the cosine margin c - m.
function R.elastic_margin(cfg, c, m)
  if cfg.margin == "elastic-cos" then return c - m end
  if cfg.easy_margin and c <= 0 then return c end
  if c > math.cos(math.pi - m) then return math.cos(math.acos(c) + m) end
  return c - m * math.sin(m)
end

--- AdaFace's statistics after a batch x (a Lua list of rows): the running
-- mean and std of the norms clamped to [0.001, 100] (the batch's std
-- unbiased), and each row's z = clamp(h (n - mean) / (std + 1e-3), -1, 1).
-- Returns mean, std, z (a list).
function R.adaface_stats(mean, std, momentum, h, x)
  local n, B = {}, #x
  for i = 1, B do n[i] = math.max(0.001, math.min(100, math.max(norm(x[i]), 1e-12))) end
  local m = 0
  for i = 1, B do m = m + n[i] end
  m = m / B
  local v = 0
  for i = 1, B do v = v + (n[i] - m) ^ 2 end
  mean = (1 - momentum) * mean + momentum * m
  std = (1 - momentum) * std + momentum * math.sqrt(v / (B - 1))
  local z = {}
  for i = 1, B do z[i] = math.max(-1, math.min(1, h * (n[i] - mean) / (std + 1e-3))) end
  return mean, std, z
end

--- CurricularFace's t after a batch: (1 - momentum) t + momentum * the mean
-- over the rows of the clamped cosine of x_i and W[y_i + 1].
function R.curricular_t(t, momentum, x, W, y)
  local sum = 0
  for i = 1, #x do
    local w = W[y[i] + 1]
    sum = sum + clamp(dot(x[i], w) / (math.max(norm(x[i]), 1e-12) * math.max(norm(w), 1e-12)))
  end
  return (1 - momentum) * t + momentum * sum / #x
end

--- Central-difference gradient of fn() with respect to every entry of the
-- nested table t (modified in place and restored).
function R.numeric_grad(fn, t, h)
  h = h or 1e-6
  local g = {}
  for i = 1, #t do
    if type(t[i]) == "table" then
      g[i] = R.numeric_grad(fn, t[i], h)
    else
      local v = t[i]
      t[i] = v + h
      local lp = fn()
      t[i] = v - h
      local lm = fn()
      t[i] = v
      g[i] = (lp - lm) / (2 * h)
    end
  end
  return g
end

return R
