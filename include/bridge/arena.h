/*
 * arena: one memory owner for the short-lived pieces of one job (a parsed
 * document, one mapping run), torn down in one place (h2o's per-request
 * pool).  Allocations come from malloc'd blocks in order and are never freed
 * one by one; arena_free() releases every block at once.
 *
 * A zeroed struct arena is ready: blocks of ARENA_BLOCK bytes, no ceiling.
 * arena_init() sets another block size and a ceiling on the bytes taken from
 * malloc (an allocation that would cross it fails, as one without memory).
 * One allocation larger than a block gets a block of its own size.
 */
#ifndef BRIDGE_ARENA_H
#define BRIDGE_ARENA_H

#include <stddef.h>
#include <stdint.h>

#define ARENA_BLOCK 16384

struct arena_block;

struct arena {
	struct arena_block *head; /* newest block, where allocations come from */
	char *p, *end;            /* its free room */
	size_t block;             /* bytes per block (0: ARENA_BLOCK) */
	size_t total;             /* bytes taken from malloc */
	size_t max;               /* ceiling on total (0: none) */
};

void arena_init(struct arena *a, size_t block, size_t max);

/* n bytes (uninitialised) aligned for any type; NULL past the ceiling or
 * without memory.  n == 0 still gives a distinct pointer.  Inline while the
 * head block has room; arena_alloc_slow starts a new block. */
void *arena_alloc_slow(struct arena *a, size_t n);
static inline void *arena_alloc(struct arena *a, size_t n)
{
	size_t pad = (size_t)(-(uintptr_t)a->p & (sizeof(max_align_t) - 1));

	if (!n)
		n = 1;
	if (a->p && pad <= (size_t)(a->end - a->p) && n <= (size_t)(a->end - a->p) - pad) {
		char *p = a->p + pad;

		a->p = p + n;
		return p;
	}
	return arena_alloc_slow(a, n);
}

/* A NUL-terminated copy of s[0..n) (s may hold NULs; not aligned); NULL as
 * arena_alloc. */
char *arena_strndup(struct arena *a, const char *s, size_t n);

/* Empty again for the next job, keeping the oldest block (no malloc while
 * jobs fit in it); the others are released. */
void arena_reset(struct arena *a);

/* Every block released; the arena is empty and ready again (block size and
 * ceiling kept).  Accepts NULL. */
void arena_free(struct arena *a);

/* Released blocks are kept by the thread that released them, up to 256 KB
 * of blocks of at most 64 KB each, for the next arena that needs a block of
 * the same size; the rest go back to malloc.  The bytes this thread keeps. */
size_t arena_recycled_bytes(void);

#endif
