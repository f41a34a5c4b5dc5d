/* stats.h -- what a store holds, read in O(1) from counters the engine
 * keeps in step with every change (and so right after a crash too). */
#ifndef NADB_STATS_H
#define NADB_STATS_H

#include "store.h"

struct nadb_stats {
	/* For the whole store, a database or a namespace: */
	uint64_t keys;       /* names of values (a hard link counts twice) */
	uint64_t bytes;      /* logical bytes of those values */
	uint64_t databases;  /* whole store only */
	uint64_t namespaces; /* whole store and databases */
	uint64_t dirs;       /* directories below namespaces */
	/* Whole store only: */
	uint64_t chunks;          /* distinct chunks stored */
	uint64_t chunk_raw_bytes; /* their bytes before compression */
	uint64_t stored_bytes;    /* their bytes on disk (frames) */
	uint64_t pack_bytes;      /* size of all pack segments */
	uint64_t garbage_bytes;   /* pack bytes no chunk uses (compaction) */
	uint64_t tags;            /* tags in use */
	uint64_t expiring;        /* keys with an expiry time, not yet reaped */
	uint64_t reaped;          /* keys the reaper deleted, ever */
	uint64_t buffered_bytes;  /* write buffers now */
	uint64_t buffer_limit;    /* buffer_mb */
};

/* Counters of SCOPE: NADB_ROOT_INO (whole store), a database or a
 * namespace directory; -EINVAL for any other inode. */
int nadb_stats(struct nadb_store *st, uint64_t scope, struct nadb_stats *out);

#endif
