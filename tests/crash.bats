#!/usr/bin/env bats
# kill -9 of the daemon under load, several rounds.  See crash/writer.py for
# what the writers do and crash/check.py for what is checked after each kill.

load helpers

WRITERS=4
ROUNDS=4

# Wait (<= 15 s) for the writers to notice the dead daemon and stop.
wait_writers() {
	local p
	# shellcheck disable=SC2068
	if ! wait_pids_gone 15 $@; then
		echo "writers $* still running 15 s after the kill" >&2
		for p in "$@"; do kill -KILL "$p" 2>/dev/null; done
		return 1
	fi
}

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
		run "$PY" "$BATS_TEST_DIRNAME/crash/check.py" "$MNT/app/crash" "$T"/done.*
		echo "$output"
		[ "$status" -eq 0 ]
		unmount_store
		run "$NADB" fsck "$STORE"
		echo "fsck after round $round: $output"
		[ "$status" -eq 0 ]
		if [ $round != $ROUNDS ]; then
			if ((round % 2)); then mount_store; else mount_store flush_interval=1; fi
		fi
	done
	# the test only means something if the writers got work done
	[ "$(cat "$T"/done.* | wc -l)" -ge 40 ]
}
