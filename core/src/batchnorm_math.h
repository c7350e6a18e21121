/*
 * batchnorm_math.h - batch normalisation's per-channel and per-element
 * formulas, shared by core/src/batchnorm.c and core/cuda/batchnorm.cu: the
 * statistics from shifted sums, the saved and running values, the forward
 * affine map and backward's coefficients (from a batch's own sums, or from
 * the sums of every rank for synchronised BN). The sums themselves run in a
 * different order on each device (CPU: sequential vector lanes; GPU: block
 * trees folded in a fixed order), so statistics agree to double rounding, not
 * bit for bit; everything computed from them is rounded one operation at a
 * time (no FMA on the GPU), as the host compiles it.
 */
#ifndef FACET_BATCHNORM_MATH_H
#define FACET_BATCHNORM_MATH_H

#include <math.h>
#include "elementwise_math.h"

/* Mean and biased variance from s = sum(x - shift) and ss = sum((x - shift)^2)
 * over count values; shifting by one of the channel's values keeps a large
 * mean from cancelling in a single pass. */
FACET_HD void facet_bn_moments(double shift, double s, double ss, double count, double *mean, double *var)
{
    const double d = s / count;
    const double v = facet_dadd_rn(ss / count, -facet_dmul_rn(d, d));
    *mean = shift + d;
    *var = v > 0.0 ? v : 0.0;     /* rounding can leave a tiny negative */
}

FACET_HD double facet_bn_invstd(double var, double eps) { return 1.0 / sqrt(var + eps); }

/* running = (1 - momentum) running + momentum batch, the variance unbiased */
FACET_HD void facet_bn_running(float *running_mean, float *running_var, double mean, double var, double count,
                               double momentum)
{
    const double unbiased = facet_dmul_rn(var, count) / (count - 1.0);
    *running_mean = (float)facet_dadd_rn(facet_dmul_rn(1.0 - momentum, (double)*running_mean),
                                         facet_dmul_rn(momentum, mean));
    *running_var = (float)facet_dadd_rn(facet_dmul_rn(1.0 - momentum, (double)*running_var),
                                        facet_dmul_rn(momentum, unbiased));
}

/* Forward: out = (x - mean) k + d, with k = weight invstd and d = bias. */
FACET_HD float facet_bn_scale(const float *weight, int64_t c, double invstd)
{
    return (float)facet_dmul_rn(weight ? (double)weight[c] : 1.0, invstd);
}

FACET_HD float facet_bn_forward_at(float x, float mean, float k, float d)
{
    return facet_madd_rn(x - mean, k, d);
}

/* Backward: dx = ka dy - kb (x - mean) - kd, with ka = w invstd and, in
 * training, kb = w invstd^3 sum(dy (x - mean)) / M and kd = w invstd sum(dy) / M
 * (M = count; sg = sum(dy), sgx = sum(dy (x - mean))); kb = kd = 0 in
 * evaluation. grad_weight += sgx invstd, grad_bias += sg. */
struct facet_bn_coef {
    float ka, kb, kd;
};

FACET_HD struct facet_bn_coef facet_bn_backward_coef(double w, double invstd, double sg, double sgx, double count,
                                                     int training)
{
    struct facet_bn_coef k;
    const double wi = facet_dmul_rn(w, invstd);
    k.ka = (float)wi;
    k.kb = training ? (float)(facet_dmul_rn(facet_dmul_rn(facet_dmul_rn(wi, invstd), invstd), sgx) / count) : 0.0f;
    k.kd = training ? (float)(facet_dmul_rn(wi, sg) / count) : 0.0f;
    return k;
}

FACET_HD float facet_bn_backward_at(struct facet_bn_coef k, float g, float x, float mean)
{
    return facet_add_rn(facet_add_rn(facet_mul_rn(k.ka, g), -facet_mul_rn(k.kb, x - mean)), -k.kd);
}

/* Synchronised BN's training backward over the batches of every rank, from
 * the global sg = sum(dy) and sgh = sum(dy xhat) = invstd sgx over count
 * values: the training coefficients, kb = w invstd^2 sgh / M written with sgh. */
FACET_HD struct facet_bn_coef facet_bn_sync_coef(double w, double invstd, double sg, double sgh, double count)
{
    struct facet_bn_coef k;
    const double wi = facet_dmul_rn(w, invstd);
    k.ka = (float)wi;
    k.kb = (float)(facet_dmul_rn(facet_dmul_rn(wi, invstd), sgh) / count);
    k.kd = (float)(facet_dmul_rn(wi, sg) / count);
    return k;
}

/* evaluation's dx = ka dy */
FACET_HD float facet_bn_backward_eval_at(struct facet_bn_coef k, float g) { return facet_mul_rn(k.ka, g); }

#endif
