/*
 * fuzz_auth: inbound authentication, access_auth_check_parts on the parts a
 * sender controls: the Authorization header (Basic, base64-decoded into a
 * fixed buffer), the query string (URL-decoded by evhttp) and a token
 * header.  The input is five lines: user, password, Authorization value,
 * query string, header value.  Invariants (abort on violation): the answer
 * is 0 or 1 and the same when asked twice; the canonical Basic credential of
 * user:password, the query token and the header token each let the request
 * in; a request with no credential part does not; a one-byte change of the
 * password refuses the Basic credential.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <openssl/evp.h>

#include "bridge/access.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *next_line(char **p)
{
	char *s = *p, *nl;

	if (!s)
		return NULL;
	nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		*p = nl + 1;
	} else {
		*p = NULL;
	}
	return s;
}

/* "Basic " + base64(user ":" password) */
static char *basic_of(const char *user, const char *pw)
{
	size_t ul = strlen(user), pl = strlen(pw), n = ul + 1 + pl;
	unsigned char *raw = malloc(n + 1);
	char *out = malloc(6 + 4 * ((n + 2) / 3) + 1);

	if (!raw || !out)
		abort();
	memcpy(raw, user, ul);
	raw[ul] = ':';
	memcpy(raw + ul + 1, pw, pl);
	memcpy(out, "Basic ", 6);
	EVP_EncodeBlock((unsigned char *)out + 6, raw, (int)n);
	free(raw);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), *p = s, *user, *pw, *authz, *query, *header;
	struct access_auth a = { 0 };
	int r;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	user = next_line(&p);
	pw = next_line(&p);
	authz = next_line(&p);
	query = next_line(&p);
	header = next_line(&p);
	if (!pw || !*user || !*pw || strchr(user, ':')) {
		free(s);
		return 0;
	}
	a.enabled = 1;
	a.basic_user = user;
	a.basic_password = pw;
	a.query_name = "token";
	a.query_value = pw;
	a.header_name = "X-Token";
	a.header_value = pw;

	r = access_auth_check_parts(&a, authz, query, header);
	if ((r != 0 && r != 1) || access_auth_check_parts(&a, authz, query, header) != r)
		abort();
	if (access_auth_check_parts(&a, NULL, NULL, NULL) != 0)
		abort();
	if (access_auth_check_parts(&a, NULL, NULL, pw) != 1)
		abort();
	{
		char *enc = evhttp_encode_uri(pw), *q = enc ? malloc(strlen(enc) + 7) : NULL;

		if (q) {
			strcpy(q, "token=");
			strcat(q, enc);
			if (access_auth_check_parts(&a, NULL, q, NULL) != 1)
				abort();
		}
		free(q);
		free(enc);
	}
	if (strlen(user) + 1 + strlen(pw) <= 510) { /* what a Basic credential may carry */
		char *good = basic_of(user, pw), *bad;
		size_t pl = strlen(pw);

		if (access_auth_check_parts(&a, good, NULL, NULL) != 1)
			abort();
		pw[pl - 1] ^= 1;
		bad = basic_of(user, pw);
		pw[pl - 1] ^= 1;
		if (access_auth_check_parts(&a, bad, NULL, NULL) != 0)
			abort();
		free(good);
		free(bad);
	}
	free(s);
	return 0;
}
