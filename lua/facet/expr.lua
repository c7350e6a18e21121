--- facet.expr: symbolic expressions for scripted heads.
-- A user's h(t, cos, I, s) or margin(cos, m) is called once with symbolic
-- arguments; arithmetic operators and the functions here build a tree, which
-- is simplified (constants folded, log(exp(u)) = u, x*1, x+0 ...),
-- differentiated exactly and compiled to the register program the fused C and
-- CUDA kernels run (FACET_EXPR_* in facet.h). With plain numbers the same
-- functions just compute, so a scripted function also works on numbers.
-- The variable is the cosine: compile checks that a program (a margin, its
-- derivative, log h ...) is finite in float32 on a grid of [-1, 1], and
-- validate checks a value and its derivative there. An expression may nest at
-- most MAX_DEPTH (256) operations (a program holds at most 64 registers anyway),
-- so a runaway loop building one stops with a clear error, not a stack overflow.
local core = require "facet.core"

local C = core.C
local M = {}

M.MAX_DEPTH = 256
local FLT_MAX = 3.4028234663852886e38

local function raise(msg) core.raise(msg, 2) end

local function describe(v) return require("facet.check").describe(v) end

local Node = {}
Node.__index = Node

local function is_node(x) return type(x) == "table" and getmetatable(x) == Node end
M.is_node = is_node

local function const(v) return setmetatable({ op = "const", value = v }, Node) end

local function lift(x, where)
  if is_node(x) then return x end
  if type(x) == "number" then return const(x) end
  raise(("%s: want a number or an expression, got %s"):format(where or "facet.expr", describe(x)))
end

-- numeric meaning of every op (also the constant folder)
local EVAL = {
  add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
  neg = function(a) return -a end, exp = math.exp, log = math.log, sqrt = math.sqrt,
  cos = math.cos, sin = math.sin,
  acos = function(a) return math.acos(math.max(-1, math.min(1, a))) end,
  abs = math.abs, min = math.min, max = math.max, pow = function(a, b) return a ^ b end,
  lt = function(a, b) return a < b and 1 or 0 end, le = function(a, b) return a <= b and 1 or 0 end,
  gt = function(a, b) return a > b and 1 or 0 end, ge = function(a, b) return a >= b and 1 or 0 end,
  where = function(c, a, b) if c ~= 0 then return a end return b end,
  floor = math.floor,
}

local ARITY = { neg = 1, exp = 1, log = 1, sqrt = 1, cos = 1, sin = 1, acos = 1, abs = 1, floor = 1,
  add = 2, sub = 2, mul = 2, div = 2, min = 2, max = 2, pow = 2, lt = 2, le = 2, gt = 2, ge = 2, where = 3 }

local simplify   -- forward declaration

-- a node for op over args, simplified as it is built; numbers in, number out
local function make(op, ...)
  local args = { ... }
  local all_numbers = true
  local depth = 0
  for i = 1, ARITY[op] do
    local a = args[i]
    if is_node(a) then
      all_numbers = false
      if (a.depth or 1) > depth then depth = a.depth or 1 end
    elseif type(a) ~= "number" then
      raise(("facet.expr.%s: argument %d must be a number or an expression, got %s"):format(op, i, describe(a)))
    end
  end
  if all_numbers then return EVAL[op](unpack(args, 1, ARITY[op])) end
  if depth >= M.MAX_DEPTH then
    raise(("facet.expr: the expression nests more than %d operations (%s of an expression %d deep); " ..
      "a margin or h program holds at most %d registers"):format(M.MAX_DEPTH, op, depth,
      tonumber(C.FACET_EXPR_MAX_REGS)))
  end
  for i = 1, ARITY[op] do args[i] = lift(args[i], op) end
  return simplify(setmetatable({ op = op, args = args, depth = depth + 1 }, Node))
end

local function isconst(n, v) return n.op == "const" and (v == nil or n.value == v) end

simplify = function(n)
  local op, a = n.op, n.args
  if not a then return n end
  local folded = true
  for i = 1, #a do if a[i].op ~= "const" then folded = false end end
  if folded then
    local vals = {}
    for i = 1, #a do vals[i] = a[i].value end
    return const(EVAL[op](unpack(vals, 1, #a)))
  end
  local x, y = a[1], a[2]
  if op == "add" then
    if isconst(x, 0) then return y end
    if isconst(y, 0) then return x end
  elseif op == "sub" then
    if isconst(y, 0) then return x end
    if isconst(x, 0) then return make("neg", y) end
  elseif op == "mul" then
    if isconst(x, 0) or isconst(y, 0) then return const(0) end
    if isconst(x, 1) then return y end
    if isconst(y, 1) then return x end
  elseif op == "div" then
    if isconst(y, 1) then return x end
    if isconst(x, 0) then return const(0) end
  elseif op == "neg" then
    if x.op == "neg" then return x.args[1] end
  elseif op == "pow" then
    if isconst(y, 1) then return x end
    if isconst(y, 0) then return const(1) end
  elseif op == "log" then
    if x.op == "exp" then return x.args[1] end            -- log(exp(u)) = u
  elseif op == "where" then
    if x.op == "const" then return x.value ~= 0 and y or a[3] end
  end
  return n
end

Node.__add = function(a, b) return make("add", a, b) end
Node.__sub = function(a, b) return make("sub", a, b) end
Node.__mul = function(a, b) return make("mul", a, b) end
Node.__div = function(a, b) return make("div", a, b) end
Node.__pow = function(a, b) return make("pow", a, b) end
Node.__unm = function(a) return make("neg", a) end
local function no_compare()
  raise("facet.expr: comparisons of expressions cannot be Lua booleans: use facet.expr.lt/le/gt/ge and facet.expr.where")
end
Node.__lt, Node.__le = no_compare, no_compare
Node.__call = function() raise("facet.expr: an expression is not a function") end
Node.__concat = function() raise("facet.expr: an expression is not a string (use facet.expr.tostring)") end
Node.__tostring = function(n) return M.tostring(n) end

for op, k in pairs(ARITY) do
  if k == 1 then M[op] = function(x) return make(op, x) end
  elseif k == 2 then M[op] = function(x, y) return make(op, x, y) end end
end
M.where = function(c, x, y) return make("where", c, x, y) end
M.pow = function(x, y) return make("pow", x, y) end

--- The variable of an expression (the cosine).
function M.var(name)
  if name ~= nil and type(name) ~= "string" then
    raise(("facet.expr.var: name must be a string, got %s"):format(describe(name)))
  end
  return setmetatable({ op = "var", name = name or "cos" }, Node)
end

-- n must be a number or an expression
local function operand(fn, n)
  if type(n) ~= "number" and not is_node(n) then
    raise(("%s: want a number or an expression, got %s"):format(fn, describe(n)))
  end
  return n
end

function M.tostring(n)
  operand("facet.expr.tostring", n)
  if type(n) == "number" then return tostring(n) end
  if n.op == "const" then return tostring(n.value) end
  if n.op == "var" then return n.name end
  local parts = {}
  for i, x in ipairs(n.args) do parts[i] = M.tostring(x) end
  return n.op .. "(" .. table.concat(parts, ", ") .. ")"
end

--- Value of an expression (or number) at var = v, in double precision.
function M.eval(n, v)
  operand("facet.expr.eval", n)
  if type(v) ~= "number" then raise(("facet.expr.eval: the value must be a number, got %s"):format(describe(v))) end
  if type(n) == "number" then return n end
  local memo = {}
  local function go(x)
    if x.op == "const" then return x.value end
    if x.op == "var" then return v end
    local r = memo[x]
    if r then return r end
    local vals = {}
    for i, a in ipairs(x.args) do vals[i] = go(a) end
    r = EVAL[x.op](unpack(vals, 1, #x.args))
    memo[x] = r
    return r
  end
  return go(n)
end

--- d n / d var, simplified.
function M.diff(n)
  operand("facet.expr.diff", n)
  if type(n) == "number" then return 0 end
  local memo = {}
  local function d(x)
    if memo[x] then return memo[x] end
    local op, a = x.op, x.args
    local r
    if op == "const" then r = const(0)
    elseif op == "var" then r = const(1)
    elseif op == "add" then r = make("add", d(a[1]), d(a[2]))
    elseif op == "sub" then r = make("sub", d(a[1]), d(a[2]))
    elseif op == "mul" then r = make("add", make("mul", d(a[1]), a[2]), make("mul", a[1], d(a[2])))
    elseif op == "div" then
      r = make("div", make("sub", make("mul", d(a[1]), a[2]), make("mul", a[1], d(a[2]))), make("mul", a[2], a[2]))
    elseif op == "neg" then r = make("neg", d(a[1]))
    elseif op == "exp" then r = make("mul", x, d(a[1]))
    elseif op == "log" then r = make("div", d(a[1]), a[1])
    elseif op == "sqrt" then r = make("div", d(a[1]), make("mul", 2, x))
    elseif op == "cos" then r = make("neg", make("mul", make("sin", a[1]), d(a[1])))
    elseif op == "sin" then r = make("mul", make("cos", a[1]), d(a[1]))
    elseif op == "acos" then
      -- -u' / sqrt(1 - u^2), kept finite at u = +-1 like the built-in margins
      r = make("neg", make("div", d(a[1]), make("max", make("sqrt", make("sub", 1, make("mul", a[1], a[1]))), 1e-3)))
    elseif op == "abs" then r = make("where", make("ge", a[1], 0), d(a[1]), make("neg", d(a[1])))
    elseif op == "min" then r = make("where", make("le", a[1], a[2]), d(a[1]), d(a[2]))
    elseif op == "max" then r = make("where", make("ge", a[1], a[2]), d(a[1]), d(a[2]))
    elseif op == "pow" then
      if a[2].op == "const" then
        r = make("mul", make("mul", a[2].value, make("pow", a[1], a[2].value - 1)), d(a[1]))
      else
        r = make("mul", x, make("add", make("mul", d(a[2]), make("log", a[1])),
          make("div", make("mul", a[2], d(a[1])), a[1])))
      end
    elseif op == "where" then r = make("where", a[1], d(a[2]), d(a[3]))
    else r = const(0) end        -- comparisons and floor are piecewise constant
    r = lift(r)
    memo[x] = r
    return r
  end
  return d(n)
end

local OPCODE = {
  add = C.FACET_EXPR_OP_ADD, sub = C.FACET_EXPR_OP_SUB, mul = C.FACET_EXPR_OP_MUL, div = C.FACET_EXPR_OP_DIV,
  neg = C.FACET_EXPR_OP_NEG, exp = C.FACET_EXPR_OP_EXP, log = C.FACET_EXPR_OP_LOG, sqrt = C.FACET_EXPR_OP_SQRT,
  cos = C.FACET_EXPR_OP_COS, sin = C.FACET_EXPR_OP_SIN, acos = C.FACET_EXPR_OP_ACOS, abs = C.FACET_EXPR_OP_ABS,
  min = C.FACET_EXPR_OP_MIN, max = C.FACET_EXPR_OP_MAX, pow = C.FACET_EXPR_OP_POW, lt = C.FACET_EXPR_OP_LT,
  le = C.FACET_EXPR_OP_LE, gt = C.FACET_EXPR_OP_GT, ge = C.FACET_EXPR_OP_GE, where = C.FACET_EXPR_OP_WHERE,
  floor = C.FACET_EXPR_OP_FLOOR,
}

-- ---- checks over the domain ------------------------------------------------------

local function finite32(y) return type(y) == "number" and y == y and y >= -FLT_MAX and y <= FLT_MAX end

-- points evenly spaced over range, both ends included
local function grid(range, points)
  local lo, hi, g = range[1], range[2], {}
  for i = 0, points - 1 do g[#g + 1] = i == points - 1 and hi or lo + (hi - lo) * i / (points - 1) end
  return g
end

local function fmt(x) return ("%.6g"):format(x) end

-- "inf", "nan", "4.5e+38, beyond float32's range"
local function bad_text(y)
  if type(y) == "number" and y == y and y > -math.huge and y < math.huge then
    return ("%.3g, beyond float32's range"):format(y)
  end
  return describe(y)
end

-- the first grid point where n is not finite in float32, and its value
local function first_bad(n, g)
  for _, x in ipairs(g) do
    local y = M.eval(n, x)
    if not finite32(y) then return x, y end
  end
end

local function domain_options(fn, opts)
  local check = require "facet.check"
  local range = opts.range == nil and { -1, 1 } or
    check.list(fn, "range", opts.range, { len = 2, increasing = true })
  local points = check.integer(fn, "points", opts.points, { min = 2, max = 100000, default = 201 })
  return range, points
end

--- Checks an expression over a grid of its domain, the value and (with
-- opts.derivative) the derivative: each must be finite in float32, which is
-- what the kernels compute in. f is an expression, a number, or a function
-- called with the symbolic variable (opts.args(var) gives its arguments when
-- it takes more, e.g. function(c) return c, 0.35 end for margin(cos, m)).
-- opts: range ({-1, 1}), points (201, both ends included), derivative (false),
-- what (the message's subject), check (function(y, x) called per value).
-- Returns the expression and, with derivative, its derivative.
--   facet.expr.validate(function(c) return facet.expr.sqrt(c + 1) end, { derivative = true })
--   --> error: facet.expr.validate: the derivative is not finite at cos = -1 (inf) ...
function M.validate(f, opts)
  local check = require "facet.check"
  opts = check.options("facet.expr.validate", opts, { "range", "points", "derivative", "what", "check", "args" })
  local what = opts.what ~= nil and check.string("facet.expr.validate", "what", opts.what) or "facet.expr.validate"
  local range, points = domain_options("facet.expr.validate", opts)
  if opts.check ~= nil then check.func("facet.expr.validate", "check", opts.check) end
  if opts.args ~= nil then check.func("facet.expr.validate", "args", opts.args) end
  local node = f
  if type(f) == "function" then
    local var = M.var("cos")
    local ok, v
    if opts.args then ok, v = pcall(function() return f(opts.args(var)) end)
    else ok, v = pcall(f, var) end
    if not ok then
      if tostring(v):find("compare", 1, true) then
        raise(("%s: the function compares its argument with < or <=, but comparisons of expressions cannot be " ..
          "Lua booleans: use facet.expr.lt/le/gt/ge and facet.expr.where"):format(what))
      end
      raise(("%s: the function failed on symbolic input (%s); use arithmetic and facet.expr's functions " ..
        "(exp, log, sqrt, cos, sin, acos, abs, min, max, lt, le, gt, ge, where)"):format(what, tostring(v)))
    end
    node = v
  end
  if type(node) ~= "number" and not is_node(node) then
    raise(("%s: want a number or an expression%s, got %s"):format(what,
      type(f) == "function" and " from the function" or "", describe(node)))
  end
  local g = grid(range, points)
  local x, y = first_bad(node, g)
  if x then raise(("%s: not finite at cos = %s (got %s)"):format(what, fmt(x), bad_text(y))) end
  if opts.check then
    for _, xv in ipairs(g) do opts.check(M.eval(node, xv), xv) end
  end
  local d
  if opts.derivative then
    d = M.diff(node)
    x, y = first_bad(d, g)
    if x then
      raise(("%s: the derivative is not finite at cos = %s (got %s), so training would get NaN or infinite " ..
        "gradients; keep the function smooth on [%s, %s] (e.g. sqrt(max(u, 1e-6)) instead of sqrt(u))")
        :format(what, fmt(x), bad_text(y), fmt(range[1]), fmt(range[2])))
    end
  end
  return node, d
end

--- Compiles an expression of the variable to { code = {...}, consts = {...}, n = instructions }.
-- Shared subtrees are emitted once; register 0 is the variable. The program
-- must be finite in float32 on a grid of the variable's domain (opts.range,
-- {-1, 1}: the cosine; opts.range = false skips the check), since the kernels
-- run it for every cosine of a batch.
function M.compile(n, what, opts)
  if what ~= nil and type(what) ~= "string" then
    raise(("facet.expr.compile: what must be a string, got %s"):format(describe(what)))
  end
  n = lift(n, what or "facet.expr.compile")
  if opts ~= nil and type(opts) ~= "table" then
    raise(("facet.expr.compile: opts must be a table, got %s"):format(describe(opts)))
  end
  opts = opts or {}
  if opts.range ~= false then
    local range, points = domain_options("facet.expr.compile", opts)
    local x, y = first_bad(n, grid(range, points))
    if x then
      raise(("%s: not finite at cos = %s (got %s); the program runs in float32 for every cosine in [%s, %s]")
        :format(what or "facet.expr.compile", fmt(x), bad_text(y), fmt(range[1]), fmt(range[2])))
    end
  end
  local code, consts, reg, next_reg = {}, {}, {}, 1
  local const_index = {}
  local max_regs = tonumber(C.FACET_EXPR_MAX_REGS)
  local function emit(op, a, b, c)
    if next_reg >= max_regs then
      raise(("%s: the expression needs more than %d registers"):format(what or "facet.expr.compile", max_regs))
    end
    local dst = next_reg
    next_reg = next_reg + 1
    for _, v in ipairs { op, dst, a or 0, b or 0, c or 0 } do code[#code + 1] = v end
    return dst
  end
  local function go(x)
    if reg[x] then return reg[x] end
    local r
    if x.op == "var" then r = 0
    elseif x.op == "const" then
      local k = const_index[x.value]
      if not k then
        consts[#consts + 1] = x.value
        k = #consts - 1
        const_index[x.value] = k
      end
      r = emit(C.FACET_EXPR_OP_CONST, k)
    else
      local ops = {}
      for i, a in ipairs(x.args) do ops[i] = go(a) end
      r = emit(OPCODE[x.op], ops[1], ops[2], ops[3])
    end
    reg[x] = r
    return r
  end
  local out = go(n)
  if out == 0 then emit(C.FACET_EXPR_OP_ADD, 0, emit(C.FACET_EXPR_OP_CONST, (function()
    consts[#consts + 1] = 0
    return #consts - 1
  end)()))
  end
  if #consts > tonumber(C.FACET_EXPR_MAX_CONSTS) then
    raise(("%s: more than %d constants"):format(what or "facet.expr.compile", tonumber(C.FACET_EXPR_MAX_CONSTS)))
  end
  return { code = code, consts = consts, n = #code / 5 }
end

return M
