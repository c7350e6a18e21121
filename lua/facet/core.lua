--- facet.core: loads the C core (facet_core.so) through the FFI.
-- The cdef is generated from core/include/facet.h by the build; the library is
-- found on package.cpath, and a missing library names every path tried.
-- Before loading it, the OpenMP wait policy is set (docs/threads.md).
local ffi = require "ffi"

local M = {}

ffi.cdef(require "facet.cdef")

-- ---- the OpenMP wait policy (docs/threads.md) --------------------------------------
-- libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it is loaded,
-- which is when facet_core.so is (OpenBLAS's OpenMP build shares libgomp's
-- threads and so its policy). A thread that waits at a barrier, or for the
-- next parallel region, spins GOMP_SPINCOUNT pause instructions, then sleeps
-- in the kernel. libgomp's default, 300000, is about 4 ms here (a pause is
-- about 13 ns), longer than a scheduler slice: beside another busy process a
-- waiting thread keeps its core spinning while the thread it waits for cannot
-- run, and a step of the small convnet (about 225 parallel regions) ran 7 to
-- 9x slower beside one busy process and about 50x beside two. 1000 (about
-- 13 us here) keeps an idle machine within 2.3-3% of that speed (a region
-- costs about 1 us while its threads spin, 50-85 us once they sleep) and the
-- step only about 2.1x slower beside one busy process.
-- A non-empty value the user gave either variable is left alone.
M.SPINCOUNT = "1000"

for _, decl in ipairs {
  "int setenv(const char *name, const char *value, int overwrite);",
  "void *dlopen(const char *file, int mode);",
  "int dlclose(void *handle);",
} do pcall(ffi.cdef, decl) end   -- another module may have declared them already

--- What facet put into this process's environment (variable -> value): a tool
-- that starts other programs can leave it out of theirs (children inherit it).
M.omp_env_set = {}

local RTLD_LAZY, RTLD_NOLOAD = 0x1, 0x4

-- true when libgomp is in the process already (another library brought it)
local function libgomp_loaded()
  local ok, h = pcall(function() return ffi.C.dlopen("libgomp.so.1", RTLD_LAZY + RTLD_NOLOAD) end)
  if not ok or h == nil then return false end
  ffi.C.dlclose(h)
  return true
end

--- How the wait policy was decided: "facet" (GOMP_SPINCOUNT set to
-- M.SPINCOUNT), "user" (OMP_WAIT_POLICY or GOMP_SPINCOUNT was set), or
-- "libgomp loaded before facet" (it has read its environment already, so
-- nothing is set).
local function apply_wait_policy()
  for _, var in ipairs { "OMP_WAIT_POLICY", "GOMP_SPINCOUNT" } do
    local v = os.getenv(var)
    if v and v ~= "" then return "user" end
  end
  if libgomp_loaded() then return "libgomp loaded before facet" end
  if ffi.C.setenv("GOMP_SPINCOUNT", M.SPINCOUNT, 1) ~= 0 then return "setenv failed" end
  M.omp_env_set.GOMP_SPINCOUNT = M.SPINCOUNT
  return "facet"
end
M.wait_policy = apply_wait_policy()

local function load_library()
  local override = os.getenv("FACET_CORE_LIB")
  if override then return ffi.load(override), override end
  local path, tried = package.searchpath("facet_core", package.cpath)
  if not path then
    error("facet: cannot find the C core facet_core.so (run `make` in the checkout, or install the rock);"
      .. " package.cpath paths tried:" .. tried, 0)
  end
  return ffi.load(path), path
end

M.C, M.path = load_library()
local C = M.C

--- The last C error of this thread as a Lua string.
function M.last_error()
  return ffi.string(C.facet_last_error())
end

-- ---- errors ------------------------------------------------------------------
-- A mistake in a call to facet is reported at the user's line: the position
-- an error carries is that of the nearest caller outside facet's own modules
-- (the directory holding this file), never a path inside the library. A C
-- function on the way (pcall, a metamethod's caller) ends the walk, and the
-- message then carries no position at all.

-- facet's module directory as it appears in debug.getinfo's source ("@./lua/facet/")
local OWN = debug.getinfo(1, "S").source:match("^(@.*[/\\])core%.lua$")

--- Whether a debug.getinfo record is a function of facet's own Lua modules.
function M.own_frame(info)
  return info ~= nil and OWN ~= nil and info.source:sub(1, #OWN) == OWN
end

--- error(msg, level) as called from the function calling raise, except that a
-- level blaming one of facet's own functions moves up to the first caller
-- outside them. level 0 adds no position.
function M.raise(msg, level)
  level = level or 1
  if level <= 0 then error(msg, 0) end
  local l = level + 1                                   -- the frame blamed, counted from here
  while true do
    local info = debug.getinfo(l, "S")
    if not info or info.what == "C" or not M.own_frame(info) then break end
    l = l + 1
  end
  error(msg, l)
end

--- Raises the C message as a Lua error at the caller's caller when rc ~= 0
-- (at the user's line: see raise).
function M.check(rc, level)
  if rc ~= 0 then M.raise(ffi.string(C.facet_last_error()), (level or 2) + 1) end
end

--- Threads for facet's loops and OpenBLAS (default: FACET_THREADS or all cores).
function M.set_threads(n)
  -- NaN or a fraction would reach the C int truncated; the C core checks the range
  if type(n) ~= "number" or n ~= n or n ~= math.floor(n) or n < -2 ^ 31 or n >= 2 ^ 31 then
    M.raise(("facet.set_threads: n must be an integer (threads, 1 to 4096), got %s"):format(
      type(n) == "number" and (n ~= n and "nan" or tostring(n)) or type(n)), 2)
  end
  M.check(C.facet_threads_set(n), 2)
end

function M.get_threads()
  local n = ffi.new("int[1]")
  M.check(C.facet_threads_get(n))
  return n[0]
end

M.DTYPES = { float32 = C.FACET_DTYPE_FLOAT32, int32 = C.FACET_DTYPE_INT32,
             int64 = C.FACET_DTYPE_INT64, uint8 = C.FACET_DTYPE_UINT8,
             float16 = C.FACET_DTYPE_FLOAT16, bfloat16 = C.FACET_DTYPE_BFLOAT16 }
M.DTYPE_NAMES = {}
for k, v in pairs(M.DTYPES) do M.DTYPE_NAMES[tonumber(v)] = k end
M.CTYPES = { float32 = "float", int32 = "int32_t", int64 = "int64_t", uint8 = "uint8_t" }
M.DEVICES = { cpu = C.FACET_DEVICE_CPU, cuda = C.FACET_DEVICE_CUDA }
M.DEVICE_NAMES = { [tonumber(C.FACET_DEVICE_CPU)] = "cpu", [tonumber(C.FACET_DEVICE_CUDA)] = "cuda" }

return M
