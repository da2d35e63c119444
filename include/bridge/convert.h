/*
 * convert: value conversions used by mapping rules.  Pure functions, no
 * global state visible to callers, thread-safe.
 */
#ifndef BRIDGE_CONVERT_H
#define BRIDGE_CONVERT_H

#include <stddef.h>
#include <stdint.h>
#include "bridge/diag.h"

/* Integer: accepts a JSON integer or a numeric string: optional surrounding
 * ASCII whitespace (strings only), optional '-' (or '+' in strings), digits.
 * Fractions/exponents are rejected ("1.0", "1e3"), as are empty strings and
 * values outside [-2^63, 2^64-1].  Writes the canonical decimal text (no
 * leading zeros, "-0" becomes "0") into ret (cap >= 22), NUL-terminated.
 * Exact for every 64-bit value: never goes through a double. */
int convert_integer(const char *text, size_t len, char *ret, size_t cap, struct bridge_error *err);

/* Case conversion of ASCII letters only (UTF-8 multi-byte sequences are
 * copied unchanged).  Writes len bytes into ret (caller allocates len+1). */
void convert_upper(const char *text, size_t len, char *ret);
void convert_lower(const char *text, size_t len, char *ret);

/* A time zone loaded from the system's IANA database (tzdata).  Immutable
 * once loaded; share freely.  tz_zone_load fails (with a message naming the
 * zone) when the zone does not exist: glibc would otherwise fall back to UTC
 * silently. */
struct tz_zone;
int tz_zone_load(const char *name, struct tz_zone **ret, struct bridge_error *err);
const char *tz_zone_name(const struct tz_zone *z);
void tz_zone_free(struct tz_zone *z); /* accepts NULL */

enum dt_ambiguous {                       /* local time that happens twice (autumn change) */
		    DT_AMBIGUOUS_EARLIER, /* the first occurrence (still summer time): default */
		    DT_AMBIGUOUS_LATER,
		    DT_AMBIGUOUS_REJECT,
};
enum dt_gap {                /* local time that never happens (spring change) */
	      DT_GAP_REJECT, /* default */
	      DT_GAP_SHIFT, /* interpret with the offset in force before the gap (02:30 -> 03:30 local) */
};

/* Datetime to UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars + NUL, cap >= 25).
 * Accepted inputs:
 *  - "YYYY-MM-DD HH:MM:SS" (local time in zone z), also with 'T' separator
 *    and optional fraction ".f" (1-9 digits, truncated to milliseconds);
 *  - ISO 8601 with an offset: "...Z", "...+HH:MM", "...+HHMM", "...+HH"
 *    (the zone is then ignored).
 * Every field is range-checked (month 1-12, day within the month including
 * leap years, hour 0-23, minute 0-59, second 0-60 where 60 is rejected).
 * DST: ambiguous and non-existent local times follow amb/gap. */
int convert_datetime(const char *text, size_t len, const struct tz_zone *z, enum dt_ambiguous amb,
		     enum dt_gap gap, char *ret, size_t cap, struct bridge_error *err);

#endif
