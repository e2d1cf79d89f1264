/* Behaves as if its files lived on a file system with neither
 * RENAME_NOREPLACE nor hard links (many FUSE file systems): a seccomp
 * filter fails renameat2 with flags with EINVAL, as the kernel's FUSE
 * client does when the server lacks it, and link/linkat with EPERM. Then
 * it holds 64 blocks of 777 bytes when it exits (tests/tests/run.rs checks
 * its exit dump). */
#include <stdlib.h>

#include "fake_syscalls.h"

static void *held[64];

int main(void) {
  struct sock_filter filter[] = {
      FILTER_PROLOGUE,
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_linkat, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, FAIL_WITH(EPERM)),
#ifdef __NR_link
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_link, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, FAIL_WITH(EPERM)),
#endif
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_renameat2, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      /* renameat2's flags. */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(4)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, FAIL_WITH(EINVAL)),
  };
  if (install_filter(filter, sizeof filter / sizeof filter[0], 0) != 0) return 2;
  for (int i = 0; i < 64; i++) {
    held[i] = malloc(777);
    if (!held[i]) return 1;
  }
  return 0;
}
