/* Holds 1,500,000 linked blocks when it exits, so its exit dump takes a
 * while to write (tests/tests/run.rs watches the dump file appear). */
#include <stdlib.h>

struct node {
  struct node *next;
  char pad[88];
};

static struct node *head;

int main(void) {
  for (int i = 0; i < 1500000; i++) {
    struct node *node = malloc(sizeof *node);
    if (!node) return 1;
    node->next = head;
    head = node;
  }
  return 0;
}
