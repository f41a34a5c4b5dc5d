/* nadb.c -- the command-line tool: work on a store that is not mounted.
 *
 *   nadb ls STORE [PATH]        names in a directory, one per line
 *   nadb get STORE PATH         a key's value on stdout
 *   nadb put STORE PATH         stdin becomes the key's value
 *   nadb rm STORE PATH          delete a key (or an empty directory)
 *   nadb fsck [--repair] STORE  check (and fix) the store's invariants
 *
 * It opens the store exclusively, like the daemon, so it refuses a store
 * that is mounted instead of corrupting it under the daemon's feet.
 */
#include "fsck.h"
#include "store.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NADB_VERSION "0.1.0"
#define EXIT_PROBLEMS 1
#define EXIT_USAGE 2

static const char usage_text[] =
	"usage: nadb COMMAND [ARGS]\n"
	"\n"
	"Work on an nadb store that is not mounted (unmount it first).\n"
	"\n"
	"  ls STORE [PATH]          list a directory (default /), one name a line\n"
	"  get STORE PATH           write a key's value to stdout\n"
	"  put STORE PATH           store stdin as a key's value (makes missing\n"
	"                           database, namespace and directories)\n"
	"  rm STORE PATH            delete a key, or an empty directory\n"
	"  fsck [--repair] STORE    check every reference, refcount and chunk;\n"
	"                           exit 0 clean, 1 problems found, 2 could not run\n"
	"  help COMMAND             this text\n"
	"  --version                print the version\n"
	"\n"
	"PATH is /DB/NAMESPACE/KEY; KEY may contain '/' (directories).\n";

static int usage(FILE *to)
{
	fputs(usage_text, to);
	return to == stdout ? 0 : EXIT_USAGE;
}

static int fail(const char *store, const char *path, int rc)
{
	if (rc == -EBUSY)
		fprintf(stderr, "nadb: %s: store is in use (mounted?); unmount it first\n",
			store);
	else if (path)
		fprintf(stderr, "nadb: %s: %s\n", path, strerror(-rc));
	else
		fprintf(stderr, "nadb: %s: %s\n", store, strerror(-rc));
	return EXIT_PROBLEMS;
}

static int open_store(const char *dir, bool create, struct nadb_store **st)
{
	struct nadb_options o;
	nadb_options_default(&o);
	o.create = create;
	/* The engine logs why on stderr; keep those lines for failures only. */
	return nadb_store_open(dir, &o, st);
}

static int print_name(void *ctx, const char *name, const struct nadb_attr *a)
{
	(void)ctx;
	printf("%s%s\n", name, S_ISDIR(a->mode) ? "/" : "");
	return 0;
}

static int cmd_ls(struct nadb_store *st, const char *path)
{
	struct nadb_attr a;
	int rc = nadb_resolve(st, path, &a);
	if (!rc && !S_ISDIR(a.mode)) {
		printf("%s\n", strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
		return 0;
	}
	return rc ? rc : nadb_readdir(st, a.ino, NULL, false, print_name, NULL);
}

static int cmd_get(struct nadb_store *st, const char *path)
{
	struct nadb_attr a;
	int rc = nadb_resolve(st, path, &a);
	if (rc)
		return rc;
	if (S_ISDIR(a.mode))
		return -EISDIR;
	struct nadb_file *f;
	if ((rc = nadb_file_open(st, a.ino, 0, &f)))
		return rc;
	static char buf[1 << 20];
	off_t off = 0;
	ssize_t n;
	while ((n = nadb_file_read(f, buf, sizeof(buf), off)) > 0) {
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) {
			n = -EIO;
			break;
		}
		off += n;
	}
	nadb_file_close(f);
	return n < 0 ? (int)n : 0;
}

/* Split PATH into its directory (made as needed) and last name. */
static int make_parents(struct nadb_store *st, const char *path, uint64_t *parent,
			const char **leaf)
{
	const struct nadb_caller who = {getuid(), getgid(), NULL, 0};
	char name[NADB_NAME_MAX + 1];
	struct nadb_attr a;
	uint64_t dir = NADB_ROOT_INO;
	for (;;) {
		while (*path == '/')
			path++;
		size_t n = strcspn(path, "/");
		if (!path[n]) {
			if (!n)
				return -EINVAL;
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
			rc = nadb_mknod(st, dir, name, S_IFDIR | 0755, 0, &who, &a);
		if (rc)
			return rc;
		if (!S_ISDIR(a.mode))
			return -ENOTDIR;
		dir = a.ino;
		path += n;
	}
}

static int cmd_put(struct nadb_store *st, const char *path)
{
	const struct nadb_caller who = {getuid(), getgid(), NULL, 0};
	uint64_t parent;
	const char *leaf;
	struct nadb_attr a;
	int rc = make_parents(st, path, &parent, &leaf);
	if (!rc) {
		rc = nadb_lookup(st, parent, leaf, &a);
		if (rc == -ENOENT)
			rc = nadb_mknod(st, parent, leaf, S_IFREG | 0644, 0, &who, &a);
	}
	if (rc)
		return rc;
	struct nadb_file *f;
	if ((rc = nadb_file_open(st, a.ino, NADB_OPEN_TRUNC, &f)))
		return rc;
	static char buf[1 << 20];
	off_t off = 0;
	size_t n;
	while (!rc && (n = fread(buf, 1, sizeof(buf), stdin)) > 0) {
		ssize_t w = nadb_file_write(f, buf, n, off);
		rc = w < 0 ? (int)w : 0;
		off += (off_t)n;
	}
	if (!rc && ferror(stdin))
		rc = -EIO;
	if (!rc)
		rc = nadb_file_fsync(f);
	int rc2 = nadb_file_close(f);
	return rc ? rc : rc2;
}

static int cmd_rm(struct nadb_store *st, const char *path)
{
	struct nadb_attr a;
	int rc = nadb_resolve(st, path, &a);
	if (rc)
		return rc;
	const char *slash = strrchr(path, '/');
	const char *leaf = slash ? slash + 1 : path;
	char dir[4096];
	size_t n = slash ? (size_t)(slash - path) : 0;
	if (n >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, n);
	dir[n] = 0;
	struct nadb_attr d;
	if ((rc = nadb_resolve(st, dir, &d)))
		return rc;
	return S_ISDIR(a.mode) ? nadb_rmdir(st, d.ino, leaf) : nadb_unlink(st, d.ino, leaf);
}

static void print_problem(void *ctx, const char *line)
{
	(void)ctx;
	printf("problem: %s\n", line);
}

static int cmd_fsck(int argc, char **argv)
{
	bool repair = false;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--repair"))
			repair = true;
		else if (!strcmp(argv[i], "--help"))
			return usage(stdout);
		else
			return usage(stderr);
	}
	if (i != argc - 1)
		return usage(stderr);
	struct nadb_store *st;
	int rc = open_store(argv[i], false, &st);
	if (rc) {
		fail(argv[i], NULL, rc);
		return EXIT_USAGE;
	}
	struct nadb_fsck_result res;
	rc = nadb_fsck(st, repair, print_problem, NULL, &res);
	nadb_store_close(st);
	if (rc) {
		fprintf(stderr, "nadb: fsck could not finish: %s\n", strerror(-rc));
		return EXIT_USAGE;
	}
	printf("%llu inodes, %llu entries, %llu chunks (%llu bytes): %llu problems",
	       (unsigned long long)res.inodes, (unsigned long long)res.dirents,
	       (unsigned long long)res.chunks, (unsigned long long)res.chunk_bytes,
	       (unsigned long long)res.problems);
	if (repair)
		printf(", %llu repaired", (unsigned long long)res.repaired);
	printf("\n");
	if (!res.problems || (repair && res.repaired == res.problems))
		return 0;
	return EXIT_PROBLEMS;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage(stderr);
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help"))
		return usage(stdout);
	if (!strcmp(cmd, "--version")) {
		printf("nadb " NADB_VERSION "\n");
		return 0;
	}
	if (!strcmp(cmd, "fsck"))
		return cmd_fsck(argc - 1, argv + 1);
	bool is_ls = !strcmp(cmd, "ls");
	if (argc >= 3 && !strcmp(argv[2], "--help"))
		return usage(stdout);
	if (!(is_ls || !strcmp(cmd, "get") || !strcmp(cmd, "put") || !strcmp(cmd, "rm")))
		return usage(stderr);
	if (argc != 4 && !(is_ls && argc == 3))
		return usage(stderr);
	const char *dir = argv[2];
	const char *path = argc == 4 ? argv[3] : "/";
	struct nadb_store *st;
	int rc = open_store(dir, !strcmp(cmd, "put"), &st);
	if (rc)
		return fail(dir, NULL, rc);
	if (is_ls)
		rc = cmd_ls(st, path);
	else if (!strcmp(cmd, "get"))
		rc = cmd_get(st, path);
	else if (!strcmp(cmd, "put"))
		rc = cmd_put(st, path);
	else
		rc = cmd_rm(st, path);
	int rc2 = nadb_store_close(st);
	if (rc)
		return fail(dir, path, rc);
	return rc2 ? fail(dir, NULL, rc2) : 0;
}
