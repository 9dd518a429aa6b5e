/*
 * slow_sync.c: an LD_PRELOAD shim for measuring the alert journal on a slow
 * disk. Built and used by scripts/storm.sh only (never linked into airbag).
 *
 *   gcc -O2 -shared -fPIC -o slow_sync.so scripts/slow_sync.c -ldl -lpthread
 *   SLOW_SYNC_US=1000 SLOW_SYNC_COUNTS=/tmp/counts LD_PRELOAD=./slow_sync.so airbag serve ...
 *
 * - SLOW_SYNC_US: microseconds added to every fdatasync and fsync, after the
 *   real call returns (0 or unset: none; only counted).
 * - SLOW_SYNC_COUNTS: a file the shim maps shared and keeps its counters in,
 *   readable by another process at any time while the server runs (4
 *   little-endian u64: fdatasync calls, fsync calls, ns spent in
 *   fdatasync, ns spent in fsync, the added delay included). Created if
 *   missing, zeroed at start.
 *
 * Rust's File::sync_data is fdatasync(2) and File::sync_all is fsync(2),
 * both called through libc, so interposing the two libc symbols sees every
 * sync the journal (and the checkpoints) make.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { FDATASYNC_CALLS, FSYNC_CALLS, FDATASYNC_NS, FSYNC_NS, SLOTS };

static uint64_t local_counts[SLOTS];
static uint64_t *counts = local_counts;
static long delay_us;
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);

__attribute__((constructor)) static void slow_sync_init(void) {
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    const char *us = getenv("SLOW_SYNC_US");
    delay_us = us ? atol(us) : 0;
    if (delay_us < 0) delay_us = 0;
    const char *path = getenv("SLOW_SYNC_COUNTS");
    if (path && *path) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            if (ftruncate(fd, sizeof(uint64_t) * SLOTS) == 0) {
                void *map = mmap(NULL, sizeof(uint64_t) * SLOTS, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (map != MAP_FAILED) counts = (uint64_t *)map;
            }
            close(fd);
        }
    }
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void pause_us(long us) {
    if (us <= 0) return;
    struct timespec t = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&t, &t) != 0) {
    }
}

static int timed(int (*real)(int), int fd, int calls, int ns) {
    uint64_t started = now_ns();
    int rc = real ? real(fd) : 0;
    pause_us(delay_us);
    __atomic_add_fetch(&counts[calls], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&counts[ns], now_ns() - started, __ATOMIC_RELAXED);
    return rc;
}

int fdatasync(int fd) { return timed(real_fdatasync, fd, FDATASYNC_CALLS, FDATASYNC_NS); }

int fsync(int fd) { return timed(real_fsync, fd, FSYNC_CALLS, FSYNC_NS); }
