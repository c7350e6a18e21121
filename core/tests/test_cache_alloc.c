/*
 * test_cache_alloc.c - unit tests of the caching device allocator's
 * bookkeeping (core/src/cache_alloc.c), run on the CPU: the program is built
 * from that one source file with malloc behind it instead of cudaMalloc, so
 * what runs here is exactly the code that manages GPU memory, without the
 * shared library, a GPU or a test hook in the shipped API. TAP-style output;
 * `--counts FILE` writes "passed failed" for the spec summary.
 */
#define _POSIX_C_SOURCE 200809L
#include "cache_alloc.h"
#include "facet.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "test_counts.h"

static int passed, failed;

static void check(int cond, const char *what)
{
    if (cond) passed++;
    else failed++;
    printf("%s %d - %s\n", cond ? "ok" : "not ok", passed + failed, what);
}

#define MiB ((size_t)1 << 20)

/* ---- the fake driver: malloc with a capacity, and every segment remembered ---- */

enum { MAX_SEGS = 4096 };
struct fake {
    size_t capacity, live_bytes;
    int live_count;
    int fail_code;           /* nonzero: every raw_alloc returns it */
    int64_t alloc_calls, bad_frees;
    void *ptr[MAX_SEGS];
    size_t size[MAX_SEGS];
    pthread_mutex_t lock;
};

static int fake_alloc(void *ctx, void **p, size_t n)
{
    struct fake *f = ctx;
    pthread_mutex_lock(&f->lock);
    f->alloc_calls++;
    int rc = 0;
    if (f->fail_code) rc = f->fail_code;
    else if (f->live_bytes + n > f->capacity || f->live_count == MAX_SEGS) rc = FACET_STATUS_ERR_MEMORY;
    else if (!(*p = aligned_alloc(512, n))) rc = FACET_STATUS_ERR_MEMORY;
    if (!rc) {
        for (int i = 0; i < MAX_SEGS; i++)
            if (!f->ptr[i]) { f->ptr[i] = *p; f->size[i] = n; break; }
        f->live_bytes += n;
        f->live_count++;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int fake_free(void *ctx, void *p, size_t n)
{
    struct fake *f = ctx;
    pthread_mutex_lock(&f->lock);
    int found = 0;
    for (int i = 0; i < MAX_SEGS; i++) {
        if (f->ptr[i] == p) {
            if (f->size[i] != n) f->bad_frees++;   /* freed with another size than allocated */
            f->ptr[i] = NULL;
            f->live_bytes -= f->size[i];
            f->live_count--;
            found = 1;
            break;
        }
    }
    if (!found) f->bad_frees++;
    pthread_mutex_unlock(&f->lock);
    free(p);
    return found ? 0 : FACET_STATUS_ERR_ARG;
}

static void fake_init(struct fake *f, size_t capacity)
{
    memset(f, 0, sizeof *f);
    f->capacity = capacity;
    pthread_mutex_init(&f->lock, NULL);
}

static struct facet_cache_stats stats(facet_cache *c)
{
    struct facet_cache_stats s;
    facet_cache_get_stats(c, &s);
    return s;
}

static void *get(facet_cache *c, size_t n)
{
    void *p = NULL;
    return facet_cache_alloc(c, &p, n) == 0 ? p : NULL;
}

/* ---- the policy, case by case ---------------------------------------------------- */

static void test_sizes(void)
{
    check(facet_cache_round(0) == 512 && facet_cache_round(1) == 512 && facet_cache_round(512) == 512 &&
          facet_cache_round(513) == 1024, "requests round up to 512 bytes (0 too)");
    check(facet_cache_segment_size(1) == 2 * MiB && facet_cache_segment_size(MiB) == 2 * MiB,
          "small requests (<= 1 MiB) take 2 MiB segments");
    check(facet_cache_segment_size(MiB + 1) == 20 * MiB && facet_cache_segment_size(10 * MiB) == 20 * MiB,
          "requests up to 10 MiB share 20 MiB segments");
    check(facet_cache_segment_size(10 * MiB + 1) == 12 * MiB && facet_cache_segment_size(30 * MiB) == 30 * MiB,
          "bigger requests get a segment rounded up to 2 MiB");
}

static void test_reuse(void)
{
    struct fake f;
    fake_init(&f, (size_t)1 << 40);
    facet_cache *c = facet_cache_new(fake_alloc, fake_free, &f);
    check(c != NULL, "new");
    char *a = get(c, 1000);
    struct facet_cache_stats s = stats(c);
    check(a && s.raw_allocs == 1 && s.reserved == (int64_t)(2 * MiB) && s.allocated == 1024 && s.requested == 1000 &&
          s.cache_hits == 0 && s.segments == 1 && s.blocks == 1, "first block: one 2 MiB segment, 1024 bytes allocated");
    char *b = get(c, 1000);
    s = stats(c);
    check(b == a + 1024 && s.raw_allocs == 1 && s.cache_hits == 1 && s.allocated == 2048,
          "second block: split from the same segment, no driver call");
    check(facet_cache_free(c, a) == 0, "free");
    char *a2 = get(c, 900);
    s = stats(c);
    check(a2 == a && s.raw_allocs == 1 && s.cache_hits == 2,
          "a freed block is handed out again at once (stream order, no sync)");
    check(s.peak_allocated == 2048 && s.allocs == 3, "peak and count of allocations");
    void *z1 = get(c, 0), *z2 = get(c, 0);
    check(z1 && z2 && z1 != z2, "empty requests get distinct addresses");
    facet_cache_free(c, z1);
    facet_cache_free(c, z2);

    /* merging: four 512 KiB blocks fill a small segment; freed ones merge */
    facet_cache_free(c, a2);
    facet_cache_free(c, b);
    check(stats(c).allocated == 0 && stats(c).segments == 1, "all free, segment cached");
    char *q[4];
    for (int i = 0; i < 4; i++) q[i] = get(c, 512 * 1024);
    s = stats(c);
    check(q[0] && q[1] == q[0] + 512 * 1024 && q[3] == q[0] + 3 * 512 * 1024 && s.segments == 1,
          "four 512 KiB blocks fill one 2 MiB segment");
    char *q4 = get(c, 512);
    check(q4 && stats(c).segments == 2, "a full segment makes the next request take a new one");
    facet_cache_free(c, q[1]);
    facet_cache_free(c, q[2]);
    char *m = get(c, MiB);
    check(m == q[1], "two adjacent free blocks merge into one that serves 1 MiB");
    check(facet_cache_free(c, q[2]) == FACET_STATUS_ERR_ARG, "freeing an address inside a block is an error");
    check(facet_cache_free(c, (char *)m + 1) == FACET_STATUS_ERR_ARG && facet_cache_free(c, m) == 0 &&
          facet_cache_free(c, m) == FACET_STATUS_ERR_ARG, "unknown address and double free are errors");
    check(facet_cache_free(c, NULL) == 0, "free(NULL) is a no-op");

    /* empty_cache keeps segments with live blocks */
    facet_cache_free(c, q[0]);
    check(facet_cache_empty(c) == 0, "empty");
    s = stats(c);
    check(s.segments == 2 && f.live_count == 2, "segments with blocks in use stay");
    facet_cache_free(c, q[3]);
    facet_cache_empty(c);
    s = stats(c);
    check(s.segments == 1 && s.reserved == (int64_t)(2 * MiB) && f.live_count == 1,
          "a segment freed wholly goes back to the driver");
    facet_cache_free(c, q4);
    facet_cache_empty(c);
    s = stats(c);
    check(s.reserved == 0 && s.segments == 0 && s.allocated == 0 && f.live_count == 0 && f.live_bytes == 0 &&
          s.raw_frees == s.raw_allocs && f.bad_frees == 0, "empty cache: nothing reserved, every segment freed whole");
    check(s.peak_reserved == (int64_t)(4 * MiB), "peak reserved");
    facet_cache_delete(c);
}

static void test_pools(void)
{
    struct fake f;
    fake_init(&f, (size_t)1 << 40);
    facet_cache *c = facet_cache_new(fake_alloc, fake_free, &f);
    char *a = get(c, 3 * MiB);
    struct facet_cache_stats s = stats(c);
    check(a && s.reserved == (int64_t)(20 * MiB) && s.allocated == (int64_t)(3 * MiB),
          "a 3 MiB request takes a 20 MiB segment");
    char *b = get(c, 3 * MiB);
    check(b == a + 3 * MiB && stats(c).raw_allocs == 1, "the next 3 MiB comes from the same segment");
    char *small = get(c, 4096);
    check(small && stats(c).raw_allocs == 2 && stats(c).reserved == (int64_t)(22 * MiB),
          "small requests never cut large segments");
    char *big = get(c, 30 * MiB + 5);
    check(big && stats(c).reserved == (int64_t)(54 * MiB), "a 30 MiB request gets a 32 MiB segment of its own");
    /* large splits keep only rests over 1 MiB: 20 - 3 - 3 = 14 MiB left; ask 13.5 MiB */
    char *c1 = get(c, 13 * MiB + MiB / 2);
    s = stats(c);
    check(c1 == b + 3 * MiB && s.allocated == (int64_t)(3 * MiB + 3 * MiB + 4096 + 30 * MiB + 512 + 14 * MiB) &&
          s.raw_allocs == 3, "a large rest of 512 KiB is not split off: the block takes it");
    facet_cache_free(c, a);
    facet_cache_free(c, b);
    facet_cache_free(c, c1);
    facet_cache_free(c, small);
    facet_cache_free(c, big);
    char *again = get(c, 19 * MiB);
    check(again == a && stats(c).raw_allocs == 3, "freed large blocks merge back into their segment");
    facet_cache_free(c, again);
    facet_cache_delete(c);
    check(f.live_count == 0 && f.bad_frees == 0, "delete frees every segment");
}

static void test_oom(void)
{
    struct fake f;
    fake_init(&f, 40 * MiB);
    facet_cache *c = facet_cache_new(fake_alloc, fake_free, &f);
    void *a = get(c, 3 * MiB);                   /* 20 MiB segment */
    facet_cache_free(c, a);                      /* ... now cached, unused */
    void *b = get(c, 22 * MiB);                  /* 22 MiB: 20 + 22 > 40 */
    struct facet_cache_stats s = stats(c);
    check(b && s.oom_retries == 1 && s.ooms == 0 && s.reserved == (int64_t)(22 * MiB) && f.live_count == 1,
          "out of memory: the cache is emptied and the allocation retried");
    void *p = (void *)1;
    int rc = facet_cache_alloc(c, &p, 30 * MiB);
    s = stats(c);
    check(rc == FACET_STATUS_ERR_MEMORY && p == NULL && s.ooms == 1 && s.oom_retries == 2 &&
          s.allocated == (int64_t)(22 * MiB) && s.reserved == (int64_t)(22 * MiB),
          "still out of memory after the retry: FACET_STATUS_ERR_MEMORY, state unchanged");
    facet_cache_free(c, b);
    facet_cache_empty(c);

    /* a 20 MiB shared segment does not fit, the request alone does */
    f.capacity = 8 * MiB;
    void *m = get(c, 3 * MiB);
    s = stats(c);
    check(m && s.reserved == (int64_t)(4 * MiB) && s.ooms == 1, "a mid-size request falls back to its own segment");
    facet_cache_free(c, m);

    /* other driver errors are passed through, without retrying */
    facet_cache_empty(c);
    f.fail_code = FACET_STATUS_ERR_DEVICE;
    int64_t calls = f.alloc_calls;
    rc = facet_cache_alloc(c, &p, 100);
    s = stats(c);
    check(rc == FACET_STATUS_ERR_DEVICE && f.alloc_calls == calls + 1 && s.oom_retries == 3,
          "a device error is returned as it is, with no retry");
    f.fail_code = 0;
    rc = facet_cache_alloc(c, &p, SIZE_MAX);
    check(rc == FACET_STATUS_ERR_MEMORY && p == NULL, "an impossible size is out of memory, no overflow");
    facet_cache_delete(c);
    check(f.live_count == 0 && f.bad_frees == 0, "no segment leaked");
}

/* ---- random work, every invariant checked after each step ------------------------ */

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t random_size(void)
{
    uint64_t r = next_rand() % 100;
    if (r < 65) return (size_t)(next_rand() % 65536);
    if (r < 85) return (size_t)(next_rand() % (2 * MiB));
    if (r < 97) return (size_t)(next_rand() % (10 * MiB));
    return (size_t)(next_rand() % (40 * MiB));
}

enum { LIVE = 96 };
struct live { unsigned char *p; size_t n; unsigned char tag; };

static void tag_block(struct live *l)
{
    size_t k = l->n < 64 ? l->n : 64;
    memset(l->p, l->tag, k);                          /* both ends of the block */
    if (l->n > 64) memset(l->p + l->n - 64, l->tag, 64);
}

static int tag_ok(const struct live *l)
{
    size_t k = l->n < 64 ? l->n : 64;
    for (size_t i = 0; i < k; i++)
        if (l->p[i] != l->tag || (l->n > 64 && l->p[l->n - 64 + i] != l->tag)) return 0;
    return 1;
}

static void test_random(void)
{
    struct fake f;
    fake_init(&f, 160 * MiB);
    facet_cache *c = facet_cache_new(fake_alloc, fake_free, &f);
    struct live live[LIVE];
    memset(live, 0, sizeof live);
    int overlap = 0, tags = 0, books = 0, ooms = 0, steps = 20000;
    for (int step = 0; step < steps; step++) {
        int i = (int)(next_rand() % LIVE);
        if (live[i].p) {
            if (!tag_ok(&live[i])) tags++;
            if (facet_cache_free(c, live[i].p) != 0) books++;
            live[i].p = NULL;
        } else {
            size_t n = random_size();
            void *p = NULL;
            int rc = facet_cache_alloc(c, &p, n);
            if (rc == FACET_STATUS_ERR_MEMORY) { ooms++; continue; }
            if (rc) { books++; continue; }
            unsigned char *q = p;
            size_t rn = facet_cache_round(n);
            for (int j = 0; j < LIVE; j++) {
                if (!live[j].p) continue;
                size_t jn = facet_cache_round(live[j].n);
                if (q < live[j].p + jn && live[j].p < q + rn) overlap++;
            }
            live[i].p = q;
            live[i].n = n;
            live[i].tag = (unsigned char)(step * 31 + 7);
            tag_block(&live[i]);
        }
        if (next_rand() % 500 == 0) facet_cache_empty(c);
        /* the books agree with the blocks held and with the fake driver */
        struct facet_cache_stats s = stats(c);
        int64_t alloc = 0, req = 0, blocks = 0;
        for (int j = 0; j < LIVE; j++)
            if (live[j].p) { alloc += (int64_t)facet_cache_round(live[j].n); req += (int64_t)live[j].n; blocks++; }
        if (s.allocated < alloc || s.requested != req || s.blocks != blocks || s.reserved != (int64_t)f.live_bytes ||
            s.segments != f.live_count || s.peak_allocated < s.allocated || s.reserved < s.allocated ||
            s.raw_allocs - s.raw_frees != s.segments)
            books++;
    }
    check(overlap == 0, "random work: no two live blocks overlap");
    check(tags == 0, "random work: no block's contents were overwritten");
    check(books == 0, "random work: the statistics match the blocks and segments held");
    struct facet_cache_stats s = stats(c);
    check(s.cache_hits > s.raw_allocs * 10, "random work: most allocations are cache hits");
    printf("# random: %lld allocations, %lld hits, %lld driver allocations, %d out of memory, peak reserved %lld MiB\n",
           (long long)s.allocs, (long long)s.cache_hits, (long long)s.raw_allocs, ooms,
           (long long)(s.peak_reserved >> 20));
    for (int j = 0; j < LIVE; j++)
        if (live[j].p) facet_cache_free(c, live[j].p);
    facet_cache_empty(c);
    s = stats(c);
    check(s.allocated == 0 && s.requested == 0 && s.reserved == 0 && f.live_count == 0 && f.bad_frees == 0,
          "random work: all freed and emptied, nothing held");
    facet_cache_delete(c);
}

/* ---- threads: the mutex keeps the books straight ------------------------------- */

struct worker_arg { facet_cache *c; int id; int bad; };

static void *worker(void *p)
{
    struct worker_arg *w = p;
    unsigned char *held[16] = { 0 };
    size_t sizes[16] = { 0 };
    uint64_t s = 1234567u + (uint64_t)w->id * 7919u;
    for (int step = 0; step < 4000; step++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int i = (int)((s >> 33) % 16);
        if (held[i]) {
            for (size_t k = 0; k < sizes[i] && k < 32; k++)
                if (held[i][k] != (unsigned char)(w->id + 1)) w->bad++;
            if (facet_cache_free(w->c, held[i]) != 0) w->bad++;
            held[i] = NULL;
        } else {
            sizes[i] = (size_t)((s >> 20) % 300000) + 1;
            void *q = NULL;
            if (facet_cache_alloc(w->c, &q, sizes[i]) != 0) { w->bad++; continue; }
            held[i] = q;
            memset(held[i], w->id + 1, sizes[i] < 32 ? sizes[i] : 32);
        }
    }
    for (int i = 0; i < 16; i++)
        if (held[i]) facet_cache_free(w->c, held[i]);
    return NULL;
}

static void test_threads(void)
{
    struct fake f;
    fake_init(&f, (size_t)1 << 40);
    facet_cache *c = facet_cache_new(fake_alloc, fake_free, &f);
    pthread_t t[4];
    struct worker_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct worker_arg){ c, i, 0 };
        pthread_create(&t[i], NULL, worker, &a[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        bad += a[i].bad;
    }
    struct facet_cache_stats s = stats(c);
    check(bad == 0 && s.allocated == 0 && s.blocks == 0 && s.allocs == s.cache_hits + s.raw_allocs,
          "four threads: no block shared, books balanced");
    facet_cache_delete(c);
    check(f.live_count == 0 && f.bad_frees == 0, "four threads: every segment freed");
}

int main(int argc, char **argv)
{
    const char *counts = test_counts_path(argc, argv);
    test_sizes();
    test_reuse();
    test_pools();
    test_oom();
    test_random();
    test_threads();
    printf("1..%d\n", passed + failed);
    test_counts_write(counts, passed, failed);
    return failed ? 1 : 0;
}
