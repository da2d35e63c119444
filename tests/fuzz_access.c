/*
 * fuzz_access: the source allow-list, access_cidr_parse on the text before
 * the first newline and access_list_allows on the text after it (the peer
 * address as evhttp reports it).  Invariants (abort on violation): a parsed
 * range has a known family and a prefix length within it; the empty list
 * allows everyone; an address inside a range is allowed by it, and a range
 * always allows its own base address.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bridge/access.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct access_cidr c;
	struct access_list empty = { NULL, 0 }, one = { &c, 1 };
	char *s = malloc(size + 1), *addr;
	int r;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	addr = strchr(s, '\n');
	if (addr)
		*addr++ = '\0';
	else
		addr = s + size;
	if (access_list_allows(&empty, addr) != 1)
		abort();
	if (access_cidr_parse(s, &c) == 0) {
		int max = c.family == AF_INET ? 32 : 128;

		if ((c.family != AF_INET && c.family != AF_INET6) || c.bits < 0 || c.bits > max)
			abort();
		r = access_list_allows(&one, addr);
		if (r != 0 && r != 1)
			abort();
		/* the range's own text, without a prefix, is inside it */
		char *slash = strchr(s, '/');
		if (slash)
			*slash = '\0';
		if (access_list_allows(&one, s) != 1)
			abort();
	}
	free(s);
	return 0;
}
