/* store_int.h -- what the engine's own files share and nobody else sees:
 * the store context, the inode record, and the key encodings of the
 * metadata tables (backend.h names the tables). */
#ifndef NADB_STORE_INT_H
#define NADB_STORE_INT_H

#include "backend.h"
#include "index.h"
#include "chunk.h"
#include "store.h"

#include <pthread.h>
#include <stdatomic.h>

/* The inode table's value, followed by the payload: a regular file's chunk
 * hashes (CHUNK_HASH_LEN each, one per chunk_size bytes of size; all-zero
 * for a hole) or a symlink's target. */
struct inode_rec {
	uint32_t mode, uid, gid, nlink;
	uint64_t rdev, size;
	uint64_t parent; /* directories: ".."; others: 0 */
	int64_t atime, mtime, ctime, btime; /* ns since the epoch */
	int64_t expires;     /* keys: ns since the epoch, 0: never */
	int64_t ttl_default; /* directories: ns every new key below gets, 0: none */
	uint64_t stored;     /* regular files: bytes on disk as of the last commit,
	                        shared chunks counted by share (st_blocks) */
	uint32_t flags;      /* INODE_* */
	uint8_t level; /* directories: enum nadb_level */
	uint8_t reserved[3];
};

/* inode_rec.flags: a key's expiry was last given as user.ttl.  A copy
 * from a folder that holds only user.ttl sets it and then removes
 * user.expires, which the key lists and the source lacks: that removal
 * must not undo the TTL (expiry.c). */
#define INODE_TTL_GIVEN 1u

/* Partitions the store keeps a block of claimed inode numbers for. */
#define INO_BLOCKS 8

struct inode {
	struct inode_rec r;
	uint8_t *payload; /* malloc'd copy, or NULL */
	size_t payload_len;
};

/* A directory entry's value, as the code holds it. */
struct dirent_val {
	uint64_t ino;
	uint32_t mode; /* type bits, for readdir without a second lookup */
};

struct ofile;

struct redis_lock;
struct follower;

/* Syncs whose results are kept for their waiters: no sync begins while
 * this many are not yet punched, and a waiter this far behind (asleep
 * while the rest ran) takes the failure count's word instead. */
#define SYNC_RESULTS 64

struct nadb_store {
	char *dir;   /* the store's name: a directory's realpath, or a Redis URL
	                without its password (nadb_store_name) */
	int lock_fd; /* a directory's STORE/lock, flock'ed; else -1 */
	struct redis_lock *rlock; /* a Redis store's lock and its keeper */
	atomic_bool lock_lost;    /* the Redis lock is another's, or this follower
				     may not read the store: no more steps (set
				     by store_give_up only) */
	_Atomic(nadb_lost_fn) on_lost; /* nadb_store_on_lost; its ctx first */
	void *on_lost_ctx;
	atomic_bool on_lost_told;      /* on_lost was called (once only) */
	atomic_uint_fast64_t pending_seq; /* the next pending chunk row's number */
	/* Who we are in the lock's text, beside pid and host (lock.c): our
	 * pid namespace and a random token, so that no two processes' texts
	 * are the same, whatever their pids and hostnames. */
	char lock_self[96];
	struct nadb_options opt;
	size_t chunk_size;
	struct kv *kv;
	struct blobs *blobs;
	struct chunker chunks;
	/* The indexes that hear about changes to the tree (index.h), set at
	 * open and only read afterwards. */
	const struct index_hooks *const *indexes;
	size_t nindexes;

	/* meta_lock: scope is every kv call (the open group of steps), the
	 * chunker and the inode block.  Taken after an ofile's lock, before
	 * files_lock. */
	pthread_mutex_t meta_lock;
	/* Inode numbers claimed (claim_inos) and not given out yet, a block
	 * for each of the partitions numbered in last: [next, end). */
	struct ino_block {
		uint32_t part;
		uint64_t next, end;
	} ino_blocks[INO_BLOCKS];
	unsigned ino_block_victim; /* the block a new partition's replaces */

	/* files_lock: scope is the open-file table below and each ofile's
	 * refs.  Innermost but for ofile->attr_lock. */
	pthread_mutex_t files_lock;
	struct ofile **files;
	size_t nfiles_buckets;

	atomic_uint_fast64_t buffered; /* bytes held in write buffers */

	/* krefs_lock: scope is the table of the kernel's references below
	 * and the queue of forgotten inodes.  A leaf lock (taken under
	 * meta_lock by unlink). */
	pthread_mutex_t krefs_lock;
	struct kref {
		uint64_t ino, n;
	} *krefs; /* open addressing, ino 0: free */
	size_t nkrefs, krefs_cap;
	/* Inodes the kernel forgot, to delete if no name or handle is left
	 * (file_delete_forgotten): deleted a batch at a time, not one step
	 * per FORGET. */
	uint64_t *forgotten;
	size_t nforgotten, forgotten_cap;
	/* A follower whose daemon took the store over: its writer's handle,
	 * which has its references and gets every later one (set once, by
	 * nadb_adopt_kernel_refs; requests under way may still name us). */
	struct nadb_store *krefs_to;

	/* compact_lock: one compaction at a time (flusher, .ctl or tool). */
	pthread_mutex_t compact_lock;

	/* pool_lock: scope is the pool of free chunk-sized buffers, kept so
	 * that big writes reuse mapped memory instead of faulting in fresh
	 * pages for every chunk.  A leaf lock. */
	pthread_mutex_t pool_lock;
	void *pool[32];
	unsigned npool;

	/* flush_lock: scope is the flusher's and the reaper's start/stop
	 * state and the reaper's callback. */
	pthread_mutex_t flush_lock;
	pthread_cond_t flush_cond, reap_cond;
	pthread_t flusher, reaper;
	bool flusher_running, flusher_stop, reaper_running, reaper_stop;
	nadb_reaped_fn reaped_fn;
	void *reaped_ctx;
	atomic_uint_fast64_t reaped; /* keys reaped since the store opened */
	/* The earliest expiry time in the expiry index, or an earlier one (a
	 * step undone or a key deleted leaves it early, which costs only a
	 * look at the index); 0: not known.  While it is in the future,
	 * readdir and the reaper need not read the index, whose rows are
	 * spread over partitions.  This process is the store's only writer.
	 * Under meta_lock. */
	int64_t expiry_first;

	/* Frames of freed chunks, punched once the group that freed them is
	 * durable (store.c).  Under meta_lock.  Entries from freed_step on
	 * belong to the open step and go if it is undone. */
	struct freed_frame {
		uint8_t hash[CHUNK_HASH_LEN];
		struct blob_loc loc;
	} *freed;
	size_t nfreed, freed_cap, freed_step;
	bool keep_freed; /* fsck --repair: punch nothing (fsck.c) */

	/* Group commit (sync_and_punch).  Syncs are numbered from 1 as they
	 * begin.  Sync n is "cut" once it took the group of steps to commit:
	 * steps after are the next one's, and until then whoever asks for a
	 * sync joins it, so N concurrent fsyncs cost one commit, not N.  At
	 * most one sync is begun and not cut; the next begins as soon as it
	 * is cut.  Sync n is "durable" once its commit is (its result in
	 * ring[n % SYNC_RESULTS].rc) and "punched" once what it freed is
	 * punched too; syncs_durable and syncs_punched: it and every sync
	 * before it.  sync_failures counts the syncs that failed (their
	 * steps are lost), last_failure_rc says how: see nadb_store_sync_seen.
	 * Under meta_lock; synced_cond is broadcast when these change. */
	uint64_t syncs_begun, syncs_cut, syncs_durable, syncs_punched;
	atomic_uint_fast64_t sync_failures; /* (read anywhere) */
	atomic_uint_fast64_t failures_told; /* to nadb_store_sync's callers */
	int last_failure_rc;
	struct sync_slot {
		int rc;
		bool durable, punched; /* for syncs after syncs_durable/_punched */
	} ring[SYNC_RESULTS];
	atomic_uint_fast64_t syncs_asked; /* calls of sync_and_punch */
	pthread_cond_t synced_cond;
	atomic_uint_fast64_t punched; /* bytes punched by every sync */
	/* Rows of sessions gone are to be settled at the next sync (a beat
	 * said one died, or a pass failed).  Set by any thread. */
	atomic_bool sessions_owed;
	int64_t settle_next_ns; /* monotonic: no pass before (meta_lock) */
	bool settling;   /* settling dropped references (store.c): the ends
			    of its own steps do not settle again */
	/* From the open of a follower that takes its store over
	 * (nadb_store_take_over) until it has adopted the follower's kernel
	 * references (or closed): the follower's handle, whose kernel
	 * references and open files hold inodes as ours do (meta_lock). */
	struct nadb_store *heir_of;

	/* STORE/reserve: blocks kept so that a metadata commit (deletes
	 * included) finds room on a full disk.  reserve_fd is constant;
	 * reserve_held changes under meta_lock and is read anywhere. */
	int reserve_fd;
	atomic_bool reserve_held;
	atomic_bool floor_said; /* "keeping the reserve free" was logged */

	/* Several daemons on one store (follow.c).  following: this one
	 * follows another's writes, read-only (constant); follower: its
	 * thread, set and cleared by the main thread.  followers: the
	 * writer's, as the flusher last counted them (it asks the backend
	 * now and then); while there are any it syncs every
	 * FOLLOWED_FLUSH_MS. */
	bool following;
	struct follower *follower;
	atomic_uint_fast64_t followers;

	/* Told how far fsck and compaction are; set before either runs. */
	nadb_progress_fn progress;
	void *progress_ctx;
};

static inline void store_progress(struct nadb_store *st, const char *phase,
				  uint64_t done, uint64_t total)
{
	if (st->progress)
		st->progress(st->progress_ctx, phase, done, total);
}

/* The tables whose rows' keys the writer tells its followers (follow.c). */
extern const uint32_t store_followed_tables;

/* Lock the store ARG (a directory's STORE/lock, or a Redis store's lock
 * key) for ST (lock.c): -EBUSY if a process at work holds it; one that
 * is going away is waited for.  st->dir must be the store's name
 * (nadb_store_name).  unlock_store lets go (HELD: it was taken). */
int lock_store(struct nadb_store *st, const char *arg);
void unlock_store(struct nadb_store *st, bool held);
/* From now on the lock's keeper keeps KV's session alive (backend.h,
 * beat) with each renewal of the lock, and tells store_sessions_died of
 * one that died; NULL: no more (before KV closes). */
void lock_beat_session(struct nadb_store *st, struct kv *kv);
/* A session died: what it left is settled at the next sync (store.c,
 * "sessions"), which this asks for. */
void store_sessions_died(struct nadb_store *st);
/* May ST change the store?  A Redis store's lock is a lease: once Redis
 * has not confirmed it for a while, another daemon could take it over, so
 * its holder stops acknowledging changes and sends no more syncs.  0, or
 * -EIO (logged once a lapse) until a renewal gets through. */
int lock_lease_check(struct nadb_store *st);
/* May this process change the store now: its lock is not another's and
 * its lease holds?  0 or -EIO.  Every change checks it, steps and syncs
 * and what compaction does to the blob area alike. */
int store_may_change(struct nadb_store *st);
/* The time NS ns from now on CLOCK (a pthread_cond_timedwait deadline). */
static inline struct timespec clock_in(clockid_t clock, int64_t ns)
{
	struct timespec t;
	clock_gettime(clock, &t);
	t.tv_sec += ns / 1000000000LL;
	t.tv_nsec += ns % 1000000000LL;
	t.tv_sec += t.tv_nsec / 1000000000L;
	t.tv_nsec %= 1000000000L;
	return t;
}

/* ST's Redis lock is another's now (WHY, logged the first time, with a
 * call of st->on_lost): no more steps or syncs. */
void store_lose_lock(struct nadb_store *st, const char *why);
/* The same, for a store this process must stop serving for another reason
 * (WHY is the whole of it): store_give_up(st, "its writer upgraded it"). */
void store_give_up(struct nadb_store *st, const char *why);
/* Is the store still of the format this process opened it in (store.c)?
 * 0; -EPROTO if its format record now says another (a newer writer
 * upgraded it), -ENOENT if it has none (the store was deleted); another
 * negative errno if it could not be read.  WHY (WHY_SIZE bytes) says
 * which, for store_give_up.  Takes meta_lock. */
#define WHY_SIZE 200
int store_format_check(struct nadb_store *st, char *why);
/* The generation of the Redis store lock ST holds (0: none). */
long long lock_generation(const struct nadb_store *st);
/* Does a daemon serving a mount hold the lock of the Redis store URL
 * (not a tool, nor one closing)?  1, 0, or a negative errno. */
int lock_held_by_daemon(const char *url);

/* Key encodings: a big-endian inode number first, so that one inode's
 * entries sort together and a directory lists in name order. */
#define INO_KEY_LEN 8
#define NAME_KEY_MAX (INO_KEY_LEN + NADB_NAME_MAX)
#define LINK_KEY_MAX (INO_KEY_LEN + NAME_KEY_MAX)
size_t ino_key(uint8_t key[INO_KEY_LEN], uint64_t ino);
size_t name_key(uint8_t key[NAME_KEY_MAX], uint64_t ino, const char *name);

int64_t now_ns(void);

/* The version in the format record of a store made now (a directory's
 * KV_META "format").  1: inode records raw; 2: compact (inode.c), which
 * this version writes and which older ones cannot read, so opening a
 * version 1 store moves it to 2; 3: a namespace's contents counted in its
 * own counters only (stats.c), so opening an older store takes them out
 * of its databases' and root's; 4: the tag index kept per partition
 * (tags.c), so opening an older store rebuilds it; 5: references dropped
 * in a namespace's partition noted there first (chunk.c, KV_CHUNK_DROPS),
 * a table older versions would ignore (leaking the chunks); 6: directory
 * entries and chunk records compact (dirent_encode, chunk.c) and frame
 * headers without the hash (chunk.c), read either way, so opening an
 * older store rewrites nothing but this record. */
#define STORE_FORMAT_VERSION 6

/* A group is also committed once this many steps (a key's create, a
 * value's commit, ...) piled up, whatever flush_interval says: LMDB keeps
 * a copy of every page a write transaction touched in memory until it
 * commits, and never gives that memory back (it keeps the buffers for the
 * next transactions), so this bounds the daemon's memory, and the free
 * pages a commit leaves in the metadata file, when keys come fast into a
 * big store (100,000 steps let it reach 96 MiB at a million keys, this
 * 74). */
#define MAX_UNSYNCED_STEPS 16384

/* An inode record's encoding (inode.c): attributes then payload.
 * inode_encode writes the attributes compactly (INODE_REC_MAX bytes at
 * most) and returns their length; inode_decode reads either encoding,
 * pointing *PAYLOAD into VAL, or returns -EIO for a damaged record. */
/* A directory entry's encoding (tree.c): the inode number as a varint,
 * then the type bits (mode >> 12) a byte: DIRENT_VAL_MAX bytes at most, 7
 * for a key of a namespace on Redis (its number carries the partition),
 * 2 to 5 on a directory.  Stores before format 6 hold struct dirent_val raw
 * (DIRENT_OLD_LEN bytes), which dirent_decode reads too; it returns 0,
 * or -EIO for a value that is neither. */
#define DIRENT_VAL_MAX (10 + 1)
#define DIRENT_OLD_LEN 16
size_t dirent_encode(const struct dirent_val *d, uint8_t out[DIRENT_VAL_MAX]);
int dirent_decode(const void *val, size_t len, struct dirent_val *d);

#define INODE_REC_MAX (4 + 16 * 10)
size_t inode_encode(const struct inode_rec *r, uint8_t out[INODE_REC_MAX]);
int inode_decode(const void *val, size_t vlen, struct inode_rec *r, const uint8_t **payload,
		 size_t *plen);

/* Inode records; callers hold meta_lock and run inside a step for writes. */
int inode_get(struct nadb_store *st, uint64_t ino, struct inode *out);
/* The record alone, its chunk list not copied. */
int inode_get_rec(struct nadb_store *st, uint64_t ino, struct inode_rec *r);
int inode_put(struct nadb_store *st, uint64_t ino, const struct inode_rec *r,
	      const void *payload, size_t len);
void inode_release(struct inode *in);
/* "/DB/NS/KEY" of INO, for messages, from the links table (its first
 * name).  Under meta_lock.  A name that cannot be found gives
 * "(inode N)/rest" and a negative errno. */
int inode_path(struct nadb_store *st, uint64_t ino, char *out, size_t size);
/* The first name of INO in the links table: its directory into *PARENT,
 * its name into NAME (NADB_NAME_MAX + 1 bytes); -ENOENT if it has none.
 * Under meta_lock. */
int inode_first_name(struct nadb_store *st, uint64_t ino, uint64_t *parent, char *name);
void attr_of_inode(const struct nadb_store *st, uint64_t ino,
		   const struct inode_rec *r, struct nadb_attr *a);
/* Delete every key of table T that starts with INO's key, calling EACH
 * (if not NULL) on each value first. */
int delete_prefixed(struct nadb_store *st, enum kv_table t, uint64_t ino,
		    int (*each)(struct nadb_store *, const void *val, size_t vlen));
/* Remove an inode whose last link went (chunks, xattrs and record). */
int inode_delete(struct nadb_store *st, uint64_t ino);
/* The names of inode INO: (parents[i], names[i]) for i < n.  Under
 * meta_lock.  link_list_free releases them (also after an error). */
struct link_list {
	uint8_t prefix[INO_KEY_LEN];
	uint64_t *parents;
	char (*names)[NADB_NAME_MAX + 1];
	size_t n, cap;
};
int inode_links(struct nadb_store *st, uint64_t ino, struct link_list *l);
void link_list_free(struct link_list *l);

/* Permission checks the kernel cannot make (access.c).  Is WHO in group
 * GID (primary or supplementary)? */
bool caller_in_group(const struct nadb_caller *who, uint32_t gid);
/* May WHO (NULL: a trusted tool) read (4), write (2) or search (1) --
 * the bits of WANT -- the inode R, as the kernel's default_permissions
 * would decide?  0 or -EACCES. */
#define ACCESS_R NADB_MAY_READ
#define ACCESS_W NADB_MAY_WRITE
#define ACCESS_X NADB_MAY_EXEC
int access_check(const struct inode_rec *r, const struct nadb_caller *who, unsigned want);
/* Could WHO unlink every name of key INO, as POSIX would let it (write
 * and search permission on each directory, and the sticky-bit rule)?
 * 0, -EACCES or -EPERM (logged, naming WHAT was asked).  Under meta_lock.
 * Everything that deletes or replaces a key behind the kernel's back --
 * an expiry -- asks this first. */
int access_may_remove(struct nadb_store *st, uint64_t ino,
		      const struct nadb_caller *who, const char *what);

/* Change a file's size, open or not (file.c). */
int file_set_size(struct nadb_store *st, uint64_t ino, uint64_t size);

/* Expiry (expiry.c).  A key whose time has come is gone for every
 * operation at once, before the reaper deletes it. */
static inline bool inode_expired(const struct inode_rec *r, int64_t now)
{
	return r->expires && r->expires <= now;
}
/* Is anything in the store past its expiry?  Lets readdir skip the check. */
bool expiry_any_due(struct nadb_store *st, int64_t now);
/* Move INO's row in the expiry index from OLD to NEW (0: none). */
int expiry_index(struct nadb_store *st, uint64_t ino, int64_t old, int64_t new_);
/* MODE once WHO's write, truncate or chown has cleared its set-id bits;
 * -EAGAIN if WHO's supplementary groups decide and are not known. */
int64_t setid_killed(uint32_t mode, uint32_t gid, const struct nadb_caller *who,
		     bool groups_known);
/* NOW + TTL (ns), or the latest expiry kept if that is later. */
int64_t expiry_after(int64_t now, int64_t ttl);
/* The default TTL for a key made in directory DIR (0: none). */
int64_t expiry_default_for(struct nadb_store *st, uint64_t dir);
/* Delete expired key INO now (all its names); *DIR (if not NULL): the
 * directory of its first name (the root if it had none).  Inside a step. */
int expiry_remove(struct nadb_store *st, uint64_t ino, nadb_reaped_fn fn, void *ctx,
		  uint64_t *dir);
/* The virtual xattrs user.ttl and user.expires.  A key's expiry is
 * changed only for a WHO that could remove it (NULL: trusted). */
int expiry_xattr_set(struct nadb_store *st, uint64_t ino, const char *name,
		     const char *value, size_t size, const struct nadb_caller *who);
ssize_t expiry_xattr_get(struct nadb_store *st, uint64_t ino, const char *name,
			 char *buf, size_t size);
int expiry_xattr_remove(struct nadb_store *st, uint64_t ino, const char *name,
			const struct nadb_caller *who);
/* Name INO (of MODE) NAME in directory PARENT, keeping the links table,
 * counters and tags in step, and hand out an inode number.  Inside a
 * step (tree.c; fsck's lost+found). */
int tree_put_entry(struct nadb_store *st, uint64_t parent, const char *name,
		   uint64_t ino, uint32_t mode);
/* A number for a new node of LEVEL in directory PARENT (its partition; a
 * namespace's directory gets a partition of its own). */
int tree_alloc_ino(struct nadb_store *st, uint64_t parent, int level, uint64_t *ino);
/* Make node NAME (of MODE; a symlink's TARGET) in directory PARENT for
 * WHO, as mknod, symlink and mkdir do: the checks, then the records.
 * Inside a step; *INO and *R get the new inode. */
int tree_make_node(struct nadb_store *st, uint64_t parent, const char *name,
		   uint32_t mode, uint64_t rdev, const char *target,
		   const struct nadb_caller *who, uint64_t *ino, struct inode_rec *r);
/* Walk PATH ("/DB/NS/.../KEY") for WHO, who must be able to search
 * every directory on the way (-EACCES): *PARENT gets the last directory,
 * NAME the last component (checked as a name), *INO the key it names or
 * 0 if none (an expired key counts as none).  -ENOENT, -ENOTDIR,
 * -EINVAL (no last component).  Under meta_lock. */
int tree_resolve_key(struct nadb_store *st, const char *path,
		     const struct nadb_caller *who, uint64_t *parent,
		     char name[NADB_NAME_MAX + 1], uint64_t *ino);
/* Remove (parent, name) and what it names.  Inside a step (tree.c). */
int tree_remove_entry(struct nadb_store *st, uint64_t parent, const char *name,
		      int64_t now);

/* Tags (tags.c).  Called inside steps, under meta_lock. */
int tags_xattr_set(struct nadb_store *st, uint64_t ino, const char *name,
		   const char *value, size_t size);
ssize_t tags_xattr_get(struct nadb_store *st, uint64_t ino, const char *name,
		       char *buf, size_t size);
int tags_xattr_remove(struct nadb_store *st, uint64_t ino, const char *name);
/* Number the tags that setting xattr NAME (user.tags or user.tag.*) of INO
 * to VALUE asks for, in a step of its own, before the step that sets it:
 * a tag's id is store-wide, the rest of the index is per partition.
 * -EINVAL (and a log line) for a bad name; -EPERM for a directory. */
int tags_register(struct nadb_store *st, uint64_t ino, const char *name,
		  const char *value, size_t size);
/* fsck: the tag indexes against the keys' own tags, and with REPAIR
 * rebuilt (in a step of their own) if they differ. */
typedef void (*tags_problem_fn)(void *ctx, const char *line);
int tags_check(struct nadb_store *st, bool repair, tags_problem_fn problem, void *ctx,
	       uint64_t *problems);
/* Rebuild the tag indexes from the keys' own tags (a store of format 3 or
 * before, or a repair).  Inside a step. */
int tags_rebuild(struct nadb_store *st);
/* The tags in use (.stats).  Under meta_lock. */
int tags_in_use(struct nadb_store *st, uint64_t *n);
/* NUL-separated user.tags and user.tag.* names, list protocol. */
ssize_t tags_xattr_list(struct nadb_store *st, uint64_t ino, char *buf, size_t size);

/* Counters (stats.c), kept in step with the keys.  Inside steps. */
enum counter {
	C_KEYS, C_BYTES, C_DATABASES, C_NAMESPACES, C_DIRS,
	C_CHUNKS, C_CHUNK_BYTES, C_CHUNK_RAW,
	C_TAGS_V3, /* format <= 3: tags in use; 0 since (tags_in_use counts them) */
	C_EXPIRING, C_REAPED,
	C_COUNT
};
struct nadb_stats;
/* The store's nadb_stats for its names (keys, databases, namespaces,
 * directories) only: its chunk figures are not read (statfs). */
int stats_names(struct nadb_store *st, struct nadb_stats *out);
int counters_add(struct nadb_store *st, uint64_t scope, enum counter c, int64_t delta);
/* Count DELTA in counter C where a key of directory DIR counts. */
int counters_add_in(struct nadb_store *st, uint64_t dir, enum counter c, int64_t delta);
/* Bring the counters of a store of format WAS up to this one (inside a
 * step): format 2 counted a namespace's contents in its database's and the
 * root's rows too, and keys with an expiry in the root's, so those are
 * taken out and the keys counted in their namespaces; format 3 counted the
 * tags in use in the root's row. */
int stats_upgrade(struct nadb_store *st, uint32_t was);
/* FACTS (if not NULL) tells a key's size and whether it expires, as fsck
 * read them (else each key's record is read): -ENOENT if no such inode. */
typedef int (*stats_facts_fn)(void *ctx, uint64_t ino, uint64_t *size, bool *expiring);
int stats_check(struct nadb_store *st, bool repair,
		void (*problem)(void *ctx, const char *line), void *ctx,
		stats_facts_fn facts, void *facts_ctx, uint64_t *problems);

/* Per-key metadata (keymeta.c): the read-only user.nadb.* xattrs. */
bool keymeta_is_name(const char *name);
ssize_t keymeta_list(struct nadb_store *st, uint64_t ino, char *buf, size_t size);
int keymeta_remove(struct nadb_store *st, uint64_t ino, const char *name);
ssize_t keymeta_get(struct nadb_store *st, uint64_t ino, const char *name, char *buf,
		    size_t size);
int keymeta_set(struct nadb_store *st, uint64_t ino, const char *name,
		const char *value, size_t size, const struct nadb_caller *who);
/* Bytes the chunk list LIST (N hashes) holds on disk, shares counted by
 * share.  Under meta_lock. */
uint64_t keymeta_stored(struct nadb_store *st, const uint8_t *list, size_t n);
/* user.nadb.hash of a value of SIZE bytes with chunk list LIST (N hashes). */
int keymeta_hash(uint64_t size, const uint8_t *list, size_t n, char out[NADB_HASH_TEXT]);

/* Open files (file.c).  file_is_open and file_is_being_written (some
 * handle was opened for writing) are called with meta_lock held. */
bool file_is_open(struct nadb_store *st, uint64_t ino);
bool file_is_being_written(struct nadb_store *st, uint64_t ino);
/* setattr changed INO's times: an open file must not undo that on commit.
 * MTIME FILE_TIME_KEPT: only the ctime changed (the file's pending writes
 * keep their mtime). */
#define FILE_TIME_KEPT INT64_MIN
void file_note_times(struct nadb_store *st, uint64_t ino, int64_t mtime,
		     int64_t ctime);
/* Does the kernel still hold a reference to INO (nadb_remember)? */
bool file_kernel_holds(struct nadb_store *st, uint64_t ino);
/* Delete INO if it has no name, no open handle and no kernel reference.
 * Takes meta_lock. */
void file_delete_if_unused(struct nadb_store *st, uint64_t ino);
/* Delete the inodes the kernel forgot that nothing holds any more.  Called
 * before a sync and before what reports on chunks (.stats, compaction),
 * so that a FORGET's deletion is seen as if it had been made at once.
 * Takes meta_lock: never call it with meta_lock held. */
void file_delete_forgotten(struct nadb_store *st);
/* Overlay the live size and times of an open file onto A. */
void file_overlay_attr(struct nadb_store *st, struct nadb_attr *a);
/* A batch (batch.c) replacing INO's value behind its handles: take hold
 * of the inode's shared open-file state, if it has one (NULL, *RC 0: it
 * is not open), locked against its readers and writers; -EBUSY if it
 * holds unsaved writes.  Before meta_lock.  file_let_go
 * reloads it from the store if CHANGED, and lets go; outside meta_lock. */
struct ofile *file_hold(struct nadb_store *st, uint64_t ino, int *rc);
void file_let_go(struct nadb_store *st, struct ofile *of, bool changed);
/* Commit every open file (store close). */
int file_commit_all(struct nadb_store *st);
/* Close the handles still open when the store closes (the kernel sent no
 * RELEASE for them: a lazy unmount, a daemon told to stop): committed,
 * then freed.  Outside every lock. */
int file_close_left_open(struct nadb_store *st);
/* Which sessions' rows a pass settles (store.c, "sessions"): those gone,
 * and with OWN_TOO ours.  The live ones are asked at the first question
 * (after the caller read its rows); free after each table's pass. */
struct settle_scope {
	struct nadb_store *st;
	bool own_too;
	bool asked;
	int rc;        /* asking failed: settle nothing but session 0's */
	bool failed;   /* asking failed once (kept across settle_scope_free) */
	uint32_t *live; /* sorted */
	size_t nlive;
};
bool settle_scope_has(struct settle_scope *sc, uint32_t session);
void settle_scope_free(struct settle_scope *sc);
/* Note inode INO, unlinked, as held open by our session (an orphan row:
 * deleted when we let go of it, or by whoever settles our rows once our
 * session is gone).  Inside a step. */
int store_put_orphan(struct nadb_store *st, uint64_t ino);
/* Release the references held by files that were open in the sessions
 * SC takes in (a crash). */
int file_recover_pending(struct nadb_store *st, struct settle_scope *sc);

/* Run a step: begin it, and end it committing iff RC is 0. */
int step_begin(struct nadb_store *st);
int step_end(struct nadb_store *st, int rc);
/* TAKE then USE (each given CTX): chunk references taken in partition 0,
 * then the step of a key's partition that names them (chunk.h).  One step
 * when APART is false (a key of partition 0: every key of a directory
 * store); else two, the first committed before the second begins, and if
 * the second fails, GIVE_BACK in a step of its own.  0 or the error. */
int steps_taking_refs(struct nadb_store *st, bool apart, int (*take)(void *ctx),
		      int (*use)(void *ctx), int (*give_back)(void *ctx), void *ctx);
/* May LEN more bytes be appended to the packs?  0, or -ENOSPC while the
 * reserve has been given to a metadata commit and free space is under it. */
int store_room_for(struct nadb_store *st, uint64_t len);
/* After an append failed with ENOSPC, outside meta_lock: commit the group
 * and punch what it freed.  1: space came back (try again), 0: none. */
int store_make_room(struct nadb_store *st);
/* After a step: wake the flusher early when the group has grown big. */
void store_note_step(struct nadb_store *st);

#endif
