/*
 * clock: milliseconds from the two clocks, named for which one they read.
 *   clock_wall_ms  CLOCK_REALTIME since the epoch: timestamps that leave the
 *                  process (stored rows, log lines, metrics, HTTP dates)
 *   clock_mono_ms  CLOCK_MONOTONIC: durations and deadlines inside it
 */
#ifndef BRIDGE_CLOCK_H
#define BRIDGE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t clock_ms_of(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t clock_wall_ms(void)
{
	return clock_ms_of(CLOCK_REALTIME);
}

static inline int64_t clock_mono_ms(void)
{
	return clock_ms_of(CLOCK_MONOTONIC);
}

#endif
