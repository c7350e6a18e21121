--- facet.data.folder: image folders and list files, and packing them into
-- InsightFace's RecordIO layout.
--   facet.data.scan_folder(root) -> { paths = {...}, labels = {...}, identities = {names...} }
--     root/<identity>/<image>.jpg|jpeg|png (CASIA-WebFace style); identities
--     sorted by name get labels 0, 1, ...; images sorted within each.
--   facet.data.read_list(path) -> same, from "path label" lines (relative paths
--     are taken from the list file's directory).
--   facet.data.pack(root_or_list, prefix) writes prefix.rec/.idx: record 0 with
--     labels [N + 1, N + 1 + identities], images as keys 1..N, then one record
--     per identity with its [first, last + 1] key range (contiguous labels).
--     All or nothing: the files are written as prefix.rec.tmp/.idx.tmp, fsync'ed
--     and renamed over prefix.rec/.idx only once every image was read, so a
--     failed pack (a missing or unreadable input) leaves an existing
--     prefix.rec/.idx as they were, byte for byte, and no .tmp behind.
--   facet.data.unpack(prefix, root) writes root/<label>/<index>.jpg|png.
local lfs = require "lfs"
local sys = require "facet.sys"
local valid = require "facet.check"

local M = {}

local IMAGE = { jpg = true, jpeg = true, png = true }

local function read_all(path)
  local f, err = io.open(path, "rb")
  if not f then error(("cannot read %s: %s"):format(path, tostring(err)), 3) end
  local s = f:read("*a")
  f:close()
  return s
end

function M.scan_folder(root)
  valid.string("facet.data.scan_folder", "root", root)
  if lfs.attributes(root, "mode") ~= "directory" then error(("scan_folder: %s is not a directory"):format(tostring(root)), 2) end
  local ids = {}
  for name in lfs.dir(root) do
    if name ~= "." and name ~= ".." and lfs.attributes(root .. "/" .. name, "mode") == "directory" then
      ids[#ids + 1] = name
    end
  end
  table.sort(ids)
  local paths, labels = {}, {}
  for label, id in ipairs(ids) do
    local files = {}
    for name in lfs.dir(root .. "/" .. id) do
      local ext = name:match("%.(%w+)$")
      if ext and IMAGE[ext:lower()] then files[#files + 1] = name end
    end
    table.sort(files)
    for _, f in ipairs(files) do
      paths[#paths + 1] = root .. "/" .. id .. "/" .. f
      labels[#labels + 1] = label - 1
    end
  end
  if #paths == 0 then error(("scan_folder: no images under %s/<identity>/"):format(root), 2) end
  return { paths = paths, labels = labels, identities = ids }
end

function M.read_list(path)
  valid.string("facet.data.read_list", "path", path)
  local f, err = io.open(path)
  if not f then error(("read_list: cannot open %s: %s"):format(path, tostring(err)), 2) end
  local dir = path:match("^(.*)/[^/]*$") or "."
  local paths, labels, n = {}, {}, 0
  for line in f:lines() do
    n = n + 1
    if line:match("%S") then
      local p, l = line:match("^%s*(%S+)%s+(%d+)%s*$")
      if not p then
        f:close()
        error(("read_list: %s:%d: want 'path label', got %q"):format(path, n, line), 2)
      end
      paths[#paths + 1] = p:sub(1, 1) == "/" and p or (dir .. "/" .. p)
      labels[#labels + 1] = tonumber(l)
    end
  end
  f:close()
  if #paths == 0 then error(("read_list: %s lists no images"):format(path), 2) end
  return { paths = paths, labels = labels }
end

function M.pack(src, prefix)
  valid.string("facet.data.pack", "src (a folder or a list file)", src)
  valid.string("facet.data.pack", "prefix", prefix)
  local list = lfs.attributes(src, "mode") == "directory" and M.scan_folder(src) or M.read_list(src)
  -- InsightFace's identity ranges need each label's images together, in label order
  local order = {}
  for i = 1, #list.paths do order[i] = i end
  table.sort(order, function(a, b)
    if list.labels[a] ~= list.labels[b] then return list.labels[a] < list.labels[b] end
    return a < b
  end)
  local n, ids, ranges = #order, {}, {}
  for k, i in ipairs(order) do
    local l = list.labels[i]
    if not ranges[l] then ranges[l] = { k, k }; ids[#ids + 1] = l else ranges[l][2] = k end
  end
  for j = 2, #ids do
    if ids[j] ~= ids[j - 1] + 1 or ids[1] ~= 0 then
      error("pack: labels must be 0, 1, 2 ... without gaps for InsightFace's identity records", 2)
    end
  end
  local recordio = require "facet.data.recordio"
  local rec, idx = recordio.paths(prefix, "pack")
  for _, p in ipairs { rec, idx } do
    if lfs.attributes(p, "mode") == "directory" then error(("pack: %s is a directory"):format(p), 2) end
  end
  local tmp_rec, tmp_idx = rec .. ".tmp", idx .. ".tmp"
  local w
  local ok, err = pcall(function()
    w = recordio.writer { rec = tmp_rec, idx = tmp_idx }
    w:write(0, { n + 1, n + 1 + #ids }, "")
    for k, i in ipairs(order) do w:write(k, list.labels[i], read_all(list.paths[i])) end
    for j, l in ipairs(ids) do w:write(n + j, { ranges[l][1], ranges[l][2] + 1 }, "") end
    w:close()
    for _, p in ipairs { tmp_rec, tmp_idx } do           -- on the disk before they replace the old ones
      local f = assert(io.open(p, "rb"))
      local synced, why = sys.fsync(f)
      f:close()
      assert(synced, why)
    end
    assert(sys.rename(tmp_idx, idx))
    assert(sys.rename(tmp_rec, rec))
  end)
  if not ok then
    if w then pcall(w.close, w) end
    os.remove(tmp_rec)
    os.remove(tmp_idx)
    error("pack: " .. tostring(err):gsub("^[^\n]-%.lua:%d+: ", ""), 2)
  end
  sys.fsync_dir(rec:match("^(.*)/[^/]*$") or ".")
  return { images = n, identities = #ids }
end

function M.unpack(prefix, root)
  valid.string("facet.data.unpack", "prefix", prefix)
  valid.string("facet.data.unpack", "root", root)
  local rec = require("facet.data.recordio").open(prefix)
  local image = require "facet.data.image"
  lfs.mkdir(root)
  for i = 1, rec:num_images() do
    local bytes, label = rec:image_bytes(i), rec:label(i)
    local dir = ("%s/%d"):format(root, label)
    if lfs.attributes(dir, "mode") ~= "directory" then assert(lfs.mkdir(dir)) end
    local ok, info = pcall(image.image_info, bytes)
    local ext = ok and (info.format == "png" and "png" or "jpg") or "bin"
    local f = assert(io.open(("%s/%08d.%s"):format(dir, i, ext), "wb"))
    f:write(bytes)
    f:close()
  end
  return { images = rec:num_images() }
end

return M
