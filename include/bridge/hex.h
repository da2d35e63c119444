/*
 * hex: the two directions of one hexadecimal digit, shared by the signature,
 * the delivery id, the chunked reader, the v1 decoders and the config reader.
 */
#ifndef BRIDGE_HEX_H
#define BRIDGE_HEX_H

#include <stddef.h>

/* The value of one hex digit in either case, or -1 if c is not one. */
static inline int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Write the n bytes of in as 2n lower-case hex digits (no NUL); returns
 * the end of what was written. */
static inline char *hex_put(char *out, const unsigned char *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		*out++ = digits[in[i] >> 4];
		*out++ = digits[in[i] & 15];
	}
	return out;
}

#endif
