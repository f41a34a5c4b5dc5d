#!/usr/bin/env bats
# Space: deduplication and compression, measured as the growth of the
# store's allocated size (du) across a write, each side of a clean unmount.

load helpers

MiB=1048576

# Mount, make the namespace, unmount: the baseline holds the empty tree.
prepare() {
	mount_store "${1:-}"
	mkdir -p "$MNT/app/ns"
	unmount_store
	BEFORE=$(store_bytes)
}

report_growth() {
	GROWTH=$(($(store_bytes) - BEFORE))
	echo "# store grew by $GROWTH bytes ($((GROWTH / 1024)) KiB)" >&3
	echo "files:"
	find "$STORE" -type f -printf '  %k KiB allocated, %s bytes: %P\n' | sort -k1,1nr | head -20
}

# 8 MiB that compress well but hold no two equal 4 KiB blocks (so that
# deduplication cannot be what saves the space).
make_compressible() {
	"$PY" -c '
import sys
out = sys.stdout.buffer
n = 0
i = 0
while n < 8 * 1048576:
    line = b"%010d the quick brown fox jumps over the lazy dog, record %010d\n" % (i, i * 7)
    out.write(line); n += len(line); i += 1
' | head -c 8M
}

@test "1000 copies of one 1 MiB random file take about 1 MiB in the store" {
	head -c 1M /dev/urandom >"$T/src"
	prepare
	mount_store
	# one process (a fork costs ~20 ms here): 1000 copies written in 1 MiB writes
	"$PY" -c '
import sys
src = open(sys.argv[1], "rb").read()
for i in range(1, 1001):
    with open("%s/copy%d" % (sys.argv[2], i), "wb") as f:
        f.write(src)' "$T/src" "$MNT/app/ns"
	unmount_store
	report_growth
	[ "$GROWTH" -lt $((8 * MiB)) ]
	mount_store
	want=$(md5sum <"$T/src" | cut -d' ' -f1)
	[ "$(ls "$MNT/app/ns" | wc -l)" = 1000 ]
	good=$(cd "$MNT/app/ns" && md5sum copy* | grep -c "^$want ") || true
	[ "$good" = 1000 ]
}

@test "highly compressible data (yes | head -c 8M) takes less than 2 MiB and reads back" {
	prepare
	mount_store
	yes | head -c 8M >"$MNT/app/ns/yes"
	unmount_store
	report_growth
	[ "$GROWTH" -lt $((2 * MiB)) ]
	mount_store
	cmp "$MNT/app/ns/yes" <(yes | head -c 8M)
}

@test "8 MiB of compressible, non-repeating data take less than 2 MiB and read back" {
	make_compressible >"$T/src"
	gzip -1 -c "$T/src" | wc -c
	prepare
	mount_store
	cp "$T/src" "$MNT/app/ns/text"
	unmount_store
	report_growth
	[ "$GROWTH" -lt $((2 * MiB)) ]
	mount_store
	cmp "$T/src" "$MNT/app/ns/text"
}

@test "with compress=off the same 8 MiB take about 8 MiB" {
	make_compressible >"$T/src"
	prepare compress=off
	mount_store compress=off
	cp "$T/src" "$MNT/app/ns/text"
	unmount_store
	report_growth
	[ "$GROWTH" -ge $((7 * MiB)) ]
	[ "$GROWTH" -lt $((11 * MiB)) ]
	mount_store compress=off
	cmp "$T/src" "$MNT/app/ns/text"
}

@test "random (incompressible) data is stored at about its size" {
	head -c 8M /dev/urandom >"$T/src"
	prepare
	mount_store
	cp "$T/src" "$MNT/app/ns/rand"
	unmount_store
	report_growth
	[ "$GROWTH" -ge $((8 * MiB)) ]
	[ "$GROWTH" -lt $((11 * MiB)) ]
}

@test "deleting every copy of a value and remounting keeps the store readable" {
	head -c 2M /dev/urandom >"$T/src"
	prepare
	mount_store
	for i in 1 2 3; do cp "$T/src" "$MNT/app/ns/c$i"; done
	rm "$MNT/app/ns/c1" "$MNT/app/ns/c2"
	remount_store
	cmp "$T/src" "$MNT/app/ns/c3"
	rm "$MNT/app/ns/c3"
	cp "$T/src" "$MNT/app/ns/again"
	remount_store
	cmp "$T/src" "$MNT/app/ns/again"
}

@test "fsync'd small writes leave no zeros past the last frame once unmounted" {
	dir_store_only
	mount_store
	mkdir -p "$MNT/app/ns"
	# small synced appends get zeros laid ahead of the pack's end (README,
	# On disk); a clean unmount trims them
	"$PY" - "$MNT/app/ns" <<'PYEOF'
import os, sys
for i in range(100):
    fd = os.open(os.path.join(sys.argv[1], "k%d" % i), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, os.urandom(4096))
    os.fsync(fd)
    os.close(fd)
PYEOF
	unmount_store
	run "$NADB" stats --json "$STORE"
	[ "$status" -eq 0 ]
	size=$(stat -c %s "$STORE/packs/00000001.pack")
	"$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); n = int(sys.argv[2])
assert d["pack_bytes"] == n and d["garbage_bytes"] == 0 and d["keys"] == 100, (d, n)' "$output" "$size"
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
	mount_store
	[ "$(wc -c <"$MNT/app/ns/k99")" -eq 4096 ]
}
