/* The JSON string escaper (see json.h). */
#include "bridge/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/utf8.h"
#include "strscan.h"

/* Bytes that are never copied as they are: controls, quote, backslash (1).
 * DEL (2) and bytes >= 0x80 (4) depend on the flags. */
static const unsigned char special[256] = {
	[0x00 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x7f] = 2, [0x80 ... 0xff] = 4,
};

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether a byte of the 8 in x may need work: >= 0x80, < 0x20, '"', '\\'
 * or, when del, 0x7f.  Exact on ASCII (the zero-byte and less-than tests
 * hold for bytes below 0x80), and any byte >= 0x80 answers yes. */
static bool word_special(uint64_t x, bool del)
{
	uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\'), d = x ^ (ONES * 0x7f);
	uint64_t hit = x | ((x - ONES * 0x20) & ~x);

	hit |= (q - ONES) & ~q;
	hit |= (b - ONES) & ~b;
	if (del)
		hit |= (d - ONES) & ~d;
	return (hit & HIGHS) != 0;
}

/* The escape of byte c into e (at least 6 bytes); its length. */
static size_t escape_of(unsigned char c, unsigned flags, char *e)
{
	const char *hex = flags & JSON_ESC_UPPER ? "0123456789ABCDEF" : "0123456789abcdef";
	char named = 0;

	if (c == '"' || c == '\\')
		named = (char)c;
	else if (flags & JSON_ESC_NRT)
		named = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : 0;
	if (!named && (flags & JSON_ESC_BF))
		named = c == '\b' ? 'b' : c == '\f' ? 'f' : 0;
	e[0] = '\\';
	if (named) {
		e[1] = named;
		return 2;
	}
	memcpy(e + 1, "u00", 3);
	e[4] = hex[c >> 4];
	e[5] = hex[c & 15];
	return 6;
}

/* Write piece p (el bytes) at *w unless the output is already cut.  A run
 * of plain bytes (whole == false) may be cut inside, between two UTF-8
 * sequences when seq (a checked run); an escape is not. */
static void put(char *dst, size_t cap, size_t *w, bool *cut, const char *p, size_t el, bool whole,
		bool seq)
{
	size_t room;

	if (*cut)
		return;
	room = cap > *w ? cap - 1 - *w : 0;
	if (el <= room) {
		memcpy(dst + *w, p, el);
		*w += el;
		return;
	}
	if (!whole) {
		while (seq && room > 0 && ((unsigned char)p[room] & 0xC0) == 0x80)
			room--;
		memcpy(dst + *w, p, room);
		*w += room;
	}
	*cut = true;
}

size_t json_escape_to(char *dst, size_t cap, const char *s, size_t n, unsigned flags,
		      size_t *ret_bad)
{
	const unsigned char *u = (const unsigned char *)s;
	const bool del = flags & JSON_ESC_DEL, check = flags & (JSON_ESC_STRICT | JSON_ESC_REPLACE);
	/* the classes of special[] that stop a run under these flags */
	const unsigned char stop = (unsigned char)(1 | (del ? 2 : 0) | (check ? 4 : 0));
	size_t o = 0, w = 0, i = 0, bad = n;
	bool cut = cap == 0;

	while (i < n) {
		size_t run = i, el;
		char e[8];

		/* A run of bytes copied as they are, whole UTF-8 sequences included:
		 * 8 bytes at a time while none needs a look, then byte by byte. */
		for (;;) {
			uint64_t x;

			while (i + 8 <= n && (memcpy(&x, u + i, 8), !word_special(x, del)))
				i += 8;
			while (i < n && special[u[i]] == 0)
				i++;
			if (i == n || (special[u[i]] & stop) == 0) {
				if (i == n)
					break;
				i++; /* DEL or >= 0x80 copied as it is */
				continue;
			}
			if (special[u[i]] == 4) { /* >= 0x80, checked */
				size_t k = utf8_decode(u + i, n - i, NULL);

				if (k) {
					i += k;
					continue;
				}
			}
			break;
		}
		if (i > run) {
			put(dst, cap, &w, &cut, s + run, i - run, false, check);
			o += i - run;
		}
		if (i == n)
			break;
		if (special[u[i]] == 4) { /* >= 0x80, checked, not UTF-8 */
			if (flags & JSON_ESC_STRICT) {
				bad = i;
				break;
			}
			memcpy(e, "\xef\xbf\xbd", 3);
			el = 3;
			i++;
		} else {
			el = escape_of(u[i++], flags, e);
		}
		put(dst, cap, &w, &cut, e, el, true, false);
		o += el;
	}
	if (cap)
		dst[w] = '\0';
	if (ret_bad)
		*ret_bad = bad;
	return o;
}

char *json_put_quoted(char *p, const char *s, size_t n, unsigned flags)
{
	const unsigned char *q = (const unsigned char *)s, *end = q + n;
	unsigned high = 0;

	*p++ = '"';
	for (;;) {
		q = scan_copy(q, end, &p, &high);
		if (q == end)
			break;
		p += escape_of(*q++, flags, p);
	}
	*p++ = '"';
	return high && !utf8_valid(s, n) ? NULL : p;
}

bool buf_json_escaped(struct buf *b, const char *s, size_t n, unsigned flags)
{
	size_t room, need, bad;

	/* one pass into the room there is; a second, exact, when it was short */
	if (!buf_reserve(b, n))
		return false;
	room = b->cap - b->len;
	need = json_escape_to(b->s + b->len, room, s, n, flags, &bad);
	if (bad < n) {
		b->s[b->len] = '\0';
		return false;
	}
	if (need >= room) {
		if (!buf_reserve(b, need)) {
			b->s[b->len] = '\0';
			return false;
		}
		json_escape_to(b->s + b->len, b->cap - b->len, s, n, flags, NULL);
	}
	b->len += need;
	return true;
}

bool buf_json_quoted(struct buf *b, const char *s, size_t n, unsigned flags)
{
	size_t mark = b->len;

	if (buf_char(b, '"') && buf_json_escaped(b, s, n, flags) && buf_char(b, '"'))
		return true;
	if (!b->failed && b->s) { /* not UTF-8: leave b as it was */
		b->len = mark;
		b->s[mark] = '\0';
	}
	return false;
}

size_t json_escape(char *dst, size_t cap, const char *s, size_t n)
{
	return json_escape_to(dst, cap, s, n, JSON_ESC_LOG, NULL);
}

size_t json_escape_quoted(char *dst, size_t cap, const char *s)
{
	size_t n;

	if (!s) {
		snprintf(dst, cap, "null");
		return 4;
	}
	if (cap < 3) {
		if (cap)
			dst[0] = '\0';
		return json_escape(NULL, 0, s, strlen(s)) + 2;
	}
	dst[0] = '"';
	n = json_escape(dst + 1, cap - 2, s, strlen(s));
	if (n + 2 < cap) {
		dst[n + 1] = '"';
		dst[n + 2] = '\0';
	}
	return n + 2;
}

int json_fput_quoted(FILE *f, const char *s, size_t n, unsigned flags)
{
	char small[512], *big = NULL, *out = small;
	size_t need = json_escape_to(small, sizeof(small), s, n, flags, NULL);
	int rc = 0;

	if (need >= sizeof(small)) {
		out = big = malloc(need + 1);
		if (!big)
			return -1;
		json_escape_to(big, need + 1, s, n, flags, NULL);
	}
	if (fputc('"', f) == EOF || fwrite(out, 1, need, f) != need || fputc('"', f) == EOF)
		rc = -1;
	free(big);
	return rc;
}
