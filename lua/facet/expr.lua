--- facet.expr: symbolic expressions for scripted heads.
-- A user's h(t, cos, I, s) or margin(cos, m) is called once with symbolic
-- arguments; arithmetic operators and the functions here build a tree, which
-- is simplified (constants folded, log(exp(u)) = u, x*1, x+0 ...),
-- differentiated exactly and compiled to the register program the fused C and
-- CUDA kernels run (FACET_EXPR_* in facet.h). With plain numbers the same
-- functions just compute, so a scripted function also works on numbers.
local core = require "facet.core"

local C = core.C
local M = {}

local Node = {}
Node.__index = Node

local function is_node(x) return getmetatable(x) == Node end
M.is_node = is_node

local function const(v) return setmetatable({ op = "const", value = v }, Node) end

local function lift(x, where)
  if is_node(x) then return x end
  if type(x) == "number" then return const(x) end
  error(("%s: expected a number or an expression, got %s"):format(where or "expression", type(x)), 3)
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
  for i = 1, ARITY[op] do
    if args[i] == nil then error(("%s: missing argument %d"):format(op, i), 3) end
    if is_node(args[i]) then all_numbers = false
    elseif type(args[i]) ~= "number" then
      error(("%s: expected numbers or expressions, got %s"):format(op, type(args[i])), 3)
    end
  end
  if all_numbers then return EVAL[op](unpack(args, 1, ARITY[op])) end
  for i = 1, ARITY[op] do args[i] = lift(args[i], op) end
  return simplify(setmetatable({ op = op, args = args }, Node))
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
  error("comparisons of expressions cannot be Lua booleans: use facet.expr.lt/le/gt/ge and facet.expr.where", 2)
end
Node.__lt, Node.__le = no_compare, no_compare
Node.__call = function() error("an expression is not a function", 2) end
Node.__concat = function() error("an expression is not a string", 2) end
Node.__tostring = function(n) return M.tostring(n) end

for op, k in pairs(ARITY) do
  if k == 1 then M[op] = function(x) return make(op, x) end
  elseif k == 2 then M[op] = function(x, y) return make(op, x, y) end end
end
M.where = function(c, x, y) return make("where", c, x, y) end
M.pow = function(x, y) return make("pow", x, y) end

--- The variable of an expression (the cosine).
function M.var(name) return setmetatable({ op = "var", name = name or "cos" }, Node) end

function M.tostring(n)
  if type(n) == "number" then return tostring(n) end
  if n.op == "const" then return tostring(n.value) end
  if n.op == "var" then return n.name end
  local parts = {}
  for i, x in ipairs(n.args) do parts[i] = M.tostring(x) end
  return n.op .. "(" .. table.concat(parts, ", ") .. ")"
end

--- Value of an expression (or number) at var = v, in double precision.
function M.eval(n, v)
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

--- Compiles an expression of the variable to { code = {...}, consts = {...}, n = instructions }.
-- Shared subtrees are emitted once; register 0 is the variable.
function M.compile(n, what)
  n = lift(n, what)
  local code, consts, reg, next_reg = {}, {}, {}, 1
  local const_index = {}
  local max_regs = tonumber(C.FACET_EXPR_MAX_REGS)
  local function emit(op, a, b, c)
    if next_reg >= max_regs then
      error(("%s: the expression needs more than %d registers"):format(what or "expression", max_regs), 0)
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
    error(("%s: more than %d constants"):format(what or "expression", tonumber(C.FACET_EXPR_MAX_CONSTS)), 0)
  end
  return { code = code, consts = consts, n = #code / 5 }
end

return M
