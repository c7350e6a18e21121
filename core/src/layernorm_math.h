/*
 * layernorm_math.h - LayerNorm and row softmax per element, shared by the CPU
 * code (core/src/layernorm.c, softmax.c) and the CUDA kernels
 * (core/cuda/layernorm.cu, softmax.cu). Row statistics (mean, variance,
 * maxima, sums) are reduced by each side; these are the formulas applied to
 * one element once a row's statistics are known.
 */
#ifndef FACET_LAYERNORM_MATH_H
#define FACET_LAYERNORM_MATH_H

#include "elementwise_math.h"

/* 1 / sqrt(var + eps) from the biased variance */
FACET_HD float facet_ln_invstd(double var, double eps)
{
    return (float)(1.0 / sqrt(var + eps));
}

/* out = (x - mean) * invstd * w + b (w = 1, b = 0 without affine) */
FACET_HD float facet_ln_out(float x, float mean, float invstd, float w, float b)
{
    return (x - mean) * invstd * w + b;
}

/* dL/dx of one element from gw = grad_out * w, xhat = (x - mean) * invstd
 * and the row means m1 = mean(gw), m2 = mean(gw * xhat) */
FACET_HD float facet_ln_grad_x(float gw, float xhat, float invstd, float m1, float m2)
{
    return invstd * (gw - m1 - xhat * m2);
}

/* exp(x - max): a softmax numerator, summed for the row's denominator */
FACET_HD float facet_softmax_exp(float x, float row_max)
{
    return expf(x - row_max);
}

/* one softmax output from its numerator and 1 / sum exp(x - max) */
FACET_HD float facet_softmax_out(float e, float inv_sum)
{
    return e * inv_sum;
}

/* softmax's dL/dx of one element from its output y, grad_out g and the
 * row's dot = sum(g * y) */
FACET_HD float facet_softmax_grad_x(float g, float y, float dot)
{
    return y * (g - dot);
}

#endif
