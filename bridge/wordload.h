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

/* Whether the n bytes at a and at b are the same: up to 16 bytes by two
 * overlapping word loads a side (short keys, where a call to memcmp cost
 * more than the compare). */
static inline int word_equal(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	if (n > 16)
		return memcmp(a, b, n) == 0;
	if (n >= 8)
		return load_le64(x) == load_le64(y) && load_le64(x + n - 8) == load_le64(y + n - 8);
	return load_tail64(x, n) == load_tail64(y, n);
}

/* Offset of the first control character (C0, DEL) in the len bytes at s, or
 * -1: 8 bytes at a time while none is one (the tests are exact on ASCII). */
static inline long word_first_control(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	const uint64_t ones = 0x0101010101010101ULL;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t x = load_le64(u + i), d = x ^ (ones * 0x7F);

		if ((((x - ones * 0x20) & ~x) | ((d - ones) & ~d)) & (ones * 0x80))
			break;
	}
	for (; i < len; i++)
		if (u[i] < 0x20 || u[i] == 0x7F)
			return (long)i;
	return -1;
}

#endif
