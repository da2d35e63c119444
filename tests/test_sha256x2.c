/*
 * sha256x2: the two-lane SHA-256 against OpenSSL's for every block
 * boundary a prefix and a body can fall on, lanes of unequal lengths and
 * keyed starting states; sign_body_sha256() and delivery_digests() against
 * the one-at-a-time hashes they stand for; and the CPU probe against the
 * kernel's flags.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "bridge/delivery.h"
#include "bridge/sha256x2.h"
#include "bridge/sign.h"
#include "tap.h"

static unsigned char data[12000];

/* 1 when /proc/cpuinfo's flags name every one of the words. */
static int cpu_flags(const char *const *want, size_t n)
{
	char line[8192];
	size_t found = 0;
	FILE *f = fopen("/proc/cpuinfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "flags", 5) == 0) {
			for (size_t i = 0; i < n; i++) {
				char w[32];

				snprintf(w, sizeof(w), " %s", want[i]);
				for (const char *p = line; (p = strstr(p, w)); p++)
					if (p[strlen(w)] == ' ' || p[strlen(w)] == '\n') {
						found++;
						break;
					}
			}
			break;
		}
	fclose(f);
	return found == n;
}

static void test_probe(void)
{
	static const char *const flags[] = { "sha_ni", "ssse3", "sse4_1" };
	int cpu = cpu_flags(flags, 3);
	/* valgrind's virtual CPU has no SHA extensions and says so in cpuid */
	int want = getenv("BRIDGE_UNDER_VALGRIND") ? 0 : cpu;

	ok(cpu >= 0, "/proc/cpuinfo is readable");
	is_int(sha256x2_usable(), want,
	       want ? "the CPU has the SHA extensions and sha256x2 says it can use them"
		    : "no SHA extensions here and sha256x2 says it cannot run");
	is_int(sha256x2_usable(), want, "the second answer is the kept one");
}

/* OpenSSL's digest of (the state after `start` full blocks) + pre + body. */
static void want_digest(const unsigned char *start, size_t start_len, const unsigned char *pre,
			size_t pre_len, const unsigned char *body, size_t len, unsigned char *md)
{
	SHA256_CTX c;

	SHA256_Init(&c);
	SHA256_Update(&c, start, start_len);
	SHA256_Update(&c, pre, pre_len);
	SHA256_Update(&c, body, len);
	SHA256_Final(md, &c);
}

/* A lane whose state has hashed start (whole blocks), as HMAC's inner one. */
static void lane_at(struct sha256_lane *l, const unsigned char *start, size_t start_len)
{
	SHA256_CTX c;

	SHA256_Init(&c);
	SHA256_Update(&c, start, start_len);
	memcpy(l->h, c.h, sizeof(l->h));
	l->done = start_len;
}

static int lanes_match(size_t start0, size_t pre0, size_t len0, size_t start1, size_t pre1,
		       size_t len1)
{
	struct sha256_lane l[2];
	unsigned char md[2][SHA256X2_DIGEST_LEN], want[2][32];
	/* the lanes read different places of data, each its own bytes */
	const unsigned char *s0 = data + 9000, *p0 = data + 17, *b0 = data + 300;
	const unsigned char *s1 = data + 9500, *p1 = data + 3, *b1 = data + 5;

	lane_at(&l[0], s0, start0);
	lane_at(&l[1], s1, start1);
	l[0].pre = p0, l[0].pre_len = pre0, l[0].body = b0, l[0].len = len0;
	l[1].pre = p1, l[1].pre_len = pre1, l[1].body = b1, l[1].len = len1;
	sha256x2(l, md);
	want_digest(s0, start0, p0, pre0, b0, len0, want[0]);
	want_digest(s1, start1, p1, pre1, b1, len1, want[1]);
	return memcmp(md[0], want[0], 32) == 0 && memcmp(md[1], want[1], 32) == 0;
}

static void test_lanes(void)
{
	static const size_t pres[] = { 0, 1, 11, 55, 56, 63, 64, 65, 119, 128, 200 };
	size_t bad = 0, runs = 0;

	if (!sha256x2_usable()) {
		/* the lanes need the extensions; the callers' fallback is
		 * checked below, by the same expected digests */
		ok(getenv("BRIDGE_UNDER_VALGRIND") != NULL,
		   "only valgrind's CPU lacks the SHA extensions among the runs");
		return;
	}
	/* every body length over four blocks, after every kind of prefix */
	for (size_t p = 0; p < sizeof(pres) / sizeof(pres[0]); p++)
		for (size_t len = 0; len <= 260; len++, runs++)
			bad += !lanes_match(64, 0, len, 0, pres[p], len);
	is_int((long long)bad, 0, "HMAC-like and prefixed lanes over 0-260 bytes match OpenSSL");
	ok(runs == 11 * 261, "every one of the 2,871 pairs ran");

	bad = 0;
	for (size_t a = 0; a <= 200; a += 7)
		for (size_t b = 0; b <= 200; b += 3)
			bad += !lanes_match(0, a % 70, a, 128, b % 65, b);
	is_int((long long)bad, 0, "lanes of unequal lengths (either one longer) match OpenSSL");

	ok(lanes_match(64, 0, 2902, 0, 11, 2902), "a forwarded body's two hashes (2,902 bytes)");
	ok(lanes_match(0, 0, 0, 0, 0, 0), "two empty messages");
	ok(lanes_match(64, 0, 8000, 0, 3, 17), "a long lane beside a short one");
	ok(lanes_match(0, 5, 17, 64, 0, 8000), "a short lane beside a long one");
	ok(lanes_match(0, 200, 0, 0, 0, 11000), "a prefix alone beside 11,000 bytes");
}

static void test_sign_pair(void)
{
	static const size_t keys[] = { 0, 1, 6, 63, 64, 65, 131 };
	static const size_t lens[] = { 0, 1, 55, 56, 64, 119, 2902, 5000 };
	char sig[SIGN_HEADER_MAX], want_sig[SIGN_HEADER_MAX];
	unsigned char md[SIGN_SHA256_LEN], want_md[SIGN_SHA256_LEN];
	size_t bad = 0;

	for (int enc = SIGN_HEX; enc <= SIGN_BASE64; enc++)
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			for (size_t n = 0; n < sizeof(lens) / sizeof(lens[0]); n++) {
				const struct sign_part parts[] = { { data + 40, k + 3 },
								   { data + 100, lens[n] } };

				if (sign_body_sha256(data, keys[k], data + 100, lens[n],
						     (enum sign_encoding)enc, sig, sizeof(sig),
						     data + 40, k + 3, md) < 0 ||
				    sign_body(data, keys[k], data + 100, lens[n],
					      (enum sign_encoding)enc, want_sig,
					      sizeof(want_sig)) < 0 ||
				    sign_sha256(parts, 2, want_md) < 0 ||
				    strcmp(sig, want_sig) != 0 || memcmp(md, want_md, 32) != 0)
					bad++;
			}
	is_int((long long)bad, 0,
	       "sign_body_sha256 gives sign_body's signature and sign_sha256's digest "
	       "(both encodings, keys of 0-131 bytes, bodies of 0-5,000)");
	is_int(sign_body_sha256("k", 1, NULL, 0, SIGN_HEX, sig, sizeof(sig), "r\n", 2, md), 0,
	       "no body at all");
	sign_body("k", 1, NULL, 0, SIGN_HEX, want_sig, sizeof(want_sig));
	is_str(sig, want_sig, "is the empty body's signature");
	is_int(sign_body_sha256("k", 1, "b", 1, SIGN_HEX, sig, 71, "r\n", 2, md), -1,
	       "a signature buffer too small fails as sign_body does");
	is_int(sign_body_sha256("k", 1, "b", 1, (enum sign_encoding)7, sig, sizeof(sig), "r\n", 2,
				md),
	       -1, "and so does an unknown encoding");
}

static void test_delivery(void)
{
	static const char *const secrets[] = { "s3cret" };
	static const size_t secret_lens[] = { 6 };
	char long_name[300], id[DELIVERY_ID_LEN + 1], want_id[DELIVERY_ID_LEN + 1];
	char sig[SIGN_HEADER_MAX], want_sig[SIGN_HEADER_MAX];
	struct bridge_route r;

	memset(&r, 0, sizeof(r));
	r.name = "crm";
	r.secrets = (char **)secrets;
	r.secret_lens = (size_t *)secret_lens;
	r.n_secrets = 1;
	r.signature_encoding = SIGN_HEX;
	is_int(delivery_digests(&r, data, 2902, id, sig), 0, "a signed route's digests");
	delivery_id_make("crm", data, 2902, want_id);
	sign_body("s3cret", 6, data, 2902, SIGN_HEX, want_sig, sizeof(want_sig));
	is_str(id, want_id, "the delivery id is delivery_id_make's");
	is_str(sig, want_sig, "the signature is sign_body's");
	r.signature_encoding = SIGN_BASE64;
	delivery_digests(&r, data, 2902, id, sig);
	sign_body("s3cret", 6, data, 2902, SIGN_BASE64, want_sig, sizeof(want_sig));
	is_str(sig, want_sig, "in base64 too");

	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	r.name = long_name;
	delivery_digests(&r, data, 700, id, sig);
	delivery_id_make(long_name, data, 700, want_id);
	sign_body("s3cret", 6, data, 700, SIGN_BASE64, want_sig, sizeof(want_sig));
	ok(strcmp(id, want_id) == 0 && strcmp(sig, want_sig) == 0,
	   "a 299-byte route name (hashed in two passes) gives the same id and signature");

	r.name = "crm";
	strcpy(sig, "left over");
	is_int(delivery_digests(&r, data, 50, id, NULL), 0, "no signature asked for");
	delivery_id_make("crm", data, 50, want_id);
	is_str(id, want_id, "still the delivery id");
	r.n_secrets = 0;
	is_int(delivery_digests(&r, data, 50, id, sig), 0, "a route without a secret");
	is_str(sig, "", "gets an empty signature");
	is_str(id, want_id, "and the same delivery id");
}

int main(void)
{
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 131 + (i >> 8) * 7 + 1);
	test_probe();
	test_lanes();
	test_sign_pair();
	test_delivery();
	return tap_done();
}
