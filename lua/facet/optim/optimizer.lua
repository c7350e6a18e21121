--- facet.optim.optimizer: what every optimizer shares: collecting parameter
-- entries from modules, heads and plain lists; zero_grad; completing deferred
-- gradients; the global gradient norm and clipping; the state saved in
-- checkpoints.
--
-- Modules (facet.nn) and heads (facet.heads) present one interface,
-- named_parameters(), a list of entries
--   { name, param, grad, kind = "weight" | "bias" | "norm", module }
-- and an entry may defer part of its gradient (a fused cosine head's weight):
--   row_coef     the complete gradient is grad + row_coef_r * param_r (row r of
--                param); whoever applies the correction zeroes row_coef
--   row_norms    an update may write ||param_r|| of the updated param here
--   on_update(norms_written)  called after every update of param, with true
--                when row_norms holds the new norms
--   grad_sumsq() (optional) ||complete gradient||^2 without completing it
-- The optimizer reads nothing else of its sources.
local core = require "facet.core"
local tensor = require "facet.tensor"

local C, check = core.C, core.check
local Optimizer = {}
Optimizer.__index = Optimizer

local function collect(sources)
  if type(sources) ~= "table" then error("optimizer: want a module, a head, or a list of them", 3) end
  if sources.named_parameters or sources.params then sources = { sources } end
  local list = {}
  for _, src in ipairs(sources) do
    if type(src) == "table" and src.named_parameters then
      for _, e in ipairs(src:named_parameters()) do
        list[#list + 1] = { name = e.name, param = e.param, grad = e.grad, kind = e.kind or "weight",
          row_coef = e.row_coef, row_norms = e.row_norms, on_update = e.on_update, grad_sumsq = e.grad_sumsq }
      end
    elseif type(src) == "table" and src.params and src.grads then
      for i, p in ipairs(src.params) do list[#list + 1] = { param = p, grad = src.grads[i], kind = src.kind or "weight" } end
    else
      error("optimizer: a source is neither a module, a head nor { params, grads }", 3)
    end
  end
  if #list == 0 then error("optimizer: no parameters", 3) end
  for i, p in ipairs(list) do
    if not tensor.is_tensor(p.param) or not tensor.is_tensor(p.grad) then error(("optimizer: parameter %d is not a tensor"):format(i), 3) end
    if p.row_coef ~= nil and not tensor.is_tensor(p.row_coef) then error(("optimizer: row_coef of parameter %d is not a tensor"):format(i), 3) end
    if p.row_norms ~= nil and not tensor.is_tensor(p.row_norms) then error(("optimizer: row_norms of parameter %d is not a tensor"):format(i), 3) end
  end
  return list
end

function Optimizer.new(cls, sources, cfg, defaults)
  cfg = cfg or {}
  if type(cfg) ~= "table" then error("optimizer: the second argument is a table of settings", 3) end
  local self = setmetatable({}, cls)
  for k, v in pairs(defaults) do self[k] = v end
  for k, v in pairs(cfg) do
    if defaults[k] == nil then
      local names = {}
      for d in pairs(defaults) do names[#names + 1] = d end
      table.sort(names)
      error(("%s: unknown setting '%s' (%s)"):format(cls.name, tostring(k), table.concat(names, ", ")), 3)
    end
    self[k] = v
  end
  if type(self.lr) ~= "number" or self.lr < 0 then error(cls.name .. ": lr must be a number >= 0", 3) end
  self.list = collect(sources)
  self.step_count = 0
  return self
end

--- Weight decay of a parameter: none for biases and norm parameters when decay_bias_norm is false.
function Optimizer:decay_of(p)
  if p.kind ~= "weight" and not self.decay_bias_norm then return 0 end
  return self.weight_decay
end

--- Zeroes the gradients, deferred parts included.
function Optimizer:zero_grad()
  for _, p in ipairs(self.list) do
    p.grad:zero_()
    if p.row_coef then p.row_coef:zero_() end
  end
end

--- Applies the deferred part of an entry's gradient (grad_r += row_coef_r * param_r).
function Optimizer.complete(p)
  if p.row_coef then
    check(C.facet_tensor_rows_axpy(p.grad.h, p.row_coef.h, p.param.h))
    p.row_coef:zero_()
  end
end

--- Makes every gradient complete (what an update that cannot take the
-- deferred part in its own pass, such as Adam's, does first; call it before
-- reading the gradients yourself).
function Optimizer:finish_grad()
  for _, p in ipairs(self.list) do Optimizer.complete(p) end
end

--- After the update of an entry's param: tells its owner (norms_written: row_norms holds the new norms).
function Optimizer.updated(p, norms_written)
  if p.on_update then p.on_update(norms_written and true or false) end
end

local one = nil
local function sumsq(t)
  if not one or one:device() ~= t:device() then one = tensor.empty({ 1 }, { device = t:device() }) end
  check(C.facet_tensor_reduce(one.h, t.h, C.FACET_REDUCE_SUMSQ, -1, 0))
  return one:item()
end

--- The global L2 norm of a list of gradient tensors.
function Optimizer.grad_norm_of(grads)
  local total = 0
  for _, g in ipairs(grads) do total = total + sumsq(g) end
  return math.sqrt(total)
end

--- Scales a list of gradient tensors so their global norm is at most
-- max_norm; returns the norm before (NaN or inf when a gradient has one).
function Optimizer.clip_grad_norm_of(grads, max_norm)
  if type(max_norm) ~= "number" or max_norm <= 0 then error("clip_grad_norm: max_norm must be > 0", 2) end
  local n = Optimizer.grad_norm_of(grads)
  if n > max_norm then
    local scale = max_norm / (n + 1e-6)
    for _, g in ipairs(grads) do g:mul_(scale) end
  end
  return n
end

--- The global L2 norm of the complete gradients of the optimizer's parameters
-- (deferred parts included, through grad_sumsq where an entry has it, else by
-- completing the gradient).
function Optimizer:grad_norm()
  local total = 0
  for _, p in ipairs(self.list) do
    if p.row_coef and p.grad_sumsq then
      total = total + p.grad_sumsq()
    else
      Optimizer.complete(p)
      total = total + sumsq(p.grad)
    end
  end
  return math.sqrt(total)
end

--- clip_grad_norm over the optimizer's parameters: the complete gradient is
-- linear in (grad, row_coef), so both are scaled and nothing is completed.
function Optimizer:clip_grad_norm(max_norm)
  if type(max_norm) ~= "number" or max_norm <= 0 then error("clip_grad_norm: max_norm must be > 0", 2) end
  local n = self:grad_norm()
  if n > max_norm then
    local scale = max_norm / (n + 1e-6)
    for _, p in ipairs(self.list) do
      p.grad:mul_(scale)
      if p.row_coef then p.row_coef:mul_(scale) end
    end
  end
  return n
end

--- The gradient tensors, in parameter order (call finish_grad() first to read
-- them complete; grad_norm() and clip_grad_norm() need not).
function Optimizer:gradients()
  local g = {}
  for i, p in ipairs(self.list) do g[i] = p.grad end
  return g
end

--- Settings and per-parameter state, for checkpoints: tensors are named
-- "<index>.<key>" (index in parameter order, as the sources list them).
function Optimizer:state()
  local s = { name = self.name, step_count = self.step_count, settings = {}, tensors = {} }
  for k in pairs(self.defaults) do s.settings[k] = self[k] end
  for i, p in ipairs(self.list) do
    for _, key in ipairs(self.state_keys) do
      if p[key] then s.tensors[i .. "." .. key] = p[key] end
    end
  end
  return s
end

--- Restores state(); the parameters may have been loaded with it, so owners
-- of deferred entries are told their param changed (a fused head measures W again).
function Optimizer:load_state(s)
  if s.name ~= self.name then error(("load_state: a %s state into a %s optimizer"):format(tostring(s.name), self.name), 2) end
  self.step_count = s.step_count
  for k, v in pairs(s.settings) do self[k] = v end
  for i, p in ipairs(self.list) do
    for _, key in ipairs(self.state_keys) do
      local t = s.tensors[i .. "." .. key]
      if t then
        p[key] = p[key] or tensor.zeros(p.param:shape(), { device = p.param:device() })
        p[key]:copy(t)
      end
    end
    Optimizer.updated(p, false)
  end
end

return Optimizer
