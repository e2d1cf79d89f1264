/* Pointers kept only in the program's own anonymous memory, as arenas and
 * runtimes keep them (Python's objects, V8's heap): memcheck counts a block
 * held there as reachable, and so must heapdump (tests/tests/run.rs). A
 * block of 4321 bytes held from an mmap'd arena; 8 blocks of 3000..3007
 * bytes held from pages made read-write inside a reservation, as V8 makes
 * its heap pages (the kernel merges such pages with neighbouring mappings
 * of the same kind, the tracker's own among them); and one of 1234 bytes
 * whose only pointer was in a mapping the program unmapped (lost). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
void **arena;
void **pages[8];
__attribute__((noinline)) void keep(void) { arena[7] = malloc(4321); }
__attribute__((noinline)) void keep_in_pages(void) {
  char *cage = mmap(0, 1UL << 32, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  for (int i = 0; i < 8; i++) {
    char *page = cage + ((size_t)i << 20);
    mprotect(page, 256 << 10, PROT_READ | PROT_WRITE);
    pages[i] = (void **)page;
    pages[i][5] = malloc(3000 + i);
  }
  for (int i = 0; i < 8; i++) pages[i] = 0;
}
__attribute__((noinline)) void forget(void) {
  void **gone = mmap(0, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  gone[3] = malloc(1234);
  munmap(gone, 1 << 16);
}
/* Overwrites the dead frames below main's, where the pointers passed. */
__attribute__((noinline)) void scrub(void) {
  volatile char junk[65536]; /* volatile stores: a memset of it is removed */
  for (unsigned i = 0; i < sizeof junk; i++) junk[i] = 0;
}
int main(void) {
  arena = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  /* The lost block first: the C allocator's own pointer to the memory
   * after its last block points into that block's last bytes. */
  forget();
  keep();
  keep_in_pages();
  scrub();
  return 0;
}
