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

/* SHA256_Init/Update/Final are deprecated since OpenSSL 3.0 and still there
 * (the EVP providers run on them): their context is a plain struct, so a
 * keyed HMAC state is copied with no allocation.  OpenSSL 3's EVP_MAC and
 * EVP_MD contexts allocate at every init and copy, three times per signed
 * post, and their bookkeeping cost a fifth of what the hashing did. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "bridge/hex.h"
#include "bridge/sha256x2.h"
#include "bridge/sign.h"

#define SIGN_PREFIX     "sha256="
#define SIGN_PREFIX_LEN (sizeof(SIGN_PREFIX) - 1)
#define SIGN_DIGEST_LEN 32
#define SIGN_HEX_LEN    64
#define SIGN_BASE64_LEN 44

/* A worker signs every post with its route's secret: HMAC's two keyed
 * states (RFC 2104: the key's inner and outer pads, hashed once) are kept
 * per thread, and a signature starts from copies of them. */
#define SIGN_KEYS 4 /* keyed states a thread keeps: a rotation's keys fit */

struct sign_key {
	unsigned char *key; /* NULL: the slot is free */
	size_t len;
	SHA256_CTX inner, outer;
};

struct sign_thread {
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
	if (k->key)
		OPENSSL_clear_free(k->key, k->len ? k->len : 1);
	OPENSSL_cleanse(k, sizeof(*k));
	k->key = NULL;
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
	free(t);
}

static void sign_once_init(void)
{
	sign_tkey_ok = pthread_key_create(&sign_tkey, sign_thread_free) == 0;
}

/* This thread's state, or NULL (keyed states are made on the stack then). */
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
	pthread_mutex_lock(&sign_lock);
	t->next_t = sign_threads;
	if (sign_threads)
		sign_threads->prev_t = t;
	sign_threads = t;
	pthread_mutex_unlock(&sign_lock);
	if (pthread_setspecific(sign_tkey, t) != 0) {
		sign_thread_free(t);
		return NULL;
	}
	return t;
}

/* RFC 2104: a key longer than a block is hashed first; the block-sized key
 * XOR 0x36 starts the inner hash, XOR 0x5c the outer one. */
static int sign_states(const unsigned char *key, size_t key_len, SHA256_CTX *inner,
		       SHA256_CTX *outer)
{
	unsigned char k[SHA256_CBLOCK], pad[SHA256_CBLOCK];
	int ok;

	memset(k, 0, sizeof(k));
	if (key_len > sizeof(k)) {
		SHA256_CTX c;

		ok = SHA256_Init(&c) && SHA256_Update(&c, key, key_len) && SHA256_Final(k, &c);
		OPENSSL_cleanse(&c, sizeof(c));
		if (!ok)
			return -1;
	} else {
		memcpy(k, key, key_len);
	}
	for (size_t i = 0; i < sizeof(pad); i++)
		pad[i] = k[i] ^ 0x36;
	ok = SHA256_Init(inner) && SHA256_Update(inner, pad, sizeof(pad));
	for (size_t i = 0; i < sizeof(pad); i++)
		pad[i] = k[i] ^ 0x5c;
	ok = ok && SHA256_Init(outer) && SHA256_Update(outer, pad, sizeof(pad));
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(pad, sizeof(pad));
	return ok ? 0 : -1;
}

/* The keyed states of key, made on first use in this thread. */
static const struct sign_key *sign_keyed(struct sign_thread *t, const unsigned char *key,
					 size_t key_len)
{
	struct sign_key *k;

	for (int i = 0; i < SIGN_KEYS; i++) {
		k = &t->keys[i];
		if (k->key && k->len == key_len && CRYPTO_memcmp(k->key, key, key_len) == 0)
			return k;
	}
	k = &t->keys[t->next++ % SIGN_KEYS];
	sign_key_clear(k);
	k->key = OPENSSL_malloc(key_len ? key_len : 1);
	if (!k->key)
		return NULL;
	memcpy(k->key, key, key_len);
	k->len = key_len;
	if (sign_states(key, key_len, &k->inner, &k->outer) < 0) {
		sign_key_clear(k);
		return NULL;
	}
	return k;
}

/* HMAC-SHA256 from the keyed states: the inner hash of the body, then the
 * outer hash of the inner digest. */
static int sign_hmac(const SHA256_CTX *inner, const SHA256_CTX *outer, const void *body, size_t len,
		     unsigned char *ret)
{
	unsigned char in_md[SIGN_DIGEST_LEN];
	SHA256_CTX c = *inner;
	int ok = SHA256_Update(&c, body, len) && SHA256_Final(in_md, &c);

	c = *outer;
	ok = ok && SHA256_Update(&c, in_md, sizeof(in_md)) && SHA256_Final(ret, &c);
	OPENSSL_cleanse(&c, sizeof(c));
	OPENSSL_cleanse(in_md, sizeof(in_md));
	return ok ? 0 : -1;
}

static int sign_digest(const void *key, size_t key_len, const void *body, size_t len,
		       unsigned char *ret)
{
	static const unsigned char empty[1];
	struct sign_thread *t;
	const struct sign_key *k;
	SHA256_CTX inner, outer;
	int rc;

	if (!key || key_len == 0)
		key = empty;
	if (!body || len == 0)
		body = empty;
	t = sign_thread();
	if (t) {
		k = sign_keyed(t, key, key_len);
		return k ? sign_hmac(&k->inner, &k->outer, body, len, ret) : -1;
	}
	rc = sign_states(key, key_len, &inner, &outer);
	rc = rc < 0 ? -1 : sign_hmac(&inner, &outer, body, len, ret);
	OPENSSL_cleanse(&inner, sizeof(inner));
	OPENSSL_cleanse(&outer, sizeof(outer));
	return rc;
}

int sign_sha256(const struct sign_part *parts, size_t n, unsigned char md[SIGN_SHA256_LEN])
{
	SHA256_CTX c;
	int ok = SHA256_Init(&c);

	for (size_t i = 0; ok && i < n; i++)
		ok = SHA256_Update(&c, parts[i].data, parts[i].len);
	return ok && SHA256_Final(md, &c) ? 0 : -1;
}

/* "sha256=" and md as enc says into ret (room checked by the caller). */
static int sign_put(const unsigned char *md, enum sign_encoding enc, char *ret)
{
	char *p;

	memcpy(ret, SIGN_PREFIX, SIGN_PREFIX_LEN);
	p = ret + SIGN_PREFIX_LEN;
	if (enc == SIGN_HEX) {
		p = hex_put(p, md, SIGN_DIGEST_LEN);
		*p = '\0';
		return 0;
	}
	return EVP_EncodeBlock((unsigned char *)p, md, SIGN_DIGEST_LEN) == SIGN_BASE64_LEN ? 0 : -1;
}

static int sign_room(enum sign_encoding enc, const char *ret, size_t cap)
{
	size_t need = SIGN_PREFIX_LEN + (enc == SIGN_BASE64 ? SIGN_BASE64_LEN : SIGN_HEX_LEN) + 1;

	return ret && cap >= need && (enc == SIGN_HEX || enc == SIGN_BASE64) ? 0 : -1;
}

int sign_body(const void *key, size_t key_len, const void *body, size_t len, enum sign_encoding enc,
	      char *ret, size_t cap)
{
	unsigned char md[SIGN_DIGEST_LEN];
	int rc;

	if (sign_room(enc, ret, cap) < 0 || sign_digest(key, key_len, body, len, md) < 0)
		return -1;
	rc = sign_put(md, enc, ret);
	OPENSSL_cleanse(md, sizeof(md));
	return rc;
}

/* Both hashes over the same body as two lanes: HMAC's inner hash from the
 * keyed state (which has hashed the key's one block), and SHA-256 of pre
 * then body; then HMAC's outer hash of the inner digest. */
static int sign_pair(const struct sign_key *k, const void *body, size_t len, const void *pre,
		     size_t pre_len, unsigned char *ret_mac, unsigned char *ret_md)
{
	struct sha256_lane lane[2];
	unsigned char md[2][SHA256X2_DIGEST_LEN];
	SHA256_CTX c;
	int ok;

	if (k->inner.num != 0 || k->inner.Nh != 0 || k->inner.Nl != SHA256_CBLOCK * 8)
		return -1;
	memcpy(lane[0].h, k->inner.h, sizeof(lane[0].h));
	lane[0].done = SHA256_CBLOCK;
	lane[0].pre = NULL;
	lane[0].pre_len = 0;
	sha256_lane_start(&lane[1]);
	lane[1].pre = pre;
	lane[1].pre_len = pre_len;
	lane[0].body = lane[1].body = body;
	lane[0].len = lane[1].len = len;
	sha256x2(lane, md);
	memcpy(ret_md, md[1], SIGN_SHA256_LEN);
	c = k->outer;
	ok = SHA256_Update(&c, md[0], sizeof(md[0])) && SHA256_Final(ret_mac, &c);
	OPENSSL_cleanse(&c, sizeof(c));
	OPENSSL_cleanse(lane, sizeof(lane));
	OPENSSL_cleanse(md, sizeof(md));
	return ok ? 0 : -1;
}

int sign_body_sha256(const void *key, size_t key_len, const void *body, size_t len,
		     enum sign_encoding enc, char *ret, size_t cap, const void *pre, size_t pre_len,
		     unsigned char md[SIGN_SHA256_LEN])
{
	static const unsigned char empty[1];
	const struct sign_part parts[] = { { pre, pre_len }, { body, len } };
	unsigned char mac[SIGN_DIGEST_LEN];
	const struct sign_key *k = NULL;
	struct sign_thread *t;
	int rc;

	if (sign_room(enc, ret, cap) < 0)
		return -1;
	if (!key || key_len == 0)
		key = empty;
	t = sha256x2_usable() ? sign_thread() : NULL;
	if (t)
		k = sign_keyed(t, key, key_len);
	if (k)
		rc = sign_pair(k, body ? body : empty, body ? len : 0, pre, pre_len, mac, md);
	else
		rc = sign_digest(key, key_len, body, len, mac) < 0 || sign_sha256(parts, 2, md) < 0
			     ? -1
			     : 0;
	rc = rc < 0 ? -1 : sign_put(mac, enc, ret);
	OPENSSL_cleanse(mac, sizeof(mac));
	return rc;
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
