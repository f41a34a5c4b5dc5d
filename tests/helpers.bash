# helpers.bash -- shared setup for the nadbfs end-to-end suites.
#
# Every test gets a fresh temp dir T (/tmp/nadb.XXXXXX) with STORE=$T/store
# (not created: the first mount creates it) and MNT=$T/mnt.  teardown()
# ALWAYS unmounts whatever is mounted under T, kills any daemon left for a
# store under T, prints the daemon's log ($LOG) if the test failed, and
# removes T.
#
# NADB_TEST_BACKEND=redis runs the same tests on a store on Redis: each
# test starts its own redis-server (AOF, appendfsync always) on a free
# loopback port with its files in $T/redis, STORE is its URL, the daemon
# logs to $LOG (-o log=), and teardown stops the server.  Tests about a
# directory store's own files call dir_store_only.
#
# Files that need their own setup/teardown call nadb_setup / nadb_teardown.

NADB_BUILD=${NADB_BUILD:-"$BATS_TEST_DIRNAME/../build"}
NADBFS="$NADB_BUILD/nadbfs"
NADB="$NADB_BUILD/nadb"
# A python that every uid can run (pyenv shims under /root are not).
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi
export LC_ALL=C

nadb_setup() {
	T=$(mktemp -d /tmp/nadb.XXXXXX)
	# mktemp makes 0700: other uids must reach $T/mnt in permission tests.
	chmod 755 "$T"
	STORE=$T/store
	MNT=$T/mnt
	LOG=$STORE/nadbfs.log
	mkdir "$MNT"
	BG_PIDS=()
	REDIS_PORT=
	if [ "${NADB_TEST_BACKEND:-dir}" = redis ]; then
		start_redis || return 1
		STORE=redis://127.0.0.1:$REDIS_PORT/store
		LOG=$T/nadbfs.log
	fi
}

# Start a private redis-server for this test (REDIS_PORT), on the first
# free port of a few tried; ARGS are more of its options.
start_redis() {
	local i
	mkdir -p "$T/redis"
	for ((i = 0; i < 20; i++)); do
		REDIS_PORT=$((20000 + RANDOM % 40000))
		if redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$T/redis" \
			--save "" --appendonly yes --appendfsync always --daemonize yes \
			--pidfile "$T/redis/pid" --logfile "$T/redis/log" "$@" >/dev/null &&
			redis_up; then
			return 0
		fi
	done
	echo "start_redis: no redis-server could start (see $T/redis/log)" >&2
	return 1
}

# Is our redis-server answering (<= 5 s)?
redis_pongs() { [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
redis_up() { within 5 redis_pongs; }

stop_redis() {
	[ -n "${REDIS_PORT:-}" ] || return 0
	redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true # gone already
	if [ -f "$T/redis/pid" ]; then
		wait_pids_gone 5 "$(cat "$T/redis/pid")" || kill -KILL "$(cat "$T/redis/pid")" 2>/dev/null
	fi
}

# not CMD...: CMD fails.  A line "! CMD" checks nothing in a test: errexit
# ignores a negated command (it only counts as a test's or function's
# last line).
not() {
	if "$@"; then
		return 1
	fi
}

# within SECS CMD...: CMD succeeds within SECS seconds (tried every 20 ms).
within() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 50; i++)); do
		"$@" 2>/dev/null && return 0
		sleep 0.02
	done
	echo "within $secs s: never true: $*" >&2
	return 1
}

# A proxy to our redis-server on PROXY_PORT whose link the test cuts
# (kill -USR1 $PROXY_PID) and mends (-USR2): tests/cutproxy.py.
start_cutproxy() {
	local i
	for ((i = 0; i < 20; i++)); do
		PROXY_PORT=$((20000 + RANDOM % 40000))
		"$PY" "$BATS_TEST_DIRNAME/cutproxy.py" "$PROXY_PORT" "$REDIS_PORT" "$T/proxy.pid" \
			2>"$T/proxy.err" &
		BG_PIDS+=($!)
		within 5 test -s "$T/proxy.pid" && break
	done
	PROXY_PID=$(cat "$T/proxy.pid")
	[ -n "$PROXY_PID" ]
}

# Nobody holds the store: its STORE/lock can be flock'ed, or its Redis
# lock key is gone.
store_unlocked() {
	case $STORE in
	redis://*) [ "$(redis-cli -p "$REDIS_PORT" exists "{nadb:${STORE##*/}:p0}:lock")" = 0 ] ;;
	*) [ "$(flock -n "$STORE/lock" echo free)" = free ] ;;
	esac
}

# The test is about a directory store's files (packs, lock, tmpfs...).
dir_store_only() {
	if [ "${NADB_TEST_BACKEND:-dir}" = redis ]; then
		skip "about a directory store's own files"
	fi
}

# A second store beside STORE, of the same kind: $T/NAME, or NAME on the
# same Redis server.
other_store() {
	if [ "${NADB_TEST_BACKEND:-dir}" = redis ]; then
		echo "redis://127.0.0.1:$REDIS_PORT/$1"
	else
		echo "$T/$1"
	fi
}

setup() { nadb_setup; }
teardown() { nadb_teardown; }

# Pids of live (non-zombie) nadbfs daemons serving store DIR.
daemon_pids() {
	local dir=$1 p st
	for p in $(pgrep -f -- "nadbfs.*${dir}([ /,]|\$)"); do
		case $(cat "/proc/$p/comm" 2>/dev/null) in nadbfs*) ;; *) continue ;; esac
		st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
		[ "$st" = Z ] && continue
		echo "$p"
	done
}

# True while pid P exists and is not a zombie.
pid_alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# wait_pids_gone SECONDS PID...: poll until every pid has exited.
wait_pids_gone() {
	local secs=$1 p i alive
	shift
	for ((i = 0; i < secs * 20; i++)); do
		alive=0
		for p in "$@"; do pid_alive "$p" && alive=1; done
		[ $alive = 0 ] && return 0
		sleep 0.05
	done
	return 1
}

# mount_store [OPTS] -- mount STORE on MNT (OPTS: a -o option string).
# mount_store_at STORE MNT [OPTS] -- the same for another pair.
mount_store_at() {
	local store=$1 mnt=$2 opts=${3:-} rc i
	case $store in redis://*) opts="log=$LOG${opts:+,$opts}" ;; esac
	if [ -n "$opts" ]; then
		"$NADBFS" -o "$opts" "$store" "$mnt"
	else
		"$NADBFS" "$store" "$mnt"
	fi
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "mount: '$NADBFS ${opts:+-o $opts }$store $mnt' exited $rc" >&2
		return 1
	fi
	for ((i = 0; i < 100; i++)); do
		mountpoint -q "$mnt" && return 0
		sleep 0.05
	done
	echo "mount: $mnt is not a mountpoint 5 s after nadbfs returned" >&2
	return 1
}
mount_store() { mount_store_at "$STORE" "$MNT" "${1:-}"; }

# The daemon's pid (exactly one expected).
daemon_pid() {
	local p
	p=$(daemon_pids "${1:-$STORE}")
	if [ -z "$p" ] || [ "$(echo "$p" | wc -l)" -ne 1 ]; then
		echo "daemon_pid: expected one daemon for ${1:-$STORE}, found: '${p//$'\n'/ }'" >&2
		return 1
	fi
	echo "$p"
}

# unmount_store_at STORE MNT -- unmount and wait (<= 60 s) for the daemon to
# exit: the store is flushed and unlocked only then.
unmount_store_at() {
	local store=$1 mnt=$2 pids
	pids=$(daemon_pids "$store")
	if ! fusermount3 -u "$mnt"; then
		echo "unmount: fusermount3 -u $mnt failed" >&2
		return 1
	fi
	# shellcheck disable=SC2086
	if ! wait_pids_gone 60 $pids; then
		echo "unmount: daemon(s) $pids for $store still running 60 s after unmount" >&2
		return 1
	fi
}
unmount_store() { unmount_store_at "$STORE" "$MNT"; }

remount_store() { unmount_store && mount_store "${1:-}"; }

# chunks_of DIR: the chunks the store mounted on DIR counts (.stats).
chunks_of() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["chunks"])' "$1/.stats"; }

# leave_behind DIR: what a daemon killed now must not leak, made in DIR
# (a namespace): a key unlinked while fd 7 holds it open, and a value being
# written (write_and_hold), its first chunks stored as they filled.
# BEFORE: the chunks counted before either (the key DIR/kept's, made first).
leave_behind() {
	head -c 300000 /dev/urandom >"$1/kept"
	BEFORE=$(chunks_of "$1/../..")
	[ "$BEFORE" -gt 0 ] || return 1
	head -c 300000 /dev/urandom >"$1/held"
	exec 7<"$1/held"
	rm "$1/held"
	write_and_hold "$1/unfinished" 2000000
	[ "$(chunks_of "$1/../..")" -gt $((BEFORE + 10)) ]
}

# write_and_hold FILE BYTES: a process writes BYTES random bytes to FILE
# and holds it open, never closing it (any close of the fd would commit
# the value), for 60 s or until killed: its pid in HOLDER, once written.
write_and_hold() {
	rm -f "$T/written"
	"$PY" -c 'import os,sys,time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, os.urandom(int(sys.argv[2])))
open(sys.argv[3], "w").close()
time.sleep(60)' "$1" "$2" "$T/written" 7<&- 8<&- &
	HOLDER=$!
	BG_PIDS+=("$HOLDER")
	within 10 test -e "$T/written"
}

# kill -9 the daemon, lazily unmount, wait until it is gone.
crash_daemon() {
	local p
	p=$(daemon_pid) || return 1
	kill -9 "$p"
	fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
	if ! wait_pids_gone 10 "$p"; then
		echo "crash_daemon: pid $p survived kill -9" >&2
		return 1
	fi
}

# check_crash_round ROUND: on the store mounted again after a crash, every
# key the crash/writer.py writers fsync'd (done lists $T/done.*) is there
# and none is torn (crash/check.py); then unmounted, nadb fsck is clean.
check_crash_round() {
	run "$PY" "$BATS_TEST_DIRNAME/crash/check.py" "$MNT/app/crash" "$T"/done.*
	echo "$output"
	[ "$status" -eq 0 ] || return 1
	unmount_store || return 1
	run "$NADB" fsck "$STORE"
	echo "fsck after round $1: $output"
	[ "$status" -eq 0 ]
}

# Unmount MNT if mounted and wait (<= 30 s, then kill -9) for STORE's
# daemons: for a teardown that must let go of the disk under STORE first.
stop_store_daemons() {
	local pids
	pids=$(daemon_pids "$STORE")
	if mountpoint -q "$MNT"; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
	fi
	# shellcheck disable=SC2086
	[ -z "$pids" ] || wait_pids_gone 30 $pids || kill -KILL $pids 2>/dev/null
}

# wait_writers PID...: background writers stop (<= 15 s) once the daemon
# under them is gone; killed and a failure if not.
wait_writers() {
	local p
	if ! wait_pids_gone 15 "$@"; then
		echo "writers $* still running 15 s after their daemon went" >&2
		for p in "$@"; do kill -KILL "$p" 2>/dev/null; done
		return 1
	fi
}

nadb_teardown() {
	local m p pids
	for p in "${BG_PIDS[@]}"; do
		pkill -KILL -P "$p" 2>/dev/null
		kill -KILL "$p" 2>/dev/null
	done
	[ -n "${T:-}" ] && [ -d "$T" ] || return 0
	for m in $(findmnt -rn -o TARGET | grep -F "$T/" | sort -r); do
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	pids=$(daemon_pids "$T/[^ ]*")
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		wait_pids_gone 10 $pids || { kill -TERM $pids 2>/dev/null; wait_pids_gone 5 $pids || kill -KILL $pids 2>/dev/null; }
		# shellcheck disable=SC2086
		wait_pids_gone 5 $pids
	fi
	stop_redis
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then
		for p in "$T"/*/nadbfs.log "$T"/nadbfs.log; do
			[ -s "$p" ] || continue
			echo "--- $p (last 40 lines) ---"
			tail -n 40 "$p"
		done
	fi
	if findmnt -rn -o TARGET | grep -qF "$T/"; then
		echo "teardown: something is still mounted under $T; leaving it" >&2
		return 1
	fi
	rm -rf "$T"
}

# ---- assertions ----------------------------------------------------------

# expect_fail "strerror text" CMD ARGS... : CMD must fail and say the text.
expect_fail() {
	local msg=$1
	shift
	run "$@"
	if [ "$status" -eq 0 ] || [[ "$output" != *"$msg"* ]]; then
		echo "expected: $(printf '%q ' "$@")to fail with '$msg'"
		echo "got: exit $status, output: $output"
		return 1
	fi
}

# expect_errno ERRNO OP ARGS... : the syscall OP (see py_errno) must fail
# with exactly ERRNO (or succeed when ERRNO is OK).
expect_errno() {
	local want=$1
	shift
	run py_errno "$@"
	if [ "$output" != "$want" ]; then
		echo "expected: $(printf '%q ' "$@")-> $want"
		echo "got: $output"
		return 1
	fi
}

# py_errno OP ARGS... : do one syscall, print OK or the errno's name.
py_errno() {
	"$PY" - "$@" <<'EOF'
import ctypes, errno, os, sys
op, a = sys.argv[1], sys.argv[2:]
def renameat2(src, dst, flags):
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD = -100
    r = libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
try:
    if op == "mkdir": os.mkdir(a[0])
    elif op == "rmdir": os.rmdir(a[0])
    elif op == "create": os.close(os.open(a[0], os.O_CREAT | os.O_WRONLY, 0o644))
    elif op == "create_excl": os.close(os.open(a[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    elif op == "open": os.close(os.open(a[0], os.O_RDONLY))
    elif op == "open_write": os.close(os.open(a[0], os.O_WRONLY))
    elif op == "unlink": os.unlink(a[0])
    elif op == "rename": os.rename(a[0], a[1])
    elif op == "rename_noreplace": renameat2(a[0], a[1], 1)
    elif op == "rename_exchange": renameat2(a[0], a[1], 2)
    elif op == "link": os.link(a[0], a[1])
    elif op == "symlink": os.symlink(a[0], a[1])
    elif op == "mkfifo": os.mkfifo(a[0])
    elif op == "stat": os.stat(a[0])
    elif op == "getxattr": os.getxattr(a[0], a[1])
    elif op == "setxattr": os.setxattr(a[0], a[1], a[2].encode())
    elif op == "setxattr_create": os.setxattr(a[0], a[1], a[2].encode(), os.XATTR_CREATE)
    elif op == "setxattr_replace": os.setxattr(a[0], a[1], a[2].encode(), os.XATTR_REPLACE)
    elif op == "removexattr": os.removexattr(a[0], a[1])
    elif op == "chmod": os.chmod(a[0], int(a[1], 8))
    elif op == "truncate": os.truncate(a[0], int(a[1]))
    elif op == "access": # access PATH MODES: MODES of r, w, x, or f
        bits = {"r": os.R_OK, "w": os.W_OK, "x": os.X_OK, "f": os.F_OK}
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.access(os.fsencode(a[0]), sum(bits[c] for c in a[1])) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    else:
        print("bad op " + op); sys.exit(2)
    print("OK")
except OSError as e:
    n = errno.errorcode.get(e.errno, str(e.errno))
    print("EOPNOTSUPP" if n == "ENOTSUP" else n)
EOF
}

# Run a command as another uid (no supplementary groups).
as_user() {
	local uid=$1 gid=$2
	shift 2
	setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"
}

# Allocated bytes of a directory tree (what du -sh shows); for a store on
# Redis, the memory the server uses.
store_bytes() {
	case ${1:-$STORE} in
	redis://*) redis-cli -p "$REDIS_PORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p' ;;
	*) du -s -B1 "${1:-$STORE}" | cut -f1 ;;
	esac
}

# Wait (<= SECS) until a file exists.
wait_for_file() {
	local f=$1 secs=${2:-10} i
	for ((i = 0; i < secs * 20; i++)); do
		[ -e "$f" ] && return 0
		sleep 0.05
	done
	echo "wait_for_file: $f did not appear within $secs s" >&2
	return 1
}

# A deterministic fast byte stream: gen_stream SEED BYTES
gen_stream() {
	local seed=$1 bytes=$2 key
	key=$(printf '%s' "$seed" | md5sum | cut -c1-32)
	if command -v openssl >/dev/null; then
		openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 -nosalt </dev/zero 2>/dev/null | head -c "$bytes"
	else
		"$PY" -c '
import random, sys
r = random.Random(sys.argv[1]); n = int(sys.argv[2]); out = sys.stdout.buffer
while n > 0:
    k = min(n, 1 << 20); out.write(r.randbytes(k)); n -= k
' "$seed" "$bytes"
	fi
}

# ls_keys [ls options] DIR: what ls prints, without the names the daemon
# serves itself (.stats in databases and namespaces; .ctl, .metrics,
# .stats and tags at the root).
ls_keys() {
	local dir=${!#} filter='^\.stats$'
	if [ "$(stat -c %i "$dir" 2>/dev/null)" = 1 ]; then
		filter='^(\.stats|\.ctl|\.metrics|tags)$'
	fi
	ls "$@" | grep -vE "$filter"
	return 0
}
