/* file.c -- open files: the write buffer between write() and close().
 *
 * Every open inode has one `struct ofile`, shared by all its handles, that
 * holds the value as a list of chunk-sized slots: a hole (zeros), a clean
 * slot naming a stored chunk, a dirty slot holding bytes in memory, a
 * patched slot (a stored chunk and the pages written into it since), or a
 * spilled slot naming a chunk written early because the write buffers grew
 * past buffer_mb.  A small write into a stored chunk patches it rather
 * than read it whole: random writes into a big value then cost their own
 * pages until the commit, which reads each patched chunk once and stores
 * it whole, as content addressing wants.  Reads see the slots, so every handle sees every write at
 * once, as the kernel's page cache does.  Commit (close, fsync) stores the
 * dirty slots and swaps the inode's chunk list in one step: the key's
 * value changes atomically, and a crash shows either the old value or the
 * new one, never a mix.
 *
 * A spilled chunk is referenced before any inode names it, so the
 * reference is recorded in the pending table in the same step, under
 * our session; commit releases the file's pending references, and after
 * a crash the next writer does, once our session is gone (store.c,
 * "sessions").  No chunk leaks.
 */
#include "grow.h"
#include "log.h"
#include "store_int.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum slot_state { SLOT_HOLE, SLOT_CLEAN, SLOT_DIRTY, SLOT_SPILLED, SLOT_PATCH };

#define PATCH_PAGE 4096u   /* bytes: the unit a patched slot keeps apart */
#define PATCH_MIN_PAGES 4u /* a chunk of fewer pages is never patched */
/* Forgotten inodes deleted per meta_lock hold, and queued before the
 * FORGET that fills the queue deletes them. */
#define FORGOTTEN_BATCH 64

struct slot {
	uint8_t state;
	uint8_t hash[CHUNK_HASH_LEN]; /* CLEAN, SPILLED; PATCH: its base */
	uint8_t *buf;                 /* DIRTY: bytes [0,len), zeros after; a
				       * follower's CLEAN: the chunk's bytes
				       * once read (its writer may free it) */
	uint32_t len, cap;            /* PATCH: len as for DIRTY */
	/* PATCH: page I is pages[I] (PATCH_PAGE bytes, its part below len
	 * meant) or, if NULL, the base's bytes there (zeros past base_len);
	 * npatched pages are set, never more than half the chunk's. */
	uint8_t **pages;
	uint32_t base_len, npatched;
};

struct ofile {
	struct ofile *next; /* hash chain: under files_lock */
	uint64_t ino;       /* constant */
	unsigned refs;      /* under files_lock */
	unsigned writers;   /* handles opened for writing: under files_lock */
	struct nadb_file *handles; /* open on it: under files_lock */

	/* lock: scope is the slots, size, dirty, loaded, write_end,
	 * failed and version.
	 * Taken before meta_lock. */
	pthread_rwlock_t lock;
	bool loaded, dirty;
	uint64_t size;
	/* Counts the loads that found another value than the last (a
	 * follower's writer replaced it): a handle that read one version
	 * never reads from the next (nadb_file_read). */
	uint64_t version;
	struct slot *slots;
	size_t nslots, cap;
	uint64_t write_end; /* where the last write ended: a stream goes on there */
	int failed; /* a write failed (-errno): the value cannot be stored */

	/* attr_lock: scope is the copy of size and the times below, which
	 * getattr reads without waiting for a writer.  A leaf lock. */
	pthread_mutex_t attr_lock;
	uint64_t a_size;
	int64_t a_mtime, a_ctime;
	bool a_changed; /* times/size differ from the stored inode */
};

struct nadb_file {
	struct nadb_store *st;
	struct ofile *of;
	bool writes; /* counted in of->writers */
	atomic_bool wrote; /* a write or fallocate came through it */
	/* 0: nothing read yet; else 1 + the ofile version this handle read
	 * (a follower's: nadb_file_read).  Set under of->lock (read), so by
	 * concurrent reads of the handle: atomic. */
	atomic_uint_fast64_t read_version;
	/* The store's sync failures this handle's fsync has heard of (counted
	 * from its open: nadb_store_sync_seen). */
	atomic_uint_fast64_t seen_failures;
	struct nadb_file *next; /* of->handles: under files_lock */
};

static size_t bucket_of(const struct nadb_store *st, uint64_t ino)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ULL) >> 40) % st->nfiles_buckets;
}

/* Under files_lock. */
static struct ofile *find_ofile(struct nadb_store *st, uint64_t ino)
{
	for (struct ofile *of = st->files[bucket_of(st, ino)]; of; of = of->next)
		if (of->ino == ino)
			return of;
	return NULL;
}

static struct ofile *new_ofile(uint64_t ino)
{
	struct ofile *of = calloc(1, sizeof(*of));
	if (!of)
		return NULL;
	of->ino = ino;
	pthread_rwlock_init(&of->lock, NULL);
	pthread_mutex_init(&of->attr_lock, NULL);
	return of;
}

/* A whole-chunk buffer, from the pool when one is free. */
static void *take_chunk_buf(struct nadb_store *st)
{
	void *b = NULL;
	pthread_mutex_lock(&st->pool_lock);
	if (st->npool)
		b = st->pool[--st->npool];
	pthread_mutex_unlock(&st->pool_lock);
	return b ? b : malloc(st->chunk_size);
}

static void give_chunk_buf(struct nadb_store *st, void *b)
{
	pthread_mutex_lock(&st->pool_lock);
	if (st->npool < sizeof(st->pool) / sizeof(st->pool[0])) {
		st->pool[st->npool++] = b;
		b = NULL;
	}
	pthread_mutex_unlock(&st->pool_lock);
	free(b);
}

static uint32_t pages_of(const struct nadb_store *st)
{
	return (uint32_t)(st->chunk_size / PATCH_PAGE);
}

static void free_patch_pages(struct nadb_store *st, struct slot *s)
{
	if (!s->pages)
		return;
	for (uint32_t i = 0; i < pages_of(st); i++)
		free(s->pages[i]);
	atomic_fetch_sub(&st->buffered, (uint64_t)s->npatched * PATCH_PAGE +
						 pages_of(st) * sizeof(*s->pages));
	free(s->pages);
	s->pages = NULL;
	s->npatched = 0;
}

static void free_slot_buf(struct nadb_store *st, struct slot *s)
{
	free_patch_pages(st, s);
	if (s->buf) {
		atomic_fetch_sub(&st->buffered, s->cap);
		if (s->cap == st->chunk_size)
			give_chunk_buf(st, s->buf);
		else
			free(s->buf);
	}
	s->buf = NULL;
	s->len = s->cap = 0;
}

static void free_slot(struct nadb_store *st, struct slot *s)
{
	free_slot_buf(st, s);
	memset(s, 0, sizeof(*s));
}

static void free_ofile(struct nadb_store *st, struct ofile *of)
{
	for (size_t i = 0; i < of->nslots; i++)
		free_slot(st, &of->slots[i]);
	free(of->slots);
	pthread_rwlock_destroy(&of->lock);
	pthread_mutex_destroy(&of->attr_lock);
	free(of);
}

static void publish_size(struct ofile *of, bool touch)
{
	int64_t now = touch ? now_ns() : 0;
	pthread_mutex_lock(&of->attr_lock);
	of->a_size = of->size;
	if (touch) {
		of->a_mtime = of->a_ctime = now;
		of->a_changed = true;
	}
	pthread_mutex_unlock(&of->attr_lock);
}

/* Make room for N slots; new ones are holes.  Under of->lock. */
static int resize_slots(struct nadb_store *st, struct ofile *of, size_t n)
{
	for (size_t i = n; i < of->nslots; i++)
		free_slot(st, &of->slots[i]);
	if (n && ARRAY_GROW(of->slots, n - 1, of->cap))
		return -ENOMEM;
	if (n > of->nslots)
		memset(of->slots + of->nslots, 0, (n - of->nslots) * sizeof(*of->slots));
	of->nslots = n;
	return 0;
}

static size_t slots_for(const struct nadb_store *st, uint64_t size)
{
	return (size_t)((size + st->chunk_size - 1) / st->chunk_size);
}

/* Read the inode's chunk list into slots.  Under of->lock (write). */
/* Key INO's record, if it is a key whose time has not come (an open
 * through a name the kernel still caches may reach one that expired, its
 * deletion's notice not yet landed: that one is gone). */
static int get_key(struct nadb_store *st, uint64_t ino, struct inode *in)
{
	pthread_mutex_lock(&st->meta_lock);
	int rc = inode_get(st, ino, in);
	pthread_mutex_unlock(&st->meta_lock);
	if (rc)
		return rc;
	if (!S_ISREG(in->r.mode) || inode_expired(&in->r, now_ns())) {
		rc = S_ISDIR(in->r.mode) ? -EISDIR : S_ISREG(in->r.mode) ? -ENOENT : -EINVAL;
		inode_release(in);
	}
	return rc;
}

static int load_ofile(struct nadb_store *st, struct ofile *of)
{
	struct inode in;
	int rc = get_key(st, of->ino, &in);
	if (rc)
		return rc;
	size_t n = slots_for(st, in.r.size);
	if (in.payload_len != n * CHUNK_HASH_LEN) {
		nadb_log("inode %llu: chunk list does not match its size",
			 (unsigned long long)of->ino);
		inode_release(&in);
		return -EIO;
	}
	bool same = of->loaded && n == of->nslots && in.r.size == of->size;
	for (size_t i = 0; same && i < n; i++)
		same = !memcmp(of->slots[i].hash, in.payload + i * CHUNK_HASH_LEN, CHUNK_HASH_LEN);
	rc = resize_slots(st, of, n);
	if (rc) {
		inode_release(&in);
		return rc;
	}
	of->version += !same;
	for (size_t i = 0; !rc && i < n; i++) {
		struct slot *s = &of->slots[i];
		if (s->state != SLOT_CLEAN ||
		    memcmp(s->hash, in.payload + i * CHUNK_HASH_LEN, CHUNK_HASH_LEN))
			free_slot_buf(st, s); /* a follower's copy of another chunk */
		memcpy(s->hash, in.payload + i * CHUNK_HASH_LEN, CHUNK_HASH_LEN);
		s->state = chunk_is_hole(s->hash) ? SLOT_HOLE : SLOT_CLEAN;
	}
	of->size = in.r.size;
	pthread_mutex_lock(&of->attr_lock);
	of->a_size = in.r.size;
	of->a_mtime = in.r.mtime;
	of->a_ctime = in.r.ctime;
	of->a_changed = false;
	pthread_mutex_unlock(&of->attr_lock);
	inode_release(&in);
	if (!rc)
		of->loaded = true;
	return rc;
}

/* An open while another handle has the value loaded reads no chunk
 * list, but checks the key is still there as an open that loads does. */
static int key_still_there(struct nadb_store *st, uint64_t ino)
{
	struct inode in;
	int rc = get_key(st, ino, &in);
	if (!rc)
		inode_release(&in);
	return rc;
}

/* Where chunk HASH is.  A follower's -ESTALE: it is not stored (any
 * more: the writer replaced the value since we loaded it). */
static int locate(struct nadb_store *st, const uint8_t hash[CHUNK_HASH_LEN],
		  struct chunk_loc *loc)
{
	pthread_mutex_lock(&st->meta_lock);
	int rc = st->following ? chunk_find(&st->chunks, hash, loc)
			       : chunk_locate(&st->chunks, hash, loc);
	pthread_mutex_unlock(&st->meta_lock);
	return st->following && rc == -ENOENT ? -ESTALE : rc;
}

/* A chunk of INO read back damaged: one line that names the key.  The
 * name is looked up only now, so reads pay nothing for it. */
static int chunk_damaged(struct nadb_store *st, uint64_t ino, const struct chunk_loc *loc,
			 const char *why)
{
	char path[1024];
	pthread_mutex_lock(&st->meta_lock);
	inode_path(st, ino, path, sizeof(path));
	pthread_mutex_unlock(&st->meta_lock);
	nadb_log("key %s (inode %llu): chunk in %08u.pack at %llu: %s", path,
		 (unsigned long long)ino, loc->blob.seg, (unsigned long long)loc->blob.off, why);
	return -EIO;
}

/* LEN bytes of a stored chunk of INO from OFF into DST. */
static int read_chunk(struct nadb_store *st, uint64_t ino, const struct chunk_loc *loc,
		      const uint8_t hash[CHUNK_HASH_LEN], uint32_t off, uint32_t len,
		      uint8_t *dst)
{
	const char *why;
	int rc = chunk_read_why(&st->chunks, loc, hash, off, len, dst, &why);
	return rc && why ? chunk_damaged(st, ino, loc, why) : rc;
}

static int grow_buf(struct nadb_store *st, struct slot *s, uint32_t need);

/* The bytes of CLEAN slot S of INO into S->buf (a buffer for them is
 * grown), S->len their count: to change them (make_dirty), or, on a
 * follower, so that its handles read on from them however soon the
 * writer frees the chunk.  Under of->lock (write: a follower's reads
 * take it so). */
static int fill_slot_buf(struct nadb_store *st, uint64_t ino, struct slot *s)
{
	struct chunk_loc loc;
	int rc = locate(st, s->hash, &loc);
	if (!rc)
		rc = grow_buf(st, s, loc.raw_len ? loc.raw_len : 1);
	if (!rc)
		rc = read_chunk(st, ino, &loc, s->hash, 0, loc.raw_len, s->buf);
	if (rc) {
		free_slot_buf(st, s);
		return rc;
	}
	s->len = loc.raw_len;
	return 0;
}

/* Where patched slot S's base is, looked up once per request. */
struct base_at {
	struct chunk_loc loc;
	bool found;
};

/* LEN bytes of patched slot S's base from OFF into DST: zeros past the
 * base's end. */
static int read_base(struct nadb_store *st, uint64_t ino, const struct slot *s,
		     struct base_at *at, uint32_t off, uint32_t len, uint8_t *dst)
{
	uint32_t have = s->base_len > off ? s->base_len - off : 0;
	if (have > len)
		have = len;
	memset(dst + have, 0, len - have);
	if (!have)
		return 0;
	if (!at->found) {
		int rc = locate(st, s->hash, &at->loc);
		if (!rc && at->loc.raw_len != s->base_len)
			rc = -EIO; /* the index changed its mind: not ours to guess */
		if (rc)
			return rc;
		at->found = true;
	}
	return read_chunk(st, ino, &at->loc, s->hash, off, have, dst);
}

/* Copy LEN bytes of patched slot S from OFF into DST: its pages, the
 * base's bytes between them (a run of unpatched pages in one read). */
static int read_patched(struct nadb_store *st, uint64_t ino, const struct slot *s,
			uint32_t off, uint32_t len, uint8_t *dst)
{
	uint32_t end = off + len, base_from = off;
	struct base_at at = {0};
	int rc = 0;
	for (uint32_t pos = off; !rc && pos < end;) {
		uint32_t page = pos / PATCH_PAGE, page_end = (page + 1) * PATCH_PAGE;
		uint32_t n = (page_end < end ? page_end : end) - pos;
		if (s->pages[page]) {
			if (base_from < pos)
				rc = read_base(st, ino, s, &at, base_from, pos - base_from,
					       dst + (base_from - off));
			memcpy(dst + (pos - off), s->pages[page] + pos % PATCH_PAGE, n);
			base_from = pos + n;
		}
		pos += n;
	}
	if (!rc && base_from < end)
		rc = read_base(st, ino, s, &at, base_from, end - base_from,
			       dst + (base_from - off));
	if (!rc && end > s->len) { /* past len: zeros, as a dirty slot reads */
		uint32_t from = s->len > off ? s->len : off;
		memset(dst + (from - off), 0, end - from);
	}
	return rc;
}

/* Copy LEN bytes of slot S of INO from OFF into DST. */
static int read_slot(struct nadb_store *st, uint64_t ino, struct slot *s,
		     uint32_t off, uint32_t len, uint8_t *dst)
{
	if (s->state == SLOT_HOLE) {
		memset(dst, 0, len);
		return 0;
	}
	if (s->state == SLOT_PATCH)
		return read_patched(st, ino, s, off, len, dst);
	uint32_t have = 0;
	/* (kept while the write buffers' bound allows: past it, a re-read of
	 * a freed chunk is ESTALE) */
	int rc = s->state == SLOT_CLEAN && st->following && !s->buf &&
			 atomic_load(&st->buffered) < (uint64_t)st->opt.buffer_mb << 20
		 ? fill_slot_buf(st, ino, s) : 0;
	if (rc)
		return rc;
	if (s->state == SLOT_DIRTY || (st->following && s->buf)) {
		have = s->len > off ? s->len - off : 0;
		if (have > len)
			have = len;
		memcpy(dst, s->buf + off, have);
	} else {
		struct chunk_loc loc;
		if ((rc = locate(st, s->hash, &loc)))
			return rc;
		have = loc.raw_len > off ? loc.raw_len - off : 0;
		if (have > len)
			have = len;
		if (have && (rc = read_chunk(st, ino, &loc, s->hash, off, have, dst)))
			return rc;
	}
	memset(dst + have, 0, len - have);
	return 0;
}

/* Room for NEED bytes in S's buffer: small values grow by doubling, big
 * ones get a whole chunk-sized buffer at once. */
static int grow_buf(struct nadb_store *st, struct slot *s, uint32_t need)
{
	if (need <= s->cap)
		return 0;
	uint32_t cap = s->cap ? s->cap : 4096;
	while (cap < need)
		cap *= 2;
	uint8_t *b;
	if (cap >= st->chunk_size / 2) {
		cap = (uint32_t)st->chunk_size;
		b = take_chunk_buf(st);
		if (b && s->buf) {
			memcpy(b, s->buf, s->len);
			free(s->buf);
		}
	} else {
		b = realloc(s->buf, cap);
	}
	if (!b)
		return -ENOMEM;
	atomic_fetch_add(&st->buffered, cap - s->cap);
	s->buf = b;
	s->cap = cap;
	return 0;
}

/* Patched slot S as a dirty one: its base read whole, its pages laid over
 * it.  Under of->lock (write). */
static int unpatch(struct nadb_store *st, uint64_t ino, struct slot *s)
{
	assert(s->state == SLOT_PATCH && !s->buf);
	uint8_t **pages = s->pages;
	uint32_t len = s->len, npatched = s->npatched;
	s->pages = NULL; /* fill_slot_buf's failure frees the buffer only */
	int rc = fill_slot_buf(st, ino, s);
	if (!rc && s->len != s->base_len)
		rc = -EIO; /* the index changed its mind */
	if (!rc)
		rc = grow_buf(st, s, len);
	if (rc) {
		free_slot_buf(st, s);
		s->pages = pages;
		s->npatched = npatched;
		s->len = len;
		return rc;
	}
	memset(s->buf + s->base_len, 0, len > s->base_len ? len - s->base_len : 0);
	for (uint32_t i = 0; i < pages_of(st); i++) {
		uint32_t at = i * PATCH_PAGE;
		if (pages[i] && at < len)
			memcpy(s->buf + at, pages[i], len - at < PATCH_PAGE ? len - at : PATCH_PAGE);
	}
	s->pages = pages;
	free_patch_pages(st, s);
	s->len = len;
	s->state = SLOT_DIRTY;
	return 0;
}

/* Bring slot S into memory so it can be changed.  Under of->lock (write). */
static int make_dirty(struct nadb_store *st, uint64_t ino, struct slot *s)
{
	if (s->state == SLOT_DIRTY)
		return 0;
	if (s->state == SLOT_PATCH)
		return unpatch(st, ino, s);
	if (s->state == SLOT_HOLE) {
		s->state = SLOT_DIRTY;
		s->len = 0;
		return 0;
	}
	int rc = fill_slot_buf(st, ino, s);
	if (!rc)
		s->state = SLOT_DIRTY;
	return rc;
}

/* Clean slot S patched from now on, if its chunk is stored as it is (a
 * page of a compressed one would cost the whole) and is big enough: 0, 1
 * if not, or -errno.
 * Under of->lock (write). */
static int start_patch(struct nadb_store *st, struct slot *s)
{
	struct chunk_loc loc;
	int rc = locate(st, s->hash, &loc);
	/* a small chunk costs less whole than patched and stored apart */
	if (rc || !chunk_loc_is_raw(&loc) || loc.raw_len < PATCH_MIN_PAGES * PATCH_PAGE)
		return rc ? rc : 1;
	s->pages = calloc(pages_of(st), sizeof(*s->pages));
	if (!s->pages)
		return -ENOMEM;
	atomic_fetch_add(&st->buffered, pages_of(st) * sizeof(*s->pages));
	s->base_len = s->len = loc.raw_len;
	s->npatched = 0;
	s->state = SLOT_PATCH;
	return 0;
}

/* LEN bytes from SRC at OFF into patched slot S: 0, or 1 when that would
 * patch more than half its pages (a whole buffer is then the cheaper
 * way), or -errno. */
static int write_patch(struct nadb_store *st, uint64_t ino, struct slot *s, uint32_t off,
		       const uint8_t *src, uint32_t len)
{
	uint32_t end = off + len, first = off / PATCH_PAGE, last = (end - 1) / PATCH_PAGE;
	uint32_t fresh = 0;
	for (uint32_t i = first; i <= last; i++)
		fresh += !s->pages[i];
	if (s->npatched + fresh > pages_of(st) / 2)
		return 1;
	/* page by page: a failure leaves no page unwritten */
	struct base_at base = {0};
	for (uint32_t i = first; i <= last; i++) {
		uint32_t at = i * PATCH_PAGE;
		uint32_t from = off > at ? off : at;
		uint32_t to = end < at + PATCH_PAGE ? end : at + PATCH_PAGE;
		if (!s->pages[i]) {
			uint8_t *page = malloc(PATCH_PAGE);
			if (!page)
				return -ENOMEM;
			/* a page only partly written starts as the base's bytes */
			int rc = from == at && to == at + PATCH_PAGE
					 ? 0 : read_base(st, ino, s, &base, at, PATCH_PAGE, page);
			if (rc) {
				free(page);
				return rc;
			}
			s->pages[i] = page;
			s->npatched++;
			atomic_fetch_add(&st->buffered, PATCH_PAGE);
		}
		memcpy(s->pages[i] + (from - at), src + (from - off), to - from);
	}
	if (end > s->len)
		s->len = end;
	assert(s->npatched <= pages_of(st) / 2 && s->len >= s->base_len);
	return 0;
}

static int write_slot(struct nadb_store *st, uint64_t ino, struct slot *s, uint32_t off,
		      const uint8_t *src, uint32_t len)
{
	int rc = 0;
	if (s->state == SLOT_CLEAN && !st->following && st->chunk_size % PATCH_PAGE == 0 &&
	    len < st->chunk_size / 2 && (rc = start_patch(st, s)) < 0)
		return rc;
	if (s->state == SLOT_PATCH && (rc = write_patch(st, ino, s, off, src, len)) <= 0)
		return rc;
	/* a write of the whole chunk needs none of its bytes before */
	if (off == 0 && len == st->chunk_size && s->state != SLOT_DIRTY) {
		free_slot_buf(st, s); /* a spilled chunk's pending row goes at the commit */
		s->state = SLOT_DIRTY;
	}
	/* not patched, or patched too much: the whole chunk in a buffer */
	rc = make_dirty(st, ino, s);
	if (!rc)
		rc = grow_buf(st, s, off + len);
	if (rc)
		return rc;
	if (off > s->len)
		memset(s->buf + s->len, 0, off - s->len);
	memcpy(s->buf + off, src, len);
	if (off + len > s->len)
		s->len = off + len;
	return 0;
}

/* A chunk stored for a file, and the pending row that holds its
 * reference (steps_taking_refs). */
struct pending_put {
	struct nadb_store *st;
	const struct chunk_prep *p;
	uint8_t *hash;
	uint8_t key[2 * INO_KEY_LEN];
};

static int take_pending(void *ctx)
{
	struct pending_put *pp = ctx;
	return chunk_put(&pp->st->chunks, pp->p, pp->hash);
}

static int note_pending(void *ctx)
{
	struct pending_put *pp = ctx;
	return pp->st->kv->ops->put(pp->st->kv, KV_PENDING, pp->key, sizeof(pp->key), pp->hash,
				    CHUNK_HASH_LEN);
}

static int give_back_pending(void *ctx)
{
	struct pending_put *pp = ctx;
	return chunk_ref(&pp->st->chunks, pp->hash, -1);
}

/* Store P as a chunk the file holds a pending reference to. */
static int put_pending(struct nadb_store *st, struct ofile *of,
		       const struct chunk_prep *p, uint8_t hash[CHUNK_HASH_LEN])
{
	struct pending_put pp = {.st = st, .p = p, .hash = hash};
	ino_key(pp.key, of->ino);
	/* numbered by our session (in the high half, so that only we
	 * release it while we live, store.c "sessions"): a row an earlier
	 * open of the key left (its discard failed) is never overwritten, and
	 * released with the key's next; a dead session's are settled by the
	 * writer that finds them, file_recover_pending */
	uint64_t seq = htobe64((uint64_t)st->kv->session << 32 |
			       (uint32_t)atomic_fetch_add(&st->pending_seq, 1));
	memcpy(pp.key + INO_KEY_LEN, &seq, sizeof(seq));
	pthread_mutex_lock(&st->meta_lock);
	int rc = steps_taking_refs(st, kv_partition(of->ino) != 0, take_pending, note_pending,
				   give_back_pending, &pp);
	store_note_step(st);
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

/* Write dirty slot I out now, holding a pending reference.  Under
 * of->lock (write). */
static int spill_slot(struct nadb_store *st, struct ofile *of, size_t i)
{
	struct slot *s = &of->slots[i];
	if (chunk_all_zero(s->buf, s->len)) {
		free_slot(st, s);
		return 0;
	}
	struct chunk_prep p;
	int rc = chunk_prepare(&st->chunks, s->buf, s->len, &p);
	if (rc)
		return rc;
	uint8_t hash[CHUNK_HASH_LEN];
	rc = put_pending(st, of, &p, hash);
	if (rc == -ENOSPC && store_make_room(st))
		rc = put_pending(st, of, &p, hash);
	chunk_prep_release(&p);
	if (rc)
		return rc;
	free_slot(st, s);
	s->state = SLOT_SPILLED;
	memcpy(s->hash, hash, CHUNK_HASH_LEN);
	return 0;
}

/* One chunk slot's share of a byte range: the walk below hands them out in
 * order, so read and write share the arithmetic. */
struct span {
	size_t slot;    /* which chunk */
	uint32_t inner; /* where in it */
	uint32_t len;   /* how many bytes */
	uint64_t done;  /* bytes of the range before this span */
};

/* The next span of [START, END) after S (S->len == 0: the first); false
 * at the end. */
static bool next_span(const struct nadb_store *st, uint64_t start, uint64_t end,
		      struct span *s)
{
	uint64_t pos = start + s->done + s->len;
	if (pos >= end)
		return false;
	s->done = pos - start;
	s->slot = (size_t)(pos / st->chunk_size);
	s->inner = (uint32_t)(pos % st->chunk_size);
	s->len = (uint32_t)(st->chunk_size - s->inner);
	if (s->len > end - pos)
		s->len = (uint32_t)(end - pos);
	return true;
}

/* A write that goes on from the last one (a stream) and fills slot SP to
 * the chunk's end will not come back to it: write the chunk out now.  Its
 * buffer goes back to the pool while still warm, instead of the file
 * holding up to buffer_mb of fresh memory that faults in page by page. */
static int spill_if_filled(struct nadb_store *st, struct ofile *of, const struct span *sp)
{
	const struct slot *s = &of->slots[sp->slot];
	if (sp->inner + sp->len != st->chunk_size || s->state != SLOT_DIRTY ||
	    s->len != st->chunk_size)
		return 0;
	return spill_slot(st, of, sp->slot);
}

/* Patched slot I stored now, as a spilled one.  Under of->lock (write). */
static int spill_patched(struct nadb_store *st, struct ofile *of, size_t i)
{
	int rc = unpatch(st, of->ino, &of->slots[i]);
	return rc ? rc : spill_slot(st, of, i);
}

/* Past buffer_mb, write this file's dirty slots out early (all but KEEP,
 * the one being written), until a quarter of the budget is free: whole
 * buffers first, then patched slots (each frees only its pages). */
static int relieve_pressure(struct nadb_store *st, struct ofile *of, size_t keep)
{
	uint64_t limit = (uint64_t)st->opt.buffer_mb << 20;
	if (atomic_load(&st->buffered) <= limit)
		return 0;
	for (int pass = 0; pass < 2; pass++) {
		enum slot_state kind = pass ? SLOT_PATCH : SLOT_DIRTY;
		for (size_t i = 0; i < of->nslots; i++) {
			if (i == keep || of->slots[i].state != kind)
				continue;
			int rc = pass ? spill_patched(st, of, i) : spill_slot(st, of, i);
			if (rc)
				return rc;
			if (atomic_load(&st->buffered) <= limit - limit / 4)
				return 0;
		}
	}
	return 0;
}

/* Change the size to SIZE, cutting or extending with zeros. */
static int truncate_locked(struct nadb_store *st, struct ofile *of, uint64_t size)
{
	size_t n = slots_for(st, size);
	uint32_t inner = (uint32_t)(size % st->chunk_size);
	/* The new last slot, cut inside, is made dirty while the slots still
	 * match the size: a failure here changes nothing. */
	int rc = 0;
	bool cut = size < of->size && n && inner;
	if (cut && n <= of->nslots) {
		struct slot *s = &of->slots[n - 1];
		if (s->state == SLOT_CLEAN || s->state == SLOT_SPILLED || s->state == SLOT_PATCH)
			rc = make_dirty(st, of->ino, s);
	}
	if (!rc)
		rc = resize_slots(st, of, n);
	if (rc)
		return rc;
	of->write_end = size; /* a stream after O_TRUNC starts at 0 */
	if (size == 0)
		of->failed = 0; /* a value written anew from nothing */
	if (cut) {
		struct slot *s = &of->slots[n - 1];
		if (s->state == SLOT_DIRTY && s->len > inner)
			s->len = inner;
	}
	of->size = size;
	of->dirty = true;
	publish_size(of, true);
	return 0;
}

struct pending_list {
	uint8_t prefix[INO_KEY_LEN]; /* empty prefix: every entry */
	size_t prefix_len;
	uint8_t (*keys)[2 * INO_KEY_LEN];
	uint8_t (*hashes)[CHUNK_HASH_LEN];
	size_t n, cap;
};

static int collect_pending(void *ctx, const void *key, size_t klen,
			   const void *val, size_t vlen)
{
	struct pending_list *l = ctx;
	if (klen < l->prefix_len || memcmp(key, l->prefix, l->prefix_len))
		return 1;
	if (klen != 2 * INO_KEY_LEN || vlen != CHUNK_HASH_LEN)
		return -EIO;
	size_t keys_cap = l->cap, hashes_cap = l->cap; /* two arrays, one length */
	if (ARRAY_GROW(l->keys, l->n, keys_cap) || ARRAY_GROW(l->hashes, l->n, hashes_cap))
		return -ENOMEM;
	l->cap = keys_cap;
	memcpy(l->keys[l->n], key, klen);
	memcpy(l->hashes[l->n++], val, vlen);
	return 0;
}

static int cmp_hash(const void *a, const void *b)
{
	return memcmp(a, b, CHUNK_HASH_LEN);
}

/* The session a pending row's key names (file.c put_pending). */
static uint32_t pending_session(const uint8_t key[2 * INO_KEY_LEN])
{
	return (uint32_t)(kv_key_ino(key + INO_KEY_LEN) >> 32);
}

/* Drop our session's pending references of INO (or, when SC is given,
 * those of every inode in the sessions it takes in), but for those of the
 * N hashes at KEEP (sorted; a hash as many times as it is kept), which
 * pass to the value that names them: their rows go, the references stay.
 * Inside a step, under meta_lock. */
static int release_pending_but(struct nadb_store *st, uint64_t ino, struct settle_scope *sc,
			       const uint8_t (*keep)[CHUNK_HASH_LEN], size_t n)
{
	struct pending_list l = {.prefix_len = sc ? 0 : INO_KEY_LEN};
	ino_key(l.prefix, ino);
	bool *kept = calloc(n + 1, sizeof(bool));
	int rc = kept ? st->kv->ops->scan_prefix(st->kv, KV_PENDING, l.prefix, l.prefix_len,
						 collect_pending, &l) : -ENOMEM;
	for (size_t i = 0; !rc && i < l.n; i++) {
		uint32_t session = pending_session(l.keys[i]);
		if (sc ? !settle_scope_has(sc, session) : session != st->kv->session)
			continue; /* a live session's: its files' */
		const uint8_t(*hit)[CHUNK_HASH_LEN] = n ? bsearch(l.hashes[i], keep, n, CHUNK_HASH_LEN,
								   cmp_hash) : NULL;
		while (hit && hit > keep && !cmp_hash(hit - 1, l.hashes[i]))
			hit--; /* the first of its run, then the first not passed on */
		while (hit && hit < keep + n && !cmp_hash(hit, l.hashes[i]) && kept[hit - keep])
			hit++;
		bool pass = hit && hit < keep + n && !cmp_hash(hit, l.hashes[i]);
		if (pass)
			kept[hit - keep] = true;
		else
			rc = chunk_unref(&st->chunks, kv_key_ino(l.keys[i]), l.hashes[i]);
		if (!rc)
			rc = st->kv->ops->del(st->kv, KV_PENDING, l.keys[i], 2 * INO_KEY_LEN);
	}
	for (size_t i = 0; !rc && i < n; i++)
		if (!kept[i]) { /* a spilled slot's reference is a pending row's */
			nadb_log("inode %llu: a chunk written early has lost its pending "
				 "reference: the value is not stored", (unsigned long long)ino);
			rc = -EIO;
		}
	free(kept);
	free(l.keys);
	free(l.hashes);
	return rc;
}

static int release_pending(struct nadb_store *st, uint64_t ino)
{
	return release_pending_but(st, ino, NULL, NULL, 0);
}

int file_recover_pending(struct nadb_store *st, struct settle_scope *sc)
{
	int rc = step_begin(st);
	if (!rc)
		rc = step_end(st, release_pending_but(st, 0, sc, NULL, 0));
	settle_scope_free(sc);
	return rc;
}

/* A commit's new chunk list (steps_taking_refs). */
struct swap {
	struct nadb_store *st;
	struct ofile *of;
	struct chunk_prep *prep;
	uint8_t *list;
	bool *kept; /* slot I names the chunk the old list has there */
};

/* Does slot I of the new list LIST take a reference of its own?  Not
 * one the old list, whose places KEPT marks, holds there already, nor a
 * spilled one, whose pending row's reference passes to the list. */
static bool takes_ref(const struct ofile *of, size_t i, const bool *kept)
{
	enum slot_state st = of->slots[i].state;
	return st == SLOT_DIRTY || (st == SLOT_CLEAN && !kept[i]);
}

/* The first part of a commit, in partition 0 (chunk.h): the new chunk
 * list and its references -- new chunks stored, chunks named anew
 * counted -- while the old list's stay, so shared chunks never hit zero. */
static int take_new_refs(void *ctx)
{
	struct swap *w = ctx;
	struct nadb_store *st = w->st;
	struct ofile *of = w->of;
	struct chunk_prep *prep = w->prep;
	uint8_t *list = w->list;
	bool *kept = w->kept;
	struct inode in;
	int rc = inode_get(st, of->ino, &in);
	if (rc)
		return rc;
	size_t old_n = in.payload_len / CHUNK_HASH_LEN;
	for (size_t i = 0; !rc && i < of->nslots; i++) {
		struct slot *s = &of->slots[i];
		uint8_t *h = list + i * CHUNK_HASH_LEN;
		if (s->state == SLOT_HOLE)
			memset(h, 0, CHUNK_HASH_LEN);
		else if (s->state == SLOT_DIRTY)
			rc = chunk_put(&st->chunks, &prep[i], h);
		else
			memcpy(h, s->hash, CHUNK_HASH_LEN);
		kept[i] = s->state == SLOT_CLEAN && i < old_n &&
			  !memcmp(in.payload + i * CHUNK_HASH_LEN, h, CHUNK_HASH_LEN);
		if (!rc && s->state == SLOT_CLEAN && !kept[i]) /* named anew */
			rc = chunk_ref(&st->chunks, h, +1);
	}
	inode_release(&in);
	return rc;
}

/* The commit failed: give back what take_new_refs took. */
static int give_back_new_refs(void *ctx)
{
	struct swap *w = ctx;
	int rc = 0;
	for (size_t i = 0; !rc && i < w->of->nslots; i++)
		if (takes_ref(w->of, i, w->kept) && !chunk_is_hole(w->list + i * CHUNK_HASH_LEN))
			rc = chunk_ref(&w->st->chunks, w->list + i * CHUNK_HASH_LEN, -1);
	return rc;
}

/* The second part, in the key's partition: the new list in place of the
 * old, whose references not kept are dropped, and the file's pending
 * references with them. */
static int swap_chunk_list(void *ctx)
{
	struct swap *w = ctx;
	struct nadb_store *st = w->st;
	struct ofile *of = w->of;
	const uint8_t *list = w->list;
	const bool *kept = w->kept;
	struct inode in;
	int rc = inode_get(st, of->ino, &in);
	if (rc)
		return rc;
	size_t old_n = in.payload_len / CHUNK_HASH_LEN;
	for (size_t i = 0; !rc && i < old_n; i++) {
		const uint8_t *h = in.payload + i * CHUNK_HASH_LEN;
		if (!(i < of->nslots && kept[i]) && !chunk_is_hole(h))
			rc = chunk_unref(&st->chunks, of->ino, h);
	}
	/* the spilled slots' hashes, sorted: their references pass on */
	uint8_t(*spilled)[CHUNK_HASH_LEN] = calloc(of->nslots + 1, CHUNK_HASH_LEN);
	size_t nspilled = 0;
	for (size_t i = 0; spilled && i < of->nslots; i++)
		if (of->slots[i].state == SLOT_SPILLED)
			memcpy(spilled[nspilled++], of->slots[i].hash, CHUNK_HASH_LEN);
	if (!spilled)
		rc = rc ? rc : -ENOMEM;
	else if (nspilled)
		qsort(spilled, nspilled, CHUNK_HASH_LEN, cmp_hash);
	if (!rc)
		rc = release_pending_but(st, of->ino, NULL, (const uint8_t(*)[CHUNK_HASH_LEN])spilled,
					 nspilled);
	free(spilled);
	if (!rc) {
		pthread_mutex_lock(&of->attr_lock);
		in.r.mtime = of->a_mtime;
		in.r.ctime = of->a_ctime;
		pthread_mutex_unlock(&of->attr_lock);
		rc = index_size_changed(st, of->ino, (int64_t)of->size - (int64_t)in.r.size);
		in.r.size = of->size;
		in.r.stored = keymeta_stored(st, list, of->nslots);
		if (!rc)
			rc = inode_put(st, of->ino, &in.r, list, of->nslots * CHUNK_HASH_LEN);
	}
	inode_release(&in);
	return rc;
}

static int swap_step(struct nadb_store *st, struct ofile *of,
		     struct chunk_prep *prep, uint8_t *list)
{
	struct swap w = {st, of, prep, list, calloc(of->nslots + 1, sizeof(bool))};
	if (!w.kept)
		return -ENOMEM;
	pthread_mutex_lock(&st->meta_lock);
	int rc = steps_taking_refs(st, kv_partition(of->ino) != 0, take_new_refs, swap_chunk_list,
				   give_back_new_refs, &w);
	store_note_step(st);
	pthread_mutex_unlock(&st->meta_lock);
	free(w.kept);
	return rc;
}

/* Under of->lock (write). */
static int commit_locked(struct nadb_store *st, struct ofile *of)
{
	if (!of->dirty)
		return 0;
	/* Some write(2) failed: what the slots hold is not what the writer
	 * meant, so the key keeps its stored value (the last close drops
	 * the slots and their early-written chunks). */
	if (of->failed)
		return of->failed;
	struct chunk_prep *prep = calloc(of->nslots + 1, sizeof(*prep));
	uint8_t *list = malloc(of->nslots * CHUNK_HASH_LEN + 1);
	int rc = prep && list ? 0 : -ENOMEM;
	/* Patched slots whole again, stored with the rest: as many as the
	 * pool has buffers and buffer_mb allows.  The others one at a time,
	 * spilled through a pooled buffer: a value patched all over never
	 * needs its whole size in buffers, and fresh ones would cost a page
	 * fault every 4 KiB (3x the close of 256 patched chunks). */
	uint64_t limit = (uint64_t)st->opt.buffer_mb << 20;
	for (size_t i = 0, whole = 0; !rc && i < of->nslots; i++)
		if (of->slots[i].state == SLOT_PATCH)
			rc = atomic_load(&st->buffered) + st->chunk_size <= limit &&
					     whole++ < sizeof(st->pool) / sizeof(st->pool[0])
				     ? unpatch(st, of->ino, &of->slots[i])
				     : spill_patched(st, of, i);
	/* Hashing and compressing need no lock: do them first. */
	for (size_t i = 0; !rc && i < of->nslots; i++) {
		struct slot *s = &of->slots[i];
		if (s->state != SLOT_DIRTY)
			continue;
		if (chunk_all_zero(s->buf, s->len))
			free_slot(st, s); /* a hole */
		else
			rc = chunk_prepare(&st->chunks, s->buf, s->len, &prep[i]);
	}
	if (!rc) {
		rc = swap_step(st, of, prep, list);
		/* A full disk with frees queued: commit them, punch, try again
		 * (only the swap: the slots are all prepared for it). */
		if (rc == -ENOSPC && store_make_room(st))
			rc = swap_step(st, of, prep, list);
	}
	for (size_t i = 0; prep && i < of->nslots; i++)
		chunk_prep_release(&prep[i]);
	if (!rc) {
		for (size_t i = 0; i < of->nslots; i++) {
			struct slot *s = &of->slots[i];
			if (s->state == SLOT_DIRTY || s->state == SLOT_SPILLED) {
				free_slot(st, s);
				memcpy(s->hash, list + i * CHUNK_HASH_LEN, CHUNK_HASH_LEN);
				s->state = SLOT_CLEAN;
			}
		}
		of->dirty = false;
		pthread_mutex_lock(&of->attr_lock);
		of->a_changed = false;
		pthread_mutex_unlock(&of->attr_lock);
	} else if (rc != -ENOSPC) { /* a full disk was said once already */
		nadb_log("inode %llu: cannot store the new value: %s",
			 (unsigned long long)of->ino, strerror(-rc));
	}
	free(prep);
	free(list);
	return rc;
}

/* The last handle went with a value that could not be stored (a full
 * disk): the chunks written early for it are not wanted any more, and
 * holding them until the next open of the store would keep the disk full.
 * Under meta_lock. */
static void discard_pending(struct nadb_store *st, uint64_t ino)
{
	int rc = step_begin(st);
	if (!rc)
		rc = step_end(st, release_pending(st, ino));
	if (rc)
		nadb_log("inode %llu: cannot drop the chunks of a value not stored: %s",
			 (unsigned long long)ino, strerror(-rc));
}

/* Drop a handle's reference; the last one out frees the ofile and, if the
 * inode lost its last link while open, the inode.  The last one out of a
 * dirty ofile drops its pending rows holding meta_lock from before the
 * ofile leaves the table: an ofile opened on the inode after that spills
 * only under meta_lock, so the rows dropped are never its. */
static void put_ofile(struct nadb_store *st, struct ofile *of, bool writer)
{
	bool meta_locked = false;
	pthread_mutex_lock(&st->files_lock);
	if (of->refs == 1 && of->dirty) { /* meta_lock comes before files_lock */
		pthread_mutex_unlock(&st->files_lock);
		pthread_mutex_lock(&st->meta_lock);
		meta_locked = true;
		pthread_mutex_lock(&st->files_lock);
	}
	of->writers -= writer;
	bool last = --of->refs == 0;
	if (last) {
		struct ofile **p = &st->files[bucket_of(st, of->ino)];
		while (*p != of)
			p = &(*p)->next;
		*p = of->next;
	}
	pthread_mutex_unlock(&st->files_lock);
	uint64_t ino = of->ino;
	if (last && of->dirty && !meta_locked) { /* made dirty after we looked */
		pthread_mutex_lock(&st->meta_lock);
		meta_locked = true;
	}
	if (last && of->dirty)
		discard_pending(st, ino);
	if (meta_locked)
		pthread_mutex_unlock(&st->meta_lock);
	if (!last)
		return;
	free_ofile(st, of);
	file_delete_if_unused(st, ino);
}

struct ofile *file_hold(struct nadb_store *st, uint64_t ino, int *rc)
{
	pthread_mutex_lock(&st->files_lock);
	struct ofile *of = find_ofile(st, ino);
	if (of)
		of->refs++;
	pthread_mutex_unlock(&st->files_lock);
	*rc = 0;
	if (!of)
		return NULL;
	pthread_rwlock_wrlock(&of->lock);
	*rc = of->dirty ? -EBUSY : 0;
	if (*rc) {
		pthread_rwlock_unlock(&of->lock);
		put_ofile(st, of, false);
		return NULL;
	}
	return of;
}

void file_let_go(struct nadb_store *st, struct ofile *of, bool changed)
{
	if (changed && of->loaded) {
		of->loaded = false;
		int rc = load_ofile(st, of);
		if (rc) /* the next open tries again; its handles' reads fail */
			nadb_log("inode %llu: cannot reload the value a batch set: %s",
				 (unsigned long long)of->ino, strerror(-rc));
	}
	pthread_rwlock_unlock(&of->lock);
	put_ofile(st, of, false);
}

/* Delete INO if it has no name, no handle and no kernel reference left:
 * its own step.  Under meta_lock. */
static void delete_if_unused_locked(struct nadb_store *st, uint64_t ino)
{
	struct inode in;
	if (!inode_get(st, ino, &in)) {
		if (in.r.nlink == 0 && !S_ISDIR(in.r.mode) && !file_is_open(st, ino) &&
		    !file_kernel_holds(st, ino) && !step_begin(st)) {
			uint8_t key[INO_KEY_LEN];
			int rc = inode_delete(st, ino);
			if (!rc)
				rc = st->kv->ops->del(st->kv, KV_ORPHANS, key, ino_key(key, ino));
			step_end(st, rc);
		}
		inode_release(&in);
	}
}

void file_delete_if_unused(struct nadb_store *st, uint64_t ino)
{
	pthread_mutex_lock(&st->meta_lock);
	delete_if_unused_locked(st, ino);
	pthread_mutex_unlock(&st->meta_lock);
}

void file_delete_forgotten(struct nadb_store *st)
{
	for (;;) {
		uint64_t batch[FORGOTTEN_BATCH];
		pthread_mutex_lock(&st->krefs_lock);
		size_t n = st->nforgotten < FORGOTTEN_BATCH ? st->nforgotten : FORGOTTEN_BATCH;
		if (!n) {
			pthread_mutex_unlock(&st->krefs_lock);
			return;
		}
		st->nforgotten -= n;
		memcpy(batch, st->forgotten + st->nforgotten, n * sizeof(*batch));
		pthread_mutex_unlock(&st->krefs_lock);
		pthread_mutex_lock(&st->meta_lock); /* a batch a hold: others get in between */
		for (size_t i = 0; i < n; i++)
			delete_if_unused_locked(st, batch[i]);
		pthread_mutex_unlock(&st->meta_lock);
	}
}

/* ---- the kernel's references (store.h) ---------------------------------- */

static size_t kref_slot(const struct nadb_store *st, uint64_t ino)
{
	size_t mask = st->krefs_cap - 1, i = (size_t)((ino * 0x9E3779B97F4A7C15ULL) >> 20) & mask;
	while (st->krefs[i].ino && st->krefs[i].ino != ino)
		i = (i + 1) & mask;
	return i;
}

static int grow_krefs(struct nadb_store *st)
{
	size_t cap = st->krefs_cap ? 2 * st->krefs_cap : 1024;
	struct kref *old = st->krefs;
	size_t old_cap = st->krefs_cap;
	st->krefs = calloc(cap, sizeof(*st->krefs));
	if (!st->krefs) {
		st->krefs = old;
		return -ENOMEM;
	}
	st->krefs_cap = cap;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].ino)
			st->krefs[kref_slot(st, old[i].ino)] = old[i];
	free(old);
	return 0;
}

/* N more references to INO.  Under krefs_lock. */
static int kref_add(struct nadb_store *st, uint64_t ino, uint64_t n)
{
	if ((st->nkrefs + 1) * 2 > st->krefs_cap && grow_krefs(st))
		return -ENOMEM;
	size_t i = kref_slot(st, ino);
	if (!st->krefs[i].ino) {
		st->krefs[i].ino = ino;
		st->nkrefs++;
	}
	st->krefs[i].n += n;
	return 0;
}

/* The store that keeps ST's kernel references: ST, or the writer's handle
 * its references went to (krefs_to).  Returned with its krefs_lock held. */
static struct nadb_store *lock_krefs(struct nadb_store *st)
{
	pthread_mutex_lock(&st->krefs_lock);
	while (st->krefs_to) {
		struct nadb_store *to = st->krefs_to;
		pthread_mutex_unlock(&st->krefs_lock);
		st = to;
		pthread_mutex_lock(&st->krefs_lock);
	}
	return st;
}

void nadb_remember(struct nadb_store *st, uint64_t ino)
{
	if (ino == NADB_ROOT_INO)
		return;
	st = lock_krefs(st);
	(void)kref_add(st, ino, 1); /* out of memory: the count stays low, as before */
	pthread_mutex_unlock(&st->krefs_lock);
}

int nadb_adopt_kernel_refs(struct nadb_store *to, struct nadb_store *from)
{
	assert(to != from); /* the two locks are taken in this order only here */
	int rc = 0;
	pthread_mutex_lock(&from->krefs_lock);
	assert(!from->krefs_to && !to->krefs_to);
	pthread_mutex_lock(&to->krefs_lock);
	for (size_t i = 0; !rc && i < from->krefs_cap; i++)
		if (from->krefs[i].ino)
			rc = kref_add(to, from->krefs[i].ino, from->krefs[i].n);
	pthread_mutex_unlock(&to->krefs_lock);
	if (!rc) /* from now on, what the kernel says to FROM goes to TO */
		from->krefs_to = to;
	pthread_mutex_unlock(&from->krefs_lock);
	if (!rc) { /* what FROM's kernel holds, TO's holds now */
		pthread_mutex_lock(&to->meta_lock);
		to->heir_of = NULL;
		pthread_mutex_unlock(&to->meta_lock);
	}
	return rc;
}

/* Remove slot I, moving later entries of its run back (linear probing). */
static void kref_remove(struct nadb_store *st, size_t i)
{
	size_t mask = st->krefs_cap - 1;
	st->krefs[i].ino = 0;
	st->nkrefs--;
	for (size_t j = (i + 1) & mask; st->krefs[j].ino; j = (j + 1) & mask) {
		struct kref e = st->krefs[j];
		st->krefs[j].ino = 0;
		st->krefs[kref_slot(st, e.ino)] = e;
	}
}

void nadb_forget(struct nadb_store *st, uint64_t ino, uint64_t n)
{
	bool gone = false;
	st = lock_krefs(st);
	if (st->krefs_cap) {
		size_t i = kref_slot(st, ino);
		if (st->krefs[i].ino == ino) {
			if (st->krefs[i].n <= n) {
				kref_remove(st, i);
				gone = true;
			} else {
				st->krefs[i].n -= n;
			}
		}
	}
	/* A FORGET is answered by nobody, but deleting the inode at once
	 * would take meta_lock from the requests that are (an unlink's FORGET
	 * comes while the next unlink runs): queue it, and delete a batch
	 * once it is full, or at the next sync. */
	bool queued = gone && !ARRAY_GROW(st->forgotten, st->nforgotten, st->forgotten_cap);
	if (queued)
		st->forgotten[st->nforgotten++] = ino;
	bool full = st->nforgotten >= FORGOTTEN_BATCH;
	struct nadb_store *holder = st;
	pthread_mutex_unlock(&st->krefs_lock);
	if (gone && !queued) /* out of memory: at once, as before */
		file_delete_if_unused(holder, ino);
	if (full)
		file_delete_forgotten(holder);
}

bool file_kernel_holds(struct nadb_store *st, uint64_t ino)
{
	pthread_mutex_lock(&st->krefs_lock);
	bool held = st->krefs_cap && st->krefs[kref_slot(st, ino)].ino == ino;
	pthread_mutex_unlock(&st->krefs_lock);
	return held;
}

int nadb_file_open(struct nadb_store *st, uint64_t ino, int flags,
		   struct nadb_file **out)
{
	uint64_t failures = nadb_store_sync_failures(st);
	struct nadb_file *f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	pthread_mutex_lock(&st->files_lock);
	struct ofile *of = find_ofile(st, ino);
	if (!of && (of = new_ofile(ino))) {
		size_t b = bucket_of(st, ino);
		of->next = st->files[b];
		st->files[b] = of;
	}
	bool writes = (flags & NADB_OPEN_WRITE) != 0;
	if (of) {
		of->refs++;
		of->writers += writes;
	}
	pthread_mutex_unlock(&st->files_lock);
	if (!of) {
		free(f);
		return -ENOMEM;
	}
	pthread_rwlock_wrlock(&of->lock);
	/* A follower's value may have changed since another handle loaded it:
	 * each open reads it afresh (close-to-open). */
	int rc = of->loaded && !st->following ? key_still_there(st, ino) : load_ofile(st, of);
	if (!rc && (flags & NADB_OPEN_TRUNC) && of->size)
		rc = truncate_locked(st, of, 0);
	else if (!rc && (flags & NADB_OPEN_TRUNC)) {
		of->dirty = true;
		publish_size(of, true);
	}
	pthread_rwlock_unlock(&of->lock);
	if (rc) {
		put_ofile(st, of, writes);
		free(f);
		return rc;
	}
	f->st = st;
	f->of = of;
	f->writes = writes;
	atomic_init(&f->wrote, false);
	atomic_init(&f->read_version, 0);
	atomic_init(&f->seen_failures, failures);
	pthread_mutex_lock(&st->files_lock);
	f->next = of->handles;
	of->handles = f;
	pthread_mutex_unlock(&st->files_lock);
	*out = f;
	return 0;
}

uint64_t nadb_file_ino(const struct nadb_file *f)
{
	return f->of->ino;
}

/* Times a follower's read loads a value again when the writer replaced it
 * under the read (each time, the writer replaced it once more). */
#define FOLLOWER_RELOADS 3

ssize_t nadb_file_read(struct nadb_file *f, void *buf, size_t size, off_t off)
{
	struct nadb_store *st = f->st;
	struct ofile *of = f->of;
	if (off < 0)
		return -EINVAL;
	struct span sp;
	int rc;
	for (unsigned tries = 0;; tries++) {
		/* a follower's read may keep a chunk's bytes in its slot */
		if (st->following)
			pthread_rwlock_wrlock(&of->lock);
		else
			pthread_rwlock_rdlock(&of->lock);
		uint64_t end = (uint64_t)off + size;
		if (end > of->size)
			end = of->size;
		sp = (struct span){0};
		uint64_t read = atomic_load(&f->read_version);
		/* a follower's handle that read one version never reads the
		 * next: a value is read whole or not at all (ESTALE) */
		rc = read && read != of->version + 1 ? -ESTALE : 0;
		while (!rc && next_span(st, (uint64_t)off, end, &sp))
			rc = read_slot(st, of->ino, &of->slots[sp.slot], sp.inner, sp.len,
				       (uint8_t *)buf + sp.done);
		if (!rc && st->following)
			atomic_store(&f->read_version, of->version + 1);
		pthread_rwlock_unlock(&of->lock);
		if (!st->following || rc != -ESTALE || read || tries == FOLLOWER_RELOADS)
			break;
		/* A follower's value replaced before this handle read any of it:
		 * read the new one. */
		pthread_rwlock_wrlock(&of->lock);
		rc = load_ofile(st, of);
		pthread_rwlock_unlock(&of->lock);
		if (rc)
			break;
	}
	if (rc == -ENOENT && st->following)
		rc = -ESTALE; /* the writer deleted the key: as NFS says it */
	return rc ? rc : (ssize_t)(sp.done + sp.len);
}

#define FILE_SIZE_MAX (1ULL << 42) /* 4 TiB, whatever the chunk size */
#define FILE_CHUNKS_MAX (1ULL << 21) /* chunks a value: its slots ~120 MiB,
					* its chunk list 32 MiB at most */

/* The largest value: FILE_CHUNKS_MAX chunks (256 GiB of 128 KiB chunks),
 * at most FILE_SIZE_MAX.  A size costs the daemon memory for its slots
 * and the metadata a chunk list a commit rewrites, sparse or not: any
 * user who may write a key could otherwise truncate it to 4 TiB and make
 * the daemon allocate gigabytes. */
static uint64_t file_size_max(const struct nadb_store *st)
{
	uint64_t by_chunks = (uint64_t)st->chunk_size * FILE_CHUNKS_MAX;
	return by_chunks < FILE_SIZE_MAX ? by_chunks : FILE_SIZE_MAX;
}

ssize_t nadb_file_write(struct nadb_file *f, const void *buf, size_t size,
			off_t off)
{
	struct nadb_store *st = f->st;
	struct ofile *of = f->of;
	atomic_store(&f->wrote, true);
	if (off < 0)
		return -EINVAL;
	uint64_t end = (uint64_t)off + size;
	if (end > file_size_max(st))
		return -EFBIG;
	if (size == 0)
		return 0;
	pthread_rwlock_wrlock(&of->lock);
	int rc = 0;
	if (end > of->size) {
		rc = resize_slots(st, of, slots_for(st, end));
		if (!rc)
			of->size = end;
	}
	struct span sp = {0};
	bool streaming = (uint64_t)off == of->write_end;
	while (!rc && next_span(st, (uint64_t)off, end, &sp)) {
		rc = write_slot(st, of->ino, &of->slots[sp.slot], sp.inner,
				(const uint8_t *)buf + sp.done, sp.len);
		if (!rc && streaming)
			rc = spill_if_filled(st, of, &sp);
	}
	of->write_end = end;
	if (sp.len) {
		of->dirty = true;
		publish_size(of, true);
	}
	if (!rc)
		rc = relieve_pressure(st, of, sp.slot);
	/* the write reports a failure: its value is not stored (README) */
	if (rc)
		of->failed = rc;
	pthread_rwlock_unlock(&of->lock);
	return rc ? rc : (ssize_t)size;
}

void nadb_file_abandon(struct nadb_file *f, int why)
{
	assert(why < 0);
	pthread_rwlock_wrlock(&f->of->lock);
	f->of->failed = why;
	f->of->dirty = true; /* the commit says so, even of nothing written */
	pthread_rwlock_unlock(&f->of->lock);
}

int nadb_file_allocate(struct nadb_file *f, off_t off, off_t len)
{
	atomic_store(&f->wrote, true);
	if (off < 0 || len <= 0)
		return -EINVAL;
	uint64_t end = (uint64_t)off + (uint64_t)len;
	if (end > file_size_max(f->st))
		return -EFBIG;
	pthread_rwlock_wrlock(&f->of->lock);
	int rc = end > f->of->size ? truncate_locked(f->st, f->of, end) : 0;
	pthread_rwlock_unlock(&f->of->lock);
	return rc;
}

int nadb_file_commit(struct nadb_file *f)
{
	pthread_rwlock_wrlock(&f->of->lock);
	int rc = commit_locked(f->st, f->of);
	pthread_rwlock_unlock(&f->of->lock);
	return rc;
}

void nadb_file_heard_failures(struct nadb_file *f, uint64_t n)
{
	atomic_store(&f->seen_failures, n);
}

int nadb_file_fsync(struct nadb_file *f)
{
	int rc = nadb_file_commit(f);
	return rc ? rc : nadb_store_sync_seen(f->st, &f->seen_failures);
}

/* F, a writer, is closing: if it is the last writer and the value could
 * not be stored (a write failed), the handles left (readers) go back to
 * the stored value, and the failure is over.  Else they would read bytes
 * that are not the key's, the chunks written early for them would keep
 * the disk full, and every later writer's commit would fail with it. */
static void revert_failed_value(struct nadb_file *f)
{
	struct nadb_store *st = f->st;
	struct ofile *of = f->of;
	pthread_rwlock_wrlock(&of->lock);
	pthread_mutex_lock(&st->files_lock);
	bool others_stay = of->writers == 1 && of->refs > 1; /* else the last close drops it */
	pthread_mutex_unlock(&st->files_lock);
	if (others_stay && of->failed && of->dirty) {
		pthread_mutex_lock(&st->meta_lock);
		discard_pending(st, of->ino);
		pthread_mutex_unlock(&st->meta_lock);
		of->loaded = false;
		int rc = load_ofile(st, of);
		if (rc) /* its readers' reads fail until it can be */
			nadb_log("inode %llu: cannot reload the stored value after a failed one: %s",
				 (unsigned long long)of->ino, strerror(-rc));
		of->failed = 0;
		of->dirty = false;
		of->write_end = 0;
	}
	pthread_rwlock_unlock(&of->lock);
}

/* A reader's close commits nothing: what a writer still holding the key
 * has written so far is not a value (after a crash the key must hold the
 * old value or the writer's whole new one, never a prefix).  fsync, from
 * any handle, does commit it, as fsync(2) flushes the file's data whoever
 * asks.  (A handle opened without NADB_OPEN_WRITE that wrote is a writer:
 * the engine's own callers may do that; the kernel never does.) */
int nadb_file_close(struct nadb_file *f)
{
	int rc = f->writes || atomic_load(&f->wrote) ? nadb_file_commit(f) : 0;
	if (f->writes)
		revert_failed_value(f);
	pthread_mutex_lock(&f->st->files_lock);
	struct nadb_file **p = &f->of->handles;
	while (*p != f)
		p = &(*p)->next;
	*p = f->next;
	pthread_mutex_unlock(&f->st->files_lock);
	put_ofile(f->st, f->of, f->writes);
	free(f);
	return rc;
}

int file_close_left_open(struct nadb_store *st)
{
	int rc = 0;
	for (size_t b = 0; b < st->nfiles_buckets; b++) {
		for (;;) {
			pthread_mutex_lock(&st->files_lock);
			struct ofile *of = st->files[b];
			while (of && !of->handles)
				of = of->next;
			struct nadb_file *f = of ? of->handles : NULL;
			pthread_mutex_unlock(&st->files_lock);
			if (!f)
				break;
			int e = nadb_file_close(f);
			if (e && !rc)
				rc = e;
		}
	}
	return rc;
}

int file_set_size(struct nadb_store *st, uint64_t ino, uint64_t size)
{
	if (size > file_size_max(st))
		return -EFBIG;
	struct nadb_file *f;
	int rc = nadb_file_open(st, ino, 0, &f);
	if (rc)
		return rc;
	pthread_rwlock_wrlock(&f->of->lock);
	rc = truncate_locked(st, f->of, size);
	if (!rc)
		rc = commit_locked(st, f->of);
	pthread_rwlock_unlock(&f->of->lock);
	int rc2 = nadb_file_close(f);
	return rc ? rc : rc2;
}

/* Does INO have open handles (any, or WRITERS only)? */
static bool has_handles(struct nadb_store *st, uint64_t ino, bool writers)
{
	pthread_mutex_lock(&st->files_lock);
	struct ofile *of = find_ofile(st, ino);
	bool has = of && (writers ? of->writers : of->refs);
	pthread_mutex_unlock(&st->files_lock);
	return has;
}

bool file_is_open(struct nadb_store *st, uint64_t ino)
{
	return has_handles(st, ino, false);
}

bool file_is_being_written(struct nadb_store *st, uint64_t ino)
{
	return has_handles(st, ino, true);
}

void file_note_times(struct nadb_store *st, uint64_t ino, int64_t mtime,
		     int64_t ctime)
{
	pthread_mutex_lock(&st->files_lock);
	struct ofile *of = find_ofile(st, ino);
	if (of) {
		pthread_mutex_lock(&of->attr_lock);
		if (mtime != FILE_TIME_KEPT)
			of->a_mtime = mtime;
		of->a_ctime = ctime;
		pthread_mutex_unlock(&of->attr_lock);
	}
	pthread_mutex_unlock(&st->files_lock);
}

static struct timespec ts_of(int64_t ns)
{
	return (struct timespec){.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
}

void file_overlay_attr(struct nadb_store *st, struct nadb_attr *a)
{
	if (!S_ISREG(a->mode))
		return;
	pthread_mutex_lock(&st->files_lock);
	struct ofile *of = find_ofile(st, a->ino);
	if (of) {
		pthread_mutex_lock(&of->attr_lock);
		if (of->a_changed) {
			a->size = of->a_size;
			a->mtime = ts_of(of->a_mtime);
			a->ctime = ts_of(of->a_ctime);
		}
		pthread_mutex_unlock(&of->attr_lock);
	}
	pthread_mutex_unlock(&st->files_lock);
}

int file_commit_all(struct nadb_store *st)
{
	int rc = 0;
	for (size_t b = 0; b < st->nfiles_buckets; b++) {
		for (;;) {
			pthread_mutex_lock(&st->files_lock);
			struct ofile *of = st->files[b];
			while (of && !of->dirty)
				of = of->next;
			if (of)
				of->refs++;
			pthread_mutex_unlock(&st->files_lock);
			if (!of)
				break;
			struct nadb_file f = {.st = st, .of = of};
			pthread_rwlock_wrlock(&of->lock);
			int e = commit_locked(st, of);
			of->dirty = false; /* logged; do not loop on a failure */
			pthread_rwlock_unlock(&of->lock);
			put_ofile(st, f.of, false);
			if (e && !rc)
				rc = e;
		}
	}
	return rc;
}
