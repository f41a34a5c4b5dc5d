#!/usr/bin/env python3
"""bench-nadb.py -- nadb-only figures for make bench: tag queries and reaping.

Run against a mounted nadbfs whose BIG directory holds the benchmark's keys:
  bench-nadb.py MNT BIG_DIR
Tags 1% of the keys "bq" (half of those also "bq2"), times listing the tag
query and the AND query through /tags, then gives 10% of the keys (at most
100,000) an expiry 1 s ahead and times until the reaper has deleted them
all, while a stat loop measures its p99 latency.  Prints "name,value" lines.
"""
import os
import sys
import threading
import time
import json


def keys_under(top, limit):
    out = []
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            if f != ".stats":
                out.append(os.path.join(root, f))
                if len(out) >= limit:
                    return out
    return out


def count_files(top):
    return sum(len(f) for _, _, f in os.walk(top))


def main():
    mnt, big = sys.argv[1], sys.argv[2]
    keys = keys_under(big, 10 ** 9)
    n = len(keys)
    tagged = keys[::100]
    for i, k in enumerate(tagged):
        os.setxattr(k, "user.tags", b"bq,bq2" if i % 2 == 0 else b"bq")
    t = time.monotonic()
    found = count_files(os.path.join(mnt, "tags", "bq"))
    print("big-tags,%.1f" % ((time.monotonic() - t) * 1000))
    t = time.monotonic()
    found_and = count_files(os.path.join(mnt, "tags", "bq+bq2"))
    print("big-tags-and,%.1f" % ((time.monotonic() - t) * 1000))
    if found != len(tagged) or found_and != (len(tagged) + 1) // 2:
        sys.exit("tag query found %d and %d keys, want %d and %d"
                 % (found, found_and, len(tagged), (len(tagged) + 1) // 2))
    print("big-tags-count,%d" % len(tagged))

    doomed = keys[1::10][:100000]
    when = b"%.9f" % (time.time() + 1.0)
    for k in doomed:
        os.setxattr(k, "user.expires", when)
    probe = keys[0]
    lat = []
    stop = threading.Event()

    def stat_loop():
        while not stop.is_set():
            s = time.monotonic()
            os.stat(probe)
            lat.append(time.monotonic() - s)
            time.sleep(0.0005)

    th = threading.Thread(target=stat_loop)
    th.start()
    start = time.time()
    deadline = start + 600
    while time.time() < deadline:
        with open(os.path.join(mnt, ".stats")) as f:
            if json.load(f)["expiring"] == 0 and time.time() > float(when):
                break
        time.sleep(0.05)
    stop.set()
    th.join()
    gone = time.time() - float(when)
    lat.sort()
    p99 = lat[int(len(lat) * 0.99)] * 1e6 if lat else 0
    print("big-reap,%.2f" % gone)
    print("big-reap-count,%d" % len(doomed))
    print("big-reap-p99,%.0f" % p99)
    del n


if __name__ == "__main__":
    main()
