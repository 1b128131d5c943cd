/*
 * A test preload for iwd-sidecar (tests/run.sh): libh2o's recycle allocators (a socket's input buffers,
 * a request pool's chunks) are per thread and unlocked, so each one must only ever be used by one
 * thread. This wraps h2o_mem_alloc_recycle and h2o_mem_free_recycle, remembers the first thread to use
 * each allocator, and aborts with a message when another thread uses it: a sharing that corrupts the
 * allocator only once in a long while under load is caught on its first occurrence.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define SLOTS 4096

static struct {
    const void *allocator;
    pthread_t owner;
} owners[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void check_owner(const void *allocator)
{
    size_t i = ((size_t)allocator >> 4) % SLOTS;

    pthread_mutex_lock(&lock);
    for (size_t n = 0; n < SLOTS; n++, i = (i + 1) % SLOTS) {
        if (owners[i].allocator == NULL) {
            owners[i].allocator = allocator;
            owners[i].owner = pthread_self();
            break;
        }
        if (owners[i].allocator == allocator) {
            if (!pthread_equal(owners[i].owner, pthread_self())) {
                fprintf(stderr, "recycle_guard: h2o recycle allocator %p used by two threads\n", allocator);
                abort();
            }
            break;
        }
    }
    pthread_mutex_unlock(&lock);
}

static void *(*real_alloc)(void *, size_t);
static void (*real_free)(void *, void *);
static pthread_once_t resolved = PTHREAD_ONCE_INIT;

static void resolve(void)
{
    real_alloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "h2o_mem_alloc_recycle");
    real_free = (void (*)(void *, void *))dlsym(RTLD_NEXT, "h2o_mem_free_recycle");
    if (real_alloc == NULL || real_free == NULL) {
        fprintf(stderr, "recycle_guard: libh2o's recycle allocator not found\n");
        abort();
    }
}

void *h2o_mem_alloc_recycle(void *allocator, size_t size)
{
    pthread_once(&resolved, resolve);
    check_owner(allocator);
    return real_alloc(allocator, size);
}

void h2o_mem_free_recycle(void *allocator, void *p)
{
    pthread_once(&resolved, resolve);
    check_owner(allocator);
    real_free(allocator, p);
}
