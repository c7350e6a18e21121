/*
 * alloc.cu - device memory for tensors: facet_cuda_malloc/facet_cuda_free
 * through the caching allocator of core/src/cache_alloc.c (its bookkeeping,
 * policy and tests live there) over cudaMalloc/cudaFree, and its statistics
 * and empty_cache for the API (runtime.c). One cache for the process and the
 * current device. Reusing a freed block at once is safe because every kernel,
 * cuBLAS call and copy of facet runs on the legacy default stream, in order
 * (docs/gpu-memory.md).
 */
#include "cuda_common.cuh"
#include "cache_alloc.h"

static int raw_alloc(void *ctx, void **p, size_t nbytes)
{
    (void)ctx;
    cudaError_t e = cudaMalloc(p, nbytes);
    if (e == cudaSuccess) return FACET_STATUS_OK;
    (void)cudaGetLastError();
    *p = NULL;
    if (e == cudaErrorMemoryAllocation) return FACET_STATUS_ERR_MEMORY;   /* the cache retries */
    return facet_fail(FACET_STATUS_ERR_DEVICE, "facet_cuda_malloc: cudaMalloc of %zu bytes: %s", nbytes,
                      cudaGetErrorString(e));
}

/* cudaFree waits for the device first, so no queued kernel still uses it */
static int raw_free(void *ctx, void *p, size_t nbytes)
{
    (void)ctx;
    (void)nbytes;
    return check_cuda(cudaFree(p), "facet_cuda_empty_cache: cudaFree");
}

/* made on first use (thread-safe static initialisation); NULL only when the
 * host is out of memory */
static facet_cache *device_cache(void)
{
    static facet_cache *cache = facet_cache_new(raw_alloc, raw_free, NULL);
    return cache;
}

extern "C" int facet_cuda_malloc(void **ptr, size_t nbytes)
{
    if (!ptr) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_malloc: ptr is NULL");
    *ptr = NULL;
    facet_cache *cache = device_cache();
    if (!cache) return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_cuda_malloc: no host memory for the allocator");
    /* an empty tensor still gets a real, distinct address, like malloc(0) */
    int rc = facet_cache_alloc(cache, ptr, nbytes);
    if (rc != FACET_STATUS_ERR_MEMORY) return rc;     /* 0, or the message is set */
    struct facet_cache_stats s;
    facet_cache_get_stats(cache, &s);
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
    return facet_fail(FACET_STATUS_ERR_MEMORY,
                      "facet_cuda_malloc: out of GPU memory allocating %zu bytes: %lld bytes allocated to "
                      "tensors, %lld reserved by facet's cache (after emptying it); the device has %zu of %zu "
                      "bytes free",
                      nbytes, (long long)s.allocated, (long long)s.reserved, free_b, total_b);
}

extern "C" int facet_cuda_free(void *ptr)
{
    if (!ptr) return FACET_STATUS_OK;
    facet_cache *cache = device_cache();
    if (!cache || facet_cache_free(cache, ptr) != 0)
        return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_free: %p was not allocated by facet_cuda_malloc", ptr);
    return FACET_STATUS_OK;
}

extern "C" int facet_cuda_alloc_stats(struct facet_cuda_memory_stats *out)
{
    struct facet_cache_stats s;
    facet_cache_get_stats(device_cache(), &s);        /* zeros without a cache */
    out->allocated_bytes = s.allocated;
    out->requested_bytes = s.requested;
    out->reserved_bytes = s.reserved;
    out->peak_allocated_bytes = s.peak_allocated;
    out->peak_reserved_bytes = s.peak_reserved;
    out->segments = s.segments;
    out->blocks = s.blocks;
    out->allocs = s.allocs;
    out->cache_hits = s.cache_hits;
    out->driver_allocs = s.raw_allocs;
    out->driver_frees = s.raw_frees;
    out->oom_retries = s.oom_retries;
    out->ooms = s.ooms;
    return FACET_STATUS_OK;
}

extern "C" int facet_cuda_alloc_empty(void)
{
    return facet_cache_empty(device_cache());          /* no segments, no driver call */
}
