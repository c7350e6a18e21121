/*
 * tensor.c - tensor lifecycle, metadata, views and single-element access.
 * A tensor handle is a view (sizes, strides, offset) of a refcounted storage;
 * views share the storage and the last handle freed releases it.
 */
#include "internal.h"
#include "guard.h"
#include "elementwise_math.h"
#include <stdlib.h>
#include <string.h>

size_t facet_elsize(int dtype)
{
    switch (dtype) {
    case FACET_DTYPE_FLOAT32: case FACET_DTYPE_INT32: return 4;
    case FACET_DTYPE_INT64: return 8;
    case FACET_DTYPE_UINT8: return 1;
    case FACET_DTYPE_FLOAT16: case FACET_DTYPE_BFLOAT16: return 2;
    default: return 0;
    }
}

int64_t facet_numel(const facet_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->sizes[d];
    return n;
}

bool facet_contiguous(const facet_tensor *t)
{
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->sizes[d] != 1 && t->strides[d] != expect) return false;
        expect *= t->sizes[d];
    }
    return true;
}

int facet_check_matrix(const char *fn, const char *name, const facet_tensor *t)
{
    int rc = facet_check_dtype(fn, name, t, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    if (t->ndim != 2 || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be a contiguous 2-D float32 tensor, got %s", fn, name,
                          facet_desc(t));
    return 0;
}

bool facet_same_shape(const facet_tensor *a, const facet_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->sizes[d] != b->sizes[d]) return false;
    return true;
}

void *facet_ptr(const facet_tensor *t)
{
    return (char *)t->storage->data + (size_t)t->offset * facet_elsize(t->dtype);
}

static void storage_release(struct facet_storage *s)
{
    if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (s->copy_event) {                  /* a queued copy may still read the pinned memory */
        facet_storage_wait_copies(s);
        facet_cuda_event_free(s->copy_event);
    }
    if (s->device == FACET_DEVICE_CUDA) facet_cuda_free(s->data);
    else if (s->pinned) facet_cuda_host_free(s->data);
    else free(s->data);
    free(s);
}

static facet_tensor *handle_on(struct facet_storage *s, const facet_tensor *like)
{
    facet_tensor *t = malloc(sizeof *t);
    if (!t) return NULL;
    *t = *like;
    t->storage = s;
    __atomic_add_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL);
    return t;
}

int facet_dtype_size(int dtype, size_t *size)
{
    if (!size) return facet_fail(FACET_STATUS_ERR_ARG, "facet_dtype_size: size is NULL");
    if (dtype < 0 || dtype >= FACET_DTYPE_COUNT)
        return facet_fail(FACET_STATUS_ERR_ARG, "facet_dtype_size: unknown dtype %d", dtype);
    *size = facet_elsize(dtype);
    return 0;
}

int facet_tensor_init(facet_tensor **out, int dtype, int device, int ndim, const int64_t *sizes)
{
    static const char *fn = "facet_tensor_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (dtype < 0 || dtype >= FACET_DTYPE_COUNT)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown dtype %d", fn, dtype);
    if (device != FACET_DEVICE_CPU && device != FACET_DEVICE_CUDA)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown device %d", fn, device);
    if (ndim < 0 || ndim > FACET_MAX_DIMS)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: ndim %d outside [0, %d]", fn, ndim, FACET_MAX_DIMS);
    if (ndim > 0 && !sizes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: sizes is NULL", fn);
    int64_t n = 0;
    int rc = facet_check_shape(fn, dtype, ndim, sizes, &n);
    if (rc) return rc;
    facet_tensor proto;
    memset(&proto, 0, sizeof proto);
    proto.ndim = ndim;
    proto.dtype = dtype;
    proto.device = device;
    int64_t st = 1;     /* products of trailing sizes: at most the span checked above */
    for (int d = ndim - 1; d >= 0; d--) {
        proto.sizes[d] = sizes[d];
        proto.strides[d] = st;
        st *= sizes[d];
    }
    size_t nbytes = (size_t)n * facet_elsize(dtype);
    struct facet_storage *s = calloc(1, sizeof *s);
    if (!s) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    s->device = device;
    s->nbytes = nbytes;
    if (device == FACET_DEVICE_CUDA) {
        int rc = facet_cuda_malloc(&s->data, nbytes ? nbytes : 4);
        if (rc) { free(s); return rc; }
        facet_cuda_note_started();
    } else {
        /* 64-byte alignment for AVX-512 loads and BLAS */
        size_t padded = (nbytes + 63) & ~(size_t)63;
        s->data = aligned_alloc(64, padded ? padded : 64);
        if (!s->data) {
            free(s);
            return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory allocating %s (%zu bytes)", fn,
                              facet_desc(&proto), nbytes);
        }
    }
    facet_tensor *t = handle_on(s, &proto);
    if (!t) {
        s->refcount = 1;
        storage_release(s);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    }
    *out = t;
    return 0;
}

int facet_tensor_init_pinned(facet_tensor **out, int dtype, int ndim, const int64_t *sizes)
{
    int rc = facet_tensor_init(out, dtype, FACET_DEVICE_CPU, ndim, sizes);
    if (rc) return rc;
    int devices = 0;
    if (facet_cuda_count(&devices) != 0 || devices == 0) return 0;
    /* swap the fresh storage for page-locked memory of the same size */
    struct facet_storage *s = (*out)->storage;
    void *pinned = NULL;
    if (facet_cuda_host_alloc(&pinned, s->nbytes) != 0) return 0;   /* ordinary memory still works */
    free(s->data);
    s->data = pinned;
    s->pinned = 1;
    return 0;
}

int facet_tensor_free(facet_tensor *t)
{
    if (!t) return 0;
    if (t->storage) storage_release(t->storage);
    t->storage = NULL;
    free(t);
    return 0;
}

int facet_tensor_share(facet_tensor **out, const facet_tensor *t)
{
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "facet_tensor_share: out is NULL");
    *out = NULL;
    int rc = facet_check_tensor("facet_tensor_share", "t", t);
    if (rc) return rc;
    *out = handle_on(t->storage, t);
    return *out ? 0 : facet_fail(FACET_STATUS_ERR_MEMORY, "facet_tensor_share: out of memory");
}

/* ---- metadata ------------------------------------------------------------- */

#define GETTER_CHECK(fn, p) \
    do { int rc_ = facet_check_tensor(fn, "t", t); if (rc_) return rc_; \
         if (!(p)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: output pointer is NULL", fn); } while (0)

int facet_tensor_ndim(const facet_tensor *t, int *ndim)
{
    GETTER_CHECK("facet_tensor_ndim", ndim);
    *ndim = t->ndim;
    return 0;
}

int facet_tensor_dtype(const facet_tensor *t, int *dtype)
{
    GETTER_CHECK("facet_tensor_dtype", dtype);
    *dtype = t->dtype;
    return 0;
}

int facet_tensor_device(const facet_tensor *t, int *device)
{
    GETTER_CHECK("facet_tensor_device", device);
    *device = t->device;
    return 0;
}

int facet_tensor_shape(const facet_tensor *t, int64_t *sizes, int64_t *strides)
{
    int rc = facet_check_tensor("facet_tensor_shape", "t", t);
    if (rc) return rc;
    for (int d = 0; d < t->ndim; d++) {
        if (sizes) sizes[d] = t->sizes[d];
        if (strides) strides[d] = t->strides[d];
    }
    return 0;
}

int facet_tensor_numel(const facet_tensor *t, int64_t *numel)
{
    GETTER_CHECK("facet_tensor_numel", numel);
    *numel = facet_numel(t);
    return 0;
}

int facet_tensor_is_contiguous(const facet_tensor *t, int *contiguous)
{
    GETTER_CHECK("facet_tensor_is_contiguous", contiguous);
    *contiguous = facet_contiguous(t);
    return 0;
}

int facet_tensor_data(const facet_tensor *t, void **data)
{
    GETTER_CHECK("facet_tensor_data", data);
    *data = facet_ptr(t);
    return 0;
}

/* ---- views ------------------------------------------------------------------- */

static int check_dim(const char *fn, const facet_tensor *t, int dim)
{
    if (dim < 0 || dim >= t->ndim)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: dim %d out of range for %s: want 0 to %d (0-based here)", fn,
                          dim, facet_desc(t), t->ndim - 1);
    return 0;
}

static int new_view(facet_tensor **out, const facet_tensor *t, const facet_tensor *proto, const char *fn)
{
    *out = handle_on(t->storage, proto);
    return *out ? 0 : facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
}

int facet_tensor_narrow(facet_tensor **out, const facet_tensor *t, int dim, int64_t start, int64_t length)
{
    static const char *fn = "facet_tensor_narrow";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    int rc = facet_check_tensor(fn, "t", t);
    if (!rc) rc = check_dim(fn, t, dim);
    if (rc) return rc;
    /* start + length may overflow: compare against what is left instead */
    if (start < 0 || start > t->sizes[dim])
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: start %lld outside [0, %lld] for dim %d of %s", fn,
                          (long long)start, (long long)t->sizes[dim], dim + 1, facet_desc(t));
    if (length < 0 || length > t->sizes[dim] - start)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: length %lld outside [0, %lld] for start %lld on dim %d of %s", fn,
                          (long long)length, (long long)(t->sizes[dim] - start), (long long)start, dim + 1,
                          facet_desc(t));
    facet_tensor v = *t;
    v.offset += start * t->strides[dim];
    v.sizes[dim] = length;
    return new_view(out, t, &v, fn);
}

int facet_tensor_select(facet_tensor **out, const facet_tensor *t, int dim, int64_t index)
{
    static const char *fn = "facet_tensor_select";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    int rc = facet_check_tensor(fn, "t", t);
    if (!rc) rc = check_dim(fn, t, dim);
    if (rc) return rc;
    if (index < 0 || index >= t->sizes[dim])
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: index %lld outside [0, %lld) of dim %d of %s", fn,
                          (long long)index, (long long)t->sizes[dim], dim + 1, facet_desc(t));
    facet_tensor v = *t;
    v.offset += index * t->strides[dim];
    for (int d = dim; d < t->ndim - 1; d++) {
        v.sizes[d] = t->sizes[d + 1];
        v.strides[d] = t->strides[d + 1];
    }
    v.ndim--;
    return new_view(out, t, &v, fn);
}

int facet_tensor_reshape(facet_tensor **out, const facet_tensor *t, int ndim, const int64_t *sizes)
{
    static const char *fn = "facet_tensor_reshape";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    int rc = facet_check_tensor(fn, "t", t);
    if (rc) return rc;
    if (ndim < 0 || ndim > FACET_MAX_DIMS)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: ndim %d outside [0, %d]", fn, ndim, FACET_MAX_DIMS);
    if (ndim > 0 && !sizes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: sizes is NULL", fn);
    if (!facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s is not contiguous; make a contiguous copy first", fn,
                          facet_desc(t));
    int64_t n = facet_numel(t);
    int infer = -1;
    bool has_zero = false;
    for (int d = 0; d < ndim; d++) {
        if (sizes[d] == -1) {
            if (infer >= 0)
                return facet_fail(FACET_STATUS_ERR_ARG, "%s: sizes of dims %d and %d are both -1; at most one may be "
                                  "inferred", fn, infer + 1, d + 1);
            infer = d;
        } else if (sizes[d] < 0) {
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: size %lld of dim %d: want a size >= 0, or -1 to infer it",
                              fn, (long long)sizes[d], d + 1);
        } else if (sizes[d] == 0) {
            has_zero = true;
        }
    }
    /* the product of the known sizes, without overflow (a product past
     * int64 can never equal the element count) */
    int64_t known = 1;
    bool over = false;
    for (int d = 0; d < ndim && !has_zero; d++)
        if (d != infer && __builtin_mul_overflow(known, sizes[d], &known)) over = true;
    if (has_zero) known = 0;
    facet_tensor v = *t;
    v.ndim = ndim;
    for (int d = 0; d < ndim; d++) v.sizes[d] = sizes[d];
    if (infer >= 0) {
        if (over || known == 0 || n % known != 0)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: cannot infer the size of dim %d: %s has %lld elements, the "
                              "other sizes give %s%lld", fn, infer + 1, facet_desc(t), (long long)n,
                              over ? "more than " : "", over ? (long long)INT64_MAX : (long long)known);
        v.sizes[infer] = n / known;
        known = n;
    }
    if (over || known != n)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s has %lld elements, the new shape %s%lld", fn,
                          facet_desc(t), (long long)n, over ? "more than " : "", over ? (long long)INT64_MAX : (long long)known);
    /* an empty shape can still have strides past int64: the same limit as a new tensor */
    rc = facet_check_shape(fn, t->dtype, ndim, v.sizes, NULL);
    if (rc) return rc;
    int64_t st = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        v.strides[d] = st;
        st *= v.sizes[d];
    }
    return new_view(out, t, &v, fn);
}

int facet_tensor_permute_view(facet_tensor **out, const facet_tensor *t, const int *perm)
{
    static const char *fn = "facet_tensor_permute_view";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    int rc = facet_check_tensor(fn, "t", t);
    if (rc) return rc;
    if (t->ndim > 0 && !perm) return facet_fail(FACET_STATUS_ERR_ARG, "%s: perm is NULL", fn);
    int seen[FACET_MAX_DIMS] = {0};
    facet_tensor v = *t;
    for (int d = 0; d < t->ndim; d++) {
        int p = perm[d];
        if (p < 0 || p >= t->ndim || seen[p]++)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: perm is not a permutation of the %d dims of %s", fn,
                              t->ndim, facet_desc(t));
        v.sizes[d] = t->sizes[p];
        v.strides[d] = t->strides[p];
    }
    return new_view(out, t, &v, fn);
}

/* ---- single elements ---------------------------------------------------------- */

static int element_offset(const char *fn, const facet_tensor *t, const int64_t *index, int64_t *off)
{
    int rc = facet_check_tensor(fn, "t", t);
    if (rc) return rc;
    if (t->ndim > 0 && !index) return facet_fail(FACET_STATUS_ERR_ARG, "%s: index is NULL", fn);
    int64_t o = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (index[d] < 0 || index[d] >= t->sizes[d])
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: index %lld outside [0, %lld) of dim %d of %s", fn,
                              (long long)index[d], (long long)t->sizes[d], d + 1, facet_desc(t));
        o += index[d] * t->strides[d];
    }
    if (facet_numel(t) == 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s is empty", fn, facet_desc(t));
    *off = o;
    return 0;
}

int facet_tensor_get(const facet_tensor *t, const int64_t *index, double *value)
{
    int64_t off;
    int rc = element_offset("facet_tensor_get", t, index, &off);
    if (rc) return rc;
    if (!value) return facet_fail(FACET_STATUS_ERR_ARG, "facet_tensor_get: value is NULL");
    size_t es = facet_elsize(t->dtype);
    unsigned char buf[8];
    const void *src = (char *)t->storage->data + (size_t)off * es;
    if (t->device == FACET_DEVICE_CUDA) {
        rc = facet_cuda_memcpy(buf, src, es, FACET_COPY_D2H);
        if (rc) return rc;
        src = buf;
    }
    *value = facet_load(src, t->dtype, 0);
    return 0;
}

int facet_tensor_set(facet_tensor *t, const int64_t *index, double value)
{
    int64_t off;
    int rc = element_offset("facet_tensor_set", t, index, &off);
    if (rc) return rc;
    rc = facet_check_value("facet_tensor_set", "value", value, t->dtype);
    if (rc) return rc;
    size_t es = facet_elsize(t->dtype);
    void *dst = (char *)t->storage->data + (size_t)off * es;
    if (t->device == FACET_DEVICE_CUDA) {
        unsigned char buf[8];
        facet_store(buf, t->dtype, 0, value);
        return facet_cuda_memcpy(dst, buf, es, FACET_COPY_H2D);
    }
    facet_store(dst, t->dtype, 0, value);
    return 0;
}

static int rw_check(const char *fn, const facet_tensor *t, const void *buf, size_t nbytes)
{
    int rc = facet_check_tensor(fn, "t", t);
    if (rc) return rc;
    if (!buf && nbytes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: buffer is NULL", fn);
    if (!facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s is not contiguous", fn, facet_desc(t));
    size_t want = (size_t)facet_numel(t) * facet_elsize(t->dtype);
    if (nbytes != want)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %zu bytes given, %s needs %zu", fn, nbytes, facet_desc(t), want);
    return 0;
}

int facet_tensor_write(facet_tensor *t, const void *src, size_t nbytes)
{
    int rc = rw_check("facet_tensor_write", t, src, nbytes);
    if (rc || !nbytes) return rc;
    if (t->device == FACET_DEVICE_CUDA) return facet_cuda_memcpy(facet_ptr(t), src, nbytes, FACET_COPY_H2D);
    memcpy(facet_ptr(t), src, nbytes);
    return 0;
}

int facet_tensor_read(const facet_tensor *t, void *dst, size_t nbytes)
{
    int rc = rw_check("facet_tensor_read", t, dst, nbytes);
    if (rc || !nbytes) return rc;
    if (t->device == FACET_DEVICE_CUDA) return facet_cuda_memcpy(dst, facet_ptr(t), nbytes, FACET_COPY_D2H);
    memcpy(dst, facet_ptr(t), nbytes);
    return 0;
}
