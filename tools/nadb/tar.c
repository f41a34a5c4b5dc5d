/* tar.c -- the POSIX pax interchange format, the field encodings of dump
 * and load without any store: ustar headers, each preceded by a pax
 * extended header ('x') carrying what ustar cannot: nanosecond times, long
 * names, sizes of 8 GiB and more, big ids, and every user xattr as
 * SCHILY.xattr.NAME (what GNU tar --xattrs and bsdtar read and write).
 */
#include "nadb_tool.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_S 1000000000LL

void put_octal(char *field, size_t width, uint64_t v)
{
	field[width - 1] = 0;
	for (size_t i = width - 1; i-- > 0; v >>= 3)
		field[i] = (char)('0' + (v & 7));
}

/* Copy S into a fixed field, truncated, NUL-padded (not terminated when full). */
void put_text(char *field, size_t width, const char *s)
{
	size_t n = strnlen(s, width);
	memcpy(field, s, n);
	memset(field + n, 0, width - n);
}

unsigned header_checksum(const struct ustar *h)
{
	const unsigned char *p = (const unsigned char *)h;
	unsigned sum = 0;
	for (size_t i = 0; i < BLOCK; i++)
		sum += i >= offsetof(struct ustar, chksum) && i < offsetof(struct ustar, typeflag)
			       ? ' ' : p[i];
	return sum;
}

static size_t decimal_digits(size_t n)
{
	size_t d = 1;
	while (n >= 10) {
		n /= 10;
		d++;
	}
	return d;
}

/* One "LEN KEY=VALUE\n" record; LEN counts itself. */
int pax_add(struct buf *b, const char *key, const char *value, size_t vlen)
{
	size_t rest = strlen(key) + vlen + 3, d = 1;
	while (decimal_digits(rest + d) != d)
		d++;
	int rc = buf_printf(b, "%zu %s=", rest + d, key);
	if (!rc)
		rc = buf_add(b, value, vlen);
	return rc ? rc : buf_add(b, "\n", 1);
}

int pax_add_number(struct buf *b, const char *key, uint64_t v)
{
	char text[24];
	snprintf(text, sizeof(text), "%" PRIu64, v);
	return pax_add(b, key, text, strlen(text));
}

/* Times as pax writes them: "-1.250000000" is a quarter second before -1. */
int pax_add_time(struct buf *b, const char *key, struct timespec ts)
{
	char text[48];
	if (ts.tv_sec < 0 && ts.tv_nsec)
		snprintf(text, sizeof(text), "-%lld.%09ld", -((long long)ts.tv_sec + 1),
			 (long)(NS_PER_S - ts.tv_nsec));
	else
		snprintf(text, sizeof(text), "%lld.%09ld", (long long)ts.tv_sec, (long)ts.tv_nsec);
	return pax_add(b, key, text, strlen(text));
}

/* "[-]S[.FRACTION]" (pax times, user.expires) into *ts. */
bool parse_decimal_time(const char *s, size_t n, struct timespec *ts)
{
	char text[48];
	if (!n || n >= sizeof(text))
		return false;
	memcpy(text, s, n);
	text[n] = 0;
	bool negative = text[0] == '-';
	char *p = text + negative, *end;
	if (!isdigit((unsigned char)*p))
		return false;
	errno = 0;
	long long sec = strtoll(p, &end, 10);
	long nsec = 0;
	if (errno)
		return false;
	if (*end == '.') {
		long scale = NS_PER_S / 10;
		for (p = end + 1; isdigit((unsigned char)*p); p++, scale /= 10)
			nsec += (*p - '0') * scale;
		end = p;
	}
	if (*end)
		return false;
	ts->tv_sec = negative ? -sec - (nsec ? 1 : 0) : sec;
	ts->tv_nsec = negative && nsec ? NS_PER_S - nsec : nsec;
	return true;
}

/* A numeric header field: octal, or GNU's base-256 for big values. */
uint64_t header_number(const char *field, size_t width)
{
	const unsigned char *p = (const unsigned char *)field;
	uint64_t v = 0;
	if (p[0] & 0x80) {
		for (size_t i = 1; i < width; i++)
			v = v << 8 | p[i];
		return v;
	}
	for (size_t i = 0; i < width && (p[i] == ' ' || p[i] == '0' || p[i] == 0); i++)
		if (p[i] == 0)
			return 0;
	for (size_t i = 0; i < width && p[i]; i++)
		if (p[i] >= '0' && p[i] <= '7')
			v = v << 3 | (uint64_t)(p[i] - '0');
	return v;
}

bool header_is_valid(const struct ustar *h)
{
	uint64_t stored = header_number(h->chksum, sizeof(h->chksum));
	unsigned sum = header_checksum(h);
	int ssum = 0; /* some old tars summed signed chars */
	for (size_t i = 0; i < BLOCK; i++)
		ssum += i >= offsetof(struct ustar, chksum) && i < offsetof(struct ustar, typeflag)
				? ' ' : ((const signed char *)h)[i];
	return stored == sum || (int64_t)stored == ssum;
}

bool is_zero_block(const void *p)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < BLOCK; i++)
		if (b[i])
			return false;
	return true;
}
