/*
 * sha256x2: two SHA-256 messages hashed side by side on the CPU's SHA
 * extensions (SHA-NI).  A forwarded post hashes its v2 body twice, for the
 * signature (HMAC's inner hash) and for the delivery id.  One SHA-256 on
 * these instructions waits on the latency of each round; two independent
 * messages in the same loop fill those waits, so the pair costs about two
 * thirds of two single passes.  OpenSSL has no call for two messages at
 * once; it stays the SHA-256 of every other hash, and of these two on a CPU
 * without the extensions (sha256x2_usable() says which).
 *
 * A lane is one message: a state (SHA-256's initial one, or one a caller
 * has already fed whole 64-byte blocks, as HMAC's keyed inner state), then
 * pre, then body.  Pure functions, no allocation, thread-safe.
 */
#ifndef BRIDGE_SHA256X2_H
#define BRIDGE_SHA256X2_H

#include <stddef.h>
#include <stdint.h>

#define SHA256X2_DIGEST_LEN 32

struct sha256_lane {
	uint32_t h[8];   /* the state to start from */
	uint64_t done;   /* bytes already hashed into h: a multiple of 64 */
	const void *pre; /* hashed first (may be NULL when pre_len is 0) */
	size_t pre_len;
	const void *body; /* then these (may be NULL when len is 0) */
	size_t len;
};

/* SHA-256's initial state, for a lane that starts a message. */
void sha256_lane_start(struct sha256_lane *l);

/* 1 when this CPU has the SHA extensions (with SSSE3 and SSE4.1) that
 * sha256x2() needs, else 0.  Asked once; the answer is kept. */
int sha256x2_usable(void);

/* The SHA-256 digest of each lane's whole message (the bytes before done,
 * pre, body) into md[0] and md[1].  Only when sha256x2_usable(). */
void sha256x2(const struct sha256_lane lanes[2], unsigned char md[2][SHA256X2_DIGEST_LEN]);

#endif
