/*
 * cache_alloc.h - a caching allocator for device memory, written as plain host
 * C over a pair of raw alloc/free functions, so the bookkeeping is unit-tested
 * on the CPU with malloc/free behind it (core/tests/test_cache_alloc.c) and
 * runs over cudaMalloc/cudaFree in core/cuda/alloc.cu.
 *
 * Policy (after PyTorch's CUDACachingAllocator; docs/gpu-memory.md):
 *   - every request is rounded up to a multiple of 512 bytes;
 *   - requests up to 1 MiB come from the small pool, carved out of 2 MiB
 *     segments; larger ones from the large pool, whose segments are 20 MiB
 *     for requests up to 10 MiB and the request rounded up to 2 MiB above;
 *   - a free block is found best-fit in size bins (one bin per power of two)
 *     and split when the rest is worth keeping (512 bytes in the small pool,
 *     over 1 MiB in the large); a freed block merges with free neighbours of
 *     its segment;
 *   - stream order: the caller promises that all work touching the memory runs
 *     in one stream (facet: the legacy default stream), so a block freed is
 *     handed out again at once, without a synchronisation;
 *   - when the raw allocator is out of memory, every wholly free segment is
 *     returned to it and the allocation is tried once more.
 * Thread-safe (one mutex).
 */
#ifndef FACET_CACHE_ALLOC_H
#define FACET_CACHE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    FACET_CACHE_ROUND = 512,                      /* every block is a multiple of this */
    FACET_CACHE_SMALL = 1 << 20,                  /* requests up to this use the small pool */
    FACET_CACHE_SMALL_SEGMENT = 2 << 20,          /* segment size of the small pool */
    FACET_CACHE_MID = 10 << 20,                   /* large requests up to this share ... */
    FACET_CACHE_MID_SEGMENT = 20 << 20,           /* ... segments of this size */
    FACET_CACHE_LARGE_ROUND = 2 << 20             /* bigger segments round up to this */
};

/* The backing allocator: 0 on success; FACET_STATUS_ERR_MEMORY (2) when it is
 * out of memory, which makes the cache release what it holds and try again;
 * any other status is passed back unchanged (the function has already set
 * facet's error message, if it wants one). raw_free gets the size allocated. */
typedef int (*facet_raw_alloc_fn)(void *ctx, void **ptr, size_t nbytes);
typedef int (*facet_raw_free_fn)(void *ctx, void *ptr, size_t nbytes);

struct facet_cache_stats {
    int64_t allocated;        /* bytes in blocks handed out now (rounded sizes) */
    int64_t requested;        /* bytes asked for by those blocks' callers */
    int64_t reserved;         /* bytes held from the raw allocator (segments) */
    int64_t peak_allocated;
    int64_t peak_reserved;
    int64_t segments;         /* segments held now */
    int64_t blocks;           /* blocks handed out now */
    int64_t allocs;           /* successful facet_cache_alloc calls */
    int64_t cache_hits;       /* of those, served without calling raw_alloc */
    int64_t raw_allocs;       /* successful raw_alloc calls */
    int64_t raw_frees;
    int64_t oom_retries;      /* raw_alloc out of memory: cache emptied and tried again */
    int64_t ooms;             /* allocations that failed even after that */
};

typedef struct facet_cache facet_cache;

/* NULL when out of host memory. */
facet_cache *facet_cache_new(facet_raw_alloc_fn raw_alloc, facet_raw_free_fn raw_free, void *ctx);
/* Returns every segment to the raw allocator (blocks still handed out are
 * lost with them) and frees the cache. NULL is a no-op. */
void facet_cache_delete(facet_cache *c);
/* *ptr: a block of at least nbytes (0 gets a block too, a distinct address).
 * Statuses as the raw allocator's; FACET_STATUS_ERR_MEMORY after the retry. */
int facet_cache_alloc(facet_cache *c, void **ptr, size_t nbytes);
/* Puts a block back for reuse. NULL is a no-op; an address the cache did not
 * hand out is FACET_STATUS_ERR_ARG and changes nothing. */
int facet_cache_free(facet_cache *c, void *ptr);
/* Returns every wholly free segment to the raw allocator: the first raw_free
 * failure's status, 0 when all went back. */
int facet_cache_empty(facet_cache *c);
void facet_cache_get_stats(facet_cache *c, struct facet_cache_stats *out);
/* The block size a request of nbytes gets, and the segment size it would
 * need if no cached block fits (for tests and messages). */
size_t facet_cache_round(size_t nbytes);
size_t facet_cache_segment_size(size_t nbytes);

#ifdef __cplusplus
}
#endif

#endif
