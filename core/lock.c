/* lock.c -- one process at a time per store, and waiting for one that is
 * going away.
 *
 * A store in a directory is locked by flock on STORE/lock; a store on
 * Redis by its lock key (SET NX PX, kept alive by a thread of ours, see
 * redis.h).  Either way the lock carries a text that says who holds it:
 *     PID
 *     STATE          "" (a tool), "mount MNT" (a daemon serving MNT) or
 *                    "closing" (finishing its last commit)
 *     host HOSTNAME
 * fusermount3 -u returns as soon as the kernel has let go of the mount,
 * before the daemon has even noticed; its last commit comes after.  So a
 * process that finds the store locked by one that is going away -- it
 * says so, or it is a daemon on this host whose mount is gone -- waits for
 * it, up to LOCK_WAIT_S, and `fusermount3 -u mnt && nadb fsck store` just
 * works.  A holder at work (a tool, a daemon whose mount is up, a daemon
 * on another host) gets -EBUSY at once.
 */
#include "clock.h"
#include "log.h"
#include "redis.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <mntent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define LOCK_WAIT_S 60        /* longest wait for a holder that is going away */
#define LOCK_POLL_MS 10       /* how often the lock is tried meanwhile */
/* ms: how long a flock holder's text may take to read the same twice
 * (between its flock and its first write it is empty, and a read during a
 * rewrite may be torn). */
#define UNSAID_HOLDER_WAIT_MS 1000
#define REDIS_LOCK_TTL_MS 10000 /* ms: a Redis lock outlives a dead daemon this long */
#define LOCK_REFRESH_MS 1000    /* ms: how often the keeper renews it */
/* ms: the holder stops changing the store this long before its lock could
 * expire (its lease ends): room for a sync already sent to land first. */
#define LEASE_MARGIN_MS 2000
#define LEASE_WAIT_MS 3000 /* ms: a change waits this long for a lapsed lease */
#define LOCK_TEXT_MAX 4400

/* The Redis lock: its connection and the thread keeping it alive. */
struct redis_lock {
	struct redis_conn *conn;
	/* lock: scope is conn and text (the keeper and note_holder share
	 * them) and stop. */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	char text[LOCK_TEXT_MAX];
	bool stop, keeper_running;
	pthread_t keeper;
	/* The writer's metadata backend, whose session (backend.h, beat) the
	 * keeper keeps alive with the lock; NULL: none yet, or closing. */
	struct kv *beat_kv;
	/* The lease: until when (monotonic_ms) we may change the store, i.e.
	 * when the last take or renewal Redis confirmed was sent, plus
	 * REDIS_LOCK_TTL_MS - LEASE_MARGIN_MS.  Nobody else can take the lock
	 * before it expires on the server, later than that.  lapsed: the
	 * lease ran out and that was said; a renewal clears it. */
	_Atomic uint64_t lease_end;
	atomic_bool lapsed;
};

struct holder {
	uint32_t session; /* its session (backend.h); 0: not said */
	char pid[32];
	char mount[4096]; /* "": not a daemon */
	char host[256];   /* "": not said (an older nadb) */
	char pidns[40];   /* its pid namespace; "": not said (an older nadb) */
	bool closing;
};

/* What a lock text says about its holder. */
static void parse_holder(const char *text, struct holder *h)
{
	*h = (struct holder){0};
	size_t n = strcspn(text, "\n");
	snprintf(h->pid, sizeof(h->pid), "%.*s", (int)(n < 20 ? n : 20), n ? text : "?");
	for (const char *line = text + n; *line; line += strcspn(line, "\n")) {
		line += *line == '\n';
		int len = (int)strcspn(line, "\n");
		if (!strncmp(line, "closing", 7))
			h->closing = true;
		else if (!strncmp(line, "mount ", 6))
			snprintf(h->mount, sizeof(h->mount), "%.*s", len - 6, line + 6);
		else if (!strncmp(line, "host ", 5))
			snprintf(h->host, sizeof(h->host), "%.*s", len - 5, line + 5);
		else if (!strncmp(line, "pidns ", 6))
			snprintf(h->pidns, sizeof(h->pidns), "%.*s", len - 6, line + 6);
		else if (!strncmp(line, "session ", 8))
			h->session = (uint32_t)strtoul(line + 8, NULL, 10);
	}
}

/* Our pid namespace, as /proc/self/ns/pid names it ("" if unknown). */
static void our_pidns(char *buf, size_t size)
{
	ssize_t n = readlink("/proc/self/ns/pid", buf, size - 1);
	buf[n > 0 ? n : 0] = '\0';
}

/* st->lock_self: "pidns NS\ntoken HEX\n". */
static void make_lock_self(struct nadb_store *st)
{
	char ns[40];
	unsigned char raw[16] = {0};
	our_pidns(ns, sizeof(ns));
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		/* no entropy source: time and pid still tell processes apart */
		uint64_t t = monotonic_ns() ^ ((uint64_t)getpid() << 32);
		memcpy(raw, &t, sizeof(t));
	}
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	snprintf(st->lock_self, sizeof(st->lock_self), "pidns %s\ntoken %s\n", ns, hex);
}

static void our_host(char *host, size_t size)
{
	if (gethostname(host, size))
		snprintf(host, size, "?");
	host[size - 1] = '\0';
}

/* Is an nadbfs serving STORE (its name, nadb_store_name) mounted on MNT? */
static bool still_mounted(const char *store, const char *mnt)
{
	FILE *f = setmntent("/proc/self/mounts", "r");
	bool found = !f; /* cannot tell: take the holder at its word */
	struct mntent *m;
	while (f && !found && (m = getmntent(f)))
		found = !strcmp(m->mnt_type, "fuse.nadbfs") && !strcmp(m->mnt_dir, mnt) &&
			!strncmp(m->mnt_fsname, "nadb:", 5) && !strcmp(m->mnt_fsname + 5, store);
	if (f)
		endmntent(f);
	return found;
}

static bool going_away(const char *store, const struct holder *h)
{
	char host[256];
	our_host(host, sizeof(host));
	if (h->closing)
		return true;
	/* Another host's mounts are not in our table. */
	return h->mount[0] && (!h->host[0] || !strcmp(h->host, host)) &&
	       !still_mounted(store, h->mount);
}

/* ---- the two kinds of lock: try, read the holder's text, write ours ---- */

static int file_try(struct nadb_store *st)
{
	return flock(st->lock_fd, LOCK_EX | LOCK_NB) ? -errno : 0;
}

static void file_holder(struct nadb_store *st, char *text, size_t size)
{
	ssize_t n = pread(st->lock_fd, text, size - 1, 0);
	text[n > 0 ? n : 0] = '\0';
}

/* The new text over the old, then cut to its length: a reader never finds
 * the file empty (one that did took the holder for a process at work; the
 * "closing" written after fusermount3 -u is read by exactly the tool that
 * waits for it). */
static int file_write(struct nadb_store *st, const char *text)
{
	size_t n = strlen(text);
	if (pwrite(st->lock_fd, text, n, 0) != (ssize_t)n || ftruncate(st->lock_fd, (off_t)n)) {
		nadb_log("%s/lock: cannot record who holds the store: %s", st->dir,
			 strerror(errno));
		return -errno;
	}
	return 0;
}

/* The lock Redis confirmed, sent at SENT_MS: the lease runs on (unless
 * the confirmation took so long that it is over anyway). */
static void extend_lease(struct nadb_store *st, uint64_t sent_ms)
{
	struct redis_lock *r = st->rlock;
	uint64_t end = sent_ms + REDIS_LOCK_TTL_MS - LEASE_MARGIN_MS;
	if (end <= monotonic_ms())
		return;
	if (end > atomic_load(&r->lease_end)) /* only the keeper writes it after open */
		atomic_store(&r->lease_end, end);
	if (atomic_exchange(&r->lapsed, false))
		nadb_log("%s: Redis confirmed the store lock again: changes are accepted "
			 "again", st->dir);
}

static int redis_try(struct nadb_store *st)
{
	uint64_t sent = monotonic_ms();
	int rc = redis_store_lock_try(st->rlock->conn, st->rlock->text, REDIS_LOCK_TTL_MS);
	if (rc == 0)
		extend_lease(st, sent);
	return rc == -EBUSY ? -EWOULDBLOCK : rc;
}

int lock_lease_check(struct nadb_store *st)
{
	struct redis_lock *r = st->rlock;
	if (!r || monotonic_ms() < atomic_load(&r->lease_end))
		return 0;
	/* Redis back after a restart: the keeper renews within a pause of
	 * its reconnect loop; a change waits for that rather than fail. */
	pthread_cond_signal(&r->wake); /* renew now, not at the next tick */
	for (uint64_t t0 = monotonic_ms();
	     monotonic_ms() - t0 < LEASE_WAIT_MS && !atomic_load(&st->lock_lost);) {
		redis_pause_ms(LOCK_POLL_MS);
		if (monotonic_ms() < atomic_load(&r->lease_end))
			return 0;
	}
	if (!atomic_exchange(&r->lapsed, true))
		nadb_log("%s: the store's lease lapsed: Redis has not confirmed our lock "
			 "for %u ms (another daemon could take the store over): refusing "
			 "to change anything until it does", st->dir,
			 REDIS_LOCK_TTL_MS - LEASE_MARGIN_MS);
	return -EIO;
}

static void redis_holder(struct nadb_store *st, char *text, size_t size)
{
	if (redis_store_lock_holder(st->rlock->conn, text, size))
		text[0] = '\0';
}

/* Under rlock->lock. */
static int redis_write(struct nadb_store *st, const char *text)
{
	struct redis_lock *r = st->rlock;
	int rc = redis_store_lock_retext(r->conn, r->text, text, REDIS_LOCK_TTL_MS);
	if (rc == 0)
		snprintf(r->text, sizeof(r->text), "%s", text);
	else if (rc == -ENOLCK)
		store_lose_lock(st, "it says another daemon holds it");
	return rc;
}

/* A Redis lock whose holder is a process of this host that is gone (killed
 * -9: nobody released it) is stale: let go of it, if it still says TEXT,
 * rather than wait for it to expire.  (A flock goes with its process.)
 * Only a holder in our pid namespace can be told gone by its pid: a
 * container sharing our hostname has pids of its own. */
static bool drop_if_stale(struct nadb_store *st, const char *text, const struct holder *h)
{
	char host[256], pidns[40];
	our_host(host, sizeof(host));
	our_pidns(pidns, sizeof(pidns));
	pid_t pid = (pid_t)atoi(h->pid);
	if (!st->rlock || !h->host[0] || strcmp(h->host, host) || !pidns[0] ||
	    strcmp(h->pidns, pidns) || pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH)
		return false;
	nadb_log("%s: the lock of pid %s, which is gone, is taken over", st->dir, h->pid);
	if (redis_store_lock_release(st->rlock->conn, text))
		return false;
	/* its session goes with it: what it left is settled at our open */
	if (h->session)
		(void)redis_session_end(st->rlock->conn, h->session);
	return true;
}

/* Take the lock, waiting while its holder is going away. */
static int lock_or_wait(struct nadb_store *st)
{
	bool redis = st->rlock != NULL;
	int rc = redis ? redis_try(st) : file_try(st);
	char text[LOCK_TEXT_MAX], last[LOCK_TEXT_MAX] = "";
	struct holder h;
	bool said = false;
	uint64_t start = monotonic_ms();
	while (rc == -EWOULDBLOCK) {
		if (redis)
			redis_holder(st, text, sizeof(text));
		else
			file_holder(st, text, sizeof(text));
		parse_holder(text, &h);
		uint64_t waited_ms = monotonic_ms() - start;
		bool waited_enough = waited_ms >= LOCK_WAIT_S * 1000u;
		if (redis && !waited_enough && (!text[0] || drop_if_stale(st, text, &h))) {
			/* let go of just now, or its holder is gone: again at once */
			rc = redis_try(st);
			continue;
		}
		/* A file's text may be read while its holder rewrites it (a
		 * read is not atomic against a write), or before it wrote one
		 * (flocked, still empty): a holder at work is believed only
		 * when two reads a poll apart agree. */
		bool away = going_away(st->dir, &h);
		bool settled = redis || (text[0] && !strcmp(text, last));
		if (!settled && !away && waited_ms < UNSAID_HOLDER_WAIT_MS) {
			snprintf(last, sizeof(last), "%s", text);
			nanosleep(&(struct timespec){0, LOCK_POLL_MS * 1000000L}, NULL);
			rc = file_try(st);
			continue;
		}
		if (!away || waited_enough) {
			nadb_log("%s: store is in use by another process (pid %s%s%s%s%s)",
				 st->dir, h.pid, h.host[0] ? " on " : "", h.host,
				 h.mount[0] ? ", serving " : "", h.mount);
			return -EBUSY;
		}
		if (!said)
			nadb_log("%s: waiting for pid %s to finish closing the store", st->dir,
				 h.pid);
		said = true;
		nanosleep(&(struct timespec){0, LOCK_POLL_MS * 1000000L}, NULL);
		rc = redis ? redis_try(st) : file_try(st);
	}
	if (rc)
		nadb_log("%s: cannot lock: %s", st->dir, strerror(-rc));
	return rc;
}

/* Our text, saying STATE. */
static void holder_text(const struct nadb_store *st, const char *state, char *text,
			size_t size)
{
	char host[256], session[32] = "";
	our_host(host, sizeof(host));
	if (st->kv && st->kv->session)
		snprintf(session, sizeof(session), "session %u\n", st->kv->session);
	snprintf(text, size, "%d\n%s%shost %s\n%s%s", (int)getpid(), state, state[0] ? "\n" : "",
		 host, st->lock_self, session);
}

/* Say who holds the lock now: STATE ("" for a tool). */
static void note_holder(struct nadb_store *st, const char *state)
{
	char text[LOCK_TEXT_MAX];
	holder_text(st, state, text, sizeof(text));
	if (st->rlock) {
		pthread_mutex_lock(&st->rlock->lock);
		redis_write(st, text);
		pthread_mutex_unlock(&st->rlock->lock);
	} else if (st->lock_fd >= 0) {
		file_write(st, text);
	}
}

/* ---- the Redis lock's keeper ---------------------------------------------- */

/* Renew the lock every LOCK_REFRESH_MS, which runs the lease on; if it
 * was lost, say so (the store then refuses every step: another daemon may
 * hold it now).  A renewal that fails (Redis unreachable) is tried again
 * at the next tick, while the lease runs out. */
static void *keep_redis_lock(void *arg)
{
	struct nadb_store *st = arg;
	struct redis_lock *r = st->rlock;
	pthread_mutex_lock(&r->lock);
	while (!r->stop) {
		/* r->wake's clock */
		struct timespec until = clock_in(CLOCK_MONOTONIC, LOCK_REFRESH_MS * 1000000LL);
		pthread_cond_timedwait(&r->wake, &r->lock, &until);
		if (r->stop || atomic_load(&st->lock_lost))
			continue;
		uint64_t sent = monotonic_ms();
		int rc = redis_store_lock_refresh(r->conn, r->text, REDIS_LOCK_TTL_MS);
		if (rc == -ENOLCK)
			store_lose_lock(st, "it expired and another daemon took it");
		else if (rc == 0)
			extend_lease(st, sent);
		/* the session lives as the lease does: beaten only while held */
		bool died = false;
		if (rc == 0 && r->beat_kv && !r->beat_kv->ops->beat(r->beat_kv, &died) && died)
			store_sessions_died(st);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static int open_redis_lock(struct nadb_store *st, const char *url)
{
	struct redis_lock *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* renewals ignore clock steps */
	pthread_cond_init(&r->wake, &attr);
	pthread_condattr_destroy(&attr);
	holder_text(st, "", r->text, sizeof(r->text));
	st->rlock = r;
	return redis_conn_open(url, &r->conn);
}

/* ---- taking and letting go ---------------------------------------------- */

int lock_store(struct nadb_store *st, const char *arg)
{
	int rc;
	make_lock_self(st);
	if (store_is_redis_url(arg)) {
		rc = open_redis_lock(st, arg);
		/* taking the lock writes (lockgen): not on keys that are not a store */
		if (!rc && ((rc = redis_check_format(st->rlock->conn)) == -ENOENT ||
			    rc == -ESTALE))
			rc = 0;
	} else {
		char path[4096];
		snprintf(path, sizeof(path), "%s/lock", arg);
		st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		rc = st->lock_fd < 0 ? -errno : 0;
		if (rc)
			nadb_log("%s: cannot open: %s", path, strerror(-rc));
	}
	if (!rc)
		rc = lock_or_wait(st);
	bool held = rc == 0;
	if (!rc && st->rlock) {
		rc = -pthread_create(&st->rlock->keeper, NULL, keep_redis_lock, st);
		st->rlock->keeper_running = rc == 0;
	} else if (!rc) {
		note_holder(st, "");
	}
	if (rc)
		unlock_store(st, held); /* a lock taken is given back, not left to expire */
	return rc;
}

/* Call on_lost once the store is lost and it is set, whichever of the two
 * comes last (the keeper may lose the lock before the daemon set it). */
static void tell_lost(struct nadb_store *st)
{
	void (*fn)(void *) = atomic_load_explicit(&st->on_lost, memory_order_acquire);
	if (fn && atomic_load(&st->lock_lost) && !atomic_exchange(&st->on_lost_told, true))
		fn(st->on_lost_ctx);
}

void store_lose_lock(struct nadb_store *st, const char *why)
{
	char whole[WHY_SIZE + 64];
	snprintf(whole, sizeof(whole), "the store is another daemon's now (%s)", why);
	store_give_up(st, whole);
}

void store_give_up(struct nadb_store *st, const char *why)
{
	if (atomic_exchange(&st->lock_lost, true))
		return;
	nadb_log("%s: %s: changing nothing more, and serving nothing (it may be stale)",
		 st->dir, why);
	tell_lost(st);
}

void nadb_store_on_lost(struct nadb_store *st, nadb_lost_fn fn, void *ctx)
{
	/* the lock's keeper may be running: CTX is there before FN is */
	st->on_lost_ctx = ctx;
	atomic_store_explicit(&st->on_lost, fn, memory_order_release);
	tell_lost(st);
}

bool nadb_store_lost(const struct nadb_store *st)
{
	return atomic_load(&st->lock_lost);
}

long long lock_generation(const struct nadb_store *st)
{
	return st->rlock ? redis_store_lock_gen(st->rlock->conn) : 0;
}

void lock_beat_session(struct nadb_store *st, struct kv *kv)
{
	struct redis_lock *r = st->rlock;
	if (!r || (kv && !kv->ops->beat))
		return;
	if (kv) /* our text names our session: whoever finds us gone ends it */
		note_holder(st, "");
	pthread_mutex_lock(&r->lock); /* not while the keeper beats */
	r->beat_kv = kv;
	pthread_mutex_unlock(&r->lock);
}

void unlock_store(struct nadb_store *st, bool held)
{
	struct redis_lock *r = st->rlock;
	if (r) {
		pthread_mutex_lock(&r->lock);
		r->stop = true;
		pthread_cond_signal(&r->wake);
		pthread_mutex_unlock(&r->lock);
		if (r->keeper_running)
			pthread_join(r->keeper, NULL);
		if (held && r->conn)
			redis_store_lock_release(r->conn, r->text);
		if (r->conn)
			redis_conn_close(r->conn);
		pthread_cond_destroy(&r->wake);
		pthread_mutex_destroy(&r->lock);
		free(r);
		st->rlock = NULL;
	}
	if (st->lock_fd >= 0)
		close(st->lock_fd); /* lets go of the flock */
	st->lock_fd = -1;
}

void nadb_store_note_mount(struct nadb_store *st, const char *mountpoint)
{
	char state[4200];
	snprintf(state, sizeof(state), "mount %.4096s", mountpoint);
	note_holder(st, state);
}

void nadb_store_note_closing(struct nadb_store *st)
{
	note_holder(st, "closing");
}

/* The text of the Redis store URL's lock into TEXT (LOCK_TEXT_MAX bytes),
 * on a connection of its own: 0, -ENOENT when nobody holds it, or -errno. */
static int read_lock_text(const char *url, char *text)
{
	struct redis_conn *c = NULL;
	int rc = redis_conn_open(url, &c);
	if (!rc)
		rc = redis_store_lock_holder(c, text, LOCK_TEXT_MAX);
	redis_conn_close(c);
	return rc;
}

int nadb_store_writer_gone(const char *url)
{
	char text[LOCK_TEXT_MAX];
	int rc = read_lock_text(url, text);
	return rc == -ENOENT ? 1 : rc;
}

int lock_held_by_daemon(const char *url)
{
	char text[LOCK_TEXT_MAX];
	int rc = read_lock_text(url, text);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	struct holder h;
	parse_holder(text, &h);
	return h.mount[0] && !h.closing;
}

int nadb_store_wait_unlocked(const char *store, unsigned timeout_s)
{
	if (store_is_redis_url(store)) {
		struct redis_conn *c = NULL;
		int rc = redis_conn_open(store, &c);
		char text[LOCK_TEXT_MAX];
		uint64_t start = monotonic_ms();
		while (!rc && redis_store_lock_holder(c, text, sizeof(text)) == 0) {
			if (monotonic_ms() - start >= (uint64_t)timeout_s * 1000u) {
				rc = -ETIMEDOUT;
				break;
			}
			nanosleep(&(struct timespec){0, LOCK_POLL_MS * 1000000L}, NULL);
		}
		if (c)
			redis_conn_close(c);
		return rc;
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/lock", store);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno; /* no lock file: nobody holds it */
	uint64_t start = monotonic_ms();
	int rc;
	while ((rc = flock(fd, LOCK_EX | LOCK_NB) ? -errno : 0) == -EWOULDBLOCK) {
		if (monotonic_ms() - start >= (uint64_t)timeout_s * 1000u) {
			rc = -ETIMEDOUT;
			break;
		}
		nanosleep(&(struct timespec){0, LOCK_POLL_MS * 1000000L}, NULL);
	}
	close(fd); /* lets go of the lock if we got it */
	return rc;
}
