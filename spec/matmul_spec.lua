--- GEMM against a naive triple loop: every transpose combination, batches,
-- transposed views, alpha/beta, and shape errors.
local H = require "support.device"
local facet = H.facet
local core = require "facet.core"
local F = require "support.files"

local function naive(A, B, ta, tb)
  local function at(M, i, j, t) if t then return M[j][i] end return M[i][j] end
  local m = ta and #A[1] or #A
  local k = ta and #A or #A[1]
  local n = tb and #B or #B[1]
  local C = {}
  for i = 1, m do
    for j = 1, n do
      local s = 0
      for p = 1, k do s = s + at(A, i, p, ta) * at(B, p, j, tb) end
      C[#C + 1] = s
    end
  end
  return C
end

describe("matmul", function()
  H.it("2-D, all four transpose combinations, odd sizes", function()
    local m, k, n = 37, 29, 23
    for _, ta in ipairs { false, true } do
      for _, tb in ipairs { false, true } do
        local A = ta and H.random_matrix(k, m, 1) or H.random_matrix(m, k, 1)
        local B = tb and H.random_matrix(n, k, 2) or H.random_matrix(k, n, 2)
        local C = H.tensor(A):matmul(H.tensor(B), { transpose_a = ta, transpose_b = tb })
        assert.are.same({ m, n }, C:shape())
        H.assert_close(H.values(C), naive(A, B, ta, tb), 1e-4, 1e-5)
      end
    end
  end)

  H.it("the issue's example: a:matmul(a)", function()
    local a = H.tensor { { 1, 2 }, { 3, 4 } }
    assert.are.same({ 7, 10, 15, 22 }, H.values(a:matmul(a)))
    assert.are.same({ 10, 14, 14, 20 }, H.values(a:matmul(a, { transpose_a = true })))
    assert.are.same({ 5, 11, 11, 25 }, H.values(a:matmul(a, { transpose_b = true })))
  end)

  H.it("alpha and beta accumulate into out", function()
    local A, B = H.random_matrix(5, 4, 3), H.random_matrix(4, 6, 4)
    local out = H.tensor(H.random_matrix(5, 6, 5))
    local before = H.values(out)
    H.tensor(A):matmul(H.tensor(B), { out = out, alpha = 2, beta = 0.5 })
    local ref = naive(A, B)
    for i = 1, #ref do ref[i] = 2 * ref[i] + 0.5 * before[i] end
    H.assert_close(H.values(out), ref, 1e-5, 1e-6)
  end)

  H.it("transposed and narrowed views go to BLAS without a wrong result", function()
    local A = H.random_matrix(8, 6, 7)
    local B = H.random_matrix(9, 8, 8)
    local ta = H.tensor(A)
    local view = facet.tensor(B):to(H.device):narrow(1, 2, 6)   -- rows 2..7 of B: 6x8, row stride 8
    local C = view:matmul(ta)                                   -- (6x8) @ (8x6)
    local Bs = {}
    for i = 2, 7 do Bs[#Bs + 1] = B[i] end
    H.assert_close(H.values(C), naive(Bs, A), 1e-5, 1e-6)
    local cols = facet.tensor(A):to(H.device):narrow(2, 2, 3)  -- 8x3 with row stride 6
    local D = cols:matmul(cols, { transpose_a = true })         -- 3x3
    local As = {}
    for i = 1, 8 do As[i] = { A[i][2], A[i][3], A[i][4] } end
    H.assert_close(H.values(D), naive(As, As, true, false), 1e-5, 1e-6)
  end)

  H.it("batched 3-D with 3-D and shared 2-D right operands", function()
    local batch, m, k, n = 3, 4, 5, 6
    local As, Bs = {}, {}
    for b = 1, batch do
      As[b] = H.random_matrix(m, k, 10 + b)
      Bs[b] = H.random_matrix(k, n, 20 + b)
    end
    local a3, b3 = H.tensor(As), H.tensor(Bs)
    local c3 = a3:bmm(b3)
    assert.are.same({ batch, m, n }, c3:shape())
    local expect = {}
    for b = 1, batch do for _, v in ipairs(naive(As[b], Bs[b])) do expect[#expect + 1] = v end end
    H.assert_close(H.values(c3), expect, 1e-5, 1e-6)
    local shared = H.tensor(Bs[1])
    local c2 = a3:matmul(shared)
    expect = {}
    for b = 1, batch do for _, v in ipairs(naive(As[b], Bs[1])) do expect[#expect + 1] = v end end
    H.assert_close(H.values(c2), expect, 1e-5, 1e-6)
    local ct = a3:bmm(b3:permute(1, 3, 2), { transpose_b = true })
    H.assert_close(H.values(ct), H.values(c3), 1e-5, 1e-6)
  end)

  H.it("larger sizes that use OpenBLAS's threaded kernels", function()
    local m, k, n = 130, 257, 65
    local A, B = H.random_matrix(m, k, 31), H.random_matrix(k, n, 32)
    H.assert_close(H.values(H.tensor(A):matmul(H.tensor(B))), naive(A, B), 1e-4, 1e-4)
  end)

  it("facet.cuda.set_tf32 switches TF32 and checks its argument; the CPU's products stay exact", function()
    assert.is_false(facet.cuda.tf32())
    local A, B = H.random_matrix(19, 23, 41), H.random_matrix(23, 17, 42)
    local exact = H.values(facet.tensor(A):matmul(facet.tensor(B)))
    facet.cuda.set_tf32(true)
    local ok, err = pcall(function()
      assert.is_true(facet.cuda.tf32())
      assert.are.same(exact, H.values(facet.tensor(A):matmul(facet.tensor(B))))
    end)
    facet.cuda.set_tf32(false)
    assert(ok, err)
    assert.is_false(facet.cuda.tf32())
    H.assert_error(function() facet.cuda.set_tf32(1) end, "facet.cuda.set_tf32", "true or false, got a number")
    H.assert_error(function() facet.cuda.set_tf32() end, "facet.cuda.set_tf32", "got nothing")
    H.assert_error(function() core.check(core.C.facet_cuda_tf32_set(2)) end, "facet_cuda_tf32_set",
      "enabled is 2")
    H.assert_error(function() core.check(core.C.facet_cuda_tf32_get(nil)) end, "facet_cuda_tf32_get",
      "NULL")
  end)

  H.it("TF32 on: float32 GEMMs within TF32's rounding of the exact product (on CUDA, tensor cores)", function()
    -- inputs rounded to a 10-bit significand (relative 2^-11 each), float32
    -- sums: over 257 terms of size < 1 the error stays far below 2e-2
    local m, k, n = 130, 257, 65
    local A, B = H.random_matrix(m, k, 43), H.random_matrix(k, n, 44)
    facet.cuda.set_tf32(true)
    local ok, got = pcall(function() return H.values(H.tensor(A):matmul(H.tensor(B))) end)
    facet.cuda.set_tf32(false)
    assert(ok, got)
    H.assert_close(got, naive(A, B), 2e-2, 2e-2)
    H.assert_close(H.values(H.tensor(A):matmul(H.tensor(B))), naive(A, B), 1e-4, 1e-4)
  end)

  it("errors name the shapes", function()
    local a = facet.ones({ 2, 3 })
    H.assert_error(function() a:matmul(facet.ones({ 2, 3 })) end, "facet_tensor_matmul", "[2x3 float32 cpu]")
    H.assert_error(function() a:matmul(facet.ones({ 3 })) end, "2-D or 3-D")
    H.assert_error(function() a:matmul(facet.ones({ 3, 2 }, { dtype = "int32" })) end, "float32")
    local out = facet.ones({ 2, 2 })
    H.assert_error(function() out:matmul(out, { out = out }) end, "shares memory")
  end)

  H.it("k = 0: out = beta * out for every operand layout, and beta 0 overwrites NaN", function()
    for _, t in ipairs { { false, false }, { true, false }, { false, true }, { true, true } } do
      local a = H.on(facet.empty(t[1] and { 0, 2 } or { 2, 0 }))
      local b = H.on(facet.empty(t[2] and { 3, 0 } or { 0, 3 }))
      local out = H.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
      a:matmul(b, { out = out, transpose_a = t[1], transpose_b = t[2], alpha = 2, beta = 0.5 })
      assert.are.same({ 0.5, 1, 1.5, 2, 2.5, 3 }, H.values(out))
    end
    local out = H.tensor { { 0 / 0, 1 } }
    H.on(facet.empty({ 1, 0 })):matmul(H.on(facet.empty({ 0, 2 })), { out = out, beta = 0 })
    assert.are.same({ 0, 0 }, H.values(out))
  end)

  it("a CUDA build opens cuBLAS on first use: a run on the CPU never loads it", function()
    -- linked, libcublas + libcublasLt cost every process about 0.4 s and 200 MB
    -- (core/cuda/cublas_load.cu); the C test checks the loading itself
    local script = os.tmpname()
    F.write_file(script, [[
local a = facet.randn({ 64, 64 }, { seed = 1 })
assert(a:matmul(a):shape()[1] == 64)
local f = assert(io.open("/proc/self/maps"))
local maps = f:read("*a")
f:close()
print(facet.cuda.built(), maps:find("facet_core", 1, true) ~= nil, maps:find("libcublas", 1, true) ~= nil)
]])
    local out, rc = F.sh("luajit bin/facet run " .. script)
    os.remove(script)
    assert.are.equal(0, rc, out)
    assert.are.same({ tostring(facet.cuda.built()), "true", "false" }, { out:match("(%S+)\t(%S+)\t(%S+)%s*$") })
  end)
end)
