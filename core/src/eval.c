/*
 * eval.c - identification and verification at benchmark scale: a gallery's
 * top-k by blocked GEMM in one pass, pair scores from index lists, an exact
 * ROC that keeps every genuine score and a running top-k of impostors, and
 * the k-fold accuracy of the LFW-style protocols. Nothing here holds a matrix
 * of all scores: GEMMs fill one block buffer, scanned before the next.
 */
#include "internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- argument checks ---------------------------------------------------------------- */

/* a contiguous 2-D float32 CPU matrix */
static int check_embeddings(const char *fn, const char *name, const facet_tensor *t)
{
    int rc = facet_check_dtype(fn, name, t, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    if (t->device != FACET_DEVICE_CPU || t->ndim != 2 || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be a contiguous 2-D float32 CPU matrix, got %s", fn, name,
                          facet_desc(t));
    return 0;
}

/* a contiguous CPU vector of n elements of dtype */
static int check_vector(const char *fn, const char *name, const facet_tensor *t, int dtype, int64_t n)
{
    int rc = facet_check_dtype(fn, name, t, dtype);
    if (rc) return rc;
    if (t->device != FACET_DEVICE_CPU || !facet_contiguous(t) || facet_numel(t) != n || t->ndim > 2)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be a contiguous CPU %s vector of %lld elements, got %s", fn,
                          name, facet_dtype_name(dtype), (long long)n, facet_desc(t));
    return 0;
}

/* every element of a rows x cols matrix finite */
static int check_finite(const char *fn, const char *name, const float *p, int64_t rows, int64_t cols)
{
    int64_t bad = -1;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN) reduction(max : bad)
    for (int64_t r = 0; r < rows; r++) {
        const float *x = p + r * cols;
        float acc = 0.0f;
        for (int64_t c = 0; c < cols; c++) acc += x[c] * 0.0f;   /* 0 unless x[c] is NaN or infinite */
        if (!(acc == 0.0f) && bad < r) bad = r;
    }
    if (bad >= 0)
        return facet_fail(FACET_STATUS_ERR_NUMERIC, "%s: %s row %lld holds a NaN or infinite value", fn, name,
                          (long long)bad);
    return 0;
}

static float *alloc_floats(const char *fn, int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) facet_fail(FACET_STATUS_ERR_MEMORY, "%s: cannot allocate %lld bytes", fn, (long long)(n * 4));
    return p;
}

/* ---- sorting and selection --------------------------------------------------------------- */

/* An order-preserving map of floats to unsigned integers (-0 sorts before +0). */
static inline uint32_t float_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Ascending LSD radix sort, four passes of 8 bits; tmp holds n floats. */
static void sort_floats(float *a, float *tmp, int64_t n)
{
    float *src = a, *dst = tmp;
    for (int shift = 0; shift < 32; shift += 8) {
        int64_t count[257] = { 0 };
        for (int64_t i = 0; i < n; i++) count[((float_key(src[i]) >> shift) & 0xff) + 1]++;
        for (int b = 0; b < 256; b++) count[b + 1] += count[b];
        for (int64_t i = 0; i < n; i++) dst[count[(float_key(src[i]) >> shift) & 0xff]++] = src[i];
        float *t = src;
        src = dst;
        dst = t;
    }
    /* four passes: the result is back in a */
}

static inline void swapf(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

/* Reorders a[0..n) so that a[0..k) holds the k largest values (1 <= k <= n),
 * a[k-1] the k-th largest: quickselect with a three-way partition. */
static void select_top(float *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1, t = k - 1;
    while (hi > lo) {
        float x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi];
        float p = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t lt = lo, i = lo, gt = hi;
        while (i <= gt) {
            if (a[i] > p) swapf(&a[lt++], &a[i++]);
            else if (a[i] < p) swapf(&a[i], &a[gt--]);
            else i++;
        }
        if (t < lt) hi = lt - 1;
        else if (t > gt) lo = gt + 1;
        else break;
    }
}

/* The first i in [0, n) where pred(a, i, t) fails, pred holding on a prefix:
 * the binary search of every count below. */
static int64_t first_false(const void *a, int64_t n, double t, int (*pred)(const void *, int64_t, double))
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (pred(a, mid, t)) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static int float_le(const void *a, int64_t i, double t) { return ((const float *)a)[i] <= t; }
static int double_lt(const void *a, int64_t i, double t) { return ((const double *)a)[i] < t; }
static int double_le(const void *a, int64_t i, double t) { return ((const double *)a)[i] <= t; }

/* Values of ascending a[0..n) strictly above v. */
static int64_t count_above(const float *a, int64_t n, float v) { return n - first_false(a, n, v, float_le); }

/* ---- identification: the top k of a gallery in one pass ------------------------------------ */

/* One probe's heap of its k best (score, row), the root the worst: lowest
 * score, and among equal scores the latest row. */
static inline int heap_worse(float sa, int64_t ja, float sb, int64_t jb)
{
    return sa < sb || (sa == sb && ja > jb);
}

static void heap_sift_down(float *s, int64_t *j, int64_t n, int64_t i)
{
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && heap_worse(s[l], j[l], s[w], j[w])) w = l;
        if (r < n && heap_worse(s[r], j[r], s[w], j[w])) w = r;
        if (w == i) return;
        swapf(&s[i], &s[w]);
        int64_t t = j[i];
        j[i] = j[w];
        j[w] = t;
        i = w;
    }
}

static void heap_push(float *s, int64_t *j, int64_t n, float v, int64_t row)
{
    int64_t i = n;
    s[i] = v;
    j[i] = row;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!heap_worse(s[i], j[i], s[p], j[p])) break;
        swapf(&s[i], &s[p]);
        int64_t t = j[i];
        j[i] = j[p];
        j[p] = t;
        i = p;
    }
}

int facet_eval_topk(facet_tensor *top, facet_tensor *top_index, facet_tensor *genuine, const facet_tensor *probe,
                    const facet_tensor *gallery, const facet_tensor *probe_labels, const facet_tensor *gallery_labels,
                    int64_t block)
{
    static const char *fn = "facet_eval_topk";
    int rc = check_embeddings(fn, "probe", probe);
    if (!rc) rc = check_embeddings(fn, "gallery", gallery);
    if (rc) return rc;
    int64_t P = probe->sizes[0], d = probe->sizes[1], G = gallery->sizes[0];
    if (gallery->sizes[1] != d)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: probe %s and gallery %s must have one embedding size", fn,
                          facet_desc(probe), facet_desc(gallery));
    rc = facet_check_dtype(fn, "top", top, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    if (top->ndim != 2 || top->sizes[0] != P || !facet_contiguous(top) || top->device != FACET_DEVICE_CPU || top->sizes[1] < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: top must be a contiguous %lld x k CPU float32 matrix (k >= 1), got %s",
                          fn, (long long)P, facet_desc(top));
    int64_t k = top->sizes[1];
    if (top_index) {
        rc = facet_check_dtype(fn, "top_index", top_index, FACET_DTYPE_INT64);
        if (rc) return rc;
        if (!facet_same_shape(top, top_index) || !facet_contiguous(top_index) || top_index->device != FACET_DEVICE_CPU)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: top_index %s must be a contiguous CPU int64 matrix of top's shape %s",
                              fn, facet_desc(top_index), facet_desc(top));
    }
    if ((probe_labels == NULL) != (gallery_labels == NULL))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: give both probe_labels and gallery_labels, or neither", fn);
    if (probe_labels) {
        rc = check_vector(fn, "probe_labels", probe_labels, FACET_DTYPE_INT64, P);
        if (!rc) rc = check_vector(fn, "gallery_labels", gallery_labels, FACET_DTYPE_INT64, G);
        if (rc) return rc;
    }
    if (genuine) {
        if (!probe_labels) return facet_fail(FACET_STATUS_ERR_ARG, "%s: genuine scores need the labels", fn);
        rc = check_vector(fn, "genuine", genuine, FACET_DTYPE_FLOAT32, P);
        if (rc) return rc;
    }
    if (block < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: block must be >= 1, got %lld", fn, (long long)block);
    if (block > G) block = G > 0 ? G : 1;
    if (P > 0 && block > INT64_MAX / 4 / P)
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: a %lld x %lld block does not fit in memory", fn, (long long)P,
                          (long long)block);
    const float *pp = facet_ptr(probe), *gp = facet_ptr(gallery);
    rc = check_finite(fn, "probe", pp, P, d);
    if (!rc) rc = check_finite(fn, "gallery", gp, G, d);
    if (rc) return rc;
    float *buf = alloc_floats(fn, P * block);
    int64_t *idx = malloc((size_t)(P * k > 0 ? P * k : 1) * sizeof(int64_t));
    int64_t *fill = calloc((size_t)(P > 0 ? P : 1), sizeof(int64_t));
    if (!buf || !idx || !fill) {
        free(buf);
        free(idx);
        free(fill);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: cannot allocate the %lld x %lld block", fn, (long long)P,
                          (long long)block);
    }
    float *hs = facet_ptr(top), *gen = genuine ? facet_ptr(genuine) : NULL;
    const int64_t *pl = probe_labels ? facet_ptr(probe_labels) : NULL;
    const int64_t *gl = gallery_labels ? facet_ptr(gallery_labels) : NULL;
    if (gen) for (int64_t i = 0; i < P; i++) gen[i] = -INFINITY;
    for (int64_t g0 = 0; g0 < G && !rc; g0 += block) {
        int64_t b = G - g0 < block ? G - g0 : block;
        if (P == 0) break;
        if (d == 0) memset(buf, 0, (size_t)(P * b) * sizeof(float));
        else rc = facet_blas_sgemm(0, 1, P, b, d, 1.0f, pp, d, gp + g0 * d, d, 0.0f, buf, b);
        if (rc) break;
        #pragma omp parallel for schedule(dynamic, 8) num_threads(facet_threads())
        for (int64_t i = 0; i < P; i++) {
            const float *row = buf + i * b;
            float *s = hs + i * k;
            int64_t *j = idx + i * k, n = fill[i];
            float worst = n == k ? s[0] : -INFINITY;
            int64_t li = pl ? pl[i] : 0;
            float best_gen = gen ? gen[i] : -INFINITY;
            for (int64_t c = 0; c < b; c++) {
                float v = row[c];
                if (gl && li != -1 && gl[g0 + c] == li) {
                    if (v > best_gen) best_gen = v;
                    continue;
                }
                if (n < k) {
                    heap_push(s, j, n++, v, g0 + c);
                    if (n == k) worst = s[0];
                } else if (v > worst) {        /* a later row of equal score is worse */
                    s[0] = v;
                    j[0] = g0 + c;
                    heap_sift_down(s, j, k, 0);
                    worst = s[0];
                }
            }
            fill[i] = n;
            if (gen) gen[i] = best_gen;
        }
    }
    if (!rc) {
        int64_t *ti = top_index ? facet_ptr(top_index) : NULL;
        #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (P * k >= FACET_PARALLEL_GRAIN)
        for (int64_t i = 0; i < P; i++) {
            float *s = hs + i * k;
            int64_t *j = idx + i * k, n = fill[i];
            /* pop the worst to the back: best first, equal scores in row order */
            for (int64_t m = n - 1; m > 0; m--) {
                swapf(&s[0], &s[m]);
                int64_t t = j[0];
                j[0] = j[m];
                j[m] = t;
                heap_sift_down(s, j, m, 0);
            }
            for (int64_t m = n; m < k; m++) {
                s[m] = -INFINITY;
                j[m] = -1;
            }
            if (ti) memcpy(ti + i * k, j, (size_t)k * sizeof(int64_t));
        }
    }
    free(buf);
    free(idx);
    free(fill);
    return rc;
}

/* ---- pair scores from index lists -------------------------------------------------------- */

/* index p of an int32/int64 index vector, minus base; -1 when out of [0, n) */
static inline int64_t index_at(const facet_tensor *ix, int64_t p, int base, int64_t n)
{
    int64_t v = ix->dtype == FACET_DTYPE_INT32 ? ((const int32_t *)facet_ptr(ix))[p] : ((const int64_t *)facet_ptr(ix))[p];
    v -= base;
    return v >= 0 && v < n ? v : -1;
}

static int check_index(const char *fn, const char *name, const facet_tensor *ix, int64_t P, int base, int64_t n)
{
    int rc = facet_check_tensor(fn, name, ix);
    if (rc) return rc;
    if ((ix->dtype != FACET_DTYPE_INT32 && ix->dtype != FACET_DTYPE_INT64) || ix->device != FACET_DEVICE_CPU ||
        !facet_contiguous(ix) || facet_numel(ix) != P || ix->ndim > 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be a contiguous CPU int32 or int64 vector of %lld indices, got %s",
                          fn, name, (long long)P, facet_desc(ix));
    for (int64_t p = 0; p < P; p++) {
        if (index_at(ix, p, base, n) < 0) {
            int64_t v = ix->dtype == FACET_DTYPE_INT32 ? ((const int32_t *)facet_ptr(ix))[p]
                                                        : ((const int64_t *)facet_ptr(ix))[p];
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s[%lld] = %lld is outside [%d, %lld]", fn, name,
                              (long long)(p + base), (long long)v, base, (long long)(n - 1 + base));
        }
    }
    return 0;
}

int facet_eval_pair_scores(facet_tensor *out, const facet_tensor *a, const facet_tensor *b, const facet_tensor *ia,
                           const facet_tensor *ib, int index_base)
{
    static const char *fn = "facet_eval_pair_scores";
    int rc = check_embeddings(fn, "a", a);
    if (!rc) rc = check_embeddings(fn, "b", b);
    if (!rc) rc = facet_check_dtype(fn, "out", out, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    int64_t P = facet_numel(out), d = a->sizes[1];
    if (out->device != FACET_DEVICE_CPU || !facet_contiguous(out) || out->ndim > 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out must be a contiguous CPU float32 vector, got %s", fn, facet_desc(out));
    if (b->sizes[1] != d)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: a %s and b %s must have one embedding size", fn, facet_desc(a),
                          facet_desc(b));
    if (index_base != 0 && index_base != 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: index_base must be 0 or 1, got %d", fn, index_base);
    if (ia) rc = check_index(fn, "ia", ia, P, index_base, a->sizes[0]);
    else if (a->sizes[0] != P)
        rc = facet_fail(FACET_STATUS_ERR_ARG, "%s: without ia, a %s must have one row per pair (%lld)", fn, facet_desc(a),
                        (long long)P);
    if (rc) return rc;
    if (ib) rc = check_index(fn, "ib", ib, P, index_base, b->sizes[0]);
    else if (b->sizes[0] != P)
        rc = facet_fail(FACET_STATUS_ERR_ARG, "%s: without ib, b %s must have one row per pair (%lld)", fn, facet_desc(b),
                        (long long)P);
    if (rc) return rc;
    const float *ap = facet_ptr(a), *bp = facet_ptr(b);
    float *op = facet_ptr(out);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (P * d >= FACET_PARALLEL_GRAIN)
    for (int64_t p = 0; p < P; p++) {
        const float *x = ap + (ia ? index_at(ia, p, index_base, a->sizes[0]) : p) * d;
        const float *y = bp + (ib ? index_at(ib, p, index_base, b->sizes[0]) : p) * d;
        double acc = 0.0;
        for (int64_t c = 0; c < d; c++) acc += (double)(x[c] * y[c]);
        op[p] = (float)acc;
    }
    return 0;
}

/* ---- the ROC: every genuine score, a running top-k of impostors ------------------------------ */

struct facet_eval_roc {
    int64_t n_gen, n_imp, keep;
    double max_far;
    float *gen;               /* n_gen, filled to gen_n; ascending once sorted */
    int64_t gen_n;
    float *imp;               /* cap; the keep best of imp_seen once sorted (descending) */
    int64_t imp_n, cap, imp_seen;
    float floor_;             /* after a compaction: the keep-th best so far; lower scores are dropped */
    int has_floor, sorted;
};

int facet_eval_roc_init(facet_eval_roc **out, int64_t n_genuine, int64_t n_impostor, double max_far)
{
    static const char *fn = "facet_eval_roc_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (n_genuine < 0 || n_impostor < 0 || n_genuine > ((int64_t)1 << 40))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: counts must be >= 0 (genuine at most 2^40), got %lld genuine, %lld impostor",
                          fn, (long long)n_genuine, (long long)n_impostor);
    if (!(max_far > 0.0 && max_far <= 1.0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: max_far must be in (0, 1], got %g", fn, max_far);
    double kd = floor(max_far * (double)n_impostor) + 1.0;
    int64_t keep = kd >= (double)n_impostor ? n_impostor : (int64_t)kd;
    int64_t cap = keep == n_impostor ? keep : (2 * keep < n_impostor ? 2 * keep : n_impostor);
    if (cap > ((int64_t)1 << 40))
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: keeping %lld impostor scores does not fit in memory (lower max_far)",
                          fn, (long long)keep);
    facet_eval_roc *r = calloc(1, sizeof *r);
    if (!r) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    r->gen = alloc_floats(fn, n_genuine);
    r->imp = r->gen ? alloc_floats(fn, cap) : NULL;
    if (!r->gen || !r->imp) {
        free(r->gen);
        free(r);
        return FACET_STATUS_ERR_MEMORY;
    }
    r->n_gen = n_genuine;
    r->n_imp = n_impostor;
    r->keep = keep;
    r->cap = cap;
    r->max_far = max_far;
    *out = r;
    return 0;
}

int facet_eval_roc_free(facet_eval_roc *r)
{
    if (!r) return 0;
    free(r->gen);
    free(r->imp);
    free(r);
    return 0;
}

static void roc_compact(facet_eval_roc *r)
{
    select_top(r->imp, r->imp_n, r->keep);
    r->imp_n = r->keep;
    float m = r->imp[0];
    for (int64_t i = 1; i < r->keep; i++) if (r->imp[i] < m) m = r->imp[i];
    r->floor_ = m;
    r->has_floor = 1;
}

static inline void roc_push_impostor(facet_eval_roc *r, float v)
{
    r->imp_seen++;
    if (r->has_floor && !(v > r->floor_)) return;
    if (r->imp_n == r->cap) {
        roc_compact(r);
        if (!(v > r->floor_)) return;
    }
    r->imp[r->imp_n++] = v;
}

static int roc_check_open(const char *fn, const facet_eval_roc *r, int64_t gen, int64_t imp)
{
    if (!r) return facet_fail(FACET_STATUS_ERR_ARG, "%s: roc is NULL", fn);
    if (r->gen_n + gen > r->n_gen || r->imp_seen + imp > r->n_imp)
        return facet_fail(FACET_STATUS_ERR_ARG,
                          "%s: %lld genuine and %lld impostor scores more would pass the %lld and %lld announced "
                          "(%lld and %lld added so far)", fn, (long long)gen, (long long)imp, (long long)r->n_gen,
                          (long long)r->n_imp, (long long)r->gen_n, (long long)r->imp_seen);
    return 0;
}

int facet_eval_roc_add(facet_eval_roc *r, const facet_tensor *scores, const facet_tensor *same)
{
    static const char *fn = "facet_eval_roc_add";
    if (!r) return facet_fail(FACET_STATUS_ERR_ARG, "%s: roc is NULL", fn);
    int rc = facet_check_tensor(fn, "scores", scores);
    if (rc) return rc;
    int64_t n = facet_numel(scores);
    rc = check_vector(fn, "scores", scores, FACET_DTYPE_FLOAT32, n);
    if (!rc) rc = check_vector(fn, "same", same, FACET_DTYPE_UINT8, n);
    if (rc) return rc;
    const float *s = facet_ptr(scores);
    const uint8_t *m = facet_ptr(same);
    int64_t gen = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(s[i]))
            return facet_fail(FACET_STATUS_ERR_NUMERIC, "%s: scores[%lld] is %g (NaN or infinite)", fn, (long long)i,
                              (double)s[i]);
        gen += m[i] != 0;
    }
    rc = roc_check_open(fn, r, gen, n - gen);
    if (rc) return rc;
    for (int64_t i = 0; i < n; i++) {
        if (m[i]) r->gen[r->gen_n++] = s[i];
        else roc_push_impostor(r, s[i]);
    }
    r->sorted = 0;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* sorted copy of n labels (NULL on allocation failure) */
static int64_t *sorted_labels(const int64_t *l, int64_t n)
{
    int64_t *c = malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (!c) return NULL;
    memcpy(c, l, (size_t)n * sizeof(int64_t));
    qsort(c, (size_t)n, sizeof(int64_t), cmp_i64);
    return c;
}

int facet_eval_roc_add_all(facet_eval_roc *r, const facet_tensor *a, const facet_tensor *la, const facet_tensor *b,
                           const facet_tensor *lb, int64_t block)
{
    static const char *fn = "facet_eval_roc_add_all";
    if (!r) return facet_fail(FACET_STATUS_ERR_ARG, "%s: roc is NULL", fn);
    int rc = check_embeddings(fn, "a", a);
    if (!rc && b) rc = check_embeddings(fn, "b", b);
    if (rc) return rc;
    int64_t na = a->sizes[0], d = a->sizes[1], nb = b ? b->sizes[0] : na;
    if (b && b->sizes[1] != d)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: a %s and b %s must have one embedding size", fn, facet_desc(a),
                          facet_desc(b));
    if (la) rc = check_vector(fn, "la", la, FACET_DTYPE_INT64, na);
    if (!rc && lb) rc = check_vector(fn, "lb", lb, FACET_DTYPE_INT64, nb);
    if (rc) return rc;
    if (!b && lb) return facet_fail(FACET_STATUS_ERR_ARG, "%s: lb given without b", fn);
    if (b && ((la == NULL) != (lb == NULL)))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: give both la and lb, or neither", fn);
    if (block < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: block must be >= 1, got %lld", fn, (long long)block);
    int64_t big = na > nb ? na : nb;
    if (block > big && big > 0) block = big;
    if (block > 46340) block = 46340;           /* block^2 floats stay below 2^31 elements */
    const float *ap = facet_ptr(a), *bp = b ? facet_ptr(b) : ap;
    rc = check_finite(fn, "a", ap, na, d);
    if (!rc && b) rc = check_finite(fn, "b", bp, nb, d);
    if (rc) return rc;
    const int64_t *lap = la ? facet_ptr(la) : NULL, *lbp = b ? (lb ? facet_ptr(lb) : NULL) : lap;
    /* the genuine and impostor counts of this call, checked before anything is added */
    int64_t total = b ? na * nb : na * (na - 1) / 2, gen = 0;
    if (lap) {
        int64_t *sa = sorted_labels(lap, na), *sb = b ? sorted_labels(lbp, nb) : NULL;
        if (!sa || (b && !sb)) {
            free(sa);
            free(sb);
            return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
        }
        if (!b) {
            for (int64_t i = 0, j; i < na; i = j) {
                for (j = i; j < na && sa[j] == sa[i]; j++) {}
                if (sa[i] != -1) gen += (j - i) * (j - i - 1) / 2;
            }
        } else {
            for (int64_t i = 0, j = 0; i < na && j < nb;) {
                if (sa[i] < sb[j]) i++;
                else if (sa[i] > sb[j]) j++;
                else {
                    int64_t i2 = i, j2 = j;
                    while (i2 < na && sa[i2] == sa[i]) i2++;
                    while (j2 < nb && sb[j2] == sb[j]) j2++;
                    if (sa[i] != -1) gen += (i2 - i) * (j2 - j);
                    i = i2;
                    j = j2;
                }
            }
        }
        free(sa);
        free(sb);
    }
    rc = roc_check_open(fn, r, gen, total - gen);
    if (rc) return rc;
    float *buf = alloc_floats(fn, block * block);
    if (!buf) return FACET_STATUS_ERR_MEMORY;
    for (int64_t i0 = 0; i0 < na && !rc; i0 += block) {
        int64_t bi = na - i0 < block ? na - i0 : block;
        for (int64_t j0 = b ? 0 : i0; j0 < nb && !rc; j0 += block) {
            int64_t bj = nb - j0 < block ? nb - j0 : block;
            if (d == 0) memset(buf, 0, (size_t)(bi * bj) * sizeof(float));
            else rc = facet_blas_sgemm(0, 1, bi, bj, d, 1.0f, ap + i0 * d, d, bp + j0 * d, d, 0.0f, buf, bj);
            if (rc) break;
            for (int64_t i = 0; i < bi; i++) {
                int64_t first = (!b && j0 == i0) ? i + 1 : 0;
                const float *row = buf + i * bj;
                int64_t li = lap ? lap[i0 + i] : 0;
                for (int64_t c = first; c < bj; c++) {
                    if (lap && li != -1 && lbp[j0 + c] == li) r->gen[r->gen_n++] = row[c];
                    else roc_push_impostor(r, row[c]);
                }
            }
        }
    }
    free(buf);
    r->sorted = 0;
    return rc;
}

int facet_eval_roc_counts(const facet_eval_roc *r, int64_t *genuine, int64_t *impostor)
{
    if (!r) return facet_fail(FACET_STATUS_ERR_ARG, "facet_eval_roc_counts: roc is NULL");
    if (genuine) *genuine = r->gen_n;
    if (impostor) *impostor = r->imp_seen;
    return 0;
}

/* Every announced score in: genuine ascending, the kept impostors descending. */
static int roc_finish(const char *fn, facet_eval_roc *r)
{
    if (!r) return facet_fail(FACET_STATUS_ERR_ARG, "%s: roc is NULL", fn);
    if (r->gen_n != r->n_gen || r->imp_seen != r->n_imp)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %lld of %lld genuine and %lld of %lld impostor scores were added", fn,
                          (long long)r->gen_n, (long long)r->n_gen, (long long)r->imp_seen, (long long)r->n_imp);
    if (r->sorted) return 0;
    if (r->imp_n > r->keep) roc_compact(r);
    int64_t n = r->gen_n > r->imp_n ? r->gen_n : r->imp_n;
    float *tmp = alloc_floats(fn, n);
    if (!tmp) return FACET_STATUS_ERR_MEMORY;
    sort_floats(r->gen, tmp, r->gen_n);
    sort_floats(r->imp, tmp, r->imp_n);
    for (int64_t i = 0, j = r->imp_n - 1; i < j; i++, j--) swapf(&r->imp[i], &r->imp[j]);
    free(tmp);
    r->sorted = 1;
    return 0;
}

int facet_eval_roc_tar(facet_eval_roc *r, int64_t n, const double *far, double *tar, double *threshold)
{
    static const char *fn = "facet_eval_roc_tar";
    int rc = roc_finish(fn, r);
    if (rc) return rc;
    if (n < 0 || (n > 0 && (!far || !tar))) return facet_fail(FACET_STATUS_ERR_ARG, "%s: far and tar must hold n = %lld values", fn, (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (!(far[i] > 0.0 && far[i] <= r->max_far))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: far[%lld] = %g is outside (0, max_far = %g]", fn, (long long)i,
                              far[i], r->max_far);
    double N = (double)r->n_imp;
    for (int64_t i = 0; i < n; i++) {
        /* m: the most false accepts with m / N <= far */
        int64_t m = (int64_t)floor(far[i] * N);
        while (m < r->n_imp && (double)(m + 1) / N <= far[i]) m++;
        while (m > 0 && (double)m / N > far[i]) m--;
        if (m >= r->n_imp) {
            tar[i] = r->n_gen > 0 ? 1.0 : 0.0;
            if (threshold) threshold[i] = -INFINITY;
        } else {
            float v = r->imp[m];      /* the (m+1)-th highest impostor: accept strictly above it */
            tar[i] = r->n_gen > 0 ? (double)count_above(r->gen, r->gen_n, v) / (double)r->n_gen : 0.0;
            if (threshold) threshold[i] = v;
        }
    }
    return 0;
}

int facet_eval_roc_curve(facet_eval_roc *r, int64_t capacity, double *fpr, double *tpr, double *threshold, int64_t *n)
{
    static const char *fn = "facet_eval_roc_curve";
    int rc = roc_finish(fn, r);
    if (rc) return rc;
    if (capacity < 2 || !fpr || !tpr || !n)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want fpr, tpr and n, and capacity >= 2 (got %lld)", fn, (long long)capacity);
    /* scores above `limit` have exact counts (every impostor above it is kept) */
    int full = r->keep == r->n_imp;
    float limit = (!full && r->imp_n > 0) ? r->imp[r->imp_n - 1] : -INFINITY;
    double G = (double)r->n_gen, N = (double)r->n_imp;
    int64_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        int thin = pass == 1 && total + 1 > capacity;
        int64_t out = 1, groups = 0, gi = r->gen_n - 1, ii = 0, tp = 0, fp = 0;
        double next_fp = 1.0;
        fpr[0] = 0.0;
        tpr[0] = 0.0;
        if (threshold) threshold[0] = INFINITY;
        for (;;) {
            int g_ok = gi >= 0 && r->gen[gi] > limit, i_ok = ii < r->imp_n && r->imp[ii] > limit;
            if (!g_ok && !i_ok) break;
            float s = g_ok && (!i_ok || r->gen[gi] >= r->imp[ii]) ? r->gen[gi] : r->imp[ii];
            while (gi >= 0 && r->gen[gi] == s) {
                tp++;
                gi--;
            }
            while (ii < r->imp_n && r->imp[ii] == s) {
                fp++;
                ii++;
            }
            groups++;
            if (pass == 0) continue;
            g_ok = gi >= 0 && r->gen[gi] > limit;
            i_ok = ii < r->imp_n && r->imp[ii] > limit;
            int last = !g_ok && !i_ok;
            /* a corner of the curve: the next group adds a false accept */
            int corner = last || (i_ok && (!g_ok || r->imp[ii] >= r->gen[gi]));
            if (thin && !(last || (corner && (double)fp >= next_fp))) continue;
            if (thin) next_fp = fmax((double)fp + 1.0, ceil((double)fp * 1.02));
            int64_t slot = out < capacity ? out++ : capacity - 1;
            fpr[slot] = r->n_imp > 0 ? (double)fp / N : 0.0;
            tpr[slot] = r->n_gen > 0 ? (double)tp / G : 0.0;
            if (threshold) threshold[slot] = s;
        }
        if (pass == 0) total = groups;
        else *n = out;
    }
    return 0;
}

/* ---- k-fold accuracy ------------------------------------------------------------------------- */

/* Counts over one fold's sorted genuine (g) and impostor (m) values. */
struct fold_sorted {
    double *g, *m;
    int64_t ng, nm;
};

static int64_t count_lt(const double *a, int64_t n, double t) { return first_false(a, n, t, double_lt); }
static int64_t count_gt(const double *a, int64_t n, double t) { return n - first_false(a, n, t, double_le); }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* predicted-same genuine and impostor counts of fold f at threshold t */
static void fold_counts(const struct fold_sorted *f, int below, double t, int64_t *tp, int64_t *fp)
{
    if (below) {
        *tp = count_lt(f->g, f->ng, t);
        *fp = count_lt(f->m, f->nm, t);
    } else {
        *tp = count_gt(f->g, f->ng, t);
        *fp = count_gt(f->m, f->nm, t);
    }
}

int facet_eval_kfold(double *accuracy, double *threshold, const facet_tensor *cosines, const facet_tensor *same, int folds,
                     int protocol)
{
    static const char *fn = "facet_eval_kfold";
    if (!accuracy || !threshold) return facet_fail(FACET_STATUS_ERR_ARG, "%s: accuracy and threshold must not be NULL", fn);
    int rc = facet_check_tensor(fn, "cosines", cosines);
    if (rc) return rc;
    int64_t P = facet_numel(cosines);
    rc = check_vector(fn, "cosines", cosines, FACET_DTYPE_FLOAT32, P);
    if (!rc) rc = check_vector(fn, "same", same, FACET_DTYPE_UINT8, P);
    if (rc) return rc;
    if (protocol < 0 || protocol >= FACET_EVAL_PROTOCOL_COUNT)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: protocol %d is not a facet_eval_protocol", fn, protocol);
    if (folds < 2 || folds > P)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: folds must be in [2, P = %lld], got %d", fn, (long long)P, folds);
    const float *c = facet_ptr(cosines);
    const uint8_t *sm = facet_ptr(same);
    for (int64_t i = 0; i < P; i++)
        if (!isfinite(c[i]))
            return facet_fail(FACET_STATUS_ERR_NUMERIC, "%s: cosines[%lld] is %g (NaN or infinite)", fn, (long long)i, (double)c[i]);
    int below = protocol == FACET_EVAL_PROTOCOL_INSIGHTFACE;
    double *vals = malloc((size_t)P * sizeof(double));
    struct fold_sorted *fs = calloc((size_t)folds, sizeof *fs);
    if (!vals || !fs) {
        free(vals);
        free(fs);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    }
    /* contiguous folds, the first P mod folds one pair larger; genuine then impostor values, each sorted */
    int64_t start = 0, base = P / folds, extra = P % folds;
    for (int f = 0; f < folds; f++) {
        int64_t len = base + (f < extra ? 1 : 0), ng = 0;
        double *v = vals + start;
        for (int64_t i = start; i < start + len; i++) ng += sm[i] != 0;
        int64_t gi = 0, mi = ng;
        for (int64_t i = start; i < start + len; i++) {
            double x = below ? fmax(0.0, 2.0 - 2.0 * (double)c[i]) : (double)c[i];
            if (sm[i]) v[gi++] = x; else v[mi++] = x;
        }
        qsort(v, (size_t)ng, sizeof(double), cmp_double);
        qsort(v + ng, (size_t)(len - ng), sizeof(double), cmp_double);
        fs[f] = (struct fold_sorted){ v, v + ng, ng, len - ng };
        start += len;
    }
    for (int f = 0; f < folds; f++) {
        int64_t ng = 0, nm = 0;
        double mn = INFINITY, mx = -INFINITY;
        for (int g = 0; g < folds; g++) {
            if (g == f) continue;
            ng += fs[g].ng;
            nm += fs[g].nm;
            if (fs[g].ng) { mn = fmin(mn, fs[g].g[0]); mx = fmax(mx, fs[g].g[fs[g].ng - 1]); }
            if (fs[g].nm) { mn = fmin(mn, fs[g].m[0]); mx = fmax(mx, fs[g].m[fs[g].nm - 1]); }
        }
        int cands = below ? 400 : 1000;
        double best = -INFINITY, best_t = 0.0;
        for (int k = 0; k < cands; k++) {
            double t = below ? k * 0.01 : mn + (mx - mn) * (k + 1) / 1000;
            int64_t tp = 0, fp = 0;
            for (int g = 0; g < folds; g++) {
                if (g == f) continue;
                int64_t a, b;
                fold_counts(&fs[g], below, t, &a, &b);
                tp += a;
                fp += b;
            }
            double value = below ? (double)(tp + (nm - fp)) / (double)(ng + nm)
                                 : (ng > 0 ? (double)tp / ng : 0.0) - (nm > 0 ? (double)fp / nm : 0.0);
            if (value > best) {            /* strict: ties keep the smallest threshold */
                best = value;
                best_t = t;
            }
        }
        int64_t tp, fp;
        fold_counts(&fs[f], below, best_t, &tp, &fp);
        accuracy[f] = (double)(tp + (fs[f].nm - fp)) / (double)(fs[f].ng + fs[f].nm);
        threshold[f] = best_t;
    }
    free(vals);
    free(fs);
    return 0;
}
