/* keys.c -- keys and count: walk the tree of a store or a mount, in name
 * order, and print (or count) the key paths a glob.c pattern matches.  A
 * directory is entered only when a path below it could still match.
 */
#include "nadb_tool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

struct key_walk {
	struct target *t;
	const struct glob *glob;
	bool json, count_only, ttl;
	uint64_t matches;
	struct buf path; /* the directory being walked: "" (root), "/app/users" */
};

/* The seconds left to key INO at W's path (user.ttl, as getfattr shows
 * it), or -1: it does not expire. */
static int seconds_left(struct key_walk *w, uint64_t ino, long long *ttl)
{
	char text[40];
	ssize_t n;
	if (w->t->mnt) {
		char *path = in_mount(w->t->mnt, w->path.s);
		n = path ? lgetxattr(path, "user.ttl", text, sizeof(text) - 1) : -1;
		n = n < 0 ? -errno : n;
		free(path);
	} else {
		n = nadb_getxattr(w->t->st, ino, "user.ttl", text, sizeof(text) - 1);
	}
	*ttl = -1;
	if (n == -ENODATA || n == -ENOENT) /* none, or expired meanwhile */
		return 0;
	if (n < 0)
		return (int)n;
	text[n] = 0;
	*ttl = atoll(text);
	return 0;
}

static int emit_key(struct key_walk *w, uint64_t ino)
{
	w->matches++;
	if (w->count_only)
		return 0;
	long long ttl = 0;
	int rc = w->ttl ? seconds_left(w, ino, &ttl) : 0;
	if (rc)
		return rc;
	if (!w->json) {
		printf(w->ttl ? "%s\t%lld\n" : "%s\n", w->path.s, ttl);
		return 0;
	}
	if (fputs(w->matches > 1 ? "," : "", stdout) == EOF)
		return -EIO;
	if (w->ttl)
		printf("{\"path\":");
	if (json_print_string(stdout, w->path.s))
		return -EIO;
	if (w->ttl && ttl < 0)
		printf(",\"ttl\":null}");
	else if (w->ttl)
		printf(",\"ttl\":%lld}", ttl);
	return 0;
}

static int list_walked_dir(struct key_walk *w, uint64_t ino, struct tree_list *l)
{
	if (!w->t->mnt)
		return list_store_dir(w->t->st, ino, false, l);
	char *dir = in_mount(w->t->mnt, w->path.s ? w->path.s : "");
	int rc = dir ? list_mounted_dir(dir, w->path.len == 0, l) : -ENOMEM;
	free(dir);
	return rc;
}

static int walk_keys(struct key_walk *w, uint64_t ino)
{
	struct tree_list l = {0};
	size_t len = w->path.len;
	int rc = list_walked_dir(w, ino, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		buf_truncate(&w->path, len);
		rc = buf_printf(&w->path, "/%s", l.v[i].name);
		if (rc || !S_ISDIR(l.v[i].attr.mode)) {
			int match = rc ? 0 : glob_matches(w->glob, w->path.s, false);
			rc = match < 0 ? match : match ? emit_key(w, l.v[i].attr.ino) : rc;
			continue;
		}
		/* Descend only where a path below could still match. */
		size_t dir_len = w->path.len;
		rc = buf_add(&w->path, "/", 1);
		int may_match = rc ? 0 : glob_matches(w->glob, w->path.s, true);
		buf_truncate(&w->path, dir_len);
		if (may_match)
			rc = may_match < 0 ? may_match : walk_keys(w, l.v[i].attr.ino);
	}
	buf_truncate(&w->path, len);
	tree_list_free(&l);
	return rc;
}

static int find_keys(const struct cmd_args *a, bool count_only)
{
	struct glob g;
	const char *why = NULL;
	int rc = glob_compile(a->arg[1], &g, &why);
	if (rc) { /* one line: the pattern was typed right there */
		complain("%s: bad pattern '%s': %s", a->cmd->name, a->arg[1],
			 why ? why : strerror(-rc));
		return EXIT_USAGE;
	}
	struct target t;
	int status = open_target(a, a->arg[0], true, false, &t);
	if (status) {
		glob_free(&g);
		return status;
	}
	struct key_walk w = {.t = &t, .glob = &g, .json = a->json, .count_only = count_only,
			      .ttl = a->ttl};
	if (w.json && !count_only)
		printf("[");
	rc = buf_add(&w.path, "", 0);
	if (!rc)
		rc = walk_keys(&w, NADB_ROOT_INO);
	if (w.json && !count_only)
		printf("]\n");
	if (count_only && !rc)
		printf("%" PRIu64 "\n", w.matches);
	if (!rc && fflush(stdout))
		rc = -errno;
	buf_free(&w.path);
	glob_free(&g);
	if (rc == -E2BIG)
		complain("%s: the pattern is too costly to match (too many stars)", a->arg[1]);
	else if (rc)
		report_failure(&t, NULL, rc);
	return close_target(&t, rc ? EXIT_PROBLEMS : 0);
}

int run_keys(const struct cmd_args *a)
{
	return find_keys(a, false);
}

int run_count(const struct cmd_args *a)
{
	return find_keys(a, true);
}
