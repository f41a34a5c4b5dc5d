#!/usr/bin/env bash
# bench-cluster.sh -- nadbfs on one Redis server and on a Redis Cluster of
# 3 primaries, side by side: creates, stats and reads of small keys spread
# over several namespaces, one daemon each (the store lock still allows
# one; issue "One store, many hosts" adds more).  Each repetition runs the
# targets interleaved on fresh stores; the table gives medians.
#
#   tools/bench-cluster.sh [--keys N] [--reps N] [--build DIR] [--out FILE]
#
# The servers are private (loopback, free ports, AOF with appendfsync
# always, files in a temp folder) and stopped at the end, whatever happens.
set -u
KEYS=2000      # keys a repetition creates, stats and reads
REPS=3         # repetitions; medians are reported
NAMESPACES=4   # the keys are spread over this many namespaces
BUILD=$(cd "$(dirname "$0")/.." && pwd)/build
OUT=""
while [ $# -gt 0 ]; do
	case $1 in
	--keys) KEYS=$2; shift ;;
	--reps) REPS=$2; shift ;;
	--build) BUILD=$2; shift ;;
	--out) OUT=$2; shift ;;
	-h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

# One repetition of TARGET on a fresh store: "creates stats reads" per second.
run_one() {
	local target=$1 rep=$2 mnt=$TMP/mnt-$1
	mkdir -p "$mnt"
	"$BUILD/nadbfs" -o "log=$TMP/$target.log" "${URL[$target]}/r$rep" "$mnt" || return 1
	python3 - "$mnt" "$KEYS" "$NAMESPACES" <<'EOF'
import os, sys, time
mnt, n, nns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
print("%.0f %.0f %.0f" % (creates, stats, reads))
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

table=$(python3 - "$TMP/results" "$KEYS" "$NAMESPACES" "$REPS" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) == 4:
        rows.setdefault(f[0], []).append(list(map(float, f[1:])))
print("| nadbfs, 1 daemon, %s keys of 100 B in %s namespaces, medians of %s | creates/s | stats/s | reads/s |"
      % (sys.argv[2], sys.argv[3], sys.argv[4]))
print("|---|---:|---:|---:|")
for name, label in (("single", "one Redis server"), ("cluster", "Redis Cluster, 3 primaries")):
    if name in rows:
        med = [statistics.median(c) for c in zip(*rows[name])]
        print("| %s | %s |" % (label, " | ".join("{:,.0f}".format(m) for m in med)))
EOF
)
echo "$table"
[ -z "$OUT" ] || echo "$table" >"$OUT"
