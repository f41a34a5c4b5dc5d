#!/usr/bin/env bats
# Everyday operations through real tools.

load helpers

setup() {
	nadb_setup
	mount_store
	mkdir -p "$MNT/app/ns"
	NS=$MNT/app/ns
}

@test "ls -l shows each key with its size" {
	echo -n 12345 >"$NS/five"
	head -c 200000 /dev/zero >"$NS/big"
	run ls -l "$NS"
	[ "$status" -eq 0 ]
	[[ "$output" == *" 5 "*five* ]]
	[[ "$output" == *" 200000 "*big* ]]
}

@test "cat reads back a binary value bit-exactly" {
	head -c 777777 /dev/urandom >"$T/src"
	cat "$T/src" >"$NS/bin"
	cat "$NS/bin" >"$T/back"
	cmp "$T/src" "$T/back"
}

@test "cp -a copies a tree keeping modes, times and xattrs" {
	mkdir -p "$T/tree/sub"
	head -c 300000 /dev/urandom >"$T/tree/sub/data"
	echo -n hi >"$T/tree/hi"
	chmod 640 "$T/tree/hi"
	touch -d '2001-02-03 04:05:06.123456789' "$T/tree/hi"
	ln -s hi "$T/tree/link"
	setfattr -n user.color -v blue "$T/tree/hi"
	run cp -a "$T/tree" "$NS/"
	echo "cp -a in: $status $output"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	cmp "$T/tree/sub/data" "$NS/tree/sub/data"
	[ "$(stat -c %a "$NS/tree/hi")" = 640 ]
	[ "$(stat -c %y "$NS/tree/hi")" = "$(stat -c %y "$T/tree/hi")" ]
	[ "$(readlink "$NS/tree/link")" = hi ]
	[ "$(getfattr --only-values -n user.color "$NS/tree/hi")" = blue ]
	# and back out
	run cp -a "$NS/tree" "$T/tree2"
	echo "cp -a out: $status $output"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	diff -r "$T/tree" "$T/tree2"
	[ "$(stat -c %y "$T/tree2/hi")" = "$(stat -c %y "$T/tree/hi")" ]
}

@test "mv moves a key within a namespace, across namespaces and across databases" {
	mkdir -p "$MNT/app/ns2" "$MNT/other/ns"
	echo -n v >"$NS/a"
	mv "$NS/a" "$NS/b"
	mv "$NS/b" "$MNT/app/ns2/c"
	mv "$MNT/app/ns2/c" "$MNT/other/ns/d"
	[ "$(cat "$MNT/other/ns/d")" = v ]
	[ -z "$(ls_keys -A "$NS")" ]
	[ -z "$(ls_keys -A "$MNT/app/ns2")" ]
}

@test "mv over an existing key replaces it" {
	echo -n new >"$NS/a"
	echo -n old >"$NS/b"
	ino=$(stat -c %i "$NS/a")
	mv "$NS/a" "$NS/b"
	[ "$(cat "$NS/b")" = new ]
	[ "$(stat -c %i "$NS/b")" = "$ino" ]
	[ ! -e "$NS/a" ]
}

@test "rm removes a key and rm -r a directory tree" {
	mkdir -p "$NS/d/e"
	echo -n x >"$NS/k"
	echo -n y >"$NS/d/e/f"
	rm "$NS/k"
	[ ! -e "$NS/k" ]
	rm -r "$NS/d"
	[ -z "$(ls_keys -A "$NS")" ]
	expect_fail "No such file or directory" cat "$NS/k"
}

@test "touch creates an empty key" {
	touch "$NS/empty"
	[ -f "$NS/empty" ]
	[ "$(stat -c %s "$NS/empty")" = 0 ]
	[ -z "$(cat "$NS/empty")" ]
}

@test "touch -d sets mtime and atime with nanoseconds" {
	echo -n x >"$NS/k"
	touch -d '2001-02-03 04:05:06.123456789 UTC' "$NS/k"
	[ "$(stat -c %Y "$NS/k")" = "$(date -d '2001-02-03 04:05:06 UTC' +%s)" ]
	[ "$(stat -c %X "$NS/k")" = "$(date -d '2001-02-03 04:05:06 UTC' +%s)" ]
	[[ "$(stat -c %y "$NS/k")" == *"04:05:06.123456789"* ]]
	[ "$(cat "$NS/k")" = x ]
}

@test "dd with seek and conv=notrunc patches bytes in the middle of a key" {
	head -c 1000000 /dev/urandom >"$T/ref"
	cp "$T/ref" "$NS/k"
	printf 'PATCH' >"$T/p"
	# patch in place, including across a 128 KiB chunk boundary
	for off in 0 5000 131070 262140 999995; do
		dd if="$T/p" of="$T/ref" bs=1 seek=$off conv=notrunc status=none
		dd if="$T/p" of="$NS/k" bs=1 seek=$off conv=notrunc status=none
	done
	[ "$(stat -c %s "$NS/k")" = 1000000 ]
	cmp "$T/ref" "$NS/k"
	unmount_store
	mount_store
	cmp "$T/ref" "$NS/k"
}

@test "dd with seek past the end leaves a hole of zeros" {
	echo -n abc >"$NS/k"
	printf 'END' | dd of="$NS/k" bs=1 seek=300000 conv=notrunc status=none
	[ "$(stat -c %s "$NS/k")" = 300003 ]
	{ printf abc; head -c 299997 /dev/zero; printf END; } >"$T/ref"
	cmp "$T/ref" "$NS/k"
}

@test "dd with large blocks at offsets writes and reads whole chunks" {
	head -c 4194304 /dev/urandom >"$T/blk"
	dd if="$T/blk" of="$NS/k" bs=1M seek=3 status=none
	[ "$(stat -c %s "$NS/k")" = $((7 * 1048576)) ]
	cmp <(dd if="$NS/k" bs=1M skip=3 status=none) "$T/blk"
	cmp <(dd if="$NS/k" bs=1M count=3 status=none) <(head -c 3145728 /dev/zero)
}

@test "stat reports type, size, mode and link count" {
	echo -n hello >"$NS/k"
	chmod 640 "$NS/k"
	[ "$(stat -c '%F %s %a %h' "$NS/k")" = "regular file 5 640 1" ]
	[ "$(stat -c %F "$NS")" = directory ]
	[ "$(stat -c %F "$MNT/app")" = directory ]
	[ "$(stat -c %F "$MNT")" = directory ]
	[ "$(stat -c %i "$NS/k")" != "$(stat -c %i "$NS")" ]
}

@test "find walks databases, namespaces and inner directories" {
	mkdir -p "$MNT/app/ns/a/b" "$MNT/db2/ns"
	touch "$NS/k1" "$NS/a/k2" "$NS/a/b/k3" "$MNT/db2/ns/k4"
	# /tags mirrors the keys and .stats files are the daemon's: left out
	run find "$MNT" -path "$MNT/tags" -prune -o -type f ! -name .stats ! -name .ctl ! -name .metrics -print
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | sort)" = "$(printf '%s\n' "$NS/a/b/k3" "$NS/a/k2" "$NS/k1" "$MNT/db2/ns/k4" | sort)" ]
	[ "$(find "$MNT" -path "$MNT/tags" -prune -o -type d -print | wc -l)" = 7 ]
	[ "$(find "$MNT" -name k3)" = "$NS/a/b/k3" ]
}

@test "tar --xattrs round trips a tree into another namespace" {
	mkdir -p "$NS/t/sub" "$MNT/app/ns2"
	head -c 400000 /dev/urandom >"$NS/t/sub/blob"
	echo -n text >"$NS/t/text"
	chmod 600 "$NS/t/text"
	ln -s text "$NS/t/link"
	setfattr -n user.k -v v1 "$NS/t/text"
	setfattr -n user.dir -v d "$NS/t/sub"
	run tar --xattrs -cf "$T/a.tar" -C "$NS" t
	echo "tar -c: $status $output"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	# tar reports failures to restore an xattr on stderr but still exits 0
	run tar --xattrs -xf "$T/a.tar" -C "$MNT/app/ns2"
	echo "tar -x: $status $output"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	diff -r "$NS/t" "$MNT/app/ns2/t"
	[ "$(stat -c %a "$MNT/app/ns2/t/text")" = 600 ]
	[ "$(readlink "$MNT/app/ns2/t/link")" = text ]
	[ "$(getfattr --only-values -n user.k "$MNT/app/ns2/t/text")" = v1 ]
	[ "$(getfattr --only-values -n user.dir "$MNT/app/ns2/t/sub")" = d ]
	[ "$(stat -c %Y "$MNT/app/ns2/t/text")" = "$(stat -c %Y "$NS/t/text")" ]
}

@test "tar can write its archive into the store and extract from it" {
	mkdir -p "$T/src/d"
	head -c 250000 /dev/urandom >"$T/src/d/f"
	tar -cf "$NS/archive.tar" -C "$T" src
	mkdir "$T/out"
	tar -xf "$NS/archive.tar" -C "$T/out"
	diff -r "$T/src" "$T/out/src"
}

@test "rsync -aX copies a tree in and out with xattrs" {
	command -v rsync >/dev/null || skip "rsync is not installed"
	mkdir -p "$T/src/sub"
	head -c 500000 /dev/urandom >"$T/src/sub/blob"
	echo -n a >"$T/src/a"
	chmod 604 "$T/src/a"
	ln -s a "$T/src/link"
	setfattr -n user.x -v 42 "$T/src/a"
	rsync -aX "$T/src/" "$NS/dst/"
	rsync -aX "$NS/dst/" "$T/back/"
	diff -r "$T/src" "$T/back"
	[ "$(getfattr --only-values -n user.x "$NS/dst/a")" = 42 ]
	[ "$(getfattr --only-values -n user.x "$T/back/a")" = 42 ]
	[ "$(stat -c '%a %Y' "$T/back/a")" = "$(stat -c '%a %Y' "$T/src/a")" ]
}

@test "rsync -aX a second time sends no data" {
	command -v rsync >/dev/null || skip "rsync is not installed"
	mkdir -p "$T/src/sub"
	head -c 100000 /dev/urandom >"$T/src/sub/blob"
	echo -n a >"$T/src/a"
	setfattr -n user.x -v 42 "$T/src/a"
	rsync -aX "$T/src/" "$NS/dst/"
	run rsync -aXi "$T/src/" "$NS/dst/"
	echo "$output"
	[ "$status" -eq 0 ]
	# no data is sent; the only difference rsync sees is the copy's
	# user.nadb.* (which the source lacks), and removing them is a no-op
	[ "$(echo "$output" | grep -c '^>')" = 0 ]
	[ "$(echo "$output" | grep -vc '^\.f\.\.\.\.\.\.\.\.x ')" = 0 ]
}

@test "the editors' pattern (write a temp file, rename it over) replaces a key" {
	echo -n "version 1" >"$NS/doc.txt"
	echo -n "version 2" >"$NS/.doc.txt.swp"
	mv "$NS/.doc.txt.swp" "$NS/doc.txt"
	[ "$(cat "$NS/doc.txt")" = "version 2" ]
	[ "$(ls_keys -A "$NS")" = doc.txt ]
}

@test "a reader never sees a missing or mixed key while it is replaced by rename" {
	# Two threads replace the key 3000 times by rename (each from its own
	# temp name) while a third keeps opening and reading it: every open
	# must succeed and see one whole value.
	"$PY" - "$NS" <<'EOF'
import errno, os, sys, threading
ns = sys.argv[1]
target = os.path.join(ns, "hot")
vals = [bytes([65 + i]) * (5000 + i) for i in range(4)]
with open(target, "wb") as f: f.write(vals[0])
stop = False
errors = []
reads = [0]
def reader():
    while not stop:
        try:
            with open(target, "rb") as f: d = f.read()
        except OSError as e:
            errors.append("open/read: %s" % errno.errorcode.get(e.errno, e.errno)); continue
        if d not in vals: errors.append("torn value of %d bytes" % len(d))
        reads[0] += 1
def renamer(w):
    try:
        for i in range(1500):
            tmp = os.path.join(ns, ".hot.tmp%d" % w)
            with open(tmp, "wb") as f: f.write(vals[i % 4])
            os.rename(tmp, target)
    except OSError as e:
        errors.append("renamer: %s" % e)
r = threading.Thread(target=reader); r.start()
ws = [threading.Thread(target=renamer, args=(w,)) for w in range(2)]
for t in ws: t.start()
for t in ws: t.join()
stop = True
r.join()
print("%d reads, %d errors: %s" % (reads[0], len(errors), sorted(set(errors))))
sys.exit(1 if errors else 0)
EOF
}

@test "a reader sees a writer's bytes before the writer closes the key" {
	# README: every handle of a key shares one write buffer.
	"$PY" - "$NS/k" <<'EOF'
import os, sys
p = sys.argv[1]
w = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(w, b"first part;")
with open(p, "rb") as r:
    got = r.read()
assert got == b"first part;", got
os.write(w, b"second part")
r = os.open(p, os.O_RDONLY)
got = os.pread(r, 100, 0)
assert got == b"first part;second part", got
os.close(r); os.close(w)
EOF
	[ "$(cat "$NS/k")" = "first part;second part" ]
}

@test "writing through a handle whose key was replaced by rename does not touch the new key" {
	echo -n old >"$NS/k"
	exec 5>>"$NS/k"
	echo -n new >"$NS/n"
	mv "$NS/n" "$NS/k"
	echo -n "late write" >&5
	exec 5>&-
	[ "$(cat "$NS/k")" = new ]
	unmount_store
	mount_store
	[ "$(cat "$NS/k")" = new ]
}

@test "writing through a handle whose key was removed does not bring the key back" {
	echo -n old >"$NS/k"
	exec 5>>"$NS/k"
	rm "$NS/k"
	echo -n "late write" >&5
	exec 5>&-
	[ ! -e "$NS/k" ]
	unmount_store
	mount_store
	[ ! -e "$NS/k" ]
	[ -z "$(ls_keys -A "$NS")" ]
}

@test "truncate -s grows a key with zeros" {
	echo -n abc >"$NS/k"
	truncate -s 1M "$NS/k"
	[ "$(stat -c %s "$NS/k")" = 1048576 ]
	cmp "$NS/k" <(printf abc; head -c $((1048576 - 3)) /dev/zero)
}

@test "truncate -s shrinks a key" {
	head -c 1000000 /dev/urandom >"$T/ref"
	cp "$T/ref" "$NS/k"
	truncate -s 1000 "$NS/k"
	[ "$(stat -c %s "$NS/k")" = 1000 ]
	cmp "$NS/k" <(head -c 1000 "$T/ref")
	truncate -s 0 "$NS/k"
	[ "$(stat -c %s "$NS/k")" = 0 ]
}

@test "shrinking then growing a key gives zeros, not the old bytes" {
	head -c 300000 /dev/urandom >"$T/ref"
	cp "$T/ref" "$NS/k"
	truncate -s 1000 "$NS/k"
	truncate -s 300000 "$NS/k"
	cmp "$NS/k" <(head -c 1000 "$T/ref"; head -c 299000 /dev/zero)
}

@test "ftruncate on an open file, then writing on, gives the expected bytes" {
	"$PY" - "$NS/k" <<'EOF'
import os, sys
p = sys.argv[1]
fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"x" * 200000)
os.ftruncate(fd, 100)
os.pwrite(fd, b"tail", 150)
os.close(fd)
want = b"x" * 100 + b"\0" * 50 + b"tail"
got = open(p, "rb").read()
assert got == want, (len(got), got[:160])
EOF
	unmount_store
	mount_store
	cmp "$NS/k" <(head -c 100 /dev/zero | tr '\0' x; head -c 50 /dev/zero; printf tail)
}

@test "O_APPEND (>>) appends to a key" {
	echo a >"$NS/log"
	echo b >>"$NS/log"
	echo c >>"$NS/log"
	[ "$(cat "$NS/log")" = "$(printf 'a\nb\nc')" ]
}

@test "two concurrent appenders never overwrite each other's lines" {
	: >"$NS/log"
	for w in 1 2; do
		"$PY" -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
for i in range(500):
    os.write(fd, ("writer %s line %04d %s\n" % (sys.argv[2], i, "." * 50)).encode())
os.close(fd)' "$NS/log" $w &
	done
	wait
	[ "$(wc -l <"$NS/log")" = 1000 ]
	[ "$(grep -c '^writer 1 line [0-9]\{4\} \.\{50\}$' "$NS/log")" = 500 ]
	[ "$(grep -c '^writer 2 line [0-9]\{4\} \.\{50\}$' "$NS/log")" = 500 ]
}

@test "O_EXCL on an existing key fails with File exists" {
	echo -n old >"$NS/k"
	run bash -c "set -C; echo new > '$NS/k'"
	[ "$status" -ne 0 ]
	run "$PY" -c 'import os,sys; os.open(sys.argv[1], os.O_CREAT|os.O_EXCL|os.O_WRONLY)' "$NS/k"
	[ "$status" -ne 0 ]
	[[ "$output" == *"File exists"* ]]
	[ "$(cat "$NS/k")" = old ]
	# and O_EXCL on a new name works
	bash -c "set -C; echo -n new > '$NS/k2'"
	[ "$(cat "$NS/k2")" = new ]
}

@test "a hard link shares content and has link count 2" {
	echo -n one >"$NS/a"
	ln "$NS/a" "$NS/b"
	[ "$(stat -c %h "$NS/a")" = 2 ]
	[ "$(stat -c %h "$NS/b")" = 2 ]
	[ "$(stat -c %i "$NS/a")" = "$(stat -c %i "$NS/b")" ]
	echo -n two >>"$NS/b"
	[ "$(cat "$NS/a")" = onetwo ]
	chmod 600 "$NS/a"
	[ "$(stat -c %a "$NS/b")" = 600 ]
}

@test "removing one hard link keeps the other" {
	echo -n one >"$NS/a"
	mkdir "$NS/d"
	ln "$NS/a" "$NS/d/b"
	rm "$NS/a"
	[ "$(cat "$NS/d/b")" = one ]
	[ "$(stat -c %h "$NS/d/b")" = 1 ]
}

@test "replacing one hard link by rename leaves the other with link count 1" {
	echo -n shared >"$NS/a"
	ln "$NS/a" "$NS/b"
	echo -n other >"$NS/c"
	mv "$NS/c" "$NS/b"
	[ "$(stat -c %h "$NS/a")" = 1 ]
	[ "$(cat "$NS/a")" = shared ]
	[ "$(cat "$NS/b")" = other ]
	unmount_store
	mount_store
	[ "$(stat -c %h "$NS/a")" = 1 ]
	[ "$(cat "$NS/a")" = shared ]
}

@test "a symlink is created, read and followed" {
	echo -n dark >"$NS/theme"
	ln -s theme "$NS/link"
	ln -s "$NS/theme" "$NS/abs"
	[ "$(readlink "$NS/link")" = theme ]
	[ "$(readlink "$NS/abs")" = "$NS/theme" ]
	[ "$(cat "$NS/link")" = dark ]
	[ "$(cat "$NS/abs")" = dark ]
	[ "$(stat -c %F "$NS/link")" = "symbolic link" ]
	echo -n light >"$NS/link"
	[ "$(cat "$NS/theme")" = light ]
}

@test "a symlink with a 1000-byte target round trips" {
	target=$(printf 'x/%.0s' $(seq 500))
	ln -s "$target" "$NS/long"
	[ "$(readlink "$NS/long")" = "$target" ]
	[ "$(stat -c %s "$NS/long")" = 1000 ]
}

@test "mkfifo makes a working FIFO" {
	mkfifo "$NS/pipe"
	[ -p "$NS/pipe" ]
	[ "$(stat -c %F "$NS/pipe")" = fifo ]
	(echo through-the-pipe >"$NS/pipe") 3>&- &
	BG_PIDS+=($!)
	run timeout 10 cat "$NS/pipe"
	[ "$output" = through-the-pipe ]
}

@test "mknod b and c store device nodes with their numbers and owner" {
	mknod -m 640 "$NS/null" c 1 3
	mknod "$NS/loop" b 7 0
	[ -c "$NS/null" ]
	[ -b "$NS/loop" ]
	[ "$(stat -c '%F %t,%T %a %U' "$NS/null")" = "character special file 1,3 640 root" ]
	[ "$(stat -c '%F %t,%T' "$NS/loop")" = "block special file 7,0" ]
	# tar and rsync copy a tree that holds them, in and out of the mount
	mkdir "$T/out"
	tar -C "$NS" -cf - . | tar -C "$T/out" -xf -
	[ "$(stat -c '%F %t,%T' "$T/out/null")" = "character special file 1,3" ]
	mkdir "$NS/copy"
	rsync -a "$T/out/" "$NS/copy/"
	[ "$(stat -c '%F %t,%T' "$NS/copy/loop")" = "block special file 7,0" ]
	rm "$NS/null" "$NS/copy/loop"
	[ ! -e "$NS/null" ]
}

@test "a unix socket can be bound and connected to" {
	"$PY" - "$NS/sock" <<'EOF'
import socket, sys
p = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(p); s.listen(1)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.settimeout(5); c.connect(p)
a, _ = s.accept(); c.sendall(b"ping"); assert a.recv(4) == b"ping"
EOF
	[ -S "$NS/sock" ]
	[ "$(stat -c %F "$NS/sock")" = socket ]
	rm "$NS/sock"
}

@test "df and stat -f report the filesystem" {
	run df -P "$MNT"
	[ "$status" -eq 0 ]
	[[ "$output" == *"$MNT"* ]]
	read -r bsize blocks bavail files <<<"$(stat -f -c '%S %b %a %c' "$MNT")"
	[ "$bsize" -gt 0 ]
	[ "$blocks" -gt 0 ]
	[ "$bavail" -le "$blocks" ]
	[ "$files" -gt 0 ]
}

@test "user xattrs are set, listed and read with getfattr -d" {
	echo -n v >"$NS/k"
	setfattr -n user.color -v blue "$NS/k"
	setfattr -n user.size -v 42 "$NS/k"
	run getfattr -d "$NS/k"
	[ "$status" -eq 0 ]
	[[ "$output" == *'user.color="blue"'* ]]
	[[ "$output" == *'user.size="42"'* ]]
	[ "$(getfattr --only-values -n user.color "$NS/k")" = blue ]
	setfattr -n user.color -v red "$NS/k"
	[ "$(getfattr --only-values -n user.color "$NS/k")" = red ]
}

@test "setfattr -x removes a user xattr" {
	echo -n v >"$NS/k"
	setfattr -n user.color -v blue "$NS/k"
	setfattr -x user.color "$NS/k"
	expect_fail "No such attribute" getfattr -n user.color "$NS/k"
	run getfattr -d "$NS/k"
	[[ "$output" != *user.color* ]]
}

@test "reading or removing a missing xattr fails with ENODATA" {
	echo -n v >"$NS/k"
	expect_fail "No such attribute" getfattr -n user.nope "$NS/k"
	expect_fail "No such attribute" setfattr -x user.nope "$NS/k"
	expect_errno ENODATA getxattr "$NS/k" user.nope
}

@test "xattrs work on directories, hold binary values and 4000-byte values" {
	setfattr -n user.d -v dirval "$NS"
	[ "$(getfattr --only-values -n user.d "$NS")" = dirval ]
	echo -n v >"$NS/k"
	setfattr -n user.bin -v 0x00ff00ff0a "$NS/k"
	[ "$(getfattr -e hex -n user.bin "$NS/k" | grep ^user.bin)" = "user.bin=0x00ff00ff0a" ]
	big=$(printf 'z%.0s' $(seq 4000))
	setfattr -n user.big -v "$big" "$NS/k"
	[ "$(getfattr --only-values -n user.big "$NS/k")" = "$big" ]
	setfattr -n user.empty -v "" "$NS/k"
	run getfattr -n user.empty "$NS/k"
	[ "$status" -eq 0 ]
}

@test "a key with 200 xattrs lists and keeps them all" {
	echo -n v >"$NS/k"
	"$PY" -c '
import os, sys
for i in range(200):
    os.setxattr(sys.argv[1], "user.attribute-number-%d" % i, b"value %d" % i)' "$NS/k"
	[ "$(getfattr -d "$NS/k" | grep -c '^user.attribute-number-')" = 200 ]
	unmount_store
	mount_store
	[ "$(getfattr -d "$NS/k" | grep -c '^user.attribute-number-')" = 200 ]
	[ "$(getfattr --only-values -n user.attribute-number-199 "$NS/k")" = "value 199" ]
}

@test "XATTR_CREATE on an existing xattr gives EEXIST, XATTR_REPLACE on a missing one ENODATA" {
	echo -n v >"$NS/k"
	expect_errno OK setxattr_create "$NS/k" user.a 1
	expect_errno EEXIST setxattr_create "$NS/k" user.a 2
	expect_errno ENODATA setxattr_replace "$NS/k" user.b 1
	expect_errno OK setxattr_replace "$NS/k" user.a 3
	[ "$(getfattr --only-values -n user.a "$NS/k")" = 3 ]
}

@test "trusted and security xattrs are refused with EOPNOTSUPP" {
	echo -n v >"$NS/k"
	expect_errno EOPNOTSUPP setxattr "$NS/k" trusted.x 1
	expect_errno EOPNOTSUPP setxattr "$NS/k" security.x 1
	# user xattrs still work afterwards
	setfattr -n user.ok -v 1 "$NS/k"
	[ "$(getfattr --only-values -n user.ok "$NS/k")" = 1 ]
}

@test "rename with RENAME_NOREPLACE fails with EEXIST on an existing target" {
	echo -n a >"$NS/a"
	echo -n b >"$NS/b"
	expect_errno EEXIST rename_noreplace "$NS/a" "$NS/b"
	[ "$(cat "$NS/a")" = a ]
	[ "$(cat "$NS/b")" = b ]
	expect_errno OK rename_noreplace "$NS/a" "$NS/c"
	[ "$(cat "$NS/c")" = a ]
	[ ! -e "$NS/a" ]
}

@test "rename with RENAME_EXCHANGE swaps two keys" {
	echo -n a >"$NS/a"
	echo -n bb >"$NS/b"
	if mv --help | grep -q -- --exchange; then
		mv --exchange "$NS/a" "$NS/b"
	else
		expect_errno OK rename_exchange "$NS/a" "$NS/b"
	fi
	[ "$(cat "$NS/a")" = bb ]
	[ "$(cat "$NS/b")" = a ]
	unmount_store
	mount_store
	[ "$(cat "$MNT/app/ns/a")" = bb ]
	[ "$(cat "$MNT/app/ns/b")" = a ]
}

@test "rename with RENAME_EXCHANGE swaps a directory and a key" {
	mkdir "$NS/d"
	echo -n inside >"$NS/d/f"
	echo -n k >"$NS/k"
	expect_errno OK rename_exchange "$NS/d" "$NS/k"
	[ "$(cat "$NS/d")" = k ]
	[ "$(cat "$NS/k/f")" = inside ]
	expect_errno ENOENT rename_exchange "$NS/k" "$NS/missing"
}

@test "rmdir removes an empty inner directory" {
	mkdir -p "$NS/a/b"
	rmdir "$NS/a/b"
	rmdir "$NS/a"
	[ -z "$(ls_keys -A "$NS")" ]
}

@test "mmap writes are visible to read() and survive a remount" {
	head -c 300000 /dev/urandom >"$T/ref"
	cp "$T/ref" "$NS/k"
	"$PY" - "$NS/k" "$T/ref" <<'EOF'
import mmap, os, sys
p, ref = sys.argv[1], sys.argv[2]
with open(p, "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    assert m[:] == open(ref, "rb").read(), "mmap read differs"
    for off in (0, 4095, 131070, 299990):
        m[off:off + 10] = b"MMAPWRITE!"
    m.flush(); m.close()
with open(ref, "r+b") as f:
    for off in (0, 4095, 131070, 299990):
        f.seek(off); f.write(b"MMAPWRITE!")
assert open(p, "rb").read() == open(ref, "rb").read(), "read after munmap differs"
EOF
	unmount_store
	mount_store
	cmp "$T/ref" "$NS/k"
}

@test "O_DIRECT writes and reads with dd work" {
	head -c 1048576 /dev/urandom >"$T/ref"
	dd if="$T/ref" of="$NS/k" bs=4096 oflag=direct status=none
	[ "$(stat -c %s "$NS/k")" = 1048576 ]
	cmp "$T/ref" <(dd if="$NS/k" bs=4096 iflag=direct status=none)
	unmount_store
	mount_store
	cmp "$T/ref" <(dd if="$NS/k" bs=4096 iflag=direct status=none)
}

# READ requests the daemon has answered, its own .stats reads included.
reads_answered() {
	"$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["ops"]["read"]["count"])' \
		"$MNT/.stats"
}

# The kernel keeps the pages a write filled whole (not a partial last page).
@test "a value just written is read back from the kernel's cache, not the daemon" {
	# 1 MiB: read from the daemon it would take 8 READs or more
	head -c 1048576 /dev/urandom >"$T/ref"
	cp "$T/ref" "$NS/k"
	a=$(reads_answered)
	b=$(reads_answered) # the cost of reading .stats itself (2 or 3 READs)
	cmp "$T/ref" "$NS/k"
	[ "$(stat -c %s "$NS/k")" = 1048576 ]
	c=$(reads_answered)
	echo "reads: .stats $((b - a)), .stats and the value $((c - b))"
	[ $(((c - b) - (b - a))) -le 1 ]
}

@test "a cached key reads back its new bytes after O_TRUNC, truncate or an O_DIRECT write" {
	head -c 8192 /dev/zero | tr '\0' A >"$NS/k"
	cat "$NS/k" >/dev/null # cached
	"$PY" - "$NS/k" <<'EOF2'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.pwrite(fd, b"x" * 100, 0)
os.pwrite(fd, b"y" * 100, 200)
os.close(fd)
EOF2
	cmp "$NS/k" <(head -c 100 /dev/zero | tr '\0' x; head -c 100 /dev/zero
		head -c 100 /dev/zero | tr '\0' y)
	truncate -s 150 "$NS/k"
	printf z | dd of="$NS/k" bs=1 seek=300 conv=notrunc status=none
	cmp "$NS/k" <(head -c 100 /dev/zero | tr '\0' x; head -c 200 /dev/zero
		printf z)
	head -c 8192 /dev/urandom >"$T/ref"
	head -c 8192 /dev/zero >"$NS/d"
	cat "$NS/d" >/dev/null # cached
	dd if="$T/ref" of="$NS/d" bs=4096 oflag=direct conv=notrunc status=none
	cmp "$T/ref" "$NS/d"
}

@test "fallocate -l 1M makes a 1 MiB key of zeros" {
	fallocate -l 1M "$NS/k"
	[ "$(stat -c %s "$NS/k")" = 1048576 ]
	cmp "$NS/k" <(head -c 1048576 /dev/zero)
}

@test "fallocate keeps existing content and never shrinks" {
	echo -n hello >"$NS/k"
	fallocate -l 200000 "$NS/k"
	[ "$(stat -c %s "$NS/k")" = 200000 ]
	cmp "$NS/k" <(printf hello; head -c 199995 /dev/zero)
	fallocate -l 10 "$NS/k"
	[ "$(stat -c %s "$NS/k")" = 200000 ]
}

@test "flock -n fails while another process holds the lock" {
	echo -n v >"$NS/k"
	flock -n -o "$NS/k" -c "touch '$T/held'; exec sleep 60" 3>&- &
	holder=$!
	BG_PIDS+=($holder)
	wait_for_file "$T/held"
	run flock -n "$NS/k" true
	[ "$status" -eq 1 ]
	pkill -P "$holder" sleep
	wait "$holder" || true
	run flock -n "$NS/k" true
	[ "$status" -eq 0 ]
}

# Requests of kind OP the daemon has answered, its own .stats reads included.
answered() {
	"$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["ops"][sys.argv[2]]["count"])' \
		"$MNT/.stats" "$1"
}

# The kernel leaves the set-id bits to the daemon (FUSE_HANDLE_KILLPRIV_V2,
# fs/wire.c), so it stops asking for security.capability before each write.
@test "writes in one open ask the daemon nothing but the writes" {
	head -c 1048576 /dev/urandom >"$NS/k"
	stat "$NS/k" >/dev/null
	x0=$(answered getxattr) w0=$(answered write)
	"$PY" - "$NS/k" <<'EOF2'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for i in range(200):
    os.pwrite(fd, os.urandom(4096), (i * 37 % 256) * 4096)
os.close(fd)
EOF2
	x1=$(answered getxattr) w1=$(answered write)
	echo "getxattr $((x1 - x0)), write $((w1 - w0))"
	# (a request is counted after its reply: the last may come late)
	[ $((w1 - w0)) -ge 199 ]
	# the first write after the stat asks once; .stats reads ask none
	[ $((x1 - x0)) -le 1 ]
}

# A mount by root without allow_other lets in only root's processes, whom
# the modes do not stop from reading or writing: the kernel is not asked to
# check them (kernel_checks_modes in fs/nadbfs.c), so it no longer asks
# for the directory's attributes before each create and unlink (it marks
# them stale after each one).
@test "creates and unlinks by root ask nothing of their directory" {
	findmnt -rn -o OPTIONS "$MNT" | not grep -q default_permissions
	"$PY" -c 'import os, sys
for i in range(20): open(f"{sys.argv[1]}/w{i}", "w").write("v")' "$NS"
	g0=$(answered getattr)
	g1=$(answered getattr) # what reading .stats costs itself
	"$PY" - "$NS" <<'EOF2'
import os, sys
for i in range(100):
    with open(f"{sys.argv[1]}/n{i}", "w") as f:
        f.write("v")
for i in range(100):
    os.unlink(f"{sys.argv[1]}/n{i}")
EOF2
	g2=$(answered getattr)
	echo "getattr: reading .stats $((g1 - g0)), 100 creates and 100 unlinks $((g2 - g1))"
	[ $(((g2 - g1) - (g1 - g0))) -le 5 ]
	[ -z "$(ls "$NS" | grep '^n')" ]
}

@test "allow_root lets other users in, so the kernel checks modes there" {
	unmount_store
	mount_store allow_root
	findmnt -rn -o OPTIONS "$MNT" | grep -qE '(^|,)default_permissions(,|$)'
}

@test "with -o default_permissions the kernel checks modes, and asks for them" {
	unmount_store
	mount_store default_permissions
	mkdir -p "$NS"
	findmnt -rn -o OPTIONS "$MNT" | grep -qE '(^|,)default_permissions(,|$)'
	g0=$(answered getattr)
	g1=$(answered getattr)
	"$PY" -c 'import os, sys
for i in range(50): open(f"{sys.argv[1]}/n{i}", "w").write("v")
for i in range(50): os.unlink(f"{sys.argv[1]}/n{i}")' "$NS"
	g2=$(answered getattr)
	echo "getattr: reading .stats $((g1 - g0)), 50 creates and 50 unlinks $((g2 - g1))"
	[ $(((g2 - g1) - (g1 - g0))) -ge 50 ]
}

# Without default_permissions the kernel asks the daemon for access(2) and
# chdir, and still checks exec itself: root gets what it gets anywhere.
@test "root's access(2), cd and exec follow the modes as on any file system" {
	printf '#!/bin/sh\necho ran\n' >"$NS/s"
	chmod 644 "$NS/s"
	expect_errno EACCES access "$NS/s" x
	run "$NS/s"
	[ "$status" -eq 126 ]
	[[ "$output" == *"Permission denied"* ]]
	chmod 744 "$NS/s"
	expect_errno OK access "$NS/s" x
	[ "$("$NS/s")" = ran ]
	chmod 000 "$NS/s"
	expect_errno OK access "$NS/s" rw
	expect_errno EACCES access "$NS/s" x
	expect_errno ENOENT access "$NS/none" f
	chmod 000 "$NS"
	expect_errno OK access "$NS" rwx
	(cd "$NS" && [ -e s ])
	chmod 755 "$NS"
	expect_errno OK access "$MNT/.stats" r
	expect_errno OK access "$MNT/tags" x
	# a user's process is kept out of root's mount altogether
	run as_user 1000 1000 ls "$MNT"
	[ "$status" -ne 0 ]
}
