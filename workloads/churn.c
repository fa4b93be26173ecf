/*
 * churn: a multi-threaded workload whose mappings change all the time, for forecopy's tests of
 * layout changes during a migration.
 *
 *   churn [--threads 4] [--mappings 64] [--mb 64] [--period-ms 20] [--seed N]
 *
 * It keeps --mappings anonymous mappings of various sizes (about --mb MiB in all). --threads
 * threads write random words into random mappings; every --period-ms the main thread replaces one
 * random mapping by a new one of another size at another address (mapped before the old one is
 * unmapped), and one time in four mallocs a small heap block (the heap grows; after 128 blocks
 * the oldest is freed first). Argument errors: one line on stderr, exit code 2.
 * Prints `churn pid=<pid> ready` when set up.
 *
 * Self-check: each mapping keeps the XOR of its words up to date (under its own mutex). On
 * SIGUSR1 it verifies every live mapping and prints `churn check ok mappings=<n>` or
 * `churn check CORRUPT mapping=<i>`. SIGTERM/SIGINT end it with exit code 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define PAGE 4096u

struct slot {
  pthread_mutex_t mu;
  uint64_t *base;
  size_t words;
  uint64_t acc;
};

static struct slot *slots;
static long nslots = 64, nthreads = 4, total_mb = 64, period_ms = 20;

static const char usage[] =
    "usage: churn [--threads 4] [--mappings 64] [--mb 64] [--period-ms 20] [--seed N]\n"
    "example: churn --threads 4 --mappings 64 --mb 64   # then kill -USR1 <pid> to check it\n";

/* Maps a fresh mapping of a random size (other than avoid_pages) and fills it; the slot's
 * mutex is held by the caller, or the slot is not shared yet. */
static void fill_slot(struct slot *s, uint64_t *st, size_t avoid_pages) {
  size_t avg_pages = ((size_t)total_mb << 20) / PAGE / (size_t)nslots;
  if (avg_pages < 1) avg_pages = 1;
  size_t pages;
  do pages = 1 + wl_xorshift(st) % (2 * avg_pages);
  while (pages == avoid_pages && avg_pages > 1);
  if (pages == avoid_pages) pages++;
  void *m = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) { perror("churn: mmap"); exit(1); }
  s->base = m;
  s->words = pages * PAGE / 8;
  s->acc = 0;
  /* every 7th word: every page is touched, the rest stays zero */
  for (size_t w = 0; w < s->words; w += 7) { s->base[w] = wl_xorshift(st); s->acc ^= s->base[w]; }
}

static void *writer(void *arg) {
  uint64_t st = ((uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 7) | 1; /* never 0 */
  while (!wl_want_exit) {
    struct slot *s = &slots[wl_xorshift(&st) % (uint64_t)nslots];
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < 16; k++) {
      size_t w = wl_xorshift(&st) % s->words;
      uint64_t v = wl_xorshift(&st);
      s->acc ^= s->base[w] ^ v;
      s->base[w] = v;
    }
    pthread_mutex_unlock(&s->mu);
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

int main(int argc, char **argv) {
  uint64_t seed = 1;
  wl_init("churn", usage);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (wl_is_help(a)) wl_help();
    else if (!strcmp(a, "--threads")) nthreads = wl_long_arg(argv, &i, 1, 64);
    else if (!strcmp(a, "--mappings")) nslots = wl_long_arg(argv, &i, 1, 4096);
    else if (!strcmp(a, "--mb")) total_mb = wl_long_arg(argv, &i, 1, 1 << 16);
    else if (!strcmp(a, "--period-ms")) period_ms = wl_long_arg(argv, &i, 1, 60000);
    else if (!strcmp(a, "--seed")) seed = (uint64_t)wl_long_arg(argv, &i, 0, 0x7fffffffL);
    else wl_die_usage("unknown option: %s", a);
  }
  uint64_t st = (seed * 0x9E3779B97F4A7C15ull + 3) | 1;
  slots = calloc((size_t)nslots, sizeof *slots);
  if (!slots) { perror("churn: calloc"); return 1; }
  for (long i = 0; i < nslots; i++) {
    pthread_mutex_init(&slots[i].mu, NULL);
    fill_slot(&slots[i], &st, 0);
  }
  wl_catch_signals();
  pthread_t *th = calloc((size_t)nthreads, sizeof *th);
  if (!th) { perror("churn: calloc"); return 1; }
  for (long t = 0; t < nthreads; t++) {
    int e = pthread_create(&th[t], NULL, writer, (void *)(uintptr_t)(t + seed + 1));
    if (e) { fprintf(stderr, "churn: pthread_create: %s\n", strerror(e)); return 1; }
  }
  printf("churn pid=%d ready\n", getpid());

  /* heap blocks: malloc'd now and then (small, so the brk heap grows), the oldest freed once
   * there are HEAP_BLOCKS of them */
  enum { HEAP_BLOCKS = 128 };
  char *heap_blocks[HEAP_BLOCKS] = {0};
  unsigned heap_next = 0;
  while (!wl_want_exit) {
    struct timespec ts = {period_ms / 1000, (period_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    /* replace one mapping: the new one is mapped before the old one goes, so it lands
     * elsewhere, and has another size */
    struct slot *s = &slots[wl_xorshift(&st) % (uint64_t)nslots];
    pthread_mutex_lock(&s->mu);
    void *old = s->base;
    size_t old_bytes = s->words * 8;
    fill_slot(s, &st, old_bytes / PAGE);
    munmap(old, old_bytes);
    pthread_mutex_unlock(&s->mu);
    if (wl_xorshift(&st) % 4 == 0) {
      size_t n = 4096 + wl_xorshift(&st) % (64 * 1024);
      free(heap_blocks[heap_next]);
      heap_blocks[heap_next] = malloc(n);
      if (!heap_blocks[heap_next]) { perror("churn: malloc"); return 1; }
      memset(heap_blocks[heap_next], 0x5a, n);
      heap_next = (heap_next + 1) % HEAP_BLOCKS;
    }
    if (wl_want_check) {
      wl_want_check = 0;
      long bad = -1;
      for (long i = 0; i < nslots && bad < 0; i++) {
        pthread_mutex_lock(&slots[i].mu);
        uint64_t x = 0;
        for (size_t w = 0; w < slots[i].words; w++) x ^= slots[i].base[w];
        if (x != slots[i].acc) bad = i;
        pthread_mutex_unlock(&slots[i].mu);
      }
      if (bad < 0) printf("churn check ok mappings=%ld\n", nslots);
      else printf("churn check CORRUPT mapping=%ld\n", bad);
    }
  }
  for (long t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
  return 0;
}
