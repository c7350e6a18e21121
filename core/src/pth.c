/*
 * pth.c - PyTorch checkpoints (torch.save, PyTorch >= 1.6): a zip archive
 * holding <dir>/data.pkl, a pickle of the state dict, and <dir>/data/<key>,
 * the raw bytes of each storage. This file reads the zip's central directory,
 * runs the restricted pickle reader (pickle.c) over data.pkl with an
 * allow-list of PyTorch's globals (collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, the
 * storage types) and the persistent-id storage records, and keeps, for each
 * tensor of the state dict, its name, dtype, sizes, strides and where its
 * storage lies. Every size, offset and stride is checked against the file
 * before anything is allocated; nothing in the file is ever executed. The
 * tensors' bytes are read on request with pread(). The legacy format of
 * PyTorch < 1.6 (torch.save(..., _use_new_zipfile_serialization=False)) is
 * read too: four pickles (magic number, protocol 1001, system info, the
 * state dict), the list of storage keys, then each storage as an 8-byte
 * element count and its bytes. Compressed zip entries and the older tar
 * format are refused with a message that says so.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "pickle.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A name longer than this is no state dict's; 1 << 20 entries no model's. */
enum { NAME_CAP = 1024, MAX_ENTRIES = 1 << 20, EOCD_SEARCH = 65557 };

/* The storage types: what the file holds, and the dtype facet gives it. */
enum stype { S_FLOAT, S_DOUBLE, S_HALF, S_BFLOAT16, S_LONG, S_INT, S_SHORT, S_CHAR, S_BYTE, S_BOOL, S_COUNT };
static const struct {
    const char *name;
    int size;                 /* bytes per element in the file */
    int dtype;                /* what facet reads it as */
} STYPES[S_COUNT] = {
    { "FloatStorage", 4, FACET_DTYPE_FLOAT32 }, { "DoubleStorage", 8, FACET_DTYPE_FLOAT32 },
    { "HalfStorage", 2, FACET_DTYPE_FLOAT32 },  { "BFloat16Storage", 2, FACET_DTYPE_FLOAT32 },
    { "LongStorage", 8, FACET_DTYPE_INT64 },    { "IntStorage", 4, FACET_DTYPE_INT32 },
    { "ShortStorage", 2, FACET_DTYPE_INT32 },   { "CharStorage", 1, FACET_DTYPE_INT32 },
    { "ByteStorage", 1, FACET_DTYPE_UINT8 },    { "BoolStorage", 1, FACET_DTYPE_UINT8 },
};

struct entry {                /* one stored member of the zip */
    char *name;
    int64_t data_off, size;
    int method;
};

struct tensor_rec {           /* one tensor of the state dict */
    char *name;
    int stype;
    int ndim;
    int64_t sizes[FACET_MAX_DIMS], strides[FACET_MAX_DIMS];
    int64_t numel;
    int64_t first, last;      /* the elements of the storage it spans (last < first when empty) */
    int64_t data_off;         /* the storage's first byte in the file */
    const struct storage *src;   /* while parsing: its storage (a legacy file places it last) */
};

struct facet_pth {
    int fd;
    char *path;
    int64_t count;
    struct tensor_rec *t;
};

/* ---- the zip: its central directory ----------------------------------------------------- */

static uint64_t le(const uint8_t *b, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

struct zip {
    struct entry *e;
    int64_t n;
    char prefix[NAME_CAP];    /* "archive/": the directory that holds data.pkl */
    int64_t pkl;              /* data.pkl's index */
};

static void zip_free(struct zip *z)
{
    for (int64_t i = 0; i < z->n; i++) free(z->e[i].name);
    free(z->e);
}

#define ZFAIL(...) facet_fail(FACET_STATUS_ERR_IO, __VA_ARGS__)

/* The end of central directory record (zip64's when the counts overflow):
 * entry count, directory offset and size. */
static int find_directory(int fd, const char *fn, const char *path, int64_t fsize, int64_t *count, int64_t *cd_off,
                          int64_t *cd_size)
{
    int64_t tail = fsize < EOCD_SEARCH ? fsize : EOCD_SEARCH;
    uint8_t *buf = malloc(tail > 0 ? (size_t)tail : 1);
    if (!buf) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", fn, path);
    int rc = facet_pread_full(fd, fn, path, buf, tail, fsize - tail);
    int64_t at = -1;
    for (int64_t i = tail - 22; !rc && i >= 0; i--)
        if (le(buf + i, 4) == 0x06054b50) {
            at = i;
            break;
        }
    uint8_t first[2] = { 0, 0 };
    if (!rc && at < 0 && fsize >= 2) rc = facet_pread_full(fd, fn, path, first, 2, 0);
    if (!rc && at < 0) {
        if (first[0] == 0x80 && first[1] >= 2 && first[1] <= 5)
            rc = ZFAIL("%s: %s: a pickle without PyTorch's legacy magic number: not a file of torch.save", fn, path);
        else
            rc = ZFAIL("%s: %s: not a PyTorch .pth zip (no end of central directory record: truncated or not a zip)",
                       fn, path);
    }
    if (!rc) {
        const uint8_t *r = buf + at;
        *count = (int64_t)le(r + 10, 2);
        *cd_size = (int64_t)le(r + 12, 4);
        *cd_off = (int64_t)le(r + 16, 4);
        if (*count == 0xffff || *cd_size == 0xffffffff || *cd_off == 0xffffffff) {
            /* zip64: the locator sits just before the record */
            int64_t loc = fsize - tail + at - 20;
            uint8_t l[20], z[56];
            if (loc < 0) rc = ZFAIL("%s: %s: a zip64 directory without its locator", fn, path);
            if (!rc) rc = facet_pread_full(fd, fn, path, l, 20, loc);
            if (!rc && le(l, 4) != 0x07064b50) rc = ZFAIL("%s: %s: a zip64 directory without its locator", fn, path);
            int64_t zoff = rc ? 0 : (int64_t)le(l + 8, 8);
            if (!rc && (zoff < 0 || zoff > fsize - 56)) rc = ZFAIL("%s: %s: the zip64 record lies outside the file", fn, path);
            if (!rc) rc = facet_pread_full(fd, fn, path, z, 56, zoff);
            if (!rc && le(z, 4) != 0x06064b50) rc = ZFAIL("%s: %s: no zip64 end of central directory record", fn, path);
            if (!rc) {
                uint64_t c = le(z + 32, 8), s = le(z + 40, 8), o = le(z + 48, 8);
                if (c > (uint64_t)MAX_ENTRIES || s > (uint64_t)fsize || o > (uint64_t)fsize)
                    rc = ZFAIL("%s: %s: the zip64 directory (%llu entries, %llu bytes at %llu) does not fit the file "
                               "(%lld bytes)", fn, path, (unsigned long long)c, (unsigned long long)s,
                               (unsigned long long)o, (long long)fsize);
                *count = (int64_t)c;
                *cd_size = (int64_t)s;
                *cd_off = (int64_t)o;
            }
        }
    }
    if (!rc && (*cd_off > fsize || *cd_size > fsize - *cd_off))
        rc = ZFAIL("%s: %s: the zip directory (%lld bytes at %lld) runs past the end of the file (%lld bytes)", fn,
                   path, (long long)*cd_size, (long long)*cd_off, (long long)fsize);
    if (!rc && *count > MAX_ENTRIES) rc = ZFAIL("%s: %s: %lld zip entries", fn, path, (long long)*count);
    free(buf);
    return rc;
}

/* The zip64 extra field's sizes and offset where the entry's are 0xffffffff. */
static int zip64_extra(const uint8_t *x, int64_t xlen, uint64_t *usize, uint64_t *csize, uint64_t *off)
{
    for (int64_t i = 0; i + 4 <= xlen;) {
        uint64_t id = le(x + i, 2), len = le(x + i + 2, 2);
        if ((int64_t)len > xlen - i - 4) return -1;
        if (id == 1) {
            const uint8_t *f = x + i + 4;
            uint64_t k = 0;
            uint64_t *want[3] = { usize, csize, off };
            for (int j = 0; j < 3; j++) {
                if (*want[j] != 0xffffffff) continue;
                if (k + 8 > len) return -1;
                *want[j] = le(f + k, 8);
                k += 8;
            }
            return 0;
        }
        i += 4 + (int64_t)len;
    }
    return 0;
}

static int read_zip(int fd, const char *fn, const char *path, int64_t fsize, struct zip *z)
{
    int64_t count = 0, cd_off = 0, cd_size = 0;
    int rc = find_directory(fd, fn, path, fsize, &count, &cd_off, &cd_size);
    if (rc) return rc;
    uint8_t *cd = malloc(cd_size > 0 ? (size_t)cd_size : 1);
    z->e = calloc(count > 0 ? (size_t)count : 1, sizeof *z->e);
    if (!cd || !z->e) {
        free(cd);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", fn, path);
    }
    rc = facet_pread_full(fd, fn, path, cd, cd_size, cd_off);
    int64_t at = 0;
    z->pkl = -1;
    for (int64_t i = 0; !rc && i < count; i++) {
        if (at + 46 > cd_size || le(cd + at, 4) != 0x02014b50) {
            rc = ZFAIL("%s: %s: zip directory entry %lld is malformed", fn, path, (long long)i);
            break;
        }
        const uint8_t *h = cd + at;
        int method = (int)le(h + 10, 2), flags = (int)le(h + 8, 2);
        uint64_t csize = le(h + 20, 4), usize = le(h + 24, 4), off = le(h + 42, 4);
        int64_t nlen = (int64_t)le(h + 28, 2), xlen = (int64_t)le(h + 30, 2), clen = (int64_t)le(h + 32, 2);
        if (at + 46 + nlen + xlen + clen > cd_size) {
            rc = ZFAIL("%s: %s: zip directory entry %lld runs past the directory", fn, path, (long long)i);
            break;
        }
        if (zip64_extra(h + 46 + nlen, xlen, &usize, &csize, &off)) {
            rc = ZFAIL("%s: %s: zip directory entry %lld has a malformed zip64 field", fn, path, (long long)i);
            break;
        }
        struct entry *e = &z->e[z->n];
        if (!(e->name = malloc((size_t)nlen + 1))) {
            rc = facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", fn, path);
            break;
        }
        z->n++;
        memcpy(e->name, h + 46, (size_t)nlen);
        e->name[nlen] = '\0';
        if (strlen(e->name) != (size_t)nlen) {
            rc = ZFAIL("%s: %s: a zip entry's name holds a NUL byte", fn, path);
            break;
        }
        e->method = method;
        if (flags & 1) {
            rc = ZFAIL("%s: %s: zip entry %s is encrypted", fn, path, e->name);
            break;
        }
        /* the local header: its own name and extra lengths put the data after it */
        uint8_t lh[30];
        if (off > (uint64_t)fsize - 30 || fsize < 30) {
            rc = ZFAIL("%s: %s: zip entry %s starts past the end of the file", fn, path, e->name);
            break;
        }
        if ((rc = facet_pread_full(fd, fn, path, lh, 30, (int64_t)off))) break;
        if (le(lh, 4) != 0x04034b50) {
            rc = ZFAIL("%s: %s: zip entry %s has no local header at byte %llu", fn, path, e->name,
                       (unsigned long long)off);
            break;
        }
        uint64_t data = off + 30 + le(lh + 26, 2) + le(lh + 28, 2);
        if (csize > (uint64_t)fsize || data > (uint64_t)fsize - csize) {
            rc = ZFAIL("%s: %s: zip entry %s (%llu bytes at byte %llu) runs past the end of the file (%lld bytes): "
                       "the file is truncated", fn, path, e->name, (unsigned long long)csize, (unsigned long long)data,
                       (long long)fsize);
            break;
        }
        if (method == 0 && csize != usize) {
            rc = ZFAIL("%s: %s: stored zip entry %s has %llu bytes, and says %llu uncompressed", fn, path, e->name,
                       (unsigned long long)csize, (unsigned long long)usize);
            break;
        }
        e->data_off = (int64_t)data;
        e->size = (int64_t)csize;
        size_t len = strlen(e->name);
        const char *slash = strchr(e->name, '/');
        if (z->pkl < 0 && slash && len >= 9 && !strcmp(e->name + len - 9, "/data.pkl") &&
            slash == e->name + len - 9 && len - 8 < NAME_CAP) {
            z->pkl = z->n - 1;
            memcpy(z->prefix, e->name, len - 8);
            z->prefix[len - 8] = '\0';
        }
        at += 46 + nlen + xlen + clen;
    }
    free(cd);
    if (!rc && z->pkl < 0)
        rc = ZFAIL("%s: %s: a zip without <dir>/data.pkl: not a checkpoint of torch.save", fn, path);
    if (!rc && z->e[z->pkl].method != 0)
        rc = ZFAIL("%s: %s: %s is compressed (zip method %d): torch.save stores its entries; only stored entries are "
                   "read", fn, path, z->e[z->pkl].name, z->e[z->pkl].method);
    return rc;
}

/* ---- the pickle: PyTorch's globals and storage records ------------------------------------ */

enum { K_TENSOR = FACET_PICKLE_USER, K_STORAGE };
enum { G_ODICT = 1, G_REBUILD_TENSOR = 2, G_REBUILD_PARAMETER = 3, G_STORAGE = 100 /* + stype */ };

static const struct facet_pickle_global pth_globals[] = {
    { "collections", "OrderedDict", G_ODICT },
    { "torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR },
    { "torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER },
    { "torch", "FloatStorage", G_STORAGE + S_FLOAT },
    { "torch", "DoubleStorage", G_STORAGE + S_DOUBLE },
    { "torch", "HalfStorage", G_STORAGE + S_HALF },
    { "torch", "BFloat16Storage", G_STORAGE + S_BFLOAT16 },
    { "torch", "LongStorage", G_STORAGE + S_LONG },
    { "torch", "IntStorage", G_STORAGE + S_INT },
    { "torch", "ShortStorage", G_STORAGE + S_SHORT },
    { "torch", "CharStorage", G_STORAGE + S_CHAR },
    { "torch", "ByteStorage", G_STORAGE + S_BYTE },
    { "torch", "BoolStorage", G_STORAGE + S_BOOL },
    { NULL, NULL, 0 },
};

static const char *const pth_kinds[] = { "a tensor", "a storage" };

struct storage {
    int stype;
    int64_t numel, data_off;  /* data_off -1: not placed yet (legacy) */
    char key[64];
};

struct ptensor {
    struct tensor_rec r;
};

/* A storage record ('storage', <type>, key, location, numel) (a legacy file
 * adds view metadata, None) as a new storage of the tree, not placed yet. */
static int storage_record(struct facet_pickle *p, const struct facet_pickle_value *pid, int64_t want_n,
                          struct facet_pickle_value *out)
{
    if (pid->kind != FACET_PICKLE_TUPLE || pid->obj->n != want_n)
        return facet_pickle_fail(p, "a persistent id is %s, want the storage record ('storage', type, key, location, "
                                 "numel%s)", pid->kind == FACET_PICKLE_TUPLE ? "a tuple of another length" :
                                 facet_pickle_kind_name(p, pid->kind), want_n == 6 ? ", view" : "");
    const struct facet_pickle_value *a = pid->obj->items;
    char tag[16];
    int rc;
    if (a[0].kind != FACET_PICKLE_TEXT || (rc = facet_pickle_text(p, &a[0], tag, sizeof tag)) || strcmp(tag, "storage"))
        return facet_pickle_fail(p, "a persistent id that is not a storage record");
    if (a[1].kind != FACET_PICKLE_GLOBAL || a[1].num < G_STORAGE || a[1].num >= G_STORAGE + S_COUNT)
        return facet_pickle_fail(p, "a storage record whose type is %s, not a storage type",
                                 facet_pickle_kind_name(p, a[1].kind));
    if (a[2].kind != FACET_PICKLE_TEXT || a[2].len >= (int64_t)sizeof ((struct storage *)0)->key)
        return facet_pickle_fail(p, "a storage record whose key is not a short str");
    if (want_n == 6 && a[5].kind != FACET_PICKLE_NONE)
        return facet_pickle_fail(p, "a storage view (legacy view metadata) is not supported");
    struct facet_pickle_obj *o = NULL;
    if ((rc = facet_pickle_new_object(p, sizeof(struct storage), &o))) return rc;
    struct storage *s = o->ext;
    if ((rc = facet_pickle_text(p, &a[2], s->key, sizeof s->key))) return rc;
    if (a[4].kind != FACET_PICKLE_INT || a[4].num < 0)
        return facet_pickle_fail(p, "storage %s: its element count is not an int >= 0", s->key);
    s->stype = (int)(a[1].num - G_STORAGE);
    s->numel = a[4].num;
    s->data_off = -1;
    struct facet_pickle_value v = { K_STORAGE, 0, 0, 0, o };
    *out = v;
    return 0;
}

/* BINPERSID in a zip: the record names <dir>/data/<key>, which must hold it. */
static int pth_persistent(struct facet_pickle *p, const struct facet_pickle_value *pid, struct facet_pickle_value *out)
{
    const struct zip *z = facet_pickle_user(p);
    int rc = storage_record(p, pid, 5, out);
    if (rc) return rc;
    struct storage *s = out->obj->ext;
    char want[NAME_CAP + 80];
    snprintf(want, sizeof want, "%sdata/%s", z->prefix, s->key);
    const struct entry *e = NULL;
    for (int64_t i = 0; i < z->n && !e; i++)
        if (!strcmp(z->e[i].name, want)) e = &z->e[i];
    if (!e) return facet_pickle_fail(p, "storage %s: the zip has no entry %s", s->key, want);
    if (e->method != 0)
        return facet_pickle_fail(p, "storage %s: %s is compressed (zip method %d); only stored entries are read", s->key,
                                 want, e->method);
    int64_t es = STYPES[s->stype].size;
    if (s->numel > e->size / es)
        return facet_pickle_fail(p, "storage %s: %lld elements of %s (%lld bytes each) do not fit its %lld bytes",
                                 s->key, (long long)s->numel, STYPES[s->stype].name, (long long)es, (long long)e->size);
    s->data_off = e->data_off;
    return 0;
}

/* The storages of a legacy file, in the order of their records. */
struct legacy {
    struct storage **s;
    int64_t n, cap;
};

static int legacy_persistent(struct facet_pickle *p, const struct facet_pickle_value *pid, struct facet_pickle_value *out)
{
    struct legacy *l = facet_pickle_user(p);
    int rc = storage_record(p, pid, 6, out);
    if (rc) return rc;
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        if (cap > MAX_ENTRIES) return facet_pickle_fail(p, "more than %d storage records", MAX_ENTRIES);
        struct storage **ns = realloc(l->s, (size_t)cap * sizeof *ns);
        if (!ns) return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_pth_init: out of memory");
        l->s = ns;
        l->cap = cap;
    }
    l->s[l->n++] = out->obj->ext;
    return 0;
}

/* a tuple of ints >= 0, at most FACET_MAX_DIMS of them */
static int int_tuple(struct facet_pickle *p, const struct facet_pickle_value *v, const char *what, int64_t *dst, int *n)
{
    if (v->kind != FACET_PICKLE_TUPLE) return facet_pickle_fail(p, "a tensor's %s is %s, not a tuple", what,
                                                                facet_pickle_kind_name(p, v->kind));
    if (v->obj->n > FACET_MAX_DIMS)
        return facet_pickle_fail(p, "a tensor of %lld dims (facet takes up to %d)", (long long)v->obj->n, FACET_MAX_DIMS);
    for (int64_t i = 0; i < v->obj->n; i++) {
        const struct facet_pickle_value *x = &v->obj->items[i];
        if (x->kind != FACET_PICKLE_INT || x->num < 0)
            return facet_pickle_fail(p, "a tensor's %s holds %s, not an int >= 0", what, facet_pickle_kind_name(p, x->kind));
        dst[i] = x->num;
    }
    *n = (int)v->obj->n;
    return 0;
}

/* _rebuild_tensor_v2(storage, offset, sizes, strides, requires_grad, hooks[, metadata]) */
static int rebuild_tensor(struct facet_pickle *p, const struct facet_pickle_obj *a, struct facet_pickle_value *out)
{
    if (a->n < 6 || a->n > 7)
        return facet_pickle_fail(p, "_rebuild_tensor_v2 with %lld arguments (want 6 or 7)", (long long)a->n);
    if (a->items[0].kind != K_STORAGE)
        return facet_pickle_fail(p, "_rebuild_tensor_v2 over %s, not a storage", facet_pickle_kind_name(p, a->items[0].kind));
    if (a->items[1].kind != FACET_PICKLE_INT || a->items[1].num < 0)
        return facet_pickle_fail(p, "_rebuild_tensor_v2: the storage offset is not an int >= 0");
    const struct storage *s = a->items[0].obj->ext;
    struct facet_pickle_obj *o = NULL;
    int rc = facet_pickle_new_object(p, sizeof(struct ptensor), &o);
    if (rc) return rc;
    struct tensor_rec *r = &((struct ptensor *)o->ext)->r;
    int ns = 0;
    if ((rc = int_tuple(p, &a->items[2], "size", r->sizes, &r->ndim)) ||
        (rc = int_tuple(p, &a->items[3], "stride", r->strides, &ns)))
        return rc;
    if (ns != r->ndim) return facet_pickle_fail(p, "a tensor of %d sizes and %d strides", r->ndim, ns);
    r->stype = s->stype;
    r->src = s;
    r->first = a->items[1].num;
    /* numel and the last element it reaches, without overflow: both must stay within the storage */
    int64_t numel = 1, last = r->first;
    for (int i = 0; i < r->ndim; i++) {
        if (r->sizes[i] == 0) numel = 0;
        else if (numel && r->sizes[i] > s->numel / numel) numel = -1;
        if (numel < 0) break;
        if (numel) numel *= r->sizes[i];
    }
    for (int i = 0; numel > 0 && i < r->ndim; i++) {
        int64_t d = r->sizes[i] - 1;
        if (d > 0 && r->strides[i] > (s->numel - last) / d) {
            last = -1;
            break;
        }
        last += d * r->strides[i];
    }
    char shape[160];
    int k = snprintf(shape, sizeof shape, "(");
    for (int i = 0; i < r->ndim && k < (int)sizeof shape - 24; i++)
        k += snprintf(shape + k, sizeof shape - (size_t)k, i ? ", %lld" : "%lld", (long long)r->sizes[i]);
    snprintf(shape + k, sizeof shape - (size_t)k, ")");
    if (numel < 0 || (numel > 0 && (last < 0 || last >= s->numel)))
        return facet_pickle_fail(p, "a tensor of size %s at offset %lld reaches past its storage of %lld elements",
                                 shape, (long long)r->first, (long long)s->numel);
    r->numel = numel;
    r->last = numel > 0 ? last : r->first - 1;
    struct facet_pickle_value v = { K_TENSOR, 0, 0, 0, o };
    *out = v;
    return 0;
}

static int pth_reduce(struct facet_pickle *p, const struct facet_pickle_value *callable, const struct facet_pickle_obj *a,
                      struct facet_pickle_value *out)
{
    struct facet_pickle_obj *o = NULL;
    int rc;
    switch (callable->num) {
    case G_ODICT: {
        if (a->n != 0) return facet_pickle_fail(p, "OrderedDict is called with %lld arguments (want none)", (long long)a->n);
        if ((rc = facet_pickle_new_object(p, 0, &o))) return rc;
        struct facet_pickle_value v = { FACET_PICKLE_DICT, 0, 0, 0, o };
        *out = v;
        return 0;
    }
    case G_REBUILD_TENSOR: return rebuild_tensor(p, a, out);
    case G_REBUILD_PARAMETER:
        if (a->n < 1 || a->items[0].kind != K_TENSOR)
            return facet_pickle_fail(p, "_rebuild_parameter without a tensor as its first argument");
        *out = a->items[0];
        return 0;
    default: return facet_pickle_fail(p, "a storage type is called directly");
    }
}

/* BUILD: an OrderedDict's state (its _metadata) says nothing about the tensors */
static int pth_build(struct facet_pickle *p, struct facet_pickle_value *target, const struct facet_pickle_value *state)
{
    if (target->kind != FACET_PICKLE_DICT)
        return facet_pickle_fail(p, "BUILD on %s", facet_pickle_kind_name(p, target->kind));
    return 0;
}

static const struct facet_pickle_format pth_format = {
    "a PyTorch checkpoint",
    "only dicts of tensors (a state dict)",
    "only collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the storage "
    "types (torch.FloatStorage ...)",
    pth_globals, pth_kinds, 2, pth_reduce, pth_build,
};

/* ---- from the tree to the handle ---------------------------------------------------------- */

/* the value under text key `key` in dict d, or NULL */
static const struct facet_pickle_value *dict_get(struct facet_pickle *p, const struct facet_pickle_value *d,
                                                 const char *key)
{
    char k[64];
    for (int64_t i = 0; i + 1 < d->obj->n; i += 2) {
        const struct facet_pickle_value *kv = &d->obj->items[i];
        if (kv->kind == FACET_PICKLE_TEXT && kv->len < (int64_t)sizeof k && !facet_pickle_text(p, kv, k, sizeof k) &&
            !strcmp(k, key))
            return &d->obj->items[i + 1];
    }
    return NULL;
}

static int collect(struct facet_pickle *p, const struct facet_pickle_value *top, facet_pth *h)
{
    if (top->kind != FACET_PICKLE_DICT)
        return facet_pickle_fail(p, "the checkpoint holds %s, want a state dict (a dict of tensors)",
                                 facet_pickle_kind_name(p, top->kind));
    /* a dict that wraps the state dict: the first of these keys that holds a dict */
    static const char *const wraps[] = { "state_dict", "model", "state_dict_backbone", "backbone" };
    const struct facet_pickle_value *d = top;
    for (size_t i = 0; i < sizeof wraps / sizeof wraps[0] && d == top; i++) {
        const struct facet_pickle_value *w = dict_get(p, top, wraps[i]);
        if (w && w->kind == FACET_PICKLE_DICT) d = w;
    }
    int64_t n = d->obj->n / 2;
    h->t = calloc(n > 0 ? (size_t)n : 1, sizeof *h->t);
    if (!h->t) return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_pth_init: out of memory reading %s", h->path);
    int strip = n > 0;        /* DDP's "module." on every name */
    for (int64_t i = 0; i < n; i++) {
        const struct facet_pickle_value *k = &d->obj->items[2 * i], *v = &d->obj->items[2 * i + 1];
        if (k->kind != FACET_PICKLE_TEXT)
            return facet_pickle_fail(p, "the state dict has a key that is %s, not a str", facet_pickle_kind_name(p, k->kind));
        char name[NAME_CAP];
        int rc = facet_pickle_text(p, k, name, sizeof name);
        if (rc) return rc;
        if (strlen(name) != (size_t)k->len) return facet_pickle_fail(p, "a state dict key holds a NUL byte");
        for (char *c = name; *c; c++)
            if ((unsigned char)*c < 32 || *c == 127) *c = '?';
        if (v->kind != K_TENSOR)
            return facet_pickle_fail(p, "the state dict's '%s' is %s, not a tensor", name, facet_pickle_kind_name(p, v->kind));
        h->t[i] = ((const struct ptensor *)v->obj->ext)->r;
        h->t[i].data_off = h->t[i].src->data_off;
        h->t[i].src = NULL;
        if (h->t[i].data_off < 0) return facet_pickle_fail(p, "the storage of '%s' is not in the file", name);
        if (!(h->t[i].name = malloc((size_t)k->len + 1)))
            return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_pth_init: out of memory reading %s", h->path);
        memcpy(h->t[i].name, name, (size_t)k->len + 1);
        h->count = i + 1;
        if (strncmp(name, "module.", 7)) strip = 0;
    }
    if (strip)
        for (int64_t i = 0; i < n; i++) memmove(h->t[i].name, h->t[i].name + 7, strlen(h->t[i].name + 7) + 1);
    return 0;
}

int facet_pth_free(facet_pth *h)
{
    if (!h) return 0;
    for (int64_t i = 0; i < h->count; i++) free(h->t[i].name);
    free(h->t);
    if (h->fd >= 0) close(h->fd);
    free(h->path);
    free(h);
    return 0;
}

static int read_zipped(facet_pth *h, const char *fn, int64_t size)
{
    struct zip z = { 0 };
    int rc = read_zip(h->fd, fn, h->path, size, &z);
    if (!rc) {
        struct facet_pickle *p = NULL;
        struct facet_pickle_value top = { 0 };
        struct facet_pickle_extras x = { 1, pth_persistent, &z };
        const struct entry *e = &z.e[z.pkl];
        rc = facet_pickle_parse_range(&p, &top, &pth_format, &x, h->fd, e->data_off, e->size, fn, h->path);
        if (!rc) rc = collect(p, &top, h);
        facet_pickle_free(p);
    }
    zip_free(&z);
    return rc;
}

/* The first pickle of a legacy file: the magic number 0x1950a86a20f9469cfc6c as LONG1. */
static const uint8_t LEGACY_MAGIC[15] = { 0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50,
                                          0x19, 0x2e };

/* One pickle of a legacy file from *at; *at moves past it. */
static int legacy_pickle(facet_pth *h, const char *fn, int64_t size, int64_t *at, const struct facet_pickle_extras *x,
                         struct facet_pickle **p, struct facet_pickle_value *top)
{
    int rc = facet_pickle_parse_range(p, top, &pth_format, x, h->fd, *at, size - *at, fn, h->path);
    if (!rc) *at += facet_pickle_end(*p);
    return rc;
}

static int read_legacy(facet_pth *h, const char *fn, int64_t size)
{
    struct legacy l = { 0 };
    struct facet_pickle_extras plain = { 1, NULL, NULL }, main_x = { 1, legacy_persistent, &l };
    struct facet_pickle *p = NULL, *keys = NULL;
    struct facet_pickle_value top = { 0 }, list = { 0 };
    int64_t at = 15;
    /* the protocol version (1001) and the system info (little-endian) */
    int rc = legacy_pickle(h, fn, size, &at, &plain, &p, &top);
    if (!rc && (top.kind != FACET_PICKLE_INT || top.num != 1001))
        rc = facet_pickle_fail(p, "a legacy file of protocol version %lld (facet reads 1001)",
                               top.kind == FACET_PICKLE_INT ? (long long)top.num : -1LL);
    facet_pickle_free(p);
    p = NULL;
    if (!rc) rc = legacy_pickle(h, fn, size, &at, &plain, &p, &top);
    if (!rc) {
        const struct facet_pickle_value *little =
            top.kind == FACET_PICKLE_DICT ? dict_get(p, &top, "little_endian") : NULL;
        if (little && (little->kind != FACET_PICKLE_BOOL || !little->num))
            rc = facet_pickle_fail(p, "a legacy file written on a big-endian machine is not supported");
    }
    facet_pickle_free(p);
    p = NULL;
    /* the state dict, then the storage keys in the order their bytes follow */
    if (!rc) rc = legacy_pickle(h, fn, size, &at, &main_x, &p, &top);
    if (!rc) rc = legacy_pickle(h, fn, size, &at, &plain, &keys, &list);
    if (!rc && list.kind != FACET_PICKLE_LIST)
        rc = facet_pickle_fail(keys, "the storage keys are %s, not a list", facet_pickle_kind_name(keys, list.kind));
    for (int64_t i = 0; !rc && i < list.obj->n; i++) {
        char key[64];
        const struct facet_pickle_value *k = &list.obj->items[i];
        if (k->kind != FACET_PICKLE_TEXT || k->len >= (int64_t)sizeof key) {
            rc = facet_pickle_fail(keys, "storage key %lld is not a short str", (long long)i);
            break;
        }
        if ((rc = facet_pickle_text(keys, k, key, sizeof key))) break;
        struct storage *s = NULL;
        for (int64_t j = 0; j < l.n; j++)
            if (!strcmp(l.s[j]->key, key)) {
                if (!s) s = l.s[j];
                else if (l.s[j]->stype != s->stype || l.s[j]->numel != s->numel) s = NULL;
                if (!s) break;
            }
        if (!s) {
            rc = facet_pickle_fail(keys, "storage %s is listed but has no one record of the state dict", key);
            break;
        }
        uint8_t nb[8];
        int64_t es = STYPES[s->stype].size;
        if (at > size - 8) {
            rc = ZFAIL("%s: %s: the file is truncated: it ends before storage %s", fn, h->path, key);
            break;
        }
        if ((rc = facet_pread_full(h->fd, fn, h->path, nb, 8, at))) break;
        uint64_t n = le(nb, 8);
        if (n != (uint64_t)s->numel || s->numel > (size - at - 8) / es) {
            rc = ZFAIL("%s: %s: storage %s holds %llu elements in the file, %lld in its record, and %lld bytes remain",
                       fn, h->path, key, (unsigned long long)n, (long long)s->numel, (long long)(size - at - 8));
            break;
        }
        for (int64_t j = 0; j < l.n; j++)
            if (!strcmp(l.s[j]->key, key)) l.s[j]->data_off = at + 8;
        at += 8 + s->numel * es;
    }
    if (!rc) rc = collect(p, &top, h);
    facet_pickle_free(keys);
    facet_pickle_free(p);
    free(l.s);
    return rc;
}

int facet_pth_init(facet_pth **out, const char *path)
{
    static const char *fn = "facet_pth_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path) return facet_fail(FACET_STATUS_ERR_ARG, "%s: path is NULL", fn);
    facet_pth *h = calloc(1, sizeof *h);
    size_t plen = strlen(path) + 1;
    if (h) h->fd = -1;
    if (!h || !(h->path = malloc(plen))) {
        facet_pth_free(h);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    }
    memcpy(h->path, path, plen);
    int rc = 0;
    struct stat st;
    h->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (h->fd < 0) rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
    else if (fstat(h->fd, &st) != 0 || !S_ISREG(st.st_mode)) rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: not a regular file", fn, path);
    int64_t size = rc ? 0 : (int64_t)st.st_size;
    uint8_t head[15] = { 0 };
    if (!rc && size >= 15) rc = facet_pread_full(h->fd, fn, h->path, head, 15, 0);
    if (!rc) rc = memcmp(head, LEGACY_MAGIC, 15) ? read_zipped(h, fn, size) : read_legacy(h, fn, size);
    if (rc) {
        facet_pth_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

static int check_index(const char *fn, const facet_pth *h, int64_t index)
{
    if (!h) return facet_fail(FACET_STATUS_ERR_ARG, "%s: h is NULL", fn);
    if (index < 0 || index >= h->count)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: index %lld is outside [0, %lld)", fn, (long long)index,
                          (long long)h->count);
    return 0;
}

int facet_pth_count(const facet_pth *h, int64_t *count)
{
    if (!h || !count) return facet_fail(FACET_STATUS_ERR_ARG, "facet_pth_count: %s is NULL", h ? "count" : "h");
    *count = h->count;
    return 0;
}

int facet_pth_name(const facet_pth *h, int64_t index, char *dst, size_t capacity)
{
    int rc = check_index("facet_pth_name", h, index);
    if (rc) return rc;
    size_t len = strlen(h->t[index].name);
    if (!dst || capacity <= len)
        return facet_fail(FACET_STATUS_ERR_ARG, "facet_pth_name: dst holds %zu bytes, the name needs %zu",
                          dst ? capacity : 0, len + 1);
    memcpy(dst, h->t[index].name, len + 1);
    return 0;
}

int facet_pth_info(const facet_pth *h, int64_t index, int *dtype, int *ndim, int64_t *sizes)
{
    int rc = check_index("facet_pth_info", h, index);
    if (rc) return rc;
    const struct tensor_rec *r = &h->t[index];
    if (dtype) *dtype = STYPES[r->stype].dtype;
    if (ndim) *ndim = r->ndim;
    if (sizes)
        for (int i = 0; i < r->ndim; i++) sizes[i] = r->sizes[i];
    return 0;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 31) bits = sign | 0x7f800000u | man << 13;
    else if (exp) bits = sign | (exp + 112) << 23 | man << 13;
    else if (!man) bits = sign;
    else {                    /* subnormal: normalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 1024));
        bits = sign | (uint32_t)(112 - e) << 23 | (man & 1023) << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* element j of src (the file's type) into element i of dst (facet's) */
static void convert(int st, const uint8_t *src, int64_t j, void *dst, int64_t i)
{
    const uint8_t *s = src + j * STYPES[st].size;
    switch (st) {
    case S_FLOAT: memcpy((float *)dst + i, s, 4); break;
    case S_DOUBLE: { double d; memcpy(&d, s, 8); ((float *)dst)[i] = (float)d; break; }
    case S_HALF: { uint16_t u; memcpy(&u, s, 2); ((float *)dst)[i] = half_to_float(u); break; }
    case S_BFLOAT16: { uint16_t u; memcpy(&u, s, 2); uint32_t b = (uint32_t)u << 16; memcpy((float *)dst + i, &b, 4); break; }
    case S_LONG: memcpy((int64_t *)dst + i, s, 8); break;
    case S_INT: memcpy((int32_t *)dst + i, s, 4); break;
    case S_SHORT: { int16_t v; memcpy(&v, s, 2); ((int32_t *)dst)[i] = v; break; }
    case S_CHAR: ((int32_t *)dst)[i] = (int8_t)s[0]; break;
    case S_BYTE: ((uint8_t *)dst)[i] = s[0]; break;
    case S_BOOL: ((uint8_t *)dst)[i] = s[0] != 0; break;
    }
}

int facet_pth_read(const facet_pth *h, int64_t index, void *dst, size_t capacity)
{
    static const char *fn = "facet_pth_read";
    int rc = check_index(fn, h, index);
    if (rc) return rc;
    const struct tensor_rec *r = &h->t[index];
    size_t osz = 0;
    facet_dtype_size(STYPES[r->stype].dtype, &osz);
    int64_t out_size = (int64_t)osz;
    if (!dst || (uint64_t)capacity < (uint64_t)(r->numel * out_size))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s: dst holds %zu bytes, the tensor needs %lld", fn, r->name,
                          dst ? capacity : 0, (long long)(r->numel * out_size));
    if (r->numel == 0) return 0;
    int64_t es = STYPES[r->stype].size, span = r->last - r->first + 1;
    /* a dense tensor of facet's own type is read in place */
    int dense = 1;
    for (int i = r->ndim - 1, want = 1; i >= 0; i--) {
        if (r->sizes[i] != 1 && r->strides[i] != want) dense = 0;
        want *= r->sizes[i];
    }
    if (dense && span == r->numel && (r->stype == S_FLOAT || r->stype == S_LONG || r->stype == S_INT || r->stype == S_BYTE))
        return facet_pread_full(h->fd, fn, h->path, dst, span * es, r->data_off + r->first * es);
    uint8_t *buf = malloc((size_t)(span * es));
    if (!buf) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s of %s", fn, r->name, h->path);
    rc = facet_pread_full(h->fd, fn, h->path, buf, span * es, r->data_off + r->first * es);
    if (!rc) {
        int64_t idx[FACET_MAX_DIMS] = { 0 };
        for (int64_t i = 0; i < r->numel; i++) {
            int64_t j = 0;
            for (int d = 0; d < r->ndim; d++) j += idx[d] * r->strides[d];
            convert(r->stype, buf, j, dst, i);
            for (int d = r->ndim - 1; d >= 0; d--) {
                if (++idx[d] < r->sizes[d]) break;
                idx[d] = 0;
            }
        }
    }
    free(buf);
    return rc;
}
