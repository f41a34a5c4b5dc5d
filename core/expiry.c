/* expiry.c -- keys that expire, as in Redis.
 *
 * A key's expiry time lives in its inode record and, for the reaper, in an
 * index ordered by time: (expires, ino).  Expiry is lazy first: every
 * lookup, getattr, open and readdir treats a key whose time has come as
 * gone.  The reaper then deletes such keys in bounded batches straight
 * from the front of the index, never scanning all keys, and releases the
 * engine between batches so a million keys expiring in the same second do
 * not stall anybody for long.
 *
 * A directory may carry a default TTL: a key made below it expires that
 * long after its creation, set in the same step that creates it.
 */
#include "log.h"
#include "index.h"
#include "store_int.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NS 1000000000LL
/* The latest expiry kept: 2255-03-14T16:00:00Z.  Times are int64
 * nanoseconds, which end in 2262; the years between leave a default TTL
 * room to be added to later clocks (expiry_after saturates anyway). */
#define MAX_EXPIRES_S 9000000000LL
#define MAX_EXPIRES_TEXT "2255-03-14T16:00:00Z"
#define REAP_BATCH 1000

static size_t expiry_key(uint8_t key[16], int64_t when, uint64_t ino)
{
	uint64_t t = htobe64((uint64_t)when);
	memcpy(key, &t, 8);
	ino_key(key + 8, ino);
	return 16;
}

/* Drop the index row (WHEN, INO), if there is one. */
static int unindex(struct nadb_store *st, uint64_t ino, int64_t when)
{
	uint8_t key[16];
	int rc = st->kv->ops->del(st->kv, KV_EXPIRY, key, expiry_key(key, when, ino));
	return rc == -ENOENT ? 0 : rc;
}

int expiry_index(struct nadb_store *st, uint64_t ino, int64_t old, int64_t new_)
{
	uint8_t key[16];
	int rc = old ? unindex(st, ino, old) : 0;
	if (!rc && new_)
		rc = st->kv->ops->put(st->kv, KV_EXPIRY, key, expiry_key(key, new_, ino), "", 0);
	if (!rc && new_ && st->expiry_first && new_ < st->expiry_first)
		st->expiry_first = new_;
	if (!rc && (!old) != (!new_)) /* the statistics count a key's names */
		rc = index_expiring_changed(st, ino, new_ ? 1 : -1);
	return rc;
}

static int first_due(void *ctx, const void *key, size_t klen, const void *val,
		     size_t vlen)
{
	(void)val;
	(void)vlen;
	int64_t *when = ctx;
	uint64_t t;
	if (klen == 16) {
		memcpy(&t, key, 8);
		*when = (int64_t)be64toh(t);
	}
	return 1;
}

bool expiry_any_due(struct nadb_store *st, int64_t now)
{
	if (st->expiry_first > now)
		return false;
	int64_t when = 0;
	if (!st->kv->ops->scan(st->kv, KV_EXPIRY, NULL, 0, first_due, &when))
		st->expiry_first = when ? when : INT64_MAX;
	return when && when <= now;
}

int64_t expiry_after(int64_t now, int64_t ttl)
{
	assert(ttl >= 0 && now >= 0);
	return ttl > MAX_EXPIRES_S * NS - now ? MAX_EXPIRES_S * NS : now + ttl;
}

/* The nearest default at or above DIR, up to its namespace, through
 * directories of DIR's owner only: a default deletes keys later, so it
 * must not reach into a directory of another user, whose keys whoever set
 * it could not rm (a user with write permission on a namespace could
 * otherwise expire the keys of another's directory in it). */
int64_t expiry_default_for(struct nadb_store *st, uint64_t dir)
{
	uint32_t owner = 0;
	for (int depth = 0; depth < 4096; depth++) {
		struct inode in;
		if (inode_get(st, dir, &in))
			return 0;
		int64_t ttl = in.r.ttl_default;
		uint8_t level = in.r.level;
		uint64_t parent = in.r.parent;
		uint32_t uid = in.r.uid;
		inode_release(&in);
		if (depth == 0)
			owner = uid;
		else if (uid != owner)
			return 0;
		if (ttl || level <= NADB_LEVEL_NAMESPACE || parent == dir)
			return ttl;
		dir = parent;
	}
	return 0;
}

int expiry_remove(struct nadb_store *st, uint64_t ino, nadb_reaped_fn fn, void *ctx,
		  uint64_t *dir)
{
	struct link_list l;
	int rc = inode_links(st, ino, &l);
	if (dir)
		*dir = !rc && l.n ? l.parents[0] : NADB_ROOT_INO;
	int64_t now = now_ns();
	for (size_t i = 0; !rc && i < l.n; i++) {
		rc = tree_remove_entry(st, l.parents[i], l.names[i], now);
		if (!rc && fn)
			fn(ctx, l.parents[i], l.names[i], ino);
	}
	if (!rc && l.n == 0) {
		/* Unlinked but still open: it is unreachable already; its last
		 * close deletes it.  Only the index row has to go: the inode
		 * keeps its past expiry, so that an open through a name the
		 * kernel still caches finds it expired.  (Expiring counts go by
		 * name, and it has none.) */
		struct inode in;
		rc = inode_get(st, ino, &in);
		if (!rc) {
			rc = in.r.expires ? unindex(st, ino, in.r.expires) : 0;
			inode_release(&in);
		}
	}
	link_list_free(&l);
	return rc;
}

struct due {
	int64_t when;
	uint64_t ino;
};
struct due_list {
	int64_t now;
	unsigned max, n;
	struct due due[REAP_BATCH];
};

static int collect_due(void *ctx, const void *key, size_t klen, const void *val,
		       size_t vlen)
{
	(void)val;
	(void)vlen;
	struct due_list *d = ctx;
	if (klen != 16 || d->n >= d->max)
		return 1;
	uint64_t t, ino;
	memcpy(&t, key, 8);
	memcpy(&ino, (const uint8_t *)key + 8, 8);
	if ((int64_t)be64toh(t) > d->now)
		return 1;
	d->due[d->n].when = (int64_t)be64toh(t);
	d->due[d->n++].ino = be64toh(ino);
	return 0;
}

/* By partition, then as they fell due. */
static int cmp_due(const void *a, const void *b)
{
	const struct due *x = a, *y = b;
	uint32_t px = kv_partition(x->ino), py = kv_partition(y->ino);
	if (px != py)
		return px < py ? -1 : 1;
	return x->when < y->when ? -1 : x->when > y->when;
}

/* Reap the N keys at D (or drop their stale rows), all of one partition,
 * in one step; how many went into *REAPED. */
static int reap_run(struct nadb_store *st, const struct due *d, unsigned n,
		    nadb_reaped_fn fn, void *ctx, unsigned *reaped)
{
	unsigned done = 0;
	int rc = step_begin(st);
	if (rc)
		return rc;
	for (unsigned i = 0; !rc && i < n; i++) {
		assert(kv_partition(d[i].ino) == kv_partition(d[0].ino));
		struct inode in;
		rc = inode_get(st, d[i].ino, &in);
		bool current = !rc && in.r.expires == d[i].when;
		/* A key unlinked while open or held by the kernel waits for its
		 * last close or FORGET: deleted by its user, not reaped, so not
		 * counted (its row goes, below). */
		bool named = !rc && in.r.nlink > 0;
		if (!rc)
			inode_release(&in);
		if (rc == -ENOENT || (!rc && !current)) {
			rc = unindex(st, d[i].ino, d[i].when); /* a stale row */
		} else if (!rc) {
			uint64_t dir; /* counted where the key was, as its name was */
			rc = expiry_remove(st, d[i].ino, fn, ctx, &dir);
			if (!rc && named) {
				rc = counters_add_in(st, dir, C_REAPED, 1);
				done++;
			}
		}
	}
	rc = step_end(st, rc);
	if (!rc)
		*reaped += done;
	return rc;
}

int nadb_reap(struct nadb_store *st, int64_t now, unsigned max, nadb_reaped_fn fn,
	      void *ctx, unsigned *reaped)
{
	if (st->following)
		return -EROFS; /* the writer reaps */
	struct due_list *d = malloc(sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->now = now;
	d->max = max < REAP_BATCH ? max : REAP_BATCH;
	d->n = 0;
	*reaped = 0;
	pthread_mutex_lock(&st->meta_lock);
	int rc = 0;
	if (expiry_any_due(st, now)) {
		rc = st->kv->ops->scan(st->kv, KV_EXPIRY, NULL, 0, collect_due, d);
		st->expiry_first = 0; /* what is left is looked up again */
	}
	/* A step per partition: a key's rows are all its namespace's. */
	qsort(d->due, d->n, sizeof(d->due[0]), cmp_due);
	for (unsigned i = 0, j; !rc && i < d->n; i = j) {
		for (j = i + 1; j < d->n && kv_partition(d->due[j].ino) == kv_partition(d->due[i].ino); j++)
			;
		rc = reap_run(st, d->due + i, j - i, fn, ctx, reaped);
	}
	store_note_step(st);
	pthread_mutex_unlock(&st->meta_lock);
	atomic_fetch_add(&st->reaped, *reaped);
	free(d);
	if (rc)
		nadb_log("reaper: %s", strerror(-rc));
	return rc;
}

static void *reaper_main(void *arg)
{
	struct nadb_store *st = arg;
	pthread_mutex_lock(&st->flush_lock);
	while (!st->reaper_stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		uint64_t ns = (uint64_t)until.tv_nsec +
			      (uint64_t)st->opt.reap_interval_ms * 1000000ULL;
		until.tv_sec += (time_t)(ns / NS);
		until.tv_nsec = (long)(ns % NS);
		pthread_cond_timedwait(&st->reap_cond, &st->flush_lock, &until);
		if (st->reaper_stop)
			break;
		nadb_reaped_fn fn = st->reaped_fn;
		void *ctx = st->reaped_ctx;
		pthread_mutex_unlock(&st->flush_lock);
		unsigned n;
		do {
			if (nadb_reap(st, now_ns(), REAP_BATCH, fn, ctx, &n))
				break;
		} while (n == REAP_BATCH);
		pthread_mutex_lock(&st->flush_lock);
	}
	pthread_mutex_unlock(&st->flush_lock);
	return NULL;
}

int nadb_store_start_reaper(struct nadb_store *st, nadb_reaped_fn fn, void *ctx)
{
	pthread_mutex_lock(&st->flush_lock);
	int rc = 0;
	st->reaped_fn = fn;
	st->reaped_ctx = ctx;
	if (!st->reaper_running) {
		st->reaper_stop = false;
		rc = -pthread_create(&st->reaper, NULL, reaper_main, st);
		st->reaper_running = rc == 0;
	}
	pthread_mutex_unlock(&st->flush_lock);
	return rc;
}

void nadb_store_stop_reaper(struct nadb_store *st)
{
	pthread_mutex_lock(&st->flush_lock);
	bool running = st->reaper_running;
	st->reaper_stop = true;
	st->reaper_running = false;
	pthread_cond_signal(&st->reap_cond);
	pthread_mutex_unlock(&st->flush_lock);
	if (running)
		pthread_join(st->reaper, NULL);
}

/* ---- the xattrs user.ttl and user.expires -------------------------------- */

/* Setting user.ttl to what it read up to this many seconds ago keeps the
 * exact user.expires: copies (rsync sorts names) set it after expires. */
#define TTL_COPY_SLACK_S 2

/* A whole decimal number, nothing before or after it (with NANOS, a
 * fraction of up to 9 digits may follow): -EINVAL, or -ERANGE past
 * MAX_EXPIRES_S. */
static int parse_seconds(const char *v, size_t size, int64_t *secs, int64_t *nanos)
{
	size_t i = 0;
	int64_t s = 0, frac = 0;
	bool too_big = false;
	if (size == 0)
		return -EINVAL;
	for (; i < size && v[i] >= '0' && v[i] <= '9'; i++) {
		too_big |= s > MAX_EXPIRES_S;
		if (!too_big)
			s = s * 10 + (v[i] - '0');
	}
	if (i == 0)
		return -EINVAL;
	if (i < size) {
		if (!nanos || v[i] != '.' || i + 1 == size || size - i - 1 > 9)
			return -EINVAL;
		size_t digits = 0;
		for (i++; i < size; i++, digits++) {
			if (v[i] < '0' || v[i] > '9')
				return -EINVAL;
			frac = frac * 10 + (v[i] - '0');
		}
		for (; digits < 9; digits++)
			frac *= 10;
	}
	if (too_big || s > MAX_EXPIRES_S || (s == MAX_EXPIRES_S && frac))
		return -ERANGE;
	*secs = s;
	if (nanos)
		*nanos = frac;
	return 0;
}

/* Delete key INO now, as the reaper would have at WHEN (past): its inode
 * keeps that expiry while the kernel still holds it, so an open through a
 * name the kernel has not dropped yet (the notice lands after the caller's
 * reply) finds it expired, as a reaped key's, instead of the value. */
static int expire_now(struct nadb_store *st, uint64_t ino, struct inode *in, int64_t when)
{
	assert(when > 0); /* and past, by the caller's clock (which may step back) */
	int rc = expiry_index(st, ino, in->r.expires, when);
	if (!rc) {
		in->r.expires = when;
		rc = inode_put(st, ino, &in->r, in->payload, in->payload_len);
	}
	return rc ? rc : expiry_remove(st, ino, st->reaped_fn, st->reaped_ctx, NULL);
}

/* Give key INO expiry time WHEN (0: none), or delete it if that is past.
 * AS_TTL: the caller gave it as user.ttl. */
static int set_expiry(struct nadb_store *st, uint64_t ino, struct inode *in,
		      int64_t when, bool as_ttl)
{
	if (when && when <= now_ns())
		return expire_now(st, ino, in, when);
	int rc = expiry_index(st, ino, in->r.expires, when);
	if (!rc) {
		in->r.expires = when;
		in->r.flags = (in->r.flags & ~INODE_TTL_GIVEN) |
			      (when && as_ttl ? INODE_TTL_GIVEN : 0);
		in->r.ctime = now_ns();
		rc = inode_put(st, ino, &in->r, in->payload, in->payload_len);
	}
	return rc;
}

static int set_default_ttl(struct nadb_store *st, uint64_t ino, struct inode *in,
			   int64_t ttl)
{
	if (in->r.level < NADB_LEVEL_NAMESPACE) {
		nadb_log("user.ttl: a default TTL belongs on a namespace or a directory in one");
		return -EPERM;
	}
	in->r.ttl_default = ttl;
	in->r.ctime = now_ns();
	return inode_put(st, ino, &in->r, in->payload, in->payload_len);
}

int expiry_xattr_set(struct nadb_store *st, uint64_t ino, const char *name,
		     const char *value, size_t size, const struct nadb_caller *who)
{
	bool is_ttl = !strcmp(name, "user.ttl");
	int64_t secs, nanos = 0;
	int rc = parse_seconds(value, size, &secs, is_ttl ? NULL : &nanos);
	if (rc == -ERANGE) {
		nadb_log("%s: '%.*s' is past " MAX_EXPIRES_TEXT ", the latest expiry kept", name,
			 (int)(size < 64 ? size : 64), value);
		return -EINVAL;
	}
	if (rc) {
		nadb_log("%s: '%.*s' is not a %s", name, (int)(size < 64 ? size : 64), value,
			 is_ttl ? "whole number of seconds" : "Unix time (S or S.NNNNNNNNN)");
		return rc;
	}
	int64_t now = now_ns();
	if (is_ttl && secs > MAX_EXPIRES_S - now / NS) {
		nadb_log("user.ttl: %lld seconds from now is past " MAX_EXPIRES_TEXT
			 ", the latest expiry kept", (long long)secs);
		return -EINVAL;
	}
	struct inode in;
	if ((rc = inode_get(st, ino, &in)))
		return rc;
	if (inode_expired(&in.r, now))
		rc = -ENOENT;
	else if (!S_ISDIR(in.r.mode) && (rc = access_may_remove(st, ino, who, name)))
		; /* an expiry removes the key: only for who could remove it */
	else if (S_ISDIR(in.r.mode))
		rc = !is_ttl ? -EPERM : secs == 0 ? -EINVAL : set_default_ttl(st, ino, &in, secs * NS);
	else if (is_ttl && secs && in.r.expires > now &&
		 secs - (in.r.expires - now + NS - 1) / NS >= 0 &&
		 secs - (in.r.expires - now + NS - 1) / NS <= TTL_COPY_SLACK_S)
		rc = 0; /* what getfattr said up to a moment ago: keep the exact
			 * time (a copy sets user.expires and user.ttl, in either
			 * order, and reads the ttl a little before it sets it) */
	else if (is_ttl)
		rc = secs == 0 ? expire_now(st, ino, &in, now)
			       : set_expiry(st, ino, &in, expiry_after(now, secs * NS), true);
	else
		rc = secs == 0 && nanos == 0 ? expire_now(st, ino, &in, now)
					     : set_expiry(st, ino, &in, secs * NS + nanos, false);
	inode_release(&in);
	return rc;
}

static ssize_t reply(const char *text, char *buf, size_t size)
{
	size_t n = strlen(text);
	if (size && n > size)
		return -ERANGE;
	if (size)
		memcpy(buf, text, n);
	return (ssize_t)n;
}

ssize_t expiry_xattr_get(struct nadb_store *st, uint64_t ino, const char *name,
			 char *buf, size_t size)
{
	struct inode in;
	int rc = inode_get(st, ino, &in);
	if (rc)
		return rc;
	int64_t now = now_ns();
	int64_t when = in.r.expires, ttl = in.r.ttl_default;
	bool dir = S_ISDIR(in.r.mode);
	inode_release(&in);
	char text[40];
	if (!strcmp(name, "user.ttl")) {
		if (dir && ttl)
			snprintf(text, sizeof(text), "%lld", (long long)((ttl + NS - 1) / NS));
		else if (!dir && when > now)
			snprintf(text, sizeof(text), "%lld",
				 (long long)((when - now + NS - 1) / NS));
		else
			return -ENODATA;
	} else {
		if (dir || !when)
			return -ENODATA;
		if (when % NS)
			snprintf(text, sizeof(text), "%lld.%09lld", (long long)(when / NS),
				 (long long)(when % NS));
		else
			snprintf(text, sizeof(text), "%lld", (long long)(when / NS));
	}
	return reply(text, buf, size);
}

int expiry_xattr_remove(struct nadb_store *st, uint64_t ino, const char *name,
			const struct nadb_caller *who)
{
	struct inode in;
	int rc = inode_get(st, ino, &in);
	if (rc)
		return rc;
	if (!S_ISDIR(in.r.mode) && in.r.expires &&
	    (rc = access_may_remove(st, ino, who, name)))
		; /* changing when a key goes is for who could remove it */
	else if (S_ISDIR(in.r.mode))
		rc = in.r.ttl_default && !strcmp(name, "user.ttl")
			     ? set_default_ttl(st, ino, &in, 0) : -ENODATA;
	else if (!in.r.expires)
		rc = -ENODATA;
	else if ((in.r.flags & INODE_TTL_GIVEN) && !strcmp(name, "user.expires"))
		rc = 0; /* a copy that gave user.ttl drops the name it lacks */
	else
		rc = set_expiry(st, ino, &in, 0, false);
	inode_release(&in);
	return rc;
}

/* ---- the tree's events (index.h) ---------------------------------------- */

static int unindex_deleted(struct nadb_store *st, uint64_t ino, const struct inode_rec *r)
{
	return r->expires ? expiry_index(st, ino, r->expires, 0) : 0;
}

const struct index_hooks expiry_hooks = {
	.name = "expiry",
	.inode_deleting = unindex_deleted,
};
