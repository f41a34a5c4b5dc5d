/* progress.c -- the progress line of the long commands (compact, fsck,
 * dump, load).  A one-line progress indication on stderr, only when that is
 * a terminal (a script's log must not fill with carriage returns), at most
 * 5 a second; cleared before anything else is printed.  Where the command
 * knows how much there is to do (dump: the bytes of the values below PATH;
 * load: the size of a regular file on stdin) the line ends with the share
 * done and the time left at the pace so far.
 */
#include "nadb_tool.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

void progress_start(struct progress *p)
{
	*p = (struct progress){.on = isatty(STDERR_FILENO) == 1};
	clock_gettime(CLOCK_MONOTONIC, &p->started);
}

static double seconds_between(struct timespec a, struct timespec b)
{
	return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

/* " 42% ETA 1m05s": DONE of TOTAL, the time left at the pace since start. */
static void put_share(const struct progress *p, struct timespec now, uint64_t done,
		      uint64_t total)
{
	if (done > total)
		done = total;
	fprintf(stderr, "  %3u%%", (unsigned)(100 * (double)done / (double)total));
	double spent = seconds_between(p->started, now);
	if (!done || spent < 0.5) {
		fputs(" ETA --", stderr); /* no pace yet */
		return;
	}
	unsigned long left = (unsigned long)(spent * (double)(total - done) / (double)done + 0.5);
	if (left >= 3600)
		fprintf(stderr, " ETA %luh%02lum", left / 3600, left / 60 % 60);
	else
		fprintf(stderr, " ETA %lum%02lus", left / 60, left % 60);
}

static void show(struct progress *p, uint64_t done, uint64_t total, const char *fmt,
		 va_list ap)
{
	if (!p->on)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (p->shown && seconds_between(p->last, now) < 0.2 && (p->shared || !total))
		return;
	p->shared |= total != 0;
	p->last = now;
	p->shown = true;
	fputs("\r\033[K", stderr);
	vfprintf(stderr, fmt, ap);
	if (total)
		put_share(p, now, done, total);
	fflush(stderr);
}

void progress_show(struct progress *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	show(p, 0, 0, fmt, ap);
	va_end(ap);
}

void progress_of(struct progress *p, uint64_t done, uint64_t total, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	show(p, done, total, fmt, ap);
	va_end(ap);
}

void progress_end(struct progress *p)
{
	if (p->shown)
		fputs("\r\033[K", stderr);
	p->shown = false;
}
