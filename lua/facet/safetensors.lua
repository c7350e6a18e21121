--- facet.safetensors: weights in the safetensors format (Hugging Face's): an
-- 8-byte little-endian header length, a JSON header mapping each name to
-- { dtype, shape, data_offsets } (plus an optional "__metadata__" of strings),
-- then the raw little-endian data. PyTorch's and Hugging Face's loaders read
-- what facet writes, and facet reads theirs (F32, I32, I64, U8).
-- Saving is atomic: a temporary file, fsync, rename.
local ffi = require "ffi"
local cjson = require "cjson"
local tensor = require "facet.tensor"
local sys = require "facet.sys"
local valid = require "facet.check"

local M = {}

local DTYPES = { float32 = "F32", float16 = "F16", bfloat16 = "BF16", int32 = "I32", int64 = "I64", uint8 = "U8" }
local FROM = { F32 = "float32", F16 = "float16", BF16 = "bfloat16", I32 = "int32", I64 = "int64", U8 = "uint8" }
local SIZE = { float32 = 4, float16 = 2, bfloat16 = 2, int32 = 4, int64 = 8, uint8 = 1 }

-- the first byte of a CPU tensor (16-bit floats have no Lua element type: their bits)
local function bytes_of(t)
  return ffi.cast("char *", SIZE[t:dtype()] == 2 and t:bits_ptr() or t:data_ptr())
end

--- name -> tensor table of a module (state_dict), a head, or a table.
local function tensors_of(obj)
  if type(obj) ~= "table" then error("save_safetensors: want a module, a head or a table of tensors", 3) end
  if obj.state_dict then return obj:state_dict() end
  if obj.handle and obj.parameters then      -- a head
    local t = { weight = obj.weight }
    if obj.bias then t.bias = obj.bias end
    if obj.alpha then t.alpha = obj.alpha end
    return t
  end
  return obj
end

--- Writes tensors (a module, a head, or { name = tensor }) to path; metadata: { key = string }.
function M.save(obj, path, metadata)
  if type(path) ~= "string" then error("save_safetensors: path must be a string", 2) end
  local t = tensors_of(obj)
  local names = {}
  for name, v in pairs(t) do
    if type(name) ~= "string" or name == "__metadata__" then error(("save_safetensors: bad tensor name %s"):format(tostring(name)), 2) end
    if not tensor.is_tensor(v) then error(("save_safetensors: %s is not a tensor"):format(name), 2) end
    if not DTYPES[v:dtype()] then error(("save_safetensors: %s has dtype %s"):format(name, v:dtype()), 2) end
    names[#names + 1] = name
  end
  table.sort(names)
  local header, offset, blobs = {}, 0, {}
  for i, name in ipairs(names) do
    local v = t[name]:to("cpu"):contiguous()
    local nbytes = v:numel() * SIZE[v:dtype()]
    local shape = v:shape()
    header[name] = { dtype = DTYPES[v:dtype()], shape = setmetatable(shape, cjson.array_mt), data_offsets = { offset, offset + nbytes } }
    blobs[i] = { v = v, nbytes = nbytes }
    offset = offset + nbytes
  end
  if metadata then
    local md = {}
    for k, v in pairs(metadata) do md[tostring(k)] = tostring(v) end
    header.__metadata__ = md
  end
  -- lua-cjson 2.1.0 encodes an empty table as {}: a scalar's shape must be []
  local json = cjson.encode(header):gsub('"shape":{}', '"shape":[]')
  json = json .. (" "):rep((8 - #json % 8) % 8)     -- data starts 8-byte aligned
  local ok, err = sys.write_atomic(path, function(f)
    local len = ffi.new("uint64_t[1]", #json)
    assert(f:write(ffi.string(len, 8), json))
    for _, b in ipairs(blobs) do
      if b.nbytes > 0 then assert(f:write(ffi.string(bytes_of(b.v), b.nbytes))) end
    end
  end)
  if not ok then error("save_safetensors: " .. err, 2) end
end

--- Reads path; returns { name = tensor } (CPU) and the metadata table.
function M.load(path, opts)
  valid.string("load_safetensors", "path", path)
  if opts ~= nil then valid.table("load_safetensors", "opts", opts) end
  opts = opts or {}
  local f, err = sys.open_read(path)
  if not f then error(("load_safetensors: cannot open %s: %s"):format(tostring(path), tostring(err)), 2) end
  local data = f:read("*a")
  f:close()
  local function bad(msg) error(("load_safetensors: %s: %s"):format(path, msg), 3) end
  if #data < 8 then bad("file too short for a safetensors header") end
  local n = tonumber(ffi.cast("const uint64_t *", data)[0])
  if n < 2 or n > 100 * 2 ^ 20 or 8 + n > #data then bad(("header length %d does not fit the file (%d bytes)"):format(n, #data)) end
  local ok, header = pcall(cjson.decode, data:sub(9, 8 + n))
  if not ok or type(header) ~= "table" then bad("the header is not a JSON object") end
  local base, size = 8 + n, #data - 8 - n
  local out, meta, ranges = {}, header.__metadata__ or {}, {}
  for name, info in pairs(header) do
    if name ~= "__metadata__" then
      if type(info) ~= "table" or type(info.shape) ~= "table" or type(info.data_offsets) ~= "table" then
        bad(("entry %s is malformed"):format(name))
      end
      local dtype = FROM[info.dtype]
      if not dtype then bad(("%s has dtype %s (facet reads F32, F16, BF16, I32, I64, U8)"):format(name, tostring(info.dtype))) end
      local count = 1
      for _, s in ipairs(info.shape) do
        if type(s) ~= "number" or s < 0 or s ~= math.floor(s) then bad(("%s has a bad shape"):format(name)) end
        count = count * s
      end
      local b, e = info.data_offsets[1], info.data_offsets[2]
      if type(b) ~= "number" or type(e) ~= "number" or b < 0 or e < b or e > size then
        bad(("%s: data offsets [%s, %s] outside the %d data bytes"):format(name, tostring(b), tostring(e), size))
      end
      if e - b ~= count * SIZE[dtype] then
        bad(("%s: %d bytes for shape %s of %s"):format(name, e - b, table.concat(info.shape, "x"), dtype))
      end
      if e > b then ranges[#ranges + 1] = { b, e, name } end   -- empty tensors take no room
      local shape = {}
      for i, s in ipairs(info.shape) do shape[i] = s end
      local t = tensor.empty(shape, { dtype = dtype })
      if e > b then ffi.copy(bytes_of(t), ffi.cast("const char *", data) + base + b, e - b) end
      out[name] = opts.device and t:to(opts.device) or t
    end
  end
  table.sort(ranges, function(x, y) return x[1] < y[1] end)
  for i = 2, #ranges do
    if ranges[i][1] < ranges[i - 1][2] then bad(("%s and %s overlap"):format(ranges[i - 1][3], ranges[i][3])) end
  end
  return out, meta
end

return M
