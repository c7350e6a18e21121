--- facet.heads.head: the Head class behind every name in facet.heads.
-- forward(x, y) normalises x (and divides the GEMM output by the norms of W's
-- rows, so W is never copied), runs the fused C row passes and returns the
-- loss; backward() turns the B x K buffer into the gradient in place, runs the
-- two backward GEMMs, takes the radial part out of W's gradient row by row and
-- returns dL/dx. x may be float16 or bfloat16 (a mixed-precision backbone's
-- embedding): it is widened into a float32 buffer, the head runs in float32,
-- and dL/dx comes back rounded once into x's dtype. Buffers are kept between steps (reallocated only when the
-- batch size changes), so a training step allocates nothing.
-- named_parameters() is the parameter interface optimizers use (the same as
-- facet.nn.Module's); a fused cosine head's weight entry carries the deferred
-- radial correction and the W norms for the optimizer's single pass over W.
-- Failed calls: forward checks x and the labels (dtype, shape, device; the
-- range of labels given as a table or a CPU tensor) before it writes anything,
-- so a rejected forward leaves the head as it was (a pending forward can still
-- be backpropagated). Labels already on the GPU are range-checked by the
-- target kernel and the verdict is read back with the loss, so the host never
-- waits for them: a bad one is the same error, raised once the forward's
-- buffers were reused, with no parameter, gradient, counter or loss changed
-- and no forward left. A forward that fails past its checks leaves no forward,
-- and backward then errors "no forward". On the GPU a forward waits for the
-- device once (the loss) and a backward never. head:free() releases the C
-- head and the buffers at once; a freed head refuses forward, backward and the
-- rest naming the method, as a head whose parameter was freed
-- (head.weight:free()) refuses forward.
local ffi = require "ffi"
local core = require "facet.core"
local valid = require "facet.check"
local tensor = require "facet.tensor"
local expr = require "facet.expr"

local C, check = core.C, core.check
local Head = {}
Head.__index = Head

local EPS = 1e-12          -- floor of ||x|| and ||w_k|| (docs/heads.md)
local loss_p = ffi.new("double[1]")
local bad_p = ffi.new("int64_t[3]")

local MARGINS = {
  none = C.FACET_HEAD_MARGIN_NONE, am = C.FACET_HEAD_MARGIN_COMBINED, combined = C.FACET_HEAD_MARGIN_COMBINED,
  arc = C.FACET_HEAD_MARGIN_ARC, ["a-softmax"] = C.FACET_HEAD_MARGIN_ASOFTMAX, adaface = C.FACET_HEAD_MARGIN_ADAFACE,
  magface = C.FACET_HEAD_MARGIN_MAGFACE, ["elastic-arc"] = C.FACET_HEAD_MARGIN_ELASTIC_ARC,
  ["elastic-cos"] = C.FACET_HEAD_MARGIN_ELASTIC_COS,
}
-- ElasticFace's draws: their own Philox key (the seed's stream holds the
-- weights and Partial FC's draws) and 2^24 numbers a step
local ELASTIC_KEY, ELASTIC_STRIDE = 0x454C * 2 ^ 32, 2 ^ 24
-- MagFace's options and defaults (its authors'), in the order they are checked
local MAGFACE = { { "l_a", 10, C.FACET_HEAD_PARAM_L_A }, { "u_a", 110, C.FACET_HEAD_PARAM_U_A },
  { "l_m", 0.45, C.FACET_HEAD_PARAM_L_M }, { "u_m", 0.8, C.FACET_HEAD_PARAM_U_M },
  { "lambda_g", 35, C.FACET_HEAD_PARAM_LAMBDA_G } }
local SAMPLES = { mean = C.FACET_HEAD_SAMPLE_MEAN, focal = C.FACET_HEAD_SAMPLE_FOCAL, hard = C.FACET_HEAD_SAMPLE_HARD }

-- options each configuration accepts, beyond classes, dim, device, seed
local function accepted(cfg)
  local a = { classes = true, dim = true, device = true, seed = true, fused = true }
  if cfg.kind ~= "raw" then a.s = true end
  if cfg.kind == "cosine" then a.subcenters = true end
  -- the adaptive heads take their authors' margins only
  local elastic = cfg.margin == "elastic-arc" or cfg.margin == "elastic-cos"
  if cfg.kind == "cosine" and cfg.margin ~= "adaface" and cfg.margin ~= "magface" and cfg.h ~= "curricular"
    and not elastic then
    a.margin = true
  end
  if elastic then a.m, a.std, a.plus = true, true, true end
  if cfg.margin == "elastic-arc" then a.easy_margin = true end
  if cfg.margin == "magface" then
    for _, e in ipairs(MAGFACE) do a[e[1]] = true end
    a.easy_margin = true
  end
  if cfg.margin == "adaface" then a.m, a.h, a.momentum = true, true, true end
  if cfg.kind == "l2" then a.alpha, a.learn_alpha = true, true end
  if cfg.margin == "am" or cfg.margin == "arc" then a.m = true end
  if cfg.margin == "arc" and cfg.h ~= "curricular" then a.easy_margin = true end
  if cfg.margin == "combined" then a.m1, a.m2, a.m3 = true, true, true end
  if cfg.margin == "a-softmax" then a.m1, a.lambda = true, true end
  if cfg.sample == "focal" then a.gamma = true end
  if cfg.sample == "hard" then a.keep = true end
  if cfg.h == "curricular" then a.t, a.momentum = true, true
  elseif cfg.h ~= nil then a.t, a.h = true, true end
  return a
end

-- a finite number (>= lo when given): NaN and inf never reach facet_head_set
local function number_opt(opts, key, default, lo, name)
  return valid.number(name, "option " .. key, opts[key], { min = lo, default = default })
end

local GRID = {}
for i = 0, 200 do GRID[#GRID + 1] = -1 + i / 100 end

-- traces a user function into (value program, derivative program); checks values on the grid
local function trace(fn, args_at, what, check_value)
  local c = expr.var("cos")
  local ok, v = pcall(fn, args_at(c))
  if not ok then
    local hint = tostring(v):find("compare", 1, true) and
      "comparisons of expressions cannot be Lua booleans: use facet.expr.lt/le/gt/ge and facet.expr.where" or
      "use arithmetic and facet.expr.exp/log/sqrt/cos/sin/acos/abs/min/max/lt/le/gt/ge/where"
    error(("%s: the function failed on symbolic input (%s); %s"):format(what, tostring(v), hint), 0)
  end
  if type(v) ~= "number" and not expr.is_node(v) then
    error(("%s: the function must return a number or an expression, got %s"):format(what, type(v)), 0)
  end
  for _, x in ipairs(GRID) do
    local y = expr.eval(v, x)
    if type(y) ~= "number" or y ~= y or y == math.huge or y == -math.huge then
      error(("%s: not finite at cos = %g"):format(what, x), 0)
    end
    if check_value then check_value(y, x) end
  end
  return v
end

local function set_program(handle, slot, node, what)
  local p = expr.compile(node, what)
  local code = ffi.new("int32_t[?]", #p.code, p.code)
  local consts = ffi.new("double[?]", math.max(1, #p.consts), p.consts)
  check(C.facet_head_set_program(handle, slot, p.n, code, #p.consts, consts), 3)
end

--- cfg: a catalogue configuration; opts: the user's options; block (optional,
-- for facet.heads.sharded): { offset, rows } makes the head hold only rows
-- [offset, offset + rows) of the K x dim weight, initialised as those rows of
-- the full head with the same seed (the generator is counter-based).
function Head.new(cfg, opts, block)
  local name = "facet.heads.new('" .. cfg.name .. "')"
  local ok_keys = accepted(cfg)
  for k in pairs(opts) do
    if not ok_keys[k] then
      local list = {}
      for a in pairs(ok_keys) do list[#list + 1] = a end
      table.sort(list)
      error(("%s: unknown option '%s' (accepted: %s)"):format(name, tostring(k), table.concat(list, ", ")), 0)
    end
  end
  local K = valid.integer(name, "classes", opts.classes, { min = 1, max = 2 ^ 31 - 1 })
  local D = valid.integer(name, "dim", opts.dim, { min = 1, max = 2 ^ 31 - 1 })
  valid.enum(name, "device", opts.device, { "cpu", "cuda" }, "cpu")
  for _, k in ipairs { "fused", "learn_alpha", "easy_margin", "plus" } do valid.boolean(name, k, opts[k], false) end
  valid.integer(name, "seed", opts.seed, { min = 0, default = 0 })
  local self = setmetatable({ name = cfg.name, kind = cfg.kind, classes = K, dim = D, iter = 0 }, Head)
  -- Sub-center ArcFace: k sub-centres a class, rows c k ... c k + k - 1 of
  -- the weight (InsightFace's layout); every cosine head takes them
  self.subcenters = valid.integer(name, "subcenters", opts.subcenters, { min = 1, max = 255, default = 1 })
  self.device = opts.device or "cpu"
  -- fused: the radial correction of grad_weight and the W norms move into the
  -- optimizer's update (one pass over W); see named_parameters and docs/heads.md
  self.fused = opts.fused and cfg.kind == "cosine" or false
  self.s = valid.number(name, "option s", opts.s, { gt = 0, default = 32 })
  if self.s <= 0 then error(name .. ": s must be > 0", 0) end
  self.sample = cfg.sample or "mean"

  local margin = MARGINS[cfg.margin]
  local margin_fn = cfg.kind == "cosine" and opts.margin or nil
  if margin_fn ~= nil and type(margin_fn) ~= "function" then error(name .. ": margin must be a function", 0) end
  if margin_fn then margin = C.FACET_HEAD_MARGIN_PROGRAM end
  local reweight = C.FACET_HEAD_REWEIGHT_NONE
  if cfg.h == "fixed" then reweight = C.FACET_HEAD_REWEIGHT_FIXED
  elseif cfg.h == "adaptive" then reweight = C.FACET_HEAD_REWEIGHT_ADAPTIVE
  elseif type(cfg.h) == "function" then reweight = C.FACET_HEAD_REWEIGHT_PROGRAM
  elseif cfg.h == "curricular" then reweight = C.FACET_HEAD_REWEIGHT_CURRICULAR
  elseif cfg.h ~= nil then error(name .. ": h must be \"fixed\", \"adaptive\" or a function", 0) end

  local pp = ffi.new("facet_head *[1]")
  check(C.facet_head_init(pp, margin, reweight, SAMPLES[self.sample]), 2)
  self.handle = ffi.gc(pp[0], C.facet_head_free)
  local function set(param, v) check(C.facet_head_set(self.handle, param, v), 3) end
  set(C.FACET_HEAD_PARAM_S, cfg.kind == "cosine" and self.s or 1)
  set(C.FACET_HEAD_PARAM_RAW, cfg.kind == "cosine" and 0 or 1)

  -- margin parameters
  if cfg.margin == "am" then
    self.m = number_opt(opts, "m", cfg.m, nil, name)
    set(C.FACET_HEAD_PARAM_M1, 1); set(C.FACET_HEAD_PARAM_M2, self.m); set(C.FACET_HEAD_PARAM_M3, 0)
  elseif cfg.margin == "arc" then
    self.m = number_opt(opts, "m", cfg.m, nil, name)
    set(C.FACET_HEAD_PARAM_M3, self.m)
    self.easy_margin = opts.easy_margin and true or false
    set(C.FACET_HEAD_PARAM_EASY_MARGIN, self.easy_margin and 1 or 0)
  elseif cfg.margin == "combined" then
    self.m1, self.m2, self.m3 = cfg.m1, cfg.m2, cfg.m3
    set(C.FACET_HEAD_PARAM_M1, self.m1); set(C.FACET_HEAD_PARAM_M2, self.m2); set(C.FACET_HEAD_PARAM_M3, self.m3)
  elseif cfg.margin == "adaface" then
    -- the norm statistics are state (the authors' batch_mean and batch_std
    -- buffers, starting at 20 and 100), moved by every forward
    self.m = number_opt(opts, "m", cfg.m, 0, name)
    set(C.FACET_HEAD_PARAM_M3, self.m)
    self.norm_h = valid.number(name, "option h", opts.h, { gt = 0, max = 1e6, default = 0.333 })
    self.momentum = valid.number(name, "option momentum", opts.momentum, { min = 0, max = 1, default = 0.01 })
    self.batch_mean, self.batch_std = tensor.full({ 1 }, 20), tensor.full({ 1 }, 100)
  elseif cfg.margin == "magface" then
    -- 0 < l_a < u_a, 0 <= l_m <= u_m, lambda_g >= 0
    for _, e in ipairs(MAGFACE) do
      local k = e[1]
      local spec = ({ l_a = { gt = 0 }, u_a = { gt = self.l_a }, l_m = { min = 0 }, u_m = { min = self.l_m },
        lambda_g = { min = 0 } })[k]
      spec.default = e[2]
      self[k] = valid.number(name, "option " .. k, opts[k], spec)
      set(e[3], self[k])
    end
    -- its authors train with easy_margin (no margin where cos theta_y <= 0)
    self.easy_margin = valid.boolean(name, "easy_margin", opts.easy_margin, true)
    set(C.FACET_HEAD_PARAM_EASY_MARGIN, self.easy_margin and 1 or 0)
    -- a default may fall on the wrong side of a given bound, and the C head keeps float32
    local function f32(v) return tonumber(ffi.new("float", v)) end
    if not (f32(self.u_a) > f32(self.l_a)) then
      valid.fail(name, ("u_a (%.9g) must be above l_a (%.9g) in float32"):format(self.u_a, self.l_a))
    end
    if not (self.u_m >= self.l_m) then
      valid.fail(name, ("u_m (%g) must be at least l_m (%g)"):format(self.u_m, self.l_m))
    end
  elseif cfg.margin == "elastic-arc" or cfg.margin == "elastic-cos" then
    -- the mean and spread of the margins, drawn per sample each forward; the
    -- authors' spreads: 0.05, with plus 0.0175 (arc) and 0.02 (cos)
    self.m = number_opt(opts, "m", cfg.m, 0, name)
    self.plus = opts.plus and true or false
    local arc = cfg.margin == "elastic-arc"
    self.std = valid.number(name, "option std", opts.std,
      { min = 0, max = 10, default = self.plus and (arc and 0.0175 or 0.02) or 0.05 })
    set(C.FACET_HEAD_PARAM_M3, self.m)
    set(C.FACET_HEAD_PARAM_STD, self.std)
    set(C.FACET_HEAD_PARAM_PLUS, self.plus and 1 or 0)
    self.easy_margin = opts.easy_margin and true or false
    set(C.FACET_HEAD_PARAM_EASY_MARGIN, self.easy_margin and 1 or 0)
    self.elastic = true
    self.draw_seed = ELASTIC_KEY + (opts.seed or 0)
  elseif cfg.margin == "a-softmax" then
    self.m1 = number_opt(opts, "m1", cfg.m1, 1, name)
    set(C.FACET_HEAD_PARAM_M1, self.m1)
    if opts.lambda ~= nil and type(opts.lambda) ~= "number" then error(name .. ": lambda must be a number", 0) end
    self.lambda = opts.lambda       -- nil: the SphereFace schedule, advanced by each forward
    if self.lambda then set(C.FACET_HEAD_PARAM_LAMBDA, number_opt(opts, "lambda", nil, 0, name)) end
  end
  if margin_fn then
    local m = self.m or self.m2 or self.m1
    local f = trace(margin_fn, function(c) return c, m end, name .. ": margin")
    set_program(self.handle, C.FACET_HEAD_PROGRAM_MARGIN, f, name .. ": margin")
    set_program(self.handle, C.FACET_HEAD_PROGRAM_MARGIN_GRAD, expr.diff(f), name .. ": margin derivative")
    self.margin_expr = f
  end

  -- CurricularFace: t is state (a 1-element tensor, the reference code's
  -- buffer), the running mean of c_y updated by every forward
  if cfg.h == "curricular" then
    self.h = "curricular"
    self.t = tensor.full({ 1 }, valid.number(name, "option t", opts.t, { min = -1, max = 1, default = cfg.t }))
    self.momentum = valid.number(name, "option momentum", opts.momentum, { min = 0, max = 1, default = 0.01 })
  -- MV re-weighting
  elseif cfg.h ~= nil then
    self.t = number_opt(opts, "t", cfg.t, 0, name)
    self.h = cfg.h
    set(C.FACET_HEAD_PARAM_T, self.t)
    if type(cfg.h) == "function" then
      local t, s = self.t, self.s
      trace(cfg.h, function(c) return t, c, 0, s end, name .. ": h with I = 0", function(y, x)
        if math.abs(y - 1) > 1e-6 then
          error(("%s: h(t, cos, I = 0, s) must be 1 (MV-Softmax leaves well-classified classes alone), " ..
            "got %g at cos = %g"):format(name, y, x), 0)
        end
      end)
      local h1 = trace(cfg.h, function(c) return t, c, 1, s end, name .. ": h", function(y, x)
        if y < 1 - 1e-6 then
          error(("%s: h must be >= 1 (MV-Softmax Eq. 6), got %g at cos = %g"):format(name, y, x), 0)
        end
      end)
      local logh = expr.log(h1)
      set_program(self.handle, C.FACET_HEAD_PROGRAM_LOGH, logh, name .. ": log h")
      set_program(self.handle, C.FACET_HEAD_PROGRAM_LOGH_GRAD, expr.diff(logh), name .. ": d log h")
      self.logh_expr = logh
    end
  end
  if self.sample == "focal" then
    self.gamma = number_opt(opts, "gamma", 2, 0, name)
    set(C.FACET_HEAD_PARAM_GAMMA, self.gamma)
  elseif self.sample == "hard" then
    self.keep = number_opt(opts, "keep", 0.9, nil, name)
    set(C.FACET_HEAD_PARAM_KEEP, self.keep)
  end

  -- parameters (a block: its rows of the full head's initial weight)
  local sc = self.subcenters
  local seed, offset = opts.seed or 0, block and block.offset * sc * D or 0
  local rows = block and block.rows or K
  if cfg.kind == "cosine" then
    self.weight = tensor.randn({ rows * sc, D }, { seed = seed, offset = offset, std = 0.01 })
  else
    local bound = math.sqrt(6 / (K + D))   -- Xavier/Glorot uniform
    self.weight = tensor.rand({ rows, D }, { seed = seed, offset = offset, low = -bound, high = bound })
    self.bias = tensor.zeros({ rows })
    self.grad_bias = tensor.zeros({ rows })
  end
  if block then self.classes, self.class_offset, self.total_classes = rows, block.offset, K end
  K = rows * sc
  self.grad_weight = tensor.zeros({ K, D })
  if self.fused then
    self.pending = tensor.zeros({ K })      -- deferred radial coefficients (row_coef)
    self.norms = tensor.zeros({ K })        -- ||w_k|| written by the update (row_norms)
    self.norms_valid = false
  end
  if cfg.kind == "l2" then
    self.learn_alpha = opts.learn_alpha and true or false
    self.alpha = tensor.full({ 1 }, number_opt(opts, "alpha", 16, 0, name))
    self.grad_alpha = tensor.zeros({ 1 })
  end
  self:_bind_state()
  if self.device ~= "cpu" then self:_to(self.device) end
  return self
end

-- ---- buffers ---------------------------------------------------------------------------

-- the buffers of the B local rows of x (normalised x, norms, gradients) into b
function Head:_input_buffers(b, B)
  local D, o = self.dim, { device = self.device }
  b.dinput = tensor.empty({ B, D }, o)
  if self.kind ~= "raw" then
    b.xhat = tensor.empty({ B, D }, o)
    b.xnorm = tensor.empty({ B }, o)
    b.dx = tensor.empty({ B, D }, o)
  end
  if self.kind == "l2" then b.xs = tensor.empty({ B, D }, o) end
  return b
end

function Head:_buffers(B)
  local b = self.buf
  if b and b.B == B and b.device == self.device then return b end
  local K, D, dev = self.classes, self.dim, self.device
  b = { B = B, device = dev }
  local o = { device = dev }
  b.z = tensor.empty({ B, K }, o)
  b.rows = tensor.empty({ B, tonumber(C.FACET_HEAD_ROW_COUNT) }, o)
  self:_input_buffers(b, B)
  self:_subcenter_buffers(b, B, K)
  if self.kind == "cosine" then
    local n = K * self.subcenters
    b.wnorm = tensor.empty({ n }, o)
    b.colsum_cos = tensor.empty({ n }, o)
    self.norms_valid = false                -- the next forward measures W into the new b.wnorm
  else
    b.colsum = tensor.empty({ K }, o)
  end
  self.buf = b
  return b
end

-- Sub-centres: the GEMM output of the Kb k sub-centres (b.sub), the best
-- one's index per class (b.index) and unit norms for the row passes, which
-- then run on b.z holding each class's best cosine. Shared with
-- facet.heads.sharded (Kb: the classes of a block).
function Head:_subcenter_buffers(b, B, Kb)
  if self.subcenters == 1 then return end
  local o = { device = self.device }
  b.sub = tensor.empty({ B, Kb * self.subcenters }, o)
  b.index = tensor.empty({ B, Kb }, { dtype = "uint8", device = self.device })
  b.ones = tensor.full({ Kb }, 1, o)
end

-- ---- lifetime ---------------------------------------------------------------------------

-- the C head of a live head; an error naming the method otherwise
local function live(self, method)
  if getmetatable(self) ~= Head then error("head:" .. method .. ": call it with ':' on a head", 3) end
  if self.handle == nil then
    error(("%s:%s: the head was freed (head:free())"):format(self.name, method), 3)
  end
  return self.handle
end

local PARAMS = { "weight", "grad_weight", "bias", "grad_bias", "alpha", "grad_alpha", "pending", "norms" }

-- an error naming the first of the head's tensors that was freed
local function params_alive(self, method)
  for _, k in ipairs(PARAMS) do
    local t = self[k]
    if t ~= nil and (not tensor.is_tensor(t) or t:is_freed()) then
      error(("%s:%s: head.%s was freed"):format(self.name, method, k), 3)
    end
  end
  -- the state tensors of the adaptive heads (an MV head's t is a number)
  for k, t in pairs(self.state) do
    if not tensor.is_tensor(t) or t:is_freed() then error(("%s:%s: head.%s was freed"):format(self.name, method, k), 3) end
  end
end

--- Releases the C head and the buffers now (the GC would otherwise); the
-- parameter tensors stay valid (an optimizer may hold them). Every method but
-- free then refuses. Freeing twice is harmless.
function Head:free()
  if getmetatable(self) ~= Head then error("head:free: call it with ':' on a head", 2) end
  if self.handle == nil then return end
  local h = self.handle
  self.handle, self.buf, self.ready, self.input, self.labels = nil, nil, false, nil, nil
  self.norms_valid = false
  ffi.gc(h, nil)
  C.facet_head_free(h)
end
Head.close = Head.free

function Head:is_freed() return self.handle == nil end

-- ---- forward and backward ---------------------------------------------------------------

local le = ffi.abi("le")

-- the text of an int64 cdata or a number, without LL
local function int_text(v) return (tostring(v):gsub("U?LL$", "")) end

-- the error for a label outside [0, K); row: 1-based, or text
local function label_error(name, v, row, K, level)
  local msg = ("%s: label %s of row %s outside [0, %s)"):format(name, int_text(v), tostring(row), int_text(K))
  core.raise(msg, level + 1)
end

-- an error unless every label of the contiguous CPU tensor y lies in [0, K);
-- where(i) names 0-based row i (default: "row i + 1")
local function check_range(y, B, K, name, where)
  local p = y:data_ptr()
  local function bad(v, i) label_error(name, v, where and where(i) or i + 1, K, 3) end
  if y:dtype() == "int32" then
    for i = 0, B - 1 do
      local v = p[i]
      if v < 0 or v >= K then bad(v, i) end
    end
  elseif le then
    -- int64 read as (low, high) int32 pairs: no boxed 64-bit numbers per label
    local q = ffi.cast("int32_t *", p)
    for i = 0, B - 1 do
      local lo, hi = q[2 * i], q[2 * i + 1]
      if hi ~= 0 or lo < 0 or lo >= K then bad(p[i], i) end
    end
  else
    for i = 0, B - 1 do
      local v = p[i]
      if v < 0 or v >= K then bad(v, i) end
    end
  end
end
Head._check_range = check_range

-- the labels as a contiguous tensor on the head's device, every one checked
-- (dtype, shape, device, range) before the forward writes anything
local function labels_of(self, y, B, name, K)
  local device = self.device
  if type(y) == "table" then
    if #y ~= B then error(("%s: want %d labels (one per row of x), got %d"):format(name, B, #y), 4) end
    for i = 1, B do
      local v = y[i]
      if type(v) ~= "number" or v ~= math.floor(v) then
        error(("%s: labels must be integers, label %d is %s"):format(name, i, tostring(v)), 4)
      end
      if v < 0 or v >= K then error(("%s: label %d of row %d outside [0, %d)"):format(name, v, i, K), 4) end
    end
    return tensor.tensor(y, { dtype = "int64", device = device })
  end
  if not tensor.is_tensor(y) then error(name .. ": y must be a tensor (or table) of labels", 4) end
  if y:is_freed() then error(name .. ": the labels tensor was freed", 4) end
  local dt = y:dtype()
  if dt ~= "int32" and dt ~= "int64" then error(("%s: labels must be int32 or int64, got %s"):format(name, dt), 4) end
  if y:dim() ~= 1 or y:numel() ~= B then
    error(("%s: want %d labels (one per row of x), got shape %s"):format(name, B, table.concat(y:shape(), "x")), 4)
  end
  if y:device() ~= device then error(("%s: labels on %s, head on %s"):format(name, y:device(), device), 4) end
  y = y:contiguous()
  -- labels on the GPU are checked there by the target kernel (Head:_finish
  -- reports them): copying them here would make the host wait for the device
  if device == "cpu" then check_range(y, B, K, name) end
  return y
end

local X_DTYPES = { float32 = true, float16 = true, bfloat16 = true }

-- x and y checked (x: B x dim float32, float16 or bfloat16 on the head's device; y: B labels in
-- [0, K)); returns x, the labels tensor, B. Shared with facet.heads.sharded.
function Head:_check_input(x, y, name, K)
  if not tensor.is_tensor(x) then error(name .. ": x must be a tensor", 3) end
  if x:is_freed() then error(name .. ": x was freed", 3) end
  local shape = x:shape()
  if #shape ~= 2 or shape[2] ~= self.dim or not X_DTYPES[x:dtype()] then
    error(("%s: x must be B x %d float32, float16 or bfloat16, got %s %s"):format(name, self.dim,
      table.concat(shape, "x"), x:dtype()), 3)
  end
  if x:device() ~= self.device then error(("%s: x on %s, head on %s"):format(name, x:device(), self.device), 3) end
  local B = shape[1]
  if B == 0 then error(name .. ": empty batch", 3) end
  return x, labels_of(self, y, B, name, K), B
end

-- A 16-bit embedding (mixed precision: the backbone's float16/bfloat16
-- output) is widened into a float32 buffer of b (B x dim: small), so the
-- head, its parameters and the B x K work stay float32; backward rounds dL/dx
-- once into x's dtype (_narrow). Records x's dtype for backward.
function Head:_widen(x, b)
  self.x_dtype = x:dtype()
  if x:dtype() == "float32" then return x end
  local w = b.x32
  if not (w and w:device() == self.device and w:numel() == x:numel()) then
    w = tensor.empty(x:shape(), { device = self.device })
    b.x32 = w
  end
  w:copy(x)
  return w
end

-- dL/dx in the dtype of the forward's x (a buffer of b reused by the next call)
function Head:_narrow(b, dx)
  local dt = self.x_dtype
  if dt == nil or dt == "float32" then return dx end
  local d = b.dx16
  if not (d and d:dtype() == dt and d:device() == self.device and d:numel() == dx:numel()) then
    d = tensor.empty(dx:shape(), { dtype = dt, device = self.device })
    b.dx16 = d
  end
  d:copy(dx)
  return d
end

-- SphereFace's schedule: lambda = max(5, 1000 (1 + 0.0001 iter)^-2), set before each forward
function Head:_schedule()
  if self.m1 and self.name == "a-softmax" and not self.lambda then
    self.current_lambda = math.max(5, 1000 * (1 + 0.0001 * self.iter) ^ -2)
    check(C.facet_head_set(self.handle, C.FACET_HEAD_PARAM_LAMBDA, self.current_lambda))
  end
end

-- puts back the lambda of before _schedule (a forward that failed)
function Head:_unschedule(lambda)
  if self.current_lambda == lambda then return end
  self.current_lambda = lambda
  if lambda then C.facet_head_set(self.handle, C.FACET_HEAD_PARAM_LAMBDA, lambda) end
end

-- what the GEMM multiplies: x (raw), x/||x|| (cosine) or alpha x/||x|| (l2),
-- into the buffers b.xhat, b.xnorm, b.xs
function Head:_input(x, b)
  if self.kind == "raw" then return x end
  check(C.facet_tensor_l2_normalize(b.xhat.h, b.xnorm.h, x.h, EPS))
  if self.kind ~= "l2" then return b.xhat end
  -- times alpha where alpha lives (no read of it on the host)
  check(C.facet_tensor_binary(b.xs.h, b.xhat.h, self.alpha.h, C.FACET_BINARY_MUL))
  return b.xs
end

-- the clamped ||w_k|| of a cosine head into wnorm (measured unless a fused
-- update wrote them), or nil for raw and l2 heads
function Head:_wnorm(wnorm)
  if self.kind ~= "cosine" then return nil end
  if not (self.fused and self.norms_valid) then
    check(C.facet_tensor_row_norms(wnorm.h, self.weight.h))
    self.norms_valid = self.fused
  end
  check(C.facet_tensor_unary(wnorm.h, wnorm.h, C.FACET_UNARY_CLAMP, EPS, math.huge))
  return wnorm
end

--- The loss (a number) of embeddings x (B x dim float32, or float16/bfloat16:
-- widened, see _widen) with labels y (B int32/int64, 0-based).
function Head:forward(x, y)
  local name = self.name .. ":forward"
  local h = live(self, "forward")
  params_alive(self, "forward")
  local B
  x, y, B = self:_check_input(x, y, name, self.classes)
  -- every argument is checked: from here on the buffers change, and a failure
  -- leaves no forward for backward to use
  self.ready = false
  x = x:contiguous()
  local b = self:_buffers(B)
  x = self:_widen(x, b)
  local lambda = self.current_lambda
  self:_schedule()
  local input = self:_input(x, b)
  local wnorm = self:_wnorm(b.wnorm)
  check(C.facet_tensor_matmul((b.sub or b.z).h, input.h, self.weight.h, 0, 1, 1, 0))
  wnorm = self:_subcenter_max(b, b.z, b.sub, wnorm)
  wnorm = wnorm and wnorm.h or nil
  local bias = self.bias and self.bias.h or nil
  self:_save_state()
  self:_update_norms(b.rows, b.xnorm)
  self:_update_margins(b.rows, b.xnorm)
  check(C.facet_head_target(h, b.rows.h, b.z.h, wnorm, bias, y.h, 0, self.classes))
  self:_elastic(b, b.rows)
  self:_update_t(b.rows)
  check(C.facet_head_partial(h, b.rows.h, b.z.h, wnorm, bias, y.h, 0))
  local loss = self:_finish(b.rows, name, nil, function() self:_unschedule(lambda); self:_restore_state() end)
  self.iter = self.iter + 1
  self.input, self.labels, self.ready = input, y, true
  self.loss = loss
  return loss
end

-- Sub-centres: each class's best cosine into z (and its index into
-- b.index) from sub, the GEMM output; returns the norms the row passes then
-- take (ones; without sub-centres wnorm itself). Shared with facet.heads.sharded.
function Head:_subcenter_max(b, z, sub, wnorm)
  if self.subcenters == 1 then return wnorm end
  check(C.facet_head_subcenter_max(z.h, b.index.h, sub.h, wnorm.h), 2)
  return b.ones
end

-- Sub-centres, after facet_head_backward over z (dLoss/dcos per class):
-- sub becomes the gradient of the GEMM output and colsum_cos the radial
-- sums per sub-centre; returns the B x (K k) gradient the backward GEMMs
-- take (without sub-centres z itself). Shared with facet.heads.sharded.
function Head:_subcenter_scatter(b, z, sub, wnorm, colsum_cos)
  if self.subcenters == 1 then return z end
  check(C.facet_head_subcenter_scatter(sub.h, colsum_cos.h, z.h, b.index.h, wnorm.h), 2)
  return sub
end

-- ---- the adaptive heads' state ------------------------------------------------------------
-- self.state names the tensors (CurricularFace's t, AdaFace's batch_mean and
-- batch_std: the authors' buffer names) and self.state_saved holds a copy of
-- each, taken before a forward moves them (_save_state) and put back when it
-- fails (_restore_state). Both are made with the head and on every move to a
-- device (_bind_state), so a step allocates nothing for them.

function Head:_bind_state()
  local state, saved = {}, {}
  if self.h == "curricular" then state.t = self.t end
  if self.norm_h ~= nil then state.batch_mean, state.batch_std = self.batch_mean, self.batch_std end
  for k, v in pairs(state) do saved[k] = tensor.empty(v:shape(), { device = v:device() }) end
  self.state, self.state_saved = state, saved
end

function Head:_save_state()
  for k, v in pairs(self.state) do self.state_saved[k]:copy(v) end
end

-- puts back the state of before the forward that failed
function Head:_restore_state()
  for k, v in pairs(self.state) do v:copy(self.state_saved[k]) end
end

--- The head's state that is not a parameter, by name (CurricularFace's t,
-- AdaFace's batch_mean and batch_std, 1-element tensors): what checkpoints
-- hold beside the weights, and what facet.train saves before a step and puts
-- back when its guard rejects it.
function Head:state_tensors()
  live(self, "state_tensors")
  local r = {}
  for k, v in pairs(self.state) do r[k] = v end
  return r
end

-- CurricularFace: t moves towards the batch's mean c_y (rows after every
-- target call), and every row of rows gets it. No read on the host. Other
-- heads: nothing. Shared with facet.heads.sharded.
function Head:_update_t(rows)
  if self.h ~= "curricular" then return end
  check(C.facet_head_update_t(self.handle, rows.h, self.t.h, self.momentum), 2)
end

-- AdaFace: the running mean and std of the feature norms move by the
-- batch's (norms: B values, every row of the batch, on the head's device),
-- and every row of rows gets its normalised norm. Other heads: nothing.
-- Shared with facet.heads.sharded.
function Head:_update_norms(rows, norms)
  if self.norm_h == nil then return end
  check(C.facet_head_update_norms(self.handle, rows.h, norms.h, self.batch_mean.h, self.batch_std.h, self.momentum,
    self.norm_h), 2)
end

-- ElasticFace: each row's margin drawn for this step (the same draws on
-- every rank of a sharded head: the key and the step are the same), its
-- target fields recomputed (rows: every row of the batch, after the target
-- calls). Other heads: nothing. Shared with facet.heads.sharded.
function Head:_elastic(b, rows)
  if not self.elastic then return end
  local B = rows:size(1)
  local d = b.draws
  if not (d and d:numel() == B and d:device() == self.device) then
    d = tensor.empty({ B }, { device = self.device })
    b.draws = d
  end
  check(C.facet_tensor_rand_normal(d.h, self.draw_seed, self.iter * ELASTIC_STRIDE, 0, 1), 2)
  check(C.facet_head_elastic(self.handle, rows.h, d.h), 2)
end

--- The per-sample margins of the last forward (ElasticFace's draws,
-- MagFace's margins from the norms), a new B-element tensor on the head's
-- device; nil for the other heads or before a forward.
function Head:margins()
  live(self, "margins")
  return self:_margins(self.buf)
end

-- the margins in the rows of buffers b (shared with facet.heads.sharded)
function Head:_margins(b)
  if not (self.elastic or self.l_a) or not (b and b.rows) then return nil end
  local rows = b.rows
  return rows:narrow(2, tonumber(C.FACET_HEAD_ROW_NORM) + 1, 1):contiguous():reshape(rows:size(1))
end

-- MagFace: each row's margin and regulariser from its norm (norms: B values,
-- every row of rows). Other heads: nothing. Shared with facet.heads.sharded.
function Head:_update_margins(rows, norms)
  if self.l_a == nil then return end
  check(C.facet_head_update_margins(self.handle, rows.h, norms.h), 2)
end

-- MagFace: adds to dx (n rows) the gradient through the norms: coef_i x_hat_i,
-- coef from rows and norms (all the forward's rows, start: the 1-based first
-- of dx's among them), into the buffer b.mag_coef. Other heads: nothing.
function Head:_norm_grad(b, rows, norms, dx, xhat, start)
  if self.l_a == nil then return end
  local B = rows:size(1)
  local coef = b.mag_coef
  if not (coef and coef:numel() == B and coef:device() == self.device) then
    coef = tensor.empty({ B }, { device = self.device })
    b.mag_coef = coef
  end
  check(C.facet_head_norm_grad(self.handle, rows.h, norms.h, coef.h), 2)
  local n = dx:size(1)
  if n ~= B then coef = coef:narrow(1, start, n) end
  check(C.facet_tensor_rows_axpy(dx.h, coef.h, xhat.h), 2)
end

--- Runs facet_head_finish on rows and returns the loss. A label outside
-- [0, classes) that the target kernel found on the GPU (read back with the
-- loss) becomes labels_of's error; where(row) names a 0-based row of rows (by
-- default "row <row + 1>"); undo() runs first. Shared with facet.heads.sharded.
function Head:_finish(rows, name, where, undo)
  local h = self.handle
  local rc = C.facet_head_finish(h, rows.h, loss_p)
  if rc ~= 0 then
    local msg = core.last_error()
    if undo then undo() end
    check(C.facet_head_bad_label(h, bad_p, bad_p + 1, bad_p + 2))
    -- a label verdict only for an argument error (a device fault keeps its own message)
    if rc == C.FACET_STATUS_ERR_ARG and bad_p[0] >= 0 then
      local row = tonumber(bad_p[0])
      label_error(name, bad_p[1], where and where(row) or row + 1, bad_p[2], 2)
    end
    core.raise(msg, 2)
  end
  return loss_p[0]
end

--- dL/dx of the last forward, in its x's dtype (a buffer reused by the next call); accumulates
-- the parameter gradients (grad_weight, grad_bias, grad_alpha).
function Head:backward()
  live(self, "backward")
  if not self.ready then
    error(self.name .. ":backward: no forward to go back through (call forward first, once per backward; " ..
      "a forward that failed leaves none)", 2)
  end
  params_alive(self, "backward")
  if self.input:is_freed() then error(self.name .. ":backward: the x of the forward was freed", 2) end
  self.ready = false
  local b = self.buf
  local sc = self.subcenters > 1
  local wnorm = self.kind == "cosine" and (sc and b.ones or b.wnorm).h or nil
  local bias = self.bias and self.bias.h or nil
  local colsum = b.colsum and b.colsum.h or nil
  local colsum_cos = b.colsum_cos and not sc and b.colsum_cos.h or nil
  check(C.facet_head_backward(self.handle, b.z.h, b.rows.h, wnorm, bias, self.labels.h, 0, colsum, colsum_cos))
  local g = self:_subcenter_scatter(b, b.z, b.sub, b.wnorm, b.colsum_cos)
  check(C.facet_tensor_matmul(b.dinput.h, g.h, self.weight.h, 0, 0, 1, 0))
  check(C.facet_tensor_matmul(self.grad_weight.h, g.h, self.input.h, 1, 0, 1, 1))
  self:_radial(self.grad_weight, self.weight, b.colsum_cos, b.wnorm, self.pending)
  if self.bias then check(C.facet_tensor_axpy(self.grad_bias.h, self.grad_bias.h, 1, b.colsum.h)) end
  local dx = self:_input_grad(b, b.dinput)
  self:_norm_grad(b, b.rows, b.xnorm, dx, b.xhat)
  return self:_narrow(b, dx)
end

-- cosine heads: takes the radial part out of the rows of grad (of weight):
-- grad_k -= (colsum_cos_k / ||w_k||) w_k, or adds that coefficient to pending
-- (fused: the optimizer applies it). colsum_cos is overwritten.
function Head:_radial(grad, weight, colsum_cos, wnorm, pending)
  if self.kind ~= "cosine" then return end
  check(C.facet_tensor_binary(colsum_cos.h, colsum_cos.h, wnorm.h, C.FACET_BINARY_DIV))
  if self.fused then
    -- deferred to the optimizer's update (or finish_grad); W is unchanged
    -- until then, so the coefficients of several backward calls add up
    check(C.facet_tensor_axpy(pending.h, pending.h, -1, colsum_cos.h))
  else
    check(C.facet_tensor_unary(colsum_cos.h, colsum_cos.h, C.FACET_UNARY_NEG, 0, 0))
    check(C.facet_tensor_rows_axpy(grad.h, colsum_cos.h, weight.h))
  end
end

-- dL/dx from dinput = dL/d(input of the GEMM) (overwritten): the l2 head's
-- alpha gradient (its increment passed through reduce when given, e.g. a sum
-- over ranks) and scaling, then the backward of the normalisation
function Head:_input_grad(b, dinput, reduce)
  if self.kind == "raw" then return dinput end
  if self.kind == "l2" then
    if self.learn_alpha then
      -- dL/dalpha = sum_ij dinput_ij * xhat_ij (b.xs is free after the GEMMs),
      -- summed and added where alpha lives
      check(C.facet_tensor_binary(b.xs.h, dinput.h, b.xhat.h, C.FACET_BINARY_MUL))
      local inc = b.alpha_inc
      if not (inc and inc:device() == self.device) then
        inc = tensor.empty({ 1 }, { device = self.device })
        b.alpha_inc = inc
      end
      check(C.facet_tensor_reduce(inc.h, b.xs.h, C.FACET_REDUCE_SUM, -1, 0))
      if reduce then reduce(inc) end
      check(C.facet_tensor_axpy(self.grad_alpha.h, self.grad_alpha.h, 1, inc.h))
    end
    check(C.facet_tensor_binary(dinput.h, dinput.h, self.alpha.h, C.FACET_BINARY_MUL))
  end
  check(C.facet_tensor_l2_normalize_backward(b.dx.h, dinput.h, b.xhat.h, b.xnorm.h, EPS))
  return b.dx
end

--- In fused mode, applies the deferred radial correction to grad_weight (the
-- optimizer does it in its update; call this before reading grad_weight yourself).
function Head:finish_grad()
  live(self, "finish_grad")
  params_alive(self, "finish_grad")
  if self.fused then
    check(C.facet_tensor_rows_axpy(self.grad_weight.h, self.pending.h, self.weight.h))
    self.pending:zero_()
  end
  return self.grad_weight
end

--- In fused mode, tells the head that W changed (the optimizer calls it
-- through the weight entry's on_update; call it after writing head.weight
-- yourself). norms_written: self.norms holds the new ||w_k|| (facet_sgd_step's
-- row_norms); otherwise the next forward measures W again.
function Head:weight_changed(norms_written)
  if not self.fused or self.handle == nil then return end   -- a freed head has nothing to keep in step
  self.norms_valid = norms_written and true or false
  if self.norms_valid and self.buf then self.buf.wnorm:copy(self.norms) end
end

-- ||complete grad_weight||^2 without completing it: the complete row
-- g_k + c_k w_k is orthogonal to w_k (the radial part is what c_k w_k removes),
-- so ||g_k + c_k w_k||^2 = ||g_k||^2 - c_k^2 ||w_k||^2, with ||w_k|| the norms
-- the backward used (W has not changed since).
function Head:_grad_weight_sumsq()
  local out = tensor.empty({ 1 }, { device = self.device })
  check(C.facet_tensor_reduce(out.h, self.grad_weight.h, C.FACET_REDUCE_SUMSQ, -1, 0))
  local total = out:item()
  if not self.buf then return total end   -- no backward yet: nothing is deferred
  local tmp = self.buf.colsum_cos           -- scratch: free until the next backward
  check(C.facet_tensor_binary(tmp.h, self.pending.h, self.buf.wnorm.h, C.FACET_BINARY_MUL))
  check(C.facet_tensor_reduce(out.h, tmp.h, C.FACET_REDUCE_SUMSQ, -1, 0))
  total = total - out:item()
  if total ~= total then return total end   -- NaN stays NaN (facet.train's guard)
  return math.max(total, 0)
end

--- The parameter interface shared with facet.nn.Module (see there):
-- { name, param, grad, kind, module = self } for weight, bias ("bias") and a
-- learned alpha ("norm"). A fused head's weight entry also carries
--   row_coef    (classes) the deferred radial correction: the complete
--               gradient is grad + row_coef_k * param_k; whoever applies it zeroes it
--   row_norms   (classes) where an update writes ||param_k|| of the new W
--   on_update(norms_written)  called after every update of param
--   grad_sumsq()  ||complete gradient||^2 without completing it
function Head:named_parameters(prefix, out)
  live(self, "named_parameters")
  out = out or {}
  prefix = prefix or ""
  local w = { name = prefix .. "weight", param = self.weight, grad = self.grad_weight, kind = "weight", module = self }
  if self.fused then
    w.row_coef, w.row_norms = self.pending, self.norms
    w.on_update = function(norms_written) self:weight_changed(norms_written) end
    w.grad_sumsq = function() return self:_grad_weight_sumsq() end
  end
  out[#out + 1] = w
  if self.bias then
    out[#out + 1] = { name = prefix .. "bias", param = self.bias, grad = self.grad_bias, kind = "bias", module = self }
  end
  if self.alpha and self.learn_alpha then
    out[#out + 1] = { name = prefix .. "alpha", param = self.alpha, grad = self.grad_alpha, kind = "norm", module = self }
  end
  return out
end

--- Parameters and their gradients, as two lists in the same order (Torch7's shape).
function Head:parameters()
  local p, g = {}, {}
  for i, e in ipairs(self:named_parameters()) do p[i], g[i] = e.param, e.grad end
  return p, g
end

function Head:zero_grad()
  live(self, "zero_grad")
  params_alive(self, "zero_grad")
  local _, grads = self:parameters()
  for _, g in ipairs(grads) do g:zero_() end
  if self.grad_alpha then self.grad_alpha:zero_() end
  if self.pending then self.pending:zero_() end
end

function Head:_to(device)
  for _, k in ipairs { "weight", "grad_weight", "bias", "grad_bias", "alpha", "grad_alpha", "pending", "norms",
    "t", "batch_mean", "batch_std" } do
    if tensor.is_tensor(self[k]) then self[k] = self[k]:to(device) end
  end
  self:_bind_state()
  self.device = device
  self.buf, self.ready, self.norms_valid = nil, false, false
  return self
end

--- Moves parameters and gradients to a device ("cpu" or "cuda"); create the
-- optimizer afterwards (it holds the tensors it was given).
function Head:to(device)
  live(self, "to")
  if device ~= "cpu" and device ~= "cuda" then error(self.name .. ":to: unknown device " .. tostring(device), 2) end
  if device == self.device then return self end
  return self:_to(device)
end

function Head:cuda() live(self, "cuda"); return self:_to("cuda") end
function Head:float() live(self, "float"); return self:_to("cpu") end
Head.cpu = Head.float

function Head:__tostring()
  local parts = { ("%s(classes=%d, dim=%d"):format(self.name, self.classes, self.dim) }
  if self.subcenters > 1 then parts[#parts + 1] = ("subcenters=%d"):format(self.subcenters) end
  for _, k in ipairs { "s", "m", "m1", "m2", "m3", "t", "norm_h", "momentum", "l_a", "u_a", "l_m", "u_m", "lambda_g",
    "std", "gamma", "keep" } do
    local v = self[k]
    if k == "norm_h" then k = "h" end
    if tensor.is_tensor(v) then v = v:item() end
    if v ~= nil and not (k == "s" and self.kind ~= "cosine") then parts[#parts + 1] = ("%s=%g"):format(k, v) end
  end
  if self.h ~= nil and self.h ~= "curricular" then
    parts[#parts + 1] = "h=" .. (type(self.h) == "function" and "scripted" or self.h)
  end
  if self.plus then parts[#parts + 1] = "plus" end
  if self.alpha then parts[#parts + 1] = ("alpha=%g%s"):format(self.alpha:item(), self.learn_alpha and " (learned)" or "") end
  return table.concat(parts, ", ") .. ", " .. self.device .. ")"
end

return Head
