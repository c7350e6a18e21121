/*
 * nccl.cu - the NCCL collectives behind facet_dist_* for CUDA tensors
 * (cuda_backend.h). Each collective is queued on the legacy default stream,
 * ordered with every other facet kernel, and an event is recorded after it;
 * facet_cuda_nccl_wait polls that event and ncclCommGetAsyncError until the
 * deadline, and aborts the communicator (ncclCommAbort) when it passes or
 * NCCL reports an error, so a dead peer never hangs the caller. An allgather
 * of unequal parts is one ncclBroadcast per rank inside a group (NCCL fails
 * the whole group when one call in it fails). A communicator is freed with
 * ncclCommDestroy only while NCCL reports no asynchronous error; otherwise,
 * as NCCL says, with ncclCommAbort. float16 is ncclFloat16; bfloat16 is
 * ncclBfloat16 (NCCL 2.10 or newer is required, for it and ncclAvg, in the
 * header built against and in the library loaded at run time). NCCL reduces 16-bit values in its own order (not
 * bit-stable across rank counts). float32 avg is ncclAvg; 16-bit avg is a sum
 * and then times 1/W in float32, rounded once, as the MPI path does (ncclAvg
 * would scale by 1/W rounded to the 16-bit type first).
 * Built with NCCL when the Makefile finds nccl.h (FACET_NCCL=1); otherwise
 * every entry point fails saying facet was built without NCCL.
 */
#include "cuda_common.cuh"
#include <time.h>

#if FACET_NCCL
#include <nccl.h>
/* ncclAvg and ncclBfloat16 are from 2.10: an older NCCL builds as no NCCL,
 * and the collectives say why */
#if !defined(NCCL_VERSION_CODE) || NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
#define FACET_NCCL_TOO_OLD 1
#undef FACET_NCCL
#define FACET_NCCL 0
#endif
#endif

#if FACET_NCCL

static_assert(sizeof(ncclUniqueId) == FACET_NCCL_ID_BYTES, "the NCCL id size facet passes over MPI");

struct nccl_comm {
    ncclComm_t comm;
    cudaEvent_t done;
    int aborted;
};

static int check_nccl(ncclResult_t r, const char *fn)
{
    if (r == ncclSuccess) return 0;
    return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: NCCL: %s", fn, ncclGetErrorString(r));
}

static int nccl_type(int dtype, ncclDataType_t *out)
{
    switch (dtype) {
    case FACET_DTYPE_FLOAT32: *out = ncclFloat32; return 0;
    case FACET_DTYPE_INT32: *out = ncclInt32; return 0;
    case FACET_DTYPE_INT64: *out = ncclInt64; return 0;
    case FACET_DTYPE_UINT8: *out = ncclUint8; return 0;
    case FACET_DTYPE_FLOAT16: *out = ncclFloat16; return 0;
    case FACET_DTYPE_BFLOAT16: *out = ncclBfloat16; return 0;
    default: return facet_fail(FACET_STATUS_ERR_ARG, "facet_cuda_nccl: dtype %d has no NCCL type", dtype);
    }
}

static ncclRedOp_t nccl_op(int op)
{
    switch (op) {
    case FACET_DIST_OP_AVG: return ncclAvg;
    case FACET_DIST_OP_MAX: return ncclMax;
    case FACET_DIST_OP_MIN: return ncclMin;
    default: return ncclSum;
    }
}

/* avg of 16-bit values as the MPI path does it (dist.c): the sum, then times
 * 1/W in float32, rounded once. ncclAvg would scale each input by 1/W stored
 * in the 16-bit type, which is biased when W is not a power of two (1/3 is
 * 0.333984 in bfloat16). */
static bool avg16(int dtype, int op)
{
    return op == FACET_DIST_OP_AVG && (dtype == FACET_DTYPE_FLOAT16 || dtype == FACET_DTYPE_BFLOAT16);
}

template <typename T> __global__ void scale16_kernel(T *p, int64_t n, float f)
{
    FACET_CUDA_FOR(i, n) st(p, i, ld(p[i]) * f);
}

/* after a 16-bit sum on the same stream: times 1/W */
static int scale16(struct nccl_comm *c, void *data, int64_t count, int dtype, const char *fn)
{
    int size = 0;
    int rc = check_nccl(ncclCommCount(c->comm, &size), fn);
    if (rc) return rc;
    const float f = (float)(1.0 / size);
    if (dtype == FACET_DTYPE_FLOAT16) return launch_flat(fn, count, scale16_kernel<act_f16>, (act_f16 *)data, count, f);
    return launch_flat(fn, count, scale16_kernel<act_bf16>, (act_bf16 *)data, count, f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int live(void *comm, const char *fn)
{
    struct nccl_comm *c = (struct nccl_comm *)comm;
    if (!c) return facet_fail(FACET_STATUS_ERR_ARG, "%s: no NCCL communicator", fn);
    if (c->aborted) return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: the NCCL communicator was aborted after a failure", fn);
    return 0;
}

/* The checks every collective starts with: a live communicator, an NCCL type. */
static int begin(void *comm, int dtype, const char *fn, ncclDataType_t *ty)
{
    int rc = live(comm, fn);
    return rc ? rc : nccl_type(dtype, ty);
}

/* After a collective was queued (rc: how that went): the event to wait on. */
static int queued(void *comm, int rc, const char *fn)
{
    return rc ? rc : check_cuda(cudaEventRecord(((struct nccl_comm *)comm)->done, 0), fn);
}

extern "C" int facet_cuda_nccl_is_built(void) { return 1; }

extern "C" int facet_cuda_nccl_unique_id(void *id)
{
    ncclUniqueId u;
    int rc = check_nccl(ncclGetUniqueId(&u), "facet_cuda_nccl_unique_id");
    if (!rc) memcpy(id, &u, sizeof u);
    return rc;
}

extern "C" int facet_cuda_nccl_init(void **comm, const void *id, int rank, int size)
{
    static const char *fn = "facet_cuda_nccl_init";
    *comm = NULL;
    struct nccl_comm *c = (struct nccl_comm *)calloc(1, sizeof *c);
    if (!c) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    /* the library loaded at run time, not the header built against: ncclAvg and ncclBfloat16 need 2.10 */
    int version = 0;
    int rc = check_nccl(ncclGetVersion(&version), fn);
    if (!rc && version < NCCL_VERSION(2, 10, 0))
        rc = facet_fail(FACET_STATUS_ERR_DEVICE, "%s: the NCCL library loaded is version %d, older than the 2.10 facet "
                        "was built for (LD_LIBRARY_PATH or the rpath picks an older libnccl.so)", fn, version);
    if (rc) {
        free(c);
        return rc;
    }
    rc = check_cuda(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming), fn);
    if (!rc) rc = check_nccl(ncclCommInitRank(&c->comm, size, u, rank), fn);
    if (rc) {
        if (c->done) cudaEventDestroy(c->done);
        free(c);
        return rc;
    }
    *comm = c;
    return 0;
}

extern "C" int facet_cuda_nccl_free(void *comm, int abort)
{
    struct nccl_comm *c = (struct nccl_comm *)comm;
    if (!c) return 0;
    if (!c->aborted) {
        /* a communicator with an asynchronous error may never finish its queued work, which
         * ncclCommDestroy waits for: NCCL says to abort it */
        ncclResult_t async = ncclSuccess;
        if (!abort) ncclCommGetAsyncError(c->comm, &async);
        if (abort || (async != ncclSuccess && async != ncclInProgress)) ncclCommAbort(c->comm);
        else ncclCommDestroy(c->comm);
    }
    cudaEventDestroy(c->done);
    free(c);
    return 0;
}

extern "C" int facet_cuda_nccl_allreduce(void *comm, void *data, int64_t count, int dtype, int op)
{
    static const char *fn = "facet_cuda_nccl_allreduce";
    ncclDataType_t ty;
    int rc = begin(comm, dtype, fn, &ty);
    if (rc) return rc;
    struct nccl_comm *c = (struct nccl_comm *)comm;
    const bool a16 = avg16(dtype, op);
    rc = check_nccl(ncclAllReduce(data, data, (size_t)count, ty, a16 ? ncclSum : nccl_op(op), c->comm, 0), fn);
    if (!rc && a16) rc = scale16(c, data, count, dtype, fn);
    return queued(c, rc, fn);
}

extern "C" int facet_cuda_nccl_allgather(void *comm, void *out, const void *x, const int64_t *counts, int dtype)
{
    static const char *fn = "facet_cuda_nccl_allgather";
    ncclDataType_t ty;
    int rc = begin(comm, dtype, fn, &ty);
    if (rc) return rc;
    struct nccl_comm *c = (struct nccl_comm *)comm;
    int size = 0, rank = 0;
    rc = check_nccl(ncclCommCount(c->comm, &size), fn);
    if (!rc) rc = check_nccl(ncclCommUserRank(c->comm, &rank), fn);
    if (rc) return rc;
    size_t el = facet_elsize(dtype), at = 0;
    rc = check_nccl(ncclGroupStart(), fn);
    for (int r = 0; r < size && !rc; r++) {
        /* sendbuff is read on the root alone; the others pass their part of out (never NULL,
         * which some NCCL versions' argument checks refuse) */
        void *part = (char *)out + at * el;
        rc = check_nccl(ncclBroadcast(r == rank ? x : part, part, (size_t)counts[r], ty, r, c->comm, 0), fn);
        at += (size_t)counts[r];
    }
    /* NCCL fails the whole group when one call in it failed (ncclGroupEnd returns that error and starts
     * none of its broadcasts): the first failure's message is the one to keep */
    ncclResult_t end = ncclGroupEnd();
    if (!rc) rc = check_nccl(end, fn);
    return queued(c, rc, fn);
}

extern "C" int facet_cuda_nccl_reduce_scatter(void *comm, void *out, const void *x, int64_t count, int dtype, int op)
{
    static const char *fn = "facet_cuda_nccl_reduce_scatter";
    ncclDataType_t ty;
    int rc = begin(comm, dtype, fn, &ty);
    if (rc) return rc;
    struct nccl_comm *c = (struct nccl_comm *)comm;
    const bool a16 = avg16(dtype, op);
    rc = check_nccl(ncclReduceScatter(x, out, (size_t)count, ty, a16 ? ncclSum : nccl_op(op), c->comm, 0), fn);
    if (!rc && a16) rc = scale16(c, out, count, dtype, fn);
    return queued(c, rc, fn);
}

extern "C" int facet_cuda_nccl_broadcast(void *comm, void *data, int64_t count, int dtype, int root)
{
    static const char *fn = "facet_cuda_nccl_broadcast";
    ncclDataType_t ty;
    int rc = begin(comm, dtype, fn, &ty);
    if (rc) return rc;
    struct nccl_comm *c = (struct nccl_comm *)comm;
    return queued(c, check_nccl(ncclBroadcast(data, data, (size_t)count, ty, root, c->comm, 0), fn), fn);
}

extern "C" int facet_cuda_nccl_wait(void *comm, double timeout, const char *what)
{
    static const char *fn = "facet_cuda_nccl_wait";
    int rc = live(comm, fn);
    if (rc) return rc;
    struct nccl_comm *c = (struct nccl_comm *)comm;
    double deadline = now_s() + timeout;
    for (;;) {
        cudaError_t e = cudaEventQuery(c->done);
        if (e != cudaSuccess && e != cudaErrorNotReady) return check_cuda(e, fn);
        if (e == cudaErrorNotReady) (void)cudaGetLastError();   /* not a fault: the next launch check must not see it */
        /* also once the event is done: a collective that NCCL failed may
         * still have completed on the stream, with garbage in its buffers */
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(c->comm, &async);
        if (async != ncclSuccess && async != ncclInProgress) {
            ncclCommAbort(c->comm);
            c->aborted = 1;
            return facet_fail(FACET_STATUS_ERR_DEVICE, "NCCL %s failed: %s (communicator aborted)", what,
                              ncclGetErrorString(async));
        }
        if (e == cudaSuccess) return 0;
        if (now_s() > deadline) {
            ncclCommAbort(c->comm);
            c->aborted = 1;
            return facet_fail(FACET_STATUS_ERR_DEVICE, "NCCL %s did not complete within %g s (a peer exited or hangs; "
                              "communicator aborted; FACET_DIST_TIMEOUT sets the limit)", what, timeout);
        }
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
}

#else /* FACET_NCCL */

static int absent(const char *fn)
{
#ifdef FACET_NCCL_TOO_OLD
    return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: facet was built against NCCL %d.%d, older than the 2.10 it needs "
                      "(point NCCL_HOME at a newer NCCL and rebuild)", fn, NCCL_MAJOR, NCCL_MINOR);
#else
    return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: facet was built without NCCL (no nccl.h under NCCL_HOME or the "
                      "CUDA toolkit)", fn);
#endif
}

extern "C" int facet_cuda_nccl_is_built(void) { return 0; }
extern "C" int facet_cuda_nccl_unique_id(void *) { return absent("facet_cuda_nccl_unique_id"); }
extern "C" int facet_cuda_nccl_init(void **comm, const void *, int, int)
{
    *comm = NULL;
    return absent("facet_cuda_nccl_init");
}
extern "C" int facet_cuda_nccl_free(void *, int) { return 0; }
extern "C" int facet_cuda_nccl_allreduce(void *, void *, int64_t, int, int) { return absent("facet_cuda_nccl_allreduce"); }
extern "C" int facet_cuda_nccl_allgather(void *, void *, const void *, const int64_t *, int)
{
    return absent("facet_cuda_nccl_allgather");
}
extern "C" int facet_cuda_nccl_reduce_scatter(void *, void *, const void *, int64_t, int, int)
{
    return absent("facet_cuda_nccl_reduce_scatter");
}
extern "C" int facet_cuda_nccl_broadcast(void *, void *, int64_t, int, int) { return absent("facet_cuda_nccl_broadcast"); }
extern "C" int facet_cuda_nccl_wait(void *, double, const char *) { return absent("facet_cuda_nccl_wait"); }

#endif /* FACET_NCCL */
