/* inode.c -- inode records in the metadata tables, and their keys.
 *
 * An inode record is fixed-size attributes followed by a payload (a
 * regular file's chunk list, a symlink's target), so that reading a
 * key's value needs one index lookup for the list and one per chunk.
 */
#include "grow.h"
#include "log.h"
#include "store_int.h"
#include "varint.h"

#include <assert.h>
#include <endian.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

size_t ino_key(uint8_t key[INO_KEY_LEN], uint64_t ino)
{
	uint64_t be = htobe64(ino);
	memcpy(key, &be, INO_KEY_LEN);
	return INO_KEY_LEN;
}

size_t name_key(uint8_t key[NAME_KEY_MAX], uint64_t ino, const char *name)
{
	size_t n = strnlen(name, NADB_NAME_MAX);
	ino_key(key, ino);
	memcpy(key + INO_KEY_LEN, name, n);
	return INO_KEY_LEN + n;
}

int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the record's encoding ---------------------------------------------------
 *
 * Compact (what is written): the two bytes INODE_COMPACT_TAG, 0; a 16-bit
 * little-endian map of the fields that are not 0; those fields as LEB128
 * varints, in enum field order; then the payload.  The times after btime
 * are kept as zigzag differences from it (a new key's are all about
 * equal), so a 4 KiB key's record is ~50 bytes with its chunk hash, small
 * enough for a Redis listpack, where the raw struct took 120.
 *
 * Raw (stores made before): struct inode_rec as it lies in memory, then
 * the payload.  Its second byte holds the type bits of mode, never 0, so
 * the two cannot be mistaken for each other.
 */
#define INODE_COMPACT_TAG 0xc2

enum field {
	F_MODE, F_UID, F_GID, F_NLINK, F_RDEV, F_SIZE, F_PARENT, F_BTIME, F_CTIME,
	F_MTIME, F_ATIME, F_EXPIRES, F_TTL, F_STORED, F_FLAGS, F_LEVEL, F_COUNT
};

/* The fields of R as the unsigned numbers stored. */
static void fields_of(const struct inode_rec *r, uint64_t f[F_COUNT])
{
	f[F_MODE] = r->mode, f[F_UID] = r->uid, f[F_GID] = r->gid;
	f[F_NLINK] = r->nlink, f[F_RDEV] = r->rdev, f[F_SIZE] = r->size;
	f[F_PARENT] = r->parent, f[F_BTIME] = zigzag(r->btime);
	f[F_CTIME] = zigzag((int64_t)((uint64_t)r->ctime - (uint64_t)r->btime));
	f[F_MTIME] = zigzag((int64_t)((uint64_t)r->mtime - (uint64_t)r->btime));
	f[F_ATIME] = zigzag((int64_t)((uint64_t)r->atime - (uint64_t)r->btime));
	f[F_EXPIRES] = zigzag(r->expires), f[F_TTL] = zigzag(r->ttl_default);
	f[F_STORED] = r->stored, f[F_FLAGS] = r->flags, f[F_LEVEL] = r->level;
}

/* R from the stored numbers; -EIO if one does not fit its field. */
static int rec_of(const uint64_t f[F_COUNT], struct inode_rec *r)
{
	memset(r, 0, sizeof(*r));
	if (f[F_MODE] > UINT32_MAX || f[F_UID] > UINT32_MAX || f[F_GID] > UINT32_MAX ||
	    f[F_NLINK] > UINT32_MAX || f[F_FLAGS] > UINT32_MAX || f[F_LEVEL] > UINT8_MAX)
		return -EIO;
	r->mode = (uint32_t)f[F_MODE], r->uid = (uint32_t)f[F_UID];
	r->gid = (uint32_t)f[F_GID], r->nlink = (uint32_t)f[F_NLINK];
	r->rdev = f[F_RDEV], r->size = f[F_SIZE], r->parent = f[F_PARENT];
	r->btime = unzigzag(f[F_BTIME]);
	r->ctime = (int64_t)((uint64_t)r->btime + (uint64_t)unzigzag(f[F_CTIME]));
	r->mtime = (int64_t)((uint64_t)r->btime + (uint64_t)unzigzag(f[F_MTIME]));
	r->atime = (int64_t)((uint64_t)r->btime + (uint64_t)unzigzag(f[F_ATIME]));
	r->expires = unzigzag(f[F_EXPIRES]), r->ttl_default = unzigzag(f[F_TTL]);
	r->stored = f[F_STORED], r->flags = (uint32_t)f[F_FLAGS];
	r->level = (uint8_t)f[F_LEVEL];
	return 0;
}

size_t inode_encode(const struct inode_rec *r, uint8_t out[INODE_REC_MAX])
{
	uint64_t f[F_COUNT];
	fields_of(r, f);
	unsigned map = 0;
	size_t n = 4;
	for (int i = 0; i < F_COUNT; i++) {
		if (!f[i])
			continue;
		map |= 1u << i;
		n += varint_put(out + n, f[i]);
	}
	out[0] = INODE_COMPACT_TAG;
	out[1] = 0;
	out[2] = (uint8_t)map;
	out[3] = (uint8_t)(map >> 8);
	assert(n <= INODE_REC_MAX);
	return n;
}

int inode_decode(const void *val, size_t vlen, struct inode_rec *r, const uint8_t **payload,
		 size_t *plen)
{
	const uint8_t *p = val, *end = p + vlen;
	if (vlen >= 2 && p[1] != 0) { /* raw */
		if (vlen < sizeof(*r))
			return -EIO;
		memcpy(r, val, sizeof(*r));
		*payload = p + sizeof(*r);
		*plen = vlen - sizeof(*r);
		return 0;
	}
	if (vlen < 4 || p[0] != INODE_COMPACT_TAG)
		return -EIO;
	unsigned map = p[2] | (unsigned)p[3] << 8;
	uint64_t f[F_COUNT] = {0};
	p += 4;
	for (int i = 0; i < F_COUNT; i++)
		if ((map >> i & 1) && !varint_get(&p, end, &f[i]))
			return -EIO;
	if (rec_of(f, r))
		return -EIO;
	*payload = p;
	*plen = (size_t)(end - p);
	return 0;
}

int inode_get_rec(struct nadb_store *st, uint64_t ino, struct inode_rec *r)
{
	uint8_t key[INO_KEY_LEN];
	struct kv_val v;
	int rc = st->kv->ops->get(st->kv, KV_INODES, key, ino_key(key, ino), &v);
	const uint8_t *payload;
	size_t len;
	if (!rc && inode_decode(v.data, v.len, r, &payload, &len)) {
		nadb_log("inode %llu: record of %zu bytes is damaged",
			 (unsigned long long)ino, v.len);
		rc = -EIO;
	}
	return rc;
}

int inode_get(struct nadb_store *st, uint64_t ino, struct inode *out)
{
	uint8_t key[INO_KEY_LEN];
	struct kv_val v;
	memset(out, 0, sizeof(*out));
	int rc = st->kv->ops->get(st->kv, KV_INODES, key, ino_key(key, ino), &v);
	if (rc)
		return rc;
	const uint8_t *payload;
	if (inode_decode(v.data, v.len, &out->r, &payload, &out->payload_len)) {
		nadb_log("inode %llu: record of %zu bytes is damaged",
			 (unsigned long long)ino, v.len);
		return -EIO;
	}
	if (out->payload_len) {
		out->payload = malloc(out->payload_len);
		if (!out->payload)
			return -ENOMEM;
		memcpy(out->payload, payload, out->payload_len);
	}
	return 0;
}

int inode_put(struct nadb_store *st, uint64_t ino, const struct inode_rec *r,
	      const void *payload, size_t len)
{
	uint8_t key[INO_KEY_LEN];
	uint8_t small[INODE_REC_MAX + 256];
	uint8_t *buf = len <= 256 ? small : malloc(INODE_REC_MAX + len);
	if (!buf)
		return -ENOMEM;
	size_t n = inode_encode(r, buf);
	if (len)
		memcpy(buf + n, payload, len);
	int rc = st->kv->ops->put(st->kv, KV_INODES, key, ino_key(key, ino), buf, n + len);
	if (buf != small)
		free(buf);
	return rc;
}

void inode_release(struct inode *in)
{
	free(in->payload);
	in->payload = NULL;
}

static struct timespec ts_of_ns(int64_t ns)
{
	struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000;
	}
	return ts;
}

void attr_of_inode(const struct nadb_store *st, uint64_t ino,
		   const struct inode_rec *r, struct nadb_attr *a)
{
	(void)st;
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	a->mode = r->mode;
	a->nlink = r->nlink;
	a->uid = r->uid;
	a->gid = r->gid;
	a->rdev = r->rdev;
	a->size = r->size;
	/* du shows what the store really uses (as of the last write). */
	a->blocks = S_ISREG(r->mode) ? (r->stored + 511) / 512 : 0;
	a->atime = ts_of_ns(r->atime);
	a->mtime = ts_of_ns(r->mtime);
	a->ctime = ts_of_ns(r->ctime);
	a->btime = ts_of_ns(r->btime);
	a->level = r->level;
	a->expires_ns = r->expires;
}

struct key_list {
	uint8_t (*keys)[LINK_KEY_MAX];
	size_t *lens;
	size_t n, cap;
	uint8_t prefix[INO_KEY_LEN];
};

static int collect_prefixed(void *ctx, const void *key, size_t klen,
			    const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct key_list *l = ctx;
	if (klen < INO_KEY_LEN || memcmp(key, l->prefix, INO_KEY_LEN))
		return 1;
	if (klen > LINK_KEY_MAX)
		return 0;
	size_t keys_cap = l->cap, lens_cap = l->cap; /* two arrays, one length */
	if (ARRAY_GROW(l->keys, l->n, keys_cap) || ARRAY_GROW(l->lens, l->n, lens_cap))
		return -ENOMEM;
	l->cap = keys_cap;
	memcpy(l->keys[l->n], key, klen);
	l->lens[l->n++] = klen;
	return 0;
}

int delete_prefixed(struct nadb_store *st, enum kv_table t, uint64_t ino,
		    int (*each)(struct nadb_store *, const void *val, size_t vlen))
{
	struct key_list l = {0};
	ino_key(l.prefix, ino);
	int rc = st->kv->ops->scan_prefix(st->kv, t, l.prefix, INO_KEY_LEN, collect_prefixed, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		if (each) {
			struct kv_val v;
			rc = st->kv->ops->get(st->kv, t, l.keys[i], l.lens[i], &v);
			if (!rc)
				rc = each(st, v.data, v.len);
			if (rc)
				break;
		}
		rc = st->kv->ops->del(st->kv, t, l.keys[i], l.lens[i]);
	}
	free(l.keys);
	free(l.lens);
	return rc;
}

int inode_delete(struct nadb_store *st, uint64_t ino)
{
	struct inode in;
	int rc = inode_get(st, ino, &in);
	if (rc)
		return rc;
	rc = index_inode_deleting(st, ino, &in.r);
	if (!rc && S_ISREG(in.r.mode)) {
		for (size_t off = 0; !rc && off + CHUNK_HASH_LEN <= in.payload_len;
		     off += CHUNK_HASH_LEN)
			if (!chunk_is_hole(in.payload + off))
				rc = chunk_unref(&st->chunks, ino, in.payload + off);
	}
	inode_release(&in);
	if (!rc)
		rc = delete_prefixed(st, KV_XATTRS, ino, NULL);
	if (!rc)
		rc = delete_prefixed(st, KV_LINKS, ino, NULL);
	uint8_t key[INO_KEY_LEN];
	if (!rc)
		rc = st->kv->ops->del(st->kv, KV_INODES, key, ino_key(key, ino));
	return rc;
}

static int collect_link(void *ctx, const void *key, size_t klen, const void *val,
			size_t vlen)
{
	(void)val;
	(void)vlen;
	struct link_list *l = ctx;
	if (klen <= 2 * INO_KEY_LEN || klen > LINK_KEY_MAX ||
	    memcmp(key, l->prefix, INO_KEY_LEN))
		return 1;
	size_t parents_cap = l->cap, names_cap = l->cap; /* two arrays, one length */
	if (ARRAY_GROW(l->parents, l->n, parents_cap) || ARRAY_GROW(l->names, l->n, names_cap))
		return -ENOMEM;
	l->cap = parents_cap;
	uint64_t parent;
	memcpy(&parent, (const uint8_t *)key + INO_KEY_LEN, 8);
	l->parents[l->n] = be64toh(parent);
	size_t len = klen - 2 * INO_KEY_LEN;
	memcpy(l->names[l->n], (const uint8_t *)key + 2 * INO_KEY_LEN, len);
	l->names[l->n++][len] = 0;
	return 0;
}

int inode_links(struct nadb_store *st, uint64_t ino, struct link_list *l)
{
	*l = (struct link_list){0};
	ino_key(l->prefix, ino);
	int rc = st->kv->ops->scan_prefix(st->kv, KV_LINKS, l->prefix, INO_KEY_LEN, collect_link, l);
	if (rc < 0)
		link_list_free(l);
	return rc < 0 ? rc : 0;
}

void link_list_free(struct link_list *l)
{
	free(l->parents);
	free(l->names);
	*l = (struct link_list){0};
}
struct first {
	uint8_t prefix[INO_KEY_LEN];
	uint64_t parent;
	char *name; /* NADB_NAME_MAX + 1 bytes */
	bool found;
};

static int first_link_row(void *ctx, const void *key, size_t klen, const void *val,
			  size_t vlen)
{
	(void)val;
	(void)vlen;
	struct first *f = ctx;
	if (klen > 2 * INO_KEY_LEN && klen <= LINK_KEY_MAX &&
	    !memcmp(key, f->prefix, INO_KEY_LEN)) {
		uint64_t p;
		memcpy(&p, (const uint8_t *)key + INO_KEY_LEN, 8);
		f->parent = be64toh(p);
		memcpy(f->name, (const uint8_t *)key + 2 * INO_KEY_LEN, klen - 2 * INO_KEY_LEN);
		f->name[klen - 2 * INO_KEY_LEN] = 0;
		f->found = true;
	}
	return 1;
}

int inode_first_name(struct nadb_store *st, uint64_t ino, uint64_t *parent, char *name)
{
	struct first f = {.name = name};
	ino_key(f.prefix, ino);
	int rc = st->kv->ops->scan_prefix(st->kv, KV_LINKS, f.prefix, INO_KEY_LEN, first_link_row, &f);
	if (!rc && !f.found)
		rc = -ENOENT;
	*parent = f.parent;
	return rc;
}

int inode_path(struct nadb_store *st, uint64_t ino, char *out, size_t size)
{
	char name[NADB_NAME_MAX + 1], tail[4096] = "";
	assert(size > 0);
	/* Up the links to the root; a bounded depth, as a damaged store may
	 * hold a cycle. */
	for (int depth = 0; ino != NADB_ROOT_INO; depth++) {
		uint64_t parent;
		int rc = depth < 256 ? inode_first_name(st, ino, &parent, name) : -ELOOP;
		if (rc) {
			snprintf(out, size, "(inode %llu)%s", (unsigned long long)ino, tail);
			return rc;
		}
		/* "/NAME" goes in front of the tail (cut at 4095 bytes). */
		size_t n = strlen(name) + 1, have = strlen(tail);
		if (n + have >= sizeof(tail))
			have = sizeof(tail) - 1 - n;
		memmove(tail + n, tail, have);
		tail[0] = '/';
		memcpy(tail + 1, name, n - 1);
		tail[n + have] = '\0';
		ino = parent;
	}
	snprintf(out, size, "%s", tail[0] ? tail : "/");
	return 0;
}
