--- facet.eval: evaluation protocols.
--   facet.eval.verify(emb1, emb2, issame [, { protocol = "insightface" | "facexzoo", folds = 10 }])
local M = {}

M.verify = require "facet.eval.verify"

return M
