/*
 * reduce_math.h - the accumulator of the reductions (sum, mean, sum of
 * squares, max, min, argmax, argmin), shared by core/src/reduce.c and
 * core/cuda/reduce.cu. Every op folds into one (double value, index) pair:
 * sums add in double; max/min keep the extreme value and its index, where
 * NaN counts as more extreme than any number and ties go to the lower index.
 * Merging is then order-free for max/min: any grouping of partials (CPU
 * threads, GPU blocks and chunks) equals a sequential left-to-right scan
 * (first extreme, first NaN). Sums round in the order of their grouping, so
 * they agree across devices to double rounding, before the final float.
 */
#ifndef FACET_REDUCE_MATH_H
#define FACET_REDUCE_MATH_H

#include <math.h>
#include <stdint.h>
#include "elementwise_math.h"

struct facet_racc {
    double v;
    int64_t i;              /* FACET_RACC_NONE: no element seen yet */
};

#define FACET_RACC_NONE INT64_MAX

FACET_HD int facet_racc_is_max(int op) { return op == FACET_REDUCE_MAX || op == FACET_REDUCE_ARGMAX; }
FACET_HD int facet_racc_is_min(int op) { return op == FACET_REDUCE_MIN || op == FACET_REDUCE_ARGMIN; }

FACET_HD struct facet_racc facet_racc_init(int op)
{
    struct facet_racc a;
    a.i = FACET_RACC_NONE;
    if (facet_racc_is_max(op)) a.v = -(double)INFINITY;
    else if (facet_racc_is_min(op)) a.v = (double)INFINITY;
    else a.v = 0.0;
    return a;
}

/* Does b beat a? NaN beats numbers, a NaN tie or an equal value goes to the
 * lower index; `greater` picks max (1) or min (0). */
FACET_HD int facet_racc_beats(struct facet_racc b, struct facet_racc a, int greater)
{
    const int an = a.v != a.v, bn = b.v != b.v;
    if (an || bn) return bn && (!an || b.i < a.i);
    if (b.v == a.v) return b.i < a.i;
    return greater ? b.v > a.v : b.v < a.v;
}

FACET_HD struct facet_racc facet_racc_merge(int op, struct facet_racc a, struct facet_racc b)
{
    if (facet_racc_is_max(op)) return facet_racc_beats(b, a, 1) ? b : a;
    if (facet_racc_is_min(op)) return facet_racc_beats(b, a, 0) ? b : a;
    a.v += b.v;
    return a;
}

/* Folds element x (at index j along the reduced dim) into a. */
FACET_HD struct facet_racc facet_racc_add(int op, struct facet_racc a, float x, int64_t j)
{
    if (op == FACET_REDUCE_SUM || op == FACET_REDUCE_MEAN) {
        a.v += (double)x;
        return a;
    }
    if (op == FACET_REDUCE_SUMSQ) {
        a.v = facet_dadd_rn(a.v, facet_dmul_rn((double)x, (double)x));
        return a;
    }
    struct facet_racc e;
    e.v = (double)x;
    e.i = j;
    return facet_racc_merge(op, a, e);
}

/* The result of output o over n elements: float32, or int64 counted from
 * index_base for the arg ops (n == 0 gives index_base; a mean of nothing NaN). */
FACET_HD void facet_racc_store(void *out, int op, int64_t o, struct facet_racc a, int64_t n, int index_base)
{
    if (op == FACET_REDUCE_ARGMAX || op == FACET_REDUCE_ARGMIN)
        ((int64_t *)out)[o] = (a.i == FACET_RACC_NONE ? 0 : a.i) + index_base;
    else if (op == FACET_REDUCE_MEAN)
        ((float *)out)[o] = (float)(a.v / (double)n);
    else
        ((float *)out)[o] = (float)a.v;
}

#endif
