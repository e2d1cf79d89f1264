/* Makes system calls fail as some file systems would, with a seccomp
 * filter, for the test programs that include it (no_hard_links.c,
 * close_fails.c). A filter starts with FILTER_PROLOGUE (calls of another
 * architecture pass, then the call number is loaded) and is installed
 * with install_filter. Arguments are read as their low 32 bits, which
 * needs a little-endian machine. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define THIS_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_ARCH AUDIT_ARCH_AARCH64
#else
#error "no seccomp architecture for this machine"
#endif

/* The low half of argument n. */
#define ARG_LOW(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#define FAIL_WITH(errno_value) (SECCOMP_RET_ERRNO | (errno_value))

#define FILTER_PROLOGUE                                                        \
  BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),    \
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_ARCH, 1, 0),                   \
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),                           \
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))

/* Installs the filter for this thread or (all_threads) every thread of
 * the process; 0 when done, else says why on stderr. */
static int install_filter(struct sock_filter *filter, unsigned short len, int all_threads) {
  struct sock_fprog program = {.len = len, .filter = filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
              all_threads ? SECCOMP_FILTER_FLAG_TSYNC : 0, &program) != 0) {
    perror("seccomp");
    return -1;
  }
  return 0;
}
