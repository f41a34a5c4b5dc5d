#!/usr/bin/env python3
"""bench-redis-memory.py -- what a nadb store on Redis costs in Redis memory.

Why: issue 11 asks how much memory Redis needs per key for 4 KiB values
(the aim: the value plus no more than 400 bytes), beside what the same keys
take in a directory store.

What: starts a private redis-server (loopback, a free port, its files in a
temp folder under --tmp, --save "" --appendonly yes --appendfsync always),
reads INFO memory used_memory, loads KEYS keys of VALUE_SIZE incompressible
(os.urandom) bytes into the store redis://127.0.0.1:PORT/NAME with
`nadb load` fed a tar made on the fly (keys bench/ns/dNNN/kNNNNNN, 1,000 a
directory, as make bench's large store), reads used_memory again once nadb
has exited, and stops the server (also on an error, SIGINT, SIGTERM,
SIGHUP).  Then, unless --no-dir, the same number of keys into a directory
store, measured with du -sb.

  bench-redis-memory.py --nadb build/nadb [--keys 100000] [--value-size 4096]
                        [--tmp DIR] [--no-dir]

Prints "name,value" lines (bytes unless the name says otherwise):
  redis-mem-per-key        (used_memory after - before) / KEYS
  redis-mem-beyond-value   that minus VALUE_SIZE
  redis-mem-before, redis-mem-after, redis-rss-after   INFO memory, bytes
  redis-load-seconds       wall time of the nadb load into Redis
  dir-store-per-key        du -sb of the directory store / KEYS
  dir-store-beyond-value   that minus VALUE_SIZE
  dir-load-seconds         wall time of the nadb load into the directory
Exit status 0, or 1 with the reason on stderr.
"""
import argparse
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

KEYS_PER_DIR = 1000          # keys per directory, as make bench's big store
SERVER_START_SECONDS = 10    # wait at most this long for redis-server to answer
SERVER_STOP_SECONDS = 10     # then SIGKILL


def die(msg):
    sys.exit("bench-redis-memory.py: " + msg)


def redis_cli(port, *args):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         timeout=30, check=False)
    return out.stdout.decode(errors="replace")


def info_field(port, section, field):
    for line in redis_cli(port, "info", section).splitlines():
        name, _, value = line.strip().partition(":")
        if name == field:
            return int(value)
    die("INFO %s has no %s (is the server on port %d ours?)" % (section, field, port))


class RedisServer:
    """A private redis-server; stop() always ends it."""

    def __init__(self, top):
        self.dir = os.path.join(top, "redis")
        os.makedirs(self.dir)
        self.proc = None
        self.port = None
        for _ in range(20):
            port = random.randint(20000, 59999)
            proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--dir", self.dir, "--save", "", "--appendonly", "yes",
                 "--appendfsync", "always", "--logfile", os.path.join(self.dir, "log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.proc = proc
            deadline = time.monotonic() + SERVER_START_SECONDS
            while proc.poll() is None and time.monotonic() < deadline:
                # another server may hold the port: check it is our process
                if redis_cli(port, "info", "server").find("process_id:%d\r" % proc.pid) >= 0:
                    self.port = port
                    return
                time.sleep(0.05)
            self.stop()
        die("no redis-server could start (see %s/log)" % self.dir)

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: redis-server shuts down and exits
        try:
            proc.wait(SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load(nadb, store, keys, value_size):
    """nadb load STORE < a tar of KEYS random values; returns its seconds."""
    start = time.monotonic()
    proc = subprocess.Popen([nadb, "load", store], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for i in range(keys):
                member = tarfile.TarInfo("bench/ns/d%03d/k%06d" % (i // KEYS_PER_DIR, i))
                member.size = value_size
                member.mtime = int(start)
                member.mode = 0o644
                tar.addfile(member, io.BytesIO(os.urandom(value_size)))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        die("nadb load %s failed: %s" % (store, err.strip().splitlines()[-1:] or "?"))
    return time.monotonic() - start


def du_bytes(path):
    """du -sb, as make bench measures the directory store elsewhere."""
    out = subprocess.run(["du", "-sb", path], stdout=subprocess.PIPE, check=True)
    return int(out.stdout.split()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nadb", required=True, help="the nadb tool")
    ap.add_argument("--keys", type=int, default=100000, help="keys to load (count)")
    ap.add_argument("--value-size", type=int, default=4096, help="bytes per value")
    ap.add_argument("--tmp", default=None, help="folder for the temp files")
    ap.add_argument("--no-dir", action="store_true", help="skip the directory store")
    args = ap.parse_args()
    if args.keys < 1 or args.value_size < 0:
        die("--keys must be >= 1 and --value-size >= 0")

    def on_signal(signum, _frame):
        raise SystemExit("bench-redis-memory.py: signal %d" % signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    top = tempfile.mkdtemp(prefix="redis-memory.", dir=args.tmp)
    server = None
    try:
        server = RedisServer(top)
        before = info_field(server.port, "memory", "used_memory")
        seconds = load(args.nadb, "redis://127.0.0.1:%d/bench" % server.port,
                       args.keys, args.value_size)
        after = info_field(server.port, "memory", "used_memory")
        rss = info_field(server.port, "memory", "used_memory_rss")
        per_key = (after - before) / args.keys
        print("redis-mem-keys,%d" % args.keys)
        print("redis-mem-before,%d" % before)
        print("redis-mem-after,%d" % after)
        print("redis-rss-after,%d" % rss)
        print("redis-mem-per-key,%.1f" % per_key)
        print("redis-mem-beyond-value,%.1f" % (per_key - args.value_size))
        print("redis-load-seconds,%.2f" % seconds)
        sys.stdout.flush()
        server.stop()
        if not args.no_dir:
            store = os.path.join(top, "dir-store")
            seconds = load(args.nadb, store, args.keys, args.value_size)
            per_key = du_bytes(store) / args.keys
            print("dir-store-per-key,%.1f" % per_key)
            print("dir-store-beyond-value,%.1f" % (per_key - args.value_size))
            print("dir-load-seconds,%.2f" % seconds)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
