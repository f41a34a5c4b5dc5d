#!/usr/bin/env python3
"""Crash-test writer: writes keys with self-describing content under NSDIR/wW.

usage: writer.py NSDIR W ROUND DONEFILE [SECONDS]

Every value is  "nadb-crash key=<relpath> ver=<n>\n" + payload + "sha256=<hex>\n"
where the hash covers everything before the last line.  A line
"<relpath> <ver> <sha>" is appended to DONEFILE only after fsync returned.
Kinds of writes, in turn:
  a: new key, created and written in place in pieces, fsync'd
  b: new key, written to a temp name, fsync'd, renamed, fsync'd
  hot: one key per writer replaced again and again by temp + rename
  inplace: one 256 KiB key per writer overwritten in place (no truncation)
Stops quietly on the first OSError (the daemon was killed) or after SECONDS.
"""
import hashlib, os, random, sys, time

ns, w, rnd, donefile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
limit = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
rng = random.Random(f"{w}-{rnd}-{os.getpid()}")
wdir = f"w{w}"
os.makedirs(os.path.join(ns, wdir), exist_ok=True)
done = open(donefile, "a", buffering=1)
INPLACE_SIZE = 262144


def value(rel, ver, size=None):
    header = f"nadb-crash key={rel} ver={ver}\n".encode()
    if size is None:
        n = rng.choice([rng.randint(1, 4096), rng.randint(4096, 300000), rng.randint(300000, 1100000)])
    else:
        n = size - len(header) - len("sha256=\n") - 64
    if rng.random() < 0.5:
        payload = rng.randbytes(n)
    else:  # compressible but not repetitive across chunks
        line = f"{rel} {ver} " + "x" * 40 + "\n"
        payload = b"".join((f"{i:08d} " + line).encode() for i in range(n // (len(line) + 9) + 1))[:n]
    body = header + payload
    sha = hashlib.sha256(body).hexdigest()
    return body + f"sha256={sha}\n".encode(), sha


def write_pieces(fd, data, pieces=3):
    step = max(1, len(data) // pieces)
    off = 0
    while off < len(data):
        off += os.pwrite(fd, data[off:off + step], off)


def fsync_path(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def via_rename(rel, ver, size=None):
    data, sha = value(rel, ver, size)
    final = os.path.join(ns, rel)
    tmp = os.path.join(ns, wdir, f".tmp-{os.path.basename(rel)}.{ver}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    write_pieces(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, final)
    fsync_path(final)
    return sha


def main():
    t0 = time.time()
    hot = f"{wdir}/hot"
    inplace = f"{wdir}/inplace"
    if not os.path.exists(os.path.join(ns, inplace)):
        sha = via_rename(inplace, 0, INPLACE_SIZE)
        done.write(f"{inplace} 0 {sha}\n")
    hot_ver = int(time.time() * 1000)  # grows across rounds
    inplace_ver = hot_ver
    i = 0
    while time.time() - t0 < limit:
        kind = ("a", "b", "hot", "inplace")[i % 4]
        if kind == "a":
            rel = f"{wdir}/r{rnd}-a{i}"
            data, sha = value(rel, 0)
            fd = os.open(os.path.join(ns, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            write_pieces(fd, data)
            os.fsync(fd)
            os.close(fd)
            done.write(f"{rel} 0 {sha}\n")
        elif kind == "b":
            rel = f"{wdir}/r{rnd}-b{i}"
            sha = via_rename(rel, 0)
            done.write(f"{rel} 0 {sha}\n")
        elif kind == "hot":
            hot_ver += 1
            sha = via_rename(hot, hot_ver)
            done.write(f"{hot} {hot_ver} {sha}\n")
        else:
            inplace_ver += 1
            data, sha = value(inplace, inplace_ver, INPLACE_SIZE)
            fd = os.open(os.path.join(ns, inplace), os.O_WRONLY)
            write_pieces(fd, data, 4)
            os.fsync(fd)
            os.close(fd)
            done.write(f"{inplace} {inplace_ver} {sha}\n")
        i += 1


try:
    main()
except OSError:
    pass
