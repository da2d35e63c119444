/*
 * fuzz_replay: runs a libFuzzer harness without libFuzzer.  Every file named
 * on the command line, and every file directly inside a named directory (in
 * name order), is passed once to LLVMFuzzerTestOneInput; each prints one TAP
 * line.  A harness reports a violation by crashing (abort, sanitizer), which
 * fails the test.  Files are copied into buffers of their exact size so that
 * sanitizers see any read past the end.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPLAY_FILE_MAX ((size_t)16 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int n_run, n_failed;

static void replay_fail(const char *path, const char *why)
{
	n_failed++;
	printf("not ok %d - %s: %s\n", ++n_run, path, why);
	fflush(stdout);
}

static void replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	size_t len = 0;
	struct stat st;

	if (!f || fstat(fileno(f), &st) < 0) {
		replay_fail(path, strerror(errno));
		if (f)
			fclose(f);
		return;
	}
	if ((size_t)st.st_size > REPLAY_FILE_MAX) {
		fclose(f);
		replay_fail(path, "file too large");
		return;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		fclose(f);
		replay_fail(path, "out of memory");
		return;
	}
	len = fread(buf, 1, (size_t)st.st_size, f);
	fclose(f);
	if (len != (size_t)st.st_size) {
		free(buf);
		replay_fail(path, "short read");
		return;
	}
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	printf("ok %d - %s\n", ++n_run, path);
	fflush(stdout);
}

static void replay_dir(const char *dir)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort);

	if (n < 0) {
		replay_fail(dir, strerror(errno));
		return;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		if (names[i]->d_name[0] != '.' &&
		    snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) <
			    (int)sizeof(path) &&
		    stat(path, &st) == 0 && S_ISREG(st.st_mode))
			replay_file(path);
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			replay_dir(argv[i]);
		else
			replay_file(argv[i]);
	}
	printf("1..%d\n", n_run);
	return n_failed ? 1 : 0;
}
