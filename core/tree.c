/* tree.c -- the namespace: databases, namespaces, keys and directories.
 *
 * A directory entry is a row (parent, name) -> inode in an ordered table,
 * so a directory lists in name order straight from a cursor and a lookup
 * is one index probe.  Every change here is one step: a rename that
 * replaces a key removes the victim and moves the source in the same
 * step, so no reader and no crash sees the key missing.
 */
#include "log.h"
#include "store_int.h"
#include "varint.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SYMLINK_MAX 4095

int nadb_check_name(const char *name, enum nadb_level parent_level)
{
	size_t n = strlen(name);
	if (n == 0 || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	if (n > NADB_NAME_MAX)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f || c == '/')
			return -EINVAL;
	}
	if (parent_level == NADB_LEVEL_ROOT && (name[0] == '.' || !strcmp(name, "tags")))
		return -EPERM;
	/* Databases and namespaces show their statistics as .stats. */
	if (parent_level <= NADB_LEVEL_NAMESPACE && !strcmp(name, ".stats"))
		return -EPERM;
	return 0;
}

static enum nadb_level child_level(enum nadb_level parent)
{
	return parent >= NADB_LEVEL_NAMESPACE ? NADB_LEVEL_INNER : parent + 1;
}

static int get_dir(struct nadb_store *st, uint64_t ino, struct inode *dir)
{
	int rc = inode_get(st, ino, dir);
	if (!rc && !S_ISDIR(dir->r.mode)) {
		inode_release(dir);
		rc = -ENOTDIR;
	}
	return rc;
}

_Static_assert(sizeof(struct dirent_val) == DIRENT_OLD_LEN, "the raw entries' size");
_Static_assert(DIRENT_VAL_MAX < DIRENT_OLD_LEN, "a compact entry is never taken for a raw one");

size_t dirent_encode(const struct dirent_val *d, uint8_t out[DIRENT_VAL_MAX])
{
	size_t n = varint_put(out, d->ino);
	out[n++] = (uint8_t)((d->mode & S_IFMT) >> 12);
	return n;
}

int dirent_decode(const void *val, size_t len, struct dirent_val *d)
{
	memset(d, 0, sizeof(*d));
	if (len == DIRENT_OLD_LEN) {
		memcpy(d, val, sizeof(*d));
		return 0;
	}
	const uint8_t *p = val, *end = p + len;
	if (!varint_get(&p, end, &d->ino) || end - p != 1 || *p > (S_IFMT >> 12))
		return -EIO;
	d->mode = (uint32_t)*p << 12;
	return 0;
}

static int find_entry(struct nadb_store *st, uint64_t parent, const char *name,
		      struct dirent_val *out)
{
	uint8_t key[NAME_KEY_MAX];
	struct kv_val v;
	int rc = st->kv->ops->get(st->kv, KV_DIRENTS, key, name_key(key, parent, name), &v);
	if (rc)
		return rc;
	if (dirent_decode(v.data, v.len, out)) {
		nadb_log("directory %llu: entry '%s' is damaged", (unsigned long long)parent,
			 name);
		return -EIO;
	}
	return 0;
}

/* The links table: (ino, parent, name) for every directory entry, so that
 * a key found by inode (expiry, tags) can be found by name too. */
static size_t link_key(uint8_t key[LINK_KEY_MAX], uint64_t ino, uint64_t parent,
		       const char *name)
{
	ino_key(key, ino);
	return INO_KEY_LEN + name_key(key + INO_KEY_LEN, parent, name);
}

static int set_link(struct nadb_store *st, uint64_t ino, uint32_t mode,
		    uint64_t parent, const char *name, bool present)
{
	uint8_t key[LINK_KEY_MAX];
	size_t klen = link_key(key, ino, parent, name);
	int rc;
	if (present) {
		rc = st->kv->ops->put(st->kv, KV_LINKS, key, klen, "", 0);
	} else {
		rc = st->kv->ops->del(st->kv, KV_LINKS, key, klen);
		if (rc == -ENOENT)
			rc = 0;
	}
	if (!rc)
		rc = index_link_changed(st, ino, mode, parent, name, present ? 1 : -1);
	return rc;
}

/* Point (parent, name) at INO, replacing whatever it named. */
static int put_entry(struct nadb_store *st, uint64_t parent, const char *name,
		     uint64_t ino, uint32_t mode)
{
	struct dirent_val old;
	int rc = find_entry(st, parent, name, &old);
	if (!rc && old.ino != ino)
		rc = set_link(st, old.ino, old.mode, parent, name, false);
	else if (rc == -ENOENT)
		rc = 0;
	if (rc)
		return rc;
	uint8_t key[NAME_KEY_MAX], val[DIRENT_VAL_MAX];
	struct dirent_val v = {.ino = ino, .mode = mode & S_IFMT};
	rc = st->kv->ops->put(st->kv, KV_DIRENTS, key, name_key(key, parent, name), val,
			      dirent_encode(&v, val));
	return rc ? rc : set_link(st, ino, mode, parent, name, true);
}

int tree_put_entry(struct nadb_store *st, uint64_t parent, const char *name,
		   uint64_t ino, uint32_t mode)
{
	return put_entry(st, parent, name, ino, mode);
}

static int del_entry(struct nadb_store *st, uint64_t parent, const char *name)
{
	struct dirent_val old;
	int rc = find_entry(st, parent, name, &old);
	if (rc)
		return rc;
	uint8_t key[NAME_KEY_MAX];
	rc = st->kv->ops->del(st->kv, KV_DIRENTS, key, name_key(key, parent, name));
	return rc ? rc : set_link(st, old.ino, old.mode, parent, name, false);
}

/* Inode numbers claimed at once: one round trip on Redis per this many
 * new nodes; a daemon that stops loses what it did not use. */
#define INO_BLOCK 64

/* A number for a new node in directory PARENT: in PARENT's partition, or
 * (NEW_PARTITION: a namespace's directory) the first of a partition of its
 * own. */
static int alloc_ino(struct nadb_store *st, uint64_t parent, bool new_partition,
		     uint64_t *ino)
{
	if (new_partition)
		return st->kv->ops->claim_inos(st->kv, 0, 1, ino);
	uint32_t part = kv_partition(parent);
	struct ino_block *b = NULL;
	for (unsigned i = 0; i < INO_BLOCKS && !b; i++)
		if (st->ino_blocks[i].part == part && st->ino_blocks[i].end)
			b = &st->ino_blocks[i];
	if (!b) {
		b = &st->ino_blocks[st->ino_block_victim++ % INO_BLOCKS];
		*b = (struct ino_block){.part = part};
	}
	assert(b->next <= b->end);
	if (b->next == b->end) {
		uint64_t first;
		int rc = st->kv->ops->claim_inos(st->kv, parent, INO_BLOCK, &first);
		if (rc)
			return rc;
		assert(kv_partition(first) == part);
		b->next = first;
		b->end = first + INO_BLOCK;
	}
	*ino = b->next++;
	return 0;
}

int tree_alloc_ino(struct nadb_store *st, uint64_t parent, int level, uint64_t *ino)
{
	return alloc_ino(st, parent, level == NADB_LEVEL_NAMESPACE, ino);
}

/* A directory's contents changed: its mtime and ctime move, and its link
 * count by NLINK_DELTA (subdirectories' ".." links). */
static int dir_changed(struct nadb_store *st, uint64_t ino, struct inode *dir,
		       int nlink_delta, int64_t now)
{
	dir->r.mtime = dir->r.ctime = now;
	dir->r.nlink = (uint32_t)((int64_t)dir->r.nlink + nlink_delta);
	return inode_put(st, ino, &dir->r, dir->payload, dir->payload_len);
}

static void lock_meta(struct nadb_store *st)
{
	pthread_mutex_lock(&st->meta_lock);
}

static void unlock_meta(struct nadb_store *st)
{
	store_note_step(st);
	pthread_mutex_unlock(&st->meta_lock);
}

int nadb_lookup(struct nadb_store *st, uint64_t parent, const char *name,
		struct nadb_attr *out)
{
	if (strlen(name) > NADB_NAME_MAX)
		return -ENAMETOOLONG;
	lock_meta(st);
	struct dirent_val e;
	struct inode in;
	int rc = find_entry(st, parent, name, &e);
	if (!rc)
		rc = inode_get(st, e.ino, &in);
	if (!rc) {
		if (inode_expired(&in.r, now_ns()))
			rc = -ENOENT;
		attr_of_inode(st, e.ino, &in.r, out);
		inode_release(&in);
	}
	unlock_meta(st);
	if (!rc)
		file_overlay_attr(st, out);
	return rc;
}

int nadb_getattr(struct nadb_store *st, uint64_t ino, struct nadb_attr *out)
{
	lock_meta(st);
	struct inode in;
	int rc = inode_get(st, ino, &in);
	if (!rc) {
		/* A named key past its time is gone, reaped or not; one that
		 * has no name left is only reached through a handle opened
		 * before, which reads on (and fstat with it). */
		if (in.r.nlink && inode_expired(&in.r, now_ns()))
			rc = -ENOENT;
		attr_of_inode(st, ino, &in.r, out);
		inode_release(&in);
	}
	unlock_meta(st);
	if (!rc)
		file_overlay_attr(st, out);
	return rc;
}

int nadb_parent(struct nadb_store *st, uint64_t ino, uint64_t *parent)
{
	lock_meta(st);
	struct inode in;
	int rc = get_dir(st, ino, &in);
	if (!rc) {
		*parent = in.r.parent;
		inode_release(&in);
	}
	unlock_meta(st);
	return rc;
}

/* Does entry E name a key whose time has come? */
static bool entry_expired(struct nadb_store *st, const struct dirent_val *e, int64_t now)
{
	struct inode in;
	if (S_ISDIR(e->mode) || inode_get(st, e->ino, &in))
		return false;
	bool expired = inode_expired(&in.r, now);
	inode_release(&in);
	return expired;
}

int tree_make_node(struct nadb_store *st, uint64_t parent, const char *name,
		   uint32_t mode, uint64_t rdev, const char *target,
		   const struct nadb_caller *who, uint64_t *ino_out, struct inode_rec *out)
{
	struct inode dir;
	int rc = get_dir(st, parent, &dir);
	if (rc)
		return rc;
	struct dirent_val e;
	rc = nadb_check_name(name, dir.r.level);
	if (!rc && !S_ISDIR(mode) && dir.r.level < NADB_LEVEL_NAMESPACE) {
		nadb_log("'%s': keys live in a namespace (/DB/NS/KEY), not in %s", name,
			 dir.r.level == NADB_LEVEL_ROOT ? "the root" : "a database");
		rc = -EPERM;
	}
	if (!rc && dir.r.nlink == 0)
		rc = -ENOENT; /* removed while we were looking */
	int64_t now = now_ns();
	bool replace_expired = false;
	if (!rc) {
		rc = find_entry(st, parent, name, &e);
		if (rc == 0) {
			replace_expired = entry_expired(st, &e, now);
			rc = replace_expired ? 0 : -EEXIST;
		} else if (rc == -ENOENT) {
			rc = 0;
		}
	}
	if (rc) {
		inode_release(&dir);
		return rc;
	}
	struct inode_rec r = {
		.mode = mode, .uid = who->uid, .gid = who->gid,
		.nlink = S_ISDIR(mode) ? 2 : 1, .rdev = rdev,
		.atime = now, .mtime = now, .ctime = now, .btime = now,
	};
	if (dir.r.mode & S_ISGID) {
		r.gid = dir.r.gid;
		if (S_ISDIR(mode))
			r.mode |= S_ISGID;
		else if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) &&
			 who->uid != 0 && !caller_in_group(who, r.gid))
			r.mode &= ~(uint32_t)S_ISGID;
	}
	if (S_ISDIR(mode)) {
		r.parent = parent;
		r.level = child_level(dir.r.level);
	} else {
		int64_t ttl = expiry_default_for(st, parent);
		r.expires = ttl ? expiry_after(now, ttl) : 0;
	}
	size_t tlen = target ? strlen(target) : 0;
	r.size = tlen;
	uint64_t ino = 0;
	if (replace_expired)
		rc = tree_remove_entry(st, parent, name, now);
	if (!rc)
		rc = alloc_ino(st, parent, S_ISDIR(mode) && r.level == NADB_LEVEL_NAMESPACE,
			       &ino);
	if (!rc)
		rc = inode_put(st, ino, &r, target, tlen);
	if (!rc && r.expires)
		rc = expiry_index(st, ino, 0, r.expires);
	if (!rc)
		rc = put_entry(st, parent, name, ino, mode);
	if (!rc)
		rc = dir_changed(st, parent, &dir, S_ISDIR(mode) ? 1 : 0, now);
	inode_release(&dir);
	if (!rc) {
		*ino_out = ino;
		*out = r;
	}
	return rc;
}

/* Make the inode and its entry in a step of its own; the caller holds
 * meta_lock. */
static int make_node(struct nadb_store *st, uint64_t parent, const char *name,
		     uint32_t mode, uint64_t rdev, const char *target,
		     const struct nadb_caller *who, struct nadb_attr *out)
{
	uint64_t ino;
	struct inode_rec r;
	int rc = step_begin(st);
	if (rc)
		return rc;
	rc = step_end(st, tree_make_node(st, parent, name, mode, rdev, target, who, &ino, &r));
	if (!rc)
		attr_of_inode(st, ino, &r, out);
	return rc;
}

int nadb_mknod(struct nadb_store *st, uint64_t parent, const char *name,
	       uint32_t mode, uint64_t rdev, const struct nadb_caller *who,
	       struct nadb_attr *out)
{
	/* Device nodes are metadata only, like FIFOs and sockets: the daemon
	 * mounts with nodev, so none can be opened as a device. */
	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFIFO: case S_IFSOCK:
	case S_IFBLK: case S_IFCHR:
		break;
	case 0:
		mode |= S_IFREG;
		break;
	default:
		nadb_log("'%s': file type 0%o is not one a store keeps", name,
			 (unsigned)(mode & S_IFMT));
		return -EINVAL;
	}
	if (!S_ISBLK(mode) && !S_ISCHR(mode))
		rdev = 0;
	lock_meta(st);
	int rc = make_node(st, parent, name, mode, rdev, NULL, who, out);
	unlock_meta(st);
	return rc;
}

int nadb_symlink(struct nadb_store *st, uint64_t parent, const char *name,
		 const char *target, const struct nadb_caller *who,
		 struct nadb_attr *out)
{
	size_t n = strlen(target);
	if (n == 0)
		return -ENOENT;
	if (n > SYMLINK_MAX)
		return -ENAMETOOLONG;
	lock_meta(st);
	int rc = make_node(st, parent, name, S_IFLNK | 0777, 0, target, who, out);
	unlock_meta(st);
	return rc;
}

int nadb_readlink(struct nadb_store *st, uint64_t ino, char *buf, size_t size)
{
	lock_meta(st);
	struct inode in;
	int rc = inode_get(st, ino, &in);
	if (!rc && !S_ISLNK(in.r.mode))
		rc = -EINVAL;
	if (!rc && size) {
		size_t n = in.payload_len < size - 1 ? in.payload_len : size - 1;
		memcpy(buf, in.payload, n);
		buf[n] = 0;
	}
	if (!rc || rc == -EINVAL)
		inode_release(&in);
	unlock_meta(st);
	return rc;
}

int nadb_link(struct nadb_store *st, uint64_t ino, uint64_t newparent,
	      const char *newname, struct nadb_attr *out)
{
	lock_meta(st);
	struct inode in, dir;
	struct dirent_val e;
	int rc = inode_get(st, ino, &in);
	if (rc) {
		unlock_meta(st);
		return rc;
	}
	rc = S_ISDIR(in.r.mode) ? -EPERM
	     : in.r.nlink == 0 || inode_expired(&in.r, now_ns()) ? -ENOENT : 0;
	if (!rc)
		rc = get_dir(st, newparent, &dir);
	if (rc) {
		inode_release(&in);
		unlock_meta(st);
		return rc;
	}
	rc = nadb_check_name(newname, dir.r.level);
	if (!rc && dir.r.level < NADB_LEVEL_NAMESPACE)
		rc = -EPERM;
	/* a second name in another namespace: two partitions (one_partition) */
	if (!rc && st->kv->apart && kv_partition(newparent) != kv_partition(ino)) {
		nadb_log("link '%s': a second name in another namespace would write two "
			 "partitions, which a Redis Cluster keeps apart: EXDEV", newname);
		rc = -EXDEV;
	}
	if (!rc) {
		rc = find_entry(st, newparent, newname, &e);
		rc = rc == 0 ? -EEXIST : rc == -ENOENT ? 0 : rc;
	}
	int64_t now = now_ns();
	if (!rc && !(rc = step_begin(st))) {
		in.r.nlink++;
		in.r.ctime = now;
		rc = inode_put(st, ino, &in.r, in.payload, in.payload_len);
		if (!rc)
			rc = put_entry(st, newparent, newname, ino, in.r.mode);
		if (!rc)
			rc = dir_changed(st, newparent, &dir, 0, now);
		rc = step_end(st, rc);
	}
	if (!rc)
		attr_of_inode(st, ino, &in.r, out);
	inode_release(&in);
	inode_release(&dir);
	unlock_meta(st);
	if (!rc)
		file_overlay_attr(st, out);
	return rc;
}

/* Drop one link of INO (its entry is already gone); when it was the last,
 * the inode goes too, or waits for its last close.  Inside a step. */
static int drop_link(struct nadb_store *st, uint64_t ino, int64_t now)
{
	struct inode in;
	int rc = inode_get(st, ino, &in);
	if (rc)
		return rc;
	if (S_ISDIR(in.r.mode) || in.r.nlink <= 1) {
		rc = index_last_link_gone(st, ino);
		if (rc) {
		} else if (!S_ISDIR(in.r.mode) &&
			   (file_is_open(st, ino) || file_kernel_holds(st, ino))) {
			in.r.nlink = 0;
			in.r.ctime = now;
			rc = inode_put(st, ino, &in.r, in.payload, in.payload_len);
			if (!rc) /* ours to delete once we let go */
				rc = store_put_orphan(st, ino);
		} else {
			rc = inode_delete(st, ino);
		}
	} else {
		in.r.nlink--;
		in.r.ctime = now;
		rc = inode_put(st, ino, &in.r, in.payload, in.payload_len);
	}
	inode_release(&in);
	return rc;
}

static int dir_is_empty_cb(void *ctx, const void *key, size_t klen,
			   const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	const uint8_t *prefix = ctx;
	/* First key at or after the prefix: ours means not empty. */
	return klen >= INO_KEY_LEN && !memcmp(key, prefix, INO_KEY_LEN) ? -ENOTEMPTY : 1;
}

static int check_empty(struct nadb_store *st, uint64_t ino)
{
	uint8_t prefix[INO_KEY_LEN];
	ino_key(prefix, ino);
	return st->kv->ops->scan_prefix(st->kv, KV_DIRENTS, prefix, INO_KEY_LEN,
				 dir_is_empty_cb, prefix);
}

int tree_remove_entry(struct nadb_store *st, uint64_t parent, const char *name,
		      int64_t now)
{
	struct inode dir;
	struct dirent_val e;
	int rc = get_dir(st, parent, &dir);
	if (rc)
		return rc;
	rc = find_entry(st, parent, name, &e);
	if (!rc)
		rc = del_entry(st, parent, name);
	if (!rc)
		rc = drop_link(st, e.ino, now);
	if (!rc)
		rc = dir_changed(st, parent, &dir, 0, now);
	inode_release(&dir);
	return rc;
}

int nadb_unlink(struct nadb_store *st, uint64_t parent, const char *name)
{
	lock_meta(st);
	struct dirent_val e;
	int64_t now = now_ns();
	int rc = find_entry(st, parent, name, &e);
	if (!rc && S_ISDIR(e.mode))
		rc = -EISDIR;
	if (!rc && entry_expired(st, &e, now))
		rc = -ENOENT;
	if (!rc && !(rc = step_begin(st)))
		rc = step_end(st, tree_remove_entry(st, parent, name, now));
	unlock_meta(st);
	return rc;
}

int nadb_rmdir(struct nadb_store *st, uint64_t parent, const char *name)
{
	lock_meta(st);
	struct inode dir;
	struct dirent_val e;
	int rc = get_dir(st, parent, &dir);
	if (rc) {
		unlock_meta(st);
		return rc;
	}
	rc = find_entry(st, parent, name, &e);
	if (!rc && !S_ISDIR(e.mode))
		rc = -ENOTDIR;
	if (!rc)
		rc = check_empty(st, e.ino);
	int64_t now = now_ns();
	if (!rc && !(rc = step_begin(st))) {
		rc = del_entry(st, parent, name);
		if (!rc)
			rc = inode_delete(st, e.ino);
		if (!rc)
			rc = dir_changed(st, parent, &dir, -1, now);
		rc = step_end(st, rc);
	}
	inode_release(&dir);
	unlock_meta(st);
	return rc;
}

/* Is directory ANCESTOR on the way from DIR up to the root? */
static int is_ancestor(struct nadb_store *st, uint64_t ancestor, uint64_t dir)
{
	for (int depth = 0; depth < 4096; depth++) {
		if (dir == ancestor)
			return 1;
		if (dir == NADB_ROOT_INO)
			return 0;
		struct inode in;
		int rc = get_dir(st, dir, &in);
		if (rc)
			return rc;
		dir = in.r.parent;
		inode_release(&in);
	}
	return -ELOOP;
}

/* May a node of mode MODE (a directory of level LEVEL) sit in a directory
 * of level TO?  Directories keep their kind: a database stays a database;
 * namespaces and inner directories may trade places, since what they hold
 * is valid in both.  Anything else is -EXDEV, so mv copies instead. */
static int check_move(uint32_t mode, uint8_t level, uint8_t to)
{
	if (!S_ISDIR(mode))
		return to >= NADB_LEVEL_NAMESPACE ? 0 : -EPERM;
	uint8_t now = child_level(to);
	if (now == level || (now >= NADB_LEVEL_NAMESPACE && level >= NADB_LEVEL_NAMESPACE))
		return 0;
	return -EXDEV;
}

struct rename_side {
	uint64_t parent;
	const char *name;
	struct inode dir;
	struct dirent_val e;
	struct inode node;
	bool exists;
	bool expired; /* there is an entry, but its key's time has come */
};

static int load_side(struct nadb_store *st, struct rename_side *s)
{
	int rc = get_dir(st, s->parent, &s->dir);
	if (rc)
		return rc;
	rc = find_entry(st, s->parent, s->name, &s->e);
	if (rc == -ENOENT)
		return 0;
	if (!rc)
		rc = inode_get(st, s->e.ino, &s->node);
	s->exists = rc == 0 && !inode_expired(&s->node.r, now_ns());
	s->expired = rc == 0 && !s->exists;
	return rc;
}

/* Point (side's parent, name) at NODE and fix the node's parent/level. */
static int place(struct nadb_store *st, struct rename_side *to,
		 uint64_t ino, struct inode *node, int64_t now)
{
	int rc = put_entry(st, to->parent, to->name, ino, node->r.mode);
	if (rc)
		return rc;
	node->r.ctime = now;
	if (S_ISDIR(node->r.mode)) {
		node->r.parent = to->parent;
		node->r.level = child_level(to->dir.r.level);
	}
	return inode_put(st, ino, &node->r, node->payload, node->payload_len);
}

/* Do both parents and the inodes renamed or replaced live in one
 * partition?  Where partitions commit apart (kv.apart: a Redis Cluster)
 * a step must stay in one, so a rename that would write two -- a key
 * moved to another namespace, a namespace renamed or moved (its entry is
 * in its database's partition, its rows in its own) -- is refused as one
 * across file systems (EXDEV): mv then copies and removes. */
static bool one_partition(const struct rename_side *a, const struct rename_side *b)
{
	uint32_t p = kv_partition(a->parent);
	return kv_partition(b->parent) == p && kv_partition(a->e.ino) == p &&
	       (!b->exists || kv_partition(b->e.ino) == p);
}

static int rename_locked(struct nadb_store *st, struct rename_side *a,
			 struct rename_side *b, unsigned flags)
{
	int rc = load_side(st, a);
	if (!rc && !a->exists)
		rc = -ENOENT;
	if (!rc)
		rc = load_side(st, b);
	if (!rc)
		rc = nadb_check_name(b->name, b->dir.r.level);
	if (rc)
		return rc;
	bool same_dir = a->parent == b->parent;
	if (b->exists && a->e.ino == b->e.ino)
		return (flags & NADB_RENAME_NOREPLACE) ? -EEXIST : 0;
	if ((flags & NADB_RENAME_NOREPLACE) && b->exists)
		return -EEXIST;
	if ((flags & NADB_RENAME_EXCHANGE) && !b->exists)
		return -ENOENT;
	bool a_dir = S_ISDIR(a->node.r.mode);
	bool b_dir = b->exists && S_ISDIR(b->node.r.mode);
	if (!(flags & NADB_RENAME_EXCHANGE) && b->exists) {
		if (a_dir && !b_dir)
			return -ENOTDIR;
		if (!a_dir && b_dir)
			return -EISDIR;
		if (b_dir && (rc = check_empty(st, b->e.ino)))
			return rc;
	}
	if (a_dir && (rc = is_ancestor(st, a->e.ino, b->parent)))
		return rc < 0 ? rc : -EINVAL;
	if ((flags & NADB_RENAME_EXCHANGE) && b_dir &&
	    (rc = is_ancestor(st, b->e.ino, a->parent)))
		return rc < 0 ? rc : -EINVAL;
	rc = check_move(a->node.r.mode, a->node.r.level, b->dir.r.level);
	if (!rc && (flags & NADB_RENAME_EXCHANGE))
		rc = check_move(b->node.r.mode, b->node.r.level, a->dir.r.level);
	if (rc) {
		if (rc == -EPERM)
			nadb_log("rename '%s': keys live in a namespace (/DB/NS/KEY)", a->name);
		return rc;
	}
	if (st->kv->apart && !one_partition(a, b)) {
		nadb_log("rename '%s': it would write two partitions, which a Redis Cluster "
			 "keeps apart: EXDEV (mv copies)", a->name);
		return -EXDEV;
	}
	int64_t now = now_ns();
	int a_links = 0, b_links = 0; /* changes to the parents' link counts */
	if ((rc = step_begin(st)))
		return rc;
	if (b->expired)
		rc = tree_remove_entry(st, b->parent, b->name, now);
	struct index_move ma = {{0}}, mb = {{0}};
	uint8_t a_level = a->node.r.level, b_level = b->exists ? b->node.r.level : 0;
	bool exchange = flags & NADB_RENAME_EXCHANGE;
	/* What the indexes keep of a directory leaves with it... */
	if (!rc && a_dir)
		rc = index_dir_leaving(st, a->e.ino, a->parent, a->name, &ma);
	if (!rc && exchange && b_dir)
		rc = index_dir_leaving(st, b->e.ino, b->parent, b->name, &mb);
	if (rc) {
	} else if (exchange) {
		rc = place(st, b, a->e.ino, &a->node, now);
		if (!rc)
			rc = place(st, a, b->e.ino, &b->node, now);
		a_links = (b_dir ? 1 : 0) - (a_dir ? 1 : 0);
		b_links = -a_links;
	} else {
		if (b->exists) {
			rc = del_entry(st, b->parent, b->name);
			if (!rc)
				rc = b_dir ? inode_delete(st, b->e.ino) : drop_link(st, b->e.ino, now);
		}
		if (!rc)
			rc = del_entry(st, a->parent, a->name);
		if (!rc)
			rc = place(st, b, a->e.ino, &a->node, now);
		a_links = a_dir ? -1 : 0;
		b_links = (a_dir ? 1 : 0) - (b_dir ? 1 : 0);
	}
	/* ...and arrives with it at its new place. */
	if (!rc && a_dir)
		rc = index_dir_arrived(st, a->e.ino, a_level, a->parent, b->parent, b->name, &ma);
	if (!rc && exchange && b_dir)
		rc = index_dir_arrived(st, b->e.ino, b_level, b->parent, a->parent, a->name, &mb);
	index_move_free(st, &ma);
	index_move_free(st, &mb);
	if (same_dir) {
		if (!rc)
			rc = dir_changed(st, a->parent, &a->dir, a_links + b_links, now);
	} else {
		if (!rc)
			rc = dir_changed(st, a->parent, &a->dir, a_links, now);
		if (!rc)
			rc = dir_changed(st, b->parent, &b->dir, b_links, now);
	}
	return step_end(st, rc);
}

int nadb_rename(struct nadb_store *st, uint64_t parent, const char *name,
		uint64_t newparent, const char *newname, unsigned flags)
{
	if ((flags & NADB_RENAME_NOREPLACE) && (flags & NADB_RENAME_EXCHANGE))
		return -EINVAL;
	struct rename_side a = {.parent = parent, .name = name};
	struct rename_side b = {.parent = newparent, .name = newname};
	lock_meta(st);
	int rc = rename_locked(st, &a, &b, flags);
	unlock_meta(st);
	inode_release(&a.dir);
	inode_release(&a.node);
	inode_release(&b.dir);
	inode_release(&b.node);
	return rc;
}

struct readdir_ctx {
	struct nadb_store *st;
	uint8_t start[NAME_KEY_MAX];
	size_t start_len;
	bool skip_start;
	bool want_attr;
	bool check_expiry;
	int64_t now;
	nadb_dirent_fn fn;
	void *ctx;
};

static int readdir_cb(void *ctx, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	struct readdir_ctx *r = ctx;
	if (klen <= INO_KEY_LEN || klen > NAME_KEY_MAX || memcmp(key, r->start, INO_KEY_LEN))
		return 1; /* past this directory */
	if (r->skip_start && klen == r->start_len && !memcmp(key, r->start, klen))
		return 0;
	struct dirent_val e;
	if (dirent_decode(val, vlen, &e))
		return -EIO;
	char name[NADB_NAME_MAX + 1];
	memcpy(name, (const uint8_t *)key + INO_KEY_LEN, klen - INO_KEY_LEN);
	name[klen - INO_KEY_LEN] = 0;
	struct nadb_attr a = {.ino = e.ino, .mode = e.mode};
	if (r->want_attr || (r->check_expiry && !S_ISDIR(e.mode))) {
		struct inode in;
		int rc = inode_get(r->st, e.ino, &in);
		if (rc)
			return rc == -ENOENT ? -EIO : rc;
		if (r->check_expiry && inode_expired(&in.r, r->now)) {
			inode_release(&in);
			return 0;
		}
		attr_of_inode(r->st, e.ino, &in.r, &a);
		inode_release(&in);
		file_overlay_attr(r->st, &a);
	}
	return r->fn(r->ctx, name, &a);
}

int nadb_readdir(struct nadb_store *st, uint64_t ino, const char *after,
		 bool want_attr, nadb_dirent_fn fn, void *ctx)
{
	struct readdir_ctx r = {.st = st, .want_attr = want_attr, .fn = fn, .ctx = ctx};
	r.start_len = after ? name_key(r.start, ino, after) : ino_key(r.start, ino);
	r.skip_start = after != NULL;
	lock_meta(st);
	struct inode dir;
	int rc = get_dir(st, ino, &dir);
	if (!rc) {
		inode_release(&dir);
		r.now = now_ns();
		r.check_expiry = expiry_any_due(st, r.now);
		rc = st->kv->ops->scan(st->kv, KV_DIRENTS, r.start, r.start_len,
				       readdir_cb, &r);
	}
	unlock_meta(st);
	return rc < 0 ? rc : 0;
}

int nadb_setattr(struct nadb_store *st, uint64_t ino, const struct nadb_attr *in,
		 unsigned to_set, struct nadb_attr *out)
{
	int rc = 0;
	if (to_set & NADB_SET_SIZE) {
		rc = file_set_size(st, ino, in->size);
		if (rc)
			return rc;
	}
	lock_meta(st);
	struct inode node;
	rc = inode_get(st, ino, &node);
	if (rc) {
		unlock_meta(st);
		return rc;
	}
	int64_t now = now_ns();
	struct inode_rec *r = &node.r;
	if (to_set & NADB_SET_MODE)
		r->mode = (r->mode & S_IFMT) | (in->mode & 07777);
	if (to_set & NADB_SET_UID)
		r->uid = in->uid;
	if (to_set & NADB_SET_GID)
		r->gid = in->gid;
	if (to_set & NADB_SET_ATIME_NOW)
		r->atime = now;
	else if (to_set & NADB_SET_ATIME)
		r->atime = (int64_t)in->atime.tv_sec * 1000000000 + in->atime.tv_nsec;
	if (to_set & NADB_SET_MTIME_NOW)
		r->mtime = now;
	else if (to_set & NADB_SET_MTIME)
		r->mtime = (int64_t)in->mtime.tv_sec * 1000000000 + in->mtime.tv_nsec;
	if (to_set & NADB_SET_CTIME)
		r->ctime = (int64_t)in->ctime.tv_sec * 1000000000 + in->ctime.tv_nsec;
	else
		r->ctime = now;
	if (!(rc = step_begin(st))) {
		rc = inode_put(st, ino, r, node.payload, node.payload_len);
		rc = step_end(st, rc);
	}
	if (!rc)
		attr_of_inode(st, ino, r, out);
	inode_release(&node);
	unlock_meta(st);
	if (!rc) {
		file_note_times(st, ino, r->mtime, r->ctime);
		file_overlay_attr(st, out);
	}
	return rc;
}

int64_t setid_killed(uint32_t mode, uint32_t gid, const struct nadb_caller *who,
			    bool groups_known)
{
	if (S_ISDIR(mode) || !(mode & (S_ISUID | S_ISGID)))
		return mode;
	mode &= ~(uint32_t)S_ISUID;
	if (!(mode & S_ISGID))
		return mode;
	/* without group execute, a member (or root) keeps it (Linux >= 6.2) */
	bool drop = (mode & S_IXGRP) != 0;
	if (!drop && who->uid != 0 && !caller_in_group(who, gid)) {
		if (!groups_known)
			return -EAGAIN;
		drop = true;
	}
	return drop ? mode & ~(uint32_t)S_ISGID : mode;
}

int nadb_kill_setid(struct nadb_store *st, uint64_t ino, const struct nadb_caller *who,
		    bool groups_known)
{
	lock_meta(st);
	/* every write by a user asks: the record alone says there is nothing */
	struct inode_rec rec;
	int rc = inode_get_rec(st, ino, &rec);
	int64_t mode = rc ? rc : setid_killed(rec.mode, rec.gid, who, groups_known);
	if (mode < 0 || (uint32_t)mode == rec.mode) {
		unlock_meta(st);
		return mode == -ENOENT ? 0 : mode < 0 ? (int)mode : 0;
	}
	struct inode node;
	rc = inode_get(st, ino, &node);
	if (!rc) {
		node.r.mode = (uint32_t)mode;
		node.r.ctime = now_ns();
		if (!(rc = step_begin(st))) {
			rc = inode_put(st, ino, &node.r, node.payload, node.payload_len);
			rc = step_end(st, rc);
		}
	}
	int64_t ctime = node.r.ctime;
	inode_release(&node);
	unlock_meta(st);
	/* the change's ctime, not its mtime: an open file's pending writes
	 * keep theirs */
	if (!rc)
		file_note_times(st, ino, FILE_TIME_KEPT, ctime);
	return rc ? rc : 1;
}

int tree_resolve_key(struct nadb_store *st, const char *path,
		     const struct nadb_caller *who, uint64_t *parent,
		     char name[NADB_NAME_MAX + 1], uint64_t *ino)
{
	uint64_t dir = NADB_ROOT_INO;
	int64_t now = now_ns();
	for (;;) {
		while (*path == '/')
			path++;
		size_t n = strcspn(path, "/");
		if (n == 0)
			return -EINVAL; /* "" or a trailing slash: no key named */
		if (n > NADB_NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(name, path, n);
		name[n] = 0;
		path += n;
		struct inode d;
		int rc = get_dir(st, dir, &d);
		if (rc)
			return rc;
		rc = access_check(&d.r, who, ACCESS_X);
		if (!rc)
			rc = nadb_check_name(name, d.r.level);
		inode_release(&d);
		if (rc)
			return rc;
		struct dirent_val e;
		rc = find_entry(st, dir, name, &e);
		if (rc && rc != -ENOENT)
			return rc;
		bool found = !rc && !entry_expired(st, &e, now);
		const char *rest = path + strspn(path, "/");
		if (!*rest) {
			if (rest != path) /* "KEY/" names no key */
				return -EINVAL;
			*parent = dir;
			*ino = found ? e.ino : 0;
			return 0;
		}
		if (!found)
			return -ENOENT;
		if (!S_ISDIR(e.mode))
			return -ENOTDIR;
		dir = e.ino;
		path = rest;
	}
}

int nadb_resolve(struct nadb_store *st, const char *path, struct nadb_attr *out)
{
	int rc = nadb_getattr(st, NADB_ROOT_INO, out);
	char name[NADB_NAME_MAX + 1];
	while (!rc && *path) {
		while (*path == '/')
			path++;
		size_t n = strcspn(path, "/");
		if (n == 0)
			break;
		if (n > NADB_NAME_MAX)
			return -ENAMETOOLONG;
		if (!S_ISDIR(out->mode))
			return -ENOTDIR;
		memcpy(name, path, n);
		name[n] = 0;
		path += n;
		rc = nadb_lookup(st, out->ino, name, out);
	}
	return rc;
}
