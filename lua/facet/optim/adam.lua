--- facet.optim.adam / adamw(sources, settings): Adam (L2 weight decay added to
-- the gradient) and AdamW (decoupled decay), PyTorch's semantics, one fused
-- pass per parameter (facet_adam_step).
-- settings: lr (1e-3), betas ({0.9, 0.999}), eps (1e-8), weight_decay (0;
-- AdamW 1e-2), decay_bias_norm (true).
-- A parameter that defers part of its gradient (a fused head) gets it applied
-- first: Adam's update is not linear in the gradient, so the pass needs the
-- complete one; the head then measures W again in its next forward.
local core = require "facet.core"
local tensor = require "facet.tensor"
local Optimizer = require "facet.optim.optimizer"

local C, check = core.C, core.check
local M = {}

local function class(name, decoupled, wd)
  local cls = setmetatable({ name = name }, { __index = Optimizer })
  cls.__index = cls
  cls.defaults = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = wd, decay_bias_norm = true }
  cls.state_keys = { "exp_avg", "exp_avg_sq" }
  function cls:step()
    self.step_count = self.step_count + 1
    for _, p in ipairs(self.list) do
      Optimizer.complete(p)
      if not p.exp_avg then
        p.exp_avg = tensor.zeros(p.param:shape(), { device = p.param:device() })
        p.exp_avg_sq = tensor.zeros(p.param:shape(), { device = p.param:device() })
      end
      check(C.facet_adam_step(p.param.h, p.grad.h, p.exp_avg.h, p.exp_avg_sq.h, self.lr, self.betas[1], self.betas[2],
        self.eps, self:decay_of(p), self.step_count, decoupled and C.FACET_ADAM_FLAG_DECOUPLED or 0))
      Optimizer.updated(p, false)
    end
  end
  return function(sources, cfg) return Optimizer.new(cls, sources, cfg, cls.defaults) end
end

M.adam = class("adam", false, 0)
M.adamw = class("adamw", true, 1e-2)

return M
