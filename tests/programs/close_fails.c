/* Behaves as if its files lived where closing one can fail (NFS reports
 * data that never reached the server at close): a seccomp filter fails
 * every close of a descriptor above stderr with EIO. Run as `close_fails
 * DIR` under `heapdump run --on signal:USR2 --dir DIR`: it raises SIGUSR2
 * and watches DIR with inotify until the dump's file is removed, then
 * prints `named` if a dump file ever had its final name (.hdump) and
 * `never named` otherwise. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include "fake_syscalls.h"

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
      FILTER_PROLOGUE,
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_close, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      /* The descriptor. */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(0)),
      BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 2, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, FAIL_WITH(EIO)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  /* Every thread's, the tracker's trigger thread included. */
  if (install_filter(filter, sizeof filter / sizeof filter[0], 1) != 0) return 2;
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
