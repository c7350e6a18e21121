/*
 * cublas_v2.h (emulator) - the part of cuBLAS facet calls, for the CPU
 * build of core/cuda (make FACET_CUDA=emu, docs/cuda-emulator.md). The
 * names, numbers and signatures are those of CUDA's cublas_api.h and
 * library_types.h. cublas.cpp checks the arguments as cuBLAS documents them
 * (sizes, leading dimensions, the type combinations cuBLAS supports, NULL
 * scalars), and what cuBLAS leaves undefined (an operand outside device
 * memory or misaligned, C overlapping A, B or itself), and computes in
 * float32 through the core's BLAS, with TF32 inputs rounded as the tensor
 * cores round them (FACET_EMU_GEMM=scramble: in a GPU kernel's k order
 * instead). On a lost context a GEMM returns CUBLAS_STATUS_EXECUTION_FAILED.
 */
#ifndef FACET_EMU_CUBLAS_V2_H
#define FACET_EMU_CUBLAS_V2_H

#include "cuda_runtime.h"

struct cublasContext;
typedef struct cublasContext *cublasHandle_t;

/* the library's numbers */
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;

typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;

typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;

/* only the default algorithm: the numbered and *_TENSOR_OP ones are
 * deprecated (CUDA 11 on, they run as the default) */
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

/* The handle's math mode. The default lets single-precision routines
 * (cublasSgemm*) use no TF32, and lets a GEMM whose C is narrower than its
 * compute type (16-bit C, CUBLAS_COMPUTE_32F) reduce split-K partial sums in
 * C's type; the flag forbids that. */
typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TF32_TENSOR_OP_MATH = 3,
    CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16
} cublasMath_t;

cublasStatus_t cublasCreate(cublasHandle_t *handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode);

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *a, cudaDataType_t atype, int lda, const void *b,
                            cudaDataType_t btype, int ldb, const void *beta, void *c, cudaDataType_t ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo);

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *a, cudaDataType_t atype, int lda,
                                          long long stride_a, const void *b, cudaDataType_t btype, int ldb,
                                          long long stride_b, const void *beta, void *c, cudaDataType_t ctype,
                                          int ldc, long long stride_c, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo);

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *a, int lda, long long stride_a,
                                         const float *b, int ldb, long long stride_b, const float *beta, float *c,
                                         int ldc, long long stride_c, int batch);

#endif
