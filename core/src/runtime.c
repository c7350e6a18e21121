/*
 * runtime.c - the API of the thread count (kept in threads.c; OpenBLAS is told
 * here, so threads.c and blas.c need not know each other), the CUDA
 * queries that are safe to call with or without a GPU, and the TF32 switch
 * (kept here, read by blas.cu at each float32 GEMM).
 */
#include "internal.h"
#include <stdlib.h>

int facet_threads_set(int n)
{
    if (n < 1 || n > 4096) return facet_fail(FACET_STATUS_ERR_ARG, "facet_threads_set: %d threads (want 1..4096)", n);
    facet_threads_store(n);
    facet_blas_set_threads(n);
    return 0;
}

int facet_threads_get(int *n)
{
    if (!n) return facet_fail(FACET_STATUS_ERR_ARG, "facet_threads_get: n is NULL");
    *n = facet_threads();
    return 0;
}

/* Set once CUDA has seen a GPU in this process: the driver has then read
 * CUDA_VISIBLE_DEVICES, and changing it has no effect any more. */
static _Atomic int cuda_started;

void facet_cuda_note_started(void) { cuda_started = 1; }

int facet_cuda_started(int *started)
{
    if (!started) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_started: started is NULL");
    *started = cuda_started;
    return 0;
}

int facet_cuda_device_count(int *count)
{
    if (!count) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_device_count: count is NULL");
    *count = 0;
    int rc = facet_cuda_count(count);
    if (!rc && *count > 0) facet_cuda_note_started();
    return rc;
}

int facet_cuda_device_name(int device, char *name, size_t name_size, int64_t *memory)
{
    static const char *fn = "facet_cuda_device_name";
    if (!name || name_size == 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: name is NULL or name_size is 0", fn);
    if (!memory) return facet_fail(FACET_STATUS_ERR_ARG, "%s: memory is NULL", fn);
    name[0] = '\0';
    *memory = 0;
    int n = 0;
    int rc = facet_cuda_count(&n);
    if (rc) return rc;
    if (device < 0 || device >= n)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: device %d outside [0, %d) (%d CUDA device%s visible)", fn, device,
                          n, n, n == 1 ? "" : "s");
    return facet_cuda_name(device, name, name_size, memory);
}

int facet_cuda_built(int *built)
{
    if (!built) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_built: built is NULL");
    *built = facet_cuda_is_built();
    return 0;
}

int facet_cuda_synchronize(void) { return facet_cuda_sync(); }

static _Atomic int tf32_on;

int facet_cuda_tf32_set(int enabled)
{
    if (enabled != 0 && enabled != 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_tf32_set: enabled is %d (want 0 or 1)", enabled);
    tf32_on = enabled;
    return 0;
}

int facet_cuda_tf32_get(int *enabled)
{
    if (!enabled) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_tf32_get: enabled is NULL");
    *enabled = tf32_on;
    return 0;
}

int facet_tf32_enabled(void) { return tf32_on; }

struct facet_cuda_mark {
    void *event;
    int recorded;
};

int facet_cuda_mark_init(facet_cuda_mark **out)
{
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_mark_init: out is NULL");
    *out = NULL;
    facet_cuda_mark *m = calloc(1, sizeof *m);
    if (!m) return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_cuda_mark_init: out of host memory");
    int rc = facet_cuda_timing_event(&m->event);
    if (rc) {
        free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int facet_cuda_mark_record(facet_cuda_mark *mark)
{
    if (!mark) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_mark_record: mark is NULL");
    int rc = facet_cuda_event_record(&mark->event);
    if (!rc) mark->recorded = 1;
    return rc;
}

int facet_cuda_mark_elapsed(const facet_cuda_mark *start, const facet_cuda_mark *end, double *ms)
{
    static const char *fn = "facet_cuda_mark_elapsed";
    if (!ms) return facet_fail(FACET_STATUS_ERR_ARG, "%s: ms is NULL", fn);
    if (!start || !end) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s is NULL", fn, start ? "end" : "start");
    if (!start->recorded || !end->recorded)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s mark was never recorded", fn, start->recorded ? "the end" : "the start");
    float f = 0.0f;
    int rc = facet_cuda_event_elapsed(start->event, end->event, &f);
    if (!rc) *ms = f;
    return rc;
}

int facet_cuda_mark_free(facet_cuda_mark *mark)
{
    if (!mark) return 0;
    facet_cuda_event_free(mark->event);
    free(mark);
    return 0;
}

int facet_cuda_memory_stats(struct facet_cuda_memory_stats *stats)
{
    if (!stats) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_memory_stats: stats is NULL");
    return facet_cuda_alloc_stats(stats);
}

int facet_cuda_empty_cache(void) { return facet_cuda_alloc_empty(); }
