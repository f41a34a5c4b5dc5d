/* tags.h -- tag queries: the /tags/TAG/ mirrors of the tree.
 *
 * Keys get tags through the xattrs user.tags ("a,b": the whole set) and
 * user.tag.NAME (one tag), handled by nadb_setxattr and friends.  A query
 * is one tag or several joined by '+' (all must match); its result is a
 * mirror of the tree holding only the matching keys and the directories
 * on their way, read straight from an index, never by scanning keys. */
#ifndef NADB_TAGS_H
#define NADB_TAGS_H

#include "store.h"

#define NADB_QUERY_MAX_TAGS 16

struct nadb_tag_query {
	unsigned n;                          /* tags, smallest first */
	uint32_t id[NADB_QUERY_MAX_TAGS];
	char tag[NADB_QUERY_MAX_TAGS][NADB_NAME_MAX + 1];
};

/* Is NAME a valid tag?  1..255 bytes; no '/', ',', '+', control
 * characters or leading '.': -EINVAL otherwise. */
int nadb_check_tag(const char *name);

/* Parse "a" or "a+b+c": -EINVAL for a bad name, -ENOENT when some tag is
 * carried by no key (the query is empty). */
int nadb_tag_query_parse(struct nadb_store *st, const char *text,
			 struct nadb_tag_query *q);

/* NAME in the mirror of directory DIR (the root: NADB_ROOT_INO) for Q:
 * the real attributes of what it names, or -ENOENT. */
int nadb_tag_lookup(struct nadb_store *st, const struct nadb_tag_query *q,
		    uint64_t dir, const char *name, struct nadb_attr *out);
/* The mirror of DIR for Q, in name order, after AFTER (like nadb_readdir,
 * with complete attributes). */
int nadb_tag_readdir(struct nadb_store *st, const struct nadb_tag_query *q,
		     uint64_t dir, const char *after, nadb_dirent_fn fn, void *ctx);

/* Tags in use, in name order, after AFTER (NULL: from the first). */
typedef int (*nadb_tag_fn)(void *ctx, const char *tag, uint64_t keys);
int nadb_tags_list(struct nadb_store *st, const char *after, nadb_tag_fn fn,
		   void *ctx);

/* Remove every tag of Q from key INO (rm under /tags/Q/). */
int nadb_tag_query_untag(struct nadb_store *st, const struct nadb_tag_query *q,
			 uint64_t ino);

#endif
