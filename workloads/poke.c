/*
 * poke: a test target that writes exactly the pages it is told to, for the dirty tracker's tests.
 *
 *   poke --pages N [--threads T] [--thp]
 *
 * Maps N anonymous pages (all touched once), prints `poke pid=<pid> region=0x<addr> pages=<n>
 * ready`, then reads commands on stdin, one a line:
 *   w I J ...   write one byte into each page I, J, ... and answer `ok` (I-J: a range)
 *   d I J ...   give pages I, J, ... back with madvise(MADV_DONTNEED) (they read as zeros from
 *               then on, with no write) and answer `ok`; I-J: one madvise over the range
 *   m K         map K more pages and answer `mapped 0x<addr>`
 *   u           unmap the last extra mapping and answer `unmapped`
 *   s K         resize the last extra mapping in place to K pages (mremap without moving: pages
 *               cut off and grown back read as zeros, with no write) and answer `resized`
 * With --threads T, T-1 idle threads sleep meanwhile (a multi-threaded target). With --thp the
 * region starts on a 2 MiB boundary and is advised MADV_HUGEPAGE (transparent huge pages).
 * Argument errors: one line on stderr, exit code 2. No signal handlers: SIGTERM ends it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

static const char usage[] =
    "usage: poke --pages N [--threads T] [--thp]\n"
    "  maps N pages (default 64), prints 'poke pid=<pid> region=0x<addr> pages=<n> ready', then\n"
    "  reads commands on stdin, one a line:\n"
    "    w I J I-J ...   write a byte into each page (a range: I-J) -> 'ok'\n"
    "    d I J I-J ...   madvise(MADV_DONTNEED) the pages -> 'ok'\n"
    "    m K             map K more pages -> 'mapped 0x<addr>'\n"
    "    u               unmap the last extra mapping -> 'unmapped'\n"
    "    s K             resize the last extra mapping in place to K pages -> 'resized'\n"
    "  --threads T   T-1 extra idle threads (default 1: single-threaded)\n"
    "  --thp         region on a 2 MiB boundary, advised MADV_HUGEPAGE\n";

static void *idle(void *a) {
  (void)a;
  for (;;) pause();
  return NULL;
}

int main(int argc, char **argv) {
  long pages = 64, threads = 1;
  int thp = 0;
  wl_init("poke", usage);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (wl_is_help(a)) wl_help();
    else if (!strcmp(a, "--thp")) thp = 1;
    else if (!strcmp(a, "--pages")) pages = wl_long_arg(argv, &i, 1, 1L << 28);
    else if (!strcmp(a, "--threads")) threads = wl_long_arg(argv, &i, 1, 1024);
    else wl_die_usage("unknown option: %s", a);
  }
  const size_t huge = 2u << 20;
  char *region = mmap(NULL, (size_t)pages * 4096 + (thp ? huge : 0), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) { perror("poke: mmap"); return 1; }
  if (thp) {
    region = (char *)(((uintptr_t)region + huge - 1) & ~(uintptr_t)(huge - 1));
    if (madvise(region, (size_t)pages * 4096, MADV_HUGEPAGE)) { perror("poke: madvise"); return 1; }
  }
  memset(region, 1, (size_t)pages * 4096);
  for (long t = 1; t < threads; t++) {
    pthread_t th;
    pthread_create(&th, NULL, idle, NULL);
  }
  printf("poke pid=%d region=%p pages=%ld ready\n", getpid(), (void *)region, pages);
  char line[4096];
  char *extra[64];
  long extra_len[64];
  int nextra = 0;
  while (fgets(line, sizeof line, stdin)) {
    if (line[0] == 'w' || line[0] == 'd') {
      char *p = line + 1, *end;
      for (;;) {
        long i = strtol(p, &end, 10), j;
        if (end == p) break;
        j = i;
        if (*end == '-') j = strtol(end + 1, &end, 10);
        if (i < 0) i = 0;
        if (j >= pages) j = pages - 1;
        if (line[0] == 'w') for (; i <= j; i++) region[i * 4096 + 7]++;
        else if (i <= j && madvise(region + i * 4096, (size_t)(j - i + 1) * 4096, MADV_DONTNEED)) { perror("poke: madvise"); return 1; }
        p = end;
      }
      puts("ok");
    } else if (line[0] == 'm' && nextra < 64) {
      long k = atol(line + 1);
      char *m = mmap(NULL, (size_t)k * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      memset(m, 2, (size_t)k * 4096);
      extra[nextra] = m;
      extra_len[nextra++] = k;
      printf("mapped %p\n", (void *)m);
    } else if (line[0] == 's' && nextra > 0) {
      long k = atol(line + 1);
      void *m = mremap(extra[nextra - 1], (size_t)extra_len[nextra - 1] * 4096, (size_t)k * 4096, 0);
      if (m == MAP_FAILED) { perror("poke: mremap"); return 1; }
      extra_len[nextra - 1] = k;
      puts("resized");
    } else if (line[0] == 'u' && nextra > 0) {
      nextra--;
      munmap(extra[nextra], (size_t)extra_len[nextra] * 4096);
      puts("unmapped");
    }
  }
  return 0;
}
