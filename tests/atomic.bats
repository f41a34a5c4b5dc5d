#!/usr/bin/env bats
# Atomic operations: nadb incr, cas, mset, mget, and the /.ctl protocol
# they speak, which any program can speak with open, write and read.

load helpers

setup() {
	nadb_setup
	mount_store
	mkdir -p "$MNT/app/users"
	K=$MNT/app/users
}

# One /.ctl request from Python, no tool: prints the write's errno (or
# "ok") and then the reply.
ctl() {
	"$PY" - "$MNT/.ctl" "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
req = sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
try:
    os.write(fd, req)
    print("ok")
except OSError as e:
    import errno
    print(errno.errorcode[e.errno])
out = b""
while True:
    b = os.read(fd, 65536)
    if not b:
        break
    out += b
sys.stdout.write(out.decode("latin-1"))
EOF
}

@test "nadb incr makes a missing key, adds BY, and cat shows the number" {
	run "$NADB" incr "$MNT" /app/users/n
	[ "$status" -eq 0 ]
	[ "$output" = 1 ]
	run "$NADB" incr "$MNT" app/users/n 41
	[ "$status" -eq 0 ]
	[ "$output" = 42 ]
	run "$NADB" incr "$MNT" /app/users/n -50
	[ "$output" = -8 ]
	[ "$(cat "$K/n")" = -8 ]
	[ "$(od -An -c "$K/n" | tr -d ' ')" = '-8\n' ]
	# a value written by hand, with or without its newline
	echo -n 10 >"$K/m"
	run "$NADB" incr "$MNT" /app/users/m 5
	[ "$output" = 15 ]
}

@test "nadb incr refuses a value that is not an integer, and overflow, changing nothing" {
	echo -n dark >"$K/theme"
	run "$NADB" incr "$MNT" /app/users/theme
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"not a decimal integer"* ]]
	[ "$(cat "$K/theme")" = dark ]
	echo 9223372036854775806 >"$K/big"
	run "$NADB" incr "$MNT" /app/users/big
	[ "$status" -eq 0 ]
	[ "$output" = 9223372036854775807 ]
	run "$NADB" incr "$MNT" /app/users/big
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"64 bits"* ]]
	[ "$(cat "$K/big")" = 9223372036854775807 ]
	run "$NADB" incr "$MNT" /app/users/big x
	[ "$status" -eq 2 ]
	for v in ' 1' '1 ' '+1' '1x' '--1' $'1\n\n'; do
		printf '%s' "$v" >"$K/odd"
		run "$NADB" incr "$MNT" /app/users/odd
		[ "$status" -eq 1 ] || { echo "'$v' was taken as an integer: $output"; return 1; }
	done
}

@test "a key nadb incr makes takes its namespace's default TTL" {
	setfattr -n user.ttl -v 3600 "$K"
	"$NADB" incr "$MNT" /app/users/visits
	ttl=$(getfattr --only-values -n user.ttl "$K/visits")
	echo "ttl: $ttl"
	[ "$ttl" -gt 3500 ]
	[ "$ttl" -le 3600 ]
}

@test "three processes each running 300 nadb incr on one key end at exactly 900" {
	local n=300
	[ -z "${NADB_SANITIZED:-}" ] || n=100 # each nadb starts slowly there
	for p in 1 2 3; do
		(for i in $(seq $n); do "$NADB" incr "$MNT" /app/users/hits >/dev/null || exit 1; done) &
		BG_PIDS+=($!)
	done
	for p in "${BG_PIDS[@]}"; do wait "$p"; done
	BG_PIDS=()
	[ "$(cat "$K/hits")" = $((3 * n)) ]
}

@test "nadb cas replaces only an unchanged value; of two racing with one hash exactly one wins" {
	echo -n v0 >"$K/doc"
	h=$(getfattr --only-values -n user.nadb.hash "$K/doc")
	run bash -c "echo -n v1 | '$NADB' cas '$MNT' /app/users/doc $h"
	[ "$status" -eq 0 ]
	[ "$output" = "$(getfattr --only-values -n user.nadb.hash "$K/doc")" ]
	[ "$(cat "$K/doc")" = v1 ]
	# the old hash no longer matches: exit 1, the current hash printed
	run bash -c "echo -n v2 | '$NADB' cas '$MNT' /app/users/doc $h"
	[ "$status" -eq 1 ]
	[[ "$output" == *"$(getfattr --only-values -n user.nadb.hash "$K/doc")"* ]]
	[ "$(cat "$K/doc")" = v1 ]
	for round in 1 2 3 4 5; do
		h=$(getfattr --only-values -n user.nadb.hash "$K/doc")
		echo -n "a$round" | "$NADB" cas "$MNT" /app/users/doc "$h" >"$T/a" 2>&1 &
		a=$!
		echo -n "b$round" | "$NADB" cas "$MNT" /app/users/doc "$h" >"$T/b" 2>&1 &
		b=$!
		wins=0
		wait $a && wins=$((wins + 1))
		wait $b && wins=$((wins + 1))
		v=$(cat "$K/doc")
		echo "round $round: $wins winners, value $v"
		[ "$wins" -eq 1 ]
		[ "$v" = "a$round" ] || [ "$v" = "b$round" ]
	done
}

@test "nadb cas with - sets only an absent key (set -C for scripts)" {
	run bash -c "echo -n first | '$NADB' cas '$MNT' /app/users/lock -"
	[ "$status" -eq 0 ]
	run bash -c "echo -n second | '$NADB' cas '$MNT' /app/users/lock -"
	[ "$status" -eq 1 ]
	[ "$(cat "$K/lock")" = first ]
	run "$NADB" cas "$MNT" /app/users/lock not-a-hash </dev/null
	[ "$status" -eq 2 ]
}

@test "nadb mset sets every key or, if any part fails, none" {
	echo -n old >"$K/a"
	printf 'A' >"$T/va"
	head -c 300000 /dev/urandom >"$T/vb"
	run "$NADB" mset "$MNT" /app/users/a="$T/va" /app/users/b="$T/vb"
	[ "$status" -eq 0 ]
	[ "$(cat "$K/a")" = A ]
	cmp "$T/vb" "$K/b"
	# a missing namespace, a name the store refuses, a directory: nothing changes
	for bad in /app/nons/x /app/users/.stats /app/users; do
		run "$NADB" mset "$MNT" /app/users/a="$T/vb" "$bad=$T/va"
		echo "$bad -> $status: $output"
		[ "$status" -eq 1 ]
		[ "$(cat "$K/a")" = A ]
	done
	run "$NADB" mset "$MNT" /app/users/a
	[ "$status" -eq 2 ]
	run "$NADB" mset "$MNT" /app/users/a="$T/missing"
	[ "$status" -eq 1 ]
}

@test "a reader looping over nadb mget never sees a mix of two msets" {
	for i in 1 2 3 4 5; do echo -n A >"$T/A$i"; echo -n B >"$T/B$i"; done
	args() { for i in 1 2 3 4 5; do printf '%s ' "/app/users/k$i=$T/$1$i"; done; }
	# shellcheck disable=SC2046
	"$NADB" mset "$MNT" $(args A)
	(for r in $(seq 60); do
		# shellcheck disable=SC2046
		"$NADB" mset "$MNT" $(args B) && "$NADB" mset "$MNT" $(args A) || exit 1
	done) &
	BG_PIDS+=($!)
	mixes=0
	for r in $(seq 120); do
		got=$("$NADB" mget "$MNT" /app/users/k1 /app/users/k2 /app/users/k3 /app/users/k4 /app/users/k5 |
			awk 'NR % 2 == 0' | sort -u | wc -l)
		[ "$got" -eq 1 ] || mixes=$((mixes + 1))
	done
	wait "${BG_PIDS[0]}"
	BG_PIDS=()
	echo "mixed reads: $mixes"
	[ "$mixes" -eq 0 ]
}

@test "nadb mget prints length-prefixed records and - for a missing key" {
	echo -n dark >"$K/theme"
	printf 'two\nlines' >"$K/my key"
	run "$NADB" mget "$MNT" /app/users/theme /app/users/none "/app/users/my key"
	[ "$status" -eq 0 ]
	[ "$output" = "$(printf '/app/users/theme 4\ndark\n/app/users/none -\n/app/users/my%%20key 9\ntwo\nlines')" ]
}

@test "kill -9 during a large nadb mset: after a remount all of it or none of it" {
	args=()
	for i in $(seq 200); do
		echo -n old >"$K/k$i"
		head -c 65536 /dev/urandom >"$T/v$i"
		args+=("/app/users/k$i=$T/v$i")
	done
	echo flush >"$MNT/.ctl"
	"$NADB" mset "$MNT" "${args[@]}" &
	BG_PIDS+=($!)
	sleep 0.$((RANDOM % 5))
	crash_daemon
	wait "${BG_PIDS[0]}" || true
	BG_PIDS=()
	mount_store
	new=0 old=0
	for i in $(seq 200); do
		if [ "$(head -c 3 "$K/k$i")" = old ]; then old=$((old + 1)); elif cmp -s "$T/v$i" "$K/k$i"; then new=$((new + 1)); fi
	done
	echo "new $new, old $old"
	[ "$new" -eq 200 ] || [ "$old" -eq 200 ]
	run "$NADB" fsck "$STORE" 2>/dev/null || true
}

@test "a value changed by /.ctl is what the next open sees, cached pages and misses too" {
	echo -n 1 >"$K/c"
	cat "$K/c" >/dev/null           # pages in the kernel's cache
	not cat "$K/fresh" 2>/dev/null    # a miss in the kernel's cache
	"$NADB" incr "$MNT" /app/users/c 1
	echo -n new >"$T/v"
	"$NADB" mset "$MNT" /app/users/fresh="$T/v"
	[ "$(cat "$K/c")" = 2 ]
	[ "$(cat "$K/fresh")" = new ]
	[ "$(stat -c %s "$K/c")" -eq 2 ]
}

@test "a key made by /.ctl or reaped moves its directory's mtime in stat at once, its name never looked up" {
	before=$(stat -c %Y "$K")
	sleep 1.1
	echo -n v >"$T/v"
	"$NADB" mset "$MNT" /app/users/made="$T/v"
	made=$(stat -c %Y "$K")
	[ "$made" -gt "$before" ]
	# a key the reaper deletes, never looked up since it was made
	"$NADB" mset "$MNT" /app/users/short="$T/v"
	setfattr -n user.expires -v "$(date +%s.%N -d '+1.2 seconds')" "$K/short"
	stat -c %Y "$K" >/dev/null
	sleep 2.5
	echo reap >"$MNT/.ctl"
	[ ! -e "$K/short" ]
	[ "$(stat -c %Y "$K")" -gt "$made" ]
}

@test "the /.ctl protocol works from Python alone, and a malformed request gets EINVAL and why" {
	run ctl 'incr /app/users/py 5\n'
	[ "$output" = "$(printf 'ok\nok 5')" ]
	run ctl 'mset /app/users/x 2 /app/users/y 3\nhiabc'
	[ "$output" = "$(printf 'ok\nok 2')" ]
	run ctl 'mget /app/users/x /app/users/y\n'
	[ "$output" = "$(printf 'ok\nok 2\n/app/users/x 2\nhi\n/app/users/y 3\nabc')" ]
	for bad in 'frobnicate\n' 'incr\n' 'incr /app/users/py 1 2\n' 'incr /app/users/py one\n' \
		'cas /app/users/py zz 1\nx' 'mset /app/users/x\n' 'mset /app/users/x -1\n' \
		'mset /app/users/x 1\nab' 'incr /app/%zz\n' '\n'; do
		run ctl "$bad"
		echo "$bad -> $output"
		[[ "${lines[0]}" == EINVAL ]]
		[[ "${lines[1]}" == "err EINVAL "* ]]
	done
	[ "$(cat "$K/py")" = 5 ]
	# a request that runs and fails is a successful write with an err reply
	run ctl 'incr /app/nons/x\n'
	[ "${lines[0]}" = ok ]
	[[ "${lines[1]}" == "err ENOENT "* ]]
}

@test "/.ctl checks each request against the caller's permissions" {
	remount_store allow_other
	echo -n 1 >"$K/mine"
	chmod 600 "$K/mine"
	chmod 755 "$K"
	run as_user 1000 1000 "$NADB" incr "$MNT" /app/users/mine
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"ermission denied"* ]]
	run as_user 1000 1000 "$NADB" mget "$MNT" /app/users/mine
	[ "$status" -eq 1 ]
	run as_user 1000 1000 "$NADB" incr "$MNT" /app/users/new
	[ "$status" -eq 1 ]
	[ ! -e "$K/new" ]
	run as_user 1000 1000 sh -c "echo compact > '$MNT/.ctl'"
	[ "$status" -ne 0 ]
	# the mount's owner is who mounted it, not who owns its root now
	chown 1000 "$MNT"
	run as_user 1000 1000 sh -c "echo compact > '$MNT/.ctl'"
	echo "$output"
	[ "$status" -ne 0 ]
	chown 0 "$MNT"
	# what the user may do, it can
	echo -n 5 >"$K/theirs"
	chown 1000:1000 "$K/theirs"
	run as_user 1000 1000 "$NADB" incr "$MNT" /app/users/theirs
	[ "$status" -eq 0 ]
	[ "$output" = 6 ]
	[ "$(cat "$K/mine")" = 1 ]
}

@test "nadb incr, cas, mset and mget work offline on a STORE too" {
	unmount_store
	run "$NADB" incr "$STORE" /app/users/off 3
	[ "$status" -eq 0 ]
	[ "$output" = 3 ]
	echo -n z >"$T/z"
	"$NADB" mset "$STORE" /app/users/z="$T/z"
	run "$NADB" mget "$STORE" /app/users/off /app/users/z
	[ "$output" = "$(printf '/app/users/off 2\n3\n\n/app/users/z 1\nz')" ]
}

@test "a refused request's remaining bytes never run; the descriptor answers again once the reply is read" {
	"$PY" - "$MNT/.ctl" <<'EOF2'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
def write(b):
    try:
        os.write(fd, b)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
# 64 MiB of values after a header: over the limit, refused at the header
assert write(b"mset /app/users/big 67108864\n") == "EFBIG"
# what follows is the rest of the refused request, not a new one
assert write(b"incr /app/users/pwned\n") == "EINVAL"
reply = os.read(fd, 4096)
assert reply.startswith(b"err EFBIG "), reply
assert write(b"incr /app/users/fine\n") == "ok"
assert os.read(fd, 4096) == b"ok 1\n"
EOF2
	[ ! -e "$K/pwned" ]
	[ ! -e "$K/big" ]
	[ "$(cat "$K/fine")" = 1 ]
}

@test "a /.ctl request runs as the descriptor's opener, whoever writes it" {
	remount_store allow_other
	echo -n secret >"$K/rootonly"
	chmod 600 "$K/rootonly"
	chmod 777 "$K"
	run "$PY" - "$MNT/.ctl" <<'EOF2'
import os, sys
os.setresgid(1000, 1000, 0)
os.setresuid(1000, 1000, 0)   # open as uid 1000 ...
fd = os.open(sys.argv[1], os.O_RDWR)
os.setresuid(0, 0, 0)         # ... then write as root
os.setresgid(0, 0, 0)
os.write(fd, b"mset /app/users/rootonly 5\nowned")
print(os.read(fd, 4096).decode().strip())
EOF2
	echo "$output"
	[[ "$output" == "err EACCES "* ]]
	[ "$(cat "$K/rootonly")" = secret ]
}

@test "incr and cas need read permission as well as write" {
	remount_store allow_other
	echo -n 41 >"$K/wonly"
	chmod 602 "$K/wonly"
	run as_user 1000 1000 "$NADB" incr "$MNT" /app/users/wonly 0
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" != *41* ]]
	run as_user 1000 1000 sh -c "echo -n x | '$NADB' cas '$MNT' /app/users/wonly 00000000000000000000000000000000"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"ermission denied"* ]]
	# mset needs only write, as `>` does
	echo -n 7 >"$T/v"
	run as_user 1000 1000 "$NADB" mset "$MNT" /app/users/wonly="$T/v"
	[ "$status" -eq 0 ]
	[ "$(cat "$K/wonly")" = 7 ]
}

@test "a value set through /.ctl by a user clears set-id bits, as a write does; root's keeps them" {
	remount_store allow_other
	echo -n 7 >"$T/v"
	for k in suid sgid; do echo -n x >"$K/$k"; done
	chmod 4777 "$K/suid"
	chmod 2777 "$K/sgid"
	run as_user 1000 1000 "$NADB" mset "$MNT" /app/users/suid="$T/v" /app/users/sgid="$T/v"
	[ "$status" -eq 0 ]
	[ "$(stat -c %a "$K/suid") $(stat -c %a "$K/sgid")" = "777 777" ]
	chmod 4777 "$K/suid"
	run as_user 1000 1000 "$NADB" incr "$MNT" /app/users/suid 1
	[ "$status" -eq 0 ]
	[ "$(stat -c %a "$K/suid")" = 777 ]
	chmod 4777 "$K/suid"
	"$NADB" mset "$MNT" /app/users/suid="$T/v"
	[ "$(stat -c %a "$K/suid")" = 4777 ]
}

@test "a key with unsaved writes through an open file is EBUSY for a batch, and untouched" {
	echo -n 5 >"$K/n"
	# a writer that has written and not closed (no close, so no commit)
	"$PY" -c '
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"9")
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.02)
os.close(fd)' "$K/n" "$T/written" "$T/close" &
	BG_PIDS+=($!)
	wait_for_file "$T/written"
	run "$NADB" incr "$MNT" /app/users/n
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"being written"* ]]
	touch "$T/close"
	wait "${BG_PIDS[0]}"
	BG_PIDS=()
	[ "$(cat "$K/n")" = 9 ]
	run "$NADB" incr "$MNT" /app/users/n
	[ "$output" = 10 ]
}

@test "nadb mget reads a key that truncate extended with zeros" {
	printf abc >"$K/grown"
	truncate -s 10 "$K/grown"
	"$NADB" mget "$MNT" /app/users/grown >"$T/out"
	[ "$(head -n 1 "$T/out")" = "/app/users/grown 10" ]
	tail -c +21 "$T/out" | head -c 10 | cmp - "$K/grown"
}
