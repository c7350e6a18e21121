--- facet.optim.schedule: learning rate as a function of training progress in
-- epochs (a float: 2.5 is halfway through the third epoch).
--   multistep{ lr = 0.1, milestones = {4, 8, 10}, gamma = 0.1 }   (the MV-Softmax paper)
--   cosine{ lr = 0.1, epochs = 12, min_lr = 0 }
--   poly{ lr = 0.1, epochs = 12, power = 2, min_lr = 0 }
--   warmup(schedule, { epochs = 1, start = 0 })   linear from start*lr(e) to the schedule
-- Each returns a callable table: sched(epoch) -> lr.
-- Settings are checked when the schedule is made: lr, min_lr >= 0, epochs > 0,
-- gamma and power >= 0, start in [0, 1], milestones strictly increasing and
-- >= 0, every number finite; an unknown setting is an error. Progress must be a
-- finite number >= 0.
local check = require "facet.check"

local M = {}

local PROGRESS = { min = 0 }   -- the check of a call's progress, made once (called every step)

local function callable(fn, info)
  info = info or {}
  local name = "facet.optim.schedule." .. info.kind
  return setmetatable(info, { __call = function(_, e)
    check.number(name, "progress (epochs)", e, PROGRESS)
    return fn(e)
  end })
end

-- cfg checked against the names a schedule takes
local function settings(kind, cfg, names)
  local name = "facet.optim.schedule." .. kind
  if type(cfg) ~= "table" then
    check.fail(name, ("settings must be a table { %s }, got %s"):format(table.concat(names, ", "), check.describe(cfg)))
  end
  check.options(name, cfg, names)
  return name
end

function M.multistep(cfg)
  local name = settings("multistep", cfg, { "lr", "milestones", "gamma" })
  local lr = check.number(name, "lr", cfg.lr, { min = 0 })
  local gamma = check.number(name, "gamma", cfg.gamma, { min = 0, default = 0.1 })
  local ms = check.list(name, "milestones", cfg.milestones, { min = 0, increasing = true, default = {} })
  local copy = {}
  for i, m in ipairs(ms) do copy[i] = m end          -- later edits of the caller's list change nothing
  return callable(function(e)
    local k = 0
    for _, m in ipairs(copy) do if e >= m then k = k + 1 end end
    return lr * gamma ^ k
  end, { kind = "multistep" })
end

function M.cosine(cfg)
  local name = settings("cosine", cfg, { "lr", "epochs", "min_lr" })
  local lr = check.number(name, "lr", cfg.lr, { min = 0 })
  local epochs = check.number(name, "epochs", cfg.epochs, { gt = 0 })
  local min_lr = check.number(name, "min_lr", cfg.min_lr, { min = 0, default = 0 })
  return callable(function(e)
    local t = math.min(e / epochs, 1)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))
  end, { kind = "cosine" })
end

function M.poly(cfg)
  local name = settings("poly", cfg, { "lr", "epochs", "power", "min_lr" })
  local lr = check.number(name, "lr", cfg.lr, { min = 0 })
  local epochs = check.number(name, "epochs", cfg.epochs, { gt = 0 })
  local power = check.number(name, "power", cfg.power, { min = 0, default = 1 })
  local min_lr = check.number(name, "min_lr", cfg.min_lr, { min = 0, default = 0 })
  return callable(function(e)
    local t = math.min(e / epochs, 1)
    return min_lr + (lr - min_lr) * (1 - t) ^ power
  end, { kind = "poly" })
end

-- a schedule is a function or a callable table
local function is_schedule(s)
  if type(s) == "function" then return true end
  local mt = type(s) == "table" and getmetatable(s)
  return mt and type(mt.__call) == "function" or false
end

function M.warmup(inner, cfg)
  local name = "facet.optim.schedule.warmup"
  if not is_schedule(inner) then
    check.fail(name, ("the first argument must be a schedule (a function of the epoch), got %s"):format(
      check.describe(inner)))
  end
  settings("warmup", cfg, { "epochs", "start" })
  local w = check.number(name, "epochs", cfg.epochs, { gt = 0 })
  local start = check.number(name, "start", cfg.start, { min = 0, max = 1, default = 0 })
  return callable(function(e)
    local target = inner(e)
    if type(target) ~= "number" or target ~= target then
      check.fail(name, ("the wrapped schedule must return a number, got %s at epoch %s"):format(
        check.describe(target), check.describe(e)))
    end
    if e >= w then return target end
    return target * (start + (1 - start) * e / w)
  end, { kind = "warmup" })
end

return M
