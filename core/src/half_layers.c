/*
 * half_layers.c - the shared checks and the CPU float32 scratch of the layer
 * kernels' 16-bit operands (half_layers.h).
 */
#include "half_layers.h"
#include "half_math.h"
#include <pthread.h>
#include <stdlib.h>

int facet_check_act_dtype(const char *fn, const char *name, const facet_tensor *t)
{
    int rc = facet_check_tensor(fn, name, t);
    if (rc) return rc;
    if (t->dtype != FACET_DTYPE_FLOAT32 && t->dtype != FACET_DTYPE_FLOAT16 && t->dtype != FACET_DTYPE_BFLOAT16)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be float32, float16 or bfloat16, got %s", fn, name,
                          facet_desc(t));
    return 0;
}

int facet_check_dtype_of(const char *fn, const char *name, const facet_tensor *t, const char *refname,
                         const facet_tensor *ref)
{
    int rc = facet_check_tensor(fn, name, t);
    if (rc) return rc;
    if (t->dtype != ref->dtype)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be %s like %s %s, got %s", fn, name,
                          facet_dtype_name(ref->dtype), refname, facet_desc(ref), facet_desc(t));
    return 0;
}

int facet_check_act_pair(const char *fn, const char *an, const facet_tensor *a, const char *bn, const facet_tensor *b)
{
    int rc = facet_check_act_dtype(fn, bn, b);
    if (!rc) rc = facet_check_dtype_of(fn, an, a, bn, b);
    return rc ? rc : facet_check_same_contiguous(fn, an, a, bn, b);
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static float *buf[FACET_HALF_SLOTS];
static int64_t cap[FACET_HALF_SLOTS];

void facet_half_begin(int dtype)
{
    if (dtype != FACET_DTYPE_FLOAT32) pthread_mutex_lock(&lock);
}

void facet_half_end(int dtype)
{
    if (dtype != FACET_DTYPE_FLOAT32) pthread_mutex_unlock(&lock);
}

static float *slot_of(const char *fn, int slot, int64_t n, int *ok)
{
    if (n < 1) n = 1;
    if (n > cap[slot]) {
        float *p = malloc((size_t)n * sizeof(float));
        if (!p) {
            *ok = 0;
            facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory for %lld float32 values of 16-bit scratch", fn,
                       (long long)n);
            return NULL;
        }
        free(buf[slot]);
        buf[slot] = p;
        cap[slot] = n;
    }
    return buf[slot];
}

/* the unit of a parallel conversion (copy.c's vector paths run inside each) */
enum { CONVERT_CHUNK = 16384 };

const float *facet_half_in(const char *fn, const facet_tensor *t, int slot, int *ok)
{
    if (!t) return NULL;
    if (t->dtype == FACET_DTYPE_FLOAT32) return facet_ptr(t);
    int64_t n = facet_numel(t);
    float *d = slot_of(fn, slot, n, ok);
    if (!d) return NULL;
    const uint16_t *s = facet_ptr(t);
    const int64_t chunks = (n + CONVERT_CHUNK - 1) / CONVERT_CHUNK;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t lo = c * CONVERT_CHUNK;
        facet_half_widen(d + lo, s + lo, n - lo < CONVERT_CHUNK ? n - lo : CONVERT_CHUNK, t->dtype);
    }
    return d;
}

float *facet_half_out(const char *fn, const facet_tensor *t, int slot, int *ok)
{
    if (!t) return NULL;
    if (t->dtype == FACET_DTYPE_FLOAT32) return facet_ptr(t);
    return slot_of(fn, slot, facet_numel(t), ok);
}

void facet_half_store(facet_tensor *t, const float *src)
{
    if (!t || t->dtype == FACET_DTYPE_FLOAT32) return;
    int64_t n = facet_numel(t);
    uint16_t *d = facet_ptr(t);
    const int64_t chunks = (n + CONVERT_CHUNK - 1) / CONVERT_CHUNK;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t lo = c * CONVERT_CHUNK;
        facet_half_narrow(d + lo, src + lo, n - lo < CONVERT_CHUNK ? n - lo : CONVERT_CHUNK, t->dtype);
    }
}

int facet_half_finish(int dtype, facet_tensor *t, const float *buf, int ok, int rc)
{
    if (ok && !rc) facet_half_store(t, buf);
    facet_half_end(dtype);
    return ok ? rc : FACET_STATUS_ERR_MEMORY;
}
