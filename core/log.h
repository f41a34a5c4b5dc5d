/* log.h -- one line per event worth a user's attention, and where such
 * lines go: a log file, syslog, or held for a command's own message.
 *
 * The engine only calls nadb_log; the program around it (nadbfs, the
 * nadb tool, a test) chooses the sink once, for the whole process. */
#ifndef NADB_LOG_H
#define NADB_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum nadb_log_sink {
	/* "2024-01-02T03:04:05Z IDENT[PID]: LINE" on stderr, the default.  A
	 * daemon in the background points stderr at its log file. */
	NADB_LOG_STDERR,
	/* syslog(3) as IDENT, facility daemon (the journal reads it too). */
	NADB_LOG_SYSLOG,
	/* Kept, not written: a command that fails says so in one line of its
	 * own and gives the engine's line as the reason (nadb_log_reason);
	 * lines no failure claimed are written plainly by nadb_log_flush. */
	NADB_LOG_HOLD,
};

/* Send the lines from now on to SINK, under the name IDENT (a static
 * string; "nadb" until set).  Lines held so far go to the new sink. */
void nadb_log_to(enum nadb_log_sink sink, const char *ident);

/* Each call site (format string) writes at most a burst of lines a
 * minute; the rest are counted, and the count is written later. */
__attribute__((format(printf, 1, 2))) void nadb_log(const char *fmt, ...);
__attribute__((format(printf, 1, 0))) void nadb_logv(const char *fmt, va_list ap);
/* A warning: written like any line, but never taken as a failure's
 * reason (nadb_log_reason), which a line logged after it is. */
__attribute__((format(printf, 1, 2))) void nadb_log_advice(const char *fmt, ...);

/* Write the counts of lines not written yet, and with NADB_LOG_HOLD the
 * lines no failure claimed, as "IDENT: LINE" on stderr (at exit). */
void nadb_log_flush(void);

/* Why an engine call failed with RC (a negative errno), for a message of
 * one line: the first line held since the last call (the cause; lines
 * after it are its consequences and are dropped), else strerror(-RC).
 * Advice (nadb_log_advice) is passed over, and stays held.
 * Returns BUF or a static string. */
const char *nadb_log_reason(int rc, char *buf, size_t size);

/* Open the log file PATH for appending (mode 0600): the file descriptor,
 * for the caller to put on stderr, or -errno.  PATH is remembered for
 * nadb_log_reopen. */
int nadb_log_open_file(const char *path);

/* Open the remembered log file anew and put it on stderr, so that the
 * lines after a rotation (logrotate renames the file, then sends SIGHUP)
 * go to a new file.  Async-signal-safe: a signal handler calls it.
 * Returns 0, or -errno (the old file stays in use); none remembered: 0. */
int nadb_log_reopen(void);

#endif
