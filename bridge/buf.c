/* The growable buffer with a ceiling and the array growth rule (see buf.h). */
#include "bridge/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
	b->s = NULL;
	b->len = b->cap = 0;
	b->max = max;
	b->failed = false;
}

void buf_free(struct buf *b)
{
	if (!b)
		return;
	free(b->s);
	buf_init(b, b->max);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	b->failed = false;
	if (b->s)
		b->s[0] = '\0';
}

bool buf_reserve(struct buf *b, size_t n)
{
	size_t cap;
	char *t;

	if (b->failed)
		return false;
	if (n > b->max - b->len) {
		b->failed = true;
		return false;
	}
	if (b->len + n + 1 <= b->cap)
		return true;
	cap = b->cap ? b->cap : 64;
	while (cap < b->len + n + 1)
		cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
	if (cap > b->max + 1 && b->max < SIZE_MAX)
		cap = b->max + 1;
	t = realloc(b->s, cap);
	if (!t) {
		b->failed = true;
		return false;
	}
	b->s = t;
	b->cap = cap;
	return true;
}

bool buf_add_slow(struct buf *b, const void *p, size_t n)
{
	if (!buf_reserve(b, n))
		return false;
	if (n)
		memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
	return true;
}

bool buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return false;
	va_start(ap, fmt);
	n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = true;
		return false;
	}
	if (b->s && (size_t)n < b->cap - b->len) {
		if (!buf_reserve(b, (size_t)n)) { /* the ceiling still applies */
			b->s[b->len] = '\0';
			return false;
		}
		b->len += (size_t)n;
		return true;
	}
	if (!buf_reserve(b, (size_t)n)) {
		if (b->s)
			b->s[b->len] = '\0';
		return false;
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return true;
}

char *buf_take(struct buf *b, size_t *ret_len)
{
	char *s = b->failed ? NULL : b->s ? b->s : strdup("");

	if (b->failed)
		free(b->s);
	if (ret_len)
		*ret_len = s ? b->len : 0;
	b->s = NULL;
	buf_init(b, b->max);
	return s;
}

int buf_read_file(struct buf *b, FILE *f)
{
	if (!buf_add(b, "", 0))
		return -ENOMEM;
	for (;;) {
		size_t room = b->max - b->len, spare = b->cap - b->len - 1, n;

		if (room == 0) { /* at the ceiling: one byte more is too much */
			char c;

			if (fread(&c, 1, 1, f) == 1) {
				b->failed = true;
				return -EFBIG;
			}
			break;
		}
		if (spare < 4096)
			spare = 65536; /* fill what is there, else grow */
		if (room > spare)
			room = spare;
		if (!buf_reserve(b, room))
			return -ENOMEM;
		n = fread(b->s + b->len, 1, room, f);
		b->len += n;
		b->s[b->len] = '\0';
		if (n == 0)
			break;
	}
	return ferror(f) ? -EIO : 0;
}

void *grow_array(void *p, size_t *cap, size_t need, size_t size, size_t first)
{
	size_t n = *cap ? *cap : (first ? first : 1);
	void *t;

	if (need <= *cap && p)
		return p;
	while (n < need) {
		if (n > SIZE_MAX / 2)
			return NULL;
		n *= 2;
	}
	if (size && n > SIZE_MAX / size)
		return NULL;
	t = realloc(p, n * size > 0 ? n * size : 1);
	if (!t)
		return NULL;
	*cap = n;
	return t;
}
