/* reqhead: the strict reading of raw request heads, table-driven. */
#include <stdio.h>
#include <string.h>

#include "bridge/reqhead.h"
#include "tap.h"

struct head_case {
	const char *name;
	const char *head;
	int rc, status;
};

static const struct head_case cases[] = {
	{ "plain HTTP/1.1", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", 1, 0 },
	{ "HTTP/1.0 without Host", "POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\n", 1, 0 },
	{ "leading empty line", "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 1, 0 },
	{ "head not complete", "POST / HTTP/1.1\r\nHost: h\r\n", 0, 0 },
	{ "HTTP/01.1", "POST / HTTP/01.1\r\nHost: h\r\n\r\n", -1, 400 },
	{ "HTTP/1.1 without Host", "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", -1, 400 },
	{ "two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", -1, 400 },
	{ "obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n", -1, 400 },
	{ "bare LF", "GET / HTTP/1.1\nHost: h\n\n", -1, 400 },
	{ "bare LF later", "GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", -1, 400 },
	{ "Content-Length over the ceiling",
	  "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3145728\r\n\r\n", -1, 413 },
	{ "Content-Length 2^63",
	  "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n", -1, 413 },
	{ "Content-Length 2^64+20",
	  "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551636\r\n\r\n", -1, 413 },
	{ "over max_body, no Expect: evhttp reads it",
	  "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n", 1, 0 },
	{ "over max_body with Expect: 100-continue",
	  "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n", -1,
	  413 },
	{ "under max_body with Expect",
	  "POST / HTTP/1.1\r\nHost: h\r\nexpect:  100-Continue \r\nContent-Length: 20\r\n\r\n", 1,
	  0 },
	{ "non-digit Content-Length left to the framing check",
	  "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 1, 0 },
};

int main(void)
{
	struct reqhead_limits lim = { 1024, 1024 * 1024 };
	static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
	struct reqhead_verdict v;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char name[160];

		memset(&v, 0, sizeof(v));
		snprintf(name, sizeof(name), "%s: %d", cases[i].name, cases[i].rc);
		is_int(reqhead_check(cases[i].head, strlen(cases[i].head), &lim, &v), cases[i].rc,
		       name);
		if (cases[i].rc < 0) {
			snprintf(name, sizeof(name), "%s: HTTP %d", cases[i].name, cases[i].status);
			is_int(v.status, cases[i].status, name);
			ok(v.message[0], "and a message");
		}
	}
	memset(&v, 0, sizeof(v));
	is_int(reqhead_check(nul, sizeof(nul) - 1, &lim, &v), -1, "NUL in a header value refused");
	is_str(v.code, "bad_request", "as bad_request");
	return tap_done();
}
