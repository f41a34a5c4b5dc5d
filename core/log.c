/* log.c -- one-line messages (see log.h): their one format, their sinks,
 * and a bound on how fast any one kind of line can grow the log.
 *
 * Any user who can reach a mount can make the daemon log (every refused
 * setxattr says why), so each call site -- each format string -- may
 * write LOG_BURST lines per LOG_WINDOW_S seconds; the lines past that are
 * counted, not written, and the count is written with the site's next
 * line after the window (or by nadb_log_flush at exit).  The limit holds
 * whatever the sink: syslog is a shared resource too.
 *
 * The limiter, the sink and the held lines are process-wide state, like
 * stderr itself: the one piece of global mutable state in the engine,
 * since the log is reached from places (packs, the chunker) that have no
 * store.
 */
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_BURST 20     /* lines per call site per window */
#define LOG_WINDOW_S 60  /* seconds */
#define LOG_SITES 64     /* call sites tracked; past that, sites share slots */
#define LOG_TEXT 1024    /* a line's text, without the timestamp and name */
#define HOLD_MAX 8       /* lines held for a command's message; more: dropped */

struct log_site {
	const char *fmt;   /* the call site, by its format string; NULL: free */
	time_t window;     /* when its current window started (CLOCK_MONOTONIC s) */
	unsigned written;  /* lines written in the window */
	unsigned long suppressed; /* lines dropped since the last written one */
	char last[160];    /* the last of them, to show what they were */
};

/* log_lock: scope is sites[], sink, ident and held[].  Held to decide
 * and to hold a line; never across a write. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_site sites[LOG_SITES];
static enum nadb_log_sink sink = NADB_LOG_STDERR;
static const char *ident = "nadb";
static char held[HOLD_MAX][LOG_TEXT];
static bool held_advice[HOLD_MAX]; /* nadb_log_advice's: never a reason */
static int nheld;
/* The log file, for nadb_log_reopen; set before any signal handler that
 * reads it exists. */
static char log_path[PATH_MAX];

/* One line, timestamped and named, in one write so that concurrent lines
 * never interleave. */
static void write_stderr(const char *who, const char *text)
{
	char line[LOG_TEXT + 128];
	struct timespec now;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ ", &tm);
	int m = snprintf(line + n, sizeof(line) - n - 1, "%s[%ld]: %s", who,
			 (long)getpid(), text);
	if (m < 0)
		return;
	n += (size_t)m < sizeof(line) - n - 1 ? (size_t)m : sizeof(line) - n - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

/* Is TEXT held as advice already?  Under log_lock. */
static bool advice_held(const char *text)
{
	for (int i = 0; i < nheld; i++)
		if (held_advice[i] && strncmp(held[i], text, LOG_TEXT - 1) == 0)
			return true;
	return false;
}

/* TEXT to the sink; ADVICE: a warning, never a failure's reason.  Advice
 * stays held across failures, so it is held once, and never in the last
 * slot, which a failure's reason may need. */
static void emit(const char *text, bool advice)
{
	pthread_mutex_lock(&log_lock);
	enum nadb_log_sink to = sink;
	const char *who = ident;
	if (to == NADB_LOG_HOLD && nheld < HOLD_MAX - (advice ? 1 : 0) &&
	    !(advice && advice_held(text))) {
		held_advice[nheld] = advice;
		snprintf(held[nheld++], LOG_TEXT, "%s", text);
	}
	pthread_mutex_unlock(&log_lock);
	if (to == NADB_LOG_STDERR)
		write_stderr(who, text);
	else if (to == NADB_LOG_SYSLOG)
		syslog(LOG_WARNING, "%s", text);
}

/* Take the held lines into LINES (room for HOLD_MAX): how many. */
static int take_held(char (*lines)[LOG_TEXT])
{
	int n = nheld;
	memcpy(lines, held, sizeof(held[0]) * (size_t)n);
	nheld = 0;
	return n;
}

void nadb_log_to(enum nadb_log_sink to, const char *name)
{
	char lines[HOLD_MAX][LOG_TEXT];
	int n = 0;
	pthread_mutex_lock(&log_lock);
	if (sink == NADB_LOG_SYSLOG && to != NADB_LOG_SYSLOG)
		closelog();
	if (to == NADB_LOG_SYSLOG)
		openlog(name, LOG_PID, LOG_DAEMON);
	sink = to;
	ident = name;
	if (to != NADB_LOG_HOLD)
		n = take_held(lines);
	pthread_mutex_unlock(&log_lock);
	for (int i = 0; i < n; i++)
		emit(lines[i], false);
}

static void report_suppressed(const struct log_site *s)
{
	char text[LOG_TEXT];
	snprintf(text, sizeof(text), "%lu more lines like this were not written (at "
		 "most %d a minute from one place): %s", s->suppressed, LOG_BURST, s->last);
	emit(text, true);
}

/* Count line TEXT from site FMT; may it be written?  A report of the
 * site's lines suppressed before it goes into *report (suppressed 0:
 * none). */
static int admit(const char *fmt, const char *text, struct log_site *report)
{
	time_t now = (time_t)(monotonic_ms() / 1000);
	size_t h = ((uintptr_t)fmt >> 3) % LOG_SITES;
	int ok;
	report->suppressed = 0;
	pthread_mutex_lock(&log_lock);
	struct log_site *s = &sites[h];
	if (s->fmt != fmt || now - s->window >= LOG_WINDOW_S) {
		/* A new window, or another site taking the slot over. */
		*report = *s;
		*s = (struct log_site){.fmt = fmt, .window = now};
	}
	ok = s->written < LOG_BURST;
	if (ok) {
		s->written++;
	} else {
		s->suppressed++;
		size_t n = strnlen(text, sizeof(s->last) - 1);
		memcpy(s->last, text, n);
		s->last[n] = '\0';
	}
	pthread_mutex_unlock(&log_lock);
	return ok;
}

static void log_kind(const char *fmt, va_list ap, bool advice)
{
	char text[LOG_TEXT];
	struct log_site report;
	vsnprintf(text, sizeof(text), fmt, ap);
	/* A line is one line: libfuse's messages (routed here) end in '\n'. */
	size_t n = strlen(text);
	while (n && text[n - 1] == '\n')
		text[--n] = '\0';
	int ok = admit(fmt, text, &report);
	if (report.suppressed)
		report_suppressed(&report);
	if (ok)
		emit(text, advice);
}

void nadb_logv(const char *fmt, va_list ap)
{
	log_kind(fmt, ap, false);
}

void nadb_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_kind(fmt, ap, false);
	va_end(ap);
}

void nadb_log_advice(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_kind(fmt, ap, true);
	va_end(ap);
}

void nadb_log_flush(void)
{
	struct log_site pending[LOG_SITES];
	int n = 0;
	pthread_mutex_lock(&log_lock);
	for (int i = 0; i < LOG_SITES; i++)
		if (sites[i].fmt && sites[i].suppressed) {
			pending[n++] = sites[i];
			sites[i].suppressed = 0;
		}
	pthread_mutex_unlock(&log_lock);
	for (int i = 0; i < n; i++)
		report_suppressed(&pending[i]);
	/* Held lines that no failure claimed: warnings, said plainly. */
	char lines[HOLD_MAX][LOG_TEXT];
	pthread_mutex_lock(&log_lock);
	n = take_held(lines);
	const char *who = ident;
	pthread_mutex_unlock(&log_lock);
	for (int i = 0; i < n; i++)
		fprintf(stderr, "%s: %s\n", who, lines[i]);
}

const char *nadb_log_reason(int rc, char *buf, size_t size)
{
	const char *why = NULL;
	int kept = 0;
	pthread_mutex_lock(&log_lock);
	for (int i = 0; i < nheld; i++) {
		if (held_advice[i]) { /* still said, at the flush */
			if (kept != i)
				memcpy(held[kept], held[i], LOG_TEXT);
			held_advice[kept++] = true;
		} else if (!why && size) {
			snprintf(buf, size, "%s", held[i]);
			why = buf;
		}
	}
	nheld = kept;
	pthread_mutex_unlock(&log_lock);
	return why ? why : strerror(-rc);
}

int nadb_log_open_file(const char *path)
{
	if (strlen(path) >= sizeof(log_path))
		return -ENAMETOOLONG;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	strcpy(log_path, path);
	return fd;
}

int nadb_log_reopen(void)
{
	if (!log_path[0])
		return 0;
	int saved = errno, rc = 0;
	int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		rc = -errno;
	else {
		/* dup2 clears close-on-exec on stderr, as it was. */
		if (dup2(fd, STDERR_FILENO) < 0)
			rc = -errno;
		close(fd);
	}
	errno = saved;
	return rc;
}
