/*
 * notify: the service manager's readiness protocol (sd_notify(3)): one
 * datagram of "KEY=VALUE\n" lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace).  Without
 * $NOTIFY_SOCKET every call does nothing, so `serve` runs the same under
 * systemd, in a container or in a terminal.
 */
#ifndef BRIDGE_NOTIFY_H
#define BRIDGE_NOTIFY_H

/* Send `state` (e.g. "READY=1\nSTATUS=serving"). 0 sent or not asked for,
 * -errno when the socket refused it. */
int notify_send(const char *state);

/* printf-style notify_send; the text is cut at 1 KiB. */
int notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Microseconds between the pings the manager wants ($WATCHDOG_USEC, for
 * this process per $WATCHDOG_PID), or 0 when it wants none. */
long long notify_watchdog_usec(void);

#endif
