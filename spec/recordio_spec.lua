--- RecordIO (MXNet / InsightFace train.rec + train.idx): round trips through
-- the writer for the plain and InsightFace layouts, split records (the magic
-- inside a payload at an aligned offset) checked byte for byte against files
-- built here by hand from the dmlc-core format, and every kind of bad file
-- refused with a message that says what is wrong. The C reader reads with
-- pread only, so one handle may serve several threads; LuaJIT coroutines
-- cannot exercise that, so it is documented (facet.h) rather than tested.
local H = require "support.device"
local F = require "support.files"
local ffi = require "ffi"
local core = require "facet.core"
local recordio = require "facet.data.recordio"

local C = core.C

local tmp = F.scratch()
local write_file, read_file = F.write_file, F.read_file


-- ---- the format, written out by hand --------------------------------------------------

local MAGIC = "\10\35\215\206" -- 0xced7230a, little-endian

local function u32(v)
  return string.char(v % 256, math.floor(v / 256) % 256, math.floor(v / 65536) % 256, math.floor(v / 16777216) % 256)
end
local function u64(v) return u32(v % 2 ^ 32) .. u32(math.floor(v / 2 ^ 32)) end
local function f32(v) return ffi.string(ffi.new("float[1]", v), 4) end

-- one part: magic, lrec (flag << 29 | length), bytes, zero padding to 4
local function part(cflag, bytes)
  return MAGIC .. u32(cflag * 2 ^ 29 + #bytes) .. bytes .. ("\0"):rep((4 - #bytes % 4) % 4)
end

-- payload of an image record: header (flag, label, id, id2), labels, image
local function payload(key, label, image)
  if type(label) == "table" then
    local ls = {}
    for k = 1, #label do ls[k] = f32(label[k]) end
    return u32(#label) .. f32(0) .. u64(key) .. u64(0) .. table.concat(ls) .. image
  end
  return u32(0) .. f32(label or 0) .. u64(key) .. u64(0) .. image
end

-- a .rec + .idx pair from records { key, bytes } laid one after the other
local function files(name, records, idx_override)
  local rec, idx, at = {}, {}, 0
  for k, r in ipairs(records) do
    rec[k] = r[2]
    idx[k] = ("%d\t%d\n"):format(r[1], at)
    at = at + #r[2]
  end
  local prefix = tmp(name)
  write_file(prefix .. ".rec", table.concat(rec))
  write_file(prefix .. ".idx", idx_override or table.concat(idx))
  return prefix
end

local function image(k, n)
  local t = {}
  for j = 1, n do t[j] = string.char((k * 31 + j * 7) % 256) end
  return table.concat(t)
end

-- writes InsightFace's layout: record 0, images 1..N, identity records N+1..
local function write_insightface(prefix, identities, labels_as_table)
  local w = recordio.writer(prefix)
  local n, images = 0, {}
  for j, imgs in ipairs(identities) do
    for _, bytes in ipairs(imgs) do
      n = n + 1
      images[n] = { j - 1, bytes }
    end
  end
  w:write(0, { n + 1, n + 1 + #identities }, "")
  for i, im in ipairs(images) do w:write(i, labels_as_table and { im[1], 0.5 } or im[1], im[2]) end
  local first = 1
  for j, imgs in ipairs(identities) do
    w:write(n + j, { first, first + #imgs }, "")
    first = first + #imgs
  end
  w:close()
end

describe("recordio round trips", function()
  it("plain layout (flag 0): keys, labels and bytes come back, in .idx order", function()
    local w = recordio.writer(tmp("plain"))
    local keys, labels = { 7, 3, 0, 12, 5 }, { 3, 1, 4, 0, 59 }
    for k = 1, 5 do w:write(keys[k], labels[k], image(k, k * 5 - 5)) end -- image 1 is empty
    w:close()
    local r = recordio.open(tmp("plain"))
    assert.are.equal("plain", r:layout())
    assert.are.equal(5, r:num_images())
    assert.are.equal(0, r:num_identities())
    for k = 1, 5 do
      assert.are.equal(keys[k], r:key(k))
      assert.are.equal(labels[k], r:label(k))
      assert.are.equal(k * 5 - 5, r:image_size(k))
      assert.are.equal(image(k, k * 5 - 5), r:image_bytes(k))
    end
    assert.are.same(labels, r:labels())
    local seen = 0
    for i, bytes, label in r:images(2, 4) do
      assert.are.equal(image(i, i * 5 - 5), bytes)
      assert.are.equal(labels[i], label)
      seen = seen + 1
    end
    assert.are.equal(3, seen)
    H.assert_error(function() r:images("x") end, "recordio:images: first must be a record number in 1..5, got a string")
    H.assert_error(function() r:images(1, 2.5) end, "recordio:images: last must be a record number in 1..5, got 2.5")
    H.assert_error(function() r:images(0) end, "recordio:images: first")
    r:close()
    r:close()
    H.assert_error(function() r:label(1) end, "recordio:label", "closed")
  end)

  it("the prefix may name the .rec, or both paths may be given", function()
    local w = recordio.writer { rec = tmp("named.rec"), idx = tmp("other.idx") }
    w:write(0, 2, "abc")
    w:close()
    local r = recordio.open { rec = tmp("named.rec"), idx = tmp("other.idx") }
    assert.are.equal("abc", r:image_bytes(1))
    assert.are.equal(2, r:label(1))
    H.assert_error(function() recordio.open(tmp("named.rec")) end, "named.idx", "cannot open")
    w = recordio.writer(tmp("suffixed.rec"))
    w:write(0, 4, "xyz")
    w:close()
    assert.are.equal("xyz", recordio.open(tmp("suffixed")):image_bytes(1))
  end)

  it("InsightFace layout: images 1..N, identity ranges, labels", function()
    local ids = { { image(1, 10), image(2, 11) }, { image(3, 12) }, { image(4, 13), image(5, 14), image(6, 0) } }
    write_insightface(tmp("insight"), ids)
    local r = recordio.open(tmp("insight"))
    assert.are.equal("insightface", r:layout())
    assert.are.equal(6, r:num_images())
    assert.are.equal(3, r:num_identities())
    local expect = { { 1, 2 }, { 3, 3 }, { 4, 6 } }
    for j = 1, 3 do assert.are.same(expect[j], { r:identity(j) }) end
    local n = 0
    for j, first, last in r:identities() do
      n = n + 1
      for i = first, last do
        assert.are.equal(j - 1, r:label(i))
        assert.are.equal(i, r:key(i))
        assert.are.equal(ids[j][i - first + 1], r:image_bytes(i))
      end
    end
    assert.are.equal(3, n)
    assert.are.same({ 0, 0, 1, 2, 2, 2 }, r:labels())
  end)

  it("InsightFace layout with label arrays on the images (the first is the class)", function()
    write_insightface(tmp("insight2"), { { "a", "b" }, { "c" } }, true)
    local r = recordio.open(tmp("insight2"))
    assert.are.same({ 0, 0, 1 }, r:labels())
    assert.are.equal("c", r:image_bytes(3))
    assert.are.equal(1, r:image_size(3))
  end)

  it("the writer's bytes equal dmlc-core's format, written out by hand", function()
    local w = recordio.writer(tmp("exact"))
    w:write(0, 5, "hello")
    w:write(1, { 1, 2 }, "")
    w:close()
    local r1 = part(0, payload(0, 5, "hello"))
    local r2 = part(0, payload(1, { 1, 2 }, ""))
    assert.are.equal(r1 .. r2, read_file(tmp("exact.rec")))
    assert.are.equal(("0\t0\n1\t%d\n"):format(#r1), read_file(tmp("exact.idx")))
  end)

  it("splits a payload with the magic at aligned offsets, and reads it back", function()
    -- the image starts at payload offset 24: a magic at image offset 0, 8, 12
    -- (two in a row: an empty middle part) and at the very end (empty end part)
    local img = MAGIC .. "abcd" .. MAGIC .. MAGIC .. "xy__" .. MAGIC
    local w = recordio.writer(tmp("split"))
    w:write(0, 9, img)
    w:write(1, 2, "after")
    w:close()
    local p = payload(0, 9, "")
    local expect = part(1, p) .. part(2, "abcd") .. part(2, "") .. part(2, "xy__") .. part(3, "")
    local rec = read_file(tmp("split.rec"))
    assert.are.equal(expect, rec:sub(1, #expect))
    local r = recordio.open(tmp("split"))
    assert.are.equal(#img, r:image_size(1))
    assert.are.equal(img, r:image_bytes(1))
    assert.are.equal(9, r:label(1))
    assert.are.equal("after", r:image_bytes(2))
  end)

  it("leaves a payload with the magic at unaligned offsets whole", function()
    local img = "ab" .. MAGIC .. "cd" .. "x" .. MAGIC
    local w = recordio.writer(tmp("unaligned"))
    w:write(0, 1, img)
    w:close()
    assert.are.equal(part(0, payload(0, 1, img)), read_file(tmp("unaligned.rec")))
    assert.are.equal(img, recordio.open(tmp("unaligned")):image_bytes(1))
  end)

  it("reads a hand-built split record whose header holds the magic", function()
    -- the magic as the label field (payload offset 4): the header itself is split
    local label_is_magic = u32(0) .. MAGIC .. u64(0) .. u64(0) .. "JPEG" .. MAGIC .. "tail!"
    local rec = part(1, u32(0)) .. part(2, label_is_magic:sub(9, 28)) .. part(3, "tail!")
    local p = files("handsplit", { { 0, rec }, { 1, part(0, payload(1, 3, "ok")) } })
    local r = recordio.open(p)
    assert.are.equal("plain", r:layout())
    assert.are.equal(13, r:image_size(1))
    assert.are.equal("JPEG" .. MAGIC .. "tail!", r:image_bytes(1))
    assert.are.equal("ok", r:image_bytes(2))
    -- the label is the magic's bit pattern as a float: not a class id
    H.assert_error(function() r:label(1) end, "image 0 (key 0) has the label", "want an integer")
  end)

  it("an empty .idx is an empty plain dataset", function()
    local p = files("empty", {})
    local r = recordio.open(p)
    assert.are.equal(0, r:num_images())
    assert.is_nil((r:images())())
  end)
end)

describe("recordio refuses", function()
  local good = part(0, payload(0, 1, "img!"))

  it("a missing .rec or .idx", function()
    H.assert_error(function() recordio.open(tmp("nope")) end, "nope.rec", "cannot open")
    local p = files("noidx", { { 0, good } })
    os.remove(p .. ".idx")
    H.assert_error(function() recordio.open(p) end, "noidx.idx", "cannot open")
  end)

  it("a bad magic", function()
    local p = files("magic", { { 0, "\1\2\3\4" .. good:sub(5) } })
    H.assert_error(function() recordio.open(p) end, "facet_recordio_init", "offset 0 of key 0 is not a record start",
      "bad magic 0x04030201")
  end)

  it("a truncated record", function()
    local p = files("trunc", { { 0, good:sub(1, #good - 8) } })
    H.assert_error(function() recordio.open(p) end, "record of key 0 (offset 0) is truncated",
      "says 28 bytes at offset 8, the file ends at 28")
  end)

  it("a length beyond the file", function()
    local p = files("long", { { 1, MAGIC .. u32(2 ^ 29 - 1) .. payload(1, 0, "x") } })
    local r = recordio.open(p)
    H.assert_error(function() r:image_bytes(1) end, "facet_recordio_image_info", "says 536870911 bytes")
  end)

  it("a split record cut off after its first part", function()
    local p = files("cut", { { 3, part(1, payload(3, 0, "abcd")) } })
    local r = recordio.open(p)
    H.assert_error(function() r:image_size(1) end, "record of key 3 (offset 0) is truncated",
      "part 1 would start at 36, past the end")
  end)

  it("continuation flags out of order", function()
    local p = files("order", { { 0, part(1, payload(0, 0, "")) .. part(0, "more") } })
    H.assert_error(function() recordio.open(p) end, "continuation flag 0 out of order in part 1")
    p = files("order2", { { 0, part(1, payload(0, 0, "")) .. part(1, "more") } })
    H.assert_error(function() recordio.open(p) end, "continuation flag 1 out of order")
    -- the flag has three bits; 4 to 7 mean nothing
    p = files("order3", { { 0, MAGIC .. u32(5 * 2 ^ 29 + 24) .. payload(0, 0, "") } })
    H.assert_error(function() recordio.open(p) end, "continuation flag 5 in part 0 at offset 0 is not one of 0")
  end)

  it("an .idx offset that is not a record start", function()
    local split = part(1, payload(2, 0, "")) .. part(3, "end")
    local p = files("middle", { { 2, split } }, "2\t" .. (8 + 24) .. "\n")
    local r = recordio.open(p)
    H.assert_error(function() r:image_bytes(1) end, "offset 32 of key 2 is not a record start",
      "the end of a split record (continuation flag 3)")
    p = files("unalign", { { 0, good } }, "0\t2\n")
    H.assert_error(function() recordio.open(p) end, "line 1", "offset 2 of key 0 is not 4-byte aligned")
    p = files("beyond", { { 0, good } }, "0\t0\n1\t4096\n")
    H.assert_error(function() recordio.open(p) end, "line 2", "offset 4096 of key 1 is beyond the end of the .rec")
  end)

  it("malformed .idx lines and repeated keys", function()
    for _, idx in ipairs { "0 x\n", "-1\t0\n", "0\t0\tjunk\n", "zero\t0\n", "0\n", "0\t-4\n", "\t0\n" } do
      local p = files("badidx", { { 0, good } }, idx)
      H.assert_error(function() recordio.open(p) end, "facet_recordio_init", "line 1 is not \"key<TAB>offset\"")
    end
    local p = files("longline", { { 0, good } }, ("1"):rep(300) .. "\t0\n")
    H.assert_error(function() recordio.open(p) end, "line 1 is longer than")
    p = files("dup", { { 4, good } }, "4\t0\n4\t0\n")
    H.assert_error(function() recordio.open(p) end, "key 4 appears twice")
    -- CRLF line ends and blank lines are fine
    p = files("crlf", { { 4, good } }, "\r\n4\t0\r\n\n")
    assert.are.equal(1, recordio.open(p):num_images())
  end)

  it("labels that are not integers >= 0, when a label is asked for", function()
    for _, bad in ipairs { 3.5, -1, 0 / 0, 1 / 0, 2 ^ 31 } do
      local p = files("label", { { 0, part(0, payload(0, bad, "img")) } })
      local r = recordio.open(p)
      assert.are.equal("img", r:image_bytes(1)) -- the bytes need no label
      H.assert_error(function() r:label(1) end, "facet_recordio_image_info", "image 0 (key 0) has the label",
        "want an integer in [0, 2^31)")
    end
  end)

  it("a payload shorter than its header, or than its labels", function()
    local p = files("short", { { 0, part(0, "tiny") } })
    H.assert_error(function() recordio.open(p) end, "has 4 payload bytes, fewer than its 24-byte header")
    p = files("flag", { { 1, part(0, u32(1000) .. f32(0) .. u64(1) .. u64(0) .. "abcd") } })
    local r = recordio.open(p)
    H.assert_error(function() r:image_bytes(1) end, "flag 1000 announces 1000 labels, more than its 28 payload bytes")
  end)

  it("a split record whose parts add up to more than 2^29 - 1 bytes (a sparse file)", function()
    local first = 2 ^ 29 - 4 -- the largest aligned part
    local f = assert(io.open(tmp("huge.rec"), "wb"))
    f:write(MAGIC .. u32(2 ^ 29 + first) .. payload(0, 0, ""))
    f:seek("set", 8 + first)
    f:write(part(3, ("e"):rep(16)))
    f:close()
    write_file(tmp("huge.idx"), "1\t0\n")
    local r = recordio.open(tmp("huge"))
    H.assert_error(function() r:image_size(1) end, "record of key 1 (offset 0) is too large",
      "more than 536870911 bytes")
  end)

  it("records too large to write", function()
    local w = recordio.writer(tmp("big"))
    local buf = ffi.new("uint8_t[4]")
    assert.are_not.equal(0, C.facet_recordio_write(w.h, 0, nil, 0, buf, 2 ^ 30))
    assert.truthy(core.last_error():find("too large", 1, true))
    w:close()
  end)

  it("a broken InsightFace header or identity record", function()
    local rec0 = part(0, payload(0, { 3, 5 }, ""))
    local img1, img2 = part(0, payload(1, 0, "a")), part(0, payload(2, 1, "b"))
    local id3, id4 = part(0, payload(3, { 1, 2 }, "")), part(0, payload(4, { 2, 3 }, ""))
    local p = files("ok_if", { { 0, rec0 }, { 1, img1 }, { 2, img2 }, { 3, id3 }, { 4, id4 } })
    assert.are.equal(2, recordio.open(p):num_identities())
    -- key 2 missing
    p = files("missing", { { 0, rec0 }, { 1, img1 }, { 3, id3 }, { 4, id4 } })
    H.assert_error(function() recordio.open(p) end, "record 0 describes keys 0..4 (2 images, 2 identities)",
      "key 2 is missing from the .idx")
    -- an identity range past the images
    local id_bad = part(0, payload(4, { 2, 9 }, ""))
    p = files("range", { { 0, rec0 }, { 1, img1 }, { 2, img2 }, { 3, id3 }, { 4, id_bad } })
    H.assert_error(function() recordio.open(p) end, "identity 1 (key 4) has the range [2, 9)")
    -- an identity record with a plain label
    p = files("idflag", { { 0, rec0 }, { 1, img1 }, { 2, img2 }, { 3, id3 }, { 4, part(0, payload(4, 1, "")) } })
    H.assert_error(function() recordio.open(p) end, "identity 1 (key 4) has flag 0")
    -- record 0 with one label, or labels that are not an [N+1, N+1+identities] pair
    p = files("rec0", { { 0, part(0, payload(0, { 3 }, "")) } })
    H.assert_error(function() recordio.open(p) end, "record 0 has flag 1", "not the InsightFace header")
    p = files("rec0b", { { 0, part(0, payload(0, { 4, 2 }, "")) } })
    H.assert_error(function() recordio.open(p) end, "record 0 has flag 2 and labels starting [4, 2]")
  end)

  it("bad arguments, in Lua and at the C boundary", function()
    local p = files("args", { { 0, good } })
    local r = recordio.open(p)
    H.assert_error(function() r:label(0) end, "recordio:label: image 0 outside 1..1")
    H.assert_error(function() r:image_bytes(2) end, "image 2 outside 1..1")
    H.assert_error(function() r:identity(1) end, "identity 1 outside 1..0", "no identity records")
    H.assert_error(function() r.label(1) end, "call it with ':'")
    H.assert_error(function() recordio.open(42) end, "recordio: want a path prefix")
    local w = recordio.writer(tmp("args_w"))
    H.assert_error(function() w:write(-1, 0, "") end, "key must be an integer >= 0")
    H.assert_error(function() w:write(0, 0, 5) end, "bytes must be a string")
    H.assert_error(function() w:write(0, "x", "") end, "label must be a number")
    H.assert_error(function() w:write(0, { 1, "x" }, "") end, "label 2 is string")
    H.assert_error(function() w:write(0, { 1 }, "") end, "pass the number")
    w:close()
    H.assert_error(function() w:write(0, 0, "") end, "the writer is closed")
    H.assert_error(function() recordio.writer(tmp("no/such/dir")) end, "cannot open for writing")

    local out, i64 = ffi.new("facet_recordio *[1]"), ffi.new("int64_t[2]")
    local function c_error(rc, ...)
      assert.are_not.equal(0, rc)
      local msg = core.last_error()
      for _, s in ipairs { ... } do assert.truthy(msg:find(s, 1, true), msg) end
    end
    c_error(C.facet_recordio_init(nil, "a", "b"), "facet_recordio_init: out is NULL")
    c_error(C.facet_recordio_init(out, nil, "b"), "rec_path is NULL")
    c_error(C.facet_recordio_num_images(nil, i64), "facet_recordio_num_images: r is NULL")
    c_error(C.facet_recordio_image_info(r.h, 1, nil, nil, nil), "facet_recordio_image_info: image index 1 outside [0, 1)")
    c_error(C.facet_recordio_image_info(r.h, -1, nil, nil, nil), "index -1")
    local small = ffi.new("uint8_t[2]")
    c_error(C.facet_recordio_read_image(r.h, 0, small, 2, i64), "image 0 has 4 bytes, more than the capacity 2")
    c_error(C.facet_recordio_read_image(r.h, 0, nil, 8, i64), "dst is NULL")
    c_error(C.facet_recordio_identity(r.h, 0, i64, i64 + 1), "facet_recordio_identity: identity 0 outside [0, 0)")
    c_error(C.facet_recordio_write(nil, 0, nil, 0, nil, 0), "facet_recordio_write: w is NULL")
    c_error(C.facet_recordio_writer_init(nil, "a", "b"), "facet_recordio_writer_init: out is NULL")
    assert.are.equal(0, C.facet_recordio_free(nil))
    assert.are.equal(0, C.facet_recordio_writer_free(nil))
  end)
end)
