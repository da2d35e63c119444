/* The webhook listener's connections and answers (see httpd.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "bridge/clock.h"
#include "bridge/guard.h"
#include "bridge/httpd.h"
#include "bridge/upstream.h"

/* The request arena's block: a head and its header table fit in it (a
 * larger head takes a second block); 8192 cost 5 MB at 1,000 connections. */
#define HEAD_BLOCK  2048
#define LINGER_MS   5000 /* a closing connection is drained at most that long */
#define REFUSAL_MAX 1024 /* the longest refusal text */
#define SEND_CHUNKS 8    /* the chunks of an answer's body sent with its head */

struct httpd_conn {
	TAILQ_ENTRY(httpd_conn) link;
	struct httpd *h;
	struct bufferevent *bev;
	struct event rd_ev; /* a plain connection's reading (see conn_reading) */
	struct httpd_reader rd;
	struct httpd_request req;
	struct arena arena;
	char peer[INET6_ADDRSTRLEN];
	unsigned port;
	long long request_start; /* ms: first byte of the request being read; 0: none */
	long long linger_until;  /* ms, once lingering */
	int pending;             /* the handler has the request */
	int closing;             /* close once the answers queued are out */
	int lingering;           /* shut for writing, input dropped until the peer closes */
	int no_linger;           /* closed at once after the answer (a deadline's 408) */
	int peer_eof;            /* the peer sent its FIN */
	int dead;                /* the socket failed: the pending answer is dropped */
	int in_process;          /* inside process(): it goes on by itself */
	int sending;             /* inside a direct write: the write callback waits */
	int read_paused;         /* input held while the handler has a request */
};

static int is_plain(const struct httpd_conn *c);

struct httpd {
	struct event_base *base;
	struct evconnlistener *listener;
	SSL_CTX *tls;
	httpd_handler handler;
	void *arg;
	struct httpd_limits lim;
	TAILQ_HEAD(, httpd_conn) conns;
	struct event *sweep;
	atomic_int own_open;       /* connections, when no share counts them */
	atomic_int *open;          /* the count: own_open, or this thread's slot of the share */
	struct httpd_share *share; /* NULL: this thread accepts alone */
	int share_index;
	struct event *accept_again; /* the listener back on, a millisecond after a pause */
	unsigned long kills;
};

struct httpd_share {
	int threads;
	atomic_int open[]; /* connections each thread holds */
};

static void process(struct httpd_conn *c);

static void conn_free(struct httpd_conn *c)
{
	atomic_fetch_sub(c->h->open, 1);
	TAILQ_REMOVE(&c->h->conns, c, link);
	if (is_plain(c))
		event_del(&c->rd_ev);
	bufferevent_free(c->bev);
	arena_free(&c->arena);
	if (c->req.body)
		evbuffer_free(c->req.body);
	free(c);
}

/* The request's memory back for the next one (the arena keeps a block). */
static void request_reset(struct httpd_conn *c)
{
	struct evbuffer *body = c->req.body;

	arena_reset(&c->arena);
	evbuffer_drain(body, evbuffer_get_length(body));
	memset(&c->req, 0, sizeof(c->req));
	c->req.body = body;
	c->req.arena = &c->arena;
	c->req.conn = c;
	c->req.peer = c->peer;
	c->req.peer_port = c->port;
}

static int is_plain(const struct httpd_conn *c)
{
	return c->h->tls == NULL;
}

/* Reading on or off.  A plain connection is read by rd_ev, not by its
 * bufferevent, which asks the kernel how much is readable (an ioctl) before
 * every read; the idle timeout goes with it, as the bufferevent's would. */
static void conn_reading(struct httpd_conn *c, int on)
{
	upstream_bev_reading(c->bev, is_plain(c) ? &c->rd_ev : NULL, on, c->h->lim.idle_timeout_ms);
}

/* Out now on a plain socket when it takes it all: 1; else the bufferevent
 * writes the rest and the write callback follows. */
static int conn_flush(struct httpd_conn *c)
{
	int done;

	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		return 1;
	if (!is_plain(c))
		return 0;
	c->sending = 1;
	done = upstream_bev_write_now(c->bev);
	c->sending = 0;
	if (!done)
		bufferevent_enable(c->bev, EV_WRITE);
	return done;
}

/* Shut for writing and drop what still comes (the client reads the answer
 * instead of a reset); freed at the peer's close or after LINGER_MS. */
static void linger_start(struct httpd_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	if (c->peer_eof || !is_plain(c) || c->no_linger) {
		if (c->no_linger) /* the rest of the drip is refused by the peer's stack */
			shutdown((int)bufferevent_getfd(c->bev), SHUT_RDWR);
		conn_free(c);
		return;
	}
	c->lingering = 1;
	c->linger_until = clock_mono_ms() + LINGER_MS;
	evbuffer_drain(in, evbuffer_get_length(in));
	shutdown((int)bufferevent_getfd(c->bev), SHUT_WR);
	conn_reading(c, 1);
}

/* Everything queued is out. */
static void all_out(struct httpd_conn *c)
{
	if (c->closing)
		linger_start(c);
	else if (!c->in_process && !c->pending)
		process(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
	struct httpd_conn *c = arg;

	if (c->sending)
		return;
	if (is_plain(c))
		bufferevent_disable(bev, EV_WRITE);
	all_out(c);
}

static void conn_write(struct httpd_conn *c, const char *data, size_t n)
{
	evbuffer_add(bufferevent_get_output(c->bev), data, n);
	if (conn_flush(c) && !c->in_process)
		all_out(c);
}

/* A request the reader refused: its answer, then close. */
static void refuse(struct httpd_conn *c)
{
	char text[REFUSAL_MAX];
	size_t n = httpd_refusal_text(&c->rd, text, sizeof(text));
	struct evbuffer *in = bufferevent_get_input(c->bev);

	evbuffer_drain(in, evbuffer_get_length(in));
	c->closing = 1;
	c->request_start = 0;
	conn_write(c, text, n);
}

/* Requests read and handed over, one at a time, while the input has them. */
static void process(struct httpd_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev), *out = bufferevent_get_output(c->bev);
	enum httpd_read_rc rc;

	if (c->read_paused) {
		c->read_paused = 0;
		conn_reading(c, 1);
	}
	c->in_process = 1;
	/* one answer on the way at a time: a client that does not read its
	 * answers gets no more of them */
	while (!c->pending && !c->closing && evbuffer_get_length(out) == 0) {
		if (!c->request_start && evbuffer_get_length(in))
			c->request_start = clock_mono_ms();
		rc = httpd_read(&c->rd, in, &c->req);
		if (rc == HTTPD_READ_HEAD && c->req.expect_continue && !evbuffer_get_length(in))
			conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		if (rc == HTTPD_READ_HEAD && evbuffer_get_length(out) == 0)
			continue;
		if (rc == HTTPD_READ_HEAD)
			break; /* the body is read once the 100 is out */
		if (rc == HTTPD_READ_MORE) {
			c->closing = c->peer_eof; /* nothing more can come */
			break;
		}
		if (rc == HTTPD_READ_REFUSED) {
			refuse(c);
			break;
		}
		c->pending = 1;
		c->request_start = 0;
		c->h->handler(&c->req, c->h->arg);
	}
	c->in_process = 0;
	if (c->closing && !c->pending && evbuffer_get_length(out) == 0)
		linger_start(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct httpd_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (c->lingering) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	if (c->pending || evbuffer_get_length(bufferevent_get_output(bev))) {
		/* pipelined while an answer is due or on its way: held, within bounds */
		if (evbuffer_get_length(in) > c->rd.max_head + c->rd.limits.ceiling) {
			conn_reading(c, 0);
			c->read_paused = 1;
		}
		return;
	}
	process(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct httpd_conn *c = arg;

	if (what & BEV_EVENT_CONNECTED)
		return; /* the TLS handshake is done */
	if ((what & BEV_EVENT_TIMEOUT) && c->pending) {
		/* idle only while the handler works: the timed-out side back on */
		if (what & BEV_EVENT_READING)
			conn_reading(c, 1);
		else
			bufferevent_enable(bev, EV_WRITE);
		return;
	}
	if ((what & BEV_EVENT_EOF) && !c->lingering) {
		c->peer_eof = 1;
		if (c->pending || c->closing)
			return; /* the answer still goes out */
		process(c);
		return;
	}
	if (c->pending) {
		c->dead = 1;
		conn_reading(c, 0);
		bufferevent_disable(bev, EV_WRITE);
		return;
	}
	conn_free(c);
}

/* A plain connection readable (see conn_reading). */
static void plain_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpd_conn *c = arg;

	upstream_bev_readable(c->bev, &c->rd_ev, what);
}

static void peer_name(struct httpd_conn *c, const struct sockaddr *sa)
{
	const void *addr = NULL;

	if (sa->sa_family == AF_INET) {
		addr = &((const struct sockaddr_in *)sa)->sin_addr;
		c->port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		addr = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		c->port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	}
	if (!addr || !inet_ntop(sa->sa_family, addr, c->peer, sizeof(c->peer)))
		c->peer[0] = '\0';
}

static struct bufferevent *bev_new(struct httpd *h, evutil_socket_t fd)
{
	SSL *ssl;
	struct bufferevent *bev;

	if (!h->tls)
		return bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
	ssl = SSL_new(h->tls);
	if (!ssl)
		return NULL;
	/* the bufferevent owns (and frees) the SSL from here on */
	bev = bufferevent_openssl_socket_new(h->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		SSL_free(ssl);
	return bev;
}

/* 1 when this thread, holding `mine` connections, holds more than one more
 * than another thread: its turn to accept is over for a while. */
static int share_over(const struct httpd *h, int mine)
{
	for (int i = 0; h->share && i < h->share->threads; i++)
		if (i != h->share_index && atomic_load(&h->share->open[i]) + 1 < mine)
			return 1;
	return 0;
}

static void accept_cb(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa,
		      int socklen, void *arg)
{
	struct httpd *h = arg;
	struct httpd_conn *c = calloc(1, sizeof(*c));
	struct timeval tv = { h->lim.idle_timeout_ms / 1000,
			      (h->lim.idle_timeout_ms % 1000) * 1000 };

	(void)socklen;
	if (c)
		c->bev = bev_new(h, fd);
	if (c)
		c->req.body = evbuffer_new();
	if (!c || !c->bev || !c->req.body) {
		if (c && c->bev)
			bufferevent_free(c->bev);
		else
			evutil_closesocket(fd);
		if (c && c->req.body)
			evbuffer_free(c->req.body);
		free(c);
		return;
	}
	c->h = h;
	arena_init(&c->arena, HEAD_BLOCK, 0);
	httpd_reader_init(&c->rd, h->lim.max_head, &h->lim.body);
	peer_name(c, sa);
	request_reset(c);
	TAILQ_INSERT_TAIL(&h->conns, c, link);
	if (share_over(h, atomic_fetch_add(h->open, 1) + 1)) {
		/* libevent's accept loop stops once its listener is off */
		struct timeval ms = { 0, 1000 };

		evconnlistener_disable(lst);
		event_add(h->accept_again, &ms);
	}
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	if (is_plain(c))
		event_assign(&c->rd_ev, h->base, fd, EV_READ | EV_PERSIST, plain_read_cb, c);
	if (h->lim.idle_timeout_ms > 0)
		bufferevent_set_timeouts(c->bev, is_plain(c) ? NULL : &tv, &tv);
	conn_reading(c, 1);
	if (!is_plain(c))
		bufferevent_enable(c->bev, EV_WRITE); /* the handshake writes too */
}

/* ---- deadlines ------------------------------------------------------------ */

/* A request still arriving past its deadline: 408, and closed. */
static void kill_slow(struct httpd_conn *c)
{
	char text[REFUSAL_MAX];
	size_t n = guard_timeout_text(text, sizeof(text));

	c->h->kills++;
	guard_log_deadline(c->h->lim.deadline_ms);
	c->closing = 1;
	c->no_linger = 1;
	c->request_start = 0;
	evbuffer_drain(bufferevent_get_input(c->bev),
		       evbuffer_get_length(bufferevent_get_input(c->bev)));
	conn_write(c, text, n);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpd *h = arg;
	long long now = clock_mono_ms();
	struct httpd_conn *c, *next;

	(void)fd;
	(void)what;
	for (c = TAILQ_FIRST(&h->conns); c; c = next) {
		next = TAILQ_NEXT(c, link);
		if (c->lingering && now > c->linger_until)
			conn_free(c);
		else if (!c->pending && !c->closing && c->request_start &&
			 now - c->request_start > h->lim.deadline_ms)
			kill_slow(c);
	}
}

/* ---- the answer ----------------------------------------------------------- */

/* "Sun, 06 Nov 1994 08:49:37 GMT" for now, made once a second per thread. */
static const char *http_date(void)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	static __thread time_t cached_sec = -1;
	static __thread char date[32];
	time_t now = time(NULL);
	struct tm tm;
	unsigned y;

	if (now == cached_sec)
		return date;
	if (!gmtime_r(&now, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 1000)
		return "Thu, 01 Jan 1970 00:00:00 GMT";
	y = (unsigned)(1900 + tm.tm_year);
	memcpy(date, days[tm.tm_wday % 7], 3);
	memcpy(date + 3, ", 00 ", 5);
	date[5] = (char)('0' + tm.tm_mday / 10);
	date[6] = (char)('0' + tm.tm_mday % 10);
	memcpy(date + 8, months[tm.tm_mon % 12], 3);
	date[11] = ' ';
	date[12] = (char)('0' + y / 1000);
	date[13] = (char)('0' + y / 100 % 10);
	date[14] = (char)('0' + y / 10 % 10);
	date[15] = (char)('0' + y % 10);
	memcpy(date + 16, " 00:00:00 GMT", 14);
	date[17] = (char)('0' + tm.tm_hour / 10);
	date[18] = (char)('0' + tm.tm_hour % 10);
	date[20] = (char)('0' + tm.tm_min / 10);
	date[21] = (char)('0' + tm.tm_min % 10);
	date[23] = (char)('0' + tm.tm_sec / 10);
	date[24] = (char)('0' + tm.tm_sec % 10);
	cached_sec = now;
	return date;
}

static char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

static char *put_header(char *p, const char *name, size_t nl, const char *value)
{
	p = put(p, name, nl);
	p = put(p, ": ", 2);
	p = put(p, value, strlen(value));
	return put(p, "\r\n", 2);
}

static char *put_number(char *p, size_t v)
{
	char digits[24], *d = digits + sizeof(digits);

	do
		*--d = (char)('0' + v % 10);
	while ((v /= 10) > 0);
	return put(p, d, (size_t)(digits + sizeof(digits) - d));
}

/* The headers evhttp added after the handler's, in its order. */
static char *put_framing(char *p, const struct httpd_request *r, int status, size_t len)
{
	int body = status >= 200 && status != 204 && status != 304 && r->method != HTTPD_HEAD;

	if (r->major == 1 && r->minor >= 1 && !httpd_out_find(r, "Date"))
		p = put_header(p, "Date", 4, http_date());
	if (r->minor == 0 && r->conn_keep_alive)
		p = put(p, "Connection: keep-alive\r\n", 24);
	if ((r->minor >= 1 || r->conn_keep_alive) && body && !httpd_out_find(r, "Content-Length") &&
	    !httpd_out_find(r, "Transfer-Encoding")) {
		p = put(p, "Content-Length: ", 16);
		p = put(put_number(p, len), "\r\n", 2);
	}
	if (body && !httpd_out_find(r, "Content-Type"))
		p = put(p, "Content-Type: application/json\r\n", 32);
	if (r->conn_close)
		p = put(p, "Connection: close\r\n", 19);
	return p;
}

/* The status line and every header, into out (room for head_room bytes). */
static size_t head_write(const struct httpd_request *r, int status, const char *phrase, size_t len,
			 char *out)
{
	char *p = put(out, "HTTP/", 5);

	*p++ = (char)('0' + r->major % 10);
	*p++ = '.';
	*p++ = (char)('0' + r->minor % 10);
	*p++ = ' ';
	p = put_number(p, (size_t)(status % 1000));
	*p++ = ' ';
	p = put(p, phrase, strlen(phrase));
	p = put(p, "\r\n", 2);
	for (size_t i = 0; i < r->n_out; i++) {
		const struct httpd_header *h = &r->out[i];

		/* the request asked for close: one Connection header, at the end */
		if (r->conn_close && h->name_len == 10 && strcasecmp(h->name, "Connection") == 0)
			continue;
		p = put_header(p, h->name, h->name_len, h->value);
	}
	p = put_framing(p, r, status, len);
	return (size_t)(put(p, "\r\n", 2) - out);
}

static size_t head_room(const struct httpd_request *r, const char *phrase)
{
	size_t n = 256 + strlen(phrase);

	for (size_t i = 0; i < r->n_out; i++)
		n += r->out[i].name_len + strlen(r->out[i].value) + 4;
	return n;
}

static int closes_after(const struct httpd_request *r)
{
	const char *conn = httpd_out_find(r, "Connection");

	return r->major != 1 || (r->minor == 0 && !r->conn_keep_alive) || r->conn_close ||
	       r->framing_bad || (conn && strcasecmp(conn, "close") == 0);
}

void httpd_send(struct httpd_request *r, int status, const char *phrase, struct evbuffer *body)
{
	struct httpd_conn *c = r->conn;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t len = body && r->method != HTTPD_HEAD ? evbuffer_get_length(body) : 0;
	size_t room = head_room(r, phrase);
	char small[2048], *head = room <= sizeof(small) ? small : arena_alloc(r->arena, room);
	size_t n_head, sent = 0;

	c->pending = 0;
	if (c->dead || !head) {
		conn_free(c);
		return;
	}
	n_head = head_write(r, status, phrase, len, head);
	c->closing |= closes_after(r);
	if (is_plain(c) && evbuffer_get_length(out) == 0) {
		/* nothing queued: the head and the body's first chunks in one
		 * sendmsg, and only what the socket did not take (or the chunks
		 * after SEND_CHUNKS) into the output */
		struct iovec iov[1 + SEND_CHUNKS];
		struct msghdr mh = { .msg_iov = iov };
		int n_body = len ? evbuffer_peek(body, -1, NULL, iov + 1, SEND_CHUNKS) : 0;
		int e = errno;
		ssize_t n;

		iov[0].iov_base = head;
		iov[0].iov_len = n_head;
		mh.msg_iovlen = (size_t)1 + (size_t)(n_body < SEND_CHUNKS ? n_body : SEND_CHUNKS);
		n = sendmsg((int)bufferevent_getfd(c->bev), &mh, MSG_NOSIGNAL);
		errno = e;
		sent = n > 0 ? (size_t)n : 0;
	}
	if (sent < n_head)
		evbuffer_add(out, head + sent, n_head - sent);
	if (sent < n_head + len) {
		evbuffer_drain(body, sent > n_head ? sent - n_head : 0);
		evbuffer_add_buffer(out, body);
	}
	request_reset(c);
	if (conn_flush(c) && !c->in_process)
		all_out(c);
}

/* ---- the server ----------------------------------------------------------- */

struct httpd_share *httpd_share_new(int threads)
{
	struct httpd_share *sh = calloc(1, sizeof(*sh) + (size_t)threads * sizeof(atomic_int));

	if (sh)
		sh->threads = threads;
	return sh;
}

void httpd_share_free(struct httpd_share *sh)
{
	free(sh);
}

static void accept_again_cb(evutil_socket_t unused, short what, void *arg)
{
	struct httpd *h = arg;

	(void)unused;
	(void)what;
	if (h->listener)
		evconnlistener_enable(h->listener);
}

void httpd_set_share(struct httpd *h, struct httpd_share *sh, int index)
{
	h->share = sh;
	h->share_index = index;
	h->open = &sh->open[index]; /* before the first connection: own_open is 0 */
}

struct httpd *httpd_new(struct event_base *base, struct evconnlistener *listener, SSL_CTX *tls,
			httpd_handler handler, void *arg)
{
	struct httpd *h = calloc(1, sizeof(*h));
	struct timeval second = { 1, 0 };

	if (!h)
		return NULL;
	h->base = base;
	h->tls = tls;
	h->handler = handler;
	h->arg = arg;
	TAILQ_INIT(&h->conns);
	h->open = &h->own_open;
	h->sweep = event_new(base, -1, EV_PERSIST, sweep_cb, h);
	h->accept_again = evtimer_new(base, accept_again_cb, h);
	if (!h->sweep || !h->accept_again) {
		if (h->sweep)
			event_free(h->sweep);
		free(h);
		return NULL;
	}
	event_add(h->sweep, &second);
	h->listener = listener;
	evconnlistener_set_cb(listener, accept_cb, h);
	return h;
}

void httpd_set_limits(struct httpd *h, const struct httpd_limits *lim)
{
	h->lim = *lim;
}

void httpd_unlisten(struct httpd *h)
{
	if (h->listener)
		evconnlistener_free(h->listener);
	h->listener = NULL;
}

void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	while (!TAILQ_EMPTY(&h->conns))
		conn_free(TAILQ_FIRST(&h->conns));
	httpd_unlisten(h);
	event_free(h->sweep);
	event_free(h->accept_again);
	free(h);
}

size_t httpd_connections(const struct httpd *h)
{
	return h ? (size_t)atomic_load(h->open) : 0;
}

unsigned long httpd_deadline_kills(const struct httpd *h)
{
	return h ? h->kills : 0;
}
