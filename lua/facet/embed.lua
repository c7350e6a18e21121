--- facet.embed: embeddings of a whole image collection, for galleries (the
-- `facet embed` command; `facet export` shares its model loading).
--   local r = facet.embed.run(model, "gallery/", { batch_size = 64, flip = true, size = { 112, 112 } })
--   r.embeddings (n x dim, L2-normalised), r.keys ({ "alice/1.jpg", ... }), r.skipped ({ keys }),
--   r.norms (n; with norms = true: each image's embedding norm, facet.eval.embed's)
--   facet.embed.save(r, "emb.npy")  -- emb.npy and emb.txt (one key a line, row order), emb_norms.npy
-- IMAGES is one of:
--   a folder: every .jpg/.jpeg/.png under it, any depth, in sorted order of
--     their paths relative to it (the keys);
--   a list file (any other name): one image a line, its path first (relative
--     to the list's folder, or absolute), anything after the path ignored (a
--     label); the keys are the paths as written;
--   a .rec (with its .idx): every image, in .idx order; the keys are the .idx keys;
--   a .bin verification set: its 2 x pairs images in order; the keys are 1, 2, ...
-- Images go through the threaded loader (facet.data.loader: decode, resize
-- to size, normalise as in training, no augmentation) a chunk at a time, so
-- memory stays bounded for 100k images; each batch goes through
-- facet.eval.embed (flip test: the image's and its mirror's embeddings
-- summed, then L2-normalised), so the vectors equal facet.eval.embed's on the
-- same decoded images. An image that does not decode is left out, listed in
-- r.skipped and reported; the keys file lists only the rows written.
local check = require "facet.check"
local sys = require "facet.sys"        -- libc and lfs only: the command line's parser loads this file

local M = {}
local NAME = "facet.embed.run"
local IMAGE = { jpg = true, jpeg = true, png = true }
local CHUNK = 16                                       -- batches a loader is made for

-- ---- sources: { n, key(i), bytes(i), close() } -------------------------------------

local function read_file(path)
  local bytes, err = sys.read_file(path)
  if not bytes then check.fail(NAME, err) end
  return bytes
end

local function folder_source(root)
  local keys = {}
  local function walk(rel)
    local dir = rel == "" and root or (root .. "/" .. rel)
    local names, err = sys.list_dir(dir)
    if not names then check.fail(NAME, err) end
    for _, name in ipairs(names) do
      local r = rel == "" and name or (rel .. "/" .. name)
      if sys.is_dir(root .. "/" .. r) then walk(r)
      else
        local ext = name:match("%.(%w+)$")
        if ext and IMAGE[ext:lower()] then keys[#keys + 1] = r end
      end
    end
  end
  walk("")
  table.sort(keys)
  if #keys == 0 then check.fail(NAME, ("no .jpg, .jpeg or .png image under %s"):format(root)) end
  return { n = #keys, key = function(i) return keys[i] end,
    bytes = function(i) return read_file(root .. "/" .. keys[i]) end }
end

local function list_source(path)
  local f, err = sys.open_read(path)
  if not f then check.fail(NAME, ("cannot open %s: %s"):format(path, tostring(err))) end
  local dir = path:match("^(.*)/[^/]*$") or "."
  local keys = {}
  for line in f:lines() do
    local p = line:match("^%s*(%S+)")
    if p then keys[#keys + 1] = p end
  end
  f:close()
  if #keys == 0 then check.fail(NAME, ("%s lists no image"):format(path)) end
  return { n = #keys, key = function(i) return keys[i] end,
    bytes = function(i)
      local p = keys[i]
      return read_file(p:sub(1, 1) == "/" and p or (dir .. "/" .. p))
    end }
end

local function rec_source(path)
  local r = require("facet.data.recordio").open(path:gsub("%.rec$", ""))
  return { n = r:num_images(), key = function(i) return tostring(r:key(i)) end,
    bytes = function(i) return r:image_bytes(i) end, close = function() r:close() end }
end

local function bin_source(path)
  local b = require("facet.data.binfile").open(path)
  return { n = 2 * b:pairs(), key = function(i) return tostring(i) end,
    bytes = function(i) return b:image_bytes(i) end, close = function() b:close() end }
end

--- The source behind IMAGES (see the header), by its kind.
function M.source(images)
  check.string(NAME, "images", images)
  if sys.is_dir(images) then return folder_source(images) end
  if not sys.exists(images) then check.fail(NAME, ("%s does not exist"):format(images)) end
  if images:match("%.rec$") then return rec_source(images) end
  if images:match("%.bin$") then return bin_source(images) end
  return list_source(images)
end

-- ---- the run -----------------------------------------------------------------------

local function clock_text(s)
  if s ~= s or s == math.huge then return "?" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%dh%02dm"):format(math.floor(s / 3600), math.floor(s % 3600 / 60)) end
  return ("%dm%02ds"):format(math.floor(s / 60), s % 60)
end

-- a progress printer: a line rewritten in place on a terminal, else a line
-- each 10% (nothing when out is false)
local function progress(out, n)
  if not out then return function() end end
  local tty = out == io.stderr and sys.isatty(2)
  local start, step = sys.clock(), math.max(1, math.floor(n / 10))
  local last = 0
  return function(done, final)
    if not (tty or done - last >= step or (final and done ~= last)) then return end
    last = done
    local dt = sys.clock() - start
    local rate = done / math.max(dt, 1e-9)
    local line = ("embed: %d/%d images, %.1f images/s, %s elapsed, %s left"):format(done, n, rate, clock_text(dt),
      clock_text((n - done) / rate))
    out:write(tty and ("\r" .. line .. (final and "\n" or "")) or (line .. "\n"))
    out:flush()
  end
end

local OPTIONS = { "batch_size", "flip", "size", "threads", "progress", "mean", "std", "norms" }

--- Embeddings of every image of IMAGES (a path, see the header) through model.
-- opts: batch_size (64), flip (true), size ({112, 112} or a number), threads
-- (facet's), mean / std (the loader's normalisation, 127.5 / 128), progress
-- (a file such as io.stderr to print to, or false: the default), norms
-- (false: true adds r.norms, each image's embedding norm as a quality score).
function M.run(model, images, opts)
  check.module(NAME, "model", model)
  opts = check.options(NAME, opts, OPTIONS)
  local bs = check.integer(NAME, "batch_size", opts.batch_size, { min = 1, max = 65536, default = 64 })
  local flip = check.boolean(NAME, "flip", opts.flip, true)
  local want_norms = check.boolean(NAME, "norms", opts.norms, false)
  local size = opts.size or 112
  if type(size) == "number" then size = { size, size } end
  check.list(NAME, "size", size, { len = 2, integer = true, min = 1, max = 4096 })
  local threads = opts.threads and check.integer(NAME, "threads", opts.threads, { min = 1, max = 256 })
  if opts.progress and (io.type(opts.progress) ~= "file") then
    check.fail(NAME, ("progress must be an open file (io.stderr) or false, got %s"):format(
      check.describe(opts.progress)))
  end
  local src = M.source(images)
  local ok, r = pcall(function()
    local tensor = require "facet.tensor"
    local embed = require "facet.eval.embed"
    local loader = require "facet.data.loader"
    local out, norms, keys, skipped, rows = nil, nil, {}, {}, 0
    local show = progress(opts.progress, src.n)
    for first = 1, src.n, bs * CHUNK do
      local last = math.min(src.n, first + bs * CHUNK - 1)
      local bytes, labels = {}, {}
      for i = first, last do
        bytes[#bytes + 1], labels[#labels + 1] = src.bytes(i), i - first
      end
      -- labels carry each image's position, so a skipped image is known
      local L = loader { source = { images = bytes, labels = labels }, size = size, batch_size = bs, threads = threads,
        flip = 0, shuffle = false, drop_last = false, mean = opts.mean, std = opts.std }
      local got = {}
      for b = 1, L:num_batches() do
        local x, y = L:batch(0, b)
        local e, nb = embed(model, x, { batch_size = x:size(1), flip = flip, norms = want_norms })
        if not out then out = tensor.empty({ src.n, e:size(2) }) end
        if want_norms and not norms then norms = tensor.empty({ src.n }) end
        local pos = y:totable()
        for j, p in ipairs(pos) do
          if not got[p] then
            got[p] = true
            out:narrow(1, first + p, 1):copy(e:narrow(1, j, 1))
            if nb then norms:narrow(1, first + p, 1):copy(nb:narrow(1, j, 1)) end
          end
        end
        show(first - 1 + math.min(#bytes, b * bs))
      end
      L:close()
      for i = first, last do if not got[i - first] then skipped[#skipped + 1] = i end end
      rows = last
    end
    show(rows, true)
    -- drop the rows of images that did not decode
    local keep, kept, kept_norms = {}, nil, norms
    local bad = {}
    for _, i in ipairs(skipped) do bad[i] = true end
    for i = 1, src.n do if not bad[i] then keep[#keep + 1] = i; keys[#keys + 1] = src.key(i) end end
    if not out then check.fail(NAME, ("no image of %s decodes"):format(images)) end
    if #skipped > 0 then
      local index = tensor.tensor(keep, { dtype = "int32" })
      kept = out:index_select(index)
      if norms then kept_norms = norms:reshape({ src.n, 1 }):index_select(index):reshape({ #keep }) end
    else
      kept = out
    end
    local skipped_keys = {}
    for k, i in ipairs(skipped) do skipped_keys[k] = src.key(i) end
    return { embeddings = kept, keys = keys, skipped = skipped_keys, norms = kept_norms }
  end)
  if src.close then src.close() end
  if not ok then error(r, 0) end
  return r
end

--- The keys file written beside an .npy: emb.npy -> emb.txt (other names: + ".txt").
function M.keys_path(npy_path)
  if npy_path:match("%.npy$") then return (npy_path:gsub("%.npy$", ".txt")) end
  return npy_path .. ".txt"
end

--- The norms file written beside an .npy: emb.npy -> emb_norms.npy (other names: + "_norms.npy").
function M.norms_path(npy_path)
  return (npy_path:gsub("%.npy$", "")) .. "_norms.npy"
end

--- Writes r.embeddings to path (.npy, float32 n x dim), r.keys beside it
-- (keys_path) and, when r has them, r.norms (norms_path, float32 n).
function M.save(r, path)
  check.string("facet.embed.save", "path", path)
  require("facet.npy").save(r.embeddings, path)
  local ok, err = sys.write_atomic(M.keys_path(path), table.concat(r.keys, "\n") .. "\n")
  if not ok then check.fail("facet.embed.save", err) end
  if r.norms then require("facet.npy").save(r.norms, M.norms_path(path)) end
  return M.keys_path(path)
end

-- ---- the command line's model ----------------------------------------------------------

--- Declares the backbone options of `facet embed` and `facet export` on an argparse command.
function M.model_options(cmd) require("facet.backbone").options(cmd) end

--- The backbone the file describes (flags over it), with its weights, in
-- evaluation mode, and its build options (facet.backbone).
function M.load_model(facet, o)
  local backbone = require "facet.backbone"
  local model, spec, from = backbone.load(facet, o)
  io.stderr:write(("model: %s%s\n"):format(backbone.describe(spec), from and (", as " .. from .. " says") or ""))
  return model, spec.opts
end

--- `facet export`: the backbone of the parsed options to parsed.output; prints a summary.
function M.export_command(facet, o)
  local model, opts = M.load_model(facet, o)
  local r = facet.export_onnx(model, o.output, { size = opts.size })
  io.stdout:write(("%s: %d nodes, %d parameters, input data %s, output embedding %s, %d BN folded\n"):format(
    o.output, r.nodes, r.parameters, table.concat(r.input, "x"), table.concat(r.output, "x"), r.folded))
  return 0
end

--- `facet embed`: the embeddings of o.images to o.output and its keys file.
function M.embed_command(facet, o)
  local model, opts = M.load_model(facet, o)
  local r = M.run(model, o.images, { batch_size = tonumber(o.batch_size), flip = not o.no_flip,
    size = opts.size, threads = o.threads and tonumber(o.threads), progress = io.stderr, norms = o.norms })
  local keys = M.save(r, o.output)
  for _, k in ipairs(r.skipped) do io.stderr:write("facet embed: skipped ", k, " (does not decode)\n") end
  io.stdout:write(("%s: %d x %d embeddings; keys in %s%s\n"):format(o.output, r.embeddings:size(1),
    r.embeddings:size(2), keys, r.norms and ("; norms in " .. M.norms_path(o.output)) or ""))
  return 0
end

return M
