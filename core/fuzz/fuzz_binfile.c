/*
 * fuzz_binfile.c - libFuzzer target for the verification .bin pickle reader:
 * the input is written to a temporary file and parsed; every pair and image
 * is then read. Nothing in the file may ever be executed or crash the reader.
 */
#include "facet.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/facet_fuzz_%d.bin", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    facet_binfile *b = NULL;
    if (facet_binfile_init(&b, path) == 0) {
        int64_t pairs = 0, nb = 0;
        int same;
        static uint8_t buf[1 << 16];
        facet_binfile_pairs(b, &pairs);
        for (int64_t p = 0; p < pairs && p < 64; p++) facet_binfile_issame(b, p, &same);
        for (int64_t i = 0; i < 2 * pairs && i < 128; i++) {
            facet_binfile_image_size(b, i, &nb);
            facet_binfile_read_image(b, i, buf, sizeof buf, &nb);
        }
        facet_binfile_free(b);
    }
    unlink(path);
    return 0;
}
