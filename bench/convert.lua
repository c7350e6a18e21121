--- bench/convert.lua: the time of a contiguous copy that converts between
-- float32 and float16 / bfloat16 on the CPU (F16C for float16, AVX-512 BF16
-- for float32 -> bfloat16 where the CPU has them; core/src/copy.c), against a
-- float32 -> float32 copy of the same length in the same run, and the same
-- conversions through a strided view (the scalar half_math.h path, for
-- comparison). Best of --reps, one thread unless --threads. Figures only.
-- Usage: bin/facet run bench/convert.lua [--n 16777216] [--reps 5] [--threads 1]
local facet = require "facet"
package.path = (arg[0]:match("^(.*)/") or ".") .. "/lib/?.lua;" .. package.path
local common = require "common"

local parser = common.parser("bench/convert.lua", "Milliseconds of float32 <-> float16/bfloat16 copies against " ..
  "a float32 copy (contiguous: the vector paths; strided: the scalar one).")
common.integer(parser, "--n", "values per copy", 16 * 1024 * 1024, 16)
common.integer(parser, "--reps", "runs of each copy (the best counts)", 5, 1)
common.integer(parser, "--threads", "threads", 1, 1)
local o = parser:parse(arg)
facet.set_threads(o.threads)

local n = o.n
local f32 = facet.randn({ n }, { seed = 1 })
local out32 = facet.empty({ n })
local bufs = { float16 = facet.empty({ n }, { dtype = "float16" }), bfloat16 = facet.empty({ n }, { dtype = "bfloat16" }) }
-- strided: every other element of a 2n buffer
local s32 = facet.randn({ n, 2 }, { seed = 2 }):select(2, 1)
local s16 = { float16 = facet.empty({ n, 2 }, { dtype = "float16" }):select(2, 1),
  bfloat16 = facet.empty({ n, 2 }, { dtype = "bfloat16" }):select(2, 1) }

local function best(dst, src)
  dst:copy(src)
  local m = math.huge
  for _ = 1, o.reps do
    local t = facet.clock()
    dst:copy(src)
    m = math.min(m, facet.clock() - t)
  end
  return m * 1e3
end

local base = best(out32, f32)
print(("%d values, %d thread(s), best of %d; float32 -> float32 copy %.2f ms"):format(n, o.threads, o.reps, base))
print(("%-22s %12s %10s %14s"):format("conversion", "contiguous", "/ f32 copy", "strided (scalar)"))
for _, dt in ipairs { "float16", "bfloat16" } do
  local to = best(bufs[dt], f32)
  local to_s = best(s16[dt], s32)
  print(("%-22s %9.2f ms %9.2fx %11.2f ms"):format("float32 -> " .. dt, to, to / base, to_s))
  local from = best(out32, bufs[dt])
  local from_s = best(s32, s16[dt])
  print(("%-22s %9.2f ms %9.2fx %11.2f ms"):format(dt .. " -> float32", from, from / base, from_s))
end
