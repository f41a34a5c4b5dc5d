/* test_damage.c -- a damaged metadata file: the check refuses it in a
 * child (the test process survives whatever the file holds), salvage
 * saves what can be read, and fsck --repair leaves a store fsck passes. */
#include "unit.h"

#include <fcntl.h>
#include <unistd.h>

#define KEYS 200

static void fill(const char *store)
{
	struct nadb_store *st;
	struct nadb_attr db, ns, a;
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	CHECK(nadb_mknod(st, NADB_ROOT_INO, "app", S_IFDIR | 0755, 0, &root, &db) == 0);
	CHECK(nadb_mknod(st, db.ino, "ns", S_IFDIR | 0755, 0, &root, &ns) == 0);
	for (int i = 0; i < KEYS; i++) {
		char name[16], val[64];
		snprintf(name, sizeof(name), "k%03d", i);
		int n = snprintf(val, sizeof(val), "value of key %d", i);
		struct nadb_file *f;
		CHECK(nadb_mknod(st, ns.ino, name, S_IFREG | 0644, 0, &root, &a) == 0);
		CHECK(nadb_file_open(st, a.ino, NADB_OPEN_TRUNC, &f) == 0);
		CHECK(nadb_file_write(f, val, (size_t)n, 0) == n);
		CHECK(nadb_file_close(f) == 0);
	}
	CHECK(nadb_store_close(st) == 0);
}

/* Overwrite 4 KiB page PAGE of the metadata file with pseudo-random bytes. */
static void garble(const char *store, off_t page)
{
	char path[400];
	uint8_t junk[4096];
	uint32_t x = 2463534242u;
	for (size_t i = 0; i < sizeof(junk); i++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		junk[i] = (uint8_t)x;
	}
	snprintf(path, sizeof(path), "%s/meta/data.mdb", store);
	int fd = open(path, O_WRONLY);
	CHECK(fd >= 0);
	CHECK(pwrite(fd, junk, sizeof(junk), page * 4096) == (ssize_t)sizeof(junk));
	close(fd);
}

/* Is page P of the metadata file a leaf of records (LMDB's page header:
 * flags, 16 bits at byte 10; 0x02 a leaf)?  Free pages keep their old
 * headers, so the caller checks that garbling it is noticed. */
static bool leaf_page(const char *store, off_t p, bool *past_end)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/meta/data.mdb", store);
	int fd = open(path, O_RDONLY);
	uint8_t head[12];
	bool leaf = false;
	*past_end = fd < 0 || pread(fd, head, sizeof(head), p * 4096) != (ssize_t)sizeof(head);
	if (!*past_end)
		leaf = (head[10] | head[11] << 8) == 0x02;
	if (fd >= 0)
		close(fd);
	return leaf;
}

static int count_keys(struct nadb_store *st)
{
	struct nadb_attr a;
	int n = 0;
	for (int i = 0; i < KEYS; i++) {
		char path[32];
		snprintf(path, sizeof(path), "/app/ns/k%03d", i);
		n += nadb_resolve(st, path, &a) == 0;
	}
	return n;
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	fill(store);
	struct nadb_options o;
	nadb_options_default(&o);
	struct nadb_damage d = {0};
	o.check_meta = true;
	o.damage = &d;
	struct nadb_store *st;

	/* A sound file passes the walk. */
	CHECK(nadb_store_open(store, &o, &st) == 0);
	CHECK(!d.damaged);
	CHECK(nadb_store_close(st) == 0);

	/* Both meta pages gone: refused, and salvage saves nothing and
	 * leaves the file as it is. */
	char copy[1200];
	snprintf(copy, sizeof(copy), "cp -a %s %s.orig", store, store);
	CHECK(system(copy) == 0);
	garble(store, 0);
	garble(store, 1);
	CHECK(nadb_store_open(store, &o, &st) == -EUCLEAN);
	CHECK(d.damaged && strlen(d.why) > 0);
	o.salvage_meta = true;
	CHECK(nadb_store_open(store, &o, &st) == -EUCLEAN);
	CHECK(!d.salvaged);
	nadb_damage_free(&d);

	/* A garbled page of records: refused, then salvaged, repaired, most
	 * keys kept.  Salvage walks each table in order and stops at a page it
	 * cannot read, so which page decides how much is lost: the page is the
	 * first leaf in use whose loss leaves most keys (the bats suite checks
	 * what each of several pages costs). */
	int kept = 0, tried = 0;
	off_t leaf;
	for (leaf = 2; kept < KEYS * 6 / 10; leaf++) {
		bool past_end;
		char orig[320];
		snprintf(orig, sizeof(orig), "%s.orig", store);
		if (!leaf_page(orig, leaf, &past_end)) {
			if (past_end)
				break;
			continue;
		}
		snprintf(copy, sizeof(copy), "rm -rf %s && cp -a %s.orig %s", store, store, store);
		CHECK(system(copy) == 0);
		garble(store, leaf);
		nadb_damage_free(&d);
		d = (struct nadb_damage){0};
		o.salvage_meta = false;
		int rc = nadb_store_open(store, &o, &st);
		if (rc == 0) { /* a free page: nothing reads it */
			CHECK(nadb_store_close(st) == 0);
			continue;
		}
		tried++;
		CHECK(rc == -EUCLEAN && d.damaged);
		o.salvage_meta = true;
		if (nadb_store_open(store, &o, &st)) /* the table of tables: nothing saved */
			continue;
		CHECK(d.damaged && d.salvaged && d.saved > 0);
		CHECK(strstr(d.kept, "/meta/data.mdb.damaged-") != NULL);
		struct nadb_fsck_result res;
		CHECK(nadb_fsck(st, true, NULL, NULL, &res) == 0);
		kept = count_keys(st);
		if (kept >= KEYS * 6 / 10)
			check_clean(st);
		CHECK(nadb_store_close(st) == 0);
	}
	leaf--;
	CHECK(kept >= KEYS * 6 / 10);
	nadb_damage_free(&d);

	/* The repaired file passes the walk. */
	d = (struct nadb_damage){0};
	o.salvage_meta = false;
	CHECK(nadb_store_open(store, &o, &st) == 0);
	CHECK(!d.damaged);
	CHECK(count_keys(st) == kept);
	CHECK(nadb_store_close(st) == 0);

	snprintf(copy, sizeof(copy), "rm -rf %s.orig", store);
	CHECK(system(copy) == 0);
	remove_dir(dir);
	printf("test_damage: %d keys of %d kept after garbling page %lld (%d pages in use "
	       "tried); %s\n", kept, KEYS, (long long)leaf, tried, failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
