--- facet.data.loader{ source = ..., ... }: the threaded image loader (C
-- worker threads decode JPEG/PNG, flip, resize and normalise into reused batch
-- buffers; see facet_loader_* in facet.h). A training data source:
--   src:num_batches(), src:batch(epoch, i) -> images (B x 3 x H x W), labels (B int64)
-- valid until the next batch. Batches come in order; asking for another
-- position (a resumed run) restarts the workers there.
-- source: a facet.data.recordio reader, { images = { encoded bytes ... },
-- labels = { ... } }, or what facet.data.scan_folder / read_list return
-- ({ paths, labels }: the files are read into memory once). Options: size = {112, 112}, batch_size = 128,
-- threads = facet threads, queue = 4, flip = 0.5, seed = 0 (a number, or a
-- uint64_t cdata, passed on whole, for seeds above 2^53), shuffle = true,
-- drop_last = true, mean = 127.5, std = 128 (numbers or 3 per channel),
-- crop_padding = 0 (random crop after padding with black), brightness,
-- contrast, saturation (jitter factors in [1 - v, 1 + v]), grayscale
-- (probability); all drawn per image from (seed, epoch, position).
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"

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

local function new(opts)
  if type(opts) ~= "table" or type(opts.source) ~= "table" then
    error("facet.data.loader{ source = recordio reader or { images =, labels = } }", 2)
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
  local self = setmetatable({ source = opts.source, expect = nil }, Loader)
  local src = opts.source
  if src.h and src.num_images then                          -- a recordio reader
    check(C.facet_loader_init_recordio(pp, src.h, settings), 2)
  else
    local imgs, labels = src.images, src.labels
    if src.paths then                                   -- scan_folder / read_list: read the files once
      imgs = {}
      for i, p in ipairs(src.paths) do
        local f, err = io.open(p, "rb")
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
  self.h = ffi.gc(pp[0], C.facet_loader_free)
  check(C.facet_loader_batches(self.h, i64))
  self.n = tonumber(i64[0])
  return self
end

function Loader:num_batches() return self.n end

--- Batch i (1-based) of epoch e (0-based).
function Loader:batch(epoch, i)
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

--- { wait_seconds, skipped, delivered } since the loader was made.
function Loader:stats()
  check(C.facet_loader_stats(self.h, dbl, sk, dl))
  return { wait_seconds = dbl[0], skipped = tonumber(sk[0]), delivered = tonumber(dl[0]) }
end

function Loader:close()
  if self.h then
    ffi.gc(self.h, nil)
    C.facet_loader_free(self.h)
    self.h = nil
  end
end

return new
