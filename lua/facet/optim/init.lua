--- facet.optim: optimizers with fused C/CUDA updates, learning-rate schedules
-- and gradient clipping.
--   local opt = facet.optim.sgd({ model, head }, { lr = 0.1, momentum = 0.9, weight_decay = 5e-4,
--                                                 decay_bias_norm = false })
--   opt:zero_grad(); ...forward/backward...; opt:step()
--   opt.lr = schedule(epoch)
--   opt:clip_grad_norm(max_norm) / opt:grad_norm()   (deferred gradients included)
-- Sources are modules (facet.nn), heads (facet.heads) -- anything with
-- named_parameters(), see facet.optim.optimizer -- or { params = {...}, grads = {...} }.
local M = {}

M.Optimizer = require "facet.optim.optimizer"
M.sgd = require "facet.optim.sgd"
M.adam = require("facet.optim.adam").adam
M.adamw = require("facet.optim.adam").adamw
M.schedule = require "facet.optim.schedule"
M.clip_grad_norm = M.Optimizer.clip_grad_norm_of   -- (grads, max_norm): a list of tensors
M.grad_norm = M.Optimizer.grad_norm_of              -- (grads)

return M
