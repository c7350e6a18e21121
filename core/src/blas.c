/*
 * blas.c - OpenBLAS, loaded with dlopen on first use. Loading late is what
 * lets facet pick OPENBLAS_CORETYPE from cpuid before OpenBLAS initialises:
 * Debian's OpenBLAS 0.3.21 does not recognise recent AVX-512 CPUs and falls
 * back to slow generic kernels. A value the user set is left alone.
 */
#define _GNU_SOURCE
#include "internal.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/* CBLAS as OpenBLAS exports it (32-bit blasint in Debian's build). */
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int);
typedef char *(*corename_fn)(void);
typedef int (*parallel_fn)(void);
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static sgemm_fn blas_sgemm;
static set_threads_fn blas_set_threads;
static corename_fn blas_corename;
static int blas_openmp;          /* OpenBLAS's OpenMP build: single-threaded inside a parallel region */
static char blas_error[768];
static char blas_path[512];

/* The OpenBLAS core for this CPU, or NULL to let OpenBLAS decide. */
static const char *cpu_coretype(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return NULL;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return NULL;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    int ymm_os = (xcr0_lo & 0x6) == 0x6, zmm_os = (xcr0_lo & 0xe6) == 0xe6;
    if (!ymm_os) return NULL;
    unsigned b7 = 0;
    if (__get_cpuid_count(7, 0, &a, &b7, &c, &d)) {
        int avx2 = (b7 >> 5) & 1, avx512f = (b7 >> 16) & 1, avx512dq = (b7 >> 17) & 1;
        int avx512bw = (b7 >> 30) & 1, avx512vl = (b7 >> 31) & 1;
        if (zmm_os && avx512f && avx512dq && avx512bw && avx512vl) return "SkylakeX";
        if (avx2 && fma) return "Haswell";
    }
    return "Sandybridge";
#else
    return NULL;
#endif
}

static void blas_load(void)
{
    const char *coretype = cpu_coretype();
    if (coretype) setenv("OPENBLAS_CORETYPE", coretype, 0);
    const char *user = getenv("FACET_BLAS_LIB");
    /* OpenBLAS built for OpenMP first: it shares libgomp's threads with facet's
     * own loops, where the pthreads build leaves its threads spinning after
     * each GEMM and they fight facet's threads for the cores */
    const char *candidates[] = { user,
#if defined(__x86_64__)
                                 "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0",
#elif defined(__aarch64__)
                                 "/usr/lib/aarch64-linux-gnu/openblas-openmp/libopenblas.so.0",
#endif
                                 "libopenblas.so.0", "libopenblas.so", "libblas.so.3" };
    char tried[1024] = "";
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
        if (!candidates[i]) continue;
        void *h = dlopen(candidates[i], RTLD_NOW | RTLD_GLOBAL);
        size_t used = strlen(tried);
        snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", candidates[i]);
        if (!h) continue;
        blas_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
        if (!blas_sgemm) continue;
        snprintf(blas_path, sizeof blas_path, "%s", candidates[i]);
        blas_set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
        blas_corename = (corename_fn)dlsym(h, "openblas_get_corename");
        parallel_fn parallel = (parallel_fn)dlsym(h, "openblas_get_parallel");
        blas_openmp = parallel && parallel() == 2;    /* 0 sequential, 1 pthreads, 2 OpenMP */
        if (blas_set_threads) blas_set_threads(facet_threads());
        return;
    }
    snprintf(blas_error, sizeof blas_error,
             "no BLAS with cblas_sgemm could be loaded (tried %s); install libopenblas0 "
             "or set FACET_BLAS_LIB", tried);
}

static int blas_ready(const char *fn)
{
    pthread_once(&blas_once, blas_load);
    if (!blas_sgemm) return facet_fail(FACET_STATUS_ERR_IO, "%s: %s", fn, blas_error);
    return 0;
}

int facet_blas_nests(void)
{
    return blas_ready("facet_blas_nests") == 0 && blas_openmp;
}

void facet_blas_set_threads(int n)
{
    /* only once loaded: loading here would run before the user's choices */
    if (blas_sgemm && blas_set_threads) blas_set_threads(n);
}

int facet_blas_info(char *name, size_t name_size)
{
    int rc = blas_ready("facet_blas_info");
    if (rc) return rc;
    if (!name || !name_size) return facet_fail(FACET_STATUS_ERR_ARG, "facet_blas_info: name buffer is NULL");
    snprintf(name, name_size, "%s", blas_corename ? blas_corename() : "unknown (not OpenBLAS)");
    return 0;
}

int facet_blas_library(char *path, size_t path_size)
{
    int rc = blas_ready("facet_blas_library");
    if (rc) return rc;
    if (!path || !path_size) return facet_fail(FACET_STATUS_ERR_ARG, "facet_blas_library: path buffer is NULL");
    snprintf(path, path_size, "%s", blas_path);
    return 0;
}

int facet_blas_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                     float *c, int64_t ldc)
{
    int rc = blas_ready("facet_tensor_matmul");
    if (rc) return rc;
    const int64_t lim = 2147483647;
    if (m > lim || n > lim || k > lim || lda > lim || ldb > lim || ldc > lim)
        return facet_fail(FACET_STATUS_ERR_ARG, "facet_tensor_matmul: a dimension exceeds the 32-bit BLAS range");
    blas_sgemm(CBLAS_ROW_MAJOR, trans_a ? CBLAS_TRANS : CBLAS_NO_TRANS, trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS,
               (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
    return 0;
}
