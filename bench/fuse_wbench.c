/* Write and metadata micro-benchmark for bench/fuse.sh (compiled on the fly).
 *
 *   fuse_wbench append FILE N SIZE   N appends of SIZE bytes, one write(2) each (O_APPEND);
 *                                    prints "writes_per_s p50_us p99_us max_us"
 *   fuse_wbench meta DIR N           N times: create+write 100 B+close, rename, unlink;
 *                                    prints "files_per_s"
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc >= 5 && strcmp(argv[1], "append") == 0) {
        long n = atol(argv[3]), size = atol(argv[4]);
        char *buf = malloc(size);
        long long *lat = malloc(sizeof(long long) * n);
        if (!buf || !lat) return 2;
        memset(buf, 'x', size);
        buf[size - 1] = '\n';
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) { perror("open"); return 1; }
        long long start = now_ns();
        for (long i = 0; i < n; i++) {
            long long t0 = now_ns();
            if (write(fd, buf, size) != size) { perror("write"); return 1; }
            lat[i] = now_ns() - t0;
        }
        long long total = now_ns() - start;
        close(fd);
        qsort(lat, n, sizeof(long long), cmp_ll);
        printf("%.0f %.1f %.1f %.1f\n", n / (total / 1e9), lat[n / 2] / 1e3,
               lat[(long)(n * 0.99)] / 1e3, lat[n - 1] / 1e3);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "meta") == 0) {
        long n = atol(argv[3]);
        char a[4096], b[4096], data[100];
        memset(data, 'm', sizeof data);
        long long start = now_ns();
        for (long i = 0; i < n; i++) {
            snprintf(a, sizeof a, "%s/f%ld", argv[2], i);
            snprintf(b, sizeof b, "%s/f%ld.old", argv[2], i);
            int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0) { perror("create"); return 1; }
            if (write(fd, data, sizeof data) != sizeof data) { perror("write"); return 1; }
            close(fd);
            if (rename(a, b) != 0) { perror("rename"); return 1; }
            if (unlink(b) != 0) { perror("unlink"); return 1; }
        }
        printf("%.0f\n", n / ((now_ns() - start) / 1e9));
        return 0;
    }
    fprintf(stderr, "usage: fuse_wbench append FILE N SIZE | meta DIR N\n");
    return 2;
}
