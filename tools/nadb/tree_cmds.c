/* tree_cmds.c -- ls, get, put, rm, setx, getx: the commands on one key or
 * directory of an offline store.  Values stream through in IO_CHUNK pieces;
 * put makes missing parents like mkdir -p (make_parents, which load uses
 * too).
 */
#include "nadb_tool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

int run_ls(const struct cmd_args *a)
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

int run_get(const struct cmd_args *a)
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
int make_parents(struct nadb_store *st, const char *path, uint64_t *parent,
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
		rc = errno ? -errno : -EIO;
	if (rc) /* input that failed part way is not a value: the key keeps its own */
		nadb_file_abandon(f, rc);
	else
		rc = nadb_file_fsync(f);
	int rc2 = nadb_file_close(f);
	return rc ? rc : rc2;
}

int run_put(const struct cmd_args *a)
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

int run_rm(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	int rc = remove_path(t.st, a->arg[1]);
	return close_target(&t, rc ? report_failure(&t, a->arg[1], rc) : 0);
}

int run_setx(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	struct nadb_attr at;
	int rc = nadb_resolve(t.st, a->arg[1], &at);
	if (!rc)
		rc = nadb_setxattr(t.st, at.ino, a->arg[2], a->arg[3], strlen(a->arg[3]), 0, NULL);
	if (rc == -EOPNOTSUPP) {
		complain("%s: %s: only user.* attributes are kept", a->arg[1], a->arg[2]);
		return close_target(&t, EXIT_PROBLEMS);
	}
	return close_target(&t, rc ? report_failure(&t, a->arg[1], rc) : 0);
}

/* The value of xattr NAME of INO, malloc'd, in *value (size *len). */
int read_xattr(struct nadb_store *st, uint64_t ino, const char *name, char **value,
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

int run_getx(const struct cmd_args *a)
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
