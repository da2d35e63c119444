#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge/jsonl.h"

struct jsonl {
	int fd; /* -1 after a rotation that could not open the new file */
	char *path;
	uint64_t size; /* bytes in the current file */
	_Atomic uint64_t lines;
	uint64_t rotate_bytes;
	unsigned keep;
	pthread_mutex_t lock;
};

/* A descriptor for path, 0600 (also for a file an older version created
 * more open), and its size; -1 with err set. */
static int file_open(const char *path, uint64_t *ret_size, struct bridge_error *err)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	struct stat st;

	if (fd < 0 || fchmod(fd, 0600) < 0 || fstat(fd, &st) < 0) {
		bridge_error_set(err, "cannot open %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*ret_size = (uint64_t)st.st_size;
	return fd;
}

struct jsonl *jsonl_open(const char *path, uint64_t rotate_bytes, unsigned keep,
			 struct bridge_error *err)
{
	struct jsonl *j;

	if (!path || !*path || strlen(path) > JSONL_PATH_MAX - 8) {
		bridge_error_set(err, "a file path of 1..%d bytes is required", JSONL_PATH_MAX - 8);
		return NULL;
	}
	if (rotate_bytes && (keep < 1 || keep > JSONL_KEEP_MAX)) {
		bridge_error_set(err, "%s: keep must be 1..%d, not %u", path, JSONL_KEEP_MAX, keep);
		return NULL;
	}
	j = calloc(1, sizeof(*j));
	if (!j || !(j->path = strdup(path))) {
		bridge_error_set(err, "out of memory");
		free(j);
		return NULL;
	}
	j->fd = file_open(path, &j->size, err);
	if (j->fd < 0) {
		free(j->path);
		free(j);
		return NULL;
	}
	j->rotate_bytes = rotate_bytes;
	j->keep = keep;
	pthread_mutex_init(&j->lock, NULL);
	return j;
}

/* Called with the lock held. */
static int rotate(struct jsonl *j, struct bridge_error *err)
{
	char from[JSONL_PATH_MAX], to[JSONL_PATH_MAX];

	for (unsigned i = j->keep; i >= 1; i--) {
		if (i == 1)
			snprintf(from, sizeof(from), "%s", j->path);
		else
			snprintf(from, sizeof(from), "%s.%u", j->path, i - 1);
		snprintf(to, sizeof(to), "%s.%u", j->path, i);
		if (rename(from, to) < 0 && errno != ENOENT)
			return bridge_error_set(err, "cannot rotate %s to %s: %s", from, to,
						strerror(errno));
	}
	close(j->fd);
	j->fd = file_open(j->path, &j->size, err);
	return j->fd < 0 ? -1 : 0;
}

/* Returns the bytes written; fewer than n means errno says why. */
static size_t write_all(int fd, const char *p, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = write(fd, p + done, n - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	return done;
}

int jsonl_append(struct jsonl *j, const char *line, size_t len, struct bridge_error *err)
{
	struct bridge_error ignored;
	size_t done;
	int rc = 0;

	if (!err)
		err = &ignored;
	pthread_mutex_lock(&j->lock);
	if (j->fd < 0 && (j->fd = file_open(j->path, &j->size, err)) < 0) {
		rc = -1; /* a failed rotation left no file open: try again each line */
		goto out;
	}
	if (j->rotate_bytes && j->size > 0 && j->size + len > j->rotate_bytes &&
	    rotate(j, err) < 0) {
		rc = -1;
		goto out;
	}
	done = write_all(j->fd, line, len);
	if (done < len) {
		rc = bridge_error_set(err, "cannot write to %s: %s", j->path, strerror(errno));
		if (done > 0) /* end the torn line */
			done += write_all(j->fd, "\n", 1);
		j->size += done;
		goto out;
	}
	j->size += len;
	j->lines++;
out:
	pthread_mutex_unlock(&j->lock);
	return rc;
}

int jsonl_write(struct jsonl *j, const char *line, size_t len)
{
	return jsonl_append(j, line, len, NULL);
}

int jsonl_reopen(struct jsonl *j, struct bridge_error *err)
{
	uint64_t size;
	int fd = file_open(j->path, &size, err), old;

	if (fd < 0)
		return -1;
	pthread_mutex_lock(&j->lock);
	old = j->fd;
	j->fd = fd;
	j->size = size;
	pthread_mutex_unlock(&j->lock);
	if (old >= 0)
		close(old);
	return 0;
}

uint64_t jsonl_lines(struct jsonl *j)
{
	return atomic_load(&j->lines);
}

void jsonl_close(struct jsonl *j)
{
	if (!j)
		return;
	if (j->fd >= 0)
		close(j->fd);
	free(j->path);
	pthread_mutex_destroy(&j->lock);
	free(j);
}
