--- facet.data: data sources and face-data formats: in-memory tensors, IDX
-- (MNIST/Fashion-MNIST), InsightFace RecordIO (.rec/.idx) and verification
-- .bin files, and JPEG/PNG decoding. A training source follows:
--   src:num_batches()                 batches per epoch
--   src:batch(epoch, i) -> x, y       batch i (1-based) of epoch e (0-based), deterministic
-- facet.data.to_device(src, device) puts a source's batches on a device.
local M = {}

M.tensors = require "facet.data.tensors"
M.load_idx = require("facet.data.idx").load_idx
M.fashion_mnist = require("facet.data.idx").fashion_mnist
M.recordio, M.recordio_writer = require("facet.data.recordio").open, require("facet.data.recordio").writer
M.load_bin = require("facet.data.binfile").load
M.loader = require "facet.data.loader"
M.scan_folder = require("facet.data.folder").scan_folder
M.read_list = require("facet.data.folder").read_list
M.read_lst = require("facet.data.folder").read_lst
M.incomplete_image = require("facet.data.folder").incomplete
M.pack = require("facet.data.folder").pack
M.unpack = require("facet.data.folder").unpack
M.image_info = require("facet.data.image").image_info
M.decode_image = require("facet.data.image").decode_image
M.encode_png = require("facet.data.image").encode_png
M.synthetic = require("facet.data.synthetic").generate
M.render_synthetic = require("facet.data.synthetic").render
M.to_device = require("facet.data.device").to_device

return M
