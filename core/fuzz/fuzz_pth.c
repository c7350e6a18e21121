/*
 * fuzz_pth.c - libFuzzer target for the PyTorch .pth reader (the zip
 * directory, the pickle with its allow-list, the storage records): the input
 * is written to a temporary file and parsed; every tensor's name, info and
 * elements are then read. Nothing in the file may ever be executed or crash
 * the reader.
 */
#include "facet.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/facet_fuzz_%d.pth", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    facet_pth *h = NULL;
    if (facet_pth_init(&h, path) == 0) {
        int64_t n = 0, sizes[FACET_MAX_DIMS];
        int dtype, ndim;
        char name[1024];
        static uint8_t buf[1 << 16];
        facet_pth_count(h, &n);
        for (int64_t i = 0; i < n && i < 256; i++) {
            facet_pth_name(h, i, name, sizeof name);
            facet_pth_info(h, i, &dtype, &ndim, sizes);
            facet_pth_read(h, i, buf, sizeof buf);
        }
        facet_pth_free(h);
    }
    unlink(path);
    return 0;
}
