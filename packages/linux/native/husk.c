/*
 * forecopy's husk: the empty process a destination restores a migrated process into.
 *
 * It is linked statically, without libc, at HUSK_BASE (see the Makefile), far from where Linux
 * puts programs, libraries, heaps and stacks, so that nothing of it stands where the migrated
 * process's mappings go. It starts a session of its own (a terminal's Ctrl-C must not reach the
 * restored process), then sleeps in pause() forever. The destination agent seizes it with
 * ptrace and runs system calls through the `syscall` instruction of the loop below (the thread
 * sleeps right after it, so its address is RIP - 2 at the first stop): mmap, mremap, open,
 * clone, prctl... until the husk has become the migrated process. Its own text is unmapped last.
 */
#define SYS_pause 34
#define SYS_setsid 112

static inline long sys0(long nr) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(nr) : "rcx", "r11", "memory");
  return r;
}

__attribute__((noreturn, used)) void _start(void) {
  sys0(SYS_setsid);
  for (;;) sys0(SYS_pause);
}
