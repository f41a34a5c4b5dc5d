#!/usr/bin/env bats
# Several daemons on one store on Redis: the first to mount it writes, the
# others follow it read-only, and what the writer commits reaches the
# followers' kernels by change notices (core/follow.c).  A follower here
# is mounted on $T/f with its own log; tests that must show a notice at
# work mount it with attr_timeout=60, so that nothing but a notice could
# make its kernel let go of what it cached within the few seconds allowed.

load helpers

setup() {
	nadb_setup || return 1
	if [ "${NADB_TEST_BACKEND:-dir}" != redis ]; then
		skip "followers are for stores on Redis (run with NADB_TEST_BACKEND=redis)"
	fi
	F=$T/f
	FLOG=$T/follower.log
	mkdir "$F"
}

# The follower first, its link mended: else it spends its last seconds
# reaching for Redis through a proxy that is gone.
teardown() {
	exec 7<&- 8<&-
	[ -n "${PROXY_PID:-}" ] && kill -USR2 "$PROXY_PID" 2>/dev/null
	[ -n "${F:-}" ] && mountpoint -q "$F" && fusermount3 -u "$F"
	nadb_teardown
}

# mount_follower [OPTS [URL]]: a second daemon on STORE (or on URL, the
# same store through another way), on $F.
mount_follower() {
	local url=${2:-$STORE} i
	WRITER=$(daemon_pid) || return 1
	"$NADBFS" -o "log=$FLOG${1:+,$1}" "$url" "$F" || return 1
	for ((i = 0; i < 100; i++)); do
		mountpoint -q "$F" && break
		sleep 0.05
	done
	mountpoint -q "$F" || return 1
	FPID=$(daemon_pids "$url" | grep -vx "$WRITER")
	[ -n "$FPID" ]
	# the writer counts its followers every second: until it has, it
	# commits only every flush_interval
	within 5 grep -q "1 followers" "$LOG"
	# then its first sync tells the follower "anything may have changed",
	# and for 50 ms the follower's kernel caches nothing
	sleep 0.2
}

unmount_follower() {
	fusermount3 -u "$F" && wait_pids_gone 10 "$FPID"
}


# write_fsynced TEXT FILE: FILE holds TEXT, fsync'd before close.
write_fsynced() {
	"$PY" -c 'import os,sys
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, sys.argv[1].encode()); os.fsync(fd); os.close(fd)' "$1" "$2"
}
value_is() { [ "$(cat "$1")" = "$2" ]; }

gone() { [ ! -e "$1" ]; }
# output_is TEXT CMD...: CMD prints TEXT.
output_is() { [ "$("${@:2}")" = "$1" ]; }
has_expiry() { [ -n "$(getfattr --only-values -n user.expires "$1")" ]; }
subscribers_are() {
	[ "$(redis-cli -p "$REDIS_PORT" pubsub numsub "nadb:store:changes" | tail -1)" = "$1" ]
}
counted_in_again() { [ "$(grep -c "1 followers" "$LOG")" -ge 2 ]; }

@test "a second daemon on a Redis store mounts it read-only and follows the first" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v1 >"$MNT/app/ns/k"
	mount_follower
	grep -q "another daemon writes this store: mounted read-only" "$FLOG"
	grep -q '"role": "follower",' "$F/.stats"
	grep -q '"role": "writer",' "$MNT/.stats"
	grep -q '"followers": 1,' "$MNT/.stats"
	findmnt -rn -o OPTIONS "$F" | grep -qE '(^|,)ro(,|$)'
	# and every option a writer's mount has
	[ "$(findmnt -rn -o OPTIONS "$F" | sed 's/^ro,//')" = \
		"$(findmnt -rn -o OPTIONS "$MNT" | sed 's/^rw,//')" ]
	[ "$(findmnt -rn -o SOURCE,FSTYPE "$F")" = "$(findmnt -rn -o SOURCE,FSTYPE "$MNT")" ]
	[ "$(cat "$F/app/ns/k")" = v1 ]
	# every change is refused, by the kernel, and the store is untouched
	expect_errno EROFS open_write "$F/app/ns/k"
	expect_errno EROFS create "$F/app/ns/new"
	expect_errno EROFS unlink "$F/app/ns/k"
	expect_errno EROFS mkdir "$F/app/other"
	expect_errno EROFS rename "$F/app/ns/k" "$F/app/ns/k2"
	expect_errno EROFS truncate "$F/app/ns/k" 0
	expect_errno EROFS chmod "$F/app/ns/k" 600
	expect_errno EROFS setxattr "$F/app/ns/k" user.tags red
	expect_errno EROFS setxattr "$F/app/ns/k" user.ttl 5
	expect_errno EROFS open_write "$F/.ctl"
	[ "$(cat "$MNT/app/ns/k")" = v1 ]
	[ ! -e "$MNT/app/ns/new" ]
	# the writer goes on writing
	echo -n v2 >"$MNT/app/ns/k"
	[ "$(cat "$MNT/app/ns/k")" = v2 ]
	# nadb umount waits for the follower's daemon, not for the writer
	run "$NADB" umount "$F"
	[ "$status" -eq 0 ]
	[ "$output" = "" ]
	not pid_alive "$FPID"
	not mountpoint -q "$F"
	pid_alive "$WRITER"
	role_is "$MNT" writer
	unmount_store
	"$NADB" fsck "$STORE"
}

@test "what the writer commits reaches the follower's kernel by notice: new keys, values, renames, unlinks" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v1 >"$MNT/app/ns/k"
	mount_follower attr_timeout=60
	# a miss the follower's kernel caches, then the key made
	[ ! -e "$F/app/ns/new" ]
	echo -n fresh >"$MNT/app/ns/new"
	within 5 value_is "$F/app/ns/new" fresh
	# a value and size the kernel holds, then overwritten (longer)
	[ "$(cat "$F/app/ns/k")" = v1 ]
	[ "$(stat -c %s "$F/app/ns/k")" = 2 ]
	echo -n "a longer value" >"$MNT/app/ns/k"
	within 5 value_is "$F/app/ns/k" "a longer value"
	[ "$(stat -c %s "$F/app/ns/k")" = 14 ]
	# renamed: the old name goes, the new one comes
	mv "$MNT/app/ns/k" "$MNT/app/ns/moved"
	within 5 gone "$F/app/ns/k"
	within 5 value_is "$F/app/ns/moved" "a longer value"
	# unlinked
	rm "$MNT/app/ns/new"
	within 5 gone "$F/app/ns/new"
	[ "$(ls "$F/app/ns")" = moved ]
	# a namespace made and one removed
	mkdir "$MNT/app/ns2"
	echo -n x >"$MNT/app/ns2/a"
	within 5 value_is "$F/app/ns2/a" x
	rm "$MNT/app/ns2/a"
	rmdir "$MNT/app/ns2"
	within 5 gone "$F/app/ns2"
	grep -q "1 followers: syncing every 1 ms" "$LOG"
}

@test "attributes, tags, expiry and .stats changed by the writer reach the follower" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v >"$MNT/app/ns/k"
	echo -n w >"$MNT/app/ns/short"
	mount_follower attr_timeout=60
	[ "$(stat -c %a "$F/app/ns/k")" = 644 ]
	chmod 600 "$MNT/app/ns/k"
	within 5 output_is 600 stat -c %a "$F/app/ns/k"
	setfattr -n user.tags -v red,blue "$MNT/app/ns/k"
	within 5 output_is blue,red getfattr --only-values -n user.tags "$F/app/ns/k"
	within 5 output_is k ls "$F/tags/red/app/ns"
	ls "$F/tags" | grep -qx blue
	# an expiry set on the writer: gone on the follower once it is due,
	# though the follower never reaps
	setfattr -n user.ttl -v 1 "$MNT/app/ns/short"
	within 5 has_expiry "$F/app/ns/short"
	within 5 gone "$F/app/ns/short"
	[ "$(ls "$F/app/ns")" = k ]
	within 5 grep -q '"keys": 1,' "$F/.stats"
}

@test "a follower that lost its notices forgets what it cached, and hears the next ones" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v1 >"$MNT/app/ns/k"
	mount_follower attr_timeout=60
	[ "$(cat "$F/app/ns/k")" = v1 ]
	# the follower's subscription is cut; it subscribes again, forgetting
	# everything its kernel holds
	# (values of new lengths: the size the kernel caches would cut them)
	[ "$(redis-cli -p "$REDIS_PORT" client kill type pubsub)" -ge 1 ]
	echo -n "value two" >"$MNT/app/ns/k"
	within 5 value_is "$F/app/ns/k" "value two"
	within 5 subscribers_are 1
	echo -n "the third value" >"$MNT/app/ns/k"
	within 5 value_is "$F/app/ns/k" "the third value"
}

@test "a follower outlives its writer: kill -9, then a new writer's changes reach it" {
	mount_store
	mkdir -p "$MNT/app/ns"
	write_fsynced kept "$MNT/app/ns/k"
	# (takeover=off: the new writer below, not the follower, takes the lock)
	mount_follower attr_timeout=60,takeover=off
	kill -9 "$WRITER"
	fusermount3 -uz "$MNT"
	wait_pids_gone 10 "$WRITER"
	[ "$(cat "$F/app/ns/k")" = kept ]
	# a new writer (the dead one's lock is taken over), followed again
	mount_store
	within 5 counted_in_again
	echo -n "again, longer" >"$MNT/app/ns/k"
	within 5 value_is "$F/app/ns/k" "again, longer"
	unmount_follower
	unmount_store
	"$NADB" fsck "$STORE"
}

# role_of DIR: what .stats says the daemon on DIR is (writer or follower).
role_of() { sed -n 's/.*"role": "\([a-z]*\)".*/\1/p' "$1/.stats"; }
role_is() { [ "$(role_of "$1")" = "$2" ]; }
followers_are() { grep -q "\"followers\": $2," "$1/.stats"; }
writable() { findmnt -rn -o OPTIONS "$1" | grep -qE '(^|,)rw(,|$)'; }

@test "a follower takes the store over when its writer dies; the other follower follows it" {
	[ "$(id -u)" = 0 ] || skip "only root can remount a follower writable"
	mount_store
	mkdir -p "$MNT/app/ns"
	write_fsynced kept "$MNT/app/ns/k"
	mount_follower
	# a second follower, which never takes over: the first one does
	G=$T/g
	mkdir "$G"
	"$NADBFS" -o "log=$T/g.log,takeover=off" "$STORE" "$G"
	within 5 mountpoint -q "$G"
	GPID=$(daemon_pids "$STORE" | grep -vx "$WRITER" | grep -vx "$FPID")
	[ -n "$GPID" ]
	echo -n "closed, not fsync'd" >"$MNT/app/ns/j"
	within 5 value_is "$F/app/ns/j" "closed, not fsync'd"
	exec 7<"$F/app/ns/k" # opened through the follower before it takes over
	kill -9 "$WRITER"
	fusermount3 -uz "$MNT"
	wait_pids_gone 10 "$WRITER"
	# the dead writer's lease runs out (10 s), and the follower's next look
	# (every second) finds the store free: it writes the store now
	within 20 grep -q "the writer is gone: this daemon writes the store now" "$FLOG"
	W=$F R=$G
	role_is "$W" writer
	role_is "$R" follower
	writable "$W"
	run writable "$R"
	[ "$status" -ne 0 ]
	# what the dead writer synced is all there, and the new writer writes
	value_is "$W/app/ns/k" kept
	value_is "$W/app/ns/j" "closed, not fsync'd"
	# ... even once its key is deleted through the new writer
	rm "$W/app/ns/k"
	[ "$(cat <&7)" = kept ]
	exec 7<&-
	echo -n "from the new writer" >"$W/app/ns/n"
	value_is "$W/app/ns/n" "from the new writer"
	rm "$W/app/ns/j"
	mkdir "$W/app/more"
	# ... and the follower left hears of it as it heard of the old one
	within 5 value_is "$R/app/ns/n" "from the new writer"
	within 5 gone "$R/app/ns/j"
	within 5 test -d "$R/app/more"
	# counting the other one only: its own heartbeat as a follower was
	# counted out before it first counted
	within 5 grep -q '"followers": [1-9]' "$W/.stats"
	followers_are "$W" 1
	# only one took over: the other still refuses changes
	run sh -c "echo x >'$R/app/ns/x'"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Read-only file system"* ]]
	fusermount3 -u "$G"
	wait_pids_gone 10 "$GPID"
	unmount_follower
	"$NADB" fsck "$STORE"
}

chunks_are() { [ "$(chunks_of "$1")" = "$2" ]; }

@test "what a writer killed with files open leaves is settled by the follower that takes over" {
	[ "$(id -u)" = 0 ] || skip "only root can remount a follower writable"
	mount_store
	mkdir -p "$MNT/app/ns"
	mount_follower
	# rows its session holds: an unlinked key's chunks, a value's half
	leave_behind "$MNT/app/ns"
	sleep 0.5 # (a followed writer syncs every millisecond: all of it is in Redis)
	kill -9 "$WRITER"
	kill "$HOLDER"
	wait "$HOLDER" || true
	exec 7<&-
	fusermount3 -uz "$MNT"
	wait_pids_gone 10 "$WRITER"
	within 20 grep -q "the writer is gone: this daemon writes the store now" "$FLOG"
	# the dead writer's session runs out with its lock: what it left goes,
	# at the takeover or at the new writer's next heartbeat after that
	within 10 chunks_are "$F" "$BEFORE"
	[ "$(wc -c <"$F/app/ns/kept")" = 300000 ]
	[ "$(wc -c <"$F/app/ns/unfinished")" = 0 ] # never closed: its old value
	gone "$F/app/ns/held"
	unmount_follower
	"$NADB" fsck "$STORE"
}

@test "a key the dead writer had unlinked and held open reads on through a handle the follower that takes over holds" {
	[ "$(id -u)" = 0 ] || skip "only root can remount a follower writable"
	mount_store
	mkdir -p "$MNT/app/ns"
	head -c 300000 /dev/urandom >"$T/value"
	echo -n kept >"$MNT/app/ns/kept"
	before=$(chunks_of "$MNT")
	cp "$T/value" "$MNT/app/ns/held"
	mount_follower
	within 5 test -e "$F/app/ns/held"
	exec 8<"$F/app/ns/held" # the follower's reader, nothing read yet
	exec 7<"$MNT/app/ns/held" # the writer holds it: its unlink leaves an orphan
	rm "$MNT/app/ns/held"
	sleep 0.5 # (a followed writer syncs every millisecond)
	kill -9 "$WRITER"
	exec 7<&-
	fusermount3 -uz "$MNT"
	wait_pids_gone 10 "$WRITER"
	within 20 grep -q "the writer is gone: this daemon writes the store now" "$FLOG"
	gone "$F/app/ns/held"
	cmp "$T/value" - <&8
	exec 8<&-
	# let go of, it goes
	within 10 chunks_are "$F" "$before"
	unmount_follower
	"$NADB" fsck "$STORE"
}

@test "a follower takes the store over at once when its writer unmounts, unless mounted with takeover=off" {
	[ "$(id -u)" = 0 ] || skip "only root can remount a follower writable"
	mount_store
	mkdir -p "$MNT/app/ns"
	mount_follower
	echo -n v1 >"$MNT/app/ns/k"
	within 5 value_is "$F/app/ns/k" v1
	fusermount3 -u "$MNT"
	wait_pids_gone 10 "$WRITER"
	within 5 role_is "$F" writer
	within 5 writable "$F"
	echo -n v2 >"$F/app/ns/k"
	value_is "$F/app/ns/k" v2
	# mounted again, the old writer's mountpoint follows the new one
	"$NADBFS" -o "log=$LOG,takeover=off" "$STORE" "$MNT"
	within 5 mountpoint -q "$MNT"
	MPID=$(daemon_pids "$STORE" | grep -vx "$FPID")
	[ -n "$MPID" ]
	role_is "$MNT" follower
	# (what the new writer closed, once its flusher counted a follower and synced)
	within 5 value_is "$MNT/app/ns/k" v2
	echo -n v3 >"$F/app/ns/k"
	within 5 value_is "$MNT/app/ns/k" v3
	# with -o takeover=off, a follower never writes
	unmount_follower
	sleep 3
	role_is "$MNT" follower
	run writable "$MNT"
	[ "$status" -ne 0 ]
	value_is "$MNT/app/ns/k" v3
	fusermount3 -u "$MNT"
	wait_pids_gone 10 "$MPID"
	"$NADB" fsck "$STORE"
}

# format_is_now V: the store's format record (partition 0's meta table, the
# member "format" encoded as kv_redis.c does: each byte + 1, then 0, then
# the version and the chunk size, little-endian) says version V.
format_is_now() {
	redis-cli -p "$REDIS_PORT" eval '
local key = KEYS[1]
local lo = "gpsnbu\0"
local old = redis.call("ZRANGE", key, "[" .. lo, "(gpsnbu\1", "BYLEX", "LIMIT", 0, 1)[1]
if not old then return redis.error_reply("no format record") end
redis.call("ZREM", key, old)
redis.call("ZADD", key, 0, lo .. string.char(tonumber(ARGV[1])) .. string.sub(old, 9))
return 1' 1 "{nadb:store:p0}:t:meta:z" "$1"
}

# This build's store format (core/store_int.h, the one place it is said).
format_version() {
	sed -n 's/^#define STORE_FORMAT_VERSION \([0-9]*\).*/\1/p' "$BATS_TEST_DIRNAME/../core/store_int.h"
}

@test "a follower stops serving when a newer writer upgrades the store's format, and says why" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v1 >"$MNT/app/ns/k"
	mount_follower
	[ "$(cat "$F/app/ns/k")" = v1 ]
	# what a writer of the next format would leave: rows this follower
	# could misread, so it must not read them at all
	[ "$(format_is_now 99)" = 1 ]
	wait_pids_gone 10 "$FPID"
	grep -q "its format record now says format 99; this nadbfs reads format $(format_version): mount it with a nadbfs of that format: changing nothing more, and serving nothing" "$FLOG"
	not mountpoint -q "$F"
	# the writer, which checked the format when it opened the store, goes on
	[ "$(cat "$MNT/app/ns/k")" = v1 ]
	# put back, a follower mounts again; of another format, it is refused
	[ "$(format_is_now "$(format_version)")" = 1 ]
	mount_follower
	[ "$(cat "$F/app/ns/k")" = v1 ]
	unmount_follower
	[ "$(format_is_now 99)" = 1 ]
	# (a server without an AOF: the warning that it loses writes on a
	# crash is said too, after the reason, not as the reason)
	redis-cli -p "$REDIS_PORT" config set appendonly no >/dev/null
	run "$NADBFS" -o "log=$FLOG" "$STORE" "$F"
	echo "$output"
	[ "$status" -ne 0 ]
	not mountpoint -q "$F"
	[[ "${lines[0]}" == *"cannot open the store: "*"unsupported store format 99"* ]]
	[[ "${lines[*]:1}" == *"appendonly no"* ]]
	redis-cli -p "$REDIS_PORT" config set appendonly yes >/dev/null
	[ "$(format_is_now "$(format_version)")" = 1 ]
}

@test "a follower reads a value whole, or gets ESTALE, while the writer replaces it" {
	mount_store
	mkdir -p "$MNT/app/ns"
	mount_follower
	"$PY" - "$MNT/app/ns" "$F/app/ns" <<'EOF'
import errno, os, sys, threading
w, f = sys.argv[1], sys.argv[2]
# values of 3 chunks, each all one byte: a read mixing two versions shows
vals = [bytes([65 + i]) * (300 * 1024) for i in range(4)]
for i in range(8):
    with open(os.path.join(w, "k%d" % i), "wb") as o:
        o.write(vals[0])
stop = False
def write():
    n = 0
    while not stop:
        n += 1
        with open(os.path.join(w, "k%d" % (n % 8)), "wb") as o:
            o.write(vals[n % 4])
t = threading.Thread(target=write)
t.start()
reads, tries = 0, 0
try:
    while reads < 300:
        tries += 1
        assert tries < 3000, "only %d whole reads in %d tries" % (reads, tries)
        for i in range(8):
            try:
                data = open(os.path.join(f, "k%d" % i), "rb").read()
            except FileNotFoundError:
                continue
            except OSError as e: # replaced while being read: read it again
                assert e.errno == errno.ESTALE, e
                continue
            assert data in vals, "a torn read of k%d: %r" % (i, sorted(set(data)))
            reads += 1
finally:
    stop = True
    t.join()
EOF
	not grep -q "not stored" "$FLOG"
}

@test "a follower cut off from Redis for 10 s serves nothing staler than its lease, and catches up by itself" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v1 >"$MNT/app/ns/k"
	start_cutproxy
	mount_follower "" "redis://127.0.0.1:$PROXY_PORT/store"
	within 5 value_is "$F/app/ns/k" v1
	# the follower's link goes down; the writer goes on
	kill -USR1 "$PROXY_PID"
	within 2 test -e "$T/proxy.pid.cut"
	echo -n "value two" >"$MNT/app/ns/k"
	sleep 1.5 # the follower's lease runs out
	# a read now waits for the link (or fails): it never says v1
	(cat "$F/app/ns/k" >"$T/during" 2>&1; echo $? >"$T/during.rc") &
	BG_PIDS+=($!)
	sleep 8.5
	[ ! -e "$T/during.rc" ] || not grep -qx v1 "$T/during"
	kill -USR2 "$PROXY_PID"
	within 20 test -s "$T/during.rc"
	not grep -q v1 "$T/during"
	# caught up by itself: the value, and notices again
	within 5 value_is "$F/app/ns/k" "value two"
	# the writer counted it out during the cut, and in again
	grep -q "no followers" "$LOG"
	within 10 counted_in_again
	echo -n v3 >"$MNT/app/ns/k"
	within 5 value_is "$F/app/ns/k" v3
}

@test "nadb ls, get, getx, stats, keys, count and dump read a store a daemon serves; put, rm and fsck are refused as in use" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v1 >"$MNT/app/ns/k"
	setfattr -n user.tags -v red "$MNT/app/ns/k"
	"$PY" -c 'import os,sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$MNT/app/ns/k"
	[ "$("$NADB" get "$STORE" /app/ns/k)" = v1 ]
	[ "$("$NADB" ls "$STORE" /app/ns)" = k ]
	[ "$("$NADB" getx "$STORE" /app/ns/k user.tags)" = red ]
	[ "$("$NADB" keys "$STORE" '/app/**')" = /app/ns/k ]
	[ "$("$NADB" count "$STORE" '/app/**')" = 1 ]
	"$NADB" stats --json "$STORE" | grep -q '"keys":1,'
	run "$NADB" get "$STORE" /app/ns/k
	[[ $output != *"in use"* ]]
	"$NADB" dump "$STORE" >"$T/dump.tar"
	tar -tf "$T/dump.tar" | grep -qx ./app/ns/k
	for cmd in "put $STORE /app/ns/x" "rm $STORE /app/ns/k" "fsck $STORE"; do
		run $NADB $cmd </dev/null
		[ "$status" -eq 2 ]
		[[ $output == *"in use"* ]]
	done
	# nothing was written: the writer's store is as it was
	[ "$(cat "$MNT/app/ns/k")" = v1 ]
	[ ! -e "$MNT/app/ns/x" ]
	[ "$(redis-cli -p "$REDIS_PORT" zcard "{nadb:store:p0}:followers")" = 0 ]
}
