/*
 * siphash: the keyed hash for tables whose keys a peer chooses, so a sender
 * cannot pick keys that all land in one bucket.  SipHash-2-4, and
 * SipHash-1-3 (the same construction with fewer rounds, as CPython and Rust
 * use for their hash tables) where the hash is per key of every payload.
 */
#ifndef BRIDGE_SIPHASH_H
#define BRIDGE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct siphash_key {
	uint64_t k0, k1;
};

uint64_t siphash24(const struct siphash_key *key, const void *p, size_t len);
uint64_t siphash13(const struct siphash_key *key, const void *p, size_t len);

/* A fresh random key (getrandom; the clock and pid if that fails). */
void siphash_key_random(struct siphash_key *ret);

/* One random key per process, made on first use (thread-safe). */
const struct siphash_key *siphash_process_key(void);

#endif
