/* test_log.c -- held lines and a failure's reason (core/log.c).
 *
 * A command holds the engine's lines (NADB_LOG_HOLD) and, when a call
 * fails, says the first of them as the reason.  Advice (a warning logged
 * on the way, such as Redis's persistence settings) is never that reason:
 * it is passed over, held once however often it is said, written at the
 * flush, and never takes the last slot, which a reason may need.
 */
#include "log.h"
#include "unit.h"

#include <unistd.h>

/* What nadb_log_flush writes to stderr, into OUT (SIZE bytes). */
static void flushed(char *out, size_t size)
{
	char path[] = "/tmp/nadb-test-log.XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	nadb_log_flush();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	ssize_t n = pread(fd, out, size - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
}

static int count_of(const char *text, const char *what)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

int main(void)
{
	char buf[1024], out[8192];
	nadb_log_to(NADB_LOG_HOLD, "test");

	/* the reason is the first line that is not advice */
	nadb_log_advice("server keeps no AOF");
	nadb_log("the cause");
	nadb_log("a consequence");
	CHECK(strcmp(nadb_log_reason(-EIO, buf, sizeof(buf)), "the cause") == 0);
	/* with only advice held, the errno speaks; advice stays held */
	CHECK(strcmp(nadb_log_reason(-EIO, buf, sizeof(buf)), strerror(EIO)) == 0);
	flushed(out, sizeof(out));
	CHECK(count_of(out, "test: server keeps no AOF\n") == 1);
	CHECK(count_of(out, "cause") == 0 && count_of(out, "consequence") == 0);

	/* advice said again and again is held once */
	for (int i = 0; i < 5; i++)
		nadb_log_advice("server keeps no AOF");
	flushed(out, sizeof(out));
	CHECK(count_of(out, "server keeps no AOF") == 1);

	/* more advice than slots leaves room for a reason */
	for (int i = 0; i < 12; i++)
		nadb_log_advice("advice %d", i);
	nadb_log("the real cause");
	CHECK(strcmp(nadb_log_reason(-EIO, buf, sizeof(buf)), "the real cause") == 0);
	flushed(out, sizeof(out));
	CHECK(count_of(out, "advice 0\n") == 1 && count_of(out, "real cause") == 0);

	/* lines no failure claimed are written at the flush, in order */
	nadb_log_advice("warning first");
	nadb_log("unclaimed");
	flushed(out, sizeof(out));
	const char *w = strstr(out, "warning first"), *u = strstr(out, "unclaimed");
	CHECK(w && u && w < u);

	printf("%s held lines, reasons and advice\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
