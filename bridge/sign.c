/*
 * sign: X-Qualifio-Signature values, "sha256=" + HMAC-SHA256(secret, body).
 *
 * Verification decodes the received digest to its 32 raw bytes and compares
 * raw digests with CRYPTO_memcmp, so the comparison time does not depend on
 * where the first differing byte is, and every key is tried (no early exit)
 * so the time does not tell which key of a rotation matched either.
 */
#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "bridge/sign.h"

#define SIGN_PREFIX     "sha256="
#define SIGN_PREFIX_LEN (sizeof(SIGN_PREFIX) - 1)
#define SIGN_DIGEST_LEN 32
#define SIGN_HEX_LEN    64
#define SIGN_BASE64_LEN 44

static int sign_digest(const void *key, size_t key_len, const void *body, size_t len,
		       unsigned char *ret)
{
	static const unsigned char empty[1];
	unsigned int md_len = 0;

	if (key_len > INT_MAX)
		return -1;
	/* OpenSSL wants non-NULL pointers even for empty keys and bodies. */
	if (!key || key_len == 0)
		key = empty;
	if (!body || len == 0)
		body = empty;
	if (!HMAC(EVP_sha256(), key, (int)key_len, body, len, ret, &md_len))
		return -1;
	return md_len == SIGN_DIGEST_LEN ? 0 : -1;
}

int sign_body(const void *key, size_t key_len, const void *body, size_t len, enum sign_encoding enc,
	      char *ret, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SIGN_DIGEST_LEN];
	size_t need;
	char *p;
	int i;

	need = SIGN_PREFIX_LEN + (enc == SIGN_BASE64 ? SIGN_BASE64_LEN : SIGN_HEX_LEN) + 1;
	if (!ret || cap < need)
		return -1;
	if (enc != SIGN_HEX && enc != SIGN_BASE64)
		return -1;
	if (sign_digest(key, key_len, body, len, md) < 0)
		return -1;
	memcpy(ret, SIGN_PREFIX, SIGN_PREFIX_LEN);
	p = ret + SIGN_PREFIX_LEN;
	if (enc == SIGN_HEX) {
		for (i = 0; i < SIGN_DIGEST_LEN; i++) {
			*p++ = hex[md[i] >> 4];
			*p++ = hex[md[i] & 0x0f];
		}
		*p = '\0';
	} else if (EVP_EncodeBlock((unsigned char *)p, md, SIGN_DIGEST_LEN) != SIGN_BASE64_LEN) {
		OPENSSL_cleanse(md, sizeof(md));
		return -1;
	}
	OPENSSL_cleanse(md, sizeof(md));
	return 0;
}

static int sign_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode the part after "sha256=" into 32 raw bytes. Hex is accepted in
 * either case (same digest); base64 must be the canonical 44-char padded
 * form. */
static int sign_digest_decode(const char *s, size_t n, enum sign_encoding enc, unsigned char *ret)
{
	size_t i;

	if (enc == SIGN_HEX) {
		if (n != SIGN_HEX_LEN)
			return -1;
		for (i = 0; i < SIGN_DIGEST_LEN; i++) {
			int hi = sign_hex_value(s[2 * i]), lo = sign_hex_value(s[2 * i + 1]);

			if (hi < 0 || lo < 0)
				return -1;
			ret[i] = (unsigned char)(hi << 4 | lo);
		}
		return 0;
	}
	if (enc == SIGN_BASE64) {
		unsigned char tmp[SIGN_BASE64_LEN / 4 * 3];
		char canon[SIGN_BASE64_LEN + 1];

		if (n != SIGN_BASE64_LEN)
			return -1;
		/* EVP_DecodeBlock keeps the padding bytes: 44 chars -> 33 bytes. */
		if (EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n) != (int)sizeof(tmp))
			return -1;
		/* Reject non-canonical encodings (stray low bits before '='). */
		if (EVP_EncodeBlock((unsigned char *)canon, tmp, SIGN_DIGEST_LEN) !=
			    SIGN_BASE64_LEN ||
		    memcmp(canon, s, SIGN_BASE64_LEN) != 0)
			return -1;
		memcpy(ret, tmp, SIGN_DIGEST_LEN);
		return 0;
	}
	return -1;
}

int sign_verify(const char *const *keys, const size_t *key_lens, size_t n, const void *body,
		size_t len, enum sign_encoding enc, const char *header_value, size_t header_len)
{
	unsigned char got[SIGN_DIGEST_LEN], want[SIGN_DIGEST_LEN];
	int match = -1;
	size_t i;

	if (!keys || !key_lens || !header_value || n == 0 || n > INT_MAX)
		return -1;
	if (header_len <= SIGN_PREFIX_LEN ||
	    memcmp(header_value, SIGN_PREFIX, SIGN_PREFIX_LEN) != 0)
		return -1;
	if (sign_digest_decode(header_value + SIGN_PREFIX_LEN, header_len - SIGN_PREFIX_LEN, enc,
			       got) < 0)
		return -1;
	for (i = 0; i < n; i++) {
		if (sign_digest(keys[i], key_lens[i], body, len, want) < 0)
			continue;
		if (CRYPTO_memcmp(got, want, SIGN_DIGEST_LEN) == 0 && match < 0)
			match = (int)i;
	}
	OPENSSL_cleanse(want, sizeof(want));
	return match;
}

int sign_encoding_parse(const char *s, enum sign_encoding *ret)
{
	if (!s || !ret)
		return -1;
	if (strcmp(s, "hex") == 0) {
		*ret = SIGN_HEX;
		return 0;
	}
	if (strcmp(s, "base64") == 0) {
		*ret = SIGN_BASE64;
		return 0;
	}
	return -1;
}
