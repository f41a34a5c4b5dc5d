#!/usr/bin/env bats
# Big files: a 2 GiB key through a 32 MiB write buffer.

load helpers

GiB=1073741824

# VmHWM of the daemon, in KiB.
daemon_hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$(daemon_pid)/status"; }
# The memory bound holds for the daemon as built; an ASan build (make
# sanitize sets NADB_SANITIZED) keeps freed memory in quarantine and pays
# shadow memory, so there the bound is checked at 4x.
hwm_limit_kb() {
	local times=1
	[ -z "${NADB_SANITIZED:-}" ] || times=4
	echo $(((32 + 100) * 1024 * times))
}

# The big key: 2 GiB; on Redis, where every chunk is a round trip, 1 GiB;
# in a sanitizer build 512 MiB -- still 16 buffers' worth.
big_size() {
	if [ -n "${NADB_SANITIZED:-}" ]; then
		echo $((GiB / 2))
	elif [ "${NADB_TEST_BACKEND:-dir}" = redis ]; then
		echo $((GiB))
	else
		echo $((2 * GiB))
	fi
}

@test "a big key (2 GiB; less on Redis and under sanitizers) is written and read back bit-exactly with buffer_mb=32" {
	mount_store buffer_mb=32
	mkdir -p "$MNT/app/ns"
	gen_stream big2g "$(big_size)" | tee >(md5sum | cut -d' ' -f1 >"$T/want.tmp" && mv "$T/want.tmp" "$T/want") |
		dd of="$MNT/app/ns/big" bs=1M iflag=fullblock status=none
	[ "$(stat -c %s "$MNT/app/ns/big")" = "$(big_size)" ]
	wait_for_file "$T/want"
	echo "# daemon VmHWM after writing $(($(big_size) / 1048576)) MiB: $(daemon_hwm_kb) KiB" >&3
	[ "$(daemon_hwm_kb)" -lt "$(hwm_limit_kb)" ]
	remount_store buffer_mb=32
	got=$(md5sum <"$MNT/app/ns/big" | cut -d' ' -f1)
	echo "want $(cat "$T/want") got $got"
	[ "$got" = "$(cat "$T/want")" ]
	echo "# daemon VmHWM after reading it: $(daemon_hwm_kb) KiB" >&3
	[ "$(daemon_hwm_kb)" -lt "$(hwm_limit_kb)" ]
}

@test "truncate -s 3G makes a key of zeros without filling the store" {
	dir_store_only
	mount_store
	mkdir -p "$MNT/app/ns"
	unmount_store
	before=$(store_bytes)
	mount_store
	truncate -s 3G "$MNT/app/ns/sparse"
	printf END >>"$MNT/app/ns/sparse"
	unmount_store
	growth=$(($(store_bytes) - before))
	echo "# store grew by $growth bytes" >&3
	[ "$growth" -lt $((16 * 1048576)) ]
	mount_store
	[ "$(stat -c %s "$MNT/app/ns/sparse")" = $((3 * GiB + 3)) ]
	cmp <(dd if="$MNT/app/ns/sparse" bs=1M skip=1500 count=1 status=none) <(head -c 1M /dev/zero)
	[ "$(tail -c 3 "$MNT/app/ns/sparse")" = END ]
}

@test "a value of more than 2^21 chunks is EFBIG: 256 GiB of 128 KiB chunks, 8 GiB of 4 KiB ones" {
	mount_store
	mkdir -p "$MNT/app/ns"
	run truncate -s 257G "$MNT/app/ns/k"
	[[ "$output" == *"File too large"* ]]
	run truncate -s 4T "$MNT/app/ns/k"
	[[ "$output" == *"File too large"* ]]
	[ "$(stat -c %s "$MNT/app/ns/k")" = 0 ]
	unmount_store
	S2=$(other_store small)
	mount_store_at "$S2" "$MNT" chunk_kb=4
	mkdir -p "$MNT/app/ns"
	run truncate -s 9G "$MNT/app/ns/k"
	[[ "$output" == *"File too large"* ]]
	truncate -s 1G "$MNT/app/ns/k"
	[ "$(stat -c %s "$MNT/app/ns/k")" = $((1 * GiB)) ]
	unmount_store_at "$S2" "$MNT"
}

@test "64 keys written at once through open handles keep the daemon under buffer_mb + 100 MiB" {
	mount_store buffer_mb=32
	mkdir -p "$MNT/app/ns"
	# 64 open keys, 4 MiB each, written 1 MiB at a time round-robin: 256 MiB
	# buffered before the first close unless the daemon bounds its buffers.
	"$PY" - "$MNT/app/ns" "$T/sums" <<'EOF'
import hashlib, os, sys
ns = sys.argv[1]
names = ["k%02d" % i for i in range(64)]
fds = [os.open(os.path.join(ns, n), os.O_WRONLY | os.O_CREAT, 0o644) for n in names]
sums = [hashlib.md5() for _ in names]
for part in range(4):
    for fd, h in zip(fds, sums):
        b = os.urandom(1 << 20)
        h.update(b)
        os.write(fd, b)
for fd in fds:
    os.close(fd)
with open(sys.argv[2], "w") as f:
    for n, h in zip(names, sums):
        f.write("%s  %s\n" % (h.hexdigest(), n))
EOF
	echo "# daemon VmHWM after 64 parallel 4 MiB keys: $(daemon_hwm_kb) KiB" >&3
	[ "$(daemon_hwm_kb)" -lt "$(hwm_limit_kb)" ]
	remount_store buffer_mb=32
	(cd "$MNT/app/ns" && md5sum --quiet -c "$T/sums")
}

buffer_bytes() {
	"$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["buffer_bytes"])' "$MNT/.stats"
}

@test "random writes into a stored key keep only the pages they wrote in the write buffer" {
	mount_store
	mkdir -p "$MNT/app/ns"
	head -c $((64 << 20)) /dev/urandom >"$MNT/app/ns/k"
	run "$PY" - "$MNT" <<'EOF2'
import json, os, random, sys
mnt = sys.argv[1]
def buffered():
    return json.load(open(mnt + "/.stats"))["buffer_bytes"]
r = random.Random(7)
fd = os.open(mnt + "/app/ns/k", os.O_WRONLY)
for i in range(1000):
    os.pwrite(fd, os.urandom(4096), r.randrange(16384) * 4096)
print(buffered())  # before the close commits them
os.close(fd)
print(buffered())
EOF2
	echo "$output"
	[ "$status" -eq 0 ]
	# ~1000 pages and their maps, where whole 128 KiB chunks would be ~60 MiB
	[ "${lines[0]}" -gt $((900 * 4096)) ]
	[ "${lines[0]}" -lt $((8 << 20)) ]
	[ "${lines[1]}" -eq 0 ]
}

@test "random writes, reads and truncates in one open read back as a reference file does, spilled or not" {
	for opts in buffer_mb=64 buffer_mb=1; do
		mount_store "$opts"
		mkdir -p "$MNT/app/ns"
		# half incompressible, half compressible: patched and unpatched bases
		{ head -c 3000000 /dev/urandom; head -c 3000000 /dev/zero | tr '\0' a; } >"$T/ref"
		cp "$T/ref" "$MNT/app/ns/k"
		"$PY" "$BATS_TEST_DIRNAME/randwrite.py" "$MNT/app/ns/k" "$T/ref" 6000000 3000 "${#opts}"
		cmp "$MNT/app/ns/k" "$T/ref"
		[ "$(buffer_bytes)" -eq 0 ] # every buffer and page given back
		# whole chunks written in place, and a part of one
		head -c 2500000 /dev/urandom >"$T/new"
		dd if="$T/new" of="$T/ref" bs=1M seek=1 conv=notrunc status=none
		dd if="$T/new" of="$MNT/app/ns/k" bs=1M seek=1 conv=notrunc status=none
		cmp "$MNT/app/ns/k" "$T/ref"
		remount_store "$opts"
		cmp "$MNT/app/ns/k" "$T/ref"
		unmount_store
		"$NADB" fsck "$STORE"
	done
}
