--- facet.data.folder: image folders and list files, and packing them into
-- InsightFace's RecordIO layout.
--   facet.data.scan_folder(root) -> { paths = {...}, labels = {...}, identities = {names...} }
--     root/<identity>/<image>.jpg|jpeg|png (CASIA-WebFace style); identities
--     sorted by name get labels 0, 1, ...; images sorted within each.
--   facet.data.read_list(path) -> same, from "path label" lines (relative paths
--     are taken from the list file's directory).
--   facet.data.pack(root_or_list, prefix) writes prefix.rec/.idx: record 0 with
--     labels [N + 1, N + 1 + identities], images as keys 1..N, then one record
--     per identity with its [first, last + 1] key range (contiguous labels),
--     and prefix.lst beside them (MXNet's im2rec list: "key<TAB>label<TAB>path"
--     relative to the source), which keeps the identity names for unpack,
--     info and reports. prefix's directory is made if missing. An image that
--     is not a complete JPEG or PNG (facet.data.image_info fails: a truncated
--     file, a PNG without its IEND chunk, a JPEG's premature end) is left
--     out, counted and named in the result (skipped = { {path, why} ... }).
--     All or nothing: the files are written as prefix.rec.tmp/.idx.tmp, fsync'ed
--     and renamed over prefix.rec/.idx only once every image was read, so a
--     failed pack (a missing or unreadable input) leaves an existing
--     prefix.rec/.idx as they were, byte for byte, and no .tmp behind.
--   facet.data.unpack(prefix, root) writes root/<identity>/<file> with the
--     names of prefix.lst when there is one, else root/<label>/<key>.jpg|png.
local lfs = require "lfs"
local sys = require "facet.sys"
local valid = require "facet.check"

-- an error at the user's line, also when pack calls scan_folder/read_list
local function raise(msg) require("facet.core").raise(msg, 2) end

local M = {}

local IMAGE = { jpg = true, jpeg = true, png = true }

local function read_all(path)
  local s, err = sys.read_file(path)
  if not s then error(err, 3) end
  return s
end

function M.scan_folder(root)
  valid.string("facet.data.scan_folder", "root", root)
  if lfs.attributes(root, "mode") ~= "directory" then raise(("scan_folder: %s is not a directory"):format(tostring(root))) end
  local ids = {}
  for name in lfs.dir(root) do
    if name ~= "." and name ~= ".." and lfs.attributes(root .. "/" .. name, "mode") == "directory" then
      ids[#ids + 1] = name
    end
  end
  table.sort(ids)
  local paths, labels, empty = {}, {}, {}
  for label, id in ipairs(ids) do
    local files = {}
    for name in lfs.dir(root .. "/" .. id) do
      local ext = name:match("%.(%w+)$")
      if ext and IMAGE[ext:lower()] then files[#files + 1] = name end
    end
    table.sort(files)
    if #files == 0 then empty[#empty + 1] = root .. "/" .. id end
    for _, f in ipairs(files) do
      paths[#paths + 1] = root .. "/" .. id .. "/" .. f
      labels[#labels + 1] = label - 1
    end
  end
  if #paths == 0 then raise(("scan_folder: no images under %s/<identity>/"):format(root)) end
  if #empty > 0 then
    -- an identity without images would leave its label without a class
    raise(("scan_folder: %d identity folder(s) hold no .jpg, .jpeg or .png image: %s%s; add images or remove them")
      :format(#empty, table.concat(empty, ", ", 1, math.min(#empty, 5)), #empty > 5 and ", ..." or ""))
  end
  return { paths = paths, labels = labels, identities = ids, root = root }
end

function M.read_list(path)
  valid.string("facet.data.read_list", "path", path)
  local f, err = sys.open_read(path)
  if not f then raise(("read_list: cannot open %s: %s"):format(path, tostring(err))) end
  local dir = path:match("^(.*)/[^/]*$") or "."
  local paths, labels, n = {}, {}, 0
  for line in f:lines() do
    n = n + 1
    if line:match("%S") then
      local p, l = line:match("^%s*(%S+)%s+(%d+)%s*$")
      if not p then
        f:close()
        raise(("read_list: %s:%d: want 'path label', got %q"):format(path, n, line))
      end
      paths[#paths + 1] = p:sub(1, 1) == "/" and p or (dir .. "/" .. p)
      labels[#labels + 1] = tonumber(l)
    end
  end
  f:close()
  if #paths == 0 then raise(("read_list: %s lists no images"):format(path)) end
  return { paths = paths, labels = labels, list = path }
end

-- Why bytes are not a complete JPEG or PNG (nil when they are): the core's
-- structural check, which a truncated file fails (a PNG chunk or its IEND
-- missing, a JPEG's "premature end of data").
local function incomplete(bytes)
  local ok, err = pcall(require("facet.data.image").image_info, bytes)
  if ok then return nil end
  return (tostring(err):gsub("^.-facet_image_info: ", ""))
end
M.incomplete = incomplete

-- path as the .lst names it: relative to the folder or the list's directory
local function relative(path, base)
  if base and path:sub(1, #base + 1) == base .. "/" then return path:sub(#base + 2) end
  return path
end

-- The labels must run 0, 1, 2 ... for InsightFace's identity records: the
-- message names the source and the first label that has no image.
local function check_labels(ids, src)
  local want = 0
  for _, l in ipairs(ids) do
    if l ~= want then
      error(("pack: labels must be 0, 1, 2 ... without gaps for InsightFace's identity records; in %s label %d " ..
        "has no image%s"):format(src, want, want == 0 and " (labels start at " .. l .. ": renumber them from 0)"
        or ""), 3)
    end
    want = want + 1
  end
end

function M.pack(src, prefix)
  valid.string("facet.data.pack", "src (a folder or a list file)", src)
  valid.string("facet.data.pack", "prefix", prefix)
  local list = lfs.attributes(src, "mode") == "directory" and M.scan_folder(src) or M.read_list(src)
  local base = list.root or (src:match("^(.*)/[^/]*$") or ".")
  -- every image is read and checked before anything is written (and read
  -- again to write it: memory stays one image); incomplete ones are left out
  local kept, skipped = {}, {}
  for i = 1, #list.paths do
    local ok, bytes = pcall(read_all, list.paths[i])
    if not ok then raise("pack: " .. tostring(bytes):gsub("^[^\n]-%.lua:%d+: ", "")) end
    local why = incomplete(bytes)
    if why then skipped[#skipped + 1] = { list.paths[i], why } else kept[#kept + 1] = i end
  end
  -- InsightFace's identity ranges need each label's images together, in label order
  local order = kept
  table.sort(order, function(a, b)
    if list.labels[a] ~= list.labels[b] then return list.labels[a] < list.labels[b] end
    return a < b
  end)
  local n, ids, ranges = #order, {}, {}
  for k, i in ipairs(order) do
    local l = list.labels[i]
    if not ranges[l] then ranges[l] = { k, k }; ids[#ids + 1] = l else ranges[l][2] = k end
  end
  if n == 0 then raise(("pack: none of the %d images of %s is a complete JPEG or PNG"):format(#list.paths, src)) end
  check_labels(ids, src)
  local recordio = require "facet.data.recordio"
  local rec, idx = recordio.paths(prefix, "pack")
  local lst = rec:gsub("%.rec$", "") .. ".lst"
  for _, p in ipairs { rec, idx, lst } do
    if lfs.attributes(p, "mode") == "directory" then raise(("pack: %s is a directory"):format(p)) end
  end
  local dir = rec:match("^(.*)/[^/]*$")
  if dir and not sys.is_dir(dir) then
    local made, why = sys.mkdir_p(dir)
    if not made then raise(("pack: cannot make the output directory %s: %s"):format(dir, tostring(why))) end
  end
  local tmp_rec, tmp_idx, tmp_lst = rec .. ".tmp", idx .. ".tmp", lst .. ".tmp"
  local w
  local ok, err = pcall(function()
    w = recordio.writer { rec = tmp_rec, idx = tmp_idx }
    w:write(0, { n + 1, n + 1 + #ids }, "")
    local lines = {}
    for k, i in ipairs(order) do
      w:write(k, list.labels[i], read_all(list.paths[i]))
      lines[k] = ("%d\t%d\t%s"):format(k, list.labels[i], relative(list.paths[i], base))
    end
    for j, l in ipairs(ids) do w:write(n + j, { ranges[l][1], ranges[l][2] + 1 }, "") end
    w:close()
    local lf = assert(io.open(tmp_lst, "wb"))
    assert(lf:write(table.concat(lines, "\n"), "\n"))
    lf:close()
    -- on the disk before they replace the old ones
    assert(sys.sync_rename { { tmp_lst, lst }, { tmp_idx, idx }, { tmp_rec, rec } })
  end)
  if not ok then
    if w then pcall(w.close, w) end
    os.remove(tmp_rec)
    os.remove(tmp_idx)
    os.remove(tmp_lst)
    raise("pack: " .. tostring(err):gsub("^[^\n]-%.lua:%d+: ", ""))
  end
  sys.fsync_dir(dir or ".")
  return { images = n, identities = #ids, skipped = skipped }
end

--- The identity names and file names of a packed .rec, from the .lst that
-- pack wrote beside it: { [key] = { label =, path = } }, or nil without one.
function M.read_lst(prefix)
  local rec = require("facet.data.recordio").paths(prefix, "read_lst")
  local f = io.open(rec:gsub("%.rec$", "") .. ".lst", "r")
  if not f then return nil end
  local out = {}
  for line in f:lines() do
    local key, label, path = line:match("^(%d+)\t(%d+)\t(.+)$")
    if key then out[tonumber(key)] = { label = tonumber(label), path = path } end
  end
  f:close()
  return out
end

-- A .lst path made safe to write under root: no absolute part, no "..".
local function safe_relative(path)
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part ~= "." and part ~= ".." then parts[#parts + 1] = part end
  end
  return #parts >= 2 and table.concat(parts, "/", #parts - 1) or nil
end

function M.unpack(prefix, root)
  valid.string("facet.data.unpack", "prefix", prefix)
  valid.string("facet.data.unpack", "root", root)
  local rec = require("facet.data.recordio").open(prefix)
  local image = require "facet.data.image"
  local names = M.read_lst(prefix)
  local made, why = sys.mkdir_p(root)
  if not made then raise(("unpack: cannot make %s: %s"):format(root, tostring(why))) end
  for i = 1, rec:num_images() do
    local bytes, label = rec:image_bytes(i), rec:label(i)
    -- identity/file from the .lst (its last two path parts), else label/key
    local entry = names and names[i]
    local rel = entry and entry.label == label and safe_relative(entry.path)
    if not rel then
      local ok, info = pcall(image.image_info, bytes)
      rel = ("%d/%08d.%s"):format(label, i, ok and (info.format == "png" and "png" or "jpg") or "bin")
    end
    local dir = ("%s/%s"):format(root, rel:match("^(.*)/[^/]*$"))
    if not sys.is_dir(dir) then assert(sys.mkdir_p(dir)) end
    local f = assert(io.open(root .. "/" .. rel, "wb"))
    f:write(bytes)
    f:close()
  end
  return { images = rec:num_images(), named = names ~= nil }
end

return M
