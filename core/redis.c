/* redis.c -- the Redis connection the Redis backend shares: store URLs,
 * connecting (timeouts, AUTH, a version check), pipelined binary-safe
 * commands that survive a server restart, key names, the format marker
 * and the store lock.  See redis.h for the key layout.
 *
 * Why reconnect here and not in the callers: a Redis restart or a failover
 * breaks every connection, and the backends must then neither fail a whole
 * mount nor leave a step half applied.  They only ever send commands that
 * may safely run twice (see redis_pipeline), so the rule is simple: on a
 * broken connection, reconnect for a bounded time and send the whole
 * pipeline again; if the server stays away, one log line and -EIO.
 */
#include "redis.h"
#include "clock.h"
#include "cluster.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CONNECT_MS 2000          /* ms: connecting to the server */
#define COMMAND_MS 15000         /* ms: waiting for one reply (a big EXEC too) */
#define RECONNECT_MS 10000       /* ms: trying to reach a server that went away */
#define RECONNECT_PAUSE_MS 50    /* ms: first pause between tries, doubled... */
#define RECONNECT_PAUSE_MAX 1000 /* ms: ...up to this */
#define REPLICA_RECHECK_MS 10000 /* ms: how old the replica count may get */
#define NEED_MAJOR 7             /* oldest server: 7.0, see check_version */
#define NEED_MINOR 0

struct redis_conn {
	redisContext *ctx; /* NULL while disconnected */
	struct redis_url url;
	int replicas;             /* connected replicas, as last seen */
	uint64_t reconnects;      /* times the connection was made again */
	uint64_t replicas_seen_ms; /* when (monotonic ms); 0: never */
	long long lock_gen;       /* the store lock's generation when we took it; 0: none */
	unsigned reconnect_ms;    /* how long a lost server is tried for */
	struct redis_cluster *cluster; /* the routes, when the server is a cluster node */
	unsigned node_tries; /* a subscriber: other nodes tried (subscribe_elsewhere) */
};


void redis_pause_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ---- URLs ------------------------------------------------------------------ */

bool store_is_redis_url(const char *store)
{
	return store && (!strncmp(store, "redis://", 8) || !strncmp(store, "rediss://", 9));
}

static int bad_url(const char *url, const char *why)
{
	nadb_log("redis: bad store URL \"%s\": %s (want "
		 "redis://[[USER]:PASSWORD@]HOST[:PORT][/NAME])", url, why);
	return -EINVAL;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Copy the LEN bytes at S into OUT (SIZE bytes) undoing %XX escapes. */
static bool unescape_into(const char *s, size_t len, char *out, size_t size)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch == '%') {
			if (i + 2 >= len)
				return false;
			int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			ch = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o + 1 >= size)
			return false;
		out[o++] = ch;
	}
	out[o] = '\0';
	return true;
}

static bool name_is_valid(const char *s, size_t len)
{
	if (len < 1 || len > REDIS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

/* USER:PASSWORD (or :PASSWORD) of the LEN bytes at S. */
static int parse_userinfo(const char *url, const char *s, size_t len, struct redis_url *out)
{
	const char *colon = memchr(s, ':', len);
	if (!colon)
		return bad_url(url, "a password needs a ':' before it (redis://:PASSWORD@...)");
	size_t ulen = (size_t)(colon - s);
	if (!unescape_into(s, ulen, out->user, sizeof(out->user)) ||
	    !unescape_into(colon + 1, len - ulen - 1, out->password, sizeof(out->password)))
		return bad_url(url, "user or password too long or badly %-escaped");
	out->has_password = true;
	return 0;
}

/* HOST[:PORT] or [V6]:PORT of the LEN bytes at S. */
static int parse_hostport(const char *url, const char *s, size_t len, struct redis_url *out)
{
	const char *host = s, *port = NULL;
	size_t hlen;
	if (len && s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (!close)
			return bad_url(url, "an IPv6 address needs its closing ']'");
		host = s + 1;
		hlen = (size_t)(close - host);
		size_t rest = len - (size_t)(close + 1 - s);
		if (rest && close[1] != ':')
			return bad_url(url, "unexpected text after ']'");
		port = rest ? close + 2 : NULL;
	} else {
		const char *colon = memchr(s, ':', len);
		hlen = colon ? (size_t)(colon - s) : len;
		port = colon ? colon + 1 : NULL;
	}
	if (hlen == 0)
		return bad_url(url, "empty host");
	if (hlen >= sizeof(out->host))
		return bad_url(url, "host name too long");
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	out->port = 6379;
	if (port) {
		size_t plen = len - (size_t)(port - s);
		long v = 0;
		for (size_t i = 0; i < plen && v <= 65535; i++) {
			if (port[i] < '0' || port[i] > '9')
				return bad_url(url, "the port is not a number");
			v = v * 10 + (port[i] - '0');
		}
		if (plen == 0 || v < 1 || v > 65535)
			return bad_url(url, "the port must be 1..65535");
		out->port = (int)v;
	}
	return 0;
}

int redis_url_parse(const char *url, struct redis_url *out)
{
	memset(out, 0, sizeof(*out));
	if (!url)
		return -EINVAL;
	if (!strncmp(url, "rediss://", 9)) {
		nadb_log("redis: \"%s\": TLS (rediss://) is not supported: hiredis 0.14 "
			 "has no TLS; use redis:// on a trusted network or a tunnel", url);
		return -EPROTONOSUPPORT;
	}
	if (strncmp(url, "redis://", 8))
		return bad_url(url, "it does not start with redis://");
	const char *s = url + 8;
	/* NAME cannot hold '@' or '/', so the last '@' ends the user part and
	 * a password may hold anything. */
	const char *at = strrchr(s, '@');
	if (at) {
		int rc = parse_userinfo(url, s, (size_t)(at - s), out);
		if (rc)
			return rc;
		s = at + 1;
	}
	const char *slash = strchr(s, '/');
	size_t hplen = slash ? (size_t)(slash - s) : strlen(s);
	int rc = parse_hostport(url, s, hplen, out);
	if (rc)
		return rc;
	const char *name = slash ? slash + 1 : "nadb";
	if (slash && !*name)
		name = "nadb"; /* "redis://h:1/" */
	if (!name_is_valid(name, strlen(name)))
		return bad_url(url, "NAME must be 1..64 of A-Z a-z 0-9 _ . -");
	strcpy(out->name, name);
	return 0;
}

/* ---- SIGPIPE --------------------------------------------------------------- */

/* hiredis write()s to its socket; a server that went away would kill the
 * process with SIGPIPE.  A library must not change the process's signal
 * dispositions, so the calling thread blocks SIGPIPE around socket work
 * and swallows one it caused itself. */
struct sigpipe_guard {
	sigset_t old;
	bool was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	g->was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipe, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- connecting ------------------------------------------------------------ */

static struct timeval tv_of_ms(unsigned ms)
{
	return (struct timeval){ms / 1000, (long)(ms % 1000) * 1000};
}

static bool error_is(const redisReply *r, const char *prefix)
{
	return r && r->type == REDIS_REPLY_ERROR &&
	       !strncasecmp(r->str, prefix, strlen(prefix));
}

/* -EACCES if the server refused our password (or wants one). */
static int authenticate(struct redis_conn *c)
{
	const struct redis_url *u = &c->url;
	if (!u->has_password)
		return 0;
	const char *argv[3] = {"AUTH", u->user, u->password};
	size_t lens[3] = {4, strlen(u->user), strlen(u->password)};
	int argc = u->user[0] ? 3 : 2;
	if (argc == 2) {
		argv[1] = u->password;
		lens[1] = lens[2];
	}
	redisReply *r = redisCommandArgv(c->ctx, argc, argv, lens);
	if (!r)
		return -EIO;
	int rc = 0;
	if (r->type == REDIS_REPLY_ERROR) {
		nadb_log("redis %s:%d: the server refused the password%s%s: %s", u->host,
			 u->port, u->user[0] ? " of user " : "", u->user, r->str);
		rc = -EACCES;
	}
	freeReplyObject(r);
	return rc;
}

/* 7.0 at least: a group's scripts run inside its MULTI, and only 7.0
 * checks a flagged script for OOM before the transaction starts (6.2
 * refuses a script's first write halfway through it, leaving the rest of
 * the transaction applied); scans use ZRANGE ... BYLEX LIMIT (6.2), and
 * USER:PASSWORD URLs need ACLs (6.0). */
static int check_version(struct redis_conn *c)
{
	const struct redis_url *u = &c->url;
	redisReply *r = redisCommand(c->ctx, "INFO server");
	if (!r)
		return -EIO;
	int rc = 0;
	const char *v = r->type == REDIS_REPLY_STRING ? strstr(r->str, "redis_version:") : NULL;
	int major = 0, minor = 0;
	if (error_is(r, "NOAUTH")) {
		nadb_log("redis %s:%d: the server wants a password "
			 "(redis://:PASSWORD@HOST:PORT/NAME)", u->host, u->port);
		rc = -EACCES;
	} else if (!v || sscanf(v + 14, "%d.%d", &major, &minor) != 2) {
		nadb_log("redis %s:%d: cannot tell the server's version: %s", u->host,
			 u->port, r->type == REDIS_REPLY_ERROR ? r->str : "no redis_version");
		rc = -EPROTONOSUPPORT;
	} else if (major < NEED_MAJOR || (major == NEED_MAJOR && minor < NEED_MINOR)) {
		nadb_log("redis %s:%d: server version %d.%d is too old: nadb needs 7.0 or "
			 "later (scripts checked for OOM before a transaction runs)",
			 u->host, u->port, major, minor);
		rc = -EPROTONOSUPPORT;
	}
	freeReplyObject(r);
	return rc;
}

/* hiredis keeps the text of the failure, not its errno (which later calls
 * may have changed). */
static int errno_of_ctx(const redisContext *ctx)
{
	if (ctx->err == REDIS_ERR_IO && strstr(ctx->errstr, strerror(ECONNREFUSED)))
		return -ECONNREFUSED;
	if (ctx->err == REDIS_ERR_IO && (strstr(ctx->errstr, strerror(ETIMEDOUT)) ||
					 strstr(ctx->errstr, strerror(EAGAIN)) ||
					 strstr(ctx->errstr, "timed out")))
		return -ETIMEDOUT;
	if (ctx->err == REDIS_ERR_OOM)
		return -ENOMEM;
	return -EIO;
}

/* One try: connect, set timeouts, AUTH, check the version.  Logs only
 * refusals a retry cannot cure (password, version); the callers log the
 * rest once. */
static int connect_once(struct redis_conn *c)
{
	struct sigpipe_guard g;
	sigpipe_block(&g);
	int rc = 0;
	c->ctx = redisConnectWithTimeout(c->url.host, c->url.port, tv_of_ms(CONNECT_MS));
	if (!c->ctx)
		rc = -ENOMEM;
	else if (c->ctx->err)
		rc = errno_of_ctx(c->ctx);
	if (!rc && (redisSetTimeout(c->ctx, tv_of_ms(COMMAND_MS)) != REDIS_OK ||
		    redisEnableKeepAlive(c->ctx) != REDIS_OK))
		rc = -EIO;
	if (!rc)
		rc = authenticate(c);
	if (!rc)
		rc = check_version(c);
	if (rc == -EIO && c->ctx && c->ctx->err)
		rc = errno_of_ctx(c->ctx);
	if (rc && c->ctx) {
		redisFree(c->ctx);
		c->ctx = NULL;
	}
	sigpipe_restore(&g);
	return rc;
}

static bool is_final(int rc)
{
	return rc == -EACCES || rc == -EPROTONOSUPPORT || rc == -ENOMEM;
}

/* Reconnect, trying for up to RECONNECT_MS. */
static int reconnect(struct redis_conn *c)
{
	if (c->ctx) {
		redisFree(c->ctx);
		c->ctx = NULL;
	}
	uint64_t deadline = monotonic_ms() + c->reconnect_ms;
	unsigned pause = RECONNECT_PAUSE_MS;
	int rc;
	for (;;) {
		rc = connect_once(c);
		if (!rc || is_final(rc) || monotonic_ms() + pause > deadline)
			break;
		redis_pause_ms(pause);
		pause = pause * 2 > RECONNECT_PAUSE_MAX ? RECONNECT_PAUSE_MAX : pause * 2;
	}
	if (rc && c->reconnect_ms) /* else the router says */
		nadb_log("redis %s:%d: the server went away and is still unreachable "
			 "after %u ms: %s", c->url.host, c->url.port, c->reconnect_ms,
			 strerror(-rc));
	c->replicas_seen_ms = 0;
	c->reconnects++;
	return rc;
}

uint64_t redis_conn_reconnects(const struct redis_conn *c)
{
	return c->reconnects + (c->cluster ? redis_cluster_changes(c->cluster) : 0);
}

/* Open C (its url set, or RC an error already): connect, route. */
static int open_conn(struct redis_conn *c, int rc, struct redis_conn **out)
{
	c->reconnect_ms = RECONNECT_MS;
	if (!rc) {
		rc = connect_once(c);
		if (rc && !is_final(rc))
			nadb_log("redis %s:%d: cannot connect: %s", c->url.host,
				 c->url.port, strerror(-rc));
	}
	if (!rc) {
		rc = redis_cluster_open(c, &c->cluster);
		if (rc == -ENOTSUP)
			rc = 0;
	}
	if (rc) {
		redis_conn_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

int redis_conn_open(const char *url, struct redis_conn **out)
{
	struct redis_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	return open_conn(c, redis_url_parse(url, &c->url), out);
}

int redis_conn_open_like(const struct redis_conn *like, struct redis_conn **out)
{
	struct redis_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->url = like->url;
	return open_conn(c, 0, out);
}

int redis_conn_open_at(const struct redis_conn *like, const char *host, int port,
		       struct redis_conn **out)
{
	if (strlen(host) >= sizeof(like->url.host))
		return -EINVAL;
	struct redis_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->url = like->url;
	snprintf(c->url.host, sizeof(c->url.host), "%s", host);
	c->url.port = port;
	c->reconnect_ms = 0; /* one try: the router looks elsewhere, and says */
	int rc = connect_once(c);
	if (rc) {
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void redis_conn_close(struct redis_conn *c)
{
	if (!c)
		return;
	redis_cluster_close(c->cluster);
	if (c->ctx)
		redisFree(c->ctx);
	free(c);
}

bool redis_conn_is_cluster(const struct redis_conn *c)
{
	return c->cluster != NULL;
}

const struct redis_url *redis_conn_url(const struct redis_conn *c)
{
	return &c->url;
}

const char *redis_conn_name(const struct redis_conn *c)
{
	return c->url.name;
}

size_t redis_key(const struct redis_conn *c, unsigned p, const char *what, char *buf,
		 size_t size)
{
	int n = snprintf(buf, size, "{nadb:%s:p%u}:%s", c->url.name, p, what);
	assert(n > 0 && (size_t)n < size); /* callers size BUF for the longest */
	return (size_t)n;
}

/* ---- commands -------------------------------------------------------------- */

/* Send the commands and read the replies once.  -EIO if the connection
 * broke (the context is then useless); replies read so far are freed. */
static int pipeline_once(struct redis_conn *c, const struct redis_cmd *cmds, size_t n,
			 redisReply **replies)
{
	if (!c->ctx)
		return -EIO;
	for (size_t i = 0; i < n; i++)
		if (redisAppendCommandArgv(c->ctx, cmds[i].argc, cmds[i].argv,
					   cmds[i].argvlen) != REDIS_OK)
			return -EIO;
	size_t got = 0;
	for (; got < n; got++) {
		void *r = NULL;
		if (redisGetReply(c->ctx, &r) != REDIS_OK || !r)
			break;
		replies[got] = r;
	}
	if (got == n)
		return 0;
	for (size_t i = 0; i < got; i++)
		freeReplyObject(replies[i]);
	return -EIO;
}

/* Is this a reply the server gives while it cannot serve us yet? */
static bool is_transient(const redisReply *r)
{
	return error_is(r, "LOADING") || error_is(r, "TRYAGAIN") ||
	       error_is(r, "MASTERDOWN") || error_is(r, "BUSY ");
}

static bool any_transient(redisReply **replies, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (is_transient(replies[i]))
			return true;
	return false;
}

static void free_replies(redisReply **replies, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		freeReplyObject(replies[i]);
		replies[i] = NULL;
	}
}

int redis_pipeline(struct redis_conn *c, const struct redis_cmd *cmds, size_t n,
		   redisReply **replies)
{
	struct sigpipe_guard g;
	sigpipe_block(&g);
	uint64_t deadline = monotonic_ms() + c->reconnect_ms;
	int rc;
	for (;;) {
		rc = pipeline_once(c, cmds, n, replies);
		if (!rc && !any_transient(replies, n))
			break;
		if (!rc) { /* loading its data after a restart: wait */
			free_replies(replies, n);
			rc = -EIO;
			if (monotonic_ms() > deadline) {
				if (c->reconnect_ms) /* else the router says */
					nadb_log("redis %s:%d: the server is still not ready "
						 "after %u ms", c->url.host, c->url.port,
						 c->reconnect_ms);
				break;
			}
			redis_pause_ms(RECONNECT_PAUSE_MS);
			continue;
		}
		if (monotonic_ms() > deadline || reconnect(c))
			break;
	}
	sigpipe_restore(&g);
	return rc;
}

struct redis_cmd redis_wait_cmd(struct redis_wait *w, int replicas, unsigned ms)
{
	w->argv[0] = "WAIT", w->lens[0] = 4;
	w->argv[1] = w->nrep, w->lens[1] = (size_t)snprintf(w->nrep, sizeof(w->nrep), "%d", replicas);
	w->argv[2] = w->ms, w->lens[2] = (size_t)snprintf(w->ms, sizeof(w->ms), "%u", ms);
	return (struct redis_cmd){3, w->argv, w->lens};
}

int redis_reply_error(const struct redis_conn *c, const char *why, const redisReply *r)
{
	int rc = -EIO;
	if (error_is(r, "OOM"))
		rc = -ENOSPC;
	else if (error_is(r, "NOAUTH") || error_is(r, "WRONGPASS") || error_is(r, "NOPERM"))
		rc = -EACCES;
	else if (error_is(r, "READONLY"))
		rc = -EROFS;
	nadb_log("redis %s:%d/%s: %s: %s", c->url.host, c->url.port, c->url.name, why,
		 r && r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
	return rc;
}

/* The slot of partition P's keys. */
static uint16_t slot_of(const struct redis_conn *c, unsigned p)
{
	char key[REDIS_NAME_MAX + 32];
	return redis_slot(key, redis_key(c, p, "", key, sizeof(key)));
}

#define OWN_SERVER (-1) /* a route: C's own server, whatever the keys */

/* The route of partition P's keys: its slot on a cluster. */
static int route_of_part(const struct redis_conn *c, unsigned p)
{
	return c->cluster ? slot_of(c, p) : OWN_SERVER;
}

static int route_of_key(const struct redis_conn *c, const char *key)
{
	return c->cluster ? redis_slot(key, strlen(key)) : OWN_SERVER;
}

/* Send to the route's server: SLOT's node, or C's own (OWN_SERVER). */
static int pipeline_to(struct redis_conn *c, int slot, const struct redis_cmd *cmds, size_t n,
		       redisReply **replies)
{
	if (slot == OWN_SERVER)
		return redis_pipeline(c, cmds, n, replies);
	struct sigpipe_guard g;
	sigpipe_block(&g);
	int rc = redis_cluster_pipeline(c->cluster, (uint16_t)slot, cmds, n, replies);
	sigpipe_restore(&g);
	return rc;
}

int redis_pipeline_in(struct redis_conn *c, unsigned p, const struct redis_cmd *cmds, size_t n,
		      redisReply **replies)
{
	return pipeline_to(c, route_of_part(c, p), cmds, n, replies);
}

/* One command to the route's server; an error reply becomes its errno. */
static int run_one(struct redis_conn *c, int slot, const char *why, int argc, const char **argv,
		   const size_t *argvlen, redisReply **out)
{
	struct redis_cmd cmd = {argc, argv, argvlen};
	*out = NULL;
	redisReply *r;
	int rc = pipeline_to(c, slot, &cmd, 1, &r);
	if (rc)
		return rc;
	if (r->type == REDIS_REPLY_ERROR) {
		rc = redis_reply_error(c, why, r);
		freeReplyObject(r);
		return rc;
	}
	*out = r;
	return 0;
}

int redis_run(struct redis_conn *c, const char *why, int argc, const char **argv,
	      const size_t *argvlen, redisReply **out)
{
	return run_one(c, OWN_SERVER, why, argc, argv, argvlen, out);
}

int redis_run_in(struct redis_conn *c, unsigned p, const char *why, int argc,
		 const char **argv, const size_t *argvlen, redisReply **out)
{
	return run_one(c, route_of_part(c, p), why, argc, argv, argvlen, out);
}

int redis_run_key(struct redis_conn *c, const char *key, const char *why, int argc,
		  const char **argv, const size_t *argvlen, redisReply **out)
{
	return run_one(c, route_of_key(c, key), why, argc, argv, argvlen, out);
}

int redis_pipeline_key(struct redis_conn *c, const char *key, const struct redis_cmd *cmds,
		       size_t n, redisReply **replies)
{
	return pipeline_to(c, route_of_key(c, key), cmds, n, replies);
}

int redis_each_server(struct redis_conn *c, int (*fn)(struct redis_conn *server, void *ctx),
		      void *ctx)
{
	return c->cluster ? redis_cluster_each_primary(c->cluster, fn, ctx) : fn(c, ctx);
}

/* Run a command of plain-text arguments (no NUL bytes) on partition P's
 * server (or, with OWN_SERVER, C's own). */
static int run_text(struct redis_conn *c, int p, const char *why, int argc, const char **argv,
		    redisReply **out)
{
	size_t lens[16];
	assert(argc <= 16);
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	return run_one(c, p == OWN_SERVER ? OWN_SERVER : route_of_part(c, (unsigned)p), why,
		       argc, argv, lens, out);
}

/* run_text for a command answered by an integer: into *RESULT (0 if the
 * reply is of another type). */
static int run_for_integer(struct redis_conn *c, int p, const char *why, int argc,
			   const char **argv, long long *result)
{
	redisReply *r;
	int rc = run_text(c, p, why, argc, argv, &r);
	if (rc)
		return rc;
	*result = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	freeReplyObject(r);
	return 0;
}

int redis_replicas(struct redis_conn *c, int *out)
{
	if (c->replicas_seen_ms && monotonic_ms() - c->replicas_seen_ms < REPLICA_RECHECK_MS) {
		*out = c->replicas;
		return 0;
	}
	redisReply *r;
	const char *argv[] = {"INFO", "replication"};
	int rc = run_text(c, OWN_SERVER, "INFO replication", 2, argv, &r);
	if (rc)
		return rc;
	const char *v = r->type == REDIS_REPLY_STRING ? strstr(r->str, "connected_slaves:") : NULL;
	c->replicas = v ? atoi(v + 17) : 0;
	c->replicas_seen_ms = monotonic_ms();
	freeReplyObject(r);
	*out = c->replicas;
	return 0;
}

int redis_replicas_fresh(struct redis_conn *c, unsigned p, int *out)
{
	int rc = 0;
	if (c->cluster)
		rc = redis_cluster_reload(c->cluster);
	else
		c->replicas_seen_ms = 0;
	return rc ? rc : redis_replicas_in(c, p, out);
}

int redis_replicas_key(struct redis_conn *c, const char *key, int *out)
{
	if (!c->cluster)
		return redis_replicas(c, out);
	*out = redis_cluster_replicas(c->cluster, redis_slot(key, strlen(key)));
	return 0;
}

int redis_replicas_in(struct redis_conn *c, unsigned p, int *out)
{
	if (!c->cluster)
		return redis_replicas(c, out);
	/* from the map, which a failover reloads: no round trip to a node
	 * that may be dead, and the count of the primary the router uses */
	*out = redis_cluster_replicas(c->cluster, slot_of(c, p));
	return 0;
}

/* ---- the format marker ------------------------------------------------------ */

/* How many of the keys a store has once used exist. */
static int count_store_keys(struct redis_conn *c, long long *count)
{
	enum { N = 2 * KV_NTABLES + 6 };
	char names[N][REDIS_NAME_MAX + 48];
	const char *argv[N + 1];
	size_t lens[N + 1];
	argv[0] = "EXISTS";
	lens[0] = 6;
	int n = 1;
	for (int t = 0; t < KV_NTABLES; t++) {
		for (int h = 0; h < 2; h++) {
			char what[40];
			snprintf(what, sizeof(what), "t:%s:%c", kv_table_name(t), h ? 'h' : 'z');
			lens[n] = redis_key(c, 0, what, names[n - 1], sizeof(names[0]));
			argv[n] = names[n - 1];
			n++;
		}
	}
	static const char *const others[] = {"segs", "punched", "gone", "inos", "parts",
					     "partitions"};
	for (int i = 0; i < 6; i++, n++) {
		lens[n] = redis_key(c, 0, others[i], names[n - 1], sizeof(names[0]));
		argv[n] = names[n - 1];
	}
	redisReply *r;
	int rc = redis_run_in(c, 0, "EXISTS", n, argv, lens, &r);
	if (rc)
		return rc;
	*count = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	freeReplyObject(r);
	return 0;
}

/* The format key's reply (nil: no store). */
static int get_format(struct redis_conn *c, redisReply **r)
{
	char key[REDIS_NAME_MAX + 48];
	redis_key(c, 0, "format", key, sizeof(key));
	const char *get[] = {"GET", key};
	return run_text(c, 0, "GET format", 2, get, r);
}

/* The format text's kind: 0 a layout of today's, 1 an older one this
 * nadb takes on (marked anew by a writer), -1 none it knows. */
static int format_kind(const char *text)
{
	if (!strcmp(text, REDIS_FORMAT_TEXT) || !strcmp(text, REDIS_FORMAT_TEXT_UNTAGGED))
		return 0;
	if (!strcmp(text, REDIS_FORMAT_TEXT_4) || !strcmp(text, REDIS_FORMAT_TEXT_3) ||
	    !strcmp(text, REDIS_FORMAT_TEXT_2))
		return 1;
	return -1;
}

int redis_check_format(struct redis_conn *c)
{
	char key[REDIS_NAME_MAX + 48];
	redis_key(c, 0, "format", key, sizeof(key));
	redisReply *r;
	int rc = get_format(c, &r);
	if (rc)
		return rc;
	if (r->type == REDIS_REPLY_STRING) {
		int kind = format_kind(r->str);
		if (kind == 1)
			rc = -ESTALE; /* readable as it is; redis_claim_format marks it */
		else if (kind < 0) {
			nadb_log("redis %s:%d/%s: the store's layout is \"%s\"; this nadb "
				 "knows \"%s\" to \"%s\" only (move a store between "
				 "layouts with the nadb that made it: nadb dump, then nadb "
				 "load into a new NAME)", c->url.host, c->url.port, c->url.name,
				 r->str, REDIS_FORMAT_TEXT_2, REDIS_FORMAT_TEXT);
			rc = -EPROTO;
		}
		freeReplyObject(r);
		return rc;
	}
	freeReplyObject(r);
	long long count = 0;
	rc = count_store_keys(c, &count);
	if (rc)
		return rc;
	if (count) {
		nadb_log("redis %s:%d/%s: %lld keys of a store are there but not its "
			 "format marker %s: not a nadb store, or a damaged one; refusing "
			 "to use it (pick another NAME)", c->url.host, c->url.port,
			 c->url.name, count, key);
		return -EEXIST;
	}
	return -ENOENT;
}

int redis_claim_format(struct redis_conn *c)
{
	int rc = redis_check_format(c);
	if (rc != -ENOENT && rc != -ESTALE)
		return rc;
	/* NX: two daemons opening a new store at once both find it marked.
	 * XX: an older layout marked as today's, its segments where they are */
	bool older = rc == -ESTALE, tagged = true;
	if (older && (rc = redis_segments_tagged(c, &tagged)))
		return rc;
	char key[REDIS_NAME_MAX + 48];
	redis_key(c, 0, "format", key, sizeof(key));
	const char *set[] = {"SET", key, tagged ? REDIS_FORMAT_TEXT : REDIS_FORMAT_TEXT_UNTAGGED,
			     older ? "XX" : "NX"};
	redisReply *r;
	rc = run_text(c, 0, "SET format", 4, set, &r);
	if (!rc)
		freeReplyObject(r);
	return rc;
}

int redis_segments_tagged(struct redis_conn *c, bool *out)
{
	redisReply *r;
	int rc = get_format(c, &r);
	if (rc)
		return rc;
	*out = r->type != REDIS_REPLY_STRING || !strcmp(r->str, REDIS_FORMAT_TEXT) ||
	       !strcmp(r->str, REDIS_FORMAT_TEXT_4);
	freeReplyObject(r);
	return 0;
}

/* ---- the store lock --------------------------------------------------------- */

/* Taking the lock counts a generation (KEYS[2]): every taker, tools too,
 * takes it this way, so a generation that did not move means nobody held
 * the lock in between.  It stays above partition 0's fence (KEYS[3],
 * kv_redis.c: the last generation that wrote), even if the count was
 * lost.  1.. the new generation; -GEN already ours (a retried take); 0
 * held by another. */
static const char take_script[] =
	"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
	"local g = redis.call('INCR', KEYS[2]) "
	"local f = tonumber(redis.call('GET', KEYS[3]) or '0') or 0 "
	"if g <= f then g = f + 1 redis.call('SET', KEYS[2], g) end return g end "
	"if redis.call('GET', KEYS[1]) == ARGV[1] then "
	"redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
	"return -(tonumber(redis.call('GET', KEYS[2]) or '0') or 0) end return 0";
/* 1: refreshed; 2: it had expired (the server was away longer than its
 * life) and nobody took it since (the generation ARGV[3] is still ours):
 * taken again; 0: lost. */
static const char refresh_script[] =
	"local v = redis.call('GET', KEYS[1]) "
	"if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
	"if not v and redis.call('GET', KEYS[2]) == ARGV[3] then "
	"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end return 0";
static const char release_script[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then "
	"return redis.call('DEL', KEYS[1]) end return 0";

/* Our text (ARGV[1]) becomes ARGV[2]; already ARGV[2] is ours too (a
 * resend after a reconnect, the first one having run). */
static const char retext_script[] =
	"local v = redis.call('GET', KEYS[1]) "
	"if v == ARGV[1] or v == ARGV[2] then "
	"return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) and 1 end return 0";

int redis_store_lock_holder(struct redis_conn *c, char *buf, size_t size)
{
	char key[REDIS_NAME_MAX + 48];
	redis_key(c, 0, "lock", key, sizeof(key));
	const char *get[] = {"GET", key};
	redisReply *r;
	int rc = run_text(c, 0, "reading the store lock", 2, get, &r);
	if (rc)
		return rc;
	rc = r->type == REDIS_REPLY_STRING ? 0 : -ENOENT;
	if (!rc)
		snprintf(buf, size, "%s", r->str);
	freeReplyObject(r);
	return rc;
}

int redis_store_lock_retext(struct redis_conn *c, const char *owner, const char *text,
			    uint32_t ttl_ms)
{
	char key[REDIS_NAME_MAX + 48], ttl[16];
	redis_key(c, 0, "lock", key, sizeof(key));
	snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
	const char *argv[] = {"EVAL", retext_script, "1", key, owner, text, ttl};
	redisReply *r;
	int rc = run_text(c, 0, "rewriting the store lock", 7, argv, &r);
	if (rc)
		return rc;
	bool held = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
	freeReplyObject(r);
	if (!held)
		nadb_log("redis %s:%d/%s: the store lock is no longer ours: stop writing",
			 c->url.host, c->url.port, c->url.name);
	return held ? 0 : -ENOLCK;
}

/* Run SCRIPT on the lock and its generation: EVAL script 3 lock lockgen
 * fence OWNER TTL_MS [GEN]; its integer reply into *RESULT. */
static int run_lock_gen_script(struct redis_conn *c, const char *why, const char *script,
			       const char *owner, uint32_t ttl_ms, bool with_gen,
			       long long *result)
{
	char key[REDIS_NAME_MAX + 48], gen_key[REDIS_NAME_MAX + 48],
		fence_key[REDIS_NAME_MAX + 48], ttl[16], gen[24];
	redis_key(c, 0, "lock", key, sizeof(key));
	redis_key(c, 0, "lockgen", gen_key, sizeof(gen_key));
	redis_key(c, 0, REDIS_FENCE, fence_key, sizeof(fence_key));
	snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
	snprintf(gen, sizeof(gen), "%lld", c->lock_gen);
	const char *argv[] = {"EVAL", script, "3", key, gen_key, fence_key, owner, ttl, gen};
	return run_for_integer(c, 0, why, with_gen ? 9 : 8, argv, result);
}

int redis_store_lock_try(struct redis_conn *c, const char *owner, uint32_t ttl_ms)
{
	long long got = 0;
	int rc = run_lock_gen_script(c, "taking the store lock", take_script, owner, ttl_ms,
				     false, &got);
	if (rc)
		return rc;
	if (got)
		c->lock_gen = got > 0 ? got : -got; /* < 0: ours already, a retried take */
	return got ? 0 : -EBUSY;
}

int redis_store_lock(struct redis_conn *c, const char *owner, uint32_t ttl_ms)
{
	int rc = redis_store_lock_try(c, owner, ttl_ms);
	char holder[512] = "";
	if (rc == -EBUSY && redis_store_lock_holder(c, holder, sizeof(holder)) == 0)
		nadb_log("redis %s:%d/%s: the store is in use by another daemon (%s)",
			 c->url.host, c->url.port, c->url.name, holder);
	else if (rc == -EBUSY)
		nadb_log("redis %s:%d/%s: the store lock just expired: retry",
			 c->url.host, c->url.port, c->url.name);
	return rc;
}

static int run_lock_script(struct redis_conn *c, const char *why, const char *script,
			   const char *owner, const char *ttl, long long *result)
{
	char key[REDIS_NAME_MAX + 48];
	redis_key(c, 0, "lock", key, sizeof(key));
	const char *argv[] = {"EVAL", script, "1", key, owner, ttl};
	return run_for_integer(c, 0, why, ttl ? 6 : 5, argv, result);
}

int redis_store_lock_refresh(struct redis_conn *c, const char *owner, uint32_t ttl_ms)
{
	long long held = 0;
	int rc = run_lock_gen_script(c, "refreshing the store lock", refresh_script, owner,
				     ttl_ms, true, &held);
	if (rc)
		return rc;
	if (held == 2)
		nadb_log("redis %s:%d/%s: the store lock expired while the server was away "
			 "and nobody took it since: ours again", c->url.host, c->url.port,
			 c->url.name);
	if (!held) {
		nadb_log("redis %s:%d/%s: the store lock expired and is no longer ours: "
			 "stop writing", c->url.host, c->url.port, c->url.name);
		return -ENOLCK;
	}
	return 0;
}

long long redis_store_lock_gen(const struct redis_conn *c)
{
	return c->lock_gen;
}

int redis_store_lock_release(struct redis_conn *c, const char *owner)
{
	long long gone = 0;
	return run_lock_script(c, "releasing the store lock", release_script, owner, NULL,
			       &gone);
}

/* ---- durability ------------------------------------------------------------- */

/* redis_note_durability for one server (of a cluster, each primary). */
static int note_server_durability(struct redis_conn *c, void *ctx)
{
	(void)ctx;
	const char *a1[] = {"CONFIG", "GET", "appendonly"};
	const char *a2[] = {"CONFIG", "GET", "appendfsync"};
	size_t l1[] = {6, 3, 10}, l2[] = {6, 3, 11};
	struct redis_cmd cmds[] = {{3, a1, l1}, {3, a2, l2}};
	redisReply *r[2];
	if (redis_pipeline(c, cmds, 2, r))
		return 0; /* the open that follows will say why */
	const char *aof = r[0]->type == REDIS_REPLY_ARRAY && r[0]->elements == 2
				  ? r[0]->element[1]->str : NULL;
	const char *fsync = r[1]->type == REDIS_REPLY_ARRAY && r[1]->elements == 2
				    ? r[1]->element[1]->str : NULL;
	if (!aof || !fsync)
		nadb_log_advice("redis %s:%d/%s: cannot read the server's persistence settings "
			 "(CONFIG GET refused): sync promises what the server was set up "
			 "to keep; nadb wants appendonly yes, appendfsync always",
			 c->url.host, c->url.port, c->url.name);
	else if (strcmp(aof, "yes") || strcmp(fsync, "always"))
		nadb_log_advice("redis %s:%d/%s: appendonly %s, appendfsync %s: a server crash "
			 "can lose synced data (%s); for sync to mean on disk set "
			 "appendonly yes, appendfsync always", c->url.host, c->url.port,
			 c->url.name, aof, fsync,
			 strcmp(aof, "yes") ? "all since the last snapshot"
					    : "about the last second");
	freeReplyObject(r[0]);
	freeReplyObject(r[1]);
	return 0;
}

void redis_note_durability(struct redis_conn *c)
{
	redis_each_server(c, note_server_durability, NULL);
}

/* ---- change notices -------------------------------------------------------- */

/* The channel of C's store's change notices, into BUF. */
static size_t changes_channel(const struct redis_conn *c, char *buf, size_t size)
{
	int n = snprintf(buf, size, "nadb:%s:changes", c->url.name);
	assert(n > 0 && (size_t)n < size);
	return (size_t)n;
}

struct redis_cmd redis_publish_cmd(const struct redis_conn *c, struct redis_publish *p,
				   const void *payload, size_t len)
{
	p->argv[0] = "PUBLISH";
	p->lens[0] = 7;
	p->argv[1] = p->channel;
	p->lens[1] = changes_channel(c, p->channel, sizeof(p->channel));
	p->argv[2] = payload;
	p->lens[2] = len;
	return (struct redis_cmd){3, p->argv, p->lens};
}

int redis_subscriber_open(const struct redis_conn *like, struct redis_conn **out)
{
	struct redis_conn *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->url = like->url;
	*out = s;
	return 0;
}

/* Connect S and subscribe it: one try. */
static int subscribe(struct redis_conn *s)
{
	int rc = connect_once(s);
	if (rc)
		return rc;
	struct sigpipe_guard g;
	sigpipe_block(&g);
	char channel[REDIS_NAME_MAX + 32];
	const char *argv[] = {"SUBSCRIBE", channel};
	size_t lens[] = {9, changes_channel(s, channel, sizeof(channel))};
	redisReply *r = NULL;
	rc = pipeline_once(s, &(struct redis_cmd){2, argv, lens}, 1, &r);
	if (!rc && (r->type != REDIS_REPLY_ARRAY || r->elements != 3))
		rc = -EPROTO;
	freeReplyObject(r);
	if (rc) {
		redisFree(s->ctx);
		s->ctx = NULL;
	}
	sigpipe_restore(&g);
	return rc;
}

/* A message reply's payload, or NULL if R is no message. */
static const redisReply *message_payload(const redisReply *r)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") ||
	    r->element[2]->type != REDIS_REPLY_STRING)
		return NULL;
	return r->element[2];
}

/* S could not subscribe on its node: the next try goes to another node
 * of ROUTE's cluster (one serving a slot further on each time), so that a
 * node that died does not leave S deaf. */
static void subscribe_elsewhere(struct redis_conn *s, const struct redis_conn *route)
{
	char node[300];
	uint16_t slot = (uint16_t)((++s->node_tries * 5462u) % REDIS_SLOTS);
	if (!route || !route->cluster ||
	    redis_cluster_node_of(route->cluster, slot, node, sizeof(node)))
		return;
	char *colon = strrchr(node, ':');
	if (!colon || (size_t)(colon - node) >= sizeof(s->url.host))
		return;
	snprintf(s->url.host, sizeof(s->url.host), "%.*s", (int)(colon - node), node);
	s->url.port = atoi(colon + 1);
}

int redis_subscriber_next(struct redis_conn *s, const struct redis_conn *route, unsigned ms,
			  char **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	if (!s->ctx) {
		if (subscribe(s)) {
			subscribe_elsewhere(s, route);
			redis_pause_ms(ms < RECONNECT_PAUSE_MAX ? ms : RECONNECT_PAUSE_MAX);
			return -ENOTCONN;
		}
		s->reconnects++;
		return -ESTALE; /* (re)subscribed: what was said before is lost */
	}
	uint64_t deadline = monotonic_ms() + ms;
	for (;;) {
		void *r = NULL;
		if (redisGetReplyFromReader(s->ctx, &r) != REDIS_OK)
			break;
		if (r) {
			const redisReply *p = message_payload(r);
			int rc = 0;
			if (p && (*out = malloc(p->len + 1))) {
				memcpy(*out, p->str, p->len);
				*len = p->len;
				rc = 1;
			} else if (p) {
				rc = -ESTALE; /* no memory for it: a notice lost */
			}
			freeReplyObject(r);
			if (rc)
				return rc;
			continue; /* not a message (a subscribe's confirmation) */
		}
		uint64_t now = monotonic_ms();
		if (now >= deadline)
			return 0;
		struct pollfd pfd = {.fd = s->ctx->fd, .events = POLLIN};
		int n = poll(&pfd, 1, (int)(deadline - now));
		if (n < 0 && errno != EINTR)
			break;
		if (n > 0 && redisBufferRead(s->ctx) != REDIS_OK)
			break;
	}
	redisFree(s->ctx);
	s->ctx = NULL;
	return -ENOTCONN;
}
