/*
 * mw: the paper's memory write loop, a workload for forecopy's tests and benchmarks.
 *
 *   mw --mb 256 [--pattern seq|random|hotspot] [--write-rate PAGES_PER_S] [--seed N]
 *      [--hot-mb 4] [--dwell-ms 500] [--threads 1]
 *
 * It maps an anonymous private region of --mb MiB and touches every page once: three pages in
 * four get pseudo-random data, every fourth page (p % 4 == 3) is written with zeros only, so it
 * is a real, present page whose content is all zero (zero-page handling gets exercised). Then it
 * prints exactly one line on stdout, flushed:
 *
 *   mw pid=<pid> mb=<mb> pattern=<p> region=0x<addr> pages=<n> ready
 *
 * and writes forever. A write picks a page and stores a new pseudo-random 8-byte word at a
 * pseudo-random offset in it (xorshift64, seeded by --seed). --write-rate is the rate in pages
 * (writes) per second for the whole process, 0 or absent = as fast as it can. Pacing: the clock
 * is read every slice of writes (about 1/100 s of writes, at most 256) and the writer sleeps
 * until the slice is due. After a stall longer than 100 ms (e.g. the process was frozen by a
 * migration) the schedule restarts from now instead of catching up with a burst.
 *
 * Patterns (each writer thread applies them within its own slice of the region):
 *   seq      pages 0, 1, ..., n-1, then again from 0.
 *   random   a uniformly random page.
 *   hotspot  the region is cut into zones of --hot-mb MiB (the paper's 4 MiB). One zone is hot
 *            at a time: 90% of the writes go to uniformly random pages of the hot zone, 10% to
 *            uniformly random pages anywhere. Every --dwell-ms the hot spot moves to the next
 *            zone of a fixed cycle of K = min(8, zones) distinct zones drawn from the seed (a
 *            permutation), so the sequence of hot zones is a Markov chain a model can learn.
 *            Pages past the last whole zone only get the 10% of random writes.
 *
 * --threads N: N writer threads, thread i owning the i-th of N equal slices of the region (the
 * last one also takes the remainder), each with the pattern above, its own PRNG stream and
 * --write-rate / N. With N = 1 (default) the main thread writes itself: a single-threaded process.
 *
 * Self-check: every writer keeps the XOR of all 64-bit words of its slice up to date
 * (acc ^= old ^ new on each write). On SIGUSR1 (the handler only sets a flag) the XOR of the
 * whole region is recomputed and compared, and one line is printed, flushed:
 *   mw check ok xor=0x<hex> writes=<total writes>
 *   mw check CORRUPT expected=0x<hex> actual=0x<hex>
 * With N threads each writer checks its own slice at a point between two writes and meets the
 * main thread at a barrier, so the check is race-free. A test can thus tell that a process
 * frozen, read and resumed by a migration is unharmed. SIGTERM and SIGINT: exit code 0.
 * Argument errors: one line on stderr, exit code 2.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define PAGE 4096u
#define WORDS_PER_PAGE (PAGE / 8u)
#define MAX_CYCLE 8
#define MAX_SLICE 256

enum pattern { SEQ, RANDOM, HOTSPOT };
static const char *const pattern_names[] = {"seq", "random", "hotspot"};

/* Multi-threaded mode: the main thread bumps check_gen and meets the writers at the barrier;
 * it sets stop (never while inside the barrier) to end them. */
static atomic_uint check_gen;
static atomic_int stop;
static pthread_barrier_t check_barrier;

struct writer {
  pthread_t th;
  uint64_t *base;     /* first word of this writer's slice */
  size_t pages;       /* pages in the slice */
  uint64_t rng;
  uint64_t acc;       /* XOR of all words of the slice, kept up to date */
  uint64_t writes;
  double rate;        /* writes per second, 0 = unpaced */
  enum pattern pat;
  size_t zone_pages, cycle_len, cycle[MAX_CYCLE];
  long dwell_ms;
  unsigned seen_gen;
  /* filled in for a check, read by the main thread after the barrier */
  uint64_t chk_actual, chk_expected, chk_writes;
};

/* --spin: xorshift steps of CPU work after each write, so that the write rate follows the CPU the
 * process gets (a CPU quota slows it in proportion); the result goes to a sink the compiler
 * cannot drop. */
static long spin = 0;
static volatile uint64_t spin_sink;

/* splitmix64: turns a seed (any value, 0 included) into a well-mixed non-zero xorshift state. */
static uint64_t seed_state(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z ? z : 0x2545F4914F6CDD1Dull;
}

static void sleep_s(double d) {
  struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
  nanosleep(&ts, NULL); /* EINTR (a signal) just ends the sleep early */
}

static uint64_t xor_words(const uint64_t *w, size_t n) {
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++) x ^= w[i];
  return x;
}

static const char usage[] =
    "usage: mw --mb MIB [--pattern seq|random|hotspot] [--write-rate PAGES_PER_S] [--seed N]\n"
    "          [--hot-mb MIB] [--dwell-ms MS] [--threads N] [--spin N]\n"
    "  --mb          size of the region (required)\n"
    "  --pattern     seq (default): pages in order; random: uniform pages; hotspot: 90% of\n"
    "                writes in a hot zone of --hot-mb MiB (default 4) that moves every\n"
    "                --dwell-ms ms (default 500) along a fixed cycle of up to 8 zones\n"
    "  --write-rate  page writes per second for the whole process (default 0 = unlimited)\n"
    "  --seed        PRNG seed (default 42)\n"
    "  --threads     writer threads, each over its own slice of the region (default 1)\n"
    "  --spin        steps of CPU work after each write (default 0): the write rate then follows\n"
    "                the CPU the process gets\n"
    "prints 'mw pid=<pid> mb=<mb> pattern=<p> region=0x<addr> pages=<n> ready' once set up;\n"
    "SIGUSR1 prints 'mw check ok xor=0x<hex> writes=<n>' (or 'mw check CORRUPT ...');\n"
    "SIGTERM/SIGINT exit 0.\n"
    "examples:\n"
    "  mw --mb 256 --pattern seq                             256 MiB in order, unpaced\n"
    "  mw --mb 512 --pattern hotspot --write-rate 20000      moving 4 MiB hot spot, 20000 pages/s\n"
    "  mw --mb 256 --pattern random --threads 4 --seed 7     4 threads, 64 MiB each\n"
    "  kill -USR1 <pid>                                      ask it to check its memory\n";

/* Recomputes the XOR of the writer's slice (called by the writer itself, between writes). */
static void snapshot_check(struct writer *w) {
  w->chk_actual = xor_words(w->base, w->pages * WORDS_PER_PAGE);
  w->chk_expected = w->acc;
  w->chk_writes = w->writes;
}

static void print_check(uint64_t expected, uint64_t actual, uint64_t writes, int ok) {
  if (ok) printf("mw check ok xor=0x%016" PRIx64 " writes=%" PRIu64 "\n", actual, writes);
  else printf("mw check CORRUPT expected=0x%016" PRIx64 " actual=0x%016" PRIx64 "\n", expected, actual);
}

/* The write loop. single: run by the main thread of a one-writer process, which then handles
 * SIGUSR1/SIGTERM itself; otherwise a writer thread (signals blocked) run until `stop`. */
static void write_loop(struct writer *w, int single) {
  const size_t pages = w->pages;
  size_t seq = 0, at = 0;
  /* writes between clock reads: ~1/100 s worth, 1..MAX_SLICE */
  unsigned slice = MAX_SLICE;
  if (w->rate > 0) {
    double s = w->rate / 100.0;
    slice = s < 1 ? 1 : s > MAX_SLICE ? MAX_SLICE : (unsigned)s;
  }
  const double dwell = (double)w->dwell_ms / 1000.0;
  double t0 = wl_now_s(), next_move = t0 + dwell;
  uint64_t paced = 0; /* writes since t0 */
  for (;;) {
    if (single) {
      if (wl_want_exit) return;
      if (wl_want_check) {
        wl_want_check = 0;
        snapshot_check(w);
        print_check(w->chk_expected, w->chk_actual, w->chk_writes, w->chk_actual == w->chk_expected);
      }
    } else {
      unsigned g = atomic_load_explicit(&check_gen, memory_order_acquire);
      if (g != w->seen_gen) {
        w->seen_gen = g;
        snapshot_check(w);
        pthread_barrier_wait(&check_barrier);
      }
      if (atomic_load_explicit(&stop, memory_order_relaxed)) return;
    }
    for (unsigned s = 0; s < slice; s++) {
      size_t p;
      if (w->pat == SEQ) {
        p = seq;
        if (++seq == pages) seq = 0;
      } else if (w->pat == RANDOM) {
        p = wl_xorshift(&w->rng) % pages;
      } else {
        uint64_t r = wl_xorshift(&w->rng);
        if (r % 10 != 0) p = w->cycle[at] * w->zone_pages + (r >> 8) % w->zone_pages;
        else p = (r >> 8) % pages;
      }
      uint64_t *word = w->base + p * WORDS_PER_PAGE + (wl_xorshift(&w->rng) % WORDS_PER_PAGE);
      uint64_t v = wl_xorshift(&w->rng);
      w->acc ^= *word ^ v;
      *word = v;
      for (long k = 0; k < spin; k++) wl_xorshift(&v); /* CPU work per write (--spin) */
      spin_sink ^= v;
    }
    w->writes += slice;
    paced += slice;
    double t = wl_now_s();
    if (w->pat == HOTSPOT && t >= next_move) {
      at = (at + 1) % w->cycle_len;
      next_move += dwell;
      if (next_move < t) next_move = t + dwell; /* after a freeze: no flurry of moves */
    }
    if (w->rate > 0) {
      double due = t0 + (double)paced / w->rate;
      if (due > t) sleep_s(due - t);
      else if (t - due > 0.1) { t0 = t; paced = 0; } /* stalled (frozen?): no catch-up burst */
    }
  }
}

static void *writer_main(void *arg) {
  write_loop(arg, 0);
  return NULL;
}

int main(int argc, char **argv) {
  long mb = -1, rate = 0, hot_mb = 4, dwell_ms = 500, nthreads = 1;
  uint64_t seed = 42;
  enum pattern pat = SEQ;
  wl_init("mw", usage);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (wl_is_help(a)) wl_help();
    else if (!strcmp(a, "--mb")) mb = wl_long_arg(argv, &i, 1, 1L << 24);
    else if (!strcmp(a, "--write-rate")) rate = wl_long_arg(argv, &i, 0, 1000000000L);
    else if (!strcmp(a, "--seed")) seed = (uint64_t)wl_long_arg(argv, &i, 0, 0x7fffffffffffffffL);
    else if (!strcmp(a, "--hot-mb")) hot_mb = wl_long_arg(argv, &i, 1, 1L << 24);
    else if (!strcmp(a, "--dwell-ms")) dwell_ms = wl_long_arg(argv, &i, 1, 3600000L);
    else if (!strcmp(a, "--threads")) nthreads = wl_long_arg(argv, &i, 1, 256);
    else if (!strcmp(a, "--spin")) spin = wl_long_arg(argv, &i, 0, 1000000000L);
    else if (!strcmp(a, "--pattern")) {
      const char *v = wl_str_arg(argv, &i);
      if (!strcmp(v, "seq")) pat = SEQ;
      else if (!strcmp(v, "random")) pat = RANDOM;
      else if (!strcmp(v, "hotspot")) pat = HOTSPOT;
      else wl_die_usage("--pattern must be seq, random or hotspot, got: %s", v);
    } else wl_die_usage("unknown option: %s", a);
  }
  if (mb < 0) wl_die_usage("--mb is required");

  size_t bytes = (size_t)mb << 20, pages = bytes / PAGE;
  if ((size_t)nthreads > pages) wl_die_usage("--threads is larger than the number of pages");
  uint64_t *region = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) { perror("mw: mmap"); return 1; }

  /* touch phase: every page written once; every fourth page gets zeros only */
  uint64_t fill = seed_state(seed, 1000000);
  for (size_t p = 0; p < pages; p++) {
    volatile uint64_t *w = region + p * WORDS_PER_PAGE;
    if (p % 4 == 3) { w[0] = 0; continue; }
    for (unsigned k = 0; k < WORDS_PER_PAGE; k++) w[k] = wl_xorshift(&fill);
  }

  struct writer *ws = calloc((size_t)nthreads, sizeof *ws);
  if (!ws) { perror("mw: calloc"); return 1; }
  size_t per = pages / (size_t)nthreads;
  for (long t = 0; t < nthreads; t++) {
    struct writer *w = &ws[t];
    w->base = region + (size_t)t * per * WORDS_PER_PAGE;
    w->pages = t == nthreads - 1 ? pages - (size_t)t * per : per;
    w->rng = seed_state(seed, (uint64_t)t);
    w->acc = xor_words(w->base, w->pages * WORDS_PER_PAGE);
    w->rate = (double)rate / (double)nthreads;
    w->pat = pat;
    w->dwell_ms = dwell_ms;
    /* hotspot: zones of --hot-mb MiB in the slice and a fixed cycle of up to 8 of them */
    w->zone_pages = ((size_t)hot_mb << 20) / PAGE;
    if (w->zone_pages > w->pages) w->zone_pages = w->pages;
    size_t zones = w->pages / w->zone_pages;
    w->cycle_len = zones < MAX_CYCLE ? zones : MAX_CYCLE;
    for (size_t i = 0; i < w->cycle_len; i++) {
      size_t z;
      int dup;
      do {
        z = wl_xorshift(&w->rng) % zones;
        dup = 0;
        for (size_t j = 0; j < i; j++) dup |= w->cycle[j] == z;
      } while (dup);
      w->cycle[i] = z;
    }
  }

  wl_catch_signals();

  if (nthreads == 1) {
    printf("mw pid=%d mb=%ld pattern=%s region=%p pages=%zu ready\n", getpid(), mb, pattern_names[pat],
           (void *)region, pages);
    write_loop(&ws[0], 1);
    return 0;
  }

  /* several writers: the main thread only waits for signals, which the writers block */
  sigset_t waitmask;
  wl_block_signals(&waitmask);
  pthread_barrier_init(&check_barrier, NULL, (unsigned)nthreads + 1);
  for (long t = 0; t < nthreads; t++) {
    int e = pthread_create(&ws[t].th, NULL, writer_main, &ws[t]);
    if (e) { fprintf(stderr, "mw: pthread_create: %s\n", strerror(e)); return 1; }
  }
  printf("mw pid=%d mb=%ld pattern=%s region=%p pages=%zu ready\n", getpid(), mb, pattern_names[pat],
         (void *)region, pages);
  while (!wl_want_exit) {
    if (!wl_want_check) sigsuspend(&waitmask); /* signals are blocked here: no lost wake-up */
    if (wl_want_check && !wl_want_exit) {
      wl_want_check = 0;
      atomic_fetch_add_explicit(&check_gen, 1, memory_order_release);
      pthread_barrier_wait(&check_barrier);
      uint64_t exp = 0, act = 0, writes = 0;
      int ok = 1;
      for (long t = 0; t < nthreads; t++) {
        exp ^= ws[t].chk_expected;
        act ^= ws[t].chk_actual;
        writes += ws[t].chk_writes;
        ok &= ws[t].chk_expected == ws[t].chk_actual;
      }
      print_check(exp, act, writes, ok);
    }
  }
  atomic_store(&stop, 1);
  for (long t = 0; t < nthreads; t++) pthread_join(ws[t].th, NULL);
  return 0;
}
