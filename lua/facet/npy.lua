--- facet.npy: NumPy .npy files in pure Lua + FFI.
-- `load(path [, opts])` reads a file into a new tensor (opts.device: "cpu" by
-- default, or "cuda"); `save(t, path)` writes a tensor. Supported: float32
-- ('<f4'), float16 ('<f2'), int32 ('<i4'), int64 ('<i8') and uint8 ('|u1'), little-endian,
-- C order, 0 to 8 dims, format versions 1.0, 2.0 and 3.0 for reading. Every
-- other file is refused with a Lua error that names the file and the problem;
-- nothing in the header is ever evaluated, so object arrays are harmless.
-- The writer produces the same bytes as NumPy's np.save (version 1.0 unless
-- the header needs more than 64 KiB, then 2.0). NumPy has no bfloat16: saving
-- one is refused with advice (t:float() is exact), see docs/mixed-precision.md.
local ffi = require "ffi"
local tensor = require "facet.tensor"

local M = {}

local MAGIC = "\147NUMPY"    -- \x93NUMPY
local MAX_DIMS = 8
local ALIGN = 64             -- NumPy pads magic + length + header to this
local GROWTH_DIGITS = 21     -- NumPy's spare room after the dict, see below
local MAX_HEADER = 1048576   -- far above any real header; stops a bogus v2 length early
local CHUNK = 16 * 1048576   -- bytes per io call: bounds the temporary Lua strings
local MAX_EXACT = 2 ^ 53     -- integers beyond this do not survive as Lua numbers

-- descr -> dtype, for reading. Byte order means nothing for one byte, so
-- every spelling of uint8 is taken.
local DTYPE_OF = {
  ["<f4"] = "float32", ["<f2"] = "float16", ["<i4"] = "int32", ["<i8"] = "int64",
  ["|u1"] = "uint8", ["<u1"] = "uint8", [">u1"] = "uint8",
}
-- dtype -> descr, for writing (NumPy's spellings)
local DESCR_OF = { float32 = "<f4", float16 = "<f2", int32 = "<i4", int64 = "<i8", uint8 = "|u1" }
-- bytes per element
local ISIZE = { float32 = 4, float16 = 2, bfloat16 = 2, int32 = 4, int64 = 8, uint8 = 1 }
local SUPPORTED = "float32 '<f4', float16 '<f2', int32 '<i4', int64 '<i8', uint8 '|u1'"

-- the first byte of a CPU tensor's data
local function bytes_of(t)
  local dt = t:dtype()
  return ffi.cast("uint8_t *", (dt == "float16" or dt == "bfloat16") and t:bits_ptr() or t:data_ptr())
end

-- names and advice for the dtypes we refuse, by type character
local KIND_ADVICE = {
  f = { "float", "convert with arr.astype(np.float32)" },
  i = { "int", "convert with arr.astype(np.int64) or arr.astype(np.int32)" },
  u = { "uint", "convert with arr.astype(np.uint8) or arr.astype(np.int64)" },
  b = { "bool", "convert with arr.astype(np.uint8)" },
  c = { "complex", "save the real and imaginary parts as float32 arrays" },
  O = { "Python object", "save a numeric array instead (object arrays need unpickling, which facet never does)" },
  U = { "unicode string", "save a numeric array instead (e.g. indices into a list kept elsewhere)" },
  S = { "byte string", "save a numeric array instead" },
  V = { "void/raw", "save a plain numeric array instead" },
  M = { "datetime64", "convert with arr.astype(np.int64)" },
  m = { "timedelta64", "convert with arr.astype(np.int64)" },
}

-- Raised inside the reader/writer and caught by load/save, which prefix the
-- path; a plain string error (a bug, out of memory) passes through untouched.
local Failure = {}
local function fail(fmt, ...)
  error(setmetatable({ msg = select("#", ...) > 0 and fmt:format(...) or fmt }, Failure), 0)
end

local function shape_repr(shape)
  local parts = {}
  for i = 1, #shape do parts[i] = ("%d"):format(shape[i]) end
  if #parts == 1 then return "(" .. parts[1] .. ",)" end
  return "(" .. table.concat(parts, ", ") .. ")"
end

-- ---- header parsing ---------------------------------------------------------------
-- A strict recursive-descent reader for the small subset of Python literals that
-- .npy headers use: a dict of str keys; values str, True/False/None, int, tuple,
-- list. Values come back as { kind = ..., value = ... } so ints and floats stay
-- apart.

local Parser = {}
Parser.__index = Parser

local function snippet(s, i)
  local piece = s:sub(i, i + 15):gsub("[%c\128-\255]", "?")
  return piece == "" and "end of header" or ("'" .. piece .. "'")
end

function Parser:ws()
  self.i = self.s:find("[^ \t\r\n]", self.i) or #self.s + 1
end

function Parser:peek()
  self:ws()
  return self.s:sub(self.i, self.i)
end

function Parser:expect(c, what)
  if self:peek() ~= c then
    fail("malformed header: expected %s at byte %d, found %s", what, self.i, snippet(self.s, self.i))
  end
  self.i = self.i + 1
end

function Parser:string()
  local s, q = self.s, self.s:sub(self.i, self.i)
  local j = self.i + 1
  while true do
    local c = s:sub(j, j)
    if c == "" then fail("malformed header: unterminated string at byte %d", self.i) end
    if c == "\\" then fail("malformed header: escape sequences in strings are not supported (byte %d)", j) end
    if c == q then break end
    j = j + 1
  end
  local v = s:sub(self.i + 1, j - 1)
  self.i = j + 1
  return { kind = "str", value = v }
end

function Parser:number()
  local s, i = self.s, self.i
  local text = s:match("^[+-]?%d+", i)
  if not text then fail("malformed header: bad number at byte %d: %s", i, snippet(s, i)) end
  local j = i + #text
  local frac = s:match("^%.%d*", j) or ""
  j = j + #frac
  local exp = s:match("^[eE][+-]?%d+", j) or ""
  j = j + #exp
  if frac ~= "" or exp ~= "" then
    self.i = j
    return { kind = "float", value = tonumber(text .. frac .. exp), text = text .. frac .. exp }
  end
  -- Python 2 era writers put an L after longs; NumPy still reads those
  if s:sub(j, j) == "L" then j = j + 1 end
  if s:match("^[%w_]", j) then fail("malformed header: bad number at byte %d: %s", i, snippet(s, i)) end
  self.i = j
  return { kind = "int", value = tonumber(text), text = text }
end

-- a tuple or list; a one-element tuple needs its trailing comma, as in Python
function Parser:sequence(open, close, kind)
  local start = self.i
  self.i = self.i + 1
  local items, comma = {}, false
  while true do
    if self:peek() == close then self.i = self.i + 1; break end
    items[#items + 1] = self:value()
    comma = false
    if self:peek() == "," then
      self.i = self.i + 1
      comma = true
    elseif self:peek() ~= close then
      fail("malformed header: expected ',' or '%s' at byte %d, found %s", close, self.i, snippet(self.s, self.i))
    end
  end
  if kind == "tuple" and #items == 1 and not comma then
    -- "(3)" is just the number 3 in Python
    return items[1], self.s:sub(start, self.i - 1)
  end
  return { kind = kind, value = items, text = self.s:sub(start, self.i - 1) }
end

function Parser:value()
  local c = self:peek()
  if c == "'" or c == '"' then return self:string() end
  if c == "(" then return (self:sequence("(", ")", "tuple")) end
  if c == "[" then return (self:sequence("[", "]", "list")) end
  if c:match("[%d+-]") then return self:number() end
  local name = self.s:match("^[%a_][%w_]*", self.i)
  if name == "True" or name == "False" then
    self.i = self.i + #name
    return { kind = "bool", value = name == "True", text = name }
  elseif name == "None" then
    self.i = self.i + 4
    return { kind = "none", text = "None" }
  end
  fail("malformed header: unexpected %s at byte %d", snippet(self.s, self.i), self.i)
end

local function parse_dict(s)
  local p = setmetatable({ s = s, i = 1 }, Parser)
  p:expect("{", "'{'")
  local d = {}
  while true do
    if p:peek() == "}" then p.i = p.i + 1; break end
    local c = p:peek()
    if c ~= "'" and c ~= '"' then
      fail("malformed header: expected a quoted key at byte %d, found %s", p.i, snippet(s, p.i))
    end
    local key = p:string().value
    if d[key] then fail("malformed header: key '%s' appears twice", key) end
    p:expect(":", "':'")
    d[key] = p:value()
    if p:peek() == "," then
      p.i = p.i + 1
    elseif p:peek() ~= "}" then
      fail("malformed header: expected ',' or '}' at byte %d, found %s", p.i, snippet(s, p.i))
    end
  end
  p:ws()
  if p.i <= #s then
    fail("malformed header: unexpected %s after the dict at byte %d", snippet(s, p.i), p.i)
  end
  return d
end

local function value_text(v)
  if v.kind == "str" then return "'" .. v.value .. "'" end
  return v.text or v.kind
end

local function refuse_descr(descr)
  -- e.g. '<f8', '|O', '<U12', '<M8[ns]'
  local order, kind, size, rest = descr:match("^([<>|=]?)(%a)(%d*)(.*)$")
  local advice = kind and KIND_ADVICE[kind]
  if not advice or (rest ~= "" and rest:sub(1, 1) ~= "[") then
    fail("unsupported dtype '%s' (facet reads %s)", descr, SUPPORTED)
  end
  if order == ">" and DTYPE_OF["<" .. kind .. size] then
    fail("big-endian dtype '%s' is not supported; convert with arr.astype('<%s%s') before saving",
      descr, kind, size)
  end
  local name = advice[1]
  if (kind == "f" or kind == "i" or kind == "u" or kind == "c") and tonumber(size) then
    name = name .. tonumber(size) * 8
  end
  fail("dtype '%s' (%s) is not supported (%s are); %s", descr, name, SUPPORTED, advice[2])
end

-- checks the header dict; returns dtype and shape
local function check_header(d)
  for key in pairs(d) do
    if key ~= "descr" and key ~= "fortran_order" and key ~= "shape" then
      fail("malformed header: unexpected key '%s' (want 'descr', 'fortran_order', 'shape')", key)
    end
  end
  for _, key in ipairs { "descr", "fortran_order", "shape" } do
    if not d[key] then fail("malformed header: key '%s' is missing", key) end
  end

  local descr = d.descr
  if descr.kind == "list" then
    fail("structured dtype %s is not supported; save a plain numeric array", value_text(descr))
  elseif descr.kind ~= "str" then
    fail("malformed header: 'descr' is %s, want a string such as '<f4'", value_text(descr))
  end
  local dtype = DTYPE_OF[descr.value]
  if not dtype then refuse_descr(descr.value) end

  local fo = d.fortran_order
  if fo.kind ~= "bool" then
    fail("malformed header: 'fortran_order' is %s, want True or False", value_text(fo))
  end
  if fo.value then
    fail("fortran_order is True (column-major data) which is not supported; save np.ascontiguousarray(arr) instead")
  end

  local sh = d.shape
  if sh.kind ~= "tuple" then
    fail("malformed header: 'shape' is %s, want a tuple of integers", value_text(sh))
  end
  if #sh.value > MAX_DIMS then
    fail("shape %s has %d dims, at most %d are supported", sh.text, #sh.value, MAX_DIMS)
  end
  local shape = {}
  for k, e in ipairs(sh.value) do
    if e.kind ~= "int" then
      fail("malformed header: shape %s has a non-integer entry %s", sh.text, value_text(e))
    end
    if e.value < 0 then fail("shape %s has a negative entry %s", sh.text, e.text) end
    if e.value >= MAX_EXACT then fail("shape %s has an entry too large (%s)", sh.text, e.text) end
    shape[k] = e.value
  end
  return dtype, shape, sh.text
end

-- ---- reading ------------------------------------------------------------------------

local function read_exact(f, n, what)
  local s, err = f:read(n)
  if s == nil and err then fail("cannot read %s: %s", what, err) end
  return s or ""
end

local function le_uint(s)
  local v = 0
  for k = #s, 1, -1 do v = v * 256 + s:byte(k) end
  return v
end

local function read_file(f)
  local size, err = f:seek("end")
  if not size then fail("cannot seek: %s", tostring(err)) end
  f:seek("set", 0)

  local pre = read_exact(f, 8, "the magic string")
  if #pre < 8 or pre:sub(1, 6) ~= MAGIC then
    if pre:sub(1, #MAGIC) == MAGIC:sub(1, #pre) and #pre < 8 then
      fail("file too short for a .npy header (%d bytes)", size)
    end
    fail("not a .npy file (bad magic: the file does not start with \\x93NUMPY)")
  end
  local major, minor = pre:byte(7), pre:byte(8)
  local len_bytes = (major == 1 and 2) or ((major == 2 or major == 3) and 4) or nil
  if not len_bytes or minor ~= 0 then
    fail("unsupported .npy format version %d.%d (1.0, 2.0 and 3.0 are supported)", major, minor)
  end
  local lens = read_exact(f, len_bytes, "the header length")
  if #lens < len_bytes then fail("file too short for a .npy header (%d bytes)", size) end
  local hlen = le_uint(lens)
  local data_at = 8 + len_bytes + hlen
  if data_at > size then
    fail("header length %d goes past the end of the file (%d bytes)", hlen, size)
  end
  if hlen > MAX_HEADER then fail("header length %d is implausibly large", hlen) end
  local header = read_exact(f, hlen, "the header")
  if #header < hlen then fail("header length %d goes past the end of the file", hlen) end

  local dtype, shape, shape_text = check_header(parse_dict(header))

  local isize = ISIZE[dtype]
  local numel = 1
  for k = 1, #shape do numel = numel * shape[k] end
  local need, have = numel * isize, size - data_at
  if have < need then
    fail("file is truncated: shape %s of %s needs %.0f bytes of data, the file has %d",
      shape_text, dtype, need, have)
  elseif have > need then
    fail("file has %d bytes more than the shape %s of %s needs (%.0f bytes)", have - need, shape_text, dtype, need)
  end

  local t = tensor.empty(shape, { dtype = dtype })
  if need > 0 then
    local dst = bytes_of(t)
    local done = 0
    while done < need do
      local n = math.min(CHUNK, need - done)
      local s = read_exact(f, n, "the data")
      if #s < n then fail("file is truncated: the data ended after %d of %.0f bytes", done + #s, need) end
      ffi.copy(dst + done, s, n)
      done = done + n
    end
  end
  return t
end

--- load(path [, opts]) -> tensor. opts.device: "cpu" (default) or "cuda".
function M.load(path, opts)
  if type(path) ~= "string" then error("load_npy: path must be a string, got " .. type(path), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("load_npy: options must be a table", 2) end
  local device = opts and opts.device or "cpu"
  if device ~= "cpu" and device ~= "cuda" then
    error(("load_npy: unknown device '%s' (cpu, cuda)"):format(tostring(device)), 2)
  end
  local f, err = require("facet.sys").open_read(path)
  if not f then
    -- io.open's message starts with the path already; keep only the reason
    local why = tostring(err)
    if why:sub(1, #path + 2) == path .. ": " then why = why:sub(#path + 3) end
    error(("load_npy: %s: cannot open: %s"):format(path, why), 2)
  end
  local ok, res = pcall(read_file, f)
  f:close()
  if not ok then
    if getmetatable(res) == Failure then error(("load_npy: %s: %s"):format(path, res.msg), 2) end
    error(res, 0)
  end
  if device ~= "cpu" then res = res:to(device) end
  return res
end

-- ---- writing ------------------------------------------------------------------------

-- NumPy's header for a C-order array, with its prefix and padding
local function make_header(descr, shape)
  local h = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }"):format(descr, shape_repr(shape))
  -- np.save leaves room for the first dim to grow in place (numpy >= 1.23);
  -- doing the same keeps our files byte-identical to NumPy's
  if #shape > 0 then h = h .. (" "):rep(GROWTH_DIGITS - #("%d"):format(shape[1])) end
  local hlen = #h + 1 -- with the final '\n'
  local pad = ALIGN - (#MAGIC + 2 + 2 + hlen) % ALIGN
  if hlen + pad <= 65535 then
    return MAGIC .. "\1\0" .. string.char((hlen + pad) % 256, math.floor((hlen + pad) / 256))
      .. h .. (" "):rep(pad) .. "\n"
  end
  pad = ALIGN - (#MAGIC + 2 + 4 + hlen) % ALIGN
  local n, len4 = hlen + pad, {}
  for k = 1, 4 do len4[k] = string.char(n % 256); n = math.floor(n / 256) end
  return MAGIC .. "\2\0" .. table.concat(len4) .. h .. (" "):rep(pad) .. "\n"
end

local function write_file(f, t, header)
  local ok, err = f:write(header)
  if not ok then fail("cannot write: %s", tostring(err)) end
  local total = t:numel() * ISIZE[t:dtype()]
  if total > 0 then
    local src = bytes_of(t)
    local done = 0
    while done < total do
      local n = math.min(CHUNK, total - done)
      ok, err = f:write(ffi.string(src + done, n))
      if not ok then fail("cannot write: %s", tostring(err)) end
      done = done + n
    end
  end
end

--- save(t, path): writes t as a .npy file (version 1.0, C order). CUDA and
-- non-contiguous tensors are copied to a contiguous CPU tensor first.
function M.save(t, path)
  if not tensor.is_tensor(t) then error("save_npy: expected a facet tensor, got " .. type(t), 2) end
  if type(path) ~= "string" then error("save_npy: path must be a string, got " .. type(path), 2) end
  if t:is_freed() then error("save_npy: tensor was freed", 2) end
  local dtype = t:dtype()
  local descr = DESCR_OF[dtype]
  if dtype == "bfloat16" then
    error(("save_npy: %s: NumPy has no bfloat16 dtype; save t:float() (exact) instead"):format(path), 2)
  end
  if not descr then
    error(("save_npy: %s: dtype %s cannot be saved (float32, float16, int32, int64, uint8 can)"):format(path, dtype), 2)
  end
  local c = t
  if c:device() ~= "cpu" then c = c:to("cpu") end
  if not c:is_contiguous() then c = c:contiguous() end
  local header = make_header(descr, c:shape())

  -- write beside the target and rename, so a failure never leaves a partial
  -- file under the real name (rename replaces an existing file atomically)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then
    error(("save_npy: %s: cannot open for writing: %s"):format(path, tostring(err)), 2)
  end
  local ok, res = pcall(write_file, f, c, header)
  local closed, cerr = f:close()
  if ok and not closed then ok, res = false, setmetatable({ msg = "cannot write: " .. tostring(cerr) }, Failure) end
  if ok then
    local renamed, rerr = os.rename(tmp, path)
    if not renamed then
      ok, res = false, setmetatable({ msg = "cannot rename the temporary file into place: " .. tostring(rerr) }, Failure)
    end
  end
  if not ok then
    os.remove(tmp)
    if getmetatable(res) == Failure then error(("save_npy: %s: %s"):format(path, res.msg), 2) end
    error(res, 0)
  end
  return t
end

return M
