/* buf.c -- growable byte strings: paths being walked, JSON documents, pax
 * records all grow in a struct buf (arrays grow with grow.h's ARRAY_GROW).
 * Functions return 0 or -ENOMEM; a failed append leaves the buffer as it
 * was. */
#include "nadb_tool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_add(struct buf *b, const void *data, size_t n)
{
	if (grow_array(&b->s, &b->cap, b->len + n + 1, 1))
		return -ENOMEM;
	memcpy(b->s + b->len, data, n);
	b->len += n;
	b->s[b->len] = 0;
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if (grow_array(&b->s, &b->cap, b->len + (size_t)n + 1, 1))
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void buf_truncate(struct buf *b, size_t len)
{
	b->len = len;
	if (b->s)
		b->s[len] = 0;
}

void buf_free(struct buf *b)
{
	free(b->s);
	*b = (struct buf){0};
}
