/* admin.c -- stats, compact and fsck: the commands about a whole store
 * rather than its keys.  stats and compact work offline on a STORE or
 * through the daemon of a MOUNTPOINT; fsck only offline.
 */
#include "fsck.h"
#include "nadb_tool.h"
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "1.5 MiB": a byte count for a human, next to the exact one. */
static const char *human_bytes(uint64_t n, char *out, size_t size)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
		v /= 1024;
		u++;
	}
	snprintf(out, size, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return out;
}

/* ==== stats ================================================================
 * Both sources end up as one JSON document: the daemon's .stats as served,
 * or the same fields computed offline (plus per-database and per-namespace
 * "scopes").  The table is printed from the parsed document, so a mount and
 * a store read the same way. */

static int add_scope_row(struct nadb_store *st, uint64_t ino, const char *path,
			 const char *level, struct buf *b, bool *first)
{
	struct nadb_stats s;
	int rc = nadb_stats(st, ino, &s);
	if (rc)
		return rc;
	rc = buf_printf(b, "%s{\"path\":", *first ? "" : ",");
	*first = false;
	if (!rc)
		rc = json_quote(b, path);
	if (!rc)
		rc = buf_printf(b, ",\"level\":\"%s\",\"keys\":%" PRIu64 ",\"bytes\":%" PRIu64
				   ",\"namespaces\":%" PRIu64 ",\"dirs\":%" PRIu64 "}",
				level, s.keys, s.bytes, s.namespaces, s.dirs);
	return rc;
}

/* Rows for every database and each of its namespaces, in name order. */
static int add_scope_rows(struct nadb_store *st, struct buf *b)
{
	struct tree_list dbs = {0};
	bool first = true;
	int rc = list_store_dir(st, NADB_ROOT_INO, false, &dbs);
	for (size_t i = 0; !rc && i < dbs.n; i++) {
		if (!S_ISDIR(dbs.v[i].attr.mode))
			continue;
		struct buf path = {0};
		struct tree_list nss = {0};
		rc = buf_printf(&path, "/%s", dbs.v[i].name);
		if (!rc)
			rc = add_scope_row(st, dbs.v[i].attr.ino, path.s, "database", b, &first);
		if (!rc)
			rc = list_store_dir(st, dbs.v[i].attr.ino, false, &nss);
		for (size_t j = 0; !rc && j < nss.n; j++) {
			if (!S_ISDIR(nss.v[j].attr.mode))
				continue;
			buf_truncate(&path, strlen(dbs.v[i].name) + 1);
			rc = buf_printf(&path, "/%s", nss.v[j].name);
			if (!rc)
				rc = add_scope_row(st, nss.v[j].attr.ino, path.s, "namespace", b,
						   &first);
		}
		tree_list_free(&nss);
		buf_free(&path);
	}
	tree_list_free(&dbs);
	return rc;
}

/* The offline counterpart of the daemon's .stats: the same figures from
 * the one table of them (stats.h), less uptime_s and ops, which only a
 * running daemon has, plus per-database and per-namespace "scopes". */
static int stats_document(struct nadb_store *st, const char *store, struct buf *b)
{
	struct nadb_stats s;
	struct nadb_figure f[NADB_FIGURES];
	int rc = nadb_stats(st, NADB_ROOT_INO, &s);
	if (rc)
		return rc;
	nadb_stats_figures(&s, f);
	rc = buf_printf(b, "{\"store\":");
	if (!rc)
		rc = json_quote(b, store);
	for (size_t i = 0; !rc && i < NADB_FIGURES; i++)
		rc = f[i].ratio ? buf_printf(b, ",\"%s\":%.4f", f[i].name, f[i].x)
				: buf_printf(b, ",\"%s\":%" PRIu64, f[i].name, f[i].n);
	if (!rc)
		rc = buf_printf(b, ",\"version\":\"" NADB_VERSION "\",\"scopes\":[");
	if (!rc)
		rc = add_scope_rows(st, b);
	return rc ? rc : buf_printf(b, "]}\n");
}

/* ---- the table */

enum figure { COUNT, BYTES, RATIO, TEXT };

static void print_figure(const char *label, const char *value, enum figure kind)
{
	char h[32];
	if (!value)
		return; /* a field this source does not have */
	printf("  %-20s %s", label, value);
	if (kind == BYTES && strtoull(value, NULL, 10) >= 1024)
		printf("  (%s)", human_bytes(strtoull(value, NULL, 10), h, sizeof(h)));
	printf("%s\n", kind == RATIO ? "x" : "");
}

static void print_uptime(const char *value)
{
	if (!value)
		return;
	unsigned long long s = strtoull(value, NULL, 10);
	printf("  %-20s %llud %02lluh %02llum %02llus\n", "uptime", s / 86400, s / 3600 % 24,
	       s / 60 % 60, s % 60);
}

static void print_buffers(const struct pairs *p)
{
	const char *used = pairs_get(p, "buffer_bytes"), *limit = pairs_get(p, "buffer_limit");
	const char *pct = pairs_get(p, "buffer_utilization_pct");
	char a[32], b[32];
	if (!used || !limit)
		return;
	printf("  %-20s %s of %s (%s%%)\n", "write buffers",
	       human_bytes(strtoull(used, NULL, 10), a, sizeof(a)),
	       human_bytes(strtoull(limit, NULL, 10), b, sizeof(b)), pct ? pct : "?");
}

/* Value of FIELD in the group of pairs starting at I whose keys begin
 * with PREFIX ("scopes.3."); groups are contiguous in document order. */
static const char *group_get(const struct pairs *p, size_t i, const char *prefix, const char *field)
{
	size_t n = strlen(prefix);
	for (; i < p->n && !strncmp(p->v[i].key, prefix, n); i++)
		if (!strcmp(p->v[i].key + n, field))
			return p->v[i].value;
	return NULL;
}

/* Index of the next group of key GROUP ("scopes", "ops") at or after I,
 * its prefix in PREFIX ("ops.read."). */
static bool next_group(const struct pairs *p, size_t *i, const char *group, struct buf *prefix)
{
	size_t n = strlen(group);
	for (; *i < p->n; (*i)++) {
		const char *k = p->v[*i].key;
		bool in_group = !strncmp(k, group, n) && k[n] == '.';
		const char *dot = in_group ? strchr(k + n + 1, '.') : NULL;
		if (!dot)
			continue;
		buf_truncate(prefix, 0);
		if (buf_add(prefix, k, (size_t)(dot - k) + 1))
			return false;
		return true;
	}
	return false;
}

/* Skip past the group whose prefix is PREFIX. */
static void skip_group(const struct pairs *p, size_t *i, const struct buf *prefix)
{
	while (*i < p->n && !strncmp(p->v[*i].key, prefix->s, prefix->len))
		(*i)++;
}

static void print_scopes(const struct pairs *p)
{
	struct buf prefix = {0};
	bool header = false;
	for (size_t i = 0; next_group(p, &i, "scopes", &prefix); skip_group(p, &i, &prefix)) {
		const char *level = group_get(p, i, prefix.s, "level");
		bool db = level && !strcmp(level, "database");
		if (!header)
			printf("\n  %-32s %12s %14s %10s %8s\n", "database/namespace", "keys",
			       "bytes", "namespaces", "dirs");
		header = true;
		const char *path = group_get(p, i, prefix.s, "path");
		const char *keys = group_get(p, i, prefix.s, "keys");
		const char *bytes = group_get(p, i, prefix.s, "bytes");
		const char *nss = db ? group_get(p, i, prefix.s, "namespaces") : NULL;
		const char *dirs = group_get(p, i, prefix.s, "dirs");
		printf("  %-32s %12s %14s %10s %8s\n", path ? path : "?", keys ? keys : "-",
		       bytes ? bytes : "-", nss ? nss : "-", dirs ? dirs : "-");
	}
	buf_free(&prefix);
}

static void print_ops(const struct pairs *p)
{
	static const char *const fields[] = {"count", "mean_us", "min_us", "p50_us", "p99_us", "max_us"};
	struct buf prefix = {0};
	bool header = false;
	for (size_t i = 0; next_group(p, &i, "ops", &prefix); skip_group(p, &i, &prefix)) {
		if (!header)
			printf("\n  %-16s %12s %10s %10s %10s %10s %10s\n", "operation", "count",
			       "mean us", "min us", "p50 us", "p99 us", "max us");
		header = true;
		printf("  %-16.*s", (int)(prefix.len - 5), prefix.s + 4);
		for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
			const char *v = group_get(p, i, prefix.s, fields[f]);
			printf(f ? " %10s" : " %12s", v ? v : "-");
		}
		printf("\n");
	}
	buf_free(&prefix);
}

static void print_stats_table(const struct pairs *p, const char *title)
{
	printf("%s\n", title);
	print_figure("version", pairs_get(p, "version"), TEXT);
	print_uptime(pairs_get(p, "uptime_s"));
	print_figure("keys", pairs_get(p, "keys"), COUNT);
	print_figure("databases", pairs_get(p, "databases"), COUNT);
	print_figure("namespaces", pairs_get(p, "namespaces"), COUNT);
	print_figure("directories", pairs_get(p, "dirs"), COUNT);
	print_figure("tags", pairs_get(p, "tags"), COUNT);
	print_figure("expiring keys", pairs_get(p, "expiring"), COUNT);
	print_figure("reaped keys", pairs_get(p, "reaped"), COUNT);
	print_figure("logical bytes", pairs_get(p, "logical_bytes"), BYTES);
	print_figure("chunks", pairs_get(p, "chunks"), COUNT);
	print_figure("chunk bytes", pairs_get(p, "chunk_bytes"), BYTES);
	print_figure("payload bytes", pairs_get(p, "payload_bytes"), BYTES);
	print_figure("frame overhead", pairs_get(p, "frame_overhead_bytes"), BYTES);
	print_figure("stored bytes", pairs_get(p, "stored_bytes"), BYTES);
	print_figure("pack bytes", pairs_get(p, "pack_bytes"), BYTES);
	print_figure("garbage bytes", pairs_get(p, "garbage_bytes"), BYTES);
	print_figure("dedup ratio", pairs_get(p, "dedup_ratio"), RATIO);
	print_figure("compression ratio", pairs_get(p, "compression_ratio"), RATIO);
	print_buffers(p);
	print_scopes(p);
	print_ops(p);
}

static int read_small_file(const char *path, struct buf *out)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	char chunk[4096];
	size_t n;
	int rc = 0;
	while (!rc && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		rc = out->len + n > PAX_HEADER_MAX ? -EFBIG : buf_add(out, chunk, n);
	if (!rc && ferror(f))
		rc = -EIO;
	fclose(f);
	return rc ? rc : buf_add(out, "", 0);
}

/* The daemon's .stats, or an exit status after saying why not. */
static int read_mount_stats(const struct target *t, struct buf *doc)
{
	char *path = in_mount(t->mnt, ".stats");
	int rc = path ? read_small_file(path, doc) : -ENOMEM;
	free(path);
	if (rc == -ENOENT) {
		complain("%s: this nadbfs serves no .stats (an older daemon?); "
			 "unmount it and run nadb %s on the STORE", t->mnt, t->cmd);
		return EXIT_USAGE;
	}
	if (rc)
		complain("%s/.stats: %s", t->mnt, strerror(-rc));
	return rc ? EXIT_PROBLEMS : 0;
}

static int print_stats_document(const struct buf *doc, bool json, const char *title)
{
	if (json) {
		fwrite(doc->s, 1, doc->len, stdout);
		return 0;
	}
	struct pairs p = {0};
	int rc = parse_json(doc->s, doc->len, &p);
	if (rc)
		complain("the statistics are not a JSON document: %s", strerror(-rc));
	else
		print_stats_table(&p, title);
	pairs_free(&p);
	return rc ? EXIT_PROBLEMS : 0;
}

int run_stats(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], true, false, &t);
	if (status)
		return status;
	struct buf doc = {0}, title = {0};
	if (t.mnt) {
		status = read_mount_stats(&t, &doc);
		buf_printf(&title, "nadbfs mounted on %s", t.mnt);
	} else {
		int rc = stats_document(t.st, t.arg, &doc);
		status = rc ? report_failure(&t, NULL, rc) : 0;
		buf_printf(&title, "store %s (not mounted)", t.arg);
	}
	if (!status)
		status = print_stats_document(&doc, a->json, title.s ? title.s : "");
	buf_free(&doc);
	buf_free(&title);
	return close_target(&t, status);
}

/* ==== compact =============================================================
 * Offline the tool compacts itself; on a mount it asks the daemon, which
 * compacts between requests and keeps what it did in .stats
 * (last_compaction).  Both end in one report, printed by one function, so
 * --json has one schema whichever way it ran. */

struct compaction {
	const char *where; /* "store" or "mount" */
	struct nadb_compact_result r;
	uint64_t before, after; /* pack bytes */
};

static void print_compaction(const struct compaction *c, bool json)
{
	char h[32];
	const struct nadb_compact_result *r = &c->r;
	if (json) {
		printf("{\"where\":\"%s\",\"segments_removed\":%" PRIu64
		       ",\"bytes_reclaimed\":%" PRIu64 ",\"chunks_moved\":%" PRIu64
		       ",\"bytes_moved\":%" PRIu64 ",\"pack_bytes_before\":%" PRIu64
		       ",\"pack_bytes_after\":%" PRIu64 "}\n",
		       c->where, r->segments_removed, r->bytes_reclaimed, r->chunks_moved,
		       r->bytes_moved, c->before, c->after);
		return;
	}
	printf("reclaimed %" PRIu64 " bytes (%s): %" PRIu64 " segments removed, %" PRIu64
	       " chunks moved (%" PRIu64 " bytes)\n",
	       r->bytes_reclaimed, human_bytes(r->bytes_reclaimed, h, sizeof(h)),
	       r->segments_removed, r->chunks_moved, r->bytes_moved);
	printf("packs: %" PRIu64 " bytes before, %" PRIu64 " after\n", c->before, c->after);
}

/* The engine's progress, on the tool's progress line. */
static void show_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
	progress_of(ctx, done, total, "%s", phase);
}

static int compact_store(struct target *t, struct compaction *c)
{
	struct nadb_stats before = {0}, after;
	struct progress p;
	progress_start(&p);
	int rc = nadb_stats(t->st, NADB_ROOT_INO, &before);
	progress_show(&p, "compacting %s (%" PRIu64 " garbage bytes) ...", t->arg,
		      before.garbage_bytes);
	nadb_store_set_progress(t->st, show_progress, &p);
	if (!rc)
		rc = nadb_compact(t->st, true, 0, &c->r);
	nadb_store_set_progress(t->st, NULL, NULL);
	if (!rc)
		rc = nadb_store_sync(t->st);
	if (!rc)
		rc = nadb_stats(t->st, NADB_ROOT_INO, &after);
	progress_end(&p);
	if (rc)
		return report_failure(t, NULL, rc);
	c->where = "store";
	c->before = before.pack_bytes;
	c->after = after.pack_bytes;
	return 0;
}

uint64_t pair_number(const struct pairs *p, const char *key)
{
	const char *v = pairs_get(p, key);
	return v ? strtoull(v, NULL, 10) : 0;
}

int read_mount_stats_pairs(const char *mnt, struct pairs *out)
{
	char *path = in_mount(mnt, ".stats");
	struct buf doc = {0};
	int rc = path ? read_small_file(path, &doc) : -ENOMEM;
	if (!rc)
		rc = parse_json(doc.s, doc.len, out);
	buf_free(&doc);
	free(path);
	return rc;
}

/* pack_bytes from the daemon's .stats (0 when it says nothing), and with
 * R what its last compaction did. */
static uint64_t mount_pack_bytes(const struct target *t, struct nadb_compact_result *r)
{
	struct pairs p = {0};
	uint64_t n = 0;
	if (!read_mount_stats_pairs(t->mnt, &p)) {
		n = pair_number(&p, "pack_bytes");
		if (r)
			*r = (struct nadb_compact_result){
				pair_number(&p, "last_compaction.segments_removed"),
				pair_number(&p, "last_compaction.bytes_reclaimed"),
				pair_number(&p, "last_compaction.chunks_moved"),
				pair_number(&p, "last_compaction.bytes_moved")};
	}
	pairs_free(&p);
	return n;
}

/* Ask the daemon: it compacts while serving, between requests; the write
 * to .ctl returns once it is done. */
static int compact_mount(struct target *t, struct compaction *c)
{
	char *ctl = in_mount(t->mnt, ".ctl");
	if (!ctl)
		return report_failure(t, NULL, -ENOMEM);
	c->where = "mount";
	c->before = mount_pack_bytes(t, NULL);
	int fd = open(ctl, O_WRONLY);
	int rc = fd < 0 ? -errno : 0;
	static const char cmd[] = "compact\n";
	if (!rc && write(fd, cmd, sizeof(cmd) - 1) != (ssize_t)(sizeof(cmd) - 1))
		rc = -errno;
	if (fd >= 0 && close(fd) && !rc)
		rc = -errno;
	free(ctl);
	if (rc == -ENOENT) {
		complain("%s: this nadbfs has no .ctl (an older daemon?); "
			 "unmount it and run nadb compact on the STORE", t->mnt);
		return EXIT_USAGE;
	}
	if (rc) {
		complain("%s/.ctl: %s", t->mnt, strerror(-rc));
		return EXIT_PROBLEMS;
	}
	c->after = mount_pack_bytes(t, &c->r);
	return 0;
}

int run_compact(const struct cmd_args *a)
{
	struct target t;
	int status = open_target(a, a->arg[0], true, false, &t);
	if (status)
		return status;
	struct compaction c = {0};
	status = t.mnt ? compact_mount(&t, &c) : compact_store(&t, &c);
	if (!status)
		print_compaction(&c, a->json);
	return close_target(&t, status);
}

/* ==== fsck ================================================================ */

struct fsck_report {
	bool json;
	uint64_t lines;
	struct progress progress;
};

static void report_problem(void *ctx, const char *line)
{
	struct fsck_report *r = ctx;
	progress_end(&r->progress);
	if (r->json) {
		fputs(r->lines ? "," : "", stdout);
		json_print_string(stdout, line);
	} else
		printf("problem: %s\n", line);
	r->lines++;
	progress_show(&r->progress, "fsck: checking ... %" PRIu64 " problems so far", r->lines);
}

static void print_fsck_result(const struct nadb_fsck_result *res, bool repair, bool json)
{
	if (json) {
		printf("],\"inodes\":%" PRIu64 ",\"dirents\":%" PRIu64 ",\"chunks\":%" PRIu64
		       ",\"chunk_bytes\":%" PRIu64 ",\"problems\":%" PRIu64 ",\"repaired\":%" PRIu64
		       ",\"repair\":%s}\n",
		       res->inodes, res->dirents, res->chunks, res->chunk_bytes, res->problems,
		       res->repaired, repair ? "true" : "false");
		return;
	}
	printf("%" PRIu64 " inodes, %" PRIu64 " entries, %" PRIu64 " chunks (%" PRIu64
	       " bytes): %" PRIu64 " problems",
	       res->inodes, res->dirents, res->chunks, res->chunk_bytes, res->problems);
	if (repair)
		printf(", %" PRIu64 " repaired", res->repaired);
	printf("\n");
}

/* The metadata file could not be trusted: say so, and what salvage did. */
static void report_damage(struct fsck_report *r, const char *store,
			  const struct nadb_damage *d, struct nadb_fsck_result *res)
{
	struct buf line = {0};
	buf_printf(&line, "metadata file %s/meta/data.mdb is damaged (%s)", store, d->why);
	report_problem(r, line.s ? line.s : "metadata file is damaged");
	res->problems++;
	if (!d->salvaged)
		goto out;
	res->repaired++;
	buf_truncate(&line, 0);
	buf_printf(&line, "salvage: %" PRIu64 " records saved into a new metadata file, about %"
		   PRIu64 " lost; the damaged file is kept as %s", d->saved, d->lost, d->kept);
	report_problem(r, line.s ? line.s : "salvage");
	for (size_t i = 0; i < d->nnotes; i++) {
		buf_truncate(&line, 0);
		buf_printf(&line, "salvage: %s", d->notes[i]);
		report_problem(r, line.s ? line.s : "salvage");
	}
out:
	buf_free(&line);
}

int run_fsck(const struct cmd_args *a)
{
	struct target t;
	struct nadb_options o;
	struct nadb_damage damage = {0};
	struct fsck_report r = {.json = a->json};
	struct nadb_fsck_result res = {0};
	nadb_options_default(&o);
	o.create = false;
	o.check_meta = true; /* walked in a child first: a damaged file kills no one */
	o.salvage_meta = a->repair;
	o.damage = &damage;
	int status = open_target_with(a, a->arg[0], false, &o, &t);
	if (r.json && (damage.damaged || !status))
		printf("{\"lines\":[");
	if (damage.damaged)
		report_damage(&r, a->arg[0], &damage, &res);
	nadb_damage_free(&damage);
	if (status) {
		if (r.json && damage.damaged)
			printf("],\"error\":\"metadata file damaged\",\"problems\":%" PRIu64
			       ",\"repaired\":0,\"repair\":%s}\n", res.problems,
			       a->repair ? "true" : "false");
		else if (damage.damaged && a->repair)
			printf("fsck stopped: no record could be read from it; it is left as it is\n");
		else if (damage.damaged)
			printf("fsck stopped: nothing else can be checked; 'nadb fsck --repair %s' "
			       "saves what can be read\n", a->arg[0]);
		return status;
	}
	uint64_t found = res.problems, fixed = res.repaired;
	progress_start(&r.progress);
	progress_show(&r.progress, "fsck: checking %s ...", t.arg);
	nadb_store_set_progress(t.st, show_progress, &r.progress);
	int rc = nadb_fsck(t.st, a->repair, report_problem, &r, &res);
	nadb_store_set_progress(t.st, NULL, NULL);
	res.problems += found;
	res.repaired += fixed;
	progress_end(&r.progress);
	if (rc) {
		if (r.json)
			printf("],\"error\":\"%s\"}\n", strerror(-rc));
		complain("fsck could not finish: %s", failure_reason(rc));
		return close_target(&t, EXIT_USAGE);
	}
	print_fsck_result(&res, a->repair, a->json);
	bool clean = !res.problems || (a->repair && res.repaired == res.problems);
	return close_target(&t, clean ? 0 : EXIT_PROBLEMS);
}
