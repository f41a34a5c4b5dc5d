/* fsck.c -- an offline consistency check of a whole store (fsck.h).
 *
 * It rebuilds from the inode table what the chunk and directory tables
 * should say -- how many references each chunk has, how many links each
 * inode has -- and compares.  It reads every chunk back and checks it
 * against its hash, so a flipped bit in a pack is found too.  Memory is
 * two hash maps: one entry per inode and one per chunk.
 */
#include "fsck.h"
#include "grow.h"
#include "log.h"
#include "store_int.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* An open-addressing map from a 16-byte key to counters. */
struct entry {
	uint8_t key[16];
	uint32_t used;
	uint32_t count;  /* references seen (chunks) / links seen (inodes) */
	uint32_t subdirs;
	uint32_t mode, nlink;
	uint64_t parent;
	uint64_t size; /* inodes: the key's size and whether it expires */
	bool expiring;
};

/* One more reference or link, saturating as chunk counts do
 * (CHUNK_REFS_MAX): a saturated count agrees with a saturated record. */
static void count_one(struct entry *e)
{
	if (e->count < CHUNK_REFS_MAX)
		e->count++;
}

struct map {
	struct entry *e;
	size_t cap, n;
};

static uint64_t key_hash(const uint8_t key[16])
{
	uint64_t a, b;
	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	return (a ^ (b * 0x9E3779B97F4A7C15ULL)) * 0xff51afd7ed558ccdULL;
}

static int map_grow(struct map *m)
{
	size_t cap = m->cap ? m->cap * 2 : 1024;
	struct entry *e = calloc(cap, sizeof(*e));
	if (!e)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->e[i].used)
			continue;
		size_t j = key_hash(m->e[i].key) & (cap - 1);
		while (e[j].used)
			j = (j + 1) & (cap - 1);
		e[j] = m->e[i];
	}
	free(m->e);
	m->e = e;
	m->cap = cap;
	return 0;
}

static struct entry *map_get(struct map *m, const uint8_t key[16], bool add)
{
	if (add && (m->n + 1) * 2 > m->cap && map_grow(m))
		return NULL;
	if (!m->cap)
		return NULL;
	size_t j = key_hash(key) & (m->cap - 1);
	while (m->e[j].used) {
		if (!memcmp(m->e[j].key, key, 16))
			return &m->e[j];
		j = (j + 1) & (m->cap - 1);
	}
	if (!add)
		return NULL;
	memcpy(m->e[j].key, key, 16);
	m->e[j].used = 1;
	m->n++;
	return &m->e[j];
}

static void ino_map_key(uint8_t key[16], uint64_t ino)
{
	memset(key, 0, 16);
	memcpy(key, &ino, sizeof(ino));
}

/* A set of 64-bit hashes (0 stands for "empty", so a hash of 0 is kept
 * as 1): the links table's rows, which each directory entry must find.
 * Read once with the table's scan rather than one get an entry, which on
 * Redis was a round trip each; a collision could hide one missing row,
 * one in 2^64 / rows. */
struct hash_set {
	uint64_t *v;
	size_t cap, n;
};

static void name_hash(uint8_t out[16], const void *parent_and_name, size_t len);

/* The set's hash of a row's key: name_hash's, folded to 64 bits. */
static uint64_t set_hash(const void *data, size_t len)
{
	uint8_t h[16];
	uint64_t a, b;
	name_hash(h, data, len);
	memcpy(&a, h, 8);
	memcpy(&b, h + 8, 8);
	a ^= b >> 29;
	return a ? a : 1;
}

static int set_add(struct hash_set *s, uint64_t h)
{
	if ((s->n + 1) * 2 > s->cap) {
		struct hash_set g = {.cap = s->cap ? 2 * s->cap : 1024};
		if (!(g.v = calloc(g.cap, sizeof(*g.v))))
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++)
			if (s->v[i])
				(void)set_add(&g, s->v[i]);
		free(s->v);
		*s = g;
	}
	size_t j = h & (s->cap - 1);
	while (s->v[j] && s->v[j] != h)
		j = (j + 1) & (s->cap - 1);
	s->n += !s->v[j];
	s->v[j] = h;
	return 0;
}

static bool set_has(const struct hash_set *s, uint64_t h)
{
	if (!s->cap)
		return false;
	for (size_t j = h & (s->cap - 1); s->v[j]; j = (j + 1) & (s->cap - 1))
		if (s->v[j] == h)
			return true;
	return false;
}

struct fsck {
	struct nadb_store *st;
	struct map inodes, chunks;
	struct hash_set links; /* the links table's rows (set_hash of the key) */
	uint64_t nlinks;       /* ... and how many */
	nadb_fsck_report_fn report;
	void *ctx;
	struct nadb_fsck_result *res;
	uint64_t *seg_live; /* live bytes per segment, as the chunks say */
	size_t nsegs;       /* its capacity: segments past it hold none */
};

__attribute__((format(printf, 2, 3))) static void problem(struct fsck *f,
							  const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	f->res->problems++;
	if (f->report)
		f->report(f->ctx, line);
}

static int scan_inode(void *ctx, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	struct fsck *f = ctx;
	struct inode_rec r;
	const uint8_t *payload;
	size_t plen;
	if (klen != INO_KEY_LEN || inode_decode(val, vlen, &r, &payload, &plen)) {
		problem(f, "inode table: malformed row");
		return 0;
	}
	uint64_t ino = kv_key_ino(key);
	uint8_t k[16];
	ino_map_key(k, ino);
	struct entry *e = map_get(&f->inodes, k, true);
	if (!e)
		return -ENOMEM;
	e->mode = r.mode;
	e->nlink = r.nlink;
	e->parent = r.parent;
	e->size = r.size;
	e->expiring = r.expires != 0;
	f->res->inodes++;
	if (!S_ISREG(r.mode))
		return 0;
	const uint8_t *list = payload;
	size_t n = plen / CHUNK_HASH_LEN;
	size_t want = (size_t)((r.size + f->st->chunk_size - 1) / f->st->chunk_size);
	if (n != want || plen % CHUNK_HASH_LEN)
		problem(f, "inode %llu: %zu chunks for %llu bytes", (unsigned long long)ino,
			n, (unsigned long long)r.size);
	for (size_t i = 0; i < n; i++) {
		if (chunk_is_hole(list + i * CHUNK_HASH_LEN))
			continue;
		struct entry *c = map_get(&f->chunks, list + i * CHUNK_HASH_LEN, true);
		if (!c)
			return -ENOMEM;
		count_one(c);
	}
	return 0;
}

static int scan_pending(void *ctx, const void *key, size_t klen, const void *val,
			size_t vlen)
{
	(void)key;
	(void)klen;
	struct fsck *f = ctx;
	if (vlen != CHUNK_HASH_LEN)
		return 0;
	struct entry *c = map_get(&f->chunks, val, true);
	if (!c)
		return -ENOMEM;
	count_one(c);
	return 0;
}

/* A dropped reference not settled yet is one the chunk still counts. */
static int count_drop(void *ctx, uint64_t part, const uint8_t hash[CHUNK_HASH_LEN])
{
	(void)part;
	return scan_pending(ctx, NULL, 0, hash, CHUNK_HASH_LEN); /* counted the same */
}

static int scan_dirent(void *ctx, const void *key, size_t klen, const void *val,
		       size_t vlen)
{
	struct fsck *f = ctx;
	f->res->dirents++;
	struct dirent_val d;
	if (klen <= INO_KEY_LEN || klen > NAME_KEY_MAX || dirent_decode(val, vlen, &d)) {
		problem(f, "directory table: malformed row");
		return 0;
	}
	uint64_t parent = kv_key_ino(key);
	int nlen = (int)(klen - INO_KEY_LEN);
	const char *name = (const char *)key + INO_KEY_LEN;
	uint8_t k[16];
	ino_map_key(k, parent);
	struct entry *p = map_get(&f->inodes, k, false);
	if (!p || !S_ISDIR(p->mode))
		problem(f, "entry '%.*s' is in %llu, which is not a directory", nlen, name,
			(unsigned long long)parent);
	ino_map_key(k, d.ino);
	struct entry *c = map_get(&f->inodes, k, false);
	if (!c) {
		problem(f, "entry '%.*s' in %llu names missing inode %llu", nlen, name,
			(unsigned long long)parent, (unsigned long long)d.ino);
		return 0;
	}
	count_one(c);
	uint8_t lkey[LINK_KEY_MAX];
	ino_key(lkey, d.ino);
	memcpy(lkey + INO_KEY_LEN, key, klen);
	if (!set_has(&f->links, set_hash(lkey, INO_KEY_LEN + klen)))
		problem(f, "entry '%.*s' in %llu is missing from the links table", nlen, name,
			(unsigned long long)parent);
	if (S_ISDIR(c->mode)) {
		if (p)
			p->subdirs++;
		if (c->parent != parent)
			problem(f, "directory %llu says its parent is %llu, but it is in %llu",
				(unsigned long long)d.ino, (unsigned long long)c->parent,
				(unsigned long long)parent);
	}
	return 0;
}

static int note_link(void *ctx, const void *key, size_t klen, const void *val,
		     size_t vlen)
{
	(void)val;
	(void)vlen;
	struct fsck *f = ctx;
	f->nlinks++;
	return set_add(&f->links, set_hash(key, klen));
}

static int fix_nlink(struct fsck *f, uint64_t ino, uint32_t nlink)
{
	struct inode in;
	int rc = inode_get(f->st, ino, &in);
	if (rc)
		return rc;
	in.r.nlink = nlink;
	rc = step_begin(f->st);
	if (!rc)
		rc = step_end(f->st, inode_put(f->st, ino, &in.r, in.payload, in.payload_len));
	inode_release(&in);
	return rc;
}

/* ---- repair: keys no name leads to ------------------------------------------
 * Nothing readable is thrown away: a key whose every name was lost is
 * kept as /lost+found/inodes/ino-N, where its owner can look at it. */

/* The directory NAME in PARENT, made (with LEVEL) if missing. */
static int lost_dir(struct fsck *f, uint64_t parent, const char *name, uint8_t level,
		    uint64_t *out)
{
	uint8_t k[NAME_KEY_MAX];
	struct kv_val v;
	struct dirent_val d;
	struct nadb_store *st = f->st;
	if (!st->kv->ops->get(st->kv, KV_DIRENTS, k, name_key(k, parent, name), &v) &&
	    !dirent_decode(v.data, v.len, &d)) {
		*out = d.ino;
		return S_ISDIR(d.mode) ? 0 : -ENOTDIR;
	}
	int64_t now = now_ns();
	struct inode_rec r = {
		.mode = S_IFDIR | 0700, .uid = getuid(), .gid = getgid(), .nlink = 2,
		.parent = parent, .atime = now, .mtime = now, .ctime = now, .btime = now,
		.level = level,
	};
	struct inode p;
	uint8_t mk[16];
	ino_map_key(mk, parent);
	struct entry *pe = map_get(&f->inodes, mk, false);
	int rc = tree_alloc_ino(st, parent, level, out);
	if (!rc)
		rc = inode_put(st, *out, &r, NULL, 0);
	if (!rc)
		rc = tree_put_entry(st, parent, name, *out, r.mode);
	if (!rc && !(rc = inode_get(st, parent, &p))) {
		p.r.nlink++; /* its new subdirectory's ".." */
		rc = inode_put(st, parent, &p.r, p.payload, p.payload_len);
		inode_release(&p);
	}
	if (!rc && pe) { /* check_links counts it, whether or not it saw it yet */
		pe->subdirs++;
		pe->nlink++;
	}
	return rc;
}

static int adopt_lost(struct fsck *f, uint64_t ino, uint32_t mode)
{
	uint64_t db, ns;
	char name[32];
	snprintf(name, sizeof(name), "ino-%llu", (unsigned long long)ino);
	int rc = step_begin(f->st);
	if (rc)
		return rc;
	rc = lost_dir(f, NADB_ROOT_INO, "lost+found", NADB_LEVEL_DB, &db);
	if (!rc)
		rc = lost_dir(f, db, "inodes", NADB_LEVEL_NAMESPACE, &ns);
	if (!rc)
		rc = tree_put_entry(f->st, ns, name, ino, mode);
	return step_end(f->st, rc);
}

static int check_links(struct fsck *f, bool repair)
{
	for (size_t i = 0; i < f->inodes.cap; i++) {
		struct entry *e = &f->inodes.e[i];
		if (!e->used)
			continue;
		uint64_t ino;
		memcpy(&ino, e->key, sizeof(ino));
		uint32_t want = S_ISDIR(e->mode) ? 2 + e->subdirs : e->count;
		if (ino != NADB_ROOT_INO && e->count == 0) {
			/* A directory would need its level and its children's
			 * counters redone: reported only. */
			bool adopt = repair && !S_ISDIR(e->mode) && !adopt_lost(f, ino, e->mode);
			if (!adopt) {
				problem(f, "inode %llu is in no directory", (unsigned long long)ino);
				continue;
			}
			problem(f, "inode %llu is in no directory: kept as /lost+found/inodes/ino-%llu",
				(unsigned long long)ino, (unsigned long long)ino);
			f->res->repaired++;
			if (e->nlink == 1)
				continue;
			problem(f, "inode %llu has link count %u, but 1 link", (unsigned long long)ino,
				e->nlink);
			if (!fix_nlink(f, ino, 1))
				f->res->repaired++;
			continue;
		}
		if (e->nlink == want)
			continue;
		problem(f, "inode %llu has link count %u, but %u links", (unsigned long long)ino,
			e->nlink, want);
		if (repair && !fix_nlink(f, ino, want))
			f->res->repaired++;
	}
	return 0;
}

struct chunk_row {
	uint8_t hash[CHUNK_HASH_LEN];
	uint32_t refs;
	struct chunk_loc loc;
};

struct chunk_rows {
	struct chunk_row *rows;
	size_t n, cap;
};

/* Chunk rows are read first, then checked: reading a chunk back must not
 * happen inside the table scan. */
static int collect_chunk(void *ctx, const uint8_t hash[CHUNK_HASH_LEN],
			 uint32_t refs, const struct chunk_loc *loc)
{
	struct chunk_rows *l = ctx;
	if (ARRAY_GROW(l->rows, l->n, l->cap))
		return -ENOMEM;
	struct chunk_row *row = &l->rows[l->n++];
	memcpy(row->hash, hash, CHUNK_HASH_LEN);
	row->refs = refs;
	row->loc = *loc;
	return 0;
}

static int set_refs(struct fsck *f, const uint8_t hash[CHUNK_HASH_LEN], uint32_t want)
{
	int rc = step_begin(f->st);
	if (!rc)
		rc = step_end(f->st, chunk_set_refs(&f->st->chunks, hash, want));
	return rc;
}

/* A chunk no value names, at zero references rightly: noted again to be
 * freed, where the store frees after a grace (the backend's check may
 * have found its note lost). */
static int note_zero(struct fsck *f, const uint8_t hash[CHUNK_HASH_LEN])
{
	int rc = step_begin(f->st);
	if (!rc)
		rc = step_end(f->st, chunk_note_zero(&f->st->chunks, hash));
	return rc;
}

struct referrers {
	struct fsck *f;
	const uint8_t *hash;
	char *out;
	size_t size, len;
	unsigned n;
};

static int find_referrer(void *ctx, const void *key, size_t klen, const void *val,
			 size_t vlen)
{
	struct referrers *r = ctx;
	struct inode_rec rec;
	const uint8_t *list;
	size_t n;
	if (klen != INO_KEY_LEN || inode_decode(val, vlen, &rec, &list, &n))
		return 0;
	if (!S_ISREG(rec.mode))
		return 0;
	n /= CHUNK_HASH_LEN;
	for (size_t i = 0; i < n; i++) {
		if (memcmp(list + i * CHUNK_HASH_LEN, r->hash, CHUNK_HASH_LEN))
			continue;
		if (r->n++ < 8) {
			/* The path is found after the scan: inode_path scans too. */
			uint64_t ino = kv_key_ino(key);
			int w = snprintf(r->out + r->len, r->size - r->len, "%s%llu",
					 r->len ? "," : "", (unsigned long long)ino);
			if (w > 0 && (size_t)w < r->size - r->len)
				r->len += (size_t)w;
		}
		break;
	}
	return 0;
}

/* " (key /DB/NS/KEY, ...)": the keys whose values hold chunk HASH, for a
 * problem line.  Only a damaged chunk pays for this scan. */
static void keys_of_chunk(struct fsck *f, const uint8_t hash[CHUNK_HASH_LEN], char *out,
			  size_t size)
{
	char inos[256] = "";
	struct referrers r = {.f = f, .hash = hash, .out = inos, .size = sizeof(inos)};
	size_t len = 0;
	out[0] = 0;
	if (f->st->kv->ops->scan(f->st->kv, KV_INODES, NULL, 0, find_referrer, &r) || !r.n)
		return;
	len += (size_t)snprintf(out, size, " (%s ", r.n > 1 ? "keys" : "key");
	char *save = NULL;
	for (char *tok = strtok_r(inos, ",", &save); tok && len < size;
	     tok = strtok_r(NULL, ",", &save)) {
		char path[1024];
		inode_path(f->st, strtoull(tok, NULL, 10), path, sizeof(path));
		len += (size_t)snprintf(out + len, size - len, "%s%s",
					tok == inos ? "" : ", ", path);
	}
	if (len < size)
		snprintf(out + len, size - len, "%s)", r.n > 8 ? ", ..." : "");
}

/* Chunks the tables lost or point at the wrong bytes: found again by
 * their hash in the packs' frame headers, checked, and re-recorded. */
struct refind {
	struct fsck *f;
	struct map want; /* hash -> references the values hold */
	uint8_t *buf;
	uint64_t found;
};

static int refind_frame(void *ctx, const uint8_t hash[CHUNK_HASH_LEN],
			const struct chunk_loc *loc)
{
	struct refind *r = ctx;
	struct entry *e = map_get(&r->want, hash, false);
	const char *why;
	if (!e || e->used != 1 || loc->raw_len > r->f->st->chunk_size ||
	    chunk_read_why(&r->f->st->chunks, loc, hash, 0, loc->raw_len, r->buf, &why))
		return 0;
	int rc = step_begin(r->f->st);
	if (!rc)
		rc = step_end(r->f->st, chunk_adopt(&r->f->st->chunks, hash, loc, e->count));
	if (rc)
		return rc;
	e->used = 2; /* found: a second copy of the frame is not needed */
	r->found++;
	return 0;
}

/* A hash damaged inside a value's chunk list names no frame, while the
 * frame it named is now named by no record: the same hash but for a byte
 * or two.  The value gets its true hash back. */
struct holders {
	const uint8_t *hash;
	uint64_t *ino;
	size_t n, cap;
};

static int find_holder(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct holders *h = ctx;
	struct inode_rec rec;
	const uint8_t *list;
	size_t n;
	if (klen != INO_KEY_LEN || inode_decode(val, vlen, &rec, &list, &n))
		return 0;
	n /= CHUNK_HASH_LEN;
	for (size_t i = 0; S_ISREG(rec.mode) && i < n; i++) {
		if (memcmp(list + i * CHUNK_HASH_LEN, h->hash, CHUNK_HASH_LEN))
			continue;
		if (ARRAY_GROW(h->ino, h->n, h->cap))
			return -ENOMEM;
		h->ino[h->n++] = kv_key_ino(key);
		break;
	}
	return 0;
}

/* Every value naming BAD names GOOD instead.  Inside a step. */
static int rename_chunk(struct fsck *f, const uint8_t bad[CHUNK_HASH_LEN],
			const uint8_t good[CHUNK_HASH_LEN])
{
	struct holders h = {.hash = bad};
	int rc = f->st->kv->ops->scan(f->st->kv, KV_INODES, NULL, 0, find_holder, &h);
	for (size_t i = 0; !rc && i < h.n; i++) {
		struct inode in;
		rc = inode_get(f->st, h.ino[i], &in);
		if (rc)
			break;
		for (size_t j = 0; j + CHUNK_HASH_LEN <= in.payload_len; j += CHUNK_HASH_LEN)
			if (!memcmp(in.payload + j, bad, CHUNK_HASH_LEN))
				memcpy(in.payload + j, good, CHUNK_HASH_LEN);
		rc = inode_put(f->st, h.ino[i], &in.r, in.payload, in.payload_len);
		inode_release(&in);
		char path[1024];
		inode_path(f->st, h.ino[i], path, sizeof(path));
		if (!rc)
			problem(f, "key %s: a chunk hash in its chunk list was damaged; the pack's "
				   "frame gives it back", path);
	}
	f->res->repaired += h.n;
	free(h.ino);
	return rc;
}

static unsigned bytes_apart(const uint8_t *a, const uint8_t *b)
{
	unsigned n = 0;
	for (int i = 0; i < CHUNK_HASH_LEN; i++)
		n += a[i] != b[i];
	return n;
}

static int near_frame(void *ctx, const uint8_t hash[CHUNK_HASH_LEN],
		      const struct chunk_loc *loc)
{
	struct refind *r = ctx;
	struct nadb_store *st = r->f->st;
	uint32_t refs;
	const char *why;
	if (!chunk_refs(&st->chunks, hash, &refs))
		return 0; /* a chunk in use */
	for (size_t i = 0; i < r->want.cap; i++) {
		struct entry *e = &r->want.e[i];
		if (e->used != 1 || bytes_apart(e->key, hash) > 2)
			continue;
		if (loc->raw_len > st->chunk_size ||
		    chunk_read_why(&st->chunks, loc, hash, 0, loc->raw_len, r->buf, &why))
			return 0;
		int rc = step_begin(st);
		if (!rc)
			rc = rename_chunk(r->f, e->key, hash);
		if (!rc)
			rc = chunk_adopt(&st->chunks, hash, loc, e->count);
		rc = step_end(st, rc);
		if (!rc)
			e->used = 2;
		return rc;
	}
	return 0;
}

static int refind_chunks(struct fsck *f, struct refind *r)
{
	if (!r->want.n)
		return 0;
	r->f = f;
	r->buf = malloc(f->st->chunk_size);
	int rc = r->buf ? chunk_frames(&f->st->chunks, refind_frame, r) : -ENOMEM;
	if (!rc && r->found < r->want.n)
		rc = chunk_frames(&f->st->chunks, near_frame, r);
	free(r->buf);
	f->res->repaired += r->found;
	for (size_t i = 0; !rc && i < r->want.cap; i++)
		if (r->want.e[i].used == 1)
			problem(f, "a chunk (%u references) is not in any pack either: not repaired",
				r->want.e[i].count);
	return rc;
}

static int want_chunk(struct refind *r, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs)
{
	struct entry *e = map_get(&r->want, hash, true);
	if (!e)
		return -ENOMEM;
	e->count = refs;
	return 0;
}

/* Chunks read ahead of the check, a batch at a time (chunk_prefetch): on
 * Redis each read alone is a round trip. */
#define FSCK_AHEAD BLOB_PREFETCH_MAX

static void prefetch_chunks(struct fsck *f, const struct chunk_row *rows, size_t n)
{
	const struct chunk_loc *locs[FSCK_AHEAD];
	size_t k = 0;
	for (size_t i = 0; i < n && i < FSCK_AHEAD; i++)
		if (rows[i].loc.raw_len <= f->st->chunk_size) /* else not read */
			locs[k++] = &rows[i].loc;
	chunk_prefetch(&f->st->chunks, locs, k);
}

static int check_chunks(struct fsck *f, bool repair)
{
	struct refind r = {0};
	struct chunk_rows l = {0};
	int rc = chunk_scan(&f->st->chunks, NULL, collect_chunk, &l);
	uint8_t *buf = malloc(f->st->chunk_size);
	if (!buf)
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < l.n; i++) {
		struct chunk_row *row = &l.rows[i];
		if (i % FSCK_AHEAD == 0)
			prefetch_chunks(f, l.rows + i, l.n - i);
		store_progress(f->st, "checking chunks", i, l.n);
		f->res->chunks++;
		f->res->chunk_bytes += row->loc.blob.len;
		struct entry *e = map_get(&f->chunks, row->hash, false);
		uint32_t want = e ? e->count : 0;
		if (e)
			e->used = 2; /* found in the chunk table */
		const char *why = "larger than a chunk";
		if (row->loc.raw_len > f->st->chunk_size ||
		    chunk_read_why(&f->st->chunks, &row->loc, row->hash, 0, row->loc.raw_len,
				   buf, &why)) {
			char keys[1200];
			keys_of_chunk(f, row->hash, keys, sizeof(keys));
			problem(f, "chunk at %08u.pack:%llu is damaged (%s)%s", row->loc.blob.seg,
				(unsigned long long)row->loc.blob.off, why ? why : "cannot be read",
				keys);
			if (repair && want && (rc = want_chunk(&r, row->hash, want)))
				break;
			if (repair && want)
				continue; /* its refcount is set when it is found */
		}
		if (row->refs != want) {
			problem(f, "chunk at %08u.pack:%llu has refcount %u, but %u references%s",
				row->loc.blob.seg, (unsigned long long)row->loc.blob.off,
				row->refs, want, want ? "" : " (orphan)");
			if (repair && !set_refs(f, row->hash, want))
				f->res->repaired++;
		} else if (repair && !want && (rc = note_zero(f, row->hash))) {
			break;
		}
	}
	for (size_t i = 0; !rc && i < f->chunks.cap; i++) {
		if (f->chunks.e[i].used != 1)
			continue;
		char keys[1200];
		keys_of_chunk(f, f->chunks.e[i].key, keys, sizeof(keys));
		problem(f, "a value names a chunk that is not stored (%u references)%s",
			f->chunks.e[i].count, keys);
		if (repair)
			rc = want_chunk(&r, f->chunks.e[i].key, f->chunks.e[i].count);
	}
	chunk_prefetch(&f->st->chunks, NULL, 0); /* what was fetched and not read */
	if (!rc && repair)
		rc = refind_chunks(f, &r);
	free(r.want.e);
	free(buf);
	free(l.rows);
	return rc;
}

/* ---- repair: names ----------------------------------------------------------
 * The directory table and the links table say the same thing both ways
 * round: (parent, name) -> ino and ino -> (parent, name).  Where damage
 * took a row from one of them, or a byte from a directory entry, the
 * other tells what it was.  Fixes are collected during a scan and made
 * after it, each in a step of its own. */

enum fix_kind { FIX_ENTRY_INO, DROP_ENTRY, ADD_LINK, ADD_ENTRY, DROP_LINK };

struct fix {
	enum fix_kind kind;
	uint64_t ino, parent;
	uint32_t mode;
	char name[NADB_NAME_MAX + 1];
};

struct fixes {
	struct fsck *f;
	struct map by_name; /* hash of (parent, name) -> ino in .parent: the links table */
	struct fix *v;
	size_t n, cap;
};

static void name_hash(uint8_t out[16], const void *parent_and_name, size_t len)
{
	uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL;
	const uint8_t *p = parent_and_name;
	for (size_t i = 0; i < len; i++) {
		a = (a ^ p[i]) * 0x100000001b3ULL;
		b = (b ^ p[i]) * 0x9E3779B97F4A7C15ULL;
	}
	memcpy(out, &a, 8);
	memcpy(out + 8, &b, 8);
}

static int add_fix(struct fixes *x, enum fix_kind kind, uint64_t ino, uint64_t parent,
		   uint32_t mode, const char *name, size_t nlen)
{
	if (ARRAY_GROW(x->v, x->n, x->cap))
		return -ENOMEM;
	struct fix *fx = &x->v[x->n++];
	*fx = (struct fix){.kind = kind, .ino = ino, .parent = parent, .mode = mode};
	memcpy(fx->name, name, nlen < NADB_NAME_MAX ? nlen : NADB_NAME_MAX);
	return 0;
}

static bool inode_mode(struct fsck *f, uint64_t ino, uint32_t *mode)
{
	uint8_t k[INO_KEY_LEN];
	struct kv_val v;
	struct inode_rec r;
	const uint8_t *payload;
	size_t plen;
	if (f->st->kv->ops->get(f->st->kv, KV_INODES, k, ino_key(k, ino), &v) ||
	    inode_decode(v.data, v.len, &r, &payload, &plen))
		return false;
	*mode = r.mode;
	return true;
}

static int map_link(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct fixes *x = ctx;
	if (klen <= 2 * INO_KEY_LEN)
		return 0;
	uint8_t h[16];
	name_hash(h, (const uint8_t *)key + INO_KEY_LEN, klen - INO_KEY_LEN);
	struct entry *e = map_get(&x->by_name, h, true);
	if (!e)
		return -ENOMEM;
	e->parent = kv_key_ino(key);
	return 0;
}

/* Entries naming a missing inode take the one the links table names, or
 * go; entries missing from the links table get their row. */
static int fix_entry(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct fixes *x = ctx;
	struct dirent_val d;
	if (klen <= INO_KEY_LEN || klen > NAME_KEY_MAX || dirent_decode(val, vlen, &d))
		return 0;
	uint64_t parent = kv_key_ino(key);
	const char *name = (const char *)key + INO_KEY_LEN;
	size_t nlen = klen - INO_KEY_LEN;
	uint32_t mode, pmode;
	/* In no directory (a damaged key): the links table, if it names
	 * the inode, brings back the true entry (fix_link). */
	if (!inode_mode(x->f, parent, &pmode) || !S_ISDIR(pmode))
		return add_fix(x, DROP_ENTRY, d.ino, parent, 0, name, nlen);
	if (!inode_mode(x->f, d.ino, &mode)) {
		uint8_t h[16];
		name_hash(h, key, klen);
		struct entry *e = map_get(&x->by_name, h, false);
		if (e && inode_mode(x->f, e->parent, &mode))
			return add_fix(x, FIX_ENTRY_INO, e->parent, parent, mode, name, nlen);
		return add_fix(x, DROP_ENTRY, d.ino, parent, 0, name, nlen);
	}
	uint8_t lkey[LINK_KEY_MAX];
	struct kv_val lv;
	ino_key(lkey, d.ino);
	memcpy(lkey + INO_KEY_LEN, key, klen);
	if (x->f->st->kv->ops->get(x->f->st->kv, KV_LINKS, lkey, INO_KEY_LEN + klen, &lv))
		return add_fix(x, ADD_LINK, d.ino, parent, mode, name, nlen);
	return 0;
}

/* Links rows with no entry: the entry comes back if its inode and
 * directory are there, else the row goes. */
static int fix_link(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct fixes *x = ctx;
	if (klen <= 2 * INO_KEY_LEN)
		return 0;
	uint64_t ino = kv_key_ino(key), parent = kv_key_ino((const uint8_t *)key + INO_KEY_LEN);
	const char *name = (const char *)key + 2 * INO_KEY_LEN;
	size_t nlen = klen - 2 * INO_KEY_LEN;
	struct kv_val dv;
	struct dirent_val d;
	int rc = x->f->st->kv->ops->get(x->f->st->kv, KV_DIRENTS, (const uint8_t *)key + INO_KEY_LEN,
					klen - INO_KEY_LEN, &dv);
	if (!rc && !dirent_decode(dv.data, dv.len, &d))
		return d.ino == ino ? 0 : add_fix(x, DROP_LINK, ino, parent, 0, name, nlen);
	uint32_t mode, pmode;
	if (inode_mode(x->f, ino, &mode) && inode_mode(x->f, parent, &pmode) && S_ISDIR(pmode))
		return add_fix(x, ADD_ENTRY, ino, parent, mode, name, nlen);
	return add_fix(x, DROP_LINK, ino, parent, 0, name, nlen);
}

static int apply_fix(struct fsck *f, const struct fix *fx)
{
	uint8_t dkey[NAME_KEY_MAX], lkey[LINK_KEY_MAX];
	size_t dlen = name_key(dkey, fx->parent, fx->name);
	ino_key(lkey, fx->ino);
	memcpy(lkey + INO_KEY_LEN, dkey, dlen);
	size_t llen = INO_KEY_LEN + dlen;
	struct dirent_val d = {.ino = fx->ino, .mode = fx->mode & S_IFMT};
	uint8_t dval[DIRENT_VAL_MAX];
	size_t dval_len = dirent_encode(&d, dval);
	struct kv *kv = f->st->kv;
	char dir[1024];
	inode_path(f->st, fx->parent, dir, sizeof(dir));
	const char *sep = strcmp(dir, "/") ? "/" : "";
	int rc = step_begin(f->st);
	if (rc)
		return rc;
	switch (fx->kind) {
	case FIX_ENTRY_INO:
		problem(f, "entry %s%s%s named a missing inode; the links table says %llu: fixed",
			dir, sep, fx->name, (unsigned long long)fx->ino);
		rc = kv->ops->put(kv, KV_DIRENTS, dkey, dlen, dval, dval_len);
		break;
	case DROP_ENTRY:
		problem(f, "entry %s%s%s (inode %llu): its inode or its directory is gone; "
			"entry removed", dir, sep, fx->name, (unsigned long long)fx->ino);
		rc = kv->ops->del(kv, KV_DIRENTS, dkey, dlen);
		if (!rc) {
			rc = kv->ops->del(kv, KV_LINKS, lkey, llen);
			rc = rc == -ENOENT ? 0 : rc;
		}
		break;
	case ADD_LINK:
		problem(f, "entry %s%s%s was missing from the links table: added", dir, sep,
			fx->name);
		rc = kv->ops->put(kv, KV_LINKS, lkey, llen, "", 0);
		break;
	case ADD_ENTRY:
		problem(f, "entry %s%s%s (inode %llu) was lost; the links table names it: restored",
			dir, sep, fx->name, (unsigned long long)fx->ino);
		rc = kv->ops->put(kv, KV_DIRENTS, dkey, dlen, dval, dval_len);
		break;
	case DROP_LINK:
		problem(f, "the links table names %s%s%s for inode %llu, which has no such entry: "
			"row removed", dir, sep, fx->name, (unsigned long long)fx->ino);
		rc = kv->ops->del(kv, KV_LINKS, lkey, llen);
		break;
	}
	rc = step_end(f->st, rc);
	if (!rc)
		f->res->repaired++;
	return rc == -ENOENT ? 0 : rc;
}

static int apply_fixes(struct fixes *x)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < x->n; i++)
		rc = apply_fix(x->f, &x->v[i]);
	x->n = 0;
	return rc;
}

static int repair_names(struct fsck *f)
{
	struct fixes x = {.f = f};
	struct kv *kv = f->st->kv;
	int rc = kv->ops->scan(kv, KV_LINKS, NULL, 0, map_link, &x);
	if (!rc)
		rc = kv->ops->scan(kv, KV_DIRENTS, NULL, 0, fix_entry, &x);
	if (!rc)
		rc = apply_fixes(&x);
	if (!rc)
		rc = kv->ops->scan(kv, KV_LINKS, NULL, 0, fix_link, &x);
	if (!rc)
		rc = apply_fixes(&x);
	free(x.by_name.e);
	free(x.v);
	return rc;
}

/* ---- repair: sizes ----------------------------------------------------------
 * A value's size and its chunk list must agree; the list is what holds
 * the bytes, so the size follows it (the last chunk's own length). */
struct sizes {
	struct fsck *f;
	uint64_t *ino;
	size_t n, cap;
};

static int find_bad_size(void *ctx, const void *key, size_t klen, const void *val,
			 size_t vlen)
{
	struct sizes *z = ctx;
	struct inode_rec r;
	const uint8_t *list;
	size_t plen;
	if (klen != INO_KEY_LEN || inode_decode(val, vlen, &r, &list, &plen))
		return 0;
	size_t cs = z->f->st->chunk_size;
	size_t n = plen / CHUNK_HASH_LEN;
	if (!S_ISREG(r.mode) || (plen % CHUNK_HASH_LEN == 0 && n == (r.size + cs - 1) / cs))
		return 0;
	if (ARRAY_GROW(z->ino, z->n, z->cap))
		return -ENOMEM;
	z->ino[z->n++] = kv_key_ino(key);
	return 0;
}

static int fix_size(struct fsck *f, uint64_t ino)
{
	struct inode in;
	int rc = inode_get(f->st, ino, &in);
	if (rc)
		return rc;
	size_t n = in.payload_len / CHUNK_HASH_LEN;
	uint64_t size = (uint64_t)n * f->st->chunk_size, old = in.r.size;
	struct chunk_loc loc;
	if (n && !chunk_is_hole(in.payload + (n - 1) * CHUNK_HASH_LEN) &&
	    !chunk_locate(&f->st->chunks, in.payload + (n - 1) * CHUNK_HASH_LEN, &loc) &&
	    loc.raw_len <= f->st->chunk_size)
		size -= f->st->chunk_size - loc.raw_len;
	in.r.size = size;
	rc = step_begin(f->st);
	if (!rc)
		rc = step_end(f->st, inode_put(f->st, ino, &in.r, in.payload,
					       n * CHUNK_HASH_LEN));
	inode_release(&in);
	char path[1024];
	inode_path(f->st, ino, path, sizeof(path));
	problem(f, "key %s: size %llu did not match its %zu chunks; now %llu", path,
		(unsigned long long)old, n, (unsigned long long)size);
	if (!rc)
		f->res->repaired++;
	return rc;
}

static int repair_sizes(struct fsck *f)
{
	struct sizes z = {.f = f};
	int rc = f->st->kv->ops->scan(f->st->kv, KV_INODES, NULL, 0, find_bad_size, &z);
	for (size_t i = 0; !rc && i < z.n; i++)
		rc = fix_size(f, z.ino[i]);
	free(z.ino);
	return rc;
}

/* ---- segments' live bytes ------------------------------------------------
 * Compaction removes a segment once its live count (KV_SEGMENTS, kept by
 * chunk.c) is zero: a count that drifted from what the chunk records say
 * keeps a segment for good (or, too low, is taken for empty too soon --
 * compaction moves every record it finds first, so that costs space, not
 * data).  The records decide. */

#define SEG_CHECK_MAX (1u << 22) /* segments: a record naming one past this is damaged */

static int add_live(void *ctx, const uint8_t hash[CHUNK_HASH_LEN], uint32_t refs,
		    const struct chunk_loc *loc)
{
	(void)hash;
	struct fsck *f = ctx;
	uint32_t seg = loc->blob.seg;
	if (seg >= SEG_CHECK_MAX)
		return 0; /* check_chunks said so: its bytes cannot be read */
	if (refs == 0 && f->st->kv->ops->free_zeros)
		return 0; /* waiting to be freed: not live (chunk.c, "Freeing") */
	size_t was = f->nsegs;
	if (grow_array(&f->seg_live, &f->nsegs, (size_t)seg + 1, sizeof(*f->seg_live)))
		return -ENOMEM;
	memset(f->seg_live + was, 0, (f->nsegs - was) * sizeof(*f->seg_live));
	f->seg_live[seg] += loc->blob.len;
	return 0;
}

struct seg_row {
	uint32_t seg;
	uint64_t live;
};
struct seg_rows {
	struct seg_row *rows;
	size_t n, cap;
};

static int collect_seg_row(void *ctx, const void *key, size_t klen, const void *val,
			   size_t vlen)
{
	struct seg_rows *l = ctx;
	uint32_t be;
	if (klen != sizeof(be))
		return 0; /* not a row of ours: the walk of the metadata says */
	if (ARRAY_GROW(l->rows, l->n, l->cap))
		return -ENOMEM;
	memcpy(&be, key, sizeof(be));
	struct seg_row *r = &l->rows[l->n++];
	r->seg = be32toh(be);
	r->live = UINT64_MAX; /* a damaged value: counts as wrong */
	if (vlen == sizeof(r->live))
		memcpy(&r->live, val, sizeof(r->live));
	return 0;
}

/* Set segment SEG's live count to LIVE (0: no row). */
static int set_seg_live(struct fsck *f, uint32_t seg, uint64_t live)
{
	uint32_t key = htobe32(seg);
	struct kv *kv = f->st->kv;
	int rc = step_begin(f->st);
	if (rc)
		return rc;
	if (live)
		rc = kv->ops->put(kv, KV_SEGMENTS, &key, sizeof(key), &live, sizeof(live));
	else if ((rc = kv->ops->del(kv, KV_SEGMENTS, &key, sizeof(key))) == -ENOENT)
		rc = 0;
	return step_end(f->st, rc);
}

/* A group of the backend's tally (kv_ops.tally): a segment's live bytes. */
static int collect_tallied(void *ctx, uint32_t group, uint64_t size)
{
	struct seg_rows *l = ctx;
	if (ARRAY_GROW(l->rows, l->n, l->cap))
		return -ENOMEM;
	l->rows[l->n++] = (struct seg_row){group, size};
	return 0;
}

/* Where the backend weighs the records itself (kv_ops.tally, which its
 * own check compared with the records already), the segments' live bytes
 * are its groups: they must agree with the records as read here too, and
 * are not repaired here.  Else they are chunk.c's KV_SEGMENTS rows. */
static int check_segments(struct fsck *f, bool repair)
{
	struct seg_rows l = {0};
	bool tallied = f->st->kv->ops->tally != NULL;
	const char *counts = tallied ? "weighs" : "counts";
	const char *mend = tallied ? " (not repaired here)" : "";
	int rc = chunk_scan(&f->st->chunks, NULL, add_live, f);
	struct kv_tally t;
	if (!rc && tallied && ((rc = f->st->kv->ops->tally(f->st->kv, KV_CHUNKS, &t,
							   collect_tallied, &l)) == -ENODATA ||
			       rc == -EIO)) {
		free(l.rows);
		return 0; /* none, or damaged: the backend's check said so */
	}
	if (!rc && !tallied)
		rc = f->st->kv->ops->scan(f->st->kv, KV_SEGMENTS, NULL, 0, collect_seg_row, &l);
	for (size_t i = 0; !rc && i <= l.n; i++) {
		/* each row, then (i == l.n) the segments with bytes and no row */
		for (uint32_t seg = 0; i == l.n && !rc && seg < f->nsegs; seg++) {
			if (!f->seg_live[seg])
				continue;
			problem(f, "segment %08u.pack holds %llu live bytes of chunks, but "
				"%s none%s", seg, (unsigned long long)f->seg_live[seg], counts, mend);
			if (repair && !tallied && !(rc = set_seg_live(f, seg, f->seg_live[seg])))
				f->res->repaired++;
		}
		if (i == l.n)
			break;
		struct seg_row *r = &l.rows[i];
		uint64_t want = r->seg < f->nsegs ? f->seg_live[r->seg] : 0;
		if (r->seg < f->nsegs)
			f->seg_live[r->seg] = 0; /* its row is seen */
		if (r->live == want || (tallied && r->seg >= SEG_CHECK_MAX)) /* (check_chunks') */
			continue;
		problem(f, "segment %08u.pack %s %llu live bytes, but its chunks hold %llu%s",
			r->seg, counts, (unsigned long long)r->live, (unsigned long long)want, mend);
		if (repair && !tallied && !(rc = set_seg_live(f, r->seg, want)))
			f->res->repaired++;
	}
	free(l.rows);
	return rc;
}

/* What the counters' check needs of inode INO, from the inode table's
 * scan (stats_check would read each key's record, a round trip each on
 * Redis). */
static int inode_facts(void *ctx, uint64_t ino, uint64_t *size, bool *expiring)
{
	struct fsck *f = ctx;
	uint8_t k[16];
	ino_map_key(k, ino);
	const struct entry *e = map_get(&f->inodes, k, false);
	if (!e)
		return -ENOENT;
	*size = e->size;
	*expiring = e->expiring;
	return 0;
}

int nadb_fsck(struct nadb_store *st, bool repair, nadb_fsck_report_fn report,
	      void *ctx, struct nadb_fsck_result *res)
{
	memset(res, 0, sizeof(*res));
	struct fsck f = {.st = st, .report = report, .ctx = ctx, .res = res};
	pthread_mutex_lock(&st->meta_lock);
	/* While repairing, a frame nothing names may be the one a damaged
	 * chunk list is matched to later: none is punched from now on
	 * (compaction reclaims them). */
	if (repair)
		st->keep_freed = true;
	/* The backend's own bookkeeping first: every scan below relies on it
	 * (on Redis, the partitions a scan walks). */
	int rc = 0;
	if (st->kv->ops->check) {
		uint64_t n = 0, mended = 0;
		rc = st->kv->ops->check(st->kv, repair, report, ctx, &n, &mended);
		res->problems += n;
		if (repair && !rc)
			res->repaired += mended;
	}
	/* Repairs that change what the checks below count come first. */
	if (!rc && repair)
		rc = repair_names(&f);
	if (!rc && repair)
		rc = repair_sizes(&f);
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_INODES, NULL, 0, scan_inode, &f);
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_PENDING, NULL, 0, scan_pending, &f);
	if (!rc)
		rc = chunk_drops(&st->chunks, count_drop, &f);
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_LINKS, NULL, 0, note_link, &f);
	if (!rc)
		rc = st->kv->ops->scan(st->kv, KV_DIRENTS, NULL, 0, scan_dirent, &f);
	free(f.links.v);
	f.links = (struct hash_set){0};
	if (!rc && f.nlinks != res->dirents)
		problem(&f, "%llu rows in the links table for %llu directory entries",
			(unsigned long long)f.nlinks, (unsigned long long)res->dirents);
	if (!rc)
		rc = check_links(&f, repair);
	if (!rc)
		rc = check_chunks(&f, repair);
	if (!rc)
		rc = check_segments(&f, repair);
	uint64_t tag_problems = 0;
	if (!rc)
		rc = tags_check(st, repair, report, ctx, &tag_problems);
	res->problems += tag_problems;
	if (repair && !rc)
		res->repaired += tag_problems;
	uint64_t counter_problems = 0;
	if (!rc)
		rc = stats_check(st, repair, report, ctx, inode_facts, &f, &counter_problems);
	res->problems += counter_problems;
	if (repair)
		res->repaired += counter_problems;
	pthread_mutex_unlock(&st->meta_lock);
	free(f.inodes.e);
	free(f.chunks.e);
	free(f.seg_live);
	if (!rc && repair)
		rc = nadb_store_sync(st);
	return rc;
}
