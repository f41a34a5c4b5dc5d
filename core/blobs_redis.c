/* blobs_redis.c -- the blob area of backend.h as Redis strings.
 *
 * Why big strings and not a key per frame: a 4 KiB frame APPENDed into a
 * large string costs about 4,153 bytes of server memory, as its own key
 * about 5.2 KiB (measured, shared/notes/redis-facts.md).  So, like pack.c,
 * frames are appended back to back to segments of up to SEG_MAX bytes,
 * and read back with GETRANGE.  Segment N is "{nadb:NAME:sN}:seg", under
 * a hash tag of its own so that a Redis Cluster spreads the value bytes
 * over its primaries too (a store of layout 3 keeps "{...p0}:seg:N").  The segment numbers are a
 * sorted set ("{...}:segs"); the highest is appended to.
 *
 * Durability: an APPEND is sent and its reply read before append returns,
 * so a frame is in Redis before any metadata naming it can be committed
 * (no buffering here).  With appendfsync always the reply means it is in
 * the AOF on disk, and sync has nothing left to do; with everysec (or no
 * AOF) Redis 7.0 offers no way to wait for the fsync (WAITAOF is 7.2), so
 * sync promises only what the server's own policy does: kv_redis_open
 * logs that once.  Replicas: kv sync's WAIT covers these appends too,
 * since they were acknowledged (so replicated in order) before its EXEC
 * on the same primary; on a cluster, sync first checks that the primary
 * serving them now still holds them all (redis_blobs_sync).
 *
 * Punch: a Redis string cannot give back part of itself, so punch only
 * records the frame's bytes as dead ("{...}:punched", per segment); the
 * segment's held bytes drop, which is what compaction weighs, and its
 * memory comes back when compaction copies the live frames out and
 * removes it.
 *
 * Remove renames the segment to its gone name (listed in "{...p0}:gone")
 * so that a reader that located a frame just before compaction moved it
 * still reads it; forget_removed deletes them, and so does the next open
 * (no reader can be left from before it).
 */
#include "backend.h"
#include "log.h"
#include "redis.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEG_MAX (64u << 20) /* bytes: a segment's size before the next starts
                               (Redis strings stop at 512 MiB) */
#define KEY_SIZE (REDIS_NAME_MAX + 48) /* bytes: longest key name + NUL */
#define SYNC_WAIT_MS 5000 /* ms: how long a sync waits for a segment's replicas */

struct seg {
	uint64_t size;    /* bytes appended (cur's: see cur_size) */
	uint64_t punched; /* bytes of frames punched: dead */
	bool listed;      /* in the segs set and not removed */
	bool gone;        /* removed, kept under its gone name until forget_removed */
};

struct blobs_redis {
	struct blobs blobs;
	/* lock: scope is the connection (a hiredis context is not
	 * thread-safe, so every round trip holds it) and every field below.
	 * Reads from many threads queue here: one round trip at a time. */
	pthread_mutex_t lock;
	struct redis_conn *conn;
	uint32_t cur;      /* the segment appended to */
	uint64_t cur_size; /* its size: where the next frame goes */
	/* On a cluster (redis_blobs_sync): the segments appended to since
	 * metadata was last committed, [unsynced_from, cur] (none:
	 * unsynced_from > cur); what the last sync found whole and
	 * replicated, up to segment checked_cur's checked_size bytes; and
	 * lost: a segment held less than was appended to it (a failover),
	 * so no sync or append succeeds until the store is opened again. */
	uint32_t unsynced_from, checked_cur;
	uint64_t checked_size;
	bool lost;
	unsigned min_replicas; /* blobs_redis_set_min_replicas */
	uint64_t total;    /* bytes held: sizes less punched, of listed segments */
	struct seg *segs;  /* segs[N], N < nsegs */
	uint32_t nsegs;
	char segs_key[KEY_SIZE], punched_key[KEY_SIZE], gone_key[KEY_SIZE];
	/* Segments under hash tags of their own (layout 4, redis.h), so that a
	 * cluster spreads them over its primaries; else in partition 0. */
	bool tagged;
	/* Frames fetched ahead (redis_prefetch), each answering one read of
	 * exactly its bytes: a reply or NULL (taken, or not fetched). */
	struct fetched {
		struct blob_loc loc;
		redisReply *r;
	} *ahead;
	size_t nahead;
	/* Another process writes the store (backend.h): its compaction may
	 * remove a segment we locate a frame in, so a read that finds a
	 * segment short looks under its other name too; nothing is written. */
	bool follower;
};

/* Segment SEG's key (GONE: its name once removed).  Both names of a
 * segment are in one slot. */
static void seg_key(const struct blobs_redis *b, uint32_t seg, bool gone, char *buf)
{
	char what[32];
	if (b->tagged) {
		int n = snprintf(buf, KEY_SIZE, "{nadb:%s:s%u}:%s", redis_conn_name(b->conn), seg,
				 gone ? "gone" : "seg");
		assert(n > 0 && n < KEY_SIZE);
		return;
	}
	snprintf(what, sizeof(what), "%s:%u", gone ? "gone" : "seg", seg);
	redis_key(b->conn, 0, what, buf, KEY_SIZE);
}

/* Make segs[SEG] exist.  Under b->lock. */
static int grow_segs(struct blobs_redis *b, uint32_t seg)
{
	if (seg < b->nsegs)
		return 0;
	uint32_t n = b->nsegs ? b->nsegs : 16;
	while (n <= seg)
		n *= 2;
	struct seg *segs = realloc(b->segs, n * sizeof(*segs));
	if (!segs)
		return -ENOMEM;
	memset(segs + b->nsegs, 0, (n - b->nsegs) * sizeof(*segs));
	b->segs = segs;
	b->nsegs = n;
	return 0;
}

/* One command of plain-text arguments: on partition 0's keys, or (ON_SEG)
 * on the segment key ARGV[1] (and others of its slot). */
static int run_cmd(struct blobs_redis *b, bool on_seg, const char *why, int argc,
		   const char **argv, redisReply **out)
{
	size_t lens[8];
	assert(argc <= 8);
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	return on_seg ? redis_run_key(b->conn, argv[1], why, argc, argv, lens, out)
		      : redis_run_in(b->conn, 0, why, argc, argv, lens, out);
}

static int run_text(struct blobs_redis *b, const char *why, int argc, const char **argv,
		    redisReply **out)
{
	return run_cmd(b, false, why, argc, argv, out);
}

static int run_on_segment(struct blobs_redis *b, const char *why, int argc, const char **argv,
			  redisReply **out)
{
	return run_cmd(b, true, why, argc, argv, out);
}

/* List segment SEG in the segs set.  Under b->lock. */
static int list_segment(struct blobs_redis *b, uint32_t seg)
{
	int rc = grow_segs(b, seg);
	if (rc)
		return rc;
	char num[16];
	snprintf(num, sizeof(num), "%u", seg);
	const char *argv[] = {"ZADD", b->segs_key, num, num};
	redisReply *r;
	rc = run_text(b, "listing a new segment", 4, argv, &r);
	if (rc)
		return rc;
	freeReplyObject(r);
	b->segs[seg].listed = true;
	return 0;
}

/* Later appends go to a new segment.  Under b->lock. */
static int roll_locked(struct blobs_redis *b)
{
	int rc = list_segment(b, b->cur + 1);
	if (rc)
		return rc;
	b->segs[b->cur].size = b->cur_size;
	b->cur++;
	b->cur_size = 0;
	return 0;
}

/* APPEND the LEN bytes of FRAME to the current segment: where they went. */
static int append_locked(struct blobs_redis *b, const void *frame, size_t len,
			 struct blob_loc *out)
{
	if (b->lost)
		return -EIO;
	if (b->cur_size && b->cur_size + len > SEG_MAX) {
		int rc = roll_locked(b);
		if (rc)
			return rc;
	}
	char key[KEY_SIZE];
	seg_key(b, b->cur, false, key);
	const char *argv[] = {"APPEND", key, frame};
	size_t lens[] = {6, strlen(key), len};
	redisReply *r;
	int rc = redis_run_key(b->conn, key, "appending a frame", 3, argv, lens, &r);
	if (rc)
		return rc;
	long long end = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	freeReplyObject(r);
	if (end < (long long)len)
		return redis_reply_error(b->conn, "appending a frame: no length", NULL);
	if ((uint64_t)end < b->cur_size + len) {
		b->lost = true;
		nadb_log("redis %s: segment %u is %lld bytes, shorter than the %llu appended "
			 "to it: frames were lost (a failover before they were replicated?)",
			 redis_conn_name(b->conn), b->cur, end,
			 (unsigned long long)(b->cur_size + len));
		return -EIO;
	}
	if (b->unsynced_from > b->cur)
		b->unsynced_from = b->cur;
	/* The reply says where the frame is: a retried APPEND (the first
	 * reply lost with the connection) leaves a dead copy before it. */
	uint64_t grown = (uint64_t)end - b->cur_size;
	*out = (struct blob_loc){.seg = b->cur, .off = (uint64_t)end - len,
				 .len = (uint32_t)len};
	b->cur_size = (uint64_t)end;
	b->total += grown;
	return 0;
}

static int redis_append(struct blobs *bl, const void *head, size_t hlen,
			const void *data, size_t dlen, struct blob_loc *out)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	size_t len = hlen + dlen;
	if (len > UINT32_MAX || len > SEG_MAX) {
		nadb_log("redis %s: a frame of %zu bytes is larger than a segment",
			 redis_conn_name(b->conn), len);
		return -EFBIG;
	}
	/* One APPEND: a frame is never half there (hiredis copies it once
	 * more into its output buffer; that is cheap next to the network). */
	char *frame = malloc(len ? len : 1);
	if (!frame)
		return -ENOMEM;
	if (hlen) /* compaction moves a whole frame as HEAD, with no DATA */
		memcpy(frame, head, hlen);
	if (dlen)
		memcpy(frame + hlen, data, dlen);
	pthread_mutex_lock(&b->lock);
	int rc = append_locked(b, frame, len, out);
	pthread_mutex_unlock(&b->lock);
	free(frame);
	return rc;
}

/* ---- fetching ahead ----------------------------------------------------------
 * fsck reads every chunk whole, in an order of its own, each a GETRANGE:
 * a round trip each, most of its time on a big store.  Told what comes
 * next (backend.h, prefetch), the frames of one segment are asked for in
 * one pipeline, and reads take their replies. */
/* Drop what was fetched.  Under b->lock. */
static void drop_ahead(struct blobs_redis *b)
{
	for (size_t i = 0; i < b->nahead; i++)
		if (b->ahead[i].r)
			freeReplyObject(b->ahead[i].r);
	b->nahead = 0;
}

static int compare_loc(const void *x, const void *y)
{
	const struct blob_loc *a = &((const struct fetched *)x)->loc,
			      *c = &((const struct fetched *)y)->loc;
	return a->seg != c->seg ? (a->seg < c->seg ? -1 : 1)
			       : a->off != c->off ? (a->off < c->off ? -1 : 1) : 0;
}

/* The frames [FROM, TO) of b->ahead, all of one segment: one pipeline.
 * A failure leaves them unfetched (their reads ask alone).  Under
 * b->lock. */
static void fetch_segment(struct blobs_redis *b, size_t from, size_t to)
{
	size_t n = to - from;
	char key[KEY_SIZE], (*num)[2][24] = malloc(n * sizeof(*num));
	const char **argv = malloc(4 * n * sizeof(*argv));
	size_t *lens = malloc(4 * n * sizeof(*lens));
	struct redis_cmd *cmds = malloc(n * sizeof(*cmds));
	redisReply **replies = malloc(n * sizeof(*replies));
	if (num && argv && lens && cmds && replies) {
		uint32_t seg = b->ahead[from].loc.seg;
		seg_key(b, seg, seg < b->nsegs && b->segs[seg].gone, key);
		for (size_t i = 0; i < n; i++) {
			const struct blob_loc *l = &b->ahead[from + i].loc;
			const char **a = argv + 4 * i;
			size_t *al = lens + 4 * i;
			snprintf(num[i][0], 24, "%llu", (unsigned long long)l->off);
			snprintf(num[i][1], 24, "%llu", (unsigned long long)(l->off + l->len - 1));
			a[0] = "GETRANGE", a[1] = key, a[2] = num[i][0], a[3] = num[i][1];
			for (int j = 0; j < 4; j++)
				al[j] = strlen(a[j]);
			cmds[i] = (struct redis_cmd){4, a, al};
		}
		if (!redis_pipeline_key(b->conn, key, cmds, n, replies))
			for (size_t i = 0; i < n; i++)
				b->ahead[from + i].r = replies[i];
	}
	free(num);
	free(argv);
	free(lens);
	free(cmds);
	free(replies);
}

static void redis_prefetch(struct blobs *bl, const struct blob_loc *locs, size_t n)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	pthread_mutex_lock(&b->lock);
	drop_ahead(b);
	if (!b->ahead && !(b->ahead = malloc(BLOB_PREFETCH_MAX * sizeof(*b->ahead))))
		n = 0; /* reads ask alone */
	for (size_t i = 0; i < n && b->nahead < BLOB_PREFETCH_MAX; i++)
		if (locs[i].len)
			b->ahead[b->nahead++] = (struct fetched){locs[i], NULL};
	qsort(b->ahead, b->nahead, sizeof(*b->ahead), compare_loc);
	for (size_t i = 0, j; i < b->nahead; i = j) {
		for (j = i + 1; j < b->nahead && b->ahead[j].loc.seg == b->ahead[i].loc.seg; j++)
			;
		fetch_segment(b, i, j);
	}
	pthread_mutex_unlock(&b->lock);
}

/* The reply fetched for exactly LEN bytes at OFF of segment SEG, taken
 * (NULL: none).  Under b->lock. */
static redisReply *take_ahead(struct blobs_redis *b, uint32_t seg, uint64_t off, size_t len)
{
	for (size_t i = 0; i < b->nahead; i++) {
		struct fetched *f = &b->ahead[i];
		if (f->r && f->loc.seg == seg && f->loc.off == off && f->loc.len == len) {
			redisReply *r = f->r;
			f->r = NULL;
			return r;
		}
	}
	return NULL;
}

static int redis_read(struct blobs *bl, const struct blob_loc *loc, uint64_t off,
		      void *buf, size_t len)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	if (off + len > loc->len)
		return -EINVAL;
	if (len == 0)
		return 0;
	char key[KEY_SIZE], from[24], to[24];
	snprintf(from, sizeof(from), "%llu", (unsigned long long)(loc->off + off));
	snprintf(to, sizeof(to), "%llu", (unsigned long long)(loc->off + off + len - 1));
	const char *argv[] = {"GETRANGE", key, from, to};
	redisReply *r;
	pthread_mutex_lock(&b->lock);
	redisReply *ahead = b->nahead ? take_ahead(b, loc->seg, loc->off + off, len) : NULL;
	if (ahead && ahead->type == REDIS_REPLY_STRING && ahead->len == len) {
		pthread_mutex_unlock(&b->lock);
		memcpy(buf, ahead->str, len);
		freeReplyObject(ahead);
		return 0;
	}
	if (ahead) /* short, or an error: asked again alone, which says why */
		freeReplyObject(ahead);
	/* A removed segment is read under its gone name until forgotten. */
	bool gone = loc->seg < b->nsegs && b->segs[loc->seg].gone;
	seg_key(b, loc->seg, gone, key);
	int rc = run_on_segment(b, "reading a frame", 4, argv, &r);
	if (!rc && b->follower && (r->type != REDIS_REPLY_STRING || r->len != len)) {
		freeReplyObject(r);
		seg_key(b, loc->seg, !gone, key);
		rc = run_on_segment(b, "reading a frame", 4, argv, &r);
		if (!rc && (r->type != REDIS_REPLY_STRING || r->len != len)) {
			freeReplyObject(r); /* gone for good: the chunk moved since */
			rc = -ESTALE;
		}
	}
	pthread_mutex_unlock(&b->lock);
	if (rc)
		return rc;
	if (r->type != REDIS_REPLY_STRING || r->len != len) {
		nadb_log("redis %s: short read of segment %u at %llu: %zu of %zu bytes",
			 redis_conn_name(b->conn), loc->seg,
			 (unsigned long long)(loc->off + off),
			 r->type == REDIS_REPLY_STRING ? r->len : 0, len);
		freeReplyObject(r);
		return -EIO;
	}
	memcpy(buf, r->str, len);
	freeReplyObject(r);
	return 0;
}

/* One segment appended to since the last commit, on a cluster: STRLEN
 * and a WAIT for the replicas of its primary, in one round trip.  Its
 * primary may have failed over since the appends, to a replica that
 * never got the last ones: then it is shorter than WANT (lost). */
static int check_segment(struct blobs_redis *b, uint32_t seg, uint64_t want)
{
	char key[KEY_SIZE];
	seg_key(b, seg, false, key);
	int replicas = 0;
	int rc = redis_replicas_key(b->conn, key, &replicas);
	if (rc)
		return rc;
	const char *strlen_argv[] = {"STRLEN", key};
	size_t strlen_lens[] = {6, strlen(key)};
	struct redis_wait w;
	struct redis_cmd cmds[] = {{2, strlen_argv, strlen_lens},
				   redis_wait_cmd(&w, replicas, SYNC_WAIT_MS)};
	redisReply *r[2] = {NULL, NULL};
	size_t n = replicas > 0 ? 2 : 1;
	rc = redis_pipeline_key(b->conn, key, cmds, n, r);
	if (rc)
		return rc;
	long long have = r[0]->type == REDIS_REPLY_INTEGER ? r[0]->integer : -1;
	long long got = n == 2 && r[1]->type == REDIS_REPLY_INTEGER ? r[1]->integer : 0;
	for (size_t i = 0; i < n; i++)
		freeReplyObject(r[i]);
	if (have < 0 || (uint64_t)have < want) {
		b->lost = true;
		nadb_log("redis %s: segment %u holds %lld of the %llu bytes appended to it: a "
			 "failover lost frames not yet replicated; the writes since the last "
			 "sync cannot be committed (remount)", redis_conn_name(b->conn), seg, have,
			 (unsigned long long)want);
		return -EIO;
	}
	if (got < replicas)
		nadb_log("redis %s: only %lld of %d replicas confirmed segment %u within %d ms%s",
			 redis_conn_name(b->conn), got, replicas, seg, SYNC_WAIT_MS,
			 got < b->min_replicas ? " (fewer than min_replicas: sync fails)" : "");
	return got < b->min_replicas ? -EIO : 0;
}

/* An APPEND's reply came after the server took it (and, with appendfsync
 * always, fsynced it), and on one server kv sync's WAIT covers its
 * replicas (the top of the file).  On a cluster a segment lives on its
 * own primary: each segment appended to since the last commit is
 * checked whole there, and its replicas waited for, before metadata
 * naming its frames is committed. */
static int redis_blobs_sync(struct blobs *bl)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	pthread_mutex_lock(&b->lock);
	int rc = b->lost ? -EIO : 0;
	uint32_t cur = b->cur;
	uint64_t cur_size = b->cur_size;
	for (uint32_t s = b->unsynced_from; !rc && redis_conn_is_cluster(b->conn) && s <= cur;
	     s++)
		rc = check_segment(b, s, s == cur ? cur_size
					 : s < b->nsegs ? b->segs[s].size : 0);
	if (!rc) {
		b->checked_cur = cur;
		b->checked_size = cur_size;
	}
	pthread_mutex_unlock(&b->lock);
	return rc;
}

/* The metadata of the last synced appends is committed: what that sync
 * checked needs no checking again; appends since (to the segment it
 * checked last, or later ones) do. */
static void redis_blobs_committed(struct blobs *bl)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	pthread_mutex_lock(&b->lock);
	if (b->unsynced_from <= b->cur)
		b->unsynced_from = b->cur == b->checked_cur && b->cur_size == b->checked_size
					   ? UINT32_MAX : b->checked_cur;
	pthread_mutex_unlock(&b->lock);
}

void blobs_redis_set_min_replicas(struct blobs *bl, unsigned n)
{
	((struct blobs_redis *)bl)->min_replicas = n;
}

static uint64_t redis_size(struct blobs *bl)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	pthread_mutex_lock(&b->lock);
	uint64_t total = b->total;
	pthread_mutex_unlock(&b->lock);
	return total;
}

static uint64_t held_of(const struct seg *s, uint64_t size)
{
	return size > s->punched ? size - s->punched : 0;
}

static int redis_segments(struct blobs *bl,
			  int (*fn)(void *ctx, uint32_t seg, uint64_t size, uint64_t held,
				    bool current),
			  void *ctx)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	pthread_mutex_lock(&b->lock);
	uint32_t n = b->nsegs, cur = b->cur;
	struct seg *copy = malloc((n + 1) * sizeof(*copy));
	if (copy)
		memcpy(copy, b->segs, n * sizeof(*copy));
	uint64_t cur_size = b->cur_size;
	pthread_mutex_unlock(&b->lock);
	if (!copy)
		return -ENOMEM;
	int rc = 0;
	for (uint32_t s = 0; !rc && s < n; s++)
		if (s != cur && copy[s].listed)
			rc = fn(ctx, s, copy[s].size, held_of(&copy[s], copy[s].size), false);
	if (!rc)
		rc = fn(ctx, cur, cur_size, cur < n ? held_of(&copy[cur], cur_size) : cur_size,
			true);
	free(copy);
	return rc;
}

static int redis_roll(struct blobs *bl)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	pthread_mutex_lock(&b->lock);
	int rc = b->cur_size ? roll_locked(b) : 0;
	pthread_mutex_unlock(&b->lock);
	return rc;
}

/* Harmless to run twice: list the segment as gone, unlist it, forget its
 * punched count (partition 0's keys); then keep its bytes under its gone
 * name (the segment's slot), for late readers.  The listing goes first:
 * a crash between leaves the segment listed as gone, and delete_gone
 * deletes it under either name. */
static const char unlist_script[] =
	"redis.call('SADD', KEYS[1], ARGV[1]) "
	"redis.call('ZREM', KEYS[2], ARGV[1]) "
	"redis.call('HDEL', KEYS[3], ARGV[1]) return 1";
static const char keep_gone_script[] =
	"if redis.call('EXISTS', KEYS[1]) == 1 then "
	"redis.call('RENAME', KEYS[1], KEYS[2]) end return 1";

static int redis_remove(struct blobs *bl, uint32_t seg)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	char key[KEY_SIZE], gone[KEY_SIZE], num[16];
	snprintf(num, sizeof(num), "%u", seg);
	pthread_mutex_lock(&b->lock);
	if (seg == b->cur || seg >= b->nsegs || !b->segs[seg].listed) {
		pthread_mutex_unlock(&b->lock);
		return -EINVAL;
	}
	seg_key(b, seg, false, key);
	seg_key(b, seg, true, gone);
	const char *unlist[] = {"EVAL", unlist_script, "3", b->gone_key, b->segs_key,
				b->punched_key, num};
	const char *keep[] = {"EVAL", keep_gone_script, "2", key, gone};
	size_t lens[7];
	for (int i = 0; i < 7; i++)
		lens[i] = strlen(unlist[i]);
	redisReply *r;
	int rc = redis_run_in(b->conn, 0, "removing a segment", 7, unlist, lens, &r);
	if (!rc) {
		freeReplyObject(r);
		for (int i = 0; i < 5; i++)
			lens[i] = strlen(keep[i]);
		rc = redis_run_key(b->conn, key, "removing a segment", 5, keep, lens, &r);
	}
	if (!rc) {
		freeReplyObject(r);
		struct seg *s = &b->segs[seg];
		b->total -= held_of(s, s->size);
		*s = (struct seg){.gone = true};
	}
	pthread_mutex_unlock(&b->lock);
	return rc;
}

/* Delete segment N of every N in LIST (N of them), under both its names,
 * then its listing as gone: one round trip a segment (each in its own
 * slot), one for the listing. */
static int delete_gone(struct blobs_redis *b, const uint32_t *list, uint32_t n)
{
	int rc = 0;
	for (uint32_t i = 0; !rc && i < n; i++) {
		char key[KEY_SIZE], gone[KEY_SIZE];
		seg_key(b, list[i], false, key);
		seg_key(b, list[i], true, gone);
		/* a segment still named seg:N here was listed as gone and not
		 * renamed (a crash), or is still listed: only the former */
		bool listed = list[i] < b->nsegs && b->segs[list[i]].listed;
		const char *argv[] = {"DEL", gone, key};
		redisReply *r;
		rc = run_on_segment(b, "deleting a removed segment", listed ? 2 : 3, argv, &r);
		if (!rc)
			freeReplyObject(r);
	}
	if (rc || n == 0)
		return rc;
	const char **argv = malloc((n + 2) * sizeof(*argv));
	size_t *lens = malloc((n + 2) * sizeof(*lens));
	char (*nums)[16] = malloc(n * sizeof(*nums));
	rc = argv && lens && nums ? 0 : -ENOMEM;
	if (!rc) {
		argv[0] = "SREM", lens[0] = 4;
		argv[1] = b->gone_key, lens[1] = strlen(b->gone_key);
		for (uint32_t i = 0; i < n; i++) {
			lens[i + 2] = (size_t)snprintf(nums[i], 16, "%u", list[i]);
			argv[i + 2] = nums[i];
		}
		redisReply *r;
		rc = redis_run_in(b->conn, 0, "unlisting removed segments", (int)n + 2, argv,
				  lens, &r);
		if (!rc) { /* and any punched count a late punch left */
			freeReplyObject(r);
			argv[0] = "HDEL", lens[0] = 4;
			argv[1] = b->punched_key, lens[1] = strlen(b->punched_key);
			rc = redis_run_in(b->conn, 0, "unlisting removed segments", (int)n + 2,
					  argv, lens, &r);
		}
		if (!rc)
			freeReplyObject(r);
	}
	free(argv);
	free(lens);
	free(nums);
	return rc;
}

static void redis_forget_removed(struct blobs *bl)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	pthread_mutex_lock(&b->lock);
	uint32_t *list = calloc(b->nsegs + 1, sizeof(*list)), n = 0;
	for (uint32_t s = 0; list && s < b->nsegs; s++)
		if (b->segs[s].gone)
			list[n++] = s;
	/* On failure they stay listed in gone: the next open deletes them. */
	if (list && !delete_gone(b, list, n))
		for (uint32_t i = 0; i < n; i++)
			b->segs[list[i]].gone = false;
	pthread_mutex_unlock(&b->lock);
	free(list);
}

static int redis_punch(struct blobs *bl, const struct blob_loc *loc)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	char num[16], len[16];
	snprintf(num, sizeof(num), "%u", loc->seg);
	snprintf(len, sizeof(len), "%u", loc->len);
	const char *argv[] = {"HINCRBY", b->punched_key, num, len};
	pthread_mutex_lock(&b->lock);
	int rc = 0;
	if (loc->seg < b->nsegs && b->segs[loc->seg].listed) {
		redisReply *r;
		rc = run_text(b, "recording a punched frame", 4, argv, &r);
		if (!rc) {
			freeReplyObject(r);
			struct seg *s = &b->segs[loc->seg];
			uint64_t size = loc->seg == b->cur ? b->cur_size : s->size;
			uint64_t before = held_of(s, size);
			s->punched += loc->len;
			b->total -= before - held_of(s, size);
		}
	}
	pthread_mutex_unlock(&b->lock);
	return rc;
}

static void redis_blobs_close(struct blobs *bl)
{
	struct blobs_redis *b = (struct blobs_redis *)bl;
	drop_ahead(b);
	free(b->ahead);
	redis_conn_close(b->conn);
	pthread_mutex_destroy(&b->lock);
	free(b->segs);
	free(b);
}

static const struct blob_ops redis_blob_ops = {
	.append = redis_append,
	.read = redis_read,
	.prefetch = redis_prefetch,
	.sync = redis_blobs_sync,
	.committed = redis_blobs_committed,
	.size = redis_size,
	.segments = redis_segments,
	.roll = redis_roll,
	.remove = redis_remove,
	.forget_removed = redis_forget_removed,
	.punch = redis_punch,
	.close = redis_blobs_close,
};

/* ---- opening ---------------------------------------------------------------- */

/* Removed segments left by the last run: nothing reads them any more. */
static int forget_old_gone(struct blobs_redis *b)
{
	const char *argv[] = {"SMEMBERS", b->gone_key};
	redisReply *r;
	int rc = run_text(b, "listing removed segments", 2, argv, &r);
	if (rc)
		return rc;
	uint32_t *list = calloc(r->elements + 1, sizeof(*list)), n = 0;
	for (size_t i = 0; list && i < r->elements; i++)
		if (r->element[i]->type == REDIS_REPLY_STRING)
			list[n++] = (uint32_t)strtoul(r->element[i]->str, NULL, 10);
	freeReplyObject(r);
	rc = list ? delete_gone(b, list, n) : -ENOMEM;
	free(list);
	return rc;
}

/* Sizes (STRLEN) of the listed segments, one round trip each (each in its
 * own slot; a store has few: SEG_MAX bytes each), and their punched bytes. */
static int measure_segments(struct blobs_redis *b, const redisReply *segs)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < segs->elements; i++) {
		uint32_t seg = (uint32_t)strtoul(segs->element[i]->str, NULL, 10);
		char key[KEY_SIZE];
		seg_key(b, seg, false, key);
		const char *argv[] = {"STRLEN", key};
		redisReply *r;
		rc = run_on_segment(b, "measuring a segment", 2, argv, &r);
		if (rc)
			break;
		rc = grow_segs(b, seg);
		if (!rc) {
			b->segs[seg].listed = true;
			b->segs[seg].size = r->type == REDIS_REPLY_INTEGER ? (uint64_t)r->integer : 0;
			if (seg >= b->cur)
				b->cur = seg;
		}
		freeReplyObject(r);
	}
	const char *argv[] = {"HGETALL", b->punched_key};
	redisReply *p = NULL;
	if (!rc)
		rc = run_text(b, "reading punched bytes", 2, argv, &p);
	for (size_t i = 0; p && p->type == REDIS_REPLY_ARRAY && i + 1 < p->elements; i += 2) {
		uint32_t seg = (uint32_t)strtoul(p->element[i]->str, NULL, 10);
		if (seg < b->nsegs && b->segs[seg].listed)
			b->segs[seg].punched = strtoull(p->element[i + 1]->str, NULL, 10);
	}
	if (p)
		freeReplyObject(p);
	for (uint32_t s = 0; !rc && s < b->nsegs; s++)
		if (b->segs[s].listed)
			b->total += held_of(&b->segs[s], b->segs[s].size);
	if (!rc && b->cur < b->nsegs) {
		b->cur_size = b->segs[b->cur].size;
		b->segs[b->cur].size = 0; /* the current one's size is cur_size */
	}
	return rc;
}

/* Find the segments and the one appended to; a new store gets segment 1. */
static int load_segments(struct blobs_redis *b)
{
	const char *argv[] = {"ZRANGE", b->segs_key, "0", "-1"};
	redisReply *r;
	int rc = run_text(b, "listing segments", 4, argv, &r);
	if (rc)
		return rc;
	if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
		freeReplyObject(r);
		b->cur = 1;
		return b->follower ? 0 : list_segment(b, 1); /* the writer lists it */
	}
	rc = measure_segments(b, r);
	freeReplyObject(r);
	return rc;
}

static int open_blobs(const char *url, bool follower, struct blobs **out)
{
	struct blobs_redis *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->blobs.ops = &redis_blob_ops;
	b->unsynced_from = UINT32_MAX; /* nothing appended yet */
	b->follower = follower;
	pthread_mutex_init(&b->lock, NULL);
	int rc = redis_conn_open(url, &b->conn);
	if (!rc) {
		redis_key(b->conn, 0, "segs", b->segs_key, KEY_SIZE);
		redis_key(b->conn, 0, "punched", b->punched_key, KEY_SIZE);
		redis_key(b->conn, 0, "gone", b->gone_key, KEY_SIZE);
		rc = follower ? redis_check_format(b->conn) : redis_claim_format(b->conn);
	}
	if (!rc)
		rc = redis_segments_tagged(b->conn, &b->tagged);
	if (!rc && !follower) /* the writer's own, which a follower may read */
		rc = forget_old_gone(b);
	if (!rc)
		rc = load_segments(b);
	if (rc) {
		redis_conn_close(b->conn);
		pthread_mutex_destroy(&b->lock);
		free(b->segs);
		free(b);
		return rc;
	}
	*out = &b->blobs;
	return 0;
}

int blobs_redis_open(const char *url, struct blobs **out)
{
	return open_blobs(url, false, out);
}

int blobs_redis_open_follower(const char *url, struct blobs **out)
{
	return open_blobs(url, true, out);
}
