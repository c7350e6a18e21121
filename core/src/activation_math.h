/*
 * activation_math.h - activations, dropout and Adam per element, shared by
 * the CPU code (core/src/activation.c, dropout.c, adam.c) and the CUDA kernels
 * (core/cuda/activation.cu, dropout.cu, adam.cu). Adam's update is rounded
 * one operation at a time (no FMA on the GPU), so both devices compute the
 * same bits; sigmoid and tanh use each side's expf / tanhf.
 */
#ifndef FACET_ACTIVATION_MATH_H
#define FACET_ACTIVATION_MATH_H

#include "elementwise_math.h"
#include "random_math.h"

FACET_HD float facet_act_forward(int act, float x, float slope)
{
    switch (act) {
    case FACET_ACTIVATION_RELU: return x <= 0.0f ? 0.0f : x;    /* NaN passes, as in PyTorch */
    case FACET_ACTIVATION_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case FACET_ACTIVATION_TANH: return tanhf(x);
    case FACET_ACTIVATION_PRELU: return x > 0.0f ? x : slope * x;
    case FACET_ACTIVATION_RELU6: return x <= 0.0f ? 0.0f : (x >= 6.0f ? 6.0f : x);   /* NaN passes */
    default: return x;
    }
}

/* dL/dx from dL/dout, the input x and the output y */
FACET_HD float facet_act_backward(int act, float g, float x, float y, float slope)
{
    switch (act) {
    case FACET_ACTIVATION_RELU: return x > 0.0f ? g : 0.0f;
    case FACET_ACTIVATION_SIGMOID: return g * y * (1.0f - y);
    case FACET_ACTIVATION_TANH: return g * (1.0f - y * y);
    case FACET_ACTIVATION_PRELU: return x > 0.0f ? g : slope * g;
    case FACET_ACTIVATION_RELU6: return x <= 0.0f || x >= 6.0f ? 0.0f : g;  /* PyTorch's hardtanh_backward: NaN passes g */
    default: return g;
    }
}

/* element i's term of PReLU's slope gradient dL/dslope = sum of g * x over
 * the inputs x <= 0 (NaN adds nothing): both operands loaded, then selected */
FACET_HD float facet_prelu_slope_term(float g, float x)
{
    return x <= 0.0f ? g * x : 0.0f;
}

/* element i of a dropout mask: kept (1) with probability 1 - p */
FACET_HD unsigned char facet_dropout_keep(uint64_t seed, uint64_t counter, float p)
{
    uint32_t w0, w1;
    facet_philox_pair(seed, counter, &w0, &w1);
    return facet_uniform01(w0) >= p ? 1 : 0;
}

struct facet_adam_params {
    float lr, beta1, beta2, eps, weight_decay, bias1, bias2;  /* bias_k = 1 - beta_k^step */
    int decoupled, zero_grad;
};

FACET_HD float facet_adam_update(const struct facet_adam_params *p, float w, float g, float *m, float *v)
{
    if (p->decoupled) w = facet_add_rn(w, -facet_mul_rn(facet_mul_rn(p->lr, p->weight_decay), w));
    else g = facet_madd_rn(p->weight_decay, w, g);
    float mm = facet_add_rn(facet_mul_rn(p->beta1, *m), facet_mul_rn(1.0f - p->beta1, g));
    float vv = facet_add_rn(facet_mul_rn(p->beta2, *v), facet_mul_rn(facet_mul_rn(1.0f - p->beta2, g), g));
    *m = mm;
    *v = vv;
    float mhat = mm / p->bias1, vhat = vv / p->bias2;
    return facet_add_rn(w, -(facet_mul_rn(p->lr, mhat) / (sqrtf(vhat) + p->eps)));
}

#endif
