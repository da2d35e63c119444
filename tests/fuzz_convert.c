/*
 * fuzz_convert: the first byte selects the conversion and, for datetimes, the
 * DST policies; the rest is the text.  Invariants (abort on violation):
 *  - an integer comes out canonical and converts to itself;
 *  - a datetime comes out as exactly "YYYY-MM-DDTHH:MM:SS.mmmZ" and converts
 *    to itself;
 *  - a local time accepted under a "reject" policy is not ambiguous (or not
 *    in a gap), so the other policies give the same instant.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/convert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tz_zone *zone;

static void check_error(int rc, const struct bridge_error *err)
{
	if (rc != -1 || !err->message[0])
		abort();
}

static void fuzz_integer(const char *text, size_t len)
{
	char out[32], again[32];
	struct bridge_error err;
	size_t n;
	int rc;

	bridge_error_clear(&err);
	rc = convert_integer(text, len, out, 22, &err);
	if (rc != 0) {
		check_error(rc, &err);
		return;
	}
	n = strlen(out);
	if (n == 0 || n > 21 || (out[0] == '0' && n > 1) ||
	    (out[0] == '-' && (n == 1 || out[1] == '0')))
		abort();
	for (size_t i = out[0] == '-'; i < n; i++)
		if (out[i] < '0' || out[i] > '9')
			abort();
	if (convert_integer(out, n, again, sizeof(again), &err) != 0 || strcmp(out, again) != 0)
		abort();
}

static int datetime(const char *text, size_t len, enum dt_ambiguous amb, enum dt_gap gap, char *out)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	struct bridge_error err;
	int rc;

	bridge_error_clear(&err);
	rc = convert_datetime(text, len, zone, amb, gap, out, 25, &err);
	if (rc != 0) {
		check_error(rc, &err);
		return -1;
	}
	if (strlen(out) != 24)
		abort();
	for (size_t i = 0; i < 24; i++)
		if (shape[i] == 'd' ? out[i] < '0' || out[i] > '9' : out[i] != shape[i])
			abort();
	return 0;
}

static void fuzz_datetime(const char *text, size_t len, unsigned sel)
{
	enum dt_ambiguous amb = (enum dt_ambiguous)(sel % 3);
	enum dt_gap gap = (enum dt_gap)(sel / 3 % 2);
	char out[25], again[25], other[25];

	if (datetime(text, len, amb, gap, out) < 0)
		return;
	if (datetime(out, 24, amb, gap, again) < 0 || strcmp(out, again) != 0)
		abort();
	if (amb == DT_AMBIGUOUS_REJECT &&
	    (datetime(text, len, DT_AMBIGUOUS_EARLIER, gap, other) < 0 || strcmp(out, other) != 0 ||
	     datetime(text, len, DT_AMBIGUOUS_LATER, gap, other) < 0 || strcmp(out, other) != 0))
		abort();
	if (gap == DT_GAP_REJECT &&
	    (datetime(text, len, amb, DT_GAP_SHIFT, other) < 0 || strcmp(out, other) != 0))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bridge_error err;

	if (!zone && tz_zone_load("Europe/Brussels", &zone, &err) < 0)
		abort();
	if (size == 0)
		return 0;
	if (data[0] & 0x80)
		fuzz_integer((const char *)data + 1, size - 1);
	else
		fuzz_datetime((const char *)data + 1, size - 1, data[0]);
	return 0;
}
