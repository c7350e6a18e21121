/*
 * loader.c - the threaded data loader (facet_loader_* in facet.h): worker
 * pthreads claim batches in order, read each image's bytes (RecordIO or
 * memory), decode them (image.c: facet_image_info, facet_image_decode_raw)
 * and prepare them (augment.c: facet_augment_image) into one of Q reused
 * slot buffers, and the caller takes the slots in order. Determinism: the
 * epoch's order is a Philox-driven shuffle of (seed, epoch), each image's
 * flip and augmentations Philox draws of (seed, epoch, position), and a
 * failed decode falls back to the next position in that order, so no
 * result depends on the threads.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "augment.h"
#include "random_math.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SLOT_FREE = 0, SLOT_FILLING = 1, SLOT_READY = 2 };

struct slot {
    facet_tensor *images;   /* B x 3 x H x W */
    facet_tensor *labels;   /* B int64 */
    int state;
    int64_t batch;          /* which batch it holds */
    int64_t count;          /* images in it (the last batch may be short) */
};

struct facet_loader {
    /* the source */
    const facet_recordio *rec;
    facet_tensor *bytes, *offsets, *labels;   /* memory source (own handles) */
    int64_t n;
    /* settings */
    int64_t h, w, batch, threads, queue, shuffle, drop_last;
    uint64_t seed;
    struct facet_augment aug;                 /* per image (augment.c) */
    /* the epoch */
    int64_t *order;
    int64_t epoch, nbatches;
    /* the queue */
    struct slot *slots;
    pthread_t *workers;
    int running, stop;
    int64_t next_claim, next_take, held;      /* held: the slot the caller has, -1 none */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    /* stats */
    double waited;
    int64_t skipped, delivered;
    int error_code;
    char error[512];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- sources ------------------------------------------------------------------------ */

/* The encoded bytes and label of image i into *buf (grown as needed). */
static int fetch(const facet_loader *l, int64_t i, unsigned char **buf, size_t *cap, size_t *size, int64_t *label)
{
    if (l->rec) {
        int64_t nb = 0;
        int rc = facet_recordio_image_info(l->rec, i, NULL, label, &nb);
        if (rc) return rc;
        if ((size_t)nb > *cap) {
            unsigned char *nbuf = realloc(*buf, (size_t)nb);
            if (!nbuf) return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_loader: out of memory");
            *buf = nbuf;
            *cap = (size_t)nb;
        }
        rc = facet_recordio_read_image(l->rec, i, *buf, *cap, &nb);
        *size = (size_t)nb;
        return rc;
    }
    const int64_t *off = facet_ptr(l->offsets);
    *label = ((const int64_t *)facet_ptr(l->labels))[i];
    *size = (size_t)(off[i + 1] - off[i]);
    *buf = (unsigned char *)facet_ptr(l->bytes) + off[i];   /* read in place */
    return 0;
}

/* ---- one image ------------------------------------------------------------------------ */

struct scratch {
    unsigned char *buf, *rgb;   /* encoded bytes (RecordIO), decoded pixels */
    size_t cap, rgb_cap;
    float *plane;               /* facet_augment_image's scratch */
};

static int prepare(facet_loader *l, struct scratch *s, int64_t pos, float *dst, int64_t *label)
{
    int64_t item = l->order[pos];
    unsigned char *bytes = NULL;
    size_t size = 0;
    int rc = fetch(l, item, l->rec ? &s->buf : &bytes, &s->cap, &size, label);
    if (rc) return rc;
    if (l->rec) bytes = s->buf;
    int format, w, h;
    rc = facet_image_info(bytes, size, &format, &w, &h);
    if (rc) return rc;
    size_t need = (size_t)w * (size_t)h * 3;
    if (need > s->rgb_cap) {
        unsigned char *nb = realloc(s->rgb, need);
        if (!nb) return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_loader: out of memory");
        s->rgb = nb;
        s->rgb_cap = need;
    }
    rc = facet_image_decode_raw(bytes, size, w, h, s->rgb);
    if (rc) return rc;
    return facet_augment_image(&l->aug, l->epoch, pos, s->rgb, h, w, &s->plane, dst);
}

/* ---- workers ------------------------------------------------------------------------- */

static void *worker(void *arg)
{
    facet_loader *l = arg;
    struct scratch s = { NULL, NULL, 0, 0, NULL };
    for (;;) {
        pthread_mutex_lock(&l->lock);
        /* a slot is busy from its claim until the caller moves past it: the
         * batch the caller holds counts too */
        while (!l->stop && l->next_claim < l->nbatches &&
               l->next_claim - (l->held >= 0 ? l->held : l->next_take) >= l->queue)
            pthread_cond_wait(&l->changed, &l->lock);
        if (l->stop || l->next_claim >= l->nbatches) {
            pthread_mutex_unlock(&l->lock);
            break;
        }
        int64_t b = l->next_claim++;
        struct slot *sl = &l->slots[b % l->queue];
        sl->state = SLOT_FILLING;
        sl->batch = b;
        pthread_mutex_unlock(&l->lock);

        int64_t first = b * l->batch, count = l->n - first < l->batch ? l->n - first : l->batch;
        float *imgs = facet_ptr(sl->images);
        int64_t *labs = facet_ptr(sl->labels);
        int64_t skipped = 0;
        int failed = 0;
        char why[512] = "";
        for (int64_t j = 0; j < count && !failed; j++) {
            int64_t pos = first + j, tries = 0;
            for (;;) {
                int rc = prepare(l, &s, pos, imgs + j * 3 * l->h * l->w, &labs[j]);
                if (!rc) break;
                if (rc == FACET_STATUS_ERR_MEMORY || rc == FACET_STATUS_ERR_ARG || ++tries >= l->n) {
                    failed = rc;
                    snprintf(why, sizeof why, "%s", facet_last_error());
                    break;
                }
                skipped++;                                  /* undecodable: the next one in order */
                pos = (pos + 1) % l->n;
            }
        }
        pthread_mutex_lock(&l->lock);
        sl->count = count;
        sl->state = SLOT_READY;
        l->skipped += skipped;
        if (failed && !l->error_code) {
            l->error_code = failed;
            snprintf(l->error, sizeof l->error, "%s", why);
        }
        pthread_cond_broadcast(&l->changed);
        pthread_mutex_unlock(&l->lock);
    }
    free(s.buf);
    free(s.rgb);
    free(s.plane);
    return NULL;
}

static void stop_workers(facet_loader *l)
{
    if (!l->running) return;
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    for (int64_t t = 0; t < l->threads; t++) pthread_join(l->workers[t], NULL);
    l->running = 0;
    l->stop = 0;
}

/* ---- construction -------------------------------------------------------------------- */

static int setup(facet_loader **out, facet_loader *l, const facet_loader_params *p)
{
    static const char *fn = "facet_loader_init";
    if (!p) return facet_fail(FACET_STATUS_ERR_ARG, "%s: params is NULL", fn);
    const double reals[] = { p->flip, p->brightness, p->contrast, p->saturation, p->grayscale, p->mean[0],
                             p->mean[1], p->mean[2], p->std[0], p->std[1], p->std[2] };
    static const char *const real_names[] = { "flip", "brightness", "contrast", "saturation", "grayscale", "mean[1]",
                                              "mean[2]", "mean[3]", "std[1]", "std[2]", "std[3]" };
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        if (!isfinite(reals[i])) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s is %g", fn, real_names[i], reals[i]);
    l->h = p->height;
    l->w = p->width;
    l->batch = p->batch;
    l->threads = p->threads;
    l->queue = p->queue;
    l->seed = p->seed;
    struct facet_augment *a = &l->aug;
    *a = (struct facet_augment){ .h = l->h, .w = l->w, .n = l->n, .seed = l->seed, .flip = p->flip,
                                 .brightness = p->brightness, .contrast = p->contrast, .saturation = p->saturation,
                                 .grayscale = p->grayscale, .crop_pad = p->crop_pad };
    l->shuffle = p->shuffle != 0;
    l->drop_last = p->drop_last != 0;
    for (int c = 0; c < 3; c++) {
        a->mean[c] = p->mean[c];
        a->std[c] = p->std[c];
        if (!(a->std[c] > 0)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: std must be > 0", fn);
    }
    if (l->h < 1 || l->w < 1 || l->h > 4096 || l->w > 4096)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: image size %lldx%lld (want 1..4096)", fn, (long long)l->h, (long long)l->w);
    if (l->batch < 1 || l->batch > 65536) return facet_fail(FACET_STATUS_ERR_ARG, "%s: batch %lld (want 1..65536)", fn, (long long)l->batch);
    if (l->threads < 1 || l->threads > 256) return facet_fail(FACET_STATUS_ERR_ARG, "%s: threads %lld (want 1..256)", fn, (long long)l->threads);
    if (l->queue < 1 || l->queue > 64) return facet_fail(FACET_STATUS_ERR_ARG, "%s: queue %lld (want 1..64)", fn, (long long)l->queue);
    if (!(a->flip >= 0 && a->flip <= 1)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: flip probability %g", fn, a->flip);
    if (!(a->grayscale >= 0 && a->grayscale <= 1)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: grayscale probability %g", fn, a->grayscale);
    if (!(a->brightness >= 0 && a->brightness <= 1) || !(a->contrast >= 0 && a->contrast <= 1) ||
        !(a->saturation >= 0 && a->saturation <= 1))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: brightness, contrast and saturation must be in [0, 1]", fn);
    if (a->crop_pad < 0 || a->crop_pad > 1024) return facet_fail(FACET_STATUS_ERR_ARG, "%s: crop padding %lld", fn, (long long)a->crop_pad);
    if (l->n < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: the source has no images", fn);
    l->nbatches = l->drop_last ? l->n / l->batch : (l->n + l->batch - 1) / l->batch;
    if (l->nbatches < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %lld images make no batch of %lld (drop_last)", fn,
                                           (long long)l->n, (long long)l->batch);
    l->order = malloc(sizeof(int64_t) * (size_t)l->n);
    l->slots = calloc((size_t)l->queue, sizeof *l->slots);
    l->workers = calloc((size_t)l->threads, sizeof *l->workers);
    if (!l->order || !l->slots || !l->workers) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    for (int64_t q = 0; q < l->queue; q++) {
        int64_t isz[4] = { l->batch, 3, l->h, l->w }, lsz[1] = { l->batch };
        /* pinned when a GPU is present: the batches are copied to it every step */
        int rc = facet_tensor_init_pinned(&l->slots[q].images, FACET_DTYPE_FLOAT32, 4, isz);
        if (!rc) rc = facet_tensor_init_pinned(&l->slots[q].labels, FACET_DTYPE_INT64, 1, lsz);
        if (rc) return rc;
    }
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->changed, NULL);
    l->held = -1;
    *out = l;
    return 0;
}

static void destroy(facet_loader *l)
{
    if (!l) return;
    if (l->slots) {
        for (int64_t q = 0; q < l->queue; q++) {
            facet_tensor_free(l->slots[q].images);
            facet_tensor_free(l->slots[q].labels);
        }
    }
    free(l->slots);
    free(l->workers);
    free(l->order);
    facet_tensor_free(l->bytes);
    facet_tensor_free(l->offsets);
    facet_tensor_free(l->labels);
    free(l);
}

int facet_loader_init_recordio(facet_loader **out, const facet_recordio *rec, const facet_loader_params *params)
{
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "facet_loader_init_recordio: out is NULL");
    *out = NULL;
    if (!rec) return facet_fail(FACET_STATUS_ERR_ARG, "facet_loader_init_recordio: rec is NULL");
    facet_loader *l = calloc(1, sizeof *l);
    if (!l) return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_loader_init_recordio: out of memory");
    l->rec = rec;
    int rc = facet_recordio_num_images(rec, &l->n);
    if (!rc) rc = setup(out, l, params);
    if (rc) { destroy(l); *out = NULL; }
    return rc;
}

int facet_loader_init_memory(facet_loader **out, const facet_tensor *bytes, const facet_tensor *offsets,
                            const facet_tensor *labels, const facet_loader_params *params)
{
    static const char *fn = "facet_loader_init_memory";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    int rc = facet_check_dtype(fn, "bytes", bytes, FACET_DTYPE_UINT8);
    if (!rc) rc = facet_check_dtype(fn, "offsets", offsets, FACET_DTYPE_INT64);
    if (!rc) rc = facet_check_dtype(fn, "labels", labels, FACET_DTYPE_INT64);
    if (rc) return rc;
    if (bytes->device != FACET_DEVICE_CPU || offsets->device != FACET_DEVICE_CPU || labels->device != FACET_DEVICE_CPU ||
        !facet_contiguous(bytes) || !facet_contiguous(offsets) || !facet_contiguous(labels) || offsets->ndim != 1 ||
        labels->ndim != 1 || offsets->sizes[0] != labels->sizes[0] + 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want contiguous CPU bytes, offsets (n + 1) and labels (n); got %s, %s, %s",
                          fn, facet_desc(bytes), facet_desc(offsets), facet_desc(labels));
    int64_t n = labels->sizes[0], total = facet_numel(bytes);
    const int64_t *off = facet_ptr(offsets);
    for (int64_t i = 0; i < n; i++)
        if (off[i] < 0 || off[i + 1] < off[i] || off[i + 1] > total)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: offsets %lld..%lld of image %lld outside the %lld bytes", fn,
                              (long long)off[i], (long long)off[i + 1], (long long)i, (long long)total);
    facet_loader *l = calloc(1, sizeof *l);
    if (!l) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    l->n = n;
    rc = facet_tensor_share(&l->bytes, bytes);
    if (!rc) rc = facet_tensor_share(&l->offsets, offsets);
    if (!rc) rc = facet_tensor_share(&l->labels, labels);
    if (!rc) rc = setup(out, l, params);
    if (rc) { destroy(l); *out = NULL; }
    return rc;
}

int facet_loader_batches(const facet_loader *loader, int64_t *count)
{
    if (!loader || !count) return facet_fail(FACET_STATUS_ERR_ARG, "facet_loader_batches: NULL argument");
    *count = loader->nbatches;
    return 0;
}

/* the slot's buffers may be refilled: no queued device copy reads them */
static int wait_copies(struct slot *sl)
{
    int rc = facet_storage_wait_copies(sl->images->storage);
    return rc ? rc : facet_storage_wait_copies(sl->labels->storage);
}

int facet_loader_start(facet_loader *l, int64_t epoch, int64_t first_batch)
{
    static const char *fn = "facet_loader_start";
    if (!l) return facet_fail(FACET_STATUS_ERR_ARG, "%s: loader is NULL", fn);
    if (epoch < 0 || first_batch < 0 || first_batch > l->nbatches)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: epoch %lld, batch %lld (of %lld)", fn, (long long)epoch,
                          (long long)first_batch, (long long)l->nbatches);
    stop_workers(l);
    for (int64_t q = 0; q < l->queue; q++) {
        int rc = wait_copies(&l->slots[q]);
        if (rc) return rc;
    }
    l->epoch = epoch;
    for (int64_t i = 0; i < l->n; i++) l->order[i] = i;
    if (l->shuffle) {
        for (int64_t i = l->n - 1; i > 0; i--) {
            float u = facet_rand_uniform_at(l->seed, (uint64_t)epoch * (uint64_t)l->n + (uint64_t)i, 0.0f, 1.0f);
            int64_t j = (int64_t)(u * (float)(i + 1));
            if (j > i) j = i;
            int64_t t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    for (int64_t q = 0; q < l->queue; q++) l->slots[q].state = SLOT_FREE;
    l->next_claim = l->next_take = first_batch;
    l->held = -1;
    l->error_code = 0;
    l->running = 1;
    for (int64_t t = 0; t < l->threads; t++) {
        if (pthread_create(&l->workers[t], NULL, worker, l) != 0) {
            l->threads = t;
            stop_workers(l);
            return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: cannot start worker threads", fn);
        }
    }
    return 0;
}

int facet_loader_next(facet_loader *l, facet_tensor **images, facet_tensor **labels)
{
    static const char *fn = "facet_loader_next";
    if (!l || !images || !labels) return facet_fail(FACET_STATUS_ERR_ARG, "%s: NULL argument", fn);
    *images = *labels = NULL;
    int rc;
    if (!l->running) return facet_fail(FACET_STATUS_ERR_ARG, "%s: call facet_loader_start first", fn);
    /* queued copies from the held slot (facet.data.to_device) end before its workers refill it */
    if (l->held >= 0 && (rc = wait_copies(&l->slots[l->held % l->queue])) != 0) return rc;
    pthread_mutex_lock(&l->lock);
    if (l->held >= 0) {              /* the caller is done with the previous batch */
        l->slots[l->held % l->queue].state = SLOT_FREE;
        l->held = -1;
        pthread_cond_broadcast(&l->changed);
    }
    if (l->next_take >= l->nbatches) {
        pthread_mutex_unlock(&l->lock);
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: the epoch's %lld batches are all taken", fn, (long long)l->nbatches);
    }
    struct slot *sl = &l->slots[l->next_take % l->queue];
    double t0 = now();
    while (!(sl->state == SLOT_READY && sl->batch == l->next_take)) pthread_cond_wait(&l->changed, &l->lock);
    l->waited += now() - t0;
    int err = l->error_code;
    char why[512];
    snprintf(why, sizeof why, "%s", l->error);
    l->held = l->next_take++;
    l->delivered += sl->count;
    pthread_mutex_unlock(&l->lock);
    if (err) return facet_fail(err, "%s: %s", fn, why);
    if (sl->count == l->batch) {
        rc = facet_tensor_share(images, sl->images);
        if (!rc) rc = facet_tensor_share(labels, sl->labels);
    } else {
        rc = facet_tensor_narrow(images, sl->images, 0, 0, sl->count);
        if (!rc) rc = facet_tensor_narrow(labels, sl->labels, 0, 0, sl->count);
    }
    return rc;
}

int facet_loader_stats(const facet_loader *l, double *wait_seconds, int64_t *skipped, int64_t *delivered)
{
    if (!l) return facet_fail(FACET_STATUS_ERR_ARG, "facet_loader_stats: loader is NULL");
    pthread_mutex_lock((pthread_mutex_t *)&l->lock);
    if (wait_seconds) *wait_seconds = l->waited;
    if (skipped) *skipped = l->skipped;
    if (delivered) *delivered = l->delivered;
    pthread_mutex_unlock((pthread_mutex_t *)&l->lock);
    return 0;
}

int facet_loader_free(facet_loader *l)
{
    if (!l) return 0;
    stop_workers(l);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->changed);
    destroy(l);
    return 0;
}
