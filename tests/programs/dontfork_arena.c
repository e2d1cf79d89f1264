/* A block whose only pointer is in anonymous memory the program marked
 * MADV_DONTFORK, as V8 marks its heap pages (tests/tests/run.rs): a
 * fork-mode dump's child has no copy of that memory, so the dump says so;
 * a stop-mode dump scans it. Keeps one block of 2222 bytes. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
void **arena;
__attribute__((noinline)) void keep(void) { arena[9] = malloc(2222); }
/* Overwrites the dead frames below main's, where the pointer passed (the
 * tracker's own frames under malloc, its unwinder's among them, go deep).
 * Volatile stores, one by one: a memset of a dead local array is removed. */
__attribute__((noinline)) void scrub(void) {
  volatile char junk[65536];
  for (unsigned i = 0; i < sizeof junk; i++) junk[i] = 0;
}
int main(void) {
  arena = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  madvise(arena, 1 << 20, MADV_DONTFORK);
  keep();
  arena = (void **)((char *)arena + 1); /* no pointer to the arena's start either */
  scrub();
  return 0;
}
