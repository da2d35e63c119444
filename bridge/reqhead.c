#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "bridge/reqhead.h"

static int refuse(struct reqhead_verdict *ret, int status, const char *what)
{
	ret->status = status;
	ret->code = status == 413 ? "body_too_large" : "bad_request";
	snprintf(ret->message, sizeof(ret->message), "%s", what);
	return -1;
}

static int name_is(const char *line, size_t n, const char *name)
{
	size_t k = strlen(name);

	return n > k && line[k] == ':' && strncasecmp(line, name, k) == 0;
}

/* The value of a header line, without the surrounding blanks. */
static void value_of(const char *line, size_t n, const char **ret, size_t *ret_len)
{
	const char *v = memchr(line, ':', n) + 1, *end = line + n;

	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*ret = v;
	*ret_len = (size_t)(end - v);
}

/* Digits to a number; a number past 2^62 saturates to ULLONG_MAX, which
 * every limit refuses.  Not digits: 0, the framing check refuses those. */
static unsigned long long length_of(const char *v, size_t n)
{
	unsigned long long x = 0;

	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return 0;
		if (x > (1ULL << 62) / 10)
			x = 1ULL << 62;
		else
			x = x * 10 + (unsigned)(v[i] - '0');
	}
	return x >= 1ULL << 62 ? ~0ULL : x;
}

static int version_valid(const char *v, size_t n)
{
	return n == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
	       v[7] >= '0' && v[7] <= '9';
}

int reqhead_check(const char *buf, size_t len, const struct reqhead_limits *lim,
		  struct reqhead_verdict *ret)
{
	const char *p = buf, *end = buf + len, *sp;
	unsigned long long cl = 0;
	int hosts = 0, http11, expect = 0, lines = 0;

	/* a client may send empty lines before a request (RFC 9112 section 2.2) */
	while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
		p += 2;
	for (;;) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		size_t n;

		if (!lf)
			return 0; /* the head goes on */
		if (lf == p || lf[-1] != '\r')
			return refuse(ret, 400, "a line that ends in a bare LF (use CRLF)");
		n = (size_t)(lf - 1 - p);
		if (memchr(p, '\0', n))
			return refuse(ret, 400, "a NUL byte in the request head");
		if (lines == 0) {
			sp = memrchr(p, ' ', n);
			if (!sp || !version_valid(sp + 1, (size_t)(p + n - sp - 1)))
				return refuse(ret, 400,
					      "a request line without a valid HTTP version "
					      "(HTTP/1.1)");
			http11 = sp[6] == '1' && sp[8] == '1';
		} else if (n == 0) {
			break; /* the end of the head */
		} else if (*p == ' ' || *p == '\t') {
			return refuse(ret, 400, "a folded header line (obs-fold)");
		} else if (name_is(p, n, "Host")) {
			hosts++;
		} else if (name_is(p, n, "Content-Length")) {
			const char *v;
			size_t vn;

			value_of(p, n, &v, &vn);
			cl = length_of(v, vn);
		} else if (name_is(p, n, "Expect")) {
			const char *v;
			size_t vn;

			value_of(p, n, &v, &vn);
			expect = vn == 12 && strncasecmp(v, "100-continue", 12) == 0;
		}
		lines++;
		p = lf + 1;
	}
	if (http11 && hosts != 1)
		return refuse(ret, 400,
			      hosts ? "more than one Host header"
				    : "an HTTP/1.1 request without a Host header");
	if (cl > lim->ceiling || (expect && cl > lim->max_body)) {
		ret->status = 413;
		ret->code = "body_too_large";
		if (cl == ~0ULL)
			snprintf(ret->message, sizeof(ret->message),
				 "a declared Content-Length over the limit of %llu bytes",
				 lim->max_body);
		else
			snprintf(ret->message, sizeof(ret->message),
				 "a declared Content-Length of %llu bytes, over the limit of %llu "
				 "bytes",
				 cl, lim->max_body);
		return -1;
	}
	return 1;
}
