/*
 * fuzz_image.c - libFuzzer target for JPEG/PNG decoding from memory: header
 * parsing, then a full decode into a buffer of the announced size.
 */
#include "facet.h"
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int format, w, h;
    if (facet_image_info(data, size, &format, &w, &h) != 0) return 0;
    if ((int64_t)w * h > 4096 * 4096) return 0;      /* keep runs fast; sizes are checked anyway */
    int64_t sizes[3] = { h, w, 3 };
    facet_tensor *t = NULL;
    if (facet_tensor_init(&t, FACET_DTYPE_UINT8, FACET_DEVICE_CPU, 3, sizes) != 0) return 0;
    facet_image_decode(t, data, size);
    facet_tensor_free(t);
    return 0;
}
