/* backend.c -- what every backend of backend.h shares: the tables' names
 * (LMDB's databases and Redis's key names are called after them, so they
 * are one fact, kept here). */
#include "backend.h"

#include <assert.h>

static const char *const table_names[KV_NTABLES] = {
	[KV_META] = "meta",         [KV_INODES] = "inodes",
	[KV_DIRENTS] = "dirents",   [KV_XATTRS] = "xattrs",
	[KV_CHUNKS] = "chunks",     [KV_PENDING] = "pending",
	[KV_ORPHANS] = "orphans",   [KV_SEGMENTS] = "segments",
	[KV_LINKS] = "links",       [KV_EXPIRY] = "expiry",
	[KV_TAGS_OF] = "tags_of",   [KV_TAG_KEYS] = "tag_keys",
	[KV_TAG_TREE] = "tag_tree", [KV_COUNTERS] = "counters",
};

const char *kv_table_name(enum kv_table t)
{
	assert(t >= 0 && t < KV_NTABLES);
	return table_names[t];
}

bool kv_table_keyed_by_ino(enum kv_table t)
{
	assert(t >= 0 && t < KV_NTABLES);
	return t == KV_INODES || t == KV_DIRENTS || t == KV_XATTRS || t == KV_PENDING ||
	       t == KV_ORPHANS || t == KV_LINKS || t == KV_TAGS_OF || t == KV_COUNTERS;
}
