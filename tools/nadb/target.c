/* target.c -- what a command works on: a store, opened exclusively
 * through the engine, or the mountpoint of a running nadbfs, reached
 * through its files.  Which one the user named is decided here, from the
 * kernel's mount table, and so are the messages for a store that is busy
 * or a path inside a mount.
 */
#include "nadb_tool.h"

#include "log.h"

#include <errno.h>
#include <mntent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum mount_query {
	MOUNT_AT,         /* the path is an nadbfs mountpoint */
	MOUNT_SERVING,    /* the path is the store an nadbfs serves */
	MOUNT_CONTAINING, /* the path is in a mounted nadbfs, or is its mountpoint */
};

static bool mount_answers(const struct mntent *m, const char *real, enum mount_query q)
{
	size_t n = strlen(m->mnt_dir);
	switch (q) {
	case MOUNT_AT:
		return !strcmp(m->mnt_dir, real);
	case MOUNT_SERVING:
		return !strncmp(m->mnt_fsname, "nadb:", 5) && !strcmp(m->mnt_fsname + 5, real);
	default:
		return !strncmp(m->mnt_dir, real, n) && (real[n] == '/' || !real[n] || n == 1);
	}
}

/* The mountpoint (malloc'd) of the nadbfs answering Q about REAL (a
 * realpath), or NULL; its store too (malloc'd) if STORE is not NULL.
 * /proc/self/mounts is the kernel's own list, and nadbfs mounts with
 * subtype nadbfs and fsname nadb:STORE. */
static char *find_nadbfs_mount_of(const char *real, enum mount_query q, char **store)
{
	FILE *f = setmntent("/proc/self/mounts", "r");
	if (!f)
		return NULL;
	char *found = NULL;
	struct mntent *m;
	while (!found && (m = getmntent(f)))
		if (!strcmp(m->mnt_type, "fuse.nadbfs") && mount_answers(m, real, q)) {
			found = strdup(m->mnt_dir);
			if (store)
				*store = strncmp(m->mnt_fsname, "nadb:", 5) ? NULL
									  : strdup(m->mnt_fsname + 5);
		}
	endmntent(f);
	return found;
}

static char *find_nadbfs_mount(const char *real, enum mount_query q)
{
	return find_nadbfs_mount_of(real, q, NULL);
}

char *nadbfs_store_mounted_at(const char *mnt)
{
	char *store = NULL;
	free(find_nadbfs_mount_of(mnt, MOUNT_AT, &store));
	return store;
}

/* realpath of PATH, or of its nearest existing ancestor (a store to be
 * created does not exist yet). */
static char *existing_realpath(const char *path)
{
	char *copy = strdup(path), *real = NULL;
	while (copy && !(real = realpath(copy, NULL)) && errno == ENOENT) {
		char *slash = strrchr(copy, '/');
		if (!slash || slash == copy)
			strcpy(copy, slash ? "/" : ".");
		else
			*slash = 0;
	}
	free(copy);
	return real;
}

/* A store inside a mounted store would be made of databases and keys of
 * that store (meta/, packs/): refuse before the engine creates anything. */
static int refuse_store_in_mount(const struct target *t)
{
	if (nadb_store_is_url(t->arg))
		return 0; /* a store on a server is in no mount */
	char *real = existing_realpath(t->arg);
	char *mnt = real ? find_nadbfs_mount(real, MOUNT_CONTAINING) : NULL;
	if (mnt)
		complain("%s: %s the nadbfs mounted on %s; nadb %s needs the STORE it "
			 "serves, unmounted", t->arg,
			 strcmp(mnt, real) ? "is inside" : "is the mountpoint of", mnt, t->cmd);
	free(mnt);
	free(real);
	return mnt ? EXIT_USAGE : 0;
}

static void explain_busy(const struct target *t, bool mount_ok)
{
	char name[4096];
	char *real = nadb_store_name(t->arg, name, sizeof(name)) ? NULL : strdup(name);
	char *mnt = real ? find_nadbfs_mount(real, MOUNT_SERVING) : NULL;
	if (mnt && mount_ok)
		complain("%s: store is in use: mounted on %s; unmount it (fusermount3 -u %s) "
			 "or pass the mountpoint: nadb %s %s ...", t->arg, mnt, mnt, t->cmd, mnt);
	else if (mnt)
		complain("%s: store is in use: mounted on %s; unmount it first (fusermount3 -u %s)",
			 t->arg, mnt, mnt);
	else
		complain("%s: store is in use (mounted, or another nadb is running); "
			 "unmount it first%s", t->arg, mount_ok ? " or pass its MOUNTPOINT" : "");
	free(mnt);
	free(real);
}

/* Open ARG as a store (or, with MOUNT_OK, recognise an nadbfs mountpoint).
 * Returns 0 or an exit status after saying why. */
int open_target(const struct cmd_args *a, const char *arg, bool mount_ok,
		bool create, struct target *t)
{
	struct nadb_options o;
	nadb_options_default(&o);
	o.create = create;
	return open_target_with(a, arg, mount_ok, &o, t);
}

/* The same with the engine's options O.  A damaged metadata file that the
 * caller asked to hear about (O->damage) is the caller's to report. */
int open_target_with(const struct cmd_args *a, const char *arg, bool mount_ok,
		     const struct nadb_options *o, struct target *t)
{
	*t = (struct target){.arg = arg, .cmd = a->cmd->name};
	if (mount_ok) {
		char *real = realpath(arg, NULL);
		t->mnt = real ? find_nadbfs_mount(real, MOUNT_AT) : NULL;
		free(real);
		if (t->mnt)
			return 0;
	}
	int refused = refuse_store_in_mount(t);
	if (refused)
		return refused;
	int rc = nadb_store_open(arg, o, &t->st);
	char line[1024];
	if (rc == -EBUSY && nadb_store_is_url(arg) && (a->cmd->options & READS_ONLY)) {
		nadb_log_reason(rc, line, sizeof(line)); /* "in use": not our failure */
		rc = nadb_store_open_follower(arg, o, &t->st); /* as of its writer's last sync */
	}
	const char *why = rc ? nadb_log_reason(rc, line, sizeof(line)) : NULL;
	if (!rc)
		nadb_log_flush(); /* warnings of the opening, said before the output */
	else if (rc == -EBUSY)
		explain_busy(t, mount_ok); /* says what to do, which the engine cannot */
	else if (rc == -EUCLEAN && o->damage && o->damage->damaged)
		return EXIT_PROBLEMS;
	else if (why == line)
		complain("%s", why); /* the engine's line names the store and the cause */
	else
		complain("%s: cannot open the store: %s", arg, why);
	return rc ? EXIT_USAGE : 0;
}

/* Close the target; a failing close (the final commit) is a failure. */
int close_target(struct target *t, int status)
{
	int rc = t->st ? nadb_store_close(t->st) : 0;
	if (rc)
		complain("%s: closing the store failed: %s", t->arg, failure_reason(rc));
	free(t->mnt);
	*t = (struct target){0};
	return rc && !status ? EXIT_PROBLEMS : status;
}

/* The exit status for a failed operation on PATH, after saying so. */
int report_failure(const struct target *t, const char *path, int rc)
{
	complain("%s: %s", path ? path : t->arg, failure_reason(rc));
	return EXIT_PROBLEMS;
}

const struct nadb_caller *caller(struct nadb_caller *who)
{
	*who = (struct nadb_caller){getuid(), getgid(), NULL, 0};
	return who;
}

/* MNT/NAME, malloc'd. */
char *in_mount(const char *mnt, const char *name)
{
	struct buf b = {0};
	if (buf_printf(&b, "%s/%s", mnt, name))
		return NULL;
	return b.s;
}
