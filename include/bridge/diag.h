/*
 * diag: error reporting shared by every module.
 *
 * Two shapes, both caller-owned:
 *  - struct bridge_error: one error from one operation (parse, map, convert).
 *    Functions that fill it return a negative value; the caller decides
 *    whether and how to log it.  `offset` is a byte offset into the input the
 *    operation read (-1 when it does not apply); `file`/`line` name the rule
 *    or config line involved (NULL/0 when none); `key` names the v1 key
 *    involved ("" when none).
 *  - struct diag: a list of "file:line: message" lines, used by loaders that
 *    must report every problem in a file, not only the first.
 */
#ifndef BRIDGE_DIAG_H
#define BRIDGE_DIAG_H

#include <stddef.h>

struct bridge_error {
	char message[512];
	long offset;      /* byte offset in the input, -1 if not applicable */
	const char *file; /* rule/config file (points into a loaded mapping), or NULL */
	int line;         /* line in `file`, 0 if unknown */
	char key[128];    /* v1 key involved, "" if none */
};

/* Reset to "no error": message "", offset -1, file NULL, line 0, key "". */
void bridge_error_clear(struct bridge_error *e);

/* Format message into e (may be NULL); always returns -1 so callers can
 * `return bridge_error_set(err, "...")`. Does not touch offset/file/line/key. */
int bridge_error_set(struct bridge_error *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

struct diag {
	char *text; /* "file:line: message\n" lines, NUL-terminated, owned */
	size_t len;
	size_t cap;
	int count; /* number of lines added */
};

/* Append "file:line: message\n" (file NULL prints "<input>", line 0 omits
 * ":line").  Returns -1 always, for `return diag_add(...)`. Out of memory
 * still counts the error. */
int diag_add(struct diag *d, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void diag_reset(struct diag *d); /* frees text, zeroes the struct */

/* Append every line of `from` to d (count included). */
void diag_merge(struct diag *d, const struct diag *from);

/* Render n bytes of peer text for a message, so that a quote shows exactly
 * what was sent and stays on one line: backslash and `quote` (0: none) get a
 * backslash, LF/CR/tab are \n \r \t, other control characters and DEL
 * \u00XX (so a NUL shows as \u0000), bytes that are not UTF-8 \xXX.  At
 * most max bytes (and cap - 1) are written; a longer rendering is cut on a
 * character boundary and ends with "\u2026" (the ellipsis character).  dst is
 * always NUL-terminated (cap > 0).  Returns the bytes written. */
size_t diag_quote(char *dst, size_t cap, const char *s, size_t n, size_t max, char quote);

/* For "did you mean" hints: the edit distance of two short names, an
 * insertion, a deletion, a substitution or a swap of two neighbours counting
 * one edit each (Damerau-Levenshtein, optimal string alignment); 9 for names
 * of 63 bytes or more. */
int diag_edit_distance(const char *a, size_t na, const char *b, size_t nb);

#endif
