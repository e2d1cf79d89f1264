/* A triggered dump still being written when the program ends. Run as
 * `snapshot_outlives_program DIR` under `heapdump run --children --on
 * signal:USR2 --dir DIR`.
 *
 * The first process is a subreaper: it starts the program (itself, with
 * `program DIR`) and waits for every descendant, a snapshot process
 * included once the program has ended, so that when it exits the dump
 * has ended too. The program holds 1,500,000 linked blocks (a dump of
 * about 54 MB), limits its files to 32 MiB, raises SIGUSR2, waits until
 * the dump is being written (a non-empty .partial file in DIR) and ends
 * with _exit. With --mode fork, the file size limit then stops the dump
 * partway, in the snapshot process, with no program left to clean up;
 * with --mode stop, the program's end cuts the dump off. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct node {
  struct node *next;
  char pad[88];
};

static struct node *head;

/* The size of the first .partial file in `dir`; 0 if there is none. */
static long long partial_size(const char *dir) {
  DIR *listing = opendir(dir);
  if (!listing) return 0;
  long long size = 0;
  struct dirent *entry;
  while ((entry = readdir(listing))) {
    size_t length = strlen(entry->d_name);
    if (length > 8 && strcmp(entry->d_name + length - 8, ".partial") == 0) {
      char path[4096];
      struct stat status;
      snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
      if (stat(path, &status) == 0) size = status.st_size;
      break;
    }
  }
  closedir(listing);
  return size;
}

static int program(const char *dir) {
  struct rlimit limit = {32 << 20, 32 << 20};
  if (setrlimit(RLIMIT_FSIZE, &limit) != 0) return 2;
  for (int i = 0; i < 1500000; i++) {
    struct node *node = malloc(sizeof *node);
    if (!node) return 1;
    node->next = head;
    head = node;
  }
  raise(SIGUSR2);
  struct timespec millisecond = {0, 1000000};
  for (int waited = 0; waited < 30000; waited++) {
    if (partial_size(dir) > 0) _exit(0);
    nanosleep(&millisecond, NULL);
  }
  fprintf(stderr, "the snapshot process never began writing\n");
  _exit(3);
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "program") == 0) return program(argv[2]);
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return 2;
  pid_t started = fork();
  if (started < 0) return 2;
  if (started == 0) {
    execl("/proc/self/exe", argv[0], "program", argv[1], (char *)NULL);
    _exit(127);
  }
  int status, program_status = -1;
  for (;;) {
    pid_t ended = waitpid(-1, &status, __WALL);
    if (ended < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (ended == started) program_status = status;
  }
  return WIFEXITED(program_status) ? WEXITSTATUS(program_status) : 1;
}
