/* metawalk.h -- reading the metadata file without trusting it: a walk of
 * every table in a child process (a damaged B-tree kills the child, not
 * us), and a salvage of every readable record into a fresh file.  Used by
 * nadb_store_open (store.c) when the caller asks for it; see metawalk.c.
 */
#ifndef NADB_METAWALK_H
#define NADB_METAWALK_H

#include "store.h"

/* Walk every table of META/data.mdb (META: the store's meta directory) in
 * a child.  0: sound; -EUCLEAN: damaged, with D->damaged set and D->why
 * saying how; another negative errno: the walk could not be run. */
int meta_check(const char *meta, struct nadb_damage *d);

/* Copy every record that can be read from META/data.mdb into a new file,
 * keep the damaged one as META/data.mdb.damaged-TIME and put the new one
 * in its place.  Fills D's salvage fields.  0 or a negative errno. */
int meta_salvage(const char *meta, struct nadb_damage *d);

#endif
