/*
 * binfile.c - InsightFace verification .bin files (lfw.bin, cfp_fp.bin ...):
 * a pickle of (bins, issame_list), read with the restricted pickle reader
 * (pickle.c). This file is the .bin format on top of it: the allow-list
 * (NumPy's array reconstruction only: numpy.core.multiarray._reconstruct,
 * numpy.ndarray, numpy.dtype), what REDUCE and BUILD on those describe (a
 * uint8 or bool array and where its bytes lie), and the handle built from
 * the tree. Known writers: Python 2 str, Python 3 bytes, NumPy arrays;
 * protocols 2 to 5. Image bytes are not loaded: the handle records where
 * each one lies in the file and reads it on request with pread().
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

struct facet_binfile {
    int fd;
    char *path;
    int64_t pairs;
    int64_t *offset;          /* 2P images: where their bytes lie in the file */
    int64_t *length;
    uint8_t *issame;          /* P */
};

/* ---- the .bin's pickle: NumPy arrays of one-byte elements ---------------------------------- */

enum { K_ARRAY = FACET_PICKLE_USER, K_DTYPE };
enum global { G_RECONSTRUCT = 1, G_NDARRAY = 2, G_DTYPE = 3 };

/* The fields of a NumPy array or dtype in the tree. */
struct numpy {
    char dtype[8];            /* dtype name, and an array's dtype */
    int built;                /* array: BUILD gave it its state */
    int vector;               /* array: at most one dim above 1, e.g. (n,) or (n, 1) */
    char shape[48];           /* array: its shape, for messages */
    int64_t count;            /* array elements (one byte each) */
    int64_t data_off, data_len;
};

static struct numpy *np_of(const struct facet_pickle_value *v) { return v->obj->ext; }

/* REDUCE: _reconstruct(ndarray, ...) is an empty array until BUILD,
 * numpy.dtype(name, align, copy) a dtype. */
static int numpy_reduce(struct facet_pickle *p, const struct facet_pickle_value *callable,
                        const struct facet_pickle_obj *a, struct facet_pickle_value *out)
{
    if (callable->num == G_NDARRAY)
        return facet_pickle_fail(p, "numpy.ndarray is called directly: only _reconstruct(ndarray, ...) arrays are "
                                 "supported");
    struct facet_pickle_obj *o = NULL;
    int rc = facet_pickle_new_object(p, sizeof(struct numpy), &o);
    if (rc) return rc;
    struct facet_pickle_value v = { K_ARRAY, 0, 0, 0, o };
    if (callable->num == G_RECONSTRUCT) {
        if (a->n < 1 || a->items[0].kind != FACET_PICKLE_GLOBAL || a->items[0].num != G_NDARRAY)
            return facet_pickle_fail(p, "_reconstruct is called without numpy.ndarray as its first argument");
        *out = v;
        return 0;
    }
    if (a->n < 1 || (a->items[0].kind != FACET_PICKLE_TEXT && a->items[0].kind != FACET_PICKLE_BYTES))
        return facet_pickle_fail(p, "numpy.dtype is called without a type name");
    struct numpy *d = o->ext;
    if ((rc = facet_pickle_text(p, &a->items[0], d->dtype, sizeof d->dtype))) return rc;
    v.kind = K_DTYPE;
    *out = v;
    return 0;
}

/* BUILD on an array: state (version 1, shape, dtype, is_fortran, raw bytes). */
static int build_array(struct facet_pickle *p, struct numpy *o, const struct facet_pickle_value *state)
{
    if (o->built) return facet_pickle_fail(p, "BUILD on a NumPy array that already has its data");
    if (state->kind != FACET_PICKLE_TUPLE || state->obj->n != 5)
        return facet_pickle_fail(p, "NumPy array state is %s of %lld items, want (version, shape, dtype, is_fortran, "
                                 "data)", facet_pickle_kind_name(p, state->kind),
                                 state->kind == FACET_PICKLE_TUPLE ? (long long)state->obj->n : 0LL);
    const struct facet_pickle_value *s = state->obj->items;
    if (s[0].kind != FACET_PICKLE_INT || s[0].num != 1)
        return facet_pickle_fail(p, "NumPy array state version is not 1");
    if (s[1].kind != FACET_PICKLE_TUPLE)
        return facet_pickle_fail(p, "NumPy array shape is %s, not a tuple", facet_pickle_kind_name(p, s[1].kind));
    if (s[2].kind != K_DTYPE)
        return facet_pickle_fail(p, "NumPy array dtype is %s", facet_pickle_kind_name(p, s[2].kind));
    if (s[4].kind != FACET_PICKLE_BYTES)
        return facet_pickle_fail(p, "NumPy array data is %s, not bytes (an object array?)",
                                 facet_pickle_kind_name(p, s[4].kind));
    const char *dt = np_of(&s[2])->dtype;
    if (strcmp(dt, "u1") && strcmp(dt, "b1"))
        return facet_pickle_fail(p, "NumPy dtype '%s' is not supported: images are uint8 ('u1') arrays of encoded "
                                 "bytes, issame a bool ('b1') array", dt);
    const struct facet_pickle_obj *shape = s[1].obj;
    int64_t count = 1;
    int long_dims = 0, at = snprintf(o->shape, sizeof o->shape, "(");
    for (int64_t d = 0; d < shape->n; d++) {
        const struct facet_pickle_value *e = &shape->items[d];
        if (e->kind != FACET_PICKLE_INT || e->num < 0)
            return facet_pickle_fail(p, "NumPy array shape holds %s", facet_pickle_kind_name(p, e->kind));
        /* each element is one byte, so the data's length bounds every size */
        if (e->num > s[4].len || (e->num > 0 && count > s[4].len / e->num))
            return facet_pickle_fail(p, "NumPy array shape does not match its %lld data bytes", (long long)s[4].len);
        count *= e->num;
        long_dims += e->num > 1;
        if (at < (int)sizeof o->shape - 24)
            at += snprintf(o->shape + at, sizeof o->shape - at, d ? ", %lld" : "%lld", (long long)e->num);
    }
    snprintf(o->shape + at, sizeof o->shape - at, shape->n == 1 ? ",)" : ")");
    if (count != s[4].len)
        return facet_pickle_fail(p, "NumPy array of %lld elements has %lld data bytes", (long long)count,
                                 (long long)s[4].len);
    memcpy(o->dtype, dt, sizeof o->dtype);
    o->vector = long_dims <= 1;
    o->count = count;
    o->data_off = s[4].off;
    o->data_len = s[4].len;
    o->built = 1;
    return 0;
}

static int numpy_build(struct facet_pickle *p, struct facet_pickle_value *target,
                       const struct facet_pickle_value *state)
{
    if (target->kind == K_ARRAY) return build_array(p, np_of(target), state);
    /* a dtype: (3, '|', None, None, None, -1, -1, 0): nothing in it matters for one-byte types */
    if (state->kind != FACET_PICKLE_TUPLE)
        return facet_pickle_fail(p, "NumPy dtype state is %s, not a tuple", facet_pickle_kind_name(p, state->kind));
    return 0;
}

static const struct facet_pickle_global bin_globals[] = {
    { "numpy.core.multiarray", "_reconstruct", G_RECONSTRUCT },
    { "numpy._core.multiarray", "_reconstruct", G_RECONSTRUCT },
    { "numpy", "ndarray", G_NDARRAY },
    { "numpy", "dtype", G_DTYPE },
    { NULL, NULL, 0 },
};
static const char *const bin_kinds[] = { "a NumPy array", "a NumPy dtype" };
static const struct facet_pickle_format bin_format = {
    "a verification .bin",
    "only the tuple (bins, issame_list)",
    "only byte strings, bools and NumPy arrays (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype)",
    bin_globals, bin_kinds, 2, numpy_reduce, numpy_build,
};

/* ---- from the pickled value to the handle ------------------------------------------------- */

static int collect(struct facet_pickle *p, const struct facet_pickle_value *top, facet_binfile *b, const char *fn)
{
    if (top->kind != FACET_PICKLE_TUPLE || top->obj->n != 2)
        return facet_pickle_fail(p, "the pickle holds %s%s, want the tuple (bins, issame_list)",
                                 facet_pickle_kind_name(p, top->kind),
                                 top->kind == FACET_PICKLE_TUPLE ? " of a length other than 2" : "");
    const struct facet_pickle_value *bins = &top->obj->items[0], *same = &top->obj->items[1];
    if (bins->kind != FACET_PICKLE_LIST && bins->kind != FACET_PICKLE_TUPLE)
        return facet_pickle_fail(p, "bins is %s, want a list of images", facet_pickle_kind_name(p, bins->kind));
    int64_t nimages = bins->obj->n, pairs;
    if (same->kind == FACET_PICKLE_LIST || same->kind == FACET_PICKLE_TUPLE) {
        pairs = same->obj->n;
    } else if (same->kind == K_ARRAY && np_of(same)->built && !strcmp(np_of(same)->dtype, "b1") &&
               np_of(same)->vector) {
        pairs = np_of(same)->count;
    } else {
        return facet_pickle_fail(p, "issame_list is %s, want a list of bools or a bool NumPy vector",
                                 facet_pickle_kind_name(p, same->kind));
    }
    if (nimages != 2 * pairs)
        return facet_pickle_fail(p, "wrong counts: %lld images for %lld issame flags (want 2 images per pair, %lld)",
                                 (long long)nimages, (long long)pairs, (long long)(2 * pairs));

    b->pairs = pairs;
    b->offset = malloc((size_t)(nimages ? nimages : 1) * sizeof(int64_t));
    b->length = malloc((size_t)(nimages ? nimages : 1) * sizeof(int64_t));
    b->issame = malloc((size_t)(pairs ? pairs : 1));
    if (!b->offset || !b->length || !b->issame)
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", fn, b->path);
    for (int64_t i = 0; i < nimages; i++) {
        const struct facet_pickle_value *v = &bins->obj->items[i];
        const struct numpy *a = v->kind == K_ARRAY ? np_of(v) : NULL;
        if (v->kind == FACET_PICKLE_BYTES) {
            b->offset[i] = v->off;
            b->length[i] = v->len;
        } else if (a && a->built && !strcmp(a->dtype, "u1") && a->vector) {
            b->offset[i] = a->data_off;
            b->length[i] = a->data_len;
        } else if (a && a->built) {
            return facet_pickle_fail(p, "image %lld is a NumPy array of dtype '%s' and shape %s, want a vector of "
                                     "uint8 (the encoded bytes; decoded pixels are not supported)", (long long)i,
                                     a->dtype, a->shape);
        } else {
            return facet_pickle_fail(p, "image %lld is %s, want bytes or a uint8 NumPy vector", (long long)i,
                                     facet_pickle_kind_name(p, v->kind));
        }
    }
    if (same->kind == K_ARRAY) {
        int rc = facet_pread_full(b->fd, fn, b->path, b->issame, pairs, np_of(same)->data_off);
        if (rc) return rc;
        for (int64_t i = 0; i < pairs; i++)
            if (b->issame[i] > 1)
                return facet_pickle_fail(p, "issame array element %lld is %d, not a bool", (long long)i, b->issame[i]);
    } else {
        for (int64_t i = 0; i < pairs; i++) {
            const struct facet_pickle_value *v = &same->obj->items[i];
            if (v->kind != FACET_PICKLE_BOOL)
                return facet_pickle_fail(p, "issame_list item %lld is %s, want a bool", (long long)i,
                                         facet_pickle_kind_name(p, v->kind));
            b->issame[i] = (uint8_t)v->num;
        }
    }
    return 0;
}

int facet_binfile_free(facet_binfile *b)
{
    if (!b) return 0;
    if (b->fd >= 0) close(b->fd);
    free(b->path);
    free(b->offset);
    free(b->length);
    free(b->issame);
    free(b);
    return 0;
}

int facet_binfile_init(facet_binfile **out, const char *path)
{
    static const char *fn = "facet_binfile_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path) return facet_fail(FACET_STATUS_ERR_ARG, "%s: path is NULL", fn);
    facet_binfile *b = calloc(1, sizeof *b);
    size_t plen = strlen(path) + 1;
    if (b) b->fd = -1;
    if (!b || !(b->path = malloc(plen))) {
        facet_binfile_free(b);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    }
    memcpy(b->path, path, plen);
    int rc = 0;
    b->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (b->fd < 0) rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
    else if (fstat(b->fd, &st) != 0 || !S_ISREG(st.st_mode)) rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: not a regular file", fn, path);
    if (!rc) {
        struct facet_pickle *p = NULL;
        struct facet_pickle_value top = { 0 };
        rc = facet_pickle_parse(&p, &top, &bin_format, b->fd, (int64_t)st.st_size, fn, b->path);
        if (!rc) rc = collect(p, &top, b, fn);
        facet_pickle_free(p);
    }
    if (rc) {
        facet_binfile_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

static int check_handle(const char *fn, const facet_binfile *b)
{
    return b ? 0 : facet_fail(FACET_STATUS_ERR_ARG, "%s: b is NULL", fn);
}

int facet_binfile_pairs(const facet_binfile *b, int64_t *pairs)
{
    int rc = check_handle("facet_binfile_pairs", b);
    if (rc) return rc;
    if (!pairs) return facet_fail(FACET_STATUS_ERR_ARG, "facet_binfile_pairs: pairs is NULL");
    *pairs = b->pairs;
    return 0;
}

int facet_binfile_issame(const facet_binfile *b, int64_t pair, int *same)
{
    static const char *fn = "facet_binfile_issame";
    int rc = check_handle(fn, b);
    if (rc) return rc;
    if (!same) return facet_fail(FACET_STATUS_ERR_ARG, "%s: same is NULL", fn);
    if (pair < 0 || pair >= b->pairs)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: pair %lld outside [0, %lld)", fn, (long long)pair, (long long)b->pairs);
    *same = b->issame[pair];
    return 0;
}

static int check_image(const char *fn, const facet_binfile *b, int64_t index)
{
    int rc = check_handle(fn, b);
    if (rc) return rc;
    if (index < 0 || index >= 2 * b->pairs)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: image index %lld outside [0, %lld)", fn, (long long)index,
                          (long long)(2 * b->pairs));
    return 0;
}

int facet_binfile_image_size(const facet_binfile *b, int64_t index, int64_t *nbytes)
{
    static const char *fn = "facet_binfile_image_size";
    int rc = check_image(fn, b, index);
    if (rc) return rc;
    if (!nbytes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: nbytes is NULL", fn);
    *nbytes = b->length[index];
    return 0;
}

int facet_binfile_read_image(const facet_binfile *b, int64_t index, void *dst, size_t capacity, int64_t *nbytes)
{
    static const char *fn = "facet_binfile_read_image";
    int rc = check_image(fn, b, index);
    if (rc) return rc;
    if (!dst && capacity > 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: dst is NULL", fn);
    if (!nbytes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: nbytes is NULL", fn);
    int64_t len = b->length[index];
    if ((uint64_t)len > (uint64_t)capacity)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: image %lld has %lld bytes, more than the capacity %zu", fn,
                          (long long)index, (long long)len, capacity);
    if ((rc = facet_pread_full(b->fd, fn, b->path, dst, len, b->offset[index]))) return rc;
    *nbytes = len;
    return 0;
}
