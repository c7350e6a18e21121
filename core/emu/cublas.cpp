/*
 * cublas.cpp - the emulator's cuBLAS (docs/cuda-emulator.md). Each call is
 * checked when it is made, as strictly as cuBLAS checks it and with the
 * status cuBLAS returns: a handle that is not live (NOT_INITIALIZED); NULL
 * alpha or beta, an unknown operation, sizes < 0, leading dimensions below
 * the stored rows (INVALID_VALUE); a type, compute type or algorithm
 * combination cuBLAS does not support (NOT_SUPPORTED). Then what cuBLAS never
 * checks and a GPU turns into a fault or silently wrong numbers is
 * INVALID_VALUE too: an operand whose whole strided extent is not inside one
 * device allocation or whose address is not a multiple of its element size,
 * a host-mode scalar in device memory, and C overlapping A, B or another
 * matrix of its own batch. The product is computed in stream order (queued
 * like a kernel), in float32 through the core's BLAS: op(A) and op(B) are
 * widened into row-major scratch (TF32 rounds their mantissas to 10 bits, to
 * nearest with ties away), then C = alpha AB + beta C is stored in C's type,
 * rounded once; beta = 0 does not read C, and k = 0 gives C = beta C. A
 * 16-bit C on a handle that allows reduced-precision reductions (the
 * default math mode) gets what a split-K GPU kernel may give: the two halves
 * of the k sum rounded to C's type before they are added. With
 * FACET_EMU_GEMM=scramble the k sum is not the BLAS's but one a GPU kernel
 * may do instead (compute_scrambled): fused multiply-add chains over chunks
 * of 8..64 terms, the chunks' partials in one chain, a pairwise tree or last
 * to first, split-K slices added last, all picked by a hash of the shape and
 * types, so a tolerance that holds only for one order fails here. A call on
 * a lost context (an earlier fault) runs nothing and returns
 * CUBLAS_STATUS_EXECUTION_FAILED.
 */
#include "cublas_v2.h"
#include "emu.h"

#include <algorithm>
#include <math.h>
#include <mutex>
#include <set>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#ifdef __FMA__
#include <immintrin.h>
#endif

extern "C" {
#include "internal.h"
}
#include "half_math.h"

struct cublasContext {
    cublasMath_t math;
};

namespace {

/* live handles: a destroyed or never-created handle is NOT_INITIALIZED,
 * without reading freed memory */
std::mutex handles_lock;
std::set<cublasHandle_t> handles;

bool live(cublasHandle_t h)
{
    std::lock_guard<std::mutex> g(handles_lock);
    return h && handles.count(h);
}

cublasMath_t math_of(cublasHandle_t h)
{
    std::lock_guard<std::mutex> g(handles_lock);
    return h->math;
}

size_t type_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

float load(const void *p, cudaDataType_t t, int64_t i)
{
    switch (t) {
    case CUDA_R_16F: return facet_half_to_float(((const uint16_t *)p)[i]);
    case CUDA_R_16BF: return facet_bf16_to_float(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

void store(void *p, cudaDataType_t t, int64_t i, float v)
{
    switch (t) {
    case CUDA_R_16F: ((uint16_t *)p)[i] = facet_float_to_half(v); break;
    case CUDA_R_16BF: ((uint16_t *)p)[i] = facet_float_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

/* v rounded to C's type and back (what a reduction in C's type keeps) */
float narrow(float v, cudaDataType_t t)
{
    switch (t) {
    case CUDA_R_16F: return facet_half_to_float(facet_float_to_half(v));
    case CUDA_R_16BF: return facet_bf16_to_float(facet_float_to_bf16(v));
    default: return v;
    }
}

/* float32 -> TF32 (10 mantissa bits), to nearest, ties away from zero */
float tf32(float v)
{
    uint32_t u = facet_f32_bits_u(v);
    if ((u & 0x7f800000u) == 0x7f800000u) return v;   /* inf, NaN */
    u = (u + 0x1000u) & 0xffffe000u;
    return facet_u_bits_f32(u);
}

bool known_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

const char *type_name(cudaDataType_t t)
{
    switch (t) {
    case CUDA_R_32F: return "CUDA_R_32F";
    case CUDA_R_16F: return "CUDA_R_16F";
    case CUDA_R_16BF: return "CUDA_R_16BF";
    }
    return "an unknown cudaDataType";
}

cublasStatus_t refuse(cublasStatus_t s, const char *fn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
cublasStatus_t refuse(cublasStatus_t s, const char *fn, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "facet-emu: %s: %s\n", fn, msg);
    return s;
}

/* One operand: batch column-major rows x cols matrices (leading dimension
 * ld >= rows, checked first), matrix q at p + q * stride elements. */
struct operand {
    const char *name;
    const char *p;
    size_t el;
    int64_t rows, cols, ld;
    long long stride;
    int64_t batch;

    bool empty() const { return rows == 0 || cols == 0 || batch == 0; }
    /* the element offsets it touches, [lo, hi], without overflow (__int128) */
    __int128 lo() const { return stride < 0 ? (__int128)(batch - 1) * stride : 0; }
    __int128 hi() const
    {
        return (__int128)(cols - 1) * ld + rows - 1 + (stride > 0 ? (__int128)(batch - 1) * stride : 0);
    }
    /* f(element offset) for every element, batch by batch, column by column */
    template <class F>
    void each(F f) const
    {
        for (int64_t q = 0; q < batch; q++)
            for (int64_t j = 0; j < cols; j++)
                for (int64_t i = 0; i < rows; i++) f((int64_t)(q * stride + j * ld + i));
    }
};

/* inside one device block, aligned to its element size */
bool operand_ok(const char *fn, const operand &o)
{
    if (o.empty()) return true;
    if ((uintptr_t)o.p % o.el != 0) {
        refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "%s (%p) is not aligned to its %zu-byte elements", o.name, o.p, o.el);
        return false;
    }
    __int128 bytes = (o.hi() - o.lo() + 1) * (__int128)o.el;
    if (bytes <= (__int128)(SIZE_MAX / 2) &&
        facet_emu::device_range(o.p + (int64_t)o.lo() * (int64_t)o.el, (size_t)bytes))
        return true;
    refuse(CUBLAS_STATUS_INVALID_VALUE, fn,
           "%s (%p, %lld x %lld, ld %lld, stride %lld, batch %lld) is not inside one device allocation", o.name,
           o.p, (long long)o.rows, (long long)o.cols, (long long)o.ld, o.stride, (long long)o.batch);
    return false;
}

/* Two matrices of C's batch share an element: the GPU's writes race. Within
 * one matrix ld >= rows keeps the columns apart. */
bool self_overlap(const operand &c)
{
    if (c.empty() || c.batch < 2) return false;
    __int128 span = (__int128)(c.cols - 1) * c.ld + c.rows, s = c.stride < 0 ? -(__int128)c.stride : c.stride;
    if (s >= span) return false;
    const int64_t lo = (int64_t)c.lo();
    std::vector<bool> seen((size_t)(c.hi() - c.lo() + 1));
    bool hit = false;
    c.each([&](int64_t e) {
        std::vector<bool>::reference r = seen[(size_t)(e - lo)];
        hit = hit || r;
        r = true;
    });
    return hit;
}

/* a byte that C writes is a byte of x that the GEMM reads */
bool overlaps(const operand &c, const operand &x)
{
    if (c.empty() || x.empty()) return false;
    const char *c0 = c.p + (int64_t)c.lo() * (int64_t)c.el, *c1 = c.p + ((int64_t)c.hi() + 1) * (int64_t)c.el;
    const char *x0 = x.p + (int64_t)x.lo() * (int64_t)x.el, *x1 = x.p + ((int64_t)x.hi() + 1) * (int64_t)x.el;
    if (c1 <= x0 || x1 <= c0) return false;
    std::vector<bool> mine((size_t)(c1 - c0));
    c.each([&](int64_t e) {
        for (size_t b = 0; b < c.el; b++) mine[(size_t)(e * (int64_t)c.el) + b + (size_t)(c.p - c0)] = true;
    });
    bool hit = false;
    x.each([&](int64_t e) {
        const char *q = x.p + e * (int64_t)x.el;
        for (size_t b = 0; b < x.el && !hit; b++)
            hit = q + b >= c0 && q + b < c1 && mine[(size_t)(q + b - c0)];
    });
    return hit;
}

struct gemm_args {
    cublasOperation_t ta, tb;
    int m, n, k;
    float alpha, beta;
    const void *a, *b;
    void *c;
    cudaDataType_t at, bt, ct;
    int lda, ldb, ldc;
    long long sa, sb, sc;
    int batch;
    bool round_tf32, split_narrow;
    bool scramble;      /* FACET_EMU_GEMM=scramble when the call was made */
};

int compute_gemm(const gemm_args &g);

/* scalars in host pointer mode (the default): read by the call itself */
bool scalar_ok(const char *fn, const char *name, const void *p)
{
    if (!p) {
        refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "%s is NULL", name);
        return false;
    }
    if (facet_emu::device_range(p, 0)) {
        refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "%s (%p) is device memory, but the pointer mode is host", name, p);
        return false;
    }
    return true;
}

/* FACET_EMU_GEMM=scramble: the k sums in a GPU kernel's order (read at
 * each call, so the emulator's tests can switch it; a GEMM costs far more
 * than a getenv) */
bool scramble_mode(void)
{
    const char *v = getenv("FACET_EMU_GEMM");
    if (!v || !*v) return false;
    if (strcmp(v, "scramble") == 0) return true;
    static std::once_flag warned;
    std::call_once(warned, [v] {
        fprintf(stderr, "facet-emu: FACET_EMU_GEMM=%s is not a mode (scramble, or unset): the default order\n", v);
    });
    return false;
}

cublasStatus_t gemm(const char *fn, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, const void *alpha, const void *a, cudaDataType_t at, int lda, long long sa, const void *b,
                    cudaDataType_t bt, int ldb, long long sb, const void *beta, void *c, cudaDataType_t ct, int ldc,
                    long long sc, int batch, cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    if (!live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!scalar_ok(fn, "alpha", alpha) || !scalar_ok(fn, "beta", beta)) return CUBLAS_STATUS_INVALID_VALUE;
    if (ta > CUBLAS_OP_C || tb > CUBLAS_OP_C || ta < 0 || tb < 0)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "unknown operation (transa %d, transb %d)", (int)ta, (int)tb);
    if (m < 0 || n < 0 || k < 0 || batch < 0)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "m=%d n=%d k=%d batch=%d", m, n, k, batch);
    const int64_t a_rows = ta == CUBLAS_OP_N ? m : k, b_rows = tb == CUBLAS_OP_N ? k : n;
    if (lda < std::max<int64_t>(a_rows, 1) || ldb < std::max<int64_t>(b_rows, 1) || ldc < std::max(m, 1))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "lda=%d ldb=%d ldc=%d for m=%d n=%d k=%d, op(A) %s, op(B) %s",
                      lda, ldb, ldc, m, n, k, ta == CUBLAS_OP_N ? "N" : "T", tb == CUBLAS_OP_N ? "N" : "T");
    /* cuBLAS's table: CUBLAS_COMPUTE_32F takes 32F/32F/32F and 16F or 16BF
     * A and B with C of their type or 32F; _FAST_TF32 only 32F/32F/32F */
    const bool types_ok = known_type(at) && at == bt && known_type(ct) && (ct == at || ct == CUDA_R_32F);
    if (!types_ok || (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) ||
        (compute == CUBLAS_COMPUTE_32F_FAST_TF32 && at != CUDA_R_32F))
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "A %s, B %s, C %s with compute type %d", type_name(at),
                      type_name(bt), type_name(ct), (int)compute);
    if (algo != CUBLAS_GEMM_DEFAULT)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "algo %d (the emulator has CUBLAS_GEMM_DEFAULT only)",
                      (int)algo);
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;

    const int64_t a_cols = ta == CUBLAS_OP_N ? k : m, b_cols = tb == CUBLAS_OP_N ? n : k;
    /* A and B are not read when k = 0 */
    const int64_t read = k > 0 ? batch : 0;
    const operand oa{"A", (const char *)a, type_bytes(at), a_rows, a_cols, lda, sa, read};
    const operand ob{"B", (const char *)b, type_bytes(bt), b_rows, b_cols, ldb, sb, read};
    const operand oc{"C", (const char *)c, type_bytes(ct), m, n, ldc, sc, batch};
    if (!operand_ok(fn, oa) || !operand_ok(fn, ob) || !operand_ok(fn, oc)) return CUBLAS_STATUS_INVALID_VALUE;
    if (self_overlap(oc))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn,
                      "C's matrices overlap (%d x %d, ldc %d, stride %lld, batch %d): their writes race on a GPU",
                      m, n, ldc, sc, batch);
    if (overlaps(oc, oa) || overlaps(oc, ob))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "C (%p) overlaps %s (%p): cuBLAS leaves that undefined", c,
                      overlaps(oc, oa) ? "A" : "B", overlaps(oc, oa) ? a : b);

    /* a lost context (an earlier fault) runs nothing: cuBLAS's kernel launch
     * fails, and it says so (the runtime's last error stays the fault's) */
    if (!facet_emu::launch_allowed(fn, 0))
        return refuse(CUBLAS_STATUS_EXECUTION_FAILED, fn, "the device context is lost (an earlier fault)");

    const cublasMath_t math = math_of(h);
    gemm_args g{ta, tb, m, n, k, *(const float *)alpha, *(const float *)beta, a, b, c, at, bt, ct,
                lda, ldb, ldc, sa, sb, sc, batch, false, false, scramble_mode()};
    /* TF32 math mode: cublasSgemm* may use TF32, and so (the emulator
     * assumes) may cublasGemmEx's CUBLAS_COMPUTE_32F on float32 */
    g.round_tf32 = compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                   (at == CUDA_R_32F && (math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH);
    g.split_narrow = ct != CUDA_R_32F && !(math & CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) && k >= 2;
    /* computed in stream order, with alpha and beta as they are now */
    facet_emu::enqueue([=]() { return compute_gemm(g); });
    return CUBLAS_STATUS_SUCCESS;
}

/* row-major rc (m x n) = ra (m x kk, row length k) rb (kk x n) */
bool host_gemm(int m, int n, int kk, int k, const float *ra, const float *rb, float *rc)
{
    if (facet_blas_sgemm(0, 0, m, n, kk, 1.0f, ra, k, rb, n, 0.0f, rc, n) == 0) return true;
    facet_emu::fault("a cuBLAS GEMM: the host BLAS failed: %s", facet_last_error());
    return false;
}

/* matrix q of the batch: column-major op(A)(i, p) into row-major ra[i][p],
 * op(B)(p, j) into rb[p][j], widened to float32 (TF32: rounded) */
void widen(const gemm_args &g, int64_t q, float *ra, float *rb)
{
    const int64_t m = g.m, n = g.n, k = g.k;
    const void *aq = (const char *)g.a + q * g.sa * (long long)type_bytes(g.at);
    const void *bq = (const char *)g.b + q * g.sb * (long long)type_bytes(g.bt);
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < k; p++) {
            float v = load(aq, g.at, g.ta == CUBLAS_OP_N ? i + p * g.lda : p + i * g.lda);
            ra[i * k + p] = g.round_tf32 ? tf32(v) : v;
        }
    for (int64_t p = 0; p < k; p++)
        for (int64_t j = 0; j < n; j++) {
            float v = load(bq, g.bt, g.tb == CUBLAS_OP_N ? p + j * g.ldb : j + p * g.ldb);
            rb[p * n + j] = g.round_tf32 ? tf32(v) : v;
        }
}

/* ---- FACET_EMU_GEMM=scramble: the k sum in a GPU kernel's order ----------------------------
 * A GPU GEMM does not sum k from first to last: each thread runs fused
 * multiply-add chains over k tiles (an MMA's k, a pipeline stage), tiles'
 * partials may be added in another order, and split-K kernels give slices
 * of k to different blocks and add their partials last. Which of these, and
 * the tile sizes, depend on the shape, the types and the GPU. Here one
 * k_order per GEMM, from a hash of its shape and types, applies to every
 * element of C alike (as one kernel's does: equal rows of A still give
 * equal rows of C). */

uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    return h;
}

struct k_order {
    std::vector<int64_t> cut;   /* chunk c is k terms [cut[c], cut[c + 1]): one FMA chain */
    std::vector<size_t> split;  /* split-K slice s is chunks [split[s], split[s + 1]) */
    int within;                 /* a slice's chunks: 0 one chain through them, 1 pairwise tree, 2 last to first */
    bool split_tree;            /* slices added pairwise ((s0 + s1) + (s2 + s3)), not in order */
    bool fused_epilogue;        /* C = fmaf(alpha, sum, beta C), not alpha sum + beta C */
};

k_order order_of(const gemm_args &g)
{
    uint64_t h = 0x243f6a8885a308d3ull;
    for (int64_t v : {(int64_t)g.m, (int64_t)g.n, (int64_t)g.k, (int64_t)g.batch, (int64_t)g.ta, (int64_t)g.tb,
                      (int64_t)g.at, (int64_t)g.ct, (int64_t)g.round_tf32})
        h = mix(h, (uint64_t)v);
    const int64_t k = g.k;
    k_order o;
    /* chunks of 8..64 terms; the k % chunk left over is the first or the last */
    const int64_t c = 8 * (int64_t)(1 + (h & 7)), rest = k % c;
    const bool ragged_first = (h >> 3) & 1;
    o.cut.push_back(0);
    if (ragged_first && rest) o.cut.push_back(rest);
    for (int64_t p = ragged_first ? rest : 0; p + c <= k; p += c) o.cut.push_back(p + c);
    if (o.cut.back() != k) o.cut.push_back(k);
    /* 16-bit C with reduced-precision reductions: always a split, to round
     * its partials (k >= 2; a chunk of k terms is then cut in two) */
    if (g.split_narrow && o.cut.size() == 2) o.cut = {0, k / 2, k};
    const size_t chunks = o.cut.size() - 1;
    size_t slices = 1 + (size_t)((h >> 4) % 4);
    if (g.split_narrow) slices = std::max<size_t>(slices, 2);
    slices = std::min(slices, chunks);
    for (size_t s = 0; s <= slices; s++) o.split.push_back(chunks * s / slices);
    o.within = (int)((h >> 6) % 3);
    o.split_tree = (h >> 8) & 1;
    o.fused_epilogue = (h >> 9) & 1;
    return o;
}

/* the rows*cols block's sums, each x[r][jj] += over p in [p0, p1) by fmaf:
 * ra row-major with rows of k, rb row-major with rows of n, from (i0, j0) */
void fma_chain(const float *ra, int64_t k, const float *rb, int64_t n, int64_t i0, int rows, int64_t j0, int cols,
               int64_t p0, int64_t p1, float *x)
{
    for (int64_t p = p0; p < p1; p++) {
        const float *b = rb + p * n + j0;
        for (int r = 0; r < rows; r++) {
            const float a = ra[(i0 + r) * k + p];
            float *xr = x + r * cols;
            int jj = 0;
#ifdef __FMA__
            /* 8 fmaf at once, each rounded once as fmaf is (GCC -O2 does not vectorise the loop below) */
            const __m256 va = _mm256_set1_ps(a);
            for (; jj + 8 <= cols; jj += 8)
                _mm256_storeu_ps(xr + jj, _mm256_fmadd_ps(va, _mm256_loadu_ps(b + jj), _mm256_loadu_ps(xr + jj)));
#endif
            for (; jj < cols; jj++) xr[jj] = fmaf(a, b[jj], xr[jj]);
        }
    }
}

/* x += y over a block */
void add_to(float *x, const float *y, size_t len)
{
    for (size_t e = 0; e < len; e++) x[e] += y[e];
}

int compute_scrambled(const gemm_args &g)
{
    const int64_t m = g.m, n = g.n, k = g.k;
    const k_order o = order_of(g);
    /* a block of C: ROWS rows by COLS columns at a time (B's rows stay in cache) */
    enum { ROWS = 4, COLS = 256, BLOCK = ROWS * COLS };
    const size_t slices = o.split.size() - 1;
    size_t depth = 2;   /* the pairwise tree's stack: one level per doubling */
    for (size_t c = 1; c < o.cut.size(); c *= 2) depth++;
    std::vector<float> ra((size_t)(m * k)), rb((size_t)(k * n)), part(BLOCK), stack(depth * BLOCK),
        slice((size_t)slices * BLOCK);
    std::vector<int> level(depth);
    for (int64_t q = 0; q < g.batch; q++) {
        widen(g, q, ra.data(), rb.data());
        void *cq = (char *)g.c + q * g.sc * (long long)type_bytes(g.ct);
        for (int64_t i0 = 0; i0 < m; i0 += ROWS)
            for (int64_t j0 = 0; j0 < n; j0 += COLS) {
                const int rows = (int)std::min<int64_t>(ROWS, m - i0), cols = (int)std::min<int64_t>(COLS, n - j0);
                const size_t len = (size_t)(rows * cols);
                for (size_t s = 0; s < slices; s++) {
                    float *out = slice.data() + s * BLOCK;
                    std::fill(out, out + len, 0.0f);
                    const size_t c0 = o.split[s], c1 = o.split[s + 1];
                    if (o.within == 0) {         /* one chain through the slice */
                        fma_chain(ra.data(), k, rb.data(), n, i0, rows, j0, cols, o.cut[c0], o.cut[c1], out);
                    } else if (o.within == 2) {  /* chunks' partials added from the last */
                        for (size_t c = c1; c-- > c0;) {
                            std::fill(part.begin(), part.begin() + (long)len, 0.0f);
                            fma_chain(ra.data(), k, rb.data(), n, i0, rows, j0, cols, o.cut[c], o.cut[c + 1],
                                      part.data());
                            add_to(out, part.data(), len);
                        }
                    } else {                     /* pairwise: merge equal levels as they come */
                        size_t top = 0;
                        for (size_t c = c0; c < c1; c++) {
                            float *x = stack.data() + top * BLOCK;
                            std::fill(x, x + len, 0.0f);
                            fma_chain(ra.data(), k, rb.data(), n, i0, rows, j0, cols, o.cut[c], o.cut[c + 1], x);
                            level[top++] = 0;
                            while (top >= 2 && level[top - 1] == level[top - 2]) {
                                add_to(stack.data() + (top - 2) * BLOCK, stack.data() + (top - 1) * BLOCK, len);
                                level[top - 2]++;
                                top--;
                            }
                        }
                        for (; top >= 2; top--)
                            add_to(stack.data() + (top - 2) * BLOCK, stack.data() + (top - 1) * BLOCK, len);
                        std::copy(stack.begin(), stack.begin() + (long)len, out);
                    }
                }
                for (int r = 0; r < rows; r++)
                    for (int jj = 0; jj < cols; jj++) {
                        const size_t x = (size_t)(r * cols + jj);
                        float t[4] = {0, 0, 0, 0};
                        /* a 16-bit C that allows it: each slice rounded to C's type, alpha applied */
                        for (size_t s = 0; s < slices; s++)
                            t[s] = g.split_narrow ? narrow(g.alpha * slice[s * BLOCK + x], g.ct)
                                                  : slice[s * BLOCK + x];
                        float sum;
                        if (o.split_tree && slices > 2)
                            sum = (t[0] + t[1]) + (slices == 4 ? t[2] + t[3] : t[2]);
                        else {
                            sum = t[0];
                            for (size_t s = 1; s < slices; s++) sum += t[s];
                        }
                        const int64_t e = i0 + r + (j0 + jj) * g.ldc;
                        float v;
                        if (g.split_narrow) v = g.beta != 0.0f ? sum + g.beta * load(cq, g.ct, e) : sum;
                        else if (g.beta == 0.0f) v = g.alpha * sum;
                        else if (o.fused_epilogue) v = fmaf(g.alpha, sum, g.beta * load(cq, g.ct, e));
                        else v = g.alpha * sum + g.beta * load(cq, g.ct, e);
                        store(cq, g.ct, e, v);
                    }
            }
    }
    return 0;
}

int compute_gemm(const gemm_args &g)
{
    if (g.scramble && g.k > 0) return compute_scrambled(g);
    const int64_t m = g.m, n = g.n, k = g.k;
    std::vector<float> ra((size_t)(m * k)), rb((size_t)(k * n)), rc((size_t)(m * n)), r2;
    /* split: the first k1 terms and the rest, each rounded to C's type */
    const int64_t k1 = g.split_narrow ? k / 2 : k;
    if (k1 < k) r2.resize((size_t)(m * n));
    for (int64_t q = 0; q < g.batch; q++) {
        void *cq = (char *)g.c + q * g.sc * (long long)type_bytes(g.ct);
        widen(g, q, ra.data(), rb.data());
        if (k > 0 && !host_gemm((int)m, (int)n, (int)k1, (int)k, ra.data(), rb.data(), rc.data())) return 1;
        if (k1 < k && !host_gemm((int)m, (int)n, (int)(k - k1), (int)k, ra.data() + k1, rb.data() + k1 * n, r2.data()))
            return 1;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const int64_t e = i + j * g.ldc;
                const size_t r = (size_t)(i * n + j);
                /* k = 0: C = beta C, alpha unused */
                float v = k == 0 ? 0.0f
                          : k1 < k ? narrow(g.alpha * rc[r], g.ct) + narrow(g.alpha * r2[r], g.ct)
                                   : g.alpha * rc[r];
                if (g.beta != 0.0f) v += g.beta * load(cq, g.ct, e);
                store(cq, g.ct, e, v);
            }
    }
    return 0;
}

}   /* namespace */

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    if (!handle) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate", "handle is NULL");
    cublasHandle_t h = new cublasContext{CUBLAS_DEFAULT_MATH};
    std::lock_guard<std::mutex> g(handles_lock);
    handles.insert(h);
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    std::lock_guard<std::mutex> g(handles_lock);
    if (!handle || !handles.erase(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    const int base = (int)mode & ~(int)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TF32_TENSOR_OP_MATH)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasSetMathMode",
                      "mode %d (the emulator has CUBLAS_DEFAULT_MATH and CUBLAS_TF32_TENSOR_OP_MATH, either with "
                      "CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)", (int)mode);
    std::lock_guard<std::mutex> g(handles_lock);
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode)
{
    if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasGetMathMode", "mode is NULL");
    *mode = math_of(handle);
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *a, cudaDataType_t atype, int lda, const void *b,
                            cudaDataType_t btype, int ldb, const void *beta, void *c, cudaDataType_t ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    return gemm("cublasGemmEx", h, ta, tb, m, n, k, alpha, a, atype, lda, 0, b, btype, ldb, 0, beta, c, ctype, ldc,
                0, 1, compute, algo);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *a, cudaDataType_t atype, int lda,
                                          long long stride_a, const void *b, cudaDataType_t btype, int ldb,
                                          long long stride_b, const void *beta, void *c, cudaDataType_t ctype,
                                          int ldc, long long stride_c, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo)
{
    return gemm("cublasGemmStridedBatchedEx", h, ta, tb, m, n, k, alpha, a, atype, lda, stride_a, b, btype, ldb,
                stride_b, beta, c, ctype, ldc, stride_c, batch, compute, algo);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *a, int lda, long long stride_a,
                                         const float *b, int ldb, long long stride_b, const float *beta, float *c,
                                         int ldc, long long stride_c, int batch)
{
    return gemm("cublasSgemmStridedBatched", h, ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, stride_a, b, CUDA_R_32F,
                ldb, stride_b, beta, c, CUDA_R_32F, ldc, stride_c, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}
