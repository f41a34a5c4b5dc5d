/* chunk.c -- content-addressed chunk storage.
 *
 * A chunk's name is the XXH3-128 hash of its bytes (seeded with a small
 * "variant" number, normally 0).  The chunk table maps a name to where its
 * frame sits in the blob area and how many references it has; a value is
 * a list of names.  XXH3 is fast but not collision-resistant against an
 * attacker, so a chunk is shared only after comparing bytes: on a mismatch
 * the next seed gives the newcomer a name of its own, and sharing another
 * key's chunk on a forged collision cannot happen.
 *
 * Each frame starts with a header of magic and lengths, and a whole read
 * hashes the bytes it gets, so that it tells a corrupted or misplaced
 * frame from a good one.
 *
 * Records live in partition 0, but most references are held by keys of a
 * namespace, in a partition of its own (backend.h).  A step about such a
 * key must not write partition 0 (on a cluster, another node), so it does
 * not drop references there: it adds a row (partition, hash, number) to
 * its partition's drops (no read needed: the number is the daemon's own),
 * and settling later deletes the row and takes the reference off the
 * chunk, in steps of their own.  Until then the
 * chunk's count is too high, never too low: a chunk is freed only once
 * every drop is settled.  Taking references stays in partition 0 (a new
 * chunk's record is written there anyway), in steps before the key's.
 *
 * A count changes by an add (backend.h), which the backend applies to
 * the count it holds then, never by a put of the count read here: so
 * that the references several writers of one store take and drop all
 * count.
 *
 * Freeing.  Where one process writes the store, a chunk whose count it
 * takes to 0 is freed in the same step: record deleted, frame queued for
 * punching (the freed hook).  Where several may (a backend with
 * free_zeros), another may be taking a reference in a group not yet
 * synced, so a count of 0 frees nothing at once: the chunk leaves the
 * statistics and its segment's live bytes in the step that took it
 * there, but its record (at 0) and its frame stay.  chunk_free_zeros
 * later frees the records still at 0 after a grace (the backend checks
 * the count again, where it is stored), and only their frames are left
 * to go: nothing is counted then, so a crash between changes no count.
 * (Compaction moves a record at 0 like any other, counting nothing.)  A
 * chunk wanted again meanwhile (chunk_put finds its record at 0) is not
 * simply counted again, since the record may be freed before that add
 * lands: its bytes go to a frame of their own, and an add that creates
 * puts the record back naming it if it is gone by then, or else counts
 * a reference on it (our frame is then garbage, never counted live; the
 * record's frame is counted live again).
 */
#include "chunk.h"
#include "grow.h"
#include "log.h"
#include "varint.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zlib.h>

/* A frame's header: magic, flags, variant, raw and stored lengths
 * (CHUNK_FRAME_HEAD bytes), then the stored bytes.  Stores before format 6
 * wrote FRAME_MAGIC_OLD frames, whose header repeats the chunk's hash after
 * that (CHUNK_FRAME_HEAD_OLD bytes in all); both are read.  The hash need
 * not be in the pack: the bytes give it back (hash_bytes), and every whole
 * read checks them against it anyway. */
#define FRAME_MAGIC 0x6e626466u     /* "fdbn" in the file: no byte as in the old */
#define FRAME_MAGIC_OLD 0x4e444243u /* "CBDN" */
#define CHUNK_FRAME_HEAD_OLD (CHUNK_FRAME_HEAD + CHUNK_HASH_LEN)
#define CHUNK_ZLIB 1
/* Set in a chunk record's flags (never a frame's): its frame has the
 * CHUNK_FRAME_HEAD-byte header, not the old one.  The record's frame
 * length says so too; a part of a raw chunk is read only where the two
 * agree, so that one damaged field cannot move a read into the header. */
#define CHUNK_SHORT_HEAD 0x80
#define MAX_VARIANT 16
#define CHUNK_RAW_MAX (16u << 20) /* the largest chunk size a store can have */

struct frame_head {
	uint32_t magic;
	uint8_t flags;
	uint8_t variant;
	uint16_t reserved;
	uint32_t raw_len;
	uint32_t stored_len;
};
_Static_assert(sizeof(struct frame_head) == CHUNK_FRAME_HEAD, "the statistics count it");

/* The bytes of the header of LOC's frame, as its record says. */
static size_t loc_head_len(const struct chunk_loc *loc)
{
	return loc->flags & CHUNK_SHORT_HEAD ? CHUNK_FRAME_HEAD : CHUNK_FRAME_HEAD_OLD;
}

/* The bytes of H's frame's header: 0 if H is no header. */
static size_t head_len(const struct frame_head *h)
{
	uint32_t m = le32toh(h->magic);
	return m == FRAME_MAGIC ? CHUNK_FRAME_HEAD : m == FRAME_MAGIC_OLD ? CHUNK_FRAME_HEAD_OLD : 0;
}

/* The chunk table's value, as the code holds it.  Stores before format 6
 * kept it raw, as it lies in memory (CHUNK_REC_OLD_LEN bytes); it is
 * written compact now (rec_encode), and read either way. */
struct chunk_rec {
	uint32_t refs;
	uint32_t seg;
	uint64_t off;
	uint32_t len; /* whole frame */
	uint32_t raw_len;
	uint8_t flags;
	uint8_t variant;
	uint8_t reserved[2];
};
_Static_assert(sizeof(struct chunk_rec) == CHUNK_REC_OLD_LEN, "the raw records' size");

/* The compact encoding: refs, seg, off, raw_len and zigzag(len - raw_len)
 * (a raw frame's length is raw_len plus its header) as varints, then
 * flags and variant a byte each: ~11 bytes for a 4 KiB chunk, where the
 * raw struct took 32.  Frame offsets stay below 2^56 (a segment is at most
 * a few hundred MiB), so a compact record is at most 30 bytes and never
 * CHUNK_REC_OLD_LEN long: the length tells the encodings apart. */
#define REC_OFF_LIMIT (1ULL << 56)
#define REC_MAX (4 * 5 + 8 + 2)

static size_t rec_encode(const struct chunk_rec *r, uint8_t out[REC_MAX])
{
	assert(r->off < REC_OFF_LIMIT);
	size_t n = varint_put(out, r->refs);
	n += varint_put(out + n, r->seg);
	n += varint_put(out + n, r->off);
	n += varint_put(out + n, r->raw_len);
	n += varint_put(out + n, zigzag((int64_t)r->len - (int64_t)r->raw_len));
	out[n++] = r->flags;
	out[n++] = r->variant;
	assert(n <= REC_MAX && n != CHUNK_REC_OLD_LEN);
	return n;
}

/* A record of either encoding; -EIO if it is neither. */
static int rec_decode(const void *val, size_t len, struct chunk_rec *r)
{
	memset(r, 0, sizeof(*r));
	if (len == CHUNK_REC_OLD_LEN) {
		memcpy(r, val, sizeof(*r));
		return r->off < REC_OFF_LIMIT ? 0 : -EIO; /* rec_encode's bound */
	}
	const uint8_t *p = val, *end = p + len;
	uint64_t refs, seg, off, raw, delta;
	if (!varint_get(&p, end, &refs) || !varint_get(&p, end, &seg) ||
	    !varint_get(&p, end, &off) || !varint_get(&p, end, &raw) ||
	    !varint_get(&p, end, &delta) || end - p != 2)
		return -EIO;
	if (refs > UINT32_MAX || seg > UINT32_MAX || off >= REC_OFF_LIMIT ||
	    raw > UINT32_MAX || delta >> 34) /* so the sum below cannot overflow */
		return -EIO;
	int64_t frame = (int64_t)raw + unzigzag(delta);
	if (frame < 0 || frame > UINT32_MAX)
		return -EIO;
	r->refs = (uint32_t)refs, r->seg = (uint32_t)seg, r->off = off;
	r->raw_len = (uint32_t)raw, r->len = (uint32_t)frame;
	r->flags = p[0], r->variant = p[1];
	return 0;
}

int chunk_row_raw_len(const void *val, size_t len, uint32_t *raw_len)
{
	struct chunk_rec r;
	int rc = rec_decode(val, len, &r);
	if (!rc)
		*raw_len = r.raw_len;
	return rc;
}

static const uint8_t zero_hash[CHUNK_HASH_LEN];

bool chunk_is_hole(const uint8_t hash[CHUNK_HASH_LEN])
{
	return memcmp(hash, zero_hash, CHUNK_HASH_LEN) == 0;
}

static void hash_bytes(const void *data, size_t len, uint8_t variant,
		       uint8_t out[CHUNK_HASH_LEN])
{
	XXH128_hash_t h = XXH3_128bits_withSeed(data, len, variant);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	memcpy(out, c.digest, CHUNK_HASH_LEN);
}

/* Order-0 entropy of about 1 KiB sampled across the chunk, in bits per
 * byte: random or already compressed data scores near 8 (a 1 KiB sample of
 * random bytes scores about 7.8) and is not worth a zlib pass. */
static double sample_entropy(const uint8_t *p, size_t len)
{
	unsigned count[256] = {0};
	size_t stride = len > 1024 ? len / 1024 : 1, n = 0;
	for (size_t i = 0; i < len; i += stride, n++)
		count[p[i]]++;
	double e = 0;
	for (int i = 0; i < 256; i++) {
		if (count[i]) {
			double q = (double)count[i] / (double)n;
			e -= q * log2(q);
		}
	}
	return e;
}

int chunk_prepare(const struct chunker *c, const void *raw, size_t len,
		  struct chunk_prep *p)
{
	memset(p, 0, sizeof(*p));
	p->raw = raw;
	p->raw_len = (uint32_t)len;
	hash_bytes(raw, len, 0, p->hash);
	if (!c->compress || len < 128 || sample_entropy(raw, len) > 7.2)
		return 0;
	uLongf zlen = compressBound(len);
	uint8_t *z = malloc(zlen);
	if (!z)
		return -ENOMEM;
	if (compress2(z, &zlen, raw, len, c->level) != Z_OK ||
	    zlen > len - len / 8) {
		free(z);
		return 0; /* does not pay: store raw */
	}
	p->z = z;
	p->z_len = (uint32_t)zlen;
	return 0;
}

bool chunk_all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

void chunk_prep_release(struct chunk_prep *p)
{
	free(p->z);
	p->z = NULL;
}

/* HASH's record into *REC; *RAW (if not NULL): it is of the old raw
 * encoding. */
static int get_rec_as(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		      struct chunk_rec *rec, bool *raw)
{
	struct kv_val v;
	int rc = c->kv->ops->get(c->kv, KV_CHUNKS, hash, CHUNK_HASH_LEN, &v);
	if (rc)
		return rc;
	if (rec_decode(v.data, v.len, rec)) {
		nadb_log("chunk table: a record of %zu bytes that cannot be read", v.len);
		return -EIO;
	}
	if (raw)
		*raw = v.len == CHUNK_REC_OLD_LEN;
	return 0;
}

static int get_rec(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		   struct chunk_rec *rec)
{
	return get_rec_as(c, hash, rec, NULL);
}

static int put_rec(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		   const struct chunk_rec *rec)
{
	uint8_t buf[REC_MAX];
	return c->kv->ops->put(c->kv, KV_CHUNKS, hash, CHUNK_HASH_LEN, buf,
			       rec_encode(rec, buf));
}

/* Take DELTA references on HASH, whose record REC (RAW: of the old raw
 * encoding) now counts REC->refs with them: an add (backend.h), so that
 * references other processes take or drop meanwhile count too.  A raw
 * record (only a store on one machine has them) is written compact. */
static int add_refs(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		    const struct chunk_rec *rec, bool raw, int delta)
{
	if (raw)
		return put_rec(c, hash, rec);
	return c->kv->ops->add(c->kv, KV_CHUNKS, hash, CHUNK_HASH_LEN, delta, NULL, 0);
}

/* Does a count of 0 wait for chunk_free_zeros (see "Freeing")? */
static bool frees_later(const struct chunker *c)
{
	return c->kv->ops->free_zeros != NULL;
}

/* Does the backend keep what the records weigh itself (its tally:
 * backend.h)?  Then nothing here counts them: the statistics' chunk
 * figures and the segments' live bytes are read from it. */
static bool tallied(const struct chunker *c)
{
	return c->kv->ops->tally != NULL;
}

/* The statistics' count of chunks: DIR (+1, -1) times a chunk of
 * FRAME_BYTES stored, RAW_BYTES raw. */
static int account(struct chunker *c, int dir, uint32_t frame_bytes, uint32_t raw_bytes)
{
	if (tallied(c) || !c->account)
		return 0;
	return c->account(c->account_ctx, dir, frame_bytes, raw_bytes);
}

/* Live bytes per segment: what compaction weighs against segment size. */
static int count_live(struct chunker *c, uint32_t seg, int64_t delta)
{
	if (tallied(c))
		return 0;
	uint32_t key = htobe32(seg);
	uint64_t live = 0;
	struct kv_val v;
	int rc = c->kv->ops->get(c->kv, KV_SEGMENTS, &key, sizeof(key), &v);
	if (rc == 0 && v.len == sizeof(live))
		memcpy(&live, v.data, sizeof(live));
	else if (rc && rc != -ENOENT)
		return rc;
	/* too low is safe (compaction moves every record it finds before a
	 * segment goes); below zero would wrap (several writers: a frame of
	 * chunk_put's again, named by the record after all, never counted) */
	if (delta < 0 && live < (uint64_t)-delta) {
		if (!frees_later(c)) /* one writer: its own counts went wrong */
			nadb_log("chunk: segment %u counts fewer live bytes than it frees: "
				 "counting 0 (nadb fsck --repair recounts)", seg);
		live = 0;
	} else {
		live = (uint64_t)((int64_t)live + delta);
	}
	if (live == 0) {
		rc = c->kv->ops->del(c->kv, KV_SEGMENTS, &key, sizeof(key));
		return rc == -ENOENT ? 0 : rc;
	}
	return c->kv->ops->put(c->kv, KV_SEGMENTS, &key, sizeof(key), &live,
			       sizeof(live));
}

/* R's chunk comes into the counts (DIR +1) or leaves them (-1): the
 * statistics, and its segment's live bytes. */
static int recount(struct chunker *c, const struct chunk_rec *r, int dir)
{
	int rc = account(c, dir, r->len, r->raw_len);
	return rc ? rc : count_live(c, r->seg, (int64_t)dir * r->len);
}

static void loc_of_rec(const struct chunk_rec *r, struct chunk_loc *loc)
{
	loc->blob.seg = r->seg;
	loc->blob.off = r->off;
	loc->blob.len = r->len;
	loc->raw_len = r->raw_len;
	loc->flags = r->flags;
	loc->variant = r->variant;
}

/* Does the stored chunk REC hold exactly P's bytes? */
static int same_bytes(struct chunker *c, const struct chunk_rec *rec,
		      const uint8_t hash[CHUNK_HASH_LEN], const struct chunk_prep *p)
{
	if (rec->raw_len != p->raw_len)
		return 0;
	uint8_t *buf = malloc(p->raw_len ? p->raw_len : 1);
	if (!buf)
		return -ENOMEM;
	struct chunk_loc loc;
	loc_of_rec(rec, &loc);
	int rc = chunk_read(c, &loc, hash, 0, p->raw_len, buf);
	int same = rc ? rc : memcmp(buf, p->raw, p->raw_len) == 0;
	free(buf);
	return same;
}

/* Store P's bytes as HASH in a frame of their own, with a record that an
 * add creates (see "Freeing").  AT_ZERO (NULL: none): HASH's record is
 * there at 0, and the add will count a reference on it unless it is
 * freed first: it counts again in the statistics, and our frame is
 * garbage, not counted live. */
static int store_new(struct chunker *c, const struct chunk_prep *p,
		     const uint8_t hash[CHUNK_HASH_LEN], uint8_t variant,
		     const struct chunk_rec *at_zero)
{
	struct frame_head h = {
		.magic = htole32(FRAME_MAGIC),
		.flags = p->z ? CHUNK_ZLIB : 0,
		.variant = variant,
		.raw_len = htole32(p->raw_len),
		.stored_len = htole32(p->z ? p->z_len : p->raw_len),
	};
	struct blob_loc loc;
	int rc = c->room ? c->room(c->account_ctx, sizeof(h) + (p->z ? p->z_len : p->raw_len)) : 0;
	if (rc)
		return rc;
	rc = c->blobs->ops->append(c->blobs, &h, sizeof(h),
				       p->z ? p->z : p->raw,
				       p->z ? p->z_len : p->raw_len, &loc);
	if (rc)
		return rc;
	struct chunk_rec rec = {
		.refs = 1, .seg = loc.seg, .off = loc.off, .len = loc.len,
		.raw_len = p->raw_len, .flags = h.flags | CHUNK_SHORT_HEAD, .variant = variant,
	};
	/* an add that creates: if another process stored the same bytes
	 * meanwhile, its record gains our reference and our frame is garbage */
	uint8_t buf[REC_MAX];
	rc = c->kv->ops->add(c->kv, KV_CHUNKS, hash, CHUNK_HASH_LEN, 1, buf, rec_encode(&rec, buf));
	return rc ? rc : recount(c, at_zero ? at_zero : &rec, +1);
}

int chunk_put(struct chunker *c, const struct chunk_prep *p,
	      uint8_t hash[CHUNK_HASH_LEN])
{
	memcpy(hash, p->hash, CHUNK_HASH_LEN);
	for (uint8_t variant = 0; variant < MAX_VARIANT; variant++) {
		if (variant)
			hash_bytes(p->raw, p->raw_len, variant, hash);
		if (chunk_is_hole(hash))
			continue;
		struct chunk_rec rec;
		bool raw;
		int rc = get_rec_as(c, hash, &rec, &raw);
		if (rc == -ENOENT)
			return store_new(c, p, hash, variant, NULL);
		if (rc)
			return rc;
		bool at_zero = rec.refs == 0 && frees_later(c);
		rc = same_bytes(c, &rec, hash, p);
		if (rc < 0 && at_zero) { /* being freed by another process? */
			nadb_log("chunk: a chunk no key holds cannot be read back to share it "
				 "(%s): storing apart", strerror(-rc));
			continue;
		}
		if (rc < 0)
			return rc;
		if (rc && at_zero)
			return store_new(c, p, hash, variant, &rec);
		if (rc) {
			if (rec.refs == CHUNK_REFS_MAX)
				return 0; /* saturated: kept for good */
			rec.refs++;
			return add_refs(c, hash, &rec, raw, 1);
		}
		nadb_log("chunk: hash collision between different bytes (variant %u); "
			 "storing apart", variant);
	}
	nadb_log("chunk: %d colliding hashes in a row; refusing", MAX_VARIANT);
	return -EIO;
}

int chunk_ref(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN], int delta)
{
	struct chunk_rec rec;
	bool raw;
	int rc = get_rec_as(c, hash, &rec, &raw);
	if (rc) {
		if (rc == -ENOENT)
			nadb_log("chunk: reference to a missing chunk");
		return rc == -ENOENT ? -EIO : rc;
	}
	if (rec.refs == CHUNK_REFS_MAX)
		return 0; /* saturated: nobody knows how many are left */
	if (delta < 0 && rec.refs < (uint32_t)-delta) {
		nadb_log("chunk: refcount below zero");
		return -EIO;
	}
	/* a record at 0 waiting to be freed (see "Freeing") counts again */
	bool again = rec.refs == 0 && frees_later(c);
	int64_t refs = (int64_t)rec.refs + delta;
	rec.refs = refs > (int64_t)CHUNK_REFS_MAX ? CHUNK_REFS_MAX : (uint32_t)refs;
	if (again && (rc = recount(c, &rec, +1)))
		return rc;
	if (rec.refs)
		return add_refs(c, hash, &rec, raw, delta);
	if (frees_later(c)) { /* see "Freeing" */
		rc = add_refs(c, hash, &rec, raw, delta);
		if (!rc)
			rc = recount(c, &rec, -1);
		c->zeros = c->zeros || !rc;
		return rc;
	}
	rc = c->kv->ops->del(c->kv, KV_CHUNKS, hash, CHUNK_HASH_LEN);
	if (!rc)
		rc = account(c, -1, rec.len, rec.raw_len);
	if (!rc && c->freed) {
		struct blob_loc loc = {.seg = rec.seg, .off = rec.off, .len = rec.len};
		rc = c->freed(c->account_ctx, hash, &loc);
	}
	return rc ? rc : count_live(c, rec.seg, -(int64_t)rec.len);
}

#define DROP_KEY_LEN (8 + CHUNK_HASH_LEN + 8) /* partition, hash, number */

static void drop_key(uint8_t key[DROP_KEY_LEN], const struct chunk_drop *d)
{
	uint64_t first = htobe64(d->part), seq = htobe64(d->seq);
	memcpy(key, &first, 8);
	memcpy(key + 8, d->hash, CHUNK_HASH_LEN);
	memcpy(key + 8 + CHUNK_HASH_LEN, &seq, 8);
}

int chunk_unref(struct chunker *c, uint64_t owner, const uint8_t hash[CHUNK_HASH_LEN])
{
	uint32_t part = kv_partition(owner);
	if (part == 0)
		return chunk_ref(c, hash, -1);
	if (ARRAY_GROW(c->noted, c->nnoted, c->noted_cap))
		return -ENOMEM;
	struct chunk_drop *d = &c->noted[c->nnoted];
	d->part = (uint64_t)part << KV_PART_SHIFT;
	memcpy(d->hash, hash, CHUNK_HASH_LEN);
	/* a row of its own (nothing to read first): our session's, numbered
	 * by us (the low half wraps after 2^32 drops, long settled by then) */
	d->seq = (uint64_t)c->kv->session << 32 | (uint32_t)++c->drop_seq;
	d->taken = false;
	uint8_t key[DROP_KEY_LEN];
	drop_key(key, d);
	int rc = c->kv->ops->put(c->kv, KV_CHUNK_DROPS, key, sizeof(key), "", 0);
	if (rc)
		return rc;
	c->nnoted++;
	c->noted_sorted = 0;
	return 0;
}

void chunk_step_begin(struct chunker *c)
{
	c->noted_step = c->nnoted;
}

void chunk_step_end(struct chunker *c, bool committed)
{
	assert(c->noted_step <= c->nnoted);
	if (!committed)
		c->nnoted = c->noted_step;
	c->noted_step = c->nnoted;
}

bool chunk_unsettled(const struct chunker *c)
{
	return c->nnoted > 0;
}

/* What a scan of the drop rows left by sessions gone collects. */
struct left_drops {
	bool (*keep)(void *ctx, uint32_t session);
	void *ctx;
	struct chunk_drop *d;
	size_t n, cap;
};

static int collect_drop(void *ctx, const void *key, size_t klen, const void *val,
			size_t vlen)
{
	(void)val;
	(void)vlen;
	struct left_drops *l = ctx;
	if (klen != DROP_KEY_LEN)
		return -EIO;
	if (ARRAY_GROW(l->d, l->n, l->cap))
		return -ENOMEM;
	struct chunk_drop *d = &l->d[l->n++];
	d->part = kv_key_ino(key);
	memcpy(d->hash, (const uint8_t *)key + 8, CHUNK_HASH_LEN);
	d->seq = kv_key_ino((const uint8_t *)key + 8 + CHUNK_HASH_LEN);
	d->taken = false;
	return 0;
}

static int cmp_part_drop(const void *a, const void *b)
{
	const struct chunk_drop *x = a, *y = b;
	if (x->part != y->part)
		return x->part < y->part ? -1 : 1;
	int h = memcmp(x->hash, y->hash, CHUNK_HASH_LEN);
	return h ? h : x->seq < y->seq ? -1 : x->seq > y->seq;
}

int chunk_due_drops(struct chunker *c, struct chunk_drop **out, size_t *n)
{
	assert(c->noted_step == c->nnoted); /* no step under way */
	if (c->nnoted)
		qsort(c->noted, c->nnoted, sizeof(*c->noted), cmp_part_drop);
	*out = c->noted;
	*n = c->nnoted;
	c->noted = NULL;
	c->nnoted = c->noted_cap = c->noted_step = c->noted_sorted = 0;
	return 0;
}

int chunk_left_drops(struct chunker *c, bool (*keep)(void *ctx, uint32_t session), void *ctx,
		     struct chunk_drop **out, size_t *n)
{
	struct left_drops l = {.keep = keep, .ctx = ctx};
	int rc = c->kv->ops->scan(c->kv, KV_CHUNK_DROPS, NULL, 0, collect_drop, &l);
	size_t kept = 0;
	for (size_t i = 0; !rc && i < l.n; i++) { /* judged after the scan (backend.h) */
		uint32_t session = (uint32_t)(l.d[i].seq >> 32);
		/* ours (a backend without sessions: every row is session 0's,
		 * kept by a pass that failed): numbers go on from them */
		if (session == c->kv->session && (uint32_t)l.d[i].seq > (uint32_t)c->drop_seq)
			c->drop_seq = (uint32_t)l.d[i].seq;
		if (keep(ctx, session))
			l.d[kept++] = l.d[i];
	}
	if (rc) {
		free(l.d);
		l.d = NULL;
		kept = 0;
	}
	if (kept)
		qsort(l.d, kept, sizeof(*l.d), cmp_part_drop);
	*out = l.d;
	*n = kept;
	return rc;
}

int chunk_take_drops(struct chunker *c, struct chunk_drop *d, size_t n)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < n; i++) {
		assert(i == 0 || d[i].part == d[0].part);
		uint8_t key[DROP_KEY_LEN];
		drop_key(key, &d[i]);
		rc = c->kv->ops->del(c->kv, KV_CHUNK_DROPS, key, sizeof(key));
		d[i].taken = rc == 0; /* gone already: nothing to take off */
		if (rc == -ENOENT)
			rc = 0;
	}
	return rc;
}

int chunk_apply_drops(struct chunker *c, const struct chunk_drop *d, size_t n)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < n; i++) {
		struct chunk_rec rec;
		if (!d[i].taken)
			continue;
		/* A damaged count or record is fsck's to mend: the drops of
		 * the other chunks go on. */
		rc = get_rec(c, d[i].hash, &rec);
		if (rc == -ENOENT) {
			nadb_log("chunk: a dropped reference to a chunk not stored: nothing to "
				 "take it off");
			rc = 0;
		} else if (!rc && rec.refs == 0) {
			nadb_log("chunk: a reference dropped from a chunk counting none: left "
				 "as it is (nadb fsck --repair recounts)");
		} else if (!rc) {
			rc = chunk_ref(c, d[i].hash, -1);
		}
	}
	return rc;
}

struct drops_ctx {
	chunk_drop_fn fn;
	void *ctx;
};

static int drop_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct drops_ctx *d = ctx;
	if (klen != DROP_KEY_LEN)
		return -EIO;
	return d->fn(d->ctx, kv_key_ino(key), (const uint8_t *)key + 8);
}

int chunk_drops(struct chunker *c, chunk_drop_fn fn, void *ctx)
{
	struct drops_ctx d = {fn, ctx};
	return c->kv->ops->scan(c->kv, KV_CHUNK_DROPS, NULL, 0, drop_row, &d);
}

void chunk_release(struct chunker *c)
{
	free(c->noted);
	c->noted = NULL;
	c->nnoted = c->noted_cap = c->noted_step = 0;
}

int chunk_names_frame(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		      const struct blob_loc *loc)
{
	struct chunk_rec rec;
	int rc = get_rec(c, hash, &rec);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	return rec.seg == loc->seg && rec.off == loc->off;
}

int chunk_set_refs(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs)
{
	struct chunk_rec rec;
	int rc = get_rec(c, hash, &rec);
	if (rc)
		return rc;
	if (rec.refs == refs)
		return 0;
	/* A record at 0 waiting to be freed (see "Freeing") left the
	 * statistics and its segment's live bytes: given references, it
	 * counts again. */
	if (rec.refs == 0 && frees_later(c) && (rc = recount(c, &rec, +1)))
		return rc;
	/* Through chunk_ref's last step, so a chunk reaching zero goes the
	 * same way (record, statistics, live bytes). */
	rec.refs = 1;
	rc = put_rec(c, hash, &rec);
	if (!rc)
		rc = refs ? 0 : chunk_ref(c, hash, -1);
	if (!rc && refs) {
		rec.refs = refs;
		rc = put_rec(c, hash, &rec);
	}
	return rc;
}

int chunk_note_zero(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN])
{
	if (!frees_later(c))
		return 0;
	struct chunk_rec rec;
	int rc = get_rec(c, hash, &rec);
	return rc || rec.refs ? rc : put_rec(c, hash, &rec);
}

/* A record free_zeros deleted: its frame is dead now. */
static int freed_at_zero(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct chunker *c = ctx;
	struct chunk_rec rec;
	if (klen != CHUNK_HASH_LEN || rec_decode(val, vlen, &rec)) {
		nadb_log("chunk table: a record freed at zero cannot be read: its frame stays "
			 "(compaction reclaims it)");
		return 0;
	}
	/* counted out of its segment when it reached 0: only the frame is
	 * left (a failure costs space: compaction reclaims frames) */
	int rc = 0;
	if (c->freed) {
		struct blob_loc loc = {.seg = rec.seg, .off = rec.off, .len = rec.len};
		rc = c->freed(c->account_ctx, key, &loc);
	}
	if (rc)
		nadb_log("chunk: a chunk freed at zero keeps its frame for now (%s)",
			 strerror(-rc));
	return 0;
}

int chunk_free_zeros(struct chunker *c, uint64_t grace_ms)
{
	if (!frees_later(c))
		return 0;
	c->zeros = false;
	int rc = c->kv->ops->free_zeros(c->kv, KV_CHUNKS, grace_ms, freed_at_zero, c);
	c->zeros = c->zeros || rc;
	return rc;
}

int chunk_find(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN], struct chunk_loc *out)
{
	struct chunk_rec rec;
	int rc = get_rec(c, hash, &rec);
	if (!rc)
		loc_of_rec(&rec, out);
	return rc;
}

int chunk_locate(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		 struct chunk_loc *out)
{
	int rc = chunk_find(c, hash, out);
	if (rc == -ENOENT) {
		nadb_log("chunk: a value names a chunk that is not stored");
		return -EIO;
	}
	return rc;
}

static int cmp_drop(const void *a, const void *b)
{
	return memcmp(((const struct chunk_drop *)a)->hash, ((const struct chunk_drop *)b)->hash,
		      CHUNK_HASH_LEN);
}

/* How many of the drops noted by the step under way are of HASH. */
static uint32_t noted_in_step(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN])
{
	struct chunk_drop *step = c->noted + c->noted_step;
	size_t n = c->nnoted - c->noted_step;
	if (c->noted_sorted != c->nnoted) { /* settling does not mind the order */
		qsort(step, n, sizeof(*step), cmp_drop);
		c->noted_sorted = c->nnoted;
	}
	struct chunk_drop key;
	memcpy(key.hash, hash, CHUNK_HASH_LEN);
	struct chunk_drop *hit = bsearch(&key, step, n, sizeof(*step), cmp_drop);
	if (!hit)
		return 0;
	struct chunk_drop *lo = hit, *hi = hit;
	while (lo > step && !cmp_drop(lo - 1, &key))
		lo--;
	while (hi + 1 < step + n && !cmp_drop(hi + 1, &key))
		hi++;
	return (uint32_t)(hi - lo + 1);
}

int chunk_refs(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
	       uint32_t *refs)
{
	struct chunk_rec rec;
	int rc = get_rec(c, hash, &rec);
	if (!rc) {
		uint32_t dropped = c->nnoted > c->noted_step ? noted_in_step(c, hash) : 0;
		*refs = rec.refs > dropped ? rec.refs - dropped : 0;
	}
	return rc;
}

int chunk_relocate(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		   const struct chunk_loc *old, const struct blob_loc *to)
{
	struct chunk_rec rec;
	int rc = get_rec(c, hash, &rec);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	if (rec.seg != old->blob.seg || rec.off != old->blob.off || rec.len != to->len)
		return 0;
	rec.seg = to->seg;
	rec.off = to->off;
	rc = put_rec(c, hash, &rec);
	bool live = rec.refs > 0 || !frees_later(c); /* see "Freeing" */
	if (!rc && live)
		rc = count_live(c, old->blob.seg, -(int64_t)rec.len);
	if (!rc && live)
		rc = count_live(c, to->seg, rec.len);
	return rc ? rc : 1;
}

/* The segments asked, sorted by number (bsearch), each with where its
 * answer goes. */
struct live_of {
	uint32_t seg;
	uint64_t *live;
};
struct segs_asked {
	struct live_of *v;
	size_t n;
};

static int compare_live_of(const void *a, const void *b)
{
	return kv_compare_u32(&((const struct live_of *)a)->seg, &((const struct live_of *)b)->seg);
}

static int live_of_group(void *ctx, uint32_t group, uint64_t size)
{
	struct segs_asked *all = ctx;
	struct live_of key = {group, NULL};
	struct live_of *l = bsearch(&key, all->v, all->n, sizeof(*all->v), compare_live_of);
	if (l)
		*l->live = size;
	return 0;
}

static uint64_t live_row(struct chunker *c, uint32_t seg)
{
	uint32_t key = htobe32(seg);
	struct kv_val v;
	uint64_t live = 0;
	if (!c->kv->ops->get(c->kv, KV_SEGMENTS, &key, sizeof(key), &v) &&
	    v.len == sizeof(live))
		memcpy(&live, v.data, sizeof(live));
	return live;
}

void chunk_segments_live(struct chunker *c, const uint32_t *seg, size_t n, uint64_t *live)
{
	struct kv_tally t;
	struct live_of *v = tallied(c) && n ? malloc(n * sizeof(*v)) : NULL;
	for (size_t i = 0; i < n; i++) {
		live[i] = tallied(c) ? 0 : live_row(c, seg[i]); /* a group not there: 0 */
		if (v)
			v[i] = (struct live_of){seg[i], &live[i]};
	}
	if (!tallied(c) || !n)
		return;
	struct segs_asked all = {v, n};
	int rc = v ? 0 : -ENOMEM;
	if (v)
		qsort(v, n, sizeof(*v), compare_live_of);
	else
		nadb_log("segments' live bytes: no memory to ask for %zu of them", n);
	if (!rc)
		rc = c->kv->ops->tally(c->kv, KV_CHUNKS, &t, live_of_group, &all);
	if (rc) /* unknown (logged) reads as all live: compaction leaves them be */
		for (size_t i = 0; i < n; i++)
			live[i] = UINT64_MAX;
	free(v);
}

uint64_t chunk_segment_live(struct chunker *c, uint32_t seg)
{
	uint64_t live;
	chunk_segments_live(c, &seg, 1, &live);
	return live;
}

struct scan_ctx {
	chunk_scan_fn fn;
	void *ctx;
};

static int scan_row(void *ctx, const void *key, size_t klen, const void *val,
		    size_t vlen)
{
	struct scan_ctx *s = ctx;
	struct chunk_rec rec;
	if (klen != CHUNK_HASH_LEN || rec_decode(val, vlen, &rec))
		return -EIO;
	struct chunk_loc loc;
	loc_of_rec(&rec, &loc);
	return s->fn(s->ctx, key, rec.refs, &loc);
}

int chunk_scan(struct chunker *c, const uint8_t *from, chunk_scan_fn fn, void *ctx)
{
	struct scan_ctx s = {fn, ctx};
	return c->kv->ops->scan(c->kv, KV_CHUNKS, from, from ? CHUNK_HASH_LEN : 0, scan_row, &s);
}

/* Damaged: *WHY says how; the caller logs it. */
static int corrupt(const char **why, const char *what)
{
	*why = what;
	return -EIO;
}

/* The header at FRAME (LOC's bytes, read whole) against the index; its
 * length in *HLEN. */
static int check_head(const struct chunk_loc *loc, const uint8_t *frame,
		      const uint8_t hash[CHUNK_HASH_LEN], size_t *hlen, const char **why)
{
	struct frame_head h;
	memcpy(&h, frame, sizeof(h));
	*hlen = head_len(&h);
	if (!*hlen || loc->blob.len < *hlen)
		return corrupt(why, "bad frame header");
	if (*hlen != loc_head_len(loc) ||
	    (*hlen == CHUNK_FRAME_HEAD_OLD && memcmp(frame + sizeof(h), hash, CHUNK_HASH_LEN)) ||
	    h.flags != (loc->flags & ~CHUNK_SHORT_HEAD) || h.variant != loc->variant ||
	    le32toh(h.raw_len) != loc->raw_len || le32toh(h.stored_len) + *hlen != loc->blob.len ||
	    (!(h.flags & CHUNK_ZLIB) && le32toh(h.stored_len) != loc->raw_len))
		return corrupt(why, "frame header does not match the index");
	return 0;
}

int chunk_read(struct chunker *c, const struct chunk_loc *loc,
	       const uint8_t hash[CHUNK_HASH_LEN], uint32_t off, uint32_t len,
	       void *dst)
{
	const char *why = NULL;
	int rc = chunk_read_why(c, loc, hash, off, len, dst, &why);
	if (why)
		nadb_log("chunk in %08u.pack at %llu: %s", loc->blob.seg,
			 (unsigned long long)loc->blob.off, why);
	return rc;
}

bool chunk_loc_is_raw(const struct chunk_loc *loc)
{
	return !(loc->flags & CHUNK_ZLIB);
}

/* Could a frame of LOC's lengths hold its chunk? */
static bool loc_size_plausible(const struct chunk_loc *loc)
{
	return loc->blob.len >= sizeof(struct frame_head) && loc->raw_len <= CHUNK_RAW_MAX &&
	       loc->blob.len <= CHUNK_FRAME_HEAD_OLD + compressBound(loc->raw_len);
}

int chunk_read_why(struct chunker *c, const struct chunk_loc *loc,
		   const uint8_t hash[CHUNK_HASH_LEN], uint32_t off, uint32_t len,
		   void *dst, const char **why)
{
	*why = NULL;
	if (off + len > loc->raw_len || loc->blob.len < sizeof(struct frame_head))
		return corrupt(why, "read beyond the chunk");
	if (!loc_size_plausible(loc))
		return corrupt(why, "the index gives it an impossible size");
	bool whole = off == 0 && len == loc->raw_len;
	/* A raw frame's header is what its length has beyond the bytes, and
	 * the kind of header the record names, or the record is damaged. */
	if (!(loc->flags & CHUNK_ZLIB) && !whole) {
		size_t hlen = loc_head_len(loc);
		if (loc->blob.len != hlen + loc->raw_len)
			return corrupt(why, "the index gives it an impossible size");
		return c->blobs->ops->read(c->blobs, &loc->blob, hlen + off, dst, len);
	}
	uint8_t *frame = malloc(loc->blob.len);
	if (!frame)
		return -ENOMEM;
	size_t hlen = 0;
	int rc = c->blobs->ops->read(c->blobs, &loc->blob, 0, frame, loc->blob.len);
	if (!rc)
		rc = check_head(loc, frame, hash, &hlen, why);
	const uint8_t *stored = frame + hlen;
	size_t stored_len = loc->blob.len - hlen;
	uint8_t *raw = NULL;
	if (!rc && (loc->flags & CHUNK_ZLIB)) {
		raw = whole ? dst : malloc(loc->raw_len ? loc->raw_len : 1);
		uLongf rlen = loc->raw_len;
		if (!raw)
			rc = -ENOMEM;
		else if (uncompress(raw, &rlen, stored, stored_len) != Z_OK ||
			 rlen != loc->raw_len)
			rc = corrupt(why, "does not decompress");
		stored = raw;
	}
	if (!rc) {
		uint8_t check[CHUNK_HASH_LEN];
		hash_bytes(stored, loc->raw_len, loc->variant, check);
		if (memcmp(check, hash, CHUNK_HASH_LEN))
			rc = corrupt(why, "bytes do not match their hash");
		else if (stored != dst)
			memcpy(dst, stored + off, len);
	}
	if (raw && raw != dst)
		free(raw);
	free(frame);
	return rc;
}

void chunk_prefetch(struct chunker *c, const struct chunk_loc *const *locs, size_t n)
{
	struct blob_loc at[BLOB_PREFETCH_MAX];
	size_t k = 0;
	uint64_t bytes = 0;
	if (!c->blobs->ops->prefetch)
		return;
	/* only what chunk_read_why would read, and no more than
	 * BLOB_PREFETCH_BYTES: a damaged record may name any length */
	for (size_t i = 0; i < n && k < BLOB_PREFETCH_MAX; i++) {
		if (!loc_size_plausible(locs[i]))
			continue;
		if (bytes + locs[i]->blob.len > BLOB_PREFETCH_BYTES)
			break;
		bytes += locs[i]->blob.len;
		at[k++] = locs[i]->blob;
	}
	c->blobs->ops->prefetch(c->blobs, at, k);
}

/* ---- fsck: finding chunks in the packs themselves ---------------------- */

struct seg_list {
	uint32_t *seg;
	uint64_t *size;
	size_t n, cap;
};

static int add_seg(void *ctx, uint32_t seg, uint64_t size, uint64_t held, bool current)
{
	(void)held;
	(void)current;
	struct seg_list *l = ctx;
	size_t seg_cap = l->cap, size_cap = l->cap; /* two arrays, one length */
	if (ARRAY_GROW(l->seg, l->n, seg_cap) || ARRAY_GROW(l->size, l->n, size_cap))
		return -ENOMEM;
	l->cap = seg_cap;
	l->seg[l->n] = seg;
	l->size[l->n++] = size;
	return 0;
}

#define RESYNC_WINDOW (64u << 10) /* bytes read at a time looking for a header */

/* Is H a frame header that fits in a segment of SIZE at OFF? */
static bool plausible_head(const struct frame_head *h, uint64_t off, uint64_t size)
{
	uint32_t stored = le32toh(h->stored_len), raw = le32toh(h->raw_len);
	size_t hlen = head_len(h);
	return hlen && raw <= CHUNK_RAW_MAX && stored <= compressBound(raw) &&
	       !(h->flags & ~CHUNK_ZLIB) && h->variant < MAX_VARIANT &&
	       ((h->flags & CHUNK_ZLIB) || stored == raw) && off + hlen + stored <= size;
}

/* The offset of the next byte >= OFF where the frame magic stands in
 * segment SEG of SIZE, or SIZE.  A punched frame (a freed chunk's bytes
 * given back) reads as zeros, and a damaged one as anything: the frames
 * after it start where the magic is found again. */
static int next_magic(struct chunker *c, uint32_t seg, uint64_t off, uint64_t size,
		      uint64_t *at)
{
	uint8_t *buf = malloc(RESYNC_WINDOW);
	uint8_t magic[4], old[4];
	uint32_t m = htole32(FRAME_MAGIC), mo = htole32(FRAME_MAGIC_OLD);
	memcpy(magic, &m, 4);
	memcpy(old, &mo, 4);
	if (!buf)
		return -ENOMEM;
	*at = size;
	int rc = 0;
	while (!rc && off + 4 <= size && *at == size) {
		uint64_t n = size - off < RESYNC_WINDOW ? size - off : RESYNC_WINDOW;
		struct blob_loc win = {.seg = seg, .off = off, .len = (uint32_t)n};
		rc = c->blobs->ops->read(c->blobs, &win, 0, buf, n);
		uint8_t *hit = rc ? NULL : memmem(buf, n, magic, 4);
		uint8_t *hit_old = rc ? NULL : memmem(buf, hit ? (size_t)(hit - buf) + 3 : n, old, 4);
		if (hit_old)
			hit = hit_old;
		if (hit)
			*at = off + (uint64_t)(hit - buf);
		off += n - 3; /* a magic may straddle two windows */
	}
	free(buf);
	return rc;
}

/* The hash of the chunk in the frame at LOC, whose header is HLEN bytes:
 * an old header holds it, a new one's bytes give it back.  0, 1 if the
 * frame's bytes cannot be read as its header says, or a negative errno. */
static int frame_hash(struct chunker *c, const struct chunk_loc *loc, size_t hlen,
		      uint8_t hash[CHUNK_HASH_LEN])
{
	if (hlen == CHUNK_FRAME_HEAD_OLD) {
		struct blob_loc at = {.seg = loc->blob.seg, .off = loc->blob.off + CHUNK_FRAME_HEAD,
				      .len = CHUNK_HASH_LEN};
		return c->blobs->ops->read(c->blobs, &at, 0, hash, CHUNK_HASH_LEN);
	}
	size_t stored_len = loc->blob.len - hlen;
	uint8_t *stored = malloc(stored_len ? stored_len : 1);
	uint8_t *raw = (loc->flags & CHUNK_ZLIB) ? malloc(loc->raw_len ? loc->raw_len : 1) : stored;
	int rc = stored && raw ? 0 : -ENOMEM;
	if (!rc)
		rc = c->blobs->ops->read(c->blobs, &loc->blob, hlen, stored, stored_len);
	uLongf rlen = loc->raw_len;
	if (!rc && (loc->flags & CHUNK_ZLIB) &&
	    (uncompress(raw, &rlen, stored, stored_len) != Z_OK || rlen != loc->raw_len))
		rc = 1;
	if (!rc && !(loc->flags & CHUNK_ZLIB) && stored_len != loc->raw_len)
		rc = 1;
	if (!rc)
		hash_bytes(raw, loc->raw_len, loc->variant, hash);
	if (raw != stored)
		free(raw);
	free(stored);
	return rc;
}

/* The frames of one segment, header by header; past a hole or damage,
 * from the next place a header stands. */
static int segment_frames(struct chunker *c, uint32_t seg, uint64_t size, chunk_frame_fn fn,
			  void *ctx)
{
	uint64_t off = 0;
	while (off + sizeof(struct frame_head) <= size) {
		struct frame_head h;
		struct blob_loc at = {.seg = seg, .off = off, .len = sizeof(h)};
		int rc = c->blobs->ops->read(c->blobs, &at, 0, &h, sizeof(h));
		if (rc)
			return rc;
		if (!plausible_head(&h, off, size)) {
			rc = next_magic(c, seg, off + 1, size, &off);
			if (rc)
				return rc;
			continue;
		}
		size_t hlen = head_len(&h);
		uint32_t stored = le32toh(h.stored_len), raw = le32toh(h.raw_len);
		struct chunk_loc loc = {
			.blob = {.seg = seg, .off = off, .len = (uint32_t)(hlen + stored)},
			.raw_len = raw, .variant = h.variant,
			.flags = h.flags | (hlen == CHUNK_FRAME_HEAD ? CHUNK_SHORT_HEAD : 0),
		};
		uint8_t hash[CHUNK_HASH_LEN];
		rc = frame_hash(c, &loc, hlen, hash);
		if (rc == 1) { /* damaged: go on from the next header */
			rc = next_magic(c, seg, off + 1, size, &off);
			if (rc)
				return rc;
			continue;
		}
		if (!rc)
			rc = fn(ctx, hash, &loc);
		if (rc)
			return rc < 0 ? rc : 0;
		off += hlen + stored;
	}
	return 0;
}

int chunk_frames(struct chunker *c, chunk_frame_fn fn, void *ctx)
{
	struct seg_list l = {0};
	int rc = c->blobs->ops->segments(c->blobs, add_seg, &l);
	for (size_t i = 0; !rc && i < l.n; i++)
		rc = segment_frames(c, l.seg[i], l.size[i], fn, ctx);
	free(l.seg);
	free(l.size);
	return rc;
}

int chunk_adopt(struct chunker *c, const uint8_t hash[CHUNK_HASH_LEN],
		const struct chunk_loc *loc, uint32_t refs)
{
	struct chunk_rec rec;
	int rc = get_rec(c, hash, &rec);
	if (rc && rc != -ENOENT)
		return rc;
	bool had = rc == 0;
	rc = 0;
	/* A damaged record's segment may not count its bytes: leave it be. */
	bool at_zero = had && rec.refs == 0 && frees_later(c); /* not live (see "Freeing") */
	/* (where the backend tallies, it counts itself: nothing to read) */
	bool counted = had && !at_zero && !tallied(c) &&
		       chunk_segment_live(c, rec.seg) >= rec.len;
	if (counted)
		rc = count_live(c, rec.seg, -(int64_t)rec.len);
	/* new to the statistics -- as is one at 0 waiting to be freed (see
	 * "Freeing"), which left them */
	if (!rc && !counted)
		rc = account(c, +1, loc->blob.len, loc->raw_len);
	rec = (struct chunk_rec){
		.refs = refs, .seg = loc->blob.seg, .off = loc->blob.off, .len = loc->blob.len,
		.raw_len = loc->raw_len, .flags = loc->flags, .variant = loc->variant,
	};
	if (!rc)
		rc = put_rec(c, hash, &rec);
	return rc ? rc : count_live(c, loc->blob.seg, loc->blob.len);
}
