--- facet.heads: the classification heads of face recognition, by name.
--   local head = facet.heads.new("mv-am", { classes = K, dim = 512 })
--   local loss = head:forward(x, y); local dx = head:backward()
-- The catalogue maps each name of the MV-Softmax and L2-softmax papers (and
-- CurricularFace, MV-Softmax's sibling with an adaptive t, and the
-- norm-adaptive margins of AdaFace and MagFace) to one configuration of the fused C head (margin, re-weighting, per-sample
-- reduction); the Head class in facet.heads.head runs it. See docs/heads.md.
local Head = require "facet.heads.head"
local sharded = require "facet.heads.sharded"

local M = { Head = Head, Sharded = sharded.Sharded, block = sharded.block,
  subcenter = require "facet.heads.subcenter" }      -- Sub-center ArcFace's cleaning step

-- MV-Softmax's default t, by base margin and h (paper, Table 2 discussion)
local MV_T = { am = { fixed = 0.25, adaptive = 0.2 }, arc = { fixed = 0.2, adaptive = 0.3 } }

local function cosine(margin)
  return function(o)
    local cfg = { kind = "cosine", margin = margin }
    if margin == "am" then cfg.m = o.m or 0.35
    elseif margin == "arc" then cfg.m = o.m or 0.5 end
    return cfg
  end
end

local CATALOGUE = {
  ["softmax"] = function() return { kind = "raw", margin = "none" } end,
  ["norm-softmax"] = cosine("none"),
  ["l2-softmax"] = function() return { kind = "l2", margin = "none" } end,
  ["a-softmax"] = function(o) return { kind = "cosine", margin = "a-softmax", m1 = o.m1 or 3 } end,
  ["am"] = cosine("am"),
  ["arc"] = cosine("arc"),
  ["combined"] = function(o)
    return { kind = "cosine", margin = "combined", m1 = o.m1 or 1, m2 = o.m2 or 0.2, m3 = o.m3 or 0.3 }
  end,
}
for _, base in ipairs { "softmax", "am", "arc" } do
  local margin = base == "softmax" and "none" or base
  CATALOGUE["f-" .. base] = function(o)
    local cfg = cosine(margin)(o)
    cfg.sample = "focal"
    return cfg
  end
  CATALOGUE["hm-" .. base] = function(o)
    local cfg = cosine(margin)(o)
    cfg.sample = "hard"
    return cfg
  end
end
-- MagFace (Meng et al., CVPR 2021): an arc margin growing with the feature
-- norm, and a regulariser of the norm (its ranges and weight are options)
CATALOGUE["magface"] = function() return { kind = "cosine", margin = "magface" } end
-- AdaFace (Kim et al., CVPR 2022): a per-sample margin driven by the
-- feature norm (its h and momentum are options of the head)
CATALOGUE["adaface"] = function(o) return { kind = "cosine", margin = "adaface", m = o.m or 0.4 } end
-- ElasticFace (Boutros et al., CVPR workshops 2022): arc or cosine margins
-- drawn per sample from N(m, std) each step (ElasticFace+: sorted against c_y)
CATALOGUE["elastic-arc"] = function(o) return { kind = "cosine", margin = "elastic-arc", m = o.m or 0.5 } end
CATALOGUE["elastic-cos"] = function(o) return { kind = "cosine", margin = "elastic-cos", m = o.m or 0.35 } end
-- CurricularFace (Huang et al., CVPR 2020): the arc margin on the target, and
-- a hard class's logit s c (t + c) with t the running mean of c_y
CATALOGUE["curricular"] = function(o)
  local cfg = cosine("arc")(o)
  cfg.h = "curricular"
  cfg.t = o.t or 0
  return cfg
end
for _, base in ipairs { "am", "arc" } do
  CATALOGUE["mv-" .. base] = function(o)
    local cfg = cosine(base)(o)
    local h = o.h == nil and "adaptive" or o.h
    cfg.h = h
    cfg.t = o.t or (type(h) == "string" and MV_T[base][h]) or MV_T[base].adaptive
    return cfg
  end
end

--- The names new() accepts.
--- Other names of heads of the catalogue: InsightFace's (ArcFace, CosFace)
-- and the papers' (SphereFace's A-Softmax, AM-Softmax, Arc-Softmax);
-- facet.heads.new takes them and records the catalogue's name.
M.ALIASES = { arcface = "arc", ["arc-softmax"] = "arc", cosface = "am", ["am-softmax"] = "am",
  sphereface = "a-softmax", curricularface = "curricular", ["elasticface-arc"] = "elastic-arc",
  ["elasticface-cos"] = "elastic-cos" }

function M.names()
  local r = {}
  for k in pairs(CATALOGUE) do r[#r + 1] = k end
  table.sort(r)
  return r
end

--- A head by name; opts: classes, dim (required), s, the head's own options
-- (m, m1, m2, m3, t, h, momentum, gamma, keep, alpha, learn_alpha, lambda,
-- easy_margin, margin), device, seed (weight initialisation).
-- Sharded heads and Partial FC (facet.heads.sharded, docs/heads.md):
--   shard = true   split the classes over the ranks of `group` (default:
--                  facet.dist.world() when facet.dist is there)
--   sample = r     keep every positive class and a uniform share r in (0, 1]
--                  of the others each step (with or without shard)
function M.new(name, opts)
  if type(name) ~= "string" then error("facet.heads.new: the first argument is the head's name", 2) end
  name = M.ALIASES[name] or name
  local make = CATALOGUE[name]
  if not make then
    local aliases = {}
    for k, v in pairs(M.ALIASES) do aliases[#aliases + 1] = k .. " = " .. v end
    table.sort(aliases)
    error(("facet.heads.new: unknown head '%s' (known: %s; also %s)"):format(name, table.concat(M.names(), ", "),
      table.concat(aliases, ", ")), 2)
  end
  if type(opts) ~= "table" then error("facet.heads.new: opts with classes and dim are required", 2) end
  local cfg = make(opts)
  cfg.name = name
  local ctor = Head.new
  if opts.shard ~= nil or opts.sample ~= nil or opts.group ~= nil then ctor = sharded.new end
  local ok, head = pcall(ctor, cfg, opts)
  if not ok then error(head, 2) end
  -- how it was built, for checkpoints: plain options only (a scripted h or
  -- margin is a function: recorded as scripted, to be given again)
  local rec, scripted = {}, {}
  for k, v in pairs(opts) do
    local tv = type(v)
    if tv == "number" or tv == "string" or tv == "boolean" then rec[k] = v
    elseif tv == "function" then scripted[#scripted + 1] = k end
  end
  rec.device, rec.group = nil, nil
  table.sort(scripted)
  head.spec = { name = name, opts = rec, scripted = #scripted > 0 and scripted or nil }
  return head
end

return M
