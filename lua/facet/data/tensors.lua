--- facet.data.tensors{ x = X, y = Y, batch_size = 32, shuffle = true, seed = 0,
-- drop_last = true }: batches of in-memory tensors (X: N x ..., Y: N labels).
-- The order of an epoch is a permutation drawn from (seed, epoch) alone, so
-- any batch can be produced again (checkpoints resume mid-epoch exactly).
-- Batches are gathered into two reused buffers: a batch is valid until the next.
-- src:shard(rank, world) -> the part of rank (0-based) of world ranks: its
-- batch i holds rows [rank b, (rank + 1) b) of the source's batch i, with
-- b = batch size / world (every batch's size must divide by world), so the
-- ranks together see exactly the batches of the unsharded source
-- (facet.train{ dist = true }).
local tensor = require "facet.tensor"
local core = require "facet.core"

local C, check = core.C, core.check
local Source = {}
Source.__index = Source

local function new(opts)
  if type(opts) ~= "table" or not tensor.is_tensor(opts.x) or not tensor.is_tensor(opts.y) then
    error("facet.data.tensors{ x = tensor, y = labels, batch_size = n }", 2)
  end
  local n = opts.x:size(1)
  if opts.y:dim() ~= 1 or opts.y:numel() ~= n then
    error(("facet.data.tensors: %d samples but %d labels"):format(n, opts.y:numel()), 2)
  end
  local bs = opts.batch_size or 32
  if type(bs) ~= "number" or bs < 1 or bs ~= math.floor(bs) then error("facet.data.tensors: bad batch_size", 2) end
  local self = setmetatable({
    x = opts.x:contiguous(), y = opts.y:contiguous(), n = n, batch_size = math.min(bs, n),
    shuffle = opts.shuffle ~= false, seed = opts.seed or 0, drop_last = opts.drop_last ~= false,
  }, Source)
  if self.x:dtype() ~= "float32" then error("facet.data.tensors: x must be float32", 2) end
  local shape = self.x:shape()
  self.row = 1
  for i = 2, #shape do self.row = self.row * shape[i] end
  self.flat = self.x:reshape { n, self.row }
  self.labels = self.y:to("cpu"):long()          -- gathered on the host: B values a batch
  self.device = self.x:device()
  self.sample_shape = shape
  return self
end

local valid = require "facet.check"

function Source:shard(rank, world)
  valid.integer("facet.data.tensors:shard", "world", world, { min = 1, max = 1e6 })
  valid.integer("facet.data.tensors:shard", "rank", rank, { min = 0, max = world - 1 })
  if self.shard_world then valid.fail("facet.data.tensors:shard", "this source is a shard already") end
  local last = self.n - (self:num_batches() - 1) * self.batch_size
  if self.batch_size % world ~= 0 or last % world ~= 0 then
    valid.fail("facet.data.tensors:shard", ("the batch size %d%s does not divide among %d ranks"):format(self.batch_size,
      last ~= self.batch_size and (" (last batch " .. last .. ")") or "", world))
  end
  local s = setmetatable({}, Source)
  for _, k in ipairs { "x", "y", "n", "batch_size", "shuffle", "seed", "drop_last", "row", "flat", "labels", "device",
    "sample_shape" } do s[k] = self[k] end
  s.shard_rank, s.shard_world = rank, world
  return s
end

function Source:num_batches()
  if self.drop_last then return math.floor(self.n / self.batch_size) end
  return math.ceil(self.n / self.batch_size)
end

-- the order of an epoch: Fisher-Yates driven by one Philox draw of (seed, epoch)
function Source:order(epoch)
  valid.integer("facet.data.tensors:order", "epoch", epoch, { min = 0, max = 2 ^ 31 - 1 })
  if self._order_epoch == epoch then return self._order end
  local perm = {}
  for i = 1, self.n do perm[i] = i end
  if self.shuffle then
    local u = tensor.rand({ self.n }, { seed = self.seed * 1000003 + epoch }):data_ptr()
    for i = self.n, 2, -1 do
      local j = math.floor(u[i - 1] * i) + 1
      perm[i], perm[j] = perm[j], perm[i]
    end
  end
  self._order, self._order_epoch = perm, epoch
  return perm
end

function Source:batch(epoch, i)
  local nb = self:num_batches()
  valid.integer("facet.data.tensors:batch", "epoch", epoch, { min = 0, max = 2 ^ 31 - 1 })
  valid.integer("facet.data.tensors:batch", "i", i, { min = 1, max = nb })
  local first = (i - 1) * self.batch_size
  local b = math.min(self.batch_size, self.n - first)
  if self.shard_world then
    b = b / self.shard_world
    first = first + self.shard_rank * b
  end
  local perm = self:order(epoch)
  if not self.idx or self.idx:numel() ~= b then
    self.idx_host = tensor.empty({ b }, { dtype = "int32" })
    self.idx = self.device == "cpu" and self.idx_host or tensor.empty({ b }, { dtype = "int32", device = self.device })
    self.y_host = tensor.empty({ b }, { dtype = "int64" })
    self.yb = self.device == "cpu" and self.y_host or tensor.empty({ b }, { dtype = "int64", device = self.device })
    local shape = { b }
    for d = 2, #self.sample_shape do shape[d] = self.sample_shape[d] end
    self.xb = tensor.empty(shape, { device = self.device })
    self.xb_flat = self.xb:reshape { b, self.row }
  end
  local ip, yp, lp = self.idx_host:data_ptr(), self.y_host:data_ptr(), self.labels:data_ptr()
  for k = 0, b - 1 do
    local s = perm[first + k + 1]
    ip[k] = s
    yp[k] = lp[s - 1]
  end
  if self.idx ~= self.idx_host then self.idx:copy(self.idx_host); self.yb:copy(self.y_host) end
  check(C.facet_tensor_index_select(self.xb_flat.h, self.flat.h, self.idx.h, 1))
  return self.xb, self.yb
end

valid.methods(Source, "source", "a facet.data.tensors source")

return new
