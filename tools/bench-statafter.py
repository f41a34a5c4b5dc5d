#!/usr/bin/env python3
"""bench-statafter.py -- stat and read right after write, and set, on nadbfs.

For each build given (--build NAME=DIR, DIR holding nadbfs and nadb), and
for the bare disk (a folder beside the mounts), each round: K keys of 4 KiB
are set (open O_CREAT|O_TRUNC, one write, close) in a fresh folder, then
each is stat(2)ed once, in the order written; then K more are set in
another folder, and each is read once (open, read, close).  Rounds
interleave the targets (the order rotates), and the table gives each
figure's median over the rounds (set: both sets of every round), with each
nadbfs mount's FUSE requests per key, read from its /.stats (each
operation's count before and after the phase; the .stats reads themselves
add a little): which round trips a set, a first stat and a first read cost.

Everything is mounted under one mktemp -d folder, and unmounted (and the
daemons gone) on exit, whatever happens.

usage: tools/bench-statafter.py [--keys K] [--rounds R]
           [--build NAME=DIR ...] [--no-native]
default: --keys 10000 --rounds 3 --build this=BUILD (build/ of this tree)
(about 40 s for two builds)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = os.urandom(4096)
SHOWN_OPS = ["lookup", "create", "getattr", "getxattr", "write", "flush",
             "release", "open", "read"]


def op_counts(mnt):
    with open(os.path.join(mnt, ".stats")) as f:
        ops = json.load(f)["ops"]
    return {name: ops[name]["count"] for name in ops}


def set_keys(folder, k):
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    t0 = time.perf_counter()
    for i in range(k):
        fd = os.open(f"{folder}/k{i}", flags, 0o644)
        os.write(fd, VALUE)
        os.close(fd)
    return time.perf_counter() - t0


def read_keys(folder, k):
    t0 = time.perf_counter()
    for i in range(k):
        fd = os.open(f"{folder}/k{i}", os.O_RDONLY)
        data = os.read(fd, 65536)
        os.close(fd)
        if data != VALUE:
            raise SystemExit(f"{folder}/k{i}: read back {len(data)} bytes, not the value")
    return time.perf_counter() - t0


def stat_keys(folder, k):
    t0 = time.perf_counter()
    for i in range(k):
        st = os.stat(f"{folder}/k{i}")
        if st.st_size != len(VALUE):
            raise SystemExit(f"{folder}/k{i}: size {st.st_size}, want {len(VALUE)}")
    return time.perf_counter() - t0


class Target:
    def __init__(self, name, root, mnt=None, nadbfs=None):
        self.name, self.root, self.mnt, self.nadbfs = name, root, mnt, nadbfs
        self.rates = {"set": [], "stat": [], "read": []}
        self.per_key = {"set": {}, "stat": {}, "read": {}}

    def phase(self, what, folder, k):
        before = op_counts(self.mnt) if self.mnt else None
        secs = {"set": set_keys, "stat": stat_keys, "read": read_keys}[what](folder, k)
        self.rates[what].append(k / secs)
        if before is not None:
            after = op_counts(self.mnt)
            self.per_key[what] = {op: (after[op] - before[op]) / k
                                  for op in after if after[op] != before[op]}


def mount(nadbfs, store, mnt):
    os.makedirs(mnt)
    subprocess.run([nadbfs, store, mnt], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build", action="append", default=[],
                    help="NAME=DIR: a build folder holding nadbfs")
    ap.add_argument("--no-native", action="store_true")
    a = ap.parse_args()
    builds = [b.split("=", 1) for b in a.build] or [["this", os.path.join(HERE, "build")]]

    top = tempfile.mkdtemp(prefix="statafter.")
    targets, mounted = [], []
    try:
        if not a.no_native:
            os.makedirs(f"{top}/native")
            targets.append(Target("ext4 (bare)", f"{top}/native"))
        for name, d in builds:
            mnt = f"{top}/mnt-{name}"
            mount(os.path.join(d, "nadbfs"), f"{top}/store-{name}", mnt)
            mounted.append((mnt, os.path.join(d, "nadb")))
            os.makedirs(f"{mnt}/bench")
            targets.append(Target(f"nadbfs {name}", f"{mnt}/bench", mnt))
        for r in range(a.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for t in order:
                for then in ("stat", "read"):
                    folder = f"{t.root}/r{r}-{then}"
                    os.makedirs(folder)
                    t.phase("set", folder, a.keys)
                    t.phase(then, folder, a.keys)
        print(f"{a.keys} keys of 4 KiB, {a.rounds} rounds interleaved; medians")
        print(f"{'target':<16}{'set/s':>8}{'stat after write/s':>20}{'x ext4':>8}"
              f"{'read after write/s':>20}{'x ext4':>8}")
        native = None if a.no_native else targets[0]
        for t in targets:
            s, st, rd = (statistics.median(t.rates[w]) for w in ("set", "stat", "read"))
            ratios = [f"{x / statistics.median(native.rates[w]):.3f}" if native else "-"
                      for x, w in ((st, "stat"), (rd, "read"))]
            print(f"{t.name:<16}{s:>8.0f}{st:>20.0f}{ratios[0]:>8}{rd:>20.0f}{ratios[1]:>8}")
        print("\nevery round (per second)")
        for t in targets:
            print(f"  {t.name:<14} " + "; ".join(
                f"{w} " + " ".join(f"{x:.0f}" for x in t.rates[w]) for w in t.rates))
        print("\nFUSE requests per key (last round; release is sent after close returns)")
        for t in targets:
            for what in ("set", "stat", "read"):
                if t.mnt:
                    shown = ", ".join(f"{op} {n:.2f}" for op, n in
                                      sorted(t.per_key[what].items()))
                    print(f"  {t.name:<14} {what:<5} {shown}")
        return 0
    finally:
        for mnt, nadb in mounted:  # returns once the daemon has exited
            if subprocess.run([nadb, "umount", mnt]).returncode != 0:
                subprocess.run(["fusermount3", "-u", mnt])
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
