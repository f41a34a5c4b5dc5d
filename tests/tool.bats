#!/usr/bin/env bats
# The nadb tool on an unmounted store.

load helpers

setup() {
	nadb_setup
	mount_store
	mkdir -p "$MNT/app/users" "$MNT/app/media/2024"
	echo -n dark >"$MNT/app/users/theme:123"
	echo -n en >"$MNT/app/users/lang:123"
	echo -n x >"$MNT/app/users/Zed"
	head -c 700000 /dev/urandom >"$T/blob"
	cp "$T/blob" "$MNT/app/media/2024/cat.jpg"
	unmount_store
}

@test "nadb ls lists the names in a namespace, one per line" {
	run "$NADB" ls "$STORE" /app/users
	echo "nadb ls /app/users -> $status: $output"
	[ "$status" -eq 0 ]
	[ "$output" = "$(printf '%s\n' 'Zed' 'lang:123' 'theme:123')" ]
}

@test "nadb ls lists databases, namespaces and inner directories (directories end in /)" {
	# README: "names, one per line (directories end in /)"
	run "$NADB" ls "$STORE" /
	echo "nadb ls / -> $status: $output"
	[ "$status" -eq 0 ]
	[ "$output" = app/ ]
	run "$NADB" ls "$STORE" /app
	[ "$output" = "$(printf '%s\n' media/ users/)" ]
	run "$NADB" ls "$STORE" /app/media
	[ "$output" = 2024/ ]
}

@test "nadb get writes the value to stdout, bit-exactly" {
	run "$NADB" get "$STORE" /app/users/theme:123
	[ "$status" -eq 0 ]
	[ "$output" = dark ]
	"$NADB" get "$STORE" /app/media/2024/cat.jpg >"$T/out"
	cmp "$T/blob" "$T/out"
}

@test "nadb put stores stdin as the value" {
	echo v | "$NADB" put "$STORE" /app/users/k
	cmp <("$NADB" get "$STORE" /app/users/k) <(echo v)
	mount_store
	[ "$(cat "$MNT/app/users/k")" = v ]
	[ "$(stat -c %s "$MNT/app/users/k")" = 2 ]
}

@test "nadb put replaces an existing value and stores large binary values" {
	echo -n light | "$NADB" put "$STORE" /app/users/theme:123
	head -c 3000000 /dev/urandom >"$T/big"
	"$NADB" put "$STORE" /app/users/big <"$T/big"
	[ "$("$NADB" get "$STORE" /app/users/theme:123)" = light ]
	mount_store
	[ "$(cat "$MNT/app/users/theme:123")" = light ]
	cmp "$T/big" "$MNT/app/users/big"
}

@test "nadb put whose input fails part way stores nothing: the key keeps its value, and the error is the input's" {
	echo -n kept | "$NADB" put "$STORE" /app/users/k
	run "$NADB" put "$STORE" /app/users/k </tmp
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Is a directory"* ]]
	[ "$("$NADB" get "$STORE" /app/users/k)" = kept ]
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
}

@test "output that cannot be written (a full disk) is a failure, said, not exit 0" {
	echo -n v | "$NADB" put "$STORE" /app/users/k
	for cmd in "getx $STORE /app/users/k user.nadb.size" "ls $STORE /app/users" "get $STORE /app/users/k"; do
		run sh -c "'$NADB' $cmd >/dev/full"
		echo "$cmd: $output"
		[ "$status" -eq 1 ]
		[[ "$output" == *"No space left on device"* ]]
	done
}

@test "nadb put makes missing databases, namespaces and directories" {
	# README: "value from stdin; makes missing directories"
	echo -n deep | "$NADB" put "$STORE" /newdb/newns/a/b/k
	[ "$("$NADB" get "$STORE" /newdb/newns/a/b/k)" = deep ]
	mount_store
	[ -d "$MNT/newdb/newns/a/b" ]
	[ "$(cat "$MNT/newdb/newns/a/b/k")" = deep ]
}

@test "nadb rm removes an empty directory and refuses a non-empty one" {
	# README: "delete a key or an empty directory"
	"$NADB" rm "$STORE" /app/media/2024/cat.jpg
	"$NADB" rm "$STORE" /app/media/2024
	run "$NADB" ls "$STORE" /app/media
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	run "$NADB" rm "$STORE" /app/users
	[ "$status" -ne 0 ]
	run "$NADB" ls "$STORE" /app/users
	[ "$(echo "$output" | wc -l)" = 3 ]
}

@test "nadb rm removes a key" {
	"$NADB" rm "$STORE" /app/users/theme:123
	run "$NADB" ls "$STORE" /app/users
	[ "$output" = "$(printf '%s\n' 'Zed' 'lang:123')" ]
	run "$NADB" get "$STORE" /app/users/theme:123
	[ "$status" -ne 0 ]
	mount_store
	[ ! -e "$MNT/app/users/theme:123" ]
}

@test "nadb get of a missing key fails with a message" {
	run "$NADB" get "$STORE" /app/users/missing
	[ "$status" -ne 0 ]
	[ -n "$output" ]
	run "$NADB" get "$STORE" /nodb/ns/k
	[ "$status" -ne 0 ]
	run "$NADB" rm "$STORE" /app/users/missing
	[ "$status" -ne 0 ]
	run "$NADB" ls "$STORE" /app/nons
	[ "$status" -ne 0 ]
}

@test "nadb put refuses names the filesystem refuses" {
	run bash -c "echo v | '$NADB' put '$STORE' /app/k"
	[ "$status" -ne 0 ]
	run bash -c "echo v | '$NADB' put '$STORE' /app/users/$'bad\x01'"
	[ "$status" -ne 0 ]
	run "$NADB" ls "$STORE" /app
	echo "nadb ls /app -> $status: $output"
	[ "$output" = "$(printf '%s\n' media/ users/)" ]
}

@test "nadb fsck exits 0 on a clean store" {
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "nadb fsck exits 1 when a pack's data is corrupted" {
	dir_store_only
	# the largest pack segment holds the 700 kB random blob
	pack=$(find "$STORE/packs" -type f -name '*.pack' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
	[ -n "$pack" ]
	size=$(stat -c %s "$pack")
	[ "$size" -gt 600000 ]
	head -c 4096 /dev/urandom | dd of="$pack" bs=1 seek=$((size / 2)) conv=notrunc status=none
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 1 ]
}

@test "each nadb command refuses a mounted store with a clear message" {
	mount_store
	local cmds=("rm $STORE /app/users/theme:123" "fsck $STORE")
	# on Redis, ls and get read it as a follower (follow.bats)
	[ "${NADB_TEST_BACKEND:-dir}" = redis ] ||
		cmds+=("ls $STORE /app/users" "get $STORE /app/users/theme:123")
	for cmd in "${cmds[@]}"; do
		# shellcheck disable=SC2086
		run "$NADB" $cmd
		echo "nadb $cmd -> $status: $output"
		[ "$status" -ne 0 ]
		echo "$output" | grep -qiE 'in use|mounted|locked|busy'
	done
	run bash -c "echo new | '$NADB' put '$STORE' /app/users/theme:123"
	[ "$status" -ne 0 ]
	echo "$output" | grep -qiE 'in use|mounted|locked|busy'
	[ "$(cat "$MNT/app/users/theme:123")" = dark ]
}
