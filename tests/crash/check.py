#!/usr/bin/env python3
"""Check a crash-test namespace against the writers' done lists.

usage: check.py NSDIR DONEFILE...

Every key in a done list must exist and hold that version or a later one
(a complete value).  Every file present must be a complete value for its own
name (checksum ok), never torn; an empty file is allowed only where a create
may have become durable before its data: a kind-"a" key not in a done list,
or a temp file.  Prints a summary; exit 1 on any problem.
"""
import hashlib, os, re, sys

ns, donefiles = sys.argv[1], sys.argv[2:]
done = {}  # rel -> (ver, sha)
for df in donefiles:
    if not os.path.exists(df):
        continue
    for line in open(df):
        parts = line.split()
        if len(parts) != 3:
            continue  # a line cut by the kill cannot be: written after fsync, whole
        rel, ver, sha = parts[0], int(parts[1]), parts[2]
        if rel not in done or done[rel][0] < ver:
            done[rel] = (ver, sha)

problems = []
seen = {}
nfiles = nempty = 0
for root, dirs, files in os.walk(ns):
    for name in files:
        if root == ns and name == ".stats":
            continue  # the namespace's statistics, served by the daemon
        p = os.path.join(root, name)
        rel = os.path.relpath(p, ns)
        nfiles += 1
        try:
            data = open(p, "rb").read()
        except OSError as e:
            problems.append(f"{rel}: unreadable: {e.strerror}")
            continue
        m = re.fullmatch(r"\.tmp-(.+)\.\d+", name)
        expect_key = os.path.join(os.path.dirname(rel), m.group(1)) if m else rel
        if not data:
            nempty += 1
            if m or (re.fullmatch(r"r\d+-a\d+", name) and rel not in done):
                continue
            problems.append(f"{rel}: empty")
            continue
        body, trailer = data[:-72], data[-72:]
        head = data[:data.find(b"\n") + 1]
        hm = re.fullmatch(rb"nadb-crash key=(\S+) ver=(\d+)\n", head)
        if len(data) < 72 or not trailer.startswith(b"sha256=") or not data.endswith(b"\n") or hm is None:
            problems.append(f"{rel}: torn or foreign value ({len(data)} bytes, head {head[:60]!r}, tail {trailer!r})")
            continue
        sha = hashlib.sha256(body).hexdigest()
        if trailer != b"sha256=" + sha.encode() + b"\n":
            problems.append(f"{rel}: checksum mismatch ({len(data)} bytes)")
            continue
        if hm.group(1).decode() != expect_key:
            problems.append(f"{rel}: holds the value of {hm.group(1).decode()}")
            continue
        seen[rel] = (int(hm.group(2)), sha)

for rel, (ver, sha) in sorted(done.items()):
    if rel not in seen:
        problems.append(f"{rel}: fsync'd (ver {ver}) but " + ("holds no valid value" if os.path.exists(os.path.join(ns, rel)) else "missing"))
    elif seen[rel][0] < ver:
        problems.append(f"{rel}: fsync'd ver {ver} but holds older ver {seen[rel][0]}")
    elif seen[rel][0] == ver and seen[rel][1] != sha:
        problems.append(f"{rel}: ver {ver} with another content than was fsync'd")

print(f"check: {nfiles} files ({nempty} empty), {len(done)} fsync'd keys, {len(problems)} problems")
for pr in problems[:50]:
    print("  " + pr)
sys.exit(1 if problems else 0)
