/* varint.h -- the one encoding of numbers in compact metadata records.
 *
 * LEB128: seven bits a byte, low bits first, the top bit set on every byte
 * but the last, so small numbers (counts, lengths, type bits, differences
 * of times) take one or two bytes where a fixed field takes eight.  Signed
 * numbers go through zigzag first, so that small negatives stay short.
 * Inode records (inode.c), directory entries (tree.c) and chunk records
 * (chunk.c) use it. */
#ifndef NADB_VARINT_H
#define NADB_VARINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VARINT_MAX 10 /* bytes of the longest, a 64-bit number */

/* V at OUT; returns the bytes written (1..VARINT_MAX). */
static inline size_t varint_put(uint8_t *out, uint64_t v)
{
	size_t n = 0;
	for (;; v >>= 7) {
		out[n++] = (uint8_t)(v & 0x7f) | (v > 0x7f ? 0x80 : 0);
		if (v <= 0x7f)
			return n;
	}
}

/* One varint at *P (before END) into *V, moving *P past it; false if it is
 * cut short or longer than 64 bits. */
static inline bool varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;
		if (shift == 63 && b > 1)
			return false;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

static inline uint64_t zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t unzigzag(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

#endif
