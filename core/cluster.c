/* cluster.c -- routing commands to the node of a Redis Cluster that
 * serves their slot (cluster.h): slots, the slot map, redirections.
 *
 * The map is a table of 16384 node numbers, loaded whole from CLUSTER
 * SLOTS: a MOVED reply means it is stale, and asking for all of it again
 * is one round trip that also teaches every other moved slot at once.
 * Nodes are kept for the router's life (a cluster has few), each with a
 * connection opened when first used.  Not thread-safe: its user
 * serialises calls, as for a redis_conn.
 */
#include "cluster.h"
#include "clock.h"
#include "grow.h"
#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RETRY_PAUSE_MS 100 /* ms: before sending again after TRYAGAIN or CLUSTERDOWN */

/* ---- slots (the specification's CRC16: XMODEM, polynomial 0x1021) ------- */

static uint16_t crc16(const uint8_t *p, size_t len)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = crc & 0x8000 ? (uint16_t)(crc << 1) ^ 0x1021 : (uint16_t)(crc << 1);
	}
	return crc;
}

uint16_t redis_slot(const void *key, size_t len)
{
	const uint8_t *k = key;
	const uint8_t *open = memchr(k, '{', len);
	if (open) {
		size_t from = (size_t)(open - k) + 1;
		const uint8_t *close = memchr(k + from, '}', len - from);
		/* "{}" is no tag: the whole key is hashed */
		if (close && close > k + from)
			return crc16(k + from, (size_t)(close - k) - from) & (REDIS_SLOTS - 1);
	}
	return crc16(k, len) & (REDIS_SLOTS - 1);
}

/* ---- nodes and the map --------------------------------------------------- */

struct node {
	char host[256];
	int port;
	struct redis_conn *conn; /* NULL until first used, or after it failed */
};

struct redis_cluster {
	const struct redis_conn *seed; /* the caller's: credentials for the nodes */
	struct node *node;
	size_t nnodes, cap;
	uint16_t owner[REDIS_SLOTS]; /* node number + 1; 0: no node serves it */
	uint8_t replicas[REDIS_SLOTS]; /* replicas of the owner not marked failed */
	uint64_t map_loads;
	uint64_t owner_changes; /* slots whose owner changed at a map load */
};

/* The number of node HOST:PORT, added if new; -ENOMEM. */
static int node_number(struct redis_cluster *cl, const char *host, size_t hlen, int port)
{
	if (hlen >= sizeof(cl->node->host) || port <= 0 || port > 65535)
		return -EINVAL;
	for (size_t i = 0; i < cl->nnodes; i++)
		if (cl->node[i].port == port && strlen(cl->node[i].host) == hlen &&
		    !memcmp(cl->node[i].host, host, hlen))
			return (int)i;
	if (cl->nnodes >= UINT16_MAX - 1 || ARRAY_GROW(cl->node, cl->nnodes, cl->cap))
		return -ENOMEM;
	struct node *n = &cl->node[cl->nnodes];
	memset(n, 0, sizeof(*n));
	memcpy(n->host, host, hlen);
	n->port = port;
	return (int)cl->nnodes++;
}

static struct redis_conn *node_conn(struct redis_cluster *cl, size_t i)
{
	struct node *n = &cl->node[i];
	if (!n->conn && redis_conn_open_at(cl->seed, n->host, n->port, &n->conn))
		n->conn = NULL;
	return n->conn;
}

/* The map from one CLUSTER SLOTS reply: [[start, end, [host, port, id],
 * replicas...], ...].  An empty host means the node we asked. */
static int take_map(struct redis_cluster *cl, const redisReply *r, size_t asked,
		    uint16_t owner[REDIS_SLOTS], uint8_t replicas[REDIS_SLOTS])
{
	if (r->type != REDIS_REPLY_ARRAY)
		return -EPROTO;
	memset(owner, 0, REDIS_SLOTS * sizeof(*owner));
	memset(replicas, 0, REDIS_SLOTS);
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
		    e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER ||
		    e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2 ||
		    e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
		    e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
			return -EPROTO;
		long long from = e->element[0]->integer, to = e->element[1]->integer;
		const redisReply *host = e->element[2]->element[0];
		if (from < 0 || to < from || to >= REDIS_SLOTS)
			return -EPROTO;
		int n = host->len ? node_number(cl, host->str, host->len,
						(int)e->element[2]->element[1]->integer)
				  : (int)asked;
		if (n < 0)
			return n;
		/* CLUSTER SLOTS leaves out replicas marked failed */
		size_t nrep = e->elements - 3 > UINT8_MAX ? UINT8_MAX : e->elements - 3;
		for (long long s = from; s <= to; s++) {
			owner[s] = (uint16_t)(n + 1);
			replicas[s] = (uint8_t)nrep;
		}
	}
	return 0;
}

/* Ask the nodes in turn for the map, until one answers. */
static int load_map(struct redis_cluster *cl)
{
	static const char *argv[] = {"CLUSTER", "SLOTS"};
	static const size_t lens[] = {7, 5};
	const struct redis_cmd cmd = {2, argv, lens};
	uint16_t *owner = malloc(REDIS_SLOTS * sizeof(*owner));
	uint8_t *replicas = malloc(REDIS_SLOTS);
	if (!owner || !replicas) {
		free(owner);
		free(replicas);
		return -ENOMEM;
	}
	int rc = -EIO;
	for (size_t i = 0; rc && rc != -ENOMEM && i < cl->nnodes; i++) {
		struct redis_conn *c = node_conn(cl, i);
		redisReply *r = NULL;
		if (!c || redis_pipeline(c, &cmd, 1, &r))
			continue;
		rc = take_map(cl, r, i, owner, replicas);
		freeReplyObject(r);
	}
	if (!rc) {
		for (size_t s = 0; s < REDIS_SLOTS; s++)
			cl->owner_changes += cl->map_loads && cl->owner[s] != owner[s];
		memcpy(cl->owner, owner, sizeof(cl->owner));
		memcpy(cl->replicas, replicas, sizeof(cl->replicas));
		cl->map_loads++;
	} else if (rc != -ENOMEM) {
		nadb_log("redis cluster: no node gives the slot map");
		rc = -EIO;
	}
	free(owner);
	free(replicas);
	return rc;
}

int redis_cluster_open(const struct redis_conn *seed, struct redis_cluster **out)
{
	static const char *argv[] = {"INFO", "cluster"};
	static const size_t lens[] = {4, 7};
	redisReply *r = NULL;
	int rc = redis_run((struct redis_conn *)seed, "asking whether it is a cluster", 2, argv,
			   lens, &r);
	if (!rc && (r->type != REDIS_REPLY_STRING || !strstr(r->str, "cluster_enabled:1")))
		rc = -ENOTSUP;
	if (r)
		freeReplyObject(r);
	struct redis_cluster *cl = rc ? NULL : calloc(1, sizeof(*cl));
	if (!rc && !cl)
		rc = -ENOMEM;
	if (!rc) {
		cl->seed = seed;
		const struct redis_url *u = redis_conn_url(seed);
		int n = node_number(cl, u->host, strlen(u->host), u->port);
		rc = n < 0 ? n : load_map(cl);
	}
	bool serves = false;
	for (size_t s = 0; !rc && s < REDIS_SLOTS && !serves; s++)
		serves = cl->owner[s] != 0;
	if (!rc && !serves) {
		const struct redis_url *u = redis_conn_url(seed);
		nadb_log("redis %s:%d: the Redis Cluster serves no slot yet (make one with "
			 "redis-cli --cluster create, or CLUSTER ADDSLOTS)", u->host, u->port);
		rc = -EIO;
	}
	if (rc) {
		redis_cluster_close(cl);
		return rc;
	}
	*out = cl;
	return 0;
}

void redis_cluster_close(struct redis_cluster *cl)
{
	if (!cl)
		return;
	for (size_t i = 0; i < cl->nnodes; i++)
		redis_conn_close(cl->node[i].conn);
	free(cl->node);
	free(cl);
}

struct redis_conn *redis_cluster_conn_of(struct redis_cluster *cl, uint16_t slot)
{
	unsigned n = cl->owner[slot & (REDIS_SLOTS - 1)];
	return n ? node_conn(cl, n - 1) : NULL;
}

int redis_cluster_each_primary(struct redis_cluster *cl,
			       int (*fn)(struct redis_conn *node, void *ctx), void *ctx)
{
	for (size_t i = 0; i < cl->nnodes; i++) {
		bool serves = false;
		for (size_t s = 0; s < REDIS_SLOTS && !serves; s++)
			serves = cl->owner[s] == i + 1;
		if (!serves)
			continue;
		struct redis_conn *c = node_conn(cl, i);
		if (!c) {
			nadb_log("redis cluster: node %s:%d cannot be reached", cl->node[i].host,
				 cl->node[i].port);
			return -EIO;
		}
		int rc = fn(c, ctx);
		if (rc)
			return rc;
	}
	return 0;
}

uint64_t redis_cluster_map_loads(const struct redis_cluster *cl)
{
	return cl->map_loads;
}

int redis_cluster_replicas(const struct redis_cluster *cl, uint16_t slot)
{
	return cl->replicas[slot & (REDIS_SLOTS - 1)];
}

int redis_cluster_reload(struct redis_cluster *cl)
{
	return load_map(cl);
}

uint64_t redis_cluster_changes(const struct redis_cluster *cl)
{
	uint64_t n = cl->owner_changes;
	for (size_t i = 0; i < cl->nnodes; i++)
		n += cl->node[i].conn ? redis_conn_reconnects(cl->node[i].conn) + 1 : 0;
	return n;
}

int redis_cluster_node_of(const struct redis_cluster *cl, uint16_t slot, char *buf,
			  size_t size)
{
	unsigned n = cl->owner[slot & (REDIS_SLOTS - 1)];
	if (!n)
		return -ENOENT;
	snprintf(buf, size, "%s:%d", cl->node[n - 1].host, cl->node[n - 1].port);
	return 0;
}

/* ---- redirections ------------------------------------------------------- */

enum redirect { GO_ON, MOVED, ASK, RETRY };

/* What error reply R asks of us; for ASK, the node in *TO. */
static enum redirect redirect_of(struct redis_cluster *cl, const redisReply *r, int *to)
{
	if (!r || r->type != REDIS_REPLY_ERROR)
		return GO_ON;
	bool moved = !strncmp(r->str, "MOVED ", 6), ask = !strncmp(r->str, "ASK ", 4);
	if (!strncmp(r->str, "TRYAGAIN", 8) || !strncmp(r->str, "CLUSTERDOWN", 11))
		return RETRY;
	if (!moved && !ask)
		return GO_ON;
	/* "MOVED 3999 127.0.0.1:6381": the node is after the second space,
	 * its port after the last colon (IPv6 hosts hold colons too) */
	const char *node = strchr(r->str + (moved ? 6 : 4), ' ');
	const char *colon = node ? strrchr(node, ':') : NULL;
	if (!colon)
		return RETRY;
	node++;
	*to = node_number(cl, node, (size_t)(colon - node), atoi(colon + 1));
	return *to < 0 ? RETRY : moved ? MOVED : ASK;
}

static bool is_word(const struct redis_cmd *c, const char *word)
{
	return c->argc > 0 && c->argvlen[0] == strlen(word) &&
	       !strncasecmp(c->argv[0], word, c->argvlen[0]);
}

/* CMDS for the target of an ASK: ASKING before each command outside a
 * transaction and before MULTI (the flag lasts the transaction).  ASKED[i]
 * is the index in *OUT of command i's reply. */
static int with_asking(const struct redis_cmd *cmds, size_t n, struct redis_cmd **out,
		       size_t *nout, size_t *asked)
{
	static const char *argv[] = {"ASKING"};
	static const size_t lens[] = {6};
	struct redis_cmd *v = malloc(2 * n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	size_t m = 0;
	bool in_multi = false;
	for (size_t i = 0; i < n; i++) {
		if (!in_multi)
			v[m++] = (struct redis_cmd){1, argv, lens};
		if (is_word(&cmds[i], "MULTI"))
			in_multi = true;
		else if (is_word(&cmds[i], "EXEC") || is_word(&cmds[i], "DISCARD"))
			in_multi = false;
		asked[i] = m;
		v[m++] = cmds[i];
	}
	*out = v;
	*nout = m;
	return 0;
}

/* Send to node TO (after ASKING when ASKING), replies into REPLIES. */
static int send_to(struct redis_cluster *cl, int to, bool asking, const struct redis_cmd *cmds,
		   size_t n, redisReply **replies)
{
	struct redis_conn *c = node_conn(cl, (size_t)to);
	if (!c)
		return -EIO;
	if (!asking)
		return redis_pipeline(c, cmds, n, replies);
	struct redis_cmd *v;
	size_t m, *asked = malloc(n * sizeof(*asked));
	redisReply **all = malloc(2 * n * sizeof(*all));
	int rc = asked && all ? with_asking(cmds, n, &v, &m, asked) : -ENOMEM;
	if (!rc) {
		rc = redis_pipeline(c, v, m, all);
		free(v);
	}
	if (!rc) {
		for (size_t i = 0, k = 0; i < m; i++) {
			if (k < n && asked[k] == i)
				replies[k++] = all[i];
			else
				freeReplyObject(all[i]);
		}
	}
	free(asked);
	free(all);
	return rc;
}

/* Did every command on a key get ASK?  Only then may the pipeline go to
 * the target whole: there a key not yet migrated reads as missing (the
 * target takes a command after ASKING as for a new key), so a pipeline
 * whose keys are partly moved waits until they all are. */
static bool all_asked(struct redis_cluster *cl, const struct redis_cmd *cmds,
		      redisReply **replies, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int to;
		if (is_word(&cmds[i], "MULTI") || is_word(&cmds[i], "EXEC") ||
		    is_word(&cmds[i], "DISCARD") || is_word(&cmds[i], "WAIT") ||
		    is_word(&cmds[i], "PUBLISH")) /* no key: any node takes it */
			continue;
		if (redirect_of(cl, replies[i], &to) != ASK)
			return false;
	}
	return true;
}

static void free_replies(redisReply **replies, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		freeReplyObject(replies[i]);
		replies[i] = NULL;
	}
}

int redis_cluster_pipeline(struct redis_cluster *cl, uint16_t slot,
			   const struct redis_cmd *cmds, size_t n, redisReply **replies)
{
	slot &= REDIS_SLOTS - 1;
	uint64_t deadline = monotonic_ms() + CLUSTER_RETRY_MS;
	int ask_to = -1; /* the node an ASK sent us to, for the next try only */
	for (;;) {
		bool asking = ask_to >= 0;
		int to = asking ? ask_to : (int)cl->owner[slot] - 1, target = -1;
		int rc = to >= 0 ? send_to(cl, to, asking, cmds, n, replies) : -EIO;
		if (rc == -ENOMEM)
			return rc;
		enum redirect why = rc ? RETRY : GO_ON;
		for (size_t i = 0; !rc && i < n && why == GO_ON; i++)
			why = redirect_of(cl, replies[i], &target);
		if (why == ASK && !all_asked(cl, cmds, replies, n))
			why = RETRY; /* mid-migration: until its keys are all there */
		if (why == GO_ON)
			return rc;
		if (!rc)
			free_replies(replies, n);
		if (monotonic_ms() > deadline) {
			nadb_log("redis cluster: slot %u: no node took the commands within %d ms",
				 slot, CLUSTER_RETRY_MS);
			return -EIO;
		}
		ask_to = why == ASK ? target : -1;
		if (why == RETRY)
			redis_pause_ms(RETRY_PAUSE_MS);
		if (why != ASK && (rc = load_map(cl)) == -ENOMEM)
			return rc;
		/* MOVED names the slot's owner now, whatever a node's map said */
		if (why == MOVED && cl->owner[slot] != target + 1) {
			cl->owner[slot] = (uint16_t)(target + 1);
			cl->owner_changes++;
		}
	}
}
