/*
 * retry_after: the Retry-After header of an endpoint's answer (RFC 9110
 * 10.2.3), read by the queue to time its next attempt.  Pure: no clock of its
 * own, no allocation, no locale.
 */
#ifndef BRIDGE_RETRY_AFTER_H
#define BRIDGE_RETRY_AFTER_H

#include <stdint.h>

/* Retry-After value -> milliseconds from now_ms (wall clock, ms since the
 * epoch) to wait, >= 0: delta-seconds, or an HTTP date in any of RFC 9110's
 * three formats (IMF-fixdate, RFC 850, asctime; a date in the past is 0).
 * Waits are capped at 366 days.  -1 when value is NULL or unparseable. */
int64_t retry_after_ms(const char *value, int64_t now_ms);

#endif
