--- facet.eval.ijb: IJB-B and IJB-C 1:1 template verification, following
-- InsightFace's evaluation (recognition/_evaluation_/ijb/ijb_11.py):
--   1. per-image features (opts.flip: the image's and its mirror's summed;
--      features of N x 2d are taken as [image | mirror], InsightFace's
--      img_feats), kept un-normalised (the norm weighs the image) unless
--      opts.normalize_images, and multiplied by the detector score when
--      opts.detector_score (default true where the 5-point file is there);
--   2. the mean within each media (a video's frames, or one still);
--   3. the sum over the media of a template, L2-normalised;
--   4. each template pair scored by a dot product, from index lists, in C;
--   5. TAR at FAR 1e-6 ... 1e-1 and the ROC (facet.eval.roc: exact).
-- The one difference: TAR at FAR is the largest TPR at an ROC point with
-- FPR <= FAR, where ijb_11.py takes the point whose FPR is nearest.
--
-- Files, as InsightFace ships them (DIR is IJBB or IJBC, holding meta/):
--   meta/<t>_face_tid_mid.txt         "image_name template_id media_id" per image
--   meta/<t>_template_pair_label.txt  "template_1 template_2 label" (1 same, 0 not)
--   meta/<t>_name_5pts_score.txt      "image_name x1 y1 ... x5 y5 detector_score" (optional)
-- with t = ijbb or ijbc. Images are numbered in face_tid_mid's line order;
-- features come in that order.
--
--   ijb.read(dir)                    -> meta = { target, n, names, templates, medias, scores,
--                                               t1, t2, label, pairs }
--   ijb.templates(feats, templates, medias [, { scores, flip, normalize_images }])
--                                    -> template features (T x d, unit rows), template ids
--   ijb.verify(tfeats, tids, t1, t2, label [, { fars, roc_points }]) -> facet.eval.roc's result
--   ijb.evaluate(dir, features [, opts]) -> the result, plus target, templates, pairs
--   ijb.identify(dir, features [, opts]) -> 1:N over the gallery files (below)
-- features: an N x d or N x 2d tensor, or the path of such a .npy.
--
-- 1:N (InsightFace's ijb_1n.py reads the same files): meta/<t>_1N_gallery_S1.csv
-- and _S2.csv (IJB-C: _G1.csv, _G2.csv) and meta/<t>_1N_probe_mixed.csv, CSV
-- with a header line whose first two columns are TEMPLATE_ID and SUBJECT_ID
-- (one row per image). Template features are made as for 1:1. ijb.identify
-- returns { closed = facet.eval.identify's result over both galleries
-- (rank-1, CMC to 10: ijb_1n.py's top1 / top5 / top10), open = { [1] =, [2] = }:
-- each gallery alone with open_set = true (probes of the other gallery's
-- subjects are non-mated), tpir_at_fpir at opts.fpirs (0.01, 0.1) }.
local ffi = require "ffi"
local tensor = require "facet.tensor"
local check = require "facet.check"
local sys = require "facet.sys"
local npy = require "facet.npy"
local roc = require "facet.eval.roc"
local C = require("facet.core").C

local M = {}
M.FARS = { 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1 }

-- a growable int64 or float32 vector filled from Lua
local function growable(dtype)
  local v = { n = 0, cap = 1024, dtype = dtype }
  v.t = tensor.empty({ v.cap }, { dtype = dtype })
  v.p = v.t:data_ptr()
  function v.push(x)
    if v.n == v.cap then
      local bigger = tensor.empty({ 2 * v.cap }, { dtype = dtype })
      bigger:narrow(1, 1, v.cap):copy(v.t)
      v.t:free()
      v.t, v.cap, v.p = bigger, 2 * v.cap, bigger:data_ptr()
    end
    v.p[v.n] = x
    v.n = v.n + 1
  end
  function v.done() return v.t:narrow(1, 1, math.max(v.n, 0)):contiguous() end
  return v
end

-- calls fn(fields, line_number) for each non-empty line of path
local function each_line(fn_name, path, fn)
  local f, err = sys.open_read(path)
  if not f then check.fail(fn_name, ("cannot read %s: %s"):format(path, tostring(err))) end
  local k = 0
  for line in f:lines() do
    k = k + 1
    if line:find("%S") then
      local fields = {}
      for w in line:gmatch("%S+") do fields[#fields + 1] = w end
      local ok, e = pcall(fn, fields, k)
      if not ok then f:close(); error(e, 0) end
    end
  end
  f:close()
end

local function integer_field(fn_name, path, k, s, what)
  local v = tonumber(s)
  if not v or v ~= math.floor(v) or v ~= v then
    check.fail(fn_name, ("%s line %d: %s %s is not an integer"):format(path, k, what, check.describe(s)))
  end
  return v
end

--- Reads an IJB-B or IJB-C meta folder (see the module's header).
function M.read(dir)
  local fn = "facet.eval.ijb.read"
  check.string(fn, "dir", dir)
  local target
  for _, t in ipairs { "ijbb", "ijbc" } do
    if sys.exists(("%s/meta/%s_face_tid_mid.txt"):format(dir, t)) then target = t end
  end
  if not target then
    check.fail(fn, ("%s/meta holds neither ijbb_face_tid_mid.txt nor ijbc_face_tid_mid.txt"):format(dir))
  end
  local meta = { target = target, names = {} }
  local path = ("%s/meta/%s_face_tid_mid.txt"):format(dir, target)
  local tids, mids = growable("int64"), growable("int64")
  each_line(fn, path, function(w, k)
    if #w ~= 3 then check.fail(fn, ("%s line %d: want 'image_name template_id media_id', got %d fields"):format(path, k, #w)) end
    meta.names[#meta.names + 1] = w[1]
    tids.push(integer_field(fn, path, k, w[2], "template_id"))
    mids.push(integer_field(fn, path, k, w[3], "media_id"))
  end)
  meta.n = #meta.names
  if meta.n == 0 then check.fail(fn, path .. " lists no image") end
  meta.templates, meta.medias = tids.done(), mids.done()
  path = ("%s/meta/%s_template_pair_label.txt"):format(dir, target)
  local t1, t2, lab = growable("int64"), growable("int64"), growable("uint8")
  each_line(fn, path, function(w, k)
    if #w ~= 3 then check.fail(fn, ("%s line %d: want 'template_1 template_2 label', got %d fields"):format(path, k, #w)) end
    t1.push(integer_field(fn, path, k, w[1], "template_1"))
    t2.push(integer_field(fn, path, k, w[2], "template_2"))
    local l = integer_field(fn, path, k, w[3], "label")
    if l ~= 0 and l ~= 1 then check.fail(fn, ("%s line %d: label must be 0 or 1, got %s"):format(path, k, w[3])) end
    lab.push(l)
  end)
  meta.pairs = t1.n
  if meta.pairs == 0 then check.fail(fn, path .. " lists no pair") end
  meta.t1, meta.t2, meta.label = t1.done(), t2.done(), lab.done()
  path = ("%s/meta/%s_name_5pts_score.txt"):format(dir, target)
  if sys.exists(path) then
    local sc, n = growable("float32"), 0
    each_line(fn, path, function(w, k)
      n = n + 1
      if #w ~= 12 then check.fail(fn, ("%s line %d: want a name, 10 landmark coordinates and a score, got %d fields"):format(path, k, #w)) end
      if w[1] ~= meta.names[n] then
        check.fail(fn, ("%s line %d names %s where the face list's image %d is %s"):format(path, k, w[1], n,
          tostring(meta.names[n])))
      end
      local s = tonumber(w[12])
      if not s or s ~= s then check.fail(fn, ("%s line %d: the detector score %s is not a number"):format(path, k, w[12])) end
      sc.push(s)
    end)
    if n ~= meta.n then check.fail(fn, ("%s lists %d images, the face list %d"):format(path, n, meta.n)) end
    meta.scores = sc.done()
  end
  return meta
end

local TEMPLATE_OPTS = { "scores", "flip", "normalize_images" }

--- Template features from per-image features (see the module's header).
function M.templates(feats, templates, medias, opts)
  local fn = "facet.eval.ijb.templates"
  opts = check.options(fn, opts, TEMPLATE_OPTS)
  check.tensor(fn, "feats", feats, { dim = 2 })
  local N, D = feats:size(1), feats:size(2)
  if N == 0 then check.fail(fn, "feats holds no image") end
  local x = feats:to("cpu"):float():contiguous()
  local flip = check.boolean(fn, "flip", opts.flip, false)
  local d = flip and D / 2 or D
  if flip and D % 2 ~= 0 then check.fail(fn, ("flip needs N x 2d features [image | mirror], got %d columns"):format(D)) end
  -- the ids as given, for the order of np.unique and the returned template ids
  local traw, mraw = roc.indices(fn, "templates", templates), roc.indices(fn, "medias", medias)
  if traw:numel() ~= N or mraw:numel() ~= N then
    check.fail(fn, ("%d images but %d template ids and %d media ids"):format(N, traw:numel(), mraw:numel()))
  end
  local sp
  if opts.scores ~= nil then
    local s = roc.floats(fn, "scores", opts.scores)
    if s:numel() ~= N then check.fail(fn, ("%d images but %d detector scores"):format(N, s:numel())) end
    sp = s:data_ptr()
  end
  local norm = check.boolean(fn, "normalize_images", opts.normalize_images, false)
  local xp, tp, mp = x:data_ptr(), traw:data_ptr(), mraw:data_ptr()
  -- image order by (template, media): InsightFace walks np.unique's sorted ids
  local order = {}
  for i = 1, N do order[i] = i - 1 end
  table.sort(order, function(a, b)
    if tp[a] ~= tp[b] then return tp[a] < tp[b] end
    if mp[a] ~= mp[b] then return mp[a] < mp[b] end
    return a < b
  end)
  local T = 0
  for k = 1, N do if k == 1 or tp[order[k]] ~= tp[order[k - 1]] then T = T + 1 end end
  local out = tensor.zeros { T, d }
  local ids = tensor.empty({ T }, { dtype = "int64" })
  local op, ip = out:data_ptr(), ids:data_ptr()
  local img, media, tmpl = ffi.new("double[?]", d), ffi.new("double[?]", d), ffi.new("double[?]", d)
  local t, k = -1, 1
  while k <= N do
    t = t + 1
    local tcur = tp[order[k]]
    ip[t] = tcur
    ffi.fill(tmpl, d * 8)
    while k <= N and tp[order[k]] == tcur do
      local mcur, count = mp[order[k]], 0
      ffi.fill(media, d * 8)
      while k <= N and tp[order[k]] == tcur and mp[order[k]] == mcur do
        local r = order[k]
        local row = xp + r * D
        local ss = 0
        for c = 0, d - 1 do
          local v = row[c]
          if flip then v = v + row[d + c] end
          img[c] = v
          ss = ss + v * v
        end
        local scale = 1
        if norm then scale = ss > 0 and 1 / math.sqrt(ss) or 0 end
        if sp then scale = scale * sp[r] end
        for c = 0, d - 1 do media[c] = media[c] + img[c] * scale end
        count = count + 1
        k = k + 1
      end
      for c = 0, d - 1 do tmpl[c] = tmpl[c] + media[c] / count end
    end
    local ss = 0
    for c = 0, d - 1 do ss = ss + tmpl[c] * tmpl[c] end
    local inv = ss > 0 and 1 / math.sqrt(ss) or 0            -- sklearn's normalize leaves a zero row at zero
    for c = 0, d - 1 do op[t * d + c] = tmpl[c] * inv end
  end
  if not rawequal(x, feats) then x:free() end
  return out, ids
end

-- row (0-based) of each template id in the ascending ids
local function rows_of(fn, ids, t, what)
  local n, ip = ids:numel(), ids:data_ptr()
  local row = {}
  for r = 0, n - 1 do row[tonumber(ip[r])] = r end
  local tv = roc.indices(fn, what, t)
  local out = tensor.empty({ tv:numel() }, { dtype = "int64" })
  local src, dst = tv:data_ptr(), out:data_ptr()
  for p = 0, tv:numel() - 1 do
    local r = row[tonumber(src[p])]
    if not r then
      check.fail(fn, ("%s[%d] = %d is a template with no image"):format(what, p + 1, tonumber(src[p])))
    end
    dst[p] = r
  end
  return out
end

--- Scores template pairs (ids t1, t2) and measures TAR at FAR.
function M.verify(tfeats, tids, t1, t2, label, opts)
  local fn = "facet.eval.ijb.verify"
  opts = check.options(fn, opts, { "fars", "roc_points" })
  check.tensor(fn, "tfeats", tfeats, { dim = 2 })
  check.tensor(fn, "tids", tids, { dim = 1 })
  local o = roc.options(fn, { fars = opts.fars or M.FARS, roc_points = opts.roc_points })
  local r1, r2 = rows_of(fn, tids, t1, "t1"), rows_of(fn, tids, t2, "t2")
  local n = r1:numel()
  if r2:numel() ~= n then check.fail(fn, ("t1 and t2 must have one length, got %d and %d"):format(n, r2:numel())) end
  if n < 2 then check.fail(fn, ("want at least 2 template pairs, got %d"):format(n)) end
  local same, n_same = roc.flags(fn, "label", label, n)
  local u = tfeats:to("cpu"):float():contiguous()
  local s = tensor.empty { n }
  roc.ccheck(fn, C.facet_eval_pair_scores(s.h, u.h, u.h, r1.h, r2.h, 0))
  local acc = roc.accumulate(fn, n_same, n - n_same, o.max_far)
  roc.ccheck(fn, C.facet_eval_roc_add(acc, s.h, same.h))
  local res = roc.result(fn, acc, o)
  roc.free(acc)
  res.scores = s
  r1:free(); r2:free()
  return res
end

-- the meta folder read and its template features from the per-image features
-- (a tensor or a .npy path), with the options evaluate and identify share
local function meta_templates(fn, dir, features, opts)
  local meta = M.read(dir)
  if type(features) == "string" then features = npy.load(features) end
  check.tensor(fn, "features", features, { dim = 2 })
  if features:size(1) ~= meta.n then
    check.fail(fn, ("features has %d rows, the face list %d images"):format(features:size(1), meta.n))
  end
  local use_score = check.boolean(fn, "detector_score", opts.detector_score, meta.scores ~= nil)
  if use_score and not meta.scores then
    check.fail(fn, ("detector_score needs meta/%s_name_5pts_score.txt"):format(meta.target))
  end
  local tf, ids = M.templates(features, meta.templates, meta.medias,
    { scores = use_score and meta.scores or nil, flip = opts.flip, normalize_images = opts.normalize_images })
  return meta, tf, ids
end

--- The whole protocol on a meta folder and per-image features.
function M.evaluate(dir, features, opts)
  local fn = "facet.eval.ijb.evaluate"
  opts = check.options(fn, opts, { "flip", "detector_score", "normalize_images", "fars", "roc_points" })
  local meta, tf, ids = meta_templates(fn, dir, features, opts)
  local res = M.verify(tf, ids, meta.t1, meta.t2, meta.label, { fars = opts.fars, roc_points = opts.roc_points })
  res.target, res.templates, res.pairs, res.images = meta.target, ids:numel(), meta.pairs, meta.n
  tf:free()
  return res
end

-- (template id -> subject id) of a 1:N CSV, in the order of first appearance
local function read_subjects(fn, path)
  local f, err = sys.open_read(path)
  if not f then check.fail(fn, ("cannot read %s: %s"):format(path, tostring(err))) end
  local ids, subject, k = {}, {}, 0
  for line in f:lines() do
    k = k + 1
    if k > 1 and line:find("%S") then
      local a, b = line:match("^%s*([^,]*),([^,]*)")
      local t, sj = tonumber(a), tonumber(b)
      if not t or not sj or t ~= math.floor(t) or sj ~= math.floor(sj) then
        f:close()
        check.fail(fn, ("%s line %d: want integer TEMPLATE_ID,SUBJECT_ID first, got %s"):format(path, k,
          check.describe(line)))
      end
      if subject[t] == nil then ids[#ids + 1] = t; subject[t] = sj
      elseif subject[t] ~= sj then
        f:close()
        check.fail(fn, ("%s line %d: template %d has subjects %d and %d"):format(path, k, t, subject[t], sj))
      end
    end
  end
  f:close()
  if #ids == 0 then check.fail(fn, path .. " lists no template") end
  table.sort(ids)
  local subjects = {}
  for i, t in ipairs(ids) do subjects[i] = subject[t] end
  return ids, subjects
end

-- the rows of the template features for a list of template ids
local function select_templates(fn, tf, tids, ids, path)
  local rows = tensor.empty({ #ids }, { dtype = "int64" })
  local rp, ip = rows:data_ptr(), tids:data_ptr()
  local row = {}
  for r = 0, tids:numel() - 1 do row[tonumber(ip[r])] = r end
  for i, t in ipairs(ids) do
    if not row[t] then check.fail(fn, ("%s names template %d, which has no image in the face list"):format(path, t)) end
    rp[i - 1] = row[t] + 1                 -- index_select counts from 1
  end
  local out = tf:index_select(rows:to("int32"))
  rows:free()
  return out
end

--- 1:N identification over the gallery and probe files (see the module's header).
function M.identify(dir, features, opts)
  local fn = "facet.eval.ijb.identify"
  opts = check.options(fn, opts, { "flip", "detector_score", "normalize_images", "fpirs", "max_rank" })
  local meta, tf, tids = meta_templates(fn, dir, features, opts)
  local g = meta.target == "ijbc" and { "G1", "G2" } or { "S1", "S2" }
  local identify = require "facet.eval.identify"
  local gal, gsub = {}, {}
  local all_f, all_s = {}, {}
  for k = 1, 2 do
    local path = ("%s/meta/%s_1N_gallery_%s.csv"):format(dir, meta.target, g[k])
    local ids, subjects = read_subjects(fn, path)
    gal[k], gsub[k] = select_templates(fn, tf, tids, ids, path), subjects
    for _, sj in ipairs(subjects) do all_s[#all_s + 1] = sj end
    all_f[k] = gal[k]
  end
  local ppath = ("%s/meta/%s_1N_probe_mixed.csv"):format(dir, meta.target)
  local pids, psub = read_subjects(fn, ppath)
  local probes = select_templates(fn, tf, tids, pids, ppath)
  local both = tensor.empty { all_f[1]:size(1) + all_f[2]:size(1), tf:size(2) }
  both:narrow(1, 1, all_f[1]:size(1)):copy(all_f[1])
  both:narrow(1, all_f[1]:size(1) + 1, all_f[2]:size(1)):copy(all_f[2])
  local max_rank = opts.max_rank or math.min(10, both:size(1))
  local res = { target = meta.target, probes = #pids, gallery = { #gsub[1], #gsub[2] } }
  res.closed = identify(probes, psub, both, all_s, { max_rank = max_rank })
  res.open = {}
  for k = 1, 2 do
    res.open[k] = identify(probes, psub, gal[k], gsub[k],
      { open_set = true, fpirs = opts.fpirs or { 1e-2, 1e-1 }, max_rank = math.min(max_rank, math.max(10, gal[k]:size(1))) })
  end
  both:free(); probes:free(); tf:free()
  return res
end

return M
