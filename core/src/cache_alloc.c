/*
 * cache_alloc.c - the caching allocator of cache_alloc.h: host-side
 * bookkeeping only (the memory itself is never touched), so the same code runs
 * over cudaMalloc/cudaFree and, in the unit test, over malloc/free.
 *
 * A segment is one raw allocation, cut into blocks that are linked in address
 * order (prev/next); a segment's first block (the head) is never merged away
 * and carries the segment's size. Free blocks sit in per-pool bins by
 * floor(log2(size)); blocks handed out sit in a hash table by address.
 */
#define _POSIX_C_SOURCE 200809L
#include "cache_alloc.h"
#include "facet.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { NBINS = 64, POOL_SMALL = 0, POOL_LARGE = 1, NPOOLS = 2, TABLE_MIN = 1024 };

struct block {
    char *ptr;
    size_t size;
    size_t requested;        /* what the caller asked for (allocated blocks) */
    int pool;
    int allocated;
    struct block *prev, *next;       /* address neighbours in the segment */
    struct block *fprev, *fnext;     /* the bin's list, while free */
    struct block *hnext;             /* the hash chain, while allocated */
    /* heads only */
    int head;
    size_t seg_size;
    struct block *sprev, *snext;     /* the list of segments */
};

struct facet_cache {
    facet_raw_alloc_fn raw_alloc;
    facet_raw_free_fn raw_free;
    void *ctx;
    pthread_mutex_t lock;
    struct block *bins[NPOOLS][NBINS];
    struct block **table;
    size_t table_size, table_count;
    struct block *segments;
    struct facet_cache_stats st;
};

/* ---- sizes ---------------------------------------------------------------------- */

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* over this, rounding could overflow: no request that big can be served */
static const size_t MAX_REQUEST = (SIZE_MAX / 2);

size_t facet_cache_round(size_t nbytes)
{
    if (nbytes == 0) return FACET_CACHE_ROUND;
    return round_up(nbytes, FACET_CACHE_ROUND);
}

size_t facet_cache_segment_size(size_t nbytes)
{
    size_t size = facet_cache_round(nbytes);
    if (size <= FACET_CACHE_SMALL) return FACET_CACHE_SMALL_SEGMENT;
    if (size <= FACET_CACHE_MID) return FACET_CACHE_MID_SEGMENT;
    return round_up(size, FACET_CACHE_LARGE_ROUND);
}

static int pool_of(size_t size) { return size <= FACET_CACHE_SMALL ? POOL_SMALL : POOL_LARGE; }

static int bin_of(size_t size)
{
    int b = 0;
    while (size > 1) { size >>= 1; b++; }
    return b;
}

/* ---- free lists ----------------------------------------------------------------------- */

static void insert_free(facet_cache *c, struct block *b)
{
    struct block **head = &c->bins[b->pool][bin_of(b->size)];
    b->fprev = NULL;
    b->fnext = *head;
    if (*head) (*head)->fprev = b;
    *head = b;
}

static void unlink_free(facet_cache *c, struct block *b)
{
    if (b->fprev) b->fprev->fnext = b->fnext;
    else c->bins[b->pool][bin_of(b->size)] = b->fnext;
    if (b->fnext) b->fnext->fprev = b->fprev;
    b->fprev = b->fnext = NULL;
}

/* smaller wins, then the lower address (the choice never depends on list order) */
static int better(const struct block *x, const struct block *best)
{
    if (!best) return 1;
    if (x->size != best->size) return x->size < best->size;
    return (uintptr_t)x->ptr < (uintptr_t)best->ptr;
}

/* best fit: the smallest free block of the pool with at least size bytes */
static struct block *find_free(facet_cache *c, int pool, size_t size)
{
    for (int b = bin_of(size); b < NBINS; b++) {
        struct block *best = NULL;
        for (struct block *x = c->bins[pool][b]; x; x = x->fnext)
            if (x->size >= size && better(x, best)) best = x;
        if (best) return best;   /* every block of a higher bin is bigger */
    }
    return NULL;
}

/* ---- the table of blocks handed out ----------------------------------------------------- */

static size_t hash_ptr(const void *p, size_t table_size)
{
    uint64_t x = (uint64_t)(uintptr_t)p >> 9;
    x *= UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(x >> 20) & (table_size - 1);
}

static void table_grow(facet_cache *c)
{
    size_t n = c->table_size * 2;
    struct block **t = calloc(n, sizeof *t);
    if (!t) return;                       /* longer chains, still correct */
    for (size_t i = 0; i < c->table_size; i++) {
        struct block *b = c->table[i];
        while (b) {
            struct block *next = b->hnext;
            size_t h = hash_ptr(b->ptr, n);
            b->hnext = t[h];
            t[h] = b;
            b = next;
        }
    }
    free(c->table);
    c->table = t;
    c->table_size = n;
}

static void table_insert(facet_cache *c, struct block *b)
{
    if (c->table_count >= c->table_size) table_grow(c);
    size_t h = hash_ptr(b->ptr, c->table_size);
    b->hnext = c->table[h];
    c->table[h] = b;
    c->table_count++;
}

static struct block *table_remove(facet_cache *c, const void *ptr)
{
    struct block **p = &c->table[hash_ptr(ptr, c->table_size)];
    for (; *p; p = &(*p)->hnext) {
        if ((*p)->ptr == ptr) {
            struct block *b = *p;
            *p = b->hnext;
            b->hnext = NULL;
            c->table_count--;
            return b;
        }
    }
    return NULL;
}

/* ---- segments ------------------------------------------------------------------------------- */

static void segment_unlink(facet_cache *c, struct block *h)
{
    if (h->sprev) h->sprev->snext = h->snext;
    else c->segments = h->snext;
    if (h->snext) h->snext->sprev = h->sprev;
}

/* gives wholly free segments back; the first failing raw_free's status */
static int release_free_segments(facet_cache *c)
{
    int first = 0;
    struct block *h = c->segments;
    while (h) {
        struct block *next = h->snext;
        if (!h->allocated && !h->next) {   /* one free block spans the segment */
            unlink_free(c, h);
            segment_unlink(c, h);
            int rc = c->raw_free(c->ctx, h->ptr, h->seg_size);
            if (rc && !first) first = rc;
            /* even when the raw free failed, the memory is not handed out again */
            c->st.reserved -= (int64_t)h->seg_size;
            c->st.segments--;
            c->st.raw_frees++;
            free(h);
        }
        h = next;
    }
    return first;
}

static int raw_alloc_retry(facet_cache *c, void **p, size_t *seg, size_t size, int pool)
{
    int rc = c->raw_alloc(c->ctx, p, *seg);
    if (rc != FACET_STATUS_ERR_MEMORY) return rc;
    c->st.oom_retries++;
    release_free_segments(c);
    rc = c->raw_alloc(c->ctx, p, *seg);
    if (rc == FACET_STATUS_ERR_MEMORY && pool == POOL_LARGE && *seg > round_up(size, FACET_CACHE_LARGE_ROUND)) {
        /* a shared 20 MiB segment is a luxury: ask for the request alone */
        *seg = round_up(size, FACET_CACHE_LARGE_ROUND);
        rc = c->raw_alloc(c->ctx, p, *seg);
    }
    return rc;
}

/* ---- the API ------------------------------------------------------------------------------- */

facet_cache *facet_cache_new(facet_raw_alloc_fn raw_alloc, facet_raw_free_fn raw_free, void *ctx)
{
    if (!raw_alloc || !raw_free) return NULL;
    facet_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->table = calloc(TABLE_MIN, sizeof *c->table);
    if (!c->table || pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->table);
        free(c);
        return NULL;
    }
    c->table_size = TABLE_MIN;
    c->raw_alloc = raw_alloc;
    c->raw_free = raw_free;
    c->ctx = ctx;
    return c;
}

void facet_cache_delete(facet_cache *c)
{
    if (!c) return;
    struct block *h = c->segments;
    while (h) {
        struct block *next_seg = h->snext;
        c->raw_free(c->ctx, h->ptr, h->seg_size);
        for (struct block *b = h; b;) {
            struct block *n = b->next;
            free(b);
            b = n;
        }
        h = next_seg;
    }
    free(c->table);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int facet_cache_alloc(facet_cache *c, void **ptr, size_t nbytes)
{
    if (!c || !ptr) return FACET_STATUS_ERR_ARG;
    *ptr = NULL;
    pthread_mutex_lock(&c->lock);
    if (nbytes > MAX_REQUEST) {
        c->st.ooms++;
        pthread_mutex_unlock(&c->lock);
        return FACET_STATUS_ERR_MEMORY;
    }
    size_t size = facet_cache_round(nbytes);
    int pool = pool_of(size), hit = 1;
    struct block *b = find_free(c, pool, size);
    if (b) {
        unlink_free(c, b);
    } else {
        hit = 0;
        size_t seg = facet_cache_segment_size(nbytes);
        void *p = NULL;
        int rc = raw_alloc_retry(c, &p, &seg, size, pool);
        if (!rc && !(b = calloc(1, sizeof *b))) {
            c->raw_free(c->ctx, p, seg);
            rc = FACET_STATUS_ERR_MEMORY;
        }
        if (rc) {
            if (rc == FACET_STATUS_ERR_MEMORY) c->st.ooms++;
            pthread_mutex_unlock(&c->lock);
            return rc;
        }
        b->ptr = p;
        b->size = seg;
        b->pool = pool;
        b->head = 1;
        b->seg_size = seg;
        b->snext = c->segments;
        if (c->segments) c->segments->sprev = b;
        c->segments = b;
        c->st.reserved += (int64_t)seg;
        c->st.segments++;
        c->st.raw_allocs++;
        if (c->st.reserved > c->st.peak_reserved) c->st.peak_reserved = c->st.reserved;
    }
    /* split off the rest when it is worth a block of its own */
    size_t rest = b->size - size;
    if (pool == POOL_SMALL ? rest >= FACET_CACHE_ROUND : rest > FACET_CACHE_SMALL) {
        struct block *r = calloc(1, sizeof *r);
        if (r) {                          /* without one, the caller gets the whole block */
            r->ptr = b->ptr + size;
            r->size = rest;
            r->pool = pool;
            r->prev = b;
            r->next = b->next;
            if (b->next) b->next->prev = r;
            b->next = r;
            b->size = size;
            insert_free(c, r);
        }
    }
    b->allocated = 1;
    b->requested = nbytes;
    table_insert(c, b);
    c->st.allocated += (int64_t)b->size;
    c->st.requested += (int64_t)nbytes;
    c->st.blocks++;
    c->st.allocs++;
    c->st.cache_hits += hit;
    if (c->st.allocated > c->st.peak_allocated) c->st.peak_allocated = c->st.allocated;
    *ptr = b->ptr;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int facet_cache_free(facet_cache *c, void *ptr)
{
    if (!ptr) return 0;
    if (!c) return FACET_STATUS_ERR_ARG;
    pthread_mutex_lock(&c->lock);
    struct block *b = table_remove(c, ptr);
    if (!b) {
        pthread_mutex_unlock(&c->lock);
        return FACET_STATUS_ERR_ARG;
    }
    c->st.allocated -= (int64_t)b->size;
    c->st.requested -= (int64_t)b->requested;
    c->st.blocks--;
    b->allocated = 0;
    b->requested = 0;
    struct block *n = b->next;
    if (n && !n->allocated) {             /* absorb the free block after */
        unlink_free(c, n);
        b->size += n->size;
        b->next = n->next;
        if (n->next) n->next->prev = b;
        free(n);
    }
    struct block *p = b->prev;
    if (p && !p->allocated) {             /* the free block before absorbs this one */
        unlink_free(c, p);
        p->size += b->size;
        p->next = b->next;
        if (b->next) b->next->prev = p;
        free(b);
        b = p;
    }
    insert_free(c, b);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int facet_cache_empty(facet_cache *c)
{
    if (!c) return 0;
    pthread_mutex_lock(&c->lock);
    int rc = release_free_segments(c);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

void facet_cache_get_stats(facet_cache *c, struct facet_cache_stats *out)
{
    if (!out) return;
    if (!c) {
        memset(out, 0, sizeof *out);
        return;
    }
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    pthread_mutex_unlock(&c->lock);
}
