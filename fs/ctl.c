/* ctl.c -- the protocol of /.ctl (ctl.h).
 *
 * Open /.ctl read-write, write one request, read its reply from the same
 * descriptor; then the next request.  A request is one header line of
 * words separated by spaces, then, for the commands that carry values,
 * the values' bytes back to back, as many as the header's LEN words say:
 *
 *   incr PATH [BY]\n                 -> ok NUMBER\n
 *   cas PATH EXPECTED LEN\n VALUE    -> ok HASH\n | mismatch CURRENT\n
 *   mset PATH LEN [PATH LEN...]\n VALUES...
 *                                    -> ok N\n
 *   mget PATH [PATH...]\n            -> ok N\n then per key
 *                                       PATH LEN\n VALUE \n  (or PATH -\n)
 *   flush | compact | reap\n         -> ok\n
 *
 * PATH is "/DB/NS/KEY" from the mountpoint.  In a word, a byte that is a
 * space, a control character or '%' is written %XX (hex).  EXPECTED is a
 * user.nadb.hash, or "-": only if the key is absent.  A failure replies
 * "err ENAME why\n" (ENAME as errno names it).  A request that cannot be
 * parsed fails its write(2) with EINVAL, one that is too big with EFBIG,
 * and the reply says why; a request that runs and fails succeeds as a
 * write.  A descriptor opened write-only cannot read replies, so there a
 * failed request fails its write, and a header needs no newline ("echo
 * flush > .ctl", as before replies existed).
 *
 * Everything a request changes is one step of the engine (nadb_apply):
 * atomic, and checked against the caller's permissions as creat, open
 * and lookup would be.  Then the kernel is told, before the reply, so an
 * open after it sees the new values: the dentry of a key made (a cached
 * miss would hide it), the pages and attributes of a key changed.
 */
#include "ctl.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTL_REQUEST_MAX (64u << 20)    /* bytes: a request, header and values */
#define CTL_REPLY_MAX (64u << 20)      /* bytes: mget's values together */
#define CTL_HEADER_MAX (1u << 20)      /* bytes: the header line */
#define CTL_IN_FLIGHT_MAX (256u << 20) /* bytes: requests of all descriptors */
#define CTL_WORDS_MAX 20001            /* words of a header: mset of 10,000 keys */
#define CTL_GROUPS_MAX 64              /* the opener's supplementary groups kept */

struct ctl {
	/* lock: scope is everything below; requests on one descriptor are
	 * taken one at a time, in the order their writes arrive. */
	pthread_mutex_t lock;
	bool readable;
	/* Who opened the descriptor: every request on it runs as them, as the
	 * kernel checks a write against the opener's credentials -- not as
	 * whoever happens to send the last bytes. */
	struct nadb_caller who;
	uint32_t groups[CTL_GROUPS_MAX];
	bool admin; /* the opener may flush, compact and reap */
	atomic_size_t *in_flight; /* the daemon's budget (CTL_IN_FLIGHT_MAX) */
	char *req;          /* the request so far */
	size_t len, cap;
	size_t scanned;     /* bytes searched for the header's newline */
	size_t header_len;  /* 0 until the header's newline came, then the
	                       header's length with it */
	size_t line_len;    /* and without it */
	size_t need;        /* then: the whole request's length */
	struct request *parsed; /* and the header's words (in HEADER) */
	char *header;
	/* A request was refused with its bytes still coming: the stream's
	 * framing is lost, so writes fail until the reply is read. */
	bool refused;
	char *reply;
	size_t reply_len, reply_off;
};

struct ctl *ctl_new(bool readable, const struct nadb_caller *who, bool admin,
		    atomic_size_t *in_flight)
{
	struct ctl *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	c->readable = readable;
	c->admin = admin;
	c->in_flight = in_flight;
	c->who = *who;
	c->who.ngroups = who->ngroups < CTL_GROUPS_MAX ? who->ngroups : CTL_GROUPS_MAX;
	for (int i = 0; who->groups && i < c->who.ngroups; i++)
		c->groups[i] = who->groups[i];
	c->who.groups = c->who.ngroups ? c->groups : NULL;
	return c;
}

static void forget_request(struct ctl *c)
{
	free(c->req);
	free(c->parsed);
	free(c->header);
	atomic_fetch_sub(c->in_flight, c->cap);
	c->req = NULL;
	c->parsed = NULL;
	c->header = NULL;
	c->len = c->cap = c->scanned = c->header_len = c->line_len = c->need = 0;
}

static void forget_reply(struct ctl *c)
{
	free(c->reply);
	c->reply = NULL;
	c->reply_len = c->reply_off = 0;
}

void ctl_free(struct ctl *c)
{
	if (!c)
		return;
	forget_request(c);
	forget_reply(c);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* ---- replies ------------------------------------------------------------- */

struct out {
	char *buf;
	size_t len, cap;
	int rc; /* -ENOMEM once a grow failed */
};

static void out_add(struct out *o, const void *p, size_t n)
{
	if (o->rc)
		return;
	if (o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap : 256;
		while (cap < o->len + n + 1)
			cap *= 2;
		char *b = realloc(o->buf, cap);
		if (!b) {
			o->rc = -ENOMEM;
			return;
		}
		o->buf = b;
		o->cap = cap;
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(struct out *o, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	out_add(o, line, n < 0 ? 0 : (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* A word escaped as requests escape it. */
static void out_word(struct out *o, const char *w)
{
	for (const unsigned char *p = (const unsigned char *)w; *p; p++) {
		if (*p <= ' ' || *p == 0x7f || *p == '%')
			out_printf(o, "%%%02X", *p);
		else
			out_add(o, p, 1);
	}
}

static void out_error(struct out *o, int rc, const char *path, const char *why)
{
	const char *name = strerrorname_np(-rc);
	o->len = 0;
	out_printf(o, "err %s ", name ? name : "EIO");
	if (path) {
		out_word(o, path);
		out_add(o, ": ", 2);
	}
	out_printf(o, "%s\n", why ? why : strerror(-rc));
}

/* ---- parsing ------------------------------------------------------------- */

struct request {
	char *words[CTL_WORDS_MAX];
	int n;
	const char *payload; /* after the header */
};

static int unhex(int ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0'
	       : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
	       : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

/* Split the header (NUL-terminated, in place) into unescaped words. */
static int split_words(char *h, struct request *r, const char **why)
{
	r->n = 0;
	char *p = h;
	for (;;) {
		while (is_blank(*p))
			p++;
		if (!*p)
			break;
		if (r->n == CTL_WORDS_MAX) {
			*why = "too many words in the request";
			return -EINVAL;
		}
		char *w = p, *d = p;
		while (*p && !is_blank(*p)) {
			if ((unsigned char)*p < ' ' || *p == 0x7f) {
				*why = "a control character in the request (escape it as %XX)";
				return -EINVAL;
			}
			if (*p != '%') {
				*d++ = *p++;
				continue;
			}
			int hi = unhex(p[1]), lo = hi < 0 ? -1 : unhex(p[2]);
			if (lo < 0 || (hi == 0 && lo == 0)) {
				*why = "a bad %XX escape in the request";
				return -EINVAL;
			}
			*d++ = (char)(hi << 4 | lo);
			p += 3;
		}
		bool more = *p != 0;
		*d = 0;
		r->words[r->n++] = w;
		if (more)
			p++;
	}
	if (r->n == 0) {
		*why = "an empty request";
		return -EINVAL;
	}
	return 0;
}

static bool parse_i64(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno || (*s != '-' && (*s < '0' || *s > '9')))
		return false;
	*out = v;
	return true;
}

static bool parse_len(const char *s, size_t *out)
{
	int64_t v;
	if (!parse_i64(s, &v) || v < 0 || *s == '-' || (uint64_t)v > CTL_REQUEST_MAX)
		return false;
	*out = (size_t)v;
	return true;
}

static bool is_hash(const char *s)
{
	if (!strcmp(s, "-"))
		return true;
	if (strlen(s) != NADB_HASH_TEXT - 1)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

/* The payload bytes the header says follow it, or -EINVAL. */
static int payload_length(const struct request *r, size_t *need, const char **why)
{
	const char *cmd = r->words[0];
	size_t total = 0, len;
	*need = 0;
	if (!strcmp(cmd, "cas")) {
		if (r->n != 4 || !is_hash(r->words[2]) || !parse_len(r->words[3], &len)) {
			*why = "usage: cas PATH EXPECTED_HASH|- LEN, then LEN bytes";
			return -EINVAL;
		}
		*need = len;
	} else if (!strcmp(cmd, "mset")) {
		if (r->n < 3 || r->n % 2 == 0) {
			*why = "usage: mset PATH LEN [PATH LEN...], then the values";
			return -EINVAL;
		}
		for (int i = 2; i < r->n; i += 2) {
			if (!parse_len(r->words[i], &len) || (total += len) > CTL_REQUEST_MAX) {
				*why = "mset: a LEN is not a length, or the values are over 64 MiB";
				return -EINVAL;
			}
		}
		*need = total;
	}
	return 0;
}

/* ---- running requests ---------------------------------------------------- */

/* The last component of PATH, for the kernel's dentry. */
static const char *leaf_of(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* Tell the kernel what a batch changed, before the reply, so that an
 * open after it sees the new values. */
static void tell_kernel(const struct ctl_env *env, const struct nadb_op *ops, size_t n)
{
	if (!env->changed)
		return;
	for (size_t i = 0; i < n; i++)
		env->changed(env->notify_ctx, ops[i].parent, leaf_of(ops[i].path), ops[i].ino,
			     ops[i].created);
	env->changed_wait(env->notify_ctx);
}

/* Each command below returns -EINVAL for a request it cannot run (a
 * usage error: the write fails), else 0 with *OUTCOME the result's
 * errno, the reply said in O. */

static int run_apply(const struct ctl_env *env, struct nadb_op *ops, size_t n, struct out *o)
{
	size_t failed;
	int rc = nadb_apply(env->st, ops, n, env->who, &failed);
	if (rc == -ECANCELED)
		out_printf(o, "mismatch %s\n", ops[failed].hash);
	else if (rc)
		out_error(o, rc, ops[failed].path, nadb_op_why(&ops[failed], rc));
	else
		tell_kernel(env, ops, n);
	return rc;
}

static int usage(struct out *o, const char *text)
{
	out_error(o, -EINVAL, NULL, text);
	return -EINVAL;
}

static int run_incr(const struct ctl_env *env, const struct request *r, struct out *o,
		    int *outcome)
{
	struct nadb_op op = {.kind = NADB_OP_INCR, .path = r->words[1], .by = 1};
	if (r->n < 2 || r->n > 3 || (r->n == 3 && !parse_i64(r->words[2], &op.by)))
		return usage(o, "usage: incr PATH [BY], BY a 64-bit integer");
	*outcome = run_apply(env, &op, 1, o);
	if (!*outcome)
		out_printf(o, "ok %" PRId64 "\n", op.number);
	return 0;
}

/* The header's lengths were checked by payload_length. */
static int run_cas(const struct ctl_env *env, const struct request *r, struct out *o,
		   int *outcome)
{
	struct nadb_op op = {
		.kind = NADB_OP_SET, .path = r->words[1], .value = r->payload,
		.len = strtoull(r->words[3], NULL, 10),
	};
	if (!strcmp(r->words[2], "-")) {
		op.cond = NADB_IF_ABSENT;
	} else {
		op.cond = NADB_IF_HASH;
		memcpy(op.expect, r->words[2], NADB_HASH_TEXT);
	}
	*outcome = run_apply(env, &op, 1, o);
	if (!*outcome)
		out_printf(o, "ok %s\n", op.hash);
	return 0;
}

static int run_mset(const struct ctl_env *env, const struct request *r, struct out *o,
		    int *outcome)
{
	size_t n = (size_t)(r->n - 1) / 2;
	struct nadb_op *ops = calloc(n, sizeof(*ops));
	if (!ops) {
		out_error(o, -ENOMEM, NULL, NULL);
		*outcome = -ENOMEM;
		return 0;
	}
	const char *value = r->payload;
	for (size_t i = 0; i < n; i++) {
		ops[i].kind = NADB_OP_SET;
		ops[i].path = r->words[1 + 2 * i];
		ops[i].value = value;
		ops[i].len = strtoull(r->words[2 + 2 * i], NULL, 10);
		value += ops[i].len;
	}
	*outcome = run_apply(env, ops, n, o);
	if (!*outcome)
		out_printf(o, "ok %zu\n", n);
	free(ops);
	return 0;
}

struct mget_ctx {
	struct out *o;
	const char *const *paths;
	const char *failed_path;
};

static int add_value(void *arg, size_t i, int rc, const void *value, size_t len)
{
	struct mget_ctx *m = arg;
	if (rc && rc != -ENOENT) {
		m->failed_path = m->paths[i];
		return rc;
	}
	out_word(m->o, m->paths[i]);
	if (rc == -ENOENT) {
		out_add(m->o, " -\n", 3);
		return m->o->rc;
	}
	out_printf(m->o, " %zu\n", len);
	out_add(m->o, value, len);
	out_add(m->o, "\n", 1);
	return m->o->rc;
}

static int run_mget(const struct ctl_env *env, const struct request *r, struct out *o,
		    int *outcome)
{
	if (r->n < 2)
		return usage(o, "usage: mget PATH [PATH...]");
	out_printf(o, "ok %d\n", r->n - 1);
	struct mget_ctx m = {.o = o, .paths = (const char *const *)r->words + 1};
	*outcome = nadb_read_values(env->st, m.paths, (size_t)r->n - 1, env->who,
				    CTL_REPLY_MAX, add_value, &m);
	if (*outcome)
		out_error(o, *outcome, m.failed_path,
			  *outcome == -EFBIG ? "the values add up to more than 64 MiB" : NULL);
	return 0;
}

static int run_maintenance(const struct ctl_env *env, const struct request *r, struct out *o,
			   int *outcome)
{
	if (r->n != 1)
		return usage(o, "flush, compact and reap take no arguments");
	if (!env->admin) {
		*outcome = -EPERM;
		out_error(o, -EPERM, NULL, "only the mount's owner or root may flush, compact or reap");
		return 0;
	}
	*outcome = env->maintain(env->maintain_ctx, r->words[0]);
	if (*outcome)
		out_error(o, *outcome, NULL, NULL);
	else
		out_add(o, "ok\n", 3);
	return 0;
}

static int run_request(const struct ctl_env *env, struct request *r, struct out *o,
		       int *outcome)
{
	const char *cmd = r->words[0];
	if (!strcmp(cmd, "incr"))
		return run_incr(env, r, o, outcome);
	if (!strcmp(cmd, "cas"))
		return run_cas(env, r, o, outcome);
	if (!strcmp(cmd, "mset"))
		return run_mset(env, r, o, outcome);
	if (!strcmp(cmd, "mget"))
		return run_mget(env, r, o, outcome);
	if (!strcmp(cmd, "flush") || !strcmp(cmd, "compact") || !strcmp(cmd, "reap"))
		return run_maintenance(env, r, o, outcome);
	char why[128];
	snprintf(why, sizeof(why), "unknown command '%.40s' (incr, cas, mset, mget, flush, "
		 "compact or reap)", cmd);
	return usage(o, why);
}

/* ---- the descriptor ------------------------------------------------------ */

/* Parse the header once its line is in: how long the request is; the
 * words are kept for the run. */
static int take_header(struct ctl *c, const char **why)
{
	char *nl = memchr(c->req + c->scanned, '\n', c->len - c->scanned);
	c->scanned = c->len;
	if (!nl && c->readable) {
		if (c->len > CTL_HEADER_MAX) {
			*why = "no newline in the first MiB: a header is one line";
			return -EINVAL;
		}
		return 0; /* more to come */
	}
	size_t end = nl ? (size_t)(nl - c->req) : c->len;
	if (end > CTL_HEADER_MAX) {
		*why = "a header is at most 1 MiB";
		return -EINVAL;
	}
	c->header_len = end + (nl != NULL);
	c->line_len = end;
	if (!c->readable) /* "echo flush >": the line ends where the write does */
		while (c->line_len && strchr(" \t\r\n", c->req[c->line_len - 1]))
			c->line_len--;
	if (memchr(c->req, 0, c->line_len)) {
		*why = "a NUL byte in the header";
		return -EINVAL;
	}
	char *h = strndup(c->req, c->line_len);
	struct request *r = h ? malloc(sizeof(*r)) : NULL;
	size_t payload;
	int rc = r ? split_words(h, r, why) : -ENOMEM;
	if (!rc)
		rc = payload_length(r, &payload, why);
	if (!rc && payload > CTL_REQUEST_MAX - c->header_len) {
		*why = "a request is at most 64 MiB";
		rc = -EFBIG;
	}
	if (rc) {
		free(h);
		free(r);
		return rc;
	}
	c->need = c->header_len + payload;
	c->parsed = r;
	c->header = h;
	return 0;
}

/* Room for MORE bytes: at once for what the header says is coming,
 * within the daemon's budget for all descriptors. */
static int grow_request(struct ctl *c, size_t more)
{
	size_t want = c->len + more + 1;
	if (c->need + 1 > want)
		want = c->need + 1;
	if (want <= c->cap)
		return 0;
	size_t cap = c->cap ? c->cap : 4096;
	while (cap < want)
		cap *= 2;
	if (c->need && cap > c->need + 1)
		cap = c->need + 1;
	if (atomic_fetch_add(c->in_flight, cap - c->cap) + (cap - c->cap) > CTL_IN_FLIGHT_MAX) {
		atomic_fetch_sub(c->in_flight, cap - c->cap);
		return -EAGAIN;
	}
	char *b = realloc(c->req, cap);
	if (!b) {
		atomic_fetch_sub(c->in_flight, cap - c->cap);
		return -ENOMEM;
	}
	c->req = b;
	c->cap = cap;
	return 0;
}

/* A request failed before it could run: say why, in the reply and the log. */
static int refuse(struct ctl *c, int rc, const char *why)
{
	struct out o = {0};
	out_error(&o, rc, NULL, why);
	c->refused = true;
	forget_request(c);
	forget_reply(c);
	c->reply = o.buf;
	c->reply_len = o.rc ? 0 : o.len;
	nadb_log(".ctl: %s", why ? why : strerror(-rc));
	return rc;
}

/* Run the whole request in C.  Returns what the write returns: 0, or
 * the errno of a request that could not run (malformed: EINVAL) or, on a
 * write-only descriptor, of one that failed. */
static int run_whole(struct ctl *c, const struct ctl_env *env)
{
	struct request *r = c->parsed;
	r->payload = c->req + c->header_len;
	struct out o = {0};
	int outcome = 0;
	struct ctl_env as_opener = *env;
	as_opener.who = &c->who;
	as_opener.admin = c->admin;
	int rc = run_request(&as_opener, r, &o, &outcome);
	if (o.rc)
		rc = o.rc;
	forget_request(c);
	forget_reply(c);
	c->reply = o.buf;
	c->reply_len = o.rc ? 0 : o.len;
	if (rc)
		nadb_log(".ctl: %.*s", (int)strcspn(c->reply ? c->reply : "", "\n"),
			 c->reply ? c->reply : "");
	return rc ? rc : c->readable ? 0 : outcome;
}

/* Are the N bytes at P only blanks and newlines? */
static bool only_blanks(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strchr(" \t\r\n", p[i]))
			return false;
	return true;
}

ssize_t ctl_write(struct ctl *c, const struct ctl_env *env, const char *buf, size_t size)
{
	pthread_mutex_lock(&c->lock);
	if (c->refused) { /* the rest of a refused request, or misuse */
		pthread_mutex_unlock(&c->lock);
		return -EINVAL;
	}
	if (c->len == 0)
		forget_reply(c); /* a new request: the last reply was read, or is moot */
	int rc = 0;
	const char *why = NULL;
	if (size > CTL_REQUEST_MAX - c->len)
		rc = -EFBIG, why = "a request is at most 64 MiB";
	if (!rc && (rc = grow_request(c, size)))
		why = rc == -EAGAIN ? "the daemon holds too many requests; try again" : NULL;
	if (!rc) {
		memcpy(c->req + c->len, buf, size);
		c->len += size;
		c->req[c->len] = 0;
	}
	if (!rc && !c->header_len)
		rc = take_header(c, &why);
	if (!rc && !c->readable && c->header_len && c->len > c->need &&
	    only_blanks(c->req + c->need, c->len - c->need))
		c->len = c->need; /* "flush\n\n" */
	if (rc) {
		rc = refuse(c, rc, why);
	} else if (c->header_len && c->len >= c->need) {
		if (c->len > c->need)
			rc = refuse(c, -EINVAL, "more bytes than the request's lengths say");
		else
			rc = run_whole(c, env);
	}
	pthread_mutex_unlock(&c->lock);
	return rc ? rc : (ssize_t)size;
}

size_t ctl_read(struct ctl *c, char *buf, size_t size)
{
	pthread_mutex_lock(&c->lock);
	size_t n = c->reply_len - c->reply_off;
	if (n > size)
		n = size;
	if (n)
		memcpy(buf, c->reply + c->reply_off, n);
	c->reply_off += n;
	c->refused = false; /* the client heard why: it may ask again */
	pthread_mutex_unlock(&c->lock);
	return n;
}
