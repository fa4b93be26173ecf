/*
 * alloc: a workload that keeps allocating, for forecopy's tests of a process whose memory grows
 * during the migration.
 *
 *   alloc [--mb-per-s 16] [--max-mb 256] [--block-kb 256]
 *
 * Allocates blocks (malloc: small ones grow the heap, large ones are fresh mmaps) at --mb-per-s
 * until --max-mb, filling each with data, and keeps rewriting words in the blocks it has. Prints
 * `alloc pid=<pid> ready` at start. Keeps the XOR of every block's words up to date; on SIGUSR1
 * prints `alloc check ok blocks=<n>` or `alloc check CORRUPT block=<i>`. SIGTERM/SIGINT: exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_check = 0, want_exit = 0;
static void on_usr1(int s) { (void)s; want_check = 1; }
static void on_term(int s) { (void)s; want_exit = 1; }

static uint64_t st = 88172645463325252ull;
static inline uint64_t xs(void) { st ^= st << 13; st ^= st >> 7; st ^= st << 17; return st; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long num(const char *name, const char *v, long min, long max) {
  char *end;
  if (!v) { fprintf(stderr, "alloc: missing value for %s\n", name); exit(2); }
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || *end || n < min || n > max) { fprintf(stderr, "alloc: %s must be from %ld to %ld\n", name, min, max); exit(2); }
  return n;
}

int main(int argc, char **argv) {
  long rate = 16, max_mb = 256, block_kb = 256;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help")) { puts("usage: alloc [--mb-per-s 16] [--max-mb 256] [--block-kb 256]\nexample: alloc --mb-per-s 32 --max-mb 128"); return 0; }
    else if (!strcmp(a, "--mb-per-s")) { rate = num(a, v, 1, 100000); i++; }
    else if (!strcmp(a, "--max-mb")) { max_mb = num(a, v, 1, 1 << 20); i++; }
    else if (!strcmp(a, "--block-kb")) { block_kb = num(a, v, 4, 1 << 20); i++; }
    else { fprintf(stderr, "alloc: unknown option: %s\n", a); return 2; }
  }
  size_t block = (size_t)block_kb * 1024, words = block / 8, maxblocks = ((size_t)max_mb << 20) / block;
  uint64_t **blocks = calloc(maxblocks, sizeof *blocks);
  uint64_t *acc = calloc(maxblocks, sizeof *acc);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  printf("alloc pid=%d ready\n", getpid());
  fflush(stdout);
  size_t n = 0;
  double t0 = now_s();
  while (!want_exit) {
    double due = t0 + (double)(n + 1) * (double)block / ((double)rate * 1048576.0);
    if (n < maxblocks && now_s() >= due) {
      blocks[n] = malloc(block); /* >= 128 KiB: a fresh mmap; smaller: the heap grows */
      acc[n] = 0;
      for (size_t w = 0; w < words; w++) { blocks[n][w] = xs(); acc[n] ^= blocks[n][w]; }
      n++;
    }
    for (int k = 0; k < 64 && n > 0; k++) {
      size_t b = xs() % n, w = xs() % words;
      uint64_t v = xs();
      acc[b] ^= blocks[b][w] ^ v;
      blocks[b][w] = v;
    }
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
    if (want_check) {
      want_check = 0;
      long bad = -1;
      for (size_t b = 0; b < n && bad < 0; b++) {
        uint64_t x = 0;
        for (size_t w = 0; w < words; w++) x ^= blocks[b][w];
        if (x != acc[b]) bad = (long)b;
      }
      if (bad < 0) printf("alloc check ok blocks=%zu\n", n);
      else printf("alloc check CORRUPT block=%ld\n", bad);
      fflush(stdout);
    }
  }
  return 0;
}
