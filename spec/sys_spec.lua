--- facet.sys: file operations on hostile path names (quotes, $(...), backticks,
-- spaces, newlines, a leading '-', globs, unicode) make and remove exactly the
-- paths named and never run a command: the specs work inside a temporary
-- directory where `$(touch canary)` would leave a file called canary.
local H = require "support.device"
local facet = H.facet
local sys = require "facet.sys"
local lfs = require "lfs"

local HOSTILE = {
  "it's", "'$(touch canary)'", "$(touch canary)", "`touch canary`", "; touch canary; #", "a b", "line\nbreak",
  "-rf", "--help", "*", "ünï ☃", " lead and trail ", "\"quoted\"", "back\\slash",
}

-- a string as one word for /bin/sh
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local root, tmpdir
setup(function()
  root = lfs.currentdir()
  tmpdir = H.temp_dir()
  assert(lfs.chdir(tmpdir))            -- a command run by mistake would drop its canary here
end)
teardown(function()
  lfs.chdir(root)
  H.remove_dir(tmpdir)
  collectgarbage()          -- the tensors' C memory is invisible to the GC's pacing: free it before the next file
end)

local function no_canary()
  assert.is_nil(lfs.attributes(tmpdir .. "/canary"), "a command ran: canary exists")
  assert.is_nil(lfs.attributes(root .. "/canary"), "a command ran: canary exists in the checkout")
end

-- a fresh, empty directory for one spec
local fresh_n = 0
local function fresh()
  fresh_n = fresh_n + 1
  local d = ("%s/case%d"):format(tmpdir, fresh_n)
  assert(sys.mkdir_p(d))
  return d
end

describe("facet.sys", function()
  it("mkdir_p makes exactly the hostile directory named, and its parents", function()
    for _, name in ipairs(HOSTILE) do
      local d = fresh()
      assert.is_true(sys.mkdir_p(d .. "/" .. name .. "/" .. name))
      assert.are.same({ name }, sys.list_dir(d))
      assert.are.same({ name }, sys.list_dir(d .. "/" .. name))
      assert.are.same({}, sys.list_dir(d .. "/" .. name .. "/" .. name))
      assert.is_true(sys.mkdir_p(d .. "/" .. name))          -- already there: fine
    end
    no_canary()
  end)

  it("mkdir_p takes absolute and relative paths, '.', '..' and repeated slashes", function()
    local d = fresh()
    assert.is_true(sys.mkdir_p(d .. "//x/./y/../z/"))
    assert.are.same({ "x" }, sys.list_dir(d))
    assert.are.same({ "y", "z" }, sys.list_dir(d .. "/x"))
    assert.is_true(sys.mkdir_p(("case%d/rel/a"):format(fresh_n)))   -- relative to the current directory
    assert.is_true(sys.is_dir(d .. "/rel/a"))
  end)

  it("mkdir_p reports a file in the way and a bad argument", function()
    local d = fresh()
    H.write_file(d .. "/file", "x")
    local ok, err = sys.mkdir_p(d .. "/file/sub")
    assert.is_nil(ok)
    assert.truthy(err:find(d .. "/file", 1, true), err)
    assert.is_nil((sys.mkdir_p("")))
    assert.is_nil((sys.mkdir_p(nil)))
  end)

  it("rm_rf removes exactly the hostile tree named, nothing beside it", function()
    for _, name in ipairs(HOSTILE) do
      local d = fresh()
      -- neighbours a shell would hit by splitting words or expanding globs
      for _, other in ipairs { "a", "b", "line", "break", "it", "s", "keep", "rf" } do assert(sys.mkdir_p(d .. "/" .. other)) end
      assert(sys.mkdir_p(d .. "/" .. name .. "/inner/" .. name))
      H.write_file(d .. "/" .. name .. "/inner/file", "x")
      H.write_file(d .. "/" .. name .. "/" .. name .. "x", "y")
      local before = sys.list_dir(d)
      assert.is_true(sys.rm_rf(d .. "/" .. name))
      local expect = {}
      for _, n in ipairs(before) do if n ~= name then expect[#expect + 1] = n end end
      assert.are.same(expect, sys.list_dir(d))
    end
    no_canary()
  end)

  it("rm_rf removes links without following them, accepts a missing path, refuses /, . and ..", function()
    local d = fresh()
    assert(sys.mkdir_p(d .. "/outside"))
    H.write_file(d .. "/outside/precious", "keep")
    assert(sys.mkdir_p(d .. "/tree"))
    assert(lfs.link(d .. "/outside", d .. "/tree/link", true))
    assert.is_true(sys.rm_rf(d .. "/tree"))
    assert.are.same({ "outside" }, sys.list_dir(d))
    assert.are.equal("keep", H.read_file(d .. "/outside/precious"))
    assert.is_true(sys.rm_rf(d .. "/never-there"))
    for _, bad in ipairs { "", "/", "//", ".", "..", d .. "/.", d .. "/outside/..", d .. "/.." } do
      local ok, err = sys.rm_rf(bad)
      assert.is_nil(ok, bad)
      assert.truthy(err:find("refusing", 1, true) or err:find("non-empty", 1, true), err)
    end
    assert.are.same({ "outside" }, sys.list_dir(d))
  end)

  it("write_atomic writes hostile names exactly, leaves no temporary file and reports failures", function()
    local d = fresh()
    for _, name in ipairs(HOSTILE) do
      assert.is_true(sys.write_atomic(d .. "/" .. name, "old"))
      assert.is_true(sys.write_atomic(d .. "/" .. name, function(f) f:write("new ", name) end))
      assert.are.equal("new " .. name, H.read_file(d .. "/" .. name))
    end
    local sorted = {}
    for i, n in ipairs(HOSTILE) do sorted[i] = n end
    table.sort(sorted)
    assert.are.same(sorted, sys.list_dir(d))
    local ok, err = sys.write_atomic(d .. "/missing/x", "x")
    assert.is_nil(ok)
    assert.truthy(err:find("missing/x.tmp", 1, true), err)
    assert(sys.mkdir_p(d .. "/adir"))
    ok, err = sys.write_atomic(d .. "/adir", "x")              -- rename over a directory fails
    assert.is_nil(ok)
    assert.falsy(sys.exists(d .. "/adir.tmp"))
    no_canary()
  end)

  it("sync_rename puts every file in place in order, and renames none when one is missing", function()
    local d = fresh()
    H.write_file(d .. "/a.tmp", "A")
    H.write_file(d .. "/" .. HOSTILE[2] .. ".tmp", "B")
    H.write_file(d .. "/" .. HOSTILE[2], "old")
    assert.is_true(sys.sync_rename { { d .. "/a.tmp", d .. "/a" }, { d .. "/" .. HOSTILE[2] .. ".tmp", d .. "/" .. HOSTILE[2] } })
    assert.are.equal("A", H.read_file(d .. "/a"))
    assert.are.equal("B", H.read_file(d .. "/" .. HOSTILE[2]))
    assert.are.same({ HOSTILE[2], "a" }, sys.list_dir(d))
    H.write_file(d .. "/c.tmp", "C")
    local ok, err = sys.sync_rename { { d .. "/c.tmp", d .. "/c" }, { d .. "/gone.tmp", d .. "/gone" } }
    assert.is_nil(ok)
    assert.truthy(err:find("gone.tmp", 1, true), err)
    assert.is_true(sys.exists(d .. "/c.tmp"))       -- nothing renamed before every file was synced
    assert.is_false(sys.exists(d .. "/c"))
    no_canary()
  end)

  it("list_dir, exists and is_dir", function()
    local d = fresh()
    for _, n in ipairs { "b", "a", "c" } do H.write_file(d .. "/" .. n, n) end
    assert.are.same({ "a", "b", "c" }, sys.list_dir(d))
    assert.is_nil((sys.list_dir(d .. "/a")))
    assert.is_true(sys.exists(d .. "/a"))
    assert.is_false(sys.is_dir(d .. "/a"))
    assert.is_true(sys.is_dir(d))
    assert.is_false(sys.exists(d .. "/z"))
    assert.are.equal(sys.realpath(tmpdir), sys.realpath(d .. "/../" .. ("case%d"):format(fresh_n) .. "/.."))
    assert.is_nil((sys.realpath(d .. "/z")))
  end)

  it("clock is monotonic seconds", function()
    local a = sys.clock()
    local b = sys.clock()
    assert.is_true(b >= a and a > 0)
    assert.are.equal(sys.clock, facet.clock)
  end)
end)

describe("hostile paths through facet.train and the report", function()
  local function tiny(extra)
    facet.manual_seed(1)
    local X = facet.randn({ 32, 1, 8, 8 }, { seed = 2 })
    local labels = {}
    for i = 1, 32 do labels[i] = i % 4 end
    local net = facet.models.convnet { emb = 8, size = 8 }
    local h = facet.heads.new("am", { classes = 4, dim = 8 })
    local cfg = { model = net, head = h, data = facet.data.tensors { x = X, y = facet.tensor(labels, { dtype = "int64" }),
      batch_size = 4 }, optimizer = facet.optim.sgd({ net, h }, { lr = 0.05 }), epochs = 1, quiet = true }
    for k, v in pairs(extra) do cfg[k] = v end
    return cfg
  end

  it("the checkpoint and log directories are made, pruned and resumed exactly", function()
    for i, name in ipairs { "'$(touch canary)'", "`touch canary` a b", "-rf\nü" } do
      local d = fresh()
      local ck, log = d .. "/" .. name .. "/ckpt", d .. "/" .. name
      facet.train(tiny { checkpoint = ck, checkpoint_every = 3, log = log })    -- steps 3, 6 and the epoch's end, 8
      assert.are.same({ name }, sys.list_dir(d))
      assert.are.same({ "ckpt", "train.jsonl" }, sys.list_dir(log))
      assert.are.same({ "latest", "step-00000006", "step-00000008" }, sys.list_dir(ck))
      assert.are.same({ "model.safetensors", "optim.safetensors", "trainer.json" }, sys.list_dir(ck .. "/step-00000008"))
      local cfg = tiny {}
      assert.are.equal(8, facet.load_checkpoint(ck, cfg.model, cfg.head, cfg.optimizer).step, i)
      local r = facet.train(tiny { resume = ck, checkpoint = ck, epochs = 2, log = log })
      assert.are.equal(16, r.steps)
      assert.are.same({ "latest", "step-00000008", "step-00000016" }, sys.list_dir(ck))
    end
    no_canary()
  end)

  it("report.write and `facet report --out` write into exactly the hostile directory", function()
    local d = fresh()
    local run = d .. "/run $(touch canary)"
    facet.train(tiny { log = run })
    for _, name in ipairs { "'$(touch canary)'", "`touch canary`", "-out dir\n" } do
      local out = d .. "/lib " .. name
      local path = facet.report.write({ run }, out)
      assert.are.equal(out .. "/report.html", path)
      assert.are.same({ "loss.svg", "lr.svg", "report.html" }, sys.list_dir(out))
    end
    local out = d .. "/cli '$(touch canary)' `touch canary`"
    local p = io.popen(("cd %s && luajit %s report %s --out %s 2>&1; echo rc=$?"):format(q(d), q(root .. "/bin/facet"),
      q(run), q(out)))
    local text = p:read("*a")
    p:close()
    assert.truthy(text:find("rc=0", 1, true), text)
    assert.are.same({ "loss.svg", "lr.svg", "report.html" }, sys.list_dir(out))
    assert.is_nil(lfs.attributes(d .. "/canary"), "a command ran")
    no_canary()
  end)
end)

describe("sys.cpu_time", function()
  it("counts this process's CPU seconds: a busy loop adds about its wall time, a sleep almost nothing", function()
    local sys = require "facet.sys"
    -- one thread spinning gains CPU time, never more than the wall time that passed
    local c0, t0 = sys.cpu_time(), sys.clock()
    repeat until sys.cpu_time() - c0 >= 0.1 or sys.clock() - t0 > 10
    local cpu, wall = sys.cpu_time() - c0, sys.clock() - t0
    assert.truthy(cpu >= 0.1 and cpu <= wall + 0.01, ("cpu %g s in %g s"):format(cpu, wall))
    c0 = sys.cpu_time()
    os.execute("sleep 0.2")
    assert.truthy(sys.cpu_time() - c0 < 0.05, sys.cpu_time() - c0)
  end)
end)

describe("sys.read_file", function()
  it("returns the bytes of a file, and nil with a message naming the path when it cannot", function()
    local sys = require "facet.sys"
    local F = require "support.files"
    local dir = F.temp_dir()
    local bytes = "a\0b\r\n\255"
    F.write_file(dir .. "/x", bytes)
    assert.are.equal(bytes, sys.read_file(dir .. "/x"))
    assert.are.equal("", (function() F.write_file(dir .. "/e", ""); return sys.read_file(dir .. "/e") end)())
    local s, err = sys.read_file(dir .. "/missing")
    assert.is_nil(s)
    assert.truthy(err:find("cannot read " .. dir .. "/missing", 1, true), err)
    s, err = sys.read_file(dir)
    assert.is_nil(s)
    assert.are.equal("cannot read " .. dir .. ": Is a directory", err)
    F.remove_dir(dir)
  end)

  it("open_read: a file, or the reason alone (the caller names the path once); a directory is refused", function()
    local sys = require "facet.sys"
    local F = require "support.files"
    local dir = F.temp_dir()
    F.write_file(dir .. "/x", "abc")
    local f = assert(sys.open_read(dir .. "/x"))
    assert.are.equal("abc", f:read("*a"))
    f:close()
    assert.are.same({ nil, "No such file or directory" }, { sys.open_read(dir .. "/missing") })
    assert.are.same({ nil, "Is a directory" }, { sys.open_read(dir) })
    F.remove_dir(dir)
  end)
end)
