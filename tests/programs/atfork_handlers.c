/* A program that forks while pthread_atfork handlers allocate and free
 * around it (tests/tests/run.rs): those of atfork_early.c, registered
 * before the tracker's, and its own, registered from a constructor (after
 * the tracker's: they run outside its locks). Exit 0 when both sides of
 * the fork go on; a handler waiting forever on a lock ends it by SIGALRM.
 * Exit 4 when a block the early handlers freed stayed allocated, 5 when
 * malloc_usable_size said fewer bytes than asked of a block made there
 * (in the child the failure is the parent's exit 1). Writes
 * "ADDRESS SIZE" (hex address) of the two blocks the early prepare
 * handler freed and reallocated to the file named by argv[1]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

extern void *early_free_me;
extern void *early_grow_me;
extern void *early_made;
extern int early_scratch_kept;
extern int early_usable_short;

static void *late_made;

static void late_prepare(void) { late_made = malloc(4000); }
static void late_parent(void) { free(late_made); }
static void late_child(void) { free(late_made); }

__attribute__((constructor)) static void register_late(void) {
  pthread_atfork(late_prepare, late_parent, late_child);
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  alarm(60);
  early_free_me = malloc(1111);
  early_grow_me = malloc(2222);
  memset(early_free_me, 1, 1111);
  memset(early_grow_me, 2, 2222);
  FILE *list = fopen(argv[1], "w");
  if (!list) return 2;
  fprintf(list, "%lx 1111\n%lx 2222\n", (unsigned long)early_free_me,
          (unsigned long)early_grow_me);
  fclose(list);
  for (int round = 0; round < 3; round++) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      char *block = malloc(1000);
      memset(block, 1, 1000);
      free(block);
      free(early_made);
      _exit(early_scratch_kept ? 4 : early_usable_short ? 5 : 0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return 1;
    free(early_made);
  }
  /* The reallocated block kept its first 2222 bytes. */
  for (int i = 0; i < 2222; i++)
    if (((unsigned char *)early_grow_me)[i] != 2) return 3;
  free(early_grow_me);
  return early_scratch_kept ? 4 : early_usable_short ? 5 : 0;
}
