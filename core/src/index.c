/*
 * index.c - rows picked, added or copied by an index tensor, and one column
 * per row gathered or scattered (the logit of the true class in a head).
 * Index values are checked on the host before any memory is touched.
 * index_add and index_copy follow a plan built from them (index_math.h):
 * duplicates apply in source order, the same bits on every run and device.
 */
#include "internal.h"
#include "index_math.h"
#include "guard.h"
#include <stdlib.h>

/* Host copy of a 1-D int32/int64 index, every value checked to lie in
 * [base, base + limit). *owned is set when the copy must be freed. */
static int check_index(const char *fn, const facet_tensor *index)
{
    int rc = facet_check_tensor(fn, "index", index);
    if (rc) return rc;
    if ((index->dtype != FACET_DTYPE_INT32 && index->dtype != FACET_DTYPE_INT64) || index->ndim != 1 ||
        !facet_contiguous(index))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: index must be a contiguous 1-D int32 or int64 tensor, got %s", fn,
                          facet_desc(index));
    return 0;
}

static int index_values(const char *fn, const facet_tensor *index, int64_t limit, int base,
                        const void **host, int *owned)
{
    int rc = check_index(fn, index);
    if (rc) return rc;
    int64_t n = index->sizes[0];
    size_t nbytes = (size_t)n * facet_elsize(index->dtype);
    *owned = 0;
    *host = facet_ptr(index);
    if (index->device == FACET_DEVICE_CUDA) {
        void *buf = malloc(nbytes ? nbytes : 1);
        if (!buf) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
        rc = facet_cuda_memcpy(buf, facet_ptr(index), nbytes, FACET_COPY_D2H);
        if (rc) { free(buf); return rc; }
        *host = buf;
        *owned = 1;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t v = index->dtype == FACET_DTYPE_INT32 ? ((const int32_t *)*host)[i] : ((const int64_t *)*host)[i];
        if (v < base || v - base >= limit) {
            if (*owned) free((void *)*host);
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: index[%lld] = %lld outside [%d, %lld]", fn, (long long)(i + base),
                              (long long)v, base, (long long)(limit - 1 + base));
        }
    }
    return 0;
}

static inline int64_t index_at(const void *idx, int dtype, int64_t i, int base)
{
    return (dtype == FACET_DTYPE_INT32 ? ((const int32_t *)idx)[i] : ((const int64_t *)idx)[i]) - base;
}

/* A (destination row, source row) pair of the plan's sort. */
struct plan_pair {
    int64_t row, src;
};

static int plan_cmp(const void *x, const void *y)
{
    const struct plan_pair *a = x, *b = y;
    if (a->row != b->row) return a->row < b->row ? -1 : 1;
    return (a->src > b->src) - (a->src < b->src);
}

/* The scatter plan of index_math.h for n > 0 checked host index values:
 * source rows grouped by destination row, ascending within a group. One
 * allocation, plan->order; free it when done. */
static int build_plan(const char *fn, const void *idx, int dtype, int64_t n, int base, struct facet_index_plan *plan)
{
    struct plan_pair *pairs = malloc(sizeof *pairs * (size_t)n);
    int64_t *buf = malloc(sizeof(int64_t) * (size_t)(3 * n + 1));
    if (!pairs || !buf) {
        free(pairs);
        free(buf);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory for the plan of %lld rows", fn, (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        pairs[i].row = index_at(idx, dtype, i, base);
        pairs[i].src = i;
    }
    qsort(pairs, (size_t)n, sizeof *pairs, plan_cmp);
    int64_t groups = 0;
    for (int64_t i = 0; i < n; i++) groups += i == 0 || pairs[i].row != pairs[i - 1].row;
    plan->n = n;
    plan->ngroups = groups;
    plan->order = buf;
    plan->start = buf + n;
    plan->row = buf + n + groups + 1;
    for (int64_t i = 0, g = 0; i < n; i++) {
        plan->order[i] = pairs[i].src;
        if (i == 0 || pairs[i].row != pairs[i - 1].row) {
            plan->start[g] = i;
            plan->row[g++] = pairs[i].row;
        }
    }
    plan->start[groups] = n;
    free(pairs);
    return 0;
}

/* index_add / index_copy on the CPU by the plan, groups in parallel (each
 * writes its own destination row); the per-element formula is the GPU's. */
static void scatter_cpu(float *tp, const float *rp, const struct facet_index_plan *plan, int64_t cols, int add,
                        float alpha)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (plan->n * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t g = 0; g < plan->ngroups; g++) {
        float *d = tp + plan->row[g] * cols;
        if (!add) {
            const float *s = rp + plan->order[plan->start[g + 1] - 1] * cols;
            for (int64_t c = 0; c < cols; c++) d[c] = s[c];
            continue;
        }
        for (int64_t q = plan->start[g]; q < plan->start[g + 1]; q++) {
            const float *s = rp + plan->order[q] * cols;
            for (int64_t c = 0; c < cols; c++) d[c] = facet_index_add_at(d[c], alpha, s[c]);
        }
    }
}

/* the work of index_rows, on checked operands; idx: the index values on the
 * host (owned: the caller frees them) */
static int index_rows_run(const char *fn, facet_tensor *table, facet_tensor *rows, const facet_tensor *index,
                          const void *idx, int mode, double alpha, int base)
{
    int64_t n = index->sizes[0];
    int64_t cols = table->sizes[1];
    float *tp = facet_ptr(table), *rp = facet_ptr(rows);
    if (mode == FACET_INDEX_SELECT) {
        if (table->device == FACET_DEVICE_CUDA)
            return facet_cuda_index_select(rp, tp, facet_ptr(index), index->dtype, n, cols, base);
        #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n * cols >= FACET_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) {
            const float *t = tp + index_at(idx, index->dtype, i, base) * cols;
            float *r = rp + i * cols;
            for (int64_t c = 0; c < cols; c++) r[c] = t[c];
        }
        return 0;
    }
    /* add / copy: duplicates apply in source order on both devices (index_math.h) */
    if (n == 0 || cols == 0) return 0;
    struct facet_index_plan plan;
    int rc = build_plan(fn, idx, index->dtype, n, base, &plan);
    if (rc) return rc;
    const int add = mode == FACET_INDEX_ADD;
    if (table->device == FACET_DEVICE_CUDA) rc = facet_cuda_index_scatter(tp, rp, &plan, cols, add, (float)alpha);
    else scatter_cpu(tp, rp, &plan, cols, add, (float)alpha);
    free(plan.order);
    return rc;
}

/* mode: select (dst n x C <- table rows), add / copy (table rows <- src n x C) */
static int index_rows(const char *fn, facet_tensor *table, facet_tensor *rows, const facet_tensor *index,
                      int mode, double alpha, int base)
{
    int rc = facet_check_matrix(fn, "table", table);
    if (!rc) rc = facet_check_matrix(fn, "rows", rows);
    if (!rc) rc = facet_check_same_device(fn, table, rows);
    if (!rc) rc = check_index(fn, index);
    if (!rc) rc = facet_check_same_device(fn, table, index);
    if (rc) return rc;
    int64_t n = index->ndim == 1 ? index->sizes[0] : -1;
    if (rows->sizes[0] != n || rows->sizes[1] != table->sizes[1])
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: shapes do not match: table %s, rows %s, index %s", fn,
                          facet_desc(table), facet_desc(rows), facet_desc(index));
    const void *idx;
    int owned;
    rc = index_values(fn, index, table->sizes[0], base, &idx, &owned);
    if (rc) return rc;
    /* an input overlapping the output (even as the same view: rows are read
     * in index order) is read from a copy */
    facet_tensor *tmp = NULL;
    const facet_tensor *in = mode == FACET_INDEX_SELECT ? table : rows;
    rc = facet_unalias(fn, mode == FACET_INDEX_SELECT ? rows : table, in, false, &tmp, &in);
    if (rc) {
        if (owned) free((void *)idx);
        return rc;
    }
    if (mode == FACET_INDEX_SELECT) table = (facet_tensor *)in;
    else rows = (facet_tensor *)in;
    rc = index_rows_run(fn, table, rows, index, idx, mode, alpha, base);
    if (owned) free((void *)idx);
    facet_tensor_free(tmp);
    return rc;
}

int facet_tensor_index_select(facet_tensor *out, const facet_tensor *src, const facet_tensor *index, int index_base)
{
    return index_rows("facet_tensor_index_select", (facet_tensor *)src, out, index, FACET_INDEX_SELECT, 1.0, index_base);
}

int facet_tensor_index_add(facet_tensor *dst, const facet_tensor *src, const facet_tensor *index, double alpha, int index_base)
{
    return index_rows("facet_tensor_index_add", dst, (facet_tensor *)src, index, FACET_INDEX_ADD, alpha, index_base);
}

int facet_tensor_index_copy(facet_tensor *dst, const facet_tensor *src, const facet_tensor *index, int index_base)
{
    return index_rows("facet_tensor_index_copy", dst, (facet_tensor *)src, index, FACET_INDEX_COPY, 1.0, index_base);
}

static int cols_op(const char *fn, facet_tensor *mat, facet_tensor *vec, const facet_tensor *index, int scatter,
                   int base)
{
    int rc = facet_check_matrix(fn, scatter ? "dst" : "src", mat);
    if (!rc) rc = facet_check_dtype(fn, scatter ? "src" : "out", vec, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, mat, vec);
    if (!rc) rc = check_index(fn, index);
    if (!rc) rc = facet_check_same_device(fn, mat, index);
    if (rc) return rc;
    int64_t rows = mat->sizes[0], cols = mat->sizes[1];
    if (facet_numel(vec) != rows || !facet_contiguous(vec) || index->ndim != 1 || index->sizes[0] != rows)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want one index and one value per row of %s; got index %s, values %s",
                          fn, facet_desc(mat), facet_desc(index), facet_desc(vec));
    const void *idx;
    int owned;
    rc = index_values(fn, index, cols, base, &idx, &owned);
    if (rc) return rc;
    /* an input overlapping the output is read from a copy */
    facet_tensor *tmp = NULL;
    const facet_tensor *in = scatter ? vec : mat;
    rc = facet_unalias(fn, scatter ? mat : vec, in, false, &tmp, &in);
    if (!rc) {
        float *mp = facet_ptr(scatter ? mat : in), *vp = facet_ptr(scatter ? in : vec);
        if (mat->device == FACET_DEVICE_CUDA) {
            rc = facet_cuda_cols(mp, vp, facet_ptr(index), index->dtype, rows, cols, scatter, base);
        } else {
            for (int64_t i = 0; i < rows; i++) {
                int64_t c = index_at(idx, index->dtype, i, base);
                if (scatter) mp[i * cols + c] = vp[i];
                else vp[i] = mp[i * cols + c];
            }
        }
    }
    if (owned) free((void *)idx);
    facet_tensor_free(tmp);
    return rc;
}

int facet_tensor_gather_cols(facet_tensor *out, const facet_tensor *src, const facet_tensor *index, int index_base)
{
    return cols_op("facet_tensor_gather_cols", (facet_tensor *)src, out, index, 0, index_base);
}

int facet_tensor_scatter_cols(facet_tensor *dst, const facet_tensor *src, const facet_tensor *index, int index_base)
{
    return cols_op("facet_tensor_scatter_cols", dst, (facet_tensor *)src, index, 1, index_base);
}
