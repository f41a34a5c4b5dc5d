#!/usr/bin/env bats
# Parallel writers.

load helpers

# writer W: 1000 keys w<W>-k<K> in NS with distinct contents of varying size.
WRITER='
import os, sys
ns, w = sys.argv[1], int(sys.argv[2])
for k in range(1000):
    body = (b"writer %d key %d\n" % (w, k)) * (1 + (k * 37 + w) % 400)
    with open(os.path.join(ns, "w%d-k%04d" % (w, k)), "wb") as f:
        f.write(body)
'

VERIFY='
import os, sys
ns = sys.argv[1]
bad = []
for w in range(1, 9):
    for k in range(1000):
        p = os.path.join(ns, "w%d-k%04d" % (w, k))
        want = (b"writer %d key %d\n" % (w, k)) * (1 + (k * 37 + w) % 400)
        try:
            got = open(p, "rb").read()
        except OSError as e:
            bad.append("%s: %s" % (p, e)); continue
        if got != want:
            bad.append("%s: %d bytes, want %d" % (p, len(got), len(want)))
names = [n for n in os.listdir(ns) if n != ".stats"]
if len(names) != 8000:
    bad.append("%d names in the directory, want 8000" % len(names))
print("%d bad" % len(bad)); print("\n".join(bad[:20]))
sys.exit(1 if bad else 0)
'

@test "8 parallel writers of 1000 keys each: all 8000 keys read back" {
	mount_store
	mkdir -p "$MNT/app/ns"
	pids=()
	for w in 1 2 3 4 5 6 7 8; do
		"$PY" -c "$WRITER" "$MNT/app/ns" "$w" 3>&- &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p"; done
	run "$PY" -c "$VERIFY" "$MNT/app/ns"
	echo "$output"
	[ "$status" -eq 0 ]
	remount_store
	run "$PY" -c "$VERIFY" "$MNT/app/ns"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "parallel readers and writers of one key always see a complete value" {
	mount_store
	mkdir -p "$MNT/app/ns"
	"$PY" - "$MNT/app/ns" <<'EOF'
import os, sys, threading
ns = sys.argv[1]
vals = [bytes([97 + i]) * (300000 + i) for i in range(6)]
for i in range(4):
    with open(os.path.join(ns, "k%d" % i), "wb") as f: f.write(vals[0])
errors = []
stop = False
def writer(i):
  try:
    for n in range(60):
        tmp = os.path.join(ns, ".k%d.%d" % (i, n))
        with open(tmp, "wb") as f: f.write(vals[n % 6])
        os.rename(tmp, os.path.join(ns, "k%d" % i))
  except OSError as e:
    errors.append("writer %d: %s" % (i, e))
def reader(i):
    while not stop:
        try:
            d = open(os.path.join(ns, "k%d" % i), "rb").read()
        except OSError as e:
            errors.append("k%d: %s" % (i, e)); return
        if d not in vals: errors.append("k%d: %d bytes torn" % (i, len(d))); return
ws = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
rs = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
for t in ws + rs: t.start()
for t in ws: t.join()
stop = True
for t in rs: t.join()
if errors: print(errors); sys.exit(1)
EOF
}

@test "two processes writing different ranges of one open key both land" {
	mount_store
	mkdir -p "$MNT/app/ns"
	head -c 1048576 /dev/zero >"$MNT/app/ns/k"
	for w in 0 1; do
		"$PY" -c '
import os, sys
w = int(sys.argv[2])
fd = os.open(sys.argv[1], os.O_WRONLY)
for i in range(64):
    os.pwrite(fd, bytes([65 + w]) * 8192, (2 * i + w) * 8192)
os.close(fd)' "$MNT/app/ns/k" "$w" 3>&- &
	done
	wait
	want=$("$PY" -c 'import sys; sys.stdout.write(("A" * 8192 + "B" * 8192) * 64)' | md5sum)
	[ "$(md5sum <"$MNT/app/ns/k")" = "$want" ]
	remount_store
	[ "$(md5sum <"$MNT/app/ns/k")" = "$want" ]
}
