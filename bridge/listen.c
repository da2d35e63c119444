#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bridge/listen.h"

/* The one way a listening socket is made.  what == NULL: serve's listener
 * (its messages say "listen address", "cannot create a socket", and "address
 * in use" names listen.reuseport); otherwise the listener `what` names, whose
 * failures all read "cannot listen on WHAT ADDR port N: reason". */
static int socket_open(const char *what, const char *address, int port, int reuseport, int backlog,
		       int *ret_fd, int *ret_port, struct bridge_error *err)
{
	struct addrinfo hints, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char service[16];
	int fd, one = 1, rc, e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%d", port);
	rc = getaddrinfo(address, service, &hints, &ai);
	if (rc != 0)
		return bridge_error_set(err, "%s address '%s' is not an IP address: %s",
					what ? what : "listen", address, gai_strerror(rc));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 && what) {
		e = errno;
		goto fail;
	}
	if (fd < 0) {
		e = errno;
		freeaddrinfo(ai);
		return bridge_error_set(err, "cannot create a socket for %s: %s", address,
					strerror(e));
	}
	/* SO_REUSEADDR only lets a restart bind over TIME_WAIT connections; on
	 * Linux it never lets two listeners share a port */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		e = errno;
		goto fail;
	}
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
		e = errno;
		goto fail;
	}
	freeaddrinfo(ai);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						      : ((struct sockaddr_in *)&ss)->sin_port);
	*ret_fd = fd;
	*ret_port = port;
	return 0;
fail:
	freeaddrinfo(ai);
	if (fd >= 0)
		close(fd);
	if (what)
		return bridge_error_set(err, "cannot listen on %s %s port %d: %s", what, address,
					port, strerror(e));
	if (e == EADDRINUSE)
		return bridge_error_set(err,
					"cannot listen on %s port %d: address in use (another "
					"process listens there; listen.reuseport = true shares it)",
					address, port);
	return bridge_error_set(err, "cannot listen on %s port %d: %s", address, port, strerror(e));
}

int listen_socket_open(const char *address, int port, int reuseport, int *ret_fd, int *ret_port,
		       struct bridge_error *err)
{
	return socket_open(NULL, address, port, reuseport, 1024, ret_fd, ret_port, err);
}

int listen_socket_open_named(const char *what, const char *address, int port, int backlog,
			     int *ret_fd, int *ret_port, struct bridge_error *err)
{
	return socket_open(what, address, port, 0, backlog, ret_fd, ret_port, err);
}

int listen_address_check(const char *what, const char *address, struct bridge_error *err)
{
	struct addrinfo hints, *ai = NULL;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
	rc = getaddrinfo(address, "0", &hints, &ai);
	if (rc != 0)
		return bridge_error_set(err, "%s address '%s' is not an IP address: %s", what,
					address, gai_strerror(rc));
	freeaddrinfo(ai);
	return 0;
}

SSL_CTX *listen_tls_new(const char *what, const char *cert_file, const char *key_file,
			struct bridge_error *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char e[256];

	if (ctx && SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
	    SSL_CTX_use_certificate_chain_file(ctx, cert_file) == 1 &&
	    SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) == 1 &&
	    SSL_CTX_check_private_key(ctx) == 1)
		return ctx;
	ERR_error_string_n(ERR_get_error(), e, sizeof(e));
	SSL_CTX_free(ctx);
	bridge_error_set(err, "%s: cannot use %s / %s: %s", what, cert_file, key_file, e);
	return NULL;
}

int listen_spec_parse(const char *spec, char *address, size_t cap, int *ret_port,
		      struct bridge_error *err)
{
	const char *colon, *host = spec, *p;
	size_t hlen;
	long port = 0;

	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');

		if (!close || close[1] != ':')
			return bridge_error_set(err, "'%s' is not [ADDRESS]:PORT", spec);
		host = spec + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon || memchr(spec, ':', (size_t)(colon - spec)))
			return bridge_error_set(
				err, "'%s' is not ADDRESS:PORT (IPv6: [ADDRESS]:PORT)", spec);
		hlen = (size_t)(colon - spec);
	}
	if (hlen == 0 || hlen >= cap || !colon[1])
		return bridge_error_set(err, "'%s' is not ADDRESS:PORT", spec);
	for (p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9' || port > 65535)
			return bridge_error_set(err, "'%s': the port must be 0..65535", spec);
		port = port * 10 + (*p - '0');
	}
	if (port > 65535)
		return bridge_error_set(err, "'%s': the port must be 0..65535", spec);
	memcpy(address, host, hlen);
	address[hlen] = '\0';
	*ret_port = (int)port;
	return 0;
}
