/*
 * layernorm.cu - LayerNorm over the last dim on CUDA (the CPU version is
 * core/src/layernorm.c), with the per-element math of layernorm_math.h.
 *
 * Launch shapes:
 *   forward, grad_x   one block per row (32..256 threads, by row length):
 *                     block_sum in double of the row's sums, rounded once,
 *                     then the elements.
 *   weight and bias   a 2-D grid: x walks column tiles of 256 (one thread a
 *   gradients         column), y row chunks; each thread sums its column over
 *                     its chunk in order into a double partial, and a second
 *                     kernel adds a column's partials in chunk order into
 *                     grad_weight / grad_bias (+=). The chunks come from the
 *                     shape alone: no atomics, the same bits on every run.
 */
#include "cuda_common.cuh"
#include "layernorm_math.h"

enum {
    LN_MAX_CHUNKS = 64      /* row chunks of the parameter gradients' first pass */
};

static unsigned row_threads(int64_t cols)
{
    unsigned t = 32;
    while (t < FACET_CUDA_THREADS && t < cols) t *= 2;
    return t;
}

static __global__ void ln_forward_kernel(float *out, float *sm, float *si, const float *x, const float *w,
                                         const float *b, int64_t rows, int64_t cols, double eps)
{
    FACET_CUDA_FOR_BLOCK(r, rows) {
        const float *xr = x + r * cols;
        float *orow = out + r * cols;
        double s = 0.0;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
        const double mean = block_sum(s) / (double)cols;
        double ss = 0.0;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) ss += ((double)xr[c] - mean) * ((double)xr[c] - mean);
        const float inv = facet_ln_invstd(block_sum(ss) / (double)cols, eps), m = (float)mean;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            orow[c] = facet_ln_out(xr[c], m, inv, w ? w[c] : 1.0f, b ? b[c] : 0.0f);
        if (threadIdx.x == 0) {
            if (sm) sm[r] = m;
            if (si) si[r] = inv;
        }
    }
}

static __global__ void ln_grad_x_kernel(float *gx, const float *g, const float *x, const float *sm, const float *si,
                                        const float *w, int64_t rows, int64_t cols)
{
    FACET_CUDA_FOR_BLOCK(r, rows) {
        const float *gr = g + r * cols, *xr = x + r * cols;
        const float m = sm[r], inv = si[r];
        double s1 = 0.0, s2 = 0.0;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            const float gw = gr[c] * (w ? w[c] : 1.0f);
            s1 += gw;
            s2 += (double)gw * ((xr[c] - m) * inv);
        }
        /* the whole row is read before any element is written (grad_x may be grad_out) */
        const float m1 = (float)(block_sum(s1) / (double)cols), m2 = (float)(block_sum(s2) / (double)cols);
        float *d = gx + r * cols;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            d[c] = facet_ln_grad_x(gr[c] * (w ? w[c] : 1.0f), (xr[c] - m) * inv, inv, m1, m2);
    }
}

/* part_w / part_b [chunk * cols + c]: column c's sums over row chunk `chunk` */
static __global__ void ln_param_part_kernel(double *part_w, double *part_b, const float *g, const float *x,
                                            const float *sm, const float *si, int64_t rows, int64_t cols,
                                            int64_t chunk_rows)
{
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
    if (c >= cols) return;
    const int64_t r0 = chunk * chunk_rows, r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
    double aw = 0.0, ab = 0.0;
    for (int64_t r = r0; r < r1; r++) {
        const float gv = g[r * cols + c];
        aw += (double)gv * ((x[r * cols + c] - sm[r]) * si[r]);
        ab += gv;
    }
    part_w[chunk * cols + c] = aw;
    part_b[chunk * cols + c] = ab;
}

static __global__ void ln_param_sum_kernel(float *gw, float *gb, const double *part_w, const double *part_b,
                                           int64_t chunks, int64_t cols)
{
    FACET_CUDA_FOR(c, cols) {
        double aw = 0.0, ab = 0.0;
        for (int64_t k = 0; k < chunks; k++) {
            aw += part_w[k * cols + c];
            ab += part_b[k * cols + c];
        }
        if (gw) gw[c] += (float)aw;
        if (gb) gb[c] += (float)ab;
    }
}

extern "C" int facet_cuda_layernorm_forward(float *out, float *save_mean, float *save_invstd, const float *x,
                                            const float *weight, const float *bias, int64_t rows, int64_t cols,
                                            double eps)
{
    return launch_items("facet_cuda_layernorm_forward", rows, row_threads(cols), ln_forward_kernel, out, save_mean,
                        save_invstd, x, weight, bias, rows, cols, eps);
}

extern "C" int facet_cuda_layernorm_backward(float *grad_x, float *grad_weight, float *grad_bias,
                                             const float *grad_out, const float *x, const float *save_mean,
                                             const float *save_invstd, const float *weight, int64_t rows,
                                             int64_t cols)
{
    const char *fn = "facet_cuda_layernorm_backward";
    if (rows <= 0 || cols <= 0) return FACET_STATUS_OK;
    int rc = 0;
    if (grad_weight || grad_bias) {
        /* before grad_x: grad_x may be grad_out's storage */
        const int64_t chunks = rows < (int64_t)LN_MAX_CHUNKS ? rows : (int64_t)LN_MAX_CHUNKS;
        const int64_t chunk_rows = (rows + chunks - 1) / chunks;
        scratch part;
        FACET_CUDA_TRY(scratch_alloc(&part, (size_t)(2 * chunks * cols) * sizeof(double), fn));
        double *pw = (double *)part.p, *pb = pw + chunks * cols;
        const dim3 grid((unsigned)((cols + FACET_CUDA_THREADS - 1) / FACET_CUDA_THREADS), (unsigned)chunks, 1);
        ln_param_part_kernel<<<grid, FACET_CUDA_THREADS>>>(pw, pb, grad_out, x, save_mean, save_invstd, rows, cols,
                                                           chunk_rows);
        rc = check_launch(fn);
        if (!rc) rc = launch_flat(fn, cols, ln_param_sum_kernel, grad_weight, grad_bias, (const double *)pw,
                                  (const double *)pb, chunks, cols);
        int rc_free = scratch_free(&part, fn);
        if (!rc) rc = rc_free;
    }
    if (!rc && grad_x)
        rc = launch_items(fn, rows, row_threads(cols), ln_grad_x_kernel, grad_x, grad_out, x, save_mean, save_invstd,
                          weight, rows, cols);
    return rc;
}
