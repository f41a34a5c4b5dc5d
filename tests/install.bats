#!/usr/bin/env bats
# make install and make uninstall into a DESTDIR, the man pages they
# install, and mounts through mount(8) -- `mount -t fuse.nadbfs` and an
# fstab line -- served by the installed nadbfs.
#
# mount(8) runs its helper without PATH, so sh finds nadbfs on its default
# path only (/usr/local/bin, /usr/bin...).  The mount tests therefore run
# in a private mount namespace (unshare -m) where PREFIX/bin is bound over
# /usr/local/bin: nothing outside the test sees it, and a mount made in
# there is unmounted in there, by the script's own trap, whatever fails.

load helpers
bats_require_minimum_version 1.5.0

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)

setup() {
	nadb_setup
	DEST=$T/dest
	PREFIX=/usr/local
}
teardown() { nadb_teardown; }

# make_in_tree TARGET [VAR=VALUE...]: make in the source tree with the
# binaries under test; -o: never rebuild them (they may be a sanitizer
# build, whose flags make does not know).
make_in_tree() {
	make -s -C "$ROOT" BUILD="$NADB_BUILD" -o "$NADB_BUILD/nadbfs" -o "$NADB_BUILD/nadb" "$@"
}

install_into_dest() {
	make_in_tree install DESTDIR="$DEST" "$@"
}

# The files make install must put under DEST/PREFIX, one a line.
expected_files() {
	local p=$DEST${1:-$PREFIX}
	printf '%s\n' "$p/bin/nadb" "$p/bin/nadbfs" \
		"$p/share/doc/nadb/mnt-kv.mount" "$p/share/doc/nadb/nadbfs.logrotate" \
		"$p/share/man/man1/nadb.1" "$p/share/man/man1/nadbfs.1"
}

@test "make install puts the programs, man pages and examples under DESTDIR/PREFIX; make uninstall removes them" {
	install_into_dest PREFIX=/opt/nadb
	run find "$DEST" -type f
	echo "$output"
	[ "$(echo "$output" | sort)" = "$(expected_files /opt/nadb)" ]
	[ "$(stat -c %a "$DEST/opt/nadb/bin/nadbfs")" = 755 ]
	[ "$(stat -c %a "$DEST/opt/nadb/bin/nadb")" = 755 ]
	[ "$(stat -c %a "$DEST/opt/nadb/share/man/man1/nadbfs.1")" = 644 ]
	"$DEST/opt/nadb/bin/nadbfs" --version | grep -q '^nadbfs '
	"$DEST/opt/nadb/bin/nadb" --version | grep -q '^nadb '
	make_in_tree uninstall DESTDIR="$DEST" PREFIX=/opt/nadb
	run find "$DEST" -type f
	echo "left: $output"
	[ -z "$output" ]
	[ ! -e "$DEST/opt/nadb/share/doc/nadb" ]
}

@test "PREFIX defaults to /usr/local" {
	install_into_dest
	for f in $(expected_files /usr/local); do [ -f "$f" ]; done
}

@test "the installed man pages render without warnings, and man finds them" {
	install_into_dest
	for page in nadbfs nadb; do
		run --separate-stderr man --warnings -l "$DEST$PREFIX/share/man/man1/$page.1"
		echo "$page: status $status, stderr: $stderr"
		[ "$status" -eq 0 ]
		[ -z "$stderr" ]
		[[ "$output" == *EXAMPLES* && "$output" == *"EXIT STATUS"* ]]
		MANPATH=$DEST$PREFIX/share/man man -w "$page" | grep -qF "$DEST$PREFIX/share/man/man1/$page.1"
	done
}

@test "nadbfs(1) documents every option of nadbfs --help, nadb(1) every command of nadb --help" {
	local page=$ROOT/fs/nadbfs.1 opt missing=""
	# "-o NAME=..." or "-o NAME" of our own options
	for opt in $("$NADBFS" --help | sed -n 's/^ *-o \([a-z_]*\).*/\1/p'); do
		grep -qE "^\.B[IR]? +\\\\?\"?$opt" "$page" || missing="$missing $opt"
	done
	for opt in SIGHUP SIGTERM SIGINT FILES "EXIT STATUS" EXAMPLES fstab nosuid; do
		grep -q "$opt" "$page" || missing="$missing $opt"
	done
	for opt in $("$NADB" --help | sed -n 's/^  \([a-z]*\) .*/\1/p'); do
		grep -qE "^\.B[IR]? +\"?$opt[ \"]" "$ROOT/tools/nadb.1" || missing="$missing nadb:$opt"
	done
	echo "missing:$missing"
	[ -z "$missing" ]
}

# in_namespace SCRIPT: run bash SCRIPT in a private mount namespace where
# the installed PREFIX/bin is /usr/local/bin; T, STORE, MNT, LOG and BIN
# are in its environment.  The script's mounts die with the namespace,
# but it unmounts them itself (its trap) so that the daemon ends cleanly.
in_namespace() {
	unshare -m true 2>/dev/null || skip "no private mount namespace here (unshare -m)"
	[ -d /usr/local/bin ] || skip "no /usr/local/bin to bind the installed binaries over"
	T=$T STORE=$STORE MNT=$MNT LOG=$LOG BIN=$DEST$PREFIX/bin \
		unshare -m --propagation private bash -euc '
		mount --bind "$BIN" /usr/local/bin
		trap '\''mountpoint -q "$MNT" && { umount "$MNT" || umount -l "$MNT"; }'\'' EXIT
		'"$1"
}

# What an installed nadbfs needs on the command line beyond the test's
# options: a store on Redis logs where the helpers say.
store_opts() {
	case $STORE in redis://*) echo "log=$LOG," ;; esac
}

@test "mount -t fuse.nadbfs runs the installed nadbfs, with mount(8)'s generic options" {
	install_into_dest
	OPTS="$(store_opts)rw,nosuid,nodev,noatime,relatime,nodiratime,lazytime,_netdev,x-systemd.automount" \
	run in_namespace '
		mount -t fuse.nadbfs -o "$OPTS" "$STORE" "$MNT"
		grep " $MNT fuse.nadbfs " /proc/mounts
		grep " $MNT fuse.nadbfs " /proc/mounts | grep -q "nosuid,nodev,noatime"
		# the daemon is the installed binary
		pid=""
		for p in $(pgrep -x nadbfs); do
			tr "\0" " " <"/proc/$p/cmdline" | grep -qF -- "$STORE $MNT" && pid=$p
		done
		[ -n "$pid" ]
		[ "$(stat -L -c %d:%i "/proc/$pid/exe")" = "$(stat -c %d:%i "$BIN/nadbfs")" ]
		mkdir -p "$MNT/app/ns"
		echo -n v >"$MNT/app/ns/k"
		[ "$(cat "$MNT/app/ns/k")" = v ]
		umount "$MNT"
		for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then exit 1; fi
		echo served'
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *served* ]]
	# what was written is in the store
	[ "$("$NADB" get "$STORE" /app/ns/k)" = v ]
}

@test "an /etc/fstab line of type fuse.nadbfs mounts with the installed nadbfs" {
	install_into_dest
	echo "$STORE $MNT fuse.nadbfs $(store_opts)nosuid,nodev,noatime,allow_other,compress=off,defaults,noauto,nofail 0 0" >"$T/fstab"
	run in_namespace '
		mount -T "$T/fstab" "$MNT"
		grep " $MNT fuse.nadbfs " /proc/mounts | grep -q "nosuid,nodev"
		mkdir -p "$MNT/app/ns"
		echo -n fstab >"$MNT/app/ns/k"
		umount "$MNT"
		echo served'
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *served* ]]
	wait_pids_gone 10 $(daemon_pids "$STORE")
	[ "$("$NADB" get "$STORE" /app/ns/k)" = fstab ]
}
