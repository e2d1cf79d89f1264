/* Production mode when the kernel refuses the presence map's memory: a
 * thread gets its own glibc arena (in a part of the address space that no
 * block of the map has used yet) through a block too big for the map; then
 * the program caps its address space (RLIMIT_AS) just above what it uses,
 * so the map's 32 MiB for that part cannot be reserved, and the thread
 * makes small blocks there, each asked of glibc without the footer's room.
 * Blocks of 20 bytes have 4 spare bytes in their chunk (they get records),
 * blocks of 24 have none (they stay untracked). The program checks that
 * every byte malloc_usable_size promises is its own, frees half of them,
 * reallocates a quarter, lifts the cap (so the exit dump has room) and
 * writes the blocks it holds ("ADDRESS SIZE") to argv[1]. Exit status 3:
 * malloc_usable_size said fewer bytes than asked; 4: setup failed. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define BLOCKS 4000

static void *blocks[BLOCKS];
static size_t sizes[BLOCKS];
static pthread_barrier_t arena_made, capped;
static int failed;

/* Bytes of address space the process uses now (VmSize). */
static size_t address_space(void) {
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    size_t kib = 0;
    while (status && fgets(line, sizeof line, status))
        if (sscanf(line, "VmSize: %zu kB", &kib) == 1)
            break;
    if (status)
        fclose(status);
    return kib * 1024;
}

static int check(void *block, size_t size) {
    if (malloc_usable_size(block) < size)
        return 0;
    memset(block, 0x6b, malloc_usable_size(block));
    return 1;
}

static void *worker(void *unused) {
    (void)unused;
    /* A block of the thread's own arena, too big for the map: the arena
     * exists before the cap, the map for its addresses does not. */
    void *arena_block = malloc(64 << 10);
    if (!arena_block || !check(arena_block, 64 << 10))
        failed = 4;
    pthread_barrier_wait(&arena_made);
    pthread_barrier_wait(&capped);
    for (int i = 0; i < BLOCKS; i++) {
        sizes[i] = i % 2 ? 24 : 20;
        blocks[i] = malloc(sizes[i]);
        if (!blocks[i]) {
            failed = 4;
            break;
        }
        if (!check(blocks[i], sizes[i]))
            failed = 3;
    }
    for (int i = 0; i < BLOCKS && !failed; i += 2) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
    for (int i = 1; i < BLOCKS && !failed; i += 4) {
        void *moved = realloc(blocks[i], 40);
        if (moved) {
            blocks[i] = moved;
            sizes[i] = 40;
            if (!check(moved, 40))
                failed = 3;
        }
    }
    return arena_block;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: map_refused LIST\n");
        return 2;
    }
    pthread_attr_t attributes;
    pthread_t thread;
    if (pthread_barrier_init(&arena_made, NULL, 2) != 0 ||
        pthread_barrier_init(&capped, NULL, 2) != 0 || pthread_attr_init(&attributes) != 0 ||
        pthread_attr_setstacksize(&attributes, 256 << 10) != 0 ||
        pthread_create(&thread, &attributes, worker, NULL) != 0)
        return 4;
    pthread_barrier_wait(&arena_made);
    struct rlimit before, cap;
    if (getrlimit(RLIMIT_AS, &before) != 0)
        return 4;
    cap = before;
    cap.rlim_cur = address_space() + (8 << 20);
    if (setrlimit(RLIMIT_AS, &cap) != 0)
        return 4;
    pthread_barrier_wait(&capped);
    void *arena_block;
    if (pthread_join(thread, &arena_block) != 0)
        return 4;
    if (setrlimit(RLIMIT_AS, &before) != 0)
        return 4;
    if (failed)
        return failed;
    FILE *list = fopen(argv[1], "w");
    if (!list)
        return 4;
    fprintf(list, "%lx %d\n", (unsigned long)arena_block, 64 << 10);
    for (int i = 0; i < BLOCKS; i++)
        if (blocks[i])
            fprintf(list, "%lx %zu\n", (unsigned long)blocks[i], sizes[i]);
    return fclose(list) == 0 ? 0 : 1;
}
