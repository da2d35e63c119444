/*
 * fuzz_retry_after: retry_after_ms, which reads an endpoint's
 * Retry-After header (delta-seconds or an HTTP date in RFC 9110's three
 * formats).  Invariants (abort on violation): the result is -1 (unparseable)
 * or a wait >= 0; the same text gives the same wait whatever the clock,
 * shifted by the clock for a date; no read past the value's NUL (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/retry_after.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* 2026-01-01T00:00:00Z and one day later */
	const int64_t now = 1767225600000LL, later = now + 86400000LL;
	char *s = malloc(size + 1);
	int64_t a, b;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	a = retry_after_ms(s, now);
	b = retry_after_ms(s, now);
	if (a < -1 || a != b)
		abort();
	b = retry_after_ms(s, later);
	if ((a == -1) != (b == -1) || b < -1 || b > a)
		abort();
	free(s);
	return 0;
}
