#!/usr/bin/env bats
# The tree: / holds databases, /DB holds namespaces, /DB/NS holds keys; names.

load helpers

setup() {
	nadb_setup
	mount_store
}

@test "mkdir at the root creates a database and mkdir in it a namespace" {
	mkdir "$MNT/app"
	mkdir "$MNT/app/users"
	[ -d "$MNT/app" ]
	[ -d "$MNT/app/users" ]
	[ "$(ls_keys "$MNT")" = app ]
	[ "$(ls "$MNT/app")" = users ]
}

@test "mkdir -p creates database, namespace and inner directories in one go" {
	mkdir -p "$MNT/app/media/2024/05/31"
	[ -d "$MNT/app/media/2024/05/31" ]
}

@test "rmdir removes an empty namespace and then an empty database" {
	mkdir -p "$MNT/app/users"
	rmdir "$MNT/app/users"
	[ ! -e "$MNT/app/users" ]
	rmdir "$MNT/app"
	[ ! -e "$MNT/app" ]
	[ -z "$(ls_keys -A "$MNT")" ]
}

@test "rmdir of a non-empty database fails with ENOTEMPTY" {
	mkdir -p "$MNT/app/users"
	expect_fail "Directory not empty" rmdir "$MNT/app"
	[ -d "$MNT/app/users" ]
}

@test "rmdir of a non-empty namespace fails with ENOTEMPTY" {
	mkdir -p "$MNT/app/users"
	echo -n x >"$MNT/app/users/k"
	expect_fail "Directory not empty" rmdir "$MNT/app/users"
	[ "$(cat "$MNT/app/users/k")" = x ]
}

@test "rmdir of a non-empty inner directory fails with ENOTEMPTY" {
	mkdir -p "$MNT/app/media/2024"
	echo -n x >"$MNT/app/media/2024/k"
	expect_fail "Directory not empty" rmdir "$MNT/app/media/2024"
	[ -f "$MNT/app/media/2024/k" ]
}

@test "a regular file at the root is refused with EPERM" {
	expect_fail "Operation not permitted" touch "$MNT/file"
	expect_fail "Operation not permitted" bash -c "echo hi > '$MNT/file2'"
	[ ! -e "$MNT/file" ]
	[ ! -e "$MNT/file2" ]
}

@test "a regular file in a database directory is refused with EPERM" {
	mkdir "$MNT/app"
	expect_fail "Operation not permitted" touch "$MNT/app/file"
	expect_fail "Operation not permitted" cp /etc/hostname "$MNT/app/file2"
	[ -z "$(ls_keys -A "$MNT/app")" ]
}

@test "a symlink, FIFO or socket at the root or in a database is refused with EPERM" {
	# README: "A regular file (or symlink, FIFO, socket) directly in / or in /DB/ is refused"
	mkdir "$MNT/app"
	expect_fail "Operation not permitted" ln -s x "$MNT/link"
	expect_fail "Operation not permitted" ln -s x "$MNT/app/link"
	expect_fail "Operation not permitted" mkfifo "$MNT/fifo"
	expect_fail "Operation not permitted" mkfifo "$MNT/app/fifo"
	run "$PY" -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$MNT/app/sock"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Operation not permitted"* ]]
	[ "$(ls_keys -A "$MNT")" = app ]
	[ -z "$(ls_keys -A "$MNT/app")" ]
}

@test "moving a key to the root or into a database is refused with EPERM" {
	mkdir -p "$MNT/app/users"
	echo -n v >"$MNT/app/users/k"
	expect_errno EPERM rename "$MNT/app/users/k" "$MNT/k"
	expect_errno EPERM rename "$MNT/app/users/k" "$MNT/app/k"
	expect_errno EPERM link "$MNT/app/users/k" "$MNT/app/k2"
	[ "$(cat "$MNT/app/users/k")" = v ]
}

@test "a key in a namespace holds its value" {
	mkdir -p "$MNT/app/users"
	echo -n dark >"$MNT/app/users/theme:123"
	[ "$(cat "$MNT/app/users/theme:123")" = dark ]
	[ "$(stat -c %s "$MNT/app/users/theme:123")" = 4 ]
	[ "$(stat -c %F "$MNT/app/users/theme:123")" = "regular file" ]
}

@test "directories below a namespace are real directories holding keys" {
	mkdir -p "$MNT/app/media/2024"
	head -c 300000 /dev/urandom >"$T/photo.jpg"
	cp "$T/photo.jpg" "$MNT/app/media/2024/cat.jpg"
	cmp "$T/photo.jpg" "$MNT/app/media/2024/cat.jpg"
	[ "$(stat -c %F "$MNT/app/media/2024")" = directory ]
	[ "$(ls "$MNT/app/media/2024")" = cat.jpg ]
	rm "$MNT/app/media/2024/cat.jpg"
	rmdir "$MNT/app/media/2024"
	[ -z "$(ls_keys -A "$MNT/app/media")" ]
}

@test "renaming a whole directory moves everything in it" {
	mkdir -p "$MNT/app/media/2024/may"
	echo -n a >"$MNT/app/media/2024/a"
	echo -n b >"$MNT/app/media/2024/may/b"
	mv "$MNT/app/media/2024" "$MNT/app/media/y2024"
	[ ! -e "$MNT/app/media/2024" ]
	[ "$(cat "$MNT/app/media/y2024/a")" = a ]
	[ "$(cat "$MNT/app/media/y2024/may/b")" = b ]
	# and into another namespace of another database
	mkdir -p "$MNT/other/ns"
	mv "$MNT/app/media/y2024" "$MNT/other/ns/"
	[ "$(cat "$MNT/other/ns/y2024/may/b")" = b ]
	[ -z "$(ls_keys -A "$MNT/app/media")" ]
}

@test "renaming a namespace and a database works" {
	mkdir -p "$MNT/app/users"
	echo -n v >"$MNT/app/users/k"
	mv "$MNT/app/users" "$MNT/app/people"
	mv "$MNT/app" "$MNT/prod"
	[ "$(cat "$MNT/prod/people/k")" = v ]
	[ "$(ls_keys "$MNT")" = prod ]
}

@test "ls lists a namespace's keys sorted" {
	mkdir -p "$MNT/app/users"
	for k in zeta alpha 'theme:123' Beta 10 9 m-n m_n; do echo -n "$k" >"$MNT/app/users/$k"; done
	[ "$(ls "$MNT/app/users")" = "$(printf '%s\n' zeta alpha 'theme:123' Beta 10 9 m-n m_n | sort)" ]
}

@test "readdir returns entries in byte order of their names" {
	# store.h: nadb_readdir streams entries in name order; ls -U shows the raw order.
	mkdir -p "$MNT/app/users"
	for k in zeta alpha Beta 10 9 m_n ab a; do echo -n "$k" >"$MNT/app/users/$k"; done
	mkdir "$MNT/app/users/dir"
	[ "$(ls -U "$MNT/app/users")" = "$(printf '%s\n' zeta alpha Beta 10 9 m_n ab a dir | sort)" ]
}

@test "a directory with 3000 keys lists each exactly once" {
	mkdir -p "$MNT/app/many"
	pad=$(printf '%0100d' 0)
	for ((i = 1; i <= 3000; i++)); do : >"$MNT/app/many/key-$i-$pad"; done
	[ "$(ls "$MNT/app/many" | wc -l)" = 3000 ]
	[ "$(ls "$MNT/app/many" | sort -u | wc -l)" = 3000 ]
	[ "$(find "$MNT/app/many" -type f ! -name .stats | wc -l)" = 3000 ]
	[ "$(ls -l "$MNT/app/many" | grep -c '^-')" = 3000 ]
}

@test "the example session of the spec works and everything is on disk after unmount" {
	mkdir -p "$MNT/app/users"
	echo -n dark >"$MNT/app/users/theme:123"
	[ "$(cat "$MNT/app/users/theme:123")" = dark ]
	mkdir -p "$MNT/app/media/2024"
	head -c 1500000 /dev/urandom >"$T/photo.jpg"
	cp "$T/photo.jpg" "$MNT/app/media/2024/cat.jpg"
	echo -n light >"$MNT/app/users/lang:123"
	echo -n old >"$MNT/app/users/t"
	[ "$(ls "$MNT/app/users")" = "$(printf '%s\n' 'lang:123' t 'theme:123')" ]
	mv "$MNT/app/users/theme:123" "$MNT/app/users/t"
	[ "$(cat "$MNT/app/users/t")" = dark ]
	[ ! -e "$MNT/app/users/theme:123" ]
	rm "$MNT/app/users/lang:123"
	unmount_store
	mount_store
	[ "$(ls_keys "$MNT")" = app ]
	[ "$(ls "$MNT/app")" = "$(printf '%s\n' media users)" ]
	[ "$(ls "$MNT/app/users")" = t ]
	[ "$(cat "$MNT/app/users/t")" = dark ]
	cmp "$T/photo.jpg" "$MNT/app/media/2024/cat.jpg"
}

# ---- names -----------------------------------------------------------------

@test "a name with a control character is refused with EINVAL" {
	mkdir -p "$MNT/app/ns"
	expect_fail "Invalid argument" touch "$MNT/app/ns/"$'bad\x01name'
	expect_fail "Invalid argument" touch "$MNT/app/ns/"$'bad\nname'
	expect_fail "Invalid argument" touch "$MNT/app/ns/"$'tab\there'
	expect_fail "Invalid argument" mkdir "$MNT/app/ns/"$'dir\x1f'
	expect_fail "Invalid argument" mkdir "$MNT/"$'db\x01'
	expect_fail "Invalid argument" mkdir "$MNT/app/"$'ns\n'
	[ "$(ls_keys -A "$MNT/app/ns" | wc -l)" = 0 ]
}

@test "a name with DEL (0x7f), a control character, is refused with EINVAL" {
	mkdir -p "$MNT/app/ns"
	expect_errno EINVAL create "$MNT/app/ns/"$'del\x7fname'
}

@test "renaming or linking to a name with a control character is refused with EINVAL" {
	mkdir -p "$MNT/app/ns"
	echo -n v >"$MNT/app/ns/k"
	expect_errno EINVAL rename "$MNT/app/ns/k" "$MNT/app/ns/"$'k\x02'
	expect_errno EINVAL link "$MNT/app/ns/k" "$MNT/app/ns/"$'k\n'
	expect_errno EINVAL symlink k "$MNT/app/ns/"$'l\x03'
	expect_errno EINVAL mkfifo "$MNT/app/ns/"$'f\x04'
	[ "$(ls_keys -A "$MNT/app/ns")" = k ]
}

@test "a 255-byte name is accepted and a 256-byte name gets ENAMETOOLONG" {
	mkdir -p "$MNT/app/ns"
	n255=$(printf 'a%.0s' $(seq 255))
	n256=$(printf 'b%.0s' $(seq 256))
	echo -n v >"$MNT/app/ns/$n255"
	[ "$(cat "$MNT/app/ns/$n255")" = v ]
	mkdir "$MNT/$n255"
	expect_fail "File name too long" touch "$MNT/app/ns/$n256"
	expect_fail "File name too long" mkdir "$MNT/$n256"
	expect_fail "File name too long" mkdir "$MNT/app/ns/${n256}x"
	expect_errno ENAMETOOLONG rename "$MNT/app/ns/$n255" "$MNT/app/ns/$n256"
}

@test "multi-byte UTF-8 names round trip" {
	mkdir -p "$MNT/app/ns"
	name='héllo wörld ✓ 日本'
	echo -n v >"$MNT/app/ns/$name"
	[ "$(ls "$MNT/app/ns")" = "$name" ]
	[ "$(cat "$MNT/app/ns/$name")" = v ]
}

@test "tags at the root is the tag directory, not a database: mkdir gets EEXIST" {
	expect_fail "File exists" mkdir "$MNT/tags"
	[ -d "$MNT/tags" ]
	[ -z "$(ls "$MNT/tags")" ]
}

@test "names starting with a dot at the root are reserved: EPERM" {
	expect_fail "Operation not permitted" mkdir "$MNT/.x"
	expect_fail "Operation not permitted" touch "$MNT/.x"
	expect_fail "Operation not permitted" mkdir "$MNT/.hidden"
	[ -z "$(ls_keys -A "$MNT")" ]
}

@test "renaming a database to a reserved name is refused with EPERM" {
	mkdir "$MNT/app"
	expect_errno EPERM rename "$MNT/app" "$MNT/tags"
	expect_errno EPERM rename "$MNT/app" "$MNT/.app"
	[ -d "$MNT/app" ]
}

@test "tags and dot names are ordinary names below the root" {
	mkdir -p "$MNT/app/tags/tags"
	mkdir "$MNT/app/.ns"
	echo -n v >"$MNT/app/tags/.profile"
	echo -n w >"$MNT/app/tags/tags/.x"
	[ "$(cat "$MNT/app/tags/.profile")" = v ]
	[ "$(cat "$MNT/app/tags/tags/.x")" = w ]
	[ -d "$MNT/app/.ns" ]
}
