/* A C program with a known heap, for `heapdump run` (tests/tests/run.rs):
 * 99 blocks of 1000 bytes and a 5000-byte block held by a static array, a
 * 50-node list held by a static pointer (one calloc each), and 10 blocks
 * of 200 bytes leaked (their pointers are lost). Built by the test without
 * frame pointers, as distributions build C. Exits with argv[1]. */
#include <stdlib.h>
#include <string.h>
struct node { struct node *next; char pad[56]; };
static void *kept[100];
static struct node *list;
__attribute__((noinline)) void make_kept(void) { for (int i = 0; i < 100; i++) kept[i] = malloc(1000); }
__attribute__((noinline)) void make_list(void) {
  for (int i = 0; i < 50; i++) { struct node *n = calloc(1, sizeof *n); n->next = list; list = n; }
}
__attribute__((noinline)) void leak(void) {
  for (int i = 0; i < 10; i++) { char *p = malloc(200); memset(p, 1, 200); }
}
int main(int argc, char **argv) {
  make_kept(); make_list(); leak();
  char *grown = malloc(10);
  grown = realloc(grown, 5000);
  free(kept[99]); kept[99] = grown;
  return argc > 1 ? atoi(argv[1]) : 0;
}
