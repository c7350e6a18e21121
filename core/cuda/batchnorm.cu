/*
 * batchnorm.cu - batch normalisation on CUDA, with the contracts of
 * core/src/batchnorm.c (which checks the arguments) and the formulas of
 * batchnorm_math.h: x is [n, c, hw].
 *
 * A call is up to three launches, so that even a few channels over many
 * values fill the GPU:
 *   partials  the M = n*hw values of a channel are cut into `parts` runs of
 *             consecutive values (in channel order: plane after plane), one
 *             block each; parts = BN_BLOCKS_PER_SM * SMs / c blocks, at most
 *             M / BN_MIN_VALUES, at least 1 (a small or wide problem keeps
 *             one block per channel). A block sums its run in double -
 *             sum(x - shift) and sum((x - shift)^2), shift the channel's
 *             first value x[ch*hw] as on the CPU, or backward's sum(dy) and
 *             sum(dy (x - mean)) - and block_reduce writes the pair to
 *             scratch memory.
 *   channels  one thread per channel folds its parts' pairs in part order,
 *             then derives through batchnorm_math.h the mean and variance,
 *             save_mean / save_invstd, the running statistics, grad_weight /
 *             grad_bias (+=, once per channel: no atomics), and the
 *             coefficients of the element pass (3 floats per channel).
 *   elements  a flat grid-stride pass over the n*c*hw values applies the
 *             per-element formula (facet_bn_forward_at, _backward_at,
 *             _backward_eval_at) with its channel's coefficients; the
 *             channel (e / hw) % c is followed along the loop without a
 *             division per element.
 * Evaluation's forward and a backward without sums skip the partials; the
 * statistics of synchronised BN (facet_batchnorm_stats) skip the elements,
 * and its backward (facet_batchnorm_backward_elemt) takes the channel sums
 * of every rank instead of the partials.
 *
 * Every sum runs in an order fixed by the sizes and the GPU's SM count (no
 * floating-point atomics: the same call gives the same bits on one GPU, and
 * a 16-bit call the float32 call's sums of its widened values). It differs
 * from the CPU's order, so statistics agree with the CPU's to double
 * rounding; the rest is computed as on the CPU, operation for operation. x,
 * out, grad_out and grad_x are float32, float16 or bfloat16 (kernels
 * templated over the storage type, loads widened, results rounded once);
 * weights, statistics and parameter gradients are float32.
 */
#include "cuda_common.cuh"
#include "batchnorm_math.h"

enum {
    BN_BLOCKS_PER_SM = 4,       /* partials blocks a launch aims at per SM (one wave) */
    BN_MIN_VALUES = 4096,       /* fewest values of a run when a channel is split */
    BN_UNROLL = 4               /* loads a thread issues before it uses them */
};

/* Two sums reduced together. */
struct sum2 {
    double a, b;
};

struct sum2_op {
    __device__ __forceinline__ sum2 operator()(sum2 x, sum2 y) const
    {
        sum2 r = { x.a + y.a, x.b + y.b };
        return r;
    }
};

/* ---- launch shape ------------------------------------------------------------------- */

/* The device's SM count, asked once (a process uses one device); a failed
 * query counts 1, and the launch that follows reports the error. */
static int query_sms(void)
{
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 1;
    }
    return sms > 0 ? sms : 1;
}

static int64_t sm_count(void)
{
    static const int sms = query_sms();     /* initialised once, thread-safe (C++11) */
    return sms;
}

/* Blocks per channel of the partials kernel (the dtype plays no part, so a
 * 16-bit call sums in the float32 call's order). */
static int64_t parts_of(int64_t n, int64_t c, int64_t hw)
{
    const int64_t fill = BN_BLOCKS_PER_SM * sm_count() / c, most = n * hw / BN_MIN_VALUES;
    const int64_t p = fill < most ? fill : most;
    return p > 1 ? p : 1;
}

/* One call's scratch: the partial sums of c * parts blocks, then the element
 * pass's coefficients, coef[j c + ch] for j = 0, 1, 2. */
struct bn_scratch {
    scratch mem;
    sum2 *partial;
    float *coef;
};

static int bn_scratch_alloc(bn_scratch *s, int64_t c, int64_t parts, const char *fn)
{
    const size_t np = (size_t)(c * parts);
    int rc = scratch_alloc(&s->mem, np * sizeof(sum2) + 3 * (size_t)c * sizeof(float), fn);
    if (rc) return rc;
    s->partial = (sum2 *)s->mem.p;
    s->coef = (float *)(s->partial + np);
    return FACET_STATUS_OK;
}

/* Frees a call's scratch; returns the call's status, else the free's. */
static int bn_scratch_done(bn_scratch *s, int rc, const char *fn)
{
    const int free_rc = scratch_free(&s->mem, fn);
    return rc ? rc : free_rc;
}

/* ---- partials: block (ch, p) of c * parts sums the run [p chunk, (p + 1) chunk) of channel ch ---- */

template <typename T, bool GRAD>
static __global__ void __launch_bounds__(FACET_CUDA_THREADS, BN_BLOCKS_PER_SM)
bn_partials_kernel(sum2 *partial, const T *x, const T *grad_out, const float *mean, int64_t n, int64_t c,
                   int64_t hw, int64_t parts, int64_t chunk)
{
    const int64_t count = n * hw, plane = c * hw, B = blockDim.x;
    /* a thread steps B values along the channel: di planes and dq values, and
     * once more a plane when its place in the plane wraps (dq < hw) */
    const int64_t di = B / hw, dq = B - di * hw, step = di * plane + dq, wrap = plane - hw;
    const sum2 zero = { 0.0, 0.0 };
    FACET_CUDA_FOR_BLOCK(item, c * parts) {
        const int64_t ch = item / parts, j0 = (item - ch * parts) * chunk;
        const int64_t j1 = count - j0 < chunk ? count : j0 + chunk;
        /* forward: the shift; backward: the mean */
        const double ref = GRAD ? (double)mean[ch] : (double)ld(x[ch * hw]);
        sum2 s = zero;
        int64_t j = j0 + threadIdx.x, q = j % hw, off = (j / hw) * plane + ch * hw + q;
        for (; j < j1; j += BN_UNROLL * B) {
            float xv[BN_UNROLL], gv[BN_UNROLL];
#pragma unroll
            for (int u = 0; u < BN_UNROLL; u++) {
                if (j + u * B < j1) {
                    xv[u] = ld(x[off]);
                    gv[u] = GRAD ? ld(grad_out[off]) : 0.0f;
                }
                off += step;
                q += dq;
                if (q >= hw) {
                    q -= hw;
                    off += wrap;
                }
            }
#pragma unroll
            for (int u = 0; u < BN_UNROLL; u++) {
                if (j + u * B >= j1) break;
                if (GRAD) {
                    const double g = gv[u];
                    s.a += g;
                    s.b = facet_dadd_rn(s.b, facet_dmul_rn(g, (double)xv[u] - ref));
                } else {
                    const double d = (double)xv[u] - ref;
                    s.a += d;
                    s.b = facet_dadd_rn(s.b, facet_dmul_rn(d, d));
                }
            }
        }
        s = block_reduce(s, sum2_op(), zero);
        if (threadIdx.x == 0) partial[item] = s;
    }
}

template <typename T, bool GRAD>
static int launch_partials(const char *fn, sum2 *partial, const T *x, const T *grad_out, const float *mean,
                           int64_t n, int64_t c, int64_t hw, int64_t parts)
{
    const int64_t chunk = (n * hw + parts - 1) / parts;
    return launch_items(fn, c * parts, FACET_CUDA_THREADS, bn_partials_kernel<T, GRAD>, partial, x, grad_out, mean,
                        n, c, hw, parts, chunk);
}

/* ---- channels: one thread per channel ---------------------------------------------------- */

/* A channel's parts folded in part order. */
static __device__ __forceinline__ sum2 fold(const sum2 *p, int64_t parts)
{
    sum2 s = p[0];
    for (int64_t i = 1; i < parts; i++) s = sum2_op()(s, p[i]);
    return s;
}

static __device__ __forceinline__ void put_coef(float *coef, int64_t c, int64_t ch, float a, float b, float d)
{
    coef[ch] = a;
    coef[c + ch] = b;
    coef[2 * c + ch] = d;
}

/* Forward: the statistics (training: the parts' sums; evaluation: the running
 * ones), the saved and running values, batch_var (the biased variance, for
 * facet_batchnorm_stats) and, into coef, m, k, d of facet_bn_forward_at. */
template <typename T>
static __global__ void bn_forward_channels_kernel(float *coef, float *save_mean, float *save_invstd,
                                                  float *running_mean, float *running_var, float *batch_var,
                                                  const sum2 *partial, const T *x, const float *weight,
                                                  const float *bias, int64_t n, int64_t c, int64_t hw, int64_t parts,
                                                  int training, double momentum, double eps)
{
    const double count = (double)(n * hw);
    FACET_CUDA_FOR(ch, c) {
        double mean, var;
        if (training) {
            const sum2 s = fold(partial + ch * parts, parts);
            facet_bn_moments(ld(x[ch * hw]), s.a, s.b, count, &mean, &var);
        } else {
            mean = running_mean[ch];
            var = running_var[ch];
        }
        const double invstd = facet_bn_invstd(var, eps);
        if (batch_var) batch_var[ch] = (float)var;
        if (save_mean) save_mean[ch] = (float)mean;
        if (save_invstd) save_invstd[ch] = (float)invstd;
        if (training && running_mean)
            facet_bn_running(&running_mean[ch], &running_var[ch], mean, var, count, momentum);
        if (coef) put_coef(coef, c, ch, (float)mean, facet_bn_scale(weight, ch, invstd), bias ? bias[ch] : 0.0f);
    }
}

/* Backward: sum(dy) and sum(dy (x - mean)) from the parts (zero without
 * sums), the parameter gradients, and ka, kb, kd of facet_bn_backward_at. */
static __global__ void bn_backward_channels_kernel(float *coef, float *grad_weight, float *grad_bias,
                                                   const sum2 *partial, const float *weight,
                                                   const float *save_invstd, int64_t n, int64_t c, int64_t hw,
                                                   int64_t parts, int training, int need_sums)
{
    const double count = (double)(n * hw);
    FACET_CUDA_FOR(ch, c) {
        const sum2 zero = { 0.0, 0.0 };
        const sum2 s = need_sums ? fold(partial + ch * parts, parts) : zero;
        const double invstd = save_invstd[ch], w = weight ? weight[ch] : 1.0;
        if (grad_weight) grad_weight[ch] += (float)(s.b * invstd);
        if (grad_bias) grad_bias[ch] += (float)s.a;
        const facet_bn_coef k = facet_bn_backward_coef(w, invstd, s.a, s.b, count, training);
        put_coef(coef, c, ch, k.ka, k.kb, k.kd);
    }
}

/* Synchronised backward: the coefficients from the sums of every rank. */
static __global__ void bn_sync_channels_kernel(float *coef, const float *weight, const float *save_invstd,
                                               const float *sum_dy, const float *sum_dy_xhat, double count, int64_t c)
{
    FACET_CUDA_FOR(ch, c) {
        const double w = weight ? weight[ch] : 1.0;
        const facet_bn_coef k = facet_bn_sync_coef(w, save_invstd[ch], sum_dy[ch], sum_dy_xhat[ch], count);
        put_coef(coef, c, ch, k.ka, k.kb, k.kd);
    }
}

/* ---- elements: a flat grid-stride pass over [n, c, hw] ---------------------------------------- */

/* The channel (e / hw) % c of e along a loop whose e grows by `stride`:
 * with stride = sr hw + sq and sc = sr % c, each step adds sq to the place
 * in the plane and sc (plus the carry) to the channel, both wrapped once.
 * Its four divisions per thread are in the index type I (cuda_common.cuh). */
template <typename I>
struct chan_walk {
    I q, ch, sq, sc, hw, c;

    __device__ chan_walk(I e, I stride, I c_, I hw_) : hw(hw_), c(c_)
    {
        const I r = e / hw, sr = stride / hw;
        q = e - r * hw;
        ch = r % c;
        sq = stride - sr * hw;
        sc = sr % c;
    }

    __device__ __forceinline__ void step()
    {
        q += sq;
        ch += sc;
        if (q >= hw) {
            q -= hw;
            ch++;
        }
        if (ch >= c) ch -= c;
    }
};

/* Op::load(e, ch) reads element e and its channel's coefficients, Op::store(e,
 * v) writes the result; BN_UNROLL loads are issued before the first store. */
template <typename Op, typename I>
static __global__ void bn_elements_kernel(Op op, int64_t total, int64_t c, int64_t hw)
{
    const int64_t G = (int64_t)gridDim.x * blockDim.x;
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    chan_walk<I> w((I)e, (I)G, (I)c, (I)hw);
    for (; e < total; e += BN_UNROLL * G) {
        typename Op::in v[BN_UNROLL] = {};
#pragma unroll
        for (int u = 0; u < BN_UNROLL; u++) {
            if (e + u * G < total) v[u] = op.load(e + u * G, w.ch);
            w.step();
        }
#pragma unroll
        for (int u = 0; u < BN_UNROLL; u++)
            if (e + u * G < total) op.store(e + u * G, v[u]);
    }
}

template <typename Op>
static int launch_elements(const char *fn, Op op, int64_t total, int64_t c, int64_t hw)
{
    if (total <= 0) return FACET_STATUS_OK;
    const unsigned blocks = grid_blocks((total + BN_UNROLL - 1) / BN_UNROLL);
    FACET_INDEX_DISPATCH(fits_int32(total), I,
        bn_elements_kernel<Op, I><<<blocks, FACET_CUDA_THREADS>>>(op, total, c, hw));
    return check_launch(fn);
}

/* out = (x - m) k + d */
template <typename T>
struct forward_op {
    T *out;
    const T *x;
    const float *coef;
    int64_t c;
    struct in {
        float x, m, k, d;
    };
    __device__ __forceinline__ in load(int64_t e, int64_t ch) const
    {
        in v = { ld(x[e]), coef[ch], coef[c + ch], coef[2 * c + ch] };
        return v;
    }
    __device__ __forceinline__ void store(int64_t e, in v) const { st(out, e, facet_bn_forward_at(v.x, v.m, v.k, v.d)); }
};

/* training: dx = ka dy - kb (x - mean) - kd */
template <typename T>
struct backward_op {
    T *grad_x;
    const T *grad_out, *x;
    const float *coef, *mean;
    int64_t c;
    struct in {
        float g, x, m;
        facet_bn_coef k;
    };
    __device__ __forceinline__ in load(int64_t e, int64_t ch) const
    {
        in v = { ld(grad_out[e]), ld(x[e]), mean[ch], { coef[ch], coef[c + ch], coef[2 * c + ch] } };
        return v;
    }
    __device__ __forceinline__ void store(int64_t e, in v) const
    {
        st(grad_x, e, facet_bn_backward_at(v.k, v.g, v.x, v.m));
    }
};

/* evaluation: dx = ka dy */
template <typename T>
struct backward_eval_op {
    T *grad_x;
    const T *grad_out;
    const float *coef;
    struct in {
        float g;
        facet_bn_coef k;
    };
    __device__ __forceinline__ in load(int64_t e, int64_t ch) const
    {
        in v = { ld(grad_out[e]), { coef[ch], 0.0f, 0.0f } };
        return v;
    }
    __device__ __forceinline__ void store(int64_t e, in v) const { st(grad_x, e, facet_bn_backward_eval_at(v.k, v.g)); }
};

/* ---- entry points ------------------------------------------------------------------------------ */

template <typename T>
static int forward_t(const char *fn, const bn_scratch *s, int64_t parts, T *out, float *save_mean,
                     float *save_invstd, float *running_mean, float *running_var, float *batch_var, const T *x,
                     const float *weight, const float *bias, int64_t n, int64_t c, int64_t hw, int training,
                     double momentum, double eps)
{
    if (training) FACET_CUDA_TRY((launch_partials<T, false>(fn, s->partial, x, NULL, NULL, n, c, hw, parts)));
    FACET_CUDA_TRY(launch_flat(fn, c, bn_forward_channels_kernel<T>, out ? s->coef : NULL, save_mean, save_invstd,
                               running_mean, running_var, batch_var, (const sum2 *)s->partial, x, weight, bias, n, c,
                               hw, parts, training, momentum, eps));
    if (!out) return FACET_STATUS_OK;
    const forward_op<T> op = { out, x, s->coef, c };
    return launch_elements(fn, op, n * c * hw, c, hw);
}

extern "C" int facet_cuda_batchnorm_forward(int dtype, void *out, float *save_mean, float *save_invstd,
                                            float *running_mean, float *running_var, const void *x,
                                            const float *weight, const float *bias, int64_t n, int64_t c, int64_t hw,
                                            int training, double momentum, double eps)
{
    static const char *fn = "facet_cuda_batchnorm_forward";
    if (c <= 0) return FACET_STATUS_OK;
    const int64_t parts = training ? parts_of(n, c, hw) : 0;
    bn_scratch s;
    int rc = bn_scratch_alloc(&s, c, parts, fn);
    if (rc) return rc;
    FACET_ACT_DISPATCH(dtype, T,
        rc = forward_t<T>(fn, &s, parts, (T *)out, save_mean, save_invstd, running_mean, running_var, NULL,
                          (const T *)x, weight, bias, n, c, hw, training, momentum, eps));
    return bn_scratch_done(&s, rc, fn);
}

/* this rank's mean and biased variance: the training forward's partials and
 * channels, nothing else written (n * hw >= 1) */
extern "C" int facet_cuda_batchnorm_stats(int dtype, float *mean, float *var, const void *x, int64_t n, int64_t c,
                                          int64_t hw)
{
    static const char *fn = "facet_cuda_batchnorm_stats";
    if (c <= 0) return FACET_STATUS_OK;
    const int64_t parts = parts_of(n, c, hw);
    bn_scratch s;
    int rc = bn_scratch_alloc(&s, c, parts, fn);
    if (rc) return rc;
    /* eps 1: the invstd it gives is not kept */
    FACET_ACT_DISPATCH(dtype, T,
        rc = forward_t<T>(fn, &s, parts, (T *)NULL, mean, NULL, NULL, NULL, var, (const T *)x, NULL, NULL, n, c, hw,
                          1, 0.0, 1.0));
    return bn_scratch_done(&s, rc, fn);
}

/* dx from the coefficients in s->coef */
template <typename T>
static int backward_elements_t(const char *fn, const bn_scratch *s, T *grad_x, const T *grad_out, const T *x,
                               const float *save_mean, int64_t n, int64_t c, int64_t hw, int training)
{
    if (training) {
        const backward_op<T> op = { grad_x, grad_out, x, s->coef, save_mean, c };
        return launch_elements(fn, op, n * c * hw, c, hw);
    }
    const backward_eval_op<T> op = { grad_x, grad_out, s->coef };
    return launch_elements(fn, op, n * c * hw, c, hw);
}

template <typename T>
static int backward_t(const char *fn, const bn_scratch *s, int64_t parts, T *grad_x, float *grad_weight,
                      float *grad_bias, const T *grad_out, const T *x, const float *weight, const float *save_mean,
                      const float *save_invstd, int64_t n, int64_t c, int64_t hw, int training, int need_sums)
{
    if (need_sums)
        FACET_CUDA_TRY((launch_partials<T, true>(fn, s->partial, x, grad_out, save_mean, n, c, hw, parts)));
    FACET_CUDA_TRY(launch_flat(fn, c, bn_backward_channels_kernel, s->coef, grad_weight, grad_bias,
                               (const sum2 *)s->partial, weight, save_invstd, n, c, hw, parts, training, need_sums));
    if (!grad_x) return FACET_STATUS_OK;
    return backward_elements_t<T>(fn, s, grad_x, grad_out, x, save_mean, n, c, hw, training);
}

/* need_sums: training, or a parameter gradient wanted (evaluation's grad_x
 * alone needs no reduction), over a non-empty batch. */
extern "C" int facet_cuda_batchnorm_backward(int dtype, void *grad_x, float *grad_weight, float *grad_bias,
                                             const void *grad_out, const void *x, const float *weight,
                                             const float *save_mean, const float *save_invstd, int64_t n, int64_t c,
                                             int64_t hw, int training)
{
    static const char *fn = "facet_cuda_batchnorm_backward";
    if (c <= 0) return FACET_STATUS_OK;
    const int need_sums = (training || grad_weight || grad_bias) && n * hw > 0;
    const int64_t parts = need_sums ? parts_of(n, c, hw) : 0;
    bn_scratch s;
    int rc = bn_scratch_alloc(&s, c, parts, fn);
    if (rc) return rc;
    FACET_ACT_DISPATCH(dtype, T,
        rc = backward_t<T>(fn, &s, parts, (T *)grad_x, grad_weight, grad_bias, (const T *)grad_out, (const T *)x,
                           weight, save_mean, save_invstd, n, c, hw, training, need_sums));
    return bn_scratch_done(&s, rc, fn);
}

/* synchronised BN's dx from the channel sums of every rank over count values */
extern "C" int facet_cuda_batchnorm_backward_elemt(int dtype, void *grad_x, const void *grad_out, const void *x,
                                                   const float *weight, const float *save_mean,
                                                   const float *save_invstd, const float *sum_dy,
                                                   const float *sum_dy_xhat, double count, int64_t n, int64_t c,
                                                   int64_t hw)
{
    static const char *fn = "facet_cuda_batchnorm_backward_elemt";
    if (n * c * hw <= 0) return FACET_STATUS_OK;
    bn_scratch s;
    int rc = bn_scratch_alloc(&s, c, 0, fn);
    if (rc) return rc;
    rc = launch_flat(fn, c, bn_sync_channels_kernel, s.coef, weight, save_invstd, sum_dy, sum_dy_xhat, count, c);
    if (!rc)
        FACET_ACT_DISPATCH(dtype, T,
            rc = backward_elements_t<T>(fn, &s, (T *)grad_x, (const T *)grad_out, (const T *)x, save_mean, n, c, hw,
                                        1));
    return bn_scratch_done(&s, rc, fn);
}
