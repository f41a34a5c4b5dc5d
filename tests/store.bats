#!/usr/bin/env bats
# The store directory, its lock and the daemon's command line.

load helpers

@test "the first mount creates the store directory with mode 0700, whatever the umask" {
	[ ! -e "$STORE" ]
	umask 000
	mount_store
	umask 022
	[ -d "$STORE" ]
	[ "$(stat -c %a "$STORE")" = 700 ]
	# nothing inside is readable by others either
	[ -z "$(find "$STORE" -perm /o+r)" ]
}

@test "nadbfs works with relative STORE and MOUNTPOINT paths" {
	(cd "$T" && "$NADBFS" store mnt)
	mountpoint -q "$MNT"
	mkdir -p "$MNT/app/ns"
	echo -n v >"$MNT/app/ns/k"
	[ -d "$STORE/meta" ] || [ -n "$(ls_keys -A "$STORE")" ]
	# the daemon is the nadbfs process holding files of $STORE open
	pid=""
	for p in $(pgrep -x nadbfs); do
		ls -l "/proc/$p/fd" 2>/dev/null | grep -qF -- "$STORE/" && pid=$p
	done
	[ -n "$pid" ]
	fusermount3 -u "$MNT"
	wait_pids_gone 60 "$pid"
	mount_store
	[ "$(cat "$MNT/app/ns/k")" = v ]
}

@test "a second nadbfs on a mounted store fails and says the store is in use" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v >"$MNT/app/ns/k"
	mkdir "$T/mnt2"
	run "$NADBFS" "$STORE" "$T/mnt2"
	[ "$status" -ne 0 ]
	echo "$output" | grep -qiE 'in use|locked|busy'
	! mountpoint -q "$T/mnt2"
	# the first mount is unharmed
	[ "$(cat "$MNT/app/ns/k")" = v ]
	[ "$(daemon_pids "$STORE" | wc -l)" = 1 ]
}

@test "the store can be mounted again once the daemon has exited" {
	mount_store
	mkdir -p "$MNT/app/ns"
	unmount_store
	mount_store
	[ -d "$MNT/app/ns" ]
}

@test "two stores can be mounted side by side" {
	mount_store
	mkdir "$T/mnt2"
	mount_store_at "$T/other" "$T/mnt2"
	mkdir -p "$MNT/a/ns" "$T/mnt2/b/ns"
	echo -n one >"$MNT/a/ns/k"
	echo -n two >"$T/mnt2/b/ns/k"
	[ "$(ls_keys "$MNT")" = a ]
	[ "$(ls_keys "$T/mnt2")" = b ]
	unmount_store_at "$T/other" "$T/mnt2"
	[ "$(cat "$MNT/a/ns/k")" = one ]
}

# The help text of option OPT: from its line up to the next option's line.
help_of() {
	awk -v opt="$1" '
		# an option line starts with "-" or with a word holding "="
		/^[[:space:]]*(-|[^[:space:]]*=)/ { on = ($0 ~ ("(^|[^a-z_])" opt "([^a-z_]|$)")) }
		on { print }' <<<"$2"
}

@test "nadbfs --help lists every option with its default and exits 0" {
	run "$NADBFS" --help
	[ "$status" -eq 0 ]
	echo "$output"
	for od in compress=auto compress_level=1 buffer_mb=64 flush_interval=5 chunk_kb=128; do
		o=${od%%=*} d=${od#*=}
		text=$(help_of "$o" "$output")
		echo "--- $o: $text"
		[ -n "$text" ]
		echo "$text" | tr '\n' ' ' | grep -qiE "default[^)]*[^a-z0-9_.]$d([^a-z0-9_.]|\$)"
	done
	[ ! -e "$STORE" ]
}

@test "nadbfs --version prints a version and exits 0" {
	run "$NADBFS" --version
	[ "$status" -eq 0 ]
	[[ "$output" =~ [0-9]+\.[0-9]+ ]]
}

@test "nadbfs accepts all its options together" {
	mount_store "compress=auto,compress_level=9,buffer_mb=16,flush_interval=1,chunk_kb=64"
	mkdir -p "$MNT/app/ns"
	head -c 1000000 /dev/urandom >"$T/ref"
	cp "$T/ref" "$MNT/app/ns/k"
	remount_store
	cmp "$T/ref" "$MNT/app/ns/k"
}

@test "nadbfs refuses an unknown option without mounting" {
	run "$NADBFS" -o no_such_option=1 "$STORE" "$MNT"
	[ "$status" -ne 0 ]
	! mountpoint -q "$MNT"
}

@test "nadbfs refuses an invalid option value without mounting" {
	run "$NADBFS" -o compress=sometimes "$STORE" "$MNT"
	[ "$status" -ne 0 ]
	! mountpoint -q "$MNT"
	run "$NADBFS" -o buffer_mb=lots "$STORE" "$MNT"
	[ "$status" -ne 0 ]
	! mountpoint -q "$MNT"
}

@test "nadbfs without a mountpoint fails with a usage message" {
	run "$NADBFS" "$STORE"
	[ "$status" -ne 0 ]
	[ -n "$output" ]
}

@test "the store is flushed before the daemon exits after unmount" {
	mount_store
	mkdir -p "$MNT/app/ns"
	head -c 3000000 /dev/urandom >"$T/ref"
	cp "$T/ref" "$MNT/app/ns/k"
	pid=$(daemon_pid)
	unmount_store
	! pid_alive "$pid"
	# the offline tool sees the data without the daemon
	"$NADB" get "$STORE" /app/ns/k >"$T/back"
	cmp "$T/ref" "$T/back"
}
