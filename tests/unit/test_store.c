/* test_store.c -- the engine without FUSE: tree operations, values,
 * dedup, persistence across close/open, refcounts after overwrite, and
 * set-id bits cleared, and an opener that waits for a holder going away. */
#include "backend.h"
#include "unit.h"
#include "fsck.h"
#include "store.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


static uint64_t mkdir_at(struct nadb_store *st, uint64_t parent, const char *name)
{
	struct nadb_attr a;
	int rc = nadb_mknod(st, parent, name, S_IFDIR | 0755, 0, &root, &a);
	CHECK(rc == 0);
	return rc ? 0 : a.ino;
}

static int count_cb(void *ctx, const char *name, const struct nadb_attr *a)
{
	(void)name;
	(void)a;
	(*(int *)ctx)++;
	return 0;
}


/* A child holds STORE and says, over and over for HOLD_MS, that it serves
 * a mount that is gone and that it is closing (both: "going away"), then
 * lets go.  An opener meanwhile must wait for it, never take a holder
 * caught rewriting its text for one at work (-EBUSY). */
#define HOLD_MS 400
static void opener_waits_while_holder_rewrites(const char *store, const struct nadb_options *o)
{
	int ready[2];
	CHECK(pipe(ready) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct nadb_store *held;
		if (nadb_store_open(store, o, &held))
			_exit(1);
		nadb_store_note_mount(held, "/nonexistent/nadb-test-mount");
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			nadb_store_note_mount(held, "/nonexistent/nadb-test-mount");
			nadb_store_note_closing(held);
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < HOLD_MS);
		_exit(nadb_store_close(held) ? 1 : 0);
	}
	CHECK(pid > 0);
	char c;
	CHECK(read(ready[0], &c, 1) == 1);
	struct nadb_store *st = NULL;
	CHECK(nadb_store_open(store, o, &st) == 0);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (st)
		CHECK(nadb_store_close(st) == 0);
	close(ready[0]);
	close(ready[1]);
}

/* fsck finds a directory entry whose row in the links table is gone, and
 * --repair puts it back. */
struct lines {
	int missing, counted;
};

static void note_line(void *ctx, const char *line)
{
	struct lines *l = ctx;
	l->missing += strstr(line, "'theme:123' in") && strstr(line, "missing from the links table");
	l->counted += strstr(line, "rows in the links table for") != NULL;
}

static void drop_a_link_row(const char *store, const struct nadb_options *o)
{
	struct nadb_store *st;
	struct nadb_attr ns, key;
	CHECK(nadb_store_open(store, o, &st) == 0);
	CHECK(nadb_resolve(st, "/app/users", &ns) == 0);
	CHECK(nadb_resolve(st, "/app/users/theme:123", &key) == 0);
	CHECK(nadb_store_close(st) == 0);
	uint8_t link[64];
	uint64_t be = htobe64(key.ino), parent = htobe64(ns.ino);
	memcpy(link, &be, 8);
	memcpy(link + 8, &parent, 8);
	memcpy(link + 16, "theme:123", 9);
	char meta[400];
	snprintf(meta, sizeof(meta), "%s/meta", store);
	struct kv *kv;
	CHECK(kv_lmdb_open(meta, &kv) == 0);
	if (failures)
		return;
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->del(kv, KV_LINKS, link, 25) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0 && kv->ops->sync(kv) == 0);
	kv->ops->close(kv);
	struct nadb_fsck_result res;
	struct lines l = {0};
	CHECK(nadb_store_open(store, o, &st) == 0);
	CHECK(nadb_fsck(st, false, note_line, &l, &res) == 0);
	CHECK(res.problems == 2 && l.missing == 1 && l.counted == 1);
	CHECK(nadb_fsck(st, true, NULL, NULL, &res) == 0 && res.repaired >= 1);
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0 && res.problems == 0);
	CHECK(nadb_store_close(st) == 0);

	/* an entry whose key is longer than any name: malformed, said so
	 * (it overflowed a buffer sized for the longest name) */
	uint8_t longkey[8 + 400];
	memcpy(longkey, &parent, 8);
	memset(longkey + 8, 'x', 400);
	struct kv_val v;
	uint8_t dval[64];
	size_t dlen = 0;
	CHECK(kv_lmdb_open(meta, &kv) == 0);
	if (failures)
		return;
	CHECK(kv->ops->get(kv, KV_DIRENTS, link + 8, 17, &v) == 0 && v.len <= sizeof(dval));
	if (!failures)
		memcpy(dval, v.data, dlen = v.len);
	CHECK(kv->ops->step_begin(kv) == 0);
	CHECK(kv->ops->put(kv, KV_DIRENTS, longkey, sizeof(longkey), dval, dlen) == 0);
	CHECK(kv->ops->step_end(kv, 1) == 0 && kv->ops->sync(kv) == 0);
	kv->ops->close(kv);
	CHECK(nadb_store_open(store, o, &st) == 0);
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0 && res.problems >= 1);
	CHECK(nadb_fsck(st, true, NULL, NULL, &res) == 0);
	CHECK(nadb_store_close(st) == 0);
	CHECK(kv_lmdb_open(meta, &kv) == 0);
	if (failures)
		return;
	CHECK(kv->ops->step_begin(kv) == 0);
	(void)kv->ops->del(kv, KV_DIRENTS, longkey, sizeof(longkey));
	CHECK(kv->ops->step_end(kv, 1) == 0 && kv->ops->sync(kv) == 0);
	kv->ops->close(kv);
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	struct nadb_options o;
	nadb_options_default(&o);
	o.chunk_kb = 64;
	struct nadb_store *st;
	CHECK(nadb_store_open(store, &o, &st) == 0);

	/* A second opener is refused while the first holds the store. */
	struct nadb_store *st2;
	CHECK(nadb_store_open(store, &o, &st2) == -EBUSY);

	uint64_t db = mkdir_at(st, NADB_ROOT_INO, "app");
	uint64_t ns = mkdir_at(st, db, "users");
	struct nadb_attr a;
	CHECK(nadb_mknod(st, NADB_ROOT_INO, "k", S_IFREG | 0644, 0, &root, &a) == -EPERM);
	CHECK(nadb_mknod(st, db, "k", S_IFREG | 0644, 0, &root, &a) == -EPERM);
	CHECK(nadb_mknod(st, NADB_ROOT_INO, "tags", S_IFDIR | 0755, 0, &root, &a) == -EPERM);
	CHECK(nadb_mknod(st, ns, "bad\x01", S_IFREG | 0644, 0, &root, &a) == -EINVAL);
	put_value(st, ns, "theme:123", "dark", 4);
	check_path_value(st, "/app/users/theme:123", "dark", 4);

	/* A big value over several chunks, then the same bytes under 50 keys. */
	size_t big = 1 << 20;
	unsigned char *v = malloc(big);
	for (size_t i = 0; i < big; i++)
		v[i] = (unsigned char)(rand() >> 7);
	char name[32];
	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "copy%02d", i);
		put_value(st, ns, name, v, big);
	}
	check_path_value(st, "/app/users/copy07", v, big);
	CHECK(nadb_rmdir(st, db, "users") == -ENOTEMPTY);
	int n = 0;
	CHECK(nadb_readdir(st, ns, NULL, true, count_cb, &n) == 0);
	CHECK(n == 51);
	n = 0;
	CHECK(nadb_readdir(st, ns, "copy48", false, count_cb, &n) == 0);
	CHECK(n == 2); /* copy49, theme:123 */

	/* Rename over an existing key replaces it. */
	CHECK(nadb_rename(st, ns, "copy00", ns, "theme:123", 0) == 0);
	check_path_value(st, "/app/users/theme:123", v, big);
	CHECK(nadb_rename(st, ns, "copy01", ns, "copy02", NADB_RENAME_NOREPLACE) == -EEXIST);
	CHECK(nadb_unlink(st, ns, "copy01") == 0);
	CHECK(nadb_lookup(st, ns, "copy01", &a) == -ENOENT);

	/* Sparse growth reads back zeros. */
	CHECK(nadb_resolve(st, "/app/users/copy03", &a) == 0);
	struct nadb_attr set = {.size = 3 << 20};
	CHECK(nadb_setattr(st, a.ino, &set, NADB_SET_SIZE, &a) == 0);
	CHECK(a.size == 3u << 20);
	CHECK(nadb_store_close(st) == 0);

	/* Everything is there after reopening. */
	CHECK(nadb_store_open(store, &o, &st) == 0);
	check_path_value(st, "/app/users/copy49", v, big);
	CHECK(nadb_resolve(st, "/app/users/copy03", &a) == 0);
	CHECK(a.size == 3u << 20);
	struct nadb_file *f;
	char tail[100];
	CHECK(nadb_file_open(st, a.ino, 0, &f) == 0);
	CHECK(nadb_file_read(f, tail, sizeof(tail), (2 << 20)) == sizeof(tail));
	for (size_t i = 0; i < sizeof(tail); i++)
		CHECK(tail[i] == 0);
	CHECK(nadb_file_close(f) == 0);

	/* Hard links, then a consistency check of everything done above. */
	uint64_t ns2;
	CHECK(nadb_resolve(st, "/app/users", &a) == 0);
	ns2 = a.ino;
	CHECK(nadb_resolve(st, "/app/users/copy04", &a) == 0);
	CHECK(nadb_link(st, a.ino, ns2, "copy04-link", &a) == 0);
	CHECK(a.nlink == 2);
	CHECK(nadb_rename(st, ns2, "copy05", ns2, "copy04", NADB_RENAME_EXCHANGE) == 0);
	/* Set-id bits cleared as the VFS would for a user's write or chown. */
	struct nadb_caller user = {.uid = 1000, .gid = 1000};
	const uint32_t supp[] = {2000};
	struct nadb_caller member = {.uid = 1000, .gid = 1000, .groups = supp, .ngroups = 1};
	put_value(st, ns2, "suid", "x", 1);
	CHECK(nadb_resolve(st, "/app/users/suid", &a) == 0);
	uint64_t sid = a.ino;
	struct nadb_attr in = {.ino = sid, .mode = 06755, .gid = 2000};
	CHECK(nadb_setattr(st, sid, &in, NADB_SET_MODE | NADB_SET_GID, &a) == 0);
	CHECK(nadb_kill_setid(st, sid, &user, false) == 1);
	CHECK(nadb_getattr(st, sid, &a) == 0 && (a.mode & 07777) == 0755);
	CHECK(nadb_kill_setid(st, sid, &user, false) == 0); /* nothing left */
	in.mode = 02644;                                     /* no group execute */
	CHECK(nadb_setattr(st, sid, &in, NADB_SET_MODE, &a) == 0);
	CHECK(nadb_kill_setid(st, sid, &user, false) == -EAGAIN); /* its groups decide */
	CHECK(nadb_kill_setid(st, sid, &member, true) == 0);
	CHECK(nadb_kill_setid(st, sid, &root, false) == 0);
	CHECK(nadb_getattr(st, sid, &a) == 0 && (a.mode & 07777) == 02644);
	CHECK(nadb_kill_setid(st, sid, &user, true) == 1);
	CHECK(nadb_getattr(st, sid, &a) == 0 && (a.mode & 07777) == 0644);
	in = (struct nadb_attr){.ino = ns2, .mode = 02775};
	CHECK(nadb_setattr(st, ns2, &in, NADB_SET_MODE, &a) == 0);
	CHECK(nadb_kill_setid(st, ns2, &user, true) == 0); /* a directory keeps it */
	CHECK(nadb_getattr(st, ns2, &a) == 0 && (a.mode & 07777) == 02775);
	CHECK(nadb_kill_setid(st, sid + 1000000, &user, true) == 0); /* no such key */

	struct nadb_fsck_result res;
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0);
	CHECK(res.problems == 0);
	CHECK(res.chunks > 0);
	CHECK(nadb_store_close(st) == 0);

	drop_a_link_row(store, &o);

	opener_waits_while_holder_rewrites(store, &o);

	remove_dir(dir);
	free(v);
	if (failures)
		fprintf(stderr, "%d checks failed\n", failures);
	return failures ? 1 : 0;
}
