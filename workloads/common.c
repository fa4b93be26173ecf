/* common: the helpers the workloads share; see common.h. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile sig_atomic_t wl_want_check = 0, wl_want_exit = 0;

static const char *prog_name = "workload";
static const char *usage_text = "";

void wl_init(const char *prog, const char *usage) {
  prog_name = prog;
  usage_text = usage;
  setvbuf(stdout, NULL, _IOLBF, 0);
}

int wl_is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

void wl_help(void) {
  fputs(usage_text, stdout);
  exit(0);
}

void wl_die_usage(const char *fmt, ...) {
  char *msg;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  /* one fprintf: stderr is unbuffered, so the line goes out in one write */
  fprintf(stderr, "%s: %s (run '%s --help' for usage)\n", prog_name, msg ? msg : fmt, prog_name);
  exit(2);
}

const char *wl_str_arg(char **argv, int *i) {
  const char *name = argv[*i], *v = argv[*i + 1];
  if (!v) wl_die_usage("missing value for: %s", name);
  ++*i;
  return v;
}

long wl_long_arg(char **argv, int *i, long min, long max) {
  const char *name = argv[*i], *v = wl_str_arg(argv, i);
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || end == v || *end || n < min || n > max)
    wl_die_usage("%s must be a whole number from %ld to %ld, got: %s", name, min, max, v);
  return n;
}

static void on_usr1(int s) { (void)s; wl_want_check = 1; }
static void on_term(int s) { (void)s; wl_want_exit = 1; }

void wl_catch_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
}

void wl_block_signals(sigset_t *waitmask) {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGUSR1);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, waitmask);
  if (waitmask) {
    sigdelset(waitmask, SIGUSR1);
    sigdelset(waitmask, SIGTERM);
    sigdelset(waitmask, SIGINT);
  }
}

double wl_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
