#!/usr/bin/env bash
# bench-cluster.sh -- nadbfs on one Redis server and on a Redis Cluster of
# 3 primaries, side by side:
#  - creates, stats and reads of small keys spread over several
#    namespaces, one daemon, and sets each fsync'd (one sync, one fenced
#    transaction, each: kv_redis.c);
#  - the same store mounted by 1, 2 and 4 daemons (one writer, the others
#    following it, core/follow.c): the writer creates the keys, then
#    every mount stats and reads all of them at once, one client each;
#    aggregate stats and reads per second;
#  - how soon a follower sees the writer's overwrite (p50, p99 of
#    PROPAGATIONS), and the writer's creates with and without followers;
#  - how soon a follower writes once its writer is gone (fs/nadbfs.c,
#    take_over): seconds from the writer's kill -9, and from its unmount,
#    to the follower's first write that succeeds.
# Each repetition runs the targets interleaved on fresh stores; the
# tables give medians.
#
#   tools/bench-cluster.sh [--keys N] [--reps N] [--build DIR] [--out FILE]
#
# The servers are private (loopback, free ports, AOF with appendfsync
# always, files in a temp folder) and stopped at the end, whatever happens.
set -u
KEYS=2000      # keys a repetition creates, stats and reads
FSYNCS=300     # keys a repetition then sets, each fsync'd before the next
REPS=3         # repetitions; medians are reported
NAMESPACES=4   # the keys are spread over this many namespaces
PROPAGATIONS=300 # overwrites timed from the writer's close to a follower's read
BUILD=$(cd "$(dirname "$0")/.." && pwd)/build
OUT=""
while [ $# -gt 0 ]; do
	case $1 in
	--keys) KEYS=$2; shift ;;
	--reps) REPS=$2; shift ;;
	--build) BUILD=$2; shift ;;
	--out) OUT=$2; shift ;;
	-h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench-cluster.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
for c in redis-server redis-cli python3; do
	command -v $c >/dev/null || { echo "bench-cluster.sh: needs $c" >&2; exit 2; }
done
TMP=$(mktemp -d /tmp/nadb-bench-cluster.XXXXXX)
PORTS=()

cleanup() {
	local m p
	for m in "$TMP"/mnt-*; do
		mountpoint -q "$m" 2>/dev/null && fusermount3 -u "$m" 2>/dev/null
	done
	sleep 0.5
	for p in "${PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1; done
	for p in "$TMP"/*/pid; do [ -f "$p" ] && kill -KILL "$(cat "$p")" 2>/dev/null; done
	rm -rf --one-file-system "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A server on a free port (and its bus port 10000 above, for a cluster
# node): its port on stdout.
start_server() {
	local dir=$1 extra=$2 port i
	for ((i = 0; i < 20; i++)); do
		port=$((20000 + RANDOM % 15000))
		# the port and its cluster bus port must be free
		redis-cli -p "$port" ping >/dev/null 2>&1 && continue
		(exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null && continue
		mkdir -p "$dir"
		# shellcheck disable=SC2086
		redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" \
			--appendonly yes --appendfsync always --daemonize yes \
			--pidfile "$dir/pid" --logfile "$dir/log" $extra >/dev/null || continue
		for _ in $(seq 100); do
			[ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && { echo "$port"; return 0; }
			sleep 0.05
		done
	done
	return 1
}

single=$(start_server "$TMP/single" "") || { echo "no redis-server" >&2; exit 1; }
PORTS+=("$single")
nodes=()
for i in 0 1 2; do
	p=$(start_server "$TMP/node$i" "--cluster-enabled yes --cluster-node-timeout 2000") ||
		{ echo "no cluster node" >&2; exit 1; }
	PORTS+=("$p")
	nodes+=("127.0.0.1:$p")
done
redis-cli --cluster create "${nodes[@]}" --cluster-yes >"$TMP/create.log" 2>&1 ||
	{ cat "$TMP/create.log" >&2; exit 1; }
for _ in $(seq 100); do
	redis-cli -p "${PORTS[1]}" cluster info | grep -q cluster_state:ok && break
	sleep 0.1
done

declare -A URL=([single]="redis://127.0.0.1:$single" [cluster]="redis://127.0.0.1:${PORTS[1]}")

# One repetition of TARGET on a fresh store: "creates stats reads fsyncs"
# per second (fsyncs: FSYNCS new keys, each fsync'd before the next: one
# sync, one transaction, each).
run_one() {
	local target=$1 rep=$2 mnt=$TMP/mnt-$1
	mkdir -p "$mnt"
	"$BUILD/nadbfs" -o "log=$TMP/$target.log" "${URL[$target]}/r$rep" "$mnt" || return 1
	python3 - "$mnt" "$KEYS" "$NAMESPACES" "$FSYNCS" <<'EOF'
import os, sys, time
mnt, n, nns, nf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dirs = [os.path.join(mnt, "bench", "ns%d" % i) for i in range(nns)]
for d in dirs:
    os.makedirs(d)
paths = [os.path.join(dirs[i % nns], "k%d" % i) for i in range(n)]
value = b"v" * 100
t = time.monotonic()
for p in paths:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, value)
    os.close(fd)
creates = n / (time.monotonic() - t)
t = time.monotonic()
for p in paths:
    os.stat(p)
stats = n / (time.monotonic() - t)
t = time.monotonic()
for p in paths:
    with open(p, "rb") as f:
        f.read()
reads = n / (time.monotonic() - t)
t = time.monotonic()
for i in range(nf):
    fd = os.open(os.path.join(dirs[i % nns], "f%d" % i), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, value)
    os.fsync(fd)
    os.close(fd)
fsyncs = nf / (time.monotonic() - t)
print("%.0f %.0f %.0f %.0f" % (creates, stats, reads, fsyncs))
EOF
	local rc=$?
	fusermount3 -u "$mnt"
	sleep 0.3
	return $rc
}

for ((rep = 1; rep <= REPS; rep++)); do
	for target in single cluster; do
		figures=$(run_one "$target" "$rep") ||
			{ echo "bench-cluster.sh: $target failed:" >&2; tail -5 "$TMP/$target.log" >&2; exit 1; }
		echo "$target $figures" >>"$TMP/results"
	done
done

# Mount STORE on D daemons, on $TMP/mnt-TARGET-I: the writer (I = 0) first,
# then D - 1 followers; wait until the writer counts them.
mount_daemons() {
	local target=$1 store=$2 d=$3 i
	for ((i = 0; i < d; i++)); do
		mkdir -p "$TMP/mnt-$target-$i"
		"$BUILD/nadbfs" -o "log=$TMP/$target-$i.log" "$store" "$TMP/mnt-$target-$i" || return 1
	done
	[ "$d" = 1 ] && return 0
	for _ in $(seq 100); do
		grep -q "followers: syncing" "$TMP/$target-0.log" && return 0
		sleep 0.05
	done
	return 1
}

unmount_daemons() {
	local m
	for m in "$TMP/mnt-$1"-*; do
		mountpoint -q "$m" && fusermount3 -u "$m"
	done
	sleep 0.3
}

# D daemons on a fresh store of TARGET: the writer creates KEYS keys
# (followed by D - 1), then every mount stats and reads them all, at
# once.  "creates/s aggregate-stats/s aggregate-reads/s".
run_scale() {
	local target=$1 rep=$2 d=$3 i creates
	mount_daemons "$target" "${URL[$target]}/d$d-r$rep" "$d" || return 1
	creates=$(python3 - "$TMP/mnt-$target-0" "$KEYS" "$NAMESPACES" <<'EOF'
import os, sys, time
mnt, n, nns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dirs = [os.path.join(mnt, "bench", "ns%d" % i) for i in range(nns)]
for d in dirs:
    os.makedirs(d)
value = b"v" * 100
t = time.monotonic()
for i in range(n):
    fd = os.open(os.path.join(dirs[i % nns], "k%d" % i), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, value)
    if i == n - 1:
        os.fsync(fd) # every key synced: what the followers read
    os.close(fd)
print("%.0f" % (n / (time.monotonic() - t)))
EOF
) || { unmount_daemons "$target"; return 1; }
	for ((i = 0; i < d; i++)); do
		python3 - "$TMP/mnt-$target-$i" "$KEYS" "$NAMESPACES" >"$TMP/scale-$i" <<'EOF' &
import os, sys, time
mnt, n, nns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paths = [os.path.join(mnt, "bench", "ns%d" % (i % nns), "k%d" % i) for i in range(n)]
t = time.monotonic()
for p in paths:
    os.stat(p)
stats = n / (time.monotonic() - t)
t = time.monotonic()
for p in paths:
    with open(p, "rb") as f:
        assert len(f.read()) == 100
reads = n / (time.monotonic() - t)
print("%.0f %.0f" % (stats, reads))
EOF
	done
	wait
	echo "$creates $(awk '{s += $1; r += $2} END {printf "%.0f %.0f", s, r}' "$TMP"/scale-*)"
	rm -f "$TMP"/scale-*
	unmount_daemons "$target"
}

# A writer and a follower: ms from the writer's close to the follower
# reading the new value, PROPAGATIONS times: "p50 p99".
run_propagation() {
	local target=$1 rep=$2
	mount_daemons "$target" "${URL[$target]}/p-r$rep" 2 || return 1
	python3 - "$TMP/mnt-$target-0" "$TMP/mnt-$target-1" "$PROPAGATIONS" <<'EOF'
import os, sys, time
w, f, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(os.path.join(w, "bench", "ns"))
delays = []
for i in range(n):
    value = b"v%d" % i
    key = os.path.join("bench", "ns", "k%d" % (i % 20))
    with open(os.path.join(w, key), "wb") as o:
        o.write(value)
    t = time.monotonic()
    while True:
        try:
            with open(os.path.join(f, key), "rb") as r:
                if r.read() == value:
                    break
        except FileNotFoundError:
            pass
        if time.monotonic() - t > 10:
            sys.exit("the follower never saw %s" % key)
    delays.append((time.monotonic() - t) * 1000)
delays.sort()
print("%.2f %.2f" % (delays[len(delays) // 2], delays[int(len(delays) * 0.99)]))
EOF
	local rc=$?
	unmount_daemons "$target"
	return $rc
}

# A writer and a follower; the writer goes (HOW: kill, kill -9 and a lazy
# unmount; unmount, fusermount3 -u): seconds from then to the follower's
# first write that succeeds (EROFS until it took the store over).
run_takeover() {
	local target=$1 rep=$2 how=$3 pid
	mount_daemons "$target" "${URL[$target]}/t-$how-r$rep" 2 || return 1
	mkdir -p "$TMP/mnt-$target-0/bench/ns"
	pid=$(pgrep -f -- "nadbfs -o log=$TMP/$target-0.log ") || { unmount_daemons "$target"; return 1; }
	python3 - "$TMP/mnt-$target-0" "$TMP/mnt-$target-1" "$how" "$pid" <<'EOF'
import errno, os, signal, subprocess, sys, time
w, f, how, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# the directory durable (a kill -9 loses what was not synced), and the
# follower seeing it, before the writer goes
fd = os.open(os.path.join(w, "bench", "ns"), os.O_RDONLY | os.O_DIRECTORY)
os.fsync(fd)
os.close(fd)
t = time.monotonic()
while not os.path.isdir(os.path.join(f, "bench", "ns")):
    if time.monotonic() - t > 10:
        sys.exit("the follower never saw the directory")
    time.sleep(0.01)
t = time.monotonic()
if how == "kill":
    os.kill(pid, signal.SIGKILL)
    subprocess.run(["fusermount3", "-uz", w], check=True)
else:
    subprocess.run(["fusermount3", "-u", w], check=True)
key = os.path.join(f, "bench", "ns", "after")
while True:
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"written")
        os.close(fd)
        break
    except OSError as e:
        if e.errno != errno.EROFS:
            raise
    if time.monotonic() - t > 60:
        sys.exit("the follower never took over")
    time.sleep(0.02)
print("%.2f" % (time.monotonic() - t))
EOF
	local rc=$?
	unmount_daemons "$target"
	return $rc
}

for ((rep = 1; rep <= REPS; rep++)); do
	for target in single cluster; do
		for how in kill unmount; do
			figures=$(run_takeover "$target" "$rep" "$how") ||
				{ echo "bench-cluster.sh: $target takeover after $how failed" >&2
				  tail -n 5 "$TMP/$target"-*.log >&2; exit 1; }
			echo "$target $how $figures" >>"$TMP/takeover"
		done
	done
done

for ((rep = 1; rep <= REPS; rep++)); do
	for target in single cluster; do
		for d in 1 2 4; do
			figures=$(run_scale "$target" "$rep" "$d") ||
				{ echo "bench-cluster.sh: $target, $d daemons failed:" >&2
				  tail -n 5 "$TMP/$target"-*.log >&2; exit 1; }
			echo "$target-$d $figures" >>"$TMP/scale"
		done
		figures=$(run_propagation "$target" "$rep") ||
			{ echo "bench-cluster.sh: $target propagation failed" >&2; exit 1; }
		echo "$target $figures" >>"$TMP/propagation"
	done
done

table=$(python3 - "$TMP/results" "$KEYS" "$NAMESPACES" "$REPS" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 5:
        rows.setdefault(f[0], []).append(list(map(float, f[1:])))
print("| nadbfs, 1 daemon, %s keys of 100 B in %s namespaces, medians of %s | creates/s | stats/s | reads/s | fsync'd sets/s |"
      % (sys.argv[2], sys.argv[3], sys.argv[4]))
print("|---|---:|---:|---:|---:|")
for name, label in (("single", "one Redis server"), ("cluster", "Redis Cluster, 3 primaries")):
    if name in rows:
        med = [statistics.median(c) for c in zip(*rows[name])]
        print("| %s | %s |" % (label, " | ".join("{:,.0f}".format(m) for m in med)))
EOF
)
table+=$'\n\n'$(python3 - "$TMP/scale" "$TMP/propagation" "$KEYS" "$REPS" "$PROPAGATIONS" <<'EOF'
import statistics, sys
rows, prop = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault(f[0], []).append(list(map(float, f[1:])))
for line in open(sys.argv[2]):
    f = line.split()
    prop.setdefault(f[0], []).append(list(map(float, f[1:])))
print("| one store, N daemons (1 writer + N-1 followers), %s keys, medians of %s "
      "| writer creates/s | stats/s, all daemons | reads/s, all daemons |" % (sys.argv[3], sys.argv[4]))
print("|---|---:|---:|---:|")
for name, label in (("single", "one Redis server"), ("cluster", "Redis Cluster, 3 primaries")):
    for d in (1, 2, 4):
        key = "%s-%d" % (name, d)
        if key in rows:
            med = [statistics.median(c) for c in zip(*rows[key])]
            print("| %s, %d daemon%s | %s |" % (label, d, "s" if d > 1 else "",
                                               " | ".join("{:,.0f}".format(m) for m in med)))
print()
print("| writer's close to a follower's read of the new value, %s overwrites, medians of %s "
      "| p50 ms | p99 ms |" % (sys.argv[5], sys.argv[4]))
print("|---|---:|---:|")
for name, label in (("single", "one Redis server"), ("cluster", "Redis Cluster, 3 primaries")):
    if name in prop:
        med = [statistics.median(c) for c in zip(*prop[name])]
        print("| %s | %.2f | %.2f |" % (label, med[0], med[1]))
EOF
)
table+=$'\n\n'$(python3 - "$TMP/takeover" "$REPS" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault((f[0], f[1]), []).append(float(f[2]))
print("| the writer goes: s until its follower's first write succeeds, medians of %s "
      "| after kill -9 | after unmount |" % sys.argv[2])
print("|---|---:|---:|")
for name, label in (("single", "one Redis server"), ("cluster", "Redis Cluster, 3 primaries")):
    if (name, "kill") in rows:
        print("| %s | %.2f | %.2f |" % (label, statistics.median(rows[(name, "kill")]),
                                      statistics.median(rows[(name, "unmount")])))
EOF
)
echo "$table"
[ -z "$OUT" ] || echo "$table" >"$OUT"
