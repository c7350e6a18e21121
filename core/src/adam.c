/*
 * adam.c - one Adam or AdamW step over a parameter tensor and its moment
 * buffers (the update per element is facet_adam_update in activation_math.h),
 * and the same step of a list of parameters in one call
 * (facet_adam_step_list: on CUDA one launch per 48 parameters).
 */
#include "internal.h"
#include "activation_math.h"
#include <stdio.h>

/* the settings shared by every parameter of a step */
static int check_settings(const char *fn, double lr, double beta1, double beta2, double eps, double weight_decay,
                          int64_t step)
{
    if (!(lr >= 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0) || !(weight_decay >= 0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0; got %g, %g, %g, "
                          "%g, %g", fn, lr, beta1, beta2, eps, weight_decay);
    if (step < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: step counts from 1, got %lld", fn, (long long)step);
    return 0;
}

/* param, grad and both moments of one parameter */
static int check_param(const char *fn, const facet_tensor *param, const facet_tensor *grad, const facet_tensor *exp_avg,
                       const facet_tensor *exp_avg_sq)
{
    int rc = facet_check_float_pair(fn, "param", param, "grad", grad);
    if (!rc) rc = facet_check_float_pair(fn, "exp_avg", exp_avg, "param", param);
    if (!rc) rc = facet_check_float_pair(fn, "exp_avg_sq", exp_avg_sq, "param", param);
    return rc;
}

static struct facet_adam_params params_of(double lr, double beta1, double beta2, double eps, double weight_decay,
                                          int64_t step, int flags)
{
    struct facet_adam_params p = { (float)lr, (float)beta1, (float)beta2, (float)eps, (float)weight_decay,
                                   (float)(1.0 - pow(beta1, (double)step)), (float)(1.0 - pow(beta2, (double)step)),
                                   (flags & FACET_ADAM_FLAG_DECOUPLED) != 0, (flags & FACET_ADAM_FLAG_ZERO_GRAD) != 0 };
    return p;
}

static void adam_cpu(const struct facet_adam_params *p, float *w, float *g, float *m, float *v, int64_t n)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        w[i] = facet_adam_update(p, w[i], g[i], &m[i], &v[i]);
        if (p->zero_grad) g[i] = 0.0f;
    }
}

int facet_adam_step(facet_tensor *param, facet_tensor *grad, facet_tensor *exp_avg, facet_tensor *exp_avg_sq,
                    double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step, int flags)
{
    static const char *fn = "facet_adam_step";
    int rc = check_param(fn, param, grad, exp_avg, exp_avg_sq);
    if (!rc) rc = check_settings(fn, lr, beta1, beta2, eps, weight_decay, step);
    if (rc) return rc;
    struct facet_adam_params p = params_of(lr, beta1, beta2, eps, weight_decay, step, flags);
    int64_t n = facet_numel(param);
    float *w = facet_ptr(param), *g = facet_ptr(grad), *m = facet_ptr(exp_avg), *v = facet_ptr(exp_avg_sq);
    if (param->device == FACET_DEVICE_CUDA) return facet_cuda_adam_step(&p, w, g, m, v, n);
    adam_cpu(&p, w, g, m, v, n);
    return 0;
}

/* parameters handed to the CUDA backend per call (arrays on the stack): a
 * multiple of tensor_list.cuh's 48 tensors a launch, so no launch runs short */
enum { LIST_BATCH = 240 };

int facet_adam_step_list(facet_tensor *const *params, facet_tensor *const *grads, facet_tensor *const *exp_avgs,
                         facet_tensor *const *exp_avg_sqs, const double *weight_decays, int n, double lr, double beta1,
                         double beta2, double eps, int64_t step, int flags)
{
    static const char *fn = "facet_adam_step_list";
    if (n < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: n is %d, want >= 0", fn, n);
    if (n > 0 && (!params || !grads || !exp_avgs || !exp_avg_sqs || !weight_decays))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: params, grads, exp_avgs, exp_avg_sqs and weight_decays must not be "
                          "NULL", fn);
    int rc = check_settings(fn, lr, beta1, beta2, eps, 0.0, step);
    if (rc) return rc;
    /* everything checked before any parameter is written */
    for (int k = 0; k < n; k++) {
        rc = facet_check_list_param(fn, check_param(fn, params[k], grads[k], exp_avgs[k], exp_avg_sqs[k]), params[k],
                                    params[0], weight_decays[k], k);
        if (rc) return rc;
    }
    struct facet_adam_params p = params_of(lr, beta1, beta2, eps, 0.0, step, flags);
    if (n > 0 && params[0]->device == FACET_DEVICE_CUDA) {
        float *w[LIST_BATCH], *g[LIST_BATCH], *m[LIST_BATCH], *v[LIST_BATCH], wd[LIST_BATCH];
        int64_t numel[LIST_BATCH];
        for (int k0 = 0; k0 < n && !rc; k0 += LIST_BATCH) {
            int cnt = n - k0 < LIST_BATCH ? n - k0 : LIST_BATCH;
            for (int j = 0; j < cnt; j++) {
                w[j] = facet_ptr(params[k0 + j]);
                g[j] = facet_ptr(grads[k0 + j]);
                m[j] = facet_ptr(exp_avgs[k0 + j]);
                v[j] = facet_ptr(exp_avg_sqs[k0 + j]);
                wd[j] = (float)weight_decays[k0 + j];
                numel[j] = facet_numel(params[k0 + j]);
            }
            rc = facet_cuda_adam_step_list(&p, w, g, m, v, wd, numel, cnt);
        }
        return rc;
    }
    for (int k = 0; k < n; k++) {
        p.weight_decay = (float)weight_decays[k];
        adam_cpu(&p, facet_ptr(params[k]), facet_ptr(grads[k]), facet_ptr(exp_avgs[k]), facet_ptr(exp_avg_sqs[k]),
                 facet_numel(params[k]));
    }
    return 0;
}
