/* lock.c -- one process at a time per store, and waiting for one that is
 * going away.
 *
 * STORE/lock is flock'ed by the process using the store, and its text
 * says who that is:
 *     PID                 a tool
 *     PID\nmount MNT      a daemon serving the mount MNT
 *     PID\nclosing        a process finishing its last commit
 * fusermount3 -u returns as soon as the kernel has let go of the mount,
 * before the daemon has even noticed; its last commit comes after.  So a
 * process that finds the store locked by one that is going away -- it
 * says so, or it is a daemon whose mount is gone -- waits for it, up to
 * LOCK_WAIT_S, and `fusermount3 -u mnt && nadb fsck store` just works.  A
 * holder at work (a tool, a daemon whose mount is up) gets -EBUSY at once.
 */
#include "log.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <mntent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define LOCK_WAIT_S 60     /* longest wait for a holder that is going away */
#define LOCK_POLL_MS 10    /* how often the lock is tried meanwhile */

struct holder {
	char pid[32];
	char mount[4096]; /* "": not a daemon */
	bool closing;
};

/* What the lock file FD says about its holder. */
static void read_holder(int fd, struct holder *h)
{
	char text[4200];
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
	text[n > 0 ? n : 0] = '\0';
	*h = (struct holder){0};
	char *nl = strchr(text, '\n');
	if (nl)
		*nl = '\0';
	snprintf(h->pid, sizeof(h->pid), "%.20s", text[0] ? text : "?");
	const char *rest = nl ? nl + 1 : "";
	if (!strncmp(rest, "closing", 7))
		h->closing = true;
	else if (!strncmp(rest, "mount ", 6))
		snprintf(h->mount, sizeof(h->mount), "%.*s", (int)strcspn(rest + 6, "\n"),
			 rest + 6);
}

/* Is an nadbfs serving the store in DIR mounted on MNT? */
static bool still_mounted(const char *dir, const char *mnt)
{
	char *real = realpath(dir, NULL);
	FILE *f = real ? setmntent("/proc/self/mounts", "r") : NULL;
	bool found = !f; /* cannot tell: take the holder at its word */
	struct mntent *m;
	while (f && !found && (m = getmntent(f)))
		found = !strcmp(m->mnt_type, "fuse.nadbfs") && !strcmp(m->mnt_dir, mnt) &&
			!strncmp(m->mnt_fsname, "nadb:", 5) && !strcmp(m->mnt_fsname + 5, real);
	if (f)
		endmntent(f);
	free(real);
	return found;
}

static bool going_away(const char *dir, const struct holder *h)
{
	return h->closing || (h->mount[0] && !still_mounted(dir, h->mount));
}

static int try_lock(int fd)
{
	return flock(fd, LOCK_EX | LOCK_NB) ? -errno : 0;
}

/* Take FD's lock, waiting while its holder is going away. */
static int lock_or_wait(const char *dir, int fd)
{
	int rc = try_lock(fd);
	struct holder h;
	bool said = false;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (rc == -EWOULDBLOCK) {
		read_holder(fd, &h);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (!going_away(dir, &h) || now.tv_sec - start.tv_sec >= LOCK_WAIT_S) {
			nadb_log("%s: store is in use by another process (pid %s%s%s)", dir,
				 h.pid, h.mount[0] ? ", serving " : "", h.mount);
			return -EBUSY;
		}
		if (!said)
			nadb_log("%s: waiting for pid %s to finish closing the store", dir, h.pid);
		said = true;
		nanosleep(&(struct timespec){0, LOCK_POLL_MS * 1000000L}, NULL);
		rc = try_lock(fd);
	}
	if (rc)
		nadb_log("%s: cannot lock: %s", dir, strerror(-rc));
	return rc;
}

/* Say who holds the lock now: WHAT follows our pid ("" for a tool). */
static void note_holder(struct nadb_store *st, const char *what)
{
	char text[4200];
	int n = snprintf(text, sizeof(text), "%d\n%s%s", (int)getpid(), what,
			 what[0] ? "\n" : "");
	if (n >= (int)sizeof(text))
		n = (int)sizeof(text) - 1;
	if (ftruncate(st->lock_fd, 0) || pwrite(st->lock_fd, text, (size_t)n, 0) != n)
		nadb_log("%s/lock: cannot record who holds the store: %s", st->dir,
			 strerror(errno));
}

int lock_store(struct nadb_store *st)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/lock", st->dir);
	st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lock_fd < 0) {
		int e = errno;
		nadb_log("%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	int rc = lock_or_wait(st->dir, st->lock_fd);
	if (rc) {
		close(st->lock_fd);
		st->lock_fd = -1;
		return rc;
	}
	note_holder(st, "");
	return 0;
}

void nadb_store_note_mount(struct nadb_store *st, const char *mountpoint)
{
	char what[4200];
	snprintf(what, sizeof(what), "mount %.4096s", mountpoint);
	note_holder(st, what);
}

void nadb_store_note_closing(struct nadb_store *st)
{
	note_holder(st, "closing");
}

int nadb_store_wait_unlocked(const char *dir, unsigned timeout_s)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/lock", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* no lock file: nobody holds it */
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int rc;
	while ((rc = try_lock(fd)) == -EWOULDBLOCK) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec >= (time_t)timeout_s) {
			rc = -ETIMEDOUT;
			break;
		}
		nanosleep(&(struct timespec){0, LOCK_POLL_MS * 1000000L}, NULL);
	}
	close(fd); /* lets go of the lock if we got it */
	return rc;
}
