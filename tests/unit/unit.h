/* unit.h -- what every engine unit test shares: CHECK, a caller, making
 * nodes, and a fresh store directory under /tmp. */
#ifndef NADB_UNIT_H
#define NADB_UNIT_H

#include "fsck.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int failures;
#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,    \
				__LINE__, #cond);                             \
			failures++;                                           \
		}                                                             \
	} while (0)

static const struct nadb_caller root = {0, 0, NULL, 0};

/* Make NAME in PARENT with MODE; 0 (and a failed check) if that fails. */
static inline uint64_t make(struct nadb_store *st, uint64_t parent, const char *name,
			    uint32_t mode)
{
	struct nadb_attr a;
	int rc = nadb_mknod(st, parent, name, mode, 0, &root, &a);
	CHECK(rc == 0);
	return rc ? 0 : a.ino;
}

/* Key NAME in PARENT (made if missing) holds the LEN bytes at VAL,
 * written through a file handle; its inode number. */
static inline uint64_t put_value(struct nadb_store *st, uint64_t parent, const char *name,
				 const void *val, size_t len)
{
	struct nadb_attr a;
	int rc = nadb_mknod(st, parent, name, S_IFREG | 0644, 0, &root, &a);
	if (rc == -EEXIST)
		rc = nadb_lookup(st, parent, name, &a);
	CHECK(rc == 0);
	struct nadb_file *f;
	CHECK(nadb_file_open(st, a.ino, NADB_OPEN_TRUNC, &f) == 0);
	CHECK(nadb_file_write(f, val, len, 0) == (ssize_t)len);
	CHECK(nadb_file_close(f) == 0);
	return a.ino;
}

/* The key at PATH holds the LEN bytes at VAL. */
static inline void check_path_value(struct nadb_store *st, const char *path, const void *val,
			       size_t len)
{
	struct nadb_attr a;
	CHECK(nadb_resolve(st, path, &a) == 0);
	CHECK(a.size == len);
	char *buf = malloc(len + 16);
	struct nadb_file *f;
	CHECK(nadb_file_open(st, a.ino, 0, &f) == 0);
	CHECK(nadb_file_read(f, buf, len + 16, 0) == (ssize_t)len);
	CHECK(memcmp(buf, val, len) == 0);
	CHECK(nadb_file_close(f) == 0);
	free(buf);
}

static inline void print_problem(void *ctx, const char *what)
{
	(void)ctx;
	fprintf(stderr, "fsck: %s\n", what);
}

/* fsck finds nothing wrong (what it finds is printed). */
static inline void check_clean(struct nadb_store *st)
{
	struct nadb_fsck_result res;
	CHECK(nadb_fsck(st, false, print_problem, NULL, &res) == 0);
	CHECK(res.problems == 0);
}

/* A temp directory DIR and STORE inside it; remove_dir() at the end. */
static inline void make_store_dir(char dir[32], char store[300])
{
	strcpy(dir, "/tmp/nadb-unit-XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	snprintf(store, 300, "%s/store", dir);
}

static inline void remove_dir(const char *dir)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
}

#endif
