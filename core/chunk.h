/* chunk.h -- content-addressed chunks: named by their XXH3-128 hash,
 * stored once (refcounted) however many values hold them, zlib-compressed
 * where that pays.  See chunk.c. */
#ifndef NADB_CHUNK_H
#define NADB_CHUNK_H

#include "backend.h"

#include <stdbool.h>
#include <stdint.h>

#define CHUNK_HASH_LEN 16
/* Bytes of a chunk table value (struct chunk_rec, chunk.c); raw_len at
 * CHUNK_REC_RAW_LEN_AT (metawalk.c checks and reads records directly). */
#define CHUNK_REC_LEN 32
/* Bytes of a chunk's frame before its payload: magic, flags, lengths and
 * the hash again, so that a pack can be read without the metadata. */
#define CHUNK_FRAME_HEAD 32
#define CHUNK_REC_RAW_LEN_AT 20

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
};

/* Where a chunk's bytes are and how to turn them back into the value. */
struct chunk_loc {
	struct blob_loc blob; /* the whole frame: header + stored bytes */
	uint32_t raw_len;
	uint8_t flags;   /* CHUNK_ZLIB */
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
/* Add DELTA (+1 or -1) references; at zero the chunk's record goes and its
 * bytes become garbage in their segment. */
int chunk_ref(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN], int delta);
/* fsck: set the reference count to REFS at once (a damaged count may be
 * billions away from the right one); at zero the chunk goes. */
int chunk_set_refs(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs);
int chunk_locate(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		 struct chunk_loc *out);
/* Does the chunk HASH have its bytes in frame LOC (1), or not, because
 * it is not stored or lives elsewhere (0)?  Before punching LOC. */
int chunk_names_frame(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		      const struct blob_loc *loc);
/* The reference count, for fsck. */
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
/* Live bytes recorded for segment SEG. */
uint64_t chunk_segment_live(struct chunker *c, uint32_t seg);

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
