--- support/device.lua: what the device-generic specs share. FACET_DEVICE
-- (cpu by default, or cuda) picks where the tensors under test live; results
-- always come back to the CPU and are compared with independent values.
local facet = require "facet"
local assert = require "luassert"

local H = { facet = facet }

H.device = os.getenv("FACET_DEVICE") or "cpu"
H.cuda_missing = H.device == "cuda" and not facet.cuda.available()

--- The device a multi-rank worker (support/dist_worker.lua) puts its tensors
-- on: cuda when FACET_DEVICE=cuda and every rank can have a CUDA device of its
-- own (two GPUs or more, or the emulator, whose every process emulates one;
-- NCCL refuses two ranks on one GPU), else cpu.
function H.ranks_device()
  if H.device ~= "cuda" or not facet.cuda.available() then return "cpu" end
  local emulated = facet.cuda.device_name(0):find("emulator", 1, true) ~= nil
  return (emulated or facet.cuda.device_count() >= 2) and "cuda" or "cpu"
end

--- `it` for a case that runs on H.device: skipped with the reason when the
-- device is cuda and there is no GPU.
function H.it(name, fn)
  -- busted's it/pending live in the spec file's environment, not in _G
  local env = getfenv(2)
  local it, pending = env.it, env.pending
  if H.cuda_missing then
    pending(name .. " [cuda]: FACET_DEVICE=cuda but no CUDA device is available" ..
      (facet.cuda.built() and "" or " (facet was built without CUDA)"))
  else
    it(name .. " [" .. H.device .. "]", fn)
  end
end

--- `it` for a case that needs a CUDA device whatever FACET_DEVICE says: named
-- "[gpu]", skipped with the reason where there is none.
function H.gpu_it(name, fn)
  local env = getfenv(2)
  if facet.cuda.available() then env.it(name .. " [gpu]", fn)
  else env.pending(name .. " [gpu]: no CUDA device" .. (facet.cuda.built() and "" or " (built without CUDA)")) end
end

--- Moves a module to the device under test (returns it).
function H.module(m) if H.device == "cuda" then return m:cuda() end return m end

--- A tensor from a Lua table, on the device under test.
function H.tensor(data, opts)
  opts = opts or {}
  local t = facet.tensor(data, { dtype = opts.dtype })
  return t:to(H.device)
end

--- Moves a tensor to the device under test.
function H.on(t) return t:to(H.device) end

--- Flat Lua array of a tensor's values (from any device).
function H.values(t)
  local c = t:to("cpu"):contiguous()
  local n, p, r = c:numel(), c:data_ptr(), {}
  for i = 0, n - 1 do r[i + 1] = tonumber(p[i]) end
  return r
end

--- The number of elements of a shape (a list of sizes).
function H.numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

--- { f(0), f(1), ..., f(n - 1) }.
function H.range(n, f)
  local out = {}
  for i = 0, n - 1 do out[i + 1] = f(i) end
  return out
end

--- { v, v, ..., v } (n of them).
function H.constant(n, v)
  local r = {}
  for k = 1, n do r[k] = v end
  return r
end

--- An empty batch for an op to write into: a view of no samples at the start of
-- the storage of a one-sample tensor of shape `one` (dtype: float32 unless
-- given) on the device under test, filled with 7. Returns the view and a
-- function asserting that the storage still holds only 7s (nothing was written).
function H.empty_batch(one, dtype)
  local store = facet.full(one, 7, { device = H.device, dtype = dtype })
  return store:narrow(1, 1, 0), function()
    assert.are.same(H.constant(store:numel(), 7), H.values(store))
  end
end

--- Asserts two flat arrays (or numbers) agree within rtol/atol, naming the first bad index.
function H.assert_close(actual, expected, tol, atol)
  tol = tol or 1e-5
  atol = atol or tol
  if type(actual) == "number" then actual, expected = { actual }, { expected } end
  assert.are.equal(#expected, #actual, "element count")
  for i = 1, #expected do
    local a, e = actual[i], expected[i]
    local ok
    if e ~= e then ok = a ~= a
    elseif e == math.huge or e == -math.huge then ok = a == e
    else ok = math.abs(a - e) <= atol + tol * math.abs(e) end
    if not ok then
      error(("element %d: got %.9g, expected %.9g (tol %g)"):format(i, a, e, tol), 2)
    end
  end
end

--- Deterministic pseudo-random numbers independent of facet's generator.
function H.lcg(seed)
  local s = seed
  return function()
    s = (s * 1103515245 + 12345) % 2147483648
    return s / 2147483648 * 2 - 1
  end
end

--- Nested table rows x cols of LCG values.
function H.random_matrix(rows, cols, seed)
  local g, m = H.lcg(seed), {}
  for i = 1, rows do
    m[i] = {}
    for j = 1, cols do m[i][j] = g() end
  end
  return m
end

--- Asserts fn raises an error whose message contains every given plain substring.
function H.assert_error(fn, ...)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  err = tostring(err)
  for _, s in ipairs { ... } do
    if not err:find(s, 1, true) then error(("error message %q lacks %q"):format(err, s), 2) end
  end
  return err
end

-- The file helpers live in support/files.lua; these names stay for specs that
-- reach them through H.
local files = require "support.files"
H.temp_dir, H.remove_dir = files.temp_dir, files.remove_dir
H.write_file, H.read_file = files.write_file, files.read_file

return H
