#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "bridge/access.h"
#include "bridge/confread.h"
#include "bridge/sign.h"

static const char *const auth_keys[] = { "basic", "query", "header", NULL };
static const char *const basic_keys[] = { "user", "password", "password_file", NULL };
static const char *const pair_keys[] = { "name", "value", "value_file", NULL };

static int load_pair(const config_setting_t *g, const char *group, const char *k1, const char *k2,
		     char **v1, char **v2, const char *file, struct diag *d)
{
	const config_setting_t *s = cfg_get_group(g, group, file, d);
	const char *a = NULL;
	const char *const *keys = strcmp(group, "basic") == 0 ? basic_keys : pair_keys;
	char *b = NULL;
	size_t bn;
	int rc;

	if (!s)
		return 0;
	cfg_check_keys(s, keys, file, d);
	cfg_get_text(s, k1, &a, file, d);
	rc = cfg_get_secret(s, k2, &b, &bn, file, d);
	if (rc < 0)
		return -1;
	if (!a || !b) {
		free(b);
		return diag_add(d, cfg_file(s, file), cfg_line(s),
				"auth '%s' needs both '%s' and '%s' (or '%s_file')", group, k1, k2,
				k2);
	}
	if (strcmp(group, "basic") == 0 && strchr(a, ':')) {
		free(b);
		return diag_add(d, cfg_file(s, file), cfg_line(s),
				"auth basic 'user' must not contain ':'");
	}
	*v1 = strdup(a);
	*v2 = b;
	return rc;
}

int access_auth_load(const config_setting_t *g, const char *file, struct access_auth *ret,
		     struct diag *d)
{
	int before = d->count;

	memset(ret, 0, sizeof(*ret));
	if (!g)
		return 0;
	cfg_check_keys(g, auth_keys, file, d);
	ret->inline_secret |= load_pair(g, "basic", "user", "password", &ret->basic_user,
					&ret->basic_password, file, d) == 2;
	ret->inline_secret |= load_pair(g, "query", "name", "value", &ret->query_name,
					&ret->query_value, file, d) == 2;
	ret->inline_secret |= load_pair(g, "header", "name", "value", &ret->header_name,
					&ret->header_value, file, d) == 2;
	ret->enabled = ret->basic_user || ret->query_name || ret->header_name;
	if (!ret->enabled && d->count == before)
		diag_add(d, cfg_file(g, file), cfg_line(g),
			 "'auth' names no method: add basic, query or header");
	return d->count > before ? -1 : 0;
}

void access_auth_clear(struct access_auth *a)
{
	free(a->basic_user);
	free(a->basic_password);
	free(a->query_name);
	free(a->query_value);
	free(a->header_name);
	free(a->header_value);
	memset(a, 0, sizeof(*a));
}

/* Equal in constant time whatever the lengths: compare digests. */
static int secret_equal(const char *got, size_t got_len, const char *want)
{
	const struct sign_part pa = { got, got_len }, pb = { want, strlen(want) };
	unsigned char a[SIGN_SHA256_LEN], b[SIGN_SHA256_LEN];

	if (sign_sha256(&pa, 1, a) < 0 || sign_sha256(&pb, 1, b) < 0)
		return 0;
	return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

static int check_basic(const struct access_auth *a, const char *v)
{
	unsigned char decoded[512];
	char *colon;
	int n;
	size_t len, ulen;

	if (!v || strncasecmp(v, "Basic ", 6) != 0)
		return 0;
	v += 6;
	while (*v == ' ')
		v++;
	len = strlen(v);
	if (len == 0 || len > 680 || len % 4)
		return 0;
	n = EVP_DecodeBlock(decoded, (const unsigned char *)v, (int)len);
	if (n < 0)
		return 0;
	/* EVP_DecodeBlock counts padding as bytes */
	if (len >= 1 && v[len - 1] == '=')
		n--;
	if (len >= 2 && v[len - 2] == '=')
		n--;
	decoded[n] = '\0';
	colon = memchr(decoded, ':', (size_t)n);
	if (!colon)
		return 0;
	ulen = (size_t)(colon - (char *)decoded);
	/* evaluate both so the time does not tell which one was wrong */
	return secret_equal((const char *)decoded, ulen, a->basic_user) &
	       secret_equal(colon + 1, (size_t)n - ulen - 1, a->basic_password);
}

static int check_query(const struct access_auth *a, const char *q)
{
	struct evkeyvalq params;
	const char *v;
	int ok = 0;

	if (!q)
		return 0;
	TAILQ_INIT(&params);
	if (evhttp_parse_query_str(q, &params) != 0) {
		evhttp_clear_headers(&params);
		return 0;
	}
	v = evhttp_find_header(&params, a->query_name);
	if (v)
		ok = secret_equal(v, strlen(v), a->query_value);
	evhttp_clear_headers(&params);
	return ok;
}

int access_auth_check_parts(const struct access_auth *a, const char *authorization,
			    const char *query, const char *header)
{
	int ok = 0;

	if (!a || !a->enabled)
		return 1;
	if (a->basic_user && authorization)
		ok |= check_basic(a, authorization);
	if (a->query_name && query)
		ok |= check_query(a, query);
	if (a->header_name && header)
		ok |= secret_equal(header, strlen(header), a->header_value);
	return ok;
}

int access_auth_check(const struct access_auth *a, struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);

	if (!a || !a->enabled)
		return 1;
	return access_auth_check_parts(
		a, evhttp_find_header(h, "Authorization"), uri ? evhttp_uri_get_query(uri) : NULL,
		a->header_name ? evhttp_find_header(h, a->header_name) : NULL);
}

/* the ::ffff:0:0/96 prefix of IPv4-mapped IPv6 addresses */
static const unsigned char v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

int access_cidr_parse(const char *s, struct access_cidr *ret)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	long bits;
	char *end;

	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(ret, 0, sizeof(*ret));
	if (inet_pton(AF_INET, buf, ret->addr) == 1)
		ret->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, ret->addr) == 1)
		ret->family = AF_INET6;
	else
		return -1;
	bits = ret->family == AF_INET ? 32 : 128;
	if (slash) {
		if (!slash[1])
			return -1;
		long b = strtol(slash + 1, &end, 10);
		if (*end || b < 0 || b > bits)
			return -1;
		bits = b;
	}
	ret->bits = (int)bits;
	/* host bits set (10.0.0.1/8) would be a typo: refuse it */
	for (int i = ret->bits; i < (ret->family == AF_INET ? 32 : 128); i++)
		if (ret->addr[i / 8] & (0x80 >> (i % 8)))
			return -1;
	/* An IPv4-mapped range (::ffff:10.0.0.0/104) is stored as the IPv4
	 * range it names: access_list_allows() compares mapped peers as IPv4,
	 * so kept as IPv6 it would never match anything. */
	if (ret->family == AF_INET6 && ret->bits >= 96 && memcmp(ret->addr, v4_mapped, 12) == 0) {
		memmove(ret->addr, ret->addr + 12, 4);
		memset(ret->addr + 4, 0, 12);
		ret->family = AF_INET;
		ret->bits -= 96;
	}
	return 0;
}

int access_list_load(const config_setting_t *arr, const char *file, struct access_list *ret,
		     struct diag *d)
{
	int n, before = d->count;

	memset(ret, 0, sizeof(*ret));
	if (!arr)
		return 0;
	if (!config_setting_is_array(arr) || (n = config_setting_length(arr)) == 0)
		return diag_add(d, cfg_file(arr, file), cfg_line(arr),
				"'allow' must be a non-empty array of CIDR strings, e.g. [ "
				"\"10.0.0.0/8\" ]");
	ret->items = calloc((size_t)n, sizeof(*ret->items));
	if (!ret->items)
		return diag_add(d, file, cfg_line(arr), "out of memory");
	for (int i = 0; i < n; i++) {
		const char *s = config_setting_get_string_elem(arr, (unsigned)i);

		if (!s || access_cidr_parse(s, &ret->items[ret->n]) < 0) {
			diag_add(d, cfg_file(arr, file), cfg_line(arr),
				 "'allow' element %d (\"%s\") is not an address or CIDR range "
				 "(host bits must be zero)",
				 i, s ? s : "");
			continue;
		}
		ret->n++;
	}
	return d->count > before ? -1 : 0;
}

void access_list_clear(struct access_list *l)
{
	free(l->items);
	memset(l, 0, sizeof(*l));
}

static int prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[full] ^ b[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

int access_list_allows(const struct access_list *l, const char *addr)
{
	unsigned char a[16];
	int family;

	if (!l || l->n == 0)
		return 1;
	if (!addr)
		return 0;
	if (inet_pton(AF_INET, addr, a) == 1) {
		family = AF_INET;
	} else if (inet_pton(AF_INET6, addr, a) == 1) {
		family = AF_INET6;
		if (memcmp(a, v4_mapped, 12) == 0) {
			memmove(a, a + 12, 4);
			family = AF_INET;
		}
	} else {
		return 0;
	}
	for (size_t i = 0; i < l->n; i++)
		if (l->items[i].family == family &&
		    prefix_match(a, l->items[i].addr, l->items[i].bits))
			return 1;
	return 0;
}
