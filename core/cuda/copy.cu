/*
 * copy.cu - the copy of a list of same-shaped, same-dtype contiguous pairs on
 * the GPU (facet_tensor_copy_list; the CPU version is core/src/copy.c):
 * multi-tensor launches (tensor_list.cuh, one launch per 48 pairs, one block
 * per chunk of a pair). A pair moves in 16-byte words when both addresses and
 * its length allow, else in 4-byte words, else in bytes: the bytes of src
 * either way. Strided and converting copies are elementwise.cu's.
 */
#include "cuda_common.cuh"
#include "tensor_list.cuh"

template <typename W>
static __device__ __forceinline__ void copy_words(void *dst, const void *src, int64_t lo, int64_t hi)
{
    W *d = (W *)dst;
    const W *s = (const W *)src;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) d[i] = s[i];
}

/* Block b copies its chunk of pair j: p[0] the dst, p[1] the src, kind[j]
 * the word size (16, 4 or 1 bytes), numel[j] the words. */
static __global__ void copy_list_kernel(tlist l)
{
    const int64_t b = blockIdx.x;
    const int j = tlist_find(l, b);
    int64_t lo, hi;
    tlist_chunk(l, j, b, &lo, &hi);
    if (l.kind[j] == 16) copy_words<uint4>(l.p[0][j], l.p[1][j], lo, hi);
    else if (l.kind[j] == 4) copy_words<uint32_t>(l.p[0][j], l.p[1][j], lo, hi);
    else copy_words<uint8_t>(l.p[0][j], l.p[1][j], lo, hi);
}

/* the widest word that divides both addresses and the length */
static int word_of(const void *dst, const void *src, int64_t nbytes)
{
    const uintptr_t all = (uintptr_t)dst | (uintptr_t)src | (uintptr_t)nbytes;
    return all % 16 == 0 ? 16 : all % 4 == 0 ? 4 : 1;
}

extern "C" int facet_cuda_copy_list(void *const *dst, const void *const *src, const int64_t *nbytes, int n)
{
    const char *fn = "facet_cuda_copy_list";
    tlist l;
    tlist_reset(&l);
    int rc = FACET_STATUS_OK;
    for (int k = 0; k < n && !rc; k++) {
        const int w = word_of(dst[k], src[k], nbytes[k]);
        const int j = tlist_add(&l, nbytes[k] / w);
        l.p[0][j] = dst[k];
        l.p[1][j] = (void *)src[k];
        l.kind[j] = w;
        if (tlist_full(&l) || k == n - 1) {
            rc = tlist_launch(fn, &l, copy_list_kernel, l);
            tlist_reset(&l);
        }
    }
    return rc;
}
