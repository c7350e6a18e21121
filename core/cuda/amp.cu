/*
 * amp.cu - the fused unscale-and-check of dynamic loss scaling on the GPU
 * (see amp.c): one kernel per tensor multiplies by 1/scale and raises a
 * device flag when it meets NaN or +-inf; the flag is read back once for the
 * whole list. The flag is only ever set to 1, so the unordered stores of many
 * threads agree; no atomics are needed.
 */
#include "cuda_common.cuh"

static __global__ void unscale_f32_kernel(float *x, int64_t n, float inv, int *flag)
{
    int bad = 0;
    FACET_CUDA_FOR(i, n) {
        float v = x[i];
        bad |= facet_nonfinite(v);
        x[i] = facet_mul_rn(v, inv);
    }
    if (bad) *flag = 1;
}

static __global__ void unscale_half_kernel(uint16_t *x, int dtype, int64_t n, float inv, int *flag)
{
    int bad = 0;
    FACET_CUDA_FOR(i, n) {
        float v = facet_load_half(x, dtype, i);
        bad |= facet_nonfinite(v);
        facet_store_half(x, dtype, i, facet_mul_rn(v, inv));
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
    for (int k = 0; k < n && !rc; k++) {
        if (dtypes[k] == FACET_DTYPE_FLOAT32)
            rc = launch_flat(fn, counts[k], unscale_f32_kernel, (float *)ptrs[k], counts[k], inv_scale, flag);
        else
            rc = launch_flat(fn, counts[k], unscale_half_kernel, (uint16_t *)ptrs[k], dtypes[k], counts[k], inv_scale,
                             flag);
    }
    int host = 0;
    if (!rc) rc = facet_cuda_memcpy(&host, flag, sizeof(int), FACET_COPY_D2H);
    facet_cuda_free(mem);
    if (!rc) *found = host != 0;
    return rc;
}
