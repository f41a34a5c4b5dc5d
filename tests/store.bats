#!/usr/bin/env bats
# The store directory, its lock and the daemon's command line.

load helpers

@test "the first mount creates the store directory with mode 0700, whatever the umask" {
	dir_store_only
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
	dir_store_only
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

@test "a second nadbfs on a mounted store fails and says the store is in use (Redis: follows it)" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v >"$MNT/app/ns/k"
	mkdir "$T/mnt2"
	if [ "${NADB_TEST_BACKEND:-dir}" = redis ]; then # follow.bats says more
		"$PY" -c 'import os,sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' \
			"$MNT/app/ns/k" # synced: what a follower reads
		"$NADBFS" -o "log=$T/second.log" "$STORE" "$T/mnt2"
		grep -q "mounted read-only" "$T/second.log"
		[ "$(cat "$T/mnt2/app/ns/k")" = v ]
		[ "$(daemon_pids "$STORE" | wc -l)" = 2 ]
		fusermount3 -u "$T/mnt2"
		[ "$(cat "$MNT/app/ns/k")" = v ]
		return 0
	fi
	run "$NADBFS" "$STORE" "$T/mnt2"
	[ "$status" -ne 0 ]
	echo "$output" | grep -qiE 'in use|locked|busy'
	not mountpoint -q "$T/mnt2"
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
	for od in compress=auto compress_level=1 buffer_mb=64 flush_interval=5 chunk_kb=128 \
		stats=on check=on takeover=on; do
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
	not mountpoint -q "$MNT"
}

@test "nadbfs refuses an invalid option value without mounting" {
	run "$NADBFS" -o compress=sometimes "$STORE" "$MNT"
	[ "$status" -ne 0 ]
	not mountpoint -q "$MNT"
	run "$NADBFS" -o buffer_mb=lots "$STORE" "$MNT"
	[ "$status" -ne 0 ]
	not mountpoint -q "$MNT"
	for v in 17 -1 two; do
		run "$NADBFS" -o "min_replicas=$v" "$STORE" "$MNT"
		echo "$output"
		[ "$status" -ne 0 ]
		[[ "$output" == *min_replicas* ]]
		not mountpoint -q "$MNT"
	done
	for o in stats check takeover; do
		run "$NADBFS" -o "$o=maybe" "$STORE" "$MNT"
		echo "$output"
		[ "$status" -ne 0 ]
		[[ "$output" == *"bad option '$o=maybe': expected on or off"* ]]
		not mountpoint -q "$MNT"
	done
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
	not pid_alive "$pid"
	# the offline tool sees the data without the daemon
	"$NADB" get "$STORE" /app/ns/k >"$T/back"
	cmp "$T/ref" "$T/back"
}

# Keys enough that the daemon's last commit takes a moment (its fdatasync
# of 50 MB outlasts fusermount3 -u, so the next user has to wait for it).
fill_store() {
	mkdir -p "$MNT/app/ns"
	head -c 50000000 /dev/urandom >"$MNT/app/ns/big"
	"$PY" - "$MNT/app/ns" <<'PYEOF'
import os, sys
for i in range(300):
    with open(os.path.join(sys.argv[1], "k%d" % i), "wb") as f:
        f.write(os.urandom(20000))
PYEOF
}

@test "fusermount3 -u then nadb fsck, or umount then nadbfs, use the store at once" {
	for round in 1 2 3; do
		mount_store flush_interval=3600
		fill_store
		fusermount3 -u "$MNT"
		run "$NADB" fsck "$STORE"
		echo "round $round: $output"
		[ "$status" -eq 0 ]
	done
	for round in 1 2 3; do
		mount_store flush_interval=3600
		echo -n "r$round" >"$MNT/app/ns/round"
		umount "$MNT"
		run "$NADBFS" "$STORE" "$MNT"
		echo "round $round: $output"
		[ "$status" -eq 0 ]
		[ "$(cat "$MNT/app/ns/round")" = "r$round" ]
		umount "$MNT"
	done
	wait_pids_gone 30 $(daemon_pids "$STORE")
}

@test "nadb umount returns once the daemon has exited and the store is free" {
	mount_store flush_interval=3600
	fill_store
	pid=$(daemon_pid)
	run "$NADB" umount "$MNT"
	[ "$status" -eq 0 ]
	[ "$output" = "" ]
	not pid_alive "$pid"
	not mountpoint -q "$MNT"
	store_unlocked
	"$NADB" get "$STORE" /app/ns/k299 | wc -c | grep -qx 20000
	# not a mountpoint, or an nadbfs that is busy
	run "$NADB" umount "$T"
	[ "$status" -eq 2 ]
	[[ "$output" == *"not the mountpoint of an nadbfs"* ]]
	mount_store
	exec 9<"$MNT/app/ns/k1"
	run "$NADB" umount "$MNT"
	exec 9<&-
	[ "$status" -eq 1 ]
	[[ "$output" == *"fusermount3 -u failed"* ]]
	mountpoint -q "$MNT"
	"$NADB" umount "$MNT"
}

@test "a store held by a live mount or a tool is refused at once, not waited for" {
	mount_store
	start=$SECONDS
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 2 ]
	[[ "$output" == *"in use"* ]]
	[ $((SECONDS - start)) -lt 5 ]
}

@test "nadbfs refuses to make a store in a directory that holds other files" {
	dir_store_only
	mkdir "$T/docs"
	echo -n mine >"$T/docs/letter.txt"
	run "$NADBFS" "$T/docs" "$MNT"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"not a nadb store, and it holds other files"*"force_create"* ]]
	not mountpoint -q "$MNT"
	[ "$(ls -A "$T/docs")" = letter.txt ]
	# the tool refuses too
	run "$NADB" put "$T/docs" /app/ns/k <<<"v"
	[ "$status" -eq 2 ]
	[ "$(ls -A "$T/docs")" = letter.txt ]
	# an empty directory is fine, and so is a store; -o force_create says so
	mkdir "$T/empty"
	mount_store_at "$T/empty" "$MNT"
	unmount_store_at "$T/empty" "$MNT"
	mount_store_at "$T/empty" "$MNT"
	unmount_store_at "$T/empty" "$MNT"
	mount_store_at "$T/docs" "$MNT" force_create
	unmount_store_at "$T/docs" "$MNT"
	[ "$(cat "$T/docs/letter.txt")" = mine ]
	[ -f "$T/docs/meta/data.mdb" ]
}

@test "nadbfs refuses a regular file, a mountpoint in use and a dead mount as MOUNTPOINT" {
	touch "$T/file"
	run "$NADBFS" "$STORE" "$T/file"
	[ "$status" -eq 1 ]
	[[ "$output" == *"not a directory"* ]]
	[ ! -e "$STORE" ]
	mount_store
	run "$NADBFS" "$T/other" "$MNT"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"already a mountpoint"*"fuse.nadbfs"* ]]
	[ "$(grep -c " $MNT " /proc/mounts)" = 1 ]
	[ ! -e "$T/other" ]
	# a daemon killed without unmounting leaves a dead mount
	p=$(daemon_pid)
	kill -9 "$p"
	wait_pids_gone 10 "$p"
	run "$NADBFS" "$STORE" "$MNT"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"fusermount3 -u"* ]]
	fusermount3 -u "$MNT"
	mount_store
}

@test "a store mounted once and never written passes nadb fsck" {
	mount_store
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *": 0 problems"* ]]
}
