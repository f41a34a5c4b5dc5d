#!/usr/bin/env bats
# /.stats, /DB/.stats, /DB/NS/.stats, /.metrics, /.ctl, user.nadb.* and
# copies between mounts with tar and rsync.

load helpers

setup() {
	nadb_setup
	mount_store
}

json() { # json FILE EXPR: evaluate a python expression over the document d
	"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); r=eval(sys.argv[2]); print(r)' "$1" "$2"
}

@test "/.stats is one JSON document with every figure" {
	run "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
need = ["keys", "databases", "namespaces", "tags", "logical_bytes", "stored_bytes",
        "chunks", "chunk_bytes", "payload_bytes", "frame_overhead_bytes",
        "frame_overhead_per_chunk", "dedup_ratio", "compression_ratio", "garbage_bytes",
        "buffer_bytes", "buffer_limit", "buffer_utilization_pct", "expiring", "reaped",
        "uptime_s", "version", "pid", "ops", "role", "followers", "syncs"]
missing = [k for k in need if k not in d]
assert not missing, missing
assert d["pid"] == int(sys.argv[2]), d["pid"]
assert d["role"] == "writer" and d["followers"] == 0, d
for op in ["lookup", "getattr", "open", "read", "write", "create", "unlink", "rename",
           "readdir", "setxattr", "getxattr", "fsync"]:
    o = d["ops"][op]
    assert set(o) >= {"count", "mean_us", "min_us", "p50_us", "p99_us", "max_us", "errors"}, o
' "$MNT/.stats" "$(daemon_pid)"
	[ "$status" -eq 0 ]
}

@test "the counts after a mixed workload are the ones the test computes" {
	mkdir -p "$MNT/a/x" "$MNT/a/y/dir" "$MNT/b/z"
	head -c 1000 /dev/urandom >"$MNT/a/x/k1"
	head -c 2000 /dev/urandom >"$MNT/a/x/k2"
	head -c 300 /dev/urandom >"$MNT/a/y/dir/k3"
	cp "$MNT/a/x/k1" "$MNT/b/z/copy"
	echo -n 12345 >"$MNT/b/z/small"
	rm "$MNT/a/x/k2"
	mv "$MNT/a/y/dir" "$MNT/b/z/dir"
	setfattr -n user.tags -v t1,t2 "$MNT/b/z/small"
	[ "$(json "$MNT/.stats" 'd["keys"]')" = 4 ]
	[ "$(json "$MNT/.stats" 'd["logical_bytes"]')" = 2305 ]
	[ "$(json "$MNT/.stats" 'd["databases"]')" = 2 ]
	[ "$(json "$MNT/.stats" 'd["namespaces"]')" = 3 ]
	[ "$(json "$MNT/.stats" 'd["tags"]')" = 2 ]
	[ "$(json "$MNT/a/.stats" 'd["keys"]')" = 1 ]
	[ "$(json "$MNT/a/.stats" 'd["namespaces"]')" = 2 ]
	[ "$(json "$MNT/b/z/.stats" 'd["keys"]')" = 3 ]
	[ "$(json "$MNT/b/z/.stats" 'd["logical_bytes"]')" = 1305 ]
	[ "$(json "$MNT/a/y/.stats" 'd["keys"]')" = 0 ]
	# dedup: the copy shares its chunk
	[ "$(json "$MNT/.stats" 'd["chunks"]')" = 3 ]
	remount_store
	[ "$(json "$MNT/.stats" 'd["keys"]')" = 4 ]
	[ "$(json "$MNT/b/.stats" 'd["logical_bytes"]')" = 1305 ]
}

@test "a value held in three namespaces is stored once, and its chunks go with the last key" {
	head -c 1M /dev/urandom >"$T/src" # 8 chunks of 128 KiB
	mkdir -p "$MNT/app/a" "$MNT/app/b" "$MNT/web/c"
	for d in app/a app/b web/c; do cp "$T/src" "$MNT/$d/v"; done
	[ "$(json "$MNT/.stats" 'd["chunks"]')" = 8 ]
	rm "$MNT/app/a/v" "$MNT/web/c/v"
	[ "$(json "$MNT/.stats" 'd["chunks"]')" = 8 ]
	cmp "$T/src" "$MNT/app/b/v"
	# an overwrite lets go of the old value's chunks
	head -c 1M /dev/urandom >"$T/new"
	cp "$T/new" "$MNT/app/b/v"
	[ "$(json "$MNT/.stats" 'd["chunks"]')" = 8 ]
	remount_store
	cmp "$T/new" "$MNT/app/b/v"
	rm "$MNT/app/b/v"
	[ "$(json "$MNT/.stats" 'd["chunks"]')" = 0 ]
	[ "$(json "$MNT/.stats" 'd["chunk_bytes"]')" = 0 ]
	unmount_store
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
}

@test ".stats files are read-only, listed only at the root, readable by name everywhere, not keys" {
	mkdir -p "$MNT/db/ns"
	run bash -c "echo x >'$MNT/.stats'"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Permission denied"* ]]
	run bash -c "echo x >'$MNT/db/ns/.stats'"
	[[ "$output" == *"Permission denied"* ]]
	[[ "$(ls -a "$MNT")" == *".stats"* ]]
	[[ "$(ls -a "$MNT/db")" != *".stats"* ]]
	[[ "$(ls -a "$MNT/db/ns")" != *".stats"* ]]
	[ -f "$MNT/db/.stats" ]
	[ "$(json "$MNT/db/ns/.stats" 'd["keys"]')" = 0 ]
	[ "$(json "$MNT/.stats" 'd["keys"]')" = 0 ]
	run mkdir "$MNT/db/.stats"
	[ "$status" -ne 0 ]
}

@test "/.metrics is Prometheus text with counters, gauges and histograms" {
	echo x >/dev/null
	mkdir -p "$MNT/db/ns" && echo v >"$MNT/db/ns/k" && cat "$MNT/db/ns/k" >/dev/null
	run cat "$MNT/.metrics"
	[ "$status" -eq 0 ]
	[[ "$output" == *"# TYPE nadb_keys gauge"* ]]
	[[ "$output" == *"nadb_keys 1"* ]]
	[[ "$output" == *"# TYPE nadb_op_duration_seconds histogram"* ]]
	[[ "$output" == *'nadb_op_duration_seconds_bucket{op="create",le="+Inf"} 1'* ]]
	# every sample line is NAME{labels} VALUE with a number
	echo "$output" | grep -v '^#' | awk 'NF != 2 || $2 !~ /^[0-9.e+-]+$/ { bad = 1; print } END { exit bad }'
}

# A workload of many kinds of requests, fast and slow, small and large.
varied_workload() {
	mkdir -p "$MNT/db/ns/d"
	for i in $(seq 1 40); do head -c $((i * 997)) /dev/urandom >"$MNT/db/ns/k$i"; done
	head -c 3000000 /dev/urandom >"$MNT/db/ns/big"
	for i in $(seq 1 40); do cat "$MNT/db/ns/k$i" >/dev/null; stat "$MNT/db/ns/k$i" >/dev/null; done
	for i in $(seq 1 10); do mv "$MNT/db/ns/k$i" "$MNT/db/ns/d/m$i"; done
	for i in $(seq 11 20); do setfattr -n user.tags -v t$i "$MNT/db/ns/k$i"; done
	for i in $(seq 21 30); do rm "$MNT/db/ns/k$i"; done
	ls -lR "$MNT/db" >/dev/null
	sync
	echo flush >"$MNT/.ctl"
}

@test "/.metrics passes a strict Prometheus and OpenMetrics-naming check after a varied workload" {
	varied_workload
	setfattr -n user.ttl -v bogus "$MNT/db/ns/k11" 2>/dev/null || true
	cat "$MNT/.metrics" >"$T/metrics"
	run "$PY" "$BATS_TEST_DIRNAME/metrics_check.py" "$T/metrics"
	echo "$output"
	[ "$status" -eq 0 ]
	# counters are families without _total whose samples have it
	grep -qx '# TYPE nadb_reaped_keys counter' "$T/metrics"
	grep -q '^nadb_reaped_keys_total ' "$T/metrics"
	[ -z "$(grep '^# TYPE [a-z_]*_total ' "$T/metrics")" ]
	# the version is the one .stats and nadb --version give
	version=$(json "$MNT/.stats" 'd["version"]')
	grep -qx "nadb_build_info{version=\"$version\"} 1" "$T/metrics"
	[ "$("$NADB" --version)" = "nadb $version" ]
	tail -n 1 "$T/metrics" | grep -qx '# EOF'
}

@test "the checker rejects what an OpenMetrics parser rejects: a counter family named *_total" {
	printf '%s\n' '# HELP nadb_reaped_keys_total Keys.' '# TYPE nadb_reaped_keys_total counter' \
		'nadb_reaped_keys_total 0' >"$T/old"
	run "$PY" "$BATS_TEST_DIRNAME/metrics_check.py" "$T/old"
	[ "$status" -eq 1 ]
	[[ "$output" == *"nadb_reaped_keys_total belongs to no TYPE'd family"* ]]
	printf '%s\n' '# TYPE foo counter' 'foo_total 1' '# TYPE foo_total gauge' 'foo_total 2' >"$T/clash"
	run "$PY" "$BATS_TEST_DIRNAME/metrics_check.py" "$T/clash"
	[ "$status" -eq 1 ]
	[[ "$output" == *"clashing name: foo_total"* ]]
	printf '%s\n' '# TYPE h histogram' 'h_bucket{le="1"} 2' 'h_bucket{le="+Inf"} 1' 'h_count 1' \
		'# TYPE g gauge' 'g{a="x",a="y"} 1' 'g{b="x} 1' >"$T/bad"
	run "$PY" "$BATS_TEST_DIRNAME/metrics_check.py" "$T/bad"
	[ "$status" -eq 1 ]
	[[ "$output" == *"buckets not cumulative"* ]]
	[[ "$output" == *"a label twice"* ]]
	[[ "$output" == *"does not end"* ]]
}

@test "latency percentiles never exceed the max nor fall below the min, per operation" {
	varied_workload
	run "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
bad = []
for op, o in d["ops"].items():
    if o["count"] == 0:
        assert o["min_us"] == o["p50_us"] == o["p99_us"] == o["max_us"] == 0, (op, o)
        continue
    if not (o["min_us"] <= o["p50_us"] <= o["p99_us"] <= o["max_us"]):
        bad.append((op, o))
    if not (o["min_us"] <= o["mean_us"] <= o["max_us"] + 0.01):
        bad.append((op, o))
assert not bad, bad
assert sum(1 for o in d["ops"].values() if o["count"]) >= 12
' "$MNT/.stats"
	echo "$output"
	[ "$status" -eq 0 ]
	# one request only: every percentile is that request
	[ "$(json "$MNT/.stats" 'd["ops"]["statfs"]["count"]')" = 0 ]
	stat -f "$MNT" >/dev/null
	[ "$(json "$MNT/.stats" '(lambda o: o["min_us"] == o["p50_us"] == o["p99_us"] == o["max_us"] > 0)(d["ops"]["statfs"])')" = True ]
}

@test "compression ratio: tiny random values are not compressed (1.0); their frame headers are overhead" {
	mkdir -p "$MNT/db/ns"
	for i in $(seq 1 200); do head -c 4 /dev/urandom >"$MNT/db/ns/k$i"; done
	echo flush >"$MNT/.ctl"
	[ "$(json "$MNT/.stats" 'd["chunks"]')" = 200 ]
	[ "$(json "$MNT/.stats" 'd["compression_ratio"]')" = 1.0 ]
	[ "$(json "$MNT/.stats" 'd["payload_bytes"] == d["chunk_bytes"] == 800')" = True ]
	[ "$(json "$MNT/.stats" 'd["frame_overhead_bytes"] == 200 * d["frame_overhead_per_chunk"] == 3200')" = True ]
	[ "$(json "$MNT/.stats" 'd["stored_bytes"] == d["payload_bytes"] + d["frame_overhead_bytes"]')" = True ]
	grep -qx 'nadb_compression_ratio 1' <(cat "$MNT/.metrics")
	grep -qx 'nadb_frame_overhead_bytes 3200' <(cat "$MNT/.metrics")
	# text compresses: the ratio is chunk bytes over payload, headers aside
	yes 'the same line of text, again and again' | head -c 1000000 >"$MNT/db/ns/text"
	echo flush >"$MNT/.ctl"
	[ "$(json "$MNT/.stats" 'd["compression_ratio"] > 5 and d["chunk_bytes"] / d["payload_bytes"] - d["compression_ratio"] < 0.001')" = True ]
}

@test "error replies are counted per operation and errno in .stats and .metrics" {
	mkdir -p "$MNT/db/ns"
	echo -n v >"$MNT/db/ns/k"
	run setfattr -n user.ttl -v bogus "$MNT/db/ns/k"
	[ "$status" -ne 0 ]
	run setfattr -n user.ttl -v -5 "$MNT/db/ns/k"
	[ "$status" -ne 0 ]
	run getfattr -n user.missing "$MNT/db/ns/k"
	[ "$status" -ne 0 ]
	run rmdir "$MNT/db/ns"
	[ "$status" -ne 0 ]
	[ "$(json "$MNT/.stats" 'd["ops"]["setxattr"]["errors"]["EINVAL"]')" = 2 ]
	[ "$(json "$MNT/.stats" 'd["ops"]["getxattr"]["errors"]["ENODATA"]')" = 1 ]
	[ "$(json "$MNT/.stats" 'd["ops"]["rmdir"]["errors"]["ENOTEMPTY"]')" = 1 ]
	cat "$MNT/.metrics" >"$T/metrics"
	grep -qx 'nadb_errors_total{op="setxattr",errno="EINVAL"} 2' "$T/metrics"
	grep -qx 'nadb_errors_total{op="rmdir",errno="ENOTEMPTY"} 1' "$T/metrics"
	# counted with stats=off too: they cost an increment, not a clock
	unmount_store
	mount_store stats=off
	run setfattr -n user.ttl -v bogus "$MNT/db/ns/k"
	[ "$(json "$MNT/.stats" 'd["ops"]["setxattr"]["errors"]["EINVAL"]')" = 1 ]
}

@test "/.ctl takes compact, flush and reap, refuses anything else" {
	echo compact >"$MNT/.ctl"
	echo flush >"$MNT/.ctl"
	echo reap >"$MNT/.ctl"
	run bash -c "echo bogus >'$MNT/.ctl'"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Invalid argument"* ]]
	run cat "$MNT/.ctl"
	[ "$status" -ne 0 ]
	grep -q "unknown command 'bogus'" "$LOG"
}

@test "deleted values give their space back once flushed; compaction keeps the rest" {
	dir_store_only
	mkdir -p "$MNT/db/ns"
	for i in $(seq 1 20); do head -c 200000 /dev/urandom >"$MNT/db/ns/k$i"; done
	for i in $(seq 2 20); do rm "$MNT/db/ns/k$i"; done
	echo flush >"$MNT/.ctl"
	[ "$(json "$MNT/.stats" 'd["garbage_bytes"] < 300000 and d["pack_bytes"] < 500000')" = True ]
	[ "$(du -s -B1 "$STORE/packs" | cut -f1)" -lt 1000000 ] # allocated: punched
	echo compact >"$MNT/.ctl"
	[ "$(json "$MNT/.stats" 'd["garbage_bytes"] < 300000')" = True ]
	[ "$(stat -c %s "$MNT/db/ns/k1")" = 200000 ]
	unmount_store
	[ "$(du -sb "$STORE/packs" | cut -f1)" -lt 1000000 ]
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
}

@test "user.nadb.* describe the key and are read-only" {
	mkdir -p "$MNT/db/ns"
	head -c 300000 /dev/urandom >"$MNT/db/ns/k"
	f=$MNT/db/ns/k
	[ "$(getfattr --absolute-names --only-values -n user.nadb.size "$f")" = 300000 ]
	[ "$(getfattr --absolute-names --only-values -n user.nadb.chunks "$f")" = 3 ]
	[ "$(getfattr --absolute-names --only-values -n user.nadb.hash "$f" | wc -c)" = 32 ]
	run setfattr -n user.nadb.size -v 5 "$f"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Operation not permitted"* ]]
	for a in hash size stored chunks created updated accessed; do
		getfattr --absolute-names -n "user.nadb.$a" "$f" >/dev/null
	done
	# st_blocks come from the bytes the store holds (random: about all)
	[ "$(stat -c %b "$f")" -ge 580 ]
}

@test "getfattr -d -m - shows tags, expiry, user metadata and nadb metadata together" {
	mkdir -p "$MNT/db/ns"
	f=$MNT/db/ns/k
	echo -n hello >"$f"
	setfattr -n user.tags -v red "$f"
	setfattr -n user.ttl -v 3600 "$f"
	setfattr -n user.color -v green "$f"
	run getfattr --absolute-names -d -m - "$f"
	echo "$output"
	for a in tags tag.red expires color nadb.hash nadb.size nadb.stored nadb.chunks \
		nadb.created nadb.updated; do
		echo "$output" | grep -q "^user\.$a="
	done
	# what changes by itself is readable by name, not listed: a copy
	# would see it change every time (the remaining ttl, the access time)
	[[ "$output" != *"user.ttl="* && "$output" != *"user.nadb.accessed="* ]]
	[ "$(getfattr --absolute-names --only-values -n user.ttl "$f")" -gt 3590 ]
	getfattr --absolute-names --only-values -n user.nadb.accessed "$f" | grep -q '^[0-9]*\.'
	# a namespace lists its default ttl
	setfattr -n user.ttl -v 60 "$MNT/db/ns"
	getfattr --absolute-names -d "$MNT/db/ns" | grep -qx 'user.ttl="60"'
	echo "$output" | grep -qx 'user.nadb.size="5"'
	# a directory has no value, so no nadb metadata
	run getfattr --absolute-names -d -m - "$MNT/db/ns"
	[[ "$output" != *"user.nadb."* ]]
}

@test "user.nadb.* refuse a value that is not the key's, and a removal changes nothing" {
	mkdir -p "$MNT/db/ns"
	f=$MNT/db/ns/k
	echo -n hello >"$f"
	hash=$(getfattr --absolute-names --only-values -n user.nadb.hash "$f")
	for kv in size=6 chunks=7 hash=0123456789abcdef0123456789abcdef stored=999999; do
		run setfattr -n "user.nadb.${kv%%=*}" -v "${kv#*=}" "$f"
		[ "$status" -ne 0 ]
		[[ "$output" == *"Operation not permitted"* ]]
	done
	grep -q 'user.nadb.size is read-only' "$LOG"
	run setfattr -n user.nadb.bogus -v 1 "$f"
	[ "$status" -ne 0 ]
	# what a copy writes back, the key's own values, is accepted
	setfattr -n user.nadb.size -v 5 "$f"
	setfattr -n user.nadb.hash -v "$hash" "$f"
	# the times are the key's own and can be restored
	setfattr -n user.nadb.created -v 1600000000.25 "$f"
	[ "$(getfattr --absolute-names --only-values -n user.nadb.created "$f")" = 1600000000.250000000 ]
	for bad in yesterday " 5" +5 -5 1.1234567890 99999999999 9223372036; do
		run setfattr -n user.nadb.created -v "$bad" "$f"
		[[ "$output" == *"Invalid argument"* ]]
	done
	[ "$(getfattr --absolute-names --only-values -n user.nadb.created "$f")" = 1600000000.250000000 ]
	# a removal (rsync -X of a source without them) succeeds; they stay
	setfattr -x user.nadb.size "$f"
	[ "$(getfattr --absolute-names --only-values -n user.nadb.size "$f")" = 5 ]
	[ "$(cat "$f")" = hello ]
}

@test "user.nadb.created, updated and accessed are set by the key's owner or root only, as utimensat" {
	remount_store allow_other
	mkdir -p "$MNT/db/ns"
	chmod 777 "$MNT/db/ns"
	f=$MNT/db/ns/k
	echo -n hello >"$f"
	chmod 666 "$f"
	before=$(stat -c %Z "$f")
	for m in created updated accessed; do
		run as_user 1000 1000 setfattr -n "user.nadb.$m" -v 1000000000 "$f"
		[[ "$output" == *"Operation not permitted"* ]]
	done
	[ "$(stat -c %Y "$f")" != 1000000000 ]
	grep -q "only the key's owner (uid 0) may set its times, not uid 1000" "$LOG"
	# the owner may, and ctime says something changed
	as_user 1000 1000 sh -c "echo -n mine >'$MNT/db/ns/own'"
	as_user 1000 1000 setfattr -n user.nadb.updated -v 1000000000 "$MNT/db/ns/own"
	[ "$(stat -c %Y "$MNT/db/ns/own")" = 1000000000 ]
	sleep 1.1
	setfattr -n user.nadb.updated -v 1000000000 "$f"
	[ "$(stat -c %Y "$f")" = 1000000000 ]
	[ "$(stat -c %Z "$f")" -gt "$before" ]
}

copy_tree_setup() {
	mkdir -p "$MNT/app/ns/dir"
	echo hello >"$MNT/app/ns/dir/a"
	head -c 100000 /dev/urandom >"$MNT/app/ns/b"
	setfattr -n user.tags -v red,blue "$MNT/app/ns/dir/a"
	setfattr -n user.expires -v 4102444800.5 "$MNT/app/ns/b"
	setfattr -n user.color -v green "$MNT/app/ns/b"
	M2=$T/mnt2
	mkdir "$M2"
	mount_store_at "$T/store2" "$M2"
	mkdir -p "$M2/app"
}

check_copy() {
	[ "$(cat "$M2/app/ns/dir/a")" = hello ]
	cmp "$MNT/app/ns/b" "$M2/app/ns/b"
	[ "$(getfattr --absolute-names --only-values -n user.tags "$M2/app/ns/dir/a")" = blue,red ]
	[ "$(getfattr --absolute-names --only-values -n user.expires "$M2/app/ns/b")" = 4102444800.500000000 ]
	[ "$(getfattr --absolute-names --only-values -n user.color "$M2/app/ns/b")" = green ]
	[ -e "$M2/tags/red/app/ns/dir/a" ]
	# the copy keeps the key's times; the rest is computed from its data
	for a in created updated hash size chunks; do
		[ "$(getfattr --absolute-names --only-values -n user.nadb.$a "$MNT/app/ns/b")" = \
		  "$(getfattr --absolute-names --only-values -n user.nadb.$a "$M2/app/ns/b")" ]
	done
}

@test "tar --xattrs copies values, tags, expiries and metadata between mounts" {
	copy_tree_setup
	(cd "$MNT/app" && tar --xattrs --xattrs-include='*' -cf "$T/x.tar" ns)
	tar -tvf "$T/x.tar" --xattrs | grep -q ns/b
	run bash -c "cd '$M2/app' && tar --xattrs --xattrs-include='*' --warning=xattr-write -xf '$T/x.tar' 2>&1"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = "" ]
	check_copy
	unmount_store_at "$T/store2" "$M2"
}

@test "rsync -aX copies values, tags, expiries and metadata between mounts" {
	command -v rsync >/dev/null || skip "rsync is not installed"
	copy_tree_setup
	run rsync -aX "$MNT/app/ns" "$M2/app/"
	echo "$output"
	[ "$status" -eq 0 ]
	check_copy
	# a second run finds nothing to do: no data, no attribute
	run rsync -aXi "$MNT/app/ns" "$M2/app/"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = "" ]
	unmount_store_at "$T/store2" "$M2"
}

@test "cp -a copies values, tags, expiries and metadata between mounts" {
	copy_tree_setup
	mkdir -p "$M2/app/ns"
	run cp -a "$MNT/app/ns/dir" "$MNT/app/ns/b" "$M2/app/ns/"
	echo "$output"
	[ "$status" -eq 0 ]
	check_copy
	unmount_store_at "$T/store2" "$M2"
}

@test "closing a key opened for reading sends no FLUSH; closing a writer does" {
	mkdir -p "$MNT/db/ns"
	echo -n v >"$MNT/db/ns/k"
	before=$(json "$MNT/.stats" 'd["ops"]["flush"]["count"]')
	for i in 1 2 3; do cat "$MNT/db/ns/k" >/dev/null; done
	[ "$(json "$MNT/.stats" 'd["ops"]["flush"]["count"]')" = "$before" ]
	echo -n w >"$MNT/db/ns/k"
	[ "$(json "$MNT/.stats" 'd["ops"]["flush"]["count"]')" -gt "$before" ]
	[ "$(cat "$MNT/db/ns/k")" = w ]
}

@test "-o stats=off stops measuring requests" {
	unmount_store
	mount_store stats=off
	mkdir -p "$MNT/db/ns" && echo v >"$MNT/db/ns/k"
	[ "$(json "$MNT/.stats" 'd["ops"]["create"]["count"]')" = 0 ]
	[ "$(json "$MNT/.stats" 'd["stats"]')" = False ]
}

@test "a namespace or a database copies out of the mount with cp -a, tar and rsync, no excludes" {
	copy_tree_setup
	unmount_store_at "$T/store2" "$M2"
	run cp -a "$MNT/app/ns" "$T/cp"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = "" ]
	cmp "$MNT/app/ns/b" "$T/cp/b"
	[ ! -e "$T/cp/.stats" ]
	run bash -c "tar -C '$MNT/app' -cf - ns | tar -tf -"
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | sort | tr '\n' ' ')" = "ns/ ns/b ns/dir/ ns/dir/a " ]
	run rsync -aX "$MNT/app/ns/" "$T/rs/"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = "" ]
	[ "$(cat "$T/rs/dir/a")" = hello ]
	run cp -a "$MNT/app" "$T/db"
	[ "$status" -eq 0 ]
	[ "$output" = "" ]
	[ -f "$T/db/ns/b" ]
	[ ! -e "$T/db/.stats" ]
}

# The kernel's FORGET of a deleted key is queued and its deletion done in
# batches (fs/nadbfs.c, file_delete_forgotten): .stats counts them out
# first, so a key removed is counted out at once.
@test "keys removed are counted out at once, their chunks with them" {
	mkdir -p "$MNT/db/ns"
	"$PY" - "$MNT/db/ns" <<'EOF2'
import os, sys
for i in range(10):
    with open(f"{sys.argv[1]}/k{i}", "wb") as f:
        f.write(os.urandom(3000))
for i in range(10):
    os.unlink(f"{sys.argv[1]}/k{i}")
EOF2
	[ "$(json "$MNT/.stats" 'd["keys"], d["chunks"], d["logical_bytes"]')" = "(0, 0, 0)" ]
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "a value let go of and written again before the flush reads back, counted once; its chunks go with its last key" {
	mkdir -p "$MNT/db/ns"
	head -c 300000 /dev/urandom >"$T/v" # 3 chunks of 128 KiB
	head -c 1000 /dev/urandom >"$T/w"
	cp "$T/v" "$MNT/db/ns/a"
	echo flush >"$MNT/.ctl"
	cp "$T/w" "$MNT/db/ns/a" # no key holds v's chunks now...
	cp "$T/v" "$MNT/db/ns/b" # ...until this one, before the flush that frees them
	[ "$(json "$MNT/.stats" 'd["keys"], d["chunks"]')" = "(2, 4)" ]
	cmp "$T/v" "$MNT/db/ns/b"
	echo flush >"$MNT/.ctl"
	[ "$(json "$MNT/.stats" 'd["keys"], d["chunks"]')" = "(2, 4)" ]
	remount_store
	cmp "$T/v" "$MNT/db/ns/b"
	cmp "$T/w" "$MNT/db/ns/a"
	rm "$MNT/db/ns/a" "$MNT/db/ns/b"
	remount_store # (the kernel held them: their chunks go once it forgets them)
	[ "$(json "$MNT/.stats" 'd["keys"], d["chunks"], d["chunk_bytes"]')" = "(0, 0, 0)" ]
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}
