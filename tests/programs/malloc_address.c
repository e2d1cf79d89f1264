/* A program built as a fixed-address (non-PIE) executable whose code takes
 * malloc's address, as Debian's node does: the executable then holds the
 * "canonical PLT" entry of malloc (an undefined symbol with an address),
 * which every object's lookup of malloc finds, and which jumps to the real
 * malloc (the preloaded one). Keeps 10 blocks of 1000..1009 bytes. */
#include <stdlib.h>
void *(*volatile allocate)(size_t);
void *kept[10];
int main(void) {
  allocate = malloc;
  for (int i = 0; i < 10; i++) kept[i] = allocate(1000 + i);
  return 0;
}
