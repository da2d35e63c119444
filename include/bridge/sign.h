/*
 * sign: the X-Qualifio-Signature of webhook 2.0: HMAC-SHA256 keyed by the
 * route's secret over the exact body bytes sent, written "sha256=<digest>".
 * Pure functions (OpenSSL underneath, with per-thread contexts), thread-safe.
 */
#ifndef BRIDGE_SIGN_H
#define BRIDGE_SIGN_H

#include <stddef.h>

enum sign_encoding {
	SIGN_HEX,    /* lower-case hex, 64 chars: default */
	SIGN_BASE64, /* standard base64 with padding, 44 chars */
};

#define SIGN_HEADER_MAX 72 /* "sha256=" + 64 + NUL, fits base64 too */

/* Write "sha256=<digest>" into ret (cap >= SIGN_HEADER_MAX). Returns 0, or
 * -1 if cap is too small or OpenSSL fails. */
int sign_body(const void *key, size_t key_len, const void *body, size_t len, enum sign_encoding enc,
	      char *ret, size_t cap);

/* Constant-time check of a received header value against each of n keys
 * (secret rotation: old and new accepted).  Returns the index of the
 * matching key, or -1. */
int sign_verify(const char *const *keys, const size_t *key_lens, size_t n, const void *body,
		size_t len, enum sign_encoding enc, const char *header_value, size_t header_len);

#define SIGN_SHA256_LEN 32

struct sign_part {
	const void *data;
	size_t len;
};

/* SHA-256 of the n parts one after the other into md.  Returns 0, or -1 if
 * OpenSSL fails. */
int sign_sha256(const struct sign_part *parts, size_t n, unsigned char md[SIGN_SHA256_LEN]);

/* sign_body() of body into ret, and the SHA-256 of pre then body into md,
 * as sign_sha256() of those two parts would give it.  On a CPU with the SHA
 * extensions the two hashes run side by side over body (sha256x2), else
 * one after the other on OpenSSL; the results are the same.  Returns 0, or
 * -1 as sign_body(). */
int sign_body_sha256(const void *key, size_t key_len, const void *body, size_t len,
		     enum sign_encoding enc, char *ret, size_t cap, const void *pre, size_t pre_len,
		     unsigned char md[SIGN_SHA256_LEN]);

/* Parse "hex" / "base64"; -1 if neither. */
int sign_encoding_parse(const char *s, enum sign_encoding *ret);

#endif
