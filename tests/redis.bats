#!/usr/bin/env bats
# Stores on Redis: what only a store on a server goes through -- the server
# killed and restarted from its AOF, stopped under load, bad URLs, wrong
# passwords, foreign keys -- and moving a store between the backends.
# Every test runs its own redis-server (tests/helpers.bash), whichever
# backend the other suites run on.

load helpers

setup() {
	nadb_setup
	if [ -z "$REDIS_PORT" ]; then
		start_redis || return 1
	fi
	URL=redis://127.0.0.1:$REDIS_PORT/store
	LOG=$T/nadbfs.log
}

# Start our redis-server again on its port and files (its AOF).
restart_redis() {
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$T/redis" \
		--save "" --appendonly yes --appendfsync always --daemonize yes \
		--pidfile "$T/redis/pid" --logfile "$T/redis/log" >/dev/null
	redis_up
}

# write_fsynced DIR FROM TO: keys kFROM..kTO, each fsync'd before the next;
# prints the last one that was acknowledged (errors: EIO while Redis is
# away are allowed, and stop nothing).
write_fsynced() {
	"$PY" - "$@" <<'EOF'
import os, sys
d, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
done = []
for i in range(a, b + 1):
    try:
        fd = os.open(os.path.join(d, "k%d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, (b"value %d " % i) * (1 + i % 300))
        os.fsync(fd)
        os.close(fd)
        done.append(i)
    except OSError as e:
        print("k%d: %s" % (i, e), file=sys.stderr)
print(" ".join(map(str, done)))
EOF
}

# check_keys DIR N...: each key kN holds exactly what write_fsynced wrote.
check_keys() {
	"$PY" - "$@" <<'EOF'
import os, sys
d = sys.argv[1]
bad = [i for i in map(int, sys.argv[2:])
       if open(os.path.join(d, "k%d" % i), "rb").read() != (b"value %d " % i) * (1 + i % 300)]
print("bad:", bad)
sys.exit(1 if bad else 0)
EOF
}

@test "redis-server killed -9 and restarted from its AOF: nothing fsync'd is lost, no remount, fsck clean" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	acked=$(write_fsynced "$MNT/app/ns" 1 200)
	[ "$(echo "$acked" | wc -w)" = 200 ]
	kill -9 "$(cat "$T/redis/pid")"
	# while it is away, requests fail (EIO) or wait; none is half done
	run write_fsynced "$MNT/app/ns" 201 203
	restart_redis
	more=$(write_fsynced "$MNT/app/ns" 300 350)
	[ "$(echo "$more" | wc -w)" = 51 ]
	# shellcheck disable=SC2086
	check_keys "$MNT/app/ns" $acked $more
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	mount_store_at "$URL" "$MNT"
	# shellcheck disable=SC2086
	check_keys "$MNT/app/ns" $acked $more
	unmount_store_at "$URL" "$MNT"
}

@test "Redis stopped for 3 s under load: writers wait or get EIO, then go on; fsync'd keys all there" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	write_fsynced "$MNT/app/ns" 1 3000 >"$T/acked" 2>"$T/errors" &
	writer=$!
	BG_PIDS+=("$writer")
	sleep 0.5
	kill -STOP "$(cat "$T/redis/pid")"
	sleep 3
	kill -CONT "$(cat "$T/redis/pid")"
	wait "$writer"
	echo "errors: $(wc -l <"$T/errors")"
	not grep -v "Input/output error" "$T/errors"
	[ "$(wc -w <"$T/acked")" -gt 2000 ]
	# shellcheck disable=SC2046
	check_keys "$MNT/app/ns" $(cat "$T/acked")
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	[ "$status" -eq 0 ]
}

@test "nadb dump | nadb load from a directory store to Redis and back gives the same tree" {
	dir=$T/dirstore
	printf dark | "$NADB" put "$dir" /app/users/theme:123
	head -c 300000 /dev/urandom >"$T/blob"
	"$NADB" put "$dir" /app/media/cat.jpg <"$T/blob"
	"$NADB" setx "$dir" /app/users/theme:123 user.tags red,blue
	"$NADB" setx "$dir" /app/users/theme:123 user.color green
	"$NADB" setx "$dir" /app/media/cat.jpg user.expires "$(($(date +%s) + 7200)).5"
	"$NADB" setx "$dir" /app/users user.ttl 600
	"$NADB" dump "$dir" >"$T/a.tar"
	"$NADB" load "$URL" <"$T/a.tar"
	"$NADB" dump "$URL" >"$T/b.tar"
	"$NADB" load "$T/back" <"$T/b.tar"
	"$NADB" dump "$T/back" >"$T/c.tar"
	listing() { tar -tv --full-time --xattrs -f "$1" | sort; }
	diff <(listing "$T/a.tar") <(listing "$T/b.tar")
	diff <(listing "$T/a.tar") <(listing "$T/c.tar")
	cmp "$T/blob" <("$NADB" get "$URL" /app/media/cat.jpg)
	[ "$("$NADB" getx "$URL" /app/users/theme:123 user.tags)" = blue,red ]
	[ "$("$NADB" getx "$T/back" /app/media/cat.jpg user.expires)" = \
	  "$("$NADB" getx "$dir" /app/media/cat.jpg user.expires)" ]
	[ "$("$NADB" getx "$URL" /app/users user.ttl)" = 600 ]
}

@test "bad URLs, a wrong password, no server and a foreign NAME: a clear message, exit 1, nothing written" {
	for url in redis:// redis://127.0.0.1:99999/x "redis://127.0.0.1:$REDIS_PORT/bad name" \
		"redis://127.0.0.1:$REDIS_PORT/$(printf 'n%.0s' $(seq 70))"; do
		run "$NADBFS" "$url" "$MNT"
		echo "$url: $output"
		[ "$status" -eq 1 ]
		[[ "$output" == *"redis"* ]]
		not mountpoint -q "$MNT"
	done
	# nothing listens on this port
	run "$NADBFS" redis://127.0.0.1:1/x "$MNT"
	[ "$status" -eq 1 ]
	[[ "$output" == *"refused"* ]]
	# a password where the server wants another
	redis-cli -p "$REDIS_PORT" config set requirepass sesame >/dev/null
	run "$NADBFS" "redis://:wrong@127.0.0.1:$REDIS_PORT/x" "$MNT"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"password"* || "$output" == *"denied"* ]]
	mount_store_at "redis://:sesame@127.0.0.1:$REDIS_PORT/x" "$MNT"
	# the password is neither in the mount table nor in the daemon's
	# command line
	not grep -q sesame /proc/mounts
	pid=$(pgrep -f -- "nadbfs .*:x*@127.0.0.1:$REDIS_PORT/x $MNT")
	[ -n "$pid" ]
	not grep -q sesame <(tr '\0' ' ' <"/proc/$pid/cmdline")
	unmount_store_at "redis://:sesame@127.0.0.1:$REDIS_PORT/x" "$MNT"
	redis-cli -p "$REDIS_PORT" -a sesame --no-auth-warning config set requirepass "" >/dev/null
	# keys under our names that are not a store
	redis-cli -p "$REDIS_PORT" set '{nadb:foreign:p0}:t:inodes:h' x >/dev/null
	before=$(redis-cli -p "$REDIS_PORT" dbsize)
	run "$NADBFS" "redis://127.0.0.1:$REDIS_PORT/foreign" "$MNT"
	echo "$output"
	[ "$status" -eq 1 ]
	[ "$(redis-cli -p "$REDIS_PORT" dbsize)" = "$before" ]
}

@test "the layout: a hash tag per namespace; entries one sorted-set member each; inodes, names and chunks in bucket hashes; layouts 2 and 4 taken on (marked 5), layout 1 refused with what to do" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns" "$MNT/app/other"
	for k in a b c; do echo -n "value $k" >"$MNT/app/ns/$k"; done
	echo -n x >"$MNT/app/other/x"
	setfattr -n user.tags -v red "$MNT/app/ns/a"
	setfattr -n user.note -v hi "$MNT/app/ns/b"
	setfattr -n user.ttl -v 3600 "$MNT/app/ns/c"
	p=$(($(stat -c %i "$MNT/app/ns") >> 40))
	q=$(($(stat -c %i "$MNT/app/other") >> 40))
	# each namespace's keys are numbered in its own partition
	[ $(($(stat -c %i "$MNT/app/ns/a") >> 40)) -eq "$p" ]
	[ $(($(stat -c %i "$MNT/app/other/x") >> 40)) -eq "$q" ]
	unmount_store_at "$URL" "$MNT"
	cli() { redis-cli -p "$REDIS_PORT" "$@"; }
	echo "partitions: ns $p, other $q"
	[ "$p" -ge 1 ]
	[ "$q" -ge 1 ]
	[ "$p" -ne "$q" ]
	# every key the store made carries one of its hash tags (pP, or sN for
	# a segment of chunk bytes)
	[ -z "$(cli --scan | grep -v '^{nadb:store:[ps][0-9]*}:')" ]
	[ "$(cli zrange '{nadb:store:p0}:partitions' 0 -1 | sort -n | tr '\n' ' ')" = "$(printf '%s\n' "$p" "$q" | sort -n | tr '\n' ' ')" ]
	# a namespace's rows (its keys' entries, inodes, names, xattrs, tags)
	# are under its own tag; root and database rows under p0
	[ "$(cli type "{nadb:store:p$p}:t:dirents:z")" = zset ]
	[ "$(cli zcard "{nadb:store:p$p}:t:dirents:z")" -eq 3 ]
	[ "$(cli zcard "{nadb:store:p$q}:t:dirents:z")" -eq 1 ]
	[ "$(cli zcard '{nadb:store:p0}:t:dirents:z')" -eq 3 ] # app; ns, other
	[ "$(cli exists "{nadb:store:p$p}:t:dirents:h")" -eq 0 ]
	[ "$(cli zcard "{nadb:store:p$p}:t:xattrs:z")" -ge 1 ]
	[ "$(cli zcard "{nadb:store:p$p}:t:tags_of:z")" -eq 1 ]
	[ "$(cli exists '{nadb:store:p0}:t:tags_of:z')" -eq 0 ]
	# the tag index too: a key's names in its tag's tree and the tag's
	# count of keys are rows of its partition; only the tag's id is in p0
	[ "$(cli zcard "{nadb:store:p$p}:t:tag_edges:z")" -eq 1 ]
	[ "$(cli zcard "{nadb:store:p$p}:t:tag_counts:z")" -eq 1 ]
	[ "$(cli zcard '{nadb:store:p0}:t:tag_ids:z')" -eq 1 ]
	[ -z "$(cli --scan --pattern '{nadb:store:p0}:t:tag_[ect]*')" ]
	[ -z "$(cli --scan --pattern '*:t:tag_keys:*')" ]
	[ -z "$(cli --scan --pattern '*:t:tag_tree:*')" ]
	[ "$(cli zcard "{nadb:store:p$p}:t:expiry:z")" -eq 1 ]
	[ "$(cli exists '{nadb:store:p0}:t:expiry:z')" -eq 0 ]
	for t in inodes links; do
		for part in 0 "$p" "$q"; do
			buckets=$(cli --scan --pattern "{nadb:store:p$part}:t:$t:b:*" | wc -l)
			echo "$t in p$part: $buckets buckets"
			[ "$buckets" -ge 1 ]
			[ "$(cli zcard "{nadb:store:p$part}:t:$t:z")" -eq "$buckets" ]
		done
	done
	buckets=$(cli --scan --pattern "{nadb:store:p0}:t:chunks:b:*" | wc -l)
	[ "$buckets" -ge 1 ]
	[ "$(cli zcard "{nadb:store:p0}:t:chunks:z")" -eq "$buckets" ]
	[ "$(cli get '{nadb:store:p0}:format')" = "nadb-redis 5" ]
	# chunk bytes: segments under tags of their own (a cluster spreads them)
	[ "$(cli exists '{nadb:store:s1}:seg')" = 1 ]
	[ -z "$(cli --scan --pattern '{nadb:store:p0}:seg:*')" ]
	# a key's counters are its namespace's row (in its partition): the
	# database's and the store's rows, in p0, do not move when keys come
	# and go (values here are copies, so that no chunk is made or freed:
	# chunks, shared store-wide, are counted in p0)
	before=$(cli zrange '{nadb:store:p0}:t:counters:z' 0 -1 | od -c)
	nsrow=$(cli zrange "{nadb:store:p$p}:t:counters:z" 0 -1 | od -c)
	mount_store_at "$URL" "$MNT"
	echo -n "value c" >"$MNT/app/ns/d"
	cp "$MNT/app/ns/c" "$MNT/app/ns/e"
	rm "$MNT/app/ns/e"
	mkdir "$MNT/app/ns/sub"
	# ... and their totals still count them: 4 keys in ns, 1 in other
	[ "$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["keys"])' "$MNT/app/ns/.stats")" = 4 ]
	[ "$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["keys"])' "$MNT/app/.stats")" = 5 ]
	[ "$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["keys"])' "$MNT/.stats")" = 5 ]
	unmount_store_at "$URL" "$MNT"
	[ "$(cli zrange '{nadb:store:p0}:t:counters:z' 0 -1 | od -c)" = "$before" ]
	[ "$(cli zrange "{nadb:store:p$p}:t:counters:z" 0 -1 | od -c)" != "$nsrow" ]
	# tagging keys with a tag that has its id, and untagging them, writes
	# nothing in p0 (the lock, its fence and the mount's session aside)
	p0_rows() {
		cli --scan --pattern '{nadb:store:p0}:*' | grep -v -e ':lock' -e ':fence' -e ':session' | sort |
			while read -r k; do echo "$k"; cli dump "$k" | od -c; done | md5sum
	}
	before=$(p0_rows)
	mount_store_at "$URL" "$MNT"
	setfattr -n user.tag.red "$MNT/app/ns/b"
	setfattr -n user.tag.red "$MNT/app/other/x"
	setfattr -x user.tag.red "$MNT/app/ns/a"
	ls "$MNT/tags/red/app/ns" "$MNT/tags/red/app/other"
	[ "$(ls "$MNT/tags/red/app")" = "$(printf 'ns\nother')" ]
	[ "$(cat "$MNT/tags/red/app/ns/b")" = "value b" ]
	unmount_store_at "$URL" "$MNT"
	[ "$(p0_rows)" = "$before" ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	# a partition missing from the partitions set (scans walk that set):
	# fsck says so, --repair puts it back, and nothing is lost
	[ "$(cli zrem '{nadb:store:p0}:partitions' "$q")" = 1 ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"partition $q holds rows but is not in the partitions set"* ]]
	run "$NADB" fsck --repair "$URL"
	echo "$output"
	run "$NADB" fsck "$URL"
	[ "$status" -eq 0 ]
	[ "$("$NADB" get "$URL" /app/other/x)" = x ]
	# a store marked with layout 2 (layout 3 in one partition) is taken on
	# and marked 5 with its segments in partition 0, so that an older nadb
	# refuses it from now on (it would not weigh the chunks it writes)
	cli set '{nadb:two:p0}:format' 'nadb-redis 2' >/dev/null
	mount_store_at "redis://127.0.0.1:$REDIS_PORT/two" "$MNT"
	mkdir -p "$MNT/app/ns"
	echo -n "value two" >"$MNT/app/ns/k"
	unmount_store_at "redis://127.0.0.1:$REDIS_PORT/two" "$MNT"
	[ "$(cli get '{nadb:two:p0}:format')" = "nadb-redis 5, segments in p0" ]
	[ "$(cli hget '{nadb:two:p0}:t:chunks:tally' rows)" = 1 ]
	[ "$(cli exists '{nadb:two:p0}:seg:1')" = 1 ]
	[ -z "$(cli --scan --pattern '{nadb:two:s*')" ]
	mount_store_at "redis://127.0.0.1:$REDIS_PORT/two" "$MNT"
	[ "$(cat "$MNT/app/ns/k")" = "value two" ]
	unmount_store_at "redis://127.0.0.1:$REDIS_PORT/two" "$MNT"
	# a store of layout 4: marked 5 and its chunks weighed, once, even if
	# a tally is there (a nadb that kept one wrote it, then one that did
	# not wrote more)
	rows=$(cli hget '{nadb:store:p0}:t:chunks:tally' rows)
	cli set '{nadb:store:p0}:format' 'nadb-redis 4' >/dev/null
	cli hincrby '{nadb:store:p0}:t:chunks:tally' rows 5 >/dev/null
	mount_store_at "$URL" "$MNT"
	unmount_store_at "$URL" "$MNT"
	[ "$(cli get '{nadb:store:p0}:format')" = "nadb-redis 5" ]
	[ "$(cli hget '{nadb:store:p0}:t:chunks:tally' whole)" = 1 ]
	[ "$(cli hget '{nadb:store:p0}:t:chunks:tally' rows)" = "$rows" ]
	run "$NADB" fsck "$URL"
	[ "$status" -eq 0 ]
	# a store of layout 1: refused, nothing written, told what to do
	cli set '{nadb:old:p0}:format' 'nadb-redis 1' >/dev/null
	before=$(cli dbsize)
	run "$NADBFS" "redis://127.0.0.1:$REDIS_PORT/old" "$MNT"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"nadb-redis 1"* ]]
	[[ "$output" == *"nadb dump"* ]]
	[ "$(cli dbsize)" = "$before" ]
	not mountpoint -q "$MNT"
}

@test "inode numbers come in blocks from Redis (INCRBY), a partition's own, and are never given twice, across remounts" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	echo -n 1 >"$MNT/app/ns/a"
	a=$(stat -c %i "$MNT/app/ns/a")
	p=$((a >> 40))
	seq_a=$((a & ((1 << 40) - 1)))
	unmount_store_at "$URL" "$MNT"
	claimed=$(redis-cli -p "$REDIS_PORT" get "{nadb:store:p$p}:inos")
	echo "a: $a (partition $p, number $seq_a), claimed: $claimed"
	[ "$claimed" -ge "$seq_a" ]
	mount_store_at "$URL" "$MNT"
	rm "$MNT/app/ns/a"
	echo -n 2 >"$MNT/app/ns/b"
	b=$(stat -c %i "$MNT/app/ns/b")
	echo "b: $b"
	# a new block of the same partition: past everything claimed before
	[ $((b >> 40)) -eq "$p" ]
	[ $((b & ((1 << 40) - 1))) -gt "$claimed" ]
	# a new namespace: a new partition
	mkdir "$MNT/app/ns2"
	[ $(($(stat -c %i "$MNT/app/ns2") >> 40)) -gt "$p" ]
	unmount_store_at "$URL" "$MNT"
	[ "$(redis-cli -p "$REDIS_PORT" get "{nadb:store:p$p}:inos")" -ge $((b & ((1 << 40) - 1))) ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "Redis at maxmemory: writes get ENOSPC, what was stored stays, and raising maxmemory lets the same mount go on" {
	redis-cli -p "$REDIS_PORT" config set maxmemory-policy noeviction >/dev/null
	redis-cli -p "$REDIS_PORT" config set maxmemory 24mb >/dev/null
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	local i failed=0
	for i in $(seq 1 60); do
		head -c 524288 /dev/urandom >"$T/v$i"
		if ! dd if="$T/v$i" of="$MNT/app/ns/k$i" bs=512k conv=fsync status=none 2>"$T/err"; then
			failed=$i
			break
		fi
	done
	echo "k$failed: $(cat "$T/err")"
	[ "$failed" -gt 1 ]
	grep -q "No space left on device" "$T/err"
	grep -q "OOM" "$LOG"
	# every value fsync returned for reads back bit for bit
	for ((i = 1; i < failed; i++)); do cmp "$T/v$i" "$MNT/app/ns/k$i"; done
	redis-cli -p "$REDIS_PORT" config set maxmemory 0 >/dev/null
	echo -n after >"$MNT/app/ns/after"
	"$PY" -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' \
		"$MNT/app/ns/after"
	[ "$(cat "$MNT/app/ns/after")" = after ]
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	mount_store_at "$URL" "$MNT"
	for ((i = 1; i < failed; i++)); do cmp "$T/v$i" "$MNT/app/ns/k$i"; done
	[ "$(cat "$MNT/app/ns/after")" = after ]
	unmount_store_at "$URL" "$MNT"
}

@test "a tag index whose rows were lost: fsck names it, --repair rebuilds it from the keys' own tags" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	for k in a b c; do echo -n "$k" >"$MNT/app/ns/$k"; done
	setfattr -n user.tags -v red,blue "$MNT/app/ns/a"
	setfattr -n user.tags -v red "$MNT/app/ns/b"
	p=$(($(stat -c %i "$MNT/app/ns") >> 40))
	unmount_store_at "$URL" "$MNT"
	[ "$(redis-cli -p "$REDIS_PORT" del "{nadb:store:p$p}:t:tag_edges:z")" = 1 ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"tag index: a tagged key is missing from its /tags mirror"* ]]
	run "$NADB" fsck --repair "$URL"
	echo "$output"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	mount_store_at "$URL" "$MNT"
	[ "$(ls "$MNT/tags/red/app/ns")" = "$(printf 'a\nb')" ]
	[ "$(ls "$MNT/tags/blue+red/app/ns")" = a ]
	unmount_store_at "$URL" "$MNT"
}

@test "a chunk record at zero not noted to be freed (never would be): fsck names it; --repair sets its count from the values naming it; the value reads back" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	echo -n one >"$MNT/app/ns/k"
	unmount_store_at "$URL" "$MNT"
	# every chunk record's count set to 0 behind the store's back (its
	# first byte: the count, a varint), no note made
	redis-cli -p "$REDIS_PORT" eval "
		local n = 0
		for _, b in ipairs(redis.call('KEYS', '{nadb:store:p0}:t:chunks:b:*')) do
			local h = redis.call('HGETALL', b)
			for i = 1, #h, 2 do
				redis.call('HSET', b, h[i], string.char(0) .. h[i + 1]:sub(2)); n = n + 1
			end
		end
		return n" 0 >"$T/n"
	[ "$(cat "$T/n")" = 1 ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"at count 0 but not noted to be freed: it never would be"* ]]
	[[ "$output" == *"has refcount 0, but 1 references"* ]]
	run "$NADB" fsck --repair "$URL"
	echo "$output"
	[[ "$output" == *"not noted to be freed: it never would be (noted once its count is checked)"* ]]
	# its count was wrong: set right, it is not noted, and stays
	[ "$(redis-cli -p "$REDIS_PORT" zcard "{nadb:store:p0}:t:chunks:zeros")" = 0 ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	mount_store_at "$URL" "$MNT"
	[ "$(cat "$MNT/app/ns/k")" = one ]
	unmount_store_at "$URL" "$MNT"
	[ "$("$NADB" get "$URL" /app/ns/k)" = one ]
}

@test "a chunk record at zero that no value names, its note lost: fsck names it, --repair notes it again, and it is freed" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	echo -n one >"$MNT/app/ns/k"
	unmount_store_at "$URL" "$MNT"
	# a record (hash 0xaa x 16) at count 0 naming a frame in segment
	# 99999, which does not exist, in its bucket; no note
	local p0="{nadb:store:p0}"
	redis-cli -p "$REDIS_PORT" eval "
		local h, b = string.rep(string.char(170), 16), string.char(170, 160)
		redis.call('HSET', KEYS[1] .. b, h, string.char(0, 159, 141, 6, 0, 5, 0, 0, 0))
		return redis.call('ZADD', KEYS[2], 0, b)" 2 "$p0:t:chunks:b:" "$p0:t:chunks:z" >/dev/null
	stray() { redis-cli -p "$REDIS_PORT" --no-raw hexists "$p0:t:chunks:b:$(printf '\xaa\xa0')" "$(printf '\xaa%.0s' $(seq 16))"; }
	[ "$(stray)" = "(integer) 1" ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"chunks aaaaaaaaaaaaaaaa...: at count 0 but not noted to be freed"* ]]
	run "$NADB" fsck --repair "$URL"
	echo "$output"
	mount_store_at "$URL" "$MNT"
	[ "$(cat "$MNT/app/ns/k")" = one ]
	unmount_store_at "$URL" "$MNT"
	[ "$(stray)" = "(integer) 0" ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "the chunks' tally, kept by Redis's scripts: it weighs what fsck counts; wrong, fsck names it and --repair weighs again; lost, the next mount weighs again" {
	local tally="{nadb:store:p0}:t:chunks:tally"
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	head -c 5000 /dev/urandom >"$MNT/app/ns/a"
	cp "$MNT/app/ns/a" "$MNT/app/ns/b" # the same chunk: weighed once
	echo -n short >"$MNT/app/ns/c"
	echo -n gone >"$MNT/app/ns/d"
	rm "$MNT/app/ns/d"
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	# "N chunks (B bytes)": what the tally must say
	[[ "$output" =~ \ ([0-9]+)\ chunks\ \(([0-9]+)\ bytes\) ]]
	[ "${BASH_REMATCH[1]}" = 2 ]
	[ "$(redis-cli -p "$REDIS_PORT" hget "$tally" rows)" = 2 ]
	[ "$(redis-cli -p "$REDIS_PORT" hget "$tally" size)" = "${BASH_REMATCH[2]}" ]
	[ "$(redis-cli -p "$REDIS_PORT" hget "$tally" raw)" = 5005 ]
	redis-cli -p "$REDIS_PORT" hincrby "$tally" rows 7 >/dev/null
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"the chunks' tally: rows is 9, but the rows weigh 2"* ]]
	run "$NADB" fsck --repair "$URL"
	echo "$output"
	[[ "$output" == *"rows is 9, but the rows weigh 2 (weighed again)"* ]]
	[ "$(redis-cli -p "$REDIS_PORT" hget "$tally" rows)" = 2 ]
	run "$NADB" fsck "$URL"
	[ "$status" -eq 0 ]
	# lost (as in a store a nadb before tallies wrote): weighed at the next mount
	redis-cli -p "$REDIS_PORT" del "$tally" >/dev/null
	mount_store_at "$URL" "$MNT"
	echo -n more >"$MNT/app/ns/e"
	unmount_store_at "$URL" "$MNT"
	grep -q "weighing the chunks for their tally, once" "$LOG"
	[ "$(redis-cli -p "$REDIS_PORT" hget "$tally" rows)" = 3 ]
	[ "$(redis-cli -p "$REDIS_PORT" hget "$tally" whole)" = 1 ]
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "-o min_replicas=1: fsync fails with EIO while the server has no replica, and works once one is connected" {
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	echo -n one >"$MNT/app/ns/k"
	unmount_store_at "$URL" "$MNT"
	mount_store_at "$URL" "$MNT" min_replicas=1
	fsync_write() {
		"$PY" - "$1" "$2" <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.write(fd, sys.argv[2].encode())
try:
    os.fsync(fd)
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
os.close(fd)
EOF
	}
	[ "$(fsync_write "$MNT/app/ns/k" two)" = EIO ]
	grep -q "fewer than min_replicas" "$LOG"
	# ... and so does the next, with nothing new to write: what the
	# primary took is still not on a replica
	[ "$("$PY" -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.fsync(fd); print("ok")
except OSError as e:
    print(e.errno)' "$MNT/app/ns/k")" = 5 ]
	# a replica joins: the next fsync finds it
	start_replica
	[ "$(fsync_write "$MNT/app/ns/k" three)" = ok ]
	unmount_store_at "$URL" "$MNT"
	[ "$("$NADB" get "$URL" /app/ns/k)" = three ]
	# the replica holds it too
	redis-cli -p "$REDIS_PORT" wait 1 2000 >/dev/null
	[ "$(redis-cli -p "$RPORT" dbsize)" = "$(redis-cli -p "$REDIS_PORT" dbsize)" ]
	redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
}

# Start a replica of our server, online once this returns: its port in
# RPORT (drawn until one is free: a port next to ours may be a
# connection's own end, in the ephemeral range), its pid in RPID.
start_replica() {
	local i
	mkdir -p "$T/replica"
	for ((i = 0; i < 20; i++)); do
		RPORT=$((20000 + RANDOM % 40000))
		redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$T/replica" --save "" \
			--replicaof 127.0.0.1 "$REDIS_PORT" --logfile "$T/replica/log" >/dev/null &
		RPID=$!
		BG_PIDS+=("$RPID")
		within 5 redis-cli -p "$RPORT" ping >/dev/null && break
	done
	replica_online() {
		redis-cli -p "$REDIS_PORT" info replication | grep -q '^slave0:.*state=online'
	}
	within 30 replica_online || { cat "$T/replica/log"; false; }
}

# Bytes of the store's frames punched (dead), over every segment.
punched_bytes() {
	redis-cli -p "$REDIS_PORT" hvals "{nadb:store:p0}:punched" | awk '{ n += $1 } END { print n + 0 }'
}

@test "a chunk let go of is punched once the replica confirms its record gone; while the replica lags its frame stays, said in the log; fsck clean" {
	start_replica
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/ns"
	head -c 5000 /dev/urandom >"$T/v1"
	head -c 6000 /dev/urandom >"$T/v2"
	head -c 7000 /dev/urandom >"$T/v3"
	cp "$T/v1" "$MNT/app/ns/k"
	echo flush >"$MNT/.ctl"
	local before=$(punched_bytes)
	cp "$T/v2" "$MNT/app/ns/k" # v1's chunk is let go of
	echo flush >"$MNT/.ctl"
	[ "$(punched_bytes)" -gt "$before" ]
	# the replica stops answering: v2's record goes, its frame stays
	before=$(punched_bytes)
	kill -STOP "$RPID"
	cp "$T/v3" "$MNT/app/ns/k"
	echo flush >"$MNT/.ctl" || true # (the sync's WAIT falls short too: said, not failed)
	kill -CONT "$RPID"
	[ "$(punched_bytes)" = "$before" ]
	grep -q "not every replica confirmed freeing 1 rows at zero" "$LOG"
	[ "$(chunks_of "$MNT")" = 1 ]
	cmp "$T/v3" "$MNT/app/ns/k"
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
}

@test "a one-node Redis Cluster holds a store; a cluster that serves no slot is refused with a clear message, nothing written" {
	stop_redis
	start_redis --cluster-enabled yes --cluster-config-file nodes.conf
	URL=redis://127.0.0.1:$REDIS_PORT/store
	run "$NADBFS" "$URL" "$MNT"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"serves no slot"* ]]
	not mountpoint -q "$MNT"
	[ "$(redis-cli -p "$REDIS_PORT" dbsize)" = 0 ]
	redis-cli -p "$REDIS_PORT" cluster addslotsrange 0 16383 >/dev/null
	for _ in $(seq 100); do
		redis-cli -p "$REDIS_PORT" cluster info | grep -q 'cluster_state:ok' && break
		sleep 0.05
	done
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/users"
	echo -n dark >"$MNT/app/users/theme"
	unmount_store_at "$URL" "$MNT"
	mount_store_at "$URL" "$MNT"
	[ "$(cat "$MNT/app/users/theme")" = dark ]
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "a key's operations write rows of its own namespace's partition only (NADB_CHECK_STEPS); making a namespace writes two" {
	export NADB_CHECK_STEPS=1
	mount_store_at "$URL" "$MNT"
	mkdir -p "$MNT/app/users" "$MNT/web/pages"
	# the check sees what spans partitions: a namespace's entry is in its
	# database's partition, its own rows in its own
	n0=$(grep -c "more than one partition" "$LOG")
	[ "$n0" -ge 2 ]
	f=$MNT/app/users
	head -c 300000 /dev/urandom >"$T/big"
	echo -n dark >"$f/theme"
	echo -n light >"$f/theme"
	echo more >>"$f/theme"
	truncate -s 2 "$f/theme"
	cp "$T/big" "$f/big"
	cp "$T/big" "$f/copy"
	cp "$T/big" "$MNT/web/pages/shared" # the same chunks, another namespace
	mv "$f/copy" "$f/moved"
	ln "$f/moved" "$f/hard"
	setfattr -n user.tags -v red,blue "$f/theme"
	setfattr -n user.tags -v red "$MNT/web/pages/shared"
	setfattr -n user.note -v hi "$f/big"
	echo -n soon >"$MNT/web/pages/t"
	setfattr -n user.ttl -v 1 "$f/big" "$MNT/web/pages/t" # reaped together
	chmod 600 "$f/theme"
	touch -d @1000000000 "$f/theme"
	"$NADB" incr "$MNT" /app/users/n 5 >/dev/null
	echo -n a >"$T/va"
	echo -n b >"$T/vb"
	"$NADB" mset "$MNT" /app/users/a="$T/va" /app/users/b="$T/vb" >/dev/null
	rm "$f/moved" "$f/hard" "$MNT/web/pages/shared"
	[ "$(ls "$MNT/tags/red")" = app ]
	for i in $(seq 50); do [ -e "$f/big" ] || [ -e "$MNT/web/pages/t" ] || break; sleep 0.1; done
	[ ! -e "$f/big" ] && [ ! -e "$MNT/web/pages/t" ] # reaped
	echo flush >"$MNT/.ctl"
	[ "$(grep -c "more than one partition" "$LOG")" = "$n0" ]
	mkdir "$MNT/app/more"
	[ "$(grep -c "more than one partition" "$LOG")" -gt "$n0" ]
	unmount_store_at "$URL" "$MNT"
	run "$NADB" fsck "$URL"
	[ "$status" -eq 0 ]
}

@test "the store lock names pid, host, pid namespace and a token; a dead holder is taken over only when it was in our pid namespace" {
	lock="{nadb:store:p0}:lock"
	mount_store_at "$URL" "$MNT"
	text=$(redis-cli -p "$REDIS_PORT" get "$lock")
	echo "$text"
	[ "$(echo "$text" | head -1)" = "$(daemon_pid "$URL")" ]
	echo "$text" | grep -qxF "mount $MNT"
	echo "$text" | grep -qxF "host $(hostname)"
	echo "$text" | grep -qxF "pidns $(readlink /proc/self/ns/pid)"
	echo "$text" | grep -qE '^token [0-9a-f]{32}$'
	unmount_store_at "$URL" "$MNT"
	# a pid that is gone, on our host, but in another pid namespace (a
	# container sharing our hostname): its pids are not ours to look up
	redis-cli -p "$REDIS_PORT" set "$lock" "$(printf '4000000\nhost %s\npidns pid:[1]\ntoken 00\n' "$(hostname)")" px 30000 >/dev/null
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"in use"* ]]
	[ "$(redis-cli -p "$REDIS_PORT" exists "$lock")" = 1 ]
	# the same in our pid namespace: gone, so its lock is taken over
	redis-cli -p "$REDIS_PORT" set "$lock" "$(printf '4000000\nhost %s\npidns %s\ntoken 00\n' "$(hostname)" "$(readlink /proc/self/ns/pid)")" px 30000 >/dev/null
	run "$NADB" fsck "$URL"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"the lock of pid 4000000, which is gone, is taken over"* ]]
}
