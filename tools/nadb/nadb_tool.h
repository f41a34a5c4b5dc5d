/* nadb_tool.h -- what the files of the nadb command-line tool share and
 * nobody else sees: the command and target types, the helpers every
 * command uses (messages, growable buffers, JSON, progress), and the few
 * functions one command borrows from another's file.  Each group names
 * the file that defines it; the comments are at the definitions. */
#ifndef NADB_TOOL_H
#define NADB_TOOL_H

#include "grow.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define EXIT_PROBLEMS 1
#define EXIT_USAGE 2
#define IO_CHUNK (1u << 20)   /* bytes moved per read/write of a value */
#define PAX_HEADER_MAX (64u << 20)

/* ---- main.c: commands, their arguments, messages */

#define OPT_JSON (1u << 0)
#define OPT_REPAIR (1u << 1)
#define OPT_TTL (1u << 2)
/* Not an option: the command only reads, so a store on Redis that a
 * daemon serves is opened as its follower (store.h) instead of refused. */
#define READS_ONLY (1u << 3)
#define MAX_ARGS 4096 /* mset and mget take many */

struct command;

struct cmd_args {
	const struct command *cmd;
	bool json, repair, help, ttl;
	int n;                   /* positional arguments */
	const char *arg[MAX_ARGS];
};

struct command {
	const char *name;
	const char *synopsis; /* "stats [--json] STORE|MOUNTPOINT" */
	const char *summary;  /* one line for nadb --help */
	const char *details;  /* nadb help CMD */
	unsigned options;     /* OPT_* it accepts */
	int min_args, max_args;
	int (*run)(const struct cmd_args *a);
};

void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Why an engine call failed with RC, for the one line complain() writes:
 * the line the engine logged for it, else strerror (see log.h). */
const char *failure_reason(int rc);
int usage_error(const struct command *c, const char *why, const char *what);

/* ---- buf.c: growable arrays and byte strings */

/* A growable byte string, always NUL-terminated once written to. */
struct buf {
	char *s;
	size_t len, cap;
};

int buf_add(struct buf *b, const void *data, size_t n);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_truncate(struct buf *b, size_t len);
void buf_free(struct buf *b);

/* ---- json.c: quoting names, reading a document as (path, value) pairs */

struct pair {
	char *key, *value;
};

struct pairs {
	struct pair *v;
	size_t n, cap;
};

int json_quote(struct buf *b, const char *s);
int json_print_string(FILE *f, const char *s);
int parse_json(const char *text, size_t len, struct pairs *out);
const char *pairs_get(const struct pairs *p, const char *key);
void pairs_free(struct pairs *p);

/* ---- progress.c: a progress line on a terminal's stderr */

struct progress {
	bool on, shown;
	bool shared; /* a share done was shown: the first is shown at once */
	struct timespec started, last;
};

void progress_start(struct progress *p);
void progress_show(struct progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same, DONE of TOTAL (0: not known): with a percentage and an ETA. */
void progress_of(struct progress *p, uint64_t done, uint64_t total, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void progress_end(struct progress *p);

/* ---- target.c: a store, or the mountpoint of a running nadbfs */

struct target {
	const char *arg;       /* as the user typed it */
	const char *cmd;       /* the command, for messages */
	struct nadb_store *st; /* offline: the open store */
	char *mnt;             /* mounted: the mountpoint (absolute); else NULL */
};

int open_target(const struct cmd_args *a, const char *arg, bool mount_ok, bool create,
		struct target *t);
int open_target_with(const struct cmd_args *a, const char *arg, bool mount_ok,
		     const struct nadb_options *o, struct target *t);
int close_target(struct target *t, int status);
int report_failure(const struct target *t, const char *path, int rc);
const struct nadb_caller *caller(struct nadb_caller *who);
char *in_mount(const char *mnt, const char *name);
/* The store (malloc'd) that an nadbfs mounted on MNT (absolute) serves,
 * or NULL. */
char *nadbfs_store_mounted_at(const char *mnt);

/* ---- listing.c: one directory of a store or a mount, as a list */

struct tree_entry {
	char *name;
	struct nadb_attr attr; /* complete offline with want_attr; else the type */
};

struct tree_list {
	struct tree_entry *v;
	size_t n, cap;
};

int list_store_dir(struct nadb_store *st, uint64_t ino, bool want_attr, struct tree_list *out);
int list_mounted_dir(const char *dir, bool at_root, struct tree_list *out);
void tree_list_free(struct tree_list *l);

/* ---- tree_cmds.c: ls, get, put, rm, setx, getx (and what load reuses) */

int make_parents(struct nadb_store *st, const char *path, uint64_t *parent, const char **leaf);
int read_xattr(struct nadb_store *st, uint64_t ino, const char *name, char **value,
	       size_t *len);
int run_ls(const struct cmd_args *a);
int run_get(const struct cmd_args *a);
int run_put(const struct cmd_args *a);
int run_rm(const struct cmd_args *a);
int run_setx(const struct cmd_args *a);
int run_getx(const struct cmd_args *a);

/* ---- admin.c: stats, compact, fsck */
/* The .stats of the nadbfs mounted on MNT, as pairs: 0 or -errno. */
int read_mount_stats_pairs(const char *mnt, struct pairs *out);
/* The number at KEY, 0 if there is none. */
uint64_t pair_number(const struct pairs *p, const char *key);

/* ---- atomic.c: incr, cas, mset, mget */
int run_incr(const struct cmd_args *a);
int run_cas(const struct cmd_args *a);
int run_mset(const struct cmd_args *a);
int run_mget(const struct cmd_args *a);

int run_stats(const struct cmd_args *a);
int run_compact(const struct cmd_args *a);
int run_fsck(const struct cmd_args *a);

/* ---- glob.c: Redis-style patterns over key paths */

struct glob {
	char **alt; /* brace-free alternatives; a path matches if one does */
	size_t n, cap;
};

/* -EINVAL or -E2BIG with *WHY set: not a pattern (exit 2). */
int glob_compile(const char *pattern, struct glob *g, const char **why);
int glob_matches(const struct glob *g, const char *path, bool prefix);
void glob_free(struct glob *g);

/* ---- keys.c: keys, count */

int run_keys(const struct cmd_args *a);
int run_count(const struct cmd_args *a);

/* ---- tar.c: the POSIX pax interchange format, both ways */

#define BLOCK 512
#define USTAR_SIZE_MAX 077777777777ULL /* 11 octal digits: 8 GiB - 1 */
#define USTAR_ID_MAX 07777777ULL       /* 7 octal digits */

struct ustar {
	char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8];
	char typeflag, linkname[100], magic[6], version[2], uname[32], gname[32];
	char devmajor[8], devminor[8], prefix[155], pad[12];
};
_Static_assert(sizeof(struct ustar) == BLOCK, "a ustar header is one block");

void put_octal(char *field, size_t width, uint64_t v);
void put_text(char *field, size_t width, const char *s);
unsigned header_checksum(const struct ustar *h);
uint64_t header_number(const char *field, size_t width);
bool header_is_valid(const struct ustar *h);
bool is_zero_block(const void *p);
int pax_add(struct buf *b, const char *key, const char *value, size_t vlen);
int pax_add_number(struct buf *b, const char *key, uint64_t v);
int pax_add_time(struct buf *b, const char *key, struct timespec ts);
bool parse_decimal_time(const char *s, size_t n, struct timespec *ts);

/* ---- dump.c, load.c */

int run_dump(const struct cmd_args *a);
int run_load(const struct cmd_args *a);

/* ---- umount.c */

int run_umount(const struct cmd_args *a);

#endif
