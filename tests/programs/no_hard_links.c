/* Behaves as if its files lived on a file system with neither
 * RENAME_NOREPLACE nor hard links (many FUSE file systems): a seccomp
 * filter fails renameat2 with flags with EINVAL, as the kernel's FUSE
 * client does when the server lacks it, and link/linkat with EPERM. Then
 * it holds 64 blocks of 777 bytes when it exits (tests/tests/run.rs checks
 * its exit dump). */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define THIS_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_ARCH AUDIT_ARCH_AARCH64
#else
#error "no seccomp architecture for this machine"
#endif

#define ARG_LOW(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#define FAIL_WITH(errno_value) (SECCOMP_RET_ERRNO | (errno_value))

static void *held[64];

int main(void) {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_linkat, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, FAIL_WITH(EPERM)),
#ifdef __NR_link
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_link, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, FAIL_WITH(EPERM)),
#endif
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_renameat2, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      /* renameat2's flags (the low half, on a little-endian machine). */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(4)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, FAIL_WITH(EINVAL)),
  };
  struct sock_fprog program = {
      .len = sizeof filter / sizeof filter[0],
      .filter = filter,
  };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
    perror("seccomp");
    return 2;
  }
  for (int i = 0; i < 64; i++) {
    held[i] = malloc(777);
    if (!held[i]) return 1;
  }
  return 0;
}
