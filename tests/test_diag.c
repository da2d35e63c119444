#include <stdlib.h>
#include <string.h>

#include "bridge/diag.h"
#include "tap.h"

int main(void)
{
	struct bridge_error e;
	struct diag d = { 0 };
	int i;

	bridge_error_clear(&e);
	is_str(e.message, "", "cleared error has empty message");
	is_int(e.offset, -1, "cleared error has offset -1");
	is_int(bridge_error_set(&e, "bad %s at %d", "thing", 3), -1, "bridge_error_set returns -1");
	is_str(e.message, "bad thing at 3", "message formatted");
	is_int(bridge_error_set(NULL, "x"), -1, "NULL error accepted");

	is_int(diag_add(&d, "a.conf", 12, "unknown key '%s'", "foo"), -1, "diag_add returns -1");
	diag_add(&d, NULL, 0, "no file");
	is_str(d.text, "a.conf:12: unknown key 'foo'\n<input>: no file\n", "diag lines formatted");
	is_int(d.count, 2, "diag counts");
	for (i = 0; i < 200; i++)
		diag_add(&d, "grow.conf", i + 1, "line %d", i);
	is_int(d.count, 202, "diag grows");
	ok(strstr(d.text, "grow.conf:200: line 199\n") != NULL,
	   "diag keeps every line while growing");
	diag_reset(&d);
	ok(d.text == NULL && d.count == 0, "diag_reset zeroes");

	diag_add(&d, "x.conf", 3, "unknown v2 path '%s'", "a\nb\tc\001");
	is_str(d.text, "x.conf:3: unknown v2 path 'a\\nb\\tc\\x01'\n",
	       "control characters from input are escaped: one diagnostic, one line");
	diag_reset(&d);
	return tap_done();
}
