#!/usr/bin/env bats
# TTL: user.ttl and user.expires, namespace defaults, lazy expiry, reaping.
# Sub-second expiries go through user.expires so the suite hardly sleeps.

load helpers

setup() {
	nadb_setup
	mount_store reap_interval_ms=100
	mkdir -p "$MNT/app/cache" "$MNT/app/locks"
	echo -n v >"$MNT/app/cache/k"
}

# Unix time SECONDS from now, with nanoseconds.
in_seconds() {
	"$PY" -c 'import sys, time; print("%.9f" % (time.time() + float(sys.argv[1])))' "$1"
}

@test "user.ttl sets the seconds left, and a key without one answers ENODATA" {
	run getfattr --absolute-names -n user.ttl "$MNT/app/cache/k"
	[ "$status" -ne 0 ]
	[[ "$output" == *"No such attribute"* ]]
	setfattr -n user.ttl -v 3600 "$MNT/app/cache/k"
	run getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/k"
	[ "$output" = 3600 ]
}

@test "setfattr -x user.ttl makes a key permanent again" {
	setfattr -n user.ttl -v 3600 "$MNT/app/cache/k"
	setfattr -x user.ttl "$MNT/app/cache/k"
	run getfattr --absolute-names -n user.ttl "$MNT/app/cache/k"
	[[ "$output" == *"No such attribute"* ]]
	run getfattr --absolute-names -n user.expires "$MNT/app/cache/k"
	[[ "$output" == *"No such attribute"* ]]
}

@test "a TTL of 0 deletes the key at once" {
	setfattr -n user.ttl -v 0 "$MNT/app/cache/k"
	run cat "$MNT/app/cache/k"
	[ "$status" -ne 0 ]
	[[ "$output" == *"No such file"* ]]
	run ls "$MNT/app/cache"
	[ "$output" = "" ]
	# the kernel is told to drop the name: stat follows within moments
	for i in $(seq 50); do [ -e "$MNT/app/cache/k" ] || break; sleep 0.02; done
	[ ! -e "$MNT/app/cache/k" ]
}

@test "user.expires reads back exactly, seconds or seconds.nanoseconds" {
	setfattr -n user.expires -v 4102444800 "$MNT/app/cache/k"
	run getfattr --absolute-names --only-values -n user.expires "$MNT/app/cache/k"
	[ "$output" = 4102444800 ]
	setfattr -n user.expires -v 4102444800.123456789 "$MNT/app/cache/k"
	run getfattr --absolute-names --only-values -n user.expires "$MNT/app/cache/k"
	[ "$output" = 4102444800.123456789 ]
}

@test "bad values get EINVAL and change nothing" {
	setfattr -n user.ttl -v 100 "$MNT/app/cache/k"
	for bad in -1 abc 10x "" " 5" 1.5 99999999999999999999 300000000000; do
		run setfattr -n user.ttl -v "$bad" "$MNT/app/cache/k"
		[ "$status" -ne 0 ]
		[[ "$output" == *"Invalid argument"* ]]
	done
	for bad in 253402300800 1.1234567890 1. x -5; do
		run setfattr -n user.expires -v "$bad" "$MNT/app/cache/k"
		[ "$status" -ne 0 ]
		[[ "$output" == *"Invalid argument"* ]]
	done
	run getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/k"
	[ "$output" = 100 ] || [ "$output" = 99 ]
	grep -q "is not a whole number of seconds" "$STORE/nadbfs.log"
}

@test "an expired key is gone at once for open, stat and readdir" {
	setfattr -n user.expires -v "$(in_seconds 0.4)" "$MNT/app/cache/k"
	[ "$(cat "$MNT/app/cache/k")" = v ]
	sleep 0.6
	run cat "$MNT/app/cache/k"
	[ "$status" -ne 0 ]
	[[ "$output" == *"No such file"* ]]
	run stat "$MNT/app/cache/k"
	[ "$status" -ne 0 ]
	run ls "$MNT/app/cache"
	[ "$output" = "" ]
	echo new >"$MNT/app/cache/k"
	[ "$(cat "$MNT/app/cache/k")" = new ]
}

@test "overwriting keeps the expiry, and so does rename" {
	setfattr -n user.ttl -v 1000 "$MNT/app/cache/k"
	echo -n other >"$MNT/app/cache/k"
	run getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/k"
	[ "$output" -gt 990 ]
	mv "$MNT/app/cache/k" "$MNT/app/cache/moved"
	run getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/moved"
	[ "$output" -gt 990 ]
}

@test "a namespace's default TTL applies to keys made in it afterwards" {
	setfattr -n user.ttl -v 300 "$MNT/app/cache"
	run getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache"
	[ "$output" = 300 ]
	echo x >"$MNT/app/cache/new"
	run getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/new"
	[ "$output" = 300 ]
	run getfattr --absolute-names -n user.ttl "$MNT/app/cache/k"
	[[ "$output" == *"No such attribute"* ]]
	setfattr -x user.ttl "$MNT/app/cache"
	echo y >"$MNT/app/cache/newer"
	run getfattr --absolute-names -n user.ttl "$MNT/app/cache/newer"
	[[ "$output" == *"No such attribute"* ]]
	run setfattr -n user.ttl -v 5 "$MNT/app"
	[[ "$output" == *"Operation not permitted"* ]]
}

@test "set -C takes a lock that expires even if its owner dies" {
	setfattr -n user.ttl -v 1 "$MNT/app/locks"
	( set -C; echo $$ >"$MNT/app/locks/job" )
	run bash -c "set -C; echo 2 >'$MNT/app/locks/job'"
	[ "$status" -ne 0 ]
	[[ "$output" == *"File exists"* || "$output" == *"cannot overwrite existing file"* ]]
	sleep 1.2
	( set -C; echo 3 >"$MNT/app/locks/job" )
	[ "$(cat "$MNT/app/locks/job")" = 3 ]
}

@test "the reaper deletes expired keys and counts them" {
	for i in $(seq 1 20); do echo $i >"$MNT/app/cache/e$i"; done
	# far enough ahead that every setfattr lands first (a time already past
	# deletes at once, which the reaper does not count)
	t=$(in_seconds 1.5)
	for i in $(seq 1 20); do setfattr -n user.expires -v "$t" "$MNT/app/cache/e$i"; done
	# the reaper runs every 100 ms; give a loaded machine up to 10 s
	check='import json,sys; d=json.load(open(sys.argv[1])); assert d["reaped"] >= 20, d["reaped"]; assert d["expiring"] == 0, d'
	for i in $(seq 100); do "$PY" -c "$check" "$MNT/.stats" 2>/dev/null && break; sleep 0.1; done
	"$PY" -c "$check" "$MNT/.stats"
	unmount_store
	run "$NADB" ls "$STORE" /app/cache
	[ "$output" = k ]
}

@test "expiries survive unmount and mount; keys that expired meanwhile are gone" {
	echo a >"$MNT/app/cache/later"
	setfattr -n user.ttl -v 1000 "$MNT/app/cache/later"
	setfattr -n user.expires -v "$(in_seconds 0.3)" "$MNT/app/cache/k"
	unmount_store
	sleep 0.4
	mount_store
	[ ! -e "$MNT/app/cache/k" ]
	run getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/later"
	[ "$output" -gt 990 ]
}

@test "tags of an expired key are gone with it" {
	setfattr -n user.tags -v hot "$MNT/app/cache/k"
	setfattr -n user.expires -v "$(in_seconds 0.2)" "$MNT/app/cache/k"
	sleep 0.5
	[ ! -e "$MNT/tags/hot/app/cache/k" ]
	unmount_store
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
}
