#!/usr/bin/env bats
# A writer's hold on a Redis store is a lease (core/lock.c): renewed every
# second, it lets the writer change the store for 8 s after the last
# renewal Redis confirmed; the lock itself expires 10 s after it.  A
# writer cut off from Redis stops acknowledging changes when its lease
# runs out, and once another daemon took the store over, nothing the cut
# off writer sent -- even a sync held up in the network -- lands
# (kv_redis.c, "Fencing"), and the cut off writer unmounts itself.

load helpers

setup() {
	nadb_setup || return 1
	if [ "${NADB_TEST_BACKEND:-dir}" != redis ]; then
		skip "leases are for stores on Redis (run with NADB_TEST_BACKEND=redis)"
	fi
	M2=$T/m2
	mkdir "$M2"
}

teardown() {
	[ -n "${PROXY_PID:-}" ] && kill -USR2 "$PROXY_PID" 2>/dev/null
	[ -n "${M2:-}" ] && mountpoint -q "$M2" && fusermount3 -u "$M2"
	nadb_teardown
}

# change_loop FILE SECS OUT: chmod FILE every 0.2 s for SECS seconds (a
# change that needs no round trip to Redis: the writer holds the key's
# inode row); OUT gets a line "SECONDS-SINCE-START ok|errnoN" each.
change_loop() {
	"$PY" - "$@" <<'EOF'
import os, sys, time
path, secs, out = sys.argv[1], float(sys.argv[2]), open(sys.argv[3], "w")
t0 = time.monotonic()
i = 0
while time.monotonic() - t0 < secs:
    i += 1
    try:
        os.chmod(path, 0o600 | 0o044 * (i % 2))
        what = "ok"
    except OSError as e:
        what = "errno%d" % e.errno
    print("%.2f %s" % (time.monotonic() - t0, what), file=out, flush=True)
    time.sleep(0.2)
EOF
}

fsync_file() { "$PY" -c 'import os,sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$1"; }
lock_expired() { [ "$(redis-cli -p "$REDIS_PORT" exists "{nadb:store:p0}:lock")" = 0 ]; }

@test "a writer cut off from Redis for 12 s stops acknowledging changes within its lease, loses nothing fsync'd, and goes on by itself" {
	start_cutproxy
	URL="redis://127.0.0.1:$PROXY_PORT/store"
	# no sync and no reaping during the cut (each would hold every request
	# up while it waits for Redis): what is tested is the lease alone
	mount_store_at "$URL" "$MNT" flush_interval=60,reap_interval_ms=600000
	mkdir -p "$MNT/app/ns"
	echo -n before >"$MNT/app/ns/k"
	fsync_file "$MNT/app/ns/k"
	kill -USR1 "$PROXY_PID"
	within 2 test -e "$T/proxy.pid.cut"
	change_loop "$MNT/app/ns/k" 12 "$T/during" &
	loop=$!
	BG_PIDS+=($loop)
	sleep 10
	# the lease is over: compaction deletes nothing of the blob area either
	run sh -c "echo compact >'$MNT/.ctl'"
	echo "compaction during the cut: $output"
	[ "$status" -ne 0 ]
	wait "$loop"
	kill -USR2 "$PROXY_PID"
	wait "$loop"
	cat "$T/during"
	# acknowledged while the lease held (its writes are buffered), and
	# none once it was over: 8 s after the last renewal, so at most 9 s
	# into the cut, until the link came back at 12 s
	awk '$2 == "ok" && $1 < 6' "$T/during" | grep -q .
	[ -z "$(awk '$2 == "ok" && $1 > 9.5 && $1 < 12' "$T/during")" ]
	# the writes that were refused got EIO, and said why in the log
	grep -q errno5 "$T/during"
	grep -q "the store's lease lapsed" "$LOG"
	# back by itself: the lease renewed, writes go on, and fsync works
	within 15 grep -q "Redis confirmed the store lock again" "$LOG"
	echo -n after >"$MNT/app/ns/k"
	fsync_file "$MNT/app/ns/k"
	unmount_store_at "$URL" "$MNT"
	mount_store
	[ "$(cat "$MNT/app/ns/k")" = after ]
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "once another daemon took the store over, a sync the cut off writer sent before writes nothing (it is fenced off), and the cut off writer unmounts itself with status 3" {
	start_cutproxy
	URL="redis://127.0.0.1:$PROXY_PORT/store"
	# in the foreground, for its exit status; its log is its stderr
	"$NADBFS" -f -o flush_interval=60 "$URL" "$MNT" 2>"$T/first.log" &
	first=$!
	BG_PIDS+=($first)
	within 5 mountpoint -q "$MNT"
	mkdir -p "$MNT/app/ns" "$MNT/app/other"
	echo -n one >"$MNT/app/ns/k"
	echo -n one >"$MNT/app/other/k"
	fsync_file "$MNT/app/ns/k"
	# acknowledged, not yet synced...
	echo -n two >"$MNT/app/ns/k"
	echo -n two >"$MNT/app/other/k"
	echo -n two >"$MNT/app/ns/new"
	# ...and the sync that an fsync sends is held up in the network
	kill -USR1 "$PROXY_PID"
	within 2 test -e "$T/proxy.pid.cut"
	(fsync_file "$MNT/app/ns/k" && echo 0 >"$T/fsync.rc" || echo $? >"$T/fsync.rc") &
	BG_PIDS+=($!)
	# the lock expires 10 s after its last renewal: a second daemon then
	# takes the store over (straight to Redis) and writes
	within 20 lock_expired
	mount_store_at "$STORE" "$M2"
	[ "$(cat "$M2/app/ns/k")" = one ]
	[ ! -e "$M2/app/ns/new" ]
	echo -n three >"$M2/app/ns/k"
	fsync_file "$M2/app/ns/k"
	# the link comes back: the first writer's sync arrives, and the
	# fences of both namespaces and of partition 0 refuse all of it
	kill -USR2 "$PROXY_PID"
	within 30 grep -q "another daemon took the store over" "$T/first.log"
	within 30 test -s "$T/fsync.rc"
	[ "$(cat "$T/fsync.rc")" != 0 ]
	# the first writer serves nothing more (what it holds may be stale):
	# it unmounted itself, said why, and exited with status 3
	rc=0
	wait "$first" || rc=$?
	[ "$rc" = 3 ]
	not mountpoint -q "$MNT"
	grep -q "the store is another daemon's now" "$T/first.log"
	# what Redis holds is the second writer's, as a fresh read shows
	[ "$("$NADB" get "$STORE" /app/ns/k)" = three ]
	[ "$("$NADB" get "$STORE" /app/other/k)" = one ]
	run "$NADB" get "$STORE" /app/ns/new
	[ "$status" -ne 0 ]
	[ "$(cat "$M2/app/ns/k")" = three ]
	unmount_store_at "$STORE" "$M2"
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}
