/* umount.c -- nadb umount MOUNTPOINT: unmount and return only once the
 * daemon has exited.
 *
 * fusermount3 -u returns as soon as the kernel lets go of the mount; the
 * daemon notices a moment later and then makes its last commit.  A script
 * that unmounts and then copies, checks or mounts the store wants to know
 * when that is over (as juicefs umount waits for its daemon): the store's
 * lock is released by the daemon's last step before it exits.
 *
 * Which process to wait for is asked of the mount itself, whose .stats
 * says its daemon's pid: a writer or a follower, on any backend.  The
 * question goes through a child we can kill, since a wedged daemon would
 * never answer it -- and a wedged daemon is a good reason to unmount.
 * Without an answer (the daemon is dead, or an older one), a directory
 * store's lock file still names its holder.
 */
#include "nadb_tool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UMOUNT_WAIT_S 60   /* longest wait for the daemon to let go */
#define ASK_PID_MS 2000    /* ms: longest wait for the mount to say its daemon's pid */

/* MNT made absolute without touching it: a mount whose daemon died
 * cannot be resolved (ENOTCONN), but can be unmounted. */
static char *absolute(const char *mnt)
{
	char *real = realpath(mnt, NULL);
	if (real || mnt[0] == '/')
		return real ? real : strdup(mnt);
	char cwd[4096];
	struct buf b = {0};
	if (!getcwd(cwd, sizeof(cwd)) || buf_printf(&b, "%s/%s", cwd, mnt))
		return NULL;
	return b.s;
}

/* The pid in STORE/lock (the daemon's), or 0. */
static pid_t holder_pid(const char *store)
{
	struct buf path = {0};
	char text[32] = "";
	if (buf_printf(&path, "%s/lock", store))
		return 0;
	int fd = open(path.s, O_RDONLY | O_CLOEXEC);
	buf_free(&path);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	text[n > 0 ? n : 0] = '\0';
	return (pid_t)atoi(text);
}

/* The pid of the daemon serving MNT, as its .stats says (read by a child,
 * killed if the mount does not answer within ASK_PID_MS), or 0. */
static pid_t ask_daemon_pid(const char *mnt)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC))
		return 0;
	pid_t child = fork();
	if (child == 0) {
		struct pairs p = {0};
		int pid = read_mount_stats_pairs(mnt, &p) ? 0 : (int)pair_number(&p, "pid");
		_exit(write(fds[1], &pid, sizeof(pid)) == sizeof(pid) ? 0 : 1);
	}
	close(fds[1]);
	int pid = 0;
	struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
	if (child > 0 && (poll(&pfd, 1, ASK_PID_MS) != 1 ||
			  read(fds[0], &pid, sizeof(pid)) != sizeof(pid)))
		pid = 0;
	close(fds[0]);
	if (child > 0) {
		kill(child, SIGKILL); /* gone already, or stuck in the mount */
		while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
			;
	}
	return pid > 0 ? (pid_t)pid : 0;
}

static int run_fusermount(const char *mnt)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "--", mnt, (char *)NULL);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EBUSY;
}

/* Has PID exited (gone, or a zombie waiting for its parent)? */
static bool exited(pid_t pid)
{
	char path[64], stat[256];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	ssize_t n = read(fd, stat, sizeof(stat) - 1);
	close(fd);
	stat[n > 0 ? n : 0] = '\0';
	const char *paren = strrchr(stat, ')');
	return !paren || paren[1] != ' ' || paren[2] == 'Z' || paren[2] == 'X';
}

static bool wait_exited(pid_t pid, unsigned secs)
{
	for (unsigned i = 0; i < secs * 100; i++) {
		if (exited(pid))
			return true;
		nanosleep(&(struct timespec){0, 10000000L}, NULL);
	}
	return exited(pid);
}

int run_umount(const struct cmd_args *a)
{
	const char *arg = a->arg[0];
	char *mnt = absolute(arg);
	char *store = mnt ? nadbfs_store_mounted_at(mnt) : NULL;
	if (!store) {
		complain("umount: %s: not the mountpoint of an nadbfs", arg);
		free(mnt);
		return EXIT_USAGE;
	}
	bool dir_store = !nadb_store_is_url(store);
	pid_t pid = ask_daemon_pid(mnt);
	if (!pid && dir_store)
		pid = holder_pid(store);
	int status = 0;
	int rc = run_fusermount(mnt);
	if (rc) {
		complain("umount: %s: fusermount3 -u failed%s", arg,
			 rc == -EBUSY ? " (is a process using the mount?)" : "");
		status = EXIT_PROBLEMS;
	} else if ((pid > 0 && !wait_exited(pid, UMOUNT_WAIT_S)) ||
		   (pid <= 0 && dir_store &&
		    (rc = nadb_store_wait_unlocked(store, UMOUNT_WAIT_S)))) {
		complain("umount: %s: the daemon (pid %d) still holds %s after %d s%s%s", arg,
			 (int)pid, store, UMOUNT_WAIT_S, rc && rc != -ETIMEDOUT ? ": " : "",
			 rc && rc != -ETIMEDOUT ? strerror(-rc) : "");
		status = EXIT_PROBLEMS;
	}
	free(store);
	free(mnt);
	return status;
}
