#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge/jsonl.h"

struct jsonl {
	int fd;
	char *path;
	pthread_mutex_t lock;
};

struct jsonl *jsonl_open(const char *path, struct bridge_error *err)
{
	struct jsonl *j = calloc(1, sizeof(*j));

	if (!j) {
		bridge_error_set(err, "out of memory");
		return NULL;
	}
	/* the lines hold whole participations (names, e-mails): owner only,
	 * also for a file an older version created more open */
	j->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	j->path = strdup(path);
	if (j->fd < 0 || fchmod(j->fd, 0600) < 0 || !j->path) {
		bridge_error_set(err, "cannot open %s: %s", path, strerror(errno));
		if (j->fd >= 0)
			close(j->fd);
		free(j->path);
		free(j);
		return NULL;
	}
	pthread_mutex_init(&j->lock, NULL);
	return j;
}

int jsonl_write(struct jsonl *j, const char *line, size_t len)
{
	size_t off = 0;
	int rc = 0;

	pthread_mutex_lock(&j->lock);
	while (off < len) {
		ssize_t w = write(j->fd, line + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = -1;
			break;
		}
		off += (size_t)w;
	}
	pthread_mutex_unlock(&j->lock);
	return rc;
}

int jsonl_reopen(struct jsonl *j, struct bridge_error *err)
{
	int fd = open(j->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600), old;

	if (fd < 0)
		return bridge_error_set(err, "cannot reopen %s: %s", j->path, strerror(errno));
	pthread_mutex_lock(&j->lock);
	old = j->fd;
	j->fd = fd;
	pthread_mutex_unlock(&j->lock);
	close(old);
	return 0;
}

void jsonl_close(struct jsonl *j)
{
	if (!j)
		return;
	close(j->fd);
	free(j->path);
	pthread_mutex_destroy(&j->lock);
	free(j);
}
