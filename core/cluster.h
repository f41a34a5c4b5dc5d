/* cluster.h -- commands routed to the Redis Cluster node that serves
 * their slot, on top of hiredis 0.14 (which has no cluster client).
 *
 * A key's slot is CRC16 (XMODEM) of its hash tag -- the bytes between its
 * first '{' and the first '}' after it, when there are any -- or else of
 * the whole key, mod 16384, as the Cluster specification gives it.  Every
 * key of one nadb partition carries the same hash tag (redis.h), so each
 * step of the engine is a pipeline to one slot.
 *
 * The router keeps the slot map (CLUSTER SLOTS, asked of a node it knows)
 * and one connection per node, and follows the cluster as it changes:
 *  - MOVED: the slot has a new owner: the map is asked for again and the
 *    commands go there;
 *  - ASK: the slot is being migrated and its keys are leaving: the
 *    commands go to the target, MULTI and each command outside a
 *    transaction after ASKING;
 *  - TRYAGAIN (a multi-key command in mid-migration), CLUSTERDOWN (a
 *    failover under way) and a node that stopped answering: sent again
 *    after a pause, the map asked for anew, for CLUSTER_RETRY_MS at most.
 * A pipeline that was redirected is sent again whole, so, as with
 * redis_pipeline, its commands must be safe to run twice.
 */
#ifndef NADB_CLUSTER_H
#define NADB_CLUSTER_H

#include "redis.h"

#include <stddef.h>
#include <stdint.h>

#define REDIS_SLOTS 16384
#define CLUSTER_RETRY_MS 10000 /* ms: redirections and retries of one pipeline */

/* The slot of the LEN-byte key KEY. */
uint16_t redis_slot(const void *key, size_t len);

struct redis_cluster;

/* The cluster that SEED's server is a node of: its slot map loaded.  The
 * router opens connections of its own to the nodes, with SEED's
 * credentials and store name (SEED stays the caller's).  -ENOTSUP (not
 * logged) if that server is not in cluster mode; else the errors of
 * redis_run, or -EIO (logged) if no node gives a map. */
int redis_cluster_open(const struct redis_conn *seed, struct redis_cluster **out);
void redis_cluster_close(struct redis_cluster *cl);

/* Send the N commands, all on keys of SLOT, to the node serving it, and
 * read their N replies into REPLIES (freed by the caller), redirected as
 * above.  0, or -EIO (one log line) when no node would take them within
 * CLUSTER_RETRY_MS.  A server's other error replies are replies. */
int redis_cluster_pipeline(struct redis_cluster *cl, uint16_t slot,
			   const struct redis_cmd *cmds, size_t n, redisReply **replies);

/* The connection to the node serving SLOT as the map says (opened if
 * need be; NULL if it cannot be): for what a node answers of itself
 * (INFO replication).  Valid until the router is closed. */
struct redis_conn *redis_cluster_conn_of(struct redis_cluster *cl, uint16_t slot);

/* Call FN with a connection to each node serving slots, in turn, until
 * one returns nonzero (returned); -EIO (logged) for a node that cannot be
 * reached.  For commands a cluster runs per node (SCAN). */
int redis_cluster_each_primary(struct redis_cluster *cl,
			       int (*fn)(struct redis_conn *node, void *ctx), void *ctx);

/* The replicas serving SLOT's primary has, as the map last said
 * (CLUSTER SLOTS leaves out those marked failed): what a sync WAITs for. */
int redis_cluster_replicas(const struct redis_cluster *cl, uint16_t slot);
/* Load the slot map again now (a replica may have joined): 0, or -EIO. */
int redis_cluster_reload(struct redis_cluster *cl);

/* A number that grows whenever what a node holds may differ from what the
 * router's user saw of it: a slot's owner changed (a failover, a moved
 * slot), or a node was connected to again. */
uint64_t redis_cluster_changes(const struct redis_cluster *cl);

/* Times the slot map was loaded (the first time included). */
uint64_t redis_cluster_map_loads(const struct redis_cluster *cl);
/* The node serving SLOT as the map last said: "HOST:PORT" into BUF, or
 * -ENOENT when no node serves it. */
int redis_cluster_node_of(const struct redis_cluster *cl, uint16_t slot, char *buf,
			  size_t size);

#endif
