#!/usr/bin/env python3
"""bench-compact.py -- compaction's pauses in the foreground, for make bench.

Run against a freshly mounted nadbfs (best with -o compact_garbage=0, so that
the flusher does not compact before we do):
  bench-compact.py MNT DIR [--bytes N] [--baseline S]
Writes N bytes (default 256 MiB) as keys of 64 KiB random bytes under DIR,
flushes, deletes 70% of them (their segments become mostly garbage) and
flushes again.  Then a foreground thread loops, each iteration opening and
reading a surviving key with a new fd and creating, writing and closing a
new 4 KiB key, each of the two timed on its own, while the main thread waits
S seconds (the baseline, default 5) and then writes "compact" to MNT/.ctl,
which returns when compaction is done.  Foreground figures during
compaction are over the operations that overlapped it; the baseline's are
over the operations of the same length of time just before it (all of the
S seconds if compaction took longer).  The daemon's own view of the same
requests comes from the histograms in MNT/.metrics taken before and after
(the .ctl write itself left out).  Every surviving key is read back and
checked after compaction.  Prints "name,value" lines (the names
bench.sh knows are listed in emit()); progress and errors go to stderr.
"""
import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time

VALUE = 64 * 1024
SMALL = 4096
DELETE_OF_10 = 7  # keys i with i % 10 < 7 are deleted


def say(*args):
    print("bench-compact:", *args, file=sys.stderr, flush=True)


def write_key(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_key(path, cap):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        got = 0
        while got <= cap:
            b = os.read(fd, cap + 1 - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
        return b"".join(parts)
    finally:
        os.close(fd)


def control(mnt, command):
    fd = os.open(os.path.join(mnt, ".ctl"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, command.encode() + b"\n")
    finally:
        os.close(fd)


def store_stats(mnt):
    with open(os.path.join(mnt, ".stats")) as f:
        return json.load(f)


METRIC = re.compile(r'^nadb_op_duration_seconds_bucket\{op="([a-z]+)",le="([^"]+)"\} (\d+)$')


def op_histograms(mnt):
    """{op: [(upper bound in us or inf, cumulative count), ...]} from .metrics."""
    out = {}
    with open(os.path.join(mnt, ".metrics")) as f:
        for line in f:
            m = METRIC.match(line.strip())
            if m:
                le = float("inf") if m.group(2) == "+Inf" else float(m.group(2)) * 1e6
                out.setdefault(m.group(1), []).append((le, int(m.group(3))))
    return out


def daemon_between(before, after):
    """Per-bucket counts of the requests answered between two .metrics
    snapshots, all operations together except the .ctl write: [(le_us, n)],
    and the operation with the slowest of them."""
    total = {}
    slowest, slowest_op = 0, "-"
    for op, rows in after.items():
        prev = dict(before.get(op, []))
        last = 0
        last_before = 0
        counts = []
        for le, cum in rows:
            n = (cum - last) - (prev.get(le, 0) - last_before)
            last, last_before = cum, prev.get(le, 0)
            counts.append([le, n])
        if op == "write":  # the .ctl write is the slowest write: leave it out
            for c in reversed(counts):
                if c[1] > 0:
                    c[1] -= 1
                    break
        for le, n in counts:
            total[le] = total.get(le, 0) + n
            if n > 0 and le > slowest:
                slowest, slowest_op = le, op
    return sorted(total.items()), slowest_op


def bucket_percentile(buckets, fraction):
    """Upper bound (us) of the bucket holding the given fraction."""
    count = sum(n for _, n in buckets)
    if count == 0:
        return 0.0
    want = fraction * count
    seen = 0
    for le, n in buckets:
        seen += n
        if n and seen >= want:
            return le
    return buckets[-1][0]


def percentile(sorted_ns, fraction):
    if not sorted_ns:
        return 0
    i = min(len(sorted_ns) - 1, max(0, int(round(fraction * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[i]


class Foreground(threading.Thread):
    """The foreground loop: (kind, start_ns, end_ns) for every operation."""

    def __init__(self, survivors, digests, newdir):
        super().__init__(daemon=True)
        self.survivors, self.digests, self.newdir = survivors, digests, newdir
        self.samples = []
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            i = 0
            while not self.stop.is_set():
                path = self.survivors[i % len(self.survivors)]
                s = time.perf_counter_ns()
                data = read_key(path, VALUE)
                e = time.perf_counter_ns()
                self.samples.append(("read", s, e))
                if hashlib.blake2b(data, digest_size=16).digest() != self.digests[path]:
                    raise RuntimeError("%s: read %d bytes that are not its value" % (path, len(data)))
                small = os.urandom(SMALL)
                path = os.path.join(self.newdir, "n%07d" % i)
                s = time.perf_counter_ns()
                write_key(path, small)
                e = time.perf_counter_ns()
                self.samples.append(("write", s, e))
                i += 1
        except Exception as exc:  # reported by the main thread
            self.error = exc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mnt")
    ap.add_argument("dir")
    ap.add_argument("--bytes", type=int, default=256 << 20)
    ap.add_argument("--baseline", type=float, default=5.0)
    a = ap.parse_args()
    mnt, top = a.mnt, a.dir
    olddir, newdir = os.path.join(top, "old"), os.path.join(top, "new")
    os.makedirs(olddir)
    os.makedirs(newdir)

    n = max(10, a.bytes // VALUE)
    say("writing %d keys of 64 KiB (%d MiB)" % (n, n * VALUE >> 20))
    t = time.monotonic()
    digests = {}
    survivors = []
    for i in range(n):
        path = os.path.join(olddir, "v%07d" % i)
        data = os.urandom(VALUE)
        write_key(path, data)
        if i % 10 >= DELETE_OF_10:
            digests[path] = hashlib.blake2b(data, digest_size=16).digest()
            survivors.append(path)
    control(mnt, "flush")
    write_seconds = time.monotonic() - t
    for i in range(n):
        if i % 10 < DELETE_OF_10:
            os.unlink(os.path.join(olddir, "v%07d" % i))
    control(mnt, "flush")
    before = store_stats(mnt)
    say("deleted %d keys: garbage %.1f MiB of %.1f MiB in packs"
        % (n - len(survivors), before["garbage_bytes"] / 2**20, before["pack_bytes"] / 2**20))
    # Deleted values are garbage, or -- where the file system punches holes
    # -- were given back by the flush already; compaction then moves the
    # live chunks out of the holed segments either way.
    punched = max(0, n * VALUE - before["pack_bytes"])
    if before["garbage_bytes"] + punched < (n - len(survivors)) * VALUE // 2:
        sys.exit("bench-compact: only %d garbage and %d punched bytes after deleting "
                 "%d keys of 64 KiB" % (before["garbage_bytes"], punched, n - len(survivors)))

    fg = Foreground(survivors, digests, newdir)
    fg.start()
    time.sleep(a.baseline)
    hist_before = op_histograms(mnt)
    if fg.error or not fg.is_alive():
        sys.exit("bench-compact: foreground loop failed: %s" % fg.error)
    t0 = time.perf_counter_ns()
    control(mnt, "compact")
    t1 = time.perf_counter_ns()
    hist_after = op_histograms(mnt)
    fg.stop.set()
    fg.join()
    if fg.error:
        sys.exit("bench-compact: foreground loop failed: %s" % fg.error)
    after = store_stats(mnt)

    took = t1 - t0
    during = sorted(e - s for _, s, e in fg.samples if s < t1 and e > t0)
    base_from = max(t0 - took, fg.samples[0][1] if fg.samples else t0)
    base = sorted(e - s for _, s, e in fg.samples if s >= base_from and e <= t0)
    slowest = {}
    for kind, s, e in fg.samples:
        if s < t1 and e > t0:
            slowest[kind] = max(slowest.get(kind, 0), e - s)
    daemon, daemon_slowest_op = daemon_between(hist_before, hist_after)

    for path in survivors:  # compaction moved them: every byte must be there
        if hashlib.blake2b(read_key(path, VALUE), digest_size=16).digest() != digests[path]:
            sys.exit("bench-compact: %s changed across compaction" % path)

    def emit(name, value):
        print("%s,%s" % (name, value))

    emit("compact-data-mib", "%.0f" % (n * VALUE / 2**20))
    emit("compact-write-seconds", "%.2f" % write_seconds)
    emit("compact-seconds", "%.3f" % (took / 1e9))
    emit("compact-garbage-before", "%.1f" % (before["garbage_bytes"] / 2**20))
    emit("compact-garbage-after", "%.1f" % (after["garbage_bytes"] / 2**20))
    emit("compact-reclaimed", "%.1f" % ((before["garbage_bytes"] - after["garbage_bytes"]) / 2**20))
    emit("compact-packs-before", "%.1f" % (before["pack_bytes"] / 2**20))
    emit("compact-packs-after", "%.1f" % (after["pack_bytes"] / 2**20))
    emit("compact-fg-ops", len(during))
    emit("compact-fg-p50", "%.0f" % (percentile(during, 0.5) / 1e3))
    emit("compact-fg-p99", "%.0f" % (percentile(during, 0.99) / 1e3))
    emit("compact-fg-max", "%.2f" % ((during[-1] if during else 0) / 1e6))
    emit("compact-fg-max-read", "%.2f" % (slowest.get("read", 0) / 1e6))
    emit("compact-fg-max-write", "%.2f" % (slowest.get("write", 0) / 1e6))
    emit("compact-base-seconds", "%.2f" % ((t0 - base_from) / 1e9))
    emit("compact-base-ops", len(base))
    emit("compact-base-p50", "%.0f" % (percentile(base, 0.5) / 1e3))
    emit("compact-base-p99", "%.0f" % (percentile(base, 0.99) / 1e3))
    emit("compact-base-max", "%.2f" % ((base[-1] if base else 0) / 1e6))
    emit("compact-daemon-requests", sum(c for _, c in daemon))
    emit("compact-daemon-p99", "%.0f" % bucket_percentile(daemon, 0.99))
    emit("compact-daemon-max", "%.2f" % (bucket_percentile(daemon, 1.0) / 1e3))
    emit("compact-daemon-max-op", daemon_slowest_op)


if __name__ == "__main__":
    main()
