#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "bridge/buf.h"
#include "bridge/clock.h"
#include "bridge/guard.h"
#include "bridge/log.h"
#include "bridge/reqhead.h"

#define FD_TABLE_MAX (1 << 20) /* hard ceiling on the per-worker table */

struct slot {
	struct bufferevent *bev; /* identity while the socket is ours */
	ino_t ino;               /* the socket's inode: an fd number is reused, an inode is not */
	long long request_start; /* ms, 0 when no request is being read */
	int in_handler;          /* the handler has the request */
	int head_checked;        /* the current request's head passed reqhead_check */
	unsigned long made;      /* thread_made when bev and ino were last checked */
	int refused;             /* answered from here: all further input is dropped */
	int used;
};

struct guard {
	struct event_base *base;
	struct evhttp *http;
	struct evconnlistener *listener;
	int deadline_ms;
	struct reqhead_limits head_limits; /* max_body 0: heads are not checked */
	size_t max_head;                   /* a longer head is evhttp's to refuse */
	SSL_CTX *tls;                      /* listener TLS, or NULL */
	struct slot *slots;
	size_t n_slots;
	unsigned long live, kills, pauses;
	struct event *sweep, *resume;
};

/* evbuffer callbacks carry one pointer; the bufferevent is that pointer and
 * the worker's guard comes from here (one guard per worker thread). */
static __thread struct guard *thread_guard;
/* bufferevents made on this thread: a new one may take a freed one's address */
static __thread unsigned long thread_made;

static ino_t socket_ino(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ? st.st_ino : 0;
}

static struct slot *slot_for(struct guard *g, int fd, int create)
{
	if (fd < 0 || fd >= FD_TABLE_MAX)
		return NULL;
	if ((size_t)fd >= g->n_slots) {
		size_t old = g->n_slots;
		struct slot *t;

		if (!create)
			return NULL;
		t = grow_array(g->slots, &g->n_slots, (size_t)fd + 1, sizeof(*t), 256);
		if (!t)
			return NULL;
		memset(t + old, 0, (g->n_slots - old) * sizeof(*t));
		g->slots = t;
	}
	return &g->slots[fd];
}

static void slot_release(struct guard *g, struct slot *s)
{
	if (s->used)
		g->live--;
	memset(s, 0, sizeof(*s));
}

/* ---- libevent's own error pages, rewritten as JSON ----------------------- */

static const char *error_code(int status)
{
	switch (status) {
	case 400: return "bad_request";
	case 408: return "request_timeout";
	case 413: return "body_too_large";
	case 431: return "headers_too_large";
	case 501: return "not_implemented";
	case 503: return "unavailable";
	default: return "http_error";
	}
}

size_t guard_error_page_text(int status, char *out, size_t cap)
{
	char body[256];
	int bn, n;

	bn = snprintf(body, sizeof(body),
		      "{\"error\":\"%s\",\"message\":\"the request was refused before it could be "
		      "read (HTTP %d)\"}\n",
		      error_code(status), status);
	n = snprintf(out, cap,
		     "HTTP/1.1 %d Error\r\nContent-Type: application/json\r\nConnection: close\r\n"
		     "%sContent-Length: %d\r\n\r\n%s",
		     status, status == 503 ? "Retry-After: 5\r\n" : "", bn, body);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* evhttp_send_error() writes "HTTP/1.x NNN reason" + headers + an HTML page
 * in two appends; once the page is complete, replace the whole response. */
static void output_cb(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
	static const char tail[] = "</BODY></HTML>\n";
	size_t len = evbuffer_get_length(out), tl = sizeof(tail) - 1, n;
	char end[sizeof(tail)], head[64], page[512];
	struct evbuffer_ptr p;
	int status = 0, hn;

	if (info->n_added == 0 || len < tl || len > 4096)
		return;
	p = evbuffer_search(out, "HTTP/1.", 7, NULL);
	if (p.pos != 0)
		return; /* only a response that is alone in the buffer */
	if (evbuffer_ptr_set(out, &p, len - tl, EVBUFFER_PTR_SET) < 0 ||
	    evbuffer_copyout_from(out, &p, end, tl) != (ev_ssize_t)tl || memcmp(end, tail, tl) != 0)
		return;
	hn = (int)evbuffer_copyout(out, head, sizeof(head) - 1);
	head[hn < 0 ? 0 : hn] = '\0';
	if (sscanf(head, "HTTP/1.%*d %d", &status) != 1 || status < 400)
		return;
	n = guard_error_page_text(status, page, sizeof(page));
	/* our own append must not re-enter this callback */
	evbuffer_remove_cb(out, output_cb, arg);
	evbuffer_drain(out, len);
	evbuffer_add(out, page, n);
}

/* ---- the raw request head ------------------------------------------------ */

/* Answer a head reqhead_check refused, before evhttp reads it (so no "100
 * Continue" and no wait for a body that will never be taken).  evhttp owns
 * the bufferevent's write side, so the answer goes straight to the socket
 * (through the connection's SSL on TLS), the sending side is shut, input is
 * dropped from now on, and the sweep closes the connection. */
size_t guard_head_refusal_text(const struct reqhead_verdict *v, char *out, size_t cap)
{
	int n = snprintf(
		out, cap,
		"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n"
		"{\"error\":\"%s\",\"message\":\"%s\"}\n",
		v->status, v->status == 413 ? "Payload Too Large" : "Bad Request",
		strlen(v->code) + strlen(v->message) + 26, v->code, v->message);

	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void head_refuse(struct guard *g, struct bufferevent *bev, struct slot *s,
			struct evbuffer *in, const struct reqhead_verdict *v)
{
	char resp[512];
	int fd = (int)bufferevent_getfd(bev);
	size_t n = guard_head_refusal_text(v, resp, sizeof(resp));

	s->refused = 1;
	evbuffer_drain(in, evbuffer_get_length(in));
	if (n == 0)
		return;
	if (g->tls) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);

		if (ssl)
			(void)SSL_write(ssl, resp, (int)n);
	} else {
		ssize_t w = send(fd, resp, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		(void)w;
	}
	shutdown(fd, SHUT_WR);
}

static void head_check(struct guard *g, struct bufferevent *bev, struct slot *s,
		       struct evbuffer *in)
{
	struct reqhead_verdict v;
	size_t len = evbuffer_get_length(in);
	const char *buf;
	int rc;

	/* one look per request: evhttp consumes a head line by line as it
	 * arrives, so a head that did not come whole in its first read is left
	 * to evhttp and the handler's framing check */
	s->head_checked = 1;
	if (len > g->max_head)
		return;
	buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
	if (!buf)
		return;
	rc = reqhead_check(buf, len, &g->head_limits, &v);
	if (rc < 0)
		head_refuse(g, bev, s, in, &v);
}

/* ---- per-connection deadline --------------------------------------------- */

static void input_cb(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
	struct bufferevent *bev = arg;
	struct guard *g = thread_guard;
	struct slot *s;
	ino_t ino;
	int fd;

	if (!g || info->n_added == 0)
		return;
	fd = (int)bufferevent_getfd(bev);
	s = slot_for(g, fd, 1);
	if (!s)
		return;
	/* a closed connection may leave the same fd and even the same buffer
	 * address to a new one: the socket's inode tells them apart.  Only a
	 * bufferevent made on this thread since the last look can be such a new
	 * one, so a kept-alive connection is not asked again */
	if (!s->used || s->bev != bev || s->made != thread_made) {
		ino = socket_ino(fd);
		if (!s->used || s->bev != bev || s->ino != ino) {
			if (s->used)
				slot_release(g, s); /* the fd's previous socket is gone */
			s->used = 1;
			s->bev = bev;
			s->ino = ino;
			g->live++;
		}
		s->made = thread_made;
	}
	if (!s->in_handler && s->request_start == 0)
		s->request_start = clock_mono_ms();
	if (s->refused)
		evbuffer_drain(in, evbuffer_get_length(in));
	else if (!s->head_checked && !s->in_handler && g->head_limits.max_body)
		head_check(g, bev, s, in);
}

static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
	struct guard *g = arg;
	struct bufferevent *bev;

	if (g->tls) {
		SSL *ssl = SSL_new(g->tls);

		if (!ssl)
			return NULL;
		/* the bufferevent owns (and frees) the SSL from here on */
		bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
						     BEV_OPT_CLOSE_ON_FREE);
		if (!bev) {
			SSL_free(ssl);
			return NULL;
		}
	} else {
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	}

	if (!bev)
		return NULL;
	thread_made++;
	evbuffer_add_cb(bufferevent_get_input(bev), input_cb, bev);
	evbuffer_add_cb(bufferevent_get_output(bev), output_cb, bev);
	return bev;
}

size_t guard_timeout_text(char *out, size_t cap)
{
	static const char body[] = "{\"error\":\"request_timeout\",\"message\":\"the request did "
				   "not arrive within the deadline\"}\n";
	int n = snprintf(out, cap,
			 "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
			 "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
			 sizeof(body) - 1, body);

	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

void guard_log_deadline(int deadline_ms)
{
	struct log_line l;

	log_begin(&l, LOG_WARN, "request_deadline");
	log_int(&l, "deadline_ms", deadline_ms);
	log_end(&l);
}

/* A request still being read past its deadline: answer 408 ourselves (evhttp
 * has written nothing on this connection yet) and shut the socket, which
 * makes evhttp see the end and free the connection itself. */
static void kill_slow(struct guard *g, int fd, struct slot *s)
{
	char resp[512];
	size_t n = guard_timeout_text(resp, sizeof(resp));
	ssize_t w;

	if (!g->tls) { /* on TLS the bytes would have to be encrypted: just close */
		w = send(fd, resp, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)w;
	}
	shutdown(fd, SHUT_RDWR);
	g->kills++;
	guard_log_deadline(g->deadline_ms);
	s->request_start = 0;
}

static void sweep_cb(evutil_socket_t unused, short what, void *arg)
{
	struct guard *g = arg;
	long long now = clock_mono_ms();

	for (size_t fd = 0; fd < g->n_slots; fd++) {
		struct slot *s = &g->slots[fd];

		if (!s->used)
			continue;
		if (socket_ino((int)fd) != s->ino) { /* closed (and maybe reused) */
			slot_release(g, s);
			continue;
		}
		if (s->refused)
			shutdown((int)fd, SHUT_RDWR); /* the refusal is out: evhttp sees the end */
		else if (s->request_start && !s->in_handler &&
			 now - s->request_start > g->deadline_ms)
			kill_slow(g, (int)fd, s);
	}
}

static struct slot *slot_of_request(struct guard *g, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	struct slot *s = bev ? slot_for(g, (int)bufferevent_getfd(bev), 0) : NULL;

	return s && s->used && s->bev == bev ? s : NULL;
}

void guard_request_begin(struct guard *g, struct evhttp_request *req)
{
	struct slot *s = g ? slot_of_request(g, req) : NULL;

	if (s) {
		s->in_handler = 1;
		s->request_start = 0;
	}
}

void guard_request_end(struct guard *g, struct evhttp_request *req)
{
	struct slot *s = g ? slot_of_request(g, req) : NULL;

	if (s) {
		s->in_handler = 0;
		s->head_checked = 0; /* the next request on the connection gets its own check */
	}
}

/* ---- accept errors -------------------------------------------------------- */

static void resume_cb(evutil_socket_t unused, short what, void *arg)
{
	struct guard *g = arg;

	if (g->listener)
		evconnlistener_enable(g->listener);
}

void guard_listener_gone(struct guard *g)
{
	if (!g)
		return;
	g->listener = NULL;
	event_del(g->resume);
}

static void accept_error_cb(struct evconnlistener *lst, void *arg)
{
	/* arg is the listener's callback argument, which evhttp owns: the
	 * guard is this worker thread's */
	struct guard *g = thread_guard;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval pause = { 0, 250 * 1000 };
	struct log_line l;

	/* out of descriptors: the pending connection stays in the backlog;
	 * retrying at once would spin the loop (libevent 2.1 leaves the
	 * listener enabled on EMFILE) */
	if (!g || g->listener != lst)
		return; /* no timer to resume it: never leave the listener off */
	evconnlistener_disable(lst);
	event_add(g->resume, &pause);
	g->pauses++;
	log_begin(&l, LOG_ERROR, "accept_paused");
	log_str(&l, "reason", evutil_socket_error_to_string(err));
	log_int(&l, "pause_ms", 250);
	log_end(&l);
}

long guard_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return (long)rl.rlim_cur;
}

struct guard *guard_new(struct event_base *base, struct evhttp *http,
			struct evconnlistener *listener, int request_deadline_ms, SSL_CTX *tls)
{
	struct guard *g = calloc(1, sizeof(*g));
	struct timeval second = { 1, 0 };

	if (!g)
		return NULL;
	g->base = base;
	g->http = http;
	g->listener = listener;
	g->deadline_ms = request_deadline_ms;
	g->tls = tls;
	g->sweep = event_new(base, -1, EV_PERSIST, sweep_cb, g);
	g->resume = evtimer_new(base, resume_cb, g);
	if (!g->sweep || !g->resume) {
		guard_free(g);
		return NULL;
	}
	event_add(g->sweep, &second);
	if (http)
		evhttp_set_bevcb(http, make_bev, g);
	if (listener)
		evconnlistener_set_error_cb(listener, accept_error_cb);
	return g;
}

void guard_set_head_limits(struct guard *g, unsigned long long max_body, unsigned long long ceiling,
			   size_t max_head)
{
	g->head_limits.max_body = max_body;
	g->head_limits.ceiling = ceiling;
	g->max_head = max_head;
}

void guard_bind_thread(struct guard *g)
{
	thread_guard = g;
}

void guard_free(struct guard *g)
{
	if (!g)
		return;
	if (g->sweep)
		event_free(g->sweep);
	if (g->resume)
		event_free(g->resume);
	if (thread_guard == g)
		thread_guard = NULL;
	free(g->slots);
	free(g);
}

unsigned long guard_connections(const struct guard *g)
{
	return g ? g->live : 0;
}

unsigned long guard_deadline_kills(const struct guard *g)
{
	return g ? g->kills : 0;
}

unsigned long guard_accept_pauses(const struct guard *g)
{
	return g ? g->pauses : 0;
}
