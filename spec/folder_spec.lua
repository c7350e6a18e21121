--- Image folders and list files, packed into InsightFace's RecordIO layout
-- and unpacked again byte for byte, through the library and `facet pack/unpack`.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet

local read, write = F.read_file, F.write_file

describe("folders, lists, pack and unpack", function()
  local dir
  setup(function()
    dir = F.temp_dir()
    local png, jpg = read("spec/fixtures/images/rgb_3x4.png"), read("spec/fixtures/images/smooth_16x24.jpg")
    os.execute(("mkdir -p %s/root/bob %s/root/alice %s/root/carol"):format(dir, dir, dir))
    write(dir .. "/root/alice/b.png", png)
    write(dir .. "/root/alice/a.jpg", jpg)
    write(dir .. "/root/bob/x.png", png)
    write(dir .. "/root/carol/1.jpeg", jpg)
    write(dir .. "/root/carol/notes.txt", "not an image")
  end)
  teardown(function() F.remove_dir(dir) end)

  it("scans identities in name order and images in name order", function()
    local s = facet.data.scan_folder(dir .. "/root")
    assert.are.same({ "alice", "bob", "carol" }, s.identities)
    assert.are.same({ 0, 0, 1, 2 }, s.labels)
    assert.truthy(s.paths[1]:find("alice/a.jpg", 1, true))
    H.assert_error(function() facet.data.scan_folder(dir .. "/none") end, "not a directory")
  end)

  it("packs into the InsightFace layout and unpacks the same bytes", function()
    local out = io.popen(("luajit bin/facet pack %s/root %s/train 2>&1"):format(dir, dir)):read("*a")
    assert.truthy(out:find("4 images, 3 identities", 1, true), out)
    local rec = facet.data.recordio(dir .. "/train")
    assert.are.equal("insightface", rec:layout())
    assert.are.equal(4, rec:num_images())
    assert.are.equal(3, rec:num_identities())
    assert.are.same({ 1, 2 }, { rec:identity(1) })
    assert.are.same({ 4, 4 }, { rec:identity(3) })
    assert.are.equal(read(dir .. "/root/alice/a.jpg"), rec:image_bytes(1))
    out = io.popen(("luajit bin/facet unpack %s/train %s/back 2>&1"):format(dir, dir)):read("*a")
    assert.truthy(out:find("4 images", 1, true), out)
    assert.are.equal(read(dir .. "/root/alice/a.jpg"), read(dir .. "/back/0/00000001.jpg"))
    assert.are.equal(read(dir .. "/root/bob/x.png"), read(dir .. "/back/1/00000003.png"))
  end)

  it("an image folder feeds the loader", function()
    local L = facet.data.loader { source = facet.data.scan_folder(dir .. "/root"), size = { 8, 8 }, batch_size = 4,
      shuffle = false, flip = 0 }
    local x, y = L:batch(0, 1)
    assert.are.same({ 4, 3, 8, 8 }, x:shape())
    assert.are.same({ 0, 0, 1, 2 }, H.values(y))
  end)

  it("reads list files and rejects malformed ones", function()
    write(dir .. "/list.txt", "root/bob/x.png 1\nroot/alice/a.jpg 0\n\n")
    local l = facet.data.read_list(dir .. "/list.txt")
    assert.are.same({ 1, 0 }, l.labels)
    local r = facet.data.pack(dir .. "/list.txt", dir .. "/fromlist")
    assert.are.same({ images = 2, identities = 2 }, r)
    assert.are.equal(0, facet.data.recordio(dir .. "/fromlist"):label(1))    -- sorted by label
    write(dir .. "/bad.txt", "root/bob/x.png one\n")
    H.assert_error(function() facet.data.read_list(dir .. "/bad.txt") end, "bad.txt:1", "want 'path label'")
    write(dir .. "/gap.txt", "root/bob/x.png 0\nroot/alice/a.jpg 2\n")
    H.assert_error(function() facet.data.pack(dir .. "/gap.txt", dir .. "/gap") end, "without gaps")
  end)
end)
