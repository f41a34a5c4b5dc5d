/* wire.c -- the FUSE wire beneath libfuse: what the kernel says that
 * libfuse 3.14 does not pass on.
 *
 * Without FUSE_HANDLE_KILLPRIV_V2 (ABI 7.33, which libfuse 3.14 does not
 * know) the kernel never marks a FUSE superblock SB_NOSEC, so before every
 * buffered write it asks the daemon for security.capability
 * (file_remove_privs): a write costs two round trips.  With it the kernel
 * leaves the set-id bits to the daemon and says when to clear them:
 * FUSE_WRITE_KILL_SUIDGID on a write, FUSE_OPEN_KILL_SUIDGID on an open
 * with O_TRUNC (both only when the caller lacks CAP_FSETID), and
 * FATTR_KILL_SUIDGID on a truncate (likewise) or a chown.  libfuse keeps
 * the last, as FUSE_SET_ATTR_KILL_SUID, and drops the first two as it
 * parses the requests.  (A direct-I/O write carries the write flag
 * whether or not the kernel agreed: its path never clears them itself.)
 * A fallocate says nothing at all: nadbfs.c decides it.
 *
 * So nadbfs gives libfuse its own I/O (fuse_session_custom_io): every
 * request is looked at as it is read, and the reply to INIT gets the flag
 * when the kernel offered it.  The kill flag reaches the handler through
 * a thread-local: libfuse handles each request on the thread that read
 * it (fuse_loop_mt.c's workers, fuse_session_loop), and offers no other
 * way from the raw request to its handler.  A libfuse that did otherwise
 * (an io_uring loop, splice reads) would let set-id bits survive writes
 * silently: hence WIRE_CHECKED below.
 * security.capability itself needs no clearing: this store refuses the
 * security.* xattrs.
 */
#define FUSE_USE_VERSION 312
#include "wire.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The libfuse versions checked to handle each request on the thread that
 * read it (custom I/O came with 3.13).  With another, nadbfs stays off the
 * wire: the kernel then asks for security.capability before each write
 * and clears the bits itself, but for an O_DIRECT write's, which only the
 * flag this file reads would clear. */
#define WIRE_CHECKED (FUSE_MAJOR_VERSION == 3 && FUSE_MINOR_VERSION >= 13 && \
		      FUSE_MINOR_VERSION <= 14)

/* Set by wire_read for the request just read, by the thread that handles
 * it next. */
static _Thread_local bool kill_setid_asked;

bool wire_asks_kill_setid(void)
{
	return kill_setid_asked;
}

/* The request's argument of at least NEED bytes, or NULL. */
static const void *arg_of(const void *buf, size_t len, size_t need)
{
	size_t head = sizeof(struct fuse_in_header);
	return len >= head + need ? (const char *)buf + head : NULL;
}

static void look_at_request(struct wire *w, const void *buf, size_t len)
{
	const struct fuse_in_header *h = buf;
	const struct fuse_init_in *init;
	const struct fuse_write_in *write;
	const struct fuse_open_in *open;
	switch (h->opcode) {
	case FUSE_INIT:
		if ((init = arg_of(buf, len, offsetof(struct fuse_init_in, flags) + 4))) {
			atomic_store(&w->init_flags, init->flags);
			atomic_store(&w->init_unique, h->unique);
			atomic_store(&w->init_seen, true);
		}
		break;
	case FUSE_WRITE:
		if ((write = arg_of(buf, len, sizeof(*write))))
			kill_setid_asked = write->write_flags & FUSE_WRITE_KILL_SUIDGID;
		break;
	case FUSE_OPEN:
		if ((open = arg_of(buf, len, sizeof(*open))))
			kill_setid_asked = open->open_flags & FUSE_OPEN_KILL_SUIDGID;
		break;
	}
}

__attribute__((unused)) /* without WIRE_CHECKED */
static ssize_t wire_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);
	kill_setid_asked = false;
	if (n >= (ssize_t)sizeof(struct fuse_in_header)) {
		int saved = errno;
		look_at_request(userdata, buf, (size_t)n);
		errno = saved;
	}
	return n;
}

/* The reply to INIT (the first reply with its id): agree to
 * FUSE_HANDLE_KILLPRIV_V2 when the kernel offered it, since libfuse built
 * the reply without it. */
static void answer_init(struct wire *w, struct iovec *iov, int count)
{
	const struct fuse_out_header *h = iov[0].iov_base;
	if (count < 1 || iov[0].iov_len < sizeof(*h) || h->unique != atomic_load(&w->init_unique))
		return;
	atomic_store(&w->init_seen, false); /* answered: no more looking */
	size_t need = offsetof(struct fuse_init_out, flags) + 4;
	if (count < 2 || h->error != 0 || iov[1].iov_len < need ||
	    !(atomic_load(&w->init_flags) & FUSE_HANDLE_KILLPRIV_V2))
		return;
	struct fuse_init_out *out = iov[1].iov_base;
	out->flags |= FUSE_HANDLE_KILLPRIV_V2;
	atomic_store(&w->kills_setid, true);
}

__attribute__((unused)) /* without WIRE_CHECKED */
static ssize_t wire_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct wire *w = userdata;
	if (atomic_load_explicit(&w->init_seen, memory_order_relaxed))
		answer_init(w, iov, count);
	return writev(fd, iov, count);
}

bool wire_leaves_setid_to_us(struct wire *w)
{
	return atomic_load(&w->kills_setid);
}

int wire_attach(struct fuse_session *se, struct wire *w)
{
	(void)w; /* the callbacks reach it as SE's userdata */
#if WIRE_CHECKED
	static const struct fuse_custom_io io = {.read = wire_read, .writev = wire_writev};
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
#else
	(void)se;
	return 0;
#endif
}
