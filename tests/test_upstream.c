/*
 * upstream: URL parsing, and the pool against real loopback peers running
 * on the same event_base: evhttp sinks (plain and TLS with certificates made
 * here with the openssl command line), raw TCP servers that misbehave on
 * purpose, and a DNS server that answers NXDOMAIN.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "bridge/upstream.h"
#include "tap.h"

static struct event_base *base;
static struct evdns_base *dns;
static char tmpdir[64];

/* ------------------------------------------------------------------ */
/* loop helpers */

static int loop_expired;

static void loop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	loop_expired = 1;
	event_base_loopbreak(base);
}

/* Run the loop until *counter >= want or ms elapse; returns 1 if reached. */
static int run_until(const int *counter, int want, int ms)
{
	struct event *t = evtimer_new(base, loop_timer_cb, NULL);
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	loop_expired = 0;
	evtimer_add(t, &tv);
	while (*counter < want && !loop_expired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return *counter >= want;
}

static void run_for(int ms)
{
	int never = 0;

	run_until(&never, 1, ms);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* results */

struct result {
	int calls;
	int in_post; /* the callback ran from inside upstream_post */
	enum upstream_outcome outcome;
	int status;
	char reason[400];
	char body[4096];
	size_t body_len;
	long elapsed_ms;
	int order;
	char retry_after[80], content_type[160]; /* "" when absent */
};

static int in_post, done_seq, done_count;

static void on_done(const struct upstream_response *r, void *arg)
{
	struct result *res = arg;

	res->calls++;
	res->in_post = in_post;
	res->outcome = r->outcome;
	res->status = r->status;
	snprintf(res->reason, sizeof(res->reason), "%s", r->reason ? r->reason : "(null)");
	res->body_len = r->body_len;
	if (r->body && r->body_len < sizeof(res->body)) {
		memcpy(res->body, r->body, r->body_len);
		res->body[r->body_len] = '\0';
	} else {
		res->body[0] = '\0';
	}
	snprintf(res->retry_after, sizeof(res->retry_after), "%s",
		 r->retry_after ? r->retry_after : "");
	snprintf(res->content_type, sizeof(res->content_type), "%s",
		 r->content_type ? r->content_type : "");
	res->elapsed_ms = r->elapsed_ms;
	res->order = ++done_seq;
	done_count++;
}

static struct upstream_request *post(struct upstream_pool *p, const struct upstream_header *h,
				     size_t nh, const char *body, size_t len, int timeout_ms,
				     struct result *res)
{
	struct upstream_request *r = NULL;
	struct bridge_error err;

	memset(res, 0, sizeof(*res));
	bridge_error_clear(&err);
	in_post = 1;
	if (upstream_post(p, h, nh, body, len, timeout_ms, on_done, res, &r, &err) < 0)
		printf("# upstream_post failed: %s\n", err.message);
	in_post = 0;
	return r;
}

/* Post one request and wait for its outcome. */
/* TLS exchanges expected to finish, with a bound generous enough for a handshake under
 * valgrind on a loaded machine: the checks are on the outcome, never on the time. */
#define TLS_WAIT_MS 20000

static void post_wait(struct upstream_pool *p, const char *body, int timeout_ms, struct result *res)
{
	post(p, NULL, 0, body, body ? strlen(body) : 0, timeout_ms, res);
	run_until(&res->calls, 1, timeout_ms + 3000);
}

static struct upstream_pool *pool_for(const char *url, struct upstream_tls *tls,
				      const struct upstream_limits *lim, struct evdns_base *d)
{
	struct upstream_url u;
	struct bridge_error err;

	bridge_error_clear(&err);
	if (upstream_url_parse(url, &u, &err) < 0) {
		printf("# bad test URL %s: %s\n", url, err.message);
		return NULL;
	}
	return upstream_pool_new(base, d, &u, tls, lim);
}

static int starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ------------------------------------------------------------------ */
/* evhttp sink: records what it receives, answers by path */

#define SINK_MAX_PORTS 64
#define SINK_MAX_HELD  16

struct sink {
	struct evhttp *http;
	int port;
	int n_requests;
	char method[16];
	char uri[256];
	char headers[2048]; /* "Name: value\n" in arrival order */
	char body[2048];
	size_t body_len;
	size_t body_total;  /* the whole body's length */
	uint32_t body_hash; /* FNV-1a of the whole body */
	char sni[128];
	int ports[SINK_MAX_PORTS];
	int n_ports;
	int inflight, max_inflight;
	char arrivals[256]; /* X-Seq values, comma separated */
	struct evhttp_request *held[SINK_MAX_HELD];
	int n_held;
	size_t big_size;
};

static uint32_t fnv1a(const unsigned char *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static void sink_note_port(struct sink *s, struct evhttp_request *req)
{
	char *addr = NULL;
	ev_uint16_t port = 0;
	int i;

	evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr, &port);
	for (i = 0; i < s->n_ports; i++)
		if (s->ports[i] == port)
			return;
	if (s->n_ports < SINK_MAX_PORTS)
		s->ports[s->n_ports++] = port;
}

static void sink_reply(struct evhttp_request *req, int code, const char *body)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, body, strlen(body));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
	evhttp_send_reply(req, code, NULL, b);
	evbuffer_free(b);
}

struct delayed {
	struct sink *s;
	struct evhttp_request *req;
};

static void sink_delayed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct delayed *d = arg;

	d->s->inflight--;
	sink_reply(d->req, 200, "late");
	free(d);
}

static void sink_handler(struct evhttp_request *req, void *arg)
{
	struct sink *s = arg;
	struct evkeyval *kv;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	const char *uri = evhttp_request_get_uri(req);
	const char *seq;
	size_t n;

	s->n_requests++;
	sink_note_port(s, req);
	snprintf(s->method, sizeof(s->method), "%s",
		 evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "other");
	snprintf(s->uri, sizeof(s->uri), "%s", uri);
	s->headers[0] = '\0';
	for (kv = evhttp_request_get_input_headers(req)->tqh_first; kv; kv = kv->next.tqe_next) {
		n = strlen(s->headers);
		snprintf(s->headers + n, sizeof(s->headers) - n, "%s: %s\n", kv->key, kv->value);
	}
	s->body_len = s->body_total = evbuffer_get_length(in);
	s->body_hash = fnv1a(evbuffer_pullup(in, -1), s->body_total);
	if (s->body_len > sizeof(s->body))
		s->body_len = sizeof(s->body);
	evbuffer_copyout(in, s->body, s->body_len);
	seq = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Seq");
	if (seq) {
		n = strlen(s->arrivals);
		snprintf(s->arrivals + n, sizeof(s->arrivals) - n, "%s%s", n ? "," : "", seq);
	}
	{
		struct bufferevent *bev = evhttp_connection_get_bufferevent(
			evhttp_request_get_connection(req));
		SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
		const char *name = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;

		snprintf(s->sni, sizeof(s->sni), "%s", name ? name : "");
	}

	if (starts_with(uri, "/ok")) {
		sink_reply(req, 200, "ok");
	} else if (starts_with(uri, "/created")) {
		sink_reply(req, 201, "{\"created\":true}");
	} else if (starts_with(uri, "/missing")) {
		sink_reply(req, 404, "no such hook");
	} else if (starts_with(uri, "/fail")) {
		sink_reply(req, 500, "boom");
	} else if (starts_with(uri, "/close")) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		sink_reply(req, 200, "bye");
	} else if (starts_with(uri, "/slow")) {
		if (s->n_held < SINK_MAX_HELD)
			s->held[s->n_held++] = req;
		else
			sink_reply(req, 503, "too many held");
	} else if (starts_with(uri, "/delay")) {
		struct delayed *d = calloc(1, sizeof(*d));
		struct timeval tv = { 0, 100 * 1000 };

		d->s = s;
		d->req = req;
		if (++s->inflight > s->max_inflight)
			s->max_inflight = s->inflight;
		event_base_once(base, -1, EV_TIMEOUT, sink_delayed_cb, d, &tv);
	} else if (starts_with(uri, "/bigchunked")) {
		struct evbuffer *b = evbuffer_new();
		size_t left = s->big_size;
		char chunk[512];

		memset(chunk, 'c', sizeof(chunk));
		evhttp_send_reply_start(req, 200, "OK");
		while (left) {
			size_t k = left < sizeof(chunk) ? left : sizeof(chunk);

			evbuffer_add(b, chunk, k);
			evhttp_send_reply_chunk(req, b);
			left -= k;
		}
		evhttp_send_reply_end(req);
		evbuffer_free(b);
	} else if (starts_with(uri, "/bighdr")) {
		char *v = malloc(s->big_size + 1);

		memset(v, 'h', s->big_size);
		v[s->big_size] = '\0';
		evhttp_add_header(evhttp_request_get_output_headers(req), "X-Big", v);
		free(v);
		sink_reply(req, 200, "ok");
	} else if (starts_with(uri, "/big")) {
		struct evbuffer *b = evbuffer_new();
		char *v = malloc(s->big_size);

		memset(v, 'b', s->big_size);
		evbuffer_add(b, v, s->big_size);
		free(v);
		evhttp_send_reply(req, 200, "OK", b);
		evbuffer_free(b);
	} else {
		sink_reply(req, 400, "unknown test path");
	}
}

static struct bufferevent *sink_tls_bevcb(struct event_base *b, void *arg)
{
	return bufferevent_openssl_socket_new(b, -1, SSL_new(arg), BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static int sink_start(struct sink *s, const char *addr, SSL_CTX *tls)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	memset(s, 0, sizeof(*s));
	s->http = evhttp_new(base);
	if (!s->http)
		return -1;
	evhttp_set_gencb(s->http, sink_handler, s);
	evhttp_set_max_body_size(s->http, 16 << 20);
	if (tls)
		evhttp_set_bevcb(s->http, sink_tls_bevcb, tls);
	bs = evhttp_bind_socket_with_handle(s->http, addr, 0);
	if (!bs)
		return -1;
	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						 : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

static void sink_release_held(struct sink *s)
{
	int i;

	for (i = 0; i < s->n_held; i++)
		evhttp_send_reply(s->held[i], 200, "OK", NULL);
	s->n_held = 0;
}

static void sink_stop(struct sink *s)
{
	sink_release_held(s);
	if (s->http)
		evhttp_free(s->http);
	s->http = NULL;
}

static void sink_reset_stats(struct sink *s)
{
	s->n_requests = 0;
	s->n_ports = 0;
	s->max_inflight = 0;
	s->arrivals[0] = '\0';
}

/* ------------------------------------------------------------------ */
/* raw TCP servers that misbehave */

enum raw_mode {
	RAW_CLOSE_MIDBODY,    /* partial body, then FIN */
	RAW_RESET_MIDBODY,    /* partial body, then RST a little later */
	RAW_GARBAGE,          /* a status line that is not HTTP */
	RAW_CLOSE_NO_REPLY,   /* FIN as soon as a request is read */
	RAW_KEEPALIVE_CLOSER, /* answers the first request of a connection, closes on the next */
	RAW_ACCEPT_CLOSE,     /* closes right after accept */
	RAW_CLOSE_DELIMITED,  /* body delimited by closing the connection */
	RAW_SCRIPT,           /* answers every request with `script` (see raw_server) */
};

#define RAW_MAX_CONNS 32

struct raw_conn {
	struct raw_server *s;
	struct bufferevent *bev;
	struct event *timer;
	int requests;
	size_t sent; /* RAW_SCRIPT with trickle: of the script, the bytes sent */
	struct event *late_timer;
};

struct raw_server {
	struct evconnlistener *lev;
	int port;
	enum raw_mode mode;
	int n_conns, n_requests;
	SSL_CTX *tls; /* speak TLS, and close without close_notify */
	struct raw_conn *conns[RAW_MAX_CONNS];
	int n;
	/* RAW_SCRIPT: the answer's bytes, then a close or not; trickle sends
	 * them that many bytes a millisecond (a read each for the client) */
	const char *script;
	size_t script_len;
	int close_after, trickle;
	const char *late; /* sent 30 ms after the answer, unasked */
};

static void raw_close(struct raw_conn *rc, int reset)
{
	if (!rc->bev)
		return;
	if (reset) {
		struct linger lg = { 1, 0 };

		setsockopt(bufferevent_getfd(rc->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	bufferevent_free(rc->bev);
	rc->bev = NULL;
}

static void raw_written_cb(struct bufferevent *bev, void *arg)
{
	raw_close(arg, 0);
}

static void raw_reset_cb(evutil_socket_t fd, short what, void *arg)
{
	raw_close(arg, 1);
}

static void raw_event_cb(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		raw_close(arg, 0);
}

static void raw_late_cb(evutil_socket_t fd, short what, void *arg)
{
	struct raw_conn *rc = arg;

	if (rc->bev)
		bufferevent_write(rc->bev, rc->s->late, strlen(rc->s->late));
}

static void raw_script_done(struct raw_conn *rc)
{
	struct timeval tv = { 0, 30 * 1000 };

	if (rc->s->close_after)
		bufferevent_setcb(rc->bev, NULL, raw_written_cb, raw_event_cb, rc);
	if (rc->s->late) {
		if (!rc->late_timer)
			rc->late_timer = evtimer_new(base, raw_late_cb, rc);
		evtimer_add(rc->late_timer, &tv);
	}
}

static void raw_trickle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct raw_conn *rc = arg;
	struct timeval tv = { 0, 1000 };
	size_t n = rc->s->script_len - rc->sent;

	if (!rc->bev)
		return;
	if (n > (size_t)rc->s->trickle)
		n = (size_t)rc->s->trickle;
	bufferevent_write(rc->bev, rc->s->script + rc->sent, n);
	rc->sent += n;
	if (rc->sent < rc->s->script_len)
		evtimer_add(rc->timer, &tv);
	else
		raw_script_done(rc);
}

static void raw_script(struct raw_conn *rc)
{
	struct raw_server *s = rc->s;

	if (!s->trickle) {
		bufferevent_write(rc->bev, s->script, s->script_len);
		raw_script_done(rc);
		return;
	}
	if (!rc->timer)
		rc->timer = evtimer_new(base, raw_trickle_cb, rc);
	rc->sent = 0;
	raw_trickle_cb(-1, 0, rc);
}

static const char raw_partial[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc";

static void raw_request(struct raw_conn *rc)
{
	struct raw_server *s = rc->s;
	struct evbuffer *out = bufferevent_get_output(rc->bev);
	struct timeval tv = { 0, 150 * 1000 };

	s->n_requests++;
	rc->requests++;
	switch (s->mode) {
	case RAW_CLOSE_MIDBODY:
		evbuffer_add(out, raw_partial, strlen(raw_partial));
		bufferevent_setcb(rc->bev, NULL, raw_written_cb, raw_event_cb, rc);
		break;
	case RAW_RESET_MIDBODY:
		evbuffer_add(out, raw_partial, strlen(raw_partial));
		rc->timer = evtimer_new(base, raw_reset_cb, rc);
		evtimer_add(rc->timer, &tv);
		break;
	case RAW_GARBAGE: evbuffer_add_printf(out, "GARBAGE\r\n\r\n"); break;
	case RAW_CLOSE_NO_REPLY: raw_close(rc, 0); break;
	case RAW_KEEPALIVE_CLOSER:
		if (rc->requests == 1)
			evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
		else
			raw_close(rc, 0);
		break;
	case RAW_CLOSE_DELIMITED:
		evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
					 "close-delimited body");
		bufferevent_setcb(rc->bev, NULL, raw_written_cb, raw_event_cb, rc);
		break;
	case RAW_SCRIPT: raw_script(rc); break;
	case RAW_ACCEPT_CLOSE: break;
	}
}

static void raw_read_cb(struct bufferevent *bev, void *arg)
{
	struct raw_conn *rc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (rc->bev) {
		struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		size_t hlen, clen = 0;
		char *head, *cl;

		if (end.pos < 0)
			return;
		hlen = (size_t)end.pos + 4;
		head = malloc(hlen + 1); /* the pulled-up bytes are not NUL-terminated */
		if (!head)
			return;
		evbuffer_copyout(in, head, hlen);
		head[hlen] = '\0';
		cl = strcasestr(head, "\r\nContent-Length:");
		if (cl)
			clen = strtoul(cl + 17, NULL, 10);
		free(head);
		if (evbuffer_get_length(in) < hlen + clen)
			return;
		evbuffer_drain(in, hlen + clen);
		raw_request(rc);
	}
}

static void raw_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			  int len, void *arg)
{
	struct raw_server *s = arg;
	struct raw_conn *rc;

	s->n_conns++;
	if (s->mode == RAW_ACCEPT_CLOSE || s->n >= RAW_MAX_CONNS) {
		evutil_closesocket(fd);
		return;
	}
	rc = calloc(1, sizeof(*rc));
	rc->s = s;
	if (s->tls)
		rc->bev = bufferevent_openssl_socket_new(base, fd, SSL_new(s->tls),
							 BUFFEREVENT_SSL_ACCEPTING,
							 BEV_OPT_CLOSE_ON_FREE);
	else
		rc->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(rc->bev, raw_read_cb, NULL, raw_event_cb, rc);
	bufferevent_enable(rc->bev, EV_READ | EV_WRITE);
	s->conns[s->n++] = rc;
}

static int raw_start(struct raw_server *s, enum raw_mode mode)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	memset(s, 0, sizeof(*s));
	s->mode = mode;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->lev = evconnlistener_new_bind(base, raw_accept_cb, s,
					 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
					 (struct sockaddr *)&sin, sizeof(sin));
	if (!s->lev)
		return -1;
	getsockname(evconnlistener_get_fd(s->lev), (struct sockaddr *)&sin, &sl);
	s->port = ntohs(sin.sin_port);
	return 0;
}

static void raw_stop(struct raw_server *s)
{
	int i;

	for (i = 0; i < s->n; i++) {
		raw_close(s->conns[i], 0);
		if (s->conns[i]->timer)
			event_free(s->conns[i]->timer);
		if (s->conns[i]->late_timer)
			event_free(s->conns[i]->late_timer);
		free(s->conns[i]);
	}
	s->n = 0;
	if (s->lev)
		evconnlistener_free(s->lev);
	s->lev = NULL;
}

/* ------------------------------------------------------------------ */
/* DNS: hosts file plus a server that answers NXDOMAIN to everything */

static void dns_nx_cb(struct evdns_server_request *req, void *arg)
{
	evdns_server_request_respond(req, DNS_ERR_NOTEXIST);
}

static int udp_socket(int *port)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return -1;
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	*port = ntohs(sin.sin_port);
	evutil_make_socket_nonblocking(fd);
	return fd;
}

/* A bound, not listening TCP port: connecting to it is refused. */
static int refused_port(int *fd_ret)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return -1;
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	*fd_ret = fd;
	return ntohs(sin.sin_port);
}

/* ------------------------------------------------------------------ */
/* certificates */

static int write_file(const char *dir, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static int make_ca(const char *name)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
		 "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
		 "-nodes -keyout %s.key -out %s.pem -days 2 -subj '/CN=%s' "
		 "-addext 'basicConstraints=critical,CA:TRUE' "
		 "-addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null",
		 tmpdir, name, name, name);
	return system(cmd);
}

static int make_leaf(const char *name, const char *ca, const char *san)
{
	char ext[512], cmd[1024];

	snprintf(ext, sizeof(ext),
		 "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
		 "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n",
		 san);
	snprintf(cmd, sizeof(cmd), "%s.ext", name);
	if (write_file(tmpdir, cmd, ext) < 0)
		return -1;
	snprintf(cmd, sizeof(cmd),
		 "cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
		 "-nodes -keyout %s.key -out %s.csr -subj '/CN=%s' 2>/dev/null && "
		 "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial "
		 "-out %s.pem -days 2 -extfile %s.ext 2>/dev/null",
		 tmpdir, name, name, name, name, ca, ca, name, name);
	return system(cmd);
}

static SSL_CTX *server_ctx(const char *name)
{
	char crt[256], key[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	snprintf(crt, sizeof(crt), "%s/%s.pem", tmpdir, name);
	snprintf(key, sizeof(key), "%s/%s.key", tmpdir, name);
	if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* ------------------------------------------------------------------ */
/* tests */

struct url_case {
	const char *url;
	int ok;
	int https;
	const char *host;
	int port;
	const char *path;
	const char *host_header;
	const char *error; /* substring of the message */
};

/* What logs, errors and listings show of an endpoint URL. */
static void test_url_redact(void)
{
	static const char *const cases[][2] = {
		{ "https://crm.example.com/in", "https://crm.example.com/in" },
		{ "https://h/in?key=s3cr3t", "https://h/in?key=***" },
		{ "https://h/in?key=s3cr3t&v=2&flag", "https://h/in?key=***&v=***&flag" },
		{ "http://h:8080?token=abc#frag", "http://h:8080?token=***#frag" },
		{ "http://user:p%40ss@h/x?a=b", "http://user:***@h/x?a=***" },
		{ "http://user@h/x", "http://user@h/x" },
		{ "http://h/a@b?c=d@e", "http://h/a@b?c=***" },
		{ "", "" },
	};
	char out[128], small[12];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		upstream_url_redact(cases[i][0], out, sizeof(out));
		is_str(out, cases[i][1], cases[i][0]);
	}
	upstream_url_redact("https://h/?key=s3cr3t", small, sizeof(small));
	is_str(small, "https://h/?", "a truncated redaction never shows a value");
}

static void test_url_parse(void)
{
	static const struct url_case cases[] = {
		{ "http://example.com", 1, 0, "example.com", 80, "/", "example.com", NULL },
		{ "https://example.com/hook", 1, 1, "example.com", 443, "/hook", "example.com",
		  NULL },
		{ "HTTPS://crm.example.com:8443/in/v2?token=abc&x=%2F", 1, 1, "crm.example.com",
		  8443, "/in/v2?token=abc&x=%2F", "crm.example.com:8443", NULL },
		{ "http://127.0.0.1:8080", 1, 0, "127.0.0.1", 8080, "/", "127.0.0.1:8080", NULL },
		{ "http://h?q=1", 1, 0, "h", 80, "/?q=1", "h", NULL },
		{ "http://h:80/", 1, 0, "h", 80, "/", "h", NULL },
		{ "https://[::1]:8443/x", 1, 1, "::1", 8443, "/x", "[::1]:8443", NULL },
		{ "https://[2001:db8::1]/", 1, 1, "2001:db8::1", 443, "/", "[2001:db8::1]", NULL },
		{ "http://h:65535/", 1, 0, "h", 65535, "/", "h:65535", NULL },
		{ "ftp://h/", 0, 0, NULL, 0, NULL, NULL, "http:// or https://" },
		{ "h/path", 0, 0, NULL, 0, NULL, NULL, "http:// or https://" },
		{ "http://user:pw@h/", 0, 0, NULL, 0, NULL, NULL, "user-info" },
		{ "http://h/#frag", 0, 0, NULL, 0, NULL, NULL, "fragment" },
		{ "http://h/a b", 0, 0, NULL, 0, NULL, NULL, "space or control" },
		{ "http://h/a\r\nX: y", 0, 0, NULL, 0, NULL, NULL, "space or control" },
		{ "http://h/\x01", 0, 0, NULL, 0, NULL, NULL, "control" },
		{ "http://h/caf\xc3\xa9", 0, 0, NULL, 0, NULL, NULL, "non-ASCII" },
		{ "http://h/%zz", 0, 0, NULL, 0, NULL, NULL, "percent-encoding" },
		{ "http://h/%4", 0, 0, NULL, 0, NULL, NULL, "percent-encoding" },
		{ "http://h:0/", 0, 0, NULL, 0, NULL, NULL, "out of range" },
		{ "http://h:65536/", 0, 0, NULL, 0, NULL, NULL, "out of range" },
		{ "http://h:99999999999/", 0, 0, NULL, 0, NULL, NULL, "invalid port" },
		{ "http://h:/", 0, 0, NULL, 0, NULL, NULL, "empty port" },
		{ "http://h:8a/", 0, 0, NULL, 0, NULL, NULL, "invalid port" },
		{ "http:///path", 0, 0, NULL, 0, NULL, NULL, "no host" },
		{ "http://", 0, 0, NULL, 0, NULL, NULL, "no host" },
		{ "http://[::1/", 0, 0, NULL, 0, NULL, NULL, "lacks ']'" },
		{ "http://[zz::1]/", 0, 0, NULL, 0, NULL, NULL, "invalid IPv6" },
		{ "http://[::1]x/", 0, 0, NULL, 0, NULL, NULL, "after ']'" },
		{ "http://a..b/", 0, 0, NULL, 0, NULL, NULL, "invalid host" },
		{ "http://a.b./", 0, 0, NULL, 0, NULL, NULL, "invalid host" },
		{ "http://exa*mple.com/", 0, 0, NULL, 0, NULL, NULL, "invalid host" },
		{ "http://999.1.1.1/", 0, 0, NULL, 0, NULL, NULL, "invalid host" },
		{ "", 0, 0, NULL, 0, NULL, NULL, "empty" },
	};
	char longurl[2200];
	struct upstream_url u;
	struct bridge_error err;
	char name[160];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct url_case *c = &cases[i];
		int rc;

		bridge_error_clear(&err);
		rc = upstream_url_parse(c->url, &u, &err);
		snprintf(name, sizeof(name), "url %zu %s %s", i, c->ok ? "accepted" : "refused",
			 c->ok ? c->url : (c->error ? c->error : ""));
		if (c->ok) {
			if (!is_int(rc, 0, name)) {
				printf("#   error: %s\n", err.message);
				continue;
			}
			ok(u.https == c->https && strcmp(u.host, c->host) == 0 &&
				   u.port == c->port && strcmp(u.path, c->path) == 0 &&
				   strcmp(u.host_header, c->host_header) == 0,
			   "  parsed fields match");
			if (strcmp(u.host_header, c->host_header) != 0 ||
			    strcmp(u.path, c->path) != 0)
				printf("#   host=%s port=%d path=%s host_header=%s\n", u.host,
				       u.port, u.path, u.host_header);
		} else {
			is_int(rc, -1, name);
			if (!ok(strstr(err.message, c->error) != NULL, "  error message explains"))
				printf("#   message: %s\n", err.message);
		}
	}
	memcpy(longurl, "http://h/", 9);
	memset(longurl + 9, 'a', sizeof(longurl) - 10);
	longurl[sizeof(longurl) - 1] = '\0';
	bridge_error_clear(&err);
	is_int(upstream_url_parse(longurl, &u, &err), -1, "path over 2047 bytes refused");
	ok(strstr(err.message, "longer than") != NULL, "  says the path is too long");
}

static void test_misc(void)
{
	struct upstream_limits l;

	memset(&l, 0, sizeof(l));
	upstream_limits_default(&l);
	ok(l.max_connections == 64 && l.max_response_body == 1048576 &&
		   l.max_response_headers == 65536 && l.idle_timeout_ms == 30000,
	   "default limits");
	is_str(upstream_outcome_name(UPSTREAM_RESPONSE), "response", "outcome name response");
	is_str(upstream_outcome_name(UPSTREAM_TIMEOUT), "timeout", "outcome name timeout");
	is_str(upstream_outcome_name(UPSTREAM_CONNECT_FAILED), "connect_failed",
	       "outcome name connect_failed");
	is_str(upstream_outcome_name(UPSTREAM_TLS_FAILED), "tls_failed", "outcome name tls_failed");
	is_str(upstream_outcome_name(UPSTREAM_PROTOCOL_ERROR), "protocol_error",
	       "outcome name protocol_error");
	is_str(upstream_outcome_name(UPSTREAM_TOO_LARGE), "too_large", "outcome name too_large");
	is_str(upstream_outcome_name(UPSTREAM_CANCELLED), "cancelled", "outcome name cancelled");
	upstream_pool_free(NULL);
	upstream_tls_free(NULL);
	upstream_request_cancel(NULL); /* NULL accepted: a crash fails the program */
}

static void test_basic(struct sink *s)
{
	static const char body[] = "{\"id\":\"A\"}\0tail";
	const struct upstream_header h[] = {
		{ "Content-Type", "application/json" },
		{ "X-Qualifio-Signature", "sha256=00ff" },
		{ "Authorization", "Bearer t0k3n" },
	};
	char url[128], want[512];
	struct upstream_pool *p;
	struct result res;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok/hook?token=a%%20b", s->port);
	p = pool_for(url, NULL, NULL, NULL);
	ok(p != NULL, "pool for an IP literal needs no resolver");
	post(p, h, 3, body, sizeof(body) - 1, 2000, &res);
	is_int(res.calls, 0, "callback does not run inside upstream_post");
	ok(run_until(&res.calls, 1, 3000), "request completes");
	is_int(res.calls, 1, "callback ran exactly once");
	is_int(res.in_post, 0, "callback ran from the loop");
	is_int(res.outcome, UPSTREAM_RESPONSE, "outcome response");
	is_int(res.status, 200, "status 200");
	is_str(res.body, "ok", "response body");
	is_int(res.body_len, 2, "response body length");
	is_str(res.reason, "HTTP 200 OK", "reason names the status");
	ok(res.elapsed_ms >= 0 && res.elapsed_ms < 3000, "elapsed_ms plausible");
	is_str(s->method, "POST", "sink saw a POST");
	is_str(s->uri, "/ok/hook?token=a%20b", "sink saw path and query verbatim");
	snprintf(want, sizeof(want),
		 "Host: 127.0.0.1:%d\nContent-Type: application/json\n"
		 "X-Qualifio-Signature: sha256=00ff\nAuthorization: Bearer t0k3n\n"
		 "Content-Length: %zu\n",
		 s->port, sizeof(body) - 1);
	is_str(s->headers, want,
	       "exact request headers: Host first, caller headers verbatim, "
	       "Content-Length added");
	ok(s->body_len == sizeof(body) - 1 && memcmp(s->body, body, s->body_len) == 0,
	   "exact body bytes, embedded NUL included");
	upstream_pool_free(p);
	run_for(20);
}

static void test_statuses(struct sink *s)
{
	static const struct {
		const char *path;
		int status;
		const char *body;
	} cases[] = {
		{ "/created", 201, "{\"created\":true}" },
		{ "/missing", 404, "no such hook" },
		{ "/fail", 500, "boom" },
	};
	char url[128], name[96];
	size_t i;

	for (i = 0; i < 3; i++) {
		struct upstream_pool *p;
		struct result res;

		snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, cases[i].path);
		p = pool_for(url, NULL, NULL, NULL);
		post_wait(p, "{}", 2000, &res);
		snprintf(name, sizeof(name), "%s: response with status %d", cases[i].path,
			 cases[i].status);
		ok(res.outcome == UPSTREAM_RESPONSE && res.status == cases[i].status, name);
		is_str(res.body, cases[i].body, "  body delivered");
		upstream_pool_free(p);
	}
	run_for(20);
}

#define BIG_BODY 8000000

static void test_keepalive(struct sink *s)
{
	struct upstream_limits lim;
	char *big;
	struct upstream_pool *p;
	struct result res;
	char url[128];
	int i, good = 0;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", s->port);
	p = pool_for(url, NULL, NULL, NULL);
	sink_reset_stats(s);
	for (i = 0; i < 20; i++) {
		post_wait(p, "x", 2000, &res);
		good += res.outcome == UPSTREAM_RESPONSE && res.status == 200;
	}
	is_int(good, 20, "20 sequential requests succeed");
	is_int(s->n_requests, 20, "sink received 20 requests");
	is_int(s->n_ports, 1, "all 20 went over one keep-alive connection");
	/* a large body on the kept-alive connection, which gets the request
	 * written without waiting for the loop, more than the socket takes at
	 * once (the sink reads in this loop): every byte arrives in order */
	big = malloc(BIG_BODY);
	for (i = 0; big && i < BIG_BODY; i++)
		big[i] = (char)('a' + i % 26);
	post(p, NULL, 0, big, big ? BIG_BODY : 0, 5000, &res);
	ok(run_until(&res.calls, 1, 6000) && res.outcome == UPSTREAM_RESPONSE && res.status == 200,
	   "an 8,000,000-byte body on the kept-alive connection is answered");
	ok(big && s->body_len == sizeof(s->body) && memcmp(s->body, big, sizeof(s->body)) == 0,
	   "  its first bytes arrived as sent");
	ok(big && s->body_total == BIG_BODY &&
		   s->body_hash == fnv1a((const unsigned char *)big, BIG_BODY),
	   "  and all of it, in order");
	free(big);
	post_wait(p, "x", 2000, &res);
	is_int(res.status, 200, "the connection serves the next request");
	is_int(s->n_ports, 1, "  still the one connection");
	upstream_pool_free(p);

	/* The server says Connection: close: that connection is not reused. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/close", s->port);
	p = pool_for(url, NULL, NULL, NULL);
	sink_reset_stats(s);
	post_wait(p, "x", 2000, &res);
	is_int(res.status, 200, "response with Connection: close");
	post_wait(p, "x", 2000, &res);
	is_int(res.status, 200, "next request succeeds");
	is_int(s->n_ports, 2, "a closed connection is not reused");
	upstream_pool_free(p);

	/* Idle connections are closed after idle_timeout_ms. */
	upstream_limits_default(&lim);
	lim.idle_timeout_ms = 150;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", s->port);
	p = pool_for(url, NULL, &lim, NULL);
	sink_reset_stats(s);
	post_wait(p, "x", 2000, &res);
	post_wait(p, "x", 2000, &res);
	is_int(s->n_ports, 1, "two quick requests share a connection");
	run_for(450);
	post_wait(p, "x", 2000, &res);
	is_int(res.status, 200, "request after the idle timeout succeeds");
	is_int(s->n_ports, 2, "it needed a new connection: the idle one was closed");
	upstream_pool_free(p);
	run_for(20);
}

static void test_concurrency(struct sink *s)
{
	struct upstream_limits lim;
	struct upstream_pool *p;
	struct result res[6];
	struct upstream_header h;
	char url[128], seq[6][4];
	long t0;
	int i, good = 0;

	upstream_limits_default(&lim);
	lim.max_connections = 2;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/delay", s->port);
	p = pool_for(url, NULL, &lim, NULL);
	sink_reset_stats(s);
	done_count = 0;
	for (i = 0; i < 6; i++) {
		snprintf(seq[i], sizeof(seq[i]), "%d", i + 1);
		h.name = "X-Seq";
		h.value = seq[i];
		post(p, &h, 1, "x", 1, 5000, &res[i]);
	}
	ok(run_until(&done_count, 6, 8000), "six requests complete through a 2-connection pool");
	for (i = 0; i < 6; i++)
		good += res[i].outcome == UPSTREAM_RESPONSE && res[i].status == 200 &&
			strcmp(res[i].body, "late") == 0;
	is_int(good, 6, "all six got the delayed 200");
	is_int(s->max_inflight, 2, "never more than 2 requests in flight at the upstream");
	is_int(s->n_ports, 2, "two connections used");
	upstream_pool_free(p);

	/* One connection: strict FIFO, one after the other. */
	lim.max_connections = 1;
	p = pool_for(url, NULL, &lim, NULL);
	sink_reset_stats(s);
	done_count = 0;
	t0 = now_ms();
	for (i = 0; i < 5; i++) {
		h.name = "X-Seq";
		h.value = seq[i];
		post(p, &h, 1, "x", 1, 5000, &res[i]);
	}
	ok(run_until(&done_count, 5, 8000), "five requests complete through one connection");
	is_str(s->arrivals, "1,2,3,4,5", "waiting requests are served in FIFO order");
	ok(res[0].order < res[1].order && res[1].order < res[2].order &&
		   res[2].order < res[3].order && res[3].order < res[4].order,
	   "callbacks run in the same order");
	is_int(s->max_inflight, 1, "one request at a time");
	if (!ok(now_ms() - t0 >= 480, "serialised: about 5 x 100 ms"))
		printf("#   took %ld ms\n", now_ms() - t0);
	upstream_pool_free(p);
	run_for(20);
}

static void test_timeout_cancel(struct sink *s)
{
	struct upstream_limits lim;
	struct upstream_pool *p;
	struct upstream_request *r1, *r2;
	struct result res, res2, res3;
	char url[128];
	long t0;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", s->port);
	p = pool_for(url, NULL, NULL, NULL);
	sink_reset_stats(s);
	t0 = now_ms();
	post_wait(p, "x", 300, &res);
	is_int(res.outcome, UPSTREAM_TIMEOUT, "a silent upstream times out");
	ok(strstr(res.reason, "within 300 ms") && strstr(res.reason, "waiting for the response"),
	   "reason names the deadline and the phase");
	printf("# reason: %s\n", res.reason);
	ok(res.elapsed_ms >= 290 && res.elapsed_ms < 1500, "deadline honoured (290-1500 ms)");
	ok(now_ms() - t0 < 2000, "the loop was not blocked");
	is_int(res.calls, 1, "timeout reported once");
	run_for(100);
	is_int(res.calls, 1, "and never again");
	upstream_pool_free(p);
	sink_release_held(s);

	/* A timed-out connection is discarded: the next request opens another. */
	upstream_limits_default(&lim);
	lim.max_connections = 1;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", s->port);
	p = pool_for(url, NULL, &lim, NULL);
	sink_reset_stats(s);
	post_wait(p, "x", 200, &res);
	sink_release_held(s);
	is_int(res.outcome, UPSTREAM_TIMEOUT, "timeout on a one-connection pool");
	post_wait(p, "x", 200, &res);
	is_int(res.outcome, UPSTREAM_TIMEOUT, "second timeout");
	is_int(s->n_ports, 2, "each attempt used a fresh connection");
	upstream_pool_free(p);
	sink_release_held(s);

	/* Cancel a running request and a waiting one. */
	p = pool_for(url, NULL, &lim, NULL);
	sink_reset_stats(s);
	r1 = post(p, NULL, 0, "1", 1, 5000, &res);
	r2 = post(p, NULL, 0, "2", 1, 5000, &res2);
	run_for(100);
	is_int(s->n_requests, 1, "first request reached the upstream, second waits");
	upstream_request_cancel(r2);
	upstream_request_cancel(r1);
	run_for(200);
	is_int(res.calls + res2.calls, 0, "cancelled requests never call back");
	is_int(s->n_requests, 1, "the waiting request was never sent");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", s->port);
	upstream_pool_free(p);
	sink_release_held(s);

	/* Cancel before the loop ever ran. */
	p = pool_for(url, NULL, NULL, NULL);
	r1 = post(p, NULL, 0, "1", 1, 5000, &res3);
	upstream_request_cancel(r1);
	post_wait(p, "x", 2000, &res);
	is_int(res.status, 200, "pool works after a cancel");
	is_int(res3.calls, 0, "request cancelled right after posting never calls back");
	upstream_pool_free(p);
	run_for(20);
}

static void test_pool_free_pending(struct sink *s)
{
	struct upstream_limits lim;
	struct upstream_pool *p;
	struct result res[3];
	char url[128];
	int i, cancelled = 0;

	upstream_limits_default(&lim);
	lim.max_connections = 1;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", s->port);
	p = pool_for(url, NULL, &lim, NULL);
	for (i = 0; i < 3; i++)
		post(p, NULL, 0, "x", 1, 5000, &res[i]);
	run_for(100);
	upstream_pool_free(p);
	for (i = 0; i < 3; i++)
		cancelled += res[i].calls == 1 && res[i].outcome == UPSTREAM_CANCELLED &&
			     res[i].in_post == 0;
	is_int(cancelled, 3,
	       "pool_free: in-flight and waiting requests called back with "
	       "CANCELLED, synchronously");
	is_str(res[0].reason, "upstream pool shut down", "cancel reason");
	run_for(50);
	ok(res[0].calls == 1 && res[1].calls == 1 && res[2].calls == 1, "exactly once each");
	sink_release_held(s);
	run_for(20);
}

struct free_in_cb {
	struct upstream_pool *p;
	int calls;
};

static void free_pool_cb(const struct upstream_response *r, void *arg)
{
	struct free_in_cb *f = arg;

	f->calls++;
	upstream_pool_free(f->p);
	f->p = NULL;
}

static void test_free_in_callback(struct sink *s)
{
	struct upstream_pool *p;
	struct free_in_cb f = { NULL, 0 };
	struct result res;
	struct bridge_error err;
	char url[128];

	/* The first request times out; its callback frees the pool while a
	 * second request is still in flight. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", s->port);
	p = pool_for(url, NULL, NULL, NULL);
	f.p = p;
	upstream_post(p, NULL, 0, "x", 1, 150, free_pool_cb, &f, NULL, &err);
	post(p, NULL, 0, "y", 1, 5000, &res);
	ok(run_until(&f.calls, 1, 3000), "first callback ran");
	is_int(res.calls, 1, "freeing the pool from a callback cancels the other request");
	is_int(res.outcome, UPSTREAM_CANCELLED, "  with CANCELLED");
	run_for(50);
	is_int(f.calls, 1, "the freeing callback ran once");
	is_int(res.calls, 1, "the cancelled one was called once");
	sink_release_held(s);
	run_for(20);
}

static void test_validation(struct sink *s)
{
	static const struct {
		const char *name, *value, *error;
	} bad[] = {
		{ "Host", "evil", "set by the bridge" },
		{ "content-length", "5", "set by the bridge" },
		{ "Transfer-Encoding", "chunked", "hop-by-hop" },
		{ "Connection", "close", "hop-by-hop" },
		{ "Proxy-Authorization", "x", "hop-by-hop" },
		{ "Bad Header", "x", "invalid upstream header name" },
		{ "", "x", "invalid upstream header name" },
		{ "X-Ok", "a\r\nInjected: 1", "invalid value" },
		{ "X-Ok", "nul\x01", "invalid value" },
		{ "X-Ok", "sixteen bytes...\x7f", "invalid value" },
		{ "X-Ok",
		  "0123\x7f"
		  "5678901",
		  "invalid value" },
		{ "X-Ok", "a\ttab, then\n", "invalid value" },
		{ "TE", "trailers", "hop-by-hop" },
		{ "expect", "100-continue", "hop-by-hop" },
	};
	static char longest[8193], too_long[8194];
	struct upstream_pool *p;
	struct upstream_request *r;
	struct bridge_error err;
	struct upstream_header h;
	struct result res;
	char url[128], name[128];
	size_t i;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", s->port);
	p = pool_for(url, NULL, NULL, NULL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		h.name = bad[i].name;
		h.value = bad[i].value;
		bridge_error_clear(&err);
		r = (struct upstream_request *)1;
		snprintf(name, sizeof(name), "header '%s' refused", bad[i].name);
		is_int(upstream_post(p, &h, 1, "x", 1, 1000, on_done, &res, &r, &err), -1, name);
		ok(strstr(err.message, bad[i].error) != NULL && r == NULL,
		   "  with a clear message");
	}
	bridge_error_clear(&err);
	is_int(upstream_post(p, NULL, 0, "x", 1, 0, on_done, &res, NULL, &err), -1,
	       "zero timeout refused");
	ok(strstr(err.message, "positive") != NULL, "  message says why");
	is_int(upstream_post(p, NULL, 0, "x", 1, 100, NULL, NULL, NULL, &err), -1,
	       "missing callback refused");
	/* tabs are the one control character a value may hold, anywhere */
	memset(longest, 'v', sizeof(longest) - 1);
	memset(too_long, 'v', sizeof(too_long) - 1);
	longest[3] = longest[sizeof(longest) - 2] = '\t';
	h.name = "X-Long";
	h.value = longest;
	ok(upstream_post(p, &h, 1, "x", 1, 1000, on_done, &res, &r, &err) == 0 && r,
	   "a value of 8192 bytes with tabs in it is taken");
	upstream_request_cancel(r);
	h.value = too_long;
	r = (struct upstream_request *)1;
	ok(upstream_post(p, &h, 1, "x", 1, 1000, on_done, &res, &r, &err) == -1 && r == NULL &&
		   strstr(err.message, "longer than 8192 bytes"),
	   "one of 8193 bytes is refused");
	upstream_pool_free(p);
	{
		struct upstream_url u;

		upstream_url_parse("https://127.0.0.1/", &u, &err);
		ok(upstream_pool_new(base, NULL, &u, NULL, NULL) == NULL,
		   "https pool without a TLS context refused");
		upstream_url_parse("http://name.test/", &u, &err);
		ok(upstream_pool_new(base, NULL, &u, NULL, NULL) == NULL,
		   "host name without an evdns base refused (no blocking resolver)");
	}
}

static void test_connect_failures(int refused, struct evdns_base *silent_dns)
{
	struct upstream_pool *p;
	struct result res;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", refused);
	p = pool_for(url, NULL, NULL, NULL);
	post(p, NULL, 0, "x", 1, 2000, &res);
	is_int(res.calls, 0, "refused: no callback inside upstream_post");
	run_until(&res.calls, 1, 3000);
	is_int(res.outcome, UPSTREAM_CONNECT_FAILED, "refused port: connect_failed");
	ok(starts_with(res.reason, "connection refused"), "reason: connection refused");
	printf("# reason: %s\n", res.reason);
	upstream_pool_free(p);

	snprintf(url, sizeof(url), "http://nope.invalid:%d/", refused);
	p = pool_for(url, NULL, NULL, dns);
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_CONNECT_FAILED, "NXDOMAIN: connect_failed");
	ok(starts_with(res.reason, "cannot resolve 'nope.invalid'"), "reason names the host");
	printf("# reason: %s\n", res.reason);
	upstream_pool_free(p);

	/* A resolver that never answers: the deadline still holds. */
	snprintf(url, sizeof(url), "http://stuck.invalid:%d/", refused);
	p = pool_for(url, NULL, NULL, silent_dns);
	post_wait(p, "x", 250, &res);
	is_int(res.outcome, UPSTREAM_TIMEOUT, "silent DNS: timeout");
	ok(strstr(res.reason, "resolving") != NULL, "reason says it was resolving");
	printf("# reason: %s\n", res.reason);
	upstream_pool_free(p);
	run_for(20);
}

static void test_names(struct sink *s)
{
	struct upstream_pool *p;
	struct result res;
	char url[128], want[64];

	snprintf(url, sizeof(url), "http://localhost:%d/ok", s->port);
	p = pool_for(url, NULL, NULL, dns);
	post_wait(p, "x", 2000, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.status == 200, "name from the hosts file");
	snprintf(want, sizeof(want), "Host: localhost:%d\n", s->port);
	ok(starts_with(s->headers, want), "Host header carries the name and port");
	upstream_pool_free(p);

	/* dual.test has ::1 listed first and 127.0.0.1 second; the sink
	 * listens on IPv4 only, so success shows IPv4 is preferred. */
	snprintf(url, sizeof(url), "http://dual.test:%d/ok", s->port);
	p = pool_for(url, NULL, NULL, dns);
	post_wait(p, "x", 2000, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.status == 200,
	   "dual-stack name: IPv4 address preferred");
	upstream_pool_free(p);
	run_for(20);
}

static void test_misbehaving(void)
{
	struct raw_server rs;
	struct upstream_pool *p;
	struct result res, res2;
	char url[128];

	raw_start(&rs, RAW_CLOSE_MIDBODY);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
	p = pool_for(url, NULL, NULL, NULL);
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_PROTOCOL_ERROR, "close mid-response: protocol_error");
	ok(starts_with(res.reason, "connection closed mid-response after"),
	   "reason: closed mid-response");
	printf("# reason: %s\n", res.reason);
	upstream_pool_free(p);
	raw_stop(&rs);

	raw_start(&rs, RAW_RESET_MIDBODY);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
	p = pool_for(url, NULL, NULL, NULL);
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_PROTOCOL_ERROR, "reset mid-response: protocol_error");
	ok(strstr(res.reason, "mid-response") != NULL, "reason: mid-response");
	printf("# reason: %s\n", res.reason);
	is_int(rs.n_conns, 1, "a failure after response bytes is not retried");
	upstream_pool_free(p);
	raw_stop(&rs);

	raw_start(&rs, RAW_GARBAGE);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
	p = pool_for(url, NULL, NULL, NULL);
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_PROTOCOL_ERROR, "garbage status line: protocol_error");
	ok(starts_with(res.reason, "malformed response"), "reason: malformed response");
	printf("# reason: %s\n", res.reason);
	upstream_pool_free(p);
	raw_stop(&rs);

	raw_start(&rs, RAW_CLOSE_NO_REPLY);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
	p = pool_for(url, NULL, NULL, NULL);
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_PROTOCOL_ERROR, "closed without reply: protocol_error");
	ok(strstr(res.reason, "before any response byte") != NULL, "reason: before any byte");
	printf("# reason: %s\n", res.reason);
	is_int(rs.n_conns, 1, "a fresh connection is not retried");
	upstream_pool_free(p);
	raw_stop(&rs);

	/* The server closes an idle keep-alive connection just as the next
	 * request arrives: retried once on a fresh connection. */
	raw_start(&rs, RAW_KEEPALIVE_CLOSER);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
	p = pool_for(url, NULL, NULL, NULL);
	post_wait(p, "x", 2000, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.status == 200, "first request answered");
	post_wait(p, "x", 2000, &res2);
	ok(res2.outcome == UPSTREAM_RESPONSE && res2.status == 200,
	   "request on a stale keep-alive connection succeeds after one retry");
	is_int(rs.n_conns, 2, "the retry used a new connection");
	is_int(rs.n_requests, 3, "the upstream saw three requests");
	is_int(res2.calls, 1, "one callback for the retried request");
	upstream_pool_free(p);
	raw_stop(&rs);
	run_for(20);
}

/* ------------------------------------------------------------------ */
/* the response reader against scripted answers */

struct answer_case {
	const char *name;
	const char *script;
	int close_after, trickle;
	enum upstream_outcome outcome;
	int status;
	const char *body;    /* for a response */
	const char *reason;  /* how the reason starts */
	int conns;           /* the connections two posts took: 1 when reused */
	const char *capture; /* "Retry-After|Content-Type" as captured, or NULL */
};

#define CHUNKED_OK                                                                          \
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" \
	"5;name=value\r\nhello\r\n6 ; x ; y=\"z\"\r\n world\r\n0\r\nX-Trailer: t\r\n"       \
	"Server-Timing: 1\r\n\r\n"
#define OK_2 "Content-Length: 2\r\n\r\nok"

static const struct answer_case answer_cases[] = {
	{ "chunked, extensions and trailers", CHUNKED_OK, 0, 0, UPSTREAM_RESPONSE, 200,
	  "hello world", "HTTP 200 OK", 1, "|text/plain" },
	{ "chunked, one byte a read", CHUNKED_OK, 0, 1, UPSTREAM_RESPONSE, 200, "hello world",
	  "HTTP 200 OK", 1, "|text/plain" },
	{ "1xx interim answers skipped",
	  "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nRetry-After: 1\r\n\r\n"
	  "HTTP/1.1 201 Created\r\nRetry-After: 7\r\n" OK_2,
	  0, 0, UPSTREAM_RESPONSE, 201, "ok", "HTTP 201 Created", 1, "7|" },
	{ "1xx, one byte a read", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n" OK_2, 0,
	  1, UPSTREAM_RESPONSE, 202, "ok", "HTTP 202 Accepted", 1, NULL },
	{ "204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", 0, 0, UPSTREAM_RESPONSE, 204, "",
	  "HTTP 204 No Content", 1, "|" },
	{ "304 has no body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 0, 0,
	  UPSTREAM_RESPONSE, 304, "", "HTTP 304 Not Modified", 1, NULL },
	{ "no length: the body runs until the close",
	  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close", 1, 0,
	  UPSTREAM_RESPONSE, 200, "until the close", "HTTP 200 OK", 2, NULL },
	{ "until the close, one byte a read", "HTTP/1.1 200 Fine\r\n\r\nuntil the close", 1, 1,
	  UPSTREAM_RESPONSE, 200, "until the close", "HTTP 200 Fine", 2, NULL },
	{ "Connection: close is not reused",
	  "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n" OK_2, 0, 0, UPSTREAM_RESPONSE, 200,
	  "ok", "HTTP 200 OK", 2, NULL },
	{ "HTTP/1.0 is not reused", "HTTP/1.0 200 OK\r\n" OK_2, 0, 0, UPSTREAM_RESPONSE, 200, "ok",
	  "HTTP 200 OK", 2, NULL },
	{ "HTTP/1.0 with keep-alive is reused",
	  "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n" OK_2, 0, 0, UPSTREAM_RESPONSE, 200, "ok",
	  "HTTP 200 OK", 1, NULL },
	{ "an empty phrase", "HTTP/1.1 200 \r\n" OK_2, 0, 0, UPSTREAM_RESPONSE, 200, "ok",
	  "HTTP 200", 1, NULL },
	{ "the same Content-Length twice",
	  "HTTP/1.1 200 OK\r\n"
	  "Content-Length: 2\r\n" OK_2,
	  0, 0, UPSTREAM_RESPONSE, 200, "ok", "HTTP 200 OK", 1, NULL },
	{ "bytes after the answer: not reused", "HTTP/1.1 200 OK\r\n" OK_2 "HTTP/1.1 200 OK\r\n", 0,
	  0, UPSTREAM_RESPONSE, 200, "ok", "HTTP 200 OK", 2, NULL },
	{ "chunk size 0x2",
	  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n", 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response chunk", 2, NULL },
	{ "chunk size +2",
	  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nok\r\n0\r\n\r\n", 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response chunk", 2, NULL },
	{ "a chunk longer than its size",
	  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n", 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response chunk", 2, NULL },
	{ "chunks over the body limit",
	  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n300\r\n", 0, 0, UPSTREAM_TOO_LARGE,
	  0, NULL, "response body larger than 700 bytes", 2, NULL },
	{ "Content-Length over the body limit", "HTTP/1.1 200 OK\r\nContent-Length: 701\r\n\r\n", 0,
	  0, UPSTREAM_TOO_LARGE, 0, NULL, "response body larger than 700 bytes", 2, NULL },
	{ "status line garbage", "HTTP/1.1 2OO OK\r\n" OK_2, 0, 0, UPSTREAM_PROTOCOL_ERROR, 0, NULL,
	  "malformed response status line", 2, NULL },
	{ "status code 200abc", "HTTP/1.1 200abc OK\r\n" OK_2, 0, 0, UPSTREAM_PROTOCOL_ERROR, 0,
	  NULL, "malformed response status line", 2, NULL },
	{ "status code 600", "HTTP/1.1 600 Big\r\n" OK_2, 0, 0, UPSTREAM_PROTOCOL_ERROR, 0, NULL,
	  "malformed response status line", 2, NULL },
	{ "HTTP/1.2", "HTTP/1.2 200 OK\r\n" OK_2, 0, 0, UPSTREAM_PROTOCOL_ERROR, 0, NULL,
	  "malformed response status line", 2, NULL },
	{ "a bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 0, 0, UPSTREAM_PROTOCOL_ERROR, 0,
	  NULL, "malformed response status line", 2, NULL },
	{ "a bare LF in the headers", "HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok", 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response header line", 2, NULL },
	{ "an obs-fold continuation line", "HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n" OK_2, 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response header line", 2, NULL },
	{ "a space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response header line", 2, NULL },
	{ "a control character in a value", "HTTP/1.1 200 OK\r\nX-A: a\001b\r\n" OK_2, 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response header line", 2, NULL },
	{ "Content-Length +2", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response Content-Length", 2, NULL },
	{ "two different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" OK_2, 0, 0,
	  UPSTREAM_PROTOCOL_ERROR, 0, NULL, "two different Content-Length headers in the answer", 2,
	  NULL },
	{ "Transfer-Encoding with a Content-Length",
	  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" OK_2, 0, 0, UPSTREAM_PROTOCOL_ERROR,
	  0, NULL, "malformed response framing", 2, NULL },
	{ "a coding other than chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", 1,
	  0, UPSTREAM_PROTOCOL_ERROR, 0, NULL, "malformed response framing", 2, NULL },
	{ "closed inside a chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
	  1, 0, UPSTREAM_PROTOCOL_ERROR, 0, NULL, "connection closed mid-response after", 2, NULL },
};

static void answer_check(const struct answer_case *c, const struct result *res)
{
	char name[160], got[256];

	snprintf(name, sizeof(name), "%s: %s", c->name,
		 c->outcome == UPSTREAM_RESPONSE ? "response" : upstream_outcome_name(c->outcome));
	if (!ok(res->outcome == c->outcome && res->status == c->status &&
			starts_with(res->reason, c->reason) &&
			(!c->body || strcmp(res->body, c->body) == 0),
		name))
		printf("#   got %s %d, reason '%s', body '%s'\n",
		       upstream_outcome_name(res->outcome), res->status, res->reason, res->body);
	if (c->capture) {
		snprintf(got, sizeof(got), "%s|%s", res->retry_after, res->content_type);
		snprintf(name, sizeof(name), "%s: Retry-After and Content-Type", c->name);
		is_str(got, c->capture, name);
	}
}

static void test_answers(void)
{
	struct upstream_limits lim;
	struct raw_server rs;
	struct result res, res2;
	char url[128], name[160];
	size_t i;

	upstream_limits_default(&lim);
	lim.max_response_body = 700;
	lim.max_response_headers = 4096;
	for (i = 0; i < sizeof(answer_cases) / sizeof(answer_cases[0]); i++) {
		const struct answer_case *c = &answer_cases[i];
		struct upstream_pool *p;

		raw_start(&rs, RAW_SCRIPT);
		rs.script = c->script;
		rs.script_len = strlen(c->script);
		rs.close_after = c->close_after;
		rs.trickle = c->trickle;
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
		p = pool_for(url, NULL, &lim, NULL);
		post_wait(p, "x", 3000, &res);
		answer_check(c, &res);
		post_wait(p, "x", 3000, &res2);
		snprintf(name, sizeof(name), "%s: the next post %s", c->name,
			 c->conns == 1 ? "on the same connection" : "on a new connection");
		ok(res2.outcome == res.outcome && rs.n_conns == c->conns, name);
		upstream_pool_free(p);
		raw_stop(&rs);
	}
	run_for(20);
}

/* A byte arriving on an idle kept-alive connection: nobody asked for it, so
 * the connection is closed and the next post opens a new one. */
static void test_idle_byte(void)
{
	struct raw_server rs;
	struct upstream_pool *p;
	struct result res;
	char url[128];

	raw_start(&rs, RAW_SCRIPT);
	rs.script = "HTTP/1.1 200 OK\r\n" OK_2;
	rs.script_len = strlen(rs.script);
	rs.late = "HTTP/1.1 200 OK\r\n";
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
	p = pool_for(url, NULL, NULL, NULL);
	post_wait(p, "x", 2000, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.status == 200,
	   "answered before the stray bytes");
	is_int((int)upstream_pool_connections(p), 1, "  the connection idles in the pool");
	run_for(150);
	is_int((int)upstream_pool_connections(p), 0, "bytes on an idle connection close it");
	post_wait(p, "x", 2000, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && rs.n_conns == 2,
	   "  the next post on a new connection");
	upstream_pool_free(p);
	raw_stop(&rs);
	run_for(20);
}

/* A header line past max_response_headers, whole or a byte a read; and one
 * that fits exactly. */
static void test_answer_head_limit(void)
{
	static char big[4200];
	struct upstream_limits lim;
	struct raw_server rs;
	struct result res;
	char url[128];
	int trickle;
	size_t n;

	upstream_limits_default(&lim);
	lim.max_response_headers = 4096;
	for (trickle = 0; trickle < 2; trickle++) {
		struct upstream_pool *p;

		n = (size_t)snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nX-Big: ");
		memset(big + n, 'h', 4100 - n);
		memcpy(big + 4100, "\r\n" OK_2, sizeof("\r\n" OK_2));
		raw_start(&rs, RAW_SCRIPT);
		rs.script = big;
		rs.script_len = strlen(big);
		rs.trickle = trickle * 61;
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
		p = pool_for(url, NULL, &lim, NULL);
		post_wait(p, "x", 8000, &res);
		is_int(res.outcome, UPSTREAM_TOO_LARGE,
		       trickle ? "headers over the limit, 61 bytes a read: too_large"
			       : "headers over the limit: too_large");
		is_str(res.reason, "response headers larger than 4096 bytes",
		       "  the reason names the limit");
		upstream_pool_free(p);
		raw_stop(&rs);
	}
	/* status line and headers of exactly 4096 bytes, blank line included */
	n = (size_t)snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: ");
	memset(big + n, 'h', 4096 - 4 - n);
	memcpy(big + 4096 - 4, "\r\n\r\nok", sizeof("\r\n\r\nok"));
	raw_start(&rs, RAW_SCRIPT);
	rs.script = big;
	rs.script_len = strlen(big);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rs.port);
	{
		struct upstream_pool *p = pool_for(url, NULL, &lim, NULL);

		post_wait(p, "x", 3000, &res);
		ok(res.outcome == UPSTREAM_RESPONSE && strcmp(res.body, "ok") == 0,
		   "a head of exactly max_response_headers bytes is accepted");
		upstream_pool_free(p);
	}
	raw_stop(&rs);
	run_for(20);
}

static void test_too_large(struct sink *s)
{
	struct upstream_limits lim;
	struct upstream_pool *p;
	struct result res;
	char url[128];

	upstream_limits_default(&lim);
	lim.max_response_body = 1000;
	lim.max_response_headers = 4096;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/big", s->port);
	p = pool_for(url, NULL, &lim, NULL);
	s->big_size = 1000;
	post_wait(p, "x", 2000, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.body_len == 1000,
	   "body exactly at the limit is accepted");
	s->big_size = 1001;
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_TOO_LARGE, "body one byte over the limit: too_large");
	is_str(res.reason, "response body larger than 1000 bytes", "reason names the limit");
	upstream_pool_free(p);

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/bigchunked", s->port);
	p = pool_for(url, NULL, &lim, NULL);
	s->big_size = 5000;
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_TOO_LARGE, "chunked body over the limit: too_large");
	s->big_size = 900;
	post_wait(p, "x", 2000, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.body_len == 900, "chunked body under the limit");
	upstream_pool_free(p);

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/bighdr", s->port);
	p = pool_for(url, NULL, &lim, NULL);
	s->big_size = 5000;
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_TOO_LARGE, "headers over the limit: too_large");
	is_str(res.reason, "response headers larger than 4096 bytes", "reason names the limit");
	s->big_size = 1000;
	post_wait(p, "x", 2000, &res);
	is_int(res.outcome, UPSTREAM_RESPONSE, "headers under the limit accepted");
	upstream_pool_free(p);
	run_for(20);
}

static void test_ipv6(void)
{
	struct sink s6;
	struct upstream_pool *p;
	struct result res;
	char url[128], want[64];

	if (sink_start(&s6, "::1", NULL) < 0) {
		/* No IPv6 loopback on this machine: the pool must still fail
		 * cleanly rather than hang or crash. */
		printf("# no IPv6 loopback here: checking the failure path instead\n");
		sink_stop(&s6);
		p = pool_for("http://[::1]:9/", NULL, NULL, NULL);
		post_wait(p, "x", 2000, &res);
		is_int(res.outcome, UPSTREAM_CONNECT_FAILED,
		       "POST to [::1] fails as connect_failed");
		upstream_pool_free(p);
		return;
	}
	snprintf(url, sizeof(url), "http://[::1]:%d/created", s6.port);
	p = pool_for(url, NULL, NULL, NULL);
	post_wait(p, "x", 2000, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.status == 201, "POST to [::1]");
	snprintf(want, sizeof(want), "Host: [::1]:%d\n", s6.port);
	ok(starts_with(s6.headers, want), "Host header keeps the brackets");
	upstream_pool_free(p);
	sink_stop(&s6);
	run_for(20);
}

static void test_tls(int refused, struct sink *plain)
{
	SSL_CTX *good_ctx, *wrong_ctx, *rogue_ctx;
	struct sink good, wrong, rogue, idle;
	struct upstream_tls *tls = NULL, *sys = NULL, *bad = NULL;
	struct upstream_pool *p;
	struct raw_server rs;
	struct bridge_error err;
	struct result res;
	char path[256], url[160];
	int i, n;

	ok(make_ca("ca") == 0 && make_ca("rogue_ca") == 0, "test CAs generated");
	ok(make_leaf("good", "ca", "IP:127.0.0.1,IP:::1,DNS:localhost") == 0 &&
		   make_leaf("wrong", "ca", "DNS:wrong.example") == 0 &&
		   make_leaf("rogue", "rogue_ca", "IP:127.0.0.1,DNS:localhost") == 0,
	   "server certificates generated");
	good_ctx = server_ctx("good");
	wrong_ctx = server_ctx("wrong");
	rogue_ctx = server_ctx("rogue");
	if (!ok(good_ctx && wrong_ctx && rogue_ctx, "server TLS contexts"))
		return;
	ok(sink_start(&good, "127.0.0.1", good_ctx) == 0 &&
		   sink_start(&wrong, "127.0.0.1", wrong_ctx) == 0 &&
		   sink_start(&rogue, "127.0.0.1", rogue_ctx) == 0,
	   "TLS sinks listening");

	snprintf(path, sizeof(path), "%s/ca.pem", tmpdir);
	bridge_error_clear(&err);
	is_int(upstream_tls_new(path, &tls, &err), 0, "client TLS context with the test CA");
	is_int(upstream_tls_new(NULL, &sys, &err), 0, "client TLS context with the system store");
	snprintf(path, sizeof(path), "%s/missing.pem", tmpdir);
	is_int(upstream_tls_new(path, &bad, &err), -1, "missing CA file refused");
	ok(strstr(err.message, "missing.pem") != NULL && bad == NULL, "  message names the file");
	printf("# message: %s\n", err.message);

	/* IP literal: certificate checked against the IP SAN, no SNI. */
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", good.port);
	p = pool_for(url, tls, NULL, NULL);
	post_wait(p, "secret", TLS_WAIT_MS, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.status == 200, "HTTPS to 127.0.0.1");
	if (res.outcome != UPSTREAM_RESPONSE)
		printf("# reason: %s\n", res.reason);
	is_str(good.body, "secret", "body arrived over TLS");
	is_str(good.sni, "", "no SNI for an IP literal");
	for (i = n = 0; i < 5; i++) {
		post_wait(p, "again", TLS_WAIT_MS, &res);
		n += res.status == 200;
	}
	is_int(n, 5, "five more HTTPS requests");
	is_int(good.n_ports, 1, "TLS keep-alive: one connection for six requests");
	upstream_pool_free(p);

	/* Host name: SNI sent and checked against the DNS SAN. */
	snprintf(url, sizeof(url), "https://localhost:%d/ok", good.port);
	p = pool_for(url, tls, NULL, dns);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.status == 200, "HTTPS to localhost");
	is_str(good.sni, "localhost", "SNI carries the host name");
	upstream_pool_free(p);

	snprintf(url, sizeof(url), "https://localhost:%d/ok", wrong.port);
	p = pool_for(url, tls, NULL, dns);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	is_int(res.outcome, UPSTREAM_TLS_FAILED, "certificate for another name: tls_failed");
	ok(starts_with(res.reason, "certificate verify failed: hostname mismatch"),
	   "reason: hostname mismatch");
	printf("# reason: %s\n", res.reason);
	is_int(wrong.n_requests, 0, "nothing was sent to the wrong server");
	upstream_pool_free(p);

	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", wrong.port);
	p = pool_for(url, tls, NULL, NULL);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	is_int(res.outcome, UPSTREAM_TLS_FAILED, "certificate without the IP: tls_failed");
	ok(starts_with(res.reason, "certificate verify failed: IP address mismatch"),
	   "reason: IP address mismatch");
	upstream_pool_free(p);

	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", rogue.port);
	p = pool_for(url, tls, NULL, NULL);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	is_int(res.outcome, UPSTREAM_TLS_FAILED, "untrusted CA: tls_failed");
	ok(starts_with(res.reason, "certificate verify failed: unable to get local issuer "
				   "certificate"),
	   "reason: unable to get local issuer certificate");
	printf("# reason: %s\n", res.reason);
	is_int(rogue.n_requests, 0, "nothing was sent to the untrusted server");
	upstream_pool_free(p);

	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", good.port);
	p = pool_for(url, sys, NULL, NULL);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	ok(res.outcome == UPSTREAM_TLS_FAILED && strstr(res.reason, "certificate verify failed"),
	   "system trust store does not trust the test CA");
	upstream_pool_free(p);

	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", plain->port);
	p = pool_for(url, tls, NULL, NULL);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	is_int(res.outcome, UPSTREAM_TLS_FAILED, "HTTPS to a plain HTTP server: tls_failed");
	ok(starts_with(res.reason, "TLS handshake failed: "), "reason: TLS handshake failed");
	printf("# reason: %s\n", res.reason);
	upstream_pool_free(p);

	/* OpenSSL 3 reports a close without close_notify as an error unless
	 * SSL_OP_IGNORE_UNEXPECTED_EOF is set; a close-delimited body needs it. */
	raw_start(&rs, RAW_CLOSE_DELIMITED);
	rs.tls = good_ctx;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", rs.port);
	p = pool_for(url, tls, NULL, NULL);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	ok(res.outcome == UPSTREAM_RESPONSE && res.status == 200,
	   "TLS body delimited by a close without close_notify");
	if (res.outcome != UPSTREAM_RESPONSE)
		printf("# reason: %s\n", res.reason);
	is_str(res.body, "close-delimited body", "  whole body delivered");
	upstream_pool_free(p);
	raw_stop(&rs);

	raw_start(&rs, RAW_ACCEPT_CLOSE);
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", rs.port);
	p = pool_for(url, tls, NULL, NULL);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	is_int(res.outcome, UPSTREAM_TLS_FAILED, "peer closes during the handshake: tls_failed");
	printf("# reason: %s\n", res.reason);
	upstream_pool_free(p);
	raw_stop(&rs);

	snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", refused);
	p = pool_for(url, tls, NULL, NULL);
	post_wait(p, "x", TLS_WAIT_MS, &res);
	is_int(res.outcome, UPSTREAM_CONNECT_FAILED, "HTTPS to a refused port: connect_failed");
	ok(starts_with(res.reason, "connection refused"), "reason: connection refused");
	printf("# reason: %s\n", res.reason);
	upstream_pool_free(p);

	/* A TLS server that drops idle keep-alive connections without
	 * close_notify: the pool notices and the next request reconnects. */
	if (ok(sink_start(&idle, "127.0.0.1", good_ctx) == 0, "TLS sink with idle timeout")) {
		/* long enough for a handshake and a request under valgrind */
		struct timeval tv = { 1, 0 };

		evhttp_set_timeout_tv(idle.http, &tv);
		snprintf(url, sizeof(url), "https://127.0.0.1:%d/ok", idle.port);
		p = pool_for(url, tls, NULL, NULL);
		post_wait(p, "x", TLS_WAIT_MS, &res);
		ok(res.status == 200, "first request");
		run_for(2000);
		post_wait(p, "x", TLS_WAIT_MS, &res);
		ok(res.outcome == UPSTREAM_RESPONSE && res.status == 200,
		   "request after the server closed the idle TLS connection");
		is_int(idle.n_ports, 2, "it used a new connection");
		upstream_pool_free(p);
		sink_stop(&idle);
	}

	/* pool_free with a TLS request in flight releases everything */
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/slow", good.port);
	p = pool_for(url, tls, NULL, NULL);
	post(p, NULL, 0, "x", 1, 5000, &res);
	run_for(150);
	upstream_pool_free(p);
	ok(res.calls == 1 && res.outcome == UPSTREAM_CANCELLED,
	   "TLS request cancelled by pool_free");
	run_for(50);

	sink_stop(&good);
	sink_stop(&wrong);
	sink_stop(&rogue);
	upstream_tls_free(tls);
	upstream_tls_free(sys);
	SSL_CTX_free(good_ctx);
	SSL_CTX_free(wrong_ctx);
	SSL_CTX_free(rogue_ctx);
	run_for(20);
}

int main(void)
{
	struct evdns_server_port *nx_port = NULL;
	struct evdns_base *silent_dns;
	struct sink plain;
	char hosts[128], cmd[160];
	int nx_fd, nx_port_num, silent_fd, silent_port, refused_fd = -1, refused;

	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/upstream-test-XXXXXX");
	if (!base || !mkdtemp(tmpdir)) {
		ok(0, "test setup");
		return tap_done();
	}

	test_url_parse();
	test_url_redact();
	test_misc();

	/* resolver: hosts file, and an NXDOMAIN server for everything else */
	write_file(tmpdir, "hosts", "127.0.0.1 localhost\n::1 dual.test\n127.0.0.1 dual.test\n");
	snprintf(hosts, sizeof(hosts), "%s/hosts", tmpdir);
	dns = evdns_base_new(base, 0);
	nx_fd = udp_socket(&nx_port_num);
	ok(dns && evdns_base_load_hosts(dns, hosts) == 0 && nx_fd >= 0, "test resolver");
	nx_port = evdns_add_server_port_with_base(base, nx_fd, 0, dns_nx_cb, NULL);
	snprintf(cmd, sizeof(cmd), "127.0.0.1:%d", nx_port_num);
	evdns_base_nameserver_ip_add(dns, cmd);
	silent_dns = evdns_base_new(base, 0);
	silent_fd = udp_socket(&silent_port);
	snprintf(cmd, sizeof(cmd), "127.0.0.1:%d", silent_port);
	evdns_base_nameserver_ip_add(silent_dns, cmd);

	refused = refused_port(&refused_fd);
	ok(refused > 0, "a refusing port");
	if (!ok(sink_start(&plain, "127.0.0.1", NULL) == 0, "HTTP sink listening"))
		return tap_done();

	test_basic(&plain);
	test_statuses(&plain);
	test_keepalive(&plain);
	test_concurrency(&plain);
	test_timeout_cancel(&plain);
	test_pool_free_pending(&plain);
	test_free_in_callback(&plain);
	test_validation(&plain);
	test_connect_failures(refused, silent_dns);
	test_names(&plain);
	test_misbehaving();
	test_answers();
	test_idle_byte();
	test_answer_head_limit();
	test_too_large(&plain);
	test_ipv6();
	test_tls(refused, &plain);

	sink_stop(&plain);
	run_for(50);
	evdns_close_server_port(nx_port);
	evdns_base_free(dns, 1);
	evdns_base_free(silent_dns, 1);
	run_for(20);
	evutil_closesocket(nx_fd);
	evutil_closesocket(silent_fd);
	evutil_closesocket(refused_fd);
	event_base_free(base);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmpdir);
	return tap_done();
}
