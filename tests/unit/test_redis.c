/* test_redis.c -- what the Redis backend adds to the contract of
 * test_backend.c: store URLs (good and bad), a wrong or missing password,
 * a server that is not there (a quick, bounded failure), a server that
 * restarts or stays away for a while under an open store (nothing synced
 * is lost, nothing unsynced is half applied), a NAME that is not a nadb
 * store, the store lock, scans that cross Redis batches with the
 * overlays' puts and deletes in between, and a follower's notices.  Each part runs against a
 * private redis-server this test starts and stops.
 */
#include "backend.h"
#include "redis.h"
#include "kv_check.h"
#include "redis_server.h"
#include "unit.h"

#include <endian.h>
#include <stdint.h>

static void check_urls(void)
{
	struct redis_url u;
	CHECK(redis_url_parse("redis://127.0.0.1:6380/mystore", &u) == 0);
	CHECK(!strcmp(u.host, "127.0.0.1") && u.port == 6380 && !strcmp(u.name, "mystore") &&
	      !u.has_password);
	CHECK(redis_url_parse("redis://:s3cr%40t@db.example:7000", &u) == 0);
	CHECK(!strcmp(u.host, "db.example") && u.port == 7000 && !strcmp(u.name, "nadb") &&
	      u.has_password && !strcmp(u.password, "s3cr@t") && !u.user[0]);
	CHECK(redis_url_parse("redis://alice:p@ss:w/rd@h:1/a.b-c_D9", &u) == 0);
	CHECK(!strcmp(u.user, "alice") && !strcmp(u.password, "p@ss:w/rd") &&
	      !strcmp(u.host, "h") && u.port == 1 && !strcmp(u.name, "a.b-c_D9"));
	CHECK(redis_url_parse("redis://[::1]:6379/x", &u) == 0);
	CHECK(!strcmp(u.host, "::1") && u.port == 6379 && !strcmp(u.name, "x"));
	CHECK(redis_url_parse("redis://localhost", &u) == 0 && u.port == 6379);
	CHECK(redis_url_parse("redis://h:2/", &u) == 0 && !strcmp(u.name, "nadb"));

	CHECK(redis_url_parse("http://h:1/x", &u) == -EINVAL);
	CHECK(redis_url_parse("redis://:1/x", &u) == -EINVAL);          /* empty host */
	CHECK(redis_url_parse("redis://h:0/x", &u) == -EINVAL);         /* port */
	CHECK(redis_url_parse("redis://h:65536/x", &u) == -EINVAL);
	CHECK(redis_url_parse("redis://h:12a/x", &u) == -EINVAL);
	CHECK(redis_url_parse("redis://h:/x", &u) == -EINVAL);
	CHECK(redis_url_parse("redis://h:1/a b", &u) == -EINVAL);       /* NAME chars */
	CHECK(redis_url_parse("redis://h:1/{x}", &u) == -EINVAL);
	CHECK(redis_url_parse("redis://h:1/a/b", &u) == -EINVAL);
	CHECK(redis_url_parse("redis://h:1/"
			      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
			      &u) == -EINVAL);                            /* 65 */
	CHECK(redis_url_parse("redis://[::1/x", &u) == -EINVAL);
	CHECK(redis_url_parse("redis://pass@h:1/x", &u) == -EINVAL);    /* no ':' */
	CHECK(redis_url_parse("redis://:bad%zz@h:1/x", &u) == -EINVAL);
	CHECK(redis_url_parse("rediss://h:1/x", &u) == -EPROTONOSUPPORT);
	CHECK(store_is_redis_url("redis://h:1") && store_is_redis_url("rediss://h:1"));
	CHECK(!store_is_redis_url("/var/lib/nadb") && !store_is_redis_url("data"));
}

static void check_passwords(const char *dir)
{
	struct redis_server s;
	char sdir[400], url[200];
	snprintf(sdir, sizeof(sdir), "%s/auth", dir);
	CHECK(redis_server_start(&s, sdir, "right-one") == 0);
	struct kv *kv;
	snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d/p", s.port);
	CHECK(kv_redis_open(url, &kv) == -EACCES);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/p", s.port);
	CHECK(kv_redis_open(url, &kv) == -EACCES);
	snprintf(url, sizeof(url), "redis://default:right-one@127.0.0.1:%d/p", s.port);
	int rc = kv_redis_open(url, &kv);
	CHECK(rc == 0);
	if (!rc)
		kv->ops->close(kv);
	redis_server_url(&s, "p", url, sizeof(url));
	struct blobs *b;
	rc = blobs_redis_open(url, &b);
	CHECK(rc == 0);
	if (!rc)
		b->ops->close(b);
	redis_server_stop(&s);
}

static void check_unreachable(const char *dir)
{
	/* a port nothing listens on: a server started and stopped there */
	struct redis_server s;
	char sdir[400], url[200];
	snprintf(sdir, sizeof(sdir), "%s/gone", dir);
	CHECK(redis_server_start(&s, sdir, NULL) == 0);
	redis_server_stop(&s);
	redis_server_url(&s, "x", url, sizeof(url));
	long t0 = redis_test_now_ms();
	struct kv *kv;
	int rc = kv_redis_open(url, &kv);
	CHECK(rc == -ECONNREFUSED || rc == -EIO);
	CHECK(redis_test_now_ms() - t0 < 3000);
	struct blobs *b;
	rc = blobs_redis_open(url, &b);
	CHECK(rc == -ECONNREFUSED || rc == -EIO);
}

static int put_in_step(struct kv *kv, const char *k, const char *v)
{
	int rc = kv->ops->step_begin(kv);
	if (!rc)
		rc = put_s(kv, KV_META, k, v);
	int e = kv->ops->step_end(kv, rc == 0);
	return rc ? rc : e;
}

static void check_restarts(const char *dir)
{
	struct redis_server s;
	char sdir[400], url[200];
	snprintf(sdir, sizeof(sdir), "%s/restart", dir);
	CHECK(redis_server_start(&s, sdir, NULL) == 0);
	redis_server_url(&s, "r", url, sizeof(url));
	struct kv *kv;
	struct blobs *b;
	CHECK(kv_redis_open(url, &kv) == 0);
	CHECK(blobs_redis_open(url, &b) == 0);
	struct blob_loc loc;
	CHECK(b->ops->append(b, "head", 4, "frame bytes", 11, &loc) == 0);
	CHECK(put_in_step(kv, "before", "1") == 0);
	CHECK(kv->ops->sync(kv) == 0);
	CHECK(put_in_step(kv, "pending", "2") == 0);

	/* killed (no clean shutdown) and back on the same port and files */
	redis_server_kill(&s, SIGKILL);
	CHECK(redis_server_restart(&s) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	CHECK(holds(kv, KV_META, "before", "1") && holds(kv, KV_META, "pending", "2"));
	char got[15];
	CHECK(b->ops->read(b, &loc, 0, got, 15) == 0 && !memcmp(got, "headframe bytes", 15));

	/* away for longer than the reconnect bound: -EIO, the group kept */
	CHECK(put_in_step(kv, "while-down", "3") == 0);
	redis_server_kill(&s, SIGKILL);
	long t0 = redis_test_now_ms();
	CHECK(kv->ops->sync(kv) == -EIO);
	CHECK(redis_test_now_ms() - t0 < 20000);
	CHECK(kv->ops->unsynced(kv) == 1);
	CHECK(redis_server_restart(&s) == 0);
	CHECK(kv->ops->sync(kv) == 0 && kv->ops->unsynced(kv) == 0);
	kv->ops->close(kv);
	b->ops->close(b);

	redis_server_kill(&s, SIGKILL);
	CHECK(redis_server_restart(&s) == 0);
	CHECK(kv_redis_open(url, &kv) == 0);
	CHECK(holds(kv, KV_META, "before", "1") && holds(kv, KV_META, "pending", "2") &&
	      holds(kv, KV_META, "while-down", "3"));
	kv->ops->close(kv);
	redis_server_stop(&s);
}

/* A NAME with keys of a store but no format marker is refused. */
static void check_foreign(struct redis_server *s)
{
	char url[200];
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
	CHECK(c && !c->err);
	redisReply *r = c ? redisCommand(c, "HSET {nadb:foreign:p0}:t:meta:h k v") : NULL;
	CHECK(r && r->type == REDIS_REPLY_INTEGER);
	if (r)
		freeReplyObject(r);
	r = c ? redisCommand(c, "SET {nadb:oldformat:p0}:format %s", "nadb-redis 1") /* layout 1 */ : NULL;
	if (r)
		freeReplyObject(r);
	struct kv *kv;
	redis_server_url(s, "foreign", url, sizeof(url));
	CHECK(kv_redis_open(url, &kv) == -EEXIST);
	redis_server_url(s, "oldformat", url, sizeof(url));
	CHECK(kv_redis_open(url, &kv) == -EPROTO);
	/* a new NAME is marked at open */
	redis_server_url(s, "fresh", url, sizeof(url));
	int rc = kv_redis_open(url, &kv);
	CHECK(rc == 0);
	if (!rc)
		kv->ops->close(kv);
	r = c ? redisCommand(c, "GET {nadb:fresh:p0}:format") : NULL;
	CHECK(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, REDIS_FORMAT_TEXT));
	if (r)
		freeReplyObject(r);
	/* a store of layout 2 (every row in partition 0) is taken on as it is,
	 * and marked as today's with its segments in partition 0 (as layout
	 * 3's are) */
	redis_server_url(s, "two", url, sizeof(url));
	rc = kv_redis_open(url, &kv);
	CHECK(rc == 0);
	if (!rc) {
		CHECK(kv->ops->step_begin(kv) == 0);
		CHECK(kv->ops->put(kv, KV_DIRENTS, "\0\0\0\0\0\0\0\1app", 11, "d", 1) == 0);
		CHECK(kv->ops->step_end(kv, 1) == 0);
		CHECK(kv->ops->sync(kv) == 0);
		kv->ops->close(kv);
	}
	r = c ? redisCommand(c, "SET {nadb:two:p0}:format %s", REDIS_FORMAT_TEXT_2) : NULL;
	if (r)
		freeReplyObject(r);
	rc = kv_redis_open(url, &kv);
	CHECK(rc == 0);
	if (!rc) {
		struct kv_val v;
		CHECK(kv->ops->get(kv, KV_DIRENTS, "\0\0\0\0\0\0\0\1app", 11, &v) == 0 &&
		      v.len == 1);
		kv->ops->close(kv);
	}
	r = c ? redisCommand(c, "GET {nadb:two:p0}:format") : NULL;
	CHECK(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, REDIS_FORMAT_TEXT_UNTAGGED));
	if (r)
		freeReplyObject(r);
	if (c)
		redisFree(c);
}

static void check_lock(struct redis_server *s)
{
	char url[200];
	redis_server_url(s, "locked", url, sizeof(url));
	struct redis_conn *a, *b;
	CHECK(redis_conn_open(url, &a) == 0);
	CHECK(redis_conn_open(url, &b) == 0);
	if (failures)
		return;
	CHECK(redis_store_lock(a, "host-a 1", 10000) == 0);
	long long gen = redis_store_lock_gen(a);
	CHECK(gen > 0);
	CHECK(redis_store_lock(a, "host-a 1", 10000) == 0); /* a retried take */
	CHECK(redis_store_lock_gen(a) == gen);                /* knows its generation */
	CHECK(redis_store_lock(b, "host-b 2", 10000) == -EBUSY);
	CHECK(redis_store_lock_refresh(a, "host-a 1", 10000) == 0);
	CHECK(redis_store_lock_refresh(b, "host-b 2", 10000) == -ENOLCK);
	CHECK(redis_store_lock_release(b, "host-b 2") == 0); /* not b's: kept */
	CHECK(redis_store_lock(b, "host-b 2", 10000) == -EBUSY);
	CHECK(redis_store_lock_release(a, "host-a 1") == 0);
	CHECK(redis_store_lock(b, "host-b 2", 200) == 0);
	usleep(400000); /* expired: a can take it, b has lost it */
	CHECK(redis_store_lock(a, "host-a 1", 10000) == 0);
	CHECK(redis_store_lock_refresh(b, "host-b 2", 10000) == -ENOLCK);
	/* expired with nobody taking it since (the server was away): ours
	 * again at the next refresh; taken and let go by another meanwhile:
	 * lost */
	CHECK(redis_store_lock_release(a, "host-a 1") == 0);
	CHECK(redis_store_lock(a, "host-a 1", 200) == 0);
	usleep(400000);
	CHECK(redis_store_lock_refresh(a, "host-a 1", 10000) == 0);
	CHECK(redis_store_lock(b, "host-b 2", 10000) == -EBUSY);
	CHECK(redis_store_lock_release(a, "host-a 1") == 0);
	CHECK(redis_store_lock(a, "host-a 1", 200) == 0);
	usleep(400000);
	CHECK(redis_store_lock(b, "host-b 2", 10000) == 0);
	CHECK(redis_store_lock_release(b, "host-b 2") == 0);
	CHECK(redis_store_lock_refresh(a, "host-a 1", 10000) == -ENOLCK);
	redis_conn_close(a);
	redis_conn_close(b);
}

struct walk {
	uint32_t last;
	int n;
	bool ordered;
};

static int walk_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct walk *w = ctx;
	uint32_t k = 0;
	if (klen != 4 || vlen != 4 || memcmp(key, val, 4))
		w->ordered = false;
	memcpy(&k, key, klen < 4 ? klen : 4);
	k = __builtin_bswap32(k);
	if (w->n && k <= w->last)
		w->ordered = false;
	w->last = k;
	w->n++;
	return 0;
}

static int put_be32(struct kv *kv, uint32_t i)
{
	uint32_t be = __builtin_bswap32(i);
	return kv->ops->put(kv, KV_CHUNKS, &be, 4, &be, 4);
}

/* 3000 rows in Redis (many batches); a step deletes every third and puts
 * rows between them: one scan sees exactly the merge, in order. */
static void check_big_scans(struct redis_server *s)
{
	char url[200];
	redis_server_url(s, "scans", url, sizeof(url));
	struct kv *kv;
	CHECK(kv_redis_open(url, &kv) == 0);
	if (failures)
		return;
	CHECK(kv->ops->step_begin(kv) == 0);
	for (uint32_t i = 0; i < 3000; i++)
		CHECK(put_be32(kv, 2 * i) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	CHECK(kv->ops->step_begin(kv) == 0);
	for (uint32_t i = 0; i < 3000; i += 3) {
		uint32_t be = __builtin_bswap32(2 * i);
		CHECK(kv->ops->del(kv, KV_CHUNKS, &be, 4) == 0);
	}
	for (uint32_t i = 0; i < 500; i++)
		CHECK(put_be32(kv, 2 * i + 1) == 0);
	struct walk w = {.ordered = true};
	CHECK(kv->ops->scan(kv, KV_CHUNKS, NULL, 0, walk_row, &w) == 0);
	CHECK(w.ordered && w.n == 3000 - 1000 + 500);
	uint32_t from = __builtin_bswap32(5001);
	w = (struct walk){.ordered = true};
	CHECK(kv->ops->scan(kv, KV_CHUNKS, &from, 4, walk_row, &w) == 0);
	CHECK(w.ordered && w.n == 2000 - 1667 && w.last == 5998);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	kv->ops->close(kv);
	CHECK(kv_redis_open(url, &kv) == 0);
	w = (struct walk){.ordered = true};
	CHECK(kv->ops->scan(kv, KV_CHUNKS, NULL, 0, walk_row, &w) == 0);
	CHECK(w.ordered && w.n == 2500);
	kv->ops->close(kv);
}

/* Partition-scanned rows: a partition missing from the "partitions" set
 * hides its rows from scans; fsck's check finds it, and mends it with
 * repair. */
static int count_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	(*(int *)ctx)++;
	return 0;
}

static void note_problem(void *ctx, const char *line)
{
	(void)line;
	(*(int *)ctx)++;
}

static void check_partitions_set(struct redis_server *s)
{
	char url[200];
	redis_server_url(s, "parted", url, sizeof(url));
	struct kv *kv;
	CHECK(kv_redis_open(url, &kv) == 0);
	if (failures)
		return;
	uint64_t p, x;
	CHECK(kv->ops->claim_inos(kv, 0, 1, &p) == 0);
	CHECK(kv->ops->claim_inos(kv, p, 1, &x) == 0);
	uint8_t key[9];
	uint64_t be = htobe64(x);
	memcpy(key, &be, 8);
	key[8] = 'k';
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->put(kv, KV_XATTRS, key, 9, "v", 1) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	kv->ops->close(kv);
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
	CHECK(c && !c->err);
	redisReply *r = c ? redisCommand(c, "ZREM {nadb:parted:p0}:partitions %u",
					 kv_partition(x)) : NULL;
	CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
	if (r)
		freeReplyObject(r);
	CHECK(kv_redis_open(url, &kv) == 0);
	if (failures)
		return;
	int rows = 0, told = 0;
	uint64_t problems = 9, mended = 9;
	CHECK(kv->ops->scan(kv, KV_XATTRS, NULL, 0, count_one, &rows) == 0 && rows == 0);
	CHECK(kv->ops->check(kv, false, note_problem, &told, &problems, &mended) == 0);
	CHECK(problems == 1 && told == 1);
	/* a group synced after a check (partition 0's row and a new
	 * partition's): scans still walk partition 0 */
	uint64_t q, y;
	CHECK(kv->ops->claim_inos(kv, 0, 1, &q) == 0);
	CHECK(kv->ops->claim_inos(kv, q, 1, &y) == 0);
	be = htobe64(y);
	memcpy(key, &be, 8);
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->put(kv, KV_XATTRS, "\0\0\0\0\0\0\0\1z", 9, "v", 1) == 0);
	CHECK(kv->ops->put(kv, KV_XATTRS, key, 9, "v", 1) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	rows = 0;
	CHECK(kv->ops->scan(kv, KV_XATTRS, NULL, 0, count_one, &rows) == 0 && rows == 2);
	CHECK(kv->ops->check(kv, true, note_problem, &told, &problems, &mended) == 0 &&
	      problems == 1 && mended == 1);
	rows = 0;
	CHECK(kv->ops->scan(kv, KV_XATTRS, NULL, 0, count_one, &rows) == 0 && rows == 3);
	kv->ops->close(kv);
	CHECK(kv_redis_open(url, &kv) == 0);
	if (failures)
		return;
	CHECK(kv->ops->check(kv, false, note_problem, &told, &problems, &mended) == 0 && problems == 0);
	rows = 0;
	CHECK(kv->ops->scan(kv, KV_XATTRS, NULL, 0, count_one, &rows) == 0 && rows == 3);
	kv->ops->close(kv);
	if (c)
		redisFree(c);
}

/* An inode a prefix scan found no rows of is remembered as such (an
 * unlink scans for a key's tags, xattrs and names several times) -- until
 * a sync may have written some, or a row of the open group. */
static void check_empty_prefixes(struct redis_server *s)
{
	char url[200];
	redis_server_url(s, "empty", url, sizeof(url));
	struct kv *kv;
	CHECK(kv_redis_open(url, &kv) == 0);
	if (failures)
		return;
	uint8_t ino[8] = {0, 0, 0, 0, 0, 0, 0, 9}, key[9];
	memcpy(key, ino, 8);
	key[8] = 'a';
	int rows = 0;
	CHECK(kv->ops->scan_prefix(kv, KV_XATTRS, ino, 8, count_one, &rows) == 0 && rows == 0);
	CHECK(kv->ops->scan_prefix(kv, KV_XATTRS, ino, 8, count_one, &rows) == 0 && rows == 0);
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->put(kv, KV_XATTRS, key, 9, "v", 1) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->scan_prefix(kv, KV_XATTRS, ino, 8, count_one, &rows) == 0 && rows == 1);
	CHECK(kv->ops->sync(kv) == 0);
	rows = 0;
	CHECK(kv->ops->scan_prefix(kv, KV_XATTRS, ino, 8, count_one, &rows) == 0 && rows == 1);
	kv->ops->close(kv);
}

struct heard {
	int rows, inodes, dirents;
};

static int hear_row(void *ctx, enum kv_table t, const void *key, size_t klen)
{
	struct heard *h = ctx;
	h->rows++;
	h->inodes += t == KV_INODES && klen == 8;
	h->dirents += t == KV_DIRENTS && klen == 12 && !memcmp((const char *)key + 8, "name", 4);
	return 0;
}

/* A step putting (V) or deleting (V NULL) the inodes row of INO. */
static int put_ino(struct kv *kv, uint64_t ino, const char *v)
{
	uint8_t key[8];
	for (int i = 0; i < 8; i++)
		key[i] = (uint8_t)(ino >> (56 - 8 * i));
	int rc = kv->ops->step_begin(kv);
	if (!rc)
		rc = v ? kv->ops->put(kv, KV_INODES, key, 8, v, strlen(v))
		       : kv->ops->del(kv, KV_INODES, key, 8);
	int e = kv->ops->step_end(kv, rc == 0);
	return rc ? rc : e;
}

static bool holds_ino(struct kv *kv, uint64_t ino, const char *v)
{
	uint8_t key[8];
	for (int i = 0; i < 8; i++)
		key[i] = (uint8_t)(ino >> (56 - 8 * i));
	struct kv_val got;
	int rc = kv->ops->get(kv, KV_INODES, key, 8, &got);
	if (!v)
		return rc == -ENOENT;
	return rc == 0 && got.len == strlen(v) && !memcmp(got.data, v, got.len);
}

/* Two writers, one after the other, as when a daemon cut off from Redis
 * lost its lock to another: once the later one fenced the store, a sync
 * of the earlier (one that was held up in the network) writes nothing,
 * in any partition, sorted or bucketed, puts or deletes, and fails
 * -ENOLCK; the later writer's rows stand. */
static void check_fences(struct redis_server *s)
{
	char url[200];
	redis_server_url(s, "fenced", url, sizeof(url));
	uint64_t ino = (3ull << KV_PART_SHIFT) | 5, ino2 = (3ull << KV_PART_SHIFT) | 6,
		 ino4 = (4ull << KV_PART_SHIFT) | 1;
	struct kv *a, *b;
	CHECK(kv_redis_open(url, &a) == 0);
	if (failures)
		return;
	CHECK(kv_redis_set_fence(a, 1) == 0);
	CHECK(put_in_step(a, "k", "a1") == 0);
	CHECK(put_ino(a, ino, "a1") == 0 && put_ino(a, ino2, "a1") == 0);
	CHECK(a->ops->sync(a) == 0);
	CHECK(kv_redis_open(url, &b) == 0);
	if (failures) {
		a->ops->close(a);
		return;
	}
	CHECK(kv_redis_set_fence(b, 2) == 0); /* partitions 0 and 3 */
	CHECK(put_in_step(a, "k", "a2") == 0);
	CHECK(put_ino(a, ino, "a2") == 0 && put_ino(a, ino2, NULL) == 0);
	/* a partition the late group is the first to write: b could not
	 * know to raise its fence, and it is refused all the same */
	CHECK(put_ino(a, ino4, "a2") == 0);
	CHECK(a->ops->sync(a) == -ENOLCK);
	CHECK(holds(b, KV_META, "k", "a1") && holds_ino(b, ino, "a1") &&
	      holds_ino(b, ino2, "a1") && holds_ino(b, ino4, NULL));
	CHECK(put_ino(b, ino, "b2") == 0 && b->ops->sync(b) == 0 && holds_ino(b, ino, "b2"));
	/* nor does it number anything (b does) */
	uint32_t id = 0;
	CHECK(a->ops->number(a, KV_TAG_IDS, "t", 1, "next_t", &id) == -ENOLCK);
	CHECK(b->ops->number(b, KV_TAG_IDS, "t", 1, "next_t", &id) == 0 && id == 1);
	CHECK(kv_redis_set_fence(a, 1) == -ENOLCK);
	b->ops->close(b);
	a->ops->close(a);
	/* a third, with the earlier generation, is refused at once */
	CHECK(kv_redis_open(url, &a) == 0);
	if (!failures) {
		CHECK(kv_redis_set_fence(a, 1) == -ENOLCK);
		a->ops->close(a);
	}
	/* Each partition's own fence counts, on one server too: one raised
	 * past a writer's generation (a later holder of that partition alone)
	 * refuses a group writing that partition, whole, and no other. */
	CHECK(kv_redis_open(url, &a) == 0);
	if (failures)
		return;
	CHECK(kv_redis_set_fence(a, 3) == 0);
	CHECK(put_ino(a, ino, "a3") == 0 && a->ops->sync(a) == 0);
	redisContext *c = redisConnect("127.0.0.1", s->port);
	CHECK(c && !c->err);
	if (c && !c->err) {
		redisReply *r = redisCommand(c, "SET {nadb:fenced:p4}:fence 9");
		CHECK(r && r->type == REDIS_REPLY_STATUS);
		freeReplyObject(r);
	}
	CHECK(put_in_step(a, "k", "a4") == 0);
	CHECK(put_ino(a, ino, "a4") == 0 && put_ino(a, ino4, "a4") == 0);
	CHECK(a->ops->sync(a) == -ENOLCK);
	a->ops->close(a);
	CHECK(kv_redis_open(url, &a) == 0);
	if (!failures) {
		CHECK(holds(a, KV_META, "k", "a1")); /* refused whole */
		CHECK(holds_ino(a, ino, "a3") && holds_ino(a, ino4, NULL));
		CHECK(kv_redis_set_fence(a, 5) == 0);
		CHECK(put_ino(a, ino, "a5") == 0 && a->ops->sync(a) == 0 && holds_ino(a, ino, "a5"));
		CHECK(put_ino(a, ino4, "a5") == 0 && a->ops->sync(a) == -ENOLCK);
		a->ops->close(a);
	}
	if (c)
		redisFree(c);
}

/* A follower (backend.h: publish, follow, unfollow): counted by the writer
 * once it beats, told "anything" when it is first counted, then the keys
 * of the rows each sync writes in the tables asked for, and no more
 * counted once it unfollows, still open.  A follower of no store is
 * refused. */
static void check_followers(struct redis_server *s)
{
	char url[200];
	redis_server_url(s, "followed", url, sizeof(url));
	struct kv *w, *f;
	CHECK(kv_redis_open_follower(url, &f) == -ENOENT);
	CHECK(kv_redis_open(url, &w) == 0);
	if (failures)
		return;
	CHECK(kv_redis_open_follower(url, &f) == 0);
	if (failures) {
		w->ops->close(w);
		return;
	}
	struct heard h = {0};
	uint64_t n = 9;
	CHECK(w->ops->publish(w, 1u << KV_INODES | 1u << KV_DIRENTS, &n) == 0 && n == 0);
	/* the first wait subscribes (and beats): notices before it are lost */
	CHECK(f->ops->follow(f, 100, hear_row, &h) == -ESTALE);
	CHECK(w->ops->publish(w, 1u << KV_INODES | 1u << KV_DIRENTS, &n) == 0 && n == 1);
	uint8_t ino[8] = {0, 0, 0, 0, 0, 0, 0, 7}, dirent[12] = {0, 0, 0, 0, 0, 0, 0, 1};
	memcpy(dirent + 8, "name", 4);
	CHECK(w->ops->step_begin(w) == 0);
	CHECK(w->ops->put(w, KV_INODES, ino, 8, "i", 1) == 0);
	CHECK(w->ops->put(w, KV_DIRENTS, dirent, 12, "d", 1) == 0);
	CHECK(w->ops->put(w, KV_XATTRS, ino, 8, "x", 1) == 0); /* not asked for */
	CHECK(w->ops->step_end(w, 1) == 0);
	CHECK(w->ops->sync(w) == 0);
	int stale = 0;
	for (int i = 0; i < 50 && !h.dirents; i++) {
		int rc = f->ops->follow(f, 100, hear_row, &h);
		CHECK(rc == 0 || rc == -ESTALE);
		stale += rc == -ESTALE;
	}
	CHECK(stale >= 1); /* "anything may have changed": the new follower */
	CHECK(h.inodes == 1 && h.dirents == 1 && h.rows == 2);
	struct kv_val v;
	CHECK(f->ops->get(f, KV_DIRENTS, dirent, 12, &v) == 0 && v.len == 1);
	/* done following (still open: a daemon that took the store over
	 * keeps its follower's handle): counted out at once */
	f->ops->unfollow(f);
	CHECK(w->ops->publish(w, 1u << KV_INODES, &n) == 0 && n == 0);
	CHECK(f->ops->get(f, KV_DIRENTS, dirent, 12, &v) == 0 && v.len == 1);
	f->ops->close(f);
	CHECK(w->ops->publish(w, 1u << KV_INODES, &n) == 0 && n == 0);
	w->ops->close(w);
}

/* A follower's scan whose callback scans again after a notice said the
 * writer listed new partitions: the inner scan walks the list the outer
 * one read (reading it again would move it under the outer walk: freed
 * memory, which the sanitizer run catches), and the next scan sees the
 * new partitions. */
#define NESTED_NEW_PARTS 40
struct nested {
	struct kv *w, *f;
	int outer, inner, rc;
	bool done;
};

static int count_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	(*(int *)ctx)++;
	return 0;
}

static int nested_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	struct nested *n = ctx;
	n->outer++;
	if (n->done)
		return 0;
	n->done = true;
	uint64_t first;
	for (int i = 0; !n->rc && i < NESTED_NEW_PARTS; i++)
		if (!(n->rc = n->w->ops->claim_inos(n->w, 0, 1, &first)))
			n->rc = put_ino(n->w, first, "new");
	if (!n->rc)
		n->rc = n->w->ops->sync(n->w);
	struct heard h = {0};
	for (int i = 0; !n->rc && i < 50 && !h.inodes; i++) {
		int rc = n->f->ops->follow(n->f, 100, hear_row, &h);
		n->rc = rc == -ESTALE ? 0 : rc;
	}
	if (!n->rc && !h.inodes)
		n->rc = -ETIMEDOUT;
	if (!n->rc)
		n->rc = n->f->ops->scan(n->f, KV_INODES, NULL, 0, count_row, &n->inner);
	return n->rc;
}

static void check_nested_follower_scan(struct redis_server *s)
{
	char url[200];
	redis_server_url(s, "nested", url, sizeof(url));
	struct nested n = {0};
	CHECK(kv_redis_open(url, &n.w) == 0);
	if (failures)
		return;
	uint64_t first;
	for (int i = 0; i < 3; i++) {
		CHECK(n.w->ops->claim_inos(n.w, 0, 1, &first) == 0);
		CHECK(put_ino(n.w, first, "old") == 0);
	}
	CHECK(n.w->ops->sync(n.w) == 0);
	uint64_t followers;
	CHECK(kv_redis_open_follower(url, &n.f) == 0);
	if (failures) {
		n.w->ops->close(n.w);
		return;
	}
	struct heard h = {0};
	CHECK(n.f->ops->follow(n.f, 100, hear_row, &h) == -ESTALE); /* subscribed */
	CHECK(n.w->ops->publish(n.w, 1u << KV_INODES, &followers) == 0 && followers == 1);
	CHECK(n.f->ops->scan(n.f, KV_INODES, NULL, 0, nested_row, &n) == 0 && n.rc == 0);
	CHECK(n.outer == 3 && n.inner == 3);
	int all = 0;
	CHECK(n.f->ops->scan(n.f, KV_INODES, NULL, 0, count_row, &all) == 0);
	CHECK(all == 3 + NESTED_NEW_PARTS);
	n.f->ops->close(n.f);
	n.w->ops->close(n.w);
}

/* Each chunk record at count 0 is noted to be freed, and each note names
 * one: check says so of a record whose note was lost (it would never be
 * freed) and of notes naming a counted record or none; repair drops the
 * latter; a record written again at 0 is noted, and then freed. */
static int told_freed(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)val;
	(void)vlen;
	*(int *)ctx += klen == 2;
	return 0;
}

/* COMMAND's integer reply, or -1. */
static long long redis_int(redisContext *c, const char *command)
{
	redisReply *r = redisCommand(c, command);
	long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	if (r)
		freeReplyObject(r);
	return n;
}

static void check_zeros_checked(struct redis_server *s)
{
	char url[200];
	redis_server_url(s, "zeroed", url, sizeof(url));
	struct kv *kv;
	CHECK(kv_redis_open(url, &kv) == 0);
	if (failures)
		return;
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->put(kv, KV_CHUNKS, "z1", 2, "\0one", 4) == 0);
	CHECK(kv->ops->put(kv, KV_CHUNKS, "z2", 2, "\1two", 4) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	int told = 0;
	uint64_t problems = 9, mended = 9;
	CHECK(kv->ops->check(kv, false, note_problem, &told, &problems, &mended) == 0 && problems == 0);
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
	CHECK(c && !c->err);
	if (!c || c->err)
		return;
	/* z1's note lost; notes of a counted record and of none */
	CHECK(redis_int(c, "ZREM {nadb:zeroed:p0}:t:chunks:zeros z1") == 1);
	CHECK(redis_int(c, "ZADD {nadb:zeroed:p0}:t:chunks:zeros 1 z2 2 z9") == 2);
	told = 0;
	CHECK(kv->ops->check(kv, false, note_problem, &told, &problems, &mended) == 0);
	CHECK(problems == 3 && told == 3);
	int freed = 0; /* z1 is never freed; the others' notes go */
	CHECK(kv->ops->free_zeros(kv, KV_CHUNKS, 0, told_freed, &freed) == 0 && freed == 0);
	CHECK(redis_int(c, "ZCARD {nadb:zeroed:p0}:t:chunks:zeros") == 0);
	CHECK(redis_int(c, "ZADD {nadb:zeroed:p0}:t:chunks:zeros 2 z9") == 1);
	redisFree(c);
	/* repair drops the stale note, but notes nothing: the caller checks
	 * z1's count, and writes it again at 0, which notes it */
	CHECK(kv->ops->check(kv, true, note_problem, &told, &problems, &mended) == 0 &&
	      problems == 2 && mended == 1);
	CHECK(kv->ops->check(kv, false, note_problem, &told, &problems, &mended) == 0 && problems == 1);
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->put(kv, KV_CHUNKS, "z1", 2, "\0one", 4) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	CHECK(kv->ops->check(kv, false, note_problem, &told, &problems, &mended) == 0 && problems == 0);
	CHECK(kv->ops->free_zeros(kv, KV_CHUNKS, 0, told_freed, &freed) == 0 && freed == 1);
	struct kv_val v;
	CHECK(kv->ops->get(kv, KV_CHUNKS, "z1", 2, &v) == -ENOENT);
	CHECK(kv->ops->get(kv, KV_CHUNKS, "z2", 2, &v) == 0 && v.len == 4);
	kv->ops->close(kv);
}

int main(void)
{
	char dir[32], place[300];
	make_store_dir(dir, place);
	check_urls();
	printf("%s urls\n", failures ? "FAILED" : "ok");
	int before = failures;
	check_passwords(dir);
	printf("%s passwords\n", failures == before ? "ok" : "FAILED");
	before = failures;
	check_unreachable(dir);
	printf("%s unreachable\n", failures == before ? "ok" : "FAILED");
	before = failures;
	check_restarts(dir);
	printf("%s restarts\n", failures == before ? "ok" : "FAILED");
	before = failures;
	struct redis_server s;
	char sdir[400];
	snprintf(sdir, sizeof(sdir), "%s/shared", dir);
	if (redis_server_start(&s, sdir, NULL) == 0) {
		check_foreign(&s);
		check_lock(&s);
		check_big_scans(&s);
		check_partitions_set(&s);
		check_empty_prefixes(&s);
		check_followers(&s);
		check_nested_follower_scan(&s);
		check_fences(&s);
		check_zeros_checked(&s);
		redis_server_stop(&s);
	} else {
		failures++;
	}
	printf("%s foreign names, lock, big scans, partitions, empty prefixes, followers, fences, "
	       "zeros\n",
	       failures == before ? "ok" : "FAILED");
	remove_dir(dir);
	return failures ? 1 : 0;
}
