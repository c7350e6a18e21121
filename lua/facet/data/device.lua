--- facet.data.to_device(source, device): the data source `source` with its
-- batches on `device` ("cpu" or "cuda"). For "cpu" it is `source` itself.
-- For "cuda", batch(epoch, i) returns the source's batch with every CPU tensor
-- copied into a device buffer kept from step to step (one per position of the
-- returned values, grown only when a batch is bigger than any before, so no
-- device memory is allocated per step); values that are not tensors, or
-- already on the device, pass through. Like the loader's, a batch is valid
-- until the next one. From the loader's page-locked slots the copies are
-- queued without the host waiting (docs/gpu-memory.md), and the loader waits
-- for them before its workers refill a slot. Other methods of the source
-- (stats, close ...) are reachable through the wrapper.
local tensor = require "facet.tensor"
local cuda = require "facet.cuda"

local M = {}

local Source = {}

local function index(self, k)
  local m = Source[k]
  if m ~= nil then return m end
  local f = self.source[k]
  if type(f) ~= "function" then return f end
  local fwd = function(_, ...) return f(self.source, ...) end
  rawset(self, k, fwd)
  return fwd
end

--- The wrapper for any device (spec: opts.copy_same_device copies even the
-- tensors already there, to test the buffers on the CPU).
function M.wrap(source, device, opts)
  if type(source) ~= "table" or type(source.num_batches) ~= "function" or type(source.batch) ~= "function" then
    error("facet.data.to_device: source must have num_batches() and batch(epoch, i)", 2)
  end
  opts = opts or {}
  return setmetatable({ source = source, device = device, buffers = {}, allocations = 0,
    copy_same = opts.copy_same_device or false }, { __index = index })
end

function M.to_device(source, device)
  if device == "cpu" then
    if type(source) ~= "table" or type(source.batch) ~= "function" then
      error("facet.data.to_device: source must have num_batches() and batch(epoch, i)", 2)
    end
    return source
  end
  if device ~= "cuda" then error(("facet.data.to_device: unknown device '%s' (cpu, cuda)"):format(tostring(device)), 2) end
  if not cuda.available() then
    error("facet.data.to_device: device 'cuda' requested but no CUDA device is available", 2)
  end
  local ok, w = pcall(M.wrap, source, device)
  if not ok then error(w, 2) end
  return w
end

function Source:num_batches() return self.source:num_batches() end

-- the reused buffer of value k for tensor t: same dtype and trailing dims, and
-- at least t's rows; a narrowed view when t has fewer (the short last batch)
local function buffer_for(self, k, t)
  local shape, dtype = t:shape(), t:dtype()
  local b = self.buffers[k]
  local fits = b ~= nil and b.dtype == dtype and #b.shape == #shape and (#shape == 0 or b.shape[1] >= shape[1])
  if fits then
    for d = 2, #shape do
      if b.shape[d] ~= shape[d] then fits = false; break end
    end
  end
  if not fits then
    -- the old buffer's memory goes back to the cache once the last batch
    -- handed out from it is collected
    b = { t = tensor.empty(shape, { dtype = dtype, device = self.device }), shape = shape, dtype = dtype }
    self.buffers[k] = b
    self.allocations = self.allocations + 1
  end
  if #shape == 0 or shape[1] == b.shape[1] then return b.t end
  return b.t:narrow(1, 1, shape[1])
end

local function move(self, k, v)
  if not tensor.is_tensor(v) or (not self.copy_same and v:device() == self.device) then return v end
  local dst = buffer_for(self, k, v)
  dst:copy(v)
  return dst
end

local function move_all(self, k, v, ...)
  if select("#", ...) == 0 then return move(self, k, v) end
  return move(self, k, v), move_all(self, k + 1, ...)
end

--- The source's batch i of epoch e with its tensors on the device.
function Source:batch(epoch, i)
  return move_all(self, 1, self.source:batch(epoch, i))
end

return M
