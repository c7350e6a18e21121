/*
 * augment.h - the loader's per-image preparation after decoding (augment.c):
 * resize, random flip, colour jitter, grayscale, padded random crop and the
 * normalisation, with every random choice a Philox draw of (seed, epoch,
 * position), so no result depends on the thread that prepares the image.
 */
#ifndef FACET_AUGMENT_H
#define FACET_AUGMENT_H

#include "internal.h"

/* Settings, already checked by the loader (facet_loader_params). */
struct facet_augment {
    int64_t h, w;                /* output size */
    int64_t n;                   /* positions in an epoch, for the draw counters */
    uint64_t seed;
    double flip, brightness, contrast, saturation, grayscale;   /* probabilities and strengths */
    int64_t crop_pad;
    float mean[3], std[3];
};

/* dst (3 x h x w floats) from the decoded rgb (ih x iw x 3 bytes) of the image
 * at position pos of the epoch. *plane is scratch of 3 x h x w floats that
 * the caller keeps between calls and frees: allocated here on first need. */
int facet_augment_image(const struct facet_augment *a, int64_t epoch, int64_t pos, const unsigned char *rgb,
                        int64_t ih, int64_t iw, float **plane, float *dst);

#endif
