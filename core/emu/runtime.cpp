/*
 * runtime.cpp - the CUDA runtime calls of the emulator (docs/cuda-emulator.md):
 * one device, device memory as host memory in a registry, copies, events,
 * errors. Work runs when it is queued, so every call is synchronous. What
 * a GPU would reject, or what would read garbage there, is checked:
 * - cudaMalloc memory starts as 0xff bytes (a float32 NaN, an integer -1),
 *   so a kernel that reads what nothing wrote gives NaN, not a lucky zero;
 * - the device has FACET_EMU_MEMORY_MB of memory (default 8192), and an
 *   allocation past it fails as a full GPU does;
 * - a copy's direction must match where its pointers point, and a device
 *   range must lie inside one allocation;
 * - cudaFree takes only what cudaMalloc gave.
 * FACET_EMU_SMS (default 132, an H100's) is the multiprocessor count the
 * backend sizes its grids by.
 */
#include "emu.h"

#include <map>
#include <mutex>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct CUevent_st {
    unsigned flags;
    int recorded;
    double ms;
};

namespace facet_emu {

namespace {

struct block_info {
    size_t size;
    bool pinned;
};

std::mutex mem_lock;
std::map<uintptr_t, block_info> blocks;   /* by base address: device and page-locked host memory */
size_t device_bytes;
thread_local cudaError_t last_error = cudaSuccess;
thread_local char last_detail[1024];
thread_local char message[1400];

size_t env_size(const char *name, size_t fallback)
{
    const char *v = getenv(name);
    if (!v || !*v) return fallback;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    return *end || x == 0 ? fallback : (size_t)x;
}

size_t memory_limit(void) { return env_size("FACET_EMU_MEMORY_MB", 8192) << 20; }

/* the block holding p (locked by the caller), or blocks.end() */
std::map<uintptr_t, block_info>::iterator find_block(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    auto it = blocks.upper_bound(a);
    if (it == blocks.begin()) return blocks.end();
    --it;
    if (a > it->first + it->second.size) return blocks.end();
    return it;
}

int range_in(const void *p, size_t n, bool pinned)
{
    if (!p) return 0;
    std::lock_guard<std::mutex> hold(mem_lock);
    auto it = find_block(p);
    if (it == blocks.end() || it->second.pinned != pinned) return 0;
    return (uintptr_t)p + n <= it->first + it->second.size;
}

cudaError_t fail(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cudaError_t fail(cudaError_t e, const char *fmt, ...)
{
    char detail[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    fprintf(stderr, "facet-emu: %s\n", detail);
    set_error(e, detail);
    return e;
}

const char *kind_name(cudaMemcpyKind k)
{
    switch (k) {
    case cudaMemcpyHostToHost: return "host to host";
    case cudaMemcpyHostToDevice: return "host to device";
    case cudaMemcpyDeviceToHost: return "device to host";
    case cudaMemcpyDeviceToDevice: return "device to device";
    default: return "default";
    }
}

double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

}   /* namespace */

int device_range(const void *p, size_t n) { return range_in(p, n, false); }

int is_device_pointer(const void *p) { return !p || device_range(p, 0); }

void set_error(cudaError_t e, const char *detail)
{
    last_error = e;
    snprintf(last_detail, sizeof last_detail, "%s", detail ? detail : "");
}

}   /* namespace facet_emu */

using namespace facet_emu;

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
    if (device != 0) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties: device %d (the emulator has 1)", device);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "facet CUDA emulator (CPU)");
    prop->totalGlobalMem = memory_limit();
    prop->multiProcessorCount = (int)env_size("FACET_EMU_SMS", 132);
    prop->major = 9;
    prop->minor = 0;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device)
{
    if (device != 0) return fail(cudaErrorInvalidDevice, "cudaDeviceGetAttribute: device %d", device);
    if (attr != cudaDevAttrMultiProcessorCount) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d", (int)attr);
    *value = (int)env_size("FACET_EMU_SMS", 132);
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t e)
{
    const char *s;
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: s = "invalid argument"; break;
    case cudaErrorMemoryAllocation: s = "out of memory"; break;
    case cudaErrorInvalidConfiguration: s = "invalid configuration argument"; break;
    case cudaErrorInvalidSymbol: s = "invalid device symbol"; break;
    case cudaErrorInvalidDevice: s = "invalid device ordinal"; break;
    case cudaErrorInvalidResourceHandle: s = "invalid resource handle"; break;
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: s = "an illegal memory access was encountered"; break;
    case cudaErrorLaunchFailure: s = "unspecified launch failure"; break;
    default: s = "unknown error"; break;
    }
    if (!last_detail[0]) return s;
    snprintf(message, sizeof message, "%s (emulator: %s)", s, last_detail);
    return message;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = NULL;
    size_t size = n ? n : 1;
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        if (size > memory_limit() - device_bytes) {
            set_error(cudaErrorMemoryAllocation, "");
            return cudaErrorMemoryAllocation;
        }
        device_bytes += size;
    }
    /* 256-byte aligned, as cudaMalloc's */
    void *m = aligned_alloc(256, (size + 255) & ~(size_t)255);
    std::lock_guard<std::mutex> hold(mem_lock);
    if (!m) {
        device_bytes -= size;
        set_error(cudaErrorMemoryAllocation, "");
        return cudaErrorMemoryAllocation;
    }
    memset(m, 0xff, size);
    blocks[(uintptr_t)m] = block_info{size, false};
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        auto it = blocks.find((uintptr_t)p);
        if (it != blocks.end() && !it->second.pinned) {
            device_bytes -= it->second.size;
            blocks.erase(it);
            free(p);
            return cudaSuccess;
        }
    }
    return fail(cudaErrorInvalidValue, "cudaFree(%p): not a block from cudaMalloc", p);
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    *p = NULL;
    size_t size = n ? n : 1;
    void *m = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    if (!m) {
        set_error(cudaErrorMemoryAllocation, "");
        return cudaErrorMemoryAllocation;
    }
    std::lock_guard<std::mutex> hold(mem_lock);
    blocks[(uintptr_t)m] = block_info{size, true};
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p)
{
    if (!p) return cudaSuccess;
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        auto it = blocks.find((uintptr_t)p);
        if (it != blocks.end() && it->second.pinned) {
            blocks.erase(it);
            free(p);
            return cudaSuccess;
        }
    }
    return fail(cudaErrorInvalidValue, "cudaFreeHost(%p): not a block from cudaMallocHost", p);
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    std::lock_guard<std::mutex> hold(mem_lock);
    *total_b = memory_limit();
    *free_b = *total_b > device_bytes ? *total_b - device_bytes : 0;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    if (n == 0) return cudaSuccess;
    bool dst_dev = device_range(dst, n), src_dev = device_range(src, n);
    bool ok;
    switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !is_device_pointer(src); break;
    case cudaMemcpyDeviceToHost: ok = src_dev && !is_device_pointer(dst); break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    case cudaMemcpyHostToHost: ok = !is_device_pointer(dst) && !is_device_pointer(src); break;
    default: ok = true; break;
    }
    if (!ok)
        return fail(cudaErrorInvalidValue,
                    "cudaMemcpy %s of %zu bytes: dst %p is %s, src %p is %s", kind_name(kind), n, dst,
                    dst_dev ? "device memory" : is_device_pointer(dst) ? "past the end of its device block" : "host memory",
                    src,
                    src_dev ? "device memory" : is_device_pointer(src) ? "past the end of its device block" : "host memory");
    memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    (void)s;
    return cudaMemcpy(dst, src, n, kind);
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s)
{
    (void)s;
    if (n == 0) return cudaSuccess;
    if (!device_range(p, n)) return fail(cudaErrorInvalidValue, "cudaMemsetAsync(%p, %zu bytes): not inside device memory", p, n);
    memset(p, value, n);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    *e = new CUevent_st{flags, 0, 0.0};
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    (void)s;
    if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: NULL event");
    e->recorded = 1;
    e->ms = now_ms();
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e)
{
    if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventQuery: NULL event");
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: NULL event");
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!start || !end) return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: NULL event");
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event made with cudaEventDisableTiming");
    if (!start->recorded || !end->recorded)
        return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event never recorded");
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}
