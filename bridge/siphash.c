/* SipHash-2-4, SipHash-1-3 and the process's random key (see siphash.h). */
#include "bridge/siphash.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "wordload.h"

static uint64_t rotl64(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND                     \
	do {                         \
		v0 += v1;            \
		v1 = rotl64(v1, 13); \
		v1 ^= v0;            \
		v0 = rotl64(v0, 32); \
		v2 += v3;            \
		v3 = rotl64(v3, 16); \
		v3 ^= v2;            \
		v0 += v3;            \
		v3 = rotl64(v3, 21); \
		v3 ^= v0;            \
		v2 += v1;            \
		v1 = rotl64(v1, 17); \
		v1 ^= v2;            \
		v2 = rotl64(v2, 32); \
	} while (0)

/* SipHash-c-d: c rounds per 8-byte block, d to finish; inlined into the two
 * variants below so the round counts are constants. */
static inline __attribute__((always_inline)) uint64_t sip(const struct siphash_key *key,
							  const void *data, size_t len, int c,
							  int d)
{
	const unsigned char *p = data;
	uint64_t k0 = key->k0, k1 = key->k1;
	uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
	uint64_t m, b = (uint64_t)len << 56;
	size_t i = 0;
	int r;

	for (; i + 8 <= len; i += 8) {
		m = load_le64(p + i);
		v3 ^= m;
		for (r = 0; r < c; r++)
			SIPROUND;
		v0 ^= m;
	}
	b |= load_tail64(p + i, len - i);
	v3 ^= b;
	for (r = 0; r < c; r++)
		SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	for (r = 0; r < d; r++)
		SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t siphash24(const struct siphash_key *key, const void *data, size_t len)
{
	return sip(key, data, len, 2, 4);
}

uint64_t siphash13(const struct siphash_key *key, const void *data, size_t len)
{
	return sip(key, data, len, 1, 3);
}

void siphash_key_random(struct siphash_key *ret)
{
	uint64_t k[2];

	if (getrandom(k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		k[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec;
		k[1] = (uint64_t)getpid() * 0xbf58476d1ce4e5b9ULL ^ (uint64_t)(uintptr_t)ret;
	}
	ret->k0 = k[0];
	ret->k1 = k[1];
}

static struct siphash_key process_key;
static pthread_once_t process_key_once = PTHREAD_ONCE_INIT;

static void process_key_make(void)
{
	siphash_key_random(&process_key);
}

const struct siphash_key *siphash_process_key(void)
{
	pthread_once(&process_key_once, process_key_make);
	return &process_key;
}
