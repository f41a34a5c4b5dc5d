/* test_expiry.c -- keys that expire: lazy expiry, the reaper, namespace
 * default TTLs and the parsing of user.ttl and user.expires. */
#include "unit.h"
#include "fsck.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


static int setx(struct nadb_store *st, uint64_t ino, const char *name, const char *v)
{
	return nadb_setxattr(st, ino, name, v, strlen(v), 0, NULL);
}

static void expires_in(char *buf, size_t size, double seconds)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	double t = (double)now.tv_sec + now.tv_nsec / 1e9 + seconds;
	snprintf(buf, size, "%.9f", t);
}

static int count_cb(void *ctx, const char *name, const struct nadb_attr *a)
{
	(void)name;
	(void)a;
	(*(int *)ctx)++;
	return 0;
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	struct nadb_store *st;
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	uint64_t db = make(st, NADB_ROOT_INO, "app", S_IFDIR | 0755);
	uint64_t ns = make(st, db, "cache", S_IFDIR | 0755);
	uint64_t k = make(st, ns, "k", S_IFREG | 0644);
	uint64_t keep = make(st, ns, "keep", S_IFREG | 0644);
	struct nadb_attr a;
	char buf[64];

	/* Bad values change nothing. */
	const char *bad[] = {"-1", "abc", "10x", "", " 5", "99999999999999999999", "1.5"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(setx(st, k, "user.ttl", bad[i]) == -EINVAL);
	CHECK(setx(st, k, "user.expires", "253402300800") == -EINVAL);
	CHECK(setx(st, k, "user.expires", "1.1234567890") == -EINVAL);
	CHECK(nadb_getxattr(st, k, "user.ttl", buf, sizeof(buf)) == -ENODATA);

	/* A TTL reads back as the seconds left, rounded up. */
	CHECK(setx(st, k, "user.ttl", "3600") == 0);
	ssize_t n = nadb_getxattr(st, k, "user.ttl", buf, sizeof(buf));
	CHECK(n == 4 && !memcmp(buf, "3600", 4));
	CHECK(nadb_removexattr(st, k, "user.ttl", NULL) == 0);
	CHECK(nadb_getxattr(st, k, "user.ttl", buf, sizeof(buf)) == -ENODATA);
	CHECK(nadb_removexattr(st, k, "user.ttl", NULL) == -ENODATA);

	/* Lazy expiry: gone for lookup and readdir before any reaping. */
	expires_in(buf, sizeof(buf), 0.2);
	CHECK(setx(st, k, "user.expires", buf) == 0);
	CHECK(nadb_lookup(st, ns, "k", &a) == 0);
	usleep(300 * 1000);
	CHECK(nadb_lookup(st, ns, "k", &a) == -ENOENT);
	CHECK(nadb_getattr(st, k, &a) == -ENOENT);
	int entries = 0;
	CHECK(nadb_readdir(st, ns, NULL, false, count_cb, &entries) == 0);
	CHECK(entries == 1);
	/* A new key may take the expired one's name. */
	uint64_t k2 = make(st, ns, "k", S_IFREG | 0644);
	CHECK(k2 != k);
	unsigned reaped = 0;
	CHECK(nadb_reap(st, (int64_t)time(NULL) * 1000000000LL + 1000000000LL, 100, NULL,
			NULL, &reaped) == 0);
	CHECK(reaped == 0); /* k was replaced, its row was stale */

	/* TTL 0 deletes at once. */
	CHECK(setx(st, k2, "user.ttl", "0") == 0);
	CHECK(nadb_lookup(st, ns, "k", &a) == -ENOENT);

	/* Namespace default TTL: keys made afterwards carry it. */
	CHECK(setx(st, db, "user.ttl", "5") == -EPERM);
	CHECK(setx(st, ns, "user.ttl", "300") == 0);
	uint64_t lock = make(st, ns, "lock", S_IFREG | 0644);
	n = nadb_getxattr(st, lock, "user.ttl", buf, sizeof(buf));
	CHECK(n == 3 && !memcmp(buf, "300", 3));
	CHECK(nadb_getxattr(st, keep, "user.ttl", buf, sizeof(buf)) == -ENODATA);
	n = nadb_getxattr(st, ns, "user.ttl", buf, sizeof(buf));
	CHECK(n == 3 && !memcmp(buf, "300", 3));
	CHECK(nadb_removexattr(st, ns, "user.ttl", NULL) == 0);

	/* The reaper deletes what is due, and the store stays consistent. */
	for (int i = 0; i < 50; i++) {
		char name[16];
		snprintf(name, sizeof(name), "e%02d", i);
		uint64_t e = make(st, ns, name, S_IFREG | 0644);
		expires_in(buf, sizeof(buf), 0.05);
		CHECK(setx(st, e, "user.expires", buf) == 0);
	}
	usleep(100 * 1000);
	CHECK(nadb_reap(st, (int64_t)time(NULL) * 1000000000LL + 1000000000LL, 1000, NULL,
			NULL, &reaped) == 0);
	CHECK(reaped == 50);
	struct nadb_fsck_result res;
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0);
	CHECK(res.problems == 0);

	/* Expiry survives close and open. */
	CHECK(setx(st, keep, "user.ttl", "1000") == 0);
	CHECK(nadb_store_close(st) == 0);
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	n = nadb_getxattr(st, keep, "user.ttl", buf, sizeof(buf));
	CHECK(n == 4 && (!memcmp(buf, "1000", 4) || !memcmp(buf, "999", 3)));

	/* A copy's user.ttl, read a moment before, keeps the exact expiry;
	 * a ttl further off sets a new one. */
	char exact[] = "4102444800.500000000", when[64], ttl[32];
	CHECK(setx(st, keep, "user.expires", exact) == 0);
	n = nadb_getxattr(st, keep, "user.ttl", buf, sizeof(buf));
	CHECK(n > 0 && n < 30);
	buf[n] = 0;
	snprintf(ttl, sizeof(ttl), "%lld", atoll(buf) + 2);
	CHECK(setx(st, keep, "user.ttl", ttl) == 0);
	n = nadb_getxattr(st, keep, "user.expires", when, sizeof(when));
	CHECK(n == (ssize_t)strlen(exact) && !memcmp(when, exact, (size_t)n));
	snprintf(ttl, sizeof(ttl), "%lld", atoll(buf) + 100);
	CHECK(setx(st, keep, "user.ttl", ttl) == 0);
	n = nadb_getxattr(st, keep, "user.expires", when, sizeof(when));
	CHECK(n > 0 && memcmp(when, exact, (size_t)n) != 0);

	/* A key given TTL 0 while a handle holds it open: that handle reads
	 * on, but an open through its old name (a kernel that has not yet
	 * dropped it) finds it gone, with the value loaded by the other
	 * handle, and still after a reaper pass. */
	uint64_t held = make(st, ns, "held", S_IFREG | 0644);
	struct nadb_file *f, *f2;
	CHECK(nadb_file_open(st, held, NADB_OPEN_WRITE, &f) == 0);
	CHECK(nadb_file_write(f, "v", 1, 0) == 1);
	CHECK(nadb_file_commit(f) == 0);
	CHECK(setx(st, held, "user.ttl", "0") == 0);
	CHECK(nadb_lookup(st, ns, "held", &a) == -ENOENT);
	CHECK(nadb_file_open(st, held, 0, &f2) == -ENOENT);
	CHECK(nadb_reap(st, (int64_t)time(NULL) * 1000000000LL + 1000000000LL, 100, NULL,
			NULL, &reaped) == 0);
	CHECK(nadb_file_open(st, held, 0, &f2) == -ENOENT);
	CHECK(nadb_file_read(f, buf, sizeof(buf), 0) == 1 && buf[0] == 'v');
	CHECK(nadb_file_close(f) == 0);
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0);
	CHECK(res.problems == 0);
	CHECK(nadb_store_close(st) == 0);

	remove_dir(dir);
	return failures ? 1 : 0;
}
