/* atomic.c -- nadb incr, cas, mset and mget: the read-modify-write and
 * many-key operations a shell cannot make atomic with files alone.
 *
 * On a MOUNTPOINT they are requests to the daemon on MOUNTPOINT/.ctl (the
 * protocol is in fs/ctl.c and the README); offline, on a STORE, the same
 * engine call (nadb_apply, nadb_read_values) made directly.  Either way
 * each is one atomic step, and its output is the same.
 *
 * mget's output, one record a key in the order asked:
 *     PATH LEN\n VALUE \n      or      PATH -\n   (no such key)
 * with PATH escaped as in requests (%XX for spaces, controls and '%').
 */
#include "nadb_tool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* PATH as the engine and /.ctl take it: from the root, one leading '/'. */
static char *key_path(const char *path)
{
	struct buf b = {0};
	while (*path == '/')
		path++;
	return buf_printf(&b, "/%s", path) ? NULL : b.s;
}

/* A word of a request: %XX for what would end or garble it. */
static int add_word(struct buf *b, const char *w)
{
	int rc = buf_add(b, " ", 1);
	for (const unsigned char *p = (const unsigned char *)w; !rc && *p; p++)
		rc = *p <= ' ' || *p == 0x7f || *p == '%' ? buf_printf(b, "%%%02X", *p)
							   : buf_add(b, p, 1);
	return rc;
}

/* The header "CMD PATH [LEN] ...\n", each PATH followed by the length of
 * its VALUE if VALUES is not NULL. */
static int add_header(struct buf *req, const char *cmd, char *const *paths,
		      const struct buf *values, size_t n)
{
	int rc = buf_add(req, cmd, strlen(cmd));
	for (size_t i = 0; !rc && i < n; i++) {
		rc = add_word(req, paths[i]);
		if (!rc && values)
			rc = buf_printf(req, " %zu", values[i].len);
	}
	return rc ? rc : buf_add(req, "\n", 1);
}

static int read_all(int fd, struct buf *out)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		if (buf_add(out, chunk, (size_t)n))
			return -ENOMEM;
	}
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A reply's first line: "ok REST" gives 0 and REST; "err ..." and
 * "mismatch ..." are said (the latter's hash printed) and give 1. */
static int reply_status(const struct buf *reply, const char **rest)
{
	const char *s = reply->s ? reply->s : "";
	size_t line = strcspn(s, "\n");
	if (!strncmp(s, "ok", 2) && (s[2] == ' ' || s[2] == '\n')) {
		*rest = s + (s[2] == ' ' ? 3 : 2);
		return 0;
	}
	if (!strncmp(s, "mismatch ", 9)) {
		printf("%.*s\n", (int)(line - 9), s + 9);
		complain("cas: the value changed: its hash is now %.*s", (int)(line - 9), s + 9);
	} else if (!strncmp(s, "err ", 4)) {
		const char *why = strchr(s + 4, ' ');
		complain("%.*s", (int)(line - (why ? (size_t)(why + 1 - s) : 4)), why ? why + 1 : s + 4);
	} else {
		complain("the daemon's reply makes no sense: %.*s", (int)line, s);
	}
	return EXIT_PROBLEMS;
}

/* Send REQ to the daemon on T's mount; its reply into *REPLY (NUL-ended). */
static int ask_daemon(const struct target *t, const struct buf *req, struct buf *reply)
{
	char *ctl = in_mount(t->mnt, ".ctl");
	int fd = ctl ? open(ctl, O_RDWR | O_CLOEXEC) : -1;
	int rc = fd < 0 ? -errno : write_all(fd, req->s, req->len);
	if (fd >= 0 && rc != -ENOMEM)
		rc = read_all(fd, reply) ?: rc; /* a refused request's reply says why */
	if (fd >= 0)
		close(fd);
	if (buf_add(reply, "", 1))
		rc = -ENOMEM;
	const char *rest;
	if (rc && reply->len > 1)
		reply_status(reply, &rest);
	else if (rc)
		complain("%s: %s", ctl ? ctl : t->mnt, strerror(-rc));
	free(ctl);
	return rc;
}

/* Ask the daemon REQ: 0 and *REST after its "ok", or EXIT_PROBLEMS with
 * why said. */
static int converse(const struct target *t, const struct buf *req, struct buf *reply,
		    const char **rest)
{
	return ask_daemon(t, req, reply) ? EXIT_PROBLEMS : reply_status(reply, rest);
}

/* An offline batch's failure, said as the daemon would say it. */
static int say_failed(const struct nadb_op *op, int rc)
{
	if (rc == -ECANCELED) {
		printf("%s\n", op->hash);
		complain("cas: the value changed: its hash is now %s", op->hash);
	} else {
		const char *why = nadb_op_why(op, rc);
		complain("%s: %s", op->path, why ? why : failure_reason(rc));
	}
	return EXIT_PROBLEMS;
}

static int apply_offline(struct target *t, struct nadb_op *ops, size_t n)
{
	struct nadb_caller who;
	size_t failed;
	int rc = nadb_apply(t->st, ops, n, caller(&who), &failed);
	if (rc)
		return say_failed(&ops[failed < n ? failed : 0], rc);
	rc = nadb_store_sync(t->st);
	return rc ? report_failure(t, NULL, rc) : 0;
}

/* ==== incr ================================================================= */

int run_incr(const struct cmd_args *a)
{
	int64_t by = 1;
	char *end;
	if (a->n == 3) {
		errno = 0;
		by = strtoll(a->arg[2], &end, 10);
		if (!*a->arg[2] || *end || errno)
			return usage_error(a->cmd, "BY is not a 64-bit integer", a->arg[2]);
	}
	char *path = key_path(a->arg[1]);
	struct target t;
	int status = path ? open_target(a, a->arg[0], true, false, &t) : EXIT_PROBLEMS;
	if (status) {
		free(path);
		return status;
	}
	if (t.mnt) {
		struct buf req = {0}, reply = {0};
		const char *rest;
		status = buf_add(&req, "incr", 4) || add_word(&req, path) ||
			 buf_printf(&req, " %" PRId64 "\n", by) ? EXIT_PROBLEMS : 0;
		if (!status && !(status = converse(&t, &req, &reply, &rest)))
			fputs(rest, stdout);
		buf_free(&req);
		buf_free(&reply);
	} else {
		struct nadb_op op = {.kind = NADB_OP_INCR, .path = path, .by = by};
		status = apply_offline(&t, &op, 1);
		if (!status)
			printf("%" PRId64 "\n", op.number);
	}
	free(path);
	return close_target(&t, status);
}

/* ==== cas and mset: values from files ===================================== */

static int slurp(int fd, const char *name, struct buf *out)
{
	int rc = read_all(fd, out);
	if (rc)
		complain("%s: %s", name, strerror(-rc));
	return rc;
}

static int slurp_file(const char *name, struct buf *out)
{
	if (!strcmp(name, "-"))
		return slurp(0, "stdin", out);
	int fd = open(name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		complain("%s: %s", name, strerror(errno));
		return -errno;
	}
	int rc = slurp(fd, name, out);
	close(fd);
	return rc;
}

static bool is_hash_text(const char *s)
{
	if (!strcmp(s, "-"))
		return true;
	size_t n = strspn(s, "0123456789abcdef");
	return n == NADB_HASH_TEXT - 1 && !s[n];
}

int run_cas(const struct cmd_args *a)
{
	if (!is_hash_text(a->arg[2]))
		return usage_error(a->cmd, "EXPECTED_HASH is 32 lowercase hex digits or -",
				   a->arg[2]);
	struct buf value = {0};
	if (slurp(0, "stdin", &value))
		return EXIT_PROBLEMS;
	char *path = key_path(a->arg[1]);
	struct target t;
	int status = path ? open_target(a, a->arg[0], true, false, &t) : EXIT_PROBLEMS;
	if (status) {
		free(path);
		buf_free(&value);
		return status;
	}
	if (t.mnt) {
		struct buf req = {0}, reply = {0};
		const char *rest;
		status = buf_add(&req, "cas", 3) || add_word(&req, path) ||
			 buf_printf(&req, " %s %zu\n", a->arg[2], value.len) ||
			 buf_add(&req, value.s, value.len) ? EXIT_PROBLEMS : 0;
		if (!status && !(status = converse(&t, &req, &reply, &rest)))
			fputs(rest, stdout);
		buf_free(&req);
		buf_free(&reply);
	} else {
		struct nadb_op op = {
			.kind = NADB_OP_SET, .path = path, .value = value.s, .len = value.len,
			.cond = strcmp(a->arg[2], "-") ? NADB_IF_HASH : NADB_IF_ABSENT,
		};
		snprintf(op.expect, sizeof(op.expect), "%s", a->arg[2]);
		status = apply_offline(&t, &op, 1);
		if (!status)
			printf("%s\n", op.hash);
	}
	free(path);
	buf_free(&value);
	return close_target(&t, status);
}

int run_mset(const struct cmd_args *a)
{
	size_t n = (size_t)a->n - 1;
	struct nadb_op *ops = calloc(n, sizeof(*ops));
	struct buf *values = calloc(n, sizeof(*values));
	char **paths = calloc(n, sizeof(*paths));
	int status = ops && values && paths ? 0 : EXIT_PROBLEMS;
	for (size_t i = 0; !status && i < n; i++) {
		/* at the last '=': keys may hold one, file names seldom do */
		const char *arg = a->arg[1 + i], *eq = strrchr(arg, '=');
		if (!eq || eq == arg || !eq[1]) {
			status = usage_error(a->cmd, "each argument is PATH=FILE", arg);
			break;
		}
		char *p = strndup(arg, (size_t)(eq - arg));
		paths[i] = p ? key_path(p) : NULL;
		free(p);
		if (!paths[i] || slurp_file(eq + 1, &values[i]))
			status = EXIT_PROBLEMS;
		ops[i] = (struct nadb_op){.kind = NADB_OP_SET, .path = paths[i],
					  .value = values[i].s, .len = values[i].len};
	}
	struct target t = {0};
	if (!status)
		status = open_target(a, a->arg[0], true, false, &t);
	if (!status && t.mnt) {
		struct buf req = {0}, reply = {0};
		const char *rest;
		status = add_header(&req, "mset", paths, values, n) ? EXIT_PROBLEMS : 0;
		for (size_t i = 0; !status && i < n; i++)
			if (buf_add(&req, values[i].s, values[i].len))
				status = EXIT_PROBLEMS;
		if (!status && !(status = converse(&t, &req, &reply, &rest)) &&
		    strtoull(rest, NULL, 10) != n) {
			complain("the daemon set %s keys of %zu", rest, n);
			status = EXIT_PROBLEMS;
		}
		buf_free(&req);
		buf_free(&reply);
	} else if (!status) {
		status = apply_offline(&t, ops, n);
	}
	if (t.arg)
		status = close_target(&t, status);
	for (size_t i = 0; paths && values && i < n; i++) {
		free(paths[i]);
		buf_free(&values[i]);
	}
	free(paths);
	free(values);
	free(ops);
	return status;
}

/* ==== mget ================================================================= */

static int print_value(void *ctx, size_t i, int rc, const void *value, size_t len)
{
	char *const *paths = ctx;
	struct buf w = {0};
	if (rc && rc != -ENOENT) {
		complain("%s: %s", paths[i], strerror(-rc));
		return rc;
	}
	if (add_word(&w, paths[i]))
		return -ENOMEM;
	fwrite(w.s + 1, 1, w.len - 1, stdout);
	buf_free(&w);
	if (rc == -ENOENT) {
		fputs(" -\n", stdout);
		return 0;
	}
	printf(" %zu\n", len);
	fwrite(value, 1, len, stdout);
	putchar('\n');
	return 0;
}

int run_mget(const struct cmd_args *a)
{
	size_t n = (size_t)a->n - 1;
	char **paths = calloc(n + 1, sizeof(*paths));
	int status = paths ? 0 : EXIT_PROBLEMS;
	for (size_t i = 0; !status && i < n; i++)
		if (!(paths[i] = key_path(a->arg[1 + i])))
			status = EXIT_PROBLEMS;
	struct target t = {0};
	if (!status)
		status = open_target(a, a->arg[0], true, false, &t);
	if (!status && t.mnt) {
		struct buf req = {0}, reply = {0};
		const char *rest;
		status = add_header(&req, "mget", paths, NULL, n) ? EXIT_PROBLEMS : 0;
		if (!status && !(status = converse(&t, &req, &reply, &rest))) {
			/* after "ok N\n": the records, as they are printed */
			const char *records = strchr(rest, '\n');
			records = records ? records + 1 : rest;
			fwrite(records, 1, reply.len - 1 - (size_t)(records - reply.s), stdout);
		}
		buf_free(&req);
		buf_free(&reply);
	} else if (!status) {
		struct nadb_caller who;
		int rc = nadb_read_values(t.st, (const char *const *)paths, n, caller(&who),
					  UINT64_MAX, print_value, paths);
		status = rc ? EXIT_PROBLEMS : 0;
	}
	if (t.arg)
		status = close_target(&t, status);
	if (fflush(stdout) && !status) {
		complain("stdout: %s", strerror(errno));
		status = EXIT_PROBLEMS;
	}
	for (size_t i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
	return status;
}
