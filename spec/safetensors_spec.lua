--- safetensors: round trips of models and tables, files written and read by
-- an independent Python implementation (struct + json), atomic saves, and
-- corrupt files rejected with clear errors.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local ffi = require "ffi"

local PY = F.PY
local tmp = F.scratch()
local write_raw = F.write_file

describe("safetensors", function()
  it("a model round-trips: save, load into a fresh model, identical outputs", function()
    local nn = facet.nn
    facet.manual_seed(1)
    local a = nn.Sequential(nn.Linear(4, 3), nn.PReLU(3), nn.Linear(3, 2))
    facet.manual_seed(2)
    local b = nn.Sequential(nn.Linear(4, 3), nn.PReLU(3), nn.Linear(3, 2))
    local x = facet.randn({ 5, 4 }, { seed = 3 })
    assert.are_not.same(H.values(a:forward(x)), H.values(b:forward(x)))
    facet.save_safetensors(a, tmp("m.safetensors"), { epoch = 3 })
    local t, meta = facet.load_safetensors(tmp("m.safetensors"))
    assert.are.equal("3", meta.epoch)
    b:load_state(t)
    assert.are.same(H.values(a:forward(x)), H.values(b:forward(x)))
    t["1.weight"] = facet.zeros({ 2, 2 })
    H.assert_error(function() b:load_state(t) end, "1.weight has shape 3x4 in the model, 2x2 in the checkpoint")
    t["1.weight"] = nil
    H.assert_error(function() b:load_state(t) end, "1.weight is missing")
  end)

  it("every dtype, scalars and empty tensors; data 8-byte aligned", function()
    local t = {
      f = facet.randn({ 2, 3 }, { seed = 1 }),
      i = facet.tensor({ -5, 7 }, { dtype = "int32" }),
      l = facet.tensor({ 2 ^ 40, -3 }, { dtype = "int64" }),
      u = facet.tensor({ { 0, 255 } }, { dtype = "uint8" }),
      s = facet.tensor(1.5),
      e = facet.zeros({ 0, 4 }),
    }
    facet.save_safetensors(t, tmp("t.safetensors"))
    local back = facet.load_safetensors(tmp("t.safetensors"))
    for k, v in pairs(t) do
      assert.are.equal(v:dtype(), back[k]:dtype())
      assert.are.same(v:shape(), back[k]:shape())
      assert.are.same(H.values(v), H.values(back[k]))
    end
    local f = assert(io.open(tmp("t.safetensors"), "rb"))
    local n = tonumber(ffi.cast("const uint64_t *", f:read(8))[0])
    f:close()
    assert.are.equal(0, n % 8)
  end)

  it("Python reads facet's files and facet reads Python's (an independent writer)", function()
    local ok = os.execute(PY .. " -c 'import json, struct' >/dev/null 2>&1")
    if not (ok == 0 or ok == true) then pending("no /usr/bin/python3") return end
    facet.save_safetensors({ w = facet.tensor { { 1.5, -2 }, { 3, 4.25 } } }, tmp("a.safetensors"))
    local script = [[
import json, struct, sys
d = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n])
b, e = h["w"]["data_offsets"]
print(h["w"]["dtype"], h["w"]["shape"], struct.unpack("<4f", d[8 + n + b:8 + n + e]))
# and a file of its own: int64 then float32, header unpadded
hdr = json.dumps({"b": {"dtype": "F32", "shape": [3], "data_offsets": [16, 28]},
                  "a": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}, "__metadata__": {"format": "pt"}}).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hdr)) + hdr + struct.pack("<2q", -7, 2**40) + struct.pack("<3f", 0.5, 1.0, -2.0))
]]
    write_raw(tmp("rw.py"), script)
    local p = io.popen(("%s %s %s %s 2>&1"):format(PY, tmp("rw.py"), tmp("a.safetensors"), tmp("py.safetensors")))
    local out = p:read("*a")
    p:close()
    assert.are.equal("F32 [2, 2] (1.5, -2.0, 3.0, 4.25)\n", out)
    local t, meta = facet.load_safetensors(tmp("py.safetensors"))
    assert.are.same({ -7, 2 ^ 40 }, H.values(t.a))
    assert.are.same({ 0.5, 1, -2 }, H.values(t.b))
    assert.are.equal("pt", meta.format)
  end)

  it("float16 and bfloat16 as F16 and BF16: NumPy reads facet's bits, facet reads Python's", function()
    local ok = os.execute(PY .. " -c 'import numpy' >/dev/null 2>&1")
    if not (ok == 0 or ok == true) then pending("no /usr/bin/python3 with numpy") return end
    local vals = { 1.5, -2, 65504, 1e-7, 0.1, 3 }
    facet.save_safetensors({ h = facet.tensor(vals, { dtype = "float16" }), b = facet.tensor(vals, { dtype = "bfloat16" }) },
      tmp("half.safetensors"))
    local script = [[
import json, struct, sys
import numpy as np
d = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n])
def raw(k):
    b, e = h[k]["data_offsets"]
    return d[8 + n + b:8 + n + e]
v = np.array([1.5, -2, 65504, 1e-7, 0.1, 3])
hb = np.frombuffer(raw("h"), np.uint16)
# bfloat16 by hand: round to nearest even from float32's top half
f = v.astype(np.float32).view(np.uint32).astype(np.uint64)
bf = ((f + 0x7fff + ((f >> 16) & 1)) >> 16).astype(np.uint16)
print(h["h"]["dtype"], h["b"]["dtype"], h["h"]["shape"],
      bool((hb == v.astype(np.float16).view(np.uint16)).all()), bool((np.frombuffer(raw("b"), np.uint16) == bf).all()))
hdr = json.dumps({"x": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                  "y": {"dtype": "BF16", "shape": [2], "data_offsets": [4, 8]}}).encode()
y = (np.array([0.25, -8], np.float32).view(np.uint32) >> 16).astype(np.uint16)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hdr)) + hdr + np.array([0.25, -8], np.float16).tobytes() + y.tobytes())
]]
    write_raw(tmp("half.py"), script)
    local p = io.popen(("%s %s %s %s 2>&1"):format(PY, tmp("half.py"), tmp("half.safetensors"), tmp("pyhalf.safetensors")))
    local out = p:read("*a")
    p:close()
    assert.are.equal("F16 BF16 [6] True True\n", out)
    local t = facet.load_safetensors(tmp("pyhalf.safetensors"))
    assert.are.equal("float16", t.x:dtype())
    assert.are.equal("bfloat16", t.y:dtype())
    assert.are.same({ 0.25, -8 }, H.values(t.x:float()))
    assert.are.same({ 0.25, -8 }, H.values(t.y:float()))
  end)

  it("a crash during a save leaves the previous checkpoint loadable", function()
    local path = tmp("ck.safetensors")
    facet.save_safetensors({ w = facet.ones({ 3 }) }, path)
    -- a killed save leaves a truncated temporary file behind
    write_raw(path .. ".tmp", "\16\0\0\0\0\0\0\0{\"w\":")
    local t = facet.load_safetensors(path)
    assert.are.same({ 1, 1, 1 }, H.values(t.w))
    -- a save that cannot be written fails cleanly and changes nothing
    H.assert_error(function() facet.save_safetensors({ w = facet.zeros({ 3 }) }, tmp("nodir/x.safetensors")) end,
      "cannot write")
    facet.save_safetensors({ w = facet.full({ 3 }, 2) }, path)   -- the next save replaces the stale temp file
    assert.are.same({ 2, 2, 2 }, H.values(facet.load_safetensors(path).w))
  end)

  it("corrupt files are clear errors", function()
    local function hdr(json, data)
      local n = ffi.new("uint64_t[1]", #json)
      return ffi.string(n, 8) .. json .. (data or "")
    end
    local cases = {
      { "short", "abc", "too short" },
      { "len", "\255\255\255\255\0\0\0\0{}", "does not fit" },
      { "json", hdr("{not json"), "not a JSON object" },
      { "dtype", hdr('{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}', ("\0"):rep(8)), "dtype F64" },
      { "range", hdr('{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', ("\0"):rep(8)), "outside" },
      { "size", hdr('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', ("\0"):rep(8)), "8 bytes for shape 3" },
      { "overlap", hdr('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        ("\0"):rep(8)), "overlap" },
    }
    for _, c in ipairs(cases) do
      write_raw(tmp(c[1]), c[2])
      H.assert_error(function() facet.load_safetensors(tmp(c[1])) end, c[3])
    end
    H.assert_error(function() facet.load_safetensors(tmp("missing")) end, "cannot open")
  end)
end)
