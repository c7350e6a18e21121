/*
 * test_core.c - C unit tests of the API boundary: every kind of bad argument
 * returns an error status with a message naming the function, never a crash;
 * plus a few results checked by hand. TAP-style output; `--counts FILE`
 * writes "passed failed" for the spec summary.
 */
#include "facet.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
/* core/src: the formulas the CPU and CUDA backends share, tested directly */
#include "conv_math.h"
#include "head_math.h"
#include "pool_math.h"
#include "random_math.h"
#include "upsample_math.h"
#include <stdint.h>
#include <stdlib.h>
#include "test_counts.h"

static int passed, failed;

static void check(int cond, const char *what)
{
    if (cond) passed++;
    else failed++;
    printf("%s %d - %s\n", cond ? "ok" : "not ok", passed + failed, what);
}

/* rc is an error and the message names fn (and the extra text, if any) */
static void check_error(int rc, const char *fn, const char *extra, const char *what)
{
    const char *msg = facet_last_error();
    int ok = rc != 0 && strstr(msg, fn) != NULL && (!extra || strstr(msg, extra) != NULL);
    if (!ok) printf("# rc=%d message: %s\n", rc, msg);
    check(ok, what);
}

static facet_tensor *make(int dtype, int ndim, int64_t a, int64_t b)
{
    int64_t sizes[2] = { a, b };
    facet_tensor *t = NULL;
    if (facet_tensor_init(&t, dtype, FACET_DEVICE_CPU, ndim, sizes) != 0) return NULL;
    return t;
}

/* conv_math.h: the CUDA convolution's workspace, which nn.Conv2d allocates
 * as facet_conv2d_workspace_size says, and the images its batched weight
 * gradient takes from a given workspace (hand-computed; the CUDA kernels read
 * the same layout) */
static struct facet_conv_geom conv_geom(int64_t n, int64_t c, int64_t hw, int64_t o, int64_t k, int64_t pad,
                                        int64_t groups)
{
    struct facet_conv_geom g = { 0 };
    g.n = n, g.c = c, g.h = g.w = hw, g.o = o, g.kh = g.kw = k;
    g.sh = g.sw = g.dh = g.dw = 1, g.ph = g.pw = pad, g.groups = groups;
    g.ho = g.wo = hw + 2 * pad - k + 1;
    g.cg = c / groups, g.og = o / groups, g.k = g.cg * k * k, g.p = g.ho * g.wo;
    return g;
}

static void test_conv_cuda_workspace(void)
{
    /* 3 images, 4 -> 6 channels in 2 groups, 3x3 pad 1 on 9x9: 36 column rows
     * and 6 grad_out rows, each of 3 x 81 values padded to 248 */
    struct facet_conv_geom g = conv_geom(3, 4, 9, 6, 3, 1, 2);
    check(facet_conv_path(&g) == FACET_CONV_IM2COL && facet_conv_cuda_min_workspace(&g) == 36 * 81,
          "conv workspace: im2col path, one image's columns at least");
    check(facet_conv_cuda_gw_ld(&g, 3) == 248 && facet_conv_cuda_gw_ld(&g, 2) == 168,
          "conv workspace: rows padded to 8 values");
    check(facet_conv_cuda_workspace(&g) == 42 * 248, "conv workspace: all 3 images batched");
    check(facet_conv_cuda_gw_images(&g, 42 * 248 * 4, 4) == 3, "conv workspace: 3 images fit exactly");
    check(facet_conv_cuda_gw_images(&g, 42 * 248 * 4 - 1, 4) == 2, "conv workspace: a byte less holds 2");
    check(facet_conv_cuda_gw_images(&g, 42 * 168 * 4 - 1, 4) == 1, "conv workspace: then 1 (image by image)");
    check(facet_conv_cuda_gw_images(&g, 42 * 248 * 2, 2) == 3, "conv workspace: 16-bit values take half");
    /* iresnet's widest layer at batch 128: 8 images of 576 + 64 rows of 12544 fit in 256 MB */
    struct facet_conv_geom big = conv_geom(128, 64, 112, 64, 3, 1, 1);
    check(facet_conv_cuda_workspace(&big) == INT64_C(640) * 100352, "conv workspace: 112x112x64 batches 8 images");
    check(facet_conv_cuda_gw_images(&big, INT64_C(640) * 100352 * 4, 4) == 8, "conv workspace: and takes 8 back");
    /* a workspace far past the size asked for: chunks stay within cuBLAS's int K */
    struct facet_conv_geom huge = conv_geom(200000, 4, 112, 4, 3, 1, 1);
    int64_t nbig = facet_conv_cuda_gw_images(&huge, INT64_C(1) << 45, 4);
    check(nbig > 1 && nbig * huge.p <= INT32_MAX && (nbig + 1) * huge.p + 8 > INT32_MAX,
          "conv workspace: a chunk's K fits cuBLAS's int");
    /* pointwise: x's 4 planes and grad_out's 6; none for 1 image or depthwise */
    struct facet_conv_geom pw = conv_geom(3, 4, 9, 6, 1, 0, 1);
    check(facet_conv_path(&pw) == FACET_CONV_POINTWISE && facet_conv_cuda_workspace(&pw) == 10 * 248,
          "conv workspace: pointwise batches x's planes");
    struct facet_conv_geom pw1 = conv_geom(1, 4, 9, 6, 1, 0, 1), dw = conv_geom(3, 4, 9, 4, 3, 1, 4);
    check(facet_conv_cuda_workspace(&pw1) == 0 && facet_conv_cuda_workspace(&dw) == 0 &&
          facet_conv_cuda_gw_images(&dw, 1 << 20, 4) == 0,
          "conv workspace: none for a single image or a depthwise layer");
}

/* head_math.h: merging (max, sum of exp(z - max)) pairs of log-sum-exp
 * partials, as the CPU merges chunks and the GPU threads and warps */
static void test_lse_merge(void)
{
    float m = -INFINITY, s = 0.0f;
    facet_lse_merge(&m, &s, -INFINITY, 0.0f);
    check(m == -INFINITY && s == 0.0f, "lse: two empty pairs merge to the empty pair, not NaN");
    facet_lse_merge(&m, &s, 2.0f, 3.0f);
    check(m == 2.0f && s == 3.0f, "lse: a pair merged into the empty pair is itself");
    facet_lse_merge(&m, &s, -INFINITY, 0.0f);
    check(m == 2.0f && s == 3.0f, "lse: the empty pair merged into a pair changes nothing");
    facet_lse_merge(&m, &s, -INFINITY, 1.0f);
    check(m == 2.0f && s == 3.0f, "lse: a -inf logit adds nothing");
    m = -INFINITY, s = 0.0f;
    facet_lse_merge(&m, &s, -INFINITY, 1.0f);
    facet_lse_merge(&m, &s, -INFINITY, 1.0f);
    check(m == -INFINITY && s == 0.0f, "lse: -inf logits alone leave the empty pair");
    m = 1.0f, s = 1.0f;
    facet_lse_merge(&m, &s, 1.0f, 1.0f);
    check(m == 1.0f && s == 2.0f, "lse: equal maxima add their sums");
    m = 0.0f, s = 1.0f;
    facet_lse_merge(&m, &s, 3.0f, 2.0f);
    check(m == 3.0f && fabsf(s - (2.0f + expf(-3.0f))) < 1e-6f, "lse: a larger max rescales the old sum");
    facet_lse_merge(&m, &s, 0.0f, 1.0f);
    check(m == 3.0f && fabsf(s - (2.0f + 2.0f * expf(-3.0f))) < 1e-6f, "lse: a smaller max rescales the new sum");
    m = -INFINITY, s = 0.0f;
    facet_lse_merge(&m, &s, NAN, 1.0f);
    facet_lse_merge(&m, &s, 5.0f, 1.0f);
    check(s != s, "lse: a NaN logit reaches the sum");
    m = 1.0f, s = 1.0f;
    facet_lse_merge(&m, &s, -INFINITY, NAN);
    check(s != s, "lse: a NaN sum is never an empty pair");
}

/* upsample_math.h: the GPU's backward gathers per input pixel what the
 * CPU's backward (facet_upsample2d_backward) scatters: the same bits */
static void test_upsample_gather(void)
{
    static const int64_t shapes[][4] = {   /* h, w, ho, wo */
        { 3, 4, 7, 5 }, { 5, 5, 2, 3 }, { 4, 4, 8, 8 }, { 1, 3, 4, 1 }, { 6, 7, 6, 7 }, { 3, 3, 1, 1 }, { 7, 2, 16, 9 },
    };
    static const int modes[][2] = { { FACET_UPSAMPLE_MODE_NEAREST, 0 }, { FACET_UPSAMPLE_MODE_BILINEAR, 0 },
                                    { FACET_UPSAMPLE_MODE_BILINEAR, 1 } };
    int same = 1;
    uint32_t state = 12345u;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t h = shapes[si][0], w = shapes[si][1], ho = shapes[si][2], wo = shapes[si][3];
        int64_t xs[4] = { 1, 2, h, w }, os[4] = { 1, 2, ho, wo };
        float go[2 * 16 * 16], gx[2 * 16 * 16];
        for (int64_t i = 0; i < 2 * ho * wo; i++) {   /* magnitudes from 1e-3 to 1e3, so the order of sums shows */
            state = state * 1664525u + 1013904223u;
            go[i] = ((float)(state >> 8) / 16777216.0f - 0.5f) * powf(10.0f, (float)(int)(state % 7) - 3.0f);
        }
        for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
            facet_tensor *tx = NULL, *to = NULL;
            facet_tensor_init(&tx, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 4, xs);
            facet_tensor_init(&to, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 4, os);
            facet_tensor_write(to, go, sizeof(float) * (size_t)(2 * ho * wo));
            int rc = facet_upsample2d_backward(tx, to, modes[mi][0], modes[mi][1]);
            facet_tensor_read(tx, gx, sizeof(float) * (size_t)(2 * h * w));
            for (int64_t p = 0; p < 2 && !rc; p++)
                for (int64_t y = 0; y < h; y++)
                    for (int64_t x = 0; x < w; x++) {
                        float g = facet_ups_backward_at(go, FACET_DTYPE_FLOAT32, p * ho * wo, h, w, ho, wo, modes[mi][0],
                                                        modes[mi][1], y, x);
                        if (memcmp(&g, &gx[(p * h + y) * w + x], sizeof g) != 0) {
                            if (same) printf("# %lldx%lld -> %lldx%lld mode %d/%d at (%lld, %lld): %.9g vs %.9g\n",
                                             (long long)h, (long long)w, (long long)ho, (long long)wo, modes[mi][0],
                                             modes[mi][1], (long long)y, (long long)x, g, gx[(p * h + y) * w + x]);
                            same = 0;
                        }
                    }
            if (rc) same = 0;
            facet_tensor_free(tx);
            facet_tensor_free(to);
        }
    }
    check(same, "upsample: the per-pixel gather equals the CPU scatter bit for bit");
}

/* pool_math.h: the outputs whose windows hold a pixel, against brute force */
static void test_pool_outputs_holding(void)
{
    int ok = 1;
    for (int64_t k = 1; k <= 4; k++)
        for (int64_t s = 1; s <= 3; s++)
            for (int64_t p = 0; p <= k / 2; p++)
                for (int64_t len = 1; len <= 9; len++) {
                    if (len + 2 * p < k) continue;
                    const int64_t n = (len + 2 * p - k) / s + 1;
                    for (int64_t v = 0; v < len; v++) {
                        int64_t lo, hi;
                        facet_pool_outputs_holding(v, k, s, p, n, &lo, &hi);
                        for (int64_t o = 0; o < n; o++) {
                            const int holds = o * s - p <= v && v < o * s - p + k;
                            if (holds != (o >= lo && o <= hi)) ok = 0;
                        }
                    }
                }
    check(ok, "pool: outputs holding a pixel match brute force");
}

/* random_math.h: the log and cos polynomials both devices use, against libm
 * in double over the values the normal draws feed them */
static void test_random_math(void)
{
    double log_err = 0.0, cos_err = 0.0;
    for (uint32_t k = 0; k < (1u << 24); k += 7) {
        const float u1 = ((float)k + 1.0f) * (1.0f / 16777216.0f), u2 = (float)k * (1.0f / 16777216.0f);
        const double l = log((double)u1), el = fabs((double)facet_log_rn(u1) - l);
        const double rel = l != 0.0 ? el / fabs(l) : el;
        if (rel > log_err) log_err = rel;
        const double ec = fabs((double)facet_cos_2pi_rn(u2) - cos(6.283185307179586 * (double)u2));
        if (ec > cos_err) cos_err = ec;
    }
    if (log_err > 3e-7 || cos_err > 3e-7) printf("# log rel err %.3g, cos abs err %.3g\n", log_err, cos_err);
    check(log_err <= 3e-7, "random: the log polynomial is within 3e-7 (relative) of log");
    check(cos_err <= 3e-7, "random: the cos polynomial is within 3e-7 of cos(2 pi u)");
    check(facet_log_rn(1.0f) == 0.0f && facet_cos_2pi_rn(0.0f) == 1.0f && facet_cos_2pi_rn(0.5f) == -1.0f,
          "random: log(1) = 0, cos(0) = 1, cos(pi) = -1 exactly");
}

/* hostile input at the C boundary: overflowing size arithmetic, overlapping
 * operands, values out of an integer dtype's range (spec/hostile_tensor_spec.lua
 * covers the same through Lua, each case in its own process) */
static void hostile_checks(void)
{
    facet_tensor *t = NULL, *v = NULL, *w = NULL;
    int64_t huge[3] = { INT64_C(1) << 31, INT64_C(1) << 31, INT64_C(1) << 31 };
    int rc = facet_tensor_init(&t, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 3, huge);
    check(rc == FACET_STATUS_ERR_MEMORY, "hostile: a product of sizes past int64 is ERR_MEMORY");
    check_error(rc, "facet_tensor_init", "bytes", "hostile: ... naming the bytes");
    int64_t strides_over[3] = { 0, INT64_C(1) << 31, INT64_C(1) << 31 };
    check_error(facet_tensor_init(&t, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 3, strides_over), "facet_tensor_init",
                "empty, but its sizes span", "hostile: an empty shape whose strides overflow");
    int64_t neg[2] = { 2, -1 };
    check_error(facet_tensor_init(&t, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 2, neg), "facet_tensor_init",
                "of dim 2 is negative", "hostile: negative size, dim counted from 1");

    int64_t ten = 10;
    if (facet_tensor_init(&t, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 1, &ten) != 0) { check(0, "hostile: init"); return; }
    facet_tensor_arange(t, 0, 1);
    check_error(facet_tensor_narrow(&v, t, 0, 1, INT64_MAX), "facet_tensor_narrow", "length 9223372036854775807",
                "hostile: narrow start + length overflow");
    check_error(facet_tensor_narrow(&v, t, 0, INT64_MAX, 1), "facet_tensor_narrow", "start 9223372036854775807",
                "hostile: narrow start past the end");
    check_error(facet_tensor_select(&v, t, 0, INT64_MIN), "facet_tensor_select", "outside [0, 10) of dim 1",
                "hostile: select INT64_MIN");
    int64_t two_infer[2] = { -1, -1 }, over[3] = { INT64_C(1) << 62, 4, -1 };
    check_error(facet_tensor_reshape(&v, t, 2, two_infer), "facet_tensor_reshape", "both -1", "hostile: reshape two -1");
    check_error(facet_tensor_reshape(&v, t, 3, over), "facet_tensor_reshape", "cannot infer",
                "hostile: reshape sizes overflowing int64");
    check(v == NULL, "hostile: views stay NULL after errors");

    /* t[1:10] <- t[0:9]: memmove semantics (the overlap is read through a copy) */
    facet_tensor_narrow(&v, t, 0, 1, 9);
    facet_tensor_narrow(&w, t, 0, 0, 9);
    check(facet_tensor_copy(v, w) == 0, "hostile: copy between overlapping views");
    int64_t i9 = 9, i1 = 1;
    double x9 = -1, x1 = -1;
    facet_tensor_get(t, &i9, &x9);
    facet_tensor_get(t, &i1, &x1);
    check(x9 == 8 && x1 == 0, "hostile: ... gives the values from before the copy");
    /* t[1:10] = t[1:10] + t[0:9] */
    facet_tensor_arange(t, 0, 1);
    check(facet_tensor_binary(v, v, w, FACET_BINARY_ADD) == 0, "hostile: binary with a shifted input");
    facet_tensor_get(t, &i9, &x9);
    check(x9 == 17, "hostile: ... reads the input from before the call");
    facet_tensor_free(v);
    facet_tensor_free(w);

    /* conversions: out of range is an error and nothing is written */
    facet_tensor *i32 = NULL;
    if (facet_tensor_init(&i32, FACET_DTYPE_INT32, FACET_DEVICE_CPU, 1, &ten) == 0) {
        facet_tensor_fill(i32, 7);
        facet_tensor_fill(t, 1e10);
        check_error(facet_tensor_copy(i32, t), "facet_tensor_copy", "out of range for int32", "hostile: copy 1e10 to int32");
        double x = 0;
        facet_tensor_get(i32, &i1, &x);
        check(x == 7, "hostile: ... writes nothing");
        check_error(facet_tensor_fill(i32, NAN), "facet_tensor_fill", "not a finite number", "hostile: fill NaN into int32");
        check_error(facet_tensor_set(i32, &i1, 2147483648.0), "facet_tensor_set", "2147483648", "hostile: set 2^31");
        check_error(facet_tensor_arange(i32, 2147483640.0, 1), "facet_tensor_arange", "last value",
                    "hostile: arange past int32");
        check(facet_tensor_fill(i32, -2147483648.9) == 0, "hostile: -2^31 - 0.9 truncates into int32");
    }
    facet_tensor_free(i32);
    facet_tensor_free(t);
}

/* eval.c: argument checks, and small cases by hand (the specs check the
 * large ones against NumPy) */
static facet_tensor *make_values(int dtype, int64_t n, const double *v)
{
    facet_tensor *t = make(dtype, 1, n, 1);
    for (int64_t i = 0; t && i < n; i++) facet_tensor_set(t, &i, v[i]);
    return t;
}

static void test_eval(void)
{
    /* the ROC: 2 genuine, 4 impostor scores, max FAR 0.5 keeps 3 impostors */
    facet_eval_roc *r = NULL;
    check_error(facet_eval_roc_init(&r, 2, 4, 0.0), "facet_eval_roc_init", "max_far", "eval: max_far 0");
    check_error(facet_eval_roc_init(&r, -1, 4, 0.5), "facet_eval_roc_init", ">= 0", "eval: negative count");
    check(facet_eval_roc_init(&r, 2, 4, 0.5) == 0 && r != NULL, "eval: roc_init");
    const double sv[6] = { 0.9, 0.8, 0.1, 0.5, 0.6, 0.3 }, mv[6] = { 1, 0, 0, 1, 0, 0 };
    facet_tensor *s = make_values(FACET_DTYPE_FLOAT32, 6, sv), *m = make_values(FACET_DTYPE_UINT8, 6, mv);
    double far[2] = { 0.25, 0.5 }, tar[2] = { -1, -1 }, thr[2];
    check_error(facet_eval_roc_tar(r, 2, far, tar, thr), "facet_eval_roc_tar", "0 of 2 genuine",
                "eval: tar before every score is in");
    check(facet_eval_roc_add(r, s, m) == 0, "eval: roc_add");
    check_error(facet_eval_roc_add(r, s, m), "facet_eval_roc_add", "announced", "eval: more scores than announced");
    int64_t ng = -1, ni = -1;
    check(facet_eval_roc_counts(r, &ng, &ni) == 0 && ng == 2 && ni == 4, "eval: counts unchanged by the failed add");
    /* FAR 0.25: one false accept, above the 2nd impostor 0.6: 0.9 only; FAR 0.5: above 0.3: both */
    check(facet_eval_roc_tar(r, 2, far, tar, thr) == 0 && tar[0] == 0.5 && tar[1] == 1.0 && thr[0] == (float)0.6,
          "eval: TAR at FAR by hand");
    double big = 0.75;
    check_error(facet_eval_roc_tar(r, 1, &big, tar, NULL), "facet_eval_roc_tar", "max_far", "eval: far above max_far");
    double fpr[8], tpr[8];
    int64_t n = 0;
    /* (0,0) at +inf, then 0.9 (genuine), 0.8, 0.6 (impostors), 0.5 (genuine); 0.3, the lowest kept
     * impostor, and below: FP unknown past max_far */
    const double wf[5] = { 0, 0, 0.25, 0.5, 0.5 }, wt[5] = { 0, 0.5, 0.5, 0.5, 1 };
    int same_curve = facet_eval_roc_curve(r, 8, fpr, tpr, NULL, &n) == 0 && n == 5;
    for (int k = 0; same_curve && k < 5; k++) same_curve = fpr[k] == wf[k] && tpr[k] == wt[k];
    check(same_curve, "eval: ROC points by hand");
    check_error(facet_eval_roc_curve(r, 1, fpr, tpr, NULL, &n), "facet_eval_roc_curve", "capacity", "eval: capacity 1");
    facet_eval_roc_free(r);
    facet_tensor_free(s);
    facet_tensor_free(m);
    check(facet_eval_roc_free(NULL) == 0, "eval: roc_free(NULL)");

    /* a running top-k that compacts: 100 impostors i/100 in a scrambled order, max FAR 0.05
     * keeps 6; FAR 0.05 accepts above the 6th highest (0.94) */
    check(facet_eval_roc_init(&r, 3, 100, 0.05) == 0, "eval: roc_init 100");
    double v[103], f[103];
    for (int i = 0; i < 100; i++) { v[i] = ((i * 37) % 100) / 100.0; f[i] = 0; }
    v[100] = 0.95; v[101] = 0.945; v[102] = 0.5;
    f[100] = f[101] = f[102] = 1;
    s = make_values(FACET_DTYPE_FLOAT32, 103, v);
    m = make_values(FACET_DTYPE_UINT8, 103, f);
    double f5 = 0.05, t5 = 0;
    check(facet_eval_roc_add(r, s, m) == 0 && facet_eval_roc_tar(r, 1, &f5, &t5, NULL) == 0 && t5 == 2.0 / 3.0,
          "eval: the running top-k keeps what FAR 0.05 needs");
    facet_eval_roc_free(r);
    facet_tensor_free(s);
    facet_tensor_free(m);

    /* top-k: probe (1, 0) of label 1 against rows (0.6, 0.8) [1], (1, 0) [2], (0, 1) [1] */
    const double pv[2] = { 1, 0 }, gv[6] = { 0.6, 0.8, 1, 0, 0, 1 }, pl[1] = { 1 }, gl[3] = { 1, 2, 1 };
    facet_tensor *p = make(FACET_DTYPE_FLOAT32, 2, 1, 2), *g = make(FACET_DTYPE_FLOAT32, 2, 3, 2);
    for (int64_t i = 0; i < 2; i++) { int64_t ix[2] = { 0, i }; facet_tensor_set(p, ix, pv[i]); }
    for (int64_t i = 0; i < 6; i++) { int64_t ix[2] = { i / 2, i % 2 }; facet_tensor_set(g, ix, gv[i]); }
    facet_tensor *ptl = make_values(FACET_DTYPE_INT64, 1, pl), *gtl = make_values(FACET_DTYPE_INT64, 3, gl);
    facet_tensor *top = make(FACET_DTYPE_FLOAT32, 2, 1, 2), *idx = make(FACET_DTYPE_INT64, 2, 1, 2);
    facet_tensor *gen = make(FACET_DTYPE_FLOAT32, 1, 1, 1);
    check_error(facet_eval_topk(top, idx, gen, p, g, ptl, gtl, 0), "facet_eval_topk", "block", "eval: block 0");
    check_error(facet_eval_topk(top, idx, gen, p, g, ptl, NULL, 2), "facet_eval_topk", "both", "eval: one label list");
    check_error(facet_eval_topk(top, idx, gen, p, p, NULL, NULL, 2), "facet_eval_topk", "genuine", "eval: genuine without labels");
    check(facet_eval_topk(top, idx, gen, p, g, ptl, gtl, 2) == 0, "eval: topk");
    const float *tp = NULL, *gp = NULL;
    const int64_t *ip = NULL;
    facet_tensor_data(top, (void **)&tp);
    facet_tensor_data(idx, (void **)&ip);
    facet_tensor_data(gen, (void **)&gp);
    check(tp[0] == 1.0f && isinf(tp[1]) && ip[0] == 1 && ip[1] == -1 && fabsf(gp[0] - 0.6f) < 1e-7f,
          "eval: topk by hand (one impostor, then -inf; the best genuine)");
    facet_tensor *out = make(FACET_DTYPE_FLOAT32, 1, 2, 1);
    const double bad[2] = { 0, 3 };
    facet_tensor *ib = make_values(FACET_DTYPE_INT64, 2, bad);
    check_error(facet_eval_pair_scores(out, g, g, ib, ib, 0), "facet_eval_pair_scores", "ia[1] = 3",
                "eval: pair index out of range");
    double acc[2], th[2];
    check_error(facet_eval_kfold(acc, th, out, ib, 2, 0), "facet_eval_kfold", "uint8", "eval: kfold same dtype");
    facet_tensor *tensors[] = { p, g, ptl, gtl, top, idx, gen, out, ib };
    for (size_t i = 0; i < sizeof tensors / sizeof *tensors; i++) facet_tensor_free(tensors[i]);
}

int main(int argc, char **argv)
{
    const char *counts = test_counts_path(argc, argv);
    facet_tensor *t = NULL, *v = NULL;
    int64_t sizes[9] = { 2, 3, 1, 1, 1, 1, 1, 1, 1 };

    /* creation */
    check_error(facet_tensor_init(NULL, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 2, sizes), "facet_tensor_init",
                "out is NULL", "empty: NULL out");
    check_error(facet_tensor_init(&t, 99, FACET_DEVICE_CPU, 2, sizes), "facet_tensor_init", "dtype 99",
                "empty: unknown dtype");
    check_error(facet_tensor_init(&t, FACET_DTYPE_COUNT, FACET_DEVICE_CPU, 2, sizes), "facet_tensor_init",
                "unknown dtype", "empty: dtype past the last");
    check_error(facet_tensor_init(&t, FACET_DTYPE_FLOAT32, 7, 2, sizes), "facet_tensor_init", "device 7",
                "empty: unknown device");
    check_error(facet_tensor_init(&t, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 9, sizes), "facet_tensor_init",
                "ndim 9", "empty: too many dims");
    check_error(facet_tensor_init(&t, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 2, NULL), "facet_tensor_init",
                "sizes is NULL", "empty: NULL sizes");
    int64_t neg[2] = { 2, -3 };
    check_error(facet_tensor_init(&t, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 2, neg), "facet_tensor_init",
                "negative", "empty: negative size");
    int64_t huge[2] = { INT64_C(1) << 40, INT64_C(1) << 40 };
    check_error(facet_tensor_init(&t, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 2, huge), "facet_tensor_init",
                "too large", "empty: overflowing size");
    check(t == NULL, "empty: out stays NULL after errors");

    t = make(FACET_DTYPE_FLOAT32, 2, 2, 3);
    check(t != NULL, "empty: 2x3 float32");
    check_error(facet_tensor_ndim(t, NULL), "facet_tensor_ndim", "NULL", "ndim: NULL out");
    check_error(facet_tensor_ndim(NULL, NULL), "facet_tensor_ndim", "t is NULL", "ndim: NULL tensor");

    /* views */
    check_error(facet_tensor_narrow(&v, t, 2, 0, 1), "facet_tensor_narrow", "dim 2 out of range", "narrow: bad dim");
    check_error(facet_tensor_narrow(&v, t, 1, 2, 2), "facet_tensor_narrow", "[2x3 float32 cpu]", "narrow: range");
    check_error(facet_tensor_select(&v, t, 0, 2), "facet_tensor_select", "index 2", "select: index");
    int64_t bad_shape[2] = { 4, 2 };
    check_error(facet_tensor_reshape(&v, t, 2, bad_shape), "facet_tensor_reshape", "6 elements", "reshape: count");
    int perm[2] = { 0, 0 };
    check_error(facet_tensor_permute_view(&v, t, perm), "facet_tensor_permute_view", "permutation", "permute: dup");
    check(v == NULL, "views: out stays NULL after errors");

    /* element access */
    int64_t idx[2] = { 1, 3 };
    double val = 0;
    check_error(facet_tensor_get(t, idx, &val), "facet_tensor_get", "index 3", "get: out of range");
    check_error(facet_tensor_set(t, NULL, 1.0), "facet_tensor_set", "index is NULL", "set: NULL index");
    idx[1] = 2;
    check(facet_tensor_set(t, idx, 4.5) == 0 && facet_tensor_get(t, idx, &val) == 0 && val == 4.5,
          "set/get round trip");
    float buf[6];
    check_error(facet_tensor_read(t, buf, 5 * sizeof(float)), "facet_tensor_read", "needs 24", "read: size");

    /* arithmetic */
    facet_tensor *u = make(FACET_DTYPE_FLOAT32, 2, 3, 2);
    facet_tensor *i32 = make(FACET_DTYPE_INT32, 2, 2, 3);
    check_error(facet_tensor_binary(t, t, u, FACET_BINARY_ADD), "facet_tensor_binary", "do not broadcast", "binary: shapes");
    check_error(facet_tensor_binary(t, t, i32, FACET_BINARY_ADD), "facet_tensor_binary", "dtypes differ", "binary: dtypes");
    check_error(facet_tensor_binary(t, t, t, 99), "facet_tensor_binary", "unknown op", "binary: op");
    check_error(facet_tensor_unary(u, t, FACET_UNARY_EXP, 0, 0), "facet_tensor_unary", "must match", "unary: out shape");
    check_error(facet_tensor_unary(t, NULL, FACET_UNARY_EXP, 0, 0), "facet_tensor_unary", "x is NULL", "unary: NULL");

    /* broadcast by hand: t = [[0,1,2],[3,4,5]] + row [10,20,30] */
    facet_tensor *row = NULL;
    int64_t three = 3;
    facet_tensor_init(&row, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 1, &three);
    facet_tensor_arange(t, 0, 1);
    facet_tensor_arange(row, 10, 10);
    check(facet_tensor_binary(t, t, row, FACET_BINARY_ADD) == 0, "binary: row broadcast runs");
    facet_tensor_read(t, buf, sizeof buf);
    check(buf[0] == 10 && buf[2] == 32 && buf[3] == 13 && buf[5] == 35, "binary: row broadcast values");

    /* reductions */
    facet_tensor *r2 = make(FACET_DTYPE_FLOAT32, 1, 2, 0);
    check(facet_tensor_reduce(r2, t, FACET_REDUCE_SUM, 1, 0) == 0, "reduce: sum over dim 1");
    float sums[2];
    facet_tensor_read(r2, sums, sizeof sums);
    check(sums[0] == 63 && sums[1] == 72, "reduce: row sums by hand");
    check_error(facet_tensor_reduce(r2, t, FACET_REDUCE_SUM, 0, 0), "facet_tensor_reduce", "3 elements", "reduce: out size");
    check_error(facet_tensor_reduce(r2, t, FACET_REDUCE_ARGMAX, 1, 0), "facet_tensor_reduce", "int64", "reduce: arg dtype");
    check_error(facet_tensor_reduce(r2, t, FACET_REDUCE_SUM, 5, 0), "facet_tensor_reduce", "dim 5", "reduce: bad dim");

    /* matmul: [2x3] @ [3x2] */
    facet_tensor *c = make(FACET_DTYPE_FLOAT32, 2, 2, 2);
    facet_tensor_arange(u, 1, 1);   /* [[1,2],[3,4],[5,6]] */
    check(facet_tensor_matmul(c, t, u, 0, 0, 1.0f, 0.0f) == 0, "matmul: 2x3 @ 3x2");
    float cv[4];
    facet_tensor_read(c, cv, sizeof cv);
    /* t = [[10,21,32],[13,24,35]] */
    check(cv[0] == 10 + 63 + 160 && cv[1] == 20 + 84 + 192 && cv[2] == 13 + 72 + 175 && cv[3] == 26 + 96 + 210,
          "matmul: values by hand");
    check_error(facet_tensor_matmul(c, t, t, 0, 0, 1.0f, 0.0f), "facet_tensor_matmul", "[2x3 float32 cpu]", "matmul: shapes");
    check_error(facet_tensor_matmul(c, i32, u, 0, 0, 1.0f, 0.0f), "facet_tensor_matmul", "float32", "matmul: dtype");

    /* indexing */
    facet_tensor *ix = NULL;
    int64_t two = 2;
    facet_tensor_init(&ix, FACET_DTYPE_INT64, FACET_DEVICE_CPU, 1, &two);
    int64_t bad_idx[2] = { 0, 3 };
    facet_tensor_write(ix, bad_idx, sizeof bad_idx);
    facet_tensor *sel = make(FACET_DTYPE_FLOAT32, 2, 2, 2);
    check_error(facet_tensor_index_select(sel, u, ix, 0), "facet_tensor_index_select", "= 3 outside [0, 2]", "index: range");
    check_error(facet_tensor_index_select(sel, u, t, 0), "facet_tensor_index_select", "int32 or int64", "index: dtype");

    /* random: NaN parameters are refused */
    check_error(facet_tensor_rand_uniform(t, 1, 0, NAN, 1.0f), "facet_tensor_rand_uniform", "NaN", "rand: NaN");

    /* formulas shared with the CUDA backend */
    test_lse_merge();
    test_conv_cuda_workspace();
    test_upsample_gather();
    test_pool_outputs_holding();
    test_random_math();
    test_eval();

    /* threads and versions */
    check_error(facet_threads_set(0), "facet_threads_set", "0 threads", "threads: zero");
    check(strcmp(facet_version(), "0.1.0") == 0, "version string");
    int built = -1, count = -1;
    check(facet_cuda_built(&built) == 0 && (built == 0 || built == 1), "cuda_built answers");
    check(facet_cuda_device_count(&count) == 0 && count >= 0, "cuda device count answers without a GPU");
    char gpu[64] = "x";
    int64_t gpu_mem = -1;
    check_error(facet_cuda_device_name(0, NULL, 64, &gpu_mem), "facet_cuda_device_name", "name is NULL",
                "device name: NULL buffer");
    check_error(facet_cuda_device_name(0, gpu, 64, NULL), "facet_cuda_device_name", "memory is NULL",
                "device name: NULL memory");
    check_error(facet_cuda_device_name(-1, gpu, 64, &gpu_mem), "facet_cuda_device_name", "device -1 outside",
                "device name: negative device");
    check_error(facet_cuda_device_name(count, gpu, 64, &gpu_mem), "facet_cuda_device_name", "outside [0,",
                "device name: one past the last device");
    check(gpu[0] == '\0' && gpu_mem == 0, "device name: a refused call leaves an empty name and 0 bytes");
    if (count > 0) {
        check(facet_cuda_device_name(0, gpu, 64, &gpu_mem) == 0 && gpu[0] != '\0' && gpu_mem > 0,
              "device name: device 0 has a name and memory");
    }

    /* freeing a view after its base keeps the storage alive */
    facet_tensor *view = NULL;
    facet_tensor_narrow(&view, t, 1, 1, 2);
    facet_tensor_free(t);
    double x = 0;
    int64_t z[2] = { 0, 0 };
    check(facet_tensor_get(view, z, &x) == 0 && x == 21, "view outlives its base");
    facet_tensor_free(view);
    check(facet_tensor_free(NULL) == 0, "free(NULL) is a no-op");

    facet_tensor_free(u); facet_tensor_free(i32); facet_tensor_free(row); facet_tensor_free(r2);
    facet_tensor_free(c); facet_tensor_free(ix); facet_tensor_free(sel);

    hostile_checks();

    printf("1..%d\n", passed + failed);
    test_counts_write(counts, passed, failed);
    return failed ? 1 : 0;
}
