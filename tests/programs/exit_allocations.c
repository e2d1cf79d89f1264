/* Allocates in an exit handler, as OpenSSL's cleanup does in every program
 * linked with it (Debian's node): by then the C library has run the main
 * thread's thread-local destructors. Keeps a block of 777 bytes allocated
 * in main and one of 555 bytes allocated in the handler. */
#include <stdlib.h>
void *kept[2];
__attribute__((noinline)) static void cleanup(void) { kept[1] = malloc(555); }
int main(void) {
  kept[0] = malloc(777);
  atexit(cleanup);
  return 0;
}
