--- facet.nn.MultiheadAttention(dim, heads [, opts]): multi-head self-attention
-- over tokens, B x N x dim in and out (arcface_torch's ViT Attention):
--   qkv = x Wqkv^T (+ b) split into q, k, v of B x heads x N x dim/heads,
--   a = softmax(q k^T * scale) over the keys, y = proj(concat_heads(a v)).
-- opts: qkv_bias (false, as arcface_torch), scale (dim/heads ^ -0.5).
-- Children: qkv = Linear(dim, 3 dim) and proj = Linear(dim, dim), so the
-- state reads "qkv.weight", "proj.weight", "proj.bias" as PyTorch's. The
-- per-head products are batched GEMMs (facet_tensor_matmul, 3-D) over
-- B * heads, the softmax facet_softmax_forward/backward. Everything runs in
-- float32: a 16-bit input is widened and the output rounded once (arcface_torch
-- computes the attention itself in float32 too).
local Module = require "facet.nn.Module"
local Linear = require "facet.nn.Linear"
local core = require "facet.core"
local valid = require "facet.check"
local ffi = require "ffi"

local C, check = core.C, core.check
local MHA = Module:extend("MultiheadAttention")

-- permutations of facet_tensor_permute (0-based), kept for the whole run
local QKV_SPLIT = ffi.new("int[5]", { 2, 0, 3, 1, 4 })   -- B,N,3,h,d -> 3,B,h,N,d
local QKV_JOIN = ffi.new("int[5]", { 1, 3, 0, 2, 4 })    -- 3,B,h,N,d -> B,N,3,h,d
local SWAP_12 = ffi.new("int[4]", { 0, 2, 1, 3 })        -- B,h,N,d <-> B,N,h,d

function MHA.new(dim, heads, opts)
  local fn = "nn.MultiheadAttention"
  valid.integer(fn, "dim", dim, { min = 1, max = 2 ^ 31 - 1 })
  valid.integer(fn, "heads", heads, { min = 1, max = dim })
  if dim % heads ~= 0 then valid.fail(fn, ("dim %d must be a multiple of heads %d"):format(dim, heads)) end
  opts = valid.options(fn, opts, { "qkv_bias", "scale" })
  local self = Module.init(MHA)
  self.dim, self.heads, self.head_dim = dim, heads, dim / heads
  self.scale = valid.number(fn, "scale", opts.scale, { gt = 0, default = (dim / heads) ^ -0.5 })
  self.modules = { Linear(dim, 3 * dim, valid.boolean(fn, "qkv_bias", opts.qkv_bias, false)), Linear(dim, dim) }
  self.names = { "qkv", "proj" }
  return self
end

function MHA:describe() return ("MultiheadAttention(%d, %d heads)"):format(self.dim, self.heads) end

-- B and N of a B x N x dim input
local function sizes(self, x)
  local s = x:shape()
  if #s ~= 3 or s[3] ~= self.dim then
    self:fail(("want B x N x %d input, got %s"):format(self.dim, table.concat(s, "x")))
  end
  return s[1], s[2]
end

-- part i (0-based) of a 3 x ... buffer as a view, cached while the buffer is the same
local function part(self, key, t, i)
  self._parts = self._parts or {}
  local c = self._parts[key]
  if c and rawequal(c.src, t) then return c.view end
  local v = t:select(1, i + 1)
  self._parts[key] = { src = t, view = v }
  return v
end

function MHA:update_output(x)
  local B, N = sizes(self, x)
  local h, d, D = self.heads, self.head_dim, self.dim
  local qkv_m, proj_m = self.modules[1], self.modules[2]
  local x2 = self:_view("x2", x, { B * N, D })
  local qkv = qkv_m:forward(x2)
  local split = self:buffer("split", { 3, B, h, N, d })
  check(C.facet_tensor_permute(split.h, self:_view("qkv5", qkv, { B, N, 3, h, d }).h, QKV_SPLIT))
  local heads3 = self:_view("heads3", split, { 3, B * h, N, d })
  local q, k, v = part(self, "q", heads3, 0), part(self, "k", heads3, 1), part(self, "v", heads3, 2)
  local probs = self:buffer("probs", { B * h, N, N })
  check(C.facet_tensor_matmul(probs.h, q.h, k.h, 0, 1, self.scale, 0))
  check(C.facet_softmax_forward(probs.h, probs.h))
  local ctx = self:buffer("ctx", { B * h, N, d })
  check(C.facet_tensor_matmul(ctx.h, probs.h, v.h, 0, 0, 1, 0))
  local merged = self:buffer("merged", { B, N, h, d })
  check(C.facet_tensor_permute(merged.h, self:_view("ctx4", ctx, { B, h, N, d }).h, SWAP_12))
  local y = proj_m:forward(self:_view("merged2", merged, { B * N, D }))
  return self:_view("out", y, { B, N, D })
end

-- the whole backward: the children accumulate their parameter gradients
function MHA:update_grad_input(x, grad_out)
  local B, N = sizes(self, x)
  local h, d, D = self.heads, self.head_dim, self.dim
  local qkv_m, proj_m = self.modules[1], self.modules[2]
  local probs, split = self.buffers.probs, self.buffers.split
  if not probs then self:fail("backward: no forward came before it") end
  local gm = proj_m:backward(self:_view("merged2", self.buffers.merged, { B * N, D }),
    self:_view("gout2", grad_out, { B * N, D }))
  local gctx4 = self:buffer("grad_ctx", { B, h, N, d })
  check(C.facet_tensor_permute(gctx4.h, self:_view("gm4", gm, { B, N, h, d }).h, SWAP_12))
  local gctx = self:_view("gctx3", gctx4, { B * h, N, d })
  local heads3 = self:_view("heads3", split, { 3, B * h, N, d })
  local q, k, v = part(self, "q", heads3, 0), part(self, "k", heads3, 1), part(self, "v", heads3, 2)
  local gsplit = self:buffer("grad_split", { 3, B * h, N, d })
  local gq, gk, gv = part(self, "gq", gsplit, 0), part(self, "gk", gsplit, 1), part(self, "gv", gsplit, 2)
  local gprobs = self:buffer("grad_probs", { B * h, N, N })
  check(C.facet_tensor_matmul(gprobs.h, gctx.h, v.h, 0, 1, 1, 0))       -- dL/da = g v^T
  check(C.facet_tensor_matmul(gv.h, probs.h, gctx.h, 1, 0, 1, 0))       -- dL/dv = a^T g
  check(C.facet_softmax_backward(gprobs.h, gprobs.h, probs.h))          -- dL/ds
  check(C.facet_tensor_matmul(gq.h, gprobs.h, k.h, 0, 0, self.scale, 0))
  check(C.facet_tensor_matmul(gk.h, gprobs.h, q.h, 1, 0, self.scale, 0))
  local gqkv = self:buffer("grad_qkv", { B, N, 3, h, d })
  check(C.facet_tensor_permute(gqkv.h, self:_view("gsplit5", gsplit, { 3, B, h, N, d }).h, QKV_JOIN))
  local gx = qkv_m:backward(self:_view("x2", x, { B * N, D }), self:_view("gqkv2", gqkv, { B * N, 3 * D }))
  return self:_view("grad", gx, { B, N, D })
end

return MHA
