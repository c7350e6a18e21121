--- facet.heads.sharded: a head whose K classes are split across the ranks of
-- a group (model parallelism for the classifier), with optional negative-class
-- sampling (Partial FC). Made by facet.heads.new(name, { ..., shard = true,
-- group = g, sample = 0.1 }); docs/heads.md, "Sharded heads and Partial FC".
--
-- Rank r of W owns the contiguous class block [offset, offset + rows): K/W
-- classes each, the first K mod W ranks one more. A forward all-gathers the
-- ranks' (normalised) embeddings and labels, runs the block-wise C head API on
-- this rank's block, and merges across ranks: the target-logit fields of a
-- row (c_y, f(c_y), f'(c_y), target logit; written by the rank owning the
-- label, zero elsewhere, so an allreduce sum delivers them), then the row max
-- (allreduce max) and the sum of exponentials rescaled to it (allreduce sum).
-- Every rank then finishes the same global rows, so focal and hard-mining
-- weights see the global batch. backward turns the block into its gradient,
-- accumulates W's block gradient, and reduce-scatters dL/dx back to the ranks
-- that own the samples. The loss is the global batch's; dx is the exact
-- gradient of that loss for this rank's rows (see the docs for data-parallel
-- averaging). Memory per rank for W, its gradient, the optimizer's state and
-- the logits is proportional to K/W.
--
-- With sample < 1 each rank keeps every class of its block that labels a
-- sample of the global batch, plus a uniform random subset of the others
-- (Knuth's selection sampling) so that round(sample * rows) classes are kept
-- (more when the positives exceed that). Unsampled rows get a zero gradient
-- and the optimizer updates every row as usual (momentum and weight decay
-- keep acting on them): plain SGD with momentum on the sampled loss.
--
-- Checkpoints: state_dict() gathers the full head (the unsharded head's names
-- and shapes), load_state_dict() takes this rank's rows of a full head; the
-- weight entry of named_parameters() carries `shard` so optimizers gather and
-- slice their state the same way. Both are collectives: call them on every rank.
local ffi = require "ffi"
local core = require "facet.core"
local valid = require "facet.check"
local tensor = require "facet.tensor"
local Head = require "facet.heads.head"

local C, check = core.C, core.check
local M = {}
local Sharded = {}
Sharded.__index = Sharded
M.Sharded = Sharded

local NROW = tonumber(C.FACET_HEAD_ROW_COUNT)
local MAXC, SUMC = tonumber(C.FACET_HEAD_ROW_MAX) + 1, tonumber(C.FACET_HEAD_ROW_SUMEXP) + 1

--- The class block of rank r (0-based) of W over K classes: offset (0-based), rows.
function M.block(K, W, r)
  local base, extra = math.floor(K / W), K % W
  return r * base + math.min(r, extra), base + (r < extra and 1 or 0)
end

-- the one-rank group: what a head with sample < 1 and no shard runs on
local Solo = {}
Solo.__index = Solo
function Solo.rank() return 0 end
function Solo.size() return 1 end
function Solo.barrier() end
function Solo.allreduce(_, t) return t end
function Solo.allgather(_, t) return t:clone() end
function Solo.reduce_scatter(_, t) return t:clone() end
function Solo.broadcast(_, t) return t end
M.solo = setmetatable({}, Solo)

local GROUP_METHODS = { "rank", "size", "barrier", "allreduce", "allgather", "reduce_scatter", "broadcast" }

-- facet.dist's world group when that module is there, else nil
local function world_group()
  local ok, dist = pcall(require, "facet.dist")
  if ok and type(dist) == "table" and type(dist.world) == "function" then return dist.world() end
  return nil
end

--- A sharded head (called by facet.heads.new when opts has shard or sample).
function M.new(cfg, opts)
  local name = "facet.heads.new('" .. cfg.name .. "')"
  local inner_opts = {}
  for k, v in pairs(opts) do
    if k ~= "shard" and k ~= "group" and k ~= "sample" then inner_opts[k] = v end
  end
  local shard = valid.boolean(name, "shard", opts.shard, false)
  local sample = valid.number(name, "sample", opts.sample, { gt = 0, max = 1, default = 1 })
  local g = opts.group
  if g ~= nil and not shard then valid.fail(name, "group is only used with shard = true") end
  if shard and g == nil then
    g = world_group()
    if g == nil then
      valid.fail(name, "shard = true needs a group: facet.dist is not available, pass group = <a facet.dist group>")
    end
  end
  g = g or M.solo
  for _, m in ipairs(GROUP_METHODS) do
    if type(g) ~= "table" and type(g) ~= "userdata" or type(g[m]) ~= "function" then
      valid.fail(name, "group must have the methods " .. table.concat(GROUP_METHODS, ", ") .. " (missing " .. m .. ")")
    end
  end
  local W, r = g:size(), g:rank()
  local K = valid.integer(name, "classes", opts.classes, { min = W, max = 2 ^ 31 - 1 })
  local offset, rows = M.block(K, W, r)
  local inner = Head.new(cfg, inner_opts, { offset = offset, rows = rows })
  local self = setmetatable({ name = cfg.name, kind = inner.kind, classes = K, dim = inner.dim, iter = 0,
    group = g, rank = r, world = W, class_offset = offset, block_rows = rows, sample = sample,
    inner = inner, device = inner.device, ready = false }, Sharded)
  self.sample_seed = (opts.seed or 0)
  self:_alias()
  -- the per-rank block sizes (for gathering the full head), in classes and
  -- in rows of W (k a class with sub-centres)
  self.block_counts, self.row_counts = {}, {}
  for q = 0, W - 1 do
    local _, n = M.block(K, W, q)
    self.block_counts[q + 1], self.row_counts[q + 1] = n, n * inner.subcenters
  end
  return self
end

-- the parameter tensors of the inner block head, as fields of the sharded head
function Sharded:_alias()
  for _, k in ipairs { "weight", "grad_weight", "bias", "grad_bias", "alpha", "grad_alpha", "pending", "norms" } do
    self[k] = self.inner[k]
  end
  for _, k in ipairs { "s", "m", "m1", "m2", "m3", "t", "h", "norm_h", "momentum", "l_a", "u_a", "l_m", "u_m",
    "lambda_g", "gamma", "keep", "lambda",
    "easy_margin", "learn_alpha", "fused", "batch_mean", "batch_std", "subcenters", "std", "plus", "elastic" } do
    self[k] = self.inner[k]
  end
end

local function live(self, method)
  if getmetatable(self) ~= Sharded then error("head:" .. method .. ": call it with ':' on a head", 3) end
  if self.inner == nil or self.inner:is_freed() then
    error(("%s:%s: the head was freed (head:free())"):format(self.name, method), 3)
  end
  return self.inner
end

-- ---- buffers ----------------------------------------------------------------------------

-- buffers for B local rows, Bg global rows and n sampled classes (kept while
-- those stay); with k sub-centres the rows of W are k times the classes
function Sharded:_buffers(B, Bg, n)
  local b = self.buf
  if b and b.B == B and b.Bg == Bg and b.n == n and b.device == self.device then return b end
  local inner, D, dev, sc = self.inner, self.dim, self.device, self.inner.subcenters
  local rows = self.block_rows * sc
  local o = { device = dev }
  b = { B = B, Bg = Bg, n = n, device = dev }
  inner:_input_buffers(b, B)
  b.ylocal = tensor.empty({ B }, { dtype = "int64", device = dev })
  b.z = tensor.empty({ Bg, n }, o)
  inner:_subcenter_buffers(b, Bg, n)
  n = n * sc                                  -- from here: rows of W
  b.rows = tensor.empty({ Bg, NROW }, o)
  b.m, b.M, b.s = tensor.empty({ Bg, 1 }, o), tensor.empty({ Bg, 1 }, o), tensor.empty({ Bg, 1 }, o)
  b.mcol, b.scol = b.rows:narrow(2, MAXC, 1), b.rows:narrow(2, SUMC, 1)   -- views, made once
  b.dinput_g = tensor.empty({ Bg, D }, o)
  b.sum_over_ranks = function(t) self.group:allreduce(t, "sum") end   -- a learned alpha's gradient (in place)
  if self.kind == "cosine" then
    b.wnorm = tensor.empty({ rows }, o)
    b.colsum_cos = tensor.empty({ n }, o)
    -- what the block head's weight_changed and grad_sumsq (fused) use: the
    -- norms the optimizer writes arrive in b.wnorm
    inner.buf = { wnorm = b.wnorm, colsum_cos = n == rows and b.colsum_cos or tensor.empty({ rows }, o) }
  else
    b.colsum = tensor.empty({ n }, o)
    b.colsum_cos = tensor.empty({ n }, o)
  end
  if self.sample < 1 then
    b.ws = tensor.empty({ n, D }, o)         -- the sampled rows of W
    b.gs = tensor.empty({ n, D }, o)         -- their gradient
    if self.kind == "cosine" then b.wn_s = tensor.empty({ n, 1 }, o) end
    if self.inner.bias then b.bias_s = tensor.empty({ n, 1 }, o) end
    if self.fused then b.pend_s = tensor.empty({ n }, o) end
    b.ymap = tensor.empty({ Bg }, { dtype = "int64", device = dev })
    b.idx = tensor.empty({ n }, { dtype = "int64", device = dev })
    -- row-shaped views of the block's vectors, for the row gathers and scatters
    if b.wnorm then b.wnorm_rows, b.wn_flat = b.wnorm:reshape(rows, 1), b.wn_s:reshape(n) end
    if b.bias_s then
      b.bias_rows, b.grad_bias_rows = inner.bias:reshape(rows, 1), inner.grad_bias:reshape(rows, 1)
      b.bias_flat, b.colsum_rows = b.bias_s:reshape(n), b.colsum:reshape(n, 1)
    end
    if b.pend_s then b.pending_rows, b.pend_s_rows = inner.pending:reshape(rows, 1), b.pend_s:reshape(n, 1) end
  end
  self.inner.norms_valid = false
  self.buf = b
  return b
end

-- host arrays of the sampler, one value per class of the block
function Sharded:_sampler()
  local s = self.sampler
  if s then return s end
  local rows = self.block_rows
  s = { mark = ffi.new("uint8_t[?]", rows), pos = ffi.new("int32_t[?]", rows),
    u = tensor.empty({ rows }), idx = tensor.empty({ rows }, { dtype = "int64" }) }
  -- with sub-centres, the W rows of the drawn classes
  if self.inner.subcenters > 1 then s.ridx = tensor.empty({ rows * self.inner.subcenters }, { dtype = "int64" }) end
  self.sampler = s
  return s
end

-- ---- sampling ---------------------------------------------------------------------------

--- The number of classes a rank with `rows` classes keeps at rate sample
-- before positives are counted: round(sample * rows), at least 1.
function M.sample_size(sample, rows)
  return math.max(1, math.min(rows, math.floor(sample * rows + 0.5)))
end

-- Picks this step's classes from the host labels yg (Bg int64): every
-- positive, plus uniformly drawn negatives up to sample_size; fills the
-- sampler's idx (1-based block rows, ascending) and pos (row -> position);
-- returns their number. The uniforms come from one counter-based stream over
-- all K classes per step, so a class's draw does not depend on W.
function Sharded:_draw(yg, Bg)
  local s, rows, off = self:_sampler(), self.block_rows, self.class_offset
  local mark, pos = s.mark, s.pos
  local y = ffi.cast("int64_t *", yg:data_ptr())
  local npos = 0
  for i = 0, Bg - 1 do
    local k = tonumber(y[i]) - off
    if k >= 0 and k < rows and mark[k] == 0 then mark[k], npos = 1, npos + 1 end
  end
  local want = math.max(npos, M.sample_size(self.sample, rows))
  -- the weight initialisation used [0, K * k * dim) of this seed's stream (k sub-centres a class)
  local start = self.classes * self.inner.subcenters * self.dim + self.iter * self.classes + off
  check(C.facet_tensor_rand_uniform(s.u.h, self.sample_seed, start, 0, 1))
  local u, idx = ffi.cast("float *", s.u:data_ptr()), ffi.cast("int64_t *", s.idx:data_ptr())
  -- Knuth's algorithm S over the negatives: each is kept with probability need / left
  local need, left, n = want - npos, rows - npos, 0
  for k = 0, rows - 1 do
    if mark[k] == 1 then
      mark[k], pos[k], idx[n], n = 0, n, k + 1, n + 1
    else
      if left * u[k] < need then idx[n], n, need = k + 1, n + 1, need - 1 end
      left = left - 1
    end
  end
  self.sampled = n
  return n
end

--- The classes (0-based, ascending) of this rank's block that the last
-- forward used: all of the block without sampling.
function Sharded:sampled_classes()
  live(self, "sampled_classes")
  local r, off = {}, self.class_offset
  if self.sample >= 1 then
    for k = 1, self.block_rows do r[k] = off + k - 1 end
    return r
  end
  if not self.sampled then return r end
  local idx = ffi.cast("int64_t *", self.sampler.idx:data_ptr())
  for j = 0, self.sampled - 1 do r[j + 1] = off + tonumber(idx[j]) - 1 end
  return r
end

-- ---- forward and backward ---------------------------------------------------------------

-- each rank's batch size, as a Lua list
function Sharded:_counts(B)
  local t = self._count or tensor.empty({ 1 })
  self._count = t
  t:fill_(B)
  local all = self.group:allgather(t)
  local counts, equal = {}, true
  for q = 1, self.world do
    counts[q] = math.floor(all:get(q) + 0.5)
    if counts[q] ~= B then equal = false end
  end
  return counts, equal
end

-- the name of 0-based row i of the global batch: "<local row> of rank <q>"
-- (the local row alone on one rank)
local function global_row(counts, i)
  if #counts == 1 then return i + 1 end
  local q = 1
  while q < #counts and i >= counts[q] do i, q = i - counts[q], q + 1 end
  return ("%d of rank %d"):format(i + 1, q - 1)
end

--- The loss of the global batch (every rank returns the same number); x: this
-- rank's B x dim embeddings, y: their B labels in [0, classes). Labels on the
-- GPU are checked once gathered (with the loss, see Head:_finish): every rank
-- then raises the same error, naming the rank of the row.
function Sharded:forward(x, y)
  local name = self.name .. ":forward"
  local inner = live(self, "forward")
  local B
  x, y, B = inner:_check_input(x, y, name, self.classes)
  self.ready = false
  x = x:contiguous()
  local g = self.group
  local counts, equal = self:_counts(B)
  local Bg = 0
  for q = 1, self.world do Bg = Bg + counts[q] end
  local n = self.block_rows
  local yg_host
  if self.sample < 1 then
    -- the labels first: the sampled count sizes the buffers
    local yl = self._ylocal
    if not (yl and yl:numel() == B and yl:device() == self.device) then
      yl = tensor.empty({ B }, { dtype = "int64", device = self.device })
      self._ylocal = yl
    end
    yl:copy(y)
    local yg = g:allgather(yl, counts)
    yg_host = yg:device() == "cpu" and yg or yg:to("cpu")
    -- the labels are on the host here anyway: checked before the draw uses them
    Head._check_range(yg_host, Bg, self.classes, name, function(i) return global_row(counts, i) end)
    n = self:_draw(yg_host, Bg)
  end
  local b = self:_buffers(B, Bg, n)
  x = inner:_widen(x, b)
  local h = inner.handle
  inner.iter = self.iter
  local lambda = inner.current_lambda
  inner:_schedule()
  local input = inner:_input(x, b)
  local xg = g:allgather(input, counts)
  local W, wnorm, bias, labels, off, ncls = inner.weight, inner:_wnorm(b.wnorm), inner.bias, nil, self.class_offset,
    self.classes
  if self.sample < 1 then
    -- the sampled rows as their own block at offset 1; labels of other blocks map to 0
    local s = self.sampler
    local idx = s.idx:narrow(1, 1, n)
    local sc = inner.subcenters
    if sc > 1 then
      -- class c (1-based) is W rows (c - 1) k + 1 ... c k
      local cp, rp = ffi.cast("int64_t *", s.idx:data_ptr()), ffi.cast("int64_t *", s.ridx:data_ptr())
      for j = 0, n - 1 do
        local base = (tonumber(cp[j]) - 1) * sc
        for u = 0, sc - 1 do rp[j * sc + u] = base + u + 1 end
      end
      idx = s.ridx:narrow(1, 1, n * sc)
    end
    b.idx:copy(idx)
    check(C.facet_tensor_index_select(b.ws.h, W.h, b.idx.h, 1))
    if wnorm then check(C.facet_tensor_index_select(b.wn_s.h, b.wnorm_rows.h, b.idx.h, 1)) end
    if bias then check(C.facet_tensor_index_select(b.bias_s.h, b.bias_rows.h, b.idx.h, 1)) end
    local map = self.ymap_host
    if not (map and map:numel() == Bg) then map = tensor.empty({ Bg }, { dtype = "int64" }); self.ymap_host = map end
    local yp, mp = ffi.cast("int64_t *", yg_host:data_ptr()), ffi.cast("int64_t *", map:data_ptr())
    local rows, pos = self.block_rows, s.pos
    for i = 0, Bg - 1 do
      local k = tonumber(yp[i]) - self.class_offset
      mp[i] = (k >= 0 and k < rows) and pos[k] + 1 or 0
    end
    b.ymap:copy(map)
    W, labels, off, ncls = b.ws, b.ymap, 1, n + 1
    wnorm = wnorm and b.wn_flat or nil
    bias = bias and b.bias_flat or nil
  else
    b.ylocal:copy(y)
    labels = g:allgather(b.ylocal, counts)
  end
  check(C.facet_tensor_matmul((b.sub or b.z).h, xg.h, W.h, 0, 1, 1, 0))
  local wnorm_w = wnorm                       -- the norms of W's rows (sub-centres: the row passes take ones)
  wnorm = inner:_subcenter_max(b, b.z, b.sub, wnorm)
  local wn_h, bias_h = wnorm and wnorm.h or nil, bias and bias.h or nil
  -- the target fields of every row, from the rank that owns its label
  b.rows:zero_()
  -- AdaFace: every rank sees every row's norm, so every rank moves the
  -- statistics alike (the rows' z field is read by target alone, so the sum below may scale it)
  local norms = (inner.norm_h ~= nil or inner.l_a ~= nil) and g:allgather(b.xnorm, counts) or nil
  inner:_save_state()
  inner:_update_norms(b.rows, norms)
  inner:_update_margins(b.rows, norms)
  check(C.facet_head_target(h, b.rows.h, b.z.h, wn_h, bias_h, labels.h, off, ncls))
  g:allreduce(b.rows, "sum")
  inner:_elastic(b, b.rows)   -- ElasticFace: every rank draws the same margins for the global batch
  inner:_update_t(b.rows)     -- CurricularFace: every rank sees the same c_y, so the same t
  inner:_update_margins(b.rows, norms)    -- MagFace: the sum scaled the margin and regulariser fields
  -- this block's max and sum of exponentials, merged: M = max_r m_r, S = sum_r s_r exp(m_r - M)
  check(C.facet_head_partial(h, b.rows.h, b.z.h, wn_h, bias_h, labels.h, off))
  local mcol, scol = b.mcol, b.scol
  b.m:copy(mcol)
  b.M:copy(mcol)
  g:allreduce(b.M, "max")
  b.s:copy(scol)
  check(C.facet_tensor_binary(b.m.h, b.m.h, b.M.h, C.FACET_BINARY_SUB))
  check(C.facet_tensor_unary(b.m.h, b.m.h, C.FACET_UNARY_EXP, 0, 0))
  check(C.facet_tensor_binary(b.s.h, b.s.h, b.m.h, C.FACET_BINARY_MUL))
  g:allreduce(b.s, "sum")
  mcol:copy(b.M)
  scol:copy(b.s)
  local loss = inner:_finish(b.rows, name, function(i) return global_row(counts, i) end,
    function() inner:_unschedule(lambda); inner:_restore_state() end)
  self.iter = self.iter + 1
  inner.iter = self.iter
  self.fw = { xg = xg, W = W, wnorm = wnorm, wnorm_w = wnorm_w, bias = bias, labels = labels, off = off,
    counts = counts, equal = equal, B = B, norms = norms }
  self.ready = true
  self.loss = loss
  return loss
end

--- dL/dx of this rank's rows (a buffer reused by the next call); accumulates
-- the gradients of this rank's block (grad_weight, grad_bias) and grad_alpha.
function Sharded:backward()
  local inner = live(self, "backward")
  if not self.ready then
    error(self.name .. ":backward: no forward to go back through (call forward first, once per backward; " ..
      "a forward that failed leaves none)", 2)
  end
  self.ready = false
  local b, f, g = self.buf, self.fw, self.group
  local colsum = inner.bias and b.colsum or nil
  local sc = inner.subcenters > 1
  check(C.facet_head_backward(inner.handle, b.z.h, b.rows.h, f.wnorm and f.wnorm.h or nil, f.bias and f.bias.h or nil,
    f.labels.h, f.off, colsum and colsum.h or nil, not sc and b.colsum_cos.h or nil))
  -- sub-centres: the gradient of the GEMM output over the K k rows
  local gz = inner:_subcenter_scatter(b, b.z, b.sub, f.wnorm_w, b.colsum_cos)
  -- this block's share of dL/d(input) for every row of the global batch
  check(C.facet_tensor_matmul(b.dinput_g.h, gz.h, f.W.h, 0, 0, 1, 0))
  if self.sample < 1 then
    check(C.facet_tensor_matmul(b.gs.h, gz.h, f.xg.h, 1, 0, 1, 0))
    local pend = nil
    if self.fused then b.pend_s:zero_(); pend = b.pend_s end
    inner:_radial(b.gs, b.ws, b.colsum_cos, f.wnorm_w, pend)
    check(C.facet_tensor_index_add(inner.grad_weight.h, b.gs.h, b.idx.h, 1, 1))
    if pend then check(C.facet_tensor_index_add(b.pending_rows.h, b.pend_s_rows.h, b.idx.h, 1, 1)) end
    if colsum then check(C.facet_tensor_index_add(b.grad_bias_rows.h, b.colsum_rows.h, b.idx.h, 1, 1)) end
  else
    check(C.facet_tensor_matmul(inner.grad_weight.h, gz.h, f.xg.h, 1, 0, 1, 1))
    inner:_radial(inner.grad_weight, inner.weight, b.colsum_cos, f.wnorm_w, inner.pending)
    if colsum then check(C.facet_tensor_axpy(inner.grad_bias.h, inner.grad_bias.h, 1, colsum.h)) end
  end
  -- the rows' gradients summed over the blocks, back to the ranks that own the rows
  if f.equal then
    b.dinput:copy(g:reduce_scatter(b.dinput_g, "sum"))
  else
    g:allreduce(b.dinput_g, "sum")
    local start = 1
    for q = 1, self.rank do start = start + f.counts[q] end
    b.dinput:copy(b.dinput_g:narrow(1, start, f.B))
  end
  local dx = inner:_input_grad(b, b.dinput, b.sum_over_ranks)
  if f.norms then
    -- MagFace: the gradient through this rank's rows' norms
    local start = 1
    for q = 1, self.rank do start = start + f.counts[q] end
    inner:_norm_grad(b, b.rows, f.norms, dx, b.xhat, start)
  end
  return inner:_narrow(b, dx)
end

-- ---- parameters and state -----------------------------------------------------------------

-- the full tensor of the ranks' blocks t: K rows, K k for the weight with
-- sub-centres (a collective)
function Sharded:_gather(t)
  return self.group:allgather(t, t:size(1) == self.block_rows and self.block_counts or self.row_counts)
end

-- a number summed over the ranks (a collective)
function Sharded:_sum(v)
  local one = self._one or tensor.empty({ 1 })
  self._one = one
  one:fill_(v)
  self.group:allreduce(one, "sum")
  return one:item()
end

-- this rank's rows of a full K-row tensor, or of the K k rows of a weight
-- with sub-centres (a view)
function Sharded:_slice(full)
  local k = full:size(1) == self.classes and 1 or self.inner.subcenters
  return full:narrow(1, self.class_offset * k + 1, self.block_rows * k)
end

--- named_parameters() as facet.heads.head's, for this rank's block; the
-- weight and bias entries carry shard = { shape (the full head's), gather(t),
-- slice(full), sum(x) (over the ranks) } and their gradients are this rank's
-- alone (never averaged over ranks); the alpha entry is marked reduced (its
-- gradient is already the sum over ranks).
function Sharded:named_parameters(prefix, out)
  local inner = live(self, "named_parameters")
  out = out or {}
  local first = #out + 1
  inner:named_parameters(prefix, out)
  for i = first, #out do
    local e = out[i]
    if e.param == inner.weight or e.param == inner.bias then
      local shape = e.param:shape()
      shape[1] = self.classes * (e.param == inner.weight and inner.subcenters or 1)
      e.shard = { shape = shape, gather = function(t) return self:_gather(t) end,
        slice = function(full) return self:_slice(full) end, sum = function(v) return self:_sum(v) end }
    else
      e.reduced = true
    end
  end
  return out
end

--- Parameters and their gradients, as two lists (Torch7's shape), from named_parameters.
Sharded.parameters = Head.parameters

function Sharded:zero_grad() live(self, "zero_grad"); self.inner:zero_grad() end
function Sharded:finish_grad() live(self, "finish_grad"); return self.inner:finish_grad() end
function Sharded:weight_changed(norms_written)
  if self.inner then self.inner:weight_changed(norms_written) end
end

--- The full head's tensors { weight, bias, alpha } and its state (Head:state_tensors) under the unsharded head's
-- names and shapes (a collective: every rank calls it, each gets the full head).
function Sharded:state_dict()
  local inner = live(self, "state_dict")
  local t = { weight = self:_gather(inner.weight) }
  if inner.bias then t.bias = self:_gather(inner.bias) end
  if inner.alpha then t.alpha = inner.alpha end
  for k, v in pairs(inner.state) do t[k] = v end     -- CurricularFace's t, AdaFace's statistics
  return t
end

--- The adaptive heads' state (the same on every rank), as Head:state_tensors.
function Sharded:state_tensors()
  return live(self, "state_tensors"):state_tensors()
end

--- Loads this rank's rows of a full head's tensors (what state_dict() or an
-- unsharded head holds); everything is checked before anything is copied.
function Sharded:load_state_dict(t)
  local inner = live(self, "load_state_dict")
  local fn = self.name .. ":load_state_dict"
  if type(t) ~= "table" then valid.fail(fn, "want a table of tensors (weight, bias, alpha, the head's state)") end
  local want, names = { weight = { self.classes * inner.subcenters, self.dim } }, { "weight" }
  if inner.bias then want.bias = { self.classes }; names[#names + 1] = "bias" end
  if inner.alpha then want.alpha = { 1 }; names[#names + 1] = "alpha" end
  local state = inner.state
  for _, k in ipairs { "t", "batch_mean", "batch_std" } do
    if state[k] then want[k] = { 1 }; names[#names + 1] = k end
  end
  for k, v in pairs(t) do
    if not want[k] then
      valid.fail(fn, ("unknown tensor '%s' (the head has %s)"):format(tostring(k), table.concat(names, ", ")))
    end
    if not tensor.is_tensor(v) or v:is_freed() then valid.fail(fn, k .. " is not a live tensor") end
    if table.concat(v:shape(), "x") ~= table.concat(want[k], "x") then
      valid.fail(fn, ("%s has shape %s, want %s"):format(k, table.concat(v:shape(), "x"), table.concat(want[k], "x")))
    end
  end
  for k in pairs(want) do
    if t[k] == nil then valid.fail(fn, "missing " .. k) end
  end
  inner.weight:copy(self:_slice(t.weight))
  if inner.bias then inner.bias:copy(self:_slice(t.bias)) end
  if inner.alpha then inner.alpha:copy(t.alpha) end
  for k, v in pairs(state) do v:copy(t[k]) end
  inner:weight_changed(false)
end

--- The per-sample margins of the last forward over the global batch (as Head:margins).
function Sharded:margins()
  return live(self, "margins"):_margins(self.buf)
end

--- Releases the block head and the buffers (as head:free()).
function Sharded:free()
  if getmetatable(self) ~= Sharded then error("head:free: call it with ':' on a head", 2) end
  if self.inner then self.inner:free() end
  self.buf, self.fw, self.ready, self.sampler = nil, nil, false, nil
end
Sharded.close = Sharded.free

function Sharded:is_freed() return self.inner == nil or self.inner:is_freed() end

--- Moves the block to a device ("cpu" or "cuda"); create the optimizer afterwards.
function Sharded:to(device)
  local inner = live(self, "to")
  inner:to(device)
  self.device = inner.device
  self.buf, self.fw, self.ready = nil, nil, false
  self:_alias()
  return self
end
function Sharded:cuda() return self:to("cuda") end
function Sharded:float() return self:to("cpu") end
Sharded.cpu = Sharded.float

function Sharded:__tostring()
  local inner = tostring(self.inner):gsub("classes=%d+", "classes=" .. self.classes)
  return (inner:gsub("%)$", (", shard %d/%d [%d, %d)%s)"):format(self.rank, self.world, self.class_offset,
    self.class_offset + self.block_rows, self.sample < 1 and (", sample=%g"):format(self.sample) or "")))
end

valid.methods(Solo, "group", "a facet.dist group")

return M
