/* test_inode.c -- inode records as stored: the compact encoding gives back
 * every field exactly, a new 4 KiB key's record fits a Redis listpack
 * entry, records of stores made before (raw structs) still read, damaged
 * ones are refused, and a store of format 1 opens and is moved to this
 * version's.  Directory entries and chunk records likewise (format 6). */
#include "stats.h"
#include "store_int.h"
#include "tags.h"
#include "varint.h"
#include "unit.h"

#include <endian.h>
#include <lmdb.h>
#include <stdint.h>

static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return *x;
}

/* A value that is often 0, often small, sometimes anything. */
static uint64_t some(uint64_t *x)
{
	uint64_t r = rnd(x);
	switch (r % 4) {
	case 0: return 0;
	case 1: return r >> 56;
	case 2: return rnd(x);
	default: return (uint64_t)-(int64_t)(r >> 40);
	}
}

static void check_round_trips(void)
{
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < 100000; i++) {
		struct inode_rec r = {
			.mode = (uint32_t)some(&x), .uid = (uint32_t)some(&x),
			.gid = (uint32_t)some(&x), .nlink = (uint32_t)some(&x),
			.rdev = some(&x), .size = some(&x), .parent = some(&x),
			.atime = (int64_t)some(&x), .mtime = (int64_t)some(&x),
			.ctime = (int64_t)some(&x), .btime = (int64_t)some(&x),
			.expires = (int64_t)some(&x), .ttl_default = (int64_t)some(&x),
			.stored = some(&x), .flags = (uint32_t)some(&x), .level = (uint8_t)some(&x),
		};
		uint8_t buf[INODE_REC_MAX + 20];
		size_t n = inode_encode(&r, buf);
		CHECK(n <= INODE_REC_MAX);
		memcpy(buf + n, "payload-of-20-bytes!", 20);
		struct inode_rec back;
		const uint8_t *payload;
		size_t plen;
		CHECK(inode_decode(buf, n + 20, &back, &payload, &plen) == 0);
		CHECK(!memcmp(&back, &r, sizeof(r)) && plen == 20 &&
		      !memcmp(payload, "payload-of-20-bytes!", 20));
		/* cut anywhere in the attributes: refused, never misread */
		size_t cut = rnd(&x) % n;
		CHECK(inode_decode(buf, cut, &back, &payload, &plen) == -EIO);
		if (failures)
			break;
	}
}

/* Directory entries: compact, exact, never taken for raw ones; a cut or
 * padded one is refused.  Chunk records that are neither form too. */
static void check_entries(void)
{
	uint64_t x = 2463534242ull;
	for (int i = 0; i < 100000; i++) {
		struct dirent_val d = {.ino = some(&x), .mode = (uint32_t)(rnd(&x) % 16) << 12};
		uint8_t buf[DIRENT_VAL_MAX + 1];
		size_t n = dirent_encode(&d, buf);
		CHECK(n <= DIRENT_VAL_MAX && n != DIRENT_OLD_LEN);
		struct dirent_val back;
		CHECK(dirent_decode(buf, n, &back) == 0);
		CHECK(back.ino == d.ino && back.mode == d.mode);
		CHECK(dirent_decode(buf, rnd(&x) % n, &back) == -EIO);
		buf[n] = 0;
		CHECK(dirent_decode(buf, n + 1, &back) == -EIO);
		if (failures)
			break;
	}
	struct dirent_val key = {.ino = (3ull << KV_PART_SHIFT) + 123456, .mode = S_IFREG};
	uint8_t buf[DIRENT_VAL_MAX];
	CHECK(dirent_encode(&key, buf) <= 7);
	uint8_t bad_type[] = {5, 0x10}; /* type bits above S_IFMT's */
	struct dirent_val back;
	CHECK(dirent_decode(bad_type, sizeof(bad_type), &back) == -EIO);
	uint32_t raw;
	uint8_t short_rec[] = {1, 2, 3};
	CHECK(chunk_row_raw_len(short_rec, sizeof(short_rec), &raw) == -EIO);
	CHECK(chunk_row_raw_len("", 0, &raw) == -EIO);
	uint8_t rec[] = {1, 0, 0x80, 0x20, 0x80, 0x20, 0x40, 0, 0}; /* a 4 KiB raw chunk */
	CHECK(chunk_row_raw_len(rec, sizeof(rec), &raw) == 0 && raw == 4096);
	CHECK(chunk_row_raw_len(rec, sizeof(rec) - 1, &raw) == -EIO);
	/* damaged: a raw length and difference whose sum would overflow, an
	 * old record's offset no compact one could hold */
	uint8_t wide[] = {0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 2, 0, 0};
	CHECK(chunk_row_raw_len(wide, sizeof(wide), &raw) == -EIO);
	uint8_t far[] = {0, 0, 0, 1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0};
	CHECK(chunk_row_raw_len(far, sizeof(far), &raw) == -EIO);
	uint8_t old[CHUNK_REC_OLD_LEN] = {1};
	old[15] = 0x10; /* off = 2^60 */
	CHECK(chunk_row_raw_len(old, sizeof(old), &raw) == -EIO);
}

static void check_sizes_and_shapes(void)
{
	/* a new 4 KiB key: its record and chunk hash fit in 64 bytes */
	int64_t now = 1796000000123456789;
	struct inode_rec r = {
		.mode = S_IFREG | 0644, .uid = 1000, .gid = 1000, .nlink = 1, .size = 4096,
		.atime = now + 5000, .mtime = now + 40000, .ctime = now + 40000, .btime = now,
		.stored = 4096, .level = 3,
	};
	uint8_t buf[INODE_REC_MAX];
	size_t n = inode_encode(&r, buf);
	CHECK(n + 16 <= 64);
	printf("a 4 KiB key's record: %zu bytes + 16 of chunk hash (raw: %zu)\n", n,
	       sizeof(r) + 16);

	/* a raw record, as stores of format 1 hold them */
	uint8_t raw[sizeof(r) + 16];
	memcpy(raw, &r, sizeof(r));
	memset(raw + sizeof(r), 0xab, 16);
	struct inode_rec back;
	const uint8_t *payload;
	size_t plen;
	CHECK(inode_decode(raw, sizeof(raw), &back, &payload, &plen) == 0);
	CHECK(!memcmp(&back, &r, sizeof(r)) && plen == 16 && payload[0] == 0xab);
	CHECK(inode_decode(raw, sizeof(r) - 1, &back, &payload, &plen) == -EIO);

	/* damaged: nothing, a wrong tag, a field too big for its type */
	CHECK(inode_decode("", 0, &back, &payload, &plen) == -EIO);
	uint8_t bad[] = {0x17, 0, 1, 0, 5};
	CHECK(inode_decode(bad, sizeof(bad), &back, &payload, &plen) == -EIO);
	uint8_t wide[] = {0xc2, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x7f}; /* mode > 32 bits */
	CHECK(inode_decode(wide, sizeof(wide), &back, &payload, &plen) == -EIO);
	uint8_t longer[] = {0xc2, 0, 0x20, 0, 0xff, 0xff, 0xff, 0xff, 0xff,
			    0xff, 0xff, 0xff, 0xff, 0x7f}; /* size > 64 bits */
	CHECK(inode_decode(longer, sizeof(longer), &back, &payload, &plen) == -EIO);
}

/* Delete the LMDB tables of STORE that formats after FORMAT added. */
static void drop_newer_tables(const char *store, unsigned format)
{
	char meta[400];
	snprintf(meta, sizeof(meta), "%s/meta", store);
	MDB_env *env;
	MDB_txn *txn;
	CHECK(mdb_env_create(&env) == 0);
	CHECK(mdb_env_set_maxdbs(env, KV_NTABLES + 8) == 0);
	CHECK(mdb_env_set_mapsize(env, KV_LMDB_MAP_SIZE) == 0);
	CHECK(mdb_env_open(env, meta, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	for (int t = 0; t < KV_NTABLES; t++) {
		MDB_dbi dbi;
		if (kv_table_since(t) > format) {
			CHECK(mdb_dbi_open(txn, kv_table_name(t), 0, &dbi) == 0);
			CHECK(mdb_drop(txn, dbi, 1) == 0);
		}
	}
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

/* Write the entry NAME in PARENT for INO as struct dirent_val raw, as
 * stores before format 6 held entries. */
static void put_raw_entry(struct nadb_store *st, uint64_t parent, const char *name,
			  uint64_t ino, uint32_t mode)
{
	struct dirent_val d;
	memset(&d, 0, sizeof(d));
	d.ino = ino, d.mode = mode;
	uint8_t key[NAME_KEY_MAX];
	CHECK(st->kv->ops->put(st->kv, KV_DIRENTS, key, name_key(key, parent, name), &d,
			       sizeof(d)) == 0);
	CHECK(sizeof(d) == DIRENT_OLD_LEN);
}

/* Rewrite the chunk record of HASH as the raw struct stores before format
 * 6 held (chunk.c): refs, seg (u32), off (u64), frame length, raw length
 * (u32), flags, variant and two bytes of 0, little-endian. */
static void put_raw_chunk_rec(struct nadb_store *st, const uint8_t *hash)
{
	struct kv_val v;
	CHECK(st->kv->ops->get(st->kv, KV_CHUNKS, hash, CHUNK_HASH_LEN, &v) == 0);
	if (failures)
		return;
	const uint8_t *p = v.data, *end = p + v.len;
	uint64_t refs, seg, off, raw_len, delta;
	CHECK(varint_get(&p, end, &refs) && varint_get(&p, end, &seg) &&
	      varint_get(&p, end, &off) && varint_get(&p, end, &raw_len) &&
	      varint_get(&p, end, &delta) && end - p == 2);
	CHECK(v.len < CHUNK_REC_OLD_LEN);
	if (failures)
		return;
	uint32_t r32 = (uint32_t)refs, s32 = (uint32_t)seg, raw32 = (uint32_t)raw_len;
	uint32_t len32 = (uint32_t)((int64_t)raw_len + unzigzag(delta));
	uint8_t old[CHUNK_REC_OLD_LEN] = {0};
	memcpy(old, &r32, 4);
	memcpy(old + 4, &s32, 4);
	memcpy(old + 8, &off, 8);
	memcpy(old + 16, &len32, 4);
	memcpy(old + 20, &raw32, 4);
	old[24] = p[0], old[25] = p[1];
	CHECK(st->kv->ops->put(st->kv, KV_CHUNKS, hash, CHUNK_HASH_LEN, old, sizeof(old)) == 0);
}

/* Store the chunk HASH (LEN bytes at VAL) again in a frame as stores
 * before format 6 wrote them: the header then the hash; its record points
 * there from now on.  Inside a step. */
static void put_old_frame(struct nadb_store *st, const uint8_t *hash, const void *val,
			  size_t len)
{
	uint8_t head[CHUNK_FRAME_HEAD + CHUNK_HASH_LEN] = {0};
	uint32_t magic = htole32(0x4e444243u), len32 = htole32((uint32_t)len);
	memcpy(head, &magic, 4);
	memcpy(head + 8, &len32, 4);
	memcpy(head + 12, &len32, 4);
	memcpy(head + 16, hash, CHUNK_HASH_LEN);
	struct chunk_loc loc = {.raw_len = (uint32_t)len};
	CHECK(st->chunks.blobs->ops->append(st->chunks.blobs, head, sizeof(head), val, len,
					    &loc.blob) == 0);
	CHECK(chunk_adopt(&st->chunks, hash, &loc, 1) == 0);
	/* adopting keeps the counters (fsck's repair sets them after): the
	 * store's frames hold the old header's hash more */
	CHECK(counters_add(st, NADB_ROOT_INO, C_CHUNK_BYTES, CHUNK_HASH_LEN) == 0);
}

/* A chunk record of key K whose frame length is 4 bytes off: a read of
 * part of the value fails rather than give bytes 4 off; then put back. */
static void check_damaged_length(struct nadb_store *st, uint64_t k)
{
	struct inode in;
	struct kv_val v;
	CHECK(inode_get(st, k, &in) == 0 && in.payload_len == CHUNK_HASH_LEN);
	if (failures)
		return;
	CHECK(st->kv->ops->get(st->kv, KV_CHUNKS, in.payload, CHUNK_HASH_LEN, &v) == 0 &&
	      v.len == CHUNK_REC_OLD_LEN);
	uint8_t rec[CHUNK_REC_OLD_LEN], bad[CHUNK_REC_OLD_LEN];
	if (!failures)
		memcpy(rec, v.data, sizeof(rec));
	/* 4 bytes off, and 16 (one bit: as much as the headers differ) */
	for (int flip = 0; flip < 2 && !failures; flip++) {
		memcpy(bad, rec, sizeof(bad));
		if (flip)
			bad[16] ^= 0x10; /* the frame's length, little-endian */
		else
			bad[16] -= 4;
		CHECK(step_begin(st) == 0);
		CHECK(step_end(st, st->kv->ops->put(st->kv, KV_CHUNKS, in.payload, CHUNK_HASH_LEN,
						      bad, sizeof(bad))) == 0);
		struct nadb_file *fh;
		char part[8];
		CHECK(nadb_file_open(st, k, 0, &fh) == 0);
		CHECK(nadb_file_read(fh, part, 5, 2) == -EIO);
		CHECK(nadb_file_close(fh) == 0);
	}
	CHECK(step_begin(st) == 0);
	CHECK(step_end(st, st->kv->ops->put(st->kv, KV_CHUNKS, in.payload, CHUNK_HASH_LEN, rec,
					      sizeof(rec))) == 0);
	inode_release(&in);
}

/* A compressed chunk whose record lost its zlib flag: a read of the whole
 * value fails (the header says otherwise), never reads past the frame. */
static void check_damaged_flags(struct nadb_store *st, uint64_t ns)
{
	static char text[4096];
	memset(text, 'a', sizeof(text));
	uint64_t z = put_value(st, ns, "z", text, sizeof(text));
	struct inode in;
	struct kv_val v;
	CHECK(inode_get(st, z, &in) == 0 && in.payload_len == CHUNK_HASH_LEN);
	if (failures)
		return;
	CHECK(st->kv->ops->get(st->kv, KV_CHUNKS, in.payload, CHUNK_HASH_LEN, &v) == 0 &&
	      v.len < CHUNK_REC_OLD_LEN && v.len >= 2);
	uint8_t rec[CHUNK_REC_OLD_LEN];
	size_t len = v.len;
	if (!failures)
		memcpy(rec, v.data, len);
	CHECK((rec[len - 2] & 1) == 1); /* compressed: CHUNK_ZLIB */
	rec[len - 2] &= (uint8_t)~1;
	CHECK(step_begin(st) == 0);
	CHECK(step_end(st, st->kv->ops->put(st->kv, KV_CHUNKS, in.payload, CHUNK_HASH_LEN, rec,
					      len)) == 0);
	struct nadb_file *fh;
	static char back[sizeof(text)];
	CHECK(nadb_file_open(st, z, 0, &fh) == 0);
	CHECK(nadb_file_read(fh, back, sizeof(back), 0) == -EIO);
	CHECK(nadb_file_close(fh) == 0);
	/* by its header, before its bytes are hashed (as if raw: past them) */
	struct chunk_loc loc;
	const char *why = NULL;
	CHECK(step_begin(st) == 0);
	CHECK(chunk_find(&st->chunks, in.payload, &loc) == 0);
	CHECK(chunk_read_why(&st->chunks, &loc, in.payload, 0, sizeof(back), back, &why) == -EIO);
	CHECK(step_end(st, 0) == 0);
	CHECK(why && !strcmp(why, "frame header does not match the index"));
	rec[len - 2] |= 1;
	CHECK(step_begin(st) == 0);
	CHECK(step_end(st, st->kv->ops->put(st->kv, KV_CHUNKS, in.payload, CHUNK_HASH_LEN, rec,
					      len)) == 0);
	check_path_value(st, "/app/ns/z", text, sizeof(text));
	inode_release(&in);
}

struct frames_of {
	const uint8_t *hash;
	unsigned n, old;
};

static int count_frames_of(void *ctx, const uint8_t hash[CHUNK_HASH_LEN],
			   const struct chunk_loc *loc)
{
	struct frames_of *f = ctx;
	if (!memcmp(hash, f->hash, CHUNK_HASH_LEN)) {
		f->n++;
		f->old += loc->blob.len - loc->raw_len == CHUNK_FRAME_HEAD + CHUNK_HASH_LEN;
	}
	return 0;
}

/* A store of format 1 (raw records, counters as before format 3) opens,
 * reads, writes, and is marked as this version's, its counters right and
 * its tag index rebuilt (check_clean). */
static void check_old_store(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	struct nadb_options o;
	nadb_options_default(&o);
	struct nadb_store *st;
	CHECK(nadb_store_open(store, &o, &st) == 0);
	if (failures)
		return;
	uint64_t db = make(st, NADB_ROOT_INO, "app", S_IFDIR | 0755);
	uint64_t ns = make(st, db, "ns", S_IFDIR | 0755);
	uint64_t k = make(st, ns, "k", S_IFREG | 0640);
	static const char value[] = "a value stored before format 6";
	CHECK(put_value(st, ns, "k", value, sizeof(value)) == k);
	/* write its record and the format back as format 1 had them */
	struct inode in;
	CHECK(inode_get(st, k, &in) == 0);
	CHECK(in.payload_len == CHUNK_HASH_LEN);
	if (failures)
		return;
	uint8_t key[INO_KEY_LEN];
	uint32_t f1[2] = {1, o.chunk_kb * 1024};
	/* an expiry a year on, indexed and counted as then: in the root */
	in.r.expires = now_ns() + 365LL * 86400 * 1000000000;
	uint8_t ekey[16];
	uint64_t be = htobe64((uint64_t)in.r.expires);
	memcpy(ekey, &be, 8);
	ino_key(ekey + 8, k);
	CHECK(step_begin(st) == 0);
	CHECK(st->kv->ops->put(st->kv, KV_EXPIRY, ekey, 16, "", 0) == 0);
	CHECK(counters_add(st, NADB_ROOT_INO, C_EXPIRING, 1) == 0);
	uint8_t raw[sizeof(in.r) + CHUNK_HASH_LEN];
	memcpy(raw, &in.r, sizeof(in.r));
	memcpy(raw + sizeof(in.r), in.payload, CHUNK_HASH_LEN);
	CHECK(st->kv->ops->put(st->kv, KV_INODES, key, ino_key(key, k), raw, sizeof(raw)) == 0);
	/* its directory entry and chunk record too, raw as before format 6 */
	put_raw_entry(st, ns, "k", k, S_IFREG);
	put_old_frame(st, in.payload, value, sizeof(value));
	put_raw_chunk_rec(st, in.payload);
	CHECK(st->kv->ops->put(st->kv, KV_META, "format", 6, f1, sizeof(f1)) == 0);
	/* and its counters: formats before 3 counted a namespace's key in its
	 * database and the root too (stats.c) */
	CHECK(counters_add(st, db, C_KEYS, 1) == 0);
	CHECK(counters_add(st, NADB_ROOT_INO, C_KEYS, 1) == 0);
	CHECK(counters_add(st, db, C_BYTES, sizeof(value)) == 0);
	CHECK(counters_add(st, NADB_ROOT_INO, C_BYTES, sizeof(value)) == 0);
	/* a tag, indexed as before format 4: store-wide rows, counted in the
	 * root */
	uint8_t tkey[INO_KEY_LEN + 5], edge[4 + INO_KEY_LEN + 1];
	uint64_t old_row[2] = {1, 1}, old_edge[2] = {k, 1};
	memcpy(tkey + ino_key(tkey, k), "photo", 5);
	memcpy(edge, "\0\0\0\1", 4);
	ino_key(edge + 4, ns);
	edge[12] = 'k';
	CHECK(st->kv->ops->put(st->kv, KV_TAGS_OF, tkey, sizeof(tkey), "", 0) == 0);
	CHECK(st->kv->ops->put(st->kv, KV_OLD_TAG_KEYS, "photo", 5, old_row, 16) == 0);
	CHECK(st->kv->ops->put(st->kv, KV_OLD_TAG_TREE, edge, sizeof(edge), old_edge, 16) == 0);
	CHECK(counters_add(st, NADB_ROOT_INO, C_TAGS_V3, 1) == 0);
	CHECK(step_end(st, 0) == 0);
	inode_release(&in);
	nadb_store_close(st);
	/* and without the tables later formats added: the store as that
	 * version left it, whose metadata file must not look damaged */
	drop_newer_tables(store, 1);

	o.check_meta = true;
	CHECK(nadb_store_open(store, &o, &st) == 0);
	if (failures)
		return;
	struct nadb_attr a;
	CHECK(nadb_lookup(st, ns, "k", &a) == 0 && a.mode == (S_IFREG | 0640));
	struct kv_val v;
	uint32_t f[2] = {0};
	CHECK(st->kv->ops->get(st->kv, KV_META, "format", 6, &v) == 0 && v.len == sizeof(f));
	if (!failures)
		memcpy(f, v.data, sizeof(f));
	CHECK(f[0] == STORE_FORMAT_VERSION);
	struct nadb_stats sdb, sroot;
	CHECK(nadb_stats(st, db, &sdb) == 0 && sdb.keys == 1 && sdb.namespaces == 1);
	CHECK(nadb_stats(st, NADB_ROOT_INO, &sroot) == 0 && sroot.keys == 1);
	CHECK(sroot.expiring == 1);
	struct nadb_stats sns;
	CHECK(nadb_stats(st, ns, &sns) == 0 && sns.keys == 1);
	/* the raw entry and chunk record read: the value is there, its chunk
	 * counted once (check_clean) */
	check_path_value(st, "/app/ns/k", value, sizeof(value));
	/* part of it, from inside the old frame */
	struct nadb_file *fh;
	char part[8] = {0};
	CHECK(nadb_file_open(st, k, 0, &fh) == 0);
	CHECK(nadb_file_read(fh, part, 5, 2) == 5 && !memcmp(part, value + 2, 5));
	CHECK(nadb_file_close(fh) == 0);
	check_damaged_length(st, k);
	/* the packs' walk (fsck's) finds the chunk in both frames, the old
	 * header's hash and the new frame's bytes' */
	uint8_t hash[CHUNK_HASH_LEN];
	struct inode now_in;
	CHECK(inode_get(st, k, &now_in) == 0 && now_in.payload_len == CHUNK_HASH_LEN);
	if (!failures)
		memcpy(hash, now_in.payload, CHUNK_HASH_LEN);
	inode_release(&now_in);
	struct frames_of fo = {.hash = hash};
	CHECK(chunk_frames(&st->chunks, count_frames_of, &fo) == 0);
	CHECK(fo.n == 2 && fo.old == 1);
	/* the tag index is rebuilt, per partition, and the old rows gone */
	CHECK(sroot.tags == 1);
	struct nadb_tag_query q;
	struct nadb_attr found;
	CHECK(nadb_tag_query_parse(st, "photo", &q) == 0);
	CHECK(nadb_tag_lookup(st, &q, NADB_ROOT_INO, "app", &found) == 0 && found.ino == db);
	CHECK(nadb_tag_lookup(st, &q, db, "ns", &found) == 0 && found.ino == ns);
	CHECK(nadb_tag_lookup(st, &q, ns, "k", &found) == 0 && found.ino == k);
	CHECK(st->kv->ops->get(st->kv, KV_OLD_TAG_KEYS, "photo", 5, &v) == -ENOENT);
	CHECK(st->kv->ops->get(st->kv, KV_OLD_TAG_TREE, edge, sizeof(edge), &v) == -ENOENT);
	check_clean(st);
	check_damaged_flags(st, ns);
	/* a new value takes the old record's reference off, in its new form */
	static const char newer[] = "its value since";
	CHECK(put_value(st, ns, "k", newer, sizeof(newer)) == k);
	check_path_value(st, "/app/ns/k", newer, sizeof(newer));
	check_clean(st);
	nadb_store_close(st);
	remove_dir(dir);
}

int main(void)
{
	check_round_trips();
	check_sizes_and_shapes();
	check_entries();
	check_old_store();
	printf("%s inode records\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
