/*
 * launch.cpp - kernel launches of the CUDA emulator (docs/cuda-emulator.md).
 * The blocks of a grid run one after another on the calling host thread
 * (under one lock: a GPU stream is in order too). The threads of a block
 * are fibers, started in thread order; a thread runs until it finishes or
 * waits at __syncthreads or a warp shuffle, and the waiting ones resume
 * together when every live thread of the block (or lane of the warp) has
 * arrived. A fiber whose thread finishes takes the next thread of the block,
 * so a kernel without barriers costs one switch a block, not one a thread.
 * What a GPU would reject or leave undefined is a fault, reported as the
 * launch's error (cudaErrorLaunchFailure, with the reason): a bad launch
 * shape, a barrier some threads never reach, a full-mask shuffle in a warp
 * with missing or exited lanes, a pointer argument outside device memory.
 * Fibers switch with a few lines of x86-64 assembly, with the
 * AddressSanitizer fiber annotations when that is on.
 */
#include "emu.h"

#include <mutex>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#include <sanitizer/common_interface_defs.h>
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#include <sanitizer/common_interface_defs.h>
#endif
#endif

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

/* Saves the callee-saved registers, MXCSR and the x87 control word on the
 * current stack, stores its pointer in *save, and resumes the stack at `to`
 * (one saved the same way, or a fresh one made by fiber_init). */
extern "C" void facet_emu_switch(void **save, void *to);
asm(".text\n"
    ".globl facet_emu_switch\n"
    ".hidden facet_emu_switch\n"
    ".type facet_emu_switch,@function\n"
    "facet_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  subq $8, %rsp\n"
    "  stmxcsr (%rsp)\n"
    "  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n"
    "  fldcw 4(%rsp)\n"
    "  addq $8, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size facet_emu_switch,.-facet_emu_switch\n");

namespace facet_emu {

thread_state cur;

namespace {

enum : uint8_t { T_UNSTARTED, T_RUNNING, T_RUNNABLE, T_WAIT_BLOCK, T_WAIT_WARP, T_DONE };

const size_t STACK_BYTES = (size_t)1 << 20;   /* address space; only the pages touched are memory */
const size_t GUARD_BYTES = 4096;
const unsigned MAX_FIBERS = 1100;             /* a block has at most 1024 threads */

struct fiber {
    void *sp;
    char *stack;        /* lowest usable byte; a guard page lies below */
    int thread;         /* the thread it runs, -1 between threads */
};

/* the block being run */
struct block_run {
    const char *name;
    body_fn body;
    void *ctx;
    int n;              /* threads */
    int next;           /* the first thread not started */
    int live;           /* threads not finished */
    int wait_block;     /* threads waiting at __syncthreads */
    bool faulted;
    bool running;       /* inside run() */
    std::vector<uint8_t> state;
    std::vector<fiber *> fiber_of;
    std::vector<int> warp_live, warp_wait;
    std::vector<uint64_t> slot;   /* a shuffle's values, one per thread */
    std::vector<int> runnable;    /* released threads, resumed in this order */
    size_t runnable_head;
};

std::mutex launch_lock;
block_run R;
void *sched_sp;
fiber *cur_fiber;
std::vector<fiber *> all_fibers, free_fibers;
char fault_msg[1024];
#ifdef EMU_ASAN
const void *sched_bottom;
size_t sched_size;
#endif

/* Switches from the current stack to `to`, whose stack spans [bottom, bottom + size). */
void switch_stack(void **save, void *to, const void *bottom, size_t size)
{
#ifdef EMU_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, bottom, size);
    facet_emu_switch(save, to);
    const void *from_bottom;
    size_t from_size;
    __sanitizer_finish_switch_fiber(fake, &from_bottom, &from_size);
    if (cur_fiber == NULL) return;
    /* resumed on a fiber: the scheduler switched here from its own stack */
    sched_bottom = from_bottom;
    sched_size = from_size;
#else
    (void)bottom;
    (void)size;
    facet_emu_switch(save, to);
#endif
}

void to_scheduler(fiber *f)
{
#ifdef EMU_ASAN
    switch_stack(&f->sp, sched_sp, sched_bottom, sched_size);
#else
    switch_stack(&f->sp, sched_sp, NULL, 0);
#endif
}

void to_fiber(fiber *f)
{
    cur_fiber = f;
    switch_stack(&sched_sp, f->sp, f->stack, STACK_BYTES);
    cur_fiber = NULL;
}

void set_thread(int t)
{
    const dim3 &b = cur.block_dim;
    unsigned u = (unsigned)t;
    cur.thread.x = u % b.x;
    cur.thread.y = (u / b.x) % b.y;
    cur.thread.z = u / (b.x * b.y);
}

/* The body of every fiber: runs threads of the current block until none is
 * left to start, then goes back to the pool and the scheduler. */
extern "C" void fiber_main(void)
{
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, &sched_bottom, &sched_size);
#endif
    for (;;) {
        fiber *f = cur_fiber;
        while (!R.faulted && R.next < R.n) {
            int t = R.next++;
            f->thread = t;
            R.fiber_of[(size_t)t] = f;
            R.state[(size_t)t] = T_RUNNING;
            set_thread(t);
            R.body(R.ctx);
            R.state[(size_t)t] = T_DONE;
            R.live--;
            R.warp_live[(size_t)(t >> 5)]--;
        }
        f->thread = -1;
        free_fibers.push_back(f);
        to_scheduler(f);
    }
}

/* A fresh stack whose first switch enters fiber_main: the saved frame of
 * facet_emu_switch with zero registers, the current MXCSR and x87 control
 * word, and fiber_main as the return address (16-byte aligned as at a call). */
void fiber_init(fiber *f)
{
    uintptr_t top = ((uintptr_t)f->stack + STACK_BYTES) & ~(uintptr_t)15;
    uintptr_t *sp = (uintptr_t *)(top - 16);
    sp[0] = (uintptr_t)&fiber_main;
    sp[1] = 0;
    sp -= 7;
    for (int i = 1; i < 7; i++) sp[i] = 0;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    memcpy((char *)sp, &mxcsr, 4);
    memcpy((char *)sp + 4, &fpucw, 2);
    f->sp = sp;
    f->thread = -1;
}

fiber *fiber_get(void)
{
    if (!free_fibers.empty()) {
        fiber *f = free_fibers.back();
        free_fibers.pop_back();
        return f;
    }
    if (all_fibers.size() >= MAX_FIBERS) return NULL;
    char *m = (char *)mmap(NULL, STACK_BYTES + GUARD_BYTES, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return NULL;
    (void)mprotect(m, GUARD_BYTES, PROT_NONE);
    fiber *f = new fiber;
    f->stack = m + GUARD_BYTES;
    fiber_init(f);
    all_fibers.push_back(f);
    return f;
}


void wait_here(uint8_t kind)
{
    fiber *f = cur_fiber;
    int t = f->thread;
    R.state[(size_t)t] = kind;
    if (kind == T_WAIT_BLOCK)
        R.wait_block++;
    else
        R.warp_wait[(size_t)(t >> 5)]++;
    to_scheduler(f);
}

void release(int t)
{
    R.state[(size_t)t] = T_RUNNABLE;
    R.runnable.push_back(t);
}

/* Every thread of the block, to the end or to a fault. */
void run_block(void)
{
    const int n = R.n;
    R.next = 0;
    R.live = n;
    R.wait_block = 0;
    R.state.assign((size_t)n, T_UNSTARTED);
    R.fiber_of.assign((size_t)n, NULL);
    const int warps = (n + 31) / 32;
    R.warp_live.assign((size_t)warps, 32);
    R.warp_live[(size_t)warps - 1] = n - 32 * (warps - 1);
    R.warp_wait.assign((size_t)warps, 0);
    R.slot.assign((size_t)warps * 32, 0);
    R.runnable.clear();
    R.runnable_head = 0;
    while (!R.faulted) {
        if (R.runnable_head < R.runnable.size()) {
            int t = R.runnable[R.runnable_head++];
            R.state[(size_t)t] = T_RUNNING;
            set_thread(t);
            to_fiber(R.fiber_of[(size_t)t]);
            continue;
        }
        R.runnable.clear();
        R.runnable_head = 0;
        if (R.next < n) {
            fiber *f = fiber_get();
            if (!f) {
                fault("kernel %s: no memory for the emulator's thread stacks", R.name);
                break;
            }
            to_fiber(f);
            continue;
        }
        if (R.live == 0) return;
        if (R.wait_block > 0 && R.wait_block == R.live) {
            for (int t = 0; t < n; t++)
                if (R.state[(size_t)t] == T_WAIT_BLOCK) release(t);
            R.wait_block = 0;
            continue;
        }
        bool any = false;
        for (int w = 0; w < warps; w++) {
            if (R.warp_wait[(size_t)w] == 0 || R.warp_wait[(size_t)w] != R.warp_live[(size_t)w]) continue;
            for (int t = 32 * w; t < n && t < 32 * (w + 1); t++)
                if (R.state[(size_t)t] == T_WAIT_WARP) release(t);
            R.warp_wait[(size_t)w] = 0;
            any = true;
        }
        if (any) continue;
        int in_block = 0, in_warp = 0;
        for (int t = 0; t < n; t++) {
            in_block += R.state[(size_t)t] == T_WAIT_BLOCK;
            in_warp += R.state[(size_t)t] == T_WAIT_WARP;
        }
        fault("kernel %s, block (%u,%u,%u): deadlock: %d of %d threads finished, %d wait at __syncthreads, "
              "%d at a warp shuffle whose warp has finished or diverged lanes",
              R.name, cur.block.x, cur.block.y, cur.block.z, n - R.live, n, in_block, in_warp);
    }
    /* a fault leaves fibers in the middle of a thread: start them afresh */
    for (fiber *f : all_fibers) {
        if (f->thread < 0) continue;
        fiber_init(f);
        free_fibers.push_back(f);
    }
}

}   /* namespace */

int shape_ok(const char *name, dim3 grid, dim3 block, size_t shared_bytes)
{
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    const char *why = NULL;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0)
        why = "a dimension is 0";
    else if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
        why = "more than 1024 threads a block, or a block dimension past 1024/1024/64";
    else if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
        why = "a grid dimension past 2^31-1/65535/65535";
    else if (shared_bytes > 48 * 1024)
        why = "more than 48 KiB of dynamic shared memory";
    if (!why) return 1;
    char detail[512];
    snprintf(detail, sizeof detail, "kernel %s, grid (%u,%u,%u), block (%u,%u,%u): %s", name, grid.x, grid.y,
             grid.z, block.x, block.y, block.z, why);
    fprintf(stderr, "facet-emu: %s\n", detail);
    set_error(cudaErrorInvalidConfiguration, detail);
    return 0;
}


const char *fault_message(void) { return fault_msg; }

void fault(const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "facet-emu: fault: %s\n", msg);
    if (!cur_fiber && !R.running) {
        /* outside a kernel (a launch's arguments, queued work): the caller's error */
        snprintf(fault_msg, sizeof fault_msg, "%s", msg);
        set_error(cudaErrorLaunchFailure, msg);
        return;
    }
    if (!R.faulted) snprintf(fault_msg, sizeof fault_msg, "%s", msg);
    R.faulted = true;
    /* inside a thread: abandon the launch here; the scheduler stops */
    if (cur_fiber) to_scheduler(cur_fiber);
}

int run(const char *name, dim3 grid, dim3 block, size_t shared_bytes, body_fn body, void *ctx)
{
    std::lock_guard<std::mutex> hold(launch_lock);
    R.name = name;
    R.body = body;
    R.ctx = ctx;
    R.n = (int)(block.x * block.y * block.z);
    R.faulted = false;
    R.running = true;
    cur.block_dim = block;
    cur.grid_dim = grid;
    for (unsigned z = 0; z < grid.z && !R.faulted; z++)
        for (unsigned y = 0; y < grid.y && !R.faulted; y++)
            for (unsigned x = 0; x < grid.x && !R.faulted; x++) {
                cur.block.x = x;
                cur.block.y = y;
                cur.block.z = z;
                run_block();
            }
    R.running = false;
    return R.faulted ? 1 : 0;
}

void sync_block(void)
{
    if (!cur_fiber) {
        fault("__syncthreads outside a kernel");
        return;
    }
    wait_here(T_WAIT_BLOCK);
}

uint64_t warp_exchange(uint64_t v, unsigned mask, int arg, int mode)
{
    if (!cur_fiber) {
        fault("a warp shuffle outside a kernel");
        return v;
    }
    const int t = cur_fiber->thread, w = t >> 5, lane = t & 31;
    if (mask != 0xffffffffu) fault("kernel %s: shuffle mask %#x (the emulator models full warps)", R.name, mask);
    if (R.n - 32 * w < 32)
        fault("kernel %s: a full-mask shuffle in warp %d, which has %d threads (the block has %d)", R.name, w,
              R.n - 32 * w, R.n);
    R.slot[(size_t)t] = v;
    wait_here(T_WAIT_WARP);
    int src = mode == SHFL_DOWN ? (lane + arg < 32 ? lane + arg : lane) : (arg & 31);
    uint64_t r = R.slot[(size_t)(32 * w + src)];
    wait_here(T_WAIT_WARP);    /* every lane has read before any puts again */
    return r;
}

}   /* namespace facet_emu */
