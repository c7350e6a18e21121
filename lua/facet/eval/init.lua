--- facet.eval: evaluation protocols.
--   facet.eval.embed(model, images [, { batch_size = 256, flip = false }])
--   facet.eval.verify(emb1, emb2, issame [, { protocol = "insightface" | "facexzoo", folds = 10 }])
--   facet.eval.verify_set(model, set [, { flip = true, device, protocol, folds }])  -- a load_bin set
--   facet.eval.identify(probe, probe_labels, gallery, gallery_labels [, { max_rank = 10, block = 65536 }])
-- Every option is checked (facet.check): an unknown name, a count that is not
-- an integer >= 1, NaN or an unknown protocol is an error naming the function
-- and the option (docs/eval.md).
local M = {}

M.verify = require "facet.eval.verify"
M.embed = require "facet.eval.embed"
M.identify = require "facet.eval.identify"
M.verify_set = require "facet.eval.verify_set"

return M
