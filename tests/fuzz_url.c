/*
 * fuzz_url: upstream_url_parse, the endpoint URL parser (routes and the
 * queue name endpoints by URL).  Invariants (abort on violation): failure
 * names the problem; success gives a scheme-matching port in 1..65535, a
 * non-empty host, a path that starts with "/" and holds no byte below 0x21
 * (it goes on the request line as is) and a Host header that names the host.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct upstream_url u;
	struct bridge_error err;
	char *s = malloc(size + 1);

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	bridge_error_clear(&err);
	if (upstream_url_parse(s, &u, &err) < 0) {
		if (!err.message[0])
			abort();
		free(s);
		return 0;
	}
	if (u.port < 1 || u.port > 65535 || !u.host[0] || u.path[0] != '/' ||
	    !strstr(u.host_header, u.host))
		abort();
	for (const char *p = u.path; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p == 0x7f)
			abort();
	free(s);
	return 0;
}
