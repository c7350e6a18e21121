--- bench/lib/common.lua: what the bench scripts share (the command-line error
-- and the --device check). A bench loads it with
--   package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
--   local common = require "common"
-- It sits in bench/lib/ so that tools/gpu_check.sh's loop over bench/*.lua
-- does not take it for a bench.
local facet = require "facet"

local M = {}

--- Writes "NAME: unknown argument or bad value: K V" to stderr and exits 1.
function M.bad_argument(name, k, v)
  io.stderr:write(("%s: unknown argument or bad value: %s %s\n"):format(name, tostring(k), tostring(v)))
  os.exit(1)
end

--- Checks --device: "cpu" or "cuda" (exit 1 otherwise), and for "cuda" a CUDA
-- device that facet can use (exit 2 otherwise). Returns true for "cuda".
function M.check_device(name, device)
  if device ~= "cpu" and device ~= "cuda" then
    io.stderr:write(("%s: unknown --device %s (cpu, cuda)\n"):format(name, tostring(device)))
    os.exit(1)
  end
  if device == "cuda" and not facet.cuda.available() then
    io.stderr:write(("%s: --device cuda: no CUDA device (%s)\n"):format(name, facet.cuda.built()
      and "facet was built with CUDA but facet.cuda.device_count() is 0" or "facet was built without CUDA"))
    os.exit(2)
  end
  return device == "cuda"
end

--- One training step of net + head with opt on the batch fetch() returns
-- (forward, backward, update), as facet.train runs it: the input needs no
-- gradient. fetch may be a function or a pair { x, y }.
function M.train_step(net, head, opt, fetch)
  net:first_leaf().no_input_grad = true
  if type(fetch) == "table" then
    local pair = fetch
    fetch = function() return pair[1], pair[2] end
  end
  return function()
    local x, y = fetch()
    opt:zero_grad()
    head:forward(net:forward(x), y)
    net:backward(x, head:backward())
    opt:step()
  end
end

return M
