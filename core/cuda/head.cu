/*
 * head.cu - the loss heads' fused row passes on the GPU (the row helpers they
 * use, row norms and the backward of L2 normalisation, are normalize.cu's).
 * The contracts and formulas are those of head.c; every per-element formula
 * comes from head_math.h (facet_margin, facet_logh, facet_expr_eval1,
 * facet_fast_exp, facet_head_cos, facet_head_logit, facet_head_grad,
 * facet_lse_merge, facet_head_row_loss, facet_hard_before, ...), so the CPU
 * specs test the math the GPU runs.
 *
 * Launch shapes (none depends on the GPU model, so neither does a result):
 *   target          one block; a thread per row, and the block's smallest
 *                   row whose label lies outside [0, classes) recorded in the
 *                   head's device status (no copy to the host, no wait).
 *   partial         a row is cut into segments of P_SEG columns; a block takes
 *                   one segment of P_ROWS rows, each thread P_UNROLL columns
 *                   P_THREADS apart (their loads all in flight before any
 *                   use), the reciprocal norms loaded once for the P_ROWS
 *                   rows. A thread's columns make one (max, sum of exp(z -
 *                   max)) pair, as a CPU chunk does; the block merges its
 *                   threads' pairs with facet_lse_merge in block_reduce's
 *                   fixed tree, and a merge kernel folds a row's segments in
 *                   a fixed order (a warp per row: lane j takes segments j,
 *                   j + 32, ... in turn, then the warp's tree). No atomics.
 *   update_t,       one block each: CurricularFace's t from the rows' c_y,
 *   update_norms    AdaFace's norm statistics (lanes summed in double, folded
 *                   in head.c's order: the same bits).
 *   finish          per row: the loss and the weight (mean, focal); hard
 *                   mining ranks every row against all the others by
 *                   facet_hard_before (B^2 comparisons, B is small) and keeps
 *                   those ranked below floor(keep B); one block sums the
 *                   loss in double. The loss and the label verdict are the one
 *                   value read back (into page-locked memory): the only
 *                   wait of a head's forward and backward.
 *   backward        32 x 8 blocks over a tile of 32 columns: threadIdx.x owns a
 *                   column (reads of a row stay coalesced), threadIdx.y takes
 *                   every 8th row, BW_UNROLL rows loaded before any is used;
 *                   the row state (max, 1/sumexp, weight, ...) is staged in
 *                   shared memory a tile of rows at a time, and the column
 *                   sums are reduced in shared memory and written once, so
 *                   there are no atomics and the result does not depend on
 *                   scheduling.
 *
 * Parameters and programs: struct facet_head_params goes by value as a kernel
 * argument. The expression programs the head's mode reads live in __constant__
 * memory (every thread of a warp runs the same instruction, so the constant
 * cache broadcasts), copied with cudaMemcpyToSymbolAsync on the legacy default
 * stream only when a slot's program differs from the one last copied there
 * (facet_head.prog_id), ordered after earlier kernels that read the old ones
 * and before the launch that reads the new ones. c_programs is one buffer per
 * process (one device, as alloc.cu's cache) shared by all heads, so two host
 * threads running heads at once may see each other's programs: the heads are
 * not thread-safe across host threads (the Lua layer drives them from one
 * thread).
 *
 * Rounding: the cosines, the logit composition, the per-element gradient and
 * the pair merge round per operation as on the CPU (the cosines are the same
 * bits), but the margins (acosf, cosf, ...) and logf/powf are CUDA's, nvcc
 * contracts the rest of head_math.h into FMAs, and the sums run in a
 * different order than on the CPU: results match the CPU to within float
 * rounding, not bit for bit. They do not depend on scheduling or on the GPU.
 */
#include "cuda_common.cuh"
#include <stdlib.h>
#include <string.h>

#include "head_math.h"

enum {
    TARGET_MAX_THREADS = 1024,
    P_THREADS = 256,                    /* partial: threads a block */
    P_UNROLL = 8,                       /* partial: columns a thread */
    P_SEG = P_THREADS * P_UNROLL,       /* partial: columns a segment */
    P_ROWS = 4,                         /* partial: rows a block */
    MERGE_THREADS = 256,                /* merge: a warp per row */
    FIN_THREADS = 256,                  /* finish: rows a block (and hard mining's tile) */
    TOTAL_THREADS = 1024,               /* finish: the one block summing the loss */
    BW_COLS = 32,                       /* backward: columns a block (one warp wide) */
    BW_ROWS = 8,                        /* backward: row phases a block */
    BW_TILE = BW_COLS * BW_ROWS,        /* backward: rows of state staged at once */
    BW_UNROLL = 8                       /* backward: rows a thread loads before it computes */
};

static __constant__ struct facet_program c_programs[FACET_HEAD_PROGRAM_COUNT];

/* ---- per-head device state ---------------------------------------------------------------- */

/* What the target kernels found since the last finish: the first row whose
 * label lay outside [0, classes) (-1: none), its label and that call's classes. */
struct head_status {
    long long row, label, classes;
};

/* What a finish reads back: the loss, and the status it consumed. */
struct head_result {
    double loss;
    long long row, label, classes;
};

struct head_device {
    head_status status;
    head_result result;
};

struct facet_head_cuda {
    head_device *dev;       /* caching allocator */
    head_result *host;      /* page-locked: the read back is one DMA */
};

extern "C" void facet_cuda_head_release(struct facet_head *head)
{
    facet_head_cuda *st = head->cuda;
    if (!st) return;
    head->cuda = NULL;
    if (st->dev) (void)facet_cuda_free(st->dev);
    if (st->host) (void)facet_cuda_host_free(st->host);
    free(st);
}

/* head->cuda, made on the head's first CUDA call (the status starts empty) */
static int head_state(struct facet_head *head, facet_head_cuda **out, const char *fn)
{
    *out = head->cuda;
    if (head->cuda) return FACET_STATUS_OK;
    facet_head_cuda *st = (facet_head_cuda *)calloc(1, sizeof *st);
    if (!st) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of host memory", fn);
    head->cuda = st;
    int rc = facet_cuda_malloc((void **)&st->dev, sizeof(head_device));
    if (!rc) rc = facet_cuda_host_alloc((void **)&st->host, sizeof(head_result));
    if (!rc) rc = check_cuda(cudaMemsetAsync(&st->dev->status, 0xff, sizeof(head_status), 0), fn);   /* row = -1 */
    if (rc) {
        facet_cuda_head_release(head);
        return rc;
    }
    st->host->row = -1;
    *out = st;
    return FACET_STATUS_OK;
}

extern "C" void facet_cuda_head_bad_label(const struct facet_head *head, int64_t *row, int64_t *label,
                                          int64_t *classes)
{
    const facet_head_cuda *st = head->cuda;
    if (!st || st->host->row < 0) return;
    *row = st->host->row;
    *label = st->host->label;
    *classes = st->host->classes;
}

/* ---- shared by the head kernels ----------------------------------------------------- */

/* A compiled program at c; not inlined, so the unrolled loops that may call
 * it stay small. */
static __device__ __noinline__ float run_program(int slot, float c)
{
    return facet_expr_eval1(&c_programs[slot], c);
}

/* The logit of a class with cosine (raw heads: logit) c, and with GRAD its
 * derivative dz/dc: head_math.h's facet_head_logit / facet_head_logit_grad,
 * as chunk_logits and backward_cols compose them. The re-weighting applies
 * where c > fy = f(c_y); the caller replaces both for the target column. A
 * scripted log h is evaluated only under the mask: the CPU computes it
 * everywhere and then drops the unmasked values. */
template <bool GRAD>
static __device__ __forceinline__ float class_logit(const facet_head_params &p, float c, float fy, float rt, float *dz)
{
    float lh = 0.0f, dlh = 0.0f;
    if (facet_head_reweights(&p)) {
        if (p.reweight == FACET_HEAD_REWEIGHT_PROGRAM) {
            if (c > fy) {
                lh = run_program(FACET_HEAD_PROGRAM_LOGH, c);
                if (GRAD) dlh = run_program(FACET_HEAD_PROGRAM_LOGH_GRAD, c);
            }
        } else {
            facet_logh(&p, c, rt, &lh, &dlh);   /* FIXED: dlh = 0, so dz = s as on the CPU */
        }
    }
    if (GRAD) *dz = facet_head_logit_grad(&p, c, fy, dlh);
    return facet_head_logit(&p, c, fy, lh);
}

/* Bit i of the programs a call reads: the slots the head's mode uses. */
static unsigned program_bit(int slot) { return 1u << slot; }

/* The id of the program in each slot of c_programs (valid once copied). */
static uint64_t uploaded_id[FACET_HEAD_PROGRAM_COUNT];
static int uploaded[FACET_HEAD_PROGRAM_COUNT];

/* Copies the program slots in `need` to c_programs unless they hold them
 * already. A slot is copied whether or not has_prog is set: the CPU reads
 * head->prog[slot] whenever the mode needs it (a slot never set is all zeros,
 * id 0, and returns its input), and a stale program of another head must not
 * stand in for it. The source is pageable, so a copy may wait for the device:
 * it happens when a head's programs first run and when heads with different
 * programs take turns, not per step. */
static int upload_programs(const facet_head *head, unsigned need, const char *fn)
{
    for (int slot = 0; slot < FACET_HEAD_PROGRAM_COUNT; slot++) {
        if (!(need & program_bit(slot))) continue;
        if (uploaded[slot] && uploaded_id[slot] == head->prog_id[slot]) continue;
        uploaded[slot] = 0;
        cudaError_t e = cudaMemcpyToSymbolAsync(c_programs, &head->prog[slot], sizeof(struct facet_program),
                                                (size_t)slot * sizeof(struct facet_program),
                                                cudaMemcpyHostToDevice, 0);
        int rc = check_cuda(e, fn);
        if (rc) return rc;
        uploaded[slot] = 1;
        uploaded_id[slot] = head->prog_id[slot];
    }
    return FACET_STATUS_OK;
}

static int bad_label_dtype(const char *fn, int label_dtype)
{
    return facet_fail(FACET_STATUS_ERR_ARG, "%s: label dtype %d is not int32 or int64", fn, label_dtype);
}

/* threads for one block over n items: a multiple of 32, at most `most` */
static unsigned block_for(int64_t n, unsigned most)
{
    int64_t t = (n + 31) / 32 * 32;
    if (t < 32) t = 32;
    return t > (int64_t)most ? most : (unsigned)t;
}

struct op_min_i64 {
    __device__ __forceinline__ long long operator()(long long a, long long b) const { return b < a ? b : a; }
};

/* ---- target ------------------------------------------------------------------------- */

template <typename L>
static __global__ void __launch_bounds__(TARGET_MAX_THREADS)
target_kernel(facet_head_params p, float *rows, const float *z, const float *wn, const float *bias, const L *labels,
              int64_t B, int64_t Kb, int64_t off, int64_t classes, head_status *status)
{
    const long long none = 0x7fffffffffffffffLL;
    long long bad = none;
    for (int64_t i = threadIdx.x; i < B; i += blockDim.x) {
        const int64_t y = (int64_t)labels[i];
        if (y < 0 || y >= classes) {    /* recorded; the row is left alone */
            if (i < bad) bad = i;
            continue;
        }
        const int64_t k = y - off;
        if (k < 0 || k >= Kb) continue;     /* the label lies in another block */
        float *row = rows + i * FACET_HEAD_ROW_COUNT;
        float v = z[i * Kb + k], f, df, dm = 0.0f;
        if (p.raw) {
            if (bias) v += bias[k];
            f = v;
            df = 1.0f;
        } else {
            v = facet_head_cos(v, facet_head_inv_norm(wn[k]));
            if (p.margin == FACET_HEAD_MARGIN_PROGRAM) {
                f = run_program(FACET_HEAD_PROGRAM_MARGIN, v);
                df = run_program(FACET_HEAD_PROGRAM_MARGIN_GRAD, v);
            } else {
                facet_margin(&p, v, row[FACET_HEAD_ROW_NORM], &f, &df, &dm);
            }
        }
        if (p.margin == FACET_HEAD_MARGIN_MAGFACE) row[FACET_HEAD_ROW_MARGIN_DM] = dm;
        row[FACET_HEAD_ROW_COS] = v;
        row[FACET_HEAD_ROW_MARGIN] = f;
        row[FACET_HEAD_ROW_MARGIN_GRAD] = df;
        row[FACET_HEAD_ROW_TARGET] = p.raw ? f : p.s * f;
    }
    bad = block_reduce(bad, op_min_i64(), none);
    /* the first bad row since the last finish stays (calls over several blocks check the same labels) */
    if (threadIdx.x == 0 && bad != none && (status->row < 0 || bad < status->row)) {
        status->row = bad;
        status->label = (long long)labels[bad];
        status->classes = classes;
    }
}

extern "C" int facet_cuda_head_target(struct facet_head *head, float *rows, const float *logits, const float *wnorm,
                                      const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb,
                                      int64_t class_offset, int64_t classes)
{
    const char *fn = "facet_cuda_head_target";
    if (label_dtype != FACET_DTYPE_INT32 && label_dtype != FACET_DTYPE_INT64) return bad_label_dtype(fn, label_dtype);
    if (B <= 0) return FACET_STATUS_OK;     /* Kb == 0 still runs: the labels are checked */
    facet_head_cuda *st;
    FACET_CUDA_TRY(head_state(head, &st, fn));
    const facet_head_params p = head->p;
    if (!p.raw && p.margin == FACET_HEAD_MARGIN_PROGRAM)
        FACET_CUDA_TRY(upload_programs(head, program_bit(FACET_HEAD_PROGRAM_MARGIN) |
                                                 program_bit(FACET_HEAD_PROGRAM_MARGIN_GRAD), fn));
    const unsigned threads = block_for(B, TARGET_MAX_THREADS);
    head_status *status = &st->dev->status;
    if (label_dtype == FACET_DTYPE_INT32)
        target_kernel<int32_t><<<1, threads>>>(p, rows, logits, wnorm, bias, (const int32_t *)labels, B, Kb,
                                               class_offset, classes, status);
    else
        target_kernel<int64_t><<<1, threads>>>(p, rows, logits, wnorm, bias, (const int64_t *)labels, B, Kb,
                                               class_offset, classes, status);
    return check_launch(fn);
}

/* ---- the forward row pass ------------------------------------------------------------ */

/* A log-sum-exp pair and facet_lse_merge as a reduction op. */
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

/* The pairs of a block's P_ROWS rows, merged row by row. */
struct lse_rows {
    float m[P_ROWS], s[P_ROWS];
};

struct lse_rows_op {
    __device__ __forceinline__ lse_rows operator()(lse_rows a, lse_rows b) const
    {
#pragma unroll
        for (int r = 0; r < P_ROWS; r++) facet_lse_merge(&a.m[r], &a.s[r], b.m[r], b.s[r]);
        return a;
    }
};

/* Segment seg of rows [i0, i0 + P_ROWS): each thread's columns k0 + j
 * P_THREADS (j < P_UNROLL) make one pair per row, as head.c's chunks do: the
 * max over the live columns (a NaN never wins), then the sum of
 * exp(l - max); a max of -inf (only -inf and NaN logits) gives 0, or NaN when a
 * logit is NaN. With one segment the block writes the rows' max and sumexp,
 * otherwise its pairs go to parts[i * nseg + seg] for the merge kernel. */
template <typename L>
static __global__ void __launch_bounds__(P_THREADS, 3)
partial_kernel(facet_head_params p, float *rows, const float *__restrict__ z, const float *__restrict__ wn,
               const float *__restrict__ bias, const L *__restrict__ labels, int64_t B, int64_t Kb, int64_t off,
               int64_t nseg, lse_pair *parts)
{
    lse_rows empty;
#pragma unroll
    for (int r = 0; r < P_ROWS; r++) {
        empty.m[r] = -INFINITY;
        empty.s[r] = 0.0f;
    }
    for (int64_t seg = blockIdx.x; seg < nseg; seg += gridDim.x) {
        const int64_t k0 = seg * P_SEG + threadIdx.x;
        /* per column: the reciprocal norm (cosine heads) or the bias (raw heads) */
        float inv[P_UNROLL], add[P_UNROLL];
#pragma unroll
        for (int j = 0; j < P_UNROLL; j++) {
            const int64_t k = k0 + (int64_t)j * P_THREADS;
            const bool live = k < Kb;
            inv[j] = !p.raw && live ? facet_head_inv_norm(wn[k]) : 1.0f;
            add[j] = p.raw && bias && live ? bias[k] : 0.0f;
        }
        for (int64_t i0 = (int64_t)blockIdx.y * P_ROWS; i0 < B; i0 += (int64_t)gridDim.y * P_ROWS) {
            lse_rows acc = empty;
#pragma unroll
            for (int r = 0; r < P_ROWS; r++) {
                const int64_t i = i0 + r;
                if (i >= B) continue;
                const float *zr = z + i * Kb;
                const float *row = rows + i * FACET_HEAD_ROW_COUNT;
                const float fy = row[FACET_HEAD_ROW_MARGIN], target = row[FACET_HEAD_ROW_TARGET];
                const float rt = row[FACET_HEAD_ROW_T];
                const int64_t ty = (int64_t)labels[i] - off;
                float v[P_UNROLL];
#pragma unroll
                for (int j = 0; j < P_UNROLL; j++) {
                    const int64_t k = k0 + (int64_t)j * P_THREADS;
                    v[j] = k < Kb ? zr[k] : 0.0f;
                }
                float l[P_UNROLL];
                float cm = -INFINITY;
#pragma unroll
                for (int j = 0; j < P_UNROLL; j++) {
                    const int64_t k = k0 + (int64_t)j * P_THREADS;
                    const float c = p.raw ? v[j] + add[j] : facet_head_cos(v[j], inv[j]);
                    l[j] = k == ty ? target : class_logit<false>(p, c, fy, rt, NULL);
                    if (k < Kb) cm = l[j] > cm ? l[j] : cm;
                }
                float cs = 0.0f;
                if (cm == -INFINITY) {
#pragma unroll
                    for (int j = 0; j < P_UNROLL; j++)
                        if (k0 + (int64_t)j * P_THREADS < Kb && l[j] != l[j]) cs = l[j];
                } else {
#pragma unroll
                    for (int j = 0; j < P_UNROLL; j++)
                        if (k0 + (int64_t)j * P_THREADS < Kb) cs += facet_fast_exp(l[j] - cm);
                }
                acc.m[r] = cm;
                acc.s[r] = cs;
            }
            acc = block_reduce(acc, lse_rows_op(), empty);
            if (threadIdx.x == 0) {
#pragma unroll
                for (int r = 0; r < P_ROWS; r++) {
                    const int64_t i = i0 + r;
                    if (i >= B) continue;
                    if (nseg == 1) {
                        rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_MAX] = acc.m[r];
                        rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_SUMEXP] = acc.s[r];
                    } else {
                        lse_pair q = { acc.m[r], acc.s[r] };
                        parts[i * nseg + seg] = q;
                    }
                }
            }
        }
    }
}

/* A warp per row folds the row's nseg pairs: lane j merges segments j, j + 32,
 * ... in turn, then the warp's fixed tree. */
static __global__ void merge_kernel(float *rows, const lse_pair *parts, int64_t B, int64_t nseg)
{
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; i < B; i += warps) {
        lse_pair acc = { -INFINITY, 0.0f };
        const lse_pair *pr = parts + i * nseg;
        for (int64_t q = lane; q < nseg; q += 32) facet_lse_merge(&acc.m, &acc.s, pr[q].m, pr[q].s);
        acc = warp_reduce(acc, lse_op());
        if (lane == 0) {
            rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_MAX] = acc.m;
            rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_SUMEXP] = acc.s;
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
    if (!p.raw && p.reweight == FACET_HEAD_REWEIGHT_PROGRAM)
        FACET_CUDA_TRY(upload_programs(head, program_bit(FACET_HEAD_PROGRAM_LOGH), fn));
    const int64_t nseg = Kb > 0 ? (Kb + P_SEG - 1) / P_SEG : 1;
    const int64_t tiles = (B + P_ROWS - 1) / P_ROWS;
    dim3 grid((unsigned)(nseg < 0x7fffffff ? nseg : 0x7fffffff), (unsigned)(tiles < 65535 ? tiles : 65535));
    scratch parts = { NULL };
    if (nseg > 1) FACET_CUDA_TRY(scratch_alloc(&parts, sizeof(lse_pair) * (size_t)(B * nseg), fn));
    lse_pair *pp = (lse_pair *)parts.p;
    if (label_dtype == FACET_DTYPE_INT32)
        partial_kernel<int32_t><<<grid, P_THREADS>>>(p, rows, logits, wnorm, bias, (const int32_t *)labels, B, Kb,
                                                     class_offset, nseg, pp);
    else
        partial_kernel<int64_t><<<grid, P_THREADS>>>(p, rows, logits, wnorm, bias, (const int64_t *)labels, B, Kb,
                                                     class_offset, nseg, pp);
    int rc = check_launch(fn);
    if (!rc && nseg > 1) {
        const int64_t warps_per_block = MERGE_THREADS / 32;
        merge_kernel<<<item_blocks((B + warps_per_block - 1) / warps_per_block), MERGE_THREADS>>>(rows, pp, B, nseg);
        rc = check_launch(fn);
    }
    int rc2 = scratch_free(&parts, fn);    /* stream-ordered: the merge still reads it safely */
    return rc ? rc : rc2;
}

/* ---- the adaptive heads' batch statistics ----------------------------------------------- */

/* head.c's lanes_total in one block of FACET_HEAD_LANES threads (thread j
 * sums lane j, the tree folds them): the same additions in the same order.
 * Every thread gets the total. */
static __device__ double block_lanes_total(double *part, const float *v, int64_t stride, int64_t n, float lo,
                                           float hi, double center, int square)
{
    const int j = threadIdx.x;
    __syncthreads();    /* part may still be read by an earlier call */
    part[j] = facet_head_lane(v, stride, n, j, lo, hi, center, square);
    __syncthreads();
    for (int half = FACET_HEAD_LANES / 2; half > 0; half /= 2) {
        facet_head_lane_fold(part, j, half);
        __syncthreads();
    }
    return part[0];
}

/* CurricularFace: t from the rows' c_y, then into every row */
static __global__ void __launch_bounds__(FACET_HEAD_LANES)
update_t_kernel(float *rows, int64_t B, float *t, double momentum)
{
    __shared__ double part[FACET_HEAD_LANES];
    const double sum = block_lanes_total(part, rows + FACET_HEAD_ROW_COS, FACET_HEAD_ROW_COUNT, B, -INFINITY, INFINITY,
                                         0.0, 0);
    const float nt = facet_head_ema(*t, sum / (double)B, momentum);
    __syncthreads();    /* every thread has read the old t */
    if (threadIdx.x == 0) *t = nt;
    for (int64_t i = threadIdx.x; i < B; i += FACET_HEAD_LANES) rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_T] = nt;
}

extern "C" int facet_cuda_head_update_t(float *rows, int64_t B, float *t, double momentum)
{
    update_t_kernel<<<1, FACET_HEAD_LANES>>>(rows, B, t, momentum);
    return check_launch("facet_cuda_head_update_t");
}

/* AdaFace: the batch's mean and unbiased std of the clamped norms, the
 * running statistics, then every row's z */
static __global__ void __launch_bounds__(FACET_HEAD_LANES)
update_norms_kernel(float *rows, int64_t B, const float *norms, float *mean, float *std, double momentum, double h)
{
    __shared__ double part[FACET_HEAD_LANES];
    const float lo = FACET_ADAFACE_NORM_MIN, hi = FACET_ADAFACE_NORM_MAX;
    /* one row has no standard deviation: the statistics stay, as head.c */
    const double mom = B < 2 ? 0.0 : momentum;
    const double bmean = block_lanes_total(part, norms, 1, B, lo, hi, 0.0, 0) / (double)B;
    const double bstd = B < 2 ? 0.0 : sqrt(block_lanes_total(part, norms, 1, B, lo, hi, bmean, 1) / (double)(B - 1));
    const float nm = facet_head_ema(*mean, bmean, mom), ns = facet_head_ema(*std, bstd, mom);
    __syncthreads();    /* every thread has read the old statistics */
    if (threadIdx.x == 0) {
        *mean = nm;
        *std = ns;
    }
    for (int64_t i = threadIdx.x; i < B; i += FACET_HEAD_LANES)
        rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_NORM] = facet_adaface_z(norms[i], nm, ns, h);
}

extern "C" int facet_cuda_head_update_norms(float *rows, int64_t B, const float *norms, float *mean, float *std,
                                            double momentum, double h)
{
    update_norms_kernel<<<1, FACET_HEAD_LANES>>>(rows, B, norms, mean, std, momentum, h);
    return check_launch("facet_cuda_head_update_norms");
}

/* MagFace: each row's margin and regulariser term from its norm */
static __global__ void magface_rows_kernel(facet_head_params p, float *rows, int64_t B, const float *norms)
{
    FACET_CUDA_FOR(i, B) facet_magface_row(&p, rows + i * FACET_HEAD_ROW_COUNT, norms[i]);
}

extern "C" int facet_cuda_head_update_margins(const struct facet_head_params *p, float *rows, int64_t B,
                                              const float *norms)
{
    magface_rows_kernel<<<grid_blocks(B), FACET_CUDA_THREADS>>>(*p, rows, B, norms);
    return check_launch("facet_cuda_head_update_margins");
}

/* ElasticFace: each row's margin m + std draw_i and its target fields */
static __global__ void elastic_rows_kernel(facet_head_params p, float *rows, int64_t B, const float *draws)
{
    FACET_CUDA_FOR(i, B) facet_elastic_row(&p, rows + i * FACET_HEAD_ROW_COUNT, fmaf(p.std, draws[i], p.m3));
}

/* ElasticFace+, as head.c: each draw to its place in ascending order
 * (MARGIN_DM of that row) and each row's rank by c_y descending (EXTRA);
 * B^2 comparisons (B is the batch) */
static __global__ void elastic_rank_kernel(float *rows, int64_t B, const float *draws)
{
    FACET_CUDA_FOR(i, B) {
        int64_t q = 0, rank = 0;
        const float di = draws[i], ci = rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_COS];
        for (int64_t j = 0; j < B; j++) {
            q += facet_elastic_draw_before(draws[j], j, di, i);
            rank += facet_elastic_row_before(rows[j * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_COS], j, ci, i);
        }
        rows[q * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_MARGIN_DM] = di;
        rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_EXTRA] = (float)rank;
    }
}

/* the sorted draw of each row's rank (a thread reads another row's
 * MARGIN_DM and writes only its own row's other fields) */
static __global__ void elastic_plus_kernel(facet_head_params p, float *rows, int64_t B)
{
    FACET_CUDA_FOR(i, B) {
        float *row = rows + i * FACET_HEAD_ROW_COUNT;
        const int64_t rank = (int64_t)row[FACET_HEAD_ROW_EXTRA];
        row[FACET_HEAD_ROW_EXTRA] = 0.0f;
        facet_elastic_row(&p, row, fmaf(p.std, rows[rank * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_MARGIN_DM], p.m3));
    }
}

extern "C" int facet_cuda_head_elastic(const struct facet_head_params *p, float *rows, int64_t B, const float *draws)
{
    const char *fn = "facet_cuda_head_elastic";
    if (!p->plus) {
        elastic_rows_kernel<<<grid_blocks(B), FACET_CUDA_THREADS>>>(*p, rows, B, draws);
        return check_launch(fn);
    }
    elastic_rank_kernel<<<grid_blocks(B), FACET_CUDA_THREADS>>>(rows, B, draws);
    FACET_CUDA_TRY(check_launch(fn));
    elastic_plus_kernel<<<grid_blocks(B), FACET_CUDA_THREADS>>>(*p, rows, B);
    return check_launch(fn);
}

/* MagFace: dLoss/d||x_i|| of each row */
static __global__ void magface_coef_kernel(facet_head_params p, const float *rows, int64_t B, const float *norms,
                                           float *coef)
{
    FACET_CUDA_FOR(i, B) coef[i] = facet_magface_coef(&p, rows + i * FACET_HEAD_ROW_COUNT, norms[i], B);
}

extern "C" int facet_cuda_head_norm_grad(const struct facet_head_params *p, const float *rows, int64_t B,
                                         const float *norms, float *coef)
{
    magface_coef_kernel<<<grid_blocks(B), FACET_CUDA_THREADS>>>(*p, rows, B, norms, coef);
    return check_launch("facet_cuda_head_norm_grad");
}

/* ---- the batch level ------------------------------------------------------------------- */

/* Per row: the cross-entropy, and the weight of the mean and focal reductions. */
static __global__ void finish_rows_kernel(facet_head_params p, float *rows, int64_t B)
{
    FACET_CUDA_FOR(i, B) {
        float *r = rows + i * FACET_HEAD_ROW_COUNT;
        const float L = facet_head_row_loss(r[FACET_HEAD_ROW_MAX], r[FACET_HEAD_ROW_SUMEXP], r[FACET_HEAD_ROW_TARGET]);
        r[FACET_HEAD_ROW_LOSS] = L;
        if (p.sample == FACET_HEAD_SAMPLE_FOCAL) r[FACET_HEAD_ROW_WEIGHT] = facet_focal_weight(L, p.gamma) / (float)B;
        else if (p.sample == FACET_HEAD_SAMPLE_MEAN) r[FACET_HEAD_ROW_WEIGHT] = 1.0f / (float)B;
    }
}

/* Hard mining: a row's rank is the number of rows before it in
 * facet_hard_before's order (the losses staged FIN_THREADS at a time); the
 * rows ranked below keep get 1/keep, the others 0: the rows the CPU's sort
 * keeps. */
static __global__ void __launch_bounds__(FIN_THREADS) hard_rank_kernel(float *rows, int64_t B, int64_t keep)
{
    __shared__ float tile[FIN_THREADS];
    for (int64_t base = (int64_t)blockIdx.x * FIN_THREADS; base < B; base += (int64_t)gridDim.x * FIN_THREADS) {
        const int64_t i = base + threadIdx.x;
        const float Li = i < B ? rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_LOSS] : 0.0f;
        int64_t rank = 0;
        for (int64_t j0 = 0; j0 < B; j0 += FIN_THREADS) {
            __syncthreads();    /* the previous tile has been read */
            const int64_t j = j0 + threadIdx.x;
            if (j < B) tile[threadIdx.x] = rows[j * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_LOSS];
            __syncthreads();
            const int n = B - j0 < FIN_THREADS ? (int)(B - j0) : FIN_THREADS;
            if (i < B)
                for (int t = 0; t < n; t++) rank += facet_hard_before(tile[t], j0 + t, Li, i);
        }
        if (i < B) rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_WEIGHT] = rank < keep ? 1.0f / (float)keep : 0.0f;
    }
}

/* One block: the loss (a double sum in block_reduce's fixed order, over B or
 * the kept rows), and the label status since the last finish, which starts
 * over. */
static __global__ void __launch_bounds__(TOTAL_THREADS)
finish_total_kernel(facet_head_params p, const float *rows, int64_t B, int64_t keep, head_device *d)
{
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < B; i += blockDim.x) {
        const float *r = rows + i * FACET_HEAD_ROW_COUNT;
        const float L = r[FACET_HEAD_ROW_LOSS];
        if (p.sample == FACET_HEAD_SAMPLE_HARD) {
            if (r[FACET_HEAD_ROW_WEIGHT] != 0.0f) acc += (double)L;
        } else if (p.sample == FACET_HEAD_SAMPLE_FOCAL) {
            acc += facet_focal_loss(L, p.gamma);
        } else {
            acc += (double)L;
        }
    }
    acc = block_sum(acc);
    /* MagFace's regulariser, a mean over the batch beside the cross-entropy (head.c) */
    double extra = 0.0;
    if (p.margin == FACET_HEAD_MARGIN_MAGFACE) {
        for (int64_t i = threadIdx.x; i < B; i += blockDim.x) extra += (double)rows[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_EXTRA];
        extra = block_sum(extra);
    }
    if (threadIdx.x == 0) {
        d->result.loss = acc / (double)(p.sample == FACET_HEAD_SAMPLE_HARD ? keep : B) + extra / (double)B;
        d->result.row = d->status.row;
        d->result.label = d->status.label;
        d->result.classes = d->status.classes;
        d->status.row = -1;
    }
}

extern "C" int facet_cuda_head_finish(struct facet_head *head, float *rows, int64_t B, double *loss)
{
    const char *fn = "facet_cuda_head_finish";
    facet_head_cuda *st;
    FACET_CUDA_TRY(head_state(head, &st, fn));
    /* no verdict until this call's copy lands: a launch or device error below
     * must not read as the label error of an earlier finish */
    st->host->row = -1;
    const facet_head_params p = head->p;
    const int64_t keep = p.sample == FACET_HEAD_SAMPLE_HARD ? facet_hard_keep(p.keep, B) : B;
    finish_rows_kernel<<<grid_blocks(B), FACET_CUDA_THREADS>>>(p, rows, B);
    FACET_CUDA_TRY(check_launch(fn));
    if (p.sample == FACET_HEAD_SAMPLE_HARD) {
        const int64_t blocks = (B + FIN_THREADS - 1) / FIN_THREADS, most = FACET_CUDA_MAX_BLOCKS;
        hard_rank_kernel<<<(unsigned)(blocks < most ? blocks : most), FIN_THREADS>>>(rows, B, keep);
        FACET_CUDA_TRY(check_launch(fn));
    }
    finish_total_kernel<<<1, block_for(B, TOTAL_THREADS)>>>(p, rows, B, keep, st->dev);
    FACET_CUDA_TRY(check_launch(fn));
    /* the one wait of the step: the loss and the label verdict, one DMA */
    FACET_CUDA_TRY(facet_cuda_memcpy(st->host, &st->dev->result, sizeof(head_result), FACET_COPY_D2H));
    const head_result *r = st->host;
    if (r->row >= 0)
        return facet_fail(FACET_STATUS_ERR_ARG, "facet_head_finish: label %lld of row %lld outside [0, %lld)",
                          r->label, r->row, r->classes);
    *loss = r->loss;
    return FACET_STATUS_OK;
}

/* ---- the backward pass ---------------------------------------------------------------- */

/* The state of a tile of rows, read once a tile instead of once an element. */
struct row_state {
    float m[BW_TILE];       /* row max */
    float inv_sum[BW_TILE]; /* 1 / sumexp, as backward_cols computes it */
    float w[BW_TILE];       /* dLoss/dCE_i; 0 for rows dropped by hard mining */
    float fy[BW_TILE];      /* f(c_y): the re-weighting mask */
    float t[BW_TILE];       /* the row's t (CURRICULAR) */
    float target[BW_TILE];  /* the target logit */
    float dzy[BW_TILE];     /* s * df/dc at c_y */
    int64_t col[BW_TILE];   /* label - class_offset: the target column, maybe outside the block */
};

template <typename L>
static __global__ void __launch_bounds__(BW_TILE, 3)
backward_kernel(facet_head_params p, float *z, const float *rows, const float *wn, const float *bias, const L *labels,
                int64_t B, int64_t Kb, int64_t off, float *colsum, float *colsum_cos)
{
    __shared__ row_state st;
    __shared__ float red_s[BW_ROWS][BW_COLS], red_c[BW_ROWS][BW_COLS];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * BW_COLS + tx;
    const float s = facet_head_scale(&p);
    for (int64_t k0 = (int64_t)blockIdx.x * BW_COLS; k0 < Kb; k0 += (int64_t)gridDim.x * BW_COLS) {
        const int64_t k = k0 + tx;
        const bool live = k < Kb;
        /* the column's reciprocal norm (raw heads: 1) and bias, once for every row */
        const float inv = wn && live ? facet_head_inv_norm(wn[k]) : 1.0f;
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
                st.t[tid] = row[FACET_HEAD_ROW_T];
                st.target[tid] = row[FACET_HEAD_ROW_TARGET];
                st.dzy[tid] = s * row[FACET_HEAD_ROW_MARGIN_GRAD];
                st.col[tid] = (int64_t)labels[i0 + tid] - off;
            }
            __syncthreads();
            if (!live) continue;
            for (int r0 = ty; r0 < n; r0 += BW_ROWS * BW_UNROLL) {
                /* the GEMM output of BW_UNROLL rows, all loads in flight before any is used */
                float v[BW_UNROLL];
#pragma unroll
                for (int u = 0; u < BW_UNROLL; u++) {
                    const int r = r0 + u * BW_ROWS;
                    v[u] = r < n ? z[(i0 + r) * Kb + k] : 0.0f;
                }
#pragma unroll
                for (int u = 0; u < BW_UNROLL; u++) {
                    const int r = r0 + u * BW_ROWS;
                    if (r >= n) continue;
                    float *zp = z + (i0 + r) * Kb + k;
                    const float w = st.w[r];
                    if (w == 0.0f) {    /* dropped by hard mining */
                        *zp = 0.0f;
                        continue;
                    }
                    /* cosines (raw: logits) as in partial; the operations are backward_cols' */
                    const float c = p.raw ? v[u] + bk : facet_head_cos(v[u], inv);
                    float dz;
                    float l = class_logit<true>(p, c, st.fy[r], st.t[r], &dz);
                    const bool is_target = st.col[r] == k;
                    if (is_target) {
                        l = st.target[r];
                        dz = st.dzy[r];
                    }
                    float g = facet_head_grad(w, facet_fast_exp(l - st.m[r]), st.inv_sum[r], dz, inv);
                    cc += g * c;
                    cs += g;
                    if (is_target) {    /* the -1 of (p - onehot) */
                        const float g1 = facet_head_grad_onehot(w, dz, inv);
                        g -= g1;
                        cs -= g1;
                        cc -= g1 * c;
                    }
                    *zp = g;
                }
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
    if (!p.raw && p.reweight == FACET_HEAD_REWEIGHT_PROGRAM)
        FACET_CUDA_TRY(upload_programs(head, program_bit(FACET_HEAD_PROGRAM_LOGH) |
                                                 program_bit(FACET_HEAD_PROGRAM_LOGH_GRAD), fn));
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

/* ---- sub-centres ------------------------------------------------------------------------ */

/* a thread per (row, class): the best of the class's k sub-centres
 * (row i, class c starts at column e k of sub, e = i Kb + c) */
static __global__ void subcenter_max_kernel(float *cos, uint8_t *index, const float *sub, const float *wn, int64_t B,
                                            int64_t Kb, int k)
{
    FACET_CUDA_FOR(e, B * Kb) {
        const int64_t c = e % Kb;
        index[e] = (uint8_t)facet_subcenter_best(sub + e * k, wn + c * k, k, &cos[e]);
    }
}

extern "C" int facet_cuda_head_subcenter_max(float *cos, uint8_t *index, const float *sub, const float *wnorm,
                                             int64_t B, int64_t Kb, int k)
{
    if (B * Kb == 0) return FACET_STATUS_OK;
    subcenter_max_kernel<<<grid_blocks(B * Kb), FACET_CUDA_THREADS>>>(cos, index, sub, wnorm, B, Kb, k);
    return check_launch("facet_cuda_head_subcenter_max");
}

/* backward's layout: threadIdx.x owns a sub-centre column (reads of a row
 * stay coalesced), threadIdx.y takes every BW_ROWS-th row, and the column
 * sums are reduced in shared memory in a fixed order (no atomics). Each
 * thread reads and writes only its own elements of sub. */
static __global__ void __launch_bounds__(BW_TILE)
subcenter_scatter_kernel(float *sub, float *colsum_cos, const float *grad, const uint8_t *index, const float *wn,
                         int64_t B, int64_t Kb, int k)
{
    __shared__ float red[BW_ROWS][BW_COLS];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t N = Kb * k;
    for (int64_t n0 = (int64_t)blockIdx.x * BW_COLS; n0 < N; n0 += (int64_t)gridDim.x * BW_COLS) {
        const int64_t n = n0 + tx;
        float cc = 0.0f;
        if (n < N) {
            const int64_t c = n / k;
            const int j = (int)(n - c * k);
            const float inv = facet_head_inv_norm(wn[n]);
            for (int64_t i = ty; i < B; i += BW_ROWS) {
                float *zp = sub + i * N + n;
                const int arg = index[i * Kb + c];
                const float v = facet_subcenter_grad(grad[i * Kb + c], j, arg, inv);
                if (j == arg) cc += v * facet_head_cos(*zp, inv);
                *zp = v;
            }
        }
        red[ty][tx] = cc;
        __syncthreads();
        if (ty == 0 && n < N && colsum_cos) {
            float a = 0.0f;
            for (int r = 0; r < BW_ROWS; r++) a += red[r][tx];
            colsum_cos[n] = a;
        }
        __syncthreads();    /* red is reused by the next column tile */
    }
}

extern "C" int facet_cuda_head_subcenter_scatter(float *sub, float *colsum_cos, const float *grad,
                                                 const uint8_t *index, const float *wnorm, int64_t B, int64_t Kb,
                                                 int k)
{
    const int64_t N = Kb * k;
    if (N == 0) return FACET_STATUS_OK;
    int64_t tiles = (N + BW_COLS - 1) / BW_COLS;
    unsigned blocks = tiles > FACET_CUDA_MAX_BLOCKS ? (unsigned)FACET_CUDA_MAX_BLOCKS : (unsigned)tiles;
    dim3 block(BW_COLS, BW_ROWS);
    subcenter_scatter_kernel<<<blocks, block>>>(sub, colsum_cos, grad, index, wnorm, B, Kb, k);
    return check_launch("facet_cuda_head_subcenter_scatter");
}
