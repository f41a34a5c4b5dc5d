/* dump.c -- nadb dump: a store, or a subtree of it, to stdout as a pax tar
 * archive (tar.c).  Keys, directories, symlinks, hard links (the first name
 * carries the value), FIFOs, with modes, owners, times and every user.*
 * xattr.
 */
#include "nadb_tool.h"
#include "stats.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct hard_link {
	uint64_t ino;
	char *name; /* the member that carries the value */
};

struct dumper {
	struct nadb_store *st;
	FILE *out;
	char *data; /* IO_CHUNK bytes for values */
	struct hard_link *links; /* inodes with several names, by ino */
	size_t nlinks, caplinks;
	uint32_t owner_uid, owner_gid; /* the last names looked up */
	char uname[32], gname[32];
	uint64_t keys, dirs, bytes, skipped;
	uint64_t total; /* bytes of the values to dump, if known (progress) */
	bool out_failed; /* writing the archive (not reading the store) failed */
	struct progress progress;
};

static const char *user_name(struct dumper *d, uint32_t uid)
{
	if (d->uname[0] && d->owner_uid == uid)
		return d->uname;
	struct passwd *pw = getpwuid(uid);
	d->owner_uid = uid;
	put_text(d->uname, sizeof(d->uname) - 1, pw ? pw->pw_name : "");
	d->uname[sizeof(d->uname) - 1] = 0;
	return d->uname;
}

static const char *group_name(struct dumper *d, uint32_t gid)
{
	if (d->gname[0] && d->owner_gid == gid)
		return d->gname;
	struct group *gr = getgrgid(gid);
	d->owner_gid = gid;
	put_text(d->gname, sizeof(d->gname) - 1, gr ? gr->gr_name : "");
	d->gname[sizeof(d->gname) - 1] = 0;
	return d->gname;
}

/* The member already carrying INO's value, or NULL (then remember NAME). */
static const char *first_link(struct dumper *d, uint64_t ino, const char *name, int *rc)
{
	size_t lo = 0, hi = d->nlinks;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (d->links[mid].ino == ino)
			return d->links[mid].name;
		if (d->links[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	char *copy = strdup(name);
	if (!copy || ARRAY_GROW(d->links, d->nlinks, d->caplinks)) {
		free(copy);
		*rc = -ENOMEM;
		return NULL;
	}
	struct hard_link *v = d->links;
	memmove(v + lo + 1, v + lo, (d->nlinks - lo) * sizeof(*v));
	v[lo] = (struct hard_link){ino, copy};
	d->nlinks++;
	return NULL;
}

static int write_block_data(struct dumper *d, const void *data, size_t n)
{
	if (fwrite(data, 1, n, d->out) == n)
		return 0;
	d->out_failed = true;
	return errno ? -errno : -EIO;
}

static int write_padding(struct dumper *d, uint64_t size)
{
	static const char zeros[BLOCK];
	return write_block_data(d, zeros, (BLOCK - size % BLOCK) % BLOCK);
}

static int write_header(struct dumper *d, const char *name, char type, const char *link,
			uint64_t size, const struct nadb_attr *a)
{
	struct ustar h;
	memset(&h, 0, sizeof(h));
	put_text(h.name, sizeof(h.name), name);
	put_octal(h.mode, sizeof(h.mode), a->mode & 07777);
	put_octal(h.uid, sizeof(h.uid), a->uid <= USTAR_ID_MAX ? a->uid : 0);
	put_octal(h.gid, sizeof(h.gid), a->gid <= USTAR_ID_MAX ? a->gid : 0);
	put_octal(h.size, sizeof(h.size), size <= USTAR_SIZE_MAX ? size : 0);
	bool mtime_fits = a->mtime.tv_sec >= 0 && (uint64_t)a->mtime.tv_sec <= USTAR_SIZE_MAX;
	put_octal(h.mtime, sizeof(h.mtime), mtime_fits ? (uint64_t)a->mtime.tv_sec : 0);
	h.typeflag = type;
	put_text(h.linkname, sizeof(h.linkname), link ? link : "");
	memcpy(h.magic, "ustar", 6);
	memcpy(h.version, "00", 2);
	put_text(h.uname, sizeof(h.uname), user_name(d, a->uid));
	put_text(h.gname, sizeof(h.gname), group_name(d, a->gid));
	put_octal(h.devmajor, sizeof(h.devmajor), major(a->rdev));
	put_octal(h.devminor, sizeof(h.devminor), minor(a->rdev));
	put_octal(h.chksum, 7, header_checksum(&h));
	h.chksum[7] = ' ';
	return write_block_data(d, &h, sizeof(h));
}

/* The pax keyword of xattr NAME, as GNU tar writes it: '=' (which would
 * end the keyword) as %3D, and so '%' as %25. */
static int xattr_keyword(const char *name, struct buf *key)
{
	int rc = buf_printf(key, "SCHILY.xattr.");
	for (const char *c = name; !rc && *c; c++)
		rc = *c == '=' ? buf_printf(key, "%%3D")
		     : *c == '%' ? buf_printf(key, "%%25") : buf_add(key, c, 1);
	return rc;
}

/* SCHILY.xattr.NAME records for every xattr of INO (user.tags and
 * user.tag.*, user.ttl and user.expires included: load picks). */
static int pax_add_xattrs(struct dumper *d, uint64_t ino, struct buf *pax)
{
	ssize_t n = nadb_listxattr(d->st, ino, NULL, 0);
	char *names = n > 0 ? malloc((size_t)n) : NULL;
	if (n > 0 && !names)
		return -ENOMEM;
	if (n > 0)
		n = nadb_listxattr(d->st, ino, names, (size_t)n);
	int rc = n < 0 ? (int)n : 0;
	for (ssize_t at = 0; !rc && at < n; at += (ssize_t)strlen(names + at) + 1) {
		char *value = NULL;
		size_t len = 0;
		struct buf key = {0};
		rc = read_xattr(d->st, ino, names + at, &value, &len);
		if (rc == -ENODATA) /* e.g. a ttl that ran out since the listing */
			rc = 0;
		else if (!rc && !(rc = xattr_keyword(names + at, &key)))
			rc = pax_add(pax, key.s, value, len);
		buf_free(&key);
		free(value);
	}
	free(names);
	return rc;
}

/* What only pax can say about the member NAME. */
static int pax_for(struct dumper *d, const char *name, const char *link, uint64_t size,
		   const struct nadb_attr *a, struct buf *pax)
{
	int rc = 0;
	if (strlen(name) > sizeof(((struct ustar *)0)->name))
		rc = pax_add(pax, "path", name, strlen(name));
	if (!rc && link && strlen(link) > sizeof(((struct ustar *)0)->linkname))
		rc = pax_add(pax, "linkpath", link, strlen(link));
	if (!rc && size > USTAR_SIZE_MAX)
		rc = pax_add_number(pax, "size", size);
	if (!rc && a->uid > USTAR_ID_MAX)
		rc = pax_add_number(pax, "uid", a->uid);
	if (!rc && a->gid > USTAR_ID_MAX)
		rc = pax_add_number(pax, "gid", a->gid);
	if (!rc)
		rc = pax_add_time(pax, "mtime", a->mtime);
	if (!rc)
		rc = pax_add_time(pax, "atime", a->atime);
	return rc ? rc : pax_add_xattrs(d, a->ino, pax);
}

/* The 'x' member before NAME: named PaxHeaders/BASENAME like GNU tar's. */
static int write_pax_header(struct dumper *d, const char *name, const struct buf *pax,
			    const struct nadb_attr *a)
{
	struct buf xname = {0};
	const char *base = name;
	size_t len = strlen(name);
	while (len > 1 && name[len - 1] == '/')
		len--;
	for (size_t i = 0; i + 1 < len; i++)
		if (name[i] == '/')
			base = name + i + 1;
	struct nadb_attr xa = *a;
	xa.mode = 0644;
	int rc = buf_printf(&xname, "PaxHeaders/%.*s", (int)(name + len - base), base);
	if (!rc)
		rc = write_header(d, xname.s, 'x', NULL, pax->len, &xa);
	if (!rc)
		rc = write_block_data(d, pax->s, pax->len);
	if (!rc)
		rc = write_padding(d, pax->len);
	buf_free(&xname);
	return rc;
}

static int write_value(struct dumper *d, const struct nadb_attr *a)
{
	struct nadb_file *f;
	int rc = nadb_file_open(d->st, a->ino, 0, &f);
	if (rc)
		return rc;
	uint64_t off = 0;
	while (!rc && off < a->size) {
		size_t want = a->size - off < IO_CHUNK ? (size_t)(a->size - off) : IO_CHUNK;
		ssize_t n = nadb_file_read(f, d->data, want, (off_t)off);
		rc = n < 0 ? (int)n : n == 0 ? -EIO : write_block_data(d, d->data, (size_t)n);
		off += n > 0 ? (uint64_t)n : 0;
		progress_of(&d->progress, d->bytes + off, d->total,
			    "dump: %" PRIu64 " keys, %" PRIu64 " MiB", d->keys, (d->bytes + off) >> 20);
	}
	nadb_file_close(f);
	d->bytes += off;
	return rc ? rc : write_padding(d, a->size);
}

/* The member type for A, and what it links to; 0 for what tar cannot hold. */
static char member_type(struct dumper *d, const char *name, const struct nadb_attr *a,
			char *target, size_t size, const char **link, int *rc)
{
	*link = NULL;
	if (S_ISDIR(a->mode))
		return '5';
	if (S_ISFIFO(a->mode))
		return '6';
	if (S_ISCHR(a->mode))
		return '3';
	if (S_ISBLK(a->mode))
		return '4';
	if (S_ISLNK(a->mode)) {
		*rc = nadb_readlink(d->st, a->ino, target, size);
		*link = target;
		return '2';
	}
	if (!S_ISREG(a->mode))
		return 0;
	*link = a->nlink > 1 ? first_link(d, a->ino, name, rc) : NULL;
	return *link ? '1' : '0';
}

static int dump_entry(struct dumper *d, const char *name, const struct nadb_attr *a)
{
	char target[4097];
	const char *link;
	int rc = 0;
	char type = member_type(d, name, a, target, sizeof(target), &link, &rc);
	if (rc)
		return rc;
	if (!type) {
		complain("%s: a socket cannot go into a tar archive; skipped", name);
		d->skipped++;
		return 0;
	}
	uint64_t size = type == '0' ? a->size : 0;
	struct buf pax = {0};
	rc = pax_for(d, name, link, size, a, &pax);
	if (!rc)
		rc = write_pax_header(d, name, &pax, a);
	if (!rc)
		rc = write_header(d, name, type, link, size, a);
	if (!rc && type == '0')
		rc = write_value(d, a);
	buf_free(&pax);
	d->keys += type != '5';
	d->dirs += type == '5';
	return rc;
}

/* Members for everything below directory DIR, named NAME... */
static int dump_tree(struct dumper *d, uint64_t dir, struct buf *name)
{
	struct tree_list l = {0};
	size_t len = name->len;
	int rc = list_store_dir(d->st, dir, true, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		bool is_dir = S_ISDIR(l.v[i].attr.mode);
		buf_truncate(name, len);
		rc = buf_printf(name, "%s%s", l.v[i].name, is_dir ? "/" : "");
		if (!rc)
			rc = dump_entry(d, name->s, &l.v[i].attr);
		if (!rc && is_dir)
			rc = dump_tree(d, l.v[i].attr.ino, name);
	}
	buf_truncate(name, len);
	tree_list_free(&l);
	return rc;
}

/* A directory becomes "./" and "./NAME..." (like tar -C PATH -c .), a key
 * one member named by its last name. */
static int dump_path(struct dumper *d, const char *path)
{
	struct nadb_attr a;
	struct buf name = {0};
	int rc = nadb_resolve(d->st, path, &a);
	if (!rc && !S_ISDIR(a.mode)) {
		const char *slash = strrchr(path, '/');
		d->total = a.size;
		return dump_entry(d, slash ? slash + 1 : path, &a);
	}
	/* The root, a database and a namespace count their bytes (O(1));
	 * below those the total is not known and no share is shown. */
	struct nadb_stats s;
	if (!rc && a.level <= NADB_LEVEL_NAMESPACE && !nadb_stats(d->st, a.ino, &s))
		d->total = s.bytes;
	if (!rc)
		rc = buf_add(&name, "./", 2);
	if (!rc)
		rc = dump_entry(d, name.s, &a);
	if (!rc)
		rc = dump_tree(d, a.ino, &name);
	buf_free(&name);
	return rc;
}

static int finish_archive(struct dumper *d)
{
	static const char end[2 * BLOCK];
	int rc = write_block_data(d, end, sizeof(end));
	if (!rc && fflush(d->out)) {
		d->out_failed = true;
		rc = -errno;
	}
	return rc;
}

int run_dump(const struct cmd_args *a)
{
	if (isatty(STDOUT_FILENO))
		return usage_error(a->cmd, "refusing to write an archive to a terminal",
				   "redirect stdout to a file or a pipe");
	struct target t;
	int status = open_target(a, a->arg[0], false, false, &t);
	if (status)
		return status;
	const char *path = a->n > 1 ? a->arg[1] : "/";
	struct dumper d = {.st = t.st, .out = stdout, .data = malloc(IO_CHUNK)};
	progress_start(&d.progress);
	int rc = d.data ? dump_path(&d, path) : -ENOMEM;
	if (!rc)
		rc = finish_archive(&d);
	progress_end(&d.progress);
	if (!rc && isatty(STDERR_FILENO))
		fprintf(stderr, "dumped %" PRIu64 " keys, %" PRIu64 " directories, %" PRIu64
				" bytes of values\n", d.keys, d.dirs, d.bytes);
	for (size_t i = 0; i < d.nlinks; i++)
		free(d.links[i].name);
	free(d.links);
	free(d.data);
	if (rc && d.out_failed)
		status = (complain("writing the archive: %s", strerror(-rc)), EXIT_PROBLEMS);
	else if (rc)
		status = report_failure(&t, path, rc);
	else if (d.skipped)
		status = EXIT_PROBLEMS;
	return close_target(&t, status);
}
