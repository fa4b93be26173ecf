/*
 * mw: the paper's memory write loop, a workload for forecopy's tests and benchmarks.
 *
 *   mw --mb 256 [--pattern seq|random|hotspot] [--write-rate PAGES_PER_S] [--seed N]
 *      [--hot-mb 4] [--dwell-ms 500]
 *
 * It maps an anonymous region of --mb MiB, fills three pages in four with pseudo-random data
 * (every fourth page stays zero, so zero-page handling is exercised), prints one line
 *
 *   mw pid=<pid> mb=<mb> pattern=<p> region=0x<addr> pages=<n> ready
 *
 * and then writes forever. A write picks a page and stores a new 8-byte word at a random offset
 * in it; --write-rate paces writes in pages per second (0 = as fast as it can).
 *
 * Patterns:
 *   seq      pages 0, 1, ..., n-1, then again from 0.
 *   random   a uniformly random page.
 *   hotspot  the region is cut into zones of --hot-mb MiB; one zone is hot at a time and takes
 *            90% of the writes (random pages in it), the other 10% fall anywhere. Every --dwell-ms
 *            the hot spot moves to the next zone of a fixed cycle of min(8, zones) zones drawn
 *            from the seed: a Markov chain of write states that a model can learn.
 *
 * Self-check: mw keeps the XOR of all 64-bit words of its region up to date with every write
 * (acc ^= old ^ new). On SIGUSR1 it recomputes the XOR over the region and prints
 *   mw check ok xor=0x<hex> writes=<n>        or        mw check CORRUPT expected=0x.. actual=0x..
 * so a test can tell that a process frozen, read and resumed by a migration is unharmed.
 * SIGTERM and SIGINT end it with exit code 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS_PER_PAGE (PAGE / 8u)

static volatile sig_atomic_t want_check = 0;
static volatile sig_atomic_t want_exit = 0;

static void on_usr1(int s) { (void)s; want_check = 1; }
static void on_term(int s) { (void)s; want_exit = 1; }

static uint64_t rng_state;
static inline uint64_t xorshift(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: mw --mb MIB [--pattern seq|random|hotspot] [--write-rate PAGES_PER_S] [--seed N]\n"
          "          [--hot-mb MIB] [--dwell-ms MS]\n"
          "examples:\n"
          "  mw --mb 256 --pattern seq                     write 256 MiB in order, as fast as it can\n"
          "  mw --mb 512 --pattern hotspot --write-rate 20000   a moving 4 MiB hot spot, 20000 pages/s\n"
          "  kill -USR1 <pid>                              ask it to check its memory\n");
}

static void die_usage(const char *msg, const char *arg) {
  fprintf(stderr, "mw: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
  fprintf(stderr, "run 'mw --help' for usage\n");
  exit(2);
}

static long parse_num(const char *name, const char *v, long min, long max) {
  if (!v) die_usage("missing value for", name);
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || *end || n < min || n > max) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s must be a whole number from %ld to %ld, got", name, min, max);
    die_usage(buf, v);
  }
  return n;
}

int main(int argc, char **argv) {
  long mb = -1, rate = 0, hot_mb = 4, dwell_ms = 500;
  uint64_t seed = 42;
  const char *pattern = "seq";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (!strcmp(a, "--mb")) { mb = parse_num(a, v, 1, 1 << 20); i++; }
    else if (!strcmp(a, "--write-rate")) { rate = parse_num(a, v, 0, 1000000000L); i++; }
    else if (!strcmp(a, "--seed")) { seed = (uint64_t)parse_num(a, v, 0, 0x7fffffffffffffffL); i++; }
    else if (!strcmp(a, "--hot-mb")) { hot_mb = parse_num(a, v, 1, 1 << 20); i++; }
    else if (!strcmp(a, "--dwell-ms")) { dwell_ms = parse_num(a, v, 1, 3600000L); i++; }
    else if (!strcmp(a, "--pattern")) {
      if (!v || (strcmp(v, "seq") && strcmp(v, "random") && strcmp(v, "hotspot")))
        die_usage("--pattern must be seq, random or hotspot, got", v ? v : "nothing");
      pattern = v; i++;
    } else die_usage("unknown option", a);
  }
  if (mb < 0) die_usage("--mb is required", NULL);
  rng_state = seed * 0x9E3779B97F4A7C15ull + 1;

  size_t bytes = (size_t)mb << 20, pages = bytes / PAGE;
  uint64_t *region = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) { perror("mw: mmap"); return 1; }
  for (size_t p = 0; p < pages; p++) {
    if (p % 4 == 3) continue; /* stays a zero page */
    uint64_t *w = region + p * WORDS_PER_PAGE;
    for (unsigned k = 0; k < WORDS_PER_PAGE; k++) w[k] = xorshift();
  }
  uint64_t acc = 0;
  for (size_t i = 0; i < bytes / 8; i++) acc ^= region[i];

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  /* hotspot: zones and a fixed cycle of up to 8 of them */
  size_t zone_pages = ((size_t)hot_mb << 20) / PAGE;
  if (zone_pages > pages) zone_pages = pages;
  size_t zones = pages / zone_pages;
  size_t cycle_len = zones < 8 ? zones : 8, cycle[8], at = 0;
  for (size_t i = 0; i < cycle_len; i++) {
    size_t z;
    int dup;
    do {
      z = xorshift() % zones;
      dup = 0;
      for (size_t j = 0; j < i; j++) dup |= cycle[j] == z;
    } while (dup);
    cycle[i] = z;
  }
  int pat = !strcmp(pattern, "seq") ? 0 : !strcmp(pattern, "random") ? 1 : 2;

  printf("mw pid=%d mb=%ld pattern=%s region=%p pages=%zu ready\n", getpid(), mb, pattern, (void *)region, pages);
  fflush(stdout);

  uint64_t writes = 0;
  size_t seq = 0;
  double t0 = now_s(), next_move = t0 + dwell_ms / 1000.0;
  /* writes between clock checks: small at low rates so pacing stays smooth */
  const unsigned slice = rate > 0 && rate < 6400 ? (unsigned)(rate / 100 > 0 ? rate / 100 : 1) : 64;
  while (!want_exit) {
    for (unsigned s = 0; s < slice; s++) {
      size_t p;
      if (pat == 0) { p = seq++; if (seq == pages) seq = 0; }
      else if (pat == 1) p = xorshift() % pages;
      else {
        uint64_t r = xorshift();
        if (r % 10 != 0) p = cycle[at] * zone_pages + (r >> 8) % zone_pages;
        else p = (r >> 8) % pages;
      }
      uint64_t *w = region + p * WORDS_PER_PAGE + (xorshift() % WORDS_PER_PAGE);
      uint64_t v = xorshift();
      acc ^= *w ^ v;
      *w = v;
    }
    writes += slice;
    double t = now_s();
    if (pat == 2 && t >= next_move) {
      at = (at + 1) % cycle_len;
      next_move += dwell_ms / 1000.0;
      if (next_move < t) next_move = t + dwell_ms / 1000.0;
    }
    if (rate > 0) {
      double due = t0 + (double)writes / (double)rate;
      if (due > t) {
        struct timespec ts = {(time_t)(due - t), (long)((due - t - (double)(time_t)(due - t)) * 1e9)};
        nanosleep(&ts, NULL);
      }
    }
    if (want_check) {
      want_check = 0;
      uint64_t x = 0;
      for (size_t i = 0; i < bytes / 8; i++) x ^= region[i];
      if (x == acc) printf("mw check ok xor=0x%016" PRIx64 " writes=%" PRIu64 "\n", x, writes);
      else printf("mw check CORRUPT expected=0x%016" PRIx64 " actual=0x%016" PRIx64 "\n", acc, x);
      fflush(stdout);
    }
  }
  return 0;
}
