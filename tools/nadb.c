/* nadb.c -- the command-line tool: inspect, query, maintain, dump and load
 * an nadb store.
 *
 *   nadb ls|get|put|rm|setx|getx STORE PATH ...   one key or directory
 *   nadb stats|compact STORE|MOUNTPOINT           counters, reclaiming space
 *   nadb keys|count STORE|MOUNTPOINT PATTERN      glob over key paths
 *   nadb fsck [--repair] STORE                    check the invariants
 *   nadb dump STORE [PATH] > ARCHIVE              pax tar of a store/subtree
 *   nadb load STORE [PATH] < ARCHIVE              and back
 *
 * Offline, the tool opens the store exclusively, like the daemon, so it
 * refuses a mounted store instead of corrupting it under the daemon's feet.
 * The commands that also accept the MOUNTPOINT of a running nadbfs (stats,
 * compact, keys, count) then go through the daemon: its .stats and .ctl
 * files and the mounted tree.
 *
 * Exit status, for scripts: 0 ok, 1 failure or problems found, 2 usage
 * error or the command could not run (no store, store in use, ...).
 * Human output by default; --json where a machine reads it.
 *
 * Layout: helpers (errors, buffers, JSON, progress) -> targets (a store or
 * a mount) -> one-key commands -> stats -> compact -> fsck -> glob ->
 * keys/count -> dump (pax writer) -> load (pax reader) -> command table and
 * main.  Everything is in this one file so the Makefile needs no change.
 */
#include "fsck.h"
#include "stats.h"
#include "store.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <mntent.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NADB_VERSION "0.1.0"
#define EXIT_PROBLEMS 1
#define EXIT_USAGE 2
#define IO_CHUNK (1u << 20)   /* bytes moved per read/write of a value */
#define GLOB_MAX_ALTS 4096     /* brace expansion bound: a typo must not eat RAM */
#define PAX_HEADER_MAX (64u << 20)
#define NS_PER_S 1000000000LL

/* ==== helpers ============================================================ */

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("nadb: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Room for NEED elements of ELEM bytes in V (capacity *CAP), doubling:
 * the new array, or NULL (V untouched) when memory ran out. */
static void *grow_array(void *v, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return v;
	size_t c = *cap ? *cap : 8;
	while (c < need)
		c *= 2;
	void *p = realloc(v, c * elem);
	if (p)
		*cap = c;
	return p;
}

/* A growable byte string, always NUL-terminated once written to. */
struct buf {
	char *s;
	size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t n)
{
	char *p = grow_array(b->s, &b->cap, b->len + n + 1, 1);
	if (!p)
		return -ENOMEM;
	b->s = p;
	memcpy(b->s + b->len, data, n);
	b->len += n;
	b->s[b->len] = 0;
	return 0;
}

static int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	char *p = grow_array(b->s, &b->cap, b->len + (size_t)n + 1, 1);
	if (!p)
		return -ENOMEM;
	b->s = p;
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

static void buf_truncate(struct buf *b, size_t len)
{
	b->len = len;
	if (b->s)
		b->s[len] = 0;
}

static void buf_free(struct buf *b)
{
	free(b->s);
	*b = (struct buf){0};
}

/* Length of the valid UTF-8 sequence at S (N bytes left), 0 if invalid. */
static size_t utf8_sequence_length(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xBF;
	size_t len;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		len = 2;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		len = 3;
		lo = s[0] == 0xE0 ? 0xA0 : lo;
		hi = s[0] == 0xED ? 0x9F : hi;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		len = 4;
		lo = s[0] == 0xF0 ? 0x90 : lo;
		hi = s[0] == 0xF4 ? 0x8F : hi;
	} else
		return 0;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

/* Append S as a JSON string.  Key names are bytes, not necessarily UTF-8:
 * a byte that is not part of valid UTF-8 becomes \udcXX, which is how
 * Python's surrogateescape reads it, so os.fsencode() gives the name back. */
static int json_quote(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	int rc = buf_add(b, "\"", 1);
	while (!rc && n) {
		size_t len = utf8_sequence_length(p, n);
		if (*p == '"' || *p == '\\')
			rc = buf_printf(b, "\\%c", *p);
		else if (*p == '\n')
			rc = buf_add(b, "\\n", 2);
		else if (*p < 0x20)
			rc = buf_printf(b, "\\u%04x", *p);
		else if (!len)
			rc = buf_printf(b, "\\udc%02x", *p);
		else
			rc = buf_add(b, p, len);
		len = len ? len : 1;
		p += len;
		n -= len;
	}
	return rc ? rc : buf_add(b, "\"", 1);
}

static int json_print_string(FILE *f, const char *s)
{
	struct buf b = {0};
	int rc = json_quote(&b, s);
	if (!rc)
		fwrite(b.s, 1, b.len, f);
	buf_free(&b);
	return rc;
}

/* "1.5 MiB": a byte count for a human, next to the exact one. */
static const char *human_bytes(uint64_t n, char *out, size_t size)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
		v /= 1024;
		u++;
	}
	snprintf(out, size, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return out;
}

/* A one-line progress indication on stderr, only when that is a terminal
 * (a script's log must not fill with carriage returns), at most 5 a second. */
struct progress {
	bool on, shown;
	struct timespec last;
};

static void progress_start(struct progress *p)
{
	*p = (struct progress){.on = isatty(STDERR_FILENO) == 1};
}

static void progress_show(struct progress *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void progress_show(struct progress *p, const char *fmt, ...)
{
	if (!p->on)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (now.tv_sec - p->last.tv_sec) * 1000 +
		     (now.tv_nsec - p->last.tv_nsec) / 1000000;
	if (p->shown && ms < 200)
		return;
	p->last = now;
	p->shown = true;
	va_list ap;
	va_start(ap, fmt);
	fputs("\r\033[K", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
}

static void progress_end(struct progress *p)
{
	if (p->shown)
		fputs("\r\033[K", stderr);
	p->shown = false;
}

/* ==== command-line arguments ============================================= */

#define OPT_JSON (1u << 0)
#define OPT_REPAIR (1u << 1)
#define MAX_ARGS 4

struct command;

struct cmd_args {
	const struct command *cmd;
	bool json, repair, help;
	int n;                   /* positional arguments */
	const char *arg[MAX_ARGS];
};

struct command {
	const char *name;
	const char *synopsis; /* "stats [--json] STORE|MOUNTPOINT" */
	const char *summary;  /* one line for nadb --help */
	const char *details;  /* nadb help CMD */
	unsigned options;     /* OPT_* it accepts */
	int min_args, max_args;
	int (*run)(const struct cmd_args *a);
};

static int usage_error(const struct command *c, const char *why, const char *what)
{
	complain("%s: %s%s%s", c->name, why, what ? ": " : "", what ? what : "");
	fprintf(stderr, "usage: nadb %s\n(nadb help %s for details)\n", c->synopsis, c->name);
	return EXIT_USAGE;
}

/* Options may come anywhere; "--" ends them (for a PATTERN starting with
 * '-').  Returns 0 or the exit status of a usage error. */
static int parse_args(const struct command *c, int argc, char **argv, struct cmd_args *a)
{
	*a = (struct cmd_args){.cmd = c};
	bool options_done = false;
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];
		if (!options_done && s[0] == '-' && s[1]) {
			if (!strcmp(s, "--"))
				options_done = true;
			else if (!strcmp(s, "--help") || !strcmp(s, "-h"))
				a->help = true;
			else if (!strcmp(s, "--json") && (c->options & OPT_JSON))
				a->json = true;
			else if (!strcmp(s, "--repair") && (c->options & OPT_REPAIR))
				a->repair = true;
			else
				return usage_error(c, "unknown option", s);
			continue;
		}
		if (a->n == MAX_ARGS || a->n == c->max_args)
			return usage_error(c, "too many arguments", s);
		a->arg[a->n++] = s;
	}
	if (!a->help && a->n < c->min_args)
		return usage_error(c, "missing arguments", NULL);
	return 0;
}

/* ==== targets: a store, or the mountpoint of a running nadbfs ============= */

struct target {
	const char *arg;       /* as the user typed it */
	const char *cmd;       /* the command, for messages */
	struct nadb_store *st; /* offline: the open store */
	char *mnt;             /* mounted: the mountpoint (absolute); else NULL */
};

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
 * realpath), or NULL.  /proc/self/mounts is the kernel's own list, and
 * nadbfs mounts with subtype nadbfs and fsname nadb:STORE. */
static char *find_nadbfs_mount(const char *real, enum mount_query q)
{
	FILE *f = setmntent("/proc/self/mounts", "r");
	if (!f)
		return NULL;
	char *found = NULL;
	struct mntent *m;
	while (!found && (m = getmntent(f)))
		if (!strcmp(m->mnt_type, "fuse.nadbfs") && mount_answers(m, real, q))
			found = strdup(m->mnt_dir);
	endmntent(f);
	return found;
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
	char *real = realpath(t->arg, NULL);
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
static int open_target(const struct cmd_args *a, const char *arg, bool mount_ok,
		       bool create, struct target *t)
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
	struct nadb_options o;
	nadb_options_default(&o);
	o.create = create;
	/* The engine logs its own line on stderr too; ours says what to do. */
	int rc = nadb_store_open(arg, &o, &t->st);
	if (rc == -EBUSY)
		explain_busy(t, mount_ok);
	else if (rc)
		complain("%s: cannot open the store: %s", arg, strerror(-rc));
	return rc ? EXIT_USAGE : 0;
}

/* Close the target; a failing close (the final commit) is a failure. */
static int close_target(struct target *t, int status)
{
	int rc = t->st ? nadb_store_close(t->st) : 0;
	if (rc)
		complain("%s: closing the store failed: %s", t->arg, strerror(-rc));
	free(t->mnt);
	*t = (struct target){0};
	return rc && !status ? EXIT_PROBLEMS : status;
}

/* The exit status for a failed operation on PATH, after saying so. */
static int report_failure(const struct target *t, const char *path, int rc)
{
	complain("%s: %s", path ? path : t->arg, strerror(-rc));
	return EXIT_PROBLEMS;
}

static const struct nadb_caller *caller(struct nadb_caller *who)
{
	*who = (struct nadb_caller){getuid(), getgid(), NULL, 0};
	return who;
}

/* ==== directory listings, shared by keys, stats and dump =============== */

struct tree_entry {
	char *name;
	struct nadb_attr attr; /* complete offline with want_attr; else the type */
};

struct tree_list {
	struct tree_entry *v;
	size_t n, cap;
};

static void tree_list_free(struct tree_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	*l = (struct tree_list){0};
}

static int tree_list_add(struct tree_list *l, const char *name, const struct nadb_attr *a)
{
	struct tree_entry *v = grow_array(l->v, &l->cap, l->n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->v = v;
	if (!(v[l->n].name = strdup(name)))
		return -ENOMEM;
	v[l->n++].attr = *a;
	return 0;
}

/* nadb_readdir holds the engine's lock while it calls us: only collect. */
static int collect_entry(void *ctx, const char *name, const struct nadb_attr *a)
{
	return tree_list_add(ctx, name, a);
}

static int list_store_dir(struct nadb_store *st, uint64_t ino, bool want_attr,
			  struct tree_list *out)
{
	return nadb_readdir(st, ino, NULL, want_attr, collect_entry, out);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct tree_entry *)a)->name, ((const struct tree_entry *)b)->name);
}

static uint32_t mode_of_dirent(int dfd, const struct dirent *d)
{
	struct stat s;
	switch (d->d_type) {
	case DT_DIR: return S_IFDIR;
	case DT_REG: return S_IFREG;
	case DT_LNK: return S_IFLNK;
	case DT_FIFO: return S_IFIFO;
	case DT_SOCK: return S_IFSOCK;
	default:
		return fstatat(dfd, d->d_name, &s, AT_SYMLINK_NOFOLLOW) ? 0 : s.st_mode;
	}
}

/* A directory of a mounted store, sorted by name (not the kernel's order).
 * At the root, "tags" and dot names are the daemon's own files, not data,
 * and so is every entry with the top bit of its inode number set (.stats
 * of databases and namespaces). */
static int list_mounted_dir(const char *dir, bool at_root, struct tree_list *out)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	int rc = 0;
	struct dirent *e;
	errno = 0;
	while (!rc && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (at_root && (e->d_name[0] == '.' || !strcmp(e->d_name, "tags")))
			continue;
		if ((uint64_t)e->d_ino >> 63)
			continue;
		struct nadb_attr a = {.ino = e->d_ino, .mode = mode_of_dirent(dirfd(d), e)};
		rc = tree_list_add(out, e->d_name, &a);
	}
	if (!rc && errno)
		rc = -errno;
	closedir(d);
	if (!rc)
		qsort(out->v, out->n, sizeof(*out->v), by_name);
	return rc;
}

/* ==== ls, get, put, rm, setx, getx: one key or directory ================ */

static int print_listing(const struct tree_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		printf("%s%s\n", l->v[i].name, S_ISDIR(l->v[i].attr.mode) ? "/" : "");
	return 0;
}

static int list_path(struct nadb_store *st, const char *path)
{
	struct nadb_attr a;
	int rc = nadb_resolve(st, path, &a);
	if (!rc && !S_ISDIR(a.mode)) {
		printf("%s\n", strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
		return 0;
	}
	struct tree_list l = {0};
	if (!rc)
		rc = list_store_dir(st, a.ino, false, &l);
	if (!rc)
		print_listing(&l);
	tree_list_free(&l);
	return rc;
}

static int run_ls(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	const char *path = a->n > 1 ? a->arg[1] : "/";
	int rc = list_path(t.st, path);
	return close_target(&t, rc ? report_failure(&t, path, rc) : 0);
}

/* Stream a key's value (SIZE bytes expected) to OUT. */
static int copy_value_out(struct nadb_store *st, uint64_t ino, FILE *out, uint64_t *copied)
{
	struct nadb_file *f;
	int rc = nadb_file_open(st, ino, 0, &f);
	if (rc)
		return rc;
	char *data = malloc(IO_CHUNK);
	ssize_t n = data ? 0 : -ENOMEM;
	off_t off = 0;
	while (data && (n = nadb_file_read(f, data, IO_CHUNK, off)) > 0) {
		if (fwrite(data, 1, (size_t)n, out) != (size_t)n) {
			n = -EIO;
			break;
		}
		off += n;
	}
	free(data);
	nadb_file_close(f);
	*copied = (uint64_t)off;
	return n < 0 ? (int)n : 0;
}

static int get_value(struct nadb_store *st, const char *path)
{
	struct nadb_attr a;
	uint64_t copied;
	int rc = nadb_resolve(st, path, &a);
	if (rc)
		return rc;
	if (S_ISDIR(a.mode))
		return -EISDIR;
	rc = copy_value_out(st, a.ino, stdout, &copied);
	return rc ? rc : fflush(stdout) ? -errno : 0;
}

static int run_get(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	int rc = get_value(t.st, a->arg[1]);
	return close_target(&t, rc ? report_failure(&t, a->arg[1], rc) : 0);
}

/* Split PATH into its directory (made as needed, like mkdir -p) and last
 * name (a pointer into PATH). */
static int make_parents(struct nadb_store *st, const char *path, uint64_t *parent,
			const char **leaf)
{
	struct nadb_caller who;
	char name[NADB_NAME_MAX + 1];
	struct nadb_attr a;
	uint64_t dir = NADB_ROOT_INO;
	for (;;) {
		while (*path == '/')
			path++;
		size_t n = strcspn(path, "/");
		if (!path[n] || !path[n + strspn(path + n, "/")]) {
			if (!n || path[n])
				return -EINVAL; /* empty, or a trailing '/' on a key */
			*parent = dir;
			*leaf = path;
			return 0;
		}
		if (n > NADB_NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(name, path, n);
		name[n] = 0;
		int rc = nadb_lookup(st, dir, name, &a);
		if (rc == -ENOENT)
			rc = nadb_mknod(st, dir, name, S_IFDIR | 0755, 0, caller(&who), &a);
		if (rc)
			return rc;
		if (!S_ISDIR(a.mode))
			return -ENOTDIR;
		dir = a.ino;
		path += n;
	}
}

/* The key at PATH, made (with its parents) if missing. */
static int find_or_make_key(struct nadb_store *st, const char *path, struct nadb_attr *a)
{
	struct nadb_caller who;
	uint64_t parent;
	const char *leaf;
	int rc = make_parents(st, path, &parent, &leaf);
	if (!rc) {
		rc = nadb_lookup(st, parent, leaf, a);
		if (rc == -ENOENT)
			rc = nadb_mknod(st, parent, leaf, S_IFREG | 0644, 0, caller(&who), a);
	}
	return rc;
}

static int put_value(struct nadb_store *st, const char *path)
{
	struct nadb_attr a;
	int rc = find_or_make_key(st, path, &a);
	if (rc)
		return rc;
	if (S_ISDIR(a.mode))
		return -EISDIR;
	struct nadb_file *f;
	if ((rc = nadb_file_open(st, a.ino, NADB_OPEN_TRUNC | NADB_OPEN_WRITE, &f)))
		return rc;
	char *data = malloc(IO_CHUNK);
	rc = data ? 0 : -ENOMEM;
	off_t off = 0;
	size_t n;
	while (!rc && (n = fread(data, 1, IO_CHUNK, stdin)) > 0) {
		ssize_t w = nadb_file_write(f, data, n, off);
		rc = w < 0 ? (int)w : 0;
		off += (off_t)n;
	}
	free(data);
	if (!rc && ferror(stdin))
		rc = -EIO;
	if (!rc)
		rc = nadb_file_fsync(f);
	int rc2 = nadb_file_close(f);
	return rc ? rc : rc2;
}

static int run_put(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, true, &t);
	if (status)
		return status;
	int rc = put_value(t.st, a->arg[1]);
	return close_target(&t, rc ? report_failure(&t, a->arg[1], rc) : 0);
}

/* The directory holding PATH's last name, and that name. */
static int resolve_parent(struct nadb_store *st, const char *path, struct nadb_attr *dir,
			  const char **leaf)
{
	const char *slash = strrchr(path, '/');
	*leaf = slash ? slash + 1 : path;
	size_t n = slash ? (size_t)(slash - path) : 0;
	char *d = strndup(path, n);
	if (!d)
		return -ENOMEM;
	int rc = nadb_resolve(st, d, dir);
	free(d);
	return rc;
}

static int remove_path(struct nadb_store *st, const char *path)
{
	struct nadb_attr a, d;
	const char *leaf;
	int rc = nadb_resolve(st, path, &a);
	if (!rc)
		rc = resolve_parent(st, path, &d, &leaf);
	if (rc)
		return rc;
	return S_ISDIR(a.mode) ? nadb_rmdir(st, d.ino, leaf) : nadb_unlink(st, d.ino, leaf);
}

static int run_rm(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	int rc = remove_path(t.st, a->arg[1]);
	return close_target(&t, rc ? report_failure(&t, a->arg[1], rc) : 0);
}

static int run_setx(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	struct nadb_attr at;
	int rc = nadb_resolve(t.st, a->arg[1], &at);
	if (!rc)
		rc = nadb_setxattr(t.st, at.ino, a->arg[2], a->arg[3], strlen(a->arg[3]), 0);
	if (rc == -EOPNOTSUPP) {
		complain("%s: %s: only user.* attributes are kept", a->arg[1], a->arg[2]);
		return close_target(&t, EXIT_PROBLEMS);
	}
	return close_target(&t, rc ? report_failure(&t, a->arg[1], rc) : 0);
}

/* The value of xattr NAME of INO, malloc'd, in *value (size *len). */
static int read_xattr(struct nadb_store *st, uint64_t ino, const char *name, char **value,
		      size_t *len)
{
	for (int tries = 0; tries < 4; tries++) {
		ssize_t n = nadb_getxattr(st, ino, name, NULL, 0);
		if (n < 0)
			return (int)n;
		char *v = malloc((size_t)n + 1);
		if (!v)
			return -ENOMEM;
		ssize_t m = n ? nadb_getxattr(st, ino, name, v, (size_t)n) : 0;
		if (m >= 0) {
			v[m] = 0;
			*value = v;
			*len = (size_t)m;
			return 0;
		}
		free(v);
		if (m != -ERANGE) /* ERANGE: it grew between the two calls */
			return (int)m;
	}
	return -ERANGE;
}

static int run_getx(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	struct nadb_attr at;
	char *v = NULL;
	size_t len = 0;
	int rc = nadb_resolve(t.st, a->arg[1], &at);
	if (!rc)
		rc = read_xattr(t.st, at.ino, a->arg[2], &v, &len);
	if (!rc)
		fwrite(v, 1, len, stdout);
	free(v);
	if (rc == -ENODATA) {
		complain("%s: no attribute %s", a->arg[1], a->arg[2]);
		return close_target(&t, EXIT_PROBLEMS);
	}
	return close_target(&t, rc ? report_failure(&t, a->arg[1], rc) : 0);
}

/* ==== stats ================================================================
 * Both sources end up as one JSON document: the daemon's .stats as served,
 * or the same fields computed offline (plus per-database and per-namespace
 * "scopes").  The table is printed from the parsed document, so a mount and
 * a store read the same way. */

static int add_scope_row(struct nadb_store *st, uint64_t ino, const char *path,
			 const char *level, struct buf *b, bool *first)
{
	struct nadb_stats s;
	int rc = nadb_stats(st, ino, &s);
	if (rc)
		return rc;
	rc = buf_printf(b, "%s{\"path\":", *first ? "" : ",");
	*first = false;
	if (!rc)
		rc = json_quote(b, path);
	if (!rc)
		rc = buf_printf(b, ",\"level\":\"%s\",\"keys\":%" PRIu64 ",\"bytes\":%" PRIu64
				   ",\"namespaces\":%" PRIu64 ",\"dirs\":%" PRIu64 "}",
				level, s.keys, s.bytes, s.namespaces, s.dirs);
	return rc;
}

/* Rows for every database and each of its namespaces, in name order. */
static int add_scope_rows(struct nadb_store *st, struct buf *b)
{
	struct tree_list dbs = {0};
	bool first = true;
	int rc = list_store_dir(st, NADB_ROOT_INO, false, &dbs);
	for (size_t i = 0; !rc && i < dbs.n; i++) {
		if (!S_ISDIR(dbs.v[i].attr.mode))
			continue;
		struct buf path = {0};
		struct tree_list nss = {0};
		rc = buf_printf(&path, "/%s", dbs.v[i].name);
		if (!rc)
			rc = add_scope_row(st, dbs.v[i].attr.ino, path.s, "database", b, &first);
		if (!rc)
			rc = list_store_dir(st, dbs.v[i].attr.ino, false, &nss);
		for (size_t j = 0; !rc && j < nss.n; j++) {
			if (!S_ISDIR(nss.v[j].attr.mode))
				continue;
			buf_truncate(&path, strlen(dbs.v[i].name) + 1);
			rc = buf_printf(&path, "/%s", nss.v[j].name);
			if (!rc)
				rc = add_scope_row(st, nss.v[j].attr.ino, path.s, "namespace", b,
						   &first);
		}
		tree_list_free(&nss);
		buf_free(&path);
	}
	tree_list_free(&dbs);
	return rc;
}

static double ratio(uint64_t a, uint64_t b, double if_none)
{
	return b ? (double)a / (double)b : if_none;
}

/* The offline counterpart of the daemon's .stats, field for field (less
 * uptime_s and ops, which only a running daemon has). */
static int stats_document(struct nadb_store *st, const char *store, struct buf *b)
{
	struct nadb_stats s;
	int rc = nadb_stats(st, NADB_ROOT_INO, &s);
	if (rc)
		return rc;
	const struct {
		const char *name;
		uint64_t value;
	} counts[] = {
		{"keys", s.keys}, {"databases", s.databases}, {"namespaces", s.namespaces},
		{"dirs", s.dirs}, {"tags", s.tags}, {"logical_bytes", s.bytes},
		{"stored_bytes", s.stored_bytes}, {"chunks", s.chunks},
		{"chunk_bytes", s.chunk_raw_bytes}, {"pack_bytes", s.pack_bytes},
		{"garbage_bytes", s.garbage_bytes}, {"buffer_bytes", s.buffered_bytes},
		{"buffer_limit", s.buffer_limit}, {"expiring", s.expiring}, {"reaped", s.reaped},
	};
	rc = buf_printf(b, "{\"store\":");
	if (!rc)
		rc = json_quote(b, store);
	for (size_t i = 0; !rc && i < sizeof(counts) / sizeof(counts[0]); i++)
		rc = buf_printf(b, ",\"%s\":%" PRIu64, counts[i].name, counts[i].value);
	if (!rc)
		rc = buf_printf(b, ",\"dedup_ratio\":%.4f,\"compression_ratio\":%.4f"
				   ",\"buffer_utilization_pct\":%.1f,\"version\":\"" NADB_VERSION
				   "\",\"scopes\":[",
				ratio(s.bytes, s.chunk_raw_bytes, 1.0),
				ratio(s.chunk_raw_bytes, s.stored_bytes, 1.0),
				100.0 * ratio(s.buffered_bytes, s.buffer_limit, 0.0));
	if (!rc)
		rc = add_scope_rows(st, b);
	return rc ? rc : buf_printf(b, "]}\n");
}

/* ---- a small JSON reader: the document flattened to (path, value) pairs,
 * "ops.read.p99_us" -> "12", in document order. */

struct pair {
	char *key, *value;
};

struct pairs {
	struct pair *v;
	size_t n, cap;
};

static void pairs_free(struct pairs *p)
{
	for (size_t i = 0; i < p->n; i++) {
		free(p->v[i].key);
		free(p->v[i].value);
	}
	free(p->v);
	*p = (struct pairs){0};
}

static int pairs_add(struct pairs *p, const char *key, const char *value, size_t len)
{
	struct pair *v = grow_array(p->v, &p->cap, p->n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->v = v;
	v[p->n].key = strdup(key);
	v[p->n].value = strndup(value, len);
	if (!v[p->n].key || !v[p->n].value) {
		free(v[p->n].key);
		free(v[p->n].value);
		return -ENOMEM;
	}
	p->n++;
	return 0;
}

static const char *pairs_get(const struct pairs *p, const char *key)
{
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->v[i].key, key))
			return p->v[i].value;
	return NULL;
}

struct json_reader {
	const char *p, *end;
	struct pairs *out;
	struct buf path;
	int depth;
};

static void jr_skip_space(struct json_reader *r)
{
	while (r->p < r->end && isspace((unsigned char)*r->p))
		r->p++;
}

static bool jr_take(struct json_reader *r, char c)
{
	jr_skip_space(r);
	if (r->p < r->end && *r->p == c) {
		r->p++;
		return true;
	}
	return false;
}

/* \uXXXX as UTF-8 (the \udcXX of json_quote as its raw byte). */
static int jr_unicode(struct json_reader *r, struct buf *s)
{
	if (r->end - r->p < 4)
		return -EINVAL;
	char hex[5] = {r->p[0], r->p[1], r->p[2], r->p[3], 0};
	char *endp;
	unsigned long u = strtoul(hex, &endp, 16);
	if (*endp)
		return -EINVAL;
	r->p += 4;
	unsigned char o[3];
	if (u >= 0xDC80 && u <= 0xDCFF)
		return buf_add(s, (char[]){(char)(u & 0xFF)}, 1);
	if (u < 0x80)
		return buf_add(s, (char[]){(char)u}, 1);
	if (u < 0x800) {
		o[0] = (unsigned char)(0xC0 | u >> 6);
		o[1] = (unsigned char)(0x80 | (u & 0x3F));
		return buf_add(s, o, 2);
	}
	o[0] = (unsigned char)(0xE0 | u >> 12);
	o[1] = (unsigned char)(0x80 | ((u >> 6) & 0x3F));
	o[2] = (unsigned char)(0x80 | (u & 0x3F));
	return buf_add(s, o, 3);
}

static int jr_string(struct json_reader *r, struct buf *s)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	int rc = buf_add(s, "", 0);
	if (!jr_take(r, '"'))
		return -EINVAL;
	while (!rc && r->p < r->end && *r->p != '"') {
		char c = *r->p++;
		if (c != '\\') {
			rc = buf_add(s, &c, 1);
			continue;
		}
		if (r->p >= r->end)
			return -EINVAL;
		c = *r->p++;
		const char *k = c ? strchr(from, c) : NULL;
		rc = c == 'u' ? jr_unicode(r, s) : k ? buf_add(s, &to[k - from], 1) : -EINVAL;
	}
	if (rc || r->p >= r->end)
		return rc ? rc : -EINVAL;
	r->p++;
	return 0;
}

static int jr_value(struct json_reader *r);

/* Parse the value of member SEGMENT with SEGMENT appended to the path. */
static int jr_member(struct json_reader *r, const char *segment)
{
	size_t len = r->path.len;
	int rc = buf_printf(&r->path, "%s%s", len ? "." : "", segment);
	if (!rc)
		rc = jr_value(r);
	buf_truncate(&r->path, len);
	return rc;
}

static int jr_object(struct json_reader *r)
{
	if (jr_take(r, '}'))
		return 0;
	int rc = 0;
	do {
		struct buf key = {0};
		rc = jr_string(r, &key);
		if (!rc)
			rc = jr_take(r, ':') ? jr_member(r, key.s) : -EINVAL;
		buf_free(&key);
	} while (!rc && jr_take(r, ','));
	return rc ? rc : jr_take(r, '}') ? 0 : -EINVAL;
}

static int jr_array(struct json_reader *r)
{
	if (jr_take(r, ']'))
		return 0;
	int rc = 0;
	size_t i = 0;
	do {
		char index[24];
		snprintf(index, sizeof(index), "%zu", i++);
		rc = jr_member(r, index);
	} while (!rc && jr_take(r, ','));
	return rc ? rc : jr_take(r, ']') ? 0 : -EINVAL;
}

static int jr_value(struct json_reader *r)
{
	if (++r->depth > 32)
		return -EINVAL;
	int rc;
	jr_skip_space(r);
	if (jr_take(r, '{'))
		rc = jr_object(r);
	else if (jr_take(r, '['))
		rc = jr_array(r);
	else if (r->p < r->end && *r->p == '"') {
		struct buf s = {0};
		rc = jr_string(r, &s);
		if (!rc)
			rc = pairs_add(r->out, r->path.s ? r->path.s : "", s.s, s.len);
		buf_free(&s);
	} else {
		const char *start = r->p;
		while (r->p < r->end && (isalnum((unsigned char)*r->p) || strchr("+-.", *r->p)))
			r->p++;
		rc = r->p == start ? -EINVAL
				   : pairs_add(r->out, r->path.s ? r->path.s : "", start,
					       (size_t)(r->p - start));
	}
	r->depth--;
	return rc;
}

static int parse_json(const char *text, size_t len, struct pairs *out)
{
	struct json_reader r = {.p = text, .end = text + len, .out = out};
	int rc = jr_value(&r);
	jr_skip_space(&r);
	if (!rc && r.p != r.end)
		rc = -EINVAL;
	buf_free(&r.path);
	return rc;
}

/* ---- the table */

enum figure { COUNT, BYTES, RATIO, TEXT };

static void print_figure(const char *label, const char *value, enum figure kind)
{
	char h[32];
	if (!value)
		return; /* a field this source does not have */
	printf("  %-20s %s", label, value);
	if (kind == BYTES && strtoull(value, NULL, 10) >= 1024)
		printf("  (%s)", human_bytes(strtoull(value, NULL, 10), h, sizeof(h)));
	printf("%s\n", kind == RATIO ? "x" : "");
}

static void print_uptime(const char *value)
{
	if (!value)
		return;
	unsigned long long s = strtoull(value, NULL, 10);
	printf("  %-20s %llud %02lluh %02llum %02llus\n", "uptime", s / 86400, s / 3600 % 24,
	       s / 60 % 60, s % 60);
}

static void print_buffers(const struct pairs *p)
{
	const char *used = pairs_get(p, "buffer_bytes"), *limit = pairs_get(p, "buffer_limit");
	const char *pct = pairs_get(p, "buffer_utilization_pct");
	char a[32], b[32];
	if (!used || !limit)
		return;
	printf("  %-20s %s of %s (%s%%)\n", "write buffers",
	       human_bytes(strtoull(used, NULL, 10), a, sizeof(a)),
	       human_bytes(strtoull(limit, NULL, 10), b, sizeof(b)), pct ? pct : "?");
}

/* Value of FIELD in the group of pairs starting at I whose keys begin
 * with PREFIX ("scopes.3."); groups are contiguous in document order. */
static const char *group_get(const struct pairs *p, size_t i, const char *prefix, const char *field)
{
	size_t n = strlen(prefix);
	for (; i < p->n && !strncmp(p->v[i].key, prefix, n); i++)
		if (!strcmp(p->v[i].key + n, field))
			return p->v[i].value;
	return NULL;
}

/* Index of the next group of key GROUP ("scopes", "ops") at or after I,
 * its prefix in PREFIX ("ops.read."). */
static bool next_group(const struct pairs *p, size_t *i, const char *group, struct buf *prefix)
{
	size_t n = strlen(group);
	for (; *i < p->n; (*i)++) {
		const char *k = p->v[*i].key;
		bool in_group = !strncmp(k, group, n) && k[n] == '.';
		const char *dot = in_group ? strchr(k + n + 1, '.') : NULL;
		if (!dot)
			continue;
		buf_truncate(prefix, 0);
		if (buf_add(prefix, k, (size_t)(dot - k) + 1))
			return false;
		return true;
	}
	return false;
}

/* Skip past the group whose prefix is PREFIX. */
static void skip_group(const struct pairs *p, size_t *i, const struct buf *prefix)
{
	while (*i < p->n && !strncmp(p->v[*i].key, prefix->s, prefix->len))
		(*i)++;
}

static void print_scopes(const struct pairs *p)
{
	struct buf prefix = {0};
	bool header = false;
	for (size_t i = 0; next_group(p, &i, "scopes", &prefix); skip_group(p, &i, &prefix)) {
		const char *level = group_get(p, i, prefix.s, "level");
		bool db = level && !strcmp(level, "database");
		if (!header)
			printf("\n  %-32s %12s %14s %10s %8s\n", "database/namespace", "keys",
			       "bytes", "namespaces", "dirs");
		header = true;
		const char *path = group_get(p, i, prefix.s, "path");
		const char *keys = group_get(p, i, prefix.s, "keys");
		const char *bytes = group_get(p, i, prefix.s, "bytes");
		const char *nss = db ? group_get(p, i, prefix.s, "namespaces") : NULL;
		const char *dirs = group_get(p, i, prefix.s, "dirs");
		printf("  %-32s %12s %14s %10s %8s\n", path ? path : "?", keys ? keys : "-",
		       bytes ? bytes : "-", nss ? nss : "-", dirs ? dirs : "-");
	}
	buf_free(&prefix);
}

static void print_ops(const struct pairs *p)
{
	static const char *const fields[] = {"count", "mean_us", "p50_us", "p99_us", "max_us"};
	struct buf prefix = {0};
	bool header = false;
	for (size_t i = 0; next_group(p, &i, "ops", &prefix); skip_group(p, &i, &prefix)) {
		if (!header)
			printf("\n  %-16s %12s %10s %10s %10s %10s\n", "operation", "count",
			       "mean us", "p50 us", "p99 us", "max us");
		header = true;
		printf("  %-16.*s", (int)(prefix.len - 5), prefix.s + 4);
		for (size_t f = 0; f < 5; f++) {
			const char *v = group_get(p, i, prefix.s, fields[f]);
			printf(f ? " %10s" : " %12s", v ? v : "-");
		}
		printf("\n");
	}
	buf_free(&prefix);
}

static void print_stats_table(const struct pairs *p, const char *title)
{
	printf("%s\n", title);
	print_figure("version", pairs_get(p, "version"), TEXT);
	print_uptime(pairs_get(p, "uptime_s"));
	print_figure("keys", pairs_get(p, "keys"), COUNT);
	print_figure("databases", pairs_get(p, "databases"), COUNT);
	print_figure("namespaces", pairs_get(p, "namespaces"), COUNT);
	print_figure("directories", pairs_get(p, "dirs"), COUNT);
	print_figure("tags", pairs_get(p, "tags"), COUNT);
	print_figure("expiring keys", pairs_get(p, "expiring"), COUNT);
	print_figure("reaped keys", pairs_get(p, "reaped"), COUNT);
	print_figure("logical bytes", pairs_get(p, "logical_bytes"), BYTES);
	print_figure("chunks", pairs_get(p, "chunks"), COUNT);
	print_figure("chunk bytes", pairs_get(p, "chunk_bytes"), BYTES);
	print_figure("stored bytes", pairs_get(p, "stored_bytes"), BYTES);
	print_figure("pack bytes", pairs_get(p, "pack_bytes"), BYTES);
	print_figure("garbage bytes", pairs_get(p, "garbage_bytes"), BYTES);
	print_figure("dedup ratio", pairs_get(p, "dedup_ratio"), RATIO);
	print_figure("compression ratio", pairs_get(p, "compression_ratio"), RATIO);
	print_buffers(p);
	print_scopes(p);
	print_ops(p);
}

static int read_small_file(const char *path, struct buf *out)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	char chunk[4096];
	size_t n;
	int rc = 0;
	while (!rc && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		rc = out->len + n > PAX_HEADER_MAX ? -EFBIG : buf_add(out, chunk, n);
	if (!rc && ferror(f))
		rc = -EIO;
	fclose(f);
	return rc ? rc : buf_add(out, "", 0);
}

/* MNT/NAME, malloc'd. */
static char *in_mount(const char *mnt, const char *name)
{
	struct buf b = {0};
	if (buf_printf(&b, "%s/%s", mnt, name))
		return NULL;
	return b.s;
}

/* The daemon's .stats, or an exit status after saying why not. */
static int read_mount_stats(const struct target *t, struct buf *doc)
{
	char *path = in_mount(t->mnt, ".stats");
	int rc = path ? read_small_file(path, doc) : -ENOMEM;
	free(path);
	if (rc == -ENOENT) {
		complain("%s: this nadbfs serves no .stats (an older daemon?); "
			 "unmount it and run nadb %s on the STORE", t->mnt, t->cmd);
		return EXIT_USAGE;
	}
	if (rc)
		complain("%s/.stats: %s", t->mnt, strerror(-rc));
	return rc ? EXIT_PROBLEMS : 0;
}

static int print_stats_document(const struct buf *doc, bool json, const char *title)
{
	if (json) {
		fwrite(doc->s, 1, doc->len, stdout);
		return 0;
	}
	struct pairs p = {0};
	int rc = parse_json(doc->s, doc->len, &p);
	if (rc)
		complain("the statistics are not a JSON document: %s", strerror(-rc));
	else
		print_stats_table(&p, title);
	pairs_free(&p);
	return rc ? EXIT_PROBLEMS : 0;
}

static int run_stats(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], true, false, &t);
	if (status)
		return status;
	struct buf doc = {0}, title = {0};
	if (t.mnt) {
		status = read_mount_stats(&t, &doc);
		buf_printf(&title, "nadbfs mounted on %s", t.mnt);
	} else {
		int rc = stats_document(t.st, t.arg, &doc);
		status = rc ? report_failure(&t, NULL, rc) : 0;
		buf_printf(&title, "store %s (not mounted)", t.arg);
	}
	if (!status)
		status = print_stats_document(&doc, a->json, title.s ? title.s : "");
	buf_free(&doc);
	buf_free(&title);
	return close_target(&t, status);
}

/* ==== compact ============================================================= */

static void print_compaction(const struct nadb_compact_result *r, uint64_t before,
			     uint64_t after, bool json)
{
	char h[32];
	if (json) {
		printf("{\"segments_removed\":%" PRIu64 ",\"bytes_reclaimed\":%" PRIu64
		       ",\"chunks_moved\":%" PRIu64 ",\"bytes_moved\":%" PRIu64
		       ",\"pack_bytes_before\":%" PRIu64 ",\"pack_bytes_after\":%" PRIu64 "}\n",
		       r->segments_removed, r->bytes_reclaimed, r->chunks_moved, r->bytes_moved,
		       before, after);
		return;
	}
	printf("reclaimed %" PRIu64 " bytes (%s): %" PRIu64 " segments removed, %" PRIu64
	       " chunks moved (%" PRIu64 " bytes)\n",
	       r->bytes_reclaimed, human_bytes(r->bytes_reclaimed, h, sizeof(h)),
	       r->segments_removed, r->chunks_moved, r->bytes_moved);
	printf("packs: %" PRIu64 " bytes before, %" PRIu64 " after\n", before, after);
}

static int compact_store(struct target *t, bool json)
{
	struct nadb_stats before, after;
	struct nadb_compact_result r = {0};
	struct progress p;
	progress_start(&p);
	int rc = nadb_stats(t->st, NADB_ROOT_INO, &before);
	progress_show(&p, "compacting %s (%" PRIu64 " garbage bytes) ...", t->arg,
		      before.garbage_bytes);
	if (!rc)
		rc = nadb_compact(t->st, true, 0, &r);
	if (!rc)
		rc = nadb_store_sync(t->st);
	if (!rc)
		rc = nadb_stats(t->st, NADB_ROOT_INO, &after);
	progress_end(&p);
	if (rc)
		return report_failure(t, NULL, rc);
	print_compaction(&r, before.pack_bytes, after.pack_bytes, json);
	return 0;
}

/* pack_bytes from the daemon's .stats, or 0 when it says nothing. */
static uint64_t mount_pack_bytes(const struct target *t)
{
	char *path = in_mount(t->mnt, ".stats");
	struct buf doc = {0};
	struct pairs p = {0};
	uint64_t n = 0;
	if (path && !read_small_file(path, &doc) && !parse_json(doc.s, doc.len, &p) &&
	    pairs_get(&p, "pack_bytes"))
		n = strtoull(pairs_get(&p, "pack_bytes"), NULL, 10);
	pairs_free(&p);
	buf_free(&doc);
	free(path);
	return n;
}

/* Ask the daemon: it compacts while serving, between requests. */
static int compact_mount(struct target *t, bool json)
{
	char *ctl = in_mount(t->mnt, ".ctl");
	if (!ctl)
		return report_failure(t, NULL, -ENOMEM);
	uint64_t before = mount_pack_bytes(t);
	int fd = open(ctl, O_WRONLY);
	int rc = fd < 0 ? -errno : 0;
	static const char cmd[] = "compact\n";
	if (!rc && write(fd, cmd, sizeof(cmd) - 1) != (ssize_t)(sizeof(cmd) - 1))
		rc = -errno;
	if (fd >= 0 && close(fd) && !rc)
		rc = -errno;
	free(ctl);
	if (rc == -ENOENT) {
		complain("%s: this nadbfs has no .ctl (an older daemon?); "
			 "unmount it and run nadb compact on the STORE", t->mnt);
		return EXIT_USAGE;
	}
	if (rc) {
		complain("%s/.ctl: %s", t->mnt, strerror(-rc));
		return EXIT_PROBLEMS;
	}
	uint64_t after = mount_pack_bytes(t);
	if (json)
		printf("{\"requested\":true,\"pack_bytes_before\":%" PRIu64
		       ",\"pack_bytes_after\":%" PRIu64 "}\n", before, after);
	else
		printf("compaction requested from the daemon on %s; packs: %" PRIu64
		       " bytes before, %" PRIu64 " now\n", t->mnt, before, after);
	return 0;
}

static int run_compact(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], true, false, &t);
	if (status)
		return status;
	status = t.mnt ? compact_mount(&t, a->json) : compact_store(&t, a->json);
	return close_target(&t, status);
}

/* ==== fsck ================================================================ */

struct fsck_report {
	bool json;
	uint64_t lines;
	struct progress progress;
};

static void report_problem(void *ctx, const char *line)
{
	struct fsck_report *r = ctx;
	progress_end(&r->progress);
	if (r->json) {
		fputs(r->lines ? "," : "", stdout);
		json_print_string(stdout, line);
	} else
		printf("problem: %s\n", line);
	r->lines++;
	progress_show(&r->progress, "fsck: checking ... %" PRIu64 " problems so far", r->lines);
}

static void print_fsck_result(const struct nadb_fsck_result *res, bool repair, bool json)
{
	if (json) {
		printf("],\"inodes\":%" PRIu64 ",\"dirents\":%" PRIu64 ",\"chunks\":%" PRIu64
		       ",\"chunk_bytes\":%" PRIu64 ",\"problems\":%" PRIu64 ",\"repaired\":%" PRIu64
		       ",\"repair\":%s}\n",
		       res->inodes, res->dirents, res->chunks, res->chunk_bytes, res->problems,
		       res->repaired, repair ? "true" : "false");
		return;
	}
	printf("%" PRIu64 " inodes, %" PRIu64 " entries, %" PRIu64 " chunks (%" PRIu64
	       " bytes): %" PRIu64 " problems",
	       res->inodes, res->dirents, res->chunks, res->chunk_bytes, res->problems);
	if (repair)
		printf(", %" PRIu64 " repaired", res->repaired);
	printf("\n");
}

static int run_fsck(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	struct fsck_report r = {.json = a->json};
	struct nadb_fsck_result res = {0};
	progress_start(&r.progress);
	progress_show(&r.progress, "fsck: checking %s ...", t.arg);
	if (r.json)
		printf("{\"lines\":[");
	int rc = nadb_fsck(t.st, a->repair, report_problem, &r, &res);
	progress_end(&r.progress);
	if (rc) {
		if (r.json)
			printf("],\"error\":\"%s\"}\n", strerror(-rc));
		complain("fsck could not finish: %s", strerror(-rc));
		return close_target(&t, EXIT_USAGE);
	}
	print_fsck_result(&res, a->repair, a->json);
	bool clean = !res.problems || (a->repair && res.repaired == res.problems);
	return close_target(&t, clean ? 0 : EXIT_PROBLEMS);
}

/* ==== glob: Redis-style patterns over key paths ============================
 * '*' and '?' stay within one name, '**' crosses '/' (and between two
 * slashes may also match no directory at all), [abc] [a-z] [!x] [^x]
 * never match '/', '\' escapes, {a,b} alternatives nest.  Braces are expanded first, so
 * the matcher itself only knows stars, classes and escapes; a group without
 * a comma ("{123}", a Redis hash tag) is literal, as in the shell. */

struct glob {
	char **alt; /* brace-free alternatives; a path matches if one does */
	size_t n, cap;
};

static void glob_free(struct glob *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->alt[i]);
	free(g->alt);
	*g = (struct glob){0};
}

/* Length of the bracket expression at P ('['), or 0 if it never closes
 * (then the '[' is an ordinary character). */
static size_t class_length(const char *p)
{
	size_t i = 1;
	if (p[i] == '!' || p[i] == '^')
		i++;
	if (p[i] == ']')
		i++;
	for (; p[i]; i++) {
		if (p[i] == '\\' && p[i + 1])
			i++;
		else if (p[i] == ']')
			return i + 1;
	}
	return 0;
}

/* How many bytes of P (from its start) to step over as one unit while
 * scanning for braces: an escape pair, a bracket expression, or one byte. */
static size_t scan_step(const char *p)
{
	if (p[0] == '\\' && p[1])
		return 2;
	size_t n = p[0] == '[' ? class_length(p) : 0;
	return n ? n : 1;
}

/* P[0] == '{': the offset of its matching '}' in *close and whether it has
 * a comma of its own; false when it never closes. */
static bool brace_group_at(const char *p, size_t *close, bool *comma)
{
	int depth = 0;
	*comma = false;
	for (size_t i = 0; p[i]; i += scan_step(p + i)) {
		if (p[i] == '{')
			depth++;
		else if (p[i] == '}' && --depth == 0) {
			*close = i;
			return true;
		} else if (p[i] == ',' && depth == 1)
			*comma = true;
	}
	return false;
}

/* The first group with alternatives: its braces at *open and *close. */
static bool find_alternatives(const char *p, size_t *open, size_t *close)
{
	bool comma;
	for (size_t i = 0; p[i]; i += scan_step(p + i))
		if (p[i] == '{' && brace_group_at(p + i, close, &comma) && comma) {
			*open = i;
			*close += i;
			return true;
		}
	return false;
}

static int glob_add(struct glob *g, char *alt)
{
	char **v = g->n >= GLOB_MAX_ALTS ? NULL : grow_array(g->alt, &g->cap, g->n + 1, sizeof(*v));
	if (!v) {
		free(alt);
		return g->n >= GLOB_MAX_ALTS ? -E2BIG : -ENOMEM;
	}
	g->alt = v;
	g->alt[g->n++] = alt;
	return 0;
}

/* PATTERN with the group [open, close] replaced by P[from, to). */
static char *splice_alternative(const char *p, size_t open, size_t close, size_t from, size_t to)
{
	struct buf b = {0};
	if (buf_add(&b, p, open) || buf_add(&b, p + from, to - from) ||
	    buf_add(&b, p + close + 1, strlen(p + close + 1))) {
		buf_free(&b);
		return NULL;
	}
	return b.s;
}

static int glob_expand(struct glob *g, const char *p)
{
	size_t open, close;
	if (!find_alternatives(p, &open, &close)) {
		char *copy = strdup(p);
		return copy ? glob_add(g, copy) : -ENOMEM;
	}
	int depth = 0, rc = 0;
	size_t from = open + 1;
	for (size_t i = open + 1; !rc && i <= close; i += i < close ? scan_step(p + i) : 1) {
		if (i < close && p[i] == '{')
			depth++;
		else if (i < close && p[i] == '}')
			depth--;
		if (i < close && !(p[i] == ',' && depth == 0))
			continue;
		char *alt = splice_alternative(p, open, close, from, i);
		rc = alt ? glob_expand(g, alt) : -ENOMEM;
		free(alt);
		from = i + 1;
	}
	return rc;
}

static int glob_compile(const char *pattern, struct glob *g)
{
	*g = (struct glob){0};
	int rc = glob_expand(g, pattern);
	if (rc)
		glob_free(g);
	return rc;
}

/* Does C fall in the bracket expression P of length LEN? */
static bool class_has(const char *p, size_t len, unsigned char c)
{
	size_t i = 1, last = len - 1; /* last: the closing ']' */
	bool negate = p[i] == '!' || p[i] == '^', hit = false;
	i += negate;
	while (i < last) {
		unsigned char lo = (unsigned char)p[i], hi;
		if (lo == '\\' && i + 1 < last)
			lo = (unsigned char)p[++i];
		hi = lo;
		i++;
		if (p[i] == '-' && i + 1 < last) {
			hi = (unsigned char)p[++i];
			if (hi == '\\' && i + 1 < last)
				hi = (unsigned char)p[++i];
			i++;
		}
		if (lo > hi) {
			unsigned char t = lo;
			lo = hi;
			hi = t;
		}
		hit |= c >= lo && c <= hi;
	}
	return hit != negate;
}

/* One attempt to match a path.  Stars backtrack, so a pattern like
 * "**a**a**a**a**b" is exponential in the path's length: the budget of
 * steps turns that into an error rather than a hang. */
struct glob_match {
	const char *start; /* the whole pattern */
	bool prefix;       /* could the path be the beginning of a match? */
	unsigned long budget;
};

#define GLOB_BUDGET 50000000UL

static bool match_from(struct glob_match *m, const char *p, const char *t)
{
	for (;;) {
		if (!m->budget || !--m->budget)
			return false;
		if (!*p)
			return !*t;
		if (!*t && m->prefix)
			return true;
		if (*p == '*') {
			bool cross = p[1] == '*';
			bool dir_slot = cross && (p == m->start || p[-1] == '/');
			while (*p == '*')
				p++;
			if (dir_slot && *p == '/' && match_from(m, p + 1, t))
				return true; /* a slash-star-star-slash matching one "/" */
			for (;; t++) {
				if (match_from(m, p, t))
					return true;
				if (!*t || (!cross && *t == '/'))
					return false;
			}
		}
		size_t cl = *p == '[' ? class_length(p) : 0;
		if (*p == '?' || cl) {
			if (!*t || *t == '/' || (cl && !class_has(p, cl, (unsigned char)*t)))
				return false;
			p += cl ? cl : 1;
			t++;
			continue;
		}
		if (*p == '\\' && p[1])
			p++;
		if (*p != *t)
			return false;
		p++;
		t++;
	}
}

/* 1 if PATH matches (with PREFIX: may lead to a match), 0 if not,
 * -E2BIG if the pattern is too costly to decide. */
static int glob_matches(const struct glob *g, const char *path, bool prefix)
{
	struct glob_match m = {.prefix = prefix, .budget = GLOB_BUDGET};
	for (size_t i = 0; i < g->n; i++) {
		m.start = g->alt[i];
		if (match_from(&m, g->alt[i], path))
			return 1;
	}
	return m.budget ? 0 : -E2BIG;
}

/* ==== keys, count ========================================================= */

struct key_walk {
	struct target *t;
	const struct glob *glob;
	bool json, count_only;
	uint64_t matches;
	struct buf path; /* the directory being walked: "" (root), "/app/users" */
};

static int emit_key(struct key_walk *w)
{
	w->matches++;
	if (w->count_only)
		return 0;
	if (!w->json)
		printf("%s\n", w->path.s);
	else if (fputs(w->matches > 1 ? "," : "", stdout) == EOF ||
		 json_print_string(stdout, w->path.s))
		return -EIO;
	return 0;
}

static int list_walked_dir(struct key_walk *w, uint64_t ino, struct tree_list *l)
{
	if (!w->t->mnt)
		return list_store_dir(w->t->st, ino, false, l);
	char *dir = in_mount(w->t->mnt, w->path.s ? w->path.s : "");
	int rc = dir ? list_mounted_dir(dir, w->path.len == 0, l) : -ENOMEM;
	free(dir);
	return rc;
}

static int walk_keys(struct key_walk *w, uint64_t ino)
{
	struct tree_list l = {0};
	size_t len = w->path.len;
	int rc = list_walked_dir(w, ino, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		buf_truncate(&w->path, len);
		rc = buf_printf(&w->path, "/%s", l.v[i].name);
		if (rc || !S_ISDIR(l.v[i].attr.mode)) {
			int match = rc ? 0 : glob_matches(w->glob, w->path.s, false);
			rc = match < 0 ? match : match ? emit_key(w) : rc;
			continue;
		}
		/* Descend only where a path below could still match. */
		size_t dir_len = w->path.len;
		rc = buf_add(&w->path, "/", 1);
		int may_match = rc ? 0 : glob_matches(w->glob, w->path.s, true);
		buf_truncate(&w->path, dir_len);
		if (may_match)
			rc = may_match < 0 ? may_match : walk_keys(w, l.v[i].attr.ino);
	}
	buf_truncate(&w->path, len);
	tree_list_free(&l);
	return rc;
}

static int find_keys(const struct cmd_args *a, bool count_only)
{
	struct glob g;
	int rc = glob_compile(a->arg[1], &g);
	if (rc == -E2BIG)
		return usage_error(a->cmd, "the pattern has too many {,} alternatives", a->arg[1]);
	if (rc)
		return usage_error(a->cmd, strerror(-rc), a->arg[1]);
	struct target t;
	int status = open_target(a, a->arg[0], true, false, &t);
	if (status) {
		glob_free(&g);
		return status;
	}
	struct key_walk w = {.t = &t, .glob = &g, .json = a->json, .count_only = count_only};
	if (w.json && !count_only)
		printf("[");
	rc = buf_add(&w.path, "", 0);
	if (!rc)
		rc = walk_keys(&w, NADB_ROOT_INO);
	if (w.json && !count_only)
		printf("]\n");
	if (count_only && !rc)
		printf("%" PRIu64 "\n", w.matches);
	if (!rc && fflush(stdout))
		rc = -errno;
	buf_free(&w.path);
	glob_free(&g);
	if (rc == -E2BIG)
		complain("%s: the pattern is too costly to match (too many stars)", a->arg[1]);
	else if (rc)
		report_failure(&t, NULL, rc);
	return close_target(&t, rc ? EXIT_PROBLEMS : 0);
}

static int run_keys(const struct cmd_args *a)
{
	return find_keys(a, false);
}

static int run_count(const struct cmd_args *a)
{
	return find_keys(a, true);
}

/* ==== tar: the POSIX pax interchange format ================================
 * ustar headers, each preceded by a pax extended header ('x') carrying what
 * ustar cannot: nanosecond times, long names, sizes of 8 GiB and more, big
 * ids, and every user xattr as SCHILY.xattr.NAME (what GNU tar --xattrs
 * and bsdtar read and write). */

#define BLOCK 512
#define USTAR_SIZE_MAX 077777777777ULL /* 11 octal digits: 8 GiB - 1 */
#define USTAR_ID_MAX 07777777ULL       /* 7 octal digits */

struct ustar {
	char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8];
	char typeflag, linkname[100], magic[6], version[2], uname[32], gname[32];
	char devmajor[8], devminor[8], prefix[155], pad[12];
};
_Static_assert(sizeof(struct ustar) == BLOCK, "a ustar header is one block");

static void put_octal(char *field, size_t width, uint64_t v)
{
	field[width - 1] = 0;
	for (size_t i = width - 1; i-- > 0; v >>= 3)
		field[i] = (char)('0' + (v & 7));
}

/* Copy S into a fixed field, truncated, NUL-padded (not terminated when full). */
static void put_text(char *field, size_t width, const char *s)
{
	size_t n = strnlen(s, width);
	memcpy(field, s, n);
	memset(field + n, 0, width - n);
}

static unsigned header_checksum(const struct ustar *h)
{
	const unsigned char *p = (const unsigned char *)h;
	unsigned sum = 0;
	for (size_t i = 0; i < BLOCK; i++)
		sum += i >= offsetof(struct ustar, chksum) && i < offsetof(struct ustar, typeflag)
			       ? ' ' : p[i];
	return sum;
}

static size_t decimal_digits(size_t n)
{
	size_t d = 1;
	while (n >= 10) {
		n /= 10;
		d++;
	}
	return d;
}

/* One "LEN KEY=VALUE\n" record; LEN counts itself. */
static int pax_add(struct buf *b, const char *key, const char *value, size_t vlen)
{
	size_t rest = strlen(key) + vlen + 3, d = 1;
	while (decimal_digits(rest + d) != d)
		d++;
	int rc = buf_printf(b, "%zu %s=", rest + d, key);
	if (!rc)
		rc = buf_add(b, value, vlen);
	return rc ? rc : buf_add(b, "\n", 1);
}

static int pax_add_number(struct buf *b, const char *key, uint64_t v)
{
	char text[24];
	snprintf(text, sizeof(text), "%" PRIu64, v);
	return pax_add(b, key, text, strlen(text));
}

/* Times as pax writes them: "-1.250000000" is a quarter second before -1. */
static int pax_add_time(struct buf *b, const char *key, struct timespec ts)
{
	char text[48];
	if (ts.tv_sec < 0 && ts.tv_nsec)
		snprintf(text, sizeof(text), "-%lld.%09ld", -((long long)ts.tv_sec + 1),
			 (long)(NS_PER_S - ts.tv_nsec));
	else
		snprintf(text, sizeof(text), "%lld.%09ld", (long long)ts.tv_sec, (long)ts.tv_nsec);
	return pax_add(b, key, text, strlen(text));
}

/* "[-]S[.FRACTION]" (pax times, user.expires) into *ts. */
static bool parse_decimal_time(const char *s, size_t n, struct timespec *ts)
{
	char text[48];
	if (!n || n >= sizeof(text))
		return false;
	memcpy(text, s, n);
	text[n] = 0;
	bool negative = text[0] == '-';
	char *p = text + negative, *end;
	if (!isdigit((unsigned char)*p))
		return false;
	errno = 0;
	long long sec = strtoll(p, &end, 10);
	long nsec = 0;
	if (errno)
		return false;
	if (*end == '.') {
		long scale = NS_PER_S / 10;
		for (p = end + 1; isdigit((unsigned char)*p); p++, scale /= 10)
			nsec += (*p - '0') * scale;
		end = p;
	}
	if (*end)
		return false;
	ts->tv_sec = negative ? -sec - (nsec ? 1 : 0) : sec;
	ts->tv_nsec = negative && nsec ? NS_PER_S - nsec : nsec;
	return true;
}

/* ==== dump ================================================================ */

struct hard_link {
	uint64_t ino;
	char *name; /* the member that carries the value */
};

struct dumper {
	struct nadb_store *st;
	FILE *out;
	char *data; /* IO_CHUNK bytes for values */
	struct hard_link *links; /* inodes with several names, by ino */
	size_t nlinks, caplinks;
	uint32_t owner_uid, owner_gid; /* the last names looked up */
	char uname[32], gname[32];
	uint64_t keys, dirs, bytes, skipped;
	bool out_failed; /* writing the archive (not reading the store) failed */
	struct progress progress;
};

static const char *user_name(struct dumper *d, uint32_t uid)
{
	if (d->uname[0] && d->owner_uid == uid)
		return d->uname;
	struct passwd *pw = getpwuid(uid);
	d->owner_uid = uid;
	put_text(d->uname, sizeof(d->uname) - 1, pw ? pw->pw_name : "");
	d->uname[sizeof(d->uname) - 1] = 0;
	return d->uname;
}

static const char *group_name(struct dumper *d, uint32_t gid)
{
	if (d->gname[0] && d->owner_gid == gid)
		return d->gname;
	struct group *gr = getgrgid(gid);
	d->owner_gid = gid;
	put_text(d->gname, sizeof(d->gname) - 1, gr ? gr->gr_name : "");
	d->gname[sizeof(d->gname) - 1] = 0;
	return d->gname;
}

/* The member already carrying INO's value, or NULL (then remember NAME). */
static const char *first_link(struct dumper *d, uint64_t ino, const char *name, int *rc)
{
	size_t lo = 0, hi = d->nlinks;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (d->links[mid].ino == ino)
			return d->links[mid].name;
		if (d->links[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	struct hard_link *v = grow_array(d->links, &d->caplinks, d->nlinks + 1, sizeof(*v));
	char *copy = strdup(name);
	if (!v || !copy) {
		free(copy);
		*rc = -ENOMEM;
		return NULL;
	}
	d->links = v;
	memmove(v + lo + 1, v + lo, (d->nlinks - lo) * sizeof(*v));
	v[lo] = (struct hard_link){ino, copy};
	d->nlinks++;
	return NULL;
}

static int write_block_data(struct dumper *d, const void *data, size_t n)
{
	if (fwrite(data, 1, n, d->out) == n)
		return 0;
	d->out_failed = true;
	return errno ? -errno : -EIO;
}

static int write_padding(struct dumper *d, uint64_t size)
{
	static const char zeros[BLOCK];
	return write_block_data(d, zeros, (BLOCK - size % BLOCK) % BLOCK);
}

static int write_header(struct dumper *d, const char *name, char type, const char *link,
			uint64_t size, const struct nadb_attr *a)
{
	struct ustar h;
	memset(&h, 0, sizeof(h));
	put_text(h.name, sizeof(h.name), name);
	put_octal(h.mode, sizeof(h.mode), a->mode & 07777);
	put_octal(h.uid, sizeof(h.uid), a->uid <= USTAR_ID_MAX ? a->uid : 0);
	put_octal(h.gid, sizeof(h.gid), a->gid <= USTAR_ID_MAX ? a->gid : 0);
	put_octal(h.size, sizeof(h.size), size <= USTAR_SIZE_MAX ? size : 0);
	bool mtime_fits = a->mtime.tv_sec >= 0 && (uint64_t)a->mtime.tv_sec <= USTAR_SIZE_MAX;
	put_octal(h.mtime, sizeof(h.mtime), mtime_fits ? (uint64_t)a->mtime.tv_sec : 0);
	h.typeflag = type;
	put_text(h.linkname, sizeof(h.linkname), link ? link : "");
	memcpy(h.magic, "ustar", 6);
	memcpy(h.version, "00", 2);
	put_text(h.uname, sizeof(h.uname), user_name(d, a->uid));
	put_text(h.gname, sizeof(h.gname), group_name(d, a->gid));
	put_octal(h.devmajor, sizeof(h.devmajor), 0);
	put_octal(h.devminor, sizeof(h.devminor), 0);
	put_octal(h.chksum, 7, header_checksum(&h));
	h.chksum[7] = ' ';
	return write_block_data(d, &h, sizeof(h));
}

/* SCHILY.xattr.NAME records for every xattr of INO (user.tags and
 * user.tag.*, user.ttl and user.expires included: load picks). */
static int pax_add_xattrs(struct dumper *d, uint64_t ino, struct buf *pax)
{
	ssize_t n = nadb_listxattr(d->st, ino, NULL, 0);
	char *names = n > 0 ? malloc((size_t)n) : NULL;
	if (n > 0 && !names)
		return -ENOMEM;
	if (n > 0)
		n = nadb_listxattr(d->st, ino, names, (size_t)n);
	int rc = n < 0 ? (int)n : 0;
	for (ssize_t at = 0; !rc && at < n; at += (ssize_t)strlen(names + at) + 1) {
		char *value = NULL;
		size_t len = 0;
		struct buf key = {0};
		rc = read_xattr(d->st, ino, names + at, &value, &len);
		if (rc == -ENODATA) /* e.g. a ttl that ran out since the listing */
			rc = 0;
		else if (!rc && !(rc = buf_printf(&key, "SCHILY.xattr.%s", names + at)))
			rc = pax_add(pax, key.s, value, len);
		buf_free(&key);
		free(value);
	}
	free(names);
	return rc;
}

/* What only pax can say about the member NAME. */
static int pax_for(struct dumper *d, const char *name, const char *link, uint64_t size,
		   const struct nadb_attr *a, struct buf *pax)
{
	int rc = 0;
	if (strlen(name) > sizeof(((struct ustar *)0)->name))
		rc = pax_add(pax, "path", name, strlen(name));
	if (!rc && link && strlen(link) > sizeof(((struct ustar *)0)->linkname))
		rc = pax_add(pax, "linkpath", link, strlen(link));
	if (!rc && size > USTAR_SIZE_MAX)
		rc = pax_add_number(pax, "size", size);
	if (!rc && a->uid > USTAR_ID_MAX)
		rc = pax_add_number(pax, "uid", a->uid);
	if (!rc && a->gid > USTAR_ID_MAX)
		rc = pax_add_number(pax, "gid", a->gid);
	if (!rc)
		rc = pax_add_time(pax, "mtime", a->mtime);
	if (!rc)
		rc = pax_add_time(pax, "atime", a->atime);
	return rc ? rc : pax_add_xattrs(d, a->ino, pax);
}

/* The 'x' member before NAME: named PaxHeaders/BASENAME like GNU tar's. */
static int write_pax_header(struct dumper *d, const char *name, const struct buf *pax,
			    const struct nadb_attr *a)
{
	struct buf xname = {0};
	const char *base = name;
	size_t len = strlen(name);
	while (len > 1 && name[len - 1] == '/')
		len--;
	for (size_t i = 0; i + 1 < len; i++)
		if (name[i] == '/')
			base = name + i + 1;
	struct nadb_attr xa = *a;
	xa.mode = 0644;
	int rc = buf_printf(&xname, "PaxHeaders/%.*s", (int)(name + len - base), base);
	if (!rc)
		rc = write_header(d, xname.s, 'x', NULL, pax->len, &xa);
	if (!rc)
		rc = write_block_data(d, pax->s, pax->len);
	if (!rc)
		rc = write_padding(d, pax->len);
	buf_free(&xname);
	return rc;
}

static int write_value(struct dumper *d, const struct nadb_attr *a)
{
	struct nadb_file *f;
	int rc = nadb_file_open(d->st, a->ino, 0, &f);
	if (rc)
		return rc;
	uint64_t off = 0;
	while (!rc && off < a->size) {
		size_t want = a->size - off < IO_CHUNK ? (size_t)(a->size - off) : IO_CHUNK;
		ssize_t n = nadb_file_read(f, d->data, want, (off_t)off);
		rc = n < 0 ? (int)n : n == 0 ? -EIO : write_block_data(d, d->data, (size_t)n);
		off += n > 0 ? (uint64_t)n : 0;
		progress_show(&d->progress, "dump: %" PRIu64 " keys, %" PRIu64 " MiB", d->keys,
			      (d->bytes + off) >> 20);
	}
	nadb_file_close(f);
	d->bytes += off;
	return rc ? rc : write_padding(d, a->size);
}

/* The member type for A, and what it links to; 0 for what tar cannot hold. */
static char member_type(struct dumper *d, const char *name, const struct nadb_attr *a,
			char *target, size_t size, const char **link, int *rc)
{
	*link = NULL;
	if (S_ISDIR(a->mode))
		return '5';
	if (S_ISFIFO(a->mode))
		return '6';
	if (S_ISLNK(a->mode)) {
		*rc = nadb_readlink(d->st, a->ino, target, size);
		*link = target;
		return '2';
	}
	if (!S_ISREG(a->mode))
		return 0;
	*link = a->nlink > 1 ? first_link(d, a->ino, name, rc) : NULL;
	return *link ? '1' : '0';
}

static int dump_entry(struct dumper *d, const char *name, const struct nadb_attr *a)
{
	char target[4097];
	const char *link;
	int rc = 0;
	char type = member_type(d, name, a, target, sizeof(target), &link, &rc);
	if (rc)
		return rc;
	if (!type) {
		complain("%s: a socket cannot go into a tar archive; skipped", name);
		d->skipped++;
		return 0;
	}
	uint64_t size = type == '0' ? a->size : 0;
	struct buf pax = {0};
	rc = pax_for(d, name, link, size, a, &pax);
	if (!rc)
		rc = write_pax_header(d, name, &pax, a);
	if (!rc)
		rc = write_header(d, name, type, link, size, a);
	if (!rc && type == '0')
		rc = write_value(d, a);
	buf_free(&pax);
	d->keys += type != '5';
	d->dirs += type == '5';
	return rc;
}

/* Members for everything below directory DIR, named NAME... */
static int dump_tree(struct dumper *d, uint64_t dir, struct buf *name)
{
	struct tree_list l = {0};
	size_t len = name->len;
	int rc = list_store_dir(d->st, dir, true, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		bool is_dir = S_ISDIR(l.v[i].attr.mode);
		buf_truncate(name, len);
		rc = buf_printf(name, "%s%s", l.v[i].name, is_dir ? "/" : "");
		if (!rc)
			rc = dump_entry(d, name->s, &l.v[i].attr);
		if (!rc && is_dir)
			rc = dump_tree(d, l.v[i].attr.ino, name);
	}
	buf_truncate(name, len);
	tree_list_free(&l);
	return rc;
}

/* A directory becomes "./" and "./NAME..." (like tar -C PATH -c .), a key
 * one member named by its last name. */
static int dump_path(struct dumper *d, const char *path)
{
	struct nadb_attr a;
	struct buf name = {0};
	int rc = nadb_resolve(d->st, path, &a);
	if (!rc && !S_ISDIR(a.mode)) {
		const char *slash = strrchr(path, '/');
		return dump_entry(d, slash ? slash + 1 : path, &a);
	}
	if (!rc)
		rc = buf_add(&name, "./", 2);
	if (!rc)
		rc = dump_entry(d, name.s, &a);
	if (!rc)
		rc = dump_tree(d, a.ino, &name);
	buf_free(&name);
	return rc;
}

static int finish_archive(struct dumper *d)
{
	static const char end[2 * BLOCK];
	int rc = write_block_data(d, end, sizeof(end));
	if (!rc && fflush(d->out)) {
		d->out_failed = true;
		rc = -errno;
	}
	return rc;
}

static int run_dump(const struct cmd_args *a)
{
	if (isatty(STDOUT_FILENO))
		return usage_error(a->cmd, "refusing to write an archive to a terminal",
				   "redirect stdout to a file or a pipe");
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	const char *path = a->n > 1 ? a->arg[1] : "/";
	struct dumper d = {.st = t.st, .out = stdout, .data = malloc(IO_CHUNK)};
	progress_start(&d.progress);
	int rc = d.data ? dump_path(&d, path) : -ENOMEM;
	if (!rc)
		rc = finish_archive(&d);
	progress_end(&d.progress);
	if (!rc && isatty(STDERR_FILENO))
		fprintf(stderr, "dumped %" PRIu64 " keys, %" PRIu64 " directories, %" PRIu64
				" bytes of values\n", d.keys, d.dirs, d.bytes);
	for (size_t i = 0; i < d.nlinks; i++)
		free(d.links[i].name);
	free(d.links);
	free(d.data);
	if (rc && d.out_failed)
		status = (complain("writing the archive: %s", strerror(-rc)), EXIT_PROBLEMS);
	else if (rc)
		status = report_failure(&t, path, rc);
	else if (d.skipped)
		status = EXIT_PROBLEMS;
	return close_target(&t, status);
}

/* ==== load ================================================================ */

struct xattr {
	char *name, *value;
	size_t len;
};

/* One archive member: its header, with what pax (or GNU long-name
 * records) said about it taking precedence. */
struct member {
	char type;
	char *name, *link;
	uint64_t size;
	uint32_t mode, uid, gid;
	struct timespec mtime, atime;
	bool has_name, has_link, has_size, has_uid, has_gid, has_mtime, has_atime;
	struct xattr *xattrs;
	size_t nx, capx;
	uint64_t consumed; /* bytes of its data read so far */
};

static void member_free(struct member *m)
{
	for (size_t i = 0; i < m->nx; i++) {
		free(m->xattrs[i].name);
		free(m->xattrs[i].value);
	}
	free(m->xattrs);
	free(m->name);
	free(m->link);
	*m = (struct member){0};
}

/* Directory metadata is applied after the whole archive: creating what is
 * inside would change the times again, and a default user.ttl must not
 * give the keys loaded into the directory an expiry they did not have. */
struct deferred_dir {
	uint64_t ino;
	char *path;
	struct member meta;
};

struct loader {
	struct nadb_store *st;
	FILE *in;
	struct buf base;     /* "" (the root) or "/app/users" */
	bool restore_owner;  /* like tar: only root gives files away */
	int broken;          /* the archive itself failed (-EPIPE, -EIO): stop */
	uint64_t offset;     /* bytes of the archive read, for messages */
	char *data;
	struct deferred_dir *dirs;
	size_t ndirs, capdirs;
	struct timespec now;
	uint64_t keys, dirs_made, links, bytes, expired, failed;
	struct progress progress;
};

/* Read N bytes of the archive.  At a header (MAY_END), no byte at all is
 * the end of the input: 1.  Any other shortfall breaks the load. */
static int read_archive(struct loader *l, void *p, size_t n, bool may_end)
{
	size_t got = fread(p, 1, n, l->in);
	l->offset += got;
	if (got == n)
		return 0;
	if (!got && may_end && !ferror(l->in))
		return 1;
	l->broken = ferror(l->in) ? -EIO : -EPIPE;
	return l->broken;
}

static int skip_archive(struct loader *l, uint64_t n)
{
	while (n) {
		size_t step = n < IO_CHUNK ? (size_t)n : IO_CHUNK;
		int rc = read_archive(l, l->data, step, false);
		if (rc)
			return rc;
		n -= step;
	}
	return 0;
}

/* A numeric header field: octal, or GNU's base-256 for big values. */
static uint64_t header_number(const char *field, size_t width)
{
	const unsigned char *p = (const unsigned char *)field;
	uint64_t v = 0;
	if (p[0] & 0x80) {
		for (size_t i = 1; i < width; i++)
			v = v << 8 | p[i];
		return v;
	}
	for (size_t i = 0; i < width && (p[i] == ' ' || p[i] == '0' || p[i] == 0); i++)
		if (p[i] == 0)
			return 0;
	for (size_t i = 0; i < width && p[i]; i++)
		if (p[i] >= '0' && p[i] <= '7')
			v = v << 3 | (uint64_t)(p[i] - '0');
	return v;
}

static bool header_is_valid(const struct ustar *h)
{
	uint64_t stored = header_number(h->chksum, sizeof(h->chksum));
	unsigned sum = header_checksum(h);
	int ssum = 0; /* some old tars summed signed chars */
	for (size_t i = 0; i < BLOCK; i++)
		ssum += i >= offsetof(struct ustar, chksum) && i < offsetof(struct ustar, typeflag)
				? ' ' : ((const signed char *)h)[i];
	return stored == sum || (int64_t)stored == ssum;
}

static bool is_zero_block(const void *p)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < BLOCK; i++)
		if (b[i])
			return false;
	return true;
}

static bool number_value(const char *s, size_t n, uint64_t *v)
{
	char text[24];
	if (!n || n >= sizeof(text))
		return false;
	memcpy(text, s, n);
	text[n] = 0;
	char *end;
	errno = 0;
	*v = strtoull(text, &end, 10);
	return !errno && !*end && isdigit((unsigned char)text[0]);
}

static int member_add_xattr(struct member *m, const char *name, size_t nlen, const char *value,
			    size_t vlen)
{
	struct xattr *v = grow_array(m->xattrs, &m->capx, m->nx + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	m->xattrs = v;
	v[m->nx] = (struct xattr){strndup(name, nlen), malloc(vlen + 1), vlen};
	if (!v[m->nx].name || !v[m->nx].value) {
		free(v[m->nx].name);
		free(v[m->nx].value);
		return -ENOMEM;
	}
	memcpy(v[m->nx].value, value, vlen);
	v[m->nx].value[vlen] = 0;
	m->nx++;
	return 0;
}

static bool key_is(const char *key, size_t klen, const char *want)
{
	return klen == strlen(want) && !memcmp(key, want, klen);
}

static int set_text(char **field, bool *has, const char *value, size_t len)
{
	free(*field);
	*field = strndup(value, len);
	*has = len > 0; /* an empty value cancels, per POSIX */
	return *field ? 0 : -ENOMEM;
}

/* One pax record; records this tool does not use are ignored, as pax says. */
static int pax_record(struct member *m, const char *key, size_t klen, const char *value,
		      size_t vlen)
{
	static const char xattr[] = "SCHILY.xattr.";
	uint64_t n;
	if (key_is(key, klen, "path"))
		return set_text(&m->name, &m->has_name, value, vlen);
	if (key_is(key, klen, "linkpath"))
		return set_text(&m->link, &m->has_link, value, vlen);
	if (key_is(key, klen, "size"))
		return (m->has_size = number_value(value, vlen, &m->size)) ? 0 : -EINVAL;
	if (key_is(key, klen, "uid"))
		return (m->has_uid = number_value(value, vlen, &n) && n <= UINT32_MAX)
			       ? (m->uid = (uint32_t)n, 0) : -EINVAL;
	if (key_is(key, klen, "gid"))
		return (m->has_gid = number_value(value, vlen, &n) && n <= UINT32_MAX)
			       ? (m->gid = (uint32_t)n, 0) : -EINVAL;
	if (key_is(key, klen, "mtime"))
		return (m->has_mtime = parse_decimal_time(value, vlen, &m->mtime)) ? 0 : -EINVAL;
	if (key_is(key, klen, "atime"))
		return (m->has_atime = parse_decimal_time(value, vlen, &m->atime)) ? 0 : -EINVAL;
	if (klen > sizeof(xattr) - 1 && !memcmp(key, xattr, sizeof(xattr) - 1))
		return member_add_xattr(m, key + sizeof(xattr) - 1, klen - (sizeof(xattr) - 1),
					value, vlen);
	return 0;
}

static int parse_pax(struct member *m, const char *data, size_t len)
{
	size_t at = 0;
	while (at < len) {
		if (!data[at]) /* some writers pad with NULs */
			break;
		char *space;
		unsigned long long rlen = strtoull(data + at, &space, 10);
		if (space == data + at || *space != ' ' || rlen > len - at ||
		    (size_t)(space - data) >= at + rlen || data[at + rlen - 1] != '\n')
			return -EINVAL;
		const char *key = space + 1, *end = data + at + rlen - 1;
		const char *eq = memchr(key, '=', (size_t)(end - key));
		if (!eq)
			return -EINVAL;
		int rc = pax_record(m, key, (size_t)(eq - key), eq + 1, (size_t)(end - eq - 1));
		if (rc)
			return rc;
		at += rlen;
	}
	return 0;
}

/* Read the data of an extension member (pax header, GNU long name). */
static int read_extension(struct loader *l, uint64_t size, char **out)
{
	if (size > PAX_HEADER_MAX)
		return -EFBIG;
	char *p = malloc(size + 1);
	if (!p)
		return -ENOMEM;
	int rc = read_archive(l, p, size, false);
	if (!rc)
		rc = skip_archive(l, (BLOCK - size % BLOCK) % BLOCK);
	p[size] = 0;
	if (rc)
		free(p);
	else
		*out = p;
	return rc;
}

/* The member's name from the header: PREFIX/NAME in POSIX ustar. */
static int name_from_header(struct member *m, const struct ustar *h)
{
	struct buf name = {0};
	size_t plen = strnlen(h->prefix, sizeof(h->prefix));
	bool posix = !memcmp(h->magic, "ustar", 6); /* GNU tar uses prefix's room otherwise */
	int rc = posix && plen ? buf_printf(&name, "%.*s/", (int)plen, h->prefix) : 0;
	if (!rc)
		rc = buf_add(&name, h->name, strnlen(h->name, sizeof(h->name)));
	free(m->name);
	m->name = name.s;
	m->has_name = !rc;
	return rc;
}

/* Fill in from the ustar header what pax did not already say. */
static int member_from_header(struct member *m, const struct ustar *h)
{
	m->type = h->typeflag == 0 || h->typeflag == '7' ? '0' : h->typeflag;
	m->mode = (uint32_t)header_number(h->mode, sizeof(h->mode)) & 07777;
	if (!m->has_size)
		m->size = header_number(h->size, sizeof(h->size));
	if (!m->has_uid)
		m->uid = (uint32_t)header_number(h->uid, sizeof(h->uid));
	if (!m->has_gid)
		m->gid = (uint32_t)header_number(h->gid, sizeof(h->gid));
	if (!m->has_mtime)
		m->mtime = (struct timespec){(time_t)header_number(h->mtime, sizeof(h->mtime)), 0};
	if (!m->has_link && set_text(&m->link, &m->has_link, h->linkname,
				     strnlen(h->linkname, sizeof(h->linkname))))
		return -ENOMEM;
	if (!m->has_name && name_from_header(m, h))
		return -ENOMEM;
	size_t n = strlen(m->name);
	if (m->type == '0' && n && m->name[n - 1] == '/')
		m->type = '5'; /* how tars before POSIX marked directories */
	return 0;
}

/* NAME below BASE ("" for the root) as "BASE/a/b", without empty or "."
 * components; -EINVAL for any ".." component. */
static int member_path(const struct buf *base, const char *name, struct buf *out)
{
	int rc = buf_add(out, base->len ? base->s : "", base->len);
	while (!rc && *name) {
		size_t n = strcspn(name, "/");
		if (n == 2 && !strncmp(name, "..", 2))
			return -EINVAL;
		if (n && !(n == 1 && name[0] == '.'))
			rc = buf_printf(out, "/%.*s", (int)n, name);
		name += n + (name[n] == '/');
	}
	return rc ? rc : buf_add(out, "", 0);
}

/* Make room for a new node LEAF in PARENT: keys are replaced whole (their
 * old tags and expiry go with them), an empty directory too. */
static int clear_leaf(struct nadb_store *st, uint64_t parent, const char *leaf)
{
	struct nadb_attr a;
	int rc = nadb_lookup(st, parent, leaf, &a);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	return S_ISDIR(a.mode) ? nadb_rmdir(st, parent, leaf) : nadb_unlink(st, parent, leaf);
}

static int set_attributes(struct loader *l, uint64_t ino, const struct member *m)
{
	struct nadb_attr in = {.mode = m->mode, .uid = m->uid, .gid = m->gid,
			       .mtime = m->mtime, .atime = m->atime};
	unsigned what = NADB_SET_MTIME | (m->has_atime ? NADB_SET_ATIME : 0);
	if (m->type != '2')
		what |= NADB_SET_MODE; /* a symlink's mode means nothing */
	if (l->restore_owner)
		what |= NADB_SET_UID | NADB_SET_GID;
	struct nadb_attr out;
	return nadb_setattr(l->st, ino, &in, what, &out);
}

static const struct xattr *find_xattr(const struct member *m, const char *name)
{
	for (size_t i = 0; i < m->nx; i++)
		if (!strcmp(m->xattrs[i].name, name))
			return &m->xattrs[i];
	return NULL;
}

enum xattr_phase { PLAIN, TAGS, EXPIRY };

/* Which phase sets xattr X, or -1 to leave it: of user.nadb.*, the
 * engine's metadata, only created is kept (the rest it computes, and
 * updated and accessed are the member's mtime and atime); user.tags is the
 * whole set (user.tag.* the same tags again); user.expires is exact
 * (user.ttl the same time, rounded). */
static int xattr_phase(const struct member *m, const char *name)
{
	if (!strcmp(name, "user.nadb.created"))
		return PLAIN;
	if (!strncmp(name, "user.nadb.", 10))
		return -1;
	if (!strcmp(name, "user.tags"))
		return TAGS;
	if (!strncmp(name, "user.tag.", 9))
		return find_xattr(m, "user.tags") ? -1 : TAGS;
	if (!strcmp(name, "user.expires"))
		return EXPIRY;
	if (!strcmp(name, "user.ttl"))
		return find_xattr(m, "user.expires") ? -1 : EXPIRY;
	return PLAIN;
}

/* Set M's xattrs on INO: plain ones, then tags, then the expiry last (a
 * key that expires is no longer there to be tagged). */
static int set_xattrs(struct loader *l, uint64_t ino, const struct member *m, const char *path)
{
	int failed = 0;
	for (int phase = PLAIN; phase <= EXPIRY; phase++)
		for (size_t i = 0; i < m->nx; i++) {
			const struct xattr *x = &m->xattrs[i];
			if (xattr_phase(m, x->name) != phase)
				continue;
			int rc = nadb_setxattr(l->st, ino, x->name, x->value, x->len, 0);
			if (rc) {
				complain("%s: %s: %s", path, x->name,
					 rc == -EOPNOTSUPP ? "only user.* attributes are kept"
							   : strerror(-rc));
				failed = rc;
			}
		}
	/* A key that had no expiry keeps none, even in a namespace whose
	 * default user.ttl gave it one when it was made. */
	if (m->type != '5' && !find_xattr(m, "user.expires") && !find_xattr(m, "user.ttl")) {
		int rc = nadb_removexattr(l->st, ino, "user.expires");
		if (rc && rc != -ENODATA)
			failed = rc;
	}
	return failed;
}

static int finish_node(struct loader *l, uint64_t ino, const struct member *m, const char *path)
{
	int rc = set_attributes(l, ino, m);
	int rc2 = set_xattrs(l, ino, m, path);
	return rc ? rc : rc2;
}

/* Has the key M describes expired already (its user.expires is past)? */
static bool already_expired(const struct loader *l, const struct member *m)
{
	const struct xattr *x = find_xattr(m, "user.expires");
	struct timespec when;
	if (!x || !parse_decimal_time(x->value, x->len, &when) || (!when.tv_sec && !when.tv_nsec))
		return false;
	return when.tv_sec < l->now.tv_sec ||
	       (when.tv_sec == l->now.tv_sec && when.tv_nsec <= l->now.tv_nsec);
}

/* Copy the member's data from the archive into F. */
static int copy_value_in(struct loader *l, struct member *m, struct nadb_file *f)
{
	while (m->consumed < m->size) {
		uint64_t left = m->size - m->consumed;
		size_t n = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
		int rc = read_archive(l, l->data, n, false);
		if (rc)
			return rc;
		ssize_t w = nadb_file_write(f, l->data, n, (off_t)m->consumed);
		m->consumed += n;
		if (w < 0)
			return (int)w;
		progress_show(&l->progress, "load: %" PRIu64 " keys, %" PRIu64 " MiB", l->keys,
			      (l->bytes + m->consumed) >> 20);
	}
	return 0;
}

static int load_value(struct loader *l, struct member *m, const char *path)
{
	struct nadb_caller who;
	struct nadb_attr a;
	struct nadb_file *f;
	uint64_t parent;
	const char *leaf;
	int rc = make_parents(l->st, path, &parent, &leaf);
	if (!rc)
		rc = clear_leaf(l->st, parent, leaf);
	if (!rc)
		rc = nadb_mknod(l->st, parent, leaf, S_IFREG | (m->mode & 07777), 0,
				caller(&who), &a);
	if (rc)
		return rc;
	rc = nadb_file_open(l->st, a.ino, NADB_OPEN_TRUNC | NADB_OPEN_WRITE, &f);
	if (!rc) {
		rc = copy_value_in(l, m, f);
		int rc2 = nadb_file_close(f);
		rc = rc ? rc : rc2;
	}
	if (rc) { /* no half-loaded key */
		nadb_unlink(l->st, parent, leaf);
		return rc;
	}
	l->bytes += m->size;
	return finish_node(l, a.ino, m, path);
}

static int load_special(struct loader *l, struct member *m, const char *path)
{
	struct nadb_caller who;
	struct nadb_attr a;
	uint64_t parent;
	const char *leaf;
	int rc = make_parents(l->st, path, &parent, &leaf);
	if (!rc)
		rc = clear_leaf(l->st, parent, leaf);
	if (!rc && m->type == '2')
		rc = nadb_symlink(l->st, parent, leaf, m->link ? m->link : "", caller(&who), &a);
	else if (!rc)
		rc = nadb_mknod(l->st, parent, leaf, S_IFIFO | (m->mode & 07777), 0,
				caller(&who), &a);
	return rc ? rc : finish_node(l, a.ino, m, path);
}

/* A hard link names a member loaded before it. */
static int load_hard_link(struct loader *l, struct member *m, const char *path)
{
	struct buf target = {0};
	struct nadb_attr t, made;
	uint64_t parent;
	const char *leaf;
	int rc = m->link ? member_path(&l->base, m->link, &target) : -EINVAL;
	if (!rc && !strcmp(target.s, path)) {
		buf_free(&target);
		return 0; /* a link to itself: already there */
	}
	if (!rc)
		rc = nadb_resolve(l->st, target.len ? target.s : "/", &t);
	if (!rc && S_ISDIR(t.mode))
		rc = -EPERM;
	if (!rc)
		rc = make_parents(l->st, path, &parent, &leaf);
	if (!rc)
		rc = clear_leaf(l->st, parent, leaf);
	if (!rc)
		rc = nadb_link(l->st, t.ino, parent, leaf, &made);
	if (rc == -ENOENT)
		complain("%s: hard link to %s, which is not in the store", path, m->link);
	buf_free(&target);
	return rc;
}

/* The directory at PATH, made with its parents; a key in its way goes. */
static int make_directory(struct loader *l, const char *path, struct nadb_attr *a)
{
	struct nadb_caller who;
	uint64_t parent;
	const char *leaf;
	if (!*path)
		return nadb_getattr(l->st, NADB_ROOT_INO, a);
	int rc = make_parents(l->st, path, &parent, &leaf);
	if (!rc)
		rc = nadb_lookup(l->st, parent, leaf, a);
	if (!rc && !S_ISDIR(a->mode))
		rc = clear_leaf(l->st, parent, leaf);
	if (!rc && S_ISDIR(a->mode))
		return 0;
	if (!rc || rc == -ENOENT)
		rc = nadb_mknod(l->st, parent, leaf, S_IFDIR | 0755, 0, caller(&who), a);
	l->dirs_made += !rc;
	return rc;
}

static int load_directory(struct loader *l, struct member *m, const char *path)
{
	struct nadb_attr a;
	int rc = make_directory(l, path, &a);
	if (rc)
		return rc;
	struct deferred_dir *v = grow_array(l->dirs, &l->capdirs, l->ndirs + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->dirs = v;
	char *copy = strdup(*path ? path : "/");
	if (!copy)
		return -ENOMEM;
	v[l->ndirs++] = (struct deferred_dir){a.ino, copy, *m};
	*m = (struct member){0}; /* the deferred copy owns the strings now */
	return 0;
}

static int finish_directories(struct loader *l)
{
	int failed = 0;
	for (size_t i = l->ndirs; i-- > 0;) {
		struct deferred_dir *d = &l->dirs[i];
		int rc = finish_node(l, d->ino, &d->meta, d->path);
		if (rc) {
			complain("%s: %s", d->path, strerror(-rc));
			failed = rc;
		}
		member_free(&d->meta);
		free(d->path);
	}
	free(l->dirs);
	l->dirs = NULL;
	l->ndirs = 0;
	return failed;
}

/* Put one member into the store; its failure is reported and counted, the
 * load goes on with the next member. */
static void load_member(struct loader *l, struct member *m)
{
	struct buf path = {0};
	int rc = member_path(&l->base, m->name ? m->name : "", &path);
	if (rc == -EINVAL) {
		complain("%s: refusing a member name with a '..' component", m->name);
		l->failed++;
		buf_free(&path);
		return;
	}
	if (!rc && m->type != '5' && !strcmp(path.s, l->base.s))
		rc = -EISDIR; /* only a directory may stand for the base itself */
	if (!rc && m->type == '0' && already_expired(l, m))
		l->expired++;
	else if (!rc && m->type == '0')
		rc = load_value(l, m, path.s);
	else if (!rc && m->type == '5')
		rc = load_directory(l, m, path.s);
	else if (!rc && (m->type == '2' || m->type == '6'))
		rc = load_special(l, m, path.s);
	else if (!rc && m->type == '1')
		rc = load_hard_link(l, m, path.s);
	else if (!rc) {
		complain("%s: members of type '%c' are not stored; skipped", m->name, m->type);
		l->failed++;
	}
	l->keys += !rc && (m->type == '0' || m->type == '2' || m->type == '6');
	l->links += !rc && m->type == '1';
	if (rc && !l->broken) {
		complain("%s: %s", path.len ? path.s : "/", strerror(-rc));
		l->failed++;
	}
	buf_free(&path);
}

static bool is_extension(char type)
{
	return type == 'x' || type == 'g' || type == 'L' || type == 'K';
}

/* An extension member: what it says applies to the next member.  A
 * global header ('g') holds nothing this tool uses. */
static int apply_extension(struct loader *l, const struct ustar *h, struct member *m)
{
	uint64_t size = header_number(h->size, sizeof(h->size));
	char *ext = NULL;
	int rc = read_extension(l, size, &ext);
	if (!rc && h->typeflag == 'x')
		rc = parse_pax(m, ext, size) ? -EILSEQ : 0;
	else if (!rc && h->typeflag == 'L' && !m->has_name)
		rc = set_text(&m->name, &m->has_name, ext, strlen(ext));
	else if (!rc && h->typeflag == 'K' && !m->has_link)
		rc = set_text(&m->link, &m->has_link, ext, strlen(ext));
	free(ext);
	return rc;
}

/* Load the member H describes, then step over what is left of its data
 * (all of it when it failed; a directory or link has none). */
static int load_described(struct loader *l, const struct ustar *h, struct member *m)
{
	int rc = member_from_header(m, h);
	if (rc)
		return rc;
	uint64_t size = m->size;
	load_member(l, m); /* a deferred directory takes m's fields, consumed = 0 */
	return l->broken ? l->broken
			 : skip_archive(l, size - m->consumed + (BLOCK - size % BLOCK) % BLOCK);
}

/* Read members until the end-of-archive blocks.  Returns 0, 1 for empty
 * input, or a negative errno when the archive itself is unreadable:
 * -ENOEXEC not an archive, -EILSEQ damaged, -EPIPE truncated. */
static int load_archive(struct loader *l)
{
	struct ustar h;
	struct member m = {0};
	int rc = 0;
	for (bool first = true; !rc; first = false) {
		rc = read_archive(l, &h, sizeof(h), true);
		if (rc > 0 && !first)
			return 0; /* no end blocks: the end of input stands for them */
		if (rc || is_zero_block(&h))
			break;
		if (!header_is_valid(&h))
			rc = first ? -ENOEXEC : -EILSEQ;
		else if (is_extension(h.typeflag))
			rc = apply_extension(l, &h, &m);
		else {
			rc = load_described(l, &h, &m);
			member_free(&m);
		}
	}
	member_free(&m);
	return rc;
}

static void print_load_summary(const struct loader *l, bool json)
{
	if (json)
		printf("{\"keys\":%" PRIu64 ",\"links\":%" PRIu64 ",\"directories\":%zu"
		       ",\"directories_made\":%" PRIu64 ",\"bytes\":%" PRIu64
		       ",\"expired\":%" PRIu64 ",\"failed\":%" PRIu64 "}\n",
		       l->keys, l->links, l->ndirs, l->dirs_made, l->bytes, l->expired, l->failed);
	else
		printf("loaded %" PRIu64 " keys (%" PRIu64 " bytes), %" PRIu64 " hard links, %zu "
		       "directories (%" PRIu64 " made); %" PRIu64 " already expired, %" PRIu64
		       " failed\n",
		       l->keys, l->bytes, l->links, l->ndirs, l->dirs_made, l->expired, l->failed);
}

static int load_into(struct loader *l, bool json)
{
	int rc = load_archive(l);
	progress_end(&l->progress);
	if (rc == 1 || rc == -ENOEXEC) {
		complain("stdin is %s",
			 rc == 1 ? "empty: no archive to load" : "not a tar archive");
		finish_directories(l);
		return EXIT_USAGE;
	}
	if (rc == -EILSEQ)
		complain("the archive is damaged: a bad header before byte %" PRIu64, l->offset);
	else if (rc == -EPIPE)
		complain("the archive is truncated");
	else if (rc)
		complain("reading the archive: %s", strerror(-rc));
	print_load_summary(l, json); /* before the deferred list is emptied */
	if (finish_directories(l))
		l->failed++;
	return rc || l->failed ? EXIT_PROBLEMS : 0;
}

static int run_load(const struct cmd_args *a)
{
	if (isatty(STDIN_FILENO))
		return usage_error(a->cmd, "stdin is a terminal", "redirect it from an archive");
	struct loader l = {.in = stdin, .restore_owner = geteuid() == 0, .data = malloc(IO_CHUNK)};
	const char *base = a->n > 1 ? a->arg[1] : "/";
	const struct buf root = {0};
	int rc = l.data ? member_path(&root, base, &l.base) : -ENOMEM;
	if (rc) {
		free(l.data);
		buf_free(&l.base);
		const char *why = rc == -EINVAL ? "PATH has a '..' component" : strerror(-rc);
		return usage_error(a->cmd, why, base);
	}
	struct target t;
	int status = open_target(a, a->arg[0], false, true, &t);
	if (!status) {
		l.st = t.st;
		clock_gettime(CLOCK_REALTIME, &l.now);
		progress_start(&l.progress);
		status = load_into(&l, a->json);
		status = close_target(&t, status);
	}
	free(l.data);
	buf_free(&l.base);
	return status;
}

/* ==== the command table ==================================================== */

static const struct command commands[] = {
	{"ls", "ls STORE [PATH]", "list a directory (default /), one name a line",
	 "Names in the directory PATH, one per line, in byte order; directories\n"
	 "end in '/'.  A key's PATH prints its own name.\n",
	 0, 1, 2, run_ls},
	{"get", "get STORE PATH", "write a key's value to stdout",
	 "Write the value of the key PATH to stdout, byte for byte.\n", 0, 2, 2, run_get},
	{"put", "put STORE PATH < FILE", "store stdin as a key's value",
	 "Store stdin as the value of the key PATH, replacing it if it exists and\n"
	 "making missing databases, namespaces and directories (like mkdir -p).\n"
	 "Creates STORE if it does not exist.  Durable when it returns.\n",
	 0, 2, 2, run_put},
	{"rm", "rm STORE PATH", "delete a key or an empty directory",
	 "Delete the key PATH, or the directory PATH if it is empty.\n", 0, 2, 2, run_rm},
	{"setx", "setx STORE PATH NAME VALUE", "set an extended attribute (tags, expiry, ...)",
	 "Set the user.* extended attribute NAME of PATH to VALUE, as setfattr\n"
	 "does on a mount.  The engine's own: user.tags \"a,b\" (all tags),\n"
	 "user.tag.NAME (one tag), user.ttl SECONDS (on a directory: the default\n"
	 "for keys made in it), user.expires UNIX-TIME.\n",
	 0, 4, 4, run_setx},
	{"getx", "getx STORE PATH NAME", "print an extended attribute's value",
	 "Write the value of the user.* extended attribute NAME of PATH to\n"
	 "stdout, as is (no newline added).  Exit 1 if PATH has no NAME.\n",
	 0, 3, 3, run_getx},
	{"stats", "stats [--json] STORE|MOUNTPOINT", "counters: keys, bytes, dedup, space",
	 "What the store holds: keys, databases, namespaces, directories, tags,\n"
	 "logical and stored bytes, chunks, pack and garbage bytes, the dedup\n"
	 "ratio (logical / chunk bytes) and compression ratio (chunk / stored\n"
	 "bytes), write buffers, expiring and reaped keys.  Offline, also one row\n"
	 "per database and namespace.  On a MOUNTPOINT it reads the daemon's\n"
	 ".stats (with uptime and per-operation latencies); --json prints that\n"
	 "document as is, or the same fields offline (plus \"scopes\").\n",
	 OPT_JSON, 1, 1, run_stats},
	{"compact", "compact [--json] STORE|MOUNTPOINT", "reclaim the space of deleted values",
	 "Copy the live chunks out of every pack segment holding garbage and\n"
	 "delete the segment, then print what was reclaimed.  On a MOUNTPOINT\n"
	 "it asks the daemon (writes \"compact\" to MOUNTPOINT/.ctl).\n",
	 OPT_JSON, 1, 1, run_compact},
	{"fsck", "fsck [--repair] [--json] STORE", "check (and fix) the store's invariants",
	 "Check every reference, refcount, counter and chunk hash.  --repair\n"
	 "fixes what is safe to fix.  --json prints {\"lines\":[...],\"inodes\":N,\n"
	 "\"problems\":N,\"repaired\":N,...}.  Exit 0 clean (or all repaired),\n"
	 "1 problems found, 2 could not run.\n",
	 OPT_JSON | OPT_REPAIR, 1, 1, run_fsck},
	{"keys", "keys [--json] STORE|MOUNTPOINT PATTERN", "key paths matching a glob",
	 "Print the paths (from the root: /DB/NS/KEY) of the keys matching\n"
	 "PATTERN, one a line in tree order, or a JSON array with --json.\n"
	 "  *  ?      any name bytes, one byte (never '/')\n"
	 "  **        anything, '/' included; \"/**/\" also matches \"/\"\n"
	 "  [abc] [a-z] [!x]   one byte of a set (never '/')\n"
	 "  {a,b}     alternatives (may nest); \"{x}\" is literal\n"
	 "  \\c        the byte c itself\n"
	 "Directories that cannot hold a match are not walked.  Quote PATTERN.\n",
	 OPT_JSON, 2, 2, run_keys},
	{"count", "count STORE|MOUNTPOINT PATTERN", "how many keys match a glob",
	 "Print the number of keys matching PATTERN (see nadb help keys).\n",
	 OPT_JSON, 2, 2, run_count},
	{"dump", "dump STORE [PATH] > ARCHIVE", "write a store or subtree as a pax tar archive",
	 "Write the subtree PATH (default: all) to stdout as a POSIX pax tar\n"
	 "archive: values, directories, symlinks, hard links, FIFOs, modes,\n"
	 "owners, times (ns) and every user.* xattr -- tags and expiry included --\n"
	 "as SCHILY.xattr records.  A directory's members are ./ and ./NAME...;\n"
	 "a key's is its name.  tar -tvf lists it; tar --xattrs -xf can restore\n"
	 "it into a mount.  Sockets have no tar form: each is skipped with a\n"
	 "warning and the exit status is 1.\n",
	 0, 1, 2, run_dump},
	{"load", "load [--json] STORE [PATH] < ARCHIVE", "load a tar archive into a store",
	 "Load a tar archive (nadb dump's, or tar's) from stdin below PATH\n"
	 "(default /), making missing directories.  Existing keys are replaced\n"
	 "whole, directories are merged.  Modes, times, xattrs (tags, expiry)\n"
	 "are restored; owners only when run as root.  Keys already expired are\n"
	 "skipped.  Members with a '..' component are refused.  Creates STORE\n"
	 "if it does not exist.  Exit 1 if any member failed.\n",
	 OPT_JSON, 1, 2, run_load},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static int print_overview(FILE *to)
{
	fputs("usage: nadb COMMAND [ARGS]\n\n"
	      "Work on an nadb store.  A mounted store is refused (unmount it first),\n"
	      "except by the commands taking STORE|MOUNTPOINT, which then ask the daemon.\n\n",
	      to);
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(to, "  %-40s %s\n", commands[i].synopsis, commands[i].summary);
	fputs("  help COMMAND                             details of one command\n"
	      "  --version                                the version\n\n"
	      "PATH is /DB/NAMESPACE/KEY; KEY may contain '/' (directories).\n"
	      "Exit status: 0 ok, 1 failure or problems found, 2 usage error or could not run.\n",
	      to);
	return to == stdout ? 0 : EXIT_USAGE;
}

static int print_command_help(const struct command *c)
{
	printf("usage: nadb %s\n\n%s", c->synopsis, c->details);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return print_overview(stderr);
	const char *name = argv[1];
	if (!strcmp(name, "--help") || !strcmp(name, "-h") || (!strcmp(name, "help") && argc == 2))
		return print_overview(stdout);
	if (!strcmp(name, "--version")) {
		printf("nadb " NADB_VERSION "\n");
		return 0;
	}
	if (!strcmp(name, "help")) {
		const struct command *c = find_command(argv[2]);
		if (c && argc == 3)
			return print_command_help(c);
		complain("help: no command '%s'", argv[2]);
		return print_overview(stderr);
	}
	const struct command *c = find_command(name);
	if (!c) {
		complain("no command '%s'", name);
		return print_overview(stderr);
	}
	struct cmd_args a;
	int status = parse_args(c, argc - 1, argv + 1, &a);
	if (status)
		return status;
	return a.help ? print_command_help(c) : c->run(&a);
}
