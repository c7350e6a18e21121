--- bench/gemm.lua: GFLOP/s of facet's matmul against OpenBLAS's cblas_sgemm
-- called directly through the FFI, in the same process on the same buffers,
-- for 1024^3 and 4096^3 float32. Also reruns itself with OpenBLAS forced to
-- its generic Prescott kernels, to show what the cpuid core choice buys.
-- Usage: bin/facet run bench/gemm.lua [--sizes 1024,4096] [--reps 3] (--help: the options)
local ffi = require "ffi"
local facet = require "facet"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"

local parser = common.parser("bench/gemm.lua", "GFLOP/s of facet's matmul against OpenBLAS's cblas_sgemm on " ..
  "the same buffers, then with OpenBLAS forced to its generic Prescott kernels.")
common.integers(parser, "--sizes", "square sizes n (n x n times n x n, float32)", "1024,4096", 1)
common.integer(parser, "--reps", "timed runs per size, at least (the best counts)", 3, 1)
parser:flag("--child", "print 'n GFLOP/s' of facet per size only (the Prescott rerun)"):hidden(true)
local opts = parser:parse(arg)

ffi.cdef [[
  void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc);
]]
local now = facet.clock

local user_core = os.getenv("OPENBLAS_CORETYPE")
local core = facet.blas_core()   -- loads OpenBLAS with facet's core choice
local blas = ffi.load(facet.blas_library())   -- the same, already loaded library

-- best of reps for each, interleaved so drift on a noisy machine hits both alike
local function best2(f1, f2, reps)
  f1(); f2()
  local b1, b2 = math.huge, math.huge
  for _ = 1, reps do
    local t0 = now(); f1(); local t1 = now(); f2(); local t2 = now()
    b1, b2 = math.min(b1, t1 - t0), math.min(b2, t2 - t1)
  end
  return b1, b2
end

local results = {}
for _, n in ipairs(opts.sizes) do
  local a = facet.randn({ n, n }, { seed = 1 })
  local b = facet.randn({ n, n }, { seed = 2 })
  local c = facet.empty({ n, n })
  -- about a second of work per size and side
  local reps = math.max(opts.reps, math.floor(4e11 / (2 * n * n * n)))
  local pa, pb, pc = a:data_ptr(), b:data_ptr(), c:data_ptr()
  local t_facet, t_blas = best2(function() a:matmul(b, { out = c }) end,
    function() blas.cblas_sgemm(101, 111, 111, n, n, n, 1, pa, n, pb, n, 0, pc, n) end, reps)
  local flops = 2 * n * n * n
  results[#results + 1] = { n = n, facet = flops / t_facet / 1e9, blas = flops / t_blas / 1e9 }
end

if opts.child then
  for _, r in ipairs(results) do io.write(("%d %.2f\n"):format(r.n, r.facet)) end
  return
end

print(("BLAS library: %s"):format(facet.blas_library()))
print(("OpenBLAS core in use: %s (%s), threads: %d"):format(core,
  user_core and ("OPENBLAS_CORETYPE=" .. user_core .. " set by the user") or "chosen by facet from cpuid",
  facet.get_threads()))
print(("%-6s %14s %16s %8s"):format("n", "facet GFLOP/s", "cblas GFLOP/s", "ratio"))
for _, r in ipairs(results) do
  print(("%-6d %14.1f %16.1f %8.3f"):format(r.n, r.facet, r.blas, r.facet / r.blas))
end

-- the same run with OpenBLAS's generic fallback, for the cpuid choice's gain
local sizes = {}
for _, r in ipairs(results) do sizes[#sizes + 1] = r.n end
local cmd = ("OPENBLAS_CORETYPE=Prescott luajit %q run %q --child --sizes %s --reps %d"):format(
  arg[-2] or "bin/facet", arg[0], table.concat(sizes, ","), opts.reps)
local p = io.popen(cmd)
local out = p and p:read("*a") or ""
if p then p:close() end
print("with OPENBLAS_CORETYPE=Prescott (Debian's fallback on unrecognised CPUs):")
for n, g in out:gmatch("(%d+) ([%d%.]+)") do
  for _, r in ipairs(results) do
    if r.n == tonumber(n) then
      print(("%-6d %14.1f GFLOP/s   facet default / Prescott = %.2fx"):format(r.n, tonumber(g), r.facet / tonumber(g)))
    end
  end
end
