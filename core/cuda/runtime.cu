/*
 * runtime.cu - the CUDA runtime seen by the C core: device count (zero, not
 * an error, where there is no driver or no GPU), whether CUDA was built in,
 * device-wide synchronisation, copies between host and device (queued ones
 * from page-locked memory, with the events that say when they are done) and
 * page-locked host memory; device memory is alloc.cu's. Allocation failure is
 * FACET_STATUS_ERR_MEMORY; every other failure is FACET_STATUS_ERR_DEVICE with
 * the runtime's message.
 */
#include "cuda_common.cuh"
#include <cstdio>

extern "C" int facet_cuda_count(int *count)
{
    if (!count) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_count: count is NULL");
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        /* no driver, no device, driver too old: all mean "0 GPUs" */
        (void)cudaGetLastError();
        n = 0;
    }
    *count = n;
    return FACET_STATUS_OK;
}

extern "C" int facet_cuda_name(int device, char *name, size_t size, int64_t *memory)
{
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess)
        return facet_fail(FACET_STATUS_ERR_DEVICE, "facet_cuda_device_name: device %d: %s", device,
                          cudaGetErrorString(e));
    snprintf(name, size, "%s", prop.name);
    *memory = (int64_t)prop.totalGlobalMem;
    return FACET_STATUS_OK;
}

extern "C" int facet_cuda_is_built(void)
{
    return 1;
}

extern "C" int facet_cuda_sync(void)
{
    return check_cuda(cudaDeviceSynchronize(), "facet_cuda_sync");
}

extern "C" int facet_cuda_memcpy(void *dst, const void *src, size_t nbytes, int kind)
{
    cudaMemcpyKind k;
    switch (kind) {
    case FACET_COPY_H2D: k = cudaMemcpyHostToDevice; break;
    case FACET_COPY_D2H: k = cudaMemcpyDeviceToHost; break;
    case FACET_COPY_D2D: k = cudaMemcpyDeviceToDevice; break;
    default: return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_memcpy: unknown copy kind %d", kind);
    }
    if (nbytes == 0) return FACET_STATUS_OK;
    if (!dst || !src) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_memcpy: NULL pointer");
    /* cudaMemcpy orders after earlier kernels on the default stream, and a
     * device-to-host copy returns with the data on the host */
    return check_cuda(cudaMemcpy(dst, src, nbytes, k), "facet_cuda_memcpy");
}

extern "C" int facet_cuda_host_alloc(void **ptr, size_t nbytes)
{
    if (!ptr) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_host_alloc: ptr is NULL");
    *ptr = NULL;
    cudaError_t e = cudaMallocHost(ptr, nbytes ? nbytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *ptr = NULL;
        return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_cuda_host_alloc: %zu bytes: %s", nbytes, cudaGetErrorString(e));
    }
    return FACET_STATUS_OK;
}

extern "C" int facet_cuda_host_free(void *ptr)
{
    if (!ptr) return FACET_STATUS_OK;
    cudaError_t e = cudaFreeHost(ptr);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return facet_fail(FACET_STATUS_ERR_DEVICE, "facet_cuda_host_free: %s", cudaGetErrorString(e));
    }
    return FACET_STATUS_OK;
}

/* Queued on the legacy default stream, so it runs after the kernels queued
 * before it and before those queued after; the host does not wait. Only
 * page-locked sources make it truly asynchronous (copy.c checks that). */
extern "C" int facet_cuda_memcpy_async_h2d(void *dst, const void *src, size_t nbytes)
{
    if (nbytes == 0) return FACET_STATUS_OK;
    if (!dst || !src) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_memcpy_async_h2d: NULL pointer");
    return check_cuda(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, 0), "facet_cuda_memcpy_async_h2d");
}

extern "C" int facet_cuda_event_record(void **event)
{
    if (!event) return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_event_record: event is NULL");
    if (!*event) {
        cudaEvent_t e;
        int rc = check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "facet_cuda_event_record");
        if (rc) return rc;
        *event = (void *)e;
    }
    return check_cuda(cudaEventRecord((cudaEvent_t)*event, 0), "facet_cuda_event_record");
}

extern "C" int facet_cuda_event_wait(void *event)
{
    if (!event) return FACET_STATUS_OK;
    return check_cuda(cudaEventSynchronize((cudaEvent_t)event), "facet_cuda_event_wait");
}

extern "C" void facet_cuda_event_free(void *event)
{
    if (event) (void)cudaEventDestroy((cudaEvent_t)event);
}

extern "C" int facet_cuda_timing_event(void **event)
{
    cudaEvent_t e = NULL;
    *event = NULL;
    int rc = check_cuda(cudaEventCreate(&e), "facet_cuda_mark_init");
    if (!rc) *event = (void *)e;
    return rc;
}

extern "C" int facet_cuda_event_elapsed(void *start, void *end, float *ms)
{
    const char *fn = "facet_cuda_mark_elapsed";
    *ms = 0.0f;
    int rc = check_cuda(cudaEventSynchronize((cudaEvent_t)end), fn);
    if (!rc) rc = check_cuda(cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)end), fn);
    return rc;
}
