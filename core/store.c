/* store.c -- opening, locking, syncing and closing a store.
 *
 * STORE/ holds:  lock      flock'ed by the one process using the store
 *                          (lock.c)
 *                meta/     the metadata tables (LMDB)
 *                packs/    chunk frames in append-only segments
 *                nadbfs.log the daemon's one-line error messages
 *                reserve   RESERVE_BYTES of blocks held for a full disk
 *
 * A store is used by one process at a time (a daemon or a tool), so all
 * caching in that process is safe.  Durability comes in groups: the
 * flusher (or fsync, or close) syncs the packs and then commits the
 * metadata, so metadata never names chunk bytes that are not on disk.
 *
 * A full disk recovers by deleting keys, without a remount:
 *  - A chunk whose last reference goes leaves its frame in a queue.  Once
 *    the group that freed it is committed (durable: a crash can no longer
 *    bring back metadata naming it), the frame is punched out of its
 *    segment and its blocks are free again.  A step that is undone takes
 *    its frees back out of the queue; a group that fails to commit
 *    discards them (the chunks are still there).
 *  - LMDB needs fresh pages to commit anything, deletes too.  STORE/reserve
 *    holds RESERVE_BYTES: when free space falls under that, the next
 *    commit first gives the reserve back, and from then on new frames are
 *    refused (ENOSPC) while free space is under RESERVE_BYTES, so that what
 *    the reserve gave stays for metadata.  Once space is back the reserve
 *    is taken again.
 *  - An append that fails with ENOSPC while frees are queued commits the
 *    group at once and retries, so a write right after the deletes
 *    succeeds without waiting for the flusher.
 */
#include "clock.h"
#include "grow.h"
#include "log.h"
#include "redis.h"
#include "metawalk.h"
#include "stats.h"
#include "store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <unistd.h>

/* A writer with followers syncs this often (ms), so that they hear of a
 * change that soon; it asks whether it has followers every
 * FOLLOWERS_CHECK_MS (ms). */
#define FOLLOWED_FLUSH_MS 1
#define FOLLOWERS_CHECK_MS 1000
#define SETTLE_RETRY_NS 1000000000LL /* ns: a failed pass over sessions gone waits this */
/* ms a chunk's count stands at 0 before it is freed, where several
 * processes may write the store (chunk.c, "Freeing"): 0 while the store
 * lock lets one write at a time (a takeover fences off the syncs of the
 * writer before, so no reference of another can land late); several
 * writers at once (docs/many-writers.md, step 4) need it past a writer's
 * unsynced window, its lease. */
#define ZERO_GRACE_MS 0
/* Bytes kept in STORE/reserve for metadata commits on a full disk: a group
 * of thousands of deletes dirties a few hundred 4 KiB LMDB pages. */
#define RESERVE_BYTES (4ull << 20)
/* Bytes statfs reports as the size of a store on Redis. */
#define REDIS_NOMINAL_BYTES (1ull << 50)

struct format_rec {
	uint32_t version;
	uint32_t chunk_size;
};

void nadb_options_default(struct nadb_options *o)
{
	memset(o, 0, sizeof(*o));
	o->compress = NADB_COMPRESS_AUTO;
	o->compress_level = 1;
	o->buffer_mb = 64;
	o->flush_interval = 5;
	o->chunk_kb = 128;
	o->create = true;
	o->reap_interval_ms = 1000;
	o->compact_garbage = 50;
}

size_t nadb_store_chunk_size(const struct nadb_store *st)
{
	return st->chunk_size;
}

void nadb_store_set_progress(struct nadb_store *st, nadb_progress_fn fn, void *ctx)
{
	st->progress = fn;
	st->progress_ctx = ctx;
}

int store_may_change(struct nadb_store *st)
{
	if (atomic_load(&st->lock_lost))
		return -EIO; /* said once, by store_give_up */
	return lock_lease_check(st);
}

/* Sync the metadata group: only while we may change the store (nothing
 * goes out once the lease lapsed: the store may be another daemon's by
 * the time it lands), and a sync the fences refused (another daemon took
 * the store over) loses the lock for good: -EIO either way.  Given
 * FINISH, a backend that syncs in halves only starts: *FINISH says the
 * caller must run sync_finish before anything counts as durable. */
static int sync_group_started(struct nadb_store *st, bool *finish)
{
	if (store_may_change(st))
		return -EIO;
	bool split = finish && st->kv->ops->sync_start;
	int rc = split ? st->kv->ops->sync_start(st->kv) : st->kv->ops->sync(st->kv);
	if (finish)
		*finish = split && !rc;
	if (rc == -ENOLCK) {
		store_lose_lock(st, "a sync was fenced off");
		rc = -EIO;
	}
	return rc;
}

static int sync_group(struct nadb_store *st)
{
	return sync_group_started(st, NULL);
}

int step_begin(struct nadb_store *st)
{
	if (st->following)
		return -EROFS; /* a follower: the writer changes the store */
	int rc = store_may_change(st);
	if (!rc)
		rc = st->kv->ops->step_begin(st->kv);
	if (!rc) {
		st->freed_step = st->nfreed;
		chunk_step_begin(&st->chunks);
	}
	return rc;
}

/* Take the references dropped by the steps before (settle_drops), or
 * left by sessions gone (settle_left_drops), off their chunks (chunk.h):
 * for each partition, a step of its own taking its rows, then steps of
 * partition 0 taking the counts off.  The rows go first, so that a crash
 * between leaves chunks counted too high (space, which fsck --repair
 * gives back), never too low.
 *
 * A group that is one transaction (kv.apart false) carries the lot with
 * the steps that dropped: run right after them.  Where each partition
 * commits on its own, partition 0's first, the order must come from
 * syncs: run only after the steps that dropped are synced (their rows
 * durable before any count comes off), and sync after the rows' steps
 * and after the counts'.  A failure leaves rows for the next open (or,
 * once rows are taken, the chunks counted), and the steps that dropped
 * stand.  Takes D (N of them, sorted by partition). */
static int settle_drop_list(struct nadb_store *st, struct chunk_drop *d, size_t n)
{
	bool apart = st->kv->apart;
	int rc = 0;
	bool taken = false; /* rows deleted whose counts are not yet applied */
	assert(st->settling);
	for (size_t i = 0, j; !rc && i < n; i = j) {
		for (j = i + 1; j < n && d[j].part == d[i].part; j++)
			;
		rc = step_begin(st);
		if (!rc)
			rc = step_end(st, chunk_take_drops(&st->chunks, d + i, j - i));
		taken = taken || !rc;
	}
	if (!rc && n && apart)
		rc = sync_group(st);
	for (size_t i = 0, j; !rc && i < n; i = j) {
		for (j = i + 1; j < n && d[j].part == d[i].part; j++)
			;
		rc = step_begin(st);
		if (!rc)
			rc = step_end(st, chunk_apply_drops(&st->chunks, d + i, j - i));
	}
	if (!rc && n && apart)
		rc = sync_group(st);
	if (rc && taken)
		nadb_log("%s: chunks whose references were dropped stay counted (%s): "
			 "nadb fsck --repair gives their space back", st->dir, strerror(-rc));
	else if (rc)
		nadb_log("%s: dropped chunk references not settled (%s): the next open "
			 "settles them", st->dir, strerror(-rc));
	free(d);
	return rc;
}

static int settle_drops(struct nadb_store *st)
{
	struct chunk_drop *d;
	size_t n;
	st->settling = true;
	int rc = chunk_due_drops(&st->chunks, &d, &n);
	if (!rc)
		rc = settle_drop_list(st, d, n);
	st->settling = false;
	return rc;
}

/* ---- sessions ---------------------------------------------------------------
 *
 * A writer tags the rows only it may settle while it lives -- the pending
 * chunks of the files it has open (file.c), the references it dropped and
 * has not settled (chunk.c), the keys unlinked while it held them open
 * (tree.c) -- with its session (backend.h, kv.session).  Rows of a session
 * that is no more are settled by the writer that finds them: at open, and
 * in the first sync after the lock keeper's beat says a session died
 * (commit_group).  Rows from before
 * sessions, and a backend's without sessions (one process at a time),
 * read session 0: never a live one. */

bool settle_scope_has(struct settle_scope *sc, uint32_t session)
{
	struct nadb_store *st = sc->st;
	if (!session)
		return true;
	if (session == st->kv->session)
		return sc->own_too;
	if (!sc->asked) { /* after the rows were read (backend.h) */
		sc->asked = true;
		sc->rc = st->kv->ops->sessions ? st->kv->ops->sessions(st->kv, &sc->live, &sc->nlive)
					       : 0;
		if (sc->rc)
			nadb_log("%s: the live sessions cannot be read (%s): the rows of "
				 "sessions gone stay for the next try", st->dir, strerror(-sc->rc));
		sc->failed = sc->failed || sc->rc;
	}
	return !sc->rc && !kv_session_listed(sc->live, sc->nlive, session);
}

void settle_scope_free(struct settle_scope *sc)
{
	free(sc->live);
	sc->live = NULL;
	sc->nlive = 0;
	sc->asked = false;
}

static bool scope_keeps(void *ctx, uint32_t session)
{
	return settle_scope_has(ctx, session);
}

/* The drop rows of the sessions SC takes in. */
static int settle_left_drops(struct nadb_store *st, struct settle_scope *sc)
{
	struct chunk_drop *d;
	size_t n;
	st->settling = true;
	int rc = chunk_left_drops(&st->chunks, scope_keeps, sc, &d, &n);
	if (!rc)
		rc = settle_drop_list(st, d, n);
	st->settling = false;
	settle_scope_free(sc);
	return rc;
}

int step_end(struct nadb_store *st, int rc)
{
	/* A step that waited for Redis past the lease's end is undone rather
	 * than acknowledged: another daemon may hold the store by now. */
	if (!rc && store_may_change(st))
		rc = -EIO;
	int e = st->kv->ops->step_end(st->kv, rc == 0);
	assert(st->freed_step <= st->nfreed);
	if (rc || e) /* undone: its chunks were not freed after all */
		st->nfreed = st->freed_step;
	st->freed_step = st->nfreed;
	chunk_step_end(&st->chunks, !rc && !e);
	if (e && st->kv->apart) {
		/* A step's end fails only when the backend dropped the unsynced
		 * group (out of memory, kv_redis.c): the drops its steps noted
		 * went with it, and must never settle. */
		struct chunk_drop *d;
		size_t n;
		if (!chunk_due_drops(&st->chunks, &d, &n))
			free(d);
	}
	if (!rc && !e && !st->settling && !st->kv->apart && chunk_unsettled(&st->chunks))
		settle_drops(st);
	return rc ? rc : e;
}

int steps_taking_refs(struct nadb_store *st, bool apart, int (*take)(void *ctx),
		      int (*use)(void *ctx), int (*give_back)(void *ctx), void *ctx)
{
	bool taken = false; /* references committed in a step of their own */
	uint64_t steps = 0; /* ... and the group's steps with it */
	int rc = step_begin(st);
	if (rc)
		return rc;
	rc = take(ctx);
	if (!rc && apart) {
		rc = step_end(st, 0);
		taken = !rc;
		steps = st->kv->ops->unsynced(st->kv);
		if (!rc)
			rc = step_begin(st);
		if (rc)
			goto failed;
	}
	rc = step_end(st, rc ? rc : use(ctx));
failed:
	/* A backend that dropped the unsynced group (out of memory) dropped
	 * the references with it: nothing to give back. */
	if (taken && st->kv->ops->unsynced(st->kv) < steps)
		taken = false;
	if (rc && taken) {
		int e = step_begin(st);
		if (!e)
			e = step_end(st, give_back(ctx));
		if (e)
			nadb_log("%s: chunk references taken for a change that failed stay "
				 "counted (%s): nadb fsck --repair gives their space back", st->dir,
				 strerror(-e));
	}
	return rc;
}

/* The chunker's freed hook: queue the frame.  Under meta_lock, in a step
 * (undone with it), or in free_zeros' pass. */
static int queue_freed(void *ctx, const uint8_t hash[CHUNK_HASH_LEN],
		       const struct blob_loc *loc)
{
	struct nadb_store *st = ctx;
	if (ARRAY_GROW(st->freed, st->nfreed, st->freed_cap))
		return -ENOMEM;
	struct freed_frame *f = &st->freed[st->nfreed++];
	memcpy(f->hash, hash, CHUNK_HASH_LEN);
	f->loc = *loc;
	return 0;
}

/* Free bytes for us on the store's file system (UINT64_MAX: unknown). */
static uint64_t free_bytes(struct nadb_store *st)
{
	struct statfs sf;
	if (fstatfs(st->lock_fd, &sf))
		return UINT64_MAX;
	return (uint64_t)sf.f_bavail * (uint64_t)sf.f_bsize;
}

/* Take the reserve's blocks.  Under meta_lock (or while opening). */
static void reserve_take(struct nadb_store *st)
{
	if (st->reserve_fd < 0 || atomic_load(&st->reserve_held))
		return;
	if (fallocate(st->reserve_fd, 0, 0, (off_t)RESERVE_BYTES) == 0) {
		atomic_store(&st->reserve_held, true);
		atomic_store(&st->floor_said, false);
	} else if (ftruncate(st->reserve_fd, 0)) {
		/* a partial allocation stays; it is given back next time */
	}
}

/* Give the reserve's blocks to the commit about to happen.  Under meta_lock. */
static void reserve_give(struct nadb_store *st)
{
	if (!atomic_load(&st->reserve_held))
		return;
	if (ftruncate(st->reserve_fd, 0)) {
		nadb_log("%s/reserve: cannot release: %s", st->dir, strerror(errno));
		return;
	}
	atomic_store(&st->reserve_held, false);
	nadb_log("%s: disk nearly full: the %llu MiB reserve goes to metadata; new "
		 "values get ENOSPC until deletes or other files free space", st->dir,
		 (unsigned long long)(RESERVE_BYTES >> 20));
}

int store_room_for(struct nadb_store *st, uint64_t len)
{
	if (atomic_load(&st->reserve_held))
		return 0; /* the file system says when it is full */
	uint64_t free = free_bytes(st);
	if (free == UINT64_MAX || free >= RESERVE_BYTES + len)
		return 0;
	if (!atomic_exchange(&st->floor_said, true))
		nadb_log("%s: %llu KiB free, under the %llu MiB kept for metadata: "
			 "new values get ENOSPC", st->dir, (unsigned long long)(free >> 10),
			 (unsigned long long)(RESERVE_BYTES >> 20));
	return -ENOSPC;
}

static int room_hook(void *ctx, uint64_t len)
{
	return store_room_for(ctx, len);
}

static int open_reserve(struct nadb_store *st)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/reserve", st->dir);
	st->reserve_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->reserve_fd < 0) {
		int e = errno;
		nadb_log("%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	reserve_take(st);
	return 0;
}

static int create_root(struct nadb_store *st, const struct nadb_options *o)
{
	int64_t now = now_ns();
	struct inode_rec root = {
		.mode = S_IFDIR | 0755, .uid = getuid(), .gid = getgid(),
		.nlink = 2, .parent = NADB_ROOT_INO,
		.atime = now, .mtime = now, .ctime = now, .btime = now,
		.level = NADB_LEVEL_ROOT,
	};
	struct format_rec f = {.version = STORE_FORMAT_VERSION, .chunk_size = o->chunk_kb * 1024};
	int rc = step_begin(st);
	if (rc)
		return rc;
	uint64_t first;
	rc = st->kv->ops->claim_inos(st->kv, NADB_ROOT_INO, 1, &first);
	if (!rc && first != NADB_ROOT_INO) { /* a sequence begun, but no format */
		nadb_log("%s: the store has no format record but has used inode numbers "
			 "(up to %llu): damaged", st->dir, (unsigned long long)first);
		rc = -EIO;
	}
	if (!rc)
		rc = inode_put(st, NADB_ROOT_INO, &root, NULL, 0);
	if (!rc)
		rc = st->kv->ops->put(st->kv, KV_META, "format", 6, &f, sizeof(f));
	return step_end(st, rc);
}

/* The format record into *F: 0, -ENOENT (none), -EBADMSG (not one: *LEN
 * bytes long) or the backend's error. */
static int read_format(struct nadb_store *st, struct format_rec *f, size_t *len)
{
	struct kv_val v;
	int rc = st->kv->ops->get(st->kv, KV_META, "format", 6, &v);
	if (rc)
		return rc;
	*len = v.len;
	if (v.len != sizeof(*f))
		return -EBADMSG;
	memcpy(f, v.data, sizeof(*f));
	return 0;
}

/* Read the format record (making a new store's first). */
static int load_format(struct nadb_store *st, const struct nadb_options *o)
{
	struct format_rec f;
	size_t len = 0;
	int rc = read_format(st, &f, &len);
	if (rc == -ENOENT && st->following) {
		nadb_log("%s: no store to follow yet: its writer makes it", st->dir);
		return -EROFS;
	}
	if (rc == -ENOENT) {
		rc = create_root(st, o);
		if (rc)
			return rc;
		rc = read_format(st, &f, &len);
	}
	if (rc == -EBADMSG) {
		nadb_log("%s: format record is damaged", st->dir);
		return -EIO;
	}
	if (rc)
		return rc;
	if (f.version < 1 || f.version > STORE_FORMAT_VERSION || f.chunk_size < 4096 ||
	    f.chunk_size > (16u << 20)) {
		nadb_log("%s: unsupported store format %u (chunk size %u)", st->dir,
			 f.version, f.chunk_size);
		return -EPROTO;
	}
	st->chunk_size = f.chunk_size;
	if (f.version < STORE_FORMAT_VERSION && st->following) {
		nadb_log("%s: the store is of format %u: its writer upgrades it, not a "
			 "follower", st->dir, f.version);
		return -EROFS;
	}
	if (f.version < STORE_FORMAT_VERSION) {
		/* Records written from now on are read by this version only: a
		 * nadb of the store's old version must refuse it from now on. */
		uint32_t was = f.version;
		f.version = STORE_FORMAT_VERSION;
		rc = step_begin(st);
		if (rc)
			return rc;
		rc = stats_upgrade(st, was);
		if (!rc && was < 4)
			rc = tags_rebuild(st);
		if (!rc)
			rc = st->kv->ops->put(st->kv, KV_META, "format", 6, &f, sizeof(f));
		rc = step_end(st, rc);
		if (rc)
			return rc;
	}
	return 0;
}

int store_format_check(struct nadb_store *st, char *why)
{
	struct format_rec f;
	size_t len = 0;
	pthread_mutex_lock(&st->meta_lock);
	int rc = read_format(st, &f, &len);
	pthread_mutex_unlock(&st->meta_lock);
	if (rc == -ENOENT) {
		snprintf(why, WHY_SIZE, "it has no format record any more (the store was deleted)");
		return -ENOENT;
	}
	if (rc && rc != -EBADMSG)
		return rc;
	if (rc)
		snprintf(why, WHY_SIZE, "its format record is damaged now (%zu bytes)", len);
	else if (f.version != STORE_FORMAT_VERSION)
		snprintf(why, WHY_SIZE, "its format record now says format %u; this nadbfs "
			 "reads format %u: mount it with a nadbfs of that format", f.version,
			 STORE_FORMAT_VERSION);
	else if (f.chunk_size != st->chunk_size)
		snprintf(why, WHY_SIZE, "its format record now says chunks of %u bytes, not "
			 "%zu: it is not the store this follower opened", f.chunk_size,
			 st->chunk_size);
	else
		return 0;
	return -EPROTO;
}

/* An orphan row's value: its session, big-endian (none for session 0, as
 * before sessions). */
int store_put_orphan(struct nadb_store *st, uint64_t ino)
{
	uint8_t key[INO_KEY_LEN];
	uint32_t session = htobe32(st->kv->session);
	return st->kv->ops->put(st->kv, KV_ORPHANS, key, ino_key(key, ino), &session,
				st->kv->session ? sizeof(session) : 0);
}

/* Inodes unlinked while open (KV_ORPHANS), and the session whose they
 * are (the row's value; none before sessions). */
struct orphan_list {
	struct orphan {
		uint64_t ino;
		uint32_t session;
	} *o;
	size_t n, cap;
};

static int collect_orphan(void *ctx, const void *key, size_t klen,
			  const void *val, size_t vlen)
{
	struct orphan_list *l = ctx;
	if (klen != INO_KEY_LEN)
		return 0;
	if (ARRAY_GROW(l->o, l->n, l->cap))
		return -ENOMEM;
	uint32_t be = 0;
	if (vlen == sizeof(be))
		memcpy(&be, val, sizeof(be));
	l->o[l->n++] = (struct orphan){kv_key_ino(key), be32toh(be)};
	return 0;
}

/* Does ST's kernel or an open file of ST's hold inode INO? */
static bool holds_inode(struct nadb_store *st, uint64_t ino)
{
	return file_is_open(st, ino) || file_kernel_holds(st, ino);
}

/* Delete the orphans of the sessions SC takes in: their sessions held
 * them open, and are gone.  One our kernel or a handle of ours holds
 * becomes ours instead: deleted when we let go of it (file.c).  At a
 * takeover, "ours" takes in the follower's (heir_of) until its kernel's
 * references are ours: a handle it opened on a key the dead writer had
 * unlinked reads on. */
static int remove_orphans(struct nadb_store *st, struct settle_scope *sc)
{
	struct orphan_list l = {0};
	int rc = st->kv->ops->scan(st->kv, KV_ORPHANS, NULL, 0, collect_orphan, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		if (!settle_scope_has(sc, l.o[i].session))
			continue;
		uint64_t ino = l.o[i].ino;
		uint8_t key[INO_KEY_LEN];
		ino_key(key, ino);
		bool heirs = st->heir_of && holds_inode(st->heir_of, ino);
		bool held = heirs || (!sc->own_too && holds_inode(st, ino));
		if (held && (sc->own_too || l.o[i].session == st->kv->session || !st->kv->session))
			continue; /* ours already; or, closing (a takeover that failed),
				   * left to whoever settles our session */
		rc = step_begin(st);
		if (rc)
			break;
		if (held) {
			rc = store_put_orphan(st, ino);
		} else {
			rc = inode_delete(st, ino);
			if (rc == -ENOENT)
				rc = 0;
			if (!rc)
				rc = st->kv->ops->del(st->kv, KV_ORPHANS, key, sizeof(key));
		}
		rc = step_end(st, rc);
	}
	free(l.o);
	settle_scope_free(sc);
	return rc;
}

/* Settle what sessions gone left (see "sessions"): the references they
 * dropped, their files' pending chunks (and the drops releasing those
 * notes), the keys they held open after an unlink.  Under meta_lock, at
 * open or in a sync before its commit (commit_group: the pack bytes the
 * group names are durable, so that the syncs settling drops may commit
 * it).  Each part is tried whatever the one before did; the first
 * failure of the pending rows or orphans is returned, and *INCOMPLETE
 * says whether anything is left for another pass (logged). */
static int settle_sessions(struct nadb_store *st, bool *incomplete)
{
	struct settle_scope sc = {.st = st};
	int rc0 = settle_left_drops(st, &sc);
	int rc = file_recover_pending(st, &sc);
	int rc1 = settle_drops(st); /* settle_drop_list syncs their steps first */
	int rc2 = remove_orphans(st, &sc);
	*incomplete = rc0 || rc || rc1 || rc2 || sc.failed;
	return rc ? rc : rc2;
}

void store_sessions_died(struct nadb_store *st)
{
	atomic_store(&st->sessions_owed, true);
	pthread_cond_signal(&st->flush_cond);
}

static void free_store(struct nadb_store *st)
{
	chunk_release(&st->chunks);
	lock_beat_session(st, NULL);
	if (st->kv)
		st->kv->ops->close(st->kv);
	if (st->blobs)
		st->blobs->ops->close(st->blobs);
	unlock_store(st, true); /* a no-op if it was never taken */
	if (st->reserve_fd >= 0)
		close(st->reserve_fd);
	free(st->freed);
	pthread_mutex_destroy(&st->meta_lock);
	pthread_mutex_destroy(&st->files_lock);
	pthread_mutex_destroy(&st->flush_lock);
	while (st->npool)
		free(st->pool[--st->npool]);
	pthread_mutex_destroy(&st->pool_lock);
	pthread_mutex_destroy(&st->compact_lock);
	pthread_mutex_destroy(&st->krefs_lock);
	free(st->krefs);
	free(st->forgotten);
	pthread_cond_destroy(&st->flush_cond);
	pthread_cond_destroy(&st->reap_cond);
	pthread_cond_destroy(&st->synced_cond);
	free(st->files);
	free(st->dir);
	free(st);
}

static int check_options(const struct nadb_options *o)
{
	if (o->compress_level < 1 || o->compress_level > 9 || o->buffer_mb < 1 ||
	    o->flush_interval < 1 || o->reap_interval_ms < 10 || o->compact_garbage > 100 || o->chunk_kb < 4 || o->chunk_kb > 16384 ||
	    (o->chunk_kb & (o->chunk_kb - 1))) {
		nadb_log("bad options: compress_level 1..9, buffer_mb >= 1, "
			 "flush_interval >= 1, reap_interval_ms >= 10, chunk_kb a power of two in 4..16384");
		return -EINVAL;
	}
	return 0;
}

/* Before LMDB maps the file in this process: is it sound?  Damaged, it
 * is salvaged if the caller asked for that, or refused.  Under the store
 * lock, so nobody writes the file meanwhile. */
static int check_meta(struct nadb_store *st, const struct nadb_options *o)
{
	struct nadb_damage own = {0};
	struct nadb_damage *d = o->damage ? o->damage : &own;
	char meta[4096];
	snprintf(meta, sizeof(meta), "%s/meta", st->dir);
	int rc = meta_check(meta, d);
	if (rc == -EUCLEAN && o->salvage_meta)
		rc = meta_salvage(meta, d);
	else if (rc == -EUCLEAN)
		nadb_log("%s/data.mdb is damaged (%s); 'nadb fsck --repair %s' saves what "
			 "can be read", meta, d->why, st->dir);
	nadb_damage_free(&own);
	return rc;
}

/* Chunks stored and freed, for the statistics. */
static int account_chunk(void *ctx, int delta, uint32_t frame_bytes, uint32_t raw_bytes)
{
	struct nadb_store *st = ctx;
	int rc = counters_add(st, NADB_ROOT_INO, C_CHUNKS, delta);
	if (!rc)
		rc = counters_add(st, NADB_ROOT_INO, C_CHUNK_BYTES, (int64_t)delta * frame_bytes);
	if (!rc)
		rc = counters_add(st, NADB_ROOT_INO, C_CHUNK_RAW, (int64_t)delta * raw_bytes);
	return rc;
}

/* The names a store directory holds; a crash while a store was being
 * made leaves some of them and no meta/data.mdb. */
static bool is_store_file(const char *name)
{
	static const char *const names[] = {".", "..", "lock", "meta", "packs", "reserve",
					    "nadbfs.log"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i]))
			return true;
	return false;
}

/* A store is made in a new or empty directory only: turning a folder of
 * the user's into one would write lock, meta/, packs/ and a log among
 * their files (nadbfs ~/Documents mnt).  -ENOTEMPTY, naming a file. */
static int check_only_store_files(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		int e = errno;
		nadb_log("%s: cannot read the directory: %s", dir, strerror(e));
		return -e;
	}
	struct dirent *e;
	int rc = 0;
	while (!rc && (e = readdir(d)))
		if (!is_store_file(e->d_name)) {
			nadb_log("%s: not a nadb store, and not empty (it holds '%s'): "
				 "refusing to make a store among other files", dir, e->d_name);
			rc = -ENOTEMPTY;
		}
	closedir(d);
	return rc;
}

/* Every index of the store, in the order they hear of each change. */
static const struct index_hooks *const store_indexes[] = {
	&tags_hooks, &expiry_hooks, &stats_hooks,
};

int nadb_store_name(const char *arg, char *buf, size_t size)
{
	if (store_is_redis_url(arg)) {
		struct redis_url u;
		int rc = redis_url_parse(arg, &u);
		if (rc)
			return rc;
		bool v6 = strchr(u.host, ':') != NULL;
		snprintf(buf, size, "redis://%s%s%s:%d/%s", v6 ? "[" : "", u.host, v6 ? "]" : "",
			 u.port, u.name);
		return 0;
	}
	char *real = realpath(arg, NULL);
	if (!real)
		return -errno;
	snprintf(buf, size, "%s", real);
	free(real);
	return 0;
}

bool nadb_store_is_url(const char *arg)
{
	return store_is_redis_url(arg);
}

/* A store in directory DIR: made there if o->create and the directory is
 * new or empty; then locked, its LMDB tables and pack segments opened. */
static int open_directory(struct nadb_store *st, const char *dir,
			  const struct nadb_options *o)
{
	struct stat sb;
	char path[4096];
	int rc;
	snprintf(path, sizeof(path), "%s/meta/data.mdb", dir);
	if (!o->create && stat(path, &sb)) {
		nadb_log("%s: no store here", dir);
		return -ENOENT;
	}
	if (o->create && mkdir(dir, 0700) && errno != EEXIST) {
		int e = errno;
		nadb_log("%s: cannot create the store: %s", dir, strerror(e));
		return -e;
	}
	if (o->create && !o->create_among_files && stat(path, &sb) &&
	    (rc = check_only_store_files(dir)))
		return rc;
	if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
		nadb_log("%s: not a directory", dir);
		return -ENOTDIR;
	}
	if ((rc = nadb_store_name(dir, path, sizeof(path))))
		return rc;
	if (!(st->dir = strdup(path)))
		return -ENOMEM;
	rc = lock_store(st, dir);
	if (!rc)
		rc = open_reserve(st);
	if (!rc && (o->check_meta || o->salvage_meta))
		rc = check_meta(st, o);
	if (!rc) {
		snprintf(path, sizeof(path), "%s/meta", dir);
		rc = kv_lmdb_open(path, &st->kv);
	}
	if (!rc) {
		snprintf(path, sizeof(path), "%s/packs", dir);
		rc = blobs_pack_open(path, &st->blobs);
	}
	return rc;
}

/* A store on the Redis server of URL: locked, its tables and segments
 * opened (a new NAME is marked as a store). */
static int open_redis(struct nadb_store *st, const char *url, const struct nadb_options *o)
{
	char name[4096];
	int rc = nadb_store_name(url, name, sizeof(name));
	if (rc)
		return rc;
	if (!(st->dir = strdup(name)))
		return -ENOMEM;
	if (st->following) { /* no lock: the writer holds it */
		rc = lock_held_by_daemon(url);
		if (rc == 0) { /* a tool: it publishes nothing, and is soon done */
			nadb_log("%s: store is in use by a tool, not a daemon to follow", st->dir);
			return -EBUSY;
		}
		rc = rc < 0 ? rc : kv_redis_open_follower(url, &st->kv);
		if (!rc)
			rc = blobs_redis_open_follower(url, &st->blobs);
		return rc;
	}
	rc = lock_store(st, url);
	if (!rc)
		rc = kv_redis_open(url, &st->kv);
	if (!rc)
		rc = kv_redis_set_fence(st->kv, lock_generation(st));
	if (!rc)
		kv_redis_set_min_replicas(st->kv, o->min_replicas);
	if (!rc)
		rc = blobs_redis_open(url, &st->blobs);
	if (!rc)
		blobs_redis_set_min_replicas(st->blobs, o->min_replicas);
	return rc;
}

static int open_store(const char *store, const struct nadb_options *o, bool following,
		      struct nadb_store *heir_of, struct nadb_store **out)
{
	struct nadb_options defaults;
	if (!o) {
		nadb_options_default(&defaults);
		o = &defaults;
	}
	int rc = check_options(o);
	if (rc)
		return rc;
	struct nadb_store *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->lock_fd = -1;
	st->reserve_fd = -1;
	st->following = following;
	atomic_init(&st->followers, 0);
	st->opt = *o;
	st->indexes = store_indexes;
	st->nindexes = sizeof(store_indexes) / sizeof(store_indexes[0]);
	pthread_mutex_init(&st->meta_lock, NULL);
	pthread_mutex_init(&st->files_lock, NULL);
	pthread_mutex_init(&st->flush_lock, NULL);
	pthread_mutex_init(&st->pool_lock, NULL);
	pthread_mutex_init(&st->compact_lock, NULL);
	pthread_mutex_init(&st->krefs_lock, NULL);
	pthread_cond_init(&st->flush_cond, NULL);
	pthread_cond_init(&st->reap_cond, NULL);
	pthread_cond_init(&st->synced_cond, NULL);
	st->nfiles_buckets = 1024;
	st->files = calloc(st->nfiles_buckets, sizeof(*st->files));
	if (!st->files) {
		free_store(st);
		return -ENOMEM;
	}
	/* Where it lives is decided by its name alone. */
	if (following && !store_is_redis_url(store))
		rc = -EOPNOTSUPP; /* a directory has one process: its lock says */
	else
		rc = store_is_redis_url(store) ? open_redis(st, store, o)
					       : open_directory(st, store, o);
	if (!rc) {
		st->chunks = (struct chunker){
			.kv = st->kv, .blobs = st->blobs,
			.compress = o->compress == NADB_COMPRESS_AUTO,
			.level = o->compress_level,
			.account = account_chunk, .freed = queue_freed,
			.room = room_hook, .account_ctx = st,
			/* a writer's first sync frees what one before left */
			.zeros = !following && st->kv->ops->free_zeros,
		};
		rc = load_format(st, o);
	}
	if (!rc && following) { /* the rest is the writer's */
		*out = st;
		return 0;
	}
	/* What sessions gone left (a crash), before anything of ours; what a
	 * failure leaves, the first sync tries again. */
	bool incomplete = false;
	st->heir_of = heir_of;
	if (!rc)
		rc = settle_sessions(st, &incomplete);
	/* (a backend without sessions: what is left waits for the next open,
	 * since every row is session 0's, ours among them) */
	atomic_store(&st->sessions_owed, incomplete && st->kv->session);
	if (!rc)
		rc = nadb_store_sync(st);
	if (rc) {
		free_store(st);
		return rc;
	}
	lock_beat_session(st, st->kv);
	*out = st;
	return 0;
}

int nadb_store_open(const char *store, const struct nadb_options *o,
		    struct nadb_store **out)
{
	return open_store(store, o, false, NULL, out);
}

int nadb_store_open_follower(const char *store, const struct nadb_options *o,
			     struct nadb_store **out)
{
	return open_store(store, o, true, NULL, out);
}

int nadb_store_take_over(const char *store, const struct nadb_options *o,
			 struct nadb_store *follower, struct nadb_store **out)
{
	assert(nadb_store_is_follower(follower));
	return open_store(store, o, false, follower, out);
}

/* The group just committed (RC 0) or failed to (its frees never
 * happened): hand out the frames now safe to punch.  Under meta_lock. */
static void take_freed(struct nadb_store *st, int rc, struct freed_frame **out,
		       size_t *n)
{
	*out = NULL;
	*n = 0;
	if (!rc && st->nfreed && !st->keep_freed) {
		*out = st->freed;
		*n = st->nfreed;
		st->freed = NULL;
		st->freed_cap = 0;
	}
	st->nfreed = st->freed_step = 0;
	/* A frame is never named again once freed (a chunk stored anew gets a
	 * new frame): check anyway, since punching a named frame loses data. */
	size_t kept = 0;
	for (size_t i = 0; i < *n; i++)
		if (chunk_names_frame(&st->chunks, (*out)[i].hash, &(*out)[i].loc) == 0)
			(*out)[kept++] = (*out)[i];
	if (kept != *n)
		nadb_log("store: %zu freed frames are still named; not punching them",
			 *n - kept);
	*n = kept;
}

/* Punch frames (outside meta_lock: a punch may wait for the journal);
 * the bytes given back. */
static uint64_t punch_frames(struct nadb_store *st, const struct freed_frame *f,
			     size_t n)
{
	uint64_t bytes = 0;
	size_t failed = 0;
	int err = 0;
	for (size_t i = 0; i < n; i++) {
		int rc = st->blobs->ops->punch(st->blobs, &f[i].loc);
		if (rc) {
			failed++;
			err = rc;
		} else {
			bytes += f[i].loc.len;
		}
	}
	if (failed)
		nadb_log("packs: %zu freed frames not punched (compaction will reclaim "
			 "them): %s", failed, strerror(-err));
	return bytes;
}

/* Free the chunks at zero (chunk_free_zeros) after a sync, a batch at a
 * time while batches free some.  Nothing is counted (a chunk left the
 * counts when it reached zero): only frames are queued, to go with the
 * group's.  Not once the lease lapsed (the script's fence would refuse
 * it anyway).  Under meta_lock. */
static void free_zeros(struct nadb_store *st)
{
	if (store_may_change(st))
		return;
	size_t queued;
	int more;
	do {
		queued = st->nfreed;
		more = chunk_free_zeros(&st->chunks, ZERO_GRACE_MS);
	} while (more > 0 && st->nfreed > queued);
	if (more == -ENOLCK)
		store_lose_lock(st, "freeing chunks at zero was fenced off");
	else if (more < 0) /* c->zeros stays set: the next sync tries again */
		nadb_log("%s: chunks no key holds any more not freed yet (%s): a later sync "
			 "frees them", st->dir, strerror(-more));
}

/* A sync's metadata commit: commit the group, hand out the frames it
 * freed (*BATCH, *N).  Pack bytes first, mostly outside meta_lock so that
 * others go on stepping meanwhile.  *FINISH: the commit is durable only
 * once the backend's sync_finish returns (see sync_group_started).
 * Called with meta_lock, which it lets go and takes again. */
static int commit_group(struct nadb_store *st, struct freed_frame **batch, size_t *n,
			bool *finish)
{
	*batch = NULL;
	*n = 0;
	*finish = false;
	pthread_mutex_unlock(&st->meta_lock);
	/* Nothing goes out once the lease lapsed: the store may be another
	 * daemon's by the time it lands.  (Steps are refused meanwhile.) */
	int rc = store_may_change(st);
	/* Most pack bytes reach the disk here, without stalling anybody... */
	if (!rc)
		rc = st->blobs->ops->sync(st->blobs);
	pthread_mutex_lock(&st->meta_lock);
	st->syncs_cut = st->syncs_begun; /* held until committed: no step joins */
	/* A pass that failed is tried again SETTLE_RETRY_NS later, not at
	 * every sync (a followed writer's come every millisecond). */
	bool owed = !rc && !st->settling && atomic_load(&st->sessions_owed) &&
		    (int64_t)monotonic_ns() >= st->settle_next_ns;
	/* chunks at zero to free: a writer's first sync frees what the one
	 * before left, whether or not it has anything to commit */
	bool zeros = !rc && !st->settling && st->chunks.zeros;
	if (rc || (!owed && !zeros && !st->kv->ops->unsynced(st->kv))) {
		/* nothing to commit: durable once the last commit is */
		*finish = !rc && st->kv->ops->sync_finish;
		return rc;
	}
	/* ...and the few appended since, before the metadata naming them. */
	rc = st->blobs->ops->sync(st->blobs);
	if (rc)
		return rc;
	if (owed) { /* in this group: its frees are punched once it is durable */
		bool incomplete;
		atomic_store(&st->sessions_owed, false); /* a death told meanwhile stays */
		settle_sessions(st, &incomplete);
		if (incomplete) {
			atomic_store(&st->sessions_owed, true);
			st->settle_next_ns = (int64_t)monotonic_ns() + SETTLE_RETRY_NS;
		}
	}
	if (!st->kv->ops->unsynced(st->kv)) { /* the pass synced what it did */
		if (st->chunks.zeros && !st->settling)
			free_zeros(st);
		take_freed(st, 0, batch, n);
		*finish = st->kv->ops->sync_finish;
		return 0;
	}
	if (free_bytes(st) < RESERVE_BYTES)
		reserve_give(st);
	rc = sync_group_started(st, finish);
	if (!rc && st->blobs->ops->committed)
		st->blobs->ops->committed(st->blobs);
	/* Frames a settle frees are punched only if its counts are durable;
	 * else compaction reclaims them. */
	size_t freed_synced = st->nfreed;
	if (!rc && st->kv->apart && !st->settling && chunk_unsettled(&st->chunks) &&
	    settle_drops(st))
		st->nfreed = st->freed_step = freed_synced;
	if (!rc && st->chunks.zeros && !st->settling)
		free_zeros(st);
	take_freed(st, rc, batch, n);
	return rc;
}

/* Sync ME is durable (RC: or failed), and maybe PUNCHED too: advance
 * syncs_durable and syncs_punched over every sync done in order.  Under
 * meta_lock. */
static void note_sync(struct nadb_store *st, uint64_t me, int rc, bool punched)
{
	struct sync_slot *slot = &st->ring[me % SYNC_RESULTS];
	if (!slot->durable && me > st->syncs_durable) {
		slot->rc = rc;
		slot->durable = true;
		if (rc) {
			st->last_failure_rc = rc;
			atomic_fetch_add(&st->sync_failures, 1);
		}
	}
	slot->punched = punched;
	while (st->syncs_durable < st->syncs_cut &&
	       st->ring[(st->syncs_durable + 1) % SYNC_RESULTS].durable) {
		st->syncs_durable++;
		st->ring[st->syncs_durable % SYNC_RESULTS].durable = false;
	}
	while (st->syncs_punched < st->syncs_durable &&
	       st->ring[(st->syncs_punched + 1) % SYNC_RESULTS].punched) {
		st->syncs_punched++;
		st->ring[st->syncs_punched % SYNC_RESULTS].punched = false;
	}
	pthread_cond_broadcast(&st->synced_cond);
}

/* Run sync number st->syncs_begun, just begun by this thread: commit,
 * make it durable (the slow half outside meta_lock, while others step
 * and the next sync writes its pack bytes), tell its waiters, punch.
 * Under meta_lock (let go meanwhile). */
static void run_sync(struct nadb_store *st)
{
	uint64_t me = st->syncs_begun;
	assert(st->syncs_cut == me - 1);
	struct freed_frame *batch;
	size_t n;
	bool finish;
	int rc = commit_group(st, &batch, &n, &finish);
	assert(st->syncs_cut == me);
	if (finish) {
		pthread_mutex_unlock(&st->meta_lock);
		rc = st->kv->ops->sync_finish(st->kv);
		pthread_mutex_lock(&st->meta_lock);
		if (rc) { /* the frees may not be durable: compaction reclaims */
			free(batch);
			batch = NULL;
		}
	}
	bool punch = batch != NULL;
	note_sync(st, me, rc, !punch);
	pthread_mutex_unlock(&st->meta_lock);
	if (punch)
		atomic_fetch_add(&st->punched, punch_frames(st, batch, n));
	free(batch);
	bool take = !atomic_load(&st->reserve_held) && free_bytes(st) >= 2 * RESERVE_BYTES;
	pthread_mutex_lock(&st->meta_lock);
	if (take)
		reserve_take(st);
	if (punch)
		note_sync(st, me, rc, true);
}

/* The result of sync N, durable by now: its own, or (its slot reused by
 * a later sync while the asker slept) a failure if any came since.
 * Under meta_lock. */
static int sync_result(const struct nadb_store *st, uint64_t n, uint64_t failures)
{
	assert(st->syncs_durable >= n);
	if (st->syncs_begun - n < SYNC_RESULTS)
		return st->ring[n % SYNC_RESULTS].rc;
	return st->sync_failures != failures ? st->last_failure_rc : 0;
}

/* Make every change made before the call durable, and with PUNCHED the
 * frames freed punched too (*PUNCHED: whether a sync gave bytes back
 * meanwhile).  The sync that counts is the one begun and not yet cut, if
 * any, else a new one: begun at once by the caller, while the last one
 * may still be making its commit durable (group commit, see
 * syncs_begun). */
static int sync_and_punch(struct nadb_store *st, bool *punched)
{
	file_delete_forgotten(st); /* their deletions go with this sync */
	uint64_t was = atomic_load(&st->punched);
	atomic_fetch_add(&st->syncs_asked, 1);
	pthread_mutex_lock(&st->meta_lock);
	uint64_t failures = st->sync_failures;
	uint64_t mine = st->syncs_begun + (st->syncs_cut == st->syncs_begun);
	for (;;) {
		if (st->syncs_durable >= mine && (!punched || st->syncs_punched >= mine))
			break;
		if (st->syncs_begun < mine && st->syncs_begun - st->syncs_punched < SYNC_RESULTS - 1) {
			assert(st->syncs_cut == st->syncs_begun);
			st->syncs_begun++;
			run_sync(st);
		} else {
			pthread_cond_wait(&st->synced_cond, &st->meta_lock);
		}
	}
	int rc = sync_result(st, mine, failures);
	pthread_mutex_unlock(&st->meta_lock);
	if (punched)
		*punched = atomic_load(&st->punched) > was;
	return rc;
}

/* A sync for the flusher: one that fails says so, and leaves the failure
 * for the callers below to hear of. */
static int sync_quietly(struct nadb_store *st)
{
	return sync_and_punch(st, NULL);
}

int nadb_store_sync(struct nadb_store *st)
{
	return nadb_store_sync_seen(st, &st->failures_told);
}

uint64_t nadb_store_sync_failures(struct nadb_store *st)
{
	return atomic_load(&st->sync_failures);
}

int nadb_store_sync_seen(struct nadb_store *st, atomic_uint_fast64_t *seen)
{
	int rc = sync_and_punch(st, NULL);
	pthread_mutex_lock(&st->meta_lock);
	uint64_t now = st->sync_failures;
	int last = st->last_failure_rc;
	pthread_mutex_unlock(&st->meta_lock);
	/* a failure since *SEEN may have taken changes of the caller's */
	uint64_t was = atomic_load(seen);
	while (was < now && !atomic_compare_exchange_weak(seen, &was, now))
		;
	if (was < now && !rc)
		rc = last;
	return rc;
}

void nadb_store_sync_counts(struct nadb_store *st, uint64_t *asked, uint64_t *run)
{
	*asked = atomic_load(&st->syncs_asked);
	pthread_mutex_lock(&st->meta_lock);
	*run = st->syncs_begun;
	pthread_mutex_unlock(&st->meta_lock);
}

int store_make_room(struct nadb_store *st)
{
	file_delete_forgotten(st); /* keys just deleted free their chunks now */
	pthread_mutex_lock(&st->meta_lock);
	bool queued = st->nfreed > 0;
	pthread_mutex_unlock(&st->meta_lock);
	bool punched = false;
	if (queued && sync_and_punch(st, &punched))
		return 0;
	return punched;
}

void store_note_step(struct nadb_store *st)
{
	if (st->kv->ops->unsynced(st->kv) >= MAX_UNSYNCED_STEPS)
		pthread_cond_signal(&st->flush_cond);
}

/* Has the store followers (follow.c)?  Asked of the backend every
 * FOLLOWERS_CHECK_MS, which also has it tell them what each sync wrote. */
static void check_followers(struct nadb_store *st, int64_t now, int64_t *checked)
{
	if (!st->kv->ops->publish || now - *checked < FOLLOWERS_CHECK_MS * 1000000LL)
		return;
	*checked = now;
	uint64_t n = 0;
	if (st->kv->ops->publish(st->kv, store_followed_tables, &n))
		return; /* said; counted again in a second */
	uint64_t was = atomic_exchange(&st->followers, n);
	if ((was > 0) != (n > 0)) {
		if (n)
			nadb_log("%s: %llu followers: syncing every %d ms", st->dir,
				 (unsigned long long)n, FOLLOWED_FLUSH_MS);
		else
			nadb_log("%s: no followers: syncing every %u s", st->dir,
				 st->opt.flush_interval);
	}
}



/* Sync every flush_interval (with followers, every FOLLOWED_FLUSH_MS,
 * unless the last sync failed), and when woken early (a big group); ask
 * for followers every FOLLOWERS_CHECK_MS; compact every flush_interval.
 * A failing sync is said once a flush_interval at most. */
static void *flusher_main(void *arg)
{
	struct nadb_store *st = arg;
	const int64_t interval = (int64_t)st->opt.flush_interval * 1000000000LL;
	int64_t checked = 0, compacted = (int64_t)monotonic_ns(), synced = compacted, said = 0;
	int failed = 0;
	pthread_mutex_lock(&st->flush_lock);
	while (!st->flusher_stop) {
		int64_t every = atomic_load(&st->followers) && !failed ? FOLLOWED_FLUSH_MS * 1000000LL
								       : interval;
		int64_t wait = synced + every - (int64_t)monotonic_ns();
		if (st->kv->ops->publish &&
		    checked + FOLLOWERS_CHECK_MS * 1000000LL - (int64_t)monotonic_ns() < wait)
			wait = checked + FOLLOWERS_CHECK_MS * 1000000LL - (int64_t)monotonic_ns();
		struct timespec until = clock_in(CLOCK_REALTIME, wait > 0 ? wait : 0);
		bool woken = wait > 0 &&
			     pthread_cond_timedwait(&st->flush_cond, &st->flush_lock, &until) == 0;
		pthread_mutex_unlock(&st->flush_lock);
		int64_t now = (int64_t)monotonic_ns();
		int rc = 0;
		if (woken || now - synced >= every) {
			synced = now;
			rc = sync_quietly(st);
			if (rc && (rc != failed || now - said >= interval)) {
				nadb_log("flusher: sync failed: %s", strerror(-rc));
				said = now;
			}
			failed = rc;
		}
		/* after the sync: a server slow to answer delays no sync */
		check_followers(st, (int64_t)monotonic_ns(), &checked);
		struct nadb_compact_result res;
		if (!rc && st->opt.compact_garbage && now - compacted >= interval) {
			compacted = now;
			nadb_compact(st, false, st->opt.compact_garbage / 100.0, &res);
		}
		pthread_mutex_lock(&st->flush_lock);
	}
	pthread_mutex_unlock(&st->flush_lock);
	return NULL;
}

int nadb_store_start_flusher(struct nadb_store *st)
{
	pthread_mutex_lock(&st->flush_lock);
	int rc = 0;
	if (!st->flusher_running) {
		st->flusher_stop = false;
		rc = -pthread_create(&st->flusher, NULL, flusher_main, st);
		st->flusher_running = rc == 0;
	}
	pthread_mutex_unlock(&st->flush_lock);
	return rc;
}

void nadb_store_stop_flusher(struct nadb_store *st)
{
	pthread_mutex_lock(&st->flush_lock);
	bool running = st->flusher_running;
	st->flusher_stop = true;
	st->flusher_running = false;
	pthread_cond_signal(&st->flush_cond);
	pthread_mutex_unlock(&st->flush_lock);
	if (running)
		pthread_join(st->flusher, NULL);
}

int nadb_store_close(struct nadb_store *st)
{
	if (st->following) { /* nothing of ours to commit */
		nadb_store_stop_following(st);
		int rc = file_close_left_open(st);
		free_store(st);
		return rc;
	}
	nadb_store_note_closing(st);
	nadb_store_stop_reaper(st);
	nadb_store_stop_flusher(st);
	int rc = file_commit_all(st);
	int rc4 = file_close_left_open(st);
	if (!rc)
		rc = rc4;
	/* Nothing is open or referenced any more: unlinked inodes can go. */
	struct settle_scope sc = {.st = st, .own_too = true};
	pthread_mutex_lock(&st->meta_lock);
	int rc3 = remove_orphans(st, &sc);
	pthread_mutex_unlock(&st->meta_lock);
	if (!rc)
		rc = rc3;
	int rc2 = nadb_store_sync(st);
	free_store(st);
	return rc ? rc : rc2;
}

int nadb_statfs(struct nadb_store *st, struct nadb_statfs *out)
{
	struct statvfs sv;
	out->bsize = 4096;
	if (st->lock_fd < 0) {
		/* Redis says how much memory it uses, not how much is left:
		 * the bytes the store holds, under a nominal 1 PiB (as network
		 * filesystems without a size do). */
		uint64_t held = st->blobs->ops->size(st->blobs) / 4096;
		out->blocks = REDIS_NOMINAL_BYTES / 4096;
		out->bfree = out->bavail = out->blocks > held ? out->blocks - held : 0;
	} else if (fstatvfs(st->lock_fd, &sv)) {
		return -errno;
	} else {
		uint64_t frsize = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
		out->blocks = sv.f_blocks * frsize / 4096;
		out->bfree = sv.f_bfree * frsize / 4096;
		out->bavail = sv.f_bavail * frsize / 4096;
	}
	/* Names in use: what the counters hold (inode numbers are sparse,
	 * a partition per namespace). */
	struct nadb_stats sum;
	int rc = stats_names(st, &sum);
	if (rc)
		return rc;
	uint64_t used = 1 + sum.keys + sum.databases + sum.namespaces + sum.dirs;
	out->files = UINT32_MAX;
	out->ffree = used < out->files ? out->files - used : 0;
	return 0;
}
