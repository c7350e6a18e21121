/*
 * copy.c - moving data: copy (any strides, dtypes and devices), fill,
 * arange, contiguous copies and permutes; the copy of a list of same-shaped
 * pairs in one call (facet_tensor_copy_list: on CUDA one launch per 48).
 */
#include "internal.h"
#include "guard.h"
#include "elementwise_math.h"
#include "nd.h"
#include <stdio.h>
#include <string.h>

struct copy_ctx { void *dst; const void *src; int ddt, sdt; };

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define FACET_HAVE_F16C_PATH 1
/* Contiguous float32 <-> float16 with F16C, 8 values at a time: the hardware
 * rounds as half_math.h does (to nearest even, subnormals, inf), but makes a
 * signalling NaN quiet where NumPy's rule keeps it, so a block holding a NaN
 * goes through half_math.h. spec/half_spec.lua checks the bits either way. */
__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(uint16_t *d, const float *s, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(s + i);
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
            for (int k = 0; k < 8; k++) d[i + k] = facet_float_to_half(s[i + k]);
            continue;
        }
        _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (; i < n; i++) d[i] = facet_float_to_half(s[i]);
}

__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(float *d, const uint16_t *s, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + i));
        /* NaN: |h| above the inf pattern (a signed compare is right, |h| < 0x8000) */
        __m128i mag = _mm_and_si128(h, _mm_set1_epi16(0x7fff));
        if (_mm_movemask_epi8(_mm_cmpgt_epi16(mag, _mm_set1_epi16(0x7c00)))) {
            for (int k = 0; k < 8; k++) d[i + k] = facet_half_to_float(s[i + k]);
            continue;
        }
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) d[i] = facet_half_to_float(s[i]);
}

/* CPUID and XGETBV rather than __builtin_cpu_supports("f16c"), which clang 14
 * (the fuzz and sanitizer builds) does not know */
static bool have_f16c(void)
{
    static int known = -1;     /* racing first calls all store the same answer */
    if (known < 0) {
        unsigned a, b, c, d;
        int ok = 0;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE) && (c & bit_AVX) && (c & bit_F16C)) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            ok = (lo & 6) == 6;    /* the OS saves the XMM and YMM registers */
        }
        known = ok;
    }
    return known;
}

/* Contiguous float32 -> bfloat16 with AVX-512 BF16 (vcvtneps2bf16), 16 values
 * at a time. The instruction rounds to nearest even as half_math.h does, but
 * reads subnormal inputs as zero and makes every NaN the same quiet NaN, so a
 * block of 16 that holds a NaN or a subnormal goes through half_math.h. */
#define FACET_HAVE_BF16_PATH 1
__attribute__((target("avx512f,avx512bf16"))) static void f32_to_bf16_avx512(uint16_t *d, const float *s, int64_t n)
{
    const __m512i exp_mask = _mm512_set1_epi32(0x7f800000), man_mask = _mm512_set1_epi32(0x007fffff);
    const __m512i zero = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i b = _mm512_loadu_si512((const void *)(s + i));
        __m512i e = _mm512_and_si512(b, exp_mask), m = _mm512_and_si512(b, man_mask);
        __mmask16 odd = (__mmask16)((_mm512_cmpeq_epi32_mask(e, exp_mask) | _mm512_cmpeq_epi32_mask(e, zero)) &
                                    _mm512_cmpneq_epi32_mask(m, zero));
        if (odd) {
            for (int k = 0; k < 16; k++) d[i + k] = facet_float_to_bf16(s[i + k]);
            continue;
        }
        __m256bh h = _mm512_cvtneps_pbh(_mm512_castsi512_ps(b));
        _mm256_storeu_si256((__m256i *)(void *)(d + i), (__m256i)h);
    }
    for (; i < n; i++) d[i] = facet_float_to_bf16(s[i]);
}

/* bfloat16 -> float32 is exact: the bits moved up by 16 (a loop the compiler
 * vectorises, where the generic path decides the dtype per element). */
static void bf16_to_f32(float *d, const uint16_t *s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)s[i] << 16;
        memcpy(d + i, &v, sizeof v);
    }
}

/* AVX-512F and AVX512_BF16 in the CPU, ZMM state saved by the OS. */
static bool have_avx512_bf16(void)
{
    static int known = -1;
    if (known < 0) {
        int ok = 0;
        unsigned a, b, c, d;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE)) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            unsigned b7 = 0, a71 = 0, x;
            if ((lo & 0xe6) == 0xe6 && __get_cpuid_count(7, 0, &x, &b7, &c, &d) && (b7 & (1u << 16)) &&
                __get_cpuid_count(7, 1, &a71, &x, &c, &d))
                ok = (a71 >> 5) & 1;
        }
        known = ok;
    }
    return known;
}

#endif

void facet_half_widen(float *d, const uint16_t *s, int64_t n, int dtype)
{
#ifdef FACET_HAVE_F16C_PATH
    if (dtype == FACET_DTYPE_FLOAT16 && have_f16c()) {
        f16_to_f32_f16c(d, s, n);
        return;
    }
#endif
#ifdef FACET_HAVE_BF16_PATH
    if (dtype == FACET_DTYPE_BFLOAT16) {
        bf16_to_f32(d, s, n);
        return;
    }
#endif
    if (dtype == FACET_DTYPE_FLOAT16) for (int64_t i = 0; i < n; i++) d[i] = facet_half_to_float(s[i]);
    else for (int64_t i = 0; i < n; i++) d[i] = facet_bf16_to_float(s[i]);
}

void facet_half_narrow(uint16_t *d, const float *s, int64_t n, int dtype)
{
#ifdef FACET_HAVE_F16C_PATH
    if (dtype == FACET_DTYPE_FLOAT16 && have_f16c()) {
        f32_to_f16_f16c(d, s, n);
        return;
    }
#endif
#ifdef FACET_HAVE_BF16_PATH
    if (dtype == FACET_DTYPE_BFLOAT16 && have_avx512_bf16()) {
        f32_to_bf16_avx512(d, s, n);
        return;
    }
#endif
    if (dtype == FACET_DTYPE_FLOAT16) for (int64_t i = 0; i < n; i++) d[i] = facet_float_to_half(s[i]);
    else for (int64_t i = 0; i < n; i++) d[i] = facet_float_to_bf16(s[i]);
}

static void copy_row(void *p, int64_t n, const int64_t off[3], const int64_t st[3])
{
    struct copy_ctx *c = p;
    if (c->ddt == FACET_DTYPE_FLOAT32 && c->sdt == FACET_DTYPE_FLOAT32) {
        float *d = (float *)c->dst + off[0];
        const float *s = (const float *)c->src + off[1];
        if (st[0] == 1 && st[1] == 1) memcpy(d, s, (size_t)n * sizeof(float));
        else for (int64_t i = 0; i < n; i++) d[i * st[0]] = s[i * st[1]];
        return;
    }
    if (st[0] == 1 && st[1] == 1) {
        if (c->sdt == FACET_DTYPE_FLOAT32 && facet_dtype_is_half(c->ddt)) {
            facet_half_narrow((uint16_t *)c->dst + off[0], (const float *)c->src + off[1], n, c->ddt);
            return;
        }
        if (c->ddt == FACET_DTYPE_FLOAT32 && facet_dtype_is_half(c->sdt)) {
            facet_half_widen((float *)c->dst + off[0], (const uint16_t *)c->src + off[1], n, c->sdt);
            return;
        }
    }
    if (c->sdt == FACET_DTYPE_FLOAT32 && facet_dtype_is_half(c->ddt)) {
        const float *s = (const float *)c->src + off[1];
        for (int64_t i = 0; i < n; i++) facet_store_half(c->dst, c->ddt, off[0] + i * st[0], s[i * st[1]]);
        return;
    }
    if (c->ddt == FACET_DTYPE_FLOAT32 && facet_dtype_is_half(c->sdt)) {
        float *d = (float *)c->dst + off[0];
        for (int64_t i = 0; i < n; i++) d[i * st[0]] = facet_load_half(c->src, c->sdt, off[1] + i * st[1]);
        return;
    }
    if (c->ddt == c->sdt) {
        /* raw element moves: going through double would round int64 > 2^53 */
        size_t es = facet_elsize(c->ddt);
        char *d = (char *)c->dst + off[0] * es;
        const char *s = (const char *)c->src + off[1] * es;
        if (st[0] == 1 && st[1] == 1) memcpy(d, s, (size_t)n * es);
        else for (int64_t i = 0; i < n; i++) memcpy(d + i * st[0] * es, s + i * st[1] * es, es);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        facet_store(c->dst, c->ddt, off[0] + i * st[0], facet_load(c->src, c->sdt, off[1] + i * st[1]));
}

/* same device: walk dst's shape (or both as flat when only numel matches) */
static int copy_same_device(facet_tensor *dst, const facet_tensor *src)
{
    struct facet_nd nd;
    if (facet_same_shape(dst, src)) {
        facet_nd_init(&nd, 2, dst);
        facet_nd_set(&nd, 0, dst);
        facet_nd_set(&nd, 1, src);
    } else {
        nd.ndim = 1;
        nd.nops = 2;
        nd.sizes[0] = facet_numel(dst);
        nd.strides[0][0] = nd.strides[1][0] = 1;
    }
    facet_nd_collapse(&nd);
    if (dst->device == FACET_DEVICE_CUDA)
        return facet_cuda_copy_nd(facet_ptr(dst), dst->dtype, facet_ptr(src), src->dtype, &nd);
    struct copy_ctx c = { facet_ptr(dst), facet_ptr(src), dst->dtype, src->dtype };
    facet_nd_run(&nd, copy_row, &c);
    return 0;
}

/* host <-> device bytes. From page-locked memory to the device the copy is
 * only queued (the host goes on at once) and an event recorded after it on the
 * source's storage marks when the source may change again: the loader waits
 * for it before its workers refill that slot (facet_storage_wait_copies). */
static int copy_across(void *dst, const facet_tensor *src, size_t nbytes, int kind)
{
    if (kind != FACET_COPY_H2D || !src->storage->pinned) return facet_cuda_memcpy(dst, facet_ptr(src), nbytes, kind);
    int rc = facet_cuda_memcpy_async_h2d(dst, facet_ptr(src), nbytes);
    if (!rc && (rc = facet_cuda_event_record(&src->storage->copy_event)) != 0)
        facet_cuda_sync();                     /* no event: make sure the copy is done */
    return rc;
}

int facet_storage_wait_copies(struct facet_storage *s)
{
    return s->copy_event ? facet_cuda_event_wait(s->copy_event) : 0;
}

int facet_tensor_copy(facet_tensor *dst, const facet_tensor *src)
{
    static const char *fn = "facet_tensor_copy";
    int rc = facet_check_tensor(fn, "dst", dst);
    if (!rc) rc = facet_check_tensor(fn, "src", src);
    if (rc) return rc;
    if (facet_numel(dst) != facet_numel(src))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: sizes differ: dst %s, src %s", fn, facet_desc(dst), facet_desc(src));
    if (!facet_same_shape(dst, src) && !(facet_contiguous(dst) && facet_contiguous(src)))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: shapes differ (dst %s, src %s) and one is not contiguous", fn,
                          facet_desc(dst), facet_desc(src));
    if (facet_numel(dst) == 0) return 0;
    rc = facet_check_convert(fn, dst, src);
    if (rc) return rc;
    if (dst->device == src->device) {
        /* src overlapping dst (other than as the very same view) is read
         * through a temporary copy, as PyTorch's copy_ does */
        if (facet_same_view(dst, src)) return 0;
        facet_tensor *tmp = NULL;
        const facet_tensor *from = src;
        rc = facet_unalias(fn, dst, src, false, &tmp, &from);
        if (!rc) rc = copy_same_device(dst, from);
        facet_tensor_free(tmp);
        return rc;
    }

    /* across devices: bring a contiguous copy in src's dtype over, then
     * convert/scatter on the destination device */
    if (dst->dtype == src->dtype && facet_contiguous(dst) && facet_contiguous(src))
        return copy_across(facet_ptr(dst), src, (size_t)facet_numel(src) * facet_elsize(src->dtype),
                           dst->device == FACET_DEVICE_CUDA ? FACET_COPY_H2D : FACET_COPY_D2H);
    facet_tensor *packed = NULL, *moved = NULL;
    rc = facet_contiguous_copy(&packed, src);
    if (!rc) rc = facet_tensor_init(&moved, src->dtype, dst->device, src->ndim, src->sizes);
    if (!rc) rc = copy_across(facet_ptr(moved), packed, (size_t)facet_numel(src) * facet_elsize(src->dtype),
                              dst->device == FACET_DEVICE_CUDA ? FACET_COPY_H2D : FACET_COPY_D2H);
    if (!rc) rc = copy_same_device(dst, moved);
    facet_tensor_free(packed);
    facet_tensor_free(moved);
    return rc;
}

/* pairs handed to the CUDA backend per call (arrays on the stack): a
 * multiple of tensor_list.cuh's 48 tensors a launch, so no launch runs short */
enum { LIST_BATCH = 240 };

/* pair k of a list copy: same shape and dtype, contiguous, on dev, overlapping
 * no dst before it and no src */
static int check_copy_pair(const char *fn, facet_tensor *const *dst, facet_tensor *const *src, int n, int k, int dev)
{
    int rc = facet_check_tensor(fn, "dst", dst[k]);
    if (!rc) rc = facet_check_tensor(fn, "src", src[k]);
    if (rc) return rc;
    if (dst[k]->dtype != src[k]->dtype || !facet_same_shape(dst[k], src[k]) || !facet_contiguous(dst[k]) ||
        !facet_contiguous(src[k]))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: dst %s and src %s must be contiguous with one shape and dtype", fn,
                          facet_desc(dst[k]), facet_desc(src[k]));
    if (dst[k]->device != dev || src[k]->device != dev)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: dst %s and src %s must be on the device of dst[0] %s", fn,
                          facet_desc(dst[k]), facet_desc(src[k]), facet_desc(dst[0]));
    for (int j = 0; j < n; j++) {
        if (facet_overlap(dst[k], src[j]) || (j < k && facet_overlap(dst[k], dst[j])))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: dst %s overlaps %s[%d] %s", fn, facet_desc(dst[k]),
                              facet_overlap(dst[k], src[j]) ? "src" : "dst", j,
                              facet_desc(facet_overlap(dst[k], src[j]) ? src[j] : dst[j]));
    }
    return 0;
}

int facet_tensor_copy_list(facet_tensor *const *dst, facet_tensor *const *src, int n)
{
    static const char *fn = "facet_tensor_copy_list";
    if (n < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: n is %d, want >= 0", fn, n);
    if (n > 0 && (!dst || !src)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: dst and src must not be NULL", fn);
    int rc = n > 0 ? facet_check_tensor(fn, "dst[0]", dst[0]) : 0;
    if (rc) return rc;
    /* everything checked before anything is written */
    for (int k = 0; k < n; k++) {
        rc = check_copy_pair(fn, dst, src, n, k, dst[0]->device);
        if (rc) {
            char why[1024];
            snprintf(why, sizeof why, "%s", facet_last_error());   /* facet_fail rewrites that buffer */
            return facet_fail(rc, "%s (pair %d)", why, k);
        }
    }
    if (n > 0 && dst[0]->device == FACET_DEVICE_CUDA) {
        void *d[LIST_BATCH];
        const void *s[LIST_BATCH];
        int64_t nbytes[LIST_BATCH];
        for (int k0 = 0; k0 < n && !rc; k0 += LIST_BATCH) {
            int m = n - k0 < LIST_BATCH ? n - k0 : LIST_BATCH;
            for (int j = 0; j < m; j++) {
                d[j] = facet_ptr(dst[k0 + j]);
                s[j] = facet_ptr(src[k0 + j]);
                nbytes[j] = facet_numel(src[k0 + j]) * (int64_t)facet_elsize(src[k0 + j]->dtype);
            }
            rc = facet_cuda_copy_list(d, s, nbytes, m);
        }
        return rc;
    }
    for (int k = 0; k < n; k++) {
        size_t nbytes = (size_t)facet_numel(src[k]) * facet_elsize(src[k]->dtype);
        if (nbytes) memcpy(facet_ptr(dst[k]), facet_ptr(src[k]), nbytes);
    }
    return 0;
}

int facet_contiguous_copy(facet_tensor **out, const facet_tensor *t)
{
    if (facet_contiguous(t)) return facet_tensor_share(out, t);
    int rc = facet_tensor_init(out, t->dtype, t->device, t->ndim, t->sizes);
    if (rc) return rc;
    rc = copy_same_device(*out, t);
    if (rc) {
        facet_tensor_free(*out);
        *out = NULL;
    }
    return rc;
}

struct fill_ctx { void *dst; int dt; double v; };

static void fill_row(void *p, int64_t n, const int64_t off[3], const int64_t st[3])
{
    struct fill_ctx *c = p;
    if (c->dt == FACET_DTYPE_FLOAT32) {
        float *d = (float *)c->dst + off[0], v = (float)c->v;
        for (int64_t i = 0; i < n; i++) d[i * st[0]] = v;
        return;
    }
    for (int64_t i = 0; i < n; i++) facet_store(c->dst, c->dt, off[0] + i * st[0], c->v);
}

int facet_tensor_fill(facet_tensor *t, double value)
{
    int rc = facet_check_tensor("facet_tensor_fill", "t", t);
    if (!rc) rc = facet_check_value("facet_tensor_fill", "value", value, t->dtype);
    if (rc) return rc;
    struct facet_nd nd;
    facet_nd_init(&nd, 1, t);
    facet_nd_set(&nd, 0, t);
    facet_nd_collapse(&nd);
    if (t->device == FACET_DEVICE_CUDA) return facet_cuda_fill_nd(facet_ptr(t), t->dtype, value, &nd);
    struct fill_ctx c = { facet_ptr(t), t->dtype, value };
    facet_nd_run(&nd, fill_row, &c);
    return 0;
}

int facet_tensor_arange(facet_tensor *t, double start, double step)
{
    static const char *fn = "facet_tensor_arange";
    int rc = facet_check_tensor(fn, "t", t);
    if (rc) return rc;
    if (!facet_contiguous(t)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s is not contiguous", fn, facet_desc(t));
    int64_t n = facet_numel(t);
    /* start + i*step is monotonic in i: the two ends bound every value */
    if (n > 0) rc = facet_check_value(fn, "start", start, t->dtype);
    if (!rc && n > 1) {
        double last = start + (double)(n - 1) * step;
        if (!facet_value_fits(last, t->dtype)) {
            char what[96];
            snprintf(what, sizeof what, "the last value (start %.15g + %lld * step %.15g)", start, (long long)(n - 1),
                     step);
            rc = facet_check_value(fn, what, last, t->dtype);
        }
    }
    if (rc) return rc;
    if (t->device == FACET_DEVICE_CUDA) return facet_cuda_arange(facet_ptr(t), t->dtype, n, start, step);
    void *d = facet_ptr(t);
    for (int64_t i = 0; i < n; i++) facet_store(d, t->dtype, i, start + (double)i * step);
    return 0;
}

int facet_tensor_permute(facet_tensor *out, const facet_tensor *x, const int *perm)
{
    static const char *fn = "facet_tensor_permute";
    int rc = facet_check_tensor(fn, "out", out);
    if (!rc) rc = facet_check_tensor(fn, "x", x);
    if (!rc) rc = facet_check_same_device(fn, out, x);
    if (rc) return rc;
    facet_tensor *view = NULL;
    rc = facet_tensor_permute_view(&view, x, perm);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", facet_last_error());
        return facet_fail(rc, "facet_tensor_permute (via %s)", why);
    }
    if (!facet_same_shape(out, view) || out->dtype != x->dtype)
        rc = facet_fail(FACET_STATUS_ERR_ARG, "%s: out is %s, the permuted input is %s", fn, facet_desc(out),
                        facet_desc(view));
    else {
        facet_tensor *tmp = NULL;
        const facet_tensor *from = view;
        rc = facet_unalias(fn, out, view, false, &tmp, &from);
        if (!rc) rc = copy_same_device(out, from);
        facet_tensor_free(tmp);
    }
    facet_tensor_free(view);
    return rc;
}
