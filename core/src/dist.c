/*
 * dist.c - facet_dist_*: the communicator of a distributed run and its
 * collectives. CPU tensors go through MPI (built when the Makefile finds
 * mpicc, FACET_MPI=1), CUDA tensors through NCCL (core/cuda/nccl.cu, reached
 * through cuda_backend.h), whose communicator is made on first use from rank
 * 0's unique id broadcast over MPI.
 *
 * No silent hangs. The communicator is a duplicate of MPI_COMM_WORLD with
 * MPI_ERRORS_RETURN, every collective is started non-blocking and polled
 * against a deadline (facet_dist_params.timeout), and an MPI error fails the
 * call at once. When the deadline passes, a roll call on a second duplicate
 * asks every rank for the collective it is in (each rank that times out
 * answers; a window of a few seconds), so the message names the ranks that
 * did not answer: exited, hung, or busy outside facet.dist. A failure breaks
 * the communicator for good (collective requests cannot be cancelled, so
 * their buffers stay referenced and MPI_Finalize would wait for the dead
 * peer). When the launcher tears the job down after a rank exited (Open MPI
 * sends SIGTERM to the others), a SIGTERM handler says so on stderr, naming
 * this rank and its last collective, then lets the signal kill the process.
 *
 * 16-bit tensors (float16, bfloat16) travel as MPI_UINT16_T with user-defined
 * ops: each pairwise combine widens both operands to float32 (half_math.h),
 * adds (or takes fmaxf/fminf, as facet's maximum_/minimum_: a NaN loses to a
 * number) and rounds the result once back to 16 bits. float32 has at least
 * 2p + 2 bits for p = 11 (float16) and 8 (bfloat16), so each combine is the
 * correctly rounded 16-bit sum of its operands; inf and NaN propagate as in
 * float32. Which partial sums MPI forms depends on its algorithm and the
 * rank count, so a 16-bit sum over more than two ranks is not bit-stable
 * across rank counts (nor is NCCL's). avg is that sum, then on each rank
 * every element widened, multiplied by 1/W in float32 and rounded once.
 * The float16 sum runs 8 values at a time with F16C where the CPU has it
 * (same bits: its conversions round as half_math.h does; lanes holding an
 * inf or NaN go through half_math.h for its NaN rule).
 *
 * Without MPI every function exists and fails with "built without MPI"; the
 * Lua layer (facet.dist) then runs as world size 1 without calling here.
 */
#define _GNU_SOURCE     /* dladdr */
#include "internal.h"
#include <stdarg.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef FACET_MPI
#define FACET_MPI 0
#endif
#if FACET_MPI
#include <dlfcn.h>
#include <math.h>
#include <mpi.h>
#include "half_math.h"
#endif

static const char *op_names[] = { "sum", "avg", "max", "min" };
_Static_assert(sizeof op_names / sizeof op_names[0] == FACET_DIST_OP_COUNT, "a name for every op");

int facet_dist_is_built(int *mpi, int *nccl)
{
    if (!mpi || !nccl) return facet_fail(FACET_STATUS_ERR_ARG, "facet_dist_is_built: mpi and nccl must not be NULL");
    *mpi = FACET_MPI ? 1 : 0;
    *nccl = facet_cuda_nccl_is_built();
    return 0;
}

#if !FACET_MPI

static int no_mpi(const char *fn)
{
    return facet_fail(FACET_STATUS_ERR_IO, "%s: facet was built without MPI (no mpicc at build time, or FACET_MPI=0); "
                      "install libopenmpi-dev and rebuild to run on several processes", fn);
}

int facet_dist_init(facet_dist **out, const facet_dist_params *params)
{
    (void)params;
    if (out) *out = NULL;
    return no_mpi("facet_dist_init");
}
int facet_dist_free(facet_dist *dist)
{
    (void)dist;
    return 0;
}
int facet_dist_query(const facet_dist *dist, int *rank, int *size, int *local_rank, int *local_size)
{
    (void)dist; (void)rank; (void)size; (void)local_rank; (void)local_size;
    return no_mpi("facet_dist_query");
}
int facet_dist_barrier(facet_dist *dist) { (void)dist; return no_mpi("facet_dist_barrier"); }
int facet_dist_allreduce(facet_dist *dist, facet_tensor *t, int op)
{
    (void)dist; (void)t; (void)op;
    return no_mpi("facet_dist_allreduce");
}
int facet_dist_allgather(facet_dist *dist, facet_tensor *out, const facet_tensor *x, const int64_t *rows, int nrows)
{
    (void)dist; (void)out; (void)x; (void)rows; (void)nrows;
    return no_mpi("facet_dist_allgather");
}
int facet_dist_reduce_scatter(facet_dist *dist, facet_tensor *out, const facet_tensor *x, int op)
{
    (void)dist; (void)out; (void)x; (void)op;
    return no_mpi("facet_dist_reduce_scatter");
}
int facet_dist_broadcast(facet_dist *dist, facet_tensor *t, int root)
{
    (void)dist; (void)t; (void)root;
    return no_mpi("facet_dist_broadcast");
}
int facet_dist_allreduce_start(facet_dist *dist, facet_tensor *t, int op)
{
    (void)dist; (void)t; (void)op;
    return no_mpi("facet_dist_allreduce_start");
}
int facet_dist_wait_all(facet_dist *dist) { (void)dist; return no_mpi("facet_dist_wait_all"); }
int facet_dist_progress(facet_dist *dist) { (void)dist; return no_mpi("facet_dist_progress"); }
int facet_dist_abort(facet_dist *dist, int code)
{
    (void)dist; (void)code;
    return no_mpi("facet_dist_abort");
}

#else /* FACET_MPI */

enum {
    ROLL_TAG = 7301,        /* the roll call's messages, on their own communicator */
    SPIN_POLLS = 4000       /* MPI_Test calls before the poll loop starts to sleep */
};

struct pending {
    facet_tensor *t;        /* a handle held until the allreduce completes */
    int op;
    int cuda;
    unsigned long long seq;
    MPI_Request req;
};

struct facet_dist {
    MPI_Comm comm, roll;
    int rank, size, local_rank, local_size;
    double timeout;
    unsigned long long seq;            /* collectives started */
    int broken;
    char why[768];
    void *nccl;
    int npending;
    struct pending pending[FACET_DIST_MAX_PENDING];
};

/* one communicator per process: MPI is initialised once, finalised once */
static int live_handles;
static int started_mpi;
static int finalized_mpi;

/* what the SIGTERM handler prints: preformatted at init, the collective updated */
static char term_msg[160];
static size_t term_len;
static const char *volatile term_what = "none yet";
static volatile unsigned long long term_seq;
static struct sigaction term_old;
static int term_installed;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void put(const char *s) { ssize_t w = write(2, s, strlen(s)); (void)w; }

static void on_sigterm(int sig)
{
    char num[24];
    int n = 0;
    unsigned long long v = term_seq;
    char tmp[24];
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v && n < 23);
    for (int i = 0; i < n; i++) num[i] = tmp[n - 1 - i];
    num[n] = '\0';
    ssize_t w = write(2, term_msg, term_len);
    (void)w;
    put(term_what);
    put(" #");
    put(num);
    put("): another rank failed or exited; its own message is above or below\n");
    sigaction(SIGTERM, &term_old, NULL);
    raise(sig);
}

static void install_sigterm(int rank, int size)
{
    if (term_installed) return;
    snprintf(term_msg, sizeof term_msg, "facet.dist: rank %d of %d was stopped by the launcher (SIGTERM; last collective: ",
             rank, size);
    term_len = strlen(term_msg);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, &term_old) == 0) term_installed = 1;
}

static void mark(const char *what, unsigned long long seq)
{
    term_what = what;
    term_seq = seq;
}

static const char *mpi_text(int rc, char *buf)
{
    int len = 0;
    if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) snprintf(buf, MPI_MAX_ERROR_STRING, "MPI error %d", rc);
    return buf;
}

/* The communicator breaks: this and every later call fail with msg. */
static int breaks(facet_dist *d, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int breaks(facet_dist *d, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->why, sizeof d->why, fmt, ap);
    va_end(ap);
    d->broken = 1;
    return facet_fail(code, "%s", d->why);
}

/* After a timeout: every rank that also timed out answers with the
 * collective it is in; the others are named as silent. */
static void roll_call(facet_dist *d, unsigned long long seq, char *out, size_t cap)
{
    int n = d->size;
    /* leaked on purpose: requests that never complete keep referring to them */
    unsigned long long *mine = malloc(sizeof *mine);
    unsigned long long *theirs = calloc((size_t)n, sizeof *theirs);
    MPI_Request *rr = calloc((size_t)n, sizeof *rr), *sr = calloc((size_t)n, sizeof *sr);
    int *got = calloc((size_t)n, sizeof *got);
    if (!mine || !theirs || !rr || !sr || !got) {
        snprintf(out, cap, "no roll call (out of memory)");
        free(mine); free(theirs); free(rr); free(sr); free(got);
        return;
    }
    *mine = seq;
    for (int r = 0; r < n; r++) {
        rr[r] = sr[r] = MPI_REQUEST_NULL;
        if (r == d->rank) continue;
        MPI_Isend(mine, 1, MPI_UNSIGNED_LONG_LONG, r, ROLL_TAG, d->roll, &sr[r]);
        MPI_Irecv(&theirs[r], 1, MPI_UNSIGNED_LONG_LONG, r, ROLL_TAG, d->roll, &rr[r]);
    }
    double window = d->timeout < 2 ? 2 : (d->timeout > 10 ? 5 : d->timeout / 2), end = now() + window;
    int missing = n - 1;
    while (missing > 0 && now() < end) {
        for (int r = 0; r < n; r++) {
            if (r == d->rank || got[r] || rr[r] == MPI_REQUEST_NULL) continue;
            int flag = 0;
            if (MPI_Test(&rr[r], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) { rr[r] = MPI_REQUEST_NULL; continue; }
            if (flag) { got[r] = 1; missing--; }
        }
        struct timespec ts = { 0, 2000000 };
        nanosleep(&ts, NULL);
    }
    size_t at = (size_t)snprintf(out, cap, "no answer from rank(s)");
    int any = 0;
    for (int r = 0; r < n && at < cap; r++)
        if (r != d->rank && !got[r]) at += (size_t)snprintf(out + at, cap - at, "%s %d", any++ ? "," : "", r);
    if (!any && at < cap) at += (size_t)snprintf(out + at, cap - at, " none");
    if (at < cap) at += (size_t)snprintf(out + at, cap - at, " (exited, hung, or busy outside facet.dist)");
    for (int r = 0; r < n && at < cap; r++)
        if (r != d->rank && got[r] && theirs[r] != seq)
            at += (size_t)snprintf(out + at, cap - at, "; rank %d waits in collective #%llu instead (the ranks called "
                                   "collectives in different orders)", r, theirs[r]);
    for (int r = 0; r < n; r++)
        if (rr[r] != MPI_REQUEST_NULL && !got[r]) MPI_Cancel(&rr[r]);
    free(got);
    /* theirs, rr, sr and mine stay: a late answer or a send still refers to them */
}

/* Polls req until it completes, fails, or the deadline passes. */
static int wait_req(facet_dist *d, MPI_Request *req, const char *fn, const char *what, unsigned long long seq,
                    double deadline)
{
    char err[MPI_MAX_ERROR_STRING];
    for (long polls = 0;; polls++) {
        int flag = 0;
        int rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return breaks(d, FACET_STATUS_ERR_IO, "%s: %s (collective #%llu) failed on rank %d of %d: %s; a peer may have "
                          "exited", fn, what, seq, d->rank, d->size, mpi_text(rc, err));
        if (flag) return 0;
        if (now() > deadline) {
            char roll[512];
            roll_call(d, seq, roll, sizeof roll);
            return breaks(d, FACET_STATUS_ERR_IO, "%s: %s (collective #%llu) did not complete within %g s on rank %d of %d: "
                          "%s (FACET_DIST_TIMEOUT sets the limit)", fn, what, seq, d->timeout, d->rank, d->size, roll);
        }
        if (polls > SPIN_POLLS) {
            struct timespec ts = { 0, 50000 };
            nanosleep(&ts, NULL);
        }
    }
}

static int usable(const facet_dist *d, const char *fn)
{
    if (!d) return facet_fail(FACET_STATUS_ERR_ARG, "%s: the communicator is NULL", fn);
    if (d->broken)
        return facet_fail(FACET_STATUS_ERR_IO, "%s: the communicator failed earlier and cannot be used again: %s", fn,
                          d->why);
    return 0;
}

/* MPI_DATATYPE_NULL for a dtype collectives do not take */
static MPI_Datatype mpi_type(int dtype)
{
    switch (dtype) {
    case FACET_DTYPE_FLOAT32: return MPI_FLOAT;
    case FACET_DTYPE_INT32: return MPI_INT32_T;
    case FACET_DTYPE_INT64: return MPI_INT64_T;
    case FACET_DTYPE_UINT8: return MPI_UINT8_T;
    case FACET_DTYPE_FLOAT16:
    case FACET_DTYPE_BFLOAT16: return MPI_UINT16_T;     /* reduced by the ops below */
    default: return MPI_DATATYPE_NULL;
    }
}

static int is_half(int dtype) { return dtype == FACET_DTYPE_FLOAT16 || dtype == FACET_DTYPE_BFLOAT16; }

/* ---- 16-bit reductions: a user op per format and op (sum, max, min) ---- */

enum { HALF_SUM, HALF_MAX, HALF_MIN, HALF_OPS };

static MPI_Op half_ops[2][HALF_OPS];   /* [bfloat16][op], made once after MPI_Init */
static int half_ops_made;

static inline float widen16(uint16_t v, int bf) { return bf ? facet_bf16_to_float(v) : facet_half_to_float(v); }
static inline uint16_t round16(float f, int bf) { return bf ? facet_float_to_bf16(f) : facet_float_to_half(f); }

/* inout[i] = in[i] op inout[i] for i in [from, n), in float32, rounded once to 16 bits */
static void combine16_from(const uint16_t *a, uint16_t *b, int from, int n, int bf, int op)
{
    for (int i = from; i < n; i++) {
        float x = widen16(a[i], bf), y = widen16(b[i], bf);
        float r = op == HALF_SUM ? x + y : op == HALF_MAX ? fmaxf(x, y) : fminf(x, y);
        b[i] = round16(r, bf);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
/* float16 sums 8 at a time with F16C: the hardware's conversions round to
 * nearest even with subnormals and overflow to inf as half_math.h does; only
 * NaN payloads differ, so 8 lanes holding an inf or NaN operand (all-ones
 * exponent) take the scalar path. Returns how many it summed. */
__attribute__((target("avx,f16c"))) static int f16_sum_f16c(const uint16_t *a, uint16_t *b, int n)
{
    const __m128i ones = _mm_set1_epi16(0x7c00);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i x = _mm_loadu_si128((const __m128i *)(a + i)), y = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i special = _mm_or_si128(_mm_cmpeq_epi16(_mm_and_si128(x, ones), ones),
                                       _mm_cmpeq_epi16(_mm_and_si128(y, ones), ones));
        if (_mm_movemask_epi8(special)) {
            combine16_from(a, b, i, i + 8, 0, HALF_SUM);
            continue;
        }
        __m256 r = _mm256_add_ps(_mm256_cvtph_ps(x), _mm256_cvtph_ps(y));
        _mm_storeu_si128((__m128i *)(b + i), _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    return i;
}

/* AVX through the compiler's check (it includes the OS's XSAVE support), F16C by CPUID */
static int f16c_usable(void)
{
    static int known = -1;     /* racing first calls store the same answer */
    unsigned ea, eb, ec, ed;
    if (known < 0) known = __builtin_cpu_supports("avx") && __get_cpuid(1, &ea, &eb, &ec, &ed) && (ec & bit_F16C);
    return known;
}
#endif

static void combine16(const void *in, void *inout, int n, int bf, int op)
{
    int from = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (!bf && op == HALF_SUM && f16c_usable()) from = f16_sum_f16c(in, inout, n);
#endif
    combine16_from(in, inout, from, n, bf, op);
}

static void f16_sum(void *in, void *io, int *n, MPI_Datatype *t) { (void)t; combine16(in, io, *n, 0, HALF_SUM); }
static void f16_max(void *in, void *io, int *n, MPI_Datatype *t) { (void)t; combine16(in, io, *n, 0, HALF_MAX); }
static void f16_min(void *in, void *io, int *n, MPI_Datatype *t) { (void)t; combine16(in, io, *n, 0, HALF_MIN); }
static void bf16_sum(void *in, void *io, int *n, MPI_Datatype *t) { (void)t; combine16(in, io, *n, 1, HALF_SUM); }
static void bf16_max(void *in, void *io, int *n, MPI_Datatype *t) { (void)t; combine16(in, io, *n, 1, HALF_MAX); }
static void bf16_min(void *in, void *io, int *n, MPI_Datatype *t) { (void)t; combine16(in, io, *n, 1, HALF_MIN); }

static int make_half_ops(void)
{
    if (half_ops_made) return MPI_SUCCESS;
    MPI_User_function *fns[2][HALF_OPS] = { { f16_sum, f16_max, f16_min }, { bf16_sum, bf16_max, bf16_min } };
    for (int f = 0; f < 2; f++)
        for (int o = 0; o < HALF_OPS; o++) {
            int rc = MPI_Op_create(fns[f][o], 1, &half_ops[f][o]);
            if (rc != MPI_SUCCESS) {
                /* the ones made so far go back: a later init tries again */
                for (int k = 0; k < f * HALF_OPS + o; k++) MPI_Op_free(&half_ops[k / HALF_OPS][k % HALF_OPS]);
                return rc;
            }
        }
    half_ops_made = 1;
    return MPI_SUCCESS;
}

static void free_half_ops(void)
{
    if (!half_ops_made) return;
    for (int f = 0; f < 2; f++)
        for (int o = 0; o < HALF_OPS; o++) MPI_Op_free(&half_ops[f][o]);
    half_ops_made = 0;
}

static MPI_Op mpi_op(int op, int dtype)
{
    if (is_half(dtype)) {
        int o = op == FACET_DIST_OP_MAX ? HALF_MAX : op == FACET_DIST_OP_MIN ? HALF_MIN : HALF_SUM;
        return half_ops[dtype == FACET_DTYPE_BFLOAT16][o];
    }
    return op == FACET_DIST_OP_MAX ? MPI_MAX : op == FACET_DIST_OP_MIN ? MPI_MIN : MPI_SUM;
}

/* A tensor a collective may take: live, contiguous, a supported dtype, and
 * on CUDA only with NCCL built. */
static int check_buffer(const char *fn, const char *name, const facet_tensor *t)
{
    int rc = facet_check_tensor(fn, name, t);
    if (rc) return rc;
    if (mpi_type(t->dtype) == MPI_DATATYPE_NULL)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be float32, float16, bfloat16, int32, int64 or uint8", fn, name,
                          facet_desc(t));
    if (!facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be contiguous", fn, name, facet_desc(t));
    if (t->device == FACET_DEVICE_CUDA && !facet_cuda_nccl_is_built())
        return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: %s %s is on CUDA, whose collectives need NCCL, and facet was built "
                          "without it (no nccl.h under CUDA_HOME or NCCL_HOME)", fn, name, facet_desc(t));
    return 0;
}

static int check_op(const char *fn, int op, const facet_tensor *t)
{
    if (op < 0 || op >= FACET_DIST_OP_COUNT)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: op %d is not a FACET_DIST_OP_* (0..%d)", fn, op, FACET_DIST_OP_COUNT - 1);
    if (op == FACET_DIST_OP_AVG && t->dtype != FACET_DTYPE_FLOAT32 && !is_half(t->dtype))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: op avg needs a float32, float16 or bfloat16 tensor, got %s", fn,
                          facet_desc(t));
    return 0;
}

static int check_count(const char *fn, const facet_tensor *t, int64_t n)
{
    if (n > INT_MAX)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s has %lld elements, more than MPI's int count (%d) allows in one call",
                          fn, facet_desc(t), (long long)n, INT_MAX);
    return 0;
}

/* avg's division: times 1/W in float32 (16-bit: widened, rounded once) */
static void scale(facet_tensor *t, double by)
{
    const float f = (float)by;
    int64_t n = facet_numel(t);
    if (is_half(t->dtype)) {
        uint16_t *p = facet_ptr(t);
        int bf = t->dtype == FACET_DTYPE_BFLOAT16;
        for (int64_t i = 0; i < n; i++) p[i] = round16(widen16(p[i], bf) * f, bf);
        return;
    }
    float *p = facet_ptr(t);
    for (int64_t i = 0; i < n; i++) p[i] *= f;
}

/* The NCCL communicator, made on first use: rank 0's id goes out over MPI. */
static int ensure_nccl(facet_dist *d, const char *fn)
{
    if (d->nccl) return 0;
    unsigned char buf[1 + FACET_NCCL_ID_BYTES];
    memset(buf, 0, sizeof buf);
    char first[512] = "";
    if (d->rank == 0 && facet_cuda_nccl_unique_id(buf + 1)) {
        buf[0] = 1;
        snprintf(first, sizeof first, "%s", facet_last_error());
    }
    MPI_Request req;
    unsigned long long seq = ++d->seq;
    mark("NCCL setup", seq);
    int rc = MPI_Ibcast(buf, (int)sizeof buf, MPI_UNSIGNED_CHAR, 0, d->comm, &req);
    if (rc != MPI_SUCCESS) {
        char err[MPI_MAX_ERROR_STRING];
        return breaks(d, FACET_STATUS_ERR_IO, "%s: broadcasting the NCCL id failed on rank %d: %s", fn, d->rank,
                      mpi_text(rc, err));
    }
    rc = wait_req(d, &req, fn, "the NCCL id broadcast", seq, now() + d->timeout);
    if (rc) return rc;
    if (buf[0])
        return breaks(d, FACET_STATUS_ERR_DEVICE, "%s: rank 0 could not make an NCCL id%s%s", fn, first[0] ? ": " : "", first);
    rc = facet_cuda_nccl_init(&d->nccl, buf + 1, d->rank, d->size);
    if (rc) return breaks(d, rc, "%s: NCCL setup on rank %d of %d: %s", fn, d->rank, d->size, facet_last_error());
    return 0;
}

static int nccl_done(facet_dist *d, const char *fn, const char *what, int rc)
{
    if (!rc) rc = facet_cuda_nccl_wait(d->nccl, d->timeout, what);
    if (rc) return breaks(d, rc, "%s: rank %d of %d: %s", fn, d->rank, d->size, facet_last_error());
    return 0;
}

int facet_dist_init(facet_dist **out, const facet_dist_params *params)
{
    static const char *fn = "facet_dist_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!params) return facet_fail(FACET_STATUS_ERR_ARG, "%s: params is NULL", fn);
    if (!(params->timeout > 0) || params->timeout > 1e7)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: timeout must be seconds in (0, 1e7], got %g", fn, params->timeout);
    int inited = 0, fin = 0;
    MPI_Finalized(&fin);
    if (fin || finalized_mpi)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: MPI was finalised already in this process; it can be started once", fn);
    MPI_Initialized(&inited);
    if (!inited) {
        /* LuaJIT loads facet_core.so (and so libmpi) RTLD_LOCAL; Open MPI's
         * plugins need libmpi's symbols global */
        Dl_info info;
        if (dladdr((void *)MPI_Init_thread, &info) && info.dli_fname) dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: MPI_Init_thread failed (is this process started by mpirun or srun?)", fn);
        started_mpi = 1;
    }
    facet_dist *d = calloc(1, sizeof *d);
    if (!d) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    char err[MPI_MAX_ERROR_STRING];
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_dup(MPI_COMM_WORLD, &d->roll);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(d->roll, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(d->comm, &d->rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(d->comm, &d->size);
    MPI_Comm node = MPI_COMM_NULL;
    if (rc == MPI_SUCCESS) rc = MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(node, &d->local_rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(node, &d->local_size);
    if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
    if (rc == MPI_SUCCESS) rc = make_half_ops();
    if (rc != MPI_SUCCESS) {
        free(d);
        return facet_fail(FACET_STATUS_ERR_IO, "%s: setting up the communicator failed: %s", fn, mpi_text(rc, err));
    }
    d->timeout = params->timeout;
    live_handles++;
    if (d->size > 1) install_sigterm(d->rank, d->size);
    *out = d;
    return 0;
}

int facet_dist_free(facet_dist *d)
{
    if (!d) return 0;
    int broken = d->broken;
    if (!broken) {
        /* started allreduces nobody waited for: complete them first */
        if (d->npending) broken = facet_dist_wait_all(d) != 0;
    }
    if (d->nccl) facet_cuda_nccl_free(d->nccl, broken);
    if (!broken) {
        for (int i = 0; i < d->npending; i++) facet_tensor_free(d->pending[i].t);
        MPI_Comm_free(&d->comm);
        MPI_Comm_free(&d->roll);
        live_handles--;
        if (live_handles == 0 && started_mpi && !finalized_mpi) {
            finalized_mpi = 1;
            if (term_installed) {
                sigaction(SIGTERM, &term_old, NULL);
                term_installed = 0;
            }
            free_half_ops();
            MPI_Finalize();
        }
        free(d);
        return 0;
    }
    /* broken: the buffers of requests that never completed stay, and so does
     * MPI (finalising would wait for the dead peer); the launcher ends the job */
    return 0;
}

int facet_dist_query(const facet_dist *d, int *rank, int *size, int *local_rank, int *local_size)
{
    if (!d) return facet_fail(FACET_STATUS_ERR_ARG, "facet_dist_query: the communicator is NULL");
    if (rank) *rank = d->rank;
    if (size) *size = d->size;
    if (local_rank) *local_rank = d->local_rank;
    if (local_size) *local_size = d->local_size;
    return 0;
}

int facet_dist_barrier(facet_dist *d)
{
    static const char *fn = "facet_dist_barrier";
    int rc = usable(d, fn);
    if (rc) return rc;
    unsigned long long seq = ++d->seq;
    mark("barrier", seq);
    MPI_Request req;
    char err[MPI_MAX_ERROR_STRING];
    rc = MPI_Ibarrier(d->comm, &req);
    if (rc != MPI_SUCCESS) return breaks(d, FACET_STATUS_ERR_IO, "%s: rank %d: %s", fn, d->rank, mpi_text(rc, err));
    return wait_req(d, &req, fn, "barrier", seq, now() + d->timeout);
}

static int allreduce_checks(facet_dist *d, const char *fn, facet_tensor *t, int op)
{
    int rc = usable(d, fn);
    if (!rc) rc = check_buffer(fn, "t", t);
    if (!rc) rc = check_op(fn, op, t);
    if (!rc) rc = check_count(fn, t, facet_numel(t));
    return rc;
}

/* Queues the allreduce (MPI request or NCCL on the stream). */
static int allreduce_post(facet_dist *d, const char *fn, facet_tensor *t, int op, unsigned long long seq, MPI_Request *req)
{
    char err[MPI_MAX_ERROR_STRING];
    int64_t n = facet_numel(t);
    *req = MPI_REQUEST_NULL;
    if (t->device == FACET_DEVICE_CUDA) {
        int rc = ensure_nccl(d, fn);
        if (rc) return rc;
        rc = facet_cuda_nccl_allreduce(d->nccl, facet_ptr(t), n, t->dtype, op);
        if (rc) return breaks(d, rc, "%s: rank %d of %d: %s", fn, d->rank, d->size, facet_last_error());
        return 0;
    }
    MPI_Datatype ty = mpi_type(t->dtype);
    int rc = MPI_Iallreduce(MPI_IN_PLACE, facet_ptr(t), (int)n, ty, mpi_op(op, t->dtype), d->comm, req);
    if (rc != MPI_SUCCESS)
        return breaks(d, FACET_STATUS_ERR_IO, "%s: allreduce (collective #%llu) failed to start on rank %d: %s", fn, seq,
                      d->rank, mpi_text(rc, err));
    return 0;
}

int facet_dist_allreduce(facet_dist *d, facet_tensor *t, int op)
{
    static const char *fn = "facet_dist_allreduce";
    int rc = allreduce_checks(d, fn, t, op);
    if (rc) return rc;
    unsigned long long seq = ++d->seq;
    mark("allreduce", seq);
    MPI_Request req;
    rc = allreduce_post(d, fn, t, op, seq, &req);
    if (rc) return rc;
    if (t->device == FACET_DEVICE_CUDA) return nccl_done(d, fn, "allreduce", 0);
    rc = wait_req(d, &req, fn, "allreduce", seq, now() + d->timeout);
    if (!rc && op == FACET_DIST_OP_AVG) scale(t, 1.0 / d->size);
    return rc;
}

int facet_dist_allreduce_start(facet_dist *d, facet_tensor *t, int op)
{
    static const char *fn = "facet_dist_allreduce_start";
    int rc = allreduce_checks(d, fn, t, op);
    if (rc) return rc;
    if (d->npending >= FACET_DIST_MAX_PENDING)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %d allreduces started already (FACET_DIST_MAX_PENDING): wait for them",
                          fn, d->npending);
    facet_tensor *h = NULL;
    rc = facet_tensor_share(&h, t);
    if (rc) return rc;
    struct pending *p = &d->pending[d->npending];
    p->seq = ++d->seq;
    mark("allreduce", p->seq);
    rc = allreduce_post(d, fn, h, op, p->seq, &p->req);
    if (rc) {
        facet_tensor_free(h);
        return rc;
    }
    p->t = h;
    p->op = op;
    p->cuda = t->device == FACET_DEVICE_CUDA;
    d->npending++;
    return 0;
}

int facet_dist_progress(facet_dist *d)
{
    static const char *fn = "facet_dist_progress";
    int rc = usable(d, fn);
    if (rc) return rc;
    char err[MPI_MAX_ERROR_STRING];
    for (int i = 0; i < d->npending; i++) {
        struct pending *p = &d->pending[i];
        if (p->cuda || p->req == MPI_REQUEST_NULL) continue;
        int flag = 0;
        int m = MPI_Test(&p->req, &flag, MPI_STATUS_IGNORE);   /* a completed request becomes MPI_REQUEST_NULL */
        if (m != MPI_SUCCESS)
            return breaks(d, FACET_STATUS_ERR_IO, "%s: allreduce (collective #%llu) failed on rank %d of %d: %s; a peer may "
                          "have exited", fn, p->seq, d->rank, d->size, mpi_text(m, err));
        if (!flag) break;      /* later ones rarely finish first: one test each call is enough */
    }
    return 0;
}

int facet_dist_wait_all(facet_dist *d)
{
    static const char *fn = "facet_dist_wait_all";
    int rc = usable(d, fn);
    if (rc) return rc;
    double deadline = now() + d->timeout;
    int cuda = 0;
    for (int i = 0; i < d->npending; i++) {
        struct pending *p = &d->pending[i];
        if (p->cuda) { cuda = 1; continue; }
        mark("allreduce", p->seq);
        rc = wait_req(d, &p->req, fn, "allreduce", p->seq, deadline);
        if (rc) return rc;      /* broken: the handles stay with the requests */
        if (p->op == FACET_DIST_OP_AVG) scale(p->t, 1.0 / d->size);
    }
    if (cuda) {
        rc = nccl_done(d, fn, "allreduce", 0);
        if (rc) return rc;
    }
    for (int i = 0; i < d->npending; i++) facet_tensor_free(d->pending[i].t);
    d->npending = 0;
    return 0;
}

/* x and out agree past dim 1, in dtype and device; out holds rows rows. */
static int check_rows_like(const char *fn, const facet_tensor *out, const facet_tensor *x, int64_t rows)
{
    if (out->dtype != x->dtype || out->device != x->device || out->ndim != x->ndim || out->sizes[0] != rows)
        goto bad;
    for (int k = 1; k < x->ndim; k++)
        if (out->sizes[k] != x->sizes[k]) goto bad;
    return 0;
bad:
    return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s must be %lld rows shaped and typed like the rows of x %s", fn,
                      facet_desc(out), (long long)rows, facet_desc(x));
}

int facet_dist_allgather(facet_dist *d, facet_tensor *out, const facet_tensor *x, const int64_t *rows, int nrows)
{
    static const char *fn = "facet_dist_allgather";
    int rc = usable(d, fn);
    if (!rc) rc = check_buffer(fn, "x", x);
    if (!rc) rc = check_buffer(fn, "out", out);
    if (rc) return rc;
    if (x->ndim < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: x %s needs a first dim to gather along", fn, facet_desc(x));
    int64_t row = 1;          /* elements per row */
    for (int k = 1; k < x->ndim; k++) row *= x->sizes[k];
    if (rows) {
        if (nrows != d->size)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %d row counts for %d ranks", fn, nrows, d->size);
        if (rows[d->rank] != x->sizes[0])
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: rows[%d] = %lld but x %s has %lld rows on this rank", fn, d->rank,
                              (long long)rows[d->rank], facet_desc(x), (long long)x->sizes[0]);
    }
    int64_t total = 0;
    int *counts = malloc(sizeof(int) * (size_t)d->size), *displs = malloc(sizeof(int) * (size_t)d->size);
    int64_t *ecounts = malloc(sizeof(int64_t) * (size_t)d->size);
    if (!counts || !displs || !ecounts) {
        free(counts); free(displs); free(ecounts);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    }
    for (int r = 0; r < d->size; r++) {
        int64_t nr = rows ? rows[r] : x->sizes[0];
        if (nr < 0 || nr > INT64_MAX / (row ? row : 1) || total + nr * row > INT_MAX) {
            rc = nr < 0 ? facet_fail(FACET_STATUS_ERR_ARG, "%s: rows[%d] = %lld is negative", fn, r, (long long)nr)
                        : facet_fail(FACET_STATUS_ERR_ARG, "%s: the gathered tensor exceeds MPI's int count (%d elements)", fn,
                                     INT_MAX);
            break;
        }
        counts[r] = (int)(nr * row);
        ecounts[r] = nr * row;
        displs[r] = (int)total;
        total += nr * row;
    }
    if (!rc) rc = check_rows_like(fn, out, x, row ? total / row : 0);
    if (rc) {
        free(counts); free(displs); free(ecounts);
        return rc;
    }
    unsigned long long seq = ++d->seq;
    mark("allgather", seq);
    if (x->device == FACET_DEVICE_CUDA) {
        rc = ensure_nccl(d, fn);
        if (!rc) {
            rc = facet_cuda_nccl_allgather(d->nccl, facet_ptr(out), facet_ptr(x), ecounts, x->dtype);
            rc = nccl_done(d, fn, "allgather", rc);
        }
    } else {
        MPI_Datatype ty = mpi_type(x->dtype);
        MPI_Request req;
        char err[MPI_MAX_ERROR_STRING];
        int m = MPI_Iallgatherv(facet_ptr(x), counts[d->rank], ty, facet_ptr(out), counts, displs, ty, d->comm, &req);
        if (m != MPI_SUCCESS) rc = breaks(d, FACET_STATUS_ERR_IO, "%s: rank %d: %s", fn, d->rank, mpi_text(m, err));
        else rc = wait_req(d, &req, fn, "allgather", seq, now() + d->timeout);
        if (rc) {
            /* MPI may still write counts/displs' targets; keep the arrays */
            free(ecounts);
            return rc;
        }
    }
    free(counts); free(displs); free(ecounts);
    return rc;
}

int facet_dist_reduce_scatter(facet_dist *d, facet_tensor *out, const facet_tensor *x, int op)
{
    static const char *fn = "facet_dist_reduce_scatter";
    int rc = usable(d, fn);
    if (!rc) rc = check_buffer(fn, "x", x);
    if (!rc) rc = check_buffer(fn, "out", out);
    if (!rc) rc = check_op(fn, op, x);
    if (!rc) rc = check_count(fn, x, facet_numel(x));
    if (rc) return rc;
    if (x->ndim < 1 || x->sizes[0] % d->size)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: x %s must have a first dim that is a multiple of the world size %d", fn,
                          facet_desc(x), d->size);
    rc = check_rows_like(fn, out, x, x->sizes[0] / d->size);
    if (rc) return rc;
    int64_t n = facet_numel(out);
    unsigned long long seq = ++d->seq;
    mark("reduce_scatter", seq);
    if (x->device == FACET_DEVICE_CUDA) {
        rc = ensure_nccl(d, fn);
        if (!rc) {
            rc = facet_cuda_nccl_reduce_scatter(d->nccl, facet_ptr(out), facet_ptr(x), n, x->dtype, op);
            rc = nccl_done(d, fn, "reduce_scatter", rc);
        }
        return rc;
    }
    MPI_Datatype ty = mpi_type(x->dtype);
    MPI_Request req;
    char err[MPI_MAX_ERROR_STRING];
    int m = MPI_Ireduce_scatter_block(facet_ptr(x), facet_ptr(out), (int)n, ty, mpi_op(op, x->dtype), d->comm, &req);
    if (m != MPI_SUCCESS) return breaks(d, FACET_STATUS_ERR_IO, "%s: rank %d: %s", fn, d->rank, mpi_text(m, err));
    rc = wait_req(d, &req, fn, "reduce_scatter", seq, now() + d->timeout);
    if (!rc && op == FACET_DIST_OP_AVG) scale(out, 1.0 / d->size);
    return rc;
}

int facet_dist_broadcast(facet_dist *d, facet_tensor *t, int root)
{
    static const char *fn = "facet_dist_broadcast";
    int rc = usable(d, fn);
    if (!rc) rc = check_buffer(fn, "t", t);
    if (!rc) rc = check_count(fn, t, facet_numel(t));
    if (rc) return rc;
    if (root < 0 || root >= d->size)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: root %d is not a rank (0..%d)", fn, root, d->size - 1);
    unsigned long long seq = ++d->seq;
    mark("broadcast", seq);
    if (t->device == FACET_DEVICE_CUDA) {
        rc = ensure_nccl(d, fn);
        if (!rc) {
            rc = facet_cuda_nccl_broadcast(d->nccl, facet_ptr(t), facet_numel(t), t->dtype, root);
            rc = nccl_done(d, fn, "broadcast", rc);
        }
        return rc;
    }
    MPI_Datatype ty = mpi_type(t->dtype);
    MPI_Request req;
    char err[MPI_MAX_ERROR_STRING];
    int m = MPI_Ibcast(facet_ptr(t), (int)facet_numel(t), ty, root, d->comm, &req);
    if (m != MPI_SUCCESS) return breaks(d, FACET_STATUS_ERR_IO, "%s: rank %d: %s", fn, d->rank, mpi_text(m, err));
    return wait_req(d, &req, fn, "broadcast", seq, now() + d->timeout);
}

int facet_dist_abort(facet_dist *d, int code)
{
    static const char *fn = "facet_dist_abort";
    if (!d) return facet_fail(FACET_STATUS_ERR_ARG, "%s: the communicator is NULL", fn);
    if (code < 1 || code > 255) return facet_fail(FACET_STATUS_ERR_ARG, "%s: code must be 1..255, got %d", fn, code);
    if (term_installed) {
        /* the launcher's SIGTERM to this rank is part of the abort, not news */
        sigaction(SIGTERM, &term_old, NULL);
        term_installed = 0;
    }
    MPI_Abort(MPI_COMM_WORLD, code);
    return facet_fail(FACET_STATUS_ERR_IO, "%s: MPI_Abort returned", fn);
}

#endif /* FACET_MPI */
