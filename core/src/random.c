/*
 * random.c - seeded uniform and normal fills from the counter-based Philox
 * generator in random_math.h; element i depends only on (seed, offset + i),
 * so results do not depend on threads or device.
 */
#include "internal.h"
#include "random_math.h"

static int rand_fill(const char *fn, facet_tensor *t, uint64_t seed, uint64_t offset, int normal, float a, float b)
{
    int rc = facet_check_dtype(fn, "t", t, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    if (!facet_contiguous(t)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s is not contiguous", fn, facet_desc(t));
    if (!(a == a) || !(b == b)) return facet_fail(FACET_STATUS_ERR_NUMERIC, "%s: NaN parameter", fn);
    int64_t n = facet_numel(t);
    float *d = facet_ptr(t);
    if (t->device == FACET_DEVICE_CUDA) return facet_cuda_rand(d, n, seed, offset, normal, a, b);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN / 8)
    for (int64_t i = 0; i < n; i++)
        d[i] = normal ? facet_rand_normal_at(seed, offset + (uint64_t)i, a, b)
                      : facet_rand_uniform_at(seed, offset + (uint64_t)i, a, b);
    return 0;
}

int facet_tensor_rand_uniform(facet_tensor *t, uint64_t seed, uint64_t offset, float low, float high)
{
    return rand_fill("facet_tensor_rand_uniform", t, seed, offset, 0, low, high);
}

int facet_tensor_rand_normal(facet_tensor *t, uint64_t seed, uint64_t offset, float mean, float std)
{
    if (std < 0) return facet_fail(FACET_STATUS_ERR_ARG, "facet_tensor_rand_normal: std %g is negative", (double)std);
    return rand_fill("facet_tensor_rand_normal", t, seed, offset, 1, mean, std);
}
