--- support/local_group.lua: W simulated ranks in one process, for specs of
-- code written against facet.dist's group contract:
--   g:rank() (0-based), g:size(), g:barrier(), g:allreduce(t, op) (in place,
--   op "sum" | "avg" | "max" | "min", returns t), g:allgather(t [, counts])
--   (a new tensor: the ranks' tensors along dim 1; counts: each rank's
--   size(1)), g:reduce_scatter(t, op) (a new tensor of size(1)/W rows, rank
--   r gets rows [r n, (r + 1) n)), g:broadcast(t, root) (in place).
--
--   local results = local_group.run(W, function(g) ... return value end)
--
-- runs the function once per rank, each in a coroutine. A collective yields
-- to the scheduler; once every rank waits in one, the scheduler checks that
-- they match (the same collective, op, root, dtype, and shapes that fit) and
-- computes the result, summing in rank order, so runs are deterministic.
-- float16/bfloat16 tensors reduce as facet.dist's MPI path does: facet's
-- 16-bit add_/maximum_/minimum_ widen each pair to float32 and round once
-- (max/min: a NaN loses to a number), and avg multiplies the sum by 1/W
-- (spec/dist_spec.lua checks both against the same hand-computed bits).
-- A mismatch, a rank that returns while others wait, or an error in a rank
-- raises an error naming the rank. Returns the ranks' return values, by rank
-- (index 1 is rank 0).
local tensor = require "facet.tensor"

local M = {}

local Group = {}
Group.__index = Group

function Group:rank() return self._rank end
function Group:size() return self._size end

local function call(self, req)
  req.rank = self._rank
  return coroutine.yield(req)
end

function Group:barrier() return call(self, { kind = "barrier" }) end
function Group:allreduce(t, op) return call(self, { kind = "allreduce", t = t, op = op }) end
function Group:allgather(t, counts) return call(self, { kind = "allgather", t = t, counts = counts }) end
function Group:reduce_scatter(t, op) return call(self, { kind = "reduce_scatter", t = t, op = op }) end
function Group:broadcast(t, root) return call(self, { kind = "broadcast", t = t, root = root }) end

local OPS = { sum = true, avg = true, max = true, min = true }

local function shape_of(t) return table.concat(t:shape(), "x") end

-- an error unless the W requests form one collective
local function check_match(reqs, W)
  local r0 = reqs[1]
  for r = 1, W do
    local q = reqs[r]
    local function bad(msg) error(("local_group: rank %d in %s: %s"):format(r - 1, q.kind, msg), 0) end
    if q.kind ~= r0.kind then bad("rank 0 is in " .. r0.kind) end
    if q.kind ~= "barrier" then
      if not tensor.is_tensor(q.t) then bad("not a tensor") end
      if q.t:dtype() ~= r0.t:dtype() then bad(("dtype %s, rank 0 has %s"):format(q.t:dtype(), r0.t:dtype())) end
    end
    if q.kind == "allreduce" or q.kind == "reduce_scatter" then
      if not OPS[q.op] then bad("unknown op " .. tostring(q.op)) end
      if q.op ~= r0.op then bad(("op %s, rank 0 has %s"):format(q.op, r0.op)) end
      if shape_of(q.t) ~= shape_of(r0.t) then bad(("shape %s, rank 0 has %s"):format(shape_of(q.t), shape_of(r0.t))) end
    elseif q.kind == "broadcast" then
      if q.root ~= r0.root or type(q.root) ~= "number" or q.root < 0 or q.root >= W then
        bad("roots differ or out of range")
      end
      if shape_of(q.t) ~= shape_of(r0.t) then bad(("shape %s, rank 0 has %s"):format(shape_of(q.t), shape_of(r0.t))) end
    elseif q.kind == "allgather" then
      local want = q.counts and q.counts[r] or r0.t:size(1)
      if q.t:size(1) ~= want then bad(("%d rows, want %d"):format(q.t:size(1), want)) end
      local a, b = q.t:shape(), r0.t:shape()
      table.remove(a, 1); table.remove(b, 1)
      if table.concat(a, "x") ~= table.concat(b, "x") then bad("trailing shapes differ") end
    end
  end
end

-- the reduction of the W tensors, in rank order, as a new tensor
local function reduce(reqs, op)
  local acc = reqs[1].t:clone()
  for r = 2, #reqs do
    local t = reqs[r].t
    if op == "sum" or op == "avg" then acc:add_(t)
    elseif op == "max" then acc:maximum_(t)
    else acc:minimum_(t) end
  end
  if op == "avg" then acc:mul_(1 / #reqs) end
  return acc
end

-- the results of one collective, by rank
local function collective(reqs, W)
  local kind, out = reqs[1].kind, {}
  if kind == "barrier" then return out end
  if kind == "allreduce" then
    local acc = reduce(reqs, reqs[1].op)
    for r = 1, W do out[r] = reqs[r].t:copy(acc) end
  elseif kind == "broadcast" then
    local src = reqs[reqs[1].root + 1].t:clone()
    for r = 1, W do out[r] = reqs[r].t:copy(src) end
  elseif kind == "allgather" then
    local n = 0
    for r = 1, W do n = n + reqs[r].t:size(1) end
    local shape = reqs[1].t:shape()
    shape[1] = n
    for r = 1, W do
      local g = tensor.empty(shape, { dtype = reqs[1].t:dtype(), device = reqs[1].t:device() })
      local at = 1
      for q = 1, W do
        local m = reqs[q].t:size(1)
        if m > 0 then g:narrow(1, at, m):copy(reqs[q].t) end
        at = at + m
      end
      out[r] = g
    end
  else -- reduce_scatter
    local rows = reqs[1].t:size(1)
    if rows % W ~= 0 then error(("local_group: reduce_scatter of %d rows over %d ranks"):format(rows, W), 0) end
    local acc = reduce(reqs, reqs[1].op)
    local n = math.floor(rows / W)
    for r = 1, W do out[r] = acc:narrow(1, (r - 1) * n + 1, n):clone() end
  end
  return out
end

--- Runs fn(g) on W simulated ranks; returns their results by rank.
function M.run(W, fn)
  assert(type(W) == "number" and W >= 1 and W == math.floor(W), "local_group.run: W must be an integer >= 1")
  local cos, results, reqs, done = {}, {}, {}, {}
  for r = 1, W do
    local g = setmetatable({ _rank = r - 1, _size = W }, Group)
    cos[r] = coroutine.create(function() return fn(g) end)
  end
  local resume_with = {}
  while true do
    local waiting = 0
    for r = 1, W do
      if not done[r] and not reqs[r] then
        local ok, v = coroutine.resume(cos[r], resume_with[r])
        resume_with[r] = nil
        if not ok then
          error(("local_group: rank %d: %s\n%s"):format(r - 1, tostring(v), debug.traceback(cos[r])), 0)
        end
        if coroutine.status(cos[r]) == "dead" then
          done[r], results[r] = true, v
        else
          reqs[r] = v
        end
      end
      if reqs[r] then waiting = waiting + 1 end
    end
    local finished = 0
    for r = 1, W do if done[r] then finished = finished + 1 end end
    if finished == W then return results end
    if waiting > 0 and finished > 0 then
      for r = 1, W do
        if reqs[r] then
          error(("local_group: rank %d waits in %s, but another rank has returned"):format(r - 1, reqs[r].kind), 0)
        end
      end
    end
    if waiting == W then
      check_match(reqs, W)
      local out = collective(reqs, W)
      for r = 1, W do resume_with[r], reqs[r] = out[r], nil end
    end
  end
end

return M
