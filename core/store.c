/* store.c -- opening, locking, syncing and closing a store.
 *
 * STORE/ holds:  lock      flock'ed by the one process using the store
 *                meta/     the metadata tables (LMDB)
 *                packs/    chunk frames in append-only segments
 *                nadbfs.log the daemon's one-line error messages
 *
 * A store is used by one process at a time (a daemon or a tool), so all
 * caching in that process is safe.  Durability comes in groups: the
 * flusher (or fsync, or close) syncs the packs and then commits the
 * metadata, so metadata never names chunk bytes that are not on disk.
 */
#include "log.h"
#include "metawalk.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define FORMAT_VERSION 1
/* A group is also committed once this many steps piled up, bounding the
 * memory LMDB holds for it and the work a crash can undo. */
#define MAX_UNSYNCED_STEPS 100000

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

int step_begin(struct nadb_store *st)
{
	return st->kv->ops->step_begin(st->kv);
}

int step_end(struct nadb_store *st, int rc)
{
	int e = st->kv->ops->step_end(st->kv, rc == 0);
	return rc ? rc : e;
}

static int lock_store(struct nadb_store *st)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/lock", st->dir);
	st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lock_fd < 0) {
		int e = errno;
		nadb_log("%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB)) {
		int e = errno;
		char pid[32] = "";
		ssize_t n = pread(st->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		pid[strcspn(pid, "\n")] = 0;
		if (e == EWOULDBLOCK)
			nadb_log("%s: store is in use by another process (pid %s)", st->dir,
				 pid[0] ? pid : "?");
		else
			nadb_log("%s: cannot lock: %s", st->dir, strerror(e));
		close(st->lock_fd);
		st->lock_fd = -1;
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(st->lock_fd, 0) || pwrite(st->lock_fd, pid, (size_t)n, 0) != n)
		nadb_log("%s: cannot record our pid: %s", path, strerror(errno));
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
	struct format_rec f = {.version = FORMAT_VERSION, .chunk_size = o->chunk_kb * 1024};
	uint64_t next = NADB_ROOT_INO + 1;
	int rc = step_begin(st);
	if (rc)
		return rc;
	rc = inode_put(st, NADB_ROOT_INO, &root, NULL, 0);
	if (!rc)
		rc = st->kv->ops->put(st->kv, KV_META, "next_ino", 8, &next, sizeof(next));
	if (!rc)
		rc = st->kv->ops->put(st->kv, KV_META, "format", 6, &f, sizeof(f));
	return step_end(st, rc);
}

/* Read the format record (making a new store's first) and next_ino. */
static int load_format(struct nadb_store *st, const struct nadb_options *o)
{
	struct kv_val v;
	int rc = st->kv->ops->get(st->kv, KV_META, "format", 6, &v);
	if (rc == -ENOENT) {
		rc = create_root(st, o);
		if (rc)
			return rc;
		rc = st->kv->ops->get(st->kv, KV_META, "format", 6, &v);
	}
	if (rc)
		return rc;
	struct format_rec f;
	if (v.len != sizeof(f)) {
		nadb_log("%s: format record is damaged", st->dir);
		return -EIO;
	}
	memcpy(&f, v.data, sizeof(f));
	if (f.version != FORMAT_VERSION || f.chunk_size < 4096 ||
	    f.chunk_size > (16u << 20)) {
		nadb_log("%s: unsupported store format %u (chunk size %u)", st->dir,
			 f.version, f.chunk_size);
		return -EPROTO;
	}
	st->chunk_size = f.chunk_size;
	rc = st->kv->ops->get(st->kv, KV_META, "next_ino", 8, &v);
	if (rc || v.len != sizeof(st->next_ino)) {
		nadb_log("%s: next_ino record is damaged", st->dir);
		return rc ? rc : -EIO;
	}
	memcpy(&st->next_ino, v.data, sizeof(st->next_ino));
	return 0;
}

/* Inodes unlinked while open when the last process stopped. */
static int collect_orphan(void *ctx, const void *key, size_t klen,
			  const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	uint64_t **list = ctx;
	if (klen != INO_KEY_LEN)
		return 0;
	uint64_t ino = 0;
	for (int i = 0; i < 8; i++)
		ino = ino << 8 | ((const uint8_t *)key)[i];
	size_t n = (size_t)(*list)[0];
	uint64_t *grown = realloc(*list, (n + 2) * sizeof(uint64_t));
	if (!grown)
		return -ENOMEM;
	grown[n + 1] = ino;
	grown[0] = n + 1;
	*list = grown;
	return 0;
}

static int remove_orphans(struct nadb_store *st)
{
	uint64_t *list = calloc(1, sizeof(uint64_t));
	if (!list)
		return -ENOMEM;
	int rc = st->kv->ops->scan(st->kv, KV_ORPHANS, NULL, 0, collect_orphan, &list);
	for (uint64_t i = 1; !rc && i <= list[0]; i++) {
		uint8_t key[INO_KEY_LEN];
		ino_key(key, list[i]);
		rc = step_begin(st);
		if (rc)
			break;
		rc = inode_delete(st, list[i]);
		if (rc == -ENOENT)
			rc = 0;
		if (!rc)
			rc = st->kv->ops->del(st->kv, KV_ORPHANS, key, sizeof(key));
		rc = step_end(st, rc);
	}
	free(list);
	return rc;
}

static void free_store(struct nadb_store *st)
{
	if (st->kv)
		st->kv->ops->close(st->kv);
	if (st->blobs)
		st->blobs->ops->close(st->blobs);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	pthread_mutex_destroy(&st->meta_lock);
	pthread_mutex_destroy(&st->files_lock);
	pthread_mutex_destroy(&st->flush_lock);
	while (st->npool)
		free(st->pool[--st->npool]);
	pthread_mutex_destroy(&st->pool_lock);
	pthread_mutex_destroy(&st->compact_lock);
	pthread_mutex_destroy(&st->krefs_lock);
	free(st->krefs);
	pthread_cond_destroy(&st->flush_cond);
	pthread_cond_destroy(&st->reap_cond);
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

int nadb_store_open(const char *dir, const struct nadb_options *o,
		    struct nadb_store **out)
{
	struct nadb_options defaults;
	if (!o) {
		nadb_options_default(&defaults);
		o = &defaults;
	}
	int rc = check_options(o);
	if (rc)
		return rc;
	struct stat sb;
	char path[4096];
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
	if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
		nadb_log("%s: not a directory", dir);
		return -ENOTDIR;
	}
	struct nadb_store *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->lock_fd = -1;
	st->opt = *o;
	pthread_mutex_init(&st->meta_lock, NULL);
	pthread_mutex_init(&st->files_lock, NULL);
	pthread_mutex_init(&st->flush_lock, NULL);
	pthread_mutex_init(&st->pool_lock, NULL);
	pthread_mutex_init(&st->compact_lock, NULL);
	pthread_mutex_init(&st->krefs_lock, NULL);
	pthread_cond_init(&st->flush_cond, NULL);
	pthread_cond_init(&st->reap_cond, NULL);
	st->nfiles_buckets = 1024;
	st->files = calloc(st->nfiles_buckets, sizeof(*st->files));
	st->dir = strdup(dir);
	if (!st->files || !st->dir) {
		free_store(st);
		return -ENOMEM;
	}
	rc = lock_store(st);
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
	if (!rc) {
		st->chunks = (struct chunker){
			.kv = st->kv, .blobs = st->blobs,
			.compress = o->compress == NADB_COMPRESS_AUTO,
			.level = o->compress_level,
			.account = account_chunk, .account_ctx = st,
		};
		rc = load_format(st, o);
	}
	if (!rc)
		rc = file_recover_pending(st);
	if (!rc)
		rc = remove_orphans(st);
	if (!rc)
		rc = nadb_store_sync(st);
	if (rc) {
		free_store(st);
		return rc;
	}
	*out = st;
	return 0;
}

int nadb_store_sync(struct nadb_store *st)
{
	/* Most pack bytes reach the disk here, without stalling anybody... */
	int rc = st->blobs->ops->sync(st->blobs);
	if (rc)
		return rc;
	pthread_mutex_lock(&st->meta_lock);
	if (st->kv->ops->unsynced(st->kv)) {
		/* ...and the few appended since, before the metadata naming them. */
		rc = st->blobs->ops->sync(st->blobs);
		if (!rc)
			rc = st->kv->ops->sync(st->kv);
	}
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

void store_note_step(struct nadb_store *st)
{
	if (st->kv->ops->unsynced(st->kv) >= MAX_UNSYNCED_STEPS)
		pthread_cond_signal(&st->flush_cond);
}

static void *flusher_main(void *arg)
{
	struct nadb_store *st = arg;
	pthread_mutex_lock(&st->flush_lock);
	while (!st->flusher_stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += st->opt.flush_interval;
		pthread_cond_timedwait(&st->flush_cond, &st->flush_lock, &until);
		pthread_mutex_unlock(&st->flush_lock);
		int rc = nadb_store_sync(st);
		if (rc)
			nadb_log("flusher: sync failed: %s", strerror(-rc));
		struct nadb_compact_result res;
		if (!rc && st->opt.compact_garbage)
			nadb_compact(st, false, st->opt.compact_garbage / 100.0, &res);
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
	nadb_store_stop_reaper(st);
	nadb_store_stop_flusher(st);
	int rc = file_commit_all(st);
	/* Nothing is open or referenced any more: unlinked inodes can go. */
	pthread_mutex_lock(&st->meta_lock);
	int rc3 = remove_orphans(st);
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
	if (statvfs(st->dir, &sv))
		return -errno;
	uint64_t frsize = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
	out->bsize = 4096;
	out->blocks = sv.f_blocks * frsize / 4096;
	out->bfree = sv.f_bfree * frsize / 4096;
	out->bavail = sv.f_bavail * frsize / 4096;
	pthread_mutex_lock(&st->meta_lock);
	uint64_t used = st->next_ino;
	pthread_mutex_unlock(&st->meta_lock);
	out->files = UINT32_MAX;
	out->ffree = used < out->files ? out->files - used : 0;
	return 0;
}
