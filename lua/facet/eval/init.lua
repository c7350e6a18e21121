--- facet.eval: evaluation protocols.
--   facet.eval.embed(model, images [, { batch_size = 256, flip = false }])
--   facet.eval.verify(emb1, emb2, issame [, { protocol = "insightface" | "facexzoo", folds = 10 }])
--   facet.eval.verify_set(model, set [, { flip = true, device, protocol, folds }])  -- a load_bin set
--   facet.eval.identify(probe, probe_labels, gallery, gallery_labels [, { max_rank = 10, block, positives,
--                       positive_labels, exclude_self, open_set, fpirs }])
--   facet.eval.verify_scores(scores, same [, { fars, folds, protocol, roc_points }])
--   facet.eval.verify_pairs(emb, i, j, same [, opts])        pairs from index lists
--   facet.eval.verify_all(emb, labels [, { fars, block, distractors, roc_points }])  every pair, streamed
--   facet.eval.ijb.evaluate(dir, features [, opts])           IJB-B/C 1:1 templates (facet/eval/ijb.lua)
--   facet.eval.features(model, paths [, { size, batch_size, flip, device }])  raw features of image files
-- Every option is checked (facet.check): an unknown name, a count that is not
-- an integer >= 1, NaN or an unknown protocol is an error naming the function
-- and the option (docs/eval.md).
local M = {}

M.verify = require "facet.eval.verify"
M.embed = require "facet.eval.embed"
M.identify = require "facet.eval.identify"
M.verify_set = require "facet.eval.verify_set"
local roc = require "facet.eval.roc"
M.verify_scores = roc.verify_scores
M.verify_pairs = roc.verify_pairs
M.verify_all = roc.verify_all
M.ijb = require "facet.eval.ijb"
M.features = require "facet.eval.features"

return M
