#!/usr/bin/env bats
# Everything survives a clean unmount and mount.

load helpers

setup() {
	nadb_setup
	mount_store
	mkdir -p "$MNT/app/ns"
	NS=$MNT/app/ns
}

@test "databases, namespaces and empty directories survive a remount" {
	mkdir -p "$MNT/db1/ns1/a/b/c" "$MNT/db2/ns2" "$MNT/db3"
	remount_store
	[ -d "$MNT/db1/ns1/a/b/c" ]
	[ -d "$MNT/db2/ns2" ]
	[ -d "$MNT/db3" ]
	[ "$(ls_keys "$MNT")" = "$(printf '%s\n' app db1 db2 db3)" ]
}

@test "contents of small, empty, large and sparse keys survive a remount" {
	head -c 5000000 /dev/urandom >"$T/large"
	echo -n small >"$NS/small"
	: >"$NS/empty"
	cp "$T/large" "$NS/large"
	truncate -s 3000000 "$NS/sparse"
	printf tail >>"$NS/sparse"
	remount_store
	[ "$(cat "$NS/small")" = small ]
	[ "$(stat -c %s "$NS/empty")" = 0 ]
	cmp "$T/large" "$NS/large"
	cmp "$NS/sparse" <(head -c 3000000 /dev/zero; printf tail)
}

@test "values of sizes around the chunk size read back exactly after a remount" {
	sizes="1 4095 4096 4097 65536 131071 131072 131073 262143 262144 262145 1048576 1048577"
	head -c 1048577 /dev/urandom >"$T/src"
	for n in $sizes; do head -c "$n" "$T/src" >"$NS/s$n"; done
	remount_store
	for n in $sizes; do
		[ "$(stat -c %s "$NS/s$n")" = "$n" ]
		cmp "$NS/s$n" <(head -c "$n" "$T/src")
	done
}

@test "a key written many times keeps only its last value after a remount" {
	for i in $(seq 1 50); do echo "value $i" >"$NS/k"; done
	remount_store
	[ "$(cat "$NS/k")" = "value 50" ]
}

@test "modes and times survive a remount" {
	echo -n v >"$NS/k"
	chmod 4751 "$NS/k"
	mkdir "$NS/d"
	chmod 1730 "$NS/d"
	touch -d '2001-02-03 04:05:06.123456789 UTC' "$NS/k"
	touch -a -d '2002-02-03 04:05:06.5 UTC' "$NS/k"
	m=$(stat -c '%a %y %x' "$NS/k")
	remount_store
	[ "$(stat -c '%a %y %x' "$NS/k")" = "$m" ]
	[ "$(stat -c %a "$NS/d")" = 1730 ]
}

@test "xattrs and their removal survive a remount" {
	echo -n v >"$NS/k"
	setfattr -n user.keep -v kept "$NS/k"
	setfattr -n user.gone -v gone "$NS/k"
	setfattr -x user.gone "$NS/k"
	setfattr -n user.d -v dir "$NS"
	remount_store
	[ "$(getfattr --only-values -n user.keep "$NS/k")" = kept ]
	expect_fail "No such attribute" getfattr -n user.gone "$NS/k"
	[ "$(getfattr --only-values -n user.d "$NS")" = dir ]
}

@test "symlinks survive a remount" {
	echo -n v >"$NS/k"
	ln -s k "$NS/rel"
	ln -s /etc/hostname "$NS/abs"
	remount_store
	[ "$(readlink "$NS/rel")" = k ]
	[ "$(readlink "$NS/abs")" = /etc/hostname ]
	[ "$(cat "$NS/rel")" = v ]
}

@test "hard links survive a remount as one inode with link count 2" {
	echo -n shared >"$NS/a"
	mkdir "$NS/d"
	ln "$NS/a" "$NS/d/b"
	remount_store
	[ "$(stat -c %h "$NS/a")" = 2 ]
	[ "$(stat -c %i "$NS/a")" = "$(stat -c %i "$NS/d/b")" ]
	echo -n more >>"$NS/d/b"
	[ "$(cat "$NS/a")" = sharedmore ]
	rm "$NS/a"
	remount_store
	[ "$(stat -c %h "$NS/d/b")" = 1 ]
	[ "$(cat "$NS/d/b")" = sharedmore ]
}

@test "fifos, sockets and device nodes survive a remount" {
	mkfifo "$NS/p"
	mknod "$NS/c" c 4 64
	"$PY" -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$NS/s"
	remount_store
	[ -p "$NS/p" ]
	[ -S "$NS/s" ]
	[ "$(stat -c '%F %t,%T' "$NS/c")" = "character special file 4,40" ]
}

@test "renames and deletions survive a remount" {
	echo -n a >"$NS/a"
	echo -n b >"$NS/b"
	echo -n c >"$NS/c"
	mkdir -p "$NS/dir/sub"
	echo -n x >"$NS/dir/sub/x"
	mv "$NS/a" "$NS/b"
	rm "$NS/c"
	mv "$NS/dir" "$NS/moved"
	remount_store
	[ "$(ls "$NS")" = "$(printf '%s\n' b moved)" ]
	[ "$(cat "$NS/b")" = a ]
	[ "$(cat "$NS/moved/sub/x")" = x ]
}

@test "inode numbers stay the same across a remount" {
	echo -n v >"$NS/k"
	mkdir "$NS/d"
	i1=$(stat -c %i "$NS/k")
	i2=$(stat -c %i "$NS/d")
	remount_store
	[ "$(stat -c %i "$NS/k")" = "$i1" ]
	[ "$(stat -c %i "$NS/d")" = "$i2" ]
}

@test "data stays right over several remounts with changes in between" {
	head -c 2000000 /dev/urandom >"$T/ref"
	cp "$T/ref" "$NS/k"
	for round in 1 2 3; do
		remount_store
		cmp "$T/ref" "$NS/k"
		printf "round$round" | dd of="$T/ref" bs=1 seek=$((round * 300000)) conv=notrunc status=none
		printf "round$round" | dd of="$NS/k" bs=1 seek=$((round * 300000)) conv=notrunc status=none
	done
	remount_store
	cmp "$T/ref" "$NS/k"
}

@test "a daemon stopped (SIGTERM) while a file is still open keeps what was written to it" {
	mkdir -p "$MNT/app/ns"
	exec 5>"$MNT/app/ns/open" # (bats owns fd 3)
	printf 'written before the stop' >&5
	p=$(daemon_pid)
	kill -TERM "$p"
	wait_pids_gone 10 "$p"
	exec 5>&-
	fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
	for _ in $(seq 100); do mountpoint -q "$MNT" || break; sleep 0.05; done
	mount_store
	[ "$(cat "$MNT/app/ns/open")" = "written before the stop" ]
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}
