/*
 * Benchmark sink: the fastest upstream we can offer the bridge and nginx, so
 * that what bench/run.sh measures is the proxy in front of it.
 *
 * Every POST, on any path, is answered 200 with a tiny JSON body on a
 * keep-alive connection and counted; `GET /stats` returns {"posts":N} so the
 * benchmark can check that the proxy really delivered what it claims.
 * Listens on 127.0.0.1 only. With --threads N, N event loops accept on the
 * same port through SO_REUSEPORT and the kernel spreads connections.
 *
 *   sink [--port PORT] [--threads N]
 *
 * Prints "port PORT" on stdout once every loop is accepting; exits 0 on
 * SIGTERM or SIGINT.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>

#define SINK_MAX_THREADS    64
#define SINK_MAX_BODY       (4 * 1024 * 1024)
#define SINK_MAX_HEADERS    (64 * 1024)
#define SINK_IDLE_TIMEOUT_S 60
#define SINK_BACKLOG        4096

static const char ok_body[] = "{\"ok\":true}";

struct sink_worker {
	pthread_t thread;
	struct event_base *base;
	struct evhttp *http;
	int fd;
};

static atomic_ulong sink_posts;

static void sink_request_cb(struct evhttp_request *req, void *arg)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evbuffer *body = evhttp_request_get_output_buffer(req);

	evhttp_add_header(out, "Content-Type", "application/json");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
		atomic_fetch_add_explicit(&sink_posts, 1, memory_order_relaxed);
		evbuffer_add_reference(body, ok_body, sizeof(ok_body) - 1, NULL, NULL);
		evhttp_send_reply(req, 200, "OK", NULL);
		return;
	}
	if (strcmp(evhttp_request_get_uri(req), "/stats") == 0) {
		evbuffer_add_printf(body, "{\"posts\":%lu}",
				    atomic_load_explicit(&sink_posts, memory_order_relaxed));
		evhttp_send_reply(req, 200, "OK", NULL);
		return;
	}
	evbuffer_add_printf(body, "{\"error\":\"not_found\"}");
	evhttp_send_reply(req, 404, "Not Found", NULL);
}

/* Each loop gets its own socket on the same port: SO_REUSEPORT balances
 * accepted connections across loops without a shared accept lock. */
static int sink_socket_open(unsigned short port, unsigned short *ret_port)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, SINK_BACKLOG) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		goto fail;
	*ret_port = ntohs(sa.sin_port);
	return fd;
fail:
	close(fd);
	return -1;
}

static int sink_worker_init(struct sink_worker *w, int fd)
{
	w->fd = fd;
	w->base = event_base_new();
	if (!w->base)
		return -1;
	w->http = evhttp_new(w->base);
	if (!w->http)
		return -1;
	evhttp_set_max_body_size(w->http, SINK_MAX_BODY);
	evhttp_set_max_headers_size(w->http, SINK_MAX_HEADERS);
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_POST | EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(w->http, SINK_IDLE_TIMEOUT_S);
	evhttp_set_gencb(w->http, sink_request_cb, NULL);
	if (!evhttp_accept_socket_with_handle(w->http, fd))
		return -1;
	w->fd = -1; /* the evhttp owns it now */
	return 0;
}

static void sink_worker_free(struct sink_worker *w)
{
	if (w->http)
		evhttp_free(w->http);
	if (w->base)
		event_base_free(w->base);
	if (w->fd >= 0)
		close(w->fd);
}

static void *sink_worker_run(void *arg)
{
	struct sink_worker *w = arg;

	event_base_dispatch(w->base);
	return NULL;
}

static void sink_nofile_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void usage(FILE *f)
{
	fprintf(f, "usage: sink [--port PORT] [--threads N]\n"
		   "Answers 200 {\"ok\":true} to every POST on 127.0.0.1:PORT (0: any free port);\n"
		   "GET /stats returns {\"posts\":N}. Prints \"port PORT\" when ready.\n");
}

int main(int argc, char **argv)
{
	static struct sink_worker workers[SINK_MAX_THREADS];
	long port = 0, threads = 1;
	unsigned short bound = 0;
	sigset_t stop;
	int sig, started = 0, rc = 1;

	for (int i = 1; i < argc; i++) {
		char *end;
		long *dst;

		if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--port") == 0)
			dst = &port;
		else if (strcmp(argv[i], "--threads") == 0)
			dst = &threads;
		else
			dst = NULL;
		if (!dst || i + 1 >= argc) {
			usage(stderr);
			return 2;
		}
		errno = 0;
		*dst = strtol(argv[++i], &end, 10);
		if (errno || *end || end == argv[i]) {
			usage(stderr);
			return 2;
		}
	}
	if (port < 0 || port > 65535 || threads < 1 || threads > SINK_MAX_THREADS) {
		fprintf(stderr, "sink: port must be 0..65535 and threads 1..%d\n",
			SINK_MAX_THREADS);
		return 2;
	}

	sink_nofile_raise();
	if (evthread_use_pthreads() < 0) {
		fprintf(stderr, "sink: evthread_use_pthreads failed\n");
		return 1;
	}
	/* Signals are taken by sigwait in this thread only; the loops never see them. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (long i = 0; i < threads; i++)
		workers[i].fd = -1;
	for (long i = 0; i < threads; i++) {
		int fd = sink_socket_open(i == 0 ? (unsigned short)port : bound, &bound);

		if (fd < 0) {
			fprintf(stderr, "sink: cannot listen on 127.0.0.1:%u: %s\n",
				i == 0 ? (unsigned)port : (unsigned)bound, strerror(errno));
			goto out;
		}
		if (sink_worker_init(&workers[i], fd) < 0) {
			fprintf(stderr, "sink: cannot set up event loop %ld\n", i);
			goto out;
		}
	}
	for (long i = 0; i < threads; i++) {
		if (pthread_create(&workers[i].thread, NULL, sink_worker_run, &workers[i]) != 0) {
			fprintf(stderr, "sink: cannot start thread %ld\n", i);
			goto out;
		}
		started++;
	}
	printf("port %u\n", (unsigned)bound);
	fflush(stdout);

	while (sigwait(&stop, &sig) != 0)
		;
	rc = 0;
out:
	for (int i = 0; i < started; i++)
		event_base_loopbreak(workers[i].base);
	for (int i = 0; i < started; i++)
		pthread_join(workers[i].thread, NULL);
	for (long i = 0; i < threads; i++)
		sink_worker_free(&workers[i]);
	fprintf(stderr, "sink: %lu posts answered\n", atomic_load(&sink_posts));
	return rc;
}
