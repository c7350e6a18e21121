/*
 * guard.h - the checks behind the "hostile input" rules of the API boundary
 * (guard.c): size arithmetic that cannot overflow, the memory overlap of two
 * views, and the range of values converted into an integer dtype. Each check
 * sets the error message itself and returns a status.
 */
#ifndef FACET_GUARD_H
#define FACET_GUARD_H

#include "internal.h"

/* The most bytes a tensor may span: 2^47, the user address space of x86-64
 * (and more than any GPU holds). Sizes past it are refused before any
 * allocation with FACET_STATUS_ERR_MEMORY; it also keeps every element offset
 * of every view far inside int64 and size_t. */
#define FACET_MAX_TENSOR_BYTES (UINT64_C(1) << 47)

/* Checks a shape for a tensor of `dtype`: sizes >= 0 (messages count dims
 * from 1), and the product of max(size, 1) without overflow and, in bytes, at
 * most FACET_MAX_TENSOR_BYTES. That product bounds every partial product of
 * the sizes (element counts, strides, loop bounds), empty shapes included.
 * *numel (may be NULL) receives the element count. */
int facet_check_shape(const char *fn, int dtype, int ndim, const int64_t *sizes, int64_t *numel);

/* ---- overlap --------------------------------------------------------------
 * Two views overlap when they share a storage and their byte ranges
 * [first element, last element] intersect (a conservative test: interleaved
 * views that touch no common element count as overlapping). */
bool facet_overlap(const facet_tensor *a, const facet_tensor *b);
/* a and b place every element at the same address: same storage, offset,
 * dtype, sizes and strides (strides of size-1 dims ignored). */
bool facet_same_view(const facet_tensor *a, const facet_tensor *b);
/* The operand an op should read instead of `in`, given that it writes `out`:
 * `in` itself when the two do not overlap (or are the same view and
 * same_view_ok), else a new contiguous copy of `in` (*tmp, freed by the
 * caller with facet_tensor_free; NULL when no copy was made). */
int facet_unalias(const char *fn, const facet_tensor *out, const facet_tensor *in, bool same_view_ok,
                  facet_tensor **tmp, const facet_tensor **use);

/* ---- conversions into integer dtypes ---------------------------------------
 * One rule everywhere (copy, fill, set, arange, the Lua constructors): a value
 * stored into int32, int64 or uint8 is truncated toward zero and must then lie
 * in the dtype's range; NaN and +-inf never do. Otherwise the call fails with
 * FACET_STATUS_ERR_ARG naming the value and the dtype, before anything is
 * written. float32 stores are never checked (overflow gives inf). */
bool facet_value_fits(double v, int dtype);
/* `what` names the argument ("value", "start") in the message. */
int facet_check_value(const char *fn, const char *what, double v, int dtype);
/* Every value of src converted to dst's dtype fits (src is scanned unless
 * every value of src's dtype fits dst's; CUDA sources are read back first). */
int facet_check_convert(const char *fn, const facet_tensor *dst, const facet_tensor *src);

#endif
