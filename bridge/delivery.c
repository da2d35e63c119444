#include <string.h>

#include "bridge/delivery.h"
#include "bridge/hex.h"

/* An RFC 9562 version-8 (custom) UUID from the hash md, with the version
 * and variant bits set so UUID parsers accept it. */
static void delivery_id_put(unsigned char md[SIGN_SHA256_LEN], char out[DELIVERY_ID_LEN + 1])
{
	char *o = out;

	md[6] = (unsigned char)((md[6] & 0x0f) | 0x80);
	md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
	/* 8-4-4-4-12 digits */
	o = hex_put(o, md, 4);
	*o++ = '-';
	o = hex_put(o, md + 4, 2);
	*o++ = '-';
	o = hex_put(o, md + 6, 2);
	*o++ = '-';
	o = hex_put(o, md + 8, 2);
	*o++ = '-';
	o = hex_put(o, md + 10, 6);
	*o = '\0';
}

void delivery_id_make(const char *route, const void *body, size_t len,
		      char out[DELIVERY_ID_LEN + 1])
{
	const struct sign_part parts[] = { { route, strlen(route) }, { "\n", 1 }, { body, len } };
	unsigned char md[SIGN_SHA256_LEN];

	if (sign_sha256(parts, 3, md) < 0)
		memset(md, 0, sizeof(md));
	delivery_id_put(md, out);
}

int delivery_digests(const struct bridge_route *r, const void *body, size_t len,
		     char id[DELIVERY_ID_LEN + 1], char *sig)
{
	/* the id hashes the route's name and a newline before the body; a
	 * name that long is unheard of, and takes the two passes */
	char pre[256];
	size_t n = strlen(r->name);
	unsigned char md[SIGN_SHA256_LEN];

	if (sig)
		*sig = '\0';
	if (!sig || !r->n_secrets) {
		delivery_id_make(r->name, body, len, id);
		return 0;
	}
	if (n >= sizeof(pre)) {
		delivery_id_make(r->name, body, len, id);
		return sign_body(r->secrets[0], r->secret_lens[0], body, len, r->signature_encoding,
				 sig, SIGN_HEADER_MAX);
	}
	memcpy(pre, r->name, n);
	pre[n] = '\n';
	if (sign_body_sha256(r->secrets[0], r->secret_lens[0], body, len, r->signature_encoding,
			     sig, SIGN_HEADER_MAX, pre, n + 1, md) < 0) {
		*sig = '\0';
		delivery_id_make(r->name, body, len, id);
		return -1;
	}
	delivery_id_put(md, id);
	return 0;
}

int delivery_headers(const struct bridge_route *r, const char *delivery_id, const char *sig,
		     struct upstream_header h[DELIVERY_HEADERS_MAX])
{
	int n = 0;

	h[n++] = (struct upstream_header){ "Content-Type", "application/json" };
	if (r->auth_name)
		h[n++] = (struct upstream_header){ r->auth_name, r->auth_value };
	if (r->n_secrets)
		h[n++] = (struct upstream_header){ r->signature_header, sig };
	h[n++] = (struct upstream_header){ r->delivery_id_header, delivery_id };
	h[n++] = (struct upstream_header){ "User-Agent", "webhook-bridge/" BRIDGE_VERSION };
	for (size_t i = 0; i < r->n_headers; i++)
		h[n++] = (struct upstream_header){ r->header_names[i], r->header_values[i] };
	return n;
}
