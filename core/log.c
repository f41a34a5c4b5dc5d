/* log.c -- timestamped one-line messages on stderr (see log.h), with a
 * bound on how fast any one kind of line can grow the log.
 *
 * Any user who can reach a mount can make the daemon log (every refused
 * setxattr says why), so each call site -- each format string -- may
 * write LOG_BURST lines per LOG_WINDOW_S seconds; the lines past that are
 * counted, not written, and the count is written with the site's next
 * line after the window (or by nadb_log_flush at exit).
 *
 * The limiter is process-wide state, like stderr itself, which it guards:
 * it is the one piece of global mutable state in the engine, since the
 * log is reached from places (packs, the chunker) that have no store.
 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_BURST 20     /* lines per call site per window */
#define LOG_WINDOW_S 60  /* seconds */
#define LOG_SITES 64     /* call sites tracked; past that, sites share slots */

struct log_site {
	const char *fmt;   /* the call site, by its format string; NULL: free */
	time_t window;     /* when its current window started (CLOCK_MONOTONIC s) */
	unsigned written;  /* lines written in the window */
	unsigned long suppressed; /* lines dropped since the last written one */
	char last[160];    /* the last of them, to show what they were */
};

/* limiter_lock: scope is sites[].  Held to decide; never across a write
 * but in nadb_log_flush (at exit). */
static pthread_mutex_t limiter_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_site sites[LOG_SITES];

/* One line, timestamped, in one write so that concurrent lines never
 * interleave. */
__attribute__((format(printf, 1, 2))) static void write_formatted(const char *fmt, ...)
{
	char line[1200];
	struct timespec now;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ nadb: ", &tm);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m < (int)sizeof(line) - n - 1 ? m : (int)sizeof(line) - n - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

static void report_suppressed(const struct log_site *s)
{
	write_formatted("%lu more lines like this were not written (at most %d a "
			"minute from one place): %s", s->suppressed, LOG_BURST, s->last);
}

/* Count line TEXT from site FMT; may it be written?  A report of the
 * site's lines suppressed before it goes into *report (suppressed 0:
 * none). */
static int admit(const char *fmt, const char *text, struct log_site *report)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	size_t h = ((uintptr_t)fmt >> 3) % LOG_SITES;
	int ok;
	report->suppressed = 0;
	pthread_mutex_lock(&limiter_lock);
	struct log_site *s = &sites[h];
	if (s->fmt != fmt || ts.tv_sec - s->window >= LOG_WINDOW_S) {
		/* A new window, or another site taking the slot over. */
		*report = *s;
		*s = (struct log_site){.fmt = fmt, .window = ts.tv_sec};
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
	pthread_mutex_unlock(&limiter_lock);
	return ok;
}

void nadb_log(const char *fmt, ...)
{
	char text[1024];
	struct log_site report;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	int ok = admit(fmt, text, &report);
	if (report.suppressed)
		report_suppressed(&report);
	if (ok)
		write_formatted("%s", text);
}

void nadb_log_flush(void)
{
	pthread_mutex_lock(&limiter_lock);
	for (int i = 0; i < LOG_SITES; i++)
		if (sites[i].fmt && sites[i].suppressed) {
			report_suppressed(&sites[i]);
			sites[i].suppressed = 0;
		}
	pthread_mutex_unlock(&limiter_lock);
}
