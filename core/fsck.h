/* fsck.h -- check a store's invariants: every reference resolves, every
 * refcount is right, no chunk is orphaned, every chunk matches its hash. */
#ifndef NADB_FSCK_H
#define NADB_FSCK_H

#include "store.h"

struct nadb_fsck_result {
	uint64_t inodes, dirents, chunks, chunk_bytes;
	uint64_t problems; /* found */
	uint64_t repaired; /* of those, fixed (with repair) */
};

/* Called once per problem, with a one-line description. */
typedef void (*nadb_fsck_report_fn)(void *ctx, const char *line);

/* Check ST (opened by this process).  With REPAIR, fix what can be fixed
 * safely: refcounts, orphan chunks, link counts, directory entries and
 * links rows from each other, chunk records from the packs' frame
 * headers, sizes from chunk lists, nameless keys into /lost+found.
 * Returns 0 or a negative errno when the check itself could not run. */
int nadb_fsck(struct nadb_store *st, bool repair, nadb_fsck_report_fn report,
	      void *ctx, struct nadb_fsck_result *res);

#endif
