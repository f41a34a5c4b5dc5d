/* wire.h -- what the kernel says on the FUSE wire that libfuse 3.14 does
 * not pass on (wire.c). */
#ifndef NADB_WIRE_H
#define NADB_WIRE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct fuse_session;

/* Per session: the INIT exchange as seen from beneath libfuse. */
struct wire {
	atomic_bool init_seen;         /* the INIT request was read, not answered */
	_Atomic uint64_t init_unique;  /* its id, to know its reply */
	_Atomic uint32_t init_flags;   /* what the kernel offered */
	atomic_bool kills_setid;       /* FUSE_HANDLE_KILLPRIV_V2 agreed */
};

/* Put W under SE's requests and replies (right after fuse_session_mount,
 * before the INIT is read).  SE's userdata must point at W: 0 or -errno. */
int wire_attach(struct fuse_session *se, struct wire *w);

/* Did the request this thread is handling (a write, or an open with
 * O_TRUNC, by a caller without CAP_FSETID) ask the daemon to clear the
 * file's set-id bits?  (A setattr's flag reaches its handler: libfuse
 * keeps FUSE_SET_ATTR_KILL_SUID.) */
bool wire_asks_kill_setid(void);

/* Did the kernel agree to leave the set-id bits to the daemon? */
bool wire_leaves_setid_to_us(struct wire *w);

#endif
