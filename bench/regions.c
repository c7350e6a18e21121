/*
 * bench/regions.c - how much CPU a barrier-synchronised OpenMP program gets
 * beside busy processes, with no facet in it: the ceiling that
 * bench/contention.lua's figures run into (docs/threads.md, "The ceiling").
 *
 * The program runs back-to-back parallel regions of REGION_US microseconds of
 * pure arithmetic each, cut into CHUNKS pieces taken dynamically by THREADS
 * threads (schedule(dynamic, 1): a running thread does the share of one that
 * waits for a core), beside BUSY busy-loop child processes, for SECONDS
 * seconds, and prints the work done in units of one thread on an idle core
 * ("cores of work": 2.00 would be two whole cores). The unit is calibrated
 * first, on one thread, before the busy processes start. Figures only.
 *
 *   cc -O1 -fopenmp bench/regions.c -o /tmp/regions
 *   /tmp/regions [THREADS=2] [REGION_US=3000] [CHUNKS=64] [BUSY=1] [SECONDS=3]
 *
 * OMP_WAIT_POLICY / GOMP_SPINCOUNT apply as for facet (facet sets
 * GOMP_SPINCOUNT=1000 for itself; set it here to compare).
 */
#define _GNU_SOURCE
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile double sink;

/* n units of dependent floating-point work: no memory traffic, so only the
 * CPU time a thread gets decides how fast it goes */
static void work(long n)
{
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)i * 0.5;
    sink += s;
}

static double arg(int argc, char **argv, int i, double fallback)
{
    return argc > i ? atof(argv[i]) : fallback;
}

int main(int argc, char **argv)
{
    int threads = (int)arg(argc, argv, 1, 2), chunks = (int)arg(argc, argv, 3, 64);
    int busy = (int)arg(argc, argv, 4, 1);
    double region_us = arg(argc, argv, 2, 3000), seconds = arg(argc, argv, 5, 3);
    if (threads < 1 || chunks < 1 || busy < 0 || busy > 64 || region_us <= 0 || seconds <= 0) {
        fprintf(stderr, "usage: regions [THREADS>=1] [REGION_US>0] [CHUNKS>=1] [BUSY 0..64] [SECONDS>0]\n");
        return 2;
    }
    /* calibration: units per microsecond on one thread, best of 5 */
    double per_us = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = omp_get_wtime();
        work(20000000);
        double u = 20000000 / ((omp_get_wtime() - t0) * 1e6);
        if (u > per_us) per_us = u;
    }
    pid_t kids[64];
    for (int i = 0; i < busy; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            /* a busy loop that ends by itself if the parent dies */
            pid_t parent = getppid();
            for (;;) {
                work(1000000);
                if (getppid() != parent) _exit(0);
            }
        }
    }
    usleep(200000);
    long per_chunk = (long)(region_us * per_us / chunks);
    long regions = 0;
    double start = omp_get_wtime(), elapsed;
    do {
        #pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int c = 0; c < chunks; c++) work(per_chunk);
        regions++;
        elapsed = omp_get_wtime() - start;
    } while (elapsed < seconds);
    for (int i = 0; i < busy; i++) {
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
        }
    }
    printf("threads %d, regions of %.0f us in %d chunks, beside %d busy: %.2f cores of work\n", threads,
           region_us, chunks, busy, (double)regions * per_chunk * chunks / per_us / (elapsed * 1e6));
    return 0;
}
