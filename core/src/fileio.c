/*
 * fileio.c - file reads shared by the dataset readers (binfile.c,
 * recordio.c). They read only through pread(), at explicit offsets, so one
 * open handle serves many threads.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

int facet_pread_full(int fd, const char *fn, const char *path, void *dst, int64_t n, int64_t offset)
{
    uint8_t *d = dst;
    while (n > 0) {
        ssize_t got = pread(fd, d, (size_t)n, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: read at byte %lld failed: %s", fn, path,
                                       (long long)offset, strerror(errno));
        if (got == 0) return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: file ended at byte %lld (truncated while open?)",
                                        fn, path, (long long)offset);
        d += got;
        n -= got;
        offset += got;
    }
    return 0;
}
