#!/usr/bin/env bats
# kill -9 of the daemon under load, several rounds.  See crash/writer.py for
# what the writers do and crash/check.py for what is checked after each kill.

load helpers

WRITERS=4
ROUNDS=4

@test "fsync'd keys survive kill -9 at random moments and no key is ever torn" {
	# odd rounds flush every second, so that the flusher's commits of closed
	# (not fsync'd) values also get interrupted
	mount_store flush_interval=1
	mkdir -p "$MNT/app/crash"
	for ((round = 1; round <= ROUNDS; round++)); do
		pids=()
		for ((w = 1; w <= WRITERS; w++)); do
			"$PY" "$BATS_TEST_DIRNAME/crash/writer.py" "$MNT/app/crash" "$w" "$round" "$T/done.$w" 20 >>"$T/writer.$w.log" 2>&1 3>&- &
			pids+=($!)
			BG_PIDS+=($!)
		done
		# let them run a random 0.8 .. 3.7 s
		sleep "$((RANDOM % 3)).$((RANDOM % 10))"
		sleep 0.8
		crash_daemon
		wait_writers "${pids[@]}"
		cat "$T"/writer.*.log 2>/dev/null
		echo "# round $round: $(cat "$T"/done.* 2>/dev/null | wc -l) fsync'd writes so far"
		mount_store
		check_crash_round "$round"
		if [ $round != $ROUNDS ]; then
			if ((round % 2)); then mount_store; else mount_store flush_interval=1; fi
		fi
	done
	# the test only means something if the writers got work done
	[ "$(cat "$T"/done.* | wc -l)" -ge 40 ]
}

@test "kill -9 in the middle of a compaction loses nothing" {
	dir_store_only
	mount_store
	mkdir -p "$MNT/app/c"
	# 60 MB of values, a third deleted: compaction has 40 MB to move
	for i in $(seq 1 60); do head -c 1000000 /dev/urandom >"$MNT/app/c/k$i"; done
	for i in $(seq 1 3 60); do rm "$MNT/app/c/k$i"; done
	echo flush >"$MNT/.ctl"
	sha256sum "$MNT"/app/c/k* | sed "s|$MNT/||" >"$T/sums"
	[ "$(ls "$STORE/packs")" = 00000001.pack ]
	pid=$(daemon_pid)
	# compact, and kill the daemon as soon as the new segment holds 8 MB
	# of moved chunks: the old segment is still there, nothing synced yet
	"$PY" - "$MNT/.ctl" "$STORE/packs/00000002.pack" "$pid" <<'PYEOF'
import os, signal, sys, threading, time
ctl, path, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
def compact():
    try:
        with open(ctl, "w") as f:
            f.write("compact")
    except OSError:
        pass  # the daemon died under it
threading.Thread(target=compact, daemon=True).start()
deadline = time.time() + 20
while time.time() < deadline:
    try:
        if os.stat(path).st_size >= 8_000_000:
            break
    except FileNotFoundError:
        pass
    time.sleep(0.0002)
os.kill(pid, signal.SIGKILL)
PYEOF
	fusermount3 -uz "$MNT" 2>/dev/null || true
	wait_pids_gone 10 "$pid"
	# killed mid-way: both segments are there, the new one partial
	ls -l "$STORE/packs"
	[ "$(ls "$STORE/packs" | wc -l)" = 2 ]
	[ "$(stat -c %s "$STORE/packs/00000002.pack")" -lt 40000000 ]
	mount_store
	(cd "$MNT" && sha256sum -c --quiet "$T/sums")
	[ "$(ls "$MNT/app/c" | grep -c '^k')" = 40 ]
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
	# the next compaction finishes the job: about the live data is left
	mount_store
	echo compact >"$MNT/.ctl"
	(cd "$MNT" && sha256sum -c --quiet "$T/sums")
	unmount_store
	[ "$(du -sb "$STORE/packs" | cut -f1)" -lt 45000000 ]
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
}

@test "what a daemon killed with a value half written and an unlinked key open leaves is gone once the store is mounted again" {
	mount_store
	mkdir -p "$MNT/app/ns"
	leave_behind "$MNT/app/ns"
	# an fsync commits every step so far: the unlink and the chunks' rows
	"$PY" -c 'import os,sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT); os.fsync(fd)' "$MNT/app/ns/f"
	crash_daemon
	kill "$HOLDER"
	wait "$HOLDER" || true
	exec 7<&-
	# mounted again at once (on Redis: the dead daemon's lock and session
	# are taken over, not waited out): all of it is settled by the open
	mount_store
	[ "$(chunks_of "$MNT")" = "$BEFORE" ]
	[ "$(wc -c <"$MNT/app/ns/kept")" = 300000 ]
	[ "$(wc -c <"$MNT/app/ns/unfinished")" = 0 ] # never closed: its old value
	[ ! -e "$MNT/app/ns/held" ]
	unmount_store
	"$NADB" fsck "$STORE"
}
