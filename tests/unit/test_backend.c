/* test_backend.c -- the contract every storage backend of backend.h keeps.
 *
 * The engine assumes these of a kv backend: gets see the step's own
 * writes; a step is kept whole or undone whole; scans walk one table in
 * byte order of the keys (a shorter key before its extensions) from any
 * start key, stop when told and pass an error on, and their callbacks may
 * write and scan; tables are apart; sync
 * makes every completed step durable and close loses what was not synced,
 * never part of a step.  And of a blob area: a frame reads back from any
 * offset in it; segments list with their sizes and the current one; roll,
 * remove and punch keep every other frame where it was; appended bytes
 * that were synced survive a reopen.
 *
 * Each backend is listed in BACKENDS with how to open it on a fresh place;
 * a second backend is added there and must pass the same checks.
 */
#include "backend.h"
#include "kv_check.h"
#include "redis.h"
#include "redis_server.h"
#include "unit.h"
#include "varint.h"

#include <endian.h>
#include <pthread.h>
#include <stdint.h>

struct backend {
	const char *name;
	int (*open_kv)(const char *place, struct kv **out);
	int (*open_blobs)(const char *place, struct blobs **out);
	/* Optional: set up before the checks (a server) and tear down after. */
	int (*start)(const char *place);
	void (*stop)(void);
};

static int open_lmdb(const char *place, struct kv **out)
{
	char dir[400];
	snprintf(dir, sizeof(dir), "%s/meta", place);
	mkdir(place, 0700);
	return kv_lmdb_open(dir, out);
}

static int open_packs(const char *place, struct blobs **out)
{
	char dir[400];
	snprintf(dir, sizeof(dir), "%s/packs", place);
	mkdir(place, 0700);
	return blobs_pack_open(dir, out);
}

/* The Redis backend runs against a private server with its files in
 * PLACE, started for the checks and stopped after them. */
static struct redis_server redis_srv;

static int start_redis(const char *place)
{
	return redis_server_start(&redis_srv, place, NULL);
}

static void stop_redis(void)
{
	redis_server_stop(&redis_srv);
}

static int open_redis_kv(const char *place, struct kv **out)
{
	char url[128];
	(void)place;
	redis_server_url(&redis_srv, "contract", url, sizeof(url));
	return kv_redis_open(url, out);
}

static int open_redis_blobs(const char *place, struct blobs **out)
{
	char url[128];
	(void)place;
	redis_server_url(&redis_srv, "contract", url, sizeof(url));
	return blobs_redis_open(url, out);
}

/* The Redis backend on a cluster of three primaries: each partition's
 * rows on the node of its slot, each sync a transaction per partition. */
#define CLUSTER_NODES 3
static struct redis_server cluster_node[CLUSTER_NODES];

static int start_cluster(const char *place)
{
	return redis_cluster_start(cluster_node, CLUSTER_NODES, place);
}

static void stop_cluster(void)
{
	redis_cluster_stop(cluster_node, CLUSTER_NODES);
}

static int open_cluster_kv(const char *place, struct kv **out)
{
	char url[128];
	(void)place;
	redis_server_url(&cluster_node[1], "contract", url, sizeof(url));
	int rc = kv_redis_open(url, out);
	CHECK(rc || (*out)->apart);
	return rc;
}

static int open_cluster_blobs(const char *place, struct blobs **out)
{
	char url[128];
	(void)place;
	redis_server_url(&cluster_node[2], "contract", url, sizeof(url));
	return blobs_redis_open(url, out);
}

static const struct backend BACKENDS[] = {
	{"lmdb + packs", open_lmdb, open_packs, NULL, NULL},
	{"redis", open_redis_kv, open_redis_blobs, start_redis, stop_redis},
	{"redis cluster", open_cluster_kv, open_cluster_blobs, start_cluster, stop_cluster},
};

/* ---- kv ------------------------------------------------------------------- */

static int in_step(struct kv *kv, int (*fn)(struct kv *kv, void *arg), void *arg,
		   bool keep)
{
	int rc = kv->ops->step_begin(kv);
	if (rc)
		return rc;
	int r = fn(kv, arg);
	rc = kv->ops->step_end(kv, keep && r == 0);
	return r ? r : rc;
}

static int put_ab(struct kv *kv, void *arg)
{
	(void)arg;
	int rc = put_s(kv, KV_META, "a", "1");
	if (!rc)
		rc = put_s(kv, KV_META, "b", "2");
	/* a step reads its own writes */
	if (!rc && !holds(kv, KV_META, "a", "1"))
		rc = -EIO;
	return rc;
}

static int change_then_undo(struct kv *kv, void *arg)
{
	(void)arg;
	int rc = put_s(kv, KV_META, "c", "3");
	if (!rc)
		rc = kv->ops->del(kv, KV_META, "a", 1);
	if (!rc)
		rc = put_s(kv, KV_META, "b", "changed");
	if (!rc && (!holds(kv, KV_META, "a", NULL) || !holds(kv, KV_META, "b", "changed")))
		rc = -EIO;
	return rc;
}

static void check_steps(struct kv *kv)
{
	CHECK(holds(kv, KV_META, "a", NULL));
	CHECK(in_step(kv, put_ab, NULL, true) == 0);
	CHECK(holds(kv, KV_META, "a", "1") && holds(kv, KV_META, "b", "2"));
	CHECK(kv->ops->unsynced(kv) > 0);
	CHECK(kv->ops->sync(kv) == 0);
	CHECK(kv->ops->unsynced(kv) == 0);
	CHECK(kv->ops->sync(kv) == 0); /* nothing to do is fine */
	/* undone whole: the put, the delete and the change */
	CHECK(in_step(kv, change_then_undo, NULL, false) == 0);
	CHECK(holds(kv, KV_META, "a", "1") && holds(kv, KV_META, "b", "2"));
	CHECK(holds(kv, KV_META, "c", NULL));
	/* deleting what is not there */
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->del(kv, KV_META, "nothing", 7) == -ENOENT);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	/* tables are apart; empty values and binary keys are values too */
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(put_s(kv, KV_XATTRS, "a", "other") == 0);
	CHECK(kv->ops->put(kv, KV_ORPHANS, "\0\0\x01", 3, "", 0) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(holds(kv, KV_META, "a", "1") && holds(kv, KV_XATTRS, "a", "other"));
	struct kv_val v;
	CHECK(kv->ops->get(kv, KV_ORPHANS, "\0\0\x01", 3, &v) == 0 && v.len == 0);
	CHECK(kv->ops->get(kv, KV_ORPHANS, "\0\0", 2, &v) == -ENOENT);
}

struct scan_log {
	char keys[64][16];
	size_t lens[64];
	int n, stop_after, fail_after;
};

static int log_key(void *ctx, const void *key, size_t klen, const void *val,
		   size_t vlen)
{
	struct scan_log *l = ctx;
	(void)val;
	(void)vlen;
	if (l->fail_after && l->n == l->fail_after)
		return -EXDEV;
	if (l->stop_after && l->n == l->stop_after)
		return 1;
	if (l->n == 64 || klen > 16)
		return -ERANGE;
	memcpy(l->keys[l->n], key, klen);
	l->lens[l->n++] = klen;
	return 0;
}

static bool logged(const struct scan_log *l, int i, const void *key, size_t klen)
{
	return i < l->n && l->lens[i] == klen && !memcmp(l->keys[i], key, klen);
}

static void check_scans(struct kv *kv)
{
	/* put in a scrambled order; byte order is: "", shorter first */
	static const char *const keys[] = {"b", "ab", "\xff", "a", "a\0", "abc", "\x01z"};
	static const size_t lens[] = {1, 2, 1, 1, 2, 3, 2};
	static const int order[] = {6, 3, 4, 1, 5, 0, 2}; /* indexes, sorted */
	CHECK(kv->ops->step_begin(kv) == 0);
	for (int i = 0; i < 7; i++)
		CHECK(kv->ops->put(kv, KV_LINKS, keys[i], lens[i], "v", 1) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);

	struct scan_log l = {0};
	CHECK(kv->ops->scan(kv, KV_LINKS, NULL, 0, log_key, &l) == 0);
	CHECK(l.n == 7);
	for (int i = 0; i < 7; i++)
		CHECK(logged(&l, i, keys[order[i]], lens[order[i]]));
	/* from a start key that is there, and one that is not */
	l = (struct scan_log){0};
	CHECK(kv->ops->scan(kv, KV_LINKS, "ab", 2, log_key, &l) == 0);
	CHECK(l.n == 4 && logged(&l, 0, "ab", 2) && logged(&l, 1, "abc", 3));
	l = (struct scan_log){0};
	CHECK(kv->ops->scan(kv, KV_LINKS, "aa", 2, log_key, &l) == 0);
	CHECK(l.n == 4 && logged(&l, 0, "ab", 2));
	l = (struct scan_log){0};
	CHECK(kv->ops->scan(kv, KV_LINKS, "\xff\xff", 2, log_key, &l) == 0 && l.n == 0);
	/* stop, and an error passed on */
	l = (struct scan_log){.stop_after = 2};
	CHECK(kv->ops->scan(kv, KV_LINKS, NULL, 0, log_key, &l) == 0 && l.n == 2);
	l = (struct scan_log){.fail_after = 3};
	CHECK(kv->ops->scan(kv, KV_LINKS, NULL, 0, log_key, &l) == -EXDEV);
	/* an empty table */
	l = (struct scan_log){0};
	CHECK(kv->ops->scan(kv, KV_TAG_EDGES, NULL, 0, log_key, &l) == 0 && l.n == 0);
	/* a step's own writes are scanned too, and an undone step's are gone */
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->put(kv, KV_LINKS, "aa", 2, "v", 1) == 0);
	CHECK(kv->ops->del(kv, KV_LINKS, "abc", 3) == 0);
	l = (struct scan_log){0};
	CHECK(kv->ops->scan(kv, KV_LINKS, "a", 1, log_key, &l) == 0);
	CHECK(l.n == 6 && logged(&l, 2, "aa", 2) && logged(&l, 3, "ab", 2) &&
	      logged(&l, 4, "b", 1));
	CHECK(kv->ops->step_end(kv, 0) == 0);
	l = (struct scan_log){0};
	CHECK(kv->ops->scan(kv, KV_LINKS, "a", 1, log_key, &l) == 0 && l.n == 6);
	CHECK(logged(&l, 2, "ab", 2) && logged(&l, 3, "abc", 3));
	CHECK(kv->ops->sync(kv) == 0);
}

/* A scan's callback that writes another table and scans again, as the
 * engine's do (counters kept in step with what a scan visits). */
struct writing_scan {
	struct kv *kv;
	int seen, failed;
};

static int count_rows(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	(*(int *)ctx)++;
	return 0;
}

static int write_while_scanning(void *ctx, const void *key, size_t klen, const void *val,
				size_t vlen)
{
	struct writing_scan *w = ctx;
	(void)val;
	(void)vlen;
	char counter[32];
	snprintf(counter, sizeof(counter), "seen%d", w->seen++);
	int inner = 0;
	if (w->kv->ops->put(w->kv, KV_COUNTERS, counter, strlen(counter), key, klen) ||
	    w->kv->ops->scan(w->kv, KV_COUNTERS, NULL, 0, count_rows, &inner) ||
	    inner != w->seen)
		w->failed++;
	return 0;
}

static void check_scan_that_writes(struct kv *kv)
{
	int rows = 0;
	CHECK(kv->ops->scan(kv, KV_LINKS, NULL, 0, count_rows, &rows) == 0 && rows > 0);
	struct writing_scan w = {.kv = kv};
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->scan(kv, KV_LINKS, NULL, 0, write_while_scanning, &w) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(w.seen == rows && w.failed == 0);
	CHECK(kv->ops->sync(kv) == 0);
}

static void check_big_value(struct kv *kv)
{
	size_t n = 1u << 20;
	uint8_t *big = malloc(n);
	CHECK(big != NULL);
	if (!big)
		return;
	for (size_t i = 0; i < n; i++)
		big[i] = (uint8_t)(i * 2654435761u >> 24);
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->put(kv, KV_INODES, "big", 3, big, n) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	struct kv_val v;
	CHECK(kv->ops->get(kv, KV_INODES, "big", 3, &v) == 0 && v.len == n &&
	      !memcmp(v.data, big, n));
	free(big);
	CHECK(kv->ops->sync(kv) == 0);
}

/* ---- every table: order, empty values, deletes, reopen ---------------------- */

/* Rows of a reference table, kept sorted by insertion: keys up to 16 bytes. */
enum { REF_ROWS = 400 };
struct ref_row {
	uint8_t key[16], val[8];
	uint8_t klen, vlen;
	bool live;
};

static int compare_ref(const void *a, const void *b)
{
	const struct ref_row *x = a, *y = b;
	size_t n = x->klen < y->klen ? x->klen : y->klen;
	int c = memcmp(x->key, y->key, n);
	return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Keys that cross where a backend may split a table (byte boundaries of
 * 0x7f/0x80, 0xf0 and 0xfe/0xff in the first, second and eighth byte, prefixes of
 * each other; LMDB takes no empty key), in no order, no two alike. */
static size_t make_ref_rows(struct ref_row *rows, uint64_t seed)
{
	static const uint8_t edges[] = {0x00, 0x01, 0x0f, 0x10, 0x7f, 0x80, 0xef, 0xf0, 0xfe, 0xff};
	size_t n = 0;
	uint64_t x = seed | 1;
	while (n < REF_ROWS) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		struct ref_row r = {.klen = (uint8_t)(1 + x % 16), .live = true};
		for (int i = 0; i < r.klen; i++)
			r.key[i] = edges[(x >> (4 + 3 * (i % 18))) % sizeof(edges)];
		r.vlen = (uint8_t)((x >> 60) % 3 == 0 ? 0 : (x >> 56) % 8 + 1);
		memset(r.val, (int)(x >> 40), r.vlen);
		bool dup = false;
		for (size_t i = 0; i < n && !dup; i++)
			dup = !compare_ref(&rows[i], &r);
		if (!dup)
			rows[n++] = r;
	}
	return n;
}

struct ref_scan {
	const struct ref_row *rows;
	size_t n, at; /* expected rows, and the next one expected */
	int bad;
};

/* The scan must give the live rows from AT on, in order, values and all. */
static int expect_ref(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct ref_scan *s = ctx;
	while (s->at < s->n && !s->rows[s->at].live)
		s->at++;
	if (s->at == s->n) {
		s->bad++;
		return 1;
	}
	const struct ref_row *r = &s->rows[s->at++];
	if (klen != r->klen || memcmp(key, r->key, klen) || vlen != r->vlen ||
	    memcmp(val, r->val, vlen))
		s->bad++;
	return 0;
}

/* Scans of T from every row's key (and from nothing) give what REF says. */
static bool scans_match(struct kv *kv, enum kv_table t, const struct ref_row *rows,
			size_t n)
{
	for (size_t from = 0; from <= n; from++) {
		struct ref_scan s = {rows, n, from < n ? from : 0, 0};
		const void *start = from < n ? rows[from].key : NULL;
		size_t slen = from < n ? rows[from].klen : 0;
		if (kv->ops->scan(kv, t, start, slen, expect_ref, &s) || s.bad)
			return false;
		while (s.at < n && !rows[s.at].live)
			s.at++;
		if (s.at != n)
			return false;
		if (from < n && from % 37) /* every key's scan is slow on a server */
			from += 7;
	}
	for (size_t i = 0; i < n; i++) {
		struct kv_val v;
		int rc = kv->ops->get(kv, t, rows[i].key, rows[i].klen, &v);
		if (rows[i].live ? rc || v.len != rows[i].vlen ||
					   memcmp(v.data, rows[i].val, v.len)
				 : rc != -ENOENT)
			return false;
	}
	return true;
}

/* Every table keeps any key and any value, empty ones too, in byte order,
 * across deletes that empty whatever ranges a backend groups rows in, and
 * a reopen.  Runs first, on empty tables, and leaves them empty. */
static void check_every_table(const struct backend *b, const char *place)
{
	static struct ref_row rows[REF_ROWS];
	struct kv *kv;
	CHECK(b->open_kv(place, &kv) == 0);
	for (int t = 0; t < KV_NTABLES; t++) {
		size_t n = make_ref_rows(rows, 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1));
		CHECK(kv->ops->step_begin(kv) == 0);
		for (size_t i = 0; i < n; i++)
			CHECK(kv->ops->put(kv, t, rows[i].key, rows[i].klen, rows[i].val,
					   rows[i].vlen) == 0);
		CHECK(kv->ops->step_end(kv, 1) == 0);
		qsort(rows, n, sizeof(rows[0]), compare_ref);
		CHECK(scans_match(kv, t, rows, n)); /* unsynced */
		CHECK(kv->ops->sync(kv) == 0);
		kv->ops->close(kv);
		CHECK(b->open_kv(place, &kv) == 0);
		CHECK(scans_match(kv, t, rows, n)); /* synced */
		/* delete runs of neighbours (whole groups of them) and change
		 * values between empty and not */
		CHECK(kv->ops->step_begin(kv) == 0);
		for (size_t i = 0; i < n; i++) {
			if ((i / 40) % 2 == 0) {
				CHECK(kv->ops->del(kv, t, rows[i].key, rows[i].klen) == 0);
				rows[i].live = false;
			} else if (i % 3 == 0) {
				rows[i].vlen = rows[i].vlen ? 0 : 3;
				memset(rows[i].val, 'x', rows[i].vlen);
				CHECK(kv->ops->put(kv, t, rows[i].key, rows[i].klen,
						   rows[i].val, rows[i].vlen) == 0);
			}
		}
		CHECK(kv->ops->step_end(kv, 1) == 0);
		CHECK(kv->ops->sync(kv) == 0);
		kv->ops->close(kv);
		CHECK(b->open_kv(place, &kv) == 0);
		CHECK(scans_match(kv, t, rows, n));
		/* and the rest: the table is empty again */
		CHECK(kv->ops->step_begin(kv) == 0);
		for (size_t i = 0; i < n; i++)
			if (rows[i].live)
				CHECK(kv->ops->del(kv, t, rows[i].key, rows[i].klen) == 0);
		CHECK(kv->ops->step_end(kv, 1) == 0);
		CHECK(kv->ops->sync(kv) == 0);
		struct ref_scan none = {rows, 0, 0, 0};
		CHECK(kv->ops->scan(kv, t, NULL, 0, expect_ref, &none) == 0 && !none.bad);
	}
	kv->ops->close(kv);
}

/* ---- claimed inode numbers ---------------------------------------------------- */

struct ino_log {
	uint64_t ino[16];
	int n;
};

static int log_ino(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct ino_log *l = ctx;
	(void)val;
	(void)vlen;
	if (klen < 8 || l->n == 16)
		return -ERANGE;
	uint64_t be;
	memcpy(&be, key, 8);
	l->ino[l->n++] = be64toh(be);
	return 0;
}

static int put_ino_row(struct kv *kv, enum kv_table t, uint64_t ino, const char *rest)
{
	uint8_t key[32];
	uint64_t be = htobe64(ino);
	memcpy(key, &be, 8);
	memcpy(key + 8, rest, strlen(rest));
	int rc = kv->ops->step_begin(kv);
	if (!rc)
		rc = kv->ops->step_end(kv, kv->ops->put(kv, t, key, 8 + strlen(rest), "v", 1) == 0);
	return rc;
}

/* The numbers of T's rows from INO's on, in order, into L. */
static int inos_from(struct kv *kv, enum kv_table t, uint64_t ino, struct ino_log *l)
{
	uint64_t be = htobe64(ino);
	*l = (struct ino_log){0};
	return kv->ops->scan(kv, t, &be, 8, log_ino, l);
}

/* The numbers of T's rows under INO's prefix, into L. */
static int inos_under(struct kv *kv, enum kv_table t, uint64_t ino, struct ino_log *l)
{
	uint64_t be = htobe64(ino);
	*l = (struct ino_log){0};
	return kv->ops->scan_prefix(kv, t, &be, 8, log_ino, l);
}

/* claim_inos: blocks never overlap, also across a reopen; and scans that
 * start at a just-claimed number see every row: the claimer's, synced or
 * not, and rows of later numbers (another claimer's) in the store.
 * (Tables no other check here uses.) */
static void check_claims(const struct backend *b, const char *place)
{
	struct kv *kv;
	CHECK(b->open_kv(place, &kv) == 0);
	uint64_t a, c;
	CHECK(kv->ops->claim_inos(kv, 1, 4, &a) == 0 && a >= 1);
	CHECK(kv->ops->claim_inos(kv, 1, 4, &c) == 0 && c >= a + 4);
	/* rows of a later number, as another daemon's block would have */
	CHECK(put_ino_row(kv, KV_TAGS_OF, c + 1000, "x") == 0);
	CHECK(kv->ops->sync(kv) == 0);
	/* the claimer's rows of its new number, not synced: both seen */
	CHECK(put_ino_row(kv, KV_TAGS_OF, c, "a") == 0);
	CHECK(put_ino_row(kv, KV_PENDING, c + 1, "n") == 0);
	struct ino_log l;
	CHECK(inos_from(kv, KV_TAGS_OF, c, &l) == 0 && l.n == 2 && l.ino[0] == c &&
	      l.ino[1] == c + 1000);
	CHECK(inos_from(kv, KV_TAGS_OF, c + 1, &l) == 0 && l.n == 1 && l.ino[0] == c + 1000);
	CHECK(inos_from(kv, KV_PENDING, c, &l) == 0 && l.n == 1 && l.ino[0] == c + 1);
	/* scan_prefix: just the rows under the prefix, new or stored */
	CHECK(inos_under(kv, KV_TAGS_OF, c, &l) == 0 && l.n == 1 && l.ino[0] == c);
	CHECK(inos_under(kv, KV_TAGS_OF, c + 1, &l) == 0 && l.n == 0);
	CHECK(inos_under(kv, KV_TAGS_OF, c + 1000, &l) == 0 && l.n == 1);
	CHECK(inos_under(kv, KV_PENDING, c + 1, &l) == 0 && l.n == 1);
	l = (struct ino_log){0};
	CHECK(kv->ops->scan_prefix(kv, KV_TAGS_OF, "", 0, log_ino, &l) == 0 && l.n == 2);
	/* synced, then more of the block: still all seen */
	CHECK(kv->ops->sync(kv) == 0);
	CHECK(put_ino_row(kv, KV_TAGS_OF, c + 2, "b") == 0);
	CHECK(inos_from(kv, KV_TAGS_OF, c, &l) == 0 && l.n == 3 && l.ino[0] == c &&
	      l.ino[1] == c + 2 && l.ino[2] == c + 1000);
	CHECK(inos_under(kv, KV_TAGS_OF, c, &l) == 0 && l.n == 1 && l.ino[0] == c);
	CHECK(inos_under(kv, KV_TAGS_OF, c + 2, &l) == 0 && l.n == 1 && l.ino[0] == c + 2);
	CHECK(kv->ops->sync(kv) == 0);
	CHECK(inos_under(kv, KV_TAGS_OF, c + 2, &l) == 0 && l.n == 1 && l.ino[0] == c + 2);
	kv->ops->close(kv);
	CHECK(b->open_kv(place, &kv) == 0);
	CHECK(inos_from(kv, KV_TAGS_OF, c, &l) == 0 && l.n == 3);
	CHECK(inos_under(kv, KV_TAGS_OF, c, &l) == 0 && l.n == 1 && l.ino[0] == c);
	uint64_t d;
	CHECK(kv->ops->claim_inos(kv, 1, 4, &d) == 0 && d >= c + 4);
	/* an undone step gives nothing back */
	CHECK(kv->ops->step_begin(kv) == 0);
	uint64_t e;
	CHECK(kv->ops->claim_inos(kv, 1, 4, &e) == 0 && e >= d + 4);
	CHECK(kv->ops->step_end(kv, 0) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	kv->ops->close(kv);
	CHECK(b->open_kv(place, &kv) == 0);
	uint64_t f;
	CHECK(kv->ops->claim_inos(kv, 1, 1, &f) == 0 && f >= e + 4);
	kv->ops->close(kv);
}

struct count_rows {
	size_t n;
};

static int count_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	((struct count_rows *)ctx)->n++;
	return 0;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Delete, in one synced step, the rows "INO r" of TABLES (N) for every
 * other number of ORDER (6), from the FIRST. */
static void del_every_other(struct kv *kv, const enum kv_table *tables, size_t n,
			    const uint64_t *order, int first)
{
	CHECK(kv->ops->step_begin(kv) == 0);
	for (size_t t = 0; t < n; t++)
		for (int i = first; i < 6; i += 2) {
			uint8_t key[9];
			uint64_t be = htobe64(order[i]);
			memcpy(key, &be, 8);
			key[8] = 'r';
			CHECK(kv->ops->del(kv, tables[t], key, 9) == 0);
		}
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
}

/* Partitions (backend.h): a new partition's numbers follow every number
 * claimed before it and stay in it; rows of several partitions, synced or
 * not, scan as one table in key order, from any start; a prefix scan sees
 * one partition's rows; all of it across a reopen. */
static void check_partitions(const struct backend *b, const char *place)
{
	static const enum kv_table tables[] = {KV_ORPHANS, KV_INODES, KV_LINKS};
	struct kv *kv;
	CHECK(b->open_kv(place, &kv) == 0);
	uint64_t low, p1, x, p2, y, z;
	CHECK(kv->ops->claim_inos(kv, 1, 4, &low) == 0);
	CHECK(kv->ops->claim_inos(kv, 0, 1, &p1) == 0 && p1 > low);
	CHECK(kv->ops->claim_inos(kv, p1, 4, &x) == 0 && x > p1);
	CHECK(kv_partition(x) == kv_partition(p1));
	CHECK(kv->ops->claim_inos(kv, 0, 1, &p2) == 0 && p2 > x);
	CHECK(kv->ops->claim_inos(kv, p2, 4, &y) == 0 && y > p2);
	CHECK(kv_partition(y) == kv_partition(p2));
	/* a block claimed in p1 after p2 was made stays in p1 */
	CHECK(kv->ops->claim_inos(kv, x, 4, &z) == 0 && z >= x + 4);
	CHECK(kv_partition(z) == kv_partition(p1));
	if (failures)
		return;
	uint64_t order[] = {low, p1, x, z, p2, y}; /* sorted: key order */
	qsort(order, 6, sizeof(order[0]), compare_u64);
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
		/* half synced, half not */
		CHECK(put_ino_row(kv, tables[t], y, "r") == 0);
		CHECK(put_ino_row(kv, tables[t], p1, "r") == 0);
		CHECK(put_ino_row(kv, tables[t], low, "r") == 0);
		CHECK(kv->ops->sync(kv) == 0);
		CHECK(put_ino_row(kv, tables[t], z, "r") == 0);
		CHECK(put_ino_row(kv, tables[t], p2, "r") == 0);
		CHECK(put_ino_row(kv, tables[t], x, "r") == 0);
	}
	for (int round = 0; round < 2; round++) {
		for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
			struct ino_log l = {0};
			CHECK(kv->ops->scan(kv, tables[t], NULL, 0, log_ino, &l) == 0);
			CHECK(l.n == 6);
			for (int i = 0; i < l.n && i < 6; i++)
				CHECK(l.ino[i] == order[i]);
			for (int from = 0; from < 6; from++) {
				CHECK(inos_from(kv, tables[t], order[from], &l) == 0);
				CHECK(l.n == 6 - from);
				CHECK(l.n > 0 && l.ino[0] == order[from]);
				CHECK(inos_under(kv, tables[t], order[from], &l) == 0);
				CHECK(l.n == 1 && l.ino[0] == order[from]);
			}
			/* a start past the last partition claimed: nothing */
			CHECK(inos_from(kv, tables[t], order[5] + 100, &l) == 0 && l.n == 0);
		}
		/* synced and reopened, the same */
		CHECK(kv->ops->sync(kv) == 0);
		kv->ops->close(kv);
		CHECK(b->open_kv(place, &kv) == 0);
	}
	/* deletes in every partition, in one group */
	del_every_other(kv, tables, 3, order, 0);
	kv->ops->close(kv);
	CHECK(b->open_kv(place, &kv) == 0);
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
		struct ino_log l = {0};
		CHECK(kv->ops->scan(kv, tables[t], NULL, 0, log_ino, &l) == 0 && l.n == 3);
		for (int i = 0; i < l.n && i < 3; i++)
			CHECK(l.ino[i] == order[2 * i + 1]);
	}
	/* more rows of one partition in a group than one command carries */
	for (int del = 0; del < 2; del++) {
		CHECK(kv->ops->step_begin(kv) == 0);
		for (int i = 0; i < 1500; i++) {
			uint8_t key[16];
			uint64_t be = htobe64(order[2]);
			memcpy(key, &be, 8);
			char name[16];
			snprintf(name, sizeof(name), "n%05d", i);
			memcpy(key + 8, name, 6);
			int rc = del ? kv->ops->del(kv, KV_XATTRS, key, 14)
				     : kv->ops->put(kv, KV_XATTRS, key, 14, "v", 1);
			CHECK(rc == 0);
		}
		CHECK(kv->ops->step_end(kv, 1) == 0);
		CHECK(kv->ops->sync(kv) == 0);
		struct count_rows c = {0};
		uint64_t be = htobe64(order[2]);
		CHECK(kv->ops->scan_prefix(kv, KV_XATTRS, &be, 8, count_row, &c) == 0);
		CHECK(c.n == (del ? 0 : 1500));
	}
	/* numbers claimed after a reopen are still new */
	uint64_t p3;
	CHECK(kv->ops->claim_inos(kv, 0, 1, &p3) == 0 && p3 > order[5]);
	/* the tables empty again, for the checks after */
	del_every_other(kv, tables, 3, order, 1);
	kv->ops->close(kv);
}

static void check_kv(const struct backend *b, const char *place)
{
	struct kv *kv;
	CHECK(b->open_kv(place, &kv) == 0);
	check_steps(kv);
	check_scans(kv);
	check_scan_that_writes(kv);
	check_big_value(kv);
	/* what was synced survives a reopen; what was not is lost whole */
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(put_s(kv, KV_META, "late", "x") == 0);
	CHECK(put_s(kv, KV_META, "a", "late") == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	kv->ops->close(kv);
	CHECK(b->open_kv(place, &kv) == 0);
	CHECK(holds(kv, KV_META, "a", "1") && holds(kv, KV_META, "b", "2"));
	CHECK(holds(kv, KV_META, "late", NULL));
	struct kv_val v;
	CHECK(kv->ops->get(kv, KV_INODES, "big", 3, &v) == 0 && v.len == 1u << 20);
	kv->ops->close(kv);
}

/* Is ID among the live sessions KV lists? */
static bool session_live(struct kv *kv, uint32_t id)
{
	uint32_t *live = NULL;
	size_t n = 0;
	bool found = false;
	CHECK(kv->ops->sessions(kv, &live, &n) == 0);
	for (size_t i = 0; i < n; i++) {
		CHECK(i == 0 || live[i - 1] < live[i]); /* sorted */
		found = found || live[i] == id;
	}
	free(live);
	return found;
}

/* Sessions (backend.h): a backend has them (sessions and beat) or not
 * (session 0).  Each writer's is its own and never 0, alive from its open
 * to its close; a beat keeps it so and tells of one that ended. */
static void check_sessions(const struct backend *b, const char *place)
{
	struct kv *one, *two;
	CHECK(b->open_kv(place, &one) == 0);
	if (!one->ops->sessions) {
		CHECK(!one->ops->beat && one->session == 0);
		one->ops->close(one);
		return;
	}
	CHECK(one->ops->beat != NULL);
	CHECK(b->open_kv(place, &two) == 0);
	CHECK(one->session && two->session && one->session != two->session);
	CHECK(session_live(one, one->session) && session_live(one, two->session));
	bool died = true;
	CHECK(one->ops->beat(one, &died) == 0 && !died);
	uint32_t gone = two->session;
	two->ops->close(two);
	CHECK(!session_live(one, gone) && session_live(one, one->session));
	CHECK(one->ops->beat(one, &died) == 0 && died);
	CHECK(one->ops->beat(one, &died) == 0 && !died); /* told once */
	uint32_t closed = one->session;
	one->ops->close(one);
	CHECK(b->open_kv(place, &two) == 0);
	CHECK(two->session > closed && !session_live(two, closed));
	two->ops->close(two);
}

/* A counted value: COUNT (a varint), then REST; into BUF, its length. */
static size_t counted(uint8_t buf[64], uint64_t count, const char *rest)
{
	size_t n = varint_put(buf, count);
	memcpy(buf + n, rest, strlen(rest));
	return n + strlen(rest);
}

/* Does KEY of KV_CHUNKS hold COUNT then REST (REST NULL: no row)? */
static bool counts(struct kv *kv, const char *key, uint64_t count, const char *rest)
{
	struct kv_val v;
	int rc = kv->ops->get(kv, KV_CHUNKS, key, strlen(key), &v);
	if (!rest)
		return rc == -ENOENT;
	uint8_t want[64];
	size_t n = counted(want, count, rest);
	return rc == 0 && v.len == n && !memcmp(v.data, want, n);
}

static int add_s(struct kv *kv, const char *key, int64_t delta, const char *init)
{
	uint8_t buf[64];
	return kv->ops->add(kv, KV_CHUNKS, key, strlen(key), delta, init ? buf : NULL,
			    init ? counted(buf, (uint64_t)delta, init) : 0);
}

static int put_counted(struct kv *kv, const char *key, uint64_t count, const char *rest)
{
	uint8_t buf[64];
	return kv->ops->put(kv, KV_CHUNKS, key, strlen(key), buf, counted(buf, count, rest));
}

/* Adds (backend.h): a count at the start of a row's value, changed where
 * the row is stored.  Reads see an add at once; a step undone takes its
 * adds back; a create puts its value only where there is no row; a
 * saturated count stays; one below zero is refused; a value with no
 * count is an error; what was synced survives a reopen. */
static void check_adds(const struct backend *b, const char *place)
{
	struct kv *kv;
	CHECK(b->open_kv(place, &kv) == 0);
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(add_s(kv, "c1", 1, "loc") == 0 && counts(kv, "c1", 1, "loc"));
	CHECK(add_s(kv, "c1", 2, NULL) == 0 && counts(kv, "c1", 3, "loc"));
	CHECK(add_s(kv, "c1", 1, "other") == 0 && counts(kv, "c1", 4, "loc"));
	CHECK(add_s(kv, "c2", 1, NULL) == -ENOENT && counts(kv, "c2", 0, NULL));
	CHECK(put_counted(kv, "c3", KV_COUNT_MAX, "full") == 0);
	CHECK(add_s(kv, "c3", 1, NULL) == 0 && add_s(kv, "c3", -5, NULL) == 0);
	CHECK(counts(kv, "c3", KV_COUNT_MAX, "full"));
	CHECK(put_counted(kv, "c4", 127, "wide") == 0 && add_s(kv, "c4", 1, NULL) == 0);
	CHECK(counts(kv, "c4", 128, "wide")); /* its count one byte longer */
	CHECK(kv->ops->put(kv, KV_CHUNKS, "c5", 2, "", 0) == 0);
	CHECK(add_s(kv, "c5", 1, NULL) == -EIO);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	/* an undone step's adds are gone; one below zero changes nothing */
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(add_s(kv, "c1", 5, NULL) == 0 && counts(kv, "c1", 9, "loc"));
	CHECK(kv->ops->step_end(kv, 0) == 0);
	CHECK(counts(kv, "c1", 4, "loc"));
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(add_s(kv, "c1", -5, NULL) == -ERANGE && counts(kv, "c1", 4, "loc"));
	CHECK(add_s(kv, "c1", -4, NULL) == 0 && counts(kv, "c1", 0, "loc"));
	CHECK(add_s(kv, "c1", 2, NULL) == 0);
	/* a row deleted then created again in one group */
	CHECK(kv->ops->del(kv, KV_CHUNKS, "c4", 2) == 0);
	CHECK(add_s(kv, "c4", 1, "new") == 0 && counts(kv, "c4", 1, "new"));
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->step_begin(kv) == 0); /* over an add of the group's */
	CHECK(add_s(kv, "c1", 1, NULL) == 0 && counts(kv, "c1", 3, "loc"));
	CHECK(kv->ops->step_end(kv, 1) == 0);
	CHECK(kv->ops->sync(kv) == 0);
	kv->ops->close(kv);
	CHECK(b->open_kv(place, &kv) == 0);
	CHECK(counts(kv, "c1", 3, "loc") && counts(kv, "c3", KV_COUNT_MAX, "full"));
	CHECK(counts(kv, "c4", 1, "new") && counts(kv, "c2", 0, NULL));
	kv->ops->close(kv);
}

/* On one server: a sync whose adds meet a chunk bucket that is no hash (a
 * damaged store) writes nothing, none of its adds, and once the bucket
 * is mended the next sync adds each once.  ONE counts WANT on c1. */
static void check_damaged_bucket(struct kv *one, const char *place, int64_t want)
{
	(void)place;
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_srv.port, tv);
	CHECK(c && !c->err);
	if (!c || c->err)
		return;
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(add_s(one, "c1", 1, NULL) == 0 && add_s(one, "d1", 1, "dee") == 0);
	CHECK(one->ops->step_end(one, 1) == 0);
	/* "d1"'s bucket: its first two bytes, the second masked with 0xf0 */
	redisReply *r = redisCommand(c, "SET {nadb:contract:p0}:t:chunks:b:d0 oops");
	CHECK(r && r->type == REDIS_REPLY_STATUS);
	freeReplyObject(r);
	CHECK(one->ops->sync(one) != 0);
	struct kv *other;
	CHECK(open_redis_kv(place, &other) == 0);
	CHECK(counts(other, "c1", (uint64_t)want, "loc")); /* nothing written */
	other->ops->close(other);
	r = redisCommand(c, "DEL {nadb:contract:p0}:t:chunks:b:d0");
	CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
	freeReplyObject(r);
	CHECK(one->ops->sync(one) == 0);
	CHECK(open_redis_kv(place, &other) == 0);
	CHECK(counts(other, "c1", (uint64_t)want + 1, "loc") && counts(other, "d1", 1, "dee"));
	other->ops->close(other);
	redisFree(c);
}

/* Two handles writing the store at once, *ONE and *TWO: false (none
 * open) where the backend has no sessions (one process writes it). */
static bool open_two_writers(const struct backend *b, const char *place, struct kv **one,
			     struct kv **two)
{
	CHECK(b->open_kv(place, one) == 0);
	if (!(*one)->ops->sessions) {
		(*one)->ops->close(*one);
		return false;
	}
	CHECK(b->open_kv(place, two) == 0);
	return true;
}

/* Where two processes can write one store (a backend with sessions), the
 * adds of both count, and two creates of one row make one row counting
 * both.  And a sync runs once (kv_redis.c): not sent, sent twice, or its
 * reply lost, no add counts twice or not at all. */
static void check_shared_adds(const struct backend *b, const char *place)
{
	struct kv *one, *two;
	if (!open_two_writers(b, place, &one, &two))
		return;
	struct kv *both[] = {one, two};
	for (int i = 0; i < 2; i++) { /* both read c1 at 3, both add */
		CHECK(both[i]->ops->step_begin(both[i]) == 0);
		CHECK(counts(both[i], "c1", 3, "loc"));
		CHECK(add_s(both[i], "c1", i + 1, NULL) == 0);
		CHECK(add_s(both[i], "s1", 1, i ? "two" : "one") == 0);
		CHECK(both[i]->ops->step_end(both[i], 1) == 0);
	}
	CHECK(two->ops->sync(two) == 0 && one->ops->sync(one) == 0);
	two->ops->close(two);
	CHECK(b->open_kv(place, &two) == 0);
	CHECK(counts(two, "c1", 6, "loc") && counts(two, "s1", 2, "two"));
	/* syncs run once, whatever happens to a transaction on its way */
	static const unsigned faults[] = {
		KV_REDIS_FAULT_NOT_SENT,
		KV_REDIS_FAULT_LOSE_REPLY,
		KV_REDIS_FAULT_SENT_TWICE,
		KV_REDIS_FAULT_NOT_SENT | KV_REDIS_FAULT_SETTLE_TWICE,
		KV_REDIS_FAULT_LOSE_REPLY | KV_REDIS_FAULT_SETTLE_TWICE,
	};
	int64_t want = 6;
	for (size_t f = 0; f < sizeof(faults) / sizeof(faults[0]); f++) {
		CHECK(one->ops->step_begin(one) == 0);
		CHECK(add_s(one, "c1", 10, NULL) == 0);
		CHECK(put_s(one, KV_META, "f", "x") == 0);
		CHECK(one->ops->step_end(one, 1) == 0);
		kv_redis_inject_fault(one, faults[f]);
		int rc = one->ops->sync(one);
		CHECK((rc != 0) == !(faults[f] & KV_REDIS_FAULT_SENT_TWICE));
		want += 10;
		/* more added before the next sync, by us and by another, and a
		 * row created (no attempt carried it) */
		char fresh[8];
		snprintf(fresh, sizeof(fresh), "n%zu", f);
		CHECK(one->ops->step_begin(one) == 0);
		CHECK(add_s(one, "c1", 1, NULL) == 0 && add_s(one, fresh, 1, "new") == 0);
		CHECK(one->ops->step_end(one, 1) == 0);
		CHECK(two->ops->step_begin(two) == 0);
		CHECK(add_s(two, "c1", 100, NULL) == 0);
		CHECK(two->ops->step_end(two, 1) == 0);
		CHECK(two->ops->sync(two) == 0);
		CHECK(one->ops->sync(one) == 0);
		want += 101;
		two->ops->close(two);
		CHECK(b->open_kv(place, &two) == 0);
		CHECK(counts(two, "c1", (uint64_t)want, "loc") && counts(two, fresh, 1, "new"));
		CHECK(holds(two, KV_META, "f", "x"));
	}
	two->ops->close(two);
	if (b->open_kv == open_redis_kv)
		check_damaged_bucket(one, place, want);
	one->ops->close(one);
}

/* The rows free_zeros freed (their keys and values, as "key=count,rest"). */
struct freed_rows {
	char text[8][64];
	int n;
};

static int note_freed(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct freed_rows *f = ctx;
	const uint8_t *p = val;
	uint64_t c = 0;
	CHECK(f->n < 8 && klen < 16 && vlen < 32 && varint_get(&p, p + vlen, &c));
	if (f->n >= 8 || klen >= 16 || vlen >= 32)
		return -ERANGE;
	snprintf(f->text[f->n++], sizeof(f->text[0]), "%.*s=%llu,%.*s", (int)klen,
		 (const char *)key, (unsigned long long)c,
		 (int)(vlen - (size_t)(p - (const uint8_t *)val)), (const char *)p);
	return 0;
}

static int count_freed(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	((struct freed_rows *)ctx)->n++;
	return 0;
}

/* free_zeros with GRACE: the rows freed, "" if none, else their texts
 * joined by spaces. */
static const char *free_zeros(struct kv *kv, uint64_t grace)
{
	static char out[8 * 64];
	struct freed_rows f = {.n = 0};
	int rc = kv->ops->free_zeros(kv, KV_CHUNKS, grace, note_freed, &f);
	CHECK(rc >= 0);
	rc = rc > 0 ? 0 : rc; /* more may be due: see check_zeros */
	out[0] = 0;
	for (int i = 0; i < f.n; i++)
		snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%s", i ? " " : "",
			 f.text[i]);
	return rc ? "failed" : out;
}

static void step_add(struct kv *kv, const char *key, int64_t delta, const char *init)
{
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(add_s(kv, key, delta, init) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0);
}

static void synced_add(struct kv *kv, const char *key, int64_t delta, const char *init)
{
	step_add(kv, key, delta, init);
	CHECK(kv->ops->sync(kv) == 0);
}

/* counts, as a process that opens the store now reads it */
static bool counts_afresh(const struct backend *b, const char *place, const char *key,
			  uint64_t count, const char *rest)
{
	struct kv *fresh;
	CHECK(b->open_kv(place, &fresh) == 0);
	bool yes = counts(fresh, key, count, rest);
	fresh->ops->close(fresh);
	return yes;
}

/* Where several processes write one store (a backend with free_zeros), a
 * count that reaches 0 frees nothing at once: free_zeros frees the row
 * once it has stood at 0 for the grace, and only if it still does --
 * whoever took it there (an add, a put), and whoever counted it again
 * meanwhile.  A create of a row that another process frees before it
 * lands puts its own value. */
static void check_zeros(const struct backend *b, const char *place)
{
	struct kv *one, *two;
	CHECK(b->open_kv(place, &one) == 0);
	if (!one->ops->free_zeros) { /* one process: it frees at 0 itself */
		CHECK(!one->ops->sessions);
		one->ops->close(one);
		return;
	}
	CHECK(b->open_kv(place, &two) == 0);
	/* z1 and z2 taken to 0 by adds, z3 by a put */
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(add_s(one, "z1", 1, "one") == 0 && add_s(one, "z2", 2, "two") == 0);
	CHECK(put_counted(one, "z3", 1, "three") == 0);
	CHECK(one->ops->step_end(one, 1) == 0);
	CHECK(one->ops->sync(one) == 0);
	CHECK(strcmp(free_zeros(one, 0), "") == 0);
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(add_s(one, "z1", -1, NULL) == 0 && add_s(one, "z2", -2, NULL) == 0);
	CHECK(put_counted(one, "z3", 0, "three") == 0);
	CHECK(one->ops->step_end(one, 1) == 0);
	CHECK(one->ops->sync(one) == 0);
	CHECK(strcmp(free_zeros(one, 60000), "") == 0); /* not due yet */
	CHECK(counts(one, "z1", 0, "one") && counts(two, "z1", 0, "one"));
	/* another counts z2 again; a write of ours to z3 waits to be synced */
	step_add(two, "z2", 1, NULL);
	CHECK(two->ops->sync(two) == 0);
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(put_counted(one, "z3", 0, "three") == 0);
	CHECK(one->ops->step_end(one, 1) == 0);
	usleep(20 * 1000);
	struct freed_rows f = {.n = 0}; /* z3 left for later: more may be due */
	CHECK(one->ops->free_zeros(one, KV_CHUNKS, 10, note_freed, &f) == 1);
	CHECK(f.n == 1 && !strcmp(f.text[0], "z1=0,one"));
	CHECK(counts(one, "z1", 0, NULL)); /* gone for reads at once */
	CHECK(counts_afresh(b, place, "z1", 0, NULL) && counts_afresh(b, place, "z2", 1, "two"));
	CHECK(counts_afresh(b, place, "z3", 0, "three"));
	/* z3's put of 0 over 0 keeps the time it got there: due at once */
	CHECK(one->ops->sync(one) == 0);
	CHECK(strcmp(free_zeros(one, 10), "z3=0,three") == 0);
	/* z2 counted again was let go of: at 0 again, it waits anew */
	step_add(two, "z2", -1, NULL);
	CHECK(two->ops->sync(two) == 0);
	CHECK(strcmp(free_zeros(one, 60000), "") == 0);
	CHECK(strcmp(free_zeros(two, 0), "z2=0,two") == 0);
	CHECK(strcmp(free_zeros(one, 0), "") == 0); /* freed once */
	/* z4 at 0: two counts it again with a value of its own (chunk.c,
	 * "Freeing"), one frees z4 before two syncs: two's value is put */
	synced_add(one, "z4", 1, "old");
	synced_add(one, "z4", -1, NULL);
	CHECK(counts(two, "z4", 0, "old"));
	step_add(two, "z4", 1, "new");
	CHECK(counts(two, "z4", 1, "old")); /* as read here, until it lands */
	CHECK(strcmp(free_zeros(one, 0), "z4=0,old") == 0);
	CHECK(two->ops->sync(two) == 0);
	CHECK(counts_afresh(b, place, "z4", 1, "new") && counts(two, "z4", 1, "new"));
	/* ...and where it lands first, the row read gains the reference */
	synced_add(one, "z5", 1, "old");
	synced_add(one, "z5", -1, NULL);
	synced_add(two, "z5", 1, "new");
	CHECK(strcmp(free_zeros(one, 0), "") == 0);
	CHECK(counts_afresh(b, place, "z5", 1, "old") && counts(two, "z5", 1, "old"));
	/* a create after an add in one group: put where the row is gone by
	 * then, it counts its own delta and the adds after it */
	synced_add(one, "z6", 2, "old");
	step_add(one, "z6", -2, NULL);
	step_add(one, "z6", 1, "new");
	step_add(one, "z6", 2, NULL);
	CHECK(counts(one, "z6", 3, "old"));
	CHECK(two->ops->step_begin(two) == 0); /* gone meanwhile */
	CHECK(two->ops->del(two, KV_CHUNKS, "z6", 2) == 0);
	CHECK(two->ops->step_end(two, 1) == 0 && two->ops->sync(two) == 0);
	CHECK(one->ops->sync(one) == 0);
	CHECK(counts_afresh(b, place, "z6", 3, "new") && counts(one, "z6", 3, "new"));
	/* the same where the add went out in a sync whose reply was lost
	 * (it ran): the create, which no attempt carried yet, still goes */
	synced_add(one, "z7", 1, "old");
	step_add(one, "z7", -1, NULL);
	kv_redis_inject_fault(one, KV_REDIS_FAULT_LOSE_REPLY);
	CHECK(one->ops->sync(one) != 0);
	step_add(one, "z7", 1, "new");
	CHECK(strcmp(free_zeros(two, 0), "z7=0,old") == 0);
	CHECK(one->ops->sync(one) == 0);
	CHECK(counts_afresh(b, place, "z7", 1, "new") && counts(one, "z7", 1, "new"));
	/* more due than one call frees: it says so */
	CHECK(one->ops->step_begin(one) == 0);
	for (int i = 0; i < FREE_ZEROS_MAX + 2; i++) {
		char key[16];
		snprintf(key, sizeof(key), "many%d", i);
		CHECK(put_counted(one, key, 0, "m") == 0);
	}
	CHECK(one->ops->step_end(one, 1) == 0 && one->ops->sync(one) == 0);
	struct freed_rows none = {.n = 0};
	CHECK(one->ops->free_zeros(one, KV_CHUNKS, 60000, note_freed, &none) == 0);
	int more = one->ops->free_zeros(one, KV_CHUNKS, 0, count_freed, &none);
	CHECK(more == 1 && none.n == FREE_ZEROS_MAX);
	CHECK(one->ops->free_zeros(one, KV_CHUNKS, 0, count_freed, &none) == 0);
	CHECK(none.n == FREE_ZEROS_MAX + 2);
	two->ops->close(two);
	one->ops->close(one);
}

/* ---- blobs ------------------------------------------------------------------ */

struct seg_log {
	uint32_t segs[8];
	uint64_t sizes[8], held[8];
	bool current[8];
	int n;
};

static int log_segment(void *ctx, uint32_t seg, uint64_t size, uint64_t held,
		       bool current)
{
	struct seg_log *l = ctx;
	if (l->n == 8)
		return -ERANGE;
	l->segs[l->n] = seg;
	l->sizes[l->n] = size;
	l->held[l->n] = held;
	l->current[l->n++] = current;
	return 0;
}

static bool reads_back(struct blobs *b, const struct blob_loc *loc, const uint8_t *head,
		       size_t hlen, const uint8_t *data, size_t dlen)
{
	uint8_t *buf = malloc(hlen + dlen);
	bool ok = buf && loc->len == hlen + dlen &&
		  b->ops->read(b, loc, 0, buf, hlen + dlen) == 0 &&
		  !memcmp(buf, head, hlen) && !memcmp(buf + hlen, data, dlen);
	/* and from inside the frame */
	ok = ok && b->ops->read(b, loc, hlen + 1, buf, dlen - 1) == 0 &&
	     !memcmp(buf, data + 1, dlen - 1);
	free(buf);
	return ok;
}

/* While another session writes the store (backend with sessions), a
 * counted row's count may move under ours: what one handle added is
 * what the other reads next, and adds to, never a count it cached. */
static void check_counts_shared(const struct backend *b, const char *place)
{
	struct kv *one, *two;
	if (!open_two_writers(b, place, &one, &two))
		return;
	bool died;
	CHECK(one->ops->beat(one, &died) == 0); /* one hears of two */
	synced_add(one, "u1", 1, "uu");
	CHECK(counts(one, "u1", 1, "uu") && counts(two, "u1", 1, "uu"));
	synced_add(two, "u1", 2, NULL);
	CHECK(counts(one, "u1", 3, "uu"));
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(add_s(one, "u1", -3, NULL) == 0);
	CHECK(one->ops->step_end(one, 1) == 0 && one->ops->sync(one) == 0);
	CHECK(counts(two, "u1", 0, "uu"));
	/* one adds on what it read while two wrote; two adds too and goes
	 * before one's sync: one's cache does not keep its own guess */
	step_add(one, "u1", 1, NULL);
	synced_add(two, "u1", 2, NULL);
	two->ops->close(two);
	CHECK(one->ops->beat(one, &died) == 0); /* one alone again */
	CHECK(one->ops->sync(one) == 0);
	CHECK(counts(one, "u1", 3, "uu"));
	one->ops->close(one);
}

/* Partition leases (backend.h's lease): a partition leased by one
 * session is refused to another, which asks; the holder hears of the ask,
 * syncs and lets go (not before: -EAGAIN); the other takes it and reads
 * what the first wrote, and the first, leasing no more, reads what the
 * other writes (neither caches a partition it does not lease).  A sync
 * that writes a partition not leased is refused, and so is a late one of
 * a holder whose session died and whose lease was taken over (fenced). */
static int put_in(struct kv *kv, uint64_t ino, const char *val)
{
	uint64_t be = htobe64(ino);
	int rc = kv->ops->step_begin(kv);
	if (!rc)
		rc = kv->ops->step_end(kv, kv->ops->put(kv, KV_INODES, &be, 8, val,
							 strlen(val)) == 0);
	return rc;
}

static bool reads_in(struct kv *kv, uint64_t ino, const char *want)
{
	uint64_t be = htobe64(ino);
	struct kv_val v;
	return kv->ops->get(kv, KV_INODES, &be, 8, &v) == 0 && v.len == strlen(want) &&
	       !memcmp(v.data, want, v.len);
}

static void check_leases(const struct backend *b, const char *place)
{
	struct kv *one, *two;
	if (!open_two_writers(b, place, &one, &two))
		return;
	if (!one->ops->lease) {
		one->ops->close(one);
		two->ops->close(two);
		return;
	}
	uint64_t ino, other;
	CHECK(one->ops->claim_inos(one, 0, 1, &ino) == 0);
	CHECK(one->ops->claim_inos(one, 0, 1, &other) == 0);
	uint32_t p = kv_partition(ino), q = kv_partition(other);
	CHECK(p != 0 && q != p);
	CHECK(one->ops->lease(one, p, KV_LEASE_TAKE) == 0);
	CHECK(one->ops->lease(one, p, KV_LEASE_TAKE) == 0); /* ours already */
	CHECK(one->ops->lease(one, p, KV_LEASE_ASKED) == 0);
	CHECK(two->ops->lease(two, p, KV_LEASE_TAKE) == -EBUSY);
	CHECK(one->ops->lease(one, p, KV_LEASE_ASKED) == 1);
	CHECK(two->ops->lease(two, p, KV_LEASE_ASKED) == 0); /* not its */
	CHECK(put_in(one, ino, "one 1") == 0 && one->ops->sync(one) == 0);
	CHECK(reads_in(two, ino, "one 1"));
	/* a partition not leased is not written */
	CHECK(put_in(one, other, "nope") == 0);
	CHECK(one->ops->sync(one) == -ENOLCK);
	CHECK(one->ops->lease(one, q, KV_LEASE_TAKE) == 0 && one->ops->sync(one) == 0);
	CHECK(reads_in(two, other, "nope"));
	/* let go only with nothing unsynced */
	CHECK(put_in(one, ino, "one 2") == 0);
	CHECK(one->ops->lease(one, p, KV_LEASE_RELEASE) == -EAGAIN);
	CHECK(one->ops->sync(one) == 0);
	CHECK(one->ops->lease(one, p, KV_LEASE_RELEASE) == 0);
	CHECK(one->ops->lease(one, p, KV_LEASE_ASKED) == 0);
	CHECK(two->ops->lease(two, p, KV_LEASE_TAKE) == 0);
	CHECK(reads_in(two, ino, "one 2"));
	CHECK(put_in(two, ino, "two 1") == 0 && two->ops->sync(two) == 0);
	CHECK(reads_in(one, ino, "two 1")); /* one cached none of p */
	CHECK(put_in(two, ino, "two 2") == 0 && two->ops->sync(two) == 0);
	CHECK(reads_in(one, ino, "two 2"));
	CHECK(one->ops->lease(one, p, KV_LEASE_TAKE) == -EBUSY);
	if (b->open_kv == open_redis_kv) {
		/* two's session runs out: one takes its lease over, and two's
		 * next sync to p is fenced off, until its beat tells it */
		struct timeval tv = {2, 0};
		redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_srv.port, tv);
		CHECK(c && !c->err);
		redisReply *r = c ? redisCommand(c, "ZREM {nadb:contract:p0}:sessions %u",
						 two->session) : NULL;
		CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
		freeReplyObject(r);
		redisFree(c);
		CHECK(one->ops->lease(one, p, KV_LEASE_TAKE) == 0);
		CHECK(put_in(two, ino, "two late") == 0);
		CHECK(two->ops->sync(two) == -ENOLCK);
		CHECK(reads_in(one, ino, "two 2"));
		/* its beat finds it ran out: it is not counted in again (the
		 * others may have settled its rows), and writes no more */
		bool died;
		CHECK(two->ops->beat(two, &died) == 0);
		CHECK(!session_live(one, two->session));
		CHECK(two->ops->sync(two) == -ENOLCK);
		CHECK(two->ops->lease(two, p, KV_LEASE_TAKE) == -ENOLCK);
		/* partition 0 needs no lease, but a live session: one that ran
		 * out writes nothing there, before its beat or after */
		struct kv *three;
		CHECK(b->open_kv(place, &three) == 0);
		CHECK(three->ops->lease(three, q, KV_LEASE_TAKE) == -EBUSY); /* leasing */
		CHECK(three->ops->step_begin(three) == 0);
		CHECK(add_s(three, "lease-p0", 1, "x") == 0);
		CHECK(three->ops->step_end(three, 1) == 0 && three->ops->sync(three) == 0);
		CHECK(counts(one, "lease-p0", 1, "x"));
		c = redisConnectWithTimeout("127.0.0.1", redis_srv.port, tv);
		r = c ? redisCommand(c, "ZREM {nadb:contract:p0}:sessions %u", three->session)
		      : NULL;
		CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
		freeReplyObject(r);
		redisFree(c);
		CHECK(three->ops->step_begin(three) == 0);
		CHECK(add_s(three, "lease-p0", 1, NULL) == 0);
		CHECK(three->ops->step_end(three, 1) == 0 && three->ops->sync(three) == -ENOLCK);
		CHECK(counts(one, "lease-p0", 1, "x"));
		CHECK(three->ops->beat(three, &died) == 0 && three->ops->sync(three) == -ENOLCK);
		CHECK(counts(one, "lease-p0", 1, "x"));
		three->ops->close(three);
	}
	two->ops->close(two); /* (its unsynced write goes with it) */
	/* a holder that closes lets its leases go */
	one->ops->close(one);
	CHECK(b->open_kv(place, &one) == 0);
	CHECK(one->ops->lease(one, p, KV_LEASE_TAKE) == 0);
	CHECK(one->ops->lease(one, q, KV_LEASE_TAKE) == 0);
	CHECK(reads_in(one, other, "nope"));
	one->ops->close(one);
}

/* Numbering (backend.h's number): a key's number is given once and read
 * back by every handle; a step undone keeps it; two processes numbering
 * the same keys at once, in opposite orders, agree on each and never give
 * one number to two keys. */
#define NUMBERED 120
struct numbering {
	struct kv *kv;
	bool backwards;
	uint32_t id[NUMBERED];
	int rc;
};

static void *number_all(void *arg)
{
	struct numbering *n = arg;
	for (int i = 0; !n->rc && i < NUMBERED; i++) {
		int j = n->backwards ? NUMBERED - 1 - i : i;
		char key[16];
		snprintf(key, sizeof(key), "race%d", j);
		n->rc = n->kv->ops->number(n->kv, KV_TAG_IDS, key, strlen(key), "next_test_id",
					   &n->id[j]);
	}
	return NULL;
}

static int number_s(struct kv *kv, const char *key, uint32_t *id)
{
	return kv->ops->number(kv, KV_TAG_IDS, key, strlen(key), "next_test_id", id);
}

static bool holds_number(struct kv *kv, enum kv_table t, const char *key, uint32_t want)
{
	struct kv_val v;
	return kv->ops->get(kv, t, key, strlen(key), &v) == 0 && v.len == sizeof(want) &&
	       !memcmp(v.data, &want, sizeof(want));
}

static bool counter_is(struct kv *kv, uint32_t want)
{
	return holds_number(kv, KV_META, "next_test_id", want);
}

static int put_number(struct kv *kv, enum kv_table t, const char *key, uint32_t n)
{
	return kv->ops->put(kv, t, key, strlen(key), &n, sizeof(n));
}

static void check_numbers(const struct backend *b, const char *place)
{
	struct kv *one, *two;
	CHECK(b->open_kv(place, &one) == 0);
	if (!one->ops->number) { /* one process: it numbers in its steps */
		CHECK(!one->ops->sessions);
		one->ops->close(one);
		return;
	}
	CHECK(b->open_kv(place, &two) == 0);
	uint32_t a1 = 0, a2 = 0, b1 = 0, b2 = 0, c = 0;
	CHECK(number_s(one, "a", &a1) == 0 && a1 == 1);
	CHECK(number_s(two, "a", &a2) == 0 && a2 == 1);
	CHECK(number_s(two, "b", &b2) == 0 && b2 == 2);
	CHECK(number_s(one, "b", &b1) == 0 && b1 == 2);
	CHECK(counter_is(one, 3) && counter_is(two, 3));
	/* numbered by one while two holds it as absent: two gets one's */
	uint32_t x1 = 0, x2 = 0;
	CHECK(!holds_number(two, KV_TAG_IDS, "x", 0) && number_s(one, "x", &x1) == 0 && x1 == 3);
	CHECK(number_s(two, "x", &x2) == 0 && x2 == 3 && counter_is(two, 4));
	/* given in a step that is undone: kept, and seen by the other */
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(number_s(one, "c", &c) == 0 && c == 4);
	CHECK(one->ops->step_end(one, 0) == 0);
	CHECK(holds_number(two, KV_TAG_IDS, "c", 4) && holds_number(one, KV_TAG_IDS, "c", 4));
	/* a write of either row waiting in the group: refused */
	CHECK(put_number(one, KV_TAG_IDS, "d", 7) == 0);
	CHECK(number_s(one, "d", &c) == -EBUSY);
	CHECK(one->ops->sync(one) == 0);
	CHECK(put_number(one, KV_META, "next_test_id", 8) == 0);
	CHECK(number_s(one, "e", &c) == -EBUSY);
	CHECK(one->ops->sync(one) == 0);
	CHECK(number_s(two, "d", &c) == 0 && c == 7);
	CHECK(number_s(two, "e", &c) == 0 && c == 8);
	/* a row that is no number */
	CHECK(put_s(one, KV_TAG_IDS, "f", "xy") == 0 && one->ops->sync(one) == 0);
	CHECK(number_s(two, "f", &c) == -EIO);
	/* at once, from two processes' handles */
	struct numbering n[2] = {{.kv = one}, {.kv = two, .backwards = true}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&th[i], NULL, number_all, &n[i]) == 0);
	for (int i = 0; i < 2; i++)
		CHECK(pthread_join(th[i], NULL) == 0 && n[i].rc == 0);
	bool seen[NUMBERED] = {false};
	for (int i = 0; i < NUMBERED; i++) {
		CHECK(n[0].id[i] == n[1].id[i]);
		CHECK(n[0].id[i] >= 9 && n[0].id[i] < 9 + NUMBERED && !seen[n[0].id[i] - 9]);
		if (n[0].id[i] >= 9 && n[0].id[i] < 9 + NUMBERED)
			seen[n[0].id[i] - 9] = true;
	}
	CHECK(counter_is(two, 9 + NUMBERED));
	two->ops->close(two);
	one->ops->close(one);
}

/* A counted row's value that weighs (backend.h, kv_weight_of): COUNT,
 * then group GROUP, an offset, RAW and zigzag(SIZE - RAW), flags and
 * variant; its length. */
static size_t weighty(uint8_t buf[64], uint64_t count, uint32_t group, uint64_t raw,
		      uint64_t size)
{
	size_t n = varint_put(buf, count);
	n += varint_put(buf + n, group);
	n += varint_put(buf + n, 123456789);
	n += varint_put(buf + n, raw);
	n += varint_put(buf + n, zigzag((int64_t)size - (int64_t)raw));
	buf[n++] = 0x80;
	buf[n++] = 0;
	return n;
}

/* A tally as read: its totals and up to 64 groups. */
struct tally_read {
	struct kv_tally t;
	uint32_t group[64];
	uint64_t size[64];
	int n;
};

static int note_group(void *ctx, uint32_t group, uint64_t size)
{
	struct tally_read *r = ctx;
	CHECK(r->n < 64 && size > 0);
	if (r->n >= 64)
		return -ERANGE;
	r->group[r->n] = group, r->size[r->n++] = size;
	return 0;
}

static uint64_t group_size(const struct tally_read *r, uint32_t group)
{
	for (int i = 0; i < r->n; i++)
		if (r->group[i] == group)
			return r->size[i];
	return 0;
}

static struct tally_read tally_now(struct kv *kv)
{
	struct tally_read r = {.n = 0};
	CHECK(kv->ops->tally(kv, KV_CHUNKS, &r.t, note_group, &r) == 0);
	return r;
}

/* The same, weighed here: every row read with kv_weight_of. */
static int weigh_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key, (void)klen;
	struct tally_read *r = ctx;
	struct kv_weight w;
	if (kv_weight_of(val, vlen, &w) != 1)
		return 0;
	r->t.rows++, r->t.size += w.size, r->t.raw += w.raw;
	for (int i = 0; i < r->n; i++)
		if (r->group[i] == w.group) {
			r->size[i] += w.size;
			return 0;
		}
	return note_group(ctx, w.group, w.size);
}

static bool tallies_agree(const struct tally_read *a, const struct tally_read *b)
{
	bool same = a->t.rows == b->t.rows && a->t.size == b->t.size && a->t.raw == b->t.raw &&
		    a->n == b->n;
	for (int i = 0; same && i < a->n; i++)
		same = group_size(b, a->group[i]) == a->size[i];
	return same;
}

/* Does KV's tally differ from BASE by ROWS rows of SIZE bytes (RAW raw)
 * each, every one of them in GROUP (and nothing else)? */
static bool tally_moved(struct kv *kv, const struct tally_read *base, int rows, uint32_t group,
			uint64_t size, uint64_t raw)
{
	struct tally_read r = tally_now(kv);
	bool same = r.t.rows == base->t.rows + (uint64_t)rows &&
		    r.t.size == base->t.size + (uint64_t)rows * size &&
		    r.t.raw == base->t.raw + (uint64_t)rows * raw;
	for (int i = 0; same && i < base->n; i++)
		if (base->group[i] != group)
			same = group_size(&r, base->group[i]) == base->size[i];
	uint64_t want = group_size(base, group) + (uint64_t)rows * size;
	return same && group_size(&r, group) == want &&
	       r.n == base->n - (group_size(base, group) > 0) + (want > 0);
}

static int tally_add(struct kv *kv, const char *key, int64_t delta, uint32_t group)
{
	uint8_t buf[64];
	CHECK(kv->ops->step_begin(kv) == 0);
	size_t n = delta > 0 ? weighty(buf, (uint64_t)delta, group, 100, 120) : 0;
	int rc = kv->ops->add(kv, KV_CHUNKS, key, strlen(key), delta, n ? buf : NULL, n);
	CHECK(kv->ops->step_end(kv, 1) == 0);
	return rc;
}

/* Tallies (backend.h): what the rows counted above 0 weigh, kept where
 * they are stored.  Two creates of one row at once weigh once (a writer
 * cannot tell which made the row) once both are synced, each having seen
 * its own before; a count taken to 0 weighs nothing and back from 0
 * weighs again; a put moving a row to another group moves its size; a
 * delete, and a free at 0, change nothing more; a step undone weighs
 * nothing.  The tally weighs every row as
 * kv_weight_of reads it, and one lost is weighed again whole by the next
 * writer to open. */
static void check_tallies(const struct backend *b, const char *place)
{
	struct kv *one, *two;
	CHECK(b->open_kv(place, &one) == 0);
	if (!one->ops->tally) {
		one->ops->close(one);
		return;
	}
	CHECK(b->open_kv(place, &two) == 0);
	struct tally_read base = tally_now(one);
	/* two creates of w1 at once, in groups 900 and 901: two's lands first */
	CHECK(tally_add(one, "w1", 1, 900) == 0 && tally_add(two, "w1", 1, 901) == 0);
	/* nothing synced: each sees its own create, as it weighs it */
	CHECK(tally_moved(one, &base, 1, 900, 120, 100) && tally_moved(two, &base, 1, 901, 120, 100));
	CHECK(two->ops->sync(two) == 0 && one->ops->sync(one) == 0);
	CHECK(tally_moved(one, &base, 1, 901, 120, 100) && tally_moved(two, &base, 1, 901, 120, 100));
	/* counted more, then to 0, then again */
	CHECK(tally_add(one, "w1", 3, 0) == 0 && one->ops->sync(one) == 0);
	CHECK(tally_moved(two, &base, 1, 901, 120, 100));
	CHECK(tally_add(one, "w1", -5, 0) == 0 && one->ops->sync(one) == 0);
	CHECK(tally_moved(one, &base, 0, 901, 120, 100));
	CHECK(tally_add(one, "w1", 1, 0) == 0 && one->ops->sync(one) == 0);
	CHECK(tally_moved(one, &base, 1, 901, 120, 100));
	/* moved to group 902 by a put, then deleted */
	uint8_t buf[64];
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(one->ops->put(one, KV_CHUNKS, "w1", 2, buf, weighty(buf, 1, 902, 100, 130)) == 0);
	CHECK(one->ops->step_end(one, 1) == 0 && one->ops->sync(one) == 0);
	CHECK(tally_moved(two, &base, 1, 902, 130, 100));
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(one->ops->del(one, KV_CHUNKS, "w1", 2) == 0);
	CHECK(one->ops->step_end(one, 1) == 0 && one->ops->sync(one) == 0);
	CHECK(tally_moved(two, &base, 0, 902, 130, 100));
	/* a step undone, and one kept, before a sync */
	CHECK(one->ops->step_begin(one) == 0);
	CHECK(one->ops->put(one, KV_CHUNKS, "w9", 2, buf, weighty(buf, 1, 910, 10, 30)) == 0);
	CHECK(tally_moved(one, &base, 1, 910, 30, 10));
	CHECK(one->ops->step_end(one, 0) == 0);
	CHECK(tally_moved(one, &base, 0, 910, 30, 10));
	/* a sync whose reply was lost, or that was not sent: its weights
	 * count once, whether it ran or not, before the next sync says */
	static const unsigned faults[] = {KV_REDIS_FAULT_LOSE_REPLY, KV_REDIS_FAULT_NOT_SENT};
	for (uint32_t i = 0; i < 2; i++) {
		char key[4] = {'w', (char)('7' + i), 0};
		CHECK(tally_add(one, key, 1, 908 + i) == 0);
		kv_redis_inject_fault(one, faults[i]);
		CHECK(one->ops->sync(one) != 0);
		CHECK(tally_moved(one, &base, 1, 908 + i, 120, 100));
		CHECK(one->ops->sync(one) == 0 && tally_moved(two, &base, 1, 908 + i, 120, 100));
		CHECK(tally_add(one, key, -1, 0) == 0 && one->ops->sync(one) == 0);
		CHECK(tally_moved(two, &base, 0, 908 + i, 120, 100));
	}
	/* a row at 0 freed: nothing changes */
	CHECK(tally_add(one, "w2", 1, 903) == 0 && one->ops->sync(one) == 0);
	CHECK(tally_moved(two, &base, 1, 903, 120, 100));
	CHECK(tally_add(one, "w2", -1, 0) == 0 && one->ops->sync(one) == 0);
	CHECK(tally_moved(two, &base, 0, 903, 120, 100));
	struct freed_rows f = {.n = 0};
	CHECK(two->ops->free_zeros(two, KV_CHUNKS, 0, count_freed, &f) >= 0 && f.n >= 1);
	CHECK(counts(two, "w2", 0, NULL) && tally_moved(one, &base, 0, 903, 120, 100));
	/* the tally weighs each row as kv_weight_of does; rows in more
	 * buckets than one script weighs again (kv_redis.c, TALLY_BUCKETS),
	 * whose names hold a NUL */
	CHECK(tally_add(one, "w3", 2, 904) == 0);
	CHECK(one->ops->step_begin(one) == 0);
	for (int i = 1; i <= 200; i++) {
		uint8_t key[2] = {(uint8_t)i, 0};
		CHECK(one->ops->add(one, KV_CHUNKS, key, sizeof(key), 1, buf,
				    weighty(buf, 1, 905 + (uint32_t)i % 3, 10, 20 + (uint64_t)i)) == 0);
	}
	CHECK(one->ops->step_end(one, 1) == 0 && one->ops->sync(one) == 0);
	struct tally_read here = {.n = 0}, kept = tally_now(two);
	CHECK(one->ops->scan(one, KV_CHUNKS, NULL, 0, weigh_row, &here) == 0);
	CHECK(tallies_agree(&here, &kept) && here.t.rows > 0);
	if (b->open_kv == open_redis_kv) { /* a script that fails part way */
		struct timeval tv = {2, 0};
		redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_srv.port, tv);
		CHECK(c && !c->err);
		/* its adds run first, then a put into a damaged table fails */
		redisReply *r = c ? redisCommand(c, "SET {nadb:contract:p0}:t:meta:z oops") : NULL;
		freeReplyObject(r);
		CHECK(tally_add(one, "w4", 1, 920) == 0);
		CHECK(one->ops->step_begin(one) == 0);
		CHECK(put_s(one, KV_META, "tally-test", "x") == 0);
		CHECK(one->ops->step_end(one, 1) == 0);
		CHECK(one->ops->sync(one) != 0);
		r = c ? redisCommand(c, "DEL {nadb:contract:p0}:t:meta:z") : NULL;
		freeReplyObject(r);
		redisFree(c);
		CHECK(one->ops->sync(one) == 0);
		struct tally_read now = {.n = 0}, said = tally_now(two);
		CHECK(one->ops->scan(one, KV_CHUNKS, NULL, 0, weigh_row, &now) == 0);
		CHECK(tallies_agree(&now, &said) && group_size(&said, 920) == 120);
		/* a damaged field: the totals read it as 0, a group's size is
		 * unknown (compaction must not take it for empty) */
		c = redisConnectWithTimeout("127.0.0.1", redis_srv.port, tv);
		r = c ? redisCommand(c, "HSET {nadb:contract:p0}:t:chunks:tally g:920 oops") : NULL;
		freeReplyObject(r);
		CHECK(two->ops->tally(two, KV_CHUNKS, &now.t, NULL, NULL) == 0);
		CHECK(two->ops->tally(two, KV_CHUNKS, &now.t, note_group, &now) == -EIO);
		r = c ? redisCommand(c, "HSET {nadb:contract:p0}:t:chunks:tally g:920 120") : NULL;
		freeReplyObject(r);
		redisFree(c);
	}
	two->ops->close(two);
	if (b->open_kv == open_redis_kv) { /* lost: weighed again by a writer */
		kept = tally_now(one);
		struct timeval tv = {2, 0};
		redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_srv.port, tv);
		CHECK(c && !c->err);
		redisReply *r = c ? redisCommand(c, "DEL {nadb:contract:p0}:t:chunks:tally") : NULL;
		CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
		freeReplyObject(r);
		redisFree(c);
		CHECK(one->ops->tally(one, KV_CHUNKS, &here.t, NULL, NULL) == -ENODATA);
		CHECK(b->open_kv(place, &two) == 0);
		/* not at open: once its fences are up (store.c), or at its
		 * first sync where it raises none, as here */
		CHECK(two->ops->tally(two, KV_CHUNKS, &here.t, NULL, NULL) == -ENODATA);
		CHECK(two->ops->sync(two) == 0);
		struct tally_read again = tally_now(two);
		CHECK(tallies_agree(&again, &kept));
		two->ops->close(two);
	}
	one->ops->close(one);
}

static void check_blobs(const struct backend *be, const char *place)
{
	struct blobs *b;
	CHECK(be->open_blobs(place, &b) == 0);
	enum { N = 300000 };
	uint8_t head[32], *data = malloc(N);
	CHECK(data != NULL);
	if (!data)
		return;
	memset(head, 0xab, sizeof(head));
	for (size_t i = 0; i < N; i++)
		data[i] = (uint8_t)(i * 7919u >> 3);
	struct blob_loc a, c, d;
	CHECK(b->ops->append(b, head, sizeof(head), data, N, &a) == 0);
	CHECK(b->ops->append(b, head, sizeof(head), data, 1000, &c) == 0);
	CHECK(reads_back(b, &a, head, sizeof(head), data, N));
	CHECK(reads_back(b, &c, head, sizeof(head), data, 1000));
	CHECK(b->ops->sync(b) == 0);
	CHECK(b->ops->size(b) >= 2 * sizeof(head) + N + 1000);

	/* a prefetch hint changes no read: frames fetched ahead read back
	 * (each once from what was fetched, then as any other), one not
	 * named reads too, and one named past the end is refused as ever */
	if (b->ops->prefetch) {
		struct blob_loc e; /* as long as c, other bytes */
		CHECK(b->ops->append(b, head, sizeof(head), data + 1, 1000, &e) == 0);
		CHECK(b->ops->sync(b) == 0);
		struct blob_loc past = {.seg = e.seg, .off = e.off + e.len, .len = 64};
		struct blob_loc ahead[] = {e, c, a, past};
		uint8_t got[64];
		b->ops->prefetch(b, ahead, 4);
		CHECK(reads_back(b, &e, head, sizeof(head), data + 1, 1000));
		CHECK(reads_back(b, &c, head, sizeof(head), data, 1000));
		CHECK(reads_back(b, &c, head, sizeof(head), data, 1000));
		CHECK(b->ops->read(b, &past, 0, got, sizeof(got)) == -EIO);
		b->ops->prefetch(b, ahead, 3); /* the first hint's rest dropped */
		CHECK(reads_back(b, &a, head, sizeof(head), data, N));
		b->ops->prefetch(b, ahead, 0);
		CHECK(reads_back(b, &a, head, sizeof(head), data, N));
	}

	/* roll: later appends go to a new segment; the old one is listed */
	CHECK(b->ops->roll(b) == 0);
	CHECK(b->ops->append(b, head, sizeof(head), data, 5000, &d) == 0);
	CHECK(d.seg != a.seg);
	struct seg_log l = {0};
	CHECK(b->ops->segments(b, log_segment, &l) == 0);
	CHECK(l.n == 2 && !l.current[0] && l.segs[0] == a.seg && l.current[1] &&
	      l.segs[1] == d.seg);
	CHECK(l.sizes[0] >= a.len + c.len && l.held[0] <= l.sizes[0]);

	/* punch: the frame's bytes are given back, the others stay */
	uint64_t held = l.held[0];
	CHECK(b->ops->punch(b, &a) == 0);
	CHECK(reads_back(b, &c, head, sizeof(head), data, 1000));
	l = (struct seg_log){0};
	CHECK(b->ops->segments(b, log_segment, &l) == 0);
	CHECK(l.n == 2 && l.held[0] < held);

	/* remove: gone from the list; the rest reads back, also after reopen */
	CHECK(b->ops->sync(b) == 0);
	CHECK(b->ops->remove(b, a.seg) == 0);
	b->ops->forget_removed(b);
	l = (struct seg_log){0};
	CHECK(b->ops->segments(b, log_segment, &l) == 0);
	CHECK(l.n == 1 && l.segs[0] == d.seg && l.current[0]);
	CHECK(b->ops->sync(b) == 0);
	b->ops->close(b);
	CHECK(be->open_blobs(place, &b) == 0);
	CHECK(reads_back(b, &d, head, sizeof(head), data, 5000));
	b->ops->close(b);
	free(data);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(BACKENDS) / sizeof(BACKENDS[0]); i++) {
		char dir[32], place[300];
		make_store_dir(dir, place);
		int before = failures;
		const struct backend *b = &BACKENDS[i];
		if (b->start && b->start(place)) {
			failures++;
		} else {
			check_every_table(b, place);
			check_claims(b, place);
			check_partitions(b, place);
			check_kv(b, place);
			check_sessions(b, place);
			check_adds(b, place);
			check_shared_adds(b, place);
			check_zeros(b, place);
			check_counts_shared(b, place);
			check_leases(b, place);
			check_numbers(b, place);
			check_tallies(b, place);
			check_blobs(b, place);
		}
		if (b->stop)
			b->stop();
		printf("%s %s\n", failures == before ? "ok" : "FAILED", b->name);
		remove_dir(dir);
	}
	return failures ? 1 : 0;
}
