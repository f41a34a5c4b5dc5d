#!/usr/bin/env bash
# bench.sh -- nadbfs side by side with passthrough_ll and the bare disk.
#
# Builds tools/bench.c (one workload on one directory; by make) and libfuse's example
# passthrough_ll into build/bench/, mounts the targets under one mktemp -d
# folder (nadbfs-redis: a store on a private redis-server started for the
# run, its files in that folder), and for every repetition runs each workload
# on each target in turn (the order rotates between repetitions), remounting
# where a workload needs it (cold reads, store sizes); redis-benchmark SET
# and GET on that server are the reference beside nadbfs-redis.  Redis
# memory per key (tools/bench-redis-memory.py, its own private server).
# nadbfs alone: then the hot
# paths again on two nadbfs mounts side by side, one with -o stats=off; a
# large store (tools/bench-nadb.py: tags, reaping); and compaction's pauses
# in the foreground (tools/bench-compact.py).  Then it takes medians and
# writes build/bench/results.md, results.csv, raw.csv and ratios.png (via
# tools/bench-plot.gp).  Everything it mounted is unmounted on exit, and every
# daemon it started has exited, whatever happens.
#
# Exit status: 0 when every workload ran without error on every target, 1
# otherwise (the tables are still written, with the errors listed).
#
# Usage: tools/bench.sh [--quick | --full] [options]      (--help for more)
set -u -o pipefail

here=$(cd "$(dirname "$0")/.." && pwd -P)
build=$here/build
bin=$build/bench

usage() {
	cat <<'EOF'
usage: tools/bench.sh [--quick | --full] [options]

sizes:
  (default)      K=5,000 keys, 3 repetitions, 256 MiB large file,
                 1,000 dedup copies, nadbfs alone at 100,000 keys,
                 compaction of 256 MiB, Redis memory at 100,000 keys  (~10 min)
  --quick        smoke test for CI: K=200, 1 repetition, tiny sizes (< 2 min);
                 no figure is judged, only errors fail it
  --full         K=10,000, 5 repetitions, 1 GiB large file,
                 nadbfs alone at 1,000,000 keys, compaction of 1 GiB,
                 Redis memory at 100,000 keys (~40 min)
options (after the size, which sets them all):
  --keys N          keys per workload (passthrough_ll allows <= 14,000)
  --value-size N    bytes per value (default 4096)
  --threads N       threads for the multi-threaded create (default 4)
  --reps N          repetitions; the tables show medians
  --large SIZE      large file size, e.g. 256M, 1G
  --rand-ops N      random 4 KiB reads and writes in the large file
  --copies N        dedup copies of one 1 MiB file
  --big-keys N      keys for the nadbfs-alone figures (0: skip them)
  --compact-size SIZE  data written (in 64 KiB keys, 70% then deleted) for
                    compaction's foreground pauses, e.g. 256M (0: skip)
  --no-stats-compare   skip the hot paths on nadbfs with -o stats=off beside
                    stats on (one pair of fresh mounts per repetition)
  --mounts N        mounts timed for the nadbfs mount time
  --redis-requests N  requests of each redis-benchmark test (SET, GET),
                    1 client (default: --keys)
  --mem-keys N      keys loaded for Redis's memory per key (0: skip)
  --targets LIST    comma-separated from native,passthrough,nadbfs,nadbfs-redis
                    (default: all four; nadbfs-redis needs redis-server,
                    redis-cli and redis-benchmark)
  --nadbfs PATH     daemon to test (default build/nadbfs)
  --out DIR         where results go (default build/bench)
  --phase-timeout S give up on one workload after S seconds (default 1800)
EOF
}

say() { printf '%s\n' "$*" >&2; }
die() { say "bench.sh: $*"; exit 2; }

# ---- options ----------------------------------------------------------------

size_name=default
KEYS=5000 VALUE_SIZE=4096 THREADS=4 REPS=3 LARGE=256M RAND_OPS=5000
COPIES=1000 BIG_KEYS=100000 MOUNTS=5 PHASE_TIMEOUT=1800
COMPACT_SIZE=256M COMPACT_BASELINE=5 STATS_COMPARE=1
MEM_KEYS=100000 REDIS_REQUESTS=""
TARGETS="" NADBFS=$build/nadbfs OUT=$build/bench
set_size() {
	case $1 in
	quick) KEYS=200 REPS=1 LARGE=8M RAND_OPS=500 COPIES=20 BIG_KEYS=2000
	       MOUNTS=2 COMPACT_SIZE=16M COMPACT_BASELINE=2 MEM_KEYS=2000 ;;
	full)  KEYS=10000 REPS=5 LARGE=1G RAND_OPS=50000 COPIES=1000
	       BIG_KEYS=1000000 MOUNTS=10 COMPACT_SIZE=1G MEM_KEYS=100000 ;;
	esac
	size_name=$1
}
args=("$@")
while [ $# -gt 0 ]; do
	case $1 in
	--quick) set_size quick ;;
	--full) set_size full ;;
	--keys) KEYS=$2; shift ;;
	--value-size) VALUE_SIZE=$2; shift ;;
	--threads) THREADS=$2; shift ;;
	--reps) REPS=$2; shift ;;
	--large) LARGE=$2; shift ;;
	--rand-ops) RAND_OPS=$2; shift ;;
	--copies) COPIES=$2; shift ;;
	--big-keys) BIG_KEYS=$2; shift ;;
	--compact-size) COMPACT_SIZE=$2; shift ;;
	--no-stats-compare) STATS_COMPARE=0 ;;
	--redis-requests) REDIS_REQUESTS=$2; shift ;;
	--mem-keys) MEM_KEYS=$2; shift ;;
	--mounts) MOUNTS=$2; shift ;;
	--targets) TARGETS=$2; shift ;;
	--nadbfs) NADBFS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--phase-timeout) PHASE_TIMEOUT=$2; shift ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; die "unknown option: $1" ;;
	esac
	shift
done
for n in "$KEYS" "$VALUE_SIZE" "$THREADS" "$REPS" "$RAND_OPS" "$COPIES" \
	 "$BIG_KEYS" "$MOUNTS" "$PHASE_TIMEOUT" "$MEM_KEYS" "${REDIS_REQUESTS:-$KEYS}"; do
	case $n in ''|*[!0-9]*) die "not a number: '$n'" ;; esac
done
[[ $COMPACT_SIZE =~ ^[0-9]+[kKmMgG]?$ ]] ||
	die "not a size: '$COMPACT_SIZE' (e.g. 256M, 1G, 0)"
[[ ! $COMPACT_SIZE =~ ^0+[kKmMgG]?$ ]] || COMPACT_SIZE=0
if [ "$REPS" -lt 1 ] || [ "$KEYS" -lt 1 ] || [ "$MOUNTS" -lt 1 ]; then
	die "--reps, --keys and --mounts must be at least 1"
fi

[ -n "$REDIS_REQUESTS" ] || REDIS_REQUESTS=$KEYS
have_redis() { command -v redis-server && command -v redis-cli && command -v redis-benchmark; } >/dev/null
if [ -z "$TARGETS" ]; then
	TARGETS=native,passthrough,nadbfs,nadbfs-redis
	if [ ! -x "$NADBFS" ]; then
		say "bench.sh: WARNING: $NADBFS is not built: running without nadbfs"
		TARGETS=native,passthrough
	elif ! have_redis; then
		say "bench.sh: WARNING: no redis-server, redis-cli or redis-benchmark (apt-get install redis-server redis-tools): running without nadbfs-redis"
		TARGETS=native,passthrough,nadbfs
	fi
fi
IFS=, read -r -a targets <<<"$TARGETS"
has_target() { case ",$TARGETS," in *",$1,"*) return 0 ;; esac; return 1; }
for t in "${targets[@]}"; do
	case $t in native|passthrough|nadbfs|nadbfs-redis) ;; *) die "unknown target: $t" ;; esac
done
# Any nadbfs target, on a directory or on Redis.
has_nadbfs() { has_target nadbfs || has_target nadbfs-redis; }
if has_nadbfs; then
	[ -x "$NADBFS" ] || die "no nadbfs daemon at $NADBFS (make all)"
	NADBFS=$(cd "$(dirname "$NADBFS")" && pwd -P)/$(basename "$NADBFS")
	NADB_TOOL=$(dirname "$NADBFS")/nadb
fi
if has_target nadbfs-redis; then
	have_redis || die "nadbfs-redis needs redis-server, redis-cli and redis-benchmark (apt-get install redis-server redis-tools)"
	[ -x "$NADB_TOOL" ] || die "no nadb tool at $NADB_TOOL (make all)"
fi
# passthrough_ll keeps one open fd per inode the kernel knows; the fd limit
# here is 20,000 and a repetition holds up to K keys + ~1,100 other inodes.
if has_target passthrough && [ "$KEYS" -gt 14000 ]; then
	die "passthrough_ll needs --keys <= 14000 (one fd per inode, fd limit $(ulimit -n))"
fi

# ---- build ------------------------------------------------------------------

mkdir -p "$bin" "$OUT" || die "cannot create $bin"
BENCH=$bin/bench
PTLL=$bin/passthrough_ll
make -s -C "$here" BUILD="$build" "$BENCH" \
	|| die "cannot build tools/bench.c (make)"
if has_target passthrough; then
	ptll_src=/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c
	[ -f "$ptll_src" ] || die "no $ptll_src (apt-get install libfuse3-dev)"
	# shellcheck disable=SC2046
	cc -O2 -Wall -o "$PTLL" "$ptll_src" $(pkg-config --cflags --libs fuse3) ||
		die "cannot build passthrough_ll"
fi

# ---- targets: where they live, mounting and unmounting ------------------------

# The redis-servers whose working directory is under folder $1: ours, as
# every redis-server we start (here or in tools/bench-redis-memory.py) has
# its --dir, where it chdirs, in the run's temp folder.
redis_servers_under() {
	local d cwd
	for d in /proc/[0-9]*; do
		[ "$(cat "$d/comm" 2>/dev/null)" = redis-server ] || continue
		cwd=$(readlink "$d/cwd" 2>/dev/null) || continue
		case $cwd/ in "$1"/*) echo "${d#/proc/}" ;; esac
	done
}

# A run that was killed outright (SIGKILL, a lost machine) cannot clean up
# after itself: unmount and remove what such runs left, known by an owner
# pid that is no longer alive, and stop its redis-servers.  Runs still in
# progress are left alone.
reap_stale_runs() {
	local dir owner mnt pid
	for dir in "${TMPDIR:-/tmp}"/nadb-bench.*; do
		[ -f "$dir/owner" ] || continue
		owner=$(cat "$dir/owner")
		if [ -z "$owner" ] || kill -0 "$owner" 2>/dev/null; then continue; fi
		say "bench.sh: cleaning up after the killed run in $dir"
		for mnt in "$dir/pt-mnt" "$dir/nadb-mnt" "$dir/stats-on-mnt" \
			"$dir/stats-off-mnt" "$dir/compact-mnt" "$dir/redis-mnt"; do
			grep -q " $mnt " /proc/self/mountinfo || continue
			fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
		done
		for pid in $(redis_servers_under "$dir"); do kill -TERM "$pid" 2>/dev/null; done
		sleep 1
		grep -q " $dir/" /proc/self/mountinfo || rm -rf "$dir"
	done
}
reap_stale_runs

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nadb-bench.XXXXXX") || die "mktemp failed"
echo $$ >"$TMP/owner"
LOGS=$TMP/logs
declare -A MNT_OF BACKING_OF WORK_OF PID_OF MOUNTED BROKEN NADBFS_OPTIONS
MNT_OF[native]=$TMP/native;      BACKING_OF[native]=$TMP/native
MNT_OF[passthrough]=$TMP/pt-mnt; BACKING_OF[passthrough]=$TMP/pt-src
MNT_OF[nadbfs]=$TMP/nadb-mnt;    BACKING_OF[nadbfs]=$TMP/nadb-store
# nadbfs on Redis: BACKING_OF is the store's URL once the server is up
# (start_redis); the daemon logs to a file, as it has no store folder.
MNT_OF[nadbfs-redis]=$TMP/redis-mnt; BACKING_OF[nadbfs-redis]=""
NADBFS_OPTIONS[nadbfs-redis]=log=$LOGS/nadbfs-redis-daemon.log
# More nadbfs mounts for the nadbfs-alone sections, each with its own store
# and its own -o options: stats on and off side by side, and a store whose
# flusher never compacts by itself (compaction is then timed on demand).
MNT_OF[stats-on]=$TMP/stats-on-mnt;   BACKING_OF[stats-on]=$TMP/stats-on-store
MNT_OF[stats-off]=$TMP/stats-off-mnt; BACKING_OF[stats-off]=$TMP/stats-off-store
MNT_OF[compact]=$TMP/compact-mnt;     BACKING_OF[compact]=$TMP/compact-store
NADBFS_OPTIONS[stats-on]=stats=on
NADBFS_OPTIONS[stats-off]=stats=off
NADBFS_OPTIONS[compact]=compact_garbage=0
mounted_targets=(passthrough nadbfs nadbfs-redis stats-on stats-off compact)
mkdir -p "$LOGS"
for t in "${mounted_targets[@]}"; do touch "$LOGS/$t.log"; done
# nadb keeps keys at /DATABASE/NAMESPACE/...: use the same layout everywhere.
for t in native "${mounted_targets[@]}"; do WORK_OF[$t]=${MNT_OF[$t]}/bench/ns; done

is_mounted() { grep -q " ${MNT_OF[$1]} " /proc/self/mountinfo; }

# The daemon serving a mount point: the process running BINARY whose command
# line names the mount point (it may have daemonized, so $! is no use).
pid_serving() {
	local binary=$1 mnt=$2 d exe
	for d in /proc/[0-9]*; do
		exe=$(readlink "$d/exe" 2>/dev/null) || continue
		[ "${exe% (deleted)}" = "$binary" ] || continue
		tr '\0' '\n' <"$d/cmdline" 2>/dev/null | grep -qxF "$mnt" || continue
		echo "${d#/proc/}"
		return 0
	done
	return 1
}

has_exited() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
	[ -z "$state" ] || [ "$state" = Z ]
}

# Wait up to $2 seconds for pid $1 to exit.
wait_for_exit() {
	local pid=$1 deadline=$((SECONDS + $2))
	while ! has_exited "$pid"; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.05
	done
}

# Mount target $1 (a no-op for native); sets MOUNT_SECONDS.  nadbfs mounts
# get -o NADBFS_OPTIONS[target] when there is one.
mount_target() {
	local t=$1 line cmd
	MOUNT_SECONDS=0
	mkdir -p "${MNT_OF[$t]}"
	case $t in
	native) return 0 ;;
	passthrough)
		mkdir -p "${BACKING_OF[$t]}"
		cmd=("$PTLL" -o "source=${BACKING_OF[$t]},xattr" "${MNT_OF[$t]}") ;;
	*)
		cmd=("$NADBFS_RUN")
		[ -z "${NADBFS_OPTIONS[$t]:-}" ] || cmd+=(-o "${NADBFS_OPTIONS[$t]}")
		cmd+=("${BACKING_OF[$t]}" "${MNT_OF[$t]}") ;;
	esac
	local seen
	seen=$(wc -l <"$LOGS/$t.log")
	line=$(timeout -k 5 120 "$BENCH" --phase mount --dir "${MNT_OF[$t]}" \
		-- "${cmd[@]}" 2>>"$LOGS/$t.log")
	local rc=$?
	if is_mounted "$t"; then MOUNTED[$t]=1; fi
	PID_OF[$t]=$(pid_serving "${cmd[0]}" "${MNT_OF[$t]}") || PID_OF[$t]=""
	if [ $rc -ne 0 ] || [ -z "${PID_OF[$t]}" ]; then
		note_error mount "$t" "could not mount: $(tail -n +$((seen + 1)) "$LOGS/$t.log" | head -n 3 | tr '\n' ' ')"
		return 1
	fi
	MOUNT_SECONDS=${line##*,}
}

# Unmount target $1 and wait until its daemon has exited; sets
# UNMOUNT_SECONDS.  A daemon still there after 120 s is killed (it is ours).
unmount_target() {
	local t=$1 pid=${PID_OF[$1]:-} start
	UNMOUNT_SECONDS=0
	[ "$t" != native ] || return 0
	start=$(date +%s.%N)
	if [ "${MOUNTED[$t]:-0}" = 1 ] || is_mounted "$t"; then
		fusermount3 -u "${MNT_OF[$t]}" 2>>"$LOGS/$t.log" ||
			fusermount3 -uz "${MNT_OF[$t]}" 2>>"$LOGS/$t.log" ||
			say "bench.sh: cannot unmount ${MNT_OF[$t]}"
	fi
	MOUNTED[$t]=0
	PID_OF[$t]=""
	[ -n "$pid" ] || return 0
	if ! wait_for_exit "$pid" 120; then
		note_error unmount "$t" "daemon $pid still running 120 s after unmount: killed"
		kill -TERM "$pid" 2>/dev/null
		wait_for_exit "$pid" 10 || kill -KILL "$pid" 2>/dev/null
		wait_for_exit "$pid" 10
	fi
	UNMOUNT_SECONDS=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.3f", b-a}')
}

remount_target() { unmount_target "$1" && mount_target "$1"; }

# ---- the private redis-server of nadbfs-redis ----------------------------------
# Loopback only, a free port, its files in $TMP/redis, no RDB snapshots, an
# AOF fsync'd on every write (what README "Stores on Redis" advises).  It
# serves nadbfs-redis's store and redis-benchmark's reference, nothing else.

REDIS_DIR=$TMP/redis REDIS_PORT="" REDIS_PID=""
REDIS_START_SECONDS=10   # wait at most this long for the server to answer

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
redis_used_memory() { # INFO memory used_memory, bytes
	redis_cli info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'
}

# Start the server on the first free port of a few tried; the server that
# answers must be ours (another may hold the port).  Sets REDIS_PORT,
# REDIS_PID and the store's URL.
start_redis() {
	local i port pid deadline
	mkdir -p "$REDIS_DIR"
	for ((i = 0; i < 20; i++)); do
		port=$((20000 + RANDOM % 40000))
		redis-server --port "$port" --bind 127.0.0.1 --dir "$REDIS_DIR" \
			--save "" --appendonly yes --appendfsync always \
			--logfile "$LOGS/redis-server.log" </dev/null >/dev/null 2>&1 &
		pid=$!
		REDIS_PID=$pid
		deadline=$((SECONDS + REDIS_START_SECONDS))
		while ! has_exited "$pid" && [ $SECONDS -lt $deadline ]; do
			if redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
				grep -q "^process_id:$pid"; then
				REDIS_PORT=$port
				BACKING_OF[nadbfs-redis]=redis://127.0.0.1:$port/bench
				return 0
			fi
			sleep 0.05
		done
		stop_redis
	done
	return 1
}

# Stop our server (SIGTERM: it shuts down; SIGKILL after 30 s).
stop_redis() {
	local pid=$REDIS_PID
	REDIS_PID="" REDIS_PORT=""
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	wait_for_exit "$pid" 30 || { kill -KILL "$pid" 2>/dev/null; wait_for_exit "$pid" 10; }
	wait "$pid" 2>/dev/null
}

# shellcheck disable=SC2317  # called by the trap
cleanup() {
	local status=$? pid
	trap - EXIT INT TERM HUP
	for t in "${mounted_targets[@]}"; do
		if [ -n "${PID_OF[$t]:-}" ] || is_mounted "$t"; then unmount_target "$t"; fi
	done
	stop_redis
	# and any server a killed tools/bench-redis-memory.py left behind
	for pid in $(redis_servers_under "$TMP"); do
		kill -TERM "$pid" 2>/dev/null
		wait_for_exit "$pid" 30 || kill -KILL "$pid" 2>/dev/null
	done
	if grep -q " $TMP/" /proc/self/mountinfo; then
		say "bench.sh: something is still mounted under $TMP: left it in place"
	else
		rm -rf "$TMP"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Run a private copy of the daemon: a rebuild during the run must not mix
# two versions in one table.
if has_nadbfs; then
	cp "$NADBFS" "$TMP/nadbfs" || die "cannot copy $NADBFS"
	NADBFS_RUN=$TMP/nadbfs
fi
if has_target nadbfs-redis; then
	cp "$NADB_TOOL" "$TMP/nadb" || die "cannot copy $NADB_TOOL"
	NADB_RUN=$TMP/nadb
	start_redis || die "no redis-server could start (see $LOGS/redis-server.log)"
fi

# Empty target $1's storage and mount it afresh.
fresh_target() {
	local t=$1
	unmount_target "$t"
	! is_mounted "$t" || die "${MNT_OF[$t]} is still mounted"
	BROKEN[$t]=0
	if [ "$t" = nadbfs-redis ]; then
		# the server is the store's alone: empty it
		if [ -z "$REDIS_PORT" ] || [ "$(redis_cli flushall 2>&1)" != OK ]; then
			note_error setup "$t" "FLUSHALL failed on the redis-server (port ${REDIS_PORT:-none})"
			BROKEN[$t]=1
			return 1
		fi
	else
		rm -rf "${BACKING_OF[$t]}"
	fi
	[ "$t" = native ] || rm -rf "${MNT_OF[$t]}"
	mount_target "$t" || { BROKEN[$t]=1; return 1; }
	mkdir -p "${WORK_OF[$t]}" 2>>"$LOGS/$t.log" || {
		note_error setup "$t" "mkdir -p ${WORK_OF[$t]} failed"
		BROKEN[$t]=1
	}
}

# Set STORE_BYTES to what target $1 takes on disk (du -sb of its store;
# nadbfs is unmounted first, so that everything it buffers is written) or,
# on Redis, in memory (used_memory, unmounted first too).
measure_store_bytes() {
	local t=$1
	case $t in nadbfs | nadbfs-redis) unmount_target "$t" ;; esac
	if [ "$t" = nadbfs-redis ]; then
		STORE_BYTES=$(redis_used_memory)
	else
		STORE_BYTES=$(du -sb "${BACKING_OF[$t]}" | cut -f1)
	fi
	case $t in nadbfs | nadbfs-redis) mount_target "$t" || BROKEN[$t]=1 ;; esac
}

rss_anon_mib() {
	awk '/^RssAnon:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null
}

# ---- running workloads and recording their figures --------------------------

RAW=$OUT/raw.csv
ERRORS=$TMP/errors
: >"$ERRORS"
echo "workload,target,rep,value,unit,ops,bytes,seconds" >"$RAW"
REP=0

note_error() {
	echo "$1,$2,$REP,$3" >>"$ERRORS"
	say "ERROR [$1 on $2, repetition $REP]: $3"
}

record() { # workload target value unit [ops bytes seconds]
	echo "$1,$2,$REP,$3,$4,${5:-},${6:-},${7:-}" >>"$RAW"
	say "  $(printf '%-12s %-12s %14s %s' "$1" "$2" "$3" "$4")"
}

# Run one bench phase on target $2; on success RESULT holds its output line
# "result,PHASE,OPS,BYTES,SECONDS".  A failure marks the target broken for the
# rest of the repetition (its later workloads are skipped).
run_bench() {
	local workload=$1 t=$2 rc msg
	shift 2
	RESULT=""
	[ "${BROKEN[$t]:-0}" = 0 ] || return 1
	RESULT=$(timeout -k 10 "$PHASE_TIMEOUT" "$BENCH" "$@" 2>"$TMP/stderr")
	rc=$?
	[ $rc -ne 0 ] || return 0
	msg=$(head -n 3 "$TMP/stderr" | cut -c1-300 | tr '\n' ' ')
	[ $rc -ne 124 ] && [ $rc -ne 137 ] || msg="timed out after $PHASE_TIMEOUT s. $msg"
	if [ "$t" != native ] && [ -n "${PID_OF[$t]:-}" ] && has_exited "${PID_OF[$t]}"; then
		msg="$msg (the $t daemon has died)"
	fi
	note_error "$workload" "$t" "${msg:-exit status $rc}"
	BROKEN[$t]=1
	return 1
}

# Run a timed workload and record its figure in UNIT (ops/s or MB/s).
measure() { # workload unit target bench-args...
	local workload=$1 unit=$2 t=$3 ops bytes seconds value
	shift 3
	run_bench "$workload" "$t" "$@" || return 1
	IFS=, read -r _ _ ops bytes seconds <<<"$RESULT"
	value=$(awk -v o="$ops" -v b="$bytes" -v s="$seconds" -v u="$unit" \
		'BEGIN { if (s <= 0) s = 1e-9; printf "%.6g", (u == "MB/s") ? b / s / 1e6 : o / s }')
	record "$workload" "$t" "$value" "$unit" "$ops" "$bytes" "$seconds"
}

# Run an untimed step (setup or cleanup); its errors still count.
untimed() { run_bench "$@"; }

# The targets in the order of repetition $1: rotated by one each time.
targets_in_turn() {
	local n=${#targets[@]} i
	for ((i = 0; i < n; i++)); do echo "${targets[(i + $1) % n]}"; done
}

# ---- one repetition -----------------------------------------------------------

run_repetition() {
	local order t keys=(--keys "$KEYS" --value-size "$VALUE_SIZE")
	mapfile -t order < <(targets_in_turn "$REP")
	say "== repetition $REP of $REPS (order: ${order[*]})"
	for t in "${order[@]}"; do fresh_target "$t"; done

	# create (issue item 1), one thread (into c1, removed right after), then N threads
	for t in "${order[@]}"; do
		measure create-1 ops/s "$t" --phase create --dir "${WORK_OF[$t]}/c1" "${keys[@]}" &&
			untimed create-1 "$t" --phase unlink --dir "${WORK_OF[$t]}/c1" "${keys[@]}"
	done
	for t in "${order[@]}"; do
		measure create-N ops/s "$t" --phase create --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --threads "$THREADS"
	done
	# N threads again, each in a directory of its own: creates in one
	# directory queue on its lock in the kernel (the VFS holds the parent's
	# i_rwsem across LOOKUP and CREATE), on every target
	for t in "${order[@]}"; do
		measure create-Nd ops/s "$t" --phase create --dir "${WORK_OF[$t]}/cNd" "${keys[@]}" --threads "$THREADS" --dirs "$THREADS" &&
			untimed create-Nd "$t" --phase unlink --dir "${WORK_OF[$t]}/cNd" "${keys[@]}" --threads "$THREADS" --dirs "$THREADS"
	done
	# each key's first stat after it was written (issue 15's first row)
	for t in "${order[@]}"; do measure stat-first ops/s "$t" --phase stat --dir "${WORK_OF[$t]}/keys" "${keys[@]}"; done
	# fs_mark-style durable creates (fsync each file before closing it), one
	# thread then N, of contents no other phase writes, removed right after
	for t in "${order[@]}"; do
		measure fsync-1 ops/s "$t" --phase create --dir "${WORK_OF[$t]}/f1" "${keys[@]}" --fsync --generation 5 &&
			untimed fsync-1 "$t" --phase unlink --dir "${WORK_OF[$t]}/f1" "${keys[@]}"
	done
	for t in "${order[@]}"; do
		measure fsync-N ops/s "$t" --phase create --dir "${WORK_OF[$t]}/fN" "${keys[@]}" --fsync --generation 6 --threads "$THREADS" &&
			untimed fsync-N "$t" --phase unlink --dir "${WORK_OF[$t]}/fN" "${keys[@]}"
	done
	# warm stat and read (items 2, 3; one untimed pass first), listing (4)
	for t in "${order[@]}"; do measure stat ops/s "$t" --phase stat --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --warmup; done
	for t in "${order[@]}"; do measure read-warm ops/s "$t" --phase read --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --warmup; done
	# Redis itself beside nadbfs-redis's creates and warm reads
	if has_target nadbfs-redis; then redis_reference; fi
	for t in "${order[@]}"; do measure readdir entries/s "$t" --phase readdir --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --warmup --passes 5; done
	# overwrite (item 5, generation 1), rename-over (generation 2)
	for t in "${order[@]}"; do measure overwrite ops/s "$t" --phase overwrite --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --generation 1; done
	for t in "${order[@]}"; do measure rename-over ops/s "$t" --phase rename --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --generation 2; done
	# cold read after a remount (item 3): checks that generation 2 survived it
	for t in "${order[@]}"; do
		[ "${BROKEN[$t]}" = 1 ] || remount_target "$t" || BROKEN[$t]=1
	done
	for t in "${order[@]}"; do measure read-cold ops/s "$t" --phase read --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --generation 2; done
	# extended attributes (item 9)
	for t in "${order[@]}"; do measure setxattr ops/s "$t" --phase setxattr --dir "${WORK_OF[$t]}/keys" "${keys[@]}"; done
	for t in "${order[@]}"; do measure getxattr ops/s "$t" --phase getxattr --dir "${WORK_OF[$t]}/keys" "${keys[@]}"; done
	# unlink (item 6)
	for t in "${order[@]}"; do measure unlink ops/s "$t" --phase unlink --dir "${WORK_OF[$t]}/keys" "${keys[@]}"; done
	# find over a 100-directory tree (item 4) of K keys (made untimed, then removed)
	for t in "${order[@]}"; do
		untimed find "$t" --phase create --dir "${WORK_OF[$t]}/tree" "${keys[@]}" --dirs 100 --threads "$THREADS"
	done
	for t in "${order[@]}"; do measure find entries/s "$t" --phase find --dir "${WORK_OF[$t]}/tree" "${keys[@]}" --dirs 100 --warmup; done
	for t in "${order[@]}"; do
		untimed find "$t" --phase unlink --dir "${WORK_OF[$t]}/tree" "${keys[@]}" --dirs 100 --threads "$THREADS"
	done
	# the large file (item 7)
	for t in "${order[@]}"; do measure seq-write MB/s "$t" --phase seqwrite --dir "${WORK_OF[$t]}/large" --size "$LARGE"; done
	for t in "${order[@]}"; do measure seq-read MB/s "$t" --phase seqread --dir "${WORK_OF[$t]}/large"; done
	for t in "${order[@]}"; do measure rand-read ops/s "$t" --phase randread --dir "${WORK_OF[$t]}/large" --ops "$RAND_OPS"; done
	for t in "${order[@]}"; do measure rand-write ops/s "$t" --phase randwrite --dir "${WORK_OF[$t]}/large" --ops "$RAND_OPS" --generation 1; done
	for t in "${order[@]}"; do
		[ "${BROKEN[$t]}" = 1 ] || rm -rf "${WORK_OF[$t]}/large" ||
			{ note_error seq-write "$t" "rm -rf of the large file failed"; BROKEN[$t]=1; }
	done
	# dedup (item 8): copies of one 1 MiB file, and how much the store grew
	local before after
	for t in "${order[@]}"; do
		[ "${BROKEN[$t]}" = 0 ] || continue
		measure_store_bytes "$t"
		before=$STORE_BYTES
		measure dedup-copy MB/s "$t" --phase dedup --dir "${WORK_OF[$t]}/dedup" --copies "$COPIES" || continue
		measure_store_bytes "$t"
		after=$STORE_BYTES
		record dedup-growth "$t" "$(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.6g", (a - b) / 1048576}')" MiB
	done
}

# ---- Redis itself, the reference for nadbfs-redis -------------------------------
# What a user would pick instead: redis-benchmark SET and GET of VALUE_SIZE
# bytes, 1 client, REDIS_REQUESTS each, on nadbfs-redis's own server (same
# durability: an AOF fsync'd on every write); it uses one key,
# key:__rand_int__, deleted after.  Then SET alone with the AOF fsync'd
# every second (issue 15's reference for nadbfs's sets), on keys drawn
# with -r, deleted after too; its GET would miss a third of them, so the
# per-key table's GET is the first run's (no fsync in a GET).

redis_reference() {
	[ -n "$REDIS_PORT" ] || { note_error redis-set redis "no redis-server"; return 1; }
	redis_benchmark redis-set redis-get -t set,get || return 1
	# issue 15's reference: the AOF fsync'd every second, Redis's default
	# for appendonly and as durable as nadbfs's flush_interval; keys drawn
	# from as many as there are requests, mostly new ones, as nadbfs's
	# creates make (one key, always overwritten, is Redis's fastest case)
	redis_cli config set appendfsync everysec >/dev/null &&
		redis_benchmark redis-set-everysec - -t set -r "$REDIS_REQUESTS"
	redis_cli config set appendfsync always >/dev/null ||
		{ note_error redis-set redis "CONFIG SET appendfsync always failed"; return 1; }
}

redis_benchmark() { # set-workload get-workload|- [redis-benchmark options: -t set,get]
	local out set get
	out=$(timeout -k 10 "$PHASE_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" \
		-c 1 -n "$REDIS_REQUESTS" -d "$VALUE_SIZE" -q "${@:3}" 2>&1 | tr '\r' '\n')
	# "SET: 1234.57 requests per second, p50=0.767 msec"
	set=$(awk '$1 == "SET:" && $3 == "requests" { v = $2 } END { print v }' <<<"$out")
	get=$(awk '$1 == "GET:" && $3 == "requests" { v = $2 } END { print v }' <<<"$out")
	redis_cli del key:__rand_int__ >/dev/null 2>&1
	redis_cli --scan --pattern 'key:[0-9]*' | xargs -r -n 1000 redis-cli -h 127.0.0.1 \
		-p "$REDIS_PORT" del >/dev/null 2>&1
	[ "$2" != - ] || get=-
	if [ -z "$set" ] || [ -z "$get" ]; then
		note_error "$1" redis "redis-benchmark: $(grep -v '^ *$' <<<"$out" | tail -n 3 | cut -c1-200 | tr '\n' ' ')"
		return 1
	fi
	record "$1" redis "$set" ops/s "$REDIS_REQUESTS"
	[ "$2" = - ] || record "$2" redis "$get" ops/s "$REDIS_REQUESTS"
}

# ---- Redis memory per key --------------------------------------------------------
# tools/bench-redis-memory.py starts its own private redis-server (its files
# under $TMP, so cleanup stops it whatever happens), loads MEM_KEYS random
# values with nadb load and reads used_memory before and after; then the same
# into a directory store (du -sb).  See its header.

run_redis_memory() {
	local line name value rc msg
	REP=memory
	say "== nadbfs on Redis: memory per key, $MEM_KEYS keys of $(human_size "$VALUE_SIZE")"
	line=$(timeout -k 10 "$PHASE_TIMEOUT" python3 "$here/tools/bench-redis-memory.py" \
		--nadb "$NADB_RUN" --keys "$MEM_KEYS" --value-size "$VALUE_SIZE" --tmp "$TMP" \
		2>"$TMP/stderr")
	rc=$?
	while IFS=, read -r name value; do
		case $name in
		redis-mem-per-key | redis-mem-beyond-value) record "$name" nadbfs-redis "$value" bytes ;;
		redis-load-seconds) record "$name" nadbfs-redis "$value" s ;;
		dir-store-per-key | dir-store-beyond-value) record "$name" nadbfs "$value" bytes ;;
		dir-load-seconds) record "$name" nadbfs "$value" s ;;
		esac
	done <<<"$line"
	[ $rc -ne 0 ] || return 0
	msg=$(tail -n 1 "$TMP/stderr" | cut -c1-300)
	[ $rc -ne 124 ] && [ $rc -ne 137 ] || msg="timed out after $PHASE_TIMEOUT s. $msg"
	note_error redis-mem-per-key nadbfs-redis "${msg:-exit status $rc}"
	return 1
}

# ---- nadbfs alone at a large K ------------------------------------------------

run_nadb_alone() {
	local t=nadbfs dirs pid bytes i
	REP=big
	dirs=$(((BIG_KEYS + 999) / 1000))
	local big=(--dir "${WORK_OF[$t]}/big" --keys "$BIG_KEYS" --value-size "$VALUE_SIZE" --dirs "$dirs")
	say "== nadbfs alone: $BIG_KEYS keys in $dirs directories"
	fresh_target "$t" || return 1
	measure big-create ops/s "$t" --phase create "${big[@]}" --threads "$THREADS" || return 1
	pid=${PID_OF[$t]}
	record big-rss-created "$t" "$(rss_anon_mib "$pid")" MiB
	unmount_target "$t"
	record big-unmount "$t" "$UNMOUNT_SECONDS" s
	bytes=$(du -sb "${BACKING_OF[$t]}" | cut -f1)
	record big-store "$t" "$bytes" bytes
	record big-meta-per-key "$t" "$(awk -v s="$bytes" -v k="$BIG_KEYS" -v v="$VALUE_SIZE" \
		'BEGIN{printf "%.1f", (s - k * v) / k}')" bytes
	for ((i = 0; i < MOUNTS; i++)); do
		mount_target "$t" || return 1
		record big-mount "$t" "$(awk -v s="$MOUNT_SECONDS" 'BEGIN{printf "%.2f", s * 1000}')" ms
		[ $i -eq $((MOUNTS - 1)) ] || unmount_target "$t"
	done
	measure big-stat ops/s "$t" --phase stat "${big[@]}" --threads "$THREADS" || return 1
	record big-rss-stat "$t" "$(rss_anon_mib "${PID_OF[$t]}")" MiB
	nadb_later_features
	unmount_target "$t"
}

# ---- tag queries and reaping, on the big store --------------------------------
# The big store is mounted with BIG_KEYS keys under ${WORK_OF[nadbfs]}/big;
# tools/bench-nadb.py tags 1% of them, lists the queries, then expires 10%
# and times the reaper (see its header).
nadb_later_features() {
	local line
	if ! line=$(python3 "$here/tools/bench-nadb.py" "${MNT_OF[nadbfs]}" "${WORK_OF[nadbfs]}/big" 2>&1); then
		note_error big-tags nadbfs "$(echo "$line" | tail -n 1)"
		return 1
	fi
	while IFS=, read -r name value; do
		case $name in
		big-tags | big-tags-and) record "$name" nadbfs "$value" ms ;;
		big-reap) record "$name" nadbfs "$value" s ;;
		big-reap-p99) record "$name" nadbfs "$value" us ;;
		big-tags-count) TAGGED=$value ;;
		big-reap-count) REAPED=$value ;;
		esac
	done <<<"$line"
}

# ---- nadbfs with stats on and off ----------------------------------------------
# The hot paths that reach the daemon, on two fresh nadbfs stores mounted side
# by side, -o stats=on (the default) and -o stats=off, each workload on one
# and then the other; which goes first alternates between repetitions.

STATS_WORKLOADS=(create-1 stat read-warm setxattr getxattr unlink)

# Fail target $1 unless its /.stats says "stats": $2 (true or false).
check_stats_option() {
	local t=$1 want=$2
	[ "${BROKEN[$t]:-0}" = 0 ] || return 1
	grep -q "\"stats\": $want" "${MNT_OF[$t]}/.stats" 2>>"$LOGS/$t.log" && return 0
	note_error stats-mount "$t" "${MNT_OF[$t]}/.stats does not say \"stats\": $want"
	BROKEN[$t]=1
	return 1
}

run_stats_repetition() {
	local order=(stats-on stats-off) t keys=(--keys "$KEYS" --value-size "$VALUE_SIZE")
	[ $((REP % 2)) = 1 ] || order=(stats-off stats-on)
	say "== nadbfs with stats on and off, repetition $REP of $REPS (order: ${order[*]})"
	for t in "${order[@]}"; do
		fresh_target "$t" && check_stats_option "$t" "$([ "$t" = stats-on ] && echo true || echo false)"
	done
	for t in "${order[@]}"; do measure create-1 ops/s "$t" --phase create --dir "${WORK_OF[$t]}/keys" "${keys[@]}"; done
	for t in "${order[@]}"; do measure stat ops/s "$t" --phase stat --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --warmup; done
	for t in "${order[@]}"; do measure read-warm ops/s "$t" --phase read --dir "${WORK_OF[$t]}/keys" "${keys[@]}" --warmup; done
	for t in "${order[@]}"; do measure setxattr ops/s "$t" --phase setxattr --dir "${WORK_OF[$t]}/keys" "${keys[@]}"; done
	for t in "${order[@]}"; do measure getxattr ops/s "$t" --phase getxattr --dir "${WORK_OF[$t]}/keys" "${keys[@]}"; done
	for t in "${order[@]}"; do measure unlink ops/s "$t" --phase unlink --dir "${WORK_OF[$t]}/keys" "${keys[@]}"; done
	for t in "${order[@]}"; do unmount_target "$t"; done
}

# ---- compaction's pauses in the foreground -------------------------------------
# A fresh store that never compacts by itself; tools/bench-compact.py writes
# COMPACT_SIZE in 64 KiB keys, deletes 70%, and times the foreground loop
# before and during "echo compact > .ctl" (see its header).

run_compaction() {
	local t=compact line name value rc msg
	REP=compact
	say "== nadbfs alone: compaction of $(human_size "$(bytes_of "$COMPACT_SIZE")"), 70% deleted"
	fresh_target "$t" || return 1
	line=$(timeout -k 10 "$PHASE_TIMEOUT" python3 "$here/tools/bench-compact.py" \
		--bytes "$(bytes_of "$COMPACT_SIZE")" --baseline "$COMPACT_BASELINE" \
		"${MNT_OF[$t]}" "${WORK_OF[$t]}/compact" 2>"$TMP/stderr")
	rc=$?
	if [ $rc -ne 0 ]; then
		msg=$(tail -n 1 "$TMP/stderr" | cut -c1-300)
		[ $rc -ne 124 ] && [ $rc -ne 137 ] || msg="timed out after $PHASE_TIMEOUT s. $msg"
		note_error compact-seconds nadbfs "${msg:-exit status $rc}"
		unmount_target "$t"
		return 1
	fi
	while IFS=, read -r name value; do
		case $name in
		compact-seconds | compact-write-seconds | compact-base-seconds) record "$name" nadbfs "$value" s ;;
		compact-fg-max* | compact-base-max | compact-daemon-max) record "$name" nadbfs "$value" ms ;;
		compact-*-p50 | compact-*-p99) record "$name" nadbfs "$value" us ;;
		compact-*-ops | compact-daemon-requests) record "$name" nadbfs "$value" ops ;;
		compact-daemon-max-op) record "$name" nadbfs "$value" - ;;
		compact-*) record "$name" nadbfs "$value" MiB ;;
		esac
	done <<<"$line"
	unmount_target "$t"
}

# ---- tables -------------------------------------------------------------------

human_size() { # 268435456 -> 256 MiB
	awk -v b="$1" 'BEGIN {
		split("B KiB MiB GiB TiB", u, " "); i = 1
		while (b >= 1024 && i < 5 && b % 1024 == 0) { b /= 1024; i++ }
		printf "%s %s", b, u[i] }'
}
bytes_of() { # 256M -> 268435456
	awk -v s="$1" 'BEGIN { n = s + 0; c = substr(s, length(s))
		if (c == "K" || c == "k") n *= 1024; if (c == "M" || c == "m") n *= 1048576
		if (c == "G" || c == "g") n *= 1073741824; printf "%d", n }'
}

# workload|what it does|unit|goal (TARGET RATIO: nadbfs/TARGET >= RATIO;
# at-most X: nadbfs's own figure <= X; -: none)
catalogue() {
	local v large
	v=$(human_size "$VALUE_SIZE")
	large=$(human_size "$(bytes_of "$LARGE")")
	cat <<EOF
create-1|create $v files, 1 thread|ops/s|passthrough 1
create-N|create $v files, $THREADS threads|ops/s|passthrough 1
create-Nd|create $v files, $THREADS threads, each in a directory of its own|ops/s|passthrough 1
fsync-1|create $v files, fsync each (fs_mark), 1 thread|ops/s|passthrough 1
fsync-N|create $v files, fsync each (fs_mark), $THREADS threads|ops/s|passthrough 1
stat-first|stat right after the create (each key's first stat)|ops/s|native 0.5
stat|stat, warm|ops/s|native 0.5
read-warm|read $v, warm|ops/s|native 0.5
read-cold|read $v after a remount (native: still warm)|ops/s|-
readdir|listing a $KEYS-key directory (mean of 5)|entries/s|passthrough 1
find|find over 100 directories, $KEYS keys|entries/s|passthrough 1
overwrite|overwrite with O_TRUNC|ops/s|passthrough 1
rename-over|write a temp file, rename it over the key|ops/s|passthrough 1
setxattr|setxattr user.bench (32 bytes)|ops/s|passthrough 1
getxattr|getxattr user.bench|ops/s|-
unlink|unlink|ops/s|passthrough 1
seq-write|sequential write of $large (1 MiB writes, close)|MB/s|passthrough 0.8
seq-read|sequential read of $large|MB/s|passthrough 0.8
rand-read|random 4 KiB reads in the $large file|ops/s|-
rand-write|random 4 KiB writes in it (+ close)|ops/s|passthrough 1
dedup-copy|$COPIES copies of one 1 MiB file, as cp makes them|MB/s|-
dedup-growth|store growth for those copies (lower is better)|MiB|at-most 1.1
EOF
}

# The last figure NAME recorded for nadbfs (for the descriptions).
figure() { awk -F, -v w="$1" '$1 == w && $2 == "nadbfs" { v = $4 } END { print v }' "$RAW"; }

nadb_catalogue() {
	local at_1m="" fg base
	[ "$BIG_KEYS" -ge 1000000 ] || at_1m=" (goal is for 1M keys)"
	[ "$BIG_KEYS" = 0 ] || cat <<EOF
big-create|create $BIG_KEYS keys, $THREADS threads, 1000 per directory|ops/s|-
big-rss-created|RssAnon after creating them$at_1m|MiB|at-most 100
big-unmount|unmount until the daemon exits, after that|s|-
big-store|store size (du -sb) with $BIG_KEYS keys|bytes|-
big-meta-per-key|store bytes per key beyond the $VALUE_SIZE-byte values|bytes|at-most 200
big-mount|mount time with $BIG_KEYS keys (median of $MOUNTS)|ms|at-most 100
big-stat|stat all keys after a remount|ops/s|-
big-rss-stat|RssAnon after that stat$at_1m|MiB|at-most 100
big-tags|list /tags/TAG: ${TAGGED:-1%} tagged keys among $BIG_KEYS (find)|ms|-
big-tags-and|list /tags/TAG+TAG2: half of those|ms|-
big-reap|reap ${REAPED:-10%} keys expiring in the same second: until all gone|s|-
big-reap-p99|p99 of a stat loop while they are reaped|us|-
EOF
	[ "$COMPACT_SIZE" != 0 ] || return 0
	fg="$(figure compact-fg-ops) ops: open+read a kept 64 KiB key with a new fd, create+write+close a new 4 KiB key"
	base="the same loop in the $(figure compact-base-seconds) s before compaction"
	cat <<EOF
compact-seconds|compaction (echo compact > .ctl) after writing $(human_size "$(bytes_of "$COMPACT_SIZE")") in 64 KiB keys and deleting 70%|s|-
compact-garbage-before|garbage_bytes (.stats) before it|MiB|-
compact-garbage-after|garbage_bytes after it|MiB|-
compact-reclaimed|pack garbage reclaimed by it|MiB|-
compact-fg-p50|foreground op during compaction, p50 ($fg)|us|-
compact-fg-p99|foreground op during compaction, p99|us|-
compact-fg-max|foreground op during compaction, max (slowest read $(figure compact-fg-max-read) ms, write $(figure compact-fg-max-write) ms)|ms|at-most 5
compact-base-p50|$base, p50 ($(figure compact-base-ops) ops)|us|-
compact-base-p99|$base, p99|us|-
compact-base-max|$base, max|ms|-
compact-daemon-p99|the daemon's view (.metrics histograms) of the $(figure compact-daemon-requests) requests it answered during compaction, p99 (bucket bound)|us|-
compact-daemon-max|the daemon's view, slowest request: $(figure compact-daemon-max-op) (bucket bound; the .ctl write left out)|ms|-
EOF
}

# Redis's memory per key (run_redis_memory); the 5th field is the target.
redis_memory_catalogue() {
	local v
	v=$(human_size "$VALUE_SIZE")
	[ "$MEM_KEYS" -gt 0 ] || return 0
	cat <<EOF
redis-mem-per-key|Redis used_memory per key: $MEM_KEYS keys of $v, incompressible, by nadb load into a fresh server|bytes|-|nadbfs-redis
redis-mem-beyond-value|of which beyond the $VALUE_SIZE-byte value|bytes|at-most 400|nadbfs-redis
redis-load-seconds|that nadb load into Redis|s|-|nadbfs-redis
dir-store-per-key|directory store (du -sb) per key, the same load|bytes|-|nadbfs
dir-store-beyond-value|of which beyond the value|bytes|-|nadbfs
dir-load-seconds|that nadb load into the directory|s|-|nadbfs
EOF
}

# awk functions for the tables: median(k) of the values v[k, 1..n[k]];
# number(x) for a cell (1,234 / 123 / 12.3 / 1.23); ratio(a, b) of two
# medians ("" when either is missing); failures from the errors file.
AWK_TABLES='
	function median(k,   m, i, j, x, a) {
		m = n[k]; if (!m) return ""
		for (i = 1; i <= m; i++) a[i] = v[k, i]
		for (i = 2; i <= m; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
		return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
	}
	function number(x,   s, out) {
		if (x !~ /^[-0-9.e+]+$/) return x
		x += 0
		if (x >= 1000 || x <= -1000) { s = sprintf("%.0f", x); out = ""
			while (length(s) > 3 && s ~ /[0-9][0-9][0-9][0-9]$/) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
			return s out }
		if (x >= 100 || x <= -100) return sprintf("%.0f", x)
		if (x >= 10 || x <= -10) return sprintf("%.1f", x)
		return sprintf("%.2f", x)
	}
	function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "" : sprintf("%.3f", a / b) }
	BEGIN { while ((getline line < errors) > 0) { split(line, e, ","); failed[e[1], e[2]] = 1 } }
'

# Medians per (workload, target) joined with the catalogue: writes the CSV,
# the markdown rows and the chart's data.  compare: a column for
# nadbfs-redis when it ran (redis=1); alone: the figures of the target in
# the catalogue's 5th field (default nadbfs).
summarize() { # catalogue-file csv md dat mode(compare|alone)
	local redis=0
	! has_target nadbfs-redis || redis=1
	awk -F, -v csv="$2" -v md="$3" -v dat="$4" -v mode="$5" -v redis="$redis" -v errors="$ERRORS" "$AWK_TABLES"'
	function pretty(x, t) {
		if (x == "") return ((w SUBSEP t) in failed) ? "**error**" : "n/a"
		return number(x)
	}
	FNR == NR { if (FNR > 1) { k = $1 SUBSEP $2; n[k]++; v[k, n[k]] = $4 }; next }
	{
		split($0, c, "|"); w = c[1]; split(c[4], g, " "); tg = (c[5] == "") ? "nadbfs" : c[5]
		nat = median(w SUBSEP "native"); pt = median(w SUBSEP "passthrough"); nd = median(w SUBSEP tg)
		rd = median(w SUBSEP "nadbfs-redis"); rr = ratio(rd, nd)
		if (mode == "alone" && nd == "" && n[w SUBSEP tg] == 0 && w ~ /tags|reap/) nd = "n/a (not built yet)"
		rp = ratio(nd, pt); rn = ratio(nd, nat)
		goal = ""; met = ""
		if (g[1] == "passthrough") { goal = ">= " g[2] " x passthrough_ll"; met = (rp == "") ? "n/a" : (rp + 0 >= g[2] ? "yes" : "no") }
		if (g[1] == "native") { goal = ">= " g[2] " x native"; met = (rn == "") ? "n/a" : (rn + 0 >= g[2] ? "yes" : "no") }
		if (g[1] == "at-most") { goal = "<= " g[2] " " c[3]; met = (nd == "" || nd !~ /^[-0-9.e+]+$/) ? "n/a" : (nd + 0 <= g[2] ? "yes" : "no") }
		if (mode == "compare") {
			print w "," c[3] "," nat "," pt "," nd "," rp "," rn "," goal "," met "," rd "," rr >> csv
			printf "| %s | %s | %s | %s | %s |", c[2], c[3], pretty(nat, "native"), pretty(pt, "passthrough"), pretty(nd, "nadbfs") >> md
			if (redis) printf " %s |", pretty(rd, "nadbfs-redis") >> md
			printf " %s | %s |", (rp == "" ? "n/a" : sprintf("%.2f", rp)), (rn == "" ? "n/a" : sprintf("%.2f", rn)) >> md
			if (redis) printf " %s |", (rr == "" ? "n/a" : sprintf("%.2f", rr)) >> md
			printf " %s | %s |\n", goal, (met == "no" ? "**no**" : met) >> md
			if (w != "dedup-growth") print w "\t" (rp == "" ? "NaN" : rp) "\t" (rn == "" ? "NaN" : rn) >> dat
		} else {
			print w "," c[3] ",,," (tg == "nadbfs" ? nd : "") ",,," goal "," met "," (tg == "nadbfs-redis" ? nd : "") "," >> csv
			printf "| %s | %s | %s | %s | %s |\n", c[2], pretty(nd, tg), c[3], goal, (met == "no" ? "**no**" : met) >> md
		}
	}' "$RAW" "$1"
}

# The stats on/off table: medians per workload on each mount, their ratio,
# and the ratio in each repetition (how much of a difference is noise).
summarize_stats() { # catalogue-file csv md
	awk -F, -v csv="$2" -v md="$3" -v errors="$ERRORS" -v list="${STATS_WORKLOADS[*]}" "$AWK_TABLES"'
	function cell(x, t) { return x != "" ? number(x) : ((w SUBSEP t) in failed) ? "**error**" : "n/a" }
	FNR == NR { split($0, c, "|"); what[c[1]] = c[2]; unit[c[1]] = c[3]; next }
	FNR > 1 && ($2 == "stats-on" || $2 == "stats-off") {
		k = $1 SUBSEP $2; n[k]++; v[k, n[k]] = $4; at[$1, $2, $3] = $4
		if ($3 > reps) reps = $3
	}
	END {
		m = split(list, ws, " ")
		for (i = 1; i <= m; i++) {
			w = ws[i]; on = median(w SUBSEP "stats-on"); off = median(w SUBSEP "stats-off"); r = ratio(on, off)
			each = ""
			for (rep = 1; rep <= reps; rep++) {
				x = ratio(at[w, "stats-on", rep], at[w, "stats-off", rep])
				each = each (rep > 1 ? ", " : "") (x == "" ? "n/a" : sprintf("%.2f", x))
			}
			printf "| %s | %s | %s | %s | %s | %s |\n", what[w], unit[w], cell(on, "stats-on"), cell(off, "stats-off"),
				(r == "" ? "n/a" : sprintf("%.2f", r)), each >> md
			print "stats-on/" w "," unit[w] ",,," on ",,,," >> csv
			print "stats-off/" w "," unit[w] ",,," off ",,,," >> csv
			print "stats-on-off/" w ",ratio,,," r ",,,," >> csv
		}
	}' "$1" "$RAW"
}

# Redis itself (redis-benchmark) beside nadbfs-redis: medians, their ratio.
summarize_redis_reference() { # csv md
	awk -F, -v csv="$1" -v md="$2" -v errors="$ERRORS" -v size="$(human_size "$VALUE_SIZE")" \
		-v reqs="$REDIS_REQUESTS" -v keys="$KEYS" "$AWK_TABLES"'
	function cell(x, w, t) { return x != "" ? number(x) : ((w SUBSEP t) in failed) ? "**error**" : "n/a" }
	function row(name, rw, nw, what,   r, d, q) {
		r = median(rw SUBSEP "redis"); d = median(nw SUBSEP "nadbfs-redis"); q = ratio(d, r)
		printf "| %s | ops/s | %s | %s | %s |\n", what, cell(r, "redis-set", "redis"), cell(d, nw, "nadbfs-redis"),
			(q == "" ? "n/a" : sprintf("%.3f", q)) >> md
		print "redis-itself/" name ",ops/s,,,,,,,," r "," >> csv
	}
	FNR > 1 { k = $1 SUBSEP $2; n[k]++; v[k, n[k]] = $4 }
	END {
		row("set", "redis-set", "create-1", "SET " size " (" reqs " requests) / create " size " files, 1 thread (" keys ")")
		row("get", "redis-get", "read-warm", "GET " size " (" reqs " requests) / read " size ", warm (" keys ")")
	}' "$RAW"
}

# Issue 15's table, each row a ratio of medians from this run: what a user
# of a key-value store lives with, against what they would use instead.
summarize_per_key() { # csv md
	awk -F, -v csv="$1" -v md="$2" -v errors="$ERRORS" -v size="$(human_size "$VALUE_SIZE")" \
		-v threads="$THREADS" -v big="$BIG_KEYS" "$AWK_TABLES"'
	function limit(name, what, nw, unit, goal,   d, met) {
		d = median(nw SUBSEP "nadbfs")
		if (d == "") return
		met = (d + 0 <= goal) ? "yes" : "no"
		printf "| %s | %s %s | - | | | <= %s %s | %s |\n", what, number(d), unit, goal, unit,
			(met == "no" ? "**no**" : met) >> md
		print "per-key/" name "," unit ",,," d ",,,<= " goal " " unit "," met ",," >> csv
	}
	function row(name, what, nw, rw, rt, ref, goal,   d, r, q, met) {
		d = median(nw SUBSEP "nadbfs"); r = median(rw SUBSEP rt); q = ratio(d, r)
		met = (q == "") ? "n/a" : (q + 0 >= goal ? "yes" : "no")
		printf "| %s | %s | %s | %s | %s | >= %s | %s |\n", what, (d == "" ? "n/a" : number(d)), ref,
			(r == "" ? "n/a" : number(r)), (q == "" ? "n/a" : sprintf("%.2f", q)), goal,
			(met == "no" ? "**no**" : met) >> md
		print "per-key/" name ",ratio,,," q ",,,>= " goal "," met ",," >> csv
	}
	FNR > 1 { k = $1 SUBSEP $2; n[k]++; v[k, n[k]] = $4 }
	END {
		row("stat-first", "stat of a key right after it was written", "stat-first", "stat-first", "native", "bare disk", 0.5)
		row("get", "get (open, read " size ", close), warm", "read-warm", "redis-get", "redis", "Redis GET", 1.0)
		row("set", "set (create, write " size ", close)", "create-1", "redis-set-everysec", "redis", "Redis SET, AOF fsync every second", 0.5)
		row("rand-write", "random 4 KiB writes (+ close)", "rand-write", "rand-write", "passthrough", "passthrough_ll", 1.0)
		row("threads", "creates with " threads " threads, in one directory", "create-N", "create-1", "nadbfs", "nadbfs, 1 thread", 1.5)
		row("threads-dirs", "creates with " threads " threads, a directory each", "create-Nd", "create-1", "nadbfs", "nadbfs, 1 thread", 1.5)
		limit("bytes", "store bytes a key beyond a " size " value, " big " keys created through the mount", "big-meta-per-key", "bytes", 200)
		limit("rss", "daemon RssAnon after creating " big " keys (the goal is for 1,000,000)", "big-rss-created", "MiB", 100)
	}' "$RAW"
}

machine_line() {
	local cpu mem fs
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
	fs=$(findmnt -n -o FSTYPE -T "$TMP" 2>/dev/null)
	echo "$cpu, $(nproc) cores, $mem RAM, Linux $(uname -r), ${fs:-?} under $(dirname "$TMP"), libfuse $(pkg-config --modversion fuse3 2>/dev/null || echo ?)"
}

write_results() {
	local md=$OUT/results.md csv=$OUT/results.csv dat=$OUT/ratios.dat rows=$TMP/rows.md
	local commit
	commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
	git -C "$here" diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
	rm -f "$OUT/ratios.png"
	echo "workload,unit,native,passthrough,nadbfs,nadbfs/passthrough,nadbfs/native,goal,met,nadbfs-redis,nadbfs-redis/nadbfs" >"$csv"
	: >"$dat"
	catalogue >"$TMP/catalogue"
	summarize "$TMP/catalogue" "$csv" "$rows" "$dat" compare
	{
		echo "# nadb benchmark"
		echo
		echo "- machine: $(machine_line)"
		echo "- command: \`tools/bench.sh${args[*]:+ ${args[*]}}\` ($size_name size), nadb commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "- K = $KEYS keys of $(human_size "$VALUE_SIZE"), $REPS repetition(s), targets run in turn and interleaved; figures are medians; higher is better except where noted"
		echo "- targets: **native** = a plain directory on the same disk; **passthrough_ll** = libfuse $(pkg-config --modversion fuse3 2>/dev/null) example, \`-o source=DIR,xattr\`, default cache=auto (1 s entry/attr timeout, no writeback cache); **nadbfs** = \`build/nadbfs STORE MNT\` with default options$(has_target nadbfs-redis && echo "; **nadbfs on Redis** = \`build/nadbfs redis://127.0.0.1:PORT/bench MNT\` on a private redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') (loopback, \`--save \"\" --appendonly yes --appendfsync always\`), emptied (FLUSHALL) for each repetition; on Redis / nadbfs is its ratio to nadbfs on a directory; the goals are nadbfs's")"
		echo
		if has_target nadbfs-redis; then
			echo "| workload | unit | native | passthrough_ll | nadbfs | nadbfs on Redis | nadbfs/passthrough_ll | nadbfs/native | on Redis / nadbfs | goal | met |"
			echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
		else
			echo "| workload | unit | native | passthrough_ll | nadbfs | nadbfs/passthrough_ll | nadbfs/native | goal | met |"
			echo "|---|---|---:|---:|---:|---:|---:|---|---|"
		fi
		cat "$rows"
		echo
		if awk -F'\t' '$2 != "NaN" || $3 != "NaN" { found = 1 } END { exit !found }' "$dat" &&
			command -v gnuplot >/dev/null; then
			echo "![nadbfs ratios](ratios.png)"
			echo
		fi
	} >"$md"
	if has_target nadbfs && [ "$STATS_COMPARE" = 1 ]; then
		: >"$rows"
		summarize_stats "$TMP/catalogue" "$csv" "$rows"
		{
			echo "## nadbfs with stats on and off"
			echo
			echo "Each repetition mounts two fresh stores side by side, \`-o stats=on\` (the default: every request timed into the histograms of \`.stats\`) and \`-o stats=off\`, and runs each workload on one, then the other (which goes first alternates); K = $KEYS keys of $(human_size "$VALUE_SIZE"), the main table's phases, medians of $REPS repetition(s).  on/off is the ratio of the medians: 1.00 means measuring costs nothing, 0.95 that it costs 5%; the ratio in each repetition shows how much is noise."
			echo
			echo "| workload | unit | stats on | stats off | on/off | on/off per repetition |"
			echo "|---|---|---:|---:|---:|---|"
			cat "$rows"
			echo
		} >>"$md"
	fi
	if has_target nadbfs; then
		: >"$rows"
		summarize_per_key "$csv" "$rows"
		{
			echo "## Per key, beside what a user would use instead"
			echo
			echo "Issue 15's figures, each a ratio of two medians of this run, nadbfs on a directory against: the bare disk; passthrough_ll; Redis itself on nadbfs-redis's private server (n/a without nadbfs-redis among the targets): for get, the GET of the Redis table below (one key), for set, \`redis-benchmark -c 1 -n $REDIS_REQUESTS -d $VALUE_SIZE -t set -r $REDIS_REQUESTS -q\` with \`CONFIG SET appendfsync everysec\` (as durable as nadbfs's \`flush_interval\`; its keys drawn at random from as many, so mostly new ones, as nadbfs's creates are); or nadbfs itself.  Store bytes a key and the daemon's memory come from the nadbfs-alone section (\`--big-keys\`; not there with 0)."
			echo
			echo "| what | nadbfs | against | its figure | ratio | goal | met |"
			echo "|---|---:|---|---:|---:|---|---|"
			cat "$rows"
			echo
		} >>"$md"
	fi
	if has_target nadbfs-redis; then
		: >"$rows"
		summarize_redis_reference "$csv" "$rows"
		{
			echo "## nadbfs on Redis beside Redis itself"
			echo
			echo "Redis itself is what a user would pick instead: \`redis-benchmark -c 1 -n $REDIS_REQUESTS -d $VALUE_SIZE -t set,get -q\` (one client, one key) on the same private server, so with the same AOF fsync'd on every write, run in each repetition right after the warm reads; nadbfs on Redis is the main table's column.  Medians of $REPS repetition(s); a ratio of 0.25 means nadbfs on Redis does a quarter of Redis's operations per second."
			echo
			echo "| Redis operation / nadbfs operation | unit | Redis itself | nadbfs on Redis | nadbfs on Redis / Redis |"
			echo "|---|---|---:|---:|---:|"
			cat "$rows"
			echo
		} >>"$md"
		redis_memory_catalogue >"$TMP/redis_catalogue"
		if [ -s "$TMP/redis_catalogue" ]; then
			: >"$rows"
			summarize "$TMP/redis_catalogue" "$csv" "$rows" /dev/null alone
			{
				echo "## nadbfs on Redis: memory per key"
				echo
				echo "tools/bench-redis-memory.py: a fresh private redis-server (same options), INFO memory used_memory before and after \`nadb load redis://127.0.0.1:PORT/bench\` of a tar of $MEM_KEYS members of $(human_size "$VALUE_SIZE") from os.urandom (1,000 a directory), read once nadb has exited; per key = the difference / $MEM_KEYS, so fixed costs (the server's own and the store's, such as the reserve Redis keeps when a segment string grows, up to 1 MiB) weigh more at a small count.  Then the same load into a directory store, measured with du -sb.  Single run."
				echo
				echo "| figure | value | unit | goal | met |"
				echo "|---|---:|---|---|---|"
				cat "$rows"
				echo
			} >>"$md"
		fi
	fi
	nadb_catalogue >"$TMP/nadb_catalogue"
	if has_target nadbfs && [ -s "$TMP/nadb_catalogue" ]; then
		: >"$rows"
		summarize "$TMP/nadb_catalogue" "$csv" "$rows" /dev/null alone
		{
			echo "## nadbfs alone"
			echo
			echo "| figure | value | unit | goal | met |"
			echo "|---|---:|---|---|---|"
			cat "$rows"
			echo
		} >>"$md"
	fi
	{
		echo "## Notes"
		echo
		echo "- cold read: the daemon is restarted (unmount, mount) before it, so its caches and the kernel's FUSE caches are empty; the disk's page cache is not dropped, and native has nothing to restart."
		echo "- dedup growth: du -sb of the backing directory before and after; nadbfs is unmounted for each du so that everything it buffered is written.$(has_target nadbfs-redis && echo "  On Redis: INFO memory used_memory before and after, unmounted likewise; an append to a segment can land in the reserve Redis kept when that string last grew, and deleted bytes stay until compaction, so small growths read low.")"
		echo "- nadbfs runs from a private copy of the binary taken at the start, so a rebuild during the run cannot mix versions."
		echo "- raw figures of every repetition: raw.csv; nadbfs alone figures are single runs except the mount time."
		if has_target nadbfs && [ "$COMPACT_SIZE" != 0 ]; then
			echo "- compaction (tools/bench-compact.py): a fresh store mounted with \`-o compact_garbage=0\` so that only the timed \`echo compact > .ctl\` compacts; a foreground thread times each operation with perf_counter_ns (client side: kernel, FUSE and Python included); \"during\" counts every operation that overlapped the compaction.  The daemon's view comes from the .metrics histograms (power-of-two buckets) before and after it."
		fi
		if [ -s "$ERRORS" ]; then
			echo
			echo "### Errors"
			echo
			awk -F, '{ m = $0; sub(/^[^,]*,[^,]*,[^,]*,/, "", m); printf "- %s on %s, repetition %s: %s\n", $1, $2, $3, m }' "$ERRORS"
		fi
	} >>"$md"
	# a chart only when there is a ratio to draw
	if awk -F'\t' '$2 != "NaN" || $3 != "NaN" { found = 1 } END { exit !found }' "$dat"; then
		if command -v gnuplot >/dev/null; then
			gnuplot -e "data='$dat'; out='$OUT/ratios.png'; subtitle='K=$KEYS, $REPS rep(s), medians; $(machine_line | cut -d, -f1-2)'" \
				"$here/tools/bench-plot.gp" 2>>"$LOGS/gnuplot.log" ||
				say "bench.sh: gnuplot failed: $(cat "$LOGS/gnuplot.log")"
		else
			say "bench.sh: gnuplot not found (apt-get install gnuplot-nox): no chart"
		fi
	fi
}

# ---- main ---------------------------------------------------------------------

say "bench.sh: $size_name size, K=$KEYS, $REPS repetition(s), targets: $TARGETS; work in $TMP"
for ((REP = 1; REP <= REPS; REP++)); do
	run_repetition
done
for t in "${targets[@]}"; do unmount_target "$t"; done
stop_redis   # its memory back before the nadbfs-alone sections
if has_target nadbfs && [ "$STATS_COMPARE" = 1 ]; then
	for ((REP = 1; REP <= REPS; REP++)); do
		run_stats_repetition
	done
fi
if has_target nadbfs && [ "$BIG_KEYS" -gt 0 ]; then
	run_nadb_alone || say "bench.sh: nadbfs alone stopped early"
fi
if has_target nadbfs && [ "$COMPACT_SIZE" != 0 ]; then
	run_compaction || say "bench.sh: the compaction figures failed"
fi
if has_target nadbfs-redis && [ "$MEM_KEYS" -gt 0 ]; then
	run_redis_memory || say "bench.sh: the Redis memory figures failed"
fi
write_results
cat "$OUT/results.md"
say "bench.sh: results in $OUT/results.md, results.csv, raw.csv, ratios.png"
if [ -s "$ERRORS" ]; then
	say "bench.sh: $(wc -l <"$ERRORS") workload(s) failed: see Errors in $OUT/results.md"
	cp "$ERRORS" "$OUT/errors.csv"
	exit 1
fi
rm -f "$OUT/errors.csv"
exit 0
