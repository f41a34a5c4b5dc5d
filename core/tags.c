/* tags.c -- tags on keys and the indexes that answer tag queries.
 *
 * Three tables:
 *   tags_of   (ino, tag)            a key's tags, sorted: user.tags reads it;
 *   tag_keys  tag -> {count, id}    tags in use: /tags lists it, and an AND
 *                                   query starts from its smallest tag;
 *   tag_tree  (id, parent, name) -> {ino, count}
 *                                   for each tag, the tree cut down to the
 *                                   keys carrying it: a key's own names, and
 *                                   every directory above them with the
 *                                   number of tagged names below it.
 * So /tags/photo/app/media/ is a cursor over tag_tree rows of (photo,
 * media's inode), costing what a directory of that many entries costs,
 * however many untagged keys sit beside them.  The tree rows follow the
 * keys: a new name, a removed name or a moved directory updates them in
 * the same step.
 */
#include "log.h"
#include "index.h"
#include "store_int.h"
#include "tags.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct tag_row {
	uint64_t count;
	uint32_t id;
	uint32_t reserved;
};

struct tag_edge {
	uint64_t ino;
	uint64_t count;
};

#define EDGE_KEY_MAX (4 + INO_KEY_LEN + NADB_NAME_MAX)

int nadb_check_tag(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > NADB_NAME_MAX || name[0] == '.')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f || c == '/' || c == ',' || c == '+')
			return -EINVAL;
	}
	return 0;
}

/* A tag_keys row: the tag as a string and its counts. */
static int decode_tag_row(const void *key, size_t klen, const void *val, size_t vlen,
			  struct tag_row *row, char tag[NADB_NAME_MAX + 1])
{
	if (vlen != sizeof(*row) || klen > NADB_NAME_MAX)
		return -EIO;
	memcpy(row, val, sizeof(*row));
	memcpy(tag, key, klen);
	tag[klen] = 0;
	return 0;
}

static int tag_get(struct nadb_store *st, const char *tag, struct tag_row *row)
{
	struct kv_val v;
	int rc = st->kv->ops->get(st->kv, KV_TAG_KEYS, tag, strlen(tag), &v);
	if (!rc && v.len != sizeof(*row))
		rc = -EIO;
	if (!rc)
		memcpy(row, v.data, sizeof(*row));
	return rc;
}

static size_t edge_key(uint8_t key[EDGE_KEY_MAX], uint32_t id, uint64_t parent,
		       const char *name)
{
	uint32_t be = htobe32(id);
	memcpy(key, &be, 4);
	return 4 + name_key(key + 4, parent, name);
}

/* Directory DIR's own name and parent, from the links table. */
struct dir_link {
	uint8_t prefix[INO_KEY_LEN];
	uint64_t parent;
	char name[NADB_NAME_MAX + 1];
	bool found;
};

static int first_link(void *ctx, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	(void)val;
	(void)vlen;
	struct dir_link *l = ctx;
	if (klen > 2 * INO_KEY_LEN && klen <= LINK_KEY_MAX &&
	    !memcmp(key, l->prefix, INO_KEY_LEN)) {
		uint64_t p;
		memcpy(&p, (const uint8_t *)key + INO_KEY_LEN, 8);
		l->parent = be64toh(p);
		memcpy(l->name, (const uint8_t *)key + 2 * INO_KEY_LEN, klen - 2 * INO_KEY_LEN);
		l->name[klen - 2 * INO_KEY_LEN] = 0;
		l->found = true;
	}
	return 1;
}

static int find_dir_link(struct nadb_store *st, uint64_t dir, struct dir_link *l)
{
	l->found = false;
	ino_key(l->prefix, dir);
	int rc = st->kv->ops->scan_prefix(st->kv, KV_LINKS, l->prefix, INO_KEY_LEN, first_link, l);
	if (!rc && !l->found) {
		nadb_log("tags: directory %llu has no name", (unsigned long long)dir);
		rc = -EIO;
	}
	return rc;
}

/* Add DELTA tagged names to the edge (ID, PARENT, NAME) -> CHILD and to
 * every edge above it, up to the root. */
static int tree_add(struct nadb_store *st, uint32_t id, uint64_t parent,
		    const char *name, uint64_t child, int64_t delta)
{
	struct dir_link up;
	for (int depth = 0; depth < 4096; depth++) {
		uint8_t key[EDGE_KEY_MAX];
		size_t klen = edge_key(key, id, parent, name);
		struct tag_edge e = {.ino = child};
		struct kv_val v;
		int rc = st->kv->ops->get(st->kv, KV_TAG_TREE, key, klen, &v);
		if (rc == 0 && v.len == sizeof(e))
			memcpy(&e, v.data, sizeof(e));
		else if (rc != -ENOENT)
			return rc ? rc : -EIO;
		if ((int64_t)e.count + delta < 0) {
			nadb_log("tags: index count below zero at '%s'", name);
			return -EIO;
		}
		e.count = (uint64_t)((int64_t)e.count + delta);
		rc = e.count ? st->kv->ops->put(st->kv, KV_TAG_TREE, key, klen, &e, sizeof(e))
			     : st->kv->ops->del(st->kv, KV_TAG_TREE, key, klen);
		if (rc == -ENOENT)
			rc = 0;
		if (rc || parent == NADB_ROOT_INO)
			return rc;
		if ((rc = find_dir_link(st, parent, &up)))
			return rc;
		child = parent;
		parent = up.parent;
		name = up.name;
	}
	return -ELOOP;
}

struct tag_list {
	uint8_t prefix[INO_KEY_LEN];
	char (*tags)[NADB_NAME_MAX + 1];
	size_t n, cap;
};

static int collect_tag(void *ctx, const void *key, size_t klen, const void *val,
		       size_t vlen)
{
	(void)val;
	(void)vlen;
	struct tag_list *l = ctx;
	if (klen <= INO_KEY_LEN || klen > INO_KEY_LEN + NADB_NAME_MAX ||
	    memcmp(key, l->prefix, INO_KEY_LEN))
		return 1;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		void *t = realloc(l->tags, cap * sizeof(*l->tags));
		if (!t)
			return -ENOMEM;
		l->tags = t;
		l->cap = cap;
	}
	memcpy(l->tags[l->n], (const uint8_t *)key + INO_KEY_LEN, klen - INO_KEY_LEN);
	l->tags[l->n++][klen - INO_KEY_LEN] = 0;
	return 0;
}

/* INO's tags, sorted.  Free l->tags. */
static int tags_of(struct nadb_store *st, uint64_t ino, struct tag_list *l)
{
	memset(l, 0, sizeof(*l));
	ino_key(l->prefix, ino);
	return st->kv->ops->scan_prefix(st->kv, KV_TAGS_OF, l->prefix, INO_KEY_LEN, collect_tag, l);
}

/* A tagged key's names are mirrored under /tags (directories move their
 * mirrors with them: dir_leaving, dir_arrived). */
static int tags_link_changed(struct nadb_store *st, uint64_t ino, uint32_t mode,
			     uint64_t parent, const char *name, int delta)
{
	if (S_ISDIR(mode))
		return 0;
	struct tag_list l;
	int rc = tags_of(st, ino, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		struct tag_row row;
		rc = tag_get(st, l.tags[i], &row);
		if (!rc)
			rc = tree_add(st, row.id, parent, name, ino, delta);
	}
	free(l.tags);
	return rc;
}

/* Every name of INO gets DELTA in tag ID's tree. */
static int add_to_names(struct nadb_store *st, uint64_t ino, uint32_t id, int delta)
{
	struct dir_link l = {0};
	ino_key(l.prefix, ino);
	/* Names are few: walk them with point scans, one per name. */
	uint8_t start[LINK_KEY_MAX];
	size_t slen = INO_KEY_LEN;
	memcpy(start, l.prefix, INO_KEY_LEN);
	for (;;) {
		l.found = false;
		int rc = st->kv->ops->scan(st->kv, KV_LINKS, start, slen, first_link, &l);
		if (rc || !l.found)
			return rc;
		rc = tree_add(st, id, l.parent, l.name, ino, delta);
		if (rc)
			return rc;
		/* Next name: just past this one. */
		uint64_t be = htobe64(l.parent);
		memcpy(start + INO_KEY_LEN, &be, 8);
		size_t n = strlen(l.name);
		memcpy(start + 2 * INO_KEY_LEN, l.name, n);
		start[2 * INO_KEY_LEN + n] = 0;
		slen = 2 * INO_KEY_LEN + n + 1;
	}
}

static int tag_key_of(uint8_t key[INO_KEY_LEN + NADB_NAME_MAX], uint64_t ino,
		      const char *tag, size_t *klen)
{
	size_t n = strlen(tag);
	ino_key(key, ino);
	memcpy(key + INO_KEY_LEN, tag, n);
	*klen = INO_KEY_LEN + n;
	return 0;
}

static int tag_add(struct nadb_store *st, uint64_t ino, const char *tag)
{
	uint8_t key[INO_KEY_LEN + NADB_NAME_MAX];
	size_t klen;
	struct kv_val v;
	tag_key_of(key, ino, tag, &klen);
	int rc = st->kv->ops->get(st->kv, KV_TAGS_OF, key, klen, &v);
	if (rc != -ENOENT)
		return rc; /* already tagged (0) or an error */
	struct tag_row row;
	rc = tag_get(st, tag, &row);
	if (rc == -ENOENT) {
		struct kv_val idv;
		uint32_t next = 1;
		rc = st->kv->ops->get(st->kv, KV_META, "next_tag_id", 11, &idv);
		if (!rc && idv.len == sizeof(next))
			memcpy(&next, idv.data, sizeof(next));
		else if (rc != -ENOENT)
			return rc ? rc : -EIO;
		row = (struct tag_row){.count = 0, .id = next};
		next++;
		rc = st->kv->ops->put(st->kv, KV_META, "next_tag_id", 11, &next, sizeof(next));
		if (!rc)
			rc = counters_add(st, NADB_ROOT_INO, C_TAGS, +1);
	}
	if (rc)
		return rc;
	row.count++;
	rc = st->kv->ops->put(st->kv, KV_TAG_KEYS, tag, strlen(tag), &row, sizeof(row));
	if (!rc)
		rc = st->kv->ops->put(st->kv, KV_TAGS_OF, key, klen, "", 0);
	if (!rc)
		rc = add_to_names(st, ino, row.id, +1);
	return rc;
}

static int tag_del(struct nadb_store *st, uint64_t ino, const char *tag)
{
	uint8_t key[INO_KEY_LEN + NADB_NAME_MAX];
	size_t klen;
	tag_key_of(key, ino, tag, &klen);
	int rc = st->kv->ops->del(st->kv, KV_TAGS_OF, key, klen);
	if (rc)
		return rc == -ENOENT ? -ENODATA : rc;
	struct tag_row row;
	if ((rc = tag_get(st, tag, &row)))
		return rc == -ENOENT ? -EIO : rc;
	rc = add_to_names(st, ino, row.id, -1);
	if (!rc && --row.count)
		rc = st->kv->ops->put(st->kv, KV_TAG_KEYS, tag, strlen(tag), &row, sizeof(row));
	else if (!rc) {
		rc = st->kv->ops->del(st->kv, KV_TAG_KEYS, tag, strlen(tag));
		if (!rc)
			rc = counters_add(st, NADB_ROOT_INO, C_TAGS, -1);
	}
	return rc;
}

static int tags_drop_all(struct nadb_store *st, uint64_t ino)
{
	struct tag_list l;
	int rc = tags_of(st, ino, &l);
	for (size_t i = 0; !rc && i < l.n; i++)
		rc = tag_del(st, ino, l.tags[i]);
	free(l.tags);
	return rc;
}

/* ---- directories moving: their mirrors go with them --------------------- */

struct tag_mirror {
	size_t n, cap;
	uint32_t *id;
	uint64_t *count;
};

static void tags_mirror_free(struct tag_mirror *m)
{
	if (m) {
		free(m->id);
		free(m->count);
		free(m);
	}
}

struct detach_ctx {
	struct nadb_store *st;
	uint64_t parent;
	const char *name;
	struct tag_mirror *m;
};

static int note_edge(void *ctx, const void *key, size_t klen, const void *val,
		     size_t vlen)
{
	(void)key;
	(void)klen;
	struct detach_ctx *d = ctx;
	struct tag_row row;
	if (vlen != sizeof(row))
		return -EIO;
	memcpy(&row, val, sizeof(row));
	uint8_t ekey[EDGE_KEY_MAX];
	size_t elen = edge_key(ekey, row.id, d->parent, d->name);
	struct kv_val v;
	struct tag_edge e;
	int rc = d->st->kv->ops->get(d->st->kv, KV_TAG_TREE, ekey, elen, &v);
	if (rc == -ENOENT)
		return 0;
	if (rc || v.len != sizeof(e))
		return rc ? rc : -EIO;
	memcpy(&e, v.data, sizeof(e));
	struct tag_mirror *m = d->m;
	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 8;
		void *i = realloc(m->id, cap * sizeof(*m->id));
		if (!i)
			return -ENOMEM;
		m->id = i;
		void *c = realloc(m->count, cap * sizeof(*m->count));
		if (!c)
			return -ENOMEM;
		m->count = c;
		m->cap = cap;
	}
	m->id[m->n] = row.id;
	m->count[m->n++] = e.count;
	return 0;
}

static int tags_detach_dir(struct nadb_store *st, uint64_t parent, const char *name,
			   struct tag_mirror **out)
{
	*out = NULL;
	struct detach_ctx d = {.st = st, .parent = parent, .name = name};
	d.m = calloc(1, sizeof(*d.m));
	if (!d.m)
		return -ENOMEM;
	/* Which tags have this directory in their tree?  Ask each tag in
	 * use: a directory move is rare, tags in use are not many. */
	int rc = st->kv->ops->scan(st->kv, KV_TAG_KEYS, NULL, 0, note_edge, &d);
	struct dir_link up;
	for (size_t i = 0; !rc && i < d.m->n; i++) {
		uint8_t key[EDGE_KEY_MAX];
		rc = st->kv->ops->del(st->kv, KV_TAG_TREE, key,
				      edge_key(key, d.m->id[i], parent, name));
		if (!rc && parent != NADB_ROOT_INO && !(rc = find_dir_link(st, parent, &up)))
			rc = tree_add(st, d.m->id[i], up.parent, up.name, parent,
				      -(int64_t)d.m->count[i]);
	}
	if (rc || !d.m->n) {
		tags_mirror_free(d.m);
		return rc;
	}
	*out = d.m;
	return 0;
}

static int tags_attach_dir(struct nadb_store *st, uint64_t parent, const char *name,
			   uint64_t dir, struct tag_mirror *m)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < m->n; i++)
		rc = tree_add(st, m->id[i], parent, name, dir, (int64_t)m->count[i]);
	return rc;
}

/* ---- the xattrs user.tags and user.tag.NAME ------------------------------ */

static int check_taggable(struct nadb_store *st, uint64_t ino)
{
	struct inode in;
	int rc = inode_get(st, ino, &in);
	if (rc)
		return rc;
	if (S_ISDIR(in.r.mode)) {
		nadb_log("tags: directories cannot be tagged; tag the keys in them");
		rc = -EPERM;
	} else if (in.r.nlink == 0 || inode_expired(&in.r, now_ns())) {
		rc = -ENOENT;
	}
	inode_release(&in);
	return rc;
}

/* Split "a,b,c" into sorted unique tags; -EINVAL (and nothing changes) if
 * any name is bad. */
static int parse_tag_list(const char *value, size_t size, struct tag_list *l)
{
	memset(l, 0, sizeof(*l));
	size_t start = 0;
	for (size_t i = 0; i <= size && size; i++) {
		if (i < size && value[i] != ',')
			continue;
		size_t n = i - start;
		char tag[NADB_NAME_MAX + 1];
		if (n == 0 || n > NADB_NAME_MAX)
			return -EINVAL;
		memcpy(tag, value + start, n);
		tag[n] = 0;
		if (memchr(tag, 0, n) || nadb_check_tag(tag))
			return -EINVAL;
		start = i + 1;
		size_t at = 0;
		while (at < l->n && strcmp(l->tags[at], tag) < 0)
			at++;
		if (at < l->n && !strcmp(l->tags[at], tag))
			continue;
		if (l->n == l->cap) {
			size_t cap = l->cap ? 2 * l->cap : 8;
			void *t = realloc(l->tags, cap * sizeof(*l->tags));
			if (!t)
				return -ENOMEM;
			l->tags = t;
			l->cap = cap;
		}
		memmove(l->tags[at + 1], l->tags[at], (l->n - at) * sizeof(*l->tags));
		memcpy(l->tags[at], tag, n + 1);
		l->n++;
	}
	return 0;
}

static bool in_list(const struct tag_list *l, const char *tag)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->tags[i], tag))
			return true;
	return false;
}

int tags_xattr_set(struct nadb_store *st, uint64_t ino, const char *name,
		   const char *value, size_t size)
{
	int rc = check_taggable(st, ino);
	if (rc)
		return rc;
	if (strcmp(name, "user.tags")) {
		const char *tag = name + strlen("user.tag.");
		if (nadb_check_tag(tag)) {
			nadb_log("tags: '%s' is not a valid tag name", tag);
			return -EINVAL;
		}
		return tag_add(st, ino, tag);
	}
	struct tag_list want, have;
	rc = parse_tag_list(value, size, &want);
	if (rc) {
		nadb_log("tags: '%.*s' is not a comma-separated list of valid tag names",
			 (int)(size < 200 ? size : 200), value);
		free(want.tags);
		return rc;
	}
	rc = tags_of(st, ino, &have);
	for (size_t i = 0; !rc && i < have.n; i++)
		if (!in_list(&want, have.tags[i]))
			rc = tag_del(st, ino, have.tags[i]);
	for (size_t i = 0; !rc && i < want.n; i++)
		rc = tag_add(st, ino, want.tags[i]);
	free(want.tags);
	free(have.tags);
	return rc;
}

ssize_t tags_xattr_get(struct nadb_store *st, uint64_t ino, const char *name,
		       char *buf, size_t size)
{
	if (strcmp(name, "user.tags")) {
		uint8_t key[INO_KEY_LEN + NADB_NAME_MAX];
		size_t klen;
		struct kv_val v;
		const char *tag = name + strlen("user.tag.");
		if (nadb_check_tag(tag))
			return -ENODATA;
		tag_key_of(key, ino, tag, &klen);
		int rc = st->kv->ops->get(st->kv, KV_TAGS_OF, key, klen, &v);
		return rc == -ENOENT ? -ENODATA : rc;
	}
	struct tag_list l;
	int rc = tags_of(st, ino, &l);
	size_t need = 0;
	for (size_t i = 0; i < l.n; i++)
		need += strlen(l.tags[i]) + (i ? 1 : 0);
	ssize_t ret = rc ? rc : l.n == 0 ? -ENODATA : size && need > size ? -ERANGE
										   : (ssize_t)need;
	if (ret > 0 && size) {
		size_t at = 0;
		for (size_t i = 0; i < l.n; i++) {
			if (i)
				buf[at++] = ',';
			size_t n = strlen(l.tags[i]);
			memcpy(buf + at, l.tags[i], n);
			at += n;
		}
	}
	free(l.tags);
	return ret;
}

int tags_xattr_remove(struct nadb_store *st, uint64_t ino, const char *name)
{
	if (strcmp(name, "user.tags")) {
		const char *tag = name + strlen("user.tag.");
		return nadb_check_tag(tag) ? -ENODATA : tag_del(st, ino, tag);
	}
	struct tag_list l;
	int rc = tags_of(st, ino, &l);
	if (!rc && l.n == 0)
		rc = -ENODATA;
	for (size_t i = 0; !rc && i < l.n; i++)
		rc = tag_del(st, ino, l.tags[i]);
	free(l.tags);
	return rc;
}

ssize_t tags_xattr_list(struct nadb_store *st, uint64_t ino, char *buf, size_t size)
{
	struct tag_list l;
	int rc = tags_of(st, ino, &l);
	if (rc || l.n == 0) {
		free(l.tags);
		return rc;
	}
	size_t need = sizeof("user.tags");
	for (size_t i = 0; i < l.n; i++)
		need += strlen("user.tag.") + strlen(l.tags[i]) + 1;
	if (size && need > size) {
		free(l.tags);
		return -ERANGE;
	}
	if (size) {
		size_t at = 0;
		memcpy(buf, "user.tags", sizeof("user.tags"));
		at += sizeof("user.tags");
		for (size_t i = 0; i < l.n; i++) {
			size_t n = strlen(l.tags[i]);
			memcpy(buf + at, "user.tag.", 9);
			memcpy(buf + at + 9, l.tags[i], n + 1);
			at += 9 + n + 1;
		}
	}
	free(l.tags);
	return (ssize_t)need;
}

/* ---- queries ------------------------------------------------------------ */

int nadb_tag_query_parse(struct nadb_store *st, const char *text,
			 struct nadb_tag_query *q)
{
	memset(q, 0, sizeof(*q));
	uint64_t counts[NADB_QUERY_MAX_TAGS];
	int rc = 0;
	pthread_mutex_lock(&st->meta_lock);
	while (!rc) {
		size_t n = strcspn(text, "+");
		if (n == 0 || n > NADB_NAME_MAX || q->n == NADB_QUERY_MAX_TAGS) {
			rc = -EINVAL;
			break;
		}
		char tag[NADB_NAME_MAX + 1];
		memcpy(tag, text, n);
		tag[n] = 0;
		struct tag_row row;
		rc = nadb_check_tag(tag);
		if (!rc)
			rc = tag_get(st, tag, &row);
		if (rc)
			break;
		/* Insert by count: the smallest tag drives the query. */
		unsigned at = q->n;
		while (at > 0 && counts[at - 1] > row.count) {
			counts[at] = counts[at - 1];
			q->id[at] = q->id[at - 1];
			memcpy(q->tag[at], q->tag[at - 1], sizeof(q->tag[at]));
			at--;
		}
		counts[at] = row.count;
		q->id[at] = row.id;
		memcpy(q->tag[at], tag, n + 1);
		q->n++;
		if (!text[n])
			break;
		text += n + 1;
	}
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

static bool has_tag(struct nadb_store *st, uint64_t ino, const char *tag)
{
	uint8_t key[INO_KEY_LEN + NADB_NAME_MAX];
	size_t klen;
	struct kv_val v;
	tag_key_of(key, ino, tag, &klen);
	return st->kv->ops->get(st->kv, KV_TAGS_OF, key, klen, &v) == 0;
}

struct query_walk {
	struct nadb_store *st;
	const struct nadb_tag_query *q;
	bool check_expiry; /* some key may be expired and not reaped yet */
	int64_t now;
	uint8_t prefix[4 + INO_KEY_LEN];
	uint8_t start[EDGE_KEY_MAX];
	size_t start_len;
	bool skip_start;
	nadb_dirent_fn fn;
	void *ctx;
	bool found;
	int depth;
};

static bool subtree_matches(struct query_walk *parent_walk, uint64_t dir);

/* Does what edge E names belong in the mirror?  Fills A if so. */
static int edge_matches(struct query_walk *w, const struct tag_edge *e,
			struct nadb_attr *a)
{
	struct inode in;
	int rc = inode_get(w->st, e->ino, &in);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	bool ok;
	if (S_ISDIR(in.r.mode)) {
		ok = (w->q->n == 1 && !w->check_expiry) || subtree_matches(w, e->ino);
	} else {
		ok = !inode_expired(&in.r, w->now);
		for (unsigned i = 1; ok && i < w->q->n; i++)
			ok = has_tag(w->st, e->ino, w->q->tag[i]);
	}
	if (ok)
		attr_of_inode(w->st, e->ino, &in.r, a);
	inode_release(&in);
	return ok;
}

static int walk_edge(void *ctx, const void *key, size_t klen, const void *val,
		     size_t vlen)
{
	struct query_walk *w = ctx;
	if (klen <= sizeof(w->prefix) || klen > EDGE_KEY_MAX ||
	    memcmp(key, w->prefix, sizeof(w->prefix)))
		return 1;
	if (w->skip_start && klen == w->start_len && !memcmp(key, w->start, klen))
		return 0;
	struct tag_edge e;
	if (vlen != sizeof(e))
		return -EIO;
	memcpy(&e, val, sizeof(e));
	struct nadb_attr a;
	int rc = edge_matches(w, &e, &a);
	if (rc <= 0)
		return rc;
	if (!w->fn) {
		w->found = true;
		return 1;
	}
	char name[NADB_NAME_MAX + 1];
	size_t n = klen - sizeof(w->prefix);
	memcpy(name, (const uint8_t *)key + sizeof(w->prefix), n);
	name[n] = 0;
	file_overlay_attr(w->st, &a);
	return w->fn(w->ctx, name, &a);
}

static void walk_init(struct query_walk *w, struct nadb_store *st,
		      const struct nadb_tag_query *q, uint64_t dir, const char *after)
{
	w->st = st;
	w->q = q;
	uint32_t be = htobe32(q->id[0]);
	memcpy(w->prefix, &be, 4);
	ino_key(w->prefix + 4, dir);
	w->start_len = after ? edge_key(w->start, q->id[0], dir, after) : sizeof(w->prefix);
	if (!after)
		memcpy(w->start, w->prefix, sizeof(w->prefix));
	w->skip_start = after != NULL;
}

/* Is there a key matching the whole query below DIR?  Walks only the
 * smallest tag's tree under DIR, stopping at the first match. */
static bool subtree_matches(struct query_walk *pw, uint64_t dir)
{
	if (pw->depth > 256)
		return false;
	struct query_walk w = {.now = pw->now, .check_expiry = pw->check_expiry,
			       .depth = pw->depth + 1};
	walk_init(&w, pw->st, pw->q, dir, NULL);
	pw->st->kv->ops->scan(pw->st->kv, KV_TAG_TREE, w.start, w.start_len, walk_edge, &w);
	return w.found;
}

int nadb_tag_readdir(struct nadb_store *st, const struct nadb_tag_query *q,
		     uint64_t dir, const char *after, nadb_dirent_fn fn, void *ctx)
{
	struct query_walk w = {.fn = fn, .ctx = ctx, .now = now_ns()};
	walk_init(&w, st, q, dir, after);
	pthread_mutex_lock(&st->meta_lock);
	w.check_expiry = expiry_any_due(st, w.now);
	int rc = st->kv->ops->scan(st->kv, KV_TAG_TREE, w.start, w.start_len, walk_edge, &w);
	pthread_mutex_unlock(&st->meta_lock);
	return rc < 0 ? rc : 0;
}

int nadb_tag_lookup(struct nadb_store *st, const struct nadb_tag_query *q,
		    uint64_t dir, const char *name, struct nadb_attr *out)
{
	if (strlen(name) > NADB_NAME_MAX)
		return -ENAMETOOLONG;
	struct query_walk w = {.now = now_ns()};
	walk_init(&w, st, q, dir, NULL);
	uint8_t key[EDGE_KEY_MAX];
	size_t klen = edge_key(key, q->id[0], dir, name);
	struct kv_val v;
	struct tag_edge e;
	pthread_mutex_lock(&st->meta_lock);
	w.check_expiry = expiry_any_due(st, w.now);
	int rc = st->kv->ops->get(st->kv, KV_TAG_TREE, key, klen, &v);
	if (!rc && v.len != sizeof(e))
		rc = -EIO;
	if (!rc) {
		memcpy(&e, v.data, sizeof(e));
		rc = edge_matches(&w, &e, out);
		rc = rc < 0 ? rc : rc ? 0 : -ENOENT;
	}
	pthread_mutex_unlock(&st->meta_lock);
	if (!rc)
		file_overlay_attr(st, out);
	return rc;
}

struct list_tags {
	const char *after;
	nadb_tag_fn fn;
	void *ctx;
};

static int list_tag(void *ctx, const void *key, size_t klen, const void *val,
		    size_t vlen)
{
	struct list_tags *l = ctx;
	struct tag_row row;
	char tag[NADB_NAME_MAX + 1];
	if (decode_tag_row(key, klen, val, vlen, &row, tag))
		return -EIO;
	if (l->after && !strcmp(tag, l->after))
		return 0;
	return l->fn(l->ctx, tag, row.count);
}

int nadb_tags_list(struct nadb_store *st, const char *after, nadb_tag_fn fn,
		   void *ctx)
{
	struct list_tags l = {after, fn, ctx};
	pthread_mutex_lock(&st->meta_lock);
	int rc = st->kv->ops->scan(st->kv, KV_TAG_KEYS, after, after ? strlen(after) : 0,
				   list_tag, &l);
	pthread_mutex_unlock(&st->meta_lock);
	return rc < 0 ? rc : 0;
}

int nadb_tag_query_untag(struct nadb_store *st, const struct nadb_tag_query *q,
			 uint64_t ino)
{
	pthread_mutex_lock(&st->meta_lock);
	int rc = step_begin(st);
	for (unsigned i = 0; !rc && i < q->n; i++) {
		rc = tag_del(st, ino, q->tag[i]);
		if (rc == -ENODATA)
			rc = 0;
	}
	rc = step_end(st, rc);
	store_note_step(st);
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

/* ---- fsck: the indexes against the keys' own tags ------------------------ */

struct want_edge {
	uint8_t key[EDGE_KEY_MAX];
	uint16_t len;
	uint64_t ino, count;
};

struct want {
	struct nadb_store *st;
	struct want_edge *e;
	size_t n, cap;
	/* Tag counts as tags_of says, in tag order (tags_of rows are read by
	 * inode, so these are gathered in a second table pass). */
	uint64_t problems;
	tags_problem_fn problem;
	void *ctx;
};

static int want_edge(struct want *w, uint32_t id, uint64_t parent, const char *name,
		     uint64_t ino)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 256;
		void *e = realloc(w->e, cap * sizeof(*w->e));
		if (!e)
			return -ENOMEM;
		w->e = e;
		w->cap = cap;
	}
	struct want_edge *e = &w->e[w->n++];
	e->len = (uint16_t)edge_key(e->key, id, parent, name);
	e->ino = ino;
	e->count = 1;
	return 0;
}

/* Each tagged name of INO, and each directory above it, once. */
static int want_names(struct want *w, uint64_t ino, uint32_t id)
{
	struct nadb_store *st = w->st;
	struct dir_link l = {0}, up;
	ino_key(l.prefix, ino);
	uint8_t start[LINK_KEY_MAX];
	size_t slen = INO_KEY_LEN;
	memcpy(start, l.prefix, INO_KEY_LEN);
	for (;;) {
		l.found = false;
		int rc = st->kv->ops->scan(st->kv, KV_LINKS, start, slen, first_link, &l);
		if (rc || !l.found)
			return rc;
		uint64_t parent = l.parent, child = ino;
		const char *name = l.name;
		char name_buf[NADB_NAME_MAX + 1];
		for (int depth = 0; depth < 4096; depth++) {
			if ((rc = want_edge(w, id, parent, name, child)))
				return rc;
			if (parent == NADB_ROOT_INO)
				break;
			if ((rc = find_dir_link(st, parent, &up)))
				return rc;
			child = parent;
			parent = up.parent;
			memcpy(name_buf, up.name, sizeof(name_buf));
			name = name_buf;
		}
		uint64_t be = htobe64(l.parent);
		memcpy(start + INO_KEY_LEN, &be, 8);
		size_t n = strlen(l.name);
		memcpy(start + 2 * INO_KEY_LEN, l.name, n);
		start[2 * INO_KEY_LEN + n] = 0;
		slen = 2 * INO_KEY_LEN + n + 1;
	}
}

struct tagged {
	uint64_t *ino;
	char (*tag)[NADB_NAME_MAX + 1];
	size_t n, cap;
};

static int collect_tagged(void *ctx, const void *key, size_t klen, const void *val,
			  size_t vlen)
{
	(void)val;
	(void)vlen;
	struct tagged *t = ctx;
	if (klen <= INO_KEY_LEN || klen > INO_KEY_LEN + NADB_NAME_MAX)
		return -EIO;
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 256;
		void *i = realloc(t->ino, cap * sizeof(*t->ino));
		if (!i)
			return -ENOMEM;
		t->ino = i;
		void *g = realloc(t->tag, cap * sizeof(*t->tag));
		if (!g)
			return -ENOMEM;
		t->tag = g;
		t->cap = cap;
	}
	uint64_t be;
	memcpy(&be, key, 8);
	t->ino[t->n] = be64toh(be);
	memcpy(t->tag[t->n], (const uint8_t *)key + INO_KEY_LEN, klen - INO_KEY_LEN);
	t->tag[t->n++][klen - INO_KEY_LEN] = 0;
	return 0;
}

static int cmp_edge(const void *a, const void *b)
{
	const struct want_edge *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->key, y->key, n);
	return c ? c : (int)x->len - (int)y->len;
}

struct compare {
	struct want *w;
	size_t at; /* next expected edge */
};

static void report(struct want *w, const char *what)
{
	w->problems++;
	if (w->problem)
		w->problem(w->ctx, what);
}

static int compare_edge(void *ctx, const void *key, size_t klen, const void *val,
			size_t vlen)
{
	struct compare *c = ctx;
	struct want *w = c->w;
	struct tag_edge e;
	if (vlen != sizeof(e) || klen > EDGE_KEY_MAX) {
		report(w, "tag index: malformed row");
		return 0;
	}
	memcpy(&e, val, sizeof(e));
	struct want_edge have = {.len = (uint16_t)klen};
	memcpy(have.key, key, klen);
	while (c->at < w->n && cmp_edge(&w->e[c->at], &have) < 0) {
		report(w, "tag index: a tagged key is missing from its /tags mirror");
		c->at++;
	}
	if (c->at < w->n && cmp_edge(&w->e[c->at], &have) == 0) {
		if (w->e[c->at].count != e.count || w->e[c->at].ino != e.ino)
			report(w, "tag index: a /tags mirror entry has a wrong count");
		c->at++;
	} else {
		report(w, "tag index: a /tags mirror entry names no tagged key");
	}
	return 0;
}

struct count_check {
	struct tagged *t; /* sorted by tag */
	struct want *w;
};

static int cmp_tag(const void *a, const void *b)
{
	return strcmp(a, b);
}

static int check_count(void *ctx, const void *key, size_t klen, const void *val,
		       size_t vlen)
{
	struct count_check *c = ctx;
	struct tag_row row;
	char tag[NADB_NAME_MAX + 1];
	if (decode_tag_row(key, klen, val, vlen, &row, tag))
		return -EIO;
	/* The tags of every key, sorted: this tag's run starts at the first
	 * one not below it. */
	size_t lo = 0, hi = c->t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(c->t->tag[mid], tag) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	uint64_t n = 0;
	while (lo + n < c->t->n && !strcmp(c->t->tag[lo + n], tag))
		n++;
	if (n != row.count)
		report(c->w, "tag index: a tag's key count is wrong");
	return 0;
}

int tags_check(struct nadb_store *st, tags_problem_fn problem, void *ctx,
	       uint64_t *problems)
{
	struct tagged t = {0};
	struct want w = {.st = st, .problem = problem, .ctx = ctx};
	int rc = st->kv->ops->scan(st->kv, KV_TAGS_OF, NULL, 0, collect_tagged, &t);
	for (size_t i = 0; !rc && i < t.n; i++) {
		struct tag_row row;
		rc = tag_get(st, t.tag[i], &row);
		if (rc == -ENOENT) {
			report(&w, "tag index: a key's tag is not among the tags in use");
			rc = 0;
			continue;
		}
		if (!rc)
			rc = want_names(&w, t.ino[i], row.id);
	}
	if (!rc && w.n) {
		qsort(w.e, w.n, sizeof(*w.e), cmp_edge);
		size_t out = 0;
		for (size_t i = 0; i < w.n; i++) {
			if (out && !cmp_edge(&w.e[out - 1], &w.e[i]))
				w.e[out - 1].count++;
			else
				w.e[out++] = w.e[i];
		}
		w.n = out;
	}
	struct compare c = {.w = &w};
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_TAG_TREE, NULL, 0, compare_edge, &c);
	for (; !rc && c.at < w.n; c.at++)
		report(&w, "tag index: a tagged key is missing from its /tags mirror");
	if (!rc && t.n)
		qsort(t.tag, t.n, sizeof(*t.tag), cmp_tag);
	struct count_check cc = {.t = &t, .w = &w};
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_TAG_KEYS, NULL, 0, check_count, &cc);
	free(t.ino);
	free(t.tag);
	free(w.e);
	*problems = w.problems;
	return rc;
}

/* ---- the tree's events (index.h) ---------------------------------------- */

static int drop_on_delete(struct nadb_store *st, uint64_t ino, const struct inode_rec *r)
{
	(void)r;
	return tags_drop_all(st, ino);
}

static int mirrors_leave(struct nadb_store *st, uint64_t parent, const char *name,
			 void **state)
{
	struct tag_mirror *m = NULL;
	int rc = tags_detach_dir(st, parent, name, &m);
	*state = m;
	return rc;
}

static int mirrors_arrive(struct nadb_store *st, uint64_t dir, uint8_t old_level,
			  uint64_t old_parent, uint64_t parent, const char *name,
			  void *state)
{
	(void)old_level;
	(void)old_parent;
	return state ? tags_attach_dir(st, parent, name, dir, state) : 0;
}

static void free_mirror(void *state)
{
	tags_mirror_free(state);
}

const struct index_hooks tags_hooks = {
	.name = "tags",
	.link_changed = tags_link_changed,
	.last_link_gone = tags_drop_all,
	.inode_deleting = drop_on_delete,
	.dir_leaving = mirrors_leave,
	.dir_arrived = mirrors_arrive,
	.free_state = free_mirror,
};
