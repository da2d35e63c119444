/* The UTF-8 decoder (see utf8.h). */
#include "bridge/utf8.h"

#include <string.h>

size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *ret_cp)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t need;
	uint32_t cp;

	if (c < 0x80) {
		if (ret_cp)
			*ret_cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		need = 1;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		cp = c & 0x0F;
		if (c == 0xE0)
			lo = 0xA0; /* overlong */
		else if (c == 0xED)
			hi = 0x9F; /* surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		cp = c & 0x07;
		if (c == 0xF0)
			lo = 0x90; /* overlong */
		else if (c == 0xF4)
			hi = 0x8F; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (n < need + 1 || s[1] < lo || s[1] > hi)
		return 0;
	cp = cp << 6 | (s[1] & 0x3F);
	for (size_t i = 2; i <= need; i++) {
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
		cp = cp << 6 | (s[i] & 0x3F);
	}
	if (ret_cp)
		*ret_cp = cp;
	return need + 1;
}

size_t utf8_encode(uint32_t cp, char *out)
{
	unsigned char *o = (unsigned char *)out;

	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xC0 | cp >> 6);
		o[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xE0 | cp >> 12);
		o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		o[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (unsigned char)(0xF0 | cp >> 18);
	o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
	o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
	o[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

size_t utf8_invalid_at(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		size_t k;
		uint64_t x;

		/* ASCII runs are the common case: 8 bytes at a time */
		while (i + 8 <= n && (memcpy(&x, u + i, 8), (x & 0x8080808080808080ULL) == 0))
			i += 8;
		if (i == n)
			break;
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		k = utf8_decode(u + i, n - i, NULL);
		if (!k)
			return i;
		i += k;
	}
	return n;
}
