/*
 * sgd_math.h - the per-element SGD update shared by core/src/sgd.c and
 * core/cuda/sgd.cu.
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
    g += p->weight_decay * w;
    if (buf) {
        float b = p->first ? g : p->momentum * *buf + (1.0f - p->dampening) * g;
        *buf = b;
        g = p->nesterov ? g + p->momentum * b : b;
    }
    return w - p->lr * g;
}

#endif
