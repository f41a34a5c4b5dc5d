/* bench.c -- run one workload ("phase") of the nadb benchmark on one directory.
 *
 * tools/bench.sh mounts nadbfs, passthrough_ll and a plain directory side by
 * side and calls this program once per phase, target and repetition, so that
 * it can remount between phases (cold reads, store sizes) and interleave the
 * targets.  This program knows nothing about FUSE: it only does what a user's
 * programs would do to a directory, times it, checks every byte it reads
 * back, and prints one machine-readable line:
 *
 *     result,PHASE,OPS,BYTES,SECONDS
 *
 * Any failed system call or wrong byte aborts the phase with one message on
 * stderr and exit status 1 (2 for bad usage).  Nothing here calls fsync
 * (we measure what cp or an editor would see) but create --fsync, the
 * fs_mark-style durable create.
 *
 * Layout: key I is DIR/kIIIIIIII, or with --dirs N > 1 DIR/dDDDDD/kIIIIIIII
 * where the keys are cut into N contiguous blocks.  Values are pseudo-random
 * (incompressible) bytes derived from the key number and a generation number,
 * so every key differs from every other and from its own earlier versions.
 *
 * Usage: bench --phase PHASE --dir DIR [options] [-- MOUNT COMMAND]   (--help)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096u
#define BLOCK_BYTES (1024u * 1024u) /* sequential I/O and dedup file size */
#define MAX_THREADS 64u
#define XATTR_NAME "user.bench"
#define XATTR_BYTES 32u
#define LARGE_NAME "large"

/* Everything the command line says; read-only once parsed. */
struct options {
	const char *phase;
	const char *dir;
	unsigned long keys;
	size_t value_size;
	unsigned threads;
	unsigned long dirs;        /* leaf directories the keys are spread over */
	unsigned generation;       /* content version written / expected */
	bool warmup;               /* run one untimed pass first */
	bool fsync;                /* create: fsync each file before its close */
	unsigned passes;           /* readdir/find: timed listings */
	unsigned long long size;   /* seqwrite: bytes of the large file */
	unsigned long ops;         /* randread/randwrite: operations */
	unsigned long copies;      /* dedup: copies of the 1 MiB file */
	double timeout;            /* mount: seconds to wait for the mount */
	char **command;            /* mount: argv after "--" */
};

/* What one phase reports. */
struct outcome {
	unsigned long long ops;
	unsigned long long bytes;
};

/* Per-thread scratch space for the per-key phases. */
struct scratch {
	char path[PATH_MAX];
	char other[PATH_MAX + 8]; /* path plus ".tmp" */
	unsigned char *expected; /* value_size bytes */
	unsigned char *actual;   /* value_size + 1 bytes */
};

struct key_pass;
typedef int (*key_action)(const struct options *o, unsigned long key,
			  struct scratch *s);

/* One run of an action over a range of keys by one thread. */
struct key_pass {
	const struct options *o;
	key_action action;
	unsigned long first, end;
	atomic_bool *stop; /* set by the first thread that fails */
	int status;
};

/* ---- small helpers ------------------------------------------------------ */

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int complain(const struct options *o, const char *what, const char *path)
{
	fprintf(stderr, "bench: %s: %s %s: %s\n", o->phase, what, path,
		strerror(errno));
	return -1;
}

static int complain_plainly(const struct options *o, const char *what,
			    const char *path)
{
	fprintf(stderr, "bench: %s: %s %s\n", o->phase, what, path);
	return -1;
}

/* splitmix64: a fast, well-mixed pseudo-random sequence from one seed. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void fill_random(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t state = seed;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t r = next_random(&state);
		memcpy(buf + i, &r, 8);
	}
	if (i < len) {
		uint64_t r = next_random(&state);
		memcpy(buf + i, &r, len - i);
	}
}

static uint64_t seed_of_key(unsigned long key, unsigned generation)
{
	return ((uint64_t)key + 1) * 0xD6E8FEB86659FD93ull ^
	       ((uint64_t)generation + 1) * 0xA0761D6478BD642Full;
}

static void value_of_key(const struct options *o, unsigned long key,
			 unsigned char *buf)
{
	fill_random(buf, o->value_size, seed_of_key(key, o->generation));
}

static unsigned long keys_per_dir(const struct options *o)
{
	return (o->keys + o->dirs - 1) / o->dirs;
}

static void path_of_dir(const struct options *o, unsigned long d, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/d%05lu", o->dir, d);
}

static void path_of_key(const struct options *o, unsigned long key, char *buf)
{
	if (o->dirs <= 1)
		snprintf(buf, PATH_MAX, "%s/k%08lu", o->dir, key);
	else
		snprintf(buf, PATH_MAX, "%s/d%05lu/k%08lu", o->dir,
			 key / keys_per_dir(o), key);
}

static int write_all(const struct options *o, int fd, const void *buf,
		     size_t len, const char *path)
{
	const unsigned char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return complain(o, "write", path);
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read until EOF or CAP bytes; returns the count or -1. */
static ssize_t read_up_to(const struct options *o, int fd, void *buf, size_t cap,
			  const char *path)
{
	unsigned char *p = buf;
	size_t got = 0;
	while (got < cap) {
		ssize_t n = read(fd, p + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return complain(o, "read", path);
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int close_checked(const struct options *o, int fd, const char *path)
{
	if (close(fd) != 0)
		return complain(o, "close", path);
	return 0;
}

static int make_dir_if_missing(const struct options *o, const char *path)
{
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		return complain(o, "mkdir", path);
	return 0;
}

/* mkdir -p */
static int make_dir_and_parents(const struct options *o, const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (make_dir_if_missing(o, buf) != 0)
			return -1;
		*p = '/';
	}
	return make_dir_if_missing(o, buf);
}

static int make_leaf_dirs(const struct options *o)
{
	char path[PATH_MAX];
	if (make_dir_and_parents(o, o->dir) != 0)
		return -1;
	for (unsigned long d = 0; o->dirs > 1 && d < o->dirs; d++) {
		path_of_dir(o, d, path);
		if (make_dir_if_missing(o, path) != 0)
			return -1;
	}
	return 0;
}

static int write_new_file(const struct options *o, const char *path,
			  const unsigned char *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return complain(o, "create", path);
	if (write_all(o, fd, buf, len, path) != 0 ||
	    (o->fsync && fsync(fd) != 0 && complain(o, "fsync", path))) {
		close(fd);
		return -1;
	}
	return close_checked(o, fd, path);
}

/* ---- per-key actions ---------------------------------------------------- */

static int create_key(const struct options *o, unsigned long key,
		      struct scratch *s)
{
	path_of_key(o, key, s->path);
	value_of_key(o, key, s->expected);
	return write_new_file(o, s->path, s->expected, o->value_size);
}

static int stat_key(const struct options *o, unsigned long key,
		    struct scratch *s)
{
	struct stat st;
	path_of_key(o, key, s->path);
	if (stat(s->path, &st) != 0)
		return complain(o, "stat", s->path);
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size != o->value_size) {
		fprintf(stderr, "bench: %s: %s: mode %o size %lld, expected a "
			"regular file of %zu bytes\n", o->phase, s->path,
			(unsigned)st.st_mode, (long long)st.st_size,
			o->value_size);
		return -1;
	}
	return 0;
}

static int read_key(const struct options *o, unsigned long key,
		    struct scratch *s)
{
	path_of_key(o, key, s->path);
	int fd = open(s->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return complain(o, "open", s->path);
	ssize_t got = read_up_to(o, fd, s->actual, o->value_size + 1, s->path);
	if (got < 0) {
		close(fd);
		return -1;
	}
	if (close_checked(o, fd, s->path) != 0)
		return -1;
	value_of_key(o, key, s->expected);
	if ((size_t)got != o->value_size ||
	    memcmp(s->actual, s->expected, o->value_size) != 0) {
		fprintf(stderr, "bench: %s: %s: read %zd bytes that are not "
			"generation %u of the key (%zu bytes)\n", o->phase,
			s->path, got, o->generation, o->value_size);
		return -1;
	}
	return 0;
}

static int overwrite_key(const struct options *o, unsigned long key,
			 struct scratch *s)
{
	path_of_key(o, key, s->path);
	value_of_key(o, key, s->expected);
	int fd = open(s->path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return complain(o, "open O_TRUNC", s->path);
	if (write_all(o, fd, s->expected, o->value_size, s->path) != 0) {
		close(fd);
		return -1;
	}
	return close_checked(o, fd, s->path);
}

/* What editors do: write a temporary file, then rename it onto the key. */
static int rename_over_key(const struct options *o, unsigned long key,
			   struct scratch *s)
{
	path_of_key(o, key, s->path);
	snprintf(s->other, sizeof s->other, "%s.tmp", s->path);
	value_of_key(o, key, s->expected);
	if (write_new_file(o, s->other, s->expected, o->value_size) != 0)
		return -1;
	if (rename(s->other, s->path) != 0)
		return complain(o, "rename onto", s->path);
	return 0;
}

static void xattr_of_key(unsigned long key, unsigned char *buf)
{
	fill_random(buf, XATTR_BYTES, seed_of_key(key, 0xA77Au));
}

static int setxattr_key(const struct options *o, unsigned long key,
			struct scratch *s)
{
	path_of_key(o, key, s->path);
	xattr_of_key(key, s->expected);
	if (setxattr(s->path, XATTR_NAME, s->expected, XATTR_BYTES, 0) != 0)
		return complain(o, "setxattr " XATTR_NAME, s->path);
	return 0;
}

static int getxattr_key(const struct options *o, unsigned long key,
			struct scratch *s)
{
	path_of_key(o, key, s->path);
	xattr_of_key(key, s->expected);
	ssize_t n = getxattr(s->path, XATTR_NAME, s->actual, XATTR_BYTES + 1);
	if (n < 0)
		return complain(o, "getxattr " XATTR_NAME, s->path);
	if (n != XATTR_BYTES || memcmp(s->actual, s->expected, XATTR_BYTES))
		return complain_plainly(o, "wrong " XATTR_NAME " value on",
					s->path);
	return 0;
}

static int unlink_key(const struct options *o, unsigned long key,
		      struct scratch *s)
{
	path_of_key(o, key, s->path);
	if (unlink(s->path) != 0)
		return complain(o, "unlink", s->path);
	return 0;
}

/* ---- running an action over all keys with threads ----------------------- */

static void *run_key_range(void *arg)
{
	struct key_pass *p = arg;
	struct scratch s;
	size_t cap = p->o->value_size > XATTR_BYTES ? p->o->value_size
						     : XATTR_BYTES;
	s.expected = malloc(cap);
	s.actual = malloc(cap + 1);
	if (!s.expected || !s.actual) {
		fprintf(stderr, "bench: %s: out of memory\n", p->o->phase);
		p->status = -1;
	}
	for (unsigned long k = p->first; p->status == 0 && k < p->end; k++) {
		if (atomic_load_explicit(p->stop, memory_order_relaxed))
			break;
		if (p->action(p->o, k, &s) != 0) {
			p->status = -1;
			atomic_store(p->stop, true);
		}
	}
	free(s.expected);
	free(s.actual);
	return NULL;
}

/* Run ACTION on every key, the keys cut into one contiguous block per
 * thread; 0 when every call succeeded. */
static int run_on_all_keys(const struct options *o, key_action action)
{
	pthread_t tid[MAX_THREADS];
	struct key_pass pass[MAX_THREADS];
	atomic_bool stop = false;
	unsigned n = o->threads;
	unsigned started = 0;
	int status = 0;

	for (unsigned t = 0; t < n; t++) {
		pass[t] = (struct key_pass){
			.o = o, .action = action, .stop = &stop,
			.first = o->keys * t / n, .end = o->keys * (t + 1) / n,
		};
		if (n == 1) {
			run_key_range(&pass[t]);
			return pass[t].status;
		}
		int e = pthread_create(&tid[t], NULL, run_key_range, &pass[t]);
		if (e != 0) {
			errno = e;
			complain(o, "pthread_create", "");
			atomic_store(&stop, true);
			status = -1;
			break;
		}
		started++;
	}
	for (unsigned t = 0; t < started; t++) {
		pthread_join(tid[t], NULL);
		if (pass[t].status != 0)
			status = -1;
	}
	return status;
}

/* ---- directory listings ------------------------------------------------- */

static int count_entries(const struct options *o, const char *path,
			 unsigned long long *count)
{
	DIR *d = opendir(path);
	if (!d)
		return complain(o, "opendir", path);
	*count = 0;
	for (;;) {
		errno = 0;
		struct dirent *e = readdir(d);
		if (!e)
			break;
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			(*count)++;
	}
	if (errno != 0) {
		complain(o, "readdir", path);
		closedir(d);
		return -1;
	}
	closedir(d);
	return 0;
}

static int list_dir_once(const struct options *o)
{
	unsigned long long count;
	unsigned long long expected = o->dirs > 1 ? o->dirs : o->keys;
	if (count_entries(o, o->dir, &count) != 0)
		return -1;
	if (count != expected) {
		fprintf(stderr, "bench: %s: %s lists %llu entries, expected %llu\n",
			o->phase, o->dir, count, expected);
		return -1;
	}
	return 0;
}

/* Run find(1) on DIR and count the lines it prints. */
static int run_find(const struct options *o, unsigned long long *lines)
{
	int pipefd[2];
	if (pipe(pipefd) != 0)
		return complain(o, "pipe", "");
	pid_t pid = fork();
	if (pid < 0)
		return complain(o, "fork", "find");
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		close(pipefd[0]);
		close(pipefd[1]);
		execlp("find", "find", o->dir, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	char buf[65536];
	ssize_t n;
	*lines = 0;
	while ((n = read(pipefd[0], buf, sizeof buf)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			*lines += buf[i] == '\n';
	}
	close(pipefd[0]);
	int wstatus;
	if (waitpid(pid, &wstatus, 0) < 0)
		return complain(o, "waitpid", "find");
	if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)
		return complain_plainly(o, "find failed on", o->dir);
	return 0;
}

static int find_tree_once(const struct options *o)
{
	unsigned long long lines;
	unsigned long long expected = 1 + o->keys + (o->dirs > 1 ? o->dirs : 0);
	if (run_find(o, &lines) != 0)
		return -1;
	if (lines != expected) {
		fprintf(stderr, "bench: %s: find %s printed %llu names, "
			"expected %llu\n", o->phase, o->dir, lines, expected);
		return -1;
	}
	return 0;
}

/* ---- the large file ----------------------------------------------------- */

/* A page of the large file: 8 bytes of page number, 8 of generation, then
 * a pseudo-random body that differs page to page (BODY is BLOCK_BYTES of
 * random bytes, rotated by the page number). */
static void page_of_large(unsigned char *page, uint64_t number, uint64_t gen,
			  const unsigned char *body)
{
	size_t shift = (size_t)(number * 8 % (BLOCK_BYTES - PAGE_BYTES));
	memcpy(page, body + shift, PAGE_BYTES);
	memcpy(page, &number, 8);
	memcpy(page + 8, &gen, 8);
}

static int check_page_of_large(const struct options *o, const unsigned char *page,
			       uint64_t number, const char *path)
{
	uint64_t found;
	memcpy(&found, page, 8);
	if (found == number)
		return 0;
	fprintf(stderr, "bench: %s: %s: page %llu holds page %llu's header\n",
		o->phase, path, (unsigned long long)number,
		(unsigned long long)found);
	return -1;
}

static void path_of_large(const struct options *o, char *buf)
{
	snprintf(buf, PATH_MAX, "%s/" LARGE_NAME, o->dir);
}

static int write_large(const struct options *o, struct outcome *out)
{
	char path[PATH_MAX];
	unsigned char *body = malloc(BLOCK_BYTES), *block = malloc(BLOCK_BYTES);
	int status = -1;
	int fd = -1;
	if (!body || !block)
		goto done;
	fill_random(body, BLOCK_BYTES, 0x1A26Eull);
	path_of_large(o, path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		complain(o, "create", path);
		goto done;
	}
	uint64_t pages_per_block = BLOCK_BYTES / PAGE_BYTES;
	for (uint64_t b = 0; b * BLOCK_BYTES < o->size; b++) {
		for (uint64_t p = 0; p < pages_per_block; p++)
			page_of_large(block + p * PAGE_BYTES,
				      b * pages_per_block + p, o->generation, body);
		if (write_all(o, fd, block, BLOCK_BYTES, path) != 0)
			goto done;
		out->ops++;
		out->bytes += BLOCK_BYTES;
	}
	status = close_checked(o, fd, path);
	fd = -1;
done:
	if (fd >= 0)
		close(fd);
	free(body);
	free(block);
	return status;
}

static int open_large(const struct options *o, int flags, char *path,
		      unsigned long long *pages)
{
	struct stat st;
	path_of_large(o, path);
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return complain(o, "open", path);
	if (fstat(fd, &st) != 0) {
		complain(o, "fstat", path);
		close(fd);
		return -1;
	}
	*pages = (unsigned long long)st.st_size / PAGE_BYTES;
	if (*pages == 0) {
		complain_plainly(o, "no pages in", path);
		close(fd);
		return -1;
	}
	return fd;
}

static int read_large(const struct options *o, struct outcome *out)
{
	char path[PATH_MAX];
	unsigned long long pages;
	unsigned char *block = malloc(BLOCK_BYTES);
	int status = -1;
	int fd = block ? open_large(o, O_RDONLY, path, &pages) : -1;
	if (fd < 0)
		goto done;
	for (uint64_t page = 0;;) {
		ssize_t got = read_up_to(o, fd, block, BLOCK_BYTES, path);
		if (got < 0)
			goto done;
		if (got == 0)
			break;
		for (size_t at = 0; at + PAGE_BYTES <= (size_t)got; at += PAGE_BYTES)
			if (check_page_of_large(o, block + at, page++, path) != 0)
				goto done;
		out->ops++;
		out->bytes += (unsigned long long)got;
	}
	if (out->bytes != pages * PAGE_BYTES) {
		complain_plainly(o, "read fewer bytes than the size of", path);
		goto done;
	}
	status = 0;
done:
	if (fd >= 0 && close_checked(o, fd, path) != 0)
		status = -1;
	free(block);
	return status;
}

static int random_io_large(const struct options *o, bool writing,
			   struct outcome *out)
{
	char path[PATH_MAX];
	unsigned long long pages;
	unsigned char page[PAGE_BYTES];
	unsigned char *body = malloc(BLOCK_BYTES);
	uint64_t state = writing ? 0x3A11u : 0x5EEDu;
	int status = -1;
	int fd = body ? open_large(o, writing ? O_RDWR : O_RDONLY, path, &pages)
		      : -1;
	if (fd < 0)
		goto done;
	fill_random(body, BLOCK_BYTES, 0xB0D1ull);
	for (unsigned long i = 0; i < o->ops; i++) {
		uint64_t number = next_random(&state) % pages;
		off_t at = (off_t)(number * PAGE_BYTES);
		ssize_t n;
		if (writing) {
			page_of_large(page, number, o->generation, body);
			n = pwrite(fd, page, PAGE_BYTES, at);
		} else {
			n = pread(fd, page, PAGE_BYTES, at);
		}
		if (n != (ssize_t)PAGE_BYTES) {
			if (n >= 0)
				errno = EIO;
			complain(o, writing ? "pwrite" : "pread", path);
			goto done;
		}
		if (!writing && check_page_of_large(o, page, number, path) != 0)
			goto done;
		out->ops++;
		out->bytes += PAGE_BYTES;
	}
	status = 0;
done:
	/* the close is timed: that is where a store commits what was written */
	if (fd >= 0 && close_checked(o, fd, path) != 0)
		status = -1;
	free(body);
	return status;
}

/* ---- dedup: many copies of one file, as cp would make them -------------- */

static int copy_file(const struct options *o, const char *from, const char *to,
		     unsigned char *buf)
{
	int in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return complain(o, "open", from);
	ssize_t got = read_up_to(o, in, buf, BLOCK_BYTES + 1, from);
	if (close_checked(o, in, from) != 0 || got < 0)
		return -1;
	if (got != (ssize_t)BLOCK_BYTES)
		return complain_plainly(o, "wrong size of", from);
	return write_new_file(o, to, buf, (size_t)got);
}

static int copy_many(const struct options *o, struct outcome *out)
{
	char from[PATH_MAX], to[PATH_MAX];
	unsigned char *buf = malloc(BLOCK_BYTES + 1);
	int status = -1;
	if (!buf)
		goto done;
	snprintf(from, sizeof from, "%s/original", o->dir);
	for (unsigned long i = 0; i < o->copies; i++) {
		snprintf(to, sizeof to, "%s/copy%06lu", o->dir, i);
		if (copy_file(o, from, to, buf) != 0)
			goto done;
		out->ops++;
		out->bytes += BLOCK_BYTES;
	}
	status = 0;
done:
	free(buf);
	return status;
}

static int make_original(const struct options *o)
{
	char path[PATH_MAX];
	unsigned char *buf = malloc(BLOCK_BYTES);
	int status = -1;
	if (buf && make_dir_and_parents(o, o->dir) == 0) {
		fill_random(buf, BLOCK_BYTES, 0xDED0Full);
		snprintf(path, sizeof path, "%s/original", o->dir);
		status = write_new_file(o, path, buf, BLOCK_BYTES);
	}
	free(buf);
	return status;
}

/* ---- mount: how long until a freshly started daemon answers ------------- */

static bool is_mount_point(const char *dir)
{
	char parent[PATH_MAX];
	struct stat a, b;
	snprintf(parent, sizeof parent, "%s/..", dir);
	return stat(dir, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

static void sleep_briefly(void)
{
	struct timespec ts = {0, 200 * 1000};
	nanosleep(&ts, NULL);
}

/* Start the command, then poll until DIR is a mount point whose root can be
 * listed.  The command may stay in the foreground or daemonize. */
static int start_and_wait_for_mount(const struct options *o)
{
	unsigned long long entries;
	bool command_running = true;
	if (is_mount_point(o->dir))
		return complain_plainly(o, "already a mount point:", o->dir);
	double deadline = now_seconds() + o->timeout;
	pid_t pid = fork();
	if (pid < 0)
		return complain(o, "fork", o->command[0]);
	if (pid == 0) {
		/* the daemon must not hold our stdout: the caller reads it to EOF */
		dup2(STDERR_FILENO, STDOUT_FILENO);
		execvp(o->command[0], o->command);
		fprintf(stderr, "bench: mount: exec %s: %s\n", o->command[0],
			strerror(errno));
		_exit(127);
	}
	while (!is_mount_point(o->dir)) {
		int wstatus;
		if (command_running && waitpid(pid, &wstatus, WNOHANG) == pid) {
			command_running = false;
			if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
				fprintf(stderr, "bench: mount: %s exited with "
					"status %d before %s was mounted\n",
					o->command[0], WIFEXITED(wstatus) ?
					WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus),
					o->dir);
				return -1;
			}
		}
		if (now_seconds() > deadline)
			return complain_plainly(o, "timed out waiting to mount",
						o->dir);
		sleep_briefly();
	}
	return count_entries(o, o->dir, &entries);
}

/* ---- phases ------------------------------------------------------------- */

static int count_keys(const struct options *o, struct outcome *out)
{
	out->ops = o->keys;
	out->bytes = (unsigned long long)o->keys * o->value_size;
	return 0;
}

static int phase_of_keys(const struct options *o, key_action action,
			 struct outcome *out, double *t0)
{
	if (o->warmup && run_on_all_keys(o, action) != 0)
		return -1;
	*t0 = now_seconds();
	if (run_on_all_keys(o, action) != 0)
		return -1;
	return count_keys(o, out);
}

static int remove_leaf_dirs(const struct options *o)
{
	char path[PATH_MAX];
	for (unsigned long d = 0; o->dirs > 1 && d < o->dirs; d++) {
		path_of_dir(o, d, path);
		if (rmdir(path) != 0)
			return complain(o, "rmdir", path);
	}
	if (rmdir(o->dir) != 0)
		return complain(o, "rmdir", o->dir);
	return 0;
}

/* Run the phase; *t0 is set just before the timed part starts (setup such
 * as making directories is not timed), the caller reads the clock after. */
static int run_phase(const struct options *o, struct outcome *out, double *t0)
{
	const char *p = o->phase;
	*t0 = now_seconds();
	if (!strcmp(p, "create")) {
		if (make_leaf_dirs(o) != 0)
			return -1;
		*t0 = now_seconds();
		if (run_on_all_keys(o, create_key) != 0)
			return -1;
		return count_keys(o, out);
	}
	if (!strcmp(p, "stat"))
		return phase_of_keys(o, stat_key, out, t0);
	if (!strcmp(p, "read"))
		return phase_of_keys(o, read_key, out, t0);
	if (!strcmp(p, "overwrite"))
		return phase_of_keys(o, overwrite_key, out, t0);
	if (!strcmp(p, "rename"))
		return phase_of_keys(o, rename_over_key, out, t0);
	if (!strcmp(p, "setxattr"))
		return phase_of_keys(o, setxattr_key, out, t0);
	if (!strcmp(p, "getxattr"))
		return phase_of_keys(o, getxattr_key, out, t0);
	if (!strcmp(p, "unlink")) {
		if (phase_of_keys(o, unlink_key, out, t0) != 0)
			return -1;
		return remove_leaf_dirs(o);
	}
	if (!strcmp(p, "readdir") || !strcmp(p, "find")) {
		int (*once)(const struct options *) =
			p[0] == 'r' ? list_dir_once : find_tree_once;
		if (o->warmup && once(o) != 0)
			return -1;
		*t0 = now_seconds();
		for (unsigned i = 0; i < o->passes; i++)
			if (once(o) != 0)
				return -1;
		out->ops = (unsigned long long)o->keys * o->passes;
		return 0;
	}
	if (!strcmp(p, "seqwrite")) {
		if (make_dir_and_parents(o, o->dir) != 0)
			return -1;
		*t0 = now_seconds();
		return write_large(o, out);
	}
	if (!strcmp(p, "seqread"))
		return read_large(o, out);
	if (!strcmp(p, "randread") || !strcmp(p, "randwrite"))
		return random_io_large(o, p[4] == 'w', out);
	if (!strcmp(p, "dedup")) {
		if (make_original(o) != 0)
			return -1;
		*t0 = now_seconds();
		return copy_many(o, out);
	}
	if (!strcmp(p, "mount")) {
		out->ops = 1;
		return start_and_wait_for_mount(o);
	}
	return complain_plainly(o, "unknown phase", "");
}

/* ---- command line ------------------------------------------------------- */

static void usage(FILE *to)
{
	fputs("usage: bench --phase PHASE --dir DIR [options] [-- MOUNT COMMAND]\n"
	      "phases (keys: DIR/kNNNNNNNN, or DIR/dNNNNN/kNNNNNNNN with --dirs):\n"
	      "  create stat read overwrite rename setxattr getxattr unlink\n"
	      "  readdir   one listing of DIR      find   find(1) over DIR\n"
	      "  seqwrite seqread randread randwrite   DIR/large, --size bytes\n"
	      "  dedup     --copies copies of one 1 MiB file, as cp makes them\n"
	      "  mount     run MOUNT COMMAND, time until DIR is mounted and listed\n"
	      "options:\n"
	      "  --keys N          keys (default 1000)\n"
	      "  --value-size N    bytes per value (default 4096)\n"
	      "  --threads N       threads for per-key phases (default 1)\n"
	      "  --dirs N          spread keys over N subdirectories (default 1)\n"
	      "  --generation N    content version to write or expect (default 0)\n"
	      "  --warmup          run the pass once untimed first\n"
	      "  --fsync           create: fsync each file before closing it\n"
	      "  --passes N        readdir, find: timed listings (default 1)\n"
	      "  --size N[KMG]     large file size for seqwrite (default 256M)\n"
	      "  --ops N           random I/O operations (default 10000)\n"
	      "  --copies N        dedup copies (default 1000)\n"
	      "  --timeout S       mount: give up after S seconds (default 30)\n"
	      "prints: result,PHASE,OPS,BYTES,SECONDS\n", to);
}

static int parse_number(const char *text, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	unsigned long long unit = 1;
	if (errno || end == text || text[0] == '-')
		return -1;
	switch (*end) {
	case 'K': case 'k': unit = 1ull << 10; end++; break;
	case 'M': case 'm': unit = 1ull << 20; end++; break;
	case 'G': case 'g': unit = 1ull << 30; end++; break;
	default: break;
	}
	if (*end != '\0' || v > ULLONG_MAX / unit)
		return -1;
	*out = v * unit;
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{"phase", required_argument, NULL, 'p'},
		{"dir", required_argument, NULL, 'd'},
		{"keys", required_argument, NULL, 'k'},
		{"value-size", required_argument, NULL, 'v'},
		{"threads", required_argument, NULL, 't'},
		{"dirs", required_argument, NULL, 'D'},
		{"generation", required_argument, NULL, 'g'},
		{"warmup", no_argument, NULL, 'w'},
		{"fsync", no_argument, NULL, 'f'},
		{"passes", required_argument, NULL, 'P'},
		{"size", required_argument, NULL, 's'},
		{"ops", required_argument, NULL, 'o'},
		{"copies", required_argument, NULL, 'c'},
		{"timeout", required_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	*o = (struct options){
		.keys = 1000, .value_size = 4096, .threads = 1, .dirs = 1,
		.passes = 1, .size = 256ull << 20, .ops = 10000, .copies = 1000,
		.timeout = 30,
	};
	int c;
	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		unsigned long long n = 0;
		if (strchr("kvtDgPsocT", c) && parse_number(optarg, &n) != 0) {
			fprintf(stderr, "bench: not a number: %s\n", optarg);
			return -1;
		}
		switch (c) {
		case 'p': o->phase = optarg; break;
		case 'd': o->dir = optarg; break;
		case 'k': o->keys = (unsigned long)n; break;
		case 'v': o->value_size = (size_t)n; break;
		case 't': o->threads = (unsigned)n; break;
		case 'D': o->dirs = (unsigned long)n; break;
		case 'g': o->generation = (unsigned)n; break;
		case 'w': o->warmup = true; break;
		case 'f': o->fsync = true; break;
		case 'P': o->passes = (unsigned)n; break;
		case 's': o->size = n; break;
		case 'o': o->ops = (unsigned long)n; break;
		case 'c': o->copies = (unsigned long)n; break;
		case 'T': o->timeout = (double)n; break;
		case 'h': usage(stdout); exit(0);
		default: return -1;
		}
	}
	o->command = argv + optind;
	if (!o->phase || !o->dir) {
		fprintf(stderr, "bench: --phase and --dir are required\n");
		return -1;
	}
	if (o->threads < 1 || o->threads > MAX_THREADS || o->dirs < 1 ||
	    o->value_size < 1 || o->keys < 1 || o->passes < 1 ||
	    o->size < BLOCK_BYTES) {
		fprintf(stderr, "bench: need 1 <= threads <= %u, dirs, keys, "
			"passes, value size >= 1, size >= 1M\n", MAX_THREADS);
		return -1;
	}
	if (!strcmp(o->phase, "mount") && !o->command[0]) {
		fprintf(stderr, "bench: mount needs a command after --\n");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct outcome out = {0, 0};
	double t0;
	if (parse_options(argc, argv, &o) != 0) {
		usage(stderr);
		return 2;
	}
	int status = run_phase(&o, &out, &t0);
	double seconds = now_seconds() - t0;
	if (status != 0)
		return 1;
	printf("result,%s,%llu,%llu,%.6f\n", o.phase, out.ops, out.bytes,
	       seconds);
	return 0;
}
