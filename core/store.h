/* store.h -- the public face of the nadb storage engine.
 *
 * A store is a tree of inodes kept in a metadata index (LMDB behind the
 * backend seam) whose regular files hold lists of content-addressed chunks
 * kept in append-only pack segments.  fs/ (the FUSE daemon) and tools/ (the
 * nadb command) talk to the engine only through this header; neither knows
 * about LMDB, packs or chunks.
 *
 * Conventions:
 *   - every function returns 0 (or a byte count) on success and a negative
 *     errno on failure; errors worth a user's attention are logged once, in
 *     one line, by the engine;
 *   - inode numbers are the FUSE inode numbers: the root is NADB_ROOT_INO and
 *     numbers are never reused, so a generation number is not needed;
 *   - all functions are thread safe.
 *
 * Consistency model: every call that changes metadata is one atomic step of
 * the index.  Steps are grouped and made durable by nadb_store_sync() (called
 * by the background flusher every flush_interval seconds, by fsync and on
 * close of the store).  A crash rolls the store back to the last durable
 * group, never to the middle of a step.
 */
#ifndef NADB_STORE_H
#define NADB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* The version of nadb, as the daemon, the tool and the statistics show it. */
#define NADB_VERSION "0.1.0"

#define NADB_ROOT_INO 1ULL
#define NADB_NAME_MAX 255

/* Directory levels: what a directory is, by where it sits. */
enum nadb_level {
	NADB_LEVEL_ROOT = 0,      /* "/": holds databases */
	NADB_LEVEL_DB = 1,        /* "/DB": holds namespaces */
	NADB_LEVEL_NAMESPACE = 2, /* "/DB/NS": holds keys and directories */
	NADB_LEVEL_INNER = 3,     /* any directory below a namespace */
};

enum nadb_compress { NADB_COMPRESS_AUTO = 0, NADB_COMPRESS_OFF = 1 };

struct nadb_options {
	enum nadb_compress compress; /* auto: zlib where it saves >= 1/8 */
	int compress_level;          /* zlib level 1..9 (default 1) */
	unsigned buffer_mb;          /* bound on all write buffers together (default 64) */
	unsigned flush_interval;     /* seconds between durable commits (default 5) */
	unsigned chunk_kb;           /* chunk size for a NEW store (default 128); an
	                                existing store keeps the size it was made with */
	bool create;                 /* create STORE if missing (default true) */
	bool create_among_files;     /* create it even in a directory that holds
	                                other files (default false: -ENOTEMPTY) */
	unsigned reap_interval_ms;   /* reaper period (default 1000) */
	unsigned compact_garbage;    /* the flusher compacts segments with at least
	                                this % garbage (default 50; 0: never) */
	unsigned min_replicas;       /* Redis: a sync fails (-EIO) unless this many
	                                replicas of each primary it wrote to confirm
	                                it (WAIT); default 0: as many as are there */
	bool check_meta;             /* walk the metadata file in a child process
	                                before trusting it: -EUCLEAN if damaged */
	bool salvage_meta;           /* damaged: save what can be read into a new
	                                metadata file and go on (fsck --repair) */
	struct nadb_damage *damage;  /* if not NULL: what the check and salvage
	                                found, for the caller's report */
};

/* What opening found wrong with the metadata file and what salvage did. */
struct nadb_damage {
	bool damaged;          /* the walk failed; why says how */
	char why[256];
	bool salvaged;         /* a new metadata file now holds what was readable */
	uint64_t saved;        /* records copied */
	uint64_t lost;         /* records the tables' headers count but were not
	                          readable (an estimate: headers may be damaged too) */
	char kept[4096];       /* where the damaged file was moved */
	char **notes;          /* one line per unreadable stretch or dropped record */
	size_t nnotes;
};
void nadb_damage_free(struct nadb_damage *d);

/* Fill *o with the defaults above. */
void nadb_options_default(struct nadb_options *o);

struct nadb_attr {
	uint64_t ino;
	uint32_t mode; /* S_IFMT bits + permissions */
	uint32_t nlink;
	uint32_t uid, gid;
	uint64_t rdev;
	uint64_t size;
	uint64_t blocks; /* 512-byte blocks, for st_blocks */
	struct timespec atime, mtime, ctime, btime;
	uint8_t level;   /* directories: enum nadb_level */
	int64_t expires_ns; /* keys: when they expire (ns since the epoch), 0: never */
};

struct nadb_store;

/* Open (and, with o->create, create with mode 0700) the store in directory
 * DIR and lock it against every other process: -EBUSY if another process
 * (a daemon or a tool) holds it; the log line names its pid.  A directory
 * that holds other files and no store is not made one (-ENOTEMPTY) but
 * with o->create_among_files. */
int nadb_store_open(const char *dir, const struct nadb_options *o,
		    struct nadb_store **out);
/* The name of the store ARG, into BUF: a directory's realpath, or a
 * Redis URL without its password (redis://HOST:PORT/NAME).  It names the
 * store in messages and in the mount table (fsname nadb:NAME). */
int nadb_store_name(const char *arg, char *buf, size_t size);
/* Is ARG a store on a server (a redis:// URL) rather than a directory? */
bool nadb_store_is_url(const char *arg);
/* Several daemons on one store on Redis (follow.c): one holds its lock and
 * writes; the others open it as followers, read-only.  A follower reads
 * what the writer last synced (nothing it read is kept), never writes
 * (every change is -EROFS), and is told, while following, what its
 * kernel must forget: INODE's attributes and pages (also for every inode
 * the kernel holds, when notices were lost) and ENTRY, the name NAME in
 * directory PARENT.  The hooks run on the engine's thread, under no lock
 * of the caller's: they only queue.  A writer with followers syncs within
 * milliseconds of each change (store.c, FOLLOWED_FLUSH_MS). */
struct nadb_follow_hooks {
	void (*inode)(void *ctx, uint64_t ino);
	void (*entry)(void *ctx, uint64_t parent, const char *name);
	void *ctx;
};
int nadb_store_open_follower(const char *store, const struct nadb_options *o,
			     struct nadb_store **out);
bool nadb_store_is_follower(const struct nadb_store *st);
/* A writer's followers, as last counted (every second or so). */
uint64_t nadb_store_followers(struct nadb_store *st);
int nadb_store_start_following(struct nadb_store *st, const struct nadb_follow_hooks *h);
void nadb_store_stop_following(struct nadb_store *st);
/* A follower's writer is gone when nobody holds the lock of STORE (a URL,
 * as opened): its lease ran out (it died, or lost Redis), or it let go
 * (unmounted).  1 if so, 0 if a daemon holds it, or -errno.  nadbfs then
 * opens the store as its writer (nadb_store_take_over) and adopts the
 * follower's kernel references (nadb_adopt_kernel_refs). */
int nadb_store_writer_gone(const char *store);
/* nadb_store_open for FOLLOWER's takeover: what the dead writer left is
 * settled as by any open, but a key it had unlinked that FOLLOWER's
 * kernel or open files hold stays (ours from then on), as if ours did. */
int nadb_store_take_over(const char *store, const struct nadb_options *o,
			 struct nadb_store *follower, struct nadb_store **out);
/* A follower's reads hold what they were answered with until this lets go
 * of it: its follow thread calls it, and whoever keeps a follower's handle
 * open without one (a daemon that took the store over), now and then. */
void nadb_store_drop_reads(struct nadb_store *st);
/* A writer on Redis can lose the store to another daemon (its lease ran
 * out and the lock was taken, or a sync was fenced off: lock.c), and a
 * follower can find it upgraded to a format it does not read (follow.c):
 * from then on it changes nothing and what it holds may be stale.  FN(CTX) is called
 * once when that happens, from whichever thread found out (it must not
 * block: nadbfs has itself unmounted).  nadb_store_lost says whether it
 * has happened. */
typedef void (*nadb_lost_fn)(void *ctx);
void nadb_store_on_lost(struct nadb_store *st, nadb_lost_fn fn, void *ctx);
bool nadb_store_lost(const struct nadb_store *st);
/* Commit every open file, make everything durable and release the lock. */
int nadb_store_close(struct nadb_store *st);
/* Say in STORE/lock that this process serves MOUNTPOINT (absolute), or
 * that it is closing the store: a process that then finds the store
 * locked waits for it (a bounded time) once the mount is gone or it is
 * closing, instead of failing with -EBUSY (lock.c). */
void nadb_store_note_mount(struct nadb_store *st, const char *mountpoint);
void nadb_store_note_closing(struct nadb_store *st);
/* Wait until no process holds the store in DIR (0), at most TIMEOUT_S
 * seconds (-ETIMEDOUT). */
int nadb_store_wait_unlocked(const char *dir, unsigned timeout_s);
/* Make every completed step durable (packs fdatasync'ed, then the index
 * committed and synced).  Cheap when nothing changed.  Callers at the
 * same time share one commit (group commit).  A sync that failed since
 * the last call (the flusher's too) is told to the next caller, whose
 * changes it may have carried (see nadb_store_sync_seen). */
int nadb_store_sync(struct nadb_store *st);
/* A sync whose commit failed loses the steps it carried, which may
 * include changes made before any later sync was asked for.  As Linux
 * does for writeback errors, a caller that keeps *SEEN (set from
 * nadb_store_sync_failures when it started changing things) hears of
 * such a failure once: nadb_store_sync_seen returns its error if any
 * sync failed since *SEEN, and brings *SEEN up to date. */
uint64_t nadb_store_sync_failures(struct nadb_store *st);
int nadb_store_sync_seen(struct nadb_store *st, atomic_uint_fast64_t *seen);
/* Syncs asked for (fsync, the flusher, ...) since the store opened, and
 * syncs run: fewer when askers shared them. */
void nadb_store_sync_counts(struct nadb_store *st, uint64_t *asked, uint64_t *run);
/* Long operations (fsck, compaction) tell FN how far they are: in PHASE,
 * DONE of TOTAL units (TOTAL 0: not known).  Called often, with the
 * engine's locks held: FN only notes or draws, at its own pace.  Set by a
 * tool before it starts one; NULL: not told. */
typedef void (*nadb_progress_fn)(void *ctx, const char *phase, uint64_t done,
				 uint64_t total);
void nadb_store_set_progress(struct nadb_store *st, nadb_progress_fn fn, void *ctx);
/* Start/stop the background flusher thread (the daemon uses it; tools do
 * not).  The flusher calls nadb_store_sync every flush_interval seconds. */
int nadb_store_start_flusher(struct nadb_store *st);
void nadb_store_stop_flusher(struct nadb_store *st);
/* The store's chunk size in bytes (fixed at creation). */
size_t nadb_store_chunk_size(const struct nadb_store *st);

/* ---- names and the tree ---------------------------------------------- */

/* Who is asking: owner of new inodes and setgid inheritance. */
struct nadb_caller {
	uint32_t uid, gid;
	const uint32_t *groups; /* supplementary groups, may be NULL */
	int ngroups;
};

/* May WHO read, write or search/execute (NADB_MAY_*, ORed; the values of
 * R_OK, W_OK and X_OK) an inode of MODE, UID and GID?  POSIX's rules as
 * Linux's generic_permission applies them, root holding CAP_DAC_OVERRIDE:
 * 0 or -EACCES.  WHO NULL: the engine itself, allowed. */
#define NADB_MAY_READ 4u
#define NADB_MAY_WRITE 2u
#define NADB_MAY_EXEC 1u
int nadb_may_access(uint32_t mode, uint32_t uid, uint32_t gid,
		    const struct nadb_caller *who, unsigned want);

/* Check NAME as a component under a directory of LEVEL, as the engine will:
 * -EINVAL (empty, control characters, "." or ".."), -ENAMETOOLONG (>255),
 * -EPERM (reserved: at the root "tags" and names starting with '.', and
 * ".stats" in databases and namespaces, where the daemon serves it). */
int nadb_check_name(const char *name, enum nadb_level parent_level);

int nadb_lookup(struct nadb_store *st, uint64_t parent, const char *name,
		struct nadb_attr *out);
int nadb_getattr(struct nadb_store *st, uint64_t ino, struct nadb_attr *out);

/* setattr: which fields to change (bits of NADB_SET_*). */
#define NADB_SET_MODE (1u << 0)
#define NADB_SET_UID (1u << 1)
#define NADB_SET_GID (1u << 2)
#define NADB_SET_SIZE (1u << 3)
#define NADB_SET_ATIME (1u << 4)
#define NADB_SET_MTIME (1u << 5)
#define NADB_SET_ATIME_NOW (1u << 6)
#define NADB_SET_MTIME_NOW (1u << 7)
#define NADB_SET_CTIME (1u << 8)
/* Change attributes (permission checks are the kernel's: default_permissions).
 * SIZE truncates or extends with zeros, also while the file is open. */
int nadb_setattr(struct nadb_store *st, uint64_t ino, const struct nadb_attr *in,
		 unsigned to_set, struct nadb_attr *out);
/* Clear INO's set-id bits as Linux does for a write, truncate or chown by
 * WHO, a caller the kernel found without CAP_FSETID (or, for a chown, any
 * caller but root): set-user-ID always, set-group-ID where group execute
 * is set or WHO is not in the key's group.  From the mode as it stands,
 * in one step (a concurrent chmod is not undone), and none when nothing
 * changes.  1: cleared, 0: nothing to clear (a directory, no bits, an
 * expired key that is still open), -EAGAIN: WHO's supplementary groups
 * decide and GROUPS_KNOWN is false (ask again with them), or -errno. */
int nadb_kill_setid(struct nadb_store *st, uint64_t ino, const struct nadb_caller *who,
		    bool groups_known);

/* Make a node: regular file, directory, FIFO or socket (by MODE's type).
 * Regular files are refused at levels ROOT and DB (-EPERM), directories get
 * their level from their parent.  Ownership: caller's uid; gid from the
 * caller, or from a setgid parent (which a new directory inherits). */
int nadb_mknod(struct nadb_store *st, uint64_t parent, const char *name,
	       uint32_t mode, uint64_t rdev, const struct nadb_caller *who,
	       struct nadb_attr *out);
int nadb_symlink(struct nadb_store *st, uint64_t parent, const char *name,
		 const char *target, const struct nadb_caller *who,
		 struct nadb_attr *out);
/* Copy the target into BUF (NUL-terminated, truncated to SIZE-1). */
int nadb_readlink(struct nadb_store *st, uint64_t ino, char *buf, size_t size);
int nadb_link(struct nadb_store *st, uint64_t ino, uint64_t newparent,
	      const char *newname, struct nadb_attr *out);
int nadb_unlink(struct nadb_store *st, uint64_t parent, const char *name);
int nadb_rmdir(struct nadb_store *st, uint64_t parent, const char *name);

#define NADB_RENAME_NOREPLACE (1u << 0)
#define NADB_RENAME_EXCHANGE (1u << 1)
/* Atomic rename; replaces an existing target atomically.  A directory may
 * move only where its level stays the same (or between NAMESPACE and
 * INNER): -EXDEV otherwise, so that mv falls back to copying. */
int nadb_rename(struct nadb_store *st, uint64_t parent, const char *name,
		uint64_t newparent, const char *newname, unsigned flags);

/* ---- directories -------------------------------------------------------- */

/* Called for each entry, in name order.  Return 0 to go on, 1 to stop
 * (the entry was NOT consumed), negative errno to abort. */
typedef int (*nadb_dirent_fn)(void *ctx, const char *name,
			      const struct nadb_attr *attr);
/* Stream the entries of directory INO whose names sort strictly after
 * AFTER (NULL: from the first).  With WANT_ATTR, attr is complete;
 * otherwise only attr->ino and attr->mode's type bits are filled.
 * Returns 0 at the end or when fn stopped, negative errno otherwise. */
int nadb_readdir(struct nadb_store *st, uint64_t ino, const char *after,
		 bool want_attr, nadb_dirent_fn fn, void *ctx);
/* Parent of directory INO ("..": the root is its own parent). */
int nadb_parent(struct nadb_store *st, uint64_t ino, uint64_t *parent);

/* ---- extended attributes (user.* only; others get -EOPNOTSUPP) --------- */

/* WHO is the caller, for what the kernel's checks cannot cover: an expiry
 * (user.ttl, user.expires) deletes a key behind the kernel's back, so
 * only a caller who could unlink the key may give it one or change it
 * (-EACCES, or -EPERM in a sticky directory).  NULL: a trusted caller (a
 * tool that opened the store itself). */
#define NADB_XATTR_CREATE 1  /* XATTR_CREATE: -EEXIST if present */
#define NADB_XATTR_REPLACE 2 /* XATTR_REPLACE: -ENODATA if absent */
int nadb_setxattr(struct nadb_store *st, uint64_t ino, const char *name,
		  const void *value, size_t size, int flags,
		  const struct nadb_caller *who);
/* Copy the value to BUF and return its size; with SIZE 0 just return the
 * size; -ERANGE if BUF is too small; -ENODATA if absent. */
ssize_t nadb_getxattr(struct nadb_store *st, uint64_t ino, const char *name,
		      void *buf, size_t size);
/* NUL-separated names, same size protocol as getxattr. */
ssize_t nadb_listxattr(struct nadb_store *st, uint64_t ino, char *buf,
		       size_t size);
int nadb_removexattr(struct nadb_store *st, uint64_t ino, const char *name,
		     const struct nadb_caller *who);

/* ---- file contents ------------------------------------------------------ */

/* An open regular file.  All handles of one inode share one buffer, so
 * every reader sees every writer's bytes at once (as the kernel's page cache
 * does); the store's committed value changes at nadb_file_commit. */
struct nadb_file;

#define NADB_OPEN_TRUNC 1 /* O_TRUNC: start from an empty value */
#define NADB_OPEN_WRITE 2 /* opened for writing (a copy may be restoring it) */
int nadb_file_open(struct nadb_store *st, uint64_t ino, int flags,
		   struct nadb_file **out);
ssize_t nadb_file_read(struct nadb_file *f, void *buf, size_t size, off_t off);
ssize_t nadb_file_write(struct nadb_file *f, const void *buf, size_t size,
			off_t off);
/* Grow (mode 0 fallocate) to at least OFF+LEN bytes; never shrinks. */
int nadb_file_allocate(struct nadb_file *f, off_t off, off_t len);
/* Make the file's current content the key's value, atomically (close). */
int nadb_file_commit(struct nadb_file *f);
/* Commit, then make the store durable before returning (fsync). */
int nadb_file_fsync(struct nadb_file *f);
/* F's fsync is to hear of sync failures since the count N (from
 * nadb_store_sync_failures), taken before the step that made F's key. */
void nadb_file_heard_failures(struct nadb_file *f, uint64_t n);
/* What was written through F is not to be stored: its key keeps the value
 * it has, as after a failed write; the next commit returns WHY (<0). */
void nadb_file_abandon(struct nadb_file *f, int why);
/* Commit if needed and drop the handle (release). */
int nadb_file_close(struct nadb_file *f);
uint64_t nadb_file_ino(const struct nadb_file *f);

/* ---- expiry --------------------------------------------------------------
 * Keys expire through the xattrs user.ttl (seconds from now; on a
 * directory: the default for keys made below it) and user.expires (Unix
 * time, "S" or "S.NNNNNNNNN"), handled by nadb_setxattr and friends.  An
 * expired key is gone at once for every call; the reaper deletes it. */

/* Called for each name a reaped key had, so the daemon can tell the
 * kernel's caches.  Runs with the engine's locks held: only queue work. */
typedef void (*nadb_reaped_fn)(void *ctx, uint64_t parent, const char *name,
			       uint64_t ino);
/* Delete up to MAX keys expired by NOW (ns); *reaped gets how many. */
int nadb_reap(struct nadb_store *st, int64_t now, unsigned max, nadb_reaped_fn fn,
	      void *ctx, unsigned *reaped);
/* Start/stop the reaper thread: every reap_interval_ms it reaps in batches,
 * releasing the engine between batches, and reports each name to FN. */
int nadb_store_start_reaper(struct nadb_store *st, nadb_reaped_fn fn, void *ctx);
void nadb_store_stop_reaper(struct nadb_store *st);

/* ---- atomic operations on whole values (batch.c) --------------------------
 * What nadb incr, cas, mset and mget do (the daemon serves them on /.ctl).
 * A batch of operations on keys named by path ("/DB/NS/KEY", at a
 * namespace or below) is one step: other clients and a crash see all of
 * it or none of it, and no other change comes between its reads and its
 * writes.  WHO is checked as the kernel would check open, creat and
 * search (NULL: a trusted tool).  New keys are made with mode 0644 and
 * their directory's default TTL; a key kept keeps its expiry and tags. */

/* A value's user.nadb.hash: 32 hex digits and a NUL. */
#define NADB_HASH_TEXT 33

enum nadb_op_kind {
	NADB_OP_SET,  /* value := VALUE[0..LEN) */
	NADB_OP_INCR, /* value := value + BY, as a decimal integer and "\n" */
};
enum nadb_op_cond {
	NADB_IF_ANY,    /* always */
	NADB_IF_ABSENT, /* only if no such key: -ECANCELED otherwise */
	NADB_IF_HASH,   /* only if the value's hash is EXPECT: -ECANCELED */
};
struct nadb_op {
	enum nadb_op_kind kind;
	enum nadb_op_cond cond;
	const char *path;
	const void *value; /* SET */
	size_t len;
	int64_t by;        /* INCR */
	char expect[NADB_HASH_TEXT];
	/* Results, once the batch is done or failed at this operation: */
	uint64_t ino, parent; /* the key, its directory (0: not reached) */
	bool created;         /* the key was made */
	int64_t number;       /* INCR: the new value */
	char hash[NADB_HASH_TEXT]; /* the value's hash after; on -ECANCELED
	                              its current one ("-": absent) */
};
/* Apply OPS[0..N) in one step.  0, or the first failure's negative
 * errno with *FAILED its index: -ECANCELED (a condition), -EINVAL (INCR
 * of a value that is not a decimal integer, an optional "\n" after it),
 * -ERANGE (INCR past 64 bits), -ENOENT (a directory on the way),
 * -EACCES, -EISDIR, -ENOSPC...; nothing then changed. */
int nadb_apply(struct nadb_store *st, struct nadb_op *ops, size_t n,
	       const struct nadb_caller *who, size_t *failed);

/* What failure RC of OP means, in words, where strerror would not say it
 * (NULL: strerror says it). */
const char *nadb_op_why(const struct nadb_op *op, int rc);

/* Read the values of the keys at PATHS[0..N) at one point in time (no
 * step comes between them), calling FN for each in order with its value,
 * or with RC -ENOENT (no such key), -EACCES, -EISDIR, -EFBIG (the values
 * so far add up to more than MAX_BYTES)...  FN's return: 0 to go on, a
 * negative errno to stop with it. */
typedef int (*nadb_value_fn)(void *ctx, size_t i, int rc, const void *value,
			     size_t len);
int nadb_read_values(struct nadb_store *st, const char *const *paths, size_t n,
		     const struct nadb_caller *who, uint64_t max_bytes,
		     nadb_value_fn fn, void *ctx);

/* ---- compaction ----------------------------------------------------------- */

struct nadb_compact_result {
	uint64_t segments_removed, bytes_reclaimed, chunks_moved, bytes_moved;
};
/* Reclaim pack space: segments whose garbage is at least GARBAGE (a
 * fraction, 0..1) of their size get their live chunks copied out and are
 * deleted.  FORCE compacts every segment with any garbage, the one being
 * appended to included.  Foreground calls wait at most for one chunk's
 * index update at a time. */
int nadb_compact(struct nadb_store *st, bool force, double garbage,
		 struct nadb_compact_result *res);

/* ---- the kernel's references ---------------------------------------------
 * The kernel may look a key up and use its inode number a moment later
 * (open after lookup).  A key replaced or removed in between must still
 * be there for it, as on a local filesystem: the daemon reports every
 * inode it hands the kernel (remember) and every reference the kernel
 * drops (forget), and an unlinked inode lives until both its opens and
 * these references are gone. */
void nadb_remember(struct nadb_store *st, uint64_t ino);
void nadb_forget(struct nadb_store *st, uint64_t ino, uint64_t n);
/* A follower that takes its store over (nadbfs) opens it anew as its
 * writer: TO, the new handle, learns which inodes the kernel holds from
 * FROM, the follower's, and gets what the kernel says to FROM from then on
 * (requests under way may still name it).  0 or -ENOMEM. */
int nadb_adopt_kernel_refs(struct nadb_store *to, struct nadb_store *from);

/* ---- whole store -------------------------------------------------------- */

struct nadb_statfs {
	uint64_t bsize, blocks, bfree, bavail, files, ffree;
};
int nadb_statfs(struct nadb_store *st, struct nadb_statfs *out);

/* Resolve a slash-separated PATH from the root (for tools). */
int nadb_resolve(struct nadb_store *st, const char *path, struct nadb_attr *out);

#endif
