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
	within 1 not test -e "$MNT/app/cache/k"
	# and the setxattr did not wait for that notice, which needs the lock
	# the kernel holds for it (it stalled a second, the directory locked)
	not grep -q "took over" "$LOG"
}

@test "a key given a TTL of 0 or a past expiry cannot be opened by the name the kernel still caches" {
	# the kernel drops the name on a notice that lands after setxattr's
	# reply; an open in between reaches the removed key and must fail
	"$PY" - "$MNT/app/cache" <<'PYEOF'
import os, sys
d = sys.argv[1]
for i in range(300):
    k = os.path.join(d, "race%d" % i)
    with open(k, "w") as f:
        f.write("v")
    os.stat(k)
    if i % 2:
        os.setxattr(k, "user.ttl", b"0")
    else:
        os.setxattr(k, "user.expires", b"1.5")
    try:
        open(k).close()
    except FileNotFoundError:
        continue
    sys.exit("round %d: opened a key its TTL removed" % i)
PYEOF
	run ls "$MNT/app/cache"
	[ "$output" = k ]
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
	for bad in 9000000001 253402300800 1.1234567890 1. x -5; do
		run setfattr -n user.expires -v "$bad" "$MNT/app/cache/k"
		[ "$status" -ne 0 ]
		[[ "$output" == *"Invalid argument"* ]]
	done
	run getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/k"
	[ "$output" = 100 ] || [ "$output" = 99 ]
	grep -q "is not a whole number of seconds" "$LOG"
}

@test "far-future expiries: up to 2255-03-14 kept, later ones EINVAL, never an overflow that deletes" {
	# 8e9 s from now and 9.3e9 as a time overflowed int64 ns: the key was
	# deleted at once instead of refused
	for bad in 8000000000 9000000000; do
		run setfattr -n user.ttl -v "$bad" "$MNT/app/cache/k"
		[[ "$output" == *"Invalid argument"* ]]
	done
	for bad in 9300000000 9000000000.000000001; do
		run setfattr -n user.expires -v "$bad" "$MNT/app/cache/k"
		[[ "$output" == *"Invalid argument"* ]]
	done
	[ "$(cat "$MNT/app/cache/k")" = v ]
	grep -q "past 2255-03-14T16:00:00Z" "$LOG"
	setfattr -n user.expires -v 9000000000 "$MNT/app/cache/k"
	[ "$(getfattr --absolute-names --only-values -n user.expires "$MNT/app/cache/k")" = 9000000000 ]
	setfattr -n user.ttl -v 7000000000 "$MNT/app/cache/k"
	ttl=$(getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/k")
	[ "$ttl" -gt 6999999990 ] && [ "$ttl" -le 7000000000 ]
	# a namespace default that far out: new keys get the latest expiry kept
	mkdir "$MNT/app/far"
	setfattr -n user.ttl -v 7000000000 "$MNT/app/far"
	echo -n w >"$MNT/app/far/k"
	sleep 1.1
	echo -n w >"$MNT/app/far/k2"
	[ "$(cat "$MNT/app/far/k" "$MNT/app/far/k2")" = ww ]
	echo reap >"$MNT/.ctl"
	[ "$(ls "$MNT/app/far")" = "$(printf 'k\nk2')" ]
	[ "$(cat "$MNT/app/cache/k")" = v ]
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

@test "a default TTL reaches inner directories of its owner, not another user's" {
	remount_store allow_other
	chmod 777 "$MNT/app/cache"
	mkdir "$MNT/app/cache/rootsub"
	as_user 1000 1000 mkdir "$MNT/app/cache/theirs"
	setfattr -n user.ttl -v 300 "$MNT/app/cache"
	echo x >"$MNT/app/cache/rootsub/k"
	as_user 1000 1000 sh -c "echo x >'$MNT/app/cache/theirs/k'; echo x >'$MNT/app/cache/k2'"
	[ "$(getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/rootsub/k")" = 300 ]
	[ "$(getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/k2")" = 300 ]
	run getfattr --absolute-names -n user.ttl "$MNT/app/cache/theirs/k"
	[[ "$output" == *"No such attribute"* ]]
	# its owner's own default reaches it
	as_user 1000 1000 setfattr -n user.ttl -v 60 "$MNT/app/cache/theirs"
	as_user 1000 1000 sh -c "echo x >'$MNT/app/cache/theirs/k3'"
	[ "$(getfattr --absolute-names --only-values -n user.ttl "$MNT/app/cache/theirs/k3")" = 60 ]
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

# The store's .stats figure NAME.
figure() {
	"$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$MNT/.stats" "$1"
}

@test "expiring and reaped keys count where the keys are: through moves, a namespace's own directory, its deletion; fsck agrees" {
	mkdir -p "$MNT/app/x/sub" "$MNT/app/y" "$MNT/other/z"
	echo -n 1 >"$MNT/app/x/sub/k1"
	echo -n 2 >"$MNT/app/x/k2"
	setfattr -n user.ttl -v 3600 "$MNT/app/x/sub/k1"
	setfattr -n user.ttl -v 3600 "$MNT/app/x/k2"
	[ "$(figure expiring)" = 2 ]
	# a directory in a namespace becomes a namespace: its key's expiry goes along
	mv "$MNT/app/x/sub" "$MNT/app/sub"
	# a key moves to another database's namespace
	mv "$MNT/app/x/k2" "$MNT/other/z/k2"
	[ "$(figure expiring)" = 2 ]
	# a hard link counts as a key does, once a name
	ln "$MNT/other/z/k2" "$MNT/other/z/k2-link"
	[ "$(figure expiring)" = 3 ]
	rm "$MNT/other/z/k2-link"
	# reaped in a namespace that is then deleted: still counted
	echo -n 3 >"$MNT/app/y/k3"
	setfattr -n user.expires -v "$(in_seconds 0.2)" "$MNT/app/y/k3"
	for _ in $(seq 50); do [ "$(figure reaped)" = 1 ] && break; sleep 0.1; done
	[ "$(figure reaped)" = 1 ]
	rmdir "$MNT/app/y"
	[ "$(figure reaped)" = 1 ]
	[ "$(figure expiring)" = 2 ]
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
	mount_store
	[ "$(figure reaped)" = 1 ]
	[ "$(figure expiring)" = 2 ]
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

# A plain folder like one a user builds or keeps: a namespace with a
# default ttl of 120 s, a key with its own ttl of 1800 s, a key with its
# own fixed expiry, and a key with none.
make_plain_ns() {
	mkdir -p "$T/plain/ns"
	echo -n own >"$T/plain/ns/own"
	echo -n fixed >"$T/plain/ns/fixed"
	echo -n none >"$T/plain/ns/none"
	setfattr -n user.ttl -v 120 "$T/plain/ns"
	setfattr -n user.ttl -v 1800 "$T/plain/ns/own"
	FIXED=$(($(date +%s) + 7200)).5
	setfattr -n user.expires -v "$FIXED" "$T/plain/ns/fixed"
}

ttl_of() { getfattr --absolute-names --only-values -n user.ttl "$1" 2>/dev/null || echo none; }

# check_plain_copy: the keys kept their own expiry; the one without has none.
check_plain_copy() {
	local t
	[ "$(cat "$MNT/app/ns/own")" = own ]
	t=$(ttl_of "$MNT/app/ns/own")
	[ "$t" -gt 1790 ]
	[ "$t" -le 1800 ]
	[ "$(getfattr --absolute-names --only-values -n user.expires "$MNT/app/ns/fixed")" = "${FIXED}00000000" ]
	[ "$(ttl_of "$MNT/app/ns")" = 120 ]
	t=$(ttl_of "$MNT/app/ns/none")
	[ "$t" = "$1" ]
}

@test "rsync -aX from a plain folder keeps each key's own expiry (a key without one keeps none)" {
	make_plain_ns
	run rsync -aX "$T/plain/ns" "$MNT/app/"
	echo "$output"
	[ "$status" -eq 0 ]
	check_plain_copy none
}

@test "tar --xattrs and cp -a from a plain folder keep each key's own expiry" {
	make_plain_ns
	run bash -c "tar --xattrs --xattrs-include='user.*' -C '$T/plain' -cf - ns | tar --xattrs --xattrs-include='user.*' -C '$MNT/app' -xf -"
	echo "$output"
	[ "$status" -eq 0 ]
	# both set a directory's attributes after its contents: the key
	# without an expiry was made before the namespace had its default
	check_plain_copy none
	rm -r "$MNT/app/ns"
	run cp -a "$T/plain/ns" "$MNT/app/"
	echo "$output"
	[ "$status" -eq 0 ]
	check_plain_copy none
	# into a namespace that has a default already, it gets the default
	mkdir "$MNT/app/ex"
	setfattr -n user.ttl -v 300 "$MNT/app/ex"
	cp -a "$T/plain/ns/none" "$T/plain/ns/own" "$MNT/app/ex/"
	t=$(ttl_of "$MNT/app/ex/none")
	[ "$t" -gt 290 ]
	[ "$t" -le 300 ]
	t=$(ttl_of "$MNT/app/ex/own")
	[ "$t" -gt 1790 ]
	[ "$t" -le 1800 ]
}

@test "a copy keeps the expiry whatever order it sets and removes user.ttl and user.expires in" {
	mkdir -p "$MNT/app/d"
	setfattr -n user.ttl -v 120 "$MNT/app/d"
	for order in ttl-then-rm rm-then-ttl expires-then-rm ttl-then-expires; do
		k=$MNT/app/d/$order
		echo -n v >"$k" # inherits the default: 120 s
		case $order in
		ttl-then-rm) setfattr -n user.ttl -v 1800 "$k"; setfattr -x user.expires "$k" ;;
		rm-then-ttl) setfattr -x user.expires "$k"; setfattr -n user.ttl -v 1800 "$k" ;;
		expires-then-rm) setfattr -n user.expires -v "$(($(date +%s) + 1800))" "$k"
			setfattr -x user.ttl "$k" 2>/dev/null || true
			setfattr -n user.expires -v "$(($(date +%s) + 1800))" "$k" ;;
		ttl-then-expires) setfattr -n user.ttl -v 60 "$k"
			setfattr -n user.expires -v "$(($(date +%s) + 1800))" "$k" ;;
		esac
		t=$(ttl_of "$k")
		echo "$order: $t"
		[ "$t" -gt 1790 ]
		[ "$t" -le 1800 ]
	done
	# a user who wants a key kept for good removes its ttl
	setfattr -x user.ttl "$MNT/app/d/ttl-then-rm"
	[ "$(ttl_of "$MNT/app/d/ttl-then-rm")" = none ]
	# removing user.expires drops an expiry given as user.expires
	setfattr -x user.expires "$MNT/app/d/ttl-then-expires"
	[ "$(ttl_of "$MNT/app/d/ttl-then-expires")" = none ]
}

@test "rsync -aX between mounts keeps the exact expiry, and a second run itemizes nothing" {
	mkdir -p "$MNT/app/ns"
	echo -n a >"$MNT/app/ns/a"
	echo -n b >"$MNT/app/ns/b"
	setfattr -n user.ttl -v 1800 "$MNT/app/ns/a"
	setfattr -n user.ttl -v 120 "$MNT/app/ns"
	M2=$T/mnt2
	mkdir "$M2"
	mount_store_at "$T/store2" "$M2"
	mkdir -p "$M2/app/ns"
	setfattr -n user.ttl -v 60 "$M2/app/ns" # the copy replaces this default
	run rsync -aX "$MNT/app/ns" "$M2/app/"
	[ "$status" -eq 0 ]
	[ "$(getfattr --absolute-names --only-values -n user.expires "$M2/app/ns/a")" = \
	  "$(getfattr --absolute-names --only-values -n user.expires "$MNT/app/ns/a")" ]
	[ "$(ttl_of "$M2/app/ns/b")" = none ]
	[ "$(ttl_of "$M2/app/ns")" = 120 ]
	sleep 1.1 # the remaining ttl has moved on
	run rsync -aXi "$MNT/app/ns" "$M2/app/"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = "" ]
	unmount_store_at "$T/store2" "$M2"
}

# watch_deletes SECONDS READY FILE...: the FILEs inotify reports deleted
# (IN_DELETE_SELF), one a line, for SECONDS; READY is made once watching.
watch_deletes() {
	"$PY" - "$@" <<'PYEOF'
import ctypes, os, select, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
IN_DELETE_SELF = 0x400
files = {}
for f in sys.argv[3:]:
    wd = libc.inotify_add_watch(fd, f.encode(), IN_DELETE_SELF)
    if wd < 0:
        sys.exit("inotify: %s: %s" % (f, os.strerror(ctypes.get_errno())))
    files[wd] = os.path.basename(f)
open(sys.argv[2], "w").close()
end = time.time() + float(sys.argv[1])
while time.time() < end:
    if not select.select([fd], [], [], max(0, end - time.time()))[0]:
        continue
    buf = os.read(fd, 65536)
    while buf:
        wd, mask, cookie, n = struct.unpack("iIII", buf[:16])
        if mask & IN_DELETE_SELF:
            print(files[wd], flush=True)
        buf = buf[16 + n:]
PYEOF
}

# Linux raises IN_DELETE on a directory only for names removed through
# the VFS; for a name the file system drops itself
# (fuse_lowlevel_notify_delete) it raises IN_DELETE_SELF on the key.  A
# key a reader finds expired first is dropped by the kernel itself, on
# that reader's failed lookup, with no event: not tested here.
@test "a key that expires raises IN_DELETE_SELF: reaped, or given user.ttl=0" {
	c=$MNT/app/cache
	for k in reaped zero; do echo -n v >"$c/$k"; done
	watch_deletes 6 "$T/watching" "$c/reaped" "$c/zero" "$c/k" >"$T/events" &
	BG_PIDS+=($!)
	wait_for_file "$T/watching"
	setfattr -n user.expires -v "$(in_seconds 0.3)" "$c/reaped"
	setfattr -n user.ttl -v 0 "$c/zero"
	# within the reaper's interval (100 ms) plus a second
	for i in $(seq 30); do
		[ "$(sort -u "$T/events" | grep -c -E '^(reaped|zero)$')" -eq 2 ] && break
		sleep 0.05
	done
	echo "events: $(tr '\n' ' ' <"$T/events")"
	[ "$(sort -u "$T/events" | grep -c -E '^(reaped|zero)$')" -eq 2 ]
	not grep -qx k "$T/events"
}

@test "nadb keys --ttl shows each key's seconds left, -1 for none; --json --ttl as objects" {
	echo -n v >"$MNT/app/cache/long"
	setfattr -n user.ttl -v 3600 "$MNT/app/cache/long"
	for where in "$MNT" "$STORE"; do
		[ "$where" = "$STORE" ] && unmount_store
		run "$NADB" keys --ttl "$where" '/app/cache/*'
		echo "$where: $output"
		[ "$status" -eq 0 ]
		[ "${lines[0]}" = "$(printf '/app/cache/k\t-1')" ]
		[[ "${lines[1]}" =~ ^/app/cache/long$'\t'(3599|3600)$ ]]
		run "$NADB" keys --json --ttl "$where" '/app/cache/*'
		echo "$output"
		[ "$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(d[0]["ttl"], 3590 < d[1]["ttl"] <= 3600, d[1]["path"])' "$output")" = "None True /app/cache/long" ]
	done
	run "$NADB" keys --json "$STORE" '/app/cache/*'
	[ "$output" = '["/app/cache/k","/app/cache/long"]' ]
}

# A key unlinked while open, or while the kernel still holds it (its
# FORGET's deletion is queued: file_delete_forgotten), stays an inode with
# its expiry for a while: the reaper drops its row but does not count it.
@test "a key removed while open or still held is not counted as reaped when its time comes" {
	echo -n v >"$MNT/app/cache/open"
	echo -n v >"$MNT/app/cache/held"
	setfattr -n user.expires -v "$(in_seconds 0.5)" "$MNT/app/cache/open"
	setfattr -n user.expires -v "$(in_seconds 0.5)" "$MNT/app/cache/held"
	[ "$(figure expiring)" = 2 ]
	exec 7<"$MNT/app/cache/open"
	rm "$MNT/app/cache/open" "$MNT/app/cache/held"
	sleep 1.5 # past both expiries, and many reaper passes
	reaped=$(figure reaped) expiring=$(figure expiring) value=$(cat <&7)
	exec 7<&- # before any check: an open file would keep the mount busy
	echo "reaped $reaped, expiring $expiring, value '$value'"
	[ "$reaped" = 0 ]
	[ "$expiring" = 0 ]
	[ "$value" = v ]
	[ "$(figure reaped)" = 0 ]
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}
