/*
 * sha256x2: two SHA-256 messages at once on the SHA extensions.
 *
 * The state lives in two vectors in the order the instructions take
 * (ABEF and CDGH).  Each group of four rounds takes four message words with
 * their round constants added; sha256rnds2 does two rounds, so a group is
 * two of them.  The message schedule is sha256msg1, one add and sha256msg2
 * over the four groups before.  Both lanes go through the same loop body,
 * one instruction of each after the other, so each lane's rounds run in
 * the other's latency.
 */
#include <string.h>

#include "bridge/sha256x2.h"

static const uint32_t sha256_iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };

void sha256_lane_start(struct sha256_lane *l)
{
	memcpy(l->h, sha256_iv, sizeof(l->h));
	l->done = 0;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>

/* A lane's message as 64-byte blocks: pre, body, then SHA-256's padding
 * (0x80, zeros, the length in bits big-endian in the last 8 bytes). */
struct sha256_feed {
	const unsigned char *pre, *body;
	size_t pre_len, total; /* total: pre_len + the body's length */
	size_t blocks;         /* with the padding */
	uint64_t bits;         /* the whole message's length, done included */
	unsigned char buf[64];
};

static void feed_init(struct sha256_feed *f, const struct sha256_lane *l)
{
	f->pre = l->pre;
	f->body = l->body;
	f->pre_len = l->pre_len;
	f->total = l->pre_len + l->len;
	f->blocks = (f->total + 8) / 64 + 1;
	f->bits = (l->done + f->total) * 8;
}

/* How many blocks from block j on lie wholly in the body (read in place). */
static size_t feed_direct(const struct sha256_feed *f, size_t j)
{
	size_t at = j * 64;

	if (at < f->pre_len || at + 64 > f->total)
		return 0;
	return (f->total - at) / 64;
}

static const unsigned char *feed_at(const struct sha256_feed *f, size_t j)
{
	return f->body + (j * 64 - f->pre_len);
}

/* Block j copied into f->buf: the bytes of pre and body it covers, then
 * the padding that falls in it. */
static const unsigned char *feed_block(struct sha256_feed *f, size_t j)
{
	size_t at = j * 64, k = 0;

	while (k < 64 && at + k < f->total) {
		size_t p = at + k, n;

		if (p < f->pre_len) {
			n = f->pre_len - p < 64 - k ? f->pre_len - p : 64 - k;
			memcpy(f->buf + k, f->pre + p, n);
		} else {
			n = f->total - p < 64 - k ? f->total - p : 64 - k;
			memcpy(f->buf + k, f->body + (p - f->pre_len), n);
		}
		k += n;
	}
	if (k < 64) {
		memset(f->buf + k, 0, 64 - k);
		if (at + k == f->total)
			f->buf[k] = 0x80;
	}
	if (j == f->blocks - 1)
		for (int i = 0; i < 8; i++)
			f->buf[56 + i] = (unsigned char)(f->bits >> (56 - 8 * i));
	return f->buf;
}

static void digest_put(const uint32_t h[8], unsigned char *md)
{
	for (int i = 0; i < 8; i++) {
		md[4 * i] = (unsigned char)(h[i] >> 24);
		md[4 * i + 1] = (unsigned char)(h[i] >> 16);
		md[4 * i + 2] = (unsigned char)(h[i] >> 8);
		md[4 * i + 3] = (unsigned char)h[i];
	}
}

#define SHA_TARGET __attribute__((target("sha,ssse3,sse4.1")))

static const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

/* one lane's state in the instructions' order */
struct sha256_vec {
	__m128i abef, cdgh;
};

SHA_TARGET static struct sha256_vec vec_from(const uint32_t h[8])
{
	__m128i dcba = _mm_loadu_si128((const __m128i *)h);
	__m128i hgfe = _mm_loadu_si128((const __m128i *)(h + 4));
	__m128i cdab = _mm_shuffle_epi32(dcba, 0xb1);
	__m128i efgh = _mm_shuffle_epi32(hgfe, 0x1b);

	return (struct sha256_vec){ _mm_alignr_epi8(cdab, efgh, 8),
				    _mm_blend_epi16(efgh, cdab, 0xf0) };
}

SHA_TARGET static void vec_to(struct sha256_vec v, uint32_t h[8])
{
	__m128i feba = _mm_shuffle_epi32(v.abef, 0x1b);
	__m128i dchg = _mm_shuffle_epi32(v.cdgh, 0xb1);

	_mm_storeu_si128((__m128i *)h, _mm_blend_epi16(feba, dchg, 0xf0));
	_mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

/* n blocks into a (from pa) and, when two, n blocks into b (from pb).  The
 * compiler makes a one-lane and a two-lane copy of it. */
SHA_TARGET __attribute__((always_inline)) static inline void compress(int two, struct sha256_vec *a,
								      const unsigned char *pa,
								      struct sha256_vec *b,
								      const unsigned char *pb,
								      size_t n)
{
	const __m128i order = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
	struct sha256_vec va = *a, vb = two ? *b : va;

	for (; n; n--, pa += 64, pb += 64) {
		struct sha256_vec sa = va, sb = vb;
		__m128i wa[4], wb[4];

#pragma GCC unroll 16
		for (int i = 0; i < 16; i++) {
			__m128i k = _mm_loadu_si128((const __m128i *)&sha256_k[4 * i]), ka, kb = k;

			if (i < 4) {
				wa[i] = _mm_shuffle_epi8(
					_mm_loadu_si128((const __m128i *)(pa + 16 * i)), order);
				if (two)
					wb[i] = _mm_shuffle_epi8(
						_mm_loadu_si128((const __m128i *)(pb + 16 * i)),
						order);
			} else {
				__m128i t = _mm_sha256msg1_epu32(wa[i & 3], wa[(i + 1) & 3]);

				t = _mm_add_epi32(
					t, _mm_alignr_epi8(wa[(i + 3) & 3], wa[(i + 2) & 3], 4));
				wa[i & 3] = _mm_sha256msg2_epu32(t, wa[(i + 3) & 3]);
				if (two) {
					t = _mm_sha256msg1_epu32(wb[i & 3], wb[(i + 1) & 3]);
					t = _mm_add_epi32(t, _mm_alignr_epi8(wb[(i + 3) & 3],
									     wb[(i + 2) & 3], 4));
					wb[i & 3] = _mm_sha256msg2_epu32(t, wb[(i + 3) & 3]);
				}
			}
			ka = _mm_add_epi32(wa[i & 3], k);
			va.cdgh = _mm_sha256rnds2_epu32(va.cdgh, va.abef, ka);
			if (two) {
				kb = _mm_add_epi32(wb[i & 3], k);
				vb.cdgh = _mm_sha256rnds2_epu32(vb.cdgh, vb.abef, kb);
			}
			va.abef = _mm_sha256rnds2_epu32(va.abef, va.cdgh,
							_mm_shuffle_epi32(ka, 0x0e));
			if (two)
				vb.abef = _mm_sha256rnds2_epu32(vb.abef, vb.cdgh,
								_mm_shuffle_epi32(kb, 0x0e));
		}
		va.abef = _mm_add_epi32(va.abef, sa.abef);
		va.cdgh = _mm_add_epi32(va.cdgh, sa.cdgh);
		if (two) {
			vb.abef = _mm_add_epi32(vb.abef, sb.abef);
			vb.cdgh = _mm_add_epi32(vb.cdgh, sb.cdgh);
		}
	}
	*a = va;
	if (two)
		*b = vb;
}

SHA_TARGET static void compress2(struct sha256_vec *a, const unsigned char *pa,
				 struct sha256_vec *b, const unsigned char *pb, size_t n)
{
	compress(1, a, pa, b, pb, n);
}

SHA_TARGET static void compress1(struct sha256_vec *a, const unsigned char *pa, size_t n)
{
	compress(0, a, pa, NULL, pa, n);
}

/* The blocks of f from block j on, alone (the other lane is done). */
SHA_TARGET static void feed_rest(struct sha256_feed *f, struct sha256_vec *v, size_t j)
{
	while (j < f->blocks) {
		size_t run = feed_direct(f, j);

		if (run) {
			compress1(v, feed_at(f, j), run);
			j += run;
		} else {
			compress1(v, feed_block(f, j), 1);
			j++;
		}
	}
}

SHA_TARGET void sha256x2(const struct sha256_lane lanes[2],
			 unsigned char md[2][SHA256X2_DIGEST_LEN])
{
	struct sha256_feed f[2];
	struct sha256_vec v[2] = { vec_from(lanes[0].h), vec_from(lanes[1].h) };
	uint32_t h[8];
	size_t j = 0;

	feed_init(&f[0], &lanes[0]);
	feed_init(&f[1], &lanes[1]);
	while (j < f[0].blocks && j < f[1].blocks) {
		size_t d0 = feed_direct(&f[0], j), d1 = feed_direct(&f[1], j);
		size_t run = d0 < d1 ? d0 : d1;

		if (run) {
			compress2(&v[0], feed_at(&f[0], j), &v[1], feed_at(&f[1], j), run);
			j += run;
			continue;
		}
		compress2(&v[0], d0 ? feed_at(&f[0], j) : feed_block(&f[0], j), &v[1],
			  d1 ? feed_at(&f[1], j) : feed_block(&f[1], j), 1);
		j++;
	}
	feed_rest(&f[0], &v[0], j);
	feed_rest(&f[1], &v[1], j);
	for (int i = 0; i < 2; i++) {
		vec_to(v[i], h);
		digest_put(h, md[i]);
	}
	/* the states may come from a key (HMAC's inner pad) */
	explicit_bzero(v, sizeof(v));
	explicit_bzero(h, sizeof(h));
	explicit_bzero(f, sizeof(f));
}

static int sha256x2_probe(void)
{
	unsigned a, b, c, d;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
		return 0;
	if (__get_cpuid_max(0, NULL) < 7)
		return 0;
	__cpuid_count(7, 0, a, b, c, d);
	return (b & bit_SHA) != 0;
}

#else

void sha256x2(const struct sha256_lane lanes[2], unsigned char md[2][SHA256X2_DIGEST_LEN])
{
	(void)lanes;
	(void)md;
}

static int sha256x2_probe(void)
{
	return 0;
}

#endif

int sha256x2_usable(void)
{
	/* -1: not asked yet; the probe gives the same answer in every thread */
	static int usable = -1;
	int u = __atomic_load_n(&usable, __ATOMIC_RELAXED);

	if (u < 0) {
		u = sha256x2_probe();
		__atomic_store_n(&usable, u, __ATOMIC_RELAXED);
	}
	return u;
}
