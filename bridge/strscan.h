/*
 * strscan: the block scan the JSON string loops share (v1's one-pass
 * parser, the v2 writer).  Private to bridge/.
 */
#ifndef BRIDGE_STRSCAN_H
#define BRIDGE_STRSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>

#define SCAN_BLOCK 16

/* Copy the SCAN_BLOCK bytes at q to w; the index of the first one that ends
 * a run of plain string content ('"', '\\', below 0x20), SCAN_BLOCK if none;
 * *high gets a nonzero bit when a byte before it is >= 0x80. */
static inline size_t scan_block(const unsigned char *q, char *w, unsigned *high)
{
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
	__m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
						 _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
				    _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v));
	size_t i = (size_t)__builtin_ctz((unsigned)_mm_movemask_epi8(stop) | 0x10000u);

	_mm_storeu_si128((__m128i *)(void *)w, v);
	*high |= (unsigned)_mm_movemask_epi8(v) & ((1u << i) - 1);
	return i;
}
#else
#define SCAN_BLOCK 8

/* The same over 8 bytes in a word: the borrows of the byte tests flag the
 * first such byte exactly, later ones maybe falsely. */
static inline size_t scan_block(const unsigned char *q, char *w, unsigned *high)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	uint64_t x, m, qx, bx;
	size_t i;

	memcpy(&x, q, 8);
	memcpy(w, q, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	x = __builtin_bswap64(x);
#endif
	qx = x ^ (ones * '"');
	bx = x ^ (ones * '\\');
	m = (((qx - ones) & ~qx) | ((bx - ones) & ~bx) | ((x - ones * 0x20) & ~x)) & highs;
	i = m ? (size_t)__builtin_ctzll(m) / 8 : 8;
	if (i < 8)
		x &= (1ULL << (8 * i)) - 1;
	*high |= (x & highs) != 0;
	return i;
}
#endif

/* scan_block over the last r (below SCAN_BLOCK) bytes at q, read as a block
 * ending in NULs (a NUL stops it at r) with in-bounds loads only: the same
 * copy to w (SCAN_BLOCK bytes written), the same answer, at most r. */
static inline size_t scan_tail(const unsigned char *q, size_t r, char *w, unsigned *high)
{
	unsigned char t[SCAN_BLOCK] = { 0 };

	if (SCAN_BLOCK > 8 && r >= 8) {
		memcpy(t, q, 8);
		memcpy(t + r - 8, q + r - 8, 8);
	} else if (r >= 4) {
		memcpy(t, q, 4);
		memcpy(t + r - 4, q + r - 4, 4);
	} else if (r) {
		t[0] = q[0];
		t[r / 2] = q[r / 2];
		t[r - 1] = q[r - 1];
	}
	return scan_block(t, w, high);
}

/* Copy the plain content from q on to *w, by blocks, up to the first byte
 * that ends it or to end: where it stopped (*w advanced as far); *high as
 * scan_block.  SCAN_BLOCK bytes past *w may be written. */
static inline const unsigned char *scan_copy(const unsigned char *q, const unsigned char *end,
					     char **w, unsigned *high)
{
	size_t i;

	for (;;) {
		if (end - q < SCAN_BLOCK) {
			i = scan_tail(q, (size_t)(end - q), *w, high);
			break;
		}
		i = scan_block(q, *w, high);
		if (i < SCAN_BLOCK)
			break;
		q += i;
		*w += i;
	}
	*w += i;
	return q + i;
}

#endif
