/*
 * guard.c - checked shape arithmetic, view overlap and the range rule for
 * values converted into integer dtypes (see guard.h).
 */
#include "guard.h"
#include "elementwise_math.h"
#include "nd.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* "[2x3 float32]" from bare sizes (no tensor exists yet) */
static const char *shape_text(char *buf, size_t cap, int dtype, int ndim, const int64_t *sizes)
{
    int n = snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < (int)cap - 48; d++)
        n += snprintf(buf + n, cap - (size_t)n, d ? "x%lld" : "%lld", (long long)sizes[d]);
    if (ndim == 0) n += snprintf(buf + n, cap - (size_t)n, "scalar");
    snprintf(buf + n, cap - (size_t)n, " %s]", facet_dtype_name(dtype));
    return buf;
}

int facet_check_shape(const char *fn, int dtype, int ndim, const int64_t *sizes, int64_t *numel)
{
    char text[256];
    bool empty = false;
    for (int d = 0; d < ndim; d++) {
        if (sizes[d] < 0)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: size %lld of dim %d is negative (sizes %s)", fn,
                              (long long)sizes[d], d + 1, shape_text(text, sizeof text, dtype, ndim, sizes));
        if (sizes[d] == 0) empty = true;
    }
    /* span: the product of max(size, 1). It bounds every partial product of
     * the sizes (the element count, the strides, and what loops multiply
     * before they meet a zero size), so an empty shape such as 2^40 x 2^40 x 0
     * is refused too: nothing downstream can overflow. */
    uint64_t span = 1, bytes = 0;
    double approx = (double)facet_elsize(dtype);
    bool over = false;
    for (int d = 0; d < ndim; d++) {
        uint64_t s = sizes[d] > 0 ? (uint64_t)sizes[d] : 1;
        approx *= (double)s;
        if (__builtin_mul_overflow(span, s, &span)) over = true;
    }
    if (!over && __builtin_mul_overflow(span, (uint64_t)facet_elsize(dtype), &bytes)) over = true;
    if (over || bytes > FACET_MAX_TENSOR_BYTES) {
        char amount[64];
        if (over) snprintf(amount, sizeof amount, "about %.3g bytes", approx);
        else snprintf(amount, sizeof amount, "%llu bytes", (unsigned long long)bytes);
        if (empty)
            return facet_fail(FACET_STATUS_ERR_MEMORY,
                              "%s: %s is too large: empty, but its sizes span %s, more than the %llu (2^47) a tensor may address",
                              fn, shape_text(text, sizeof text, dtype, ndim, sizes), amount,
                              (unsigned long long)FACET_MAX_TENSOR_BYTES);
        return facet_fail(FACET_STATUS_ERR_MEMORY,
                          "%s: %s is too large: it needs %s, more than the %llu (2^47) a tensor may hold", fn,
                          shape_text(text, sizeof text, dtype, ndim, sizes), amount,
                          (unsigned long long)FACET_MAX_TENSOR_BYTES);
    }
    if (numel) *numel = empty ? 0 : (int64_t)span;
    return 0;
}

/* ---- overlap ------------------------------------------------------------------ */

/* byte range [*lo, *hi) from the first to past the last element; false when empty */
static bool byte_range(const facet_tensor *t, uint64_t *lo, uint64_t *hi)
{
    int64_t last = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (t->sizes[d] == 0) return false;
        last += (t->sizes[d] - 1) * t->strides[d];
    }
    size_t es = facet_elsize(t->dtype);
    *lo = (uint64_t)t->offset * es;
    *hi = ((uint64_t)last + 1) * es;
    return true;
}

bool facet_overlap(const facet_tensor *a, const facet_tensor *b)
{
    if (!a || !b || !a->storage || a->storage != b->storage) return false;
    uint64_t alo, ahi, blo, bhi;
    if (!byte_range(a, &alo, &ahi) || !byte_range(b, &blo, &bhi)) return false;
    return alo < bhi && blo < ahi;
}

bool facet_same_view(const facet_tensor *a, const facet_tensor *b)
{
    if (a->storage != b->storage || a->offset != b->offset || a->dtype != b->dtype || !facet_same_shape(a, b))
        return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->sizes[d] > 1 && a->strides[d] != b->strides[d]) return false;
    return true;
}

int facet_unalias(const char *fn, const facet_tensor *out, const facet_tensor *in, bool same_view_ok,
                  facet_tensor **tmp, const facet_tensor **use)
{
    *tmp = NULL;
    *use = in;
    if (!facet_overlap(out, in) || (same_view_ok && facet_same_view(out, in))) return 0;
    facet_tensor *c = NULL;
    int rc = facet_tensor_init(&c, in->dtype, in->device, in->ndim, in->sizes);
    if (!rc) rc = facet_tensor_copy(c, in);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", facet_last_error());
        facet_tensor_free(c);
        return facet_fail(rc, "%s: copying an input that overlaps the output failed (%s)", fn, why);
    }
    *tmp = c;
    *use = c;
    return 0;
}

/* ---- conversions into integer dtypes ------------------------------------------ */

bool facet_value_fits(double v, int dtype)
{
    /* truncation toward zero, then the range; NaN fails every comparison */
    switch (dtype) {
    case FACET_DTYPE_INT32: return v > -2147483649.0 && v < 2147483648.0;
    case FACET_DTYPE_INT64: return v >= -9223372036854775808.0 && v < 9223372036854775808.0;
    case FACET_DTYPE_UINT8: return v > -1.0 && v < 256.0;
    default: return true;
    }
}

static const char *range_text(int dtype)
{
    switch (dtype) {
    case FACET_DTYPE_INT32: return "[-2147483648, 2147483647]";
    case FACET_DTYPE_INT64: return "[-9223372036854775808, 9223372036854775807]";
    case FACET_DTYPE_UINT8: return "[0, 255]";
    default: return "";
    }
}

/* the shortest text that reads back as v (as a float when it came from a
 * float32 tensor, so 2.7f prints as 2.7) */
static const char *value_text(char *buf, size_t cap, double v, bool is_float)
{
    if (isnan(v)) {     /* printf may print the sign bit of a NaN */
        snprintf(buf, cap, "nan");
        return buf;
    }
    for (int p = 6; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (!isfinite(v)) break;
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v) break;
    }
    return buf;
}

/* "fn: what VALUE where is out of range for DTYPE ..." */
static int value_error(const char *fn, const char *what, const char *where, double v, bool is_float, int dtype)
{
    char text[40];
    value_text(text, sizeof text, v, is_float);
    if (!isfinite(v))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s%s cannot be stored in %s (not a finite number)", fn, what,
                          text, where, facet_dtype_name(dtype));
    return facet_fail(FACET_STATUS_ERR_ARG,
                      "%s: %s %s%s is out of range for %s: truncated toward zero it must lie in %s", fn, what, text,
                      where, facet_dtype_name(dtype), range_text(dtype));
}

int facet_check_value(const char *fn, const char *what, double v, int dtype)
{
    return facet_value_fits(v, dtype) ? 0 : value_error(fn, what, "", v, false, dtype);
}

/* every value of dtype `from` fits dtype `to` */
static bool always_fits(int from, int to)
{
    switch (to) {
    case FACET_DTYPE_INT64: return from == to || from == FACET_DTYPE_INT32 || from == FACET_DTYPE_UINT8;
    case FACET_DTYPE_INT32: return from == to || from == FACET_DTYPE_UINT8;
    case FACET_DTYPE_UINT8: return from == to;
    default: return true;       /* float32: overflow gives inf, never UB */
    }
}

/* CPU tensor t: the first value (in row-major order) that does not fit,
 * serially so the element named is always the same one. `desc` names the
 * source in the message (a CUDA source is scanned through a host copy). */
static int scan(const char *fn, const facet_tensor *t, int dtype, const char *desc)
{
    struct facet_nd nd;
    facet_nd_init(&nd, 1, t);
    facet_nd_set(&nd, 0, t);
    facet_nd_collapse(&nd);
    for (int d = 0; d < nd.ndim; d++)
        if (nd.sizes[d] == 0) return 0;
    const void *p = facet_ptr(t);
    int64_t idx[FACET_MAX_DIMS] = {0}, off = 0, count = 0;
    for (;;) {
        double v = facet_load(p, t->dtype, off);
        if (!facet_value_fits(v, dtype)) {
            char where[256];
            snprintf(where, sizeof where, " (element %lld of src %s, counting from 1)", (long long)count + 1, desc);
            return value_error(fn, "value", where, v, t->dtype == FACET_DTYPE_FLOAT32, dtype);
        }
        count++;
        int d = nd.ndim - 1;
        for (; d >= 0; d--) {
            off += nd.strides[0][d];
            if (++idx[d] < nd.sizes[d]) break;
            off -= nd.strides[0][d] * nd.sizes[d];
            idx[d] = 0;
        }
        if (d < 0) return 0;
    }
}

int facet_check_convert(const char *fn, const facet_tensor *dst, const facet_tensor *src)
{
    if (always_fits(src->dtype, dst->dtype) || facet_numel(src) == 0) return 0;
    char desc[160];
    snprintf(desc, sizeof desc, "%s", facet_desc(src));
    if (src->device == FACET_DEVICE_CPU) return scan(fn, src, dst->dtype, desc);
    /* a CUDA source is read back first (conversions into integers are rare) */
    facet_tensor *host = NULL;
    int rc = facet_tensor_init(&host, src->dtype, FACET_DEVICE_CPU, src->ndim, src->sizes);
    if (!rc) rc = facet_tensor_copy(host, src);
    if (!rc) rc = scan(fn, host, dst->dtype, desc);
    facet_tensor_free(host);
    return rc;
}
