--- facet.clean: `facet clean`, Sub-center ArcFace's cleaning of a training
-- set (docs/heads.md, "Sub-centres"). From a checkpoint trained with
-- sub-centres and its InsightFace RecordIO training set it
--   1. embeds every image with the checkpoint's backbone (or reads the
--      embeddings `facet embed` wrote: --embeddings EMB.npy, keys in EMB.txt),
--   2. runs facet.heads.subcenter.clean on the head's weight: each class's
--      dominant sub-centre, and the images farther than --threshold degrees
--      (75) from their class's,
--   3. writes OUT.rec / OUT.idx: the kept images, labels unchanged, every
--      identity kept (a class that lost all its images has an empty range),
--      so the same head goes on training on it; OUT_init.safetensors: the
--      checkpoint's weights with head.weight the dominant sub-centres (K x
--      dim, one centre a class), to go on training from (recipes/train.lua
--      --init);
--      OUT_dropped.txt: the dropped images (key, label, angle in degrees,
--      "undecodable", or with --embeddings "not embedded"); OUT_clean.json:
--      the counts.
-- The record files are written under temporary names, synced and renamed
-- (the index first, as facet.data.pack does), so no partly written file ever
-- has the final name; OUT may not be the training set itself.
local ffi = require "ffi"
local sys = require "facet.sys"

local M = {}
local NAME = "facet clean"

-- the command line prints "facet clean: " before the message
local function fail(msg) error(msg, 0) end

-- the head's weight and its sub-centres a class from the checkpoint (k: the
-- --subcenters flag, else what trainer.json recorded), and all its tensors
local function head_weight(facet, path, k)
  local w = require("facet.pth").load_any(path, NAME, true)    -- the head's tensors included
  local weight = w["head.weight"]
  if not weight then fail(("%s holds no head.weight (save the head with the model)"):format(path)) end
  if not k and sys.is_dir(path) then
    local info = require("facet.checkpoint").info(path)
    local spec = info and info.head
    k = type(spec) == "table" and type(spec.opts) == "table" and spec.opts.subcenters or nil
  end
  if not k then
    fail(("%s does not say how many sub-centres a class its head has: give --subcenters"):format(path))
  end
  if k < 2 then fail("the head has one centre a class: there is nothing to clean (train with subcenters = 3)") end
  return weight:float():contiguous(), k, w
end

-- the embeddings of every image of the reader: a row per decodable image,
-- and each row's 1-based image index
local function embeddings(facet, o, rec, data, model, opts)
  local keys_at = {}
  for i = 1, rec:num_images() do keys_at[tostring(rec:key(i))] = i end
  local emb, keys
  if o.embeddings then
    emb = facet.load_npy(o.embeddings)
    local kp = require("facet.embed").keys_path(o.embeddings)
    local f = io.open(kp, "rb")
    if not f then fail(("cannot open %s (the keys facet embed writes beside the .npy)"):format(kp)) end
    keys = {}
    for line in f:lines() do if line ~= "" then keys[#keys + 1] = line end end
    f:close()
  else
    local r = require("facet.embed").run(model, data, { batch_size = tonumber(o.batch_size), flip = false,
      size = opts.size, threads = o.threads and tonumber(o.threads), progress = io.stderr })
    emb, keys = r.embeddings, r.keys
  end
  if emb:dim() ~= 2 or emb:size(1) ~= #keys then
    fail(("%d embeddings (%s) but %d keys"):format(emb:dim() == 2 and emb:size(1) or 0,
      table.concat(emb:shape(), "x"), #keys))
  end
  local index = {}
  for j, key in ipairs(keys) do
    local i = keys_at[key]
    if not i then fail(("embedding %d has the key %s, which %s does not hold"):format(j, key, data)) end
    index[j] = i
  end
  return emb, index
end

-- writes the kept images (1-based image indices, in identity order) as an
-- InsightFace RecordIO set of K identities at prefix
local function write_rec(rec, kept, labels, K, prefix)
  local recordio = require "facet.data.recordio"
  local rpath, ipath = recordio.paths(prefix, NAME)
  local dir = rpath:match("^(.*)/[^/]*$")
  if dir and not sys.is_dir(dir) then
    local made, why = sys.mkdir_p(dir)
    if not made then fail(("cannot make %s: %s"):format(dir, tostring(why))) end
  end
  local n = #kept
  local first, last = {}, {}
  for pos, i in ipairs(kept) do
    local y = labels[i]
    if not first[y] then first[y] = pos end
    last[y] = pos
  end
  local tmp_rec, tmp_idx = rpath .. ".tmp", ipath .. ".tmp"
  local w = recordio.writer { rec = tmp_rec, idx = tmp_idx }
  local ok, err = pcall(function()
    w:write(0, { n + 1, n + 1 + K }, "")
    for pos, i in ipairs(kept) do w:write(pos, labels[i], rec:image_bytes(i)) end
    -- identity c: keys [first, last + 1); an emptied class an empty range where it would start
    local at = 1
    for c = 0, K - 1 do
      if first[c] then at = first[c] end
      local e = first[c] and last[c] + 1 or at
      w:write(n + 1 + c, { at, e }, "")
      at = e
    end
    w:close()
    assert(sys.sync_rename { { tmp_idx, ipath }, { tmp_rec, rpath } })
  end)
  if not ok then
    pcall(w.close, w)
    os.remove(tmp_rec)
    os.remove(tmp_idx)
    fail(("writing %s: %s"):format(rpath, tostring(err)))
  end
  return rpath, ipath
end

--- Runs the command on the parsed options o (see the header); returns the
-- summary table written to OUT_clean.json.
function M.run(facet, o)
  local k = o.subcenters and tonumber(o.subcenters)
  local weight, sc, all = head_weight(facet, o.checkpoint, k)
  local data = o.data
  if not (type(data) == "string" and data:match("%.rec$")) then
    fail(("the training set must be an InsightFace .rec (with its .idx), got %s"):format(tostring(data)))
  end
  local prefix = o.output:gsub("%.rec$", "")
  local out_real = sys.realpath(prefix .. ".rec")
  if prefix .. ".rec" == data or (out_real and out_real == sys.realpath(data)) then
    fail(("-o %s would overwrite the training set %s: write the cleaned set elsewhere"):format(o.output, data))
  end
  local rec = facet.data.recordio(data:gsub("%.rec$", ""))
  if rec:layout() ~= "insightface" then
    fail(("%s has no identity records (a plain RecordIO file): its labels cannot be the head's classes")
      :format(data))
  end
  local K = weight:size(1) / sc
  if weight:size(1) % sc ~= 0 then
    fail(("head.weight has %d rows, not a multiple of %d sub-centres"):format(weight:size(1), sc))
  end
  if rec:num_identities() ~= K then
    fail(("%s has %d identities but the head %d classes"):format(data, rec:num_identities(), K))
  end
  local model, opts
  if not o.embeddings then model, opts = require("facet.embed").load_model(facet, o) end
  local emb, index = embeddings(facet, o, rec, data, model, opts)
  local labels = {}
  for i = 1, rec:num_images() do labels[i] = rec:label(i) end
  local y = {}
  for j, i in ipairs(index) do y[j] = labels[i] end
  local r = facet.heads.subcenter.clean(weight, sc, emb, y, { threshold = tonumber(o.threshold) })
  -- the kept images in identity order, and the dropped ones
  local keep8 = ffi.cast("uint8_t *", r.keep:data_ptr())
  local angle = ffi.cast("float *", r.angle:data_ptr())
  local kept_at, row_of = {}, {}
  for j, i in ipairs(index) do
    row_of[i] = j
    if keep8[j - 1] == 1 then kept_at[i] = true end
  end
  local kept, lines, undecodable = {}, {}, 0
  local missing = o.embeddings and "not embedded" or "undecodable"
  for i = 1, rec:num_images() do
    if kept_at[i] then
      kept[#kept + 1] = i
    elseif row_of[i] then
      lines[#lines + 1] = ("%s\t%d\t%.2f"):format(tostring(rec:key(i)), labels[i], angle[row_of[i] - 1])
    else
      undecodable = undecodable + 1
      lines[#lines + 1] = ("%s\t%d\t%s"):format(tostring(rec:key(i)), labels[i], missing)
    end
  end
  table.sort(kept, function(a, b)
    if labels[a] ~= labels[b] then return labels[a] < labels[b] end
    return a < b
  end)
  local rpath = write_rec(rec, kept, labels, K, prefix)
  all["head.weight"] = facet.heads.subcenter.collapse(weight, sc, r.dominant)
  facet.save_safetensors(all, prefix .. "_init.safetensors")
  local okw, why = sys.write_atomic(prefix .. "_dropped.txt", #lines > 0 and (table.concat(lines, "\n") .. "\n") or "")
  if not okw then fail(why) end
  -- how much of each class its dominant sub-centre holds
  local cp = ffi.cast("int64_t *", r.counts:data_ptr())
  local dp = ffi.cast("int64_t *", r.dominant:data_ptr())
  local emptied, dom, all = 0, 0, 0
  local has = {}
  for _, i in ipairs(kept) do has[labels[i]] = true end
  for c = 0, K - 1 do
    if not has[c] then emptied = emptied + 1 end
    for j = 0, sc - 1 do all = all + tonumber(cp[c * sc + j]) end
    dom = dom + tonumber(cp[c * sc + dp[c]])
  end
  local summary = { images = rec:num_images(), kept = #kept, dropped = r.dropped, undecodable = undecodable,
    classes = K, subcenters = sc, emptied_classes = emptied, threshold = r.threshold,
    dominant_share = all > 0 and dom / all or 0 }
  okw, why = sys.write_atomic(prefix .. "_clean.json", require("facet.json").encode(summary) .. "\n")
  if not okw then fail(why) end
  rec:close()
  io.stdout:write(("%s: kept %d of %d images (%d farther than %g degrees from their class's dominant sub-centre, " ..
    "%d undecodable); %d of %d classes emptied; %.1f%% of the images were nearest to their class's dominant " ..
    "sub-centre; weights to go on from in %s\n"):format(rpath, #kept, summary.images, r.dropped, r.threshold, undecodable,
    emptied, K, 100 * summary.dominant_share, prefix .. "_init.safetensors"))
  return summary
end

return M
