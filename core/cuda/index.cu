/*
 * index.cu - row and column indexing of contiguous float32 matrices with an
 * int32 or int64 index counted from index_base (the caller has checked the
 * values are in range). Rows: select gathers src rows into dst, add
 * accumulates alpha*src rows into dst rows with atomics (duplicate indices
 * add up; the order of float additions is not fixed), copy scatters src rows
 * into dst rows (with duplicates, one of the writes wins). Columns: one
 * index per row picks the element gathered from or scattered into that row.
 * Work is flattened to one thread per element so narrow rows still fill
 * the GPU and reads of a row stay coalesced.
 */
#include "cuda_common.cuh"

template <typename I>
static __global__ void index_rows_kernel(float *dst, const float *src, const I *index, int64_t n, int64_t cols,
                                         int mode, double alpha, int64_t base)
{
    FACET_CUDA_FOR(e, n * cols) {
        int64_t i = e / cols, j = e - i * cols;
        int64_t r = (int64_t)index[i] - base;
        switch (mode) {
        case FACET_INDEX_SELECT: dst[e] = src[r * cols + j]; break;
        case FACET_INDEX_ADD: atomicAdd(&dst[r * cols + j], (float)(alpha * (double)src[e])); break;
        default: dst[r * cols + j] = src[e]; break;
        }
    }
}

template <typename I>
static __global__ void cols_kernel(float *mat, float *vec, const I *index, int64_t rows, int64_t cols,
                                   int scatter, int64_t base)
{
    FACET_CUDA_FOR(i, rows) {
        int64_t p = i * cols + ((int64_t)index[i] - base);
        if (scatter) mat[p] = vec[i];
        else vec[i] = mat[p];
    }
}

extern "C" int facet_cuda_index_rows(float *dst, const float *src, const void *index, int index_dtype,
                                     int64_t n, int64_t cols, int mode, double alpha, int index_base)
{
    const char *fn = "facet_cuda_index_rows";
    if (mode != FACET_INDEX_SELECT && mode != FACET_INDEX_ADD && mode != FACET_INDEX_COPY)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown mode %d", fn, mode);
    if (n <= 0 || cols <= 0) return FACET_STATUS_OK;
    unsigned blocks = grid_blocks(n * cols);
    if (index_dtype == FACET_DTYPE_INT32)
        index_rows_kernel<int32_t><<<blocks, FACET_CUDA_THREADS>>>(dst, src, (const int32_t *)index, n, cols,
                                                                   mode, alpha, index_base);
    else if (index_dtype == FACET_DTYPE_INT64)
        index_rows_kernel<int64_t><<<blocks, FACET_CUDA_THREADS>>>(dst, src, (const int64_t *)index, n, cols,
                                                                   mode, alpha, index_base);
    else
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: index dtype %d is not int32 or int64", fn, index_dtype);
    return check_launch(fn);
}

extern "C" int facet_cuda_cols(float *mat, float *vec, const void *index, int index_dtype, int64_t rows,
                               int64_t cols, int scatter, int index_base)
{
    const char *fn = "facet_cuda_cols";
    if (rows <= 0) return FACET_STATUS_OK;
    unsigned blocks = grid_blocks(rows);
    if (index_dtype == FACET_DTYPE_INT32)
        cols_kernel<int32_t><<<blocks, FACET_CUDA_THREADS>>>(mat, vec, (const int32_t *)index, rows, cols,
                                                             scatter, index_base);
    else if (index_dtype == FACET_DTYPE_INT64)
        cols_kernel<int64_t><<<blocks, FACET_CUDA_THREADS>>>(mat, vec, (const int64_t *)index, rows, cols,
                                                             scatter, index_base);
    else
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: index dtype %d is not int32 or int64", fn, index_dtype);
    return check_launch(fn);
}
