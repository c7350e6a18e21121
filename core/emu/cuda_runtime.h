/*
 * cuda_runtime.h (emulator) - stands in for the CUDA runtime header when
 * the sources of core/cuda are built as plain C++ for the CPU (make FACET_CUDA=emu,
 * docs/cuda-emulator.md). It declares the part of the runtime facet uses,
 * maps the CUDA keywords onto C++ (a __shared__ variable becomes a
 * thread-local function static: the blocks of a launch run in parallel, one
 * at a time on each of the emulator's OS threads, so each block has its own
 * copy), and gives kernels their built-in indices (threadIdx, blockIdx,
 * blockDim, gridDim) from the emulator's current thread. The build rewrites
 * each `kernel<<<grid, block>>>(args)`
 * into `facet_emu::launch(kernel, "kernel", grid, block)(args)`, which
 * checks the shape and arguments and queues the launch on the emulated
 * default stream (runtime.cpp); launch.cpp runs every thread of a block as a
 * fiber, so __syncthreads and warp shuffles wait for the threads they name,
 * as on a GPU. Device memory is
 * host memory the emulator keeps a registry of: kernel pointer arguments,
 * copies and GEMM operands are checked against it.
 */
#ifndef FACET_EMU_CUDA_RUNTIME_H
#define FACET_EMU_CUDA_RUNTIME_H

/* the emulator's build (cuda_common.cuh passes kernel names through with it) */
#define FACET_CUDA_EMULATOR 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <functional>
#include <type_traits>

/* ---- keywords ----------------------------------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __launch_bounds__(...)

/* ---- types -------------------------------------------------------------------------------- */
struct uint3 {
    unsigned x, y, z;
};

struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};

struct __attribute__((aligned(8))) uint2 {
    unsigned x, y;
};

/* constexpr: a thread_state (below) is then initialised at compile time, as __thread needs */
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

/* the runtime's numbers, so a message reads as it would on a GPU */
enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidSymbol = 13,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};

enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

struct CUstream_st;
typedef struct CUstream_st *cudaStream_t;
struct CUevent_st;
typedef struct CUevent_st *cudaEvent_t;
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int multiProcessorCount;
    int major, minor;
    int warpSize;
    int maxThreadsPerBlock;
};

/* ---- runtime API (runtime.cpp) ------------------------------------------------------------- */
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s = 0);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

namespace facet_emu {
/* a host-to-device copy into a __constant__ symbol (an ordinary object here):
 * a pageable source is read now, a page-locked one when the copy runs; the
 * symbol is written in stream order */
cudaError_t symbol_copy(void *symbol, const void *src, size_t n, cudaStream_t s);
}

template <typename S>
static inline cudaError_t cudaMemcpyToSymbolAsync(S &symbol, const void *src, size_t n, size_t offset = 0,
                                                   cudaMemcpyKind kind = cudaMemcpyHostToDevice,
                                                   cudaStream_t s = 0)
{
    if (kind != cudaMemcpyHostToDevice || offset > sizeof(S) || n > sizeof(S) - offset) return cudaErrorInvalidValue;
    return facet_emu::symbol_copy((char *)&symbol + offset, src, n, s);
}

/* ---- the emulator ------------------------------------------------------------------------- */
namespace facet_emu {

/* the running thread's indices, set by the scheduler before it resumes a
 * thread: one copy per OS thread that runs blocks (__thread, not
 * thread_local: a use costs no call to a C++ TLS wrapper) */
struct thread_state {
    uint3 thread, block;
    dim3 block_dim, grid_dim;
};
extern __thread thread_state cur;

void sync_block(void);
/* value exchange among the 32 lanes of the calling warp: every lane puts v,
 * then takes the value lane src_lane(lane) put */
uint64_t warp_exchange(uint64_t v, unsigned mask, int delta, int mode);
enum { SHFL_DOWN = 0, SHFL_IDX = 1 };

/* Where a pointer handed to a kernel points: 1 device memory (or NULL), 0 not. */
int is_device_pointer(const void *p);
/* Records a launch fault (set as the launch's error, printed once). Outside
 * a kernel (a launch's pointer argument) it loses the context at once. */
void fault(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 1 when a launch may be queued: the context is not lost (a fault has not
 * happened) and the stream is the default one; otherwise 0, with the error set */
int launch_allowed(const char *name, cudaStream_t stream);
/* The kernel's name from the text of a launch helper's arguments
 * ("kernel<T>, a, b": up to the first comma outside <>), kept for the
 * process (launch.cpp). */
const char *kernel_name(const char *args_text);

typedef void (*body_fn)(void *ctx);
/* 1 when the launch shape is valid; otherwise sets cudaErrorInvalidConfiguration */
int shape_ok(const char *name, dim3 grid, dim3 block, size_t shared_bytes);
/* Runs body(ctx) for every thread of grid x block; 0, or 1 after a fault
 * (fault_message() says what). */
int run(const char *name, dim3 grid, dim3 block, size_t shared_bytes, body_fn body, void *ctx);
const char *fault_message(void);
/* Queues work on the emulated default stream (runtime.cpp): it runs at the
 * next synchronising call, or at once with FACET_EMU_SYNC=1. */
void enqueue(std::function<int(void)> op);

template <typename A>
static inline int check_arg(const char *name, int index, const A &a)
{
    if constexpr (std::is_pointer<A>::value) {
        if (!is_device_pointer((const void *)a)) {
            fault("kernel %s: argument %d (%p) is not device memory", name, index, (const void *)a);
            return 1;
        }
    }
    return 0;
}

template <typename F>
struct launcher {
    F *kernel;
    const char *name;
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;

    template <typename... A>
    void operator()(A... args) const
    {
        if (!launch_allowed(name, stream)) return;
        int index = 0, bad = 0;
        ((bad |= check_arg(name, index++, args)), ...);
        if (bad || !shape_ok(name, grid, block, shared_bytes)) return;
        /* the arguments are copied now, as a launch copies them */
        F *k = kernel;
        const char *nm = name;
        dim3 g = grid, b = block;
        size_t sb = shared_bytes;
        enqueue([=]() mutable {
            auto body = [&]() { k(args...); };
            return run(nm, g, b, sb, [](void *c) { (*(decltype(body) *)c)(); }, &body);
        });
    }
};

template <typename F>
static inline launcher<F> launch(F *kernel, const char *name, dim3 grid, dim3 block, size_t shared_bytes = 0,
                                 cudaStream_t stream = 0)
{
    return launcher<F>{kernel, name, grid, block, shared_bytes, stream};
}

}   /* namespace facet_emu */

#define threadIdx (facet_emu::cur.thread)
#define blockIdx (facet_emu::cur.block)
#define blockDim (facet_emu::cur.block_dim)
#define gridDim (facet_emu::cur.grid_dim)

static inline void __syncthreads(void) { facet_emu::sync_block(); }

template <typename T>
static inline T facet_emu_shfl(unsigned mask, T v, int arg, int mode)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffled value is at most 64 bits");
    uint64_t w = 0;
    memcpy(&w, &v, sizeof(T));
    w = facet_emu::warp_exchange(w, mask, arg, mode);
    memcpy(&v, &w, sizeof(T));
    return v;
}

template <typename T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    if (width != 32) facet_emu::fault("__shfl_down_sync: width %d (the emulator models 32)", width);
    return facet_emu_shfl(mask, v, (int)delta, facet_emu::SHFL_DOWN);
}

template <typename T>
static inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32)
{
    if (width != 32) facet_emu::fault("__shfl_sync: width %d (the emulator models 32)", width);
    return facet_emu_shfl(mask, v, src_lane, facet_emu::SHFL_IDX);
}

#endif
