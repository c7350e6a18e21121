/*
 * augment.c - the loader's per-image preparation after decoding: resize and
 * random flip (image.c's facet_image_prepare_raw), then colour jitter
 * (brightness, contrast, saturation in torchvision's order and meaning),
 * random grayscale, the padded random crop and the normalisation. Each
 * random choice is a Philox draw of (seed, epoch, position), so an image
 * gets the same one on any thread.
 */
#include "augment.h"
#include "random_math.h"
#include <math.h>
#include <stdlib.h>

/* the k-th random number of a position in an epoch */
static float draw(const struct facet_augment *a, int64_t epoch, int64_t pos, uint64_t k)
{
    uint64_t c = ((uint64_t)epoch * (uint64_t)a->n + (uint64_t)pos) * 8u + k;
    return facet_rand_uniform_at(a->seed ^ 0xA06Du, c, 0.0f, 1.0f);
}

/* the flip of a position in an epoch: its own stream, apart from draw()'s */
static int flip_draw(const struct facet_augment *a, int64_t epoch, int64_t pos)
{
    float u = facet_rand_uniform_at(a->seed ^ 0xF11Bu, (uint64_t)epoch * (uint64_t)a->n + (uint64_t)pos, 0.0f, 1.0f);
    return u < (float)a->flip;
}

/* colour jitter, grayscale, then the padded random crop, and the
 * normalisation: p (3 x h x w in 0..255) into dst */
static void jitter_crop(const struct facet_augment *a, int64_t epoch, int64_t pos, float *p, float *dst)
{
    int64_t hw = a->h * a->w;
    float *r = p, *g = p + hw, *b = p + 2 * hw;
    if (a->brightness > 0) {
        float f = 1.0f + (float)a->brightness * (2.0f * draw(a, epoch, pos, 1) - 1.0f);
        for (int64_t i = 0; i < 3 * hw; i++) p[i] = fminf(fmaxf(p[i] * f, 0.0f), 255.0f);
    }
    if (a->contrast > 0) {
        float f = 1.0f + (float)a->contrast * (2.0f * draw(a, epoch, pos, 2) - 1.0f);
        double m = 0;
        for (int64_t i = 0; i < hw; i++) m += 0.299f * r[i] + 0.587f * g[i] + 0.114f * b[i];
        float mean = (float)(m / (double)hw);
        for (int64_t i = 0; i < 3 * hw; i++) p[i] = fminf(fmaxf((p[i] - mean) * f + mean, 0.0f), 255.0f);
    }
    if (a->saturation > 0) {
        float f = 1.0f + (float)a->saturation * (2.0f * draw(a, epoch, pos, 3) - 1.0f);
        for (int64_t i = 0; i < hw; i++) {
            float gray = 0.299f * r[i] + 0.587f * g[i] + 0.114f * b[i];
            r[i] = fminf(fmaxf(gray + (r[i] - gray) * f, 0.0f), 255.0f);
            g[i] = fminf(fmaxf(gray + (g[i] - gray) * f, 0.0f), 255.0f);
            b[i] = fminf(fmaxf(gray + (b[i] - gray) * f, 0.0f), 255.0f);
        }
    }
    if (a->grayscale > 0 && draw(a, epoch, pos, 4) < (float)a->grayscale) {
        for (int64_t i = 0; i < hw; i++) r[i] = g[i] = b[i] = 0.299f * r[i] + 0.587f * g[i] + 0.114f * b[i];
    }
    int64_t dy = 0, dx = 0;
    if (a->crop_pad > 0) {
        int64_t span = 2 * a->crop_pad + 1;
        dy = (int64_t)(draw(a, epoch, pos, 5) * (float)span) - a->crop_pad;
        dx = (int64_t)(draw(a, epoch, pos, 6) * (float)span) - a->crop_pad;
        if (dy > a->crop_pad) dy = a->crop_pad;
        if (dx > a->crop_pad) dx = a->crop_pad;
    }
    for (int c = 0; c < 3; c++) {
        float inv = 1.0f / a->std[c], black = -a->mean[c] * inv;
        for (int64_t y = 0; y < a->h; y++) {
            int64_t sy = y + dy;
            for (int64_t x = 0; x < a->w; x++) {
                int64_t sx = x + dx;
                dst[(c * a->h + y) * a->w + x] = (sy < 0 || sy >= a->h || sx < 0 || sx >= a->w)
                    ? black : (p[(c * a->h + sy) * a->w + sx] - a->mean[c]) * inv;
            }
        }
    }
}

int facet_augment_image(const struct facet_augment *a, int64_t epoch, int64_t pos, const unsigned char *rgb,
                        int64_t ih, int64_t iw, float **plane, float *dst)
{
    int flip = flip_draw(a, epoch, pos);
    if (!a->crop_pad && a->brightness == 0 && a->contrast == 0 && a->saturation == 0 && a->grayscale == 0) {
        /* resize, flip and normalise in one pass, straight into dst */
        float inv[3] = { 1.0f / a->std[0], 1.0f / a->std[1], 1.0f / a->std[2] };
        facet_image_prepare_raw(dst, a->h, a->w, rgb, ih, iw, flip, a->mean, inv);
        return 0;
    }
    if (!*plane) {
        *plane = malloc(sizeof(float) * 3 * (size_t)(a->h * a->w));
        if (!*plane) return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_loader: out of memory");
    }
    static const float zero[3] = { 0, 0, 0 }, one[3] = { 1, 1, 1 };
    facet_image_prepare_raw(*plane, a->h, a->w, rgb, ih, iw, flip, zero, one);
    jitter_crop(a, epoch, pos, *plane, dst);
    return 0;
}
