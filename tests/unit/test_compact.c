/* test_compact.c -- deleted values give their space back (punched once
 * durable), compaction rewrites segments with holes, and every live value
 * stays readable, across close and open. */
#include "unit.h"
#include "fsck.h"
#include "stats.h"
#include "store.h"
#include "store_int.h" /* to make a segment's live count drift */

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


#define VALUE (100 * 1024)

static void fill(unsigned char *buf, int seed)
{
	unsigned x = (unsigned)seed * 2654435761u + 1;
	for (size_t i = 0; i < VALUE; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (unsigned char)(x >> 16);
	}
}

static void check_value(struct nadb_store *st, uint64_t ns, const char *name, int seed)
{
	static unsigned char want[VALUE], got[VALUE];
	struct nadb_attr a;
	struct nadb_file *f;
	fill(want, seed);
	CHECK(nadb_lookup(st, ns, name, &a) == 0);
	CHECK(nadb_file_open(st, a.ino, 0, &f) == 0);
	CHECK(nadb_file_read(f, got, VALUE, 0) == VALUE);
	CHECK(memcmp(want, got, VALUE) == 0);
	CHECK(nadb_file_close(f) == 0);
}

struct segs {
	uint32_t seg[8];
	unsigned n;
};

static int note_segment(void *ctx, uint32_t seg, uint64_t size, uint64_t held, bool current)
{
	(void)size;
	(void)held;
	struct segs *s = ctx;
	if (current && s->n < 8)
		s->seg[s->n++] = seg;
	return 0;
}

int main(void)
{
	char dir[32], store[300];
	make_store_dir(dir, store);
	struct nadb_options o;
	nadb_options_default(&o);
	o.compress = NADB_COMPRESS_OFF;
	struct nadb_store *st;
	CHECK(nadb_store_open(store, &o, &st) == 0);
	struct nadb_attr a;
	CHECK(nadb_mknod(st, NADB_ROOT_INO, "db", S_IFDIR | 0755, 0, &root, &a) == 0);
	CHECK(nadb_mknod(st, a.ino, "ns", S_IFDIR | 0755, 0, &root, &a) == 0);
	uint64_t ns = a.ino;
	static unsigned char buf[VALUE];
	char name[16];
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "k%02d", i);
		CHECK(nadb_mknod(st, ns, name, S_IFREG | 0644, 0, &root, &a) == 0);
		struct nadb_file *f;
		fill(buf, i);
		CHECK(nadb_file_open(st, a.ino, 0, &f) == 0);
		CHECK(nadb_file_write(f, buf, VALUE, 0) == VALUE);
		CHECK(nadb_file_close(f) == 0);
	}
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "k%02d", i);
		if (i % 4)
			CHECK(nadb_unlink(st, ns, name) == 0);
	}
	struct nadb_stats s;
	CHECK(nadb_stats(st, NADB_ROOT_INO, &s) == 0);
	CHECK(s.garbage_bytes >= 15 * VALUE);
	/* Once the deletes are durable their frames are punched: the packs
	 * hold only the live bytes, with no compaction. */
	CHECK(nadb_store_sync(st) == 0);
	CHECK(nadb_stats(st, NADB_ROOT_INO, &s) == 0);
	CHECK(s.garbage_bytes < VALUE / 10);
	CHECK(s.pack_bytes < 6 * VALUE);
	struct nadb_compact_result res;
	CHECK(nadb_compact(st, false, 0.5, &res) == 0);
	CHECK(res.segments_removed == 0); /* only the current segment has garbage */
	CHECK(nadb_compact(st, true, 0, &res) == 0);
	CHECK(res.segments_removed == 1);
	CHECK(res.chunks_moved == 5);
	CHECK(nadb_stats(st, NADB_ROOT_INO, &s) == 0);
	CHECK(s.garbage_bytes < VALUE);
	for (int i = 0; i < 20; i += 4) {
		snprintf(name, sizeof(name), "k%02d", i);
		check_value(st, ns, name, i);
	}
	struct nadb_fsck_result fr;
	CHECK(nadb_fsck(st, false, NULL, NULL, &fr) == 0);
	CHECK(fr.problems == 0);
	CHECK(nadb_store_close(st) == 0);

	CHECK(nadb_store_open(store, &o, &st) == 0);
	for (int i = 0; i < 20; i += 4) {
		snprintf(name, sizeof(name), "k%02d", i);
		check_value(st, ns, name, i);
	}
	CHECK(nadb_stats(st, NADB_ROOT_INO, &s) == 0);
	CHECK(s.pack_bytes < 6 * VALUE);
	CHECK(nadb_fsck(st, false, NULL, NULL, &fr) == 0);
	CHECK(fr.problems == 0);

	/* A segment's live count that drifted from its chunks (which would
	 * keep compaction from ever removing it), and one whose row is gone:
	 * fsck says so, --repair sets them from the chunk records. */
	struct segs segs = {0};
	CHECK(st->blobs->ops->segments(st->blobs, note_segment, &segs) == 0 && segs.n >= 1);
	uint32_t key = htobe32(segs.seg[0]);
	uint64_t wrong = 12345;
	CHECK(step_begin(st) == 0);
	CHECK(step_end(st, st->kv->ops->put(st->kv, KV_SEGMENTS, &key, sizeof(key), &wrong,
					    sizeof(wrong))) == 0);
	CHECK(nadb_fsck(st, false, NULL, NULL, &fr) == 0);
	CHECK(fr.problems == 1);
	CHECK(step_begin(st) == 0);
	CHECK(step_end(st, st->kv->ops->del(st->kv, KV_SEGMENTS, &key, sizeof(key))) == 0);
	CHECK(nadb_fsck(st, false, NULL, NULL, &fr) == 0);
	CHECK(fr.problems == 1);
	CHECK(nadb_fsck(st, true, NULL, NULL, &fr) == 0);
	CHECK(fr.repaired == 1);
	CHECK(nadb_fsck(st, false, NULL, NULL, &fr) == 0);
	CHECK(fr.problems == 0);
	CHECK(chunk_segment_live(&st->chunks, segs.seg[0]) == 5 * (VALUE + CHUNK_FRAME_HEAD));
	CHECK(nadb_store_close(st) == 0);

	remove_dir(dir);
	return failures ? 1 : 0;
}
