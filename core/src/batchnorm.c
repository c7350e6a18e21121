/*
 * batchnorm.c - batch normalisation over dim 1 of float32, float16 or
 * bfloat16 N x C, N x C x L or N x C x H x W tensors (contiguous; x, out and
 * the gradients of one dtype), with PyTorch's semantics:
 *
 *   training    mean and biased variance of each channel over N*H*W values
 *               normalise it; running = (1 - momentum) running + momentum
 *               batch, where running_var takes the UNBIASED variance; at
 *               least two values per channel are required.
 *   evaluation  running_mean / running_var normalise.
 *
 * save_mean / save_invstd receive what backward needs: the batch mean and
 * 1/sqrt(var + eps) in training, and in evaluation running_mean and
 * 1/sqrt(running_var + eps), so backward is the same call in both modes:
 *
 *   training    dx = w invstd (dy - mean(dy) - xhat mean(dy xhat))
 *   evaluation  dx = w invstd dy
 *   both        grad_weight += sum(dy xhat), grad_bias += sum(dy)
 *
 * with xhat = (x - save_mean) save_invstd; grad_x is overwritten. A NULL
 * weight means scale 1 and a NULL bias shift 0 (they are independent);
 * grad_weight / grad_bias stay meaningful with them off.
 *
 * Synchronised BN (several processes, one batch) adds two entries:
 * facet_batchnorm_stats, this process's mean and biased variance (the
 * training forward's statistics, nothing else written), and
 * facet_batchnorm_backward_elemt, the training dx of the whole batch from the
 * sums of every process, sum(dy) and sum(dy xhat) over `count` values, with
 * training's per-element formula:
 *
 *   dx = w invstd dy - w invstd^2 sum(dy xhat) / count (x - mean) - w invstd sum(dy) / count
 *
 * The CPU work is split over channels (OpenMP). Statistics accumulate in
 * double, shifted by the channel's first value so a large mean costs no
 * precision in a single pass. Two layouts: planes of H*W > 1 values (the
 * inner loops run along the plane), and 2-D inputs (H*W == 1), where blocks
 * of COL_BLOCK adjacent channels are walked row by row so the inner loops run
 * across channels and stay contiguous.
 *
 * Mixed precision: the weight, bias, statistics (save_*, running_*) and
 * parameter gradients are float32 whatever x's dtype. A 16-bit call runs the
 * float32 loops on widened copies of x and grad_out and rounds out / grad_x
 * once (half_layers.h); batchnorm.cu templates its kernels over the dtype.
 */
#include "internal.h"
#include "batchnorm_math.h"
#include "guard.h"
#include "half_layers.h"
#include <math.h>

enum {
    COL_BLOCK = 16      /* channels per work item of the 2-D layout (one cache line) */
};

/* x viewed as [n, c, hw]. */
struct bn_shape {
    int64_t n, c, hw;
};

/* ---- argument checks ----------------------------------------------------------- */

static int check_input(const char *fn, const char *name, const facet_tensor *t)
{
    int rc = facet_check_act_dtype(fn, name, t);
    if (rc) return rc;
    if (t->ndim < 2 || t->ndim > 4 || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be a contiguous N x C, N x C x L or N x C x H x W tensor, got %s",
                          fn, name, facet_desc(t));
    return 0;
}

static int check_like(const char *fn, const char *name, const facet_tensor *t, const char *xname,
                      const facet_tensor *x)
{
    int rc = facet_check_dtype_of(fn, name, t, xname, x);
    if (!rc) rc = facet_check_same_device(fn, t, x);
    if (rc) return rc;
    if (!facet_same_shape(t, x) || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be contiguous and shaped like %s %s", fn, name,
                          facet_desc(t), xname, facet_desc(x));
    return 0;
}

/* A per-channel vector: 1-D float32 with C elements on x's device. */
static int check_channels(const char *fn, const char *name, const facet_tensor *t, const facet_tensor *x)
{
    int rc = facet_check_dtype(fn, name, t, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, t, x);
    if (rc) return rc;
    if (t->ndim != 1 || t->sizes[0] != x->sizes[1] || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be 1-D with one value per channel (%lld) of x %s", fn, name,
                          facet_desc(t), (long long)x->sizes[1], facet_desc(x));
    return 0;
}

static struct bn_shape shape_of(const facet_tensor *x)
{
    struct bn_shape s = { x->sizes[0], x->sizes[1], 1 };
    for (int d = 2; d < x->ndim; d++) s.hw *= x->sizes[d];
    return s;
}

/* ---- inner loops ------------------------------------------------------------------
 * Inlined into the FACET_CLONES block functions, so each ISA gets its own copy. */

/* s += sum(x - shift), ss += sum((x - shift)^2) over a run of one channel.
 * `omp simd reduction` allows the reassociation a vectorised sum needs. */
static inline void plane_moments(const float *x, int64_t len, float shift, double *s, double *ss)
{
    const double sh = shift;
    double a = 0.0, b = 0.0;
    #pragma omp simd reduction(+:a, b)
    for (int64_t i = 0; i < len; i++) {
        const double d = (double)x[i] - sh;
        a += d;
        b += d * d;
    }
    *s += a;
    *ss += b;
}

/* The same over one row of cnt adjacent channels, one accumulator each. */
static inline void cols_moments(const float *x, int64_t cnt, const float *shift, double *s, double *ss)
{
    for (int64_t j = 0; j < cnt; j++) {
        double d = (double)x[j] - shift[j];
        s[j] += d;
        ss[j] += d * d;
    }
}

/* sg += sum(g), sgx += sum(g (x - m)) over a run of one channel. */
static inline void plane_grad_sums(const float *g, const float *x, int64_t len, float m, double *sg, double *sgx)
{
    const double md = m;
    double a = 0.0, b = 0.0;
    #pragma omp simd reduction(+:a, b)
    for (int64_t i = 0; i < len; i++) {
        const double gi = g[i];
        a += gi;
        b += gi * ((double)x[i] - md);
    }
    *sg += a;
    *sgx += b;
}

static inline void cols_grad_sums(const float *g, const float *x, int64_t cnt, const float *m, double *sg,
                                  double *sgx)
{
    for (int64_t j = 0; j < cnt; j++) {
        double gj = g[j];
        sg[j] += gj;
        sgx[j] += gj * ((double)x[j] - m[j]);
    }
}

/* ---- forward ------------------------------------------------------------------------ */

/* out NULL: the statistics alone (save_mean and batch_var, facet_batchnorm_stats) */
struct bn_forward {
    float *out, *save_mean, *save_invstd, *running_mean, *running_var, *batch_var;
    const float *x, *weight, *bias;
    struct bn_shape s;
    int training;
    double momentum, eps;
};

/* Batch mean and biased variance of channels [c0, c0 + cnt). */
static inline void batch_moments(const struct bn_forward *a, int64_t c0, int64_t cnt, double *mean, double *var)
{
    const struct bn_shape s = a->s;
    double sum[COL_BLOCK] = { 0 }, sumsq[COL_BLOCK] = { 0 };
    float shift[COL_BLOCK];
    if (s.hw == 1) {
        for (int64_t j = 0; j < cnt; j++) shift[j] = a->x[c0 + j];
        for (int64_t i = 0; i < s.n; i++) cols_moments(a->x + i * s.c + c0, cnt, shift, sum, sumsq);
    } else {
        shift[0] = a->x[c0 * s.hw];
        for (int64_t i = 0; i < s.n; i++)
            plane_moments(a->x + (i * s.c + c0) * s.hw, s.hw, shift[0], &sum[0], &sumsq[0]);
    }
    const double count = (double)(s.n * s.hw);
    for (int64_t j = 0; j < cnt; j++) facet_bn_moments(shift[j], sum[j], sumsq[j], count, &mean[j], &var[j]);
}

/* Statistics, saved and running values, and the output of channels [c0, c0 + cnt). */
FACET_CLONES static void forward_block(const struct bn_forward *a, int64_t c0, int64_t cnt)
{
    const struct bn_shape s = a->s;
    double mean[COL_BLOCK], var[COL_BLOCK];
    if (a->training) {
        batch_moments(a, c0, cnt, mean, var);
    } else {
        for (int64_t j = 0; j < cnt; j++) {
            mean[j] = a->running_mean[c0 + j];
            var[j] = a->running_var[c0 + j];
        }
    }
    float m[COL_BLOCK], k[COL_BLOCK], d[COL_BLOCK];
    const double count = (double)(s.n * s.hw);
    for (int64_t j = 0; j < cnt; j++) {
        const int64_t c = c0 + j;
        const double invstd = facet_bn_invstd(var[j], a->eps);
        m[j] = (float)mean[j];
        k[j] = facet_bn_scale(a->weight, c, invstd);
        d[j] = a->bias ? a->bias[c] : 0.0f;
        if (a->batch_var) a->batch_var[c] = (float)var[j];
        if (a->save_mean) a->save_mean[c] = (float)mean[j];
        if (a->save_invstd) a->save_invstd[c] = (float)invstd;
        if (a->training && a->running_mean)
            facet_bn_running(&a->running_mean[c], &a->running_var[c], mean[j], var[j], count, a->momentum);
    }
    if (!a->out) return;
    if (s.hw == 1) {
        for (int64_t i = 0; i < s.n; i++) {
            const float *xr = a->x + i * s.c + c0;
            float *o = a->out + i * s.c + c0;
            for (int64_t j = 0; j < cnt; j++) o[j] = facet_bn_forward_at(xr[j], m[j], k[j], d[j]);
        }
    } else {
        for (int64_t i = 0; i < s.n; i++) {
            const float *xr = a->x + (i * s.c + c0) * s.hw;
            float *o = a->out + (i * s.c + c0) * s.hw;
            const float m0 = m[0], k0 = k[0], d0 = d[0];
            for (int64_t q = 0; q < s.hw; q++) o[q] = facet_bn_forward_at(xr[q], m0, k0, d0);
        }
    }
}

static void forward_cpu(const struct bn_forward *ap)
{
    const struct bn_forward a = *ap;
    const struct bn_shape s = a.s;
    const int64_t cb = s.hw == 1 ? COL_BLOCK : 1, blocks = (s.c + cb - 1) / cb;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (s.n * s.c * s.hw >= FACET_PARALLEL_GRAIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t c0 = b * cb;
        forward_block(&a, c0, s.c - c0 < cb ? s.c - c0 : cb);
    }
}

int facet_batchnorm_forward(facet_tensor *out, facet_tensor *save_mean, facet_tensor *save_invstd,
                            facet_tensor *running_mean, facet_tensor *running_var, const facet_tensor *x,
                            const facet_tensor *weight, const facet_tensor *bias, int training, double momentum,
                            double eps)
{
    static const char *fn = "facet_batchnorm_forward";
    int rc = check_input(fn, "x", x);
    if (!rc) rc = check_like(fn, "out", out, "x", x);
    if (!rc && weight) rc = check_channels(fn, "weight", weight, x);
    if (!rc && bias) rc = check_channels(fn, "bias", bias, x);
    if (!rc && save_mean) rc = check_channels(fn, "save_mean", save_mean, x);
    if (!rc && save_invstd) rc = check_channels(fn, "save_invstd", save_invstd, x);
    if (!rc && running_mean) rc = check_channels(fn, "running_mean", running_mean, x);
    if (!rc && running_var) rc = check_channels(fn, "running_var", running_var, x);
    if (rc) return rc;
    if (!running_mean != !running_var)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: running_mean and running_var go together (both or neither) for x %s", fn,
                          facet_desc(x));
    training = training != 0;
    if (!training && !running_mean)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: evaluation needs running_mean and running_var (x %s)", fn, facet_desc(x));
    if (!(eps > 0.0) || !isfinite(eps))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: eps must be finite and > 0, got %g", fn, eps);
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: momentum must be in [0, 1], got %g", fn, momentum);
    struct bn_shape s = shape_of(x);
    if (training && s.n * s.hw <= 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: training needs more than one value per channel, got x %s", fn,
                          facet_desc(x));

    float *sm = save_mean ? facet_ptr(save_mean) : NULL, *si = save_invstd ? facet_ptr(save_invstd) : NULL;
    float *rm = running_mean ? facet_ptr(running_mean) : NULL, *rv = running_var ? facet_ptr(running_var) : NULL;
    const float *wp = weight ? facet_ptr(weight) : NULL, *bp = bias ? facet_ptr(bias) : NULL;
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_batchnorm_forward(x->dtype, facet_ptr(out), sm, si, rm, rv, facet_ptr(x), wp, bp, s.n, s.c,
                                            s.hw, training, momentum, eps);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *xp = facet_half_in(fn, x, 0, &ok);
    float *o = ok ? facet_half_out(fn, out, 1, &ok) : NULL;
    if (ok) {
        struct bn_forward a = { o, sm, si, rm, rv, NULL, xp, wp, bp, s, training, momentum, eps };
        forward_cpu(&a);
    }
    return facet_half_finish(x->dtype, out, o, ok, 0);
}

/* a and b (outputs, or an output and an input) share no memory, but for the
 * very same view where same_ok (an element-wise pass reads before it writes) */
static int check_apart(const char *fn, const char *an, const facet_tensor *a, const char *bn, const facet_tensor *b,
                       bool same_ok)
{
    if (!facet_overlap(a, b) || (same_ok && facet_same_view(a, b))) return 0;
    return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s overlaps %s %s%s", fn, an, facet_desc(a), bn, facet_desc(b),
                      same_ok ? " (only the very same view may be shared)" : "");
}

int facet_batchnorm_stats(facet_tensor *mean, facet_tensor *var, const facet_tensor *x)
{
    static const char *fn = "facet_batchnorm_stats";
    int rc = check_input(fn, "x", x);
    if (!rc) rc = check_channels(fn, "mean", mean, x);
    if (!rc) rc = check_channels(fn, "var", var, x);
    if (!rc) rc = check_apart(fn, "mean", mean, "var", var, false);
    if (rc) return rc;
    struct bn_shape s = shape_of(x);
    if (s.n * s.hw < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: x must hold at least one value per channel, got %s", fn,
                          facet_desc(x));
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_batchnorm_stats(x->dtype, facet_ptr(mean), facet_ptr(var), facet_ptr(x), s.n, s.c, s.hw);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *xp = facet_half_in(fn, x, 0, &ok);
    if (ok) {
        /* eps 1: the invstd it gives is not kept */
        struct bn_forward a = { NULL, facet_ptr(mean), NULL, NULL, NULL, facet_ptr(var), xp, NULL, NULL, s, 1, 0.0, 1.0 };
        forward_cpu(&a);
    }
    return facet_half_finish(x->dtype, NULL, NULL, ok, 0);
}


/* ---- backward ------------------------------------------------------------------------ */

/* sum_dy non-NULL: synchronised BN's grad_x from the sums of every rank,
 * sum_dy and sum_dy_xhat over `count` values (training, no local sums) */
struct bn_backward {
    float *grad_x, *grad_weight, *grad_bias;
    const float *grad_out, *x, *weight, *mean, *invstd, *sum_dy, *sum_dy_xhat;
    struct bn_shape s;
    int training;
    double count;
};

FACET_CLONES static void backward_block(const struct bn_backward *a, int64_t c0, int64_t cnt)
{
    const struct bn_shape s = a->s;
    double sg[COL_BLOCK] = { 0 }, sgx[COL_BLOCK] = { 0 };
    /* evaluation's grad_x needs no sums, synchronised BN brings its own */
    if (!a->sum_dy && (a->training || a->grad_weight || a->grad_bias)) {
        if (s.hw == 1) {
            for (int64_t i = 0; i < s.n; i++)
                cols_grad_sums(a->grad_out + i * s.c + c0, a->x + i * s.c + c0, cnt, a->mean + c0, sg, sgx);
        } else {
            for (int64_t i = 0; i < s.n; i++) {
                const int64_t off = (i * s.c + c0) * s.hw;
                plane_grad_sums(a->grad_out + off, a->x + off, s.hw, a->mean[c0], &sg[0], &sgx[0]);
            }
        }
    }
    /* dx = ka dy - kb (x - mean) - kd (batchnorm_math.h) */
    struct facet_bn_coef k[COL_BLOCK];
    float m[COL_BLOCK];
    const double count = (double)(s.n * s.hw);
    for (int64_t j = 0; j < cnt; j++) {
        const int64_t c = c0 + j;
        const double invstd = a->invstd[c], w = a->weight ? a->weight[c] : 1.0;
        if (a->grad_weight) a->grad_weight[c] += (float)(sgx[j] * invstd);
        if (a->grad_bias) a->grad_bias[c] += (float)sg[j];
        m[j] = a->mean[c];
        k[j] = a->sum_dy ? facet_bn_sync_coef(w, invstd, a->sum_dy[c], a->sum_dy_xhat[c], a->count)
                         : facet_bn_backward_coef(w, invstd, sg[j], sgx[j], count, a->training);
    }
    if (!a->grad_x) return;
    if (s.hw == 1) {
        for (int64_t i = 0; i < s.n; i++) {
            const float *g = a->grad_out + i * s.c + c0, *xr = a->x + i * s.c + c0;
            float *dx = a->grad_x + i * s.c + c0;
            if (a->training)
                for (int64_t j = 0; j < cnt; j++) dx[j] = facet_bn_backward_at(k[j], g[j], xr[j], m[j]);
            else
                for (int64_t j = 0; j < cnt; j++) dx[j] = facet_bn_backward_eval_at(k[j], g[j]);
        }
    } else {
        const struct facet_bn_coef k0 = k[0];
        const float m0 = m[0];
        for (int64_t i = 0; i < s.n; i++) {
            const int64_t off = (i * s.c + c0) * s.hw;
            const float *g = a->grad_out + off, *xr = a->x + off;
            float *dx = a->grad_x + off;
            if (a->training)
                for (int64_t q = 0; q < s.hw; q++) dx[q] = facet_bn_backward_at(k0, g[q], xr[q], m0);
            else
                for (int64_t q = 0; q < s.hw; q++) dx[q] = facet_bn_backward_eval_at(k0, g[q]);
        }
    }
}

static void backward_cpu(const struct bn_backward *ap)
{
    const struct bn_backward a = *ap;
    const struct bn_shape s = a.s;
    const int64_t cb = s.hw == 1 ? COL_BLOCK : 1, blocks = (s.c + cb - 1) / cb;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (s.n * s.c * s.hw >= FACET_PARALLEL_GRAIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t c0 = b * cb;
        backward_block(&a, c0, s.c - c0 < cb ? s.c - c0 : cb);
    }
}

int facet_batchnorm_backward(facet_tensor *grad_x, facet_tensor *grad_weight, facet_tensor *grad_bias,
                             const facet_tensor *grad_out, const facet_tensor *x, const facet_tensor *weight,
                             const facet_tensor *save_mean, const facet_tensor *save_invstd, int training)
{
    static const char *fn = "facet_batchnorm_backward";
    int rc = check_input(fn, "x", x);
    if (!rc) rc = check_like(fn, "grad_out", grad_out, "x", x);
    if (!rc && grad_x) rc = check_like(fn, "grad_x", grad_x, "x", x);
    if (!rc && weight) rc = check_channels(fn, "weight", weight, x);
    if (!rc) rc = check_channels(fn, "save_mean", save_mean, x);
    if (!rc) rc = check_channels(fn, "save_invstd", save_invstd, x);
    if (!rc && grad_weight) rc = check_channels(fn, "grad_weight", grad_weight, x);
    if (!rc && grad_bias) rc = check_channels(fn, "grad_bias", grad_bias, x);
    if (rc) return rc;
    training = training != 0;
    struct bn_shape s = shape_of(x);
    if (training && s.n * s.hw <= 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: training needs more than one value per channel, got x %s", fn,
                          facet_desc(x));
    if (!grad_x && !grad_weight && !grad_bias) return 0;

    float *gw = grad_weight ? facet_ptr(grad_weight) : NULL, *gb = grad_bias ? facet_ptr(grad_bias) : NULL;
    const float *wp = weight ? facet_ptr(weight) : NULL, *sm = facet_ptr(save_mean), *si = facet_ptr(save_invstd);
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_batchnorm_backward(x->dtype, grad_x ? facet_ptr(grad_x) : NULL, gw, gb, facet_ptr(grad_out),
                                             facet_ptr(x), wp, sm, si, s.n, s.c, s.hw, training);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *go = facet_half_in(fn, grad_out, 0, &ok);
    const float *xp = ok ? facet_half_in(fn, x, 1, &ok) : NULL;
    float *gx = ok ? facet_half_out(fn, grad_x, 2, &ok) : NULL;
    if (ok) {
        struct bn_backward a = { gx, gw, gb, go, xp, wp, sm, si, NULL, NULL, s, training, 0.0 };
        backward_cpu(&a);
    }
    return facet_half_finish(x->dtype, grad_x, gx, ok, 0);
}

int facet_batchnorm_backward_elemt(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *x,
                                   const facet_tensor *weight, const facet_tensor *save_mean,
                                   const facet_tensor *save_invstd, const facet_tensor *sum_dy,
                                   const facet_tensor *sum_dy_xhat, int64_t count)
{
    static const char *fn = "facet_batchnorm_backward_elemt";
    int rc = check_input(fn, "x", x);
    if (!rc) rc = check_like(fn, "grad_out", grad_out, "x", x);
    if (!rc) rc = check_like(fn, "grad_x", grad_x, "x", x);
    if (!rc && weight) rc = check_channels(fn, "weight", weight, x);
    if (!rc) rc = check_channels(fn, "save_mean", save_mean, x);
    if (!rc) rc = check_channels(fn, "save_invstd", save_invstd, x);
    if (!rc) rc = check_channels(fn, "sum_dy", sum_dy, x);
    if (!rc) rc = check_channels(fn, "sum_dy_xhat", sum_dy_xhat, x);
    if (!rc) rc = check_apart(fn, "grad_x", grad_x, "grad_out", grad_out, true);
    if (!rc) rc = check_apart(fn, "grad_x", grad_x, "x", x, true);
    if (rc) return rc;
    struct bn_shape s = shape_of(x);
    if (count < 2 || count < s.n * s.hw)
        return facet_fail(FACET_STATUS_ERR_ARG,
                          "%s: count must be the values per channel over every process, at least 2 and at least the "
                          "%lld of x %s, got %lld", fn, (long long)(s.n * s.hw), facet_desc(x), (long long)count);

    const float *wp = weight ? facet_ptr(weight) : NULL, *sm = facet_ptr(save_mean), *si = facet_ptr(save_invstd);
    const float *sg = facet_ptr(sum_dy), *sgh = facet_ptr(sum_dy_xhat);
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_batchnorm_backward_elemt(x->dtype, facet_ptr(grad_x), facet_ptr(grad_out), facet_ptr(x), wp,
                                                   sm, si, sg, sgh, (double)count, s.n, s.c, s.hw);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *go = facet_half_in(fn, grad_out, 0, &ok);
    const float *xp = ok ? facet_half_in(fn, x, 1, &ok) : NULL;
    float *gx = ok ? facet_half_out(fn, grad_x, 2, &ok) : NULL;
    if (ok) {
        struct bn_backward a = { gx, NULL, NULL, go, xp, wp, sm, si, sg, sgh, s, 1, (double)count };
        backward_cpu(&a);
    }
    return facet_half_finish(x->dtype, grad_x, gx, ok, 0);
}
