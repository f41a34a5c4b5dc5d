/* tags.c -- tags on keys and the indexes that answer tag queries.
 *
 * Four tables:
 *   tags_of    (ino, tag)                 a key's tags, sorted: user.tags
 *                                         reads it;
 *   tag_ids    tag -> id                  a number for every tag ever used,
 *                                         so that the tree's rows stay short;
 *   tag_counts (partition, tag) -> keys   how many keys of the partition
 *                                         carry the tag: /tags lists the tags
 *                                         whose sum is not 0, and an AND
 *                                         query starts from its smallest tag;
 *   tag_edges  (parent, id, name) -> {ino, count}
 *                                         for each tag, each namespace's tree
 *                                         cut down to the keys carrying it: a
 *                                         key's own names, and every
 *                                         directory between them and the
 *                                         namespace with the number of tagged
 *                                         names below it.
 * So /tags/photo/app/media/x/ is a cursor over the tag_edges rows of (x's
 * inode, photo's id), costing what a directory of that many entries costs,
 * however many untagged keys sit beside them.  The rows follow the keys: a
 * new name, a removed name or a moved directory updates them in the same
 * step.
 *
 * Every row but tag_ids is keyed by an inode number, so it lives in that
 * inode's partition (backend.h): tagging a key, or naming a tagged key,
 * writes rows of its own namespace only, and a store spread over a Redis
 * Cluster never needs two slots for it.  That is why the mirror's levels
 * above the namespaces (/tags/TAG/ and /tags/TAG/DB/) are not stored: they
 * list the databases and namespaces whose own mirrors are not empty, found
 * by asking each.  tag_ids is store-wide, but a tag's row is written once,
 * in a step of its own before the first step that uses it
 * (tags_register), and never changes.
 */
#include "grow.h"
#include "log.h"
#include "index.h"
#include "store_int.h"
#include "tags.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct tag_edge {
	uint64_t ino;
	uint64_t count;
};

#define EDGE_PREFIX_LEN (INO_KEY_LEN + 4) /* parent, tag id */
#define EDGE_KEY_MAX (EDGE_PREFIX_LEN + NADB_NAME_MAX)
#define COUNT_KEY_MAX (INO_KEY_LEN + NADB_NAME_MAX)

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

/* ---- keys and rows ------------------------------------------------------ */

/* The first inode number of INO's partition: tag_counts rows are keyed by
 * it, so that they live where the key's own rows do. */
static uint64_t partition_base(uint64_t ino)
{
	return (uint64_t)kv_partition(ino) << KV_PART_SHIFT;
}

static size_t count_key(uint8_t key[COUNT_KEY_MAX], uint64_t ino, const char *tag)
{
	size_t n = strlen(tag);
	ino_key(key, partition_base(ino));
	memcpy(key + INO_KEY_LEN, tag, n);
	return INO_KEY_LEN + n;
}

static size_t edge_prefix(uint8_t key[EDGE_PREFIX_LEN], uint64_t parent, uint32_t id)
{
	uint32_t be = htobe32(id);
	ino_key(key, parent);
	memcpy(key + INO_KEY_LEN, &be, 4);
	return EDGE_PREFIX_LEN;
}

static size_t edge_key(uint8_t key[EDGE_KEY_MAX], uint64_t parent, uint32_t id,
		       const char *name)
{
	size_t n = strlen(name);
	edge_prefix(key, parent, id);
	memcpy(key + EDGE_PREFIX_LEN, name, n);
	return EDGE_PREFIX_LEN + n;
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

/* TAG's id: -ENOENT if it was never used. */
static int tag_id(struct nadb_store *st, const char *tag, uint32_t *id)
{
	struct kv_val v;
	int rc = st->kv->ops->get(st->kv, KV_TAG_IDS, tag, strlen(tag), &v);
	if (!rc && v.len != sizeof(*id)) {
		nadb_log("tags: the id of tag '%s' is damaged", tag);
		rc = -EIO;
	}
	if (!rc)
		memcpy(id, v.data, sizeof(*id));
	return rc;
}

/* Tag ids come from counter TAG_ID_SEQ of KV_META (a uint32_t: the next
 * id to give, 1 where there is none). */
#define TAG_ID_SEQ "next_tag_id"

/* Give TAG an id in the step if it has none: only where one process
 * writes the store (or the rebuild, which renumbers every tag). */
static int number_tag_in_step(struct nadb_store *st, const char *tag)
{
	uint32_t id, next = 1;
	int rc = tag_id(st, tag, &id);
	if (rc != -ENOENT)
		return rc;
	struct kv_val v;
	rc = st->kv->ops->get(st->kv, KV_META, TAG_ID_SEQ, strlen(TAG_ID_SEQ), &v);
	if (!rc && v.len == sizeof(next))
		memcpy(&next, v.data, sizeof(next));
	else if (rc != -ENOENT)
		return rc ? rc : -EIO;
	if (next == UINT32_MAX) {
		nadb_log("tags: every tag id is used up");
		return -ENOSPC;
	}
	id = next++;
	rc = st->kv->ops->put(st->kv, KV_META, TAG_ID_SEQ, strlen(TAG_ID_SEQ), &next,
			      sizeof(next));
	if (!rc)
		rc = st->kv->ops->put(st->kv, KV_TAG_IDS, tag, strlen(tag), &id, sizeof(id));
	return rc;
}

/* Give TAG an id if it has none.  Inside a step; where several processes
 * may write the store (kv_ops.number), given at once and kept even if
 * the step is undone (an id no key uses costs a row). */
static int number_tag(struct nadb_store *st, const char *tag)
{
	uint32_t id;
	if (!st->kv->ops->number)
		return number_tag_in_step(st, tag);
	int rc = st->kv->ops->number(st->kv, KV_TAG_IDS, tag, strlen(tag), TAG_ID_SEQ, &id);
	if (rc == -ENOLCK) {
		store_lose_lock(st, "numbering a tag was fenced off");
		rc = -EIO;
	}
	return rc;
}

/* How many keys of INO's partition carry TAG, plus DELTA. */
static int count_add(struct nadb_store *st, uint64_t ino, const char *tag, int64_t delta)
{
	uint8_t key[COUNT_KEY_MAX];
	size_t klen = count_key(key, ino, tag);
	uint64_t count = 0;
	struct kv_val v;
	int rc = st->kv->ops->get(st->kv, KV_TAG_COUNTS, key, klen, &v);
	if (!rc && v.len == sizeof(count))
		memcpy(&count, v.data, sizeof(count));
	else if (rc != -ENOENT)
		return rc ? rc : -EIO;
	if ((int64_t)count + delta < 0) {
		nadb_log("tags: the key count of tag '%s' would go below zero", tag);
		return -EIO;
	}
	count = (uint64_t)((int64_t)count + delta);
	rc = count ? st->kv->ops->put(st->kv, KV_TAG_COUNTS, key, klen, &count, sizeof(count))
		   : st->kv->ops->del(st->kv, KV_TAG_COUNTS, key, klen);
	return rc == -ENOENT ? 0 : rc;
}

/* ---- the tree of a tag --------------------------------------------------- */

static int level_of(struct nadb_store *st, uint64_t dir, uint8_t *level)
{
	struct inode in;
	int rc = inode_get(st, dir, &in);
	if (!rc) {
		*level = in.r.level;
		inode_release(&in);
	}
	return rc;
}

/* Directory DIR's own name and parent. */
struct dir_link {
	uint64_t parent;
	char name[NADB_NAME_MAX + 1];
};

static int find_dir_link(struct nadb_store *st, uint64_t dir, struct dir_link *l)
{
	int rc = inode_first_name(st, dir, &l->parent, l->name);
	if (rc == -ENOENT) {
		nadb_log("tags: directory %llu has no name", (unsigned long long)dir);
		rc = -EIO;
	}
	return rc;
}

/* Call FN for the edge (PARENT, NAME) -> CHILD and every edge above it
 * up to its namespace (none when PARENT is above the namespaces: those
 * levels are not stored). */
static int edges_up(struct nadb_store *st, uint64_t parent, const char *name, uint64_t child,
		    int (*fn)(void *ctx, uint64_t parent, const char *name, uint64_t child),
		    void *ctx)
{
	struct dir_link up;
	for (int depth = 0; depth < 4096; depth++) {
		uint8_t level;
		int rc = level_of(st, parent, &level);
		if (rc || level < NADB_LEVEL_NAMESPACE)
			return rc;
		if ((rc = fn(ctx, parent, name, child)) || level == NADB_LEVEL_NAMESPACE)
			return rc;
		if ((rc = find_dir_link(st, parent, &up)))
			return rc;
		child = parent;
		parent = up.parent;
		name = up.name;
	}
	return -ELOOP;
}

struct edge_add {
	struct nadb_store *st;
	uint32_t id;
	int64_t delta;
};

static int add_at_edge(void *ctx, uint64_t parent, const char *name, uint64_t child)
{
	struct edge_add *a = ctx;
	struct kv *kv = a->st->kv;
	uint8_t key[EDGE_KEY_MAX];
	size_t klen = edge_key(key, parent, a->id, name);
	struct tag_edge e = {.ino = child};
	struct kv_val v;
	int rc = kv->ops->get(kv, KV_TAG_EDGES, key, klen, &v);
	if (rc == 0 && v.len == sizeof(e))
		memcpy(&e, v.data, sizeof(e));
	else if (rc != -ENOENT)
		return rc ? rc : -EIO;
	if ((int64_t)e.count + a->delta < 0) {
		nadb_log("tags: index count below zero at '%s'", name);
		return -EIO;
	}
	e.count = (uint64_t)((int64_t)e.count + a->delta);
	rc = e.count ? kv->ops->put(kv, KV_TAG_EDGES, key, klen, &e, sizeof(e))
		     : kv->ops->del(kv, KV_TAG_EDGES, key, klen);
	return rc == -ENOENT ? 0 : rc;
}

/* Add DELTA tagged names to tag ID's edge (PARENT, NAME) -> CHILD and to
 * every edge above it within its namespace. */
static int tree_add(struct nadb_store *st, uint32_t id, uint64_t parent,
		    const char *name, uint64_t child, int64_t delta)
{
	struct edge_add a = {st, id, delta};
	return edges_up(st, parent, name, child, add_at_edge, &a);
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
	if (ARRAY_GROW(l->tags, l->n, l->cap))
		return -ENOMEM;
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
		uint32_t id;
		rc = tag_id(st, l.tags[i], &id);
		if (!rc)
			rc = tree_add(st, id, parent, name, ino, delta);
		else if (rc == -ENOENT) {
			nadb_log("tags: tag '%s' has no id", l.tags[i]);
			rc = -EIO;
		}
	}
	free(l.tags);
	return rc;
}

/* Every name of INO gets DELTA in tag ID's tree. */
static int add_to_names(struct nadb_store *st, uint64_t ino, uint32_t id, int delta)
{
	struct link_list l;
	int rc = inode_links(st, ino, &l);
	for (size_t i = 0; !rc && i < l.n; i++)
		rc = tree_add(st, id, l.parents[i], l.names[i], ino, delta);
	link_list_free(&l);
	return rc;
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
	uint32_t id;
	rc = tag_id(st, tag, &id);
	if (rc == -ENOENT) { /* tags_register numbers a tag before its step */
		nadb_log("tags: tag '%s' has no id", tag);
		rc = -EIO;
	}
	if (!rc)
		rc = count_add(st, ino, tag, +1);
	if (!rc)
		rc = st->kv->ops->put(st->kv, KV_TAGS_OF, key, klen, "", 0);
	if (!rc)
		rc = add_to_names(st, ino, id, +1);
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
	uint32_t id;
	if ((rc = tag_id(st, tag, &id)))
		return rc == -ENOENT ? -EIO : rc;
	rc = add_to_names(st, ino, id, -1);
	if (!rc)
		rc = count_add(st, ino, tag, -1);
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

/* The tags (ids) with tagged names below a directory, and how many; or,
 * for a namespace leaving its database (no edge above it is stored), to
 * be found from its own edges should it land in a namespace. */
struct tag_mirror {
	size_t n, cap;
	struct {
		uint32_t id;
		uint64_t count;
	} *tag;
	bool from_database;
};

static void tags_mirror_free(struct tag_mirror *m)
{
	if (m) {
		free(m->tag);
		free(m);
	}
}

static int mirror_add(struct tag_mirror *m, uint32_t id, uint64_t count)
{
	if (ARRAY_GROW(m->tag, m->n, m->cap))
		return -ENOMEM;
	m->tag[m->n].id = id;
	m->tag[m->n++].count = count;
	return 0;
}

/* Each tag among a directory's own edges once (they sort by id), with
 * the tagged names below it: the sum of its edges' counts.  Reads every
 * edge: for a namespace becoming a directory only. */
static int sum_edge(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct tag_mirror *m = ctx;
	struct tag_edge e;
	if (klen <= EDGE_PREFIX_LEN || vlen != sizeof(e))
		return -EIO;
	memcpy(&e, val, sizeof(e));
	uint32_t be;
	memcpy(&be, (const uint8_t *)key + INO_KEY_LEN, 4);
	int rc = 0;
	if (!m->n || m->tag[m->n - 1].id != be32toh(be))
		rc = mirror_add(m, be32toh(be), 0);
	if (!rc)
		m->tag[m->n - 1].count += e.count;
	return rc;
}

struct next_id {
	uint8_t prefix[INO_KEY_LEN];
	uint32_t id;
	bool found;
};

static int take_id(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct next_id *n = ctx;
	if (klen > EDGE_PREFIX_LEN && !memcmp(key, n->prefix, INO_KEY_LEN)) {
		uint32_t be;
		memcpy(&be, (const uint8_t *)key + INO_KEY_LEN, 4);
		n->id = be32toh(be);
		n->found = true;
	}
	return 1;
}

/* The tags below directory DIR, counted by the edge (PARENT, NAME) into
 * it: one scan per tag (each skips to the next id), not per name. */
static int mirror_by_edges(struct nadb_store *st, uint64_t dir, uint64_t parent,
			   const char *name, struct tag_mirror *m)
{
	struct next_id n = {.found = true};
	ino_key(n.prefix, dir);
	int rc = 0;
	for (uint64_t id = 0; !rc && id <= UINT32_MAX; id = (uint64_t)n.id + 1) {
		uint8_t start[EDGE_PREFIX_LEN];
		n.found = false;
		rc = st->kv->ops->scan(st->kv, KV_TAG_EDGES, start,
				       edge_prefix(start, dir, (uint32_t)id), take_id, &n);
		if (rc || !n.found)
			break;
		uint8_t key[EDGE_KEY_MAX];
		struct kv_val v;
		struct tag_edge e;
		rc = st->kv->ops->get(st->kv, KV_TAG_EDGES, key, edge_key(key, parent, n.id, name),
				      &v);
		if (!rc && v.len != sizeof(e))
			rc = -EIO;
		if (rc == -ENOENT) /* a damaged index: fsck --repair rebuilds it */
			rc = 0;
		else if (!rc) {
			memcpy(&e, v.data, sizeof(e));
			rc = mirror_add(m, n.id, e.count);
		}
	}
	return rc;
}

static int tags_detach_dir(struct nadb_store *st, uint64_t dir, uint64_t parent,
			   const char *name, struct tag_mirror **out)
{
	*out = NULL;
	uint8_t level;
	int rc = level_of(st, parent, &level);
	if (rc)
		return rc;
	struct tag_mirror *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->from_database = level < NADB_LEVEL_NAMESPACE;
	if (!m->from_database)
		rc = mirror_by_edges(st, dir, parent, name, m);
	for (size_t i = 0; !rc && i < m->n; i++)
		rc = tree_add(st, m->tag[i].id, parent, name, dir, -(int64_t)m->tag[i].count);
	if (rc || (!m->n && !m->from_database)) {
		tags_mirror_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

static int tags_attach_dir(struct nadb_store *st, uint64_t parent, const char *name,
			   uint64_t dir, struct tag_mirror *m)
{
	uint8_t level;
	int rc = 0;
	if (m->from_database && !(rc = level_of(st, parent, &level)) &&
	    level >= NADB_LEVEL_NAMESPACE) {
		uint8_t prefix[INO_KEY_LEN];
		rc = st->kv->ops->scan_prefix(st->kv, KV_TAG_EDGES, prefix, ino_key(prefix, dir),
					      sum_edge, m);
	}
	for (size_t i = 0; !rc && i < m->n; i++)
		rc = tree_add(st, m->tag[i].id, parent, name, dir, (int64_t)m->tag[i].count);
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
		if (ARRAY_GROW(l->tags, l->n, l->cap))
			return -ENOMEM;
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

/* The tags that setting xattr NAME to VALUE asks for, checked: -EINVAL
 * (with a log line) if a name is bad.  Free l->tags. */
static int wanted_tags(const char *name, const char *value, size_t size, struct tag_list *l)
{
	if (!strcmp(name, "user.tags")) {
		int rc = parse_tag_list(value, size, l);
		if (rc)
			nadb_log("tags: '%.*s' is not a comma-separated list of valid tag names",
				 (int)(size < 200 ? size : 200), value);
		return rc;
	}
	const char *tag = name + strlen("user.tag.");
	memset(l, 0, sizeof(*l));
	if (nadb_check_tag(tag)) {
		nadb_log("tags: '%s' is not a valid tag name", tag);
		return -EINVAL;
	}
	return parse_tag_list(tag, strlen(tag), l);
}

int tags_register(struct nadb_store *st, uint64_t ino, const char *name,
		  const char *value, size_t size)
{
	int rc = check_taggable(st, ino);
	if (rc)
		return rc;
	struct tag_list want;
	rc = wanted_tags(name, value, size, &want);
	/* Where numbering is the backend's, it answers known tags too: a tag
	 * not cached costs one round trip, not a read and then a number. */
	bool any_new = st->kv->ops->number != NULL;
	for (size_t i = 0; !rc && i < want.n && !any_new; i++) {
		uint32_t id;
		rc = tag_id(st, want.tags[i], &id);
		if (rc == -ENOENT) {
			any_new = true;
			rc = 0;
		}
	}
	if (!rc && any_new && !(rc = step_begin(st))) {
		for (size_t i = 0; !rc && i < want.n; i++)
			rc = number_tag(st, want.tags[i]);
		rc = step_end(st, rc);
	}
	free(want.tags);
	return rc;
}

int tags_xattr_set(struct nadb_store *st, uint64_t ino, const char *name,
		   const char *value, size_t size)
{
	int rc = check_taggable(st, ino);
	if (rc)
		return rc;
	struct tag_list want, have = {0};
	rc = wanted_tags(name, value, size, &want);
	bool whole_set = !strcmp(name, "user.tags");
	if (!rc && whole_set)
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

/* ---- tags in use: tag_counts, partition by partition ------------------- */

/* tag_counts is sorted by partition, then tag; the tags in use are the
 * union of the partitions' runs.  A walk visits the partitions holding rows
 * one scan each, from (P, AFTER) on, taking up to RUN_MAX rows of each:
 * what every partition holds up to the smallest last tag of a cut-short run
 * is then complete, and is merged and handed out before the next round. */
#define RUN_MAX 64 /* rows: a partition's share of one round */

struct tag_count {
	char tag[NADB_NAME_MAX + 1];
	uint64_t keys;
};

struct round {
	const char *after;
	uint64_t part;      /* the partition being read */
	uint64_t next_part; /* where its run stopped: the next one holding rows */
	size_t run;         /* rows taken from this partition */
	size_t run_max;     /* at most */
	struct tag_count *rows;
	size_t n, cap;
};

static int take_count(void *ctx, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	struct round *r = ctx;
	uint64_t be, keys;
	if (klen <= INO_KEY_LEN || klen > COUNT_KEY_MAX || vlen != sizeof(keys))
		return -EIO;
	memcpy(&be, key, 8);
	uint64_t part = kv_partition(be64toh(be));
	if (part != r->part) {
		r->next_part = part;
		return 1;
	}
	if (r->run == r->run_max) {
		r->next_part = part + 1;
		return 1;
	}
	struct tag_count c;
	memcpy(c.tag, (const uint8_t *)key + INO_KEY_LEN, klen - INO_KEY_LEN);
	c.tag[klen - INO_KEY_LEN] = 0;
	memcpy(&keys, val, sizeof(keys));
	c.keys = keys;
	if (r->after && strcmp(c.tag, r->after) <= 0)
		return 0;
	if (ARRAY_GROW(r->rows, r->n, r->cap))
		return -ENOMEM;
	r->rows[r->n++] = c;
	r->run++;
	return 0;
}

static int cmp_count(const void *a, const void *b)
{
	return strcmp(((const struct tag_count *)a)->tag, ((const struct tag_count *)b)->tag);
}

/* Tags in use after AFTER, in order, with their keys summed over the
 * partitions.  Under meta_lock. */
static int each_tag(struct nadb_store *st, const char *after, nadb_tag_fn fn, void *ctx)
{
	/* FROM: where this round starts (the last round's LAST), kept apart
	 * from LAST, which the round lowers as partitions are cut short. */
	char from[NADB_NAME_MAX + 1], last[NADB_NAME_MAX + 1];
	if (after && strlen(after) > NADB_NAME_MAX)
		return -ENAMETOOLONG;
	struct round r = {.run_max = RUN_MAX};
	int rc = 0;
	for (bool more = true; !rc && more;) {
		if (after)
			memcpy(from, after, strlen(after) + 1);
		after = r.after = after ? from : NULL;
		r.n = 0;
		bool cut = false;
		for (r.part = 0; !rc && r.part <= KV_PART_MAX;) {
			uint8_t start[COUNT_KEY_MAX];
			size_t slen = count_key(start, r.part << KV_PART_SHIFT, after ? after : "");
			r.run = 0;
			r.next_part = KV_PART_MAX + 1;
			rc = st->kv->ops->scan(st->kv, KV_TAG_COUNTS, start, slen, take_count, &r);
			if (r.run == RUN_MAX && r.next_part == r.part + 1 &&
			    (!cut || strcmp(r.rows[r.n - 1].tag, last) < 0)) {
				memcpy(last, r.rows[r.n - 1].tag, sizeof(last));
				cut = true;
			}
			r.part = r.next_part;
		}
		if (rc)
			break;
		if (r.n)
			qsort(r.rows, r.n, sizeof(*r.rows), cmp_count);
		for (size_t i = 0; !rc && i < r.n;) {
			uint64_t keys = 0;
			size_t j = i;
			for (; j < r.n && !strcmp(r.rows[j].tag, r.rows[i].tag); j++)
				keys += r.rows[j].keys;
			if (cut && strcmp(r.rows[i].tag, last) > 0)
				break;
			rc = fn(ctx, r.rows[i].tag, keys);
			i = j;
		}
		more = !rc && cut;
		after = last;
	}
	free(r.rows);
	return rc < 0 ? rc : 0;
}

/* TAG's keys, summed over the partitions: one scan per partition holding
 * tag_counts rows (each starts at (P, TAG) and tells the next P); with
 * ANY, only whether there is one, from the first partition that has it. */
static int tag_keys(struct nadb_store *st, const char *tag, bool any, uint64_t *keys)
{
	*keys = 0;
	struct round r = {.run_max = 1};
	int rc = 0;
	for (r.part = 0; !rc && r.part <= KV_PART_MAX && !(any && *keys);) {
		uint8_t start[COUNT_KEY_MAX];
		size_t slen = count_key(start, r.part << KV_PART_SHIFT, tag);
		r.n = r.run = 0;
		r.next_part = KV_PART_MAX + 1;
		rc = st->kv->ops->scan(st->kv, KV_TAG_COUNTS, start, slen, take_count, &r);
		if (!rc && r.n && !strcmp(r.rows[0].tag, tag))
			*keys += r.rows[0].keys;
		r.part = r.next_part;
	}
	free(r.rows);
	return rc;
}

static int count_tag(void *ctx, const char *tag, uint64_t keys)
{
	(void)tag;
	(void)keys;
	++*(uint64_t *)ctx;
	return 0;
}

int tags_in_use(struct nadb_store *st, uint64_t *n)
{
	*n = 0;
	return each_tag(st, NULL, count_tag, n);
}

/* ---- queries ------------------------------------------------------------ */

int nadb_tag_query_parse(struct nadb_store *st, const char *text,
			 struct nadb_tag_query *q)
{
	memset(q, 0, sizeof(*q));
	uint64_t counts[NADB_QUERY_MAX_TAGS];
	bool one_tag = !strchr(text, '+'); /* no order to find: only whether */
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
		uint32_t id;
		uint64_t keys = 0;
		rc = nadb_check_tag(tag);
		if (!rc)
			rc = tag_id(st, tag, &id);
		if (!rc)
			rc = tag_keys(st, tag, one_tag, &keys);
		if (!rc && !keys)
			rc = -ENOENT;
		if (rc)
			break;
		/* Insert by count: the smallest tag drives the query. */
		unsigned at = q->n;
		while (at > 0 && counts[at - 1] > keys) {
			counts[at] = counts[at - 1];
			q->id[at] = q->id[at - 1];
			memcpy(q->tag[at], q->tag[at - 1], sizeof(q->tag[at]));
			at--;
		}
		counts[at] = keys;
		q->id[at] = id;
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

/* One directory of a mirror being read: its stored edges (a namespace or a
 * directory in one), or its real entries (the root, a database), kept
 * where a namespace below them matches. */
struct query_walk {
	struct nadb_store *st;
	const struct nadb_tag_query *q;
	bool check_expiry; /* some key may be expired and not reaped yet */
	int64_t now;
	uint8_t prefix[EDGE_PREFIX_LEN]; /* of the rows walked */
	size_t prefix_len;
	uint8_t start[EDGE_KEY_MAX];
	size_t start_len;
	bool skip_start;
	nadb_dirent_fn fn; /* NULL: stop at the first match (found) */
	void *ctx;
	bool found;
	int depth;
};

static int walk_mirror(struct query_walk *w, uint64_t dir, const char *after);

/* Has directory DIR's mirror any entry? */
static int dir_matches(struct query_walk *pw, uint64_t dir)
{
	if (pw->depth > 256)
		return 0;
	struct query_walk w = {.st = pw->st, .q = pw->q, .now = pw->now,
			       .check_expiry = pw->check_expiry, .depth = pw->depth + 1};
	int rc = walk_mirror(&w, dir, NULL);
	return rc < 0 ? rc : w.found;
}

/* Does INO, of mode MODE, belong in the mirror (1, filling A), or not (0)?
 * EDGE: it is named by a stored edge, whose count vouches for a directory
 * below a namespace as long as one tag is asked and nothing has expired. */
static int node_matches(struct query_walk *w, uint64_t ino, bool edge, struct nadb_attr *a)
{
	struct inode in;
	int rc = inode_get(w->st, ino, &in);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	if (S_ISDIR(in.r.mode)) {
		rc = (edge && w->q->n == 1 && !w->check_expiry) ? 1 : dir_matches(w, ino);
	} else {
		rc = edge && !inode_expired(&in.r, w->now);
		for (unsigned i = 1; rc == 1 && i < w->q->n; i++)
			rc = has_tag(w->st, ino, w->q->tag[i]);
	}
	if (rc == 1)
		attr_of_inode(w->st, ino, &in.r, a);
	inode_release(&in);
	return rc;
}

/* A row of the walked directory: an edge (VAL a struct tag_edge) or a
 * directory entry (VAL encoded as dirent_encode writes it). */
static int walk_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct query_walk *w = ctx;
	if (klen <= w->prefix_len || memcmp(key, w->prefix, w->prefix_len))
		return 1;
	if (w->skip_start && klen == w->start_len && !memcmp(key, w->start, klen))
		return 0;
	bool edge = w->prefix_len == EDGE_PREFIX_LEN;
	uint64_t ino;
	if (edge) {
		struct tag_edge e;
		if (vlen != sizeof(e) || klen > EDGE_KEY_MAX)
			return -EIO;
		memcpy(&e, val, sizeof(e));
		ino = e.ino;
	} else {
		struct dirent_val d;
		if (dirent_decode(val, vlen, &d) || klen > NAME_KEY_MAX)
			return -EIO;
		if (!S_ISDIR(d.mode))
			return 0;
		ino = d.ino;
	}
	struct nadb_attr a;
	int rc = node_matches(w, ino, edge, &a);
	if (rc <= 0)
		return rc;
	if (!w->fn) {
		w->found = true;
		return 1;
	}
	char name[NADB_NAME_MAX + 1];
	size_t n = klen - w->prefix_len;
	memcpy(name, (const uint8_t *)key + w->prefix_len, n);
	name[n] = 0;
	file_overlay_attr(w->st, &a);
	return w->fn(w->ctx, name, &a);
}

/* Walk DIR's mirror for W's query, after AFTER. */
static int walk_mirror(struct query_walk *w, uint64_t dir, const char *after)
{
	uint8_t level;
	int rc = level_of(w->st, dir, &level);
	if (rc)
		return rc;
	bool stored = level >= NADB_LEVEL_NAMESPACE;
	enum kv_table t = stored ? KV_TAG_EDGES : KV_DIRENTS;
	w->prefix_len = stored ? edge_prefix(w->prefix, dir, w->q->id[0])
			       : ino_key(w->prefix, dir);
	memcpy(w->start, w->prefix, w->prefix_len);
	w->start_len = w->prefix_len;
	w->skip_start = after != NULL;
	if (after) {
		size_t n = strlen(after);
		memcpy(w->start + w->prefix_len, after, n);
		w->start_len += n;
	}
	rc = w->st->kv->ops->scan(w->st->kv, t, w->start, w->start_len, walk_row, w);
	return rc < 0 ? rc : 0;
}

int nadb_tag_readdir(struct nadb_store *st, const struct nadb_tag_query *q,
		     uint64_t dir, const char *after, nadb_dirent_fn fn, void *ctx)
{
	if (after && strlen(after) > NADB_NAME_MAX)
		return -ENAMETOOLONG;
	struct query_walk w = {.st = st, .q = q, .fn = fn, .ctx = ctx, .now = now_ns()};
	pthread_mutex_lock(&st->meta_lock);
	w.check_expiry = expiry_any_due(st, w.now);
	int rc = walk_mirror(&w, dir, after);
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

int nadb_tag_lookup(struct nadb_store *st, const struct nadb_tag_query *q,
		    uint64_t dir, const char *name, struct nadb_attr *out)
{
	if (strlen(name) > NADB_NAME_MAX)
		return -ENAMETOOLONG;
	struct query_walk w = {.st = st, .q = q, .now = now_ns()};
	pthread_mutex_lock(&st->meta_lock);
	w.check_expiry = expiry_any_due(st, w.now);
	uint8_t level;
	int rc = level_of(st, dir, &level);
	uint8_t key[EDGE_KEY_MAX];
	struct kv_val v;
	uint64_t ino = 0;
	bool edge = !rc && level >= NADB_LEVEL_NAMESPACE;
	if (!rc && edge) {
		struct tag_edge e;
		rc = st->kv->ops->get(st->kv, KV_TAG_EDGES, key, edge_key(key, dir, q->id[0], name), &v);
		if (!rc && v.len != sizeof(e))
			rc = -EIO;
		if (!rc) {
			memcpy(&e, v.data, sizeof(e));
			ino = e.ino;
		}
	} else if (!rc) {
		struct dirent_val d;
		rc = st->kv->ops->get(st->kv, KV_DIRENTS, key, name_key(key, dir, name), &v);
		if (!rc && dirent_decode(v.data, v.len, &d))
			rc = -EIO;
		if (!rc) {
			ino = d.ino;
			rc = S_ISDIR(d.mode) ? 0 : -ENOENT;
		}
	}
	if (!rc) {
		rc = node_matches(&w, ino, edge, out);
		rc = rc < 0 ? rc : rc ? 0 : -ENOENT;
	}
	pthread_mutex_unlock(&st->meta_lock);
	if (!rc)
		file_overlay_attr(st, out);
	return rc;
}

int nadb_tags_list(struct nadb_store *st, const char *after, nadb_tag_fn fn,
		   void *ctx)
{
	pthread_mutex_lock(&st->meta_lock);
	int rc = each_tag(st, after, fn, ctx);
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
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

/* A row the keys' tags call for: an edge (INO the child) or a tag count
 * (INO 0), with its COUNT. */
struct want_row {
	uint8_t key[EDGE_KEY_MAX > COUNT_KEY_MAX ? EDGE_KEY_MAX : COUNT_KEY_MAX];
	uint16_t len;
	uint64_t ino, count;
};

struct want {
	struct want_row *e;
	size_t n, cap;
};

struct tag_check {
	struct nadb_store *st;
	struct want edges, counts;
	uint64_t problems;
	tags_problem_fn problem;
	void *ctx;
};

static void report(struct tag_check *c, const char *what)
{
	c->problems++;
	if (c->problem)
		c->problem(c->ctx, what);
}

static struct want_row *want_row(struct want *w)
{
	if (ARRAY_GROW(w->e, w->n, w->cap))
		return NULL;
	struct want_row *r = &w->e[w->n++];
	r->count = 1;
	r->ino = 0;
	return r;
}

struct want_names {
	struct want *w;
	uint32_t id;
};

static int want_edge(void *ctx, uint64_t parent, const char *name, uint64_t child)
{
	struct want_names *wn = ctx;
	struct want_row *r = want_row(wn->w);
	if (!r)
		return -ENOMEM;
	r->len = (uint16_t)edge_key(r->key, parent, wn->id, name);
	r->ino = child;
	return 0;
}

static int cmp_row(const void *a, const void *b)
{
	const struct want_row *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->key, y->key, n);
	return c ? c : (int)x->len - (int)y->len;
}

/* Sort W and fold equal keys into one row with their counts summed. */
static void fold(struct want *w)
{
	if (!w->n)
		return;
	qsort(w->e, w->n, sizeof(*w->e), cmp_row);
	size_t out = 0;
	for (size_t i = 0; i < w->n; i++) {
		if (out && !cmp_row(&w->e[out - 1], &w->e[i]))
			w->e[out - 1].count += w->e[i].count;
		else
			w->e[out++] = w->e[i];
	}
	w->n = out;
}

struct tagged {
	uint64_t ino;
	char tag[NADB_NAME_MAX + 1];
};

struct tagged_list {
	struct tagged *t;
	size_t n, cap;
};

static int collect_tagged(void *ctx, const void *key, size_t klen, const void *val,
			  size_t vlen)
{
	(void)val;
	(void)vlen;
	struct tagged_list *l = ctx;
	if (klen <= INO_KEY_LEN || klen > INO_KEY_LEN + NADB_NAME_MAX)
		return -EIO;
	if (ARRAY_GROW(l->t, l->n, l->cap))
		return -ENOMEM;
	uint64_t be;
	memcpy(&be, key, 8);
	struct tagged *t = &l->t[l->n++];
	t->ino = be64toh(be);
	memcpy(t->tag, (const uint8_t *)key + INO_KEY_LEN, klen - INO_KEY_LEN);
	t->tag[klen - INO_KEY_LEN] = 0;
	return 0;
}

/* The edges and counts every tagged key calls for.  A tag without an id
 * is a problem (a rebuild numbers it). */
static int wanted_rows(struct tag_check *c, const struct tagged_list *l)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < l->n; i++) {
		const struct tagged *t = &l->t[i];
		struct want_row *r = want_row(&c->counts);
		if (!r)
			return -ENOMEM;
		r->len = (uint16_t)count_key(r->key, t->ino, t->tag);
		struct want_names wn = {.w = &c->edges};
		rc = tag_id(c->st, t->tag, &wn.id);
		if (rc == -ENOENT) {
			report(c, "tag index: a key's tag has no id");
			rc = 0;
			continue;
		}
		struct link_list names;
		if (!rc && !(rc = inode_links(c->st, t->ino, &names))) {
			for (size_t k = 0; !rc && k < names.n; k++)
				rc = edges_up(c->st, names.parents[k], names.names[k], t->ino,
					      want_edge, &wn);
			link_list_free(&names);
		}
	}
	fold(&c->edges);
	fold(&c->counts);
	return rc;
}

struct compare {
	struct tag_check *c;
	const struct want *w;
	size_t at; /* next expected row */
	bool edges;
};

static int compare_row(void *ctx, const void *key, size_t klen, const void *val,
		       size_t vlen)
{
	struct compare *cmp = ctx;
	struct tag_check *c = cmp->c;
	struct want_row have = {.len = (uint16_t)klen};
	struct tag_edge e = {0};
	if (klen > sizeof(have.key) || vlen != (cmp->edges ? sizeof(e) : sizeof(e.count))) {
		report(c, "tag index: malformed row");
		return 0;
	}
	memcpy(cmp->edges ? (void *)&e : (void *)&e.count, val, vlen);
	memcpy(have.key, key, klen);
	const struct want *w = cmp->w;
	while (cmp->at < w->n && cmp_row(&w->e[cmp->at], &have) < 0) {
		report(c, cmp->edges ? "tag index: a tagged key is missing from its /tags mirror"
				     : "tag index: a tag in use is not counted");
		cmp->at++;
	}
	if (cmp->at < w->n && cmp_row(&w->e[cmp->at], &have) == 0) {
		if (w->e[cmp->at].count != e.count || w->e[cmp->at].ino != e.ino)
			report(c, cmp->edges ? "tag index: a /tags mirror entry has a wrong count"
					     : "tag index: a tag's key count is wrong");
		cmp->at++;
	} else {
		report(c, cmp->edges ? "tag index: a /tags mirror entry names no tagged key"
				     : "tag index: a tag is counted that no key carries");
	}
	return 0;
}

static int compare_table(struct tag_check *c, enum kv_table t, const struct want *w)
{
	struct compare cmp = {.c = c, .w = w, .edges = t == KV_TAG_EDGES};
	int rc = c->st->kv->ops->scan(c->st->kv, t, NULL, 0, compare_row, &cmp);
	for (; !rc && cmp.at < w->n; cmp.at++)
		report(c, cmp.edges ? "tag index: a tagged key is missing from its /tags mirror"
				    : "tag index: a tag in use is not counted");
	return rc;
}

struct row_keys {
	uint8_t *buf;
	size_t len, cap, n;
};

static int keep_key(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct row_keys *k = ctx;
	if (grow_array(&k->buf, &k->cap, k->len + 2 + klen, 1))
		return -ENOMEM;
	uint16_t n = (uint16_t)klen;
	memcpy(k->buf + k->len, &n, 2);
	memcpy(k->buf + k->len + 2, key, klen);
	k->len += 2 + klen;
	k->n++;
	return 0;
}

/* Delete every row of table T.  Inside a step. */
static int empty_table(struct nadb_store *st, enum kv_table t)
{
	struct row_keys k = {0};
	int rc = st->kv->ops->scan(st->kv, t, NULL, 0, keep_key, &k);
	for (size_t at = 0; !rc && at < k.len;) {
		uint16_t n;
		memcpy(&n, k.buf + at, 2);
		rc = st->kv->ops->del(st->kv, t, k.buf + at + 2, n);
		if (rc == -ENOENT)
			rc = 0;
		at += 2 + (size_t)n;
	}
	free(k.buf);
	return rc;
}

/* Rebuild tag_ids, tag_counts and tag_edges from the keys' own tags (and
 * empty the tables of format 3 and before).  The tags in use are numbered
 * anew (from next_tag_id on), so that damaged ids go too.  Inside a step. */
int tags_rebuild(struct nadb_store *st)
{
	static const enum kv_table derived[] = {KV_TAG_IDS, KV_TAG_EDGES, KV_TAG_COUNTS,
						KV_OLD_TAG_KEYS, KV_OLD_TAG_TREE};
	int rc = 0;
	for (size_t i = 0; !rc && i < sizeof(derived) / sizeof(derived[0]); i++)
		rc = empty_table(st, derived[i]);
	struct tagged_list l = {0};
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_TAGS_OF, NULL, 0, collect_tagged, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		uint32_t id;
		rc = number_tag_in_step(st, l.t[i].tag);
		if (!rc)
			rc = tag_id(st, l.t[i].tag, &id);
		if (!rc)
			rc = count_add(st, l.t[i].ino, l.t[i].tag, +1);
		if (!rc)
			rc = add_to_names(st, l.t[i].ino, id, +1);
	}
	free(l.t);
	return rc;
}

struct id_check {
	struct tag_check *c;
	uint32_t next;
	uint32_t *ids;
	size_t n, cap;
};

static int note_tag_id(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	struct id_check *k = ctx;
	uint32_t id;
	if (!klen || vlen != sizeof(id)) {
		report(k->c, "tag index: a tag id of the wrong size");
		return 0;
	}
	memcpy(&id, val, sizeof(id));
	if (id == 0 || id >= k->next)
		report(k->c, "tag index: a tag has an id never handed out");
	if (ARRAY_GROW(k->ids, k->n, k->cap))
		return -ENOMEM;
	k->ids[k->n++] = id;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int count_row(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	++*(uint64_t *)ctx;
	return 0;
}

/* Tag ids: each handed out, none shared; and no row of the tag index of
 * format 3 left behind. */
static int check_ids(struct tag_check *c)
{
	struct id_check k = {.c = c, .next = 1};
	struct kv_val v;
	int rc = c->st->kv->ops->get(c->st->kv, KV_META, TAG_ID_SEQ, strlen(TAG_ID_SEQ), &v);
	if (!rc && v.len == sizeof(k.next))
		memcpy(&k.next, v.data, sizeof(k.next));
	else if (rc != -ENOENT)
		return rc ? rc : -EIO;
	rc = c->st->kv->ops->scan(c->st->kv, KV_TAG_IDS, NULL, 0, note_tag_id, &k);
	if (!rc && k.n)
		qsort(k.ids, k.n, sizeof(*k.ids), cmp_u32);
	for (size_t i = 1; !rc && i < k.n; i++)
		if (k.ids[i] == k.ids[i - 1])
			report(c, "tag index: two tags share an id");
	free(k.ids);
	uint64_t old = 0;
	if (!rc)
		rc = c->st->kv->ops->scan(c->st->kv, KV_OLD_TAG_KEYS, NULL, 0, count_row, &old);
	if (!rc)
		rc = c->st->kv->ops->scan(c->st->kv, KV_OLD_TAG_TREE, NULL, 0, count_row, &old);
	if (!rc && old)
		report(c, "tag index: rows of the tag index of format 3 are left");
	return rc;
}

int tags_check(struct nadb_store *st, bool repair, tags_problem_fn problem, void *ctx,
	       uint64_t *problems)
{
	struct tagged_list l = {0};
	struct tag_check c = {.st = st, .problem = problem, .ctx = ctx};
	int rc = check_ids(&c);
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_TAGS_OF, NULL, 0, collect_tagged, &l);
	if (!rc)
		rc = wanted_rows(&c, &l);
	if (!rc)
		rc = compare_table(&c, KV_TAG_EDGES, &c.edges);
	if (!rc)
		rc = compare_table(&c, KV_TAG_COUNTS, &c.counts);
	free(l.t);
	free(c.edges.e);
	free(c.counts.e);
	if (!rc && repair && c.problems && !(rc = step_begin(st)))
		rc = step_end(st, tags_rebuild(st));
	*problems = c.problems;
	return rc;
}

/* ---- the tree's events (index.h) ---------------------------------------- */

static int drop_on_delete(struct nadb_store *st, uint64_t ino, const struct inode_rec *r)
{
	(void)r;
	return tags_drop_all(st, ino);
}

static int mirrors_leave(struct nadb_store *st, uint64_t dir, uint64_t parent,
			 const char *name, void **state)
{
	struct tag_mirror *m = NULL;
	int rc = tags_detach_dir(st, dir, parent, name, &m);
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
