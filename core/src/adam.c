/*
 * adam.c - one Adam or AdamW step over a parameter tensor and its moment
 * buffers (the update per element is facet_adam_update in activation_math.h).
 */
#include "internal.h"
#include "activation_math.h"

int facet_adam_step(facet_tensor *param, facet_tensor *grad, facet_tensor *exp_avg, facet_tensor *exp_avg_sq,
                    double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step, int flags)
{
    static const char *fn = "facet_adam_step";
    int rc = facet_check_float_pair(fn, "param", param, "grad", grad);
    if (!rc) rc = facet_check_float_pair(fn, "exp_avg", exp_avg, "param", param);
    if (!rc) rc = facet_check_float_pair(fn, "exp_avg_sq", exp_avg_sq, "param", param);
    if (rc) return rc;
    if (!(lr >= 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0) || !(weight_decay >= 0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0; got %g, %g, %g, "
                          "%g, %g", fn, lr, beta1, beta2, eps, weight_decay);
    if (step < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: step counts from 1, got %lld", fn, (long long)step);
    struct facet_adam_params p = { (float)lr, (float)beta1, (float)beta2, (float)eps, (float)weight_decay,
                                   (float)(1.0 - pow(beta1, (double)step)), (float)(1.0 - pow(beta2, (double)step)),
                                   (flags & FACET_ADAM_FLAG_DECOUPLED) != 0, (flags & FACET_ADAM_FLAG_ZERO_GRAD) != 0 };
    int64_t n = facet_numel(param);
    float *w = facet_ptr(param), *g = facet_ptr(grad), *m = facet_ptr(exp_avg), *v = facet_ptr(exp_avg_sq);
    if (param->device == FACET_DEVICE_CUDA) return facet_cuda_adam_step(&p, w, g, m, v, n);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        w[i] = facet_adam_update(&p, w[i], g[i], &m[i], &v[i]);
        if (p.zero_grad) g[i] = 0.0f;
    }
    return 0;
}
