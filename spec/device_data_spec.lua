--- facet.data.to_device: the identity for the CPU; for a device, batches whose
-- tensors are copied into buffers kept from step to step. The buffer logic is
-- exercised on the CPU through the wrapper's test option (copy even tensors
-- already on the device); the cases marked [gpu] need a CUDA device.
local H = require "support.device"
local facet = H.facet
local device = require "facet.data.device"

local gpu_it = H.gpu_it

-- 10 samples of 2 x 3, batches of 4 (the last one short when drop_last is false)
local function tensors_source(drop_last)
  local x = facet.arange(0, 60):reshape { 10, 2, 3 }
  local y = facet.arange(0, 10):long()
  return facet.data.tensors { x = x, y = y, batch_size = 4, shuffle = true, seed = 3, drop_last = drop_last }
end

local function png_source(n)
  local f = assert(io.open("spec/fixtures/images/rgb_3x4.png", "rb"))
  local png = f:read("*a")
  f:close()
  local imgs, labels = {}, {}
  for i = 1, n do imgs[i], labels[i] = png, i - 1 end
  return { images = imgs, labels = labels }
end

describe("facet.data.to_device", function()
  it("is the source itself for the CPU", function()
    local src = tensors_source(true)
    assert.are.equal(src, facet.data.to_device(src, "cpu"))
  end)

  it("rejects an unknown device and a table that is no source", function()
    local src = tensors_source(true)
    assert.has_error(function() facet.data.to_device(src, "tpu") end,
      "facet.data.to_device: unknown device 'tpu' (cpu, cuda)")
    assert.has_error(function() device.wrap({}, "cuda") end,
      "facet.data.to_device: source must have num_batches() and batch(epoch, i)")
  end)

  it("asks for a CUDA device when there is none", function()
    if facet.cuda.available() then return end
    assert.has_error(function() facet.data.to_device(tensors_source(true), "cuda") end,
      "facet.data.to_device: device 'cuda' requested but no CUDA device is available")
  end)

  it("copies each batch into buffers it keeps: same values, same memory every step", function()
    local src, ref = tensors_source(false), tensors_source(false)
    local w = device.wrap(src, "cpu", { copy_same_device = true })
    assert.are.equal(3, w:num_batches())
    local px, py
    for epoch = 0, 1 do
      for i = 1, 3 do
        local x, y = w:batch(epoch, i)
        local rx, ry = ref:batch(epoch, i)
        assert.are.same(rx:shape(), x:shape())
        assert.are.same(H.values(rx), H.values(x))
        assert.are.same(H.values(ry), H.values(y))
        assert.are.equal("int64", y:dtype())
        -- the short last batch (2 rows) is a view of the same buffer
        if px then
          assert.are.equal(px, tostring(x:data_ptr()))
          assert.are.equal(py, tostring(y:data_ptr()))
        end
        px, py = tostring(x:data_ptr()), tostring(y:data_ptr())
      end
    end
    assert.are.equal(2, w.allocations)              -- one buffer for x, one for y, ever
  end)

  it("a bigger batch or another shape gets a new buffer; other values pass through", function()
    local sizes = { 2, 5, 3, 5 }
    local fake = {
      num_batches = function() return #sizes end,
      batch = function(_, _, i)
        return facet.full({ sizes[i], 2 }, i), "label " .. i, 42
      end,
      stats = function(self) return self.tag end,
      tag = "the source's own",
    }
    local w = device.wrap(fake, "cpu", { copy_same_device = true })
    for i = 1, 4 do
      local x, s, n = w:batch(0, i)
      assert.are.same({ sizes[i], 2 }, x:shape())
      assert.are.equal(i, H.values(x)[1])
      assert.are.equal("label " .. i, s)
      assert.are.equal(42, n)
    end
    assert.are.equal(2, w.allocations)              -- 2 rows, then 5 (3 fits in 5)
    assert.are.equal("the source's own", w:stats())  -- other methods reach the source
  end)

  it("tensors already on the device pass through untouched", function()
    local src = tensors_source(true)
    local w = device.wrap(src, "cpu")
    local x = w:batch(0, 1)
    local rx = src:batch(0, 1)
    assert.are.equal(tostring(rx:data_ptr()), tostring(x:data_ptr()))
    assert.are.equal(0, w.allocations)
  end)

  it("wraps the threaded loader: the same batches, epoch after epoch", function()
    local opts = { size = { 3, 4 }, batch_size = 4, threads = 2, queue = 2, seed = 5 }
    opts.source = png_source(10)
    local L = facet.data.loader(opts)
    local R = facet.data.loader(opts)
    local w = device.wrap(L, "cpu", { copy_same_device = true })
    for epoch = 0, 1 do
      for i = 1, w:num_batches() do
        local x, y = w:batch(epoch, i)
        local rx, ry = R:batch(epoch, i)
        assert.are.same(H.values(rx), H.values(x))
        assert.are.same(H.values(ry), H.values(y))
      end
    end
    assert.are.equal(2, w.allocations)
    assert.are.equal(L:stats().delivered, w:stats().delivered)
  end)

  gpu_it("puts the loader's batches on the GPU without allocating per step", function()
    local opts = { size = { 3, 4 }, batch_size = 4, threads = 2, queue = 2, seed = 5, drop_last = false }
    opts.source = png_source(10)
    local w = facet.data.to_device(facet.data.loader(opts), "cuda")
    local R = facet.data.loader(opts)
    local allocs
    for epoch = 0, 2 do
      for i = 1, w:num_batches() do
        local x, y = w:batch(epoch, i)
        assert.are.equal("cuda", x:device())
        assert.are.equal("cuda", y:device())
        local rx, ry = R:batch(epoch, i)
        assert.are.same(rx:shape(), x:shape())
        assert.are.same(H.values(rx), H.values(x))
        assert.are.same(H.values(ry), H.values(y))
        if epoch == 1 and i == 1 then allocs = facet.cuda.memory_stats().allocs end
      end
    end
    assert.are.equal(2, w.allocations)
    -- only H.values' copies back to the host allocate (none on the device)
    assert.are.equal(allocs, facet.cuda.memory_stats().allocs)
  end)

  gpu_it("queued copies finish before the loader refills a slot", function()
    -- a queue of 1 slot: the workers refill the very memory just copied from
    local opts = { size = { 8, 8 }, batch_size = 16, threads = 2, queue = 1, seed = 1 }
    opts.source = png_source(64)
    local w = facet.data.to_device(facet.data.loader(opts), "cuda")
    local R = facet.data.loader(opts)
    local kept = {}
    for i = 1, w:num_batches() do
      local x = w:batch(0, i)
      kept[i] = x:clone()                   -- device-to-device, queued after the copy
    end
    for i = 1, #kept do assert.are.same(H.values(R:batch(0, i)), H.values(kept[i])) end
  end)
end)
