/* A program that forks a child and ends it with SIGTERM, as a process pool
 * does (tests/tests/run.rs): exit status 0 if the child died of the signal,
 * 1 if it survived it. Under `heapdump run --on signal:TERM`, the child
 * inherits the trigger handler but not the tracker's thread: the signal
 * must still end it. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  void *held = malloc(100);
  pid_t child = fork();
  if (child == 0) {
    for (;;) pause();
  }
  sleep(1);
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  free(held);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM ? 0 : 1;
}
