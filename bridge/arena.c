/* The block arena (see arena.h). */
#include "bridge/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct arena_block {
	struct arena_block *next;
	size_t cap;
	max_align_t data[];
};

#define ALIGN sizeof(max_align_t)

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
		free(b);
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
		free(b);
	}
	a->p = a->end = NULL;
	a->total = 0;
}
