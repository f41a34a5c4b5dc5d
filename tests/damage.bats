#!/usr/bin/env bats
# damage.bats -- damaged files never crash the tools (issue 10).
#
# Bytes flipped in meta/data.mdb (LMDB checksums nothing) must not kill
# nadb fsck or nadbfs, nor hang them: fsck reports the damage and exits 1,
# nadbfs refuses to mount with a message and exit 1 (or mounts a store
# whose damage is only in record contents, and serves it without dying);
# fsck --repair saves what can be read.  A damaged pack frame gives EIO
# and a log line naming the key, and fsck names the key too.

load helpers

setup() {
	nadb_setup
	dir_store_only
}

# A store of 300 keys of 10..3000 random bytes in /app/ns (deterministic),
# their values kept in $T/src for comparison.
make_store() {
	"$PY" - "$T/src" "$T/a.tar" <<'EOF'
import io, os, random, sys, tarfile
src, tar = sys.argv[1], sys.argv[2]
r = random.Random(1)
os.makedirs(src)
with tarfile.open(tar, 'w') as t:
    for i in range(300):
        data = r.randbytes(r.randint(10, 3000))
        open(os.path.join(src, 'k%03d' % i), 'wb').write(data)
        ti = tarfile.TarInfo('k%03d' % i)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
EOF
	"$NADB" load "$STORE" /app/ns <"$T/a.tar" >/dev/null
}

# flip FILE SEED N: xor N random bytes of FILE with random non-zero values.
flip() {
	"$PY" - "$@" <<'EOF'
import random, sys
path, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
b = bytearray(open(path, 'rb').read())
for _ in range(n):
    i = r.randrange(len(b))
    b[i] ^= r.randrange(1, 256)
open(path, 'wb').write(b)
EOF
}

# garble FILE PAGE SEED: replace 4 KiB page PAGE of FILE with random bytes.
garble() {
	"$PY" - "$@" <<'EOF'
import random, sys
path, page, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = bytearray(open(path, 'rb').read())
b[page * 4096:(page + 1) * 4096] = random.Random(seed).randbytes(4096)
open(path, 'wb').write(b)
EOF
}

# Leaf pages of the store STORE's metadata file to garble, as PAGE:LOST
# words, LOST the keys whose records the page holds: N_INODE leaves of
# inode records (of keys only: a directory's loss moves its keys to
# lost+found; a compact record's mode is its first varint) and N_OTHER leaves
# with longer keys (entries, links, chunks, which the others give back:
# LOST 0), spread over the file.  LMDB's page header has the flags at
# byte 10 (0x02: a leaf) and the end of the node offsets at 12; a node is
# the data's size (32 bits, as two halves), flags, the key's size, the key,
# the data.  Free pages (mdb_stat -fff) are left out: they keep their old
# contents.
leaf_pages() {
	local store=$1 n_inode=$2 n_other=$3
	mdb_stat -fff "$store/meta" | "$PY" - "$store/meta/data.mdb" "$n_inode" "$n_other" <<'EOF'
import re, struct, sys
path, n_inode, n_other = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
free = set()
for first, count in re.findall(r'^ +(\d+)(?:\[(\d+)\])?$', sys.stdin.read(), re.M):
    free.update(range(int(first), int(first) + int(count or 1)))
b = open(path, 'rb').read()
inode, other = [], []
for p in range(2, len(b) // 4096):
    at = p * 4096
    flags, lower = struct.unpack_from('<HH', b, at + 10)
    if flags != 0x02 or p in free:
        continue
    keys, modes = [], []
    for i in range((lower - 16) // 2):
        node = at + struct.unpack_from('<H', b, at + 16 + 2 * i)[0]
        ksize = struct.unpack_from('<H', b, node + 6)[0]
        keys.append(b[node + 8:node + 8 + ksize])
        val = b[node + 8 + ksize:node + 8 + ksize + 8]
        mode = 0
        if val[0] == 0xc2 and val[2] & 1:  # compact record with a mode
            for j, byte in enumerate(val[4:]):
                mode |= (byte & 0x7f) << (7 * j)
                if byte < 0x80:
                    break
        modes.append(mode)
    if keys and all(len(k) == 8 for k in keys) and all(modes):
        if all(m & 0o170000 == 0o100000 for m in modes):  # keys' records only
            inode.append('%d:%d' % (p, len(keys)))
    elif keys and all(len(k) > 8 for k in keys):
        other.append('%d:0' % p)
pick = lambda l, n: [l[i * len(l) // n] for i in range(min(n, len(l)))]
print(' '.join(pick(inode, n_inode) + pick(other, n_other)))
EOF
}

# A run ended by a signal (>128) or by timeout (124) is a failure.
no_signal() {
	local what=$1 st=$2
	if [ "$st" -ge 124 ]; then
		echo "$what: exit $st (signal or hang)"
		return 1
	fi
}

# How many keys of /app/ns read back byte for byte as stored.  A
# sanitizer build reads every 10th key (each nadb get is a slow start
# there) and scales the count.
good_keys() {
	local store=$1 n=0 i=0 k step=1
	[ -z "${NADB_SANITIZED:-}" ] || step=10
	for k in $("$NADB" keys "$store" '/app/ns/*' 2>/dev/null); do
		i=$((i + 1))
		[ $(((i - 1) % step)) -eq 0 ] || continue
		if "$NADB" get "$store" "$k" 2>/dev/null | cmp -s - "$T/src/${k##*/}"; then
			n=$((n + step))
		fi
	done
	echo "$n"
}

# Seeds of byte flips: 24 (13 s each), or 6 in a sanitizer build, whose
# point is memory errors and which runs each seed several times slower.
flip_seeds() { [ -z "${NADB_SANITIZED:-}" ] && echo 24 || echo 6; }

@test "fsck, fsck --repair and nadbfs survive seeded byte flips in meta/data.mdb" {
	make_store
	local seed s total=0 passed=0 refused=0 mounted=0 seeds
	seeds=$(flip_seeds)
	for seed in $(seq 1 "$seeds"); do
		s=$T/s$seed
		cp -a "$STORE" "$s"
		flip "$s/meta/data.mdb" "$seed" 16
		run timeout 30 "$NADB" fsck "$s"
		no_signal "seed $seed: nadb fsck" "$status"
		[ "$status" -le 1 ]
		[ -n "$output" ]
		if [ "$status" -eq 1 ]; then
			echo "$output" | grep -q '^problem: '
		fi
		# nadbfs: mounts and serves every read without dying, or refuses.
		run timeout 30 "$NADBFS" "$s" "$MNT"
		no_signal "seed $seed: nadbfs" "$status"
		if [ "$status" -eq 0 ]; then
			mounted=$((mounted + 1))
			timeout 60 find "$MNT/app" -type f -exec cat {} + >/dev/null 2>&1 || true
			if ! mountpoint -q "$MNT" || [ -z "$(daemon_pids "$s")" ]; then
				echo "seed $seed: the daemon died while reading"
				return 1
			fi
			ls "$MNT/app/ns" >/dev/null
			unmount_store_at "$s" "$MNT"
		else
			refused=$((refused + 1))
			[ "$status" -eq 1 ]
			[[ "$output" == *"damaged"* ]]
			not mountpoint -q "$MNT"
		fi
		run timeout 120 "$NADB" fsck --repair "$s"
		no_signal "seed $seed: nadb fsck --repair" "$status"
		[ "$status" -le 1 ]
		run timeout 30 "$NADB" fsck "$s"
		no_signal "seed $seed: nadb fsck after repair" "$status"
		[ "$status" -eq 0 ] && passed=$((passed + 1))
		total=$((total + $(good_keys "$s")))
		rm -rf "$s"
	done
	echo "# nadbfs mounted $mounted, refused $refused; clean after repair: $passed of $seeds;" \
		"keys intact: $total of $((seeds * 300))" >&3
	[ "$refused" -gt 0 ]
	# Flipped bytes inside records lose those records; most keys stay.
	# With raw inode records: 38 of 40 clean and 11965 keys.  Compact ones
	# (store format 2) fill fewer pages, so 16 flips hit more records, and
	# a flip that garbles one is refused where a raw record took it
	# silently (a wrong time, a wrong mode): 34 of 40, 11349 keys; the
	# first 24 seeds, 21 clean and 6573 keys (274 a seed).
	[ "$total" -ge $((seeds * 265)) ]
	[ "$passed" -ge $((seeds * 3 / 4)) ]
}

@test "a garbled page: fsck says the metadata file is damaged and exits 1, --json too" {
	make_store
	garble "$STORE/meta/data.mdb" 20 1
	run timeout 30 "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 1 ]
	echo "$output" | grep -q "^problem: metadata file $STORE/meta/data.mdb is damaged ("
	echo "$output" | grep -qF "nadb fsck --repair $STORE"
	st=0
	out=$(timeout 30 "$NADB" fsck --json "$STORE" 2>/dev/null) || st=$?
	[ "$st" -eq 1 ]
	"$PY" -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["problems"] >= 1 and "is damaged" in d["lines"][0] and d["repaired"] == 0, d
' "$out"
}

@test "nadbfs refuses a damaged metadata file: exit 1, a message, nothing mounted" {
	make_store
	garble "$STORE/meta/data.mdb" 0 1
	garble "$STORE/meta/data.mdb" 1 2
	run timeout 30 "$NADBFS" "$STORE" "$MNT"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"metadata file is damaged; not mounting"* ]]
	[[ "$output" == *"nadb fsck --repair"* ]]
	not mountpoint -q "$MNT"
	[ -z "$(daemon_pids "$STORE")" ]
}

@test "fsck --repair on a garbled page keeps every key of the other pages, and fsck then passes" {
	make_store
	local page seed used
	# leaves of records (a branch page's loss takes its table's pages
	# below it along: not this test's case); a sanitizer build: half the
	# pages, one seed
	local pages seeds="1 2" lost
	pages=$(leaf_pages "$STORE" 2 2)
	[ -z "${NADB_SANITIZED:-}" ] || { pages=$(leaf_pages "$STORE" 1 1); seeds=1; }
	echo "leaf pages garbled (page:keys on it): $pages"
	[ "$(wc -w <<<"$pages")" -eq "$([ -z "${NADB_SANITIZED:-}" ] && echo 4 || echo 2)" ]
	for page in $pages; do
		lost=${page#*:} page=${page%:*}
		for seed in $seeds; do
			rm -rf "$T/s"
			cp -a "$STORE" "$T/s"
			garble "$T/s/meta/data.mdb" "$page" "$seed"
			run timeout 120 "$NADB" fsck --repair "$T/s"
			echo "page $page seed $seed: $output" | grep salvage: | head -3
			no_signal "fsck --repair" "$status"
			[ "$status" -le 1 ]
			echo "$output" | grep -q "salvage: .* records saved into a new metadata file"
			ls "$T/s/meta/" | grep -q '^data.mdb.damaged-'
			run timeout 30 "$NADB" fsck "$T/s"
			echo "$output" | tail -3
			[ "$status" -eq 0 ]
			# every key but those whose inode records were on the page
			n=$(good_keys "$T/s")
			echo "page $page seed $seed: $n keys intact, $lost on the page"
			[ "$n" -ge $((300 - lost)) ]
		done
	done
}

@test "a damaged tail page: fsck --repair gives back every key" {
	make_store
	size=$(stat -c %s "$STORE/meta/data.mdb")
	garble "$STORE/meta/data.mdb" $((size / 4096 - 1)) 7
	run timeout 30 "$NADB" fsck "$STORE"
	[ "$status" -eq 1 ]
	run timeout 120 "$NADB" fsck --repair "$STORE"
	echo "$output"
	[ "$status" -le 1 ]
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
	[ "$(good_keys "$STORE")" -ge 290 ]
}

# ---- pack damage -----------------------------------------------------------

# Damage the frame of /app/ns/k150's chunk in the middle of its bytes.
damage_k150() {
	local pack=$STORE/packs/00000001.pack off
	off=$("$PY" - "$pack" "$T/src/k150" <<'EOF'
import sys
pack, val = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read()
print(pack.index(val) + len(val) // 2)
EOF
)
	printf 'XXXXXXXX' | dd of="$pack" bs=1 seek="$off" conv=notrunc status=none
}

@test "fsck names the key of a damaged pack frame" {
	make_store
	damage_k150
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 1 ]
	echo "$output" | grep -q '^problem: chunk at 00000001.pack:[0-9]* is damaged (bytes do not match their hash) (key /app/ns/k150)$'
	st=0
	out=$("$NADB" fsck --json "$STORE" 2>/dev/null) || st=$?
	[ "$st" -eq 1 ]
	"$PY" -c '
import json, sys
d = json.loads(sys.argv[1])
assert any(l.endswith("(key /app/ns/k150)") for l in d["lines"]), d
' "$out"
}

@test "reading a damaged pack frame: EIO, and the daemon's log line names the key" {
	make_store
	damage_k150
	mount_store
	run cat "$MNT/app/ns/k150"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Input/output error"* ]]
	cmp "$MNT/app/ns/k151" "$T/src/k151"
	unmount_store
	grep -q "key /app/ns/k150 (inode [0-9]*): chunk in 00000001.pack at [0-9]*: bytes do not match their hash" "$STORE/nadbfs.log"
}
