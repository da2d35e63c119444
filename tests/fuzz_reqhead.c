/*
 * fuzz_reqhead: reqhead_check, the strict reading of a raw request head
 * (the framing check the webhook listener runs before evhttp parses).
 * Invariants (abort on violation): the verdict is 0, 1 or -1; a refusal is
 * 400 bad_request or 413 body_too_large with a non-empty one-line message of
 * printable ASCII (it quotes no peer byte); once the head is complete (1 or
 * -1), bytes after it (a body) change nothing; a head still going on (0) is
 * complete once an empty line ends it.  Every copy is exactly as long as its
 * bytes, so a read past them is a crash under ASan.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/reqhead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct reqhead_limits lim = { 1 << 20, 2 * (1 << 20) + 65536 };

static int check(const char *p, size_t n, struct reqhead_verdict *v)
{
	char *copy = malloc(n ? n : 1);
	int r;

	if (!copy)
		abort();
	memcpy(copy, p, n);
	memset(v, 0, sizeof(*v));
	r = reqhead_check(copy, n, &lim, v);
	free(copy);
	if (r < -1 || r > 1)
		abort();
	if (r == -1) {
		size_t m = strnlen(v->message, sizeof(v->message));

		if (m == 0 || m == sizeof(v->message) || !v->code)
			abort();
		for (size_t i = 0; i < m; i++)
			if ((unsigned char)v->message[i] < 0x20 ||
			    (unsigned char)v->message[i] > 0x7e)
				abort();
		if (!(v->status == 400 && strcmp(v->code, "bad_request") == 0) &&
		    !(v->status == 413 && strcmp(v->code, "body_too_large") == 0))
			abort();
	}
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char body[] = "{\"participation_id\":\"x\"}\r\n\r\nGET / HTTP/1.0\n";
	static const char end[] = "\r\n\r\n";
	struct reqhead_verdict v, w;
	char *more;
	size_t lead = 0;
	int r;

	if (size > 65536)
		return 0;
	r = check((const char *)data, size, &v);
	more = malloc(size + sizeof(body));
	if (!more)
		abort();
	memcpy(more, data, size);
	if (r != 0) {
		memcpy(more + size, body, sizeof(body) - 1);
		if (check(more, size + sizeof(body) - 1, &w) != r ||
		    (r == -1 && (w.status != v.status || strcmp(w.message, v.message) != 0)))
			abort();
	} else {
		while (lead + 1 < size && data[lead] == '\r' && data[lead + 1] == '\n')
			lead += 2;
		memcpy(more + size, end, sizeof(end) - 1);
		if (lead < size && check(more, size + sizeof(end) - 1, &w) == 0)
			abort();
	}
	free(more);
	return 0;
}
