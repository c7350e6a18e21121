/*
 * threads.c - the thread count of facet's OpenMP loops: FACET_THREADS, else
 * the number of cores, until facet_threads_set (runtime.c) changes it. It
 * depends on nothing else in the core, so blas.c and every kernel can ask.
 *
 * "Cores" are the ones this process may run on (omp_get_num_procs counts the
 * affinity mask: taskset, cpusets). The count does not follow the machine's
 * load: results depend on the thread count (docs/nn.md, determinism), and a
 * load average lags by a minute and counts facet's own threads, so a count
 * read from it would change a run's numbers with whatever else ran at its
 * start. On a shared machine pick FACET_THREADS yourself; docs/threads.md has
 * the measurements. The OpenMP wait policy is set before the library loads
 * (lua/facet/core.lua).
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

void facet_threads_store(int n) { __atomic_store_n(&threads_now, n, __ATOMIC_RELAXED); }
