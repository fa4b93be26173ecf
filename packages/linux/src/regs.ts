// x86_64 struct user_regs_struct (PTRACE_GETREGS), 27 u64 in this order:
//   r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss
//   fs_base gs_base ds es fs gs
// REG gives each register's index (multiply by 8 for its byte offset).

export const REG = Object.freeze({
  r15: 0,
  r14: 1,
  r13: 2,
  r12: 3,
  rbp: 4,
  rbx: 5,
  r11: 6,
  r10: 7,
  r9: 8,
  r8: 9,
  rax: 10,
  rcx: 11,
  rdx: 12,
  rsi: 13,
  rdi: 14,
  orig_rax: 15,
  rip: 16,
  cs: 17,
  eflags: 18,
  rsp: 19,
  ss: 20,
  fs_base: 21,
  gs_base: 22,
});
export const REGS_BYTES = 27 * 8;
/** Where a system call's arguments go, in order. */
export const ARG_REGS = Object.freeze([REG.rdi, REG.rsi, REG.rdx, REG.r10, REG.r8, REG.r9]);
