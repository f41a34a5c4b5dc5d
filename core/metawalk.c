/* metawalk.c -- reading a metadata file that may be damaged (metawalk.h).
 *
 * LMDB checksums nothing.  A flipped byte in a branch page sends a cursor
 * to a page number past the end of the map (SIGBUS, SIGSEGV) or into
 * pages that are not what they claim, and nothing inside the process can
 * tell beforehand.  So every read of an untrusted file happens in a
 * forked child, which tells the parent what it found over a pipe:
 *
 *   check:   the child opens the file read-only and walks every table with
 *            a cursor -- the free list, the table of tables, each of ours
 *            -- touching every byte of every value, checking that keys come
 *            in order and each found again by its key (a damaged branch
 *            key misdirects lookups only), that each table holds as many
 *            records as its header says, that each record lies inside its
 *            page and has the shape its table's encoding gives it
 *            (store_int.h, chunk.h).  Dying of a signal, going
 *            silent for NO_PROGRESS_MS (a loop through damaged pages) or
 *            reporting an error all mean: damaged.
 *   salvage: one child per table streams every record it can read, each
 *            in its own write so that a crash loses none already read.
 *            When it dies, the parent starts another past the damage: it
 *            probes keys above the last one received (SET_RANGE lands past
 *            the damaged pages once the probe is past them), then walks
 *            back from the probe to pick up the readable records the probe
 *            jumped over.  The records go into a fresh file that replaces
 *            the damaged one, which is kept beside it.
 *
 * The parent is single-threaded when it forks (store open runs before any
 * thread of the engine or the daemon starts), so the child may use malloc
 * and LMDB freely; it leaves with _exit.
 */
#include "metawalk.h"
#include "log.h"
#include "store_int.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NO_PROGRESS_MS 10000 /* a child silent this long loops in damaged pages */
#define HEARTBEAT 4096       /* check: records between two progress frames */
#define SYNC_EVERY 20000     /* salvage: records per commit of the new file */
#define KEY_MAX 511          /* LMDB's longest key */
#define MAX_RUNS 20000       /* salvage: children per table, whatever happens */

/* Child exit codes; a signal or a timeout is the other way to end. */
enum { CHILD_DONE = 0, CHILD_DAMAGED = 1, CHILD_CANNOT = 2, CHILD_STUCK = 3 };

/* Frames, child to parent: type (1 byte), length (4, host order), body. */
enum {
	F_TABLE = 'T',  /* table (1), records its header counts (8) */
	F_RECORD = 'R', /* table (1), key length (2), key, value */
	F_BAD = 'B',    /* table (1), key length (2), key, why: a malformed record */
	F_PROGRESS = 'P', /* check: records walked so far (8) */
	F_ERROR = 'E',  /* text: why the file is damaged */
	F_DONE = 'D',
};

/* ---- record shapes ------------------------------------------------------- */

/* Why a record cannot be what table T keeps, or NULL when it can. */
static const char *bad_shape(int t, const MDB_val *k, const MDB_val *v)
{
	size_t kl = k->mv_size, vl = v->mv_size;
	switch (t) {
	case KV_META:
		if ((kl == 6 && !memcmp(k->mv_data, "format", 6)) ||
		    (kl == 8 && !memcmp(k->mv_data, "next_ino", 8)))
			return vl == 8 ? NULL : "a store setting of the wrong size";
		return NULL;
	case KV_INODES: {
		struct inode_rec r;
		const uint8_t *payload;
		size_t plen;
		if (kl != INO_KEY_LEN || inode_decode(v->mv_data, vl, &r, &payload, &plen))
			return "an inode record that cannot be read";
		if (S_ISREG(r.mode) && plen % CHUNK_HASH_LEN)
			return "a chunk list of the wrong size";
		return NULL;
	}
	case KV_DIRENTS:
	{
		struct dirent_val d;
		return kl > INO_KEY_LEN && kl <= NAME_KEY_MAX && !dirent_decode(v->mv_data, vl, &d)
		       ? NULL : "a directory entry that cannot be read";
	}
	case KV_CHUNKS: {
		uint32_t raw;
		return kl == CHUNK_HASH_LEN && !chunk_row_raw_len(v->mv_data, vl, &raw) ? NULL
		       : "a chunk record that cannot be read";
	}
	case KV_PENDING:
		return kl == 2 * INO_KEY_LEN && vl == CHUNK_HASH_LEN ? NULL
		       : "a pending reference of the wrong size";
	case KV_ORPHANS:
		return kl == INO_KEY_LEN ? NULL : "an orphan row of the wrong size";
	case KV_SEGMENTS:
		return kl == 4 && vl == 8 ? NULL : "a segment row of the wrong size";
	case KV_LINKS:
		return kl > 2 * INO_KEY_LEN && kl <= LINK_KEY_MAX && vl == 0 ? NULL
		       : "a link row of the wrong size";
	case KV_EXPIRY:
		return kl == 2 * INO_KEY_LEN ? NULL : "an expiry row of the wrong size";
	case KV_COUNTERS:
		return kl == INO_KEY_LEN && vl % 8 == 0 ? NULL : "a counter row of the wrong size";
	case KV_TAG_IDS:
		return kl && kl <= NADB_NAME_MAX && vl == 4 ? NULL : "a tag id of the wrong size";
	case KV_TAG_COUNTS:
		return kl > INO_KEY_LEN && kl <= NAME_KEY_MAX && vl == 8
		       ? NULL : "a tag count of the wrong size";
	case KV_TAG_EDGES:
		return kl > INO_KEY_LEN + 4 && kl <= NAME_KEY_MAX + 4 && vl == 16
		       ? NULL : "a tag tree row of the wrong size";
	case KV_CHUNK_DROPS:
		return kl == INO_KEY_LEN + CHUNK_HASH_LEN + 8 && vl == 0
		       ? NULL : "a dropped-reference row of the wrong size";
	default:
		return kl ? NULL : "an empty key";
	}
}

/* ---- the child ----------------------------------------------------------- */

struct child {
	int fd;
	MDB_env *env;
	MDB_txn *txn;
	size_t last_pgno;
	const uint8_t *map; /* where the file is mapped */
	size_t psize;
	uint64_t walked;
};

/* Does the record lie where LMDB's page layout puts it?  A key, and a
 * value stored beside it, end inside the key's page; a value on overflow
 * pages starts after a page header and ends inside the file.  A damaged
 * node size fails this, and LMDB would copy that many bytes on the next
 * write to the page. */
static bool in_place(const struct child *c, const MDB_val *k, const MDB_val *v)
{
	const uint8_t *kp = k->mv_data, *vp = v->mv_data, *end;
	end = c->map + (c->last_pgno + 1) * c->psize;
	if (kp < c->map || kp >= end)
		return false;
	const uint8_t *page_end = c->map + ((size_t)(kp - c->map) / c->psize + 1) * c->psize;
	if (kp + k->mv_size > page_end)
		return false;
	if (vp == kp + k->mv_size) /* beside its key */
		return vp + v->mv_size <= page_end;
	return vp >= c->map && vp <= end && (size_t)(vp - c->map) % c->psize == 16 &&
	       v->mv_size <= (size_t)(end - vp);
}

/* One frame in one write: a crash while copying the record out of the
 * map happens before anything is written, so the parent sees whole
 * frames only. */
static void send_frame(struct child *c, uint8_t type, const void *a, size_t alen,
		       const void *b, size_t blen)
{
	size_t n = 5 + alen + blen;
	uint8_t *buf = malloc(n);
	if (!buf)
		_exit(CHILD_CANNOT);
	uint32_t len = (uint32_t)(alen + blen);
	buf[0] = type;
	memcpy(buf + 1, &len, 4);
	if (alen)
		memcpy(buf + 5, a, alen);
	if (blen)
		memcpy(buf + 5 + alen, b, blen);
	for (size_t done = 0; done < n;) {
		ssize_t w = write(c->fd, buf + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(CHILD_CANNOT); /* the parent is gone */
		done += (size_t)w;
	}
	free(buf);
}

__attribute__((format(printf, 2, 3), noreturn)) static void child_damaged(struct child *c,
									const char *fmt, ...)
{
	char text[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	send_frame(c, F_ERROR, text, strlen(text), NULL, 0);
	_exit(CHILD_DAMAGED);
}

/* Where LMDB mapped META/data.mdb (it tells only for fixed maps): the
 * kernel's list of our mappings says. */
static const uint8_t *find_map(const char *meta)
{
	char want[4200], line[4400];
	char *real = realpath(meta, NULL);
	snprintf(want, sizeof(want), "%s/data.mdb", real ? real : meta);
	free(real);
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return NULL;
	const uint8_t *map = NULL;
	size_t wl = strlen(want);
	while (!map && fgets(line, sizeof(line), f)) {
		size_t n = strcspn(line, "\n");
		line[n] = 0;
		unsigned long lo;
		if (n >= wl && !strcmp(line + n - wl, want) && sscanf(line, "%lx-", &lo) == 1)
			map = (const uint8_t *)lo;
	}
	fclose(f);
	return map;
}

static void child_open(struct child *c, const char *meta)
{
	int rc = mdb_env_create(&c->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(c->env, KV_NTABLES + 8);
	if (!rc)
		rc = mdb_env_set_mapsize(c->env, KV_LMDB_MAP_SIZE);
	if (rc)
		_exit(CHILD_CANNOT);
	rc = mdb_env_open(c->env, meta, MDB_RDONLY | MDB_NOLOCK | MDB_NORDAHEAD, 0600);
	if (rc)
		child_damaged(c, "it cannot be opened: %s", mdb_strerror(rc));
	MDB_envinfo info;
	MDB_stat es;
	mdb_env_info(c->env, &info);
	mdb_env_stat(c->env, &es);
	c->last_pgno = info.me_last_pgno;
	c->psize = es.ms_psize;
	c->map = find_map(meta);
	if (!c->map || c->psize < 512)
		_exit(CHILD_CANNOT);
	rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &c->txn);
	if (rc)
		child_damaged(c, "no transaction can read it: %s", mdb_strerror(rc));
}

/* Read every byte of V, so that its overflow pages are touched too. */
static uint8_t touch(const MDB_val *v)
{
	const uint8_t *p = v->mv_data;
	uint8_t x = 0;
	for (size_t i = 0; i < v->mv_size; i += 512)
		x ^= p[i];
	return v->mv_size ? (uint8_t)(x ^ p[v->mv_size - 1]) : x;
}

/* Tell the parent that table T's header counts ENTRIES records. */
static void send_count(struct child *c, int t, uint64_t entries)
{
	uint8_t body[9];
	body[0] = (uint8_t)t;
	memcpy(body + 1, &entries, 8);
	send_frame(c, F_TABLE, body, sizeof(body), NULL, 0);
}

static void send_table(struct child *c, int t, MDB_dbi dbi)
{
	MDB_stat s;
	send_count(c, t, mdb_stat(c->txn, dbi, &s) ? 0 : s.ms_entries);
}

/* The version in the store's format record; 0 if it cannot be read. */
static unsigned child_format(struct child *c)
{
	MDB_dbi dbi;
	MDB_val k = {6, "format"}, v;
	uint32_t version = 0;
	if (!mdb_dbi_open(c->txn, kv_table_name(KV_META), 0, &dbi) &&
	    !mdb_get(c->txn, dbi, &k, &v) && v.mv_size == 8)
		memcpy(&version, v.mv_data, sizeof(version));
	return version;
}

/* Table T, or 0 (and an empty table told) when a store of an older format
 * has none yet (opening it makes it). */
static MDB_dbi child_table(struct child *c, int t)
{
	MDB_dbi dbi;
	int rc = mdb_dbi_open(c->txn, kv_table_name(t), 0, &dbi);
	if (rc == MDB_NOTFOUND && child_format(c) && child_format(c) < kv_table_since(t)) {
		send_count(c, t, 0);
		return 0;
	}
	if (rc == MDB_NOTFOUND)
		child_damaged(c, "table '%s' is missing", kv_table_name(t));
	if (rc)
		child_damaged(c, "table '%s' cannot be opened: %s", kv_table_name(t),
			      mdb_strerror(rc));
	return dbi;
}


/* The free list: page-number lists, each page inside the file. */
static void check_free_list(struct child *c)
{
	MDB_cursor *cur;
	MDB_val k, v;
	if (mdb_cursor_open(c->txn, 0, &cur))
		child_damaged(c, "the free list cannot be read");
	int rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		size_t n, pg;
		if (v.mv_size < sizeof(n))
			child_damaged(c, "the free list has a record of %zu bytes", v.mv_size);
		memcpy(&n, v.mv_data, sizeof(n));
		if (v.mv_size != (n + 1) * sizeof(n))
			child_damaged(c, "the free list has a record of the wrong size");
		for (size_t i = 1; i <= n; i++) {
			memcpy(&pg, (const uint8_t *)v.mv_data + i * sizeof(pg), sizeof(pg));
			if (pg < 2 || pg > c->last_pgno)
				child_damaged(c, "the free list names page %zu of %zu", pg,
					      c->last_pgno);
		}
	}
	if (rc != MDB_NOTFOUND)
		child_damaged(c, "the free list cannot be read: %s", mdb_strerror(rc));
	mdb_cursor_close(cur);
}

/* Check: every record of table T in order and of the right shape, and as
 * many as the header says. */
static void check_table(struct child *c, int t)
{
	MDB_dbi dbi = child_table(c, t);
	if (!dbi)
		return;
	send_table(c, t, dbi);
	MDB_stat s;
	if (mdb_stat(c->txn, dbi, &s))
		child_damaged(c, "table '%s' has no readable header", kv_table_name(t));
	MDB_cursor *cur;
	if (mdb_cursor_open(c->txn, dbi, &cur))
		child_damaged(c, "table '%s' cannot be read", kv_table_name(t));
	uint8_t prev[KEY_MAX];
	MDB_val pk = {0, prev}, k, v;
	uint64_t n = 0;
	volatile uint8_t sink = 0;
	int rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
		if (k.mv_size > KEY_MAX || (n && mdb_cmp(c->txn, dbi, &pk, &k) >= 0))
			child_damaged(c, "table '%s' has keys out of order after %llu records",
				      kv_table_name(t), (unsigned long long)n);
		if (!in_place(c, &k, &v))
			child_damaged(c, "table '%s' has a record outside its page after %llu records",
				      kv_table_name(t), (unsigned long long)n);
		const char *why = bad_shape(t, &k, &v);
		if (why)
			child_damaged(c, "table '%s' holds %s", kv_table_name(t), why);
		/* A damaged key in a branch page leaves the leaves in order
		 * but sends a lookup to the wrong leaf: every record must be
		 * found where the walk met it. */
		MDB_val fk = k, fv;
		if (mdb_get(c->txn, dbi, &fk, &fv) || fv.mv_data != v.mv_data)
			child_damaged(c, "table '%s' has a record its key does not find, after %llu "
				      "records", kv_table_name(t), (unsigned long long)n);
		sink ^= touch(&v);
		memcpy(prev, k.mv_data, k.mv_size);
		pk.mv_size = k.mv_size;
		if (++c->walked % HEARTBEAT == 0)
			send_frame(c, F_PROGRESS, &c->walked, sizeof(c->walked), NULL, 0);
	}
	(void)sink;
	if (rc != MDB_NOTFOUND)
		child_damaged(c, "table '%s' cannot be read past record %llu: %s",
			      kv_table_name(t), (unsigned long long)n, mdb_strerror(rc));
	if (n != s.ms_entries)
		child_damaged(c, "table '%s' holds %llu records, its header says %llu",
			      kv_table_name(t), (unsigned long long)n,
			      (unsigned long long)s.ms_entries);
	mdb_cursor_close(cur);
}

static void send_record(struct child *c, int t, const MDB_val *k, const MDB_val *v)
{
	uint8_t head[3 + KEY_MAX];
	uint16_t kl = (uint16_t)k->mv_size;
	if (!in_place(c, k, v)) {
		/* Its value's length is damaged: only the key can be trusted. */
		static const char why[] = "its length points outside its page";
		memcpy(head + 1, &kl, 2);
		head[0] = (uint8_t)t;
		memcpy(head + 3, k->mv_data, kl);
		send_frame(c, F_BAD, head, 3u + kl, why, sizeof(why) - 1);
		return;
	}
	const char *why = bad_shape(t, k, v);
	head[0] = (uint8_t)t;
	memcpy(head + 1, &kl, 2);
	memcpy(head + 3, k->mv_data, kl);
	if (why)
		send_frame(c, F_BAD, head, 3u + kl, why, strlen(why));
	else
		send_frame(c, F_RECORD, head, 3u + kl, v->mv_data, v->mv_size);
}

/* What one salvage child is asked to do. */
struct walk_req {
	int table;
	bool back;             /* walk down from START (exclusive) to FLOOR */
	const uint8_t *start;  /* NULL: the first (forward) or last (back) record */
	size_t slen;
	bool exclusive;        /* forward: skip a record equal to START */
	const uint8_t *floor;  /* back: stop at keys <= FLOOR; NULL: none */
	size_t flen;
};

static void salvage_forward(struct child *c, MDB_dbi dbi, MDB_cursor *cur,
			    const struct walk_req *r)
{
	MDB_val k = {r->slen, (void *)r->start}, v;
	int rc = r->start ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
			  : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	MDB_val sk = {r->slen, (void *)r->start};
	if (!rc && r->start && r->exclusive && !mdb_cmp(c->txn, dbi, &k, &sk))
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	/* A key out of order is a damaged key in a sound page: it is sent
	 * (the new file sorts it) and the walk goes on.  Only a loop through
	 * damaged pages sends more records than the table holds. */
	MDB_stat st;
	uint64_t limit = mdb_stat(c->txn, dbi, &st) ? UINT64_MAX : 2 * st.ms_entries + 1000;
	for (uint64_t n = 0; !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
		if (k.mv_size > KEY_MAX || n >= limit)
			_exit(CHILD_STUCK); /* damaged: the parent probes past it */
		send_record(c, r->table, &k, &v);
	}
	if (rc != MDB_NOTFOUND)
		_exit(CHILD_STUCK);
}

static void salvage_back(struct child *c, MDB_dbi dbi, MDB_cursor *cur,
			 const struct walk_req *r)
{
	MDB_val k = {r->slen, (void *)r->start}, v;
	int rc = r->start ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : MDB_NOTFOUND;
	if (!rc)
		rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
	else if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	MDB_val fk = {r->flen, (void *)r->floor};
	for (; !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
		if (r->floor && mdb_cmp(c->txn, dbi, &k, &fk) <= 0)
			return;
		if (k.mv_size > KEY_MAX)
			_exit(CHILD_STUCK);
		send_record(c, r->table, &k, &v);
	}
	if (rc != MDB_NOTFOUND)
		_exit(CHILD_STUCK);
}

/* The child: CHECK the whole file, or salvage what REQ asks for. */
__attribute__((noreturn)) static void child_main(int fd, const char *meta,
						 const struct walk_req *req)
{
	struct child c = {.fd = fd};
	/* Die with the parent; die of the signals damage raises. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGBUS, SIG_DFL);
	signal(SIGSEGV, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	child_open(&c, meta);
	if (!req) {
		check_free_list(&c);
		for (int t = 0; t < KV_NTABLES; t++)
			check_table(&c, t);
	} else {
		MDB_dbi dbi = child_table(&c, req->table);
		MDB_cursor *cur;
		if (dbi) { /* else a table the store's format has none of yet */
			send_table(&c, req->table, dbi);
			if (mdb_cursor_open(c.txn, dbi, &cur))
				_exit(CHILD_STUCK);
			if (req->back)
				salvage_back(&c, dbi, cur, req);
			else
				salvage_forward(&c, dbi, cur, req);
		}
	}
	send_frame(&c, F_DONE, NULL, 0, NULL, 0);
	_exit(CHILD_DONE);
}

/* ---- the parent: running a child and reading its frames ----------------- */

struct run {
	pid_t pid;
	int fd;
	uint8_t *buf; /* frames received and not yet consumed */
	size_t len, cap, pos;
	bool eof, hung;
};

static int run_start(struct run *r, const char *meta, const struct walk_req *req)
{
	int p[2];
	*r = (struct run){.pid = -1, .fd = -1};
	if (pipe2(p, O_CLOEXEC))
		return -errno;
	fflush(NULL); /* the child leaves by _exit: nothing buffered twice */
	r->pid = fork();
	if (r->pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (r->pid == 0) {
		close(p[0]);
		child_main(p[1], meta, req);
	}
	close(p[1]);
	r->fd = p[0];
	return 0;
}

/* Read more of the child's output; false at its end or after
 * NO_PROGRESS_MS of silence (the child is then killed). */
static bool run_fill(struct run *r)
{
	if (r->eof)
		return false;
	if (r->pos && r->pos == r->len)
		r->pos = r->len = 0;
	if (r->cap - r->len < 65536) {
		size_t cap = r->cap ? r->cap * 2 : 1 << 20;
		uint8_t *b = realloc(r->buf, cap);
		if (!b) {
			r->eof = true;
			return false;
		}
		r->buf = b;
		r->cap = cap;
	}
	struct pollfd pf = {.fd = r->fd, .events = POLLIN};
	int n = poll(&pf, 1, NO_PROGRESS_MS);
	if (n < 0 && errno == EINTR)
		return true;
	if (n == 0) {
		kill(r->pid, SIGKILL);
		r->hung = true;
	}
	ssize_t got = n > 0 ? read(r->fd, r->buf + r->len, r->cap - r->len) : 0;
	if (got < 0 && errno == EINTR)
		return true;
	if (got <= 0) {
		r->eof = true;
		return false;
	}
	r->len += (size_t)got;
	return true;
}

/* The next whole frame, or false when the child has no more. */
static bool run_frame(struct run *r, uint8_t *type, const uint8_t **body, uint32_t *len)
{
	for (;;) {
		size_t have = r->len - r->pos;
		if (have >= 5) {
			memcpy(len, r->buf + r->pos + 1, 4);
			if (have >= 5 + (size_t)*len) {
				*type = r->buf[r->pos];
				*body = r->buf + r->pos + 5;
				r->pos += 5 + (size_t)*len;
				return true;
			}
		}
		if (r->pos) { /* keep the partial frame at the front */
			memmove(r->buf, r->buf + r->pos, have);
			r->pos = 0;
			r->len = have;
		}
		if (!run_fill(r))
			return false;
	}
}

/* Wait for the child; how it ended, in words, into HOW. */
static int run_end(struct run *r, char *how, size_t size)
{
	int status = 0;
	close(r->fd);
	free(r->buf);
	while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r->hung)
		snprintf(how, size, "the walk made no progress for %d s", NO_PROGRESS_MS / 1000);
	else if (WIFSIGNALED(status))
		snprintf(how, size, "reading it kills the reader (%s)",
			 strsignal(WTERMSIG(status)));
	else
		snprintf(how, size, "the walk stopped (exit %d)", WEXITSTATUS(status));
	if (r->hung || WIFSIGNALED(status))
		return CHILD_STUCK;
	return WIFEXITED(status) ? WEXITSTATUS(status) : CHILD_STUCK;
}

/* ---- check ---------------------------------------------------------------- */

int meta_check(const char *meta, struct nadb_damage *d)
{
	char path[4096];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/data.mdb", meta);
	if (stat(path, &sb) && errno == ENOENT)
		return 0; /* a new store */
	struct run r;
	int rc = run_start(&r, meta, NULL);
	if (rc) {
		nadb_log("%s: cannot check: %s", path, strerror(-rc));
		return rc;
	}
	uint8_t type;
	const uint8_t *body;
	uint32_t len;
	int table = -1;
	uint64_t walked = 0;
	char error[256] = "", how[128];
	bool done = false;
	while (run_frame(&r, &type, &body, &len)) {
		if (type == F_TABLE && len >= 1)
			table = body[0];
		else if (type == F_PROGRESS && len == 8)
			memcpy(&walked, body, 8);
		else if (type == F_ERROR)
			snprintf(error, sizeof(error), "%.*s", (int)len, (const char *)body);
		else if (type == F_DONE)
			done = true;
	}
	int status = run_end(&r, how, sizeof(how));
	if (status == CHILD_DONE && done)
		return 0;
	if (status == CHILD_CANNOT) {
		nadb_log("%s: cannot check: the walk ran out of memory", path);
		return -ENOMEM;
	}
	d->damaged = true;
	if (error[0])
		snprintf(d->why, sizeof(d->why), "%s", error);
	else
		snprintf(d->why, sizeof(d->why), "%s in table '%s', after %llu records", how,
			 table < 0 ? "(the table of tables)" : kv_table_name(table),
			 (unsigned long long)walked);
	return -EUCLEAN;
}

/* ---- salvage -------------------------------------------------------------- */

struct key {
	uint8_t b[KEY_MAX];
	size_t len;
	bool set;
};

struct salvage {
	const char *meta;
	struct kv *kv;          /* the new file */
	struct nadb_damage *d;
	uint64_t unsynced;
	uint64_t table_saved, table_entries;
	uint64_t max_ino;       /* for next_ino, should its record be lost */
	uint32_t max_raw;       /* the largest chunk: the chunk size, likewise */
	bool have_format, have_next_ino;
	uint64_t next_ino;      /* from the meta table (salvaged first); 0: unknown */
	bool have_root;
};


/* A key naming an inode never handed out is a damaged key.  Keeping it
 * would also move the salvage's "read up to here" mark past every real
 * key after it. */
static bool implausible(const struct salvage *s, int t, const uint8_t *k, size_t klen)
{
	if (!s->next_ino || !kv_table_keyed_by_ino((enum kv_table)t) || klen < 8)
		return false;
	return kv_key_ino(k) >= s->next_ino;
}

__attribute__((format(printf, 2, 3))) static int note(struct salvage *s, const char *fmt, ...)
{
	char *line;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	char **v = realloc(s->d->notes, (s->d->nnotes + 1) * sizeof(*v));
	if (!v) {
		free(line);
		return -ENOMEM;
	}
	s->d->notes = v;
	v[s->d->nnotes++] = line;
	return 0;
}

/* A key for people: ino numbers and names where the table's encoding
 * has them, hex otherwise. */
static void key_text(int t, const uint8_t *k, size_t len, char *out, size_t size)
{
	uint64_t a = 0, b = 0;
	if (len >= 8)
		a = kv_key_ino(k);
	if (len >= 16)
		b = kv_key_ino(k + 8);
	if (t == KV_INODES && len == 8)
		snprintf(out, size, "inode %llu", (unsigned long long)a);
	else if (t == KV_DIRENTS && len > 8)
		snprintf(out, size, "entry '%.*s' in directory %llu", (int)(len - 8),
			 (const char *)k + 8, (unsigned long long)a);
	else if (t == KV_LINKS && len > 16)
		snprintf(out, size, "name '%.*s' in directory %llu of inode %llu",
			 (int)(len - 16), (const char *)k + 16, (unsigned long long)b,
			 (unsigned long long)a);
	else {
		size_t o = 0;
		for (size_t i = 0; i < len && o + 3 < size && i < 24; i++)
			o += (size_t)snprintf(out + o, size - o, "%02x", k[i]);
		if (!len)
			snprintf(out, size, "the start");
	}
}

static int keep_record(struct salvage *s, int t, const uint8_t *k, size_t klen,
		       const uint8_t *v, size_t vlen)
{
	int rc = s->kv->ops->put(s->kv, (enum kv_table)t, k, klen, v, vlen);
	if (rc)
		return rc;
	s->d->saved++;
	s->table_saved++;
	if (t == KV_INODES && klen == 8) {
		uint64_t ino = kv_key_ino(k);
		if (ino > s->max_ino)
			s->max_ino = ino;
		s->have_root |= ino == NADB_ROOT_INO;
	} else if (t == KV_CHUNKS) {
		uint32_t raw = 0;
		if (!chunk_row_raw_len(v, vlen, &raw) && raw > s->max_raw)
			s->max_raw = raw;
	} else if (t == KV_META) {
		s->have_format |= klen == 6 && !memcmp(k, "format", 6);
		if (klen == 8 && !memcmp(k, "next_ino", 8) && vlen == 8) {
			s->have_next_ino = true;
			memcpy(&s->next_ino, v, 8);
		}
	}
	if (++s->unsynced >= SYNC_EVERY) {
		s->unsynced = 0;
		return s->kv->ops->sync(s->kv);
	}
	return 0;
}

static void key_set(struct key *k, const uint8_t *b, size_t len)
{
	assert(len <= KEY_MAX);
	memcpy(k->b, b, len);
	k->len = len;
	k->set = true;
}

/* memcmp order, a prefix first: LMDB's order for our tables' keys. */
static int key_cmp(const uint8_t *b, size_t len, const struct key *k)
{
	int c = memcmp(b, k->b, len < k->len ? len : k->len);
	return c ? c : len < k->len ? -1 : len > k->len;
}

/* Run one salvage child.  Forward records move LAST on; LOWEST gets the
 * smallest key received.  Returns the child's exit code (CHILD_*) or a
 * negative errno; *GOT counts the records received. */
static int salvage_run(struct salvage *s, const struct walk_req *req, struct key *last,
		       struct key *lowest, uint64_t *got)
{
	struct run r;
	int rc = run_start(&r, s->meta, req);
	if (rc)
		return rc;
	uint8_t type;
	const uint8_t *body;
	uint32_t len;
	bool done = false;
	*got = 0;
	while (!rc && run_frame(&r, &type, &body, &len)) {
		uint16_t kl = 0;
		if ((type == F_RECORD || type == F_BAD) && len >= 3) {
			memcpy(&kl, body + 1, 2);
			if (kl > KEY_MAX || 3u + kl > len)
				continue;
		}
		if (type == F_TABLE && len == 9 && !s->table_entries)
			memcpy(&s->table_entries, body + 1, 8);
		else if (type == F_DONE)
			done = true;
		else if (type == F_RECORD || type == F_BAD) {
			char kt[160];
			key_text(body[0], body + 3, kl, kt, sizeof(kt));
			if (type == F_RECORD && implausible(s, body[0], body + 3, kl)) {
				rc = note(s, "table '%s': %s names an inode never made; dropped",
					  kv_table_name(body[0]), kt);
				continue;
			}
			rc = type == F_RECORD
			     ? keep_record(s, body[0], body + 3, kl, body + 3 + kl, len - 3 - kl)
			     : note(s, "table '%s': %s is malformed (%.*s); dropped",
				    kv_table_name(body[0]), kt, (int)(len - 3 - kl),
				    (const char *)body + 3 + kl);
			if (type == F_BAD)
				continue; /* its key may be as damaged as its value */
			(*got)++;
			if (!req->back)
				key_set(last, body + 3, kl);
			if (!lowest->set || key_cmp(body + 3, kl, lowest) < 0)
				key_set(lowest, body + 3, kl);
		}
	}
	char how[128];
	int status = run_end(&r, how, sizeof(how));
	if (rc)
		return rc;
	if (status == CHILD_CANNOT)
		return -ENOMEM;
	return status == CHILD_DONE && done ? CHILD_DONE : CHILD_STUCK;
}

/* The next probe above BASE: BASE (padded to 8 bytes, the ino part of
 * most keys) plus one at byte POS, cut after POS.  Coarser each time
 * POS moves left; false when no key is left above. */
static bool next_probe(const struct key *base, int *pos, struct key *probe)
{
	size_t len = base->len < 8 ? 8 : base->len;
	while (*pos >= 0) {
		int p = (*pos)--;
		if ((size_t)p >= len)
			continue;
		memset(probe->b, 0, len);
		memcpy(probe->b, base->b, base->len);
		int i = p;
		while (i >= 0 && probe->b[i] == 0xff)
			probe->b[i--] = 0;
		if (i < 0)
			return false;
		probe->b[i]++;
		probe->len = (size_t)p + 1;
		probe->set = true;
		return true;
	}
	return false;
}

/* Say which stretch of table T was skipped: after FROM, before LOW (the
 * lowest key read past the damage; unset: to the end). */
static int note_skipped(struct salvage *s, int t, const struct key *from,
			const struct key *low)
{
	char a[160], b[160];
	key_text(t, from->b, from->set ? from->len : 0, a, sizeof(a));
	if (low->set)
		key_text(t, low->b, low->len, b, sizeof(b));
	return note(s, "table '%s': unreadable records after %s%s%s were skipped",
		    kv_table_name(t), from->set ? a : "the start",
		    low->set ? ", before " : " (to the end)", low->set ? b : "");
}

/* Every readable record of table T. */
static int salvage_table(struct salvage *s, int t)
{
	struct key last = {0}, low = {0}, probe;
	uint64_t got;
	s->table_saved = s->table_entries = 0;
	struct walk_req req = {.table = t};
	int rc = salvage_run(s, &req, &last, &low, &got);
	struct key from = {0}; /* the greatest key read going forward: only grows */
	unsigned runs = 1;
	while (rc == CHILD_STUCK) {
		if (last.set && (!from.set || key_cmp(last.b, last.len, &from) > 0))
			from = last;
		/* Past the damage: the first probe above FROM that reads on
		 * beyond it (a damaged key out of order may move LAST back;
		 * FROM does not, so this ends). */
		int pos = KEY_MAX;
		bool found = false;
		low.set = false;
		while (!found && runs < MAX_RUNS && next_probe(&from, &pos, &probe)) {
			req = (struct walk_req){.table = t, .start = probe.b, .slen = probe.len};
			rc = salvage_run(s, &req, &last, &low, &got);
			runs++;
			if (rc < 0)
				return rc;
			found = rc == CHILD_DONE ||
				(got && last.set && key_cmp(last.b, last.len, &from) > 0);
		}
		/* Back from the probe (or from the end when none read) over
		 * what the probe jumped. */
		req = (struct walk_req){.table = t, .back = true, .start = found ? probe.b : NULL,
					.slen = found ? probe.len : 0,
					.floor = from.set ? from.b : NULL, .flen = from.len};
		struct key unused = {0};
		int brc = salvage_run(s, &req, &unused, &low, &got);
		if (brc < 0)
			return brc;
		brc = note_skipped(s, t, &from, &low);
		if (brc)
			return brc;
		if (!found)
			break;
	}
	if (rc < 0)
		return rc;
	if (s->table_entries > s->table_saved)
		s->d->lost += s->table_entries - s->table_saved;
	return 0;
}

/* Settings the store cannot open without, if their records were lost:
 * the chunk size is the largest chunk's, rounded up to a power of two. */
static int restore_settings(struct salvage *s)
{
	int rc = 0;
	if (!s->have_format) {
		uint32_t cs = 4096;
		while (cs < s->max_raw && cs < (16u << 20))
			cs *= 2;
		if (!s->max_raw)
			cs = 128 * 1024;
		uint32_t f[2] = {STORE_FORMAT_VERSION, cs};
		rc = s->kv->ops->put(s->kv, KV_META, "format", 6, f, sizeof(f));
		if (!rc)
			rc = note(s, "the store's format record was lost; rebuilt with chunk size %u",
				  cs);
	}
	if (!rc && !s->have_root) {
		int64_t now = (int64_t)time(NULL) * 1000000000;
		struct inode_rec root = {
			.mode = S_IFDIR | 0755, .uid = getuid(), .gid = getgid(), .nlink = 2,
			.parent = NADB_ROOT_INO, .atime = now, .mtime = now, .ctime = now,
			.btime = now, .level = NADB_LEVEL_ROOT,
		};
		uint8_t key[INO_KEY_LEN], rec[INODE_REC_MAX];
		uint64_t be = htobe64(NADB_ROOT_INO);
		memcpy(key, &be, sizeof(key));
		rc = s->kv->ops->put(s->kv, KV_INODES, key, sizeof(key), rec,
				     inode_encode(&root, rec));
		if (!rc)
			rc = note(s, "the root directory's record was lost; made anew");
	}
	if (!rc && !s->have_next_ino) {
		uint64_t next = s->max_ino + 1;
		rc = s->kv->ops->put(s->kv, KV_META, "next_ino", 8, &next, sizeof(next));
		if (!rc)
			rc = note(s, "the next inode number was lost; rebuilt as %llu",
				  (unsigned long long)next);
	}
	return rc;
}

/* Put NEW/data.mdb in the place of META/data.mdb, keeping the latter. */
static int swap_files(struct salvage *s, const char *fresh)
{
	char from[4352], to[4352];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	char stamp[32];
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(from, sizeof(from), "%s/data.mdb", s->meta);
	snprintf(s->d->kept, sizeof(s->d->kept), "%s/data.mdb.damaged-%s", s->meta, stamp);
	if (rename(from, s->d->kept)) {
		int e = errno;
		nadb_log("%s: cannot move aside: %s", from, strerror(e));
		return -e;
	}
	snprintf(to, sizeof(to), "%s/data.mdb", fresh);
	if (rename(to, from)) {
		int e = errno;
		nadb_log("%s: cannot move into place: %s", to, strerror(e));
		return -e;
	}
	snprintf(to, sizeof(to), "%s/lock.mdb", fresh);
	unlink(to);
	rmdir(fresh);
	int dfd = open(s->meta, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

int meta_salvage(const char *meta, struct nadb_damage *d)
{
	char fresh[4096], path[4352];
	snprintf(fresh, sizeof(fresh), "%s.salvage", meta);
	snprintf(path, sizeof(path), "%s/data.mdb", fresh);
	unlink(path); /* left by a salvage that was interrupted */
	struct salvage s = {.meta = meta, .d = d};
	int rc = kv_lmdb_open(fresh, &s.kv);
	for (int t = 0; !rc && t < KV_NTABLES; t++)
		rc = salvage_table(&s, t);
	/* Nothing readable: a new empty file would only hide the old one. */
	if (!rc && !d->saved) {
		nadb_log("%s/data.mdb: no record can be read; left as it is", meta);
		rc = -EUCLEAN;
	}
	if (!rc)
		rc = restore_settings(&s);
	if (!rc)
		rc = s.kv->ops->sync(s.kv);
	if (s.kv)
		s.kv->ops->close(s.kv);
	if (!rc)
		rc = swap_files(&s, fresh);
	if (rc) { /* leave no half-made file behind */
		unlink(path);
		rmdir(fresh);
	}
	if (rc && rc != -EUCLEAN)
		nadb_log("%s/data.mdb: salvage failed: %s", meta, strerror(-rc));
	if (rc)
		return rc;
	d->salvaged = true;
	return 0;
}

void nadb_damage_free(struct nadb_damage *d)
{
	for (size_t i = 0; i < d->nnotes; i++)
		free(d->notes[i]);
	free(d->notes);
	d->notes = NULL;
	d->nnotes = 0;
}
