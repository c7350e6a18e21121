--- recipes/demo.lua: the job `make run` starts until training lands. It walks
-- through the tensor API on a toy face-recognition problem: random identity
-- centres, noisy "embeddings" of them, cosine similarities through GEMM, and
-- nearest-centre identification, then times a GEMM against the BLAS peak.
-- Usage: bin/facet run recipes/demo.lua [identities] [images_per_identity] [dim]   (--help)
local facet = require "facet"

local recipe = require "facet.recipe"

local parser = require("argparse")("demo", "The tensor API on a toy face-recognition problem, then a GEMM " ..
  "timed against the BLAS peak.")
parser:argument("identities", "Identities."):args("?"):default("1000")
  :convert(recipe.integer("identities", 1, 1000000))
parser:argument("images", "Images per identity."):args("?"):default("8"):convert(recipe.integer("images", 1, 100000))
parser:argument("dim", "Embedding size."):args("?"):default("512"):convert(recipe.integer("dim", 1, 65536))
local a = parser:parse(arg)
local K, M, D = a.identities, a.images, a.dim

print(("facet %s | OpenBLAS core %s | %d threads | CUDA %s"):format(facet.version, facet.blas_core(),
  facet.get_threads(), facet.cuda.available() and "available" or "not available"))

local a = facet.tensor { { 1, 2 }, { 3, 4 } }
print("a =")
print(a)
print("a @ a =")
print(a:matmul(a))

-- identity centres on the unit sphere, and M noisy views of each
local centres = facet.randn({ K, D }, { seed = 1 }):l2_normalize()
local labels = facet.arange(K * M, { dtype = "int64" }):div_(M):add_(1)   -- 1-based identity of each image
local noise = facet.randn({ K * M, D }, { seed = 2, std = 0.1 })
local emb = centres:index_select(labels):add_(noise):l2_normalize()

-- cosine similarity of every image to every centre: one GEMM
local t0 = facet.clock()
local cos = emb:matmul(centres, { transpose_b = true })
local gemm_s = facet.clock() - t0
local best, idx = cos:max(2)
local correct = idx:eq(labels):float():sum()
local true_cos = cos:gather(labels)

print(("%d identities x %d images, %d-d embeddings"):format(K, M, D))
print(("cosine to own centre:   mean %.4f  min %.4f"):format(true_cos:mean(), true_cos:min()))
print(("best impostor cosine:   mean %.4f"):format(((cos:scatter_(labels, facet.full({ K * M }, -1))):max(2)):mean()))
print(("nearest-centre rank-1 accuracy: %.2f%% (%d / %d)"):format(100 * correct / (K * M), correct, K * M))
print(("similarity GEMM (%dx%d @ %dx%d): %.1f ms, %.1f GFLOP/s"):format(K * M, D, D, K, gemm_s * 1e3,
  2 * K * M * D * K / math.max(gemm_s, 1e-9) / 1e9))
print(("best similarity per image (first 5): %s"):format(table.concat((function()
  local r = {}
  for i = 1, 5 do r[i] = ("%.3f"):format(best[i]) end
  return r
end)(), " ")))
