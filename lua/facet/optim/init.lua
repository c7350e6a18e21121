--- facet.optim: optimizers with fused C/CUDA updates, learning-rate schedules
-- and gradient clipping.
--   local opt = facet.optim.sgd({ model, head }, { lr = 0.1, momentum = 0.9, weight_decay = 5e-4,
--                                                 decay_bias_norm = false })
--   opt:zero_grad(); ...forward/backward...; opt:step()
--   opt.lr = schedule(epoch)
-- Sources are modules (facet.nn), heads (facet.heads) or { params = {...}, grads = {...} }.
local M = {}

M.Optimizer = require "facet.optim.optimizer"
M.sgd = require "facet.optim.sgd"
M.adam = require("facet.optim.adam").adam
M.adamw = require("facet.optim.adam").adamw
M.schedule = require "facet.optim.schedule"
M.clip_grad_norm = require("facet.optim.optimizer").clip_grad_norm
M.grad_norm = require("facet.optim.optimizer").grad_norm

return M
