/*
 * head.cu - the loss heads' fused row passes on the GPU (the row helpers they
 * use, row norms and the backward of L2 normalisation, are normalize.cu's).
 * The contracts and formulas are those of head.c; every per-element formula
 * comes from head_math.h (facet_margin, facet_logh, facet_expr_eval1,
 * facet_fast_exp, facet_clamp_cos, facet_head_logit, facet_lse_merge), so the
 * CPU specs test the math the GPU runs.
 *
 * Launch shapes:
 *   target          one thread per row of the batch.
 *   partial         one block per row; each thread keeps an online
 *                   (max, sum of exp(z - max)) over its strided columns and the
 *                   block merges the pairs with facet_lse_merge in a fixed order
 *                   (block_reduce); threads without columns hold the empty pair.
 *   backward        32 x 8 blocks over a tile of 32 columns: threadIdx.x owns a
 *                   column (reads of a row stay coalesced), threadIdx.y takes
 *                   every 8th row; the row state (max, 1/sumexp, weight, ...)
 *                   is staged in shared memory a tile of rows at a time, and
 *                   the column sums are reduced in shared memory and written
 *                   once, so there are no atomics and the result does not
 *                   depend on scheduling.
 *
 * Parameters and programs: struct facet_head_params goes by value as a kernel
 * argument. The expression programs the head's mode reads go to __constant__
 * memory (every thread of a warp runs the same instruction, so the constant
 * cache broadcasts) with cudaMemcpyToSymbolAsync on the legacy default stream,
 * ordered after earlier kernels that read the old ones and before the launch
 * that reads the new ones. The host does not wait: a pageable source is staged
 * before the call returns. c_programs is one buffer per device shared by all
 * heads, so two host threads running heads on the same device at once may
 * see each other's programs: the heads are not thread-safe across host
 * threads (the Lua layer drives them from one thread).
 *
 * Rounding: the logit composition and the pair merge round per operation as
 * on the CPU, but the margins (acosf, cosf, ...) are CUDA's, nvcc contracts
 * the rest of head_math.h into FMAs, and the sums run in a different order
 * than on the CPU: results match the CPU to within float rounding, not bit
 * for bit. They do not depend on scheduling.
 */
#include "cuda_common.cuh"
#include <string.h>

#include "head_math.h"

enum {
    PARTIAL_MAX_THREADS = 1024,
    BW_COLS = 32,           /* backward: columns a block (one warp wide) */
    BW_ROWS = 8,            /* backward: row phases a block */
    BW_TILE = BW_COLS * BW_ROWS   /* backward: rows of state staged at once */
};

static __constant__ struct facet_program c_programs[FACET_HEAD_PROGRAM_COUNT];

/* Cosines are divided by max(||w_k||, 1e-12), as in head.c. */
#define WNORM_FLOOR 1e-12f

/* ---- shared by the head kernels ----------------------------------------------------- */

/* The logit of a class with cosine (raw heads: logit) c, and with GRAD its
 * derivative dz/dc: head_math.h's facet_head_logit / facet_head_logit_grad,
 * as chunk_logits and backward_cols compose them. The re-weighting applies
 * where c > fy = f(c_y); the caller replaces both for the target column. A
 * scripted log h is evaluated only under the mask: the CPU computes it
 * everywhere and then drops the unmasked values. */
template <bool GRAD>
static __device__ __forceinline__ float class_logit(const facet_head_params &p, float c, float fy, float *dz)
{
    float lh = 0.0f, dlh = 0.0f;
    if (facet_head_reweights(&p)) {
        if (p.reweight == FACET_HEAD_REWEIGHT_PROGRAM) {
            if (c > fy) {
                lh = facet_expr_eval1(&c_programs[FACET_HEAD_PROGRAM_LOGH], c);
                if (GRAD) dlh = facet_expr_eval1(&c_programs[FACET_HEAD_PROGRAM_LOGH_GRAD], c);
            }
        } else {
            facet_logh(&p, c, &lh, &dlh);   /* FIXED: dlh = 0, so dz = s as on the CPU */
        }
    }
    if (GRAD) *dz = facet_head_logit_grad(&p, c, fy, dlh);
    return facet_head_logit(&p, c, fy, lh);
}

/* Bit i of the programs a call reads: the slots the head's mode uses. */
static unsigned program_bit(int slot) { return 1u << slot; }

/* Copies the program slots in `need` to c_programs. A slot is copied whether
 * or not has_prog is set: the CPU reads head->prog[slot] whenever the mode
 * needs it (a slot never set is all zeros and returns its input), and a stale
 * program of another head must not stand in for it. */
static int upload_programs(const facet_head *head, unsigned need, const char *fn)
{
    for (int slot = 0; slot < FACET_HEAD_PROGRAM_COUNT; slot++) {
        if (!(need & program_bit(slot))) continue;
        cudaError_t e = cudaMemcpyToSymbolAsync(c_programs, &head->prog[slot], sizeof(struct facet_program),
                                                (size_t)slot * sizeof(struct facet_program),
                                                cudaMemcpyHostToDevice, 0);
        int rc = check_cuda(e, fn);
        if (rc) return rc;
    }
    return FACET_STATUS_OK;
}

static int bad_label_dtype(const char *fn, int label_dtype)
{
    return facet_fail(FACET_STATUS_ERR_ARG, "%s: label dtype %d is not int32 or int64", fn, label_dtype);
}

/* ---- target ------------------------------------------------------------------------- */

template <typename L>
static __global__ void target_kernel(facet_head_params p, float *rows, const float *z, const float *wn,
                                     const float *bias, const L *labels, int64_t B, int64_t Kb, int64_t off)
{
    FACET_CUDA_FOR(i, B) {
        const int64_t k = (int64_t)labels[i] - off;
        if (k < 0 || k >= Kb) continue;     /* the label lies in another block */
        float *row = rows + i * FACET_HEAD_ROW_COUNT;
        float v = z[i * Kb + k], f, df;
        if (p.raw) {
            if (bias) v += bias[k];
            f = v;
            df = 1.0f;
        } else {
            v = facet_clamp_cos(v / fmaxf(wn[k], WNORM_FLOOR));
            if (p.margin == FACET_HEAD_MARGIN_PROGRAM) {
                f = facet_expr_eval1(&c_programs[FACET_HEAD_PROGRAM_MARGIN], v);
                df = facet_expr_eval1(&c_programs[FACET_HEAD_PROGRAM_MARGIN_GRAD], v);
            } else {
                facet_margin(&p, v, &f, &df);
            }
        }
        row[FACET_HEAD_ROW_COS] = v;
        row[FACET_HEAD_ROW_MARGIN] = f;
        row[FACET_HEAD_ROW_MARGIN_GRAD] = df;
        row[FACET_HEAD_ROW_TARGET] = p.raw ? f : p.s * f;
    }
}

extern "C" int facet_cuda_head_target(const struct facet_head *head, float *rows, const float *logits,
                                      const float *wnorm, const float *bias, const void *labels, int label_dtype,
                                      int64_t B, int64_t Kb, int64_t class_offset)
{
    const char *fn = "facet_cuda_head_target";
    if (label_dtype != FACET_DTYPE_INT32 && label_dtype != FACET_DTYPE_INT64) return bad_label_dtype(fn, label_dtype);
    if (B <= 0 || Kb <= 0) return FACET_STATUS_OK;
    const facet_head_params p = head->p;
    if (!p.raw && p.margin == FACET_HEAD_MARGIN_PROGRAM) {
        int rc = upload_programs(head, program_bit(FACET_HEAD_PROGRAM_MARGIN) | program_bit(FACET_HEAD_PROGRAM_MARGIN_GRAD), fn);
        if (rc) return rc;
    }
    if (label_dtype == FACET_DTYPE_INT32)
        target_kernel<int32_t><<<grid_blocks(B), FACET_CUDA_THREADS>>>(p, rows, logits, wnorm, bias,
                                                                       (const int32_t *)labels, B, Kb, class_offset);
    else
        target_kernel<int64_t><<<grid_blocks(B), FACET_CUDA_THREADS>>>(p, rows, logits, wnorm, bias,
                                                                       (const int64_t *)labels, B, Kb, class_offset);
    return check_launch(fn);
}

/* ---- the forward row pass ------------------------------------------------------------ */

/* A log-sum-exp pair and facet_lse_merge as a block_reduce op. */
struct lse_pair {
    float m, s;
};

struct lse_op {
    __device__ __forceinline__ lse_pair operator()(lse_pair a, lse_pair b) const
    {
        facet_lse_merge(&a.m, &a.s, b.m, b.s);
        return a;
    }
};

template <typename L>
static __global__ void __launch_bounds__(PARTIAL_MAX_THREADS)
partial_kernel(facet_head_params p, float *rows, float *z, const float *wn, const float *bias, const L *labels,
               int64_t B, int64_t Kb, int64_t off)
{
    const lse_pair empty = { -INFINITY, 0.0f };
    FACET_CUDA_FOR_BLOCK(i, B) {
        float *zr = z + i * Kb;
        float *row = rows + i * FACET_HEAD_ROW_COUNT;
        const float fy = row[FACET_HEAD_ROW_MARGIN], target = row[FACET_HEAD_ROW_TARGET];
        const int64_t ty = (int64_t)labels[i] - off;
        lse_pair acc = empty;
        for (int64_t k = threadIdx.x; k < Kb; k += blockDim.x) {
            float c = zr[k];
            if (p.raw) {
                if (bias) c += bias[k];
            } else {
                c = facet_clamp_cos(c / fmaxf(wn[k], WNORM_FLOOR));
            }
            const float l = k == ty ? target : class_logit<false>(p, c, fy, NULL);
            facet_lse_merge(&acc.m, &acc.s, l, 1.0f);   /* -inf logits are empty pairs, NaN ones stay */
        }
        acc = block_reduce(acc, lse_op(), empty);
        if (threadIdx.x == 0) {
            row[FACET_HEAD_ROW_MAX] = acc.m;
            row[FACET_HEAD_ROW_SUMEXP] = acc.s;
        }
    }
}

extern "C" int facet_cuda_head_partial(const struct facet_head *head, float *rows, float *logits, const float *wnorm,
                                       const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb,
                                       int64_t class_offset)
{
    const char *fn = "facet_cuda_head_partial";
    if (label_dtype != FACET_DTYPE_INT32 && label_dtype != FACET_DTYPE_INT64) return bad_label_dtype(fn, label_dtype);
    if (B <= 0) return FACET_STATUS_OK;    /* Kb == 0 still runs: the rows get (-inf, 0) as on the CPU */
    const facet_head_params p = head->p;
    if (!p.raw && p.reweight == FACET_HEAD_REWEIGHT_PROGRAM) {
        int rc = upload_programs(head, program_bit(FACET_HEAD_PROGRAM_LOGH), fn);
        if (rc) return rc;
    }
    int dev = 0, sms = 0;
    int rc = check_cuda(cudaGetDevice(&dev), fn);
    if (!rc) rc = check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), fn);
    if (rc) return rc;
    /* B is small (hundreds): widen the blocks until B of them fill the GPU
     * (2048 resident threads an SM), but not past the row's length */
    int threads = 256;
    while (threads < PARTIAL_MAX_THREADS && B * threads < (int64_t)sms * 2048) threads *= 2;
    while (threads > 32 && threads / 2 >= Kb) threads /= 2;
    if (label_dtype == FACET_DTYPE_INT32)
        partial_kernel<int32_t><<<item_blocks(B), threads>>>(p, rows, logits, wnorm, bias, (const int32_t *)labels,
                                                             B, Kb, class_offset);
    else
        partial_kernel<int64_t><<<item_blocks(B), threads>>>(p, rows, logits, wnorm, bias, (const int64_t *)labels,
                                                             B, Kb, class_offset);
    return check_launch(fn);
}

/* ---- the backward pass ---------------------------------------------------------------- */

/* The state of a tile of rows, read once a tile instead of once an element. */
struct row_state {
    float m[BW_TILE];       /* row max */
    float inv_sum[BW_TILE]; /* 1 / sumexp, as backward_cols computes it */
    float w[BW_TILE];       /* dLoss/dCE_i; 0 for rows dropped by hard mining */
    float fy[BW_TILE];      /* f(c_y): the re-weighting mask */
    float target[BW_TILE];  /* the target logit */
    float dzy[BW_TILE];     /* s * df/dc at c_y */
    int64_t col[BW_TILE];   /* label - class_offset: the target column, maybe outside the block */
};

template <typename L>
static __global__ void __launch_bounds__(BW_TILE)
backward_kernel(facet_head_params p, float *z, const float *rows, const float *wn, const float *bias, const L *labels,
                int64_t B, int64_t Kb, int64_t off, float *colsum, float *colsum_cos)
{
    __shared__ row_state st;
    __shared__ float red_s[BW_ROWS][BW_COLS], red_c[BW_ROWS][BW_COLS];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * BW_COLS + tx;
    const float s = p.raw ? 1.0f : p.s;
    for (int64_t k0 = (int64_t)blockIdx.x * BW_COLS; k0 < Kb; k0 += (int64_t)gridDim.x * BW_COLS) {
        const int64_t k = k0 + tx;
        const bool live = k < Kb;
        const float wk = wn && live ? fmaxf(wn[k], WNORM_FLOOR) : 1.0f;
        const float bk = bias && live ? bias[k] : 0.0f;
        float cs = 0.0f, cc = 0.0f;
        for (int64_t i0 = 0; i0 < B; i0 += BW_TILE) {
            const int n = B - i0 < BW_TILE ? (int)(B - i0) : BW_TILE;
            __syncthreads();    /* the previous tile has been consumed */
            if (tid < n) {
                const float *row = rows + (i0 + tid) * FACET_HEAD_ROW_COUNT;
                st.m[tid] = row[FACET_HEAD_ROW_MAX];
                st.inv_sum[tid] = 1.0f / row[FACET_HEAD_ROW_SUMEXP];
                st.w[tid] = row[FACET_HEAD_ROW_WEIGHT];
                st.fy[tid] = row[FACET_HEAD_ROW_MARGIN];
                st.target[tid] = row[FACET_HEAD_ROW_TARGET];
                st.dzy[tid] = s * row[FACET_HEAD_ROW_MARGIN_GRAD];
                st.col[tid] = (int64_t)labels[i0 + tid] - off;
            }
            __syncthreads();
            if (!live) continue;
            for (int r = ty; r < n; r += BW_ROWS) {
                float *zp = z + (i0 + r) * Kb + k;
                const float w = st.w[r];
                if (w == 0.0f) {    /* dropped by hard mining */
                    *zp = 0.0f;
                    continue;
                }
                /* the block still holds the GEMM output: cosines (raw: logits) as in partial */
                const float c = p.raw ? *zp + bk : facet_clamp_cos(*zp / wk);
                float dz;
                float l = class_logit<true>(p, c, st.fy[r], &dz);
                const bool is_target = st.col[r] == k;
                if (is_target) {
                    l = st.target[r];
                    dz = st.dzy[r];
                }
                /* the operations and their order are backward_cols' */
                const float prob = facet_fast_exp(l - st.m[r]) * st.inv_sum[r];
                float g = w * prob * dz;
                if (wn) g /= wk;
                cc += g * c;
                cs += g;
                if (is_target) {    /* the -1 of (p - onehot) */
                    float g1 = w * dz;
                    if (wn) g1 /= wk;
                    g -= g1;
                    cs -= g1;
                    cc -= g1 * c;
                }
                *zp = g;
            }
        }
        red_s[ty][tx] = cs;
        red_c[ty][tx] = cc;
        __syncthreads();
        if (ty == 0 && live) {
            float a = 0.0f, b = 0.0f;
            for (int j = 0; j < BW_ROWS; j++) {
                a += red_s[j][tx];
                b += red_c[j][tx];
            }
            if (colsum) colsum[k] = a;
            if (colsum_cos) colsum_cos[k] = b;
        }
        __syncthreads();    /* red_s/red_c are reused by the next column tile */
    }
}

extern "C" int facet_cuda_head_backward(const struct facet_head *head, float *logits, const float *rows,
                                        const float *wnorm, const float *bias, const void *labels, int label_dtype,
                                        int64_t B, int64_t Kb, int64_t class_offset, float *colsum,
                                        float *colsum_cos)
{
    const char *fn = "facet_cuda_head_backward";
    if (label_dtype != FACET_DTYPE_INT32 && label_dtype != FACET_DTYPE_INT64) return bad_label_dtype(fn, label_dtype);
    if (Kb <= 0) return FACET_STATUS_OK;   /* B == 0 still runs: the column sums become 0 as on the CPU */
    const facet_head_params p = head->p;
    if (!p.raw && p.reweight == FACET_HEAD_REWEIGHT_PROGRAM) {
        int rc = upload_programs(head, program_bit(FACET_HEAD_PROGRAM_LOGH) | program_bit(FACET_HEAD_PROGRAM_LOGH_GRAD), fn);
        if (rc) return rc;
    }
    int64_t tiles = (Kb + BW_COLS - 1) / BW_COLS;
    unsigned blocks = tiles > FACET_CUDA_MAX_BLOCKS ? (unsigned)FACET_CUDA_MAX_BLOCKS : (unsigned)tiles;
    dim3 block(BW_COLS, BW_ROWS);
    if (label_dtype == FACET_DTYPE_INT32)
        backward_kernel<int32_t><<<blocks, block>>>(p, logits, rows, wnorm, bias, (const int32_t *)labels, B, Kb,
                                                    class_offset, colsum, colsum_cos);
    else
        backward_kernel<int64_t><<<blocks, block>>>(p, logits, rows, wnorm, bias, (const int64_t *)labels, B, Kb,
                                                    class_offset, colsum, colsum_cos);
    return check_launch(fn);
}
