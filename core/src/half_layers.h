/*
 * half_layers.h - float16 / bfloat16 operands of the layer kernels (conv,
 * batchnorm, activation, pool): the argument checks every one of them shares,
 * and, for the CPU, float32 views of the 16-bit operands.
 *
 * The CPU computes a 16-bit call as the float32 kernel does: each 16-bit
 * input is widened (exactly) into a float32 scratch buffer, the float32 loops
 * run unchanged, and each 16-bit output is rounded once (half_math.h) from
 * its float32 result. So the native 16-bit result is, bit for bit, "widen the
 * input, run the float32 kernel, round once". The scratch buffers are grown
 * on demand and kept for the process (a training step allocates nothing
 * after its first); one lock serialises the rare concurrent 16-bit callers.
 * float32 calls never take the lock nor touch the buffers.
 */
#ifndef FACET_HALF_LAYERS_H
#define FACET_HALF_LAYERS_H

#include "internal.h"

/* the activation dtypes: float32, float16 or bfloat16 */
int facet_check_act_dtype(const char *fn, const char *name, const facet_tensor *t);
/* t has the dtype of ref (names both in the error) */
int facet_check_dtype_of(const char *fn, const char *name, const facet_tensor *t, const char *refname,
                         const facet_tensor *ref);
/* two contiguous tensors of one shape, one device and one activation dtype */
int facet_check_act_pair(const char *fn, const char *an, const facet_tensor *a, const char *bn, const facet_tensor *b);

enum { FACET_HALF_SLOTS = 6 };

/* Takes the scratch lock when dtype is 16-bit (nothing for float32). */
void facet_half_begin(int dtype);
void facet_half_end(int dtype);
/* A float32 view of t (NULL t: NULL): t's own data when float32, else t
 * widened into scratch slot `slot`. Returns NULL with the error set when the
 * scratch cannot grow; `ok` is cleared then. */
const float *facet_half_in(const char *fn, const facet_tensor *t, int slot, int *ok);
/* Where a float32 kernel writes t (NULL t: NULL): t's data when float32, else
 * scratch slot `slot` (its contents undefined). */
float *facet_half_out(const char *fn, const facet_tensor *t, int slot, int *ok);
/* Rounds the float32 result buf into t once when t is 16-bit. */
void facet_half_store(facet_tensor *t, const float *buf);
/* Ends a call begun with facet_half_begin(dtype): stores buf into t when ok
 * and rc is 0, releases the lock, and returns rc (or the memory error when
 * a scratch buffer could not grow). */
int facet_half_finish(int dtype, facet_tensor *t, const float *buf, int ok, int rc);

#endif
