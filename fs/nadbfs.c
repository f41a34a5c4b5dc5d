/* nadbfs.c -- the FUSE daemon: serves a nadb store as /DB/NAMESPACE/KEY.
 *
 * Each low-level FUSE request becomes one call into the engine (store.h),
 * and that is all this file does.  The kernel does the rest, which is why
 * the translation can stay this thin:
 *   - permission checks (mount option default_permissions), except on a
 *     mount only root can enter, where they are root's anyway and cost a
 *     round trip per create and delete (kernel_checks_modes);
 *   - caching names and attributes for attr_timeout seconds, and caching
 *     misses too, which is safe because we are the store's only writer
 *     (a follower's kernel caches them for its lease, and hears of the
 *     writer's changes: core/follow.c);
 *   - flock and POSIX locks (we implement neither, so they are local).
 * The engine never reuses inode numbers.  Every non-directory inode handed
 * to the kernel is reported to it (nadb_remember) and every forget too, so
 * a key unlinked or replaced by rename right after another process looked
 * it up stays readable for that process until the kernel forgets it.
 * The engine's reaper deletes expired keys without the kernel: their
 * names are queued and a thread of ours tells the kernel to drop them
 * (the notifier).  An inode that is gone anyway answers ESTALE, and the
 * kernel looks the name up again (stale_if_gone).
 *
 * Start-up runs in one fixed order, so that every start-up error reaches
 * the terminal and the store is used only by the process that opened it:
 * parse and check the options; in background mode fork at once (the parent
 * waits and exits with the child's verdict); open the store; mount; start
 * the engine's threads; only then detach from the terminal, pointing stderr
 * at STORE/nadbfs.log where the engine's one-line messages belong.
 *
 * Until then the engine's lines are held (log.h): a start-up error is one
 * plain line on the terminal, giving the engine's line as its reason.
 * Serving, every line -- the engine's, ours, libfuse's -- goes through
 * nadb_log, in one format, to the log file (SIGHUP reopens it) or, with
 * -o log=syslog, to syslog.
 *
 * A follower whose writer is gone takes the store over (take_over): it
 * opens the store as its writer, serves that from then on, and remounts
 * itself writable.
 */
#define FUSE_USE_VERSION 312

#include "clock.h"
#include "log.h"
#include "special.h"
#include "store.h"
#include "wire.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <math.h>
#include <mntent.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ATTR_TIMEOUT 3600.0
/* s: how long a follower's kernel may cache a name or attributes (unless
 * attr_timeout says otherwise): what it serves is never staler than this,
 * even when a change notice is lost. */
#define FOLLOWER_LEASE 1.0
/* ns: a follower's replies for this long after a change notice let the
 * kernel cache nothing: one may carry what the follower read just before
 * the change, and would outlive the notice that was to drop it. */
#define FOLLOWER_RACE_NS 50000000LL
/* Exit status of a daemon that stopped serving its store: a writer whose
 * store became another daemon's, a follower of a store of another format
 * (nadbfs.1). */
#define EXIT_LOST 3
#define DEFAULT_MAX_IDLE_THREADS 10
/* ms: how often a follower asks whether its writer is gone (the writer's
 * lease, 10 s, bounds how long a dead one holds the store anyway) */
#define TAKEOVER_CHECK_MS 1000
#define TAKEOVER_NAP_MS 50 /* ms: naps between, to see a stop sooner */
#define TAKEOVER_BACKOFF_MS 16000 /* ms: longest wait between looks that failed */
#define MAX_GROUPS 64

/* What the kernel must forget, on its way to it:
 * - NOTICE_DELETE: a name the engine's reaper deleted (of INO, in PARENT);
 * - NOTICE_INODE: INO's cached pages and attributes (a value that could not
 *   be stored, or one /.ctl changed);
 * - NOTICE_ENTRY: NAME in PARENT, which /.ctl made (a cached miss). */
enum notice { NOTICE_DELETE, NOTICE_INODE, NOTICE_ENTRY };
struct reaped_name {
	struct reaped_name *next;
	uint64_t parent, ino;
	enum notice kind;
	char name[];
};

/* Tells the kernel to forget names of expired keys the reaper deleted.  The
 * reaper reports them with the engine's locks held, while telling the
 * kernel waits for the parent directory's lock, which a process may hold
 * while its request waits for the engine: so names are queued, and told
 * from a thread of our own. */
struct notifier {
	pthread_mutex_t lock; /* scope: head, tail, queued, told */
	pthread_cond_t wake, done;
	struct reaped_name *head, **tail;
	uint64_t queued, told; /* notices queued and told so far */
	atomic_bool stop; /* set under the lock, also read without it */
	bool running; /* thread started; main thread only */
	pthread_t thread;
	struct fuse_session *se;
};

/* Everything the daemon knows.  Filled in by main() before the session
 * loop starts and only read afterwards, so it needs no lock (the notifier
 * has its own), but for what a follower's takeover changes once: the
 * store and timeout, atomic, and followed (the takeover thread's until
 * it is joined). */
struct nadbfs {
	struct wire wire; /* first: wire.c's callbacks get the session's userdata */
	struct nadb_store *_Atomic store;
	struct nadb_store *followed; /* after a takeover: the follower's handle,
					which files opened before read through */
	struct nadb_options engine; /* what nadb_store_open gets */
	_Atomic double timeout;     /* attr_timeout: kernel cache of names and attributes */
	bool timeout_given;         /* -o attr_timeout was given */
	atomic_int_fast64_t noticed_ns; /* a follower: when a change notice came
	                                   last (monotonic_ns) */
	char *store_arg;            /* STORE as given, for messages */
	char *store_path;           /* STORE made absolute (a URL: as given) */
	char *log_path;             /* -o log=FILE, or NULL: STORE/nadbfs.log
	                               for a directory, none for Redis */
	bool log_syslog;            /* -o log=syslog */
	struct notifier notifier;
	bool measure;               /* stats=on: time every request */
	bool allow_other;           /* -o allow_other or allow_root: other users come in */
	bool checks_asked;          /* -o default_permissions */
	struct special *sp;         /* /.stats, /.ctl, /tags ... */
	pthread_t main_thread;      /* runs the session loop (store_lost) */
	const char *mountpoint;
	/* A follower's thread that takes the store over (take_over). */
	bool takeover_wanted; /* -o takeover=on */
	pthread_t takeover;
	bool takeover_running; /* main thread only */
	atomic_bool takeover_stop;
};

static_assert(offsetof(struct nadbfs, wire) == 0, "wire.c reaches the wire as userdata");

static struct nadbfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Times a request from its start to the handler's return, for /.stats:
 * TIME_OP(req, OP_X) as a handler's first line. */
struct op_timer {
	struct special *sp;
	enum fs_op op;
	uint64_t start;
};

static void op_timer_done(struct op_timer *t)
{
	special_op_done(t->sp, t->op, t->start);
}

#define TIME_OP(req, op)                                                      \
	__attribute__((cleanup(op_timer_done))) struct op_timer op_timer_ = {  \
		fs_of(req)->sp, op, special_op_start(fs_of(req)->sp, op)}; \
	struct special *sp __attribute__((unused)) = op_timer_.sp

/* ---- attributes and replies ------------------------------------------- */

/* Every error reply: counted for /.stats and /.metrics. */
static void reply_err(fuse_req_t req, int err)
{
	special_reply_err(fs_of(req)->sp, req, err);
}

static void stat_of(const struct nadb_attr *a, struct stat *st)
{
	stat_of_attr(a, st);
}

/* How long the kernel may cache a name and its attributes: attr_timeout,
 * but never past the key's expiry, so that an expired key is gone at once
 * (the next lookup or getattr finds it gone) and not only once the reaper
 * has told the kernel. */
/* attr_timeout, or 0 on a follower that just heard of a change. */
static double lease_of(const struct nadbfs *fs)
{
	int64_t noticed = atomic_load(&fs->noticed_ns);
	if (!noticed)
		return fs->timeout;
	return (int64_t)monotonic_ns() - noticed < FOLLOWER_RACE_NS
		       ? 0 : fs->timeout;
}

static double timeout_for(const struct nadbfs *fs, const struct nadb_attr *a)
{
	double lease = lease_of(fs);
	if (a->expires_ns <= 0)
		return lease;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	double left = (double)(a->expires_ns - (int64_t)now.tv_sec * 1000000000 -
			       now.tv_nsec) / 1e9;
	return left <= 0 ? 0 : left < lease ? left : lease;
}

static void entry_of(const struct nadbfs *fs, const struct nadb_attr *a,
		     struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->ino; /* never reused: generation stays 0 */
	stat_of(a, &e->attr);
	e->attr_timeout = e->entry_timeout = timeout_for(fs, a);
}

static void reply_status(fuse_req_t req, int rc)
{
	reply_err(req, rc < 0 ? -rc : 0);
}

/* For requests that name an inode by number: the engine deletes an inode
 * with its last name unless it is open, so a process that looked a name up
 * just before a rename replaced it asks for an inode that is gone.  ESTALE
 * makes the kernel walk the path again (open, stat, xattrs, chmod...) and
 * find the new inode, as a local filesystem would. */
static int stale_if_gone(int rc)
{
	return rc == -ENOENT ? -ESTALE : rc;
}

/* The kernel now holds a reference to A's inode: the engine keeps an
 * unlinked key until the kernel forgets it (directories need not). */
static void kernel_holds(fuse_req_t req, const struct nadb_attr *a)
{
	if (!S_ISDIR(a->mode))
		nadb_remember(fs_of(req)->store, a->ino);
}

static void reply_entry_or_error(fuse_req_t req, int rc, const struct nadb_attr *a)
{
	struct fuse_entry_param e;
	if (rc < 0) {
		reply_err(req, -rc);
		return;
	}
	entry_of(fs_of(req), a, &e);
	kernel_holds(req, a);
	if (fuse_reply_entry(req, &e) == -ENOENT && !S_ISDIR(a->mode))
		nadb_forget(fs_of(req)->store, a->ino, 1); /* interrupted */
}

static void reply_attr_or_error(fuse_req_t req, int rc, const struct nadb_attr *a)
{
	struct stat st;
	if (rc < 0) {
		reply_err(req, -rc);
		return;
	}
	stat_of(a, &st);
	fuse_reply_attr(req, &st, timeout_for(fs_of(req), a));
}

/* A miss the kernel may remember as long as a hit (ino 0 = negative). */
static void reply_no_such_entry(fuse_req_t req)
{
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.entry_timeout = lease_of(fs_of(req));
	fuse_reply_entry(req, &e);
}

/* Who is asking, for the owner and group of a new node. */
struct caller {
	struct nadb_caller who;
	uint32_t groups[MAX_GROUPS];
};

/* Does a node of MODE made by a caller other than root need its
 * supplementary groups?  Only a set-group-ID, group-executable
 * non-directory does (does it keep S_ISGID in a set-group-ID directory?),
 * and reading them parses /proc twice: only then are they read. */
static bool groups_decide(uint32_t mode)
{
	return !S_ISDIR(mode) && (mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP);
}

/* The caller of REQ; its supplementary groups only WITH_GROUPS (and not
 * for root, whom no check stops). */
static const struct nadb_caller *caller_of(fuse_req_t req, struct caller *c,
					   bool with_groups)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[MAX_GROUPS];
	int n = 0;
	if (ctx->uid != 0 && with_groups)
		n = fuse_req_getgroups(req, MAX_GROUPS, groups);
	if (n < 0)
		n = 0; /* no /proc, or the caller is gone: no supplementary groups */
	if (n > MAX_GROUPS)
		n = MAX_GROUPS;
	for (int i = 0; i < n; i++)
		c->groups[i] = groups[i];
	c->who = (struct nadb_caller){
		.uid = ctx->uid, .gid = ctx->gid,
		.groups = n ? c->groups : NULL, .ngroups = n,
	};
	return &c->who;
}

/* ---- open files --------------------------------------------------------- */

static struct nadb_file *file_of(const struct fuse_file_info *fi)
{
	return fi ? (struct nadb_file *)(uintptr_t)fi->fh : NULL;
}

static int open_flags_of(int flags)
{
	return ((flags & O_TRUNC) ? NADB_OPEN_TRUNC : 0) |
	       ((flags & O_ACCMODE) != O_RDONLY ? NADB_OPEN_WRITE : 0);
}

static void hand_file_to_kernel(fuse_req_t req, struct fuse_file_info *fi,
				struct nadb_file *f)
{
	fi->fh = (uintptr_t)f;
	/* Every write passes through the kernel, so its page cache is never
	 * stale: warm reads may come from it across opens.  Not so for a
	 * follower, whose writer is elsewhere: each open reads afresh
	 * (close-to-open), and a change notice drops the pages meanwhile. */
	fi->keep_cache = !nadb_store_is_follower(fs_of(req)->store);
	fi->direct_io = (fi->flags & O_DIRECT) != 0;
	/* A reader has nothing to commit at close(2): spare it the FLUSH
	 * round trip (the value becomes visible when a writer closes). */
	fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
}

/* ---- directory handles -------------------------------------------------- */

/* Offsets in a directory stream count entries: "." is 1, ".." is 2 and the
 * first real entry 3.  The offset of an entry is where reading resumes
 * after it, so the kernel asks again with the offset of the last entry it
 * consumed; it may consume only part of a reply. */
#define DOT_OFF 1
#define DOTDOT_OFF 2

/* An open directory remembers the names of the last batch it returned, so
 * that the next request resumes after a name (the engine's cursor), not by
 * counting from the start.  The kernel serialises readdir calls on one
 * open directory (its f_pos lock), so a handle needs no lock. */
struct dir_handle {
	off_t first_entry;              /* offset of the first real entry */
	int nextra;                     /* special names after "." and ".." */
	const char *extra_name[4];
	uint64_t extra_ino[4];
	uint32_t extra_mode[4];
	off_t anchor_off;               /* offset of the entry before the batch, 0: none */
	char anchor[NADB_NAME_MAX + 1]; /* its name */
	off_t first_off;                /* offset of the batch's first name */
	size_t count;                   /* names in the batch */
	char *names;                    /* count NUL-terminated names, back to back */
	size_t names_used, names_cap;
};

static struct dir_handle *dir_of(const struct fuse_file_info *fi)
{
	return fi ? (struct dir_handle *)(uintptr_t)fi->fh : NULL;
}

static void free_dir(struct dir_handle *d)
{
	if (d) {
		free(d->names);
		free(d);
	}
}

/* The name of the batch entry at offset OFF, or NULL. */
static const char *batch_name_at(const struct dir_handle *d, off_t off)
{
	if (off >= d->first_entry && off == d->anchor_off)
		return d->anchor;
	if (off < d->first_off || off >= d->first_off + (off_t)d->count)
		return NULL;
	const char *name = d->names;
	for (off_t i = d->first_off; i < off; i++)
		name += strlen(name) + 1;
	return name;
}

/* Start a new batch of real entries at offset FIRST, after entry AFTER
 * (at FIRST - 1; NULL when the batch starts at the first entry).  Names
 * take less room than their entries, so SIZE bytes hold the batch. */
static int start_batch(struct dir_handle *d, off_t first, const char *after,
		       size_t size)
{
	if (d->names_cap < size) {
		char *p = realloc(d->names, size);
		if (!p)
			return -ENOMEM;
		d->names = p;
		d->names_cap = size;
	}
	d->anchor_off = after ? first - 1 : 0;
	if (after)
		snprintf(d->anchor, sizeof(d->anchor), "%s", after);
	d->first_off = first;
	d->count = 0;
	d->names_used = 0;
	return 0;
}

static void remember_name(struct dir_handle *d, const char *name)
{
	size_t len = strlen(name) + 1;
	if (d->names_used + len > d->names_cap)
		return; /* cannot happen (see start_batch); costs a walk at worst */
	memcpy(d->names + d->names_used, name, len);
	d->names_used += len;
	d->count++;
}

/* Finding the entry at an offset the batch does not know (seekdir). */
struct dir_walk {
	off_t want, at;
	char *name; /* NADB_NAME_MAX + 1 bytes */
	bool found;
};

static int stop_at_wanted_entry(void *arg, const char *name,
				const struct nadb_attr *a)
{
	struct dir_walk *w = arg;
	(void)a;
	if (w->at++ < w->want)
		return 0;
	snprintf(w->name, NADB_NAME_MAX + 1, "%s", name);
	w->found = true;
	return 1;
}

/* Where a request at offset OFF (>= d->first_entry) resumes: after the
 * name put in AFTER.  -ENOENT when the directory has no entry there. */
static int name_at_offset(struct nadb_store *st, fuse_ino_t ino,
			  const struct dir_handle *d, off_t off, char *after)
{
	const char *known = batch_name_at(d, off);
	if (known) {
		snprintf(after, NADB_NAME_MAX + 1, "%s", known);
		return 0;
	}
	struct dir_walk w = {.want = off, .at = d->first_entry, .name = after};
	int rc = nadb_readdir(st, ino, NULL, false, stop_at_wanted_entry, &w);
	if (rc < 0)
		return rc;
	return w.found ? 0 : -ENOENT;
}

/* One reply being filled. */
struct dir_fill {
	fuse_req_t req;
	const struct nadbfs *fs;
	struct dir_handle *dir;
	bool plus;
	char *buf;
	size_t size, used;
	off_t next_off; /* offset the next entry gets */
};

/* Add one entry; false when it does not fit (the reply is full). */
static bool add_entry(struct dir_fill *f, const char *name,
		      const struct nadb_attr *a)
{
	size_t room = f->size - f->used, n;
	if (f->plus) {
		struct fuse_entry_param e;
		entry_of(f->fs, a, &e);
		n = fuse_add_direntry_plus(f->req, f->buf + f->used, room, name,
					   &e, f->next_off);
	} else {
		struct stat st = {.st_ino = a->ino, .st_mode = a->mode & S_IFMT};
		n = fuse_add_direntry(f->req, f->buf + f->used, room, name, &st,
				      f->next_off);
	}
	if (n > room)
		return false;
	if (f->plus)
		kernel_holds(f->req, a); /* readdirplus entries are lookups */
	f->used += n;
	f->next_off++;
	return true;
}

static int add_real_entry(void *arg, const char *name, const struct nadb_attr *a)
{
	struct dir_fill *f = arg;
	if (!add_entry(f, name, a))
		return 1;
	remember_name(f->dir, name);
	return 0;
}

/* "." and ".." (".." from nadb_parent; the root is its own parent).  For
 * readdirplus they carry full attributes; the kernel does not count them
 * as lookups. */
static int dot_attr(struct nadb_store *st, fuse_ino_t ino, bool dotdot,
		    bool full, struct nadb_attr *a)
{
	uint64_t target = ino;
	int rc = dotdot ? nadb_parent(st, ino, &target) : 0;
	if (rc < 0)
		return rc;
	if (full)
		return nadb_getattr(st, target, a);
	memset(a, 0, sizeof(*a));
	a->ino = target;
	a->mode = S_IFDIR;
	return 0;
}

/* One of the names the daemon serves itself (/.stats, /tags ...). */
static bool add_special_entry(struct dir_fill *f, int i)
{
	struct dir_handle *d = f->dir;
	size_t room = f->size - f->used, n;
	if (f->plus) {
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e));
		e.ino = d->extra_ino[i];
		if (special_attr(fs_of(f->req)->sp, e.ino, &e.attr))
			e.ino = 0;
		e.attr.st_ino = d->extra_ino[i];
		e.attr.st_mode |= d->extra_mode[i];
		n = fuse_add_direntry_plus(f->req, f->buf + f->used, room, d->extra_name[i],
					   &e, f->next_off);
	} else {
		struct stat st = {.st_ino = d->extra_ino[i], .st_mode = d->extra_mode[i]};
		n = fuse_add_direntry(f->req, f->buf + f->used, room, d->extra_name[i], &st,
				      f->next_off);
	}
	if (n > room)
		return false;
	f->used += n;
	f->next_off++;
	return true;
}

static int add_dot_entries(struct dir_fill *f, fuse_ino_t ino)
{
	struct nadbfs *fs = fs_of(f->req);
	struct nadb_attr a;
	while (f->next_off < f->dir->first_entry) {
		if (f->next_off > DOTDOT_OFF) {
			if (!add_special_entry(f, (int)(f->next_off - DOTDOT_OFF - 1)))
				return 1;
			continue;
		}
		bool dotdot = f->next_off == DOTDOT_OFF;
		int rc = dot_attr(fs->store, ino, dotdot, f->plus, &a);
		if (rc < 0)
			return rc;
		if (!add_entry(f, dotdot ? ".." : ".", &a))
			return 1;
	}
	return 0;
}

static void read_directory(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi, bool plus)
{
	struct nadbfs *fs = fs_of(req);
	struct dir_handle *d = dir_of(fi);
	char name[NADB_NAME_MAX + 1];
	const char *after = NULL; /* resume after this real entry; NULL: the first */

	if (!d || off < 0) {
		reply_err(req, d ? EINVAL : EBADF);
		return;
	}
	if (off >= d->first_entry) {
		int rc = name_at_offset(fs->store, ino, d, off, name);
		if (rc == -ENOENT) { /* seeked past the end */
			fuse_reply_buf(req, NULL, 0);
			return;
		}
		if (rc < 0) {
			reply_err(req, -rc);
			return;
		}
		after = name;
	}
	struct dir_fill f = {
		.req = req, .fs = fs, .dir = d, .plus = plus,
		.buf = malloc(size ? size : 1), .size = size, .next_off = off + 1,
	};
	off_t first = after ? off + 1 : d->first_entry;
	if (!f.buf || start_batch(d, first, after, size)) {
		free(f.buf);
		reply_err(req, ENOMEM);
		return;
	}
	int rc = add_dot_entries(&f, ino);
	if (rc == 0)
		rc = nadb_readdir(fs->store, ino, after, plus, add_real_entry, &f);
	/* Entries already in the buffer are worth more than the error: the
	 * kernel asks again from the last one and then meets the error. */
	if (rc < 0 && f.used == 0)
		reply_err(req, -rc);
	else
		fuse_reply_buf(req, f.buf, f.used);
	free(f.buf);
}

/* ---- operations --------------------------------------------------------- */

static void want_if_capable(struct fuse_conn_info *conn, unsigned cap)
{
	if (conn->capable & cap)
		conn->want |= cap;
}

static void nadbfs_init(void *userdata, struct fuse_conn_info *conn)
{
	struct nadbfs *fs = userdata;
	/* Off: NFS export (lookups of "." and ".." by handle), write-back
	 * caching (we want every write, in order; and it would not spare the
	 * GETATTR of a stat after close, as fuse_flush() then marks
	 * STATX_BLOCKS stale), ACLs (mode bits only) and KILLPRIV (v1: we
	 * could not tell whether a caller may keep its set-id bits; v2, which
	 * says so, is agreed beneath libfuse: wire.c). */
	conn->want &= ~(unsigned)(FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_WRITEBACK_CACHE |
				  FUSE_CAP_POSIX_ACL | FUSE_CAP_HANDLE_KILLPRIV);
	/* A writer's values change only through this kernel's page cache, or
	 * with a notice that drops the pages before the change is told
	 * (/.ctl, a commit that failed, an O_DIRECT write): so the pages of a
	 * value just written stay cached.  With AUTO_INVAL_DATA (libfuse's
	 * default) the kernel drops them at the first GETATTR after a write,
	 * since the mtime it holds differs from ours, and the first read of
	 * a value just written costs a READ.  A follower's writer is
	 * elsewhere: it keeps it. */
	if (!nadb_store_is_follower(fs->store))
		conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	want_if_capable(conn, FUSE_CAP_ASYNC_READ);
	want_if_capable(conn, FUSE_CAP_ATOMIC_O_TRUNC); /* O_TRUNC reaches open */
	/* A symlink's target never changes (only the link is replaced). */
	want_if_capable(conn, FUSE_CAP_CACHE_SYMLINKS);
	conn->max_write = 1u << 20; /* libfuse clamps it to its buffer */
}

static void nadbfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	TIME_OP(req, OP_LOOKUP);
	if (special_lookup(sp, req, parent, name))
		return;
	struct nadb_attr a;
	int rc = nadb_lookup(fs_of(req)->store, parent, name, &a);
	if (rc == -ENOENT)
		reply_no_such_entry(req);
	else
		reply_entry_or_error(req, rc, &a);
}

static void nadbfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (!special_is_ino(ino))
		nadb_forget(fs_of(req)->store, ino, nlookup);
	fuse_reply_none(req);
}

static void nadbfs_forget_multi(fuse_req_t req, size_t count,
				struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		if (!special_is_ino(forgets[i].ino))
			nadb_forget(fs_of(req)->store, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void nadbfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_GETATTR);
	if (special_getattr(sp, req, ino))
		return;
	struct nadb_attr a;
	(void)fi;
	int rc = nadb_getattr(fs_of(req)->store, ino, &a);
	reply_attr_or_error(req, stale_if_gone(rc), &a);
}

static unsigned nadb_fields_of(int valid)
{
	static const struct {
		int fuse;
		unsigned nadb;
	} map[] = {
		{FUSE_SET_ATTR_MODE, NADB_SET_MODE},
		{FUSE_SET_ATTR_UID, NADB_SET_UID},
		{FUSE_SET_ATTR_GID, NADB_SET_GID},
		{FUSE_SET_ATTR_SIZE, NADB_SET_SIZE},
		{FUSE_SET_ATTR_ATIME, NADB_SET_ATIME},
		{FUSE_SET_ATTR_MTIME, NADB_SET_MTIME},
		{FUSE_SET_ATTR_ATIME_NOW, NADB_SET_ATIME_NOW},
		{FUSE_SET_ATTR_MTIME_NOW, NADB_SET_MTIME_NOW},
		{FUSE_SET_ATTR_CTIME, NADB_SET_CTIME},
	};
	unsigned to_set = 0;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (valid & map[i].fuse)
			to_set |= map[i].nadb;
	return to_set;
}

/* Have the kernel drop INO's cached attributes now, after WHAT changed
 * them.  Attributes only: that takes no lock a writer holds. */
static void drop_cached_attrs(struct nadbfs *fs, fuse_ino_t ino, const char *what)
{
	int err = fuse_lowlevel_notify_inval_inode(fs->notifier.se, ino, -1, 0);
	if (err && err != -ENOENT)
		nadb_log("inode %llu: cannot drop the kernel's cached attributes after %s: %s",
			 (unsigned long long)ino, what, strerror(-err));
}

/* Clear INO's set-id bits for REQ's caller (nadb_kill_setid says which),
 * before the change that clears them, as the VFS does.  The kernel left
 * that to us (wire.c).  NOTIFY: the reply carries no attributes, so the
 * kernel's cached mode is dropped here, before it: no exec meets the old
 * bits.  1: cleared, 0: nothing to clear, or -errno. */
static int kill_setid(fuse_req_t req, fuse_ino_t ino, bool notify)
{
	struct nadbfs *fs = fs_of(req);
	struct caller c;
	int rc = nadb_kill_setid(fs->store, ino, caller_of(req, &c, false), false);
	if (rc == -EAGAIN) /* the caller's supplementary groups decide */
		rc = nadb_kill_setid(fs->store, ino, caller_of(req, &c, true), true);
	if (rc > 0 && notify)
		drop_cached_attrs(fs, ino, "clearing its set-id bits");
	return rc;
}

static void nadbfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			   int valid, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_SETATTR);
	if (special_refuse(sp, req, ino, "setattr"))
		return;
	struct nadb_attr in = {
		.ino = ino, .mode = attr->st_mode,
		.uid = attr->st_uid, .gid = attr->st_gid,
		.size = (uint64_t)attr->st_size,
		.atime = attr->st_atim, .mtime = attr->st_mtim, .ctime = attr->st_ctim,
	}, out;
	/* Even with a handle, a size change goes by inode: the engine's open
	 * files share one buffer per inode. */
	(void)fi;
	unsigned fields = nadb_fields_of(valid);
	int rc = 0;
	/* A chown, or a truncate by a caller without CAP_FSETID: the kernel's
	 * FATTR_KILL_SUIDGID, which libfuse passes on as KILL_SUID (wire.c).
	 * The reply carries the new mode. */
	int killed = (valid & FUSE_SET_ATTR_KILL_SUID) && !(fields & NADB_SET_MODE)
			     ? kill_setid(req, ino, false) : 0;
	if (killed >= 0)
		rc = nadb_setattr(fs_of(req)->store, ino, &in, fields, &out);
	else
		rc = killed;
	if (rc && killed > 0) /* cleared, but the error reply says nothing */
		drop_cached_attrs(fs_of(req), ino, "clearing its set-id bits");
	reply_attr_or_error(req, stale_if_gone(rc), &out);
}

static void nadbfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	TIME_OP(req, OP_READLINK);
	if (special_refuse(sp, req, ino, "readlink"))
		return;
	char target[PATH_MAX];
	int rc = nadb_readlink(fs_of(req)->store, ino, target, sizeof(target));
	if (rc < 0)
		reply_err(req, -stale_if_gone(rc));
	else
		fuse_reply_readlink(req, target);
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name,
		      uint32_t mode, uint64_t rdev)
{
	struct caller c;
	struct nadb_attr a;
	int rc = nadb_mknod(fs_of(req)->store, parent, name, mode, rdev,
			    caller_of(req, &c, groups_decide(mode)), &a);
	reply_entry_or_error(req, rc, &a);
}

static void nadbfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
			 mode_t mode, dev_t rdev)
{
	TIME_OP(req, OP_MKNOD);
	if (special_refuse(sp, req, parent, "mknod"))
		return;
	make_node(req, parent, name, mode, rdev);
}

static void nadbfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
			 mode_t mode)
{
	TIME_OP(req, OP_MKDIR);
	if (special_refuse(sp, req, parent, "mkdir"))
		return;
	make_node(req, parent, name, S_IFDIR | (mode & 07777), 0);
}

static void nadbfs_symlink(fuse_req_t req, const char *target,
			   fuse_ino_t parent, const char *name)
{
	TIME_OP(req, OP_SYMLINK);
	if (special_refuse(sp, req, parent, "symlink"))
		return;
	struct caller c;
	struct nadb_attr a;
	int rc = nadb_symlink(fs_of(req)->store, parent, name, target,
			      caller_of(req, &c, false), &a);
	reply_entry_or_error(req, rc, &a);
}

static void nadbfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	TIME_OP(req, OP_UNLINK);
	if (special_unlink(sp, req, parent, name))
		return;
	reply_status(req, nadb_unlink(fs_of(req)->store, parent, name));
}

static void nadbfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	TIME_OP(req, OP_RMDIR);
	if (special_refuse(sp, req, parent, "rmdir"))
		return;
	reply_status(req, nadb_rmdir(fs_of(req)->store, parent, name));
}

static void nadbfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
			  fuse_ino_t newparent, const char *newname,
			  unsigned int flags)
{
	TIME_OP(req, OP_RENAME);
	if (special_refuse(sp, req, parent, "rename") ||
	    special_refuse(sp, req, newparent, "rename"))
		return;
	unsigned nadb_flags = 0;
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		reply_err(req, EINVAL);
		return;
	}
	if (flags & RENAME_NOREPLACE)
		nadb_flags |= NADB_RENAME_NOREPLACE;
	if (flags & RENAME_EXCHANGE)
		nadb_flags |= NADB_RENAME_EXCHANGE;
	reply_status(req, nadb_rename(fs_of(req)->store, parent, name, newparent,
				      newname, nadb_flags));
}

static void nadbfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
			const char *newname)
{
	TIME_OP(req, OP_LINK);
	if (special_refuse(sp, req, newparent, "link") ||
	    special_refuse(sp, req, ino, "link"))
		return;
	struct nadb_attr a;
	int rc = nadb_link(fs_of(req)->store, ino, newparent, newname, &a);
	reply_entry_or_error(req, stale_if_gone(rc), &a);
}

static void nadbfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_OPEN);
	struct caller c;
	if (special_open(sp, req, ino, fi,
			 special_is_ctl(ino) ? caller_of(req, &c, true) : NULL))
		return;
	struct nadb_file *f;
	int rc = 0;
	if (wire_asks_kill_setid()) /* O_TRUNC by a caller without CAP_FSETID */
		rc = kill_setid(req, ino, true);
	if (rc >= 0)
		rc = nadb_file_open(fs_of(req)->store, ino, open_flags_of(fi->flags), &f);
	if (rc < 0) {
		reply_err(req, -stale_if_gone(rc));
		return;
	}
	hand_file_to_kernel(req, fi, f);
	/* -ENOENT: the opener was interrupted and no release will come. */
	if (fuse_reply_open(req, fi) == -ENOENT)
		nadb_file_close(f);
}

static void nadbfs_create(fuse_req_t req, fuse_ino_t parent, const char *name,
			  mode_t mode, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_CREATE);
	if (special_refuse(sp, req, parent, "create"))
		return;
	struct nadbfs *fs = fs_of(req);
	struct caller c;
	struct nadb_attr a;
	struct nadb_file *f;
	struct fuse_entry_param e;
	/* the handle's fsync hears of a failed sync that carried the create */
	uint64_t failures = nadb_store_sync_failures(fs->store);
	int rc = nadb_mknod(fs->store, parent, name, S_IFREG | (mode & 07777), 0,
			    caller_of(req, &c, groups_decide(S_IFREG | mode)), &a);
	if (rc == 0) {
		rc = nadb_file_open(fs->store, a.ino,
				    open_flags_of(fi->flags) & NADB_OPEN_WRITE, &f);
		/* The kernel holds the parent locked: the name is still ours. */
		if (rc < 0)
			nadb_unlink(fs->store, parent, name);
		else
			nadb_file_heard_failures(f, failures);
	}
	if (rc < 0) {
		reply_err(req, -rc);
		return;
	}
	hand_file_to_kernel(req, fi, f);
	entry_of(fs, &a, &e);
	kernel_holds(req, &a);
	if (fuse_reply_create(req, &e, fi) == -ENOENT) { /* interrupted */
		nadb_file_close(f);
		if (!S_ISDIR(a.mode))
			nadb_forget(fs->store, a.ino, 1); /* the kernel holds nothing */
	}
}

static void nadbfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	TIME_OP(req, OP_READ);
	if (special_read(sp, req, ino, size, off, fi))
		return;
	struct nadb_file *f = file_of(fi);
	(void)ino;
	if (!f) {
		reply_err(req, EBADF);
		return;
	}
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = nadb_file_read(f, buf, size, off);
	if (n < 0)
		reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void queue_reaped_name(void *ctx, uint64_t parent, const char *name,
			      uint64_t ino);
static void notifier_wait(void *ctx);

/* A commit failed (ENOSPC, say): the key keeps its stored value, but the
 * kernel holds the pages and size of the writes that went in; with
 * keep_cache a later reader would see them.  Have them dropped (from the
 * notifier's thread: the kernel may hold page locks for this request).
 * True when a notice was queued. */
static bool commit_failed(fuse_req_t req, fuse_ino_t ino, int rc)
{
	if (rc >= 0 || rc == -EBADF)
		return false;
	queue_reaped_name(&fs_of(req)->notifier, 0, "", ino);
	return true;
}

/* Have the kernel drop INO's cached pages and attributes before REQ is
 * answered (at most NOTIFY_WAIT_MS): for requests whose caller holds no
 * page lock (a write on an O_DIRECT handle; a flush). */
static void drop_cached_pages(fuse_req_t req, fuse_ino_t ino)
{
	struct nadbfs *fs = fs_of(req);
	queue_reaped_name(&fs->notifier, 0, "", ino);
	notifier_wait(&fs->notifier);
}

static void nadbfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
			 size_t size, off_t off, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_WRITE);
	if (special_write(sp, req, ino, buf, size, fi))
		return;
	struct nadb_file *f = file_of(fi);
	if (!f) {
		reply_err(req, EBADF);
		return;
	}
	/* a caller without CAP_FSETID: for O_DIRECT whether or not the kernel
	 * agreed to leave it to us (its direct path never clears them) */
	int rc = wire_asks_kill_setid() ? kill_setid(req, ino, true) : 0;
	ssize_t n = rc < 0 ? rc : nadb_file_write(f, buf, size, off);
	/* An O_DIRECT write bypasses the page cache, and the kernel drops the
	 * range's pages only before sending it: a buffered read meanwhile
	 * can have cached what it replaces.  Drop them again before the
	 * write returns (see nadbfs_init: the kernel does not check mtimes). */
	if (n > 0 && (fi->flags & O_DIRECT) && !fi->writepage)
		drop_cached_pages(req, ino);
	if (n < 0)
		reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

/* Run a call on the request's open file, replying EBADF without one. */
static void with_file(fuse_req_t req, struct fuse_file_info *fi,
		      int (*call)(struct nadb_file *))
{
	struct nadb_file *f = file_of(fi);
	reply_status(req, f ? call(f) : -EBADF);
}

/* Every close(2) of a descriptor: the content becomes the key's value. */
static void nadbfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_FLUSH);
	if (special_is_ino(ino)) {
		reply_err(req, 0);
		return;
	}
	struct nadb_file *f = file_of(fi);
	int rc = f ? nadb_file_commit(f) : -EBADF;
	/* close(2) returns once the pages are gone: a reader that opens the
	 * key afterwards reads its stored value (see nadbfs_init). */
	if (commit_failed(req, ino, rc))
		notifier_wait(&fs_of(req)->notifier);
	reply_status(req, rc);
}

static void nadbfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_RELEASE);
	if (special_release(sp, req, ino, fi))
		return;
	struct nadb_file *f = file_of(fi);
	int rc = f ? nadb_file_close(f) : -EBADF;
	commit_failed(req, ino, rc);
	reply_status(req, rc);
}

/* fsync and fdatasync alike: the engine has no cheaper "data only". */
static void nadbfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
			 struct fuse_file_info *fi)
{
	TIME_OP(req, OP_FSYNC);
	if (special_is_ino(ino)) {
		reply_err(req, 0);
		return;
	}
	(void)ino;
	(void)datasync;
	with_file(req, fi, nadb_file_fsync);
}

static void nadbfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
			     off_t off, off_t len, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_FALLOCATE);
	if (special_refuse(sp, req, ino, "fallocate"))
		return;
	struct nadb_file *f = file_of(fi);
	if (mode != 0) { /* punching holes, zeroing ranges, keep-size... */
		reply_status(req, -EOPNOTSUPP);
		return;
	}
	/* The kernel left the set-id bits to us (wire.c) but says nothing
	 * here: a caller other than root stands for one without CAP_FSETID. */
	int rc = f ? 0 : -EBADF;
	if (!rc && fuse_req_ctx(req)->uid != 0 && wire_leaves_setid_to_us(&fs_of(req)->wire))
		rc = kill_setid(req, ino, true);
	reply_status(req, rc < 0 ? rc : nadb_file_allocate(f, off, len));
}

static void nadbfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_OPENDIR);
	if (special_opendir(sp, req, ino, fi))
		return;
	struct dir_handle *d = calloc(1, sizeof(*d));
	struct nadb_attr a;
	int rc = d ? nadb_getattr(fs_of(req)->store, ino, &a) : -ENOMEM;
	if (rc == 0 && !S_ISDIR(a.mode))
		rc = -ENOTDIR;
	if (rc < 0) {
		free(d);
		reply_err(req, -stale_if_gone(rc));
		return;
	}
	d->nextra = special_names_in(sp, ino, d->extra_name, d->extra_ino, d->extra_mode);
	d->first_entry = DOTDOT_OFF + 1 + d->nextra;
	/* cache_readdir stays off: it would also need invalidating when a
	 * child's attributes change, which readdirplus entries carry. */
	fi->fh = (uintptr_t)d;
	if (fuse_reply_open(req, fi) == -ENOENT)
		free_dir(d);
}

static void nadbfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_READDIR);
	if (special_readdir(sp, req, ino, size, off, fi, false))
		return;
	read_directory(req, ino, size, off, fi, false);
}

static void nadbfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			       off_t off, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_READDIR);
	if (special_readdir(sp, req, ino, size, off, fi, true))
		return;
	read_directory(req, ino, size, off, fi, true);
}

static void nadbfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	TIME_OP(req, OP_RELEASEDIR);
	if (special_releasedir(sp, req, ino, fi))
		return;
	(void)ino;
	free_dir(dir_of(fi));
	reply_err(req, 0);
}

/* Directory changes are steps of the index: syncing the store makes them
 * durable. */
static void nadbfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			    struct fuse_file_info *fi)
{
	if (special_is_ino(ino)) {
		reply_err(req, 0);
		return;
	}
	(void)ino;
	(void)datasync;
	(void)fi;
	reply_status(req, nadb_store_sync(fs_of(req)->store));
}

/* access(2), faccessat(2) and chdir.  The kernel asks only a mount it
 * does not check itself (kernel_checks_modes); the answer follows the same
 * rules as its check would. */
static_assert(NADB_MAY_READ == R_OK && NADB_MAY_WRITE == W_OK && NADB_MAY_EXEC == X_OK,
	      "access(2)'s mask is the engine's");
static void nadbfs_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	TIME_OP(req, OP_ACCESS);
	uint32_t mode = 0, uid = 0, gid = 0;
	int rc;
	if (special_is_ino(ino)) {
		struct stat st = {0};
		rc = special_attr(sp, ino, &st);
		mode = st.st_mode, uid = st.st_uid, gid = st.st_gid;
	} else {
		struct nadb_attr a = {0};
		rc = stale_if_gone(nadb_getattr(fs_of(req)->store, ino, &a));
		mode = a.mode, uid = a.uid, gid = a.gid;
	}
	unsigned want = (unsigned)mask & (R_OK | W_OK | X_OK);
	if (!rc && want) {
		struct caller c;
		rc = nadb_may_access(mode, uid, gid, caller_of(req, &c, true), want);
	}
	reply_status(req, rc);
}

static void nadbfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	TIME_OP(req, OP_STATFS);
	(void)sp;
	struct nadb_statfs s;
	struct statvfs sv;
	(void)ino;
	int rc = nadb_statfs(fs_of(req)->store, &s);
	if (rc < 0) {
		reply_err(req, -rc);
		return;
	}
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = sv.f_frsize = s.bsize;
	sv.f_blocks = s.blocks;
	sv.f_bfree = s.bfree;
	sv.f_bavail = s.bavail;
	sv.f_files = s.files;
	sv.f_ffree = sv.f_favail = s.ffree;
	sv.f_namemax = NADB_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/* The engine keeps user.* only (store.h).  Answering every other name here
 * keeps the kernel's frequent probes (security.capability before writes,
 * system.posix_acl_* on access) away from the index. */

static bool engine_keeps_xattr(const char *name)
{
	return strncmp(name, "user.", 5) == 0;
}

static void nadbfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			    const char *value, size_t size, int flags)
{
	TIME_OP(req, OP_SETXATTR);
	if (special_refuse(sp, req, ino, "setxattr"))
		return;
	int nadb_flags = 0;
	if (!engine_keeps_xattr(name)) {
		reply_err(req, EOPNOTSUPP);
		return;
	}
	if (flags & XATTR_CREATE)
		nadb_flags |= NADB_XATTR_CREATE;
	if (flags & XATTR_REPLACE)
		nadb_flags |= NADB_XATTR_REPLACE;
	struct caller c;
	struct nadbfs *fs = fs_of(req);
	/* An expiry now or past deletes the key, and its notice (a
	 * notify_delete) is not waited for here, unlike a /.ctl request's:
	 * it needs the key's inode lock, which the kernel holds until this
	 * reply (waiting stalled every such setxattr NOTIFY_WAIT_MS, with
	 * the directory locked).  It lands right after the reply. */
	int rc = stale_if_gone(nadb_setxattr(fs->store, ino, name, value, size, nadb_flags,
					     caller_of(req, &c, true)));
	/* user.nadb.created, updated, accessed: the times stat shows */
	if (rc == 0 && !strncmp(name, "user.nadb.", 10))
		drop_cached_attrs(fs, ino, name);
	reply_status(req, rc);
}

/* The xattr size protocol: SIZE 0 asks for the size; else the value. */
static void reply_xattr_result(fuse_req_t req, ssize_t n, const char *buf,
			       size_t size)
{
	if (n < 0)
		reply_err(req, (int)-n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

static void nadbfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			    size_t size)
{
	TIME_OP(req, OP_GETXATTR);
	if (special_xattr(sp, req, ino, false, size))
		return;
	if (!engine_keeps_xattr(name)) {
		reply_err(req, EOPNOTSUPP);
		return;
	}
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = nadb_getxattr(fs_of(req)->store, ino, name, buf, size);
	n = n == -ENOENT ? -ESTALE : n;
	reply_xattr_result(req, n, buf, size);
	free(buf);
}

static void nadbfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	TIME_OP(req, OP_LISTXATTR);
	if (special_xattr(sp, req, ino, true, size))
		return;
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		reply_err(req, ENOMEM);
		return;
	}
	ssize_t n = nadb_listxattr(fs_of(req)->store, ino, buf, size);
	n = n == -ENOENT ? -ESTALE : n;
	reply_xattr_result(req, n, buf, size);
	free(buf);
}

static void nadbfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	TIME_OP(req, OP_REMOVEXATTR);
	if (special_refuse(sp, req, ino, "removexattr"))
		return;
	if (!engine_keeps_xattr(name)) {
		reply_status(req, -EOPNOTSUPP);
	} else {
		struct caller c;
		reply_status(req, stale_if_gone(nadb_removexattr(fs_of(req)->store, ino, name,
								 caller_of(req, &c, true))));
	}
}

/* No flock, getlk or setlk: without them the kernel locks locally, which is
 * right for a filesystem with a single client. */
static const struct fuse_lowlevel_ops nadbfs_ops = {
	.init = nadbfs_init,
	.lookup = nadbfs_lookup,
	.forget = nadbfs_forget,
	.forget_multi = nadbfs_forget_multi,
	.getattr = nadbfs_getattr,
	.setattr = nadbfs_setattr,
	.readlink = nadbfs_readlink,
	.mknod = nadbfs_mknod,
	.mkdir = nadbfs_mkdir,
	.unlink = nadbfs_unlink,
	.rmdir = nadbfs_rmdir,
	.symlink = nadbfs_symlink,
	.rename = nadbfs_rename,
	.link = nadbfs_link,
	.open = nadbfs_open,
	.read = nadbfs_read,
	.write = nadbfs_write,
	.flush = nadbfs_flush,
	.release = nadbfs_release,
	.fsync = nadbfs_fsync,
	.opendir = nadbfs_opendir,
	.readdir = nadbfs_readdir,
	.readdirplus = nadbfs_readdirplus,
	.releasedir = nadbfs_releasedir,
	.fsyncdir = nadbfs_fsyncdir,
	.statfs = nadbfs_statfs,
	.setxattr = nadbfs_setxattr,
	.getxattr = nadbfs_getxattr,
	.listxattr = nadbfs_listxattr,
	.removexattr = nadbfs_removexattr,
	.create = nadbfs_create,
	.fallocate = nadbfs_fallocate,
	.access = nadbfs_access,
};

/* ---- command line ------------------------------------------------------- */

enum {
	KEY_COMPRESS,
	KEY_COMPRESS_LEVEL,
	KEY_BUFFER_MB,
	KEY_FLUSH_INTERVAL,
	KEY_CHUNK_KB,
	KEY_ATTR_TIMEOUT,
	KEY_REAP_INTERVAL_MS,
	KEY_COMPACT_GARBAGE,
	KEY_MIN_REPLICAS,
	KEY_STATS,
	KEY_FORCE_CREATE,
	KEY_LOG,
	KEY_CHECK,
	KEY_TAKEOVER,
};

static const struct fuse_opt nadbfs_opts[] = {
	FUSE_OPT_KEY("compress=", KEY_COMPRESS),
	FUSE_OPT_KEY("compress_level=", KEY_COMPRESS_LEVEL),
	FUSE_OPT_KEY("buffer_mb=", KEY_BUFFER_MB),
	FUSE_OPT_KEY("flush_interval=", KEY_FLUSH_INTERVAL),
	FUSE_OPT_KEY("chunk_kb=", KEY_CHUNK_KB),
	FUSE_OPT_KEY("attr_timeout=", KEY_ATTR_TIMEOUT),
	FUSE_OPT_KEY("reap_interval_ms=", KEY_REAP_INTERVAL_MS),
	FUSE_OPT_KEY("compact_garbage=", KEY_COMPACT_GARBAGE),
	FUSE_OPT_KEY("min_replicas=", KEY_MIN_REPLICAS),
	FUSE_OPT_KEY("stats=", KEY_STATS),
	FUSE_OPT_KEY("force_create", KEY_FORCE_CREATE),
	FUSE_OPT_KEY("log=", KEY_LOG),
	FUSE_OPT_KEY("check=", KEY_CHECK),
	FUSE_OPT_KEY("takeover=", KEY_TAKEOVER),
	/* fstab bookkeeping mount(8) may hand to mount.fuse3: not for us. */
	FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nouser", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("owner", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("group", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("comment=", FUSE_OPT_KEY_DISCARD),
	/* Kernel flags libfuse does not know, common in fstab lines.  Reads
	 * never reach the daemon and atime changes only by touch (README:
	 * Limits), so the atime modes change nothing here; the others have
	 * no meaning for a FUSE mount.  Accepted, so that such a line mounts
	 * (libfuse itself takes rw, ro, [no]suid, [no]dev, [no]exec,
	 * [no]atime, sync, async and dirsync). */
	FUSE_OPT_KEY("relatime", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("norelatime", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("strictatime", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nostrictatime", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("lazytime", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nolazytime", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("diratime", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nodiratime", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("iversion", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("noiversion", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("silent", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("loud", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nomand", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_END
};

static void print_usage(FILE *out, const char *prog)
{
	fprintf(out, "usage: %s [-f] [-d] [-s] [-o OPT[,OPT...]] STORE MOUNTPOINT\n",
		prog);
}

static void print_help(const char *prog)
{
	struct nadb_options d;
	nadb_options_default(&d);
	print_usage(stdout, prog);
	printf("\nServe the nadb store STORE on MOUNTPOINT as files /DB/NAMESPACE/KEY.\n"
	       "STORE is a directory (created with mode 0700 if missing, or empty) or\n"
	       "a Redis server: redis://[[USER]:PASSWORD@]HOST[:PORT][/NAME].\n"
	       "A Redis store another daemon serves is mounted read-only, following\n"
	       "that daemon's changes (its kernel caches for %g s, or attr_timeout),\n"
	       "and taken over (as root) once that daemon is gone.\n\n"
	       "nadb options:\n"
	       "    -o compress=auto|off   compress chunks with zlib where it saves\n"
	       "                           at least 1/8 (default: %s)\n"
	       "    -o compress_level=N    zlib level, 1..9 (default: %d)\n"
	       "    -o buffer_mb=N         MiB of write buffers, all files together\n"
	       "                           (default: %u)\n"
	       "    -o flush_interval=N    seconds between durable commits (default: %u)\n"
	       "    -o chunk_kb=N          chunk size of a NEW store in KiB, a power of\n"
	       "                           two in 4..16384 (default: %u)\n"
	       "    -o attr_timeout=SECS   seconds the kernel caches names and\n"
	       "                           attributes, never past a key's expiry\n"
	       "                           (default: %g)\n"
	       "    -o reap_interval_ms=N  milliseconds between the reaper's passes\n"
	       "                           over expired keys, 10..3600000 (default: %u)\n"
	       "    -o compact_garbage=N   compact pack segments once N%% of them is\n"
	       "                           garbage; 0: only on demand (default: %u)\n"
	       "    -o min_replicas=N      Redis: fsync, and claims of new inode numbers\n"
	       "                           (new keys and namespaces), fail unless N\n"
	       "                           replicas confirm them (WAIT); 0..16\n"
	       "                           (default: 0, as many as are there)\n"
	       "    -o stats=on|off        time every request for /.stats (default: on)\n"
	       "    -o force_create        make a new store in STORE even though it\n"
	       "                           holds other files (refused otherwise)\n"
	       "    -o log=FILE|syslog     where the daemon's lines go once it runs in\n"
	       "                           the background (default: STORE/nadbfs.log;\n"
	       "                           none for a Redis store); SIGHUP reopens FILE.\n"
	       "                           syslog: syslog or the journal, -f too\n"

	       "    -o check=on|off        walk the metadata file in a child before serving\n"
	       "                           it; damaged: refuse to mount (default: on)\n"
	       "    -o takeover=on|off     Redis: a follower (run by root) takes the store\n"
	       "                           over once its writer is gone (default: on)\n"
	       "    -o default_permissions the kernel checks modes even on a mount by root\n"
	       "                           without allow_other (set on every other mount)\n\n",
	       FOLLOWER_LEASE, d.compress == NADB_COMPRESS_OFF ? "off" : "auto", d.compress_level,
	       d.buffer_mb, d.flush_interval, d.chunk_kb, DEFAULT_ATTR_TIMEOUT,
	       d.reap_interval_ms, d.compact_garbage);
	printf("FUSE options:\n");
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static void print_version(void)
{
	printf("nadbfs " NADB_VERSION "\n");
	printf("FUSE library version %s\n", fuse_pkgversion());
	fflush(stdout); /* the next lines come partly from a child (fusermount3) */
	fuse_lowlevel_version();
}

/* "name=value" -> value; OPT is the whole option text. */
static const char *value_of(const char *opt)
{
	return strchr(opt, '=') + 1;
}

static int bad_value(const char *opt, const char *expected)
{
	fprintf(stderr, "nadbfs: bad option '%s': expected %s\n", opt, expected);
	return -1;
}

/* OPT's value, on or off, into *OUT. */
static int parse_on_off(const char *opt, bool *out)
{
	if (strcmp(value_of(opt), "on") == 0)
		*out = true;
	else if (strcmp(value_of(opt), "off") == 0)
		*out = false;
	else
		return bad_value(opt, "on or off");
	return 0;
}

static int parse_unsigned(const char *opt, unsigned long min, unsigned long max,
			  unsigned long *out)
{
	const char *text = value_of(opt);
	char *end;
	char expected[64];
	errno = 0;
	unsigned long v = strtoul(text, &end, 10);
	if (text[0] < '0' || text[0] > '9' || *end || errno || v < min || v > max) {
		snprintf(expected, sizeof(expected), "an integer in %lu..%lu", min, max);
		return bad_value(opt, expected);
	}
	*out = v;
	return 0;
}

static int parse_seconds(const char *opt, double *out)
{
	const char *text = value_of(opt);
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (!*text || *end || errno || !isfinite(v) || v < 0 || v > 1e9)
		return bad_value(opt, "a number of seconds >= 0");
	*out = v;
	return 0;
}

/* PATH made absolute (its directory must exist); NULL on error. */
static char *realpath_or_absolute(const char *path)
{
	if (!*path)
		return NULL;
	char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
	char *real = dir ? realpath(dir, NULL) : NULL;
	char *out = NULL;
	if (real && asprintf(&out, "%s/%s", strcmp(real, "/") ? real : "",
			     slash ? slash + 1 : path) < 0)
		out = NULL;
	free(dir);
	free(real);
	return out;
}

static int parse_nadb_option(struct nadbfs *fs, const char *opt, int key)
{
	unsigned long v = 0;
	int rc = 0;
	switch (key) {
	case KEY_COMPRESS:
		if (strcmp(value_of(opt), "auto") == 0)
			fs->engine.compress = NADB_COMPRESS_AUTO;
		else if (strcmp(value_of(opt), "off") == 0)
			fs->engine.compress = NADB_COMPRESS_OFF;
		else
			rc = bad_value(opt, "auto or off");
		break;
	case KEY_COMPRESS_LEVEL:
		rc = parse_unsigned(opt, 1, 9, &v);
		fs->engine.compress_level = (int)v;
		break;
	case KEY_BUFFER_MB:
		rc = parse_unsigned(opt, 1, 1u << 20, &v);
		fs->engine.buffer_mb = (unsigned)v;
		break;
	case KEY_FLUSH_INTERVAL:
		rc = parse_unsigned(opt, 1, 86400, &v);
		fs->engine.flush_interval = (unsigned)v;
		break;
	case KEY_CHUNK_KB:
		rc = parse_unsigned(opt, 4, 16384, &v);
		if (rc == 0 && (v & (v - 1)))
			rc = bad_value(opt, "a power of two in 4..16384");
		fs->engine.chunk_kb = (unsigned)v;
		break;
	case KEY_ATTR_TIMEOUT: {
		double t = 0;
		rc = parse_seconds(opt, &t);
		fs->timeout = t;
		fs->timeout_given = true;
		break;
	}
	case KEY_REAP_INTERVAL_MS:
		rc = parse_unsigned(opt, 10, 3600000, &v);
		fs->engine.reap_interval_ms = (unsigned)v;
		break;
	case KEY_COMPACT_GARBAGE:
		rc = parse_unsigned(opt, 0, 100, &v);
		fs->engine.compact_garbage = (unsigned)v;
		break;
	case KEY_MIN_REPLICAS:
		rc = parse_unsigned(opt, 0, 16, &v);
		fs->engine.min_replicas = (unsigned)v;
		break;
	case KEY_LOG:
		free(fs->log_path);
		fs->log_path = NULL;
		/* A file of that name is still ./syslog. */
		fs->log_syslog = strcmp(value_of(opt), "syslog") == 0;
		if (!fs->log_syslog && !(fs->log_path = realpath_or_absolute(value_of(opt))))
			rc = bad_value(opt, "a file name");
		break;
	case KEY_FORCE_CREATE:
		fs->engine.create_among_files = true;
		break;
	case KEY_STATS:
		rc = parse_on_off(opt, &fs->measure);
		break;
	case KEY_CHECK:
		rc = parse_on_off(opt, &fs->engine.check_meta);
		break;
	case KEY_TAKEOVER:
		rc = parse_on_off(opt, &fs->takeover_wanted);
		break;
	}
	return rc;
}

/* fuse_opt_parse's callback: our options, and STORE (the first argument
 * that is not an option, as mount.fuse3 passes it); the rest is libfuse's. */
static int take_nadb_argument(void *data, const char *arg, int key,
			      struct fuse_args *outargs)
{
	struct nadbfs *fs = data;
	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (fs->store_arg)
			return 1; /* MOUNTPOINT, for fuse_parse_cmdline */
		fs->store_arg = strdup(arg);
		return fs->store_arg ? 0 : -1;
	case FUSE_OPT_KEY_OPT:
		/* A mount asked for read-only stays so: no takeover. */
		if (strcmp(arg, "ro") == 0)
			fs->takeover_wanted = false;
		/* libfuse makes allow_root the kernel's allow_other */
		if (strcmp(arg, "allow_other") == 0 || strcmp(arg, "allow_root") == 0)
			fs->allow_other = true;
		if (strcmp(arg, "default_permissions") == 0)
			fs->checks_asked = true;
		/* x-systemd.* and friends: for other programs. */
		return strncmp(arg, "x-", 2) == 0 ? 0 : 1;
	default:
		return parse_nadb_option(fs, arg, key) ? -1 : 0;
	}
}

/* STORE, absolute.  A store about to be created does not exist yet: then
 * its parent directory is resolved instead. */
static char *absolute_store_path(const char *arg)
{
	char *path = realpath(arg, NULL);
	if (path || errno != ENOENT)
		return path;
	char *copy = strdup(arg);
	if (!copy)
		return NULL;
	size_t len = strlen(copy);
	while (len > 1 && copy[len - 1] == '/')
		copy[--len] = '\0';
	char *slash = strrchr(copy, '/');
	const char *base = slash ? slash + 1 : copy;
	char *parent = NULL;
	if (!slash)
		parent = realpath(".", NULL);
	else if (slash == copy)
		parent = strdup("/");
	else {
		*slash = '\0';
		parent = realpath(copy, NULL);
	}
	if (parent && (!*base || !strcmp(base, ".") || !strcmp(base, "..")))
		errno = EINVAL;
	else if (parent && asprintf(&path, "%s%s%s", parent,
				    strcmp(parent, "/") ? "/" : "", base) < 0)
		path = NULL;
	int e = errno;
	free(parent);
	free(copy);
	errno = e;
	return path;
}

/* Does the kernel check mode bits (default_permissions)?  It must where
 * users other than root can come in: with allow_other (or allow_root,
 * which libfuse mounts as allow_other), or when a user mounted
 * (fusermount3), since a user's own bits bind them too.  A mount by root
 * without them lets in only processes whose uids and gids are all 0 (the
 * kernel's fuse_allow_current_process), for which generic_permission
 * allows every read and write (CAP_DAC_OVERRIDE): there the check costs a
 * GETATTR of the directory before each create, unlink or rename (the
 * kernel marks its mode stale after each one) and decides nothing, so it
 * is left out.  What stays: the kernel still refuses exec without an x
 * bit, and access(2) and chdir ask us (nadbfs_access).  What goes: the
 * checks for a process of uid 0 that dropped capabilities or acts as
 * another user through setfsuid (no NFS server can export this mount:
 * no FUSE_CAP_EXPORT_SUPPORT); -o default_permissions keeps them. */
static bool kernel_checks_modes(const struct nadbfs *fs)
{
	return fs->checks_asked || fs->allow_other || geteuid() != 0;
}

/* Options every mount gets; a ',' or '\' in STORE is escaped for
 * fuse_opt's option lists. */
static int add_fixed_mount_options(struct fuse_args *args, const char *store,
				   bool checks)
{
	/* nodev: device nodes are stored as metadata, never opened as devices. */
	static const char head[] = "-onodev,subtype=nadbfs,fsname=nadb:";
	static const char checked[] = "-odefault_permissions";
	if (checks && fuse_opt_add_arg(args, checked) != 0)
		return -1;
	char *opt = malloc(sizeof(head) + 2 * strlen(store));
	if (!opt)
		return -1;
	char *p = stpcpy(opt, head);
	for (const char *s = store; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	int rc = fuse_opt_add_arg(args, opt);
	free(opt);
	return rc;
}

/* ---- expired keys: telling the kernel ------------------------------------ */

/* Queue a notice; its number, for notifier_wait. */
static uint64_t queue_notice(struct notifier *n, enum notice kind, uint64_t parent,
			     const char *name, uint64_t ino)
{
	size_t len = strlen(name) + 1;
	struct reaped_name *r = malloc(sizeof(*r) + len);
	if (!r)
		return 0; /* the kernel then keeps the name until attr_timeout */
	r->next = NULL;
	r->parent = parent;
	r->ino = ino;
	r->kind = kind;
	memcpy(r->name, name, len);
	pthread_mutex_lock(&n->lock);
	*n->tail = r;
	n->tail = &r->next;
	uint64_t seq = ++n->queued;
	pthread_cond_signal(&n->wake);
	pthread_mutex_unlock(&n->lock);
	return seq;
}

/* The engine's nadb_reaped_fn: only queue (the engine's locks are held). */
static void queue_reaped_name(void *ctx, uint64_t parent, const char *name,
			      uint64_t ino)
{
	queue_notice(ctx, name[0] ? NOTICE_DELETE : NOTICE_INODE, parent, name, ino);
}

/* /.ctl changed INO (CREATED: made NAME in PARENT): tell the kernel. */
static void queue_changed_key(void *ctx, uint64_t parent, const char *name, uint64_t ino,
			      bool created)
{
	queue_notice(ctx, created ? NOTICE_ENTRY : NOTICE_INODE, parent, name, ino);
}

/* A follower's engine: the writer changed INO, or NAME in PARENT. */
static void note_notice(struct nadbfs *fs)
{
	atomic_store(&fs->noticed_ns, (int64_t)monotonic_ns());
}

static void queue_changed_inode(void *ctx, uint64_t ino)
{
	struct nadbfs *fs = ctx;
	note_notice(fs);
	queue_notice(&fs->notifier, NOTICE_INODE, 0, "", ino);
}

static void queue_changed_entry(void *ctx, uint64_t parent, const char *name)
{
	struct nadbfs *fs = ctx;
	note_notice(fs);
	queue_notice(&fs->notifier, NOTICE_ENTRY, parent, name, 0);
}

/* Wait until every notice queued so far was told, at most
 * NOTIFY_WAIT_MS: a notice can wait for a directory lock that a process
 * holds while its own request waits for a thread of ours. */
#define NOTIFY_WAIT_MS 1000
static void notifier_wait(void *ctx)
{
	struct notifier *n = ctx;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += (NOTIFY_WAIT_MS % 1000) * 1000000L;
	until.tv_sec += NOTIFY_WAIT_MS / 1000 + until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&n->lock);
	uint64_t want = n->queued;
	while (n->running && !atomic_load(&n->stop) && n->told < want &&
	       pthread_cond_timedwait(&n->done, &n->lock, &until) == 0)
		;
	bool late = n->running && !atomic_load(&n->stop) && n->told < want;
	pthread_mutex_unlock(&n->lock);
	if (late) /* the kernel was busy (page or directory locks): rare */
		nadb_log("the kernel took over %d ms to drop what it cached: answering "
			 "before it has", NOTIFY_WAIT_MS);
}

static void free_reaped_names(struct reaped_name *r)
{
	while (r) {
		struct reaped_name *next = r->next;
		free(r);
		r = next;
	}
}

static void *tell_kernel_reaped_names(void *arg)
{
	struct notifier *n = arg;
	pthread_mutex_lock(&n->lock);
	while (!atomic_load(&n->stop)) {
		if (!n->head) {
			pthread_cond_wait(&n->wake, &n->lock);
			continue;
		}
		struct reaped_name *batch = n->head;
		n->head = NULL;
		n->tail = &n->head;
		pthread_mutex_unlock(&n->lock);
		uint64_t count = 0;
		for (struct reaped_name *r = batch; r && !atomic_load(&n->stop);
		     r = r->next, count++) {
			/* -ENOENT: the name is not cached, nothing to forget; but
			 * the kernel then leaves the parent's attributes (its
			 * mtime) cached too, so those are dropped on their own. */
			int rc = 0;
			if (r->kind == NOTICE_DELETE) /* the dentry if it still names INO,
							 and the parent's attributes */
				rc = fuse_lowlevel_notify_delete(n->se, r->parent, r->ino,
								 r->name, strlen(r->name));
			else if (r->kind == NOTICE_ENTRY)
				rc = fuse_lowlevel_notify_inval_entry(n->se, r->parent, r->name,
								      strlen(r->name));
			else
				fuse_lowlevel_notify_inval_inode(n->se, r->ino, 0, 0);
			if (rc == -ENOENT)
				fuse_lowlevel_notify_inval_inode(n->se, r->parent, -1, 0);
		}
		free_reaped_names(batch);
		pthread_mutex_lock(&n->lock);
		n->told += count;
		pthread_cond_broadcast(&n->done);
	}
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

static int start_notifier(struct notifier *n, struct fuse_session *se)
{
	n->head = NULL;
	n->tail = &n->head;
	atomic_init(&n->stop, false);
	n->se = se;
	n->queued = n->told = 0;
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->wake, NULL);
	pthread_cond_init(&n->done, NULL);
	int rc = -pthread_create(&n->thread, NULL, tell_kernel_reaped_names, n);
	n->running = rc == 0;
	return rc;
}

/* Stop the notifier; names not told yet are dropped (the mount is going
 * away).  A notification in flight can wait for a request the stopped
 * session loop will never answer: after a grace period, abort the
 * connection (MNT_FORCE does that for FUSE), which fails such requests. */
static void stop_notifier(struct notifier *n, const char *mountpoint)
{
	if (!n->running)
		return;
	pthread_mutex_lock(&n->lock);
	atomic_store(&n->stop, true);
	pthread_cond_signal(&n->wake);
	pthread_mutex_unlock(&n->lock);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	if (pthread_timedjoin_np(n->thread, NULL, &until) != 0) {
		nadb_log("aborting the connection to finish a notification to the kernel");
		umount2(mountpoint, MNT_FORCE);
		pthread_join(n->thread, NULL);
	}
	n->running = false;
	free_reaped_names(n->head);
	pthread_cond_destroy(&n->wake);
	pthread_mutex_destroy(&n->lock);
}

/* ---- running ------------------------------------------------------------ */

/* Background mode, before anything is opened: fork.  The parent waits for
 * the child to report that it serves the mount, then exits 0; if the child
 * dies first (its errors went to our terminal), the parent exits with its
 * status.  The child, in a new session, gets the reporting end. */
static int fork_daemon(void)
{
	int report[2];
	if (pipe2(report, O_CLOEXEC)) {
		perror("nadbfs: pipe");
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("nadbfs: fork");
		return -1;
	}
	if (pid > 0) {
		char ok;
		int status;
		ssize_t n;
		close(report[1]);
		do
			n = read(report[0], &ok, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1)
			_exit(0);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		_exit(WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1);
	}
	close(report[0]);
	setsid();
	return report[1];
}

/* Background mode, once mounted: leave the terminal, send stderr to the
 * log file (or /dev/null) and tell the waiting parent. */
static void finish_detaching(int report_fd, int log_fd)
{
	int null_fd = open("/dev/null", O_RDWR);
	if (null_fd >= 0) {
		dup2(null_fd, STDIN_FILENO);
		dup2(null_fd, STDOUT_FILENO);
		if (null_fd > STDERR_FILENO)
			close(null_fd);
	}
	dup2(log_fd, STDERR_FILENO);
	close(log_fd);
	char ok = 1;
	/* If the parent was killed meanwhile, the mount still needs serving. */
	if (write(report_fd, &ok, 1) != 1)
		nadb_log("could not report to the starting process");
	close(report_fd);
}

/* What stderr becomes once detached: the log file, remembered for
 * SIGHUP; /dev/null with -o log=syslog, or for a Redis store without
 * -o log=FILE (it keeps nothing on local disk). */
static int open_log(const struct nadbfs *fs)
{
	char *path;
	if (fs->log_syslog || (!fs->log_path && nadb_store_is_url(fs->store_path)))
		return open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fs->log_path ? !(path = strdup(fs->log_path))
			 : asprintf(&path, "%s/nadbfs.log", fs->store_path) < 0)
		return -1;
	int fd = nadb_log_open_file(path);
	if (fd < 0)
		fprintf(stderr, "nadbfs: %s: %s\n", path, strerror(-fd));
	free(path);
	return fd;
}

/* SIGHUP in the background: logrotate has renamed the log file. */
static void reopen_log(int sig)
{
	(void)sig;
	nadb_log_reopen();
}

/* Installed before libfuse's handlers, which then leave SIGHUP alone
 * (libfuse sets only handlers still at their default). */
static int catch_sighup(void)
{
	struct sigaction sa = {.sa_handler = reopen_log, .sa_flags = SA_RESTART};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGHUP, &sa, NULL) == 0)
		return 0;
	perror("nadbfs: sigaction");
	return -1;
}

/* libfuse's own messages go where ours go; its debug output (-d) stays
 * on stderr as it is. */
static void log_fuse_message(enum fuse_log_level level, const char *fmt, va_list ap)
{
	if (level >= FUSE_LOG_INFO)
		vfprintf(stderr, fmt, ap);
	else
		nadb_logv(fmt, ap);
}

/* Serving from now on: the lines go to the log (see the top of this file). */
static void start_logging(const struct nadbfs *fs)
{
	nadb_log_to(fs->log_syslog ? NADB_LOG_SYSLOG : NADB_LOG_STDERR, "nadbfs");
	fuse_set_log_func(log_fuse_message);
}

static int open_store(struct nadbfs *fs)
{
	char line[1024];
	struct nadb_store *st = NULL;
	int rc = nadb_store_open(fs->store_path, &fs->engine, &st);
	if (rc == -EBUSY && nadb_store_is_url(fs->store_path)) {
		/* Another daemon writes it: follow that one, read-only.  Who
		 * holds it is no longer a failure's reason (the follower's
		 * is), but the log still says who. */
		char holder[sizeof(line)];
		nadb_log_advice("%s", nadb_log_reason(rc, holder, sizeof(holder)));
		rc = nadb_store_open_follower(fs->store_path, &fs->engine, &st);
		if (rc == 0) {
			nadb_log("%s: another daemon writes this store: mounted read-only, "
				 "following its changes", fs->store_arg);
			if (!fs->timeout_given)
				fs->timeout = FOLLOWER_LEASE;
		}
	}
	if (rc == 0) {
		rc = special_new(st, fs->measure, queue_reaped_name, &fs->notifier, &fs->sp);
		if (rc < 0)
			nadb_store_close(st);
		else
			fs->store = st;
	}
	if (rc == -EBUSY)
		fprintf(stderr, "nadbfs: %s: store is in use by another process\n",
			fs->store_arg);
	else if (rc == -ENOTEMPTY)
		fprintf(stderr, "nadbfs: %s: not a nadb store, and it holds other files; "
				"use an empty or new directory (or -o force_create to make "
				"a store among them)\n", fs->store_arg);
	else if (rc == -EUCLEAN)
		fprintf(stderr, "nadbfs: %s: the metadata file is damaged; not mounting. "
			"'nadb fsck --repair %s' saves what can be read\n", fs->store_arg,
			fs->store_arg);
	else if (rc < 0)
		fprintf(stderr, "nadbfs: %s: cannot open the store: %s\n",
			fs->store_arg, nadb_log_reason(rc, line, sizeof(line)));
	return rc;
}

/* MNT must be a directory that nothing is mounted on: a regular file
 * takes the mount (every request then fails with EIO), and a second mount
 * would hide the first without a word. */
static int check_mountpoint(const char *mnt)
{
	struct stat sb;
	if (stat(mnt, &sb)) {
		if (errno == ENOTCONN)
			fprintf(stderr, "nadbfs: %s: a mount whose daemon has died is still "
					"there; unmount it first: fusermount3 -u %s\n", mnt, mnt);
		else
			fprintf(stderr, "nadbfs: %s: %s\n", mnt, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "nadbfs: %s: not a directory: a mountpoint must be one\n", mnt);
		return -1;
	}
	FILE *f = setmntent("/proc/self/mounts", "r");
	struct mntent *m;
	int rc = 0;
	while (f && !rc && (m = getmntent(f)))
		if (!strcmp(m->mnt_dir, mnt)) {
			fprintf(stderr, "nadbfs: %s is already a mountpoint (%s %s); unmount "
					"it first: %s %s\n", mnt, m->mnt_type, m->mnt_fsname,
				!strncmp(m->mnt_type, "fuse", 4) ? "fusermount3 -u" : "umount",
				mnt);
			rc = -1;
		}
	if (f)
		endmntent(f);
	return rc;
}

static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *opts)
{
	if (opts->singlethread)
		return fuse_session_loop(se);
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(cfg, (unsigned)opts->clone_fd);
	fuse_loop_cfg_set_idle_threads(cfg, opts->max_idle_threads == UINT_MAX ?
					    DEFAULT_MAX_IDLE_THREADS :
					    opts->max_idle_threads);
	if (opts->max_threads)
		fuse_loop_cfg_set_max_threads(cfg, opts->max_threads);
	int rc = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc;
}

/* What a follower's engine tells this daemon's kernel. */
static struct nadb_follow_hooks follow_hooks(struct nadbfs *fs)
{
	return (struct nadb_follow_hooks){queue_changed_inode, queue_changed_entry, fs};
}

/* The threads that need the mount: the engine's flusher and reaper, and
 * the notifier the reaper feeds. */
static int start_threads(struct nadbfs *fs, struct fuse_session *se)
{
	bool follower = nadb_store_is_follower(fs->store);
	int rc = follower ? 0 : nadb_store_start_flusher(fs->store);
	special_set_notify(fs->sp, queue_changed_key, notifier_wait, &fs->notifier);
	if (rc == 0)
		rc = start_notifier(&fs->notifier, se);
	struct nadb_follow_hooks hooks = follow_hooks(fs);
	if (rc == 0)
		rc = follower ? nadb_store_start_following(fs->store, &hooks)
			      : nadb_store_start_reaper(fs->store, queue_reaped_name,
							&fs->notifier);
	if (rc < 0)
		fprintf(stderr, "nadbfs: cannot start a thread: %s\n", strerror(-rc));
	return rc;
}

static void stop_threads(struct nadbfs *fs, const char *mountpoint)
{
	nadb_store_stop_following(fs->store); /* no more notices after this... */
	nadb_store_stop_reaper(fs->store);     /* ...nor names */
	stop_notifier(&fs->notifier, mountpoint);
	nadb_store_stop_flusher(fs->store);
}

/* This daemon may not serve the store any more (core/lock.c: it is
 * another daemon's now, or, for a follower, of a format this nadbfs does
 * not read): what this mount would serve may be stale and nothing can be
 * changed, so it goes away as on
 * SIGTERM (fuse_set_signal_handlers) -- the kernel's caches with it -- and
 * the exit status says why.  Mounted again, it follows the new writer.
 * The signal goes to the thread in fuse_session_loop_mt's wait: sent to
 * the process, it may be taken by the very thread that lost the store,
 * which sets the session's exit flag that nothing then looks at.  (One
 * landing between the loop's look at that flag and its wait is still
 * missed, as any SIGTERM is: libfuse's loop has that window.) */
static void store_lost(void *ctx)
{
	struct nadbfs *fs = ctx;
	pthread_kill(fs->main_thread, SIGTERM);
}

/* ---- a follower takes over ---------------------------------------------- */

/* Remount MNT read-write (or, with RDONLY, as it is: whether we may),
 * keeping its other flags.  They are read from the mount table, not with
 * statvfs(), which would be a request to this very daemon; and only if the
 * topmost mount on MNT is still a nadbfs one (ours: a follower's session
 * never leaves its mountpoint but by ending).  Only root may remount (a
 * user's mount, made by fusermount3, cannot be). */
static int remount(const char *mnt, bool rdonly)
{
	static const struct {
		const char *opt;
		unsigned long ms;
	} kept[] = {{"nosuid", MS_NOSUID},        {"nodev", MS_NODEV},
		    {"noexec", MS_NOEXEC},        {"sync", MS_SYNCHRONOUS},
		    {"dirsync", MS_DIRSYNC},      {"noatime", MS_NOATIME},
		    {"nodiratime", MS_NODIRATIME}, {"relatime", MS_RELATIME},
		    {"lazytime", MS_LAZYTIME},    {"nosymfollow", MS_NOSYMFOLLOW}};
	FILE *f = setmntent("/proc/self/mounts", "r");
	if (!f)
		return -errno;
	unsigned long flags = 0;
	bool ours = false;
	struct mntent *m;
	while ((m = getmntent(f))) /* the last entry on MNT is the topmost */
		if (!strcmp(m->mnt_dir, mnt)) {
			ours = !strcmp(m->mnt_type, "fuse.nadbfs");
			flags = 0;
			for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
				if (hasmntopt(m, kept[i].opt))
					flags |= kept[i].ms;
		}
	endmntent(f);
	if (!ours)
		return -ENOENT;
	flags |= MS_REMOUNT | (rdonly ? MS_RDONLY : 0);
	return mount(NULL, mnt, NULL, flags, NULL) ? -errno : 0;
}

/* The writer is gone: open the store as its writer and serve that from
 * now on.  Each step that can fail comes before the swap, and a failure
 * puts everything back: the follower follows again.  Requests under way
 * finish on the follower's handle, and files opened before go on reading
 * through it (it stays open, following no more, until the end); what the
 * kernel says of its inodes through it is forwarded to the new handle
 * (nadb_adopt_kernel_refs, the last step), so a key it holds stays
 * readable when unlinked, as on any writer. */
static int take_over(struct nadbfs *fs)
{
	struct nadb_store *st = NULL, *old = fs->store;
	int rc = nadb_store_take_over(fs->store_path, &fs->engine, old, &st);
	if (rc == -EBUSY) {
		nadb_log("%s: another follower took the store over first: following it",
			 fs->store_arg);
		return rc;
	}
	if (rc)
		goto failed;
	nadb_store_on_lost(st, store_lost, fs); /* its lease runs already */
	nadb_store_note_mount(st, fs->mountpoint); /* who holds it, for others */
	/* Nobody else writes now: no more notices to hear, and this daemon
	 * counted out as a follower before its flusher counts followers. */
	nadb_store_stop_following(old);
	if (!(rc = nadb_store_start_flusher(st)) &&
	    !(rc = nadb_store_start_reaper(st, queue_reaped_name, &fs->notifier)))
		/* (stopping: the session may be over, its mount gone) */
		rc = atomic_load(&fs->takeover_stop) ? -ESHUTDOWN
						     : remount(fs->mountpoint, false);
	if (!rc && (rc = nadb_adopt_kernel_refs(st, old)))
		(void)remount(fs->mountpoint, true);
	if (rc) {
		nadb_store_stop_reaper(st);
		nadb_store_stop_flusher(st);
		nadb_store_close(st); /* lets go of the lock */
		struct nadb_follow_hooks hooks = follow_hooks(fs);
		if (nadb_store_start_following(old, &hooks))
			nadb_log("%s: cannot follow the store again either", fs->store_arg);
		goto failed;
	}
	if (!fs->timeout_given)
		fs->timeout = DEFAULT_ATTR_TIMEOUT;
	special_set_store(fs->sp, st);
	fs->followed = old;
	fs->store = st;
	nadb_log("%s: the writer is gone: this daemon writes the store now", fs->store_arg);
	return 0;
failed:
	if (rc == -ESHUTDOWN)
		return rc;
	char why[512];
	nadb_log("%s: the writer is gone, but this follower cannot take the store over: %s",
		 fs->store_arg, nadb_log_reason(rc, why, sizeof(why)));
	return rc;
}

/* Sleep MS ms, or less when told to stop; false if told to. */
static bool takeover_nap(struct nadbfs *fs, unsigned ms)
{
	for (unsigned t = 0; t < ms && !atomic_load(&fs->takeover_stop); t += TAKEOVER_NAP_MS)
		nanosleep(&(struct timespec){0, TAKEOVER_NAP_MS * 1000000L}, NULL);
	return !atomic_load(&fs->takeover_stop);
}

/* A follower's thread: every TAKEOVER_CHECK_MS (longer while Redis or the
 * takeover fails), is the writer gone?  Then take over, and from then on
 * let go of what reads through the follower's handle hold. */
static void *takeover_main(void *arg)
{
	struct nadbfs *fs = arg;
	int rc = remount(fs->mountpoint, true);
	if (rc) { /* no use taking the store if the mount stays read-only */
		nadb_log_advice("%s: this follower cannot take the store over when its "
				"writer is gone: it may not remount %s (%s)", fs->store_arg,
				fs->mountpoint, strerror(-rc));
		return NULL;
	}
	unsigned every = TAKEOVER_CHECK_MS;
	while (!fs->followed && !nadb_store_lost(fs->store) && takeover_nap(fs, every)) {
		rc = nadb_store_writer_gone(fs->store_path);
		if (rc == 1)
			rc = take_over(fs);
		bool failed = rc < 0 && rc != -EBUSY;
		every = !failed ? TAKEOVER_CHECK_MS
			: every < TAKEOVER_BACKOFF_MS / 2 ? 2 * every : TAKEOVER_BACKOFF_MS;
	}
	while (fs->followed && takeover_nap(fs, TAKEOVER_CHECK_MS))
		nadb_store_drop_reads(fs->followed);
	return NULL;
}

/* Only root can make the mount writable (remount): a follower mounted by
 * another user stays one. */
static int start_takeover(struct nadbfs *fs)
{
	if (!fs->takeover_wanted || !nadb_store_is_follower(fs->store) || geteuid() != 0)
		return 0;
	atomic_store(&fs->takeover_stop, false);
	int rc = -pthread_create(&fs->takeover, NULL, takeover_main, fs);
	fs->takeover_running = rc == 0;
	return rc;
}

static void stop_takeover(struct nadbfs *fs)
{
	if (!fs->takeover_running)
		return;
	atomic_store(&fs->takeover_stop, true);
	pthread_join(fs->takeover, NULL);
	fs->takeover_running = false;
}

/* Open, mount, serve until unmounted or signalled, close.  Returns the
 * exit status. */
static int run(struct nadbfs *fs, struct fuse_args *args,
	       const struct fuse_cmdline_opts *opts)
{
	int report_fd = -1, log_fd = -1, status = 1;
	if (check_mountpoint(opts->mountpoint))
		return 1;
	if (!opts->foreground && (report_fd = fork_daemon()) < 0)
		return 1;
	/* The options first (libfuse says what is wrong with them), then the
	 * store; a follower's session is made again, read-only, so that its
	 * kernel refuses every change itself (EROFS). */
	struct fuse_args again = FUSE_ARGS_INIT(0, NULL); /* parsing eats ARGS */
	for (int i = 0; i < args->argc; i++)
		if (fuse_opt_add_arg(&again, args->argv[i]) != 0)
			return 1;
	struct fuse_session *se = fuse_session_new(args, &nadbfs_ops, sizeof(nadbfs_ops), fs);
	if (se && open_store(fs) < 0) {
		fuse_session_destroy(se);
		se = NULL;
	}
	if (se && nadb_store_is_follower(fs->store)) {
		fuse_session_destroy(se);
		se = fuse_opt_add_arg(&again, "-oro") == 0
			     ? fuse_session_new(&again, &nadbfs_ops, sizeof(nadbfs_ops), fs)
			     : NULL;
		if (!se) {
			nadb_store_close(fs->store);
			fs->store = NULL;
		}
	}
	fuse_opt_free_args(&again);
	if (!se)
		return 1;
	if (!opts->foreground && ((log_fd = open_log(fs)) < 0 || catch_sighup()))
		goto out_store;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_store;
	if (fuse_session_mount(se, opts->mountpoint) != 0)
		goto out_signals;
	int rc = wire_attach(se, &fs->wire);
	if (rc < 0) {
		fprintf(stderr, "nadbfs: cannot read the FUSE device: %s\n", strerror(-rc));
		fuse_session_unmount(se);
		goto out_signals;
	}
	nadb_store_note_mount(fs->store, opts->mountpoint);
	fs->main_thread = pthread_self();
	fs->mountpoint = opts->mountpoint;
	nadb_store_on_lost(fs->store, store_lost, fs);
	rc = start_threads(fs, se);
	if (rc == 0 && (rc = start_takeover(fs)) < 0)
		fprintf(stderr, "nadbfs: cannot start a thread: %s\n", strerror(-rc));
	if (rc < 0)
		goto out_threads;
	if (chdir("/") != 0) /* keep no directory busy; harmless if it fails */
		fprintf(stderr, "nadbfs: chdir /: %s\n", strerror(errno));
	if (!opts->foreground) {
		finish_detaching(report_fd, log_fd);
		log_fd = report_fd = -1;
	}
	start_logging(fs);
	rc = serve(se, opts);
	stop_takeover(fs); /* fs->store is the one to close from here on */
	/* Whoever wants the store next waits for our last commit. */
	nadb_store_note_closing(fs->store);
	/* 0: unmounted; > 0: the signal that stopped us; < 0: an error. */
	status = rc < 0 ? 1 : 0;
	if (rc < 0)
		nadb_log("session loop failed: %s", strerror(-rc));
	if (nadb_store_lost(fs->store)) {
		nadb_log("%s: unmounting %s: this daemon may not serve the store any more "
			 "(said above)", fs->store_arg, opts->mountpoint);
		status = EXIT_LOST;
	}
out_threads:
	stop_takeover(fs);
	stop_threads(fs, opts->mountpoint);
	rc = nadb_store_close(fs->store); /* commits open files, syncs */
	fs->store = NULL;
	if (rc < 0) {
		nadb_log("%s: closing the store failed: %s", fs->store_arg, strerror(-rc));
		status = status == EXIT_LOST ? status : 1;
	}
	if (fs->followed)
		nadb_store_close(fs->followed);
	fs->followed = NULL;
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_store:
	if (fs->store)
		nadb_store_close(fs->store);
	if (log_fd >= 0)
		close(log_fd);
	fuse_session_destroy(se);
	return status;
}

/* A store URL's password stays in /proc/PID/cmdline, which every user can
 * read, for as long as the daemon runs: once it is parsed (and copied),
 * write over it in ARGV. */
static void hide_passwords(int argc, char *argv[])
{
	for (int i = 1; i < argc; i++) {
		if (!nadb_store_is_url(argv[i]))
			continue;
		char *rest = strstr(argv[i], "://") + 3;
		char *at = strchr(rest, '@'), *slash = strchr(rest, '/');
		char *colon = at ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
		if (at && (!slash || at < slash) && colon)
			memset(colon + 1, 'x', (size_t)(at - colon - 1));
	}
}

#define GO_ON (-1)

/* Parse everything.  Returns GO_ON, or the exit status when there is
 * nothing more to do (help, version, or an error already reported). */
static int parse_command_line(struct fuse_args *args, struct nadbfs *fs,
			      struct fuse_cmdline_opts *opts, const char *prog)
{
	if (fuse_opt_parse(args, fs, nadbfs_opts, take_nadb_argument) != 0)
		return 1;
	if (fuse_parse_cmdline(args, opts) != 0)
		return 1;
	if (opts->show_help) {
		print_help(prog);
		return 0;
	}
	if (opts->show_version) {
		print_version();
		return 0;
	}
	if (!fs->store_arg || !opts->mountpoint) {
		print_usage(stderr, prog);
		fprintf(stderr, "       %s --help\n", prog);
		return 1;
	}
	char name[4096];
	bool url = nadb_store_is_url(fs->store_arg);
	fs->store_path = url ? strdup(fs->store_arg) : absolute_store_path(fs->store_arg);
	if (!fs->store_path) {
		fprintf(stderr, "nadbfs: %s: %s\n", fs->store_arg, strerror(errno));
		return 1;
	}
	/* The mount table shows a URL without its password. */
	if (url && nadb_store_name(fs->store_arg, name, sizeof(name))) {
		fprintf(stderr, "nadbfs: %s: not a store URL: "
				"redis://[[USER]:PASSWORD@]HOST[:PORT][/NAME]\n", fs->store_arg);
		return 1;
	}
	if (add_fixed_mount_options(args, url ? name : fs->store_path,
				    kernel_checks_modes(fs)) != 0)
		return 1;
	return GO_ON;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct nadbfs fs = {.timeout = DEFAULT_ATTR_TIMEOUT, .measure = true,
			    .takeover_wanted = true};
	const char *prog = argc > 0 ? argv[0] : "nadbfs";

	memset(&opts, 0, sizeof(opts));
	nadb_log_to(NADB_LOG_HOLD, "nadbfs"); /* until serving: see the top */
	nadb_options_default(&fs.engine);
	/* A damaged metadata file would kill the daemon on some read: walk it
	 * in a child first (cost: README, "Damaged stores"). */
	fs.engine.check_meta = true;
	int status = parse_command_line(&args, &fs, &opts, prog);
	hide_passwords(argc, argv);
	if (status == GO_ON)
		status = run(&fs, &args, &opts);

	nadb_log_flush();
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	special_free(fs.sp);
	free(fs.store_arg);
	free(fs.store_path);
	free(fs.log_path);
	return status;
}
