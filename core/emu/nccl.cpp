/*
 * nccl.cpp - NCCL for the CUDA emulator (nccl.h, docs/cuda-emulator.md):
 * the collectives of core/cuda/nccl.cu between the processes of one machine
 * (each rank emulates its own GPU), so the NCCL path runs with 2, 3 or more
 * ranks under mpirun on a machine with no GPU at all; a GPU host with one
 * card cannot do that (NCCL refuses two ranks on one device).
 *
 * The unique id names a POSIX shared-memory segment: a header (the ranks'
 * process ids, a barrier, a failure flag, each rank's description of the
 * collective it is in) and one staging slot per rank (FACET_EMU_NCCL_SLOT_KB,
 * default 1024). A collective goes through in chunks of a slot: each rank
 * copies its part of the chunk into its slot, all meet at the barrier, each
 * combines what it needs from every slot in rank order, all meet again. So
 * every rank gets the same bits, in an order that does not depend on timing;
 * 16-bit values are rounded after every combination, as NCCL's ring steps
 * round them, max and min let a number win over a NaN (fmaxf, as NCCL's
 * float max), and ncclAvg multiplies each float input by 1/W in its own type
 * and then sums (integers: the sum, then the division), as NCCL does.
 *
 * A collective runs when called (inside a group: at ncclGroupEnd), after the
 * work already queued on the emulated stream, as a GPU starts an NCCL kernel
 * without its host. It blocks until every rank has reached it. What NCCL
 * would hang on or corrupt silently fails the communicator instead, named in
 * a warning on stderr and seen by ncclCommGetAsyncError on every rank:
 * - a peer process that exited (checked every few milliseconds while
 *   waiting) or aborted its communicator: ncclRemoteError;
 * - ranks that called different collectives (kind, count, type, operation
 *   or root differ): ncclInvalidUsage;
 * - no progress for FACET_DIST_TIMEOUT seconds (default 300): ncclRemoteError.
 * NCCL's own rules, as NCCL applies them:
 * - two ranks of a communicator on one GPU (the first entry of
 *   CUDA_VISIBLE_DEVICES, 0 when unset) fail ncclCommInitRank on every rank
 *   with ncclInvalidUsage ("Duplicate GPU detected");
 * - root, type and operation are checked at the call (ncclInvalidArgument);
 *   a collective of count 0 is then discarded: no rank waits for it;
 * - a call that fails inside a group fails the group: ncclGroupEnd returns
 *   its error and none of the group's operations starts.
 * Where NCCL's behaviour is undefined the call fails with
 * ncclInvalidArgument instead: a buffer that is not device memory (all of it,
 * for its count and type; NCCL checks only with NCCL_CHECK_POINTERS=1, and a
 * GPU then faults), and buffers that overlap other than in NCCL's in-place
 * layouts (layout_check).
 */
#include "nccl.h"
#include "emu.h"

#include <atomic>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vector>

#include "half_math.h"

namespace {

const int MAX_RANKS = 256;
const uint32_t MAGIC = 0x66656e63;   /* "fenc" */
const char ID_PREFIX[] = "facet-emu-nccl-";
const int DEVICE_CHARS = 48;

enum kind { K_ALLREDUCE = 1, K_BROADCAST, K_REDUCE_SCATTER, K_ALLGATHER };

/* what a rank says it is doing: every rank must say the same */
struct desc {
    int32_t kind, dtype, op, root;
    uint64_t count;
};

struct header {
    uint32_t magic;
    std::atomic<int32_t> nranks;
    std::atomic<uint32_t> joined;
    std::atomic<uint32_t> arrived;
    std::atomic<uint32_t> generation;
    std::atomic<int32_t> failed;        /* 0, or 1 + the rank that failed the communicator */
    std::atomic<int32_t> pid[MAX_RANKS];
    desc what[MAX_RANKS];
    char device[MAX_RANKS][DEVICE_CHARS];   /* the GPU each rank runs on (its CUDA_VISIBLE_DEVICES' first entry) */
};

}   /* namespace */

struct ncclComm {
    header *h;
    char *slots;
    size_t slot, map_bytes;
    int rank, nranks;
    ncclResult_t async;
    double timeout;
};

namespace {

thread_local char detail[512];
thread_local int group_depth;
thread_local ncclResult_t group_error;      /* the first call that failed inside the open group */
thread_local char group_detail[512];        /* and what it said */

void set_detail(const char *fmt, va_list ap) { vsnprintf(detail, sizeof detail, fmt, ap); }

/* the detail, also on stderr (a failure the communicator reports later) */
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_detail(fmt, ap);
    va_end(ap);
    fprintf(stderr, "facet-emu NCCL WARN %s\n", detail);
}

/* a call's own failure: r, with the detail ncclGetErrorString adds */
ncclResult_t fail(ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
ncclResult_t fail(ncclResult_t r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_detail(fmt, ap);
    va_end(ap);
    return r;
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double timeout_s(void)
{
    const char *v = getenv("FACET_DIST_TIMEOUT");
    double t = v && *v ? strtod(v, NULL) : 0;
    return t > 0 && t < 1e7 ? t : 300;
}

size_t slot_bytes(int nranks)
{
    const char *v = getenv("FACET_EMU_NCCL_SLOT_KB");
    long kb = v && *v ? strtol(v, NULL, 10) : 1024;
    size_t b = (size_t)(kb > 0 && kb <= (1 << 20) ? kb : 1024) << 10;
    /* a reduce-scatter chunk takes one element of the widest type for every rank */
    return b < (size_t)nranks * 8 ? (size_t)nranks * 8 : b;
}

/* 1 when the process is gone (or a zombie waiting to be reaped) */
bool exited(pid_t pid)
{
    if (kill(pid, 0) != 0) return errno == ESRCH;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');   /* the state follows the command name */
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* marks the communicator failed for every rank (the first cause wins) */
ncclResult_t broken(ncclComm *c, ncclResult_t r)
{
    int32_t none = 0;
    c->h->failed.compare_exchange_strong(none, 1 + c->rank);
    if (c->async == ncclSuccess) c->async = r;
    return r;
}

/* every rank meets here; fails when a peer failed, exited or never came */
ncclResult_t barrier(ncclComm *c, const char *what)
{
    header *h = c->h;
    const uint32_t gen = h->generation.load(std::memory_order_acquire);
    if (h->arrived.fetch_add(1, std::memory_order_acq_rel) == (uint32_t)c->nranks - 1) {
        h->arrived.store(0, std::memory_order_relaxed);
        h->generation.fetch_add(1, std::memory_order_release);
        return ncclSuccess;
    }
    const double start = now_s();
    double next_check = start;
    for (unsigned spins = 0; h->generation.load(std::memory_order_acquire) == gen; spins++) {
        int32_t f = h->failed.load(std::memory_order_acquire);
        if (f) {
            warn("rank %d: %s: rank %d failed or aborted the communicator", c->rank, what, f - 1);
            return broken(c, ncclRemoteError);
        }
        double t = now_s();
        if (t >= next_check) {
            next_check = t + 0.005;
            for (int r = 0; r < c->nranks; r++) {
                pid_t p = h->pid[r].load(std::memory_order_relaxed);
                if (r != c->rank && p > 0 && exited(p)) {
                    warn("rank %d: %s: rank %d (process %d) exited", c->rank, what, r, (int)p);
                    return broken(c, ncclRemoteError);
                }
            }
            if (t - start > c->timeout) {
                warn("rank %d: %s: no progress for %g s (FACET_DIST_TIMEOUT); %u of %d ranks arrived", c->rank, what,
                     c->timeout, h->arrived.load(), c->nranks);
                return broken(c, ncclRemoteError);
            }
        }
        if (spins < 64) {
            sched_yield();
        } else {
            struct timespec ts = { 0, 20000 };
            nanosleep(&ts, NULL);
        }
    }
    return ncclSuccess;
}

size_t type_size(ncclDataType_t t)
{
    switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
    }
}

const char *type_name(int t)
{
    static const char *names[] = { "int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32",
                                   "float64", "bfloat16" };
    return t >= 0 && t < ncclNumTypes ? names[t] : "?";
}

const char *kind_name(int k)
{
    static const char *names[] = { "?", "allreduce", "broadcast", "reduce_scatter", "allgather" };
    return k >= 1 && k <= 4 ? names[k] : "?";
}

/* ---- element arithmetic: a float type combines in float (16-bit: rounded after each step) ---- */

template <typename T> struct num {
    typedef T wide;
    static wide get(const void *p, size_t i) { return ((const T *)p)[i]; }
    static void put(void *p, size_t i, wide v) { ((T *)p)[i] = v; }
};
struct f16 {};
struct bf16 {};
template <> struct num<f16> {
    typedef float wide;
    static wide get(const void *p, size_t i) { return facet_half_to_float(((const uint16_t *)p)[i]); }
    static void put(void *p, size_t i, wide v) { ((uint16_t *)p)[i] = facet_float_to_half(v); }
};
template <> struct num<bf16> {
    typedef float wide;
    static wide get(const void *p, size_t i) { return facet_bf16_to_float(((const uint16_t *)p)[i]); }
    static void put(void *p, size_t i, wide v) { ((uint16_t *)p)[i] = facet_float_to_bf16(v); }
};

/* the stored value of v (what a 16-bit type keeps of it) */
template <typename T> typename num<T>::wide keep(typename num<T>::wide v)
{
    alignas(8) unsigned char b[8];
    num<T>::put(b, 0, v);
    return num<T>::get(b, 0);
}

template <typename W> W add(W a, W b)
{
    if constexpr (std::is_integral<W>::value) {
        typedef typename std::make_unsigned<W>::type U;   /* wraps, as NCCL's integer sums */
        return (W)(U)((U)a + (U)b);
    } else {
        return a + b;
    }
}

template <typename W> W mul(W a, W b)
{
    if constexpr (std::is_integral<W>::value) {
        typedef typename std::make_unsigned<W>::type U;
        return (W)(U)((U)a * (U)b);
    } else {
        return a * b;
    }
}

/* out[i] = in_0[i] op in_1[i] op ... (rank order), in_r = base + r * stride */
template <typename T>
void combine(void *out, const char *base, size_t stride, int nranks, size_t n, ncclRedOp_t op)
{
    typedef typename num<T>::wide W;
    const bool fl = std::is_floating_point<W>::value;
    const W pre = fl ? keep<T>((W)(1.0 / nranks)) : (W)1;   /* ncclAvg's factor, in the type */
    for (size_t i = 0; i < n; i++) {
        W acc = num<T>::get(base, i);
        if (op == ncclAvg && fl) acc = keep<T>(acc * pre);
        for (int r = 1; r < nranks; r++) {
            W v = num<T>::get(base + (size_t)r * stride, i);
            switch (op) {
            case ncclProd: acc = mul(acc, v); break;
            /* as fmaxf / fminf (NCCL's float max and min): a NaN loses to a number */
            case ncclMax: acc = v > acc || acc != acc ? v : acc; break;
            case ncclMin: acc = v < acc || acc != acc ? v : acc; break;
            case ncclAvg: acc = add(acc, fl ? keep<T>(v * pre) : v); break;
            default: acc = add(acc, v); break;
            }
            acc = keep<T>(acc);
        }
        if (op == ncclAvg && !fl) acc = (W)(acc / (W)nranks);
        num<T>::put(out, i, acc);
    }
}

void combine_any(ncclDataType_t t, void *out, const char *base, size_t stride, int nranks, size_t n, ncclRedOp_t op)
{
    switch (t) {
    case ncclInt8: combine<int8_t>(out, base, stride, nranks, n, op); break;
    case ncclUint8: combine<uint8_t>(out, base, stride, nranks, n, op); break;
    case ncclInt32: combine<int32_t>(out, base, stride, nranks, n, op); break;
    case ncclUint32: combine<uint32_t>(out, base, stride, nranks, n, op); break;
    case ncclInt64: combine<int64_t>(out, base, stride, nranks, n, op); break;
    case ncclUint64: combine<uint64_t>(out, base, stride, nranks, n, op); break;
    case ncclFloat16: combine<f16>(out, base, stride, nranks, n, op); break;
    case ncclFloat32: combine<float>(out, base, stride, nranks, n, op); break;
    case ncclFloat64: combine<double>(out, base, stride, nranks, n, op); break;
    case ncclBfloat16: combine<bf16>(out, base, stride, nranks, n, op); break;
    default: break;
    }
}

/* ---- the collectives, run from the emulated stream ---- */

struct job {
    ncclComm *c;
    desc d;
    const char *send;
    char *recv;
};

char *slot_of(ncclComm *c, int r) { return c->slots + (size_t)r * c->slot; }

/* the first barrier of a collective, then every rank checks it is in the same one */
ncclResult_t meet(ncclComm *c, const desc &d, const char *what)
{
    c->h->what[c->rank] = d;
    ncclResult_t r = barrier(c, what);
    if (r) return r;
    for (int q = 0; q < c->nranks; q++) {
        const desc &o = c->h->what[q];
        if (memcmp(&o, &d, sizeof d) != 0) {
            warn("rank %d called %s(count %llu, %s, op %d, root %d) while rank %d called %s(count %llu, %s, op %d, "
                 "root %d)", c->rank, kind_name(d.kind), (unsigned long long)d.count, type_name(d.dtype), d.op, d.root,
                 q, kind_name(o.kind), (unsigned long long)o.count, type_name(o.dtype), o.op, o.root);
            return broken(c, ncclInvalidUsage);
        }
    }
    return ncclSuccess;
}

ncclResult_t run_job(const job &j)
{
    ncclComm *c = j.c;
    const desc &d = j.d;
    const char *what = kind_name(d.kind);
    if (c->async) return c->async;
    const ncclDataType_t t = (ncclDataType_t)d.dtype;
    const size_t el = type_size(t), W = (size_t)c->nranks, me = (size_t)c->rank;
    /* elements a chunk moves per rank slot (reduce-scatter: a piece for every rank) */
    const size_t per = d.kind == K_REDUCE_SCATTER ? c->slot / (W * el) : c->slot / el;
    size_t off = 0;
    do {
        const size_t n = d.count - off < per ? d.count - off : per;
        char *mine = slot_of(c, (int)me);
        switch (d.kind) {
        case K_ALLREDUCE: case K_ALLGATHER: memcpy(mine, j.send + off * el, n * el); break;
        case K_BROADCAST: if ((int)me == d.root) memcpy(mine, j.send + off * el, n * el); break;
        case K_REDUCE_SCATTER:
            for (size_t q = 0; q < W; q++) memcpy(mine + q * per * el, j.send + (q * d.count + off) * el, n * el);
            break;
        }
        ncclResult_t r = off == 0 ? meet(c, d, what) : barrier(c, what);
        if (r) return r;
        switch (d.kind) {
        case K_ALLREDUCE: combine_any(t, j.recv + off * el, c->slots, c->slot, c->nranks, n, (ncclRedOp_t)d.op); break;
        case K_REDUCE_SCATTER:
            combine_any(t, j.recv + off * el, c->slots + me * per * el, c->slot, c->nranks, n, (ncclRedOp_t)d.op);
            break;
        case K_BROADCAST:
            if (j.recv != j.send || (int)me != d.root) memmove(j.recv + off * el, slot_of(c, d.root), n * el);
            break;
        case K_ALLGATHER:
            for (size_t q = 0; q < W; q++) memcpy(j.recv + (q * d.count + off) * el, slot_of(c, (int)q), n * el);
            break;
        }
        r = barrier(c, what);
        if (r) return r;
        off += n;
    } while (off < d.count);
    return ncclSuccess;
}

/* runs what is queued on the emulated stream, this collective included */
ncclResult_t flush(void)
{
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess) return ncclSuccess;
    return fail(ncclUnhandledCudaError, "work queued before the collective failed: %s", cudaGetErrorString(e));
}

bool device_buffer(const void *p, size_t bytes) { return p && facet_emu::device_range(p, bytes); }

bool overlap(const char *a, size_t an, const char *b, size_t bn) { return an && bn && a < b + bn && b < a + an; }

/* NCCL's in-place rules (nccl.h; "In-place Operations" in its guide):
 * allreduce and broadcast (on the root) in place when sendbuff == recvbuff;
 * reduce-scatter when recvbuff == sendbuff + rank * recvcount; allgather when
 * sendbuff == recvbuff + rank * sendcount. Buffers that overlap any other way
 * are undefined (NCCL reads and writes them in its own chunk order, and
 * returns success): refused here. */
ncclResult_t layout_check(ncclComm *c, const desc &d, const char *s, const char *r, const char *fn)
{
    const size_t bytes = d.count * type_size((ncclDataType_t)d.dtype), W = (size_t)c->nranks, me = (size_t)c->rank;
    size_t sn = bytes, rn = bytes;
    bool in_place = s == r;
    const char *rule = "sendbuff == recvbuff";
    switch (d.kind) {
    case K_BROADCAST:
        if (c->rank != d.root) return ncclSuccess;   /* sendbuff is not read off the root */
        break;
    case K_REDUCE_SCATTER:
        sn = bytes * W;
        in_place = r == s + me * bytes;
        rule = "recvbuff == sendbuff + rank * recvcount";
        break;
    case K_ALLGATHER:
        rn = bytes * W;
        in_place = s == r + me * bytes;
        rule = "sendbuff == recvbuff + rank * sendcount";
        break;
    }
    if (in_place || !overlap(s, sn, r, rn)) return ncclSuccess;
    warn("%s on rank %d: sendbuff [%p, +%zu) and recvbuff [%p, +%zu) overlap, but not in NCCL's in-place layout (%s): "
         "undefined in NCCL", fn, c->rank, (const void *)s, sn, (const void *)r, rn, rule);
    return ncclInvalidArgument;
}

/* NCCL's checks at the call (ArgsCheck: root, type, operation), then the
 * emulator's: device memory for the whole count (NCCL checks pointers only
 * with NCCL_CHECK_POINTERS=1; a GPU faults on a host pointer) and NCCL's
 * in-place layouts. */
ncclResult_t args_check(ncclComm *c, const desc &d, const void *send, const void *recv, cudaStream_t s, const char *fn)
{
    if (!c) return fail(ncclInvalidArgument, "%s: comm is NULL", fn);
    if (c->async) return fail(c->async, "%s: the communicator failed earlier", fn);
    if (s != 0) return fail(ncclInvalidArgument, "%s: the emulator has only the default stream", fn);
    if (d.root < 0 || d.root >= c->nranks) return fail(ncclInvalidArgument, "%s: root %d of %d ranks", fn, d.root, c->nranks);
    const size_t el = type_size((ncclDataType_t)d.dtype);
    if (!el) return fail(ncclInvalidArgument, "%s: datatype %d", fn, d.dtype);
    if (d.op < 0 || d.op >= ncclNumOps) return fail(ncclInvalidArgument, "%s: op %d", fn, d.op);
    if (d.count > ((size_t)1 << 40) / el) return fail(ncclInvalidArgument, "%s: count %llu", fn, (unsigned long long)d.count);
    if (d.count == 0) return ncclSuccess;
    const size_t W = (size_t)c->nranks, bytes = d.count * el;
    const size_t send_bytes = d.kind == K_REDUCE_SCATTER ? bytes * W : bytes;
    const size_t recv_bytes = d.kind == K_ALLGATHER ? bytes * W : bytes;
    const bool needs_send = d.kind != K_BROADCAST || d.root == c->rank;
    if (needs_send && !device_buffer(send, send_bytes))
        return fail(ncclInvalidArgument, "%s: sendbuff %p is not device memory of %zu bytes", fn, send, send_bytes);
    if (!device_buffer(recv, recv_bytes))
        return fail(ncclInvalidArgument, "%s: recvbuff %p is not device memory of %zu bytes", fn, recv, recv_bytes);
    return layout_check(c, d, (const char *)send, (const char *)recv, fn);
}

void enqueue_job(const job &j)
{
    facet_emu::enqueue([j]() {
        ncclResult_t r = run_job(j);
        if (r && j.c->async == ncclSuccess) j.c->async = r;
        return 0;   /* a failed collective fails the communicator, not the stream */
    });
}

thread_local std::vector<job> group_jobs;   /* the open group's collectives, started at ncclGroupEnd */

ncclResult_t submit(ncclComm *c, desc d, const void *send, void *recv, cudaStream_t s, const char *fn)
{
    detail[0] = 0;
    ncclResult_t r = args_check(c, d, send, recv, s, fn);
    if (r) {
        /* as NCCL: inside a group the failure also fails the group (ncclGroupEnd returns it, and none of the
         * group's operations start) */
        if (group_depth > 0 && group_error == ncclSuccess) {
            group_error = r;
            snprintf(group_detail, sizeof group_detail, "%s", detail);
        }
        return r;
    }
    if (d.count == 0) return ncclSuccess;   /* NCCL discards an empty collective: no rank waits for it */
    job j{ c, d, (const char *)send, (char *)recv };
    if (group_depth > 0) {
        group_jobs.push_back(j);
        return ncclSuccess;
    }
    enqueue_job(j);
    return flush();
}

desc make(int kind, size_t count, ncclDataType_t t, int op, int root)
{
    desc d;
    memset(&d, 0, sizeof d);
    d.kind = kind;
    d.count = count;
    d.dtype = t;
    d.op = op;
    d.root = root;
    return d;
}

/* The GPU this process runs on: CUDA's device 0 (facet never changes the
 * device), the first entry of CUDA_VISIBLE_DEVICES, or GPU 0 when it is unset
 * (on one machine; the emulator has no other). */
void device_of_process(char *out)
{
    const std::string d = facet_emu::process_device();   /* as CUDA saw it at its start */
    size_t n = d.size() < (size_t)DEVICE_CHARS ? d.size() : (size_t)DEVICE_CHARS - 1;
    memcpy(out, d.data(), n);
    out[n] = 0;
}

/* NCCL's init refuses two ranks of a communicator on one GPU of one host
 * ("Duplicate GPU detected", ncclInvalidUsage), on every rank */
ncclResult_t duplicate_device(ncclComm *c)
{
    const char *mine = c->h->device[c->rank];
    for (int q = 0; q < c->nranks; q++) {
        if (q != c->rank && strcmp(c->h->device[q], mine) == 0) {
            warn("ncclCommInitRank: duplicate GPU: rank %d and rank %d both on CUDA device \"%s\" (CUDA_VISIBLE_DEVICES' "
                 "first entry, or 0 when unset); NCCL takes one rank per GPU", c->rank, q, mine);
            return ncclInvalidUsage;
        }
    }
    return ncclSuccess;
}

void unmap(ncclComm *c)
{
    if (c->h) munmap(c->h, c->map_bytes);
    c->h = NULL;
}

}   /* namespace */

const char *ncclGetErrorString(ncclResult_t r)
{
    static const char *text[] = { "no error", "unhandled cuda error", "unhandled system error", "internal error",
                                  "invalid argument", "invalid usage", "remote process exited or there was a network error",
                                  "NCCL operation in progress" };
    const char *base = r >= 0 && r < ncclNumResults ? text[r] : "unknown result";
    if (r == ncclSuccess || !detail[0]) return base;
    thread_local char msg[640];
    snprintf(msg, sizeof msg, "%s (facet-emu: %s)", base, detail);
    return msg;
}

ncclResult_t ncclGetVersion(int *version)
{
    if (!version) return fail(ncclInvalidArgument, "ncclGetVersion: version is NULL");
    const char *v = getenv("FACET_EMU_NCCL_VERSION");
    long n = v && *v ? strtol(v, NULL, 10) : 0;
    *version = n > 0 && n < 1000000 ? (int)n : NCCL_VERSION_CODE;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
    if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
    memset(id, 0, sizeof *id);
    unsigned long long salt = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&salt, sizeof salt, 1, f) != 1) salt = (unsigned long long)(now_s() * 1e9);
    if (f) fclose(f);
    snprintf(id->internal, sizeof id->internal, "%s%d-%016llx", ID_PREFIX, (int)getpid(), salt);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *out, int nranks, ncclUniqueId id, int rank)
{
    detail[0] = 0;
    if (!out) return fail(ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
    *out = NULL;
    if (group_depth > 0) return fail(ncclInvalidUsage, "ncclCommInitRank: the emulator does not take it inside a group");
    if (nranks < 1 || nranks > MAX_RANKS)
        return fail(ncclInvalidArgument, "ncclCommInitRank: nranks %d (the emulator takes 1 to %d)", nranks, MAX_RANKS);
    if (rank < 0 || rank >= nranks) return fail(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
    if (strncmp(id.internal, ID_PREFIX, sizeof ID_PREFIX - 1) != 0 || !memchr(id.internal, 0, sizeof id.internal))
        return fail(ncclInvalidArgument, "ncclCommInitRank: not an id from ncclGetUniqueId");
    char name[NCCL_UNIQUE_ID_BYTES + 2];
    snprintf(name, sizeof name, "/%s", id.internal);
    const size_t slot = slot_bytes(nranks), top = (sizeof(header) + 4095) & ~(size_t)4095;
    const size_t bytes = top + slot * (size_t)nranks;
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    if (fd < 0) return fail(ncclSystemError, "ncclCommInitRank: shm_open %s: %s", name, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || ((size_t)st.st_size < bytes && ftruncate(fd, (off_t)bytes) != 0)) {
        int e = errno;
        close(fd);
        return fail(ncclSystemError, "ncclCommInitRank: sizing %s: %s", name, strerror(e));
    }
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return fail(ncclSystemError, "ncclCommInitRank: mmap: %s", strerror(errno));
    ncclComm *c = new ncclComm{ (header *)m, (char *)m + top, slot, bytes, rank, nranks, ncclSuccess, timeout_s() };
    header *h = c->h;
    int32_t zero = 0;
    const char *why = NULL;
    if (!h->nranks.compare_exchange_strong(zero, nranks) && zero != nranks) why = "ranks disagree on nranks";
    int32_t none = 0;
    if (!why && !h->pid[rank].compare_exchange_strong(none, (int32_t)getpid())) why = "two processes took one rank";
    ncclResult_t r = why ? fail(ncclInvalidUsage, "ncclCommInitRank: rank %d of %d: %s", rank, nranks, why) : ncclSuccess;
    if (why) broken(c, r);
    if (!r) device_of_process(h->device[rank]);
    /* the last rank in has every rank mapped: the name can go */
    if (h->joined.fetch_add(1) + 1 == (uint32_t)nranks) shm_unlink(name);
    if (!r) r = barrier(c, "ncclCommInitRank");
    if (!r) r = duplicate_device(c);
    if (r) {
        shm_unlink(name);
        unmap(c);
        delete c;
        return r;
    }
    *out = c;
    return ncclSuccess;
}

/* NCCL's destroy waits for the communicator's queued work; after an error
 * that may never complete, and NCCL says to abort instead: flagged here
 * (after freeing, as ncclCommAbort would) */
ncclResult_t ncclCommDestroy(ncclComm_t c)
{
    detail[0] = 0;
    if (!c) return fail(ncclInvalidArgument, "ncclCommDestroy: comm is NULL");
    cudaDeviceSynchronize();   /* its queued collectives finish first */
    const ncclResult_t async = c->async;
    const int rank = c->rank;
    unmap(c);
    delete c;
    if (async == ncclSuccess) return ncclSuccess;
    warn("ncclCommDestroy on rank %d: the communicator failed earlier (%s): NCCL's destroy may wait forever for its "
         "work; a failed communicator is freed with ncclCommAbort", rank, ncclGetErrorString(async));
    return ncclInvalidUsage;
}

ncclResult_t ncclCommAbort(ncclComm_t c)
{
    if (!c) return ncclSuccess;
    if (c->h) broken(c, ncclRemoteError);   /* the peers stop waiting for this rank */
    unmap(c);
    delete c;
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *err)
{
    if (!c || !err) return fail(ncclInvalidArgument, "ncclCommGetAsyncError: NULL argument");
    *err = c->async;
    return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t c, int *count)
{
    if (!c || !count) return fail(ncclInvalidArgument, "ncclCommCount: NULL argument");
    *count = c->nranks;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t c, int *rank)
{
    if (!c || !rank) return fail(ncclInvalidArgument, "ncclCommUserRank: NULL argument");
    *rank = c->rank;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c,
                           cudaStream_t s)
{
    return submit(c, make(K_ALLREDUCE, count, t, op, 0), send, recv, s, "ncclAllReduce");
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t t, int root, ncclComm_t c,
                           cudaStream_t s)
{
    return submit(c, make(K_BROADCAST, count, t, 0, root), send, recv, s, "ncclBroadcast");
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                               ncclComm_t c, cudaStream_t s)
{
    return submit(c, make(K_REDUCE_SCATTER, count, t, op, 0), send, recv, s, "ncclReduceScatter");
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t t, ncclComm_t c, cudaStream_t s)
{
    return submit(c, make(K_ALLGATHER, count, t, 0, 0), send, recv, s, "ncclAllGather");
}

ncclResult_t ncclGroupStart(void)
{
    if (group_depth == 0) {
        group_error = ncclSuccess;
        group_jobs.clear();
    }
    group_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void)
{
    detail[0] = 0;
    if (group_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--group_depth > 0) return ncclSuccess;
    std::vector<job> jobs;
    jobs.swap(group_jobs);
    const ncclResult_t e = group_error;
    group_error = ncclSuccess;
    if (e) return fail(e, "a call in the group failed (%s): none of the group's operations started", group_detail);
    for (const job &j : jobs) enqueue_job(j);
    return flush();
}
