/*
 * cuda_common.cuh - what the CUDA backend's files share: the C core's
 * declarations under C linkage, the per-element formulas, error checks that
 * turn a cudaError_t or cublasStatus_t into facet's error (FACET_STATUS_ERR_DEVICE
 * with a message naming the entry point), and the launch shape of the flat
 * kernels (grid-stride loops, 256 threads a block, 64-bit indices). Every
 * kernel runs on the legacy default stream, so work is ordered without
 * explicit events, and facet_cuda_sync() is the only host-side wait.
 */
#ifndef FACET_CUDA_COMMON_CUH
#define FACET_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <stdint.h>

/* internal.h has no extern "C" guard of its own; without this, facet_fail
 * would be looked up under a C++ mangled name and fail to link. */
extern "C" {
#include "internal.h"
}
#include "elementwise_math.h"

enum {
    FACET_CUDA_THREADS = 256,
    /* enough threads to fill any current GPU; bigger work loops in-thread */
    FACET_CUDA_MAX_BLOCKS = 65536
};

/* Grid-stride loop over [0, n) with 64-bit indices. */
#define FACET_CUDA_FOR(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

/* Blocks for a grid-stride launch over n items (n > 0) of FACET_CUDA_THREADS. */
static inline unsigned grid_blocks(int64_t n)
{
    int64_t b = (n + FACET_CUDA_THREADS - 1) / FACET_CUDA_THREADS;
    if (b > FACET_CUDA_MAX_BLOCKS) b = FACET_CUDA_MAX_BLOCKS;
    if (b < 1) b = 1;
    return (unsigned)b;
}

/* Blocks for a one-block-per-item launch (grid-stride over items). */
static inline unsigned item_blocks(int64_t items)
{
    if (items > FACET_CUDA_MAX_BLOCKS) return FACET_CUDA_MAX_BLOCKS;
    return items < 1 ? 1u : (unsigned)items;
}

static inline int check_cuda(cudaError_t e, const char *fn)
{
    if (e == cudaSuccess) return FACET_STATUS_OK;
    /* a failed runtime call also becomes the "last error"; drop it so the
     * next launch check does not report it a second time */
    (void)cudaGetLastError();
    return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: %s", fn, cudaGetErrorString(e));
}

static inline int check_cublas(cublasStatus_t s, const char *fn)
{
    if (s == CUBLAS_STATUS_SUCCESS) return FACET_STATUS_OK;
    return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: %s", fn, cublasGetStatusString(s));
}

/* After every <<<>>>: a bad launch configuration is reported here; faults
 * inside the kernel surface at the next synchronising call. */
static inline int check_launch(const char *fn)
{
    return check_cuda(cudaGetLastError(), fn);
}

#endif
