/*
 * sgd_math.h - the per-element SGD update shared by core/src/sgd.c and
 * core/cuda/sgd.cu, rounded one operation at a time (no FMA on the GPU), so
 * both devices compute the same bits.
 */
#ifndef FACET_SGD_MATH_H
#define FACET_SGD_MATH_H

#include "elementwise_math.h"

struct facet_sgd_params {
    float lr, momentum, dampening, weight_decay;
    int nesterov, first, zero_grad;
};

/* Updates one element; returns the new parameter value. */
FACET_HD float facet_sgd_update(const struct facet_sgd_params *p, float w, float g, float *buf)
{
    g = facet_madd_rn(p->weight_decay, w, g);
    if (buf) {
        float b = p->first ? g : facet_add_rn(facet_mul_rn(p->momentum, *buf), facet_mul_rn(1.0f - p->dampening, g));
        *buf = b;
        g = p->nesterov ? facet_madd_rn(p->momentum, b, g) : b;
    }
    return facet_add_rn(w, -facet_mul_rn(p->lr, g));
}

/* The update with the row's gradient correction a w added first (a = 0 without one). */
FACET_HD float facet_sgd_update_row(const struct facet_sgd_params *p, float w, float g, float a, float *buf)
{
    return facet_sgd_update(p, w, facet_madd_rn(a, w, g), buf);
}

#endif
