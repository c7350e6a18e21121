--- facet.eval: evaluation protocols.
--   facet.eval.embed(model, images [, { batch_size = 256, flip = false }])
--   facet.eval.verify(emb1, emb2, issame [, { protocol = "insightface" | "facexzoo", folds = 10 }])
local M = {}

M.verify = require "facet.eval.verify"
M.embed = require "facet.eval.embed"

return M
