/* special.c -- the files and directories nadbfs makes up (special.h).
 *
 * Inode numbers, top bit set:
 *   kind 0  fixed: 1 /.stats, 2 /.metrics, 3 /.ctl, 4 /tags
 *   kind 1  the .stats file of the database or namespace in the low bits
 *   kind 2  a /tags mirror directory: query number (20 bits) and the
 *           number of the real directory it mirrors (40 bits; the root for
 *           /tags/QUERY itself)
 * Query numbers name query texts ("photo+pets"), and directory numbers
 * real directories (whose inode numbers, a partition's in their top bits,
 * do not fit in 40), in tables that only grow: the kernel may hold a
 * number for as long as it likes.
 *
 * Everything here is read-only but for rm in a mirror (untag) and /.ctl.
 * The kernel is told not to cache any of it: statistics change all the
 * time and a tag query's answer changes with any setfattr.
 */
#include "special.h"
#include "clock.h"
#include "ctl.h"
#include "grow.h"
#include "stats.h"
#include "tags.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SPECIAL (1ULL << 63)
#define KIND_SHIFT 60
#define KIND_FIXED 0ULL
#define KIND_SCOPE 1ULL
#define KIND_MIRROR 2ULL
#define INO_STATS (SPECIAL | 1)
#define INO_METRICS (SPECIAL | 2)
#define INO_CTL (SPECIAL | 3)
#define INO_TAGS (SPECIAL | 4)
#define MIRROR_DIR_BITS 40
#define MIRROR_QID_MAX ((1u << 20) - 1)
#define BUCKETS 26 /* latency buckets: < 1 us, < 2 us, ... < 2^24 us, more */

static const char *const op_names[OP_COUNT] = {
	"lookup", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink",
	"rmdir", "symlink", "rename", "link", "open", "read", "write", "flush",
	"release", "fsync", "opendir", "readdir", "releasedir", "statfs",
	"setxattr", "getxattr", "listxattr", "removexattr", "create", "fallocate", "access",
};

#define ERRNO_SLOTS 256 /* errno values counted; Linux's end at 133 */

struct op_counter {
	atomic_uint_fast64_t count, sum_ns, min_ns, max_ns; /* min_ns: UINT64_MAX if none */
	atomic_uint_fast64_t bucket[BUCKETS];
};

/* One operation's counters, read one by one while requests go on: each
 * figure is exact, but together they may disagree by a request or two. */
struct op_snapshot {
	uint64_t count, sum_ns, min_ns, max_ns, bucket[BUCKETS];
};

struct special {
	struct nadb_store *_Atomic st; /* set again by a takeover */
	uid_t owner; /* the mount's owner: the daemon's effective uid */
	bool measure;
	nadb_reaped_fn reaped;
	void *reaped_ctx;
	uint64_t started_ns;
	struct op_counter ops[OP_COUNT];
	/* How /.ctl tells the kernel of the keys it changed (ctl.h); set once
	 * the session exists, before any request. */
	void (*changed)(void *ctx, uint64_t parent, const char *name, uint64_t ino,
			bool created);
	void (*changed_wait)(void *ctx);
	void *notify_ctx;
	atomic_size_t ctl_in_flight; /* request bytes /.ctl descriptors hold */
	/* Error replies by operation and errno: counted whether or not
	 * requests are timed (stats=off), they cost an increment. */
	atomic_uint_fast64_t errors[OP_COUNT][ERRNO_SLOTS];
	/* What the last compaction asked through /.ctl did, for .stats: so
	 * that `nadb compact MOUNTPOINT` reports what it does offline. */
	pthread_mutex_t compact_lock;
	struct nadb_compact_result compacted;

	/* queries_lock: scope is the query table (texts by number, and the
	 * open-addressing index from text to number) and the directory table
	 * (inode numbers by number, and the index from inode to number). */
	pthread_mutex_t queries_lock;
	char **query;  /* query[qid - 1] */
	uint32_t nqueries;
	size_t cap;
	uint32_t *index; /* qid or 0, by hash of the text */
	uint32_t index_cap;
	uint64_t *dir;     /* dir[n - 1]: the directory mirror number n stands for */
	uint64_t ndirs;
	size_t dirs_cap;
	uint64_t *dir_index; /* n or 0, by hash of the inode number */
	uint64_t dir_index_cap;
};

/* ---- inode numbers ------------------------------------------------------- */

static uint64_t kind_of(uint64_t ino)
{
	return (ino >> KIND_SHIFT) & 7;
}

static uint64_t scope_ino(uint64_t scope)
{
	return SPECIAL | KIND_SCOPE << KIND_SHIFT | scope;
}

static uint64_t ino_hash(uint64_t ino)
{
	return (ino * 0x9e3779b97f4a7c15ull) >> 17;
}

static void index_dir(struct special *sp, uint64_t n)
{
	uint64_t mask = sp->dir_index_cap - 1;
	uint64_t i = ino_hash(sp->dir[n - 1]) & mask;
	while (sp->dir_index[i])
		i = (i + 1) & mask;
	sp->dir_index[i] = n;
}

/* Room for one more directory number; queries_lock held. */
static int grow_dirs(struct special *sp)
{
	if (sp->ndirs + 1 >= 1ull << MIRROR_DIR_BITS)
		return -ENOSPC;
	if (ARRAY_GROW(sp->dir, sp->ndirs, sp->dirs_cap))
		return -ENOMEM;
	if ((sp->ndirs + 1) * 2 > sp->dir_index_cap) {
		uint64_t cap = sp->dir_index_cap ? 2 * sp->dir_index_cap : 128;
		uint64_t *index = calloc(cap, sizeof(*index));
		if (!index)
			return -ENOMEM;
		free(sp->dir_index);
		sp->dir_index = index;
		sp->dir_index_cap = cap;
		for (uint64_t n = 1; n <= sp->ndirs; n++)
			index_dir(sp, n);
	}
	return 0;
}

/* The mirror ino of directory DIR under query QID (DIR numbered on first
 * use); 0 if no number could be made (logged by the caller's errno). */
static uint64_t mirror_ino(struct special *sp, uint32_t qid, uint64_t dir)
{
	uint64_t found = 0;
	pthread_mutex_lock(&sp->queries_lock);
	if (sp->dir_index_cap) {
		uint64_t mask = sp->dir_index_cap - 1;
		for (uint64_t i = ino_hash(dir) & mask; sp->dir_index[i]; i = (i + 1) & mask)
			if (sp->dir[sp->dir_index[i] - 1] == dir) {
				found = sp->dir_index[i];
				break;
			}
	}
	if (!found && !grow_dirs(sp)) {
		sp->dir[sp->ndirs++] = dir;
		found = sp->ndirs;
		index_dir(sp, found);
	}
	pthread_mutex_unlock(&sp->queries_lock);
	return found ? SPECIAL | KIND_MIRROR << KIND_SHIFT | (uint64_t)qid << MIRROR_DIR_BITS | found
		     : 0;
}

static uint32_t mirror_qid(uint64_t ino)
{
	return (uint32_t)((ino >> MIRROR_DIR_BITS) & MIRROR_QID_MAX);
}

/* The directory a mirror ino stands for; 0 if its number is unknown. */
static uint64_t mirror_dir(struct special *sp, uint64_t ino)
{
	uint64_t n = ino & ((1ULL << MIRROR_DIR_BITS) - 1), dir = 0;
	pthread_mutex_lock(&sp->queries_lock);
	if (n && n <= sp->ndirs)
		dir = sp->dir[n - 1];
	pthread_mutex_unlock(&sp->queries_lock);
	return dir;
}

static bool is_mirror(uint64_t ino)
{
	return special_is_ino(ino) && kind_of(ino) == KIND_MIRROR;
}

/* ---- the query table -------------------------------------------------------- */

static uint32_t text_hash(const char *s)
{
	uint32_t h = 2166136261u;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

static int index_query(struct special *sp, uint32_t qid)
{
	uint32_t mask = sp->index_cap - 1;
	uint32_t i = text_hash(sp->query[qid - 1]) & mask;
	while (sp->index[i])
		i = (i + 1) & mask;
	sp->index[i] = qid;
	return 0;
}

static int grow_index(struct special *sp)
{
	uint32_t cap = sp->index_cap ? 2 * sp->index_cap : 64;
	uint32_t *index = calloc(cap, sizeof(*index));
	if (!index)
		return -ENOMEM;
	free(sp->index);
	sp->index = index;
	sp->index_cap = cap;
	for (uint32_t q = 1; q <= sp->nqueries; q++)
		index_query(sp, q);
	return 0;
}

/* The number of query TEXT, made on first use. */
static int query_number(struct special *sp, const char *text, uint32_t *qid)
{
	int rc = 0;
	pthread_mutex_lock(&sp->queries_lock);
	uint32_t found = 0;
	if (sp->index_cap) {
		uint32_t mask = sp->index_cap - 1;
		for (uint32_t i = text_hash(text) & mask; sp->index[i]; i = (i + 1) & mask) {
			if (!strcmp(sp->query[sp->index[i] - 1], text)) {
				found = sp->index[i];
				break;
			}
		}
	}
	if (!found) {
		if (sp->nqueries == MIRROR_QID_MAX) {
			rc = -ENOSPC;
		} else if ((sp->nqueries + 1) * 2 > sp->index_cap && (rc = grow_index(sp))) {
		} else {
			rc = ARRAY_GROW(sp->query, sp->nqueries, sp->cap);
		}
		char *copy = rc ? NULL : strdup(text);
		if (!rc && !copy)
			rc = -ENOMEM;
		if (!rc) {
			sp->query[sp->nqueries++] = copy;
			found = sp->nqueries;
			index_query(sp, found);
		}
	}
	pthread_mutex_unlock(&sp->queries_lock);
	*qid = found;
	return rc;
}

/* Parse query number QID afresh: tags come and go. */
static int query_of(struct special *sp, uint32_t qid, struct nadb_tag_query *q)
{
	char text[(NADB_NAME_MAX + 1) * 2];
	pthread_mutex_lock(&sp->queries_lock);
	bool known = qid && qid <= sp->nqueries;
	if (known)
		snprintf(text, sizeof(text), "%s", sp->query[qid - 1]);
	pthread_mutex_unlock(&sp->queries_lock);
	if (!known)
		return -ESTALE;
	return nadb_tag_query_parse(sp->st, text, q);
}

/* ---- lifetime and latency ---------------------------------------------------- */

int special_new(struct nadb_store *st, bool measure, nadb_reaped_fn reaped,
		void *reaped_ctx, struct special **out)
{
	struct special *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	sp->st = st;
	sp->owner = geteuid();
	sp->measure = measure;
	sp->reaped = reaped;
	sp->reaped_ctx = reaped_ctx;
	sp->started_ns = monotonic_ns();
	for (int op = 0; op < OP_COUNT; op++)
		atomic_init(&sp->ops[op].min_ns, UINT64_MAX);
	pthread_mutex_init(&sp->queries_lock, NULL);
	pthread_mutex_init(&sp->compact_lock, NULL);
	*out = sp;
	return 0;
}

void special_set_store(struct special *sp, struct nadb_store *st)
{
	sp->st = st;
}

void special_set_notify(struct special *sp,
			void (*changed)(void *ctx, uint64_t parent, const char *name,
					uint64_t ino, bool created),
			void (*changed_wait)(void *ctx), void *ctx)
{
	sp->changed = changed;
	sp->changed_wait = changed_wait;
	sp->notify_ctx = ctx;
}

void special_free(struct special *sp)
{
	if (!sp)
		return;
	for (uint32_t i = 0; i < sp->nqueries; i++)
		free(sp->query[i]);
	free(sp->query);
	free(sp->index);
	free(sp->dir);
	free(sp->dir_index);
	pthread_mutex_destroy(&sp->queries_lock);
	pthread_mutex_destroy(&sp->compact_lock);
	free(sp);
}

/* The operation this thread is answering (OP_COUNT: none), so that an
 * error reply anywhere in fs/ is counted under it: libfuse runs each
 * request from start to reply on one thread. */
static _Thread_local enum fs_op current_op = OP_COUNT;

uint64_t special_op_start(const struct special *sp, enum fs_op op)
{
	current_op = op;
	return sp && sp->measure ? monotonic_ns() : 0;
}

void special_op_done(struct special *sp, enum fs_op op, uint64_t start)
{
	current_op = OP_COUNT;
	if (!sp || !sp->measure || !start)
		return;
	uint64_t ns = monotonic_ns() - start;
	struct op_counter *c = &sp->ops[op];
	atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->sum_ns, ns, memory_order_relaxed);
	uint64_t max = atomic_load_explicit(&c->max_ns, memory_order_relaxed);
	while (ns > max && !atomic_compare_exchange_weak_explicit(
				   &c->max_ns, &max, ns, memory_order_relaxed,
				   memory_order_relaxed))
		;
	uint64_t min = atomic_load_explicit(&c->min_ns, memory_order_relaxed);
	while (ns < min && !atomic_compare_exchange_weak_explicit(
				   &c->min_ns, &min, ns, memory_order_relaxed,
				   memory_order_relaxed))
		;
	unsigned b = 0;
	for (uint64_t us = ns / 1000; us && b < BUCKETS - 1; us >>= 1)
		b++;
	atomic_fetch_add_explicit(&c->bucket[b], 1, memory_order_relaxed);
}

/* The latency (us) below which FRACTION of the requests fell.  A bucket
 * only says "between 2^(b-1) and 2^b us", so the answer is interpolated
 * inside it -- but within what was really seen: a bucket's bounds are
 * narrowed to the recorded minimum and maximum, or p99 of requests that
 * all took 300 us would read 500 (above the max) and p50 of one that took
 * 600 us would read 768. */
static double percentile_us(const struct op_snapshot *o, double fraction)
{
	uint64_t total = 0;
	for (int b = 0; b < BUCKETS; b++)
		total += o->bucket[b]; /* not o->count: each is read on its own */
	if (!total)
		return 0;
	double min = o->min_ns / 1000.0, max = o->max_ns / 1000.0;
	double want = fraction * (double)total, seen = 0;
	for (int b = 0; b < BUCKETS; b++) {
		if (!o->bucket[b] || seen + (double)o->bucket[b] < want) {
			seen += (double)o->bucket[b];
			continue;
		}
		double lo = b ? ldexp(1, b - 1) : 0, hi = b < BUCKETS - 1 ? ldexp(1, b) : max;
		lo = lo < min ? min : lo;
		hi = hi > max ? max : hi;
		double v = lo + (hi - lo) * (want - seen) / (double)o->bucket[b];
		return v < min ? min : v > max ? max : v;
	}
	return max;
}

int special_reply_err(struct special *sp, fuse_req_t req, int err)
{
	if (sp && err > 0 && err < ERRNO_SLOTS && current_op < OP_COUNT)
		atomic_fetch_add_explicit(&sp->errors[current_op][err], 1, memory_order_relaxed);
	return fuse_reply_err(req, err);
}

/* ---- rendering ----------------------------------------------------------------- */

struct text {
	char *buf;
	size_t len, cap;
	int err;
};

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0,
				  fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->err = -EIO;
			return;
		}
		if (t->buf && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 4096;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *b = realloc(t->buf, cap);
		if (!b) {
			t->err = -ENOMEM;
			return;
		}
		t->buf = b;
		t->cap = cap;
	}
}

static double uptime_s(const struct special *sp)
{
	return (double)(monotonic_ns() - sp->started_ns) / 1e9;
}

static void snapshot(const struct op_counter *c, struct op_snapshot *o)
{
	o->count = atomic_load_explicit(&c->count, memory_order_relaxed);
	o->sum_ns = atomic_load_explicit(&c->sum_ns, memory_order_relaxed);
	o->min_ns = atomic_load_explicit(&c->min_ns, memory_order_relaxed);
	o->max_ns = atomic_load_explicit(&c->max_ns, memory_order_relaxed);
	if (o->min_ns > o->max_ns)
		o->min_ns = o->max_ns; /* none yet, or a max not stored yet */
	for (int b = 0; b < BUCKETS; b++)
		o->bucket[b] = atomic_load_explicit(&c->bucket[b], memory_order_relaxed);
}

/* errno names, for the error counters ("ENOSPC"); NULL for a number
 * this C library has no name for. */
static const char *errno_name(int e)
{
	return strerrorname_np(e);
}

/* The figures of the whole store, as "NAME": VALUE lines of a document. */
static void put_figures(struct text *t, const struct nadb_stats *s)
{
	struct nadb_figure f[NADB_FIGURES];
	nadb_stats_figures(s, f);
	for (int i = 0; i < NADB_FIGURES; i++) {
		if (f[i].ratio)
			put(t, "  \"%s\": %.4f,\n", f[i].name, f[i].x);
		else
			put(t, "  \"%s\": %llu,\n", f[i].name, (unsigned long long)f[i].n);
	}
}

static void put_op_json(struct special *sp, struct text *t, int op)
{
	struct op_snapshot o;
	snapshot(&sp->ops[op], &o);
	put(t, "%s\n    \"%s\": {\"count\": %llu, \"mean_us\": %.2f, \"min_us\": %.2f, "
	       "\"p50_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, \"errors\": {",
	    op ? "," : "", op_names[op], (unsigned long long)o.count,
	    o.count ? (double)o.sum_ns / (double)o.count / 1000.0 : 0.0, o.min_ns / 1000.0,
	    percentile_us(&o, 0.5), percentile_us(&o, 0.99), o.max_ns / 1000.0);
	bool first = true;
	for (int e = 1; e < ERRNO_SLOTS; e++) {
		uint64_t n = atomic_load_explicit(&sp->errors[op][e], memory_order_relaxed);
		if (!n)
			continue;
		const char *name = errno_name(e);
		if (name)
			put(t, "%s\"%s\": %llu", first ? "" : ", ", name, (unsigned long long)n);
		else
			put(t, "%s\"%d\": %llu", first ? "" : ", ", e, (unsigned long long)n);
		first = false;
	}
	put(t, "}}");
}

static int render_store_json(struct special *sp, struct text *t)
{
	struct nadb_stats s;
	int rc = nadb_stats(sp->st, NADB_ROOT_INO, &s);
	if (rc)
		return rc;
	put(t, "{\n  \"version\": \"%s\",\n  \"pid\": %d,\n  \"uptime_s\": %.3f,\n",
	    NADB_VERSION, (int)getpid(), uptime_s(sp));
	bool follows = nadb_store_is_follower(sp->st);
	put(t, "  \"role\": \"%s\",\n  \"followers\": %llu,\n", follows ? "follower" : "writer",
	    (unsigned long long)(follows ? 0 : nadb_store_followers(sp->st)));
	put_figures(t, &s);
	uint64_t asked = 0, run = 0;
	if (!follows)
		nadb_store_sync_counts(sp->st, &asked, &run);
	put(t, "  \"syncs\": {\"asked\": %llu, \"run\": %llu},\n", (unsigned long long)asked,
	    (unsigned long long)run);
	pthread_mutex_lock(&sp->compact_lock);
	struct nadb_compact_result c = sp->compacted;
	pthread_mutex_unlock(&sp->compact_lock);
	put(t, "  \"last_compaction\": {\"segments_removed\": %llu, \"bytes_reclaimed\": %llu, "
	       "\"chunks_moved\": %llu, \"bytes_moved\": %llu},\n",
	    (unsigned long long)c.segments_removed, (unsigned long long)c.bytes_reclaimed,
	    (unsigned long long)c.chunks_moved, (unsigned long long)c.bytes_moved);
	put(t, "  \"stats\": %s,\n  \"ops\": {", sp->measure ? "true" : "false");
	for (int op = 0; op < OP_COUNT; op++)
		put_op_json(sp, t, op);
	put(t, "\n  }\n}\n");
	return t->err;
}

static int render_scope_json(struct special *sp, uint64_t scope, struct text *t)
{
	struct nadb_stats s;
	struct nadb_attr a;
	int rc = nadb_getattr(sp->st, scope, &a);
	if (!rc)
		rc = nadb_stats(sp->st, scope, &s);
	if (rc)
		return rc;
	bool db = a.level == NADB_LEVEL_DB;
	put(t, "{\n  \"scope\": \"%s\",\n  \"keys\": %llu,\n  \"logical_bytes\": %llu,\n",
	    db ? "database" : "namespace", (unsigned long long)s.keys,
	    (unsigned long long)s.bytes);
	if (db)
		put(t, "  \"namespaces\": %llu,\n", (unsigned long long)s.namespaces);
	put(t, "  \"dirs\": %llu\n}\n", (unsigned long long)s.dirs);
	return t->err;
}

/* The HELP and TYPE lines of family nadb_NAME.  In the text format a
 * counter family "foo" has the sample "foo_total" (as in OpenMetrics): a
 * family may not itself end in _total, or a parser that adds the suffix
 * finds two families claiming one name. */
static void family(struct text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP nadb_%s %s\n# TYPE nadb_%s %s\n", name, help, name, type);
}

static void put_metric_figures(struct text *t, const struct nadb_stats *s)
{
	struct nadb_figure f[NADB_FIGURES];
	nadb_stats_figures(s, f);
	for (int i = 0; i < NADB_FIGURES; i++) {
		if (!f[i].metric)
			continue;
		family(t, f[i].metric, f[i].counter ? "counter" : "gauge", f[i].help);
		put(t, "nadb_%s%s %.17g\n", f[i].metric, f[i].counter ? "_total" : "",
		    f[i].ratio ? f[i].x : (double)f[i].n);
	}
}

static void put_error_counters(struct special *sp, struct text *t)
{
	family(t, "errors", "counter", "FUSE requests answered with an error, by operation and errno.");
	for (int op = 0; op < OP_COUNT; op++) {
		for (int e = 1; e < ERRNO_SLOTS; e++) {
			uint64_t n = atomic_load_explicit(&sp->errors[op][e], memory_order_relaxed);
			const char *name = errno_name(e);
			if (!n)
				continue;
			if (name)
				put(t, "nadb_errors_total{op=\"%s\",errno=\"%s\"} %llu\n", op_names[op],
				    name, (unsigned long long)n);
			else
				put(t, "nadb_errors_total{op=\"%s\",errno=\"%d\"} %llu\n", op_names[op],
				    e, (unsigned long long)n);
		}
	}
}

static void put_histograms(struct special *sp, struct text *t)
{
	family(t, "op_duration_seconds", "histogram", "Time to answer FUSE requests.");
	for (int op = 0; op < OP_COUNT; op++) {
		struct op_snapshot o;
		uint64_t cum = 0;
		snapshot(&sp->ops[op], &o);
		for (int b = 0; b < BUCKETS - 1; b++) {
			cum += o.bucket[b];
			put(t, "nadb_op_duration_seconds_bucket{op=\"%s\",le=\"%g\"} %llu\n",
			    op_names[op], ldexp(1, b) / 1e6, (unsigned long long)cum);
		}
		cum += o.bucket[BUCKETS - 1];
		/* _count is the +Inf bucket, as a histogram must have it: the
		 * separate count may be a request ahead of the buckets. */
		put(t, "nadb_op_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} %llu\n"
		       "nadb_op_duration_seconds_sum{op=\"%s\"} %.9f\n"
		       "nadb_op_duration_seconds_count{op=\"%s\"} %llu\n",
		    op_names[op], (unsigned long long)cum, op_names[op], (double)o.sum_ns / 1e9,
		    op_names[op], (unsigned long long)cum);
	}
}

/* /.metrics: the Prometheus text format, with OpenMetrics's naming so
 * that parsers of either read it (counters: family "foo", sample
 * "foo_total"; units in the names; "# EOF" last, a comment to Prometheus). */
static int render_metrics(struct special *sp, struct text *t)
{
	struct nadb_stats s;
	int rc = nadb_stats(sp->st, NADB_ROOT_INO, &s);
	if (rc)
		return rc;
	family(t, "build_info", "gauge", "Always 1; the labels say which nadb serves the store.");
	put(t, "nadb_build_info{version=\"%s\"} 1\n", NADB_VERSION);
	put_metric_figures(t, &s);
	family(t, "uptime_seconds", "gauge", "Seconds since mount.");
	put(t, "nadb_uptime_seconds %.3f\n", uptime_s(sp));
	put_error_counters(sp, t);
	put_histograms(sp, t);
	put(t, "# EOF\n");
	return t->err;
}

static int render(struct special *sp, uint64_t ino, struct text *t)
{
	memset(t, 0, sizeof(*t));
	int rc;
	if (ino == INO_STATS)
		rc = render_store_json(sp, t);
	else if (ino == INO_METRICS)
		rc = render_metrics(sp, t);
	else
		rc = render_scope_json(sp, ino & ~(SPECIAL | 7ULL << KIND_SHIFT), t);
	if (rc) {
		free(t->buf);
		t->buf = NULL;
	}
	return rc;
}

static bool is_document(uint64_t ino)
{
	return ino == INO_STATS || ino == INO_METRICS ||
	       (special_is_ino(ino) && kind_of(ino) == KIND_SCOPE);
}

/* ---- attributes ------------------------------------------------------------------ */

void stat_of_attr(const struct nadb_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_rdev = a->rdev;
	st->st_size = (off_t)a->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_atim = a->atime;
	st->st_mtim = a->mtime;
	st->st_ctim = a->ctime;
}

/* A mirror directory looks like the directory it mirrors, read-only. */
static void as_mirror(struct nadb_attr *a, uint64_t ino)
{
	a->ino = ino;
	a->mode = S_IFDIR | (a->mode & 0555);
	a->nlink = 2;
}

int special_attr(struct special *sp, uint64_t ino, struct stat *st)
{
	struct nadb_attr a;
	int rc;
	if (is_mirror(ino)) {
		uint64_t dir = mirror_dir(sp, ino);
		rc = dir ? nadb_getattr(sp->st, dir, &a) : -ESTALE;
		if (!rc)
			as_mirror(&a, ino);
	} else {
		/* Fixed files take their owner and times from the root. */
		rc = nadb_getattr(sp->st, NADB_ROOT_INO, &a);
		if (rc)
			return rc;
		a.ino = ino;
		a.nlink = 1;
		a.blocks = 0;
		a.size = 0;
		if (ino == INO_TAGS) {
			a.mode = S_IFDIR | 0555;
			a.nlink = 2;
		} else if (ino == INO_CTL) {
			a.mode = S_IFREG | 0666; /* ctl.c checks each request */
		} else if (is_document(ino)) {
			struct text t;
			if (kind_of(ino) == KIND_SCOPE &&
			    (rc = nadb_getattr(sp->st, ino & ~(SPECIAL | 7ULL << KIND_SHIFT), &a)))
				return rc;
			a.ino = ino;
			a.nlink = 1;
			a.blocks = 0;
			a.mode = S_IFREG | 0444;
			if ((rc = render(sp, ino, &t)))
				return rc;
			a.size = t.len;
			free(t.buf);
		} else {
			return -ENOENT;
		}
	}
	if (!rc)
		stat_of_attr(&a, st);
	return rc;
}

static void reply_special_entry(fuse_req_t req, int rc, struct special *sp, uint64_t ino)
{
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	if (!rc)
		rc = special_attr(sp, ino, &e.attr);
	if (rc) {
		special_reply_err(sp, req, -rc);
		return;
	}
	e.ino = ino; /* timeouts 0: ask again every time */
	fuse_reply_entry(req, &e);
}

double special_timeout_for(double timeout, const struct nadb_attr *a)
{
	if (!a->expires_ns)
		return timeout;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	double left = (double)a->expires_ns / 1e9 - ((double)now.tv_sec + now.tv_nsec / 1e9);
	return left <= 0 ? 0 : left < timeout ? left : timeout;
}

/* ---- lookup and getattr ---------------------------------------------------------- */

static bool lookup_in_mirror(struct special *sp, fuse_req_t req, fuse_ino_t parent,
			     const char *name)
{
	struct nadb_tag_query q;
	struct nadb_attr a;
	uint32_t qid = mirror_qid(parent);
	int rc = query_of(sp, qid, &q);
	if (!rc)
		rc = nadb_tag_lookup(sp->st, &q, mirror_dir(sp, parent), name, &a);
	if (rc == -ENOENT || rc == -EINVAL) {
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e)); /* a miss, not to be remembered */
		fuse_reply_entry(req, &e);
		return true;
	}
	if (rc) {
		special_reply_err(sp, req, -rc);
		return true;
	}
	if (S_ISDIR(a.mode)) {
		uint64_t ino = mirror_ino(sp, qid, a.ino);
		if (!ino) {
			special_reply_err(sp, req, ENOMEM);
			return true;
		}
		reply_special_entry(req, 0, sp, ino);
		return true;
	}
	/* The key itself: same inode as in the tree.  Not cached, so that
	 * untagging shows at once. */
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = a.ino;
	stat_of_attr(&a, &e.attr);
	nadb_remember(sp->st, a.ino);
	fuse_reply_entry(req, &e);
	return true;
}

static bool lookup_query(struct special *sp, fuse_req_t req, const char *name)
{
	struct nadb_tag_query q;
	uint32_t qid;
	int rc = nadb_tag_query_parse(sp->st, name, &q);
	if (rc == -ENOENT || rc == -EINVAL) {
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e));
		fuse_reply_entry(req, &e);
		return true;
	}
	if (!rc)
		rc = query_number(sp, name, &qid);
	uint64_t ino = rc ? 0 : mirror_ino(sp, qid, NADB_ROOT_INO);
	if (!rc && !ino)
		rc = -ENOMEM;
	if (rc)
		special_reply_err(sp, req, -rc);
	else
		reply_special_entry(req, 0, sp, ino);
	return true;
}

bool special_lookup(struct special *sp, fuse_req_t req, fuse_ino_t parent,
		    const char *name)
{
	if (parent == INO_TAGS)
		return lookup_query(sp, req, name);
	if (is_mirror(parent))
		return lookup_in_mirror(sp, req, parent, name);
	if (special_is_ino(parent)) {
		special_reply_err(sp, req, ENOTDIR);
		return true;
	}
	if (parent == NADB_ROOT_INO) {
		uint64_t ino = !strcmp(name, ".stats") ? INO_STATS
			       : !strcmp(name, ".metrics") ? INO_METRICS
			       : !strcmp(name, ".ctl") ? INO_CTL
			       : !strcmp(name, "tags") ? INO_TAGS : 0;
		if (!ino)
			return false;
		reply_special_entry(req, 0, sp, ino);
		return true;
	}
	if (strcmp(name, ".stats"))
		return false;
	struct nadb_attr a;
	int rc = nadb_getattr(sp->st, parent, &a);
	if (rc || !S_ISDIR(a.mode) || a.level > NADB_LEVEL_NAMESPACE)
		return false;
	reply_special_entry(req, 0, sp, scope_ino(parent));
	return true;
}

bool special_getattr(struct special *sp, fuse_req_t req, fuse_ino_t ino)
{
	if (!special_is_ino(ino))
		return false;
	struct stat st;
	int rc = special_attr(sp, ino, &st);
	if (rc)
		special_reply_err(sp, req, -rc);
	else
		fuse_reply_attr(req, &st, 0);
	return true;
}

/* ---- the files ---------------------------------------------------------------------- */

struct doc_handle {
	char *buf;
	size_t len;
};

bool special_is_ctl(uint64_t ino)
{
	return ino == INO_CTL;
}

bool special_open(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		  struct fuse_file_info *fi, const struct nadb_caller *who)
{
	if (!special_is_ino(ino))
		return false;
	int acc = fi->flags & O_ACCMODE;
	if (ino == INO_CTL) {
		/* the mount's owner (who runs this daemon) or root may flush,
		 * compact and reap; not whoever owns the tree's root now */
		bool admin = who && (who->uid == 0 || who->uid == sp->owner);
		struct ctl *c = acc == O_RDONLY || !who ? NULL
				: ctl_new(acc == O_RDWR, who, admin, &sp->ctl_in_flight);
		if (!c) {
			special_reply_err(sp, req, acc == O_RDONLY ? EACCES : ENOMEM);
			return true;
		}
		fi->fh = (uintptr_t)c;
		fi->direct_io = 1; /* every read and write reaches us, in order */
		fi->nonseekable = 1;
		fuse_reply_open(req, fi);
		return true;
	}
	if (!is_document(ino)) {
		special_reply_err(sp, req, EISDIR);
		return true;
	}
	if (acc != O_RDONLY || (fi->flags & O_TRUNC)) {
		special_reply_err(sp, req, EACCES);
		return true;
	}
	struct doc_handle *h = calloc(1, sizeof(*h));
	struct text t;
	int rc = h ? render(sp, ino, &t) : -ENOMEM;
	if (rc) {
		free(h);
		special_reply_err(sp, req, -rc);
		return true;
	}
	h->buf = t.buf;
	h->len = t.len;
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1; /* a fresh document on every open; no page cache */
	fi->noflush = 1;   /* read-only: nothing to do at close(2) */
	fuse_reply_open(req, fi);
	return true;
}

bool special_read(struct special *sp, fuse_req_t req, fuse_ino_t ino, size_t size,
		  off_t off, struct fuse_file_info *fi)
{
	(void)sp;
	if (!special_is_ino(ino))
		return false;
	if (ino == INO_CTL) {
		char *reply = malloc(size + 1);
		if (!reply) {
			special_reply_err(sp, req, ENOMEM);
			return true;
		}
		size_t n = ctl_read((struct ctl *)(uintptr_t)fi->fh, reply, size);
		fuse_reply_buf(req, reply, n);
		free(reply);
		return true;
	}
	struct doc_handle *h = (struct doc_handle *)(uintptr_t)fi->fh;
	if (!h) {
		special_reply_err(sp, req, EBADF);
		return true;
	}
	if (off < 0 || (size_t)off >= h->len) {
		fuse_reply_buf(req, NULL, 0);
		return true;
	}
	size_t n = h->len - (size_t)off;
	if (n > size)
		n = size;
	/* Reply from a copy: once the reply is in, the reader may close and
	 * the release (another thread) frees H while this one is still
	 * returning from the write to /dev/fuse. */
	char *copy = malloc(n);
	if (!copy) {
		special_reply_err(sp, req, ENOMEM);
		return true;
	}
	memcpy(copy, h->buf + off, n);
	fuse_reply_buf(req, copy, n);
	free(copy);
	return true;
}

/* The maintenance commands of /.ctl (ctl.c checks who may). */
static int maintain(void *ctx, const char *cmd)
{
	struct special *sp = ctx;
	if (!strcmp(cmd, "flush"))
		return nadb_store_sync(sp->st);
	if (!strcmp(cmd, "compact")) {
		struct nadb_compact_result res = {0};
		int rc = nadb_compact(sp->st, true, 0, &res);
		pthread_mutex_lock(&sp->compact_lock);
		sp->compacted = res;
		pthread_mutex_unlock(&sp->compact_lock);
		return rc;
	}
	if (!strcmp(cmd, "reap")) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		int64_t t = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
		unsigned n;
		int rc;
		do
			rc = nadb_reap(sp->st, t, 1000, sp->reaped, sp->reaped_ctx, &n);
		while (!rc && n == 1000);
		return rc;
	}
	return -EINVAL;
}

bool special_write(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		   const char *buf, size_t size, struct fuse_file_info *fi)
{
	if (!special_is_ino(ino))
		return false;
	if (ino != INO_CTL) {
		special_reply_err(sp, req, EACCES);
		return true;
	}
	struct ctl_env env = {
		.st = sp->st,
		.changed = sp->changed, .changed_wait = sp->changed_wait,
		.notify_ctx = sp->notify_ctx,
		.maintain = maintain, .maintain_ctx = sp,
	};
	ssize_t n = ctl_write((struct ctl *)(uintptr_t)fi->fh, &env, buf, size);
	if (n < 0)
		special_reply_err(sp, req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
	return true;
}

bool special_release(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		     struct fuse_file_info *fi)
{
	(void)sp;
	if (!special_is_ino(ino))
		return false;
	if (ino == INO_CTL) {
		ctl_free((struct ctl *)(uintptr_t)fi->fh);
		fuse_reply_err(req, 0);
		return true;
	}
	struct doc_handle *h = (struct doc_handle *)(uintptr_t)fi->fh;
	if (h) {
		free(h->buf);
		free(h);
	}
	special_reply_err(sp, req, 0);
	return true;
}

/* ---- the directories ------------------------------------------------------------- */

/* A special directory's listing, taken whole at opendir: tag listings are
 * answers to queries, small next to the tree they filter. */
struct vdir {
	size_t n, cap;
	struct ventry {
		char *name;
		uint64_t ino;
		uint32_t mode;
	} *e;
	uint32_t qid;
	struct special *sp;
};

static int vdir_add(struct vdir *d, const char *name, uint64_t ino, uint32_t mode)
{
	if (ARRAY_GROW(d->e, d->n, d->cap))
		return -ENOMEM;
	char *copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	d->e[d->n++] = (struct ventry){copy, ino, mode};
	return 0;
}

static void vdir_free(struct vdir *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++)
		free(d->e[i].name);
	free(d->e);
	free(d);
}

static int add_tag_entry(void *ctx, const char *tag, uint64_t keys)
{
	(void)keys;
	struct vdir *d = ctx;
	return vdir_add(d, tag, 0, S_IFDIR); /* numbered when looked up */
}

static int add_mirror_entry(void *ctx, const char *name, const struct nadb_attr *a)
{
	struct vdir *d = ctx;
	uint64_t ino = S_ISDIR(a->mode) ? mirror_ino(d->sp, d->qid, a->ino) : a->ino;
	return ino ? vdir_add(d, name, ino, a->mode) : -ENOMEM;
}

bool special_opendir(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		     struct fuse_file_info *fi)
{
	if (!special_is_ino(ino))
		return false;
	if (ino != INO_TAGS && !is_mirror(ino)) {
		special_reply_err(sp, req, ENOTDIR);
		return true;
	}
	struct vdir *d = calloc(1, sizeof(*d));
	int rc = d ? 0 : -ENOMEM;
	if (!rc && ino == INO_TAGS) {
		rc = nadb_tags_list(sp->st, NULL, add_tag_entry, d);
	} else if (!rc) {
		struct nadb_tag_query q;
		d->qid = mirror_qid(ino);
		d->sp = sp;
		rc = query_of(sp, d->qid, &q);
		if (rc == -ENOENT || rc == -EINVAL)
			rc = 0; /* the query's last key went: an empty directory */
		else if (!rc)
			rc = nadb_tag_readdir(sp->st, &q, mirror_dir(sp, ino), NULL,
					      add_mirror_entry, d);
	}
	if (rc) {
		vdir_free(d);
		special_reply_err(sp, req, -rc);
		return true;
	}
	fi->fh = (uintptr_t)d;
	fuse_reply_open(req, fi);
	return true;
}

static uint64_t parent_of(struct special *sp, uint64_t ino)
{
	if (ino == INO_TAGS)
		return NADB_ROOT_INO;
	uint64_t dir = mirror_dir(sp, ino), up = NADB_ROOT_INO;
	if (dir == NADB_ROOT_INO || !dir)
		return INO_TAGS;
	if (nadb_parent(sp->st, dir, &up))
		up = NADB_ROOT_INO;
	uint64_t m = mirror_ino(sp, mirror_qid(ino), up);
	return m ? m : INO_TAGS;
}

bool special_readdir(struct special *sp, fuse_req_t req, fuse_ino_t ino, size_t size,
		     off_t off, struct fuse_file_info *fi, bool plus)
{
	if (!special_is_ino(ino))
		return false;
	struct vdir *d = (struct vdir *)(uintptr_t)fi->fh;
	char *buf = malloc(size ? size : 1);
	if (!d || !buf || off < 0) {
		free(buf);
		special_reply_err(sp, req, !d ? EBADF : off < 0 ? EINVAL : ENOMEM);
		return true;
	}
	size_t used = 0;
	/* Offsets: "." 1, ".." 2, entry i at i + 3. */
	for (off_t at = off; (size_t)at < d->n + 2; at++) {
		const char *name = at == 0 ? "." : at == 1 ? ".." : d->e[at - 2].name;
		uint64_t eino = at == 0 ? ino : at == 1 ? parent_of(sp, ino) : d->e[at - 2].ino;
		uint32_t mode = at < 2 ? S_IFDIR : d->e[at - 2].mode;
		size_t n;
		bool held = false; /* an entry the kernel will hold a key by */
		if (plus) {
			struct fuse_entry_param e;
			memset(&e, 0, sizeof(e));
			bool tag_name = at >= 2 && ino == INO_TAGS;
			if (tag_name) { /* number it now: readdirplus is a lookup */
				uint32_t qid;
				if (query_number(sp, name, &qid))
					break;
				if (!(eino = mirror_ino(sp, qid, NADB_ROOT_INO)))
					break;
			}
			e.ino = eino;
			if (special_is_ino(eino) ? special_attr(sp, eino, &e.attr) != 0
						 : false) {
				e.ino = 0; /* gone meanwhile: a plain entry */
				e.attr.st_mode = mode & S_IFMT;
			} else if (!special_is_ino(eino)) {
				struct nadb_attr a;
				if (nadb_getattr(sp->st, eino, &a)) {
					e.ino = 0;
					e.attr.st_mode = mode & S_IFMT;
				} else {
					stat_of_attr(&a, &e.attr);
					held = !S_ISDIR(a.mode);
				}
			}
			e.attr.st_ino = eino;
			n = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, at + 1);
		} else {
			struct stat st = {.st_ino = eino ? eino : 1, .st_mode = mode & S_IFMT};
			n = fuse_add_direntry(req, buf + used, size - used, name, &st, at + 1);
		}
		if (n > size - used)
			break; /* not sent: the kernel holds nothing by it */
		if (held)
			nadb_remember(sp->st, eino);
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
	return true;
}

bool special_releasedir(struct special *sp, fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	(void)sp;
	if (!special_is_ino(ino))
		return false;
	vdir_free((struct vdir *)(uintptr_t)fi->fh);
	special_reply_err(sp, req, 0);
	return true;
}

/* ---- changes ----------------------------------------------------------------------- */

bool special_unlink(struct special *sp, fuse_req_t req, fuse_ino_t parent,
		    const char *name)
{
	if (!special_is_ino(parent))
		return false;
	if (!is_mirror(parent)) {
		fprintf(stderr, "nadbfs: /tags: only keys in a tag directory can be removed "
				"(that removes the tag)\n");
		special_reply_err(sp, req, EPERM);
		return true;
	}
	struct nadb_tag_query q;
	struct nadb_attr a;
	int rc = query_of(sp, mirror_qid(parent), &q);
	if (!rc)
		rc = nadb_tag_lookup(sp->st, &q, mirror_dir(sp, parent), name, &a);
	if (!rc && S_ISDIR(a.mode))
		rc = -EISDIR;
	if (!rc)
		rc = nadb_tag_query_untag(sp->st, &q, a.ino);
	special_reply_err(sp, req, rc == -EINVAL ? ENOENT : -rc);
	return true;
}

bool special_refuse(struct special *sp, fuse_req_t req, fuse_ino_t ino, const char *what)
{
	(void)sp;
	if (!special_is_ino(ino))
		return false;
	if (is_document(ino) || ino == INO_CTL) {
		special_reply_err(sp, req, EACCES);
		return true;
	}
	fprintf(stderr, "nadbfs: %s under /tags refused: tag directories are read-only "
			"(tag keys with setfattr -n user.tags)\n", what);
	special_reply_err(sp, req, EPERM);
	return true;
}

bool special_xattr(struct special *sp, fuse_req_t req, fuse_ino_t ino, bool list,
		   size_t size)
{
	(void)sp;
	if (!special_is_ino(ino))
		return false;
	if (list && size == 0)
		fuse_reply_xattr(req, 0);
	else if (list)
		fuse_reply_buf(req, NULL, 0);
	else
		special_reply_err(sp, req, ENODATA);
	return true;
}

int special_names_in(struct special *sp, fuse_ino_t dir, const char *names[4],
		     uint64_t inos[4], uint32_t modes[4])
{
	(void)sp;
	if (dir != NADB_ROOT_INO)
		return 0;
	static const char *const fixed[4] = {".ctl", ".metrics", ".stats", "tags"};
	static const uint64_t ino[4] = {INO_CTL, INO_METRICS, INO_STATS, INO_TAGS};
	for (int i = 0; i < 4; i++) {
		names[i] = fixed[i];
		inos[i] = ino[i];
		modes[i] = i == 3 ? S_IFDIR : S_IFREG;
	}
	return 4;
}
