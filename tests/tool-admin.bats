#!/usr/bin/env bats
# The nadb tool's admin commands: stats, compact, fsck --json, keys/count,
# setx/getx, dump/load and help/usage -- offline on stores built with
# nadb put, plus the MOUNTPOINT variants and the refusal of a mounted store.
# Tests that need the daemon's .stats/.ctl skip until it serves them.

load helpers

bats_require_minimum_version 1.5.0

# put PATH VALUE: store VALUE (no newline added) at PATH in STORE.
put() { printf '%s' "$2" | "$NADB" put "${3:-$STORE}" "$1"; }

# json_check PYTHON < DOCUMENT: run PYTHON with d = the parsed document.
json_check() { "$PY" -c "import json, sys; d = json.load(sys.stdin); $1"; }

# run_json ARGS...: run nadb with stdout and stderr apart (JSON in $output).
run_json() { run --separate-stderr "$NADB" "$@"; }

# The keys of a store built for the glob tests, in tree order.
make_glob_store() {
	local k
	for k in /app/users/theme:123 /app/users/theme:456 /app/users/lang:123 \
		/app/users/Theme:9 /app/users/a/b/c /app/media/2024/cat.jpg \
		/app/media/2024/dog.png '/app/media/x?y' /app/media/xzy \
		'/app/media/star*key' /app/media/starXkey '/app/media/{123}' \
		/db2/ns/k1 /db2/ns/k2 /db2/ns/k10; do
		put "$k" v || return 1
	done
}

# keys_are PATTERN EXPECTED...: nadb keys prints exactly EXPECTED, one a
# line, and nadb count prints how many.
keys_are() {
	local pattern=$1 expected
	shift
	expected=$(printf '%s\n' "$@")
	[ $# -gt 0 ] || expected=
	run "$NADB" keys "$STORE" "$pattern"
	if [ "$status" -ne 0 ] || [ "$output" != "$expected" ]; then
		echo "nadb keys '$pattern' -> $status:"
		echo "$output"
		echo "expected:"
		echo "$expected"
		return 1
	fi
	run "$NADB" count "$STORE" "$pattern"
	if [ "$status" -ne 0 ] || [ "$output" != "$#" ]; then
		echo "nadb count '$pattern' -> $status: $output, expected $#"
		return 1
	fi
}

# tar_listing ARCHIVE: one line per member -- name, type, mode, owner,
# size, ns times, link, a hash of the data and the xattrs but a key's
# user.ttl (it counts down), user.nadb.stored (each store shares chunks
# differently) and user.nadb.accessed (dump reads the key) -- to compare
# two archives.
tar_listing() {
	"$PY" - "$1" <<'EOF'
import hashlib, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        x = {k: v for k, v in m.pax_headers.items()
             if k.startswith("SCHILY.xattr.")
             and k not in ("SCHILY.xattr.user.nadb.stored", "SCHILY.xattr.user.nadb.accessed")}
        if not m.isdir():
            x.pop("SCHILY.xattr.user.ttl", None)
        data = hashlib.sha256(t.extractfile(m).read()).hexdigest()[:16] if m.isreg() else "-"
        print(m.name, m.type.decode(), oct(m.mode), m.uid, m.gid, m.size,
              m.pax_headers.get("mtime"), m.pax_headers.get("atime"), m.linkname, data,
              sorted(x.items()))
EOF
}

# make_archive FILE MEMBER[|XATTR=VALUE]...: a pax archive (Python's
# tarfile) of small keys whose value is their name; for crafted cases.
make_archive() {
	"$PY" - "$@" <<'EOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    for spec in sys.argv[2:]:
        name, *attrs = spec.split("|")
        i = tarfile.TarInfo(name)
        data = name.encode()
        i.size, i.mtime, i.mode = len(data), 1000000000, 0o644
        i.pax_headers = {"SCHILY.xattr." + a.split("=")[0]: a.split("=")[1] for a in attrs}
        t.addfile(i, io.BytesIO(data))
EOF
}

# ---- help and usage --------------------------------------------------------

@test "nadb --help lists every subcommand" {
	run "$NADB" --help
	[ "$status" -eq 0 ]
	for cmd in ls get put rm setx getx stats compact fsck keys count dump load help; do
		echo "$output" | grep -qE "^  $cmd( |$)" || { echo "missing: $cmd"; echo "$output"; false; }
	done
}

@test "nadb help CMD and nadb CMD --help describe one command and exit 0" {
	for cmd in ls get put rm setx getx stats compact fsck keys count dump load; do
		run "$NADB" help "$cmd"
		[ "$status" -eq 0 ] || { echo "help $cmd -> $status: $output"; false; }
		[[ "$output" == "usage: nadb $cmd"* ]]
		local help=$output
		run "$NADB" "$cmd" --help
		[ "$status" -eq 0 ] || { echo "$cmd --help -> $status: $output"; false; }
		[ "$output" = "$help" ]
	done
	run "$NADB" help keys
	echo "$output" | grep -q '\*\*'
}

@test "usage errors exit 2 with a message" {
	put /app/users/k v
	for args in "" "frobnicate" "stats" "stats $STORE extra" "stats --bogus $STORE" \
		"ls --json $STORE" "help nosuch" "keys $STORE" "count" "setx $STORE /app/users/k user.a" \
		"getx $STORE /app/users/k" "fsck --json" "rm $STORE" "get $STORE"; do
		# shellcheck disable=SC2086
		run "$NADB" $args
		[ "$status" -eq 2 ] || { echo "nadb $args -> $status (expected 2): $output"; false; }
		[ -n "$output" ]
	done
}

@test "commands that cannot run exit 2: no store, not an archive, a '..' PATH" {
	for cmd in stats fsck compact ls dump; do
		run "$NADB" "$cmd" "$T/nostore"
		[ "$status" -eq 2 ] || { echo "nadb $cmd nostore -> $status: $output"; false; }
	done
	run "$NADB" keys "$T/nostore" '/**'
	[ "$status" -eq 2 ]
	[ ! -e "$T/nostore" ]
	run bash -c "'$NADB' load '$STORE' < /dev/null"
	[ "$status" -eq 2 ]
	echo "$output" | grep -qi empty
	head -c 4096 /dev/urandom >"$T/junk"
	run bash -c "'$NADB' load '$STORE' < '$T/junk'"
	[ "$status" -eq 2 ]
	echo "$output" | grep -qi 'not a tar archive'
	make_archive "$T/a.tar" ./k
	run bash -c "'$NADB' load '$STORE' /app/../x < '$T/a.tar'"
	[ "$status" -eq 2 ]
	echo "$output" | grep -q "'\.\.'"
}

# ---- setx / getx --------------------------------------------------------------

@test "setx and getx set and read user xattrs, tags and expiry" {
	put /app/users/k v
	"$NADB" setx "$STORE" /app/users/k user.color green
	[ "$("$NADB" getx "$STORE" /app/users/k user.color)" = green ]
	"$NADB" setx "$STORE" /app/users/k user.tags red,blue
	[ "$("$NADB" getx "$STORE" /app/users/k user.tags)" = blue,red ]
	when=$(($(date +%s) + 3600))
	"$NADB" setx "$STORE" /app/users/k user.expires "$when"
	[ "$("$NADB" getx "$STORE" /app/users/k user.expires)" = "$when" ]
	run "$NADB" getx "$STORE" /app/users/k user.absent
	[ "$status" -eq 1 ]
	echo "$output" | grep -q 'no attribute user.absent'
	run "$NADB" setx "$STORE" /app/users/k trusted.x y
	[ "$status" -eq 1 ]
	run "$NADB" setx "$STORE" /app/users/nokey user.a b
	[ "$status" -eq 1 ]
}

# ---- stats ---------------------------------------------------------------------

@test "stats --json counts keys, databases, namespaces, dirs and bytes after puts" {
	put /app/users/theme:123 dark
	put /app/users/lang:123 en
	head -c 300000 /dev/urandom >"$T/blob"
	"$NADB" put "$STORE" /app/media/2024/cat.jpg <"$T/blob"
	put /db2/ns/k 12345
	bytes=$((4 + 2 + 300000 + 5))
	run_json stats --json "$STORE"
	[ "$status" -eq 0 ]
	json_check "
assert d['keys'] == 4, d
assert d['logical_bytes'] == $bytes, d
assert d['databases'] == 2 and d['namespaces'] == 3 and d['dirs'] == 1, d
assert d['chunk_bytes'] == $bytes and d['stored_bytes'] > 0 and d['pack_bytes'] >= d['stored_bytes'], d
for f in ['tags', 'garbage_bytes', 'dedup_ratio', 'compression_ratio', 'buffer_bytes',
          'buffer_limit', 'buffer_utilization_pct', 'expiring', 'reaped', 'version', 'chunks']:
    assert f in d, f
rows = {r['path']: r for r in d['scopes']}
assert sorted(rows) == ['/app', '/app/media', '/app/users', '/db2', '/db2/ns'], rows
assert rows['/app']['keys'] == 3 and rows['/app']['namespaces'] == 2, rows
assert rows['/app/users']['keys'] == 2 and rows['/app/users']['bytes'] == 6, rows
assert rows['/app/media']['bytes'] == 300000 and rows['/app/media']['dirs'] == 1, rows
assert rows['/db2/ns']['level'] == 'namespace' and rows['/db2']['level'] == 'database', rows
" <<<"$output"
}

@test "stats follows rm: fewer keys and bytes, and the value's frames are punched (no garbage)" {
	put /app/users/a aaaa
	head -c 200000 /dev/urandom | "$NADB" put "$STORE" /app/users/b
	"$NADB" rm "$STORE" /app/users/b
	run_json stats --json "$STORE"
	[ "$status" -eq 0 ]
	json_check "
assert d['keys'] == 1 and d['logical_bytes'] == 4, d
assert d['garbage_bytes'] < 50000 and d['pack_bytes'] < 50000, d  # partial pages stay
" <<<"$output"
}

@test "stats reports deduplication and compression ratios" {
	head -c 262144 /dev/urandom >"$T/rand"
	"$NADB" put "$STORE" /app/ns/one <"$T/rand"
	"$NADB" put "$STORE" /app/ns/two <"$T/rand"
	yes 'a compressible line' | head -c 262144 | "$NADB" put "$STORE" /app/ns/text
	run_json stats --json "$STORE"
	[ "$status" -eq 0 ]
	json_check "
assert d['logical_bytes'] == 3 * 262144, d
assert d['chunk_bytes'] == 2 * 262144, d      # the second copy is shared
assert abs(d['dedup_ratio'] - 1.5) < 0.01, d
assert d['compression_ratio'] > 1.5, d         # the text compresses
" <<<"$output"
}

@test "stats prints a readable table with a row per database and namespace" {
	put /app/users/theme:123 dark
	put /app/media/k 12345
	run "$NADB" stats "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
	echo "$output" | grep -qE '^  keys +2$'
	echo "$output" | grep -qE '^  logical bytes +9$'
	echo "$output" | grep -qE '^  /app +2 +9 +2 '
	echo "$output" | grep -qE '^  /app/users +1 +4 +- '
	echo "$output" | grep -qE '^  dedup ratio'
}

# ---- compact -------------------------------------------------------------------

@test "rm gives the space of deleted values back (du of packs shrinks); compact rewrites the holed segment" {
	dir_store_only
	head -c 3000000 /dev/urandom >"$T/keep"
	"$NADB" put "$STORE" /app/ns/keep <"$T/keep"
	head -c 3000000 /dev/urandom | "$NADB" put "$STORE" /app/ns/gone
	before=$(store_bytes "$STORE/packs")
	"$NADB" rm "$STORE" /app/ns/gone
	after=$(store_bytes "$STORE/packs")
	echo "packs: $before -> $after"
	[ "$after" -lt $((before - 2500000)) ]
	run_json compact --json "$STORE"
	echo "$output $stderr"
	[ "$status" -eq 0 ]
	json_check "assert d['segments_removed'] == 1 and d['pack_bytes_after'] <= d['pack_bytes_before'], d" <<<"$output"
	"$NADB" get "$STORE" /app/ns/keep | cmp - "$T/keep"
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
	run "$NADB" compact "$STORE"
	[ "$status" -eq 0 ]
	echo "$output" | grep -q '^reclaimed 0 bytes'
}

@test "compact --json has one schema, offline and on a mount" {
	head -c 3000000 /dev/urandom | "$NADB" put "$STORE" /app/ns/gone
	put /app/ns/keep keep
	"$NADB" rm "$STORE" /app/ns/gone
	run_json compact --json "$STORE"
	[ "$status" -eq 0 ]
	echo "$output" >"$T/offline.json"
	head -c 3000000 /dev/urandom | "$NADB" put "$STORE" /app/ns/gone
	mount_store
	rm "$MNT/app/ns/gone"
	run_json compact --json "$MNT"
	[ "$status" -eq 0 ]
	echo "$output" >"$T/mount.json"
	run "$PY" -c '
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
assert sorted(a) == sorted(b), (a, b)
assert a["where"] == "store" and b["where"] == "mount", (a, b)
for d in (a, b):
    for k, v in d.items():
        assert k == "where" or (type(v) is int and v >= 0), (k, v)
    assert d["pack_bytes_after"] <= d["pack_bytes_before"], d
    assert d["bytes_reclaimed"] > 0, d   # the mount reports what the daemon did
' "$T/offline.json" "$T/mount.json"
	echo "$output"; cat "$T/offline.json" "$T/mount.json"
	[ "$status" -eq 0 ]
	[ "$(cat "$MNT/app/ns/keep")" = keep ]
}

@test "fsck and compact show a percentage and an ETA on a terminal" {
	command -v script >/dev/null || skip "script (util-linux) is not installed: no terminal to test on"
	head -c 20000000 /dev/urandom | "$NADB" put "$STORE" /app/ns/big
	head -c 20000000 /dev/urandom | "$NADB" put "$STORE" /app/ns/gone
	"$NADB" rm "$STORE" /app/ns/gone
	run script -qec "'$NADB' fsck '$STORE'" /dev/null
	echo "$output" | tr '\r' '\n'
	[ "$status" -eq 0 ]
	[[ "$output" == *"checking chunks"*"%"*" ETA "* ]]
	run script -qec "'$NADB' compact '$STORE'" /dev/null
	echo "$output" | tr '\r' '\n'
	[ "$status" -eq 0 ]
	[[ "$output" == *"moving live chunks"*"%"*" ETA "* ]]
}

@test "dump and load show a percentage and an ETA on a terminal, and nothing when stderr is not one" {
	command -v script >/dev/null || skip "script (util-linux) is not installed: no terminal to test on"
	head -c 20000000 /dev/urandom | "$NADB" put "$STORE" /app/ns/big
	put /app/ns/small v
	# script gives the command a terminal; its output is the terminal's
	run script -qec "'$NADB' dump '$STORE' /app > '$T/a.tar'" /dev/null
	echo "$output" | tr '\r' '\n'
	[ "$status" -eq 0 ]
	[[ "$output" == *"dump: "*"%"*" ETA "* ]]
	run script -qec "'$NADB' load '$(other_store s2)' /app < '$T/a.tar'" /dev/null
	echo "$output" | tr '\r' '\n'
	[ "$status" -eq 0 ]
	[[ "$output" == *"load: "*"%"*" ETA "* ]]
	# from a pipe the size is not known: no share, still a progress line
	run script -qec "cat '$T/a.tar' | '$NADB' load '$(other_store s3)' /app" /dev/null
	[ "$status" -eq 0 ]
	[[ "$output" == *"load: "* ]]
	[[ "$output" != *"ETA"* ]]
	# not a terminal: no progress line at all
	"$NADB" dump "$STORE" /app 2>"$T/err" >"$T/b.tar"
	[ ! -s "$T/err" ]
	"$NADB" load "$(other_store s4)" /app <"$T/a.tar" 2>"$T/err" >/dev/null
	run grep -c 'ETA\|%' "$T/err"
	[ "$output" = 0 ]
}

# ---- fsck --json ---------------------------------------------------------------

@test "fsck --json is a valid document on a clean store" {
	put /app/users/a v
	run_json fsck --json "$STORE"
	[ "$status" -eq 0 ]
	json_check "assert d['problems'] == 0 and d['lines'] == [] and d['inodes'] >= 4 and d['repaired'] == 0, d" <<<"$output"
}

@test "fsck --json lists the problems of a corrupted store and exits 1" {
	dir_store_only
	head -c 700000 /dev/urandom | "$NADB" put "$STORE" /app/media/blob
	pack=$(find "$STORE/packs" -type f -name '*.pack' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
	size=$(stat -c %s "$pack")
	[ "$size" -gt 600000 ]
	head -c 4096 /dev/urandom | dd of="$pack" bs=1 seek=$((size / 2)) conv=notrunc status=none
	run_json fsck --json "$STORE"
	echo "$output"
	[ "$status" -eq 1 ]
	json_check "assert d['problems'] > 0 and len(d['lines']) > 0 and all(isinstance(l, str) for l in d['lines']), d" <<<"$output"
}

# ---- keys / count: the glob --------------------------------------------------

@test "keys: '*' matches within one name, never across '/'" {
	make_glob_store
	keys_are '/app/users/theme:*' /app/users/theme:123 /app/users/theme:456
	keys_are '/app/*/theme:123' /app/users/theme:123
	keys_are '/app/users/*' /app/users/Theme:9 /app/users/lang:123 /app/users/theme:123 /app/users/theme:456
	keys_are '/*/theme:123'
	keys_are '/app/*'
}

@test "keys: '?' matches one byte of a name" {
	make_glob_store
	keys_are '/db2/ns/k?' /db2/ns/k1 /db2/ns/k2
	keys_are '/db2/ns/k??' /db2/ns/k10
	keys_are '/app/users/a?b/c'
}

@test "keys: '**' crosses '/'" {
	make_glob_store
	keys_are '/app/users/**' /app/users/Theme:9 /app/users/a/b/c /app/users/lang:123 \
		/app/users/theme:123 /app/users/theme:456
	keys_are '/**/c' /app/users/a/b/c
	keys_are '/app/users/**/c' /app/users/a/b/c
	keys_are '/**/*.{jpg,png}' /app/media/2024/cat.jpg /app/media/2024/dog.png
	run "$NADB" count "$STORE" '/**'
	[ "$output" = 15 ]
}

@test "keys: [abc], [a-z] and [!x] classes" {
	make_glob_store
	keys_are '/db2/ns/k[12]' /db2/ns/k1 /db2/ns/k2
	keys_are '/db2/ns/k[0-9][0-9]' /db2/ns/k10
	keys_are '/app/users/[a-z]*:123' /app/users/lang:123 /app/users/theme:123
	keys_are '/app/users/[!t]*' /app/users/Theme:9 /app/users/lang:123
	keys_are '/app/users/[^a-z]*' /app/users/Theme:9
}

@test "keys: a backslash escapes *, ? and [" {
	make_glob_store
	keys_are '/app/media/x?y' '/app/media/x?y' /app/media/xzy
	keys_are '/app/media/x\?y' '/app/media/x?y'
	keys_are '/app/media/star\*key' '/app/media/star*key'
	keys_are '/app/media/star*key' '/app/media/star*key' /app/media/starXkey
}

@test "keys: {a,b} alternatives, nested, and a literal {x}" {
	make_glob_store
	keys_are '/app/users/{theme,lang}:123' /app/users/lang:123 /app/users/theme:123
	keys_are '/{app/users/{theme,lang}:,db2/ns/k}1*' /app/users/lang:123 /app/users/theme:123 \
		/db2/ns/k1 /db2/ns/k10
	keys_are '/app/media/{123}' '/app/media/{123}'
	keys_are '/db2/ns/{k1,k2,nope}' /db2/ns/k1 /db2/ns/k2
}

@test "keys: a pattern too costly to match fails (exit 1) instead of hanging" {
	put "/app/ns/$(printf 'a%.0s' {1..200})" v
	run timeout 60 "$NADB" keys "$STORE" '/app/ns/*a*a*a*a*a*a*a*a*a*b'
	echo "$output"
	[ "$status" -eq 1 ]
	echo "$output" | grep -q 'too costly'
}

@test "keys --json prints a JSON array; names that are not UTF-8 survive" {
	make_glob_store
	printf v | "$NADB" put "$STORE" /db2/ns/$'\xff'
	run_json keys --json "$STORE" '/db2/**'
	[ "$status" -eq 0 ]
	json_check "
import os
assert [os.fsencode(p) for p in d] == [b'/db2/ns/k1', b'/db2/ns/k10', b'/db2/ns/k2', b'/db2/ns/\xff'], d
" <<<"$output"
	run_json keys --json "$STORE" '/nothing/**'
	[ "$status" -eq 0 ]
	[ "$output" = "[]" ]
}

@test "keys: a pattern with too many alternatives is a usage error" {
	make_glob_store
	run "$NADB" keys "$STORE" '/{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}'
	[ "$status" -eq 2 ]
}

@test "keys and count: a malformed pattern exits 2 with one line on stderr, nothing on stdout" {
	make_glob_store
	for cmd in keys count; do
		for p in '[a-' '/app/[a-' '{a,b' '/app/{a,b' '' 'app/users/*' '/app/users/x\'; do
			run bash -c '"$1" "$2" "$3" "$4" 2>"$5"' _ "$NADB" "$cmd" "$STORE" "$p" "$T/err"
			echo "$cmd '$p' -> $status, stdout '$output', stderr: $(cat "$T/err")"
			[ "$status" -eq 2 ]
			[ -z "$output" ]
			[ "$(wc -l <"$T/err")" -eq 1 ]
			grep -qF "nadb: $cmd: bad pattern '$p': " "$T/err"
		done
	done
	run "$NADB" keys "$STORE" '/app/[a-'
	[[ "$output" == *"a '[' without its ']'"* ]]
	run "$NADB" keys "$STORE" '/app/{a,b'
	[[ "$output" == *"a '{' without its '}'"* ]]
	run "$NADB" keys "$STORE" ''
	[[ "$output" == *"the pattern is empty"* ]]
	run "$NADB" keys "$STORE" 'app/*'
	[[ "$output" == *"starts with '/'"* ]]
	# escaped, the same characters are literal
	printf v | "$NADB" put "$STORE" '/app/media/[a-'
	keys_are '/app/media/\[a-' '/app/media/[a-'
	# checked before the store is opened: a typo costs no lock
	run "$NADB" keys "$T/nonexistent" '[a-'
	[ "$status" -eq 2 ]
	[[ "$output" == *"bad pattern"* ]]
}

# ---- dump / load -----------------------------------------------------------

# A subtree with text, binary, empty and nested values, a tag set, an
# exact expiry, a plain xattr and a namespace default ttl set after the
# keys (so they have no expiry of their own).
make_rich_store() {
	put /app/users/theme:123 dark
	put /app/users/lang:123 en
	put /app/users/empty ''
	head -c 400000 /dev/urandom >"$T/blob"
	"$NADB" put "$STORE" /app/media/2024/cat.jpg <"$T/blob"
	put /other/ns/k outside
	"$NADB" setx "$STORE" /app/users/theme:123 user.tags red,blue
	"$NADB" setx "$STORE" /app/users/theme:123 user.color green
	EXPIRES=$(($(date +%s) + 7200)).250000000
	"$NADB" setx "$STORE" /app/users/lang:123 user.expires "$EXPIRES"
	"$NADB" setx "$STORE" /app/users user.ttl 600
}

@test "dump | load round trip of a subtree: values, listings, tags, expiry, xattrs" {
	make_rich_store
	"$NADB" dump "$STORE" /app >"$T/a.tar"
	B=$T/b
	run "$NADB" load "$B" /app <"$T/a.tar"
	echo "$output"
	[ "$status" -eq 0 ]
	for dir in / /app /app/users /app/media /app/media/2024; do
		if [ "$dir" = / ]; then
			[ "$("$NADB" ls "$B" /)" = app/ ]
			continue
		fi
		[ "$("$NADB" ls "$B" "$dir")" = "$("$NADB" ls "$STORE" "$dir")" ]
	done
	for key in /app/users/theme:123 /app/users/lang:123 /app/users/empty /app/media/2024/cat.jpg; do
		cmp <("$NADB" get "$STORE" "$key") <("$NADB" get "$B" "$key")
	done
	[ "$("$NADB" getx "$B" /app/users/theme:123 user.tags)" = blue,red ]
	[ "$("$NADB" getx "$B" /app/users/theme:123 user.color)" = green ]
	[ "$("$NADB" getx "$B" /app/users/lang:123 user.expires)" = "$EXPIRES" ]
	[ "$("$NADB" getx "$B" /app/users user.ttl)" = 600 ]
	run "$NADB" getx "$B" /app/users/theme:123 user.expires
	[ "$status" -eq 1 ] # no expiry of its own, despite the namespace's default ttl
	run_json stats --json "$B"
	json_check "assert d['keys'] == 4 and d['tags'] == 2 and d['expiring'] == 1, d" <<<"$output"
	[ "$("$NADB" getx "$B" /app/users/theme:123 user.nadb.created)" = \
	  "$("$NADB" getx "$STORE" /app/users/theme:123 user.nadb.created)" ]
	# modes, owners, ns times, created times, hashes: the second dump lists
	# the same as the first
	"$NADB" dump "$B" /app >"$T/b.tar"
	grep -q user.nadb.created "$T/b.tar"
	diff <(tar_listing "$T/a.tar") <(tar_listing "$T/b.tar")
}

@test "dump writes a pax archive tar can list and extract with its xattrs" {
	make_rich_store
	"$NADB" dump "$STORE" >"$T/a.tar"
	run tar -tvf "$T/a.tar"
	echo "$output"
	[ "$status" -eq 0 ]
	echo "$output" | grep -qE '^drwxr-xr-x .* \./app/users/$'
	echo "$output" | grep -qE '^-rw-r--r-- .* 400000 .* \./app/media/2024/cat\.jpg$'
	mkdir "$T/x"
	tar --xattrs --xattrs-include='user.*' -xf "$T/a.tar" -C "$T/x"
	cmp "$T/blob" "$T/x/app/media/2024/cat.jpg"
	[ "$(cat "$T/x/app/users/theme:123")" = dark ]
	if setfattr -n user.probe -v 1 "$T/x/app/users/empty" 2>/dev/null; then
		[ "$(getfattr --only-values -n user.tags "$T/x/app/users/theme:123")" = blue,red ]
	fi
}

@test "dump of a single key is one member named by the key; load puts it below PATH" {
	make_rich_store
	"$NADB" dump "$STORE" /app/users/theme:123 >"$T/k.tar"
	[ "$(tar -tf "$T/k.tar")" = "theme:123" ]
	"$NADB" load "$T/b" /copy/ns <"$T/k.tar"
	[ "$("$NADB" get "$T/b" /copy/ns/theme:123)" = dark ]
	[ "$("$NADB" getx "$T/b" /copy/ns/theme:123 user.tags)" = blue,red ]
}

@test "load replaces existing keys whole and makes missing parents" {
	put /app/users/theme:123 old-value
	"$NADB" setx "$STORE" /app/users/theme:123 user.tags stale
	"$NADB" setx "$STORE" /app/users/theme:123 user.expires $(($(date +%s) + 999))
	put /app/users/untouched keep
	make_archive "$T/a.tar" './theme:123|user.color=blue' ./deep/er/key
	run "$NADB" load "$STORE" /app/users <"$T/a.tar"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$("$NADB" get "$STORE" /app/users/theme:123)" = ./theme:123 ]
	[ "$("$NADB" getx "$STORE" /app/users/theme:123 user.color)" = blue ]
	run "$NADB" getx "$STORE" /app/users/theme:123 user.tags
	[ "$status" -eq 1 ]
	run "$NADB" getx "$STORE" /app/users/theme:123 user.expires
	[ "$status" -eq 1 ]
	[ "$("$NADB" get "$STORE" /app/users/deep/er/key)" = ./deep/er/key ]
	[ "$("$NADB" get "$STORE" /app/users/untouched)" = keep ]
	# into a store that does not exist yet, under a PATH that does not either
	"$NADB" load "$T/new" /db/ns <"$T/a.tar"
	[ "$("$NADB" get "$T/new" /db/ns/deep/er/key)" = ./deep/er/key ]
}

@test "load keeps user.* attributes and skips the others (SELinux labels) without failing, said once" {
	make_archive "$T/a.tar" './a|security.selinux=system_u:object_r:x|user.color=blue' \
		'./b|security.selinux=system_u:object_r:y|trusted.x=1'
	run "$NADB" load "$STORE" /app/users <"$T/a.tar"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | grep -c 'only user.\* attributes are kept')" = 1 ]
	[[ "$output" == *"loaded 2 keys"*", 0 failed"* ]]
	[ "$("$NADB" getx "$STORE" /app/users/a user.color)" = blue ]
	[ "$("$NADB" get "$STORE" /app/users/b)" = ./b ]
}

@test "xattr names with '=' and '%' go through dump, load and GNU tar as tar encodes them" {
	put /app/users/k v
	"$NADB" setx "$STORE" /app/users/k 'user.a=b' one
	"$NADB" setx "$STORE" /app/users/k 'user.p%3D' two
	"$NADB" setx "$STORE" /app/users/k user.tags 'env=prod'
	"$NADB" dump "$STORE" /app >"$T/a.tar"
	"$NADB" load "$T/b" /app <"$T/a.tar"
	[ "$("$NADB" getx "$T/b" /app/users/k 'user.a=b')" = one ]
	[ "$("$NADB" getx "$T/b" /app/users/k 'user.p%3D')" = two ]
	[ "$("$NADB" getx "$T/b" /app/users/k user.tags)" = 'env=prod' ]
	# GNU tar reads the same names back
	mkdir "$T/x"
	tar --xattrs --xattrs-include='user.*' -xf "$T/a.tar" -C "$T/x"
	[ "$(getfattr --absolute-names --only-values -n 'user.a=b' "$T/x/users/k")" = one ]
	[ "$(getfattr --absolute-names --only-values -n 'user.p%3D' "$T/x/users/k")" = two ]
	[ "$(getfattr --absolute-names --only-values -n 'user.tag.env=prod' "$T/x/users/k")" = "" ]
}

@test "load of a directory member, then a key of the same name: the key, exit 0" {
	"$PY" - "$T/a.tar" <<'EOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    d = tarfile.TarInfo("./a")
    d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1000000000
    t.addfile(d)
    k = tarfile.TarInfo("./a")
    data = b"now a key"
    k.size, k.mode, k.mtime = len(data), 0o644, 1000000000
    t.addfile(k, io.BytesIO(data))
EOF
	run "$NADB" load "$STORE" /app/users <"$T/a.tar"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$("$NADB" get "$STORE" /app/users/a)" = "now a key" ]
}

@test "load refuses members with '..' components and loads the rest" {
	make_archive "$T/a.tar" ../evil ./ok 'a/../../evil2' ./sub/..
	run "$NADB" load "$STORE" /app/ns <"$T/a.tar"
	echo "$output"
	[ "$status" -eq 1 ]
	echo "$output" | grep -q "'\.\.'"
	[ "$("$NADB" ls "$STORE" /)" = app/ ]
	[ "$("$NADB" ls "$STORE" /app)" = ns/ ]
	[ "$("$NADB" ls "$STORE" /app/ns)" = ok ]
}

@test "load skips keys whose user.expires has passed, and user.ttl yields to user.expires" {
	when=$(($(date +%s) + 5000))
	make_archive "$T/a.tar" './old|user.expires=1000' "./live|user.expires=$when|user.ttl=7" ./plain
	run "$NADB" load "$STORE" /app/ns <"$T/a.tar"
	echo "$output"
	[ "$status" -eq 0 ]
	echo "$output" | grep -q '1 already expired'
	[ "$("$NADB" ls "$STORE" /app/ns)" = "$(printf '%s\n' live plain)" ]
	[ "$("$NADB" getx "$STORE" /app/ns/live user.expires)" = "$when" ]
}

@test "load honours the pax size record over the ustar size field" {
	make_archive "$T/a.tar" ./k ./after
	# Say the size of ./k only in a pax record, as for values of 8 GiB and
	# more, and zero the ustar field.
	"$PY" - "$T/a.tar" <<'EOF'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
out = bytearray()
i = 0
while i < len(data):
    block = data[i:i + 512]
    if block[156:157] == b"0" and block[:4] == b"./k\0":
        # a pax header carrying size=3 before it, and a zero size field
        rec = b"10 size=3\n"
        pax = bytearray(512)
        pax[:14] = b"PaxHeaders/k\0\0"
        pax[100:108] = b"0000644\0"
        for f, w in ((108, 8), (116, 8), (136, 12)):
            pax[f:f + w] = b"0" * (w - 1) + b"\0"
        pax[124:136] = b"%011o\0" % len(rec)
        pax[156:157] = b"x"
        pax[257:265] = b"ustar\x0000"
        block = bytearray(block)
        block[124:136] = b"00000000000\0"
        for h in (pax, block):
            h[148:156] = b" " * 8
            h[148:156] = b"%06o\0 " % sum(h)
        out += pax + rec + bytes(512 - len(rec)) + block
    else:
        out += block
    i += 512
open(sys.argv[1], "wb").write(out)
EOF
	tar -tvf "$T/a.tar"
	run "$NADB" load "$STORE" /app/ns <"$T/a.tar"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$("$NADB" get "$STORE" /app/ns/k)" = ./k ]
	[ "$("$NADB" get "$STORE" /app/ns/after)" = ./after ]
}

@test "load rejects a truncated or damaged archive with exit 1" {
	make_rich_store
	"$NADB" dump "$STORE" /app >"$T/a.tar"
	head -c 300000 "$T/a.tar" >"$T/cut.tar"
	run "$NADB" load "$T/b" /app <"$T/cut.tar"
	echo "$output"
	[ "$status" -eq 1 ]
	echo "$output" | grep -qi truncated
	run "$NADB" fsck "$T/b"
	[ "$status" -eq 0 ]
	# a header in the middle damaged: what came before it is loaded
	"$PY" - "$T/a.tar" <<'EOF'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
at = data.index(b"./users/lang:123\0")
data[at:at + 4] = b"XXXX"
open(sys.argv[1], "wb").write(data)
EOF
	run "$NADB" load "$T/c" /app <"$T/a.tar"
	echo "$output"
	[ "$status" -eq 1 ]
	echo "$output" | grep -qi damaged
	[ "$("$NADB" get "$T/c" /app/media/2024/cat.jpg | wc -c)" = 400000 ]
	# cut at a member's end, end-of-archive blocks and all: still exit 1
	"$NADB" dump "$STORE" /app >"$T/a.tar"
	"$PY" - "$T/a.tar" "$T/noend.tar" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    last = t.getmembers()[-1]
    end = last.offset_data + (last.size + 511) // 512 * 512
data = open(sys.argv[1], "rb").read()
assert not any(data[end:])
open(sys.argv[2], "wb").write(data[:end])
EOF
	run "$NADB" load "$T/d" /app <"$T/noend.tar"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"without its end-of-archive blocks"* ]]
	[ "$("$NADB" get "$T/d" /app/media/2024/cat.jpg | wc -c)" = 400000 ]
}

@test "a load cut short, or refused, leaves the key it was replacing as it was" {
	head -c 300000 /dev/urandom >"$T/old"
	head -c 300000 /dev/urandom >"$T/new"
	"$NADB" put "$STORE" /app/users/big <"$T/old"
	"$NADB" put "$T/src" /app/users/big <"$T/new"
	"$NADB" dump "$T/src" /app >"$T/a.tar"
	# cut in the middle of the new value
	head -c 150000 "$T/a.tar" >"$T/cut.tar"
	run "$NADB" load "$STORE" /app <"$T/cut.tar"
	echo "$output"
	[ "$status" -eq 1 ]
	"$NADB" get "$STORE" /app/users/big | cmp - "$T/old"
	[ "$("$NADB" ls "$STORE" /app/users)" = big ]
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
	# whole, it replaces it
	"$NADB" load "$STORE" /app <"$T/a.tar"
	"$NADB" get "$STORE" /app/users/big | cmp - "$T/new"
	[ "$("$NADB" ls "$STORE" /app/users)" = big ]
}

@test "load reads GNU tar's archives: long names, symlinks, hard links, modes, times" {
	src=$T/src
	long=$(printf 'n%.0s' {1..150})
	mkdir -p "$src/app/ns/d"
	echo -n one >"$src/app/ns/one"
	echo -n deep >"$src/app/ns/d/$long"
	ln -s one "$src/app/ns/link"
	ln "$src/app/ns/one" "$src/app/ns/hard"
	chmod 600 "$src/app/ns/one"
	touch -h -d '2001-02-03 04:05:06.123456789' "$src/app/ns/one" "$src/app/ns/link"
	for fmt in gnu pax; do
		tar --format=$fmt -C "$src" -cf "$T/$fmt.tar" .
		run "$NADB" load "$T/$fmt" <"$T/$fmt.tar"
		echo "$fmt: $output"
		[ "$status" -eq 0 ]
		[ "$("$NADB" get "$T/$fmt" /app/ns/d/$long)" = deep ]
		[ "$("$NADB" get "$T/$fmt" /app/ns/hard)" = one ]
		"$NADB" dump "$T/$fmt" /app/ns >"$T/re-$fmt.tar"
		tar_listing "$T/re-$fmt.tar" >"$T/re-$fmt.list"
		cat "$T/re-$fmt.list"
		grep -qE "^\./link 2 0o777 .* 981173106\.[0-9]+ .* one - " "$T/re-$fmt.list"
		# one name carries the value, the other links to it
		grep -qE "^\./(one|hard) 0 0o600 0 0 3 981173106\.[0-9]+ " "$T/re-$fmt.list"
		grep -qE "^\./(one|hard) 1 0o600 .* \./(one|hard) - " "$T/re-$fmt.list"
		[ $fmt = gnu ] || grep -q " 981173106\.123456789 .* 7692c3ad3540bb80 " "$T/re-$fmt.list"
	done
}

@test "dump writes a pax size record for a value of 8 GiB or more" {
	mount_store
	mkdir -p "$MNT/app/ns"
	truncate -s 9G "$MNT/app/ns/big" # holes: cheap to make and to read
	echo -n after >"$MNT/app/ns/small"
	unmount_store
	# Read the whole stream: the pax size, the ustar field, and that the
	# next member starts right after the 9 GiB of data.
	"$NADB" dump "$STORE" /app/ns | "$PY" -c '
import sys
f = sys.stdin.buffer
def block():
    b = f.read(512)
    assert len(b) == 512, "short archive"
    return b
pax = {}
seen = []
while True:
    h = block()
    if h == bytes(512):
        break
    size = int(h[124:136].strip(b"\0 ") or b"0", 8)
    if h[156:157] == b"x":
        data = f.read(size + (-size % 512))[:size].decode()
        for rec in data.splitlines():
            k, v = rec.split(" ", 1)[1].split("=", 1)
            pax[k] = v
        continue
    name = pax.get("path", h[:100].rstrip(b"\0").decode())
    size = int(pax.get("size", size))
    if name == "./big":
        assert pax.get("size") == str(9 << 30), pax
        assert h[124:136] != b"%011o\0" % (9 << 30)
        left = size
        while left:
            n = len(f.read(min(left, 4 << 20)))
            assert n, "data ends early"
            left -= n
        f.read(-size % 512)
    else:
        f.read(size + (-size % 512))
    seen.append(name)
    pax = {}
assert seen == ["./", "./big", "./small"], seen
print("ok", seen)
'
}

# ---- a mounted store -------------------------------------------------------

@test "each command refuses a mounted STORE with a clear message (exit 2)" {
	put /app/users/theme:123 dark
	make_archive "$T/a.tar" ./k
	mount_store
	local reads=("ls $STORE /app/users" "get $STORE /app/users/theme:123"
		"getx $STORE /app/users/theme:123 user.a" "stats $STORE"
		"keys $STORE /app/users/theme:123" "count $STORE /app/users/theme:123" "dump $STORE")
	local refused=("rm $STORE /app/users/theme:123" "setx $STORE /app/users/theme:123 user.a b"
		"fsck $STORE" "fsck --json $STORE" "compact $STORE")
	# on Redis the commands that only read read it as a follower (follow.bats)
	[ "${NADB_TEST_BACKEND:-dir}" = redis ] || refused+=("${reads[@]}")
	for cmd in "${refused[@]}"; do
		# shellcheck disable=SC2086
		run "$NADB" $cmd </dev/null
		echo "nadb $cmd -> $status: $output"
		[ "$status" -eq 2 ]
		echo "$output" | grep -qiE 'in use|mounted'
	done
	# the commands that accept a MOUNTPOINT say where the store is mounted
	for cmd in compact $([ "${NADB_TEST_BACKEND:-dir}" = redis ] || echo stats); do
		run "$NADB" $cmd "$STORE"
		echo "$output" | grep -qF "nadb $cmd $MNT"
	done
	for cmd in $([ "${NADB_TEST_BACKEND:-dir}" = redis ] || echo keys count); do
		run "$NADB" $cmd "$STORE" '/app/**'
		[ "$status" -eq 2 ]
		echo "$output" | grep -qF "nadb $cmd $MNT"
	done
	run bash -c "'$NADB' load '$STORE' /app/x < '$T/a.tar'"
	[ "$status" -eq 2 ]
	run bash -c "echo new | '$NADB' put '$STORE' /app/users/theme:123"
	[ "$status" -eq 2 ]
	[ "$(cat "$MNT/app/users/theme:123")" = dark ]
}

@test "commands that need a STORE refuse a MOUNTPOINT, and create nothing in the mount" {
	put /app/users/k v
	make_archive "$T/a.tar" ./k
	mount_store
	run bash -c "echo x | '$NADB' put '$MNT' /a/b/c"
	echo "$output"
	[ "$status" -eq 2 ]
	echo "$output" | grep -qF "is the mountpoint of the nadbfs mounted on $MNT"
	run bash -c "echo x | '$NADB' put '$MNT/app/new' /a/b/c"
	[ "$status" -eq 2 ]
	echo "$output" | grep -qF "is inside the nadbfs mounted on $MNT"
	run bash -c "'$NADB' load '$MNT' < '$T/a.tar'"
	[ "$status" -eq 2 ]
	for cmd in "ls $MNT" "fsck $MNT" "dump $MNT" "get $MNT /app/users/k"; do
		# shellcheck disable=SC2086
		run "$NADB" $cmd
		[ "$status" -eq 2 ] || { echo "nadb $cmd -> $status: $output"; false; }
	done
	[ "$(ls_keys "$MNT")" = app ]
	[ "$(ls "$MNT/app")" = users ]
}

@test "keys and count on a MOUNTPOINT walk the mounted tree" {
	make_glob_store
	offline=$("$NADB" keys "$STORE" '/app/**')
	mount_store
	run "$NADB" keys "$MNT" '/app/**'
	[ "$status" -eq 0 ]
	[ "$output" = "$offline" ]
	run "$NADB" count "$MNT" '/**'
	[ "$output" = 15 ] # not the root's tags/ or dot files
	run_json keys --json "$MNT" '/db2/ns/k?'
	json_check "assert d == ['/db2/ns/k1', '/db2/ns/k2'], d" <<<"$output"
}

@test "dump | load keeps FIFOs and device nodes with their numbers" {
	mount_store
	mkdir -p "$MNT/app/dev"
	mkfifo "$MNT/app/dev/fifo"
	mknod -m 600 "$MNT/app/dev/null" c 1 3
	mknod "$MNT/app/dev/loop" b 7 2
	unmount_store
	"$NADB" dump "$STORE" /app >"$T/a.tar"
	tar -tvf "$T/a.tar" | grep -qE '^crw------- .* 1,3 .*dev/null$'
	"$NADB" load "$T/b" /app <"$T/a.tar"
	mount_store_at "$T/b" "$MNT"
	[ "$(stat -c '%F %t,%T %a' "$MNT/app/dev/null")" = "character special file 1,3 600" ]
	[ "$(stat -c '%F %t,%T' "$MNT/app/dev/loop")" = "block special file 7,2" ]
	[ -p "$MNT/app/dev/fifo" ]
	unmount_store_at "$T/b" "$MNT"
}

@test "tar --xattrs -xf of a dump restores values and tags into a mount" {
	make_rich_store
	"$NADB" dump "$STORE" /app/users >"$T/a.tar"
	mount_store_at "$T/b" "$MNT"
	mkdir -p "$MNT/app/users"
	run tar --xattrs --xattrs-include='user.*' -xf "$T/a.tar" -C "$MNT/app/users"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(cat "$MNT/app/users/theme:123")" = dark ]
	[ "$(getfattr --only-values -n user.tags "$MNT/app/users/theme:123")" = blue,red ]
	[ "$(getfattr --only-values -n user.expires "$MNT/app/users/lang:123")" = "$EXPIRES" ]
	unmount_store_at "$T/b" "$MNT"
}

@test "stats on a MOUNTPOINT prints the daemon's .stats (JSON as is, or the table)" {
	put /app/users/theme:123 dark
	put /app/users/lang:123 en
	mount_store
	[ -e "$MNT/.stats" ] || skip "the daemon does not serve .stats yet"
	run_json stats --json "$MNT"
	[ "$status" -eq 0 ]
	# as served (counters such as uptime may move between two reads)
	"$PY" -c 'import json, sys; a, b = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
assert list(a) == list(b), (list(a), list(b))' "$output" "$MNT/.stats"
	json_check "assert d['keys'] == 2 and d['logical_bytes'] == 6 and 'ops' in d and 'uptime_s' in d, d" <<<"$output"
	run "$NADB" stats "$MNT"
	echo "$output"
	[ "$status" -eq 0 ]
	echo "$output" | grep -qE '^  keys +2$'
	echo "$output" | grep -qE '^  uptime '
}

@test "compact on a MOUNTPOINT asks the daemon, and the packs shrink" {
	dir_store_only
	head -c 3000000 /dev/urandom | "$NADB" put "$STORE" /app/ns/gone
	put /app/ns/keep keep
	mount_store
	[ -e "$MNT/.ctl" ] || skip "the daemon does not serve .ctl yet"
	before=$(store_bytes "$STORE/packs")
	rm "$MNT/app/ns/gone"
	run "$NADB" compact "$MNT"
	echo "$output"
	[ "$status" -eq 0 ]
	for ((i = 0; i < 100; i++)); do
		[ "$(store_bytes "$STORE/packs")" -lt $((before - 2500000)) ] && break
		sleep 0.1
	done
	[ "$(store_bytes "$STORE/packs")" -lt $((before - 2500000)) ]
	[ "$(cat "$MNT/app/ns/keep")" = keep ]
}
