#!/usr/bin/env bats
# Bad inputs, each checked for its exact errno (by a direct syscall).

load helpers

setup() {
	nadb_setup
	mount_store
	mkdir -p "$MNT/app/ns/dir"
	NS=$MNT/app/ns
	echo -n v >"$NS/k"
}

@test "EINVAL: control characters in a name, for every kind of node" {
	expect_errno EINVAL mkdir "$MNT/"$'a\x01'
	expect_errno EINVAL mkdir "$MNT/app/"$'a\x01'
	expect_errno EINVAL mkdir "$NS/"$'a\x01'
	expect_errno EINVAL create "$NS/"$'a\nb'
	expect_errno EINVAL create "$NS/dir/"$'\x1b[31m'
	expect_errno EINVAL symlink k "$NS/"$'s\x01'
	expect_errno EINVAL mkfifo "$NS/"$'f\x01'
	expect_errno EINVAL link "$NS/k" "$NS/"$'l\x01'
	expect_errno EINVAL rename "$NS/k" "$NS/"$'r\x01'
	[ "$(ls_keys -A "$NS")" = "$(printf '%s\n' dir k)" ]
}

@test "ENAMETOOLONG: a 256-byte component, for every kind of node" {
	long=$(printf 'n%.0s' $(seq 256))
	expect_errno ENAMETOOLONG mkdir "$MNT/$long"
	expect_errno ENAMETOOLONG mkdir "$MNT/app/$long"
	expect_errno ENAMETOOLONG create "$NS/$long"
	expect_errno ENAMETOOLONG symlink k "$NS/$long"
	expect_errno ENAMETOOLONG link "$NS/k" "$NS/$long"
	expect_errno ENAMETOOLONG rename "$NS/k" "$NS/dir/$long"
}

@test "EPERM: regular files at the root and in a database, reserved names at the root" {
	expect_errno EPERM create "$MNT/f"
	expect_errno EPERM create "$MNT/app/f"
	expect_errno EEXIST mkdir "$MNT/tags"
	expect_errno EPERM mkdir "$MNT/.x"
	expect_errno EPERM create "$MNT/.x"
	expect_errno EPERM rename "$NS/k" "$MNT/app/k"
	expect_errno EPERM link "$NS/k" "$MNT/k"
}

@test "EPERM: a device node outside a namespace; EACCES: opening one (the mount is nodev)" {
	expect_fail "Operation not permitted" mknod "$MNT/app/null" c 1 3
	mknod "$NS/null" c 1 3
	expect_fail "Permission denied" cat "$NS/null"
	expect_fail "Permission denied" bash -c "echo x >'$NS/null'"
	grep -q nodev <<<"$(findmnt -n -o OPTIONS "$MNT")"
}

@test "ENOTEMPTY: rmdir of a non-empty directory at every level, and rename over one" {
	expect_errno ENOTEMPTY rmdir "$MNT/app"
	expect_errno ENOTEMPTY rmdir "$NS"
	echo -n x >"$NS/dir/x"
	expect_errno ENOTEMPTY rmdir "$NS/dir"
	mkdir "$NS/empty"
	expect_errno ENOTEMPTY rename "$NS/empty" "$NS/dir"
	[ -d "$NS/empty" ]
	[ -f "$NS/dir/x" ]
}

@test "EEXIST: mkdir, O_EXCL, link, symlink and RENAME_NOREPLACE onto an existing name" {
	expect_errno EEXIST mkdir "$MNT/app"
	expect_errno EEXIST mkdir "$NS"
	expect_errno EEXIST mkdir "$NS/dir"
	expect_errno EEXIST mkdir "$NS/k"
	expect_errno EEXIST create_excl "$NS/k"
	expect_errno EEXIST link "$NS/k" "$NS/dir"
	expect_errno EEXIST symlink x "$NS/k"
	expect_errno EEXIST mkfifo "$NS/k"
	echo -n w >"$NS/k2"
	expect_errno EEXIST rename_noreplace "$NS/k2" "$NS/k"
	[ "$(cat "$NS/k")" = v ]
}

@test "ENOENT: missing keys, directories, namespaces and databases" {
	expect_errno ENOENT open "$NS/missing"
	expect_errno ENOENT open "$MNT/nodb/ns/k"
	expect_errno ENOENT create "$MNT/nodb/ns/k"
	expect_errno ENOENT create "$MNT/app/nons/k"
	expect_errno ENOENT unlink "$NS/missing"
	expect_errno ENOENT rmdir "$NS/missing"
	expect_errno ENOENT rename "$NS/missing" "$NS/x"
	expect_errno ENOENT link "$NS/missing" "$NS/x"
	expect_fail "No such file or directory" cat "$NS/missing"
}

@test "ENOTDIR: a key used as a directory" {
	expect_errno ENOTDIR open "$NS/k/x"
	expect_errno ENOTDIR create "$NS/k/x"
	expect_errno ENOTDIR mkdir "$NS/k/x"
	expect_errno ENOTDIR rmdir "$NS/k"
	expect_errno ENOTDIR rename "$NS/dir" "$NS/k"
}

@test "EISDIR: a directory used as a key" {
	expect_errno EISDIR open_write "$NS/dir"
	expect_errno EISDIR unlink "$NS/dir"
	expect_errno EISDIR rename "$NS/k" "$NS/dir"
	expect_fail "Is a directory" bash -c "echo x > '$NS/dir'"
}

@test "ENODATA and EOPNOTSUPP: missing and non-user xattrs" {
	expect_errno ENODATA getxattr "$NS/k" user.none
	expect_errno ENODATA removexattr "$NS/k" user.none
	expect_errno EOPNOTSUPP setxattr "$NS/k" trusted.t 1
}

@test "EXDEV: moving a database into a database (a level change) is refused" {
	# store.h: a directory moves only where its level stays the same (or between
	# namespace and inner): EXDEV otherwise, so that mv falls back to copying.
	mkdir "$MNT/db2"
	expect_errno EXDEV rename "$MNT/app" "$MNT/db2/app"
	expect_errno EXDEV rename "$NS" "$MNT/app2"
	[ -d "$NS" ]
}

@test "a failed operation leaves the store usable" {
	expect_errno EPERM create "$MNT/f"
	expect_errno EINVAL create "$NS/"$'\x01'
	expect_errno ENOTEMPTY rmdir "$MNT/app"
	echo -n after >"$NS/after"
	remount_store
	[ "$(cat "$NS/after")" = after ]
	[ "$(cat "$NS/k")" = v ]
}

@test "a flood of refused requests cannot grow the log without bound" {
	echo -n v >"$NS/k"
	"$PY" - "$NS/k" <<'PYEOF'
import errno, os, sys
for i in range(2000):
    try:
        os.setxattr(sys.argv[1], "user.ttl", b"not-a-number-%d" % i)
        sys.exit("accepted")
    except OSError as e:
        assert e.errno == errno.EINVAL, e
PYEOF
	n=$(grep -c "user.ttl: 'not-a-number" "$LOG")
	echo "written: $n"
	[ "$n" -ge 1 ]
	[ "$n" -le 20 ]
	[ "$(stat -c %s "$LOG")" -lt 10000 ]
	# the count of the others is written (at the latest when the daemon exits)
	unmount_store
	grep -E "nadbfs\[[0-9]+\]: [0-9]+ more lines like this were not written .*: user.ttl: 'not-a-number-1999' is not" "$LOG"
	total=$(( n + $(grep -oE '[0-9]+ more lines like this' "$LOG" | awk '{s += $1} END {print s}') ))
	[ "$total" = 2000 ]
}
