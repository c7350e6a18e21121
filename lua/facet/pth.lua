--- facet.pth: PyTorch checkpoints (.pth) in and out, and weights by path.
--   pth.load(path) -> { name = tensor }        a state dict saved by torch.save
--   pth.save(obj, path)                        a .pth that torch.load reads
--   pth.load_any(path [, fn]) -> { name = tensor }, kind
--   pth.save_any(obj, path [, fn]) -> kind     by extension (facet.load / facet.save)
-- Reading is core/src/pth.c (the zip, or the legacy format of PyTorch < 1.6,
-- and the pickle through an allow-list: nothing in a file runs); a bare state dict, one under "state_dict" or
-- "model", and DDP's "module." prefix are accepted. Writing makes a zip of
-- stored entries (<stem>/data.pkl, <stem>/data/<i>, <stem>/version) with a
-- protocol-2 pickle of an OrderedDict of tensors rebuilt by
-- torch._utils._rebuild_tensor_v2, which torch.load reads and
-- load_state_dict(strict = true) accepts. Saving is atomic (sys.write_atomic).
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"
local safetensors = require "facet.safetensors"
local sys = require "facet.sys"
local json = require "facet.json"
local valid = require "facet.check"

local C = core.C
local M = {}

local DTYPES = { [tonumber(C.FACET_DTYPE_FLOAT32)] = "float32", [tonumber(C.FACET_DTYPE_INT32)] = "int32",
  [tonumber(C.FACET_DTYPE_INT64)] = "int64", [tonumber(C.FACET_DTYPE_UINT8)] = "uint8" }
local STORAGE = { float32 = "FloatStorage", int64 = "LongStorage", int32 = "IntStorage", uint8 = "ByteStorage" }
local SIZE = { float32 = 4, int32 = 4, int64 = 8, uint8 = 1 }

local function last_error() return ffi.string(C.facet_last_error()) end

--- The state dict of the .pth at path: { name = tensor } (CPU).
function M.load(path)
  valid.string("facet.load_pth", "path", path)
  local hp = ffi.new("facet_pth *[1]")
  if C.facet_pth_init(hp, path) ~= 0 then core.raise("facet.load_pth: " .. last_error(), 2) end
  local h = ffi.gc(hp[0], C.facet_pth_free)
  local n64 = ffi.new("int64_t[1]")
  assert(C.facet_pth_count(h, n64) == 0)
  local out = {}
  local name = ffi.new("char[1024]")
  local dt, nd, sizes = ffi.new("int[1]"), ffi.new("int[1]"), ffi.new("int64_t[8]")
  for i = 0, tonumber(n64[0]) - 1 do
    assert(C.facet_pth_name(h, i, name, 1024) == 0)
    assert(C.facet_pth_info(h, i, dt, nd, sizes) == 0)
    local key = ffi.string(name)
    if out[key] then core.raise(("facet.load_pth: %s: the state dict names %s twice"):format(path, key), 2) end
    local shape = {}
    for d = 1, nd[0] do shape[d] = tonumber(sizes[d - 1]) end
    local dtype = DTYPES[dt[0]]
    local t = tensor.empty(shape, { dtype = dtype })
    if t:numel() > 0 and C.facet_pth_read(h, i, t:data_ptr(), t:numel() * SIZE[dtype]) ~= 0 then
      core.raise("facet.load_pth: " .. last_error(), 2)
    end
    out[key] = t
  end
  C.facet_pth_free(ffi.gc(h, nil))
  return out
end

-- ---- writing ------------------------------------------------------------------------------

local function u16(v) return string.char(v % 256, math.floor(v / 256) % 256) end
local function u32(v) return u16(v % 65536) .. u16(math.floor(v / 65536)) end

-- zlib's CRC-32 of n bytes at ptr (zip entries carry it; torch.load checks it)
local function crc32(ptr, n)
  local z, err = sys.zlib()
  if not z then core.raise("facet.save_pth: " .. err, 3) end
  local p, crc = ffi.cast("const unsigned char *", ptr), 0
  while n > 0 do
    local k = math.min(n, 2 ^ 30)
    crc = z.crc32(crc, p, k)
    p, n = p + k, n - k
  end
  return tonumber(crc)
end

-- pickle opcodes (protocol 2)
local function text(s) return "X" .. u32(#s) .. s end
local function int(v)
  if v >= -2 ^ 31 and v < 2 ^ 31 then return "J" .. u32(v % 2 ^ 32) end
  local b = {}
  for i = 1, 8 do b[i] = string.char(v % 256); v = math.floor(v / 256) end
  return "\138\8" .. table.concat(b)
end
local function ints(list)
  local parts = { "(" }
  for _, v in ipairs(list) do parts[#parts + 1] = int(v) end
  parts[#parts + 1] = "t"
  return table.concat(parts)
end

-- the pickle of an OrderedDict of the tensors names[i] -> storage key i-1
local function state_pickle(names, list)
  local parts = { "\128\2", "ccollections\nOrderedDict\n)R(" }
  for i, name in ipairs(names) do
    local t = list[i]
    local shape, strides, s = t:shape(), {}, 1
    for d = #shape, 1, -1 do strides[d] = s; s = s * shape[d] end
    parts[#parts + 1] = table.concat {
      text(name), "ctorch._utils\n_rebuild_tensor_v2\n(",
      "(", text("storage"), "ctorch\n", STORAGE[t:dtype()], "\n", text(tostring(i - 1)), text("cpu"), int(t:numel()),
      "tQ", int(0), ints(shape), ints(strides), "\137", "ccollections\nOrderedDict\n)R", "tR",
    }
  end
  parts[#parts + 1] = "u."
  return table.concat(parts)
end

--- Writes obj (a module, or { name = tensor }) to path as a .pth zip.
function M.save(obj, path)
  valid.string("facet.save_pth", "path", path)
  valid.table("facet.save_pth", "the weights", obj)
  local dict = type(obj.state_dict) == "function" and obj:state_dict() or obj
  local names = {}
  for name, t in pairs(dict) do
    if type(name) ~= "string" then core.raise(("facet.save_pth: a name is %s, not a string"):format(valid.describe(name)), 2) end
    if not tensor.is_tensor(t) or t:is_freed() then core.raise(("facet.save_pth: %s is not a live tensor"):format(name), 2) end
    if not STORAGE[t:dtype()] then core.raise(("facet.save_pth: %s has dtype %s"):format(name, t:dtype()), 2) end
    names[#names + 1] = name
  end
  table.sort(names)
  local list = {}
  for i, name in ipairs(names) do list[i] = dict[name]:to("cpu"):contiguous() end
  local stem = (path:match("([^/]+)$") or "archive"):gsub("%.[^.]*$", ""):gsub("[^%w_%-]", "_")
  if stem == "" then stem = "archive" end
  -- entries: name, bytes (a string) or a tensor
  local entries = { { stem .. "/data.pkl", state_pickle(names, list) } }
  for i, t in ipairs(list) do entries[#entries + 1] = { stem .. "/data/" .. (i - 1), t } end
  entries[#entries + 1] = { stem .. "/version", "3\n" }
  local ok, err = sys.write_atomic(path, function(f)
    local at, central = 0, {}
    for _, e in ipairs(entries) do
      local name, data = e[1], e[2]
      local ptr, n
      if type(data) == "string" then ptr, n = data, #data else ptr, n = data:data_ptr(), data:numel() * SIZE[data:dtype()] end
      -- pad the local header's extra field so the data starts 64-byte aligned (as torch.save does)
      local pad = (64 - (at + 30 + #name + 4) % 64) % 64
      local extra = u16(0x4246) .. u16(pad) .. ("Z"):rep(pad)
      local crc = n > 0 and crc32(ptr, n) or 0
      if at + 30 + #name + #extra + n >= 2 ^ 32 then error("the file would pass 4 GiB (facet writes no zip64)", 0) end
      local fixed = u16(0) .. u16(0) .. u16(0) .. u16(0x21) .. u32(crc) .. u32(n) .. u32(n) .. u16(#name)
      assert(f:write(u32(0x04034b50), u16(20), fixed, u16(#extra), name, extra))
      if n > 0 then assert(f:write(type(data) == "string" and data or ffi.string(ptr, n))) end
      central[#central + 1] = table.concat { u32(0x02014b50), u16(20), u16(20), fixed, u16(0), u16(0), u16(0), u16(0),
        u32(0), u32(at), name }
      at = at + 30 + #name + #extra + n
    end
    local cd = table.concat(central)
    assert(f:write(cd, u32(0x06054b50), u16(0), u16(0), u16(#entries), u16(#entries), u32(#cd), u32(at), u16(0)))
  end)
  if not ok then core.raise("facet.save_pth: " .. tostring(err), 2) end
end

-- ---- by path ------------------------------------------------------------------------------

local function magic(path)
  local f = sys.open_read(path)
  if not f then return nil end
  local head = f:read(4)
  f:close()
  return head
end

--- The weights at path: a .pth (a zip, whatever its extension), a
-- .safetensors file, or a facet checkpoint directory (the checkpoint its
-- `latest` names, or a step-NNNNNNNN directory; the model's weights without
-- the head's, unless with_head: then its head.* tensors too). Returns the
-- table and the kind ("pth", "safetensors", "checkpoint").
function M.load_any(path, fn, with_head)
  fn = fn or "facet.load"
  valid.string(fn, "path", path)
  if sys.is_dir(path) then
    local checkpoint = require "facet.checkpoint"
    local dir = checkpoint.latest(path) or path
    local file = dir .. "/model.safetensors"
    if not sys.exists(file) then
      core.raise(("%s: %s is a directory without a facet checkpoint (no 'latest', no model.safetensors)"):format(fn, path), 3)
    end
    local w = safetensors.load(file)
    if not with_head then for k in pairs(w) do if k:sub(1, 5) == "head." then w[k] = nil end end end
    return w, "checkpoint"
  end
  local head = magic(path)
  if not head then core.raise(("%s: cannot open %s"):format(fn, path), 3) end
  if head == "PK\3\4" or head == "\128\2\138\10" or path:match("%.pth?$") then return M.load(path), "pth" end
  if path:match("%.safetensors$") then return safetensors.load(path), "safetensors" end
  core.raise(("%s: %s: not a .pth (zip), a .safetensors file or a checkpoint directory"):format(fn, path), 3)
end

--- Writes obj (a module or { name = tensor }) to path, in the format its
-- extension names: .pth or .pt (PyTorch), .safetensors, or a directory (a
-- path ending in "/" or an existing directory: a facet checkpoint of step 0).
-- Returns the kind written.
function M.save_any(obj, path, fn)
  fn = fn or "facet.save"
  valid.string(fn, "path", path)
  valid.table(fn, "the model or weights", obj)
  if path:match("%.pth?$") then
    M.save(obj, path)
    return "pth"
  end
  if path:match("%.safetensors$") then
    -- a backbone's spec rides along in the metadata (facet.backbone reads it)
    local meta = type(obj.spec) == "table" and { ["facet.model"] = json.encode(obj.spec) } or nil
    safetensors.save(obj, path, meta)
    return "safetensors"
  end
  if path:match("/$") or sys.is_dir(path) then
    if sys.exists(path:gsub("/+$", "") .. "/latest") then
      core.raise(("%s: %s already holds a checkpoint (a 'latest' file): give a new directory"):format(fn, path), 3)
    end
    local dict = type(obj.state_dict) == "function" and obj:state_dict() or obj
    require("facet.checkpoint").save(path, { model = { state_dict = function() return dict end, spec = obj.spec },
      step = 0, epoch = 0, batch = 0 })
    return "checkpoint"
  end
  core.raise(("%s: %s: the extension names no format (.pth, .pt, .safetensors, or a directory ending in '/')"):format(
    fn, path), 3)
end

return M
