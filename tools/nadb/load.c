/* load.c -- nadb load: a tar archive (dump's, or any tar's) from stdin into
 * a store below PATH.  A damaged member is reported and skipped; a damaged
 * archive stops the load.  Directory metadata is set last, and the xattrs
 * of a key in an order that keeps its tags and its expiry.
 */
#include "nadb_tool.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

struct xattr {
	char *name, *value;
	size_t len;
};

/* One archive member: its header, with what pax (or GNU long-name
 * records) said about it taking precedence. */
struct member {
	char type;
	char *name, *link;
	uint64_t size;
	uint32_t mode, uid, gid;
	uint32_t devmajor, devminor; /* device nodes ('3', '4') */
	struct timespec mtime, atime;
	bool has_name, has_link, has_size, has_uid, has_gid, has_mtime, has_atime;
	struct xattr *xattrs;
	size_t nx, capx;
	uint64_t consumed; /* bytes of its data read so far */
};

static void member_free(struct member *m)
{
	for (size_t i = 0; i < m->nx; i++) {
		free(m->xattrs[i].name);
		free(m->xattrs[i].value);
	}
	free(m->xattrs);
	free(m->name);
	free(m->link);
	*m = (struct member){0};
}

/* Directory metadata is applied after the whole archive: creating what is
 * inside would change the times again, and a default user.ttl must not
 * give the keys loaded into the directory an expiry they did not have. */
struct deferred_dir {
	uint64_t ino;
	char *path;
	struct member meta;
};

struct loader {
	struct nadb_store *st;
	FILE *in;
	struct buf base;     /* "" (the root) or "/app/users" */
	bool restore_owner;  /* like tar: only root gives files away */
	int broken;          /* the archive itself failed (-EPIPE, -EIO): stop */
	uint64_t offset;     /* bytes of the archive read, for messages */
	char *data;
	struct deferred_dir *dirs;
	size_t ndirs, capdirs;
	struct timespec now;
	uint64_t keys, dirs_made, links, bytes, expired, failed;
	uint64_t said_not_kept; /* attributes skipped as not user.* */
	uint64_t size; /* of the archive when stdin is a file, for progress; else 0 */
	struct progress progress;
};

/* Read N bytes of the archive.  At a header (MAY_END), no byte at all is
 * the end of the input: 1.  Any other shortfall breaks the load. */
static int read_archive(struct loader *l, void *p, size_t n, bool may_end)
{
	size_t got = fread(p, 1, n, l->in);
	l->offset += got;
	if (got == n)
		return 0;
	if (!got && may_end && !ferror(l->in))
		return 1;
	l->broken = ferror(l->in) ? -EIO : -EPIPE;
	return l->broken;
}

static int skip_archive(struct loader *l, uint64_t n)
{
	while (n) {
		size_t step = n < IO_CHUNK ? (size_t)n : IO_CHUNK;
		int rc = read_archive(l, l->data, step, false);
		if (rc)
			return rc;
		n -= step;
	}
	return 0;
}

static bool number_value(const char *s, size_t n, uint64_t *v)
{
	char text[24];
	if (!n || n >= sizeof(text))
		return false;
	memcpy(text, s, n);
	text[n] = 0;
	char *end;
	errno = 0;
	*v = strtoull(text, &end, 10);
	return !errno && !*end && isdigit((unsigned char)text[0]);
}

/* An xattr's name as GNU tar writes it in a keyword, '=' as %3D and '%'
 * as %25 (a keyword ends at its '='), decoded in place. */
static void decode_xattr_keyword(char *name)
{
	char *out = name;
	for (const char *in = name; *in; out++) {
		if (in[0] == '%' && in[1] == '3' && in[2] == 'D')
			*out = '=', in += 3;
		else if (in[0] == '%' && in[1] == '2' && in[2] == '5')
			*out = '%', in += 3;
		else
			*out = *in++;
	}
	*out = '\0';
}

static int member_add_xattr(struct member *m, const char *name, size_t nlen, const char *value,
			    size_t vlen)
{
	if (ARRAY_GROW(m->xattrs, m->nx, m->capx))
		return -ENOMEM;
	struct xattr *v = m->xattrs;
	v[m->nx] = (struct xattr){strndup(name, nlen), malloc(vlen + 1), vlen};
	if (v[m->nx].name)
		decode_xattr_keyword(v[m->nx].name);
	if (!v[m->nx].name || !v[m->nx].value) {
		free(v[m->nx].name);
		free(v[m->nx].value);
		return -ENOMEM;
	}
	memcpy(v[m->nx].value, value, vlen);
	v[m->nx].value[vlen] = 0;
	m->nx++;
	return 0;
}

static bool key_is(const char *key, size_t klen, const char *want)
{
	return klen == strlen(want) && !memcmp(key, want, klen);
}

static int set_text(char **field, bool *has, const char *value, size_t len)
{
	free(*field);
	*field = strndup(value, len);
	*has = len > 0; /* an empty value cancels, per POSIX */
	return *field ? 0 : -ENOMEM;
}

/* One pax record; records this tool does not use are ignored, as pax says. */
static int pax_record(struct member *m, const char *key, size_t klen, const char *value,
		      size_t vlen)
{
	static const char xattr[] = "SCHILY.xattr.";
	uint64_t n;
	if (key_is(key, klen, "path"))
		return set_text(&m->name, &m->has_name, value, vlen);
	if (key_is(key, klen, "linkpath"))
		return set_text(&m->link, &m->has_link, value, vlen);
	if (key_is(key, klen, "size"))
		return (m->has_size = number_value(value, vlen, &m->size)) ? 0 : -EINVAL;
	if (key_is(key, klen, "uid"))
		return (m->has_uid = number_value(value, vlen, &n) && n <= UINT32_MAX)
			       ? (m->uid = (uint32_t)n, 0) : -EINVAL;
	if (key_is(key, klen, "gid"))
		return (m->has_gid = number_value(value, vlen, &n) && n <= UINT32_MAX)
			       ? (m->gid = (uint32_t)n, 0) : -EINVAL;
	if (key_is(key, klen, "mtime"))
		return (m->has_mtime = parse_decimal_time(value, vlen, &m->mtime)) ? 0 : -EINVAL;
	if (key_is(key, klen, "atime"))
		return (m->has_atime = parse_decimal_time(value, vlen, &m->atime)) ? 0 : -EINVAL;
	if (klen > sizeof(xattr) - 1 && !memcmp(key, xattr, sizeof(xattr) - 1))
		return member_add_xattr(m, key + sizeof(xattr) - 1, klen - (sizeof(xattr) - 1),
					value, vlen);
	return 0;
}

static int parse_pax(struct member *m, const char *data, size_t len)
{
	size_t at = 0;
	while (at < len) {
		if (!data[at]) /* some writers pad with NULs */
			break;
		char *space;
		unsigned long long rlen = strtoull(data + at, &space, 10);
		if (space == data + at || *space != ' ' || rlen > len - at ||
		    (size_t)(space - data) >= at + rlen || data[at + rlen - 1] != '\n')
			return -EINVAL;
		const char *key = space + 1, *end = data + at + rlen - 1;
		const char *eq = memchr(key, '=', (size_t)(end - key));
		if (!eq)
			return -EINVAL;
		int rc = pax_record(m, key, (size_t)(eq - key), eq + 1, (size_t)(end - eq - 1));
		if (rc)
			return rc;
		at += rlen;
	}
	return 0;
}

/* Read the data of an extension member (pax header, GNU long name). */
static int read_extension(struct loader *l, uint64_t size, char **out)
{
	if (size > PAX_HEADER_MAX)
		return -EFBIG;
	char *p = malloc(size + 1);
	if (!p)
		return -ENOMEM;
	int rc = read_archive(l, p, size, false);
	if (!rc)
		rc = skip_archive(l, (BLOCK - size % BLOCK) % BLOCK);
	p[size] = 0;
	if (rc)
		free(p);
	else
		*out = p;
	return rc;
}

/* The member's name from the header: PREFIX/NAME in POSIX ustar. */
static int name_from_header(struct member *m, const struct ustar *h)
{
	struct buf name = {0};
	size_t plen = strnlen(h->prefix, sizeof(h->prefix));
	bool posix = !memcmp(h->magic, "ustar", 6); /* GNU tar uses prefix's room otherwise */
	int rc = posix && plen ? buf_printf(&name, "%.*s/", (int)plen, h->prefix) : 0;
	if (!rc)
		rc = buf_add(&name, h->name, strnlen(h->name, sizeof(h->name)));
	free(m->name);
	m->name = name.s;
	m->has_name = !rc;
	return rc;
}

/* Fill in from the ustar header what pax did not already say. */
static int member_from_header(struct member *m, const struct ustar *h)
{
	m->type = h->typeflag == 0 || h->typeflag == '7' ? '0' : h->typeflag;
	m->mode = (uint32_t)header_number(h->mode, sizeof(h->mode)) & 07777;
	m->devmajor = (uint32_t)header_number(h->devmajor, sizeof(h->devmajor));
	m->devminor = (uint32_t)header_number(h->devminor, sizeof(h->devminor));
	if (!m->has_size)
		m->size = header_number(h->size, sizeof(h->size));
	if (!m->has_uid)
		m->uid = (uint32_t)header_number(h->uid, sizeof(h->uid));
	if (!m->has_gid)
		m->gid = (uint32_t)header_number(h->gid, sizeof(h->gid));
	if (!m->has_mtime)
		m->mtime = (struct timespec){(time_t)header_number(h->mtime, sizeof(h->mtime)), 0};
	if (!m->has_link && set_text(&m->link, &m->has_link, h->linkname,
				     strnlen(h->linkname, sizeof(h->linkname))))
		return -ENOMEM;
	if (!m->has_name && name_from_header(m, h))
		return -ENOMEM;
	size_t n = strlen(m->name);
	if (m->type == '0' && n && m->name[n - 1] == '/')
		m->type = '5'; /* how tars before POSIX marked directories */
	return 0;
}

/* NAME below BASE ("" for the root) as "BASE/a/b", without empty or "."
 * components; -EINVAL for any ".." component. */
static int member_path(const struct buf *base, const char *name, struct buf *out)
{
	int rc = buf_add(out, base->len ? base->s : "", base->len);
	while (!rc && *name) {
		size_t n = strcspn(name, "/");
		if (n == 2 && !strncmp(name, "..", 2))
			return -EINVAL;
		if (n && !(n == 1 && name[0] == '.'))
			rc = buf_printf(out, "/%.*s", (int)n, name);
		name += n + (name[n] == '/');
	}
	return rc ? rc : buf_add(out, "", 0);
}

/* Make room for a new node LEAF in PARENT: keys are replaced whole (their
 * old tags and expiry go with them), an empty directory too. */
static int clear_leaf(struct nadb_store *st, uint64_t parent, const char *leaf)
{
	struct nadb_attr a;
	int rc = nadb_lookup(st, parent, leaf, &a);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	return S_ISDIR(a.mode) ? nadb_rmdir(st, parent, leaf) : nadb_unlink(st, parent, leaf);
}

static int set_attributes(struct loader *l, uint64_t ino, const struct member *m)
{
	struct nadb_attr in = {.mode = m->mode, .uid = m->uid, .gid = m->gid,
			       .mtime = m->mtime, .atime = m->atime};
	unsigned what = NADB_SET_MTIME | (m->has_atime ? NADB_SET_ATIME : 0);
	if (m->type != '2')
		what |= NADB_SET_MODE; /* a symlink's mode means nothing */
	if (l->restore_owner)
		what |= NADB_SET_UID | NADB_SET_GID;
	struct nadb_attr out;
	return nadb_setattr(l->st, ino, &in, what, &out);
}

static const struct xattr *find_xattr(const struct member *m, const char *name)
{
	for (size_t i = 0; i < m->nx; i++)
		if (!strcmp(m->xattrs[i].name, name))
			return &m->xattrs[i];
	return NULL;
}

enum xattr_phase { PLAIN, TAGS, EXPIRY };

/* Which phase sets xattr X, or -1 to leave it: of user.nadb.*, the
 * engine's metadata, only created is kept (the rest it computes, and
 * updated and accessed are the member's mtime and atime); user.tags is the
 * whole set (user.tag.* the same tags again); user.expires is exact
 * (user.ttl the same time, rounded). */
static int xattr_phase(const struct member *m, const char *name)
{
	if (!strcmp(name, "user.nadb.created"))
		return PLAIN;
	if (!strncmp(name, "user.nadb.", 10))
		return -1;
	if (!strcmp(name, "user.tags"))
		return TAGS;
	if (!strncmp(name, "user.tag.", 9))
		return find_xattr(m, "user.tags") ? -1 : TAGS;
	if (!strcmp(name, "user.expires"))
		return EXPIRY;
	if (!strcmp(name, "user.ttl"))
		return find_xattr(m, "user.expires") ? -1 : EXPIRY;
	return PLAIN;
}

/* Set M's xattrs on INO: plain ones, then tags, then the expiry last (a
 * key that expires is no longer there to be tagged). */
static int set_xattrs(struct loader *l, uint64_t ino, const struct member *m, const char *path)
{
	int failed = 0;
	for (int phase = PLAIN; phase <= EXPIRY; phase++)
		for (size_t i = 0; i < m->nx; i++) {
			const struct xattr *x = &m->xattrs[i];
			if (xattr_phase(m, x->name) != phase)
				continue;
			int rc = nadb_setxattr(l->st, ino, x->name, x->value, x->len, 0, NULL);
			if (rc == -EOPNOTSUPP) {
				/* security.selinux and the like, on every member of
				 * some archives: not a failure, and said once */
				if (!l->said_not_kept++)
					complain("%s: %s: only user.* attributes are kept; the "
						 "others are skipped (said once)", path, x->name);
			} else if (rc) {
				complain("%s: %s: %s", path, x->name, failure_reason(rc));
				failed = rc;
			}
		}
	/* A key that had no expiry keeps none, even in a namespace whose
	 * default user.ttl gave it one when it was made. */
	if (m->type != '5' && !find_xattr(m, "user.expires") && !find_xattr(m, "user.ttl")) {
		int rc = nadb_removexattr(l->st, ino, "user.expires", NULL);
		if (rc && rc != -ENODATA)
			failed = rc;
	}
	return failed;
}

static int finish_node(struct loader *l, uint64_t ino, const struct member *m, const char *path)
{
	int rc = set_attributes(l, ino, m);
	int rc2 = set_xattrs(l, ino, m, path);
	return rc ? rc : rc2;
}

/* Has the key M describes expired already (its user.expires is past)? */
static bool already_expired(const struct loader *l, const struct member *m)
{
	const struct xattr *x = find_xattr(m, "user.expires");
	struct timespec when;
	if (!x || !parse_decimal_time(x->value, x->len, &when) || (!when.tv_sec && !when.tv_nsec))
		return false;
	return when.tv_sec < l->now.tv_sec ||
	       (when.tv_sec == l->now.tv_sec && when.tv_nsec <= l->now.tv_nsec);
}

/* FIFOs and device nodes: metadata only. */
static bool is_node(char type)
{
	return type == '3' || type == '4' || type == '6';
}

/* The file type of a special member: FIFO, character or block device. */
static uint32_t node_type(char type)
{
	return type == '3' ? S_IFCHR : type == '4' ? S_IFBLK : S_IFIFO;
}

/* Copy the member's data from the archive into F. */
static int copy_value_in(struct loader *l, struct member *m, struct nadb_file *f)
{
	while (m->consumed < m->size) {
		uint64_t left = m->size - m->consumed;
		size_t n = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
		int rc = read_archive(l, l->data, n, false);
		if (rc)
			return rc;
		ssize_t w = nadb_file_write(f, l->data, n, (off_t)m->consumed);
		m->consumed += n;
		if (w < 0)
			return (int)w;
		progress_of(&l->progress, l->offset, l->size, "load: %" PRIu64 " keys, %" PRIu64
			    " MiB", l->keys, (l->bytes + m->consumed) >> 20);
	}
	return 0;
}

/* The value goes in under a name of its own first and is renamed over
 * the key only once whole: an archive cut short, or a full disk, leaves
 * the key as it was, not gone. */
static int load_value(struct loader *l, struct member *m, const char *path)
{
	struct nadb_caller who;
	struct nadb_attr a;
	struct nadb_file *f;
	uint64_t parent;
	const char *leaf;
	char staged[64];
	snprintf(staged, sizeof(staged), ".nadb-load.%ld.%" PRIu64, (long)getpid(), l->keys);
	int rc = make_parents(l->st, path, &parent, &leaf);
	if (!rc)
		rc = nadb_mknod(l->st, parent, staged, S_IFREG | (m->mode & 07777), 0,
				caller(&who), &a);
	if (rc)
		return rc;
	rc = nadb_file_open(l->st, a.ino, NADB_OPEN_TRUNC | NADB_OPEN_WRITE, &f);
	if (!rc) {
		rc = copy_value_in(l, m, f);
		int rc2 = nadb_file_close(f);
		rc = rc ? rc : rc2;
	}
	if (!rc && (rc = nadb_rename(l->st, parent, staged, parent, leaf, 0)) == -EISDIR) {
		/* a directory in the way goes, as tar does: only now */
		rc = clear_leaf(l->st, parent, leaf);
		if (!rc)
			rc = nadb_rename(l->st, parent, staged, parent, leaf, 0);
	}
	if (rc) { /* no half-loaded key */
		nadb_unlink(l->st, parent, staged);
		return rc;
	}
	l->bytes += m->size;
	return finish_node(l, a.ino, m, path);
}

static int load_special(struct loader *l, struct member *m, const char *path)
{
	struct nadb_caller who;
	struct nadb_attr a;
	uint64_t parent;
	const char *leaf;
	int rc = make_parents(l->st, path, &parent, &leaf);
	if (!rc)
		rc = clear_leaf(l->st, parent, leaf);
	if (!rc && m->type == '2')
		rc = nadb_symlink(l->st, parent, leaf, m->link ? m->link : "", caller(&who), &a);
	else if (!rc)
		rc = nadb_mknod(l->st, parent, leaf, node_type(m->type) | (m->mode & 07777),
				makedev(m->devmajor, m->devminor), caller(&who), &a);
	return rc ? rc : finish_node(l, a.ino, m, path);
}

/* A hard link names a member loaded before it. */
static int load_hard_link(struct loader *l, struct member *m, const char *path)
{
	struct buf target = {0};
	struct nadb_attr t, made;
	uint64_t parent;
	const char *leaf;
	int rc = m->link ? member_path(&l->base, m->link, &target) : -EINVAL;
	if (!rc && !strcmp(target.s, path)) {
		buf_free(&target);
		return 0; /* a link to itself: already there */
	}
	if (!rc)
		rc = nadb_resolve(l->st, target.len ? target.s : "/", &t);
	if (!rc && S_ISDIR(t.mode))
		rc = -EPERM;
	if (!rc)
		rc = make_parents(l->st, path, &parent, &leaf);
	if (!rc)
		rc = clear_leaf(l->st, parent, leaf);
	if (!rc)
		rc = nadb_link(l->st, t.ino, parent, leaf, &made);
	if (rc == -ENOENT)
		complain("%s: hard link to %s, which is not in the store", path, m->link);
	buf_free(&target);
	return rc;
}

/* The directory at PATH, made with its parents; a key in its way goes. */
static int make_directory(struct loader *l, const char *path, struct nadb_attr *a)
{
	struct nadb_caller who;
	uint64_t parent;
	const char *leaf;
	if (!*path)
		return nadb_getattr(l->st, NADB_ROOT_INO, a);
	int rc = make_parents(l->st, path, &parent, &leaf);
	if (!rc)
		rc = nadb_lookup(l->st, parent, leaf, a);
	if (!rc && !S_ISDIR(a->mode))
		rc = clear_leaf(l->st, parent, leaf);
	if (!rc && S_ISDIR(a->mode))
		return 0;
	if (!rc || rc == -ENOENT)
		rc = nadb_mknod(l->st, parent, leaf, S_IFDIR | 0755, 0, caller(&who), a);
	l->dirs_made += !rc;
	return rc;
}

static int load_directory(struct loader *l, struct member *m, const char *path)
{
	struct nadb_attr a;
	int rc = make_directory(l, path, &a);
	if (rc)
		return rc;
	if (ARRAY_GROW(l->dirs, l->ndirs, l->capdirs))
		return -ENOMEM;
	struct deferred_dir *v = l->dirs;
	char *copy = strdup(*path ? path : "/");
	if (!copy)
		return -ENOMEM;
	v[l->ndirs++] = (struct deferred_dir){a.ino, copy, *m};
	*m = (struct member){0}; /* the deferred copy owns the strings now */
	return 0;
}

static int finish_directories(struct loader *l)
{
	int failed = 0;
	for (size_t i = l->ndirs; i-- > 0;) {
		struct deferred_dir *d = &l->dirs[i];
		/* a later member put a key where it was: its metadata went with it */
		struct nadb_attr now;
		bool still = !nadb_resolve(l->st, d->path, &now) && now.ino == d->ino;
		int rc = still ? finish_node(l, d->ino, &d->meta, d->path) : 0;
		if (rc) {
			complain("%s: %s", d->path, failure_reason(rc));
			failed = rc;
		}
		member_free(&d->meta);
		free(d->path);
	}
	free(l->dirs);
	l->dirs = NULL;
	l->ndirs = 0;
	return failed;
}

/* Put one member into the store; its failure is reported and counted, the
 * load goes on with the next member. */
static void load_member(struct loader *l, struct member *m)
{
	struct buf path = {0};
	int rc = member_path(&l->base, m->name ? m->name : "", &path);
	if (rc == -EINVAL) {
		complain("%s: refusing a member name with a '..' component", m->name);
		l->failed++;
		buf_free(&path);
		return;
	}
	if (!rc && m->type != '5' && !strcmp(path.s, l->base.s))
		rc = -EISDIR; /* only a directory may stand for the base itself */
	if (!rc && m->type == '0' && already_expired(l, m))
		l->expired++;
	else if (!rc && m->type == '0')
		rc = load_value(l, m, path.s);
	else if (!rc && m->type == '5')
		rc = load_directory(l, m, path.s);
	else if (!rc && (m->type == '2' || is_node(m->type)))
		rc = load_special(l, m, path.s);
	else if (!rc && m->type == '1')
		rc = load_hard_link(l, m, path.s);
	else if (!rc) {
		complain("%s: members of type '%c' are not stored; skipped", m->name, m->type);
		l->failed++;
	}
	l->keys += !rc && (m->type == '0' || m->type == '2' || is_node(m->type));
	l->links += !rc && m->type == '1';
	if (rc && !l->broken) {
		complain("%s: %s", path.len ? path.s : "/", failure_reason(rc));
		l->failed++;
	}
	buf_free(&path);
}

static bool is_extension(char type)
{
	return type == 'x' || type == 'g' || type == 'L' || type == 'K';
}

/* An extension member: what it says applies to the next member.  A
 * global header ('g') holds nothing this tool uses. */
static int apply_extension(struct loader *l, const struct ustar *h, struct member *m)
{
	uint64_t size = header_number(h->size, sizeof(h->size));
	char *ext = NULL;
	int rc = read_extension(l, size, &ext);
	if (!rc && h->typeflag == 'x')
		rc = parse_pax(m, ext, size) ? -EILSEQ : 0;
	else if (!rc && h->typeflag == 'L' && !m->has_name)
		rc = set_text(&m->name, &m->has_name, ext, strlen(ext));
	else if (!rc && h->typeflag == 'K' && !m->has_link)
		rc = set_text(&m->link, &m->has_link, ext, strlen(ext));
	free(ext);
	return rc;
}

/* Load the member H describes, then step over what is left of its data
 * (all of it when it failed; a directory or link has none). */
static int load_described(struct loader *l, const struct ustar *h, struct member *m)
{
	int rc = member_from_header(m, h);
	if (rc)
		return rc;
	uint64_t size = m->size;
	load_member(l, m); /* a deferred directory takes m's fields, consumed = 0 */
	return l->broken ? l->broken
			 : skip_archive(l, size - m->consumed + (BLOCK - size % BLOCK) % BLOCK);
}

/* Read members until the end-of-archive blocks.  Returns 0, 1 for empty
 * input, or a negative errno when the archive itself is unreadable:
 * -ENOEXEC not an archive, -EILSEQ damaged, -EPIPE truncated, -ENODATA
 * no end-of-archive blocks (cut at a member's end). */
static int load_archive(struct loader *l)
{
	struct ustar h;
	struct member m = {0};
	int rc = 0;
	for (bool first = true; !rc; first = false) {
		rc = read_archive(l, &h, sizeof(h), true);
		/* no end blocks: cut at a member's end (a dump that failed
		 * there, say), so what it held is not all there */
		if (rc > 0 && !first)
			rc = -ENODATA;
		if (rc || is_zero_block(&h))
			break;
		if (!header_is_valid(&h))
			rc = first ? -ENOEXEC : -EILSEQ;
		else if (is_extension(h.typeflag))
			rc = apply_extension(l, &h, &m);
		else {
			rc = load_described(l, &h, &m);
			member_free(&m);
		}
	}
	member_free(&m);
	return rc;
}

static void print_load_summary(const struct loader *l, bool json)
{
	if (json)
		printf("{\"keys\":%" PRIu64 ",\"links\":%" PRIu64 ",\"directories\":%zu"
		       ",\"directories_made\":%" PRIu64 ",\"bytes\":%" PRIu64
		       ",\"expired\":%" PRIu64 ",\"failed\":%" PRIu64 "}\n",
		       l->keys, l->links, l->ndirs, l->dirs_made, l->bytes, l->expired, l->failed);
	else
		printf("loaded %" PRIu64 " keys (%" PRIu64 " bytes), %" PRIu64 " hard links, %zu "
		       "directories (%" PRIu64 " made); %" PRIu64 " already expired, %" PRIu64
		       " failed\n",
		       l->keys, l->bytes, l->links, l->ndirs, l->dirs_made, l->expired, l->failed);
}

static int load_into(struct loader *l, bool json)
{
	int rc = load_archive(l);
	progress_end(&l->progress);
	if (rc == 1 || rc == -ENOEXEC) {
		complain("stdin is %s",
			 rc == 1 ? "empty: no archive to load" : "not a tar archive");
		finish_directories(l);
		return EXIT_USAGE;
	}
	if (rc == -EILSEQ)
		complain("the archive is damaged: a bad header before byte %" PRIu64, l->offset);
	else if (rc == -EPIPE)
		complain("the archive is truncated");
	else if (rc == -ENODATA)
		complain("the archive ends without its end-of-archive blocks: truncated at a "
			 "member's end? (what it held was loaded)");
	else if (rc)
		complain("reading the archive: %s", strerror(-rc));
	print_load_summary(l, json); /* before the deferred list is emptied */
	if (finish_directories(l))
		l->failed++;
	return rc || l->failed ? EXIT_PROBLEMS : 0;
}

int run_load(const struct cmd_args *a)
{
	if (isatty(STDIN_FILENO))
		return usage_error(a->cmd, "stdin is a terminal", "redirect it from an archive");
	struct loader l = {.in = stdin, .restore_owner = geteuid() == 0, .data = malloc(IO_CHUNK)};
	const char *base = a->n > 1 ? a->arg[1] : "/";
	const struct buf root = {0};
	int rc = l.data ? member_path(&root, base, &l.base) : -ENOMEM;
	if (rc) {
		free(l.data);
		buf_free(&l.base);
		const char *why = rc == -EINVAL ? "PATH has a '..' component" : strerror(-rc);
		return usage_error(a->cmd, why, base);
	}
	struct target t;
	int status = open_target(a, a->arg[0], false, true, &t);
	if (!status) {
		l.st = t.st;
		clock_gettime(CLOCK_REALTIME, &l.now);
		progress_start(&l.progress);
		struct stat in; /* a file has a size to measure progress by; a pipe not */
		if (!fstat(fileno(l.in), &in) && S_ISREG(in.st_mode))
			l.size = (uint64_t)in.st_size;
		status = load_into(&l, a->json);
		status = close_target(&t, status);
	}
	free(l.data);
	buf_free(&l.base);
	return status;
}
