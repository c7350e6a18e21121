/*
 * nd.h - the CPU side of the strided walk (see nd.c). A row function gets
 * n elements starting at per-operand element offsets off[k], stepping st[k].
 */
#ifndef FACET_ND_H
#define FACET_ND_H

#include "internal.h"

typedef void (*facet_row_fn)(void *ctx, int64_t n, const int64_t off[3], const int64_t st[3]);

/* shape from shape_of; operand strides set with facet_nd_set */
void facet_nd_init(struct facet_nd *nd, int nops, const facet_tensor *shape_of);
void facet_nd_set(struct facet_nd *nd, int k, const facet_tensor *t);
void facet_nd_run(const struct facet_nd *nd, facet_row_fn fn, void *ctx);

#endif
