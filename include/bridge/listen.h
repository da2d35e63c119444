/*
 * listen: the one listening socket of a `serve` process.  It is opened once
 * and shared by every worker (each gets a dup), so the workers split the
 * port among themselves while another process that tries the same address
 * and port gets "address in use".  Only `listen.reuseport = true` sets
 * SO_REUSEPORT, for operators who want several processes on one port.
 */
#ifndef BRIDGE_LISTEN_H
#define BRIDGE_LISTEN_H

#include <stddef.h>

#include "bridge/diag.h"

/* Bind address:port (an IP literal; port 0 picks a free one) and listen.
 * *ret_fd is the socket (close-on-exec, non-blocking), *ret_port the port
 * bound.  0, or -1 with err set ("... address in use ..." when taken). */
int listen_socket_open(const char *address, int port, int reuseport, int *ret_fd, int *ret_port,
		       struct bridge_error *err);

/* listen_socket_open for another listener (the admin one): never
 * SO_REUSEPORT, `backlog` pending connections, and every failure says
 * "cannot listen on WHAT ADDR port N: reason" ("WHAT address '...' is not
 * an IP address" for a bad literal). */
int listen_socket_open_named(const char *what, const char *address, int port, int backlog,
			     int *ret_fd, int *ret_port, struct bridge_error *err);

/* 0 when `address` is an IP literal a listener can bind, else -1 and err. */
int listen_address_check(const char *what, const char *address, struct bridge_error *err);

/* A TLS server context (TLS 1.2 or later) with the certificate chain and key
 * loaded and checked to match; NULL with err naming `what` and both files. */
struct ssl_ctx_st *listen_tls_new(const char *what, const char *cert_file, const char *key_file,
				  struct bridge_error *err);

/* "ADDR:PORT" or "[V6ADDR]:PORT", PORT 0..65535 in decimal digits only;
 * the address goes into address[cap].  0, or -1 with err set. */
int listen_spec_parse(const char *spec, char *address, size_t cap, int *ret_port,
		      struct bridge_error *err);

#endif
