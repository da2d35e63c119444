/*
 * sign: X-Qualifio-Signature values, "sha256=" + HMAC-SHA256(secret, body).
 *
 * Verification decodes the received digest to its 32 raw bytes and compares
 * raw digests with CRYPTO_memcmp, so the comparison time does not depend on
 * where the first differing byte is, and every key is tried (no early exit)
 * so the time does not tell which key of a rotation matched either.
 */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "bridge/hex.h"
#include "bridge/sign.h"

#define SIGN_PREFIX     "sha256="
#define SIGN_PREFIX_LEN (sizeof(SIGN_PREFIX) - 1)
#define SIGN_DIGEST_LEN 32
#define SIGN_HEX_LEN    64
#define SIGN_BASE64_LEN 44

/* A worker signs every post with its route's secret: the HMAC state keyed
 * by it and a SHA-256 context are kept per thread, so a signature or digest
 * costs no allocation, algorithm fetch or key set-up (a restart from the
 * keyed state is EVP_MAC_init without a key). */
#define SIGN_KEYS 4 /* keyed states a thread keeps: a rotation's keys fit */

struct sign_key {
	EVP_MAC_CTX *ctx;
	unsigned char *key;
	size_t len;
};

struct sign_thread {
	EVP_MAC *mac;
	EVP_MD *sha256;
	EVP_MD_CTX *md;
	struct sign_key keys[SIGN_KEYS];
	unsigned next; /* the slot a new key takes */
	struct sign_thread *prev_t, *next_t;
};

static pthread_key_t sign_tkey;
static pthread_once_t sign_once = PTHREAD_ONCE_INIT;
static int sign_tkey_ok;
/* every live thread's state, so a leak checker sees it reachable */
static struct sign_thread *sign_threads;
static pthread_mutex_t sign_lock = PTHREAD_MUTEX_INITIALIZER;

static void sign_key_clear(struct sign_key *k)
{
	EVP_MAC_CTX_free(k->ctx);
	if (k->key)
		OPENSSL_clear_free(k->key, k->len);
	memset(k, 0, sizeof(*k));
}

static void sign_thread_free(void *arg)
{
	struct sign_thread *t = arg;

	pthread_mutex_lock(&sign_lock);
	if (t->prev_t)
		t->prev_t->next_t = t->next_t;
	else
		sign_threads = t->next_t;
	if (t->next_t)
		t->next_t->prev_t = t->prev_t;
	pthread_mutex_unlock(&sign_lock);
	for (int i = 0; i < SIGN_KEYS; i++)
		sign_key_clear(&t->keys[i]);
	EVP_MD_CTX_free(t->md);
	EVP_MD_free(t->sha256);
	EVP_MAC_free(t->mac);
	free(t);
}

static void sign_once_init(void)
{
	sign_tkey_ok = pthread_key_create(&sign_tkey, sign_thread_free) == 0;
}

/* This thread's state, or NULL (the one-shot functions are used then). */
static struct sign_thread *sign_thread(void)
{
	struct sign_thread *t;

	pthread_once(&sign_once, sign_once_init);
	if (!sign_tkey_ok)
		return NULL;
	t = pthread_getspecific(sign_tkey);
	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	t->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	t->md = EVP_MD_CTX_new();
	pthread_mutex_lock(&sign_lock);
	t->next_t = sign_threads;
	if (sign_threads)
		sign_threads->prev_t = t;
	sign_threads = t;
	pthread_mutex_unlock(&sign_lock);
	if (!t->mac || !t->sha256 || !t->md || pthread_setspecific(sign_tkey, t) != 0) {
		sign_thread_free(t);
		return NULL;
	}
	return t;
}

/* The HMAC context keyed by key, made on first use in this thread. */
static EVP_MAC_CTX *sign_keyed(struct sign_thread *t, const unsigned char *key, size_t key_len)
{
	OSSL_PARAM params[2];
	struct sign_key *k;

	for (int i = 0; i < SIGN_KEYS; i++) {
		k = &t->keys[i];
		if (k->ctx && k->len == key_len && CRYPTO_memcmp(k->key, key, key_len) == 0)
			return EVP_MAC_init(k->ctx, NULL, 0, NULL) == 1 ? k->ctx : NULL;
	}
	k = &t->keys[t->next++ % SIGN_KEYS];
	sign_key_clear(k);
	k->key = OPENSSL_malloc(key_len ? key_len : 1);
	k->ctx = EVP_MAC_CTX_new(t->mac);
	if (!k->key || !k->ctx) {
		sign_key_clear(k);
		return NULL;
	}
	memcpy(k->key, key, key_len);
	k->len = key_len;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_init(k->ctx, key, key_len, params) != 1) {
		sign_key_clear(k);
		return NULL;
	}
	return k->ctx;
}

static int sign_digest(const void *key, size_t key_len, const void *body, size_t len,
		       unsigned char *ret)
{
	static const unsigned char empty[1];
	struct sign_thread *t;
	unsigned int md_len = 0;

	if (key_len > INT_MAX)
		return -1;
	/* OpenSSL wants non-NULL pointers even for empty keys and bodies. */
	if (!key || key_len == 0)
		key = empty;
	if (!body || len == 0)
		body = empty;
	t = sign_thread();
	if (t) {
		EVP_MAC_CTX *ctx = sign_keyed(t, key, key_len);
		size_t out = 0;

		if (!ctx || EVP_MAC_update(ctx, body, len) != 1 ||
		    EVP_MAC_final(ctx, ret, &out, SIGN_DIGEST_LEN) != 1)
			return -1;
		return out == SIGN_DIGEST_LEN ? 0 : -1;
	}
	if (!HMAC(EVP_sha256(), key, (int)key_len, body, len, ret, &md_len))
		return -1;
	return md_len == SIGN_DIGEST_LEN ? 0 : -1;
}

int sign_sha256(const struct sign_part *parts, size_t n, unsigned char md[SIGN_SHA256_LEN])
{
	struct sign_thread *t = sign_thread();
	EVP_MD_CTX *own = t ? NULL : EVP_MD_CTX_new();
	EVP_MD_CTX *ctx = t ? t->md : own;
	int ok = ctx && EVP_DigestInit_ex(ctx, t ? t->sha256 : EVP_sha256(), NULL) == 1;

	for (size_t i = 0; ok && i < n; i++)
		ok = EVP_DigestUpdate(ctx, parts[i].data, parts[i].len) == 1;
	ok = ok && EVP_DigestFinal_ex(ctx, md, NULL) == 1;
	EVP_MD_CTX_free(own);
	return ok ? 0 : -1;
}

int sign_body(const void *key, size_t key_len, const void *body, size_t len, enum sign_encoding enc,
	      char *ret, size_t cap)
{
	unsigned char md[SIGN_DIGEST_LEN];
	size_t need;
	char *p;

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
		p = hex_put(p, md, SIGN_DIGEST_LEN);
		*p = '\0';
	} else if (EVP_EncodeBlock((unsigned char *)p, md, SIGN_DIGEST_LEN) != SIGN_BASE64_LEN) {
		OPENSSL_cleanse(md, sizeof(md));
		return -1;
	}
	OPENSSL_cleanse(md, sizeof(md));
	return 0;
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
			int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);

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
