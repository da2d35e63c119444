/*
 * fuzz_jsondiff: jsondiff_compare, which reads the real v2 documents an
 * endpoint's traffic supplies (shadow comparison, `diff`).  The input is
 * split at its first NUL (or in half) into documents a and b.  Invariants
 * (abort on violation): failure names the problem and leaves the result
 * empty; a document that parses compares equal to itself; comparing b to a
 * swaps added and removed and keeps the changed count.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/jsondiff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *a = (const char *)data, *b;
	const char *nul = memchr(data, '\0', size);
	size_t alen = nul ? (size_t)(nul - a) : size / 2, blen;
	struct jsondiff d, r, self;
	struct bridge_error err;

	b = a + alen + (nul ? 1 : 0);
	blen = size - (size_t)(b - a);
	bridge_error_clear(&err);
	if (jsondiff_compare(a, alen, b, blen, NULL, &d, &err) < 0) {
		if (!err.message[0] || d.n_entries || d.entries)
			abort();
		return 0;
	}
	if (jsondiff_compare(b, blen, a, alen, NULL, &r, &err) < 0)
		abort();
	if (r.n_added != d.n_removed || r.n_removed != d.n_added || r.n_changed != d.n_changed)
		abort();
	if (jsondiff_compare(a, alen, a, alen, NULL, &self, &err) < 0 ||
	    self.n_added + self.n_removed + self.n_changed != 0)
		abort();
	jsondiff_clear(&self);
	jsondiff_clear(&r);
	jsondiff_clear(&d);
	return 0;
}
