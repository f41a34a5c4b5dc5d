/* test_sync.c -- group commit: concurrent syncs share commits, a group
 * that grew big is committed before flush_interval, and a metadata flush
 * that fails is never reported as durable, to the sync that ran it or to
 * any later one.
 *
 * The failure comes from fdatasync itself: this program defines it, so
 * that LMDB's calls (from its shared library) land here.  Armed with N,
 * it lets N more calls on the metadata file (data.mdb) through and fails
 * the next one with EIO.  A sync makes two: LMDB's commit syncs the data
 * pages, then the sync's second half the meta page.  Armed the same way,
 * it fails a pack segment's. */
#include "store_int.h"
#include "unit.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static atomic_int pass_before_failing = -1; /* -1: fail none */
static atomic_int pack_pass_before_failing = -1;

/* Does FD's path end in SUFFIX? */
static bool fd_path_ends(int fd, const char *suffix)
{
	char link[64], path[512];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	size_t sl = strlen(suffix);
	if (n < 0)
		return false;
	path[n] = '\0';
	return (size_t)n >= sl && !strcmp(path + n - sl, suffix);
}

static bool is_metadata_file(int fd)
{
	return fd_path_ends(fd, "/data.mdb");
}

int fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	if (atomic_load(&pass_before_failing) >= 0 && is_metadata_file(fd) &&
	    atomic_fetch_sub(&pass_before_failing, 1) == 0) {
		errno = EIO;
		return -1;
	}
	if (atomic_load(&pack_pass_before_failing) >= 0 && fd_path_ends(fd, ".pack") &&
	    atomic_fetch_sub(&pack_pass_before_failing, 1) == 0) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}

#define WRITERS 8
#define KEYS_EACH 30

struct writer {
	struct nadb_store *st;
	uint64_t ns;
	int id;
};

/* Set KEYS_EACH keys, fsync'ing each (through its handle). */
static void *write_and_fsync(void *arg)
{
	struct writer *w = arg;
	char name[64], val[96];
	for (int i = 0; i < KEYS_EACH; i++) {
		snprintf(name, sizeof(name), "w%d_%d", w->id, i);
		int len = snprintf(val, sizeof(val), "value of %s", name);
		struct nadb_attr a;
		CHECK(nadb_mknod(w->st, w->ns, name, S_IFREG | 0644, 0, &root, &a) == 0);
		struct nadb_file *f;
		CHECK(nadb_file_open(w->st, a.ino, 0, &f) == 0);
		CHECK(nadb_file_write(f, val, (size_t)len, 0) == len);
		CHECK(nadb_file_fsync(f) == 0);
		CHECK(nadb_file_close(f) == 0);
	}
	return NULL;
}

static void check_group_commit(struct nadb_store *st, uint64_t ns)
{
	uint64_t asked0, run0, asked, run;
	nadb_store_sync_counts(st, &asked0, &run0);
	pthread_t t[WRITERS];
	struct writer w[WRITERS];
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){st, ns, i};
		CHECK(pthread_create(&t[i], NULL, write_and_fsync, &w[i]) == 0);
	}
	for (int i = 0; i < WRITERS; i++)
		pthread_join(t[i], NULL);
	nadb_store_sync_counts(st, &asked, &run);
	printf("# %d fsyncs: %llu syncs asked, %llu run\n", WRITERS * KEYS_EACH,
	       (unsigned long long)(asked - asked0), (unsigned long long)(run - run0));
	CHECK(asked - asked0 >= WRITERS * KEYS_EACH);
	CHECK(run - run0 < asked - asked0);
}

/* With flush_interval far off, a group is committed anyway once
 * MAX_UNSYNCED_STEPS steps piled up (the flusher is woken). */
static void check_big_group(struct nadb_store *st, uint64_t ns)
{
	uint64_t asked0, run0, asked, run;
	CHECK(nadb_store_start_flusher(st) == 0);
	nadb_store_sync_counts(st, &asked0, &run0);
	uint64_t dir = make(st, ns, "big", S_IFDIR | 0755);
	char name[32];
	for (int i = 0; i < MAX_UNSYNCED_STEPS / 2 && !failures; i++) {
		snprintf(name, sizeof(name), "k%d", i);
		make(st, dir, name, S_IFREG | 0644);
	}
	nadb_store_sync_counts(st, &asked, &run);
	CHECK(run == run0); /* not yet */
	for (int i = MAX_UNSYNCED_STEPS / 2; i <= MAX_UNSYNCED_STEPS && !failures; i++) {
		snprintf(name, sizeof(name), "k%d", i);
		make(st, dir, name, S_IFREG | 0644);
	}
	for (int ms = 0; ms < 10000 && run == run0; ms += 10) {
		usleep(10000);
		nadb_store_sync_counts(st, &asked, &run);
	}
	printf("# %d steps: %llu syncs run\n", MAX_UNSYNCED_STEPS + 2,
	       (unsigned long long)(run - run0));
	CHECK(run > run0);
	nadb_store_stop_flusher(st);
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	struct nadb_options o;
	nadb_options_default(&o);
	o.flush_interval = 3600; /* only our syncs */
	struct nadb_store *st;
	CHECK(nadb_store_open(store, &o, &st) == 0);
	uint64_t ns = make(st, make(st, NADB_ROOT_INO, "app", S_IFDIR | 0755), "ns", S_IFDIR | 0755);
	CHECK(nadb_store_sync(st) == 0);

	check_group_commit(st, ns);
	check_big_group(st, ns);

	/* A handle open before a failure, with a value committed that the
	 * failing sync carries. */
	uint64_t ino = put_value(st, ns, "before", "old", 3);
	CHECK(nadb_store_sync(st) == 0);
	struct nadb_file *kept;
	CHECK(nadb_file_open(st, ino, 0, &kept) == 0);
	CHECK(nadb_file_write(kept, "new", 3, 0) == 3);
	CHECK(nadb_file_commit(kept) == 0);

	/* The commit fails: that sync says so, and so does the handle's next
	 * fsync, though the sync it runs has nothing left to commit (as Linux
	 * reports a lost write to each descriptor once). */
	atomic_store(&pass_before_failing, 0);
	CHECK(nadb_store_sync(st) == -EIO);
	CHECK(nadb_file_fsync(kept) == -EIO);
	CHECK(nadb_file_fsync(kept) == 0);
	put_value(st, ns, "later", "x", 1);
	CHECK(nadb_store_sync(st) == 0);

	/* The meta page's flush fails: that sync says so, and so does every
	 * later one, though its own flush would work (the commit it would
	 * build on may be lost); changes are refused until the store is
	 * opened again. */
	(void)nadb_file_close(kept); /* (its value went with the commit) */
	struct nadb_attr a;
	CHECK(nadb_mknod(st, ns, "second", S_IFREG | 0644, 0, &root, &a) == 0);
	CHECK(nadb_file_open(st, a.ino, 0, &kept) == 0);
	CHECK(nadb_file_write(kept, "2nd", 3, 0) == 3);
	CHECK(nadb_file_commit(kept) == 0);
	atomic_store(&pass_before_failing, 1);
	CHECK(nadb_store_sync(st) == -EIO);
	CHECK(atomic_load(&pass_before_failing) < 0);
	CHECK(nadb_store_sync(st) == -EIO);
	CHECK(nadb_file_fsync(kept) == -EIO);
	CHECK(nadb_mknod(st, ns, "after", S_IFREG | 0644, 0, &root, &a) == -EIO);
	(void)nadb_file_close(kept);
	(void)nadb_store_close(st);

	/* Opened again: whole, every key fsync'd before the failure there,
	 * "before" holding one of its two values. */
	CHECK(nadb_store_open(store, &o, &st) == 0);
	check_clean(st);
	char name[64], val[96];
	for (int w = 0; w < WRITERS; w++)
		for (int i = 0; i < KEYS_EACH; i++) {
			snprintf(name, sizeof(name), "/app/ns/w%d_%d", w, i);
			int len = snprintf(val, sizeof(val), "value of w%d_%d", w, i);
			check_path_value(st, name, val, (size_t)len);
		}
	check_path_value(st, "/app/ns/later", "x", 1);
	CHECK(nadb_resolve(st, "/app/ns/before", &a) == 0);
	CHECK(nadb_resolve(st, "/app/ns/after", &a) == -ENOENT);

	/* A pack segment's flush fails: that sync says so, and so does every
	 * later one (a second fdatasync would return 0, the bytes gone), so
	 * no metadata naming them is ever committed; writes are refused
	 * until the store is opened again. */
	put_value(st, ns, "lost", "never", 5);
	atomic_store(&pack_pass_before_failing, 0);
	CHECK(nadb_store_sync(st) == -EIO);
	CHECK(atomic_load(&pack_pass_before_failing) < 0);
	CHECK(nadb_store_sync(st) == -EIO);
	CHECK(nadb_mknod(st, ns, "then", S_IFREG | 0644, 0, &root, &a) == 0);
	struct nadb_file *f;
	CHECK(nadb_file_open(st, a.ino, NADB_OPEN_WRITE, &f) == 0);
	CHECK(nadb_file_write(f, "data", 4, 0) == 4);
	CHECK(nadb_file_fsync(f) == -EIO);
	(void)nadb_file_close(f);
	(void)nadb_store_close(st);
	CHECK(nadb_store_open(store, &o, &st) == 0);
	check_clean(st);
	CHECK(nadb_resolve(st, "/app/ns/lost", &a) == -ENOENT);
	check_path_value(st, "/app/ns/later", "x", 1);
	put_value(st, ns, "again", "y", 1);
	CHECK(nadb_store_sync(st) == 0);
	CHECK(nadb_store_close(st) == 0);
	remove_dir(dir);
	return failures ? 1 : 0;
}
