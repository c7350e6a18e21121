--- facet.onnx.proto: the Protocol Buffers wire format, write side only, and
-- the ONNX messages an inference graph needs (field numbers of onnx.proto,
-- IR version 6 / opset 11 era): ModelProto, OperatorSetIdProto, GraphProto,
-- NodeProto, AttributeProto, TensorProto, ValueInfoProto, TypeProto.Tensor,
-- TensorShapeProto(.Dimension).
-- A message is built bottom-up and knows its encoded size as it grows, so a
-- parent writes a child's length prefix without encoding it twice; large
-- tensor payloads stay where they are (a pointer and a byte count) and are
-- written straight to the file (P.write), never joined into one Lua string.
local ffi = require "ffi"

local P = {}

local Msg = {}
Msg.__index = Msg

--- An empty message.
function P.message() return setmetatable({ parts = {}, size = 0 }, Msg) end

local u64 = ffi.typeof("uint64_t")
local i64 = ffi.typeof("int64_t")

--- The varint bytes of an integer (negative ones as 64-bit two's complement,
-- ten bytes, as int64 fields want).
function P.varint(v)
  if type(v) == "number" and v >= 0 and v < 2 ^ 53 then
    if v ~= math.floor(v) then error("proto.varint: not an integer: " .. tostring(v), 2) end
    local b = {}
    while v >= 128 do
      b[#b + 1] = string.char(v % 128 + 128)
      v = math.floor(v / 128)
    end
    b[#b + 1] = string.char(v)
    return table.concat(b)
  end
  local u = (type(v) == "number") and ffi.cast(u64, ffi.cast(i64, v)) or ffi.cast(u64, v)
  local b = {}
  while u >= 128 do
    b[#b + 1] = string.char(tonumber(u % 128) + 128)
    u = u / 128
  end
  b[#b + 1] = string.char(tonumber(u))
  return table.concat(b)
end

local function key(field, wire) return P.varint(field * 8 + wire) end

local function add(m, s)
  m.parts[#m.parts + 1] = s
  m.size = m.size + #s
  return m
end

--- A varint field (int32, int64, enum).
function Msg:int(field, v) return add(self, key(field, 0) .. P.varint(v)) end

--- A 32-bit float field (fixed32, little-endian).
function Msg:float(field, v)
  local f = ffi.new("float[1]", v)
  return add(self, key(field, 5) .. ffi.string(f, 4))
end

--- A string or bytes field.
function Msg:bytes(field, s) return add(self, key(field, 2) .. P.varint(#s) .. s) end

--- A sub-message field.
function Msg:message(field, sub)
  add(self, key(field, 2) .. P.varint(sub.size))
  self.parts[#self.parts + 1] = sub
  self.size = self.size + sub.size
  return self
end

--- A bytes field whose nbytes bytes lie at ptr; keep is held so the memory
-- stays alive until the message is written.
function Msg:blob(field, ptr, nbytes, keep)
  add(self, key(field, 2) .. P.varint(nbytes))
  self.parts[#self.parts + 1] = { ptr = ptr, nbytes = nbytes, keep = keep }
  self.size = self.size + nbytes
  return self
end

local function walk(m, emit)
  for _, p in ipairs(m.parts) do
    if type(p) == "string" then emit(p)
    elseif p.ptr then
      if p.nbytes > 0 then emit(ffi.string(p.ptr, p.nbytes)) end
    else walk(p, emit) end
  end
end

--- Writes the encoded message to an open Lua file.
function P.write(m, f)
  walk(m, function(s) assert(f:write(s)) end)
end

--- The encoded message as one string (for small messages and the specs).
function P.encode(m)
  local out = {}
  walk(m, function(s) out[#out + 1] = s end)
  return table.concat(out)
end

-- ---- ONNX messages ---------------------------------------------------------------------

P.FLOAT, P.INT64 = 1, 7                                  -- TensorProto.DataType
local ATTR = { float = 1, int = 2, string = 3, floats = 6, ints = 7 }   -- AttributeProto.AttributeType

--- TensorProto: name, dims (a list), data type, raw little-endian data at ptr.
function P.tensor(name, dims, dtype, ptr, nbytes, keep)
  local t = P.message()
  for _, d in ipairs(dims) do t:int(1, d) end
  t:int(2, dtype)
  t:bytes(8, name)
  t:blob(9, ptr, nbytes, keep)
  return t
end

--- AttributeProto from a Lua value: { kind = "ints"|"floats"|..., value = v }
-- or a plain integer (int), string (string) or list of integers (ints).
function P.attribute(name, v)
  local a = P.message():bytes(1, name)
  local kind, value = nil, v
  if type(v) == "table" and v.kind then kind, value = v.kind, v.value
  elseif type(v) == "string" then kind = "string"
  elseif type(v) == "table" then kind = "ints"
  elseif type(v) == "number" and v == math.floor(v) then kind = "int"
  else kind = "float" end
  if kind == "int" then a:int(3, value)
  elseif kind == "float" then a:float(2, value)
  elseif kind == "string" then a:bytes(4, value)
  elseif kind == "ints" then for _, x in ipairs(value) do a:int(8, x) end
  elseif kind == "floats" then for _, x in ipairs(value) do a:float(7, x) end
  else error("proto.attribute: unknown kind " .. tostring(kind), 2) end
  a:int(20, ATTR[kind])
  return a
end

--- NodeProto: op_type, input names, output names, node name, attributes
-- (a list of { name, value } pairs, in order).
function P.node(op, inputs, outputs, name, attrs)
  local n = P.message()
  for _, s in ipairs(inputs) do n:bytes(1, s) end
  for _, s in ipairs(outputs) do n:bytes(2, s) end
  n:bytes(3, name)
  n:bytes(4, op)
  for _, a in ipairs(attrs or {}) do n:message(5, P.attribute(a[1], a[2])) end
  return n
end

--- ValueInfoProto of a tensor: dims are numbers (dim_value) or strings
-- (dim_param, a symbolic size such as the batch).
function P.value_info(name, dtype, dims)
  local shape = P.message()
  for _, d in ipairs(dims) do
    local dim = P.message()
    if type(d) == "string" then dim:bytes(2, d) else dim:int(1, d) end
    shape:message(1, dim)
  end
  local tt = P.message():int(1, dtype):message(2, shape)
  local ty = P.message():message(1, tt)
  return P.message():bytes(1, name):message(2, ty)
end

--- GraphProto: nodes, name, initializers, inputs, outputs (lists of messages).
function P.graph(name, nodes, initializers, inputs, outputs)
  local g = P.message()
  for _, n in ipairs(nodes) do g:message(1, n) end
  g:bytes(2, name)
  for _, t in ipairs(initializers) do g:message(5, t) end
  for _, v in ipairs(inputs) do g:message(11, v) end
  for _, v in ipairs(outputs) do g:message(12, v) end
  return g
end

--- ModelProto: { ir_version, opset, producer, producer_version, doc, graph }.
function P.model(o)
  local m = P.message():int(1, o.ir_version)
  m:bytes(2, o.producer)
  m:bytes(3, o.producer_version)
  if o.doc then m:bytes(6, o.doc) end
  m:message(7, o.graph)
  m:message(8, P.message():bytes(1, ""):int(2, o.opset))   -- the default (ai.onnx) domain
  return m
end

return P
