/*
 * json: the one JSON string escaper.
 *
 * Quote and backslash always get a backslash; the flags say how the other
 * bytes are written, because each output keeps the form it has always had:
 *   JSON_ESC_BF      \b and \f by name (else \u0008, \u000c)
 *   JSON_ESC_NRT     \n, \r and \t by name (else \u000a ...)
 *   JSON_ESC_DEL     DEL (0x7f) as \u007f (else as it is)
 *   JSON_ESC_UPPER   \u00XX in upper-case hex
 *   JSON_ESC_STRICT  stop at the first byte that is not UTF-8 (see ret_bad)
 *   JSON_ESC_REPLACE each byte that is not UTF-8 becomes U+FFFD
 * Other control bytes are \u00xx; every other byte is copied.  Without
 * STRICT or REPLACE, bytes >= 0x80 are copied unchecked: the caller passes
 * text validated on input.  The escaper scans for the bytes that need work
 * and copies the runs between them whole.
 */
#ifndef BRIDGE_JSON_H
#define BRIDGE_JSON_H

#include <stddef.h>
#include <stdio.h>

#include "bridge/buf.h"

enum {
	JSON_ESC_BF = 1 << 0,
	JSON_ESC_NRT = 1 << 1,
	JSON_ESC_DEL = 1 << 2,
	JSON_ESC_UPPER = 1 << 3,
	JSON_ESC_STRICT = 1 << 4,
	JSON_ESC_REPLACE = 1 << 5,
};

/* The forms in use: yajl_gen's (v2 output, diffs of v2) and the log's. */
#define JSON_ESC_YAJL (JSON_ESC_BF | JSON_ESC_NRT)
#define JSON_ESC_LOG  (JSON_ESC_NRT | JSON_ESC_DEL)

/*
 * The escaped body (no quotes) of n bytes of s into dst, as snprintf: at
 * most cap - 1 bytes, cut before an escape that does not fit whole, then a
 * NUL (when cap > 0).  Returns the length the whole escape takes.  With
 * JSON_ESC_STRICT, escaping stops at the first ill-formed byte and
 * *ret_bad (may be NULL) gets its offset; else *ret_bad = n.
 */
size_t json_escape_to(char *dst, size_t cap, const char *s, size_t n, unsigned flags,
		      size_t *ret_bad);

/* The same appended to b; false when b failed (ceiling, memory) or, with
 * JSON_ESC_STRICT, the text is not UTF-8 (b is then unchanged). */
bool buf_json_escaped(struct buf *b, const char *s, size_t n, unsigned flags);
/* Between quotes. */
bool buf_json_quoted(struct buf *b, const char *s, size_t n, unsigned flags);

/*
 * The writers' hot step: "s" (n bytes) quoted at p, which has room for
 * JSON_QUOTED_MAX(n) bytes (6 a byte, the quotes, a block copy's overrun),
 * with the escapes flags asks for, UTF-8 checked as JSON_ESC_STRICT does and
 * DEL copied: the bytes buf_json_quoted writes with those flags.  Returns the
 * end of what it wrote (no NUL), or NULL when s is not UTF-8.  Any of the room
 * may be written.
 */
char *json_put_quoted(char *p, const char *s, size_t n, unsigned flags);
#define JSON_QUOTED_MAX(n) (6 * (n) + 2 + 16)

/* "s" quoted onto f; 0, or -1 when out of memory or f failed. */
int json_fput_quoted(FILE *f, const char *s, size_t n, unsigned flags);

/* The log's form into a fixed buffer: json_escape_to(..., JSON_ESC_LOG). */
size_t json_escape(char *dst, size_t cap, const char *s, size_t n);

/* "s" as a quoted JSON string (s NULL: null); same return contract. */
size_t json_escape_quoted(char *dst, size_t cap, const char *s);

#endif
