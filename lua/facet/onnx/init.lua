--- facet.onnx: exports a facet.nn model as an ONNX inference graph (opset 11,
-- IR version 6, as InsightFace's torch2onnx writes).
--   facet.export_onnx(model, path [, { size = 112, channels = 3, input = "data",
--                                      output = "embedding", batch = "N" }])
--   -> { nodes = n, initializers = n, parameters = n, bytes = n, output = { "N", emb }, folded = n }
-- The graph's input is `input` of shape batch x channels x size x size (batch a
-- symbolic dimension); channels defaults to the first convolution's, size to 112
-- (a number or { h, w }). The tree is walked by module type (converters below,
-- keyed by the module's class name), never by parameter names:
--   Conv2d -> Conv; a BatchNorm2d right after a Conv2d (and a BatchNorm1d right
--   after a Linear) in a Sequential is folded into its weights and bias, which is
--   exact (the BN is an affine map of the layer's output); every other BN (one
--   before a padded convolution, which folding would change at the borders) is a
--   BatchNormalization node with the running statistics;
--   PReLU -> PRelu (slopes C x 1 x 1 on images, C on vectors); ReLU, Sigmoid, Tanh;
--   MaxPool2d / AvgPool2d -> MaxPool / AveragePool; AdaptiveAvgPool2d -> GlobalAveragePool;
--   Flatten -> Flatten(axis 1); Linear -> Gemm (transB); Upsample -> Resize (sizes
--   from the input's shape: Shape, Slice, Concat); Dropout, Identity -> nothing
--   (inference); Sequential, Residual, Add, Mul, Concat, SE, Attention -> their
--   nodes wired as their forward. The ViT's layers: Tokens -> Reshape, Transpose;
--   PosEmbed -> Add; TokenMask -> its inner blocks on every token and DropPath ->
--   nothing (inference); Rows -> Reshape around its child; ReLU6 -> Clip(0, 6);
--   Softmax -> Softmax (last dim); LayerNorm -> ReduceMean, Sub, Mul, Add, Sqrt,
--   Div (LayerNormalization is opset 17); MultiheadAttention -> Gemm (its qkv
--   and proj Linears), Reshape, Transpose, Gather, MatMul, Mul (the scale), Softmax.
-- A module of another class is an error naming it and where it sits; add a
-- converter to facet.onnx.converters to export one. Everything is checked and the
-- whole graph built before the file is written (atomically).
local ffi = require "ffi"
local proto = require "facet.onnx.proto"
local tensor = require "facet.tensor"
local check = require "facet.check"
local sys = require "facet.sys"

local NAME = "facet.export_onnx"
local OPSET, IR_VERSION = 11, 6
local OPTIONS = { "size", "channels", "input", "output", "batch" }

local M = {}

local function fail(text) check.fail(NAME, text) end
local function dims_text(s) return table.concat(s, "x") end

-- ---- the graph under construction ----------------------------------------------------

local Graph = {}
Graph.__index = Graph

local function new_graph()
  return setmetatable({ nodes = {}, inits = {}, taken = {}, params = 0, folded = 0 }, Graph)
end

--- A fresh value name from base (base, base_1, base_2 ...).
function Graph:name(base)
  local n, name = 0, base
  while self.taken[name] do
    n = n + 1
    name = ("%s_%d"):format(base, n)
  end
  self.taken[name] = true
  return name
end

--- Adds a node; returns its output value { name, shape }.
function Graph:op(op, inputs, attrs, shape, base)
  local ins = {}
  for i, v in ipairs(inputs) do ins[i] = type(v) == "table" and v.name or v end
  local out = self:name(base or op:lower())
  self.nodes[#self.nodes + 1] = proto.node(op, ins, { out }, out, attrs)
  return { name = out, shape = shape }
end

-- an initializer of float32 data at ptr (keep holds the memory)
function Graph:floats(base, dims, ptr, n, keep)
  local name = self:name(base)
  self.inits[#self.inits + 1] = proto.tensor(name, dims, proto.FLOAT, ptr, 4 * n, keep)
  self.params = self.params + n
  return name
end

-- an initializer holding a facet tensor's values, with the given dims
function Graph:tensor(base, t, dims)
  local h = t:to("cpu"):contiguous()
  if h:dtype() ~= "float32" then h = h:to("float32") end
  return self:floats(base, dims or t:shape(), ffi.cast("float *", h:data_ptr()), h:numel(), h)
end

-- an initializer of Lua numbers (float32 or int64)
function Graph:constant(base, dims, values, int64)
  local n = #values
  local arr = ffi.new(int64 and "int64_t[?]" or "float[?]", math.max(n, 1), values)
  local name = self:name(base)
  self.inits[#self.inits + 1] = proto.tensor(name, dims, int64 and proto.INT64 or proto.FLOAT, arr,
    (int64 and 8 or 4) * n, arr)
  return name
end

-- ---- per-channel arithmetic for BN ---------------------------------------------------

local function values(t) return t:to("cpu"):contiguous():totable() end

-- a BatchNorm's effect as y = x * scale + shift per channel (doubles)
local function bn_affine(bn)
  local mean, var = values(bn.running_mean), values(bn.running_var)
  local w = bn.affine and values(bn.weight) or nil
  local b = bn.affine and values(bn.bias) or nil
  local scale, shift = {}, {}
  for c = 1, bn.n do
    scale[c] = (w and w[c] or 1) / math.sqrt(var[c] + bn.eps)
    shift[c] = (b and b[c] or 0) - mean[c] * scale[c]
  end
  return scale, shift
end

-- weight rows (out x rest, a facet tensor) scaled per row, and the folded bias
local function fold(G, base, weight, bias, bn, wdims)
  local scale, shift = bn_affine(bn)
  local h = weight:to("cpu"):contiguous()
  local n, rows = h:numel(), weight:size(1)
  local per = n / rows
  local src = ffi.cast("float *", h:data_ptr())
  local out = tensor.empty(weight:shape())              -- outside the Lua heap: weights can be large
  local w = ffi.cast("float *", out:data_ptr())
  for r = 0, rows - 1 do
    local s = scale[r + 1]
    for k = r * per, r * per + per - 1 do w[k] = src[k] * s end
  end
  local b0 = bias and values(bias) or nil
  local b = {}
  for r = 1, rows do b[r] = (b0 and b0[r] or 0) * scale[r] + shift[r] end
  G.folded = G.folded + 1
  return G:floats(base .. "_w", wdims, w, n, out), G:constant(base .. "_b", { rows }, b)
end

-- ---- converters: module class name -> function(G, m, x, where) -> y ----------------

local C = {}
M.converters = C

local function convert(G, m, x, where)
  local f = C[m.__name]
  if not f then
    local names = {}
    for k in pairs(C) do names[#names + 1] = k end
    table.sort(names)
    fail(("%s (module %s) has no ONNX export; exportable modules: %s"):format(m.describe and m:describe() or
      tostring(m.__name), where, table.concat(names, ", ")))
  end
  return f(G, m, x, where)
end
M.convert = convert

local function want_rank(m, x, rank, where)
  if #x.shape ~= rank then
    fail(("%s (module %s) wants a %d-D input, the graph gives %s (is opts.size right?)"):format(m:describe(), where,
      rank, dims_text(x.shape)))
  end
end

local function want_channels(m, x, c, where)
  if #x.shape < 2 or x.shape[2] ~= c then
    fail(("%s (module %s) wants %d channels, the graph gives %s"):format(m:describe(), where, c, dims_text(x.shape)))
  end
end

-- an output plane's side, which must be at least 1
local function side(m, x, n, where)
  if n < 1 then fail(("%s (module %s): the input %s is too small"):format(m:describe(), where, dims_text(x.shape))) end
  return n
end

local function conv_shape(m, x, where)
  want_rank(m, x, 4, where)
  want_channels(m, x, m.n_in, where)
  local s = { x.shape[1], m.n_out }
  for i = 1, 2 do
    s[i + 2] = side(m, x, math.floor((x.shape[i + 2] + 2 * m.padding[i] - m.dilation[i] * (m.kernel[i] - 1) - 1) /
      m.stride[i]) + 1, where)
  end
  return s
end

local function conv_node(G, m, x, where, w, b)
  local attrs = { { "dilations", m.dilation }, { "group", m.groups }, { "kernel_shape", m.kernel },
    { "pads", { m.padding[1], m.padding[2], m.padding[1], m.padding[2] } }, { "strides", m.stride } }
  return G:op("Conv", b and { x, w, b } or { x, w }, attrs, conv_shape(m, x, where))
end

C.Conv2d = function(G, m, x, where)
  conv_shape(m, x, where)
  local w = G:tensor("conv_w", m.weight)
  local b = m.bias and G:tensor("conv_b", m.bias) or nil
  return conv_node(G, m, x, where, w, b)
end

local function linear_shape(m, x, where)
  want_rank(m, x, 2, where)
  if x.shape[2] ~= m.n_in then
    fail(("%s (module %s) wants %d features, the graph gives %s (is opts.size right?)"):format(m:describe(), where,
      m.n_in, dims_text(x.shape)))
  end
  return { x.shape[1], m.n_out }
end

local function gemm(G, m, x, where, w, b)
  local one = { kind = "float", value = 1 }
  return G:op("Gemm", { x, w, b }, { { "alpha", one }, { "beta", one }, { "transB", 1 } }, linear_shape(m, x, where))
end

C.Linear = function(G, m, x, where)
  linear_shape(m, x, where)
  local w = G:tensor("fc_w", m.weight)
  local zeros = {}
  if not m.bias then for i = 1, m.n_out do zeros[i] = 0 end end
  local b = m.bias and G:tensor("fc_b", m.bias) or G:constant("fc_b", { m.n_out }, zeros)
  return gemm(G, m, x, where, w, b)
end

local function batchnorm(rank)
  return function(G, m, x, where)
    if #x.shape ~= rank and not (rank == 2 and #x.shape == 3) then want_rank(m, x, rank, where) end
    want_channels(m, x, m.n, where)
    local ones, zeros = {}, {}
    for i = 1, m.n do ones[i], zeros[i] = 1, 0 end
    local w = m.affine and G:tensor("bn_scale", m.weight) or G:constant("bn_scale", { m.n }, ones)
    local b = m.affine and G:tensor("bn_bias", m.bias) or G:constant("bn_bias", { m.n }, zeros)
    local mean, var = G:tensor("bn_mean", m.running_mean), G:tensor("bn_var", m.running_var)
    return G:op("BatchNormalization", { x, w, b, mean, var }, { { "epsilon", { kind = "float", value = m.eps } } },
      x.shape)
  end
end
C.BatchNorm2d = batchnorm(4)
C.BatchNorm1d = batchnorm(2)

-- layer followed by a BN of its outputs, folded (in a Sequential)
local FOLDS = {
  Conv2d = { bn = "BatchNorm2d", run = function(G, m, bn, x, where)
    conv_shape(m, x, where)
    local s = m.weight:shape()
    local w, b = fold(G, "conv", m.weight, m.bias, bn, s)
    return conv_node(G, m, x, where, w, b)
  end },
  Linear = { bn = "BatchNorm1d", run = function(G, m, bn, x, where)
    linear_shape(m, x, where)
    local w, b = fold(G, "fc", m.weight, m.bias, bn, m.weight:shape())
    return gemm(G, m, x, where, w, b)
  end },
}

C.PReLU = function(G, m, x, where)
  local c = m.channels
  if c > 1 or #x.shape < 2 then want_channels(m, x, c, where) end        -- one slope fits any channel count
  local dims = { c }
  for _ = 3, #x.shape do dims[#dims + 1] = 1 end        -- broadcast over the plane: C x 1 x 1
  return G:op("PRelu", { x, G:tensor("prelu_slope", m.slope, dims) }, nil, x.shape)
end
for _, a in ipairs { { "ReLU", "Relu" }, { "Sigmoid", "Sigmoid" }, { "Tanh", "Tanh" } } do
  C[a[1]] = function(G, _, x) return G:op(a[2], { x }, nil, x.shape) end
end

local function pool(op)
  return function(G, m, x, where)
    want_rank(m, x, 4, where)
    local s = { x.shape[1], x.shape[2] }
    for i = 1, 2 do
      s[i + 2] = side(m, x, math.floor((x.shape[i + 2] + 2 * m.p[i] - m.k[i]) / m.s[i]) + 1, where)
    end
    local attrs = { { "kernel_shape", m.k }, { "pads", { m.p[1], m.p[2], m.p[1], m.p[2] } }, { "strides", m.s } }
    if op == "AveragePool" then attrs[#attrs + 1] = { "count_include_pad", m.settings.count_include_pad } end
    return G:op(op, { x }, attrs, s)
  end
end
C.MaxPool2d = pool("MaxPool")
C.AvgPool2d = pool("AveragePool")
C.AdaptiveAvgPool2d = function(G, m, x, where)
  want_rank(m, x, 4, where)
  return G:op("GlobalAveragePool", { x }, nil, { x.shape[1], x.shape[2], 1, 1 })
end

C.Flatten = function(G, _, x)
  local n = 1
  for i = 2, #x.shape do n = n * x.shape[i] end
  return G:op("Flatten", { x }, { { "axis", 1 } }, { x.shape[1], n })
end
C.Identity = function(_, _, x) return x end
C.Dropout = C.Identity                                   -- inference: the identity

C.Upsample = function(G, m, x, where)
  want_rank(m, x, 4, where)
  local h = m.size and m.size[1] or math.floor(x.shape[3] * m.scale)
  local w = m.size and m.size[2] or math.floor(x.shape[4] * m.scale)
  -- sizes = the input's N x C followed by h x w, so the batch stays symbolic
  local shape = G:op("Shape", { x }, nil, { 4 })
  local nc = G:op("Slice", { shape, G:constant("starts", { 1 }, { 0 }, true), G:constant("ends", { 1 }, { 2 }, true) },
    nil, { 2 })
  local sizes = G:op("Concat", { nc, G:constant("hw", { 2 }, { h, w }, true) }, { { "axis", 0 } }, { 4 })
  local attrs
  if m.mode == "nearest" then
    attrs = { { "coordinate_transformation_mode", "asymmetric" }, { "mode", "nearest" }, { "nearest_mode", "floor" } }
  else
    attrs = { { "coordinate_transformation_mode", m.align == 1 and "align_corners" or "pytorch_half_pixel" },
      { "mode", "linear" } }
  end
  return G:op("Resize", { x, G:constant("roi", { 0 }, {}), G:constant("scales", { 0 }, {}), sizes }, attrs,
    { x.shape[1], x.shape[2], h, w })
end

C.Sequential = function(G, m, x, where)
  local kids = m:children()
  local i = 1
  while i <= #kids do
    local a, b = kids[i], kids[i + 1]
    local f = FOLDS[a.__name]
    if b and f and b.__name == f.bn then
      x = f.run(G, a, b, x, where .. "." .. i)
      i = i + 2
    else
      x = convert(G, a, x, where .. "." .. i)
      i = i + 1
    end
  end
  return x
end

local function same_shapes(m, outs, where)
  for i = 2, #outs do
    if dims_text(outs[i].shape) ~= dims_text(outs[1].shape) then
      fail(("%s (module %s): branch %d gives %s, branch 1 gives %s"):format(m:describe(), where, i,
        dims_text(outs[i].shape), dims_text(outs[1].shape)))
    end
  end
end

-- the branches of m, each run on x
local function branches(G, m, x, where)
  local outs = {}
  for i, c in ipairs(m:children()) do outs[i] = convert(G, c, x, where .. "." .. i) end
  return outs
end

local function sum(G, m, x, where)
  local outs = branches(G, m, x, where)
  same_shapes(m, outs, where)
  local y = outs[1]
  for i = 2, #outs do y = G:op("Add", { y, outs[i] }, nil, y.shape) end
  return y
end
C.Residual, C.Add = sum, sum

C.Mul = function(G, m, x, where)
  local outs = branches(G, m, x, where)
  same_shapes(m, outs, where)
  return G:op("Mul", outs, nil, outs[1].shape)
end

C.Concat = function(G, m, x, where)
  local outs = branches(G, m, x, where)
  local shape = {}
  for k, v in ipairs(outs[1].shape) do shape[k] = v end
  for i = 2, #outs do shape[m.dim] = shape[m.dim] + outs[i].shape[m.dim] end
  return G:op("Concat", outs, { { "axis", m.dim - 1 } }, shape)
end

C.SE = function(G, m, x, where)
  local gate = convert(G, m:children()[1], x, where .. ".1")
  return G:op("Mul", { x, gate }, nil, x.shape)        -- N x C x 1 x 1 broadcast over the plane
end

-- y = last((1 + M) * T), T = trunk(first(x)), M = head(up(mask(first(x))) + T)
C.Attention = function(G, m, x, where)
  local k = m:children()
  local x1 = convert(G, k[1], x, where .. ".1")
  local t = convert(G, k[2], x1, where .. ".2")
  local u = convert(G, k[4], convert(G, k[3], x1, where .. ".3"), where .. ".4")
  same_shapes(m, { t, u }, where)
  local mk = convert(G, k[5], G:op("Add", { u, t }, nil, t.shape), where .. ".5")
  local gated = G:op("Mul", { G:op("Add", { mk, G:constant("one", {}, { 1 }) }, nil, mk.shape), t }, nil, t.shape)
  return convert(G, k[6], gated, where .. ".6")
end

-- ---- the Vision Transformer's layers -----------------------------------------------------

-- shape s with its last size replaced by n
local function with_last(s, n)
  local r = { unpack(s) }
  r[#r] = n
  return r
end

-- the product of dims, a string ("N*144") when one is symbolic (for shapes and messages)
local function product(dims)
  local n, sym = 1, {}
  for _, v in ipairs(dims) do
    if type(v) == "number" then n = n * v else sym[#sym + 1] = v end
  end
  if #sym == 0 then return n end
  sym[#sym + 1] = n
  return table.concat(sym, "*")
end

-- x reshaped to shape; its one symbolic dim (the batch, or rows holding it) is -1
-- in the target, so the graph takes any batch
local function reshape(G, x, shape)
  local target = {}
  for i, v in ipairs(shape) do target[i] = type(v) == "number" and v or -1 end
  return G:op("Reshape", { x, G:constant("shape", { #target }, target, true) }, nil, shape)
end

-- x's dims permuted (perm 0-based, as ONNX's)
local function transpose(G, x, perm)
  local s = {}
  for i, p in ipairs(perm) do s[i] = x.shape[p + 1] end
  return G:op("Transpose", { x }, { { "perm", perm } }, s)
end

-- x must be rank-D (nil: any rank >= 1) with `last` as its last size
local function want_last(m, x, rank, last, where)
  if rank then want_rank(m, x, rank, where) end
  if #x.shape < 1 or x.shape[#x.shape] ~= last then
    fail(("%s (module %s) wants ... x %d input, the graph gives %s"):format(m:describe(), where, last,
      dims_text(x.shape)))
  end
end

-- B x tokens x dim input of PosEmbed and TokenMask
local function want_tokens(m, x, where)
  want_last(m, x, 3, m.dim, where)
  if x.shape[2] ~= m.tokens then
    fail(("%s (module %s) wants %d tokens, the graph gives %s (is opts.size right?)"):format(m:describe(), where,
      m.tokens, dims_text(x.shape)))
  end
end

-- N x C x H x W -> N x (H W) x C
C.Tokens = function(G, m, x, where)
  want_rank(m, x, 4, where)
  local s = x.shape
  return transpose(G, reshape(G, x, { s[1], s[2], s[3] * s[4] }), { 0, 2, 1 })
end

C.PosEmbed = function(G, m, x, where)
  want_tokens(m, x, where)
  return G:op("Add", { x, G:tensor("pos_embed", m.pos_embed) }, nil, x.shape)
end

-- inference: every token goes through inner, mask_token is unused
C.TokenMask = function(G, m, x, where)
  want_tokens(m, x, where)
  return convert(G, m:children()[1], x, where .. ".1")
end
C.DropPath = C.Identity                                  -- inference: the identity

-- the child on x read as rows of its last dim, its output read back
C.Rows = function(G, m, x, where)
  if #x.shape < 2 then want_rank(m, x, 2, where) end
  local s = x.shape
  local lead = {}
  for i = 1, #s - 1 do lead[i] = s[i] end
  local y = convert(G, m:children()[1], reshape(G, x, { product(lead), s[#s] }), where .. ".1")
  return reshape(G, y, with_last(s, y.shape[#y.shape]))
end

C.ReLU6 = function(G, _, x)
  return G:op("Clip", { x, G:constant("min", {}, { 0 }), G:constant("max", {}, { 6 }) }, nil, x.shape)
end

-- over the last dim (opset 11's Softmax flattens the dims before `axis`, which is that)
C.Softmax = function(G, m, x, where)
  if #x.shape < 1 then want_rank(m, x, 1, where) end
  return G:op("Softmax", { x }, { { "axis", #x.shape - 1 } }, x.shape)
end

-- opset 11 has no LayerNormalization (opset 17): (x - mean) / sqrt(var + eps)
-- with the biased variance, then * weight + bias, as the kernel computes it
C.LayerNorm = function(G, m, x, where)
  want_last(m, x, nil, m.dim, where)
  local reduce, s1 = { { "axes", { -1 } }, { "keepdims", 1 } }, with_last(x.shape, 1)
  local d = G:op("Sub", { x, G:op("ReduceMean", { x }, reduce, s1, "ln_mean") }, nil, x.shape, "ln_centred")
  local var = G:op("ReduceMean", { G:op("Mul", { d, d }, nil, x.shape, "ln_square") }, reduce, s1, "ln_var")
  local std = G:op("Sqrt", { G:op("Add", { var, G:constant("ln_eps", {}, { m.eps }) }, nil, s1) }, nil, s1, "ln_std")
  local y = G:op("Div", { d, std }, nil, x.shape, "ln_norm")
  if not m.affine then return y end
  y = G:op("Mul", { y, G:tensor("ln_weight", m.weight) }, nil, x.shape)
  return G:op("Add", { y, G:tensor("ln_bias", m.bias) }, nil, x.shape, "ln_out")
end

-- B x N x dim: qkv on the token rows, split into q, k, v of B x h x N x d,
-- softmax(q k^T * scale) v, heads joined, proj on the rows (the layer's order)
C.MultiheadAttention = function(G, m, x, where)
  want_last(m, x, 3, m.dim, where)
  local B, N, D, h, d = x.shape[1], x.shape[2], m.dim, m.heads, m.head_dim
  local kids = m:children()
  local rows = product { B, N }
  local qkv = convert(G, kids[1], reshape(G, x, { rows, D }), where .. ".1")
  local split = transpose(G, reshape(G, qkv, { B, N, 3, h, d }), { 2, 0, 3, 1, 4 })     -- 3 x B x h x N x d
  local part = {}
  for i = 1, 3 do
    part[i] = G:op("Gather", { split, G:constant("part", {}, { i - 1 }, true) }, { { "axis", 0 } }, { B, h, N, d },
      ({ "q", "k", "v" })[i])
  end
  local scores = G:op("MatMul", { part[1], transpose(G, part[2], { 0, 1, 3, 2 }) }, nil, { B, h, N, N }, "scores")
  scores = G:op("Mul", { scores, G:constant("scale", {}, { m.scale }) }, nil, scores.shape, "scaled")
  local probs = G:op("Softmax", { scores }, { { "axis", 3 } }, scores.shape, "probs")
  local ctx = transpose(G, G:op("MatMul", { probs, part[3] }, nil, { B, h, N, d }, "ctx"), { 0, 2, 1, 3 })
  local y = convert(G, kids[2], reshape(G, ctx, { rows, D }), where .. ".2")
  return reshape(G, y, { B, N, D })
end

-- ---- export ------------------------------------------------------------------------

local function first_conv(m)
  if m.__name == "Conv2d" then return m end
  local k = m:children()
  return k[1] and first_conv(k[1]) or nil
end

--- Builds the ONNX model of `model` (a message; see facet.onnx.proto) and its summary.
function M.build(model, opts)
  check.module(NAME, "model", model)
  opts = check.options(NAME, opts, OPTIONS)
  local size = opts.size or 112
  if type(size) == "number" then size = { size, size } end
  check.list(NAME, "size", size, { len = 2, integer = true, min = 1, max = 65536 })
  local conv = first_conv(model)
  local channels = check.integer(NAME, "channels", opts.channels, { min = 1, max = 65536,
    default = conv and conv.n_in or 3 })
  local input = opts.input == nil and "data" or check.string(NAME, "input", opts.input)
  local output = opts.output == nil and "embedding" or check.string(NAME, "output", opts.output)
  local batch = opts.batch == nil and "N" or check.string(NAME, "batch", opts.batch)
  if input == "" or output == "" or batch == "" or input == output then
    fail("input, output and batch must be non-empty names, input and output different")
  end
  local G = new_graph()
  G.taken[input], G.taken[output] = true, true
  local x = { name = input, shape = { batch, channels, size[1], size[2] } }
  local y = convert(G, model, x, "model")
  if y.name == input then fail("the model computes nothing (its output is its input)") end
  -- the graph's output under its own name
  G.nodes[#G.nodes + 1] = proto.node("Identity", { y.name }, { output }, output, nil)
  local graph = proto.graph("facet", G.nodes, G.inits, { proto.value_info(input, proto.FLOAT, x.shape) },
    { proto.value_info(output, proto.FLOAT, y.shape) })
  local msg = proto.model { ir_version = IR_VERSION, opset = OPSET, producer = "facet",
    producer_version = ffi.string(require("facet.core").C.facet_version()), graph = graph }
  return msg, { nodes = #G.nodes, initializers = #G.inits, parameters = G.params, bytes = msg.size, output = y.shape,
    input = x.shape, folded = G.folded }
end

--- Writes model's ONNX graph to path (atomically); returns the summary.
function M.export(model, path, opts)
  check.string(NAME, "path", path)
  local msg, info = M.build(model, opts)
  local ok, err = sys.write_atomic(path, function(f) proto.write(msg, f) end)
  if not ok then fail(err) end
  return info
end

M.OPSET, M.IR_VERSION = OPSET, IR_VERSION
return M
