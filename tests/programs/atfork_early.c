/* A library whose constructor registers pthread_atfork handlers that
 * allocate, free and reallocate (tests/tests/run.rs). A library the program
 * depends on is initialized before a preloaded one, so these handlers are
 * registered before the tracker's: the prepare handler runs after the
 * tracker's (which holds every lock of the tracker by then), the parent
 * and child handlers before the tracker's release its locks. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Set by the program before it forks; the prepare handler frees the first
 * and reallocates the second (both big enough to have records in every
 * mode), once. */
void *early_free_me;
void *early_grow_me;
void *early_made;

static void prepare(void) {
  if (early_free_me) {
    free(early_free_me);
    early_free_me = NULL;
    early_grow_me = realloc(early_grow_me, 3333);
  }
  early_made = malloc(48);
  memset(early_made, 7, 48);
}

static void parent(void) { free(malloc(200)); }
static void child(void) { free(malloc(300)); }

__attribute__((constructor)) static void register_early(void) {
  pthread_atfork(prepare, parent, child);
}
