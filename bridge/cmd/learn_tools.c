/*
 * learn, small tools: the arena every string of a run lives in, interned
 * names, value tallies, text buffers.
 */
#include "learn_types.h"

/* ---- small tools ------------------------------------------------------ */

static void *learn_arena_check(void *p)
{
	if (!p) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
	return p;
}

void *learn_arena_alloc(struct arena *a, size_t n)
{
	return learn_arena_check(arena_alloc(a, n));
}

char *learn_arena_strndup(struct arena *a, const char *s, size_t n)
{
	return learn_arena_check(arena_strndup(a, s, n));
}

char *learn_arena_printf(struct arena *a, const char *fmt, ...)
{
	va_list ap;
	char small[256];
	int n;
	char *p;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	p = learn_arena_alloc(a, (size_t)n + 1);
	if ((size_t)n < sizeof(small)) {
		memcpy(p, small, (size_t)n + 1);
		return p;
	}
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

void learn_arena_free(struct arena *a)
{
	arena_free(a);
}

void *learn_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
	return p;
}

void *learn_xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
	return p;
}

/* grow_array (buf.h), or the end of the command when out of memory. */
void *learn_xgrow(void *p, size_t *cap, size_t need, size_t size, size_t first)
{
	p = grow_array(p, cap, need, size, first);
	if (!p) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
	return p;
}

/* Text is built in struct buf (buf.h).  learn's buffers start zeroed, often
 * as members of calloc'd structs, and grow with inputs that were read under
 * their own limits: a zeroed buffer is unbounded here, and running out of
 * memory ends the command. */
struct buf *learn_sb(struct buf *b)
{
	if (!b->max && !b->cap)
		b->max = SIZE_MAX;
	return b;
}

void learn_sb_check(bool ok)
{
	if (!ok) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
}

void learn_sb_add(struct buf *b, const char *s, size_t n)
{
	learn_sb_check(buf_add(learn_sb(b), s, n));
}

void learn_sb_puts(struct buf *b, const char *s)
{
	learn_sb_add(b, s, strlen(s));
}

/* A libconfig string literal: quote, backslash and control bytes escaped. */
void learn_sb_quoted(struct buf *b, const char *s)
{
	learn_sb_puts(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };

			learn_sb_add(b, e, 2);
		} else if (c < 0x20) {
			sb_printf(b, "\\x%02x", c);
		} else {
			learn_sb_add(b, s, 1);
		}
	}
	learn_sb_puts(b, "\"");
}

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

long learn_intern_find(const struct intern *t, const char *s)
{
	size_t i;

	if (!t->n_slots)
		return -1;
	for (i = str_hash(s) & (t->n_slots - 1); t->slots[i] >= 0; i = (i + 1) & (t->n_slots - 1))
		if (strcmp(t->names[t->slots[i]], s) == 0)
			return t->slots[i];
	return -1;
}

long learn_intern_add(struct intern *t, struct arena *a, const char *s)
{
	long id = learn_intern_find(t, s);
	size_t i;

	if (id >= 0)
		return id;
	if ((t->n + 1) * 2 > t->n_slots) {
		size_t ns = t->n_slots ? t->n_slots * 2 : 256;

		free(t->slots);
		t->slots = learn_xcalloc(ns, sizeof(long));
		for (i = 0; i < ns; i++)
			t->slots[i] = -1;
		t->n_slots = ns;
		for (size_t k = 0; k < t->n; k++) {
			for (i = str_hash(t->names[k]) & (ns - 1); t->slots[i] >= 0;
			     i = (i + 1) & (ns - 1))
				;
			t->slots[i] = (long)k;
		}
	}
	t->names = learn_xgrow(t->names, &t->cap, t->n + 1, sizeof(char *), 64);
	t->names[t->n] = learn_arena_strndup(a, s, strlen(s));
	for (i = str_hash(s) & (t->n_slots - 1); t->slots[i] >= 0; i = (i + 1) & (t->n_slots - 1))
		;
	t->slots[i] = (long)t->n;
	return (long)t->n++;
}

void learn_intern_free(struct intern *t)
{
	free(t->names);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

struct tally_cell *learn_tally_bump(struct tally *t, const char *from, const char *to,
				    const char *example, size_t max)
{
	for (size_t i = 0; i < t->n; i++) {
		struct tally_cell *c = &t->cells[i];

		if (((!from && !c->from) || (from && c->from && strcmp(from, c->from) == 0)) &&
		    strcmp(to, c->to) == 0) {
			c->count++;
			return c;
		}
	}
	if (max && t->n >= max) {
		t->overflow = 1;
		return NULL;
	}
	t->cells = learn_xgrow(t->cells, &t->cap, t->n + 1, sizeof(*t->cells), 8);
	t->cells[t->n] = (struct tally_cell){ from, to, 1, example };
	return &t->cells[t->n++];
}

/* The most common `to` (optionally among cells whose `from` is from). */
const struct tally_cell *learn_tally_top(const struct tally *t, const char *from, long *ret_total)
{
	const struct tally_cell *best = NULL;
	long total = 0;

	for (size_t i = 0; i < t->n; i++) {
		const struct tally_cell *c = &t->cells[i];

		if (from && (!c->from || strcmp(c->from, from) != 0))
			continue;
		total += c->count;
		if (!best || c->count > best->count)
			best = c;
	}
	if (ret_total)
		*ret_total = total;
	return best;
}

void learn_tally_free(struct tally *t)
{
	free(t->cells);
	memset(t, 0, sizeof(*t));
}
