/* An allocation-heavy C program for the preload benchmark
 * (scripts/bench_preload.sh): 4 million malloc/free pairs of 16 to 527
 * bytes through a few call levels, with 10 000 blocks live at any time.
 * Built with the distribution's defaults (-O2, no frame pointers). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 10000
static void *ring[LIVE];
static uint64_t state = 88172645463325252ull;

static uint64_t next(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

__attribute__((noinline)) static void *make(size_t size) {
  char *block = malloc(size);
  block[0] = (char)size;
  return block;
}

__attribute__((noinline)) static void step(uint64_t i) {
  size_t slot = i % LIVE;
  free(ring[slot]);
  ring[slot] = make(16 + next() % 512);
}

int main(int argc, char **argv) {
  uint64_t steps = argc > 1 ? strtoull(argv[1], 0, 10) : 4000000;
  uint64_t checksum = 0;
  for (uint64_t i = 0; i < steps; i++) {
    step(i);
    checksum += (unsigned char)*(char *)ring[i % LIVE];
  }
  printf("%llu\n", (unsigned long long)checksum);
  return 0;
}
