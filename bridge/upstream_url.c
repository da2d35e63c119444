/*
 * upstream, endpoint URLs: the parser of the http:// and https:// URLs
 * routes and the queue deliver to (what the pool in upstream.c connects
 * to), and their redaction for logs.  Pure functions over text.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "bridge/hex.h"
#include "bridge/upstream.h"

static int url_host_name_valid(const char *h, size_t n)
{
	size_t i, label = 0;
	int all_numeric = 1;

	if (n == 0 || n > 253)
		return 0;
	for (i = 0; i < n; i++) {
		char ch = h[i];

		if (ch == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return 0;
		if (!(ch >= '0' && ch <= '9'))
			all_numeric = 0;
		if (++label > 63)
			return 0;
	}
	if (label == 0)
		return 0;
	if (all_numeric) {
		struct in_addr a;
		char tmp[16];

		if (n >= sizeof(tmp))
			return 0;
		memcpy(tmp, h, n);
		tmp[n] = '\0';
		return inet_pton(AF_INET, tmp, &a) == 1;
	}
	return 1;
}

static void put_bytes(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
	while (n-- && *o + 1 < cap)
		out[(*o)++] = *s++;
	out[*o] = '\0';
}

void upstream_url_redact(const char *url, char *out, size_t cap)
{
	const char *scheme = strstr(url, "://");
	const char *a = scheme ? scheme + 3 : url, *e = a + strcspn(a, "/?#"), *at = NULL, *p;
	size_t o = 0;

	if (cap == 0)
		return;
	out[0] = '\0';
	for (p = a; p < e; p++)
		if (*p == '@')
			at = p;
	if (at && (p = memchr(a, ':', (size_t)(at - a))) != NULL) {
		put_bytes(out, cap, &o, url, (size_t)(p + 1 - url));
		put_bytes(out, cap, &o, "***", 3);
		put_bytes(out, cap, &o, at, (size_t)(e - at));
	} else {
		put_bytes(out, cap, &o, url, (size_t)(e - url));
	}
	p = e + strcspn(e, "?#");
	put_bytes(out, cap, &o, e, (size_t)(p - e));
	if (*p == '?') {
		put_bytes(out, cap, &o, p, 1);
		for (p++; *p && *p != '#';) {
			size_t n = strcspn(p, "&#");
			const char *eq = memchr(p, '=', n);

			if (eq) {
				put_bytes(out, cap, &o, p, (size_t)(eq + 1 - p));
				put_bytes(out, cap, &o, "***", 3);
			} else {
				put_bytes(out, cap, &o, p, n);
			}
			p += n;
			if (*p == '&')
				put_bytes(out, cap, &o, p++, 1);
		}
	}
	put_bytes(out, cap, &o, p, strlen(p));
}

int upstream_url_parse(const char *url, struct upstream_url *ret, struct bridge_error *err)
{
	const char *auth, *auth_end, *host, *host_end, *after, *rest;
	size_t i, host_len;
	long port;

	if (!ret)
		return bridge_error_set(err, "upstream URL: no result buffer");
	memset(ret, 0, sizeof(*ret));
	if (!url || !*url)
		return bridge_error_set(err, "upstream URL is empty");
	for (i = 0; url[i]; i++) {
		unsigned char ch = (unsigned char)url[i];

		if (ch <= 0x20 || ch == 0x7f)
			return bridge_error_set(err,
						"upstream URL contains a space or control "
						"character at offset %zu",
						i);
		if (ch >= 0x80)
			return bridge_error_set(err,
						"upstream URL contains a non-ASCII byte at offset "
						"%zu (percent-encode it)",
						i);
	}
	if (strncasecmp(url, "http://", 7) == 0) {
		auth = url + 7;
	} else if (strncasecmp(url, "https://", 8) == 0) {
		ret->https = 1;
		auth = url + 8;
	} else {
		return bridge_error_set(err, "upstream URL must start with http:// or https://");
	}
	if (strchr(url, '#'))
		return bridge_error_set(err, "upstream URL must not contain a fragment ('#')");
	auth_end = auth + strcspn(auth, "/?");
	if (memchr(auth, '@', (size_t)(auth_end - auth)))
		return bridge_error_set(err, "upstream URL must not contain user-info "
					     "('user:password@'); send credentials in a header");
	if (auth == auth_end)
		return bridge_error_set(err, "upstream URL has no host");

	if (*auth == '[') {
		struct in6_addr a6;

		host = auth + 1;
		host_end = memchr(host, ']', (size_t)(auth_end - host));
		if (!host_end)
			return bridge_error_set(err, "upstream URL: IPv6 literal lacks ']'");
		host_len = (size_t)(host_end - host);
		if (host_len == 0 || host_len >= INET6_ADDRSTRLEN)
			return bridge_error_set(err, "upstream URL: invalid IPv6 literal");
		memcpy(ret->host, host, host_len);
		ret->host[host_len] = '\0';
		if (inet_pton(AF_INET6, ret->host, &a6) != 1)
			return bridge_error_set(err, "upstream URL: invalid IPv6 literal '%s'",
						ret->host);
		after = host_end + 1;
		if (after != auth_end && *after != ':')
			return bridge_error_set(err, "upstream URL: unexpected text after ']'");
	} else {
		host = auth;
		host_end = memchr(auth, ':', (size_t)(auth_end - auth));
		if (!host_end)
			host_end = auth_end;
		host_len = (size_t)(host_end - host);
		if (!url_host_name_valid(host, host_len))
			return bridge_error_set(err, "upstream URL: invalid host name '%.*s'",
						(int)(host_len > 64 ? 64 : host_len), host);
		memcpy(ret->host, host, host_len);
		ret->host[host_len] = '\0';
		after = host_end;
	}

	ret->port = ret->https ? 443 : 80;
	if (after != auth_end) { /* ":port" */
		const char *d = after + 1;

		if (d == auth_end)
			return bridge_error_set(err, "upstream URL: empty port after ':'");
		port = 0;
		for (; d < auth_end; d++) {
			if (*d < '0' || *d > '9' || port > 65535)
				return bridge_error_set(err, "upstream URL: invalid port '%.*s'",
							(int)(auth_end - after - 1 > 16
								      ? 16
								      : auth_end - after - 1),
							after + 1);
			port = port * 10 + (*d - '0');
		}
		if (port < 1 || port > 65535)
			return bridge_error_set(err, "upstream URL: port %ld out of range 1-65535",
						port);
		ret->port = (int)port;
	}

	rest = auth_end;
	if (*rest == '\0')
		rest = "/";
	if (strlen(rest) + (*rest == '?') >= sizeof(ret->path))
		return bridge_error_set(err, "upstream URL: path longer than %zu bytes",
					sizeof(ret->path) - 1);
	snprintf(ret->path, sizeof(ret->path), "%s%s", *rest == '?' ? "/" : "", rest);
	for (i = 0; ret->path[i]; i++) {
		if (ret->path[i] == '%' &&
		    (hex_digit(ret->path[i + 1]) < 0 || hex_digit(ret->path[i + 2]) < 0))
			return bridge_error_set(err,
						"upstream URL: bad percent-encoding in path at "
						"'%.8s'",
						ret->path + i);
	}

	if (strchr(ret->host, ':')) {
		if (ret->port == (ret->https ? 443 : 80))
			snprintf(ret->host_header, sizeof(ret->host_header), "[%s]", ret->host);
		else
			snprintf(ret->host_header, sizeof(ret->host_header), "[%s]:%d", ret->host,
				 ret->port);
	} else if (ret->port == (ret->https ? 443 : 80)) {
		snprintf(ret->host_header, sizeof(ret->host_header), "%s", ret->host);
	} else {
		snprintf(ret->host_header, sizeof(ret->host_header), "%s:%d", ret->host, ret->port);
	}
	return 0;
}
