/*
 * test_emu_nccl.cpp - tests of the CUDA emulator's NCCL (core/emu/nccl.cpp,
 * docs/cuda-emulator.md), built and run by `make test-emu`. Each case forks
 * its ranks, which make a communicator from one id and check what every
 * collective gives against values computed by hand: several chunks per
 * collective (a 1 KB staging slot), the rank-order rounding of 16-bit sums,
 * fmaxf's NaN rule, wrapping integer sums, groups; NCCL's rules: one rank
 * per GPU, a failed call failing its group, empty collectives discarded,
 * the in-place layouts (and other overlaps refused); and that what NCCL would
 * hang on or corrupt fails the communicator on every rank instead: a host
 * buffer, ranks in different collectives, a peer that exits, aborts or never
 * comes (FACET_DIST_TIMEOUT).
 * Prints one line per failed check, then "N passed, M failed".
 */
#include <nccl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vector>

#include "cuda_backend.h"
#include "facet.h"
#include "half_math.h"

static int failures;   /* in a rank's process */

#define EXPECT(cond, ...)                                              \
    do {                                                               \
        if (!(cond)) {                                                 \
            failures++;                                                \
            printf("FAIL rank %d, %s:%d: %s: ", me, __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                       \
            printf("\n");                                              \
            fflush(stdout);                                            \
        }                                                              \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

template <typename T> static T *dev(const std::vector<T> &h)
{
    void *p = NULL;
    if (cudaMalloc(&p, h.size() * sizeof(T)) != cudaSuccess) return NULL;
    cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return (T *)p;
}

template <typename T> static std::vector<T> host(const T *d, size_t n)
{
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}

static ncclResult_t async_of(ncclComm_t c)
{
    ncclResult_t r = ncclInternalError;
    ncclCommGetAsyncError(c, &r);
    return r;
}

typedef void (*rank_fn)(int me, int n, const ncclUniqueId &id);

/* forks n ranks running f, each on a GPU of its own (CUDA_VISIBLE_DEVICES =
 * its rank, as facet.dist.init sets it) unless devices says which every rank
 * sees; 0 when every one exited 0 with no failed check */
static int ranks(int n, rank_fn f, const char *devices = NULL)
{
    ncclUniqueId id;
    if (ncclGetUniqueId(&id) != ncclSuccess) return 1;
    fflush(stdout);
    std::vector<pid_t> kids;
    for (int r = 0; r < n; r++) {
        pid_t p = fork();
        if (p == 0) {
            failures = 0;
            char own[16];
            snprintf(own, sizeof own, "%d", r);
            setenv("CUDA_VISIBLE_DEVICES", devices ? devices : own, 1);
            f(r, n, id);
            fflush(stdout);
            _exit(failures ? 1 : 0);
        }
        kids.push_back(p);
    }
    int bad = 0;
    for (pid_t p : kids) {
        int st = 0;
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    }
    return bad;
}

static ncclComm_t join(int me, int n, const ncclUniqueId &id)
{
    ncclComm_t c = NULL;
    ncclResult_t r = ncclCommInitRank(&c, n, id, me);
    EXPECT(r == ncclSuccess, "ncclCommInitRank: %s", ncclGetErrorString(r));
    return r == ncclSuccess ? c : NULL;
}

/* ---- every collective on 3 ranks, each in several chunks ---- */

static void collectives(int me, int n, const ncclUniqueId &id)
{
    ncclComm_t c = join(me, n, id);
    if (!c) return;
    int count = 0, rank = -1;
    ncclCommCount(c, &count);
    ncclCommUserRank(c, &rank);
    EXPECT(count == n && rank == me, "count %d rank %d", count, rank);

    /* float32 sum of 1000 values (4 KB: four chunks of the 1 KB slot) */
    const size_t N = 1000;
    std::vector<float> x(N);
    for (size_t i = 0; i < N; i++) x[i] = (float)(me * 1000 + (int)i);
    float *dx = dev(x);
    EXPECT(ncclAllReduce(dx, dx, N, ncclFloat32, ncclSum, c, 0) == ncclSuccess, "allreduce");
    std::vector<float> got = host(dx, N);
    int wrong = 0;
    for (size_t i = 0; i < N; i++) wrong += got[i] != (float)(3000 + 3 * (int)i);
    EXPECT(wrong == 0, "float32 sum: %d of %zu values wrong (got[999] %g)", wrong, N, got[N - 1]);

    /* float16 sums round after every step, in rank order: 1 + 2^-11 + 2^-11 is 1 (two ties to even), not 1 + 2^-10 */
    std::vector<uint16_t> h = { facet_float_to_half(me == 0 ? 1.0f : ldexpf(1.0f, -11)) };
    uint16_t *dh = dev(h);
    ncclAllReduce(dh, dh, 1, ncclFloat16, ncclSum, c, 0);
    EXPECT(host(dh, 1)[0] == 0x3C00, "float16 sum 0x%04X, want 0x3C00", host(dh, 1)[0]);

    /* max / min as fmaxf / fminf: the NaN of rank 0 loses */
    std::vector<float> m = { me == 0 ? NAN : (float)me };
    float *dm = dev(m), *dn = dev(m);
    ncclAllReduce(dm, dm, 1, ncclFloat32, ncclMax, c, 0);
    ncclAllReduce(dn, dn, 1, ncclFloat32, ncclMin, c, 0);
    EXPECT(host(dm, 1)[0] == 2.0f && host(dn, 1)[0] == 1.0f, "max %g min %g", host(dm, 1)[0], host(dn, 1)[0]);

    /* integers: uint8 sums wrap, int64 keeps 2^40, int32 avg is the sum divided */
    std::vector<uint8_t> u = { (uint8_t)(100 + me) };
    std::vector<int64_t> l = { ((int64_t)1 << 40) * (me + 1) };
    std::vector<int32_t> a = { me == 2 ? 4 : me + 1 };
    uint8_t *du = dev(u);
    int64_t *dl = dev(l);
    int32_t *da = dev(a);
    ncclAllReduce(du, du, 1, ncclUint8, ncclSum, c, 0);
    ncclAllReduce(dl, dl, 1, ncclInt64, ncclSum, c, 0);
    ncclAllReduce(da, da, 1, ncclInt32, ncclAvg, c, 0);
    EXPECT(host(du, 1)[0] == (uint8_t)(303 - 256), "uint8 %d", host(du, 1)[0]);
    EXPECT(host(dl, 1)[0] == ((int64_t)6 << 40), "int64 %lld", (long long)host(dl, 1)[0]);
    EXPECT(host(da, 1)[0] == 2, "int32 avg of 1, 2, 4: %d", host(da, 1)[0]);

    /* reduce-scatter of 700 values per rank: rank q's piece of rank r holds 7 r + 1000 q + i */
    const size_t P = 700;
    std::vector<float> s(P * n);
    for (int q = 0; q < n; q++)
        for (size_t i = 0; i < P; i++) s[q * P + i] = (float)(7 * me + 1000 * q + (int)i);
    float *ds = dev(s), *dr = dev(std::vector<float>(P, -1.0f));
    ncclReduceScatter(ds, dr, P, ncclFloat32, ncclSum, c, 0);
    got = host(dr, P);
    wrong = 0;
    for (size_t i = 0; i < P; i++) wrong += got[i] != (float)(21 + 3000 * me + 3 * (int)i);
    EXPECT(wrong == 0, "reduce-scatter: %d of %zu wrong (got[0] %g)", wrong, P, got[0]);

    /* allgather of 500 values a rank */
    const size_t G = 500;
    std::vector<int32_t> gs(G);
    for (size_t i = 0; i < G; i++) gs[i] = me * 10000 + (int)i;
    int32_t *dgs = dev(gs), *dgr = dev(std::vector<int32_t>(G * n, -1));
    ncclAllGather(dgs, dgr, G, ncclInt32, c, 0);
    std::vector<int32_t> gg = host(dgr, G * n);
    wrong = 0;
    for (int q = 0; q < n; q++)
        for (size_t i = 0; i < G; i++) wrong += gg[q * G + i] != q * 10000 + (int)i;
    EXPECT(wrong == 0, "allgather: %d wrong", wrong);

    /* in-place broadcasts from ranks 2 and 0 in one group (as facet's uneven allgather) */
    std::vector<float> b(600), b0(3);
    for (size_t i = 0; i < b.size(); i++) b[i] = me == 2 ? (float)(5 + i) : -7.0f;
    for (size_t i = 0; i < b0.size(); i++) b0[i] = me == 0 ? 0.5f * (float)i : -7.0f;
    float *db = dev(b), *db0 = dev(b0);
    EXPECT(ncclGroupStart() == ncclSuccess, "group start");
    ncclBroadcast(db, db, b.size(), ncclFloat32, 2, c, 0);
    ncclBroadcast(db0, db0, b0.size(), ncclFloat32, 0, c, 0);
    EXPECT(ncclGroupEnd() == ncclSuccess, "group end");
    got = host(db, b.size());
    wrong = 0;
    for (size_t i = 0; i < b.size(); i++) wrong += got[i] != (float)(5 + i);
    std::vector<float> g0 = host(db0, b0.size());
    EXPECT(wrong == 0 && g0[2] == 1.0f, "broadcast: %d wrong, from rank 0: %g", wrong, g0[2]);

    /* NCCL's usage errors leave the communicator working */
    EXPECT(ncclGroupEnd() == ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    float on_host[4] = { 1, 2, 3, 4 };
    EXPECT(ncclAllReduce(on_host, on_host, 4, ncclFloat32, ncclSum, c, 0) == ncclInvalidArgument, "a host buffer");
    EXPECT(ncclAllReduce(dx, dx, N + 1, ncclFloat32, ncclSum, c, 0) == ncclInvalidArgument, "past the allocation");
    EXPECT(ncclBroadcast(db, db, 1, ncclFloat32, n, c, 0) == ncclInvalidArgument, "root n");
    EXPECT(async_of(c) == ncclSuccess, "the communicator failed on a refused call");
    ncclAllReduce(dm, dm, 1, ncclFloat32, ncclSum, c, 0);
    EXPECT(host(dm, 1)[0] == 6.0f && async_of(c) == ncclSuccess, "after the refused calls: %g", host(dm, 1)[0]);
    EXPECT(ncclCommDestroy(c) == ncclSuccess, "destroy");
}

/* ---- NCCL's rules the emulator enforces ---- */

/* two ranks on one GPU: NCCL's init refuses them on every rank */
static void one_gpu(int me, int n, const ncclUniqueId &id)
{
    ncclComm_t c = (ncclComm_t)&c;
    ncclResult_t r = ncclCommInitRank(&c, n, id, me);
    EXPECT(r == ncclInvalidUsage && c == NULL, "two ranks on one GPU: %d", (int)r);
}

/* CUDA reads CUDA_VISIBLE_DEVICES once, at its start: ranks that both
 * started on GPU 7 and then set it to their rank are still both on GPU 7 */
static void late_visible(int me, int n, const ncclUniqueId &id)
{
    float *d = dev(std::vector<float>(1, 1.0f));   /* CUDA starts here */
    EXPECT(d != NULL, "cudaMalloc");
    char own[16];
    snprintf(own, sizeof own, "%d", me);
    setenv("CUDA_VISIBLE_DEVICES", own, 1);
    one_gpu(me, n, id);
}

/* a failed call inside a group fails the group: ncclGroupEnd returns the
 * error and none of the group's operations starts, on any rank */
static void group_error(int me, int n, const ncclUniqueId &id)
{
    ncclComm_t c = join(me, n, id);
    if (!c) return;
    float *d = dev(std::vector<float>(4, (float)(me + 1)));
    EXPECT(ncclGroupStart() == ncclSuccess, "group start");
    EXPECT(ncclBroadcast(d, d, 4, ncclFloat32, 0, c, 0) == ncclSuccess, "the valid broadcast");
    EXPECT(ncclBroadcast(d, d, 4, ncclFloat32, n, c, 0) == ncclInvalidArgument, "root n in a group");
    EXPECT(ncclGroupEnd() == ncclInvalidArgument, "ncclGroupEnd after a failed call");
    EXPECT(host(d, 4)[3] == (float)(me + 1), "the group's first broadcast ran: %g", host(d, 4)[3]);
    EXPECT(async_of(c) == ncclSuccess, "a failed group fails the communicator: %d", (int)async_of(c));
    /* calls inside a group wait for ncclGroupEnd; the next group starts clean */
    float *e = dev(std::vector<float>(2, (float)(me + 1)));
    EXPECT(ncclGroupStart() == ncclSuccess && ncclGroupStart() == ncclSuccess, "nested group start");
    EXPECT(ncclAllReduce(e, e, 2, ncclFloat32, ncclSum, c, 0) == ncclSuccess, "allreduce in a group");
    EXPECT(host(e, 2)[0] == (float)(me + 1), "started before ncclGroupEnd: %g", host(e, 2)[0]);
    EXPECT(ncclGroupEnd() == ncclSuccess, "inner group end");
    EXPECT(host(e, 2)[0] == (float)(me + 1), "started at the inner ncclGroupEnd: %g", host(e, 2)[0]);
    EXPECT(ncclGroupEnd() == ncclSuccess, "outer group end");
    EXPECT(host(e, 2)[1] == (float)(n * (n + 1) / 2), "the group's allreduce: %g", host(e, 2)[1]);
    ncclCommDestroy(c);
}

/* NCCL discards an empty collective: nobody waits for it, its buffers are
 * not read, and its arguments are still checked */
static void empty(int me, int n, const ncclUniqueId &id)
{
    ncclComm_t c = join(me, n, id);
    if (!c) return;
    if (me == 0) {
        EXPECT(ncclAllReduce(NULL, NULL, 0, ncclFloat32, ncclSum, c, 0) == ncclSuccess, "an empty allreduce");
        EXPECT(ncclAllGather(NULL, NULL, 0, ncclInt32, c, 0) == ncclSuccess, "an empty allgather");
        EXPECT(ncclBroadcast(NULL, NULL, 0, ncclFloat32, n, c, 0) == ncclInvalidArgument, "an empty broadcast from root n");
        EXPECT(ncclAllReduce(NULL, NULL, 0, (ncclDataType_t)ncclNumTypes, ncclSum, c, 0) == ncclInvalidArgument,
               "an empty allreduce of no type");
    }
    float *d = dev(std::vector<float>(4, (float)(me + 1)));
    ncclAllReduce(d, d, 4, ncclFloat32, ncclSum, c, 0);
    EXPECT(async_of(c) == ncclSuccess && host(d, 4)[0] == 3.0f, "after rank 0's empty calls: %d, %g", (int)async_of(c),
           host(d, 4)[0]);
    ncclCommDestroy(c);
}

/* NCCL's in-place layouts give the right values; buffers that overlap any
 * other way are refused (undefined in NCCL) and leave the communicator working */
static void layouts(int me, int n, const ncclUniqueId &id)
{
    ncclComm_t c = join(me, n, id);
    if (!c) return;
    const size_t P = 5;
    /* allgather in place: sendbuff == recvbuff + rank * sendcount */
    std::vector<int32_t> g(P * n, -1);
    for (size_t i = 0; i < P; i++) g[me * P + i] = 100 * me + (int)i;
    int32_t *dg = dev(g);
    EXPECT(ncclAllGather(dg + me * P, dg, P, ncclInt32, c, 0) == ncclSuccess, "allgather in place");
    std::vector<int32_t> gg = host(dg, P * n);
    int wrong = 0;
    for (int q = 0; q < n; q++)
        for (size_t i = 0; i < P; i++) wrong += gg[q * P + i] != 100 * q + (int)i;
    EXPECT(wrong == 0, "allgather in place: %d wrong", wrong);
    /* reduce-scatter in place: recvbuff == sendbuff + rank * recvcount */
    std::vector<float> s(P * n);
    for (int q = 0; q < n; q++)
        for (size_t i = 0; i < P; i++) s[q * P + i] = (float)(10 * q + me + (int)i);
    float *ds = dev(s);
    EXPECT(ncclReduceScatter(ds, ds + me * P, P, ncclFloat32, ncclSum, c, 0) == ncclSuccess, "reduce-scatter in place");
    std::vector<float> rs = host(ds + me * P, P);
    wrong = 0;
    for (size_t i = 0; i < P; i++) wrong += rs[i] != (float)(n * (10 * me + (int)i) + n * (n - 1) / 2);
    EXPECT(wrong == 0, "reduce-scatter in place: %d wrong (got[0] %g)", wrong, rs[0]);
    /* overlaps NCCL leaves undefined */
    float *big = dev(std::vector<float>(P * n + 8, 1.0f));
    EXPECT(ncclAllGather(big + 1, big, P, ncclFloat32, c, 0) == ncclInvalidArgument, "allgather off the in-place slot");
    EXPECT(ncclAllGather(big + me * P, big + 1, P, ncclFloat32, c, 0) == ncclInvalidArgument, "allgather, recvbuff shifted");
    EXPECT(ncclReduceScatter(big, big + me * P + 1, P, ncclFloat32, ncclSum, c, 0) == ncclInvalidArgument,
           "reduce-scatter off the in-place slot");
    EXPECT(ncclAllReduce(big, big + 2, P, ncclFloat32, ncclSum, c, 0) == ncclInvalidArgument, "allreduce, shifted by 2");
    if (me == 1) {
        /* the root's buffers alone count: sendbuff is not read elsewhere */
        EXPECT(ncclBroadcast(big, big + 1, P, ncclFloat32, 1, c, 0) == ncclInvalidArgument, "broadcast on the root");
    }
    EXPECT(async_of(c) == ncclSuccess, "a refused layout failed the communicator");
    /* the same pointers off the root are a valid broadcast (sendbuff ignored) */
    std::vector<float> b(P, me == 0 ? 7.0f : -1.0f);
    float *db = dev(b);
    EXPECT(ncclBroadcast(me == 0 ? db : db + 1, db, P, ncclFloat32, 0, c, 0) == ncclSuccess, "broadcast");
    EXPECT(host(db, P)[P - 1] == 7.0f, "broadcast: %g", host(db, P)[P - 1]);
    /* disjoint buffers in one allocation are fine */
    EXPECT(ncclAllReduce(big, big + P, P, ncclFloat32, ncclSum, c, 0) == ncclSuccess, "disjoint parts of one buffer");
    EXPECT(host(big + P, P)[0] == (float)n, "allreduce of disjoint parts: %g", host(big + P, P)[0]);
    ncclCommDestroy(c);
}

/* ---- what NCCL would hang on fails the communicator ---- */

static void mismatch(int me, int n, const ncclUniqueId &id)
{
    ncclComm_t c = join(me, n, id);
    if (!c) return;
    float *d = dev(std::vector<float>(8, 1.0f));
    ncclAllReduce(d, d, me == 0 ? 4 : 5, ncclFloat32, ncclSum, c, 0);
    EXPECT(async_of(c) == ncclInvalidUsage, "ranks with different counts: %d", (int)async_of(c));
    EXPECT(ncclAllReduce(d, d, 4, ncclFloat32, ncclSum, c, 0) == ncclInvalidUsage, "a failed communicator is refused");
    EXPECT(ncclCommDestroy(c) == ncclInvalidUsage, "ncclCommDestroy of a failed communicator (not ncclCommAbort)");
}

/* rank 1 goes away after joining: exits, aborts, or sleeps past the timeout */
static void leaving(int me, int n, const ncclUniqueId &id, int how)
{
    if (how == 2) setenv("FACET_DIST_TIMEOUT", "1", 1);
    ncclComm_t c = join(me, n, id);
    if (!c) return;
    if (me == 1) {
        if (how == 0) _exit(0);
        if (how == 1) {
            ncclCommAbort(c);
            return;
        }
        sleep(4);
        return;
    }
    float *d = dev(std::vector<float>(4, 1.0f));
    double t0 = now_s();
    ncclAllReduce(d, d, 4, ncclFloat32, ncclSum, c, 0);
    double took = now_s() - t0;
    EXPECT(async_of(c) == ncclRemoteError, "rank 0 after rank 1 left (%d): %d", how, (int)async_of(c));
    EXPECT(took < (how == 2 ? 3.0 : 2.0), "noticed after %.2f s", took);
    ncclCommAbort(c);
}

static void exits(int me, int n, const ncclUniqueId &id) { leaving(me, n, id, 0); }
static void aborts(int me, int n, const ncclUniqueId &id) { leaving(me, n, id, 1); }
static void hangs(int me, int n, const ncclUniqueId &id) { leaving(me, n, id, 2); }

/* ---- core/cuda/nccl.cu over the emulated NCCL ---- */

/* the NCCL library loaded at run time is checked, not only the header */
static void old_library(int me, int n, const ncclUniqueId &id)
{
    void *comm = &comm;
    setenv("FACET_EMU_NCCL_VERSION", "20903", 1);
    int rc = facet_cuda_nccl_init(&comm, &id, me, n);
    EXPECT(rc == FACET_STATUS_ERR_DEVICE && comm == NULL && strstr(facet_last_error(), "older than the 2.10"),
           "NCCL 2.9.3 at run time: %d, %s", rc, facet_last_error());
    unsetenv("FACET_EMU_NCCL_VERSION");
    rc = facet_cuda_nccl_init(&comm, &id, me, n);
    EXPECT(rc == 0 && comm != NULL, "NCCL 2.18: %s", facet_last_error());
    facet_cuda_nccl_free(comm, 0);
}

static void *facet_comm(int me, int n, const ncclUniqueId &id)
{
    void *comm = NULL;
    int rc = facet_cuda_nccl_init(&comm, &id, me, n);
    EXPECT(rc == 0, "facet_cuda_nccl_init: %s", facet_last_error());
    return rc ? NULL : comm;
}

/* an allgather whose group fails (the last part does not fit out) says why
 * and starts no broadcast; the communicator goes on working */
static void allgather_group(int me, int n, const ncclUniqueId &id)
{
    void *comm = facet_comm(me, n, id);
    if (!comm) return;
    float *x = dev(std::vector<float>(4, (float)(me + 1)));
    float *out = dev(std::vector<float>(7, -1.0f));
    const int64_t counts[2] = { 4, 4 };
    int rc = facet_cuda_nccl_allgather(comm, out, x, counts, FACET_DTYPE_FLOAT32);
    EXPECT(rc == FACET_STATUS_ERR_DEVICE && strstr(facet_last_error(), "(facet-emu: ncclBroadcast: recvbuff"),
           "the first failure's message: %s", facet_last_error());
    EXPECT(host(out, 7)[0] == -1.0f && host(out, 7)[6] == -1.0f, "a broadcast of the failed group ran");
    float *out2 = dev(std::vector<float>(6, -1.0f));
    const int64_t uneven[2] = { 2, 4 };
    rc = facet_cuda_nccl_allgather(comm, out2, x, uneven, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_cuda_nccl_wait(comm, 10, "allgather");
    std::vector<float> got = host(out2, 6);
    EXPECT(rc == 0 && got[0] == 1.0f && got[1] == 1.0f && got[2] == 2.0f && got[5] == 2.0f,
           "the next allgather: %d %s, %g %g %g %g", rc, facet_last_error(), got[0], got[1], got[2], got[5]);
    facet_cuda_nccl_free(comm, 0);
}

/* a communicator whose error nobody waited for is freed with ncclCommAbort:
 * ncclCommDestroy could wait forever for its work */
static void free_failed(int me, int n, const ncclUniqueId &id)
{
    void *comm = facet_comm(me, n, id);
    if (!comm) return;
    float *d = dev(std::vector<float>(8, 1.0f));
    EXPECT(facet_cuda_nccl_allreduce(comm, d, me == 0 ? 4 : 5, FACET_DTYPE_FLOAT32, FACET_DIST_OP_SUM) == 0,
           "queueing the mismatched allreduce");
    fflush(stderr);
    FILE *t = tmpfile();
    int saved = dup(2);
    if (!t || saved < 0) return;
    dup2(fileno(t), 2);
    facet_cuda_nccl_free(comm, 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char said[1024] = "";
    rewind(t);
    size_t got = fread(said, 1, sizeof said - 1, t);
    said[got] = 0;
    fclose(t);
    EXPECT(!strstr(said, "ncclCommDestroy"), "the failed communicator went to ncclCommDestroy: %s", said);
}

int main(void)
{
    setenv("FACET_EMU_NCCL_SLOT_KB", "1", 1);
    struct {
        const char *name;
        int n;
        rank_fn f;
        const char *devices;
    } cases[] = {
        { "every collective on 3 ranks in 1 KB chunks", 3, collectives, NULL },
        { "two ranks on one GPU: invalid usage at init on both", 2, one_gpu, "3,4" },
        { "CUDA_VISIBLE_DEVICES set after CUDA started changes no rank's GPU", 2, late_visible, "7" },
        { "a failed call fails its group; calls in a group start at its end", 2, group_error, NULL },
        { "an empty collective is discarded, its arguments checked", 2, empty, NULL },
        { "in-place layouts on 3 ranks; other overlaps refused", 3, layouts, NULL },
        { "ranks in different collectives: invalid usage on both", 2, mismatch, NULL },
        { "a peer that exits: a remote error within 2 s", 2, exits, NULL },
        { "a peer that aborts: a remote error within 2 s", 2, aborts, NULL },
        { "a peer that never comes: a remote error at FACET_DIST_TIMEOUT", 2, hangs, NULL },
        { "nccl.cu: an NCCL library older than 2.10 at run time is refused", 1, old_library, NULL },
        { "nccl.cu: a failed allgather group keeps its first error; the communicator works on", 2, allgather_group, NULL },
        { "nccl.cu: a communicator with an error is freed by ncclCommAbort", 2, free_failed, NULL },
    };
    int passed = 0, failed = 0;
    for (auto &k : cases) {
        if (ranks(k.n, k.f, k.devices) == 0) {
            passed++;
        } else {
            failed++;
            printf("FAIL %s\n", k.name);
        }
    }
    printf("test_emu_nccl: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
