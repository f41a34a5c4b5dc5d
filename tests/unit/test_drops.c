/* test_drops.c -- references dropped in a namespace's partition (chunk.h)
 * on a store whose namespaces have partitions of their own (Redis): one
 * value shared by two namespaces, dropped by one and then the other;
 * an overwrite; a drop left unsettled, as a crash between the two steps
 * would leave it on a backend that commits partitions apart, counted by
 * fsck and settled by the next open; batches, whose values are stored
 * before them; and the same work on a directory store, whose one
 * partition drops at once.  Runs against a private
 * redis-server it starts and stops.
 */
#include "unit.h"
#include "fsck.h"
#include "redis_server.h"
#include "stats.h"
#include "store.h"
#include "store_int.h" /* to look at the chunk table and leave a drop unsettled */

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define VALUE_LEN (200u << 10) /* bytes: several 64 KiB chunks */

static int count_chunk(void *ctx, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs,
		       const struct chunk_loc *loc)
{
	(void)hash;
	(void)loc;
	uint64_t *n = ctx;
	n[0]++;
	n[1] += refs;
	return 0;
}

/* Where partitions commit apart (a cluster), drops settle after a sync
 * (store.c), and where a chunk at zero waits to be freed (chunk.c,
 * "Freeing"), it is freed after one: sync first, so that the counts
 * below are settled ones, but for drops a test keeps unsettled
 * (st->settling). */
static void settle(struct nadb_store *st)
{
	if (st->kv->apart || st->kv->ops->free_zeros)
		CHECK(nadb_store_sync(st) == 0);
}

/* Chunk records, as they are now (at zero too). */
static uint64_t records(struct nadb_store *st)
{
	uint64_t n[2] = {0, 0};
	CHECK(chunk_scan(&st->chunks, NULL, count_chunk, n) == 0);
	return n[0];
}

/* Chunks stored, and the references they count. */
static uint64_t chunks(struct nadb_store *st, uint64_t *refs)
{
	settle(st);
	uint64_t n[2] = {0, 0};
	CHECK(chunk_scan(&st->chunks, NULL, count_chunk, n) == 0);
	if (refs)
		*refs = n[1];
	return n[0];
}

static int count_drop(void *ctx, uint64_t part, const uint8_t hash[CHUNK_HASH_LEN])
{
	(void)hash;
	CHECK(kv_partition(part) != 0 && part % (1ull << KV_PART_SHIFT) == 0);
	(*(uint64_t *)ctx)++;
	return 0;
}

/* References dropped and not settled. */
static uint64_t drops(struct nadb_store *st)
{
	settle(st);
	uint64_t n = 0;
	CHECK(chunk_drops(&st->chunks, count_drop, &n) == 0);
	return n;
}

/* Batches store their values in a step before theirs: an incr that
 * follows another operation on its key still comes out right, and a
 * batch that fails gives back what it stored. */
static void check_batches(struct nadb_store *st)
{
	struct nadb_op ops[3] = {
		{.kind = NADB_OP_SET, .path = "/app/a/n", .value = "5", .len = 1},
		{.kind = NADB_OP_INCR, .path = "/app/a/n", .by = 2},
		{.kind = NADB_OP_INCR, .path = "app/a/n", .by = 3},
	};
	size_t failed;
	CHECK(nadb_apply(st, ops, 3, &root, &failed) == 0);
	CHECK(ops[1].number == 7 && ops[2].number == 10);
	check_path_value(st, "/app/a/n", "10\n", 3);
	struct nadb_op twice[2] = {
		{.kind = NADB_OP_INCR, .path = "/app/b/m", .by = 1},
		{.kind = NADB_OP_INCR, .path = "/app/b/m", .by = 1},
	};
	CHECK(nadb_apply(st, twice, 2, &root, &failed) == 0 && twice[1].number == 2);
	/* ... also when it names the key by another of its names */
	struct nadb_attr at, dir;
	CHECK(nadb_resolve(st, "/app/a/n", &at) == 0 && nadb_resolve(st, "/app/a", &dir) == 0);
	CHECK(nadb_link(st, at.ino, dir.ino, "l", &at) == 0);
	struct nadb_op linked[2] = {
		{.kind = NADB_OP_SET, .path = "/app/a/n", .value = "5", .len = 1},
		{.kind = NADB_OP_INCR, .path = "/app/a/l", .by = 1},
	};
	CHECK(nadb_apply(st, linked, 2, &root, &failed) == 0 && linked[1].number == 6);
	check_path_value(st, "/app/a/n", "6\n", 2);
	uint64_t refs, before_refs, before = chunks(st, &before_refs);
	struct nadb_op cond[2] = {
		{.kind = NADB_OP_SET, .path = "/app/a/x", .value = "new value", .len = 9},
		{.kind = NADB_OP_SET, .path = "/app/a/n", .value = "1", .len = 1,
		 .cond = NADB_IF_ABSENT},
	};
	CHECK(nadb_apply(st, cond, 2, &root, &failed) == -ECANCELED && failed == 1);
	CHECK(chunks(st, &refs) == before && refs == before_refs);
	CHECK(drops(st) == 0);
	check_clean(st);
}

/* The store's count of chunks, as .stats says it. */
static uint64_t stats_chunks(struct nadb_store *st)
{
	struct nadb_stats s;
	CHECK(nadb_stats(st, NADB_ROOT_INO, &s) == 0);
	return s.chunks;
}

/* What chunk.c's records weigh, summed here: the records counted above
 * 0, their frames' bytes and raw bytes, and per segment its frames'
 * bytes (its live bytes). */
struct weighed {
	struct kv_tally t;
	uint64_t live[64];
};

static int weigh_chunk(void *ctx, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs,
		       const struct chunk_loc *loc)
{
	(void)hash;
	struct weighed *w = ctx;
	CHECK(loc->blob.seg < 64);
	if (!refs || loc->blob.seg >= 64)
		return 0;
	w->t.rows++, w->t.size += loc->blob.len, w->t.raw += loc->raw_len;
	w->live[loc->blob.seg] += loc->blob.len;
	return 0;
}

static int note_live(void *ctx, uint32_t seg, uint64_t size)
{
	struct weighed *w = ctx;
	CHECK(seg < 64 && size > 0);
	if (seg < 64)
		w->live[seg] = size;
	return 0;
}

/* Where the backend keeps the chunks' tally (Redis: its scripts weigh the
 * records they write, kv_redis.c), it says what the records weigh as
 * chunk.c reads them, and what the store's statistics and segments'
 * live bytes say, once synced. */
static void check_tally(struct nadb_store *st)
{
	if (!st->kv->ops->tally)
		return;
	CHECK(nadb_store_sync(st) == 0);
	struct weighed here = {0}, kept = {0};
	CHECK(chunk_scan(&st->chunks, NULL, weigh_chunk, &here) == 0);
	CHECK(st->kv->ops->tally(st->kv, KV_CHUNKS, &kept.t, note_live, &kept) == 0);
	CHECK(here.t.rows == kept.t.rows && here.t.size == kept.t.size && here.t.raw == kept.t.raw);
	CHECK(stats_chunks(st) == kept.t.rows);
	for (uint32_t seg = 0; seg < 64; seg++) {
		CHECK(here.live[seg] == kept.live[seg]);
		CHECK(chunk_segment_live(&st->chunks, seg) == kept.live[seg]);
	}
}

/* A chunk no key holds any more (chunk.c, "Freeing"): out of the
 * statistics once its drop is settled, its record gone and its frame
 * punched by the next sync.  Wanted again before that (its record at 0,
 * where it waits to be freed), it is stored anew: read back whole, and
 * counted once. */
static void check_freeing(struct nadb_store *st, uint64_t ns, const char *path)
{
	unsigned char v[5000];
	for (size_t i = 0; i < sizeof(v); i++)
		v[i] = (unsigned char)(rand() >> 7);
	uint64_t n0 = chunks(st, NULL), s0 = stats_chunks(st);
	put_value(st, ns, "f", v, sizeof(v));
	CHECK(nadb_store_sync(st) == 0);
	CHECK(chunks(st, NULL) == n0 + 1 && stats_chunks(st) == s0 + 1);
	uint64_t punched = atomic_load(&st->punched);
	CHECK(nadb_unlink(st, ns, "f") == 0);
	if (!st->kv->apart) /* settled at once: out of the statistics */
		CHECK(stats_chunks(st) == s0);
	CHECK(nadb_store_sync(st) == 0);
	CHECK(chunks(st, NULL) == n0 && stats_chunks(st) == s0);
	CHECK(atomic_load(&st->punched) > punched);
	check_clean(st);
	check_tally(st);

	put_value(st, ns, "f", v, sizeof(v));
	CHECK(nadb_store_sync(st) == 0);
	CHECK(nadb_unlink(st, ns, "f") == 0);
	put_value(st, ns, "g", v, sizeof(v)); /* before the sync that frees */
	CHECK(stats_chunks(st) == s0 + 1);
	CHECK(nadb_store_sync(st) == 0);
	CHECK(chunks(st, NULL) == n0 + 1 && stats_chunks(st) == s0 + 1);
	check_path_value(st, path, v, sizeof(v));
	check_clean(st);
	check_tally(st);
	CHECK(nadb_unlink(st, ns, "g") == 0);
	CHECK(nadb_store_sync(st) == 0);
	CHECK(chunks(st, NULL) == n0 && stats_chunks(st) == s0);
	check_clean(st);
	check_tally(st);

	/* more at once than one pass frees (FREE_ZEROS_MAX) */
	enum { MANY = FREE_ZEROS_MAX + 44 };
	char name[16];
	for (int i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "m%d", i);
		snprintf((char *)v, sizeof(v), "value %d", i);
		put_value(st, ns, name, v, 16);
	}
	CHECK(nadb_store_sync(st) == 0);
	CHECK(chunks(st, NULL) == n0 + MANY);
	for (int i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "m%d", i);
		CHECK(nadb_unlink(st, ns, name) == 0);
	}
	CHECK(nadb_store_sync(st) == 0);
	CHECK(records(st) == n0); /* all in one sync */
	CHECK(chunks(st, NULL) == n0 && stats_chunks(st) == s0);
	check_clean(st);
}

/* Close and open again: every drop settled, no chunk left, fsck clean. */
static bool reopen_settled(const char *store, const struct nadb_options *o,
			   struct nadb_store **st)
{
	uint64_t refs;
	CHECK(nadb_store_close(*st) == 0);
	CHECK(nadb_store_open(store, o, st) == 0);
	if (failures)
		return false;
	CHECK(drops(*st) == 0);
	CHECK(chunks(*st, &refs) == 0 && refs == 0);
	check_clean(*st);
	return true;
}

static void check_store(const char *store, bool partitioned)
{
	struct nadb_options o;
	nadb_options_default(&o);
	o.chunk_kb = 64;
	struct nadb_store *st;
	CHECK(nadb_store_open(store, &o, &st) == 0);
	if (failures)
		return;
	uint64_t db = make(st, NADB_ROOT_INO, "app", S_IFDIR | 0755);
	uint64_t a = make(st, db, "a", S_IFDIR | 0755), b = make(st, db, "b", S_IFDIR | 0755);
	CHECK(partitioned == (kv_partition(a) != 0 && kv_partition(b) != kv_partition(a)));
	unsigned char *v = malloc(VALUE_LEN), *w = malloc(VALUE_LEN);
	for (size_t i = 0; i < VALUE_LEN; i++) {
		v[i] = (unsigned char)(rand() >> 7);
		w[i] = (unsigned char)(rand() >> 7);
	}
	uint64_t refs, n;

	/* One value under two namespaces: stored once, counted twice. */
	put_value(st, a, "k", v, VALUE_LEN);
	put_value(st, b, "k", v, VALUE_LEN);
	n = chunks(st, &refs);
	CHECK(n == 4 && refs == 8);
	/* Each namespace lets go of it in its own partition; the drops are
	 * settled at once, and the chunks go with the last one. */
	CHECK(nadb_unlink(st, a, "k") == 0);
	CHECK(drops(st) == 0);
	CHECK(chunks(st, &refs) == 4 && refs == 4);
	check_path_value(st, "/app/b/k", v, VALUE_LEN);
	check_clean(st);
	check_tally(st);

	/* An overwrite drops the old value's chunks. */
	put_value(st, b, "k", w, VALUE_LEN);
	CHECK(drops(st) == 0);
	CHECK(chunks(st, &refs) == 4 && refs == 4);
	check_path_value(st, "/app/b/k", w, VALUE_LEN);
	check_clean(st);
	check_tally(st);

	/* A drop left unsettled (a crash between the two steps where they
	 * are committed apart): the chunks stay, fsck counts the drops as
	 * the references the chunks still hold, and the next open settles
	 * them. */
	st->settling = true; /* keeps step_end (and, apart, sync) from settling */
	CHECK(nadb_unlink(st, b, "k") == 0);
	CHECK(drops(st) == (partitioned ? 4 : 0));
	CHECK(chunks(st, &refs) == (partitioned ? 4 : 0));
	if (st->kv->apart) { /* as a crash would, forget them: the open settles */
		struct chunk_drop *d;
		size_t nd;
		CHECK(chunk_due_drops(&st->chunks, &d, &nd) == 0 && nd == 4);
		free(d);
	}
	st->settling = false;
	check_clean(st);
	check_tally(st);
	if (!reopen_settled(store, &o, &st))
		return;

	/* A drop row naming a chunk that is not stored (damage) neither keeps
	 * the store from opening nor the other drops from being settled. */
	put_value(st, b, "k", v, VALUE_LEN);
	if (partitioned) {
		uint8_t key[8 + CHUNK_HASH_LEN + 8] = {0};
		ino_key(key, (uint64_t)kv_partition(a) << KV_PART_SHIFT);
		memset(key + 8, 0xab, CHUNK_HASH_LEN);
		ino_key(key + 8 + CHUNK_HASH_LEN, 1u << 30); /* session 0: settled at open */
		CHECK(step_begin(st) == 0);
		CHECK(st->kv->ops->put(st->kv, KV_CHUNK_DROPS, key, sizeof(key), "", 0) == 0);
		CHECK(step_end(st, 0) == 0);
		st->settling = true;
		CHECK(nadb_unlink(st, b, "k") == 0);
		CHECK(drops(st) == 5);
		st->settling = false;
	} else {
		CHECK(nadb_unlink(st, b, "k") == 0);
	}
	if (!reopen_settled(store, &o, &st))
		return;

	/* The same value written twice into one namespace and once more
	 * elsewhere, then everything removed. */
	put_value(st, a, "x", v, VALUE_LEN);
	put_value(st, a, "y", v, VALUE_LEN);
	put_value(st, b, "z", v, VALUE_LEN);
	CHECK(chunks(st, &refs) == 4 && refs == 12);
	CHECK(nadb_unlink(st, a, "x") == 0 && nadb_unlink(st, b, "z") == 0);
	CHECK(chunks(st, &refs) == 4 && refs == 4);
	CHECK(nadb_unlink(st, a, "y") == 0);
	CHECK(chunks(st, NULL) == 0 && drops(st) == 0);
	check_clean(st);
	check_tally(st);
	check_batches(st);
	check_freeing(st, a, "/app/a/g");
	if (st->kv->ops->free_zeros && !st->kv->apart) {
		/* A chunk a writer left at zero (it stopped before the pass
		 * that frees it) is freed by the next writer's first sync,
		 * which has nothing else to commit. */
		uint64_t n0 = records(st);
		put_value(st, a, "left", w, 3000);
		CHECK(nadb_store_sync(st) == 0);
		CHECK(nadb_unlink(st, a, "left") == 0);
		st->chunks.zeros = false; /* no pass after this sync */
		CHECK(nadb_store_sync(st) == 0);
		CHECK(records(st) == n0 + 1);
		CHECK(nadb_store_close(st) == 0);
		CHECK(nadb_store_open(store, &o, &st) == 0);
		if (failures)
			return;
		CHECK(records(st) == n0);
		check_clean(st);
		check_tally(st);
	check_tally(st);
		/* ...as does any sync, with nothing else to commit */
		put_value(st, a, "left", w, 3000);
		CHECK(nadb_store_sync(st) == 0);
		CHECK(nadb_unlink(st, a, "left") == 0);
		st->chunks.zeros = false;
		CHECK(nadb_store_sync(st) == 0);
		CHECK(records(st) == n0 + 1 && !st->kv->ops->unsynced(st->kv));
		st->chunks.zeros = true; /* as the open of a writer sets it */
		CHECK(nadb_store_sync(st) == 0);
		CHECK(records(st) == n0);
		check_clean(st);
		check_tally(st);
	check_tally(st);
	}
	CHECK(nadb_store_close(st) == 0);
	free(v);
	free(w);
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	check_store(store, false);
	printf("%s a directory store\n", failures ? "FAILED" : "ok");
	int before = failures;
	struct redis_server s;
	char sdir[280], url[200];
	snprintf(sdir, sizeof(sdir), "%s/redis", dir);
	if (redis_server_start(&s, sdir, NULL) == 0) {
		redis_server_url(&s, "drops", url, sizeof(url));
		check_store(url, true);
		redis_server_stop(&s);
	} else {
		failures++;
	}
	printf("%s a Redis store\n", failures == before ? "ok" : "FAILED");
	/* on a cluster each partition commits apart: drops settle after syncs */
	before = failures;
	struct redis_server nodes[3];
	snprintf(sdir, sizeof(sdir), "%s/cluster", dir);
	if (redis_cluster_start(nodes, 3, sdir) == 0) {
		redis_server_url(&nodes[0], "drops", url, sizeof(url));
		check_store(url, true);
	} else {
		failures++;
	}
	redis_cluster_stop(nodes, 3);
	printf("%s a Redis Cluster store\n", failures == before ? "ok" : "FAILED");
	remove_dir(dir);
	return failures ? 1 : 0;
}
