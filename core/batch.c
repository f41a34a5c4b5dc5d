/* batch.c -- atomic operations on whole values (store.h's nadb_apply and
 * nadb_read_values): the engine's side of nadb incr, cas, mset and mget.
 *
 * A batch is one step under meta_lock: its reads (a condition's hash,
 * incr's old value) and its writes happen with no other step between
 * them, and the backend keeps a step whole across a crash.  The chunks of
 * its new values are stored (and referenced) in a step before it, in
 * partition 0 (chunk.h), and given back if the batch fails; so an incr's
 * new value is worked out before that step too, and again inside the
 * batch, where it must come out the same.  A value is
 * cut into chunks as a write of the same bytes through a file would cut
 * it (chunk-sized slices, all-zero ones as holes), so the two give equal
 * hashes.
 *
 * A key open through the file system shares one value buffer among its
 * handles (file.c).  The batch holds that buffer throughout and reloads it
 * after, so that no handle reads chunks the batch freed; a buffer with
 * unsaved writes (a copy in progress) makes the batch fail with EBUSY
 * rather than store half a copy or lose it.  Which keys are open is
 * known only once their paths are resolved, under meta_lock, but buffers
 * are locked before meta_lock: so resolve, hold, and resolve again inside
 * the step; a key opened in between makes the batch start over.
 */
#include "log.h"
#include "store_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BATCH_TRIES 16    /* start-overs (keys opened meanwhile) before -EAGAIN */
#define INCR_VALUE_MAX 64 /* bytes: a longer value is not an integer */

/* A value cut into chunks, hashed and compressed outside the lock; a
 * slice with raw == NULL is a hole. */
struct prepared {
	struct chunk_prep *slices;
	size_t n;
	uint64_t len;
	char number[32]; /* INCR's value: the slices point here */
	uint8_t *hashes; /* the chunks stored for the slices (zeros: holes) */
	bool stored;     /* ... and referenced, by store_values (for the
			    batch under way) */
};

static void release_prepared(struct prepared *p)
{
	for (size_t i = 0; i < p->n; i++)
		chunk_prep_release(&p->slices[i]);
	free(p->slices);
	free(p->hashes);
	p->slices = NULL;
	p->hashes = NULL;
	p->n = 0;
	p->stored = false;
}

static int prepare_value(struct nadb_store *st, const void *value, size_t len,
			 struct prepared *p)
{
	size_t cs = st->chunk_size;
	p->len = len;
	p->n = (len + cs - 1) / cs;
	p->slices = calloc(p->n + 1, sizeof(*p->slices));
	p->hashes = calloc(p->n + 1, CHUNK_HASH_LEN);
	if (!p->slices || !p->hashes)
		return -ENOMEM;
	for (size_t i = 0; i < p->n; i++) {
		const uint8_t *slice = (const uint8_t *)value + i * cs;
		size_t l = len - i * cs < cs ? len - i * cs : cs;
		if (chunk_all_zero(slice, l))
			continue;
		int rc = chunk_prepare(&st->chunks, slice, l, &p->slices[i]);
		if (rc)
			return rc;
	}
	return 0;
}

/* The whole value of key IN (inode INO) into BUF (in->r.size bytes).
 * Under meta_lock. */
static int read_value(struct nadb_store *st, uint64_t ino, const struct inode *in,
		      uint8_t *buf)
{
	size_t cs = st->chunk_size, n = in->payload_len / CHUNK_HASH_LEN;
	if ((in->r.size + cs - 1) / cs != n) {
		nadb_log("inode %" PRIu64 ": chunk list does not match its size", ino);
		return -EIO;
	}
	for (size_t i = 0; i < n; i++) {
		const uint8_t *h = in->payload + i * CHUNK_HASH_LEN;
		size_t off = i * cs, l = in->r.size - off < cs ? in->r.size - off : cs;
		if (chunk_is_hole(h)) {
			memset(buf + off, 0, l);
			continue;
		}
		/* A chunk holds the bytes up to the last one written to its
		 * slice: zeros after (a file extended by truncate). */
		struct chunk_loc loc;
		const char *why = NULL;
		int rc = chunk_locate(&st->chunks, h, &loc);
		size_t have = rc || loc.raw_len > l ? l : loc.raw_len;
		if (!rc)
			rc = chunk_read_why(&st->chunks, &loc, h, 0, (uint32_t)have, buf + off, &why);
		memset(buf + off + have, 0, l - have);
		if (rc) {
			char path[1024];
			inode_path(st, ino, path, sizeof(path));
			nadb_log("key %s: cannot read its value: %s", path, why ? why : strerror(-rc));
			return why ? -EIO : rc;
		}
	}
	return 0;
}

/* Parse a decimal integer value: an optional '-', digits, an optional
 * "\n".  An empty value counts as 0, as a missing key does. */
static int parse_integer(const char *s, size_t len, int64_t *out)
{
	if (len && s[len - 1] == '\n')
		len--;
	size_t i = len && s[0] == '-';
	if (i == len) {
		*out = 0;
		return len ? -EINVAL : 0;
	}
	int64_t v = 0;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		int d = s[i] - '0';
		/* accumulate negatively: INT64_MIN has no positive twin */
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_sub_overflow(v, d, &v))
			return -ERANGE;
	}
	if (s[0] != '-' && __builtin_mul_overflow(v, -1, &v))
		return -ERANGE;
	*out = v;
	return 0;
}

/* INCR's new value: the integer in the LEN bytes at VALUE plus BY, into
 * *P and *NUMBER. */
static int incr_of(struct nadb_store *st, const void *value, size_t len, int64_t by,
		   int64_t *number, struct prepared *p)
{
	int64_t cur = 0;
	int rc = len > INCR_VALUE_MAX ? -EINVAL : parse_integer(value, len, &cur);
	if (rc)
		return rc;
	if (__builtin_add_overflow(cur, by, number))
		return -ERANGE;
	int n = snprintf(p->number, sizeof(p->number), "%" PRId64 "\n", *number);
	return prepare_value(st, p->number, (size_t)n, p);
}

/* INCR's new value: key IN (NULL: none) plus BY, as incr_of. */
static int incr_value(struct nadb_store *st, uint64_t ino, const struct inode *in,
		      int64_t by, int64_t *number, struct prepared *p)
{
	char buf[INCR_VALUE_MAX];
	size_t len = in ? in->r.size : 0;
	if (len > INCR_VALUE_MAX)
		return -EINVAL;
	int rc = len ? read_value(st, ino, in, (uint8_t *)buf) : 0;
	return rc ? rc : incr_of(st, buf, len, by, number, p);
}

/* A batch under way (steps_taking_refs). */
struct run {
	struct nadb_store *st;
	struct nadb_op *ops;
	size_t n;
	const struct nadb_caller *who;
	struct prepared *values;
	const struct held *held;
	size_t *failed;
};

/* Store and reference the chunks of the batch's values, in partition 0. */
static int store_values(void *ctx)
{
	struct run *r = ctx;
	int rc = 0;
	for (size_t v = 0; !rc && v < r->n; v++) {
		struct prepared *p = &r->values[v];
		for (size_t i = 0; !rc && i < p->n; i++)
			if (p->slices[i].raw)
				rc = chunk_put(&r->st->chunks, &p->slices[i],
					       p->hashes + i * CHUNK_HASH_LEN);
		p->stored = p->slices != NULL;
	}
	if (rc) /* undone with the step */
		for (size_t v = 0; v < r->n; v++)
			r->values[v].stored = false;
	return rc;
}

/* The batch failed: give back the references store_values took. */
static int give_back_values(void *ctx)
{
	struct run *r = ctx;
	int rc = 0;
	for (size_t v = 0; !rc && v < r->n; v++) {
		struct prepared *p = &r->values[v];
		for (size_t i = 0; !rc && p->stored && i < p->n; i++)
			if (p->slices[i].raw)
				rc = chunk_ref(&r->st->chunks, p->hashes + i * CHUNK_HASH_LEN, -1);
	}
	return rc;
}

/* Give key INO (record R, old chunk list OLD) the value P, whose chunks
 * store_values stored and referenced, inside a step: the old references
 * dropped (after the new ones were taken: a chunk both hold never reaches
 * zero).  A user's new value clears the key's set-id bits, as a write(2)
 * by a process without CAP_FSETID does (root's keeps them). */
static int set_value(struct nadb_store *st, uint64_t ino, struct inode_rec *r,
		     const uint8_t *old, size_t old_len, const struct prepared *p,
		     const struct nadb_caller *who, char hash[NADB_HASH_TEXT])
{
	assert(p->stored || p->n == 0);
	const uint8_t *list = p->hashes;
	int rc = 0;
	for (size_t i = 0; !rc && i < old_len / CHUNK_HASH_LEN; i++)
		if (!chunk_is_hole(old + i * CHUNK_HASH_LEN))
			rc = chunk_unref(&st->chunks, ino, old + i * CHUNK_HASH_LEN);
	if (!rc)
		rc = index_size_changed(st, ino, (int64_t)p->len - (int64_t)r->size);
	if (!rc) {
		int64_t mode = who && who->uid ? setid_killed(r->mode, r->gid, who, true) : r->mode;
		assert(mode >= 0); /* groups known: never -EAGAIN */
		r->mode = (uint32_t)mode;
		r->size = p->len;
		r->mtime = r->ctime = now_ns();
		r->stored = keymeta_stored(st, list, p->n);
		rc = inode_put(st, ino, r, list, p->n * CHUNK_HASH_LEN);
	}
	if (!rc)
		rc = keymeta_hash(r->size, list, p->n, hash);
	return rc;
}

/* The keys whose open buffers the batch holds, by inode number; KEYS:
 * room for the keys of all operations, and which operation named each. */
struct key_of_op {
	uint64_t ino;
	size_t op;
};
struct held {
	uint64_t *inos;
	struct ofile **of;
	size_t n;
	struct key_of_op *keys;
};

static bool holds(const struct held *h, uint64_t ino)
{
	for (size_t i = 0; i < h->n; i++)
		if (h->inos[i] == ino)
			return true;
	return false;
}

static const struct nadb_caller trusted = {0, 0, NULL, 0};

/* Make key NAME in PARENT for WHO, who needs write and search permission
 * on PARENT as creat(2) would.  Inside a step. */
static int create_key(struct nadb_store *st, uint64_t parent, const char *name,
		      const struct nadb_caller *who, uint64_t *ino, struct inode_rec *r)
{
	struct inode dir;
	int rc = inode_get(st, parent, &dir);
	if (rc)
		return rc;
	rc = access_check(&dir.r, who, ACCESS_W | ACCESS_X);
	inode_release(&dir);
	if (rc)
		return rc;
	return tree_make_node(st, parent, name, S_IFREG | 0644, 0, NULL, who ? who : &trusted,
			      ino, r);
}

/* Is the key's current state what OP's condition asks?  CUR: its hash. */
static int check_cond(const struct nadb_op *op, uint64_t ino, const char *cur)
{
	switch (op->cond) {
	case NADB_IF_ANY:
		return 0;
	case NADB_IF_ABSENT:
		return ino ? -ECANCELED : 0;
	case NADB_IF_HASH:
		return ino && !strcmp(cur, op->expect) ? 0 : -ECANCELED;
	}
	return -EINVAL;
}

/* One operation, inside the batch's step.  P: a SET's value. */
static int apply_one(struct nadb_store *st, struct nadb_op *op, const struct nadb_caller *who,
		     const struct prepared *p, const struct held *held)
{
	char name[NADB_NAME_MAX + 1];
	uint64_t parent, ino;
	int rc = tree_resolve_key(st, op->path, who, &parent, name, &ino);
	if (rc)
		return rc;
	op->parent = parent;
	if (ino && !holds(held, ino) && file_is_open(st, ino))
		return -EAGAIN; /* opened since we looked: start over */
	struct inode in = {0};
	char cur[NADB_HASH_TEXT] = "-";
	if (ino) {
		rc = inode_get(st, ino, &in);
		if (rc)
			return rc;
		/* incr and a conditional set read the value (or its hash,
		 * which a mismatch reports): they need read permission too */
		bool reads = op->kind == NADB_OP_INCR || op->cond != NADB_IF_ANY;
		rc = S_ISDIR(in.r.mode) ? -EISDIR : !S_ISREG(in.r.mode) ? -EINVAL
		     : access_check(&in.r, who, reads ? ACCESS_R | ACCESS_W : ACCESS_W);
		if (!rc)
			rc = keymeta_hash(in.r.size, in.payload, in.payload_len / CHUNK_HASH_LEN, cur);
	}
	if (!rc)
		rc = check_cond(op, ino, cur);
	if (rc == -ECANCELED)
		memcpy(op->hash, cur, sizeof(cur));
	struct prepared own = {0};
	if (!rc && op->kind == NADB_OP_INCR) {
		rc = incr_value(st, ino, ino ? &in : NULL, op->by, &op->number, &own);
		/* P: what foresee_incrs worked out, stored; the same unless
		 * the key changed in between (another daemon) */
		if (!rc && (!p->stored || strcmp(own.number, p->number)))
			rc = -EAGAIN;
	}
	if (!rc && !ino) {
		rc = create_key(st, parent, name, who, &ino, &in.r);
		op->created = rc == 0;
	}
	if (!rc)
		rc = set_value(st, ino, &in.r, in.payload, in.payload_len, p, who, op->hash);
	op->ino = ino;
	release_prepared(&own);
	inode_release(&in);
	return rc;
}

static int cmp_key(const void *a, const void *b)
{
	uint64_t x = ((const struct key_of_op *)a)->ino, y = ((const struct key_of_op *)b)->ino;
	return x < y ? -1 : x > y;
}

static void let_go(struct nadb_store *st, struct held *h, bool changed)
{
	for (size_t i = 0; i < h->n; i++)
		file_let_go(st, h->of[i], changed);
	h->n = 0;
}

/* Hold the open buffers of the keys OPS name now (in inode order, so two
 * batches never wait on each other's).  On failure none is held and
 * *FAILED is the operation whose key could not be held. */
static int hold_open_keys(struct nadb_store *st, struct nadb_op *ops, size_t n,
			  const struct nadb_caller *who, struct held *h, size_t *failed)
{
	char name[NADB_NAME_MAX + 1];
	uint64_t parent;
	struct key_of_op *k = h->keys;
	size_t m = 0;
	pthread_mutex_lock(&st->meta_lock);
	for (size_t i = 0; i < n; i++)
		if (!tree_resolve_key(st, ops[i].path, who, &parent, name, &k[m].ino) && k[m].ino)
			k[m++].op = i;
	pthread_mutex_unlock(&st->meta_lock);
	qsort(k, m, sizeof(*k), cmp_key);
	h->n = 0;
	for (size_t i = 0; i < m; i++) {
		if (i && k[i].ino == k[i - 1].ino)
			continue;
		int rc;
		struct ofile *of = file_hold(st, k[i].ino, &rc);
		if (rc) {
			*failed = k[i].op;
			let_go(st, h, false);
			return rc;
		}
		if (of) {
			h->inos[h->n] = k[i].ino;
			h->of[h->n++] = of;
		}
	}
	return 0;
}

/* Work out each incr's new value into VALUES as the batch will, before
 * store_values stores it: from the value an earlier operation of the
 * batch gives the key, or else the stored one.  One that cannot be worked
 * out is left empty: the batch meets the same error and reports it.
 * Whether a key is outside partition 0 (its rows apart from the chunks').
 * Under meta_lock. */
static bool foresee_incrs(struct nadb_store *st, const struct nadb_op *ops, size_t n,
			  const struct nadb_caller *who, struct prepared *values)
{
	struct named {
		uint64_t parent, ino; /* ino 0: made by the batch */
		char name[NADB_NAME_MAX + 1];
		const void *value; /* what the batch gives it so far (NULL: stored) */
		size_t len;
	} *key = calloc(n + 1, sizeof(*key));
	bool apart = false;
	if (!key)
		return true; /* the incrs stay empty: the batch fails -EAGAIN */
	for (size_t i = 0; i < n; i++) {
		uint64_t ino = 0;
		int rc = tree_resolve_key(st, ops[i].path, who, &key[i].parent, key[i].name, &ino);
		apart |= rc || kv_partition(key[i].parent) != 0;
		key[i].ino = ino;
		const struct named *before = NULL; /* the same key (or a link to it) */
		for (size_t j = i; !rc && j-- > 0;)
			if (ino ? key[j].ino == ino : key[j].parent == key[i].parent &&
			    !strcmp(key[j].name, key[i].name)) {
				before = &key[j];
				break;
			}
		if (ops[i].kind == NADB_OP_SET) {
			key[i].value = ops[i].value;
			key[i].len = ops[i].len;
			continue;
		}
		release_prepared(&values[i]);
		int64_t number;
		if (!rc && before && before->value) {
			rc = incr_of(st, before->value, before->len, ops[i].by, &number, &values[i]);
		} else if (!rc) {
			struct inode in = {0};
			if (ino && !(rc = inode_get(st, ino, &in)))
				rc = !S_ISREG(in.r.mode) ? -EINVAL
				     : access_check(&in.r, who, ACCESS_R | ACCESS_W);
			if (!rc)
				rc = incr_value(st, ino, ino ? &in : NULL, ops[i].by, &number, &values[i]);
			inode_release(&in);
		}
		if (rc) {
			release_prepared(&values[i]);
			continue;
		}
		key[i].value = values[i].number;
		key[i].len = strlen(values[i].number);
	}
	free(key);
	return apart;
}

/* Every operation, in order, in the batch's step. */
static int apply_all(void *ctx)
{
	struct run *r = ctx;
	int rc = 0;
	for (size_t i = 0; !rc && i < r->n; i++) {
		rc = apply_one(r->st, &r->ops[i], r->who, &r->values[i], r->held);
		if (rc)
			*r->failed = i;
	}
	return rc;
}

static int run_batch(struct nadb_store *st, struct nadb_op *ops, size_t n,
		     const struct nadb_caller *who, struct prepared *values,
		     struct held *held, size_t *failed)
{
	for (size_t i = 0; i < n; i++) {
		ops[i].ino = ops[i].parent = 0;
		ops[i].created = false;
		ops[i].hash[0] = 0;
	}
	int rc = hold_open_keys(st, ops, n, who, held, failed);
	if (rc)
		return rc;
	pthread_mutex_lock(&st->meta_lock);
	bool apart = foresee_incrs(st, ops, n, who, values);
	struct run r = {st, ops, n, who, values, held, failed};
	rc = steps_taking_refs(st, apart, store_values, apply_all, give_back_values, &r);
	for (size_t i = 0; i < n; i++)
		values[i].stored = false; /* used, or given back */
	store_note_step(st);
	pthread_mutex_unlock(&st->meta_lock);
	let_go(st, held, rc == 0);
	return rc;
}

int nadb_apply(struct nadb_store *st, struct nadb_op *ops, size_t n,
	       const struct nadb_caller *who, size_t *failed)
{
	*failed = 0;
	struct prepared *values = calloc(n + 1, sizeof(*values));
	struct held held = {
		.inos = calloc(n + 1, sizeof(uint64_t)),
		.of = calloc(n + 1, sizeof(struct ofile *)),
		.keys = calloc(n + 1, sizeof(struct key_of_op)),
	};
	int rc = values && held.inos && held.of && held.keys ? 0 : -ENOMEM;
	for (size_t i = 0; !rc && i < n; i++) {
		if (ops[i].kind == NADB_OP_SET &&
		    (rc = prepare_value(st, ops[i].value, ops[i].len, &values[i])))
			*failed = i;
	}
	bool made_room = false;
	for (int tries = 0; !rc; tries++) {
		rc = run_batch(st, ops, n, who, values, &held, failed);
		if (rc == -EAGAIN && tries < BATCH_TRIES)
			rc = 0;
		else if (rc == -ENOSPC && !made_room && (made_room = store_make_room(st) > 0))
			rc = 0;
		else
			break;
	}
	for (size_t i = 0; values && i < n; i++)
		release_prepared(&values[i]);
	if (rc) /* undone: nothing was made */
		for (size_t i = 0; i < n; i++)
			ops[i].created = false;
	free(values);
	free(held.inos);
	free(held.of);
	free(held.keys);
	return rc;
}

const char *nadb_op_why(const struct nadb_op *op, int rc)
{
	if (op->kind == NADB_OP_INCR && rc == -EINVAL)
		return "the value is not a decimal integer";
	if (op->kind == NADB_OP_INCR && rc == -ERANGE)
		return "the result would not fit in 64 bits";
	if (rc == -EINVAL)
		return "not a key's path (/DB/NS/KEY)";
	if (rc == -EBUSY)
		return "the key is being written through an open file; try again once it is closed";
	if (rc == -EAGAIN)
		return "the key kept being opened and closed; try again";
	return NULL;
}

int nadb_read_values(struct nadb_store *st, const char *const *paths, size_t n,
		     const struct nadb_caller *who, uint64_t max_bytes,
		     nadb_value_fn fn, void *ctx)
{
	uint64_t total = 0;
	int rc = 0;
	pthread_mutex_lock(&st->meta_lock);
	for (size_t i = 0; !rc && i < n; i++) {
		char name[NADB_NAME_MAX + 1];
		uint64_t parent, ino;
		struct inode in = {0};
		uint8_t *buf = NULL;
		int r = tree_resolve_key(st, paths[i], who, &parent, name, &ino);
		if (!r && !ino)
			r = -ENOENT;
		if (!r && !(r = inode_get(st, ino, &in)))
			r = S_ISDIR(in.r.mode) ? -EISDIR : !S_ISREG(in.r.mode) ? -EINVAL
			    : access_check(&in.r, who, ACCESS_R);
		if (!r && (total += in.r.size) > max_bytes)
			r = -EFBIG;
		if (!r && !(buf = malloc(in.r.size + 1)))
			r = -ENOMEM;
		if (!r)
			r = read_value(st, ino, &in, buf);
		rc = fn(ctx, i, r, buf, r ? 0 : in.r.size);
		free(buf);
		inode_release(&in);
	}
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}
