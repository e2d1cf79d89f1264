/* Behaves as if its files lived where closing one can fail (NFS reports
 * data that never reached the server at close): a seccomp filter fails
 * every close of a descriptor above stderr with EIO. Run as `close_fails
 * DIR` under `heapdump run --on signal:USR2 --dir DIR`: it raises SIGUSR2
 * and watches DIR with inotify until the dump's file is removed, then
 * prints `named` if a dump file ever had its final name (.hdump) and
 * `never named` otherwise. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define THIS_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_ARCH AUDIT_ARCH_AARCH64
#else
#error "no seccomp architecture for this machine"
#endif

static void *held[64];

static int ends_with(const char *name, const char *suffix) {
  size_t length = strlen(name), suffix_length = strlen(suffix);
  return length >= suffix_length &&
         strcmp(name + length - suffix_length, suffix) == 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  if (mkdir(argv[1], 0700) != 0 && errno != EEXIST) return 2;
  int watch = inotify_init1(0);
  if (watch < 0 ||
      inotify_add_watch(watch, argv[1], IN_CREATE | IN_MOVED_TO | IN_DELETE) < 0) {
    perror("inotify");
    return 2;
  }
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_close, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      /* The descriptor (the low half, on a little-endian machine). */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args)),
      BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 2, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EIO),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog program = {
      .len = sizeof filter / sizeof filter[0],
      .filter = filter,
  };
  /* Every thread's, the tracker's trigger thread included. */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC,
              &program) != 0) {
    perror("seccomp");
    return 2;
  }
  for (int i = 0; i < 64; i++) {
    held[i] = malloc(777);
    if (!held[i]) return 1;
  }
  raise(SIGUSR2);
  int named = 0;
  char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t length = read(watch, events, sizeof events);
    if (length <= 0) {
      if (length < 0 && errno == EINTR) continue;
      perror("read");
      return 2;
    }
    for (char *at = events; at < events + length;) {
      struct inotify_event *event = (struct inotify_event *)at;
      at += sizeof *event + event->len;
      if (event->len == 0) continue;
      if ((event->mask & (IN_CREATE | IN_MOVED_TO)) && ends_with(event->name, ".hdump"))
        named = 1;
      if (event->mask & IN_DELETE) {
        printf("%s\n", named ? "named" : "never named");
        return 0;
      }
    }
  }
}
