--- facet.nn: layers and containers with Torch7's module API (see Module.lua).
--   local nn = facet.nn
--   local net = nn.Sequential(nn.Linear(512, 256), nn.PReLU(256), nn.Dropout(0.1), nn.Linear(256, 10))
local nn = {}

nn.Module = require "facet.nn.Module"
nn.Sequential = require "facet.nn.Sequential"
nn.Linear = require "facet.nn.Linear"
for k, v in pairs(require "facet.nn.Activation") do nn[k] = v end
nn.Dropout = require "facet.nn.Dropout"
for k, v in pairs(require "facet.nn.Shape") do nn[k] = v end
for k, v in pairs(require "facet.nn.Containers") do nn[k] = v end
nn.Conv2d = require "facet.nn.Conv2d"
for k, v in pairs(require "facet.nn.BatchNorm") do nn[k] = v end
for k, v in pairs(require "facet.nn.Pool") do nn[k] = v end
nn.Upsample = require "facet.nn.Upsample"
nn.SE = require "facet.nn.SE"
nn.Attention = require "facet.nn.Attention"
nn.LayerNorm = require "facet.nn.LayerNorm"
nn.Softmax = require "facet.nn.Softmax"
nn.MultiheadAttention = require "facet.nn.MultiheadAttention"
nn.DropPath = require "facet.nn.DropPath"
for k, v in pairs(require "facet.nn.Tokens") do nn[k] = v end
nn.summary = require "facet.nn.summary"

-- m.forward(x) for m:forward(x) is a clear error (facet.check.methods)
do
  local methods = require("facet.check").methods
  methods(nn.Module, "facet.nn.Module", "a module")
  for name, cls in pairs(nn) do
    if type(cls) == "table" and rawget(cls, "__index") == cls then methods(cls, "facet.nn." .. name, "a module") end
  end
end

return nn
