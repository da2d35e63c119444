/*
 * buf: the growable byte buffer every module builds text in, and the one
 * growth rule for arrays.
 *
 * A struct buf has a hard ceiling (`max` bytes of content): an append that
 * would cross it, or that cannot get memory, fails and leaves the buffer
 * failed, so every later append fails too and the caller checks once at the
 * end (curl's dynbuf).  The content is always NUL-terminated once anything
 * was added; `s` is NULL while the buffer is empty.  The buffer owns `s`
 * until buf_take() hands it to the caller.
 */
#ifndef BRIDGE_BUF_H
#define BRIDGE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct buf {
	char *s;
	size_t len, cap;
	size_t max;  /* ceiling on len */
	bool failed; /* sticky: an append crossed max or ran out of memory */
};

#define BUF_INIT(ceiling)                    \
	{                                    \
		NULL, 0, 0, (ceiling), false \
	}

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);  /* frees s, keeps max, clears the rest; NULL ok */
void buf_reset(struct buf *b); /* empties the content, keeps the memory */

/* Room for n more bytes (and the NUL) without a reallocation. */
bool buf_reserve(struct buf *b, size_t n);
bool buf_add_slow(struct buf *b, const void *p, size_t n);

/* Appends are the writers' innermost step: the common case (room already
   there, under the ceiling) is inline; growth and failure go out of line. */
static inline bool buf_add(struct buf *b, const void *p, size_t n)
{
	if (!b->failed && n < b->cap - b->len && n <= b->max - b->len) {
		if (n)
			memcpy(b->s + b->len, p, n);
		b->len += n;
		b->s[b->len] = '\0';
		return true;
	}
	return buf_add_slow(b, p, n);
}

static inline bool buf_str(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

static inline bool buf_char(struct buf *b, char c)
{
	return buf_add(b, &c, 1);
}
bool buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The content as a malloc'd NUL-terminated string ("" when empty; NULL when
 * the buffer failed or out of memory); *ret_len (may be NULL) gets its
 * length.  The buffer is left empty either way. */
char *buf_take(struct buf *b, size_t *ret_len);

/* Append all of f until its end: 0; -EFBIG when it holds more than the
 * ceiling allows (b failed), -EIO on a read error, -ENOMEM.  b's content is
 * NUL-terminated (s not NULL) on 0. */
int buf_read_file(struct buf *b, FILE *f);

/*
 * Growth: *p holds *cap elements of `size` bytes; make room for at least
 * `need` (>= 1) of them, doubling from `first`.  Returns the (possibly moved)
 * array and updates *cap, or NULL on overflow or out of memory, when *p and
 * *cap are left as they were.
 */
void *grow_array(void *p, size_t *cap, size_t need, size_t size, size_t first);

#endif
