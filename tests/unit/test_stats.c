/* test_stats.c -- counters per store, database and namespace follow
 * creates, writes, hard links, moves between scopes and deletes. */
#include "unit.h"
#include "fsck.h"
#include "stats.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


static uint64_t put(struct nadb_store *st, uint64_t parent, const char *name, size_t len)
{
	uint64_t ino = make(st, parent, name, S_IFREG | 0644);
	char *buf = calloc(1, len + 1);
	memset(buf, 'x', len);
	struct nadb_file *f;
	CHECK(nadb_file_open(st, ino, 0, &f) == 0);
	CHECK(nadb_file_write(f, buf, len, 0) == (ssize_t)len);
	CHECK(nadb_file_close(f) == 0);
	free(buf);
	return ino;
}

static void expect(struct nadb_store *st, uint64_t scope, uint64_t keys, uint64_t bytes,
		   uint64_t namespaces, int line)
{
	struct nadb_stats s;
	int rc = nadb_stats(st, scope, &s);
	if (rc || s.keys != keys || s.bytes != bytes || s.namespaces != namespaces) {
		fprintf(stderr, "line %d: scope %llu: rc %d keys %llu bytes %llu ns %llu, "
				"want %llu %llu %llu\n",
			line, (unsigned long long)scope, rc, (unsigned long long)s.keys,
			(unsigned long long)s.bytes, (unsigned long long)s.namespaces,
			(unsigned long long)keys, (unsigned long long)bytes,
			(unsigned long long)namespaces);
		failures++;
	}
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	struct nadb_store *st;
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	uint64_t app = make(st, NADB_ROOT_INO, "app", S_IFDIR | 0755);
	uint64_t web = make(st, NADB_ROOT_INO, "web", S_IFDIR | 0755);
	uint64_t users = make(st, app, "users", S_IFDIR | 0755);
	uint64_t media = make(st, app, "media", S_IFDIR | 0755);
	uint64_t y2024 = make(st, media, "2024", S_IFDIR | 0755);
	put(st, users, "a", 100);
	put(st, users, "b", 200);
	uint64_t c = put(st, y2024, "c", 1000);
	expect(st, NADB_ROOT_INO, 3, 1300, 2, __LINE__);
	expect(st, app, 3, 1300, 2, __LINE__);
	expect(st, users, 2, 300, 0, __LINE__);
	expect(st, media, 1, 1000, 0, __LINE__);
	struct nadb_stats s;
	struct nadb_attr a;
	CHECK(nadb_stats(st, NADB_ROOT_INO, &s) == 0);
	CHECK(s.databases == 2 && s.dirs == 1 && s.chunks == 3);
	CHECK(nadb_stats(st, c, &s) == -EINVAL);

	/* Per-key metadata: read-only, but a write of the same value passes. */
	char buf[64];
	ssize_t n = nadb_getxattr(st, c, "user.nadb.size", buf, sizeof(buf));
	CHECK(n == 4 && !memcmp(buf, "1000", 4));
	CHECK(nadb_getxattr(st, c, "user.nadb.chunks", buf, sizeof(buf)) == 1 && buf[0] == '1');
	n = nadb_getxattr(st, c, "user.nadb.hash", buf, sizeof(buf));
	CHECK(n == 32);
	CHECK(nadb_setxattr(st, c, "user.nadb.hash", buf, (size_t)n, 0, NULL) == 0);
	CHECK(nadb_setxattr(st, c, "user.nadb.size", "5", 1, 0, NULL) == -EPERM);
	CHECK(nadb_setxattr(st, c, "user.nadb.size", "1000", 4, 0, NULL) == 0);
	CHECK(nadb_setxattr(st, c, "user.nadb.bogus", "1", 1, 0, NULL) == -EPERM);
	/* A removal (rsync -X of a source without them) passes, changes nothing. */
	CHECK(nadb_removexattr(st, c, "user.nadb.size", NULL) == 0);
	CHECK(nadb_getxattr(st, c, "user.nadb.size", buf, sizeof(buf)) == 4);
	CHECK(nadb_removexattr(st, c, "user.nadb.bogus", NULL) == -EPERM);
	/* A copy restoring the key (open for writing) may set any well-formed
	 * value, which is ignored; a reader is no copy. */
	struct nadb_file *f;
	CHECK(nadb_file_open(st, c, NADB_OPEN_WRITE, &f) == 0);
	CHECK(nadb_setxattr(st, c, "user.nadb.size", "5", 1, 0, NULL) == 0);
	CHECK(nadb_setxattr(st, c, "user.nadb.size", "x", 1, 0, NULL) == -EPERM);
	CHECK(nadb_setxattr(st, c, "user.nadb.hash", "00112233445566778899aabbccddeeff", 32, 0, NULL) == 0);
	CHECK(nadb_setxattr(st, c, "user.nadb.hash", "00112233445566778899aabbccddeefg", 32, 0, NULL) == -EPERM);
	CHECK(nadb_file_close(f) == 0);
	CHECK(nadb_getxattr(st, c, "user.nadb.size", buf, sizeof(buf)) == 4);
	CHECK(nadb_setxattr(st, c, "user.nadb.size", "5", 1, 0, NULL) == -EPERM);
	CHECK(nadb_file_open(st, c, 0, &f) == 0);
	CHECK(nadb_setxattr(st, c, "user.nadb.size", "5", 1, 0, NULL) == -EPERM);
	CHECK(nadb_file_close(f) == 0);
	/* So may one that made the key and has not written it yet (tar). */
	uint64_t e = make(st, users, "fresh", S_IFREG | 0644);
	CHECK(nadb_setxattr(st, e, "user.nadb.size", "1000", 4, 0, NULL) == 0);
	CHECK(nadb_setxattr(st, e, "user.nadb.stored", "1000", 4, 0, NULL) == 0);
	CHECK(nadb_unlink(st, users, "fresh") == 0);
	CHECK(nadb_setxattr(st, c, "user.nadb.created", "1600000000.5", 12, 0, NULL) == 0);
	n = nadb_getxattr(st, c, "user.nadb.created", buf, sizeof(buf));
	CHECK(n == 20 && !memcmp(buf, "1600000000.500000000", 20));
	CHECK(nadb_getattr(st, c, &a) == 0 && a.blocks >= 1 && a.blocks < 3); /* compressed */
	CHECK(nadb_setxattr(st, c, "user.a", "1", 1, 0, NULL) == 0);
	n = nadb_listxattr(st, c, NULL, 0);
	char list[1024];
	CHECK(nadb_listxattr(st, c, list, sizeof(list)) == n);
	int names = 0, nadb = 0;
	for (ssize_t at = 0; at < n; at += (ssize_t)strlen(list + at) + 1, names++)
		nadb += !strncmp(list + at, "user.nadb.", 10);
	CHECK(names == 7 && nadb == 6); /* user.a and 6 user.nadb.* (not .accessed) */
	CHECK(nadb_listxattr(st, c, list, 3) == -ERANGE);

	/* Hard links count as names; a shrink counts. */
	CHECK(nadb_link(st, c, users, "c-link", &a) == 0);
	expect(st, users, 3, 1300, 0, __LINE__);
	a.size = 10;
	CHECK(nadb_setattr(st, c, &a, NADB_SET_SIZE, &a) == 0);
	expect(st, users, 3, 310, 0, __LINE__);
	expect(st, NADB_ROOT_INO, 4, 320, 2, __LINE__);

	/* A directory moving to another namespace takes its totals along. */
	CHECK(nadb_rename(st, media, "2024", users, "2024", 0) == 0);
	expect(st, media, 0, 0, 0, __LINE__);
	expect(st, users, 4, 320, 0, __LINE__);
	/* A namespace moving to another database too. */
	uint64_t web_ns = make(st, web, "pages", S_IFDIR | 0755);
	(void)web_ns;
	CHECK(nadb_rename(st, app, "users", web, "users", 0) == 0);
	expect(st, app, 0, 0, 1, __LINE__);
	expect(st, web, 4, 320, 2, __LINE__);
	expect(st, NADB_ROOT_INO, 4, 320, 3, __LINE__);
	check_clean(st);

	/* Deletes, and the counters after reopening. */
	CHECK(nadb_unlink(st, users, "a") == 0);
	CHECK(nadb_unlink(st, users, "c-link") == 0);
	expect(st, users, 2, 210, 0, __LINE__);
	CHECK(nadb_store_close(st) == 0);
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	expect(st, NADB_ROOT_INO, 2, 210, 3, __LINE__);
	check_clean(st);
	CHECK(nadb_store_close(st) == 0);

	remove_dir(dir);
	return failures ? 1 : 0;
}
