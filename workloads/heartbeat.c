/*
 * heartbeat: measures how long it was kept from running. A loop sleeps 1 ms at a time and keeps
 * the longest gap between two wake-ups (CLOCK_MONOTONIC); a freeze shows as a gap as long as the
 * freeze. On SIGUSR1 it prints, flushed, and starts over:
 *
 *   heartbeat maxgap_us=<longest gap since the previous report, in microseconds>
 *   heartbeat gaps=<end>:<length>,...   (the longest TOP gaps, longest first; <end> in
 *                                        CLOCK_REALTIME microseconds, <length> in microseconds)
 *
 * It prints `heartbeat pid=<pid> ready` first. SIGTERM and SIGINT: exit code 0. `--mb N` gives it N
 * MiB of memory, written once (so that a migration has something to move and verify).
 * A test migrates it with `--after resume` and checks that the migration's reported downtime is
 * at least the gap the process itself saw.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static const char usage[] =
    "usage: heartbeat [--mb N]\n"
    "  sleeps 1 ms at a time and keeps the longest gap between wake-ups; SIGUSR1 prints\n"
    "  'heartbeat maxgap_us=<n>' (the longest gap since the last report), then\n"
    "  'heartbeat gaps=<end>:<len>,...' (the 8 longest, each ending at <end>, wall-clock\n"
    "  microseconds, <len> microseconds long) and starts over\n"
    "  --mb N   N MiB of memory, written once (default 0)\n"
    "example: heartbeat --mb 64   # then kill -USR1 <pid>\n";

static int64_t clock_us(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}
static int64_t now_us(void) { return clock_us(CLOCK_MONOTONIC); }

/* The longest gaps since the last report, longest first: when each ended (wall clock) and how long. */
#define TOP 8
static struct { int64_t end, len; } top[TOP];

static void keep_gap(int64_t len) {
  int i = TOP;
  while (i > 0 && top[i - 1].len < len) i--;
  if (i == TOP) return;
  for (int k = TOP - 1; k > i; k--) top[k] = top[k - 1];
  top[i].end = clock_us(CLOCK_REALTIME);
  top[i].len = len;
}

int main(int argc, char **argv) {
  wl_init("heartbeat", usage);
  long mb = 0;
  for (int i = 1; i < argc; i++) {
    if (wl_is_help(argv[i])) wl_help();
    else if (!strcmp(argv[i], "--mb")) mb = wl_long_arg(argv, &i, 0, 1L << 20);
    else wl_die_usage("unknown option: %s", argv[i]);
  }
  if (mb > 0) {
    size_t n = (size_t)mb << 20;
    unsigned char *mem = malloc(n);
    if (!mem) wl_die_usage("cannot allocate %ld MiB", mb);
    for (size_t k = 0; k < n; k += 4096) mem[k] = (unsigned char)(k >> 12);
  }
  wl_catch_signals();
  printf("heartbeat pid=%d ready\n", getpid());
  int64_t last = now_us(), maxgap = 0;
  while (!wl_want_exit) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL); /* EINTR (a signal) only shortens one sleep */
    int64_t t = now_us();
    if (t - last > maxgap) maxgap = t - last;
    keep_gap(t - last);
    last = t;
    if (wl_want_check) {
      wl_want_check = 0;
      printf("heartbeat maxgap_us=%" PRId64 "\n", maxgap);
      printf("heartbeat gaps=");
      for (int k = 0; k < TOP && top[k].len > 0; k++) printf("%s%" PRId64 ":%" PRId64, k ? "," : "", top[k].end, top[k].len);
      printf("\n");
      maxgap = 0;
      memset(top, 0, sizeof top);
    }
  }
  return 0;
}
