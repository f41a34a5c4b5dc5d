/* follow.c -- several daemons on one store: one writes, the others follow.
 *
 * A store on Redis is written by the one process that holds its lock
 * (lock.c).  Another daemon that mounts it then follows, read-only: its
 * backend keeps nothing it read, so every read asks Redis and sees the
 * writer's last sync; and this file's thread hears of each of the
 * writer's syncs through a change notice naming the rows it wrote
 * (backend.h: publish, follow).  What the follower's kernel caches is the
 * only thing left that could be stale, so each notice becomes what the
 * kernel must forget: an inode whose record changed (its attributes and
 * pages), a directory entry that came, went or names another inode (a
 * cached miss included).  A notice can be lost (a reconnect): then every
 * inode the kernel holds is forgotten, and the kernel's own timeouts,
 * which a follower's daemon keeps short (its lease), bound the rest.
 *
 * The writer's side is in store.c: while followers are counted, the
 * flusher syncs every FOLLOWED_FLUSH_MS, so that what the writer's
 * clients did reaches the followers that soon.
 */
#include "clock.h"
#include "log.h"
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FOLLOW_WAIT_MS 200 /* ms: longest wait for a notice before the thread
			    * looks whether it is told to stop */
#define FORMAT_CHECK_MS 1000 /* ms: how often a follower reads the store's
			      * format record again */

/* The tables whose rows a follower's kernel or engine must hear about:
 * an inode's record, directory entries, and the expiry index (for the
 * earliest expiry, expiry_first). */
const uint32_t store_followed_tables =
	1u << KV_INODES | 1u << KV_DIRENTS | 1u << KV_EXPIRY;

struct follower {
	struct nadb_follow_hooks hooks;
	pthread_t thread;
	atomic_bool stop;
};

/* One row key of a notice: what the kernel and the engine must forget. */
static int forget_row(void *ctx, enum kv_table t, const void *key, size_t klen)
{
	struct nadb_store *st = ctx;
	const struct nadb_follow_hooks *h = &st->follower->hooks;
	if (klen < INO_KEY_LEN)
		return 0;
	uint64_t ino = kv_key_ino(key);
	if (t == KV_INODES && klen == INO_KEY_LEN) {
		h->inode(h->ctx, ino);
	} else if (t == KV_DIRENTS && klen > INO_KEY_LEN && klen <= NAME_KEY_MAX) {
		char name[NADB_NAME_MAX + 1];
		memcpy(name, (const char *)key + INO_KEY_LEN, klen - INO_KEY_LEN);
		name[klen - INO_KEY_LEN] = '\0';
		h->entry(h->ctx, ino, name);
	} else if (t == KV_EXPIRY) { /* a key may expire before what we knew */
		int64_t when = (int64_t)ino;
		pthread_mutex_lock(&st->meta_lock);
		if (st->expiry_first && when < st->expiry_first)
			st->expiry_first = when;
		pthread_mutex_unlock(&st->meta_lock);
	}
	return 0;
}

/* Notices were lost: forget every inode the kernel holds, and the
 * earliest expiry. */
static void forget_everything(struct nadb_store *st)
{
	const struct nadb_follow_hooks *h = &st->follower->hooks;
	pthread_mutex_lock(&st->meta_lock);
	st->expiry_first = 0;
	pthread_mutex_unlock(&st->meta_lock);
	pthread_mutex_lock(&st->krefs_lock);
	for (size_t i = 0; i < st->krefs_cap; i++)
		if (st->krefs[i].ino)
			h->inode(h->ctx, st->krefs[i].ino);
	pthread_mutex_unlock(&st->krefs_lock);
	h->inode(h->ctx, NADB_ROOT_INO);
}

/* A writer of a newer nadb may have taken the store over and upgraded it:
 * its rows would then be misread here, so the follower stops serving (the
 * daemon exits, as when a writer loses its lock) rather than serve them.
 * Checked every FORMAT_CHECK_MS.  A record that cannot be read now is
 * checked again next time, and a missing one must be missing twice in a
 * row (a server restarting from its AOF may answer before it loaded). */
struct format_watch {
	uint64_t checked_ms;
	bool missing; /* at the last check */
};

static void check_format(struct nadb_store *st, struct format_watch *w)
{
	uint64_t now = monotonic_ms();
	if (now - w->checked_ms < FORMAT_CHECK_MS)
		return;
	w->checked_ms = now;
	char why[WHY_SIZE];
	int rc = store_format_check(st, why);
	if (rc == -EPROTO || (rc == -ENOENT && w->missing))
		store_give_up(st, why);
	w->missing = rc == -ENOENT;
}

static void *follow_main(void *arg)
{
	struct nadb_store *st = arg;
	bool failing = false;
	struct format_watch format = {.checked_ms = monotonic_ms()};
	while (!atomic_load(&st->follower->stop) && !nadb_store_lost(st)) {
		if (!failing) /* else Redis is out of reach: no more waits on it */
			check_format(st, &format);
		int rc = st->kv->ops->follow(st->kv, FOLLOW_WAIT_MS, forget_row, st);
		nadb_store_drop_reads(st);
		if (rc == -ESTALE)
			forget_everything(st);
		if (rc && rc != -ESTALE && !failing) /* said once until it works again */
			nadb_log("%s: not hearing the writer's changes (the kernel's caches "
				 "lapse within %s meanwhile): %s", st->dir, "the lease",
				 strerror(-rc));
		else if ((!rc || rc == -ESTALE) && failing)
			nadb_log("%s: hearing the writer's changes again", st->dir);
		failing = rc && rc != -ESTALE;
	}
	return NULL;
}

void nadb_store_drop_reads(struct nadb_store *st)
{
	/* the replies our reads were answered with, held until a sync
	 * (which a follower never makes otherwise) lets go of them */
	pthread_mutex_lock(&st->meta_lock);
	(void)st->kv->ops->sync(st->kv);
	pthread_mutex_unlock(&st->meta_lock);
}

bool nadb_store_is_follower(const struct nadb_store *st)
{
	return st->following;
}

uint64_t nadb_store_followers(struct nadb_store *st)
{
	return atomic_load(&st->followers);
}

int nadb_store_start_following(struct nadb_store *st, const struct nadb_follow_hooks *h)
{
	if (!st->following || st->follower)
		return -EINVAL;
	struct follower *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->hooks = *h;
	atomic_init(&f->stop, false);
	st->follower = f;
	int rc = -pthread_create(&f->thread, NULL, follow_main, st);
	if (rc) {
		st->follower = NULL;
		free(f);
	}
	return rc;
}

void nadb_store_stop_following(struct nadb_store *st)
{
	struct follower *f = st->follower;
	if (!f)
		return;
	atomic_store(&f->stop, true);
	pthread_join(f->thread, NULL);
	if (st->kv->ops->unfollow)
		st->kv->ops->unfollow(st->kv);
	st->follower = NULL;
	free(f);
}
