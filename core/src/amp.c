/*
 * amp.c - the fused step of dynamic loss scaling: every gradient of a list is
 * multiplied by 1/scale in place while one flag records whether any element
 * was NaN or +-inf. One pass over each tensor, and on CUDA one read of the
 * flag for the whole list (amp.cu), instead of a reduction and a host
 * synchronisation per tensor; on CUDA one launch per 48 tensors as well.
 * lua/facet/amp.lua builds the loss scaler on it.
 */
#include "internal.h"
#include "elementwise_math.h"
#include <stdio.h>
#include <stdlib.h>

/* CPU: scale x (n elements of dtype) by inv; nonzero when one was not finite */
static int unscale_cpu(void *x, int dtype, int64_t n, float inv)
{
    int bad = 0;
    if (dtype == FACET_DTYPE_FLOAT32) {
        float *p = x;
        #pragma omp parallel for schedule(static) reduction(|:bad) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) {
            bad |= facet_nonfinite(p[i]);
            p[i] = p[i] * inv;
        }
    } else {
        #pragma omp parallel for schedule(static) reduction(|:bad) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) {
            float v = facet_load_half(x, dtype, i);
            bad |= facet_nonfinite(v);
            facet_store_half(x, dtype, i, v * inv);
        }
    }
    return bad;
}

int facet_amp_unscale(facet_tensor *const *grads, int n, float inv_scale, int *found_nonfinite)
{
    static const char *fn = "facet_amp_unscale";
    if (!found_nonfinite) return facet_fail(FACET_STATUS_ERR_ARG, "%s: found_nonfinite is NULL", fn);
    if (n < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: n is %d, want >= 0", fn, n);
    if (n > 0 && !grads) return facet_fail(FACET_STATUS_ERR_ARG, "%s: grads is NULL", fn);
    if (!(inv_scale > 0.0f) || facet_nonfinite(inv_scale))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: inv_scale must be finite and > 0, got %g", fn, (double)inv_scale);
    /* everything checked before anything is written */
    for (int k = 0; k < n; k++) {
        const facet_tensor *g = grads[k];
        char name[32] = "grads";
        int rc = facet_check_tensor(fn, name, g);
        if (rc) {
            /* the name with its index, formatted only for the message */
            snprintf(name, sizeof name, "grads[%d]", k);
            return facet_check_tensor(fn, name, g);
        }
        bool ok = (g->dtype == FACET_DTYPE_FLOAT32 || facet_dtype_is_half(g->dtype)) && facet_contiguous(g) &&
                  g->device == grads[0]->device;
        if (ok) continue;
        snprintf(name, sizeof name, "grads[%d]", k);
        if (g->dtype != FACET_DTYPE_FLOAT32 && !facet_dtype_is_half(g->dtype))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be float32, float16 or bfloat16, got %s", fn, name,
                              facet_desc(g));
        if (!facet_contiguous(g))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s is not contiguous", fn, name, facet_desc(g));
        if (g->device != grads[0]->device)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s is not on the device of grads[0] %s", fn, name,
                              facet_desc(g), facet_desc(grads[0]));
    }
    if (n > 0 && grads[0]->device == FACET_DEVICE_CUDA) {
        void **ptrs = malloc(sizeof *ptrs * (size_t)n);
        int *dtypes = malloc(sizeof *dtypes * (size_t)n);
        int64_t *counts = malloc(sizeof *counts * (size_t)n);
        int rc;
        if (!ptrs || !dtypes || !counts) {
            rc = facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory for a list of %d tensors", fn, n);
        } else {
            for (int k = 0; k < n; k++) {
                ptrs[k] = facet_ptr(grads[k]);
                dtypes[k] = grads[k]->dtype;
                counts[k] = facet_numel(grads[k]);
            }
            rc = facet_cuda_amp_unscale(ptrs, dtypes, counts, n, inv_scale, found_nonfinite);
        }
        free(ptrs);
        free(dtypes);
        free(counts);
        return rc;
    }
    int bad = 0;
    for (int k = 0; k < n; k++)
        bad |= unscale_cpu(facet_ptr(grads[k]), grads[k]->dtype, facet_numel(grads[k]), inv_scale);
    *found_nonfinite = bad != 0;
    return 0;
}
