/*
 * waiters: a process whose threads sit blocked in system calls, for the tests of restoring a
 * process elsewhere: a thread checkpointed inside a system call must, once restored, go on as
 * the kernel would after a signal (restart the call, or return EINTR from it).
 *
 *   waiters [--help]
 *
 * Prints `waiters pid <pid>`, then `ready` once all its threads run (stdout is line-buffered:
 * every line goes out as it is printed). The threads:
 *   sleeper  clock_nanosleep(CLOCK_MONOTONIC, 100 ms) in a loop, counting the completed sleeps;
 *            an EINTR return is counted apart and the sleep goes on with the time remaining.
 *   futex    FUTEX_WAIT_PRIVATE on a 32-bit word in a loop, counting the wake-ups that find the
 *            word advanced; the word must only grow.
 *   reader   blocking read() of stdin in a loop, counting bytes and lines and keeping the last
 *            whole line (its first 200 bytes, without the newline); at EOF it notes it and
 *            sleeps on (pause()), alive.
 *   main     a heartbeat every 50 ms (a counter); every 4th heartbeat (200 ms) it increments the
 *            futex word and FUTEX_WAKEs the futex thread. It reads CLOCK_MONOTONIC at every
 *            heartbeat and at every check, and notes it if the clock ever went backwards.
 * The three threads block SIGUSR1, SIGTERM and SIGINT, so those reach the main thread, whose
 * handlers only set a flag; it acts on it at once (its sleep returns EINTR).
 *
 * SIGUSR1 prints one line (the counts are totals since the start):
 *   waiters check ok sleeps=<n> eintr=<n> futex=<n> heartbeats=<n> read_bytes=<n> lines=<n> eof=<0|1> last=<last line, or - if none>
 * `ok` when every thread still exists (/proc/self/task/<tid>, not a zombie), sleeps, futex
 * wake-ups and heartbeats all advanced since the previous check (the first check: since the
 * start), CLOCK_MONOTONIC never went backwards, the futex word never shrank and no call failed
 * unexpectedly; reading need not advance. Otherwise
 *   waiters check FAIL <reason>[; <reason>...]
 * and the next check compares with this one again. So checks need to be at least ~250 ms apart
 * (one futex wake-up every 200 ms). A clock that went backwards and a failed call fail every
 * later check too.
 * SIGTERM (or SIGINT): prints `waiters exit`, exit code 0. It runs until then (or SIGKILL).
 * Argument errors: one line on stderr, exit code 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define SLEEP_NS 100000000L    /* the sleeper's nanosleep */
#define HEARTBEAT_NS 50000000L /* the main thread's period */
#define WAKE_EVERY 4           /* heartbeats between two futex wake-ups: 200 ms */
#define LAST_MAX 200           /* bytes of the last line kept */

static const char usage[] =
    "usage: waiters [--help]\n"
    "  threads blocked in system calls: a 100 ms nanosleep loop, a futex waiter (woken every\n"
    "  200 ms), a blocking read of stdin; the main thread keeps a 50 ms heartbeat.\n"
    "  prints 'waiters pid <pid>', then 'ready';\n"
    "  SIGUSR1 prints 'waiters check ok sleeps=<n> eintr=<n> futex=<n> heartbeats=<n> read_bytes=<n>\n"
    "  lines=<n> eof=<0|1> last=<last line or ->' (or 'waiters check FAIL <reason>'): ok if every\n"
    "  thread is alive, sleeps, futex wake-ups and heartbeats advanced since the previous check and\n"
    "  CLOCK_MONOTONIC never went backwards; SIGTERM/SIGINT print 'waiters exit' and exit 0.\n"
    "example: (sleep 1; echo hello; sleep 1) | waiters   # then kill -USR1 <pid>\n";

/* The counters, written by one thread each, read by the main thread at a check. */
static _Atomic uint64_t sleeps, eintrs, futex_wakes, heartbeats, read_bytes, lines;
static atomic_int eof_seen;
static _Atomic uint32_t futex_word; /* the futex: 32 bits, incremented by the main thread */

/* The last whole line read, under last_mu. */
static pthread_mutex_t last_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_line[LAST_MAX];
static size_t last_len;
static int have_last;

/* The first lasting failure (a call that failed, the futex word or the clock going back): once
 * set it fails every check. Under fail_mu. */
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char failure[256];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
  pthread_mutex_lock(&fail_mu);
  if (!failure[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(failure, sizeof failure, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&fail_mu);
}

struct waiter {
  const char *name;
  void *(*fn)(void *);
  pthread_t th;
  _Atomic pid_t tid;
};

static pthread_barrier_t started; /* the three threads and main: `ready` once all got there */

/* A thread notes its id on every pass of its loop: ids change when the process is restored on
 * another host (forecopy), and the check looks the thread up by the id it noted last. */
static void note_tid(struct waiter *w) {
  atomic_store(&w->tid, gettid());
}

/* Each thread: names itself, notes its tid and waits for the others. */
static void thread_start(struct waiter *w) {
  pthread_setname_np(pthread_self(), w->name);
  note_tid(w);
  pthread_barrier_wait(&started);
}

static void *sleeper(void *arg) {
  thread_start(arg);
  for (;;) {
    note_tid(arg);
    struct timespec req = {0, SLEEP_NS};
    int e;
    /* interrupted: count it and sleep on for the time remaining (the kernel wrote it to req) */
    while ((e = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &req)) == EINTR) atomic_fetch_add(&eintrs, 1);
    if (e) fail("sleeper: clock_nanosleep: %s", strerror(e));
    else atomic_fetch_add(&sleeps, 1);
  }
  return NULL;
}

static long futex(_Atomic uint32_t *word, int op, uint32_t val) {
  return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

static void *futex_waiter(void *arg) {
  thread_start(arg);
  uint32_t seen = atomic_load(&futex_word);
  for (;;) {
    note_tid(arg);
    /* returns 0 when woken (or spuriously), EAGAIN if the word is no longer `seen`, EINTR */
    if (futex(&futex_word, FUTEX_WAIT_PRIVATE, seen) == -1 && errno != EAGAIN && errno != EINTR) {
      fail("futex: FUTEX_WAIT: %s", strerror(errno));
      struct timespec pause_ts = {0, SLEEP_NS}; /* no busy loop on a failing call */
      nanosleep(&pause_ts, NULL);
    }
    uint32_t now = atomic_load(&futex_word);
    if (now == seen) continue; /* spurious or interrupted: wait again */
    if (now < seen) fail("futex: the word went back from %" PRIu32 " to %" PRIu32, seen, now);
    else atomic_fetch_add(&futex_wakes, 1);
    seen = now;
  }
  return NULL;
}

static void *reader(void *arg) {
  thread_start(arg);
  char buf[4096], cur[LAST_MAX];
  size_t cur_len = 0;
  for (;;) {
    note_tid(arg);
    ssize_t n = read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { fail("reader: read: %s", strerror(errno)); break; }
    if (n == 0) { atomic_store(&eof_seen, 1); break; }
    atomic_fetch_add(&read_bytes, (uint64_t)n);
    for (ssize_t k = 0; k < n; k++) {
      if (buf[k] != '\n') {
        if (cur_len < LAST_MAX) cur[cur_len++] = buf[k];
        continue;
      }
      pthread_mutex_lock(&last_mu);
      memcpy(last_line, cur, cur_len);
      last_len = cur_len;
      have_last = 1;
      pthread_mutex_unlock(&last_mu);
      atomic_fetch_add(&lines, 1);
      cur_len = 0;
    }
  }
  for (;;) { /* EOF: stays alive, asleep (its signals are blocked) */
    note_tid(arg);
    struct timespec nap = {0, SLEEP_NS};
    nanosleep(&nap, NULL);
  }
  return NULL;
}

static struct waiter waiters[] = {
    {"sleeper", sleeper, 0, 0},
    {"futex", futex_waiter, 0, 0},
    {"reader", reader, 0, 0},
};
#define NWAITERS (sizeof waiters / sizeof waiters[0])

/* The state letter of thread tid from /proc/self/task/<tid>/stat, 0 if there is no such thread. */
static char thread_state(pid_t tid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* after "tid (comm)" */
  return p && p[1] == ' ' ? p[2] : 0;
}

static int64_t last_mono_ns = -1;

/* Reads CLOCK_MONOTONIC and notes it (a lasting failure) if it went backwards. */
static void check_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  if (last_mono_ns >= 0 && now < last_mono_ns)
    fail("CLOCK_MONOTONIC went backwards by %" PRId64 " ns", last_mono_ns - now);
  last_mono_ns = now;
}

/* The counts at the previous check (zeros at the start). */
static uint64_t prev_sleeps, prev_futex, prev_heartbeats;

/* The reasons a check fails, `; `-separated (cut at the buffer's end). */
struct reasons {
  char text[1024];
  size_t len;
};

static void why(struct reasons *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void why(struct reasons *r, const char *fmt, ...) {
  size_t room = sizeof r->text - r->len;
  if (room <= 2) return;
  if (r->len) {
    memcpy(r->text + r->len, "; ", 3);
    r->len += 2;
    room -= 2;
  }
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(r->text + r->len, room, fmt, ap);
  va_end(ap);
  if (n > 0) r->len += (size_t)n < room ? (size_t)n : room - 1;
}

static void check(void) {
  struct reasons r = {"", 0};
  for (size_t i = 0; i < NWAITERS; i++) {
    pid_t tid = atomic_load(&waiters[i].tid);
    char st = thread_state(tid);
    if (!st || st == 'Z' || st == 'X') why(&r, "thread %s (tid %d) is gone", waiters[i].name, (int)tid);
  }
  uint64_t s = atomic_load(&sleeps), e = atomic_load(&eintrs), f = atomic_load(&futex_wakes);
  uint64_t h = atomic_load(&heartbeats), b = atomic_load(&read_bytes), l = atomic_load(&lines);
  int eof = atomic_load(&eof_seen);
  if (s == prev_sleeps) why(&r, "sleeper did not advance (sleeps=%" PRIu64 ")", s);
  if (f == prev_futex) why(&r, "futex waiter did not advance (futex=%" PRIu64 ")", f);
  if (h == prev_heartbeats) why(&r, "heartbeat did not advance (heartbeats=%" PRIu64 ")", h);
  prev_sleeps = s;
  prev_futex = f;
  prev_heartbeats = h;
  check_clock();
  pthread_mutex_lock(&fail_mu);
  if (failure[0]) why(&r, "%s", failure);
  pthread_mutex_unlock(&fail_mu);
  if (r.len) {
    printf("waiters check FAIL %s\n", r.text);
    return;
  }
  char last[LAST_MAX];
  size_t last_n;
  int have;
  pthread_mutex_lock(&last_mu);
  memcpy(last, last_line, last_len);
  last_n = last_len;
  have = have_last;
  pthread_mutex_unlock(&last_mu);
  printf("waiters check ok sleeps=%" PRIu64 " eintr=%" PRIu64 " futex=%" PRIu64 " heartbeats=%" PRIu64
         " read_bytes=%" PRIu64 " lines=%" PRIu64 " eof=%d last=",
         s, e, f, h, b, l, eof);
  if (have) fwrite(last, 1, last_n, stdout);
  else fputs("-", stdout);
  fputs("\n", stdout);
}

/* Acts on the flags the signal handlers set. */
static void handle_signals(void) {
  if (wl_want_exit) {
    printf("waiters exit\n");
    exit(0);
  }
  if (wl_want_check) {
    wl_want_check = 0;
    check();
  }
}

int main(int argc, char **argv) {
  wl_init("waiters", usage);
  for (int i = 1; i < argc; i++) {
    if (wl_is_help(argv[i])) wl_help();
    wl_die_usage("unknown option: %s", argv[i]);
  }
  wl_catch_signals();
  printf("waiters pid %d\n", getpid());

  /* the threads inherit a mask blocking the three signals: they go to the main thread */
  sigset_t main_mask;
  wl_block_signals(&main_mask);
  pthread_barrier_init(&started, NULL, NWAITERS + 1);
  for (size_t i = 0; i < NWAITERS; i++) {
    int e = pthread_create(&waiters[i].th, NULL, waiters[i].fn, &waiters[i]);
    if (e) { fprintf(stderr, "waiters: pthread_create: %s\n", strerror(e)); return 1; }
  }
  pthread_barrier_wait(&started);
  check_clock();
  pthread_sigmask(SIG_SETMASK, &main_mask, NULL);
  printf("ready\n");

  for (;;) {
    struct timespec req = {0, HEARTBEAT_NS};
    int e;
    while ((e = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &req)) == EINTR) handle_signals();
    if (e) fail("main: clock_nanosleep: %s", strerror(e));
    uint64_t n = atomic_fetch_add(&heartbeats, 1) + 1;
    if (n % WAKE_EVERY == 0) {
      atomic_fetch_add(&futex_word, 1);
      if (futex(&futex_word, FUTEX_WAKE_PRIVATE, 1) == -1) fail("main: FUTEX_WAKE: %s", strerror(errno));
    }
    check_clock();
    handle_signals();
  }
}
