#!/usr/bin/env bats
# A full disk recovers by deleting (issue 10): the store lives on a 64 MiB
# tmpfs; values are written until ENOSPC, then every key but one is removed,
# and new values must go in again at once -- no remount, nothing else freed.

load helpers

MiB=1048576

setup() {
	nadb_setup
	dir_store_only
	DISK=$T/disk
	mkdir "$DISK"
	mount -t tmpfs -o size=64m tmpfs "$DISK"
	STORE=$DISK/store
}

teardown() {
	stop_store_daemons
	if [ -z "${BATS_TEST_COMPLETED:-}" ] && [ -s "$STORE/nadbfs.log" ]; then
		echo "--- $STORE/nadbfs.log (last 40 lines) ---"
		tail -n 40 "$STORE/nadbfs.log"
	fi
	mountpoint -q "$DISK" && { umount "$DISK" || umount -l "$DISK"; }
	nadb_teardown
}

# Fill the disk with 1 MiB keys fillN until one does not fit.
fill_disk() {
	local i
	for i in $(seq 1 80); do
		head -c 1M /dev/urandom >"$MNT/app/ns/fill$i" 2>/dev/null || break
	done
}

# failing_random_writes KEY SEED: 3000 random 4 KiB page writes into the
# 24 MiB KEY (patched slots), then close; prints the first errno of each.
failing_random_writes() {
	"$PY" - "$1" "$2" <<'EOF2'
import errno, os, random, sys
r = random.Random(int(sys.argv[2]))
fd = os.open(sys.argv[1], os.O_WRONLY)
try:
    for i in range(3000):
        os.pwrite(fd, os.urandom(4096), r.randrange(6144) * 4096)
except OSError as e:
    print("write:", errno.errorcode[e.errno])
try:
    os.close(fd)
    print("close: ok")
except OSError as e:
    print("close:", errno.errorcode[e.errno])
EOF2
}

disk_free_mib() { df -B1M --output=avail "$DISK" | tail -1 | tr -d ' '; }

@test "full tmpfs: ENOSPC keeps values whole; deleting all keys but one lets writes resume without a remount" {
	head -c 80M /dev/urandom >"$T/src"
	mount_store
	mkdir -p "$MNT/app/ns"
	# fill: 1 MiB values until the disk says no
	good=0
	failed=
	for i in $(seq 1 80); do
		if ! dd if="$T/src" of="$MNT/app/ns/k$i" bs=1M skip=$((i - 1)) count=1 status=none 2>"$T/err"; then
			failed=$i
			break
		fi
		good=$i
	done
	cat "$T/err"
	echo "# $good values of 1 MiB went in; k$failed got: $(cat "$T/err")" >&3
	[ -n "$failed" ]
	grep -q "No space left on device" "$T/err"
	[ "$good" -ge 40 ]
	# the failed new key holds no half-made value: absent or empty
	if [ -e "$MNT/app/ns/k$failed" ]; then [ "$(stat -c %s "$MNT/app/ns/k$failed")" = 0 ]; fi
	[ -z "$(cat "$MNT/app/ns/k$failed" 2>/dev/null)" ]
	# an overwrite that cannot be stored leaves the old value (conv=notrunc:
	# plain dd first ftruncates, and the shell's > closes a duplicate of
	# the truncated descriptor: each a change of its own that succeeds)
	run dd if="$T/src" of="$MNT/app/ns/k1" bs=1M skip=70 count=8 conv=notrunc status=none
	echo "$output"
	[ "$status" -ne 0 ]
	[[ "$output" == *"No space left on device"* ]]
	sleep 0.2 # the kernel drops its pages of the failed writes (notifier thread)
	cmp "$MNT/app/ns/k1" <(dd if="$T/src" bs=1M skip=0 count=1 status=none)
	# every value written stays intact
	for i in $(seq 1 "$good"); do
		cmp "$MNT/app/ns/k$i" <(dd if="$T/src" bs=1M skip=$((i - 1)) count=1 status=none)
	done
	before_kib=$(du -s -k "$STORE" | cut -f1)
	free_before=$(disk_free_mib)
	# delete all but k1, then write anew at once
	start=$(date +%s.%N)
	for i in $(seq 2 "$good"); do rm "$MNT/app/ns/k$i"; done
	rm -f "$MNT/app/ns/k$failed"
	dd if="$T/src" of="$MNT/app/ns/new1" bs=1M skip=60 count=1 status=none
	end=$(date +%s.%N)
	# frames are punched once the commit that freed them is durable (the
	# flusher, or the next append that meets ENOSPC): slow under ASan
	for _ in $(seq 100); do
		after_kib=$(du -s -k "$STORE" | cut -f1)
		[ "$after_kib" -lt $((before_kib / 4)) ] && break
		sleep 0.1
	done
	free_after=$(disk_free_mib)
	echo "# free: $free_before MiB full -> $free_after MiB after deleting $((good - 1)) keys and writing one;" \
		"deletes + next write: $(echo "$end - $start" | bc) s; store du $before_kib -> $after_kib KiB" >&3
	[ "$after_kib" -lt $((before_kib / 4)) ]
	[ "$free_after" -ge 40 ]
	# more new values go in, and a compaction on demand works
	for i in $(seq 2 20); do
		dd if="$T/src" of="$MNT/app/ns/new$i" bs=1M skip=$((60 + i % 20)) count=1 status=none
	done
	echo compact >"$MNT/.ctl"
	cmp "$MNT/app/ns/k1" <(dd if="$T/src" bs=1M skip=0 count=1 status=none)
	cmp "$MNT/app/ns/new1" <(dd if="$T/src" bs=1M skip=60 count=1 status=none)
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
	# ENOSPC was said once, not once per failed chunk
	[ "$(grep -c "No space left on device" "$STORE/nadbfs.log")" -le 2 ]
	mount_store
	cmp "$MNT/app/ns/new20" <(dd if="$T/src" bs=1M skip=60 count=1 status=none)
	[ "$(ls "$MNT/app/ns" | wc -l)" = 21 ]
}

@test "full tmpfs: random writes into a stored key that cannot be stored leave its value whole" {
	mount_store buffer_mb=1
	mkdir -p "$MNT/app/ns"
	head -c 24M /dev/urandom >"$T/ref"
	cp "$T/ref" "$MNT/app/ns/big"
	fill_disk
	# random page writes (patched slots, spilled past buffer_mb=1)
	run failing_random_writes "$MNT/app/ns/big" 3
	echo "$output"
	[[ "$output" == *ENOSPC* ]]
	# once the handle is released and the kernel has dropped its pages of
	# the failed writes (both after close returns)
	within 5 cmp -s "$MNT/app/ns/big" "$T/ref"
	# room again: the same writes go in
	rm -f "$MNT/app/ns"/fill*
	"$PY" "$BATS_TEST_DIRNAME/randwrite.py" "$MNT/app/ns/big" "$T/ref" $((24 << 20)) 2000 5
	cmp "$MNT/app/ns/big" "$T/ref"
	remount_store buffer_mb=1
	cmp "$MNT/app/ns/big" "$T/ref"
	unmount_store
	"$NADB" fsck "$STORE"
}

@test "full tmpfs: a reader holding the key while a writer fails keeps reading the stored value, and the next writer goes in" {
	mount_store buffer_mb=1
	mkdir -p "$MNT/app/ns"
	head -c 24M /dev/urandom >"$T/ref"
	cp "$T/ref" "$MNT/app/ns/big"
	"$PY" -c 'import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
open(sys.argv[2], "w").close()
time.sleep(120)' "$MNT/app/ns/big" "$T/held" 3>&- &
	BG_PIDS+=($!)
	wait_for_file "$T/held"
	fill_disk
	run failing_random_writes "$MNT/app/ns/big" 4
	echo "$output"
	[[ "$output" == *ENOSPC* ]]
	# the reader's handle stays: what it and others read is the stored value
	within 5 cmp -s "$MNT/app/ns/big" "$T/ref"
	# room again: a writer's value goes in while the reader still holds it
	rm -f "$MNT/app/ns"/fill*
	"$PY" "$BATS_TEST_DIRNAME/randwrite.py" "$MNT/app/ns/big" "$T/ref" $((24 << 20)) 500 5
	cmp "$MNT/app/ns/big" "$T/ref"
	kill "${BG_PIDS[-1]}"
	remount_store buffer_mb=1
	cmp "$MNT/app/ns/big" "$T/ref"
	unmount_store
	"$NADB" fsck "$STORE"
}

# A deleted key's inode goes when the kernel forgets it, and that deletion
# is queued (file_delete_forgotten): a write that meets ENOSPC must empty
# the queue before it looks for room, not wait for the flusher (an hour
# away here).
@test "full tmpfs: a few keys deleted make room for the next write at once" {
	head -c 80M /dev/urandom >"$T/src"
	mount_store flush_interval=3600
	mkdir -p "$MNT/app/ns"
	good=0
	for i in $(seq 1 80); do
		dd if="$T/src" of="$MNT/app/ns/k$i" bs=1M skip=$((i - 1)) count=1 status=none 2>/dev/null || break
		good=$i
	done
	[ "$good" -ge 40 ]
	rm -f "$MNT/app/ns/k$((good + 1))"
	echo flush >"$MNT/.ctl" # nothing left queued from the failed write
	for i in $(seq 1 10); do rm "$MNT/app/ns/k$i"; done
	run dd if="$T/src" of="$MNT/app/ns/new" bs=1M skip=70 count=2 status=none
	echo "$output"
	[ "$status" -eq 0 ]
	cmp "$MNT/app/ns/new" <(dd if="$T/src" bs=1M skip=70 count=2 status=none)
	cmp "$MNT/app/ns/k$good" <(dd if="$T/src" bs=1M skip=$((good - 1)) count=1 status=none)
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}
