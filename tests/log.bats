#!/usr/bin/env bats
# Logs: the daemon's one format, SIGHUP reopening the log file
# (logrotate), -o log=syslog with its rate limit, and the nadb tool's one
# plain line per error.

load helpers
bats_require_minimum_version 1.5.0

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
LINE_RE='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z nadbfs\[[0-9]+\]: '

# refuse_ttl FILE VALUE: a setxattr the daemon refuses with a log line.
refuse_ttl() {
	not setfattr -n user.ttl -v "$2" "$1" 2>/dev/null
}

@test "the daemon's lines have one format: time, nadbfs[pid], text" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v >"$MNT/app/ns/k"
	refuse_ttl "$MNT/app/ns/k" abc
	not setfattr -n user.nadb.hash -v 00 "$MNT/app/ns/k" 2>/dev/null
	pid=$(daemon_pid)
	unmount_store
	cat "$LOG"
	grep -qE "${LINE_RE}user.ttl: 'abc' is not a whole number" "$LOG"
	grep -qE "^[^ ]+ nadbfs\[$pid\]: user.nadb.hash is read-only" "$LOG"
	not grep -vE "$LINE_RE" "$LOG"
}

@test "SIGHUP reopens the log file, so that a renamed log is left alone" {
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v >"$MNT/app/ns/k"
	refuse_ttl "$MNT/app/ns/k" before-rotation
	mv "$LOG" "$LOG.1"
	kill -HUP "$(daemon_pid)"
	# kill returns before the handler ran; the handler creates the new file
	wait_for_file "$LOG"
	refuse_ttl "$MNT/app/ns/k" after-rotation
	# the daemon goes on serving
	mountpoint -q "$MNT"
	[ "$(cat "$MNT/app/ns/k")" = v ]
	grep -q before-rotation "$LOG.1"
	not grep -q after-rotation "$LOG.1"
	grep -q after-rotation "$LOG"
	[ "$(stat -c %a "$LOG")" = 600 ]
}

@test "the logrotate example's postrotate makes the daemon reopen its log" {
	dir_store_only
	mount_store
	mkdir -p "$MNT/app/ns"
	echo -n v >"$MNT/app/ns/k"
	refuse_ttl "$MNT/app/ns/k" before-rotation
	mv "$LOG" "$LOG.1"
	# the commands between postrotate and endscript, for this store
	sed -n '/^\tpostrotate/,/^\tendscript/p' "$ROOT/tools/dist/nadbfs.logrotate" |
		sed '1d;$d' | sed "s|/srv/kv|$STORE|g" >"$T/postrotate"
	cat "$T/postrotate"
	sh -e "$T/postrotate"
	wait_for_file "$LOG"
	refuse_ttl "$MNT/app/ns/k" after-rotation
	grep -q after-rotation "$LOG"
	not grep -q after-rotation "$LOG.1"
}

# in_syslog_namespace SCRIPT: run bash SCRIPT in a private mount namespace
# whose /dev has a /dev/log of our own: a listener writes what it
# receives to $T/syslog.  The host's /dev (and any syslog daemon) is not
# touched.  The script unmounts what it mounted (its trap), and the
# listener is stopped by its pid.
in_syslog_namespace() {
	unshare -m true 2>/dev/null || skip "no private mount namespace here (unshare -m)"
	T=$T STORE=$STORE MNT=$MNT NADBFS=$NADBFS PY=$PY \
		unshare -m --propagation private bash -euc '
		mkdir "$T/hostdev"
		mount --rbind /dev "$T/hostdev"
		mount -t tmpfs -o mode=755 nadb-test-dev /dev
		for n in null zero full random urandom fuse; do
			touch "/dev/$n"
			mount --bind "$T/hostdev/$n" "/dev/$n"
		done
		"$PY" -c "
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(\"/dev/log\")
open(sys.argv[1] + \".ready\", \"w\").close()
with open(sys.argv[1], \"ab\", buffering=0) as out:
    while True:
        out.write(s.recv(65536) + b\"\\n\")
" "$T/syslog" &
		listener=$!
		trap '\''mountpoint -q "$MNT" && { umount "$MNT" || umount -l "$MNT"; }; kill $listener'\'' EXIT
		for i in $(seq 100); do [ -e "$T/syslog.ready" ] && break; sleep 0.05; done
		'"$1"
}

@test "-o log=syslog sends the daemon's lines to syslog, rate-limited like the file" {
	run in_syslog_namespace '
		"$NADBFS" -o log=syslog "$STORE" "$MNT"
		mkdir -p "$MNT/app/ns"
		echo -n v >"$MNT/app/ns/k"
		for i in $(seq 30); do
			if setfattr -n user.ttl -v "bad-$i" "$MNT/app/ns/k" 2>/dev/null; then exit 1; fi
		done
		# (other daemons may run: the last one tried must not end the
		# script under -e)
		pid=$(for p in $(pgrep -x nadbfs); do
			tr "\0" " " <"/proc/$p/cmdline" | grep -qF -- "$STORE $MNT" && echo "$p"
		done; true)
		umount "$MNT"
		# the count of the lines held back is written at exit
		for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		sleep 0.2
		echo served'
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *served* ]]
	cat "$T/syslog"
	# facility daemon (3), priority warning (4): <28>
	[ "$(grep -c "^<28>.* nadbfs\[[0-9]*\]: user.ttl: 'bad-[0-9]*' is not" "$T/syslog")" = 20 ]
	grep -q "nadbfs\[[0-9]*\]: 10 more lines like this were not written .*'bad-30'" "$T/syslog"
	# nothing of it went to a log file
	[ ! -s "$T/store/nadbfs.log" ]
}

# run_tool ARGS...: nadb with stderr apart; each error must be one line,
# plain: "nadb: ...", no timestamp, nothing else.
run_tool() {
	run --separate-stderr "$NADB" "$@"
	echo "nadb $*: status $status, stderr:"
	echo "$stderr"
}
one_plain_line() {
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ] && [[ "$stderr" == "nadb: "* ]] &&
		[[ "$stderr" == *"$1"* ]] && ! [[ "$stderr" =~ [0-9]{4}-[0-9]{2}-[0-9]{2}T ]]
}

@test "nadb says each error in one plain line, with the store's own reason" {
	echo -n v | "$NADB" put "$STORE" /app/ns/k
	run_tool setx "$STORE" /app/ns/k user.ttl abc
	[ "$status" -eq 1 ]
	one_plain_line "nadb: /app/ns/k: user.ttl: 'abc' is not a whole number of seconds"
	run_tool setx "$STORE" /app/ns/k user.nadb.hash 00
	[ "$status" -eq 1 ]
	one_plain_line "/app/ns/k: user.nadb.hash is read-only"
	run_tool get "$STORE" /app/ns/missing
	[ "$status" -eq 1 ]
	one_plain_line "/app/ns/missing: No such file or directory"
	# the store is still whole
	[ "$("$NADB" get "$STORE" /app/ns/k)" = v ]
}

@test "nadb says a store it cannot open in one plain line" {
	dir_store_only
	run_tool ls "$T/nothing-here"
	[ "$status" -eq 2 ]
	one_plain_line "nothing-here: no store here"
	run_tool ls redis://127.0.0.1:1/x
	[ "$status" -eq 2 ]
	one_plain_line "redis 127.0.0.1:1: cannot connect"
}

@test "nadb says a store in use in one plain line" {
	mount_store
	run_tool fsck "$STORE" # (on Redis, ls would read it as a follower)
	[ "$status" -eq 2 ]
	one_plain_line "in use"
}

@test "nadbfs says a store it cannot open in one plain line" {
	run --separate-stderr "$NADBFS" redis://127.0.0.1:1/x "$MNT"
	echo "status $status, stderr: $stderr"
	[ "$status" -eq 1 ]
	[ "$(printf '%s\n' "$stderr" | wc -l)" = 1 ]
	[[ "$stderr" == "nadbfs: redis://127.0.0.1:1/x: cannot open the store: redis 127.0.0.1:1: cannot connect"* ]]
	not mountpoint -q "$MNT"
}
