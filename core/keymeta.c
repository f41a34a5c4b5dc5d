/* keymeta.c -- per-key metadata as read-only xattrs: user.nadb.hash,
 * .size, .stored, .chunks, .created, .updated and .accessed.
 *
 * They are computed, not kept: the hash is XXH3-128 over the value's chunk
 * names and size (a Merkle root, so equal values in stores of the same
 * chunk size have equal hashes, at the cost of one index read per chunk
 * rather than a read of every byte).
 *
 * They are listed (but for accessed, see keymeta_list), so getfattr -d
 * shows them and tar --xattrs, rsync -aX and cp -a carry them to a copy,
 * which must not fail on them.  So:
 * - created, updated and accessed can be set: they are the key's times,
 *   and a copy keeps them;
 * - hash, size and chunks can be "set" to what they already are, and
 *   stored to at most the value's unshared size (a copy in another store
 *   shares differently): nothing changes;
 * - before the key's first write or while it is open for writing -- a
 *   copy restoring it: tar sets attributes before it writes the data -- a
 *   well-formed value is accepted and ignored: the store computes the real
 *   value from the data that arrives;
 * - removing one succeeds and changes nothing (rsync -X removes from its
 *   copy what the source lacks; a computed attribute has nothing stored);
 * - anything else gets EPERM.
 */
#include "log.h"
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

static const char *const names[] = {
	"user.nadb.hash", "user.nadb.size", "user.nadb.stored", "user.nadb.chunks",
	"user.nadb.created", "user.nadb.updated", "user.nadb.accessed",
};
enum { M_HASH, M_SIZE, M_STORED, M_CHUNKS, M_CREATED, M_UPDATED, M_ACCESSED, M_COUNT };

static int which(const char *name)
{
	for (int i = 0; i < M_COUNT; i++)
		if (!strcmp(name, names[i]))
			return i;
	return -1;
}

bool keymeta_is_name(const char *name)
{
	return !strncmp(name, "user.nadb.", 10);
}

/* Bytes on disk of LIST, a shared chunk counted by share (SHARED) or in
 * full. */
static uint64_t bytes_of(struct nadb_store *st, const uint8_t *list, size_t n,
			 bool shared)
{
	uint64_t stored = 0;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *h = list + i * CHUNK_HASH_LEN;
		struct chunk_loc loc;
		uint32_t refs;
		if (chunk_is_hole(h) || chunk_refs(&st->chunks, h, &refs) ||
		    chunk_locate(&st->chunks, h, &loc) || refs == 0)
			continue;
		stored += shared ? loc.blob.len / refs : loc.blob.len;
	}
	return stored;
}

uint64_t keymeta_stored(struct nadb_store *st, const uint8_t *list, size_t n)
{
	return bytes_of(st, list, n, true);
}

int keymeta_hash(uint64_t size, const uint8_t *list, size_t n, char out[NADB_HASH_TEXT])
{
	XXH3_state_t *s = XXH3_createState();
	if (!s)
		return -ENOMEM;
	XXH3_128bits_reset(s);
	XXH3_128bits_update(s, &size, sizeof(size));
	XXH3_128bits_update(s, list, n * CHUNK_HASH_LEN);
	XXH128_hash_t h = XXH3_128bits_digest(s);
	XXH3_freeState(s);
	snprintf(out, NADB_HASH_TEXT, "%016llx%016llx", (unsigned long long)h.high64,
		 (unsigned long long)h.low64);
	return 0;
}

static void format_time(char *out, size_t size, int64_t ns)
{
	snprintf(out, size, "%lld.%09lld", (long long)(ns / 1000000000),
		 (long long)(ns % 1000000000));
}

/* The text of attribute M for inode IN. */
static int render(struct nadb_store *st, const struct inode *in, int m, char *out,
		  size_t size)
{
	size_t n = in->payload_len / CHUNK_HASH_LEN;
	switch (m) {
	case M_HASH:
		if (size < NADB_HASH_TEXT)
			return -ERANGE;
		return keymeta_hash(in->r.size, in->payload, n, out);
	case M_SIZE:
		snprintf(out, size, "%llu", (unsigned long long)in->r.size);
		return 0;
	case M_STORED:
		snprintf(out, size, "%llu",
			 (unsigned long long)keymeta_stored(st, in->payload, n));
		return 0;
	case M_CHUNKS: {
		size_t chunks = 0;
		for (size_t i = 0; i < n; i++)
			chunks += !chunk_is_hole(in->payload + i * CHUNK_HASH_LEN);
		snprintf(out, size, "%zu", chunks);
		return 0;
	}
	case M_CREATED:
		format_time(out, size, in->r.btime);
		return 0;
	case M_UPDATED:
		format_time(out, size, in->r.mtime);
		return 0;
	default:
		format_time(out, size, in->r.atime);
		return 0;
	}
}

static int load_key(struct nadb_store *st, uint64_t ino, struct inode *in)
{
	int rc = inode_get(st, ino, in);
	if (!rc && !S_ISREG(in->r.mode)) {
		inode_release(in);
		rc = -ENODATA;
	}
	return rc;
}

ssize_t keymeta_get(struct nadb_store *st, uint64_t ino, const char *name, char *buf,
		    size_t size)
{
	int m = which(name);
	if (m < 0)
		return -ENODATA;
	struct inode in;
	int rc = load_key(st, ino, &in);
	if (rc)
		return rc;
	char text[64];
	rc = render(st, &in, m, text, sizeof(text));
	inode_release(&in);
	if (rc)
		return rc;
	size_t len = strlen(text);
	if (size && len > size)
		return -ERANGE;
	if (size)
		memcpy(buf, text, len);
	return (ssize_t)len;
}

/* The names, NUL-separated, for a key (none for a directory). */
ssize_t keymeta_list(struct nadb_store *st, uint64_t ino, char *buf, size_t size)
{
	struct inode in;
	int rc = load_key(st, ino, &in);
	if (rc)
		return rc == -ENODATA ? 0 : rc;
	inode_release(&in);
	size_t used = 0;
	/* accessed moves with every read (a copy's own read of the source
	 * too): listed, every rsync -X would send it again.  It is st_atime,
	 * which copies keep anyway, and can be read and set by name. */
	for (int i = 0; i < M_ACCESSED; i++) {
		size_t n = strlen(names[i]) + 1;
		if (size && used + n > size)
			return -ERANGE;
		if (size)
			memcpy(buf + used, names[i], n);
		used += n;
	}
	return (ssize_t)used;
}

/* A decimal count, digits only (no sign, no space), into *N: -EINVAL
 * otherwise or past UINT64_MAX. */
static int parse_count(const char *v, size_t size, uint64_t *n)
{
	uint64_t x = 0;
	if (size == 0)
		return -EINVAL;
	for (size_t i = 0; i < size; i++) {
		unsigned d = (unsigned)(v[i] - '0');
		if (d > 9 || x > (UINT64_MAX - d) / 10)
			return -EINVAL;
		x = x * 10 + d;
	}
	*n = x;
	return 0;
}

/* "S" or "S.NNNNNNNNN" (digits only) as ns; -EINVAL otherwise, or past
 * what int64 nanoseconds hold (2262). */
static int parse_time(const char *v, size_t size, int64_t *ns)
{
	size_t whole = 0;
	while (whole < size && v[whole] != '.')
		whole++;
	uint64_t s, frac = 0;
	if (parse_count(v, whole, &s) || s > (uint64_t)INT64_MAX / 1000000000 - 1)
		return -EINVAL;
	if (whole < size) {
		size_t k = size - whole - 1;
		if (k == 0 || k > 9 || parse_count(v + whole + 1, k, &frac))
			return -EINVAL;
		for (; k < 9; k++)
			frac *= 10;
	}
	*ns = (int64_t)s * 1000000000 + (int64_t)frac;
	return 0;
}

/* Is VALUE well formed for attribute M: 32 hex digits for the hash, a
 * decimal count for the others? */
static bool well_formed(int m, const char *value, size_t size)
{
	if (m == M_HASH) {
		for (size_t i = 0; i < size; i++)
			if (!strchr("0123456789abcdef", value[i]) || !value[i])
				return false;
		return size == 32;
	}
	uint64_t v;
	return !parse_count(value, size, &v);
}

/* Does VALUE describe the key's data as it is (what a copy read back)? */
static bool describes(struct nadb_store *st, const struct inode *in, int m,
		      const char *value, size_t size)
{
	if (m == M_STORED) {
		/* stored depends on what else each store shares: any copy
		 * reports at most the value's unshared size. */
		uint64_t v;
		uint64_t unshared = bytes_of(st, in->payload,
					     in->payload_len / CHUNK_HASH_LEN, false);
		return !parse_count(value, size, &v) && v <= unshared;
	}
	char now[64];
	return !render(st, in, m, now, sizeof(now)) && strlen(now) == size &&
	       !memcmp(now, value, size);
}

static int refuse(const char *name, const char *why)
{
	nadb_log("%s is read-only: %s", name, why);
	return -EPERM;
}

int keymeta_set(struct nadb_store *st, uint64_t ino, const char *name,
		const char *value, size_t size, const struct nadb_caller *who)
{
	int m = which(name);
	struct inode in;
	int rc = m < 0 ? -EPERM : load_key(st, ino, &in);
	if (rc == -EPERM || rc == -ENODATA)
		return refuse(name, m < 0 ? "no such nadb attribute" : "only keys have it");
	if (rc)
		return rc;
	if (m >= M_CREATED) { /* the key's times: a copy keeps them */
		int64_t ns;
		/* as utimensat(2) with times given: the owner's, or root's */
		if (who && who->uid != 0 && who->uid != in.r.uid) {
			nadb_log("%s: only the key's owner (uid %u) may set its times, not uid %u",
				 name, in.r.uid, who->uid);
			rc = -EPERM;
		} else if ((rc = parse_time(value, size, &ns))) {
			nadb_log("%s: not a time (seconds[.nanoseconds], digits only, before "
				 "2262)", name);
		}
		if (!rc) {
			int64_t *field = m == M_CREATED ? &in.r.btime
					 : m == M_UPDATED ? &in.r.mtime : &in.r.atime;
			*field = ns;
			in.r.ctime = now_ns();
			rc = inode_put(st, ino, &in.r, in.payload, in.payload_len);
		}
	} else if (!describes(st, &in, m, value, size)) {
		/* A copy may set attributes before it writes the data (tar
		 * makes the file, sets them, then opens it): before the first
		 * write, or while the key is open for writing, a well-formed
		 * value is accepted, and the store computes the real one from
		 * the data that arrives. */
		bool unwritten = in.r.size == 0 && in.r.mtime == in.r.btime;
		if (!(unwritten || file_is_being_written(st, ino)) ||
		    !well_formed(m, value, size))
			rc = refuse(name, "the store computes it from the value");
	}
	inode_release(&in);
	return rc;
}

int keymeta_remove(struct nadb_store *st, uint64_t ino, const char *name)
{
	/* rsync -X removes from its copy what the source lacks: a computed
	 * attribute has nothing stored to remove, so the removal succeeds and
	 * the attribute stays. */
	if (which(name) < 0)
		return refuse(name, "no such nadb attribute");
	struct inode in;
	int rc = load_key(st, ino, &in);
	if (!rc)
		inode_release(&in);
	return rc == -ENODATA ? -ENODATA : rc;
}
