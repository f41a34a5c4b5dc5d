/* test_refs.c -- a chunk's reference count saturates: values sharing one
 * chunk past CHUNK_REFS_MAX keep it for good (a leak fsck --repair
 * recounts), never wrap the count round to one that frees it under them. */
#include "fsck.h"
#include "store_int.h"
#include "unit.h"

static int note_chunk(void *ctx, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs,
		      const struct chunk_loc *loc)
{
	(void)refs;
	(void)loc;
	memcpy(ctx, hash, CHUNK_HASH_LEN);
	return 0;
}

static uint32_t refs_of(struct nadb_store *st, const uint8_t hash[CHUNK_HASH_LEN])
{
	uint32_t refs = 0;
	pthread_mutex_lock(&st->meta_lock);
	CHECK(chunk_refs(&st->chunks, hash, &refs) == 0);
	pthread_mutex_unlock(&st->meta_lock);
	return refs;
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	struct nadb_store *st;
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	uint64_t ns = make(st, make(st, NADB_ROOT_INO, "app", S_IFDIR | 0755), "ns", S_IFDIR | 0755);
	const char v[] = "one value, many keys";
	put_value(st, ns, "a", v, sizeof(v));
	uint8_t hash[CHUNK_HASH_LEN];
	pthread_mutex_lock(&st->meta_lock);
	CHECK(chunk_scan(&st->chunks, NULL, note_chunk, hash) == 0);
	/* as if 2^32 - 2 more keys held it */
	CHECK(step_begin(st) == 0);
	CHECK(step_end(st, chunk_set_refs(&st->chunks, hash, CHUNK_REFS_MAX - 1)) == 0);
	pthread_mutex_unlock(&st->meta_lock);

	put_value(st, ns, "b", v, sizeof(v));
	CHECK(refs_of(st, hash) == CHUNK_REFS_MAX);
	put_value(st, ns, "c", v, sizeof(v));
	CHECK(refs_of(st, hash) == CHUNK_REFS_MAX);
	CHECK(nadb_unlink(st, ns, "a") == 0);
	CHECK(nadb_unlink(st, ns, "b") == 0);
	CHECK(nadb_store_sync(st) == 0);
	CHECK(refs_of(st, hash) == CHUNK_REFS_MAX);
	CHECK(nadb_store_close(st) == 0);

	CHECK(nadb_store_open(store, NULL, &st) == 0);
	check_path_value(st, "/app/ns/c", v, sizeof(v));
	/* fsck calls the saturated count what it is, a leak, and recounts */
	struct nadb_fsck_result res;
	CHECK(nadb_fsck(st, false, NULL, NULL, &res) == 0);
	CHECK(res.problems == 1);
	CHECK(nadb_fsck(st, true, NULL, NULL, &res) == 0);
	CHECK(refs_of(st, hash) == 1);
	check_clean(st);
	CHECK(nadb_unlink(st, ns, "c") == 0);
	CHECK(nadb_store_close(st) == 0);
	CHECK(nadb_store_open(store, NULL, &st) == 0);
	check_clean(st);
	CHECK(nadb_store_close(st) == 0);
	remove_dir(dir);
	return failures ? 1 : 0;
}
