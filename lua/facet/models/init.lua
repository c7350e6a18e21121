--- facet.models: face-recognition backbones built from facet.nn.
--   facet.models.iresnet{ depth = 50, se = false, emb = 512, size = 112 }
--   facet.models.mobilefacenet{ emb = 512, size = 112 }
--   facet.models.convnet{ in_channels = 1, size = 28, emb = 128 }
-- Parameter counts are checked in spec/models_spec.lua and listed in docs/models.md.
local M = {}

M.iresnet = require "facet.models.iresnet"
M.mobilefacenet = require "facet.models.mobilefacenet"
M.convnet = require "facet.models.convnet"
M.attentionnet_irse = require "facet.models.attentionnet"

return M
