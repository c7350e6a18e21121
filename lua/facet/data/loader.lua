--- facet.data.loader{ source = ..., ... }: the threaded image loader (C
-- worker threads decode JPEG/PNG, flip, resize and normalise into reused batch
-- buffers; see facet_loader_* in facet.h). A training data source:
--   src:num_batches(), src:batch(epoch, i) -> images (B x 3 x H x W), labels (B int64)
-- valid until the next batch. Batches come in order; asking for another
-- position (a resumed run) restarts the workers there.
-- source: a facet.data.recordio reader, { images = { encoded bytes ... },
-- labels = { ... } }, or what facet.data.scan_folder / read_list return
-- ({ paths, labels }: the files are read into memory once), or a path to
-- any of them (a folder, a list file, a .rec or its prefix). Options: size = {112, 112}, batch_size = 128,
-- threads = facet threads, queue = 4, flip = 0.5, seed = 0 (a number, or a
-- uint64_t cdata, passed on whole, for seeds above 2^53), shuffle = true,
-- drop_last = true, mean = 127.5, std = 128 (numbers or 3 per channel),
-- crop_padding = 0 (random crop after padding with black), brightness,
-- contrast, saturation (jitter factors in [1 - v, 1 + v]), grayscale
-- (probability); all drawn per image from (seed, epoch, position).
-- L:shard(rank, world) -> the part of rank (0-based) of world ranks: a loader
-- of batch_size / world images over the same source and options, whose
-- epoch order is cut into world contiguous runs of batches; rank r reads run
-- r in order (prefetching as usual). Every rank gets num_batches() =
-- floor(batches / world) batches an epoch, a disjoint part of the epoch's
-- permutation, together a global batch of batch_size (facet.train{ dist }).
-- Lifetime: the loader holds its source. A RecordIO reader stays open while
-- the loader lives (the C workers read through its handle): rec:close() before
-- that is deferred until the loader is closed or collected (see
-- facet.data.recordio), and the GC never frees a reader a live loader uses.
-- After L:close() every method but close refuses with "loader:<method>: the
-- loader is closed"; batches already handed out stay valid (they hold their
-- own references to the buffers).
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"
local recordio = require "facet.data.recordio"

local C, check = core.C, core.check
local Loader = {}
Loader.__index = Loader

local pp = ffi.new("facet_loader *[1]")
local img_p, lab_p = ffi.new("facet_tensor *[1]"), ffi.new("facet_tensor *[1]")
local i64, dbl, sk, dl = ffi.new("int64_t[1]"), ffi.new("double[1]"), ffi.new("int64_t[1]"), ffi.new("int64_t[1]")

local function triple(v, name)
  if type(v) == "number" then return { v, v, v } end
  if type(v) == "table" and #v == 3 then return v end
  error(("facet.data.loader: %s must be a number or 3 numbers"):format(name), 3)
end

-- A source given as a path: a folder of identity subfolders, a list file
-- ("path label" lines) or a RecordIO (.rec, .idx or their prefix).
local function source_of_path(path)
  local sys = require "facet.sys"
  if sys.is_dir(path) then return require("facet.data.folder").scan_folder(path) end
  local prefix = path:gsub("%.rec$", ""):gsub("%.idx$", "")
  if sys.exists(prefix .. ".rec") then return require("facet.data.recordio").open(prefix) end
  if sys.exists(path) then return require("facet.data.folder").read_list(path) end
  error(("facet.data.loader: source %s is neither a folder, a list file nor a .rec"):format(path), 3)
end

local function new(opts)
  if type(opts) == "table" and type(opts.source) == "string" then
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.source = source_of_path(opts.source)
    opts = copy
  end
  if type(opts) == "table" then require("facet.check").loader_options(opts) end
  if type(opts) ~= "table" or type(opts.source) ~= "table" then
    error("facet.data.loader{ source = a path, a recordio reader or { images =, labels = } }", 2)
  end
  local size = opts.size or { 112, 112 }
  local mean, std = triple(opts.mean or 127.5, "mean"), triple(opts.std or 128, "std")
  local settings = ffi.new("facet_loader_params", {
    height = size[1], width = size[2],
    batch = opts.batch_size or 128,
    threads = opts.threads or core.get_threads(),
    queue = opts.queue or 4,
    flip = opts.flip == nil and 0.5 or opts.flip,
    seed = opts.seed or 0,
    shuffle = opts.shuffle == false and 0 or 1,
    drop_last = opts.drop_last == false and 0 or 1,
    crop_pad = opts.crop_padding or 0,
    brightness = opts.brightness or 0, contrast = opts.contrast or 0, saturation = opts.saturation or 0,
    grayscale = opts.grayscale or 0,
    mean = mean, std = std,
  })
  local self = setmetatable({ source = opts.source, expect = nil, opts = opts }, Loader)
  local src = opts.source
  local reader                                             -- the recordio reader held, if any
  if recordio.is_reader(src) then
    local rh = recordio.acquire(src, "facet.data.loader")  -- a closed reader is refused here
    local rc = C.facet_loader_init_recordio(pp, rh, settings)
    if rc ~= 0 then
      recordio.release(src)
      check(rc, 2)
    end
    reader = src
  elseif src.h ~= nil then
    error("facet.data.loader: source has a handle but is not a facet.data.recordio reader", 2)
  else
    local imgs, labels = src.images, src.labels
    if src.paths then                                   -- scan_folder / read_list: read the files once
      imgs = {}
      for i, p in ipairs(src.paths) do
        local f, err = require("facet.sys").open_read(p)
        if not f then error(("facet.data.loader: cannot read %s: %s"):format(p, tostring(err)), 2) end
        imgs[i] = f:read("*a")
        f:close()
      end
    end
    if type(imgs) ~= "table" or type(labels) ~= "table" or #imgs ~= #labels or #imgs == 0 then
      error("facet.data.loader: source.images (or paths) and source.labels must be lists of one length", 2)
    end
    local total = 0
    for i, b in ipairs(imgs) do
      if type(b) ~= "string" then error(("facet.data.loader: image %d is not a string of bytes"):format(i), 2) end
      total = total + #b
    end
    local bytes = tensor.empty({ math.max(total, 1) }, { dtype = "uint8" })
    local offsets = tensor.empty({ #imgs + 1 }, { dtype = "int64" })
    local lab = tensor.empty({ #imgs }, { dtype = "int64" })
    local bp, op, lp, at = bytes:data_ptr(), offsets:data_ptr(), lab:data_ptr(), 0
    for i, b in ipairs(imgs) do
      op[i - 1] = at
      ffi.copy(bp + at, b, #b)
      at = at + #b
      lp[i - 1] = labels[i]
    end
    op[#imgs] = at
    check(C.facet_loader_init_memory(pp, bytes.h, offsets.h, lab.h, settings), 2)
  end
  if reader then
    -- the finalizer holds the reader: it cannot be collected (nor its file
    -- closed by a deferred close) before the workers are stopped
    self.reader = reader
    self.h = ffi.gc(pp[0], function(h)
      C.facet_loader_free(h)
      recordio.release(reader)
    end)
  else
    self.h = ffi.gc(pp[0], C.facet_loader_free)
  end
  check(C.facet_loader_batches(self.h, i64))
  self.n = tonumber(i64[0])
  return self
end

-- the handle of an open loader; an error naming the method otherwise
local function live(self, name)
  if getmetatable(self) ~= Loader then error("loader:" .. name .. ": call it with ':' on a loader", 3) end
  if self.h == nil then error("loader:" .. name .. ": the loader is closed", 3) end
  return self.h
end

function Loader:num_batches() live(self, "num_batches"); return self.n end

--- Batch i (1-based) of epoch e (0-based).
function Loader:batch(epoch, i)
  live(self, "batch")
  if type(epoch) ~= "number" or epoch < 0 or epoch ~= math.floor(epoch) then
    error(("loader:batch: epoch %s is not an integer >= 0"):format(tostring(epoch)), 2)
  end
  if type(i) ~= "number" or i < 1 or i > self.n or i ~= math.floor(i) then
    error(("loader: batch %s outside 1..%d"):format(tostring(i), self.n), 2)
  end
  if not (self.expect and self.expect[1] == epoch and self.expect[2] == i) then
    check(C.facet_loader_start(self.h, epoch, i - 1))
  end
  check(C.facet_loader_next(self.h, img_p, lab_p))
  self.expect = i < self.n and { epoch, i + 1 } or nil
  -- keep the handles one step: the previous batch's views are released here
  self.images, self.labels = tensor.wrap(img_p[0]), tensor.wrap(lab_p[0])
  return self.images, self.labels
end

local Shard = {}
Shard.__index = Shard

function Loader:shard(rank, world)
  live(self, "shard")
  local valid = require "facet.check"
  valid.integer("loader:shard", "world", world, { min = 1, max = 65536 })
  valid.integer("loader:shard", "rank", rank, { min = 0, max = world - 1 })
  local bs = self.opts.batch_size or 128
  if bs % world ~= 0 then
    valid.fail("loader:shard", ("the batch size %d does not divide among %d ranks"):format(bs, world))
  end
  local o = {}
  for k, v in pairs(self.opts) do o[k] = v end
  o.batch_size = bs / world
  local inner = new(o)
  local per = math.floor(inner:num_batches() / world)
  if per < 1 then valid.fail("loader:shard", ("%d batches of %d cannot be shared by %d ranks"):format(
    inner:num_batches(), bs / world, world)) end
  return setmetatable({ inner = inner, rank = rank, world = world, per = per }, Shard)
end

function Shard:num_batches() return self.per end
function Shard:batch(epoch, i)
  if type(i) ~= "number" or i < 1 or i > self.per or i ~= math.floor(i) then
    error(("loader shard: batch %s outside 1..%d"):format(tostring(i), self.per), 2)
  end
  return self.inner:batch(epoch, self.rank * self.per + i)
end
function Shard:stats() return self.inner:stats() end
function Shard:close() return self.inner:close() end

--- { wait_seconds, skipped, delivered } since the loader was made.
function Loader:stats()
  check(C.facet_loader_stats(live(self, "stats"), dbl, sk, dl))
  return { wait_seconds = dbl[0], skipped = tonumber(sk[0]), delivered = tonumber(dl[0]) }
end

--- Stops the workers and frees the buffers now (the GC would otherwise);
-- releases the RecordIO reader. Closing twice is harmless.
function Loader:close()
  if getmetatable(self) ~= Loader then error("loader:close: call it with ':' on a loader", 2) end
  if self.h == nil then return end
  local h = self.h
  self.h = nil
  ffi.gc(h, nil)
  C.facet_loader_free(h)
  if self.reader then
    local r = self.reader
    self.reader = nil
    recordio.release(r)
  end
end

local valid = require "facet.check"
valid.methods(Loader, "loader", "a loader")
valid.methods(Shard, "loader", "a loader")

return new
