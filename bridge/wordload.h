/*
 * wordload: little-endian word loads for the hashes, whole words and the
 * short tail of a string, with in-bounds loads only.  Private to bridge/.
 */
#ifndef BRIDGE_WORDLOAD_H
#define BRIDGE_WORDLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The n (4 or 8) bytes at p as a word, the first lowest. */
static inline uint64_t load_le(const unsigned char *p, size_t n)
{
	uint64_t x = 0;

	memcpy(&x, p, n);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	x = __builtin_bswap64(x) >> (64 - 8 * n);
#endif
	return x;
}

static inline uint64_t load_le64(const unsigned char *p)
{
	return load_le(p, 8);
}

/* The n (below 8) bytes at p as the low bytes of a word, the first lowest:
 * two overlapping loads (the bytes they share are the same bytes). */
static inline uint64_t load_tail64(const unsigned char *p, size_t n)
{
	if (n >= 4)
		return load_le(p, 4) | load_le(p + n - 4, 4) << (8 * (n - 4));
	if (n)
		return (uint64_t)p[0] | (uint64_t)p[n / 2] << (8 * (n / 2)) |
		       (uint64_t)p[n - 1] << (8 * (n - 1));
	return 0;
}

#endif
