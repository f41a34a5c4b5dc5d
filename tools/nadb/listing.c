/* listing.c -- directory listings, shared by keys, stats and dump: one
 * directory of an open store, or of a mounted one, collected into a list
 * (so no engine lock is held while the caller works on it).
 */
#include "nadb_tool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void tree_list_free(struct tree_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	*l = (struct tree_list){0};
}

static int tree_list_add(struct tree_list *l, const char *name, const struct nadb_attr *a)
{
	if (ARRAY_GROW(l->v, l->n, l->cap))
		return -ENOMEM;
	struct tree_entry *v = l->v;
	if (!(v[l->n].name = strdup(name)))
		return -ENOMEM;
	v[l->n++].attr = *a;
	return 0;
}

/* nadb_readdir holds the engine's lock while it calls us: only collect. */
static int collect_entry(void *ctx, const char *name, const struct nadb_attr *a)
{
	return tree_list_add(ctx, name, a);
}

int list_store_dir(struct nadb_store *st, uint64_t ino, bool want_attr,
		   struct tree_list *out)
{
	return nadb_readdir(st, ino, NULL, want_attr, collect_entry, out);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct tree_entry *)a)->name, ((const struct tree_entry *)b)->name);
}

static uint32_t mode_of_dirent(int dfd, const struct dirent *d)
{
	struct stat s;
	switch (d->d_type) {
	case DT_DIR: return S_IFDIR;
	case DT_REG: return S_IFREG;
	case DT_LNK: return S_IFLNK;
	case DT_FIFO: return S_IFIFO;
	case DT_SOCK: return S_IFSOCK;
	default:
		return fstatat(dfd, d->d_name, &s, AT_SYMLINK_NOFOLLOW) ? 0 : s.st_mode;
	}
}

/* A directory of a mounted store, sorted by name (not the kernel's order).
 * At the root, "tags" and dot names are the daemon's own files, not data,
 * and so is every entry with the top bit of its inode number set (.stats
 * of databases and namespaces). */
int list_mounted_dir(const char *dir, bool at_root, struct tree_list *out)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	int rc = 0;
	struct dirent *e;
	errno = 0;
	while (!rc && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (at_root && (e->d_name[0] == '.' || !strcmp(e->d_name, "tags")))
			continue;
		if ((uint64_t)e->d_ino >> 63)
			continue;
		struct nadb_attr a = {.ino = e->d_ino, .mode = mode_of_dirent(dirfd(d), e)};
		rc = tree_list_add(out, e->d_name, &a);
	}
	if (!rc && errno)
		rc = -errno;
	closedir(d);
	if (!rc)
		qsort(out->v, out->n, sizeof(*out->v), by_name);
	return rc;
}
