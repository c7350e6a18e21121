/*
 * test_counts.h - the `--counts FILE` option every C test program shares:
 * spec/run.sh passes it and reads "passed failed" back for its summary.
 */
#ifndef FACET_TEST_COUNTS_H
#define FACET_TEST_COUNTS_H

#include <stdio.h>
#include <string.h>

/* FILE of `prog --counts FILE`, or NULL. */
static inline const char *test_counts_path(int argc, char **argv)
{
    return argc == 3 && !strcmp(argv[1], "--counts") ? argv[2] : NULL;
}

/* Writes "passed failed" to path (nothing when path is NULL). */
static inline void test_counts_write(const char *path, int passed, int failed)
{
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "%d %d\n", passed, failed);
    fclose(f);
}

#endif
