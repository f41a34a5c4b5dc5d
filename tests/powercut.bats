#!/usr/bin/env bats
# A power cut at random moments under fsync'd writes loses nothing fsync
# returned for and tears no value (README: Crash safe, Durable on fsync).
#
# The store lives on an ext4 made in a file and attached as a loop device
# (direct I/O: what the loop device has written is in the file, nothing
# of it cached above).  A power cut keeps what the disk holds and loses
# the page cache: so the kernel's writeback is turned off at the cut, the
# daemon stopped (SIGSTOP: a thread in the kernel finishes its call, an
# fdatasync included, and stops), the disk's writes in flight waited for,
# and the file copied.  That copy is the disk after the cut: the daemon
# is killed, the live disk thrown away, and the copy mounted (ext4 replays
# its journal as after any power cut), then the store on it.  In even
# rounds writeback runs every 0.1 s up to the cut, so what was written but
# not synced reaches the disk in whatever order the kernel chose.
#
# The same writers and checker as crash.bats (kill -9).  On Redis the disk
# holds redis-server's files (AOF, fsync'd on every write), and the cut
# stops and kills the server with the daemon: what fsync returned for must
# be in what the server reads back from its AOF.

load helpers

WRITERS=3
ROUNDS=4
DISK_MB=512

setup() {
	nadb_setup
	command -v mkfs.ext4 >/dev/null && losetup -f >/dev/null 2>&1 ||
		skip "needs mkfs.ext4 and a free loop device (losetup -f)"
	DISK=$T/disk
	IMG=$T/disk.img
	LOOP=
	mkdir "$DISK"
	if [ -n "$REDIS_PORT" ]; then
		stop_redis # started on $T: ours goes on the disk
	else
		STORE=$DISK/store
		LOG=$STORE/nadbfs.log
	fi
	SYSCTLS="vm.dirty_writeback_centisecs vm.dirty_expire_centisecs"
	SAVED_SYSCTLS=$(sysctl -n $SYSCTLS | paste -sd' ')
}

teardown() {
	local i=0 s v
	for s in $SYSCTLS; do
		i=$((i + 1))
		v=$(echo "$SAVED_SYSCTLS" | cut -d' ' -f$i)
		[ -z "$v" ] || sysctl -q -w "$s=$v"
	done
	if [ -z "${BATS_TEST_COMPLETED:-}" ] && [ -s "$LOG" ]; then
		echo "--- $LOG (last 40 lines) ---"
		tail -n 40 "$LOG"
	fi
	detach_disk
	nadb_teardown
}

# Attach IMG and mount it on DISK (journal commits only when asked: a
# commit every 5 s would write between the cut and the copy); on Redis,
# start the server on it, on the port the store's URL names.
attach_disk() {
	LOOP=$(losetup -f --show --direct-io=on "$IMG") || return 1
	mount -o commit=600 "$LOOP" "$DISK" || return 1
	[ -n "$REDIS_PORT" ] || return 0
	mkdir -p "$DISK/redis"
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DISK/redis" \
		--save "" --appendonly yes --appendfsync always --daemonize yes \
		--pidfile "$T/redis/pid" --logfile "$T/redis/log" >/dev/null && redis_up
}

detach_disk() {
	stop_store_daemons
	stop_redis
	if mountpoint -q "$DISK"; then umount "$DISK" || umount -l "$DISK"; fi
	[ -z "$LOOP" ] || losetup -d "$LOOP"
	LOOP=
}

# writeback on|fast|off
writeback() {
	case $1 in
	fast) sysctl -q -w vm.dirty_writeback_centisecs=10 vm.dirty_expire_centisecs=10 ;;
	off) sysctl -q -w vm.dirty_writeback_centisecs=0 vm.dirty_expire_centisecs=360000 ;;
	esac
}

# True once every thread of pid P is stopped.
all_stopped() {
	local s
	for s in /proc/"$1"/task/*/stat; do
		case $(awk '{print $3}' "$s" 2>/dev/null) in T | t | "") ;; *) return 1 ;; esac
	done
}

disk_idle() { [ "$(awk '{print $1 + $2}' "/sys/block/${LOOP#/dev/}/inflight")" = 0 ]; }

# The power cut: IMG becomes what the disk held at this moment.
power_cut() {
	local pids p
	pids=$(daemon_pid) || return 1
	[ -z "$REDIS_PORT" ] || pids="$pids $(cat "$T/redis/pid")"
	writeback off
	for p in $pids; do kill -STOP "$p"; done
	for p in $pids; do
		within 10 all_stopped "$p" || { echo "power_cut: $p not stopped" >&2; return 1; }
	done
	within 10 disk_idle || { echo "power_cut: disk still busy" >&2; return 1; }
	cp --sparse=always "$IMG" "$IMG.cut"
	for p in $pids; do kill -9 "$p"; done
	fusermount3 -uz "$MNT" 2>/dev/null || true
	# shellcheck disable=SC2086
	wait_pids_gone 10 $pids || { echo "power_cut: $pids survived" >&2; return 1; }
	detach_disk
	mv "$IMG.cut" "$IMG"
}

# Odd rounds flush every second, so that the flusher's commits of closed
# (not fsync'd) values get cut too.
mount_for_round() {
	if (($1 % 2)); then mount_store flush_interval=1; else mount_store; fi
}

@test "fsync'd keys survive a power cut at random moments and no key is ever torn" {
	truncate -s "${DISK_MB}M" "$IMG"
	# no lazy init: its zeroing thread would write between cut and copy
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
	attach_disk
	mount_for_round 1
	mkdir -p "$MNT/app/crash"
	"$PY" -c 'import os,sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))' "$MNT/app/crash"
	for ((round = 1; round <= ROUNDS; round++)); do
		if ((round % 2)); then writeback off; else writeback fast; fi
		pids=()
		for ((w = 1; w <= WRITERS; w++)); do
			"$PY" "$BATS_TEST_DIRNAME/crash/writer.py" "$MNT/app/crash" "$w" "$round" "$T/done.$w" 20 >>"$T/writer.$w.log" 2>&1 7>&- 3>&- &
			pids+=($!)
			BG_PIDS+=($!)
		done
		sleep "$((RANDOM % 3)).$((RANDOM % 10))"
		sleep 0.8
		power_cut
		wait_writers "${pids[@]}"
		cat "$T"/writer.*.log 2>/dev/null
		echo "# round $round: $(cat "$T"/done.* 2>/dev/null | wc -l) fsync'd writes so far"
		writeback off
		attach_disk
		mount_store
		check_crash_round "$round"
		[ $round = $ROUNDS ] || mount_for_round $((round + 1))
	done
	[ "$(cat "$T"/done.* | wc -l)" -ge 30 ]
}
