--- The Vision Transformer's token layers:
-- facet.nn.Tokens(): N x C x H x W feature maps -> N x (H W) x C tokens, token
--   h W + w (PyTorch's x.flatten(2).transpose(1, 2)); any dtype.
-- facet.nn.Rows(module): runs a module made for B x features matrices (Linear,
--   an MLP) on every token: x of ... x F is read as (prod ...) x F and the
--   output read back as ... x F'. Its child is transparent in the state
--   ("fc1.weight", not "1.fc1.weight").
-- facet.nn.PosEmbed(tokens, dim): y = x + pos_embed for B x tokens x dim
--   tokens, with the parameter pos_embed of 1 x tokens x dim (arcface_torch's
--   name; it starts at zeros, models draw their own start); its gradient
--   accumulates the batch's sum of grad_out. float32 (a 16-bit input is
--   widened and rounded once).
-- facet.nn.TokenMask(inner, tokens, dim, ratio): arcface_torch's random token
--   masking around `inner` (its blocks and final norm). In training with
--   ratio > 0 each sample keeps floor(tokens (1 - ratio)) of its tokens,
--   chosen uniformly at random (MAE's per-sample shuffle: the tokens of the
--   smallest noise values), inner runs on the kept tokens only, and the
--   masked places of the output get the learned mask_token (1 x 1 x dim) at
--   their positions. In evaluation, or with ratio 0, inner sees every token
--   and mask_token is unused. The noise comes from the model's random stream
--   (self.rng, as nn.Dropout's), so a seed reproduces the masks on any device;
--   the choice is made on the CPU (B x tokens values a step). inner's state
--   sits in this module's namespace (a transparent child): "blocks.0.norm1.weight",
--   "norm.weight", and "mask_token".
local Module = require "facet.nn.Module"
local Dropout = require "facet.nn.Dropout"
local tensor = require "facet.tensor"
local core = require "facet.core"
local valid = require "facet.check"
local ffi = require "ffi"

local C, check = core.C, core.check
local M = {}

local TO_TOKENS = ffi.new("int[3]", { 0, 2, 1 })    -- N,C,HW <-> N,HW,C

M.Tokens = Module:extend("Tokens")
M.Tokens.any_dtype = true
function M.Tokens.new() return Module.init(M.Tokens) end
function M.Tokens:update_output(x)
  local s = x:shape()
  if #s ~= 4 then self:fail(("want N x C x H x W input, got %s"):format(table.concat(s, "x"))) end
  local out = self:buffer("output", { s[1], s[3] * s[4], s[2] }, x:dtype())
  check(C.facet_tensor_permute(out.h, self:_view("x3", x, { s[1], s[2], s[3] * s[4] }).h, TO_TOKENS))
  return out
end
function M.Tokens:update_grad_input(x, grad_out)
  local s = x:shape()
  local gi = self:buffer("grad_input", s, grad_out:dtype())
  check(C.facet_tensor_permute(self:_view("gi3", gi, { s[1], s[2], s[3] * s[4] }).h, grad_out.h, TO_TOKENS))
  return gi
end

M.Rows = Module:extend("Rows")
M.Rows.any_dtype = true
function M.Rows.new(module)
  if type(module) ~= "table" or type(module.forward) ~= "function" then
    core.raise("nn.Rows(module): module must be a facet.nn module", 2)
  end
  local self = Module.init(M.Rows)
  self.modules, self.names = { module }, { "" }
  return self
end
function M.Rows:describe() return "Rows" end

-- x's shape with its last size replaced by n
local function with_last(s, n)
  local r = {}
  for i = 1, #s - 1 do r[i] = s[i] end
  r[#s] = n
  return r
end

function M.Rows:update_output(x)
  local s = x:shape()
  if #s < 2 then self:fail(("want an input of at least 2 dims, got %s"):format(table.concat(s, "x"))) end
  local m = self.modules[1]
  local y = Module.in_child(self, 1, m, m.forward, m, self:_view("x2", x, { x:numel() / s[#s], s[#s] }))
  local ys = y:shape()
  return self:_view("out", y, with_last(s, ys[#ys]))
end
function M.Rows:backward(x, grad_out)
  x, grad_out = self:check_backward(x, grad_out)
  local s, m = x:shape(), self.modules[1]
  local gs = grad_out:shape()
  local gi = Module.in_child(self, 1, m, m.backward, m, self:_view("x2", x, { x:numel() / s[#s], s[#s] }),
    self:_view("g2", grad_out, { grad_out:numel() / gs[#gs], gs[#gs] }))
  self.grad_input = self:_view("grad", gi, s)
  return self.grad_input
end

local PosEmbed = Module:extend("PosEmbed")
M.PosEmbed = PosEmbed

function PosEmbed.new(tokens, dim)
  local fn = "nn.PosEmbed"
  valid.integer(fn, "tokens", tokens, { min = 1, max = 2 ^ 31 - 1 })
  valid.integer(fn, "dim", dim, { min = 1, max = 2 ^ 31 - 1 })
  local self = Module.init(PosEmbed)
  self.tokens, self.dim = tokens, dim
  self:register("pos_embed", tensor.zeros({ 1, tokens, dim }), "norm")
  return self
end

function PosEmbed:describe() return ("PosEmbed(%d x %d)"):format(self.tokens, self.dim) end

-- B of a B x tokens x dim input (PosEmbed, TokenMask), after checking it
local function batch_of(self, x)
  local s = x:shape()
  if #s ~= 3 or s[2] ~= self.tokens or s[3] ~= self.dim then
    self:fail(("want B x %d x %d input, got %s"):format(self.tokens, self.dim, table.concat(s, "x")))
  end
  return s[1]
end

function PosEmbed:update_output(x)
  batch_of(self, x)
  local out = self:buffer("output", x:shape())
  check(C.facet_tensor_binary(out.h, x.h, self.pos_embed.h, C.FACET_BINARY_ADD))
  return out
end

function PosEmbed:update_grad_input(x, grad_out) return grad_out end

function PosEmbed:acc_grad_parameters(x, grad_out)
  batch_of(self, x)
  local sum = self:buffer("batch_sum", { self.tokens, self.dim })
  check(C.facet_tensor_reduce(sum.h, grad_out.h, C.FACET_REDUCE_SUM, 0, 0))
  local g = self:_view("grad", self.grad_pos_embed, { self.tokens, self.dim })
  check(C.facet_tensor_axpy(g.h, g.h, 1, sum.h))
end

local TokenMask = Module:extend("TokenMask")
M.TokenMask = TokenMask
TokenMask.any_dtype = true

function TokenMask.new(inner, tokens, dim, ratio)
  local fn = "nn.TokenMask"
  valid.module(fn, "inner", inner)
  valid.integer(fn, "tokens", tokens, { min = 1, max = 2 ^ 31 - 1 })
  valid.integer(fn, "dim", dim, { min = 1, max = 2 ^ 31 - 1 })
  valid.number(fn, "ratio", ratio, { min = 0, lt = 1 })
  local self = Module.init(TokenMask)
  self.tokens, self.dim, self.ratio = tokens, dim, ratio
  self.keep = math.floor(tokens * (1 - ratio))
  if self.keep < 1 then valid.fail(fn, ("ratio %g keeps no token of %d"):format(ratio, tokens)) end
  self.modules, self.names = { inner }, { "" }
  self:register("mask_token", tensor.zeros({ 1, 1, dim }), "norm")
  self.rng = { seed = Dropout.SEED, offset = 0 }
  return self
end

function TokenMask:describe()
  return ("TokenMask(keep %d of %d)"):format(self.keep, self.tokens)
end

local function masking(self) return self.training and self.keep < self.tokens end

-- the noise by_noise compares (set before each sort: no closure per step)
local sort_noise
local function by_noise(a, b) return sort_noise[a] < sort_noise[b] or (sort_noise[a] == sort_noise[b] and a < b) end

-- the rows (of the B * tokens token rows) each sample keeps, in order, as an
-- int64 index on the module's device (buffers and tables reused)
local function draw_kept(self, B)
  local N, K = self.tokens, self.keep
  local noise = self.buffers.noise
  if not noise or noise:numel() ~= B * N then
    noise = tensor.empty({ B * N })
    self.buffers.noise = noise
  end
  local rng = self.rng
  check(C.facet_tensor_rand_uniform(noise.h, rng.seed, rng.offset, 0, 1))
  rng.offset = rng.offset + B * N
  local host = self.buffers.kept_host
  if not host or host:numel() ~= B * K then
    host = tensor.empty({ B * K }, { dtype = "int64" })
    self.buffers.kept_host = host
  end
  local np, hp = noise:data_ptr(), host:data_ptr()
  local order, keep = self._order or {}, self._keep or {}
  self._order, self._keep = order, keep
  sort_noise = np
  for b = 0, B - 1 do
    for t = 1, N do order[t] = b * N + t - 1 end
    for t = #order, N + 1, -1 do order[t] = nil end
    table.sort(order, by_noise)
    for t = 1, K do keep[t] = order[t] end
    for t = #keep, K + 1, -1 do keep[t] = nil end
    table.sort(keep)
    for t = 1, K do hp[b * K + t - 1] = keep[t] end
  end
  if self.device == "cpu" then return host end
  local dev = self:buffer("kept", { B * K }, "int64")
  dev:copy(host)
  return dev
end

-- t as float32 (the index kernels' dtype): itself, or a copy in a kept buffer
local function f32(self, name, t)
  if t:dtype() == "float32" then return t end
  local b = self:buffer(name, t:shape())
  b:copy(t)
  return b
end

-- src (float32) into a buffer of dtype: src itself when that is float32
local function as_dtype(self, name, src, dtype)
  if dtype == "float32" then return src end
  local b = self:buffer(name, src:shape(), dtype)
  b:copy(src)
  return b
end

function TokenMask:update_output(x)
  local inner = self.modules[1]
  if not masking(self) then return Module.in_child(self, 1, inner, inner.forward, inner, x) end
  local B, N, K, D = batch_of(self, x), self.tokens, self.keep, self.dim
  local kept = draw_kept(self, B)
  self.buffers.kept_in_use = kept
  local xk = self:buffer("x_kept", { B, K, D })
  check(C.facet_tensor_index_select(self:_view("xk2", xk, { B * K, D }).h,
    self:_view("x2", f32(self, "x32", x), { B * N, D }).h, kept.h, 0))
  xk = as_dtype(self, "x_kept16", xk, x:dtype())
  self.buffers.x_kept_in = xk
  local y = Module.in_child(self, 1, inner, inner.forward, inner, xk)
  local y32 = f32(self, "y32", y)
  -- every place gets mask_token (row 0 of a 1 x D source, by an index of zeros), the kept ones y
  local zeros = self:buffer("zero_index", { B * N }, "int64")
  if not rawequal(self._zeros_ready, zeros) then
    zeros:zero_()
    self._zeros_ready = zeros
  end
  local out = self:buffer("output32", { B, N, D })
  local out2 = self:_view("out2", out, { B * N, D })
  check(C.facet_tensor_index_select(out2.h, self:_view("mask2", self.mask_token, { 1, D }).h, zeros.h, 0))
  check(C.facet_tensor_index_copy(out2.h, self:_view("y2", y32, { B * K, D }).h, kept.h, 0))
  return as_dtype(self, "output16", out, y:dtype())
end

function TokenMask:backward(x, grad_out)
  x, grad_out = self:check_backward(x, grad_out)
  local inner = self.modules[1]
  if not masking(self) then
    self.grad_input = Module.in_child(self, 1, inner, inner.backward, inner, x, grad_out)
    return self.grad_input
  end
  local B, N, K, D = batch_of(self, x), self.tokens, self.keep, self.dim
  local kept = self.buffers.kept_in_use
  if not kept then self:fail("backward: no forward in training mode came before it") end
  local g2 = self:_view("g2", f32(self, "g32", grad_out), { B * N, D })
  local gk = self:buffer("grad_kept", { B, K, D })
  local gk2 = self:_view("gk2", gk, { B * K, D })
  check(C.facet_tensor_index_select(gk2.h, g2.h, kept.h, 0))
  -- mask_token's gradient: the sum over the masked places = all rows - kept rows
  local all, part = self:buffer("sum_all", { D }), self:buffer("sum_kept", { D })
  check(C.facet_tensor_reduce(all.h, g2.h, C.FACET_REDUCE_SUM, 0, 0))
  check(C.facet_tensor_reduce(part.h, gk2.h, C.FACET_REDUCE_SUM, 0, 0))
  local gm = self:_view("gmask", self.grad_mask_token, { D })
  check(C.facet_tensor_axpy(gm.h, gm.h, 1, all.h))
  check(C.facet_tensor_axpy(gm.h, gm.h, -1, part.h))
  local gxk = Module.in_child(self, 1, inner, inner.backward, inner, self.buffers.x_kept_in,
    as_dtype(self, "grad_kept16", gk, self.output:dtype()))
  local gi = self:buffer("grad_input32", { B, N, D })
  gi:zero_()
  check(C.facet_tensor_index_copy(self:_view("gi2", gi, { B * N, D }).h,
    self:_view("gxk2", f32(self, "gxk32", gxk), { B * K, D }).h, kept.h, 0))
  self.grad_input = as_dtype(self, "grad_input16", gi, x:dtype())
  return self.grad_input
end

return M
