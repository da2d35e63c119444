/* The block arena (see arena.h). */
#include "bridge/arena.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A kept block is poisoned under AddressSanitizer until it is handed out
 * again, so a use after its arena was freed is still reported. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define KEPT_POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define KEPT_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define KEPT_POISON(p, n)   ((void)(p), (void)(n))
#define KEPT_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct arena_block {
	struct arena_block *next;
	size_t cap;
	max_align_t data[];
};

#define ALIGN sizeof(max_align_t)

/* Each thread keeps the blocks its arenas release, up to RECYCLE_BYTES, and
 * hands them to the next arena that asks for a block of the same size (h2o's
 * recycle allocator): a parse and a mapping per post then take no block from
 * malloc, where a block of 8 or 16 KB was the dearest of its allocations.
 * Blocks over RECYCLE_BLOCK_MAX go back to malloc at once; a thread's blocks
 * are freed when it exits. */
#define RECYCLE_BYTES     (256 * 1024)
#define RECYCLE_BLOCK_MAX (64 * 1024)

struct recycle {
	struct arena_block *list;
	size_t bytes;
};

static __thread struct recycle recycle;
static pthread_key_t recycle_key;
static pthread_once_t recycle_once = PTHREAD_ONCE_INIT;
static int recycle_keyed; /* the key exists: a thread's blocks can be freed at its exit */

static void recycle_drop(void *arg)
{
	struct recycle *r = arg;

	while (r->list) {
		struct arena_block *b = r->list;

		r->list = b->next;
		free(b);
	}
	r->bytes = 0;
}

static void recycle_key_make(void)
{
	recycle_keyed = pthread_key_create(&recycle_key, recycle_drop) == 0;
}

/* A block of exactly cap bytes from this thread's list, or NULL. */
static struct arena_block *recycle_take(size_t cap)
{
	struct arena_block **pp;

	for (pp = &recycle.list; *pp; pp = &(*pp)->next) {
		struct arena_block *b = *pp;

		if (b->cap == cap) {
			*pp = b->next;
			recycle.bytes -= cap;
			KEPT_UNPOISON(b->data, cap);
			return b;
		}
	}
	return NULL;
}

static void block_release(struct arena_block *b)
{
	if (b->cap > RECYCLE_BLOCK_MAX || recycle.bytes + b->cap > RECYCLE_BYTES) {
		free(b);
		return;
	}
	if (!recycle.list) { /* the first block kept: freed at the thread's exit */
		pthread_once(&recycle_once, recycle_key_make);
		if (!recycle_keyed || pthread_setspecific(recycle_key, &recycle) != 0) {
			free(b);
			return;
		}
	}
	b->next = recycle.list;
	recycle.list = b;
	recycle.bytes += b->cap;
	KEPT_POISON(b->data, b->cap);
}

void arena_init(struct arena *a, size_t block, size_t max)
{
	memset(a, 0, sizeof(*a));
	a->block = block;
	a->max = max;
}

/* A new head block with room for n bytes; NULL past the ceiling. */
static int arena_grow(struct arena *a, size_t n)
{
	size_t cap = a->block ? a->block : ARENA_BLOCK;
	struct arena_block *b;

	if (n > SIZE_MAX - sizeof(*b) - ALIGN)
		return -1;
	if (cap < n)
		cap = n;
	if (a->max && (cap > a->max || a->total > a->max - cap))
		return -1;
	b = recycle_take(cap);
	if (!b)
		b = malloc(sizeof(*b) + cap);
	if (!b)
		return -1;
	b->next = a->head;
	b->cap = cap;
	a->head = b;
	a->p = (char *)b->data;
	a->end = a->p + cap;
	a->total += cap;
	return 0;
}

/* arena_alloc found no room for n (> 0) bytes in the head block: the start
 * of a new one, which is aligned. */
void *arena_alloc_slow(struct arena *a, size_t n)
{
	char *p;

	if (arena_grow(a, n) < 0)
		return NULL;
	p = a->p;
	a->p = p + n;
	return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
	char *p;

	if (n == SIZE_MAX)
		return NULL;
	if (!a->p || n + 1 > (size_t)(a->end - a->p)) {
		if (arena_grow(a, n + 1) < 0)
			return NULL;
	}
	p = a->p;
	a->p += n + 1;
	if (n)
		memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void arena_reset(struct arena *a)
{
	struct arena_block *b = a->head;

	if (!b)
		return;
	while (b->next) {
		a->head = b->next;
		block_release(b);
		b = a->head;
	}
	a->p = (char *)b->data;
	a->end = a->p + b->cap;
	a->total = b->cap;
}

void arena_free(struct arena *a)
{
	if (!a)
		return;
	while (a->head) {
		struct arena_block *b = a->head;

		a->head = b->next;
		block_release(b);
	}
	a->p = a->end = NULL;
	a->total = 0;
}

size_t arena_recycled_bytes(void)
{
	return recycle.bytes;
}
