/*
 * fuzz_recordio.c - libFuzzer target for the RecordIO reader: the input is
 * split at its first 0xFF byte into an .idx text and the .rec bytes, both
 * written to temporary files, then every image is read. Any crash, leak or
 * sanitizer report is a finding; error statuses are the expected outcome.
 */
#include "facet.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void put(const char *path, const uint8_t *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n) fwrite(d, 1, n, f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char rec[64], idx[64];
    snprintf(rec, sizeof rec, "/tmp/facet_fuzz_%d.rec", (int)getpid());
    snprintf(idx, sizeof idx, "/tmp/facet_fuzz_%d.idx", (int)getpid());
    const uint8_t *cut = memchr(data, 0xFF, size);
    size_t ni = cut ? (size_t)(cut - data) : size;
    put(idx, data, ni);
    put(rec, cut ? cut + 1 : data + size, cut ? size - ni - 1 : 0);
    facet_recordio *r = NULL;
    if (facet_recordio_init(&r, rec, idx) == 0) {
        int64_t n = 0, ids = 0;
        facet_recordio_num_images(r, &n);
        facet_recordio_num_identities(r, &ids);
        static uint8_t buf[1 << 16];
        for (int64_t i = 0; i < n && i < 64; i++) {
            int64_t key, label, nb;
            facet_recordio_image_info(r, i, &key, &label, &nb);
            facet_recordio_read_image(r, i, buf, sizeof buf, &nb);
        }
        for (int64_t j = 0; j < ids && j < 64; j++) {
            int64_t a, b;
            facet_recordio_identity(r, j, &a, &b);
        }
        facet_recordio_free(r);
    }
    unlink(rec);
    unlink(idx);
    return 0;
}
