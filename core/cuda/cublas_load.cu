/*
 * cublas_load.cu - cuBLAS loaded on first use, not with facet_core.so.
 * libcublas and its libcublasLt map about 750 MB and take about 0.4 s to
 * load; linked, every process of a CUDA build paid that at start (the CLI,
 * the REPL, a run on the CPU, each data-loader subprocess), and a machine
 * without the CUDA libraries could not load facet at all. The few cuBLAS
 * functions the backend calls are defined here under cuBLAS's own names
 * (hidden: nothing outside facet_core.so sees them), each forwarding to the
 * function looked up in libcublas.so.<major> of the toolkit facet was built
 * with, opened once (dlopen, found through the library's run path like a
 * linked one). When it cannot be opened every call returns
 * CUBLAS_STATUS_NOT_INITIALIZED, and cublasGetStatusString gives the loader's
 * reason, so the GEMM that needed it fails with that message. The emulator
 * (core/emu/cublas.cpp) defines the same names for FACET_CUDA=emu builds,
 * which leave this file out. core/tests/test_cublas_load.c tests it.
 */
#include <cublas_v2.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#define FACET_STR2(x) #x
#define FACET_STR(x) FACET_STR2(x)
#ifndef FACET_CUBLAS_LIBRARY
#define FACET_CUBLAS_LIBRARY "libcublas.so." FACET_STR(CUBLAS_VER_MAJOR)
#endif

typedef cublasStatus_t (*create_fn)(cublasHandle_t *);
typedef cublasStatus_t (*destroy_fn)(cublasHandle_t);
typedef cublasStatus_t (*set_math_mode_fn)(cublasHandle_t, cublasMath_t);
typedef const char *(*status_string_fn)(cublasStatus_t);
typedef cublasStatus_t (*sgemm_strided_batched_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                                   const float *, const float *, int, long long int, const float *,
                                                   int, long long int, const float *, float *, int, long long int,
                                                   int);
typedef cublasStatus_t (*gemm_strided_batched_ex_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                                                     int, const void *, const void *, cudaDataType, int,
                                                     long long int, const void *, cudaDataType, int, long long int,
                                                     const void *, void *, cudaDataType, int, long long int, int,
                                                     cublasComputeType_t, cublasGemmAlgo_t);

static struct {
    create_fn create;
    destroy_fn destroy;
    set_math_mode_fn set_math_mode;
    status_string_fn status_string;
    sgemm_strided_batched_fn sgemm_strided_batched;
    gemm_strided_batched_ex_fn gemm_strided_batched_ex;
} api;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static bool loaded = false;
static char load_error[600];

static void *symbol(void *lib, const char *name, bool *ok)
{
    void *p = dlsym(lib, name);
    if (!p && *ok) {
        snprintf(load_error, sizeof load_error, "cuBLAS could not be loaded: %s has no %s", FACET_CUBLAS_LIBRARY,
                 name);
        *ok = false;
    }
    return p;
}

static void load(void)
{
    void *lib = dlopen(FACET_CUBLAS_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(load_error, sizeof load_error, "cuBLAS could not be loaded: %s", why ? why : FACET_CUBLAS_LIBRARY);
        return;
    }
    bool ok = true;
    api.create = (create_fn)symbol(lib, "cublasCreate_v2", &ok);
    api.destroy = (destroy_fn)symbol(lib, "cublasDestroy_v2", &ok);
    api.set_math_mode = (set_math_mode_fn)symbol(lib, "cublasSetMathMode", &ok);
    api.status_string = (status_string_fn)symbol(lib, "cublasGetStatusString", &ok);
    api.sgemm_strided_batched = (sgemm_strided_batched_fn)symbol(lib, "cublasSgemmStridedBatched", &ok);
    api.gemm_strided_batched_ex = (gemm_strided_batched_ex_fn)symbol(lib, "cublasGemmStridedBatchedEx", &ok);
    if (!ok) {
        dlclose(lib);
        return;
    }
    loaded = true;  /* published by pthread_once to every caller */
}

static bool ready(void)
{
    pthread_once(&load_once, load);
    return loaded;
}

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t *handle)
{
    if (!ready()) return CUBLAS_STATUS_NOT_INITIALIZED;
    return api.create(handle);
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle)
{
    if (!ready()) return CUBLAS_STATUS_NOT_INITIALIZED;
    return api.destroy(handle);
}

cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    if (!ready()) return CUBLAS_STATUS_NOT_INITIALIZED;
    return api.set_math_mode(handle, mode);
}

/* the loader's reason when the library is missing: the message of the call that needed it */
const char *CUBLASWINAPI cublasGetStatusString(cublasStatus_t status)
{
    if (!ready()) return load_error;
    return api.status_string(status);
}

cublasStatus_t CUBLASWINAPI cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                      cublasOperation_t transb, int m, int n, int k,
                                                      const float *alpha, const float *A, int lda,
                                                      long long int strideA, const float *B, int ldb,
                                                      long long int strideB, const float *beta, float *C, int ldc,
                                                      long long int strideC, int batchCount)
{
    if (!ready()) return CUBLAS_STATUS_NOT_INITIALIZED;
    return api.sgemm_strided_batched(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta,
                                     C, ldc, strideC, batchCount);
}

cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                                       cublasOperation_t transb, int m, int n, int k,
                                                       const void *alpha, const void *A, cudaDataType Atype, int lda,
                                                       long long int strideA, const void *B, cudaDataType Btype,
                                                       int ldb, long long int strideB, const void *beta, void *C,
                                                       cudaDataType Ctype, int ldc, long long int strideC,
                                                       int batchCount, cublasComputeType_t computeType,
                                                       cublasGemmAlgo_t algo)
{
    if (!ready()) return CUBLAS_STATUS_NOT_INITIALIZED;
    return api.gemm_strided_batched_ex(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb,
                                       strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType, algo);
}
