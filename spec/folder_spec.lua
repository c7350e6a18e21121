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
    -- the .lst beside it keeps the names: unpack restores the folder as it was
    assert.are.equal("1\t0\talice/a.jpg\n2\t0\talice/b.png\n3\t1\tbob/x.png\n4\t2\tcarol/1.jpeg\n",
      read(dir .. "/train.lst"))
    out = io.popen(("luajit bin/facet unpack %s/train %s/back 2>&1"):format(dir, dir)):read("*a")
    assert.truthy(out:find("4 images, named as packed", 1, true), out)
    for _, f in ipairs { "alice/a.jpg", "alice/b.png", "bob/x.png", "carol/1.jpeg" } do
      assert.are.equal(read(dir .. "/root/" .. f), read(dir .. "/back/" .. f), f)
    end
    out = io.popen(("luajit bin/facet info %s/train.rec 2>&1"):format(dir)):read("*a")
    assert.truthy(out:find("identity names (" .. dir .. "/train.lst): alice, bob, carol\n", 1, true), out)
    -- without a .lst: one folder per label, files by key
    os.remove(dir .. "/train.lst")
    out = io.popen(("luajit bin/facet unpack %s/train %s/back2 2>&1"):format(dir, dir)):read("*a")
    assert.truthy(out:find("in label folders", 1, true), out)
    assert.are.equal(read(dir .. "/root/alice/a.jpg"), read(dir .. "/back2/0/00000001.jpg"))
    assert.are.equal(read(dir .. "/root/bob/x.png"), read(dir .. "/back2/1/00000003.png"))
  end)

  it("makes the output directory, and leaves out truncated images, naming them", function()
    local png, jpg = read("spec/fixtures/images/rgb_3x4.png"), read("spec/fixtures/images/smooth_16x24.jpg")
    os.execute(("mkdir -p %s/cut/ann %s/cut/ben"):format(dir, dir))
    write(dir .. "/cut/ann/good.png", png)
    write(dir .. "/cut/ann/short.png", png:sub(1, #png - 20))     -- cut inside its last chunks
    write(dir .. "/cut/ben/good.jpg", jpg)
    write(dir .. "/cut/ben/short.jpg", jpg:sub(1, math.floor(#jpg * 0.6)))
    write(dir .. "/cut/ben/text.png", "not an image at all")
    local r = facet.data.pack(dir .. "/cut", dir .. "/new/deeper/cut")
    assert.are.equal(2, r.images)
    assert.are.equal(2, r.identities)
    local why = {}
    for _, s in ipairs(r.skipped) do why[s[1]:match("[^/]+/[^/]+$")] = s[2] end
    assert.truthy(why["ann/short.png"]:find("^truncated PNG"), why["ann/short.png"])
    assert.truthy(why["ben/short.jpg"]:find("Premature end of JPEG", 1, true), why["ben/short.jpg"])
    assert.are.equal("19 bytes are neither JPEG nor PNG", why["ben/text.png"])
    -- a header that parses is not enough: the end of the file must be there too
    assert.truthy(facet.data.incomplete_image((png:gsub("IEND\174\066\096\130$", ""))):find("truncated PNG", 1, true))
    assert.is_nil(facet.data.incomplete_image(png))
    assert.is_nil(facet.data.incomplete_image(jpg .. "\0\0"))          -- padding after the end marker
    assert.are.equal(png, facet.data.recordio(dir .. "/new/deeper/cut"):image_bytes(1))
    local out = io.popen(("luajit bin/facet pack %s/cut %s/cut2 2>&1"):format(dir, dir)):read("*a")
    assert.truthy(out:find("skipped " .. dir .. "/cut/ann/short.png: truncated PNG", 1, true), out)
    assert.is_nil(out:find("facet_image_info", 1, true), out)
    assert.truthy(out:find("2 images, 2 identities, 3 incomplete images skipped", 1, true), out)
  end)

  it("names the empty identity folders and the list whose labels do not start at 0", function()
    os.execute(("mkdir -p %s/holes/a %s/holes/b %s/holes/c"):format(dir, dir, dir))
    write(dir .. "/holes/a/1.png", read("spec/fixtures/images/rgb_3x4.png"))
    H.assert_error(function() facet.data.pack(dir .. "/holes", dir .. "/holes_out") end,
      "2 identity folder(s) hold no .jpg, .jpeg or .png image: " .. dir .. "/holes/b, " .. dir .. "/holes/c")
    write(dir .. "/from1.txt", "root/bob/x.png 1\nroot/alice/a.jpg 2\n")
    H.assert_error(function() facet.data.pack(dir .. "/from1.txt", dir .. "/from1") end,
      "in " .. dir .. "/from1.txt label 0 has no image (labels start at 1: renumber them from 0)")
    assert.is_false(F.exists(dir .. "/from1.rec"))
  end)

  it("an image folder feeds the loader", function()
    local L = facet.data.loader { source = facet.data.scan_folder(dir .. "/root"), size = { 8, 8 }, batch_size = 4,
      shuffle = false, flip = 0 }
    local x, y = L:batch(0, 1)
    assert.are.same({ 4, 3, 8, 8 }, x:shape())
    assert.are.same({ 0, 0, 1, 2 }, H.values(y))
  end)

  it("the loader takes a folder, a list file or a .rec by its path", function()
    local by_path = facet.data.loader { source = dir .. "/root", size = { 8, 8 }, batch_size = 4, shuffle = false,
      flip = 0 }
    local by_scan = facet.data.loader { source = facet.data.scan_folder(dir .. "/root"), size = { 8, 8 },
      batch_size = 4, shuffle = false, flip = 0 }
    local x1, y1 = by_path:batch(0, 1)
    local x2, y2 = by_scan:batch(0, 1)
    assert.are.same(H.values(x2), H.values(x1))
    assert.are.same(H.values(y2), H.values(y1))
    facet.data.pack(dir .. "/root", dir .. "/bypath")
    local rec = facet.data.loader { source = dir .. "/bypath.rec", size = { 8, 8 }, batch_size = 2, shuffle = false }
    assert.are.equal(2, rec:num_batches())
    H.assert_error(function() facet.data.loader { source = dir .. "/nothing-here" } end,
      "source " .. dir .. "/nothing-here is neither a folder, a list file nor a .rec")
  end)

  it("reads list files and rejects malformed ones", function()
    write(dir .. "/list.txt", "root/bob/x.png 1\nroot/alice/a.jpg 0\n\n")
    local l = facet.data.read_list(dir .. "/list.txt")
    assert.are.same({ 1, 0 }, l.labels)
    local r = facet.data.pack(dir .. "/list.txt", dir .. "/fromlist")
    assert.are.same({ images = 2, identities = 2, skipped = {} }, r)
    assert.are.equal(0, facet.data.recordio(dir .. "/fromlist"):label(1))    -- sorted by label
    write(dir .. "/bad.txt", "root/bob/x.png one\n")
    H.assert_error(function() facet.data.read_list(dir .. "/bad.txt") end, "bad.txt:1", "want 'path label'")
    write(dir .. "/gap.txt", "root/bob/x.png 0\nroot/alice/a.jpg 2\n")
    H.assert_error(function() facet.data.pack(dir .. "/gap.txt", dir .. "/gap") end, "without gaps")
  end)
end)
