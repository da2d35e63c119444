/*
 * fuzz_config: the input is written to input.conf in a private temporary
 * folder and loaded both as a rule file (mapping_load) and as a server
 * configuration (bridge_config_load).  The folder also links the shipped
 * qualifio-v1-to-v2.conf (from $BRIDGE_SOURCE_ROOT, else the working
 * directory) so that routes and @include directives can name a real file or
 * input.conf itself.  Invariants (abort on violation): the return value, the
 * result pointer and the diag count agree, and the diag text is exactly one
 * line per error, each starting with "file:line: " or "file: " for a named
 * file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/config.h"
#include "bridge/mapping.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256], input[300], shipped[300];

static void cleanup(void)
{
	unlink(input);
	unlink(shipped);
	rmdir(dir);
}

static void setup(void)
{
	const char *tmp = getenv("TMPDIR"), *root = getenv("BRIDGE_SOURCE_ROOT");
	char target[4096], *abs;

	snprintf(dir, sizeof(dir), "%s/fuzz_config.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		abort();
	snprintf(input, sizeof(input), "%s/input.conf", dir);
	snprintf(shipped, sizeof(shipped), "%s/qualifio-v1-to-v2.conf", dir);
	snprintf(target, sizeof(target), "%s/mappings/qualifio-v1-to-v2.conf", root ? root : ".");
	abs = realpath(target, NULL);
	if (abs && symlink(abs, shipped) < 0)
		abort();
	free(abs);
	atexit(cleanup);
}

static void check_diag(int rc, const void *ret, const struct diag *d)
{
	const char *line = d->text;
	int n = 0;

	if (rc == 0 ? !ret || d->count != 0 : rc != -1 || ret || d->count <= 0 || !line) {
		fprintf(stderr, "fuzz_config: rc %d, result %p, %d diag(s)\n", rc, ret, d->count);
		cleanup();
		abort();
	}
	for (; line && *line; n++) {
		const char *end = strchr(line, '\n'), *sep = strstr(line, ": ");

		if (!end || !sep || sep > end || sep == line || strncmp(line, "<input>", 7) == 0)
			break;
		line = end + 1;
	}
	if (n != d->count || (line && *line)) {
		fprintf(stderr,
			"fuzz_config: %d diag(s) but not as many \"file[:line]: message\" "
			"lines:\n%s",
			d->count, d->text);
		cleanup();
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mapping *m = (struct mapping *)1;
	struct bridge_config *c = (struct bridge_config *)1;
	struct diag d = { 0 };
	FILE *f;
	int rc;

	if (!dir[0])
		setup();
	f = fopen(input, "wb");
	if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
		cleanup();
		abort();
	}

	rc = mapping_load(input, &m, &d);
	check_diag(rc, m, &d);
	mapping_free(m);
	diag_reset(&d);

	rc = bridge_config_load(input, &c, &d);
	check_diag(rc, c, &d);
	bridge_config_free(c);
	diag_reset(&d);
	return 0;
}
