/*
 * sign: RFC 4231 HMAC-SHA256 vectors, a cross-check against the openssl
 * command line, and the verification rules (prefix, encodings, rotation).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "bridge/sign.h"
#include "tap.h"

struct rfc4231_case {
	const char *name;
	unsigned char key[131];
	size_t key_len;
	const char *data;
	size_t data_len;
	const char *hmac; /* full 64-char digest, or a prefix for case 5 */
};

static void fill(unsigned char *p, unsigned char v, size_t n)
{
	memset(p, v, n);
}

/* Runs a shell command and returns its first output line (static buffer). */
static const char *run_line(const char *cmd)
{
	static char line[512];
	FILE *f = popen(cmd, "r");

	line[0] = '\0';
	if (!f)
		return line;
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	pclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	return line;
}

static void to_hex(const unsigned char *p, size_t n, char *ret)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		ret[2 * i] = hex[p[i] >> 4];
		ret[2 * i + 1] = hex[p[i] & 15];
	}
	ret[2 * n] = '\0';
}

static void test_rfc4231(void)
{
	static struct rfc4231_case c[7];
	unsigned char data3[50], data4[50];
	char out[SIGN_HEADER_MAX], want[SIGN_HEADER_MAX], name[96];
	size_t i;

	c[0].name = "RFC 4231 case 1";
	fill(c[0].key, 0x0b, 20);
	c[0].key_len = 20;
	c[0].data = "Hi There";
	c[0].hmac = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";

	c[1].name = "RFC 4231 case 2 (key shorter than output)";
	memcpy(c[1].key, "Jefe", 4);
	c[1].key_len = 4;
	c[1].data = "what do ya want for nothing?";
	c[1].hmac = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

	c[2].name = "RFC 4231 case 3 (50 bytes of 0xdd)";
	fill(c[2].key, 0xaa, 20);
	c[2].key_len = 20;
	fill(data3, 0xdd, sizeof(data3));
	c[2].data = (const char *)data3;
	c[2].data_len = sizeof(data3);
	c[2].hmac = "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe";

	c[3].name = "RFC 4231 case 4 (25-byte key)";
	for (i = 0; i < 25; i++)
		c[3].key[i] = (unsigned char)(i + 1);
	c[3].key_len = 25;
	fill(data4, 0xcd, sizeof(data4));
	c[3].data = (const char *)data4;
	c[3].data_len = sizeof(data4);
	c[3].hmac = "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b";

	c[4].name = "RFC 4231 case 5 (truncated to 128 bits)";
	fill(c[4].key, 0x0c, 20);
	c[4].key_len = 20;
	c[4].data = "Test With Truncation";
	c[4].hmac = "a3b6167473100ee06e0c796c2955552b";

	c[5].name = "RFC 4231 case 6 (131-byte key)";
	fill(c[5].key, 0xaa, 131);
	c[5].key_len = 131;
	c[5].data = "Test Using Larger Than Block-Size Key - Hash Key First";
	c[5].hmac = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54";

	c[6].name = "RFC 4231 case 7 (131-byte key, long data)";
	fill(c[6].key, 0xaa, 131);
	c[6].key_len = 131;
	c[6].data = "This is a test using a larger than block-size key and a larger than "
		    "block-size data. The key needs to be hashed before being used by the HMAC "
		    "algorithm.";
	c[6].hmac = "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2";

	for (i = 0; i < 7; i++) {
		size_t dlen = c[i].data_len ? c[i].data_len : strlen(c[i].data);

		is_int(sign_body(c[i].key, c[i].key_len, c[i].data, dlen, SIGN_HEX, out,
				 sizeof(out)),
		       0, "sign_body succeeds");
		snprintf(want, sizeof(want), "sha256=%s", c[i].hmac);
		if (strlen(c[i].hmac) < 64) {
			ok(strlen(out) == 71 && strncmp(out, want, strlen(want)) == 0, c[i].name);
		} else {
			snprintf(name, sizeof(name), "%s: hex digest", c[i].name);
			is_str(out, want, name);
		}
	}
}

static void test_encodings(void)
{
	char out[SIGN_HEADER_MAX], small[SIGN_HEADER_MAX - 1];
	enum sign_encoding enc = SIGN_BASE64;

	is_int(sign_body("Jefe", 4, "what do ya want for nothing?", 28, SIGN_BASE64, out,
			 sizeof(out)),
	       0, "base64 signing succeeds");
	/* base64 of the RFC 4231 case 2 digest */
	is_str(out, "sha256=W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=", "base64 digest, padded");
	is_int(strlen(out), 51, "base64 header is 7 + 44 chars");
	is_int(sign_body("k", 1, "b", 1, SIGN_HEX, small, sizeof(small)), -1,
	       "buffer one byte short of SIGN_HEADER_MAX is refused for hex");
	is_int(sign_body("k", 1, "b", 1, SIGN_HEX, out, 72), 0, "exactly 72 bytes is enough");
	is_int(sign_body("k", 1, "b", 1, SIGN_BASE64, out, 52), 0, "52 bytes enough for base64");
	is_int(sign_body("k", 1, "b", 1, SIGN_BASE64, out, 51), -1,
	       "51 bytes too small for base64");
	is_int(sign_body("k", 1, "b", 1, (enum sign_encoding)7, out, sizeof(out)), -1,
	       "unknown encoding refused");
	is_int(sign_body("", 0, NULL, 0, SIGN_HEX, out, sizeof(out)), 0, "empty key and body");
	/* HMAC-SHA256 with empty key over empty message */
	is_str(out, "sha256=b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
	       "empty key/body digest");

	is_int(sign_encoding_parse("hex", &enc), 0, "parse hex");
	is_int(enc, SIGN_HEX, "hex value");
	is_int(sign_encoding_parse("base64", &enc), 0, "parse base64");
	is_int(enc, SIGN_BASE64, "base64 value");
	is_int(sign_encoding_parse("HEX", &enc), -1, "parse is exact");
	is_int(sign_encoding_parse("b64", &enc), -1, "unknown name refused");
	is_int(sign_encoding_parse(NULL, &enc), -1, "NULL refused");
}

/* Cross-check against `openssl dgst`: a text key with -hmac, and a binary key
 * and body with -macopt hexkey. */
static void test_cli(void)
{
	char dir[] = "/tmp/sign-test-XXXXXX";
	char path[128], cmd[512], out[SIGN_HEADER_MAX], want[SIGN_HEADER_MAX];
	unsigned char key[64], body[1000];
	char keyhex[2 * sizeof(key) + 1];
	const char *line, *eq;
	FILE *f;
	size_t i;

	if (!ok(mkdtemp(dir) != NULL, "temporary directory"))
		return;
	snprintf(path, sizeof(path), "%s/body", dir);
	srand(4231);
	for (i = 0; i < sizeof(body); i++)
		body[i] = (unsigned char)(rand() & 0xff);
	for (i = 0; i < sizeof(key); i++)
		key[i] = (unsigned char)(rand() & 0xff);
	f = fopen(path, "wb");
	ok(f && fwrite(body, 1, sizeof(body), f) == sizeof(body), "body file written");
	if (f)
		fclose(f);

	snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -hmac 'rotating-secret-2024' '%s'", path);
	line = run_line(cmd);
	eq = strstr(line, "= ");
	ok(eq != NULL, "openssl dgst -hmac printed a digest");
	snprintf(want, sizeof(want), "sha256=%s", eq ? eq + 2 : "?");
	sign_body("rotating-secret-2024", 20, body, sizeof(body), SIGN_HEX, out, sizeof(out));
	is_str(out, want, "hex digest equals openssl dgst -hmac");

	to_hex(key, sizeof(key), keyhex);
	snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -mac HMAC -macopt hexkey:%s '%s'", keyhex,
		 path);
	line = run_line(cmd);
	eq = strstr(line, "= ");
	snprintf(want, sizeof(want), "sha256=%s", eq ? eq + 2 : "?");
	sign_body(key, sizeof(key), body, sizeof(body), SIGN_HEX, out, sizeof(out));
	is_str(out, want, "binary key: hex digest equals openssl dgst -macopt hexkey");

	snprintf(
		cmd, sizeof(cmd),
		"openssl dgst -sha256 -mac HMAC -macopt hexkey:%s -binary '%s' | openssl base64 -A",
		keyhex, path);
	line = run_line(cmd);
	snprintf(want, sizeof(want), "sha256=%s", line);
	sign_body(key, sizeof(key), body, sizeof(body), SIGN_BASE64, out, sizeof(out));
	is_str(out, want, "binary key: base64 digest equals openssl dgst -binary | base64");

	unlink(path);
	rmdir(dir);
}

static void test_verify(void)
{
	const char *keys[] = { "old-secret", "new-secret" };
	const size_t lens[] = { 10, 10 };
	const char *body = "{\"id\":\"A1\"}";
	size_t blen = strlen(body);
	char hdr[SIGN_HEADER_MAX], b64[SIGN_HEADER_MAX], tmp[SIGN_HEADER_MAX + 8];
	size_t i;

	sign_body(keys[1], lens[1], body, blen, SIGN_HEX, hdr, sizeof(hdr));
	sign_body(keys[0], lens[0], body, blen, SIGN_BASE64, b64, sizeof(b64));

	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, hdr, strlen(hdr)), 1,
	       "rotation: new key matches at index 1");
	is_int(sign_verify(keys, lens, 1, body, blen, SIGN_HEX, hdr, strlen(hdr)), -1,
	       "only the old key: no match");
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_BASE64, b64, strlen(b64)), 0,
	       "base64 with old key matches at index 0");
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, b64, strlen(b64)), -1,
	       "base64 value refused when hex is configured");
	is_int(sign_verify(keys, lens, 2, body, blen - 1, SIGN_HEX, hdr, strlen(hdr)), -1,
	       "one byte less of body: no match");
	is_int(sign_verify(keys, lens, 0, body, blen, SIGN_HEX, hdr, strlen(hdr)), -1,
	       "no keys: no match");

	strcpy(tmp, hdr);
	tmp[strlen(tmp) - 1] ^= 1;
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, tmp, strlen(tmp)), -1,
	       "last digit flipped: no match");
	strcpy(tmp, hdr);
	for (i = 7; tmp[i]; i++)
		if (tmp[i] >= 'a' && tmp[i] <= 'f')
			tmp[i] = (char)(tmp[i] - 'a' + 'A');
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, tmp, strlen(tmp)), 1,
	       "upper-case hex is the same digest");
	strcpy(tmp, hdr);
	memcpy(tmp, "SHA256=", 7);
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, tmp, strlen(tmp)), -1,
	       "prefix is case-sensitive");
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, hdr + 7, strlen(hdr) - 7), -1,
	       "missing prefix refused");
	snprintf(tmp, sizeof(tmp), " %s", hdr);
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, tmp, strlen(tmp)), -1,
	       "leading space refused");
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, hdr, strlen(hdr) - 1), -1,
	       "truncated digest refused");
	snprintf(tmp, sizeof(tmp), "%s0", hdr);
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, tmp, strlen(tmp)), -1,
	       "extra digit refused");
	memcpy(tmp, hdr, strlen(hdr) + 1);
	tmp[20] = '\0';
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, tmp, strlen(hdr)), -1,
	       "embedded NUL refused");
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_HEX, "sha256=", 7), -1,
	       "empty digest refused");

	strcpy(tmp, b64);
	tmp[10] = (char)(tmp[10] == 'A' ? 'B' : 'A');
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_BASE64, tmp, strlen(tmp)), -1,
	       "altered base64 refused");
	strcpy(tmp, b64);
	tmp[strlen(tmp) - 1] = 'A';
	is_int(sign_verify(keys, lens, 2, body, blen, SIGN_BASE64, tmp, strlen(tmp)), -1,
	       "base64 without padding refused");
}

/* sign_body with OpenSSL's one-shot HMAC, the reference for the kept states. */
static void one_shot(const char *key, const char *body, char *ret)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int n = 0;

	HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)body, strlen(body), md,
	     &n);
	memcpy(ret, "sha256=", 7);
	for (unsigned i = 0; i < 32; i++) {
		ret[7 + 2 * i] = hex[md[i] >> 4];
		ret[8 + 2 * i] = hex[md[i] & 15];
	}
	ret[71] = '\0';
}

/* Six keys (more than a thread keeps keyed) used in turn, twice, each
 * digest checked against the one-shot HMAC; returns the mismatches. */
static void *keyed_rounds(void *arg)
{
	static const char *const keys[] = { "k1", "second-key", "", "k4", "a-fifth-secret", "k6" };
	const char *body = arg;
	char got[SIGN_HEADER_MAX], want[SIGN_HEADER_MAX];
	long bad = 0;

	for (int round = 0; round < 2; round++)
		for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
			if (sign_body(keys[i], strlen(keys[i]), body, strlen(body), SIGN_HEX, got,
				      sizeof(got)) < 0)
				bad++;
			one_shot(keys[i], body, want);
			bad += strcmp(got, want) != 0;
		}
	return (void *)bad;
}

static void test_kept_states(void)
{
	const struct sign_part parts[] = { { "route", 5 }, { "\n", 1 }, { "{\"a\":1}", 7 } };
	unsigned char md[SIGN_SHA256_LEN], want[EVP_MAX_MD_SIZE];
	unsigned int wn = 0;
	pthread_t th;
	void *bad = (void *)-1;

	is_int((int)(long)keyed_rounds("{\"id\":\"A1\"}"), 0,
	       "six keys in turn, twice: every digest is the one-shot HMAC's");
	ok(pthread_create(&th, NULL, keyed_rounds, "another body") == 0 &&
		   pthread_join(th, &bad) == 0 && bad == NULL,
	   "the same in a second thread, with states of its own");
	is_int((int)(long)keyed_rounds("{\"id\":\"A1\"}"), 0, "and again in the first thread");

	EVP_Digest("route\n{\"a\":1}", 13, want, &wn, EVP_sha256(), NULL);
	is_int(sign_sha256(parts, 3, md), 0, "sign_sha256 succeeds");
	ok(wn == SIGN_SHA256_LEN && memcmp(md, want, wn) == 0,
	   "sign_sha256 of three parts is the digest of their concatenation");
	is_int(sign_sha256(parts, 0, md), 0, "no parts: the empty digest");
	EVP_Digest("", 0, want, &wn, EVP_sha256(), NULL);
	ok(memcmp(md, want, SIGN_SHA256_LEN) == 0, "which is SHA-256 of nothing");
}

int main(void)
{
	test_rfc4231();
	test_encodings();
	test_cli();
	test_verify();
	test_kept_states();
	return tap_done();
}
