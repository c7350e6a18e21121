/*
 * index.cu - row and column indexing of contiguous float32 matrices with an
 * int32 or int64 index counted from index_base (the caller has checked the
 * values are in range).
 *
 * select      one thread per element of the output: out[i][j] = table[index[i]][j].
 * add / copy  the plan of index_math.h, built by index.c on the host from the
 *             checked index and copied over: one thread per (destination row,
 *             column) walks the row's source rows in ascending order
 *             (facet_index_scatter_at), adding alpha * src in float (add) or
 *             keeping the last (copy). No atomics: duplicates apply in source
 *             order, the same bits on every run and as on the CPU.
 * columns     one index per row picks the element gathered from or scattered
 *             into that row; one thread per row.
 * The (row, column) of a thread comes from a 32-bit division when the
 * output has fewer than 2^31 elements (cuda_common.cuh, "index math"); the
 * table's offsets stay 64-bit.
 */
#include "cuda_common.cuh"
#include "index_math.h"

/* X: the index's dtype; I: the index math's type */
template <typename X, typename I>
static __global__ void index_select_kernel(float *out, const float *table, const X *index, int64_t total,
                                           div_by<I> cols, int64_t base)
{
    FACET_CUDA_FOR_T(I, e, total) {
        const I i = cols.div(e), j = cols.mod(e);
        out[e] = table[((int64_t)index[i] - base) * (int64_t)cols.d + j];
    }
}

/* plan: order (n), start (groups + 1), row (groups), one device buffer */
template <typename I>
static __global__ void index_scatter_kernel(float *table, const float *src, const int64_t *plan, int64_t n,
                                            int64_t groups, div_by<I> cols, int add, float alpha)
{
    const int64_t *order = plan, *start = plan + n, *row = plan + n + groups + 1;
    FACET_CUDA_FOR_T(I, e, groups * (int64_t)cols.d)
        facet_index_scatter_at(table, src, order, start, row, cols.div(e), cols.d, cols.mod(e), add, alpha);
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

static int bad_index_dtype(const char *fn, int dtype)
{
    return facet_fail(FACET_STATUS_ERR_ARG, "%s: index dtype %d is not int32 or int64", fn, dtype);
}

extern "C" int facet_cuda_index_select(float *out, const float *table, const void *index, int index_dtype, int64_t n,
                                       int64_t cols, int index_base)
{
    const char *fn = "facet_cuda_index_select";
    if (index_dtype != FACET_DTYPE_INT32 && index_dtype != FACET_DTYPE_INT64) return bad_index_dtype(fn, index_dtype);
    const int64_t total = n * cols;
    int rc = FACET_STATUS_OK;
    FACET_INDEX_DISPATCH(fits_int32(total), I, {
        const div_by<I> by_cols(cols);
        if (index_dtype == FACET_DTYPE_INT32)
            rc = launch_flat(fn, total, index_select_kernel<int32_t, I>, out, table, (const int32_t *)index, total,
                             by_cols, (int64_t)index_base);
        else
            rc = launch_flat(fn, total, index_select_kernel<int64_t, I>, out, table, (const int64_t *)index, total,
                             by_cols, (int64_t)index_base);
    });
    return rc;
}

extern "C" int facet_cuda_index_scatter(float *table, const float *src, const struct facet_index_plan *plan,
                                        int64_t cols, int add, float alpha)
{
    const char *fn = "facet_cuda_index_scatter";
    if (plan->n <= 0 || plan->ngroups <= 0 || cols <= 0) return FACET_STATUS_OK;
    /* the plan's three arrays lie back to back in host memory (index.c) */
    if (plan->start != plan->order + plan->n || plan->row != plan->start + plan->ngroups + 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: the plan's arrays are not one buffer", fn);
    const size_t nbytes = (size_t)(plan->n + 2 * plan->ngroups + 1) * sizeof(int64_t);
    scratch dev;
    FACET_CUDA_TRY(scratch_alloc(&dev, nbytes, fn));
    /* from pageable memory: the copy is staged before cudaMemcpy returns, and
     * ordered on the default stream before the kernel */
    int rc = check_cuda(cudaMemcpy(dev.p, plan->order, nbytes, cudaMemcpyHostToDevice), fn);
    if (!rc)
        FACET_INDEX_DISPATCH(fits_int32(plan->ngroups * cols), I,
            rc = launch_flat(fn, plan->ngroups * cols, index_scatter_kernel<I>, table, src, (const int64_t *)dev.p,
                             plan->n, plan->ngroups, div_by<I>(cols), add, alpha));
    int rc_free = scratch_free(&dev, fn);
    return rc ? rc : rc_free;
}

extern "C" int facet_cuda_cols(float *mat, float *vec, const void *index, int index_dtype, int64_t rows,
                               int64_t cols, int scatter, int index_base)
{
    const char *fn = "facet_cuda_cols";
    if (index_dtype == FACET_DTYPE_INT32)
        return launch_flat(fn, rows, cols_kernel<int32_t>, mat, vec, (const int32_t *)index, rows, cols, scatter,
                           (int64_t)index_base);
    if (index_dtype == FACET_DTYPE_INT64)
        return launch_flat(fn, rows, cols_kernel<int64_t>, mat, vec, (const int64_t *)index, rows, cols, scatter,
                           (int64_t)index_base);
    return bad_index_dtype(fn, index_dtype);
}
