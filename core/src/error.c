/*
 * error.c - the thread-local last-error message and the helpers every API
 * function uses to check its arguments and describe tensors in messages.
 */
#include "internal.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];
static _Thread_local char desc_bufs[8][160];
static _Thread_local unsigned desc_next;

const char *facet_version(void) { return "0.1.0"; }

const char *facet_last_error(void) { return last_error; }

void facet_clear_error(void) { last_error[0] = '\0'; }

int facet_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *facet_dtype_name(int dtype)
{
    static const char *names[] = { "float32", "int32", "int64", "uint8", "float16", "bfloat16" };
    _Static_assert(sizeof names / sizeof names[0] == FACET_DTYPE_COUNT, "a name for every dtype");
    return (dtype >= 0 && dtype < FACET_DTYPE_COUNT) ? names[dtype] : "invalid-dtype";
}

const char *facet_desc(const facet_tensor *t)
{
    char *buf = desc_bufs[desc_next++ % 8];
    if (!t) {
        snprintf(buf, 160, "[null]");
        return buf;
    }
    int n = snprintf(buf, 160, "[");
    for (int d = 0; d < t->ndim && n < 120; d++)
        n += snprintf(buf + n, 160 - n, d ? "x%lld" : "%lld", (long long)t->sizes[d]);
    if (t->ndim == 0) n += snprintf(buf + n, 160 - n, "scalar");
    snprintf(buf + n, 160 - n, " %s %s]", facet_dtype_name(t->dtype),
             t->device == FACET_DEVICE_CUDA ? "cuda" : "cpu");
    return buf;
}

int facet_check_tensor(const char *fn, const char *name, const facet_tensor *t)
{
    if (!t) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s is NULL", fn, name);
    if (!t->storage) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s was freed", fn, name);
    return 0;
}

int facet_check_dtype(const char *fn, const char *name, const facet_tensor *t, int dtype)
{
    int rc = facet_check_tensor(fn, name, t);
    if (rc) return rc;
    if (t->dtype != dtype)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be %s, got %s", fn, name,
                          facet_dtype_name(dtype), facet_desc(t));
    return 0;
}

int facet_check_same_device(const char *fn, const facet_tensor *a, const facet_tensor *b)
{
    if (a->device != b->device)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: tensors on different devices: %s and %s", fn,
                          facet_desc(a), facet_desc(b));
    return 0;
}

int facet_check_same_contiguous(const char *fn, const char *an, const facet_tensor *a, const char *bn,
                                 const facet_tensor *b)
{
    int rc = facet_check_same_device(fn, a, b);
    if (rc) return rc;
    if (!facet_same_shape(a, b) || !facet_contiguous(a) || !facet_contiguous(b))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s and %s %s must be contiguous with one shape", fn, an,
                          facet_desc(a), bn, facet_desc(b));
    return 0;
}

int facet_check_float_pair(const char *fn, const char *an, const facet_tensor *a, const char *bn,
                           const facet_tensor *b)
{
    int rc = facet_check_dtype(fn, an, a, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, bn, b, FACET_DTYPE_FLOAT32);
    return rc ? rc : facet_check_same_contiguous(fn, an, a, bn, b);
}

int facet_check_list_param(const char *fn, int rc, const facet_tensor *p, const facet_tensor *p0, double weight_decay,
                           int k)
{
    if (!rc && p->device != p0->device)
        rc = facet_fail(FACET_STATUS_ERR_ARG, "%s: param %s is not on the device of params[0] %s", fn, facet_desc(p),
                        facet_desc(p0));
    if (!rc && !(weight_decay >= 0))
        rc = facet_fail(FACET_STATUS_ERR_ARG, "%s: want weight_decay >= 0, got %g", fn, weight_decay);
    if (!rc) return 0;
    char why[1024];
    snprintf(why, sizeof why, "%s", facet_last_error());   /* facet_fail rewrites that buffer */
    return facet_fail(rc, "%s (parameter %d)", why, k);
}
