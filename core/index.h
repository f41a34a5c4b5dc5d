/* index.h -- how the indexes hear about changes to the tree.
 *
 * The tree and the files (tree.c, file.c, inode.c) change names, values
 * and inodes; the indexes (tags, expiry, statistics) keep rows that must
 * follow.  Rather than the tree calling each index by name, each index
 * fills in one table of hooks and the store lists the tables: the tree
 * reports an event once (index_*), every index that cares hears it, and a
 * new index is one more table, not an edit of the tree.
 *
 * Every hook runs inside the step that makes the change, under meta_lock:
 * an error undoes the whole step.  A hook an index does not need is NULL.
 */
#ifndef NADB_INDEX_H
#define NADB_INDEX_H

#include <stdint.h>

struct nadb_store;
struct inode_rec;

struct index_hooks {
	const char *name;
	/* (PARENT, NAME) names INO, of MODE, from now on (DELTA +1) or no
	 * more (-1). */
	int (*link_changed)(struct nadb_store *st, uint64_t ino, uint32_t mode,
			    uint64_t parent, const char *name, int delta);
	/* INO's last name went (it may live on while open). */
	int (*last_link_gone)(struct nadb_store *st, uint64_t ino);
	/* INO, whose record is R, is about to be deleted for good. */
	int (*inode_deleting)(struct nadb_store *st, uint64_t ino,
			      const struct inode_rec *r);
	/* Directory DIR is about to leave (PARENT, NAME): keep in *STATE what
	 * must move with it (NULL: nothing); free_state frees it. */
	int (*dir_leaving)(struct nadb_store *st, uint64_t dir, uint64_t parent,
			   const char *name, void **state);
	/* Directory DIR, at LEVEL, came from OLD_PARENT to (PARENT, NAME). */
	int (*dir_arrived)(struct nadb_store *st, uint64_t dir, uint8_t level,
			   uint64_t old_parent, uint64_t parent, const char *name,
			   void *state);
	void (*free_state)(void *state);
	/* Key INO's value grew by DELTA bytes (shrank, if negative). */
	int (*size_changed)(struct nadb_store *st, uint64_t ino, int64_t delta);
	/* Key INO got an expiry time (DELTA +1) or lost it (-1). */
	int (*expiring_changed)(struct nadb_store *st, uint64_t ino, int delta);
};

/* Each index's table (tags.c, expiry.c, stats.c). */
extern const struct index_hooks tags_hooks, expiry_hooks, stats_hooks;

/* The events, told to every index in turn (index.c). */
int index_link_changed(struct nadb_store *st, uint64_t ino, uint32_t mode,
		       uint64_t parent, const char *name, int delta);
int index_last_link_gone(struct nadb_store *st, uint64_t ino);
int index_inode_deleting(struct nadb_store *st, uint64_t ino, const struct inode_rec *r);
int index_size_changed(struct nadb_store *st, uint64_t ino, int64_t delta);
int index_expiring_changed(struct nadb_store *st, uint64_t ino, int delta);

/* A directory move: dir_leaving before the move, dir_arrived after it. */
#define INDEX_MAX 8
struct index_move {
	void *state[INDEX_MAX];
};
int index_dir_leaving(struct nadb_store *st, uint64_t dir, uint64_t parent,
		      const char *name, struct index_move *m);
int index_dir_arrived(struct nadb_store *st, uint64_t dir, uint8_t level,
		      uint64_t old_parent, uint64_t parent, const char *name,
		      struct index_move *m);
void index_move_free(struct nadb_store *st, struct index_move *m);

#endif
