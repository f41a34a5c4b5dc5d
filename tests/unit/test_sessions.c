/* test_sessions.c -- the rows a writer leaves for others to settle
 * (store.c, "sessions"): pending chunks, chunk drops and open orphans,
 * each tagged with the session that wrote it.  A store on a private
 * redis-server is written by one daemon's store handle while the rows of
 * two other sessions sit in it: one alive (a second kv handle, counted
 * in), one gone.  The writer's open settles the dead one's rows and keeps
 * the live one's; once the live one counts itself out, the writer's
 * flusher hears of it at its next beat and settles its rows too.  The
 * chunk counts come back to what the values hold, and fsck is clean all
 * along.  On a cluster too (partitions commit apart).
 */
#include "unit.h"
#include "fsck.h"
#include "redis_server.h"
#include "store.h"
#include "store_int.h" /* to write rows as other sessions would */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define VALUE_LEN (200u << 10) /* bytes: several 64 KiB chunks */
#define SETTLE_WAIT_MS 5000    /* ms: a beat is every second: room for a few */

/* The first chunk scan_chunks meets, and the references all chunks hold. */
struct chunk_seen {
	uint8_t hash[CHUNK_HASH_LEN];
	uint64_t n, refs;
};

static int see_chunk(void *ctx, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs,
		     const struct chunk_loc *loc)
{
	(void)loc;
	struct chunk_seen *s = ctx;
	if (!s->n++)
		memcpy(s->hash, hash, CHUNK_HASH_LEN);
	s->refs += refs;
	return 0;
}

static struct chunk_seen chunks(struct nadb_store *st)
{
	struct chunk_seen s = {0};
	/* settled drops (a cluster's, after a sync) and chunks at zero freed */
	if (st->kv->apart || st->kv->ops->free_zeros)
		CHECK(nadb_store_sync(st) == 0);
	pthread_mutex_lock(&st->meta_lock);
	CHECK(chunk_scan(&st->chunks, NULL, see_chunk, &s) == 0);
	pthread_mutex_unlock(&st->meta_lock);
	return s;
}

/* How many rows of T name SESSION (each table says where, below). */
struct tally {
	enum kv_table t;
	uint32_t session;
	uint64_t n;
};

static int count_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct tally *ta = ctx;
	uint32_t s = 0;
	if (ta->t == KV_PENDING && klen == 16)
		s = (uint32_t)(kv_key_ino((const uint8_t *)key + 8) >> 32);
	else if (ta->t == KV_CHUNK_DROPS && klen == 8 + CHUNK_HASH_LEN + 8)
		s = (uint32_t)(kv_key_ino((const uint8_t *)key + 8 + CHUNK_HASH_LEN) >> 32);
	else if (ta->t == KV_ORPHANS && vlen == 4) {
		uint32_t be;
		memcpy(&be, val, sizeof(be));
		s = be32toh(be);
	}
	ta->n += s == ta->session;
	return 0;
}

static uint64_t rows_of(struct nadb_store *st, enum kv_table t, uint32_t session)
{
	struct tally ta = {t, session, 0};
	pthread_mutex_lock(&st->meta_lock);
	CHECK(st->kv->ops->scan(st->kv, t, NULL, 0, count_row, &ta) == 0);
	pthread_mutex_unlock(&st->meta_lock);
	return ta.n;
}

static uint64_t all_rows_of(struct nadb_store *st, uint32_t session)
{
	return rows_of(st, KV_PENDING, session) + rows_of(st, KV_CHUNK_DROPS, session) +
	       rows_of(st, KV_ORPHANS, session);
}

/* Leave in the store, as session SESSION would: a pending reference of
 * inode INO (NS's key) to HASH, a dropped one in NS's partition, each
 * with the reference it holds counted on the chunk; an orphan row of an
 * inode number nothing else uses. */
static void leave_rows(struct nadb_store *st, uint64_t ns, uint64_t ino,
		       const uint8_t hash[CHUNK_HASH_LEN], uint32_t session)
{
	uint8_t pkey[16], dkey[8 + CHUNK_HASH_LEN + 8], okey[8];
	ino_key(pkey, ino);
	ino_key(pkey + 8, (uint64_t)session << 32 | 7);
	ino_key(dkey, (uint64_t)kv_partition(ns) << KV_PART_SHIFT);
	memcpy(dkey + 8, hash, CHUNK_HASH_LEN);
	ino_key(dkey + 8 + CHUNK_HASH_LEN, (uint64_t)session << 32 | 3);
	ino_key(okey, ns + 1000 + session);
	uint32_t be = htobe32(session);
	pthread_mutex_lock(&st->meta_lock);
	CHECK(step_begin(st) == 0); /* partition 0: the two references */
	CHECK(step_end(st, chunk_ref(&st->chunks, hash, 2)) == 0);
	CHECK(step_begin(st) == 0); /* the key's partition: the rows */
	CHECK(st->kv->ops->put(st->kv, KV_PENDING, pkey, sizeof(pkey), hash,
			       CHUNK_HASH_LEN) == 0);
	CHECK(st->kv->ops->put(st->kv, KV_CHUNK_DROPS, dkey, sizeof(dkey), "", 0) == 0);
	CHECK(st->kv->ops->put(st->kv, KV_ORPHANS, okey, sizeof(okey), &be, sizeof(be)) == 0);
	CHECK(step_end(st, 0) == 0);
	pthread_mutex_unlock(&st->meta_lock);
	CHECK(nadb_store_sync(st) == 0);
}

static void check_store(const char *url)
{
	struct nadb_options o;
	nadb_options_default(&o);
	o.chunk_kb = 64;
	struct nadb_store *st;
	int start = failures;
	CHECK(nadb_store_open(url, &o, &st) == 0);
	if (failures > start)
		return;
	uint32_t mine = st->kv->session;
	CHECK(mine != 0);
	uint64_t db = make(st, NADB_ROOT_INO, "app", S_IFDIR | 0755);
	uint64_t ns = make(st, db, "a", S_IFDIR | 0755);
	unsigned char *v = malloc(VALUE_LEN);
	for (size_t i = 0; i < VALUE_LEN; i++)
		v[i] = (unsigned char)(rand() >> 7);
	uint64_t ino = put_value(st, ns, "k", v, VALUE_LEN);
	struct chunk_seen before = chunks(st);
	CHECK(before.n == 4 && before.refs == 4);

	/* Another writer's session, alive (counted in by its open), and
	 * one that has gone (counted out by its close). */
	struct kv *live, *gone;
	CHECK(kv_redis_open(url, &live) == 0 && kv_redis_open(url, &gone) == 0);
	if (failures > start)
		return;
	uint32_t alive = live->session, dead = gone->session;
	CHECK(alive && dead && alive != dead && alive != mine && dead != mine);
	gone->ops->close(gone);
	bool died;
	CHECK(live->ops->beat(live, &died) == 0); /* (nothing else beats it) */
	leave_rows(st, ns, ino, before.hash, alive);
	leave_rows(st, ns, ino, before.hash, dead);
	leave_rows(st, ns, ino, before.hash, 0); /* a store's from before sessions */
	CHECK(all_rows_of(st, alive) == 3 && all_rows_of(st, dead) == 3 &&
	      all_rows_of(st, 0) == 3);
	CHECK(chunks(st).refs == before.refs + 6);
	check_clean(st);

	/* Opened again: the rows of the sessions gone are settled, the live
	 * one's stay, with the references they hold. */
	CHECK(live->ops->beat(live, &died) == 0);
	CHECK(nadb_store_close(st) == 0);
	CHECK(nadb_store_open(url, &o, &st) == 0);
	if (failures > start)
		return;
	CHECK(nadb_store_start_flusher(st) == 0); /* which settles, as a daemon's */
	CHECK(st->kv->session != mine && st->kv->session != alive);
	CHECK(all_rows_of(st, dead) == 0 && all_rows_of(st, 0) == 0);
	CHECK(all_rows_of(st, alive) == 3);
	CHECK(chunks(st).refs == before.refs + 2);
	check_clean(st);

	/* A file of ours written and closed releases our pending rows of
	 * its key, never another session's. */
	CHECK(put_value(st, ns, "k", v, VALUE_LEN) == ino);
	CHECK(rows_of(st, KV_PENDING, alive) == 1);
	CHECK(chunks(st).refs == before.refs + 2);
	check_path_value(st, "/app/a/k", v, VALUE_LEN);

	/* Ours meanwhile: a value being written, its chunks stored as they
	 * filled, and a key unlinked while we hold it open. */
	uint64_t w = make(st, ns, "w", S_IFREG | 0644), held = put_value(st, ns, "held", v, 1000);
	struct nadb_file *fw, *fh;
	CHECK(nadb_file_open(st, w, NADB_OPEN_WRITE, &fw) == 0);
	CHECK(nadb_file_write(fw, v + 1, VALUE_LEN - 1, 0) == (ssize_t)VALUE_LEN - 1);
	CHECK(nadb_file_open(st, held, 0, &fh) == 0);
	CHECK(nadb_unlink(st, ns, "held") == 0);
	uint32_t now = st->kv->session;
	uint64_t ours = all_rows_of(st, now);
	CHECK(rows_of(st, KV_PENDING, now) >= 2 && rows_of(st, KV_ORPHANS, now) == 1);

	/* The live one counts itself out: the writer's next beat hears of
	 * it and settles its rows (none of ours), while the store stays open. */
	CHECK(live->ops->beat(live, &died) == 0);
	live->ops->close(live);
	long deadline = redis_test_now_ms() + SETTLE_WAIT_MS;
	while (all_rows_of(st, alive) && redis_test_now_ms() < deadline)
		usleep(50 * 1000);
	CHECK(all_rows_of(st, alive) == 0);
	CHECK(all_rows_of(st, now) == ours);
	char got[16];
	CHECK(nadb_file_read(fh, got, sizeof(got), 0) == (ssize_t)sizeof(got) &&
	      !memcmp(got, v, sizeof(got)));
	CHECK(nadb_file_close(fh) == 0 && nadb_file_close(fw) == 0);
	CHECK(nadb_store_sync(st) == 0); /* (a cluster settles drops after a sync) */
	CHECK(all_rows_of(st, now) == 0);
	CHECK(nadb_unlink(st, ns, "w") == 0);
	struct chunk_seen after = chunks(st);
	CHECK(after.n == before.n && after.refs == before.refs);
	check_path_value(st, "/app/a/k", v, VALUE_LEN);
	check_clean(st);
	CHECK(nadb_store_close(st) == 0);
	free(v);
}

int main(void)
{
	char dir[32];
	char store[300];
	make_store_dir(dir, store);
	struct redis_server s;
	char sdir[280], url[200];
	snprintf(sdir, sizeof(sdir), "%s/redis", dir);
	if (redis_server_start(&s, sdir, NULL) == 0) {
		redis_server_url(&s, "sessions", url, sizeof(url));
		check_store(url);
		redis_server_stop(&s);
	} else {
		failures++;
	}
	printf("%s a Redis store\n", failures ? "FAILED" : "ok");
	int before = failures;
	struct redis_server nodes[3];
	snprintf(sdir, sizeof(sdir), "%s/cluster", dir);
	if (redis_cluster_start(nodes, 3, sdir) == 0) {
		redis_server_url(&nodes[0], "sessions", url, sizeof(url));
		check_store(url);
	} else {
		failures++;
	}
	redis_cluster_stop(nodes, 3);
	printf("%s a Redis Cluster store\n", failures == before ? "ok" : "FAILED");
	remove_dir(dir);
	return failures ? 1 : 0;
}
