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
	uint64_t stored_bytes;    /* their bytes on disk (frames): payload + headers */
	uint64_t payload_bytes;   /* of those, the chunks' bytes (compressed or not) */
	uint64_t frame_bytes;     /* of those, frame headers (CHUNK_FRAME_HEAD each) */
	uint64_t pack_bytes;      /* size of all pack segments */
	uint64_t garbage_bytes;   /* pack bytes no chunk uses (compaction) */
	uint64_t tags;            /* tags in use */
	uint64_t expiring;        /* keys with an expiry time, not yet reaped */
	uint64_t reaped;          /* keys the reaper deleted, ever */
	uint64_t buffered_bytes;  /* write buffers now */
	uint64_t buffer_limit;    /* buffer_mb */
};

/* One figure of the whole store's statistics.  The table of them
 * (nadb_stats_figures) is the one definition of what /.stats, `nadb
 * stats --json` and /.metrics report: name, meaning and value. */
struct nadb_figure {
	const char *name;   /* in the JSON documents */
	const char *metric; /* in /.metrics after "nadb_" (a counter: its family,
			       the sample adds "_total"); NULL: JSON only */
	bool counter;       /* only goes up (else a gauge) */
	bool ratio;         /* x holds it; else n */
	const char *help;   /* one line: what it is */
	uint64_t n;
	double x;
};

#define NADB_FIGURES 21

/* The figures of S (the whole store's), in document order. */
void nadb_stats_figures(const struct nadb_stats *s, struct nadb_figure out[NADB_FIGURES]);

/* Counters of SCOPE: NADB_ROOT_INO (whole store), a database or a
 * namespace directory; -EINVAL for any other inode. */
int nadb_stats(struct nadb_store *st, uint64_t scope, struct nadb_stats *out);

#endif
