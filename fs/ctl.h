/* ctl.h -- /.ctl, the daemon's request/response file: atomic operations
 * (incr, cas, mset, mget) and maintenance (flush, compact, reap) for any
 * program that can open, write and read a file.  The protocol is in ctl.c
 * and the README.
 */
#ifndef NADBFS_CTL_H
#define NADBFS_CTL_H

#define FUSE_USE_VERSION 312

#include "store.h"

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <sys/types.h>

/* A descriptor's conversation: its request so far and its last reply. */
struct ctl;

/* What requests run against. */
struct ctl_env {
	struct nadb_store *st;
	struct fuse_session *se; /* to tell the kernel of changed keys; may be NULL */
	const struct nadb_caller *who;
	bool admin;              /* may flush, compact and reap */
	/* The maintenance commands (special.c): 0 or a negative errno. */
	int (*maintain)(void *ctx, const char *command);
	void *maintain_ctx;
};

/* READABLE: opened read-write (outcomes come back in the reply), or
 * write-only (a failed request fails its write, as it always has). */
struct ctl *ctl_new(bool readable);
void ctl_free(struct ctl *c);
/* Take SIZE bytes of a request; once it is whole, run it.  SIZE, or a
 * negative errno: -EINVAL for a malformed request, -EFBIG past
 * CTL_REQUEST_MAX (the reply says why), or a write-only descriptor's
 * failed request's. */
ssize_t ctl_write(struct ctl *c, const struct ctl_env *env, const char *buf, size_t size);
/* Copy up to SIZE bytes of the reply, from where the last read stopped,
 * into BUF; how many (0: all was read). */
size_t ctl_read(struct ctl *c, char *buf, size_t size);

#endif
