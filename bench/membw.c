/* Memory read bandwidth, the bound on decode: what a decode step does to the weights is read
 * every byte once, so this reads a buffer once per pass with THREADS threads (OpenMP, each
 * its own contiguous share, first touched by the thread that reads it) and reports the best
 * and median pass in GB/s (10^9 bytes per second).
 *
 * Usage: membw THREADS BYTES PASSES
 * Prints one JSON object: {"threads", "bytes", "passes", "best_gb_s", "median_gb_s"}.
 *
 * Built and run by bench/engine_cpu.sh on the machine it measures (cc -O3 -march=native
 * -fopenmp): the sum is vectorised and its result printed, so no pass can be optimised away.
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s THREADS BYTES PASSES\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    size_t bytes = strtoull(argv[2], NULL, 10);
    int passes = atoi(argv[3]);
    if (threads < 1 || bytes < 4096 || passes < 1) {
        fprintf(stderr, "membw: THREADS >= 1, BYTES >= 4096, PASSES >= 1\n");
        return 2;
    }
    omp_set_num_threads(threads);
    size_t words = bytes / sizeof(uint64_t);
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, words * sizeof(uint64_t)) != 0) {
        fprintf(stderr, "membw: cannot allocate %zu bytes\n", bytes);
        return 1;
    }
    /* First touch by the reading thread (same static schedule as the reads). */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < words; i++) buf[i] = i * 2654435761u;

    double *gb_s = calloc((size_t)passes, sizeof(double));
    uint64_t checksum = 0;
    for (int p = 0; p < passes; p++) {
        uint64_t sum = 0;
        double start = now_s();
#pragma omp parallel for schedule(static) reduction(+ : sum)
        for (size_t i = 0; i < words; i++) sum += buf[i];
        double elapsed = now_s() - start;
        checksum += sum;
        gb_s[p] = (double)(words * sizeof(uint64_t)) / elapsed / 1e9;
    }
    qsort(gb_s, (size_t)passes, sizeof(double), cmp_double);
    printf("{\"threads\": %d, \"bytes\": %zu, \"passes\": %d, \"best_gb_s\": %.2f, "
           "\"median_gb_s\": %.2f, \"checksum\": %llu}\n",
           threads, words * sizeof(uint64_t), passes, gb_s[passes - 1], gb_s[passes / 2],
           (unsigned long long)checksum);
    free(gb_s);
    free(buf);
    return 0;
}
