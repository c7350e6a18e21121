/*
 * test_emu.cu - tests of the CUDA emulator itself (core/emu,
 * docs/cuda-emulator.md), built by `make test-emu` through the same launch
 * rewrite as core/cuda: that the built-in indices, barriers, shuffles and
 * the backend's block reduction give what a GPU gives, and that what a GPU
 * rejects or leaves undefined (a deadlocked barrier, a partial-warp shuffle,
 * a host pointer handed to a kernel, a bad launch shape, a copy in the wrong
 * direction, a GEMM operand past its allocation) is reported as an error,
 * that the default stream runs when the host waits, as a GPU's does, and
 * that the two thread orders (FACET_EMU_ORDER) expose a missing barrier.
 * The last section runs the blocks of a launch on several OS threads: each
 * block has its own __shared__ memory, a fault in any block is the launch's,
 * and the results do not depend on the number of threads. Then cuBLAS: the
 * statuses and values of real cuBLAS, the GPU-like k order of
 * FACET_EMU_GEMM=scramble, and GEMMs on a lost context.
 */
#include "cuda_common.cuh"
#include "emu.h"
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <set>
#include <vector>

static int passed, failed;

#define CHECK(cond, ...)                                     \
    do {                                                     \
        if (cond) {                                          \
            passed++;                                        \
        } else {                                             \
            failed++;                                        \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                             \
            printf("\n");                                    \
        }                                                    \
    } while (0)

template <typename T>
static T *dev_alloc(size_t n)
{
    void *p = NULL;
    if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) return NULL;
    return (T *)p;
}

template <typename T>
static std::vector<T> to_host(const T *d, size_t n)
{
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}

/* ---- kernels ---- */

static __global__ void index_kernel(int *out)
{
    int tid = (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    int bid = (int)(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
    int per = (int)(blockDim.x * blockDim.y * blockDim.z);
    out[bid * per + tid] = bid * 100000 + (int)threadIdx.z * 10000 + (int)threadIdx.y * 100 + (int)threadIdx.x;
}

static __global__ void block_sum_kernel(float *out, const float *x, int64_t n)
{
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += x[blockIdx.x * n + i];
    s = block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

/* thread t reads its neighbour's value: right only after a barrier */
static __global__ void rotate_kernel(int *out)
{
    __shared__ int vals[1024];
    int t = (int)threadIdx.x, n = (int)blockDim.x;
    vals[t] = t * 3 + (int)blockIdx.x;
    __syncthreads();
    int v = vals[(t + 1) % n];
    __syncthreads();
    vals[t] = -1;
    out[blockIdx.x * blockDim.x + t] = v;
}

static __global__ void shuffle_kernel(int *down, int *idx, int delta, int src)
{
    int t = (int)threadIdx.x;
    down[t] = __shfl_down_sync(0xffffffffu, t * 7, delta);
    idx[t] = __shfl_sync(0xffffffffu, t * 5, src);
}

/* lanes 0-15 wait at __syncthreads, lanes 16-31 at a shuffle: never meet */
static __global__ void deadlock_kernel(int *out)
{
    int t = (int)threadIdx.x;
    if (t < 16)
        __syncthreads();
    else
        out[t] = __shfl_down_sync(0xffffffffu, t, 1);
}

static __global__ void partial_warp_kernel(int *out)
{
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 1);
}

/* threads that return before a barrier do not hold the others (as on Volta and later) */
static __global__ void early_exit_kernel(int *out)
{
    int t = (int)threadIdx.x;
    if (t >= 40) return;
    __shared__ int vals[64];
    vals[t] = t;
    __syncthreads();
    out[t] = vals[39 - t];
}

static __global__ void fill_kernel(float *out, float v, int64_t n)
{
    FACET_CUDA_FOR(i, n) out[i] = v;
}

/* A missing barrier: thread t reads what thread t + step (mod n) writes in the
 * same barrier interval. On a GPU a race; in the emulator right in one thread
 * order and stale in the other (salt tells this launch's writes from older ones). */
static __global__ void racy_kernel(int *out, int step, int salt)
{
    __shared__ int s[256];
    const int t = (int)threadIdx.x, n = (int)blockDim.x;
    s[t] = t * 3 + salt;
    out[t] = s[(t + step + n) % n];
}

/* ---- tests ---- */

static void test_indices(void)
{
    dim3 grid(3, 2, 2), block(8, 4, 2);
    const int per = 64, blocks = 12;
    int *d = dev_alloc<int>(per * blocks);
    index_kernel<<<grid, block>>>(d);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    std::vector<int> h = to_host(d, per * blocks);
    int bad = 0;
    for (int bz = 0; bz < 2; bz++)
        for (int by = 0; by < 2; by++)
            for (int bx = 0; bx < 3; bx++)
                for (int z = 0; z < 2; z++)
                    for (int y = 0; y < 4; y++)
                        for (int x = 0; x < 8; x++) {
                            int bid = bx + 3 * (by + 2 * bz), tid = x + 8 * (y + 4 * z);
                            bad += h[(size_t)(bid * per + tid)] != bid * 100000 + z * 10000 + y * 100 + x;
                        }
    CHECK(bad == 0, "%d threads saw wrong indices", bad);
    cudaFree(d);
}

static void test_block_sum(void)
{
    const int rows = 5, n = 1000;
    std::vector<float> h((size_t)rows * n);
    for (size_t i = 0; i < h.size(); i++) h[i] = (float)((i * 37) % 101) - 50.0f;   /* integers: sums exact */
    float *x = dev_alloc<float>(h.size()), *out = dev_alloc<float>(rows);
    cudaMemcpy(x, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
    for (unsigned threads : {32u, 96u, 256u, 1024u}) {
        block_sum_kernel<<<rows, threads>>>(out, x, n);
        CHECK(cudaGetLastError() == cudaSuccess, "block_sum with %u threads", threads);
        std::vector<float> r = to_host(out, rows);
        for (int b = 0; b < rows; b++) {
            double want = 0;
            for (int i = 0; i < n; i++) want += h[(size_t)(b * n + i)];
            CHECK(r[(size_t)b] == (float)want, "%u threads, row %d: %g, want %g", threads, b, r[(size_t)b], want);
        }
    }
    cudaFree(x);
    cudaFree(out);
}

static void test_barrier(void)
{
    const int n = 256, blocks = 3;
    int *d = dev_alloc<int>(n * blocks);
    rotate_kernel<<<blocks, n>>>(d);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    std::vector<int> h = to_host(d, n * blocks);
    int bad = 0;
    for (int b = 0; b < blocks; b++)
        for (int t = 0; t < n; t++) bad += h[(size_t)(b * n + t)] != ((t + 1) % n) * 3 + b;
    CHECK(bad == 0, "%d threads read before their neighbour wrote", bad);

    int *e = dev_alloc<int>(64);
    early_exit_kernel<<<1, 64>>>(e);
    CHECK(cudaGetLastError() == cudaSuccess, "early exit");
    std::vector<int> he = to_host(e, 40);
    bad = 0;
    for (int t = 0; t < 40; t++) bad += he[(size_t)t] != 39 - t;
    CHECK(bad == 0, "early exit: %d wrong", bad);
    cudaFree(d);
    cudaFree(e);
}

static void test_shuffles(void)
{
    int *down = dev_alloc<int>(64), *idx = dev_alloc<int>(64);
    for (int delta : {1, 5, 16}) {
        shuffle_kernel<<<1, 64>>>(down, idx, delta, 9);
        CHECK(cudaGetLastError() == cudaSuccess, "launch");
        std::vector<int> hd = to_host(down, 64), hi = to_host(idx, 64);
        int bad = 0;
        for (int t = 0; t < 64; t++) {
            int lane = t & 31, w = t >> 5;
            int src = lane + delta < 32 ? lane + delta : lane;
            bad += hd[(size_t)t] != (32 * w + src) * 7;
            bad += hi[(size_t)t] != (32 * w + 9) * 5;
        }
        CHECK(bad == 0, "delta %d: %d wrong", delta, bad);
    }
    cudaFree(down);
    cudaFree(idx);
}

static void test_faults(void)
{
    int *d = dev_alloc<int>(64);
    (void)cudaGetLastError();
    /* a fault inside a kernel is the error of the next waiting call, as on a
     * GPU; it loses the context (test_lost_context), so each fault here is
     * followed by reset_context, the emulator's stand-in for a new process */
    deadlock_kernel<<<1, 32>>>(d);
    cudaError_t e = cudaGetLastError();
    CHECK(e == cudaSuccess, "deadlock, at launch: %s", cudaGetErrorString(e));
    e = cudaDeviceSynchronize();
    CHECK(e == cudaErrorLaunchFailure, "deadlock: %s", cudaGetErrorString(e));
    CHECK(cudaGetLastError() == cudaErrorLaunchFailure, "deadlock: the last error");
    facet_emu::reset_context();

    partial_warp_kernel<<<1, 40>>>(d);
    std::vector<int> sink(1);
    e = cudaMemcpy(sink.data(), d, 4, cudaMemcpyDeviceToHost);
    CHECK(e == cudaErrorLaunchFailure, "partial warp shuffle: %s", cudaGetErrorString(e));
    facet_emu::reset_context();

    /* a host pointer: nothing runs */
    std::vector<float> host(16, 5.0f);
    fill_kernel<<<1, 32>>>(host.data(), 1.0f, 16);
    e = cudaGetLastError();
    CHECK(e == cudaErrorLaunchFailure && host[0] == 5.0f, "host pointer: %s", cudaGetErrorString(e));
    facet_emu::reset_context();

    /* a bad launch shape is the launch's error alone: the context stays */
    fill_kernel<<<1, 2048>>>((float *)d, 1.0f, 16);
    e = cudaGetLastError();
    CHECK(e == cudaErrorInvalidConfiguration, "2048 threads: %s", cudaGetErrorString(e));
    fill_kernel<<<dim3(1, 70000), 32>>>((float *)d, 1.0f, 16);
    e = cudaGetLastError();
    CHECK(e == cudaErrorInvalidConfiguration, "grid.y 70000: %s", cudaGetErrorString(e));

    /* after the faults, launches work again */
    test_barrier();
    cudaFree(d);
}

static void test_memory(void)
{
    float *d = dev_alloc<float>(8);
    std::vector<float> h = to_host(d, 8);
    CHECK(h[0] != h[0] && h[7] != h[7], "fresh device memory reads as NaN");
    std::vector<float> src(8, 2.0f);
    CHECK(cudaMemcpy(d, src.data(), 32, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue, "reversed copy");
    CHECK(cudaMemcpy(d, src.data(), 36, cudaMemcpyHostToDevice) == cudaErrorInvalidValue, "copy past the block");
    CHECK(cudaMemcpy(d, src.data(), 32, cudaMemcpyHostToDevice) == cudaSuccess, "copy");
    CHECK(cudaFree(d + 1) == cudaErrorInvalidValue, "free inside a block");
    CHECK(cudaFree(d) == cudaSuccess, "free");
    (void)cudaGetLastError();

    void *big = NULL;
    size_t free_b, total_b;
    cudaMemGetInfo(&free_b, &total_b);
    CHECK(cudaMalloc(&big, total_b + 1) == cudaErrorMemoryAllocation && big == NULL, "past the device's memory");
    (void)cudaGetLastError();

    cudaEvent_t a, b;
    cudaEventCreateWithFlags(&a, cudaEventDisableTiming);
    cudaEventCreate(&b);
    cudaEventRecord(a);
    cudaEventRecord(b);
    float ms = -1;
    CHECK(cudaEventElapsedTime(&ms, a, b) == cudaErrorInvalidResourceHandle, "timing a DisableTiming event");
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    (void)cudaGetLastError();
}

/* The stream runs when the host waits: page-locked memory filled by an
 * asynchronous copy holds its old bytes until then, and a page-locked source
 * is read when its copy runs. */
static void test_stream(void)
{
    float *x = dev_alloc<float>(16), *y = dev_alloc<float>(16);
    float *px = NULL, *py = NULL;
    cudaMallocHost((void **)&px, 16 * sizeof(float));
    cudaMallocHost((void **)&py, 16 * sizeof(float));
    for (int i = 0; i < 16; i++) px[i] = py[i] = -7.0f;
    cudaEvent_t ev;
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    fill_kernel<<<1, 32>>>(x, 1.0f, 16);
    cudaMemcpyAsync(px, x, 16 * sizeof(float), cudaMemcpyDeviceToHost, 0);
    cudaEventRecord(ev, 0);
    fill_kernel<<<1, 32>>>(y, 2.0f, 16);
    cudaMemcpyAsync(py, y, 16 * sizeof(float), cudaMemcpyDeviceToHost, 0);
    CHECK(px[0] == -7.0f && py[0] == -7.0f, "before any wait: %g %g", px[0], py[0]);
    CHECK(cudaEventSynchronize(ev) == cudaSuccess, "event");
    CHECK(px[15] == 1.0f && py[0] == -7.0f, "up to the event: %g %g", px[15], py[0]);
    cudaDeviceSynchronize();
    CHECK(py[15] == 2.0f, "after a device sync: %g", py[15]);

    /* a page-locked source rewritten before the copy ran: the new bytes arrive */
    for (int i = 0; i < 16; i++) px[i] = 3.0f;
    cudaMemcpyAsync(x, px, 16 * sizeof(float), cudaMemcpyHostToDevice, 0);
    px[0] = 4.0f;
    std::vector<float> h = to_host(x, 16);
    CHECK(h[0] == 4.0f && h[1] == 3.0f, "pinned source: %g %g", h[0], h[1]);
    /* a pageable source is read by the call itself */
    std::vector<float> pageable(16, 5.0f);
    cudaMemcpyAsync(x, pageable.data(), 16 * sizeof(float), cudaMemcpyHostToDevice, 0);
    pageable[0] = 6.0f;
    h = to_host(x, 16);
    CHECK(h[0] == 5.0f, "pageable source: %g", h[0]);
    cudaEventDestroy(ev);
    cudaFreeHost(px);
    cudaFreeHost(py);
    cudaFree(x);
    cudaFree(y);
}

/* Host code that reads device memory stops with SIGSEGV, as on a GPU host. */
static void test_guard(void)
{
    float *d = dev_alloc<float>(4);
    fill_kernel<<<1, 32>>>(d, 1.0f, 4);
    cudaDeviceSynchronize();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        volatile float v = d[1];
        (void)v;
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "a host read of device memory: status %#x", status);
    /* the emulator's own copies still work */
    std::vector<float> h = to_host(d, 4);
    CHECK(h[1] == 1.0f, "copy after the guard: %g", h[1]);
    cudaFree(d);
}

/* ---- the runtime's rules, as strict as a GPU's (docs/cuda-emulator.md, "The runtime API") ---- */

/* A fault loses the context: every later call that needs the device fails with
 * the same error, cudaGetLastError does not clear it, work queued after the
 * fault never runs; calls that need no context still work. */
static void test_lost_context(void)
{
    float *a = dev_alloc<float>(16), *b = dev_alloc<float>(16);
    int *d = dev_alloc<int>(32);
    cudaMemsetAsync(b, 0, 16 * sizeof(float));
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "before the fault");
    fill_kernel<<<1, 32>>>(a, 1.0f, 16);
    deadlock_kernel<<<1, 32>>>(d);
    fill_kernel<<<1, 32>>>(b, 2.0f, 16);
    CHECK(cudaGetLastError() == cudaSuccess, "the launches are accepted");
    cudaError_t e = cudaDeviceSynchronize();
    CHECK(e == cudaErrorLaunchFailure, "the fault, at the wait: %s", cudaGetErrorString(e));
    e = cudaGetLastError();
    cudaError_t e2 = cudaGetLastError();
    CHECK(e == cudaErrorLaunchFailure && e2 == cudaErrorLaunchFailure, "cudaGetLastError keeps it: %d %d", e, e2);
    CHECK(cudaPeekAtLastError() == cudaErrorLaunchFailure, "cudaPeekAtLastError");
    void *p = (void *)1;
    CHECK(cudaMalloc(&p, 64) == cudaErrorLaunchFailure && p == NULL, "cudaMalloc after the fault");
    float h[16] = {0};
    CHECK(cudaMemcpy(h, a, sizeof h, cudaMemcpyDeviceToHost) == cudaErrorLaunchFailure, "cudaMemcpy after the fault");
    CHECK(cudaMemsetAsync(a, 0, 4) == cudaErrorLaunchFailure, "cudaMemsetAsync after the fault");
    cudaEvent_t ev = NULL;
    CHECK(cudaEventCreate(&ev) == cudaErrorLaunchFailure && ev == NULL, "cudaEventCreate after the fault");
    CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "a second sync");
    fill_kernel<<<1, 32>>>(a, 3.0f, 16);
    CHECK(cudaGetLastError() == cudaErrorLaunchFailure, "a launch after the fault");
    int count = 0;
    CHECK(cudaGetDeviceCount(&count) == cudaSuccess && count == 1, "cudaGetDeviceCount needs no context");
    /* facet's own check: a device error, with the emulator's reason */
    int rc = check_cuda(cudaDeviceSynchronize(), "test_lost_context");
    CHECK(rc == FACET_STATUS_ERR_DEVICE && strstr(facet_last_error(), "deadlock_kernel"), "check_cuda: %d %s", rc,
          facet_last_error());

    facet_emu::reset_context();
    CHECK(cudaGetLastError() == cudaSuccess, "a new context");
    std::vector<float> ha = to_host(a, 16), hb = to_host(b, 16);
    CHECK(ha[15] == 1.0f, "the work before the fault ran: %g", ha[15]);
    CHECK(hb[0] == 0.0f && hb[15] == 0.0f, "the work after the fault never ran: %g", hb[0]);
    cudaFree(a);
    cudaFree(b);
    cudaFree(d);
}

/* cudaGetLastError reads and resets; cudaPeekAtLastError only reads; an error
 * that does not lose the context is the call's alone. */
static void test_last_error(void)
{
    float *x = dev_alloc<float>(16);
    (void)cudaGetLastError();
    fill_kernel<<<1, 2048>>>(x, 1.0f, 16);
    CHECK(cudaPeekAtLastError() == cudaErrorInvalidConfiguration, "peek");
    CHECK(cudaPeekAtLastError() == cudaErrorInvalidConfiguration, "peek again");
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "get");
    CHECK(cudaGetLastError() == cudaSuccess, "get resets it");
    CHECK(cudaMemcpy(x, x, 4, cudaMemcpyHostToDevice) == cudaErrorInvalidValue, "a wrong kind");
    CHECK(cudaGetLastError() == cudaErrorInvalidValue && cudaGetLastError() == cudaSuccess, "a wrong kind: last error");
    float h[4] = {0};
    CHECK(cudaMemcpy(x, h, sizeof h, cudaMemcpyDefault) == cudaErrorInvalidValue, "cudaMemcpyDefault is refused");
    (void)cudaGetLastError();
    /* the emulator has the default stream only: another handle is invalid, and not sticky */
    cudaStream_t other = (cudaStream_t)(uintptr_t)0x1000;
    CHECK(cudaMemcpyAsync(x, h, sizeof h, cudaMemcpyHostToDevice, other) == cudaErrorInvalidResourceHandle,
          "cudaMemcpyAsync on another stream");
    CHECK(cudaMemsetAsync(x, 0, 4, other) == cudaErrorInvalidResourceHandle, "cudaMemsetAsync on another stream");
    fill_kernel<<<1, 32, 0, other>>>(x, 1.0f, 16);
    CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle, "a launch on another stream");
    /* cudaMalloc(0) gives NULL, not a distinct address */
    void *z = (void *)1;
    CHECK(cudaMalloc(&z, 0) == cudaSuccess && z == NULL, "cudaMalloc of 0 bytes: %p", z);
    CHECK(cudaFree(NULL) == cudaSuccess, "cudaFree(NULL)");
    CHECK(cudaDeviceSynchronize() == cudaSuccess && cudaGetLastError() == cudaSuccess, "none of it was sticky");
    cudaFree(x);
}

/* Events: a query while the work before the event is queued says
 * cudaErrorNotReady (and leaves the last error), then cudaSuccess; timing
 * needs timing events that have completed; a destroyed event is no handle;
 * destroying an event whose record is queued returns at once. */
static void test_events(void)
{
    float *x = dev_alloc<float>(16);
    float *px = NULL;
    cudaMallocHost((void **)&px, 16 * sizeof(float));
    px[0] = -1.0f;
    cudaEvent_t sync_ev, t0, t1, never;
    CHECK(cudaEventCreateWithFlags(&sync_ev, cudaEventDisableTiming) == cudaSuccess, "create");
    CHECK(cudaEventCreateWithFlags(&never, 0x40) == cudaErrorInvalidValue, "unknown flags");
    (void)cudaGetLastError();
    cudaEventCreate(&t0);
    cudaEventCreate(&t1);
    cudaEventCreate(&never);
    CHECK(cudaEventQuery(never) == cudaSuccess, "a query of an event never recorded");
    float ms = -1.0f;
    CHECK(cudaEventElapsedTime(&ms, never, never) == cudaErrorInvalidResourceHandle, "timing an event never recorded");
    (void)cudaGetLastError();

    cudaEventRecord(t0);
    fill_kernel<<<1, 32>>>(x, 1.0f, 16);
    cudaMemcpyAsync(px, x, 16 * sizeof(float), cudaMemcpyDeviceToHost);
    cudaEventRecord(sync_ev);
    cudaEventRecord(t1);
    CHECK(cudaEventElapsedTime(&ms, t0, t1) == cudaErrorNotReady, "timing events not completed");
    /* recorded as the last error (strict: a poll must clear it), and no lost context */
    CHECK(cudaGetLastError() == cudaErrorNotReady && cudaGetLastError() == cudaSuccess, "the last error: not ready");
    cudaError_t q = cudaEventQuery(sync_ev);
    CHECK(q == cudaErrorNotReady, "a query while the work is queued: %d", q);
    CHECK(cudaGetLastError() == cudaErrorNotReady, "a query that is not ready: the last error");
    q = cudaEventQuery(sync_ev);
    CHECK(q == cudaSuccess && px[0] == 1.0f, "a second query: %d, %g", q, px[0]);
    CHECK(cudaEventSynchronize(t1) == cudaSuccess && cudaEventElapsedTime(&ms, t0, t1) == cudaSuccess && ms >= 0.0f,
          "timing completed events: %g ms", ms);
    CHECK(cudaEventElapsedTime(&ms, t0, sync_ev) == cudaErrorInvalidResourceHandle, "timing a DisableTiming event");
    (void)cudaGetLastError();

    /* destroyed with its record queued: returns at once, the record completes later */
    fill_kernel<<<1, 32>>>(x, 2.0f, 16);
    cudaMemcpyAsync(px, x, 16 * sizeof(float), cudaMemcpyDeviceToHost);
    cudaEventRecord(t0);
    CHECK(cudaEventDestroy(t0) == cudaSuccess && px[0] == 1.0f, "destroy does not wait: %g", px[0]);
    CHECK(cudaDeviceSynchronize() == cudaSuccess && px[0] == 2.0f, "the work ran: %g", px[0]);
    CHECK(cudaEventQuery(t0) == cudaErrorInvalidResourceHandle, "a destroyed event");
    CHECK(cudaEventRecord(t0) == cudaErrorInvalidResourceHandle, "recording a destroyed event");
    (void)cudaGetLastError();
    for (cudaEvent_t e : {sync_ev, t1, never}) cudaEventDestroy(e);
    cudaFreeHost(px);
    cudaFree(x);
}

/* The API's sync rules: a device-to-device cudaMemcpy does not wait for the
 * host; one to the host does. */
static void test_copy_sync(void)
{
    float *x = dev_alloc<float>(16), *y = dev_alloc<float>(16);
    float *px = NULL;
    cudaMallocHost((void **)&px, 16 * sizeof(float));
    px[0] = -1.0f;
    fill_kernel<<<1, 32>>>(x, 4.0f, 16);
    cudaMemcpyAsync(px, x, 16 * sizeof(float), cudaMemcpyDeviceToHost);
    CHECK(cudaMemcpy(y, x, 16 * sizeof(float), cudaMemcpyDeviceToDevice) == cudaSuccess && px[0] == -1.0f,
          "a device-to-device copy does not wait: %g", px[0]);
    std::vector<float> h = to_host(y, 16);
    CHECK(px[0] == 4.0f && h[15] == 4.0f, "a copy to the host waits: %g %g", px[0], h[15]);
    /* cudaFreeHost does not wait: a block a queued copy still reads is refused */
    cudaMemcpyAsync(x, px, 16 * sizeof(float), cudaMemcpyHostToDevice);
    CHECK(cudaFreeHost(px) == cudaErrorInvalidValue, "cudaFreeHost under a queued copy");
    (void)cudaGetLastError();
    CHECK(cudaDeviceSynchronize() == cudaSuccess && cudaFreeHost(px) == cudaSuccess, "cudaFreeHost after the wait");
    cudaFree(x);
    cudaFree(y);
}

/* launch_flat and launch_items (cuda_common.cuh) name the kernel they launch
 * in the emulator's fault messages, template arguments and all. */
template <typename T, int K>
static __global__ void scale_kernel(T *out, int64_t n)
{
    FACET_CUDA_FOR(i, n) out[i] = (T)K;
}

/* half a warp waits at a barrier, the rest at a shuffle that needs the whole warp: a deadlock */
static __global__ void items_deadlock_kernel(int *out, int64_t items)
{
    FACET_CUDA_FOR_BLOCK(i, items) {
        if (threadIdx.x < 16)
            __syncthreads();
        else
            out[i] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 1);
    }
}

static void test_launch_names(void)
{
    float *x = dev_alloc<float>(16);
    int rc = launch_flat("test_launch_names", 16, scale_kernel<float, 3>, x, (int64_t)16);
    std::vector<float> h = to_host(x, 16);
    CHECK(rc == FACET_STATUS_OK && h[15] == 3.0f, "launch_flat: %d %g", rc, h[15]);
    std::vector<float> host(16);
    rc = launch_flat("test_launch_names", 16, scale_kernel<float, 3>, host.data(), (int64_t)16);
    CHECK(rc == FACET_STATUS_ERR_DEVICE && strstr(facet_last_error(), "test_launch_names") &&
              strstr(facet_last_error(), "kernel scale_kernel<float, 3>: argument 0"),
          "launch_flat names the kernel: %s", facet_last_error());
    facet_emu::reset_context();
    int *d = dev_alloc<int>(4);
    rc = launch_items("test_launch_names", 3, 64, items_deadlock_kernel, d, (int64_t)3);
    CHECK(rc == FACET_STATUS_OK, "launch_items: %d", rc);
    cudaError_t e = cudaDeviceSynchronize();
    CHECK(e == cudaErrorLaunchFailure && strstr(cudaGetErrorString(e), "kernel items_deadlock_kernel, block (0,0,0)"),
          "launch_items names the kernel: %s", cudaGetErrorString(e));
    facet_emu::reset_context();
    CHECK(strcmp(facet_emu::kernel_name("k<a, b<c, d>>(x), y, z"), "k<a, b<c, d>>(x)") == 0 &&
              strcmp(facet_emu::kernel_name("plain"), "plain") == 0,
          "kernel_name: %s", facet_emu::kernel_name("k<a, b<c, d>>(x), y, z"));
    cudaFree(x);
    cudaFree(d);
}

/* CUDA_VISIBLE_DEVICES set after CUDA started (as facet.dist.init would, too
 * late) is reported once on stderr: on a GPU host it would have no effect. */
static void test_visible_devices(void)
{
    int fds[2];
    if (pipe(fds) != 0) {
        CHECK(0, "pipe");
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        const char *v = getenv("CUDA_VISIBLE_DEVICES");
        setenv("CUDA_VISIBLE_DEVICES", v && strcmp(v, "7") == 0 ? "6" : "7", 1);
        int n = 0;
        cudaGetDeviceCount(&n);
        cudaDeviceSynchronize();
        _exit(0);
    }
    close(fds[1]);
    char buf[2048];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)r;
    buf[got] = 0;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    const char *at = strstr(buf, "CUDA_VISIBLE_DEVICES is now");
    CHECK(at && !strstr(at + 1, "CUDA_VISIBLE_DEVICES is now") && strstr(buf, "has no effect"),
          "one warning for a late CUDA_VISIBLE_DEVICES: [%s]", buf);
}

/* A SIGSEGV that is not a host access to device memory goes to the action
 * before the emulator's: the default one kills the process by SIGSEGV; a
 * sanitizer's reports it and exits with its own status. Either way the
 * process ends, and a signal sent by kill() does too. */
static void test_other_segv(void)
{
    for (int sent = 0; sent <= 1; sent++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            if (sent) {
                kill(getpid(), SIGSEGV);
            } else {
                static volatile uintptr_t bad = 64;     /* volatile: no address the compiler can see through */
                (void)*(volatile int *)bad;
            }
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
#if defined(__SANITIZE_ADDRESS__)
        const bool ok = (WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
#else
        const bool ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
#endif
        CHECK(ok, "a SIGSEGV outside device memory (%s): status %#x", sent ? "sent" : "an access", status);
    }
}

static void test_gemm(void)
{
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "create");
    /* column-major C (3x2) = A^T (3x4) B (4x2), A stored 4x3 with lda 5 */
    const int m = 3, n = 2, k = 4, lda = 5, ldb = 4, ldc = 3;
    std::vector<float> ha((size_t)lda * m), hb((size_t)ldb * n), hc((size_t)ldc * n, NAN);
    for (size_t i = 0; i < ha.size(); i++) ha[i] = (float)(i % 7) - 3.0f;
    for (size_t i = 0; i < hb.size(); i++) hb[i] = (float)(i % 5) - 2.0f;
    float *a = dev_alloc<float>(ha.size()), *b = dev_alloc<float>(hb.size()), *c = dev_alloc<float>(hc.size());
    cudaMemcpy(a, ha.data(), ha.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb.data(), hb.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(c, hc.data(), hc.size() * 4, cudaMemcpyHostToDevice);
    float alpha = 2.0f, beta = 0.0f;
    cublasStatus_t s = cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, lda, 0, b, ldb, 0,
                                                 &beta, c, ldc, 0, 1);
    CHECK(s == CUBLAS_STATUS_SUCCESS, "sgemm: %s", cublasGetStatusString(s));
    std::vector<float> r = to_host(c, hc.size());
    int bad = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float want = 0;
            for (int p = 0; p < k; p++) want += ha[(size_t)(p + i * lda)] * hb[(size_t)(p + j * ldb)];
            bad += r[(size_t)(i + j * ldc)] != 2.0f * want;   /* small integers: exact; beta 0 drops C's NaN */
        }
    CHECK(bad == 0, "sgemm: %d wrong", bad);

    s = cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, 3, 0, b, ldb, 0, &beta, c, ldc, 0, 1);
    CHECK(s == CUBLAS_STATUS_INVALID_VALUE, "lda 3 < k 4");
    s = cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, lda, 0, b, ldb, 0, &beta, c, ldc,
                                  (long long)ldc * n, 2);
    CHECK(s == CUBLAS_STATUS_INVALID_VALUE, "a second C past the allocation");

    /* TF32: 1 + 2^-11 is a tie between 1 and 1 + 2^-10, rounded away */
    float one = 1.0f, x = 1.0f + 1.0f / 2048.0f;
    cudaMemcpy(a, &x, 4, cudaMemcpyHostToDevice);
    cudaMemcpy(b, &one, 4, cudaMemcpyHostToDevice);
    alpha = 1.0f;
    s = cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, a, CUDA_R_32F, 1, 0, b, CUDA_R_32F, 1,
                                   0, &beta, c, CUDA_R_32F, 1, 0, 1, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
    float got;
    cudaMemcpy(&got, c, 4, cudaMemcpyDeviceToHost);
    CHECK(s == CUBLAS_STATUS_SUCCESS && got == 1.0f + 1.0f / 1024.0f, "tf32: %.9g", got);
    s = cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, a, CUDA_R_32F, 1, 0, b, CUDA_R_32F, 1,
                                   0, &beta, c, CUDA_R_32F, 1, 0, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cudaMemcpy(&got, c, 4, cudaMemcpyDeviceToHost);
    CHECK(s == CUBLAS_STATUS_SUCCESS && got == x, "fp32: %.9g", got);

    /* float16 operands, float16 C: one rounding of the float32 sum */
    uint16_t h3[2] = {facet_float_to_half(1.0f), facet_float_to_half(1.0f / 1024.0f)};
    uint16_t *ha16 = dev_alloc<uint16_t>(2), *hc16 = dev_alloc<uint16_t>(1);
    cudaMemcpy(ha16, h3, 4, cudaMemcpyHostToDevice);
    /* [1, 2^-10] . [1, 2^-10]^T = 1 + 2^-20, which float16 rounds to 1 */
    s = cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 2, &alpha, ha16, CUDA_R_16F, 1, 0, ha16,
                                   CUDA_R_16F, 2, 0, &beta, hc16, CUDA_R_16F, 1, 0, 1, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT);
    uint16_t r16;
    cudaMemcpy(&r16, hc16, 2, cudaMemcpyDeviceToHost);
    CHECK(s == CUBLAS_STATUS_SUCCESS && r16 == facet_float_to_half(1.0f), "fp16: %#x", r16);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cudaFree(ha16);
    cudaFree(hc16);
    cublasDestroy(h);
}

/* ---- blocks on several OS threads ---- */

/* every block puts its own index into shared memory, and each thread reads
 * the whole block's copy after a barrier, round after round */
static __global__ void shared_id_kernel(int *wrong, int rounds)
{
    __shared__ int ids[256];
    const int t = (int)threadIdx.x, n = (int)blockDim.x;
    const int id = (int)(blockIdx.x + gridDim.x * blockIdx.y);
    int bad = 0;
    for (int r = 0; r < rounds; r++) {
        ids[t] = id * 100 + r;
        __syncthreads();
        for (int k = 0; k < n; k++) bad += ids[(t + k) % n] != id * 100 + r;
        __syncthreads();
    }
    wrong[id * n + t] = bad;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Thread 0 of block b raises flags[b], then waits (up to 10 s) for the
 * other block's flag: with two OS threads both blocks are then in flight at
 * once, between their shared-memory write and read. */
static __device__ int meet(int *flags)
{
    const int b = (int)blockIdx.x;
    __atomic_store_n(&flags[b], 1, __ATOMIC_SEQ_CST);
    const double end = seconds() + 10.0;
    while (!__atomic_load_n(&flags[1 - b], __ATOMIC_SEQ_CST))
        if (seconds() > end) return 0;
        else sched_yield();
    return 1;
}

/* out[b] = what block b reads back of its shared value, out[2 + b] = 1 if the blocks met */
static __global__ void overlap_kernel(int *flags, int *out)
{
    __shared__ int id;
    const int b = (int)blockIdx.x;
    if (threadIdx.x == 0) id = 10 + b;
    __syncthreads();
    if (threadIdx.x == 0) out[2 + b] = meet(flags);
    __syncthreads();
    if (threadIdx.x == 0) out[b] = id;
}

/* the deadlock of deadlock_kernel, in a warp of 32 threads */
static __device__ void deadlock_here(int *out)
{
    const int t = (int)threadIdx.x;
    if (t < 16)
        __syncthreads();
    else
        out[t] = __shfl_down_sync(0xffffffffu, t, 1);
}

/* block bad (every block if bad < 0) deadlocks; the others write 1 */
static __global__ void fault_one_kernel(int *out, int bad)
{
    if ((int)blockIdx.x == bad || bad < 0)
        deadlock_here(out);
    else
        out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

/* block 1 faults while block 0, which waits for it to start, is in flight on another OS thread */
static __global__ void fault_beside_kernel(int *flags, int *out)
{
    if (threadIdx.x == 0) out[blockIdx.x] = meet(flags);
    if (blockIdx.x == 1) deadlock_here(out + 2);
}

static void test_parallel(void)
{
    facet_emu::set_threads(4);

    /* per-block shared memory, certain overlap */
    int *flags = dev_alloc<int>(2), *out = dev_alloc<int>(34);
    cudaMemsetAsync(flags, 0, 2 * sizeof(int));
    overlap_kernel<<<2, 64>>>(flags, out);
    std::vector<int> o = to_host(out, 4);
    CHECK(o[2] == 1 && o[3] == 1, "the two blocks never ran at once: %d %d", o[2], o[3]);
    CHECK(o[0] == 10 && o[1] == 11, "blocks ran at once and read %d %d of their shared values, want 10 11", o[0], o[1]);

    /* per-block shared memory, many blocks */
    const int nb = 400, nt = 128;
    int *wrong = dev_alloc<int>(nb * nt);
    shared_id_kernel<<<dim3(20, 20), nt>>>(wrong, 8);
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "shared ids");
    std::vector<int> w = to_host(wrong, nb * nt);
    long bad = 0;
    for (int v : w) bad += v;
    CHECK(bad == 0, "%ld reads of shared memory saw another block's value", bad);

    /* the built-in indices of a 3-D grid, whichever thread runs a block */
    dim3 grid(7, 5, 3), block(8, 4, 2);
    const int per = 64, blocks = 105;
    int *idx = dev_alloc<int>(per * blocks);
    index_kernel<<<grid, block>>>(idx);
    std::vector<int> hi = to_host(idx, per * blocks);
    int badi = 0;
    for (int b = 0; b < blocks; b++)
        for (int z = 0; z < 2; z++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 8; x++)
                    badi += hi[(size_t)(b * per + x + 8 * (y + 4 * z))] != b * 100000 + z * 10000 + y * 100 + x;
    CHECK(badi == 0, "%d threads saw wrong indices", badi);

    /* the same bits with 1 and with 4 threads: block sums of floats in many blocks */
    const int rows = 300, n = 777;
    std::vector<float> h((size_t)rows * n);
    for (size_t i = 0; i < h.size(); i++) h[i] = sinf((float)i * 0.37f) * 1e3f + 1.0f / (float)(i % 13 + 1);
    float *x = dev_alloc<float>(h.size()), *sum = dev_alloc<float>(rows);
    cudaMemcpy(x, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
    std::vector<float> r[2];
    for (int k = 0; k < 2; k++) {
        facet_emu::set_threads(k == 0 ? 1 : 4);
        block_sum_kernel<<<rows, 96>>>(sum, x, n);
        r[k] = to_host(sum, rows);
    }
    double err = 0;
    for (int b = 0; b < rows; b++) {
        double want = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            want += h[(size_t)(b * n + i)];
            mag += fabs(h[(size_t)(b * n + i)]);
        }
        err = fmax(err, fabs(r[0][(size_t)b] - want) / mag);
    }
    CHECK(err < 1e-5, "1 thread: block sums off by %g of the sum of magnitudes", err);
    CHECK(memcmp(r[0].data(), r[1].data(), rows * sizeof(float)) == 0, "4 threads: other bits than 1 thread");

    /* a fault in one block of many is the launch's error; then launches work again */
    int *d = dev_alloc<int>(nb * 32);
    (void)cudaGetLastError();
    fault_one_kernel<<<nb, 32>>>(d, 137);
    cudaError_t e = cudaDeviceSynchronize();
    const char *msg = cudaGetErrorString(e);
    CHECK(e == cudaErrorLaunchFailure && strstr(msg, "fault_one_kernel, block (137,0,0): deadlock"),
          "one block of %d: %s", nb, msg);
    facet_emu::reset_context();
    /* every block faults: one error */
    fault_one_kernel<<<nb, 32>>>(d, -1);
    e = cudaDeviceSynchronize();
    msg = cudaGetErrorString(e);
    CHECK(e == cudaErrorLaunchFailure && strstr(msg, "fault_one_kernel, block (") && strstr(msg, "deadlock"),
          "every block: %s", msg);
    facet_emu::reset_context();
    cudaMemsetAsync(flags, 0, 2 * sizeof(int));
    fault_beside_kernel<<<2, 32>>>(flags, out);
    e = cudaDeviceSynchronize();
    msg = cudaGetErrorString(e);
    facet_emu::reset_context();
    o = to_host(out, 2);
    CHECK(e == cudaErrorLaunchFailure && strstr(msg, "fault_beside_kernel, block (1,0,0): deadlock") && o[0] == 1,
          "a fault beside a running block: %s (met %d)", msg, o[0]);
    shared_id_kernel<<<dim3(20, 20), nt>>>(wrong, 2);
    w = to_host(wrong, nb * nt);
    bad = 0;
    for (int v : w) bad += v;
    CHECK(cudaGetLastError() == cudaSuccess && bad == 0, "after the faults: %ld wrong", bad);

    facet_emu::set_threads(0);
    for (int *p : {flags, out, wrong, idx, d}) cudaFree(p);
    cudaFree(x);
    cudaFree(sum);
}

/* FACET_EMU_ORDER: each thread order exposes the missing barrier the other hides;
 * kernels with their barriers give the same results in both orders */
static void test_order(void)
{
    const int n = 256;
    int *d = dev_alloc<int>(n);
    int salt = 1000;
    for (int rev = 0; rev <= 1; rev++) {
        facet_emu::set_order(rev);
        for (int step : {-1, 1}) {
            racy_kernel<<<1, n>>>(d, step, salt);
            CHECK(cudaGetLastError() == cudaSuccess, "launch");
            std::vector<int> h = to_host(d, n);
            int stale = 0;
            for (int t = 0; t < n; t++) stale += h[(size_t)t] != ((t + step + n) % n) * 3 + salt;
            /* the reads of a thread that runs before the writer are stale: all but the wrap-around one */
            const bool writer_first = (step < 0) == (rev == 0);
            CHECK(stale == (writer_first ? 1 : n - 1), "order %d, step %d: %d stale reads", rev, step, stale);
            salt += 1000;
        }
    }
    facet_emu::set_order(1);
    test_barrier();
    test_block_sum();
    test_shuffles();
    facet_emu::set_order(-1);
    cudaFree(d);
}

/* ---- cuBLAS fidelity: what real cuBLAS rejects, the emulator rejects with
 * the same status; what cuBLAS leaves undefined (misaligned operands, C
 * overlapping A, B or its own batch) fails here; beta = 0 never reads C;
 * the math mode; and blas.cu's calls (row-major swap, k = 0, the handle's
 * math mode that keeps 16-bit results rounded once). ---- */

/* a cuBLAS call's status, for the checks below */
#define CUBLAS_IS(call, want) \
    do { cublasStatus_t s_ = (call); CHECK(s_ == (want), "%s: got %s", #call, cublasGetStatusString(s_)); } while (0)

template <typename T>
static T *cb_upload(const std::vector<T> &h)
{
    T *d = dev_alloc<T>(h.size());
    cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}

/* the statuses of bad arguments, as cuBLAS's documentation gives them */
static void test_cublas_statuses(void)
{
    cublasHandle_t h;
    CUBLAS_IS(cublasCreate(NULL), CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    float *a = cb_upload(std::vector<float>(16, 1.0f)), *b = cb_upload(std::vector<float>(16, 1.0f));
    float *c = cb_upload(std::vector<float>(16, 0.0f));
    uint16_t *a16 = cb_upload(std::vector<uint16_t>(16, 0x3c00)), *c16 = cb_upload(std::vector<uint16_t>(16, 0));
    const float one = 1.0f, zero = 0.0f;
    const cublasOperation_t N = CUBLAS_OP_N;
    /* CUBLAS_COMPUTE_32F_FAST_TF32 takes float32 A, B and C only */
    CUBLAS_IS(cublasGemmStridedBatchedEx(h, N, N, 2, 2, 2, &one, a16, CUDA_R_16F, 2, 0, a16, CUDA_R_16F, 2, 0, &zero,
                                         c, CUDA_R_32F, 2, 0, 1, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_NOT_SUPPORTED);
    CUBLAS_IS(cublasGemmEx(h, N, N, 2, 2, 2, &one, a, CUDA_R_32F, 2, b, CUDA_R_32F, 2, &zero, c16, CUDA_R_16F, 2,
                           CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_NOT_SUPPORTED);
    /* CUBLAS_COMPUTE_32F: A and B of one type; C of theirs or float32 */
    CUBLAS_IS(cublasGemmEx(h, N, N, 2, 2, 2, &one, a16, CUDA_R_16F, 2, a16, CUDA_R_16BF, 2, &zero, c, CUDA_R_32F, 2,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_NOT_SUPPORTED);
    CUBLAS_IS(cublasGemmEx(h, N, N, 2, 2, 2, &one, a, CUDA_R_32F, 2, b, CUDA_R_32F, 2, &zero, c16, CUDA_R_16F, 2,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_NOT_SUPPORTED);
    CUBLAS_IS(cublasGemmEx(h, N, N, 2, 2, 2, &one, a16, CUDA_R_16F, 2, a16, CUDA_R_16F, 2, &zero, c16, CUDA_R_16BF, 2,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_NOT_SUPPORTED);
    CUBLAS_IS(cublasGemmEx(h, N, N, 2, 2, 2, &one, a, CUDA_R_32F, 2, b, CUDA_R_32F, 2, &zero, c, CUDA_R_32F, 2,
                           (cublasComputeType_t)64, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_NOT_SUPPORTED);
    CUBLAS_IS(cublasGemmEx(h, N, N, 2, 2, 2, &one, a, CUDA_R_32F, 2, b, CUDA_R_32F, 2, &zero, c, CUDA_R_32F, 2,
                           CUBLAS_COMPUTE_32F, (cublasGemmAlgo_t)99),
              CUBLAS_STATUS_NOT_SUPPORTED);
    /* NULL scalars, and (host pointer mode) a scalar in device memory */
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, NULL, a, 2, 0, b, 2, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, NULL, c, 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, a, a, 2, 0, b, 2, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    /* operations, sizes, leading dimensions (k = 0 does not waive lda >= m for op N) */
    CUBLAS_IS(cublasSgemmStridedBatched(h, (cublasOperation_t)3, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, &zero, c, 2, 0,
                                        1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, -1, 2, 2, &one, a, 2, 0, b, 2, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, &zero, c, 2, 0, -1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, &zero, c, 1, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 0, &one, a, 1, 0, b, 1, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, CUBLAS_OP_T, N, 2, 2, 3, &one, a, 2, 0, b, 3, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    /* empty problems succeed without touching anything (NULL operands included) */
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 0, 2, 2, &one, NULL, 1, 0, NULL, 2, 0, &zero, NULL, 1, 0, 1),
              CUBLAS_STATUS_SUCCESS);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, NULL, 2, 0, NULL, 2, 0, &zero, NULL, 2, 0, 0),
              CUBLAS_STATUS_SUCCESS);
    /* what cuBLAS leaves undefined: a misaligned operand, C overlapping A or
     * B, two matrices of C's batch sharing elements */
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, &zero,
                                        (float *)((char *)c + 2), 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, &zero, a + 3, 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, c + 8, 2, 0, &zero, c, 2, 4, 3),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, &zero, c, 2, 0, 2),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, &zero, c, 2, 3, 2),
              CUBLAS_STATUS_INVALID_VALUE);
    /* the handle: math modes the emulator has, a destroyed handle */
    cublasMath_t mode;
    CUBLAS_IS(cublasGetMathMode(h, &mode), CUBLAS_STATUS_SUCCESS);
    CHECK(mode == CUBLAS_DEFAULT_MATH, "a new handle's math mode: %d", (int)mode);
    CUBLAS_IS(cublasSetMathMode(h, (cublasMath_t)2), CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasGetMathMode(h, NULL), CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
    CUBLAS_IS(cublasDestroy(h), CUBLAS_STATUS_NOT_INITIALIZED);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, b, 2, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_NOT_INITIALIZED);
    CUBLAS_IS(cublasSetMathMode(NULL, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_NOT_INITIALIZED);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cudaFree(a16);
    cudaFree(c16);
}

/* values: beta = 0 and k = 0, a shared B (stride 0) and an interleaved C,
 * TF32 math mode, and reduced-precision reductions by math mode */
static void test_cublas_values(void)
{
    cublasHandle_t h;
    cublasCreate(&h);
    const cublasOperation_t N = CUBLAS_OP_N;
    const float one = 1.0f, zero = 0.0f, two = 2.0f, inf = INFINITY;
    /* beta 0: C's NaN (fresh device memory) is not read, for a 16-bit C too */
    std::vector<uint16_t> h16 = {facet_float_to_half(1.0f), facet_float_to_half(2.0f)};
    uint16_t *a16 = cb_upload(h16), *c16 = cb_upload(std::vector<uint16_t>(1, 0x7e00));
    CUBLAS_IS(cublasGemmEx(h, N, N, 1, 1, 2, &one, a16, CUDA_R_16F, 1, a16, CUDA_R_16F, 2, &zero, c16, CUDA_R_16F, 1,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    CHECK(to_host(c16, 1)[0] == facet_float_to_half(5.0f), "beta 0 over NaN, float16: %#x", to_host(c16, 1)[0]);
    /* k = 0: C = beta C whatever alpha is; beta 0 writes zeros over NaN */
    float *c = cb_upload(std::vector<float>{NAN, NAN, 3.0f, -1.0f});
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 1, 0, &inf, NULL, 2, 0, NULL, 1, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_SUCCESS);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 1, 0, &inf, NULL, 2, 0, NULL, 1, 0, &two, c + 2, 2, 0, 1),
              CUBLAS_STATUS_SUCCESS);
    std::vector<float> r = to_host(c, 4);
    CHECK(r[0] == 0.0f && r[1] == 0.0f && r[2] == 6.0f && r[3] == -2.0f, "k = 0: %g %g %g %g", r[0], r[1], r[2], r[3]);
    cudaFree(c);
    /* a shared B (stride 0) into two interleaved C matrices (ldc 4, stride 2):
     * column-major 2x2 A_q = [q+1 0; 0 q+1], B = [1 2; 3 4] */
    float *a = cb_upload(std::vector<float>{1, 0, 0, 1, 2, 0, 0, 2}), *b = cb_upload(std::vector<float>{1, 3, 2, 4});
    c = cb_upload(std::vector<float>(8, NAN));
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 4, b, 2, 0, &zero, c, 4, 2, 2),
              CUBLAS_STATUS_SUCCESS);
    r = to_host(c, 8);
    const float want[8] = {1, 3, 2, 6, 2, 4, 4, 8};
    int bad = 0;
    for (int i = 0; i < 8; i++) bad += r[(size_t)i] != want[i];
    CHECK(bad == 0, "shared B, interleaved C: %d wrong", bad);
    /* TF32 math mode: SGEMM takes its inputs as TF32 (1 + 2^-11 rounds to 1 + 2^-10) */
    const float x = 1.0f + 1.0f / 2048.0f;
    cudaMemcpy(a, &x, 4, cudaMemcpyHostToDevice);
    cudaMemcpy(b, &one, 4, cudaMemcpyHostToDevice);
    CUBLAS_IS(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 1, 1, 1, &one, a, 1, 0, b, 1, 0, &zero, c, 1, 0, 1),
              CUBLAS_STATUS_SUCCESS);
    CHECK(to_host(c, 1)[0] == 1.0f + 1.0f / 1024.0f, "TF32 math mode: %.9g", to_host(c, 1)[0]);
    CUBLAS_IS(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 1, 1, 1, &one, a, 1, 0, b, 1, 0, &zero, c, 1, 0, 1),
              CUBLAS_STATUS_SUCCESS);
    CHECK(to_host(c, 1)[0] == x, "default math mode: %.9g", to_host(c, 1)[0]);
    /* [1, y, y, 0] . [1, 1, 1, 1] with y = 3/8 of float16's spacing s at 1:
     * 1 + 2y rounded once is 1 + s; the halves rounded to float16 first are
     * 1 and y, 1 in all */
    const float y = 3.0f / 8192.0f;
    std::vector<uint16_t> hy = {0x3c00, facet_float_to_half(y), facet_float_to_half(y), 0};
    uint16_t *ay = cb_upload(hy), *ones = cb_upload(std::vector<uint16_t>(4, 0x3c00));
    CUBLAS_IS(cublasGemmEx(h, N, N, 1, 1, 4, &one, ay, CUDA_R_16F, 1, ones, CUDA_R_16F, 4, &zero, c16, CUDA_R_16F, 1,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    CHECK(to_host(c16, 1)[0] == 0x3c00, "reduced-precision reduction: %.9g",
          facet_half_to_float(to_host(c16, 1)[0]));
    CUBLAS_IS(cublasSetMathMode(h, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION), CUBLAS_STATUS_SUCCESS);
    CUBLAS_IS(cublasGemmEx(h, N, N, 1, 1, 4, &one, ay, CUDA_R_16F, 1, ones, CUDA_R_16F, 4, &zero, c16, CUDA_R_16F, 1,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    CHECK(to_host(c16, 1)[0] == 0x3c01, "reductions in float32: %.9g", facet_half_to_float(to_host(c16, 1)[0]));
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cudaFree(a16);
    cudaFree(c16);
    cudaFree(ay);
    cudaFree(ones);
    cublasDestroy(h);
}

/* blas.cu: row-major C = op(A) op(B) through cuBLAS's column-major calls,
 * k = 0, the int range, and 16-bit results rounded once */
static void test_cublas_call_sites(void)
{
    /* every transpose pair, lda/ldb/ldc past the minimum, a batch of 2 */
    const int64_t m = 3, n = 2, k = 4, ld = 6, bs = 30;
    std::vector<float> ha((size_t)(2 * bs)), hb((size_t)(2 * bs));
    for (size_t i = 0; i < ha.size(); i++) ha[i] = (float)((i * 7) % 11) - 5.0f;
    for (size_t i = 0; i < hb.size(); i++) hb[i] = (float)((i * 5) % 9) - 4.0f;
    float *a = cb_upload(ha), *b = cb_upload(hb), *c = dev_alloc<float>((size_t)(2 * bs));
    for (int ta = 0; ta <= 1; ta++)
        for (int tb = 0; tb <= 1; tb++) {
            int rc = facet_cuda_sgemm(ta, tb, m, n, k, 0.5f, a, ld, bs, b, ld, bs, 0.0f, c, ld, bs, 2);
            std::vector<float> r = to_host(c, (size_t)(2 * bs));
            int bad = 0;
            for (int64_t q = 0; q < 2; q++)
                for (int64_t i = 0; i < m; i++)
                    for (int64_t j = 0; j < n; j++) {
                        float want = 0;
                        for (int64_t p = 0; p < k; p++)
                            want += ha[(size_t)(q * bs + (ta ? p * ld + i : i * ld + p))] *
                                    hb[(size_t)(q * bs + (tb ? j * ld + p : p * ld + j))];
                        bad += r[(size_t)(q * bs + i * ld + j)] != 0.5f * want;   /* small integers: exact */
                    }
            CHECK(rc == 0 && bad == 0, "facet_cuda_sgemm ta %d tb %d: rc %d, %d wrong", ta, tb, rc, bad);
        }
    /* k = 0: C = beta C; beta 0 overwrites NaN */
    cudaMemcpy(c, std::vector<float>(6, NAN).data(), 24, cudaMemcpyHostToDevice);
    CHECK(facet_cuda_sgemm(0, 0, 2, 3, 0, 1.0f, NULL, 1, 0, NULL, 3, 0, 0.0f, c, 3, 0, 1) == 0, "k = 0");
    std::vector<float> r = to_host(c, 6);
    CHECK(r[0] == 0.0f && r[5] == 0.0f, "k = 0, beta 0: %g %g", r[0], r[5]);
    CHECK(facet_cuda_gemm_ex(0, 0, 2, 3, 0, 1.0f, FACET_DTYPE_FLOAT16, NULL, 1, 0, NULL, 3, 0, 0.0f,
                             FACET_DTYPE_FLOAT16, c, 3, 0, 1) == FACET_STATUS_ERR_ARG, "gemm_ex k = 0");
    CHECK(facet_cuda_sgemm(0, 0, (int64_t)1 << 31, 1, 1, 1.0f, a, 1, 0, b, 1, 0, 0.0f, c, 1, 0, 1) ==
              FACET_STATUS_ERR_ARG, "m = 2^31");
    /* 16-bit C rounded once from the float32 sum, whatever split-K cuBLAS
     * picks (the handle disallows reduced-precision reductions): [1, y, y, 0]
     * . [1, 1, 1, 1] with y 3/8 of the spacing s at 1 is 1 + s, not 1 */
    for (int dt : {FACET_DTYPE_FLOAT16, FACET_DTYPE_BFLOAT16}) {
        const bool f16 = dt == FACET_DTYPE_FLOAT16;
        const float s = f16 ? 1.0f / 1024.0f : 1.0f / 128.0f, y = 0.375f * s;
        uint16_t one = f16 ? facet_float_to_half(1.0f) : facet_float_to_bf16(1.0f);
        uint16_t yy = f16 ? facet_float_to_half(y) : facet_float_to_bf16(y);
        uint16_t *a16 = cb_upload(std::vector<uint16_t>{one, yy, yy, 0});
        uint16_t *b16 = cb_upload(std::vector<uint16_t>(4, one)), *c16 = dev_alloc<uint16_t>(1);
        int rc = facet_cuda_gemm_ex(0, 0, 1, 1, 4, 1.0f, dt, a16, 4, 0, b16, 1, 0, 0.0f, dt, c16, 1, 0, 1);
        uint16_t got = to_host(c16, 1)[0];
        float v = f16 ? facet_half_to_float(got) : facet_bf16_to_float(got);
        CHECK(rc == 0 && v == 1.0f + s, "facet_cuda_gemm_ex %s: rc %d, %.9g (1 + 3s/4 rounded once)",
              f16 ? "float16" : "bfloat16", rc, v);
        cudaFree(a16);
        cudaFree(b16);
        cudaFree(c16);
    }
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
}

static void test_cublas_fidelity(void)
{
    test_cublas_statuses();
    test_cublas_values();
    test_cublas_call_sites();
}

/* ---- FACET_EMU_GEMM=scramble: a GPU kernel's k order (docs/cuda-emulator.md, cuBLAS) ---- */

/* column-major C (m x n, batch) = A (m x k) B (k x n) in float32, scrambled or not */
static std::vector<float> scramble_sgemm(bool scramble, int m, int n, int k, int batch, const std::vector<float> &ha,
                                         const std::vector<float> &hb)
{
    if (scramble) setenv("FACET_EMU_GEMM", "scramble", 1);
    else unsetenv("FACET_EMU_GEMM");
    cublasHandle_t h;
    cublasCreate(&h);
    float *a = cb_upload(ha), *b = cb_upload(hb), *c = dev_alloc<float>((size_t)m * n * batch);
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_IS(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a, m, (long long)m * k, b, k,
                                        (long long)k * n, &zero, c, m, (long long)m * n, batch),
              CUBLAS_STATUS_SUCCESS);
    std::vector<float> r = to_host(c, (size_t)m * n * batch);
    unsetenv("FACET_EMU_GEMM");
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    cublasDestroy(h);
    return r;
}

/* Every element within the bound of any summation order with float32
 * roundings (|error| <= gamma_k sum |a_p b_p|, gamma_k = k u / (1 - k u),
 * u = 2^-24) of a double reference; the same bits on a second run; other
 * bits than the default order's for some elements; the same order for every
 * element of one GEMM (equal rows of A, equal rows of C) but not for every
 * shape. */
static void test_gemm_scramble(void)
{
    /* k = 2, one chunk: a fused chain from the first term. With
     * x = 1 + 2^-12: fl(x x) = 1 + 2^-11 (a tie to even), then
     * fma(-x, x, 1 + 2^-11) = -2^-24. Last to first gives +2^-24, and
     * unfused products 0. */
    const float x = 1.0f + 1.0f / 4096.0f;
    std::vector<float> r = scramble_sgemm(true, 1, 1, 2, 1, {x, -x}, {x, x});
    CHECK(r[0] == -1.0f / 16777216.0f, "k = 2, a fused chain first to last: %.9g, want -2^-24", r[0]);

    const int shapes[][4] = {{3, 5, 100, 2}, {7, 2, 1000, 1}, {1, 1, 4097, 1}, {5, 3, 77, 3}, {2, 300, 513, 1}};
    uint32_t seed = 12345;
    auto next = [&seed]() {
        seed = seed * 1664525u + 1013904223u;
        return (float)(seed >> 8) / 16777216.0f * 2.0f - 1.0f;
    };
    int outside = 0, unstable = 0, moved = 0;
    size_t elements = 0;
    for (const auto &s : shapes) {
        const int m = s[0], n = s[1], k = s[2], batch = s[3];
        std::vector<float> ha((size_t)m * k * batch), hb((size_t)k * n * batch);
        /* magnitudes over 2^-8..2^8 and both signs: cancellation */
        for (float &v : ha) v = ldexpf(next(), (int)(next() * 8.0f));
        for (float &v : hb) v = next();
        std::vector<float> c1 = scramble_sgemm(true, m, n, k, batch, ha, hb);
        std::vector<float> c2 = scramble_sgemm(true, m, n, k, batch, ha, hb);
        std::vector<float> c0 = scramble_sgemm(false, m, n, k, batch, ha, hb);
        const double u = 1.0 / 16777216.0, gamma = k * u / (1.0 - k * u);
        for (int q = 0; q < batch; q++)
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) {
                    double ref = 0, mag = 0;
                    for (int p = 0; p < k; p++) {
                        const double t = (double)ha[(size_t)(q * m * k + i + p * m)] * hb[(size_t)(q * k * n + p + j * k)];
                        ref += t;
                        mag += fabs(t);
                    }
                    const size_t e = (size_t)(q * m * n + i + j * m);
                    outside += fabs(c1[e] - ref) > gamma * mag;
                    unstable += memcmp(&c1[e], &c2[e], 4) != 0;
                    moved += c1[e] != c0[e];
                    elements++;
                }
    }
    CHECK(outside == 0, "scramble: %d of %zu elements outside gamma_k sum |a b|", outside, elements);
    CHECK(unstable == 0, "scramble: %d of %zu elements changed bits on a second run", unstable, elements);
    CHECK(moved > 0, "scramble: no element of %zu differs from the default order's", elements);

    /* one row of A repeated m times against one column: all m results
     * equal (one order per GEMM), and some m (a shape) give other bits */
    const int k = 1000;
    std::vector<float> row((size_t)k), col((size_t)k);
    for (int p = 0; p < k; p++) {
        row[(size_t)p] = ldexpf(next(), (int)(next() * 8.0f));
        col[(size_t)p] = next();
    }
    std::set<uint32_t> seen;
    int unequal = 0;
    for (int m = 1; m <= 12; m++) {
        std::vector<float> ha((size_t)m * k);
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) ha[(size_t)(i + p * m)] = row[(size_t)p];
        std::vector<float> c = scramble_sgemm(true, m, 1, k, 1, ha, col);
        for (int i = 1; i < m; i++) unequal += memcmp(&c[0], &c[(size_t)i], 4) != 0;
        uint32_t bits;
        memcpy(&bits, &c[0], 4);
        seen.insert(bits);
    }
    CHECK(unequal == 0, "scramble: %d equal rows of A gave other bits", unequal);
    CHECK(seen.size() >= 2, "scramble: one result for 12 shapes (%zu distinct)", seen.size());
}

/* Scrambled 16-bit GEMMs: with CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION
 * a float16/bfloat16 C is the float32 C of the same GEMM rounded once; without
 * it the split-K partials are rounded to C's type first ([1, y, y, 0] .
 * [1, 1, 1, 1] with y 3/8 of the spacing s at 1: 1 + s rounded once, 1 in halves). */
static void test_gemm_scramble_16bit(void)
{
    setenv("FACET_EMU_GEMM", "scramble", 1);
    cublasHandle_t h;
    cublasCreate(&h);
    const cublasOperation_t N = CUBLAS_OP_N;
    const float one = 1.0f, zero = 0.0f;
    const int m = 4, n = 3, k = 300;
    uint32_t seed = 777;
    for (cudaDataType_t t : {CUDA_R_16F, CUDA_R_16BF}) {
        const bool f16 = t == CUDA_R_16F;
        std::vector<uint16_t> ha((size_t)m * k), hb((size_t)k * n);
        for (uint16_t &v : ha) {
            seed = seed * 1664525u + 1013904223u;
            const float f = (float)(seed >> 8) / 16777216.0f * 4.0f - 2.0f;
            v = f16 ? facet_float_to_half(f) : facet_float_to_bf16(f);
        }
        for (uint16_t &v : hb) {
            seed = seed * 1664525u + 1013904223u;
            const float f = (float)(seed >> 8) / 16777216.0f - 0.5f;
            v = f16 ? facet_float_to_half(f) : facet_float_to_bf16(f);
        }
        uint16_t *a = cb_upload(ha), *b = cb_upload(hb), *c16 = dev_alloc<uint16_t>((size_t)m * n);
        float *c32 = dev_alloc<float>((size_t)m * n);
        CUBLAS_IS(cublasSetMathMode(h, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION), CUBLAS_STATUS_SUCCESS);
        CUBLAS_IS(cublasGemmEx(h, N, N, m, n, k, &one, a, t, m, b, t, k, &zero, c32, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT),
                  CUBLAS_STATUS_SUCCESS);
        CUBLAS_IS(cublasGemmEx(h, N, N, m, n, k, &one, a, t, m, b, t, k, &zero, c16, t, m, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT),
                  CUBLAS_STATUS_SUCCESS);
        std::vector<float> r32 = to_host(c32, (size_t)m * n);
        std::vector<uint16_t> r16 = to_host(c16, (size_t)m * n);
        int bad = 0;
        for (size_t e = 0; e < r16.size(); e++)
            bad += r16[e] != (f16 ? facet_float_to_half(r32[e]) : facet_float_to_bf16(r32[e]));
        CHECK(bad == 0, "scramble, %s C: %d elements not the float32 C rounded once", f16 ? "float16" : "bfloat16",
              bad);
        /* the split partials in C's type */
        const float s = f16 ? 1.0f / 1024.0f : 1.0f / 128.0f, y = 0.375f * s;
        const uint16_t o = f16 ? facet_float_to_half(1.0f) : facet_float_to_bf16(1.0f);
        const uint16_t yy = f16 ? facet_float_to_half(y) : facet_float_to_bf16(y);
        uint16_t *ay = cb_upload(std::vector<uint16_t>{o, yy, yy, 0}), *ones = cb_upload(std::vector<uint16_t>(4, o));
        for (int allow = 0; allow <= 1; allow++) {
            CUBLAS_IS(cublasSetMathMode(h, allow ? CUBLAS_DEFAULT_MATH
                                                 : CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION),
                      CUBLAS_STATUS_SUCCESS);
            CUBLAS_IS(cublasGemmEx(h, N, N, 1, 1, 4, &one, ay, t, 1, ones, t, 4, &zero, c16, t, 1, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
                      CUBLAS_STATUS_SUCCESS);
            const uint16_t got = to_host(c16, 1)[0];
            const float v = f16 ? facet_half_to_float(got) : facet_bf16_to_float(got);
            CHECK(v == (allow ? 1.0f : 1.0f + s), "scramble, %s, reduced-precision reductions %s: %.9g",
                  f16 ? "float16" : "bfloat16", allow ? "allowed" : "disallowed", v);
        }
        cudaFree(a);
        cudaFree(b);
        cudaFree(c16);
        cudaFree(c32);
        cudaFree(ay);
        cudaFree(ones);
    }
    cublasDestroy(h);
    unsetenv("FACET_EMU_GEMM");
}

/* After a fault the context is lost: a GEMM runs nothing and says so
 * (CUBLAS_STATUS_EXECUTION_FAILED), the runtime's last error stays the
 * fault's, bad arguments are still INVALID_VALUE, and blas.cu's callers get
 * a device error. */
static void test_gemm_lost_context(void)
{
    cublasHandle_t h;
    cublasCreate(&h);
    const cublasOperation_t N = CUBLAS_OP_N;
    const float one = 1.0f, zero = 0.0f;
    float *a = cb_upload(std::vector<float>(4, 1.0f)), *c = cb_upload(std::vector<float>(4, -1.0f));
    uint16_t *a16 = cb_upload(std::vector<uint16_t>(4, 0x3c00));
    int *d = dev_alloc<int>(32);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &one, a, 2, 0, a, 2, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_SUCCESS);
    CHECK(cudaDeviceSynchronize() == cudaSuccess && to_host(c, 4)[3] == 2.0f, "a GEMM before the fault");
    deadlock_kernel<<<1, 32>>>(d);
    CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "the fault");
    const float three = 3.0f;
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &three, a, 2, 0, a, 2, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_EXECUTION_FAILED);
    CUBLAS_IS(cublasGemmEx(h, N, N, 2, 2, 2, &three, a16, CUDA_R_16F, 2, a16, CUDA_R_16F, 2, &zero, c, CUDA_R_32F, 2,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_EXECUTION_FAILED);
    CUBLAS_IS(cublasGemmStridedBatchedEx(h, N, N, 2, 2, 2, &three, a, CUDA_R_32F, 2, 0, a, CUDA_R_32F, 2, 0, &zero, c,
                                         CUDA_R_32F, 2, 0, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_EXECUTION_FAILED);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &three, a, 1, 0, a, 2, 0, &zero, c, 2, 0, 1),
              CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_IS(cublasSgemmStridedBatched(h, N, N, 2, 2, 2, &three, a, 2, 0, a, 2, 0, &zero, c, 2, 4, 2),
              CUBLAS_STATUS_INVALID_VALUE);     /* the second C is past its allocation */
    CHECK(cudaGetLastError() == cudaErrorLaunchFailure, "the last error stays the fault's");
    int rc = facet_cuda_sgemm(0, 0, 2, 2, 2, 3.0f, a, 2, 0, a, 2, 0, 0.0f, c, 2, 0, 1);
    CHECK(rc == FACET_STATUS_ERR_DEVICE, "facet_cuda_sgemm on a lost context: %d %s", rc, facet_last_error());
    facet_emu::reset_context();
    std::vector<float> r = to_host(c, 4);
    CHECK(r[0] == 2.0f && r[3] == 2.0f, "the GEMMs after the fault never ran: %g %g", r[0], r[3]);
    cudaFree(a);
    cudaFree(c);
    cudaFree(a16);
    cudaFree(d);
    cublasDestroy(h);
}

int main(void)
{
    setenv("FACET_EMU_PROTECT", "1", 1);    /* before the first allocation: test_guard needs it */
    test_indices();
    test_block_sum();
    test_barrier();
    test_shuffles();
    test_faults();
    test_memory();
    test_stream();
    test_guard();
    test_other_segv();
    test_visible_devices();
    test_lost_context();
    test_last_error();
    test_events();
    test_copy_sync();
    test_launch_names();
    test_gemm();
    test_parallel();
    test_order();
    test_cublas_fidelity();
    test_gemm_scramble();
    test_gemm_scramble_16bit();
    test_gemm_lost_context();
    printf("test_emu: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
