#!/usr/bin/env bats
# Ownership, permissions and times (mounted with allow_other, so the daemon
# has the kernel check modes: default_permissions).  Users are plain uids:
# 1000 and 1001.

load helpers

setup() {
	nadb_setup
	mount_store allow_other
	mkdir -p "$MNT/app/ns"
	chmod 1777 "$MNT/app/ns"
	NS=$MNT/app/ns
}

@test "a new key belongs to the user who created it" {
	as_user 1000 1000 touch "$NS/mine"
	as_user 1001 1001 sh -c "echo hi > '$NS/theirs'"
	[ "$(stat -c %u:%g "$NS/mine")" = 1000:1000 ]
	[ "$(stat -c %u:%g "$NS/theirs")" = 1001:1001 ]
	[ "$(cat "$NS/theirs")" = hi ]
}

@test "a new directory, symlink and fifo belong to the user who created them" {
	as_user 1000 1000 mkdir "$NS/d"
	as_user 1000 1000 ln -s d "$NS/l"
	as_user 1000 1000 mkfifo "$NS/p"
	[ "$(stat -c %u:%g "$NS/d")" = 1000:1000 ]
	[ "$(stat -c %u:%g "$NS/l")" = 1000:1000 ]
	[ "$(stat -c %u:%g "$NS/p")" = 1000:1000 ]
}

@test "a new key's mode follows the creator's umask" {
	as_user 1000 1000 sh -c "umask 027; touch '$NS/k'; mkdir '$NS/d'"
	[ "$(stat -c %a "$NS/k")" = 640 ]
	[ "$(stat -c %a "$NS/d")" = 750 ]
}

@test "a setgid directory passes its group to new keys" {
	mkdir "$NS/shared"
	chgrp 2000 "$NS/shared"
	chmod 2777 "$NS/shared"
	as_user 1000 1000 touch "$NS/shared/f"
	[ "$(stat -c %u:%g "$NS/shared/f")" = 1000:2000 ]
}

@test "a set-group-ID executable made in a setgid directory keeps the bit only for a member" {
	mkdir "$NS/shared"
	chgrp 2000 "$NS/shared"
	chmod 2777 "$NS/shared"
	mk='import os, sys; os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o2755))'
	setpriv --reuid=1000 --regid=1000 --clear-groups "$PY" -c "$mk" "$NS/shared/outsider"
	setpriv --reuid=1000 --regid=1000 --groups=2000 "$PY" -c "$mk" "$NS/shared/member"
	[ "$(stat -c %g "$NS/shared/outsider")" = 2000 ]
	[ "$(stat -c %a "$NS/shared/outsider")" = 755 ]
	[ "$(stat -c %a "$NS/shared/member")" = 2755 ]
}

@test "a setgid directory passes its group and setgid bit to new subdirectories" {
	mkdir "$NS/shared"
	chgrp 2000 "$NS/shared"
	chmod 2777 "$NS/shared"
	as_user 1000 1000 mkdir "$NS/shared/sub"
	[ "$(stat -c %u:%g "$NS/shared/sub")" = 1000:2000 ]
	[ -g "$NS/shared/sub" ]
	as_user 1000 1000 mkdir "$NS/shared/sub/subsub"
	[ "$(stat -c %g "$NS/shared/sub/subsub")" = 2000 ]
	[ -g "$NS/shared/sub/subsub" ]
}

@test "with allow_other the kernel checks every access against the modes" {
	findmnt -rn -o OPTIONS "$MNT" | grep -qE '(^|,)default_permissions(,|$)'
	findmnt -rn -o OPTIONS "$MNT" | grep -qE '(^|,)allow_other(,|$)'
}

@test "chmod by a non-owner fails with EPERM" {
	echo -n v >"$NS/k"
	chmod 644 "$NS/k"
	expect_fail "Operation not permitted" as_user 1000 1000 chmod 666 "$NS/k"
	[ "$(stat -c %a "$NS/k")" = 644 ]
}

@test "chown by a non-root user fails with EPERM and root's chown works" {
	as_user 1000 1000 touch "$NS/k"
	expect_fail "Operation not permitted" as_user 1000 1000 chown 1001 "$NS/k"
	[ "$(stat -c %u "$NS/k")" = 1000 ]
	chown 1001:1002 "$NS/k"
	[ "$(stat -c %u:%g "$NS/k")" = 1001:1002 ]
}

@test "the owner can chmod its own key" {
	as_user 1000 1000 touch "$NS/k"
	as_user 1000 1000 chmod 600 "$NS/k"
	[ "$(stat -c %a "$NS/k")" = 600 ]
}

@test "a user cannot read another user's 0600 key" {
	as_user 1000 1000 sh -c "echo -n secret > '$NS/secret'; chmod 600 '$NS/secret'"
	[ "$(as_user 1000 1000 cat "$NS/secret")" = secret ]
	expect_fail "Permission denied" as_user 1001 1001 cat "$NS/secret"
}

@test "a user cannot write another user's 0644 key" {
	as_user 1000 1000 sh -c "echo -n mine > '$NS/k'; chmod 644 '$NS/k'"
	expect_fail "Permission denied" as_user 1001 1001 sh -c "echo -n theirs >> '$NS/k'"
	expect_fail "Permission denied" as_user 1001 1001 truncate -s 0 "$NS/k"
	[ "$(cat "$NS/k")" = mine ]
}

@test "a user cannot create keys in a directory it cannot write" {
	mkdir "$NS/closed"
	chmod 755 "$NS/closed"
	expect_fail "Permission denied" as_user 1000 1000 touch "$NS/closed/k"
	expect_fail "Permission denied" as_user 1000 1000 mkdir "$NS/closed/d"
	[ -z "$(ls_keys -A "$NS/closed")" ]
}

@test "a user cannot delete another user's key in a sticky namespace" {
	as_user 1000 1000 touch "$NS/k"
	expect_fail "Operation not permitted" as_user 1001 1001 rm -f "$NS/k"
	[ -e "$NS/k" ]
}

@test "a user cannot list a directory without read permission" {
	mkdir "$NS/private"
	touch "$NS/private/k"
	chmod 700 "$NS/private"
	expect_fail "Permission denied" as_user 1000 1000 ls "$NS/private"
}

@test "mtime changes when a key is written" {
	echo -n v >"$NS/k"
	touch -d '2000-01-01 00:00:00 UTC' "$NS/k"
	[ "$(stat -c %Y "$NS/k")" = 946684800 ]
	before=$(date +%s)
	printf 'X' | dd of="$NS/k" bs=1 seek=0 conv=notrunc status=none
	[ "$(stat -c %Y "$NS/k")" -ge "$before" ]
	[ "$(stat -c %Y "$NS/k")" -le "$(($(date +%s) + 1))" ]
}

@test "ctime changes on chmod and mtime does not" {
	echo -n v >"$NS/k"
	touch -d '2000-01-01 00:00:00 UTC' "$NS/k"
	c1=$(stat -c %Z "$NS/k")
	# wait for the next second so that second-granular times also differ
	while [ "$(date +%s)" -le "$c1" ]; do sleep 0.05; done
	chmod 600 "$NS/k"
	[ "$(stat -c %Z "$NS/k")" -gt "$c1" ]
	[ "$(stat -c %Y "$NS/k")" = 946684800 ]
}

@test "touch -a -d sets atime only" {
	echo -n v >"$NS/k"
	touch -d '2000-01-01 00:00:00 UTC' "$NS/k"
	touch -a -d '2001-01-01 00:00:00 UTC' "$NS/k"
	[ "$(stat -c %X "$NS/k")" = 978307200 ]
	[ "$(stat -c %Y "$NS/k")" = 946684800 ]
}

@test "creating and removing a key updates its directory's mtime" {
	mkdir "$NS/d"
	touch -d '2000-01-01 00:00:00 UTC' "$NS/d"
	touch "$NS/d/k"
	[ "$(stat -c %Y "$NS/d")" -gt 946684800 ]
	touch -d '2000-01-01 00:00:00 UTC' "$NS/d"
	rm "$NS/d/k"
	[ "$(stat -c %Y "$NS/d")" -gt 946684800 ]
}

@test "owners, groups and modes survive a remount" {
	as_user 1000 1000 sh -c "echo -n v > '$NS/k'; chmod 640 '$NS/k'"
	mkdir "$NS/shared"
	chgrp 2000 "$NS/shared"
	chmod 2775 "$NS/shared"
	remount_store allow_other
	[ "$(stat -c '%u:%g %a' "$NS/k")" = "1000:1000 640" ]
	[ "$(stat -c '%u:%g %a' "$NS/shared")" = "0:2000 2775" ]
	[ "$(stat -c %a "$NS")" = 1777 ]
	expect_fail "Permission denied" as_user 1001 1001 cat "$NS/k"
}

# expiry_refused UID KEY: every way of giving KEY an expiry or changing
# it fails for UID with "Permission denied" or "Operation not permitted",
# and the key is still there with no expiry.
expiry_refused() {
	local uid=$1 key=$2 how
	for how in "-n user.ttl -v 0" "-n user.ttl -v 1" "-n user.ttl -v 3600" \
		"-n user.expires -v 1" "-n user.expires -v 4102444800"; do
		# shellcheck disable=SC2086
		run as_user "$uid" "$uid" setfattr $how "$key"
		echo "setfattr $how: $status $output"
		[ "$status" -ne 0 ]
		[[ "$output" == *"Permission denied"* || "$output" == *"Operation not permitted"* ]]
	done
	[ -f "$key" ]
	run getfattr --absolute-names -n user.expires "$key"
	[ "$status" -ne 0 ]
}

@test "an expiry is only for who could remove the key (directory mode 755)" {
	mkdir -m 755 "$MNT/app/ro"
	echo -n v >"$MNT/app/ro/k"
	chmod 666 "$MNT/app/ro/k"
	run as_user 65534 65534 rm -f "$MNT/app/ro/k"
	[ "$status" -ne 0 ]
	expiry_refused 65534 "$MNT/app/ro/k"
	grep -q "uid 65534 may not remove that key (no write permission on its directory)" "$LOG"
	# what the user may write, it still may: the value and other attributes
	as_user 65534 65534 sh -c "echo -n w >'$MNT/app/ro/k'"
	as_user 65534 65534 setfattr -n user.color -v red "$MNT/app/ro/k"
	as_user 65534 65534 setfattr -n user.tags -v t "$MNT/app/ro/k"
	# the owner of the directory may
	chown 1000:1000 "$MNT/app/ro"
	as_user 1000 1000 setfattr -n user.ttl -v 3600 "$MNT/app/ro/k"
	# and a removal of an expiry is refused too
	run as_user 65534 65534 setfattr -x user.ttl "$MNT/app/ro/k"
	[ "$status" -ne 0 ]
	[ "$(getfattr --absolute-names --only-values -n user.ttl "$MNT/app/ro/k")" -gt 3590 ]
}

@test "an expiry in a sticky directory is only for the key's or the directory's owner" {
	# NS is mode 1777: everyone may write it, each removes only their own
	as_user 1000 1000 sh -c "echo -n v >'$NS/k'; chmod 666 '$NS/k'"
	run as_user 1001 1001 rm -f "$NS/k"
	[ "$status" -ne 0 ]
	expiry_refused 1001 "$NS/k"
	grep -q "uid 1001 may not remove that key (sticky directory)" "$LOG"
	as_user 1000 1000 setfattr -n user.ttl -v 0 "$NS/k"
	# gone at once; the kernel's cached name follows the notice within moments
	within 1 not test -e "$NS/k"
}

@test "an expiry counts every name of a hard-linked key" {
	mkdir -m 777 "$MNT/app/open"
	mkdir -m 755 "$MNT/app/closed"
	as_user 1000 1000 sh -c "echo -n v >'$MNT/app/open/k'"
	ln "$MNT/app/open/k" "$MNT/app/closed/k"
	run as_user 1000 1000 setfattr -n user.ttl -v 5 "$MNT/app/open/k"
	[ "$status" -ne 0 ]
	[ -f "$MNT/app/closed/k" ]
	rm "$MNT/app/closed/k"
	as_user 1000 1000 setfattr -n user.ttl -v 3600 "$MNT/app/open/k"
}

# set_id FILE MODE [GID]: FILE, a new key of uid 1000 (group GID, else
# 1000), has MODE.
set_id() {
	echo -n v >"$NS/$1"
	chown "1000:${3:-1000}" "$NS/$1"
	chmod "$2" "$NS/$1"
	stat "$NS/$1" >/dev/null
}

@test "a write, truncate, O_TRUNC open or fallocate by a user clears the set-id bits; root's keep them" {
	set_id w 6755
	set_id nx 2644      # set-group-ID without group execute, the writer a member
	set_id nx2 2644 2000 # ... the writer not a member
	set_id nx3 2644 2000 # ... a member by a supplementary group
	set_id t 4755
	set_id o 6750
	set_id d 4755
	set_id fa 4755
	set_id r 6755
	as_user 1000 1000 sh -c "echo -n more >> '$NS/w'; echo -n more >> '$NS/nx'"
	as_user 1000 1000 sh -c "echo -n more >> '$NS/nx2'"
	setpriv --reuid=1000 --regid=1000 --groups=2000 sh -c "echo -n more >> '$NS/nx3'"
	as_user 1000 1000 truncate -s 0 "$NS/t"
	as_user 1000 1000 sh -c ": > '$NS/o'"
	as_user 1000 1000 "$PY" -c 'import mmap, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
buf.write(b"d" * 4096)
os.write(fd, buf)' "$NS/d"
	as_user 1000 1000 fallocate -l 1M "$NS/fa"
	# root (CAP_FSETID), appending without O_CREAT (fs.protected_regular)
	"$PY" -c 'import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
os.write(fd, b"more")' "$NS/r"
	# what the user sees at once, and after a remount
	[ "$(as_user 1000 1000 stat -c %a "$NS/w")" = 755 ]
	for pass in 1 2; do
		# KEY:MODE; nx: no group execute, a member; r: root (CAP_FSETID)
		for km in w:755 nx:2644 nx2:644 nx3:2644 t:755 o:750 d:755 fa:755 r:6755; do
			mode=$(stat -c %a "$NS/${km%%:*}")
			[ "$mode" = "${km#*:}" ] || { echo "${km%%:*}: mode $mode"; false; }
		done
		[ "$(cat "$NS/nx3")" = vmore ]
		[ "$(cat "$NS/w")" = vmore ]
		[ "$(stat -c %s "$NS/fa")" = 1048576 ]
		unmount_store
		mount_store allow_other
	done
}

@test "chown clears the set-id bits, even root's" {
	set_id k 6755
	chown 1001:1001 "$NS/k"
	[ "$(stat -c %a "$NS/k")" = 755 ]
	set_id nx 2644
	chown 1001:1001 "$NS/nx" # set-group-ID without group execute: root keeps it
	[ "$(stat -c %a "$NS/nx")" = 2644 ]
	mkdir "$NS/d"
	chmod 2775 "$NS/d"
	chown 1001 "$NS/d"
	[ "$(stat -c %a "$NS/d")" = 2775 ] # a directory keeps them
}
