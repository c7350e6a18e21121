/*
 * recordio.c - MXNet/dmlc-core RecordIO datasets (train.rec + train.idx), as
 * InsightFace packs its face sets: the reader (layout detection, labels,
 * identity ranges, split records put back together) and a writer that splits
 * records the way dmlc-core does. See the "data formats" section of facet.h.
 * The reader reads only through pread() (facet_pread_full, fileio.c), so one
 * handle serves many threads.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint32_t MAGIC = 0xced7230au;
static const uint8_t MAGIC_BYTES[4] = { 0x0a, 0x23, 0xd7, 0xce };   /* little-endian */
enum { HEADER_BYTES = 24, IDX_LINE_MAX = 256 };

struct facet_recordio {
    int fd;
    int64_t size;             /* of the .rec */
    char *path;               /* the .rec, for messages */
    int layout;
    int64_t nimages;
    int64_t *image_key;       /* per image */
    int64_t *image_offset;
    int64_t nidentities;
    int64_t *id_first;        /* per identity: images [first, end) */
    int64_t *id_end;
};

struct facet_recordio_writer {
    FILE *rec, *idx;
    char *path;
    int64_t pos;              /* bytes written to the .rec */
};

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float le_float(const uint8_t *p)
{
    uint32_t u = le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- records --------------------------------------------------------------------- */

/* Copies the part of [pos, pos + len) of the payload that overlaps the wanted
 * range [from, from + n) into dst (dst[0] is payload byte `from`). src is
 * either memory (the re-inserted magic) or, when NULL, the file at file_at. */
static int copy_overlap(const facet_recordio *r, const char *fn, int64_t pos, int64_t len, const uint8_t *src,
                        int64_t file_at, int64_t from, int64_t n, uint8_t *dst)
{
    int64_t lo = pos > from ? pos : from;
    int64_t hi = pos + len < from + n ? pos + len : from + n;
    if (lo >= hi) return 0;
    if (src) {
        memcpy(dst + (lo - from), src + (lo - pos), (size_t)(hi - lo));
        return 0;
    }
    return facet_pread_full(r->fd, fn, r->path, dst + (lo - from), hi - lo, file_at + (lo - pos));
}

/* Walks the parts of the record that starts at `offset` (key `key`, for
 * messages), checking each part's magic, continuation flag and length. The
 * payload's total length goes to *total; with dst, payload bytes
 * [from, from + n) are copied there, the magic put back between parts. */
static int record_walk(const facet_recordio *r, const char *fn, int64_t key, int64_t offset, int64_t *total,
                       int64_t from, int64_t n, uint8_t *dst)
{
    static const char *flag_names[4] = { "a whole record", "the start of a split record",
                                         "the middle of a split record", "the end of a split record" };
    int64_t at = offset, logical = 0;
    for (int64_t part = 0;; part++) {
        uint8_t head[8];
        if (at + 8 > r->size)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record of key %lld (offset %lld) is truncated: part %lld "
                              "would start at %lld, past the end of the file (%lld bytes)", fn, r->path,
                              (long long)key, (long long)offset, (long long)part, (long long)at, (long long)r->size);
        int rc = facet_pread_full(r->fd, fn, r->path, head, 8, at);
        if (rc) return rc;
        uint32_t magic = le32(head), lrec = le32(head + 4);
        if (magic != MAGIC) {
            if (part == 0)
                return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: offset %lld of key %lld is not a record start "
                                  "(bad magic 0x%08x, want 0x%08x)", fn, r->path, (long long)at, (long long)key,
                                  magic, MAGIC);
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record of key %lld (offset %lld): bad magic 0x%08x in part "
                              "%lld at offset %lld", fn, r->path, (long long)key, (long long)offset, magic,
                              (long long)part, (long long)at);
        }
        uint32_t cflag = lrec >> 29, len = lrec & ((1u << 29) - 1);
        if (cflag > 3)   /* three bits, four meanings */
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record of key %lld (offset %lld): continuation flag %u in "
                              "part %lld at offset %lld is not one of 0 (whole), 1 (start), 2 (middle), 3 (end)",
                              fn, r->path, (long long)key, (long long)offset, cflag, (long long)part,
                              (long long)at);
        if (part == 0 && cflag > 1)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: offset %lld of key %lld is not a record start: it holds %s "
                              "(continuation flag %u)", fn, r->path, (long long)at, (long long)key,
                              flag_names[cflag], cflag);
        if (part > 0 && cflag < 2)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record of key %lld (offset %lld): continuation flag %u out of "
                              "order in part %lld at offset %lld (a split record goes on with 2 or ends with 3)",
                              fn, r->path, (long long)key, (long long)offset, cflag, (long long)part,
                              (long long)at);
        if (at + 8 + (int64_t)len > r->size)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record of key %lld (offset %lld) is truncated: part %lld "
                              "says %u bytes at offset %lld, the file ends at %lld", fn, r->path, (long long)key,
                              (long long)offset, (long long)part, len, (long long)(at + 8), (long long)r->size);
        if (part > 0) {
            if (dst && (rc = copy_overlap(r, fn, logical, 4, MAGIC_BYTES, 0, from, n, dst))) return rc;
            logical += 4;
        }
        if (dst && (rc = copy_overlap(r, fn, logical, len, NULL, at + 8, from, n, dst))) return rc;
        logical += len;
        if (logical > FACET_RECORDIO_MAX_PAYLOAD)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record of key %lld (offset %lld) is too large: its parts "
                              "add up to more than %d bytes", fn, r->path, (long long)key, (long long)offset,
                              FACET_RECORDIO_MAX_PAYLOAD);
        if (cflag == 0 || cflag == 3) break;
        at += 8 + (((int64_t)len + 3) & ~(int64_t)3);
    }
    *total = logical;
    return 0;
}

/* The image header of a record: flag, its first two labels (the header's
 * label when flag is 0) and where the encoded image starts in the payload. */
struct image_header {
    uint32_t flag;
    float labels[2];
    int64_t payload;          /* total payload bytes */
    int64_t image_at;         /* the image's first payload byte */
};

static int read_header(const facet_recordio *r, const char *fn, int64_t key, int64_t offset,
                       struct image_header *h)
{
    int64_t total;
    int rc = record_walk(r, fn, key, offset, &total, 0, 0, NULL);
    if (rc) return rc;
    if (total < HEADER_BYTES)
        return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record of key %lld (offset %lld) has %lld payload bytes, fewer "
                          "than its %d-byte header", fn, r->path, (long long)key, (long long)offset,
                          (long long)total, HEADER_BYTES);
    uint8_t buf[HEADER_BYTES + 8];
    int64_t want = total < HEADER_BYTES + 8 ? total : HEADER_BYTES + 8;
    if ((rc = record_walk(r, fn, key, offset, &total, 0, want, buf))) return rc;
    h->flag = le32(buf);
    h->payload = total;
    if (h->flag == 0) {
        h->labels[0] = le_float(buf + 4);
        h->labels[1] = 0.0f;
        h->image_at = HEADER_BYTES;
        return 0;
    }
    if ((int64_t)h->flag > (total - HEADER_BYTES) / 4)
        return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record of key %lld (offset %lld): flag %u announces %u labels, "
                          "more than its %lld payload bytes hold", fn, r->path, (long long)key, (long long)offset,
                          h->flag, h->flag, (long long)total);
    h->labels[0] = le_float(buf + HEADER_BYTES);
    h->labels[1] = h->flag >= 2 ? le_float(buf + HEADER_BYTES + 4) : 0.0f;
    h->image_at = HEADER_BYTES + 4 * (int64_t)h->flag;
    return 0;
}

/* A float that must be an integer in [lo, hi]. */
static bool integral_in(float v, double lo, double hi)
{
    return isfinite(v) && v == floorf(v) && v >= lo && v <= hi;
}

/* ---- the .idx ------------------------------------------------------------------------ */

struct idx_entry {
    int64_t key, offset;
};

static int by_key(const void *a, const void *b)
{
    int64_t x = ((const struct idx_entry *)a)->key, y = ((const struct idx_entry *)b)->key;
    return (x > y) - (x < y);
}

/* Parses "key\toffset" lines (blank lines are skipped) into *entries, in
 * file order, checking each offset against the .rec. */
static int read_idx(const char *fn, const char *idx_path, const facet_recordio *r, struct idx_entry **entries,
                    int64_t *count)
{
    *entries = NULL;
    *count = 0;
    FILE *f = fopen(idx_path, "rb");
    if (!f) return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: cannot open: %s", fn, idx_path, strerror(errno));
    struct idx_entry *e = NULL;
    int64_t n = 0, cap = 0, line_no = 0;
    char line[IDX_LINE_MAX];
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        line_no++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: line %lld is longer than %d characters (not a .idx file?)", fn,
                            idx_path, (long long)line_no, IDX_LINE_MAX - 2);
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        /* digits, one tab (or spaces), digits: strtoll alone would take signs and blanks */
        char *p = line, *end;
        if (*p < '0' || *p > '9') goto bad_line;
        errno = 0;
        long long key = strtoll(p, &end, 10);
        if (errno || (*end != '\t' && *end != ' ')) goto bad_line;
        p = end;
        while (*p == '\t' || *p == ' ') p++;
        if (*p < '0' || *p > '9') goto bad_line;
        long long offset = strtoll(p, &end, 10);
        if (errno || *end != '\0') goto bad_line;
        if (offset % 4 != 0 || offset > r->size - 8) {
            rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: line %lld: offset %lld of key %lld is %s (the .rec has %lld "
                            "bytes)", fn, idx_path, (long long)line_no, offset, key,
                            offset % 4 ? "not 4-byte aligned, so not a record start" : "beyond the end of the .rec",
                            (long long)r->size);
            break;
        }
        if (n == cap) {
            int64_t ncap = cap ? 2 * cap : 1024;
            struct idx_entry *ne = realloc(e, (size_t)ncap * sizeof *e);
            if (!ne) { rc = facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", fn, idx_path); break; }
            e = ne;
            cap = ncap;
        }
        e[n].key = key;
        e[n].offset = offset;
        n++;
        continue;
    bad_line:
        rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: line %lld is not \"key<TAB>offset\" with integers >= 0: \"%.60s\"",
                        fn, idx_path, (long long)line_no, line);
        break;
    }
    if (!rc && ferror(f)) rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: read failed", fn, idx_path);
    fclose(f);
    if (rc) { free(e); return rc; }
    *entries = e;
    *count = n;
    return 0;
}

/* ---- the reader ------------------------------------------------------------------------ */

int facet_recordio_free(facet_recordio *r)
{
    if (!r) return 0;
    if (r->fd >= 0) close(r->fd);
    free(r->path);
    free(r->image_key);
    free(r->image_offset);
    free(r->id_first);
    free(r->id_end);
    free(r);
    return 0;
}

static int alloc_images(facet_recordio *r, const char *fn, int64_t n)
{
    r->nimages = n;
    r->image_key = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    r->image_offset = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!r->image_key || !r->image_offset) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    return 0;
}

/* Record 0 said [a, b): images are keys 1..a-1, identities keys a..b-1.
 * sorted holds the .idx by key (unique). */
static int open_insightface(facet_recordio *r, const char *fn, const struct idx_entry *sorted, int64_t n,
                            int64_t a, int64_t b)
{
    /* keys are unique and >= 0, so 0..b-1 are all present iff the b-th smallest is b-1 */
    if (n < b || sorted[b - 1].key != b - 1) {
        int64_t missing = 0;
        while (missing < n && missing < b && sorted[missing].key == missing) missing++;
        return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record 0 describes keys 0..%lld (%lld images, %lld identities) "
                          "but key %lld is missing from the .idx", fn, r->path, (long long)(b - 1),
                          (long long)(a - 1), (long long)(b - a), (long long)missing);
    }
    int rc = alloc_images(r, fn, a - 1);
    if (rc) return rc;
    for (int64_t i = 0; i < a - 1; i++) {
        r->image_key[i] = sorted[i + 1].key;
        r->image_offset[i] = sorted[i + 1].offset;
    }
    r->nidentities = b - a;
    r->id_first = malloc((size_t)(b - a + 1) * sizeof(int64_t));
    r->id_end = malloc((size_t)(b - a + 1) * sizeof(int64_t));
    if (!r->id_first || !r->id_end) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    for (int64_t j = 0; j < b - a; j++) {
        int64_t key = a + j;
        struct image_header h;
        if ((rc = read_header(r, fn, key, sorted[key].offset, &h))) return rc;
        if (h.flag < 2)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: identity %lld (key %lld) has flag %u, want 2 labels "
                              "[first, last+1)", fn, r->path, (long long)j, (long long)key, h.flag);
        if (!integral_in(h.labels[0], 1, (double)a) || !integral_in(h.labels[1], h.labels[0], (double)a))
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: identity %lld (key %lld) has the range [%g, %g), want "
                              "integers with 1 <= first <= end <= %lld", fn, r->path, (long long)j,
                              (long long)key, h.labels[0], h.labels[1], (long long)a);
        r->id_first[j] = (int64_t)h.labels[0] - 1;     /* keys to image indices */
        r->id_end[j] = (int64_t)h.labels[1] - 1;
    }
    return 0;
}

int facet_recordio_init(facet_recordio **out, const char *rec_path, const char *idx_path)
{
    static const char *fn = "facet_recordio_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!rec_path) return facet_fail(FACET_STATUS_ERR_ARG, "%s: rec_path is NULL", fn);
    if (!idx_path) return facet_fail(FACET_STATUS_ERR_ARG, "%s: idx_path is NULL", fn);
    facet_recordio *r = calloc(1, sizeof *r);
    if (!r) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    r->fd = open(rec_path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: cannot open: %s", fn, rec_path, strerror(errno));
        facet_recordio_free(r);
        return rc;
    }
    struct stat st;
    if (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: not a regular file", fn, rec_path);
        facet_recordio_free(r);
        return rc;
    }
    r->size = (int64_t)st.st_size;
    r->path = copy_string(rec_path);
    if (!r->path) {
        facet_recordio_free(r);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    }

    struct idx_entry *entries = NULL, *sorted = NULL;
    int64_t n = 0;
    int rc = read_idx(fn, idx_path, r, &entries, &n);
    if (rc) goto done;
    sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
    if (!sorted) { rc = facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn); goto done; }
    if (n) memcpy(sorted, entries, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, by_key);
    for (int64_t i = 1; i < n; i++) {
        if (sorted[i].key == sorted[i - 1].key) {
            rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: key %lld appears twice", fn, idx_path, (long long)sorted[i].key);
            goto done;
        }
    }

    /* the layout: record 0 with labels [N+1, N+1+identities] makes it InsightFace's */
    struct image_header h0 = { 0 };
    if (n > 0 && sorted[0].key == 0 && (rc = read_header(r, fn, 0, sorted[0].offset, &h0))) goto done;
    if (h0.flag > 0) {
        if (h0.flag < 2 || !integral_in(h0.labels[0], 1, 1e15) || !integral_in(h0.labels[1], h0.labels[0], 1e15)) {
            rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: record 0 has flag %u and labels starting [%g, %g]: not the "
                            "InsightFace header [N+1, N+1+identities] (integers, the second >= the first >= 1)",
                            fn, rec_path, h0.flag, h0.labels[0], h0.flag >= 2 ? h0.labels[1] : 0.0f);
            goto done;
        }
        r->layout = FACET_RECORDIO_LAYOUT_INSIGHTFACE;
        rc = open_insightface(r, fn, sorted, n, (int64_t)h0.labels[0], (int64_t)h0.labels[1]);
    } else {
        r->layout = FACET_RECORDIO_LAYOUT_PLAIN;
        if (!(rc = alloc_images(r, fn, n))) {
            for (int64_t i = 0; i < n; i++) {
                r->image_key[i] = entries[i].key;
                r->image_offset[i] = entries[i].offset;
            }
        }
    }
done:
    free(entries);
    free(sorted);
    if (rc) {
        facet_recordio_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

static int check_reader(const char *fn, const facet_recordio *r)
{
    if (!r) return facet_fail(FACET_STATUS_ERR_ARG, "%s: r is NULL", fn);
    return 0;
}

static int check_image(const char *fn, const facet_recordio *r, int64_t index)
{
    int rc = check_reader(fn, r);
    if (rc) return rc;
    if (index < 0 || index >= r->nimages)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: image index %lld outside [0, %lld)", fn, (long long)index,
                          (long long)r->nimages);
    return 0;
}

int facet_recordio_layout(const facet_recordio *r, int *layout)
{
    int rc = check_reader("facet_recordio_layout", r);
    if (rc) return rc;
    if (!layout) return facet_fail(FACET_STATUS_ERR_ARG, "facet_recordio_layout: layout is NULL");
    *layout = r->layout;
    return 0;
}

int facet_recordio_num_images(const facet_recordio *r, int64_t *count)
{
    int rc = check_reader("facet_recordio_num_images", r);
    if (rc) return rc;
    if (!count) return facet_fail(FACET_STATUS_ERR_ARG, "facet_recordio_num_images: count is NULL");
    *count = r->nimages;
    return 0;
}

int facet_recordio_num_identities(const facet_recordio *r, int64_t *count)
{
    int rc = check_reader("facet_recordio_num_identities", r);
    if (rc) return rc;
    if (!count) return facet_fail(FACET_STATUS_ERR_ARG, "facet_recordio_num_identities: count is NULL");
    *count = r->nidentities;
    return 0;
}

int facet_recordio_image_info(const facet_recordio *r, int64_t index, int64_t *key, int64_t *label, int64_t *nbytes)
{
    static const char *fn = "facet_recordio_image_info";
    int rc = check_image(fn, r, index);
    if (rc) return rc;
    int64_t k = r->image_key[index];
    if (key) *key = k;
    if (!label && !nbytes) return 0;
    struct image_header h;
    if ((rc = read_header(r, fn, k, r->image_offset[index], &h))) return rc;
    if (label) {
        if (!integral_in(h.labels[0], 0, 2147483647.0))
            return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: image %lld (key %lld) has the label %g, want an integer in "
                              "[0, 2^31)", fn, r->path, (long long)index, (long long)k, h.labels[0]);
        *label = (int64_t)h.labels[0];
    }
    if (nbytes) *nbytes = h.payload - h.image_at;
    return 0;
}

int facet_recordio_read_image(const facet_recordio *r, int64_t index, void *dst, size_t capacity, int64_t *nbytes)
{
    static const char *fn = "facet_recordio_read_image";
    int rc = check_image(fn, r, index);
    if (rc) return rc;
    if (!dst && capacity > 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: dst is NULL", fn);
    if (!nbytes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: nbytes is NULL", fn);
    int64_t key = r->image_key[index], offset = r->image_offset[index], total;
    struct image_header h;
    if ((rc = read_header(r, fn, key, offset, &h))) return rc;
    int64_t size = h.payload - h.image_at;
    if ((uint64_t)size > (uint64_t)capacity)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: image %lld has %lld bytes, more than the capacity %zu", fn,
                          (long long)index, (long long)size, capacity);
    if ((rc = record_walk(r, fn, key, offset, &total, h.image_at, size, dst))) return rc;
    *nbytes = size;
    return 0;
}

int facet_recordio_identity(const facet_recordio *r, int64_t identity, int64_t *first, int64_t *end)
{
    static const char *fn = "facet_recordio_identity";
    int rc = check_reader(fn, r);
    if (rc) return rc;
    if (!first || !end) return facet_fail(FACET_STATUS_ERR_ARG, "%s: first or end is NULL", fn);
    if (identity < 0 || identity >= r->nidentities)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: identity %lld outside [0, %lld)%s", fn, (long long)identity,
                          (long long)r->nidentities,
                          r->layout == FACET_RECORDIO_LAYOUT_PLAIN ? " (a plain RecordIO file has no identity records)" : "");
    *first = r->id_first[identity];
    *end = r->id_end[identity];
    return 0;
}

/* ---- the writer ------------------------------------------------------------------------ */

int facet_recordio_writer_init(facet_recordio_writer **out, const char *rec_path, const char *idx_path)
{
    static const char *fn = "facet_recordio_writer_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!rec_path) return facet_fail(FACET_STATUS_ERR_ARG, "%s: rec_path is NULL", fn);
    if (!idx_path) return facet_fail(FACET_STATUS_ERR_ARG, "%s: idx_path is NULL", fn);
    facet_recordio_writer *w = calloc(1, sizeof *w);
    if (!w) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    w->path = copy_string(rec_path);
    w->rec = fopen(rec_path, "wb");
    int rc = 0;
    if (!w->path) rc = facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    else if (!w->rec) rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: cannot open for writing: %s", fn, rec_path, strerror(errno));
    else if (!(w->idx = fopen(idx_path, "wb")))
        rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: cannot open for writing: %s", fn, idx_path, strerror(errno));
    if (rc) {
        if (w->rec) fclose(w->rec);
        free(w->path);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* One part: magic, lrec, bytes (the caller pads the record's last part). */
static bool write_part(facet_recordio_writer *w, uint32_t cflag, const uint8_t *p, uint32_t len)
{
    uint8_t head[8];
    memcpy(head, MAGIC_BYTES, 4);
    put32(head + 4, cflag << 29 | len);
    if (fwrite(head, 1, 8, w->rec) != 8 || (len && fwrite(p, 1, len, w->rec) != len)) return false;
    w->pos += 8 + len;
    return true;
}

int facet_recordio_write(facet_recordio_writer *w, int64_t key, const float *labels, int nlabels, const void *data,
                         size_t nbytes)
{
    static const char *fn = "facet_recordio_write";
    if (!w) return facet_fail(FACET_STATUS_ERR_ARG, "%s: w is NULL", fn);
    if (!w->rec) return facet_fail(FACET_STATUS_ERR_ARG, "%s: the writer failed earlier and cannot go on", fn);
    if (key < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: key %lld is negative", fn, (long long)key);
    if (nlabels < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: nlabels %d is negative", fn, nlabels);
    if (nlabels > 0 && !labels) return facet_fail(FACET_STATUS_ERR_ARG, "%s: labels is NULL", fn);
    if (nbytes > 0 && !data) return facet_fail(FACET_STATUS_ERR_ARG, "%s: data is NULL", fn);
    for (int i = 0; i < nlabels; i++)
        if (!isfinite(labels[i])) return facet_fail(FACET_STATUS_ERR_ARG, "%s: label %d is not finite", fn, i);
    int extra = nlabels >= 2 ? nlabels : 0;
    if (nbytes > (size_t)FACET_RECORDIO_MAX_PAYLOAD ||
        (int64_t)nbytes + HEADER_BYTES + 4 * (int64_t)extra > FACET_RECORDIO_MAX_PAYLOAD)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: record of key %lld is too large: %zu image bytes and %d labels "
                          "exceed RecordIO's %d bytes", fn, (long long)key, nbytes, extra, FACET_RECORDIO_MAX_PAYLOAD);

    /* the payload as mx.recordio.pack lays it out */
    size_t len = HEADER_BYTES + 4 * (size_t)extra + nbytes;
    uint8_t *buf = malloc(len);
    if (!buf) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory (%zu bytes)", fn, len);
    float label = nlabels == 1 ? labels[0] : 0.0f;
    uint32_t label_bits;
    memcpy(&label_bits, &label, 4);
    put32(buf, (uint32_t)extra);
    put32(buf + 4, label_bits);
    put64(buf + 8, (uint64_t)key);
    put64(buf + 16, 0);
    for (int i = 0; i < extra; i++) {
        uint32_t bits;
        memcpy(&bits, &labels[i], 4);
        put32(buf + HEADER_BYTES + 4 * i, bits);
    }
    if (nbytes) memcpy(buf + HEADER_BYTES + 4 * extra, data, nbytes);

    /* split wherever the magic sits at an aligned offset, as dmlc-core's WriteRecord */
    int64_t start = w->pos;
    bool ok = true;
    uint32_t done = 0;
    for (uint32_t i = 0; ok && i + 4 <= len; i += 4) {
        if (memcmp(buf + i, MAGIC_BYTES, 4) == 0) {
            ok = write_part(w, done == 0 ? 1 : 2, buf + done, i - done);
            done = i + 4;
        }
    }
    if (ok) ok = write_part(w, done == 0 ? 0 : 3, buf + done, (uint32_t)len - done);
    static const uint8_t zeros[4] = { 0 };
    size_t pad = (4 - len % 4) % 4;
    if (ok && pad) {
        ok = fwrite(zeros, 1, pad, w->rec) == pad;
        w->pos += (int64_t)pad;
    }
    free(buf);
    if (ok) ok = fprintf(w->idx, "%lld\t%lld\n", (long long)key, (long long)start) > 0;
    if (!ok) {
        /* a half-written record would shift every later offset: stop here */
        int rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: write failed: %s", fn, w->path, strerror(errno));
        fclose(w->rec);
        w->rec = NULL;
        return rc;
    }
    return 0;
}

int facet_recordio_writer_free(facet_recordio_writer *w)
{
    static const char *fn = "facet_recordio_writer_free";
    if (!w) return 0;
    int rc = 0;
    if (w->rec && fclose(w->rec) != 0)
        rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: closing failed: %s", fn, w->path, strerror(errno));
    if (w->idx && fclose(w->idx) != 0 && !rc)
        rc = facet_fail(FACET_STATUS_ERR_IO, "%s: closing the .idx of %s failed: %s", fn, w->path, strerror(errno));
    free(w->path);
    free(w);
    return rc;
}
