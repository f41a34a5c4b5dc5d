/* redis.h -- reaching a Redis server for the Redis backend of backend.h:
 * the store URL, one connection with its reconnect rule, the command
 * helpers kv_redis.c and blobs_redis.c share, the names of every key a
 * store owns, and the lock that keeps a second daemon off a store.
 *
 * A store on Redis is named by a URL:
 *
 *     redis://[[USER]:PASSWORD@]HOST[:PORT][/NAME]
 *
 * HOST may be a bracketed IPv6 address ([::1]); PORT defaults to 6379;
 * NAME, 1..64 of [A-Za-z0-9_.-], defaults to "nadb", so that one server
 * can hold several stores.  The password may be %XX-escaped.
 *
 * Key layout.  Every key a store owns is named by redis_key() alone, from
 * (store NAME, partition, what), as "{nadb:NAME:pP}:what".  The braces are
 * a Redis Cluster hash tag: all keys of one partition live on one node,
 * which is what lets a MULTI/EXEC or a script touch several of them.  Each
 * namespace has a partition of its own (backend.h, kv_partition): the rows
 * about its inodes (backend.h, kv_table_ino_at) -- its keys' inodes,
 * entries, names, xattrs, tags and the tag index's rows, expiries, pending
 * chunks, chunk references dropped and not yet settled (chunk.h), open
 * orphans, its own counters -- are under its tag, so that a cluster
 * spreads a store namespace by namespace.  The root, the databases and
 * the store-wide tables (chunks, segments, tag ids) are partition 0.
 * On one server a group of steps is one MULTI/EXEC over all the partitions
 * it touches; on a cluster a group must be split per partition.
 *
 *   key ("{nadb:NAME:pP}:" + ...)  type        holds
 *   format                          string      REDIS_FORMAT_TEXT: marks NAME
 *                                               as a nadb store, layout version
 *   lock                            string      owner text of the daemon
 *                                               serving the store (PX expiry)
 *   lockgen                         string      times the lock (or a partition
 *                                               lease) was taken
 *   fence                           string      the last lock generation that
 *                                               wrote the partition (kv_redis.c)
 *   lease                           string      "SESSION GEN": the session that
 *                                               alone writes partition P, and
 *                                               the generation its take raised
 *                                               the fence to (kv_redis.c,
 *                                               "partition leases"; taken only
 *                                               by tests so far)
 *   lease:want                      string      the last session that asked for
 *                                               P's lease (PX 10 s)
 *   t:TABLE:z                       sorted set  a sorted table's rows, score
 *                                               0, one member a row: the key
 *                                               encoded without 0 bytes, 0,
 *                                               the value (kv_redis.c)
 *   t:TABLE:z                       sorted set  a bucketed table's (inodes,
 *                                               links, chunks) bucket names
 *   t:TABLE:b:B                     hash        the rows of bucket B (the first
 *                                               bytes of their keys): row key
 *                                               -> value
 *   t:TABLE:zeros                   sorted set  a counted table's (chunks) rows
 *                                               whose count is 0, score = when
 *                                               it got there (server clock,
 *                                               ms; kv_ops.free_zeros)
 *   inos                            string      inode numbers claimed so far
 *                                               in partition P (INCRBY, in
 *                                               blocks; P's number is P << 40
 *                                               plus this)
 *   parts                           string      partitions handed out (p0)
 *   partitions                      sorted set  partitions holding rows,
 *                                               score = number (p0): scans
 *                                               walk them in order
 *   segs                            sorted set  blob segment numbers (score
 *                                               = number); the highest is
 *                                               appended to
 *   seg:N                           string      blob segment N: frames
 *                                               appended back to back (layout
 *                                               3; from 4 segment N is
 *                                               "{nadb:NAME:sN}:seg", under a
 *                                               tag of its own, so that a
 *                                               cluster spreads value bytes
 *                                               too, and gone:N is ":gone")
 *   punched                         hash        N -> bytes of segment N's
 *                                               frames punched (dead)
 *   gone                            set         N of removed segments kept
 *                                               (as gone:N) for late readers
 *   gone:N                          string      removed segment N, deleted
 *                                               by forget_removed or at open
 *   sessions                        sorted set  writers' sessions alive
 *                                               (kv_redis.c), score = when
 *                                               their heartbeat runs out
 *                                               (server clock, ms)
 *   sessionseq                      string      sessions numbered so far (p0)
 *   session:S:synced                string      the last sync attempt of
 *                                               session S that ran in
 *                                               partition P (kv_redis.c)
 *   followers                       sorted set  daemons following the writer
 *                                               (kv_redis.c), score = when
 *                                               their heartbeat runs out
 *                                               (wall-clock ms)
 *
 * TABLE is the LMDB table name (meta, inodes, dirents, ...).
 */
#ifndef NADB_REDIS_H
#define NADB_REDIS_H

#include "backend.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REDIS_NAME_MAX 64
/* The format key's text: the layout above, and its version (2: inodes,
 * links and chunks bucketed, a sorted table's rows one member each; 3: a
 * partition per namespace; 4: chunk segments under hash tags of their
 * own, see seg:N; 5: the chunks' tally, t:chunks:tally, kept by every
 * sync and read instead of counters of the daemon's, kv_redis.c).  A
 * writer opening an older store marks it 5 (weighing its chunks once),
 * so that an older nadb, which would write chunks without weighing them,
 * refuses it from then on: a store of layout 4 as REDIS_FORMAT_TEXT, one
 * of layout 2 (layout 3 with every row in partition 0) or 3, whose
 * segments stay in partition 0, as REDIS_FORMAT_TEXT_UNTAGGED.  New
 * stores are REDIS_FORMAT_TEXT.  A follower opens the two of layout 5
 * only. */
#define REDIS_FORMAT_TEXT "nadb-redis 5"
#define REDIS_FORMAT_TEXT_UNTAGGED "nadb-redis 5, segments in p0"
#define REDIS_FORMAT_TEXT_4 "nadb-redis 4"
#define REDIS_FORMAT_TEXT_3 "nadb-redis 3"
#define REDIS_FORMAT_TEXT_2 "nadb-redis 2"

struct redis_url {
	char host[256];
	int port;
	char user[128];     /* "" if none (AUTH with the password alone) */
	char password[256]; /* "" if none (no AUTH) */
	bool has_password;
	char name[REDIS_NAME_MAX + 1];
};

/* Parse URL into *OUT.  -EINVAL (logged) if malformed, -EPROTONOSUPPORT
 * for rediss:// (hiredis 0.14 has no TLS). */
int redis_url_parse(const char *url, struct redis_url *out);

/* One connection.  Not thread-safe: its user serialises calls on it. */
struct redis_conn;

/* Connect to the server of URL: connect timeout, AUTH, a version check
 * (>= 7.0).  Fails fast (no retry): -ECONNREFUSED, -ETIMEDOUT, -EIO,
 * -EACCES (wrong password), -EPROTONOSUPPORT (old server), -EINVAL.
 * If the server is a Redis Cluster node, the connection routes: the
 * *_in calls below send a partition's commands to the node serving its
 * slot (cluster.h), following the cluster as it changes. */
int redis_conn_open(const char *url, struct redis_conn **out);
/* Another connection like LIKE (to its server, routing if it does). */
int redis_conn_open_like(const struct redis_conn *like, struct redis_conn **out);
/* Connect to HOST:PORT as LIKE is connected (its user, password and
 * store NAME): a node of LIKE's cluster, for the router.  It does not
 * route, and a lost connection is tried again once, not for
 * RECONNECT_MS: the router looks for the slot's new owner instead.
 * Errors as redis_conn_open. */
int redis_conn_open_at(const struct redis_conn *like, const char *host, int port,
		       struct redis_conn **out);
void redis_conn_close(struct redis_conn *c);
/* Does C route over a Redis Cluster? */
bool redis_conn_is_cluster(const struct redis_conn *c);
const struct redis_url *redis_conn_url(const struct redis_conn *c);
/* How often C was connected again after losing the server (on a cluster,
 * also: a node connected again, a slot's owner changed): what a caller
 * remembered of the server's contents may be stale since. */
uint64_t redis_conn_reconnects(const struct redis_conn *c);
const char *redis_conn_name(const struct redis_conn *c);

/* The name of key WHAT of partition P of C's store, into BUF (see the
 * table above); its length.  Asserts it fits. */
size_t redis_key(const struct redis_conn *c, unsigned p, const char *what,
		 char *buf, size_t size);

/* A pause of MS ms (signals resume it): for the retry loops of the Redis
 * modules, which time themselves with monotonic_ms (clock.h). */
void redis_pause_ms(unsigned ms);

/* One command of a pipeline: binary-safe arguments. */
struct redis_cmd {
	int argc;
	const char **argv;
	const size_t *argvlen;
};

/* Send the N commands in one round trip and read their N replies into
 * REPLIES (the caller frees each with freeReplyObject).  If the connection
 * breaks, or the server is loading its data, reconnect for up to
 * RECONNECT_MS and send them all again: callers send only commands that
 * may run twice (idempotent writes, reads, APPENDs whose offset is taken
 * from the reply).  A server's error reply is returned as a reply, not as
 * a failure.  0, or -EIO (one log line) if the server stays unreachable. */
int redis_pipeline(struct redis_conn *c, const struct redis_cmd *cmds, size_t n,
		   redisReply **replies);

/* A WAIT for REPLICAS replicas, MS ms at most, as one command of a
 * pipeline; its arguments live in W. */
struct redis_wait {
	char nrep[16], ms[16];
	const char *argv[3];
	size_t lens[3];
};
struct redis_cmd redis_wait_cmd(struct redis_wait *w, int replicas, unsigned ms);

/* One command; *OUT as above.  An error reply becomes a negative errno
 * (logged with WHY), and *OUT is then NULL. */
int redis_run(struct redis_conn *c, const char *why, int argc, const char **argv,
	      const size_t *argvlen, redisReply **out);

/* redis_pipeline and redis_run for commands on keys of partition P only
 * (redis_key): on a cluster, sent to the node serving P's slot (cluster.h:
 * a redirected pipeline is sent again whole, so the same rule holds);
 * else to C's server.  redis_pipeline and redis_run themselves go to the
 * server C was opened on, whatever the keys: for commands on no key. */
int redis_pipeline_in(struct redis_conn *c, unsigned p, const struct redis_cmd *cmds, size_t n,
		      redisReply **replies);
int redis_run_in(struct redis_conn *c, unsigned p, const char *why, int argc,
		 const char **argv, const size_t *argvlen, redisReply **out);
/* The same for commands on keys of the slot of KEY (a segment's). */
int redis_run_key(struct redis_conn *c, const char *key, const char *why, int argc,
		  const char **argv, const size_t *argvlen, redisReply **out);
int redis_pipeline_key(struct redis_conn *c, const char *key, const struct redis_cmd *cmds,
		       size_t n, redisReply **replies);
/* Call FN with a connection to each server holding keys: C itself, or
 * each primary of its cluster in turn.  Stops at FN's first nonzero
 * return.  For commands a cluster runs per node (SCAN). */
int redis_each_server(struct redis_conn *c, int (*fn)(struct redis_conn *server, void *ctx),
		      void *ctx);

/* The errno for a server's error reply (OOM: -ENOSPC, NOAUTH: -EACCES,
 * READONLY: -EROFS, ...), logged once with WHY. */
int redis_reply_error(const struct redis_conn *c, const char *why,
		      const redisReply *r);

/* Replicas connected to the server, into *OUT (from INFO replication,
 * asked again when older than REPLICA_RECHECK_MS); sync WAITs for them.
 * 0, or the error of redis_run. */
int redis_replicas(struct redis_conn *c, int *out);
/* The same for the server of partition P's slot: C's own if C does not
 * route; on a cluster, what the slot map says (no round trip). */
int redis_replicas_in(struct redis_conn *c, unsigned p, int *out);
/* The same, asked anew now (INFO, or the slot map loaded again). */
int redis_replicas_fresh(struct redis_conn *c, unsigned p, int *out);
/* The same for the server of KEY's slot, from the map (C a cluster's). */
int redis_replicas_key(struct redis_conn *c, const char *key, int *out);

/* Change notices: a store's writer publishes, with each transaction of a
 * sync, the keys of the rows it wrote (kv_redis.c says how), on the
 * channel "nadb:NAME:changes"; a cluster hands a PUBLISH to every node, so
 * a follower may listen on any.  A notice is a hint, never the data: a
 * follower that misses some (a lost connection) assumes anything may have
 * changed.
 *
 * redis_publish_cmd: the PUBLISH of PAYLOAD (LEN bytes), as one command
 * of a pipeline or transaction; its arguments live in P (and PAYLOAD). */
struct redis_publish {
	char channel[REDIS_NAME_MAX + 32];
	const char *argv[3];
	size_t lens[3];
};
struct redis_cmd redis_publish_cmd(const struct redis_conn *c, struct redis_publish *p,
				   const void *payload, size_t len);
/* A subscriber to LIKE's store's notices: a connection of its own, to
 * the server LIKE was opened on, made at its first redis_subscriber_next
 * (close it with redis_conn_close). */
int redis_subscriber_open(const struct redis_conn *like, struct redis_conn **out);
/* The next notice's payload into *OUT (malloc'd, the caller frees) and
 * *LEN, waiting MS ms at most: 1, or 0 if none came in time.  -ENOTCONN:
 * not subscribed (the connection was lost, or cannot be made: the next
 * call tries again, on another node of ROUTE's cluster if ROUTE routes,
 * a connection its caller alone uses; a failed try pauses up to MS ms).
 * -ESTALE: subscribed (again), or a notice was dropped: notices said
 * meanwhile are lost. */
int redis_subscriber_next(struct redis_conn *s, const struct redis_conn *route, unsigned ms,
			  char **out, size_t *len);

/* Log once if the server's persistence makes sync less than "on disk"
 * (no AOF, or appendfsync other than always). */
void redis_note_durability(struct redis_conn *c);


/* Are the segments of C's store under tags of their own (layouts 4 and
 * 5, or no store yet) rather than in partition 0 (layouts 2 and 3, and 5
 * "segments in p0")? */
int redis_segments_tagged(struct redis_conn *c, bool *out);

/* Check that C's NAME is a nadb store, creating the format marker if the
 * NAME has no keys yet.  -EEXIST (logged) if NAME holds store keys without
 * the marker (not ours, or damaged), -EPROTO if the marker names another
 * layout version. */
int redis_claim_format(struct redis_conn *c);
/* The same, writing nothing: 0 a store of this layout, -ESTALE one of
 * layout 2, 3 or 4 (claim rewrites its marker), -ENOENT no store
 * (nothing under NAME), else the error claim would give (logged). */
int redis_check_format(struct redis_conn *c);

/* The store lock: one daemon serves a store at a time.
 *
 * redis_store_lock takes "{...}:lock" with SET NX PX TTL_MS, holding
 * OWNER (a text unique to this daemon, e.g. "host pid start-time", that
 * also tells a user who holds it).  -EBUSY (logged, with the holder's
 * text) if another owner holds it.  Taking it again with the same OWNER
 * succeeds (a retried SET after a lost reply finds its own value).
 *
 * The lock expires TTL_MS after it was last taken or refreshed, so a
 * daemon that dies frees it; the caller must call redis_store_lock_refresh
 * well within TTL_MS (e.g. every TTL_MS / 3, from a timer thread on a
 * connection of its own) and stop writing if that fails: -ENOLCK (logged)
 * if the lock was taken by another owner, or expired and may have been
 * (its generation moved: every take counts one).  A lock that expired
 * while the server was away and that nobody took since is taken again.
 *
 * redis_store_lock_release deletes it only if OWNER still holds it (a
 * script compares first), so a daemon whose lock expired never frees
 * another's.  0 also if it was not held. */
int redis_store_lock(struct redis_conn *c, const char *owner, uint32_t ttl_ms);
/* The same without the log line on -EBUSY (a caller that may wait). */
int redis_store_lock_try(struct redis_conn *c, const char *owner, uint32_t ttl_ms);
/* The holder's text into BUF: 0, or -ENOENT if nobody holds the lock. */
int redis_store_lock_holder(struct redis_conn *c, char *buf, size_t size);
/* Replace our text OWNER with TEXT (what we are doing now), refreshing
 * the expiry: -ENOLCK (logged) if the lock is no longer ours. */
int redis_store_lock_retext(struct redis_conn *c, const char *owner, const char *text,
			    uint32_t ttl_ms);
int redis_store_lock_refresh(struct redis_conn *c, const char *owner, uint32_t ttl_ms);
int redis_store_lock_release(struct redis_conn *c, const char *owner);
/* The key (per partition) holding the last lock generation that wrote
 * there (kv_redis.c, "Fencing"). */
#define REDIS_FENCE "fence"
/* The key (p0) of the writers' live sessions (kv_redis.c, "sessions"). */
#define REDIS_SESSIONS "sessions"
/* The key (per partition; printf of the session) of the last sync attempt
 * of a session that ran there (kv_redis.c, "Syncs run once"). */
#define REDIS_SYNCED "session:%u:synced"
/* Count session ID of C's store out now (its process is gone): 0, or the
 * error of redis_run. */
int redis_session_end(struct redis_conn *c, uint32_t id);
/* For tests of "syncs run once" (kv_redis.c), FAULTS (these ORed): the
 * next transaction a sync of KV sends is not sent, or its reply is lost
 * (it ran, the sync fails), or it is sent twice (as after a reconnect);
 * the next question whether a failed sync ran is asked twice, the first
 * answer lost. */
enum kv_redis_fault {
	KV_REDIS_FAULT_NOT_SENT = 1,
	KV_REDIS_FAULT_LOSE_REPLY = 2,
	KV_REDIS_FAULT_SENT_TWICE = 4,
	KV_REDIS_FAULT_SETTLE_TWICE = 8,
};
void kv_redis_inject_fault(struct kv *kv, unsigned faults);
/* The lock generation C took the store lock at (0: it did not): what
 * fences the writer's syncs (kv_redis_set_fence). */
long long redis_store_lock_gen(const struct redis_conn *c);

#endif
