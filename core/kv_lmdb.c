/* kv_lmdb.c -- the metadata tables of backend.h, kept in LMDB.
 *
 * LMDB allows one write transaction at a time and pays two fdatasync()s per
 * durable commit.  Committing every file-system operation would cost a disk
 * flush per create, so instead one long-lived write transaction (the
 * *group*) collects operations, each run in a nested transaction (a *step*)
 * so that a failed operation is undone alone.  sync() commits the group:
 * LMDB writes the data pages, syncs, then flips the meta page, so a crash
 * at any moment leaves the last committed group, whole.  The meta page's
 * own sync (MDB_NOMETASYNC) is sync_finish's, which the store runs outside
 * its lock so that the next group's steps need not wait for it: until
 * then a crash undoes the last commit, whole (LMDB reuses no page the
 * commit before it still names).
 *
 * The caller serialises every call but sync_finish (the store's
 * meta_lock); the store lock file already keeps other processes out, so
 * LMDB's own lock file is off (MDB_NOLOCK) and the transactions may move
 * between threads.
 */
#include "backend.h"
#include "log.h"
#include "varint.h"

#include <assert.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>



struct kv_lmdb {
	struct kv kv;
	MDB_env *env;
	MDB_dbi dbi[KV_NTABLES];
	MDB_txn *group; /* open group transaction, or NULL */
	MDB_txn *step;  /* open step inside the group, or NULL */
	uint64_t unsynced;
	/* Groups committed, and of them made durable (sync_finish's, which
	 * any thread may run at any time: hence atomic). */
	atomic_uint_fast64_t committed, flushed;
	/* finish_lock: scope is one flush at a time, so that a failure is
	 * told to every commit it may have lost.  A leaf lock. */
	pthread_mutex_t finish_lock;
	/* data.mdb opened again for sync_finish's fdatasync: Linux tells each
	 * open file of a write lost since it last asked, once, so LMDB's own
	 * fdatasync (a commit's, on its fd) cannot take a failure from us. */
	int sync_fd;
	/* A flush failed: a commit's meta page may be lost while LMDB builds
	 * on it, so every later step and sync fails until the store is opened
	 * again (as LMDB itself does when its own meta write fails). */
	atomic_bool broken;
	/* The first inode number not claimed (0: not read yet).  KV_META
	 * "next_ino" holds it as of the last committed step: a claim marks it
	 * unsaved, and the next step to commit (or the group) writes it, so an
	 * undone step never takes a claim back. */
	uint64_t next_ino;
	bool next_ino_unsaved;
};

static int errno_of_mdb(int rc)
{
	switch (rc) {
	case 0: return 0;
	case MDB_NOTFOUND: return -ENOENT;
	case MDB_KEYEXIST: return -EEXIST;
	case MDB_MAP_FULL: return -ENOSPC;
	case MDB_BAD_VALSIZE: return -ENAMETOOLONG;
	case MDB_TXN_FULL: return -ENOSPC;
	default: return rc > 0 && rc < 4096 ? -rc : -EIO;
	}
}

static int fail(const char *what, int rc)
{
	nadb_log("lmdb: %s: %s", what, mdb_strerror(rc));
	return errno_of_mdb(rc);
}

static int begin_group(struct kv_lmdb *l)
{
	if (l->group)
		return 0;
	int rc = mdb_txn_begin(l->env, NULL, 0, &l->group);
	return rc ? fail("begin", rc) : 0;
}

/* The transaction reads and writes go to: the step if one is open. */
static MDB_txn *current(struct kv_lmdb *l)
{
	if (l->step)
		return l->step;
	return begin_group(l) ? NULL : l->group;
}

static int lmdb_step_begin(struct kv *kv)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	if (atomic_load(&l->broken))
		return -EIO;
	int rc = begin_group(l);
	if (rc)
		return rc;
	rc = mdb_txn_begin(l->env, l->group, 0, &l->step);
	return rc ? fail("begin step", rc) : 0;
}

/* Write the claimed inode numbers' end into TXN, if a claim is unsaved. */
static int save_next_ino(struct kv_lmdb *l, MDB_txn *txn)
{
	if (!l->next_ino_unsaved)
		return 0;
	MDB_val k = {8, "next_ino"}, v = {sizeof(l->next_ino), &l->next_ino};
	int rc = mdb_put(txn, l->dbi[KV_META], &k, &v, 0);
	if (rc)
		return fail("put next_ino", rc);
	l->next_ino_unsaved = false;
	return 0;
}

static int lmdb_step_end(struct kv *kv, int commit)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	MDB_txn *step = l->step;
	l->step = NULL;
	if (!step)
		return 0;
	if (!commit) {
		mdb_txn_abort(step);
		return 0;
	}
	int rc = save_next_ino(l, step);
	if (rc) {
		mdb_txn_abort(step);
		return rc;
	}
	rc = mdb_txn_commit(step);
	if (rc)
		return fail("commit step", rc);
	l->unsynced++;
	return 0;
}

static int lmdb_get(struct kv *kv, enum kv_table t, const void *key,
		    size_t klen, struct kv_val *out)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	MDB_txn *txn = current(l);
	if (!txn)
		return -EIO;
	MDB_val k = {klen, (void *)key}, v;
	int rc = mdb_get(txn, l->dbi[t], &k, &v);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return fail("get", rc);
	out->data = v.mv_data;
	out->len = v.mv_size;
	return 0;
}

static int lmdb_put(struct kv *kv, enum kv_table t, const void *key,
		    size_t klen, const void *val, size_t vlen)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	MDB_txn *txn = current(l);
	if (!txn)
		return -EIO;
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	int rc = mdb_put(txn, l->dbi[t], &k, &v, 0);
	if (!l->step && !rc)
		l->unsynced++;
	return rc ? fail("put", rc) : 0;
}

static int lmdb_del(struct kv *kv, enum kv_table t, const void *key,
		    size_t klen)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	MDB_txn *txn = current(l);
	if (!txn)
		return -EIO;
	MDB_val k = {klen, (void *)key};
	int rc = mdb_del(txn, l->dbi[t], &k, NULL);
	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (!l->step && !rc)
		l->unsynced++;
	return rc ? fail("del", rc) : 0;
}

/* One process writes a store on LMDB: a read and a write in the open
 * transaction add. */
static int lmdb_add(struct kv *kv, enum kv_table t, const void *key, size_t klen,
		    int64_t delta, const void *init, size_t ilen)
{
	struct kv_val v;
	int rc = lmdb_get(kv, t, key, klen, &v);
	if (rc == -ENOENT && init) {
		assert(kv_count_is(init, ilen, delta));
		return lmdb_put(kv, t, key, klen, init, ilen);
	}
	if (rc)
		return rc;
	uint8_t *val = malloc(v.len + VARINT_MAX);
	if (!val)
		return -ENOMEM;
	size_t vlen;
	rc = kv_count_added(v.data, v.len, delta, val, &vlen);
	if (!rc)
		rc = lmdb_put(kv, t, key, klen, val, vlen);
	free(val);
	return rc;
}

static int lmdb_scan(struct kv *kv, enum kv_table t, const void *start,
		     size_t slen, kv_scan_fn fn, void *ctx)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	MDB_txn *txn = current(l);
	if (!txn)
		return -EIO;
	MDB_cursor *c;
	int rc = mdb_cursor_open(txn, l->dbi[t], &c);
	if (rc)
		return fail("cursor", rc);
	MDB_val k = {slen, (void *)start}, v;
	rc = slen ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
		  : mdb_cursor_get(c, &k, &v, MDB_FIRST);
	int ret = 0;
	while (rc == 0) {
		ret = fn(ctx, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
		if (ret)
			break;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	if (ret < 0)
		return ret;
	if (rc && rc != MDB_NOTFOUND)
		return fail("scan", rc);
	return 0;
}

static int lmdb_sync_start(struct kv *kv)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	if (atomic_load(&l->broken))
		return -EIO;
	if (!l->group)
		return 0;
	int rc = save_next_ino(l, l->group);
	if (rc)
		return rc;
	MDB_txn *g = l->group;
	l->group = NULL;
	rc = mdb_txn_commit(g);
	if (rc) {
		l->next_ino_unsaved = true; /* the group with it is gone */
		return fail("commit", rc);
	}
	l->unsynced = 0;
	atomic_fetch_add(&l->committed, 1);
	return 0;
}

static int lmdb_sync_finish(struct kv *kv)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	if (atomic_load(&l->flushed) >= atomic_load(&l->committed) && !atomic_load(&l->broken))
		return 0;
	pthread_mutex_lock(&l->finish_lock);
	int rc = 0;
	uint64_t upto = atomic_load(&l->committed);
	if (atomic_load(&l->broken)) {
		rc = -EIO;
	} else if (atomic_load(&l->flushed) < upto) {
		if (fdatasync(l->sync_fd)) {
			atomic_store(&l->broken, true);
			rc = fail("sync (no more changes until the store is opened again)", errno);
		} else {
			atomic_store(&l->flushed, upto);
		}
	}
	pthread_mutex_unlock(&l->finish_lock);
	return rc;
}

static int lmdb_sync(struct kv *kv)
{
	int rc = lmdb_sync_start(kv);
	return rc ? rc : lmdb_sync_finish(kv);
}

static int lmdb_claim_inos(struct kv *kv, uint64_t near, uint64_t n, uint64_t *first)
{
	(void)near; /* one sequence: every number is in partition 0 */
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	if (!l->next_ino) {
		MDB_txn *txn = current(l);
		if (!txn)
			return -EIO;
		MDB_val k = {8, "next_ino"}, v;
		int rc = mdb_get(txn, l->dbi[KV_META], &k, &v);
		if (rc == MDB_NOTFOUND) {
			l->next_ino = 1;
		} else if (rc) {
			return fail("get next_ino", rc);
		} else if (v.mv_size != sizeof(l->next_ino)) {
			nadb_log("lmdb: the next inode number's record is damaged (%zu bytes)",
				 v.mv_size);
			return -EIO;
		} else {
			memcpy(&l->next_ino, v.mv_data, sizeof(l->next_ino));
		}
	}
	*first = l->next_ino;
	l->next_ino += n;
	l->next_ino_unsaved = true;
	return 0;
}

static uint64_t lmdb_unsynced(struct kv *kv)
{
	return ((struct kv_lmdb *)kv)->unsynced;
}

static void lmdb_close(struct kv *kv)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;
	if (l->step)
		mdb_txn_abort(l->step);
	if (l->group)
		mdb_txn_abort(l->group);
	(void)lmdb_sync_finish(kv); /* said if it fails */
	mdb_env_close(l->env);
	close(l->sync_fd);
	pthread_mutex_destroy(&l->finish_lock);
	free(l);
}

static const struct kv_ops lmdb_ops = {
	.step_begin = lmdb_step_begin,
	.step_end = lmdb_step_end,
	.get = lmdb_get,
	.put = lmdb_put,
	.add = lmdb_add,
	.del = lmdb_del,
	.scan = lmdb_scan,
	.scan_prefix = kv_scan_prefix_by_scan,
	.sync = lmdb_sync,
	.sync_start = lmdb_sync_start,
	.sync_finish = lmdb_sync_finish,
	.unsynced = lmdb_unsynced,
	.claim_inos = lmdb_claim_inos,
	.close = lmdb_close,
};

static int open_tables(struct kv_lmdb *l)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
	if (rc)
		return fail("begin", rc);
	for (int t = 0; t < KV_NTABLES; t++) {
		rc = mdb_dbi_open(txn, kv_table_name(t), MDB_CREATE, &l->dbi[t]);
		if (rc) {
			mdb_txn_abort(txn);
			return fail(kv_table_name(t), rc);
		}
	}
	rc = mdb_txn_commit(txn);
	return rc ? fail("commit tables", rc) : 0;
}

int kv_lmdb_open(const char *dir, struct kv **out)
{
	if (mkdir(dir, 0700) && errno != EEXIST) {
		int e = errno;
		nadb_log("%s: cannot create: %s", dir, strerror(e));
		return -e;
	}
	struct kv_lmdb *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->kv.ops = &lmdb_ops;
	pthread_mutex_init(&l->finish_lock, NULL);
	int rc = mdb_env_create(&l->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(l->env, KV_NTABLES + 8);
	if (!rc)
		rc = mdb_env_set_mapsize(l->env, KV_LMDB_MAP_SIZE);
	if (!rc)
		rc = mdb_env_open(l->env, dir, MDB_NOLOCK | MDB_NORDAHEAD | MDB_NOMETASYNC, 0600);
	if (rc) {
		int e = fail(dir, rc);
		mdb_env_close(l->env);
		pthread_mutex_destroy(&l->finish_lock);
		free(l);
		return e;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	l->sync_fd = open(path, O_RDWR | O_CLOEXEC);
	if (l->sync_fd < 0) {
		rc = -errno;
		nadb_log("%s: %s", path, strerror(errno));
	}
	if (!rc)
		rc = open_tables(l);
	if (rc) {
		if (l->sync_fd >= 0)
			close(l->sync_fd);
		mdb_env_close(l->env);
		pthread_mutex_destroy(&l->finish_lock);
		free(l);
		return rc;
	}
	*out = &l->kv;
	return 0;
}
