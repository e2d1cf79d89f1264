/* A library whose constructor registers pthread_atfork handlers that
 * allocate, free and reallocate (tests/tests/run.rs). A library the program
 * depends on is initialized before a preloaded one, so these handlers are
 * registered before the tracker's: the prepare handler runs after the
 * tracker's (which holds every lock of the tracker by then), the parent
 * and child handlers before the tracker's release its locks. Counts the
 * blocks they freed that stayed allocated in early_scratch_kept, and those
 * malloc_usable_size said were short of what was asked in
 * early_usable_short. */
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Set by the program before it forks; the prepare handler frees the first
 * and reallocates the second (both big enough to have records in every
 * mode), once. */
void *early_free_me;
void *early_grow_me;
void *early_made;
/* Scratch blocks a handler freed that glibc did not hand out again: kept
 * allocated (leaked) instead of freed. */
int early_scratch_kept;
/* Blocks made in a handler for which malloc_usable_size said fewer bytes
 * than were asked. */
int early_usable_short;

/* malloc and zero (glibc's calloc does not take from its per-thread cache,
 * which the checks below rely on). */
static void *zeroed(size_t size) { return memset(malloc(size), 0, size); }

/* A zeroed block made and freed in a handler: freed for real, glibc's
 * per-thread cache hands the same chunk to the next request of its size.
 * (Its last bytes, zero, read as a footer naming a record: such a block
 * was kept allocated at every fork.) */
static void scratch(size_t size) {
  void *block = zeroed(size);
  if (malloc_usable_size(block) < size) early_usable_short++;
  free(block);
  void *again = zeroed(size);
  if (again != block) early_scratch_kept++;
  char *grown = realloc(again, size + 100);
  memset(grown, 0, size + 100);
  if (grown != again) {
    /* Moved: the old chunk was freed, and comes back. */
    void *reused = zeroed(size);
    if (reused != again) early_scratch_kept++;
    free(reused);
  }
  if (realloc(grown, 0)) early_scratch_kept++;
}

static void prepare(void) {
  if (early_free_me) {
    free(early_free_me);
    early_free_me = NULL;
    early_grow_me = realloc(early_grow_me, 3333);
  }
  early_made = malloc(48);
  memset(early_made, 7, 48);
  scratch(200);
  /* glibc's chunk for 24 bytes holds exactly 24. */
  void *exact = malloc(24);
  if (malloc_usable_size(exact) < 24) early_usable_short++;
  free(exact);
}

static void parent(void) { scratch(300); }
static void child(void) { scratch(400); }

__attribute__((constructor)) static void register_early(void) {
  pthread_atfork(prepare, parent, child);
}
