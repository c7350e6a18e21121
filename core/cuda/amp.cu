/*
 * amp.cu - the fused unscale-and-check of dynamic loss scaling on the GPU
 * (see amp.c): multi-tensor launches (tensor_list.cuh, one launch per 48
 * tensors, one block per chunk of a tensor) multiply by 1/scale and raise a
 * device flag when they meet NaN or +-inf; the flag is read back once for the
 * whole list. The flag is only ever set to 1, so the unordered stores of many
 * threads agree; no atomics are needed.
 */
#include "cuda_common.cuh"
#include "tensor_list.cuh"

/* Block b scales its chunk of tensor j (p[0], of dtype kind[j]). */
static __global__ void unscale_list_kernel(tlist l, float inv, int *flag)
{
    const int64_t b = blockIdx.x;
    const int j = tlist_find(l, b);
    int64_t lo, hi;
    tlist_chunk(l, j, b, &lo, &hi);
    int bad = 0;
    if (l.kind[j] == FACET_DTYPE_FLOAT32) {
        float *x = (float *)l.p[0][j];
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            const float v = x[i];
            bad |= facet_nonfinite(v);
            x[i] = facet_mul_rn(v, inv);
        }
    } else {
        uint16_t *x = (uint16_t *)l.p[0][j];
        const int dtype = l.kind[j];
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            const float v = facet_load_half(x, dtype, i);
            bad |= facet_nonfinite(v);
            facet_store_half(x, dtype, i, facet_mul_rn(v, inv));
        }
    }
    if (bad) *flag = 1;
}

extern "C" int facet_cuda_amp_unscale(void *const *ptrs, const int *dtypes, const int64_t *counts, int n,
                                      float inv_scale, int *found)
{
    const char *fn = "facet_cuda_amp_unscale";
    void *mem = NULL;
    FACET_CUDA_TRY(facet_cuda_malloc(&mem, sizeof(int)));
    int *flag = (int *)mem;
    int rc = check_cuda(cudaMemsetAsync(flag, 0, sizeof(int), 0), fn);
    tlist l;
    tlist_reset(&l);
    for (int k = 0; k < n && !rc; k++) {
        const int j = tlist_add(&l, counts[k]);
        l.p[0][j] = ptrs[k];
        l.kind[j] = dtypes[k];
        if (tlist_full(&l) || k == n - 1) {
            rc = tlist_launch(fn, &l, unscale_list_kernel, l, inv_scale, flag);
            tlist_reset(&l);
        }
    }
    int host = 0;
    if (!rc) rc = facet_cuda_memcpy(&host, flag, sizeof(int), FACET_COPY_D2H);
    facet_cuda_free(mem);
    if (!rc) *found = host != 0;
    return rc;
}
