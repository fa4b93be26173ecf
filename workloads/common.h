/*
 * common: what the workloads share. Built into every program (the Makefile compiles common.c
 * with each of them).
 *
 * Start-up: wl_init(prog, usage) first thing in main. It names the program for messages, keeps
 * its usage text and makes stdout line-buffered, so every line a workload prints reaches a pipe
 * as soon as it is printed (the tests read them while the workload runs).
 *
 * Options, in a loop over argv whose index the helpers advance past an option's value:
 *
 *   for (int i = 1; i < argc; i++) {
 *     const char *a = argv[i];
 *     if (wl_is_help(a)) wl_help();                                // --help / -h: usage, exit 0
 *     else if (!strcmp(a, "--mb")) mb = wl_long_arg(argv, &i, 1, 1024);
 *     else wl_die_usage("unknown option: %s", a);                  // one line on stderr, exit 2
 *   }
 *
 * Every argument error is one line on stderr, `<prog>: <message> (run '<prog> --help' for
 * usage)`, and exit code 2.
 *
 * Signals: wl_catch_signals() makes SIGUSR1 set wl_want_check and SIGTERM/SIGINT set
 * wl_want_exit (the handlers only set the flag; the program acts on it from its own loop).
 * No SA_RESTART: a blocking call of the thread that takes the signal returns EINTR, so a loop
 * sleeping in it notices the flag at once.
 */
#ifndef WORKLOADS_COMMON_H
#define WORKLOADS_COMMON_H

#include <signal.h>
#include <stdint.h>

/* Set by the handlers of wl_catch_signals; the program clears wl_want_check once it has acted. */
extern volatile sig_atomic_t wl_want_check, wl_want_exit;

/* Names the program (prefix of its messages), keeps its --help text (printed as is) and makes
 * stdout line-buffered. */
void wl_init(const char *prog, const char *usage);

/* True for --help and -h. */
int wl_is_help(const char *arg);

/* Prints the usage text on stdout and exits 0. */
_Noreturn void wl_help(void);

/* Prints `<prog>: <message> (run '<prog> --help' for usage)` on stderr and exits 2. */
_Noreturn void wl_die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The value of option argv[*i], argv[*i + 1], which *i then moves to; a missing value (argv is
 * NULL-terminated) is an argument error. */
const char *wl_str_arg(char **argv, int *i);

/* The same for a whole number in [min, max] (decimal, nothing after it); anything else is an
 * argument error `<option> must be a whole number from <min> to <max>, got: <value>`. */
long wl_long_arg(char **argv, int *i, long min, long max);

/* SIGUSR1 -> wl_want_check = 1; SIGTERM, SIGINT -> wl_want_exit = 1. */
void wl_catch_signals(void);

/* Blocks SIGUSR1, SIGTERM and SIGINT in the calling thread (threads created afterwards inherit
 * the mask). If waitmask is not NULL it receives the previous mask without those three: the
 * mask to sigsuspend() with, or to restore with pthread_sigmask(SIG_SETMASK, ...). */
void wl_block_signals(sigset_t *waitmask);

/* CLOCK_MONOTONIC in seconds. */
double wl_now_s(void);

/* xorshift64 (13, 7, 17): the next value of the PRNG state *s, which must not be 0. */
static inline uint64_t wl_xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

#endif
