/* ctl.h -- /.ctl, the daemon's request/response file: atomic operations
 * (incr, cas, mset, mget) and maintenance (flush, compact, reap) for any
 * program that can open, write and read a file.  The protocol is in ctl.c
 * and the README.
 */
#ifndef NADBFS_CTL_H
#define NADBFS_CTL_H

#include "store.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

/* A descriptor's conversation: its request so far and its last reply. */
struct ctl;

/* What requests run against. */
struct ctl_env {
	struct nadb_store *st;
	/* Tell the kernel /.ctl changed key INO (CREATED: made NAME in
	 * PARENT); then wait, boundedly, until it was told.  May be NULL. */
	void (*changed)(void *ctx, uint64_t parent, const char *name, uint64_t ino,
			bool created);
	void (*changed_wait)(void *ctx);
	void *notify_ctx;
	/* The maintenance commands (special.c): 0 or a negative errno. */
	int (*maintain)(void *ctx, const char *command);
	void *maintain_ctx;
	/* Set by ctl.c for each request, from the descriptor's opener. */
	const struct nadb_caller *who;
	bool admin;
};

/* READABLE: opened read-write (outcomes come back in the reply), or
 * write-only (a failed request fails its write, as it always has).  WHO
 * opened it: its requests run as WHO (copied); ADMIN: WHO may flush,
 * compact and reap.  IN_FLIGHT: the daemon's count of request bytes held
 * by all descriptors. */
struct ctl *ctl_new(bool readable, const struct nadb_caller *who, bool admin,
		    atomic_size_t *in_flight);
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
