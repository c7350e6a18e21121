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
 * kernel faults are, and it loses the context: every later call that needs
 * the device fails with it (a GPU's illegal address is sticky too).
 * FACET_EMU_SYNC=1 runs everything when it is queued. The calls follow the
 * runtime API's rules where facet could come to depend on a difference
 * (docs/cuda-emulator.md, "The runtime API, call by call"): cudaEventQuery
 * can say cudaErrorNotReady, a device-to-device cudaMemcpy does not wait,
 * cudaMalloc(0) is NULL, the default stream is the only one.
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
#include <string>
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
    int queued;         /* records queued and not run yet */
    bool destroyed;     /* cudaEventDestroy came first: the last queued record frees it */
};

namespace facet_emu {

namespace {

struct block_info {
    size_t size;
    bool pinned;
    int uses;           /* page-locked: queued copies that read or write it */
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

/* A host access to device memory: says so, then dies of SIGSEGV by the
 * default action, with or without a sanitizer's handler installed before
 * ours (that one would report a plain SEGV and exit with its own status).
 * Any other SIGSEGV is not ours: the previous action is put back and the
 * access repeats under it, as if this handler had never been installed (a
 * signal sent by kill() does not repeat: it is raised again). */
void segv_handler(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    char *a = (char *)info->si_addr;
    if (info->si_code > 0 && arena && a >= arena && a < arena + ARENA_BYTES) {
        char msg[200];
        int n = snprintf(msg, sizeof msg,
                         "facet-emu: host code touched device memory at %p (only kernels, copies and cuBLAS may); "
                         "the host stack:\n", (void *)a);
        if (write(2, msg, (size_t)n) < 0) {}
        void *frames[48];
        int k = backtrace(frames, 48);
        backtrace_symbols_fd(frames, k, 2);
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(SIGSEGV, &dfl, NULL);
        return;     /* the access repeats and the default action ends the process */
    }
    sigaction(SIGSEGV, &old_segv, NULL);
    if (info->si_code <= 0) raise(sig);     /* blocked in this handler: delivered on return */
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
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;   /* a thread's alternate stack (a sanitizer's), if it has one */
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

/* counts a queued copy in or out of the page-locked block holding p (none: nothing) */
void pinned_uses(const void *p, int delta)
{
    if (!p) return;
    std::lock_guard<std::mutex> hold(mem_lock);
    auto it = find_block(p);
    if (it != blocks.end() && it->second.pinned) it->second.uses += delta;
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
const size_t QUEUE_MAX = 1024;

/* A fault in device work loses the context, as on a GPU (cudaErrorLaunchFailure,
 * cudaErrorIllegalAddress: "any further CUDA work will return the same
 * error"): from then on every call that needs the device returns it, nothing
 * queued runs, and cudaGetLastError keeps returning it. Only a new process
 * (here: reset_context, for the emulator's own tests) recovers. (queue_lock) */
cudaError_t lost_error = cudaSuccess;
char lost_msg[1024];

bool sync_mode(void)
{
    static int mode = -1;
    if (mode < 0) {
        const char *v = getenv("FACET_EMU_SYNC");
        mode = v && *v && strcmp(v, "0") != 0;
    }
    return mode == 1;
}

/* CUDA_VISIBLE_DEVICES is read once, when the driver starts (a process's
 * first runtime call); a later change has no effect on a GPU host, so a rank
 * that sets it after touching CUDA keeps every GPU and uses the first. The
 * emulator notes the value at its first call and says so, once, when it
 * differs later (facet.dist.init sets it for each local rank). */
static std::mutex visible_lock;
static bool visible_started, visible_had;
static std::string visible_first;

void visible_devices_check(void)
{
    static bool warned;
    std::lock_guard<std::mutex> hold(visible_lock);
    bool &started = visible_started, &had = visible_had;
    std::string &first = visible_first;
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (!started) {
        started = true;
        had = v != NULL;
        if (v) first = v;
        return;
    }
    if (warned || (had == (v != NULL) && (!v || first == v))) return;
    warned = true;
    fprintf(stderr,
            "facet-emu: CUDA_VISIBLE_DEVICES is now \"%s\", but was %s%s%s when CUDA started (the first runtime call): "
            "a GPU process keeps the devices it saw then, so the change has no effect there\n",
            v ? v : "(unset)", had ? "\"" : "", had ? first.c_str() : "unset", had ? "\"" : "");
}

}   /* namespace */

/* the GPU this process uses: the first entry of CUDA_VISIBLE_DEVICES as it was
 * when CUDA started (a GPU process keeps what it saw then), "0" when unset */
std::string process_device(void)
{
    visible_devices_check();
    std::lock_guard<std::mutex> hold(visible_lock);
    std::string v = visible_had ? visible_first : "0";
    return v.substr(0, v.find(','));
}

namespace {

/* the context is lost (locked: queue_lock): the queued work is dropped */
void lose(cudaError_t e, const char *why)
{
    if (lost_error) return;
    lost_error = e;
    snprintf(lost_msg, sizeof lost_msg, "%s", why);
    fprintf(stderr, "facet-emu: the device context is lost: every later CUDA call fails, as on a GPU\n");
    queue.clear();
}

/* runs queued work up to and including seq; a fault loses the context */
void drain(uint64_t seq)
{
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    if (queue.empty() || queue.front().seq > seq) return;
    arena_scope open;
    while (!queue.empty() && queue.front().seq <= seq) {
        op o = std::move(queue.front());
        queue.pop_front();
        done_seq = o.seq;
        if (o.run()) lose(cudaErrorLaunchFailure, fault_message());
    }
}

/* the error of a call that needs the device once the context is lost (also its last error), else cudaSuccess */
cudaError_t lost(void)
{
    visible_devices_check();
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    if (lost_error) set_error(lost_error, lost_msg);
    return lost_error;
}

/* what a waiting call returns: a fault of the work it waited for, or of any before */
cudaError_t wait_for(uint64_t seq)
{
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    drain(seq);
    return lost();
}

cudaError_t wait_all(void) { return wait_for(UINT64_MAX); }

/* the emulator has the legacy default stream only */
cudaError_t check_stream(const char *fn, cudaStream_t s)
{
    if (!s) return cudaSuccess;
    return fail(cudaErrorInvalidResourceHandle, "%s: stream %p (the emulator has the default stream only)", fn, (void *)s);
}

}   /* namespace */

void enqueue(std::function<int(void)> run)
{
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    if (lost(), lost_error) return;     /* nothing runs on a lost context */
    queue.push_back(op{++queued_seq, std::move(run)});
    if (sync_mode())
        wait_for(queued_seq);   /* the fault is the launch's own error */
    else if (queue.size() > QUEUE_MAX)
        drain(queue[queue.size() - QUEUE_MAX / 2].seq);
}

void lose_context(cudaError_t e, const char *why)
{
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    lose(e, why);
    set_error(lost_error, lost_msg);
}

void reset_context(void)
{
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    queue.clear();
    {
        /* the dropped copies count no more */
        std::lock_guard<std::mutex> mem(mem_lock);
        for (auto &b : blocks) b.second.uses = 0;
    }
    lost_error = cudaSuccess;
    lost_msg[0] = 0;
    set_error(cudaSuccess, "");
}

int launch_allowed(const char *name, cudaStream_t s)
{
    if (lost()) return 0;
    if (!s) return 1;
    fail(cudaErrorInvalidResourceHandle, "kernel %s: stream %p (the emulator has the default stream only)", name, (void *)s);
    return 0;
}

cudaError_t symbol_copy(void *symbol, const void *src, size_t n, cudaStream_t s)
{
    if (cudaError_t e = lost()) return e;
    if (cudaError_t e = check_stream("cudaMemcpyToSymbolAsync", s)) return e;
    if (range_in(src, n, true)) {
        /* page-locked: read when the copy runs, as a GPU's DMA reads it */
        pinned_uses(src, 1);
        enqueue([=]() {
            memcpy(symbol, src, n);
            pinned_uses(src, -1);
            return 0;
        });
        return lost();
    }
    /* pageable: staged by the call */
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
    visible_devices_check();
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    visible_devices_check();
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
    visible_devices_check();
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

/* Returns the calling thread's last error and resets it; on a lost context
 * the error stays (every call returns it), as on a GPU. */
cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    if (cudaError_t l = lost()) return l;
    return e;
}

/* The last error, left as it is. */
cudaError_t cudaPeekAtLastError(void)
{
    if (cudaError_t l = lost()) return l;
    return last_error;
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

/* n = 0 gives NULL, as the runtime does: not a distinct address to rely on */
cudaError_t cudaMalloc(void **p, size_t n)
{
    if (!p) return fail(cudaErrorInvalidValue, "cudaMalloc: devPtr is NULL");
    *p = NULL;
    if (cudaError_t e = lost()) return e;
    if (n == 0) return cudaSuccess;
    size_t size = n;
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
    blocks[(uintptr_t)m] = block_info{size, false, 0};
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (cudaError_t e = lost()) return e;
    if (!p) return cudaSuccess;
    /* cudaFree waits for the device: nothing queued may still use p */
    if (cudaError_t e = wait_all()) return e;
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        auto it = blocks.find((uintptr_t)p);
        if (it != blocks.end() && !it->second.pinned) {
            device_bytes -= it->second.size;
            arena_give((char *)p, (it->second.size + ALIGN - 1) & ~(ALIGN - 1));
            blocks.erase(it);
            return cudaSuccess;
        }
    }
    return fail(cudaErrorInvalidValue, "cudaFree(%p): not a block from cudaMalloc", p);
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    if (!p) return fail(cudaErrorInvalidValue, "cudaMallocHost: ptr is NULL");
    *p = NULL;
    if (cudaError_t e = lost()) return e;
    size_t size = n ? n : 1;
    void *m = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    if (!m) {
        set_error(cudaErrorMemoryAllocation, "");
        return cudaErrorMemoryAllocation;
    }
    std::lock_guard<std::mutex> hold(mem_lock);
    blocks[(uintptr_t)m] = block_info{size, true, 0};
    *p = m;
    return cudaSuccess;
}

/* Does not wait for the device (the reference promises no wait), and
 * refuses a block that a queued copy still reads or writes: on a GPU the copy
 * would use freed memory. The caller waits for its copies first (facet: the
 * storage's copy event, tensor.c). */
cudaError_t cudaFreeHost(void *p)
{
    if (cudaError_t e = lost()) return e;
    if (!p) return cudaSuccess;
    int uses = 0;
    {
        std::lock_guard<std::mutex> hold(mem_lock);
        auto it = blocks.find((uintptr_t)p);
        if (it != blocks.end() && it->second.pinned && it->second.uses == 0) {
            blocks.erase(it);
            free(p);
            return cudaSuccess;
        }
        if (it != blocks.end() && it->second.pinned) uses = it->second.uses;
    }
    if (uses)
        return fail(cudaErrorInvalidValue, "cudaFreeHost(%p): %d queued copies still use it (wait for them first)", p, uses);
    return fail(cudaErrorInvalidValue, "cudaFreeHost(%p): not a block from cudaMallocHost", p);
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    if (cudaError_t e = lost()) return e;
    std::lock_guard<std::mutex> hold(mem_lock);
    *total_b = memory_limit();
    *free_b = *total_b > device_bytes ? *total_b - device_bytes : 0;
    return cudaSuccess;
}

namespace {

/* the copy's pointers lie where its kind says; otherwise the error.
 * cudaMemcpyDefault (the runtime infers the direction from unified
 * addresses) is refused: facet names every direction, and a copy whose
 * pointers do not match it is undefined on a GPU. */
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

/* a live event (not destroyed), or the error */
std::mutex event_lock;
std::map<cudaEvent_t, bool> events;

cudaError_t check_event(const char *fn, cudaEvent_t e)
{
    std::lock_guard<std::mutex> hold(event_lock);
    if (e && events.count(e)) return cudaSuccess;
    return fail(cudaErrorInvalidResourceHandle, "%s: event %p is not a live event", fn, (void *)e);
}

/* frees a destroyed event once no record of it is queued (event_lock) */
void event_release(cudaEvent_t e)
{
    if (e->destroyed && e->queued == 0) delete e;
}

}   /* namespace */

/* Device to host and host to host: the host waits for the copy. Host to
 * device: after the queued work (pageable memory is staged after a stream
 * sync; page-locked memory is copied synchronously). Device to device: in
 * stream order, without a host wait (the API's sync rules), so it reports no
 * earlier fault unless the context is already lost. */
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    if (cudaError_t e = lost()) return e;
    if (n == 0) return cudaSuccess;
    if (cudaError_t e = check_copy("cudaMemcpy", dst, src, n, kind)) return e;
    if (kind == cudaMemcpyDeviceToDevice) {
        enqueue([=]() {
            memmove(dst, src, n);
            return 0;
        });
        return lost();
    }
    if (cudaError_t e = wait_all()) return e;
    arena_scope open;
    memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    if (cudaError_t e = lost()) return e;
    if (cudaError_t e = check_stream("cudaMemcpyAsync", s)) return e;
    if (n == 0) return cudaSuccess;
    if (cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, n, kind)) return e;
    if ((kind == cudaMemcpyDeviceToHost && !pinned(dst, n)) || kind == cudaMemcpyHostToHost) {
        /* into pageable memory (or host to host) the copy is synchronous */
        if (cudaError_t e = wait_all()) return e;
        arena_scope open;
        memmove(dst, src, n);
        return cudaSuccess;
    }
    if (kind == cudaMemcpyHostToDevice && !pinned(src, n)) {
        /* from pageable memory the source is staged before the call returns */
        std::vector<char> bytes((const char *)src, (const char *)src + n);
        enqueue([=]() {
            memcpy(dst, bytes.data(), n);
            return 0;
        });
        return lost();
    }
    /* page-locked host memory and device memory are read and written when the copy runs */
    const void *host = kind == cudaMemcpyHostToDevice ? src : kind == cudaMemcpyDeviceToHost ? dst : NULL;
    pinned_uses(host, 1);
    enqueue([=]() {
        memmove(dst, src, n);
        pinned_uses(host, -1);
        return 0;
    });
    return lost();
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s)
{
    if (cudaError_t e = lost()) return e;
    if (cudaError_t e = check_stream("cudaMemsetAsync", s)) return e;
    if (n == 0) return cudaSuccess;
    if (!device_range(p, n)) return fail(cudaErrorInvalidValue, "cudaMemsetAsync(%p, %zu bytes): not inside device memory", p, n);
    enqueue([=]() {
        memset(p, value, n);
        return 0;
    });
    return lost();
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    if (!e) return fail(cudaErrorInvalidValue, "cudaEventCreateWithFlags: event is NULL");
    *e = NULL;
    if (cudaError_t err = lost()) return err;
    /* cudaEventBlockingSync 0x01, cudaEventDisableTiming 0x02, cudaEventInterprocess 0x04 (with DisableTiming) */
    if ((flags & ~0x07u) || ((flags & 0x04u) && !(flags & 0x02u)))
        return fail(cudaErrorInvalidValue, "cudaEventCreateWithFlags: flags %#x", flags);
    cudaEvent_t ev = new CUevent_st{flags, 0, 0, 0.0, 0, false};
    std::lock_guard<std::mutex> hold(event_lock);
    events[ev] = true;
    *e = ev;
    return cudaSuccess;
}

/* Returns at once, as the runtime's: a record still queued completes later
 * and frees the event then. */
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    if (cudaError_t err = check_event("cudaEventDestroy", e)) return err;
    {
        std::lock_guard<std::mutex> hold(event_lock);
        events.erase(e);
        e->destroyed = true;
        event_release(e);
    }
    return lost();
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    if (cudaError_t err = check_event("cudaEventRecord", e)) return err;
    if (cudaError_t err = lost()) return err;
    if (cudaError_t err = check_stream("cudaEventRecord", s)) return err;
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    {
        std::lock_guard<std::mutex> ev(event_lock);
        e->recorded = 0;
        e->seq = queued_seq + 1;
        e->queued++;
    }
    enqueue([=]() {
        std::lock_guard<std::mutex> ev(event_lock);
        if (!e->destroyed && e->seq == done_seq) {
            e->recorded = 1;
            e->ms = now_ms();
        }
        e->queued--;
        event_release(e);
        return 0;
    });
    return lost();
}

/* The emulated device makes progress only when the host waits. A query of
 * an event whose work is still queued runs that work but answers
 * cudaErrorNotReady, as a GPU answers a query made while the work runs; the
 * next query finds it done. So code that polls must handle
 * cudaErrorNotReady. It is no fault, but whether the runtime also records
 * it as the last error has varied (PyTorch clears it after every query): the
 * emulator records it, so a poll that does not clear it fails the next
 * launch check here, and cannot fail on a GPU. */
cudaError_t cudaEventQuery(cudaEvent_t e)
{
    if (cudaError_t err = check_event("cudaEventQuery", e)) return err;
    std::lock_guard<std::recursive_mutex> hold(queue_lock);
    if (cudaError_t err = lost()) return err;
    if (e->seq <= done_seq) return cudaSuccess;
    if (cudaError_t err = wait_for(e->seq)) return err;
    set_error(cudaErrorNotReady, "cudaEventQuery: the work before the event is still running");
    return cudaErrorNotReady;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (cudaError_t err = check_event("cudaEventSynchronize", e)) return err;
    return wait_for(e->seq);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (cudaError_t err = check_event("cudaEventElapsedTime", start)) return err;
    if (cudaError_t err = check_event("cudaEventElapsedTime", end)) return err;
    if (!ms) return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: ms is NULL");
    if (cudaError_t err = lost()) return err;
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event made with cudaEventDisableTiming");
    if (!start->seq || !end->seq)
        return fail(cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event never recorded");
    std::lock_guard<std::mutex> hold(event_lock);
    if (!start->recorded || !end->recorded) {
        /* as a GPU: not waited for (recorded as the last error, as cudaEventQuery's) */
        set_error(cudaErrorNotReady, "cudaEventElapsedTime: an event has not completed");
        return cudaErrorNotReady;
    }
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}
