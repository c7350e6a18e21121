--- facet.optim.schedule: learning rate as a function of training progress in
-- epochs (a float: 2.5 is halfway through the third epoch).
--   multistep{ lr = 0.1, milestones = {4, 8, 10}, gamma = 0.1 }   (the MV-Softmax paper)
--   cosine{ lr = 0.1, epochs = 12, min_lr = 0 }
--   poly{ lr = 0.1, epochs = 12, power = 2, min_lr = 0 }
--   warmup(schedule, { epochs = 1, start = 0 })   linear from start*lr(e) to the schedule
-- Each returns a callable table: sched(epoch) -> lr.
local M = {}

local function callable(fn, info)
  info = info or {}
  return setmetatable(info, { __call = function(_, e)
    if type(e) ~= "number" or e ~= e or e < 0 then error("schedule: progress must be a number of epochs >= 0", 2) end
    return fn(e)
  end })
end

local function need(cfg, key, name)
  if type(cfg[key]) ~= "number" then error(("%s: %s must be a number"):format(name, key), 3) end
  return cfg[key]
end

function M.multistep(cfg)
  local lr, gamma = need(cfg, "lr", "multistep"), cfg.gamma or 0.1
  local ms = cfg.milestones or {}
  for i = 2, #ms do if ms[i] <= ms[i - 1] then error("multistep: milestones must increase", 2) end end
  return callable(function(e)
    local k = 0
    for _, m in ipairs(ms) do if e >= m then k = k + 1 end end
    return lr * gamma ^ k
  end, { kind = "multistep" })
end

function M.cosine(cfg)
  local lr, epochs, min_lr = need(cfg, "lr", "cosine"), need(cfg, "epochs", "cosine"), cfg.min_lr or 0
  return callable(function(e)
    local t = math.min(e / epochs, 1)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))
  end, { kind = "cosine" })
end

function M.poly(cfg)
  local lr, epochs = need(cfg, "lr", "poly"), need(cfg, "epochs", "poly")
  local power, min_lr = cfg.power or 1, cfg.min_lr or 0
  return callable(function(e)
    local t = math.min(e / epochs, 1)
    return min_lr + (lr - min_lr) * (1 - t) ^ power
  end, { kind = "poly" })
end

function M.warmup(inner, cfg)
  if type(inner) ~= "table" and type(inner) ~= "function" then error("warmup: wrap a schedule", 2) end
  local w, start = need(cfg, "epochs", "warmup"), cfg.start or 0
  return callable(function(e)
    local target = inner(e)
    if e >= w then return target end
    return target * (start + (1 - start) * e / w)
  end, { kind = "warmup" })
end

return M
