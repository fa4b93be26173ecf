/*
 * alloc: a workload that keeps allocating, for forecopy's tests of a process whose memory grows
 * during the migration.
 *
 *   alloc [--mb-per-s 16] [--max-mb 256] [--block-kb 256] [--seed N]
 *
 * Allocates blocks of --block-kb KiB at --mb-per-s MiB per second until --max-mb MiB, filling
 * each with pseudo-random data, and all the while rewrites random words of the blocks it has
 * (about 320000 words per second). Blocks alternate between fresh anonymous mmaps (new mappings)
 * and malloc from the brk heap (the heap grows; the mmap threshold is raised so glibc does not
 * turn them into mmaps). Prints `alloc pid=<pid> ready` at start. After a stall longer than
 * 100 ms (e.g. frozen by a migration) the allocation schedule restarts from now instead of
 * catching up with a burst.
 *
 * Self-check: the XOR of every block's words is kept up to date with each write; on SIGUSR1 it
 * prints `alloc check ok blocks=<n> mb=<allocated MiB>` or `alloc check CORRUPT block=<i>`.
 * SIGTERM/SIGINT: exit code 0. Argument errors: one line on stderr, exit code 2.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static const char usage[] =
    "usage: alloc [--mb-per-s 16] [--max-mb 256] [--block-kb 256] [--seed N]\n"
    "  allocates and fills --mb-per-s MiB/s up to --max-mb, rewriting words all the while;\n"
    "  prints 'alloc pid=<pid> ready'; SIGUSR1 prints 'alloc check ok blocks=<n> mb=<m>'\n"
    "example: alloc --mb-per-s 32 --max-mb 128   # then kill -USR1 <pid> to check it\n";

static uint64_t st;
static inline uint64_t xs(void) { return wl_xorshift(&st); }

int main(int argc, char **argv) {
  long rate = 16, max_mb = 256, block_kb = 256, seed = 1;
  wl_init("alloc", usage);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (wl_is_help(a)) wl_help();
    else if (!strcmp(a, "--mb-per-s")) rate = wl_long_arg(argv, &i, 1, 100000);
    else if (!strcmp(a, "--max-mb")) max_mb = wl_long_arg(argv, &i, 1, 1L << 24);
    else if (!strcmp(a, "--block-kb")) block_kb = wl_long_arg(argv, &i, 4, 16384);
    else if (!strcmp(a, "--seed")) seed = wl_long_arg(argv, &i, 0, 0x7fffffffL);
    else wl_die_usage("unknown option: %s", a);
  }
  st = ((uint64_t)seed * 0x9E3779B97F4A7C15ull + 88172645463325252ull) | 1;
  /* malloc'd blocks come from the brk heap, not from mmaps of their own */
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  size_t block = (size_t)block_kb * 1024, words = block / 8, maxblocks = ((size_t)max_mb << 20) / block;
  if (maxblocks < 1) maxblocks = 1;
  uint64_t **blocks = calloc(maxblocks, sizeof *blocks);
  uint64_t *acc = calloc(maxblocks, sizeof *acc);
  if (!blocks || !acc) { perror("alloc: calloc"); return 1; }
  wl_catch_signals();
  printf("alloc pid=%d ready\n", getpid());
  size_t n = 0, scheduled = 0; /* blocks allocated; blocks allocated since t0 */
  const double per_block = (double)block / ((double)rate * 1048576.0); /* seconds */
  double t0 = wl_now_s();
  while (!wl_want_exit) {
    double t = wl_now_s();
    /* allocate what is due, at most ~20 ms worth at a time so writes go on meanwhile */
    for (int k = 0; n < maxblocks && t >= t0 + (double)(scheduled + 1) * per_block && k < 64; k++) {
      if (t - (t0 + (double)(scheduled + 1) * per_block) > 0.1) { t0 = t; scheduled = 0; continue; }
      void *b;
      if (n % 2 == 0) {
        b = mmap(NULL, block, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED) { perror("alloc: mmap"); return 1; }
      } else {
        b = malloc(block);
        if (!b) { perror("alloc: malloc"); return 1; }
      }
      blocks[n] = b;
      acc[n] = 0;
      for (size_t w = 0; w < words; w++) { blocks[n][w] = xs(); acc[n] ^= blocks[n][w]; }
      n++;
      scheduled++;
      t = wl_now_s();
    }
    for (int k = 0; k < 64 && n > 0; k++) {
      size_t b = xs() % n, w = xs() % words;
      uint64_t v = xs();
      acc[b] ^= blocks[b][w] ^ v;
      blocks[b][w] = v;
    }
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
    if (wl_want_check) {
      wl_want_check = 0;
      long bad = -1;
      for (size_t b = 0; b < n && bad < 0; b++) {
        uint64_t x = 0;
        for (size_t w = 0; w < words; w++) x ^= blocks[b][w];
        if (x != acc[b]) bad = (long)b;
      }
      if (bad < 0) printf("alloc check ok blocks=%zu mb=%zu\n", n, (n * block) >> 20);
      else printf("alloc check CORRUPT block=%ld\n", bad);
    }
  }
  return 0;
}
