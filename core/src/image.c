/*
 * image.c - JPEG (libjpeg-turbo) and PNG (libpng) decoding from memory into
 * RGB uint8 H x W x 3, and the resize/flip/normalise step that turns a decoded
 * image into the float32 3 x H x W a network eats. Corrupt data is an error
 * with the decoder's message, never a longjmp out of facet or an exit.
 */
#include "internal.h"
#include <stdio.h>      /* jpeglib.h needs FILE */
#include <jpeglib.h>
#include <jerror.h>     /* the JWRN_* message codes */
#include <png.h>
#include <setjmp.h>
#include <string.h>

static int sniff(const unsigned char *b, size_t n)
{
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return FACET_IMAGE_FORMAT_JPEG;
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return FACET_IMAGE_FORMAT_PNG;
    return FACET_IMAGE_FORMAT_UNKNOWN;
}

/* ---- JPEG -------------------------------------------------------------------------- */

struct jpeg_guard {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr cinfo)
{
    struct jpeg_guard *g = (struct jpeg_guard *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, g->message);
    longjmp(g->jump, 1);
}

/* libjpeg reports pixel data it cannot decode as warnings and carries on with
 * grey pixels: a file cut short (JWRN_JPEG_EOF: libjpeg inserts a fake end
 * marker), a scan cut at a marker, bad entropy codes, a lost restart marker.
 * Those are errors here: part of the image is missing. The warnings that
 * leave every pixel decoded (extraneous bytes between markers, an unknown
 * Adobe transform or JFIF version, a bad ICC profile, odd scan parameters)
 * stay silent. */
static void jpeg_warning(j_common_ptr cinfo, int level)
{
    if (level >= 0) return;     /* trace messages */
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF: case JWRN_HIT_MARKER: case JWRN_HUFF_BAD_CODE: case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
        jpeg_fail(cinfo);
        break;
    default:
        break;
    }
}

/* header only (rgb == NULL) or a full decode into rgb (w*h*3 bytes) */
static int jpeg_run(const char *fn, const unsigned char *bytes, size_t n, int *w, int *h, unsigned char *rgb)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_guard guard;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&guard.mgr);
    guard.mgr.error_exit = jpeg_fail;
    guard.mgr.emit_message = jpeg_warning;
    if (setjmp(guard.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return facet_fail(FACET_STATUS_ERR_IO, "%s: corrupt JPEG: %s", fn, guard.message);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, bytes, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    if (!rgb) {
        *w = (int)cinfo.image_width;
        *h = (int)cinfo.image_height;
        jpeg_destroy_decompress(&cinfo);
        return 0;
    }
    if ((int)cinfo.image_width != *w || (int)cinfo.image_height != *h) {
        jpeg_destroy_decompress(&cinfo);
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: the JPEG is %ux%u, out is %dx%d", fn, cinfo.image_width,
                          cinfo.image_height, *w, *h);
    }
    cinfo.out_color_space = JCS_RGB;    /* grayscale and CMYK-free JPEGs come out as RGB */
    jpeg_start_decompress(&cinfo);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = rgb + (size_t)cinfo.output_scanline * (size_t)*w * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

/* ---- PNG ---------------------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* a chunk type for a message: its four letters, or hex when it has others */
static const char *chunk_name(char *buf, size_t cap, const unsigned char *type)
{
    bool letters = true;
    for (int i = 0; i < 4; i++)
        if (!((type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z'))) letters = false;
    if (letters) snprintf(buf, cap, "'%c%c%c%c'", type[0], type[1], type[2], type[3]);
    else snprintf(buf, cap, "of type 0x%08x", (unsigned)be32(type));
    return buf;
}

/* libpng's simplified reader stops after the image data, so a file cut before
 * its IEND chunk would decode: walk the chunk lengths first (before anything
 * is written) and want every chunk whole, up to IEND. */
static int png_complete(const char *fn, const unsigned char *bytes, size_t n)
{
    char name[24];
    size_t pos = 8;
    while (pos + 8 <= n) {
        uint32_t len = be32(bytes + pos);
        if (len > 0x7fffffffu)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: corrupt PNG: chunk at byte %zu has length %u (more than 2^31 - 1)",
                              fn, pos, len);
        if ((uint64_t)len + 12 > n - pos)
            return facet_fail(FACET_STATUS_ERR_IO, "%s: truncated PNG: chunk %s at byte %zu needs %llu bytes, %zu remain",
                              fn, chunk_name(name, sizeof name, bytes + pos + 4), pos, (unsigned long long)len + 12,
                              n - pos);
        if (!memcmp(bytes + pos + 4, "IEND", 4)) return 0;
        pos += (size_t)len + 12;
    }
    if (pos < n)
        return facet_fail(FACET_STATUS_ERR_IO, "%s: truncated PNG: the file ends %zu bytes into a chunk header at byte %zu",
                          fn, n - pos, pos);
    return facet_fail(FACET_STATUS_ERR_IO, "%s: truncated PNG: no IEND chunk in its %zu bytes", fn, n);
}

static int png_run(const char *fn, const unsigned char *bytes, size_t n, int *w, int *h, unsigned char *rgb)
{
    int rc = png_complete(fn, bytes, n);
    if (rc) return rc;
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, bytes, n))
        return facet_fail(FACET_STATUS_ERR_IO, "%s: corrupt PNG: %s", fn, img.message);
    if (!rgb) {
        *w = (int)img.width;
        *h = (int)img.height;
        png_image_free(&img);
        return 0;
    }
    if ((int)img.width != *w || (int)img.height != *h) {
        png_image_free(&img);
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: the PNG is %ux%u, out is %dx%d", fn, img.width, img.height, *w, *h);
    }
    img.format = PNG_FORMAT_RGB;        /* alpha and palettes are composed away */
    if (!png_image_finish_read(&img, NULL, rgb, 0, NULL)) {
        png_image_free(&img);
        return facet_fail(FACET_STATUS_ERR_IO, "%s: corrupt PNG: %s", fn, img.message);
    }
    return 0;
}

int facet_image_info(const void *bytes, size_t size, int *format, int *width, int *height)
{
    static const char *fn = "facet_image_info";
    if (!bytes || !format || !width || !height) return facet_fail(FACET_STATUS_ERR_ARG, "%s: NULL argument", fn);
    *format = sniff(bytes, size);
    *width = *height = 0;
    int rc;
    if (*format == FACET_IMAGE_FORMAT_JPEG) rc = jpeg_run(fn, bytes, size, width, height, NULL);
    else if (*format == FACET_IMAGE_FORMAT_PNG) rc = png_run(fn, bytes, size, width, height, NULL);
    else return facet_fail(FACET_STATUS_ERR_IO, "%s: %zu bytes are neither JPEG nor PNG", fn, size);
    if (rc) return rc;
    if (*width < 1 || *height < 1 || (int64_t)*width * *height > (INT64_C(1) << 28))
        return facet_fail(FACET_STATUS_ERR_IO, "%s: implausible image size %dx%d", fn, *width, *height);
    return 0;
}

int facet_image_decode(facet_tensor *out, const void *bytes, size_t size)
{
    static const char *fn = "facet_image_decode";
    int rc = facet_check_dtype(fn, "out", out, FACET_DTYPE_UINT8);
    if (rc) return rc;
    if (out->device != FACET_DEVICE_CPU || out->ndim != 3 || out->sizes[2] != 3 || !facet_contiguous(out))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out must be a contiguous H x W x 3 uint8 CPU tensor, got %s", fn,
                          facet_desc(out));
    if (!bytes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: bytes is NULL", fn);
    if (out->sizes[0] > INT32_MAX || out->sizes[1] > INT32_MAX)     /* no image is that large: no int truncation */
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s is larger than any image", fn, facet_desc(out));
    int w = (int)out->sizes[1], h = (int)out->sizes[0];
    int format = sniff(bytes, size);
    if (format == FACET_IMAGE_FORMAT_JPEG) return jpeg_run(fn, bytes, size, &w, &h, facet_ptr(out));
    if (format == FACET_IMAGE_FORMAT_PNG) return png_run(fn, bytes, size, &w, &h, facet_ptr(out));
    return facet_fail(FACET_STATUS_ERR_IO, "%s: %zu bytes are neither JPEG nor PNG", fn, size);
}

/* ---- to network input ---------------------------------------------------------------- */

FACET_CLONES static void to_chw(float *out, const unsigned char *rgb, int64_t h, int64_t w, int64_t oh, int64_t ow,
                                int flip, const float *mean, const float *inv_std)
{
    /* bilinear with aligned centres (PyTorch's align_corners = false); the
     * identity when sizes match */
    float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
    for (int64_t y = 0; y < oh; y++) {
        float fy = ((float)y + 0.5f) * sy - 0.5f;
        if (fy < 0) fy = 0;
        int64_t y0 = (int64_t)fy, y1 = y0 + 1 < h ? y0 + 1 : h - 1;
        float wy = fy - (float)y0;
        for (int64_t x = 0; x < ow; x++) {
            int64_t xs = flip ? ow - 1 - x : x;
            float fx = ((float)xs + 0.5f) * sx - 0.5f;
            if (fx < 0) fx = 0;
            int64_t x0 = (int64_t)fx, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
            float wx = fx - (float)x0;
            for (int c = 0; c < 3; c++) {
                float a = rgb[(y0 * w + x0) * 3 + c], b = rgb[(y0 * w + x1) * 3 + c];
                float d = rgb[(y1 * w + x0) * 3 + c], e = rgb[(y1 * w + x1) * 3 + c];
                float v = (a * (1 - wx) + b * wx) * (1 - wy) + (d * (1 - wx) + e * wx) * wy;
                out[(c * oh + y) * ow + x] = (v - mean[c]) * inv_std[c];
            }
        }
    }
}

int facet_image_decode_raw(const void *bytes, size_t size, int w, int h, unsigned char *rgb)
{
    static const char *fn = "facet_loader";
    int format = sniff(bytes, size);
    if (format == FACET_IMAGE_FORMAT_JPEG) return jpeg_run(fn, bytes, size, &w, &h, rgb);
    if (format == FACET_IMAGE_FORMAT_PNG) return png_run(fn, bytes, size, &w, &h, rgb);
    return facet_fail(FACET_STATUS_ERR_IO, "%s: %zu bytes are neither JPEG nor PNG", fn, size);
}

void facet_image_prepare_raw(float *dst, int64_t oh, int64_t ow, const unsigned char *rgb, int64_t h, int64_t w,
                             int flip, const float *mean, const float *inv_std)
{
    to_chw(dst, rgb, h, w, oh, ow, flip, mean, inv_std);
}

int facet_image_to_tensor(facet_tensor *out, const facet_tensor *rgb, int flip, const float *mean, const float *std)
{
    static const char *fn = "facet_image_to_tensor";
    int rc = facet_check_dtype(fn, "out", out, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "rgb", rgb, FACET_DTYPE_UINT8);
    if (rc) return rc;
    if (rgb->device != FACET_DEVICE_CPU || out->device != FACET_DEVICE_CPU)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: images are prepared on the CPU", fn);
    if (rgb->ndim != 3 || rgb->sizes[2] != 3 || !facet_contiguous(rgb) || out->ndim != 3 || out->sizes[0] != 3 ||
        !facet_contiguous(out) || rgb->sizes[0] < 1 || rgb->sizes[1] < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want rgb H x W x 3 and out 3 x H' x W', got %s and %s", fn,
                          facet_desc(rgb), facet_desc(out));
    if (!mean || !std) return facet_fail(FACET_STATUS_ERR_ARG, "%s: mean and std are required", fn);
    float inv[3];
    for (int c = 0; c < 3; c++) {
        if (!(std[c] > 0)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: std[%d] must be > 0", fn, c);
        inv[c] = 1.0f / std[c];
    }
    to_chw(facet_ptr(out), facet_ptr(rgb), rgb->sizes[0], rgb->sizes[1], out->sizes[1], out->sizes[2], flip != 0, mean,
           inv);
    return 0;
}

int facet_image_encode_png(const facet_tensor *rgb, void *dst, size_t capacity, size_t *size)
{
    static const char *fn = "facet_image_encode_png";
    int rc = facet_check_dtype(fn, "rgb", rgb, FACET_DTYPE_UINT8);
    if (rc) return rc;
    if (!size) return facet_fail(FACET_STATUS_ERR_ARG, "%s: size is NULL", fn);
    if (rgb->device != FACET_DEVICE_CPU || rgb->ndim != 3 || rgb->sizes[2] != 3 || !facet_contiguous(rgb) ||
        rgb->sizes[0] < 1 || rgb->sizes[1] < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want a contiguous H x W x 3 uint8 CPU tensor, got %s", fn, facet_desc(rgb));
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)rgb->sizes[1];
    img.height = (png_uint_32)rgb->sizes[0];
    img.format = PNG_FORMAT_RGB;
    png_alloc_size_t need = 0;
    if (!png_image_write_to_memory(&img, NULL, &need, 0, facet_ptr(rgb), 0, NULL))
        return facet_fail(FACET_STATUS_ERR_IO, "%s: %s", fn, img.message);
    *size = (size_t)need;
    if (!dst) return 0;
    if (capacity < need) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %zu bytes given, the PNG needs %zu", fn, capacity, (size_t)need);
    png_alloc_size_t got = capacity;
    if (!png_image_write_to_memory(&img, dst, &got, 0, facet_ptr(rgb), 0, NULL))
        return facet_fail(FACET_STATUS_ERR_IO, "%s: %s", fn, img.message);
    *size = (size_t)got;
    return 0;
}
