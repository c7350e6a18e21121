/*
 * nd.c - the strided walk shared by copy, fill and the elementwise ops:
 * collapse dims that all operands traverse contiguously, then hand rows
 * (the last dim) to a row function, split over OpenMP threads.
 */
#include "internal.h"
#include "nd.h"

void facet_nd_collapse(struct facet_nd *nd)
{
    /* drop size-1 dims: their stride never matters */
    int w = 0;
    for (int d = 0; d < nd->ndim; d++) {
        if (nd->sizes[d] == 1) continue;
        nd->sizes[w] = nd->sizes[d];
        for (int k = 0; k < nd->nops; k++) nd->strides[k][w] = nd->strides[k][d];
        w++;
    }
    nd->ndim = w;
    /* merge d into d+1 where every operand steps over d+1 exactly */
    w = 0;
    for (int d = 1; d < nd->ndim; d++) {
        bool merge = true;
        for (int k = 0; k < nd->nops; k++)
            if (nd->strides[k][w] != nd->strides[k][d] * nd->sizes[d]) merge = false;
        if (merge) {
            nd->sizes[w] *= nd->sizes[d];
            for (int k = 0; k < nd->nops; k++) nd->strides[k][w] = nd->strides[k][d];
        } else {
            w++;
            nd->sizes[w] = nd->sizes[d];
            for (int k = 0; k < nd->nops; k++) nd->strides[k][w] = nd->strides[k][d];
        }
    }
    if (nd->ndim > 0) nd->ndim = w + 1;
}

void facet_nd_init(struct facet_nd *nd, int nops, const facet_tensor *shape_of)
{
    nd->ndim = shape_of->ndim;
    nd->nops = nops;
    for (int d = 0; d < nd->ndim; d++) nd->sizes[d] = shape_of->sizes[d];
}

void facet_nd_set(struct facet_nd *nd, int k, const facet_tensor *t)
{
    /* right-aligned: missing leading dims and size-1 dims broadcast */
    int lead = nd->ndim - t->ndim;
    for (int d = 0; d < nd->ndim; d++) {
        int td = d - lead;
        nd->strides[k][d] = (td < 0 || t->sizes[td] == 1) ? 0 : t->strides[td];
    }
}

void facet_nd_run(const struct facet_nd *nd, facet_row_fn fn, void *ctx)
{
    int64_t off0[3] = {0, 0, 0}, st0[3] = {0, 0, 0};
    if (nd->ndim == 0) {
        fn(ctx, 1, off0, st0);
        return;
    }
    int last = nd->ndim - 1;
    int64_t inner = nd->sizes[last], rows = 1;
    for (int d = 0; d < last; d++) rows *= nd->sizes[d];
    int64_t total = rows * inner;
    if (total == 0) return;
    int64_t st[3];
    for (int k = 0; k < 3; k++) st[k] = k < nd->nops ? nd->strides[k][last] : 0;
    int threads = total >= FACET_PARALLEL_GRAIN ? facet_threads() : 1;
    /* few long rows: cut each into pieces so every thread gets work */
    int64_t pieces = 1;
    if (rows < threads * 4) {
        pieces = (threads * 4 + rows - 1) / rows;
        if (pieces > inner / 1024) pieces = inner / 1024 > 0 ? inner / 1024 : 1;
    }
    int64_t chunk = (inner + pieces - 1) / pieces;
    int64_t tasks = rows * pieces;
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t r = task / pieces, p = task % pieces;
        int64_t off[3] = {0, 0, 0};
        int64_t rem = r;
        for (int d = last - 1; d >= 0; d--) {
            int64_t i = rem % nd->sizes[d];
            rem /= nd->sizes[d];
            for (int k = 0; k < nd->nops; k++) off[k] += i * nd->strides[k][d];
        }
        int64_t start = p * chunk;
        int64_t n = inner - start < chunk ? inner - start : chunk;
        if (n <= 0) continue;
        for (int k = 0; k < nd->nops; k++) off[k] += start * st[k];
        fn(ctx, n, off, st);
    }
}
