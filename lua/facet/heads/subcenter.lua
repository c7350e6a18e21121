--- facet.heads.subcenter: the second step of Sub-center ArcFace (Deng et al.,
-- ECCV 2020). A head trained with k sub-centres a class (facet.heads.new(...,
-- { subcenters = k })) tends to gather a class's clean faces around one
-- dominant sub-centre and its hard or mislabelled ones around the others.
-- clean() finds each sample's nearest sub-centre of its own class, each
-- class's dominant one (the one most of its samples are nearest to; ties to
-- the lower index) and keeps the samples whose angle to their class's dominant
-- sub-centre is at most `threshold` degrees (75 in the paper); collapse()
-- keeps the dominant sub-centres as a K x dim weight, one centre a class, to
-- train on with the cleaned data.
--
--   local S = facet.heads.subcenter
--   local r = S.clean(head.weight, 3, embeddings, labels, { threshold = 75 })
--   r.keep      N uint8 (1: kept)        r.kept, r.dropped  counts
--   r.nearest   N uint8 (0-based)        r.cos    N float32, to the nearest sub-centre of its class
--   r.dominant  K int64 (0-based)        r.angle  N float32, degrees to the dominant sub-centre
--   r.counts    K x k int64: samples nearest to each sub-centre
--   local w = S.collapse(head.weight, 3, r.dominant)   -- K x dim
--
-- Everything is computed in chunks of `batch` samples on the weight's device
-- (embeddings may live on the CPU); the bookkeeping runs on the host.
local ffi = require "ffi"
local valid = require "facet.check"
local tensor = require "facet.tensor"

local M = {}

local NAME = "facet.heads.subcenter"

-- the weight (K k x dim float32) and k checked; returns K, dim
local function check_weight(fn, weight, k)
  if not tensor.is_tensor(weight) or weight:is_freed() then valid.fail(fn, "weight must be a live tensor") end
  valid.integer(fn, "k (sub-centres a class)", k, { min = 1, max = 255 })
  local s = weight:shape()
  if #s ~= 2 or weight:dtype() ~= "float32" then
    valid.fail(fn, ("weight must be a (K k) x dim float32 matrix, got %s %s"):format(table.concat(s, "x"),
      weight:dtype()))
  end
  if s[1] % k ~= 0 or s[1] == 0 then
    valid.fail(fn, ("weight has %d rows, not a positive multiple of k = %d"):format(s[1], k))
  end
  return s[1] / k, s[2]
end

-- the labels as a host int64 tensor of N values in [0, K)
local function host_labels(fn, labels, N, K)
  local y
  if type(labels) == "table" then
    y = tensor.tensor(labels, { dtype = "int64" })
  elseif tensor.is_tensor(labels) and not labels:is_freed() then
    if labels:dtype() ~= "int32" and labels:dtype() ~= "int64" then
      valid.fail(fn, "labels must be int32 or int64, got " .. labels:dtype())
    end
    y = labels:to("cpu"):long():contiguous()
  else
    valid.fail(fn, "labels must be a tensor or a table of class ids")
  end
  if y:dim() ~= 1 or y:numel() ~= N then
    valid.fail(fn, ("want %d labels (one per embedding), got %s"):format(N, table.concat(y:shape(), "x")))
  end
  local p = ffi.cast("int64_t *", y:data_ptr())
  for i = 0, N - 1 do
    if p[i] < 0 or p[i] >= K then
      valid.fail(fn, ("label %s of sample %d outside [0, %d)"):format(tostring(p[i]):gsub("LL$", ""), i + 1, K))
    end
  end
  return y, p
end

-- M.cosines for fn, every argument checked; also returns the host labels
-- (an int64 tensor) and a pointer to them
local function cosines(fn, weight, k, embeddings, labels, batch)
  local K, D = check_weight(fn, weight, k)
  if not tensor.is_tensor(embeddings) or embeddings:is_freed() then valid.fail(fn, "embeddings must be a live tensor") end
  local es = embeddings:shape()
  if #es ~= 2 or es[2] ~= D then
    valid.fail(fn, ("embeddings must be N x %d (the weight's dim), got %s"):format(D, table.concat(es, "x")))
  end
  local N = es[1]
  local y, yp = host_labels(fn, labels, N, K)
  -- two batch x k x dim intermediates: 4096 samples at k = 3, fewer for more sub-centres
  batch = valid.integer(fn, "batch", batch, { min = 1, max = 2 ^ 24, default = math.max(64, math.floor(12288 / k)) })
  local dev = weight:device()
  local out = tensor.empty({ N, k })
  local idx = tensor.empty({ math.min(batch, math.max(N, 1)) * k }, { dtype = "int64" })
  local ip = ffi.cast("int64_t *", idx:data_ptr())
  for i0 = 0, N - 1, batch do
    local n = math.min(batch, N - i0)
    -- the rows of each sample's own sub-centres (1-based for index_select)
    for i = 0, n - 1 do
      local base = yp[i0 + i] * k
      for j = 0, k - 1 do ip[i * k + j] = base + j + 1 end
    end
    local x = embeddings:narrow(1, i0 + 1, n):to(dev):float():l2_normalize()
    local w = weight:index_select(idx:narrow(1, 1, n * k):to(dev)):l2_normalize()
    local c = (w:reshape(n, k, D) * x:reshape(n, 1, D)):sum(3)
    out:narrow(1, i0 + 1, n):copy(c:reshape(n, k))
  end
  return out, y, yp
end

--- cos (N x k float32, on the host): the cosine of each sample to each
-- sub-centre of its own class. weight: (K k) x dim; embeddings: N x dim
-- (float32/16-bit, any device); labels: N class ids (0-based).
function M.cosines(weight, k, embeddings, labels, opts)
  local fn = NAME .. ".cosines"
  opts = valid.options(fn, opts, { "batch" })
  return (cosines(fn, weight, k, embeddings, labels, opts.batch))
end

--- The cleaning (see the header). opts: threshold (degrees, 75), batch
-- (samples a chunk: 12288 / k, 4096 at k = 3).
function M.clean(weight, k, embeddings, labels, opts)
  local fn = NAME .. ".clean"
  opts = valid.options(fn, opts, { "threshold", "batch" })
  local threshold = valid.number(fn, "threshold", opts.threshold, { min = 0, max = 180, default = 75 })
  local K = check_weight(fn, weight, k)
  -- y holds the labels yp points into: it lives as long as this call
  local cos, y, yp = cosines(fn, weight, k, embeddings, labels, opts.batch)
  local N = cos:size(1)
  local cp = ffi.cast("float *", cos:data_ptr())
  local nearest = tensor.empty({ N }, { dtype = "uint8" })
  local best = tensor.empty({ N })
  local counts = tensor.zeros({ K, k }, { dtype = "int64" })
  local np, bp = ffi.cast("uint8_t *", nearest:data_ptr()), ffi.cast("float *", best:data_ptr())
  local kp = ffi.cast("int64_t *", counts:data_ptr())
  for i = 0, N - 1 do
    -- the nearest sub-centre: the largest cosine, the first of equal ones (a NaN loses);
    -- a sample whose cosines are all NaN (a NaN embedding) votes for none
    local a, v = 0, cp[i * k]
    for j = 1, k - 1 do
      local c = cp[i * k + j]
      if c > v or v ~= v then a, v = j, c end
    end
    np[i], bp[i] = a, v
    if v == v then
      local cls = yp[i]
      kp[cls * k + a] = kp[cls * k + a] + 1
    end
  end
  local dominant = tensor.empty({ K }, { dtype = "int64" })
  local dp = ffi.cast("int64_t *", dominant:data_ptr())
  for c = 0, K - 1 do
    local a = 0
    for j = 1, k - 1 do if kp[c * k + j] > kp[c * k + a] then a = j end end
    dp[c] = a
  end
  local keep, angle = tensor.empty({ N }, { dtype = "uint8" }), tensor.empty({ N })
  local kp8, ap = ffi.cast("uint8_t *", keep:data_ptr()), ffi.cast("float *", angle:data_ptr())
  local kept = 0
  for i = 0, N - 1 do
    -- a NaN cosine (a NaN embedding) is dropped: tested before the clamp, as
    -- compiled code's min/max need not pass a NaN on
    local c = cp[i * k + dp[yp[i]]]
    local ok, deg = false, 0 / 0
    if c == c then
      deg = math.deg(math.acos(c < -1 and -1 or c > 1 and 1 or c))
      ok = deg <= threshold
    end
    ap[i] = deg
    kp8[i] = ok and 1 or 0
    if ok then kept = kept + 1 end
  end
  assert(y:numel() == N)
  return { keep = keep, kept = kept, dropped = N - kept, nearest = nearest, cos = best, dominant = dominant,
    angle = angle, counts = counts, threshold = threshold }
end

--- The dominant sub-centres of weight ((K k) x dim) as a K x dim weight on
-- the same device: row c is row c k + dominant[c] (dominant: K 0-based
-- indices, a tensor or a table).
function M.collapse(weight, k, dominant)
  local fn = NAME .. ".collapse"
  local K = check_weight(fn, weight, k)
  local d
  if type(dominant) == "table" then d = tensor.tensor(dominant, { dtype = "int64" })
  elseif tensor.is_tensor(dominant) and not dominant:is_freed() then d = dominant:to("cpu"):long():contiguous()
  else valid.fail(fn, "dominant must be a tensor or a table of K sub-centre indices") end
  if d:dim() ~= 1 or d:numel() ~= K then
    valid.fail(fn, ("want %d dominant indices (one a class), got %s"):format(K, table.concat(d:shape(), "x")))
  end
  local idx = tensor.empty({ K }, { dtype = "int64" })
  local dp, ip = ffi.cast("int64_t *", d:data_ptr()), ffi.cast("int64_t *", idx:data_ptr())
  for c = 0, K - 1 do
    if dp[c] < 0 or dp[c] >= k then
      valid.fail(fn, ("dominant index %s of class %d outside [0, %d)"):format(tostring(dp[c]):gsub("LL$", ""), c, k))
    end
    ip[c] = c * k + dp[c] + 1
  end
  return weight:index_select(idx:to(weight:device()))
end

return M
