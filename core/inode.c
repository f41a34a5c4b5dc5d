/* inode.c -- inode records in the metadata tables, and their keys.
 *
 * An inode record is fixed-size attributes followed by a payload (a
 * regular file's chunk list, a symlink's target), so that reading a
 * key's value needs one index lookup for the list and one per chunk.
 */
#include "log.h"
#include "store_int.h"

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

int inode_get(struct nadb_store *st, uint64_t ino, struct inode *out)
{
	uint8_t key[INO_KEY_LEN];
	struct kv_val v;
	memset(out, 0, sizeof(*out));
	int rc = st->kv->ops->get(st->kv, KV_INODES, key, ino_key(key, ino), &v);
	if (rc)
		return rc;
	if (v.len < sizeof(out->r)) {
		nadb_log("inode %llu: record of %zu bytes is damaged",
			 (unsigned long long)ino, v.len);
		return -EIO;
	}
	memcpy(&out->r, v.data, sizeof(out->r));
	out->payload_len = v.len - sizeof(out->r);
	if (out->payload_len) {
		out->payload = malloc(out->payload_len);
		if (!out->payload)
			return -ENOMEM;
		memcpy(out->payload, (const uint8_t *)v.data + sizeof(out->r),
		       out->payload_len);
	}
	return 0;
}

int inode_put(struct nadb_store *st, uint64_t ino, const struct inode_rec *r,
	      const void *payload, size_t len)
{
	uint8_t key[INO_KEY_LEN];
	uint8_t small[sizeof(*r) + 256];
	uint8_t *buf = len <= 256 ? small : malloc(sizeof(*r) + len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, r, sizeof(*r));
	if (len)
		memcpy(buf + sizeof(*r), payload, len);
	int rc = st->kv->ops->put(st->kv, KV_INODES, key, ino_key(key, ino), buf,
				  sizeof(*r) + len);
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
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		void *k = realloc(l->keys, cap * sizeof(*l->keys));
		if (!k)
			return -ENOMEM;
		l->keys = k;
		void *n = realloc(l->lens, cap * sizeof(*l->lens));
		if (!n)
			return -ENOMEM;
		l->lens = n;
		l->cap = cap;
	}
	memcpy(l->keys[l->n], key, klen);
	l->lens[l->n++] = klen;
	return 0;
}

int delete_prefixed(struct nadb_store *st, enum kv_table t, uint64_t ino,
		    int (*each)(struct nadb_store *, const void *val, size_t vlen))
{
	struct key_list l = {0};
	ino_key(l.prefix, ino);
	int rc = st->kv->ops->scan(st->kv, t, l.prefix, INO_KEY_LEN, collect_prefixed, &l);
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
				rc = chunk_ref(&st->chunks, in.payload + off, -1);
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
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 4;
		void *p = realloc(l->parents, cap * sizeof(*l->parents));
		if (!p)
			return -ENOMEM;
		l->parents = p;
		void *n = realloc(l->names, cap * sizeof(*l->names));
		if (!n)
			return -ENOMEM;
		l->names = n;
		l->cap = cap;
	}
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
	int rc = st->kv->ops->scan(st->kv, KV_LINKS, l->prefix, INO_KEY_LEN, collect_link, l);
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

/* The first name of INO in the links table: its directory and name. */
static int first_name(struct nadb_store *st, uint64_t ino, uint64_t *parent, char *name)
{
	struct first f = {.name = name};
	ino_key(f.prefix, ino);
	int rc = st->kv->ops->scan(st->kv, KV_LINKS, f.prefix, INO_KEY_LEN, first_link_row, &f);
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
		int rc = depth < 256 ? first_name(st, ino, &parent, name) : -ELOOP;
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
