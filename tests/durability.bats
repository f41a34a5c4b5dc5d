#!/usr/bin/env bats
# fsync'd data survives kill -9 of the daemon.  Mounted with a long
# flush_interval so that only fsync (not the background flusher) can have
# made the data durable before the kill.

load helpers

setup() {
	nadb_setup
	mount_store flush_interval=60
	mkdir -p "$MNT/app/ns"
	NS=$MNT/app/ns
	# make the tree itself durable
	"$PY" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$MNT/app/ns"
}

@test "data written with dd conv=fsync survives kill -9 of the daemon" {
	head -c 3000000 /dev/urandom >"$T/ref"
	dd if="$T/ref" of="$NS/k" bs=64k conv=fsync status=none
	crash_daemon
	mount_store
	cmp "$T/ref" "$NS/k"
}

@test "data fsync'd by a process that still holds the file open survives kill -9" {
	head -c 500000 /dev/urandom >"$T/ref"
	"$PY" - "$T/ref" "$NS/k" "$T/synced" 3>&- <<'EOF' &
import os, sys, time
data = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data[:200000]); os.write(fd, data[200000:])
os.fsync(fd)
open(sys.argv[3], "w").close()
time.sleep(30)  # still open when the daemon is killed
EOF
	BG_PIDS+=($!)
	wait_for_file "$T/synced"
	crash_daemon
	kill "${BG_PIDS[-1]}" 2>/dev/null || true
	mount_store
	cmp "$T/ref" "$NS/k"
}

@test "a reader's close while a writer is half way commits nothing: kill -9 then leaves the old value" {
	head -c 300000 /dev/urandom >"$T/old"
	cp "$T/old" "$NS/k"
	sync_path() { "$PY" -c 'import os,sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))' "$1"; }
	sync_path "$NS/k"
	"$PY" - "$NS/k" "$T/half" 3>&- <<'EOF' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.write(fd, os.urandom(100000))  # a third of a new value, then nothing
open(sys.argv[2], "w").close()
time.sleep(30)  # still writing when the daemon is killed
EOF
	BG_PIDS+=($!)
	wait_for_file "$T/half"
	# a reader opens and closes the key; then another key's fsync makes
	# everything committed so far durable
	cat "$NS/k" >/dev/null
	echo -n other >"$NS/other"
	sync_path "$NS/other"
	crash_daemon
	kill "${BG_PIDS[-1]}" 2>/dev/null || true
	mount_store
	cmp "$T/old" "$NS/k"
	[ "$(cat "$NS/other")" = other ]
}

@test "an fsync'd key in new directories survives kill -9 with its directories" {
	mkdir -p "$NS/a/b/c"
	echo -n deep >"$NS/a/b/c/k"
	"$PY" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$NS/a/b/c/k"
	crash_daemon
	mount_store
	[ "$(cat "$NS/a/b/c/k")" = deep ]
}

@test "an fsync'd rename survives kill -9" {
	echo -n old >"$NS/k"
	echo -n new >"$NS/.k.tmp"
	mv "$NS/.k.tmp" "$NS/k"
	"$PY" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$NS/k"
	"$PY" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$NS"
	crash_daemon
	mount_store
	[ "$(cat "$NS/k")" = new ]
	[ ! -e "$NS/.k.tmp" ]
}

@test "a key rewritten without fsync after kill -9 holds the old or the new value, never a mix" {
	head -c 1000000 /dev/urandom >"$T/old"
	head -c 1000000 /dev/urandom >"$T/new"
	dd if="$T/old" of="$NS/k" bs=64k conv=fsync status=none
	dd if="$T/new" of="$NS/k" bs=64k conv=notrunc status=none
	crash_daemon
	mount_store
	cmp -s "$T/old" "$NS/k" || cmp "$T/new" "$NS/k"
}

@test "after kill -9 the store mounts again, takes writes and fsck is clean" {
	echo -n a >"$NS/a"
	dd if=/dev/zero of="$NS/z" bs=64k count=20 conv=fsync status=none
	crash_daemon
	mount_store
	echo -n b >"$NS/b"
	[ "$(cat "$NS/b")" = b ]
	cmp "$NS/z" <(head -c 1310720 /dev/zero)
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "fsck is clean right after kill -9, before any remount" {
	head -c 2000000 /dev/urandom >"$T/ref"
	dd if="$T/ref" of="$NS/k" bs=64k conv=fsync status=none
	head -c 2000000 /dev/urandom >"$NS/unsynced"
	crash_daemon
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "8 writers fsyncing at once share commits, and every fsync'd key survives kill -9" {
	"$PY" - "$NS" "$MNT/.stats" >"$T/out" <<'EOF2'
import json, os, sys, threading
ns, stats = sys.argv[1], sys.argv[2]
def syncs():
    with open(stats) as f:
        return json.load(f)["syncs"]
before = syncs()
def writer(w):
    for i in range(40):
        fd = os.open(f"{ns}/w{w}_{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, f"{w}:{i}:".encode() * 300)
        os.fsync(fd)
        os.close(fd)
threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
for t in threads: t.start()
for t in threads: t.join()
after = syncs()
asked, run = after["asked"] - before["asked"], after["run"] - before["run"]
print(asked, run)
EOF2
	read -r asked run <"$T/out"
	echo "# 320 fsyncs: $asked syncs asked, $run run"
	[ "$asked" -ge 320 ]
	[ "$run" -ge 1 ]
	[ "$run" -le "$asked" ]
	# On Redis a commit holds the metadata lock over its round trip, so
	# the next fsync's commit comes after it and few share one (300 to
	# 318 run of 320 here, once all 320): sharing is checked on a
	# directory store, whose disk flushes run outside that lock.
	[ -n "$REDIS_PORT" ] || [ "$run" -lt "$asked" ]
	crash_daemon
	mount_store
	"$PY" - "$NS" <<'EOF2'
import sys
for w in range(8):
    for i in range(40):
        with open(f"{sys.argv[1]}/w{w}_{i}", "rb") as f:
            assert f.read() == f"{w}:{i}:".encode() * 300, (w, i)
EOF2
}
