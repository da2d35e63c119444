/*
 * delivery: what one v2 delivery looks like on the wire, shared by forward
 * and dual mode (server.c), replay and queued delivery, so that a receiver
 * sees the same headers and the same delivery id whichever path sent it.
 */
#ifndef BRIDGE_DELIVERY_H
#define BRIDGE_DELIVERY_H

#include <stddef.h>
#include "bridge/config.h"
#include "bridge/sign.h"
#include "bridge/upstream.h"

#define DELIVERY_ID_LEN      36 /* 8-4-4-4-12 lower-case hex */
/* the bridge's own five, the route's static ones, traceparent, X-Request-Id */
#define DELIVERY_HEADERS_MAX (5 + ROUTE_HEADERS_MAX + 2)

/* Stable for the same route name and v2 body, so a sender's retry of the
 * same participation carries the same id (receivers dedupe on it).  It is an
 * RFC 9562 version-8 UUID: the first 128 bits of SHA-256(route "\n" body)
 * with the version (8) and variant (10) bits overwritten.  Renaming the route
 * or changing the mapping (hence the body) changes the id. */
void delivery_id_make(const char *route, const void *body, size_t len,
		      char out[DELIVERY_ID_LEN + 1]);

/* The delivery id of body on route r into id, as delivery_id_make() gives
 * it, and, when sig is not NULL and r has a secret, the signature header's
 * value with r's first secret into sig (SIGN_HEADER_MAX bytes; "" when r
 * has no secret).  The two hashes read the body side by side where the CPU
 * allows (sign_body_sha256).  Returns 0, or -1 when the signature cannot be
 * computed (id is made all the same). */
int delivery_digests(const struct bridge_route *r, const void *body, size_t len,
		     char id[DELIVERY_ID_LEN + 1], char *sig);

/* Fill h with Content-Type, the route's auth header, the signature header
 * (sig, from delivery_digests()) and the delivery-id header, plus
 * User-Agent and the route's static `headers`; h has room for two more (the
 * sender's trace context).  The pointers in h point into r, sig and
 * delivery_id.  A route without a secret (dry-run) gets no signature
 * header.  Returns the number of headers. */
int delivery_headers(const struct bridge_route *r, const char *delivery_id, const char *sig,
		     struct upstream_header h[DELIVERY_HEADERS_MAX]);

#endif
