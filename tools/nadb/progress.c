/* progress.c -- the progress line of the long commands (compact, fsck,
 * dump, load).  A one-line progress indication on stderr, only when that is
 * a terminal (a script's log must not fill with carriage returns), at most
 * 5 a second; cleared before anything else is printed.
 */
#include "nadb_tool.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

void progress_start(struct progress *p)
{
	*p = (struct progress){.on = isatty(STDERR_FILENO) == 1};
}

void progress_show(struct progress *p, const char *fmt, ...)
{
	if (!p->on)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (now.tv_sec - p->last.tv_sec) * 1000 +
		     (now.tv_nsec - p->last.tv_nsec) / 1000000;
	if (p->shown && ms < 200)
		return;
	p->last = now;
	p->shown = true;
	va_list ap;
	va_start(ap, fmt);
	fputs("\r\033[K", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
}

void progress_end(struct progress *p)
{
	if (p->shown)
		fputs("\r\033[K", stderr);
	p->shown = false;
}
