--- facet.optim.optimizer: what every optimizer shares: collecting parameters
-- (with their kind: "weight", "bias" or "norm") from modules, heads and plain
-- lists; zero_grad; the state saved in checkpoints; the global gradient norm.
local core = require "facet.core"
local tensor = require "facet.tensor"

local C, check = core.C, core.check
local Optimizer = {}
Optimizer.__index = Optimizer

local function collect(sources)
  if type(sources) ~= "table" then error("optimizer: want a module, a head, or a list of them", 3) end
  if sources.forward or sources.params then sources = { sources } end
  local list, heads = {}, {}
  for _, src in ipairs(sources) do
    if type(src) == "table" and src.named_parameters then
      for _, p in ipairs(src:named_parameters()) do list[#list + 1] = { param = p.param, grad = p.grad, kind = p.kind } end
    elseif type(src) == "table" and src.handle and src.parameters then         -- a head
      local ps, gs = src:parameters()
      for i, p in ipairs(ps) do
        local kind = p == src.weight and "weight" or "bias"
        if p == src.alpha then kind = "norm" end
        list[#list + 1] = { param = p, grad = gs[i], kind = kind }
      end
      if src.fused then heads[#heads + 1] = src end
    elseif type(src) == "table" and src.params and src.grads then
      for i, p in ipairs(src.params) do list[#list + 1] = { param = p, grad = src.grads[i], kind = src.kind or "weight" } end
    else
      error("optimizer: a source is neither a module, a head nor { params, grads }", 3)
    end
  end
  if #list == 0 then error("optimizer: no parameters", 3) end
  for i, p in ipairs(list) do
    if not tensor.is_tensor(p.param) or not tensor.is_tensor(p.grad) then error(("optimizer: parameter %d is not a tensor"):format(i), 3) end
  end
  return list, heads
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
  self.list, self.fused_heads = collect(sources)
  self.step_count = 0
  return self
end

--- Weight decay of a parameter: none for biases and norm parameters when decay_bias_norm is false.
function Optimizer:decay_of(p)
  if p.kind ~= "weight" and not self.decay_bias_norm then return 0 end
  return self.weight_decay
end

function Optimizer:zero_grad()
  for _, p in ipairs(self.list) do p.grad:zero_() end
  for _, h in ipairs(self.fused_heads) do h:zero_grad() end
end

-- fused heads keep the radial part of their gradient for their own update
function Optimizer:prepare()
  for _, h in ipairs(self.fused_heads) do h:finish_grad() end
end

--- The global L2 norm of the gradients.
local sumsq = nil
local function grad_norm(grads)
  local total = 0
  for _, g in ipairs(grads) do
    local out = tensor.empty({ 1 }, { device = g:device() })
    check(C.facet_tensor_reduce(out.h, g.h, C.FACET_REDUCE_SUMSQ, -1, 0))
    total = total + out:item()
  end
  return math.sqrt(total)
end
Optimizer.grad_norm = grad_norm
_ = sumsq

--- Scales the gradients so their global norm is at most max_norm; returns the norm before.
function Optimizer.clip_grad_norm(grads, max_norm)
  if type(max_norm) ~= "number" or max_norm <= 0 then error("clip_grad_norm: max_norm must be > 0", 2) end
  local n = grad_norm(grads)
  if n > max_norm then
    local scale = max_norm / (n + 1e-6)
    for _, g in ipairs(grads) do g:mul_(scale) end
  end
  return n
end

function Optimizer:gradients()
  local g = {}
  for i, p in ipairs(self.list) do g[i] = p.grad end
  return g
end

--- Settings and per-parameter state, for checkpoints.
function Optimizer:state()
  local s = { name = self.name, step_count = self.step_count, settings = {}, tensors = {} }
  for k in pairs(self.defaults) do s.settings[k] = self[k] end
  for i, p in ipairs(self.list) do
    for _, key in ipairs(self.state_keys) do
      if p[key] then s.tensors[i .. "." .. key] = p[key] end
    end
    s.tensors[i .. ".first"] = nil
  end
  return s
end

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
  end
end

return Optimizer
