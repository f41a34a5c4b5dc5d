/* xattr.c -- user.* extended attributes, kept per inode as rows
 * (ino, name) -> value, so listing them is one short cursor walk and they
 * go with the inode when its last link does.  Other namespaces (trusted.,
 * security., system.) are not ours to keep: -EOPNOTSUPP. */
#include "store_int.h"

#include <stdbool.h>

#include <errno.h>
#include <string.h>

#define XATTR_VALUE_MAX 65536

static int check_xattr_name(const char *name)
{
	size_t n = strlen(name);
	if (strncmp(name, "user.", 5))
		return -EOPNOTSUPP;
	if (n == 5)
		return -EINVAL;
	return n > NADB_NAME_MAX ? -ERANGE : 0;
}

/* Attributes the engine computes rather than stores. */
static bool is_expiry_xattr(const char *name)
{
	return !strcmp(name, "user.ttl") || !strcmp(name, "user.expires");
}

static bool is_computed(const char *name)
{
	return keymeta_is_name(name);
}

static bool is_tag_xattr(const char *name)
{
	return !strcmp(name, "user.tags") || !strncmp(name, "user.tag.", 9);
}

/* The inode must exist: -ENOENT otherwise.  Under meta_lock. */
static int check_inode(struct nadb_store *st, uint64_t ino)
{
	uint8_t key[INO_KEY_LEN];
	struct kv_val v;
	return st->kv->ops->get(st->kv, KV_INODES, key, ino_key(key, ino), &v);
}

/* Setting an xattr changes the inode's ctime. */
static int touch_ctime(struct nadb_store *st, uint64_t ino)
{
	struct inode in;
	int rc = inode_get(st, ino, &in);
	if (rc)
		return rc;
	in.r.ctime = now_ns();
	rc = inode_put(st, ino, &in.r, in.payload, in.payload_len);
	inode_release(&in);
	return rc;
}

/* Tags, expiry and user.nadb.*: attributes the store makes up from what
 * it keeps, rather than keeps as given. */
static bool is_made_up(const char *name)
{
	return is_expiry_xattr(name) || is_tag_xattr(name) || is_computed(name);
}

/* A made-up attribute's value (the xattr size protocol).  Under meta_lock. */
static ssize_t made_up_get(struct nadb_store *st, uint64_t ino, const char *name, void *buf,
			   size_t size)
{
	return is_expiry_xattr(name) ? expiry_xattr_get(st, ino, name, buf, size)
	       : is_tag_xattr(name)  ? tags_xattr_get(st, ino, name, buf, size)
				     : keymeta_get(st, ino, name, buf, size);
}

/* XATTR_CREATE and XATTR_REPLACE against an attribute the store makes up
 * (tags, expiry, user.nadb.*): whether it exists is what reading it says.
 * Under meta_lock. */
static int check_create_replace(struct nadb_store *st, uint64_t ino, const char *name,
				int flags)
{
	if (!(flags & (NADB_XATTR_CREATE | NADB_XATTR_REPLACE)))
		return 0;
	ssize_t n = made_up_get(st, ino, name, NULL, 0);
	if (n >= 0)
		return flags & NADB_XATTR_CREATE ? -EEXIST : 0;
	if (n == -ENODATA)
		return flags & NADB_XATTR_REPLACE ? -ENODATA : 0;
	return (int)n;
}

int nadb_setxattr(struct nadb_store *st, uint64_t ino, const char *name,
		  const void *value, size_t size, int flags, const struct nadb_caller *who)
{
	int rc = check_xattr_name(name);
	if (rc)
		return rc;
	if (size > XATTR_VALUE_MAX)
		return -E2BIG;
	uint8_t key[NAME_KEY_MAX];
	size_t klen = name_key(key, ino, name);
	pthread_mutex_lock(&st->meta_lock);
	struct kv_val v;
	rc = check_inode(st, ino);
	bool made_up = is_made_up(name);
	if (!rc && made_up)
		rc = check_create_replace(st, ino, name, flags);
	if (!rc && is_tag_xattr(name))
		rc = tags_register(st, ino, name, value, size);
	if (!rc && made_up) {
		if (!(rc = step_begin(st))) {
			rc = is_tag_xattr(name) ? tags_xattr_set(st, ino, name, value, size)
			     : is_computed(name) ? keymeta_set(st, ino, name, value, size, who)
						 : expiry_xattr_set(st, ino, name, value, size, who);
			/* a key's tags changed: its ctime says so, as for any xattr */
			if (!rc && is_tag_xattr(name))
				rc = touch_ctime(st, ino);
			rc = step_end(st, rc);
		}
		store_note_step(st);
		pthread_mutex_unlock(&st->meta_lock);
		return rc;
	}
	if (!rc) {
		int have = st->kv->ops->get(st->kv, KV_XATTRS, key, klen, &v);
		if (have && have != -ENOENT)
			rc = have;
		else if ((flags & NADB_XATTR_CREATE) && have == 0)
			rc = -EEXIST;
		else if ((flags & NADB_XATTR_REPLACE) && have == -ENOENT)
			rc = -ENODATA;
	}
	if (!rc && !(rc = step_begin(st))) {
		rc = st->kv->ops->put(st->kv, KV_XATTRS, key, klen, value, size);
		if (!rc)
			rc = touch_ctime(st, ino);
		rc = step_end(st, rc);
	}
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

ssize_t nadb_getxattr(struct nadb_store *st, uint64_t ino, const char *name,
		      void *buf, size_t size)
{
	int rc = check_xattr_name(name);
	if (rc)
		return rc == -EOPNOTSUPP ? -ENODATA : rc;
	uint8_t key[NAME_KEY_MAX];
	size_t klen = name_key(key, ino, name);
	struct kv_val v;
	pthread_mutex_lock(&st->meta_lock);
	ssize_t ret = check_inode(st, ino);
	if (!ret && is_made_up(name))
		ret = made_up_get(st, ino, name, buf, size);
	else if (!ret) {
		ret = st->kv->ops->get(st->kv, KV_XATTRS, key, klen, &v);
		if (ret == -ENOENT)
			ret = -ENODATA;
		else if (!ret && size && v.len > size)
			ret = -ERANGE;
		else if (!ret) {
			if (size)
				memcpy(buf, v.data, v.len);
			ret = (ssize_t)v.len;
		}
	}
	pthread_mutex_unlock(&st->meta_lock);
	return ret;
}

struct list_ctx {
	uint8_t prefix[INO_KEY_LEN];
	char *buf;
	size_t size, used;
	int err;
};

static int list_name(struct list_ctx *l, const char *name, size_t n)
{
	if (l->size && l->used + n + 1 > l->size)
		return -ERANGE;
	if (l->size) {
		memcpy(l->buf + l->used, name, n);
		l->buf[l->used + n] = 0;
	}
	l->used += n + 1;
	return 0;
}

/* The expiry under one name: a key's user.expires, a directory's user.ttl
 * (its default).  A key's user.ttl counts down, so listed it would differ
 * between any two reads, and a copy (rsync -X) would see a change every
 * time; user.expires is the same fact as a fixed time: a copy keeps it
 * exactly.  A key's user.ttl is still there to read and set by name. */
static int list_expiry(struct nadb_store *st, uint64_t ino, struct list_ctx *l)
{
	static const char *const names[] = {"user.expires", "user.ttl"};
	for (int i = 0; i < 2; i++) {
		char probe[40];
		ssize_t n = expiry_xattr_get(st, ino, names[i], probe, sizeof(probe));
		if (n == -ENODATA)
			continue;
		if (n < 0)
			return (int)n;
		int rc = list_name(l, names[i], strlen(names[i]));
		if (rc)
			return rc;
		break; /* a key with user.expires has a user.ttl too: not listed */
	}
	return 0;
}

/* Append the names FN lists: ask their size first, then copy them. */
static int list_more(struct nadb_store *st, uint64_t ino, struct list_ctx *l,
		     ssize_t (*fn)(struct nadb_store *, uint64_t, char *, size_t))
{
	ssize_t n = fn(st, ino, NULL, 0);
	if (n <= 0)
		return (int)n;
	if (l->size && l->used + (size_t)n > l->size)
		return -ERANGE;
	if (l->size && (n = fn(st, ino, l->buf + l->used, (size_t)n)) < 0)
		return (int)n;
	l->used += (size_t)n;
	return 0;
}

static int list_cb(void *ctx, const void *key, size_t klen, const void *val,
		   size_t vlen)
{
	(void)val;
	(void)vlen;
	struct list_ctx *l = ctx;
	if (klen <= INO_KEY_LEN || memcmp(key, l->prefix, INO_KEY_LEN))
		return 1;
	return list_name(l, (const char *)key + INO_KEY_LEN, klen - INO_KEY_LEN);
}

ssize_t nadb_listxattr(struct nadb_store *st, uint64_t ino, char *buf,
		       size_t size)
{
	struct list_ctx l = {.buf = buf, .size = size};
	ino_key(l.prefix, ino);
	pthread_mutex_lock(&st->meta_lock);
	int rc = check_inode(st, ino);
	if (!rc)
		rc = list_expiry(st, ino, &l);
	if (!rc)
		rc = list_more(st, ino, &l, tags_xattr_list);
	if (!rc)
		rc = list_more(st, ino, &l, keymeta_list);
	if (!rc)
		rc = st->kv->ops->scan_prefix(st->kv, KV_XATTRS, l.prefix, INO_KEY_LEN, list_cb, &l);
	pthread_mutex_unlock(&st->meta_lock);
	return rc ? rc : (ssize_t)l.used;
}

int nadb_removexattr(struct nadb_store *st, uint64_t ino, const char *name,
		     const struct nadb_caller *who)
{
	int rc = check_xattr_name(name);
	if (rc)
		return rc == -EOPNOTSUPP ? -ENODATA : rc;
	uint8_t key[NAME_KEY_MAX];
	size_t klen = name_key(key, ino, name);
	pthread_mutex_lock(&st->meta_lock);
	rc = check_inode(st, ino);
	if (!rc && is_computed(name)) {
		rc = keymeta_remove(st, ino, name);
	} else if (!rc && (is_expiry_xattr(name) || is_tag_xattr(name))) {
		if (!(rc = step_begin(st)))
			rc = step_end(st, is_tag_xattr(name) ? tags_xattr_remove(st, ino, name)
							     : expiry_xattr_remove(st, ino, name, who));
	} else if (!rc && !(rc = step_begin(st))) {
		rc = st->kv->ops->del(st->kv, KV_XATTRS, key, klen);
		if (rc == -ENOENT)
			rc = -ENODATA;
		if (!rc)
			rc = touch_ctime(st, ino);
		rc = step_end(st, rc);
	}
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}
