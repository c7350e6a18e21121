--- bench/lib/common.lua: what the bench scripts share (the command-line
-- parser and its option kinds, the --device check, a training step in fp32,
-- fp16 or bf16). A bench loads it with
--   package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
--   local common = require "common"
-- It sits in bench/lib/ so that tools/gpu_check.sh's loop over bench/*.lua
-- does not take it for a bench.
local argparse = require "argparse"
local facet = require "facet"
local check = require "facet.check"
local Module = require "facet.nn.Module"
-- Module:buffer on a plain table of buffers (the casts below), past its self check
local buffer_of = check.unwrap(Module.buffer)

local M = {}

-- ---- the PyTorch baselines ----------------------------------------------------------
-- glibc gives every freed block above its mmap threshold back to the kernel,
-- and the next tensor of that size page-faults its memory in again, zeroed.
-- PyTorch's CPU allocator frees and allocates its B x K logits and gradients
-- every step, so on some kernels those faults cost it several times its
-- arithmetic (bench/heads_torch.py's arc: 3.7 s a step against 0.39 s on
-- our 2-core machine). facet allocates nothing per step. So the baselines run
-- with glibc keeping freed memory (what a caching allocator would do): the
-- figures compare with PyTorch at its best, not with its allocator's worst.
M.TORCH_ENV = "env -u LD_PRELOAD MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 " ..
  "MALLOC_TOP_PAD_=268435456"

-- the user's OPENBLAS_CORETYPE, read when this module loads, before a GEMM
-- loads OpenBLAS (facet then sets the variable itself)
M.USER_CORETYPE = os.getenv("OPENBLAS_CORETYPE")

--- A line to print under a CPU bench's header when OPENBLAS_CORETYPE was set
-- before facet started (nil otherwise): OpenBLAS then runs that core's
-- kernels, not the ones facet picks from cpuid (SkylakeX on an AVX-512 CPU),
-- while PyTorch's oneDNN convolutions use the CPU's widest vectors whatever
-- it says; GEMM-bound figures and their ratios to PyTorch then read low.
function M.blas_note()
  local forced = M.USER_CORETYPE
  if not forced or forced == "" then return nil end
  return ("note: OPENBLAS_CORETYPE=%s was set before facet started, so OpenBLAS runs %s kernels and facet did " ..
    "not pick them from cpuid (SkylakeX where AVX-512 is; unset it to let facet pick)"):format(forced, facet.blas_core())
end

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

-- precision -> the dtype of the model's activations (false: float32 throughout)
local LOW = { fp32 = false, fp16 = "float16", bf16 = "bfloat16" }
M.PRECISIONS = { "fp32", "fp16", "bf16" }

local function direct(_, fn, ...) return fn(...) end

--- One training step of net + head with opt on the batch fetch() returns
-- (forward, backward, update), as facet.train runs it: the input needs no
-- gradient. fetch may be a function or a pair { x, y }. opts (optional):
--   precision = "fp32" (default) | "fp16" | "bf16": as facet.train{ precision = }
--     (docs/mixed-precision.md): the parameters stay float32 (master weights),
--     the batch is cast to the 16-bit dtype before the model, the embedding
--     back to float32 for the head (the head and its loss stay float32), the
--     embedding's gradient to the 16-bit dtype for the model's backward; fp16
--     scales that gradient with a facet.amp scaler, unscales the model's
--     gradients and skips the update of a step whose gradients overflowed.
--     The casts go into buffers made on the first step and reused after.
--   timed = function(category, fn, ...): called instead of fn(...) for each
--     phase ("data copy", "optimizer", "casts", "head forward", "head backward",
--     "loss scaler"), for a profile.
-- Returns the step function and the scaler (fp16; nil otherwise), whose
-- .skipped counts the steps skipped for an overflow.
function M.train_step(net, head, opt, fetch, opts)
  opts = opts or {}
  local precision = opts.precision or "fp32"
  local low = LOW[precision]
  if low == nil then
    error(("train_step: precision must be fp32, fp16 or bf16, got %s"):format(tostring(precision)), 2)
  end
  net:first_leaf().no_input_grad = true
  if type(fetch) == "table" then
    local pair = fetch
    fetch = function() return pair[1], pair[2] end
  end
  local call = opts.timed or direct
  local params, grads = net:parameters()
  local scaler = low == "float16" and facet.amp.scaler() or nil
  -- the casts' buffers, kept as a module's (facet.train's layout)
  local casts = { buffers = {}, device = params[1] and params[1]:device() or "cpu" }
  local function cast(key, t, dtype)
    local b = buffer_of(casts, key, t:shape(), dtype)
    b:copy(t)
    return b
  end
  -- the gradients start at zero, and each update zeroes them in its own pass
  -- (opt:step_zero_grad, as facet.train): no zeroing launches per step
  opt:zero_grad()
  return function()
    local x, y = call("data copy", fetch)
    if low then x = call("casts", cast, "x", x, low) end
    local e = net:forward(x)
    -- the models' last layers run in float32 (Module:set_fp32): the embedding may be float32 already
    local edt = e:dtype()
    if edt ~= "float32" then e = call("casts", cast, "emb", e, "float32") end
    call("head forward", head.forward, head, e, y)
    local g = call("head backward", head.backward, head)
    if scaler then call("loss scaler", scaler.scale_grad, scaler, g) end
    if edt ~= "float32" then g = call("casts", cast, "grad", g, edt) end
    net:backward(x, g)
    if scaler then
      call("loss scaler", scaler.unscale, scaler, grads)
      local what = scaler:update()
      if what == "diverged" then
        error(("train_step: fp16 gradients are not finite at the smallest loss scale (%g)"):format(scaler.scale), 0)
      end
      if what == "skipped" then
        -- the expected fp16 overflow: nothing moves, as in facet.train
        call("optimizer", opt.zero_grad, opt)
        return
      end
    end
    call("optimizer", opt.step_zero_grad, opt)
  end, scaler
end

return M
