--- facet.data: data sources for training. Issue-level pipelines (RecordIO,
-- .bin, image folders, threaded JPEG decoding) come later; this module has the
-- in-memory source and the interface every source follows:
--   src:num_batches()                 batches per epoch
--   src:batch(epoch, i) -> x, y       batch i (1-based) of epoch e (0-based), deterministic
local M = {}

M.tensors = require "facet.data.tensors"
M.load_idx = require("facet.data.idx").load_idx
M.fashion_mnist = require("facet.data.idx").fashion_mnist

return M
