/* access: CIDR parsing and matching (the HTTP-level checks are in test_hardening.py). */
#include <arpa/inet.h>

#include "bridge/access.h"
#include "tap.h"

static const struct {
	const char *cidr;
	int ok;
} parse_cases[] = {
	{ "10.0.0.0/8", 1 },
	{ "10.0.0.1/8", 0 } /* host bits set */,
	{ "127.0.0.1", 1 },
	{ "0.0.0.0/0", 1 },
	{ "192.168.1.0/24", 1 },
	{ "192.168.1.0/33", 0 },
	{ "::1", 1 },
	{ "2001:db8::/32", 1 },
	{ "2001:db8::1/32", 0 },
	{ "::/0", 1 },
	{ "fe80::/129", 0 },
	{ "10.0.0.0/", 0 },
	{ "/8", 0 },
	{ "10.0.0.0/8x", 0 },
	{ "example.com", 0 },
	{ "", 0 },
	{ "10.0.0.0/-1", 0 },
	{ "1.2.3.4.5", 0 },
};

static const struct {
	const char *list[3];
	const char *addr;
	int allowed;
} match_cases[] = {
	{ { "10.0.0.0/8" }, "10.1.2.3", 1 },
	{ { "10.0.0.0/8" }, "11.0.0.1", 0 },
	{ { "10.0.0.0/8" }, "::ffff:10.9.9.9", 1 }, /* IPv4-mapped */
	{ { "10.0.0.0/8" }, "::1", 0 },
	{ { "192.168.1.128/25" }, "192.168.1.127", 0 },
	{ { "192.168.1.128/25" }, "192.168.1.200", 1 },
	{ { "2001:db8::/32" }, "2001:db8:ffff::1", 1 },
	{ { "2001:db8::/32" }, "2001:db9::1", 0 },
	{ { "127.0.0.1", "::1" }, "::1", 1 },
	{ { "127.0.0.1", "::1" }, "127.0.0.2", 0 },
	{ { "0.0.0.0/0" }, "203.0.113.7", 1 },
	{ { "10.0.0.0/8" }, "not-an-address", 0 },
	{ { "10.0.0.0/8" }, NULL, 0 },
	{ { "10.0.0.0/13" }, "10.7.255.255", 1 },
	{ { "10.0.0.0/13" }, "10.8.0.0", 0 },
	/* an IPv4-mapped range names IPv4 peers (found by fuzz_access) */
	{ { "::ffff:10.2.3.4" }, "::ffff:10.2.3.4", 1 },
	{ { "::ffff:10.0.0.0/104" }, "10.7.0.1", 1 },
	{ { "::ffff:10.0.0.0/104" }, "11.0.0.1", 0 },
};

int main(void)
{
	struct access_cidr c;
	char name[160];

	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		snprintf(name, sizeof(name), "parse \"%s\" -> %s", parse_cases[i].cidr,
			 parse_cases[i].ok ? "ok" : "refused");
		is_int(access_cidr_parse(parse_cases[i].cidr, &c) == 0, parse_cases[i].ok, name);
	}
	ok(access_cidr_parse("10.0.0.0/8", &c) == 0 && c.family == AF_INET && c.bits == 8,
	   "parsed family and prefix length");
	ok(access_cidr_parse("::1", &c) == 0 && c.family == AF_INET6 && c.bits == 128,
	   "bare IPv6 address is a /128");

	for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		struct access_cidr items[3];
		struct access_list l = { items, 0 };

		for (int k = 0; k < 3 && match_cases[i].list[k]; k++)
			if (access_cidr_parse(match_cases[i].list[k], &items[l.n]) == 0)
				l.n++;
		snprintf(name, sizeof(name), "%s in [%s%s%s] -> %s",
			 match_cases[i].addr ? match_cases[i].addr : "(null)",
			 match_cases[i].list[0], match_cases[i].list[1] ? ", " : "",
			 match_cases[i].list[1] ? match_cases[i].list[1] : "",
			 match_cases[i].allowed ? "allowed" : "refused");
		is_int(access_list_allows(&l, match_cases[i].addr), match_cases[i].allowed, name);
	}
	{
		struct access_list empty = { NULL, 0 };

		ok(access_list_allows(&empty, "203.0.113.9"), "empty list allows everyone");
	}
	return tap_done();
}
