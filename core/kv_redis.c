/* kv_redis.c -- the metadata tables of backend.h, kept in Redis.
 *
 * A table's rows sit in Redis in one of two shapes (redis.h names the keys):
 *
 *  - sorted: a sorted set with one member a row, all of score 0: the key,
 *    encoded so that it holds no 0 byte, then a 0, then the value
 *    (encode_key).  ZRANGE ... BYLEX walks the members in the order of
 *    their keys (a key before its extensions: the seam's order); a key's
 *    row is the one member in [enc(key) 0, enc(key) 1).  One member a row
 *    and no hash: a directory entry costs ~140 bytes of Redis, not ~240.
 *  - bucketed, for the tables read by exact key or by one inode's prefix
 *    and walked whole only by fsck and compaction (inodes, an inode's
 *    names, chunks; see shapes): rows in small hashes, one per bucket of
 *    keys (a key's first bytes, the last of them masked), and a sorted set
 *    of the bucket names.  No sorted-set member per row: a chunk row costs
 *    ~70 bytes of listpack instead of ~250.  A bucket holds a contiguous
 *    range of keys, so a scan walks buckets in order and sorts each one's
 *    rows.
 *
 * Partitions (backend.h): a row about an inode (kv_table_ino_at) lives in
 * the inode's partition, under that partition's hash tag (redis.h); every
 * other row in partition 0.  Inode numbers sort by partition first, so a
 * scan of a table keyed by inode number walks the partitions that hold
 * rows (the store's "partitions" set, which a sync adds a partition to
 * with its first rows) one after the other, and a prefix scan of one
 * number reads one; a scan of the expiry index, ordered by time, merges
 * one walk per partition.  A sync's MULTI/EXEC writes each partition's
 * rows to its own keys.
 *
 * Steps and groups, as in kv_lmdb.c, but the buffering is ours: Redis
 * has no transaction that can read its own writes.  A step's writes go
 * to an in-memory overlay (row -> value or tombstone); step_end(0) drops
 * it, step_end(1) folds it into the group's pending overlay.  Reads look
 * at the step, then the pending group, then Redis.  sync() sends the whole
 * pending group as ONE MULTI/EXEC, so Redis (and its AOF, which records
 * the EXEC as one unit) holds every step whole or not at all, whatever
 * crashes; only a reply to EXEC clears the overlay.  close() drops what
 * was not synced, like LMDB.  On a Redis Cluster a transaction stays in
 * one slot: sync sends one MULTI/EXEC a partition, partition 0's first
 * (kv.apart, send_group), and the engine orders its steps for that.
 *
 * Below them, a cache of rows as they are in Redis (values, and tombstones
 * for rows known to be absent): what gets read from Redis and what a sync
 * wrote.  The store is locked to this process, so nobody else changes
 * them; the cache is dropped when it outgrows CACHE_MAX_BYTES and after a
 * reconnect (a server restarted with less than it acknowledged).  Scans
 * still read Redis: the cache is for point reads.
 *
 * The overlays are skip lists, one per table: point reads and writes in
 * O(log n), and a scan walks the entries >= its start in order, merged
 * with Redis's rows fetched in batches, tombstones hiding Redis rows.
 *
 * Round trips: a get or del not answered by the overlays or the cache
 * costs one (HGET, or ZRANGE BYLEX LIMIT 1); a put, a step_begin or
 * step_end cost none; a scan one per batch; a sync one (two when the
 * replica count is due for a refresh).  A sorted table's writes are a
 * script (a put must find the member holding the key's old value), run
 * inside the sync's MULTI; flagged as writing, so that Redis refuses the
 * whole transaction when out of memory, never half of it.
 *
 * The caller serialises every call (the store's meta_lock): no lock here.
 */
#include "backend.h"
#include "clock.h"
#include "grow.h"
#include "log.h"
#include "redis.h"
#include "varint.h"

#include <assert.h>
#include <endian.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SKIP_LEVELS 24      /* levels of a skip list: plenty for 4^24 rows */
#define SCAN_FIRST 16       /* rows: the first batch of a scan (most stop soon) */
#define SCAN_MAX 256        /* rows: batches double up to this */
#define SYNC_ROWS 512       /* rows: per ZADD/HSET/ZREM/HDEL of a sync */
#define WAIT_MS 5000        /* ms: how long sync waits for replicas */
#define CACHE_MAX_BYTES (64u << 20) /* bytes of rows the cache holds at most */
#define SCAN_BUCKETS_FIRST 1 /* buckets: the first batch of a bucketed scan (a
			      * scan of one inode's names stops in it) */
#define SCAN_BUCKETS_MAX 16  /* buckets: batches double up to this */
#define BUCKET_MAX 8         /* bytes: longest bucket name */
#define EMPTY_MAX 16         /* (table, inode) pairs remembered as having no rows */
#define KEY_SIZE (REDIS_NAME_MAX + 48 + BUCKET_MAX) /* bytes: longest key name + NUL */
#define NOTICE_MAX (256u << 10) /* bytes: a bigger change notice says "anything" */
/* A change notice (redis.h) starts with one of these: rows' keys follow,
 * or anything may have changed. */
#define NOTICE_HEAD "nadb-rows 1\n"
#define NOTICE_ANY "nadb-any 1\n"
#define FOLLOWER_BEAT_MS 1000   /* ms: how often a follower says it is alive... */
#define FOLLOWER_TTL_MS 5000    /* ms: ...and how long that counts (clock skew included) */
/* The highest partition a row's key can name (claims stop at KV_PART_MAX;
 * a backend keeps whatever rows it is given). */
#define PART_LAST ((uint32_t)(UINT64_MAX >> KV_PART_SHIFT))

/* A bucketed table's bucket of a key: its first LEN bytes, the last of
 * them ANDed with MASK (a key shorter than LEN is a bucket of its own).
 * len 0: a sorted table.  Buckets are ordered as their keys are. */
struct shape {
	uint8_t len, mask;
};
static const struct shape shapes[KV_NTABLES] = {
	[KV_INODES] = {8, 0x80}, /* 128 inode numbers a bucket */
	[KV_LINKS] = {8, 0x80},  /* by inode, as inodes: ~30 bytes a name in a listpack */
	[KV_CHUNKS] = {2, 0xf0}, /* 4,096 buckets of hashes: ~24 rows a bucket at
				    100,000 chunks, small enough for a listpack */
};

static bool bucketed(enum kv_table t)
{
	return shapes[t].len > 0;
}

/* KEY's bucket into OUT (BUCKET_MAX bytes); its length. */
static size_t bucket_of(enum kv_table t, const void *key, size_t klen, uint8_t *out)
{
	const struct shape *s = &shapes[t];
	assert(s->len > 0 && s->len <= BUCKET_MAX);
	if (klen < s->len) {
		/* unmasked, so that it sorts before every longer key's bucket
		 * it is a prefix of, and after every smaller one */
		memcpy(out, key, klen);
		return klen;
	}
	memcpy(out, key, s->len);
	out[s->len - 1] &= s->mask;
	return s->len;
}

/* The partition of the key KEY (KLEN bytes) would start, with its missing
 * bytes up to an inode number's 8 all FILL. */
static uint32_t part_padded(const void *key, size_t klen, uint8_t fill)
{
	uint8_t b[8];
	memset(b, fill, sizeof(b));
	memcpy(b, key, klen < 8 ? klen : 8);
	uint64_t ino;
	memcpy(&ino, b, 8);
	return kv_partition(be64toh(ino));
}

/* The partition KEY's row of T lives in (backend.h): its inode's, for a
 * table whose rows are about an inode (kv_table_ino_at); 0 for the
 * others.  (A key cut short of its number, which the engine never writes,
 * goes with the numbers it is a prefix of, so that in a table keyed by
 * inode number partition order stays key order.) */
static uint32_t row_part(enum kv_table t, const void *key, size_t klen)
{
	int at = kv_table_ino_at(t);
	if (at < 0 || klen < (size_t)at)
		return 0;
	return part_padded((const uint8_t *)key + at, klen - (size_t)at, 0);
}

/* Are T's rows spread over partitions? */
static bool partitioned(enum kv_table t)
{
	return kv_table_ino_at(t) >= 0;
}

/* ---- a sorted table's members ------------------------------------------------
 *
 * member = enc(key) 0 value, where enc maps each byte b < 0xfe to b + 1
 * and 0xfe, 0xff to 0xff 1, 0xff 2.  No 0 inside enc(key), so the first 0
 * ends the key; enc keeps byte order, and a key's 0 sorts below whatever
 * byte a longer key goes on with.  Only 0xfe and 0xff grow: the big-endian
 * inode numbers keys start with stay 8 bytes. */

static size_t encoded_len(const uint8_t *key, size_t klen)
{
	size_t n = klen;
	for (size_t i = 0; i < klen; i++)
		n += key[i] >= 0xfe;
	return n;
}

/* enc(KEY) 0 into OUT (encoded_len + 1 bytes); the length. */
static size_t encode_key(const uint8_t *key, size_t klen, uint8_t *out)
{
	size_t n = 0;
	for (size_t i = 0; i < klen; i++) {
		if (key[i] < 0xfe) {
			out[n++] = key[i] + 1;
		} else {
			out[n++] = 0xff;
			out[n++] = key[i] - 0xfd;
		}
	}
	out[n++] = 0;
	return n;
}

/* Member M's key, decoded into KEY (room for MLEN bytes), and its value
 * (inside M); false if M is not a member we wrote. */
static bool decode_member(const uint8_t *m, size_t mlen, uint8_t *key, size_t *klen,
			  const uint8_t **val, size_t *vlen)
{
	size_t n = 0, i = 0;
	while (i < mlen && m[i] != 0) {
		if (m[i] < 0xff) {
			key[n++] = m[i++] - 1;
		} else if (i + 1 < mlen && (m[i + 1] == 1 || m[i + 1] == 2)) {
			key[n++] = m[i + 1] + 0xfd;
			i += 2;
		} else {
			return false;
		}
	}
	if (i == mlen)
		return false;
	*klen = n;
	*val = m + i + 1;
	*vlen = mlen - i - 1;
	return true;
}

/* ---- the overlay: skip lists of rows ---------------------------------------- */

/* How a row of the overlays is to be written (kv_ops.add): its value as
 * it is, or its DELTA added to the count of the row Redis holds (nothing
 * if Redis holds none), or the same but its INIT put where Redis holds
 * none (which may differ from the value read here: chunk.c, "Freeing").
 * Rows of the cache are all ROW_SET. */
enum row_how { ROW_SET, ROW_ADD, ROW_CREATE };

struct row {
	void *key, *val; /* val: NULL for a tombstone (a deleted row) */
	size_t klen, vlen;
	/* An add's: its delta, and the part of it a sync attempt whose fate is
	 * not known yet carried (syncs run once: settle_rows), if CARRIED */
	int64_t delta, sent;
	/* A create's (ROW_CREATE): the value put where Redis holds no row,
	 * counting the create's delta and the adds after it (not those
	 * before: they were to a row that is gone if this is put), malloc'd
	 * with VARINT_MAX bytes spare; else NULL */
	void *init;
	size_t ilen;
	uint8_t how; /* enum row_how */
	bool carried;
	bool init_carried; /* ...and that attempt carried INIT too */
	/* An attempt carried an INIT other than the value read here: Redis
	 * holds one or the other after it, so the cache must not say */
	bool ask;
	int height;
	struct row *next[]; /* height of them */
};

struct overlay {
	struct row *head[KV_NTABLES]; /* SKIP_LEVELS next pointers, no key */
	size_t rows;
	size_t bytes; /* of keys and values, roughly what the rows hold */
	uint64_t rng; /* xorshift state for row heights */
};

/* memcmp order, a shorter key before its extensions. */
static int compare_keys(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int overlay_init(struct overlay *o, uint64_t seed)
{
	memset(o, 0, sizeof(*o));
	o->rng = seed | 1;
	for (int t = 0; t < KV_NTABLES; t++) {
		o->head[t] = calloc(1, sizeof(struct row) + SKIP_LEVELS * sizeof(struct row *));
		if (!o->head[t])
			return -ENOMEM;
		o->head[t]->height = SKIP_LEVELS;
	}
	return 0;
}

static void drop_init(struct row *r)
{
	free(r->init);
	r->init = NULL;
	r->ilen = 0;
}

/* A create's init counting DELTA more (between 0 and KV_COUNT_MAX), in
 * place. */
static void init_count(struct row *r, int64_t delta)
{
	assert(r->how == ROW_CREATE && r->init);
	const uint8_t *p = r->init, *end = p + r->ilen;
	uint64_t was;
	bool counted = varint_get(&p, end, &was);
	assert(counted && was <= KV_COUNT_MAX); /* kvr_add checked it */
	(void)counted;
	size_t off = (size_t)(p - (const uint8_t *)r->init), rest = (size_t)(end - p);
	int64_t c = (int64_t)was + delta;
	uint8_t head[VARINT_MAX];
	size_t n = varint_put(head, c <= 0 ? 0 : c >= (int64_t)KV_COUNT_MAX ? KV_COUNT_MAX
									    : (uint64_t)c);
	memmove((uint8_t *)r->init + n, (uint8_t *)r->init + off, rest);
	memcpy(r->init, head, n);
	r->ilen = n + rest;
}

static void free_rows_of(struct row *head)
{
	struct row *r = head->next[0];
	while (r) {
		struct row *next = r->next[0];
		free(r->val);
		free(r->init);
		free(r);
		r = next;
	}
	memset(head->next, 0, SKIP_LEVELS * sizeof(struct row *));
}

static void overlay_clear(struct overlay *o)
{
	for (int t = 0; t < KV_NTABLES; t++)
		if (o->head[t])
			free_rows_of(o->head[t]);
	o->rows = 0;
	o->bytes = 0;
}

static void overlay_free(struct overlay *o)
{
	overlay_clear(o);
	for (int t = 0; t < KV_NTABLES; t++)
		free(o->head[t]);
}

/* A height with P(h) = 4^-(h-1). */
static int random_height(struct overlay *o)
{
	uint64_t x = o->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	o->rng = x;
	int h = 1;
	while (h < SKIP_LEVELS && (x & 3) == 0) {
		h++;
		x >>= 2;
	}
	return h;
}

/* The first row of table T >= KEY; with BEFORE, the last row < KEY at
 * every level (where a new row is linked in). */
static struct row *first_at_or_after(struct overlay *o, enum kv_table t, const void *key,
				     size_t klen, struct row **before)
{
	struct row *r = o->head[t];
	for (int l = SKIP_LEVELS - 1; l >= 0; l--) {
		while (r->next[l] &&
		       compare_keys(r->next[l]->key, r->next[l]->klen, key, klen) < 0)
			r = r->next[l];
		if (before)
			before[l] = r;
	}
	return r->next[0];
}

static struct row *find_row(struct overlay *o, enum kv_table t, const void *key, size_t klen)
{
	struct row *r = first_at_or_after(o, t, key, klen, NULL);
	return r && !compare_keys(r->key, r->klen, key, klen) ? r : NULL;
}

/* Set KEY of T to the VLEN bytes at VAL (a tombstone if VAL is NULL),
 * taking VAL over (the caller allocated it). */
static int set_row_owned(struct overlay *o, enum kv_table t, const void *key, size_t klen,
			 void *val, size_t vlen)
{
	struct row *before[SKIP_LEVELS];
	struct row *r = first_at_or_after(o, t, key, klen, before);
	if (r && !compare_keys(r->key, r->klen, key, klen)) {
		free(r->val);
		o->bytes += vlen - r->vlen;
		r->val = val;
		r->vlen = vlen;
		r->delta = r->sent = 0;
		drop_init(r);
		r->how = ROW_SET;
		r->carried = r->init_carried = r->ask = false;
		return 0;
	}
	int h = random_height(o);
	r = malloc(sizeof(*r) + (size_t)h * sizeof(r->next[0]) + klen + 1);
	if (!r)
		return -ENOMEM;
	r->key = (char *)&r->next[h];
	memcpy(r->key, key, klen);
	r->klen = klen;
	r->val = val;
	r->vlen = vlen;
	r->delta = r->sent = 0;
	r->init = NULL;
	r->ilen = 0;
	r->how = ROW_SET;
	r->carried = r->init_carried = r->ask = false;
	r->height = h;
	for (int l = 0; l < h; l++) {
		r->next[l] = before[l]->next[l];
		before[l]->next[l] = r;
	}
	o->rows++;
	o->bytes += klen + vlen;
	return 0;
}

/* Take KEY of T out of O, if O holds it. */
static void remove_row(struct overlay *o, enum kv_table t, const void *key, size_t klen)
{
	struct row *before[SKIP_LEVELS];
	struct row *r = first_at_or_after(o, t, key, klen, before);
	if (!r || compare_keys(r->key, r->klen, key, klen))
		return;
	for (int l = 0; l < r->height; l++)
		before[l]->next[l] = r->next[l];
	o->rows--;
	o->bytes -= r->klen + r->vlen;
	free(r->val);
	free(r->init);
	free(r);
}

/* Set a copy of the value (VAL NULL: a tombstone). */
static int set_row(struct overlay *o, enum kv_table t, const void *key, size_t klen,
		   const void *val, size_t vlen)
{
	void *copy = NULL;
	if (val) {
		copy = malloc(vlen ? vlen : 1); /* an empty value is not a tombstone */
		if (!copy)
			return -ENOMEM;
		memcpy(copy, val, vlen);
	}
	int rc = set_row_owned(o, t, key, klen, copy, vlen);
	if (rc)
		free(copy);
	return rc;
}

/* How an add of DELTA (HOW: ROW_ADD, or ROW_CREATE with INIT, taken
 * over) over OLD, the row the overlay held (NULL: none; its init, if
 * any, taken over), is to be written: an add over a value set is a value
 * set; adds over adds add up, and stay a create if either was (the
 * older's init and attempt's share stay). */
static void merge_add(struct row *r, struct row *old, uint8_t how, int64_t delta, void *init,
		      size_t ilen)
{
	r->how = how;
	r->delta = delta;
	r->sent = 0;
	r->carried = r->init_carried = false;
	r->ask = old && old->ask;
	if (old && old->how == ROW_SET) {
		r->how = ROW_SET;
		r->delta = 0;
	} else if (old) {
		r->delta += old->delta;
		r->sent = old->sent;
		r->carried = old->carried;
		r->how = old->how == ROW_CREATE ? ROW_CREATE : how;
	}
	if (old && old->init) { /* the older create's, with this add */
		free(init);
		r->init = old->init, r->ilen = old->ilen;
		r->init_carried = old->init_carried;
		old->init = NULL;
		init_count(r, delta);
	} else if (r->how == ROW_CREATE) { /* this one's (counting DELTA) */
		r->init = init, r->ilen = ilen;
	} else {
		free(init);
	}
}

/* Set KEY of T in O to the VLEN bytes at VAL, made by an add of DELTA
 * (HOW, with INIT for a create) over what O held; *OUT: the row.  VAL
 * and INIT are taken over, unless this fails. */
static int set_row_added(struct overlay *o, enum kv_table t, const void *key, size_t klen,
			 void *val, size_t vlen, uint8_t how, int64_t delta, void *init,
			 size_t ilen, struct row **out)
{
	struct row old, *prev = find_row(o, t, key, klen);
	if (prev) { /* a row there is replaced in place (no failure) */
		old = *prev;       /* its value is freed below... */
		prev->init = NULL; /* ...its init, kept in OLD, is not */
		prev = &old;
	}
	int rc = set_row_owned(o, t, key, klen, val, vlen);
	if (rc)
		return rc;
	*out = find_row(o, t, key, klen);
	merge_add(*out, prev, how, delta, init, ilen);
	return 0;
}

/* Move every row of FROM into INTO (FROM's win, its adds added to
 * INTO's), leaving FROM empty.  VALUES: INTO is the cache, where a row
 * is its value -- but for a create over a row read here with an init of
 * its own (chunk.c, "Freeing"; struct row's ask), which leaves Redis
 * holding one or the other: the cache forgets it, and the next read
 * asks; and so it does with the rows of tables FORGET, and those KEEPS
 * (if not NULL) says no to. */
static int fold_into(struct overlay *into, struct overlay *from, bool values,
		     uint32_t forget, bool (*keeps)(const void *ctx, enum kv_table t,
						   const void *key, size_t klen),
		     const void *ctx)
{
	int rc = 0;
	for (int t = 0; t < KV_NTABLES; t++) {
		for (struct row *r = from->head[t]->next[0]; r; r = r->next[0]) {
			struct row *added;
			if (values && (r->ask || (forget & 1u << t) ||
				       (keeps && !keeps(ctx, t, r->key, r->klen)))) {
				remove_row(into, t, r->key, r->klen);
				continue;
			}
			bool add = !values && r->how != ROW_SET;
			if (!rc && !(add ? set_row_added(into, t, r->key, r->klen, r->val, r->vlen,
							 r->how, r->delta, r->init, r->ilen, &added)
					 : set_row_owned(into, t, r->key, r->klen, r->val, r->vlen)))
				r->val = NULL, r->init = add ? NULL : r->init; /* now INTO's */
			else
				rc = -ENOMEM;
		}
	}
	overlay_clear(from);
	return rc;
}

/* ---- the backend ------------------------------------------------------------ */

/* What writes not in Redis's tally yet change it by (kv_ops.tally: a read
 * adds them), as this process sees the rows it writes: the totals, and
 * each group's size. */
struct weights {
	int64_t rows, size, raw;
	struct group_weight {
		uint32_t group;
		int64_t size;
	} *groups;
	size_t ngroups, cap;
};

struct kv_redis {
	struct kv kv;
	struct redis_conn *conn;
	struct overlay step;    /* the open step's writes */
	struct overlay pending; /* completed steps not synced yet */
	struct overlay cache;   /* rows as they are in Redis */
	uint64_t cache_reconnects; /* the connection's reconnects it was made with */
	/* The cache may be wrong (a reconnect) or could not take a row: it is
	 * not used, and is emptied at the next put, del, add, step_end or sync
	 * (rows handed out by get stay valid until then). */
	bool cache_stale;
	struct row spare; /* a row read while the cache is stale */
	bool in_step;
	uint64_t unsynced;
	/* Replies whose bytes get and scan handed out: freed at the next put,
	 * del, add, step_end or sync, as backend.h promises. */
	redisReply **held;
	size_t nheld, held_cap;
	/* Scans under way (a scan's callback may put, del or scan again, as
	 * it may on LMDB): their batches stay held until the last ends. */
	unsigned scanning;
	/* The partitions holding rows in Redis (the store's "partitions" set,
	 * which a sync adds a partition to with its first rows), in order, 0
	 * always first: scans of a table keyed by inode number walk these.
	 * The store is locked to this process, so only our syncs add to it. */
	uint32_t *parts;
	size_t nparts, parts_cap;
	bool parts_unknown; /* k->parts may be wrong: load_parts before use */
	/* Inode numbers we claimed last that no synced group has named:
	 * [fresh_first, fresh_end).  Nobody else writes rows under them
	 * (kv_table_keyed_by_ino), so Redis holds none, and scan_prefix of
	 * one of them needs no round trip: a new key's lookups of its tags,
	 * names and pending chunks are answered here. */
	uint64_t fresh_first, fresh_end;
	/* Inodes a scan found no rows of in a table, in Redis, since the last
	 * sync (which may write some) or reconnect: a key's tags, xattrs and
	 * names are scanned for several times in one unlink, and most have
	 * none.  A ring of the last EMPTY_MAX. */
	struct empty_prefix {
		enum kv_table t;
		uint64_t ino;
	} empty[EMPTY_MAX];
	unsigned nempty, empty_next;
	uint64_t empty_reconnects; /* the connection's reconnects they hold for */
	/* The partitions the open step writes: the first one's number, and
	 * whether it wrote another (a step a cluster could not send to one
	 * node).  With NADB_CHECK_STEPS set, each such step is logged: what
	 * the tests use to show which operations stay in one partition. */
	uint32_t step_part;
	bool step_wrote, step_spans, check_steps;
	unsigned min_replicas; /* kv_redis_set_min_replicas */
	/* The store lock's generation this writer holds (kv_redis_set_fence;
	 * "0": none), as text: every write of a sync is fenced by it. */
	char fence_gen[24];
	/* The partitions this session leases (kvr_lease), sorted, each with
	 * the generation its take raised the partition's fence to, as text
	 * (its syncs' fences are checked against it).  leasing: it took one:
	 * from then on its syncs write only partitions it leases (and 0), and
	 * it caches rows of those only (cacheable). */
	struct held_lease {
		uint32_t part;
		char gen[24];
	} *leases;
	size_t nleases, leases_cap;
	bool leasing;
	/* beat_strict: set with leasing, for the beat (another thread): a
	 * session that ran out is not counted in again.  leases_lapsed: the
	 * beat found it had: the others may have taken its leases over and
	 * settled its rows (its pending chunks, drops, orphans), so it is
	 * over (lost_leases_forgotten): its leases count as lost, and every
	 * sync and take is refused (-ENOLCK) until the store is opened anew
	 * with a new session.  session_over: that was seen. */
	atomic_bool beat_strict, leases_lapsed;
	bool session_over;
	/* A writer has not looked yet whether its tallies are whole
	 * (tallies_whole): it does once the fences are raised, or at its
	 * first sync if it sets none, so that no late sync of an earlier
	 * writer lands in the middle of weighing them. */
	bool tallies_unchecked;
	size_t fence_gen_len;
	/* Partitions whose last transaction fewer than min_replicas replicas
	 * confirmed: committed on their primary, and every sync fails until
	 * a WAIT there hears from enough of them (confirm_waits). */
	uint32_t *unconfirmed;
	size_t nunconfirmed, unconfirmed_cap;
	/* What the open step, the group and the attempt whose fate is not
	 * known yet (unsettled; sent by a sync, with every p0 row) change the
	 * counted tables' tally by (KV_CHUNKS is the only one, all in p0). */
	struct weights step_w, pending_w, carried_w;
	bool weights_lost; /* out of memory moving them: tally guesses no more */
	/* Syncs run once: the number of the last attempt, and one whose
	 * transaction in partition unsettled_part (on one server, all of it)
	 * may or may not have run (0: none). */
	uint64_t sync_attempt, unsettled;
	uint32_t unsettled_part;
	unsigned fault; /* kv_redis_inject_fault's: the next transaction's, settle's */

	/* Several processes on the store (backend.h: publish, follow). */
	/* A follower: another process writes the store, so nothing read is
	 * kept (no cache, no known-empty inodes) and the partitions are read
	 * again after each notice (parts_stale, set by the follow thread). */
	bool follower;
	atomic_bool parts_stale;
	/* A writer with followers: the tables whose rows' keys each sync
	 * publishes (bit 1 << table); 0: none, nobody listens.  Set by
	 * publish, outside the serialisation; publish_refused: the server
	 * refused a PUBLISH (an ACL), so nothing is published any more. */
	_Atomic uint32_t publish_mask;
	atomic_bool publish_refused;
	/* publish turned the mask on: the next sync first tells followers
	 * that anything may have changed (a sync under way when the mask
	 * changed may have named nothing); under the serialisation, so after
	 * every such sync. */
	atomic_bool announce;
	struct redis_conn *counter; /* publish's own connection */
	/* The follow thread's own: its subscriber, its connection for the
	 * heartbeat, when it beat last and last did so successfully
	 * (monotonic ms), and its name in the store's "followers" set. */
	struct redis_conn *sub, *beat;
	uint64_t beat_ms, beat_ok_ms;
	char member[128];
	/* A writer's session (kv.session; "sessions"): beat's connection and
	 * the live sessions its last beat saw (sorted), beat's thread's. */
	struct redis_conn *beat_conn;
	uint32_t *beat_live;
	size_t nbeat_live;
	/* Other sessions are alive (set by the last beat, on its thread):
	 * the counts of a counted table's rows may move under ours, so none
	 * is cached (uncached_tables); others_seen is what the calls act on, so
	 * that the cache's counted rows go when others appear. */
	atomic_bool others_write;
	bool others_seen;
	/* ...or were at some call since the last sync: the group's counted
	 * rows were built on reads then, so the sync keeps none in the cache
	 * even if the others are gone by then */
	bool others_since_sync;
};

static void release_held(struct kv_redis *k)
{
	if (k->scanning)
		return;
	if (k->cache_stale) {
		overlay_clear(&k->cache);
		k->cache_stale = false;
	}
	for (size_t i = 0; i < k->nheld; i++)
		freeReplyObject(k->held[i]);
	k->nheld = 0;
}

/* Keep R until release_held; on failure R is freed and -ENOMEM. */
static int hold_reply(struct kv_redis *k, redisReply *r)
{
	if (ARRAY_GROW(k->held, k->nheld, k->held_cap)) {
		freeReplyObject(r);
		return -ENOMEM;
	}
	k->held[k->nheld++] = r;
	return 0;
}

/* The overlay writes go to: the step if one is open, else the group. */
static struct overlay *writes_of(struct kv_redis *k)
{
	return k->in_step ? &k->step : &k->pending;
}

/* The row the overlays hold for KEY (maybe a tombstone), or NULL: ask Redis. */
static struct row *overlay_row(struct kv_redis *k, enum kv_table t, const void *key,
			       size_t klen)
{
	struct row *r = k->in_step ? find_row(&k->step, t, key, klen) : NULL;
	return r ? r : find_row(&k->pending, t, key, klen);
}

/* ---- weights not synced (kv_ops.tally) ---------------------------------- */

/* Room in W for two groups more (a write moves a row between two), so
 * that weighing it cannot fail once it is made. */
static int weights_room(struct weights *w)
{
	return grow_array(&w->groups, &w->cap, w->ngroups + 2, sizeof(*w->groups));
}

static void weights_add_group(struct weights *w, uint32_t group, int64_t size)
{
	for (size_t i = 0; i < w->ngroups; i++)
		if (w->groups[i].group == group) {
			w->groups[i].size += size;
			return;
		}
	assert(w->ngroups < w->cap); /* weights_room */
	w->groups[w->ngroups++] = (struct group_weight){group, size};
}

/* What VAL (VLEN bytes; NULL: no row) weighs, into *KW: false if nothing. */
static bool weight_of(const void *val, size_t vlen, struct kv_weight *kw)
{
	return val && kv_weight_of(val, vlen, kw) == 1;
}

/* KW (if WEIGHS) added into W SIGN times. */
static void weigh(struct weights *w, const struct kv_weight *kw, bool weighs, int sign)
{
	if (!weighs)
		return;
	w->rows += sign;
	w->size += sign * (int64_t)kw->size;
	w->raw += sign * (int64_t)kw->raw;
	weights_add_group(w, kw->group, sign * (int64_t)kw->size);
}

/* FROM added into INTO (room made first), then emptied. */
static int weights_move(struct weights *into, struct weights *from)
{
	if (grow_array(&into->groups, &into->cap, into->ngroups + from->ngroups,
		       sizeof(*into->groups)))
		return -ENOMEM;
	into->rows += from->rows, into->size += from->size, into->raw += from->raw;
	for (size_t i = 0; i < from->ngroups; i++)
		weights_add_group(into, from->groups[i].group, from->groups[i].size);
	from->rows = from->size = from->raw = 0;
	from->ngroups = 0;
	return 0;
}

static void weights_clear(struct weights *w)
{
	w->rows = w->size = w->raw = 0;
	w->ngroups = 0;
}

/* The weights a write now goes to: the step's, or the group's. */
static struct weights *weights_of(struct kv_redis *k)
{
	return k->in_step ? &k->step_w : &k->pending_w;
}

static int kvr_step_begin(struct kv *kv)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	assert(!k->in_step && k->step.rows == 0); /* steps do not nest */
	k->in_step = true;
	k->step_wrote = k->step_spans = false;
	return 0;
}

static int kvr_step_end(struct kv *kv, int commit)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	release_held(k);
	if (!k->in_step)
		return 0;
	k->in_step = false;
	if (!commit) {
		overlay_clear(&k->step);
		weights_clear(&k->step_w);
		return 0;
	}
	if (k->step_spans)
		nadb_log("redis %s: a step wrote rows of more than one partition (partition %u "
			 "and another)", redis_conn_name(k->conn), k->step_part);
	if (weights_move(&k->pending_w, &k->step_w)) { /* the rows matter more */
		k->weights_lost = true;
		weights_clear(&k->step_w);
	}
	int rc = fold_into(&k->pending, &k->step, false, 0, NULL, NULL);
	if (rc) {
		/* The group now holds part of a step: it must never be synced. */
		nadb_log("redis %s: out of memory keeping a step; dropping the "
			 "unsynced group", redis_conn_name(k->conn));
		overlay_clear(&k->pending);
		weights_clear(&k->pending_w);
		k->weights_lost = true; /* an attempt's, settled later, has no rows */
		k->unsynced = 0;
		return rc;
	}
	k->unsynced++;
	return 0;
}

/* The cache, or NULL while it is stale (since a reconnect, or a row it
 * could not take: it must never say what Redis does not). */
static void lost_leases_forgotten(struct kv_redis *k);

static struct overlay *cache_of(struct kv_redis *k)
{
	if (k->follower) /* another process writes: Redis says, every time */
		return NULL;
	lost_leases_forgotten(k);
	if (k->cache_reconnects != redis_conn_reconnects(k->conn)) {
		k->cache_reconnects = redis_conn_reconnects(k->conn);
		k->cache_stale = true;
	}
	bool others = atomic_load(&k->others_write);
	if (others && !k->others_seen) /* its counted rows may be others' now */
		k->cache_stale = true;
	k->others_seen = others;
	k->others_since_sync |= others;
	return k->cache_stale ? NULL : &k->cache;
}

/* The tables whose rows the cache keeps none of now (a bit each): the
 * counted ones while other sessions write (cache_of says). */
static uint32_t uncached_tables(const struct kv_redis *k)
{
	uint32_t mask = 0;
	for (int t = 0; (k->others_seen || k->others_since_sync) && t < KV_NTABLES; t++)
		if (kv_table_counted((enum kv_table)t))
			mask |= 1u << t;
	return mask;
}

static bool cacheable(const struct kv_redis *k, enum kv_table t, const void *key, size_t klen);

/* Remember what Redis said of KEY (VAL NULL: absent). */
static void cache_row(struct kv_redis *k, enum kv_table t, const void *key, size_t klen,
		      const void *val, size_t vlen)
{
	struct overlay *c = cache_of(k);
	if (c && !(uncached_tables(k) & 1u << t) && cacheable(k, t, key, klen) &&
	    set_row(c, t, key, klen, val, vlen))
		k->cache_stale = true;
}

/* T's sorted set in partition P (redis.h names it) into BUF (KEY_SIZE
 * bytes); its length. */
static size_t zset_name(const struct kv_redis *k, enum kv_table t, uint32_t p, char *buf)
{
	char what[40];
	snprintf(what, sizeof(what), "t:%s:z", kv_table_name(t));
	return redis_key(k->conn, p, what, buf, KEY_SIZE);
}

/* Counted table T's sorted set of rows at count 0 in partition P, scored
 * by when they got there (server clock, ms: free_zeros), into BUF
 * (KEY_SIZE bytes); its length. */
static size_t zeros_name(const struct kv_redis *k, enum kv_table t, uint32_t p, char *buf)
{
	char what[40];
	snprintf(what, sizeof(what), "t:%s:zeros", kv_table_name(t));
	return redis_key(k->conn, p, what, buf, KEY_SIZE);
}

/* Counted table T's tally (kv_ops.tally, tallied) in partition P, into
 * BUF (KEY_SIZE bytes); its length. */
static size_t tally_name(const struct kv_redis *k, enum kv_table t, uint32_t p, char *buf)
{
	char what[40];
	snprintf(what, sizeof(what), "t:%s:tally", kv_table_name(t));
	return redis_key(k->conn, p, what, buf, KEY_SIZE);
}

/* The prefix of bucketed table T's bucket hashes in partition P. */
static size_t hash_prefix(const struct kv_redis *k, enum kv_table t, uint32_t p, char *buf)
{
	char what[40];
	snprintf(what, sizeof(what), "t:%s:b:", kv_table_name(t));
	return redis_key(k->conn, p, what, buf, KEY_SIZE);
}

/* The name of KEY's bucket's hash into BUF (KEY_SIZE bytes); its length.
 * The bucket's name is its last bytes from *PRE on. */
static size_t bucket_key(const struct kv_redis *k, enum kv_table t, const void *key,
			 size_t klen, char *buf, size_t *pre)
{
	*pre = hash_prefix(k, t, row_part(t, key, klen), buf);
	size_t n = bucket_of(t, key, klen, (uint8_t *)buf + *pre);
	buf[*pre + n] = 0;
	return *pre + n;
}

/* Ask Redis for KEY's row: *OUT the reply (the caller frees it), *VAL
 * the value inside it, or NULL when the row is absent. */
static int read_row(struct kv_redis *k, enum kv_table t, const void *key, size_t klen,
		    redisReply **out, const char **val, size_t *vlen)
{
	*val = NULL;
	*vlen = 0;
	if (bucketed(t)) {
		char name[KEY_SIZE];
		size_t pre;
		const char *argv[] = {"HGET", name, key};
		size_t lens[] = {4, bucket_key(k, t, key, klen, name, &pre), klen};
		int rc = redis_run_in(k->conn, row_part(t, key, klen), "reading a row", 3, argv,
				      lens, out);
		if (!rc && (*out)->type == REDIS_REPLY_STRING)
			*val = (*out)->str, *vlen = (*out)->len;
		return rc;
	}
	/* the member in [enc(key) 0, enc(key) 1) */
	size_t n = encoded_len(key, klen) + 2;
	char *lo = malloc(n), *hi = malloc(n);
	if (!lo || !hi) {
		free(lo);
		free(hi);
		return -ENOMEM;
	}
	lo[0] = '[';
	encode_key(key, klen, (uint8_t *)lo + 1);
	memcpy(hi, lo, n);
	hi[0] = '(';
	hi[n - 1] = 1;
	char zset[KEY_SIZE];
	const char *argv[] = {"ZRANGE", zset, lo, hi, "BYLEX", "LIMIT", "0", "1"};
	uint32_t p = row_part(t, key, klen);
	size_t lens[] = {6, zset_name(k, t, p, zset), n, n, 5, 5, 1, 1};
	int rc = redis_run_in(k->conn, p, "reading a row", 8, argv, lens, out);
	free(lo);
	free(hi);
	if (rc)
		return rc;
	/* one member at most, holding at least enc(key) 0; its value after */
	const redisReply *r = *out;
	const redisReply *m = r->type == REDIS_REPLY_ARRAY && r->elements == 1 ? r->element[0] : NULL;
	if (r->type != REDIS_REPLY_ARRAY || r->elements > 1 ||
	    (m && (m->type != REDIS_REPLY_STRING || m->len < n - 1))) {
		rc = redis_reply_error(k->conn, "reading a row", m ? m : r);
		freeReplyObject(*out);
		*out = NULL;
		return rc;
	}
	if (m) {
		*val = m->str + n - 1;
		*vlen = m->len - (n - 1);
	}
	return 0;
}

/* KEY's row from the overlays, the cache or Redis (then cached). */
static int find_anywhere(struct kv_redis *k, enum kv_table t, const void *key, size_t klen,
			 struct row **out)
{
	struct row *r = overlay_row(k, t, key, klen);
	struct overlay *c = cache_of(k);
	if (!r && c && cacheable(k, t, key, klen))
		r = find_row(c, t, key, klen);
	if (r) {
		*out = r;
		return 0;
	}
	redisReply *rep;
	const char *val;
	size_t vlen;
	int rc = read_row(k, t, key, klen, &rep, &val, &vlen);
	if (rc)
		return rc;
	cache_row(k, t, key, klen, val, vlen);
	c = cache_of(k);
	r = c ? find_row(c, t, key, klen) : NULL;
	if (!r) { /* no cache to keep it in: the reply holds it until release */
		k->spare = (struct row){.klen = klen};
		if (val && (rc = hold_reply(k, rep)))
			return rc;
		if (val)
			k->spare.val = (void *)val, k->spare.vlen = vlen;
		else
			freeReplyObject(rep);
		*out = &k->spare;
		return 0;
	}
	freeReplyObject(rep);
	*out = r;
	return 0;
}

static int kvr_get(struct kv *kv, enum kv_table t, const void *key, size_t klen,
		   struct kv_val *out)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	struct row *r;
	int rc = find_anywhere(k, t, key, klen, &r);
	if (rc)
		return rc;
	if (!r->val)
		return -ENOENT;
	/* The row stays until the next put, del, add, step_end or sync. */
	out->data = r->val;
	out->len = r->vlen;
	return 0;
}

/* A row of T was buffered (writes_of): counted in the group for a write
 * outside any step, else its partition noted. */
static void note_write(struct kv_redis *k, enum kv_table t, const void *key, size_t klen)
{
	if (!k->in_step) {
		k->unsynced++;
	} else if (k->check_steps) {
		uint32_t p = row_part(t, key, klen);
		k->step_spans |= k->step_wrote && p != k->step_part;
		k->step_part = k->step_wrote ? k->step_part : p;
		k->step_wrote = true;
	}
}

/* Buffer a put (VAL NULL: a delete) in the step, or in the group for a
 * write outside any step. */
static int buffer_write(struct kv_redis *k, enum kv_table t, const void *key, size_t klen,
			const void *val, size_t vlen)
{
	int rc = set_row(writes_of(k), t, key, klen, val, vlen);
	if (rc) {
		nadb_log("redis %s: out of memory buffering a %s", redis_conn_name(k->conn),
			 val ? "write" : "delete");
		return rc;
	}
	note_write(k, t, key, klen);
	return 0;
}

/* A write of counted table T's row KEY making it VAL (NULL: deleted),
 * weighed (kv_ops.tally) against what the row holds as read here. */
static int weighed_write(struct kv_redis *k, enum kv_table t, const void *key, size_t klen,
			 const void *val, size_t vlen)
{
	struct row *r;
	struct weights *w = weights_of(k);
	int rc = find_anywhere(k, t, key, klen, &r);
	if (!rc && !r->val && !val)
		return -ENOENT;
	struct kv_weight was, now;
	bool weighed = !rc && weight_of(r->val, r->vlen, &was); /* R goes with the write */
	if (!rc && !(rc = weights_room(w)) && !(rc = buffer_write(k, t, key, klen, val, vlen))) {
		weigh(w, &was, weighed, -1);
		weigh(w, &now, weight_of(val, vlen, &now), +1);
	}
	return rc;
}

static int kvr_put(struct kv *kv, enum kv_table t, const void *key, size_t klen,
		   const void *val, size_t vlen)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	release_held(k);
	if (kv_table_counted(t))
		return weighed_write(k, t, key, klen, val ? val : "", vlen);
	return buffer_write(k, t, key, klen, val ? val : "", vlen);
}

static int kvr_del(struct kv *kv, enum kv_table t, const void *key, size_t klen)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	release_held(k);
	if (kv_table_counted(t))
		return weighed_write(k, t, key, klen, NULL, 0);
	struct row *r;
	int rc = find_anywhere(k, t, key, klen, &r);
	if (rc)
		return rc;
	if (!r->val)
		return -ENOENT;
	return buffer_write(k, t, key, klen, NULL, 0);
}

/* An add is buffered as the value it makes, which reads see, and as what
 * the sync is to do in Redis (struct row's how): add the delta there,
 * where another process's adds may have landed meanwhile.  Only bucketed
 * tables take adds (their rows are hash fields the sync's script reads). */
static int kvr_add(struct kv *kv, enum kv_table t, const void *key, size_t klen,
		   int64_t delta, const void *init, size_t ilen)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	assert(bucketed(t) && !k->follower);
	release_held(k);
	struct row *r;
	int rc = find_anywhere(k, t, key, klen, &r);
	if (rc)
		return rc;
	bool create = !r->val;
	if (create && !init)
		return -ENOENT;
	struct kv_weight was, now;
	bool weighed = weight_of(r->val, r->vlen, &was); /* R goes with the write */
	struct weights *w = weights_of(k);
	if ((rc = weights_room(w)))
		return rc;
	size_t vlen = create ? ilen : r->vlen + VARINT_MAX;
	uint8_t *val = malloc(vlen ? vlen : 1);
	if (!val)
		return -ENOMEM;
	if (create)
		memcpy(val, init, ilen);
	else
		rc = kv_count_added(r->val, r->vlen, delta, val, &vlen);
	assert(!init || kv_count_is(init, ilen, delta));
	/* INIT goes with the add even over a row read here: Redis may have
	 * none by the time it lands (a row at 0 freed meanwhile) */
	uint8_t *copy = init ? malloc(ilen + VARINT_MAX) : NULL;
	if (init && !copy)
		rc = -ENOMEM;
	else if (init)
		memcpy(copy, init, ilen);
	struct row *added;
	if (!rc)
		rc = set_row_added(writes_of(k), t, key, klen, val, vlen,
				   init ? ROW_CREATE : ROW_ADD, delta, copy, ilen, &added);
	if (rc) {
		free(val);
		free(copy);
		return rc;
	}
	/* saturated for good: a put says so (deltas summed would not stay) */
	if (added->how != ROW_SET && kv_count_is(val, vlen, KV_COUNT_MAX)) {
		added->how = ROW_SET, added->delta = added->sent = 0;
		added->carried = added->init_carried = false;
		drop_init(added);
	}
	weigh(w, &was, weighed, -1);
	weigh(w, &now, weight_of(added->val, added->vlen, &now), +1);
	note_write(k, t, key, klen);
	return 0;
}

/* ---- partitions ------------------------------------------------------------ */

/* A partition's number as text, for a command's arguments. */
struct part_num {
	char text[12];
};

/* Is partition P among those holding rows (k->parts)? */
static bool part_known(const struct kv_redis *k, uint32_t p)
{
	size_t lo = 0, hi = k->nparts;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (k->parts[mid] == p)
			return true;
		if (k->parts[mid] < p)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Add partition P to k->parts, in order. */
static int add_part(struct kv_redis *k, uint32_t p)
{
	if (part_known(k, p))
		return 0;
	if (ARRAY_GROW(k->parts, k->nparts, k->parts_cap))
		return -ENOMEM;
	size_t i = k->nparts;
	while (i > 0 && k->parts[i - 1] > p) {
		k->parts[i] = k->parts[i - 1];
		i--;
	}
	k->parts[i] = p;
	k->nparts++;
	return 0;
}

/* The partitions holding rows, from the store's "partitions" set. */
static int load_parts(struct kv_redis *k)
{
	k->nparts = 0;
	k->parts_unknown = true; /* until the whole set is read */
	int rc = add_part(k, 0);
	char key[KEY_SIZE];
	const char *argv[] = {"ZRANGE", key, "0", "-1"};
	size_t lens[] = {6, redis_key(k->conn, 0, "partitions", key, KEY_SIZE), 1, 2};
	redisReply *r = NULL;
	if (!rc)
		rc = redis_run_in(k->conn, 0, "reading the partitions", 4, argv, lens, &r);
	for (size_t i = 0; !rc && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
		const redisReply *m = r->element[i];
		char *end;
		unsigned long v = m->type == REDIS_REPLY_STRING ? strtoul(m->str, &end, 10) : 0;
		if (m->type != REDIS_REPLY_STRING || *end || v > PART_LAST) {
			nadb_log("redis %s: the partitions set is damaged",
				 redis_conn_name(k->conn));
			rc = -EIO;
		} else {
			rc = add_part(k, (uint32_t)v);
		}
	}
	if (!rc && r->type != REDIS_REPLY_ARRAY)
		rc = redis_reply_error(k->conn, "reading the partitions", r);
	if (r)
		freeReplyObject(r);
	k->parts_unknown = rc != 0;
	return rc;
}

/* The partition a key of the store named KEY (LEN bytes) is in, from its
 * hash tag "{nadb:NAME:pP}"; false if KEY is not a store key of that form. */
static bool part_of_name(const struct kv_redis *k, const char *key, size_t len,
			 uint32_t *p)
{
	char prefix[KEY_SIZE];
	int n = snprintf(prefix, sizeof(prefix), "{nadb:%s:p", redis_conn_name(k->conn));
	if (n <= 0 || len <= (size_t)n || memcmp(key, prefix, (size_t)n))
		return false;
	uint64_t v = 0;
	size_t i = (size_t)n;
	for (; i < len && key[i] >= '0' && key[i] <= '9' && v <= PART_LAST; i++)
		v = v * 10 + (uint64_t)(key[i] - '0');
	if (i == (size_t)n || i == len || key[i] != '}' || v > PART_LAST)
		return false;
	*p = (uint32_t)v;
	return true;
}

/* fsck: every partition holding table rows is in the "partitions" set (a
 * scan walks those only: rows of a partition missing there would be
 * invisible to fsck's and compaction's walks).  SCAN over the server's
 * keys, then a ZADD of those missing with REPAIR. */
/* What kvr_check's walk of each server's keys carries. */
struct key_walk {
	struct kv_redis *k;
	bool repair;
	void (*problem)(void *ctx, const char *line);
	void *ctx;
	uint64_t *problems;
	struct part_num *missing;
	size_t nmissing, cap;
};

/* SCAN one server's keys of the store for partitions not listed. */
static int walk_server_keys(struct redis_conn *server, void *ctx)
{
	struct key_walk *w = ctx;
	struct kv_redis *k = w->k;
	char pattern[KEY_SIZE], cursor[32] = "0";
	snprintf(pattern, sizeof(pattern), "{nadb:%s:p*}:t:*", redis_conn_name(k->conn));
	int rc = 0;
	do {
		const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
		size_t lens[] = {4, strlen(cursor), 5, strlen(pattern), 5, 4};
		redisReply *r = NULL;
		rc = redis_run(server, "scanning the store's keys", 6, argv, lens, &r);
		if (rc)
			break;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[0]->len >= sizeof(cursor) || r->element[1]->type != REDIS_REPLY_ARRAY) {
			rc = redis_reply_error(server, "scanning the store's keys", r);
			freeReplyObject(r);
			break;
		}
		memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
		const redisReply *keys = r->element[1];
		for (size_t i = 0; !rc && i < keys->elements; i++) {
			uint32_t p;
			if (keys->element[i]->type != REDIS_REPLY_STRING ||
			    !part_of_name(k, keys->element[i]->str, keys->element[i]->len, &p) ||
			    part_known(k, p))
				continue;
			char line[200];
			snprintf(line, sizeof(line), "partition %u holds rows but is not in the "
				 "partitions set: scans miss them%s", p, w->repair ? " (added)" : "");
			(*w->problems)++;
			if (w->problem)
				w->problem(w->ctx, line);
			if ((rc = ARRAY_GROW(w->missing, w->nmissing, w->cap)))
				break;
			snprintf(w->missing[w->nmissing++].text, sizeof(w->missing->text), "%u", p);
			rc = add_part(k, p); /* told once */
		}
		freeReplyObject(r);
	} while (!rc && strcmp(cursor, "0"));
	return rc;
}

static int check_zeros_noted(struct kv_redis *k, enum kv_table t, bool repair,
			     void (*problem)(void *ctx, const char *line), void *ctx,
			     uint64_t *problems, uint64_t *mended);
static int check_tally(struct kv_redis *k, enum kv_table t, bool repair,
		       void (*problem)(void *ctx, const char *line), void *ctx,
		       uint64_t *problems, uint64_t *mended);

static int kvr_check(struct kv *kv, bool repair, void (*problem)(void *ctx, const char *line),
		     void *ctx, uint64_t *problems, uint64_t *mended)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	*problems = *mended = 0;
	struct key_walk w = {k, repair, problem, ctx, problems, NULL, 0, 0};
	int rc = load_parts(k);
	if (!rc)
		rc = redis_each_server(k->conn, walk_server_keys, &w);
	struct part_num *missing = w.missing;
	size_t nmissing = w.nmissing;
	if (!rc && repair && nmissing) {
		char key[KEY_SIZE];
		const char **argv = malloc((2 + 2 * nmissing) * sizeof(*argv));
		size_t *lens = malloc((2 + 2 * nmissing) * sizeof(*lens));
		rc = argv && lens ? 0 : -ENOMEM;
		if (!rc) {
			argv[0] = "ZADD";
			lens[0] = 4;
			argv[1] = key;
			lens[1] = redis_key(k->conn, 0, "partitions", key, KEY_SIZE);
			for (size_t i = 0; i < nmissing; i++) {
				argv[2 + 2 * i] = argv[3 + 2 * i] = missing[i].text;
				lens[2 + 2 * i] = lens[3 + 2 * i] = strlen(missing[i].text);
			}
			redisReply *r;
			rc = redis_run_in(k->conn, 0, "adding to the partitions set",
					  (int)(2 + 2 * nmissing), argv, lens, &r);
			if (!rc)
				freeReplyObject(r);
		}
		free(argv);
		free(lens);
	}
	free(missing);
	if (!repair || rc)
		k->parts_unknown = true; /* as Redis lists them, at the next use */
	else
		*mended += nmissing;
	for (int t = 0; !rc && t < KV_NTABLES; t++)
		if (kv_table_counted((enum kv_table)t))
			rc = check_zeros_noted(k, (enum kv_table)t, repair, problem, ctx, problems,
					       mended);
	for (int t = 0; !rc && t < KV_NTABLES; t++)
		if (kv_table_counted((enum kv_table)t))
			rc = check_tally(k, (enum kv_table)t, repair, problem, ctx, problems, mended);
	return rc;
}

/* ---- scans ---------------------------------------------------------------- */


/* A bucketed table's batch: {bucket names, HGETALL of each}.  The hashes'
 * names are ARGV[3] .. bucket, in the sorted set's slot (its hash tag). */
static const char scan_buckets_script[] =
	"#!lua flags=no-writes\n"
	"local b = redis.call('ZRANGE', KEYS[1], ARGV[1], '+', 'BYLEX', 'LIMIT', 0, ARGV[2]) "
	"local out = {b} "
	"for i = 1, #b do out[i + 1] = redis.call('HGETALL', ARGV[3] .. b[i]) end "
	"return out";

/* A row of a batch (key and value inside the held reply, or a sorted
 * table's key decoded into the batch's keys). */
struct pair {
	const char *key, *val;
	size_t klen, vlen;
};

/* Where a scan is in Redis's rows of one table. */
struct redis_rows {
	struct pair *rows; /* of the batch read last, in order */
	uint8_t *keys;     /* a sorted table's batch: its keys, decoded */
	size_t n, i;       /* rows, and the next one */
	size_t limit;      /* rows (or buckets) asked for in that batch */
	bool last;         /* no rows after this batch */
	const void *start; /* the scan's first key: rows before it are skipped */
	size_t slen;
	/* A table keyed by inode number: the partitions holding rows
	 * (k->parts), the index of the one read and of the scan's last. */
	const uint32_t *parts;
	size_t part, last_part;
	const redisReply *after; /* the batch's last member (bucket): the next
				    starts after it */
};

static int compare_pairs(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	return compare_keys(x->key, x->klen, y->key, y->klen);
}

static bool is_array(const redisReply *r)
{
	return r->type == REDIS_REPLY_ARRAY;
}

/* The rows of a sorted table's batch REP (its members) into RR. */
static int take_sorted_batch(struct redis_rows *rr, const redisReply *rep)
{
	if (!is_array(rep))
		return -EPROTO;
	size_t bytes = 1;
	for (size_t i = 0; i < rep->elements; i++) {
		if (rep->element[i]->type != REDIS_REPLY_STRING)
			return -EPROTO;
		bytes += rep->element[i]->len;
	}
	rr->keys = malloc(bytes);
	if (!rr->keys)
		return -ENOMEM;
	uint8_t *at = rr->keys;
	for (size_t i = 0; i < rep->elements; i++) {
		const redisReply *m = rep->element[i];
		struct pair *p = &rr->rows[rr->n++];
		const uint8_t *val;
		if (!decode_member((const uint8_t *)m->str, m->len, at, &p->klen, &val, &p->vlen))
			return -EPROTO;
		p->key = (const char *)at;
		p->val = (const char *)val;
		at += p->klen;
	}
	rr->last = rep->elements < rr->limit;
	rr->after = rep->elements ? rep->element[rep->elements - 1] : NULL;
	return 0;
}

/* The rows of a bucketed table's batch REP into RR, sorted, those before
 * the scan's start left out. */
static int take_bucket_batch(struct redis_rows *rr, const redisReply *rep)
{
	if (!is_array(rep) || rep->elements < 1 || !is_array(rep->element[0]) ||
	    rep->elements != rep->element[0]->elements + 1)
		return -EPROTO;
	const redisReply *names = rep->element[0];
	for (size_t b = 1; b < rep->elements; b++) {
		const redisReply *h = rep->element[b];
		if (!is_array(h) || h->elements % 2)
			return -EPROTO;
		for (size_t i = 0; i < h->elements; i += 2) {
			const redisReply *f = h->element[i], *v = h->element[i + 1];
			if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
				return -EPROTO;
			if (compare_keys(f->str, f->len, rr->start, rr->slen) >= 0)
				rr->rows[rr->n++] = (struct pair){f->str, v->str, f->len, v->len};
		}
	}
	qsort(rr->rows, rr->n, sizeof(*rr->rows), compare_pairs);
	rr->last = names->elements < rr->limit;
	rr->after = names->elements ? names->element[names->elements - 1] : NULL;
	return 0;
}

/* Rows in a batch REP at most. */
static size_t rows_in(const redisReply *rep)
{
	size_t n = is_array(rep) ? rep->elements : 0;
	for (size_t i = 0; is_array(rep) && i < rep->elements; i++)
		n += is_array(rep->element[i]) ? rep->element[i]->elements : 0;
	return n;
}

/* Where the first batch starts, into *FROM (malloc'd, "[" included): a
 * sorted table's enc(start), a bucketed table's bucket of start. */
static int first_from(enum kv_table t, const struct redis_rows *rr, char **from, size_t *len)
{
	size_t n = bucketed(t) ? BUCKET_MAX : encoded_len(rr->start, rr->slen) + 1;
	*from = malloc(n + 1);
	if (!*from)
		return -ENOMEM;
	(*from)[0] = '[';
	if (bucketed(t))
		*len = 1 + bucket_of(t, rr->start, rr->slen, (uint8_t *)*from + 1);
	else /* enc(start) 0: the start key's own member is >= it, a smaller key's < */
		*len = 1 + encode_key(rr->start, rr->slen, (uint8_t *)*from + 1);
	return 0;
}

/* Read the next batch: rows >= the scan's start (FIRST) or after the last
 * batch. */
static int fetch_rows(struct kv_redis *k, enum kv_table t, struct redis_rows *rr, bool first)
{
	char *from;
	size_t from_len;
	if (first) {
		int rc = first_from(t, rr, &from, &from_len);
		if (rc)
			return rc;
	} else {
		from_len = rr->after->len + 1;
		from = malloc(from_len);
		if (!from)
			return -ENOMEM;
		from[0] = '(';
		memcpy(from + 1, rr->after->str, rr->after->len);
	}
	size_t lo = bucketed(t) ? SCAN_BUCKETS_FIRST : SCAN_FIRST;
	size_t hi = bucketed(t) ? SCAN_BUCKETS_MAX : SCAN_MAX;
	rr->limit = first ? lo : (2 * rr->limit > hi ? hi : 2 * rr->limit);
	char limit[16];
	size_t llen = (size_t)snprintf(limit, sizeof(limit), "%zu", rr->limit);
	char zset[KEY_SIZE], hashes[KEY_SIZE];
	uint32_t p = rr->parts ? rr->parts[rr->part] : 0;
	size_t zlen = zset_name(k, t, p, zset);
	size_t hlen = bucketed(t) ? hash_prefix(k, t, p, hashes) : 0;
	const char *members[] = {"ZRANGE", zset, from, "+", "BYLEX", "LIMIT", "0", limit};
	size_t members_lens[] = {6, zlen, from_len, 1, 5, 5, 1, llen};
	const char *buckets[] = {"EVAL", scan_buckets_script, "1", zset, from, limit, hashes};
	size_t buckets_lens[] = {4, sizeof(scan_buckets_script) - 1, 1, zlen, from_len, llen, hlen};
	redisReply *rep;
	int rc = bucketed(t) ? redis_run_in(k->conn, p, "scanning a table", 7, buckets,
					    buckets_lens, &rep)
			     : redis_run_in(k->conn, p, "scanning a table", 8, members,
					    members_lens, &rep);
	free(from);
	if (rc)
		return rc;
	rc = hold_reply(k, rep);
	if (rc)
		return rc;
	free(rr->rows);
	free(rr->keys);
	rr->keys = NULL;
	rr->n = rr->i = 0;
	rr->rows = malloc((rows_in(rep) + 1) * sizeof(*rr->rows));
	if (!rr->rows)
		return -ENOMEM;
	rc = bucketed(t) ? take_bucket_batch(rr, rep) : take_sorted_batch(rr, rep);
	if (rc == -ENOMEM)
		return rc;
	if (rc)
		return redis_reply_error(k->conn, "scanning a table (a row we did not write)", rep);
	return 0;
}

/* Redis's next row, reading a batch if needed; NULL at the end. */
static int next_redis_row(struct kv_redis *k, enum kv_table t, struct redis_rows *rr,
			  const struct pair **row)
{
	*row = NULL;
	while (rr->i == rr->n) {
		bool next_part = rr->last && rr->part < rr->last_part;
		if (rr->last && !next_part)
			return 0;
		if (next_part) /* its rows all follow the last partition's */
			rr->part++;
		int rc = fetch_rows(k, t, rr, next_part);
		if (rc)
			return rc;
	}
	*row = &rr->rows[rr->i];
	return 0;
}

/* The merge of the three sources, smallest key first; on equal keys the
 * step wins over the group, the group over Redis. */
struct merge {
	struct row *step, *group;
	const struct pair *redis;
};

/* Is PREFIX (PLEN bytes) under an inode number we claimed and no synced
 * group named?  Then Redis holds no row starting with it. */
static bool fresh_prefix(const struct kv_redis *k, enum kv_table t, const void *prefix,
			 size_t plen)
{
	if (!kv_table_keyed_by_ino(t) || plen < 8)
		return false;
	uint64_t ino = kv_key_ino(prefix);
	return ino >= k->fresh_first && ino < k->fresh_end;
}

/* A group was synced: the fresh inodes it named are in Redis now.  The
 * highest of them is the last pending row under fresh_end of some table
 * keyed by inode number. */
static void note_synced_fresh(struct kv_redis *k)
{
	if (k->fresh_first >= k->fresh_end)
		return;
	uint64_t first = htobe64(k->fresh_first), end = htobe64(k->fresh_end);
	uint64_t named_to = k->fresh_first;
	for (int t = 0; t < KV_NTABLES; t++) {
		if (!kv_table_keyed_by_ino(t))
			continue;
		struct row *before[SKIP_LEVELS];
		first_at_or_after(&k->pending, t, &end, 8, before);
		const struct row *last = before[0]; /* the last row < end, or the head */
		if (last == k->pending.head[t] || compare_keys(last->key, last->klen, &first, 8) < 0)
			continue;
		uint64_t past = k->fresh_end; /* a key shorter than a number: trust none */
		if (last->klen >= 8) {
			memcpy(&past, last->key, 8);
			past = be64toh(past) + 1;
		}
		if (past > named_to)
			named_to = past;
	}
	k->fresh_first = named_to;
}

static bool cacheable_part(const struct kv_redis *k, uint32_t p);
static struct held_lease *lease_of(const struct kv_redis *k, uint32_t p);
static void lost_leases_forgotten(struct kv_redis *k);

/* Is inode INO known to have no rows of T in Redis (empty above)? */
static bool known_empty(struct kv_redis *k, enum kv_table t, const void *prefix, size_t plen)
{
	lost_leases_forgotten(k);
	if (plen != 8 || !kv_table_keyed_by_ino(t) || k->follower ||
	    !cacheable_part(k, kv_partition(kv_key_ino(prefix))))
		return false;
	if (k->empty_reconnects != redis_conn_reconnects(k->conn)) {
		k->empty_reconnects = redis_conn_reconnects(k->conn);
		k->nempty = 0;
	}
	uint64_t ino = kv_key_ino(prefix);
	for (unsigned i = 0; i < k->nempty; i++)
		if (k->empty[i].t == t && k->empty[i].ino == ino)
			return true;
	return false;
}

static void note_empty(struct kv_redis *k, enum kv_table t, const void *prefix)
{
	if (!cacheable_part(k, kv_partition(kv_key_ino(prefix))))
		return; /* another session may write its rows */
	k->empty[k->empty_next] = (struct empty_prefix){t, kv_key_ino(prefix)};
	k->empty_next = (k->empty_next + 1) % EMPTY_MAX;
	if (k->nempty < EMPTY_MAX)
		k->nempty++;
}

/* Does the walk RR, just fetched, show that Redis has no row starting
 * with the PLEN bytes at PREFIX? */
static bool shows_none(const struct redis_rows *rr, const void *prefix, size_t plen)
{
	if (rr->i < rr->n) /* the first row from the prefix on */
		return rr->rows[rr->i].klen < plen || memcmp(rr->rows[rr->i].key, prefix, plen);
	return rr->last && rr->part == rr->last_part;
}

/* The rows of T from START on (only those starting with its first PLEN
 * bytes, if PLEN; without asking Redis, if LOCAL_ONLY). */
static int scan_rows(struct kv_redis *k, enum kv_table t, const void *start, size_t slen,
		     size_t plen, bool local_only, kv_scan_fn fn, void *ctx)
{
	if (!start) { /* from the first row; memcmp wants a pointer even for 0 bytes */
		start = "";
		slen = 0;
	}
	assert(plen <= slen);
	struct merge m = {
		.step = k->in_step ? first_at_or_after(&k->step, t, start, slen, NULL) : NULL,
		.group = first_at_or_after(&k->pending, t, start, slen, NULL),
	};
	/* Redis's rows: one walk, or (a table whose partition is not its
	 * keys' first bytes) one per partition, merged */
	struct redis_rows one = {.start = start, .slen = slen, .last = true}, *rr = &one;
	size_t nrr = 1;
	int rc = 0;
	/* A scan inside another's callback walks the list the outer one
	 * read: reading it again would move it under the outer walk. */
	bool outermost = k->scanning <= 1;
	lost_leases_forgotten(k);
	if (outermost && k->follower && atomic_exchange(&k->parts_stale, false))
		k->parts_unknown = true; /* the writer may have added one */
	/* another session may have listed one, unless the walk stays in one
	 * we lease (whose rows only we write) */
	if (outermost && k->leasing && partitioned(t) &&
	    !(kv_table_keyed_by_ino(t) && plen >= 8 &&
	      lease_of(k, part_padded(start, plen, 0)) &&
	      part_padded(start, plen, 0) == part_padded(start, plen, 0xff)))
		k->parts_unknown = true;
	if (outermost && partitioned(t) && k->parts_unknown && (rc = load_parts(k)))
		return rc;
	if (kv_table_keyed_by_ino(t)) { /* the partitions its rows may be in */
		uint32_t first = part_padded(start, slen, 0);
		uint32_t last = plen ? part_padded(start, plen, 0xff) : PART_LAST;
		one.parts = k->parts;
		while (one.part < k->nparts && k->parts[one.part] < first)
			one.part++;
		one.last_part = one.part;
		while (one.last_part + 1 < k->nparts && k->parts[one.last_part + 1] <= last)
			one.last_part++;
		if (one.part == k->nparts || k->parts[one.part] > last)
			local_only = true; /* Redis holds no row of those partitions */
	} else if (partitioned(t)) {
		nrr = k->nparts;
		rr = calloc(nrr, sizeof(*rr));
		if (!rr)
			return -ENOMEM;
		for (size_t i = 0; i < nrr; i++)
			rr[i] = (struct redis_rows){.start = start, .slen = slen, .last = true,
						    .parts = k->parts, .part = i, .last_part = i};
	}
	for (size_t i = 0; !rc && !local_only && i < nrr; i++)
		rc = fetch_rows(k, t, &rr[i], true);
	if (!rc && !local_only && plen == 8 && slen == 8 && kv_table_keyed_by_ino(t) &&
	    shows_none(&one, start, plen))
		note_empty(k, t, start);
	while (!rc) {
		size_t from = 0; /* the walk m.redis comes from */
		m.redis = NULL;
		for (size_t i = 0; !rc && i < nrr; i++) {
			const struct pair *p;
			rc = next_redis_row(k, t, &rr[i], &p);
			if (!rc && p && (!m.redis || compare_keys(p->key, p->klen, m.redis->key,
								  m.redis->klen) < 0)) {
				m.redis = p;
				from = i;
			}
		}
		if (rc)
			break;
		/* the smallest key of the three heads */
		const void *key = NULL;
		size_t klen = 0;
		if (m.step)
			key = m.step->key, klen = m.step->klen;
		if (m.group && (!key || compare_keys(m.group->key, m.group->klen, key, klen) < 0))
			key = m.group->key, klen = m.group->klen;
		if (m.redis && (!key || compare_keys(m.redis->key, m.redis->klen, key, klen) < 0))
			key = m.redis->key, klen = m.redis->klen;
		if (!key || (plen && (klen < plen || memcmp(key, start, plen))))
			break;
		/* its value from the first source that has it; all move past it */
		const void *val = NULL;
		size_t vlen = 0;
		bool found = false, tomb = false;
		if (m.step && !compare_keys(m.step->key, m.step->klen, key, klen)) {
			found = true;
			tomb = !m.step->val;
			val = m.step->val, vlen = m.step->vlen;
			m.step = m.step->next[0];
		}
		if (m.group && !compare_keys(m.group->key, m.group->klen, key, klen)) {
			if (!found) {
				found = true;
				tomb = !m.group->val;
				val = m.group->val, vlen = m.group->vlen;
			}
			m.group = m.group->next[0];
		}
		if (m.redis && !compare_keys(m.redis->key, m.redis->klen, key, klen)) {
			if (!found)
				val = m.redis->val, vlen = m.redis->vlen;
			rr[from].i++;
		}
		if (tomb)
			continue;
		rc = fn(ctx, key, klen, val ? val : "", vlen);
	}
	for (size_t i = 0; i < nrr; i++) {
		free(rr[i].rows);
		free(rr[i].keys);
	}
	if (rr != &one)
		free(rr);
	return rc < 0 ? rc : 0;
}

static int kvr_scan(struct kv *kv, enum kv_table t, const void *start, size_t slen,
		    kv_scan_fn fn, void *ctx)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	k->scanning++;
	int rc = scan_rows(k, t, start, slen, 0, false, fn, ctx);
	assert(k->scanning > 0);
	k->scanning--;
	return rc;
}

static int kvr_scan_prefix(struct kv *kv, enum kv_table t, const void *prefix, size_t plen,
			   kv_scan_fn fn, void *ctx)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	k->scanning++;
	int rc = scan_rows(k, t, prefix, plen, plen,
			   fresh_prefix(k, t, prefix, plen) || known_empty(k, t, prefix, plen), fn, ctx);
	assert(k->scanning > 0);
	k->scanning--;
	return rc;
}

/* ---- sync ----------------------------------------------------------------- */

/* The commands of one sync, built in arrays sized before: argv slices,
 * and the partition whose keys each command writes (PART[i], from CUR
 * when it was started). */
struct batch {
	struct redis_cmd *cmds;
	uint32_t *part;
	const char **argv;
	size_t *lens;
	size_t ncmds, nargs;
	uint32_t cur;
	char (*deltas)[24]; /* adds' deltas as text, one a pending row at most */
	size_t ndeltas;
};

static void add_arg(struct batch *b, const void *arg, size_t len)
{
	b->argv[b->nargs] = arg;
	b->lens[b->nargs++] = len;
}

static void start_cmd(struct batch *b)
{
	b->part[b->ncmds] = b->cur;
	b->cmds[b->ncmds++] = (struct redis_cmd){0, &b->argv[b->nargs], &b->lens[b->nargs]};
}

static void end_cmd(struct batch *b)
{
	struct redis_cmd *c = &b->cmds[b->ncmds - 1];
	c->argc = (int)(&b->argv[b->nargs] - c->argv);
}

/* Fencing.  The store lock is a lease (lock.c): a writer whose lease ran
 * out stops sending, but a sync it sent just before may be held up in the
 * network and land after another daemon took the store over.  So a fence
 * key per partition holds the highest lock generation that wrote there,
 * and a sync's writes are one script (apply_script) that checks first
 * the fences of KEYS[2..ARGV[3] + 1] -- on a cluster the one partition's the transaction
 * writes; on one server partition 0's and those of every partition the
 * group writes -- against ARGV[1], the writer's generation (or, one per
 * fence, the generations of its partition leases: kvr_lease).  One lower
 * than ours is raised to it; a generation lower than any fence's is
 * refused (FENCE_ERROR: nothing is written, no fence raised, no mark set).  A new
 * writer raises the fences at open (kv_redis_set_fence: partition 0's,
 * and on a cluster every partition's), so a late sync of the one before
 * it writes nothing.  (Each partition's own fence is what lets a later
 * holder of one partition's lease, docs/many-writers.md, fence off the
 * syncs of the one before, on one server as on a cluster.) */
#define FENCE_ERROR "NADBFENCED"
/* fence_ok(key, g): may a script of ours write, fenced by KEY at G?  G
 * is a generation (KEY a fence: ours is at least its value) or, for a
 * leasing session without the store lock writing partition 0, whose
 * lease it does not hold, "s" and our session (KEY the live sessions:
 * ours has not run out).  fence_raise(key, g): a fence below G is raised
 * to it.  (After SERVER_MS_FN.) */
#define FENCE_FUNCTIONS                                                                 \
	"local function fence_ok(key, g) "                                              \
	"if string.sub(g, 1, 1) == 's' then "                                           \
	"local sc = tonumber(redis.call('ZSCORE', key, string.sub(g, 2))) "             \
	"return sc ~= nil and sc > server_ms() end "                                    \
	"return (tonumber(redis.call('GET', key) or '0') or 0) <= tonumber(g) end "     \
	"local function fence_raise(key, g) "                                           \
	"if string.sub(g, 1, 1) ~= 's' and "                                            \
	"(tonumber(redis.call('GET', key) or '0') or 0) < tonumber(g) then "            \
	"redis.call('SET', key, g) end end "
#define FENCE_REFUSED                                                                   \
	"return redis.error_reply('" FENCE_ERROR " the store is written by a later "    \
	"holder of its lock or lease, or our session ran out') "
/* ARGV[1] the generations, one per fence, or one for all of them. */
#define FENCE_CHECK                                                                     \
	"local gs = {} "                                                                \
	"for x in string.gmatch(ARGV[1], '%S+') do gs[#gs + 1] = x end "               \
	"local nf = tonumber(ARGV[3]) "                                                 \
	"for k = 2, nf + 1 do "                                                         \
	"if not fence_ok(KEYS[k], gs[k - 1] or gs[1]) then " FENCE_REFUSED "end end "   \
	"for k = 2, nf + 1 do fence_raise(KEYS[k], gs[k - 1] or gs[1]) end "
/* Syncs run once.  A transaction can reach Redis twice: redis_pipeline
 * sends a pipeline again after a reconnect, and a sync that failed leaves
 * its rows pending for the next, although its transaction may have run
 * (the reply was what got lost).  It can also arrive late, after a later
 * sync's.  Setting a row to a value twice does no harm, but late it puts
 * back an older value, and adding to a count (kv_ops.add) twice counts
 * twice.  So each sync is an attempt, numbered by this process
 * (sync_attempt), and its script (KEYS[1], ARGV[2]) first reads our
 * session's mark (REDIS_SYNCED, in the transaction's partition: the
 * last attempt of ours that ran there): at or past its own number, the
 * transaction does nothing; else it sets the mark and writes.  After a
 * failed sync the next one first settles each transaction whose fate is
 * unknown (settle_attempt): a script reads the mark, says whether the
 * attempt ran, and if not seals the mark past it, so that it can no
 * longer run late. */
#define MARK_TTL_MS "2592000000" /* ms: a session's mark outlives its last sync
				  * by 30 days (a session gone that long left
				  * no attempt unsettled) */
#define MARK_SET "redis.call('SET', KEYS[1], ARGV[2], 'PX', '" MARK_TTL_MS "') "
/* A transaction that ran already writes its mark again (as it is: a later
 * attempt's may be there): a write, so that the WAIT after it waits for
 * replicas to have what the first run wrote. */
#define MARK_CHECK                                                                      \
	"local a = tonumber(ARGV[2]) "                                                  \
	"local mark = redis.call('GET', KEYS[1]) "                                      \
	"if (tonumber(mark or '0') or 0) >= a then "                                    \
	"redis.call('SET', KEYS[1], mark, 'PX', '" MARK_TTL_MS "') return 1 end "
/* Every hash a counted write ("+COUNT", "=COUNT", "-COUNT") writes is
 * one, or none yet, and so is its tally, and its set of zeros a sorted set
 * or none: else nothing is written (a damaged store: fsck's). */
#define DAMAGED_ERROR "NADBDAMAGED"
#define ADDS_CHECK                                                                      \
	"local i = 4 "                                                                  \
	"while i <= #ARGV do "                                                          \
	"if string.sub(ARGV[i + 1], 2) == 'COUNT' then "                                \
	"local t = redis.call('TYPE', ARGV[i + 2])['ok'] "                              \
	"if t ~= 'hash' and t ~= 'none' then return redis.error_reply('" DAMAGED_ERROR " " \
	"a chunk record bucket is a ' .. t .. ', not a hash') end "                     \
	"t = redis.call('TYPE', ARGV[i + 3])['ok'] "                                    \
	"if t ~= 'zset' and t ~= 'none' then return redis.error_reply('" DAMAGED_ERROR " " \
	"the chunks at zero are a ' .. t .. ', not a sorted set') end "                 \
	"t = redis.call('TYPE', ARGV[i + 4])['ok'] "                                    \
	"if t ~= 'hash' and t ~= 'none' then return redis.error_reply('" DAMAGED_ERROR " " \
	"the tally of the chunks is a ' .. t .. ', not a hash') end end "                     \
	"i = i + tonumber(ARGV[i]) + 1 end "
/* The server's clock, in ms, as the scripts read it (once a script: a
 * script runs in an instant): every host's daemon compares heartbeats
 * and ages against one clock. */
#define SERVER_MS_FN                                                                    \
	"local server_now "                                                             \
	"local function server_ms() if not server_now then local t = redis.call('TIME') " \
	"server_now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end "    \
	"return server_now end "
#define SERVER_MS SERVER_MS_FN "local now = server_ms() "
/* Counts in Lua, by kv_count_added's rule (backend.c):
 *  - count_of(v): the count value V starts with, and where the rest of V
 *    starts; nil if V is nil or starts with no count of 32 bits;
 *  - count_text(c): C as a varint;
 *  - zero_noted(z, f, was, c): row F's count went from WAS (nil: no row)
 *    to C; a count that reaches 0 is noted in the sorted set Z with the
 *    server's clock (ms), one that leaves it is taken out (free_zeros);
 *    one written at 0 again keeps its note and time, or is noted if its
 *    note was lost (fsck --repair puts such records again).
 * (After SERVER_MS_FN.) */
#define COUNT_FUNCTIONS                                                                 \
	"local function count_of(v) "                                                   \
	"if not v then return nil end "                                                 \
	"local c, m, at = 0, 1, 1 "                                                     \
	"while true do "                                                                \
	"local byte = string.byte(v, at) "                                              \
	"if not byte or at > 5 then return nil end "                                    \
	"c = c + (byte % 128) * m at = at + 1 "                                         \
	"if byte < 128 then break end "                                                 \
	"m = m * 128 end "                                                              \
	"if c > 4294967295 then return nil end "                                        \
	"return c, at end "                                                             \
	"local function count_text(c) "                                                 \
	"local out = {} "                                                               \
	"repeat local byte = c % 128 c = (c - byte) / 128 "                             \
	"if c > 0 then byte = byte + 128 end out[#out + 1] = string.char(byte) "        \
	"until c == 0 "                                                                 \
	"return table.concat(out) end "                                                 \
	"local function zero_noted(z, f, was, c) "                                      \
	"if c == 0 and was ~= 0 then redis.call('ZADD', z, server_ms(), f) "            \
	"elseif c == 0 then redis.call('ZADD', z, 'NX', server_ms(), f) "               \
	"elseif c and c > 0 and was == 0 then redis.call('ZREM', z, f) end end "
/* Tallies in Lua (backend.h, kv_ops.tally):
 *  - weight_of(v): V's group, size and raw size (kv_weight_of's reading);
 *    nil if V weighs nothing (no row, a count of 0, or unreadable);
 *  - tallied(t, old, new): a row of the table whose tally is the hash T
 *    went from OLD to NEW (nil or false: none), which changes T by NEW's
 *    weight less OLD's;
 *  - tallies_written(): the changes summed, written (HINCRBY once a
 *    field, through pcall: a damaged field stops nothing, fsck finds it;
 *    a group summing to 0 goes).  After each write of the script, not
 *    once at its end: a later write that fails (a damaged store) leaves
 *    those before it done, and weighed.
 * The fields: rows, size, raw and g:GROUP (after COUNT_FUNCTIONS). */
#define TALLY_FUNCTIONS                                                                 \
	"local function varint_at(v, at) "                                              \
	"local c, m = 0, 1 "                                                            \
	"for i = at, at + 9 do "                                                        \
	"local byte = string.byte(v, i) "                                               \
	"if not byte then return nil end "                                              \
	"c = c + (byte % 128) * m "                                                     \
	"if byte < 128 then return c, i + 1 end "                                       \
	"m = m * 128 end return nil end "                                               \
	"local function weight_of(v) "                                                  \
	"local c, at = count_of(v) "                                                    \
	"if not c or c == 0 then return nil end "                                       \
	"local g, skip, raw, diff "                                                     \
	"g, at = varint_at(v, at) if not g or g > 4294967295 then return nil end "      \
	"skip, at = varint_at(v, at) if not skip then return nil end "                  \
	"raw, at = varint_at(v, at) if not raw or raw > 4294967295 then return nil end " \
	"diff = varint_at(v, at) if not diff or diff >= 17179869184 then return nil end " \
	"local size = raw - (diff + 1) / 2 "                                            \
	"if diff % 2 == 0 then size = raw + diff / 2 end "                              \
	"if size < 0 then return nil end "                                              \
	"return g, size, raw end "                                                      \
	"local tallies = {} "                                                           \
	"local function tally_add(t, f, d) "                                            \
	"local x = tallies[t] if not x then x = {} tallies[t] = x end "                 \
	"x[f] = (x[f] or 0) + d end "                                                   \
	"local function weigh(t, v, sign) "                                             \
	"local g, size, raw = weight_of(v) "                                            \
	"if not g then return end "                                                     \
	"tally_add(t, 'rows', sign) tally_add(t, 'size', sign * size) "                 \
	"tally_add(t, 'raw', sign * raw) "                                              \
	"tally_add(t, 'g:' .. string.format('%d', g), sign * size) end "                \
	"local function tallied(t, old, new) "                                          \
	"if old then weigh(t, old, -1) end if new then weigh(t, new, 1) end end "       \
	"local function tallies_written() "                                             \
	"for t, x in pairs(tallies) do for f, d in pairs(x) do if d ~= 0 then "         \
	"local r = redis.pcall('HINCRBY', t, f, string.format('%.0f', d)) "             \
	"if r == 0 and string.sub(f, 1, 2) == 'g:' then redis.call('HDEL', t, f) end "  \
	"end end end tallies = {} end "
/* The hashes and sets of zeros the counted writes write are KEYS too,
 * after the fences: on a cluster
 * whose slot is moving, a script whose keys are not all on one node is
 * answered TRYAGAIN (the router tries again), not run where a hash is
 * missing (an add there would do nothing).
 * The writes themselves follow the generation, the attempt and the
 * number of fences, each as its
 * argument count, then VERB KEY ARGS...: a Redis verb (HSET, HDEL, ZADD),
 * or one of ours:
 *  - "+ROWS"/"-ROWS" SET ARGS: a sorted table's puts or deletes, pairs of
 *    a key's prefix enc(key) 0 and its new member ("" to delete it); the
 *    member the key had is found in [prefix, enc(key) 1) and replaced;
 *  - "+COUNT" HASH ZEROS TALLY ARGS: adds (kv_ops.add), triples of a
 *    field, the delta added to the count its value starts with (saturated
 *    stays so, and 0 is the least), and the value to put if the field is
 *    absent ("": none); a count reaching 0 or leaving it is noted in the
 *    sorted set ZEROS (zero_noted), and every change is weighed in the
 *    hash TALLY (tallied);
 *  - "=COUNT" HASH ZEROS TALLY ARGS: a counted table's puts, pairs of a
 *    field and its value, noted and weighed as adds are;
 *  - "-COUNT" HASH ZEROS TALLY ARGS: a counted table's deletes, fields
 *    (a note in ZEROS goes with its row);
 *  - "DROP" SET PREFIX BUCKETS: deleted rows can leave a bucket empty
 *    (Redis then drops its hash): its name leaves the sorted set.
 * A script that fails part way keeps what it wrote (Redis has no undo):
 * harmless for puts, which the next sync sends again, but not for adds,
 * which must all run or none (syncs run once).  So the adds go first,
 * after a check that each of their hashes is one (ADDS_CHECK: after it
 * nothing in them can fail), and the rest after them.
 * One script a transaction, not one a write: a script call costs ~10 us
 * of Redis's time, a write inside it ~1.  Two scripts for one body: with
 * puts the transaction is refused whole, before it runs, when Redis is out
 * of memory; with deletes only it is not, so that deleting frees a full
 * store.  (Every key is in the fence's slot: one partition's.) */
#define APPLY_BODY                                                                      \
	SERVER_MS_FN                                                                    \
	FENCE_FUNCTIONS                                                                 \
	MARK_CHECK                                                                      \
	FENCE_CHECK                                                                     \
	ADDS_CHECK                                                                      \
	MARK_SET                                                                        \
	COUNT_FUNCTIONS                                                                 \
	TALLY_FUNCTIONS                                                                 \
	"for pass = 1, 2 do "                                                           \
	"local i = 4 "                                                                  \
	"while i <= #ARGV do "                                                          \
	"local n, verb, key = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2] "             \
	"if (verb == '+COUNT') ~= (pass == 1) then "                                    \
	"elseif verb == '+ROWS' or verb == '-ROWS' then "                               \
	"for j = i + 3, i + n, 2 do "                                                   \
	"local lo, new = ARGV[j], ARGV[j + 1] "                                         \
	"local hi = string.sub(lo, 1, -2) .. '\\1' "                                    \
	"local old = redis.call('ZRANGE', key, '[' .. lo, '(' .. hi, 'BYLEX', "         \
	"'LIMIT', 0, 1)[1] "                                                            \
	"if old ~= new then "                                                           \
	"if old then redis.call('ZREM', key, old) end "                                 \
	"if new ~= '' then redis.call('ZADD', key, 0, new) end "                        \
	"end end "                                                                      \
	"elseif verb == '+COUNT' then "                                                 \
	"local z, tt = ARGV[i + 3], ARGV[i + 4] "                                       \
	"for j = i + 5, i + n, 3 do "                                                   \
	"local f = ARGV[j] "                                                            \
	"if ARGV[j + 2] ~= '' and redis.call('HSETNX', key, f, ARGV[j + 2]) == 1 then " \
	"zero_noted(z, f, nil, (count_of(ARGV[j + 2]))) tallied(tt, nil, ARGV[j + 2]) " \
	"else "                                                                         \
	"local v = redis.call('HGET', key, f) "                                         \
	"local was, at = count_of(v) "                                                  \
	"if was and was < 4294967295 then "                                             \
	"local c = math.max(0, math.min(4294967295, was + tonumber(ARGV[j + 1]))) "     \
	"local nv = count_text(c) .. string.sub(v, at) "                                \
	"redis.call('HSET', key, f, nv) "                                               \
	"zero_noted(z, f, was, c) tallied(tt, v, nv) end end end "                      \
	"elseif verb == '=COUNT' then "                                                 \
	"local z, tt = ARGV[i + 3], ARGV[i + 4] "                                       \
	"for j = i + 5, i + n, 2 do "                                                   \
	"local v = redis.call('HGET', key, ARGV[j]) "                                   \
	"redis.call('HSET', key, ARGV[j], ARGV[j + 1]) "                                \
	"zero_noted(z, ARGV[j], (count_of(v)), (count_of(ARGV[j + 1]))) "               \
	"tallied(tt, v, ARGV[j + 1]) end "                                              \
	"elseif verb == '-COUNT' then "                                                 \
	"local z, tt = ARGV[i + 3], ARGV[i + 4] "                                       \
	"for j = i + 5, i + n do "                                                      \
	"local v = redis.call('HGET', key, ARGV[j]) "                                   \
	"if v then redis.call('HDEL', key, ARGV[j]) redis.call('ZREM', z, ARGV[j]) "    \
	"tallied(tt, v, nil) end end "                                                  \
	"elseif verb == 'DROP' then "                                                   \
	"for j = i + 4, i + n do "                                                      \
	"if redis.call('EXISTS', ARGV[i + 3] .. ARGV[j]) == 0 then "                    \
	"redis.call('ZREM', key, ARGV[j]) end end "                                     \
	"else redis.call(verb, key, unpack(ARGV, i + 3, i + n)) end "                   \
	"tallies_written() "                                                            \
	"i = i + n + 1 end end return 0"
static const char apply_puts_script[] = "#!lua\n" APPLY_BODY;
static const char apply_dels_script[] = "#!lua flags=allow-oom\n" APPLY_BODY;

/* Partition P's fence, into BUF (KEY_SIZE); its length.  On a cluster
 * each transaction checks its partition's (a script stays in one slot;
 * partition 0's transaction goes first, and when it is refused no other
 * is sent).  On one server the group is one transaction, checking
 * partition 0's -- so that it is refused whole, even in a partition the
 * group is the first to write (whose own fence a new writer could not
 * know to raise) -- and each written partition's. */
static size_t fence_name(const struct kv_redis *k, uint32_t p, char *buf)
{
	return redis_key(k->conn, p, REDIS_FENCE, buf, KEY_SIZE);
}

/* Our session's mark in partition P (the one server's transaction uses
 * partition 0's), into BUF (KEY_SIZE); its length. */
static size_t mark_name(const struct kv_redis *k, uint32_t p, char *buf)
{
	char what[40];
	snprintf(what, sizeof(what), REDIS_SYNCED, k->kv.session);
	return redis_key(k->conn, p, what, buf, KEY_SIZE);
}

/* Start a write VERB of KEY (apply_script's): its arguments follow. */
static void start_write(struct batch *b, const char *verb, const char *key, size_t keylen)
{
	start_cmd(b);
	add_arg(b, verb, strlen(verb));
	add_arg(b, key, keylen);
}

/* What a pending row is to the sync: a put, a delete (a tombstone), or
 * an add (ROW_ADD, ROW_CREATE). */
enum row_kind { KIND_PUT, KIND_DEL, KIND_ADD };

static enum row_kind kind_of(const struct row *r)
{
	return r->how != ROW_SET ? KIND_ADD : r->val ? KIND_PUT : KIND_DEL;
}

/* Writes "VERB KEY [ZEROS TALLY] row-key [value] ..." for the rows from
 * FIRST up to END (NULL: the table's end) of KIND, SYNC_ROWS rows at most
 * a write: a put's key followed by its value (HSET, "=COUNT"), an add's
 * by its delta and its value if it creates, else "" ("+COUNT").  ZEROS
 * and TALLY (NULL: none), a counted table's set of rows at zero and its
 * tally, follow KEY. */
static void add_rows(struct batch *b, const char *verb, const char *key, size_t keylen,
		     const char *zeros, const char *tally, struct row *first,
		     const struct row *end, enum row_kind kind)
{
	size_t in_cmd = 0;
	for (struct row *r = first; r != end; r = r->next[0]) {
		if (kind_of(r) != kind)
			continue;
		if (in_cmd == 0) {
			start_write(b, verb, key, keylen);
			if (zeros) {
				add_arg(b, zeros, strlen(zeros));
				add_arg(b, tally, strlen(tally));
			}
		}
		add_arg(b, r->key, r->klen);
		if (kind == KIND_PUT)
			add_arg(b, r->val, r->vlen);
		if (kind == KIND_ADD) {
			r->sent = r->delta; /* what this attempt carries (settle_rows) */
			r->carried = true;
			r->init_carried = r->how == ROW_CREATE;
			r->ask = r->ask || (r->init_carried && (r->ilen != r->vlen ||
								memcmp(r->init, r->val, r->ilen)));
			char *d = b->deltas[b->ndeltas++];
			add_arg(b, d, (size_t)snprintf(d, sizeof(*b->deltas), "%lld",
						       (long long)r->delta));
			add_arg(b, r->how == ROW_CREATE ? r->init : "", r->ilen);
		}
		if (++in_cmd == SYNC_ROWS) {
			end_cmd(b);
			in_cmd = 0;
		}
	}
	if (in_cmd)
		end_cmd(b);
}

/* Room for a sorted table's pending rows as script arguments. */
static size_t sorted_bytes(struct kv_redis *k, enum kv_table t)
{
	size_t n = 0;
	for (struct row *r = k->pending.head[t]->next[0]; r; r = r->next[0])
		n += encoded_len(r->key, r->klen) + 1 + (r->val ? r->vlen : 0);
	return n;
}

/* A sorted set's name, made while a sync is built (args point into it). */
struct zset_name {
	char name[KEY_SIZE];
};

/* How many runs of one partition T's pending rows make, in key order (in
 * a table keyed by inode number a partition's rows are one run). */
static size_t pending_runs(struct kv_redis *k, enum kv_table t)
{
	size_t n = 0;
	uint32_t part = 0;
	for (struct row *r = k->pending.head[t]->next[0]; r; r = r->next[0]) {
		uint32_t p = row_part(t, r->key, r->klen);
		n += r == k->pending.head[t]->next[0] || p != part;
		part = p;
	}
	return n;
}

/* A sorted table's pending deletes (DELS: "-ROWS") or puts ("+ROWS"), one
 * write a partition's sorted set (apply_script), their members built in
 * *BUF and their sets' names in *NAMES (both used up). */
static void add_member_rows(struct kv_redis *k, struct batch *b, enum kv_table t, bool dels,
			    uint8_t **buf, struct zset_name **names)
{
	size_t in_cmd = 0, zlen = 0;
	struct zset_name *z = NULL; /* the set of partition PART, the rows' last */
	uint32_t part = 0;
	for (struct row *r = k->pending.head[t]->next[0]; r; r = r->next[0]) {
		if (kind_of(r) != (dels ? KIND_DEL : KIND_PUT))
			continue;
		uint32_t p = row_part(t, r->key, r->klen);
		if (!z || p != part) { /* one name a run: the rows are in key order */
			if (in_cmd)
				end_cmd(b);
			in_cmd = 0;
			part = b->cur = p;
			z = (*names)++;
			zlen = zset_name(k, t, p, z->name);
		}
		if (in_cmd == 0)
			start_write(b, dels ? "-ROWS" : "+ROWS", z->name, zlen);
		uint8_t *m = *buf;
		size_t prefix = encode_key(r->key, r->klen, m);
		if (r->val && r->vlen)
			memcpy(m + prefix, r->val, r->vlen);
		size_t mlen = r->val ? prefix + r->vlen : 0;
		*buf += prefix + (r->val ? r->vlen : 0);
		add_arg(b, m, prefix);
		add_arg(b, mlen ? (const char *)m : "", mlen);
		if (++in_cmd == SYNC_ROWS) {
			end_cmd(b);
			in_cmd = 0;
		}
	}
	if (in_cmd)
		end_cmd(b);
}

/* A sorted table's pending rows: puts, then deletes.  NAMES has room for
 * twice pending_runs(T). */
static void add_sorted_rows(struct kv_redis *k, struct batch *b, enum kv_table t,
			    uint8_t **buf, struct zset_name **names)
{
	add_member_rows(k, b, t, false, buf, names);
	add_member_rows(k, b, t, true, buf, names);
}

/* A bucket's hash and its partition's sorted set of bucket names, named
 * while a sync is built (the args point into them). */
struct bucket_name {
	char name[KEY_SIZE], zset[KEY_SIZE];
	char zeros[KEY_SIZE]; /* a counted table's rows at zero (zeros_name) */
	char tally[KEY_SIZE]; /* and its tally (tally_name) */
	size_t len, pre, zlen; /* pre: the length of the hashes' prefix */
	uint32_t part;
	bool dels; /* rows of it are deleted */
};

/* The pending rows from R up to the next bucket's; *NAME made KEY's. */
static struct row *bucket_end(struct kv_redis *k, enum kv_table t, struct row *r,
			      struct bucket_name *name)
{
	name->len = bucket_key(k, t, r->key, r->klen, name->name, &name->pre);
	name->part = row_part(t, r->key, r->klen);
	name->dels = false;
	char other[KEY_SIZE];
	size_t pre;
	for (; r; r = r->next[0]) {
		if (bucket_key(k, t, r->key, r->klen, other, &pre) != name->len ||
		    memcmp(other, name->name, name->len))
			break;
		name->dels |= !r->val;
	}
	return r;
}

/* How many buckets T's pending rows fall in. */
static size_t pending_buckets(struct kv_redis *k, enum kv_table t)
{
	size_t n = 0;
	struct bucket_name scratch;
	for (struct row *r = k->pending.head[t]->next[0]; r; r = bucket_end(k, t, r, &scratch))
		n++;
	return n;
}

/* The write dropping the empty buckets among NAMES[0..N) (one
 * partition's), if deletes touched any: "DROP" (apply_script). */
static void drop_empty_buckets(struct batch *b, const struct bucket_name *names, size_t n)
{
	bool dels = false;
	for (size_t i = 0; i < n && !dels; i++)
		dels = names[i].dels;
	if (!dels)
		return;
	b->cur = names[0].part;
	start_write(b, "DROP", names[0].zset, names[0].zlen);
	add_arg(b, names[0].name, names[0].pre);
	for (size_t i = 0; i < n; i++)
		if (names[i].dels)
			add_arg(b, names[i].name + names[i].pre, names[i].len - names[i].pre);
	end_cmd(b);
}

/* A bucketed table's pending rows, bucket by bucket (a bucket's rows are
 * contiguous): its hash's fields set and removed, its name added to its
 * partition's sorted set; then, per partition, the buckets left empty
 * dropped.  NAMES has room for pending_buckets(T); returns how many it
 * used. */
static size_t add_bucket_rows(struct kv_redis *k, struct batch *b, enum kv_table t,
			      struct bucket_name *names)
{
	size_t n = 0, run = 0; /* run: the first bucket of the partition named last */
	bool counted = kv_table_counted(t);
	for (struct row *r = k->pending.head[t]->next[0]; r;) {
		struct bucket_name *bn = &names[n];
		struct row *end = bucket_end(k, t, r, bn);
		bn->zlen = zset_name(k, t, bn->part, bn->zset);
		if (counted) {
			zeros_name(k, t, bn->part, bn->zeros);
			tally_name(k, t, bn->part, bn->tally);
		}
		if (n > run && bn->part != names[run].part) {
			drop_empty_buckets(b, names + run, n - run);
			run = n;
		}
		n++;
		b->cur = bn->part;
		const char *zeros = counted ? bn->zeros : NULL, *tally = counted ? bn->tally : NULL;
		add_rows(b, counted ? "=COUNT" : "HSET", bn->name, bn->len, zeros, tally, r, end,
			 KIND_PUT);
		add_rows(b, counted ? "-COUNT" : "HDEL", bn->name, bn->len, zeros, tally, r, end,
			 KIND_DEL);
		add_rows(b, "+COUNT", bn->name, bn->len, zeros, tally, r, end, KIND_ADD);
		bool puts = false;
		for (struct row *p = r; p != end && !puts; p = p->next[0])
			puts = p->val != NULL;
		if (puts) {
			start_write(b, "ZADD", bn->zset, bn->zlen);
			add_arg(b, "0", 1);
			add_arg(b, bn->name + bn->pre, bn->len - bn->pre);
			end_cmd(b);
		}
		r = end;
	}
	if (n > run)
		drop_empty_buckets(b, names + run, n - run);
	return n;
}

/* Room for the commands of the pending group, BUCKETS of them in bucketed
 * tables, RUNS runs of one partition in sorted tables. */
static int size_batch(struct kv_redis *k, struct batch *b, size_t buckets, size_t runs,
		      size_t extra, size_t extra_args)
{
	size_t rows = k->pending.rows;
	/* per table: 4 commands, more every SYNC_ROWS rows and per partition
	 * run (two scripts); per bucket: 4 (HSET, HDEL, +COUNT, ZADD) and its
	 * name twice, and at most one script dropping empty ones */
	size_t ncmds = 4 * (rows / SYNC_ROWS + 1) * KV_NTABLES + 2 * runs + 5 * buckets +
		       KV_NTABLES + extra;
	size_t nargs = 4 * rows + 2 * buckets + 5 * ncmds + extra * 4 + extra_args;
	b->cmds = malloc(ncmds * sizeof(*b->cmds));
	b->part = malloc(ncmds * sizeof(*b->part));
	b->argv = malloc(nargs * sizeof(*b->argv));
	b->lens = malloc(nargs * sizeof(*b->lens));
	b->deltas = malloc((rows + 1) * sizeof(*b->deltas));
	b->ncmds = b->nargs = b->ndeltas = 0;
	b->cur = 0;
	return b->cmds && b->part && b->argv && b->lens && b->deltas ? 0 : -ENOMEM;
}

static void free_batch(struct batch *b)
{
	free(b->cmds);
	free(b->part);
	free(b->argv);
	free(b->lens);
	free(b->deltas);
}

/* Is R our scripts' refusal of a writer whose store was taken over
 * (FENCE_ERROR)?  Then WHAT is said to be refused, and -ENOLCK; else 0. */
static int fenced_out(struct kv_redis *k, const redisReply *r, const char *what)
{
	if (r->type != REDIS_REPLY_ERROR || strncmp(r->str, FENCE_ERROR " ", sizeof(FENCE_ERROR)))
		return 0;
	if (k->leasing)
		nadb_log("redis %s: %s was refused: another session took over the lease of a "
			 "partition it writes (our generation there is not the last)",
			 redis_conn_name(k->conn), what);
	else
		nadb_log("redis %s: %s was refused: another daemon took the store over (lock "
			 "generation %s is not the last): stop writing", redis_conn_name(k->conn),
			 what, k->fence_gen);
	return -ENOLCK;
}

/* Did the transaction run whole?  0, or the errno of the reply that says
 * why not (logged once). */
static int check_exec(struct kv_redis *k, redisReply **replies, size_t exec)
{
	const redisReply *r = replies[exec];
	if (r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < r->elements; i++) {
			const redisReply *e = r->element[i];
			if (e->type != REDIS_REPLY_ERROR)
				continue;
			int rc = fenced_out(k, e, "a sync");
			if (rc)
				return rc;
			if (!strncmp(e->str, DAMAGED_ERROR " ", sizeof(DAMAGED_ERROR)))
				return redis_reply_error(k->conn, "a sync was refused, nothing "
							 "written (nadb fsck)", e);
			return redis_reply_error(k->conn, "a write of the group failed "
						 "(the rest was applied)", e);
		}
		return 0;
	}
	/* EXECABORT: a queued command was refused (OOM, ...): say which. */
	for (size_t i = 0; i < exec; i++)
		if (replies[i]->type == REDIS_REPLY_ERROR)
			return redis_reply_error(k->conn, "the group was refused", replies[i]);
	return redis_reply_error(k->conn, "the group was not applied", r);
}

/* Note partition P as confirmed by enough replicas, or not. */
static int note_confirmed(struct kv_redis *k, uint32_t p, bool confirmed)
{
	for (size_t i = 0; i < k->nunconfirmed; i++) {
		if (k->unconfirmed[i] != p)
			continue;
		if (confirmed)
			k->unconfirmed[i] = k->unconfirmed[--k->nunconfirmed];
		return 0;
	}
	if (confirmed)
		return 0;
	if (ARRAY_GROW(k->unconfirmed, k->nunconfirmed, k->unconfirmed_cap))
		return -ENOMEM;
	k->unconfirmed[k->nunconfirmed++] = p;
	return 0;
}

/* Fewer replicas than are connected confirmed the writes: said, and
 * failed only when fewer than min_replicas did (the primary's AOF has
 * them already). */
static int check_wait_of(struct kv_redis *k, const char *what, const redisReply *r,
			 int replicas)
{
	long long got = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	if (got < replicas)
		nadb_log("redis %s: only %lld of %d replicas confirmed %s within %d ms%s",
			 redis_conn_name(k->conn), got, replicas, what, WAIT_MS,
			 got < k->min_replicas ? " (fewer than min_replicas: it fails)" : "");
	return got < k->min_replicas ? -EIO : 0;
}

static int check_wait(struct kv_redis *k, const redisReply *r, int replicas)
{
	return check_wait_of(k, "a sync", r, replicas);
}

/* Say that partition P's primary has too few replicas for min_replicas. */
static void say_too_few(struct kv_redis *k, uint32_t p, int replicas)
{
	nadb_log("redis %s: the primary of partition %u has %d replicas connected, fewer "
		 "than min_replicas=%u: syncs fail (EIO) until enough confirm",
		 redis_conn_name(k->conn), p, replicas, k->min_replicas);
}

/* Partition P's primary has *REPLICAS: too few for min_replicas, even
 * when asked anew (one may have joined since)?  Then -EIO, said. */
static int enough_replicas(struct kv_redis *k, uint32_t p, int *replicas)
{
	if (*replicas >= (int)k->min_replicas)
		return 0;
	if (!redis_replicas_fresh(k->conn, p, replicas) && *replicas >= (int)k->min_replicas)
		return 0;
	say_too_few(k, p, *replicas);
	return -EIO;
}

/* Raise partition P's fence to our generation: 0, or -ENOLCK if a later
 * writer's is there already.  (A script's error reply would be logged as
 * a failure: this one answers 0 for "fenced out", 1 for "ours".) */
static const char raise_fence_script[] =
	"#!lua flags=allow-oom\n" SERVER_MS_FN FENCE_FUNCTIONS
	"if not fence_ok(KEYS[1], ARGV[1]) then return 0 end fence_raise(KEYS[1], ARGV[1]) "
	"return 1";

static int raise_fence(struct kv_redis *k, uint32_t p)
{
	char fence[KEY_SIZE];
	const char *argv[] = {"EVAL", raise_fence_script, "1", fence, k->fence_gen};
	size_t lens[] = {4, sizeof(raise_fence_script) - 1, 1, fence_name(k, p, fence),
			 k->fence_gen_len};
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, p, "raising a partition's fence", 5, argv, lens, &r);
	if (rc)
		return rc;
	if (r->type != REDIS_REPLY_INTEGER) {
		rc = redis_reply_error(k->conn, "raising a partition's fence", r);
	} else if (r->integer == 0) {
		nadb_log("redis %s: partition %u was written by a later holder of the store "
			 "lock than ours (%s): stop writing", redis_conn_name(k->conn), p,
			 k->fence_gen);
		rc = -ENOLCK;
	}
	freeReplyObject(r);
	return rc;
}

static int tallies_whole(struct kv_redis *k);

int kv_redis_set_fence(struct kv *kv, long long gen)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	assert(!k->follower && gen > 0);
	k->fence_gen_len = (size_t)snprintf(k->fence_gen, sizeof(k->fence_gen), "%lld", gen);
	/* Partition 0's first: it fences the partitions set, so that the
	 * list read after it is the last an earlier writer made. */
	int rc = raise_fence(k, 0);
	if (!rc && k->kv.apart)
		rc = load_parts(k);
	for (size_t i = 0; !rc && k->kv.apart && i < k->nparts; i++)
		if (k->parts[i] != 0)
			rc = raise_fence(k, k->parts[i]);
	return rc ? rc : tallies_whole(k);
}

void kv_redis_set_min_replicas(struct kv *kv, unsigned n)
{
	((struct kv_redis *)kv)->min_replicas = n;
}

static int kvr_sessions(struct kv *kv, uint32_t **live, size_t *n);
static size_t sessions_key(const struct kv_redis *k, char *buf);
static int session_still_on(struct kv_redis *k, const char *what);

/* ---- partition leases (backend.h, lease) ----
 *
 * "{nadb:NAME:pP}:lease" holds "SESSION GEN": partition P is written only
 * by session SESSION, which raised P's fence to GEN when it took the
 * lease.  GEN comes from the lock's counter (lockgen), so that a lease
 * taken after a lock compares with it, and each take's is new: a sync the
 * holder before sent late, with its own, is refused by the fence.  A lease
 * has no expiry of its own: it lasts as long as its session (sessions,
 * below), and one whose session's heartbeat ran out is anybody's to take
 * over.  "lease:want" names the last session that asked for P while
 * another held it (for LEASE_WANT_MS): the holder hears of it
 * (KV_LEASE_ASKED), syncs, and lets go. */
#define LEASE_WANT_MS "10000" /* ms: an ask for a lease stands this long */

static int compare_lease(const void *a, const void *b)
{
	return kv_compare_u32(&((const struct held_lease *)a)->part,
			      &((const struct held_lease *)b)->part);
}

static struct held_lease *lease_of(const struct kv_redis *k, uint32_t p)
{
	struct held_lease key = {.part = p};
	return k->nleases ? bsearch(&key, k->leases, k->nleases, sizeof(key), compare_lease)
			  : NULL;
}

/* What a script of ours writing partition P is fenced by (fence_ok):
 * the key into KEY (KEY_SIZE) and the generation into GEN (24 bytes).
 * P's fence at P's lease's generation; else at the store lock's -- but
 * for partition 0 of a leasing session without the lock, whose writes
 * there need no lease (chunk counts, the tally): the live sessions, at
 * ours, so that once it ran out (and the others may have settled what it
 * left) nothing of it lands. */
static size_t fenced_by(const struct kv_redis *k, uint32_t p, char *key, char gen[24])
{
	const struct held_lease *l = lease_of(k, p);
	if (!l && p == 0 && k->leasing && !strcmp(k->fence_gen, "0")) {
		snprintf(gen, 24, "s%u", k->kv.session);
		return sessions_key(k, key);
	}
	snprintf(gen, 24, "%s", l ? l->gen : k->fence_gen);
	return fence_name(k, p, key);
}

/* May rows of partition P be cached?  Not once this session leases
 * partitions, unless P is one of them: another session writes the rest. */
static bool cacheable_part(const struct kv_redis *k, uint32_t p)
{
	return !k->leasing || lease_of(k, p);
}

static bool cacheable(const struct kv_redis *k, enum kv_table t, const void *key, size_t klen)
{
	return cacheable_part(k, row_part(t, key, klen));
}

static bool cacheable_row(const void *k, enum kv_table t, const void *key, size_t klen)
{
	return cacheable(k, t, key, klen);
}

/* Partition P's lease key, or its ask's (WANT), into BUF (KEY_SIZE). */
static size_t lease_name(const struct kv_redis *k, uint32_t p, bool want, char *buf)
{
	return redis_key(k->conn, p, want ? "lease:want" : "lease", buf, KEY_SIZE);
}

/* KEYS[1] the lease, KEYS[2] the fence, KEYS[3] the ask; ARGV[1] our
 * session, ARGV[2] a new generation, ARGV[3] a dead holder's lease text
 * ("": none).  Ours if free, ours already or held by ARGV[3]: {1, ""};
 * else {0, the holder's text}, our ask noted; {-1, fence} if the fence
 * stands past the new generation (a damaged counter). */
static const char lease_take_script[] = "#!lua\n" SERVER_MS_FN FENCE_FUNCTIONS
	"local cur = redis.call('GET', KEYS[1]) "
	"if cur and string.match(cur, '^%d+') ~= ARGV[1] and cur ~= ARGV[3] then "
	"redis.call('SET', KEYS[3], ARGV[1], 'PX', '" LEASE_WANT_MS "') "
	"return {0, cur} end "
	"if not fence_ok(KEYS[2], ARGV[2]) then "
	"return {-1, redis.call('GET', KEYS[2]) or '0'} end "
	"redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2]) "
	"fence_raise(KEYS[2], ARGV[2]) "
	"if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end "
	"return {1, ''}";
/* KEYS[1] the lease; ARGV[1] our session: let it go if ours (1), else 0. */
static const char lease_release_script[] = "#!lua flags=allow-oom\n"
	"local cur = redis.call('GET', KEYS[1]) "
	"if not cur or string.match(cur, '^%d+') ~= ARGV[1] then return 0 end "
	"redis.call('DEL', KEYS[1]) return 1";

/* Counter NAME of partition 0 one up, for WHY: its new value into *N. */
static int count_up_p0(struct kv_redis *k, const char *name, const char *why, long long *n)
{
	char key[KEY_SIZE];
	const char *argv[] = {"INCR", key};
	size_t lens[] = {4, redis_key(k->conn, 0, name, key, sizeof(key))};
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, 0, why, 2, argv, lens, &r);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	if (r->type == REDIS_REPLY_INTEGER)
		*n = r->integer;
	else
		rc = redis_reply_error(k->conn, why, r);
	freeReplyObject(r);
	return rc;
}

/* A new generation from the lock's counter (p0), as text, into GEN. */
static int new_generation(struct kv_redis *k, char gen[24])
{
	long long n = 0;
	int rc = count_up_p0(k, "lockgen", "numbering a lease", &n);
	if (!rc && n <= 0) {
		nadb_log("redis %s: the lock's counter is damaged (%lld; nadb fsck)",
			 redis_conn_name(k->conn), n);
		rc = -EIO;
	}
	if (!rc)
		snprintf(gen, 24, "%lld", n);
	return rc;
}

/* One run of lease_take_script for partition P: 1 taken (GEN ours now),
 * 0 held by another (its text into HOLDER, KEY_SIZE), or -errno. */
static int run_take(struct kv_redis *k, uint32_t p, const char *gen, const char *dead,
		    char *holder)
{
	char lease[KEY_SIZE], fence[KEY_SIZE], want[KEY_SIZE], id[16];
	const char *argv[] = {"EVAL", lease_take_script, "3", lease, fence, want, id, gen, dead};
	size_t lens[] = {4, sizeof(lease_take_script) - 1, 1, lease_name(k, p, false, lease),
			 fence_name(k, p, fence), lease_name(k, p, true, want),
			 (size_t)snprintf(id, sizeof(id), "%u", k->kv.session), strlen(gen),
			 strlen(dead)};
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, p, "taking a partition's lease", 9, argv, lens, &r);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_STRING) {
		rc = redis_reply_error(k->conn, "taking a partition's lease", r);
	} else if (r->element[0]->integer < 0) {
		nadb_log("redis %s: partition %u's fence (%s) stands past a new generation "
			 "(%s): the lock's counter is damaged (nadb fsck)",
			 redis_conn_name(k->conn), p, r->element[1]->str, gen);
		rc = -EIO;
	} else {
		rc = (int)r->element[0]->integer;
		snprintf(holder, KEY_SIZE, "%s", r->element[1]->str);
	}
	freeReplyObject(r);
	return rc;
}

static int add_lease(struct kv_redis *k, uint32_t p, const char *gen)
{
	if (ARRAY_GROW(k->leases, k->nleases, k->leases_cap))
		return -ENOMEM;
	struct held_lease *l = &k->leases[k->nleases++];
	l->part = p;
	snprintf(l->gen, sizeof(l->gen), "%s", gen);
	qsort(k->leases, k->nleases, sizeof(*l), compare_lease);
	return 0;
}

/* Forget what this session may no longer trust of partitions it lost:
 * the cache (all of it: it is refilled as rows are read; emptied at the
 * next write or sync, as a stale one is, since rows a get handed out
 * stay valid until then), the inodes known to have no rows. */
static void forget_unleased(struct kv_redis *k)
{
	k->cache_stale = true;
	k->nempty = 0;
}

static int take_lease(struct kv_redis *k, uint32_t p)
{
	char gen[24], holder[KEY_SIZE];
	int rc = session_still_on(k, "taking a partition's lease");
	if (rc || lease_of(k, p))
		return rc;
	assert(k->kv.session && !k->follower);
	/* from the first ask on, rows of partitions not leased may be
	 * another's: none are cached */
	if (!k->leasing)
		forget_unleased(k);
	k->leasing = true;
	atomic_store(&k->beat_strict, true);
	rc = new_generation(k, gen);
	if (!rc)
		rc = run_take(k, p, gen, "", holder);
	if (rc == 0) { /* held: by a live session? */
		uint32_t *live = NULL, s = (uint32_t)strtoul(holder, NULL, 10);
		size_t n = 0;
		rc = kvr_sessions(&k->kv, &live, &n);
		bool alive = !rc && kv_session_listed(live, n, s);
		free(live);
		if (!rc && alive)
			return -EBUSY;
		if (!rc) {
			nadb_log("redis %s: partition %u's lease was session %u's, which is gone: "
				 "taken over", redis_conn_name(k->conn), p, s);
			rc = run_take(k, p, gen, holder, holder);
		}
		if (rc == 0)
			return -EBUSY; /* taken by another meanwhile */
	}
	if (rc < 0)
		return rc;
	k->parts_unknown = true; /* another may have listed P */
	return add_lease(k, p, gen);
}

static int release_lease(struct kv_redis *k, uint32_t p)
{
	struct held_lease *l = lease_of(k, p);
	if (!l)
		return 0;
	/* nothing of ours in flight: unsynced, of unknown fate, or short of
	 * its replicas' word (a failover could still lose it) */
	if (k->in_step || k->pending.rows || k->unsettled || k->nunconfirmed)
		return -EAGAIN;
	char lease[KEY_SIZE], id[16];
	const char *argv[] = {"EVAL", lease_release_script, "1", lease, id};
	size_t lens[] = {4, sizeof(lease_release_script) - 1, 1, lease_name(k, p, false, lease),
			 (size_t)snprintf(id, sizeof(id), "%u", k->kv.session)};
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, p, "letting a partition's lease go", 5, argv, lens, &r);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	if (r->type != REDIS_REPLY_INTEGER)
		rc = redis_reply_error(k->conn, "letting a partition's lease go", r);
	freeReplyObject(r);
	if (rc)
		return rc;
	/* ours no more, whatever Redis said (0: another took it over) */
	size_t i = (size_t)(l - k->leases);
	memmove(l, l + 1, (k->nleases - i - 1) * sizeof(*l));
	k->nleases--;
	forget_unleased(k);
	return 0;
}

/* Our session ran out while it leased (leases_lapsed): it is over. */
static void lost_leases_forgotten(struct kv_redis *k)
{
	if (!atomic_load(&k->leases_lapsed) || !atomic_exchange(&k->leases_lapsed, false))
		return;
	k->session_over = true;
	k->nleases = 0;
	forget_unleased(k);
}

/* -ENOLCK (logged) once this session is over. */
static int session_still_on(struct kv_redis *k, const char *what)
{
	lost_leases_forgotten(k);
	if (!k->session_over)
		return 0;
	nadb_log("redis %s: %s refused: session %u ran out while it leased partitions "
		 "(the store must be opened anew)", redis_conn_name(k->conn), what,
		 k->kv.session);
	return -ENOLCK;
}

/* Did another session ask for partition P, which we lease?  1, 0. */
static int lease_asked(struct kv_redis *k, uint32_t p)
{
	if (!lease_of(k, p))
		return 0;
	char want[KEY_SIZE];
	const char *argv[] = {"GET", want};
	size_t lens[] = {3, lease_name(k, p, true, want)};
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, p, "reading who asks for a lease", 2, argv, lens, &r);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	if (r->type == REDIS_REPLY_STRING)
		rc = strtoul(r->str, NULL, 10) != k->kv.session;
	else if (r->type != REDIS_REPLY_NIL)
		rc = redis_reply_error(k->conn, "reading who asks for a lease", r);
	freeReplyObject(r);
	return rc;
}

static int kvr_lease(struct kv *kv, uint32_t part, enum kv_lease_how how)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	switch (how) {
	case KV_LEASE_TAKE: return take_lease(k, part);
	case KV_LEASE_RELEASE: return release_lease(k, part);
	case KV_LEASE_ASKED: return lease_asked(k, part);
	}
	return -EINVAL;
}

/* The first partition but 0 the pending group writes that this session
 * does not lease (0: none, or it leases none). */
static uint32_t unleased_write(const struct kv_redis *k)
{
	for (int t = 0; k->leasing && t < KV_NTABLES; t++)
		for (struct row *r = k->pending.head[t]->next[0]; partitioned(t) && r;
		     r = r->next[0]) {
			uint32_t p = row_part(t, r->key, r->klen);
			if (p && !lease_of(k, p))
				return p;
		}
	return 0;
}

/* The partitions the pending group puts rows in that Redis does not list
 * yet, into *OUT (malloc'd), *N of them. */
static int new_parts(struct kv_redis *k, struct part_num **out, size_t *n)
{
	size_t cap = 0;
	*out = NULL;
	*n = 0;
	for (int t = 0; t < KV_NTABLES; t++) {
		if (!partitioned(t))
			continue;
		uint32_t last = 0; /* the partition named last (most rows repeat it) */
		for (struct row *r = k->pending.head[t]->next[0]; r; r = r->next[0]) {
			uint32_t p = row_part(t, r->key, r->klen);
			if (!r->val || p == last || part_known(k, p))
				continue;
			last = p;
			struct part_num num;
			snprintf(num.text, sizeof(num.text), "%u", p);
			bool seen = false;
			for (size_t i = 0; i < *n && !seen; i++)
				seen = !strcmp((*out)[i].text, num.text);
			if (seen)
				continue;
			if (ARRAY_GROW(*out, *n, cap)) {
				free(*out);
				*out = NULL;
				return -ENOMEM;
			}
			(*out)[(*n)++] = num;
		}
	}
	return 0;
}

/* The partitions B's commands write, in order, into *OUT (malloc'd). */
static int parts_of_batch(const struct batch *b, uint32_t **out, size_t *n)
{
	uint32_t *v = malloc((b->ncmds + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	memcpy(v, b->part, b->ncmds * sizeof(*v));
	qsort(v, b->ncmds, sizeof(*v), kv_compare_u32);
	size_t m = 0;
	for (size_t i = 0; i < b->ncmds; i++)
		if (m == 0 || v[m - 1] != v[i])
			v[m++] = v[i];
	*out = v;
	*n = m;
	return 0;
}

/* The change notice of the pending group's rows of partition P (every
 * partition's, with ALL) into *OUT (malloc'd) and *LEN: NOTICE_HEAD, then
 * for each row of a table in publish_mask its table (1 byte), its key's
 * length (2, big-endian) and its key; or NOTICE_ANY past NOTICE_MAX. */
static int build_notice(struct kv_redis *k, uint32_t p, bool all, char **out, size_t *len)
{
	size_t n = 0, cap = 0;
	char *buf = NULL;
	bool any = false;
	if (grow_array(&buf, &cap, sizeof(NOTICE_HEAD) - 1, 1))
		return -ENOMEM;
	memcpy(buf, NOTICE_HEAD, sizeof(NOTICE_HEAD) - 1);
	n = sizeof(NOTICE_HEAD) - 1;
	for (int t = 0; t < KV_NTABLES && !any; t++) {
		if (!(atomic_load(&k->publish_mask) & (1u << t)))
			continue;
		for (struct row *r = k->pending.head[t]->next[0]; r && !any; r = r->next[0]) {
			if (!all && row_part(t, r->key, r->klen) != p)
				continue;
			any = n + 3 + r->klen > NOTICE_MAX || r->klen > UINT16_MAX;
			if (any)
				break;
			if (grow_array(&buf, &cap, n + 3 + r->klen, 1)) {
				free(buf);
				return -ENOMEM;
			}
			buf[n] = (char)t;
			buf[n + 1] = (char)(r->klen >> 8);
			buf[n + 2] = (char)r->klen;
			memcpy(buf + n + 3, r->key, r->klen);
			n += 3 + r->klen;
		}
	}
	if (any) {
		memcpy(buf, NOTICE_ANY, sizeof(NOTICE_ANY) - 1);
		n = sizeof(NOTICE_ANY) - 1;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* One write of apply_script's: is it a counted table's ("+COUNT",
 * "=COUNT", "-COUNT": its hash, its set of zeros and its tally are
 * KEYS)? */
#define COUNTED_KEYS 3
static bool counted_write(const struct redis_cmd *c)
{
	return !strcmp(c->argv[0], "+COUNT") || !strcmp(c->argv[0], "=COUNT") ||
	       !strcmp(c->argv[0], "-COUNT");
}

/* One write of apply_script's: does it add (so that Redis refuses it when
 * out of memory)? */
static bool adds(const struct redis_cmd *c)
{
	return !strcmp(c->argv[0], "HSET") || !strcmp(c->argv[0], "ZADD") ||
	       !strcmp(c->argv[0], "+ROWS") || !strcmp(c->argv[0], "+COUNT") ||
	       !strcmp(c->argv[0], "=COUNT");
}

/* The fenced script of one transaction, and what its arguments point to. */
struct apply {
	const char **argv;
	size_t *lens;
	char (*counts)[12]; /* each write's argument count, as text */
	char (*fences)[KEY_SIZE]; /* the fences checked */
	char *gens;               /* the generation each is checked against */
	size_t gens_len;
	char nkeys[12];           /* how many keys (mark, fences, counted writes'
				   * hashes, zeros and tallies), as text */
	char nfences[12];         /* how many fences, as text */
	char mark[KEY_SIZE];      /* our session's mark (syncs run once) */
	char attempt[24];         /* the sync's attempt, as text */
};

static void free_apply(struct apply *ap)
{
	free(ap->argv);
	free(ap->lens);
	free(ap->counts);
	free(ap->fences);
	free(ap->gens);
}

/* The fenced script applying B's writes of partition P (every one, with
 * ALL), into *CMD, built in AP (free_apply it, whatever this returns). */
static int build_apply(struct kv_redis *k, const struct batch *b, uint32_t p, bool all,
		       struct apply *ap, struct redis_cmd *cmd)
{
	/* the fences: P's; with ALL partition 0's and every one written */
	uint32_t *parts = NULL;
	size_t nparts = 1;
	int rc = all ? parts_of_batch(b, &parts, &nparts) : 0;
	if (rc)
		return rc;
	bool with_p0 = all && (!nparts || parts[0] != 0);
	size_t nf = nparts + with_p0;
	ap->fences = malloc(nf * sizeof(*ap->fences));
	ap->gens = malloc(nf * sizeof(k->fence_gen));
	ap->gens_len = 0;
	for (size_t i = 0; ap->fences && ap->gens && i < nf; i++) {
		uint32_t fp = !all ? p : with_p0 && i == 0 ? 0 : parts[i - with_p0];
		char gen[24];
		fenced_by(k, fp, ap->fences[i], gen);
		ap->gens_len += (size_t)sprintf(ap->gens + ap->gens_len, "%s%s", i ? " " : "", gen);
	}
	free(parts);
	size_t nargs = 7 + nf, ncmds = 0, nhashes = 0;
	bool puts = false;
	for (size_t i = 0; i < b->ncmds; i++) {
		if (all || b->part[i] == p) {
			nargs += 1 + (size_t)b->cmds[i].argc;
			ncmds++;
			puts = puts || adds(&b->cmds[i]);
			nhashes += counted_write(&b->cmds[i]) ? COUNTED_KEYS : 0;
		}
	}
	nargs += nhashes;
	ap->argv = malloc(nargs * sizeof(*ap->argv));
	ap->lens = malloc(nargs * sizeof(*ap->lens));
	ap->counts = malloc((ncmds + 1) * sizeof(*ap->counts));
	if (!ap->argv || !ap->lens || !ap->counts || !ap->fences || !ap->gens)
		return -ENOMEM;
	const char **a = ap->argv;
	size_t *l = ap->lens, n = 0, c = 0;
	a[n] = "EVAL", l[n++] = 4;
	if (puts)
		a[n] = apply_puts_script, l[n++] = sizeof(apply_puts_script) - 1;
	else
		a[n] = apply_dels_script, l[n++] = sizeof(apply_dels_script) - 1;
	a[n] = ap->nkeys, l[n++] = (size_t)snprintf(ap->nkeys, sizeof(ap->nkeys), "%zu",
						    1 + nf + nhashes);
	a[n] = ap->mark, l[n++] = mark_name(k, p, ap->mark);
	for (size_t i = 0; i < nf; i++)
		a[n] = ap->fences[i], l[n++] = strlen(ap->fences[i]);
	for (size_t i = 0; i < b->ncmds; i++)
		if ((all || b->part[i] == p) && counted_write(&b->cmds[i]))
			for (int j = 1; j <= COUNTED_KEYS; j++) /* hash, zeros, tally */
				a[n] = b->cmds[i].argv[j], l[n++] = b->cmds[i].argvlen[j];
	a[n] = ap->gens, l[n++] = ap->gens_len;
	a[n] = ap->attempt, l[n++] = (size_t)snprintf(ap->attempt, sizeof(ap->attempt), "%llu",
						      (unsigned long long)k->sync_attempt);
	a[n] = ap->nfences, l[n++] = (size_t)snprintf(ap->nfences, sizeof(ap->nfences), "%zu", nf);
	for (size_t i = 0; i < b->ncmds; i++) {
		const struct redis_cmd *w = &b->cmds[i];
		if (!all && b->part[i] != p)
			continue;
		assert(w->argc >= 2); /* VERB KEY [ARGS] */
		a[n] = ap->counts[c];
		l[n++] = (size_t)snprintf(ap->counts[c++], sizeof(*ap->counts), "%d", w->argc);
		for (int j = 0; j < w->argc; j++)
			a[n] = w->argv[j], l[n++] = w->argvlen[j];
	}
	assert(n == nargs && c == ncmds);
	*cmd = (struct redis_cmd){(int)n, a, l};
	return 0;
}

/* Send B's writes of partition P (every one, with ALL) as one fenced
 * script in a MULTI/EXEC to the server of P, then WAIT for its replicas.
 * With followers listening, the transaction publishes its rows' keys
 * too. */
static int send_transaction(struct kv_redis *k, const struct batch *b, uint32_t p, bool all,
			    struct redis_cmd *tx, redisReply **replies)
{
	static const char *multi[] = {"MULTI"}, *exec_[] = {"EXEC"};
	static const size_t multi_len[] = {5}, exec_len[] = {4};
	int replicas = 0;
	int rc = redis_replicas_in(k->conn, p, &replicas);
	if (!rc && replicas < (int)k->min_replicas) /* one may have joined */
		rc = redis_replicas_fresh(k->conn, p, &replicas);
	if (rc) /* unreachable (logged): the group stays for the next sync */
		return rc == -ENOMEM ? rc : -EIO;
	struct apply ap = {0};
	size_t m = 0;
	tx[m++] = (struct redis_cmd){1, multi, multi_len};
	rc = build_apply(k, b, p, all, &ap, &tx[m++]);
	if (rc) {
		free_apply(&ap);
		return rc;
	}
	size_t exec = m;
	tx[m++] = (struct redis_cmd){1, exec_, exec_len};
	/* the notice after the EXEC, in the same round trip: a refused
	 * PUBLISH must not abort the transaction */
	char *notice = NULL;
	size_t notice_len = 0;
	struct redis_publish pub;
	if (atomic_load(&k->publish_mask) && build_notice(k, p, all, &notice, &notice_len)) {
		notice = NULL; /* no memory for the rows: say "anything" */
		notice_len = sizeof(NOTICE_ANY) - 1;
	}
	size_t published = m;
	if (notice_len > sizeof(NOTICE_HEAD) - 1 || (!notice && notice_len))
		tx[m++] = redis_publish_cmd(k->conn, &pub, notice ? notice : NOTICE_ANY, notice_len);
	size_t waited = m;
	struct redis_wait w;
	if (replicas > 0)
		tx[m++] = redis_wait_cmd(&w, replicas, WAIT_MS);
	unsigned fault = k->fault & (KV_REDIS_FAULT_NOT_SENT | KV_REDIS_FAULT_LOSE_REPLY |
				     KV_REDIS_FAULT_SENT_TWICE);
	k->fault &= ~fault;
	if ((fault & KV_REDIS_FAULT_SENT_TWICE) && !redis_pipeline_in(k->conn, p, tx, m, replies))
		for (size_t i = 0; i < m; i++)
			freeReplyObject(replies[i]);
	rc = fault & KV_REDIS_FAULT_NOT_SENT ? -EIO : redis_pipeline_in(k->conn, p, tx, m, replies);
	free(notice);
	free_apply(&ap);
	if (rc)
		return rc;
	if (published < waited && replies[published]->type == REDIS_REPLY_ERROR) {
		redis_reply_error(k->conn, "telling followers of a sync (they now see "
			"changes only as their kernel caches lapse)", replies[published]);
		atomic_store(&k->publish_refused, true);
		atomic_store(&k->publish_mask, 0);
	}
	rc = check_exec(k, replies, exec);
	/* Committed on the primary: what its replicas confirmed decides only
	 * what the sync answers (min_replicas), not whether it happened. */
	if (!rc && replicas < (int)k->min_replicas)
		say_too_few(k, p, replicas);
	if (!rc)
		rc = note_confirmed(k, p, replicas > 0 ? !check_wait(k, replies[waited], replicas)
						       : k->min_replicas == 0);
	for (size_t i = 0; i < m; i++)
		freeReplyObject(replies[i]);
	return rc || !(fault & KV_REDIS_FAULT_LOSE_REPLY) ? rc : -EIO;
}

void kv_redis_inject_fault(struct kv *kv, unsigned faults)
{
	((struct kv_redis *)kv)->fault = faults;
}

/* WAIT again where the last transaction was not confirmed by
 * min_replicas replicas: 0 once every such partition's are, else -EIO
 * (logged). */
static int confirm_waits(struct kv_redis *k)
{
	int rc = 0;
	for (size_t i = k->nunconfirmed; i-- > 0;) {
		uint32_t p = k->unconfirmed[i];
		int replicas = 0;
		int e = redis_replicas_fresh(k->conn, p, &replicas);
		if (!e && replicas < (int)k->min_replicas) {
			say_too_few(k, p, replicas);
			e = -EIO;
		}
		struct redis_wait w;
		struct redis_cmd cmd = redis_wait_cmd(&w, replicas, WAIT_MS);
		redisReply *r = NULL;
		if (!e)
			e = redis_pipeline_in(k->conn, p, &cmd, 1, &r);
		if (!e) {
			e = check_wait(k, r, replicas);
			freeReplyObject(r);
		}
		if (!e)
			k->unconfirmed[i] = k->unconfirmed[--k->nunconfirmed];
		else
			rc = -EIO;
	}
	return rc;
}

/* The pending adds of partition P (every partition's, with ALL), once
 * the fate of the attempt that carried them is known (syncs run once):
 * RAN, and what it carried is in Redis (so no longer to be added; a
 * create ran, so what is left adds), or it never will. */
static void settle_rows(struct kv_redis *k, uint32_t p, bool all, bool ran)
{
	if (all || p == 0) { /* the counted rows' partition: their weights too */
		if (ran)
			weights_clear(&k->carried_w);
		else if (weights_move(&k->pending_w, &k->carried_w))
			k->weights_lost = true;
	}
	for (int t = 0; t < KV_NTABLES; t++) {
		if (!bucketed(t))
			continue;
		for (struct row *r = k->pending.head[t]->next[0]; r; r = r->next[0]) {
			if (!r->carried || (!all && row_part(t, r->key, r->klen) != p))
				continue;
			assert(r->how != ROW_SET); /* a put over an add clears it */
			if (ran) /* what it carried is in */
				r->delta -= r->sent;
			if (ran && r->init_carried) { /* a create ran: what is left adds */
				r->how = ROW_ADD;
				drop_init(r);
			}
			r->sent = 0;
			r->carried = r->init_carried = false;
		}
	}
}

/* Did the attempt whose fate a failed sync left unknown (unsettled) run
 * in its partition?  settle_script answers 1 (it ran: the mark is its
 * number) or 0 (it did not, and now never will: the mark is sealed past
 * it, at its number and a half, below the next attempt's).  Asked twice
 * (a reconnect sends it again), it answers the same. */
static const char settle_script[] = "#!lua flags=allow-oom\n"
	"local a = tonumber(ARGV[1]) "
	"local m = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 "
	"if m == a then return 1 end "
	"if m < a then redis.call('SET', KEYS[1], ARGV[1] .. '.5', 'PX', '" MARK_TTL_MS "') end "
	"return 0";

static int settle_attempt(struct kv_redis *k)
{
	if (!k->unsettled)
		return 0;
	char mark[KEY_SIZE], attempt[24];
	uint32_t p = k->unsettled_part;
	const char *argv[] = {"EVAL", settle_script, "1", mark, attempt};
	size_t lens[] = {4, sizeof(settle_script) - 1, 1, mark_name(k, p, mark),
			 (size_t)snprintf(attempt, sizeof(attempt), "%llu",
					  (unsigned long long)k->unsettled)};
	redisReply *r = NULL;
	int rc = 0;
	if (k->fault & KV_REDIS_FAULT_SETTLE_TWICE) { /* the first reply lost */
		k->fault &= ~(unsigned)KV_REDIS_FAULT_SETTLE_TWICE;
		rc = redis_run_in(k->conn, p, "asking whether a failed sync ran", 5, argv, lens, &r);
		freeReplyObject(r);
	}
	if (!rc)
		rc = redis_run_in(k->conn, p, "asking whether a failed sync ran", 5, argv, lens, &r);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	if (r->type != REDIS_REPLY_INTEGER) {
		rc = redis_reply_error(k->conn, "asking whether a failed sync ran", r);
	} else {
		settle_rows(k, p, !k->kv.apart, r->integer == 1);
		k->unsettled = 0;
	}
	freeReplyObject(r);
	return rc;
}

/* Send the group B: on one server one MULTI/EXEC, every step whole or
 * none; on a cluster, where a transaction stays in one slot, one for each
 * partition, partition 0's first (backend.h, kv.apart: a step taking
 * chunk references there comes before the key's step that names them).
 * A failure leaves the whole group pending: it is sent again whole, as a
 * later attempt, once the fate of the failed transaction is known
 * (settle_attempt): the transactions before it ran, those after it were
 * not sent. */
static int send_group(struct kv_redis *k, const struct batch *b)
{
	/* MULTI, the script, EXEC, a PUBLISH, WAIT */
	struct redis_cmd *tx = malloc(5 * sizeof(*tx));
	redisReply **replies = calloc(5, sizeof(*replies));
	uint32_t *parts = NULL;
	size_t nparts = 0;
	int rc = tx && replies ? 0 : -ENOMEM;
	if (!rc && !k->kv.apart) {
		rc = send_transaction(k, b, 0, true, tx, replies);
		if (rc)
			k->unsettled = k->sync_attempt, k->unsettled_part = 0;
	} else if (!rc) {
		rc = parts_of_batch(b, &parts, &nparts);
	}
	for (size_t i = 0; !rc && i < nparts; i++) {
		rc = send_transaction(k, b, parts[i], false, tx, replies);
		if (!rc)
			settle_rows(k, parts[i], false, true);
		else
			k->unsettled = k->sync_attempt, k->unsettled_part = parts[i];
		for (size_t j = i + 1; rc && j < nparts; j++)
			settle_rows(k, parts[j], false, false);
	}
	free(parts);
	free(tx);
	free(replies);
	return rc;
}

/* Tell followers that anything may have changed (announce). */
static void announce_any(struct kv_redis *k)
{
	if (!atomic_exchange(&k->announce, false))
		return;
	struct redis_publish pub;
	struct redis_cmd any = redis_publish_cmd(k->conn, &pub, NOTICE_ANY, sizeof(NOTICE_ANY) - 1);
	redisReply *r = NULL;
	if (!redis_run(k->conn, "telling new followers", any.argc, any.argv, any.argvlen, &r))
		freeReplyObject(r);
}

static int kvr_sync(struct kv *kv)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	assert(!k->in_step); /* backend.h: sync is outside any step */
	release_held(k);
	announce_any(k);
	/* what a failed sync sent is known to have run or not before more is */
	int rc = settle_attempt(k);
	if (!rc)
		rc = tallies_whole(k);
	if (rc)
		return rc;
	/* the partitions a sync before left unconfirmed come first */
	int unconfirmed = k->nunconfirmed ? confirm_waits(k) : 0;
	if (k->pending.rows == 0) {
		k->unsynced = 0;
		assert(!k->unsettled); /* settled above */
		weights_clear(&k->pending_w); /* (none, but for a group dropped) */
		weights_clear(&k->carried_w);
		k->weights_lost = false;
		return unconfirmed;
	}
	if ((rc = session_still_on(k, "a sync")))
		return rc;
	uint32_t unleased = unleased_write(k);
	if (unleased) { /* the engine's mistake: nothing is sent */
		nadb_log("redis %s: a sync writes partition %u, whose lease this session "
			 "does not hold: refused", redis_conn_name(k->conn), unleased);
		return -ENOLCK;
	}
	struct batch b = {0};
	size_t buckets = 0, runs = 0, bytes = 1;
	for (int t = 0; t < KV_NTABLES; t++) {
		if (bucketed(t)) {
			buckets += pending_buckets(k, t);
		} else {
			runs += pending_runs(k, t);
			bytes += sorted_bytes(k, t);
		}
	}
	struct bucket_name *names = malloc((buckets + 1) * sizeof(*names));
	struct zset_name *zsets = malloc((2 * runs + 1) * sizeof(*zsets)), *zat = zsets;
	uint8_t *members = malloc(bytes), *at = members;
	struct part_num *nums = NULL;
	size_t fresh_parts = 0;
	rc = names && zsets && members ? 0 : -ENOMEM;
	if (!rc && k->parts_unknown) /* new_parts must know which are listed */
		rc = load_parts(k);
	if (!rc)
		rc = new_parts(k, &nums, &fresh_parts);
	if (!rc)
		rc = size_batch(k, &b, buckets, runs, 4, 2 * fresh_parts);
	if (rc) {
		free(nums);
		free(names);
		free(zsets);
		free(members);
		free_batch(&b);
		return rc;
	}
	/* first the partitions that get their first rows: a scan finds them */
	char parts_key[KEY_SIZE];
	if (fresh_parts) {
		b.cur = 0;
		start_write(&b, "ZADD", parts_key,
			    redis_key(k->conn, 0, "partitions", parts_key, KEY_SIZE));
		for (size_t i = 0; i < fresh_parts; i++) {
			add_arg(&b, nums[i].text, strlen(nums[i].text));
			add_arg(&b, nums[i].text, strlen(nums[i].text));
		}
		end_cmd(&b);
	}
	size_t named = 0;
	for (int t = 0; t < KV_NTABLES; t++) {
		if (bucketed(t))
			named += add_bucket_rows(k, &b, t, names + named);
		else
			add_sorted_rows(k, &b, t, &at, &zat);
	}
	assert(named == buckets && at <= members + bytes && zat <= zsets + 2 * runs);
	k->nempty = 0; /* the group may write rows where there were none */
	k->sync_attempt++;
	assert(k->kv.session); /* a writer: the mark is its session's */
	/* the group's weights go with this attempt (settle_rows decides) */
	rc = weights_move(&k->carried_w, &k->pending_w);
	if (!rc)
		rc = send_group(k, &b);
	if (rc && !k->unsettled) /* nothing sent (or known to have run) */
		k->weights_lost |= weights_move(&k->pending_w, &k->carried_w) != 0;
	free_batch(&b);
	free(names);
	free(zsets);
	free(members);
	if (rc) {
		free(nums);
		return rc == -ENOMEM || rc == -ENOSPC || rc == -EROFS || rc == -EACCES ||
				       rc == -ENOLCK ? rc : -EIO;
	}
	/* What was written is now what Redis holds: the cache learns it
	 * (release_held emptied a stale one above). */
	note_synced_fresh(k);
	for (size_t i = 0; i < fresh_parts && !k->parts_unknown; i++)
		if (add_part(k, (uint32_t)strtoul(nums[i].text, NULL, 10)))
			k->parts_unknown = true; /* read again before the next use */
	free(nums);
	struct overlay *c = cache_of(k);
	if (!c || fold_into(c, &k->pending, true, uncached_tables(k),
			    k->leasing ? cacheable_row : NULL, k) ||
	    k->cache.bytes > CACHE_MAX_BYTES)
		overlay_clear(&k->cache);
	k->others_since_sync = k->others_seen;
	overlay_clear(&k->pending);
	weights_clear(&k->carried_w);
	k->weights_lost = false; /* none left to guess: Redis's tally says all */
	k->unsynced = 0;
	return k->nunconfirmed ? -EIO : 0;
}

/* Partitions still to be confirmed by replicas count too, and an
 * announcement due: a sync has something to do for them. */
static uint64_t kvr_unsynced(struct kv *kv)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	return k->unsynced + k->nunconfirmed + atomic_load(&k->announce) + k->weights_lost;
}

/* Run CMD in partition P, then a WAIT for P's replicas in the same round
 * trip: CMD's reply into R[0], WAIT's into R[1] (NULL: no replica to wait
 * for), the replicas there are into *REPLICAS.  -EIO, said, when P's
 * primary has fewer than min_replicas. */
static int run_then_wait(struct kv_redis *k, uint32_t p, struct redis_cmd cmd, redisReply *r[2],
			 int *replicas)
{
	*replicas = 0;
	r[0] = r[1] = NULL;
	int rc = redis_replicas_in(k->conn, p, replicas);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	if ((rc = enough_replicas(k, p, replicas)))
		return rc;
	struct redis_wait w;
	struct redis_cmd cmds[] = {cmd, redis_wait_cmd(&w, *replicas, WAIT_MS)};
	rc = redis_pipeline_in(k->conn, p, cmds, *replicas > 0 ? 2 : 1, r);
	return rc == -ENOMEM || !rc ? rc : -EIO;
}

/* After run_then_wait: RC, or what the WAIT says of WHAT if RC is 0 (as
 * check_wait); both replies freed. */
static int end_wait(struct kv_redis *k, const char *what, redisReply *r[2], int replicas,
		    int rc)
{
	if (!rc && r[1])
		rc = check_wait_of(k, what, r[1], replicas);
	freeReplyObject(r[0]);
	if (r[1])
		freeReplyObject(r[1]);
	return rc;
}

/* INCRBY of counter WHAT of partition P by N, at once and outside the
 * group: what Redis acknowledged is never handed out again, whoever asks
 * next.  Then a WAIT for P's replicas, so that a failover does not take
 * the claim back while the numbers are in use (fewer replicas in time is
 * logged, as for a sync).  The counter's new value into *OUT. */
static int count_up(struct kv_redis *k, uint32_t p, const char *what, uint64_t n,
		    uint64_t *out)
{
	char key[KEY_SIZE], by[24];
	const char *incr[] = {"INCRBY", key, by};
	size_t incr_lens[] = {6, redis_key(k->conn, p, what, key, KEY_SIZE),
			      (size_t)snprintf(by, sizeof(by), "%llu", (unsigned long long)n)};
	redisReply *r[2];
	int replicas;
	int rc = run_then_wait(k, p, (struct redis_cmd){3, incr, incr_lens}, r, &replicas);
	if (rc)
		return rc;
	if (r[0]->type != REDIS_REPLY_INTEGER || r[0]->integer < (long long)n)
		rc = redis_reply_error(k->conn, "claiming inode numbers", r[0]);
	else
		*out = (uint64_t)r[0]->integer;
	return end_wait(k, "a claim of numbers", r, replicas, rc);
}

/* Partition P's numbers are P's own counter "inos" added to its first
 * number (the partition's directory's, claimed with the partition). */
static int kvr_claim_inos(struct kv *kv, uint64_t near, uint64_t n, uint64_t *first)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	uint64_t end;
	int rc;
	if (near == 0) { /* a new partition: its directory's number */
		assert(n == 1);
		if ((rc = count_up(k, 0, "parts", 1, &end)))
			return rc;
		if (end > KV_PART_MAX) {
			nadb_log("redis %s: every partition number is used (%u): no more "
				 "namespaces", redis_conn_name(k->conn), KV_PART_MAX);
			return -ENOSPC;
		}
		*first = end << KV_PART_SHIFT;
	} else {
		uint32_t p = kv_partition(near);
		if ((rc = count_up(k, p, "inos", n, &end)))
			return rc;
		if (end >= (1ULL << KV_PART_SHIFT)) {
			nadb_log("redis %s: partition %u has used every inode number",
				 redis_conn_name(k->conn), p);
			return -ENOSPC;
		}
		*first = ((uint64_t)p << KV_PART_SHIFT) + end - n + 1;
	}
	k->fresh_first = *first;
	k->fresh_end = *first + n;
	return 0;
}

/* ---- the zeros noted, checked (kv_ops.check) ------------------------------
 *
 * Each row at count 0 of a counted table must be a member of its zeros
 * (or it is never freed: space), and each member must name a row at 0
 * (or the count it notes is wrong; the free script would drop it).  The
 * zeros are few (freed at each sync), so they are read whole and each
 * row at 0 looked up among them.  Repair drops the members naming no
 * row at 0 at once (a member gone frees nothing), but notes no row: the
 * count of a row at 0 may be wrong, which the caller's own checks find
 * later and mend in its group; a row it finds at 0 rightly it writes
 * again at 0, and the sync's script notes it then (zero_noted). */

struct zeros_walk {
	const redisReply **members; /* sorted by zeros_order */
	size_t n;
	bool *seen;            /* members naming a row at 0 */
	struct pair *rows;     /* rows at 0 not noted (keys copied) */
	size_t nrows, cap;
};

static int zeros_order(const void *a, const void *b)
{
	const redisReply *x = *(const redisReply *const *)a, *y = *(const redisReply *const *)b;
	int c = memcmp(x->str, y->str, x->len < y->len ? x->len : y->len);
	return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* A row of the counted table: at 0 and not a member, kept (a copy). */
static int note_row_at_zero(void *ctx, const void *key, size_t klen, const void *val,
			    size_t vlen)
{
	struct zeros_walk *z = ctx;
	if (!kv_count_is(val, vlen, 0))
		return 0;
	redisReply want = {.type = REDIS_REPLY_STRING, .str = (char *)key, .len = klen};
	const redisReply *w = &want;
	const redisReply **m = z->n ? bsearch(&w, z->members, z->n, sizeof(*m), zeros_order) : NULL;
	if (m) {
		z->seen[m - z->members] = true;
		return 0;
	}
	if (ARRAY_GROW(z->rows, z->nrows, z->cap))
		return -ENOMEM;
	char *copy = malloc(klen ? klen : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, key, klen);
	z->rows[z->nrows++] = (struct pair){.key = copy, .klen = klen};
	return 0;
}

/* Members of T's zeros naming no row at 0 (STALE of Z's) removed. */
static int drop_stale_zeros(struct kv_redis *k, enum kv_table t, const struct zeros_walk *z,
			    size_t stale)
{
	size_t argc = 2 + stale;
	const char **argv = malloc(argc * sizeof(*argv));
	size_t *lens = malloc(argc * sizeof(*lens));
	char zeros[KEY_SIZE];
	int rc = argv && lens ? 0 : -ENOMEM;
	if (!rc) {
		size_t a = 0;
		argv[a] = "ZREM", lens[a++] = 4;
		argv[a] = zeros, lens[a++] = zeros_name(k, t, 0, zeros);
		for (size_t i = 0; i < z->n; i++)
			if (!z->seen[i])
				argv[a] = z->members[i]->str, lens[a++] = z->members[i]->len;
		assert(a == argc);
		redisReply *r;
		rc = redis_run_in(k->conn, 0, "dropping notes of rows at zero", (int)argc, argv,
				  lens, &r);
		if (!rc)
			freeReplyObject(r);
	}
	free(argv);
	free(lens);
	return rc;
}

/* Say one problem of the zeros of T (KEY, KLEN: the row's key). */
static void zeros_problem(enum kv_table t, const char *what, const char *key, size_t klen,
			  const char *mend, void (*problem)(void *ctx, const char *line), void *ctx)
{
	char hex[17] = "";
	for (size_t i = 0; i < klen && i < 8; i++)
		snprintf(hex + 2 * i, 3, "%02x", (uint8_t)key[i]);
	char line[300];
	snprintf(line, sizeof(line), "%s %s%s: %s%s", kv_table_name(t), hex,
		 klen > 8 ? "..." : "", what, mend);
	if (problem)
		problem(ctx, line);
}

static int check_zeros_noted(struct kv_redis *k, enum kv_table t, bool repair,
			     void (*problem)(void *ctx, const char *line), void *ctx,
			     uint64_t *problems, uint64_t *mended)
{
	char zeros[KEY_SIZE];
	const char *argv[] = {"ZRANGE", zeros, "0", "-1"};
	size_t lens[] = {6, zeros_name(k, t, 0, zeros), 1, 2};
	redisReply *r;
	int rc = redis_run_in(k->conn, 0, "reading the rows at zero", 4, argv, lens, &r);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	struct zeros_walk z = {.n = is_array(r) ? r->elements : 0};
	if (!is_array(r))
		rc = redis_reply_error(k->conn, "reading the rows at zero", r);
	z.members = malloc((z.n ? z.n : 1) * sizeof(*z.members));
	z.seen = calloc(z.n ? z.n : 1, sizeof(*z.seen));
	if (!rc && (!z.members || !z.seen))
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < z.n; i++)
		if ((z.members[i] = r->element[i])->type != REDIS_REPLY_STRING)
			rc = redis_reply_error(k->conn, "reading the rows at zero", r);
	if (!rc && z.n)
		qsort(z.members, z.n, sizeof(*z.members), zeros_order);
	if (!rc)
		rc = kvr_scan(&k->kv, t, NULL, 0, note_row_at_zero, &z);
	for (size_t i = 0; !rc && i < z.nrows; i++, ++*problems)
		zeros_problem(t, "at count 0 but not noted to be freed: it never would be",
			      z.rows[i].key, z.rows[i].klen,
			      repair ? " (noted once its count is checked)" : "", problem, ctx);
	size_t stale = 0;
	for (size_t i = 0; !rc && i < z.n; i++)
		if (!z.seen[i]) {
			zeros_problem(t, "noted to be freed but not at count 0",
				      z.members[i]->str, z.members[i]->len,
				      repair ? " (note dropped)" : "", problem, ctx);
			stale++;
		}
	*problems += stale;
	if (!rc && repair && stale && !(rc = drop_stale_zeros(k, t, &z, stale)))
		*mended += stale;
	for (size_t i = 0; i < z.nrows; i++)
		free((void *)z.rows[i].key);
	free(z.rows);
	free(z.members);
	free(z.seen);
	freeReplyObject(r);
	return rc;
}

/* ---- tallies (kv_ops.tally) -----------------------------------------------
 *
 * A counted table's tally is a hash in partition 0 (tally_name) that every
 * script writing the table's rows keeps (tallied): only there can it be
 * told whether a create made a row or added to another process's, and
 * which rows a free pass deleted.  Its field "whole" says that it weighs
 * every row: a store a nadb before tallies wrote has none, and its writer
 * weighs every row once (retally) when it has raised the fences, so that
 * no late sync of an earlier writer lands meanwhile, and before its first
 * sync (tallies_whole).  fsck
 * weighs them again into a hash of its own and compares. */

#define TALLY_WHOLE "whole"
#define TALLY_BUCKETS 64 /* buckets a script weighs at most */

/* KEYS[1] the table's bucket names, KEYS[2] the tally added to; ARGV[1]
 * the first bucket ("-", or "(" and the last one weighed), ARGV[2]
 * buckets at most, ARGV[3] the hashes' prefix: the last bucket weighed,
 * "" after the table's last. */
static const char tally_buckets_script[] = "#!lua\n" SERVER_MS_FN COUNT_FUNCTIONS TALLY_FUNCTIONS
	"local b = redis.call('ZRANGE', KEYS[1], ARGV[1], '+', 'BYLEX', 'LIMIT', 0, ARGV[2]) "
	"for i = 1, #b do local h = redis.call('HGETALL', ARGV[3] .. b[i]) "
	"for j = 2, #h, 2 do tallied(KEYS[2], nil, h[j]) end end "
	"tallies_written() "
	"if #b < tonumber(ARGV[2]) then return '' end return b[#b]";

/* Run the command ARGV (ARGC, LENS) in partition 0 for WHY, its reply
 * dropped. */
static int run_p0(struct kv_redis *k, const char *why, int argc, const char **argv,
		  const size_t *lens)
{
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, 0, why, argc, argv, lens, &r);
	if (!rc && r->type == REDIS_REPLY_ERROR)
		rc = redis_reply_error(k->conn, why, r);
	if (r)
		freeReplyObject(r);
	return rc == -ENOMEM || !rc ? rc : -EIO;
}

/* Weigh every row of T into the hash DEST (emptied first), and say it is
 * whole. */
static int retally(struct kv_redis *k, enum kv_table t, const char *dest)
{
	char zset[KEY_SIZE], prefix[KEY_SIZE], from[KEY_SIZE + 2] = "-", max[12];
	size_t flen = 1; /* bucket names are bytes: NUL among them */
	const char *del[] = {"DEL", dest};
	size_t dlens[] = {3, strlen(dest)};
	int rc = run_p0(k, "emptying a tally", 2, del, dlens);
	size_t zlen = zset_name(k, t, 0, zset), plen = hash_prefix(k, t, 0, prefix);
	size_t mlen = (size_t)snprintf(max, sizeof(max), "%d", TALLY_BUCKETS);
	while (!rc) {
		const char *argv[] = {"EVAL", tally_buckets_script, "2", zset, dest, from, max, prefix};
		size_t lens[] = {4, sizeof(tally_buckets_script) - 1, 1, zlen, strlen(dest),
				 flen, mlen, plen};
		redisReply *r = NULL;
		rc = redis_run_in(k->conn, 0, "weighing the chunks", 8, argv, lens, &r);
		if (rc) {
			rc = rc == -ENOMEM ? rc : -EIO;
			break;
		}
		if (r->type != REDIS_REPLY_STRING || r->len > KEY_SIZE) {
			rc = redis_reply_error(k->conn, "weighing the chunks", r);
		} else if (r->len == 0) {
			freeReplyObject(r);
			break;
		} else {
			from[0] = '(';
			memcpy(from + 1, r->str, r->len);
			flen = r->len + 1;
		}
		freeReplyObject(r);
	}
	const char *whole[] = {"HSET", dest, TALLY_WHOLE, "1"};
	size_t wlens[] = {4, strlen(dest), strlen(TALLY_WHOLE), 1};
	return rc ? rc : run_p0(k, "marking a tally whole", 4, whole, wlens);
}

/* The hash KEY whole (HGETALL) into *OUT; -ENODATA if it is not marked
 * whole. */
static int read_tally(struct kv_redis *k, const char *key, redisReply **out)
{
	const char *argv[] = {"HGETALL", key};
	size_t lens[] = {7, strlen(key)};
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, 0, "reading a tally", 2, argv, lens, &r);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
		rc = redis_reply_error(k->conn, "reading a tally", r);
		freeReplyObject(r);
		return rc;
	}
	bool whole = false;
	for (size_t i = 0; i < r->elements; i += 2)
		whole = whole || (r->element[i]->type == REDIS_REPLY_STRING &&
				  !strcmp(r->element[i]->str, TALLY_WHOLE));
	if (!whole) {
		freeReplyObject(r);
		return -ENODATA;
	}
	*out = r;
	return 0;
}

/* A field's value of a tally reply; false if it is no number of ours. */
static bool tally_number(const redisReply *v, int64_t *n)
{
	if (v->type != REDIS_REPLY_STRING || !v->len || v->len > 20)
		return false;
	char *end;
	errno = 0;
	long long x = strtoll(v->str, &end, 10);
	*n = x;
	return !errno && *end == '\0';
}

/* SIZE more for GROUP in W, room made. */
static int tally_group(struct weights *w, uint32_t group, int64_t size)
{
	if (grow_array(&w->groups, &w->cap, w->ngroups + 1, sizeof(*w->groups)))
		return -ENOMEM;
	weights_add_group(w, group, size);
	return 0;
}

static int kvr_tally(struct kv *kv, enum kv_table t, struct kv_tally *out,
		     int (*fn)(void *ctx, uint32_t group, uint64_t size), void *ctx)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	assert(kv_table_counted(t));
	char key[KEY_SIZE];
	tally_name(k, t, 0, key);
	redisReply *r;
	if (k->weights_lost) {
		nadb_log("redis %s: out of memory weighing the writes not synced: the %s' "
			 "tally is known again after the next sync", redis_conn_name(k->conn),
			 kv_table_name(t));
		return -ENOMEM;
	}
	/* A failed sync's weights would count twice if it ran: ask first
	 * (a step's own open writes stay out of it: ask at the next sync). */
	int rc = k->in_step ? 0 : settle_attempt(k);
	if (!rc)
		rc = read_tally(k, key, &r);
	if (rc)
		return rc;
	/* Redis's, then what this process's writes not synced add */
	/* A damaged field reads as 0 (fsck names it): the figures are wrong
	 * until a repair, but nothing that reads them fails. */
	struct weights sum = {0};
	unsigned damaged = 0;
	for (size_t i = 0; !rc && i < r->elements; i += 2) {
		const char *f = r->element[i]->str;
		int64_t n;
		bool ok = tally_number(r->element[i + 1], &n) && n >= 0;
		char *end;
		unsigned long g;
		if (!strcmp(f, TALLY_WHOLE))
			continue;
		else if (ok && !strcmp(f, "rows"))
			sum.rows += n;
		else if (ok && !strcmp(f, "size"))
			sum.size += n;
		else if (ok && !strcmp(f, "raw"))
			sum.raw += n;
		else if (ok && !strncmp(f, "g:", 2) && (g = strtoul(f + 2, &end, 10)) <= UINT32_MAX &&
			 !*end && end != f + 2)
			rc = tally_group(&sum, (uint32_t)g, n);
		else
			damaged++;
	}
	if (damaged)
		nadb_log("redis %s: the %s' tally has %u damaged fields (nadb fsck --repair "
			 "weighs them again)", redis_conn_name(k->conn), kv_table_name(t), damaged);
	freeReplyObject(r);
	/* the totals read them as 0 (.stats stays up); a group's size would
	 * be a guess that compaction could take for empty: unknown */
	if (damaged && fn && !rc)
		rc = -EIO;
	const struct weights *mine[] = {&k->carried_w, &k->pending_w, &k->step_w};
	for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
		sum.rows += mine[i]->rows, sum.size += mine[i]->size, sum.raw += mine[i]->raw;
		for (size_t j = 0; !rc && j < mine[i]->ngroups; j++)
			rc = tally_group(&sum, mine[i]->groups[j].group, mine[i]->groups[j].size);
	}
	/* below 0 only where another process changed a row that this one
	 * weighed as it saw it: Redis's word stands after the next sync */
	*out = (struct kv_tally){(uint64_t)(sum.rows > 0 ? sum.rows : 0),
				 (uint64_t)(sum.size > 0 ? sum.size : 0),
				 (uint64_t)(sum.raw > 0 ? sum.raw : 0)};
	for (size_t i = 0; !rc && fn && i < sum.ngroups; i++)
		if (sum.groups[i].size > 0)
			rc = fn(ctx, sum.groups[i].group, (uint64_t)sum.groups[i].size);
	free(sum.groups);
	return rc;
}

/* A writer's first look: are T's rows tallied whole?  If not (a store of
 * a nadb before tallies, or one that stopped weighing them), weigh them
 * now, before anything else writes. */
static int tally_whole(struct kv_redis *k, enum kv_table t)
{
	char key[KEY_SIZE];
	tally_name(k, t, 0, key);
	const char *argv[] = {"HEXISTS", key, TALLY_WHOLE};
	size_t lens[] = {7, strlen(key), strlen(TALLY_WHOLE)};
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, 0, "reading a tally", 3, argv, lens, &r);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	bool whole = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
	if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "WRONGTYPE", 9))
		nadb_log("redis %s: the %s' tally is no hash: weighing them anew",
			 redis_conn_name(k->conn), kv_table_name(t));
	else if (r->type != REDIS_REPLY_INTEGER)
		rc = redis_reply_error(k->conn, "reading a tally", r);
	freeReplyObject(r);
	if (rc || whole)
		return rc;
	nadb_log("redis %s: weighing the %s for their tally, once",
		 redis_conn_name(k->conn), kv_table_name(t));
	return retally(k, t, key);
}

/* tally_whole for every counted table, once (tallies_unchecked). */
static int tallies_whole(struct kv_redis *k)
{
	int rc = 0;
	for (int t = 0; !rc && k->tallies_unchecked && t < KV_NTABLES; t++)
		if (kv_table_counted((enum kv_table)t))
			rc = tally_whole(k, (enum kv_table)t);
	if (!rc)
		k->tallies_unchecked = false;
	return rc;
}

/* fsck: T's rows weighed again, into a hash of their own, and compared
 * with the tally field by field; with REPAIR the tally is replaced. */
static int check_tally(struct kv_redis *k, enum kv_table t, bool repair,
		       void (*problem)(void *ctx, const char *line), void *ctx,
		       uint64_t *problems, uint64_t *mended)
{
	char key[KEY_SIZE], again[KEY_SIZE + 8];
	tally_name(k, t, 0, key);
	snprintf(again, sizeof(again), "%s:check", key);
	redisReply *kept = NULL, *found = NULL;
	int rc = retally(k, t, again);
	if (!rc)
		rc = read_tally(k, again, &found);
	int krc = rc ? rc : read_tally(k, key, &kept);
	uint64_t wrong = 0;
	char line[300];
	if (krc == -ENODATA) {
		snprintf(line, sizeof(line), "the %s' tally is missing%s", kv_table_name(t),
			 repair ? " (weighed again)" : "");
		if (problem)
			problem(ctx, line);
		wrong = 1;
	} else if ((rc = krc) == 0) {
		/* each field of either, looked up in the other */
		const redisReply *sides[2] = {kept, found};
		for (int s = 0; s < 2; s++) {
			const redisReply *a = sides[s], *b = sides[!s];
			for (size_t i = 0; i < a->elements; i += 2) {
				const redisReply *f = a->element[i], *v = a->element[i + 1], *w = NULL;
				for (size_t j = 0; j < b->elements && !w; j += 2)
					if (b->element[j]->len == f->len &&
					    !memcmp(b->element[j]->str, f->str, f->len))
						w = b->element[j + 1];
				/* a field absent is 0; each compared once, from the
				 * kept side, and from the other if the kept lacks it */
				const char *vs = v->str, *ws = w ? w->str : "0";
				size_t vl = v->len, wl = w ? w->len : 1;
				if ((s == 1 && w) || (vl == wl && !memcmp(vs, ws, vl)))
					continue;
				snprintf(line, sizeof(line), "the %s' tally: %.*s is %.*s, but the rows "
					 "weigh %.*s%s", kv_table_name(t), (int)f->len, f->str,
					 (int)(s ? wl : vl), s ? ws : vs, (int)(s ? vl : wl), s ? vs : ws,
					 repair ? " (weighed again)" : "");
				if (problem)
					problem(ctx, line);
				wrong++;
			}
		}
	}
	*problems += wrong;
	if (!rc && repair && wrong) {
		const char *argv[] = {"RENAME", again, key};
		size_t lens[] = {6, strlen(again), strlen(key)};
		if (!(rc = run_p0(k, "replacing a tally", 3, argv, lens)))
			*mended += wrong;
	} else if (!rc) {
		const char *argv[] = {"DEL", again};
		size_t lens[] = {3, strlen(again)};
		rc = run_p0(k, "dropping a tally weighed again", 2, argv, lens);
	}
	if (kept)
		freeReplyObject(kept);
	if (found)
		freeReplyObject(found);
	return rc;
}

/* ---- numbering (kv_ops.number) -------------------------------------------
 *
 * A name's number and the counter it comes from are two rows of partition
 * 0's sorted tables; a script reads the name's row and, if it has none,
 * takes the counter's value, puts the counter one higher and the name's
 * row: at once, outside the group, so that two processes numbering at
 * once agree (each a step of its own would hand one number to two names).
 * Then a WAIT, as count_up's, so that a failover does not hand out again
 * a number the group then relies on.  Numbers are u32 in the host's byte
 * order, as the engine writes them (NUMBER_FORMAT). */

#if __BYTE_ORDER == __LITTLE_ENDIAN
#define NUMBER_FORMAT "<I4"
#else
#define NUMBER_FORMAT ">I4"
#endif

/* KEYS[1] and ARGV[1] partition 0's fence and our generation there
 * (fenced_by: a writer whose store was taken over numbers nothing,
 * "Fencing"), KEYS[2] the table's sorted set, KEYS[3] meta's; ARGV[2] enc(key) 0, ARGV[3] enc(counter)
 * 0, ARGV[4] NUMBER_FORMAT.  {number, the counter's value after}; {-1}
 * when the counter is used up. */
static const char number_script[] = "#!lua\n" SERVER_MS_FN FENCE_FUNCTIONS
	"if not fence_ok(KEYS[1], ARGV[1]) then " FENCE_REFUSED "end "
	"local function row(z, pre) "
	"local m = redis.call('ZRANGE', z, '[' .. pre, '(' .. pre:sub(1, -2) .. '\\1', "
	"'BYLEX', 'LIMIT', 0, 1)[1] "
	"if not m then return nil end "
	"if #m ~= #pre + 4 then error('ERR nadb: a number row of the wrong size') end "
	"return m, struct.unpack(ARGV[4], m:sub(#pre + 1)) end "
	"local m, id = row(KEYS[2], ARGV[2]) "
	"local sm, nxt = row(KEYS[3], ARGV[3]) "
	"nxt = nxt or 1 "
	"if m then return {id, nxt} end "
	"if nxt >= 4294967295 then return {-1} end "
	"if sm then redis.call('ZREM', KEYS[3], sm) end "
	"redis.call('ZADD', KEYS[3], 0, ARGV[3] .. struct.pack(ARGV[4], nxt + 1)) "
	"redis.call('ZADD', KEYS[2], 0, ARGV[2] .. struct.pack(ARGV[4], nxt)) "
	"return {nxt, nxt + 1}";

/* enc(KEY) 0 (encode_key) into a new string *OUT, its length *LEN. */
static int encoded(const void *key, size_t klen, char **out, size_t *len)
{
	if (!(*out = malloc(encoded_len(key, klen) + 1)))
		return -ENOMEM;
	*len = encode_key(key, klen, (uint8_t *)*out);
	return 0;
}

/* Run number_script for KEY of T and counter SEQ: *ID and the counter's
 * value after, *NEXT. */
static int run_number(struct kv_redis *k, enum kv_table t, const void *key, size_t klen,
		      const char *seq, uint32_t *id, uint32_t *next)
{
	char *ekey = NULL, *eseq = NULL;
	size_t ekey_len, eseq_len;
	char fence[KEY_SIZE], zset[KEY_SIZE], meta[KEY_SIZE];
	int rc;
	if ((rc = encoded(key, klen, &ekey, &ekey_len)) ||
	    (rc = encoded(seq, strlen(seq), &eseq, &eseq_len))) {
		free(ekey);
		return rc;
	}
	char gen[24];
	size_t fence_len = fenced_by(k, 0, fence, gen); /* before strlen(gen) */
	const char *eval[] = {"EVAL", number_script, "3", fence, zset, meta, gen,
			      ekey, eseq, NUMBER_FORMAT};
	size_t eval_lens[] = {4, sizeof(number_script) - 1, 1, fence_len,
			      zset_name(k, t, 0, zset), zset_name(k, KV_META, 0, meta),
			      strlen(gen), ekey_len, eseq_len, sizeof(NUMBER_FORMAT) - 1};
	redisReply *r[2];
	int replicas;
	rc = run_then_wait(k, 0, (struct redis_cmd){10, eval, eval_lens}, r, &replicas);
	free(ekey);
	free(eseq);
	if (rc)
		return rc;
	const redisReply *a = r[0];
	if ((rc = fenced_out(k, a, "numbering")))
		return end_wait(k, "a number given", r, replicas, rc);
	if (a->type == REDIS_REPLY_ARRAY && a->elements == 1 &&
	    a->element[0]->type == REDIS_REPLY_INTEGER && a->element[0]->integer == -1) {
		nadb_log("redis %s: every number of '%s' is used", redis_conn_name(k->conn), seq);
		rc = -ENOSPC;
	} else if (a->type != REDIS_REPLY_ARRAY || a->elements != 2 ||
		   a->element[0]->type != REDIS_REPLY_INTEGER ||
		   a->element[1]->type != REDIS_REPLY_INTEGER || a->element[0]->integer < 1 ||
		   a->element[0]->integer >= a->element[1]->integer ||
		   a->element[1]->integer > UINT32_MAX) {
		rc = redis_reply_error(k->conn, "numbering", a);
	} else {
		*id = (uint32_t)a->element[0]->integer;
		*next = (uint32_t)a->element[1]->integer;
	}
	return end_wait(k, "a number given", r, replicas, rc);
}

static int kvr_number(struct kv *kv, enum kv_table t, const void *key, size_t klen,
		      const char *seq, uint32_t *id)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	assert(!bucketed(t) && !bucketed(KV_META) && kv_table_ino_at(t) < 0 && !k->follower);
	release_held(k);
	size_t slen = strlen(seq);
	if (overlay_row(k, t, key, klen) || overlay_row(k, KV_META, seq, slen)) {
		nadb_log("redis %s: numbering in %s while the group holds a write of that "
			 "row or of counter '%s': sync first", redis_conn_name(k->conn),
			 kv_table_name(t), seq);
		return -EBUSY;
	}
	/* What the cache holds is answered without the script: a number
	 * this process gave (after its WAIT) or read, trusted as every row
	 * read is (what a primary holds and has not replicated yet is read
	 * as any other row is: the sync's WAIT is what fsync promises).
	 * Else the script, which answers a number another gave too. */
	struct overlay *c = cache_of(k);
	struct row *r = c && cacheable(k, t, key, klen) ? find_row(c, t, key, klen) : NULL;
	if (r && r->val && r->vlen == sizeof(*id)) {
		memcpy(id, r->val, sizeof(*id));
		return 0;
	}
	uint32_t next;
	int rc = run_number(k, t, key, klen, seq, id, &next);
	assert(rc || *id < next);
	/* The counter is not cached: another process may move it on. */
	if ((c = cache_of(k)))
		remove_row(c, KV_META, seq, slen);
	if (!rc)
		cache_row(k, t, key, klen, id, sizeof(*id));
	return rc;
}

/* ---- rows at zero (kv_ops.free_zeros) -------------------------------------
 *
 * A sync's script notes each counted row whose count reaches 0 in its
 * partition's set of zeros, scored with the server's clock, and takes it
 * out when the count leaves 0 (zero_noted).  free_zeros reads the members
 * due (scored GRACE_MS ago or more), then frees them in a script that
 * looks again at each: still due and its count still 0, the row goes
 * (and its bucket's name, if that was its last row); counted again, or
 * gone, only the member.  Every clock read is the server's, so that the
 * hosts' clocks need not agree. */

/* KEYS[1] the zeros: ARGV[2] members at most, due ARGV[1] ms ago. */
static const char zeros_due_script[] = "#!lua flags=no-writes\n" SERVER_MS
	"return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), "
	"'LIMIT', 0, tonumber(ARGV[2]))";
/* KEYS[1] the zeros, KEYS[2] the table's bucket names, KEYS[3] partition
 * 0's fence (fenced_by), KEYS[3 + j] the bucket of ARGV[1 + 2j] (its name
 * ARGV[2 + 2j]); ARGV[1] the grace (ms), ARGV[2] our generation there (a
 * writer whose store was taken over frees nothing: "Fencing").  The rows freed, as
 * field, value, field, value... */
static const char zeros_free_script[] = "#!lua flags=allow-oom\n" SERVER_MS COUNT_FUNCTIONS
	FENCE_FUNCTIONS "if not fence_ok(KEYS[3], ARGV[2]) then " FENCE_REFUSED "end "
	"local out = {} "
	"for j = 1, (#ARGV - 2) / 2 do "
	"local f, b = ARGV[1 + 2 * j], KEYS[3 + j] "
	"local s = tonumber(redis.call('ZSCORE', KEYS[1], f)) "
	"if s and s <= now - tonumber(ARGV[1]) then "
	"local v = redis.call('HGET', b, f) "
	"if v and count_of(v) == 0 then "
	"redis.call('HDEL', b, f) "
	"if redis.call('EXISTS', b) == 0 then redis.call('ZREM', KEYS[2], ARGV[2 + 2 * j]) end "
	"out[#out + 1] = f out[#out + 1] = v end "
	"redis.call('ZREM', KEYS[1], f) end end "
	"return out";

/* The members of T's zeros due after GRACE (text), into *OUT (the caller
 * frees it): an array of them. */
static int zeros_due(struct kv_redis *k, enum kv_table t, const char *grace, redisReply **out)
{
	char zeros[KEY_SIZE], max[12];
	const char *argv[] = {"EVAL", zeros_due_script, "1", zeros, grace, max};
	size_t lens[] = {4, sizeof(zeros_due_script) - 1, 1, zeros_name(k, t, 0, zeros),
			 strlen(grace), (size_t)snprintf(max, sizeof(max), "%d", FREE_ZEROS_MAX)};
	int rc = redis_run_in(k->conn, 0, "reading the rows at zero", 6, argv, lens, out);
	if (rc)
		return rc == -ENOMEM ? rc : -EIO;
	if (!is_array(*out)) {
		rc = redis_reply_error(k->conn, "reading the rows at zero", *out);
		freeReplyObject(*out);
	}
	return rc;
}

/* Where zeros_free_script's keys and arguments are built. */
struct free_names {
	char zeros[KEY_SIZE], zset[KEY_SIZE], fence[KEY_SIZE], gen[24];
	struct bucket_name *buckets;
};

/* zeros_free_script's arguments after its key count, for the members of
 * DUE not written here meanwhile, built in ARGV, LENS (room for
 * FREE_ARGS(DUE's elements) each) and N (its buckets, room for DUE's
 * elements); how many arguments in all. */
#define FREE_ARGS(n) (8 + 3 * (n))
static int free_args(struct kv_redis *k, enum kv_table t, const redisReply *due,
		     const char *grace, const char **argv, size_t *lens, struct free_names *nm)
{
	size_t nkeys = 0, n = 0;
	const char **keys = argv + 3, **args;
	size_t *klens = lens + 3, *alens;
	size_t members = 0;
	for (size_t i = 0; i < due->elements; i++)
		if (due->element[i]->type == REDIS_REPLY_STRING &&
		    !overlay_row(k, t, due->element[i]->str, due->element[i]->len))
			members++;
	args = keys + 3 + members;
	alens = klens + 3 + members;
	keys[nkeys] = nm->zeros, klens[nkeys++] = zeros_name(k, t, 0, nm->zeros);
	keys[nkeys] = nm->zset, klens[nkeys++] = zset_name(k, t, 0, nm->zset);
	keys[nkeys] = nm->fence, klens[nkeys++] = fenced_by(k, 0, nm->fence, nm->gen);
	args[n] = grace, alens[n++] = strlen(grace);
	args[n] = nm->gen, alens[n++] = strlen(nm->gen);
	for (size_t i = 0, m = 0; i < due->elements; i++) {
		const redisReply *e = due->element[i];
		if (e->type != REDIS_REPLY_STRING || overlay_row(k, t, e->str, e->len))
			continue; /* a write of ours pending: freed later, if still at 0 */
		struct bucket_name *bn = &nm->buckets[m++];
		bn->len = bucket_key(k, t, e->str, e->len, bn->name, &bn->pre);
		keys[nkeys] = bn->name, klens[nkeys++] = bn->len;
		args[n] = e->str, alens[n++] = e->len;
		args[n] = bn->name + bn->pre, alens[n++] = bn->len - bn->pre;
	}
	assert(nkeys == 3 + members && n == 2 + 2 * members);
	assert(3 + nkeys + n == FREE_ARGS(members));
	return (int)(3 + nkeys + n);
}

/* Run zeros_free_script (ARGC, ARGV, LENS), its reply into *FREED, then
 * WAIT for partition 0's replicas: *KEPT when every one connected has the
 * deletes, so that no failover brings back a row whose frame the caller
 * then punches (a failover short of that leaves the frames: space). */
static int free_and_wait(struct kv_redis *k, int argc, const char **argv, const size_t *lens,
			 redisReply **freed, bool *kept)
{
	redisReply *r[2];
	int replicas;
	int rc = run_then_wait(k, 0, (struct redis_cmd){argc, argv, lens}, r, &replicas);
	if (rc)
		return rc;
	*freed = r[0];
	if (!(rc = fenced_out(k, r[0], "freeing rows at zero")) &&
	    (!is_array(r[0]) || r[0]->elements % 2))
		rc = redis_reply_error(k->conn, "freeing rows at zero", r[0]);
	*kept = !r[1] || (r[1]->type == REDIS_REPLY_INTEGER && r[1]->integer >= replicas);
	if (r[1])
		freeReplyObject(r[1]);
	return rc;
}

static int kvr_free_zeros(struct kv *kv, enum kv_table t, uint64_t grace_ms, kv_scan_fn fn,
			  void *ctx)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	assert(kv_table_counted(t) && bucketed(t) && !partitioned(t) && !k->follower);
	release_held(k);
	char grace[24];
	snprintf(grace, sizeof(grace), "%llu", (unsigned long long)grace_ms);
	redisReply *due, *freed = NULL;
	int rc = zeros_due(k, t, grace, &due);
	if (rc || due->elements == 0) {
		if (!rc)
			freeReplyObject(due);
		return rc;
	}
	size_t most = due->elements;
	bool more = false;
	const char **argv = malloc(FREE_ARGS(most) * sizeof(*argv));
	size_t *lens = malloc(FREE_ARGS(most) * sizeof(*lens));
	struct free_names *nm = malloc(sizeof(*nm));
	struct bucket_name *names = malloc(most * sizeof(*names));
	char nkeys[12];
	if (!argv || !lens || !nm || !names) {
		rc = -ENOMEM;
		goto out;
	}
	nm->buckets = names;
	int argc = free_args(k, t, due, grace, argv, lens, nm);
	size_t members = ((size_t)argc - FREE_ARGS(0)) / 3;
	/* more may be due: past those read, or written here meanwhile */
	more = most == FREE_ZEROS_MAX || members < most;
	if (!members)
		goto out;
	argv[0] = "EVAL", lens[0] = 4;
	argv[1] = zeros_free_script, lens[1] = sizeof(zeros_free_script) - 1;
	argv[2] = nkeys, lens[2] = (size_t)snprintf(nkeys, sizeof(nkeys), "%zu", 3 + members);
	bool kept = false;
	if ((rc = free_and_wait(k, argc, argv, lens, &freed, &kept)))
		goto out;
	for (size_t i = 0; i < freed->elements; i += 2) { /* gone for every read now */
		const redisReply *f = freed->element[i], *v = freed->element[i + 1];
		cache_row(k, t, f->str, f->len, NULL, 0);
		int e = kept ? fn(ctx, f->str, f->len, v->str, v->len) : 0;
		rc = rc ? rc : e < 0 ? e : 0;
	}
	if (!kept && freed->elements)
		nadb_log("redis %s: not every replica confirmed freeing %zu rows at zero: what "
			 "they name is left as it is (a failover could bring them back)",
			 redis_conn_name(k->conn), freed->elements / 2);
out:
	freeReplyObject(due);
	if (freed)
		freeReplyObject(freed);
	free(argv);
	free(lens);
	free(nm);
	free(names);
	return rc ? rc : more;
}

/* ---- several processes ------------------------------------------------------ */

/* The store's set of followers, scored by when each stops counting (the
 * server's clock, ms), into BUF. */
static size_t followers_key(const struct kv_redis *k, char *buf)
{
	return redis_key(k->conn, 0, "followers", buf, KEY_SIZE);
}

/* KEYS[1] the followers: drop those whose heartbeat ran out; how many
 * are left. */
static const char count_script[] = SERVER_MS
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
	"return redis.call('ZCARD', KEYS[1])";
/* KEYS[1] the followers: ARGV[1] counts for ARGV[2] ms more. */
static const char beat_script[] = SERVER_MS
	"return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])";

/* ---- sessions (backend.h) ----
 *
 * "sessions" (p0) is a sorted set: a member per live session (its number,
 * in decimal), scored by when its heartbeat runs out (server clock, ms);
 * "sessionseq" (p0) numbers them (INCR: never twice, never 0).  A session
 * counts itself in (a beat) before it writes a row, and out at close. */
/* ms: a session outlives its last beat this long.  The lock's keeper
 * beats right after each renewal of the lock, which lasts 10 s: a dead
 * writer's session runs out first, and a writer that takes the store after
 * it finds it gone (lock.c: its lease, the same 8 s, ends with it). */
#define SESSION_TTL_MS 8000

static size_t sessions_key(const struct kv_redis *k, char *buf)
{
	return redis_key(k->conn, 0, REDIS_SESSIONS, buf, KEY_SIZE);
}

/* KEYS[1] the sessions: ARGV[1] counts for ARGV[2] ms more -- unless
 * ARGV[3] is "XX" and it ran out (a session that leased partitions is
 * over then, leases_lapsed) -- and those whose heartbeat ran out are
 * dropped; {1 if ARGV[1] was counted in still (else 0), the live
 * sessions}. */
static const char session_beat_script[] = SERVER_MS
	"local sc = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) "
	"local was = sc ~= nil and sc > now "
	"if was or ARGV[3] ~= 'XX' then "
	"redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end "
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
	"return {was and 1 or 0, redis.call('ZRANGE', KEYS[1], 0, -1)}";
/* KEYS[1] the sessions: drop those whose heartbeat ran out; the rest. */
static const char sessions_script[] = SERVER_MS
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
	"return redis.call('ZRANGE', KEYS[1], 0, -1)";

/* The session numbers of R (an array of decimal members), sorted, into
 * *OUT (malloc'd) and *N; members that are not numbers are skipped. */
static int session_list(const redisReply *r, uint32_t **out, size_t *n)
{
	if (r->type != REDIS_REPLY_ARRAY)
		return -EPROTO;
	uint32_t *ids = malloc((r->elements + 1) * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	size_t m = 0;
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		char *end;
		unsigned long long id;
		if (e->type != REDIS_REPLY_STRING || !e->len || e->len > 10)
			continue;
		id = strtoull(e->str, &end, 10);
		if (end == e->str + e->len && id && id <= UINT32_MAX)
			ids[m++] = (uint32_t)id;
	}
	qsort(ids, m, sizeof(*ids), kv_compare_u32);
	*out = ids;
	*n = m;
	return 0;
}

/* Count session K->kv.session in for SESSION_TTL_MS more, on C: *LIVE
 * and *N, the sessions alive now (NULL: not wanted); *WAS_IN: it counted
 * still (else it ran out, or this is its first beat). */
static int session_beat_on(struct kv_redis *k, struct redis_conn *c, uint32_t **live, size_t *n,
			   bool *was_in)
{
	char key[KEY_SIZE], id[16], ttl[16];
	const char *mode = atomic_load(&k->beat_strict) ? "XX" : "";
	const char *argv[] = {"EVAL", session_beat_script, "1", key, id, ttl, mode};
	size_t lens[] = {4, sizeof(session_beat_script) - 1, 1, sessions_key(k, key),
			 (size_t)snprintf(id, sizeof(id), "%u", k->kv.session),
			 (size_t)snprintf(ttl, sizeof(ttl), "%u", SESSION_TTL_MS), strlen(mode)};
	redisReply *r = NULL;
	int rc = redis_run_in(c, 0, "counting this session in", 7, argv, lens, &r);
	if (rc)
		return rc;
	rc = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	     r->element[0]->type == REDIS_REPLY_INTEGER ? 0 : -EPROTO;
	if (!rc) {
		*was_in = r->element[0]->integer == 1;
		if (live)
			rc = session_list(r->element[1], live, n);
	}
	freeReplyObject(r);
	return rc;
}

static int kvr_sessions(struct kv *kv, uint32_t **live, size_t *n)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	char key[KEY_SIZE];
	const char *argv[] = {"EVAL", sessions_script, "1", key};
	size_t lens[] = {4, sizeof(sessions_script) - 1, 1, sessions_key(k, key)};
	redisReply *r = NULL;
	int rc = redis_run_in(k->conn, 0, "reading the live sessions", 4, argv, lens, &r);
	if (rc)
		return rc;
	rc = session_list(r, live, n);
	freeReplyObject(r);
	return rc;
}

static int kvr_beat(struct kv *kv, bool *died)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	int rc = k->beat_conn ? 0 : redis_conn_open_like(k->conn, &k->beat_conn);
	uint32_t *live = NULL;
	size_t n = 0;
	bool was_in = false;
	if (!rc)
		rc = session_beat_on(k, k->beat_conn, &live, &n, &was_in);
	if (rc)
		return rc;
	if (!was_in && atomic_load(&k->beat_strict)) {
		/* the others may have taken our leases and settled our rows:
		 * this session writes no more (lost_leases_forgotten) */
		atomic_store(&k->leases_lapsed, true);
		nadb_log("redis %s: session %u ran out (no heartbeat for %u ms) while it "
			 "leased partitions: it writes no more", redis_conn_name(k->conn),
			 k->kv.session, SESSION_TTL_MS);
	} else if (!was_in) { /* the others may have settled our rows: say so */
		nadb_log("redis %s: session %u had lapsed (no heartbeat for %u ms): "
			 "counted in again", redis_conn_name(k->conn), k->kv.session,
			 SESSION_TTL_MS);
	}
	*died = false;
	for (size_t i = 0; i < k->nbeat_live && !*died; i++)
		*died = !kv_session_listed(live, n, k->beat_live[i]);
	free(k->beat_live);
	k->beat_live = live;
	k->nbeat_live = n;
	atomic_store(&k->others_write, n > 1);
	return 0;
}

/* A new writer's session: numbered, and counted in before it writes. */
static int session_start(struct kv_redis *k)
{
	long long n = 0;
	int rc = count_up_p0(k, "sessionseq", "numbering this session", &n);
	if (rc)
		return rc;
	if (n <= 0 || n > UINT32_MAX) {
		nadb_log("redis %s: the store's sessions are numbered up (%s): no more writers",
			 redis_conn_name(k->conn), "sessionseq");
		rc = -EOVERFLOW;
	} else {
		k->kv.session = (uint32_t)n;
	}
	bool was_in;
	if (!rc) /* the first beat's live sessions: one that dies later is told */
		rc = session_beat_on(k, k->conn, &k->beat_live, &k->nbeat_live, &was_in);
	if (rc)
		k->kv.session = 0;
	else
		atomic_store(&k->others_write, k->nbeat_live > 1);
	return rc;
}

int redis_session_end(struct redis_conn *c, uint32_t id)
{
	char key[KEY_SIZE], num[16];
	const char *argv[] = {"ZREM", key, num};
	size_t lens[] = {4, redis_key(c, 0, REDIS_SESSIONS, key, sizeof(key)),
			 (size_t)snprintf(num, sizeof(num), "%u", id)};
	redisReply *r = NULL;
	int rc = redis_run_in(c, 0, "counting a session out", 3, argv, lens, &r);
	if (!rc)
		freeReplyObject(r);
	return rc;
}

/* Counted out at close: the rows it leaves are anybody's to settle. */
static void session_end(struct kv_redis *k)
{
	if (k->kv.session)
		(void)redis_session_end(k->conn, k->kv.session);
}

/* The writer (the flusher's thread, outside the serialisation of the
 * other calls: a connection of its own, and an atomic mask). */
static int kvr_publish(struct kv *kv, uint32_t mask, uint64_t *n)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	int rc = k->counter ? 0 : redis_conn_open_like(k->conn, &k->counter);
	if (rc)
		return rc;
	char key[KEY_SIZE];
	const char *argv[] = {"EVAL", count_script, "1", key};
	size_t lens[] = {4, sizeof(count_script) - 1, 1, followers_key(k, key)};
	redisReply *r = NULL;
	if ((rc = redis_run_in(k->counter, 0, "counting the followers", 4, argv, lens, &r)))
		return rc;
	*n = r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? (uint64_t)r->integer : 0;
	freeReplyObject(r);
	uint32_t now = *n && !atomic_load(&k->publish_refused) ? mask : 0;
	/* new followers may have read what no notice will name: the syncs
	 * since they came, before this one */
	if (now && !atomic_exchange(&k->publish_mask, now))
		atomic_store(&k->announce, true);
	atomic_store(&k->publish_mask, now);
	return 0;
}


/* Count this follower in for FOLLOWER_TTL_MS more, every FOLLOWER_BEAT_MS.
 * False if it may have been counted out meanwhile (the writer then
 * published nothing for it): the caller assumes anything changed. */
static bool beat(struct kv_redis *k)
{
	uint64_t now = monotonic_ms();
	if (k->beat_ms && now - k->beat_ms < FOLLOWER_BEAT_MS)
		return true;
	k->beat_ms = now;
	/* what no notice names (a namespace made by the nadb tool) shows
	 * within a beat */
	atomic_store(&k->parts_stale, true);
	if (!k->beat && redis_conn_open_like(k->conn, &k->beat))
		return true; /* said; tried again at the next beat */
	char key[KEY_SIZE], ttl[16];
	const char *argv[] = {"EVAL", beat_script, "1", key, k->member, ttl};
	size_t lens[] = {4, sizeof(beat_script) - 1, 1, followers_key(k, key), strlen(k->member),
			 (size_t)snprintf(ttl, sizeof(ttl), "%u", FOLLOWER_TTL_MS)};
	redisReply *r = NULL;
	if (redis_run_in(k->beat, 0, "counting this follower in", 6, argv, lens, &r))
		return true;
	freeReplyObject(r);
	/* the server ran the last beat after we sent it, and this one before
	 * its reply came: counted all along if these were closer than TTL */
	bool counted = k->beat_ok_ms && monotonic_ms() - k->beat_ok_ms < FOLLOWER_TTL_MS;
	k->beat_ok_ms = now;
	return counted;
}

/* Call FN with each row key of the notice MSG (LEN bytes). */
static int walk_notice(const char *msg, size_t len, kv_row_fn fn, void *ctx)
{
	size_t head = sizeof(NOTICE_HEAD) - 1;
	if (len < head || memcmp(msg, NOTICE_HEAD, head))
		return -ESTALE; /* NOTICE_ANY, or a notice we cannot read */
	for (size_t at = head; at < len;) {
		if (len - at < 3)
			return -ESTALE;
		uint8_t t = (uint8_t)msg[at];
		size_t klen = (size_t)(uint8_t)msg[at + 1] << 8 | (uint8_t)msg[at + 2];
		if (t >= KV_NTABLES || len - at - 3 < klen)
			return -ESTALE;
		int rc = fn(ctx, (enum kv_table)t, msg + at + 3, klen);
		if (rc)
			return rc;
		at += 3 + klen;
	}
	return 0;
}

static int kvr_follow(struct kv *kv, unsigned ms, kv_row_fn fn, void *ctx)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	assert(k->follower);
	bool counted = beat(k);
	int rc = k->sub ? 0 : redis_subscriber_open(k->conn, &k->sub);
	char *msg = NULL;
	size_t len = 0;
	if (!rc)
		rc = redis_subscriber_next(k->sub, k->beat, /* the follow thread's own */
					   ms < FOLLOWER_BEAT_MS ? ms : FOLLOWER_BEAT_MS, &msg, &len);
	if (rc == 0 && counted)
		return 0;
	atomic_store(&k->parts_stale, true); /* a notice, or notices lost */
	if (rc <= 0) /* (counted out: what a notice might have said is lost) */
		return rc == 0 ? -ESTALE : rc;
	rc = walk_notice(msg, len, fn, ctx);
	free(msg);
	return !rc && !counted ? -ESTALE : rc;
}

/* Counted out at once, not in FOLLOWER_TTL_MS: on the follow thread's
 * connection, once that thread is joined (or on the main one, at close). */
static void count_out(struct kv_redis *k, struct redis_conn *c)
{
	if (!k->follower || !k->beat_ok_ms || !c)
		return;
	char key[KEY_SIZE];
	const char *argv[] = {"ZREM", key, k->member};
	size_t lens[] = {4, followers_key(k, key), strlen(k->member)};
	redisReply *r = NULL;
	if (!redis_run_in(c, 0, "counting this follower out", 3, argv, lens, &r))
		freeReplyObject(r);
	k->beat_ok_ms = 0;
}

static void kvr_unfollow(struct kv *kv)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	count_out(k, k->beat);
	/* nobody reads the notices any more: unsubscribed, they cannot pile
	 * up in the server's output buffer (follow subscribes again) */
	redis_conn_close(k->sub);
	k->sub = NULL;
	k->beat_ms = 0;
}

static void kvr_close(struct kv *kv)
{
	struct kv_redis *k = (struct kv_redis *)kv;
	release_held(k);
	/* let go of our leases (those with writes unsynced go with the
	 * session: anybody's to take over) */
	while (k->nleases && !release_lease(k, k->leases[k->nleases - 1].part))
		;
	count_out(k, k->conn);
	session_end(k);
	free(k->beat_live);
	redis_conn_close(k->sub);
	redis_conn_close(k->beat);
	redis_conn_close(k->counter);
	redis_conn_close(k->beat_conn);
	free(k->held);
	overlay_free(&k->step);
	overlay_free(&k->pending);
	overlay_free(&k->cache);
	redis_conn_close(k->conn);
	free(k->parts);
	free(k->unconfirmed);
	free(k->step_w.groups);
	free(k->pending_w.groups);
	free(k->carried_w.groups);
	free(k->leases);
	free(k);
}

static const struct kv_ops redis_kv_ops = {
	.step_begin = kvr_step_begin,
	.step_end = kvr_step_end,
	.get = kvr_get,
	.put = kvr_put,
	.del = kvr_del,
	.add = kvr_add,
	.free_zeros = kvr_free_zeros,
	.scan = kvr_scan,
	.scan_prefix = kvr_scan_prefix,
	.sync = kvr_sync,
	.unsynced = kvr_unsynced,
	.claim_inos = kvr_claim_inos,
	.number = kvr_number,
	.check = kvr_check,
	.tally = kvr_tally,
	.lease = kvr_lease,
	.publish = kvr_publish,
	.follow = kvr_follow,
	.unfollow = kvr_unfollow,
	.sessions = kvr_sessions,
	.beat = kvr_beat,
	.close = kvr_close,
};

/* A writer's claim of the store's layout (redis.h).  A store of an older
 * layout may hold a tally that a nadb between wrote, then an older one
 * did not keep: it is weighed anew (tally_whole), its "whole" dropped
 * before the marker says 5, so that a crash in between loses nothing. */
static int claim_format(struct kv_redis *k)
{
	int rc = redis_check_format(k->conn);
	for (int t = 0; rc == -ESTALE && t < KV_NTABLES; t++) {
		char key[KEY_SIZE];
		const char *argv[] = {"HDEL", key, TALLY_WHOLE};
		size_t lens[] = {4, 0, strlen(TALLY_WHOLE)};
		if (!kv_table_counted((enum kv_table)t))
			continue;
		lens[1] = tally_name(k, (enum kv_table)t, 0, key);
		redisReply *r = NULL;
		int hrc = redis_run_in(k->conn, 0, "taking on an older layout", 3, argv, lens, &r);
		if (r)
			freeReplyObject(r);
		if (hrc)
			return hrc == -ENOMEM ? hrc : -EIO;
	}
	return rc == 0 ? 0 : redis_claim_format(k->conn);
}

static int open_kv(const char *url, bool follower, struct kv **out)
{
	struct kv_redis *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->kv.ops = &redis_kv_ops;
	atomic_init(&k->parts_stale, false);
	atomic_init(&k->publish_mask, 0);
	atomic_init(&k->publish_refused, false);
	atomic_init(&k->announce, false);
	atomic_init(&k->others_write, false);
	atomic_init(&k->leases_lapsed, false);
	atomic_init(&k->beat_strict, false);
	k->check_steps = getenv("NADB_CHECK_STEPS") != NULL;
	k->fence_gen_len = (size_t)snprintf(k->fence_gen, sizeof(k->fence_gen), "0");
	int rc = overlay_init(&k->step, (uintptr_t)k);
	if (!rc)
		rc = overlay_init(&k->pending, (uintptr_t)k * 31);
	if (!rc)
		rc = overlay_init(&k->cache, (uintptr_t)k * 61);
	if (!rc)
		rc = redis_conn_open(url, &k->conn);
	if (!rc) {
		k->kv.apart = redis_conn_is_cluster(k->conn);
		rc = follower ? redis_check_format(k->conn) : claim_format(k);
	}
	if (follower && (rc == -ENOENT || rc == -ESTALE)) {
		nadb_log("redis %s: %s: a follower opens a store its writer made and "
			 "upgraded", redis_conn_name(k->conn),
			 rc == -ENOENT ? "no store here" : "the store's layout is old");
		rc = rc == -ENOENT ? rc : -EPROTO;
	}
	k->tallies_unchecked = !follower;
	if (!rc && follower) {
		char host[64];
		if (gethostname(host, sizeof(host)))
			snprintf(host, sizeof(host), "?");
		host[sizeof(host) - 1] = '\0';
		k->follower = true;
		snprintf(k->member, sizeof(k->member), "%s %ld %llu", host, (long)getpid(),
			 (unsigned long long)time(NULL));
	}
	if (!rc)
		rc = load_parts(k);
	if (!rc && !follower)
		rc = session_start(k);
	if (!rc)
		redis_note_durability(k->conn);
	if (rc) {
		overlay_free(&k->step);
		overlay_free(&k->pending);
		overlay_free(&k->cache);
		redis_conn_close(k->conn);
		free(k->parts);
		free(k->beat_live);
		free(k);
		return rc;
	}
	*out = &k->kv;
	return 0;
}

int kv_redis_open(const char *url, struct kv **out)
{
	return open_kv(url, false, out);
}

int kv_redis_open_follower(const char *url, struct kv **out)
{
	return open_kv(url, true, out);
}
