/* pack.c -- the blob area of backend.h as append-only segment files.
 *
 * A million small chunks must not be a million files, so chunk frames are
 * appended to segment files (DIR/00000001.pack, ...) of up to SEG_MAX bytes
 * and named by (segment, offset, length).  Segments are never rewritten in
 * place: bytes past the last synced metadata are garbage after a crash,
 * never a torn chunk that something points to, and compaction (later) can
 * copy the live frames of a mostly-dead segment elsewhere and delete it.
 *
 * A frame whose chunk was freed, once that is durable, can also be punched
 * out in place (fallocate PUNCH_HOLE, size kept): its blocks go back to
 * the file system at once, without the free space a copy needs, which is
 * what lets a full disk recover by deleting keys.  A segment's *held*
 * bytes are its size less what was punched; that is what the statistics
 * and compaction weigh.
 *
 * An fdatasync after a write that grows a file also commits the file
 * system's journal (the new size and blocks): on ext4 here, 240 us for a
 * 4 KiB append against 85 us for the same write over blocks already
 * written.  So where syncs are small (fsync after each small value), the
 * segment appended to gets a *runway* with the sync before: zeros past
 * its end, which the next frames overwrite.  They lie past every frame
 * anything names: a clean close or a roll trims them, and after a crash
 * they are garbage in the segment.
 */
#include "backend.h"
#include "log.h"

#include <assert.h>
#include <dirent.h>
#include <linux/falloc.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SEG_MAX (256u << 20)
#define RUNWAY_BYTES (256u << 10) /* bytes of zeros laid at a time */
#define RUNWAY_LOW (64u << 10) /* bytes: lay more when less than this is left */
#define RUNWAY_SYNC_MAX (64u << 10) /* bytes: a sync of fewer appended bytes
				     * than this lays a runway (small syncs:
				     * large ones gain nothing, writing twice) */
#define ZEROS_LEN (64u << 10) /* bytes of the zero buffer a runway is written from */

struct packs {
	struct blobs blobs;
	int dirfd;
	/* sync_lock: scope is one sync at a time, held across its fdatasyncs
	 * so that a second syncer waits for bytes the first is still writing
	 * out.  Taken before lock, never inside it. */
	pthread_mutex_t sync_lock;
	/* lock: scope is everything below (the append point, the fd table and
	 * the dirty marks); reads and writes of frame bytes happen outside. */
	pthread_mutex_t lock;
	uint32_t cur;      /* segment appended to */
	uint64_t cur_size; /* its size, where the next frame goes */
	uint64_t runway_end; /* cur's zeros laid ahead up to here (<= cur_size: none) */
	uint64_t since_sync; /* bytes appended since the last sync began */
	uint64_t total;    /* bytes held by all segments (sizes less punched) */
	int *fds;          /* fds[seg], -1 when not open yet */
	bool *dirty;       /* dirty[seg]: appended to since the last sync */
	uint32_t nfds;
	bool dir_dirty;    /* a segment file was created since the last sync */
	uint64_t *sizes;   /* sizes[seg] of segments other than cur; 0: none */
	bool *removed;     /* removed[seg]: unlinked, fd kept for late readers */
	uint32_t *reading; /* reading[seg]: reads in progress on fds[seg], which
	                      must not be closed (its number reused) under them */
	bool *close_late;  /* close_late[seg]: forget_removed found it read: the
	                      last of those reads closes it */
	uint64_t *punched; /* punched[seg]: bytes of frames punched out (or, for
	                      segments found at open, not allocated) */
	bool no_punch;     /* the file system cannot punch holes: compaction only */
	/* broken: an fdatasync failed.  Linux tells each open file of a lost
	 * write once and counts the pages clean, so a second fdatasync would
	 * return 0 with the bytes gone: every later sync and append fails
	 * until the store is opened again (as kv_lmdb.c does for data.mdb). */
	bool broken;
	bool full;         /* an append met ENOSPC (logged) since the last punch */
};

static void seg_name(uint32_t seg, char name[32])
{
	snprintf(name, 32, "%08u.pack", seg);
}

/* *ARRAYP (an array of WAS elements of ELEM bytes) reallocated to N,
 * the new ones zeroed. */
static int grow_zeroed(void *arrayp, size_t elem, uint32_t was, uint32_t n)
{
	void *old;
	memcpy(&old, arrayp, sizeof(old));
	char *a = realloc(old, (size_t)n * elem);
	if (!a)
		return -ENOMEM;
	memset(a + (size_t)was * elem, 0, (size_t)(n - was) * elem);
	memcpy(arrayp, &a, sizeof(a));
	return 0;
}

static int grow_table(struct packs *p, uint32_t seg)
{
	if (seg < p->nfds)
		return 0;
	if (seg >= 1u << 30) /* 256 PiB of segments: a damaged number; n would overflow */
		return -EIO;
	uint32_t was = p->nfds, n = was ? was : 16;
	while (n <= seg)
		n *= 2;
	if (grow_zeroed(&p->fds, sizeof(*p->fds), was, n) ||
	    grow_zeroed(&p->dirty, sizeof(*p->dirty), was, n) ||
	    grow_zeroed(&p->sizes, sizeof(*p->sizes), was, n) ||
	    grow_zeroed(&p->removed, sizeof(*p->removed), was, n) ||
	    grow_zeroed(&p->punched, sizeof(*p->punched), was, n) ||
	    grow_zeroed(&p->reading, sizeof(*p->reading), was, n) ||
	    grow_zeroed(&p->close_late, sizeof(*p->close_late), was, n))
		return -ENOMEM;
	for (uint32_t i = was; i < n; i++)
		p->fds[i] = -1;
	p->nfds = n;
	return 0;
}

/* The fd of segment SEG, opened (and with CREATE made) on first use.
 * Called with p->lock held. */
static int seg_fd(struct packs *p, uint32_t seg, bool create)
{
	int rc = grow_table(p, seg);
	if (rc)
		return rc;
	if (p->fds[seg] >= 0)
		return p->fds[seg];
	char name[32];
	seg_name(seg, name);
	int fd = openat(p->dirfd, name, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	if (fd < 0) {
		int e = errno;
		nadb_log("pack %s: cannot open: %s", name, strerror(e));
		return -e;
	}
	if (create)
		p->dir_dirty = true;
	p->fds[seg] = fd;
	return fd;
}

/* Cut the current segment's runway off: what a segment holds ends with
 * its last frame.  Under p->lock. */
static void trim_runway_locked(struct packs *p)
{
	if (p->runway_end > p->cur_size && p->cur < p->nfds && p->fds[p->cur] >= 0 &&
	    ftruncate(p->fds[p->cur], (off_t)p->cur_size))
		nadb_log("pack %08u.pack: cannot trim its %llu bytes of zeros past the last "
			 "frame: %s", p->cur, (unsigned long long)(p->runway_end - p->cur_size),
			 strerror(errno));
	p->runway_end = 0;
}

/* Lay a runway past the current segment's end, to be synced with the
 * frames before it; none when the segment has no room for it, or the
 * disk (appends then grow the file, as without: a partial one is cut
 * off, or left as zeros past the end, which appends overwrite).  Under
 * p->lock: no append may land where the zeros are being written. */
static void lay_runway_locked(struct packs *p, int fd)
{
	static const char zeros[ZEROS_LEN];
	uint64_t from = p->runway_end > p->cur_size ? p->runway_end : p->cur_size;
	if (from + RUNWAY_BYTES > SEG_MAX)
		return;
	struct iovec iov[RUNWAY_BYTES / ZEROS_LEN];
	for (size_t i = 0; i < RUNWAY_BYTES / ZEROS_LEN; i++)
		iov[i] = (struct iovec){(void *)zeros, ZEROS_LEN};
	ssize_t n = pwritev(fd, iov, RUNWAY_BYTES / ZEROS_LEN, (off_t)from);
	if (n == (ssize_t)RUNWAY_BYTES)
		p->runway_end = from + RUNWAY_BYTES;
	else if (n > 0 && ftruncate(fd, (off_t)from))
		p->runway_end = from + (uint64_t)n; /* for close to trim */
}

/* Later appends go to a new segment.  Under p->lock. */
static int roll_locked(struct packs *p)
{
	int rc = grow_table(p, p->cur + 1);
	if (rc)
		return rc;
	trim_runway_locked(p);
	p->sizes[p->cur] = p->cur_size;
	p->cur++;
	p->cur_size = 0;
	return 0;
}

static int pack_append(struct blobs *b, const void *head, size_t hlen,
		       const void *data, size_t dlen, struct blob_loc *out)
{
	struct packs *p = (struct packs *)b;
	size_t len = hlen + dlen;
	pthread_mutex_lock(&p->lock);
	if (p->broken) {
		pthread_mutex_unlock(&p->lock);
		return -EIO; /* said when it broke */
	}
	if (p->cur_size && p->cur_size + len > SEG_MAX)
		roll_locked(p);
	int fd = seg_fd(p, p->cur, true);
	if (fd < 0) {
		pthread_mutex_unlock(&p->lock);
		return fd;
	}
	struct blob_loc loc = {.seg = p->cur, .off = p->cur_size, .len = (uint32_t)len};
	struct iovec iov[2] = {{(void *)head, hlen}, {(void *)data, dlen}};
	ssize_t n = pwritev(fd, iov, 2, (off_t)loc.off);
	int rc = 0;
	if (n != (ssize_t)len) {
		rc = n < 0 ? -errno : -ENOSPC;
		/* A full disk is said once, until punching gives space back. */
		if (rc != -ENOSPC || !p->full)
			nadb_log("pack %08u.pack: cannot append %zu bytes: %s", loc.seg, len,
				 strerror(-rc));
		p->full |= rc == -ENOSPC;
		/* Drop a partial frame so the segment stays a clean sequence. */
		if (ftruncate(fd, (off_t)loc.off))
			nadb_log("pack %08u.pack: cannot trim: %s", loc.seg, strerror(errno));
		else
			p->runway_end = 0;
	} else {
		p->cur_size += len;
		p->since_sync += len;
		p->total += len;
		p->dirty[loc.seg] = true;
		*out = loc;
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static int pack_read(struct blobs *b, const struct blob_loc *loc, uint64_t off,
		     void *buf, size_t len)
{
	struct packs *p = (struct packs *)b;
	if (off + len > loc->len)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	uint32_t cur = p->cur;
	/* No segment past the one appended to exists: a location naming one
	 * comes from a damaged record. */
	int fd = loc->seg > cur ? -EIO : seg_fd(p, loc->seg, false);
	if (fd >= 0)
		p->reading[loc->seg]++;
	pthread_mutex_unlock(&p->lock);
	if (loc->seg > cur)
		nadb_log("pack: a location names segment %u, past the last one (%u)",
			 loc->seg, cur);
	if (fd < 0)
		return fd;
	int rc = 0;
	for (size_t done = 0; !rc && done < len;) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  (off_t)(loc->off + off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			nadb_log("pack %08u.pack: short read at %llu: %s", loc->seg,
				 (unsigned long long)(loc->off + off + done), strerror(-rc));
		}
		done += n > 0 ? (size_t)n : 0;
	}
	pthread_mutex_lock(&p->lock);
	assert(p->reading[loc->seg] > 0);
	int late = -1; /* a removed segment's fd whose close waited for us */
	if (!--p->reading[loc->seg] && p->close_late[loc->seg]) {
		late = p->fds[loc->seg];
		p->fds[loc->seg] = -1;
		p->close_late[loc->seg] = false;
	}
	pthread_mutex_unlock(&p->lock);
	if (late >= 0)
		close(late); /* frees the segment's extents: not under the lock */
	return rc;
}

/* The dirty segments, as fds of their own (a segment may be removed and
 * its fd closed meanwhile), with their marks cleared; the current one
 * with a runway laid first, if this sync is a small one.  Under p->lock. */
static int take_dirty(struct packs *p, int **fds, uint32_t **segs, uint32_t *n)
{
	*n = 0;
	if (p->since_sync && p->since_sync < RUNWAY_SYNC_MAX && p->cur < p->nfds &&
	    p->dirty[p->cur] && p->fds[p->cur] >= 0 &&
	    (p->runway_end < p->cur_size || p->runway_end - p->cur_size < RUNWAY_LOW))
		lay_runway_locked(p, p->fds[p->cur]);
	p->since_sync = 0;
	*fds = malloc((p->nfds + 1) * sizeof(**fds));
	*segs = malloc((p->nfds + 1) * sizeof(**segs));
	if (!*fds || !*segs)
		return -ENOMEM;
	for (uint32_t s = 0; s < p->nfds; s++) {
		if (!p->dirty[s])
			continue;
		int fd = fcntl(p->fds[s], F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			int rc = -errno;
			nadb_log("pack %08u.pack: cannot sync: %s", s, strerror(errno));
			return rc;
		}
		(*fds)[*n] = fd;
		(*segs)[(*n)++] = s;
		p->dirty[s] = false;
	}
	return 0;
}

/* Make every frame appended so far durable.  Appends and reads go on
 * meanwhile: only the snapshot of what is dirty holds p->lock. */
static int pack_sync(struct blobs *b)
{
	struct packs *p = (struct packs *)b;
	int *fds = NULL;
	uint32_t *segs = NULL, n = 0, done = 0;
	pthread_mutex_lock(&p->sync_lock);
	pthread_mutex_lock(&p->lock);
	int rc = p->broken ? -EIO : take_dirty(p, &fds, &segs, &n);
	bool dir = p->dir_dirty;
	p->dir_dirty = false;
	pthread_mutex_unlock(&p->lock);
	for (; !rc && done < n; done++) {
		if (fdatasync(fds[done])) {
			rc = -errno;
			nadb_log("pack %08u.pack: fdatasync: %s (no more writes until the store "
				 "is opened again)", segs[done], strerror(errno));
		}
	}
	if (!rc && dir && fsync(p->dirfd)) {
		rc = -errno;
		nadb_log("packs: fsync of the directory: %s (no more writes until the store "
			 "is opened again)", strerror(errno));
	}
	pthread_mutex_lock(&p->lock);
	p->broken |= rc && rc != -ENOMEM && rc != -EMFILE && rc != -ENFILE;
	if (rc) { /* what was not made durable is still to do */
		for (uint32_t i = done ? done - 1 : 0; i < n; i++)
			p->dirty[segs[i]] = !p->removed[segs[i]];
		p->dir_dirty |= dir;
	}
	pthread_mutex_unlock(&p->lock);
	for (uint32_t i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	free(segs);
	pthread_mutex_unlock(&p->sync_lock);
	return rc;
}

static uint64_t pack_size(struct blobs *b)
{
	struct packs *p = (struct packs *)b;
	pthread_mutex_lock(&p->lock);
	uint64_t total = p->total;
	pthread_mutex_unlock(&p->lock);
	return total;
}

static void pack_close(struct blobs *b)
{
	struct packs *p = (struct packs *)b;
	trim_runway_locked(p); /* alone by now: nothing else calls */
	for (uint32_t s = 0; s < p->nfds; s++)
		if (p->fds[s] >= 0)
			close(p->fds[s]);
	free(p->fds);
	free(p->dirty);
	free(p->sizes);
	free(p->removed);
	free(p->punched);
	free(p->reading);
	free(p->close_late);
	close(p->dirfd);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->sync_lock);
	free(p);
}

/* Bytes segment SEG of SIZE still holds on disk.  Under p->lock. */
static uint64_t held_locked(const struct packs *p, uint32_t seg, uint64_t size)
{
	return size > p->punched[seg] ? size - p->punched[seg] : 0;
}

static int pack_segments(struct blobs *b,
			 int (*fn)(void *ctx, uint32_t seg, uint64_t size,
				   uint64_t held, bool current),
			 void *ctx)
{
	struct packs *p = (struct packs *)b;
	pthread_mutex_lock(&p->lock);
	uint32_t n = p->nfds, cur = p->cur;
	uint64_t *sizes = malloc((2 * n + 1) * sizeof(*sizes));
	uint64_t *held = sizes ? sizes + n : NULL;
	for (uint32_t s = 0; sizes && s < n; s++) {
		sizes[s] = p->removed[s] ? 0 : p->sizes[s];
		held[s] = held_locked(p, s, sizes[s]);
	}
	uint64_t cur_size = p->cur_size;
	uint64_t cur_held = cur < n ? held_locked(p, cur, cur_size) : cur_size;
	pthread_mutex_unlock(&p->lock);
	if (!sizes)
		return -ENOMEM;
	int rc = 0;
	for (uint32_t s = 0; !rc && s < n; s++)
		if (s != cur && sizes[s])
			rc = fn(ctx, s, sizes[s], held[s], false);
	if (!rc)
		rc = fn(ctx, cur, cur_size, cur_held, true);
	free(sizes);
	return rc;
}

static int pack_roll(struct blobs *b)
{
	struct packs *p = (struct packs *)b;
	pthread_mutex_lock(&p->lock);
	int rc = p->cur_size ? roll_locked(p) : 0;
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static int pack_remove(struct blobs *b, uint32_t seg)
{
	struct packs *p = (struct packs *)b;
	char name[32];
	seg_name(seg, name);
	pthread_mutex_lock(&p->lock);
	if (seg == p->cur || seg >= p->nfds || p->removed[seg]) {
		pthread_mutex_unlock(&p->lock);
		return -EINVAL;
	}
	p->removed[seg] = true;
	pthread_mutex_unlock(&p->lock);
	/* A directory change may wait for the journal: appends and reads go
	 * on meanwhile (late readers keep the fd; the extents are freed at its
	 * last close, in pack_forget_removed). */
	int rc = 0;
	if (unlinkat(p->dirfd, name, 0) && errno != ENOENT) {
		rc = -errno;
		nadb_log("pack %s: cannot remove: %s", name, strerror(errno));
	}
	pthread_mutex_lock(&p->lock);
	if (rc) {
		p->removed[seg] = false;
	} else {
		p->total -= held_locked(p, seg, p->sizes[seg]);
		p->sizes[seg] = 0;
		p->punched[seg] = 0;
		p->dirty[seg] = false;
		p->dir_dirty = true;
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static void pack_forget_removed(struct blobs *b)
{
	struct packs *p = (struct packs *)b;
	pthread_mutex_lock(&p->lock);
	int *fds = malloc((p->nfds + 1) * sizeof(*fds));
	uint32_t n = 0;
	for (uint32_t s = 0; fds && s < p->nfds; s++) {
		if (p->removed[s] && p->fds[s] >= 0 && !p->reading[s]) {
			fds[n++] = p->fds[s];
			p->fds[s] = -1;
		} else if (p->removed[s] && p->fds[s] >= 0) {
			p->close_late[s] = true;
		}
	}
	pthread_mutex_unlock(&p->lock);
	/* The last close of an unlinked segment frees its extents, which takes
	 * a while for a big one: not under the lock appends need. */
	for (uint32_t i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
}

/* The fd of the segment holding LOC, to punch it, as a descriptor of our
 * own (a removed segment's fd may be closed meanwhile, and its number
 * reused by another file); -1: nothing to punch there; -EIO: LOC is not
 * inside its segment (bytes the metadata names were lost: a disk that
 * did not keep what it synced), said here.  Punching there would count
 * bytes the segment never had. */
static int punch_fd(struct packs *p, const struct blob_loc *loc)
{
	uint32_t seg = loc->seg;
	pthread_mutex_lock(&p->lock);
	int fd = -1;
	if (!p->no_punch && seg < p->nfds && !p->removed[seg] &&
	    (seg == p->cur || p->sizes[seg])) {
		uint64_t size = seg == p->cur ? p->cur_size : p->sizes[seg];
		if (loc->off + loc->len > size) {
			nadb_log("pack %08u.pack: a freed frame at %llu (%llu bytes) ends past "
				 "the segment's %llu bytes: the segment lost bytes its metadata "
				 "names; not punched (nadb fsck says which keys)", seg,
				 (unsigned long long)loc->off, (unsigned long long)loc->len,
				 (unsigned long long)size);
			fd = -EIO;
		} else {
			int own = seg_fd(p, seg, false);
			if (own >= 0)
				fd = fcntl(own, F_DUPFD_CLOEXEC, 0);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return fd;
}

static int pack_punch(struct blobs *b, const struct blob_loc *loc)
{
	struct packs *p = (struct packs *)b;
	int fd = punch_fd(p, loc);
	if (fd < 0)
		return fd == -1 ? 0 : fd; /* -1: removed meanwhile, or no punching */
	int rc = 0;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)loc->off,
		      (off_t)loc->len))
		rc = -errno;
	close(fd);
	pthread_mutex_lock(&p->lock);
	if (!rc) {
		/* Capped: open counted every hole as punched, and a segment that
		 * lost bytes it never synced has holes no punch made. */
		uint64_t size = loc->seg == p->cur ? p->cur_size : p->sizes[loc->seg];
		uint64_t was = p->punched[loc->seg];
		p->punched[loc->seg] = was + loc->len < size ? was + loc->len : size;
		p->full = false;
		assert(p->total >= p->punched[loc->seg] - was);
		p->total -= p->punched[loc->seg] - was;
	} else if (rc == -EOPNOTSUPP && !p->no_punch) {
		/* Said once: from now on only compaction reclaims. */
		p->no_punch = true;
		nadb_log("packs: the file system cannot punch holes; freed space "
			 "comes back by compaction only");
	}
	pthread_mutex_unlock(&p->lock);
	return rc == -EOPNOTSUPP ? 0 : rc;
}

static const struct blob_ops pack_ops = {
	.append = pack_append,
	.read = pack_read,
	.sync = pack_sync,
	.size = pack_size,
	.segments = pack_segments,
	.roll = pack_roll,
	.remove = pack_remove,
	.forget_removed = pack_forget_removed,
	.punch = pack_punch,
	.close = pack_close,
};

/* Find the newest segment (appends continue there) and the total size. */
static int scan_segments(struct packs *p)
{
	int fd = dup(p->dirfd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	struct dirent *e;
	p->cur = 1;
	while ((e = readdir(d))) {
		unsigned seg;
		char tail[8];
		if (sscanf(e->d_name, "%8u.%7s", &seg, tail) != 2 || strcmp(tail, "pack"))
			continue;
		struct stat st;
		if (fstatat(p->dirfd, e->d_name, &st, 0))
			continue;
		if (grow_table(p, seg)) {
			closedir(d);
			return -ENOMEM;
		}
		/* What was punched before is not recorded: the blocks tell. */
		uint64_t size = (uint64_t)st.st_size, alloc = (uint64_t)st.st_blocks * 512;
		p->sizes[seg] = size;
		p->punched[seg] = alloc < size ? size - alloc : 0;
		p->total += size - p->punched[seg];
		if (seg >= p->cur) {
			p->cur = seg;
			p->cur_size = (uint64_t)st.st_size;
		}
	}
	closedir(d);
	if (p->cur < p->nfds)
		p->sizes[p->cur] = 0; /* the current one's size is cur_size */
	return 0;
}

int blobs_pack_open(const char *dir, struct blobs **out)
{
	if (mkdir(dir, 0700) && errno != EEXIST) {
		int e = errno;
		nadb_log("%s: cannot create: %s", dir, strerror(e));
		return -e;
	}
	struct packs *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->blobs.ops = &pack_ops;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->sync_lock, NULL);
	p->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = p->dirfd < 0 ? -errno : scan_segments(p);
	if (rc) {
		nadb_log("%s: %s", dir, strerror(-rc));
		if (p->dirfd >= 0)
			close(p->dirfd);
		free(p);
		return rc;
	}
	*out = &p->blobs;
	return 0;
}
