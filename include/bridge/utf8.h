/*
 * utf8: the one UTF-8 decoder (Unicode 15, table 3-7): no overlong forms,
 * no surrogates, nothing above U+10FFFF.
 */
#ifndef BRIDGE_UTF8_H
#define BRIDGE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length (1-4) of the well-formed sequence at s (n > 0 bytes available), 0
 * when the bytes there are not one; *ret_cp (may be NULL) gets the code
 * point. */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *ret_cp);

/* The UTF-8 form of code point cp (below 0x110000, not a surrogate) into
 * out (4 bytes of room); returns its length. */
size_t utf8_encode(uint32_t cp, char *out);

/* Offset of the first ill-formed byte of s, or n when all of it is UTF-8. */
size_t utf8_invalid_at(const char *s, size_t n);

static inline bool utf8_valid(const char *s, size_t n)
{
	return utf8_invalid_at(s, n) == n;
}

#endif
