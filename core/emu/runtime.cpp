/*
 * runtime.cpp - the CUDA runtime calls of the emulator (docs/cuda-emulator.md):
 * one device, device memory as host memory in a registry, the default
 * stream, copies, events, errors.
 * The stream is a queue: launches, cuBLAS calls, memsets, events and
 * asynchronous copies run when the host waits (cudaDeviceSynchronize, a
 * blocking cudaMemcpy, cudaEventSynchronize up to that event, cudaFree),
 * or when more than 1024 are pending (a GPU's launch queue fills too). So a
 * host read of page-locked memory that an asynchronous copy fills, made
 * without waiting, sees the old bytes, as on a GPU that has not got there;
 * and a page-locked source rewritten before its copy ran is read new. A
 * fault inside queued work is the error of that waiting call, as a GPU's
 * kernel faults are. FACET_EMU_SYNC=1 runs everything when it is queued.
 * What a GPU would reject, or what would read garbage there, is checked:
 * - cudaMalloc memory starts as 0xff bytes (a float32 NaN, an integer -1),
 *   so a kernel that reads what nothing wrote gives NaN, not a lucky zero;
 * - the device has FACET_EMU_MEMORY_MB of memory (default 8192), and an
 *   allocation past it fails as a full GPU does;
 * - a copy's direction must match where its pointers point, and a device
 *   range must lie inside one allocation;
 * - cudaFree takes only what cudaMalloc gave;
 * - device memory lives in one reserved range of addresses that host code
 *   cannot touch: it is readable and writable only while queued work runs
 *   (and while the emulator itself copies), so a host read or write of a
 *   device pointer (a CUDA tensor's data read as if it were on the CPU)
 *   stops the process with a SIGSEGV whose message names the address, as a
 *   GPU's process would crash. Opening and closing costs two mprotect calls
 *   over every page in use at each wait, seconds per spec file once
 *   gigabytes are cached, so the guard is on with FACET_EMU_PROTECT=1 only.
 * FACET_EMU_SMS (default 132, an H100's) is the multiprocessor count the
 * backend sizes its grids by.
 */
#include "emu.h"

#include <deque>
#include <map>
#include <mutex>
#include <vector>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct CUevent_st {
    unsigned flags;
    int recorded;       /* its record has run */
    uint64_t seq;       /* the queue position of its last record, 0: never recorded */
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

/* ---- the device arena: reserved address space, blocks of 256-byte multiples ---- */

const size_t ARENA_BYTES = (size_t)1 << 40;   /* address space only: pages are memory once touched */
const size_t ALIGN = 256;
char *arena;
size_t arena_top;                        /* bytes handed out from the start, free or not */
std::map<size_t, size_t> holes;          /* offset -> size of freed ranges below arena_top */
std::mutex open_lock;
int open_depth;
bool protect_on;
struct sigaction old_segv;

void segv_handler(int sig, siginfo_t *info, void *uctx)
{
    char *a = (char *)info->si_addr;
    if (arena && a >= arena && a < arena + ARENA_BYTES) {
        char msg[200];
        int n = snprintf(msg, sizeof msg,
                         "facet-emu: host code touched device memory at %p (only kernels, copies and cuBLAS may); "
                         "the host stack:\n", (void *)a);
        if (write(2, msg, (size_t)n) < 0) {}
        void *frames[48];
        int k = backtrace(frames, 48);
        backtrace_symbols_fd(frames, k, 2);
    }
    /* the previous handler, or the default action when the access repeats */
    if (old_segv.sa_flags & SA_SIGINFO) {
        if (old_segv.sa_sigaction) {
            old_segv.sa_sigaction(sig, info, uctx);
            return;
        }
    } else if (old_segv.sa_handler != SIG_DFL && old_segv.sa_handler != SIG_IGN) {
        old_segv.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
}

/* the arena, reserved on first use (locked by the caller: mem_lock) */
bool arena_ready(void)
{
    if (arena) return true;
    void *m = mmap(NULL, ARENA_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return false;
    arena = (char *)m;
    const char *v = getenv("FACET_EMU_PROTECT");
    protect_on = v && *v && strcmp(v, "0") != 0;
    if (!protect_on) {
        mprotect(arena, ARENA_BYTES, PROT_READ | PROT_WRITE);
        return true;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    return true;
}

/* makes [arena, arena + top) readable and writable while work runs */
void arena_open(void)
{
    std::lock_guard<std::mutex> hold(open_lock);
    if (open_depth++ == 0 && protect_on && arena_top) mprotect(arena, arena_top, PROT_READ | PROT_WRITE);
}

void arena_close(void)
{
    std::lock_guard<std::mutex> hold(open_lock);
    if (--open_depth == 0 && protect_on && arena_top) mprotect(arena, arena_top, PROT_NONE);
}

struct arena_scope {
    arena_scope() { arena_open(); }
    ~arena_scope() { arena_close(); }
};

/* a block of size bytes (a multiple of ALIGN), first fit (locked: mem_lock) */
char *arena_take(size_t size)
{
    for (auto it = holes.begin(); it != holes.end(); ++it) {
        if (it->second < size) continue;
        size_t off = it->first, rest = it->second - size;
        holes.erase(it);
        if (rest) holes[off + size] = rest;
        return arena + off;
    }
    if (size > ARENA_BYTES - arena_top) return NULL;
    char *p = arena + arena_top;
    std::lock_guard<std::mutex> hold(open_lock);
    arena_top += size;
    /* a new range is open if work is running, closed otherwise */
    mprotect(p, size, protect_on && open_depth == 0 ? PROT_NONE : PROT_READ | PROT_WRITE);
    return p;
}

/* gives a block back: merged with the holes beside it; whole pages go back to the kernel */
void arena_give(char *p, size_t size)
{
    size_t off = (size_t)(p - arena);
    auto next = holes.lower_bound(off);
    if (next != holes.end() && next->first == off + size) {
        size += next->second;
        holes.erase(next);
    }
    auto prev = holes.lower_bound(off);
    if (prev != holes.begin()) {
        --prev;
        if (prev->first + prev->second == off) {
            off = prev->first;
            size += prev->second;
            holes.erase(prev);
        }
    }
    holes[off] = size;
    uintptr_t lo = ((uintptr_t)(arena + off) + 4095) & ~(uintptr_t)4095, hi = (uintptr_t)(arena + off + size) & ~(uintptr_t)4095;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

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

/* ---- the default stream ---- */

struct op {
    uint64_t seq;
    std::function<int(void)> run;   /* 0, or 1 after a fault */
};

std::recursive_mutex queue_lock;
std::deque<op> queue;
uint64_t queued_seq, done_seq;
bool pending_fault;
char pending_msg[1024];
const size_t QUEUE_MAX = 1024;

bool sync_mode(void)
{
    static int mode = -1;
    if (mode < 0) {
        const char *v = getenv("FACET_EMU_SYNC");
        mode = v && *v && strcmp(v, "0") != 0;
    }
    return mode == 1;
}

/* runs queued work up to and including seq */
void drain(uint64_t seq)
{
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    if (queue.empty() || queue.front().seq > seq) return;
    arena_scope open;
    while (!queue.empty() && queue.front().seq <= seq) {
        op o = std::move(queue.front());
        queue.pop_front();
        if (o.run() && !pending_fault) {
            pending_fault = true;
            snprintf(pending_msg, sizeof pending_msg, "%s", fault_message());
        }
        done_seq = o.seq;
    }
}

/* what a waiting call returns: the first fault of the work it waited for */
cudaError_t wait_for(uint64_t seq)
{
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    drain(seq);
    if (!pending_fault) return cudaSuccess;
    pending_fault = false;
    set_error(cudaErrorLaunchFailure, pending_msg);
    return cudaErrorLaunchFailure;
}

cudaError_t wait_all(void) { return wait_for(UINT64_MAX); }

}   /* namespace */

void enqueue(std::function<int(void)> run)
{
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    queue.push_back(op{++queued_seq, std::move(run)});
    if (sync_mode()) {
        /* the fault is the launch's own error */
        drain(queued_seq);
        if (pending_fault) {
            pending_fault = false;
            set_error(cudaErrorLaunchFailure, pending_msg);
        }
    } else if (queue.size() > QUEUE_MAX) {
        drain(queue[queue.size() - QUEUE_MAX / 2].seq);
    }
}

cudaError_t symbol_copy(void *symbol, const void *src, size_t n)
{
    std::vector<char> bytes((const char *)src, (const char *)src + n);
    enqueue([=]() {
        memcpy(symbol, bytes.data(), n);
        return 0;
    });
    return cudaSuccess;
}

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

cudaError_t cudaDeviceSynchronize(void) { return wait_all(); }

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
    std::lock_guard<std::mutex> hold(mem_lock);
    /* 256-byte aligned, as cudaMalloc's */
    char *m = arena_ready() ? arena_take((size + ALIGN - 1) & ~(ALIGN - 1)) : NULL;
    if (!m) {
        device_bytes -= size;
        set_error(cudaErrorMemoryAllocation, "");
        return cudaErrorMemoryAllocation;
    }
    {
        arena_scope open;
        memset(m, 0xff, size);
    }
    blocks[(uintptr_t)m] = block_info{size, false};
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    /* cudaFree waits for the device: nothing queued may still use p */
    cudaError_t pending = wait_all();
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        auto it = blocks.find((uintptr_t)p);
        if (it != blocks.end() && !it->second.pinned) {
            device_bytes -= it->second.size;
            arena_give((char *)p, (it->second.size + ALIGN - 1) & ~(ALIGN - 1));
            blocks.erase(it);
            return pending;
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
    cudaError_t pending = wait_all();
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        auto it = blocks.find((uintptr_t)p);
        if (it != blocks.end() && it->second.pinned) {
            blocks.erase(it);
            free(p);
            return pending;
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

namespace {

/* the copy's pointers lie where its kind says; otherwise the error */
cudaError_t check_copy(const char *fn, void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    bool dst_dev = device_range(dst, n), src_dev = device_range(src, n);
    bool ok;
    switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !is_device_pointer(src); break;
    case cudaMemcpyDeviceToHost: ok = src_dev && !is_device_pointer(dst); break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    case cudaMemcpyHostToHost: ok = !is_device_pointer(dst) && !is_device_pointer(src); break;
    default: ok = false; break;
    }
    if (ok) return cudaSuccess;
    return fail(cudaErrorInvalidValue, "%s %s of %zu bytes: dst %p is %s, src %p is %s", fn, kind_name(kind), n, dst,
                dst_dev ? "device memory" : is_device_pointer(dst) ? "past the end of its device block" : "host memory",
                src,
                src_dev ? "device memory" : is_device_pointer(src) ? "past the end of its device block" : "host memory");
}

bool pinned(const void *p, size_t n) { return range_in(p, n, true); }

}   /* namespace */

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    if (n == 0) return cudaSuccess;
    cudaError_t e = check_copy("cudaMemcpy", dst, src, n, kind);
    if (e) return e;
    /* in order after everything queued; the host waits for the copy */
    e = wait_all();
    arena_scope open;
    memmove(dst, src, n);
    return e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    (void)s;
    if (n == 0) return cudaSuccess;
    cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, n, kind);
    if (e) return e;
    if (kind == cudaMemcpyDeviceToHost && !pinned(dst, n)) {
        /* into pageable memory the copy is synchronous */
        e = wait_all();
        arena_scope open;
        memmove(dst, src, n);
        return e;
    }
    if (kind == cudaMemcpyHostToDevice && !pinned(src, n)) {
        /* from pageable memory the source is staged before the call returns */
        std::vector<char> bytes((const char *)src, (const char *)src + n);
        enqueue([=]() {
            memcpy(dst, bytes.data(), n);
            return 0;
        });
        return cudaSuccess;
    }
    /* page-locked host memory and device memory are read and written when the copy runs */
    enqueue([=]() {
        memmove(dst, src, n);
        return 0;
    });
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s)
{
    (void)s;
    if (n == 0) return cudaSuccess;
    if (!device_range(p, n)) return fail(cudaErrorInvalidValue, "cudaMemsetAsync(%p, %zu bytes): not inside device memory", p, n);
    enqueue([=]() {
        memset(p, value, n);
        return 0;
    });
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    *e = new CUevent_st{flags, 0, 0, 0.0};
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    if (!e) return cudaSuccess;
    /* a record still queued writes the event: let it run first */
    wait_for(e->seq);
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    (void)s;
    if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: NULL event");
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    e->recorded = 0;
    e->seq = queued_seq + 1;
    enqueue([=]() {
        e->recorded = 1;
        e->ms = now_ms();
        return 0;
    });
    return cudaSuccess;
}

/* The emulated device makes progress only when the host waits: a query
 * runs the work before the event, then finds it done. */
cudaError_t cudaEventQuery(cudaEvent_t e)
{
    if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventQuery: NULL event");
    return wait_for(e->seq);
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: NULL event");
    return wait_for(e->seq);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!start || !end) return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: NULL event");
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event made with cudaEventDisableTiming");
    if (!start->seq || !end->seq)
        return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event never recorded");
    if (!start->recorded || !end->recorded) return cudaErrorNotReady;   /* as a GPU: not waited for */
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}
