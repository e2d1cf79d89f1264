/* malloc_usable_size never says fewer bytes than were asked for: of small
 * blocks (which production mode asks of glibc without the footer's room,
 * so glibc may give exactly the bytes asked), asked from a signal handler
 * that interrupts the tracker, and in a child made by fork (which `heapdump
 * run` leaves untracked) for the blocks it inherited and those it makes.
 * Prints what it saw; exit status 3 if any answer was short. */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCKS 256
static void *blocks[BLOCKS];
static size_t sizes[BLOCKS];
static volatile sig_atomic_t signals, short_in_handler;

/* Blocks whose usable size is below what was asked. */
static int short_blocks(void) {
    int short_ones = 0;
    for (int i = 0; i < BLOCKS; i++)
        if (malloc_usable_size(blocks[i]) < sizes[i])
            short_ones++;
    return short_ones;
}

static void on_alarm(int signal_number) {
    (void)signal_number;
    signals++;
    if (short_blocks())
        short_in_handler++;
}

int main(void) {
    for (int i = 0; i < BLOCKS; i++) {
        /* 24, 40, ... 136: glibc's chunk for each holds exactly these. */
        sizes[i] = 24 + 16 * (i % 8);
        blocks[i] = malloc(sizes[i]);
        if (!blocks[i])
            return 1;
        memset(blocks[i], 0x5a, malloc_usable_size(blocks[i]));
    }
    int short_in_parent = short_blocks();

    /* The handler runs mostly while this thread is inside the tracker. */
    signal(SIGALRM, on_alarm);
    struct itimerval every = {{0, 200}, {0, 200}};
    setitimer(ITIMER_REAL, &every, 0);
    for (long n = 0; n < 100000000 && signals < 1000; n++)
        free(malloc(40 + (n & 255)));
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);

    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        return 1;
    if (child == 0) {
        int short_inherited = short_blocks();
        int short_new = 0;
        for (int i = 0; i < BLOCKS; i++) {
            void *block = malloc(sizes[i]);
            if (!block)
                _exit(1);
            if (malloc_usable_size(block) < sizes[i])
                short_new++;
            free(block);
        }
        printf("child: %d inherited and %d new blocks short\n", short_inherited, short_new);
        fflush(stdout);
        _exit(short_inherited || short_new ? 3 : 0);
    }
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status))
        return 1;
    printf("parent: %d blocks short; %d of %d signals saw some short\n", short_in_parent,
           (int)short_in_handler, (int)signals);
    if (short_in_parent || short_in_handler || WEXITSTATUS(status) == 3)
        return 3;
    return WEXITSTATUS(status);
}
