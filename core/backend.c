/* backend.c -- what every backend of backend.h shares: the tables' names
 * (LMDB's databases and Redis's key names are called after them, so they
 * are one fact, kept here). */
#include "backend.h"
#include "varint.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const table_names[KV_NTABLES] = {
	[KV_META] = "meta",         [KV_INODES] = "inodes",
	[KV_DIRENTS] = "dirents",   [KV_XATTRS] = "xattrs",
	[KV_CHUNKS] = "chunks",     [KV_PENDING] = "pending",
	[KV_ORPHANS] = "orphans",   [KV_SEGMENTS] = "segments",
	[KV_LINKS] = "links",       [KV_EXPIRY] = "expiry",
	[KV_TAGS_OF] = "tags_of",   [KV_OLD_TAG_KEYS] = "tag_keys",
	[KV_OLD_TAG_TREE] = "tag_tree", [KV_COUNTERS] = "counters",
	[KV_TAG_IDS] = "tag_ids",   [KV_TAG_COUNTS] = "tag_counts",
	[KV_TAG_EDGES] = "tag_edges", [KV_CHUNK_DROPS] = "chunk_drops",
};

const char *kv_table_name(enum kv_table t)
{
	assert(t >= 0 && t < KV_NTABLES);
	return table_names[t];
}

bool kv_table_counted(enum kv_table t)
{
	return t == KV_CHUNKS;
}

unsigned kv_table_since(enum kv_table t)
{
	assert(t >= 0 && t < KV_NTABLES);
	if (t == KV_CHUNK_DROPS)
		return 5;
	return t == KV_TAG_IDS || t == KV_TAG_COUNTS || t == KV_TAG_EDGES ? 4 : 1;
}

struct prefix_scan {
	const void *prefix;
	size_t plen;
	kv_scan_fn fn;
	void *ctx;
};

static int within_prefix(void *ctx, const void *key, size_t klen, const void *val,
			 size_t vlen)
{
	const struct prefix_scan *p = ctx;
	if (klen < p->plen || memcmp(key, p->prefix, p->plen))
		return 1;
	return p->fn(p->ctx, key, klen, val, vlen);
}

int kv_scan_prefix_by_scan(struct kv *kv, enum kv_table t, const void *prefix, size_t plen,
			   kv_scan_fn fn, void *ctx)
{
	struct prefix_scan p = {prefix, plen, fn, ctx};
	return kv->ops->scan(kv, t, prefix, plen, within_prefix, &p);
}

bool kv_table_keyed_by_ino(enum kv_table t)
{
	assert(t >= 0 && t < KV_NTABLES);
	return t == KV_INODES || t == KV_DIRENTS || t == KV_XATTRS || t == KV_PENDING ||
	       t == KV_ORPHANS || t == KV_LINKS || t == KV_TAGS_OF || t == KV_COUNTERS ||
	       t == KV_TAG_COUNTS || t == KV_TAG_EDGES || t == KV_CHUNK_DROPS;
}

int kv_table_ino_at(enum kv_table t)
{
	return kv_table_keyed_by_ino(t) ? 0 : t == KV_EXPIRY ? 8 : -1;
}

int kv_count_added(const void *val, size_t vlen, int64_t delta, uint8_t *out, size_t *olen)
{
	const uint8_t *p = val, *end = p + vlen;
	uint64_t c;
	if (!varint_get(&p, end, &c) || c > KV_COUNT_MAX)
		return -EIO;
	if (c != KV_COUNT_MAX) {
		if (delta < 0 && c < (uint64_t)-delta)
			return -ERANGE;
		c = delta > 0 && KV_COUNT_MAX - c < (uint64_t)delta ? KV_COUNT_MAX
								    : (uint64_t)((int64_t)c + delta);
	}
	size_t n = varint_put(out, c);
	memmove(out + n, p, (size_t)(end - p));
	*olen = n + (size_t)(end - p);
	return 0;
}

bool kv_count_is(const void *val, size_t vlen, int64_t count)
{
	const uint8_t *p = val;
	uint64_t c;
	return varint_get(&p, p + vlen, &c) && count >= 0 && c == (uint64_t)count;
}

int kv_weight_of(const void *val, size_t vlen, struct kv_weight *w)
{
	const uint8_t *p = val, *end = p + vlen;
	uint64_t count, group, skip, raw, diff;
	if (!varint_get(&p, end, &count) || count > KV_COUNT_MAX || !varint_get(&p, end, &group) ||
	    group > UINT32_MAX || !varint_get(&p, end, &skip) || !varint_get(&p, end, &raw) ||
	    !varint_get(&p, end, &diff) || raw > UINT32_MAX || diff >> 34)
		return -EIO;
	int64_t size = (int64_t)raw + unzigzag(diff);
	if (size < 0)
		return -EIO;
	*w = (struct kv_weight){.group = (uint32_t)group, .size = (uint64_t)size, .raw = raw};
	return count > 0;
}

int kv_compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

bool kv_session_listed(const uint32_t *live, size_t n, uint32_t id)
{
	return n && bsearch(&id, live, n, sizeof(*live), kv_compare_u32);
}
