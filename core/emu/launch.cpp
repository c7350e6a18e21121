/*
 * launch.cpp - kernel launches of the CUDA emulator (docs/cuda-emulator.md).
 * Launches run one at a time (under one lock: a GPU stream is in order
 * too). The blocks of a launch run in parallel on FACET_EMU_THREADS OS
 * threads (default: the online CPUs), the calling host thread and helpers:
 * each takes the next block (in x, y, z order) until none is left, and the
 * launch returns when every block has finished; a one-block launch runs on
 * the calling thread alone. A block runs whole on one OS thread, which has
 * its own __shared__ variables (thread-local statics, cuda_runtime.h), block
 * state and fibers. The threads of a block are fibers, started in thread
 * order (FACET_EMU_ORDER=reverse: from the last; a missing barrier shows in
 * one order or the other); a thread runs until it finishes or waits at __syncthreads or a warp
 * shuffle, and the waiting ones resume together when every live thread of
 * the block (or lane of the warp) has arrived. A fiber whose thread
 * finishes takes the next thread of the block, so a kernel without barriers
 * costs one switch a block, not one a thread.
 * What a GPU would reject or leave undefined is a fault, reported as the
 * launch's error (cudaErrorLaunchFailure, with the reason): a bad launch
 * shape, a barrier some threads never reach, a full-mask shuffle in a warp
 * with missing or exited lanes, a pointer argument outside device memory.
 * The first fault of any block is the launch's; no block starts after it.
 * Fibers switch with a few lines of x86-64 assembly, with the
 * AddressSanitizer fiber annotations when that is on.
 */
/* the standard headers first: cuda_runtime.h defines __noinline__, which
 * <condition_variable> (through shared_ptr_base.h) uses as an attribute name */
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <pthread.h>
#include <set>
#include <string>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "emu.h"

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
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

__thread thread_state cur = {};

namespace {

enum : uint8_t { T_UNSTARTED, T_RUNNING, T_RUNNABLE, T_WAIT_BLOCK, T_WAIT_WARP, T_DONE };

const size_t STACK_BYTES = (size_t)1 << 20;   /* address space; only the pages touched are memory */
const size_t GUARD_BYTES = 4096;
const unsigned MAX_FIBERS = 1100;             /* a block has at most 1024 threads */
const int MAX_WORKERS = 256;

struct fiber {
    void *sp;
    char *stack;        /* lowest usable byte; a guard page lies below */
    int thread;         /* the thread it runs, -1 between threads */
};

/* the launch being run, shared by the workers that run its blocks */
struct launch_run {
    const char *name;
    body_fn body;
    void *ctx;
    dim3 grid, block;
    uint64_t blocks;                      /* grid.x * grid.y * grid.z */
    std::atomic<uint64_t> next{0};        /* the next block to take, in x, y, z order */
    std::atomic<bool> faulted{false};     /* set by the first fault; no block starts after it */
    char msg[1024];                       /* that fault, written by the worker that set faulted */
};

/* the block a worker is running */
struct block_run {
    const char *name;
    body_fn body;
    void *ctx;
    int n;              /* threads */
    int next;           /* the first thread not started */
    int live;           /* threads not finished */
    int wait_block;     /* threads waiting at __syncthreads */
    bool faulted;
    bool running;       /* inside run_blocks() */
    std::vector<uint8_t> state;
    std::vector<uint3> coord;     /* threadIdx of each thread, set once a launch */
    std::vector<fiber *> fiber_of;
    std::vector<int> warp_live, warp_wait;
    std::vector<uint64_t> slot;   /* a shuffle's values, one per thread */
    std::vector<int> runnable;    /* released threads, resumed in this order */
    size_t runnable_head;
};

/* What each OS thread that runs blocks (a launching host thread, a helper)
 * has of its own. A fiber is made, run and resumed by one OS thread only:
 * code compiled for it may keep the address of thread-local data (cur, a
 * __shared__ variable) across a switch. The scheduler finds its worker once
 * per entry and passes it on: a thread-local lookup costs a call in a
 * shared library. */
struct worker {
    block_run R;
    thread_state *cur;  /* this OS thread's facet_emu::cur */
    launch_run *L;      /* the launch whose blocks it runs; NULL between launches */
    void *sched_sp;
    fiber *cur_fiber;
    std::vector<fiber *> all_fibers, free_fibers;
#ifdef EMU_ASAN
    const void *sched_bottom;
    size_t sched_size;
#endif
    ~worker()
    {
        for (fiber *f : all_fibers) {
            munmap(f->stack - GUARD_BYTES, STACK_BYTES + GUARD_BYTES);
            delete f;
        }
    }
};

std::mutex launch_lock;
__thread worker *self;               /* this OS thread's worker, once it has run blocks */
thread_local char fault_msg[1024];   /* the last fault of work this thread ran */

/* frees the worker of a host thread that ends */
struct worker_owner {
    worker *w = NULL;
    ~worker_owner()
    {
        delete w;
        self = NULL;
    }
};
thread_local worker_owner owner;

worker &me(void)
{
    if (!self) {
        owner.w = new worker();
        owner.w->cur = &cur;
        self = owner.w;
    }
    return *self;
}

/* Switches from the current stack to `to`, whose stack spans [bottom, bottom + size). */
void switch_stack(worker &w, void **save, void *to, const void *bottom, size_t size)
{
#ifdef EMU_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, bottom, size);
    facet_emu_switch(save, to);
    const void *from_bottom;
    size_t from_size;
    __sanitizer_finish_switch_fiber(fake, &from_bottom, &from_size);
    if (w.cur_fiber == NULL) return;
    /* resumed on a fiber: the scheduler switched here from its own stack */
    w.sched_bottom = from_bottom;
    w.sched_size = from_size;
#else
    (void)w;
    (void)bottom;
    (void)size;
    facet_emu_switch(save, to);
#endif
}

void to_scheduler(worker &w, fiber *f)
{
#ifdef EMU_ASAN
    switch_stack(w, &f->sp, w.sched_sp, w.sched_bottom, w.sched_size);
#else
    switch_stack(w, &f->sp, w.sched_sp, NULL, 0);
#endif
}

void to_fiber(worker &w, fiber *f)
{
    w.cur_fiber = f;
    switch_stack(w, &w.sched_sp, f->sp, f->stack, STACK_BYTES);
    w.cur_fiber = NULL;
}

void set_thread(worker &w, int t) { w.cur->thread = w.R.coord[(size_t)t]; }

/* FACET_EMU_ORDER=reverse: the threads of a block start, and resume after a
 * barrier, from the last to the first. A GPU guarantees no order, so a
 * kernel whose result depends on it reads shared memory that another thread
 * of the same barrier interval writes (a missing __syncthreads): the
 * forward order shows a read of a later thread's write, the reverse order a
 * read of an earlier one's. 0 forward, 1 reverse, -1 not read yet. */
std::atomic<int> order{-1};

bool reverse_order(void)
{
    int o = order.load(std::memory_order_relaxed);
    if (o < 0) {
        const char *v = getenv("FACET_EMU_ORDER");
        o = v && strcmp(v, "reverse") == 0;
        order.store(o, std::memory_order_relaxed);
    }
    return o == 1;
}

/* the k-th thread of n to start or resume */
int nth(int k, int n, bool rev) { return rev ? n - 1 - k : k; }

/* The body of every fiber: runs threads of the current block until none is
 * left to start, then goes back to the pool and the scheduler. */
extern "C" void fiber_main(void)
{
    worker &w = *self;      /* the fiber's OS thread's, for all its life */
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, &w.sched_bottom, &w.sched_size);
#endif
    block_run &R = w.R;
    for (;;) {
        fiber *f = w.cur_fiber;
        const bool rev = reverse_order();
        while (!R.faulted && R.next < R.n) {
            int t = nth(R.next++, R.n, rev);
            f->thread = t;
            R.fiber_of[(size_t)t] = f;
            R.state[(size_t)t] = T_RUNNING;
            set_thread(w, t);
            R.body(R.ctx);
            R.state[(size_t)t] = T_DONE;
            R.live--;
            R.warp_live[(size_t)(t >> 5)]--;
        }
        f->thread = -1;
        w.free_fibers.push_back(f);
        to_scheduler(w, f);
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

fiber *fiber_get(worker &w)
{
    if (!w.free_fibers.empty()) {
        fiber *f = w.free_fibers.back();
        w.free_fibers.pop_back();
        return f;
    }
    if (w.all_fibers.size() >= MAX_FIBERS) return NULL;
    char *m = (char *)mmap(NULL, STACK_BYTES + GUARD_BYTES, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return NULL;
    (void)mprotect(m, GUARD_BYTES, PROT_NONE);
    fiber *f = new fiber;
    f->stack = m + GUARD_BYTES;
    fiber_init(f);
    w.all_fibers.push_back(f);
    return f;
}


void wait_here(worker &w, uint8_t kind)
{
    fiber *f = w.cur_fiber;
    int t = f->thread;
    w.R.state[(size_t)t] = kind;
    if (kind == T_WAIT_BLOCK)
        w.R.wait_block++;
    else
        w.R.warp_wait[(size_t)(t >> 5)]++;
    to_scheduler(w, f);
}

void release(block_run &R, int t)
{
    R.state[(size_t)t] = T_RUNNABLE;
    R.runnable.push_back(t);
}

/* Every thread of the block, to the end or to a fault. */
void run_block(worker &w)
{
    block_run &R = w.R;
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
            set_thread(w, t);
            to_fiber(w, R.fiber_of[(size_t)t]);
            continue;
        }
        R.runnable.clear();
        R.runnable_head = 0;
        if (R.next < n) {
            fiber *f = fiber_get(w);
            if (!f) {
                fault("kernel %s: no memory for the emulator's thread stacks", R.name);
                break;
            }
            to_fiber(w, f);
            continue;
        }
        if (R.live == 0) return;
        const bool rev = reverse_order();
        if (R.wait_block > 0 && R.wait_block == R.live) {
            for (int k = 0; k < n; k++)
                if (R.state[(size_t)nth(k, n, rev)] == T_WAIT_BLOCK) release(R, nth(k, n, rev));
            R.wait_block = 0;
            continue;
        }
        bool any = false;
        for (int kw = 0; kw < warps; kw++) {
            const int wp = nth(kw, warps, rev);
            if (R.warp_wait[(size_t)wp] == 0 || R.warp_wait[(size_t)wp] != R.warp_live[(size_t)wp]) continue;
            const int lo = 32 * wp, lanes = (n < lo + 32 ? n : lo + 32) - lo;
            for (int k = 0; k < lanes; k++)
                if (R.state[(size_t)(lo + nth(k, lanes, rev))] == T_WAIT_WARP) release(R, lo + nth(k, lanes, rev));
            R.warp_wait[(size_t)wp] = 0;
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
              R.name, w.cur->block.x, w.cur->block.y, w.cur->block.z, n - R.live, n, in_block, in_warp);
    }
    /* a fault leaves fibers in the middle of a thread: start them afresh */
    for (fiber *f : w.all_fibers) {
        if (f->thread < 0) continue;
#ifdef EMU_ASAN
        /* the frames left there keep their redzones */
        __asan_unpoison_memory_region(f->stack, STACK_BYTES);
#endif
        fiber_init(f);
        w.free_fibers.push_back(f);
    }
}

/* Takes blocks of the launch, in order, until none is left or a block has
 * faulted. */
void run_blocks(launch_run &L)
{
    worker &w = me();
    thread_state &c = *w.cur;
    block_run &R = w.R;
    R.name = L.name;
    R.body = L.body;
    R.ctx = L.ctx;
    R.n = (int)(L.block.x * L.block.y * L.block.z);
    R.coord.resize((size_t)R.n);
    for (unsigned u = 0; u < (unsigned)R.n; u++)
        R.coord[u] = uint3{u % L.block.x, u / L.block.x % L.block.y, u / (L.block.x * L.block.y)};
    R.faulted = false;
    R.running = true;
    w.L = &L;
    c.block_dim = L.block;
    c.grid_dim = L.grid;
    const uint64_t gx = L.grid.x, gxy = gx * L.grid.y;
    while (!L.faulted.load(std::memory_order_relaxed)) {
        const uint64_t b = L.next.fetch_add(1, std::memory_order_relaxed);
        if (b >= L.blocks) break;
        c.block.x = (unsigned)(b % gx);
        c.block.y = (unsigned)(b % gxy / gx);
        c.block.z = (unsigned)(b / gxy);
        run_block(w);
        if (R.faulted) break;
    }
    R.running = false;
    w.L = NULL;
}

/* ---- the helpers: OS threads that run blocks beside the launching thread ----
 * A launch is opened to the first `engaged` helpers; each that wakes while
 * it is open joins (active), takes blocks, and leaves. The launching thread
 * takes blocks too, then closes the launch and waits only for the helpers
 * that joined: one that wakes late finds it closed and goes back to sleep.
 * So a launch never waits for a helper that has not started (none exists in
 * a forked child: it runs its blocks alone). */
struct pool {
    std::mutex lock;
    std::condition_variable start, done;
    uint64_t gen = 0;               /* launches opened */
    launch_run *L = NULL;           /* the open launch, NULL once closed */
    int engaged = 0;                /* helpers 0 .. engaged - 1 may join it */
    int active = 0;                 /* helpers inside it */
    int helpers = 0;                /* helper threads started */
};

pool *P;            /* made on first use, never freed: helpers wait on it to the end of the process */
int threads_set;    /* OS threads a launch may use, its caller included; 0: not read yet (launch_lock) */

int workers(void)
{
    if (threads_set == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        const char *v = getenv("FACET_EMU_THREADS");
        if (v && *v) {
            char *end;
            long x = strtol(v, &end, 10);
            if (!*end && x > 0) n = x;
        }
        threads_set = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (int)n;
    }
    return threads_set;
}

void *helper_main(void *arg)
{
    const int index = (int)(intptr_t)arg;
    pool &p = *P;
    uint64_t seen = 0;
    std::unique_lock<std::mutex> hold(p.lock);
    for (;;) {
        p.start.wait(hold, [&] { return p.gen != seen; });
        seen = p.gen;
        launch_run *L = p.L;
        if (!L || index >= p.engaged) continue;
        p.active++;
        hold.unlock();
        run_blocks(*L);
        hold.lock();
        if (--p.active == 0 && !p.L) p.done.notify_all();
    }
    return NULL;
}

/* A detached helper. Asynchronous signals stay with the host's threads; the
 * ones a fault raises stay unblocked. */
bool start_helper(int index)
{
    sigset_t mask, old;
    sigfillset(&mask);
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP}) sigdelset(&mask, s);
    pthread_sigmask(SIG_SETMASK, &mask, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, helper_main, (void *)(intptr_t)index);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0;
}

/* Opens L to up to `want` helpers (started if need be); how many may join. */
int open_launch(launch_run *L, int want)
{
    if (!P) P = new pool;
    pool &p = *P;
    std::lock_guard<std::mutex> hold(p.lock);
    while (p.helpers < want && start_helper(p.helpers)) p.helpers++;
    if (want > p.helpers) want = p.helpers;
    if (want == 0) return 0;
    p.L = L;
    p.engaged = want;
    p.gen++;
    p.start.notify_all();
    return want;
}

/* No helper joins from now on; returns when those that joined have left. */
void close_launch(void)
{
    pool &p = *P;
    std::unique_lock<std::mutex> hold(p.lock);
    p.L = NULL;
    p.done.wait(hold, [&] { return p.active == 0; });
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

const char *kernel_name(const char *args_text)
{
    static std::mutex lock;
    static std::set<std::string> *names = new std::set<std::string>;   /* never freed: names outlive every launch */
    int depth = 0;
    size_t n = 0;
    for (; args_text[n]; n++) {
        const char c = args_text[n];
        if (c == '<' || c == '(') depth++;
        else if ((c == '>' || c == ')') && depth > 0) depth--;
        else if (c == ',' && depth == 0) break;
    }
    while (n > 0 && args_text[n - 1] == ' ') n--;
    std::lock_guard<std::mutex> hold(lock);
    return names->insert(std::string(args_text, n)).first->c_str();
}

void fault(const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    worker *w = self;
    if (!w || (!w->cur_fiber && !w->R.running)) {
        /* outside a kernel (a launch's arguments, queued work): the caller's
         * error, and the context is lost as at a GPU's fault */
        fprintf(stderr, "facet-emu: fault: %s\n", msg);
        snprintf(fault_msg, sizeof fault_msg, "%s", msg);
        lose_context(cudaErrorLaunchFailure, msg);
        return;
    }
    /* the launch's first fault is its error; the workers start no block after it */
    if (!w->L->faulted.exchange(true)) {
        fprintf(stderr, "facet-emu: fault: %s\n", msg);
        snprintf(w->L->msg, sizeof w->L->msg, "%s", msg);
    }
    w->R.faulted = true;
    /* inside a thread: abandon the block here; the scheduler stops */
    if (w->cur_fiber) to_scheduler(*w, w->cur_fiber);
}

int run(const char *name, dim3 grid, dim3 block, size_t shared_bytes, body_fn body, void *ctx)
{
    (void)shared_bytes;
    std::lock_guard<std::mutex> hold(launch_lock);
    launch_run L;
    L.name = name;
    L.body = body;
    L.ctx = ctx;
    L.grid = grid;
    L.block = block;
    L.blocks = (uint64_t)grid.x * grid.y * grid.z;
    L.msg[0] = 0;
    /* a one-block launch runs here, without waking anyone */
    uint64_t helpers = (uint64_t)workers() - 1;
    if (helpers > L.blocks - 1) helpers = L.blocks - 1;
    const bool opened = helpers > 0 && open_launch(&L, (int)helpers) > 0;
    run_blocks(L);
    if (opened) close_launch();
    if (!L.faulted.load()) return 0;
    snprintf(fault_msg, sizeof fault_msg, "%s", L.msg);
    return 1;
}

void set_order(int rev) { order.store(rev < 0 ? -1 : rev > 0, std::memory_order_relaxed); }

void set_threads(int n)
{
    std::lock_guard<std::mutex> hold(launch_lock);
    threads_set = n <= 0 ? 0 : n > MAX_WORKERS ? MAX_WORKERS : n;
}

void sync_block(void)
{
    worker *w = self;
    if (!w || !w->cur_fiber) {
        fault("__syncthreads outside a kernel");
        return;
    }
    wait_here(*w, T_WAIT_BLOCK);
}

uint64_t warp_exchange(uint64_t v, unsigned mask, int arg, int mode)
{
    worker *wk = self;
    if (!wk || !wk->cur_fiber) {
        fault("a warp shuffle outside a kernel");
        return v;
    }
    worker &w = *wk;
    block_run &R = w.R;
    const int t = w.cur_fiber->thread, wp = t >> 5, lane = t & 31;
    if (mask != 0xffffffffu) fault("kernel %s: shuffle mask %#x (the emulator models full warps)", R.name, mask);
    if (R.n - 32 * wp < 32)
        fault("kernel %s: a full-mask shuffle in warp %d, which has %d threads (the block has %d)", R.name, wp,
              R.n - 32 * wp, R.n);
    R.slot[(size_t)t] = v;
    wait_here(w, T_WAIT_WARP);
    int src = mode == SHFL_DOWN ? (lane + arg < 32 ? lane + arg : lane) : (arg & 31);
    uint64_t r = R.slot[(size_t)(32 * wp + src)];
    wait_here(w, T_WAIT_WARP);    /* every lane has read before any puts again */
    return r;
}

}   /* namespace facet_emu */
