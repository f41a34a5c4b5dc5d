/* index.c -- telling every index about a change to the tree (index.h).
 *
 * The store lists its indexes in st->indexes, in the order they hear
 * each event; a hook's error stops the others, and the step is undone.
 */
#include "index.h"
#include "store_int.h"

#include <assert.h>

/* Call HOOK of every index that has one, with ARGS, until one fails. */
#define EACH_INDEX(st, hook, ...)                                            \
	do {                                                                 \
		for (size_t i_ = 0; i_ < (st)->nindexes; i_++)                  \
			if ((st)->indexes[i_]->hook) {                          \
				int rc_ = (st)->indexes[i_]->hook(__VA_ARGS__);  \
				if (rc_)                                        \
					return rc_;                             \
			}                                                       \
		return 0;                                                    \
	} while (0)

int index_link_changed(struct nadb_store *st, uint64_t ino, uint32_t mode,
		       uint64_t parent, const char *name, int delta)
{
	assert(delta == 1 || delta == -1);
	EACH_INDEX(st, link_changed, st, ino, mode, parent, name, delta);
}

int index_last_link_gone(struct nadb_store *st, uint64_t ino)
{
	EACH_INDEX(st, last_link_gone, st, ino);
}

int index_inode_deleting(struct nadb_store *st, uint64_t ino, const struct inode_rec *r)
{
	EACH_INDEX(st, inode_deleting, st, ino, r);
}

int index_size_changed(struct nadb_store *st, uint64_t ino, int64_t delta)
{
	EACH_INDEX(st, size_changed, st, ino, delta);
}

int index_expiring_changed(struct nadb_store *st, uint64_t ino, int delta)
{
	assert(delta == 1 || delta == -1);
	EACH_INDEX(st, expiring_changed, st, ino, delta);
}

int index_dir_leaving(struct nadb_store *st, uint64_t dir, uint64_t parent, const char *name,
		      struct index_move *m)
{
	*m = (struct index_move){{0}};
	assert(st->nindexes <= INDEX_MAX);
	EACH_INDEX(st, dir_leaving, st, dir, parent, name, &m->state[i_]);
}

int index_dir_arrived(struct nadb_store *st, uint64_t dir, uint8_t level,
		      uint64_t old_parent, uint64_t parent, const char *name,
		      struct index_move *m)
{
	EACH_INDEX(st, dir_arrived, st, dir, level, old_parent, parent, name, m->state[i_]);
}

void index_move_free(struct nadb_store *st, struct index_move *m)
{
	for (size_t i = 0; i < st->nindexes; i++)
		if (st->indexes[i]->free_state && m->state[i])
			st->indexes[i]->free_state(m->state[i]);
	*m = (struct index_move){{0}};
}
