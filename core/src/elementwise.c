/*
 * elementwise.c - unary ops with scalar arguments, binary ops with NumPy
 * broadcasting, and axpy. float32 runs in float; float16 and bfloat16 are
 * widened to float, computed with the float32 formulas and rounded once on
 * store; the integer dtypes go through double and are stored back truncated
 * (elementwise_math.h).
 */
#include "internal.h"
#include "guard.h"
#include "elementwise_math.h"
#include "nd.h"

struct unary_ctx { void *out; const void *x; int dt, op; double a, b; };

static void unary_row(void *p, int64_t n, const int64_t off[3], const int64_t st[3])
{
    const struct unary_ctx *c = p;
    if (c->dt == FACET_DTYPE_FLOAT32) {
        float *o = (float *)c->out + off[0];
        const float *x = (const float *)c->x + off[1];
        float a = (float)c->a, b = (float)c->b;
        int op = c->op;
        if (st[0] == 1 && st[1] == 1)
            for (int64_t i = 0; i < n; i++) o[i] = facet_unary_f32(op, x[i], a, b);
        else
            for (int64_t i = 0; i < n; i++) o[i * st[0]] = facet_unary_f32(op, x[i * st[1]], a, b);
        return;
    }
    if (facet_dtype_is_half(c->dt)) {
        float a = (float)c->a, b = (float)c->b;
        for (int64_t i = 0; i < n; i++)
            facet_store_half(c->out, c->dt, off[0] + i * st[0],
                             facet_unary_f32(c->op, facet_load_half(c->x, c->dt, off[1] + i * st[1]), a, b));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        facet_store(c->out, c->dt, off[0] + i * st[0],
                    facet_unary_f64(c->op, facet_load(c->x, c->dt, off[1] + i * st[1]), c->a, c->b));
}

int facet_tensor_unary(facet_tensor *out, const facet_tensor *x, int op, double a, double b)
{
    static const char *fn = "facet_tensor_unary";
    int rc = facet_check_tensor(fn, "out", out);
    if (!rc) rc = facet_check_tensor(fn, "x", x);
    if (!rc) rc = facet_check_same_device(fn, out, x);
    if (rc) return rc;
    if (op < 0 || op >= FACET_UNARY_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown op %d", fn, op);
    if (!facet_same_shape(out, x) || out->dtype != x->dtype)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s must match x %s", fn, facet_desc(out), facet_desc(x));
    facet_tensor *tmp = NULL;
    rc = facet_unalias(fn, out, x, true, &tmp, &x);
    if (rc) return rc;
    struct facet_nd nd;
    facet_nd_init(&nd, 2, out);
    facet_nd_set(&nd, 0, out);
    facet_nd_set(&nd, 1, x);
    facet_nd_collapse(&nd);
    if (out->device == FACET_DEVICE_CUDA) {
        rc = facet_cuda_unary_nd(facet_ptr(out), facet_ptr(x), x->dtype, op, a, b, &nd);
    } else {
        struct unary_ctx c = { facet_ptr(out), facet_ptr(x), x->dtype, op, a, b };
        facet_nd_run(&nd, unary_row, &c);
    }
    facet_tensor_free(tmp);
    return rc;
}

struct binary_ctx { void *out; const void *x, *y; int dt, op; };

static void binary_row(void *p, int64_t n, const int64_t off[3], const int64_t st[3])
{
    const struct binary_ctx *c = p;
    if (c->dt == FACET_DTYPE_FLOAT32) {
        float *o = (float *)c->out + off[0];
        const float *x = (const float *)c->x + off[1], *y = (const float *)c->y + off[2];
        int op = c->op;
        if (st[0] == 1 && st[1] == 1 && st[2] == 1)
            for (int64_t i = 0; i < n; i++) o[i] = facet_binary_f32(op, x[i], y[i]);
        else
            for (int64_t i = 0; i < n; i++) o[i * st[0]] = facet_binary_f32(op, x[i * st[1]], y[i * st[2]]);
        return;
    }
    if (facet_dtype_is_half(c->dt)) {
        for (int64_t i = 0; i < n; i++)
            facet_store_half(c->out, c->dt, off[0] + i * st[0],
                             facet_binary_f32(c->op, facet_load_half(c->x, c->dt, off[1] + i * st[1]),
                                              facet_load_half(c->y, c->dt, off[2] + i * st[2])));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        facet_store(c->out, c->dt, off[0] + i * st[0],
                    facet_binary_f64(c->op, facet_load(c->x, c->dt, off[1] + i * st[1]),
                                     facet_load(c->y, c->dt, off[2] + i * st[2])));
}

int facet_tensor_binary(facet_tensor *out, const facet_tensor *x, const facet_tensor *y, int op)
{
    static const char *fn = "facet_tensor_binary";
    int rc = facet_check_tensor(fn, "out", out);
    if (!rc) rc = facet_check_tensor(fn, "x", x);
    if (!rc) rc = facet_check_tensor(fn, "y", y);
    if (!rc) rc = facet_check_same_device(fn, out, x);
    if (!rc) rc = facet_check_same_device(fn, out, y);
    if (rc) return rc;
    if (op < 0 || op >= FACET_BINARY_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown op %d", fn, op);
    if (x->dtype != y->dtype || out->dtype != x->dtype)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: dtypes differ: out %s, x %s, y %s", fn, facet_desc(out),
                          facet_desc(x), facet_desc(y));
    /* broadcast shape, right-aligned */
    int nd_ = x->ndim > y->ndim ? x->ndim : y->ndim;
    bool ok = out->ndim == nd_;
    for (int d = 0; d < nd_ && ok; d++) {
        int dx = d - (nd_ - x->ndim), dy = d - (nd_ - y->ndim);
        int64_t sx = dx >= 0 ? x->sizes[dx] : 1, sy = dy >= 0 ? y->sizes[dy] : 1;
        if (sx != sy && sx != 1 && sy != 1)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s and %s do not broadcast (dim %d of the result: %lld vs %lld)", fn,
                              facet_desc(x), facet_desc(y), d + 1, (long long)sx, (long long)sy);
        int64_t s = sx == 1 ? sy : sx;
        ok = out->sizes[d] == s;
    }
    if (!ok)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s is not the broadcast shape of %s and %s", fn,
                          facet_desc(out), facet_desc(x), facet_desc(y));
    facet_tensor *tmp_x = NULL, *tmp_y = NULL;
    rc = facet_unalias(fn, out, x, true, &tmp_x, &x);
    if (!rc) rc = facet_unalias(fn, out, y, true, &tmp_y, &y);
    if (!rc) {
        struct facet_nd nd;
        facet_nd_init(&nd, 3, out);
        facet_nd_set(&nd, 0, out);
        facet_nd_set(&nd, 1, x);
        facet_nd_set(&nd, 2, y);
        facet_nd_collapse(&nd);
        if (out->device == FACET_DEVICE_CUDA) {
            rc = facet_cuda_binary_nd(facet_ptr(out), facet_ptr(x), facet_ptr(y), x->dtype, op, &nd);
        } else {
            struct binary_ctx c = { facet_ptr(out), facet_ptr(x), facet_ptr(y), x->dtype, op };
            facet_nd_run(&nd, binary_row, &c);
        }
    }
    facet_tensor_free(tmp_x);
    facet_tensor_free(tmp_y);
    return rc;
}

int facet_tensor_axpy(facet_tensor *out, const facet_tensor *x, double alpha, const facet_tensor *y)
{
    static const char *fn = "facet_tensor_axpy";
    int rc = facet_check_dtype(fn, "out", out, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "x", x, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "y", y, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, out, x);
    if (!rc) rc = facet_check_same_device(fn, out, y);
    if (rc) return rc;
    if (!facet_same_shape(out, x) || !facet_same_shape(out, y))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: shapes differ: out %s, x %s, y %s", fn, facet_desc(out),
                          facet_desc(x), facet_desc(y));
    if (!facet_contiguous(out) || !facet_contiguous(x) || !facet_contiguous(y))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: needs contiguous tensors", fn);
    facet_tensor *tmp_x = NULL, *tmp_y = NULL;
    rc = facet_unalias(fn, out, x, true, &tmp_x, &x);
    if (!rc) rc = facet_unalias(fn, out, y, true, &tmp_y, &y);
    if (!rc) {
        int64_t n = facet_numel(out);
        float *o = facet_ptr(out);
        const float *xp = facet_ptr(x), *yp = facet_ptr(y);
        if (out->device == FACET_DEVICE_CUDA) {
            rc = facet_cuda_axpy(o, xp, alpha, yp, n);
        } else {
            float a = (float)alpha;
            #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
            for (int64_t i = 0; i < n; i++) o[i] = xp[i] + a * yp[i];
        }
    }
    facet_tensor_free(tmp_x);
    facet_tensor_free(tmp_y);
    return rc;
}
