--- Lifetimes under hostile use: objects that others hold stay alive, and a
-- closed or freed object (RecordIO reader, .bin file, loader, head, tensor)
-- refuses use with an error naming the object and the method, never a crash.
-- Every case that could crash (a use after free in C) runs in its own luajit
-- process against this build (under `make sanitize` that process carries
-- ASan and UBSan too), prints what it saw, and the spec compares the lines:
-- a crash shows up as a non-zero exit and a missing "done".
local H = require "support.device"
local F = require "support.files"

local build = os.getenv("FACET_BUILD") or "build"
local scratch = F.scratch()

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- what a fresh luajit prints running PRELUDE .. code (stdout and stderr), and its exit status
local PRELUDE = [[
local facet = require "facet"
local ffi = require "ffi"
local function say(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
  io.write(table.concat(t, " "), "\n")
end
-- the message of the error f raises (without the file:line prefix), or "no error"
local function err(f, ...)
  local ok, e = pcall(f, ...)
  if ok then return "no error" end
  return (tostring(e):gsub("^[^\n]-:%d+: ", ""))
end
local function values(t)
  local c = t:to("cpu"):contiguous()
  local p, r = c:data_ptr(), {}
  for i = 0, c:numel() - 1 do r[#r + 1] = tostring(tonumber(p[i])) end
  return table.concat(r, ",")
end
local png = io.open("spec/fixtures/images/rgb_3x4.png", "rb"):read("*a")
local jpg = io.open("spec/fixtures/images/smooth_16x24.jpg", "rb"):read("*a")
local function make_rec(prefix, n)
  local w = facet.data.recordio_writer(prefix)
  for i = 1, n do w:write(i - 1, (i - 1) % 4, i % 2 == 0 and jpg or png) end
  w:close()
end
local function loader_on(rec)
  return facet.data.loader { source = rec, size = { 6, 6 }, batch_size = 4, shuffle = false, flip = 0, threads = 2 }
end
-- every batch of epoch 0 as one string
local function epoch(L)
  local parts = {}
  for i = 1, L:num_batches() do
    local x, y = L:batch(0, i)
    parts[#parts + 1] = values(x) .. "|" .. values(y)
  end
  return table.concat(parts, ";")
end
]]

local function fresh(code)
  local cmd = ("LUA_PATH='./lua/?.lua;./lua/?/init.lua;./%s/lua/?.lua;;' LUA_CPATH='./%s/?.so;;' luajit -e %s 2>&1; echo \"rc=$?\"")
    :format(build, build, shell_quote(PRELUDE .. code))
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return out:gsub("rc=%d+%s*$", ""), rc
end

-- runs code in a fresh process; it must exit 0 and print exactly the lines expected, then "done"
local function expect(code, lines)
  local out, rc = fresh(code .. '\nsay("done")\n')
  assert.are.equal(0, rc, out)
  lines[#lines + 1] = "done"
  assert.are.equal(table.concat(lines, "\n") .. "\n", out)
end

local function rec_path(name) return ("%q"):format(scratch(name)) end

describe("a loader and its RecordIO reader", function()
  it("rec:close() while a loader reads is deferred: the batches stay exact, the reader refuses use", function()
    expect(([[
      local p = %s
      make_rec(p, 10)
      local ref = epoch(loader_on(facet.data.recordio(p)))
      local rec = facet.data.recordio(p)
      local L = loader_on(rec)
      L:batch(0, 1)
      rec:close()
      say(err(rec.label, rec, 1))
      say(err(rec.image_bytes, rec, 2))
      say(err(rec.num_images, rec))
      say(rec.users, rec.closing ~= nil)
      collectgarbage(); collectgarbage()
      say(epoch(L) == ref)
      L:close()
      say(rec.users, rec.closing == nil)
      rec:close()
    ]]):format(rec_path("a")), {
      "recordio:label: the reader is closed",
      "recordio:image_bytes: the reader is closed",
      "recordio:num_images: the reader is closed",
      "1 true", "true", "0 true" })
  end)

  it("the GC never collects a reader a live loader uses", function()
    expect(([[
      local p = %s
      make_rec(p, 9)
      local ref = epoch(loader_on(facet.data.recordio(p)))
      local L = loader_on(facet.data.recordio(p))     -- nothing else holds the reader
      for _ = 1, 3 do collectgarbage() end
      say(epoch(L) == ref)
      L:batch(0, 2)                                     -- workers running while the GC runs
      for _ = 1, 3 do collectgarbage() end
      say(L:stats().delivered)
    ]]):format(rec_path("b")), { "true", "12" })      -- 8 in the epoch, 4 more
  end)

  it("a reader closed under a loader that is then collected closes its file then", function()
    expect(([[
      local p = %s
      make_rec(p, 8)
      local rec = facet.data.recordio(p)
      local L = loader_on(rec)
      L:batch(0, 1)
      rec:close()
      say(rec.users, rec.closing ~= nil)
      L = nil
      for _ = 1, 3 do collectgarbage() end
      say(rec.users, rec.closing == nil)
      rec:close()
    ]]):format(rec_path("c")), { "1 true", "0 true" })
  end)

  it("loader and reader dropped together in the middle of an epoch", function()
    expect(([[
      local p = %s
      make_rec(p, 12)
      for round = 1, 5 do
        local rec = facet.data.recordio(p)
        local L = loader_on(rec)
        L:batch(0, 1)
        if round %% 2 == 0 then rec:close() end
        rec, L = nil, nil
        collectgarbage(); collectgarbage()
      end
      say("survived")
    ]]):format(rec_path("d")), { "survived" })
  end)

  it("two loaders on one reader: the file closes after the last", function()
    expect(([[
      local p = %s
      make_rec(p, 8)
      local rec = facet.data.recordio(p)
      local A, B = loader_on(rec), loader_on(rec)
      rec:close()
      A:close()
      say(rec.users, rec.closing ~= nil)
      local x, y = B:batch(0, 2)
      say(values(y))
      B:close()
      say(rec.users, rec.closing == nil)
    ]]):format(rec_path("e")), { "1 true", "0,1,2,3", "0 true" })
  end)

  it("a closed reader cannot make a loader; a table that only looks like one is refused", function()
    expect(([[
      local p = %s
      make_rec(p, 8)
      local rec = facet.data.recordio(p)
      rec:close()
      say(err(loader_on, rec))
      say(err(loader_on, { h = ffi.cast("void *", 8), num_images = function() return 8 end }))
      say(rec.users)
    ]]):format(rec_path("f")), {
      "facet.data.loader: the recordio reader is closed",
      "facet.data.loader: source has a handle but is not a facet.data.recordio reader",
      "0" })
  end)

  it("a loader that fails to start gives its reference back", function()
    expect(([[
      local p = %s
      make_rec(p, 4)
      local rec = facet.data.recordio(p)
      say(err(facet.data.loader, { source = rec, batch_size = 8 }):match("make no batch") ~= nil)
      say(rec.users)
      rec:close()
      say(rec.closing == nil)
    ]]):format(rec_path("g")), { "true", "0", "true" })
  end)
end)

describe("a closed loader", function()
  it("refuses every method by name; the last batch handed out stays valid", function()
    expect([[
      local imgs, labels = {}, {}
      for i = 1, 8 do imgs[i], labels[i] = png, i - 1 end
      local L = facet.data.loader { source = { images = imgs, labels = labels }, size = { 3, 4 }, batch_size = 4,
        shuffle = false, flip = 0 }
      local x, y = L:batch(0, 2)
      local before = values(x) .. values(y)
      L:close()
      L:close()
      say(err(L.batch, L, 0, 1))
      say(err(L.stats, L))
      say(err(L.num_batches, L))
      collectgarbage(); collectgarbage()
      say(values(x) .. values(y) == before, values(y))
      say(err(L.batch, 5, 0, 1))
    ]], {
      "loader:batch: the loader is closed",
      "loader:stats: the loader is closed",
      "loader:num_batches: the loader is closed",
      "true 4,5,6,7",
      "loader:batch: call it with ':' on a loader; self is 5" })
  end)

  it("refuses an epoch that is not an integer >= 0 before starting workers", function()
    expect([[
      local L = facet.data.loader { source = { images = { png, png }, labels = { 0, 1 } }, size = { 3, 4 }, batch_size = 1 }
      say(err(L.batch, L, -1, 1))
      say(err(L.batch, L, 0.5, 1))
      local _, y = L:batch(0, 1)
      say(L:stats().delivered)
    ]], {
      "loader:batch: epoch -1 is not an integer >= 0",
      "loader:batch: epoch 0.5 is not an integer >= 0",
      "1" })
  end)
end)

describe("a .bin file opened with binfile.open", function()
  it("reads pair by pair, then refuses every method once closed", function()
    expect([[
      local binfile = require "facet.data.binfile"
      local f = binfile.open("spec/fixtures/bin/p2_str.bin")
      say(f:pairs(), f:issame(1), f:issame(2), f:image_size(1), #f:image_bytes(3))
      say(err(f.issame, f, 4))
      say(err(f.image_bytes, f, 7))
      f:close()
      f:close()
      say(err(f.pairs, f))
      say(err(f.issame, f, 1))
      say(err(f.image_bytes, f, 1))
      say(err(f.image_size, f, 1))
      collectgarbage()
    ]], {
      "3 true false 4 300",
      "binfile:issame: pair 4 outside 1..3",
      "binfile:image_bytes: image 7 outside 1..6",
      "binfile:pairs: the file is closed",
      "binfile:issame: the file is closed",
      "binfile:image_bytes: the file is closed",
      "binfile:image_size: the file is closed" })
  end)

  it("load_bin closes its file even when a read fails, and says why", function()
    expect([[
      local binfile = require "facet.data.binfile"
      local v = binfile.load("spec/fixtures/bin/p3_bytes.bin", { decode = false })
      say(v.pairs, #v.images, v.issame[2])
      say(err(binfile.load, "spec/fixtures/bin/truncated.bin", { decode = false }):match("^load_bin") == nil)
      collectgarbage()
    ]], { "3 6 true", "true" })
  end)
end)

describe("freed tensors", function()
  it("a view keeps the storage of a freed tensor; the freed one names the method", function()
    expect([[
      local t = facet.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
      local row = t:select(1, 2)
      local flat = t:reshape({ 6 })
      t:free()
      t:free()
      collectgarbage(); collectgarbage()
      say(values(row), values(flat), t:is_freed())
      say(err(function() local s = t:sum() return s end))
      say(err(function() local c = t:clone() return c end))
      say(err(function() local v = t:narrow(1, 1, 1) return v end))
      say(err(function() row:copy(t) end))
      say(values(row))
    ]], {
      "4,5,6 1,2,3,4,5,6 true",
      "tensor:sum: the tensor was freed (t:free())",
      "tensor:clone: the tensor was freed (t:free())",
      "tensor:narrow: the tensor was freed (t:free())",
      "tensor:copy: the tensor was freed (t:free())",
      "4,5,6" })
  end)

  it("a module whose weight was freed refuses forward, naming itself and the tensor", function()
    expect([[
      local lin = facet.nn.Linear(3, 2)
      local net = facet.nn.Sequential(lin, facet.nn.ReLU())
      local x = facet.ones({ 4, 3 })
      net:forward(x)
      lin.weight:free()
      say(err(lin.forward, lin, x))
      say(err(net.forward, net, x))
      say(err(lin.backward, lin, x, facet.ones({ 4, 2 })))
      lin.grad_bias:free()
      lin.weight = facet.zeros({ 2, 3 })
      say(err(lin.forward, lin, x))
      local y = facet.ones({ 4, 3 }); y:free()
      say(err(facet.nn.ReLU().forward, facet.nn.ReLU(), y))
    ]], {
      "Linear:forward: weight was freed",
      "In Sequential (1) Linear(3->2): Linear:forward: weight was freed",
      "Linear:backward: weight was freed",
      "Linear:forward: grad_bias was freed",
      "ReLU:forward: the input was freed" })
  end)

  it("BatchNorm: a freed running statistic refuses forward; backward before forward refuses", function()
    expect([[
      local bn = facet.nn.BatchNorm1d(2)
      say(err(bn.backward, bn, facet.ones({ 3, 2 }), facet.ones({ 3, 2 })))
      bn.running_var:free()
      say(err(bn.forward, bn, facet.ones({ 3, 2 })))
      say(values(bn.running_mean))
    ]], {
      "BatchNorm1d:backward: no forward to go back through",
      "BatchNorm1d:forward: running_var was freed",
      "0,0" })
  end)

  it("an optimizer whose gradient or buffer was freed refuses the step and changes nothing", function()
    expect([[
      local a, b = facet.tensor { 1, 2 }, facet.tensor { 3, 4 }
      local ga, gb = facet.tensor { 1, 1 }, facet.tensor { 1, 1 }
      local opt = facet.optim.sgd({ params = { a, b }, grads = { ga, gb } }, { lr = 0.5, momentum = 0.9 })
      opt:step()
      say(values(a), values(b))
      gb:free()
      say(err(opt.step, opt))
      say(values(a), values(b), values(opt.list[1].momentum_buffer), opt.step_count)
      opt.list[2].grad = facet.tensor { 2, 2 }
      opt.list[1].momentum_buffer:free()
      say(err(opt.step, opt))
      say(values(a), values(b), opt.step_count)
    ]], {
      "0.5,1.5 2.5,3.5",
      "sgd:step: parameter 2: its grad was freed",
      "0.5,1.5 2.5,3.5 1,1 1",
      "sgd:step: parameter 1: its momentum_buffer was freed",
      "0.5,1.5 2.5,3.5 1" })
  end)
end)

describe("a freed head", function()
  it("refuses forward, backward and the rest by name; its parameters stay usable", function()
    expect([[
      local head = facet.heads.new("arc", { classes = 4, dim = 3, seed = 1 })
      local x, y = facet.randn({ 2, 3 }, { seed = 2 }), facet.tensor({ 0, 3 }, { dtype = "int64" })
      head:forward(x, y)
      local w = values(head.weight)
      head:free()
      head:free()
      collectgarbage(); collectgarbage()
      say(head:is_freed())
      say(err(head.forward, head, x, y))
      say(err(head.backward, head))
      say(err(head.zero_grad, head))
      say(err(head.named_parameters, head))
      say(err(head.finish_grad, head))
      say(err(head.to, head, "cpu"))
      say(values(head.weight) == w)
      head:weight_changed(true)                    -- what an optimizer calls: harmless
    ]], {
      "true",
      "arc:forward: the head was freed (head:free())",
      "arc:backward: the head was freed (head:free())",
      "arc:zero_grad: the head was freed (head:free())",
      "arc:named_parameters: the head was freed (head:free())",
      "arc:finish_grad: the head was freed (head:free())",
      "arc:to: the head was freed (head:free())",
      "true" })
  end)

  it("an optimizer made before head:free() still steps the parameters it holds", function()
    expect([[
      local head = facet.heads.new("am", { classes = 3, dim = 2, seed = 1, fused = true })
      local opt = facet.optim.sgd(head, { lr = 1 })
      head.grad_weight:fill_(1)
      local before = head.weight:clone()
      head:free()
      opt:step()
      say(values(head.weight) == values(before:add(-1)))
    ]], { "true" })
  end)

  it("a parameter freed by hand makes forward refuse before anything is written", function()
    expect([[
      local head = facet.heads.new("softmax", { classes = 4, dim = 3, seed = 1 })
      local x, y = facet.randn({ 2, 3 }, { seed = 2 }), facet.tensor({ 0, 3 }, { dtype = "int64" })
      head.bias:free()
      say(err(head.forward, head, x, y))
      say(head.iter, head.buf == nil)
      head.bias = facet.zeros({ 4 })
      head:forward(x, y)
      x:free()
      say(err(head.backward, head))
      local x2 = facet.randn({ 2, 3 }, { seed = 2 }); x2:free()
      say(err(head.forward, head, x2, y))
    ]], {
      "softmax:forward: head.bias was freed",
      "0 true",
      "softmax:backward: the x of the forward was freed",
      "softmax:forward: x was freed" })
  end)

  it("freed labels are refused", function()
    expect([[
      local head = facet.heads.new("am", { classes = 4, dim = 3 })
      local y = facet.tensor({ 0, 1 }, { dtype = "int64" }); y:free()
      say(err(head.forward, head, facet.ones({ 2, 3 }), y))
    ]], { "am:forward: the labels tensor was freed" })
  end)
end)

describe("the RecordIO writer", function()
  it("refuses writes after close; closing twice is harmless", function()
    expect(([[
      local w = facet.data.recordio_writer(%s)
      w:write(0, 1, "abc")
      w:close()
      w:close()
      say(err(w.write, w, 1, 1, "x"))
      collectgarbage()
      local r = facet.data.recordio(%s)
      say(r:num_images(), r:image_bytes(1))
    ]]):format(rec_path("w"), rec_path("w")), { "recordio_writer:write: the writer is closed", "1 abc" })
  end)
end)
