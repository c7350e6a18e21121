--- bench/lib/common.lua: what the bench scripts share (the command-line
-- parser and its option kinds, the --device check, a training step). A bench
-- loads it with
--   package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
--   local common = require "common"
-- It sits in bench/lib/ so that tools/gpu_check.sh's loop over bench/*.lua
-- does not take it for a bench.
local argparse = require "argparse"
local facet = require "facet"
local check = require "facet.check"

local M = {}

-- ---- the command line ---------------------------------------------------------------
-- A bench declares its options on M.parser(...) with the kinds below and calls
-- p:parse(arg): --help prints the usage with every option and its default and
-- exits 0 before anything runs; an unknown option or a bad value prints the
-- usage and "Error: ..." naming the option, and exits 1 (no traceback).

--- The lua-argparse parser of the bench at path (e.g. "bench/gemm.lua"):
-- description is what it measures, epilog (optional) more text after the options.
function M.parser(path, description, epilog)
  return argparse("bin/facet run " .. path, description, epilog):help_max_width(100)
end

local function default_text(default)
  if default == nil then return nil end
  return tostring(default)
end

--- An integer option in [min, max] (max optional; default a number, or nil
-- for none). Returns the option, for :hidden(true) and the like.
function M.integer(p, name, help, default, min, max)
  return p:option(name, help, default_text(default)):convert(check.flag(name, { integer = true, min = min,
    max = max }))
end

--- A number option (spec: facet.check.number's min, max, gt, lt).
function M.number(p, name, help, default, spec)
  return p:option(name, help, default_text(default)):convert(check.flag(name, spec))
end

--- A 0 | 1 option (off | on).
function M.switch(p, name, help, default)
  return M.integer(p, name, help, default, 0, 1):argname("<0|1>")
end

--- A comma-separated list of integers >= min: "1,4,16" -> { 1, 4, 16 }.
function M.integers(p, name, help, default, min)
  local one = check.flag(name, { integer = true, min = min })
  return p:option(name, help, default_text(default)):argname("<n,...>"):convert(function(text)
    local list = {}
    for item in text:gmatch("[^,]+") do
      local v = one(item)
      if not v then
        return nil, ("%s must be a comma-separated list of integers >= %d, got '%s'"):format(name, min, text)
      end
      list[#list + 1] = v
    end
    if #list == 0 then return nil, ("%s must name at least one integer, got '%s'"):format(name, text) end
    return list
  end)
end

--- A comma-separated list of names, each one of known (a list): "am,mv-am" -> { "am", "mv-am" }.
function M.names(p, name, help, default, known)
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  return p:option(name, help, default_text(default)):argname("<name,...>"):convert(function(text)
    local list = {}
    for item in text:gmatch("[^,]+") do
      if not set[item] then
        return nil, ("%s: unknown '%s' (known: %s)"):format(name, item, table.concat(known, ", "))
      end
      list[#list + 1] = item
    end
    if #list == 0 then return nil, ("%s must name at least one of %s"):format(name, table.concat(known, ", ")) end
    return list
  end)
end

--- --device cpu | cuda (default cpu); M.check_device then checks that CUDA is there.
function M.device(p)
  return p:option("--device", "where to run", "cpu"):choices { "cpu", "cuda" }
end

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
