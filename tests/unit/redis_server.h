/* redis_server.h -- a private redis-server for a unit test: on a free
 * loopback port, its AOF (appendfsync always) in a folder of the test's,
 * killed with the test if the test dies (PR_SET_PDEATHSIG), so no server
 * outlives its test.  Not installed is a failure, not a skip: CI installs
 * redis-server.
 */
#ifndef NADB_REDIS_SERVER_H
#define NADB_REDIS_SERVER_H

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REDIS_START_MS 5000 /* ms: how long a server may take to answer */
#define REDIS_PORT_TRIES 20 /* ports tried before giving up */

struct redis_server {
	pid_t pid; /* 0: not running */
	int port;
	char dir[300];
	char password[64]; /* "" for none */
	bool cluster;      /* a cluster node (its nodes.conf in DIR) */
};

static inline long redis_test_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static inline pid_t redis_server_spawn(const struct redis_server *s)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", s->port);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (chdir(s->dir))
		_exit(126);
	const char *argv[24] = {"redis-server", "--port", port, "--bind", "127.0.0.1",
				"--dir", s->dir, "--save", "", "--appendonly", "yes",
				"--appendfsync", "always", "--daemonize", "no",
				"--logfile", "redis.log"};
	int n = 17;
	if (s->password[0]) {
		argv[n++] = "--requirepass";
		argv[n++] = s->password;
	}
	if (s->cluster) {
		argv[n++] = "--cluster-enabled";
		argv[n++] = "yes";
		argv[n++] = "--cluster-node-timeout";
		argv[n++] = "2000";
	}
	argv[n] = NULL;
	execvp("redis-server", (char *const *)argv);
	_exit(127);
}

/* Does the server answer (any reply: NOAUTH and LOADING count)?  false
 * once the process has exited. */
static inline bool redis_server_answers(struct redis_server *s)
{
	long deadline = redis_test_now_ms() + REDIS_START_MS;
	while (redis_test_now_ms() < deadline) {
		int status;
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			s->pid = 0;
			return false;
		}
		struct timeval tv = {1, 0};
		redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
		redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
		bool up = r != NULL;
		if (r)
			freeReplyObject(r);
		if (c)
			redisFree(c);
		if (up)
			return true;
		usleep(20000);
	}
	return false;
}

static inline void redis_server_kill(struct redis_server *s, int sig)
{
	if (!s->pid)
		return;
	kill(s->pid, sig);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
}

/* Start on the port and folder already chosen (a restart). */
static inline int redis_server_restart(struct redis_server *s)
{
	s->pid = redis_server_spawn(s);
	if (s->pid < 0) {
		s->pid = 0;
		return -1;
	}
	if (redis_server_answers(s))
		return 0;
	redis_server_kill(s, SIGKILL);
	return -1;
}

/* Start a server with its files in DIR (made) on a free port, with
 * PASSWORD (NULL: none), as a cluster node if CLUSTER.  0, or -1 (said on
 * stderr). */
static inline int redis_server_start_as(struct redis_server *s, const char *dir,
					const char *password, bool cluster)
{
	memset(s, 0, sizeof(*s));
	s->cluster = cluster;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	mkdir(dir, 0700);
	if (password)
		snprintf(s->password, sizeof(s->password), "%s", password);
	srand((unsigned)(getpid() ^ redis_test_now_ms()));
	for (int i = 0; i < REDIS_PORT_TRIES; i++) {
		s->port = 20000 + rand() % 20000;
		struct timeval tv = {0, 200000};
		redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
		bool taken = c && !c->err; /* someone else's: not a server of ours */
		if (c)
			redisFree(c);
		if (!taken && !redis_server_restart(s))
			return 0;
	}
	fprintf(stderr, "cannot start redis-server (is it installed?); see %s/redis.log\n",
		dir);
	return -1;
}

static inline int redis_server_start(struct redis_server *s, const char *dir,
				     const char *password)
{
	return redis_server_start_as(s, dir, password, false);
}

/* SIGTERM: a clean shutdown (no snapshot: --save ""). */
static inline void redis_server_stop(struct redis_server *s)
{
	redis_server_kill(s, SIGTERM);
}

/* The store URL of NAME on S. */
static inline void redis_server_url(const struct redis_server *s, const char *name,
				    char *url, size_t size)
{
	if (s->password[0])
		snprintf(url, size, "redis://:%s@127.0.0.1:%d/%s", s->password, s->port, name);
	else
		snprintf(url, size, "redis://127.0.0.1:%d/%s", s->port, name);
}

/* Start N cluster nodes, their files in DIR/nodeI, and join them into one
 * cluster of N primaries (no replicas), every slot served: 0, or -1 (the
 * nodes started are stopped by redis_cluster_stop all the same). */
static inline int redis_cluster_start(struct redis_server *nodes, int n, const char *dir)
{
	char cmd[1024] = "redis-cli --cluster create";
	memset(nodes, 0, (size_t)n * sizeof(*nodes));
	mkdir(dir, 0700);
	for (int i = 0; i < n; i++) {
		char sub[400];
		snprintf(sub, sizeof(sub), "%s/node%d", dir, i);
		if (redis_server_start_as(&nodes[i], sub, NULL, true))
			return -1;
		size_t at = strlen(cmd);
		snprintf(cmd + at, sizeof(cmd) - at, " 127.0.0.1:%d", nodes[i].port);
	}
	strcat(cmd, " --cluster-yes >/dev/null 2>&1");
	if (system(cmd))
		return -1;
	for (int tries = 0; tries < 200; tries++) { /* every node sees every slot served */
		int ok = 0;
		for (int i = 0; i < n; i++) {
			struct timeval tv = {1, 0};
			redisContext *c = redisConnectWithTimeout("127.0.0.1", nodes[i].port, tv);
			redisReply *r = c && !c->err ? redisCommand(c, "CLUSTER INFO") : NULL;
			ok += r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok");
			if (r)
				freeReplyObject(r);
			if (c)
				redisFree(c);
		}
		if (ok == n)
			return 0;
		usleep(50000);
	}
	fprintf(stderr, "the cluster in %s never became ready\n", dir);
	return -1;
}

static inline void redis_cluster_stop(struct redis_server *nodes, int n)
{
	for (int i = 0; i < n; i++)
		redis_server_stop(&nodes[i]);
}

#endif
