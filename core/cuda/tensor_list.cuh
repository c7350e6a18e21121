/*
 * tensor_list.cuh - multi-tensor launches: one kernel launch covers up to
 * TLIST_MAX tensors (an optimizer's gradients: 238 of them for an
 * IResNet-50), each cut into chunks of TLIST_CHUNK elements with one block a
 * chunk. The tensors' addresses and sizes travel by value in the kernel's
 * parameters (a struct of 2.7 KB, under the 4 KB every CUDA version
 * takes), so nothing is copied to the device, no table is kept between calls
 * and the host never waits; a longer list takes ceil(n / TLIST_MAX) launches.
 * A block finds its tensor by a binary search over the first chunk of each.
 * Users: the gradient sums of squares (reduce.cu), the loss-scale unscale
 * (amp.cu), the SGD and Adam updates of a parameter list (sgd.cu, adam.cu),
 * the copies of a list of pairs (copy.cu).
 */
#ifndef FACET_TENSOR_LIST_CUH
#define FACET_TENSOR_LIST_CUH

#include "cuda_common.cuh"

enum {
    TLIST_MAX = 48,          /* tensors a launch */
    TLIST_CHUNK = 8192       /* elements a block: 32 for each of 256 threads */
};

/* One launch's tensors; what p[], cols[], kind[] and f[] hold is the kernel's. */
struct tlist {
    int n;                              /* tensors in this launch */
    int64_t first[TLIST_MAX + 1];       /* each tensor's first block; first[n] = blocks of the launch */
    int64_t numel[TLIST_MAX];
    int64_t cols[TLIST_MAX];
    void *p[3][TLIST_MAX];
    int kind[TLIST_MAX];
    float f[TLIST_MAX];
};

/* A fourth pointer per tensor, beside a tlist in a kernel's parameters, for
 * the kernels that need one more than p[] (Adam's second moment): 384 bytes,
 * so the two together stay under the 4 KB of parameters. */
struct tlist_ptrs {
    void *p[TLIST_MAX];
};

static inline void tlist_reset(tlist *l)
{
    l->n = 0;
    l->first[0] = 0;
}

static inline bool tlist_full(const tlist *l) { return l->n == TLIST_MAX; }

/* Appends a tensor of numel elements (its chunks follow the others'); returns its slot. */
static inline int tlist_add(tlist *l, int64_t numel)
{
    const int j = l->n++;
    l->numel[j] = numel;
    l->cols[j] = 1;
    l->p[0][j] = l->p[1][j] = l->p[2][j] = NULL;
    l->kind[j] = 0;
    l->f[j] = 0.0f;
    l->first[j + 1] = l->first[j] + (numel + TLIST_CHUNK - 1) / TLIST_CHUNK;
    return j;
}

static inline int64_t tlist_blocks(const tlist *l) { return l->first[l->n]; }

/* The slot of the tensor block b works on: the last j with first[j] <= b
 * (tensors without elements have no blocks and are skipped over). */
static __device__ __forceinline__ int tlist_find(const tlist &l, int64_t b)
{
    int lo = 0, hi = l.n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (l.first[mid] <= b) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* The elements [*lo, *hi) of tensor j that block b covers. */
static __device__ __forceinline__ void tlist_chunk(const tlist &l, int j, int64_t b, int64_t *lo, int64_t *hi)
{
    *lo = (b - l.first[j]) * TLIST_CHUNK;
    *hi = *lo + TLIST_CHUNK < l.numel[j] ? *lo + TLIST_CHUNK : l.numel[j];
}

/* One block a chunk for every tensor of l; nothing is launched for a list without elements. */
template <typename... P, typename... A>
static inline int tlist_launch(const char *fn, const tlist *l, void (*kernel)(P...), A... args)
{
    const int64_t blocks = tlist_blocks(l);
    if (blocks <= 0) return FACET_STATUS_OK;
    if (blocks > 0x7fffffff) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %lld blocks in one launch", fn, (long long)blocks);
    kernel<<<(unsigned)blocks, FACET_CUDA_THREADS>>>(args...);
    return check_launch(fn);
}

#endif
