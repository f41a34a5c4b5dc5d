/* test_cluster.c -- the cluster router (cluster.h) against a real local
 * Redis Cluster of three primaries: slots as the servers compute them,
 * commands reaching the node that serves their slot, and the router
 * following a slot moved under it (MOVED) and one in mid-migration (ASK);
 * and the blob area noticing chunk bytes a failover lost.
 */
#include "unit.h"
#include "cluster.h"
#include "redis_server.h"

#include <hiredis/hiredis.h>

#define NODES 3

static struct redis_server node[NODES];
static redisContext *direct[NODES]; /* our own connections, for setting up */

static redisReply *on(int i, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(direct[i], fmt, ap);
	va_end(ap);
	CHECK(r != NULL);
	return r;
}

static void run_on(int i, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(direct[i], fmt, ap);
	va_end(ap);
	CHECK(r && r->type != REDIS_REPLY_ERROR);
	if (r && r->type == REDIS_REPLY_ERROR)
		fprintf(stderr, "node %d: %s\n", i, r->str);
	if (r)
		freeReplyObject(r);
}

/* The servers' own slot of KEY (CLUSTER KEYSLOT). */
static long long server_slot(const void *key, size_t len)
{
	redisReply *r = on(0, "CLUSTER KEYSLOT %b", key, len);
	long long s = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	if (r)
		freeReplyObject(r);
	return s;
}

static void check_slots(void)
{
	/* the specification's examples */
	CHECK(redis_slot("123456789", 9) == (0x31C3 & 16383));
	CHECK(redis_slot("{user1000}.following", 20) == redis_slot("{user1000}.followers", 20));
	CHECK(redis_slot("foo{}{bar}", 10) != redis_slot("bar", 3));
	CHECK(redis_slot("foo{{bar}}zap", 13) == redis_slot("{bar", 4));
	CHECK(redis_slot("foo{bar}{zap}", 13) == redis_slot("bar", 3));
	/* and whatever keys a store makes, as the servers hash them */
	CHECK(redis_slot("{nadb:shop:p17}:t:dirents:z", 27) == redis_slot("nadb:shop:p17", 13));
	srand(7);
	for (int i = 0; i < 500; i++) {
		char key[24];
		size_t len = (size_t)(rand() % (int)sizeof(key));
		for (size_t j = 0; j < len; j++) {
			int c = rand() % 6;
			key[j] = c == 0 ? '{' : c == 1 ? '}' : (char)(rand() % 256);
		}
		CHECK(redis_slot(key, len) == server_slot(key, len));
	}
}

/* The cluster, and our own connections to its nodes. */
static int start_cluster(const char *dir)
{
	if (redis_cluster_start(node, NODES, dir))
		return -1;
	for (int i = 0; i < NODES; i++) {
		struct timeval tv = {2, 0};
		direct[i] = redisConnectWithTimeout("127.0.0.1", node[i].port, tv);
		if (!direct[i] || direct[i]->err)
			return -1;
	}
	return 0;
}

static int node_of_slot(long long slot)
{
	for (int i = 0; i < NODES; i++) {
		redisReply *r = on(i, "CLUSTER COUNTKEYSINSLOT %lld", slot);
		redisReply *s = on(i, "CLUSTER NODES");
		if (r)
			freeReplyObject(r);
		/* our own line carries "myself"; its slot ranges follow */
		bool mine = false;
		if (s && s->type == REDIS_REPLY_STRING) {
			char *line = strstr(s->str, "myself");
			char *end = line ? strchr(line, '\n') : NULL;
			if (end)
				*end = 0;
			for (char *p = line; p && (p = strchr(p, ' ')); p++) {
				long long a, b;
				int n = sscanf(p + 1, "%lld-%lld", &a, &b);
				if (n == 2 && a <= slot && slot <= b)
					mine = true;
				else if (n == 1 && a == slot && !strchr(p + 1, '-'))
					mine = true;
			}
		}
		if (s)
			freeReplyObject(s);
		if (mine)
			return i;
	}
	return -1;
}

static void node_id(int i, char id[64])
{
	redisReply *r = on(i, "CLUSTER MYID");
	snprintf(id, 64, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
	if (r)
		freeReplyObject(r);
}

/* SET or GET through the router: the reply's text into OUT ("" for nil,
 * "ERR ..." for an error). */
static int routed(struct redis_cluster *cl, const char *verb, const char *key,
		  const char *value, char out[64])
{
	const char *argv[3] = {verb, key, value};
	size_t lens[3] = {strlen(verb), strlen(key), value ? strlen(value) : 0};
	struct redis_cmd cmd = {value ? 3 : 2, argv, lens};
	redisReply *r;
	int rc = redis_cluster_pipeline(cl, redis_slot(key, strlen(key)), &cmd, 1, &r);
	if (rc)
		return rc;
	snprintf(out, 64, "%s%s", r->type == REDIS_REPLY_ERROR ? "ERR " : "",
		 r->type == REDIS_REPLY_NIL ? "" : r->str ? r->str : "");
	freeReplyObject(r);
	return 0;
}

static void migrate_keys(int from, int to, long long slot)
{
	redisReply *keys = on(from, "CLUSTER GETKEYSINSLOT %lld 1000", slot);
	for (size_t i = 0; keys && i < keys->elements; i++)
		run_on(from, "MIGRATE 127.0.0.1 %d %s 0 5000", node[to].port,
		       keys->element[i]->str);
	if (keys)
		freeReplyObject(keys);
}

/* Move SLOT from node FROM to node TO, keys and all, as redis-cli
 * --cluster reshard does. */
static void move_slot(int from, int to, long long slot)
{
	char from_id[64], to_id[64];
	node_id(from, from_id);
	node_id(to, to_id);
	run_on(to, "CLUSTER SETSLOT %lld IMPORTING %s", slot, from_id);
	run_on(from, "CLUSTER SETSLOT %lld MIGRATING %s", slot, to_id);
	migrate_keys(from, to, slot);
	for (int i = 0; i < NODES; i++)
		run_on(i, "CLUSTER SETSLOT %lld NODE %s", slot, to_id);
}

static void check_routing(struct redis_cluster *cl)
{
	char out[64], key[32], val[32];
	/* keys of 60 hash tags land on every node, each on its slot's */
	for (int i = 0; i < 60; i++) {
		snprintf(key, sizeof(key), "{t%d}k", i);
		snprintf(val, sizeof(val), "v%d", i);
		CHECK(routed(cl, "SET", key, val, out) == 0 && !strcmp(out, "OK"));
	}
	long long total = 0;
	for (int i = 0; i < NODES; i++) {
		redisReply *r = on(i, "DBSIZE");
		CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 0);
		total += r ? r->integer : 0;
		if (r)
			freeReplyObject(r);
	}
	CHECK(total == 60);
	for (int i = 0; i < 60; i++) {
		snprintf(key, sizeof(key), "{t%d}k", i);
		snprintf(val, sizeof(val), "v%d", i);
		CHECK(routed(cl, "GET", key, NULL, out) == 0 && !strcmp(out, val));
	}
	CHECK(redis_cluster_map_loads(cl) == 1);
}

static void check_moved(struct redis_cluster *cl)
{
	char out[64];
	long long slot = server_slot("{t1}k", 5);
	int from = node_of_slot(slot), to = (from + 1) % NODES;
	CHECK(from >= 0);
	move_slot(from, to, slot);
	/* the router's map is stale: MOVED, a new map, the right node */
	uint64_t loads = redis_cluster_map_loads(cl);
	CHECK(routed(cl, "GET", "{t1}k", NULL, out) == 0 && !strcmp(out, "v1"));
	CHECK(redis_cluster_map_loads(cl) == loads + 1);
	char where[300], want[300];
	snprintf(want, sizeof(want), "127.0.0.1:%d", node[to].port);
	CHECK(redis_cluster_node_of(cl, (uint16_t)slot, where, sizeof(where)) == 0 &&
	      !strcmp(where, want));
}

static void check_ask(struct redis_cluster *cl)
{
	char out[64];
	CHECK(routed(cl, "SET", "{t2}a", "A", out) == 0);
	CHECK(routed(cl, "SET", "{t2}b", "B", out) == 0);
	long long slot = server_slot("{t2}a", 5);
	int from = node_of_slot(slot), to = (from + 1) % NODES;
	char from_id[64], to_id[64];
	node_id(from, from_id);
	node_id(to, to_id);
	run_on(to, "CLUSTER SETSLOT %lld IMPORTING %s", slot, from_id);
	run_on(from, "CLUSTER SETSLOT %lld MIGRATING %s", slot, to_id);
	run_on(from, "MIGRATE 127.0.0.1 %d {t2}a 0 5000", node[to].port);
	/* mid-migration: a key already moved is asked for at the target, one
	 * not yet moved at the source, a new one made at the target; the map
	 * is not reloaded for that */
	uint64_t loads = redis_cluster_map_loads(cl);
	CHECK(routed(cl, "GET", "{t2}a", NULL, out) == 0 && !strcmp(out, "A"));
	CHECK(routed(cl, "GET", "{t2}b", NULL, out) == 0 && !strcmp(out, "B"));
	CHECK(routed(cl, "SET", "{t2}new", "N", out) == 0 && !strcmp(out, "OK"));
	CHECK(redis_cluster_map_loads(cl) == loads);
	/* a transaction follows an ASK whole: ASKING, MULTI, ..., EXEC */
	const char *m[] = {"MULTI"}, *set[] = {"SET", "{t2}tx", "T"}, *e[] = {"EXEC"};
	size_t ml[] = {5}, sl[] = {3, 6, 1}, el[] = {4};
	struct redis_cmd tx[] = {{1, m, ml}, {3, set, sl}, {1, e, el}};
	redisReply *r[3];
	CHECK(redis_cluster_pipeline(cl, (uint16_t)slot, tx, 3, r) == 0);
	CHECK(r[2]->type == REDIS_REPLY_ARRAY && r[2]->elements == 1);
	for (int i = 0; i < 3; i++)
		freeReplyObject(r[i]);
	/* the migration ends: everything is at the target */
	migrate_keys(from, to, slot);
	for (int i = 0; i < NODES; i++)
		run_on(i, "CLUSTER SETSLOT %lld NODE %s", slot, to_id);
	CHECK(routed(cl, "GET", "{t2}new", NULL, out) == 0 && !strcmp(out, "N"));
	CHECK(routed(cl, "GET", "{t2}tx", NULL, out) == 0 && !strcmp(out, "T"));
	CHECK(routed(cl, "GET", "{t2}b", NULL, out) == 0 && !strcmp(out, "B"));
	redisReply *n = on(to, "DBSIZE");
	CHECK(n && n->integer >= 4);
	if (n)
		freeReplyObject(n);
}

/* Chunk bytes appended and not yet synced, lost in a failover (the new
 * primary's segment is shorter than what its old primary acknowledged):
 * the blob sync, which comes before any metadata naming them is
 * committed, says so (EIO), and so does the next append. */
static void check_lost_appends(const char *url)
{
	struct blobs *b = NULL;
	CHECK(blobs_redis_open(url, &b) == 0);
	if (!b)
		return;
	struct blob_loc loc;
	char frame[100];
	memset(frame, 'x', sizeof(frame));
	CHECK(b->ops->append(b, frame, sizeof(frame), NULL, 0, &loc) == 0 && loc.seg == 1);
	CHECK(b->ops->sync(b) == 0);
	CHECK(b->ops->append(b, frame, sizeof(frame), NULL, 0, &loc) == 0);
	/* the segment as a replica that missed the second append holds it */
	const char *key = "{nadb:lost:s1}:seg";
	int i = node_of_slot(redis_slot(key, strlen(key)));
	CHECK(i >= 0);
	if (i >= 0) {
		redisReply *r = on(i, "SET %s %b", key, frame, sizeof(frame));
		if (r)
			freeReplyObject(r);
	}
	CHECK(b->ops->sync(b) == -EIO);
	CHECK(b->ops->append(b, frame, sizeof(frame), NULL, 0, &loc) == -EIO);
	/* and it stays so: an append padding the segment back to its length
	 * would otherwise pass for the lost frame */
	CHECK(b->ops->sync(b) == -EIO);
	b->ops->close(b);
}

int main(void)
{
	char dir[32], unused[300];
	make_store_dir(dir, unused);
	int up = start_cluster(dir);
	CHECK(up == 0);
	struct redis_cluster *cl = NULL;
	struct redis_conn *seed = NULL;
	char url[300];
	if (!up) {
		check_slots();
		/* a plain server is told apart */
		snprintf(url, sizeof(url), "redis://127.0.0.1:%d/store", node[1].port);
		CHECK(redis_conn_open(url, &seed) == 0);
		CHECK(seed && redis_conn_is_cluster(seed));
		if (seed)
			CHECK(redis_cluster_open(seed, &cl) == 0);
	}
	if (cl) {
		check_routing(cl);
		check_moved(cl);
		check_ask(cl);
		redis_cluster_close(cl);
		snprintf(url, sizeof(url), "redis://127.0.0.1:%d/lost", node[0].port);
		check_lost_appends(url);
	}
	redis_conn_close(seed);
	for (int i = 0; i < NODES; i++) {
		if (direct[i])
			redisFree(direct[i]);
	}
	redis_cluster_stop(node, NODES);
	/* a server not in cluster mode is no cluster */
	struct redis_server plain;
	char pdir[300];
	snprintf(pdir, sizeof(pdir), "%s/plain", dir);
	if (redis_server_start(&plain, pdir, NULL) == 0) {
		redis_server_url(&plain, "store", url, sizeof(url));
		CHECK(redis_conn_open(url, &seed) == 0);
		if (seed) {
			CHECK(!redis_conn_is_cluster(seed));
			CHECK(redis_cluster_open(seed, &cl) == -ENOTSUP);
			redis_conn_close(seed);
		}
		redis_server_stop(&plain);
	}
	remove_dir(dir);
	printf("%s cluster routing\n", failures ? "FAILED" : "ok");
	return failures ? 1 : 0;
}
