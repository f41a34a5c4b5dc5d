#!/usr/bin/env bats
# Tags: user.tags and user.tag.NAME on keys, and /tags/QUERY/ mirrors.

load helpers

setup() {
	nadb_setup
	mount_store
	mkdir -p "$MNT/app/media/2024" "$MNT/app/users"
	echo cat >"$MNT/app/media/2024/cat.jpg"
	echo dog >"$MNT/app/media/2024/dog.jpg"
	echo note >"$MNT/app/users/note"
}

@test "user.tags replaces the tag set and reads back sorted without duplicates" {
	setfattr -n user.tags -v "pets,photo,pets" "$MNT/app/media/2024/cat.jpg"
	run getfattr --absolute-names --only-values -n user.tags "$MNT/app/media/2024/cat.jpg"
	[ "$status" -eq 0 ]
	[ "$output" = "pets,photo" ]
	setfattr -n user.tags -v "zoo" "$MNT/app/media/2024/cat.jpg"
	run getfattr --absolute-names --only-values -n user.tags "$MNT/app/media/2024/cat.jpg"
	[ "$output" = "zoo" ]
}

@test "user.tag.NAME adds and removes one tag, and getfattr -d lists them" {
	f=$MNT/app/media/2024/dog.jpg
	setfattr -n user.tag.photo "$f"
	setfattr -n user.tag.pets "$f"
	run getfattr --absolute-names -d "$f"
	[[ "$output" == *'user.tag.pets'* ]]
	[[ "$output" == *'user.tag.photo'* ]]
	[[ "$output" == *'user.tags="pets,photo"'* ]]
	setfattr -x user.tag.pets "$f"
	run getfattr --absolute-names --only-values -n user.tags "$f"
	[ "$output" = "photo" ]
	run setfattr -x user.tag.pets "$f"
	[ "$status" -ne 0 ]
	[[ "$output" == *"No such attribute"* ]]
}

@test "setfattr -x user.tags clears the set, and ENODATA when there was none" {
	f=$MNT/app/users/note
	run setfattr -x user.tags "$f"
	[ "$status" -ne 0 ]
	[[ "$output" == *"No such attribute"* ]]
	setfattr -n user.tags -v a,b "$f"
	setfattr -x user.tags "$f"
	run getfattr --absolute-names -n user.tags "$f"
	[ "$status" -ne 0 ]
	[[ "$output" == *"No such attribute"* ]]
}

@test "XATTR_CREATE and XATTR_REPLACE hold for tags and expiries; a tag change moves ctime" {
	f=$MNT/app/users/note
	[ "$(py_errno setxattr_replace "$f" user.tag.red "")" = ENODATA ]
	[ "$(py_errno setxattr_replace "$f" user.tags red)" = ENODATA ]
	[ "$(py_errno setxattr_replace "$f" user.ttl 60)" = ENODATA ]
	run getfattr --absolute-names -d "$f"
	[[ "$output" != *user.tag* && "$output" != *user.expires* ]]
	[ "$(py_errno setxattr_create "$f" user.tag.red "")" = OK ]
	[ "$(py_errno setxattr_create "$f" user.tag.red "")" = EEXIST ]
	[ "$(py_errno setxattr_create "$f" user.tags blue)" = EEXIST ]
	[ "$(py_errno setxattr_replace "$f" user.tags blue)" = OK ]
	[ "$(getfattr --absolute-names --only-values -n user.tags "$f")" = blue ]
	[ "$(py_errno setxattr_create "$f" user.ttl 60)" = OK ]
	[ "$(py_errno setxattr_create "$f" user.ttl 70)" = EEXIST ]
	[ "$(py_errno setxattr_create "$f" user.nadb.size 5)" = EEXIST ]
	before=$(stat -c %Z "$f")
	sleep 1.1
	setfattr -n user.tag.green "$f"
	[ "$(stat -c %Z "$f")" -gt "$before" ]
}

@test "a bad tag name is refused with EINVAL and changes nothing, a list included" {
	f=$MNT/app/users/note
	setfattr -n user.tags -v keep "$f"
	for bad in "ok,.hidden" "a/b" "a+b" "a,,b" $'x\x01y' "$(printf 'x%.0s' {1..256})"; do
		run setfattr -n user.tags -v "$bad" "$f"
		[ "$status" -ne 0 ]
		[[ "$output" == *"Invalid argument"* ]]
	done
	run setfattr -n user.tag..dot "$f"
	[[ "$output" == *"Invalid argument"* ]]
	run getfattr --absolute-names --only-values -n user.tags "$f"
	[ "$output" = "keep" ]
	grep -q "not a comma-separated list of valid tag names" "$LOG"
}

@test "directories cannot be tagged (EPERM)" {
	run setfattr -n user.tags -v photo "$MNT/app/media"
	[ "$status" -ne 0 ]
	[[ "$output" == *"Operation not permitted"* ]]
}

@test "/tags lists the tags in use, and a tag goes with its last key" {
	setfattr -n user.tags -v photo "$MNT/app/media/2024/cat.jpg"
	setfattr -n user.tags -v photo,pets "$MNT/app/media/2024/dog.jpg"
	run ls "$MNT/tags"
	[ "$output" = $'pets\nphoto' ]
	rm "$MNT/app/media/2024/dog.jpg"
	run ls "$MNT/tags"
	[ "$output" = "photo" ]
	setfattr -x user.tag.photo "$MNT/app/media/2024/cat.jpg"
	run ls "$MNT/tags"
	[ "$output" = "" ]
	[ ! -e "$MNT/tags/photo" ]
}

@test "/tags/TAG mirrors the tree with the tagged keys: same inode, cat, stat, getfattr" {
	setfattr -n user.tags -v photo "$MNT/app/media/2024/cat.jpg"
	setfattr -n user.tags -v photo "$MNT/app/media/2024/dog.jpg"
	run find "$MNT/tags/photo" -type f
	[ "$(echo "$output" | sort)" = "$(printf '%s\n' "$MNT/tags/photo/app/media/2024/cat.jpg" "$MNT/tags/photo/app/media/2024/dog.jpg")" ]
	[ "$(stat -c %i "$MNT/tags/photo/app/media/2024/cat.jpg")" = "$(stat -c %i "$MNT/app/media/2024/cat.jpg")" ]
	[ "$(cat "$MNT/tags/photo/app/media/2024/cat.jpg")" = cat ]
	run getfattr --absolute-names --only-values -n user.tags "$MNT/tags/photo/app/media/2024/cat.jpg"
	[ "$output" = photo ]
	cp "$MNT/tags/photo/app/media/2024/dog.jpg" "$T/copy"
	[ "$(cat "$T/copy")" = dog ]
	run ls "$MNT/tags/photo/app"
	[ "$output" = media ]
	[ ! -e "$MNT/tags/photo/app/users" ]
}

@test "TAG+TAG is an AND query, resolved on lookup and not listed in /tags" {
	setfattr -n user.tags -v photo,pets "$MNT/app/media/2024/cat.jpg"
	setfattr -n user.tags -v photo "$MNT/app/media/2024/dog.jpg"
	setfattr -n user.tags -v pets "$MNT/app/users/note"
	run ls "$MNT/tags/photo+pets/app/media/2024"
	[ "$output" = cat.jpg ]
	run ls "$MNT/tags/pets+photo/app"
	[ "$output" = media ]
	run ls "$MNT/tags"
	[ "$output" = $'pets\nphoto' ]
	[ ! -e "$MNT/tags/photo+nosuch" ]
}

@test "rm under /tags removes that tag from the key, which stays" {
	setfattr -n user.tags -v photo,pets "$MNT/app/media/2024/cat.jpg"
	rm "$MNT/tags/photo/app/media/2024/cat.jpg"
	[ "$(cat "$MNT/app/media/2024/cat.jpg")" = cat ]
	run getfattr --absolute-names --only-values -n user.tags "$MNT/app/media/2024/cat.jpg"
	[ "$output" = pets ]
	[ ! -e "$MNT/tags/photo" ]
}

@test "everything else under /tags that would write is refused" {
	setfattr -n user.tags -v photo "$MNT/app/media/2024/cat.jpg"
	run mkdir "$MNT/tags/photo/new"
	[ "$status" -ne 0 ]
	run touch "$MNT/tags/photo/app/media/2024/new"
	[ "$status" -ne 0 ]
	run mv "$MNT/tags/photo/app/media/2024/cat.jpg" "$MNT/tags/photo/app/media/2024/x"
	[ "$status" -ne 0 ]
	run rmdir "$MNT/tags/photo/app/media/2024"
	[ "$status" -ne 0 ]
	run mkdir "$MNT/tags/new"
	[ "$status" -ne 0 ]
	[[ "$output" == *"not permitted"* || "$output" == *"Read-only"* ]]
	grep -q "under /tags refused" "$LOG"
	[ -e "$MNT/app/media/2024/cat.jpg" ]
}

@test "tags follow renames; unlink and overwrite by rename drop the victim's" {
	setfattr -n user.tags -v photo "$MNT/app/media/2024/cat.jpg"
	mv "$MNT/app/media/2024/cat.jpg" "$MNT/app/users/kitty.jpg"
	run getfattr --absolute-names --only-values -n user.tags "$MNT/app/users/kitty.jpg"
	[ "$output" = photo ]
	run ls "$MNT/tags/photo/app/users"
	[ "$output" = kitty.jpg ]
	mv "$MNT/app/media" "$MNT/app/pictures"
	setfattr -n user.tags -v other "$MNT/app/pictures/2024/dog.jpg"
	[ -e "$MNT/tags/other/app/pictures/2024/dog.jpg" ]
	echo tmp >"$MNT/app/users/tmp"
	mv "$MNT/app/users/tmp" "$MNT/app/users/kitty.jpg"
	[ ! -e "$MNT/tags/photo" ]
	rm "$MNT/app/pictures/2024/dog.jpg"
	run ls "$MNT/tags"
	[ "$output" = "" ]
}

@test "directories carry their mirrors when they move: within a namespace, to another, and databases and namespaces renamed" {
	setfattr -n user.tags -v photo "$MNT/app/media/2024/cat.jpg"
	setfattr -n user.tags -v photo,pets "$MNT/app/media/2024/dog.jpg"
	mkdir "$MNT/app/media/old"
	mv "$MNT/app/media/2024" "$MNT/app/media/old/2024"
	[ "$(ls "$MNT/tags/photo/app/media")" = old ]
	[ "$(ls "$MNT/tags/photo/app/media/old/2024")" = "$(printf 'cat.jpg\ndog.jpg')" ]
	mv "$MNT/app/media/old/2024" "$MNT/app/users/2024"
	[ "$(ls "$MNT/tags/photo/app")" = users ]
	[ "$(ls "$MNT/tags/pets+photo/app/users/2024")" = dog.jpg ]
	mv "$MNT/app/users" "$MNT/app/people"
	mkdir "$MNT/web"
	mv "$MNT/app/people" "$MNT/web/people"
	mv "$MNT/app" "$MNT/apps"
	[ "$(ls "$MNT/tags/photo")" = web ]
	[ "$(ls "$MNT/tags/photo/web/people/2024")" = "$(printf 'cat.jpg\ndog.jpg')" ]
	[ "$(cat "$MNT/tags/pets/web/people/2024/dog.jpg")" = dog ]
	[ ! -e "$MNT/tags/photo/apps" ]
	# a namespace moved into a namespace becomes a directory there, and
	# a directory moved into a database becomes a namespace
	mkdir "$MNT/web/all"
	mv "$MNT/web/people" "$MNT/web/all/people"
	[ "$(ls "$MNT/tags/photo/web")" = all ]
	[ "$(ls "$MNT/tags/photo/web/all/people/2024")" = "$(printf 'cat.jpg\ndog.jpg')" ]
	mv "$MNT/web/all/people/2024" "$MNT/web/y2024"
	[ "$(ls "$MNT/tags/photo/web")" = y2024 ]
	[ "$(ls "$MNT/tags/pets/web/y2024")" = dog.jpg ]
	rm "$MNT/web/y2024/dog.jpg"
	[ "$(ls "$MNT/tags/photo/web/y2024")" = cat.jpg ]
	[ ! -e "$MNT/tags/pets" ]
	unmount_store
	run "$NADB" fsck "$STORE"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "/tags and .stats count every tag in use, however many a namespace holds" {
	mkdir -p "$MNT/app/a" "$MNT/app/b"
	echo a >"$MNT/app/a/k"
	echo b >"$MNT/app/b/k"
	# more tags in one namespace than a listing reads of it at a time
	setfattr -n user.tags -v "$(seq -f 't%03g' -s, 0 129)" "$MNT/app/a/k"
	setfattr -n user.tags -v t100x,t000 "$MNT/app/b/k"
	ls "$MNT/tags" >"$T/tags"
	[ "$(wc -l <"$T/tags")" -eq 131 ]
	[ "$(sed -n 102p "$T/tags")" = t100x ]
	[ "$(sort -u "$T/tags" | wc -l)" -eq 131 ]
	[ "$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["tags"])' "$MNT/.stats")" = 131 ]
	[ "$(ls "$MNT/tags/t000/app")" = "$(printf 'a\nb')" ]
	[ "$(ls "$MNT/tags/t100x/app")" = b ]
}

@test "two processes adding different tags to one key at once both win" {
	f=$MNT/app/users/note
	for i in $(seq 1 30); do
		setfattr -n user.tag.a$i "$f" &
		setfattr -n user.tag.b$i "$f" &
		wait
	done
	run getfattr --absolute-names --only-values -n user.tags "$f"
	for i in $(seq 1 30); do
		[[ ",$output," == *",a$i,"* ]]
		[[ ",$output," == *",b$i,"* ]]
	done
}

@test "tags and tag queries survive unmount and mount" {
	setfattr -n user.tags -v photo,pets "$MNT/app/media/2024/cat.jpg"
	remount_store
	run getfattr --absolute-names --only-values -n user.tags "$MNT/app/media/2024/cat.jpg"
	[ "$output" = "pets,photo" ]
	run ls "$MNT/tags/photo+pets/app/media/2024"
	[ "$output" = cat.jpg ]
	unmount_store
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
}

@test "a tag query over 10,000 tagged keys among more finds them all" {
	"$PY" - "$MNT/app/bulk" <<'PY'
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
for i in range(12000):
    p = os.path.join(d, "k%05d" % i)
    with open(p, "w") as f:
        f.write(str(i))
    if i % 6 != 5:
        os.setxattr(p, "user.tags", b"bulk" if i % 2 else b"bulk,even")
PY
	[ "$(find "$MNT/tags/bulk" -type f | wc -l)" -eq 10000 ]
	[ "$(ls "$MNT/tags/bulk+even/app/bulk" | wc -l)" -eq 6000 ]
	unmount_store
	run "$NADB" fsck "$STORE"
	[ "$status" -eq 0 ]
}
