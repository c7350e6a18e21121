/*
 * test_cublas_load.c - cuBLAS loaded on first use (core/cuda/cublas_load.cu),
 * linked with that file alone. Built twice for CUDA builds (make): against
 * the toolkit's libcublas (test_cublas_load) and against a library name that
 * does not exist (test_cublas_load_missing, -DFACET_EXPECT_MISSING). The first
 * checks that libcublas is not in the process before the first call and is
 * after it, and that the calls reach the real library: cublasCreate gives
 * cuBLAS's own answer (a handle where a GPU is, CUBLAS_STATUS_NOT_INITIALIZED
 * without a driver) and cublasGetStatusString the library's own strings. The
 * second checks that every call then fails with NOT_INITIALIZED and that the
 * status string is the loader's reason, naming the library.
 * `--counts FILE` writes "passed failed" for the spec summary, as
 * test_cache_alloc does.
 */
#include <cublas_api.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "test_counts.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#define REAL_LIBRARY "libcublas.so." STR(CUBLAS_VER_MAJOR)

static int passed, failed;

static void check(int ok, const char *what)
{
    if (ok) {
        passed++;
        printf("ok %s\n", what);
    } else {
        failed++;
        printf("FAILED %s\n", what);
    }
}

/* whether the real libcublas is mapped into this process (RTLD_NOLOAD opens nothing) */
static int cublas_in_process(void)
{
    void *h = dlopen(REAL_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    if (h) dlclose(h);
    return h != NULL;
}

int main(int argc, char **argv)
{
    const char *counts = test_counts_path(argc, argv);
    check(!cublas_in_process(), "libcublas is not loaded before the first cuBLAS call");
    cublasHandle_t h = NULL;
    cublasStatus_t s = cublasCreate_v2(&h);
#ifdef FACET_EXPECT_MISSING
    check(s == CUBLAS_STATUS_NOT_INITIALIZED, "a missing library: cublasCreate is CUBLAS_STATUS_NOT_INITIALIZED");
    const char *why = cublasGetStatusString(s);
    printf("# the message: %s\n", why);
    check(strstr(why, "cuBLAS could not be loaded") && strstr(why, "libfacet_no_such_cublas.so.0"),
          "a missing library: the status string is the loader's reason, naming the library");
    float one = 1.0f, c = 0.0f;
    check(cublasSgemmStridedBatched(NULL, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, &one, 1, 1, &one, 1, 1, &one, &c,
                                    1, 1, 1) == CUBLAS_STATUS_NOT_INITIALIZED && c == 0.0f,
          "a missing library: a GEMM is CUBLAS_STATUS_NOT_INITIALIZED and writes nothing");
    check(cublasSetMathMode(NULL, CUBLAS_DEFAULT_MATH) == CUBLAS_STATUS_NOT_INITIALIZED &&
              cublasDestroy_v2(NULL) == CUBLAS_STATUS_NOT_INITIALIZED,
          "a missing library: the other calls are CUBLAS_STATUS_NOT_INITIALIZED");
    check(!cublas_in_process(), "a missing library: the toolkit's libcublas was not loaded instead");
#else
    printf("# cublasCreate: %d (%s)\n", (int)s, cublasGetStatusString(s));
    check(s == CUBLAS_STATUS_SUCCESS || s == CUBLAS_STATUS_NOT_INITIALIZED,
          "cublasCreate answers as cuBLAS does (a handle, or NOT_INITIALIZED without a GPU)");
    check(cublas_in_process(), "libcublas is loaded after the first call");
    /* the reference: the loaded library's own function, looked up here */
    void *lib = dlopen(REAL_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    const char *(*real_string)(cublasStatus_t) =
        lib ? (const char *(*)(cublasStatus_t))dlsym(lib, "cublasGetStatusString") : NULL;
    int same = real_string != NULL;
    const cublasStatus_t all[] = { CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_NOT_INITIALIZED, CUBLAS_STATUS_ALLOC_FAILED,
                                   CUBLAS_STATUS_INVALID_VALUE, CUBLAS_STATUS_ARCH_MISMATCH,
                                   CUBLAS_STATUS_EXECUTION_FAILED, CUBLAS_STATUS_NOT_SUPPORTED };
    for (size_t i = 0; same && i < sizeof all / sizeof all[0]; i++)
        same = !strcmp(cublasGetStatusString(all[i]), real_string(all[i]));
    check(same, "cublasGetStatusString gives the library's strings");
    if (lib) dlclose(lib);
    if (s == CUBLAS_STATUS_SUCCESS) {
        check(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH) == CUBLAS_STATUS_SUCCESS, "cublasSetMathMode on the handle");
        check(cublasDestroy_v2(h) == CUBLAS_STATUS_SUCCESS, "cublasDestroy on the handle");
    }
#endif
    printf("test_cublas_load: %d passed, %d failed\n", passed, failed);
    test_counts_write(counts, passed, failed);
    return failed ? 1 : 0;
}
