/* test_tags.c -- tags on keys and the /tags mirrors: single and AND
 * queries, the mirror following renames, unlink and expiry, bad names. */
#include "unit.h"
#include "fsck.h"
#include "store.h"
#include "store_int.h" /* to break the index on purpose */
#include "tags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


static int setx(struct nadb_store *st, uint64_t ino, const char *name, const char *v)
{
	return nadb_setxattr(st, ino, name, v, strlen(v), 0, NULL);
}

struct names {
	char text[1024];
};

static int add_name(void *ctx, const char *name, const struct nadb_attr *a)
{
	struct names *n = ctx;
	(void)a;
	strcat(n->text, name);
	strcat(n->text, " ");
	return 0;
}

/* The names in the mirror of DIR for QUERY, space-separated. */
static const char *mirror(struct nadb_store *st, const char *query, uint64_t dir)
{
	static struct names n;
	n.text[0] = 0;
	struct nadb_tag_query q;
	if (nadb_tag_query_parse(st, query, &q))
		return "(no such tag)";
	CHECK(nadb_tag_readdir(st, &q, dir, NULL, add_name, &n) == 0);
	return n.text;
}

static int add_tag(void *ctx, const char *tag, uint64_t keys)
{
	struct names *n = ctx;
	char line[300];
	snprintf(line, sizeof(line), "%s=%llu ", tag, (unsigned long long)keys);
	strcat(n->text, line);
	return 0;
}

struct first_row {
	uint8_t key[600];
	size_t len;
};

static int take_first(void *ctx, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	(void)val;
	(void)vlen;
	struct first_row *f = ctx;
	memcpy(f->key, key, klen);
	f->len = klen;
	return 1;
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	struct nadb_store *st;
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	uint64_t app = make(st, NADB_ROOT_INO, "app", S_IFDIR | 0755);
	uint64_t media = make(st, app, "media", S_IFDIR | 0755);
	uint64_t y2024 = make(st, media, "2024", S_IFDIR | 0755);
	uint64_t cat = make(st, y2024, "cat.jpg", S_IFREG | 0644);
	uint64_t dog = make(st, y2024, "dog.jpg", S_IFREG | 0644);
	uint64_t note = make(st, media, "note", S_IFREG | 0644);
	char buf[256];
	struct first_row first = {{0}, 0};

	/* Bad names change nothing, a whole list included. */
	CHECK(setx(st, cat, "user.tags", "photo,.hidden") == -EINVAL);
	CHECK(setx(st, cat, "user.tags", "a/b") == -EINVAL);
	CHECK(setx(st, cat, "user.tags", "a,,b") == -EINVAL);
	CHECK(setx(st, cat, "user.tags", "a+b") == -EINVAL);
	CHECK(setx(st, cat, "user.tag.x\x01", "") == -EINVAL);
	CHECK(nadb_getxattr(st, cat, "user.tags", buf, sizeof(buf)) == -ENODATA);
	CHECK(setx(st, media, "user.tags", "photo") == -EPERM);

	/* user.tags reads back sorted and without duplicates. */
	CHECK(setx(st, cat, "user.tags", "pets,photo,pets") == 0);
	ssize_t n = nadb_getxattr(st, cat, "user.tags", buf, sizeof(buf));
	CHECK(n == 10 && !memcmp(buf, "pets,photo", 10));
	CHECK(setx(st, dog, "user.tag.photo", "") == 0);
	CHECK(setx(st, note, "user.tag.text", "") == 0);
	CHECK(nadb_getxattr(st, dog, "user.tag.photo", buf, sizeof(buf)) == 0);
	CHECK(nadb_getxattr(st, dog, "user.tag.pets", buf, sizeof(buf)) == -ENODATA);

	struct names tags = {{0}};
	CHECK(nadb_tags_list(st, NULL, add_tag, &tags) == 0);
	CHECK(!strcmp(tags.text, "pets=1 photo=2 text=1 "));

	/* The mirror holds the tagged keys and the directories on their way. */
	CHECK(!strcmp(mirror(st, "photo", NADB_ROOT_INO), "app "));
	CHECK(!strcmp(mirror(st, "photo", app), "media "));
	CHECK(!strcmp(mirror(st, "photo", media), "2024 "));
	CHECK(!strcmp(mirror(st, "photo", y2024), "cat.jpg dog.jpg "));
	CHECK(!strcmp(mirror(st, "photo+pets", y2024), "cat.jpg "));
	CHECK(!strcmp(mirror(st, "pets+photo", media), "2024 "));
	CHECK(!strcmp(mirror(st, "text+photo", media), ""));
	CHECK(!strcmp(mirror(st, "nosuch", media), "(no such tag)"));
	struct nadb_attr a;
	struct nadb_tag_query q;
	CHECK(nadb_tag_query_parse(st, "photo", &q) == 0);
	CHECK(nadb_tag_lookup(st, &q, y2024, "cat.jpg", &a) == 0 && a.ino == cat);
	CHECK(nadb_tag_lookup(st, &q, media, "note", &a) == -ENOENT);
	check_clean(st);

	/* Renaming a directory moves its mirror; renaming a key moves it. */
	uint64_t archive = make(st, app, "archive", S_IFDIR | 0755);
	CHECK(nadb_rename(st, media, "2024", archive, "old", 0) == 0);
	CHECK(!strcmp(mirror(st, "photo", app), "archive "));
	CHECK(!strcmp(mirror(st, "photo", archive), "old "));
	CHECK(nadb_rename(st, y2024, "dog.jpg", y2024, "puppy.jpg", 0) == 0);
	CHECK(!strcmp(mirror(st, "photo", y2024), "cat.jpg puppy.jpg "));
	check_clean(st);

	/* Overwrite by rename drops the victim's tags; hard links show twice. */
	uint64_t tmp = make(st, y2024, "tmp", S_IFREG | 0644);
	(void)tmp;
	CHECK(nadb_rename(st, y2024, "tmp", y2024, "cat.jpg", 0) == 0);
	CHECK(!strcmp(mirror(st, "photo", y2024), "puppy.jpg "));
	tags.text[0] = 0;
	CHECK(nadb_tags_list(st, NULL, add_tag, &tags) == 0);
	CHECK(!strcmp(tags.text, "photo=1 text=1 "));
	CHECK(nadb_link(st, dog, media, "dog-link", &a) == 0);
	CHECK(!strcmp(mirror(st, "photo", media), "dog-link "));
	check_clean(st);

	/* rm under /tags removes the tag; unlink of the last name drops it. */
	CHECK(nadb_tag_query_parse(st, "text", &q) == 0);
	CHECK(nadb_tag_query_untag(st, &q, note) == 0);
	CHECK(!strcmp(mirror(st, "text", NADB_ROOT_INO), "(no such tag)"));
	CHECK(nadb_unlink(st, media, "dog-link") == 0);
	CHECK(nadb_unlink(st, y2024, "puppy.jpg") == 0);
	tags.text[0] = 0;
	CHECK(nadb_tags_list(st, NULL, add_tag, &tags) == 0);
	CHECK(!strcmp(tags.text, ""));
	check_clean(st);

	/* Tags survive close and open. */
	uint64_t k = make(st, y2024, "k", S_IFREG | 0644);
	CHECK(setx(st, k, "user.tags", "keep") == 0);
	CHECK(nadb_store_close(st) == 0);
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	CHECK(!strcmp(mirror(st, "keep", y2024), "k "));
	check_clean(st);

	/* fsck notices a tag whose key count is off, and is clean again once
	 * it is right. */
	/* (the count row: k's partition's first number, then the tag) */
	struct kv_val v;
	uint8_t ckey[12];
	ino_key(ckey, (uint64_t)kv_partition(k) << KV_PART_SHIFT);
	memcpy(ckey + 8, "keep", 4);
	uint64_t count, bad;
	CHECK(st->kv->ops->get(st->kv, KV_TAG_COUNTS, ckey, 12, &v) == 0 && v.len == 8);
	memcpy(&count, v.data, 8);
	CHECK(count == 1);
	bad = count + 2;
	CHECK(st->kv->ops->step_begin(st->kv) == 0);
	CHECK(st->kv->ops->put(st->kv, KV_TAG_COUNTS, ckey, 12, &bad, 8) == 0);
	CHECK(st->kv->ops->step_end(st->kv, 1) == 0);
	struct nadb_fsck_result res;
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0);
	CHECK(res.problems == 1);
	CHECK(st->kv->ops->step_begin(st->kv) == 0);
	CHECK(st->kv->ops->put(st->kv, KV_TAG_COUNTS, ckey, 12, &count, 8) == 0);
	CHECK(st->kv->ops->step_end(st->kv, 1) == 0);
	check_clean(st);

	/* fsck notices a mirror entry gone missing. */
	CHECK(st->kv->ops->scan(st->kv, KV_TAG_EDGES, NULL, 0, take_first, &first) == 0);
	CHECK(first.len > 0);
	CHECK(st->kv->ops->step_begin(st->kv) == 0);
	CHECK(st->kv->ops->del(st->kv, KV_TAG_EDGES, first.key, first.len) == 0);
	CHECK(st->kv->ops->step_end(st->kv, 1) == 0);
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0);
	CHECK(res.problems > 0);
	/* ... and a repair rebuilds the index from the keys' own tags. */
	CHECK(nadb_fsck(st, true, NULL, NULL, &res) == 0);
	CHECK(res.problems > 0 && res.repaired == res.problems);
	check_clean(st);
	CHECK(!strcmp(mirror(st, "keep", y2024), "k "));
	CHECK(!strcmp(mirror(st, "keep", NADB_ROOT_INO), "app "));

	/* ... and tag ids: one shared by two tags is found, and renumbered. */
	CHECK(st->kv->ops->get(st->kv, KV_TAG_IDS, "keep", 4, &v) == 0 && v.len == 4);
	uint32_t keep_id;
	memcpy(&keep_id, v.data, 4);
	CHECK(st->kv->ops->step_begin(st->kv) == 0);
	CHECK(st->kv->ops->put(st->kv, KV_TAG_IDS, "other", 5, &keep_id, 4) == 0);
	CHECK(st->kv->ops->step_end(st->kv, 1) == 0);
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0);
	CHECK(res.problems == 1);
	CHECK(nadb_fsck(st, true, NULL, NULL, &res) == 0);
	check_clean(st);
	CHECK(st->kv->ops->get(st->kv, KV_TAG_IDS, "other", 5, &v) == -ENOENT);
	CHECK(!strcmp(mirror(st, "keep", y2024), "k "));
	CHECK(nadb_store_close(st) == 0);

	remove_dir(dir);
	return failures ? 1 : 0;
}
