--- facet.data.recordio: MXNet / InsightFace RecordIO datasets (train.rec + train.idx).
--   local rec = recordio.open("faces_emore/train")      -- or { rec = path, idx = path }
--   rec:num_images(), rec:num_identities(), rec:layout()  -- "insightface" or "plain"
--   rec:label(i), rec:key(i), rec:image_size(i), rec:image_bytes(i)   -- i = 1..num_images
--   rec:identity(j) -> first, last                        -- images of identity j (1-based, inclusive)
--   for i, bytes, label in rec:images() do ... end;  for j, first, last in rec:identities() do ... end
--   rec:close()                                           -- or leave it to the GC
--   recordio.is_reader(x)                                 -- true for a reader (open or closed)
--   local w = recordio.writer("out/train"); w:write(key, label, bytes); w:close()
-- Images come back as their encoded bytes (a Lua string). The C reader reads
-- with pread, so a threaded decoder may share one handle (see facet.h, "data
-- formats"); the Lua object itself keeps one read buffer, so use it from one
-- Lua state. Labels that are not integers >= 0 are an error when asked for.
-- Lifetime: a facet.data.loader made from a reader holds it (the loader's
-- C workers read through the reader's handle). rec:close() while such a
-- loader lives is deferred: the reader refuses every method at once
-- ("recordio:label: the reader is closed"), and the file itself is closed when
-- the last loader using it is closed or collected. The GC never collects a
-- reader a live loader uses.
local ffi = require "ffi"
local core = require "facet.core"

local C, check = core.C, core.check

local M = {}

-- ".rec" and ".idx" paths from a prefix ("a/train", "a/train.rec") or a table
local function paths(spec, name)
  if type(spec) == "string" then
    local base = spec:gsub("%.rec$", ""):gsub("%.idx$", "")
    return base .. ".rec", base .. ".idx"
  elseif type(spec) == "table" and type(spec.rec) == "string" then
    if spec.idx ~= nil and type(spec.idx) ~= "string" then error(name .. ": idx must be a path string", 3) end
    return spec.rec, spec.idx or (spec.rec:gsub("%.rec$", "") .. ".idx")
  end
  error(name .. ": want a path prefix (\"data/train\" for train.rec and train.idx) or { rec = path, idx = path }", 3)
end

--- The .rec and .idx paths of a prefix or { rec =, idx = } (as open and writer take them).
function M.paths(spec, name) return paths(spec, name or "recordio") end

local i64 = ffi.new("int64_t[3]")
local int1 = ffi.new("int[1]")

-- ---- the reader ------------------------------------------------------------------

local Reader = {}
Reader.__index = Reader

local function handle(self, name)
  if getmetatable(self) ~= Reader then error("recordio:" .. name .. ": call it with ':' on a reader", 3) end
  if self.h == nil then error("recordio:" .. name .. ": the reader is closed", 3) end
  return self.h
end

-- the C index (0-based) of 1-based image i
local function image_index(self, i, name)
  local h = handle(self, name)
  if type(i) ~= "number" or i ~= math.floor(i) or i < 1 or i > self.n then
    error(("recordio:%s: image %s outside 1..%d"):format(name, tostring(i), self.n), 3)
  end
  return h, i - 1
end

--- open(prefix | { rec = path, idx = path }) -> reader
function M.open(spec)
  local rec, idx = paths(spec, "recordio")
  local pp = ffi.new("facet_recordio *[1]")
  check(C.facet_recordio_init(pp, rec, idx), 2)
  -- users: loaders reading through the handle; closing: the handle of a
  -- reader closed while they did, freed when the last of them lets go
  local self = setmetatable({ h = ffi.gc(pp[0], C.facet_recordio_free), rec = rec, idx = idx, cap = 0, users = 0 },
    Reader)
  check(C.facet_recordio_num_images(self.h, i64))
  self.n = tonumber(i64[0])
  check(C.facet_recordio_num_identities(self.h, i64))
  self.nid = tonumber(i64[0])
  check(C.facet_recordio_layout(self.h, int1))
  self.kind = int1[0] == C.FACET_RECORDIO_LAYOUT_INSIGHTFACE and "insightface" or "plain"
  return self
end

function Reader:num_images() handle(self, "num_images"); return self.n end
function Reader:num_identities() handle(self, "num_identities"); return self.nid end
function Reader:layout() handle(self, "layout"); return self.kind end

--- The .idx key of image i.
function Reader:key(i)
  local h, k = image_index(self, i, "key")
  check(C.facet_recordio_image_info(h, k, i64, nil, nil), 2)
  return tonumber(i64[0])
end

--- The class label of image i (0-based class ids, as in the file).
function Reader:label(i)
  local h, k = image_index(self, i, "label")
  check(C.facet_recordio_image_info(h, k, nil, i64 + 1, nil), 2)
  return tonumber(i64[1])
end

--- Size in bytes of image i's encoded bytes.
function Reader:image_size(i)
  local h, k = image_index(self, i, "image_size")
  check(C.facet_recordio_image_info(h, k, nil, nil, i64 + 2), 2)
  return tonumber(i64[2])
end

--- The encoded bytes of image i, as a Lua string.
function Reader:image_bytes(i)
  local h, k = image_index(self, i, "image_bytes")
  check(C.facet_recordio_image_info(h, k, nil, nil, i64 + 2), 2)
  local size = tonumber(i64[2])
  if size > self.cap then
    self.cap = math.max(size, 2 * self.cap, 4096)
    self.buf = ffi.new("uint8_t[?]", self.cap)
  end
  check(C.facet_recordio_read_image(h, k, self.buf, self.cap, i64 + 2), 2)
  return ffi.string(self.buf, tonumber(i64[2]))
end

--- Every label, as a Lua array (one header read per image).
function Reader:labels()
  handle(self, "labels")
  local out = {}
  for i = 1, self.n do out[i] = self:label(i) end
  return out
end

--- Images of identity j (InsightFace layout): first, last (1-based, inclusive;
-- last = first - 1 for an identity without images).
function Reader:identity(j)
  local h = handle(self, "identity")
  if type(j) ~= "number" or j ~= math.floor(j) or j < 1 or j > self.nid then
    error(("recordio:identity: identity %s outside 1..%d%s"):format(tostring(j), self.nid,
      self.kind == "plain" and " (a plain RecordIO file has no identity records)" or ""), 2)
  end
  check(C.facet_recordio_identity(h, j - 1, i64, i64 + 1), 2)
  return tonumber(i64[0]) + 1, tonumber(i64[1])
end

--- for i, bytes, label in rec:images([first [, last]]) do ... end
function Reader:images(first, last)
  handle(self, "images")
  for _, a in ipairs { { "first", first }, { "last", last } } do
    local v = a[2]
    if v ~= nil and (type(v) ~= "number" or v ~= math.floor(v) or v < 1 or v > self.n + 1) then
      error(("recordio:images: %s must be a record number in 1..%d, got %s"):format(a[1], self.n,
        type(v) == "number" and tostring(v) or "a " .. type(v)), 2)
    end
  end
  local i = (first or 1) - 1
  last = math.min(last or self.n, self.n)
  return function()
    i = i + 1
    if i > last then return nil end
    return i, self:image_bytes(i), self:label(i)
  end
end

--- for j, first, last in rec:identities() do ... end
function Reader:identities()
  handle(self, "identities")
  local j = 0
  return function()
    j = j + 1
    if j > self.nid then return nil end
    return j, self:identity(j)
  end
end

--- Closes the file now (the GC would otherwise). Closing twice is harmless.
-- While loaders read through the reader, the reader refuses use from now on
-- but the file stays open until the last of them is closed or collected.
function Reader:close()
  if getmetatable(self) ~= Reader then error("recordio:close: call it with ':' on a reader", 2) end
  if self.h == nil then return end
  local h = self.h
  self.h, self.buf, self.cap = nil, nil, 0
  if self.users > 0 then
    self.closing = h            -- keeps its GC finalizer, in case the loaders are collected with it
    return
  end
  ffi.gc(h, nil)
  C.facet_recordio_free(h)
end

--- True when x is a reader made by open (open or closed).
function M.is_reader(x) return type(x) == "table" and getmetatable(x) == Reader end

--- For facet.data.loader: the reader's C handle, which stays valid until the
-- matching release(reader) (close() is deferred until then). who names the
-- caller in the error for a closed reader.
function M.acquire(reader, who)
  if not M.is_reader(reader) then error(who .. ": not a recordio reader", 3) end
  if reader.h == nil then error(who .. ": the recordio reader is closed", 3) end
  reader.users = reader.users + 1
  return reader.h
end

--- Ends one acquire(); the last release of a closed reader closes its file.
function M.release(reader)
  reader.users = reader.users - 1
  if reader.users == 0 and reader.closing ~= nil then
    local h = reader.closing
    reader.closing = nil
    ffi.gc(h, nil)
    C.facet_recordio_free(h)
  end
end

-- ---- the writer ------------------------------------------------------------------

local Writer = {}
Writer.__index = Writer

--- writer(prefix | { rec = path, idx = path }) -> writer; existing files are replaced.
function M.writer(spec)
  local rec, idx = paths(spec, "recordio_writer")
  local pp = ffi.new("facet_recordio_writer *[1]")
  check(C.facet_recordio_writer_init(pp, rec, idx), 2)
  return setmetatable({ h = ffi.gc(pp[0], C.facet_recordio_writer_free), rec = rec, idx = idx }, Writer)
end

--- w:write(key, label, bytes): label is a number (the class), a table of
-- numbers (InsightFace's header and identity records: { first, last + 1 }) or
-- nil; bytes is the encoded image (a string).
function Writer:write(key, label, bytes)
  if getmetatable(self) ~= Writer then error("recordio_writer:write: call it with ':' on a writer", 2) end
  if self.h == nil then error("recordio_writer:write: the writer is closed", 2) end
  if type(key) ~= "number" or key ~= math.floor(key) or key < 0 or key >= 2 ^ 53 then
    error("recordio_writer:write: key must be an integer >= 0, got " .. tostring(key), 2)
  end
  if type(bytes) ~= "string" then
    error("recordio_writer:write: bytes must be a string, got " .. type(bytes), 2)
  end
  local labels, n
  if type(label) == "number" then
    labels, n = ffi.new("float[1]", label), 1
  elseif type(label) == "table" then
    n = #label
    labels = ffi.new("float[?]", math.max(n, 1))
    for k = 1, n do
      if type(label[k]) ~= "number" then
        error(("recordio_writer:write: label %d is %s, want a number"):format(k, type(label[k])), 2)
      end
      labels[k - 1] = label[k]
    end
    if n == 1 then
      error("recordio_writer:write: a table of one label would be written as a plain label; pass the number", 2)
    end
  elseif label == nil then
    labels, n = nil, 0
  else
    error("recordio_writer:write: label must be a number, a table of numbers or nil, got " .. type(label), 2)
  end
  check(C.facet_recordio_write(self.h, key, labels, n, bytes, #bytes), 2)
end

--- Closes both files; an error here means the files are incomplete.
function Writer:close()
  if getmetatable(self) ~= Writer then error("recordio_writer:close: call it with ':' on a writer", 2) end
  if self.h == nil then return end
  local h = self.h
  self.h = nil
  ffi.gc(h, nil)
  check(C.facet_recordio_writer_free(h), 2)
end

local valid = require "facet.check"
valid.methods(Reader, "recordio", "a reader")
valid.methods(Writer, "recordio_writer", "a writer")

return M
