/*
 * index_math.h - row scatter by an index (index_add, index_copy), shared by
 * core/src/index.c and core/cuda/index.cu. Both devices follow one plan,
 * built on the host from the (checked) index values: the source rows
 * grouped by destination row, ascending within a group, so duplicates apply
 * in source order. index_add adds alpha * src into the destination in float
 * (alpha rounded to float once; the product and the sum rounded separately,
 * never an FMA), one group after another source row; index_copy lets the
 * last source row of a group win. No atomics: the result is the same on
 * every run, and the same bits on the CPU and the GPU, equal to a serial
 * loop over the source rows.
 */
#ifndef FACET_INDEX_MATH_H
#define FACET_INDEX_MATH_H

#include <stdint.h>
#include "elementwise_math.h"

/* The plan of a scatter of n source rows into ngroups destination rows:
 * group g covers source rows order[start[g] .. start[g + 1]) and writes
 * destination row row[g]. One int64 buffer holds order (n), start
 * (ngroups + 1) and row (ngroups), in that order. */
struct facet_index_plan {
    int64_t n, ngroups;
    int64_t *order, *start, *row;
};

/* dst = dst + alpha * src, rounded per operation */
FACET_HD float facet_index_add_at(float dst, float alpha, float src)
{
    return facet_add_rn(dst, facet_mul_rn(alpha, src));
}

/* Column c of destination group g: index_add (add != 0) or index_copy. */
FACET_HD void facet_index_scatter_at(float *dst, const float *src, const int64_t *order, const int64_t *start,
                                     const int64_t *row, int64_t g, int64_t cols, int64_t c, int add, float alpha)
{
    float *d = dst + row[g] * cols + c;
    const int64_t lo = start[g], hi = start[g + 1];
    if (!add) {
        *d = src[order[hi - 1] * cols + c];
        return;
    }
    float acc = *d;
    for (int64_t q = lo; q < hi; q++) acc = facet_index_add_at(acc, alpha, src[order[q] * cols + c]);
    *d = acc;
}

#endif
