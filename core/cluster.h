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

/* The cluster that the server of URL is a node of: its slot map loaded.
 * -ENOTSUP (not logged) if that server is not in cluster mode; else the
 * errors of redis_conn_open, or -EIO (logged) if no node gives a map. */
int redis_cluster_open(const char *url, struct redis_cluster **out);
void redis_cluster_close(struct redis_cluster *cl);

/* Send the N commands, all on keys of SLOT, to the node serving it, and
 * read their N replies into REPLIES (freed by the caller), redirected as
 * above.  0, or -EIO (one log line) when no node would take them within
 * CLUSTER_RETRY_MS.  A server's other error replies are replies. */
int redis_cluster_pipeline(struct redis_cluster *cl, uint16_t slot,
			   const struct redis_cmd *cmds, size_t n, redisReply **replies);

/* Times the slot map was loaded (the first time included). */
uint64_t redis_cluster_map_loads(const struct redis_cluster *cl);
/* The node serving SLOT as the map last said: "HOST:PORT" into BUF, or
 * -ENOENT when no node serves it. */
int redis_cluster_node_of(const struct redis_cluster *cl, uint16_t slot, char *buf,
			  size_t size);

#endif
