/* special.h -- what nadbfs serves itself rather than from the store's tree:
 *
 *   /.stats, /DB/.stats, /DB/NS/.stats   statistics, one JSON document
 *   /.metrics                            the same for Prometheus
 *   /.ctl                                requests and replies (ctl.c)
 *   /tags/, /tags/TAG[+TAG...]/...       keys by tag, as mirrors of the tree
 *
 * Their inode numbers have the top bit set, which the engine never uses.
 * Files found through /tags are the real keys (their own inode numbers).
 */
#ifndef NADBFS_SPECIAL_H
#define NADBFS_SPECIAL_H

#define FUSE_USE_VERSION 312

#include "store.h"

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

/* FUSE operations whose latency /.stats reports. */
enum fs_op {
	OP_LOOKUP, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD, OP_MKDIR,
	OP_UNLINK, OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ,
	OP_WRITE, OP_FLUSH, OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIR,
	OP_RELEASEDIR, OP_STATFS, OP_SETXATTR, OP_GETXATTR, OP_LISTXATTR,
	OP_REMOVEXATTR, OP_CREATE, OP_FALLOCATE, OP_ACCESS, OP_COUNT
};

struct special;

/* MEASURE: keep per-operation latency histograms (-o stats=off: no).
 * REAPED: how the daemon tells the kernel about keys /.ctl's "reap" deletes. */
int special_new(struct nadb_store *st, bool measure, nadb_reaped_fn reaped,
		void *reaped_ctx, struct special **out);
void special_free(struct special *sp);
/* How /.ctl tells the kernel of a key it changed, and waits until told
 * (ctl.h's ctl_env). */
/* A follower took its store over (nadbfs.c): serve ST, its writer's handle,
 * from now on. */
void special_set_store(struct special *sp, struct nadb_store *st);
void special_set_notify(struct special *sp,
			void (*changed)(void *ctx, uint64_t parent, const char *name,
					uint64_t ino, bool created),
			void (*changed_wait)(void *ctx), void *ctx);

/* Time one request OP: take a start time, then record it on the way out.
 * Lock-free: counters are relaxed atomics.  In between, error replies of
 * this thread count as OP's. */
uint64_t special_op_start(const struct special *sp, enum fs_op op);
void special_op_done(struct special *sp, enum fs_op op, uint64_t start);

/* fuse_reply_err, counting ERR (if not 0) in /.stats and /.metrics under
 * the operation being answered.  Every error reply of fs/ goes through it. */
int special_reply_err(struct special *sp, fuse_req_t req, int err);

static inline bool special_is_ino(uint64_t ino)
{
	return ino >> 63;
}

/* Each of these answers the request and returns true when it concerns a
 * special inode (or a special name in PARENT); false: not ours, carry on. */
bool special_lookup(struct special *sp, fuse_req_t req, fuse_ino_t parent,
		    const char *name);
bool special_getattr(struct special *sp, fuse_req_t req, fuse_ino_t ino);
/* Is INO /.ctl?  Its opener's credentials are what its requests run as. */
bool special_is_ctl(uint64_t ino);
/* WHO: the caller, needed only for /.ctl (NULL otherwise). */
bool special_open(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		  struct fuse_file_info *fi, const struct nadb_caller *who);
bool special_read(struct special *sp, fuse_req_t req, fuse_ino_t ino, size_t size,
		  off_t off, struct fuse_file_info *fi);
bool special_write(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		   const char *buf, size_t size, struct fuse_file_info *fi);
bool special_release(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		     struct fuse_file_info *fi);
bool special_opendir(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		     struct fuse_file_info *fi);
bool special_readdir(struct special *sp, fuse_req_t req, fuse_ino_t ino, size_t size,
		     off_t off, struct fuse_file_info *fi, bool plus);
bool special_releasedir(struct special *sp, fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi);
/* rm under /tags/Q/...: the key loses Q's tags and stays. */
bool special_unlink(struct special *sp, fuse_req_t req, fuse_ino_t parent,
		    const char *name);
/* Anything else that would change a special inode or a name in a special
 * directory: refused (EPERM, EACCES for the statistics files), logged. */
bool special_refuse(struct special *sp, fuse_req_t req, fuse_ino_t ino,
		    const char *what);
/* xattrs of special inodes: none. */
/* LIST: listxattr (SIZE as asked); else getxattr. */
bool special_xattr(struct special *sp, fuse_req_t req, fuse_ino_t ino, bool list,
		   size_t size);

/* The special names a real directory lists after "." and "..": the root
 * has .ctl, .metrics, .stats and tags.  Databases and namespaces serve
 * .stats by name only: listed, it would be in every copy of a subtree
 * (cp -a, tar, rsync), which could not write it back.
 * Returns how many (at most 4) and fills names/inos/modes. */
int special_names_in(struct special *sp, fuse_ino_t dir, const char *names[4],
		     uint64_t inos[4], uint32_t modes[4]);
/* Attributes of a special inode, for readdirplus. */
int special_attr(struct special *sp, uint64_t ino, struct stat *st);

/* struct stat from engine attributes (shared by nadbfs.c and special.c). */
void stat_of_attr(const struct nadb_attr *a, struct stat *st);

/* How long the kernel may cache a key's name and attributes: the daemon's
 * attr_timeout, but never past the key's expiry. */
double special_timeout_for(double timeout, const struct nadb_attr *a);

#endif
