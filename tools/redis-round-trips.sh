#!/usr/bin/env bash
# redis-round-trips.sh -- how many round trips nadbfs makes to Redis per
# file operation, the figure that decides its speed on a server over a
# network.
#
#   tools/redis-round-trips.sh [BUILD]     (BUILD: default build/)
#
# Starts a private redis-server (loopback, a free port, AOF fsync'd on every
# write, its files in a temp folder), mounts a store on it with
# attr_timeout=0 (so that every stat reaches the daemon), and runs 200 of
# each operation on 100-byte keys: create, stat, read, overwrite, unlink.
# It counts with MONITOR the commands the daemon sent: calls made inside
# scripts are left out, and a MULTI..EXEC block (the group's sync, one
# pipelined round trip) counts once.  Prints "op: commands / 200 = per-op".
# Unmounts and stops the server on exit, whatever happens.
set -u
build=${1:-$(pwd)/build}
tmp=$(mktemp -d /tmp/nadb-rt.XXXXXX)
port=$((20000 + RANDOM % 40000))
mnt=$tmp/mnt
mkdir -p "$mnt" "$tmp/redis"
cleanup() {
	fusermount3 -u "$mnt" 2>/dev/null
	redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM HUP
redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp/redis" --save "" \
	--appendonly yes --appendfsync always --daemonize yes \
	--pidfile "$tmp/redis/pid" --logfile "$tmp/redis/log" >/dev/null || exit 1
for _ in $(seq 100); do
	[ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
	sleep 0.05
done
"$build/nadbfs" -o "log=$tmp/log,attr_timeout=0" "redis://127.0.0.1:$port/rt" "$mnt" || exit 1
mkdir -p "$mnt/app/ns"
sleep 3 # the mkdirs' group synced and out of the way

count() {
	awk '/\[0 lua\]/ {next} /"MULTI"/ {inm = 1; n++; next} /"EXEC"/ {inm = 0; next}
	     { if (!inm) n++ } END {print n + 0}' "$1"
}

# phase NAME PYTHON-LOOP-BODY: MONITOR while 200 operations run, then long
# enough for the flusher to sync their group.
phase() {
	redis-cli -p "$port" monitor >"$tmp/m.txt" &
	local mon=$!
	sleep 0.3
	python3 -c "
import os
d = '$mnt/app/ns'
for i in range(200):
    p = os.path.join(d, 'k%d' % i)
    $2"
	sleep 3.5
	kill "$mon"
	wait "$mon" 2>/dev/null
	local n
	n=$(count "$tmp/m.txt")
	printf '%s: %d / 200 = %.2f\n' "$1" "$n" "$(echo "$n / 200" | bc -l)"
}

phase create "open(p, 'w').write('x' * 100)"
phase stat "os.stat(p)"
phase read "open(p).read()"
phase overwrite "open(p, 'w').write('y' * 100)"
phase unlink "os.unlink(p)"
