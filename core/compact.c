/* compact.c -- reclaiming pack space that no chunk uses any more.
 *
 * Freed chunks leave garbage in their segments.  Compaction picks the
 * segments where garbage passed a threshold, copies their live frames to
 * the end of the current segment, repoints each chunk in its own short
 * step (the meta lock is held for one chunk at a time, never for the
 * copy), makes all of that durable, and only then deletes the old
 * segments.  A crash before the sync leaves the old segment in place and
 * the copies as garbage; after it, the old segment is unreferenced.
 *
 * Frames freed durably are mostly punched out in place (see store.c), so
 * the garbage weighed here is what a segment still *holds* beyond its
 * live bytes: frames not punched (a file system without hole punching,
 * copies left by a crash).  A forced compaction first makes the pending
 * frees durable and punched (so on a full disk it needs no room to copy
 * what deleting already gave back), then rewrites every segment with a
 * hole or garbage in it, so that the files end up dense again.
 */
#include "grow.h"
#include "log.h"
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_BATCH 4096
/* Make the copies durable every this many bytes, outside the meta lock:
 * the group commit that follows (under the meta lock, which foreground
 * requests wait for) then finds little pack data left to write back. */
#define SYNC_EVERY (4u << 20)

struct victim {
	uint32_t seg;
	uint64_t size; /* bytes appended to it */
	uint64_t held; /* bytes on disk its removal gives back */
};

struct plan {
	struct nadb_store *st;
	bool force;
	double garbage;
	struct victim *v;
	size_t n, cap;
};

/* Is a segment of SIZE bytes, HELD of them on disk and LIVE of them named
 * by chunks, worth rewriting? */
static bool worth_compacting(const struct plan *p, uint64_t size, uint64_t held,
			     uint64_t live)
{
	uint64_t dead = held > live ? held - live : 0;
	if (live == 0)
		return true; /* nothing to copy: removing it is free */
	if (p->force)
		return dead > 0 || held < size;
	return dead > 0 && (double)dead >= p->garbage * (double)held;
}

/* Every segment but the current one is a candidate, weighed once all are
 * listed (pick_victims): their live bytes are read at once. */
static int add_candidate(void *ctx, uint32_t seg, uint64_t size, uint64_t held,
			 bool current)
{
	struct plan *p = ctx;
	if (current || size == 0)
		return 0;
	if (ARRAY_GROW(p->v, p->n, p->cap))
		return -ENOMEM;
	p->v[p->n++] = (struct victim){seg, size, held};
	return 0;
}

/* The live bytes of the plan's N segments into LIVE (malloc'd, or NULL:
 * -ENOMEM), read at once under the meta lock. */
static int plan_live(const struct plan *p, uint64_t **live)
{
	uint32_t *seg = malloc((p->n + 1) * sizeof(*seg));
	*live = malloc((p->n + 1) * sizeof(**live));
	if (!seg || !*live) {
		free(seg);
		free(*live);
		*live = NULL;
		return -ENOMEM;
	}
	for (size_t i = 0; i < p->n; i++)
		seg[i] = p->v[i].seg;
	pthread_mutex_lock(&p->st->meta_lock);
	chunk_segments_live(&p->st->chunks, seg, p->n, *live);
	pthread_mutex_unlock(&p->st->meta_lock);
	free(seg);
	return 0;
}

/* Keeps the candidates worth compacting; an unknown live count leaves one. */
static int pick_victims(struct plan *p)
{
	uint64_t *live;
	int rc = plan_live(p, &live);
	size_t kept = 0;
	for (size_t i = 0; !rc && i < p->n; i++)
		if (live[i] != UINT64_MAX &&
		    worth_compacting(p, p->v[i].size, p->v[i].held, live[i]))
			p->v[kept++] = p->v[i];
	if (!rc)
		p->n = kept;
	free(live);
	return rc;
}

static bool is_victim(const struct plan *p, uint32_t seg)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->v[i].seg == seg)
			return true;
	return false;
}

struct batch {
	const struct plan *p;
	uint8_t (*hash)[CHUNK_HASH_LEN];
	struct chunk_loc *loc;
	size_t n, rows;
	uint8_t last[CHUNK_HASH_LEN];
	bool skip_last, more;
};

static int collect_live(void *ctx, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs,
			const struct chunk_loc *loc)
{
	(void)refs;
	struct batch *b = ctx;
	if (b->skip_last && !memcmp(hash, b->last, CHUNK_HASH_LEN))
		return 0; /* where the previous batch stopped */
	if (b->rows == SCAN_BATCH) {
		b->more = true;
		return 1;
	}
	b->rows++;
	memcpy(b->last, hash, CHUNK_HASH_LEN);
	if (is_victim(b->p, loc->blob.seg)) {
		memcpy(b->hash[b->n], hash, CHUNK_HASH_LEN);
		b->loc[b->n++] = *loc;
	}
	return 0;
}

/* Copy one frame to the current segment and repoint its chunk. */
static int move_chunk(struct nadb_store *st, const uint8_t hash[CHUNK_HASH_LEN],
		      const struct chunk_loc *loc, struct nadb_compact_result *res)
{
	uint8_t *frame = malloc(loc->blob.len);
	if (!frame)
		return -ENOMEM;
	struct blob_loc to;
	int rc = store_room_for(st, loc->blob.len);
	if (!rc)
		rc = st->blobs->ops->read(st->blobs, &loc->blob, 0, frame, loc->blob.len);
	if (!rc)
		rc = st->blobs->ops->append(st->blobs, NULL, 0, frame, loc->blob.len, &to);
	free(frame);
	if (rc)
		return rc;
	int moved = 0;
	pthread_mutex_lock(&st->meta_lock);
	if (!(rc = step_begin(st))) {
		moved = chunk_relocate(&st->chunks, hash, loc, &to);
		rc = step_end(st, moved < 0 ? moved : 0);
	}
	pthread_mutex_unlock(&st->meta_lock);
	if (!rc && moved > 0) {
		res->chunks_moved++;
		res->bytes_moved += loc->blob.len;
	}
	return rc;
}

/* Move every live chunk out of the planned segments, a batch at a time;
 * the meta lock is let go between batches and between chunks. */
static int move_live_chunks(struct nadb_store *st, const struct plan *p,
			    struct nadb_compact_result *res)
{
	struct batch b = {.p = p};
	b.hash = malloc(SCAN_BATCH * sizeof(*b.hash));
	b.loc = malloc(SCAN_BATCH * sizeof(*b.loc));
	int rc = b.hash && b.loc ? 0 : -ENOMEM;
	bool have_last = false;
	uint64_t live = 0, *seg_live = NULL; /* bytes to move, for progress */
	if (!rc)
		rc = plan_live(p, &seg_live);
	for (size_t i = 0; !rc && i < p->n; i++)
		live = seg_live[i] > UINT64_MAX - live ? UINT64_MAX : live + seg_live[i];
	free(seg_live);
	do {
		b.n = b.rows = 0;
		b.more = false;
		b.skip_last = have_last;
		pthread_mutex_lock(&st->meta_lock);
		if (!rc)
			rc = chunk_scan(&st->chunks, have_last ? b.last : NULL, collect_live, &b);
		pthread_mutex_unlock(&st->meta_lock);
		have_last = true;
		for (size_t i = 0; !rc && i < b.n; i++) {
			uint64_t before = res->bytes_moved;
			store_progress(st, "moving live chunks", res->bytes_moved, live);
			rc = move_chunk(st, b.hash[i], &b.loc[i], res);
			if (!rc && before / SYNC_EVERY != res->bytes_moved / SYNC_EVERY)
				rc = st->blobs->ops->sync(st->blobs);
		}
	} while (!rc && b.more);
	free(b.hash);
	free(b.loc);
	return rc;
}

int nadb_compact(struct nadb_store *st, bool force, double garbage,
		 struct nadb_compact_result *res)
{
	memset(res, 0, sizeof(*res));
	if (st->following)
		return -EROFS; /* the writer compacts */
	file_delete_forgotten(st); /* what deleted keys held is garbage now */
	pthread_mutex_lock(&st->compact_lock);
	/* Nothing of the blob area is deleted once the lease lapsed: the
	 * store may be another daemon's, its segments too. */
	int rc = store_may_change(st);
	/* Readers had a whole compaction period to finish with segments
	 * removed last time. */
	if (!rc)
		st->blobs->ops->forget_removed(st->blobs);
	/* Punch what deletes freed first: it needs no free space, a copy does. */
	if (!rc && force)
		rc = nadb_store_sync(st);
	if (!rc && force)
		rc = st->blobs->ops->roll(st->blobs);
	struct plan p = {.st = st, .force = force, .garbage = garbage};
	atomic_uint_fast64_t seen = nadb_store_sync_failures(st);
	if (!rc)
		rc = st->blobs->ops->segments(st->blobs, add_candidate, &p);
	if (!rc && p.n)
		rc = pick_victims(&p);
	if (!rc && p.n)
		rc = move_live_chunks(st, &p, res);
	/* The new places must be durable before the old bytes go (and a
	 * sync that failed meanwhile may have carried some of them). */
	if (!rc && p.n)
		rc = nadb_store_sync_seen(st, &seen);
	uint64_t *live = NULL;
	if (!rc && p.n)
		rc = plan_live(&p, &live);
	for (size_t i = 0; !rc && i < p.n; i++) {
		if (live[i])
			continue; /* a chunk moved in meanwhile?  Next time. */
		if (!(rc = store_may_change(st)))
			rc = st->blobs->ops->remove(st->blobs, p.v[i].seg);
		if (!rc) {
			res->segments_removed++;
			res->bytes_reclaimed += p.v[i].held;
		}
	}
	if (!rc && res->segments_removed)
		rc = st->blobs->ops->sync(st->blobs); /* the directory */
	pthread_mutex_unlock(&st->compact_lock);
	free(live);
	free(p.v);
	if (rc == -ENOSPC)
		nadb_log("compaction: no room to copy live chunks into; space freed by "
			 "deletes was given back already (%s)", strerror(-rc));
	else if (rc)
		nadb_log("compaction: %s", strerror(-rc));
	return rc;
}
