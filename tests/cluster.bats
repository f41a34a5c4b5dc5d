#!/usr/bin/env bats
# Stores on a Redis Cluster: a store's namespaces spread over the primaries
# (each namespace's rows under one hash tag, so on one node), the daemon
# following slots that move and a primary that fails over, and the tools on
# a cluster store.  The file starts one cluster of 3 primaries and 3
# replicas on loopback ports (setup_file) and stops it after its last test
# (teardown_file); each test uses a store NAME of its own on it.  It runs
# with the redis backend's suites (tools/run-tests).

load helpers

NODES=6

setup_file() {
	# one run is enough: tools/run-tests runs it with the redis backend's
	if [ "${NADB_TEST_BACKEND:-}" = dir ]; then
		export CLUSTER_SKIP=1
		return 0
	fi
	C=$(mktemp -d /tmp/nadb-cluster.XXXXXX)
	export C
	local i try started=0 nodes=()
	# a free base port: the nodes use it and the next five, their cluster
	# buses 10000 above
	for ((try = 0; try < 10 && !started; try++)); do
		export CLUSTER_BASE=$((20000 + RANDOM % 15000))
		started=1 nodes=()
		for ((i = 0; i < NODES && started; i++)); do
			start_node "$i" || started=0
			nodes+=("127.0.0.1:$((CLUSTER_BASE + i))")
		done
		[ $started = 1 ] || stop_nodes
	done
	[ $started = 1 ] || { cat "$C"/n*/log >&2; return 1; }
	redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
		>"$C/create.log" 2>&1 || { cat "$C/create.log" >&2; return 1; }
	cluster_ready 20 || { echo "the cluster never became ready" >&2; return 1; }
}

teardown_file() {
	if [ -n "${C:-}" ]; then
		stop_nodes
		rm -rf "$C"
	fi
}

# Stop every node (kill -9 after a try at a clean shutdown), files kept.
stop_nodes() {
	local i
	# each step may find the node gone already: none of them may fail
	for ((i = 0; i < NODES; i++)); do
		redis-cli -p $((CLUSTER_BASE + i)) shutdown nosave >/dev/null 2>&1 || true
		if [ -f "$C/n$i/pid" ]; then
			kill -KILL "$(cat "$C/n$i/pid" 2>/dev/null)" 2>/dev/null || true
		fi
		rm -f "$C/n$i/pid" "$C/n$i/nodes.conf"
	done
	return 0
}

setup() {
	if [ -n "${CLUSTER_SKIP:-}" ]; then
		skip "runs with the redis backend's suites"
	fi
	nadb_setup
	URL=redis://127.0.0.1:$(primary_port 0)/s$BATS_TEST_NUMBER
	LOG=$T/nadbfs.log
}

# Start node I (port CLUSTER_BASE + I, files in $C/nI: its AOF, nodes.conf).
start_node() {
	mkdir -p "$C/n$1"
	# the port and its cluster bus port (10000 above) must be free
	redis-cli -p $((CLUSTER_BASE + $1)) ping >/dev/null 2>&1 && return 1
	(exec 3<>"/dev/tcp/127.0.0.1/$((CLUSTER_BASE + $1 + 10000))") 2>/dev/null && return 1
	redis-server --port $((CLUSTER_BASE + $1)) --bind 127.0.0.1 --dir "$C/n$1" \
		--cluster-enabled yes --cluster-node-timeout 2000 --save "" \
		--appendonly yes --appendfsync always --daemonize yes \
		--pidfile "$C/n$1/pid" --logfile "$C/n$1/log" >/dev/null || return 1
	local i
	for ((i = 0; i < 200; i++)); do
		[ "$(redis-cli -p $((CLUSTER_BASE + $1)) ping 2>/dev/null)" = PONG ] && return 0
		sleep 0.05
	done
	return 1
}

# Every live node says cluster_state:ok, and every replica's link to its
# primary is up (a replica still syncing refuses to fail over): <= SECS.
cluster_ready() {
	local i j ok
	for ((i = 0; i < $1 * 10; i++)); do
		ok=1
		for ((j = 0; j < NODES; j++)); do
			local p=$((CLUSTER_BASE + j)) info
			[ "$(redis-cli -p $p ping 2>/dev/null)" = PONG ] || continue
			redis-cli -p $p cluster info | grep -q cluster_state:ok || ok=0
			info=$(redis-cli -p $p info replication)
			case $info in
			*role:slave*) [[ $info == *master_link_status:up* ]] || ok=0 ;;
			esac
		done
		[ $ok = 1 ] && return 0
		sleep 0.1
	done
	return 1
}

# The ports of the live primaries, one a line.
primary_ports() {
	local j p
	for ((j = 0; j < NODES; j++)); do
		p=$((CLUSTER_BASE + j))
		redis-cli -p $p role 2>/dev/null | head -1 | grep -qx master && echo $p
	done
}
primary_port() { primary_ports | sed -n "$(($1 + 1))p"; }

# The port of the primary serving the slot of partition P of our store.
port_of_part() {
	local slot p
	slot=$(redis-cli -p "$(primary_port 0)" cluster keyslot "nadb:s$BATS_TEST_NUMBER:p$1")
	for p in $(primary_ports); do
		redis-cli -p "$p" cluster countkeysinslot "$slot" >/dev/null 2>&1 || continue
		if redis-cli -p "$p" cluster nodes | grep myself |
			awk -v s="$slot" '{for (i = 9; i <= NF; i++) { n = split($i, r, "-");
				if ((n == 1 && r[1] == s) || (n == 2 && r[1] <= s && s <= r[2])) f = 1 }}
				END { exit !f }'; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# The store's keys on the server of PORT (SCAN, so no replica's).
keys_on() {
	redis-cli -p "$1" --scan --pattern "{nadb:s$BATS_TEST_NUMBER:*"
}

# The partition of the namespace directory PATH (its inode number >> 40).
part_of() {
	echo $(($(stat -c %i "$1") >> 40))
}

@test "a store on a Redis Cluster: each namespace on one node, spread over the primaries; remount through another node; fsck clean" {
	mount_store_at "$URL" "$MNT"
	local ns i
	for ns in a b c d e f; do
		mkdir -p "$MNT/app/$ns"
		for i in 1 2 3 4 5; do echo "$ns value $i" >"$MNT/app/$ns/k$i"; done
		# one value in every namespace: stored once
		head -c 300000 /dev/zero | tr '\0' x >"$MNT/app/$ns/shared"
	done
	echo changed >"$MNT/app/a/k1"
	rm "$MNT/app/b/k2"
	mv "$MNT/app/c/k3" "$MNT/app/c/moved"
	setfattr -n user.tags -v red "$MNT/app/d/k4"
	setfattr -n user.ttl -v 1 "$MNT/app/e/k5"
	sleep 2.5
	[ ! -e "$MNT/app/e/k5" ]
	[ "$(ls "$MNT/tags/red/app/d")" = k4 ]
	unmount_store_at "$URL" "$MNT"

	# every namespace's keys are on the primary of its partition's slot,
	# and the namespaces are on more than one primary
	local -A holders=()
	for p in $(primary_ports); do
		keys_on "$p" >"$T/keys.$p"
	done
	mount_store_at "redis://127.0.0.1:$(primary_port 2)/s$BATS_TEST_NUMBER" "$MNT"
	for ns in a b c d e f; do
		part=$(part_of "$MNT/app/$ns")
		[ "$part" -gt 0 ]
		port=$(port_of_part "$part")
		grep -qF "{nadb:s$BATS_TEST_NUMBER:p$part}:t:dirents:z" "$T/keys.$port"
		for p in $(primary_ports); do
			[ "$p" = "$port" ] && continue
			not grep -qF "{nadb:s$BATS_TEST_NUMBER:p$part}" "$T/keys.$p"
		done
		holders[$port]=1
	done
	[ "${#holders[@]}" -ge 2 ]

	# read back through another node
	[ "$(cat "$MNT/app/a/k1")" = changed ]
	[ ! -e "$MNT/app/b/k2" ]
	[ "$(cat "$MNT/app/c/moved")" = "c value 3" ]
	[ "$(cat "$MNT/app/f/k5")" = "f value 5" ]
	[ "$(stat -c %s "$MNT/app/f/shared")" = 300000 ]
	cat "$MNT/.stats" >"$T/stats"
	od -c "$T/stats" | grep -F '\0' && false
	[ "$(grep '"namespaces"' "$T/stats" | tr -dc 0-9)" = 6 ]
	unmount_store_at "redis://127.0.0.1:$(primary_port 2)/s$BATS_TEST_NUMBER" "$MNT"
	# compaction copies the live frames to a new segment (its own slot)
	# and removes the old one
	[ "$(redis-cli -c -p "$(primary_port 0)" exists "{nadb:s$BATS_TEST_NUMBER:s1}:seg")" = 1 ]
	run "$NADB" compact "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(redis-cli -c -p "$(primary_port 0)" exists "{nadb:s$BATS_TEST_NUMBER:s1}:seg")" = 0 ]
	[ "$("$NADB" get "$URL" /app/a/k1)" = changed ]
	[ "$("$NADB" get "$URL" /app/f/k4)" = "f value 4" ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ $output == *" 0 problems"* ]]
	# the 300,000-byte value is stored once for the six namespaces
	run "$NADB" stats --json "$URL"
	[ "$status" -eq 0 ]
	chunks=$(echo "$output" | sed -n 's/.*"chunk_bytes": *\([0-9]*\).*/\1/p')
	[ "$chunks" -lt 300000 ]
}

@test "on a cluster what would write two slots is EXDEV: mv copies a key or a namespace over, ln across namespaces fails; within a namespace all works" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/a" "$MNT/app/b"
	echo one >"$MNT/app/a/k"
	setfattr -n user.tags -v red "$MNT/app/a/k"
	expect_errno EXDEV rename "$MNT/app/a/k" "$MNT/app/b/k"
	expect_errno EXDEV link "$MNT/app/a/k" "$MNT/app/b/k"
	expect_errno EXDEV rename "$MNT/app/a" "$MNT/app/c"
	grep -q "would write two partitions.*EXDEV" "$LOG"
	# within a namespace: rename, link, replace
	mv "$MNT/app/a/k" "$MNT/app/a/k2"
	ln "$MNT/app/a/k2" "$MNT/app/a/k3"
	echo two >"$MNT/app/a/other"
	mv "$MNT/app/a/other" "$MNT/app/a/k3"
	[ "$(cat "$MNT/app/a/k2")" = one ]
	[ "$(cat "$MNT/app/a/k3")" = two ]
	# mv copies across: a key, then a whole namespace
	mv "$MNT/app/a/k2" "$MNT/app/b/k"
	[ "$(cat "$MNT/app/b/k")" = one ]
	[ ! -e "$MNT/app/a/k2" ]
	mv "$MNT/app/a" "$MNT/app/c"
	[ "$(cat "$MNT/app/c/k3")" = two ]
	[ ! -e "$MNT/app/a" ]
	# a database renamed lives in partition 0 with the root: allowed
	mv "$MNT/app" "$MNT/web"
	[ "$(cat "$MNT/web/b/k")" = one ]
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "a slot moved to another primary under a mount: the daemon follows it (MOVED), nothing lost" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/users"
	for i in $(seq 1 20); do echo "v$i" >"$MNT/app/users/k$i"; done
	sync_store_fs "$MNT/app/users/k1"
	part=$(part_of "$MNT/app/users")
	slot=$(redis-cli -p "$(primary_port 0)" cluster keyslot "nadb:s$BATS_TEST_NUMBER:p$part")
	from=$(port_of_part "$part")
	to=$(primary_ports | grep -vx "$from" | head -1)
	move_slot "$slot" "$from" "$to"
	[ "$(port_of_part "$part")" = "$to" ]
	for i in $(seq 21 40); do echo "v$i" >"$MNT/app/users/k$i"; done
	echo changed >"$MNT/app/users/k1"
	sync_store_fs "$MNT/app/users/k1"
	# the rows are on the new owner only
	[ -n "$(keys_on "$to" | grep -F "p$part}")" ]
	[ -z "$(keys_on "$from" | grep -F "p$part}")" ]
	unmount_store_at "$URL" "$MNT"
	mount_store_at "$URL" "$MNT"
	[ "$(cat "$MNT/app/users/k1")" = changed ]
	for i in $(seq 2 40); do [ "$(cat "$MNT/app/users/k$i")" = "v$i" ]; done
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	[ "$status" -eq 0 ]
}

# fsync FILE: what the daemon holds is then in the cluster.
sync_store_fs() {
	"$PY" -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$1"
}

# Move SLOT with its keys from the primary on port FROM to the one on TO,
# as redis-cli --cluster reshard does for one slot (keys are binary: a
# small RESP client, not the shell, carries them).
move_slot() {
	"$PY" - "$@" $(primary_ports) <<'EOF'
import socket, sys
slot, src, dst, primaries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def conn(port):
    s = socket.create_connection(("127.0.0.1", port))
    return s, s.makefile("rb")
def reply(f):
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t in (b"+", b":"):
        return rest
    if t == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    return [reply(f) for _ in range(int(rest))]
def cmd(c, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    c[0].sendall(out)
    return reply(c[1])
a, b = conn(src), conn(dst)
src_id, dst_id = cmd(a, "CLUSTER", "MYID"), cmd(b, "CLUSTER", "MYID")
cmd(b, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
cmd(a, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
while True:
    keys = cmd(a, "CLUSTER", "GETKEYSINSLOT", slot, 100)
    if not keys:
        break
    cmd(a, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
for p in primaries:
    cmd(conn(int(p)), "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
EOF
}

@test "kill -9 of a primary under fsync'd writes: its namespaces stall for seconds and go on without a remount; nothing fsync'd is lost" {
	cluster_ready 20
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/a" "$MNT/app/b" "$MNT/app/c"
	# a namespace on a primary other than the one holding partition 0
	local p0 victim ns
	p0=$(port_of_part 0)
	for ns in a b c; do
		port=$(port_of_part "$(part_of "$MNT/app/$ns")")
		[ "$port" != "$p0" ] && victim=$port && break
	done
	[ -n "${victim:-}" ] || skip "every namespace landed on partition 0's primary"
	"$PY" - "$MNT/app/$ns" 400 "$T/acked" <<'EOF' &
import os, sys, time
d, n, out = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "w")
for i in range(n):
    try:
        fd = os.open(os.path.join(d, "k%d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, b"value %d" % i)
        os.fsync(fd)
        os.close(fd)
        out.write("%d\n" % i)
        out.flush()
    except OSError as e:
        print("k%d: %s" % (i, e), file=sys.stderr)
    time.sleep(0.005)
EOF
	writer=$!
	BG_PIDS+=("$writer")
	sleep 1
	vpid=$(redis-cli -p "$victim" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p' | tr -d '\r')
	kill -9 "$vpid"
	wait "$writer"
	# the writer got through all of it: stalled, not failed
	[ "$(wc -l <"$T/acked")" = 400 ]
	for i in $(seq 0 399); do
		[ "$(cat "$MNT/app/$ns/k$i")" = "value $i" ]
	done
	unmount_store_at "$URL" "$MNT"
	# the node comes back as a replica of its old replica
	i=$((victim - CLUSTER_BASE))
	start_node "$i"
	cluster_ready 30
	mount_store_at "$URL" "$MNT"
	for i in $(seq 0 399); do
		[ "$(cat "$MNT/app/$ns/k$i")" = "value $i" ]
	done
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "on a cluster a follower mounted through another node hears the writer's changes in every namespace, and goes on when that node dies" {
	mount_store_at "$URL" "$MNT"
	local ns wpid fpid
	wpid=$(daemon_pid "$URL")
	for ns in a b c d; do
		mkdir -p "$MNT/app/$ns"
		echo -n "$ns 1" >"$MNT/app/$ns/k"
	done
	# the follower's notices come from another node than the one the
	# writer was given: a PUBLISH reaches every node of a cluster
	mkdir "$T/f"
	local seed
	seed=$(primary_port 2)
	"$NADBFS" -o "log=$T/follower.log,attr_timeout=60" \
		"redis://127.0.0.1:$seed/s$BATS_TEST_NUMBER" "$T/f"
	fpid=$(daemon_pids "s$BATS_TEST_NUMBER" | grep -vx "$wpid")
	grep -q "mounted read-only" "$T/follower.log"
	for ((i = 0; i < 100; i++)); do grep -q "1 followers" "$LOG" && break; sleep 0.05; done
	grep -q "1 followers" "$LOG"
	for ns in a b c d; do
		[ ! -e "$T/f/app/$ns/new" ]
		[ "$(cat "$T/f/app/$ns/k")" = "$ns 1" ]
		echo -n "$ns 2" >"$MNT/app/$ns/k"
		echo -n fresh >"$MNT/app/$ns/new"
	done
	rm "$MNT/app/d/k"
	for ns in a b c; do
		for ((i = 0; i < 250; i++)); do
			[ "$(cat "$T/f/app/$ns/k")" = "$ns 2" ] && [ -e "$T/f/app/$ns/new" ] && break
			sleep 0.02
		done
		[ "$(cat "$T/f/app/$ns/k")" = "$ns 2" ]
		[ "$(cat "$T/f/app/$ns/new")" = fresh ]
	done
	for ((i = 0; i < 250; i++)); do [ ! -e "$T/f/app/d/k" ] && break; sleep 0.02; done
	[ ! -e "$T/f/app/d/k" ]
	# the node the follower listens on dies: it listens on another
	vpid=$(redis-cli -p "$seed" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p' | tr -d '\r')
	kill -9 "$vpid"
	cluster_ready 30
	# (values of new lengths: the size the kernel caches would cut them)
	for ns in a b c; do echo -n "$ns, the third" >"$MNT/app/$ns/k"; done
	for ns in a b c; do
		for ((i = 0; i < 750; i++)); do
			[ "$(cat "$T/f/app/$ns/k")" = "$ns, the third" ] && break
			sleep 0.02
		done
		[ "$(cat "$T/f/app/$ns/k")" = "$ns, the third" ]
	done
	start_node $((seed - CLUSTER_BASE))
	cluster_ready 30
	fusermount3 -u "$T/f"
	wait_pids_gone 10 "$fpid"
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
}
