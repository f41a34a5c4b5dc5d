/* backend.h -- the seam between the engine and where its bytes live.
 *
 * The engine (store.c, file.c, chunk.c) keeps all metadata in a handful of
 * ordered tables of byte-string keys, and all chunk bytes in an append-only
 * blob area.  Both are reached only through the two interfaces below, so a
 * second backend (Redis, for stores shared by several machines) implements
 * these and nothing in fs/ or in the engine's logic changes.
 *
 * Metadata: changes are made in *steps* (one file-system operation each:
 * all of a step or none of it) inside a *group* that sync() makes durable.
 * A crash loses at most the steps since the last sync, never part of one.
 */
#ifndef NADB_BACKEND_H
#define NADB_BACKEND_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum kv_table {
	KV_META,     /* "format": store-wide settings; LMDB's "next_ino" (claim_inos) */
	KV_INODES,   /* ino(be64) -> struct inode_rec + chunk hashes / link target */
	KV_DIRENTS,  /* parent(be64) name -> ino, type (dirent_encode) */
	KV_XATTRS,   /* ino(be64) name -> value */
	KV_CHUNKS,   /* hash(16) -> location, refcount (chunk.c) */
	KV_PENDING,  /* ino(be64) seq(be64) -> hash: refs held by unclosed files */
	KV_ORPHANS,  /* ino(be64) -> "": unlinked inodes still open */
	KV_SEGMENTS, /* seg(be32) -> live bytes in that pack segment */
	KV_LINKS,    /* ino(be64) parent(be64) name -> "": an inode's names */
	KV_EXPIRY,   /* expires(be64 ns) ino(be64) -> "": keys by expiry time */
	KV_TAGS_OF,  /* ino(be64) tag -> "": a key's tags */
	KV_OLD_TAG_KEYS, /* store format <= 3 only, emptied when it is upgraded */
	KV_OLD_TAG_TREE, /* the same */
	KV_COUNTERS, /* scope ino(be64) -> counters of the store, a DB or a NS */
	KV_TAG_IDS,    /* tag -> id(u32): every tag ever used, numbered */
	KV_TAG_COUNTS, /* partition's first ino(be64) tag -> u64: its keys carrying it */
	KV_TAG_EDGES,  /* parent(be64) tag id(be32) name -> struct tag_edge: /tags/TAG */
	KV_CHUNK_DROPS, /* partition's first ino(be64) hash(16) n(be64) -> "": a
			 * reference its inodes dropped, not yet taken off the chunk */
	KV_NTABLES
};

/* The table's name ("meta", "inodes", ...), as each backend names it. */
const char *kv_table_name(enum kv_table t);
/* Does T take adds (kv_ops.add: its values start with a count)? */
bool kv_table_counted(enum kv_table t);
/* Rows one free_zeros call deletes at most (kv_ops.free_zeros). */
#define FREE_ZEROS_MAX 256
/* The store format (store_int.h) that added table T: a store of an older
 * format has no such table until it is opened (and so upgraded). */
unsigned kv_table_since(enum kv_table t);
/* Do T's keys start with a big-endian inode number (the comments above)?
 * Then nobody but the claimer of an inode number writes rows under it. */
bool kv_table_keyed_by_ino(enum kv_table t);
/* Where in T's keys the inode number a row is about sits (its partition
 * is the row's): 0 for the tables keyed by inode number, 8 for the expiry
 * index; -1 for the store-wide tables (partition 0). */
int kv_table_ino_at(enum kv_table t);

/* Partitions.  The top bits of an inode number name the partition its
 * rows live in: every row of a table keyed by inode number
 * (kv_table_keyed_by_ino) belongs to its inode's partition.  Each namespace
 * directory made gets a partition of its own (claim_inos with NEAR 0), and
 * everything in it is numbered there; the root, the databases and every
 * number of a store made before partitions are partition 0.  A backend may
 * keep partitions apart (Redis: one hash tag each, so that a cluster
 * spreads a store namespace by namespace) or ignore them (LMDB: numbers
 * come from one sequence, all in partition 0).  Partition order is number
 * order: a scan in key order of a table keyed by inode number walks the
 * partitions one after the other. */
#define KV_PART_SHIFT 40 /* bits of an inode number below its partition */
/* The highest partition number: numbers stay below 2^60, so that nadbfs
 * can mark its own made-up inodes with the top bits. */
#define KV_PART_MAX ((1u << 20) - 1)
static inline uint32_t kv_partition(uint64_t ino)
{
	return (uint32_t)(ino >> KV_PART_SHIFT);
}

/* The inode number a key of a table keyed by inode number starts with
 * (or any big-endian 64-bit number in a key: keys are not aligned). */
static inline uint64_t kv_key_ino(const void *key)
{
	uint64_t be;
	memcpy(&be, key, sizeof(be));
	return be64toh(be);
}

struct kv_val {
	const void *data;
	size_t len;
};

/* Called for each key >= the start key, in order; return 0 to go on,
 * 1 to stop, a negative errno to abort the scan with that error. */
typedef int (*kv_scan_fn)(void *ctx, const void *key, size_t klen,
			  const void *val, size_t vlen);

/* What a counted table's row weighs in its tally (tally): read from its
 * value after the count, as varints: its group, one the tally skips, its
 * raw size and zigzag(size - raw size) (chunk.c's record: segment,
 * offset, raw and frame length).  A row counts only while its count is
 * above 0. */
struct kv_weight {
	uint32_t group;
	uint64_t size, raw;
};
/* VAL's weight into *W: 1; 0 if it weighs nothing (its count is 0), -EIO
 * if VAL cannot be read so.  kv_redis.c's scripts read it the same way
 * (weight_of). */
int kv_weight_of(const void *val, size_t vlen, struct kv_weight *w);
/* A counted table's tally: of the rows counted above 0, how many, the sum
 * of their sizes and of their raw sizes; and (tally's FN) per group the
 * sum of its rows' sizes. */
struct kv_tally {
	uint64_t rows, size, raw;
};

/* Called for each row key a change notice names (follow). */
typedef int (*kv_row_fn)(void *ctx, enum kv_table t, const void *key, size_t klen);

struct kv;
/* What kv_ops.lease does. */
enum kv_lease_how { KV_LEASE_TAKE, KV_LEASE_RELEASE, KV_LEASE_ASKED };

struct kv_ops {
	int (*step_begin)(struct kv *kv);
	/* commit != 0: keep the step; 0: undo all of it. */
	int (*step_end)(struct kv *kv, int commit);
	/* Values returned by get and scan stay valid only until the next
	 * put, del, add or step_end: copy what you keep. -ENOENT if absent. */
	int (*get)(struct kv *kv, enum kv_table t, const void *key, size_t klen,
		   struct kv_val *out);
	int (*put)(struct kv *kv, enum kv_table t, const void *key, size_t klen,
		   const void *val, size_t vlen);
	int (*del)(struct kv *kv, enum kv_table t, const void *key, size_t klen);
	/* Add DELTA to the count KEY's value starts with (a varint, below),
	 * or, where there is no such row, put INIT (ILEN bytes, its count
	 * DELTA) -- with INIT NULL, -ENOENT.  The add is applied where the
	 * row is stored, to what it holds then, so that the adds of several
	 * processes on one row all count (a get then a put by each would
	 * lose one of two at once): a row another process created meanwhile
	 * gets DELTA added, not INIT put.  Reads see the row as after a put
	 * of what it now holds here.  -ERANGE (nothing changed) if the count
	 * would go below 0; -EIO if the value starts with no count.  Only
	 * for the counted tables (kv_table_counted). */
	int (*add)(struct kv *kv, enum kv_table t, const void *key, size_t klen, int64_t delta,
		   const void *init, size_t ilen);
	/* Optional (NULL: one process writes the store, and deletes a row
	 * whose count it takes to 0 itself).  Where several processes write
	 * one store, none can tell alone that a count it took to 0 stays
	 * there: another may be adding to it in a group not yet synced.  So
	 * a counted table's row whose count reaches 0 there (an add's or a
	 * put's, whoever's) is noted with the store's clock, and stays until
	 * this call finds its count still 0 after GRACE_MS more: it deletes
	 * those rows at once, where they are stored (not in the group: no
	 * step undoes it), and tells FN each one's key and value, after the
	 * delete.  Rows with writes pending here are left for a later call,
	 * as are rows past the first FREE_ZEROS_MAX: 1 then (more may be
	 * due), else 0.  The caller keeps GRACE_MS longer than any writer's
	 * unsynced window (its lease). */
	int (*free_zeros)(struct kv *kv, enum kv_table t, uint64_t grace_ms, kv_scan_fn fn,
			  void *ctx);
	int (*scan)(struct kv *kv, enum kv_table t, const void *start,
		    size_t slen, kv_scan_fn fn, void *ctx);
	/* The same over the rows whose key starts with the PLEN bytes at
	 * PREFIX (0: every row), from the first of them.  A backend that knows
	 * no such row is stored (an inode just claimed) need not look. */
	int (*scan_prefix)(struct kv *kv, enum kv_table t, const void *prefix,
			   size_t plen, kv_scan_fn fn, void *ctx);
	/* Make every completed step durable.  Outside any step. */
	int (*sync)(struct kv *kv);
	/* Optional (NULL: sync only): sync in two halves, so that the second
	 * can run outside the caller's lock.  sync_start commits every
	 * completed step, after which new steps may begin; sync_finish, which
	 * may run at the same time as any other call but close, makes durable
	 * what every sync_start before it committed, or fails (and so does
	 * every later call that could build on a commit it may have lost). */
	int (*sync_start)(struct kv *kv);
	int (*sync_finish)(struct kv *kv);
	/* Steps completed since the last sync (0: sync has nothing to do). */
	uint64_t (*unsynced)(struct kv *kv);
	/* Claim N inode numbers in a row in the partition of inode NEAR (see
	 * kv_partition), the first in *FIRST; or, with NEAR 0 and N 1, the
	 * first number of a new partition (a new namespace's directory).  A
	 * number is never claimed twice, even when the step that claimed it
	 * is undone (its numbers are then lost) or when several processes
	 * claim at once (Redis: INCRBY), so callers claim blocks and number
	 * from them.  A store's first claim is 1 (its root).  -ENOSPC when the
	 * partition (or the partitions) are used up. */
	int (*claim_inos)(struct kv *kv, uint64_t near, uint64_t n, uint64_t *first);
	/* Optional (NULL: one process writes the store, and numbers in its
	 * steps: a get, then puts).  KEY's number in T (a store-wide table
	 * whose rows are numbers: a uint32_t each, in the host's byte order),
	 * given now if it has none: the value of counter SEQ (a KV_META row
	 * of the same kind, the next number to give; 1 where it has none),
	 * which goes one up.  Both rows are written at once where they are
	 * stored, not in the group: no step undoes a number given (it stays
	 * given, as claimed inode numbers do), and several processes
	 * numbering at once agree on each key's number and never give one
	 * number twice.  -EBUSY (logged) if the group holds a write of either
	 * row (a caller that writes them in its steps syncs before it asks);
	 * -ENOSPC when the counter is used up. */
	int (*number)(struct kv *kv, enum kv_table t, const void *key, size_t klen,
		      const char *seq, uint32_t *id);
	/* Optional (NULL: nothing of its own to check): check the backend's
	 * own bookkeeping, which every scan relies on, before fsck scans.
	 * Each problem is told to PROBLEM in one line and counted in
	 * *PROBLEMS; with REPAIR, those it mends itself (the mends made
	 * durable) in *MENDED too: the others are the caller's checks' to
	 * find and mend (the line says so). */
	int (*check)(struct kv *kv, bool repair, void (*problem)(void *ctx, const char *line),
		     void *ctx, uint64_t *problems, uint64_t *mended);
	/* Optional (NULL: the engine counts its chunks itself, in its steps).
	 * Counted table T's tally (struct kv_tally) as stored, kept by the
	 * backend with every write of a row, wherever it comes from (several
	 * processes writing: only where the rows are stored can it be told
	 * whether a create made a row or added to another's), into *OUT, and
	 * each group's size to FN (if not NULL), groups summing to 0 left
	 * out.  What the group holds unsynced is not in it. */
	int (*tally)(struct kv *kv, enum kv_table t, struct kv_tally *out,
		     int (*fn)(void *ctx, uint32_t group, uint64_t size), void *ctx);
	/* Optional (NULL: one process writes the store, under its lock).
	 * Partition leases (docs/many-writers.md, step 4): once a process
	 * leases a partition, every partition but 0 its syncs write must be
	 * one it leases, and it caches rows of leased partitions only (of
	 * partition 0, only while it leases that too): another writes the
	 * rest.  A lease lasts as long as the session that took it (beat),
	 * and each take gives it a new generation, which fences the
	 * partition's syncs: a late one of the holder before writes nothing.
	 *
	 * KV_LEASE_TAKE: 0 when PART's lease is ours (taken now or before);
	 * -EBUSY when a live session holds it: that one is asked to let go
	 * (KV_LEASE_ASKED), and the caller tries again later.  A lease whose
	 * session is gone is taken over.
	 * KV_LEASE_RELEASE: let PART go, when nothing of it is unsynced or
	 * unconfirmed by the replicas a sync waits for (-EAGAIN else, and
	 * inside a step); what was cached of it is forgotten.  0 also when
	 * it was not ours.
	 * KV_LEASE_ASKED: 1 when another session asked for PART since we
	 * took it (and it is ours still), else 0. */
	int (*lease)(struct kv *kv, uint32_t part, enum kv_lease_how how);
	/* Optional, both (NULL: one process at a time opens the store).  A
	 * store one process writes while others follow it (follow.c):
	 *
	 * publish, for the writer: the followers alive now into *N; while
	 * there are any, each sync also tells them the keys of the rows it
	 * writes in the tables of MASK (bit 1 << table), right after the
	 * transaction that writes them; new followers are first told that
	 * anything may have changed.  Called now and then (the flusher),
	 * outside the serialisation of every other call: it has a connection
	 * of its own.
	 *
	 * follow, for a follower (a backend opened as one, which keeps
	 * nothing it read, since another process writes): wait MS ms at most
	 * for the next notice of the writer's and call FN with each row key
	 * it names; -ESTALE if notices may have been lost meanwhile (anything
	 * may have changed: subscribed anew, counted out for a while),
	 * -ENOTCONN while it cannot listen.  It also keeps this follower
	 * counted (a heartbeat on the server's clock).  One
	 * thread calls it, outside the serialisation of every other call: it
	 * has connections of its own.
	 *
	 * unfollow: that thread is done (joined): count this follower out
	 * at once, not when its heartbeat runs out (a follower that took the
	 * store over must not count itself among its own followers). */
	int (*publish)(struct kv *kv, uint32_t mask, uint64_t *n);
	/* Optional, both (NULL: one process at a time opens the store, so
	 * every row a session left is a dead one's when it opens).
	 * Sessions: each process that writes a store (kv.session) tags the
	 * rows only it may settle while it lives -- pending chunks, chunk
	 * drops, open orphans (store.c, "Sessions") -- and keeps its session
	 * alive; the rows of a session that is not are settled by whoever
	 * writes the store.
	 *
	 * sessions: the sessions alive now (this one among them), sorted,
	 * into *LIVE (malloc'd) and *N.  Asked after the rows it judges were
	 * read: a session counts itself in before it writes any.
	 *
	 * beat: keep this session alive for a while more (the store lock's
	 * keeper, with each renewal: a session outlives neither its lease nor
	 * its process by long); *DIED: a session alive at the last beat is
	 * no more (its rows are to be settled).  One thread calls it, outside
	 * the serialisation of every other call: it has a connection of its
	 * own. */
	int (*sessions)(struct kv *kv, uint32_t **live, size_t *n);
	int (*beat)(struct kv *kv, bool *died);
	int (*follow)(struct kv *kv, unsigned ms, kv_row_fn fn, void *ctx);
	void (*unfollow)(struct kv *kv);
	void (*close)(struct kv *kv);
};
struct kv {
	const struct kv_ops *ops;
	/* sync commits each partition's rows in a transaction of its own,
	 * partition 0's first (Redis Cluster: one slot a transaction): a
	 * crash can leave some partitions' rows of a group and not others'.
	 * The engine then never lets a step that writes partition P be
	 * followed, in one group, by one of partition 0 that relies on it
	 * (store.c settles dropped references only after a sync).  false: a
	 * group is one transaction, whatever partitions it writes. */
	bool apart;
	/* This process's session (sessions, above): the tag of the rows it
	 * writes that only it settles while it lives; 0 where the backend
	 * has no sessions (and for a follower, which writes none).  Never 0
	 * for a live session: rows a store kept from before sessions read 0. */
	uint32_t session;
};

/* A count a row's value starts with (add): a varint (varint.h) of
 * KV_COUNT_MAX at most, which is "saturated": it stays so, whatever is
 * added (nobody knows how many are left). */
#define KV_COUNT_MAX UINT32_MAX
/* VAL (VLEN bytes) with DELTA added to its count, into OUT (VLEN +
 * VARINT_MAX bytes), *OLEN bytes: add's rule, which every backend
 * follows (kv_redis.c's script too).  -EIO, -ERANGE as add. */
int kv_count_added(const void *val, size_t vlen, int64_t delta, uint8_t *out, size_t *olen);
/* Does VAL start with the count COUNT? */
bool kv_count_is(const void *val, size_t vlen, int64_t count);

/* qsort's and bsearch's order of uint32_t (partitions, sessions). */
int kv_compare_u32(const void *a, const void *b);
/* Is session ID in LIVE (N of them, sorted, as sessions lists them)? */
bool kv_session_listed(const uint32_t *live, size_t n, uint32_t id);

/* scan_prefix for a backend with nothing better: scan, stopped where the
 * keys stop starting with PREFIX. */
int kv_scan_prefix_by_scan(struct kv *kv, enum kv_table t, const void *prefix, size_t plen,
			   kv_scan_fn fn, void *ctx);

/* The LMDB backend: tables in DIR/data.mdb (DIR is created). */
int kv_lmdb_open(const char *dir, struct kv **out);
/* The map size LMDB is opened with: address space only. */
#define KV_LMDB_MAP_SIZE (256ULL << 30)

/* Blob area: where chunk frames are appended and read back. */
struct blob_loc {
	uint32_t seg;
	uint32_t len;
	uint64_t off;
};
struct blobs;
struct blob_ops {
	int (*append)(struct blobs *b, const void *head, size_t hlen,
		      const void *data, size_t dlen, struct blob_loc *out);
	int (*read)(struct blobs *b, const struct blob_loc *loc, uint64_t off,
		    void *buf, size_t len);
	/* Optional (NULL: reads cost no round trip worth saving): a hint
	 * that the N whole frames at LOCS are read next, each once (fsck's
	 * walk of every chunk): a backend may fetch them together, and
	 * answer those reads from what it fetched.  It replaces the hint
	 * before; a frame fetched and not read is dropped with it. */
	void (*prefetch)(struct blobs *b, const struct blob_loc *locs, size_t n);
	/* Make every appended byte durable (before the metadata that names
	 * it is synced). */
	int (*sync)(struct blobs *b);
	/* Optional (NULL: nothing to do): the metadata naming the frames
	 * appended before the last successful sync is now durable too. */
	void (*committed)(struct blobs *b);
	/* Bytes the whole area holds on disk (punched frames not counted),
	 * for statistics. */
	uint64_t (*size)(struct blobs *b);
	/* Compaction: the segments, their sizes and the bytes they still
	 * hold (size less punched frames; the one appended to now is reported
	 * with its flag set), starting a new segment for later
	 * appends, and removing a segment nothing points to any more.  A
	 * removed segment stays readable through handles already open until
	 * the next call of forget_removed, so a reader that located a chunk
	 * just before it moved still finds its bytes. */
	int (*segments)(struct blobs *b,
			int (*fn)(void *ctx, uint32_t seg, uint64_t size,
				  uint64_t held, bool current),
			void *ctx);
	int (*roll)(struct blobs *b);
	int (*remove)(struct blobs *b, uint32_t seg);
	void (*forget_removed)(struct blobs *b);
	/* Give the blocks of a frame nothing names any more back to the file
	 * system, keeping every other byte where it is.  Only for a frame
	 * whose freeing is durable: a crash must not bring back metadata that
	 * names it.  0 also when the area cannot do it (compaction reclaims). */
	int (*punch)(struct blobs *b, const struct blob_loc *loc);
	void (*close)(struct blobs *b);
};
struct blobs {
	const struct blob_ops *ops;
};
/* A prefetch hint names at most this many frames, of at most this many
 * bytes in all (more are left out). */
#define BLOB_PREFETCH_MAX 64               /* frames */
#define BLOB_PREFETCH_BYTES (16ull << 20) /* bytes */

/* The pack backend: segment files DIR/NNNNNNNN.pack (DIR is created). */
int blobs_pack_open(const char *dir, struct blobs **out);

/* The Redis backend (redis.h): STORE is redis://[[USER]:PASSWORD@]HOST[:PORT][/NAME].
 * Each opens a connection of its own; kv_redis_open marks a new NAME as a
 * nadb store and refuses (-EEXIST) a NAME holding other keys. */
bool store_is_redis_url(const char *store);
int kv_redis_open(const char *url, struct kv **out);
int blobs_redis_open(const char *url, struct blobs **out);
/* The same for a follower of the store's writer: NAME must hold a store
 * of this layout already (-ENOENT, -EPROTO), and nothing is written but
 * the follower's own heartbeat (kv_ops.follow). */
int kv_redis_open_follower(const char *url, struct kv **out);
int blobs_redis_open_follower(const char *url, struct blobs **out);
/* From now on a sync (and a claim of inode numbers) of KV, a Redis kv,
 * fails with -EIO unless at least N replicas of each primary it writes to
 * confirm it (WAIT): fsync then means "on N replicas", or fails. */
void kv_redis_set_min_replicas(struct kv *kv, unsigned n);
/* The writer KV holds the store lock's generation GEN (redis.h): every
 * sync's writes are fenced by it, and the fence of each partition is
 * raised to it now, so that a late sync of an earlier writer writes
 * nothing (kv_redis.c, "Fencing").  0, or -ENOLCK when a later writer's
 * generation is there already; a sync refused by a fence fails -ENOLCK. */
int kv_redis_set_fence(struct kv *kv, long long gen);
/* The same for the chunk bytes of a store on a cluster, whose segments
 * live on other primaries than the metadata naming them. */
void blobs_redis_set_min_replicas(struct blobs *b, unsigned n);

#endif
