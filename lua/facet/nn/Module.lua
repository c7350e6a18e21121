--- facet.nn.Module: the base of every layer, with Torch7's API.
--   m:forward(x) -> output          (update_output)
--   m:backward(x, grad_out) -> grad_input
--                                   (update_grad_input + acc_grad_parameters;
--                                    parameter gradients ACCUMULATE)
--   m:parameters() -> params, grads  m:zero_grad()  m:train()  m:evaluate()
--   m:cuda()  m:float()  m:clear_state()  tostring(m)
-- Modules keep their outputs and scratch in `self.buffers` and reuse them
-- while the shapes stay the same, so a training step allocates nothing.
-- A module holds its parameters, gradients and state tensors: one of them
-- freed by hand (m.weight:free()) makes forward and backward refuse with
-- "Linear:forward: weight was freed" (never a crash). load_state is all or
-- nothing: it checks every name, shape and dtype before it copies anything.
-- Names: a container names its children (Sequential:add(m, "conv1"),
-- m:name_children{...}), as PyTorch modules do, so state_dict keys read
-- "layer1.0.bn1.running_mean"; a child named "" is transparent (its entries sit
-- in the parent's namespace), and unnamed children keep their 1-based position
-- ("3.weight"). A module may give a parameter a state name other than its field
-- (self._keys: PReLU's slope is "weight"), and keep counters (self._counters:
-- int64 scalars that stay on the CPU and that a training forward increments,
-- BatchNorm's num_batches_tracked), saved with the state.
local ffi = require "ffi"
local tensor = require "facet.tensor"
local core = require "facet.core"
local valid = require "facet.check"

local Module = {}
Module.__index = Module
Module.__name = "Module"

--- A subclass: local Linear = Module:extend("Linear").
function Module:extend(name)
  local cls = setmetatable({}, { __index = self, __call = function(c, ...) return c.new(...) end })
  cls.__index = cls
  cls.__name = name
  cls.__tostring = Module.__tostring
  return cls
end

--- An instance of cls with the common fields; subclasses call this first.
function Module.init(cls)
  return setmetatable({ training = true, device = "cpu", buffers = {}, _params = {} }, cls)
end

--- Registers a parameter and its gradient under a name; kind is "weight",
-- "bias" or "norm" (BatchNorm/PReLU-like, which optimizers may exempt from decay).
function Module:register(name, param, kind)
  self[name] = param
  self["grad_" .. name] = tensor.zeros(param:shape(), { device = param:device() })
  self._params[#self._params + 1] = { name = name, kind = kind or "weight" }
end

--- A buffer reused between steps: reallocated only when shape, dtype or device change.
function Module:buffer(name, shape, dtype)
  local b = self.buffers[name]
  dtype = dtype or "float32"
  if b and b:device() == self.device and b:dtype() == dtype then
    local s = b:shape()
    local same = #s == #shape
    for i = 1, #shape do if s[i] ~= shape[i] then same = false end end
    if same then return b end
  end
  b = tensor.empty(shape, { dtype = dtype, device = self.device })
  self.buffers[name] = b
  return b
end

--- A reshaped view of t, cached while the same tensor comes in (steps then
-- allocate nothing).
function Module:_view(key, t, shape)
  self._views = self._views or {}
  local c = self._views[key]
  if c and rawequal(c.src, t) then return c.view end
  local v = t:reshape(shape)
  self._views[key] = { src = t, view = v }
  return v
end

--- An error naming the module, the method and the tensor when one of the
-- module's own parameters, gradients or state tensors was freed.
function Module:check_alive(method)
  for _, p in ipairs(self._params) do
    local t, g = self[p.name], self["grad_" .. p.name]
    if not tensor.is_tensor(t) or t:is_freed() then core.raise(("%s:%s: %s was freed"):format(self.__name, method, p.name), 3) end
    if not tensor.is_tensor(g) or g:is_freed() then
      core.raise(("%s:%s: grad_%s was freed"):format(self.__name, method, p.name), 3)
    end
  end
  for _, k in ipairs(self._state or {}) do
    local t = self[k]
    if not tensor.is_tensor(t) or t:is_freed() then core.raise(("%s:%s: %s was freed"):format(self.__name, method, k), 3) end
  end
end

--- Raises "<module>: msg" at the user's line (the first caller outside facet),
-- for a module's checks of its input; the module is named by its description.
function Module:fail(msg)
  core.raise(("%s: %s"):format(self:describe(), msg), 2)
end

-- x must be a live tensor (method: "forward" or "backward")
local function check_input(self, method, x, name)
  if not tensor.is_tensor(x) then
    core.raise(("%s:%s: %s must be a tensor, got %s"):format(self.__name, method, name, valid.describe(x)), 3)
  end
  if x:is_freed() then core.raise(("%s:%s: %s was freed"):format(self.__name, method, name), 3) end
end

-- 16-bit activations (docs/mixed-precision.md): a leaf module whose kernels
-- are float32 only widens its float16/bfloat16 input into a float32 buffer it
-- keeps, runs the float32 kernels with its float32 parameters, and rounds the
-- output (in backward: grad_input) once into a buffer of the input's dtype;
-- parameter gradients stay float32. Modules that take any dtype themselves
-- (containers, views) set any_dtype = true and are passed through; leaf
-- modules whose kernels take 16-bit tensors natively (every leaf layer of
-- facet.nn: float32 parameters, 16-bit activations) set native_half = true
-- and are passed through too; a user's float32-only module widens.
local HALF = { float16 = true, bfloat16 = true }
Module.HALF = HALF

--- The widening forward for a float16/bfloat16 x (also for a native_half
-- module's case its kernels do not cover).
function Module:half_forward(x)
  local xf = self:buffer("amp_x", x:shape())
  xf:copy(x)
  self._amp_src = x
  local y = self:update_output(xf)
  self._amp_out32 = y
  local out = self:buffer("amp_output", y:shape(), x:dtype())
  out:copy(y)
  return out
end

-- the float32 backward of a leaf module with update_grad_input
local function backward32(self, x, grad_out)
  self.grad_input = self:update_grad_input(x, grad_out)
  self:acc_grad_parameters(x, grad_out)
  return self.grad_input
end

--- The backward of a leaf module for a float16/bfloat16 x: fn(self, x32,
-- grad_out32) is its float32 backward, run on float32 copies (the forward's
-- copy of x when x is the same tensor) with self.output the float32 output it
-- computed; returns grad_input in x's dtype (nil when fn gives none).
function Module:half_backward(x, grad_out, fn)
  local xf = self.buffers.amp_x
  if not xf or not rawequal(self._amp_src, x) then
    xf = self:buffer("amp_x", x:shape())
    xf:copy(x)
    self._amp_src = x
  end
  local gf = self:buffer("amp_grad_out", grad_out:shape())
  gf:copy(grad_out)
  local out16 = self.output
  self.output = self._amp_out32
  local ok, gi32 = pcall(fn, self, xf, gf)
  self.output = out16
  if not ok then error(gi32, 0) end
  if gi32 == nil then
    self.grad_input = nil
    return nil
  end
  local gi = self:buffer("amp_grad_input", gi32:shape(), x:dtype())
  gi:copy(gi32)
  self.grad_input = gi
  return gi
end

--- Marks the module to run in float32 under mixed precision (flag: true by
-- default; false unmarks): inside an nn.Sequential, a float16/bfloat16 input
-- reaches it as a float32 copy, so it and the children after it run in
-- float32, and its input gradient goes back in the 16-bit dtype. The models
-- mark the embedding's last layers (arcface_torch's fc and features, conv_sep
-- and GDC). Returns the module.
function Module:set_fp32(flag)
  if flag ~= nil and type(flag) ~= "boolean" then
    self:fail("set_fp32: flag must be true or false, got " .. valid.describe(flag))
  end
  self.fp32 = flag ~= false
  return self
end

-- A view that is not contiguous (narrow, select, transpose ...) reaches a
-- leaf module's kernels, which want contiguous tensors, as a contiguous copy
-- in a buffer the module keeps (the same buffer again in backward); containers
-- and views (any_dtype) pass it on as it is.
local function contiguous(self, name, t)
  if self.any_dtype or t:is_contiguous() then return t end
  local b = self:buffer(name, t:shape(), t:dtype())
  b:copy(t)
  return b
end

function Module:forward(x)
  self:check_alive("forward")
  check_input(self, "forward", x, "the input")
  x = contiguous(self, "contiguous_input", x)
  if not self.any_dtype and not self.native_half and HALF[x:dtype()] then
    self.output = self:half_forward(x)
  else
    self.output = self:update_output(x)
  end
  if self.training and self._counters then
    local ptrs = self._counter_ptrs or {}
    self._counter_ptrs = ptrs
    for _, k in ipairs(self._counters) do
      local t, c = self[k], ptrs[k]
      if not c or not rawequal(c.t, t) then
        -- the int64 as two little-endian uint32 words: Lua numbers, nothing boxed per step
        c = { t = t, p = ffi.cast("uint32_t *", t:data_ptr()) }
        ptrs[k] = c
      end
      local p = c.p
      if p[0] == 0xffffffff then p[0], p[1] = 0, p[1] + 1 else p[0] = p[0] + 1 end
    end
  end
  return self.output
end

--- Checks that s is a shape of `dims` integers >= 0 (an input shape given
-- to output_shape / flops): raises "<module>: method: ..." otherwise.
function Module:check_shape(method, s, dims)
  local ok = type(s) == "table" and #s == dims
  if ok then
    for i = 1, dims do
      local v = s[i]
      if type(v) ~= "number" or v ~= math.floor(v) or v < 0 or v > 2 ^ 53 then ok = false end
    end
  end
  if not ok then
    self:fail(("%s: want an input shape of %d integers >= 0 (N x C x H x W), got %s"):format(method, dims,
      type(s) == "table" and ("{" .. table.concat((function()
        local t = {}
        for i = 1, math.min(#s, 8) do t[i] = valid.describe(s[i]) end
        return t
      end)(), ", ") .. "}") or valid.describe(s)))
  end
end

--- The checks every backward makes first (classes that define their own
-- backward call it): a live module, x and grad_out live tensors; returns x
-- and grad_out, each as a contiguous copy when it is a view that is not
-- (for a leaf module: as forward, the same buffer for x).
function Module:check_backward(x, grad_out)
  self:check_alive("backward")
  check_input(self, "backward", x, "the input")
  check_input(self, "backward", grad_out, "grad_out")
  return contiguous(self, "contiguous_input", x), contiguous(self, "contiguous_grad_out", grad_out)
end

function Module:backward(x, grad_out)
  x, grad_out = self:check_backward(x, grad_out)
  if not self.any_dtype and not self.native_half and HALF[x:dtype()] then
    return self:half_backward(x, grad_out, backward32)
  end
  return backward32(self, x, grad_out)
end

function Module:update_output(x) core.raise(self.__name .. ": update_output is not implemented", 2) end
function Module:update_grad_input(x, grad_out) core.raise(self.__name .. ": update_grad_input is not implemented", 2) end
function Module:acc_grad_parameters() end

--- Children (containers override).
function Module:children() return self.modules or {} end

--- The name of child i: the one it was given, or its 1-based position.
function Module:child_name(i)
  local n = self.names and self.names[i]
  if n == nil then return tostring(i) end
  return n
end

-- the prefix of child i's entries ("" names a transparent child)
local function child_prefix(self, prefix, i)
  local n = self:child_name(i)
  if n == "" then return prefix end
  return prefix .. n .. "."
end

--- Names the children in order (a string each; "" for a transparent child);
-- returns self. Names must be unique among the children.
function Module:name_children(list)
  if type(list) ~= "table" then core.raise(("%s:name_children: want a list of strings, got %s"):format(self.__name,
    valid.describe(list)), 2) end
  local kids, seen = self:children(), {}
  if #list > #kids then
    core.raise(("%s:name_children: %d names for %d children"):format(self.__name, #list, #kids), 2)
  end
  for i, n in ipairs(list) do
    if type(n) ~= "string" or n:find("%.") then
      core.raise(("%s:name_children: name %d must be a string without '.', got %s"):format(self.__name, i,
        valid.describe(n)), 2)
    end
    if n ~= "" and seen[n] then core.raise(("%s:name_children: the name %q is given twice"):format(self.__name, n), 2) end
    seen[n] = true
  end
  self.names = {}
  for i, n in ipairs(list) do self.names[i] = n end
  return self
end

-- the state name of field `name` of module m
local function key_of(m, name) return m._keys and m._keys[name] or name end

--- Named parameters of the whole tree: { { name = "3.weight", param, grad, kind, module } ... }.
-- This is the one parameter interface optimizers read; heads (facet.heads)
-- implement it too, and an entry may add the deferred-gradient fields
-- (row_coef, row_norms, on_update, grad_sumsq) described in facet.optim.optimizer.
function Module:named_parameters(prefix, out)
  if prefix ~= nil and type(prefix) ~= "string" then
    self:fail("named_parameters: prefix must be a string, got " .. valid.describe(prefix))
  end
  if out ~= nil and type(out) ~= "table" then
    self:fail("named_parameters: out must be a table, got " .. valid.describe(out))
  end
  out = out or {}
  prefix = prefix or ""
  for _, p in ipairs(self._params) do
    out[#out + 1] = { name = prefix .. key_of(self, p.name), param = self[p.name], grad = self["grad_" .. p.name],
      kind = p.kind, module = self }
  end
  for i, m in ipairs(self:children()) do m:named_parameters(child_prefix(self, prefix, i), out) end
  return out
end

function Module:parameters()
  local params, grads = {}, {}
  for _, p in ipairs(self:named_parameters()) do
    params[#params + 1], grads[#grads + 1] = p.param, p.grad
  end
  return params, grads
end

function Module:zero_grad()
  for _, p in ipairs(self:named_parameters()) do p.grad:zero_() end
end

function Module:train(on)
  self.training = on ~= false
  for _, m in ipairs(self:children()) do m:train(on) end
  return self
end

function Module:evaluate() return self:train(false) end

function Module:clear_state()
  self.buffers, self.output, self.grad_input, self._views = {}, nil, nil, nil
  for _, m in ipairs(self:children()) do m:clear_state() end
  return self
end

function Module:to(device)
  for _, p in ipairs(self._params) do
    self[p.name] = self[p.name]:to(device)
    self["grad_" .. p.name] = self["grad_" .. p.name]:to(device)
  end
  for _, k in ipairs(self._state or {}) do self[k] = self[k]:to(device) end
  self.device = device
  self.buffers, self.output, self.grad_input, self._views = {}, nil, nil, nil
  for _, m in ipairs(self:children()) do m:to(device) end
  return self
end
function Module:cuda() return self:to("cuda") end
function Module:float() return self:to("cpu") end

--- Buffers that belong to the model but are not trained (BatchNorm's running
-- statistics): names listed in self._state, moved and saved with the parameters.
function Module:state_tensors(prefix, out)
  out = out or {}
  prefix = prefix or ""
  for _, k in ipairs(self._state or {}) do out[prefix .. key_of(self, k)] = self[k] end
  for _, k in ipairs(self._counters or {}) do out[prefix .. key_of(self, k)] = self[k] end
  for i, m in ipairs(self:children()) do m:state_tensors(child_prefix(self, prefix, i), out) end
  return out
end

--- name -> tensor of every parameter and state buffer (what checkpoints save).
function Module:state_dict()
  local d = self:state_tensors()
  for _, p in ipairs(self:named_parameters()) do d[p.name] = p.param end
  return d
end

--- The leaf modules that hold parameters, state or counters, in the order
-- of the tree (pre-order), each as { module =, prefix = } (prefix ends in "."
-- unless empty).
function Module:state_modules(prefix, out)
  out = out or {}
  prefix = prefix or ""
  if #self._params > 0 or #(self._state or {}) > 0 or #(self._counters or {}) > 0 then
    out[#out + 1] = { module = self, prefix = prefix }
  end
  for i, m in ipairs(self:children()) do m:state_modules(child_prefix(self, prefix, i), out) end
  return out
end

-- a path of positions ("4.1.2") as a list of numbers, or nil
local function positions(prefix)
  local list = {}
  for part in (prefix .. "."):gmatch("([^.]*)%.") do
    local n = tonumber(part)
    if not n or part ~= tostring(n) then return nil end
    list[#list + 1] = n
  end
  return list
end

-- Old facet checkpoints named everything by position ("4.1.2.running_mean"),
-- PReLU's slope "slope", and had no counters. Their modules come in the same
-- order as the model's: the i-th module of the checkpoint (by its path of
-- positions, which orders the tree) is the model's i-th module that holds
-- state. Returns the dict under the model's names, or nil if dict is not one.
local function from_positional(self, dict)
  local groups, order = {}, {}
  for name in pairs(dict) do
    if type(name) ~= "string" then return nil end
    local prefix, field = name:match("^(.-)%.?([^.]+)$")
    local path = positions(prefix)
    if not path or prefix == "" then return nil end
    if not groups[prefix] then
      groups[prefix] = { path = path, fields = {} }
      order[#order + 1] = prefix
    end
    groups[prefix].fields[field] = dict[name]
  end
  table.sort(order, function(a, b)
    local x, y = groups[a].path, groups[b].path
    for i = 1, math.min(#x, #y) do if x[i] ~= y[i] then return x[i] < y[i] end end
    return #x < #y
  end)
  local mods = self:state_modules()
  if #mods ~= #order then return nil end
  local out = {}
  for i, e in ipairs(mods) do
    local m, fields = e.module, groups[order[i]].fields
    local own = {}
    for _, p in ipairs(m._params) do own[#own + 1] = p.name end
    for _, k in ipairs(m._state or {}) do own[#own + 1] = k end
    for _, k in ipairs(own) do out[e.prefix .. key_of(m, k)] = fields[k] end
    for _, k in ipairs(m._counters or {}) do out[e.prefix .. key_of(m, k)] = m[k] end
    local n = 0
    for _ in pairs(fields) do n = n + 1 end
    if n ~= #own then return nil end
  end
  return out
end

-- nil, or what is wrong with dict as a state_dict of this model
local check_names
local function state_problem(self, dict)
  if type(dict) ~= "table" then return "load_state: want a table of tensors" end
  local mine = self:state_dict()
  local bad = check_names(self, dict, mine)
  if bad then
    local mapped = from_positional(self, dict)
    if mapped and not check_names(self, mapped, mine) then return nil, mine, mapped end
  end
  return bad, mine, dict
end

-- the names of the tree's counters
local function counter_names(self)
  local set = {}
  for _, e in ipairs(self:state_modules()) do
    for _, k in ipairs(e.module._counters or {}) do set[e.prefix .. key_of(e.module, k)] = true end
  end
  return set
end

-- nil, or the first difference between dict and the model's state mine; a
-- counter the checkpoint lacks keeps the model's value (as PyTorch does)
function check_names(self, dict, mine)
  local names, counters = {}, counter_names(self)
  for name in pairs(mine) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local t, src = mine[name], dict[name]
    if not tensor.is_tensor(t) or t:is_freed() then return ("load_state: the model's %s was freed"):format(name) end
    if src == nil and counters[name] then src = t end
    if src == nil then return ("load_state: %s is missing from the checkpoint"):format(name) end
    if not tensor.is_tensor(src) then return ("load_state: %s is a %s in the checkpoint, not a tensor"):format(name, type(src)) end
    if src:is_freed() then return ("load_state: %s of the checkpoint was freed"):format(name) end
    local a, b = t:shape(), src:shape()
    if table.concat(a, "x") ~= table.concat(b, "x") then
      return ("load_state: %s has shape %s in the model, %s in the checkpoint"):format(name, table.concat(a, "x"),
        table.concat(b, "x"))
    end
    if t:dtype() ~= src:dtype() then
      return ("load_state: %s is %s in the model, %s in the checkpoint"):format(name, t:dtype(), src:dtype())
    end
  end
  for name in pairs(dict) do
    if mine[name] == nil then return ("load_state: the checkpoint has %s, which the model does not"):format(tostring(name)) end
  end
  return nil
end

--- Checks a state_dict against the model without changing anything: every
-- name in both directions, each a live tensor of the same shape and dtype.
function Module:check_state(dict)
  local bad = state_problem(self, dict)
  if bad then core.raise(bad, 2) end
end

--- Copies a state_dict (e.g. from facet.load_safetensors) into the model;
-- every name must match in both directions, with the same shape and dtype
-- (counters such as num_batches_tracked may be missing: they keep their value).
-- All or nothing: everything is checked before the first copy.
-- An older facet checkpoint with positional names is mapped to the model's
-- names (a note on stderr says so). A path (.pth, .safetensors, a checkpoint
-- directory) is read with facet.load first.
function Module:load_state(dict)
  if type(dict) == "string" then dict = require("facet.pth").load_any(dict, "load_state") end
  local bad, mine, src = state_problem(self, dict)
  if bad then core.raise(bad, 2) end
  if src ~= dict then
    io.stderr:write("facet: load_state: the checkpoint names its tensors by position (an older facet); mapped to ",
      "the model's names\n")
  end
  for name, t in pairs(mine) do
    if src[name] ~= nil and not rawequal(t, src[name]) then t:copy(src[name]) end
  end
  return self
end

--- The random stream { seed, offset } the tree's randomized modules (Dropout,
-- whose `rng` it is) draw from: from this call on one table shared by all of
-- them (the first one found, so its position goes on), or nil when no module
-- below draws random numbers. Save its offset to resume a run exactly.
function Module:random_stream()
  local stream
  local function visit(m)
    local own = rawget(m, "rng")
    if own then
      stream = stream or own
      m.rng = stream
    end
    for _, c in ipairs(m:children()) do visit(c) end
  end
  visit(self)
  return stream
end

--- The first module data reaches (descending into Sequentials): the one whose
-- input gradient nobody needs when the model's input is data.
function Module:first_leaf()
  local m = self
  while m.__name == "Sequential" and m.modules[1] do m = m.modules[1] end
  return m
end

--- Number of parameter elements in the tree.
function Module:count_parameters()
  local n = 0
  for _, p in ipairs(self:named_parameters()) do n = n + p.param:numel() end
  return n
end

--- One-line description (subclasses override).
function Module:describe() return self.__name end

function Module:__tostring()
  local lines = {}
  local function walk(m, indent, label)
    local own = 0
    for _, p in ipairs(m._params) do own = own + m[p.name]:numel() end
    local line = indent .. (label and ("(" .. label .. ") ") or "") .. m:describe()
    if own > 0 then line = line .. ("  [%d params]"):format(own) end
    lines[#lines + 1] = line
    for i, c in ipairs(m:children()) do walk(c, indent .. "  ", m:child_name(i)) end
  end
  walk(self, "", nil)
  if #self:children() > 0 then lines[#lines + 1] = ("total: %d parameters"):format(self:count_parameters()) end
  return table.concat(lines, "\n")
end

--- Runs fn(...) and re-raises an error prefixed with where it happened.
function Module.in_child(container, i, child, fn, ...)
  local ok, a = pcall(fn, ...)
  if not ok then
    error(("In %s (%d) %s: %s"):format(container.__name, i, child:describe(), tostring(a):gsub("^[^:]*:%d+: ", "")), 0)
  end
  return a
end

return Module
