/*
 * runtime.c - thread count (OpenMP loops and OpenBLAS) and the CUDA
 * queries that are safe to call with or without a GPU.
 */
#include "internal.h"
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <unistd.h>

static int threads_now;   /* 0 until first asked */

static int default_threads(void)
{
    const char *env = getenv("FACET_THREADS");
    if (env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*env && !*end && v >= 1 && v <= 4096) return (int)v;
    }
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

int facet_threads(void)
{
    int n = __atomic_load_n(&threads_now, __ATOMIC_RELAXED);
    if (n == 0) {
        n = default_threads();
        __atomic_store_n(&threads_now, n, __ATOMIC_RELAXED);
    }
    return n;
}

int facet_set_threads(int n)
{
    if (n < 1 || n > 4096) return facet_fail(FACET_ERR_ARG, "facet_set_threads: %d threads (want 1..4096)", n);
    __atomic_store_n(&threads_now, n, __ATOMIC_RELAXED);
    facet_blas_set_threads(n);
    return 0;
}

int facet_get_threads(int *n)
{
    if (!n) return facet_fail(FACET_ERR_ARG, "facet_get_threads: n is NULL");
    *n = facet_threads();
    return 0;
}

int facet_cuda_device_count(int *count)
{
    if (!count) return facet_fail(FACET_ERR_ARG, "facet_cuda_device_count: count is NULL");
    *count = 0;
    return facet_cuda_count(count);
}

int facet_cuda_built(int *built)
{
    if (!built) return facet_fail(FACET_ERR_ARG, "facet_cuda_built: built is NULL");
    *built = facet_cuda_is_built();
    return 0;
}

int facet_cuda_synchronize(void) { return facet_cuda_sync(); }
