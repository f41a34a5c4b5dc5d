/* chunk.h -- content-addressed chunks: named by their XXH3-128 hash,
 * stored once (refcounted) however many values hold them, zlib-compressed
 * where that pays.  See chunk.c.
 *
 * Chunk records (and so reference counts) are store-wide: partition 0
 * (backend.h).  A reference is taken in partition 0 (chunk_put,
 * chunk_ref +1); one dropped by an inode of another partition is noted in
 * that partition (chunk_unref) and taken off the chunk later (settling),
 * so that a step about one namespace need not write partition 0 to drop
 * a reference. */
#ifndef NADB_CHUNK_H
#define NADB_CHUNK_H

#include "backend.h"

#include <stdbool.h>
#include <stdint.h>

#define CHUNK_HASH_LEN 16
/* Bytes of a chunk table value as stores before format 6 wrote it (struct
 * chunk_rec raw, chunk.c); they are compact, and shorter, now. */
#define CHUNK_REC_OLD_LEN 32
/* Bytes of a chunk's frame before its payload: magic, flags and lengths,
 * so that a pack can be read without the metadata (chunk.c; frames of
 * stores before format 6 have the hash after them, 16 bytes more). */
#define CHUNK_FRAME_HEAD 16

struct chunker {
	struct kv *kv;
	struct blobs *blobs;
	bool compress;
	int level;
	/* Told of every chunk stored (+1) or freed (-1), inside the step. */
	int (*account)(void *ctx, int delta, uint32_t frame_bytes, uint32_t raw_bytes);
	/* Told of the frame of every chunk freed (its last reference went),
	 * inside the step; also gets account_ctx. */
	int (*freed)(void *ctx, const uint8_t hash[CHUNK_HASH_LEN],
		     const struct blob_loc *frame);
	/* Asked before a new frame of LEN bytes is appended: 0 or -ENOSPC. */
	int (*room)(void *ctx, uint64_t len);
	void *account_ctx;
	/* Drops noted since the last chunk_due_drops; entries from
	 * noted_step on belong to the step under way.  Under the store's meta
	 * lock. */
	struct chunk_drop {
		uint64_t part; /* the partition's first inode number */
		uint8_t hash[CHUNK_HASH_LEN];
		uint64_t seq; /* the row's number: its session's (kv.session) in
			       * the high half, the session's count in the low */
		bool taken;   /* chunk_take_drops deleted the row */
	} *noted;
	size_t nnoted, noted_cap, noted_step;
	size_t noted_sorted; /* the step's entries are sorted up to here */
	uint64_t drop_seq;   /* the last row number handed out (its low half) */
	/* A count reached 0 since the last chunk_free_zeros (or that one
	 * failed): chunk.c, "Freeing". */
	bool zeros;
};

/* Where a chunk's bytes are and how to turn them back into the value. */
struct chunk_loc {
	struct blob_loc blob; /* the whole frame: header + stored bytes */
	uint32_t raw_len;
	uint8_t flags;   /* CHUNK_ZLIB, CHUNK_SHORT_HEAD (chunk.c) */
	uint8_t variant; /* hash seed: 0 unless two contents collided */
};

/* A chunk ready to be stored: hashed and maybe compressed.  Preparing
 * needs no lock, so the expensive work happens outside the meta lock. */
struct chunk_prep {
	uint8_t hash[CHUNK_HASH_LEN];
	const uint8_t *raw;
	uint32_t raw_len;
	uint8_t *z; /* compressed bytes, or NULL when stored raw */
	uint32_t z_len;
};

/* The raw length of the chunk a chunk table value VAL (LEN bytes, either
 * encoding) describes: 0, or -EIO if it cannot be read.  For metawalk.c,
 * which checks and reads the records of a damaged store directly. */
int chunk_row_raw_len(const void *val, size_t len, uint32_t *raw_len);

/* An all-zero hash names no chunk: it marks a hole (a run of zeros). */
bool chunk_is_hole(const uint8_t hash[CHUNK_HASH_LEN]);
/* Are the N bytes at P all zero (a hole when a value is chunked)? */
bool chunk_all_zero(const void *p, size_t n);

int chunk_prepare(const struct chunker *c, const void *raw, size_t len,
		  struct chunk_prep *p);
void chunk_prep_release(struct chunk_prep *p);

/* The following run under the store's meta lock, inside a kv step. */

/* Take one reference on the chunk holding P's bytes, storing it if it is
 * new.  An existing chunk with the same hash is shared only if its bytes are
 * equal; otherwise the next hash seed is tried.  HASH gets the final name. */
int chunk_put(struct chunker *c, const struct chunk_prep *p,
	      uint8_t hash[CHUNK_HASH_LEN]);
/* Add DELTA references (in a step of partition 0); at zero the chunk's
 * record goes and its bytes become garbage in their segment -- or, where
 * several processes may write the store, it waits for chunk_free_zeros
 * (chunk.c, "Freeing"). */
int chunk_ref(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN], int delta);
/* Free the chunks whose count has stood at 0 for GRACE_MS (ms, the
 * store's clock) or more, where the backend waits for it (else nothing
 * to do): their records go at once (no step undoes it), and their
 * frames go to the freed hook; no count changes (chunk_ref took them out
 * of the statistics and the live bytes at 0).  Outside any step.  1 if
 * more may be due (kv_ops.free_zeros): c->zeros stays set, as it is when
 * a count reaches 0 meanwhile. */
int chunk_free_zeros(struct chunker *c, uint64_t grace_ms);
/* Drop one reference held by inode OWNER, inside OWNER's step: at once
 * (chunk_ref -1) if OWNER is in partition 0, else noted in OWNER's
 * partition's KV_CHUNK_DROPS for settling (below).  A chunk is never freed
 * before every drop noted for it is settled, so a reference taken
 * meanwhile (always in partition 0) keeps it. */
int chunk_unref(struct chunker *c, uint64_t owner, const uint8_t hash[CHUNK_HASH_LEN]);
/* A step begins / ends (COMMITTED or undone): the notes of an undone step
 * are forgotten with it. */
void chunk_step_begin(struct chunker *c);
void chunk_step_end(struct chunker *c, bool committed);
/* Are drops noted that chunk_due_drops has not handed out yet? */
bool chunk_unsettled(const struct chunker *c);
/* Settling, in three parts (store.c runs them): the drops due -- those
 * noted since the last call (chunk_due_drops), or the rows of
 * KV_CHUNK_DROPS a session left for others to settle, those of the
 * sessions KEEP says (chunk_left_drops: a crashed one's; asked after the
 * scan; the drops noted stay noted) -- into *OUT (N, sorted by partition;
 * the caller frees it), outside any step; then for each partition's run, a step of that
 * partition deleting their rows (taken, unless one is gone already);
 * then a step of partition 0 taking the references of those taken off
 * the chunks, freeing those at zero.  A crash between the last two loses drops (the chunks
 * stay counted: space, not data, which fsck --repair gives back), never
 * takes one off twice. */
int chunk_due_drops(struct chunker *c, struct chunk_drop **out, size_t *n);
int chunk_left_drops(struct chunker *c, bool (*keep)(void *ctx, uint32_t session), void *ctx,
		     struct chunk_drop **out, size_t *n);
int chunk_take_drops(struct chunker *c, struct chunk_drop *d, size_t n);
int chunk_apply_drops(struct chunker *c, const struct chunk_drop *d, size_t n);
/* fsck: the references dropped but not settled: FN is called once a row
 * (a row is one reference). */
typedef int (*chunk_drop_fn)(void *ctx, uint64_t part, const uint8_t hash[CHUNK_HASH_LEN]);
int chunk_drops(struct chunker *c, chunk_drop_fn fn, void *ctx);
/* Free what the chunker holds (the store closes). */
void chunk_release(struct chunker *c);
/* A reference count that reaches this stays there: the chunk is kept for
 * good (a leak, which fsck --repair recounts), never wrapped to a count
 * below the values naming it. */
#define CHUNK_REFS_MAX KV_COUNT_MAX

/* fsck: set the reference count to REFS at once (a damaged count may be
 * billions away from the right one); at zero the chunk goes. */
int chunk_set_refs(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs);
/* fsck --repair: a record at zero references written again as it is, so
 * that a store that frees at zero later (kv_ops.free_zeros) notes it to
 * be freed if its note was lost; nothing where it frees at once. */
int chunk_note_zero(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN]);
int chunk_locate(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		 struct chunk_loc *out);
/* The same, -ENOENT without a word if the chunk is not stored: a
 * follower's (follow.c) value may have been replaced, its chunks freed. */
int chunk_find(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN], struct chunk_loc *out);
/* Does the chunk HASH have its bytes in frame LOC (1), or not, because
 * it is not stored or lives elsewhere (0)?  Before punching LOC. */
int chunk_names_frame(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		      const struct blob_loc *loc);
/* The references held now: the chunk's count less the drops the step
 * under way noted (statistics, fsck). */
int chunk_refs(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
	       uint32_t *refs);

/* Call FN on every stored chunk from hash FROM on (NULL: the first), in
 * hash order (fsck, statistics, compaction). */
typedef int (*chunk_scan_fn)(void *ctx, const uint8_t hash[CHUNK_HASH_LEN],
			     uint32_t refs, const struct chunk_loc *loc);
int chunk_scan(struct chunker *c, const uint8_t *from, chunk_scan_fn fn, void *ctx);

/* Compaction: point the chunk at a copy of its frame at TO, if it is still
 * where OLD says (1), or leave it (0: it moved or went meanwhile). */
int chunk_relocate(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		   const struct chunk_loc *old, const struct blob_loc *to);
/* fsck: every frame the packs hold, read from their headers (a
 * segment's walk ends at the first header that is not one).  FN returns
 * 0 to go on, 1 to stop, or a negative errno. */
typedef int (*chunk_frame_fn)(void *ctx, const uint8_t hash[CHUNK_HASH_LEN],
			      const struct chunk_loc *loc);
int chunk_frames(struct chunker *c, chunk_frame_fn fn, void *ctx);
/* fsck: (re)point HASH's record at the frame LOC, with REFS references.
 * Inside a step. */
int chunk_adopt(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		const struct chunk_loc *loc, uint32_t refs);
/* A hint: the N chunks at LOCS are read whole next, each once (fsck),
 * so that a backend where each read is a round trip fetches them
 * together (backend.h, prefetch). */
void chunk_prefetch(struct chunker *c, const struct chunk_loc *const *locs, size_t n);
/* Live bytes recorded for segment SEG; UINT64_MAX: unknown (logged). */
uint64_t chunk_segment_live(struct chunker *c, uint32_t seg);
/* The same for N segments SEG[] into LIVE[], read at once (where the
 * backend keeps a tally, one read of it for all of them). */
void chunk_segments_live(struct chunker *c, const uint32_t *seg, size_t n, uint64_t *live);

/* Are the chunk's bytes stored as they are (not compressed), so that a
 * part of them costs a read of that part only? */
bool chunk_loc_is_raw(const struct chunk_loc *loc);

/* Outside any lock: LEN bytes of the chunk's value from OFF into DST.
 * A whole-chunk read is checked against the hash (-EIO and a log line on
 * a mismatch). */
int chunk_read(struct chunker *c, const struct chunk_loc *loc,
	       const uint8_t hash[CHUNK_HASH_LEN], uint32_t off, uint32_t len,
	       void *dst);
/* The same without the log line: a damaged chunk sets *WHY (else NULL),
 * for a caller whose line names the key. */
int chunk_read_why(struct chunker *c, const struct chunk_loc *loc,
		   const uint8_t hash[CHUNK_HASH_LEN], uint32_t off, uint32_t len,
		   void *dst, const char **why);

#endif
