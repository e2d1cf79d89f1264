/* A C program whose blocks have known memcheck verdicts, each shape with a
 * block size of its own so tests/tests/leaks_vs_memcheck.rs can compare
 * heapdump's leak class and memcheck's block by block:
 *   300 bytes: its only pointer dropped            -> definitely lost
 *   32 bytes x 30: a list whose head was dropped   -> 1 definitely, 29 indirectly lost
 *   700 bytes: held only 40 bytes in, by a global  -> possibly lost
 *   40 bytes: a table held by a global             -> still reachable
 *   9 bytes x 3 and 900 bytes: the table's rows     -> still reachable
 * Pointers are dropped through a volatile global so the compiler cannot
 * elide the allocations, and the stack is scrubbed before exit so no stale
 * copy of a lost pointer remains for either tool to find. */
#include <stdlib.h>
#include <string.h>

struct cell { struct cell *next; char data[24]; };
struct table { char *rows[4]; long count; };

struct table *table;
char *middle;
void *volatile sink;

__attribute__((noinline)) void lose_block(void) {
  char *p = malloc(300);
  memset(p, 1, 300);
  sink = p;
  sink = NULL;
}

__attribute__((noinline)) void lose_cells(void) {
  struct cell *head = NULL;
  for (int i = 0; i < 30; i++) {
    struct cell *c = calloc(1, sizeof *c);
    c->next = head;
    head = c;
  }
  sink = head;
  sink = NULL;
}

__attribute__((noinline)) void keep_middle(void) {
  char *p = malloc(700);
  memset(p, 0x5a, 700);
  middle = p + 40;
}

__attribute__((noinline)) void keep_table(void) {
  table = malloc(sizeof *table);
  for (int i = 0; i < 4; i++) table->rows[i] = strdup("kept row");
  table->count = 4;
  table->rows[3] = realloc(table->rows[3], 900);
}

__attribute__((noinline)) void scrub(void) {
  volatile char junk[8192];
  for (unsigned i = 0; i < sizeof junk; i++) junk[i] = 0;
}

int main(void) {
  lose_block();
  lose_cells();
  keep_middle();
  keep_table();
  scrub();
  return 0;
}
