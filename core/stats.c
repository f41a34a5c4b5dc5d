/* stats.c -- counters kept as keys change, so statistics cost O(1) a
 * namespace.
 *
 * One row of counters for the whole store (the root's inode number), one
 * per database and one per namespace.  What lies inside a namespace (its
 * keys, their bytes, its directories, keys with an expiry, keys reaped)
 * counts in the namespace's row only; the database's and the store's rows
 * count what lies outside namespaces (databases, namespaces, chunks, the
 * reaped counts of namespaces deleted), and their totals add their
 * namespaces' rows when read.  So a key's step writes its own
 * namespace's row and no row another namespace's steps write: each
 * namespace's rows are in its own partition (backend.h), and no step of a
 * key needs a second one for its counters.  Every step that adds,
 * removes, resizes or moves keys adjusts those rows in the same step, so
 * the counters are exactly as durable and as crash-safe as the keys
 * themselves.  A directory moving to another namespace carries its totals
 * along (a namespace's own row, or a walk of a plain directory's subtree).
 *
 * Stores of format 2 counted everything in all three rows, and keys with
 * an expiry in the root's: opening one moves those counts to the
 * namespaces (stats_upgrade).  The tags in use are not a counter: tags.c
 * keeps them per partition, and counts their union when asked.
 */
#include "log.h"
#include "stats.h"
#include "index.h"
#include "store_int.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct counter_row {
	int64_t v[C_COUNT];
};

/* SCOPE's own row into *ROW (zeros if it has none). */
static int read_row(struct nadb_store *st, uint64_t scope, struct counter_row *row)
{
	uint8_t key[INO_KEY_LEN];
	struct kv_val v;
	*row = (struct counter_row){{0}};
	int rc = st->kv->ops->get(st->kv, KV_COUNTERS, key, ino_key(key, scope), &v);
	if (!rc && v.len == sizeof(*row))
		memcpy(row, v.data, sizeof(*row));
	else if (rc != -ENOENT)
		return rc ? rc : -EIO;
	return 0;
}

static int row_add(struct nadb_store *st, uint64_t scope, const int64_t delta[C_COUNT])
{
	uint8_t key[INO_KEY_LEN];
	size_t klen = ino_key(key, scope);
	struct counter_row row;
	int rc = read_row(st, scope, &row);
	if (rc)
		return rc;
	bool zero = true;
	for (int i = 0; i < C_COUNT; i++) {
		row.v[i] += delta[i];
		zero = zero && row.v[i] == 0;
	}
	if (zero && scope != NADB_ROOT_INO) {
		rc = st->kv->ops->del(st->kv, KV_COUNTERS, key, klen);
		return rc == -ENOENT ? 0 : rc;
	}
	return st->kv->ops->put(st->kv, KV_COUNTERS, key, klen, &row, sizeof(row));
}

int counters_add(struct nadb_store *st, uint64_t scope, enum counter c, int64_t delta)
{
	int64_t d[C_COUNT] = {0};
	d[c] = delta;
	return row_add(st, scope, d);
}

/* The scopes a name in directory DIR counts in: the root, and the database
 * and namespace above DIR (0 where there is none). */
static int scopes_of(struct nadb_store *st, uint64_t dir, uint64_t scopes[3])
{
	scopes[0] = NADB_ROOT_INO;
	scopes[1] = scopes[2] = 0;
	for (int depth = 0; depth < 4096; depth++) {
		struct inode in;
		int rc = inode_get(st, dir, &in);
		if (rc)
			return rc;
		uint8_t level = in.r.level;
		uint64_t parent = in.r.parent;
		inode_release(&in);
		if (level == NADB_LEVEL_ROOT)
			return 0;
		if (level == NADB_LEVEL_DB) {
			scopes[1] = dir;
			return 0;
		}
		if (level == NADB_LEVEL_NAMESPACE) {
			scopes[2] = dir;
			scopes[1] = parent;
			return 0;
		}
		dir = parent;
	}
	return -ELOOP;
}

/* The rows a change in scopes SCOPES (root, database, namespace) is
 * counted in: the namespace's alone if there is one. */
static void counted_in(uint64_t scopes[3])
{
	if (scopes[2])
		scopes[0] = scopes[1] = 0;
}

static int add_to_scopes(struct nadb_store *st, const uint64_t scopes[3],
			 const int64_t delta[C_COUNT], int sign)
{
	int64_t d[C_COUNT];
	for (int i = 0; i < C_COUNT; i++)
		d[i] = sign * delta[i];
	uint64_t rows[3] = {scopes[0], scopes[1], scopes[2]};
	counted_in(rows);
	int rc = 0;
	for (int i = 0; !rc && i < 3; i++)
		if (rows[i])
			rc = row_add(st, rows[i], d);
	return rc;
}

static int stats_link_changed(struct nadb_store *st, uint64_t ino, uint32_t mode,
			      uint64_t parent, int delta)
{
	uint64_t scopes[3];
	int rc = scopes_of(st, parent, scopes);
	if (rc)
		return rc;
	int64_t d[C_COUNT] = {0};
	if (S_ISDIR(mode)) {
		/* What the new directory is follows from where it is. */
		if (parent == NADB_ROOT_INO)
			d[C_DATABASES] = delta;
		else if (scopes[2] == 0)
			d[C_NAMESPACES] = delta;
		else
			d[C_DIRS] = delta;
	} else {
		struct inode in;
		rc = inode_get(st, ino, &in);
		if (rc)
			return rc;
		d[C_KEYS] = delta;
		d[C_BYTES] = delta * (int64_t)in.r.size;
		d[C_EXPIRING] = in.r.expires ? delta : 0;
		inode_release(&in);
	}
	return add_to_scopes(st, scopes, d, 1);
}

int counters_add_in(struct nadb_store *st, uint64_t dir, enum counter c, int64_t delta)
{
	uint64_t scopes[3];
	int64_t d[C_COUNT] = {0};
	d[c] = delta;
	int rc = scopes_of(st, dir, scopes);
	return rc ? rc : add_to_scopes(st, scopes, d, 1);
}

struct names_walk {
	struct nadb_store *st;
	uint8_t prefix[INO_KEY_LEN];
	enum counter c;
	int64_t delta;
};

static int count_in_scope(void *ctx, const void *key, size_t klen, const void *val,
			  size_t vlen)
{
	(void)val;
	(void)vlen;
	struct names_walk *w = ctx;
	if (klen <= 2 * INO_KEY_LEN || memcmp(key, w->prefix, INO_KEY_LEN))
		return 1;
	uint64_t parent = 0;
	for (int i = 0; i < 8; i++)
		parent = parent << 8 | ((const uint8_t *)key)[INO_KEY_LEN + i];
	return counters_add_in(w->st, parent, w->c, w->delta);
}

/* Count DELTA in counter C for each name of key INO, where it counts. */
static int count_per_name(struct nadb_store *st, uint64_t ino, enum counter c, int64_t delta)
{
	struct names_walk w = {.st = st, .c = c, .delta = delta};
	ino_key(w.prefix, ino);
	/* The rows are updated while the links are scanned: the scan reads
	 * the links table only. */
	return st->kv->ops->scan_prefix(st->kv, KV_LINKS, w.prefix, INO_KEY_LEN, count_in_scope, &w);
}

static int stats_size_changed(struct nadb_store *st, uint64_t ino, int64_t delta)
{
	return delta ? count_per_name(st, ino, C_BYTES, delta) : 0;
}

static int stats_expiring_changed(struct nadb_store *st, uint64_t ino, int delta)
{
	return count_per_name(st, ino, C_EXPIRING, delta);
}

/* A database or namespace is deleted: its row goes, what it counted of
 * keys ever reaped staying in the scopes above it. */
static int drop_scope_row(struct nadb_store *st, uint64_t ino, const struct inode_rec *r)
{
	if (!S_ISDIR(r->mode) || r->level == NADB_LEVEL_ROOT || r->level > NADB_LEVEL_NAMESPACE)
		return 0;
	struct counter_row row;
	int rc = read_row(st, ino, &row);
	if (!rc && r->level == NADB_LEVEL_NAMESPACE && row.v[C_REAPED])
		rc = counters_add_in(st, r->parent, C_REAPED, row.v[C_REAPED]);
	uint8_t key[INO_KEY_LEN];
	if (!rc && (rc = st->kv->ops->del(st->kv, KV_COUNTERS, key, ino_key(key, ino))) == -ENOENT)
		rc = 0;
	return rc;
}

/* ---- directories moving between scopes ----------------------------------- */

struct subtree {
	struct nadb_store *st;
	int64_t t[C_COUNT];
	int depth;
};

static int sum_subtree(struct subtree *s, uint64_t dir);

struct dirent_walk {
	struct subtree *s;
	uint8_t prefix[INO_KEY_LEN];
};

static int sum_dirent(void *ctx, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	struct dirent_walk *w = ctx;
	struct dirent_val e;
	if (klen <= INO_KEY_LEN || memcmp(key, w->prefix, INO_KEY_LEN))
		return 1;
	if (dirent_decode(val, vlen, &e))
		return -EIO;
	if (S_ISDIR(e.mode)) {
		w->s->t[C_DIRS]++;
		return sum_subtree(w->s, e.ino);
	}
	struct inode in;
	int rc = inode_get(w->s->st, e.ino, &in);
	if (rc)
		return rc;
	w->s->t[C_KEYS]++;
	w->s->t[C_BYTES] += (int64_t)in.r.size;
	w->s->t[C_EXPIRING] += in.r.expires ? 1 : 0;
	inode_release(&in);
	return 0;
}

static int sum_subtree(struct subtree *s, uint64_t dir)
{
	if (++s->depth > 4096)
		return -ELOOP;
	struct dirent_walk w = {.s = s};
	ino_key(w.prefix, dir);
	int rc = s->st->kv->ops->scan(s->st->kv, KV_DIRENTS, w.prefix, INO_KEY_LEN,
				      sum_dirent, &w);
	s->depth--;
	return rc;
}

/* Move directory DIR's totals from the scopes it had under OLD_PARENT to
 * the ones it has under NEW_PARENT (its own link is counted by the entry
 * hooks).  Called after the move, with DIR's level already updated. */
static int stats_dir_moved(struct nadb_store *st, uint64_t dir, uint8_t old_level,
			   uint64_t old_parent, uint64_t new_parent)
{
	struct inode in;
	int rc = inode_get(st, dir, &in);
	if (rc)
		return rc;
	uint8_t new_level = in.r.level;
	inode_release(&in);
	uint64_t from[3], to[3];
	if ((rc = scopes_of(st, old_parent, from)) || (rc = scopes_of(st, new_parent, to)))
		return rc;
	/* The scopes the directory's contents count in, before and after. */
	if (old_level == NADB_LEVEL_DB)
		from[1] = dir;
	if (old_level == NADB_LEVEL_NAMESPACE)
		from[2] = dir;
	if (new_level == NADB_LEVEL_DB)
		to[1] = dir;
	if (new_level == NADB_LEVEL_NAMESPACE)
		to[2] = dir;
	counted_in(from);
	counted_in(to);
	if (!memcmp(from, to, sizeof(from)))
		return 0;
	struct subtree s = {.st = st};
	if (old_level <= NADB_LEVEL_NAMESPACE && old_level > NADB_LEVEL_ROOT) {
		struct counter_row row;
		if ((rc = read_row(st, dir, &row)))
			return rc;
		memcpy(s.t, row.v, sizeof(s.t));
	} else {
		rc = sum_subtree(&s, dir);
		if (rc)
			return rc;
	}
	/* Scopes in both lists keep their totals. */
	for (int i = 0; i < 3; i++) {
		bool kept = false;
		for (int j = 0; j < 3; j++)
			kept = kept || (from[i] && from[i] == to[j]);
		if (from[i] && !kept && (rc = add_to_scopes(st, (uint64_t[3]){from[i], 0, 0},
							    s.t, -1)))
			return rc;
	}
	for (int i = 0; i < 3; i++) {
		bool kept = false;
		for (int j = 0; j < 3; j++)
			kept = kept || (to[i] && to[i] == from[j]);
		if (to[i] && !kept && (rc = add_to_scopes(st, (uint64_t[3]){to[i], 0, 0},
							  s.t, 1)))
			return rc;
	}
	return 0;
}

/* ---- totals: a scope's own row and its namespaces' ---------------------- */

struct namespaces_walk {
	struct nadb_store *st;
	uint64_t dir;
	uint8_t prefix[INO_KEY_LEN];
	int sign;
	struct counter_row *sum;
};

static int add_namespaces(struct nadb_store *st, uint64_t dir, int sign,
			  struct counter_row *sum);

/* The directory a row of W's scan of directory entries names, into *DIR
 * (0: not a directory); 1 past W's directory's entries. */
static int subdir_of(const struct namespaces_walk *w, const void *key, size_t klen,
		     const void *val, size_t vlen, uint64_t *dir)
{
	struct dirent_val d;
	if (klen <= INO_KEY_LEN || memcmp(key, w->prefix, INO_KEY_LEN))
		return 1;
	if (dirent_decode(val, vlen, &d))
		return -EIO;
	*dir = S_ISDIR(d.mode) ? d.ino : 0;
	return 0;
}

static int add_namespace_entry(void *ctx, const void *key, size_t klen, const void *val,
			       size_t vlen)
{
	struct namespaces_walk *w = ctx;
	uint64_t dir;
	int rc = subdir_of(w, key, klen, val, vlen, &dir);
	if (rc || !dir)
		return rc;
	if (w->dir == NADB_ROOT_INO) /* a database */
		return add_namespaces(w->st, dir, w->sign, w->sum);
	struct counter_row row;
	rc = read_row(w->st, dir, &row);
	for (int c = 0; !rc && c < C_COUNT; c++)
		w->sum->v[c] += w->sign * row.v[c];
	return rc;
}

/* Add SIGN times the rows of the namespaces in database DIR (the root:
 * in every database) to *SUM. */
static int add_namespaces(struct nadb_store *st, uint64_t dir, int sign,
			  struct counter_row *sum)
{
	struct namespaces_walk w = {.st = st, .dir = dir, .sign = sign, .sum = sum};
	ino_key(w.prefix, dir);
	return st->kv->ops->scan_prefix(st->kv, KV_DIRENTS, w.prefix, INO_KEY_LEN,
					add_namespace_entry, &w);
}

static int take_out_of_database(void *ctx, const void *key, size_t klen, const void *val,
				size_t vlen)
{
	struct namespaces_walk *w = ctx;
	uint64_t db;
	int rc = subdir_of(w, key, klen, val, vlen, &db);
	if (rc || !db)
		return rc;
	struct counter_row in_db = {{0}};
	rc = add_namespaces(w->st, db, -1, &in_db);
	if (!rc)
		rc = row_add(w->st, db, in_db.v);
	for (int c = 0; !rc && c < C_COUNT; c++)
		w->sum->v[c] += in_db.v[c];
	return rc;
}

/* An expiry index row: its key counted as expiring, per name. */
static int count_expiring(void *ctx, const void *key, size_t klen, const void *val,
			  size_t vlen)
{
	(void)val;
	(void)vlen;
	struct nadb_store *st = ctx;
	uint64_t t, ino;
	if (klen != 16)
		return -EIO;
	memcpy(&t, key, 8);
	memcpy(&ino, (const uint8_t *)key + 8, 8);
	struct inode in;
	int rc = inode_get(st, be64toh(ino), &in);
	if (rc)
		return rc == -ENOENT ? 0 : rc; /* a stale row: the reaper drops it */
	bool current = in.r.expires == (int64_t)be64toh(t);
	inode_release(&in);
	return current ? count_per_name(st, be64toh(ino), C_EXPIRING, 1) : 0;
}

static int take_out_namespaces(struct nadb_store *st)
{
	struct counter_row in_root = {{0}}, root;
	struct namespaces_walk w = {.st = st, .dir = NADB_ROOT_INO, .sum = &in_root};
	ino_key(w.prefix, NADB_ROOT_INO);
	int rc = st->kv->ops->scan_prefix(st->kv, KV_DIRENTS, w.prefix, INO_KEY_LEN,
					  take_out_of_database, &w);
	if (!rc)
		rc = row_add(st, NADB_ROOT_INO, in_root.v);
	/* Keys with an expiry were counted in the root, by inode: now in
	 * their namespaces, by name. */
	if (!rc)
		rc = read_row(st, NADB_ROOT_INO, &root);
	if (!rc && root.v[C_EXPIRING])
		rc = counters_add(st, NADB_ROOT_INO, C_EXPIRING, -root.v[C_EXPIRING]);
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_EXPIRY, NULL, 0, count_expiring, st);
	return rc;
}

int stats_upgrade(struct nadb_store *st, uint32_t was)
{
	int rc = was < 3 ? take_out_namespaces(st) : 0;
	struct counter_row root;
	if (!rc && was < 4)
		rc = read_row(st, NADB_ROOT_INO, &root);
	if (!rc && was < 4 && root.v[C_TAGS_V3])
		rc = counters_add(st, NADB_ROOT_INO, C_TAGS_V3, -root.v[C_TAGS_V3]);
	return rc;
}

/* nadb_stats, with the chunks' figures if CHUNK_FIGURES (where the backend
 * tallies them, a round trip to it). */
static int read_stats(struct nadb_store *st, uint64_t scope, bool chunk_figures,
		      struct nadb_stats *out)
{
	memset(out, 0, sizeof(*out));
	file_delete_forgotten(st); /* the chunks of keys deleted are counted out */
	struct counter_row row = {{0}};
	pthread_mutex_lock(&st->meta_lock);
	struct inode in;
	int rc = inode_get(st, scope, &in);
	uint8_t level = 0;
	if (!rc) {
		level = in.r.level;
		if (!S_ISDIR(in.r.mode) || level > NADB_LEVEL_NAMESPACE)
			rc = -EINVAL;
		inode_release(&in);
	}
	if (!rc)
		rc = read_row(st, scope, &row);
	if (!rc && level < NADB_LEVEL_NAMESPACE)
		rc = add_namespaces(st, scope, 1, &row);
	if (!rc && scope == NADB_ROOT_INO)
		rc = tags_in_use(st, &out->tags);
	struct kv_tally chunks;
	bool tallied = chunk_figures && scope == NADB_ROOT_INO && st->kv->ops->tally;
	if (!rc && tallied)
		rc = st->kv->ops->tally(st->kv, KV_CHUNKS, &chunks, NULL, NULL);
	pthread_mutex_unlock(&st->meta_lock);
	if (rc)
		return rc;
	out->keys = (uint64_t)row.v[C_KEYS];
	out->bytes = (uint64_t)row.v[C_BYTES];
	out->databases = (uint64_t)row.v[C_DATABASES];
	out->namespaces = (uint64_t)row.v[C_NAMESPACES];
	out->dirs = (uint64_t)row.v[C_DIRS];
	if (scope != NADB_ROOT_INO)
		return 0;
	out->chunks = tallied ? chunks.rows : (uint64_t)row.v[C_CHUNKS];
	out->chunk_raw_bytes = tallied ? chunks.raw : (uint64_t)row.v[C_CHUNK_RAW];
	out->stored_bytes = tallied ? chunks.size : (uint64_t)row.v[C_CHUNK_BYTES];
	/* Every frame is a header and a payload: the header is no part of
	 * compression, so it is told apart (tiny values are mostly header). */
	out->frame_bytes = out->chunks * CHUNK_FRAME_HEAD;
	out->payload_bytes = out->stored_bytes > out->frame_bytes
				     ? out->stored_bytes - out->frame_bytes : 0;
	out->expiring = (uint64_t)row.v[C_EXPIRING];
	out->reaped = (uint64_t)row.v[C_REAPED];
	out->pack_bytes = st->blobs->ops->size(st->blobs);
	out->garbage_bytes = out->pack_bytes > out->stored_bytes
				     ? out->pack_bytes - out->stored_bytes : 0;
	out->buffered_bytes = atomic_load(&st->buffered);
	out->buffer_limit = (uint64_t)st->opt.buffer_mb << 20;
	return 0;
}

int nadb_stats(struct nadb_store *st, uint64_t scope, struct nadb_stats *out)
{
	return read_stats(st, scope, true, out);
}

int stats_names(struct nadb_store *st, struct nadb_stats *out)
{
	return read_stats(st, NADB_ROOT_INO, false, out);
}

static double ratio(uint64_t a, uint64_t b, double if_none)
{
	return b ? (double)a / (double)b : if_none;
}

void nadb_stats_figures(const struct nadb_stats *s, struct nadb_figure out[NADB_FIGURES])
{
	const struct nadb_figure f[NADB_FIGURES] = {
		{"keys", "keys", false, false, "Keys (names of values) in the store.", s->keys, 0},
		{"databases", "databases", false, false, "Databases.", s->databases, 0},
		{"namespaces", "namespaces", false, false, "Namespaces.", s->namespaces, 0},
		{"dirs", "directories", false, false, "Directories below namespaces.", s->dirs, 0},
		{"tags", "tags", false, false, "Tags in use.", s->tags, 0},
		{"logical_bytes", "logical_bytes", false, false,
		 "Bytes of all values, as read back.", s->bytes, 0},
		{"chunks", "chunks", false, false, "Distinct chunks stored.", s->chunks, 0},
		{"chunk_bytes", "chunk_bytes", false, false,
		 "Bytes of the distinct chunks before compression.", s->chunk_raw_bytes, 0},
		{"payload_bytes", "payload_bytes", false, false,
		 "Bytes of the distinct chunks as stored (compressed or not), frame headers "
		 "excluded.", s->payload_bytes, 0},
		{"frame_overhead_bytes", "frame_overhead_bytes", false, false,
		 "Bytes of frame headers, one per distinct chunk.", s->frame_bytes, 0},
		{"stored_bytes", "stored_bytes", false, false,
		 "Bytes of the distinct chunks' frames: payload and headers.", s->stored_bytes, 0},
		{"pack_bytes", "pack_bytes", false, false, "Bytes of all pack segments.",
		 s->pack_bytes, 0},
		{"garbage_bytes", "garbage_bytes", false, false, "Pack bytes no chunk uses.",
		 s->garbage_bytes, 0},
		{"dedup_ratio", "dedup_ratio", false, true,
		 "Logical bytes over chunk bytes (1: nothing shared).", 0,
		 ratio(s->bytes, s->chunk_raw_bytes, 1.0)},
		{"compression_ratio", "compression_ratio", false, true,
		 "Chunk bytes over payload bytes (1: nothing compressed).", 0,
		 ratio(s->chunk_raw_bytes, s->payload_bytes, 1.0)},
		{"buffer_bytes", "buffer_bytes", false, false, "Bytes in write buffers.",
		 s->buffered_bytes, 0},
		{"buffer_limit", "buffer_limit_bytes", false, false, "Bound on write buffers.",
		 s->buffer_limit, 0},
		{"buffer_utilization_pct", NULL, false, true,
		 "Write buffers' use, percent of their bound.", 0,
		 100.0 * ratio(s->buffered_bytes, s->buffer_limit, 0.0)},
		{"expiring", "expiring_keys", false, false, "Keys with an expiry, not yet reaped.",
		 s->expiring, 0},
		{"reaped", "reaped_keys", true, false, "Keys the reaper deleted, ever.", s->reaped,
		 0},
		{"frame_overhead_per_chunk", NULL, false, false, "Bytes of one frame header.",
		 CHUNK_FRAME_HEAD, 0},
	};
	memcpy(out, f, sizeof(f));
}

/* ---- fsck: the counters against a walk of the tree ---------------------- */

struct expected {
	uint64_t scope[4096];
	struct counter_row row[4096]; /* by scope, linear: DBs and NSs are few */
	size_t n;
	bool overflow;
	/* The backend keeps the chunks' figures (kv_ops.tally; fsck checks
	 * it there): the root's chunk counters are not kept, and kept as they
	 * are here (a store kept them before it had a tally). */
	bool chunks_tallied;
};

static struct counter_row *row_for(struct expected *e, uint64_t scope)
{
	for (size_t i = 0; i < e->n; i++)
		if (e->scope[i] == scope)
			return &e->row[i];
	if (e->n == sizeof(e->scope) / sizeof(e->scope[0])) {
		e->overflow = true;
		return NULL;
	}
	e->scope[e->n] = scope;
	memset(&e->row[e->n], 0, sizeof(e->row[0]));
	return &e->row[e->n++];
}

static void count_in(struct expected *e, const uint64_t scopes[3], enum counter c,
		     int64_t delta)
{
	uint64_t rows[3] = {scopes[0], scopes[1], scopes[2]};
	counted_in(rows);
	for (int i = 0; i < 3; i++) {
		struct counter_row *r = rows[i] ? row_for(e, rows[i]) : NULL;
		if (r)
			r->v[c] += delta;
	}
}

struct walk {
	struct nadb_store *st;
	stats_facts_fn facts; /* or NULL: read each key's record */
	void *facts_ctx;
	struct expected *e;
	uint64_t scopes[3]; /* of the directory being walked */
	uint64_t dir;
	int depth;
};

static int walk_dir(struct walk *w);

static int key_facts(struct walk *w, uint64_t ino, uint64_t *size, bool *expiring)
{
	if (w->facts)
		return w->facts(w->facts_ctx, ino, size, expiring);
	struct inode in;
	int rc = inode_get(w->st, ino, &in);
	if (rc)
		return rc;
	*size = in.r.size;
	*expiring = in.r.expires != 0;
	inode_release(&in);
	return 0;
}

static int walk_entry(void *ctx, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	struct walk *w = ctx;
	struct dirent_val d;
	uint8_t prefix[INO_KEY_LEN];
	ino_key(prefix, w->dir);
	if (klen <= INO_KEY_LEN || memcmp(key, prefix, INO_KEY_LEN))
		return 1;
	if (dirent_decode(val, vlen, &d))
		return -EIO;
	if (!S_ISDIR(d.mode)) {
		uint64_t size;
		bool expiring;
		int rc = key_facts(w, d.ino, &size, &expiring);
		if (rc)
			return rc == -ENOENT ? 0 : rc; /* fsck reports it elsewhere */
		count_in(w->e, w->scopes, C_KEYS, 1);
		count_in(w->e, w->scopes, C_BYTES, (int64_t)size);
		count_in(w->e, w->scopes, C_EXPIRING, expiring ? 1 : 0);
		return 0;
	}
	struct walk sub = *w;
	sub.dir = d.ino;
	sub.depth++;
	if (w->dir == NADB_ROOT_INO) {
		count_in(w->e, w->scopes, C_DATABASES, 1);
		sub.scopes[1] = d.ino;
		row_for(w->e, d.ino);
	} else if (!w->scopes[2]) {
		count_in(w->e, w->scopes, C_NAMESPACES, 1);
		sub.scopes[2] = d.ino;
		row_for(w->e, d.ino);
	} else {
		count_in(w->e, w->scopes, C_DIRS, 1);
	}
	return walk_dir(&sub);
}

static int walk_dir(struct walk *w)
{
	if (w->depth > 4096)
		return -ELOOP;
	uint8_t prefix[INO_KEY_LEN];
	ino_key(prefix, w->dir);
	return w->st->kv->ops->scan(w->st->kv, KV_DIRENTS, prefix, INO_KEY_LEN, walk_entry, w);
}

static int sum_chunk(void *ctx, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs,
		     const struct chunk_loc *loc)
{
	(void)hash;
	struct counter_row *r = ctx;
	if (refs == 0)
		return 0; /* waiting to be freed (chunk.c, "Freeing"): out of the statistics */
	r->v[C_CHUNKS]++;
	r->v[C_CHUNK_BYTES] += loc->blob.len;
	r->v[C_CHUNK_RAW] += loc->raw_len;
	return 0;
}

static const char *const counter_names[C_COUNT] = {
	"keys", "bytes", "databases", "namespaces", "directories", "chunks",
	"stored bytes", "chunk bytes", "tags (format 3)", "expiring keys", "reaped keys",
};

struct stored_rows {
	struct expected *e;
	void (*problem)(void *ctx, const char *line);
	void *ctx;
	uint64_t problems;
};

/* The scope of a counters row (KEY), or 0 if malformed. */
static uint64_t scope_of_row(const void *key, size_t klen, size_t vlen)
{
	if (klen != INO_KEY_LEN || vlen != sizeof(struct counter_row))
		return 0;
	uint64_t scope = 0;
	for (int i = 0; i < 8; i++)
		scope = scope << 8 | ((const uint8_t *)key)[i];
	return scope;
}

static int keep_reaped(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct expected *e = ctx;
	uint64_t scope = scope_of_row(key, klen, vlen);
	struct counter_row have;
	if (!scope)
		return -EIO;
	memcpy(&have, val, sizeof(have));
	for (size_t i = 0; i < e->n; i++)
		if (e->scope[i] == scope)
			e->row[i].v[C_REAPED] = have.v[C_REAPED];
	static const int chunk_counters[] = {C_CHUNKS, C_CHUNK_BYTES, C_CHUNK_RAW};
	struct counter_row *root = e->chunks_tallied && scope == NADB_ROOT_INO
					   ? row_for(e, scope) : NULL;
	for (size_t c = 0; root && c < sizeof(chunk_counters) / sizeof(*chunk_counters); c++)
		root->v[chunk_counters[c]] = have.v[chunk_counters[c]];
	return 0;
}

static int compare_row(void *ctx, const void *key, size_t klen, const void *val,
		       size_t vlen)
{
	struct stored_rows *s = ctx;
	uint64_t scope = scope_of_row(key, klen, vlen);
	if (!scope)
		return -EIO;
	struct counter_row have;
	memcpy(&have, val, sizeof(have));
	struct counter_row *want = row_for(s->e, scope);
	if (!want)
		return 0;
	for (int c = 0; c < C_COUNT; c++) {
		if (have.v[c] == want->v[c])
			continue;
		char line[200];
		snprintf(line, sizeof(line), "counters of %llu: %s is %lld, should be %lld",
			 (unsigned long long)scope, counter_names[c], (long long)have.v[c],
			 (long long)want->v[c]);
		s->problems++;
		if (s->problem)
			s->problem(s->ctx, line);
	}
	want->v[0] = INT64_MIN; /* seen */
	return 0;
}

int stats_check(struct nadb_store *st, bool repair,
		void (*problem)(void *ctx, const char *line), void *ctx,
		stats_facts_fn facts, void *facts_ctx, uint64_t *problems)
{
	struct expected *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	struct counter_row *root = row_for(e, NADB_ROOT_INO);
	struct walk w = {.st = st, .facts = facts, .facts_ctx = facts_ctx, .e = e,
			 .scopes = {NADB_ROOT_INO, 0, 0}, .dir = NADB_ROOT_INO};
	e->chunks_tallied = st->kv->ops->tally != NULL;
	int rc = walk_dir(&w);
	if (!rc && !e->chunks_tallied)
		rc = chunk_scan(&st->chunks, NULL, sum_chunk, root);
	/* How many keys were ever reaped cannot be recomputed: kept, in
	 * every scope the walk found. */
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_COUNTERS, NULL, 0, keep_reaped, e);
	uint8_t key[INO_KEY_LEN];
	if (e->overflow)
		rc = -E2BIG;
	/* The walk's rows; compare_row adds a zero row for each stored scope
	 * the walk did not find (a directory that is gone), to be deleted. */
	size_t walked = e->n;
	struct counter_row *copy = NULL;
	if (!rc && repair && (copy = malloc(walked * sizeof(*copy) + 1)))
		memcpy(copy, e->row, walked * sizeof(*copy));
	struct stored_rows s = {.e = e, .problem = problem, .ctx = ctx};
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_COUNTERS, NULL, 0, compare_row, &s);
	for (size_t i = 0; !rc && i < e->n; i++) {
		if (e->row[i].v[0] == INT64_MIN)
			continue;
		/* no row and nothing to count: the same as a row of zeros
		 * (the root of a store that never held a key has none) */
		bool zero = true;
		for (int c = 0; c < C_COUNT; c++)
			zero = zero && e->row[i].v[c] == 0;
		if (zero)
			continue;
		s.problems++;
		if (problem)
			problem(ctx, "counters: a database or namespace has no counters");
	}
	if (!rc && repair && copy && s.problems) {
		rc = step_begin(st);
		for (size_t i = 0; !rc && i < e->n; i++) {
			size_t klen = ino_key(key, e->scope[i]);
			if (i < walked)
				rc = st->kv->ops->put(st->kv, KV_COUNTERS, key, klen, &copy[i],
						      sizeof(copy[i]));
			else if ((rc = st->kv->ops->del(st->kv, KV_COUNTERS, key, klen)) == -ENOENT)
				rc = 0;
		}
		rc = step_end(st, rc);
	}
	free(copy);
	free(e);
	*problems = s.problems;
	return rc;
}

/* ---- the tree's events (index.h) ---------------------------------------- */

static int count_link(struct nadb_store *st, uint64_t ino, uint32_t mode,
		      uint64_t parent, const char *name, int delta)
{
	(void)name;
	return stats_link_changed(st, ino, mode, parent, delta);
}

/* Totals of a moved directory change scope with it. */
static int move_totals(struct nadb_store *st, uint64_t dir, uint8_t old_level,
		       uint64_t old_parent, uint64_t parent, const char *name,
		       void *state)
{
	(void)name;
	(void)state;
	return old_parent == parent ? 0
				    : stats_dir_moved(st, dir, old_level, old_parent, parent);
}

const struct index_hooks stats_hooks = {
	.name = "stats",
	.link_changed = count_link,
	.dir_arrived = move_totals,
	.size_changed = stats_size_changed,
	.expiring_changed = stats_expiring_changed,
	.inode_deleting = drop_scope_row,
};
