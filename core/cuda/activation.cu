/*
 * activation.cu - activations, dropout and Adam on CUDA (the CPU versions are
 * core/src/activation.c), with the per-element math of activation_math.h.
 */
#include "cuda_common.cuh"
#include "activation_math.h"
#include "layer_cuda.h"

static unsigned blocks_for(int64_t n)
{
    int64_t b = (n + 255) / 256;
    return b > 65535 ? 65535u : (unsigned)(b > 0 ? b : 1);
}

static __global__ void act_forward_kernel(float *out, const float *x, int64_t n, int act, const float *slope,
                                          int64_t nslope, int64_t channels, int64_t inner)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float s = slope ? slope[nslope == 1 ? 0 : (i / inner) % channels] : 0.0f;
        out[i] = facet_act_forward(act, x[i], s);
    }
}

static __global__ void act_backward_kernel(float *gx, const float *g, const float *x, const float *y, int64_t n,
                                           int act, const float *slope, int64_t nslope, int64_t channels,
                                           int64_t inner)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float s = slope ? slope[nslope == 1 ? 0 : (i / inner) % channels] : 0.0f;
        gx[i] = facet_act_backward(act, g[i], x[i], y ? y[i] : 0.0f, s);
    }
}

/* dL/dslope: one block per channel, a block reduction over its elements */
static __global__ void prelu_slope_kernel(float *gs, const float *g, const float *x, int64_t outer, int64_t channels,
                                          int64_t inner, int64_t nslope)
{
    __shared__ float part[256];
    const int64_t c = blockIdx.x;
    float acc = 0.0f;
    for (int64_t j = threadIdx.x; j < outer * inner; j += blockDim.x) {
        const int64_t o = j / inner, k = j % inner, idx = (o * channels + c) * inner + k;
        if (x[idx] <= 0.0f) acc += g[idx] * x[idx];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(&gs[nslope == 1 ? 0 : c], part[0]);   /* one add per channel */
}

extern "C" int facet_cuda_activation_forward(float *out, const float *x, int64_t n, int act, const float *slope,
                                             int64_t nslope, int64_t channels, int64_t inner)
{
    if (n <= 0) return FACET_STATUS_OK;
    act_forward_kernel<<<blocks_for(n), 256>>>(out, x, n, act, slope, nslope, channels, inner);
    return check_launch("facet_cuda_activation_forward");
}

extern "C" int facet_cuda_activation_backward(float *grad_x, float *grad_slope, const float *grad_out, const float *x,
                                              const float *out, int64_t n, int act, const float *slope,
                                              int64_t nslope, int64_t channels, int64_t inner)
{
    if (n <= 0) return FACET_STATUS_OK;
    if (grad_x) {
        act_backward_kernel<<<blocks_for(n), 256>>>(grad_x, grad_out, x, out, n, act, slope, nslope, channels, inner);
        int rc = check_launch("facet_cuda_activation_backward");
        if (rc) return rc;
    }
    if (grad_slope) {
        prelu_slope_kernel<<<(unsigned)channels, 256>>>(grad_slope, grad_out, x, n / (channels * inner), channels,
                                                         inner, nslope);
        return check_launch("facet_cuda_activation_backward");
    }
    return FACET_STATUS_OK;
}

static __global__ void dropout_forward_kernel(float *out, unsigned char *mask, const float *x, int64_t n, float p,
                                              float scale, uint64_t seed, uint64_t offset)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const unsigned char keep = facet_dropout_keep(seed, offset + (uint64_t)i, p);
        mask[i] = keep;
        out[i] = keep ? x[i] * scale : 0.0f;
    }
}

static __global__ void dropout_backward_kernel(float *gx, const float *g, const unsigned char *mask, int64_t n,
                                               float scale)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        gx[i] = mask[i] ? g[i] * scale : 0.0f;
}

extern "C" int facet_cuda_dropout_forward(float *out, unsigned char *mask, const float *x, int64_t n, float p,
                                          float scale, uint64_t seed, uint64_t offset)
{
    if (n <= 0) return FACET_STATUS_OK;
    dropout_forward_kernel<<<blocks_for(n), 256>>>(out, mask, x, n, p, scale, seed, offset);
    return check_launch("facet_cuda_dropout_forward");
}

extern "C" int facet_cuda_dropout_backward(float *grad_x, const float *grad_out, const unsigned char *mask, int64_t n,
                                           float scale)
{
    if (n <= 0) return FACET_STATUS_OK;
    dropout_backward_kernel<<<blocks_for(n), 256>>>(grad_x, grad_out, mask, n, scale);
    return check_launch("facet_cuda_dropout_backward");
}

static __global__ void adam_kernel(facet_adam_params p, float *w, float *g, float *m, float *v, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        w[i] = facet_adam_update(&p, w[i], g[i], &m[i], &v[i]);
        if (p.zero_grad) g[i] = 0.0f;
    }
}

extern "C" int facet_cuda_adam_step(const struct facet_adam_params *p, float *w, float *g, float *m, float *v,
                                    int64_t n)
{
    if (n <= 0) return FACET_STATUS_OK;
    adam_kernel<<<blocks_for(n), 256>>>(*p, w, g, m, v, n);
    return check_launch("facet_cuda_adam_step");
}
