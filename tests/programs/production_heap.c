/* A heap made through every C allocation function, with reallocations that
 * grow, shrink, move and fail, and a second thread that frees and moves
 * blocks the first made, writing every byte malloc_usable_size gives (exit
 * status 3 if it gives fewer than asked); then the program writes the blocks it holds
 * ("ADDRESS SIZE" in hex and decimal) to the file named by argv[1] and
 * exits with all of them live, for a dump at exit to be compared with. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKS 20000

static void *blocks[BLOCKS];
static size_t sizes[BLOCKS];
static unsigned long long state = 88172645463325252ULL;

static unsigned next_random(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (unsigned)state;
}

static void *other_thread(void *unused) {
    (void)unused;
    for (int i = 0; i < BLOCKS; i += 3) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
    for (int i = 1; i < BLOCKS; i += 5) {
        size_t size = sizes[i] * 3 + 1;
        void *moved = realloc(blocks[i], size);
        if (moved) {
            blocks[i] = moved;
            sizes[i] = size;
        }
    }
    /* Blocks of its own, left to the main thread. */
    for (int i = 2; i < BLOCKS; i += 7) {
        free(blocks[i]);
        sizes[i] = 1 + next_random() % 500;
        blocks[i] = malloc(sizes[i]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: production_heap LIST\n");
        return 2;
    }
    for (int i = 0; i < BLOCKS; i++) {
        size_t size;
        void *block = NULL;
        switch (i % 6) {
        case 0:
            size = 1 + next_random() % 2000;
            block = malloc(size);
            break;
        case 1: {
            size_t count = 1 + next_random() % 20, each = 1 + next_random() % 100;
            size = count * each;
            block = calloc(count, each);
            break;
        }
        case 2:
            size = 1 + next_random() % 1000;
            block = realloc(malloc(size + 500), size);
            break;
        case 3:
            size = 1 + next_random() % 3000;
            if (posix_memalign(&block, 64, size) != 0)
                block = NULL;
            break;
        case 4:
            size = 256 * (1 + next_random() % 4);
            block = aligned_alloc(256, size);
            break;
        default:
            size = i % 100 == 5 ? 100000 + next_random() % 200000 : 24;
            block = malloc(size);
            break;
        }
        if (!block)
            return 1;
        /* Every byte malloc_usable_size promises is the program's: a
         * tracker that said too many would have a footer overwritten, one
         * that said too few (a block asked without the footer's room) is
         * caught here. */
        if (malloc_usable_size(block) < size)
            return 3;
        memset(block, 0x5a, malloc_usable_size(block));
        blocks[i] = block;
        sizes[i] = size;
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, other_thread, NULL) != 0 ||
        pthread_join(thread, NULL) != 0)
        return 1;
    /* A reallocation that fails leaves its block as it was; pvalloc's
     * blocks have a page of slack. */
    for (int i = 7; i < BLOCKS; i += 997) {
        if (blocks[i] && realloc(blocks[i], (size_t)1 << 44) != NULL)
            return 1;
        if (blocks[i + 1]) {
            free(blocks[i + 1]);
            sizes[i + 1] = 100;
            blocks[i + 1] = pvalloc(100);
        }
    }
    /* Shrink some in place. */
    for (int i = 4; i < BLOCKS; i += 11) {
        if (blocks[i] && sizes[i] > 8) {
            blocks[i] = realloc(blocks[i], sizes[i] - 8);
            sizes[i] -= 8;
        }
    }
    for (int i = 0; i < BLOCKS; i++)
        if (blocks[i]) {
            if (malloc_usable_size(blocks[i]) < sizes[i])
                return 3;
            memset(blocks[i], 0x3c, malloc_usable_size(blocks[i]));
        }
    FILE *list = fopen(argv[1], "w");
    if (!list)
        return 1;
    for (int i = 0; i < BLOCKS; i++)
        if (blocks[i])
            fprintf(list, "%lx %zu\n", (unsigned long)blocks[i], sizes[i]);
    return fclose(list) == 0 ? 0 : 1;
}
